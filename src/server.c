/* Listening sockets: TCP, unix and attached; the accept loop and its
 * behaviour when descriptors run out. */
#include "em-internal.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define STARVED_RETRY_S 0.1
#define ACCEPT_BATCH 16 /* per event, when a backlog is seen */
#define LISTEN_BACKLOG 1024

static void server_link(em_reactor *r, em_server *s)
{
    s->prev = NULL;
    s->next = r->servers;
    if (r->servers)
        r->servers->prev = s;
    r->servers = s;
}

static void server_unlink(em_server *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        s->r->servers = s->next;
    if (s->next)
        s->next->prev = s->prev;
}

static bool has_nodelay(int fd)
{
    int v = 0;
    socklen_t len = sizeof v;
    return getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v;
}

/* The listener's own TCP_NODELAY: an attached one is left as its owner set
 * it, and then each accepted socket gets it. */
static uint8_t nodelay_mode(int listen_fd)
{
    int v = 0;
    socklen_t len = sizeof v;
    if (getsockopt(listen_fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) < 0)
        return EM_NODELAY_NONE;
    return v ? EM_NODELAY_CHECK : EM_NODELAY_SET_EACH;
}

/* A backend that accepts (backend_accepts) is asked to, with EM_EV_RECV,
 * unless the user counts the accepts per report: the kernel's accept takes
 * every connection as it comes. */
static unsigned listen_interest(const em_reactor *r)
{
    return EM_EV_READ | (r->backend_accepts && !r->accepts_asked ? EM_EV_RECV : 0);
}

static em_server *server_new(em_reactor *r, int fd, const em_handler *h, void *arg)
{
    em_server *s = em__calloc(1, sizeof *s);
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    s->io = (em_io){.fd = fd, .type = EM_IO_SERVER};
    s->r = r;
    s->h = h;
    s->arg = arg;
    int err = em__io_open(r, &s->io, listen_interest(r));
    if (err) {
        em__free(s);
        errno = -err;
        return NULL;
    }
    s->sig = em__next_sig(r);
    s->nodelay = nodelay_mode(fd);
    server_link(r, s);
    return s;
}

/* --------------------------------------------------- running out of fds */

static void starved_retry(em_reactor *r, void *arg);

/* Out of descriptors (or another error that accepting again at once would
 * only repeat): look again when one of ours is closed or after a short
 * delay, for descriptors freed elsewhere. The clients wait in the backlog
 * instead of being dropped. */
static void retry_later(em_server *s)
{
    s->starved = true;
    s->r->starved_servers++;
    double due = em__clock() + STARVED_RETRY_S;
    s->retry_timer = em__timer_add(s->r, due, 0, starved_retry, s, true);
}

static void unstarve(em_server *s)
{
    if (!s->starved)
        return;
    s->starved = false;
    s->r->starved_servers--;
    if (s->retry_timer)
        em__timer_cancel(s->r, s->retry_timer);
    s->retry_timer = 0;
    if (em__io_watch(s->r, &s->io, listen_interest(s->r)) < 0)
        retry_later(s); /* the poller is short of memory: later */
}

static void starved_retry(em_reactor *r, void *arg)
{
    EM_UNUSED(r);
    em_server *s = arg;
    s->retry_timer = 0;
    unstarve(s);
}

/* Level-triggered polling would spin on the pending connections: the socket
 * is not watched until the retry. */
static void starve(em_server *s)
{
    if (s->starved)
        return; /* a second failure reported in the same turn */
    em__io_unwatch(s->r, &s->io);
    retry_later(s);
}

void em__servers_fds_freed(em_reactor *r)
{
    for (em_server *s = r->servers; s && r->starved_servers; s = s->next)
        unstarve(s);
}

/* ---------------------------------------------------------------- accept */

