/* Sending received bytes: em_send_data of the very bytes receive_data was
 * given (echo, proxy, broadcast).
 *
 * Those bytes live in the reactor's one read buffer. libem queues them
 * without a copy and writes them right after receive_data returns, copying
 * only what the kernel did not take; a connection whose queue was empty
 * keeps them as a span of the buffer that later contiguous sends extend, and
 * any other send turns the span into a queued chunk first. At most 16
 * connections per receive_data borrow; the rest get copies. None of that is
 * visible in the API but the bytes the peers read, so every case compares
 * them, byte for byte, with what the handler sent.
 *
 * Set-up: a libem server; raw client sockets are the peers, peer[i] talking
 * to the server's pool[i] (accepted in that order). Every peer writes the
 * pattern_byte() stream (rec_handler's check_pattern verifies each byte on
 * arrival). Each em_send_data of the handler is recorded in a model, "want",
 * of what the other end must read; the peer must read exactly that. Cases
 * with small socket buffers make the kernel refuse part of the writes, so
 * that the copy of what it did not take is exercised too. */
#include "harness.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXP 24        /* peers (and pool connections) per case */
#define SMALL 4096     /* SO_SNDBUF / SO_RCVBUF that force partial writes */
#define READ_BUF 65536 /* libem's read size: a full read */
/* A pump that does not finish in this long fails, saying where it stuck,
 * before the harness's 20 s alarm (each case takes well under 1 s). */
#define PUMP_S 8

/* ------------------------------------------------------- growing buffer */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sbuf_add(struct sbuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        ASSERT_NOT_NULL(b->p);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void sbuf_free(struct sbuf *b)
{
    free(b->p);
    *b = (struct sbuf){0};
}

/* got must equal want; reports the first differing byte. */
static void assert_bytes(const char *what, const struct sbuf *got, const char *want,
                         size_t want_len)
{
    size_t n = got->len < want_len ? got->len : want_len;
    if (n && memcmp(got->p, want, n) != 0)
        for (size_t i = 0; i < n; i++)
            if (got->p[i] != want[i])
                FAIL("%s: byte %zu of %zu is %u, expected %u", what, i, want_len,
                     (unsigned char)got->p[i], (unsigned char)want[i]);
    if (got->len != want_len)
        FAIL("%s: %zu bytes, expected %zu", what, got->len, want_len);
}

/* The first n bytes of the pattern stream. */
static char *pat;
static size_t pat_len;

static const char *pattern(size_t n)
{
    if (n > pat_len) {
        pat = realloc(pat, n);
        ASSERT_NOT_NULL(pat);
        for (size_t i = pat_len; i < n; i++)
            pat[i] = (char)pattern_byte(i);
        pat_len = n;
    }
    return pat;
}

/* ------------------------------------------------------------- the net */

struct peer {
    int fd;
    size_t out_len, out_off; /* pattern bytes to write, written */
    rec *end;                /* its libem connection (NULL: not ours) */
    struct sbuf *want;       /* what it must read */
    struct sbuf in;          /* what it read */
    bool want_eof, eof, reset, may_reset;
    int werr;
};

typedef void (*hook_fn)(em_conn *c, rec *x, const char *d, size_t n);

static struct {
    em_reactor *r;
    em_server *s;
    rec srv; /* pool[i]: the connection of peer[i] */
    struct peer peer[MAXP];
    int npeers;
    struct sbuf want[MAXP]; /* per pool connection */
    bool small_bufs;
    hook_fn hook;
    size_t max_chunk; /* largest receive_data */
    int fd0;
} N;

static em_conn *pool_conn(int i) { return N.srv.pool[i].conn; }

/* Sends and records what the other end must read. */
static void send_model(em_conn *c, const void *p, size_t n)
{
    rec *x = em_conn_user(c);
    ASSERT_NOT_NULL(x->ctx);
    ASSERT_EQ(em_send_data(c, p, n), 0);
    sbuf_add(x->ctx, p, n);
}

static void set_small_sndbuf(em_conn *c)
{
    int v = SMALL;
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_SNDBUF, &v, sizeof v), 0);
}

static void srv_post_init(em_conn *c, rec *x)
{
    x->ctx = &N.want[x - N.srv.pool];
    if (N.small_bufs)
        set_small_sndbuf(c);
}

static void srv_data(em_conn *c, rec *x, const char *d, size_t n)
{
    if (n > N.max_chunk)
        N.max_chunk = n;
    N.hook(c, x, d, n);
}

static void net_open(hook_fn hook, bool small_bufs)
{
    N.fd0 = open_fd_count();
    N.r = new_reactor();
    N.hook = hook;
    N.small_bufs = small_bufs;
    N.srv.tag = 1;
    N.srv.check_pattern = true;
    N.srv.on_post_init = srv_post_init;
    N.srv.on_data = srv_data;
    rec_pool_new(&N.srv, MAXP);
    N.s = em_start_server(N.r, "127.0.0.1", 0, &rec_handler, &N.srv);
    ASSERT_NOT_NULL(N.s);
}

