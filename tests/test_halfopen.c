/* Half-open connections: the peer's FIN (through TLS, its close_notify)
 * with and without the peer_closed callback, em_close_write on either side
 * of it, and a proxy passing the FIN on.
 *
 * Set-up (hp): a libem server whose accepted connections record into
 * srv.pool[i] (rec_handler, plus peer_closed when asked), and raw clients
 * X[i] connected to it; c[i] is X[i]'s libem end. Bytes are pattern_byte()
 * from some base and checked on arrival. */
#include "harness.h"
#include "tls_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

TLS_FIXTURE();

#define KiB 1024u
#define MiB (1024u * 1024u)
#define REVERSE_BASE ((uint64_t)1 << 40)

/* What peer_closed saw, per accepted connection (rec.ctx). */
typedef struct side {
    int peer_closed;
    int data_calls_then; /* receive_data calls when it ran */
    void (*then)(em_conn *c, rec *x);
} side;

static side sides[2];

static void on_peer_closed(em_conn *c)
{
    rec *x = em_conn_user(c);
    side *s = x->ctx;
    s->peer_closed++;
    s->data_calls_then = x->data_calls;
    if (s->then)
        s->then(c, x);
}

static em_handler half_handler; /* rec_handler with peer_closed */

typedef struct hp {
    em_reactor *r;
    em_server *s;
    rec srv;
    int n;
    int x[2];
    em_conn *c[2];
    int fd0;
} hp;

static rec *rc(hp *p, int i) { return &p->srv.pool[i]; }

/* n raw clients (at most 2) of a libem server; with_peer_closed: its
 * connections have the callback. splice_off: EM_SPLICE=0. */
static void hp_open(hp *p, int n, bool with_peer_closed, bool splice_off)
{
    memset(p, 0, sizeof *p);
    memset(sides, 0, sizeof sides);
    half_handler = rec_handler;
    half_handler.peer_closed = on_peer_closed;
    p->fd0 = open_fd_count();
    if (splice_off)
        setenv("EM_SPLICE", "0", 1);
    else
        unsetenv("EM_SPLICE");
    p->r = new_reactor();
    p->n = n;
    p->srv = (rec){.tag = 1, .store = true};
    rec_pool_new(&p->srv, n);
    p->s = em_start_server(p->r, "127.0.0.1", 0, with_peer_closed ? &half_handler : &rec_handler,
                           &p->srv);
    ASSERT_NOT_NULL(p->s);
    for (int i = 0; i < n; i++) {
        rc(p, i)->ctx = &sides[i];
        p->x[i] = tcp_connect_raw("127.0.0.1", em_server_port(p->s));
        ASSERT(run_until(p->r, &rc(p, i)->post_inits, 5));
        set_nonblock(p->x[i]);
        p->c[i] = rc(p, i)->conn;
    }
}

/* Little room in the kernel between c[i] and X[i]: a queue of a few MiB
 * stays queued until X reads (loopback buffers grow to megabytes). */
static void small_buffers(hp *p, int i)
{
    int v = 16 * KiB;
    ASSERT_EQ(em_set_sock_opt(p->c[i], SOL_SOCKET, SO_SNDBUF, &v, sizeof v), 0);
    ASSERT_EQ(setsockopt(p->x[i], SOL_SOCKET, SO_RCVBUF, &v, sizeof v), 0);
}

static void hp_close(hp *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->x[i] >= 0)
            close(p->x[i]);
    double deadline = now_mono() + 5;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(p->r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    ASSERT_EQ(em_stop_server(p->s), 0);
    REACTOR_FREE_CHECKED(p->r);
    rec_free(&p->srv);
    ASSERT_NO_FD_LEAK(p->fd0);
}

/* ------------------------------------------------------------ raw ends */

/* A raw reader of the pattern from base. */
typedef struct rd {
    int fd;
    uint64_t base, got;
    bool eof;
} rd;

