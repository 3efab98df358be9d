/* Stream integrity (issue 5, item 1).
 *
 * Each seed drives one client connection through a libem echo server in the
 * same reactor: a pseudo-random byte stream (the stream and the write sizes,
 * 1 B to 64 KiB, follow from the seed), tiny SO_SNDBUF/SO_RCVBUF on both ends
 * (send 8-16 KiB, receive 16-24 KiB: partial writes all the time; a receive
 * buffer under 16 KiB stalls loopback transfers on delayed ACKs), and the server connection paused
 * and resumed at random by timers. Odd seeds: the server echoes, the client
 * half-closes (em_close_write) after its last byte and checks the echo until
 * EOF; even seeds: one way, the client ends with close-after-writing and the
 * server checks the stream until EOF. The receiver regenerates the stream
 * from the seed and reports the first wrong offset.
 *
 * make test: 20 cases x 5 seeds x 16 MiB (100 seeds), 5 at once per case.
 * make stress: INTEGRITY_SEEDS=N runs N more seeds in the stress_seeds case
 * (2 without it; INTEGRITY_BYTES overrides the bytes per seed there).
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PAR 8
#define WINDOW (512u << 10)  /* unacknowledged bytes a client may have */
#define OUT_LIMIT (64u << 10) /* bytes a client queues in libem at most */

/* ------------------------------------------------------------ the stream */

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Byte off of the stream of seed. */
static inline unsigned char stream_byte(uint64_t key, uint64_t off)
{
    return (unsigned char)(mix64(key ^ (off >> 3)) >> (8 * (off & 7)));
}

static uint64_t stream_key(uint64_t seed) { return mix64(seed * 0xD1B54A32D192ED03ull + 1); }

static void stream_fill(uint64_t key, uint64_t off, unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n && ((off + i) & 7))
        p[i] = stream_byte(key, off + i), i++;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = mix64(key ^ ((off + i) >> 3));
        for (int k = 0; k < 8; k++)
            p[i + (size_t)k] = (unsigned char)(w >> (8 * k));
    }
    for (; i < n; i++)
        p[i] = stream_byte(key, off + i);
}

/* Index of the first byte of p that differs from the stream, or -1. */
static long stream_check(uint64_t key, uint64_t off, const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n && ((off + i) & 7)) {
        if (p[i] != stream_byte(key, off + i))
            return (long)i;
        i++;
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t w = mix64(key ^ ((off + i) >> 3));
        uint64_t got;
        memcpy(&got, p + i, 8); /* little-endian host */
        if (got != w)
            for (int k = 0; k < 8; k++)
                if (p[i + (size_t)k] != (unsigned char)(w >> (8 * k)))
                    return (long)(i + (size_t)k);
    }
    for (; i < n; i++)
        if (p[i] != stream_byte(key, off + i))
            return (long)i;
    return -1;
}

/* ------------------------------------------------------------ one seed */

struct flow;

struct side { /* one end's observations */
    struct flow *f;
    em_conn *c;
    uint64_t in; /* bytes received and checked */
    int unbinds, reason;
};

struct flow {
    uint64_t seed, key, total;
    bool echo;               /* odd seeds */
    uint64_t rng;            /* write sizes */
    uint64_t prng;           /* pauses */
    int sndbuf, rcvbuf;
    uint64_t sent;           /* bytes queued by the client */
    bool ended;              /* close_write / close-after-writing asked */
    struct side cli, srv;
    em_timer_id pause_timer;
    int pauses, waits; /* pauses; writes that waited for the kernel */
    long backlogged;   /* pumps finding data the kernel did not take yet */
};

static struct {
    em_reactor *r;
    struct flow *flows;
    int nflows, accepted;
    unsigned char *chunk;
} g;

static void fail_mismatch(struct flow *f, const char *who, uint64_t off, long at,
                          const char *d)
{
    uint64_t o = off + (uint64_t)at;
    FAIL("seed %llu: %s: first wrong byte at offset %llu: got 0x%02x, expected 0x%02x",
         (unsigned long long)f->seed, who, (unsigned long long)o, (unsigned char)d[at],
         stream_byte(f->key, o));
}

static size_t next_write_size(struct flow *f)
{
    uint64_t x = rng_next(&f->rng);
    switch (x & 3) {
    case 0: return 1 + (size_t)((x >> 8) % 16);       /* tiny */
    case 1: return 1 + (size_t)((x >> 8) % 1024);     /* small */
    default: return 1 + (size_t)((x >> 8) % 65536);   /* up to 64 KiB */
    }
}

