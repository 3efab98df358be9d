/* The splice path of proxies: between two plain sockets em_proxy_incoming_to
 * splices the source's bytes into a pooled pipe that waits in the target's
 * queue, then splices them on to the target's socket. Where it cannot (TLS,
 * a paused target, a target with bytes of its own queued, EM_SPLICE=0) the
 * bytes are copied; both ways share the target's queue and keep the order.
 *
 * Which way the bytes went is measured, not assumed: this file defines
 * splice() itself, and libem, linked statically, calls this one. It makes
 * the system call and counts the bytes moved into pipes (the source read)
 * and out of them (the target written). splice_syscalls_match_strace checks
 * that count against the kernel's own, strace -c on a run of this binary.
 *
 * Set-up (rig): a libem server and raw clients X and Y, accepted as cx and
 * cy; a rig has up to MAX_PAIRS such pairs. Over TCP on 127.0.0.1 or ::1,
 * or a unix socket. X writes pattern_byte() from some base, in pieces of
 * random size; Y reads in random pieces with random pauses and checks every
 * byte (a flow). */
#include "harness.h"
#include "tls_fixture.h"

#include "em-internal.h" /* EM_PIPE_SIZE, EM_PIPE_POOL, EM_READ_BUF_SIZE */

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

TLS_FIXTURE();

#define KiB 1024u
#define MiB (1024u * 1024u)
#define MAX_PAIRS 100
/* the base of the reverse flow's pattern, far from the forward one's bytes */
#define REVERSE_BASE ((uint64_t)1 << 40)

/* ------------------------------------------------------ splice, counted */

static struct {
    unsigned long calls;  /* every call, failed ones too */
    uint64_t fill_bytes;  /* into a pipe: read from a source */
    uint64_t drain_bytes; /* out of a pipe: written to a target */
} spl;

ssize_t splice(int fd_in, loff_t *off_in, int fd_out, loff_t *off_out, size_t len,
               unsigned int flags)
{
    long n = syscall(SYS_splice, fd_in, off_in, fd_out, off_out, len, flags);
    spl.calls++;
    if (n > 0) {
        struct stat st;
        bool into_pipe = fstat(fd_out, &st) == 0 && S_ISFIFO(st.st_mode);
        *(into_pipe ? &spl.fill_bytes : &spl.drain_bytes) += (uint64_t)n;
    }
    return n;
}

/* Bytes spliced into a pipe and not yet out of it: waiting in a target's
 * queue. */
static uint64_t in_pipes(void) { return spl.fill_bytes - spl.drain_bytes; }

/* ------------------------------------------------------------------ rig */

enum fam { TCP4, TCP6, UNIX_SOCK };
enum splice_mode { SPLICE_ON, SPLICE_OFF, SPLICE_AS_ENV };

static int completed_calls, target_unbound_calls;
static uint64_t data_when_completed; /* the source's receive_data bytes then */

static void on_proxy_completed(em_conn *c)
{
    rec *x = em_conn_user(c);
    completed_calls++;
    data_when_completed = x->bytes_in;
}

static void on_target_unbound(em_conn *c)
{
    (void)c;
    target_unbound_calls++;
}

static em_handler proxy_handler;

typedef struct rig {
    em_reactor *r;
    em_server *s;
    enum fam fam;
    rec srv; /* cx[i] records into pool[2i], cy[i] into pool[2i+1] */
    int n;
    int x[MAX_PAIRS], y[MAX_PAIRS];
    em_conn *cx[MAX_PAIRS], *cy[MAX_PAIRS];
    char dir[64], path[128];
    int fd0;
} rig;

static rec *rx(rig *g, int i) { return &g->srv.pool[2 * i]; }
static rec *ry(rig *g, int i) { return &g->srv.pool[2 * i + 1]; }

static int raw_connect(rig *g)
{
    if (g->fam == UNIX_SOCK)
        return unix_connect_raw(g->path);
    return tcp_connect_raw(g->fam == TCP6 ? "::1" : "127.0.0.1", em_server_port(g->s));
}

static void set_splice_env(enum splice_mode m)
{
    if (m == SPLICE_ON)
        unsetenv("EM_SPLICE");
    else if (m == SPLICE_OFF)
        setenv("EM_SPLICE", "0", 1); /* read by em_reactor_new */
}

static void start_server(rig *g)
{
    if (g->fam == UNIX_SOCK) {
        make_tmpdir(g->dir, sizeof g->dir);
        snprintf(g->path, sizeof g->path, "%s/proxy.sock", g->dir);
        g->s = em_start_unix_server(g->r, g->path, &proxy_handler, &g->srv);
    } else {
        const char *ip = g->fam == TCP6 ? "::1" : "127.0.0.1";
        g->s = em_start_server(g->r, ip, 0, &proxy_handler, &g->srv);
    }
    ASSERT_NOT_NULL(g->s);
}

static void rig_open(rig *g, enum fam fam, int n, enum splice_mode mode)
{
    memset(g, 0, sizeof *g);
    completed_calls = target_unbound_calls = 0;
    data_when_completed = UINT64_MAX;
    proxy_handler = rec_handler;
    proxy_handler.proxy_completed = on_proxy_completed;
    proxy_handler.proxy_target_unbound = on_target_unbound;
    g->fd0 = open_fd_count();
    g->fam = fam;
    g->n = n;
    set_splice_env(mode);
    g->r = new_reactor();
    g->srv = (rec){.tag = 1, .store = true};
    rec_pool_new(&g->srv, 2 * n);
    start_server(g);
    for (int i = 0; i < n; i++) {
        g->x[i] = raw_connect(g);
        ASSERT(run_until(g->r, &rx(g, i)->post_inits, 5));
        g->y[i] = raw_connect(g);
        ASSERT(run_until(g->r, &ry(g, i)->post_inits, 5));
        set_nonblock(g->x[i]);
        set_nonblock(g->y[i]);
        g->cx[i] = rx(g, i)->conn;
        g->cy[i] = ry(g, i)->conn;
    }
}