static void rd_some(rd *r)
{
    static char buf[64 * KiB];
    while (!r->eof) {
        ssize_t n = read(r->fd, buf, sizeof buf);
        if (n == 0) {
            r->eof = true;
            return;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0)
            FAIL("read: %s", strerror(errno));
        for (ssize_t i = 0; i < n; i++)
            if ((unsigned char)buf[i] != pattern_byte(r->base + r->got + (uint64_t)i))
                FAIL("byte %llu differs", (unsigned long long)(r->got + (uint64_t)i));
        r->got += (uint64_t)n;
    }
}

/* Runs until r has `want` bytes, then (eof) its EOF; more bytes, or an EOF
 * too early, fail. */
static void read_exactly(em_reactor *em, rd *r, uint64_t want, bool eof)
{
    double deadline = now_mono() + 10;
    while (r->got < want || (eof && !r->eof)) {
        if (r->eof && r->got < want)
            FAIL("EOF after %llu of %llu bytes", (unsigned long long)r->got,
                 (unsigned long long)want);
        if (now_mono() > deadline)
            FAIL("read %llu of %llu bytes%s", (unsigned long long)r->got,
                 (unsigned long long)want, eof ? ", no EOF" : "");
        ASSERT_GE(em_run_once(em, 0.005), 0);
        rd_some(r);
    }
    ASSERT_EQ(r->got, want);
    if (!eof)
        ASSERT(!r->eof);
}

/* Writes n pattern bytes from base on a raw non-blocking socket, turning
 * the reactor while the socket is full. */
static void write_pattern(em_reactor *em, int fd, uint64_t base, uint64_t n)
{
    static char buf[64 * KiB];
    uint64_t done = 0;
    double deadline = now_mono() + 10;
    while (done < n) {
        size_t k = n - done < sizeof buf ? (size_t)(n - done) : sizeof buf;
        for (size_t i = 0; i < k; i++)
            buf[i] = (char)pattern_byte(base + done + i);
        ssize_t w = write(fd, buf, k);
        if (w > 0)
            done += (uint64_t)w;
        else if (errno != EAGAIN && errno != EWOULDBLOCK)
            FAIL("write: %s", strerror(errno));
        if (now_mono() > deadline)
            FAIL("wrote %llu of %llu bytes", (unsigned long long)done, (unsigned long long)n);
        ASSERT_GE(em_run_once(em, w > 0 ? 0 : 0.005), 0);
    }
}

/* Queues n pattern bytes from base + *sent on c. */
static void send_pattern(em_conn *c, uint64_t base, uint64_t *sent, uint64_t n)
{
    static char buf[64 * KiB];
    while (n) {
        size_t k = n < sizeof buf ? (size_t)n : sizeof buf;
        for (size_t i = 0; i < k; i++)
            buf[i] = (char)pattern_byte(base + *sent + i);
        ASSERT_EQ(em_send_data(c, buf, k), 0);
        *sent += k;
        n -= k;
    }
}

static void check_received(const rec *x, uint64_t base, uint64_t n)
{
    ASSERT_EQ(x->len, n);
    for (uint64_t i = 0; i < n; i++)
        if ((unsigned char)x->buf[i] != pattern_byte(base + i))
            FAIL("received byte %llu differs", (unsigned long long)i);
}

/* ====================================================== 1. default */

/* Without peer_closed, as EventMachine: the peer's FIN closes the
 * connection once what it queued is written, with unbind(0); the bytes
 * before the FIN reach receive_data. */
TEST(default_peer_fin_writes_queue_then_unbinds)
{
    hp p;
    hp_open(&p, 1, false, false);
    small_buffers(&p, 0);
    uint64_t sent = 0;
    send_pattern(p.c[0], 0, &sent, 4 * MiB);
    run_for(p.r, 0.1);
    ASSERT_GT(em_get_outbound_data_size(p.c[0]), 0); /* X reads nothing yet */
    write_pattern(p.r, p.x[0], REVERSE_BASE, 1000);
    ASSERT_EQ(shutdown(p.x[0], SHUT_WR), 0);
    run_for(p.r, 0.2);
    ASSERT_EQ(rc(&p, 0)->unbinds, 0); /* its queue waits for X */
    check_received(rc(&p, 0), REVERSE_BASE, 1000);
    rd r = {.fd = p.x[0]};
    read_exactly(p.r, &r, sent, true);
    ASSERT(run_until(p.r, &rc(&p, 0)->unbinds, 5));
    ASSERT_EQ(rc(&p, 0)->reason, 0);
    ASSERT_EQ(rc(&p, 0)->bytes_in, 1000);
    hp_close(&p);
}