/* Queues client writes while the window and the queue allow. */
static void pump(struct flow *f)
{
    em_conn *c = f->cli.c;
    if (!c || f->ended)
        return;
    if (em_get_outbound_data_size(c) > 0)
        f->backlogged++;
    for (;;) {
        uint64_t acked = f->echo ? f->cli.in : f->srv.in;
        if (f->sent >= f->total || f->sent - acked >= WINDOW ||
            em_get_outbound_data_size(c) >= OUT_LIMIT)
            break;
        size_t n = next_write_size(f);
        if (n > f->total - f->sent)
            n = (size_t)(f->total - f->sent);
        stream_fill(f->key, f->sent, g.chunk, n);
        int rc = em_send_data(c, g.chunk, n);
        if (rc != 0)
            FAIL("seed %llu: em_send_data(%zu) at %llu: %d (%s)",
                 (unsigned long long)f->seed, n, (unsigned long long)f->sent, rc,
                 em_strerror(rc));
        f->sent += n;
    }
    if (f->sent == f->total) {
        f->ended = true;
        int rc = f->echo ? em_close_write(c) : em_close_connection_after_writing(c);
        if (rc != 0)
            FAIL("seed %llu: ending the stream: %d (%s)", (unsigned long long)f->seed, rc,
                 em_strerror(rc));
    }
}

static void pump_all(void)
{
    for (int i = 0; i < g.nflows; i++)
        pump(&g.flows[i]);
}

static void set_bufs(em_conn *c, struct flow *f)
{
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_SNDBUF, &f->sndbuf, sizeof f->sndbuf), 0);
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_RCVBUF, &f->rcvbuf, sizeof f->rcvbuf), 0);
}

/* client */

static void cli_post_init(em_conn *c)
{
    struct flow *f = em_conn_arg(c);
    f->cli.c = c;
    em_conn_set_user(c, &f->cli);
    if (em_conn_fd(c) >= 0)
        set_bufs(c, f);
}

static void cli_completed(em_conn *c)
{
    struct flow *f = em_conn_arg(c);
    set_bufs(c, f);
    pump(f);
}

static void cli_data(em_conn *c, const char *d, size_t n)
{
    struct flow *f = em_conn_arg(c);
    if (!f->echo)
        FAIL("seed %llu: one-way client received %zu bytes", (unsigned long long)f->seed, n);
    if (f->cli.in + n > f->total)
        FAIL("seed %llu: client received %llu bytes, more than %llu",
             (unsigned long long)f->seed, (unsigned long long)(f->cli.in + n),
             (unsigned long long)f->total);
    long at = stream_check(f->key, f->cli.in, (const unsigned char *)d, n);
    if (at >= 0)
        fail_mismatch(f, "echo at the client", f->cli.in, at, d);
    f->cli.in += n;
    pump_all();
}

static void cli_drained(em_conn *c)
{
    struct flow *f = em_conn_arg(c);
    f->waits++;
    pump(f);
}

static void cli_unbind(em_conn *c, int reason)
{
    struct flow *f = em_conn_arg(c);
    f->cli.unbinds++;
    f->cli.reason = reason;
    f->cli.c = NULL;
}

static const em_handler cli_handler = {
    .post_init = cli_post_init,
    .connection_completed = cli_completed,
    .receive_data = cli_data,
    .unbind = cli_unbind,
    .outbound_drained = cli_drained,
};

/* server: accepted connections are matched to flows in connect order */

static void pause_tick(em_reactor *r, void *arg);

static void arm_pause_timer(struct flow *f, bool paused)
{
    uint64_t x = rng_next(&f->prng);
    /* running 0-20 ms, paused 0-6 ms */
    double s = paused ? (double)(x % 6000) / 1e6 : (double)(x % 20000) / 1e6;
    f->pause_timer = em_add_timer(g.r, s, pause_tick, f);
    ASSERT_NE(f->pause_timer, 0);
}

static void pause_tick(em_reactor *r, void *arg)
{
    (void)r;
    struct flow *f = arg;
    f->pause_timer = 0;
    em_conn *c = f->srv.c;
    if (!c)
        return;
    int rc;
    if (em_is_paused(c)) {
        rc = em_resume(c);
    } else {
        rc = em_pause(c);
        if (rc == 0)
            f->pauses++;
    }
    if (rc != 0 && rc != -ENOTCONN)
        FAIL("seed %llu: pause/resume: %d", (unsigned long long)f->seed, rc);
    if (rc == 0)
        arm_pause_timer(f, em_is_paused(c));
}

