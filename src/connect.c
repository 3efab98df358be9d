/* Outbound connections: validation, resolution on the pool, trying every
 * address in turn, the pending-connect timeout and em_reconnect. Every
 * failure becomes unbind(reason) in a later close phase. */
#include "em-internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct em_addr {
    socklen_t len;
    struct sockaddr_storage ss;
} em_addr;

struct em_connect_state {
    em_addr *addrs;
    size_t count, next;
    char *target_name; /* to resolve; NULL for literals */
    int target_port;
    em_addr bind;
    bool has_bind;
    char *bind_name; /* to resolve first; NULL for literals */
    int bind_port;
    em_timer_id timer; /* pending-connect timeout */
    int last_err;
    double started;
};

static bool valid_port(int port) { return port >= 0 && port <= 65535; }

int em__sockaddr_parse(const char *host, int port, struct sockaddr_storage *ss,
                       socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        return 0;
    }
    return -EINVAL;
}

int em__sockaddr_unix(const char *path, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_un *un = (struct sockaddr_un *)ss;
    if (!path || !*path)
        return -EINVAL;
    size_t n = strlen(path);
    if (n >= sizeof un->sun_path)
        return -ENAMETOOLONG;
    memset(ss, 0, sizeof *ss);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

void em__connect_abandon(em_conn *c)
{
    if (!(c->flags & EM_CF_OUTBOUND) || !c->cold || !c->cold->connect)
        return;
    if (c->cold->connect->timer)
        em__timer_cancel(c->r, c->cold->connect->timer);
    em__free(c->cold->connect->target_name);
    em__free(c->cold->connect->bind_name);
    em__free(c->cold->connect->addrs);
    em__free(c->cold->connect);
    c->cold->connect = NULL;
}

static void connect_timed_out(em_reactor *r, void *arg)
{
    EM_UNUSED(r);
    em_conn *c = arg;
    c->cold->connect->timer = 0;
    em__conn_fail(c, ETIMEDOUT);
}

static double connect_limit(const em_conn *c)
{
    return c->cold ? c->cold->connect_timeout : EM_DEFAULT_CONNECT_TIMEOUT;
}

static void arm_connect_timer(em_conn *c)
{
    em_connect_state *cs = c->cold ? c->cold->connect : NULL;
    if (!cs)
        return;
    if (cs->timer)
        em__timer_cancel(c->r, cs->timer);
    cs->timer = 0;
    if (connect_limit(c) <= 0)
        return;
    double due = cs->started + connect_limit(c);
    cs->timer = em__timer_add(c->r, due, 0, connect_timed_out, c, true);
    if (!cs->timer)
        em__conn_fail(c, ENOMEM);
}

/* Starts a connect to one address: 0 in flight, else a positive errno. */
static int attempt(em_conn *c, const em_addr *a)
{
    em_connect_state *cs = c->cold->connect;
    int family = a->ss.ss_family;
    if (cs->has_bind && cs->bind.ss.ss_family != family)
        return EAFNOSUPPORT;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    if (em__fd_claim(c->r, fd) < 0) {
        close(fd);
        return ENOMEM;
    }
    c->io.fd = fd;
    if (family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (cs->has_bind) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (const struct sockaddr *)&cs->bind.ss, cs->bind.len) < 0)
            return errno;
    }
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno != EINPROGRESS)
        return errno == EAGAIN && family == AF_UNIX ? ECONNREFUSED : errno;
    /* Connected or in flight: writability reports either, on a later turn,
     * so connection_completed never runs inside em_connect. */
    c->state = EM_CS_CONNECTING;
    int err = em__io_watch(c->r, &c->io, EM_EV_WRITE);
    return err ? -err : 0;
}

static void try_next(em_conn *c)
{
    em_connect_state *cs = c->cold->connect;
    while (cs->next < cs->count) {
        int err = attempt(c, &cs->addrs[cs->next++]);
        if (!err)
            return;
        cs->last_err = err;
        em__io_close(c->r, &c->io);
    }
    c->state = EM_CS_CONNECTING; /* usable, so that the failure can close it */
    em__conn_fail(c, cs->last_err ? cs->last_err : ECONNREFUSED);
}

static void connected(em_conn *c)
{
    em__connect_abandon(c);
    c->state = EM_CS_OPEN;
    em__conn_touch(c);
    em__conn_update_interest(c);
    /* A TLS client's flush begins its handshake. */
    if (em__conn_pending(c) || (c->cold && c->cold->files) ||
        (c->flags & (EM_CF_SHUT_WR_PENDING | EM_CF_CLOSE_AFTER_WRITE | EM_CF_LAYER)))
        em__conn_mark_dirty(c); /* (an empty file's done waits for a flush) */
    if (c->state == EM_CS_OPEN && c->h->connection_completed)
        c->h->connection_completed(c);
}