static void rig_close(rig *g)
{
    for (int i = 0; i < g->n; i++) {
        if (g->x[i] >= 0)
            close(g->x[i]);
        if (g->y[i] >= 0)
            close(g->y[i]);
    }
    double deadline = now_mono() + 5;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(g->r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    ASSERT_EQ(em_stop_server(g->s), 0);
    REACTOR_FREE_CHECKED(g->r);
    if (g->fam == UNIX_SOCK)
        rm_tmpdir(g->dir);
    rec_free(&g->srv);
    ASSERT_NO_FD_LEAK(g->fd0); /* the pipes included */
}

/* Little room in the kernel between the target cy[i] and Y[i]: a stalled
 * Y makes the target wait at once (loopback buffers grow to megabytes). */
static void small_target_buffers(rig *g, int i, int bytes)
{
    ASSERT_EQ(em_set_sock_opt(g->cy[i], SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes), 0);
    ASSERT_EQ(setsockopt(g->y[i], SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes), 0);
}

static em_conn_stats stats_of(const em_conn *c)
{
    em_conn_stats st;
    ASSERT_EQ(em_get_stats(c, &st), 0);
    return st;
}

/* ----------------------------------------------------------------- flows */

/* One direction: a raw writer (wfd; -1: none) and a raw reader (rfd; -1:
 * none) of the pattern from `base`. */
typedef struct flow {
    int wfd, rfd;
    uint64_t base;
    uint64_t to_write, written;
    uint64_t to_read, got; /* the reader reads no further than to_read */
    uint64_t rng;
    size_t max_write, max_read;
    unsigned pause_one_in; /* a read is followed by a pause once in so many */
    double pause_max_s, paused_until;
    bool stalled; /* the reader does not read at all */
    bool full;    /* the writer's last write found its socket full */
    char *gen;    /* pattern bytes from gen_at, made once for many writes */
    uint64_t gen_at;
    size_t gen_len;
} flow;

static void flow_init(flow *f, int wfd, int rfd, uint64_t base, uint64_t total, uint64_t seed)
{
    *f = (flow){.wfd = wfd, .rfd = rfd, .base = base, .to_write = total, .to_read = total,
                .rng = seed | 1, .max_write = 128 * KiB, .max_read = 64 * KiB,
                .pause_one_in = 32, .pause_max_s = 0.02};
    f->gen = malloc(2 * f->max_write);
    ASSERT_NOT_NULL(f->gen);
}

static void flow_free(flow *f)
{
    free(f->gen);
    f->gen = NULL;
}

static size_t rnd_upto(uint64_t *rng, size_t max) { return 1 + (size_t)(rng_next(rng) % max); }

/* The next k pattern bytes to write, made ahead so that a write the socket
 * refuses does not make them again. */
static const char *flow_bytes(flow *f, size_t k)
{
    if (f->written < f->gen_at || f->written + k > f->gen_at + f->gen_len) {
        f->gen_at = f->written;
        f->gen_len = 2 * f->max_write;
        for (size_t j = 0; j < f->gen_len; j++)
            f->gen[j] = (char)pattern_byte(f->base + f->gen_at + j);
    }
    return f->gen + (f->written - f->gen_at);
}

/* A few writes of random size, while the socket takes them. */
static void flow_write(flow *f)
{
    for (int i = 0; i < 4 && f->wfd >= 0 && f->written < f->to_write; i++) {
        size_t k = rnd_upto(&f->rng, f->max_write);
        if (k > f->to_write - f->written)
            k = (size_t)(f->to_write - f->written);
        ssize_t w = write(f->wfd, flow_bytes(f, k), k);
        f->full = w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        if (w < 0 && !f->full)
            FAIL("write: %s", strerror(errno));
        if (w <= 0)
            return;
        f->written += (uint64_t)w;
    }
}

static void check_pattern(uint64_t base, uint64_t at, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] != pattern_byte(base + at + i))
            FAIL("byte %llu of the flow is %u, expected %u", (unsigned long long)(at + i),
                 (unsigned char)buf[i], pattern_byte(base + at + i));
}

/* A few reads of random size, each checked; sometimes a pause after one. */
static void flow_read(flow *f)
{
    static char buf[64 * KiB];
    if (f->rfd < 0 || f->stalled || now_mono() < f->paused_until)
        return;
    for (int i = 0; i < 4 && f->got < f->to_read; i++) {
        size_t k = rnd_upto(&f->rng, f->max_read < sizeof buf ? f->max_read : sizeof buf);
        if (k > f->to_read - f->got)
            k = (size_t)(f->to_read - f->got);
        ssize_t n = read(f->rfd, buf, k);
        if (n == 0)
            FAIL("EOF after %llu bytes of %llu", (unsigned long long)f->got,
                 (unsigned long long)f->to_read);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0)
            FAIL("read: %s", strerror(errno));
        check_pattern(f->base, f->got, buf, (size_t)n);
        f->got += (uint64_t)n;
        if (f->pause_one_in && rng_next(&f->rng) % f->pause_one_in == 0) {
            double share = (double)(rng_next(&f->rng) % 1000) / 1000;
            f->paused_until = now_mono() + f->pause_max_s * share;
            return;
        }
    }
}

static bool flow_done(const flow *f)
{
    return (f->wfd < 0 || f->written == f->to_write) && (f->rfd < 0 || f->got == f->to_read);
}

/* Nothing beyond what the flow expected is there to read. */
static void flow_nothing_more(const flow *f)
{
    char c;
    ssize_t n = read(f->rfd, &c, 1);
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
        FAIL("read after the flow's %llu bytes: %zd (%s)", (unsigned long long)f->got, n,
             n < 0 ? strerror(errno) : n == 0 ? "EOF" : "a byte too many");
}

typedef struct pump_opts {
    bool (*done)(rig *g, void *arg); /* must hold too; NULL: none */
    void (*turn)(rig *g, void *arg); /* after each turn; NULL: none */
    void *arg;
    double secs;
} pump_opts;

/* Turns of the reactor and the flows until every flow is done. */
static void pump(rig *g, flow *fl, int nf, const pump_opts *o)
{
    double deadline = now_mono() + (o && o->secs ? o->secs : 20);
    for (;;) {
        bool done = !o || !o->done || o->done(g, o->arg);
        for (int i = 0; i < nf; i++)
            done = done && flow_done(&fl[i]);
        if (done)
            return;
        if (now_mono() > deadline)
            FAIL("stuck: flow 0 wrote %llu of %llu, read %llu of %llu; flow %d read %llu of "
                 "%llu; %llu bytes in pipes",
                 (unsigned long long)fl[0].written, (unsigned long long)fl[0].to_write,
                 (unsigned long long)fl[0].got, (unsigned long long)fl[0].to_read, nf - 1,
                 (unsigned long long)fl[nf - 1].got, (unsigned long long)fl[nf - 1].to_read,
                 (unsigned long long)in_pipes());
        for (int i = 0; i < nf; i++)
            flow_write(&fl[i]);
        ASSERT_GE(em_run_once(g->r, 0.002), 0);
        for (int i = 0; i < nf; i++)
            flow_read(&fl[i]);
        if (o && o->turn)
            o->turn(g, o->arg);
    }
}

/* ======================================================= 1. streams */

/* total bytes each way at once through cx <-> cy, in random pieces with
 * random pauses of the readers: byte-exact, counted, and (splicing) every
 * byte through a pipe. */
