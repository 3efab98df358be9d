/*
 * libFuzzer target: the bytes of the input are what the peer of a libem TLS
 * connection sends it, over a unix socket inside one reactor. By default
 * libem is the server (em_start_unix_server, em_start_tls in post_init) and
 * the input is a client's flight: ClientHello, and whatever follows. With
 * bit 7 of the mode libem is the client (em_connect_unix) and the input is
 * a server's flight (a TLS 1.2 ServerHello and Certificate are plaintext, so
 * a captured flight reaches the certificate checks and ssl_verify_peer).
 * The peer reads and drops what libem writes.
 *
 * The identity (a P-256 key and a self-signed certificate for localhost) is
 * made in-process at start-up; nothing is read from the repository. Seeds:
 * fuzz/gen_seeds.py --tls DIR (ClientHellos and flights captured from
 * OpenSSL, written at run time by fuzz/run.sh).
 *
 * Input layout
 *   byte 0  mode: bit 0 backend (epoll / poll); bits 1-2 the input is sent
 *           in 1-4 writes; bit 3 the peer ends with shutdown(SHUT_WR), else
 *           close(); bit 4 libem queues data in post_init (before the
 *           handshake); bit 5 and asks close_connection_after_writing;
 *           bit 6 server: verify_peer (a client certificate is asked for),
 *           client: insecure; bit 7 libem is the client
 *   byte 1  bits 0-5 where the writes are split; bit 6 libem pauses in
 *           post_init and resumes on the next tick; bit 7 ssl_verify_peer
 *           says yes (else it gives OpenSSL's verdict)
 *   the rest  the peer's bytes
 *
 * Invariants (a violation aborts, which libFuzzer reports):
 *   - post_init once, unbind exactly once and nothing after it;
 *   - no handshake completes (the input cannot know the keys), so no
 *     receive_data; unbind's reason is EM_ETLS with a reason text
 *     (em_tls_error_string), or 0 when this file closed a connection left
 *     waiting;
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
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define END_TURNS 100   /* turns after the peer's end before closing ourselves */
#define PIECE_TURNS 4   /* turns after each write */

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
    return 0;
}

/* ----------------------------------------------------------- the state */