/* A raw client socket (small receive buffer with small_bufs: set before
 * connect, so that the window is small from the start). */
static int raw_client(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    if (N.small_bufs) {
        int v = SMALL;
        ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v), 0);
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    set_nonblock(fd);
    return fd;
}

static struct peer *peer_add(int fd, rec *end, struct sbuf *want, size_t out_len)
{
    ASSERT_LT(N.npeers, MAXP);
    struct peer *p = &N.peer[N.npeers++];
    *p = (struct peer){.fd = fd, .end = end, .want = want, .out_len = out_len};
    return p;
}

static bool pool_has(void *n) { return N.srv.pool_used >= (int)(intptr_t)n; }

/* A peer of the server; it becomes pool[i] for the i-th peer. */
static struct peer *peer_connect(size_t out_len)
{
    int i = N.npeers;
    int fd = raw_client(em_server_port(N.s));
    ASSERT(run_until_pred(N.r, pool_has, (void *)(intptr_t)(i + 1), 5));
    return peer_add(fd, &N.srv.pool[i], &N.want[i], out_len);
}

/* Writes what the peer still has to write, reads what is there. */
static void peer_io(struct peer *p)
{
    const char *src = pattern(p->out_len);
    while (p->out_off < p->out_len && !p->werr) {
        ssize_t w = send(p->fd, src + p->out_off, p->out_len - p->out_off, MSG_NOSIGNAL);
        if (w > 0)
            p->out_off += (size_t)w;
        else if (errno == EAGAIN)
            break;
        else if (errno != EINTR)
            p->werr = errno; /* EPIPE, ECONNRESET: the connection is gone */
    }
    char buf[65536];
    while (!p->eof) {
        ssize_t n = read(p->fd, buf, sizeof buf);
        if (n > 0) {
            sbuf_add(&p->in, buf, (size_t)n);
        } else if (n == 0) {
            p->eof = true;
        } else if (errno == ECONNRESET) {
            p->eof = p->reset = true;
        } else {
            ASSERT(errno == EAGAIN || errno == EINTR);
            break;
        }
    }
    if ((p->reset || p->werr) && !p->may_reset)
        FAIL("peer %d: reset (werr %d) after reading %zu", (int)(p - N.peer), p->werr,
             p->in.len);
}

static bool peer_done(const struct peer *p)
{
    return p->out_off == p->out_len && (!p->end || p->end->bytes_in == p->out_len) &&
           p->in.len >= p->want->len && (!p->want_eof || p->eof);
}

static bool all_done(void *arg)
{
    (void)arg;
    for (int i = 0; i < N.npeers; i++)
        if (!peer_done(&N.peer[i]))
            return false;
    return true;
}

/* Runs the reactor and every peer's I/O until pred holds (fails after
 * timeout_s with the state of the first unfinished peer), then a little
 * longer, so that a byte too many would show. */
static void pump_until(bool (*pred)(void *), void *arg, double timeout_s)
{
    double deadline = now_mono() + timeout_s;
    for (;;) {
        for (int i = 0; i < N.npeers; i++)
            peer_io(&N.peer[i]);
        if (pred(arg))
            break;
        if (now_mono() > deadline) {
            for (int i = 0; i < N.npeers; i++) {
                struct peer *p = &N.peer[i];
                if (!peer_done(p))
                    FAIL("stuck: peer %d wrote %zu/%zu, its end read %lld, it read %zu/%zu, "
                         "eof %d/%d",
                         i, p->out_off, p->out_len, p->end ? (long long)p->end->bytes_in : -1,
                         p->in.len, p->want->len, p->eof, p->want_eof);
            }
            FAIL("stuck: condition not met");
        }
        ASSERT_GE(em_run_once(N.r, 0.005), 0);
    }
    double end = now_mono() + 0.02;
    while (now_mono() < end) {
        ASSERT_GE(em_run_once(N.r, 0.005), 0);
        for (int i = 0; i < N.npeers; i++)
            peer_io(&N.peer[i]);
    }
}

static void pump(double timeout_s) { pump_until(all_done, NULL, timeout_s); }

/* Peer i read exactly what its end was made to send. */
static void check_peer(int i)
{
    char what[32];
    snprintf(what, sizeof what, "peer %d", i);
    assert_bytes(what, &N.peer[i].in, N.peer[i].want->p, N.peer[i].want->len);
}

/* Bytes written to the kernel by pool[i] are the bytes it was made to send. */
static void check_bytes_out(int i)
{
    em_conn_stats st;
    ASSERT_EQ(em_get_stats(pool_conn(i), &st), 0);
    ASSERT_EQ(st.bytes_out, N.want[i].len);
    ASSERT_EQ(em_get_outbound_data_size(pool_conn(i)), 0);
}

