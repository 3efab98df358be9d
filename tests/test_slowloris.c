/* Slowloris (issue 5, item 8), times scaled down for the suite.
 *
 * A libem echo server gives every connection an inactivity timeout of 1 s.
 * 1000 raw clients connect: half never send a byte, half send one byte every
 * 0.4 s three times and then go quiet. Every one of them must be closed by
 * the server with ETIMEDOUT, never before its deadline (the later of the
 * moment the timeout was set and its last byte, plus 1 s) and at most 1 s
 * after it, while a well-behaved libem client on the same server plays
 * ping-pong every 5 ms and its round trips stay short (p99 < 50 ms). */
#include "harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NIDLE 1000
#define TIMEOUT_S 1.0
#define TRICKLE_EVERY 0.4
#define TRICKLE_BYTES 3
#define MAX_LATE 1.0
#define P99_LIMIT 0.050
#define PING_EVERY 0.005
#define MAX_PINGS 4096

struct sconn { /* one accepted connection */
    em_conn *c;
    double set_at;  /* now_mono() just before the timeout was set */
    double last_rx; /* em_now() of the last byte read */
    double gone_at; /* em_now() in unbind */
    int reason, unbinds;
    uint64_t bytes_in;
};

static struct {
    em_reactor *r;
    struct sconn srv[NIDLE + 1]; /* [0]: the well-behaved client's */
    int accepted, idle_gone;
    /* well-behaved client */
    em_conn *good;
    int good_unbinds, good_reason;
    bool pinging;
    em_timer_id ping_timer;
    double ping_sent;
    int no_ping_out; /* no ping waiting for its pong */
    size_t pong_got;
    double rtt[MAX_PINGS];
    int nrtt;
    /* raw clients */
    int fds[NIDLE];
    em_timer_id trickle_timer;
    int trickles;
} g;

/* ---------------------------------------------------------------- server */

static void srv_post_init(em_conn *c)
{
    if (g.accepted > NIDLE)
        FAIL("too many connections");
    struct sconn *s = &g.srv[g.accepted++];
    s->c = c;
    em_conn_set_user(c, s);
    s->set_at = now_mono();
    ASSERT_EQ(em_set_comm_inactivity_timeout(c, TIMEOUT_S), 0);
}

static void srv_data(em_conn *c, const char *d, size_t n)
{
    struct sconn *s = em_conn_user(c);
    s->last_rx = em_now(g.r);
    s->bytes_in += n;
    int rc = em_send_data(c, d, n);
    if (rc != 0)
        FAIL("echo: %d", rc);
}

static void srv_unbind(em_conn *c, int reason)
{
    struct sconn *s = em_conn_user(c);
    s->unbinds++;
    s->reason = reason;
    s->gone_at = em_now(g.r);
    s->c = NULL;
    if (s != &g.srv[0])
        g.idle_gone++;
}

static const em_handler srv_handler = {
    .post_init = srv_post_init,
    .receive_data = srv_data,
    .unbind = srv_unbind,
};

/* ------------------------------------------------- well-behaved client */

static const char PING[32] = "ping-ping-ping-ping-ping-ping-pi";

static void send_ping(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    g.ping_timer = 0;
    if (!g.pinging || !g.good)
        return;
    g.ping_sent = now_mono();
    g.pong_got = 0;
    g.no_ping_out = 0;
    ASSERT_EQ(em_send_data(g.good, PING, sizeof PING), 0);
}

static void good_completed(em_conn *c)
{
    (void)c;
    send_ping(g.r, NULL);
}

static void good_data(em_conn *c, const char *d, size_t n)
{
    (void)c;
    if (g.pong_got + n > sizeof PING || memcmp(d, PING + g.pong_got, n) != 0)
        FAIL("bad pong");
    g.pong_got += n;
    if (g.pong_got < sizeof PING)
        return;
    if (g.nrtt < MAX_PINGS)
        g.rtt[g.nrtt++] = now_mono() - g.ping_sent;
    g.no_ping_out = 1;
    if (g.pinging) {
        g.ping_timer = em_add_timer(g.r, PING_EVERY, send_ping, NULL);
        ASSERT_NE(g.ping_timer, 0);
    }
}

static void good_unbind(em_conn *c, int reason)
{
    (void)c;
    g.good_unbinds++;
    g.good_reason = reason;
    g.good = NULL;
}

static const em_handler good_handler = {
    .connection_completed = good_completed,
    .receive_data = good_data,
    .unbind = good_unbind,
};

/* ------------------------------------------------------- raw clients */

static void trickle(em_reactor *r, void *arg)
{
    (void)arg;
    for (int i = 1; i < NIDLE; i += 2) {
        ssize_t w = write(g.fds[i], "x", 1);
        if (w != 1)
            FAIL("trickle write %d: %s", i, w < 0 ? strerror(errno) : "short");
    }
    if (++g.trickles == TRICKLE_BYTES) {
        ASSERT_EQ(em_cancel_timer(r, g.trickle_timer), 0);
        g.trickle_timer = 0;
    }
}

