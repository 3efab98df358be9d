/* Stream connection methods over loopback. */
#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A raw listener and a libem client connected to it: *peer is the raw
 * accepted socket (non-blocking). */
static em_conn *connect_to_raw(em_reactor *r, rec *cli, int *lfd_out, int *peer)
{
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 16, &port);
    set_nonblock(lfd);
    em_conn *c = em_connect(r, "127.0.0.1", port, &rec_handler, cli);
    ASSERT_NOT_NULL(c);
    double deadline = now_mono() + 5;
    int fd = -1;
    while (fd < 0 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
    ASSERT_GE(fd, 0);
    ASSERT(run_until(r, &cli->completed, 5));
    *lfd_out = lfd;
    *peer = fd;
    return c;
}

/* An echo server and a client, both libem, in one reactor. */
struct pair {
    em_reactor *r;
    em_server *s;
    rec srv, cli;
    em_conn *c;
};

static void pair_open(struct pair *p, bool echo)
{
    p->r = new_reactor();
    p->srv.echo = echo;
    p->srv.tag = 1;
    p->cli.tag = 2;
    rec_pool_new(&p->srv, 4);
    p->s = em_start_server(p->r, "127.0.0.1", 0, &rec_handler, &p->srv);
    ASSERT_NOT_NULL(p->s);
    p->c = em_connect(p->r, "127.0.0.1", em_server_port(p->s), &rec_handler, &p->cli);
    ASSERT_NOT_NULL(p->c);
    ASSERT(run_until(p->r, &p->cli.completed, 5));
    ASSERT(run_until(p->r, &p->srv.pool_used, 5));
}

static void pair_close(struct pair *p)
{
    if (p->cli.conn)
        ASSERT_EQ(close_conn(p->c, false), 0);
    ASSERT(run_until(p->r, &p->cli.unbinds, 5));
    for (int i = 0; i < p->srv.pool_used; i++)
        ASSERT(run_until(p->r, &p->srv.pool[i].unbinds, 5));
    ASSERT_EQ(em_stop_server(p->s), 0);
    REACTOR_FREE_CHECKED(p->r);
    rec_free(&p->srv);
    rec_free(&p->cli);
}

/* ------------------------------------------------------------- echo */

TEST_TIMEOUT(echo_64mib_random_chunks, 120);
TEST(echo_64mib_random_chunks)
{
    int fd0 = open_fd_count();
    struct pair p = {.cli = {.check_pattern = true}};
    pair_open(&p, true);
    p.cli.check_pattern = true;
    const uint64_t total = 64ull << 20;
    uint64_t sent = 0, seed = 0xfeedface;
    char *chunk = malloc(65536);
    ASSERT_NOT_NULL(chunk);
    double deadline = now_mono() + 100;
    while (p.cli.bytes_in < total && now_mono() < deadline) {
        while (sent < total && em_get_outbound_data_size(p.c) < (1u << 20)) {
            size_t n = 1 + (size_t)(rng_next(&seed) % 65536);
            if (n > total - sent)
                n = (size_t)(total - sent);
            fill_pattern(chunk, sent, n);
            ASSERT_EQ(em_send_data(p.c, chunk, n), 0);
            sent += n;
        }
        ASSERT_GE(em_run_once(p.r, 0.05), 0);
    }
    free(chunk);
    ASSERT_EQ(sent, total);
    ASSERT_EQ(p.cli.bytes_in, total); /* every byte checked in rec_handler */
    ASSERT_EQ(p.srv.pool[0].bytes_in, total);
    em_conn_stats st;
    ASSERT_EQ(em_get_stats(p.c, &st), 0);
    ASSERT_EQ(st.bytes_in, total);
    ASSERT_EQ(st.bytes_out, total);
    pair_close(&p);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------ close after writing */

static void big_send_then_close(em_conn *c, rec *x)
{
    int small = 4096;
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    size_t n = 4u << 20;
    char *buf = malloc(n);
    fill_pattern(buf, 0, n);
    /* several sends, coalesced */
    for (size_t off = 0; off < n; off += n / 4)
        ASSERT_EQ(em_send_data(c, buf + off, n / 4), 0);
    free(buf);
    ASSERT_EQ(em_close_connection_after_writing(c), 0);
    ASSERT_EQ(em_send_data(c, "x", 1), -ENOTCONN);
    ASSERT_EQ(em_close_connection_after_writing(c), 0); /* idempotent */
    x->ctx = (void *)1;
}

TEST(close_after_writing_delivers_everything)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1, .on_post_init = big_send_then_close};
    rec cli = {.tag = 2, .check_pattern = true};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    em_conn *c = em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &cli.completed, 5));
    ASSERT(run_until(r, &cli.unbinds, 15));
    ASSERT_EQ(cli.bytes_in, 4u << 20);
    ASSERT_EQ(cli.reason, 0);
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(srv.pool[0].reason, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

/* --------------------------------------------------------- half-close */

TEST(close_write_half_close)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec cli = {.tag = 2, .store = true};
    int lfd, peer;
    em_conn *c = connect_to_raw(r, &cli, &lfd, &peer);
    ASSERT_EQ(em_send_data(c, "abc", 3), 0);
    ASSERT_EQ(em_close_write(c), 0);
    ASSERT_EQ(em_send_data(c, "no", 2), -ENOTCONN);
    char buf[64];
    size_t got = 0;
    bool eof = false;
    double deadline = now_mono() + 5;
    while (!eof && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        ssize_t n = read(peer, buf + got, sizeof buf - got);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0)
            eof = true;
    }
    ASSERT(eof);
    ASSERT_EQ(got, 3);
    ASSERT(memcmp(buf, "abc", 3) == 0);
    /* the peer still sends; the half-closed connection still reads */
    for (int i = 0; i < 3; i++) {
        write_all(peer, "more", 4);
        deadline = now_mono() + 5;
        while (cli.len < (size_t)(4 * (i + 1)) && now_mono() < deadline)
            ASSERT_GE(em_run_once(r, 0.01), 0);
    }
    ASSERT_EQ(cli.len, 12);
    ASSERT(memcmp(cli.buf, "moremoremore", 12) == 0);
    ASSERT_EQ(cli.unbinds, 0);
    close(peer);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, 0);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