static void give_nodelay(em_server *s, int fd)
{
    if (s->nodelay == EM_NODELAY_CHECK)
        s->nodelay = has_nodelay(fd) ? EM_NODELAY_INHERITED : EM_NODELAY_SET_EACH;
    if (s->nodelay == EM_NODELAY_SET_EACH) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
}

static void accepted(em_server *s, int fd)
{
    em_conn *c = em__conn_new(s->r, fd, s->h, s->arg);
    if (!c) {
        close(fd);
        return;
    }
    c->flags |= EM_CF_ACCEPTED; /* em_start_tls: the server's side */
    give_nodelay(s, fd);
    em__conn_begin(c);
}

/* The errors accept4 returns for a connection that failed before it was
 * taken (Linux passes a new socket's pending network error on): another
 * connection may be waiting behind it. */
static bool next_may_succeed(int err)
{
    switch (err) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        return true;
    default:
        return false;
    }
}

/* One connection per readiness event while the reactor is not busy, as raw
 * epoll servers do: the listener is level-triggered, so a backlog is
 * reported again on the next turn, and turns are short. Every accept4 that
 * finds nothing costs (on a 2-core VM, accepting until EAGAIN or by an
 * adaptive batch cost 10-40% more server CPU per connection set up, with
 * 100 and with 2000 connections in progress). A busy reactor's turns are
 * long, and with more descriptors ready than one wait returns each is
 * reported only every few turns: there a listener takes up to ACCEPT_BATCH,
 * so that a busy server still accepts quickly. A poller whose wait scans
 * every descriptor makes each turn cost O(connections): one accept per
 * turn would make a burst quadratic, so there the backlog is emptied. */
unsigned em__accepts_per_report(const em_backend *be)
{
    return be->wait_scans_all ? LISTEN_BACKLOG : 1;
}

static unsigned accept_batch(const em_reactor *r)
{
    if (r->accepts_asked)
        return r->accepts_asked;
    unsigned n = r->accept_per_report;
    return r->busy && n < ACCEPT_BATCH ? ACCEPT_BATCH : n;
}

int em_set_accepts_per_event(em_reactor *r, unsigned n)
{
    if (!r)
        return -EINVAL;
    r->accepts_asked = n;
    for (em_server *s = r->servers; s; s = s->next)
        if (s->io.registered && s->io.interest != listen_interest(r) &&
            em__io_watch(r, &s->io, listen_interest(r)) < 0)
            starve(s); /* the poller is short of memory: later */
    return 0;
}

unsigned em_accepts_per_event(const em_reactor *r) { return r ? r->accepts_asked : 0; }

/* Why accept4 (or the backend's accept) gave no connection: false where
 * accepting again now would not give one. */
static bool accept_failed(em_server *s, int err)
{
    if (next_may_succeed(err))
        return true;
    if (err != EAGAIN && err != EWOULDBLOCK)
        starve(s); /* EMFILE, ENOBUFS, or a listener gone bad: not a spin */
    return false;
}

void em__server_on_event(em_server *s, const em_event *ev)
{
    if (ev->events & EM_EV_RECV) { /* the backend accepted (backend_accepts) */
        if (ev->res >= 0)
            accepted(s, ev->res);
        else
            accept_failed(s, -ev->res);
        return;
    }
    unsigned batch = accept_batch(s->r), n = 0;
    while (n < batch && !s->io.dead) {
        int fd = accept4(s->io.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            n++;
            accepted(s, fd); /* may stop the server: io.dead */
        } else if (!accept_failed(s, errno)) {
            return;
        }
    }
}

/* ------------------------------------------------------------- creation */

static int check_tcp_opts(const em_server_opts *o)
{
    bool v6only_known =
        o->v6only == EM_V6ONLY_DEFAULT || o->v6only == EM_V6ONLY_ON || o->v6only == EM_V6ONLY_OFF;
    return o->backlog < 0 || !v6only_known || o->unix_mode ? -EINVAL : 0;
}