static void both_ways(enum fam fam, uint64_t total, enum splice_mode mode, const char *label)
{
    rig g;
    rig_open(&g, fam, 1, mode);
    ASSERT_EQ(em_proxy_incoming_to(g.cx[0], g.cy[0], 0, 0), 0);
    ASSERT_EQ(em_proxy_incoming_to(g.cy[0], g.cx[0], 0, 0), 0);
    flow fl[2];
    flow_init(&fl[0], g.x[0], g.y[0], 0, total, 0x5eed0001);
    flow_init(&fl[1], g.y[0], g.x[0], REVERSE_BASE, total, 0x5eed0002);
    double t0 = now_mono();
    pump(&g, fl, 2, &(pump_opts){.secs = 40});
    double secs = now_mono() - t0;
    flow_nothing_more(&fl[0]);
    flow_nothing_more(&fl[1]);
    ASSERT_EQ(em_get_proxied_bytes(g.cx[0]), total);
    ASSERT_EQ(em_get_proxied_bytes(g.cy[0]), total);
    ASSERT_EQ(rx(&g, 0)->data_calls, 0);
    ASSERT_EQ(ry(&g, 0)->data_calls, 0);
    em_conn_stats sx = stats_of(g.cx[0]), sy = stats_of(g.cy[0]);
    ASSERT_EQ(sx.bytes_in, total);
    ASSERT_EQ(sx.bytes_out, total);
    ASSERT_EQ(sy.bytes_in, total);
    ASSERT_EQ(sy.bytes_out, total);
    if (mode == SPLICE_OFF) {
        ASSERT_EQ(spl.calls, 0);
    } else { /* nothing queued but the pipes: every byte spliced, both ends */
        ASSERT_EQ(spl.fill_bytes, 2 * total);
        ASSERT_EQ(spl.drain_bytes, 2 * total);
    }
    printf("  %s: 2 x %llu MiB in %.2f s, %lu splice calls\n", label,
           (unsigned long long)(total / MiB), secs, spl.calls);
    flow_free(&fl[0]);
    flow_free(&fl[1]);
    rig_close(&g);
}

TEST_TIMEOUT(splice_32mib_random_chunks_both_ways, 60);
TEST(splice_32mib_random_chunks_both_ways) { both_ways(TCP4, 32 * MiB, SPLICE_ON, "tcp4"); }

TEST_TIMEOUT(splice_ipv6_both_ways, 40);
TEST(splice_ipv6_both_ways) { both_ways(TCP6, 8 * MiB, SPLICE_ON, "tcp6"); }

TEST_TIMEOUT(splice_unix_both_ways, 40);
TEST(splice_unix_both_ways) { both_ways(UNIX_SOCK, 8 * MiB, SPLICE_ON, "unix"); }

/* EM_SPLICE=0: the same streams, copied, and no splice call at all. */
TEST_TIMEOUT(splice_env_off_copies_both_ways, 40);
TEST(splice_env_off_copies_both_ways) { both_ways(TCP4, 8 * MiB, SPLICE_OFF, "EM_SPLICE=0"); }

/* ====================================================== 2. backpressure */

typedef struct held {
    size_t most;          /* the target's largest queue */
    uint64_t last_in;     /* the source's bytes_in at the last change */
    double last_change;
    unsigned quiet_turns; /* since then */
} held;

static void watch_target(rig *g, held *h)
{
    size_t q = em_get_outbound_data_size(g->cy[0]);
    if (q > h->most)
        h->most = q;
    uint64_t in = stats_of(g->cx[0]).bytes_in;
    if (in != h->last_in) {
        h->last_in = in;
        h->last_change = now_mono();
        h->quiet_turns = 0;
    } else {
        h->quiet_turns++;
    }
}

/* Turns and time without a read by the source: time alone is not enough,
 * since this thread may lose the CPU right after a turn in which the
 * source read (the kernel then makes room in X's socket). */
#define QUIET_TURNS 20
static bool source_held(const held *h, double secs)
{
    return h->quiet_turns >= QUIET_TURNS && now_mono() - h->last_change > secs;
}

/* Y stops reading: the source stops being read (X's socket fills: EAGAIN)
 * while the target's queue stays within bufsize and one pipe (and one read
 * of the copy path); once Y reads again everything arrives exactly. A
 * bufsize below the pipe's size holds on bufsize, one above it on the full
 * pipe. */
static void stalled_target(size_t bufsize)
{
    rig g;
    rig_open(&g, TCP4, 1, SPLICE_ON);
    ASSERT_EQ(em_proxy_incoming_to(g.cx[0], g.cy[0], bufsize, 0), 0);
    flow f;
    flow_init(&f, g.x[0], g.y[0], 0, (uint64_t)1 << 40, 0xbac4);
    f.stalled = true;
    held h = {.last_change = now_mono()};
    double deadline = now_mono() + 10;
    /* held: X's socket is full and the source has read nothing for 0.3 s */
    while (!(f.full && source_held(&h, 0.3))) {
        if (now_mono() > deadline)
            FAIL("the source was never held: X wrote %llu, the source read %llu, target "
                 "queue %zu", (unsigned long long)f.written, (unsigned long long)h.last_in,
                 em_get_outbound_data_size(g.cy[0]));
        flow_write(&f);
        ASSERT_GE(em_run_once(g.r, 0.01), 0);
        watch_target(&g, &h);
    }
    ASSERT_GT(h.most, 0);
    ASSERT_LE(h.most, bufsize + EM_PIPE_SIZE + EM_READ_BUF_SIZE);
    ASSERT_GT(in_pipes(), 0); /* bytes wait in the target's pipe */
    ASSERT(!em_is_paused(g.cx[0]));
    flow_write(&f);
    ASSERT(f.full); /* still refused */
    uint64_t sent = f.written;
    printf("  bufsize %zu: held with X at %llu bytes, target queue at most %zu\n", bufsize,
           (unsigned long long)sent, h.most);
    /* Y reads again; X writes 1 MiB more */
    f.stalled = false;
    f.to_write = f.to_read = sent + MiB;
    pump(&g, &f, 1, &(pump_opts){.secs = 20});
    flow_nothing_more(&f);
    ASSERT_EQ(em_get_proxied_bytes(g.cx[0]), f.to_write);
    ASSERT_EQ(rx(&g, 0)->data_calls, 0);
    ASSERT_EQ(spl.fill_bytes, f.to_write);
    ASSERT_EQ(stats_of(g.cx[0]).bytes_in, f.to_write);
    ASSERT_EQ(stats_of(g.cy[0]).bytes_out, f.to_write);
    flow_free(&f);
    rig_close(&g);
}

TEST(splice_stalled_target_bufsize_below_pipe) { stalled_target(64 * KiB); }
TEST(splice_stalled_target_bufsize_above_pipe) { stalled_target(MiB); }

/* ============================================================ 3. length */

typedef struct want_rest {
    int i;
    uint64_t n; /* bytes the source's receive_data must get */
} want_rest;

static bool source_got(rig *g, void *arg)
{
    want_rest *w = arg;
    return rx(g, w->i)->bytes_in >= w->n;
}

/* After exactly N bytes (a prime) the proxy completes once; Y gets those N,
 * the source's receive_data the rest, in order, and only after the
 * completion. */