/* -------------------------------------------------------------- pause */

static void pause_on_first(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    (void)n;
    if (x->data_calls == 1) {
        ASSERT_EQ(em_pause(c), 0);
        ASSERT(em_is_paused(c));
    }
}

TEST(pause_inside_receive_data)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec cli = {.tag = 2, .check_pattern = true, .on_data = pause_on_first};
    int lfd, peer;
    em_conn *c = connect_to_raw(r, &cli, &lfd, &peer);
    ASSERT(!em_is_paused(c));
    /* 1 MiB: more than one read's worth */
    size_t total = 1u << 20, off = 0;
    char *buf = malloc(total);
    fill_pattern(buf, 0, total);
    double deadline = now_mono() + 5;
    while (cli.data_calls == 0 && now_mono() < deadline) {
        ssize_t w = write(peer, buf + off, total - off);
        if (w > 0)
            off += (size_t)w;
        ASSERT_GE(em_run_once(r, 0.01), 0);
    }
    ASSERT_EQ(cli.data_calls, 1);
    ASSERT(em_is_paused(c));
    /* keep the peer writing: nothing is delivered while paused */
    deadline = now_mono() + 0.3;
    while (now_mono() < deadline) {
        ssize_t w = write(peer, buf + off, total - off);
        if (w > 0)
            off += (size_t)w;
        ASSERT_GE(em_run_once(r, 0.01), 0);
    }
    ASSERT_EQ(cli.data_calls, 1);
    /* a paused connection does not write either */
    ASSERT_EQ(em_send_data(c, "queued", 6), 0);
    run_for(r, 0.1);
    char tmp[16];
    ASSERT_EQ(read(peer, tmp, sizeof tmp), -1);
    ASSERT_EQ(em_get_outbound_data_size(c), 6);
    ASSERT_EQ(em_resume(c), 0);
    ASSERT(!em_is_paused(c));
    deadline = now_mono() + 10;
    while (cli.bytes_in < total && now_mono() < deadline) {
        if (off < total) {
            ssize_t w = write(peer, buf + off, total - off);
            if (w > 0)
                off += (size_t)w;
        }
        ASSERT_GE(em_run_once(r, 0.01), 0);
    }
    ASSERT_EQ(cli.bytes_in, total);
    ASSERT_GT(cli.data_calls, 1);
    deadline = now_mono() + 5;
    size_t got = 0;
    while (got < 6 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        ssize_t n = read(peer, tmp + got, sizeof tmp - got);
        if (n > 0)
            got += (size_t)n;
    }
    ASSERT_EQ(got, 6);
    ASSERT(memcmp(tmp, "queued", 6) == 0);
    free(buf);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT_EQ(em_pause(c), -ENOTCONN);
    ASSERT(run_until(r, &cli.unbinds, 5));
    close(peer);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------ addresses, options, stats */

