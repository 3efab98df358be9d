/* Proxying: em_proxy_incoming_to, em_stop_proxying, em_get_proxied_bytes.
 *
 * Set-up: a libem server and two raw clients, X and Y, accepted as the
 * server's pool[0] and pool[1]. pool[0] proxies to pool[1], so what X writes
 * comes out at Y; X writes the pattern_byte() stream and Y checks every byte
 * it reads against it. */
#include "harness.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PUMP_S 8

static int completed_calls, target_unbound_calls;

static void on_proxy_completed(em_conn *c)
{
    (void)c;
    completed_calls++;
}

static void on_target_unbound(em_conn *c)
{
    (void)c;
    target_unbound_calls++;
}

static em_handler proxy_handler;

typedef struct pair {
    em_reactor *r;
    em_server *s;
    rec srv;
    int x, y;          /* raw peers */
    em_conn *cx, *cy;  /* their libem ends */
    uint64_t written;  /* pattern bytes X wrote */
    uint64_t read;     /* pattern bytes Y read, all checked */
    int fd0;
} pair;

static void pair_open(pair *p)
{
    memset(p, 0, sizeof *p);
    completed_calls = target_unbound_calls = 0;
    proxy_handler = rec_handler;
    proxy_handler.proxy_completed = on_proxy_completed;
    proxy_handler.proxy_target_unbound = on_target_unbound;
    p->fd0 = open_fd_count();
    p->r = new_reactor();
    p->srv = (rec){.tag = 1, .store = true};
    rec_pool_new(&p->srv, 3); /* X, Y and a spare */
    p->s = em_start_server(p->r, "127.0.0.1", 0, &proxy_handler, &p->srv);
    ASSERT_NOT_NULL(p->s);
    p->x = tcp_connect_raw("127.0.0.1", em_server_port(p->s));
    ASSERT(run_until(p->r, &p->srv.pool[0].post_inits, 5));
    p->y = tcp_connect_raw("127.0.0.1", em_server_port(p->s));
    ASSERT(run_until(p->r, &p->srv.pool[1].post_inits, 5));
    set_nonblock(p->x);
    set_nonblock(p->y);
    p->cx = p->srv.pool[0].conn;
    p->cy = p->srv.pool[1].conn;
}

static void pair_close(pair *p)
{
    if (p->x >= 0)
        close(p->x);
    if (p->y >= 0)
        close(p->y);
    double deadline = now_mono() + 5;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(p->r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    ASSERT_EQ(em_stop_server(p->s), 0);
    REACTOR_FREE_CHECKED(p->r);
    rec_free(&p->srv);
    ASSERT_NO_FD_LEAK(p->fd0);
}

/* X writes up to n more pattern bytes, as many as its socket takes. */
static void x_write(pair *p, uint64_t n)
{
    char buf[16384];
    while (n) {
        size_t k = n < sizeof buf ? (size_t)n : sizeof buf;
        for (size_t i = 0; i < k; i++)
            buf[i] = (char)pattern_byte(p->written + i);
        ssize_t w = write(p->x, buf, k);
        if (w <= 0)
            return;
        p->written += (uint64_t)w;
        n -= (uint64_t)w;
    }
}

/* Y reads what is there (at most max bytes), checking each byte. */
static void y_read(pair *p, uint64_t max)
{
    char buf[16384];
    while (max) {
        ssize_t n = read(p->y, buf, max < sizeof buf ? (size_t)max : sizeof buf);
        if (n <= 0)
            return;
        for (ssize_t i = 0; i < n; i++)
            if ((unsigned char)buf[i] != pattern_byte(p->read + (uint64_t)i))
                test_fail(__FILE__, __LINE__, "byte %llu differs", (unsigned long long)(p->read + (uint64_t)i));
        p->read += (uint64_t)n;
        max -= (uint64_t)n;
    }
}

/* Pumps until Y has read `want` bytes, X writing until it wrote `total`. */
static void pump(pair *p, uint64_t total, uint64_t want)
{
    double deadline = now_mono() + PUMP_S;
    while (p->read < want) {
        if (now_mono() > deadline)
            test_fail(__FILE__, __LINE__, "stuck: X wrote %llu, Y read %llu of %llu",
                      (unsigned long long)p->written, (unsigned long long)p->read,
                      (unsigned long long)want);
        if (p->written < total)
            x_write(p, total - p->written);
        ASSERT_GE(em_run_once(p->r, 0.01), 0);
        y_read(p, want - p->read);
    }
}

/* Runs until X's own receive_data has had exactly n bytes. */
static void source_receives(pair *p, uint64_t n)
{
    double deadline = now_mono() + PUMP_S;
    while (p->srv.pool[0].bytes_in < n && now_mono() < deadline)
        ASSERT_GE(em_run_once(p->r, 0.01), 0);
    ASSERT_EQ(p->srv.pool[0].bytes_in, n);
}

TEST(proxy_forwards_without_receive_data)
{
    pair p;
    pair_open(&p);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 0, 0), 0);
    const uint64_t total = 4u << 20;
    pump(&p, total, total);
    ASSERT_EQ(p.read, total);
    ASSERT_EQ(p.srv.pool[0].data_calls, 0);
    ASSERT_EQ(em_get_proxied_bytes(p.cx), total);
    ASSERT_EQ(completed_calls, 0);
    pair_close(&p);
}

