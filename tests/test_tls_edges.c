/* Edges of the TLS layer, one case per defect a review found (and commit
 * e7a1529 fixed); each case fails on the code before that commit:
 *
 *  - an SSL_write OpenSSL could not finish is offered again with at least
 *    as many bytes, even after the settle of borrowed bytes copied the
 *    queue into other chunks (it was offered fewer: "bad length", EM_ETLS);
 *  - records that came with the peer's last handshake message are
 *    delivered when the handshake completes in a flush (they stayed inside
 *    OpenSSL, where no poller sees them), on a client and on a server;
 *  - STARTTLS: the plain reply queued before em_start_tls goes out whole
 *    and before any byte of the handshake, even when the client's hello
 *    comes early (the read path ran the handshake: the reply stalled, or
 *    the ServerHello went out in its middle);
 *  - em_set_pending_connect_timeout after em_start_tls bounds the
 *    handshake (it was ignored), and 0 set then lifts the bound;
 *  - em_tls_error_string stays valid in unbind after em_reconnect (it was
 *    freed by it);
 *  - close after writing on a paused, idle TLS connection closes at once,
 *    as on a plain one (it waited for a resume).
 *
 * Some cases drive a bare OpenSSL peer on a raw loopback socket through
 * memory BIOs, from the test's own loop (no thread): the test decides when
 * each of its flights reaches the socket, and waits for the bytes to be
 * there (FIONREAD) before the reactor's next turn. */
#include "harness.h"
#include "tls_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

TLS_FIXTURE();

#define KiB ((size_t)1 << 10)
/* The most plaintext a TLS record carries. */
#define RECORD (16 * KiB)

static int bytes_readable(int fd)
{
    int n = -1;
    ASSERT_EQ(ioctl(fd, FIONREAD, &n), 0);
    return n;
}

/* Waits (bounded) until fd's receive queue holds n bytes: what was sent on
 * loopback is there before the reactor's next turn. */
static void wait_readable_bytes(int fd, int n)
{
    double deadline = now_mono() + 2;
    while (bytes_readable(fd) < n && now_mono() < deadline)
        sched_yield();
    if (bytes_readable(fd) < n)
        FAIL("%d bytes sent on loopback, %d arrived after 2 s", n, bytes_readable(fd));
}

static void wait_writable_fd(int fd)
{
    struct pollfd q = {.fd = fd, .events = POLLOUT};
    int n;
    do
        n = poll(&q, 1, 2000);
    while (n < 0 && errno == EINTR);
    if (n != 1 || !(q.revents & POLLOUT))
        FAIL("socket %d not writable after 2 s (poll %d, revents %#x)", fd, n, q.revents);
}

/* A blocking TCP client of 127.0.0.1:port with a small receive buffer
 * (set before connect, so the window is small from the start). */
static int connect_small_rcvbuf(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(fd >= 0);
    ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        FAIL("connect 127.0.0.1:%d: %s", port, strerror(errno));
    return fd;
}

/* ---------------------------------------------------- a bare OpenSSL peer
 *
 * Memory BIOs over a raw non-blocking socket: what OpenSSL writes stays in
 * wb until peer_push sends it, so a flight can be held back and sent in
 * one piece with what follows it. */
typedef struct peer {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rb, *wb; /* owned by ssl */
    bool eof;
} peer;

static void peer_open(peer *p, int fd, bool server, int max_version)
{
    memset(p, 0, sizeof *p);
    p->fd = fd;
    set_nonblock(fd);
    p->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    ASSERT_NOT_NULL(p->ctx);
    if (max_version)
        ASSERT_EQ(SSL_CTX_set_max_proto_version(p->ctx, max_version), 1);
    if (server) {
        ASSERT_EQ(SSL_CTX_use_certificate_chain_file(p->ctx, tls_file("server.pem")), 1);
        ASSERT_EQ(SSL_CTX_use_PrivateKey_file(p->ctx, tls_file("server.key"), SSL_FILETYPE_PEM),
                  1);
        SSL_CTX_set_options(p->ctx, SSL_OP_NO_TICKET);
        ASSERT_EQ(SSL_CTX_set_num_tickets(p->ctx, 0), 1);
    } else {
        ASSERT_EQ(SSL_CTX_load_verify_locations(p->ctx, tls_file("ca.pem"), NULL), 1);
        SSL_CTX_set_verify(p->ctx, SSL_VERIFY_PEER, NULL);
    }
    p->ssl = SSL_new(p->ctx);
    p->rb = BIO_new(BIO_s_mem());
    p->wb = BIO_new(BIO_s_mem());
    ASSERT(p->ssl && p->rb && p->wb);
    SSL_set_bio(p->ssl, p->rb, p->wb);
    if (server) {
        SSL_set_accept_state(p->ssl);
    } else {
        SSL_set_connect_state(p->ssl);
        ASSERT_EQ(SSL_set1_host(p->ssl, "localhost"), 1);
    }
}