/* Nothing queued: the FIN closes at once. */
TEST(default_peer_fin_with_nothing_queued_unbinds)
{
    hp p;
    hp_open(&p, 1, false, false);
    ASSERT_EQ(shutdown(p.x[0], SHUT_WR), 0);
    ASSERT(run_until(p.r, &rc(&p, 0)->unbinds, 5));
    ASSERT_EQ(rc(&p, 0)->reason, 0);
    rd r = {.fd = p.x[0]};
    read_exactly(p.r, &r, 0, true);
    hp_close(&p);
}

/* ==================================================== 2. peer_closed */

typedef struct ticker {
    em_conn *c;
    uint64_t sent;
    int ticks;
} ticker;

static void tick_send(em_reactor *r, void *arg)
{
    (void)r;
    ticker *t = arg;
    send_pattern(t->c, 0, &t->sent, 64 * KiB);
    t->ticks++;
}

/* peer_closed runs once; the connection keeps sending for seconds (and
 * the poller does not report the dead reading side over and over); no
 * receive_data after it. em_close_write then: X gets every byte, then EOF,
 * and the connection unbinds with 0 by itself. */
TEST_TIMEOUT(peer_closed_keeps_sending_then_close_write, 30);
TEST(peer_closed_keeps_sending_then_close_write)
{
    hp p;
    hp_open(&p, 1, true, false);
    write_pattern(p.r, p.x[0], REVERSE_BASE, 7);
    ASSERT_EQ(shutdown(p.x[0], SHUT_WR), 0);
    ASSERT(run_until(p.r, &sides[0].peer_closed, 5));
    check_received(rc(&p, 0), REVERSE_BASE, 7);
    ASSERT_EQ(sides[0].data_calls_then, rc(&p, 0)->data_calls);
    ticker t = {.c = p.c[0]};
    em_timer_id id = em_add_periodic_timer(p.r, 0.1, tick_send, &t);
    ASSERT_NE(id, 0);
    rd r = {.fd = p.x[0]};
    long turns = 0, events = 0;
    double end = now_mono() + 2.0;
    while (now_mono() < end) {
        int n = em_run_once(p.r, 0.05);
        ASSERT_GE(n, 0);
        events += n;
        turns++;
        rd_some(&r);
        ASSERT(!r.eof);
    }
    ASSERT_EQ(em_cancel_timer(p.r, id), 0);
    printf("  2 s half-open: %d sends, %ld turns, %ld events\n", t.ticks, turns, events);
    ASSERT_GE(t.ticks, 10);
    ASSERT_EQ(rc(&p, 0)->unbinds, 0);
    ASSERT_EQ(sides[0].peer_closed, 1);
    ASSERT_EQ(rc(&p, 0)->data_calls, sides[0].data_calls_then);
    ASSERT_LT(events, 200); /* a registered dead reading side would report every turn */
    /* a big queue, then the FIN after it */
    send_pattern(p.c[0], 0, &t.sent, 2 * MiB);
    ASSERT_EQ(em_close_write(p.c[0]), 0);
    ASSERT_EQ(em_send_data(p.c[0], "late", 4), -ENOTCONN);
    read_exactly(p.r, &r, t.sent, true);
    ASSERT(run_until(p.r, &rc(&p, 0)->unbinds, 5));
    ASSERT_EQ(rc(&p, 0)->reason, 0);
    ASSERT_EQ(sides[0].peer_closed, 1);
    ASSERT_EQ(rc(&p, 0)->data_calls, sides[0].data_calls_then);
    hp_close(&p);
}