void em__connect_on_writable(em_conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (!err) {
        connected(c);
        return;
    }
    c->cold->connect->last_err = err;
    em__io_close(c->r, &c->io);
    try_next(c);
}

static int take_addresses(em_conn *c, struct addrinfo *ai)
{
    size_t n = 0;
    for (struct addrinfo *p = ai; p; p = p->ai_next)
        n++;
    em_addr *addrs = em__calloc(n ? n : 1, sizeof *addrs);
    if (!addrs)
        return -ENOMEM;
    size_t k = 0;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        if (p->ai_addrlen > sizeof addrs[k].ss)
            continue;
        memcpy(&addrs[k].ss, p->ai_addr, p->ai_addrlen);
        addrs[k++].len = p->ai_addrlen;
    }
    em__free(c->cold->connect->addrs);
    c->cold->connect->addrs = addrs;
    c->cold->connect->count = k;
    c->cold->connect->next = 0;
    return 0;
}

/* The connection a resolution was for, if it is still waiting for one. */
static em_conn *waiting(em_reactor *r, em_sig sig)
{
    em_conn *c = em__sigmap_get(&r->sigmap, sig);
    return c && c->state == EM_CS_RESOLVING && c->cold && c->cold->connect ? c : NULL;
}

/* A failed resolution: its code is kept for em_resolve_error. An empty
 * answer (getaddrinfo gives none) counts as no such name. */
static void resolve_failed(em_conn *c, int err, int gai)
{
    c->cold->resolve_error = gai ? gai : EAI_NONAME;
    em__conn_fail(c, gai ? err : EM_ERESOLVE);
}

static void resolved(em_reactor *r, em_sig sig, struct addrinfo *ai, int err, int gai)
{
    em_conn *c = waiting(r, sig);
    if (c && !ai) {
        resolve_failed(c, err, gai);
    } else if (c) {
        err = -take_addresses(c, ai);
        if (err)
            em__conn_fail(c, err);
        else
            try_next(c);
    }
    if (ai)
        freeaddrinfo(ai);
}

/* The target: tried at once when it is a literal, else resolved first. */
static int start_target(em_conn *c)
{
    em_connect_state *cs = c->cold->connect;
    if (!cs->target_name) {
        try_next(c);
        return 0;
    }
    return em__resolve(c->r, cs->target_name, cs->target_port, SOCK_STREAM, c->sig, resolved);
}

static void bind_resolved(em_reactor *r, em_sig sig, struct addrinfo *ai, int err, int gai)
{
    em_conn *c = waiting(r, sig);
    if (c && !ai) {
        resolve_failed(c, err, gai);
    } else if (c && ai->ai_addrlen > sizeof c->cold->connect->bind.ss) {
        resolve_failed(c, EM_ERESOLVE, EAI_FAMILY);
    } else if (c) {
        memcpy(&c->cold->connect->bind.ss, ai->ai_addr, ai->ai_addrlen);
        c->cold->connect->bind.len = ai->ai_addrlen;
        c->cold->connect->has_bind = true;
        err = -start_target(c);
        if (err)
            em__conn_fail(c, err);
    }
    if (ai)
        freeaddrinfo(ai);
}

/* A literal bind address is used as it is; a name waits for the pool. */
static int parse_bind(em_connect_state *cs, const char *host, int port)
{
    if (!host && !port)
        return 0;
    if (!host)
        host = "0.0.0.0";
    if (em__sockaddr_parse(host, port, &cs->bind.ss, &cs->bind.len) == 0) {
        cs->has_bind = true;
        return 0;
    }
    cs->bind_name = em__strdup(host);
    cs->bind_port = port;
    return cs->bind_name ? 0 : -ENOMEM;
}

static int parse_target(em_connect_state *cs, const char *host, int port)
{
    em_addr *a = &cs->addrs[0];
    bool literal = port < 0 ? em__sockaddr_unix(host, &a->ss, &a->len) == 0
                            : em__sockaddr_parse(host, port, &a->ss, &a->len) == 0;
    if (literal) {
        cs->count = 1;
        return 0;
    }
    cs->target_name = em__strdup(host);
    cs->target_port = port;
    return cs->target_name ? 0 : -ENOMEM;
}

