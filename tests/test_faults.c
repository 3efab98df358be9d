/* Peer faults (issue 5, item 3): a peer that resets in the middle of a large
 * write, half-closes with data in flight, or writes and closes at once.
 *
 * SIGPIPE keeps its default disposition in every case: a write to a reset
 * peer that raised it would kill the test ("killed by signal 13"). */
#include "harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BIG (16u << 20)

static void sigpipe_default(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGPIPE, &sa, NULL), 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    ASSERT_EQ(sigprocmask(SIG_UNBLOCK, &set, NULL), 0);
}

static char *pattern_buf(uint64_t off, size_t n)
{
    char *p = malloc(n);
    ASSERT_NOT_NULL(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)pattern_byte(off + i);
    return p;
}

static void small_bufs_fd(int fd)
{
    int v = 16384;
    ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v), 0);
    ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v), 0);
}

static void small_bufs(em_conn *c)
{
    int v = 16384;
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_SNDBUF, &v, sizeof v), 0);
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_RCVBUF, &v, sizeof v), 0);
}

static void reset_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    ASSERT_EQ(close(fd), 0);
}

/* Reads what is there from a non-blocking fd, checking pattern_byte(); returns
 * false at EOF. */
static bool read_some(int fd, uint64_t *got, bool check)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            if (check)
                for (ssize_t i = 0; i < n; i++)
                    if ((unsigned char)buf[i] != pattern_byte(*got + (uint64_t)i))
                        FAIL("peer: byte %llu wrong", (unsigned long long)(*got + (uint64_t)i));
            *got += (uint64_t)n;
            continue;
        }
        if (n == 0)
            return false;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            return true;
        FAIL("peer read: %s", strerror(errno));
    }
}

static bool reason_is_reset(int reason) { return reason == ECONNRESET || reason == EPIPE; }

/* A libem server and a raw client connected to it; *peer is non-blocking. */
static em_server *server_and_peer(em_reactor *r, rec *srv, int *peer)
{
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, srv);
    ASSERT_NOT_NULL(s);
    *peer = tcp_connect_raw("127.0.0.1", em_server_port(s));
    ASSERT(run_until(r, &srv->pool_used, 5));
    set_nonblock(*peer);
    return s;
}

/* ---------------------------------------- reset in the middle of a write */

static void send_big(em_conn *c, rec *x)
{
    (void)x;
    small_bufs(c);
    char *p = pattern_buf(0, BIG);
    ASSERT_EQ(em_send_data(c, p, BIG), 0);
    free(p);
}

/* The peer reads `before` bytes (0: none), then resets. */
static void reset_mid_write_server(uint64_t before, bool after_writing)
{
    sigpipe_default();
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.on_post_init = send_big, .tag = 1};
    rec_pool_new(&srv, 1);
    int peer;
    em_server *s = server_and_peer(r, &srv, &peer);
    rec *x = &srv.pool[0];
    if (after_writing)
        ASSERT_EQ(close_conn(x->conn, true), 0);
    uint64_t got = 0;
    double deadline = now_mono() + 10;
    while (got < before && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        ASSERT(read_some(peer, &got, true));
    }
    ASSERT_GE(got, before);
    /* let libem fill the socket and wait for it to drain */
    for (int i = 0; i < 5; i++)
        ASSERT_GE(em_run_once(r, 0), 0);
    ASSERT_NOT_NULL(x->conn);
    size_t pending = em_get_outbound_data_size(x->conn);
    ASSERT_GT(pending, 0); /* really in the middle of the write */
    reset_close(peer);
    ASSERT(run_until(r, &x->unbinds, 5));
    if (!reason_is_reset(x->reason))
        FAIL("unbind reason %d (%s), expected ECONNRESET or EPIPE", x->reason,
             em_strerror(x->reason));
    printf("  peer read %llu bytes, reset with %zu bytes queued: unbind(%s)\n",
           (unsigned long long)got, pending, em_strerror(x->reason));
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(reset_mid_write_server)
{
    reset_mid_write_server(1u << 20, false);
}

TEST(reset_before_peer_reads_server)
{
    reset_mid_write_server(0, false);
}

TEST(close_after_writing_then_peer_reset)
{
    reset_mid_write_server(1u << 20, true);
}

TEST(close_after_writing_then_immediate_peer_reset)
{
    reset_mid_write_server(0, true);
}