static bool none_live(void *arg)
{
    (void)arg;
    return rec_live == 0;
}

static void net_close(void)
{
    for (int i = 0; i < N.npeers; i++) {
        close(N.peer[i].fd);
        sbuf_free(&N.peer[i].in);
    }
    ASSERT(run_until_pred(N.r, none_live, NULL, PUMP_S));
    ASSERT_EQ(em_stop_server(N.s), 0);
    REACTOR_FREE_CHECKED(N.r);
    rec_free(&N.srv);
    for (int i = 0; i < MAXP; i++)
        sbuf_free(&N.want[i]);
    free(pat);
    pat = NULL;
    pat_len = 0;
    ASSERT_NO_FD_LEAK(N.fd0);
}

/* ------------------------------------------------- 1. contiguous halves */

static void echo_halves(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    send_model(c, d, n / 2);
    send_model(c, d + n / 2, n - n / 2);
}

/* One message at a time, of sizes around the edges (1 byte: an empty first
 * half; 64 KiB +- 1: one full read and a bit). */
TEST(echo_halves_message_sizes)
{
    static const size_t sizes[] = {1, 2, 3, 7, 100, 1448, 4096, 65535, 65536, 65537, 300000};
    net_open(echo_halves, false);
    struct peer *p = peer_connect(0);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        p->out_len += sizes[k];
        pump(PUMP_S);
        assert_bytes("echo", &p->in, pattern(p->out_len), p->out_len);
    }
    check_peer(0);
    check_bytes_out(0);
    net_close();
}

/* Large transfer: full 64 KiB reads; with default buffers the kernel takes
 * most writes whole, with small ones it refuses part of nearly every write
 * and the rest must be copied before the next read. */
static void echo_halves_large(bool small_bufs)
{
    const size_t total = 8u << 20;
    net_open(echo_halves, small_bufs);
    peer_connect(total);
    pump(PUMP_S);
    ASSERT_EQ(N.max_chunk, READ_BUF);
    assert_bytes("model", &N.want[0], pattern(total), total);
    check_peer(0);
    check_bytes_out(0);
    if (small_bufs)
        ASSERT_GT(N.srv.pool[0].drained, 0); /* some write waited: copies happened */
    net_close();
}

TEST(echo_halves_8mib) { echo_halves_large(false); }

TEST(echo_halves_8mib_small_buffers) { echo_halves_large(true); }

/* Many contiguous pieces: the span grows piece by piece. */
static void echo_pieces(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    for (size_t off = 0; off < n; off += 1000)
        send_model(c, d + off, n - off < 1000 ? n - off : 1000);
}

TEST(echo_many_contiguous_pieces)
{
    const size_t total = 4u << 20;
    net_open(echo_pieces, true);
    peer_connect(total);
    pump(PUMP_S);
    assert_bytes("model", &N.want[0], pattern(total), total);
    check_peer(0);
    check_bytes_out(0);
    net_close();
}

/* ------------------------------------------------------- 2. echo twice */

static size_t chunks; /* receive_data calls of the source */

static void echo_twice(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    chunks++;
    send_model(c, d, n);
    send_model(c, d, n);
}

/* Every chunk doubled, in order; the expected stream is rebuilt here from
 * the input pattern and the chunk sizes, independently of the handler. */
static size_t *chunk_sizes;
static size_t nchunk_sizes;

static void echo_twice_noting(em_conn *c, rec *x, const char *d, size_t n)
{
    chunk_sizes = realloc(chunk_sizes, (nchunk_sizes + 1) * sizeof *chunk_sizes);
    ASSERT_NOT_NULL(chunk_sizes);
    chunk_sizes[nchunk_sizes++] = n;
    echo_twice(c, x, d, n);
}

TEST(echo_twice_doubles_every_chunk)
{
    const size_t total = 4u << 20;
    net_open(echo_twice_noting, true);
    peer_connect(total);
    pump(PUMP_S);
    struct sbuf expect = {0};
    const char *src = pattern(total);
    size_t off = 0;
    for (size_t k = 0; k < nchunk_sizes; k++) {
        sbuf_add(&expect, src + off, chunk_sizes[k]);
        sbuf_add(&expect, src + off, chunk_sizes[k]);
        off += chunk_sizes[k];
    }
    ASSERT_EQ(off, total);
    ASSERT_GT(nchunk_sizes, 1);
    assert_bytes("doubled", &N.peer[0].in, expect.p, expect.len);
    check_peer(0);
    check_bytes_out(0);
    sbuf_free(&expect);
    free(chunk_sizes);
    net_close();
}

/* ------------------------------------- 3. bytes from elsewhere in between */