static void length_case(enum splice_mode mode)
{
    rig g;
    rig_open(&g, TCP4, 1, mode);
    const uint64_t n = 1000003, rest = 333331;
    ASSERT_EQ(em_proxy_incoming_to(g.cx[0], g.cy[0], 0, n), 0);
    flow f;
    flow_init(&f, g.x[0], g.y[0], 0, n + rest, 0x1e6);
    f.to_read = n;
    want_rest w = {.i = 0, .n = rest};
    pump(&g, &f, 1, &(pump_opts){.done = source_got, .arg = &w});
    run_for(g.r, 0.1);
    flow_nothing_more(&f);
    rec *sx = rx(&g, 0);
    ASSERT_EQ(sx->bytes_in, rest);
    check_pattern(0, n, sx->buf, sx->len);
    ASSERT_EQ(completed_calls, 1);
    ASSERT_EQ(data_when_completed, 0);
    ASSERT_EQ(em_get_proxied_bytes(g.cx[0]), n);
    ASSERT_EQ(stats_of(g.cx[0]).bytes_in, n + rest);
    ASSERT_EQ(stats_of(g.cy[0]).bytes_out, n);
    ASSERT_EQ(spl.fill_bytes, mode == SPLICE_ON ? n : 0); /* splice stops at N itself */
    flow_free(&f);
    rig_close(&g);
}

TEST(splice_length_exact_then_receive_data) { length_case(SPLICE_ON); }
TEST(copy_length_exact_then_receive_data) { length_case(SPLICE_OFF); }

/* ======================================================== 4. stop */

/* em_stop_proxying while bytes wait in the target's pipe: they are still
 * the target's (counted as proxied), the later ones go to receive_data;
 * proxied + received == sent, each side byte-exact. */
TEST(splice_stop_mid_stream_loses_nothing)
{
    rig g;
    rig_open(&g, TCP4, 1, SPLICE_ON);
    small_target_buffers(&g, 0, 16 * KiB);
    ASSERT_EQ(em_proxy_incoming_to(g.cx[0], g.cy[0], 0, 0), 0);
    const uint64_t total = 6 * MiB;
    flow f;
    flow_init(&f, g.x[0], g.y[0], 0, 2 * MiB, 0x5709);
    pump(&g, &f, 1, NULL);
    f.to_write = total;
    f.stalled = true; /* until bytes wait in the target's pipe */
    double deadline = now_mono() + 5;
    while (!(in_pipes() > 0 && em_get_outbound_data_size(g.cy[0]) > 0)) {
        if (now_mono() > deadline)
            FAIL("no byte waits in the target's pipe");
        flow_write(&f);
        ASSERT_GE(em_run_once(g.r, 0.005), 0);
    }
    ASSERT_EQ(em_stop_proxying(g.cx[0]), 0);
    uint64_t p = em_get_proxied_bytes(g.cx[0]);
    ASSERT_GE(p, f.got + in_pipes()); /* what is in the pipe was proxied */
    f.stalled = false;
    f.to_read = p;
    want_rest w = {.i = 0, .n = total - p};
    pump(&g, &f, 1, &(pump_opts){.done = source_got, .arg = &w});
    run_for(g.r, 0.1);
    flow_nothing_more(&f);
    rec *sx = rx(&g, 0);
    ASSERT_EQ(em_get_proxied_bytes(g.cx[0]), p);
    ASSERT_EQ(p + sx->bytes_in, total);
    check_pattern(0, p, sx->buf, sx->len);
    ASSERT_EQ(completed_calls, 0);
    ASSERT_EQ(spl.fill_bytes, p);
    ASSERT_EQ(in_pipes(), 0);
    flow_free(&f);
    rig_close(&g);
}

/* ================================================= 5. target unbound */

enum goes { PEER_RESETS, CLOSED_NOW, CLOSED_AFTER_WRITING, DETACHED };

/* Y stops reading and X writes until the source is held: bytes wait in
 * the target's pipe. */
static void hold_with_bytes_in_pipe(rig *g, flow *f)
{
    f->stalled = true;
    f->to_write = (uint64_t)1 << 40;
    held h = {.last_change = now_mono()};
    double deadline = now_mono() + 10;
    while (!(f->full && source_held(&h, 0.2))) {
        if (now_mono() > deadline)
            FAIL("the source was never held");
        flow_write(f);
        ASSERT_GE(em_run_once(g->r, 0.005), 0);
        watch_target(g, &h);
    }
    f->to_write = f->written;
    ASSERT_GT(in_pipes(), 0);
}

/* Y reads, checking the pattern, until its EOF. */
static void y_until_eof(rig *g, flow *f)
{
    static char buf[64 * KiB];
    double deadline = now_mono() + 10;
    for (;;) {
        ssize_t n = read(g->y[0], buf, sizeof buf);
        if (n == 0)
            return;
        if (n > 0) {
            check_pattern(0, f->got, buf, (size_t)n);
            f->got += (uint64_t)n;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            FAIL("Y: %s", strerror(errno));
        }
        if (now_mono() > deadline)
            FAIL("Y got no EOF after %llu bytes", (unsigned long long)f->got);
        ASSERT_GE(em_run_once(g->r, 0.002), 0);
    }
}

/* The target goes while bytes wait in its pipe: proxy_target_unbound runs
 * once, the source's later bytes go to receive_data, continuing exactly
 * where the proxied ones ended, and the pipe is closed with the target
 * (not pooled: it held bytes) or, written out by a close after writing,
 * back in the pool. A detached target's socket is the caller's. */
static void target_goes(enum goes how)
{
    rig g;
    rig_open(&g, TCP4, 1, SPLICE_ON);
    small_target_buffers(&g, 0, 16 * KiB);
    ASSERT_EQ(em_proxy_incoming_to(g.cx[0], g.cy[0], 256 * KiB, 0), 0);
    flow f;
    flow_init(&f, g.x[0], g.y[0], 0, MiB, 0x70);
    pump(&g, &f, 1, NULL);
    hold_with_bytes_in_pipe(&g, &f);
    int fds = open_fd_count(), gone = 1; /* cy; the pipe's two counted now */
    int detached = -1;
    if (how == PEER_RESETS) {
        close(g.y[0]); /* unread bytes: a reset */
        g.y[0] = -1;
        gone += 3;
    } else if (how == DETACHED) {
        detached = em_detach(g.cy[0]);
        ASSERT_GE(detached, 0);
        gone += 1;
    } else {
        ASSERT_EQ(close_conn(g.cy[0], how == CLOSED_AFTER_WRITING), 0);
        gone += how == CLOSED_NOW ? 2 : 0;
    }
    uint64_t p = em_get_proxied_bytes(g.cx[0]);
    if (how == CLOSED_AFTER_WRITING) { /* every proxied byte, then EOF */
        f.stalled = false;
        y_until_eof(&g, &f);
        ASSERT_EQ(f.got, p);
    }
    ASSERT(run_until(g.r, &ry(&g, 0)->unbinds, 5));
    ASSERT_EQ(target_unbound_calls, 1);
    int why = ry(&g, 0)->reason;
    if (how == PEER_RESETS ? why != ECONNRESET && why != EPIPE : why != 0)
        FAIL("the target unbound with %d (%s)", why, em_strerror(why));
    ASSERT_EQ(open_fd_count(), fds - gone);
    ASSERT_EQ(em_get_proxied_bytes(g.cx[0]), p);
    /* X writes 1 MiB more; with what was buffered, all of it is the source's */
    f.to_write += MiB;
    f.rfd = -1;
    want_rest w = {.i = 0, .n = f.to_write - p};
    pump(&g, &f, 1, &(pump_opts){.done = source_got, .arg = &w});
    run_for(g.r, 0.1);
    rec *sx = rx(&g, 0);
    ASSERT_EQ(p + sx->bytes_in, f.to_write);
    check_pattern(0, p, sx->buf, sx->len);
    ASSERT_EQ(em_get_proxied_bytes(g.cx[0]), p);
    ASSERT_EQ(target_unbound_calls, 1);
    if (how == CLOSED_NOW) { /* a prefix of the proxied bytes, then EOF */
        y_until_eof(&g, &f);
        ASSERT_LE(f.got, p);
    }
    if (detached >= 0)
        close(detached);
    flow_free(&f);
    rig_close(&g);
}