/* Same on an outbound connection: libem writes to a raw server that resets. */
TEST(reset_mid_write_client)
{
    sigpipe_default();
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 4, &port);
    rec cli = {.tag = 2, .on_completed = send_big};
    em_conn *c = em_connect(r, "127.0.0.1", port, &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &cli.completed, 5));
    int peer = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    ASSERT_GE(peer, 0);
    uint64_t got = 0;
    double deadline = now_mono() + 10;
    while (got < (1u << 20) && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        ASSERT(read_some(peer, &got, true));
    }
    ASSERT_GE(got, 1u << 20);
    ASSERT_GT(em_get_outbound_data_size(c), 0);
    reset_close(peer);
    ASSERT(run_until(r, &cli.unbinds, 5));
    if (!reason_is_reset(cli.reason))
        FAIL("unbind reason %d (%s), expected ECONNRESET or EPIPE", cli.reason,
             em_strerror(cli.reason));
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A pipe whose reader goes away in the middle of a write: EPIPE, no SIGPIPE. */
TEST(pipe_reader_gone_mid_write)
{
    sigpipe_default();
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    rec w = {.tag = 3};
    em_conn *c = em_attach(r, p[1], &rec_handler, &w);
    ASSERT_NOT_NULL(c);
    char *buf = pattern_buf(0, 4u << 20);
    ASSERT_EQ(em_send_data(c, buf, 4u << 20), 0);
    free(buf);
    for (int i = 0; i < 3; i++)
        ASSERT_GE(em_run_once(r, 0), 0);
    size_t pending = em_get_outbound_data_size(c);
    ASSERT_GT(pending, 0);
    close(p[0]);
    ASSERT(run_until(r, &w.unbinds, 5));
    /* (libem once read the write-only end on the error event: EBADF) */
    if (w.reason != EPIPE)
        FAIL("unbind reason %d (%s), expected EPIPE", w.reason, em_strerror(w.reason));
    printf("  reader closed with %zu bytes queued: unbind(%s)\n", pending,
           em_strerror(w.reason));
    close(p[1]); /* em_attach never closes it */
    REACTOR_FREE_CHECKED(r);
    rec_free(&w);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------- half-close with data in flight */

struct writer {
    int fd;
    size_t len;
    int how; /* SHUT_WR, or -1: close() */
    uint64_t echoed;
};

static void *peer_write_then_shut(void *arg)
{
    struct writer *w = arg;
    char *p = pattern_buf(0, w->len);
    write_all(w->fd, p, w->len);
    free(p);
    if (w->how == SHUT_WR) {
        if (shutdown(w->fd, SHUT_WR) != 0)
            FAIL("shutdown: %s", strerror(errno));
        /* read the echo to EOF */
        char buf[65536];
        for (;;) {
            ssize_t n = read(w->fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                FAIL("peer read: %s", strerror(errno));
            if (n == 0)
                break;
            for (ssize_t i = 0; i < n; i++)
                if ((unsigned char)buf[i] != pattern_byte(w->echoed + (uint64_t)i))
                    FAIL("echo byte %llu wrong", (unsigned long long)(w->echoed + (uint64_t)i));
            w->echoed += (uint64_t)n;
        }
    } else if (close(w->fd) != 0) {
        FAIL("close: %s", strerror(errno));
    }
    return NULL;
}

static void unbind_snapshot(em_conn *c, rec *x, int reason)
{
    (void)c;
    (void)reason;
    x->ctx = (void *)(uintptr_t)x->bytes_in; /* bytes delivered before unbind */
}

/* A blocking peer thread writes len bytes then half-closes (and reads the
 * echo to EOF) or closes; the libem server checks every byte. */
static void peer_writes_then(size_t len, int how, bool echo, bool small)
{
    sigpipe_default();
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 4, .check_pattern = true, .echo = echo,
               .on_unbind = unbind_snapshot};
    rec_pool_new(&srv, 1);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    struct writer w = {.len = len, .how = how};
    w.fd = tcp_connect_raw("127.0.0.1", em_server_port(s));
    if (small)
        small_bufs_fd(w.fd);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, peer_write_then_shut, &w), 0);
    ASSERT(run_until(r, &srv.pool_used, 5));
    rec *x = &srv.pool[0];
    if (small)
        small_bufs(x->conn);
    ASSERT(run_until(r, &x->unbinds, 20));
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(x->reason, 0);
    ASSERT_EQ((uint64_t)(uintptr_t)x->ctx, len); /* all of it before unbind */
    ASSERT_EQ(x->bytes_in, len);
    if (how == SHUT_WR) {
        ASSERT_EQ(w.echoed, echo ? len : 0);
        close(w.fd);
    }
    printf("  %zu bytes then %s: %llu delivered before unbind(0), %llu echoed\n", len,
           how == SHUT_WR ? "shutdown(SHUT_WR)" : "close()", (unsigned long long)x->bytes_in,
           (unsigned long long)w.echoed);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Every byte arrives before unbind, and libem's echo (written while the peer
 * is half-closed, most of it after the FIN arrived) reaches the peer. */