static uint64_t from_peer_closed; /* bytes queued by send_then_close */

static void send_then_close(em_conn *c, rec *x)
{
    (void)x;
    send_pattern(c, 0, &from_peer_closed, 2 * MiB);
    ASSERT_EQ(em_close_connection_after_writing(c), 0);
}

/* em_close_connection_after_writing from peer_closed: every queued byte,
 * then the close, unbind(0) once. */
TEST(peer_closed_then_close_after_writing)
{
    hp p;
    hp_open(&p, 1, true, false);
    small_buffers(&p, 0);
    from_peer_closed = 0;
    sides[0].then = send_then_close;
    write_pattern(p.r, p.x[0], REVERSE_BASE, 100);
    ASSERT_EQ(shutdown(p.x[0], SHUT_WR), 0);
    ASSERT(run_until(p.r, &sides[0].peer_closed, 5));
    run_for(p.r, 0.2); /* X reads nothing yet: the close waits */
    ASSERT_EQ(rc(&p, 0)->unbinds, 0);
    rd r = {.fd = p.x[0]};
    read_exactly(p.r, &r, from_peer_closed, true);
    ASSERT_EQ(from_peer_closed, 2 * MiB);
    ASSERT(run_until(p.r, &rc(&p, 0)->unbinds, 5));
    ASSERT_EQ(rc(&p, 0)->reason, 0);
    ASSERT_EQ(sides[0].peer_closed, 1);
    check_received(rc(&p, 0), REVERSE_BASE, 100);
    hp_close(&p);
}

/* ================================================ 3. close_write first */

/* em_close_write before the peer's FIN: X gets the bytes then EOF, the
 * connection still reads what X sends, and X's FIN then closes it with
 * unbind(0). The same with peer_closed set or not. */
static void close_write_first(bool with_peer_closed)
{
    hp p;
    hp_open(&p, 1, with_peer_closed, false);
    uint64_t sent = 0;
    send_pattern(p.c[0], 0, &sent, 100 * KiB);
    ASSERT_EQ(em_close_write(p.c[0]), 0);
    rd r = {.fd = p.x[0]};
    read_exactly(p.r, &r, sent, true);
    write_pattern(p.r, p.x[0], REVERSE_BASE, MiB);
    double deadline = now_mono() + 5;
    while (rc(&p, 0)->bytes_in < MiB && now_mono() < deadline)
        ASSERT_GE(em_run_once(p.r, 0.01), 0);
    check_received(rc(&p, 0), REVERSE_BASE, MiB);
    ASSERT_EQ(rc(&p, 0)->unbinds, 0);
    ASSERT_EQ(shutdown(p.x[0], SHUT_WR), 0);
    ASSERT(run_until(p.r, &rc(&p, 0)->unbinds, 5));
    ASSERT_EQ(rc(&p, 0)->reason, 0);
    ASSERT_LE(sides[0].peer_closed, 1);
    printf("  peer_closed %s: ran %d times\n", with_peer_closed ? "set" : "unset",
           sides[0].peer_closed);
    hp_close(&p);
}

TEST(close_write_then_peer_fin_unbinds) { close_write_first(false); }
TEST(close_write_then_peer_fin_unbinds_with_peer_closed) { close_write_first(true); }

/* The FIN arrives while em_close_write still waits for the queue: the
 * connection closes once the queue is written, then its FIN. */