static void srv_post_init(em_conn *c)
{
    if (g.accepted >= g.nflows)
        FAIL("unexpected connection");
    struct flow *f = &g.flows[g.accepted++];
    f->srv.c = c;
    em_conn_set_user(c, f);
    set_bufs(c, f);
    arm_pause_timer(f, false);
}

static void srv_data(em_conn *c, const char *d, size_t n)
{
    struct flow *f = em_conn_user(c);
    if (f->srv.in + n > f->total)
        FAIL("seed %llu: server received %llu bytes, more than %llu",
             (unsigned long long)f->seed, (unsigned long long)(f->srv.in + n),
             (unsigned long long)f->total);
    long at = stream_check(f->key, f->srv.in, (const unsigned char *)d, n);
    if (at >= 0)
        fail_mismatch(f, "stream at the server", f->srv.in, at, d);
    f->srv.in += n;
    if (f->echo) {
        int rc = em_send_data(c, d, n);
        if (rc != 0)
            FAIL("seed %llu: echo: %d (%s)", (unsigned long long)f->seed, rc, em_strerror(rc));
    }
    if (!f->echo)
        pump(f);
}

static void srv_unbind(em_conn *c, int reason)
{
    struct flow *f = em_conn_user(c);
    f->srv.unbinds++;
    f->srv.reason = reason;
    f->srv.c = NULL;
    if (f->pause_timer) {
        ASSERT_EQ(em_cancel_timer(g.r, f->pause_timer), 0);
        f->pause_timer = 0;
    }
}

static void srv_drained(em_conn *c)
{
    struct flow *f = em_conn_user(c);
    f->waits++;
}

static const em_handler srv_handler = {
    .post_init = srv_post_init,
    .outbound_drained = srv_drained,
    .receive_data = srv_data,
    .unbind = srv_unbind,
};

static bool all_done(void *arg)
{
    (void)arg;
    pump_all();
    for (int i = 0; i < g.nflows; i++)
        if (!g.flows[i].cli.unbinds || !g.flows[i].srv.unbinds)
            return false;
    return true;
}

/* Runs seeds first..first+n-1, par at a time, total bytes each. */
static void run_seeds(uint64_t first, int n, int par, uint64_t total, double limit_s)
{
    int fd0 = open_fd_count();
    g.chunk = malloc(65536);
    ASSERT_NOT_NULL(g.chunk);
    double t0 = now_mono();
    uint64_t checked = 0;
    long pauses = 0, waits = 0, backlogged = 0;
    for (int done = 0; done < n; done += par) {
        int k = n - done < par ? n - done : par;
        g.r = new_reactor();
        g.flows = calloc((size_t)k, sizeof *g.flows);
        ASSERT_NOT_NULL(g.flows);
        g.nflows = k;
        g.accepted = 0;
        em_server *s = em_start_server(g.r, "127.0.0.1", 0, &srv_handler, NULL);
        ASSERT_NOT_NULL(s);
        for (int i = 0; i < k; i++) {
            struct flow *f = &g.flows[i];
            f->seed = first + (uint64_t)done + (uint64_t)i;
            f->key = stream_key(f->seed);
            f->total = total;
            f->echo = f->seed & 1;
            f->rng = mix64(f->seed ^ 0x5151) | 1;
            f->prng = mix64(f->seed ^ 0xA7A7) | 1;
            uint64_t b = mix64(f->seed ^ 0xB0F);
            f->sndbuf = 8192 + (int)(b % 8193);
            f->rcvbuf = 16384 + (int)((b >> 20) % 8193);
            f->cli.f = f->srv.f = f;
            /* one at a time, so that accepted connections match flows */
            ASSERT_NOT_NULL(em_connect(g.r, "127.0.0.1", em_server_port(s), &cli_handler, f));
            double deadline = now_mono() + 5;
            while (g.accepted < i + 1 && now_mono() < deadline)
                ASSERT_GE(em_run_once(g.r, 0.05), 0);
            ASSERT_EQ(g.accepted, i + 1);
        }
        if (!run_until_pred(g.r, all_done, NULL, limit_s - (now_mono() - t0))) {
            for (int i = 0; i < k; i++) {
                struct flow *f = &g.flows[i];
                fprintf(stderr,
                        "seed %llu: sent %llu, server got %llu, client got %llu, "
                        "unbinds %d/%d\n",
                        (unsigned long long)f->seed, (unsigned long long)f->sent,
                        (unsigned long long)f->srv.in, (unsigned long long)f->cli.in,
                        f->cli.unbinds, f->srv.unbinds);
            }
            FAIL("seeds from %llu not finished in time", (unsigned long long)(first + (uint64_t)done));
        }
        for (int i = 0; i < k; i++) {
            struct flow *f = &g.flows[i];
            ASSERT_EQ(f->sent, total);
            ASSERT_EQ(f->srv.in, total);
            ASSERT_EQ(f->srv.reason, 0);
            ASSERT_EQ(f->cli.reason, 0);
            ASSERT_EQ(f->cli.unbinds, 1);
            ASSERT_EQ(f->srv.unbinds, 1);
            checked += f->srv.in;
            if (f->echo) {
                ASSERT_EQ(f->cli.in, total);
                checked += f->cli.in;
            }
            pauses += f->pauses;
            waits += f->waits;
            backlogged += f->backlogged;
        }
        ASSERT_EQ(em_stop_server(s), 0);
        REACTOR_FREE_CHECKED(g.r);
        free(g.flows);
        g.flows = NULL;
    }
    free(g.chunk);
    printf("  seeds %llu-%llu: %d x %llu bytes, %llu bytes checked, 0 mismatches, "
           "%ld pauses, %ld drains, %ld backlogged pumps, %.1f s\n",
           (unsigned long long)first, (unsigned long long)(first + (uint64_t)n - 1), n,
           (unsigned long long)total, (unsigned long long)checked, pauses, waits,
           backlogged, now_mono() - t0);
    fflush(stdout);
    ASSERT_NO_FD_LEAK(fd0);
}