static int port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

TEST(peername_sockname)
{
    int fd0 = open_fd_count();
    struct pair p = {0};
    pair_open(&p, true);
    struct sockaddr_storage a, b;
    socklen_t la = sizeof a, lb = sizeof b;
    ASSERT_EQ(em_get_peername(p.c, &a, &la), 0);
    ASSERT_EQ(a.ss_family, AF_INET);
    ASSERT_EQ(la, sizeof(struct sockaddr_in));
    ASSERT_EQ(port_of(&a), em_server_port(p.s));
    ASSERT_EQ(((struct sockaddr_in *)&a)->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    ASSERT_EQ(em_get_sockname(p.c, &b, &lb), 0);
    em_conn *sc = p.srv.pool[0].conn;
    la = sizeof a;
    ASSERT_EQ(em_get_peername(sc, &a, &la), 0);
    ASSERT_EQ(port_of(&a), port_of(&b));
    la = sizeof a;
    ASSERT_EQ(em_get_sockname(sc, &a, &la), 0);
    ASSERT_EQ(port_of(&a), em_server_port(p.s));
    ASSERT_EQ(em_get_peername(p.c, NULL, &la), -EINVAL);
    ASSERT_EQ(em_get_sockname(p.c, &a, NULL), -EINVAL);
    pair_close(&p);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(sock_opts)
{
    int fd0 = open_fd_count();
    struct pair p = {0};
    pair_open(&p, true);
    em_conn *sc = p.srv.pool[0].conn;
    int v = 0;
    socklen_t len = sizeof v;
    /* accepted TCP sockets get TCP_NODELAY */
    ASSERT_EQ(em_get_sock_opt(sc, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    ASSERT_NE(v, 0);
    v = 65536;
    ASSERT_EQ(em_set_sock_opt(p.c, SOL_SOCKET, SO_RCVBUF, &v, sizeof v), 0);
    v = 0;
    len = sizeof v;
    ASSERT_EQ(em_get_sock_opt(p.c, SOL_SOCKET, SO_RCVBUF, &v, &len), 0);
    ASSERT_EQ(len, sizeof v);
    ASSERT_EQ(v, 2 * 65536); /* Linux doubles it */
    len = sizeof v;
    ASSERT_EQ(em_get_sock_opt(p.c, SOL_SOCKET, SO_TYPE, &v, &len), 0);
    ASSERT_EQ(v, SOCK_STREAM);
    len = sizeof v;
    ASSERT_EQ(em_get_sock_opt(p.c, SOL_SOCKET, 9999, &v, &len), -ENOPROTOOPT);
    ASSERT_EQ(em_set_sock_opt(p.c, SOL_SOCKET, 9999, &v, sizeof v), -ENOPROTOOPT);
    pair_close(&p);
    ASSERT_NO_FD_LEAK(fd0);
}

static int get_int_opt(em_conn *c, int level, int opt)
{
    int v = -12345;
    socklen_t len = sizeof v;
    ASSERT_EQ(em_get_sock_opt(c, level, opt, &v, &len), 0);
    return v;
}

TEST(keepalive)
{
    int fd0 = open_fd_count();
    struct pair p = {0};
    pair_open(&p, true);
    ASSERT_EQ(get_int_opt(p.c, SOL_SOCKET, SO_KEEPALIVE), 0);
    int idle0 = get_int_opt(p.c, IPPROTO_TCP, TCP_KEEPIDLE);
    int intvl0 = get_int_opt(p.c, IPPROTO_TCP, TCP_KEEPINTVL);
    int cnt0 = get_int_opt(p.c, IPPROTO_TCP, TCP_KEEPCNT);
    ASSERT_EQ(em_enable_keepalive(p.c, 17, 7, 4), 0);
    ASSERT_NE(get_int_opt(p.c, SOL_SOCKET, SO_KEEPALIVE), 0);
    ASSERT_EQ(get_int_opt(p.c, IPPROTO_TCP, TCP_KEEPIDLE), 17);
    ASSERT_EQ(get_int_opt(p.c, IPPROTO_TCP, TCP_KEEPINTVL), 7);
    ASSERT_EQ(get_int_opt(p.c, IPPROTO_TCP, TCP_KEEPCNT), 4);
    ASSERT_EQ(em_disable_keepalive(p.c), 0);
    ASSERT_EQ(get_int_opt(p.c, SOL_SOCKET, SO_KEEPALIVE), 0);
    /* zeros leave the system defaults */
    em_conn *sc = p.srv.pool[0].conn;
    ASSERT_EQ(em_enable_keepalive(sc, 0, 0, 0), 0);
    ASSERT_NE(get_int_opt(sc, SOL_SOCKET, SO_KEEPALIVE), 0);
    ASSERT_EQ(get_int_opt(sc, IPPROTO_TCP, TCP_KEEPIDLE), idle0);
    ASSERT_EQ(get_int_opt(sc, IPPROTO_TCP, TCP_KEEPINTVL), intvl0);
    ASSERT_EQ(get_int_opt(sc, IPPROTO_TCP, TCP_KEEPCNT), cnt0);
    ASSERT_EQ(em_enable_keepalive(sc, -1, 0, 0), -EINVAL);
    ASSERT_EQ(em_enable_keepalive(sc, 0, -1, 0), -EINVAL);
    ASSERT_EQ(em_enable_keepalive(sc, 0, 0, -1), -EINVAL);
    pair_close(&p);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(outbound_data_size_and_stats)
{
    int fd0 = open_fd_count();
    struct pair p = {.cli = {.store = true}};
    pair_open(&p, true);
    p.cli.store = true;
    em_conn_stats st0;
    ASSERT_EQ(em_get_stats(p.c, &st0), 0);
    ASSERT_EQ(st0.bytes_in, 0);
    ASSERT_EQ(st0.bytes_out, 0);
    ASSERT_DBL_LE(st0.created, em_now(p.r));
    ASSERT_EQ(em_get_outbound_data_size(p.c), 0);
    char data[1000];
    fill_pattern(data, 0, sizeof data);
    ASSERT_EQ(em_send_data(p.c, data, 600), 0);
    ASSERT_EQ(em_send_data(p.c, data + 600, 400), 0);
    ASSERT_EQ(em_get_outbound_data_size(p.c), 1000);
    ASSERT_EQ(em_send_data(p.c, data, 0), 0); /* nothing */
    ASSERT_EQ(em_get_outbound_data_size(p.c), 1000);
    double deadline = now_mono() + 5;
    while (p.cli.len < 1000 && now_mono() < deadline)
        ASSERT_GE(em_run_once(p.r, 0.01), 0);
    ASSERT_EQ(p.cli.len, 1000);
    ASSERT(memcmp(p.cli.buf, data, 1000) == 0);
    ASSERT_EQ(em_get_outbound_data_size(p.c), 0);
    em_conn_stats st;
    ASSERT_EQ(em_get_stats(p.c, &st), 0);
    ASSERT_EQ(st.bytes_in, 1000);
    ASSERT_EQ(st.bytes_out, 1000);
    ASSERT(st.created == st0.created);
    ASSERT_DBL_GE(st.last_activity, st.created);
    ASSERT_DBL_LE(st.last_activity, em_now(p.r));
    ASSERT_EQ(em_get_stats(p.srv.pool[0].conn, &st), 0);
    ASSERT_EQ(st.bytes_in, 1000);
    ASSERT_EQ(st.bytes_out, 1000);
    ASSERT_EQ(em_get_stats(p.c, NULL), -EINVAL);
    ASSERT_EQ(em_error(p.c), 0);
    pair_close(&p);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(idle_time)
{
    int fd0 = open_fd_count();
    struct pair p = {0};
    pair_open(&p, true);
    ASSERT_EQ(em_send_data(p.c, "x", 1), 0);
    ASSERT(run_until(p.r, &p.srv.pool[0].data_calls, 5));
    run_until(p.r, &p.cli.data_calls, 5);
    ASSERT_DBL_LE(em_get_idle_time(p.c), 0.1);
    ASSERT_DBL_GE(em_get_idle_time(p.c), 0);
    run_for(p.r, 0.25);
    double idle = em_get_idle_time(p.c);
    ASSERT_DBL_GE(idle, 0.2);
    ASSERT_DBL_LE(idle, 2.0);
    pair_close(&p);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ----------------------------------------------- inactivity timeout */

struct poke {
    int fd;
    double at;
};

static void poke_cb(em_reactor *r, void *arg)
{
    (void)r;
    struct poke *k = arg;
    write_all(k->fd, "!", 1);
    k->at = now_mono();
}

static double unbind_at;
static void note_unbind_time(em_conn *c, rec *x, int reason)
{
    (void)c;
    (void)x;
    (void)reason;
    unbind_at = now_mono();
}

TEST(inactivity_timeout)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec cli = {.tag = 2, .on_unbind = note_unbind_time};
    int lfd, peer;
    em_conn *c = connect_to_raw(r, &cli, &lfd, &peer);
    ASSERT(em_get_comm_inactivity_timeout(c) == 0.0);
    double t0 = now_mono();
    ASSERT_EQ(em_set_comm_inactivity_timeout(c, 0.3), 0);
    ASSERT(em_get_comm_inactivity_timeout(c) == 0.3);
    /* activity at 0.2 s pushes the deadline */
    struct poke k = {.fd = peer};
    ASSERT_NE(em_add_timer(r, 0.2, poke_cb, &k), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, ETIMEDOUT);
    ASSERT_EQ(cli.bytes_in, 1);
    ASSERT_GT(k.at, 0);
    ASSERT_DBL_GE(unbind_at - k.at, 0.3);
    ASSERT_DBL_GE(unbind_at - t0, 0.5);
    ASSERT_DBL_LE(unbind_at - k.at, 1.3);
    close(peer);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(inactivity_timeout_runs_while_paused)
{
    int fd0 = open_fd_count();
    struct pair p = {0};
    pair_open(&p, true);
    double t0 = now_mono();
    ASSERT_EQ(em_pause(p.c), 0);
    ASSERT_EQ(em_set_comm_inactivity_timeout(p.c, 0.2), 0);
    p.cli.on_unbind = note_unbind_time;
    ASSERT(run_until(p.r, &p.cli.unbinds, 5));
    ASSERT_EQ(p.cli.reason, ETIMEDOUT);
    ASSERT_DBL_GE(unbind_at - t0, 0.2);
    pair_close(&p);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------- outbound_drained */

TEST(outbound_drained_after_partial_write)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec cli = {.tag = 2};
    int lfd, peer;
    em_conn *c = connect_to_raw(r, &cli, &lfd, &peer);
    int small = 4096;
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    size_t total = 2u << 20;
    char *buf = malloc(total);
    fill_pattern(buf, 0, total);
    ASSERT_EQ(em_send_data(c, buf, total), 0);
    run_for(r, 0.1);
    /* the peer reads nothing yet: the write was partial */
    size_t left = em_get_outbound_data_size(c);
    ASSERT_GT(left, 0);
    ASSERT_LT(left, total);
    ASSERT_EQ(cli.drained, 0);
    em_conn_stats st;
    ASSERT_EQ(em_get_stats(c, &st), 0);
    ASSERT_EQ(st.bytes_out, total - left);
    char *got = malloc(total);
    size_t n = 0;
    double deadline = now_mono() + 20;
    while ((n < total || !cli.drained) && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.005), 0);
        ssize_t k = read(peer, got + n, total - n);
        if (k > 0)
            n += (size_t)k;
    }
    ASSERT_EQ(n, total);
    ASSERT(memcmp(got, buf, total) == 0);
    ASSERT_EQ(cli.drained, 1);
    ASSERT_EQ(em_get_outbound_data_size(c), 0);
    /* a write that completes at once does not call outbound_drained */
    ASSERT_EQ(em_send_data(c, "tiny", 4), 0);
    run_for(r, 0.05);
    ASSERT_EQ(cli.drained, 1);
    free(buf);
    free(got);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    close(peer);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

/* -------------------------------------------------------------- detach */

static int detach_rc = -1;
static int unbinds_seen_in_detach = -1;

static void detach_on_data(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    (void)n;
    unbinds_seen_in_detach = x->unbinds;
    in_em_call++;
    detach_rc = em_detach(c);
    in_em_call--;
    ASSERT_EQ(x->unbinds, 0);
    ASSERT_EQ(em_detach(c), -ENOTCONN);
    ASSERT_EQ(em_send_data(c, "x", 1), -ENOTCONN);
}

TEST(detach_leaves_fd_open)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec cli = {.tag = 2, .on_data = detach_on_data};
    int lfd, peer;
    em_conn *c = connect_to_raw(r, &cli, &lfd, &peer);
    int cfd = em_conn_fd(c);
    write_all(peer, "hi", 2);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, 0);
    ASSERT_EQ(cli.data_calls, 1);
    ASSERT_GE(detach_rc, 0);
    ASSERT_EQ(detach_rc, cfd);
    ASSERT_EQ(em_connection_count(r), 0);
    /* still open and still connected: usable without libem */
    ASSERT_NE(fcntl(detach_rc, F_GETFD), -1);
    write_all(peer, "after", 5);
    run_for(r, 0.05);
    ASSERT_EQ(cli.data_calls, 1); /* libem no longer reads it */
    char buf[16];
    int fl = fcntl(detach_rc, F_GETFL);
    fcntl(detach_rc, F_SETFL, fl & ~O_NONBLOCK);
    ASSERT_EQ(read(detach_rc, buf, 5), 5);
    ASSERT(memcmp(buf, "after", 5) == 0);
    write_all(detach_rc, "back", 4);
    set_nonblock(peer);
    double deadline = now_mono() + 5;
    ssize_t k = -1;
    while (k <= 0 && now_mono() < deadline)
        k = read(peer, buf, sizeof buf);
    ASSERT_EQ(k, 4);
    ASSERT(memcmp(buf, "back", 4) == 0);
    close(detach_rc);
    close(peer);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ----------------------------------------------------- conn_by_sig */

TEST(conn_by_sig_null_in_and_after_unbind)
{
    int fd0 = open_fd_count();
    struct pair p = {0};
    pair_open(&p, true);
    em_sig s = em_signature(p.c);
    ASSERT(em_conn_by_sig(p.r, s) == p.c);
    ASSERT(em_conn_by_sig(p.r, p.srv.pool[0].sig) == p.srv.pool[0].conn);
    ASSERT_NE(s, p.srv.pool[0].sig);
    ASSERT_NULL(em_conn_by_sig(p.r, 0));
    ASSERT_NULL(em_conn_by_sig(p.r, s + 1000));
    ASSERT_EQ(close_conn(p.c, false), 0);
    /* still valid until unbind begins */
    ASSERT(run_until(p.r, &p.cli.unbinds, 5));
    ASSERT(!p.cli.sig_found_in_unbind);
    ASSERT_NULL(em_conn_by_sig(p.r, s));
    ASSERT(run_until(p.r, &p.srv.pool[0].unbinds, 5));
    ASSERT(!p.srv.pool[0].sig_found_in_unbind);
    ASSERT_NULL(em_conn_by_sig(p.r, p.srv.pool[0].sig));
    pair_close(&p);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(send_after_close_enotconn)
{
    int fd0 = open_fd_count();
    struct pair p = {.cli = {.store = true}};
    pair_open(&p, true);
    p.cli.store = true;
    ASSERT_EQ(em_send_data(p.c, "one", 3), 0);
    ASSERT_EQ(close_conn(p.c, true), 0);
    ASSERT_EQ(em_send_data(p.c, "two", 3), -ENOTCONN);
    ASSERT_EQ(close_conn(p.c, true), 0);
    ASSERT_EQ(close_conn(p.c, false), 0); /* upgrades to immediate */
    ASSERT_EQ(em_send_data(p.c, "three", 5), -ENOTCONN);
    ASSERT_EQ(p.cli.unbinds, 0);
    ASSERT(run_until(p.r, &p.cli.unbinds, 5));
    ASSERT_EQ(p.cli.reason, 0);
    ASSERT(run_until(p.r, &p.srv.pool[0].unbinds, 5));
    /* whatever reached the server is a prefix of "one", never "two" */
    ASSERT_LE(p.srv.pool[0].bytes_in, 3);
    pair_close(&p);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------ peer errors */

TEST(peer_reset_econnreset)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec cli = {.tag = 2};
    int lfd, peer;
    em_conn *c = connect_to_raw(r, &cli, &lfd, &peer);
    (void)c;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ASSERT_EQ(setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(peer); /* RST */
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, ECONNRESET);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A clean EOF with data still queued: the data is sent, then unbind(0). */
static void send_big_on_go(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    (void)d;
    (void)n;
    size_t total = 2u << 20;
    char *buf = malloc(total);
    fill_pattern(buf, 0, total);
    ASSERT_EQ(em_send_data(c, buf, total), 0);
    free(buf);
}

TEST(clean_eof_sends_queued_data)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1, .on_data = send_big_on_go};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)em_server_port(s))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    write_all(fd, "go", 2);
    shutdown(fd, SHUT_WR); /* clean EOF right behind the request */
    set_nonblock(fd);
    size_t total = 2u << 20, n = 0;
    char *got = malloc(total + 1);
    bool eof = false;
    double deadline = now_mono() + 20;
    while (!eof && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.005), 0);
        for (;;) {
            ssize_t k = read(fd, got + n, total + 1 - n);
            if (k > 0) {
                n += (size_t)k;
                continue;
            }
            if (k == 0)
                eof = true;
            break;
        }
    }
    ASSERT(eof);
    ASSERT_EQ(n, total);
    for (size_t i = 0; i < total; i++)
        if ((unsigned char)got[i] != pattern_byte(i))
            FAIL("byte %zu differs", i);
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(srv.pool[0].reason, 0);
    free(got);
    close(fd);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ----------------------------------------------------- conn arg/user */

TEST(conn_arg_and_user)
{
    int fd0 = open_fd_count();
    struct pair p = {0};
    pair_open(&p, true);
    em_conn *sc = p.srv.pool[0].conn;
    ASSERT(em_conn_arg(sc) == &p.srv); /* the server's arg */
    ASSERT(em_conn_arg(p.c) == &p.cli);
    ASSERT(em_conn_user(p.c) == &p.cli); /* set by rec_handler */
    int mine;
    em_conn_set_user(p.c, &mine);
    ASSERT(em_conn_user(p.c) == &mine);
    em_conn_set_user(p.c, &p.cli);
    ASSERT(em_conn_reactor(sc) == p.r);
    ASSERT_GE(em_conn_fd(sc), 0);
    ASSERT_NE(em_conn_fd(sc), em_conn_fd(p.c));
    pair_close(&p);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------- 1000 concurrent clients */

TEST_TIMEOUT(thousand_connections, 90);
TEST(thousand_connections)
{
    enum { N = 1000, MSG = 200 };
    long lim = raise_nofile();
    ASSERT_GE(lim, 2 * N + 64);
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1, .echo = true};
    rec_pool_new(&srv, N);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    rec *cli = calloc(N, sizeof(rec));
    em_conn **c = calloc(N, sizeof(em_conn *));
    char msg[MSG];
    fill_pattern(msg, 0, MSG);
    for (int i = 0; i < N; i++) {
        cli[i].tag = 1000 + i;
        cli[i].check_pattern = true;
        c[i] = em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli[i]);
        ASSERT_NOT_NULL(c[i]);
        ASSERT_EQ(em_send_data(c[i], msg, MSG), 0);
    }
    ASSERT_EQ(em_connection_count(r), N);
    double deadline = now_mono() + 60;
    int done = 0;
    while (done < N && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.05), 0);
        done = 0;
        for (int i = 0; i < N; i++)
            done += cli[i].bytes_in == MSG;
    }
    ASSERT_EQ(done, N);
    ASSERT_EQ(srv.pool_used, N);
    ASSERT_EQ(em_connection_count(r), 2 * N);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(cli[i].completed, 1);
        ASSERT_EQ(close_conn(c[i], i % 2 == 0), 0);
    }
    deadline = now_mono() + 30;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(cli[i].unbinds, 1);
        ASSERT_EQ(cli[i].reason, 0);
        ASSERT_EQ(srv.pool[i].unbinds, 1);
        ASSERT_EQ(srv.pool[i].reason, 0);
    }
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    free(cli);
    free(c);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------ outbound limit */

