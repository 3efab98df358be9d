/* Servers: TCP (IPv4, IPv6, names, port 0), unix sockets, stop, errors. */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* A raw client that sends "ping", reads the echo, closes. */
static void raw_ping(em_reactor *r, int fd, rec *srv)
{
    set_nonblock(fd);
    write_all(fd, "ping", 4);
    char buf[16];
    size_t got = 0;
    double deadline = now_mono() + 5;
    while (got < 4 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n > 0)
            got += (size_t)n;
    }
    ASSERT_EQ(got, 4);
    ASSERT(memcmp(buf, "ping", 4) == 0);
    close(fd);
    int before = srv->pool_used;
    ASSERT_GE(before, 1);
    ASSERT(run_until(r, &srv->pool[before - 1].unbinds, 5));
    ASSERT_EQ(srv->pool[before - 1].reason, 0);
    ASSERT_EQ(srv->pool[before - 1].post_inits, 1);
    ASSERT_EQ(srv->pool[before - 1].bytes_in, 4);
}

static void check_tcp_server(const char *host, const char *connect_ip)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.echo = true, .tag = 1};
    rec_pool_new(&srv, 4);
    em_server *s = em_start_server(r, host, 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);
    ASSERT_GT(port, 0);
    ASSERT_LE(port, 65535);
    ASSERT_NE(em_server_signature(s), 0);
    raw_ping(r, tcp_connect_raw(connect_ip, port), &srv);
    /* accepted connections get the server's arg */
    ASSERT_EQ(srv.pool_used, 1);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(server_ipv4)
{
    check_tcp_server("127.0.0.1", "127.0.0.1");
}

TEST(server_ipv6)
{
    check_tcp_server("::1", "::1");
}

TEST(server_localhost_name)
{
    /* "localhost" resolves from /etc/hosts: to 127.0.0.1 or ::1 */
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.echo = true, .tag = 1};
    rec_pool_new(&srv, 4);
    em_server *s = em_start_server(r, "localhost", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);
    ASSERT_GT(port, 0);
    /* find which family it listens on */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a4, sizeof a4) != 0) {
        close(fd);
        fd = tcp_connect_raw("::1", port);
    }
    raw_ping(r, fd, &srv);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(server_fixed_port_and_signature)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.echo = true, .tag = 1};
    rec_pool_new(&srv, 4);
    int port = free_port();
    em_server *s = em_start_server(r, "127.0.0.1", port, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(em_server_port(s), port);
    em_server *s2 = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s2);
    ASSERT_NE(em_server_signature(s), em_server_signature(s2));
    raw_ping(r, tcp_connect_raw("127.0.0.1", port), &srv);
    /* connection signatures come from the same counter */
    ASSERT_NE(srv.pool[0].sig, em_server_signature(s));
    ASSERT_NE(srv.pool[0].sig, em_server_signature(s2));
    ASSERT_EQ(em_stop_server(s), 0);
    ASSERT_EQ(em_stop_server(s2), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(stop_server_frees_port_at_once)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.echo = true, .tag = 1};
    rec_pool_new(&srv, 4);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);
    /* an accepted connection lives on after the server stops */
    int cfd = tcp_connect_raw("127.0.0.1", port);
    ASSERT(run_until(r, &srv.pool_used, 5));
    ASSERT_EQ(em_stop_server(s), 0);
    /* the port is free now, without another turn: bind a raw socket to it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&a4, sizeof a4), 0);
    ASSERT_EQ(listen(fd, 1), 0);
    close(fd);
    /* and again through libem */
    em_server *s2 = em_start_server(r, "127.0.0.1", port, &rec_handler, &srv);
    ASSERT_NOT_NULL(s2);
    ASSERT_EQ(em_stop_server(s2), 0);
    /* the accepted connection still echoes */
    raw_ping(r, cfd, &srv);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(server_port_in_use_eaddrinuse)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 4, &port);
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", port, &rec_handler, &srv), EADDRINUSE);
    close(lfd);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", em_server_port(s), &rec_handler, &srv),
                      EADDRINUSE);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(server_bad_arguments)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", -1, &rec_handler, &srv), EINVAL);
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", 65536, &rec_handler, &srv), EINVAL);
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", 0, NULL, &srv), EINVAL);
    ASSERT_NULL_ERRNO(em_start_server(r, NULL, 0, &rec_handler, &srv), EINVAL);
    ASSERT_NULL_ERRNO(em_start_server(NULL, "127.0.0.1", 0, &rec_handler, &srv), EINVAL);
    ASSERT_NULL_ERRNO(em_start_unix_server(r, "/tmp/x", NULL, &srv), EINVAL);
    ASSERT_NULL_ERRNO(em_start_unix_server(r, NULL, &rec_handler, &srv), EINVAL);
    ASSERT_EQ(em_server_port(NULL), -EINVAL);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(server_unresolvable_name)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    char name[128];
    memset(name, 'a', 70);
    strcpy(name + 70, ".invalid");
    ASSERT_NULL_ERRNO(em_start_server(r, name, 0, &rec_handler, &srv), EM_ERESOLVE);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------------- unix */