static void peer_free(peer *p)
{
    SSL_free(p->ssl);
    SSL_CTX_free(p->ctx);
    if (p->fd >= 0)
        close(p->fd);
    memset(p, 0, sizeof *p);
    p->fd = -1;
}

/* What the socket holds now goes to OpenSSL. */
static void peer_pull(peer *p)
{
    char buf[16384];
    for (;;) {
        ssize_t n = recv(p->fd, buf, sizeof buf, 0);
        if (n > 0) {
            ASSERT_EQ(BIO_write(p->rb, buf, (int)n), n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        p->eof = true; /* EOF or reset */
        return;
    }
}

/* Sends everything OpenSSL has written, in one send when the socket takes
 * it; returns how many bytes. */
static size_t peer_push(peer *p)
{
    char *data;
    long n = BIO_get_mem_data(p->wb, &data);
    size_t off = 0;
    double deadline = now_mono() + 2;
    while (off < (size_t)n) {
        ssize_t w = send(p->fd, data + off, (size_t)n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR) && now_mono() < deadline) {
            struct pollfd q = {.fd = p->fd, .events = POLLOUT};
            poll(&q, 1, 10);
        } else {
            FAIL("peer: send %zu of %ld bytes: %s", off, n, strerror(errno));
        }
    }
    ASSERT_EQ(BIO_reset(p->wb), 1);
    return off;
}

static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *s = e ? ERR_reason_error_string(e) : NULL;
    return s ? s : "-";
}

/* Turns of the reactor and steps of the peer's handshake until the peer's
 * is complete. hold: what the peer wrote last (its final flight) stays in
 * wb, unsent. */
static void peer_handshake(peer *p, em_reactor *r, bool hold)
{
    double deadline = now_mono() + 5;
    for (;;) {
        ERR_clear_error();
        int rc = SSL_do_handshake(p->ssl);
        if (rc == 1)
            break;
        int e = SSL_get_error(p->ssl, rc);
        if (e != SSL_ERROR_WANT_READ)
            FAIL("peer handshake: SSL error %d (%s)", e, ssl_reason());
        peer_push(p);
        if (p->eof)
            FAIL("peer handshake: libem closed the connection");
        if (now_mono() > deadline)
            FAIL("peer handshake: not complete after 5 s");
        ASSERT_GE(em_run_once(r, 0.005), 0);
        peer_pull(p);
    }
    if (!hold)
        peer_push(p);
}

/* n bytes of application data from libem, exactly. */
static void peer_read(peer *p, em_reactor *r, char *out, size_t n)
{
    size_t got = 0, k;
    double deadline = now_mono() + 5;
    while (got < n) {
        ERR_clear_error();
        if (SSL_read_ex(p->ssl, out + got, n - got, &k)) {
            got += k;
            continue;
        }
        int e = SSL_get_error(p->ssl, 0);
        if (e != SSL_ERROR_WANT_READ)
            FAIL("peer read: SSL error %d (%s) after %zu of %zu bytes", e, ssl_reason(), got, n);
        if (p->eof)
            FAIL("peer read: libem closed after %zu of %zu bytes", got, n);
        if (now_mono() > deadline)
            FAIL("peer read: %zu of %zu bytes after 5 s", got, n);
        peer_push(p);
        ASSERT_GE(em_run_once(r, 0.005), 0);
        peer_pull(p);
    }
}

static void peer_write(peer *p, const char *s)
{
    size_t n;
    ERR_clear_error();
    ASSERT_EQ(SSL_write_ex(p->ssl, s, strlen(s), &n), 1);
    ASSERT_EQ(n, strlen(s));
}

/* A libem TLS (or plain, tls NULL) server on 127.0.0.1 recording into
 * pool[0] of *srv, for a raw client. */
static em_server *server_for_raw(em_reactor *r, rec *srv, const em_tls_opts *tls)
{
    srv->tls = tls;
    rec_pool_new(srv, 1);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, srv);
    ASSERT_NOT_NULL(s);
    return s;
}

static bool accepted(void *arg)
{
    rec *srv = arg;
    return srv->pool_used > 0;
}

/* ======================== 1. a write retried offers the whole record again */

/* The server answers the client's record (16 KiB, one receive_data call)
 * with 16 chunks: 15 of one byte, then the rest of the record, borrowed
 * from the read buffer. The one-byte chunks are the record's first 15
 * bytes, borrowed too (borrowed_only), or its first 7 between 8 copied
 * "#". The first SSL_write gathers a whole record from the 16 chunks and
 * the socket takes only part of it (SO_SNDBUF 4096 on a unix socket, the
 * client paused); the settle then copies the borrowed bytes into chunks
 * of 16 KiB less a header, and every retry (the next flush, the client's
 * resume) must still offer a whole record. */