TEST(half_close_in_flight_echo_8mib)
{
    peer_writes_then(8u << 20, SHUT_WR, true, false);
}

TEST(half_close_in_flight_echo_small_bufs)
{
    peer_writes_then(2u << 20, SHUT_WR, true, true);
}

TEST(half_close_in_flight_no_reply)
{
    peer_writes_then(4u << 20, SHUT_WR, false, false);
}

/* Data arriving with EOF: the peer writes and closes at once. */
TEST(data_with_eof_1_byte)
{
    peer_writes_then(1, -1, false, false);
}

TEST(data_with_eof_60_kib)
{
    peer_writes_then(60000, -1, false, false);
}

TEST(data_with_eof_4_mib)
{
    peer_writes_then(4u << 20, -1, false, false);
}

TEST(data_with_eof_small_bufs)
{
    peer_writes_then(1u << 20, -1, false, true);
}

/* Written before libem even looked: data, FIN, then the reply. The request
 * and the FIN are both in libem's socket when it first reads; its reply (1
 * MiB, more than the socket takes at once) goes to a half-closed peer. */
static void reply_big(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    if (x->bytes_in == 5 && n > 0) {
        char *p = pattern_buf(0, 1u << 20);
        ASSERT_EQ(em_send_data(c, p, 1u << 20), 0);
        free(p);
    }
}

TEST(reply_to_half_closed_peer_server)
{
    sigpipe_default();
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 5, .store = true, .on_data = reply_big, .on_unbind = unbind_snapshot};
    rec_pool_new(&srv, 1);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int peer = tcp_connect_raw("127.0.0.1", em_server_port(s));
    small_bufs_fd(peer);
    write_all(peer, "hello", 5);
    ASSERT_EQ(shutdown(peer, SHUT_WR), 0);
    set_nonblock(peer);
    uint64_t got = 0;
    bool open = true;
    double deadline = now_mono() + 10;
    while (open && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        open = read_some(peer, &got, true);
    }
    ASSERT(!open);
    ASSERT_EQ(got, 1u << 20);
    rec *x = &srv.pool[0];
    ASSERT(run_until(r, &x->unbinds, 5));
    ASSERT_EQ(x->reason, 0);
    ASSERT_EQ(x->len, 5);
    ASSERT(memcmp(x->buf, "hello", 5) == 0);
    close(peer);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* The same with libem as the client: the raw server sends a request and
 * half-closes; the libem client's reply arrives whole. */
TEST(reply_to_half_closed_peer_client)
{
    sigpipe_default();
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 4, &port);
    rec cli = {.tag = 6, .on_data = reply_big};
    em_conn *c = em_connect(r, "127.0.0.1", port, &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &cli.completed, 5));
    int peer = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(peer, 0);
    small_bufs_fd(peer);
    write_all(peer, "hello", 5);
    ASSERT_EQ(shutdown(peer, SHUT_WR), 0);
    set_nonblock(peer);
    uint64_t got = 0;
    bool open = true;
    double deadline = now_mono() + 10;
    while (open && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        open = read_some(peer, &got, true);
    }
    ASSERT(!open);
    ASSERT_EQ(got, 1u << 20);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, 0);
    ASSERT_EQ(cli.bytes_in, 5);
    close(peer);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Data with EOF toward a libem client: the raw server writes and closes. */
TEST(data_with_eof_client)
{
    sigpipe_default();
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 4, &port);
    rec cli = {.tag = 7, .check_pattern = true, .on_unbind = unbind_snapshot};
    em_conn *c = em_connect(r, "127.0.0.1", port, &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &cli.completed, 5));
    struct writer w = {.len = 3u << 20, .how = -1};
    w.fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(w.fd, 0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, peer_write_then_shut, &w), 0);
    ASSERT(run_until(r, &cli.unbinds, 10));
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(cli.reason, 0);
    ASSERT_EQ((uint64_t)(uintptr_t)cli.ctx, w.len);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}