/* A peer that never reads: without a limit the queue grows as long as the
 * sender sends (1 GiB took 1 GiB). With em_set_outbound_limit the sends
 * past it fail with -ENOBUFS and queue nothing, the queue stays bounded, and
 * the stream the peer finally reads is exactly the accepted sends, in
 * order. */
TEST(outbound_limit_bounds_queue_enobufs)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec cli = {.tag = 2};
    int lfd, peer;
    em_conn *c = connect_to_raw(r, &cli, &lfd, &peer);
    ASSERT_EQ(em_get_outbound_limit(c), 0);
    const size_t limit = 1u << 20, piece = 64 * 1024;
    ASSERT_EQ(em_set_outbound_limit(c, limit), 0);
    ASSERT_EQ(em_get_outbound_limit(c), limit);
    char *buf = malloc(piece);
    uint64_t accepted = 0;
    int refused = 0;
    for (int turn = 0; turn < 200 && refused < 50; turn++) {
        for (int i = 0; i < 16; i++) {
            fill_pattern(buf, accepted, piece);
            int rc = em_send_data(c, buf, piece);
            if (rc == -ENOBUFS) {
                refused++;
            } else {
                ASSERT_EQ(rc, 0);
                accepted += piece;
            }
            ASSERT_LE(em_get_outbound_data_size(c), limit);
        }
        ASSERT_GE(em_run_once(r, 0.001), 0);
    }
    ASSERT_GE(refused, 50);
    ASSERT_LE(em_get_outbound_data_size(c), limit);
    ASSERT_EQ(em_send_data(c, buf, limit + 1), -ENOBUFS); /* bigger than the limit */
    ASSERT_EQ(em_set_outbound_limit(c, 1024), 0); /* lowered below what is queued */
    ASSERT_EQ(em_send_data(c, buf, 0), 0);         /* nothing to refuse */
    ASSERT_EQ(em_send_data(c, buf, 1), -ENOBUFS);
    ASSERT_EQ(em_set_outbound_limit(c, limit), 0);
    ASSERT_EQ(em_error(c), 0);
    /* the peer reads: every accepted byte arrives, in order, and sending
     * works again once the queue has room */
    char *got = malloc(piece);
    uint64_t n = 0;
    double deadline = now_mono() + 20;
    while (n < accepted && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.001), 0);
        ssize_t k;
        while ((k = read(peer, got, piece)) > 0) {
            for (ssize_t i = 0; i < k; i++)
                if ((unsigned char)got[i] != pattern_byte(n + (uint64_t)i))
                    FAIL("byte %llu differs", (unsigned long long)(n + (uint64_t)i));
            n += (uint64_t)k;
        }
    }
    ASSERT_EQ(n, accepted);
    ASSERT_EQ(em_get_outbound_data_size(c), 0);
    fill_pattern(buf, accepted, piece);
    ASSERT_EQ(em_send_data(c, buf, piece), 0);
    /* 0 lifts the limit */
    ASSERT_EQ(em_set_outbound_limit(c, 0), 0);
    ASSERT_EQ(em_get_outbound_limit(c), 0);
    ASSERT_EQ(em_set_outbound_limit(NULL, 1), -EINVAL);
    free(buf);
    free(got);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    close(peer);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}