TEST(splice_target_peer_resets_with_bytes_in_pipe) { target_goes(PEER_RESETS); }
TEST(splice_target_closed_with_bytes_in_pipe) { target_goes(CLOSED_NOW); }
TEST(splice_target_closed_after_writing_with_bytes_in_pipe) { target_goes(CLOSED_AFTER_WRITING); }
TEST(splice_target_detached_with_bytes_in_pipe) { target_goes(DETACHED); }

/* em_reactor_free while bytes wait in pipes, both ways of four pairs: every
 * pipe is closed, pooled or not. */
TEST(splice_reactor_freed_with_bytes_in_pipes)
{
    rig g;
    rig_open(&g, TCP4, 4, SPLICE_ON);
    flow f[4];
    for (int i = 0; i < 4; i++) {
        small_target_buffers(&g, i, 16 * KiB);
        ASSERT_EQ(em_proxy_incoming_to(g.cx[i], g.cy[i], 0, 0), 0);
        ASSERT_EQ(em_proxy_incoming_to(g.cy[i], g.cx[i], 0, 0), 0);
        flow_init(&f[i], g.x[i], g.y[i], 0, 8 * MiB, 1 + (uint64_t)i);
        f[i].stalled = true;
    }
    for (int k = 0; k < 300; k++) {
        for (int i = 0; i < 4; i++)
            flow_write(&f[i]);
        ASSERT_GE(em_run_once(g.r, 0.002), 0);
    }
    ASSERT_GE(in_pipes(), 4 * 64 * KiB);
    em_reactor_free(g.r); /* unbinds all, frees the server */
    ASSERT_EQ(rec_live, 0);
    for (int i = 0; i < 4; i++) {
        close(g.x[i]);
        close(g.y[i]);
        flow_free(&f[i]);
    }
    rec_free(&g.srv);
    ASSERT_NO_FD_LEAK(g.fd0);
}

/* ================================================ 6. splice <-> copy */

/* Copied bytes: proxied ones that did not go through a pipe. */
static uint64_t copied(uint64_t proxied) { return proxied - spl.fill_bytes; }

typedef struct toggler {
    uint64_t rng;
    double next;
    int pauses;
    size_t most;
} toggler;

/* Pauses and resumes the target at random: paused, it takes copies. */
static void toggle_target(rig *g, void *arg)
{
    toggler *t = arg;
    em_conn *to = g->cy[0];
    size_t q = em_get_outbound_data_size(to);
    if (q > t->most)
        t->most = q;
    if (now_mono() < t->next)
        return;
    if (em_is_paused(to)) {
        ASSERT_EQ(em_resume(to), 0);
    } else {
        ASSERT_EQ(em_pause(to), 0);
        t->pauses++;
    }
    t->next = now_mono() + 0.002 + 0.015 * (double)(rng_next(&t->rng) % 1000) / 1000;
}

TEST_TIMEOUT(splice_pause_resume_target_keeps_order, 40);
TEST(splice_pause_resume_target_keeps_order)
{
    rig g;
    rig_open(&g, TCP4, 1, SPLICE_ON);
    const size_t bufsize = 512 * KiB;
    ASSERT_EQ(em_proxy_incoming_to(g.cx[0], g.cy[0], bufsize, 0), 0);
    const uint64_t total = 12 * MiB;
    flow f;
    flow_init(&f, g.x[0], g.y[0], 0, total, 0x9a05e);
    toggler t = {.rng = 77};
    pump(&g, &f, 1, &(pump_opts){.turn = toggle_target, .arg = &t, .secs = 30});
    if (em_is_paused(g.cy[0]))
        ASSERT_EQ(em_resume(g.cy[0]), 0);
    flow_nothing_more(&f);
    ASSERT_EQ(em_get_proxied_bytes(g.cx[0]), total);
    ASSERT_GT(spl.fill_bytes, 0);
    ASSERT_GT(copied(total), 0);
    ASSERT_LE(t.most, bufsize + EM_PIPE_SIZE + EM_READ_BUF_SIZE);
    printf("  %d pauses: %llu bytes spliced, %llu copied\n", t.pauses,
           (unsigned long long)spl.fill_bytes, (unsigned long long)copied(total));
    flow_free(&f);
    rig_close(&g);
}

/* A reader that keeps everything (to compare with an expected interleaving). */
typedef struct sink {
    int fd;
    char *buf;
    size_t len, cap;
} sink;

static void sink_read(sink *s)
{
    for (;;) {
        if (s->cap - s->len < 64 * KiB) {
            s->cap = s->cap ? 2 * s->cap : MiB;
            s->buf = realloc(s->buf, s->cap);
            ASSERT_NOT_NULL(s->buf);
        }
        ssize_t n = read(s->fd, s->buf + s->len, s->cap - s->len);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0)
            FAIL("sink read: %zd (%s)", n, n < 0 ? strerror(errno) : "EOF");
        s->len += (size_t)n;
    }
}

#define MARKS 24

typedef struct marks {
    uint64_t rng;
    int n;
    uint64_t at[MARKS]; /* proxied bytes before mark i */
    size_t len[MARKS];
    char text[MARKS][4096];
    size_t total_len;
    sink y;
    double y_resume;
    char dir[64], path[128]; /* every other mark is sent as a file */
} marks;

static void send_mark(em_conn *c, marks *m, int i)
{
    if (i % 2 == 0) {
        ASSERT_EQ(em_send_data(c, m->text[i], m->len[i]), 0);
        return;
    }
    FILE *fp = fopen(m->path, "wb");
    ASSERT_NOT_NULL(fp);
    ASSERT_EQ(fwrite(m->text[i], 1, m->len[i], fp), m->len[i]);
    ASSERT_EQ(fclose(fp), 0);
    ASSERT_EQ(em_send_file_data(c, m->path), 0);
    unlink(m->path); /* the queue holds it open */
}

/* While the target waits on the kernel (bytes in its pipe), it sends bytes
 * of its own, from memory or a file: they go behind the pipe, and the
 * source's next reads are copied behind them until the queue drains. Y
 * pauses now and then so that the target waits. */