typedef struct framing {
    tls_pair *p;
    bool borrowed_only;
    char expect[2 * RECORD];
    size_t expect_len;
} framing;

static void small_sndbuf(em_conn *c, rec *x)
{
    (void)x;
    int v = 4096;
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_SNDBUF, &v, sizeof v), 0);
}

static void send_one_record(em_conn *c, rec *x)
{
    (void)x;
    char buf[RECORD];
    fill_pattern(buf, 0, sizeof buf);
    ASSERT_EQ(em_send_data(c, buf, sizeof buf), 0);
}

static void queue_framed(framing *f, em_conn *c, const char *d, size_t n)
{
    ASSERT_EQ(em_send_data(c, d, n), 0);
    ASSERT_LE(f->expect_len + n, sizeof f->expect);
    memcpy(f->expect + f->expect_len, d, n);
    f->expect_len += n;
}

static void frame_reply(em_conn *c, rec *x, const char *d, size_t n)
{
    framing *f = x->ctx;
    if (x->data_calls != 1)
        FAIL("a second receive_data (%zu bytes): the client sent one record", n);
    if (n != RECORD)
        FAIL("the client's record came in a piece of %zu bytes", n);
    /* the client stops reading: what the server writes fills its socket */
    ASSERT_EQ(em_pause(f->p->cli.conn), 0);
    if (f->borrowed_only) {
        for (size_t i = 0; i < 15; i++)
            queue_framed(f, c, d + i, 1);
        queue_framed(f, c, d + 15, n - 15);
    } else {
        for (size_t i = 0; i < 7; i++) {
            queue_framed(f, c, "#", 1); /* copied */
            queue_framed(f, c, d + i, 1);
        }
        queue_framed(f, c, "#", 1); /* copied */
        queue_framed(f, c, d + 7, n - 7);
    }
}

static bool framing_answered(void *arg)
{
    tls_pair *p = arg;
    return p->srv.pool_used && (tls_srv0(p)->data_calls || tls_srv0(p)->unbinds);
}

static bool framing_delivered(void *arg)
{
    framing *f = arg;
    tls_pair *p = f->p;
    return p->cli.len >= f->expect_len || p->cli.unbinds || tls_srv0(p)->unbinds;
}

static void write_retry_after_settle(bool borrowed_only)
{
    tls_pair p = {0};
    framing f = {.p = &p, .borrowed_only = borrowed_only};
    p.srv = (rec){.tag = 1, .ctx = &f, .on_post_init = small_sndbuf, .on_data = frame_reply};
    p.cli = (rec){.tag = 2, .store = true, .on_handshake = send_one_record};
    tls_pair_open(&p, true);
    if (!run_until_pred(p.r, framing_answered, &p, 5))
        FAIL("the server got no record from the client");
    rec *s = tls_srv0(&p);
    if (s->unbinds)
        FAIL("the server unbound with %d (%s) as it wrote its answer: the write OpenSSL "
             "could not finish was offered again with fewer bytes", s->reason, s->tls_error);
    ASSERT_EQ(s->data_calls, 1);
    ASSERT_EQ(f.expect_len, borrowed_only ? RECORD : RECORD + 8);
    /* the first record did not fit in the socket: the whole answer waits */
    ASSERT(em_is_paused(p.cli.conn));
    ASSERT_EQ(em_get_outbound_data_size(s->conn), f.expect_len);
    ASSERT_EQ(em_resume(p.cli.conn), 0);
    run_until_pred(p.r, framing_delivered, &f, 5);
    if (s->unbinds || p.cli.unbinds)
        FAIL("after %zu of %zu bytes: server unbound %d (reason %d: %s), client %d (%d: %s); "
             "the write OpenSSL could not finish was offered again with fewer bytes",
             p.cli.len, f.expect_len, s->unbinds, s->reason, s->tls_error, p.cli.unbinds,
             p.cli.reason, p.cli.tls_error);
    ASSERT_EQ(p.cli.len, f.expect_len);
    ASSERT(memcmp(p.cli.buf, f.expect, f.expect_len) == 0);
    ASSERT_EQ(em_get_outbound_data_size(s->conn), 0);
    ASSERT_EQ(close_conn(p.cli.conn, true), 0);
    tls_pair_finish(&p);
    ASSERT_EQ(p.cli.reason, 0);
    ASSERT_EQ(s->reason, 0); /* close_notify */
    tls_pair_free(&p);
}

TEST(tls_write_retry_after_settle_offers_whole_record)
{
    write_retry_after_settle(false);
}