static void echo_framed(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    chunks++;
    send_model(c, "<", 1);
    send_model(c, d, n);
    send_model(c, ">", 1);
}

static void echo_then_literal(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    chunks++;
    send_model(c, d, n);
    send_model(c, "|", 1);
}

static void echo_literal_between_halves(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    chunks++;
    send_model(c, d, n / 2);
    send_model(c, "|", 1);
    send_model(c, d + n / 2, n - n / 2);
}

/* The echo with extra bytes per chunk: the peer gets exactly the model,
 * which holds the whole input and `extra` more bytes per chunk. */
static void echo_with_extras(hook_fn hook, size_t extra)
{
    const size_t total = 2u << 20;
    net_open(hook, true);
    peer_connect(total);
    pump(PUMP_S);
    ASSERT_GT(chunks, 1);
    ASSERT_EQ(N.want[0].len, total + extra * chunks);
    check_peer(0);
    check_bytes_out(0);
    net_close();
}

TEST(echo_literal_data_literal) { echo_with_extras(echo_framed, 2); }

TEST(echo_data_then_literal) { echo_with_extras(echo_then_literal, 1); }

TEST(echo_literal_between_halves) { echo_with_extras(echo_literal_between_halves, 1); }

/* ----------------------------------------- 4. non-contiguous buffer bytes */

static void echo_reordered(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    send_model(c, d + n / 2, n - n / 2);
    send_model(c, d, n / 2);
}

/* Overlapping ranges: the second starts inside the first, not at its end. */
static void echo_overlapping(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    send_model(c, d, n - n / 4);
    send_model(c, d + n / 4, n - n / 4);
}

static void echo_noncontiguous(hook_fn hook)
{
    const size_t total = 4u << 20;
    net_open(hook, true);
    peer_connect(total);
    pump(PUMP_S);
    ASSERT_GT(N.want[0].len, 0);
    check_peer(0);
    check_bytes_out(0);
    net_close();
}

TEST(echo_second_half_first) { echo_noncontiguous(echo_reordered); }

TEST(echo_overlapping_ranges) { echo_noncontiguous(echo_overlapping); }

/* Reordered halves one small message at a time: the expected bytes are
 * known without the model. */
TEST(echo_second_half_first_small_messages)
{
    net_open(echo_reordered, false);
    struct peer *p = peer_connect(0);
    struct sbuf expect = {0};
    const char *src = pattern(64);
    size_t off = 0;
    for (size_t n = 2; n <= 10; n++) {
        sbuf_add(&expect, src + off + n / 2, n - n / 2);
        sbuf_add(&expect, src + off, n / 2);
        off += n;
        p->out_len = off;
        pump(PUMP_S);
        assert_bytes("reordered", &p->in, expect.p, expect.len);
    }
    sbuf_free(&expect);
    net_close();
}

/* ------------------------------------------------ 5. outbound data size */

static int size_step;          /* what the hook does for the current message */
static int ticks;              /* next ticks run */
static size_t size_in_tick;    /* em_get_outbound_data_size there */
static int ticks_with_backlog; /* ticks that saw bytes the kernel refused */

static void assert_size(em_conn *c, size_t want)
{
    ASSERT_EQ(em_get_outbound_data_size(c), want);
}

/* Queued + written == sent, at any time. */
static void assert_accounting(em_conn *c)
{
    em_conn_stats st;
    ASSERT_EQ(em_get_stats(c, &st), 0);
    rec *x = em_conn_user(c);
    ASSERT_EQ(st.bytes_out + em_get_outbound_data_size(c), ((struct sbuf *)x->ctx)->len);
}

static void size_tick(em_reactor *r, void *arg)
{
    (void)r;
    em_conn *c = arg;
    ticks++;
    size_in_tick = em_get_outbound_data_size(c);
    if (size_in_tick)
        ticks_with_backlog++;
    assert_accounting(c);
}

static void size_hook(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    size_t before = em_get_outbound_data_size(c), h = n / 2;
    switch (size_step) {
    case 0: /* a span */
        send_model(c, d, n);
        assert_size(c, before + n);
        break;
    case 1: /* queued before, then buffer bytes */
        send_model(c, "[", 1);
        assert_size(c, before + 1);
        send_model(c, d, n);
        assert_size(c, before + 1 + n);
        break;
    case 2: /* a span extended */
        send_model(c, d, h);
        assert_size(c, before + h);
        send_model(c, d + h, n - h);
        assert_size(c, before + n);
        break;
    case 3: /* a span turned into a chunk by the second send */
        send_model(c, d, n);
        send_model(c, d, n);
        assert_size(c, before + 2 * n);
        break;
    case 4: /* a span, then a literal after it */
        send_model(c, d + h, n - h);
        send_model(c, "]", 1);
        assert_size(c, before + n - h + 1);
        break;
    }
    assert_accounting(c);
    ASSERT_EQ(em_next_tick(N.r, size_tick, c), 0);
}