static void send_marks(rig *g, void *arg)
{
    marks *m = arg;
    uint64_t p = em_get_proxied_bytes(g->cx[0]);
    if (now_mono() >= m->y_resume) {
        sink_read(&m->y);
        if (rng_next(&m->rng) % 16 == 0)
            m->y_resume = now_mono() + 0.01;
    }
    if (m->n == MARKS || p < (uint64_t)(m->n + 1) * 128 * KiB ||
        em_get_outbound_data_size(g->cy[0]) == 0)
        return;
    int i = m->n++;
    m->at[i] = p;
    m->len[i] = rnd_upto(&m->rng, sizeof m->text[i]);
    for (size_t j = 0; j < m->len[i]; j++)
        m->text[i][j] = (char)('a' + (i + j) % 26);
    m->total_len += m->len[i];
    send_mark(g->cy[0], m, i);
}

/* Y's bytes: the pattern, with mark i inserted after at[i] of its bytes. */
static void check_marks(const marks *m, uint64_t total)
{
    ASSERT_EQ(m->y.len, total + m->total_len);
    size_t off = 0;
    uint64_t pat = 0;
    for (int i = 0; i <= m->n; i++) {
        uint64_t upto = i < m->n ? m->at[i] : total;
        check_pattern(0, pat, m->y.buf + off, (size_t)(upto - pat));
        off += (size_t)(upto - pat);
        pat = upto;
        if (i < m->n) {
            if (memcmp(m->y.buf + off, m->text[i], m->len[i]) != 0)
                FAIL("mark %d (after %llu pattern bytes) is not where it was sent", i,
                     (unsigned long long)m->at[i]);
            off += m->len[i];
        }
    }
}

static bool marks_all_sent(rig *g, void *arg)
{
    (void)g;
    marks *m = arg;
    return m->n == MARKS;
}

/* Y reads until it has `want` bytes and the target's queue is empty. */
static void drain_into(rig *g, marks *m, uint64_t want)
{
    double deadline = now_mono() + 10;
    while (m->y.len < want || em_get_outbound_data_size(g->cy[0])) {
        if (now_mono() > deadline)
            FAIL("Y has %zu of %llu bytes, the target's queue %zu", m->y.len,
                 (unsigned long long)want, em_get_outbound_data_size(g->cy[0]));
        ASSERT_GE(em_run_once(g->r, 0.002), 0);
        sink_read(&m->y);
    }
}

TEST_TIMEOUT(splice_target_own_bytes_keep_order, 40);
TEST(splice_target_own_bytes_keep_order)
{
    rig g;
    rig_open(&g, TCP4, 1, SPLICE_ON);
    small_target_buffers(&g, 0, 16 * KiB); /* the target waits on the kernel often */
    ASSERT_EQ(em_proxy_incoming_to(g.cx[0], g.cy[0], 0, 0), 0);
    const uint64_t total = 8 * MiB, marked = 6 * MiB;
    flow f;
    flow_init(&f, g.x[0], -1, 0, marked, 0x0b1);
    marks *m = calloc(1, sizeof *m);
    ASSERT_NOT_NULL(m);
    m->rng = 5;
    m->y.fd = g.y[0];
    make_tmpdir(m->dir, sizeof m->dir);
    snprintf(m->path, sizeof m->path, "%s/mark", m->dir);
    pump(&g, &f, 1, &(pump_opts){.turn = send_marks, .done = marks_all_sent, .arg = m,
                                  .secs = 30});
    uint64_t spliced_marked = spl.fill_bytes, copied_marked = copied(marked);
    ASSERT_GT(copied_marked, 0);
    /* once every mark is written, the rest is spliced, all of it: behind
     * the target's own bytes too (the queue keeps the order) */
    drain_into(&g, m, marked + m->total_len);
    uint64_t copied_before = copied(marked);
    f.to_write = total;
    pump(&g, &f, 1, &(pump_opts){.turn = send_marks, .arg = m});
    drain_into(&g, m, total + m->total_len);
    check_marks(m, total);
    ASSERT_EQ(copied(total), copied_before);
    ASSERT_EQ(em_get_proxied_bytes(g.cx[0]), total);
    ASSERT_EQ(stats_of(g.cy[0]).bytes_out, total + m->total_len);
    ASSERT_GT(spliced_marked, 0);
    printf("  %d marks: %llu bytes spliced, %llu copied, then %llu spliced\n", m->n,
           (unsigned long long)spliced_marked, (unsigned long long)copied_marked,
           (unsigned long long)(total - marked));
    rm_tmpdir(m->dir);
    free(m->y.buf);
    free(m);
    flow_free(&f);
    rig_close(&g);
}

/* ---------------------------------------------------------------- TLS */

/* A libem TLS server and a libem TLS client of it on the rig's reactor:
 * srv.pool[0] is the server's end, cli the client's. */
typedef struct tls_end {
    em_server *s;
    rec srv, cli;
    em_tls_opts so, co;
} tls_end;

static bool tls_end_ready(void *arg)
{
    tls_end *t = arg;
    return t->cli.handshakes && t->srv.pool_used && t->srv.pool[0].handshakes;
}

static bool tls_end_unbound(void *arg)
{
    tls_end *t = arg;
    return t->cli.unbinds && t->srv.pool[0].unbinds;
}

static void tls_end_open(rig *g, tls_end *t)
{
    memset(t, 0, sizeof *t);
    t->so = tls_server_opts("server.pem", NULL);
    t->co = tls_client_opts();
    t->srv = (rec){.tag = 7, .tls = &t->so, .store = true};
    t->cli = (rec){.tag = 8, .tls = &t->co, .store = true};
    rec_pool_new(&t->srv, 1);
    t->s = em_start_server(g->r, "127.0.0.1", 0, &proxy_handler, &t->srv);
    ASSERT_NOT_NULL(t->s);
    ASSERT_NOT_NULL(em_connect(g->r, "127.0.0.1", em_server_port(t->s), &proxy_handler, &t->cli));
    ASSERT_EQ(t->cli.tls_rc, 0);
    ASSERT(run_until_pred(g->r, tls_end_ready, t, 10));
}

static void tls_end_close(rig *g, tls_end *t)
{
    if (t->cli.conn)
        ASSERT_EQ(close_conn(t->cli.conn, false), 0);
    ASSERT(run_until_pred(g->r, tls_end_unbound, t, 10));
    ASSERT_EQ(em_stop_server(t->s), 0);
    rec_free(&t->srv);
    rec_free(&t->cli);
}

typedef struct retarget {
    tls_end *t;
    int phase;           /* 0: to cy, 1: to the TLS client, 2: to cy again */
    uint64_t p[3];       /* bytes proxied in each phase */
    uint64_t spliced[3]; /* bytes spliced into pipes in each phase */
    uint64_t fill0;      /* spl.fill_bytes at the phase's start */
    sink y;
} retarget;

