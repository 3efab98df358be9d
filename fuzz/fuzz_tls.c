/*
 * libFuzzer target: a libem TLS connection and its peer over a unix socket
 * inside one reactor, the peer's part played by this file from the input.
 *
 *   raw kinds      the input's bytes are what the peer sends: libem is the
 *                  server (em_start_unix_server, em_start_tls in post_init)
 *                  and the input a client's flight (ClientHello and what
 *                  follows), or libem is the client (em_connect_unix) and the
 *                  input a server's flight (a TLS 1.2 ServerHello and
 *                  Certificate are plaintext, so a captured flight reaches the
 *                  certificate checks and ssl_verify_peer);
 *   session kind   the peer is an OpenSSL client in this process that
 *                  completes the handshake with libem's server; the input is
 *                  then a list of operations: application data, how the
 *                  records are cut into socket writes, bytes that corrupt the
 *                  record stream, close_notify, libem's pause/resume, sends
 *                  and closes, turns of the loop.
 * The peer reads what libem writes (raw kinds: and drops it).
 *
 * The identity (a P-256 key and a self-signed certificate for localhost) is
 * made in-process at start-up; nothing is read from the repository. Seeds:
 * fuzz/gen_seeds.py --tls DIR (flights captured from OpenSSL, and session
 * schedules), written at run time by fuzz/run.sh.
 *
 * Input layout
 *   byte 0  bit 0 backend (epoll / poll); bits 1-2 raw kinds: the input is
 *           sent in 1-4 writes; bit 3 the peer ends with shutdown(SHUT_WR),
 *           else close(); bit 4 libem queues data in post_init (before the
 *           handshake); bit 5 and asks close_connection_after_writing;
 *           bits 6-7 the kind: 0 libem server, 1 libem server asking for a
 *           client certificate (verify_peer), 2 libem client, 3 session
 *   byte 1  bits 0-4 where the raw writes are split; bit 5 the client is
 *           insecure; bit 6 libem pauses in post_init and resumes on the
 *           next tick; bit 7 ssl_verify_peer says yes (else it gives
 *           OpenSSL's verdict)
 *   the rest  raw kinds: the peer's bytes; session: operations (do_op)
 *
 * Invariants (a violation aborts, which libFuzzer reports):
 *   - post_init once, unbind exactly once and nothing after it; a paused
 *     connection is given no data;
 *   - raw kinds: no handshake completes (the input cannot know the keys),
 *     so no receive_data; unbind's reason is EM_ETLS with a reason text, or
 *     0 when this file closed a connection left waiting;
 *   - session: receive_data gets exactly a prefix of the application data
 *     the peer wrote, and the peer a prefix of what em_send_data took; with
 *     the record stream intact and no local close, the peer's close_notify
 *     then FIN ends it with 0 after every byte was delivered, a FIN without
 *     close_notify with EM_ETLS_TRUNCATED; em_get_stats counts plaintext;
 *   - ssl_verify_peer gets PEM certificates; em_get_sni_hostname and
 *     em_get_alpn_protocol give NUL-terminated strings or NULL;
 *   - afterwards: no connection, no timer, no descriptor left, the unix
 *     socket file removed; ASan and LeakSanitizer watch memory.
 *
 * FUZZ_TLS_VERBOSE=1 prints how each input ended (build-fuzz/fuzz_tls FILE...).
 */
#include "em.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define END_TURNS 100   /* turns after the peer's end before closing ourselves */
#define PIECE_TURNS 4   /* turns after each raw write */
#define MAX_APP (1u << 20)   /* application bytes the session peer may write */
#define MAX_LOCAL (1u << 20) /* bytes libem may be asked to send */

/* ------------------------------------------------------------- failures */

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_tls invariant: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond))                                                          \
            die("%s:%d: %s", __FILE__, __LINE__, #cond);                      \
    } while (0)

/* ------------------------------------------------------------ identity */

