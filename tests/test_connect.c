/* Outbound connections: TCP v4/v6, names, unix, failures, timeouts,
 * bind_connect, reconnect. */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int err_in_unbind;

static void record_error(em_conn *c, rec *x, int reason)
{
    (void)x;
    (void)reason;
    err_in_unbind = em_error(c);
}

static void echo_roundtrip(const char *server_host, const char *connect_host)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.echo = true, .tag = 1};
    rec cli = {.store = true, .tag = 2};
    rec_pool_new(&srv, 4);
    em_server *s = em_start_server(r, server_host, 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    em_conn *c = em_connect(r, connect_host, em_server_port(s), &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    /* post_init ran inside em_connect; connection_completed never does */
    ASSERT_EQ(cli.post_inits, 1);
    ASSERT_EQ(cli.completed, 0);
    ASSERT(em_conn_arg(c) == &cli);
    ASSERT(em_conn_user(c) == &cli);
    ASSERT(em_conn_reactor(c) == r);
    ASSERT(!em_is_watch_only(c));
    ASSERT_EQ(em_get_pending_connect_timeout(c) == 20.0, 1);
    ASSERT_EQ(em_get_comm_inactivity_timeout(c) == 0.0, 1);
    /* data sent while connecting is sent once connected */
    ASSERT_EQ(em_send_data(c, "hello", 5), 0);
    ASSERT(run_until(r, &cli.completed, 5));
    ASSERT_EQ(cli.completed, 1);
    ASSERT(em_conn_fd(c) >= 0);
    ASSERT_EQ(em_error(c), 0);
    double deadline = now_mono() + 5;
    while (cli.len < 5 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(cli.len, 5);
    ASSERT(memcmp(cli.buf, "hello", 5) == 0);
    ASSERT(em_conn_by_sig(r, cli.sig) == c);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT_EQ(cli.unbinds, 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, 0);
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(srv.pool[0].reason, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(connect_ipv4)
{
    echo_roundtrip("127.0.0.1", "127.0.0.1");
}

TEST(connect_ipv6)
{
    echo_roundtrip("::1", "::1");
}

TEST(connect_localhost_name)
{
    /* a server on "localhost" (one of 127.0.0.1, ::1) and a client to
     * "localhost": every resolved address is tried in turn, so one of them
     * connects whatever order /etc/hosts gives. */
    echo_roundtrip("localhost", "localhost");
}

TEST(connect_unix)
{
    int fd0 = open_fd_count();
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/s", dir);
    em_reactor *r = new_reactor();
    rec srv = {.echo = true, .tag = 1};
    rec cli = {.store = true, .tag = 2};
    rec_pool_new(&srv, 4);
    em_server *s = em_start_unix_server(r, path, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    em_conn *c = em_connect_unix(r, path, &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(cli.post_inits, 1);
    ASSERT_EQ(em_send_data(c, "unix!", 5), 0);
    ASSERT(run_until(r, &cli.completed, 5));
    double deadline = now_mono() + 5;
    while (cli.len < 5 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(cli.len, 5);
    ASSERT(memcmp(cli.buf, "unix!", 5) == 0);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ASSERT_EQ(em_get_peername(c, &ss, &len), 0);
    ASSERT_EQ(ss.ss_family, AF_UNIX);
    ASSERT_EQ(close_conn(c, true), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, 0);
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rm_tmpdir(dir);
    rec_free(&srv);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(connect_refused_unbinds)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    const char *hosts[] = {"127.0.0.1", "::1"};
    for (int i = 0; i < 2; i++) {
        rec cli = {.tag = 2, .on_unbind = record_error};
        int port = free_port();
        if (i == 1) {
            int l = tcp_listen_raw("::1", 1, &port);
            close(l);
        }
        em_conn *c = em_connect(r, hosts[i], port, &rec_handler, &cli);
        ASSERT_NOT_NULL(c); /* failures arrive as unbind, never as NULL */
        ASSERT_EQ(cli.post_inits, 1);
        ASSERT_EQ(cli.unbinds, 0);
        err_in_unbind = 0;
        ASSERT(run_until(r, &cli.unbinds, 5));
        ASSERT_EQ(cli.reason, ECONNREFUSED);
        ASSERT_EQ(cli.completed, 0);
        ASSERT(err_in_unbind == ECONNREFUSED || err_in_unbind == -ECONNREFUSED);
        ASSERT_NULL(em_conn_by_sig(r, cli.sig));
        rec_free(&cli);
    }
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(connect_unix_missing_or_refused)
{
    int fd0 = open_fd_count();
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/none", dir);
    em_reactor *r = new_reactor();
    rec a = {.tag = 1};
    ASSERT_NOT_NULL(em_connect_unix(r, path, &rec_handler, &a));
    ASSERT(run_until(r, &a.unbinds, 5));
    ASSERT_EQ(a.reason, ENOENT);
    ASSERT_EQ(a.completed, 0);
    /* a socket file nobody listens on */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, path);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    close(fd);
    rec b = {.tag = 2};
    ASSERT_NOT_NULL(em_connect_unix(r, path, &rec_handler, &b));
    ASSERT(run_until(r, &b.unbinds, 5));
    ASSERT_EQ(b.reason, ECONNREFUSED);
    REACTOR_FREE_CHECKED(r);
    rm_tmpdir(dir);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(connect_unresolvable_name)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    char name[128];
    memset(name, 'a', 70);
    strcpy(name + 70, ".invalid");
    rec cli = {.tag = 2};
    double t0 = now_mono();
    em_conn *c = em_connect(r, name, 80, &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT_LE(now_mono() - t0, 0.5); /* never blocks */
    ASSERT_EQ(cli.post_inits, 1);
    /* still resolving */
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (!cli.unbinds)
        ASSERT_EQ(em_get_peername(c, &ss, &len), -ENOTCONN);
    ASSERT(run_until(r, &cli.unbinds, 10));
    ASSERT_EQ(cli.reason, EM_ERESOLVE);
    ASSERT_EQ(cli.completed, 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A listener with listen(fd, 0) that never accepts, its queue filled: the
 * next connect hangs. */
TEST(pending_connect_timeout)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 0, &port);
    int fill[8];
    for (int i = 0; i < 8; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connect(fill[i], (struct sockaddr *)&a, sizeof a);
    }
    rec cli = {.tag = 2};
    em_conn *c = em_connect(r, "127.0.0.1", port, &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT(em_get_pending_connect_timeout(c) == 20.0);
    double t0 = em_now(r); /* the timeout counts from libem's time, as timers do */
    ASSERT_EQ(em_set_pending_connect_timeout(c, 0.3), 0);
    ASSERT(em_get_pending_connect_timeout(c) == 0.3);
    ASSERT(run_until(r, &cli.unbinds, 5));
    double el = now_mono() - t0;
    ASSERT_EQ(cli.reason, ETIMEDOUT);
    ASSERT_EQ(cli.completed, 0);
    ASSERT_DBL_GE(el, 0.3);
    ASSERT_DBL_LE(el, 2.0);
    for (int i = 0; i < 8; i++)
        close(fill[i]);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Pending connect timeout also covers resolution: a name that resolves to
 * loopback but whose connect hangs. */
TEST(pending_connect_timeout_on_name)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 0, &port);
    int lfd6 = -1;
    int fill[8], nfill = 0;
    for (int i = 0; i < 8; i++) {
        fill[nfill] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connect(fill[nfill++], (struct sockaddr *)&a, sizeof a);
    }
    /* "localhost" may also give ::1: make that hang too, on the same port */
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    a6.sin6_addr = in6addr_loopback;
    lfd6 = socket(AF_INET6, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    int fill6[8], nfill6 = 0;
    if (bind(lfd6, (struct sockaddr *)&a6, sizeof a6) == 0 && listen(lfd6, 0) == 0) {
        for (int i = 0; i < 8; i++) {
            fill6[nfill6] = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
            connect(fill6[nfill6++], (struct sockaddr *)&a6, sizeof a6);
        }
    }
    rec cli = {.tag = 2};
    em_conn *c = em_connect(r, "localhost", port, &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    double t0 = em_now(r); /* the timeout counts from libem's time, as timers do */
    ASSERT_EQ(em_set_pending_connect_timeout(c, 0.3), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, ETIMEDOUT);
    ASSERT_DBL_GE(now_mono() - t0, 0.3);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    for (int i = 0; i < nfill6; i++)
        close(fill6[i]);
    close(lfd);
    close(lfd6);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

static int sockaddr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

TEST(bind_connect_local_port)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.echo = true, .tag = 1};
    rec cli = {.tag = 2};
    rec_pool_new(&srv, 4);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int local = free_port();
    em_conn *c = em_bind_connect(r, "127.0.0.1", local, "127.0.0.1", em_server_port(s),
                                 &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &cli.completed, 5));
    ASSERT(run_until(r, &srv.pool_used, 5));
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ASSERT_EQ(em_get_sockname(c, &ss, &len), 0);
    ASSERT_EQ(sockaddr_port(&ss), local);
    len = sizeof ss;
    ASSERT_EQ(em_get_peername(srv.pool[0].conn, &ss, &len), 0);
    ASSERT_EQ(sockaddr_port(&ss), local);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    /* bind_host NULL, bind_port 0: any */
    rec cli2 = {.tag = 3};
    c = em_bind_connect(r, NULL, 0, "127.0.0.1", em_server_port(s), &rec_handler, &cli2);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &cli2.completed, 5));
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &cli2.unbinds, 5));
    ASSERT(run_until(r, &srv.pool[1].unbinds, 5));
    /* a bind failure arrives as unbind(errno) */
    int lport;
    int lfd = tcp_listen_raw("127.0.0.1", 1, &lport);
    rec cli3 = {.tag = 4};
    c = em_bind_connect(r, "127.0.0.1", lport, "127.0.0.1", em_server_port(s), &rec_handler,
                        &cli3);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &cli3.unbinds, 5));
    ASSERT_EQ(cli3.reason, EADDRINUSE);
    ASSERT_EQ(cli3.completed, 0);
    close(lfd);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------------- reconnect */

struct retry {
    em_reactor *r;
    int port;
    rec *srv;
    em_server *s;
    em_conn *first_ptr;
    em_sig sigs[4];
    int post_inits, completed, unbinds, reasons[4];
    int reconnect_rc, eisconn_rc;
    bool old_sig_gone_in_unbind;
    void *user_seen;
};

static void rt_post_init(em_conn *c)
{
    struct retry *t = em_conn_arg(c);
    t->post_inits++;
    t->first_ptr = c;
    t->sigs[0] = em_signature(c);
    em_conn_set_user(c, (void *)0x5eed);
}

static void rt_completed(em_conn *c)
{
    struct retry *t = em_conn_arg(c);
    if (c != t->first_ptr)
        FAIL("reconnected object is a different pointer");
    t->completed++;
    t->sigs[t->unbinds] = em_signature(c);
    t->user_seen = em_conn_user(c);
    t->eisconn_rc = em_reconnect(c, "127.0.0.1", t->port);
    em_close_connection(c, false);
}

static void rt_unbind(em_conn *c, int reason)
{
    struct retry *t = em_conn_arg(c);
    if (c != t->first_ptr)
        FAIL("unbind on a different pointer");
    t->reasons[t->unbinds] = reason;
    t->old_sig_gone_in_unbind = em_conn_by_sig(t->r, em_signature(c)) == NULL;
    t->unbinds++;
    if (t->unbinds == 1) {
        /* first attempt refused: start the server, retry on the same object */
        t->s = em_start_server(t->r, "127.0.0.1", t->port, &rec_handler, t->srv);
        if (!t->s)
            FAIL("em_start_server in unbind: errno %d", errno);
        t->reconnect_rc = em_reconnect(c, "127.0.0.1", t->port);
    }
}

static const em_handler retry_handler = {
    .post_init = rt_post_init,
    .connection_completed = rt_completed,
    .unbind = rt_unbind,
};

TEST(reconnect_from_unbind)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec_pool_new(&srv, 4);
    struct retry t = {.r = r, .port = free_port(), .srv = &srv, .reconnect_rc = 1};
    em_conn *c = em_connect(r, "127.0.0.1", t.port, &retry_handler, &t);
    ASSERT_NOT_NULL(c);
    em_sig first = em_signature(c);
    ASSERT(run_until(r, &t.unbinds, 5));
    ASSERT_EQ(t.reasons[0], ECONNREFUSED);
    ASSERT_EQ(t.reconnect_rc, 0);
    ASSERT(t.old_sig_gone_in_unbind);
    ASSERT(run_until(r, &t.completed, 5));
    ASSERT_EQ(t.post_inits, 1);
    ASSERT_EQ(t.completed, 1);
    ASSERT_NE(t.sigs[1], first);
    ASSERT_NE(t.sigs[1], 0);
    ASSERT(t.user_seen == (void *)0x5eed);
    ASSERT_EQ(t.eisconn_rc, -EISCONN);
    /* live under the new signature until closed */
    double deadline = now_mono() + 5;
    while (t.unbinds < 2 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(t.unbinds, 2);
    ASSERT_EQ(t.reasons[1], 0);
    ASSERT_NULL(em_conn_by_sig(r, t.sigs[1]));
    ASSERT_NULL(em_conn_by_sig(r, first));
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(em_stop_server(t.s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Signatures are unique and never reused. */
TEST(signatures_unique)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    em_sig seen[20];
    for (int i = 0; i < 20; i++) {
        rec cli = {.tag = i};
        em_conn *c = em_connect(r, "127.0.0.1", free_port(), &rec_handler, &cli);
        ASSERT_NOT_NULL(c);
        seen[i] = em_signature(c);
        ASSERT_NE(seen[i], 0);
        for (int j = 0; j < i; j++)
            ASSERT_NE(seen[i], seen[j]);
        ASSERT(em_conn_by_sig(r, seen[i]) == c);
        ASSERT(run_until(r, &cli.unbinds, 5));
        ASSERT_NULL(em_conn_by_sig(r, seen[i]));
    }
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------- retries that fail at once */

/* A handler that retries from unbind, each retry failing at once: EMFILE
 * (the process has no descriptor left) with em_reconnect, ECONNREFUSED
 * from a unix listener whose backlog is full with em_connect_unix. Each
 * failure must be unbound in a later turn, so that turns end, timers run
 * and em_stop works. */
struct spin {
    em_reactor *r;
    int port, unbinds, ticks, fillers[256], nfill;
    const char *unix_path; /* retry with em_connect_unix, else em_reconnect */
};

static const em_handler spin_handler;

static void spin_unbind(em_conn *c, int reason)
{
    (void)reason;
    struct spin *s = em_conn_arg(c);
    if (++s->unbinds == 1 && !s->unix_path) {
        int fd;
        while (s->nfill < 256 && (fd = dup(0)) >= 0)
            s->fillers[s->nfill++] = fd;
    }
    if (s->unix_path)
        em_connect_unix(s->r, s->unix_path, &spin_handler, s);
    else
        em_reconnect(c, "127.0.0.1", s->port);
}

static const em_handler spin_handler = {.unbind = spin_unbind};

static void spin_tick(em_reactor *r, void *arg)
{
    (void)r;
    ((struct spin *)arg)->ticks++;
}

static void spin_stop(em_reactor *r, void *arg)
{
    struct spin *s = arg;
    for (int i = 0; i < s->nfill; i++)
        close(s->fillers[i]);
    s->nfill = 0;
    em_stop(r);
}

static void run_spinning_retries(struct spin *s)
{
    ASSERT_NE(em_add_periodic_timer(s->r, 0.01, spin_tick, s), 0);
    ASSERT_NE(em_add_timer(s->r, 0.3, spin_stop, s), 0);
    ASSERT_EQ(em_run(s->r), 0);
    ASSERT_GE(s->ticks, 5);
    ASSERT_GE(s->unbinds, 5);
}

TEST(reconnect_failing_at_once_lets_turns_end)
{
    int fd0 = open_fd_count();
    struct rlimit rl = {64, 64};
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    em_reactor_opts o = {.threadpool_size = 1};
    em_reactor *r = em_reactor_new(&o);
    ASSERT_NOT_NULL(r);
    struct spin s = {.r = r, .port = free_port()};
    em_conn *c = em_connect(r, "127.0.0.1", s.port, &spin_handler, &s);
    ASSERT_NOT_NULL(c);
    run_spinning_retries(&s);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(unix_connect_retry_to_full_backlog_lets_turns_end)
{
    int fd0 = open_fd_count();
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/busy.sock", dir);
    unix_full busy;
    unix_listen_full(path, &busy);
    em_reactor *r = new_reactor();
    struct spin s = {.r = r, .unix_path = path};
    ASSERT_NOT_NULL(em_connect_unix(r, path, &spin_handler, &s));
    run_spinning_retries(&s);
    REACTOR_FREE_CHECKED(r);
    unix_full_close(&busy);
    rm_tmpdir(dir);
    ASSERT_NO_FD_LEAK(fd0);
}

/* em_connect from unbind during shutdown is refused (ECANCELED): em_run
 * returns after em_stop instead of unbinding new connections forever. */
struct keepalive {
    int port, unbinds, refused;
};

static const em_handler keepalive_handler;

static void keepalive_unbind(em_conn *c, int reason)
{
    (void)reason;
    struct keepalive *k = em_conn_arg(c);
    k->unbinds++;
    errno = 0;
    if (!em_connect(em_conn_reactor(c), "127.0.0.1", k->port, &keepalive_handler, k))
        k->refused += errno == ECANCELED;
}

static const em_handler keepalive_handler = {.unbind = keepalive_unbind};

static void stop_now(em_reactor *r, void *arg)
{
    (void)arg;
    em_stop(r);
}

TEST(connect_from_unbind_during_shutdown_refused)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec_pool_new(&srv, 64);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    struct keepalive k = {.port = em_server_port(s)};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", k.port, &keepalive_handler, &k));
    ASSERT_NE(em_add_timer(r, 0.1, stop_now, NULL), 0);
    ASSERT_EQ(em_run(r), 0);
    ASSERT_EQ(k.unbinds, 1);
    ASSERT_EQ(k.refused, 1);
    ASSERT_EQ(em_connection_count(r), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------- em_reconnect_unix */

struct unix_retry {
    const char *path;
    em_reactor *r;
    rec *srv;
    int unbinds, completed, rc, reasons[2];
};

static void ur_unbind(em_conn *c, int reason)
{
    struct unix_retry *u = em_conn_arg(c);
    u->reasons[u->unbinds++] = reason;
    if (u->unbinds == 1) {
        if (!em_start_unix_server(u->r, u->path, &rec_handler, u->srv))
            FAIL("em_start_unix_server in unbind: errno %d", errno);
        u->rc = em_reconnect_unix(c, u->path);
    }
}

static void ur_completed(em_conn *c)
{
    struct unix_retry *u = em_conn_arg(c);
    u->completed++;
    em_close_connection(c, false);
}

static const em_handler unix_retry_handler = {.connection_completed = ur_completed,
                                              .unbind = ur_unbind};

TEST(reconnect_unix_from_unbind)
{
    int fd0 = open_fd_count();
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/s.sock", dir);
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec_pool_new(&srv, 4);
    struct unix_retry u = {.path = path, .r = r, .srv = &srv, .rc = 1};
    em_conn *c = em_connect_unix(r, path, &unix_retry_handler, &u);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &u.completed, 5));
    ASSERT_EQ(u.reasons[0], ENOENT);
    ASSERT_EQ(u.rc, 0);
    double deadline = now_mono() + 5;
    while (u.unbinds < 2 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(u.unbinds, 2);
    ASSERT_EQ(u.reasons[1], 0);
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    /* bad paths, and a connection that is not being unbound */
    ASSERT_EQ(em_reconnect_unix(NULL, path), -EINVAL);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    rm_tmpdir(dir);
    ASSERT_NO_FD_LEAK(fd0);
}

static void no_work(void *arg) { (void)arg; }

/* No pool thread can start to resolve a name: em_connect still returns the
 * connection, and the failure arrives as unbind(EAGAIN). */
TEST(connect_name_without_pool_thread_unbinds_eagain)
{
    int fd0 = open_fd_count();
    pthread_attr_t a;
    ASSERT_EQ(pthread_attr_init(&a), 0);
    ASSERT_EQ(pthread_attr_setstacksize(&a, (size_t)1 << 46), 0); /* cannot be mapped */
    ASSERT_EQ(pthread_setattr_default_np(&a), 0);
    em_reactor *r = new_reactor();
    rec cli = {.tag = 1};
    em_conn *c = em_connect(r, "localhost", 9, &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(cli.post_inits, 1);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, EAGAIN);
    ASSERT_EQ(em_defer(r, no_work, NULL, NULL), -EAGAIN);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}
