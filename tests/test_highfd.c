/* Descriptors above 1024 (issue 5, item 10): FD_SETSIZE means nothing to
 * libem. /dev/null placeholders take the low numbers, so the reactor's own
 * descriptors, the listening socket and the connections all get numbers
 * above 1024 (above 8192 in one case); run on every backend by the suite. */
#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int *holders;
static int nholders;

/* Opens /dev/null until the next descriptor is at least min. */
static void fill_below(int min)
{
    ASSERT_GE(raise_nofile(), min + 512);
    holders = malloc(sizeof(int) * (size_t)min);
    ASSERT_NOT_NULL(holders);
    nholders = 0;
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        ASSERT_GE(fd, 0);
        holders[nholders++] = fd;
        if (fd >= min - 1)
            break;
        ASSERT_LT(nholders, min);
    }
}

static void release_holders(void)
{
    for (int i = 0; i < nholders; i++)
        if (holders[i] >= 0)
            close(holders[i]);
    free(holders);
    holders = NULL;
    nholders = 0;
}

struct echo {
    em_reactor *r;
    em_server *s;
    rec srv;
    rec *cli;
    em_conn **c;
    int n;
};

static void echo_open(struct echo *e, int n)
{
    e->r = new_reactor();
    e->n = n;
    e->srv = (rec){.echo = true, .tag = 1};
    rec_pool_new(&e->srv, n);
    e->s = em_start_server(e->r, "127.0.0.1", 0, &rec_handler, &e->srv);
    ASSERT_NOT_NULL(e->s);
    e->cli = calloc((size_t)n, sizeof(rec));
    e->c = calloc((size_t)n, sizeof(em_conn *));
    ASSERT_NOT_NULL(e->cli);
    ASSERT_NOT_NULL(e->c);
    for (int i = 0; i < n; i++) {
        e->cli[i] = (rec){.check_pattern = true, .tag = 2 + i};
        e->c[i] = em_connect(e->r, "127.0.0.1", em_server_port(e->s), &rec_handler, &e->cli[i]);
        ASSERT_NOT_NULL(e->c[i]);
    }
    for (int i = 0; i < n; i++)
        ASSERT(run_until(e->r, &e->cli[i].completed, 5));
    double deadline = now_mono() + 5;
    while (e->srv.pool_used < n && now_mono() < deadline)
        ASSERT_GE(em_run_once(e->r, 0.01), 0);
    ASSERT_EQ(e->srv.pool_used, n);
}

/* Sends bytes to every client, in random chunks; each checks its echo. */
static void echo_run(struct echo *e, uint64_t bytes)
{
    char *chunk = malloc(65536);
    ASSERT_NOT_NULL(chunk);
    uint64_t *sent = calloc((size_t)e->n, sizeof *sent);
    ASSERT_NOT_NULL(sent);
    uint64_t seed = 0x1024;
    double deadline = now_mono() + 30;
    for (;;) {
        bool done = true;
        for (int i = 0; i < e->n; i++) {
            if (e->cli[i].bytes_in < bytes)
                done = false;
            while (sent[i] < bytes && em_get_outbound_data_size(e->c[i]) < (256u << 10)) {
                size_t k = 1 + (size_t)(rng_next(&seed) % 65536);
                if (k > bytes - sent[i])
                    k = (size_t)(bytes - sent[i]);
                fill_pattern(chunk, sent[i], k);
                ASSERT_EQ(em_send_data(e->c[i], chunk, k), 0);
                sent[i] += k;
            }
        }
        if (done)
            break;
        if (now_mono() > deadline)
            FAIL("echo not finished in time");
        ASSERT_GE(em_run_once(e->r, 0.05), 0);
    }
    for (int i = 0; i < e->n; i++)
        ASSERT_EQ(e->cli[i].bytes_in, bytes); /* each byte checked by rec_handler */
    free(sent);
    free(chunk);
}

static void echo_close(struct echo *e)
{
    for (int i = 0; i < e->n; i++)
        ASSERT_EQ(close_conn(e->c[i], false), 0);
    for (int i = 0; i < e->n; i++) {
        ASSERT(run_until(e->r, &e->cli[i].unbinds, 5));
        ASSERT(run_until(e->r, &e->srv.pool[i].unbinds, 5));
        ASSERT_EQ(e->cli[i].reason, 0);
        rec_free(&e->cli[i]);
    }
    ASSERT_EQ(em_stop_server(e->s), 0);
    REACTOR_FREE_CHECKED(e->r);
    rec_free(&e->srv);
    free(e->cli);
    free(e->c);
}

/* Lowest and highest connection descriptor of the echo set. */
static void fd_range(struct echo *e, int *lo, int *hi)
{
    *lo = 1 << 30;
    *hi = -1;
    for (int i = 0; i < e->n; i++) {
        int a = em_conn_fd(e->c[i]), b = em_conn_fd(e->srv.pool[i].conn);
        if (a < *lo)
            *lo = a;
        if (b < *lo)
            *lo = b;
        if (a > *hi)
            *hi = a;
        if (b > *hi)
            *hi = b;
    }
}