TEST(unix_server_echo_and_file_removed)
{
    int fd0 = open_fd_count();
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/sock", dir);
    em_reactor *r = new_reactor();
    rec srv = {.echo = true, .tag = 1};
    rec_pool_new(&srv, 4);
    em_server *s = em_start_unix_server(r, path, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(em_server_port(s), 0);
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT(S_ISSOCK(st.st_mode));
    raw_ping(r, unix_connect_raw(path), &srv);
    ASSERT_EQ(em_stop_server(s), 0);
    ASSERT_EQ(stat(path, &st), -1);
    ASSERT_EQ(errno, ENOENT);
    /* em_reactor_free removes the file of a server still open */
    s = em_start_unix_server(r, path, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(stat(path, &st), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_EQ(stat(path, &st), -1);
    rm_tmpdir(dir);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(unix_server_replaces_stale_refuses_live)
{
    int fd0 = open_fd_count();
    char dir[64], path[128], file[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/sock", dir);
    snprintf(file, sizeof file, "%s/plain", dir);
    /* a stale socket file: bound, then closed without unlinking */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, path);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    close(fd);
    em_reactor *r = new_reactor();
    rec srv = {.echo = true, .tag = 1};
    rec_pool_new(&srv, 4);
    em_server *s = em_start_unix_server(r, path, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    raw_ping(r, unix_connect_raw(path), &srv);
    /* a live one is refused, and left alone */
    ASSERT_NULL_ERRNO(em_start_unix_server(r, path, &rec_handler, &srv), EADDRINUSE);
    raw_ping(r, unix_connect_raw(path), &srv);
    /* a raw listener also counts as live */
    ASSERT_EQ(em_stop_server(s), 0);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    ASSERT_EQ(listen(fd, 4), 0);
    ASSERT_NULL_ERRNO(em_start_unix_server(r, path, &rec_handler, &srv), EADDRINUSE);
    close(fd);
    unlink(path);
    /* a path holding a regular file is refused and not removed */
    FILE *f = fopen(file, "w");
    ASSERT_NOT_NULL(f);
    fputs("keep me", f);
    fclose(f);
    ASSERT_NULL_ERRNO(em_start_unix_server(r, file, &rec_handler, &srv), EADDRINUSE);
    struct stat st;
    ASSERT_EQ(stat(file, &st), 0);
    ASSERT(S_ISREG(st.st_mode));
    REACTOR_FREE_CHECKED(r);
    rm_tmpdir(dir);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(unix_server_path_too_long)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    struct sockaddr_un sun;
    char path[sizeof sun.sun_path + 32];
    memset(path, 'p', sizeof path - 1);
    path[0] = '/';
    path[sizeof path - 1] = '\0';
    ASSERT_NULL_ERRNO(em_start_unix_server(r, path, &rec_handler, &srv), ENAMETOOLONG);
    /* exactly sizeof sun_path characters leaves no room for the NUL */
    path[sizeof sun.sun_path] = '\0';
    ASSERT_NULL_ERRNO(em_start_unix_server(r, path, &rec_handler, &srv), ENAMETOOLONG);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(attach_server)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int fd1 = open_fd_count();
    rec srv = {.echo = true, .tag = 1};
    rec_pool_new(&srv, 4);
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 16, &port);
    em_server *s = em_attach_server(r, lfd, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(em_server_port(s), port);
    raw_ping(r, tcp_connect_raw("127.0.0.1", port), &srv);
    ASSERT_EQ(em_stop_server(s), 0); /* closes lfd */
    ASSERT_NO_FD_LEAK(fd1);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Every accepted TCP socket has TCP_NODELAY: the first, which shows whether
 * the kernel copies it from the listener, and the ones after. */
static void check_nodelay_on_accepted(em_reactor *r, em_server *s, rec *srv, const char *ip)
{
    enum { N = 3 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = tcp_connect_raw(ip, em_server_port(s));
        ASSERT(run_until(r, &srv->pool[i].post_inits, 5));
        int v = 0;
        socklen_t len = sizeof v;
        ASSERT_EQ(em_get_sock_opt(srv->pool[i].conn, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
        ASSERT_NE(v, 0);
    }
    for (int i = 0; i < N; i++)
        close(fds[i]);
    ASSERT(run_until(r, &srv->pool[N - 1].unbinds, 5));
}

static void nodelay_case(const char *ip, bool attach, bool listener_nodelay)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec_pool_new(&srv, 4);
    int lfd = -1, port;
    em_server *s;
    if (attach) {
        lfd = tcp_listen_raw(ip, 16, &port);
        int v = listener_nodelay;
        ASSERT_EQ(setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v), 0);
        s = em_attach_server(r, lfd, &rec_handler, &srv);
    } else {
        s = em_start_server(r, ip, 0, &rec_handler, &srv);
    }
    ASSERT_NOT_NULL(s);
    check_nodelay_on_accepted(r, s, &srv, ip);
    if (attach) { /* the owner's listener is left as it was */
        int v = -1;
        socklen_t len = sizeof v;
        ASSERT_EQ(getsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
        ASSERT_EQ(v != 0, listener_nodelay);
    }
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(accepted_sockets_get_nodelay_ipv4) { nodelay_case("127.0.0.1", false, false); }
TEST(accepted_sockets_get_nodelay_ipv6) { nodelay_case("::1", false, false); }
TEST(attached_listener_without_nodelay) { nodelay_case("127.0.0.1", true, false); }
TEST(attached_listener_with_nodelay) { nodelay_case("127.0.0.1", true, true); }

/* Many clients at once: the backlog is taken one per turn, none is lost. */
TEST(server_accepts_burst)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    enum { N = 100 };
    rec_pool_new(&srv, N);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = tcp_connect_raw("127.0.0.1", em_server_port(s));
    double deadline = now_mono() + 5;
    while (srv.pool_used < N && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(srv.pool_used, N);
    ASSERT_EQ(em_connection_count(r), N);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    deadline = now_mono() + 5;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(srv.pool[i].unbinds, 1);
        ASSERT_EQ(srv.pool[i].reason, 0);
    }
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Connections accepted by one turn of r, with n connects waiting. */
static int accepted_in_one_turn(em_reactor *r, rec *srv)
{
    int before = srv->pool_used;
    ASSERT_GE(em_run_once(r, 1), 0);
    return srv->pool_used - before;
}

/* EventMachine's simultaneous accept count: a fixed number per report,
 * then libem's own choice again (one per report on an idle reactor). */
TEST(accepts_per_event_is_honoured)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    enum { N = 10 };
    rec srv = {.tag = 1};
    rec_pool_new(&srv, N);
    ASSERT_EQ(em_accepts_per_event(r), 0u);
    ASSERT_EQ(em_set_accepts_per_event(NULL, 3), -EINVAL);
    ASSERT_EQ(em_set_accepts_per_event(r, 3), 0); /* before: io_uring's accept is not asked */
    ASSERT_EQ(em_accepts_per_event(r), 3u);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = tcp_connect_raw("127.0.0.1", em_server_port(s));
    ASSERT_EQ(accepted_in_one_turn(r, &srv), 3);
    ASSERT_EQ(accepted_in_one_turn(r, &srv), 3);
    ASSERT_EQ(em_set_accepts_per_event(r, 0), 0);
    const char *polled = getenv("EM_URING_ACCEPT");
    bool uring_accepts = !strcmp(em_backend_name(r), "io_uring") && !(polled && !strcmp(polled, "0"));
    if (strcmp(em_backend_name(r), "poll") && !uring_accepts)
        ASSERT_EQ(accepted_in_one_turn(r, &srv), 1);
    else /* a poller that scans every descriptor, the kernel's accept: all */
        ASSERT_EQ(accepted_in_one_turn(r, &srv), N - 6);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    double deadline = now_mono() + 5;
    while ((rec_live > 0 || em_connection_count(r) > 0) && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(srv.pool_used, N);
    ASSERT_EQ(rec_live, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

static void ignore_readable(em_conn *c) { (void)c; }

/* A busy reactor (more descriptors ready than one wait returns) reports the
 * listener only every other turn or so: a burst is still taken in a few
 * turns, not one connection per report. */
TEST(busy_reactor_takes_burst_in_few_turns)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    enum { BUSY = 300, N = 64 };
    static const em_handler busy = {.notify_readable = ignore_readable};
    int watched[BUSY];
    em_conn *w[BUSY];
    for (int i = 0; i < BUSY; i++) {
        int p[2];
        ASSERT_EQ(pipe(p), 0);
        ASSERT_EQ(write(p[1], "x", 1), 1);
        close(p[1]); /* a byte and the end: readable until read, never read */
        watched[i] = p[0];
        w[i] = em_watch(r, p[0], &busy, NULL);
        ASSERT_NOT_NULL(w[i]);
        ASSERT_EQ(em_set_notify_readable(w[i], true), 0);
    }
    rec srv = {.tag = 1};
    rec_pool_new(&srv, N);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = tcp_connect_raw("127.0.0.1", em_server_port(s));
    int turns = 0;
    while (srv.pool_used < N && turns < 4 * N) {
        ASSERT_GE(em_run_once(r, 0.05), 0);
        turns++;
    }
    ASSERT_EQ(srv.pool_used, N);
    ASSERT_LT(turns, N / 2); /* one accept per report: about 2 turns each */
    for (int i = 0; i < BUSY; i++)
        ASSERT_EQ(em_close_connection(w[i], false), 0);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    double deadline = now_mono() + 5;
    while ((rec_live > 0 || em_connection_count(r) > 0) && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    ASSERT_EQ(em_connection_count(r), 0);
    for (int i = 0; i < BUSY; i++)
        close(watched[i]); /* watch mode never closes the descriptor */
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A listener shut down behind libem's back stays "readable" and accept4
 * fails with EINVAL for good: the server backs off instead of spinning, and
 * the reactor keeps serving. */
TEST(server_listener_gone_bad_no_spin)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec_pool_new(&srv, 1);
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 16, &port);
    em_server *s = em_attach_server(r, lfd, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(shutdown(lfd, SHUT_RDWR), 0);
    ASSERT_LT(accept(lfd, NULL, NULL), 0); /* what the server now meets */
    int turns = 0;
    double end = now_mono() + 0.5;
    while (now_mono() < end) {
        ASSERT_GE(em_run_once(r, 0.05), 0);
        turns++;
    }
    /* a spin turns thousands of times; a 0.1 s back-off about 10 */
    ASSERT_LT(turns, 100);
    ASSERT_EQ(srv.pool_used, 0);
    ASSERT_EQ(em_stop_server(s), 0); /* closes lfd */
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Out of descriptors: the server neither spins nor stalls, and accepts again
 * once descriptors are free. */
TEST(server_emfile_no_spin_then_resumes)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec_pool_new(&srv, 16);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);
    struct rlimit old, rl;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
    rl = old;
    rl.rlim_cur = (rlim_t)open_fd_count() + 64;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    int clients[4];
    for (int i = 0; i < 4; i++)
        clients[i] = tcp_connect_raw("127.0.0.1", port);
    int fill[128], nfill = 0;
    for (;;) {
        int d = dup(0);
        if (d < 0)
            break;
        ASSERT_LT(nfill, 128);
        fill[nfill++] = d;
    }
    ASSERT_EQ(errno, EMFILE);
    double t0 = now_mono();
    int turns = 0;
    while (now_mono() - t0 < 0.5) {
        ASSERT_GE(em_run_once(r, 0.05), 0);
        turns++;
    }
    /* 0.5 s of 50 ms waits is about 10 turns; a spinning loop makes thousands */
    ASSERT_LE(turns, 60);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    for (int i = 0; i < 4; i++)
        close(clients[i]);
    int before = srv.pool_used;
    int cfd = tcp_connect_raw("127.0.0.1", port);
    double deadline = now_mono() + 5;
    while (srv.pool_used <= before && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_GT(srv.pool_used, before);
    close(cfd);
    deadline = now_mono() + 5;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A live unix listener that is not accepting (its backlog is full) is
 * refused with EADDRINUSE at once: the probe never blocks. */
TEST(unix_server_refuses_live_listener_with_full_backlog)
{
    int fd0 = open_fd_count();
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/busy", dir);
    unix_full busy;
    unix_listen_full(path, &busy);
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    ASSERT_NULL_ERRNO(em_start_unix_server(r, path, &rec_handler, &srv), EADDRINUSE);
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0); /* left alone */
    REACTOR_FREE_CHECKED(r);
    unix_full_close(&busy);
    rm_tmpdir(dir);
    ASSERT_NO_FD_LEAK(fd0);
}

/* n raw clients connected to port, fds[0..n), each accepted by srv's pool
 * (which has accepted `base` before): the reactor runs every 100 clients,
 * since the listen backlog holds 1024. */
static void connect_clients(em_reactor *r, int port, rec *srv, int *fds, int n)
{
    int base = srv->pool_used;
    double deadline = now_mono() + 60;
    for (int i = 0; i < n; i++) {
        fds[i] = tcp_connect_raw("127.0.0.1", port);
        while ((i % 100 == 99 || i == n - 1) && srv->pool_used <= base + i &&
               now_mono() < deadline)
            ASSERT_GE(em_run_once(r, 0.05), 0);
    }
    ASSERT_EQ(srv->pool_used, base + n);
}

/* A burst of connections arriving at a reactor that already holds many:
 * where a wait scans every registered descriptor (poll), accepting one
 * connection per wait made a burst cost O(connections x burst), and 15,000
 * clients stalled for seconds; the listener's backlog is emptied per
 * report there, so the burst takes a few waits. On epoll a wait costs only
 * what is ready, and one accept per report is the cheap policy. */
TEST(burst_among_many_idle_takes_few_full_scans)
{
    int fd0 = open_fd_count();
    ASSERT_GE(raise_nofile(), 4096);
    em_reactor *r = new_reactor();
    enum { IDLE = 1500, N = 500 };
    rec srv = {.tag = 1};
    rec_pool_new(&srv, IDLE + N);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);
    static int fds[IDLE + N];
    connect_clients(r, port, &srv, fds, IDLE);
    for (int i = IDLE; i < IDLE + N; i++)
        fds[i] = tcp_connect_raw("127.0.0.1", port); /* waits in the backlog */
    int turns = 0;
    double deadline = now_mono() + 30;
    while (srv.pool_used < IDLE + N && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.05), 0);
        turns++;
    }
    ASSERT_EQ(srv.pool_used, IDLE + N);
    if (!strcmp(em_backend_name(r), "poll"))
        ASSERT_LE(turns, 8);
    for (int i = 0; i < IDLE + N; i++)
        close(fds[i]);
    deadline = now_mono() + 30;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}
TEST_TIMEOUT(burst_among_many_idle_takes_few_full_scans, 120);

/* ---------------------------------------- memory after many connections */

static atomic_long live_bytes;

static void *track_malloc(size_t n)
{
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&live_bytes, (long)malloc_usable_size(p));
    return p;
}

static void *track_realloc(void *p, size_t n)
{
    long before = p ? (long)malloc_usable_size(p) : 0;
    void *q = realloc(p, n);
    if (q)
        atomic_fetch_add(&live_bytes, (long)malloc_usable_size(q) - before);
    return q;
}

static void track_free(void *p)
{
    if (p)
        atomic_fetch_sub(&live_bytes, (long)malloc_usable_size(p));
    free(p);
}

/* A reactor that held 5,000 connections gives back the memory that grew
 * with them (the signature map, the poll arrays) once they are gone: what
 * it holds then is what it held before, but for tables of up to 1,024
 * entries, which are not shrunk (32 KiB at most; 64 KiB on epoll and 255
 * KiB on poll were kept before). */
TEST(memory_returned_after_many_connections_close)
{
    int fd0 = open_fd_count();
    ASSERT_GE(raise_nofile(), 12000);
    ASSERT_EQ(em_set_allocator(track_malloc, track_realloc, track_free), 0);
    em_reactor *r = new_reactor();
    enum { N = 5000 };
    rec srv = {.tag = 1};
    rec_pool_new(&srv, N);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);
    run_for(r, 0.01);
    long before = atomic_load(&live_bytes);
    static int fds[N];
    connect_clients(r, port, &srv, fds, N);
    long peak = atomic_load(&live_bytes);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    double deadline = now_mono() + 60;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    long after = atomic_load(&live_bytes);
    ASSERT_GT(peak - before, N * 100); /* the connections were counted */
    ASSERT_LE(after - before, 32 * 1024);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}
TEST_TIMEOUT(memory_returned_after_many_connections_close, 120);

/* The same listening descriptor attached twice: EEXIST, and the first
 * server is unharmed (still accepting, its descriptor still held). */
TEST(attach_server_twice_is_eexist)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec_pool_new(&srv, 2);
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 16, &port);
    em_server *s = em_attach_server(r, lfd, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_NULL_ERRNO(em_attach_server(r, lfd, &rec_handler, &srv), EEXIST);
    ASSERT_NULL_ERRNO(em_watch(r, lfd, &rec_handler, &srv), EEXIST);
    int fd = tcp_connect_raw("127.0.0.1", port);
    ASSERT(run_until(r, &srv.pool[0].post_inits, 5));
    close(fd);
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(em_stop_server(s), 0);
    ASSERT_EQ(fcntl(lfd, F_GETFD), -1); /* closed once, by its server */
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* The tables shrink with realloc, which may fail. Here a shrink to the size
 * another block was just shrunk to fails: the poll backend's pollfd array
 * shrinks and its io array (the same size) does not, and connections made
 * afterwards must still fit (the smaller array's size is the one that
 * counts). */
static atomic_int failed_shrinks;
static void *last_shrunk;
static size_t last_shrunk_to;

static void *shrink_failing_realloc(void *p, size_t n)
{
    bool shrink = p && n < malloc_usable_size(p);
    if (shrink && n == last_shrunk_to && p != last_shrunk) {
        atomic_fetch_add(&failed_shrinks, 1);
        return NULL;
    }
    void *q = realloc(p, n);
    if (shrink && q) {
        last_shrunk = q;
        last_shrunk_to = n;
    }
    return q;
}

TEST(tables_survive_failed_shrinks)
{
    int fd0 = open_fd_count();
    ASSERT_GE(raise_nofile(), 4096);
    ASSERT_EQ(em_set_allocator(malloc, shrink_failing_realloc, free), 0);
    em_reactor *r = new_reactor();
    enum { N = 1000 };
    rec srv = {.tag = 1};
    rec_pool_new(&srv, 2 * N);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);
    static int fds[N];
    for (int round = 0; round < 2; round++) {
        connect_clients(r, port, &srv, fds, N);
        double deadline = now_mono() + 30;
        for (int i = 0; i < N; i++)
            close(fds[i]);
        while (rec_live > 0 && now_mono() < deadline)
            ASSERT_GE(em_run_once(r, 0.05), 0);
        ASSERT_EQ(rec_live, 0);
    }
    if (!strcmp(em_backend_name(r), "poll")) /* epoll's tables grow and shrink by malloc */
        ASSERT_GT(atomic_load(&failed_shrinks), 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}
TEST_TIMEOUT(tables_survive_failed_shrinks, 120);