TEST(peer_fin_while_close_write_pending)
{
    hp p;
    hp_open(&p, 1, true, false);
    small_buffers(&p, 0);
    uint64_t sent = 0;
    send_pattern(p.c[0], 0, &sent, 4 * MiB);
    run_for(p.r, 0.1);
    ASSERT_GT(em_get_outbound_data_size(p.c[0]), 0);
    ASSERT_EQ(em_close_write(p.c[0]), 0);
    write_pattern(p.r, p.x[0], REVERSE_BASE, 10);
    ASSERT_EQ(shutdown(p.x[0], SHUT_WR), 0);
    run_for(p.r, 0.2);
    ASSERT_EQ(rc(&p, 0)->unbinds, 0);
    rd r = {.fd = p.x[0]};
    read_exactly(p.r, &r, sent, true);
    ASSERT(run_until(p.r, &rc(&p, 0)->unbinds, 5));
    ASSERT_EQ(rc(&p, 0)->reason, 0);
    check_received(rc(&p, 0), REVERSE_BASE, 10);
    ASSERT_LE(sides[0].peer_closed, 1);
    printf("  peer_closed ran %d times\n", sides[0].peer_closed);
    hp_close(&p);
}

/* ============================================================ 4. proxy */

/* c[0] (from X) proxies to c[1] (from Y) and back. X writes 3 MiB and
 * half-closes: Y reads the 3 MiB, then EOF; c[0], with peer_closed, stays
 * open, so the reverse way still flows: 1 MiB from Y reaches X. Y's FIN
 * then ends it all with unbind(0). Spliced or copied. */
static void proxy_fin(bool splice_off)
{
    hp p;
    hp_open(&p, 2, true, splice_off);
    int x = p.x[0], y = p.x[1];
    ASSERT_EQ(em_proxy_incoming_to(p.c[0], p.c[1], 256 * KiB, 0), 0);
    ASSERT_EQ(em_proxy_incoming_to(p.c[1], p.c[0], 256 * KiB, 0), 0);
    rd ry = {.fd = y}, rx = {.fd = x, .base = REVERSE_BASE};
    const uint64_t fwd = 3 * MiB, rev = MiB;
    /* Y reads only once X is done: the FIN finds bytes still queued */
    write_pattern(p.r, x, 0, fwd);
    ASSERT_EQ(shutdown(x, SHUT_WR), 0);
    run_for(p.r, 0.1);
    read_exactly(p.r, &ry, fwd, true);
    ASSERT_EQ(sides[0].peer_closed, 1);
    ASSERT_EQ(rc(&p, 0)->unbinds, 0);
    ASSERT_EQ(rc(&p, 1)->unbinds, 0);
    write_pattern(p.r, y, REVERSE_BASE, rev);
    read_exactly(p.r, &rx, rev, false);
    ASSERT_EQ(em_get_proxied_bytes(p.c[0]), fwd);
    ASSERT_EQ(em_get_proxied_bytes(p.c[1]), rev);
    ASSERT_EQ(shutdown(y, SHUT_WR), 0);
    read_exactly(p.r, &rx, rev, true);
    ASSERT(run_until(p.r, &rc(&p, 0)->unbinds, 5));
    ASSERT(run_until(p.r, &rc(&p, 1)->unbinds, 5));
    ASSERT_EQ(rc(&p, 0)->reason, 0);
    ASSERT_EQ(rc(&p, 1)->reason, 0);
    ASSERT_EQ(rc(&p, 0)->data_calls, 0);
    ASSERT_EQ(rc(&p, 1)->data_calls, 0);
    hp_close(&p);
}

TEST(proxy_fin_passes_on_reverse_still_flows_spliced) { proxy_fin(false); }
TEST(proxy_fin_passes_on_reverse_still_flows_copied) { proxy_fin(true); }

/* ============================================================== 5. TLS */

static void bye_then_close_write(em_conn *c, rec *x)
{
    (void)x;
    ASSERT_EQ(em_send_data(c, "bye", 3), 0);
    ASSERT_EQ(em_close_write(c), 0);
}

static bool tls_both_unbound(void *arg)
{
    rec **ends = arg;
    return ends[0]->unbinds && ends[1]->unbinds;
}

/* The libem client sends "bye" and em_close_write: close_notify, then FIN.
 * On the server, peer_closed runs (em.h: "through TLS, its close_notify")
 * and the connection stays open for writing: 1 MiB it sends then reaches
 * the client, which still reads after its own close_notify. The server's
 * em_close_write then ends both with unbind(0). */