/* Small messages: the kernel takes everything in the settle, so the next
 * tick sees 0. */
TEST(outbound_size_in_receive_data_and_after)
{
    net_open(size_hook, false);
    struct peer *p = peer_connect(0);
    for (size_step = 0; size_step <= 4; size_step++) {
        int t0 = ticks;
        p->out_len += 100 + (size_t)size_step;
        pump(PUMP_S);
        ASSERT_GT(ticks, t0);
        ASSERT_EQ(size_in_tick, 0);
        check_peer(0);
    }
    check_bytes_out(0);
    net_close();
}

/* Large transfer, small buffers: what the kernel refused stays counted
 * (queued + written == sent) until it is written. */
TEST(outbound_size_with_partial_writes)
{
    const size_t total = 4u << 20;
    net_open(size_hook, true);
    size_step = 0;
    peer_connect(total);
    pump(PUMP_S);
    ASSERT_GT(ticks, 0);
    ASSERT_GT(ticks_with_backlog, 0);
    check_peer(0);
    check_bytes_out(0);
    net_close();
}

/* ------------------------------------------ 6. close after writing */

static size_t close_at; /* bytes_in at which the hook acts */

static void echo_close_after_writing(em_conn *c, rec *x, const char *d, size_t n)
{
    send_model(c, d, n);
    if (x->bytes_in == close_at) { /* the peer sends nothing more: no RST */
        ASSERT_EQ(em_close_connection_after_writing(c), 0);
        ASSERT_EQ(em_send_data(c, "x", 1), -ENOTCONN);
    }
}

static void close_after_writing_case(size_t total, bool small_bufs)
{
    net_open(echo_close_after_writing, small_bufs);
    close_at = total;
    struct peer *p = peer_connect(total);
    p->want_eof = true;
    pump(PUMP_S);
    ASSERT(p->eof && !p->reset);
    assert_bytes("model", &N.want[0], pattern(total), total);
    check_peer(0);
    ASSERT(run_until(N.r, &N.srv.pool[0].unbinds, 5));
    ASSERT_EQ(N.srv.pool[0].reason, 0);
    if (small_bufs)
        ASSERT_GE(N.srv.pool[0].drained, 1); /* writes waited: copies happened */
    net_close();
}

TEST(close_after_writing_after_echo)
{
    close_after_writing_case(1000, false);
}

TEST(close_after_writing_after_echo_partial)
{
    close_after_writing_case(1u << 20, true);
}

/* ----------------------------------------------------- 7. half-close */

static int shut; /* em_close_write was called */

static void echo_close_write(em_conn *c, rec *x, const char *d, size_t n)
{
    if (shut) { /* reading goes on; sending is over */
        ASSERT_EQ(em_send_data(c, d, n), -ENOTCONN);
        return;
    }
    send_model(c, d, n);
    if (x->bytes_in == close_at) {
        ASSERT_EQ(em_close_write(c), 0);
        shut = 1;
    }
}

static void close_write_case(size_t first, size_t more, bool small_bufs)
{
    net_open(echo_close_write, small_bufs);
    close_at = first;
    struct peer *p = peer_connect(first);
    p->want_eof = true;
    pump(PUMP_S);
    ASSERT(p->eof && !p->reset);
    assert_bytes("model", &N.want[0], pattern(first), first);
    check_peer(0);
    /* the peer goes on writing: the connection reads all of it
     * (check_pattern verifies every byte), unbound only by the peer */
    p->out_len = first + more;
    pump(PUMP_S);
    ASSERT_EQ(N.srv.pool[0].bytes_in, first + more);
    ASSERT_EQ(N.srv.pool[0].unbinds, 0);
    check_peer(0);
    check_bytes_out(0);
    close(p->fd);
    p->fd = -1;
    ASSERT(run_until(N.r, &N.srv.pool[0].unbinds, 5));
    ASSERT_EQ(N.srv.pool[0].reason, 0);
    net_close();
}

TEST(close_write_after_echo)
{
    close_write_case(1000, 5000, false);
}

TEST(close_write_after_echo_partial)
{
    close_write_case(1u << 20, 1u << 20, true);
}

/* ------------------------------------------------------------ 8. pause */

static void echo_pause_first(em_conn *c, rec *x, const char *d, size_t n)
{
    send_model(c, d, n);
    if (x->data_calls == 1) {
        ASSERT_EQ(em_pause(c), 0);
        assert_size(c, n);
    }
}

static int resumed;

static void resume_cb(em_reactor *r, void *arg)
{
    (void)r;
    ASSERT_EQ(em_resume(arg), 0);
    resumed = 1;
}