/* One re-targeting (em_proxy_incoming_to again) every 1.5 MiB. */
static void switch_targets(rig *g, void *arg)
{
    retarget *rt = arg;
    sink_read(&rt->y);
    uint64_t p = em_get_proxied_bytes(g->cx[0]);
    if (rt->phase == 2 || p < 3 * MiB / 2)
        return;
    rt->p[rt->phase] = p;
    rt->spliced[rt->phase] = spl.fill_bytes - rt->fill0;
    rt->fill0 = spl.fill_bytes;
    rt->phase++;
    em_conn *to = rt->phase == 1 ? rt->t->cli.conn : g->cy[0];
    ASSERT_EQ(em_proxy_incoming_to(g->cx[0], to, 0, 0), 0);
}

static bool retarget_done(rig *g, void *arg)
{
    (void)g;
    return ((retarget *)arg)->phase == 2;
}

/* One source, its target changed mid-stream: plain (spliced), a TLS
 * connection (copied: never spliced), plain again (spliced). Each target
 * gets exactly its part of the stream, in order. */
TEST_TIMEOUT(splice_then_tls_target_then_splice, 40);
TEST(splice_then_tls_target_then_splice)
{
    rig g;
    rig_open(&g, TCP4, 1, SPLICE_ON);
    tls_end t;
    tls_end_open(&g, &t);
    ASSERT_EQ(em_proxy_incoming_to(g.cx[0], g.cy[0], 0, 0), 0);
    const uint64_t total = 6 * MiB;
    flow f;
    flow_init(&f, g.x[0], -1, 0, total, 0x7150);
    retarget *rt = calloc(1, sizeof *rt);
    ASSERT_NOT_NULL(rt);
    rt->t = &t;
    rt->y.fd = g.y[0];
    pump(&g, &f, 1, &(pump_opts){.turn = switch_targets, .done = retarget_done, .arg = rt,
                                  .secs = 30});
    rec *tls_sink = &t.srv.pool[0];
    double deadline = now_mono() + 10;
    for (;;) {
        rt->p[2] = em_get_proxied_bytes(g.cx[0]);
        if (rt->p[0] + rt->p[1] + rt->p[2] == total && rt->y.len == rt->p[0] + rt->p[2] &&
            tls_sink->len == rt->p[1])
            break;
        if (now_mono() > deadline)
            FAIL("stuck: proxied %llu + %llu + %llu of %llu; Y has %zu, the TLS end %zu",
                 (unsigned long long)rt->p[0], (unsigned long long)rt->p[1],
                 (unsigned long long)rt->p[2], (unsigned long long)total, rt->y.len,
                 tls_sink->len);
        ASSERT_GE(em_run_once(g.r, 0.002), 0);
        sink_read(&rt->y);
    }
    rt->spliced[2] = spl.fill_bytes - rt->fill0;
    check_pattern(0, 0, rt->y.buf, (size_t)rt->p[0]);
    check_pattern(0, rt->p[0], tls_sink->buf, tls_sink->len);
    check_pattern(0, rt->p[0] + rt->p[1], rt->y.buf + rt->p[0], (size_t)rt->p[2]);
    ASSERT_EQ(rt->spliced[0], rt->p[0]);
    ASSERT_EQ(rt->spliced[1], 0);
    ASSERT_EQ(rt->spliced[2], rt->p[2]);
    ASSERT_EQ(rx(&g, 0)->data_calls, 0);
    free(rt->y.buf);
    free(rt);
    flow_free(&f);
    tls_end_close(&g, &t);
    rig_close(&g);
}

/* A TLS source proxied into a plain target: copied, never spliced. */
static void tls_source_into_plain(rig *g, tls_end *t, uint64_t total)
{
    em_conn *src = t->srv.pool[0].conn, *cli = t->cli.conn;
    ASSERT_EQ(em_proxy_incoming_to(src, g->cy[0], 0, 0), 0);
    flow f;
    flow_init(&f, -1, g->y[0], 0, total, 0x75);
    double deadline = now_mono() + 20;
    while (f.got < total) {
        if (now_mono() > deadline)
            FAIL("stuck: Y read %llu of %llu", (unsigned long long)f.got,
                 (unsigned long long)total);
        while (f.written < total && em_get_outbound_data_size(cli) < 256 * KiB) {
            size_t k = rnd_upto(&f.rng, f.max_write);
            if (k > total - f.written)
                k = (size_t)(total - f.written);
            ASSERT_EQ(em_send_data(cli, flow_bytes(&f, k), k), 0);
            f.written += k;
        }
        ASSERT_GE(em_run_once(g->r, 0.002), 0);
        flow_read(&f);
    }
    ASSERT_EQ(em_get_proxied_bytes(src), total);
    ASSERT_EQ(t->srv.pool[0].data_calls, 0);
    ASSERT_EQ(em_stop_proxying(src), 0); /* its receive_data is a sink again */
    flow_free(&f);
}

/* A plain source proxied into a TLS target: copied, never spliced. */
static void plain_into_tls_target(rig *g, tls_end *t, uint64_t total)
{
    ASSERT_EQ(em_proxy_incoming_to(g->cx[0], t->cli.conn, 0, 0), 0);
    flow f;
    flow_init(&f, g->x[0], -1, 0, total, 0x76);
    rec *tls_sink = &t->srv.pool[0];
    double deadline = now_mono() + 20;
    while (tls_sink->len < total) {
        if (now_mono() > deadline)
            FAIL("stuck: the TLS end has %zu of %llu", tls_sink->len,
                 (unsigned long long)total);
        flow_write(&f);
        ASSERT_GE(em_run_once(g->r, 0.002), 0);
    }
    check_pattern(0, 0, tls_sink->buf, tls_sink->len);
    ASSERT_EQ(em_get_proxied_bytes(g->cx[0]), total);
    flow_free(&f);
}

TEST_TIMEOUT(tls_on_either_side_never_splices, 40);
TEST(tls_on_either_side_never_splices)
{
    rig g;
    rig_open(&g, TCP4, 1, SPLICE_ON);
    tls_end t;
    tls_end_open(&g, &t);
    tls_source_into_plain(&g, &t, 2 * MiB);
    plain_into_tls_target(&g, &t, 2 * MiB);
    tls_end_close(&g, &t);
    rig_close(&g);
    ASSERT_EQ(spl.calls, 0);
}

/* ========================================================= 7. idle pairs */

typedef struct burst {
    int fds_base; /* with every pair open, nothing proxied */
    int peak;     /* descriptors above it during the burst */
} burst;

static void watch_fds(rig *g, void *arg)
{
    (void)g;
    burst *b = arg;
    int over = open_fd_count() - b->fds_base;
    if (over > b->peak)
        b->peak = over;
}

/* 100 pairs, a burst through each with the targets' sockets small enough
 * that many pipes wait at once; once every pair is idle, at most the
 * pool's pipes are left (EM_PIPE_POOL, two descriptors each), and none
 * after em_reactor_free. */