static void tls_half_close(int max_version)
{
    int fd0 = open_fd_count();
    memset(sides, 0, sizeof sides);
    half_handler = rec_handler;
    half_handler.peer_closed = on_peer_closed;
    em_reactor *r = new_reactor();
    em_tls_opts so = tls_server_opts("server.pem", NULL), co = tls_client_opts();
    so.max_version = co.max_version = max_version;
    rec srv = {.tag = 1, .tls = &so, .store = true};
    rec cli = {.tag = 2, .tls = &co, .check_pattern = true, .on_handshake = bye_then_close_write};
    rec_pool_new(&srv, 1);
    srv.pool[0].ctx = &sides[0];
    em_server *s = em_start_server(r, "127.0.0.1", 0, &half_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli));
    rec *sc = &srv.pool[0];
    if (!run_until(r, &sides[0].peer_closed, 10))
        FAIL("no peer_closed: server unbound %d (%d), client handshakes %d", sc->unbinds,
             sc->reason, cli.handshakes);
    ASSERT_EQ(sc->len, 3);
    ASSERT(memcmp(sc->buf, "bye", 3) == 0);
    ASSERT_EQ(sc->unbinds, 0);
    ASSERT_EQ(cli.unbinds, 0);
    uint64_t sent = 0;
    send_pattern(sc->conn, 0, &sent, MiB);
    double deadline = now_mono() + 10;
    while (cli.bytes_in < sent && !sc->unbinds && !cli.unbinds && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    printf("  TLS %s: after close_notify the server sent %llu bytes; the client got %llu; "
           "server %s, client %s\n",
           max_version == EM_TLS_1_2 ? "1.2" : "1.3", (unsigned long long)sent,
           (unsigned long long)cli.bytes_in, sc->unbinds ? em_strerror(sc->reason) : "open",
           cli.unbinds ? em_strerror(cli.reason) : "open");
    if (sc->unbinds || cli.unbinds)
        FAIL("sending after the peer's close_notify: server unbound %d with %d (%s), client "
             "unbound %d with %d (%s), client got %llu of %llu",
             sc->unbinds, sc->reason, sc->tls_error, cli.unbinds, cli.reason, cli.tls_error,
             (unsigned long long)cli.bytes_in, (unsigned long long)sent);
    ASSERT_EQ(cli.bytes_in, sent);
    ASSERT_EQ(em_close_write(sc->conn), 0);
    rec *ends[2] = {sc, &cli};
    ASSERT(run_until_pred(r, tls_both_unbound, ends, 10));
    ASSERT_EQ(sc->reason, 0);
    ASSERT_EQ(cli.reason, 0);
    ASSERT_EQ(sides[0].peer_closed, 1);
    ASSERT_EQ(sc->data_calls, sides[0].data_calls_then);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(tls13_close_notify_runs_peer_closed_then_sends) { tls_half_close(EM_TLS_1_3); }
TEST(tls12_close_notify_runs_peer_closed_then_sends) { tls_half_close(EM_TLS_1_2); }

/* A TLS source proxied both ways with a raw plain peer Y: the TLS client's
 * em_close_write (close_notify) reaches Y as a FIN after every proxied
 * byte; the source, with peer_closed, stays open and 1 MiB from Y still
 * reaches the client, which reads after its close_notify. Y's FIN then
 * reaches the client as close_notify, and all ends with unbind(0). */
TEST(proxy_tls_close_notify_passes_on_as_fin)
{
    int fd0 = open_fd_count();
    memset(sides, 0, sizeof sides);
    half_handler = rec_handler;
    half_handler.peer_closed = on_peer_closed;
    em_reactor *r = new_reactor();
    em_tls_opts so = tls_server_opts("server.pem", NULL), co = tls_client_opts();
    rec srv = {.tag = 1, .tls = &so}, plain = {.tag = 2};
    rec cli = {.tag = 3, .tls = &co, .check_pattern = true};
    rec_pool_new(&srv, 1);
    rec_pool_new(&plain, 1);
    srv.pool[0].ctx = &sides[0];
    plain.pool[0].ctx = &sides[1];
    em_server *s = em_start_server(r, "127.0.0.1", 0, &half_handler, &srv);
    em_server *s2 = em_start_server(r, "127.0.0.1", 0, &half_handler, &plain);
    ASSERT_NOT_NULL(s);
    ASSERT_NOT_NULL(s2);
    int y = tcp_connect_raw("127.0.0.1", em_server_port(s2));
    set_nonblock(y);
    ASSERT(run_until(r, &plain.pool[0].post_inits, 5));
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli));
    ASSERT(run_until(r, &srv.pool[0].handshakes, 10));
    ASSERT(run_until(r, &cli.handshakes, 10));
    rec *src = &srv.pool[0], *dst = &plain.pool[0];
    ASSERT_EQ(em_proxy_incoming_to(src->conn, dst->conn, 0, 0), 0);
    ASSERT_EQ(em_proxy_incoming_to(dst->conn, src->conn, 0, 0), 0);
    uint64_t sent = 0;
    send_pattern(cli.conn, 0, &sent, 300000);
    ASSERT_EQ(em_close_write(cli.conn), 0);
    rd ry = {.fd = y};
    read_exactly(r, &ry, sent, true);
    ASSERT_EQ(sides[0].peer_closed, 1);
    ASSERT_EQ(src->unbinds, 0);
    write_pattern(r, y, 0, MiB);
    double deadline = now_mono() + 10;
    while (cli.bytes_in < MiB && !cli.unbinds && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(cli.bytes_in, MiB);
    ASSERT_EQ(shutdown(y, SHUT_WR), 0);
    rec *ends[2] = {src, &cli};
    ASSERT(run_until_pred(r, tls_both_unbound, ends, 10));
    ASSERT(run_until(r, &dst->unbinds, 5));
    ASSERT_EQ(src->reason, 0);
    ASSERT_EQ(cli.reason, 0);
    ASSERT_EQ(dst->reason, 0);
    ASSERT_EQ(src->data_calls, 0);
    ASSERT_EQ(dst->data_calls, 0);
    close(y);
    ASSERT_EQ(em_stop_server(s), 0);
    ASSERT_EQ(em_stop_server(s2), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    rec_free(&plain);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

static int detached_fd = -1;

static void detach_client(em_conn *c, rec *x)
{
    (void)x;
    detached_fd = em_detach(c);
}

/* A FIN without close_notify is a truncation, not a half-close: with
 * peer_closed set, the TLS server unbinds with EM_ETLS_TRUNCATED and
 * peer_closed does not run. The client is detached after its handshake
 * (no close_notify) and its socket half-closed by hand. */
TEST(tls_fin_without_close_notify_is_not_peer_closed)
{
    int fd0 = open_fd_count();
    memset(sides, 0, sizeof sides);
    half_handler = rec_handler;
    half_handler.peer_closed = on_peer_closed;
    em_reactor *r = new_reactor();
    em_tls_opts so = tls_server_opts("server.pem", NULL), co = tls_client_opts();
    rec srv = {.tag = 1, .tls = &so};
    rec cli = {.tag = 2, .tls = &co, .on_handshake = detach_client};
    rec_pool_new(&srv, 1);
    srv.pool[0].ctx = &sides[0];
    em_server *s = em_start_server(r, "127.0.0.1", 0, &half_handler, &srv);
    ASSERT_NOT_NULL(s);
    detached_fd = -1;
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli));
    ASSERT(run_until(r, &cli.unbinds, 10));
    ASSERT_GE(detached_fd, 0);
    ASSERT(run_until(r, &srv.pool[0].handshakes, 5));
    ASSERT_EQ(shutdown(detached_fd, SHUT_WR), 0);
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(srv.pool[0].reason, EM_ETLS_TRUNCATED);
    ASSERT_EQ(sides[0].peer_closed, 0);
    close(detached_fd);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}