static void pause_case(bool small_bufs)
{
    const size_t total = 1u << 20;
    net_open(echo_pause_first, small_bufs);
    struct peer *p = peer_connect(total);
    double until = now_mono() + 5;
    while (N.srv.pool[0].data_calls == 0 && now_mono() < until) {
        peer_io(p);
        ASSERT_GE(em_run_once(N.r, 0.005), 0);
    }
    ASSERT_EQ(N.srv.pool[0].data_calls, 1);
    /* 200 ms: nothing written, nothing more read */
    until = now_mono() + 0.2;
    while (now_mono() < until) {
        peer_io(p);
        ASSERT_GE(em_run_once(N.r, 0.005), 0);
    }
    ASSERT_EQ(p->in.len, 0);
    ASSERT_EQ(N.srv.pool[0].data_calls, 1);
    ASSERT(em_is_paused(pool_conn(0)));
    ASSERT_EQ(em_get_outbound_data_size(pool_conn(0)), N.want[0].len);
    ASSERT_NE(em_add_timer(N.r, 0.01, resume_cb, pool_conn(0)), 0);
    pump(PUMP_S);
    ASSERT(resumed);
    assert_bytes("model", &N.want[0], pattern(total), total);
    check_peer(0);
    check_bytes_out(0);
    net_close();
}

TEST(pause_after_echo_then_resume)
{
    pause_case(false);
}

TEST(pause_after_echo_then_resume_partial)
{
    pause_case(true);
}

/* ----------------------------------------------- 9. close at once after */

/* What arrived is a prefix of what was sent (maybe empty); no more. */
static void check_prefix(int i)
{
    struct peer *p = &N.peer[i];
    ASSERT_LE(p->in.len, N.want[i].len);
    assert_bytes("prefix", &p->in, N.want[i].p, p->in.len);
}

static bool peer0_eof_and_unbound(void *arg)
{
    (void)arg;
    return N.peer[0].eof && N.srv.pool[0].unbinds;
}

static void echo_close_now(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    send_model(c, d, n);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT_EQ(em_send_data(c, d, n), -ENOTCONN);
}

static void echo_close_after_then_now(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    send_model(c, d, n / 2);
    send_model(c, d + n / 2, n - n / 2);
    ASSERT_EQ(close_conn(c, true), 0);
    ASSERT_EQ(close_conn(c, false), 0); /* upgrades to immediate */
}

static void close_now_case(hook_fn hook, size_t total, bool small_bufs)
{
    net_open(hook, small_bufs);
    struct peer *p = peer_connect(total);
    p->may_reset = true; /* unread bytes at the close may make it an RST */
    pump_until(peer0_eof_and_unbound, NULL, PUMP_S);
    run_for(N.r, 0.05);
    ASSERT_EQ(N.srv.pool[0].unbinds, 1);
    ASSERT_EQ(N.srv.pool[0].reason, 0);
    check_prefix(0);
    net_close();
}

TEST(close_now_after_echo)
{
    close_now_case(echo_close_now, 1000, false);
}

TEST(close_now_after_echo_large)
{
    close_now_case(echo_close_now, 1u << 20, true);
}

TEST(close_after_writing_upgraded_after_echo)
{
    close_now_case(echo_close_after_then_now, 1u << 20, true);
}

/* The source echoes, sends to pool[1] and closes pool[1] at once: its own
 * echo arrives whole, pool[1]'s peer gets a prefix and EOF. */
static int other_closed_now;

static void send_then_close_other(em_conn *c, rec *x, const char *d, size_t n)
{
    if (x != &N.srv.pool[0])
        return;
    send_model(c, d, n);
    em_conn *b = pool_conn(1);
    if (other_closed_now) { /* by an earlier chunk; unbind may be pending */
        if (b)
            ASSERT_EQ(em_send_data(b, d, n), -ENOTCONN);
        return;
    }
    send_model(b, d, n);
    ASSERT_EQ(close_conn(b, false), 0);
    other_closed_now = 1;
    ASSERT_EQ(em_send_data(b, d, n), -ENOTCONN);
}

/* pool[1]'s model is not reachable: only peer 0 must finish. */
static bool other_closed(void *arg)
{
    (void)arg;
    return peer_done(&N.peer[0]) && N.peer[1].eof && N.srv.pool[1].unbinds;
}

TEST(close_now_other_after_send)
{
    net_open(send_then_close_other, true);
    peer_connect(1u << 20);
    struct peer *q = peer_connect(0);
    q->may_reset = true;
    pump_until(other_closed, NULL, PUMP_S);
    check_peer(0);
    check_bytes_out(0);
    ASSERT_EQ(N.srv.pool[1].unbinds, 1);
    ASSERT_EQ(N.srv.pool[1].reason, 0);
    check_prefix(1);
    net_close();
}

/* The source sends to pool[1], then closes itself at once: pool[1] still
 * sends every byte it was given. */