TEST(tls_write_retry_after_settle_offers_whole_record_borrowed_only)
{
    write_retry_after_settle(true);
}

/* ======== 2. records that came with the Finished, handshake done in a flush */

/* A libem TLS 1.2 client; the server, a bare OpenSSL peer, speaks first: a
 * banner right after its handshake, sent in one piece with its CCS and
 * Finished. The client has a request queued (sent before its handshake
 * completed), so the flush at the start of the reactor's turn drives the
 * handshake: it reads the server's last flight and, with it, the banner
 * record (read-ahead), leaving the socket empty. The banner must reach
 * receive_data without another byte from the server. */
static bool got_banner(void *arg)
{
    rec *x = arg;
    return x->len >= 7 || x->unbinds;
}

TEST(tls_records_with_finished_delivered_when_handshake_completes_in_flush)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 4, &port);
    set_nonblock(lfd);
    em_tls_opts co = tls_client_opts();
    co.max_version = EM_TLS_1_2;
    rec cli = {.tag = 1, .store = true, .tls = &co};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    ASSERT_EQ(cli.tls_rc, 0);
    int fd = -1;
    double deadline = now_mono() + 5;
    while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.005), 0);
    ASSERT(fd >= 0);
    peer srv;
    peer_open(&srv, fd, true, TLS1_2_VERSION);
    peer_handshake(&srv, r, true); /* its CCS and Finished held back */
    ASSERT_EQ(cli.handshakes, 0);
    peer_write(&srv, "BANNER\n");
    int n = (int)peer_push(&srv); /* CCS, Finished and the banner, in one send */
    int cfd = em_conn_fd(cli.conn);
    wait_readable_bytes(cfd, n);
    ASSERT_EQ(em_send_data(cli.conn, "request\n", 8), 0);
    ASSERT_GE(em_run_once(r, 0), 0);
    /* the flush completed the handshake and read the whole flight */
    ASSERT_EQ(cli.handshakes, 1);
    ASSERT_EQ(bytes_readable(cfd), 0);
    if (!run_until_pred(r, got_banner, &cli, 2))
        FAIL("the banner that came with the server's Finished was not delivered in 2 s "
             "(%zu bytes; the socket holds %d)", cli.len, bytes_readable(cfd));
    ASSERT_EQ(cli.unbinds, 0);
    ASSERT_EQ(cli.len, 7);
    ASSERT(memcmp(cli.buf, "BANNER\n", 7) == 0);
    /* and the request went out once the handshake was done */
    char req[8];
    peer_read(&srv, r, req, sizeof req);
    ASSERT(memcmp(req, "request\n", 8) == 0);
    ASSERT_EQ(close_conn(cli.conn, true), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, 0);
    peer_free(&srv);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

/* The server side, TLS 1.3: a bare OpenSSL client sends its Finished and
 * its first request in one piece (as HTTP clients do). The libem server
 * has something queued for the client (sent before its handshake
 * completed), so the flush drives its handshake, which reads the Finished
 * and the request. The request must reach receive_data. */
static bool got_request(void *arg)
{
    rec *x = arg;
    return x->len >= 8 || x->unbinds;
}

TEST(tls_server_request_with_finished_delivered_when_handshake_completes_in_flush)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    em_tls_opts so = tls_server_opts("server.pem", NULL);
    rec srv = {.tag = 1, .store = true};
    em_server *s = server_for_raw(r, &srv, &so);
    peer cli;
    peer_open(&cli, tcp_connect_raw("127.0.0.1", em_server_port(s)), false, 0);
    peer_handshake(&cli, r, true); /* its Finished held back */
    ASSERT(srv.pool_used);
    rec *x = &srv.pool[0];
    ASSERT_EQ(x->tls_rc, 0);
    ASSERT_EQ(x->handshakes, 0);
    peer_write(&cli, "REQUEST\n");
    int n = (int)peer_push(&cli); /* Finished and the request, in one send */
    int sfd = em_conn_fd(x->conn);
    wait_readable_bytes(sfd, n);
    ASSERT_EQ(em_send_data(x->conn, "broadcast\n", 10), 0);
    ASSERT_GE(em_run_once(r, 0), 0);
    ASSERT_EQ(x->handshakes, 1);
    ASSERT_EQ(bytes_readable(sfd), 0);
    if (!run_until_pred(r, got_request, x, 2))
        FAIL("the request that came with the client's Finished was not delivered in 2 s "
             "(%zu bytes; the socket holds %d)", x->len, bytes_readable(sfd));
    ASSERT_EQ(x->unbinds, 0);
    ASSERT_EQ(x->len, 8);
    ASSERT(memcmp(x->buf, "REQUEST\n", 8) == 0);
    char b[10];
    peer_read(&cli, r, b, sizeof b);
    ASSERT(memcmp(b, "broadcast\n", 10) == 0);
    ASSERT_EQ(close_conn(x->conn, true), 0);
    ASSERT(run_until(r, &x->unbinds, 5));
    ASSERT_EQ(x->reason, 0);
    peer_free(&cli);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ================================================= 3. STARTTLS, eager hello */