static void echo_above(int min, int nconns, uint64_t bytes)
{
    int fd0 = open_fd_count();
    fill_below(min);
    struct echo e;
    echo_open(&e, nconns);
    int lo, hi;
    fd_range(&e, &lo, &hi);
    ASSERT_GE(lo, min);
    if (em_backend_fd(e.r) >= 0)
        ASSERT_GE(em_backend_fd(e.r), min);
    echo_run(&e, bytes);
    printf("  %s: %d connections on fds %d..%d, %llu bytes echoed and checked each\n",
           em_backend_name(e.r), nconns, lo, hi, (unsigned long long)bytes);
    echo_close(&e);
    release_holders();
    ASSERT_NO_FD_LEAK(fd0);
}

TEST_TIMEOUT(echo_fds_above_1024, 60);
TEST(echo_fds_above_1024)
{
    echo_above(1100, 1, 8u << 20);
}

TEST_TIMEOUT(echo_200_conns_fds_above_1024, 60);
TEST(echo_200_conns_fds_above_1024)
{
    echo_above(1100, 200, 64u << 10);
}

TEST_TIMEOUT(echo_fds_above_8192, 60);
TEST(echo_fds_above_8192)
{
    echo_above(9000, 20, 1u << 20);
}

/* Low and high descriptors mixed in one reactor: a hole below 1024 gives the
 * client a low number, its accepted peer gets a high one. */
TEST_TIMEOUT(echo_low_and_high_fds_mixed, 60);
TEST(echo_low_and_high_fds_mixed)
{
    int fd0 = open_fd_count();
    fill_below(1100);
    em_reactor *r = new_reactor();
    rec srv = {.echo = true, .tag = 1};
    rec_pool_new(&srv, 1);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int hole = holders[nholders / 2];
    ASSERT_LT(hole, 1024);
    close(hole);
    holders[nholders / 2] = -1;
    rec cli = {.check_pattern = true, .tag = 2};
    em_conn *c = em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(em_conn_fd(c), hole);
    ASSERT(run_until(r, &cli.completed, 5));
    ASSERT(run_until(r, &srv.pool_used, 5));
    ASSERT_GT(em_conn_fd(srv.pool[0].conn), 1024);
    char *buf = malloc(1u << 20);
    ASSERT_NOT_NULL(buf);
    fill_pattern(buf, 0, 1u << 20);
    ASSERT_EQ(em_send_data(c, buf, 1u << 20), 0);
    free(buf);
    double deadline = now_mono() + 10;
    while (cli.bytes_in < (1u << 20) && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(cli.bytes_in, 1u << 20);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    rec_free(&cli);
    release_holders();
    ASSERT_NO_FD_LEAK(fd0);
}

/* Datagrams, attached pipes and timers above 1024 too. */
static void dgram_reply(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    if (n == 4 && memcmp(d, "ping", 4) == 0)
        ASSERT_EQ(em_send_data(c, "pong", 4), 0);
}

static void timer_fired(em_reactor *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
}

TEST(datagram_pipe_timer_fds_above_1024)
{
    int fd0 = open_fd_count();
    fill_below(1100);
    em_reactor *r = new_reactor();
    rec a = {.tag = 1, .on_data = dgram_reply}, b = {.tag = 2, .store = true};
    em_conn *ua = em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &a);
    em_conn *ub = em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &b);
    ASSERT_NOT_NULL(ua);
    ASSERT_NOT_NULL(ub);
    ASSERT_GT(em_conn_fd(ua), 1024);
    ASSERT_GT(em_conn_fd(ub), 1024);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ASSERT_EQ(em_get_sockname(ua, &ss, &len), 0);
    int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    ASSERT_EQ(em_send_datagram(ub, "ping", 4, "127.0.0.1", port), 0);
    double deadline = now_mono() + 5;
    while (b.len < 4 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(b.len, 4);
    ASSERT(memcmp(b.buf, "pong", 4) == 0);

    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    ASSERT_GT(p[0], 1024);
    rec pr = {.tag = 3, .check_pattern = true};
    em_conn *pc = em_attach(r, p[0], &rec_handler, &pr);
    ASSERT_NOT_NULL(pc);
    char buf[4096];
    fill_pattern(buf, 0, sizeof buf);
    write_all(p[1], buf, sizeof buf);
    close(p[1]);
    ASSERT(run_until(r, &pr.unbinds, 5)); /* EOF */
    ASSERT_EQ(pr.bytes_in, sizeof buf);
    ASSERT_EQ(pr.reason, 0);
    close(p[0]);

    int fired = 0;
    ASSERT_NE(em_add_timer(r, 0.01, timer_fired, &fired), 0);
    ASSERT(run_until(r, &fired, 5));

    ASSERT_EQ(close_conn(ua, false), 0);
    ASSERT_EQ(close_conn(ub, false), 0);
    ASSERT(run_until(r, &a.unbinds, 5));
    ASSERT(run_until(r, &b.unbinds, 5));
    REACTOR_FREE_CHECKED(r);
    rec_free(&a);
    rec_free(&b);
    release_holders();
    ASSERT_NO_FD_LEAK(fd0);
}