#define SEED_BYTES (16ull << 20)
#define SEEDS_PER_CASE 5

#define INTEGRITY_CASE(k)                                                     \
    TEST_TIMEOUT(integrity_seeds_##k, 60);                                   \
    TEST(integrity_seeds_##k)                                                 \
    {                                                                         \
        run_seeds(1 + (k) * SEEDS_PER_CASE, SEEDS_PER_CASE, SEEDS_PER_CASE,   \
                  SEED_BYTES, 50);                                            \
    }

INTEGRITY_CASE(0)
INTEGRITY_CASE(1)
INTEGRITY_CASE(2)
INTEGRITY_CASE(3)
INTEGRITY_CASE(4)
INTEGRITY_CASE(5)
INTEGRITY_CASE(6)
INTEGRITY_CASE(7)
INTEGRITY_CASE(8)
INTEGRITY_CASE(9)
INTEGRITY_CASE(10)
INTEGRITY_CASE(11)
INTEGRITY_CASE(12)
INTEGRITY_CASE(13)
INTEGRITY_CASE(14)
INTEGRITY_CASE(15)
INTEGRITY_CASE(16)
INTEGRITY_CASE(17)
INTEGRITY_CASE(18)
INTEGRITY_CASE(19)

/* The stream functions themselves: a flipped byte is found at its offset. */
TEST(integrity_checker_finds_offset)
{
    uint64_t key = stream_key(7);
    unsigned char buf[1000];
    stream_fill(key, 12345, buf, sizeof buf);
    ASSERT_EQ(stream_check(key, 12345, buf, sizeof buf), -1);
    for (size_t at = 0; at < sizeof buf; at += 37) {
        buf[at] ^= 0x10;
        ASSERT_EQ(stream_check(key, 12345, buf, sizeof buf), (long)at);
        buf[at] ^= 0x10;
    }
    /* different seeds give different streams */
    unsigned char other[1000];
    stream_fill(stream_key(8), 12345, other, sizeof other);
    ASSERT_NE(memcmp(buf, other, sizeof buf), 0);
}

/* The stress range of seeds: INTEGRITY_SEEDS of them in make stress, two in
 * make test (so the case always checks real data; a skip is not a pass). */
TEST_TIMEOUT(stress_seeds, 7200);
TEST(stress_seeds)
{
    const char *e = getenv("INTEGRITY_SEEDS");
    int n = e ? atoi(e) : 2;
    if (n <= 0)
        n = 2;
    const char *b = getenv("INTEGRITY_BYTES");
    uint64_t total = b ? strtoull(b, NULL, 0) : SEED_BYTES;
    run_seeds(1000, n, SEEDS_PER_CASE, total, 7000);
}