/* A plain libem server: on "STARTTLS\n" it queues a plain reply of
 * PLAIN_REPLY pattern bytes, far more than its socket takes (SO_SNDBUF
 * 16 KiB, the client's SO_RCVBUF 16 KiB), then starts TLS; after the
 * handshake it echoes what it gets. The client is a bare OpenSSL client
 * that sends (some of) its ClientHello before it reads the reply. */
#define PLAIN_REPLY ((size_t)1 << 20)

typedef struct starttls {
    em_tls_opts so;
    bool started;
} starttls;

static void starttls_sndbuf(em_conn *c, rec *x)
{
    (void)x;
    int v = 16384;
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_SNDBUF, &v, sizeof v), 0);
}

static void starttls_data(em_conn *c, rec *x, const char *d, size_t n)
{
    starttls *st = x->ctx;
    if (st->started) { /* decrypted */
        ASSERT_EQ(em_send_data(c, d, n), 0);
        return;
    }
    if (n != 9 || memcmp(d, "STARTTLS\n", 9) != 0)
        FAIL("the server got %zu bytes, not STARTTLS alone", n);
    char *buf = malloc(PLAIN_REPLY);
    ASSERT_NOT_NULL(buf);
    fill_pattern(buf, 0, PLAIN_REPLY);
    ASSERT_EQ(em_send_data(c, buf, PLAIN_REPLY), 0);
    free(buf);
    x->tls_rc = em_start_tls(c, &st->so);
    ASSERT_EQ(x->tls_rc, 0);
    st->started = true;
}

typedef struct sttest {
    int fd0;
    em_reactor *r;
    em_server *s;
    starttls st;
    rec srv;
    peer cli;
    size_t got; /* plain bytes read */
} sttest;

static bool starttls_started(void *arg)
{
    sttest *t = arg;
    return t->st.started || (t->srv.pool_used && t->srv.pool[0].unbinds);
}

/* Connects, makes the ClientHello (in cli.wb, unsent), sends STARTTLS and
 * runs until the server has queued its reply and started TLS. */
static rec *starttls_open(sttest *t)
{
    t->fd0 = open_fd_count();
    t->r = new_reactor();
    t->st.so = tls_server_opts("server.pem", NULL);
    t->srv = (rec){.tag = 1, .store = true, .ctx = &t->st, .on_post_init = starttls_sndbuf,
                   .on_data = starttls_data};
    t->s = server_for_raw(t->r, &t->srv, NULL);
    peer_open(&t->cli, connect_small_rcvbuf(em_server_port(t->s), 16384), false, 0);
    ERR_clear_error();
    ASSERT_EQ(SSL_do_handshake(t->cli.ssl), -1);
    ASSERT_EQ(SSL_get_error(t->cli.ssl, -1), SSL_ERROR_WANT_READ);
    ASSERT_GT(BIO_ctrl_pending(t->cli.wb), 3);
    ASSERT_EQ(send(t->cli.fd, "STARTTLS\n", 9, MSG_NOSIGNAL), 9);
    if (!run_until_pred(t->r, starttls_started, t, 5))
        FAIL("the server did not get STARTTLS");
    rec *x = &t->srv.pool[0];
    ASSERT_EQ(x->unbinds, 0);
    /* the socket took a part of the reply: the rest waits */
    ASSERT_GT(em_get_outbound_data_size(x->conn), PLAIN_REPLY / 2);
    return x;
}

/* The plain reply's bytes the socket holds now (never beyond the reply):
 * each must be its pattern_byte. */
static void recv_plain(sttest *t)
{
    char buf[16384];
    while (t->got < PLAIN_REPLY) {
        size_t want = PLAIN_REPLY - t->got < sizeof buf ? PLAIN_REPLY - t->got : sizeof buf;
        ssize_t n = recv(t->cli.fd, buf, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0)
            FAIL("the server closed after %zu of %zu plain bytes (%s)", t->got, PLAIN_REPLY,
                 n ? strerror(errno) : "EOF");
        for (ssize_t i = 0; i < n; i++)
            if ((unsigned char)buf[i] != pattern_byte(t->got + (size_t)i))
                FAIL("byte %zu of the plain reply is not the reply's but %02x %02x %02x (a "
                     "TLS record's header): the handshake wrote before the plain bytes",
                     t->got + (size_t)i, (unsigned char)buf[i],
                     i + 1 < n ? (unsigned char)buf[i + 1] : 0,
                     i + 2 < n ? (unsigned char)buf[i + 2] : 0);
        t->got += (size_t)n;
    }
}