static void proxy_then_close_self(em_conn *c, rec *x, const char *d, size_t n)
{
    if (x != &N.srv.pool[0])
        return;
    send_model(pool_conn(1), d, n);
    ASSERT_EQ(close_conn(c, false), 0);
}

static bool self_closed_other_done(void *arg)
{
    (void)arg;
    return N.srv.pool[0].unbinds && N.peer[1].in.len >= N.want[1].len;
}

TEST(close_now_self_after_proxy)
{
    net_open(proxy_then_close_self, true);
    struct peer *p = peer_connect(0);
    p->may_reset = true;
    peer_connect(0);
    p->out_len = 60000; /* after both are accepted */
    pump_until(self_closed_other_done, NULL, PUMP_S);
    ASSERT_EQ(N.srv.pool[0].unbinds, 1);
    ASSERT_EQ(N.srv.pool[0].reason, 0);
    ASSERT_GT(N.want[1].len, 0);
    assert_bytes("model", &N.want[1], pattern(N.want[1].len), N.want[1].len);
    check_peer(1);
    check_bytes_out(1);
    net_close();
}

/* ------------------------------------------------------------ 10. proxy */

/* pool[0] forwards to `target`, or to pool[1]. */
static em_conn *target;

static void proxy(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)c;
    if (x != &N.srv.pool[0])
        return;
    send_model(target ? target : pool_conn(1), d, n);
}

TEST(proxy_to_open_connection)
{
    const size_t total = 4u << 20;
    net_open(proxy, true);
    struct peer *p = peer_connect(0);
    peer_connect(0);
    p->out_len = total;
    pump(PUMP_S);
    assert_bytes("model", &N.want[1], pattern(total), total);
    check_peer(0); /* nothing */
    check_peer(1);
    check_bytes_out(1);
    net_close();
}

/* The target is made by em_connect inside the first receive_data, so it is
 * still connecting while that chunk and the rest of the read burst are sent
 * to it. */
static rec out_rec; /* the target's rec */
static struct sbuf out_want;
static const char *out_host = "127.0.0.1";
static int out_port;
static int sent_while_connecting;
static int sent_while_resolving; /* no descriptor yet */

static void proxy_connecting(em_conn *c, rec *x, const char *d, size_t n)
{
    if (x != &N.srv.pool[0])
        return;
    if (!target) {
        target = em_connect(N.r, out_host, out_port, &rec_handler, &out_rec);
        ASSERT_NOT_NULL(target);
        if (N.small_bufs)
            set_small_sndbuf(target);
    }
    if (!out_rec.completed)
        sent_while_connecting++;
    if (em_conn_fd(target) < 0)
        sent_while_resolving++;
    size_t before = em_get_outbound_data_size(target);
    proxy(c, x, d, n);
    assert_size(target, before + n);
}

static void open_out_rec(void)
{
    out_rec = (rec){.tag = 7, .ctx = &out_want};
}

/* To a raw listener accepted only once the source has read everything. */
TEST(proxy_to_connecting_raw_listener)
{
    const size_t total = 4u << 20;
    net_open(proxy_connecting, true);
    open_out_rec();
    int lfd = tcp_listen_raw("127.0.0.1", 4, &out_port);
    int v = SMALL; /* inherited by the accepted socket */
    ASSERT_EQ(setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v), 0);
    set_nonblock(lfd);
    peer_connect(total);
    pump(PUMP_S);
    ASSERT_GT(sent_while_connecting, 0);
    ASSERT(run_until(N.r, &out_rec.completed, 5));
    int fd = -1;
    double until = now_mono() + 5;
    while (fd < 0 && now_mono() < until) {
        ASSERT_GE(em_run_once(N.r, 0.005), 0);
        fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
    ASSERT_GE(fd, 0);
    peer_add(fd, NULL, &out_want, 0);
    pump(PUMP_S);
    assert_bytes("model", &out_want, pattern(total), total);
    check_peer(1);
    em_conn_stats st;
    ASSERT_EQ(em_get_stats(target, &st), 0);
    ASSERT_EQ(st.bytes_out, total);
    close(lfd);
    net_close();
    sbuf_free(&out_want);
}

/* To the libem server itself: it becomes pool[1], whose check_pattern
 * verifies every byte in order. */
static bool target_read_all(void *arg)
{
    return all_done(NULL) && N.srv.pool_used == 2 &&
           N.srv.pool[1].bytes_in == (uint64_t)(uintptr_t)arg;
}

static void proxy_to_libem_server(const char *host, size_t total)
{
    /* default buffers: a 4 KiB SO_SNDBUF writing to a reader on the same
     * thread moves about one buffer per poll timeout (a kernel matter) */
    net_open(proxy_connecting, false);
    open_out_rec();
    out_host = host;
    out_port = em_server_port(N.s);
    peer_connect(total);
    pump_until(target_read_all, (void *)(uintptr_t)total, PUMP_S);
    ASSERT_GT(sent_while_connecting, 0);
    ASSERT_EQ(out_rec.completed, 1);
    assert_bytes("model", &out_want, pattern(total), total);
    ASSERT_EQ(N.srv.pool[1].bytes_in, total);
    ASSERT_EQ(close_conn(target, false), 0);
    net_close();
    sbuf_free(&out_want);
}