static bool idle_all_gone(void *arg)
{
    (void)arg;
    return g.idle_gone == NIDLE;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

TEST_TIMEOUT(slowloris_1000_idle_connections, 60);
TEST(slowloris_1000_idle_connections)
{
    ASSERT_GE(raise_nofile(), 2 * NIDLE + 100);
    int fd0 = open_fd_count();
    g.r = new_reactor();
    em_server *s = em_start_server(g.r, "127.0.0.1", 0, &srv_handler, NULL);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);

    /* the well-behaved client first: it gets g.srv[0] */
    g.pinging = true;
    g.good = em_connect(g.r, "127.0.0.1", port, &good_handler, NULL);
    ASSERT_NOT_NULL(g.good);
    ASSERT(run_until(g.r, &g.accepted, 5));
    ASSERT_EQ(g.accepted, 1);

    /* 1000 raw clients at once, while the ping-pong goes on */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int i = 0; i < NIDLE; i++) {
        g.fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ASSERT_GE(g.fds[i], 0);
        int rc = connect(g.fds[i], (struct sockaddr *)&sa, sizeof sa);
        if (rc != 0 && errno != EINPROGRESS)
            FAIL("connect %d: %s", i, strerror(errno));
    }
    double t0 = now_mono();
    g.trickle_timer = em_add_periodic_timer(g.r, TRICKLE_EVERY, trickle, NULL);
    ASSERT_NE(g.trickle_timer, 0);

    ASSERT(run_until_pred(g.r, idle_all_gone, NULL, 20));
    double took = now_mono() - t0;
    ASSERT_EQ(g.accepted, NIDLE + 1);
    ASSERT_EQ(g.trickles, TRICKLE_BYTES);

    /* stop the ping-pong and close the well-behaved client */
    g.pinging = false;
    if (g.ping_timer) {
        ASSERT_EQ(em_cancel_timer(g.r, g.ping_timer), 0);
        g.ping_timer = 0;
    }
    ASSERT(run_until(g.r, &g.no_ping_out, 5)); /* closing with a pong unread: RST */
    ASSERT_NOT_NULL(g.good);
    ASSERT_EQ(em_close_connection(g.good, false), 0);
    ASSERT(run_until(g.r, &g.good_unbinds, 5));
    ASSERT(run_until(g.r, &g.srv[0].unbinds, 5));
    ASSERT_EQ(g.good_reason, 0);
    ASSERT_EQ(g.srv[0].reason, 0); /* never timed out: it was active */

    /* every idle connection: ETIMEDOUT, on time */
    int trickled = 0;
    double max_late = 0, sum_late = 0, min_late = 1e9;
    for (int i = 1; i <= NIDLE; i++) {
        struct sconn *x = &g.srv[i];
        ASSERT_EQ(x->unbinds, 1);
        if (x->reason != ETIMEDOUT)
            FAIL("connection %d: unbind(%d: %s), expected ETIMEDOUT", i, x->reason,
                 em_strerror(x->reason));
        double from = x->last_rx > x->set_at ? x->last_rx : x->set_at;
        double late = x->gone_at - (from + TIMEOUT_S);
        if (late < -1e-3)
            FAIL("connection %d closed %.3f s early (idle since %.3f, %llu bytes)", i, -late,
                 from - t0, (unsigned long long)x->bytes_in);
        if (late > MAX_LATE)
            FAIL("connection %d closed %.3f s late", i, late);
        if (late > max_late)
            max_late = late;
        if (late < min_late)
            min_late = late;
        sum_late += late;
        if (x->bytes_in == TRICKLE_BYTES)
            trickled++;
        else
            ASSERT_EQ(x->bytes_in, 0);
    }
    ASSERT_EQ(trickled, NIDLE / 2);

    /* the raw clients see the server's close: their echo, then EOF */
    int eofs = 0;
    for (int i = 0; i < NIDLE; i++) {
        char buf[16];
        ssize_t n;
        size_t got = 0;
        while ((n = read(g.fds[i], buf, sizeof buf)) > 0)
            got += (size_t)n;
        if (n == 0)
            eofs++;
        else
            FAIL("raw client %d: %s after %zu bytes", i,
                 n < 0 ? strerror(errno) : "?", got);
        ASSERT_EQ(got, i % 2 ? TRICKLE_BYTES : 0);
        close(g.fds[i]);
    }
    ASSERT_EQ(eofs, NIDLE);

    /* the well-behaved client's latency */
    ASSERT_GE(g.nrtt, 100);
    qsort(g.rtt, (size_t)g.nrtt, sizeof g.rtt[0], cmp_dbl);
    double p50 = g.rtt[g.nrtt / 2], p99 = g.rtt[(g.nrtt * 99) / 100],
           max = g.rtt[g.nrtt - 1];
    printf("  %d idle connections (%d trickling) closed in %.2f s, lateness min %.1f ms, "
           "mean %.1f ms, max %.1f ms; %d pings: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           NIDLE, trickled, took, min_late * 1e3, sum_late / NIDLE * 1e3, max_late * 1e3,
           g.nrtt, p50 * 1e3, p99 * 1e3, max * 1e3);
    if (p99 > P99_LIMIT)
        FAIL("ping-pong p99 %.1f ms > %.0f ms", p99 * 1e3, P99_LIMIT * 1e3);

    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(g.r);
    ASSERT_NO_FD_LEAK(fd0);
}