static void read_plain_reply(sttest *t, rec *x)
{
    double deadline = now_mono() + 3;
    while (t->got < PLAIN_REPLY && now_mono() < deadline) {
        recv_plain(t);
        ASSERT_GE(em_run_once(t->r, 0.002), 0);
    }
    if (t->got < PLAIN_REPLY)
        FAIL("the plain reply stalled: %zu of %zu bytes after 3 s, %zu still queued on the "
             "server (unbound %d)", t->got, PLAIN_REPLY,
             x->conn ? em_get_outbound_data_size(x->conn) : 0, x->unbinds);
}

static bool handshake_seen(void *arg)
{
    rec *x = arg;
    return x->handshakes || x->unbinds;
}

/* After the reply: the handshake, an echo, the client's close_notify. */
static void starttls_finish(sttest *t, rec *x)
{
    ASSERT_EQ(x->handshakes, 0);
    peer_handshake(&t->cli, t->r, false);
    ASSERT(run_until_pred(t->r, handshake_seen, x, 5));
    ASSERT_EQ(x->handshakes, 1);
    peer_write(&t->cli, "ping");
    peer_push(&t->cli);
    char b[4];
    peer_read(&t->cli, t->r, b, sizeof b);
    ASSERT(memcmp(b, "ping", 4) == 0);
    ASSERT_EQ(SSL_shutdown(t->cli.ssl), 0); /* close_notify sent, the server's not yet seen */
    peer_push(&t->cli);
    ASSERT(run_until(t->r, &x->unbinds, 5));
    ASSERT_EQ(x->reason, 0);
    ASSERT_EQ(x->len, 13);
    ASSERT(memcmp(x->buf, "STARTTLS\nping", 13) == 0);
    peer_free(&t->cli);
    ASSERT_EQ(em_stop_server(t->s), 0);
    REACTOR_FREE_CHECKED(t->r);
    rec_free(&t->srv);
    ASSERT_NO_FD_LEAK(t->fd0);
}

/* The client sends the first three bytes of its ClientHello right after
 * STARTTLS, then reads the reply. Those bytes must not start the handshake
 * (which waited for more of the hello instead of writing the reply): the
 * whole reply comes, then the handshake. */
TEST(tls_starttls_plain_reply_not_stalled_by_early_hello)
{
    sttest t = {0};
    rec *x = starttls_open(&t);
    unsigned char head[3];
    ASSERT_EQ(BIO_read(t.cli.wb, head, 3), 3);
    ASSERT(head[0] == 0x16 && head[1] == 0x03); /* a handshake record */
    ASSERT_EQ(send(t.cli.fd, head, 3, MSG_NOSIGNAL), 3);
    wait_readable_bytes(em_conn_fd(x->conn), 3);
    read_plain_reply(&t, x);
    starttls_finish(&t, x); /* sends the rest of the hello */
}

/* The whole ClientHello arrives while the reply is still queued, and the
 * server's socket has room (the client read what it held): the reactor's
 * next turn sees the socket readable and writable. The reply's bytes come
 * first, every one of them, and only then the ServerHello. */
TEST(tls_starttls_plain_bytes_before_handshake)
{
    sttest t = {0};
    rec *x = starttls_open(&t);
    int n = (int)peer_push(&t.cli); /* the ClientHello */
    int sfd = em_conn_fd(x->conn);
    wait_readable_bytes(sfd, n);
    recv_plain(&t);
    ASSERT_GT(t.got, 0);
    wait_writable_fd(sfd);
    ASSERT_GT(em_get_outbound_data_size(x->conn), 0);
    read_plain_reply(&t, x);
    starttls_finish(&t, x);
}

/* ============================================ 4. the handshake's time limit */

/* The server starts TLS itself in post_init: started is read just before
 * em_start_tls, from which the handshake's time counts. */
typedef struct hs_limit {
    const em_tls_opts *so;
    double started, unbound;
} hs_limit;

static void limit_after_start(em_conn *c, rec *x)
{
    hs_limit *h = x->ctx;
    h->started = now_mono();
    x->tls_rc = em_start_tls(c, h->so);
    ASSERT_EQ(x->tls_rc, 0);
    ASSERT_EQ(em_set_pending_connect_timeout(c, 0.3), 0);
}

static void note_unbound(em_conn *c, rec *x, int reason)
{
    (void)c;
    (void)reason;
    hs_limit *h = x->ctx;
    h->unbound = now_mono();
}