/* After `length` bytes the proxy completes; the rest goes to receive_data,
 * in order, and the count stays. */
TEST(proxy_length_then_receive_data)
{
    pair p;
    pair_open(&p);
    const uint64_t length = 100000, total = 300000;
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 0, length), 0);
    pump(&p, total, length);
    source_receives(&p, total - length);
    for (uint64_t i = 0; i < total - length; i++)
        if ((unsigned char)p.srv.pool[0].buf[i] != pattern_byte(length + i))
            test_fail(__FILE__, __LINE__, "receive_data byte %llu differs", (unsigned long long)i);
    y_read(&p, 1); /* nothing beyond length reached Y */
    ASSERT_EQ(p.read, length);
    ASSERT_EQ(completed_calls, 1);
    ASSERT_EQ(em_get_proxied_bytes(p.cx), length);
    pair_close(&p);
}

/* The target unbinds first: proxy_target_unbound once, later bytes to
 * receive_data. */
TEST(proxy_target_unbound_then_receive_data)
{
    pair p;
    pair_open(&p);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 0, 0), 0);
    pump(&p, 1000, 1000);
    close(p.y);
    p.y = -1;
    ASSERT(run_until(p.r, &p.srv.pool[1].unbinds, 5));
    ASSERT_EQ(target_unbound_calls, 1);
    x_write(&p, 500);
    source_receives(&p, 500);
    ASSERT_EQ((unsigned char)p.srv.pool[0].buf[0], pattern_byte(1000));
    ASSERT_EQ(em_get_proxied_bytes(p.cx), 1000);
    ASSERT_EQ(target_unbound_calls, 1);
    pair_close(&p);
}

/* Y does not read: the target's queue stays near bufsize however much X
 * writes, the source does not show as paused, and once Y reads everything
 * arrives intact. */
TEST(proxy_backpressure_is_bounded)
{
    pair p;
    pair_open(&p);
    const size_t bufsize = 256 * 1024;
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, bufsize, 0), 0);
    const uint64_t total = 64u << 20;
    size_t most = 0;
    double end = now_mono() + 1.0;
    while (now_mono() < end) {
        x_write(&p, total - p.written);
        ASSERT_GE(em_run_once(p.r, 0.01), 0);
        size_t q = em_get_outbound_data_size(p.cy);
        if (q > most)
            most = q;
    }
    ASSERT_LT(p.written, total); /* X was held back: the kernel buffers filled */
    ASSERT_GT(most, 0);
    ASSERT_LE(most, bufsize + 65536); /* one read beyond bufsize at most */
    ASSERT(!em_is_paused(p.cx));
    uint64_t sent = p.written;
    pump(&p, sent, sent);
    ASSERT_EQ(p.read, sent);
    ASSERT_EQ(em_get_proxied_bytes(p.cx), sent);
    ASSERT_EQ(p.srv.pool[0].data_calls, 0);
    pair_close(&p);
}

/* The user's pause wins over the proxy, and the proxy's hold does not show
 * in em_is_paused. */
TEST(proxy_user_pause_and_resume)
{
    pair p;
    pair_open(&p);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 0, 0), 0);
    ASSERT_EQ(em_pause(p.cx), 0);
    x_write(&p, 1000);
    run_for(p.r, 0.2);
    y_read(&p, 1000);
    ASSERT_EQ(p.read, 0);
    ASSERT_EQ(em_resume(p.cx), 0);
    pump(&p, 1000, 1000);
    ASSERT_EQ(p.read, 1000);
    pair_close(&p);
}

TEST(proxy_stop_then_receive_data)
{
    pair p;
    pair_open(&p);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 0, 0), 0);
    pump(&p, 2000, 2000);
    ASSERT_EQ(em_stop_proxying(p.cx), 0);
    ASSERT_EQ(em_stop_proxying(p.cx), 0); /* again: nothing to stop */
    x_write(&p, 700);
    source_receives(&p, 700);
    ASSERT_EQ(em_get_proxied_bytes(p.cx), 2000);
    ASSERT_EQ(completed_calls, 0);
    /* a new proxy counts from zero */
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 0, 0), 0);
    ASSERT_EQ(em_get_proxied_bytes(p.cx), 0);
    pair_close(&p);
}