/* Begins resolution (names) or the first attempt (literals and unix paths). */
int em__connect_start(em_conn *c, const char *bind_host, int bind_port, const char *host,
                      int port)
{
    em_connect_state *cs = em__conn_cold(c) ? em__calloc(1, sizeof *cs) : NULL;
    if (!cs)
        return -ENOMEM;
    c->cold->connect = cs;
    c->cold->resolve_error = 0; /* an em_reconnect starts afresh */
    c->flags |= EM_CF_OUTBOUND;
    em__free(c->cold->host);
    c->cold->host = port >= 0 ? em__strdup(host) : NULL;
    int err = port >= 0 && !c->cold->host ? -ENOMEM : parse_bind(cs, bind_host, bind_port);
    if (!err && !(cs->addrs = em__calloc(1, sizeof *cs->addrs)))
        err = -ENOMEM;
    if (!err)
        err = parse_target(cs, host, port);
    cs->started = em__clock();
    c->state = EM_CS_RESOLVING;
    if (!err)
        err = cs->bind_name ? em__resolve(c->r, cs->bind_name, cs->bind_port, SOCK_STREAM,
                                          c->sig, bind_resolved)
                            : start_target(c);
    if (err == -EAGAIN || err == -ECANCELED) {
        /* no pool thread for the resolution: a failure like any other */
        em__conn_fail(c, -err);
        return 0;
    }
    if (err) {
        em__connect_abandon(c);
        c->state = EM_CS_OPEN;
        return err;
    }
    arm_connect_timer(c);
    return 0;
}

static em_conn *connect_common(em_reactor *r, const char *bind_host, int bind_port,
                               const char *host, int port, const em_handler *h, void *arg)
{
    if (em__may_add(r)) {
        errno = ECANCELED;
        return NULL;
    }
    em_conn *c = em__conn_new(r, -1, h, arg);
    if (!c)
        return NULL;
    int err = em__connect_start(c, bind_host, bind_port, host, port);
    if (err) {
        em__conn_discard(c);
        errno = -err;
        return NULL;
    }
    if (h->post_init)
        h->post_init(c);
    return c;
}

em_conn *em_bind_connect(em_reactor *r, const char *bind_host, int bind_port,
                         const char *host, int port, const em_handler *h, void *arg)
{
    if (!r || !host || !*host || !h || port <= 0 || port > 65535 || !valid_port(bind_port)) {
        errno = EINVAL;
        return NULL;
    }
    if (bind_host && !*bind_host) {
        errno = EINVAL;
        return NULL;
    }
    return connect_common(r, bind_host, bind_port, host, port, h, arg);
}

em_conn *em_connect(em_reactor *r, const char *host, int port, const em_handler *h, void *arg)
{
    return em_bind_connect(r, NULL, 0, host, port, h, arg);
}

em_conn *em_connect_unix(em_reactor *r, const char *path, const em_handler *h, void *arg)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int err = r && h ? em__sockaddr_unix(path, &ss, &len) : -EINVAL;
    if (err) {
        errno = -err;
        return NULL;
    }
    return connect_common(r, NULL, 0, path, -1, h, arg);
}

/* port -1: host is a unix socket's path. */
static int reconnect(em_conn *c, const char *host, int port)
{
    if (c->flags & (EM_CF_DGRAM | EM_CF_WATCH | EM_CF_POPEN | EM_CF_NO_FD_CLOSE))
        return -EINVAL;
    if (c->state != EM_CS_UNBINDING)
        return -EISCONN;
    em_reactor *r = c->r;
    if (r->shutting_down)
        return -ECANCELED;
    em_sig old = c->sig;
    c->sig = em__next_sig(r);
    if (em__sigmap_put(&r->sigmap, c) < 0) {
        c->sig = old;
        return -ENOMEM;
    }
    em_sig sig = c->sig;
    em__conn_layer_retire(c); /* TLS, if any, starts again with em_start_tls */
    c->flags &= EM_CF_OUT_LIMIT; /* a setting: kept */
    c->reason = 0;
    c->io.dead = false;
    c->created = c->last_activity = r->now;
    int err = em__connect_start(c, NULL, 0, host, port);
    if (err) {
        em__sigmap_del(&r->sigmap, sig);
        c->state = EM_CS_UNBINDING;
        return err;
    }
    if (c->cold && c->cold->inactivity > 0 && em__conn_usable(c))
        em_set_comm_inactivity_timeout(c, c->cold->inactivity);
    return 0;
}

int em_reconnect(em_conn *c, const char *host, int port)
{
    if (!c || !host || !*host || port <= 0 || port > 65535)
        return -EINVAL;
    return reconnect(c, host, port);
}

int em_reconnect_unix(em_conn *c, const char *path)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int err = c ? em__sockaddr_unix(path, &ss, &len) : -EINVAL;
    return err ? err : reconnect(c, path, -1);
}

double em_get_pending_connect_timeout(const em_conn *c) { return c ? connect_limit(c) : 0; }

int em_set_pending_connect_timeout(em_conn *c, double s)
{
    if (!c || !(s >= 0))
        return -EINVAL;
    if (!c->cold && s == EM_DEFAULT_CONNECT_TIMEOUT)
        return 0;
    if (!em__conn_cold(c))
        return -ENOMEM;
    c->cold->connect_timeout = s;
    if (c->state == EM_CS_RESOLVING || c->state == EM_CS_CONNECTING)
        arm_connect_timer(c);
    if (c->flags & EM_CF_LAYER) /* its handshake is bound by it too */
        em__layer(c)->ops->connect_timeout_changed(c);
    return 0;
}