/* A server sets the pending-connect timeout to 0.3 s after em_start_tls;
 * the client connects and says nothing: the server unbinds with ETIMEDOUT
 * 0.3 s after the start (not after the default 20 s). */
TEST(tls_pending_connect_timeout_set_after_start_bounds_handshake)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    em_tls_opts so = tls_server_opts("server.pem", NULL);
    hs_limit h = {.so = &so};
    rec srv = {.tag = 1, .ctx = &h, .on_post_init = limit_after_start,
               .on_unbind = note_unbound};
    em_server *s = server_for_raw(r, &srv, NULL);
    int fd = tcp_connect_raw("127.0.0.1", em_server_port(s));
    ASSERT(run_until_pred(r, accepted, &srv, 5));
    rec *x = &srv.pool[0];
    if (!run_until(r, &x->unbinds, 2))
        FAIL("the handshake still waits 2 s after its start; the timeout was set to 0.3 s "
             "after em_start_tls");
    double took = h.unbound - h.started;
    ASSERT_EQ(x->reason, ETIMEDOUT);
    ASSERT_STREQ(x->tls_error, "handshake timed out");
    ASSERT_DBL_GE(took, 0.3);
    ASSERT_DBL_LE(took, 0.3 + 0.3);
    printf("  the silent client timed out %.3f s after em_start_tls\n", took);
    fflush(stdout);
    close(fd);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

static void limit_lifted_after_start(em_conn *c, rec *x)
{
    hs_limit *h = x->ctx;
    ASSERT_EQ(em_set_pending_connect_timeout(c, 0.2), 0);
    h->started = now_mono();
    x->tls_rc = em_start_tls(c, h->so);
    ASSERT_EQ(x->tls_rc, 0);
    ASSERT_EQ(em_set_pending_connect_timeout(c, 0), 0);
}

/* The same with 0.2 s set before em_start_tls and 0 (no limit) after it:
 * the silent client is still connected well after 0.2 s, and the server
 * unbinds only when the client goes. */
TEST(tls_pending_connect_timeout_cleared_after_start_lifts_handshake_bound)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    em_tls_opts so = tls_server_opts("server.pem", NULL);
    hs_limit h = {.so = &so};
    rec srv = {.tag = 1, .ctx = &h, .on_post_init = limit_lifted_after_start,
               .on_unbind = note_unbound};
    em_server *s = server_for_raw(r, &srv, NULL);
    int fd = tcp_connect_raw("127.0.0.1", em_server_port(s));
    ASSERT(run_until_pred(r, accepted, &srv, 5));
    rec *x = &srv.pool[0];
    run_for(r, 0.4);
    if (x->unbinds)
        FAIL("unbound %.3f s after em_start_tls with %d (%s): the limit was lifted after it",
             h.unbound - h.started, x->reason, x->tls_error);
    close(fd);
    ASSERT(run_until(r, &x->unbinds, 5));
    ASSERT_EQ(x->reason, EM_ETLS); /* the client's EOF, not a timeout */
    ASSERT_STREQ(x->tls_error, "peer closed the connection during the handshake");
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ================================= 5. the error string and em_reconnect */

/* An allocator that overwrites what libem frees (libem's own memory only:
 * OpenSSL keeps its allocator), so that a read of freed memory shows
 * without ASan too; under ASan the read is reported. */
#define SCRIBBLE_HDR 16

static void *scribble_malloc(size_t n)
{
    size_t *h = malloc(SCRIBBLE_HDR + n);
    if (!h)
        return NULL;
    h[0] = n;
    return (char *)h + SCRIBBLE_HDR;
}

static void scribble_free(void *p)
{
    if (!p)
        return;
    size_t *h = (size_t *)((char *)p - SCRIBBLE_HDR);
    memset(p, 0xdb, h[0]);
    free(h);
}

static void *scribble_realloc(void *p, size_t n)
{
    if (!p)
        return scribble_malloc(n);
    size_t *h = (size_t *)((char *)p - SCRIBBLE_HDR);
    size_t old = h[0];
    void *q = scribble_malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, old < n ? old : n);
    scribble_free(p);
    return q;
}

/* A client that reconnects from unbind, EventMachine's retry idiom: the
 * first attempt fails verification (the server's certificate is from a CA
 * it does not trust); in that unbind it reads em_tls_error_string, calls
 * em_reconnect and em_start_tls (insecure, this time), then logs the
 * string: still the same text. */
typedef struct retry {
    int port;
    em_tls_opts verify, insecure;
    int start_rc[2], reconnect_rc, unbinds, reasons[2], handshakes;
    char before[256], after[256];
} retry;

static void retry_post_init(em_conn *c)
{
    retry *t = em_conn_arg(c);
    t->start_rc[0] = em_start_tls(c, &t->verify);
}