TEST(proxy_both_ways)
{
    pair p;
    pair_open(&p);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 0, 0), 0);
    ASSERT_EQ(em_proxy_incoming_to(p.cy, p.cx, 0, 0), 0);
    write_all(p.y, "pong", 4);
    pump(&p, 5000, 5000);
    char buf[8];
    ssize_t got = 0;
    double deadline = now_mono() + PUMP_S;
    while (got < 4 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(p.r, 0.01), 0);
        ssize_t n = read(p.x, buf + got, sizeof buf - (size_t)got);
        if (n > 0)
            got += n;
    }
    ASSERT_EQ(got, 4);
    ASSERT(memcmp(buf, "pong", 4) == 0);
    ASSERT_EQ(em_get_proxied_bytes(p.cy), 4);
    pair_close(&p);
}

TEST(proxy_bad_arguments)
{
    pair p;
    pair_open(&p);
    ASSERT_EQ(em_proxy_incoming_to(NULL, p.cy, 0, 0), -EINVAL);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, NULL, 0, 0), -EINVAL);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cx, 0, 0), -EINVAL);
    ASSERT_EQ(em_stop_proxying(NULL), -EINVAL);
    ASSERT_EQ(em_get_proxied_bytes(NULL), 0);
    ASSERT_EQ(em_get_proxied_bytes(p.cx), 0);
    /* a target already proxied to by another connection */
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 0, 0), 0);
    int z = tcp_connect_raw("127.0.0.1", em_server_port(p.s));
    ASSERT(run_until(p.r, &p.srv.pool[2].post_inits, 5));
    em_conn *cz = p.srv.pool[2].conn;
    ASSERT_EQ(em_proxy_incoming_to(cz, p.cy, 0, 0), -EBUSY);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 0, 0), 0); /* the same pair again */
    ASSERT_EQ(em_stop_proxying(p.cx), 0);
    ASSERT_EQ(em_proxy_incoming_to(cz, p.cy, 0, 0), 0); /* free again */
    /* a closing connection */
    ASSERT_EQ(close_conn(p.cy, false), 0);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 0, 0), -ENOTCONN);
    close(z);
    pair_close(&p);
}

/* The target is an outbound connection still connecting: what it is sent
 * before and what the proxy sends arrive in that order once it connects. */
TEST(proxy_to_connecting_target)
{
    pair p;
    pair_open(&p);
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 4, &port);
    rec out = {.tag = 5};
    em_conn *ct = em_connect(p.r, "127.0.0.1", port, &proxy_handler, &out);
    ASSERT_NOT_NULL(ct);
    ASSERT_EQ(out.completed, 0);
    ASSERT_EQ(em_send_data(ct, "head:", 5), 0);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, ct, 0, 0), 0);
    write_all(p.x, "proxied", 7);
    int afd = -1;
    char buf[16];
    size_t got = 0;
    double deadline = now_mono() + PUMP_S;
    while (got < 12 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(p.r, 0.01), 0);
        if (afd < 0 && (afd = accept(lfd, NULL, NULL)) >= 0)
            set_nonblock(afd);
        if (afd >= 0) {
            ssize_t n = read(afd, buf + got, sizeof buf - got);
            if (n > 0)
                got += (size_t)n;
        }
    }
    ASSERT_EQ(got, 12);
    ASSERT(memcmp(buf, "head:proxied", 12) == 0);
    ASSERT_EQ(out.completed, 1);
    ASSERT_EQ(em_get_proxied_bytes(p.cx), 7);
    close(afd);
    close(lfd);
    ASSERT(run_until(p.r, &out.unbinds, 5));
    pair_close(&p);
}

/* A target that takes no more data is refused like a closing one. */
TEST(proxy_to_half_closed_target_is_enotconn)
{
    pair p;
    pair_open(&p);
    ASSERT_EQ(em_close_write(p.cy), 0);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 0, 0), -ENOTCONN);
    ASSERT_EQ(em_proxy_incoming_to(p.cy, p.cx, 0, 0), 0); /* as a source it may */
    pair_close(&p);
}

/* A target with an outbound limit below the proxy's bufsize: the limit
 * bounds the user's em_send_data, not the proxy, whose bytes all reach the
 * target (none strays to the source's receive_data). */
TEST(proxy_into_target_with_outbound_limit)
{
    pair p;
    pair_open(&p);
    ASSERT_EQ(em_set_outbound_limit(p.cy, 4096), 0);
    ASSERT_EQ(em_proxy_incoming_to(p.cx, p.cy, 256 * 1024, 0), 0);
    const uint64_t total = 4u << 20;
    pump(&p, total, total);
    ASSERT_EQ(p.read, total);
    ASSERT_EQ(p.srv.pool[0].data_calls, 0);
    ASSERT_EQ(em_get_proxied_bytes(p.cx), total);
    pair_close(&p);
}