static char *cert_pem, *key_pem;
static char id_dir[64], ca_path[128];
static SSL_CTX *peer_ctx; /* the session kind's client */
static uint8_t app_pattern[MAX_APP], local_pattern[MAX_LOCAL];

static char *bio_string(BIO *b)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = malloc((size_t)n + 1);
    CHECK(s != NULL);
    memcpy(s, p, (size_t)n);
    s[n] = '\0';
    return s;
}

static void remove_identity(void)
{
    unlink(ca_path);
    rmdir(id_dir);
}

/* A P-256 key and a self-signed certificate for localhost, as PEM; the
 * certificate also in a file, the trust anchor of the client and the CA
 * list of the server (so that no context loads the system store). */
static void make_identity(void)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    CHECK(pkey && x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 30L * 24 * 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost");
    CHECK(san != NULL);
    X509_add_ext(x, san, -1);
    X509_EXTENSION_free(san);
    CHECK(X509_sign(x, pkey, EVP_sha256()) > 0);
    BIO *b = BIO_new(BIO_s_mem());
    CHECK(b && PEM_write_bio_X509(b, x));
    cert_pem = bio_string(b);
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    CHECK(b && PEM_write_bio_PrivateKey(b, pkey, NULL, NULL, 0, NULL, NULL));
    key_pem = bio_string(b);
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(pkey);

    snprintf(id_dir, sizeof id_dir, "/tmp/libem-fuzz-tls-XXXXXX");
    CHECK(mkdtemp(id_dir) != NULL);
    snprintf(ca_path, sizeof ca_path, "%s/cert.pem", id_dir);
    FILE *f = fopen(ca_path, "w");
    CHECK(f != NULL);
    CHECK(fputs(cert_pem, f) >= 0);
    CHECK(fclose(f) == 0);
    atexit(remove_identity);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    make_identity();
    peer_ctx = SSL_CTX_new(TLS_client_method());
    CHECK(peer_ctx != NULL);
    SSL_CTX_set_verify(peer_ctx, SSL_VERIFY_NONE, NULL);
    /* a record at a time: what the peer wrote is counted before libem can
     * have it */
    SSL_CTX_set_mode(peer_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
    for (size_t i = 0; i < MAX_APP; i++) {
        uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull;
        app_pattern[i] = (uint8_t)((x >> 29) ^ (x >> 47) ^ i);
    }
    for (size_t i = 0; i < MAX_LOCAL; i++)
        local_pattern[i] = (uint8_t)('a' + i % 26);
    return 0;
}

/* ----------------------------------------------------------- the state */

enum kind { K_SERVER, K_SERVER_VERIFY, K_CLIENT, K_SESSION };

static struct {
    em_reactor *r;
    enum kind kind;
    uint8_t mode, knobs;
    int listener; /* client kind: the raw server's */
    int peer;     /* the raw end; -1 once closed */
    char path[108];
    em_tls_opts opts;
    bool paused;
    bool forced; /* this file closed the connection */
    em_conn *conn;
    em_sig sig;
    int post_inits, unbinds, reason, handshakes, verifies;
    size_t peer_got;
    char why[256];
    /* session kind */
    SSL *ssl;          /* the peer's */
    BIO *net;          /* its network end: ciphertext in and out */
    size_t app_sent;   /* application bytes the peer wrote */
    size_t lib_read;   /* bytes receive_data got */
    size_t local_sent; /* bytes em_send_data took */
    size_t peer_read;  /* of those, what the peer decrypted */
    bool corrupted;    /* raw bytes went into the record stream */
    bool lost;         /* bytes the peer meant to write did not go out */
    bool notify_sent;  /* the peer's close_notify, all of it written */
    bool local_close;  /* libem was asked to close (or to close after writing) */
    bool shut_wr, closed;
    uint64_t stats_in, stats_out;
} S;

/* ------------------------------------------------------------ handler */

static void resume_tick(em_reactor *r, void *arg)
{
    (void)arg;
    em_conn *c = em_conn_by_sig(r, S.sig);
    if (c && S.paused) {
        CHECK(em_resume(c) == 0);
        S.paused = false;
    }
}

static void h_post_init(em_conn *c)
{
    CHECK(S.post_inits == 0);
    S.post_inits++;
    S.conn = c;
    S.sig = em_signature(c);
    CHECK(em_start_tls(c, &S.opts) == 0);
    if (S.mode & 0x10) { /* the session's peer checks them: the same bytes */
        CHECK(em_send_data(c, local_pattern, 27) == 0);
        S.local_sent = 27;
        if (S.mode & 0x20) {
            CHECK(em_close_connection_after_writing(c) == 0);
            S.local_close = true;
        }
    }
    if (S.knobs & 0x40) {
        CHECK(em_pause(c) == 0);
        S.paused = true;
        CHECK(em_next_tick(em_conn_reactor(c), resume_tick, NULL) == 0);
    }
}

static void check_live(em_conn *c)
{
    CHECK(S.unbinds == 0);
    CHECK(c == S.conn);
}

static void h_receive(em_conn *c, const char *d, size_t n)
{
    check_live(c);
    if (S.kind != K_SESSION)
        die("receive_data(%zu bytes): the peer completed a handshake it has no keys for", n);
    CHECK(n > 0);
    CHECK(S.handshakes == 1);
    if (S.paused)
        die("receive_data(%zu bytes) on a paused connection", n);
    if (S.lib_read + n > S.app_sent)
        die("receive_data: %zu bytes, the peer wrote %zu", S.lib_read + n, S.app_sent);
    if (memcmp(d, app_pattern + S.lib_read, n) != 0)
        die("receive_data: wrong bytes after offset %zu", S.lib_read);
    S.lib_read += n;
}

static void h_handshake(em_conn *c)
{
    check_live(c);
    S.handshakes++;
    if (S.kind != K_SESSION)
        die("handshake completed with a peer that has no keys");
}

static bool h_verify(em_conn *c, const char *pem)
{
    check_live(c);
    CHECK(pem != NULL);
    CHECK(strncmp(pem, "-----BEGIN CERTIFICATE-----", 27) == 0);
    S.verifies++;
    bool ok = em_tls_preverify_ok(c);
    return (S.knobs & 0x80) || ok;
}

static void h_unbind(em_conn *c, int reason)
{
    CHECK(c == S.conn);
    CHECK(S.unbinds == 0);
    S.unbinds++;
    S.reason = reason;
    CHECK(em_conn_by_sig(S.r, S.sig) == NULL);
    const char *sni = em_get_sni_hostname(c);
    if (sni)
        CHECK(strlen(sni) < 256);
    const char *alpn = em_get_alpn_protocol(c);
    if (alpn)
        CHECK(strlen(alpn) < 256);
    char *pem = em_get_peer_cert(c), *cipher = em_get_cipher_name(c),
         *proto = em_get_cipher_protocol(c);
    if (S.handshakes) {
        CHECK(cipher && proto && em_get_cipher_bits(c) > 0);
    } else {
        CHECK(!pem && !cipher && !proto && em_get_cipher_bits(c) == -1);
    }
    free(pem);
    free(cipher);
    free(proto);
    const char *why = em_tls_error_string(c);
    if (reason == EM_ETLS)
        CHECK(why != NULL && *why);
    snprintf(S.why, sizeof S.why, "%s", why ? why : "");
    em_conn_stats st;
    CHECK(em_get_stats(c, &st) == 0);
    S.stats_in = st.bytes_in;
    S.stats_out = st.bytes_out;
    CHECK(em_send_data(c, "x", 1) == -ENOTCONN);
}

static const em_handler handler = {
    .post_init = h_post_init,
    .receive_data = h_receive,
    .unbind = h_unbind,
    .ssl_handshake_completed = h_handshake,
    .ssl_verify_peer = h_verify,
};

/* --------------------------------------------------------------- peer */

static void turn(void)
{
    int rc = em_run_once(S.r, 0);
    if (rc < 0)
        die("em_run_once: %d", rc);
}

/* Checks what the session peer decrypted: a prefix of libem's sends. */
static void peer_decrypt(void)
{
    uint8_t buf[16384];
    for (;;) {
        size_t n = 0;
        ERR_clear_error();
        if (!SSL_read_ex(S.ssl, buf, sizeof buf, &n))
            break;
        if (S.peer_read + n > S.local_sent)
            die("the peer read %zu bytes, libem was given %zu", S.peer_read + n, S.local_sent);
        if (memcmp(buf, local_pattern + S.peer_read, n) != 0)
            die("the peer got wrong bytes after offset %zu", S.peer_read);
        S.peer_read += n;
    }
    ERR_clear_error();
}

/* Reads what libem wrote: dropped (raw kinds) or given to the peer's SSL. */
static void peer_drain(void)
{
    char buf[16384];
    while (S.peer >= 0) {
        size_t room = sizeof buf;
        if (S.ssl) {
            room = BIO_ctrl_get_write_guarantee(S.net);
            if (room > sizeof buf)
                room = sizeof buf;
            if (!room)
                break;
        }
        ssize_t n = recv(S.peer, buf, room, MSG_DONTWAIT);
        if (n > 0) {
            S.peer_got += (size_t)n;
            if (S.ssl)
                CHECK(BIO_write(S.net, buf, (int)n) == (int)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break; /* EAGAIN, EOF or a reset */
    }
    if (S.ssl)
        peer_decrypt();
}

static void turns(int n)
{
    for (int i = 0; i < n && !S.unbinds; i++) {
        turn();
        peer_drain();
    }
}

static void peer_write(const uint8_t *p, size_t len)
{
    int tries = 0;
    for (; len > 0 && S.peer >= 0 && tries < 200; tries++) {
        ssize_t n = send(S.peer, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            break; /* libem's end is gone */
        turn();
        peer_drain();
    }
    if (len)
        S.lost = true; /* not all of it went out */
}

/* Session: writes up to max bytes of the peer's pending ciphertext. */
static void peer_flush(size_t max)
{
    uint8_t buf[16384];
    while (max && S.peer >= 0 && BIO_ctrl_pending(S.net)) {
        int want = (int)(max < sizeof buf ? max : sizeof buf);
        int n = BIO_read(S.net, buf, want);
        if (n <= 0)
            break;
        peer_write(buf, (size_t)n);
        max -= (size_t)n;
    }
}

/* ------------------------------------------------------------- set-up */

static int fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1;
}

static void setup(void)
{
    em_reactor_opts ro = {.backend = (S.mode & 1) ? "poll" : "epoll"};
    S.r = em_reactor_new(&ro);
    if (!S.r)
        die("em_reactor_new: %s", strerror(errno));
    S.peer = S.listener = -1;
    snprintf(S.path, sizeof S.path, "/tmp/libem-fuzz-tls-%d.sock", (int)getpid());
    unlink(S.path);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, S.path);
    if (S.kind != K_CLIENT) {
        S.opts = (em_tls_opts){.cert_chain_pem = cert_pem, .private_key_pem = key_pem,
                               .ca_file = ca_path, .alpn = "h2,http/1.1",
                               .verify_peer = S.kind == K_SERVER_VERIFY};
        em_server *server = em_start_unix_server(S.r, S.path, &handler, NULL);
        if (!server)
            die("em_start_unix_server: %s", strerror(errno));
        S.peer = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(S.peer >= 0);
        CHECK(connect(S.peer, (struct sockaddr *)&sun, sizeof sun) == 0);
        for (int i = 0; i < 100 && !S.post_inits; i++)
            turn();
        CHECK(S.post_inits == 1);
        CHECK(em_stop_server(server) == 0); /* one connection only */
        return;
    }
    S.opts = (em_tls_opts){.ca_file = ca_path, .sni_hostname = "localhost",
                           .alpn = "h2,http/1.1", .insecure = S.knobs & 0x20};
    S.listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    CHECK(S.listener >= 0);
    CHECK(bind(S.listener, (struct sockaddr *)&sun, sizeof sun) == 0);
    CHECK(listen(S.listener, 4) == 0);
    em_conn *c = em_connect_unix(S.r, S.path, &handler, NULL);
    if (!c)
        die("em_connect_unix: %s", strerror(errno));
    CHECK(c == S.conn);
    for (int i = 0; i < 100 && S.peer < 0; i++) {
        S.peer = accept4(S.listener, NULL, NULL, SOCK_CLOEXEC);
        if (S.peer < 0)
            turn();
    }
    CHECK(S.peer >= 0);
    close(S.listener);
    S.listener = -1;
    unlink(S.path);
    turns(PIECE_TURNS); /* the ClientHello, read and dropped */
}

/* ------------------------------------------------------ the raw kinds */

/* Cut points of len bytes into n pieces, moved about by seed. */
static size_t cut(size_t len, int k, int n, unsigned seed)
{
    if (k >= n)
        return len;
    size_t base = len * (size_t)k / (size_t)n;
    size_t span = len / (size_t)n;
    unsigned x = (seed * 2654435761u) >> (k * 5 % 27);
    return span ? base + (x % span) / 2 : base;
}

static void raw_input(const uint8_t *body, size_t len)
{
    int pieces = 1 + ((S.mode >> 1) & 3);
    size_t at = 0;
    for (int k = 1; k <= pieces && !S.unbinds; k++) {
        size_t end = cut(len, k, pieces, S.knobs & 0x1f);
        if (end < at)
            end = at;
        peer_write(body + at, end - at);
        at = end;
        turns(PIECE_TURNS);
    }
}

/* ---------------------------------------------------------- the session */

struct input {
    const uint8_t *p;
    size_t len, pos;
};

static uint8_t next_byte(struct input *in) { return in->pos < in->len ? in->p[in->pos++] : 0; }

static void session_handshake(void)
{
    S.ssl = SSL_new(peer_ctx);
    CHECK(S.ssl != NULL);
    BIO *inside;
    CHECK(BIO_new_bio_pair(&inside, 1 << 16, &S.net, 1 << 16) == 1);
    SSL_set_bio(S.ssl, inside, inside);
    SSL_set_connect_state(S.ssl);
    SSL_set_tlsext_host_name(S.ssl, "localhost");
    for (int i = 0; i < 200 && !S.unbinds; i++) {
        ERR_clear_error();
        int rc = SSL_do_handshake(S.ssl);
        peer_flush(SIZE_MAX);
        if (rc == 1 && S.handshakes)
            return;
        if (rc != 1 && SSL_get_error(S.ssl, rc) != SSL_ERROR_WANT_READ)
            break; /* libem went away (closed in post_init) */
        turns(1);
    }
    ERR_clear_error();
    CHECK(S.unbinds || S.local_close);
}

/* Application data from the peer: n bytes, or fewer if its buffers fill. */
static void session_app(size_t n)
{
    if (S.shut_wr || S.peer < 0)
        return; /* it would never arrive */
    if (S.app_sent + n > MAX_APP)
        n = MAX_APP - S.app_sent;
    while (n) {
        size_t w = 0;
        ERR_clear_error();
        if (!SSL_write_ex(S.ssl, app_pattern + S.app_sent, n, &w)) {
            int err = SSL_get_error(S.ssl, 0);
            ERR_clear_error();
            if (err != SSL_ERROR_WANT_WRITE || S.peer < 0)
                return; /* after close_notify, say */
            peer_flush(SIZE_MAX);
            turns(1);
            continue;
        }
        S.app_sent += w;
        n -= w;
    }
}

static void local_op(uint8_t b)
{
    em_conn *c = em_conn_by_sig(S.r, S.sig);
    if (!c)
        return;
    int rc;
    switch (b & 3) {
    case 0: {
        size_t n = 1 + (size_t)(b >> 2) * 97;
        if (S.local_sent + n > MAX_LOCAL)
            n = MAX_LOCAL - S.local_sent;
        rc = em_send_data(c, local_pattern + S.local_sent, n);
        CHECK(rc == 0 || rc == -ENOTCONN || (n == 0 && rc == 0));
        if (rc == 0)
            S.local_sent += n;
        break;
    }
    case 1:
        CHECK(em_close_connection_after_writing(c) == 0);
        S.local_close = true;
        break;
    case 2:
        rc = em_close_write(c);
        CHECK(rc == 0 || rc == -ENOTCONN);
        break;
    default:
        CHECK(em_close_connection(c, false) == 0);
        S.local_close = true;
        break;
    }
}

static void pause_op(bool pause)
{
    em_conn *c = em_conn_by_sig(S.r, S.sig);
    if (!c)
        return;
    int rc = pause ? em_pause(c) : em_resume(c);
    CHECK(rc == 0 || rc == -ENOTCONN);
    if (rc == 0)
        S.paused = pause;
}

/* One operation of the session kind. */
static void do_op(struct input *in)
{
    uint8_t op = next_byte(in), b = next_byte(in);
    switch (op % 8) {
    case 0: /* application data, 1 B to 16 KiB and more */
        session_app(b < 128 ? 1 + b : (size_t)(b - 127) * 512);
        break;
    case 1: /* some of the ciphertext out: cut records anywhere */
        peer_flush(b ? (size_t)b * 37 : SIZE_MAX);
        break;
    case 2:
        turns(1 + b % 4);
        break;
    case 3:
        pause_op(b & 1);
        break;
    case 4: { /* raw bytes into the record stream */
        size_t n = 1 + b % 32;
        if (n > in->len - in->pos)
            n = in->len - in->pos;
        if (n && S.peer >= 0) {
            peer_flush(SIZE_MAX);
            peer_write(in->p + in->pos, n);
            S.corrupted = true;
        }
        in->pos += n;
        break;
    }
    case 5: /* close_notify (written out by the next flush) */
        if (S.shut_wr || S.peer < 0 || S.notify_sent)
            break;
        for (int i = 0; i < 4 && !S.notify_sent; i++) { /* room in the BIO pair first */
            peer_flush(SIZE_MAX);
            ERR_clear_error();
            S.notify_sent = SSL_shutdown(S.ssl) >= 0;
            ERR_clear_error();
        }
        break;
    case 6:
        local_op(b);
        break;
    default: /* the peer stops writing (more turns follow in finish) */
        peer_flush(SIZE_MAX);
        if (S.peer >= 0 && !S.shut_wr && (b & 1)) {
            shutdown(S.peer, SHUT_WR);
            S.shut_wr = true;
        }
        break;
    }
}

static void session_input(const uint8_t *body, size_t len)
{
    session_handshake();
    struct input in = {.p = body, .len = len};
    while (in.pos < in.len && !S.unbinds)
        do_op(&in);
    /* everything out, libem running, then the peer's end */
    peer_flush(SIZE_MAX);
    pause_op(false);
}

/* What a session must end with (see the top). */
static void session_check(void)
{
    CHECK(S.stats_in == S.lib_read); /* plaintext */
    CHECK(S.stats_out <= S.local_sent);
    if (S.forced) {
        CHECK(S.reason == 0);
        return;
    }
    if (S.corrupted || S.lost)
        return; /* any failure, or none if the bytes came after the end */
    bool clean_end = S.notify_sent && !S.closed;
    if (S.local_close) {
        if (S.reason != 0 && S.reason != EM_ETLS_TRUNCATED && S.reason != ECONNRESET &&
            S.reason != EPIPE)
            die("local close: unbind(%d: %s) %s", S.reason, em_strerror(S.reason), S.why);
        return;
    }
    if (clean_end) {
        if (S.reason != 0 || S.lib_read != S.app_sent)
            die("close_notify then FIN: unbind(%d: %s) %s, %zu of %zu bytes delivered",
                S.reason, em_strerror(S.reason), S.why, S.lib_read, S.app_sent);
        return;
    }
    if (!S.notify_sent && !S.closed && S.reason != EM_ETLS_TRUNCATED)
        die("FIN without close_notify: unbind(%d: %s) %s", S.reason, em_strerror(S.reason),
            S.why);
    if (S.reason != 0 && S.reason != EM_ETLS_TRUNCATED && S.reason != ECONNRESET &&
        S.reason != EPIPE)
        die("the peer closed: unbind(%d: %s) %s", S.reason, em_strerror(S.reason), S.why);
    if (S.reason == 0 && S.lib_read != S.app_sent)
        die("unbind(0) with %zu of %zu bytes delivered", S.lib_read, S.app_sent);
}

/* ---------------------------------------------------------------- run */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return -1;
    int fds0 = fd_count();
    memset(&S, 0, sizeof S);
    S.mode = data[0];
    S.knobs = data[1];
    S.kind = (enum kind)(S.mode >> 6);
    setup();
    if (S.kind == K_SESSION)
        session_input(data + 2, size - 2);
    else
        raw_input(data + 2, size - 2);
    if (S.peer >= 0) {
        if (S.mode & 8) {
            if (!S.shut_wr)
                shutdown(S.peer, SHUT_WR);
            S.shut_wr = true;
        } else {
            close(S.peer);
            S.peer = -1;
            S.closed = true;
        }
    }
    turns(END_TURNS);
    if (!S.unbinds) { /* waiting still: paused, or for more of the handshake */
        em_conn *c = em_conn_by_sig(S.r, S.sig);
        CHECK(c != NULL);
        S.forced = true;
        CHECK(em_close_connection(c, false) == 0);
        turn();
    }
    CHECK(S.unbinds == 1);
    if (getenv("FUZZ_TLS_VERBOSE"))
        fprintf(stderr, "fuzz_tls: kind %d, unbind(%d) %s; %d ssl_verify_peer calls, %d "
                "handshakes, %zu of %zu bytes delivered%s%s%s%s\n", (int)S.kind, S.reason, S.why,
                S.verifies, S.handshakes, S.lib_read, S.app_sent,
                S.corrupted ? ", corrupted" : "", S.notify_sent ? ", close_notify" : "",
                S.forced ? ", closed here" : "", S.lost ? ", lost" : "");
    if (S.kind == K_SESSION) {
        session_check();
    } else {
        CHECK(S.handshakes == 0);
        if (S.reason != EM_ETLS && !(S.forced && S.reason == 0))
            die("unbind(%d: %s)%s", S.reason, em_strerror(S.reason),
                S.forced ? " after a local close" : "");
    }
    turn(); /* a tick queued for the connection runs against nothing */
    CHECK(em_connection_count(S.r) == 0);
    CHECK(em_timer_count(S.r) == 0); /* the handshake timer went with it */
    em_reactor_free(S.r);
    S.r = NULL;
    SSL_free(S.ssl); /* and its bio pair */
    BIO_free(S.net);
    S.ssl = NULL;
    S.net = NULL;
    if (S.peer >= 0) {
        close(S.peer);
        S.peer = -1;
    }
    CHECK(access(S.path, F_OK) != 0);
    int fds1 = fd_count();
    if (fds1 != fds0)
        die("descriptors: %d before, %d after", fds0, fds1);
    return 0;
}