TEST(proxy_to_connecting_libem_server)
{
    proxy_to_libem_server("127.0.0.1", 4u << 20);
}

/* A name: the first bytes are sent while it resolves, before the
 * connection has a descriptor. */
TEST(proxy_to_resolving_libem_server)
{
    proxy_to_libem_server("localhost", 1u << 20);
    ASSERT_GT(sent_while_resolving, 0);
}

/* -------------------------------------------------------- 11. broadcast */

#define TARGETS 20 /* more than the 16 connections that may borrow */

static void broadcast(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)c;
    if (x != &N.srv.pool[0])
        return;
    for (int t = 1; t <= TARGETS; t++)
        send_model(pool_conn(t), d, n);
}

/* Spans (even targets), queued borrowed chunks behind a literal (odd
 * targets), copies beyond the 16th, each extended by a second pass; and the
 * source's own echo, last. */
static void broadcast_mixed(em_conn *c, rec *x, const char *d, size_t n)
{
    if (x != &N.srv.pool[0])
        return;
    size_t h = n / 2;
    for (int t = 1; t <= TARGETS; t++) {
        if (t % 2)
            send_model(pool_conn(t), "#", 1);
        send_model(pool_conn(t), d, h);
    }
    for (int t = 1; t <= TARGETS; t++)
        send_model(pool_conn(t), d + h, n - h);
    send_model(c, d, n);
}

static void broadcast_case(hook_fn hook, bool plain)
{
    const size_t total = 1u << 20;
    net_open(hook, true);
    struct peer *p = peer_connect(0);
    for (int t = 1; t <= TARGETS; t++)
        peer_connect(0);
    p->out_len = total; /* once every target is there */
    pump(PUMP_S);
    for (int t = 0; t <= TARGETS; t++) {
        if (plain && t > 0)
            assert_bytes("model", &N.want[t], pattern(total), total);
        check_peer(t);
        check_bytes_out(t);
    }
    net_close();
}

TEST(broadcast_to_20) { broadcast_case(broadcast, true); }

TEST(broadcast_to_20_mixed) { broadcast_case(broadcast_mixed, false); }

/* ------------------------------------------------ datagrams to a stream */

/* A UDP socket's receive_data uses the same read buffer: forwarded to a
 * stream connection, the datagrams arrive there whole and in order. */
static rec udp_rec;

static void ignore(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)c, (void)x, (void)d, (void)n;
}

static void udp_forward(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    em_conn *t = pool_conn(0);
    send_model(t, d, n / 2);
    send_model(t, d + n / 2, n - n / 2);
    ASSERT_EQ(em_send_data(c, d, n), 0); /* and a reply to the sender */
}

static bool udp_batch_done(void *arg)
{
    return udp_rec.bytes_in == (uint64_t)(uintptr_t)arg && N.peer[0].in.len >= N.want[0].len;
}

TEST(datagrams_forwarded_to_stream)
{
    net_open(ignore, false);
    struct peer *p = peer_connect(0);
    udp_rec = (rec){.tag = 9, .check_pattern = true, .on_data = udp_forward};
    em_conn *u = em_open_datagram_socket(N.r, "127.0.0.1", 0, &rec_handler, &udp_rec);
    ASSERT_NOT_NULL(u);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ASSERT_EQ(em_get_sockname(u, &ss, &len), 0);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&ss, len), 0);
    const char *src = pattern(1u << 20);
    struct sbuf replies = {0};
    size_t off = 0, sent = 0, got = 0;
    uint64_t seed = 42;
    /* batches small enough for the socket buffers: loopback UDP then
     * loses nothing */
    for (int batch = 0; batch < 10; batch++) {
        for (int k = 0; k < 20; k++, sent++) {
            size_t n = 1 + (size_t)(rng_next(&seed) % 1400);
            ASSERT_EQ(send(fd, src + off, n, 0), (ssize_t)n);
            off += n;
        }
        pump_until(udp_batch_done, (void *)(uintptr_t)off, PUMP_S);
        char buf[2048];
        ssize_t n;
        while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
            sbuf_add(&replies, buf, (size_t)n);
            got++;
        }
    }
    assert_bytes("model", &N.want[0], src, off);
    assert_bytes("stream", &p->in, src, off);
    check_bytes_out(0);
    ASSERT_EQ(got, sent);
    assert_bytes("replies", &replies, src, off);
    sbuf_free(&replies);
    close(fd);
    ASSERT_EQ(close_conn(u, false), 0);
    net_close();
}