static int check_unix_opts(const em_server_opts *o)
{
    return o->backlog < 0 || o->reuse_port || o->v6only || (o->unix_mode & ~0777u) ? -EINVAL
                                                                                    : 0;
}

/* SO_REUSEADDR and TCP_NODELAY as ever (a failure there costs nothing that
 * matters); what the caller asked for must hold, or the listener is not
 * made. */
static int set_tcp_opts(int fd, int family, const em_server_opts *o)
{
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (o->reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        return -errno;
    if (o->v6only == EM_V6ONLY_DEFAULT)
        return 0;
    if (family != AF_INET6)
        return -EINVAL;
    int on = o->v6only == EM_V6ONLY_ON;
    return setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) < 0 ? -errno : 0;
}

static int listen_backlog(const em_server_opts *o)
{
    return o->backlog ? o->backlog : LISTEN_BACKLOG;
}

static int listen_on(const struct sockaddr *sa, socklen_t len, const em_server_opts *o)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int err = set_tcp_opts(fd, sa->sa_family, o);
    if (!err && (bind(fd, sa, len) < 0 || listen(fd, listen_backlog(o)) < 0))
        err = -errno;
    if (err) {
        close(fd);
        return err;
    }
    return fd;
}

/* The mode is set between bind and listen: until listen a connect to the
 * file is refused, so no client gets in through the umask's wider bits.
 * A failure after bind removes the file it made. */
static int listen_unix(const struct sockaddr *sa, socklen_t len, const char *path,
                       const em_server_opts *o)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, sa, len) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    /* Not through a symlink put in the socket's place since the bind. */
    if ((o->unix_mode && fchmodat(AT_FDCWD, path, (mode_t)o->unix_mode, AT_SYMLINK_NOFOLLOW) < 0) ||
        listen(fd, listen_backlog(o)) < 0) {
        int err = -errno;
        unlink(path);
        close(fd);
        return err;
    }
    return fd;
}

static int resolve_listen(const char *host, int port, const em_server_opts *o)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, service, &hints, &ai);
    if (rc) {
        int err = em__resolve_reason(rc, errno);
        em__set_last_resolve_error(rc);
        return -err;
    }
    /* v6only skips a name's IPv4 addresses: only an address tried decides
     * the error, and a name with none but IPv4 ones is EINVAL. */
    bool v6_only = o->v6only != EM_V6ONLY_DEFAULT;
    int fd = v6_only ? -EINVAL : -EM_ERESOLVE;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        if (v6_only && p->ai_family != AF_INET6)
            continue;
        fd = listen_on(p->ai_addr, p->ai_addrlen, o);
        if (fd >= 0)
            break;
    }
    freeaddrinfo(ai);
    return fd;
}

static const em_server_opts default_opts;