static struct {
    em_reactor *r;
    em_server *server;
    int listener; /* client mode: the raw server's */
    int peer;     /* the raw end; -1 once closed */
    char path[108];
    em_tls_opts opts;
    bool client, pause_at_start, verify_yes, paused;
    bool forced; /* this file closed the connection */
    em_conn *conn;
    em_sig sig;
    int post_inits, unbinds, reason, handshakes, verifies, tls_rc;
    size_t peer_got;
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

static uint8_t mode_bits;

static void h_post_init(em_conn *c)
{
    CHECK(S.post_inits == 0);
    S.post_inits++;
    S.conn = c;
    S.sig = em_signature(c);
    S.tls_rc = em_start_tls(c, &S.opts);
    CHECK(S.tls_rc == 0);
    if (mode_bits & 0x10) {
        static const char early[] = "queued before the handshake";
        CHECK(em_send_data(c, early, sizeof early - 1) == 0);
        if (mode_bits & 0x20)
            CHECK(em_close_connection_after_writing(c) == 0);
    }
    if (S.pause_at_start) {
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
    (void)d;
    (void)n;
    check_live(c);
    die("receive_data(%zu bytes): the peer completed a handshake it has no keys for", n);
}

static void h_handshake(em_conn *c)
{
    check_live(c);
    S.handshakes++;
}

static bool h_verify(em_conn *c, const char *pem)
{
    check_live(c);
    CHECK(pem != NULL);
    CHECK(strncmp(pem, "-----BEGIN CERTIFICATE-----", 27) == 0);
    S.verifies++;
    bool ok = em_tls_preverify_ok(c);
    return S.verify_yes || ok;
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
    CHECK(em_get_peer_cert(c) == NULL); /* no handshake: none */
    CHECK(em_get_cipher_name(c) == NULL);
    const char *why = em_tls_error_string(c);
    if (reason == EM_ETLS)
        CHECK(why != NULL && *why);
    if (getenv("FUZZ_TLS_VERBOSE")) /* what an input reaches */
        fprintf(stderr, "fuzz_tls: %s, unbind(%d) %s; %d ssl_verify_peer calls, sni %s, "
                "alpn %s, %zu bytes to the peer\n", S.client ? "client" : "server", reason,
                why ? why : "", S.verifies, sni ? sni : "-", alpn ? alpn : "-", S.peer_got);
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

/* Reads and drops what libem wrote. */
static void peer_drain(void)
{
    char buf[16384];
    while (S.peer >= 0) {
        ssize_t n = recv(S.peer, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            S.peer_got += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return; /* EAGAIN, EOF or a reset */
    }
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
    for (int tries = 0; len > 0 && S.peer >= 0 && tries < 200; tries++) {
        ssize_t n = send(S.peer, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            return; /* libem's end is gone */
        turn();
        peer_drain();
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

static void setup(uint8_t mode, uint8_t knobs)
{
    em_reactor_opts ro = {.backend = (mode & 1) ? "poll" : "epoll"};
    S.r = em_reactor_new(&ro);
    if (!S.r)
        die("em_reactor_new: %s", strerror(errno));
    S.peer = S.listener = -1;
    S.client = mode & 0x80;
    S.pause_at_start = knobs & 0x40;
    S.verify_yes = knobs & 0x80;
    snprintf(S.path, sizeof S.path, "/tmp/libem-fuzz-tls-%d.sock", (int)getpid());
    unlink(S.path);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, S.path);
    if (!S.client) {
        S.opts = (em_tls_opts){.cert_chain_pem = cert_pem, .private_key_pem = key_pem,
                               .ca_file = ca_path, .alpn = "h2,http/1.1",
                               .verify_peer = mode & 0x40};
        S.server = em_start_unix_server(S.r, S.path, &handler, NULL);
        if (!S.server)
            die("em_start_unix_server: %s", strerror(errno));
        S.peer = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(S.peer >= 0);
        CHECK(connect(S.peer, (struct sockaddr *)&sun, sizeof sun) == 0);
        for (int i = 0; i < 100 && !S.post_inits; i++)
            turn();
        CHECK(S.post_inits == 1);
        CHECK(em_stop_server(S.server) == 0); /* one connection only */
        S.server = NULL;
        return;
    }
    S.opts = (em_tls_opts){.ca_file = ca_path, .sni_hostname = "localhost",
                           .alpn = "h2,http/1.1", .insecure = mode & 0x40};
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return -1;
    int fds0 = fd_count();
    memset(&S, 0, sizeof S);
    uint8_t mode = data[0], knobs = data[1];
    mode_bits = mode;
    const uint8_t *body = data + 2;
    size_t len = size - 2;
    setup(mode, knobs);

    int pieces = 1 + ((mode >> 1) & 3);
    size_t at = 0;
    for (int k = 1; k <= pieces && !S.unbinds; k++) {
        size_t end = cut(len, k, pieces, knobs & 0x3f);
        if (end < at)
            end = at;
        peer_write(body + at, end - at);
        at = end;
        turns(PIECE_TURNS);
    }
    if (S.peer >= 0) {
        if (mode & 8) {
            shutdown(S.peer, SHUT_WR);
        } else {
            close(S.peer);
            S.peer = -1;
        }
    }
    turns(END_TURNS);
    em_conn *c = em_conn_by_sig(S.r, S.sig);
    if (!S.unbinds) { /* waiting still: paused, or for more of the handshake */
        CHECK(c != NULL);
        S.forced = true;
        CHECK(em_close_connection(c, false) == 0);
        turn();
    }
    CHECK(S.unbinds == 1);
    CHECK(S.handshakes == 0);
    if (S.reason != EM_ETLS && !(S.forced && S.reason == 0))
        die("unbind(%d: %s)%s", S.reason, em_strerror(S.reason),
            S.forced ? " after a local close" : "");
    turn(); /* a tick queued for the connection runs against nothing */
    CHECK(em_connection_count(S.r) == 0);
    CHECK(em_timer_count(S.r) == 0); /* the handshake timer went with it */
    em_reactor_free(S.r);
    S.r = NULL;
    if (S.peer >= 0) {
        peer_drain();
        close(S.peer);
        S.peer = -1;
    }
    CHECK(access(S.path, F_OK) != 0);
    int fds1 = fd_count();
    if (fds1 != fds0)
        die("descriptors: %d before, %d after", fds0, fds1);
    return 0;
}