TEST_TIMEOUT(outbound_limit_bounds_queue_enobufs, 60);

/* A producer that fills up to the limit and refills from outbound_drained
 * never stalls: filling past what the kernel takes makes a write wait, so
 * outbound_drained follows. */
struct producer {
    uint64_t sent, target;
    int drained;
};

static void produce(em_conn *c, struct producer *p)
{
    static char piece[16 * 1024];
    while (p->sent < p->target) {
        fill_pattern(piece, p->sent, sizeof piece);
        if (em_send_data(c, piece, sizeof piece) == -ENOBUFS)
            return;
        p->sent += sizeof piece;
    }
}

static void producer_drained(em_conn *c, rec *x)
{
    struct producer *p = x->ctx;
    p->drained++;
    produce(c, p);
}

TEST(outbound_limit_producer_refills_from_drained)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct producer p = {.target = 2u << 20};
    rec cli = {.tag = 2, .on_drained = producer_drained, .ctx = &p};
    int lfd, peer;
    em_conn *c = connect_to_raw(r, &cli, &lfd, &peer);
    ASSERT_EQ(em_set_outbound_limit(c, 256 * 1024), 0);
    int small = 16 * 1024;
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    produce(c, &p);
    static char got[64 * 1024];
    uint64_t n = 0;
    double deadline = now_mono() + 60;
    while (n < p.target && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.001), 0);
        ssize_t k;
        while ((k = read(peer, got, sizeof got)) > 0) {
            for (ssize_t i = 0; i < k; i += 4099)
                if ((unsigned char)got[i] != pattern_byte(n + (uint64_t)i))
                    FAIL("byte %llu differs", (unsigned long long)(n + (uint64_t)i));
            n += (uint64_t)k;
        }
    }
    ASSERT_EQ(n, p.target);
    ASSERT_GT(p.drained, 0);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    close(peer);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}
TEST_TIMEOUT(outbound_limit_producer_refills_from_drained, 90);