em_server *em_start_server_opts(em_reactor *r, const char *host, int port,
                                const em_server_opts *opts, const em_handler *h, void *arg)
{
    em__set_last_resolve_error(0);
    const em_server_opts *o = opts ? opts : &default_opts;
    if (!r || !host || !*host || !h || port < 0 || port > 65535 || check_tcp_opts(o)) {
        errno = EINVAL;
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    int fd = em__may_add(r);
    if (!fd)
        fd = em__sockaddr_parse(host, port, &ss, &len) == 0
                 ? listen_on((struct sockaddr *)&ss, len, o)
                 : resolve_listen(host, port, o);
    if (fd < 0) {
        errno = -fd;
        return NULL;
    }
    em_server *s = server_new(r, fd, h, arg);
    if (!s)
        close(fd);
    return s;
}

em_server *em_start_server(em_reactor *r, const char *host, int port, const em_handler *h,
                           void *arg)
{
    return em_start_server_opts(r, host, port, NULL, h, arg);
}

/* A socket file nobody listens on is stale and may be replaced; anything
 * else at the path is refused. The probe never blocks: a live listener
 * whose backlog is full answers EAGAIN, and is live all the same. */
static int clear_stale_socket(const struct sockaddr_storage *ss, socklen_t len,
                              const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EADDRINUSE;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = connect(fd, (const struct sockaddr *)ss, len);
    int err = rc < 0 ? errno : 0;
    close(fd);
    if (rc == 0 || err == EAGAIN)
        return -EADDRINUSE;
    if (err != ECONNREFUSED)
        return -err;
    return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

em_server *em_start_unix_server_opts(em_reactor *r, const char *path,
                                     const em_server_opts *opts, const em_handler *h, void *arg)
{
    const em_server_opts *o = opts ? opts : &default_opts;
    struct sockaddr_storage ss;
    socklen_t len;
    int err = r && h && !check_unix_opts(o) ? em__sockaddr_unix(path, &ss, &len) : -EINVAL;
    if (!err)
        err = em__may_add(r);
    if (!err)
        err = clear_stale_socket(&ss, len, path);
    int fd = err ? err : listen_unix((struct sockaddr *)&ss, len, path, o);
    struct stat st;
    char *copy = fd >= 0 ? em__strdup(path) : NULL;
    if (fd >= 0 && (!copy || stat(path, &st) < 0)) {
        err = copy ? -errno : -ENOMEM;
        unlink(path);
        close(fd);
        em__free(copy);
        fd = err;
    }
    if (fd < 0) {
        errno = -fd;
        return NULL;
    }
    em_server *s = server_new(r, fd, h, arg);
    if (!s) {
        unlink(path);
        close(fd);
        em__free(copy);
        return NULL;
    }
    s->unix_path = copy;
    s->unix_dev = st.st_dev;
    s->unix_ino = st.st_ino;
    return s;
}

em_server *em_start_unix_server(em_reactor *r, const char *path, const em_handler *h,
                                void *arg)
{
    return em_start_unix_server_opts(r, path, NULL, h, arg);
}

em_server *em_attach_server(em_reactor *r, int listen_fd, const em_handler *h, void *arg)
{
    int listening = 0;
    socklen_t len = sizeof listening;
    if (!r || !h || listen_fd < 0) {
        errno = EINVAL;
        return NULL;
    }
    if (em__may_add(r)) {
        errno = ECANCELED;
        return NULL;
    }
    if (em__fd_held(r, listen_fd)) {
        errno = EEXIST;
        return NULL;
    }
    int flags = fcntl(listen_fd, F_GETFL);
    if (flags < 0)
        return NULL; /* errno: EBADF */
    if (getsockopt(listen_fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
        errno = EINVAL;
        return NULL;
    }
    if (fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return NULL;
    return server_new(r, listen_fd, h, arg);
}

/* ------------------------------------------------------------- queries */

int em_server_port(const em_server *s)
{
    if (!s)
        return -EINVAL;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(s->io.fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

em_sig em_server_signature(const em_server *s) { return s ? s->sig : 0; }

/* ---------------------------------------------------------------- stop */

static void unlink_if_ours(const em_server *s)
{
    struct stat st;
    if (s->unix_path && !s->r->forked && stat(s->unix_path, &st) == 0 &&
        st.st_dev == s->unix_dev && st.st_ino == s->unix_ino)
        unlink(s->unix_path);
}

/* The port is free when this returns; the struct lives until the end of the
 * turn because an event for it may still be in the batch being dispatched. */
int em_stop_server(em_server *s)
{
    if (!s)
        return -EINVAL;
    em_reactor *r = s->r;
    if (s->starved)
        r->starved_servers--;
    if (s->retry_timer)
        em__timer_cancel(r, s->retry_timer);
    em__io_close(r, &s->io);
    s->io.dead = true;
    unlink_if_ours(s);
    server_unlink(s);
    s->next = r->dead_servers;
    r->dead_servers = s;
    return 0;
}

void em__server_free_all(em_reactor *r)
{
    while (r->servers)
        em_stop_server(r->servers);
}