static void retry_handshake(em_conn *c)
{
    retry *t = em_conn_arg(c);
    t->handshakes++;
    ASSERT_EQ(em_close_connection_after_writing(c), 0);
}

static void retry_unbind(em_conn *c, int reason)
{
    retry *t = em_conn_arg(c);
    if (t->unbinds >= 2)
        FAIL("a third unbind (%d)", reason);
    t->reasons[t->unbinds++] = reason;
    if (t->unbinds > 1)
        return;
    const char *why = em_tls_error_string(c);
    if (!why)
        FAIL("unbind(%d) of the refused handshake without an error string", reason);
    size_t len = strlen(why);
    ASSERT_LT(len, sizeof t->before);
    memcpy(t->before, why, len + 1);
    t->reconnect_rc = em_reconnect(c, "127.0.0.1", t->port);
    t->start_rc[1] = em_start_tls(c, &t->insecure);
    /* still inside unbind: the string is still valid */
    memcpy(t->after, why, len + 1);
}

static const em_handler retry_handler = {
    .post_init = retry_post_init,
    .ssl_handshake_completed = retry_handshake,
    .unbind = retry_unbind,
};

static bool retry_done(void *arg)
{
    rec *srv = arg;
    retry *t = srv->ctx;
    return t->unbinds == 2 && srv->pool_used == 2 && srv->pool[0].unbinds &&
           srv->pool[1].unbinds;
}

TEST(tls_error_string_valid_in_unbind_after_reconnect)
{
    ASSERT_EQ(em_set_allocator(scribble_malloc, scribble_realloc, scribble_free), 0);
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    em_tls_opts so = tls_server_opts("untrusted.pem", NULL);
    retry t = {.verify = tls_client_opts(), .insecure = {.insecure = true}};
    rec srv = {.tag = 1, .tls = &so, .ctx = &t};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    t.port = em_server_port(s);
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", t.port, &retry_handler, &t));
    ASSERT_EQ(t.start_rc[0], 0);
    if (!run_until_pred(r, retry_done, &srv, 5))
        FAIL("client unbinds %d, server accepted %d", t.unbinds, srv.pool_used);
    ASSERT_EQ(t.reasons[0], EM_ETLS);
    if (!strstr(t.before, "certificate verify failed"))
        FAIL("the first unbind's error string: \"%s\"", t.before);
    ASSERT_EQ(t.reconnect_rc, 0);
    ASSERT_EQ(t.start_rc[1], 0);
    if (strcmp(t.after, t.before) != 0) {
        for (char *q = t.after; *q; q++)
            if (*q < ' ' || *q > '~')
                *q = '?';
        FAIL("in unbind, the error string read after em_reconnect is \"%s\", not \"%s\": "
             "freed by it", t.after, t.before);
    }
    /* the second attempt went through, and ended cleanly */
    ASSERT_EQ(t.handshakes, 1);
    ASSERT_EQ(t.reasons[1], 0);
    ASSERT_EQ(srv.pool[0].reason, EM_ETLS);
    ASSERT_EQ(srv.pool[1].handshakes, 1);
    ASSERT_EQ(srv.pool[1].reason, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_EQ(em_set_allocator(NULL, NULL, NULL), 0);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ================================ 6. close after writing, paused and idle */

/* Nothing queued, paused (so nothing will be written): close after writing
 * closes now, as on a plain connection, instead of waiting for a resume
 * to write the close_notify. */
TEST(tls_close_after_writing_paused_idle_closes_now)
{
    tls_pair p = {0};
    p.srv = (rec){.tag = 1};
    p.cli = (rec){.tag = 2};
    tls_pair_open(&p, false);
    if (!run_until_pred(p.r, tls_pair_handshaken, &p, 5))
        FAIL("no handshake: client %d (%s)", p.cli.handshakes, p.cli.tls_error);
    rec *s = tls_srv0(&p);
    ASSERT_EQ(em_get_outbound_data_size(s->conn), 0);
    ASSERT_EQ(em_pause(s->conn), 0);
    ASSERT_EQ(close_conn(s->conn, true), 0);
    ASSERT_GE(em_run_once(p.r, 0), 0);
    if (!s->unbinds) {
        run_until(p.r, &s->unbinds, 1);
        FAIL("a paused idle TLS connection closed after writing is %s",
             s->unbinds ? "closed only later, not at once" : "still open after 1 s");
    }
    ASSERT_EQ(s->reason, 0);
    tls_pair_finish(&p);
    /* the client sees the end: with a close_notify if the close could
     * still write one, else as a truncation */
    ASSERT(p.cli.reason == 0 || p.cli.reason == EM_ETLS_TRUNCATED);
    tls_pair_free(&p);
}