TEST_TIMEOUT(splice_idle_pairs_keep_at_most_the_pool, 40);
TEST(splice_idle_pairs_keep_at_most_the_pool)
{
    raise_nofile();
    rig g;
    rig_open(&g, TCP4, MAX_PAIRS, SPLICE_ON);
    for (int i = 0; i < g.n; i++)
        small_target_buffers(&g, i, 4 * KiB);
    burst b = {.fds_base = open_fd_count()};
    for (int i = 0; i < g.n; i++)
        ASSERT_EQ(em_proxy_incoming_to(g.cx[i], g.cy[i], 0, 0), 0);
    const uint64_t each = 192 * KiB;
    flow *fl = calloc(MAX_PAIRS, sizeof *fl);
    ASSERT_NOT_NULL(fl);
    for (int i = 0; i < g.n; i++) {
        flow_init(&fl[i], g.x[i], g.y[i], (uint64_t)i << 32, each, 0x1d1e + (uint64_t)i);
        fl[i].stalled = true; /* the burst first, then the reads */
    }
    for (int k = 0; k < 200; k++) {
        for (int i = 0; i < g.n; i++)
            flow_write(&fl[i]);
        ASSERT_GE(em_run_once(g.r, 0.002), 0);
        watch_fds(&g, &b);
    }
    for (int i = 0; i < g.n; i++)
        fl[i].stalled = false;
    pump(&g, fl, g.n, &(pump_opts){.turn = watch_fds, .arg = &b, .secs = 30});
    run_for(g.r, 0.2);
    int left = open_fd_count() - b.fds_base;
    printf("  %d descriptors above the base during the burst, %d once idle\n", b.peak, left);
    ASSERT_GT(b.peak, 2 * EM_PIPE_POOL); /* more pipes than the pool keeps were busy */
    ASSERT_LE(left, 2 * EM_PIPE_POOL);
    for (int i = 0; i < g.n; i++) {
        ASSERT_EQ(em_get_proxied_bytes(g.cx[i]), each);
        ASSERT_EQ(stats_of(g.cx[i]).bytes_in, each);
        ASSERT_EQ(stats_of(g.cy[i]).bytes_out, each);
        flow_nothing_more(&fl[i]);
        flow_free(&fl[i]);
    }
    ASSERT_EQ(spl.fill_bytes, each * (uint64_t)g.n);
    free(fl);
    rig_close(&g); /* the pool's pipes too */
}

/* ======================================================== 8. strace */

/* Probes run by splice_syscalls_match_strace under strace. Each prints its
 * own count of splice calls. The plain one splices unless EM_SPLICE=0 is in
 * its environment. */
TEST(strace_probe_plain)
{
    rig g;
    const char *env = getenv("EM_SPLICE");
    bool off = env && strcmp(env, "0") == 0;
    rig_open(&g, TCP4, 1, SPLICE_AS_ENV);
    ASSERT_EQ(em_proxy_incoming_to(g.cx[0], g.cy[0], 0, 0), 0);
    flow f;
    flow_init(&f, g.x[0], g.y[0], 0, 2 * MiB, 0x9b0);
    pump(&g, &f, 1, NULL);
    if (off)
        ASSERT_EQ(spl.calls, 0);
    else
        ASSERT_EQ(spl.fill_bytes, 2 * MiB);
    flow_free(&f);
    rig_close(&g); /* the EOF of X's close is read by a splice too */
    printf("splice calls: %lu\n", spl.calls);
}

TEST(strace_probe_tls)
{
    rig g;
    rig_open(&g, TCP4, 1, SPLICE_ON);
    tls_end t;
    tls_end_open(&g, &t);
    tls_source_into_plain(&g, &t, MiB);
    plain_into_tls_target(&g, &t, MiB);
    tls_end_close(&g, &t);
    rig_close(&g);
    ASSERT_EQ(spl.calls, 0);
    printf("splice calls: %lu\n", spl.calls);
}

/* The number in "splice calls: N" in the probe's output; -1 if none. */
static long probe_count(const char *out)
{
    char *s = tls_read_file(out);
    ASSERT_NOT_NULL(s);
    const char *p = strstr(s, "splice calls: ");
    long n = p ? strtol(p + 14, NULL, 10) : -1;
    if (!strstr(s, "1 passed, 0 failed"))
        FAIL("the traced probe did not pass: %s", s);
    free(s);
    return n;
}

/* The calls column of strace -c's splice line; 0 when there is none. */
static long strace_count(const char *summary)
{
    FILE *fp = fopen(summary, "r");
    ASSERT_NOT_NULL(fp);
    char line[512];
    long calls = 0;
    while (fgets(line, sizeof line, fp)) {
        char *tok[8];
        int n = 0;
        for (char *t = strtok(line, " \t\n"); t && n < 8; t = strtok(NULL, " \t\n"))
            tok[n++] = t;
        if (n >= 5 && strcmp(tok[n - 1], "splice") == 0)
            calls = strtol(tok[3], NULL, 10);
    }
    fclose(fp);
    return calls;
}

static void exec_traced(const char *self, const char *filter, const char *splice_env,
                        const char *summary, const char *out)
{
    if (splice_env)
        setenv("EM_SPLICE", splice_env, 1);
    else
        unsetenv("EM_SPLICE");
    /* LeakSanitizer cannot stop a process strace traces: the leak checks
     * are the untraced runs' */
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
        _exit(126);
    execlp("strace", "strace", "-f", "-qq", "-c", "-e", "trace=splice", "-o", summary, self,
           filter, (char *)NULL);
    _exit(127);
}

/* The kernel's count of splice calls (strace -c) in a run of the probe,
 * which must equal the probe's own. */
static long traced_splices(const char *dir, const char *filter, const char *splice_env)
{
    char self[4096], summary[256], out[256];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ASSERT_GT(n, 0);
    self[n] = '\0';
    snprintf(summary, sizeof summary, "%s/strace.txt", dir);
    snprintf(out, sizeof out, "%s/out.txt", dir);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0)
        exec_traced(self, filter, splice_env, summary, out);
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("strace %s %s exited with status %d (127: no strace; scripts/install-deps.sh)",
             self, filter, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    long kernel = strace_count(summary), own = probe_count(out);
    if (kernel != own)
        FAIL("%s (EM_SPLICE=%s): strace saw %ld splice calls, the wrapper %ld", filter,
             splice_env ? splice_env : "unset", kernel, own);
    unlink(summary);
    unlink(out);
    return kernel;
}

TEST_TIMEOUT(splice_syscalls_match_strace, 90);
TEST(splice_syscalls_match_strace)
{
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    long plain = traced_splices(dir, "strace_probe_plain", NULL);
    long off = traced_splices(dir, "strace_probe_plain", "0");
    long tls = traced_splices(dir, "strace_probe_tls", NULL);
    printf("  splice calls seen by strace: plain %ld, EM_SPLICE=0 %ld, TLS %ld\n", plain, off,
           tls);
    ASSERT_GT(plain, 0);
    ASSERT_EQ(off, 0);
    ASSERT_EQ(tls, 0);
    rm_tmpdir(dir);
}
