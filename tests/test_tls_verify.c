/* TLS verification and configuration: the verdict of a libem client on
 * each test certificate (and of the server that faced it), SNI, pinning
 * through ssl_verify_peer, client certificates, keys and the options
 * em_start_tls refuses, ALPN, protocol versions, session resumption, and
 * the getters on a plain connection. Every case is a libem server and a
 * libem client on loopback, bounded by run_until_pred.
 *
 * The conversation of a pair that gets through: the server sends "pong" in
 * ssl_handshake_completed (so the server has accepted the client before the
 * client sees a byte), the client answers "bye" and closes after writing
 * (close_notify), the server sees a clean end. Both unbind with 0 and no
 * side closes with bytes it has not read (which could turn a FIN into a
 * reset and blur the verdict). */
#include "harness.h"
#include "tls_fixture.h"

#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

TLS_FIXTURE();

/* ---------------------------------------------------------- observations */

#define MAX_VERIFY 8

/* What one side saw; a rec's ctx. */
typedef struct side {
    /* in ssl_handshake_completed */
    bool hs_seen;
    bool sni_set, alpn_set;
    char sni[256], alpn[256];
    char *peer_cert, *proto, *cipher;
    int bits;
    bool reused;
    /* ssl_verify_peer, one entry per call */
    int nv;
    char *vpem[MAX_VERIFY];
    bool vpre[MAX_VERIFY];
    const char *pin; /* the PEM the pinning handlers look for */
    /* em_tls_error_string right after a refused em_start_tls */
    bool refusal_set;
    char refusal[256];
    bool closing;
    int second_rc, third_rc;
} side;

static void side_free(side *s)
{
    free(s->peer_cert);
    free(s->proto);
    free(s->cipher);
    for (int i = 0; i < s->nv; i++)
        free(s->vpem[i]);
    memset(s, 0, sizeof *s);
}

/* (a side may be shared by the pooled connections of a server: the last
 * handshake's values are kept) */
static void capture(em_conn *c, side *s)
{
    free(s->peer_cert);
    free(s->proto);
    free(s->cipher);
    s->hs_seen = true;
    s->sni_set = s->alpn_set = false;
    const char *v = em_get_sni_hostname(c);
    if (v) {
        s->sni_set = true;
        snprintf(s->sni, sizeof s->sni, "%s", v);
    }
    v = em_get_alpn_protocol(c);
    if (v) {
        s->alpn_set = true;
        snprintf(s->alpn, sizeof s->alpn, "%s", v);
    }
    s->peer_cert = em_get_peer_cert(c);
    s->proto = em_get_cipher_protocol(c);
    s->cipher = em_get_cipher_name(c);
    s->bits = em_get_cipher_bits(c);
    s->reused = em_tls_session_reused(c);
    /* only meaningful inside ssl_verify_peer */
    ASSERT(!em_tls_preverify_ok(c));
}

/* server: accepted the client; speak first */
static void srv_handshake(em_conn *c, rec *x)
{
    capture(c, x->ctx);
    ASSERT_EQ(em_send_data(c, "pong", 4), 0);
}

static void cli_handshake(em_conn *c, rec *x) { capture(c, x->ctx); }

/* client: "pong" arrived; answer and close (close_notify after "bye") */
static void cli_data(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    (void)n;
    side *s = x->ctx;
    if (x->len >= 4 && !s->closing) {
        s->closing = true;
        ASSERT_EQ(em_send_data(c, "bye", 3), 0);
        ASSERT_EQ(close_conn(c, true), 0);
    }
}

/* ssl_verify_peer variants (rec_verify_handler calls x->on_verify) */
static void vlog(em_conn *c, side *s, const char *pem)
{
    if (s->nv >= MAX_VERIFY)
        FAIL("ssl_verify_peer called more than %d times", MAX_VERIFY);
    s->vpre[s->nv] = em_tls_preverify_ok(c);
    s->vpem[s->nv] = strdup(pem);
    s->nv++;
}

static bool v_preverify(em_conn *c, rec *x, const char *pem)
{
    vlog(c, x->ctx, pem);
    return em_tls_preverify_ok(c);
}

static bool v_accept_all(em_conn *c, rec *x, const char *pem)
{
    vlog(c, x->ctx, pem);
    return true;
}

/* accepts only the certificate whose PEM is s->pin */
static bool v_pin(em_conn *c, rec *x, const char *pem)
{
    side *s = x->ctx;
    vlog(c, s, pem);
    return s->pin && strcmp(pem, s->pin) == 0;
}

/* OpenSSL's verdict, except that the certificate s->pin is refused */
static bool v_refuse_pin(em_conn *c, rec *x, const char *pem)
{
    side *s = x->ctx;
    vlog(c, s, pem);
    return em_tls_preverify_ok(c) && !(s->pin && strcmp(pem, s->pin) == 0);
}

/* ---------------------------------------------------------- certificates */

static X509 *x509_of_pem(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return x;
}

/* The PEM is the (first) certificate of the file named. */
static bool pem_is_file_cert(const char *pem, const char *name)
{
    char *text = tls_read_file(tls_file(name));
    X509 *a = pem ? x509_of_pem(pem) : NULL, *b = text ? x509_of_pem(text) : NULL;
    bool same = a && b && X509_cmp(a, b) == 0;
    X509_free(a);
    X509_free(b);
    free(text);
    return same;
}

/* The certificate's subject CN, for messages. */
static void cn_of(const char *pem, char *out, size_t size)
{
    X509 *x = x509_of_pem(pem);
    snprintf(out, size, "?");
    if (x)
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)size);
    X509_free(x);
}

/* ------------------------------------------------------------------ pair */

typedef struct pair {
    em_reactor *r;
    em_server *s;
    rec srv, cli;
    side ss, cs;
    em_tls_opts so, co;
    const em_handler *sh, *ch;
    bool cli_null_opts; /* the client calls em_start_tls(c, NULL) */
} pair;

static void start_tls_null_opts(em_conn *c, rec *x);

/* Server with cert (and server.key), client trusting ca.pem. */
static void pair_init(pair *p, const char *cert)
{
    memset(p, 0, sizeof *p);
    p->so = tls_server_opts(cert, NULL);
    p->co = tls_client_opts();
    p->sh = &rec_handler;
    p->ch = &rec_handler;
}

static bool both_unbound(void *arg)
{
    pair *p = arg;
    return p->cli.unbinds && p->srv.pool && p->srv.pool_used && p->srv.pool[0].unbinds;
}

/* Listens on listen_ip, connects to host, runs the conversation until
 * both sides unbound (10 s at most), frees the reactor. */
static void pair_run(pair *p, const char *listen_ip, const char *host)
{
    p->r = new_reactor();
    p->srv.tls = &p->so;
    p->srv.store = true;
    p->srv.ctx = &p->ss;
    p->srv.on_handshake = srv_handshake;
    rec_pool_new(&p->srv, 1);
    p->s = em_start_server(p->r, listen_ip, 0, p->sh, &p->srv);
    ASSERT_NOT_NULL(p->s);
    p->cli.tls = p->cli_null_opts ? NULL : &p->co;
    if (p->cli_null_opts)
        p->cli.on_post_init = start_tls_null_opts;
    p->cli.store = true;
    p->cli.ctx = &p->cs;
    p->cli.on_handshake = cli_handshake;
    p->cli.on_data = cli_data;
    ASSERT_NOT_NULL(em_connect(p->r, host, em_server_port(p->s), p->ch, &p->cli));
    if (!run_until_pred(p->r, both_unbound, p, 10))
        FAIL("pair %s -> %s did not end in 10 s (client unbinds %d, server accepted %d)", host,
             listen_ip, p->cli.unbinds, p->srv.pool_used);
    em_stop_server(p->s);
    REACTOR_FREE_CHECKED(p->r);
}

static rec *srv_rec(pair *p) { return &p->srv.pool[0]; }

static void pair_free(pair *p)
{
    rec_free(&p->srv);
    rec_free(&p->cli);
    side_free(&p->ss);
    side_free(&p->cs);
}

/* Both sides got through: the handshake on each, the words exchanged, a
 * clean end on each. */
static void assert_ok(pair *p)
{
    rec *s = srv_rec(p);
    if (p->cli.reason || s->reason)
        FAIL("expected success: client reason %d (%s) \"%s\", server reason %d (%s) \"%s\"",
             p->cli.reason, em_strerror(p->cli.reason), p->cli.tls_error, s->reason,
             em_strerror(s->reason), s->tls_error);
    ASSERT_EQ(p->cli.tls_rc, 0);
    ASSERT_EQ(s->tls_rc, 0);
    ASSERT_EQ(p->cli.handshakes, 1);
    ASSERT_EQ(s->handshakes, 1);
    ASSERT_EQ(p->cli.len, 4);
    ASSERT(memcmp(p->cli.buf, "pong", 4) == 0);
    ASSERT_EQ(s->len, 3);
    ASSERT(memcmp(s->buf, "bye", 3) == 0);
    /* em_tls_error_string: NULL when nothing failed */
    ASSERT_STREQ(p->cli.tls_error, "");
    ASSERT_STREQ(s->tls_error, "");
}

/* Both sides unbound with EM_ETLS, with a reason to show. */
static void assert_etls_both(pair *p)
{
    rec *s = srv_rec(p);
    if (p->cli.reason != EM_ETLS || s->reason != EM_ETLS)
        FAIL("expected EM_ETLS on both sides: client %d (%s) \"%s\", server %d (%s) \"%s\"",
             p->cli.reason, em_strerror(p->cli.reason), p->cli.tls_error, s->reason,
             em_strerror(s->reason), s->tls_error);
    ASSERT(p->cli.tls_error[0] != '\0');
    ASSERT(s->tls_error[0] != '\0');
    ASSERT_EQ(s->handshakes, 0);
    ASSERT_EQ(p->cli.len, 0);
    ASSERT_EQ(s->len, 0);
}

#define ASSERT_CONTAINS(hay, needle)                                          \
    do {                                                                      \
        const char *h_ = (hay), *n_ = (needle);                               \
        if (!h_ || !strstr(h_, n_))                                           \
            FAIL("%s = \"%s\" does not mention \"%s\"", #hay, h_ ? h_ : "(null)", n_); \
    } while (0)

/* ==================================================== 1. verdict matrix */

typedef struct verdict_case {
    const char *cert;      /* the server's certificate (key: server.key) */
    const char *listen;    /* where the server listens */
    const char *host;      /* what the client gives em_connect */
    bool insecure;
    int want;              /* the client's and the server's unbind reason */
    const char *client_why; /* in the client's em_tls_error_string */
} verdict_case;

static const verdict_case verdicts[] = {
    {"server.pem", "127.0.0.1", "localhost", false, 0, NULL},
    {"server.pem", "127.0.0.1", "127.0.0.1", false, 0, NULL},
    {"server.pem", "::1", "::1", false, 0, NULL},
    {"wronghost.pem", "127.0.0.1", "localhost", false, EM_ETLS, "hostname mismatch"},
    {"ip.pem", "127.0.0.1", "127.0.0.1", false, 0, NULL},
    {"ip.pem", "127.0.0.1", "localhost", false, EM_ETLS, "hostname mismatch"},
    {"untrusted.pem", "127.0.0.1", "localhost", false, EM_ETLS, "unable to get local issuer"},
    {"selfsigned.pem", "127.0.0.1", "localhost", false, EM_ETLS, "self-signed certificate"},
    {"expired.pem", "127.0.0.1", "localhost", false, EM_ETLS, "certificate has expired"},
    {"future.pem", "127.0.0.1", "localhost", false, EM_ETLS, "certificate is not yet valid"},
    {"wronghost.pem", "127.0.0.1", "localhost", true, 0, NULL},
    {"ip.pem", "127.0.0.1", "localhost", true, 0, NULL},
    {"untrusted.pem", "127.0.0.1", "localhost", true, 0, NULL},
    {"selfsigned.pem", "127.0.0.1", "localhost", true, 0, NULL},
    {"expired.pem", "127.0.0.1", "localhost", true, 0, NULL},
    {"future.pem", "127.0.0.1", "localhost", true, 0, NULL},
};

static const char *reason_name(int reason)
{
    return reason == 0 ? "ok" : reason == EM_ETLS ? "EM_ETLS" : em_strerror(reason);
}

/* Checks one row; false with msg filled when it is not as wanted. The
 * server's verdict on a client that refused it: the client aborts the
 * handshake with a fatal alert naming the fault (unknown_ca, bad_certificate,
 * certificate_expired...), so the server's handshake fails too: EM_ETLS,
 * its error string quoting the alert, never a handshake_completed. */
static bool verdict_check(const verdict_case *v, pair *p, char *msg, size_t size)
{
    rec *s = srv_rec(p);
    if (p->cli.reason != v->want || s->reason != v->want) {
        snprintf(msg, size, "%s via %s: client %s, server %s, wanted %s", v->cert, v->host,
                 reason_name(p->cli.reason), reason_name(s->reason), reason_name(v->want));
        return false;
    }
    if (v->want == 0) {
        if (p->cli.handshakes != 1 || s->handshakes != 1 || p->cli.len != 4 || s->len != 3) {
            snprintf(msg, size, "%s via %s: handshakes %d/%d, bytes %zu/%zu", v->cert, v->host,
                     p->cli.handshakes, s->handshakes, p->cli.len, s->len);
            return false;
        }
        if (p->cli.tls_error[0] || s->tls_error[0]) {
            snprintf(msg, size, "%s via %s: an error string after success", v->cert, v->host);
            return false;
        }
        if (!pem_is_file_cert(p->cs.peer_cert, v->cert)) {
            snprintf(msg, size, "%s via %s: the client's em_get_peer_cert is not %s", v->cert,
                     v->host, v->cert);
            return false;
        }
        return true;
    }
    if (p->cli.handshakes || s->handshakes || p->cli.len || s->len) {
        snprintf(msg, size, "%s via %s: failed, yet handshakes %d/%d, bytes %zu/%zu", v->cert,
                 v->host, p->cli.handshakes, s->handshakes, p->cli.len, s->len);
        return false;
    }
    if (!strstr(p->cli.tls_error, v->client_why)) {
        snprintf(msg, size, "%s via %s: client error \"%s\" does not mention \"%s\"", v->cert,
                 v->host, p->cli.tls_error, v->client_why);
        return false;
    }
    if (!strstr(s->tls_error, "alert")) {
        snprintf(msg, size, "%s via %s: server error \"%s\" does not quote the client's alert",
                 v->cert, v->host, s->tls_error);
        return false;
    }
    return true;
}

/* 16 pairs of about 0.1 s (ASan: 1.8 s in all); room for a loaded machine */
TEST_TIMEOUT(tls_verify_verdict_matrix, 60);
TEST(tls_verify_verdict_matrix)
{
    char first_bad[512] = "";
    int bad = 0;
    size_t n = sizeof verdicts / sizeof *verdicts;
    printf("  verdict matrix (client: ca_file=ca.pem; server key: server.key)\n");
    for (size_t i = 0; i < n; i++) {
        const verdict_case *v = &verdicts[i];
        pair p;
        pair_init(&p, v->cert);
        p.co.insecure = v->insecure;
        pair_run(&p, v->listen, v->host);
        char msg[512];
        bool good = verdict_check(v, &p, msg, sizeof msg);
        rec *s = srv_rec(&p);
        printf("  %-2zu %-14s via %-9s insecure=%d want %-7s | client %-7s hs=%d \"%s\" | "
               "server %-7s hs=%d \"%s\"%s\n",
               i + 1, v->cert, v->host, v->insecure, reason_name(v->want),
               reason_name(p.cli.reason), p.cli.handshakes, p.cli.tls_error,
               reason_name(s->reason), s->handshakes, s->tls_error, good ? "" : "   <-- WRONG");
        fflush(stdout);
        if (!good && !bad++)
            snprintf(first_bad, sizeof first_bad, "%s", msg);
        pair_free(&p);
    }
    if (bad)
        FAIL("%d of %zu rows wrong; first: %s", bad, n, first_bad);
}

/* Without options a client trusts the system store only (secure by
 * default): the test CA is not in it. em_start_tls(c, NULL), and the same
 * with zeroed options. */
static void start_tls_null_opts(em_conn *c, rec *x) { x->tls_rc = em_start_tls(c, NULL); }

TEST(tls_verify_null_opts_client_uses_system_store)
{
    for (int zeroed = 0; zeroed <= 1; zeroed++) {
        pair p;
        pair_init(&p, "server.pem");
        if (zeroed)
            memset(&p.co, 0, sizeof p.co);
        else
            p.cli_null_opts = true;
        pair_run(&p, "127.0.0.1", "localhost");
        assert_etls_both(&p);
        ASSERT_EQ(p.cli.tls_rc, 0);
        ASSERT_EQ(p.cli.handshakes, 0);
        ASSERT_CONTAINS(p.cli.tls_error, "unable to get local issuer");
        pair_free(&p);
    }
}

/* ============================================================== 2. SNI */

TEST(tls_verify_sni_hostname_overrides_connect_host)
{
    pair p;
    /* an address with the name "localhost": checked and sent as SNI */
    pair_init(&p, "server.pem");
    p.co.sni_hostname = "localhost";
    pair_run(&p, "127.0.0.1", "127.0.0.1");
    assert_ok(&p);
    ASSERT(p.ss.sni_set);
    ASSERT_STREQ(p.ss.sni, "localhost");
    ASSERT(!p.cs.sni_set); /* a server-side getter */
    pair_free(&p);

    /* the name checked is sni_hostname's, not the address's */
    pair_init(&p, "wronghost.pem");
    p.co.sni_hostname = "other.example";
    pair_run(&p, "127.0.0.1", "127.0.0.1");
    assert_ok(&p);
    ASSERT(p.ss.sni_set);
    ASSERT_STREQ(p.ss.sni, "other.example");
    pair_free(&p);

    /* and sni_hostname overrides a name given to em_connect too */
    pair_init(&p, "wronghost.pem");
    p.co.sni_hostname = "other.example";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_STREQ(p.ss.sni, "other.example");
    pair_free(&p);

    /* a wrong sni_hostname fails even when the connect host would pass */
    pair_init(&p, "server.pem");
    p.co.sni_hostname = "other.example";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_etls_both(&p);
    ASSERT_CONTAINS(p.cli.tls_error, "hostname mismatch");
    pair_free(&p);
}

TEST(tls_verify_sni_seen_by_server)
{
    pair p;
    /* a name given to em_connect is sent */
    pair_init(&p, "server.pem");
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT(p.ss.sni_set);
    ASSERT_STREQ(p.ss.sni, "localhost");
    pair_free(&p);

    /* an address is not (RFC 6066: SNI carries names only) */
    pair_init(&p, "server.pem");
    pair_run(&p, "127.0.0.1", "127.0.0.1");
    assert_ok(&p);
    ASSERT(!p.ss.sni_set);
    pair_free(&p);

    pair_init(&p, "server.pem");
    pair_run(&p, "::1", "::1");
    assert_ok(&p);
    ASSERT(!p.ss.sni_set);
    pair_free(&p);
}

/* ============================================ 3. pinning: ssl_verify_peer */

/* Once per certificate, root first, then the leaf; OpenSSL's verdict true
 * on both for a good chain. */
TEST(tls_verify_peer_called_root_then_leaf)
{
    pair p;
    pair_init(&p, "server.pem");
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_preverify;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_EQ(p.cli.verifies, 2);
    ASSERT_EQ(p.cs.nv, 2);
    char cn0[128], cn1[128];
    cn_of(p.cs.vpem[0], cn0, sizeof cn0);
    cn_of(p.cs.vpem[1], cn1, sizeof cn1);
    if (!pem_is_file_cert(p.cs.vpem[0], "ca.pem") || !pem_is_file_cert(p.cs.vpem[1], "server.pem"))
        FAIL("order: first CN=%s, then CN=%s; wanted ca.pem then server.pem", cn0, cn1);
    ASSERT(p.cs.vpre[0]);
    ASSERT(p.cs.vpre[1]);
    /* the PEM given is the file's text itself */
    char *ca = tls_read_file(tls_file("ca.pem"));
    ASSERT_STREQ(p.cs.vpem[0], ca);
    free(ca);
    pair_free(&p);
}

/* The host-name check belongs to OpenSSL's verdict on the leaf. */
TEST(tls_verify_preverify_includes_hostname)
{
    pair p;
    pair_init(&p, "wronghost.pem");
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_preverify;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_etls_both(&p);
    ASSERT_EQ(p.cs.nv, 2);
    ASSERT(pem_is_file_cert(p.cs.vpem[0], "ca.pem"));
    ASSERT(pem_is_file_cert(p.cs.vpem[1], "wronghost.pem"));
    ASSERT(p.cs.vpre[0]);  /* the root is fine */
    ASSERT(!p.cs.vpre[1]); /* the leaf is for other.example */
    ASSERT_CONTAINS(p.cli.tls_error, "ssl_verify_peer");
    pair_free(&p);
}

TEST(tls_verify_pin_selfsigned)
{
    char *pin = tls_read_file(tls_file("selfsigned.pem"));
    ASSERT_NOT_NULL(pin);
    pair p;

    /* OpenSSL's verdict alone: refused, shown once (a chain of one) */
    pair_init(&p, "selfsigned.pem");
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_preverify;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_etls_both(&p);
    ASSERT_EQ(p.cs.nv, 1);
    ASSERT(!p.cs.vpre[0]);
    ASSERT_STREQ(p.cs.vpem[0], pin);
    pair_free(&p);

    /* pinned: accepted although OpenSSL says no */
    pair_init(&p, "selfsigned.pem");
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_pin;
    p.cs.pin = pin;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_EQ(p.cs.nv, 1);
    ASSERT(!p.cs.vpre[0]);
    ASSERT(pem_is_file_cert(p.cs.peer_cert, "selfsigned.pem"));
    pair_free(&p);

    /* the same pin does not let another self-signed-looking chain in: a
     * good chain whose certificates are not the pin is refused */
    pair_init(&p, "server.pem");
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_pin;
    p.cs.pin = pin;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_etls_both(&p);
    ASSERT_EQ(p.cs.nv, 1); /* refused at the root: no more asked */
    ASSERT(p.cs.vpre[0]);
    pair_free(&p);
    free(pin);
}

TEST(tls_verify_handler_rejecting_good_leaf_fails)
{
    char *leaf = tls_read_file(tls_file("server.pem"));
    ASSERT_NOT_NULL(leaf);
    pair p;
    pair_init(&p, "server.pem");
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_refuse_pin;
    p.cs.pin = leaf;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_etls_both(&p);
    ASSERT_EQ(p.cli.handshakes, 0);
    ASSERT_EQ(p.cs.nv, 2);
    ASSERT(p.cs.vpre[0] && p.cs.vpre[1]); /* OpenSSL had no objection */
    ASSERT_STREQ(p.cs.vpem[1], leaf);
    ASSERT_CONTAINS(p.cli.tls_error, "rejected by ssl_verify_peer");
    pair_free(&p);
    free(leaf);
}

/* A handler may close the connection from inside ssl_verify_peer: the
 * handshake stops there (no more calls, no handshake_completed), the
 * client unbinds once with 0 (its own close), the server with EM_ETLS. */
static bool v_close(em_conn *c, rec *x, const char *pem)
{
    vlog(c, x->ctx, pem);
    ASSERT_EQ(close_conn(c, false), 0);
    return true;
}

TEST(tls_verify_handler_closing_inside_verify)
{
    pair p;
    pair_init(&p, "server.pem");
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_close;
    pair_run(&p, "127.0.0.1", "localhost");
    ASSERT_EQ(p.cs.nv, 1);
    ASSERT_EQ(p.cli.handshakes, 0);
    ASSERT_EQ(p.cli.reason, 0);
    ASSERT_EQ(srv_rec(&p)->handshakes, 0);
    ASSERT_EQ(srv_rec(&p)->reason, EM_ETLS);
    ASSERT_EQ(p.cli.len, 0);
    pair_free(&p);
}

/* insecure skips OpenSSL's verdict, not the handler: it is still asked,
 * still sees the verdict, and its answer still decides. */
TEST(tls_verify_handler_called_when_insecure)
{
    pair p;
    pair_init(&p, "server.pem");
    p.co.insecure = true;
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_preverify;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_EQ(p.cs.nv, 2);
    ASSERT(p.cs.vpre[0] && p.cs.vpre[1]);
    pair_free(&p);

    pair_init(&p, "selfsigned.pem");
    p.co.insecure = true;
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_accept_all;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_EQ(p.cs.nv, 1);
    ASSERT(!p.cs.vpre[0]);
    pair_free(&p);

    /* a handler that follows OpenSSL's verdict refuses even when insecure */
    pair_init(&p, "expired.pem");
    p.co.insecure = true;
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_preverify;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_etls_both(&p);
    ASSERT_EQ(p.cs.nv, 2);
    ASSERT(p.cs.vpre[0]);
    ASSERT(!p.cs.vpre[1]);
    pair_free(&p);
}

/* ================================================= 4. client certificates */

static void client_cert_opts(pair *p, const char *cert, bool fail_if_none)
{
    p->so.verify_peer = true;
    p->so.fail_if_no_peer_cert = fail_if_none;
    p->so.ca_file = tls_file("ca.pem");
    if (cert) {
        p->co.cert_chain_file = tls_file(cert);
        p->co.private_key_file = tls_file("client.key");
    }
}

TEST(tls_verify_client_cert_accepted)
{
    pair p;
    pair_init(&p, "server.pem");
    client_cert_opts(&p, "client.pem", true);
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    char *pem = tls_read_file(tls_file("client.pem"));
    ASSERT_STREQ(p.ss.peer_cert, pem); /* the server sees the client's PEM */
    free(pem);
    ASSERT(pem_is_file_cert(p.cs.peer_cert, "server.pem"));
    pair_free(&p);
}

/* The server's ssl_verify_peer sees the client's chain, root first. */
TEST(tls_verify_client_cert_server_handler_order)
{
    pair p;
    pair_init(&p, "server.pem");
    client_cert_opts(&p, "client.pem", true);
    p.sh = &rec_verify_handler;
    p.srv.on_verify = v_preverify;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_EQ(p.ss.nv, 2);
    ASSERT(pem_is_file_cert(p.ss.vpem[0], "ca.pem"));
    ASSERT(pem_is_file_cert(p.ss.vpem[1], "client.pem"));
    ASSERT(p.ss.vpre[0] && p.ss.vpre[1]);
    pair_free(&p);

    /* and its refusal refuses the client */
    char *pin = tls_read_file(tls_file("client.pem"));
    pair_init(&p, "server.pem");
    client_cert_opts(&p, "client.pem", true);
    p.sh = &rec_verify_handler;
    p.srv.on_verify = v_refuse_pin;
    p.ss.pin = pin;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_etls_both(&p);
    ASSERT_EQ(p.ss.nv, 2);
    ASSERT_CONTAINS(srv_rec(&p)->tls_error, "rejected by ssl_verify_peer");
    pair_free(&p);
    free(pin);
}

/* fail_if_no_peer_cert and no certificate: refused on both sides. With
 * TLS 1.3 the client has finished its handshake before the server reads
 * its (empty) Certificate, so the client's ssl_handshake_completed has
 * run once when the server's alert arrives; with TLS 1.2 the server
 * refuses before sending its Finished, and the client's never runs. */
TEST(tls_verify_client_cert_required_but_missing)
{
    for (int v12 = 0; v12 <= 1; v12++) {
        pair p;
        pair_init(&p, "server.pem");
        client_cert_opts(&p, NULL, true);
        if (v12)
            p.co.max_version = EM_TLS_1_2;
        pair_run(&p, "127.0.0.1", "localhost");
        printf("  %s: client %s hs=%d \"%s\" | server %s hs=%d \"%s\"\n",
               v12 ? "TLS 1.2" : "TLS 1.3", reason_name(p.cli.reason), p.cli.handshakes,
               p.cli.tls_error, reason_name(srv_rec(&p)->reason), srv_rec(&p)->handshakes,
               srv_rec(&p)->tls_error);
        fflush(stdout);
        assert_etls_both(&p);
        ASSERT_EQ(p.cli.handshakes, v12 ? 0 : 1);
        ASSERT_NULL(p.ss.peer_cert);
        pair_free(&p);
    }
}

TEST(tls_verify_client_cert_optional_and_missing)
{
    pair p;
    pair_init(&p, "server.pem");
    client_cert_opts(&p, NULL, false);
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT(p.ss.hs_seen);
    ASSERT_NULL(p.ss.peer_cert);
    ASSERT(p.cs.peer_cert != NULL);
    pair_free(&p);
}

TEST(tls_verify_client_cert_untrusted)
{
    for (int fail_if_none = 0; fail_if_none <= 1; fail_if_none++) {
        pair p;
        pair_init(&p, "server.pem");
        client_cert_opts(&p, "client-other.pem", fail_if_none);
        pair_run(&p, "127.0.0.1", "localhost");
        assert_etls_both(&p);
        ASSERT_CONTAINS(srv_rec(&p)->tls_error, "unable to get local issuer");
        pair_free(&p);
    }
}

/* ============================================= 5. keys and certificates */

TEST(tls_verify_inline_pem)
{
    char *cert = tls_read_file(tls_file("server.pem"));
    char *key = tls_read_file(tls_file("server.key"));
    char *ccert = tls_read_file(tls_file("client.pem"));
    char *ckey = tls_read_file(tls_file("client.key"));
    ASSERT(cert && key && ccert && ckey);
    pair p;
    pair_init(&p, "server.pem");
    p.so = (em_tls_opts){.cert_chain_pem = cert, .private_key_pem = key};
    client_cert_opts(&p, NULL, true);
    p.co.cert_chain_pem = ccert;
    p.co.private_key_pem = ckey;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_STREQ(p.ss.peer_cert, ccert);
    ASSERT_STREQ(p.cs.peer_cert, cert);
    pair_free(&p);
    free(cert);
    free(key);
    free(ccert);
    free(ckey);
}

/* An inline chain, leaf first: the intermediate-position certificate is
 * sent along (here the CA itself; the client must still accept). */
TEST(tls_verify_inline_chain_pem)
{
    char *chain = tls_read_file(tls_file("chain.pem"));
    char *key = tls_read_file(tls_file("server.key"));
    ASSERT(chain && key);
    pair p;
    pair_init(&p, "server.pem");
    p.so = (em_tls_opts){.cert_chain_pem = chain, .private_key_pem = key};
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_preverify;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_EQ(p.cs.nv, 2);
    ASSERT(pem_is_file_cert(p.cs.peer_cert, "server.pem"));
    pair_free(&p);
    free(chain);
    free(key);
}

TEST(tls_verify_encrypted_key_with_passphrase)
{
    pair p;
    /* from a file */
    pair_init(&p, "server.pem");
    p.so.private_key_file = tls_file("server-enc.key");
    p.so.private_key_pass = "secret";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    pair_free(&p);

    /* from memory */
    char *cert = tls_read_file(tls_file("server.pem"));
    char *key = tls_read_file(tls_file("server-enc.key"));
    ASSERT(cert && key);
    ASSERT_CONTAINS(key, "ENCRYPTED");
    pair_init(&p, "server.pem");
    p.so = (em_tls_opts){.cert_chain_pem = cert, .private_key_pem = key,
                         .private_key_pass = "secret"};
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    pair_free(&p);
    free(cert);
    free(key);
}

/* ----- em_start_tls refusals: each row on a fresh plain pair; the side
 * named calls em_start_tls in post_init and must get `want`, with
 * em_tls_error_string saying why, and the connection must then work as
 * plain TCP (the client sends "ping", the server echoes it). */

typedef struct refuse_row {
    const char *name;
    bool server;            /* which side calls em_start_tls */
    const char *cert, *key; /* files of tls_dir; NULL: none */
    bool inline_pem;        /* cert and key as PEM text instead */
    const char *pass;
    const char *ca;         /* client: ca_file (default ca.pem) */
    const char *cipher_list, *ciphersuites, *ecdh_curve, *alpn, *dhparam;
    int min_version, max_version;
    int want;
} refuse_row;

static char long_alpn[301];

static const refuse_row refusals[] = {
    {.name = "wrong passphrase, key file", .server = true, .cert = "server.pem",
     .key = "server-enc.key", .pass = "wrong", .want = -EM_ETLS},
    {.name = "wrong passphrase, key in memory", .server = true, .cert = "server.pem",
     .key = "server-enc.key", .inline_pem = true, .pass = "wrong", .want = -EM_ETLS},
    {.name = "encrypted key file, no passphrase", .server = true, .cert = "server.pem",
     .key = "server-enc.key", .want = -EM_ETLS},
    {.name = "encrypted key in memory, no passphrase", .server = true, .cert = "server.pem",
     .key = "server-enc.key", .inline_pem = true, .want = -EM_ETLS},
    {.name = "missing certificate file", .server = true, .cert = "no-such.pem",
     .key = "server.key", .want = -EM_ETLS},
    {.name = "missing key file", .server = true, .cert = "server.pem", .key = "no-such.key",
     .want = -EM_ETLS},
    {.name = "mismatched pair (server)", .server = true, .cert = "client.pem",
     .key = "server.key", .want = -EM_ETLS},
    {.name = "mismatched pair (client)", .cert = "client.pem", .key = "server.key",
     .want = -EM_ETLS},
    {.name = "mismatched pair in memory", .server = true, .cert = "client.pem",
     .key = "server.key", .inline_pem = true, .want = -EM_ETLS},
    {.name = "a key file as the certificate", .server = true, .cert = "server.key",
     .key = "server.key", .want = -EM_ETLS},
    {.name = "missing ca_file", .ca = "no-such-ca.pem", .want = -EM_ETLS},
    {.name = "missing dhparam_file", .server = true, .cert = "server.pem", .key = "server.key",
     .dhparam = "no-such-dh.pem", .want = -EM_ETLS},
    {.name = "dhparam_file holding a certificate", .server = true, .cert = "server.pem",
     .key = "server.key", .dhparam = "server.pem", .want = -EM_ETLS},
    {.name = "server without a certificate", .server = true, .want = -EINVAL},
    {.name = "cipher_list NOPE", .cipher_list = "NOPE", .want = -EINVAL},
    {.name = "cipher_list NOPE (server)", .server = true, .cert = "server.pem",
     .key = "server.key", .cipher_list = "NOPE", .want = -EINVAL},
    {.name = "ciphersuites NOPE", .ciphersuites = "NOPE", .want = -EINVAL},
    {.name = "ciphersuites NOPE (server)", .server = true, .cert = "server.pem",
     .key = "server.key", .ciphersuites = "NOPE", .want = -EINVAL},
    {.name = "ecdh_curve nope", .ecdh_curve = "nope", .want = -EINVAL},
    {.name = "alpn \"\"", .alpn = "", .want = -EINVAL},
    {.name = "alpn a,,b", .alpn = "a,,b", .want = -EINVAL},
    {.name = "alpn a, (trailing comma)", .alpn = "a,", .want = -EINVAL},
    {.name = "alpn 300-byte name", .alpn = long_alpn, .want = -EINVAL},
    {.name = "alpn a,,b (server)", .server = true, .cert = "server.pem", .key = "server.key",
     .alpn = "a,,b", .want = -EINVAL},
    {.name = "min_version 0x0302", .min_version = 0x0302, .want = -EINVAL},
    {.name = "max_version 0x0302", .max_version = 0x0302, .want = -EINVAL},
    {.name = "min_version 0x0302 (server)", .server = true, .cert = "server.pem",
     .key = "server.key", .min_version = 0x0302, .want = -EINVAL},
    {.name = "min 1.3 above max 1.2", .min_version = EM_TLS_1_3, .max_version = EM_TLS_1_2,
     .want = -EINVAL},
};

typedef struct refuse_run {
    em_tls_opts opts;
    char *cert_pem, *key_pem;
} refuse_run;

static void refuse_opts(const refuse_row *w, refuse_run *u)
{
    memset(u, 0, sizeof *u);
    em_tls_opts *o = &u->opts;
    if (w->inline_pem) {
        u->cert_pem = tls_read_file(tls_file(w->cert));
        u->key_pem = tls_read_file(tls_file(w->key));
        ASSERT(u->cert_pem && u->key_pem);
        o->cert_chain_pem = u->cert_pem;
        o->private_key_pem = u->key_pem;
    } else {
        o->cert_chain_file = w->cert ? strdup(tls_file(w->cert)) : NULL;
        o->private_key_file = w->key ? strdup(tls_file(w->key)) : NULL;
    }
    o->private_key_pass = w->pass;
    if (!w->server)
        o->ca_file = strdup(tls_file(w->ca ? w->ca : "ca.pem"));
    o->cipher_list = w->cipher_list;
    o->ciphersuites = w->ciphersuites;
    o->ecdh_curve = w->ecdh_curve;
    o->alpn = w->alpn;
    o->dhparam_file = w->dhparam ? strdup(tls_file(w->dhparam)) : NULL;
    o->min_version = w->min_version;
    o->max_version = w->max_version;
}

static void refuse_run_free(refuse_run *u)
{
    free(u->cert_pem);
    free(u->key_pem);
    if (!u->cert_pem) {
        free((char *)u->opts.cert_chain_file);
        free((char *)u->opts.private_key_file);
    }
    free((char *)u->opts.ca_file);
    free((char *)u->opts.dhparam_file);
}

/* on_post_init: em_start_tls has run (x->tls_rc); keep why */
static void keep_refusal(em_conn *c, rec *x)
{
    side *s = x->ctx;
    const char *why = em_tls_error_string(c);
    if (why) {
        s->refusal_set = true;
        snprintf(s->refusal, sizeof s->refusal, "%s", why);
    }
}

static void send_ping(em_conn *c, rec *x)
{
    (void)x;
    ASSERT_EQ(em_send_data(c, "ping", 4), 0);
}

static void close_on_4(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    (void)n;
    side *s = x->ctx;
    if (x->len >= 4 && !s->closing) {
        s->closing = true;
        ASSERT_EQ(close_conn(c, true), 0);
    }
}

/* A plain pair; the server side's em_start_tls gets srv_tls (NULL: not
 * called), the client's cli_tls. Ends with the echo of "ping". */
static void plain_pair_run(pair *p, const em_tls_opts *srv_tls, const em_tls_opts *cli_tls)
{
    memset(p, 0, sizeof *p);
    p->r = new_reactor();
    p->srv.tls = srv_tls;
    p->srv.echo = true;
    p->srv.store = true;
    p->srv.ctx = &p->ss;
    p->srv.on_post_init = keep_refusal;
    rec_pool_new(&p->srv, 1);
    p->s = em_start_server(p->r, "127.0.0.1", 0, &rec_handler, &p->srv);
    ASSERT_NOT_NULL(p->s);
    p->cli.tls = cli_tls;
    p->cli.store = true;
    p->cli.ctx = &p->cs;
    p->cli.on_post_init = keep_refusal;
    p->cli.on_completed = send_ping;
    p->cli.on_data = close_on_4;
    ASSERT_NOT_NULL(em_connect(p->r, "127.0.0.1", em_server_port(p->s), &rec_handler, &p->cli));
    ASSERT(run_until_pred(p->r, both_unbound, p, 10));
    em_stop_server(p->s);
    REACTOR_FREE_CHECKED(p->r);
}

TEST_TIMEOUT(tls_verify_start_tls_refusals, 60);
TEST(tls_verify_start_tls_refusals)
{
    memset(long_alpn, 'a', 300);
    long_alpn[300] = '\0';
    size_t n = sizeof refusals / sizeof *refusals;
    int bad = 0;
    char first_bad[512] = "";
    for (size_t i = 0; i < n; i++) {
        const refuse_row *w = &refusals[i];
        refuse_run u;
        refuse_opts(w, &u);
        pair p;
        plain_pair_run(&p, w->server ? &u.opts : NULL, w->server ? NULL : &u.opts);
        rec *side_rec = w->server ? srv_rec(&p) : &p.cli;
        side *sd = w->server ? &p.ss : &p.cs;
        char msg[512] = "";
        if (side_rec->tls_rc != w->want)
            snprintf(msg, sizeof msg, "%s: em_start_tls returned %d (%s), wanted %d (%s)", w->name,
                     side_rec->tls_rc, em_strerror(side_rec->tls_rc), w->want,
                     em_strerror(w->want));
        else if (!sd->refusal_set || !sd->refusal[0])
            snprintf(msg, sizeof msg, "%s: no em_tls_error_string after the refusal", w->name);
        else if (p.cli.reason || srv_rec(&p)->reason || p.cli.len != 4 ||
                 memcmp(p.cli.buf, "ping", 4) || p.cli.handshakes || srv_rec(&p)->handshakes)
            snprintf(msg, sizeof msg,
                     "%s: not plain TCP afterwards: reasons %d/%d, echo %zu bytes, hs %d/%d",
                     w->name, p.cli.reason, srv_rec(&p)->reason, p.cli.len, p.cli.handshakes,
                     srv_rec(&p)->handshakes);
        printf("  %-40s %-6s rc %-6d want %-6d \"%s\"%s\n", w->name, w->server ? "server" : "client",
               side_rec->tls_rc, w->want, sd->refusal, msg[0] ? "   <-- WRONG" : "");
        fflush(stdout);
        if (msg[0] && !bad++)
            snprintf(first_bad, sizeof first_bad, "%s", msg);
        pair_free(&p);
        refuse_run_free(&u);
    }
    if (bad)
        FAIL("%d of %zu rows wrong; first: %s", bad, n, first_bad);
}

/* em_start_tls(c, o) on an attached client, in a child without a
 * controlling terminal (setsid), stdin from /dev/null, stdout and stderr
 * into a file: it must return want (1: 0 or -EM_ETLS) and print nothing.
 * OpenSSL's default passphrase callback, if it ever ran, would write
 * "Enter PEM pass phrase:" there (on a terminal it would wait for one,
 * blocking the reactor; here the child's alarm would catch that). */
static void start_tls_without_terminal(const char *what, const em_tls_opts *o, int want)
{
    char out[256];
    snprintf(out, sizeof out, "%s/prompt.out", tls_dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        alarm(5);
        setsid();
        int in = open("/dev/null", O_RDONLY);
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || fd < 0)
            _exit(3);
        dup2(in, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
            _exit(4);
        em_reactor *r = em_reactor_new(NULL);
        rec x = {0};
        em_conn *c = r ? em_attach(r, sv[0], &rec_handler, &x) : NULL;
        if (!c)
            _exit(5);
        int rc = em_start_tls(c, o);
        const char *why = em_tls_error_string(c);
        bool ok = want == 1 ? rc == 0 || rc == -EM_ETLS : rc == want;
        if (rc && !(why && why[0]))
            ok = false;
        if (!ok)
            dprintf(fd, "[rc %d \"%s\"]", rc, why ? why : "(null)");
        em_close_connection(c, false);
        for (int i = 0; i < 50 && !x.unbinds; i++)
            em_run_once(r, 0.01);
        em_reactor_free(r);
        close(sv[0]);
        close(sv[1]);
        _exit(!ok ? 6 : x.unbinds == 1 ? 0 : 7);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    char *text = tls_read_file(out);
    if (WIFSIGNALED(st))
        FAIL("%s: the child was killed by signal %d (waiting for a passphrase?); output \"%s\"",
             what, WTERMSIG(st), text ? text : "");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("%s: the child exited %d; output \"%s\"", what, WEXITSTATUS(st), text ? text : "");
    if (text && text[0])
        FAIL("%s: something was written to the terminal's streams: \"%s\"", what, text);
    free(text);
}

/* No passphrase for an encrypted key: refused, and OpenSSL's default
 * (prompting on the terminal) never runs. */
TEST(tls_verify_encrypted_key_without_passphrase_never_prompts)
{
    char *cert = tls_read_file(tls_file("server.pem"));
    char *key = tls_read_file(tls_file("server-enc.key"));
    ASSERT(cert && key);
    em_tls_opts from_file = {.cert_chain_file = tls_file("server.pem"),
                             .private_key_file = tls_file("server-enc.key"),
                             .sni_hostname = "localhost"};
    em_tls_opts from_mem = {.cert_chain_pem = cert, .private_key_pem = key,
                            .sni_hostname = "localhost"};
    start_tls_without_terminal("key file", &from_file, -EM_ETLS);
    start_tls_without_terminal("key in memory", &from_mem, -EM_ETLS);
    /* the right passphrase: no prompt either */
    from_file.private_key_pass = "secret";
    start_tls_without_terminal("key file with its passphrase", &from_file, 0);
    free(cert);
    free(key);
}

/* The same for an encrypted certificate block (legacy PEM encryption,
 * "Proc-Type: 4,ENCRYPTED", which OpenSSL accepts on any PEM type): libem
 * must not let OpenSSL prompt for it either, with or without
 * private_key_pass. */
TEST(tls_verify_encrypted_certificate_never_prompts)
{
    char *pem = tls_read_file(tls_file("server.pem"));
    ASSERT_NOT_NULL(pem);
    X509 *x = x509_of_pem(pem);
    ASSERT_NOT_NULL(x);
    BIO *b = BIO_new(BIO_s_mem());
    ASSERT_NOT_NULL(b);
    ASSERT(PEM_ASN1_write_bio((i2d_of_void *)i2d_X509, PEM_STRING_X509, b, x,
                              EVP_aes_256_cbc(), (unsigned char *)"secret", 6, NULL, NULL));
    char *data;
    long n = BIO_get_mem_data(b, &data);
    ASSERT_GT(n, 0);
    char *enc = strndup(data, (size_t)n);
    BIO_free(b);
    X509_free(x);
    ASSERT_CONTAINS(enc, "ENCRYPTED");
    char path[300];
    snprintf(path, sizeof path, "%s", tls_file("enc-cert.pem"));
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    ASSERT_EQ(fputs(enc, f) >= 0, 1);
    ASSERT_EQ(fclose(f), 0);
    em_tls_opts from_file = {.cert_chain_file = path,
                             .private_key_file = tls_file("server.key"),
                             .sni_hostname = "localhost"};
    em_tls_opts from_mem = {.cert_chain_pem = enc,
                            .private_key_file = NULL,
                            .sni_hostname = "localhost"};
    char *key = tls_read_file(tls_file("server.key"));
    from_mem.private_key_pem = key;
    start_tls_without_terminal("encrypted certificate file", &from_file, -EM_ETLS);
    start_tls_without_terminal("encrypted certificate in memory", &from_mem, -EM_ETLS);
    from_file.private_key_pass = "secret";
    start_tls_without_terminal("encrypted certificate file, private_key_pass given", &from_file, 1);
    free(key);
    free(enc);
    free(pem);
}

/* em_start_tls twice: the second is refused with -EISCONN (with options or
 * without) and the first goes on unharmed. */
static void start_again(em_conn *c, rec *x)
{
    side *s = x->ctx;
    s->second_rc = em_start_tls(c, x->tls);
    s->third_rc = em_start_tls(c, NULL);
}

TEST(tls_verify_start_tls_twice)
{
    pair p;
    pair_init(&p, "server.pem");
    p.cli.on_post_init = start_again;
    p.srv.on_post_init = start_again;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_EQ(p.cs.second_rc, -EISCONN);
    ASSERT_EQ(p.cs.third_rc, -EISCONN);
    ASSERT_EQ(p.ss.second_rc, -EISCONN);
    ASSERT_EQ(p.ss.third_rc, -EISCONN);
    pair_free(&p);
}

static void close_then_start(em_conn *c, rec *x)
{
    side *s = x->ctx;
    em_tls_opts co = tls_client_opts();
    if (x->tag == 1)
        ASSERT_EQ(close_conn(c, true), 0);
    else if (x->tag == 2)
        ASSERT_EQ(close_conn(c, false), 0);
    else
        ASSERT_EQ(em_close_write(c), 0);
    s->second_rc = em_start_tls(c, &co);
}

static bool cli_unbound(void *arg) { return ((rec *)arg)->unbinds > 0; }

TEST(tls_verify_start_tls_on_closing_connection)
{
    for (int tag = 1; tag <= 3; tag++) {
        em_reactor *r = new_reactor();
        rec srv = {.echo = true};
        side cs = {0};
        rec cli = {.tag = tag, .ctx = &cs, .on_completed = close_then_start};
        rec_pool_new(&srv, 1);
        em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
        ASSERT_NOT_NULL(s);
        ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli));
        ASSERT(run_until_pred(r, cli_unbound, &cli, 10));
        if (cs.second_rc != -ENOTCONN)
            FAIL("after %s: em_start_tls returned %d (%s), wanted -ENOTCONN",
                 tag == 1 ? "close_connection_after_writing"
                 : tag == 2 ? "close_connection" : "close_write",
                 cs.second_rc, em_strerror(cs.second_rc));
        ASSERT_EQ(cli.handshakes, 0);
        ASSERT(run_until_pred(r, cli_unbound, &srv.pool[0], 10));
        em_stop_server(s);
        REACTOR_FREE_CHECKED(r);
        rec_free(&srv);
        rec_free(&cli);
    }
}

TEST(tls_verify_start_tls_null)
{
    em_tls_opts o = tls_client_opts();
    ASSERT_EQ(em_start_tls(NULL, &o), -EINVAL);
    ASSERT_EQ(em_start_tls(NULL, NULL), -EINVAL);
    /* a connection without a host name: a client over unix needs
     * sni_hostname or insecure */
    char dir[128], path[200];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/s", dir);
    em_reactor *r = new_reactor();
    rec srv = {0}, cli = {0};
    rec_pool_new(&srv, 1);
    em_server *s = em_start_unix_server(r, path, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    em_conn *c = em_connect_unix(r, path, &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(em_start_tls(c, &o), -EINVAL);
    ASSERT_NOT_NULL(em_tls_error_string(c));
    o.insecure = true; /* nothing to check: allowed */
    ASSERT_EQ(em_start_tls(c, &o), 0);
    ASSERT_EQ(em_start_tls(c, &o), -EISCONN);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until_pred(r, cli_unbound, &cli, 5));
    ASSERT(run_until_pred(r, cli_unbound, &srv.pool[0], 5));
    em_stop_server(s);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    rec_free(&cli);
    rm_tmpdir(dir);
}

/* ============================================================= 6. ALPN */

TEST(tls_verify_alpn_agreed)
{
    pair p;
    pair_init(&p, "server.pem");
    p.co.alpn = "h2,http/1.1";
    p.so.alpn = "http/1.1";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT(p.cs.alpn_set && p.ss.alpn_set);
    ASSERT_STREQ(p.cs.alpn, "http/1.1");
    ASSERT_STREQ(p.ss.alpn, "http/1.1");
    pair_free(&p);

    /* both offer both: the server's order of preference decides */
    pair_init(&p, "server.pem");
    p.co.alpn = "http/1.1,h2";
    p.so.alpn = "h2,http/1.1";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_STREQ(p.cs.alpn, "h2");
    ASSERT_STREQ(p.ss.alpn, "h2");
    pair_free(&p);
}

TEST(tls_verify_alpn_no_overlap_fails)
{
    pair p;
    pair_init(&p, "server.pem");
    p.co.alpn = "h2,spdy/3";
    p.so.alpn = "http/1.1";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_etls_both(&p);
    ASSERT_EQ(p.cli.handshakes, 0);
    ASSERT_CONTAINS(p.cli.tls_error, "no application protocol");
    pair_free(&p);
}

TEST(tls_verify_alpn_absent)
{
    pair p;
    /* the client offers none */
    pair_init(&p, "server.pem");
    p.so.alpn = "http/1.1";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT(!p.cs.alpn_set);
    ASSERT(!p.ss.alpn_set);
    pair_free(&p);

    /* the server accepts none: the client's offer is ignored */
    pair_init(&p, "server.pem");
    p.co.alpn = "h2";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT(!p.cs.alpn_set);
    ASSERT(!p.ss.alpn_set);
    pair_free(&p);
}

/* ========================================================= 7. versions */

static void assert_cipher_sane(const side *s, const char *proto)
{
    ASSERT_STREQ(s->proto, proto);
    ASSERT_NOT_NULL(s->cipher);
    ASSERT(s->cipher[0] != '\0');
    if (s->bits != 128 && s->bits != 256)
        FAIL("cipher %s has %d bits", s->cipher, s->bits);
}

TEST(tls_verify_version_floor_refused)
{
    pair p;
    pair_init(&p, "server.pem");
    p.so.min_version = EM_TLS_1_3;
    p.co.max_version = EM_TLS_1_2;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_etls_both(&p);
    ASSERT_EQ(p.cli.handshakes, 0);
    pair_free(&p);

    /* the other way round */
    pair_init(&p, "server.pem");
    p.so.max_version = EM_TLS_1_2;
    p.co.min_version = EM_TLS_1_3;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_etls_both(&p);
    ASSERT_EQ(p.cli.handshakes, 0);
    pair_free(&p);
}

TEST(tls_verify_version_tls13)
{
    pair p;
    pair_init(&p, "server.pem");
    p.so.min_version = p.so.max_version = EM_TLS_1_3;
    p.co.min_version = p.co.max_version = EM_TLS_1_3;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    assert_cipher_sane(&p.cs, "TLSv1.3");
    assert_cipher_sane(&p.ss, "TLSv1.3");
    ASSERT_STREQ(p.cs.cipher, p.ss.cipher);
    ASSERT(strncmp(p.cs.cipher, "TLS_", 4) == 0);
    printf("  TLS 1.3: %s, %d bits\n", p.cs.cipher, p.cs.bits);
    pair_free(&p);

    /* the default (max_version 0) is TLS 1.3 */
    pair_init(&p, "server.pem");
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    assert_cipher_sane(&p.cs, "TLSv1.3");
    pair_free(&p);

    /* ciphersuites chooses the TLS 1.3 suite */
    pair_init(&p, "server.pem");
    p.so.ciphersuites = "TLS_AES_128_GCM_SHA256";
    p.co.ciphersuites = "TLS_AES_128_GCM_SHA256";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_STREQ(p.cs.cipher, "TLS_AES_128_GCM_SHA256");
    ASSERT_EQ(p.cs.bits, 128);
    pair_free(&p);
}

TEST(tls_verify_version_tls12)
{
    pair p;
    pair_init(&p, "server.pem");
    p.so.max_version = EM_TLS_1_2;
    p.co.max_version = EM_TLS_1_2;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    assert_cipher_sane(&p.cs, "TLSv1.2");
    assert_cipher_sane(&p.ss, "TLSv1.2");
    ASSERT_STREQ(p.cs.cipher, p.ss.cipher);
    ASSERT_CONTAINS(p.cs.cipher, "ECDHE"); /* the modern default: forward secrecy */
    printf("  TLS 1.2: %s, %d bits\n", p.cs.cipher, p.cs.bits);
    pair_free(&p);

    /* a server capped at 1.2 meets a default client at 1.2 */
    pair_init(&p, "server.pem");
    p.so.max_version = EM_TLS_1_2;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    assert_cipher_sane(&p.cs, "TLSv1.2");
    pair_free(&p);

    /* cipher_list chooses the TLS 1.2 cipher */
    pair_init(&p, "server.pem");
    p.so.max_version = EM_TLS_1_2;
    p.co.max_version = EM_TLS_1_2;
    p.co.cipher_list = "ECDHE-ECDSA-AES128-GCM-SHA256";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_STREQ(p.cs.cipher, "ECDHE-ECDSA-AES128-GCM-SHA256");
    ASSERT_EQ(p.cs.bits, 128);
    pair_free(&p);
}

/* ecdh_curve is applied: a common group works, none fails */
TEST(tls_verify_ecdh_curve)
{
    pair p;
    pair_init(&p, "server.pem");
    p.so.ecdh_curve = "X25519:prime256v1";
    p.co.ecdh_curve = "prime256v1";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    pair_free(&p);

    pair_init(&p, "server.pem");
    p.so.ecdh_curve = "X25519";
    p.co.ecdh_curve = "prime256v1";
    pair_run(&p, "127.0.0.1", "localhost");
    assert_etls_both(&p);
    ASSERT_EQ(p.cli.handshakes, 0);
    pair_free(&p);
}

/* ====================================================== 8. resumption */

typedef struct conv {
    rec cli;
    side cs;
} conv;

/* One full conversation of a new client (opts co) with server s, whose
 * accepted connection records into srv->pool[srv->pool_used]. */
static void conv_run(em_reactor *r, em_server *s, rec *srv, const em_tls_opts *co, conv *v)
{
    memset(v, 0, sizeof *v);
    int slot = srv->pool_used;
    v->cli.tls = co;
    v->cli.store = true;
    v->cli.ctx = &v->cs;
    v->cli.on_handshake = cli_handshake;
    v->cli.on_data = cli_data;
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &v->cli));
    ASSERT(run_until_pred(r, cli_unbound, &v->cli, 10));
    ASSERT_GT(srv->pool_used, slot);
    ASSERT(run_until_pred(r, cli_unbound, &srv->pool[slot], 10));
    if (v->cli.reason || srv->pool[slot].reason)
        FAIL("conversation failed: client %d \"%s\", server %d \"%s\"", v->cli.reason,
             v->cli.tls_error, srv->pool[slot].reason, srv->pool[slot].tls_error);
    ASSERT_EQ(v->cli.handshakes, 1);
    ASSERT_EQ(v->cli.len, 4); /* data after the handshake: the ticket came before it */
    ASSERT_EQ(srv->pool[slot].len, 3);
}

static void resumption(int max_version)
{
    em_reactor *r = new_reactor();
    em_tls_opts so = tls_server_opts("server.pem", NULL);
    em_tls_opts co = tls_client_opts();
    so.max_version = max_version;
    co.max_version = max_version;
    side ssa = {0}, ssb = {0};
    rec a = {.tls = &so, .store = true, .ctx = &ssa, .on_handshake = srv_handshake};
    rec b = {.tls = &so, .store = true, .ctx = &ssb, .on_handshake = srv_handshake};
    rec_pool_new(&a, 3);
    rec_pool_new(&b, 1);
    em_server *sa = em_start_server(r, "127.0.0.1", 0, &rec_handler, &a);
    em_server *sb = em_start_server(r, "127.0.0.1", 0, &rec_handler, &b);
    ASSERT(sa && sb);
    conv v1, v2, v3, v4;
    conv_run(r, sa, &a, &co, &v1);
    conv_run(r, sa, &a, &co, &v2);
    /* b shares a's options, hence a's context and ticket keys: it would
     * resume a's session if the client offered it */
    conv_run(r, sb, &b, &co, &v3);
    conv_run(r, sa, &a, &co, &v4);
    printf("  %s: reused first %d, second %d, other server %d, a again %d\n",
           max_version ? "TLS 1.2" : "TLS 1.3", v1.cs.reused, v2.cs.reused, v3.cs.reused,
           v4.cs.reused);
    ASSERT(!v1.cs.reused);
    ASSERT(v2.cs.reused);
    /* a resumed session still knows the server's certificate */
    ASSERT(pem_is_file_cert(v2.cs.peer_cert, "server.pem"));
    ASSERT(!v3.cs.reused);
    ASSERT(v4.cs.reused);
    em_stop_server(sa);
    em_stop_server(sb);
    REACTOR_FREE_CHECKED(r);
    conv *vs[] = {&v1, &v2, &v3, &v4};
    for (int i = 0; i < 4; i++) {
        rec_free(&vs[i]->cli);
        side_free(&vs[i]->cs);
    }
    rec_free(&a);
    rec_free(&b);
    side_free(&ssa);
    side_free(&ssb);
}

TEST(tls_verify_session_resumption_tls13) { resumption(0); }

TEST(tls_verify_session_resumption_tls12) { resumption(EM_TLS_1_2); }

/* ================================================ 9. getters without TLS */

static void assert_no_tls_getters(em_conn *c)
{
    ASSERT_NULL(em_get_peer_cert(c));
    ASSERT_NULL(em_get_cipher_name(c));
    ASSERT_NULL(em_get_cipher_protocol(c));
    ASSERT_EQ(em_get_cipher_bits(c), -1);
    ASSERT_NULL(em_get_sni_hostname(c));
    ASSERT_NULL(em_get_alpn_protocol(c));
    ASSERT(!em_tls_session_reused(c));
    ASSERT(!em_tls_preverify_ok(c));
}

static void plain_getters(em_conn *c, rec *x)
{
    (void)x;
    assert_no_tls_getters(c);
    ASSERT_NULL(em_tls_error_string(c));
}

static void plain_getters_then_ping(em_conn *c, rec *x)
{
    plain_getters(c, x);
    send_ping(c, x);
}

static void plain_getters_on_data(em_conn *c, rec *x, const char *d, size_t n)
{
    plain_getters(c, x);
    close_on_4(c, x, d, n);
}

TEST(tls_verify_getters_on_plain_connection)
{
    assert_no_tls_getters(NULL);
    ASSERT_NULL(em_tls_error_string(NULL));
    pair p;
    memset(&p, 0, sizeof p);
    p.r = new_reactor();
    p.srv.echo = true;
    p.srv.ctx = &p.ss;
    p.srv.on_post_init = plain_getters;
    rec_pool_new(&p.srv, 1);
    p.s = em_start_server(p.r, "127.0.0.1", 0, &rec_handler, &p.srv);
    ASSERT_NOT_NULL(p.s);
    p.cli.store = true;
    p.cli.ctx = &p.cs;
    p.cli.on_post_init = plain_getters;
    p.cli.on_completed = plain_getters_then_ping;
    p.cli.on_data = plain_getters_on_data;
    ASSERT_NOT_NULL(em_connect(p.r, "127.0.0.1", em_server_port(p.s), &rec_handler, &p.cli));
    ASSERT(run_until_pred(p.r, both_unbound, &p, 10));
    ASSERT_EQ(p.cli.len, 4);
    em_stop_server(p.s);
    REACTOR_FREE_CHECKED(p.r);
    pair_free(&p);
}

/* Before the handshake completes the getters have nothing to say yet. */
static void getters_before_handshake(em_conn *c, rec *x)
{
    (void)x;
    ASSERT_EQ(x->tls_rc, 0);
    assert_no_tls_getters(c);
    ASSERT_NULL(em_tls_error_string(c));
}

TEST(tls_verify_getters_before_handshake)
{
    pair p;
    pair_init(&p, "server.pem");
    p.co.alpn = "h2";
    p.so.alpn = "h2";
    p.cli.on_post_init = getters_before_handshake;
    p.srv.on_post_init = getters_before_handshake;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_STREQ(p.cs.alpn, "h2");
    ASSERT_STREQ(p.cs.proto, "TLSv1.3");
    pair_free(&p);
}

/* ============================================ more configuration checks */

/* Host names are compared without regard to case (RFC 6125). */
TEST(tls_verify_hostname_case_insensitive)
{
    pair p;
    pair_init(&p, "server.pem");
    p.co.sni_hostname = "LocalHost";
    pair_run(&p, "127.0.0.1", "127.0.0.1");
    assert_ok(&p);
    ASSERT(p.ss.sni_set);
    ASSERT(strcasecmp(p.ss.sni, "localhost") == 0);
    pair_free(&p);
}

/* A chain file (leaf, then the CA) is served whole. */
TEST(tls_verify_chain_file)
{
    pair p;
    pair_init(&p, "chain.pem");
    p.ch = &rec_verify_handler;
    p.cli.on_verify = v_preverify;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_EQ(p.cs.nv, 2);
    ASSERT(pem_is_file_cert(p.cs.vpem[0], "ca.pem"));
    ASSERT(pem_is_file_cert(p.cs.vpem[1], "server.pem"));
    ASSERT(pem_is_file_cert(p.cs.peer_cert, "server.pem"));
    pair_free(&p);
}

/* A valid dhparam_file is taken (the handshake itself uses ECDHE). */
TEST(tls_verify_dhparam_file)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out '%s' "
             ">/dev/null 2>&1",
             tls_file("dh.pem"));
    ASSERT_EQ(system(cmd), 0);
    pair p;
    pair_init(&p, "server.pem");
    p.so.dhparam_file = tls_file("dh.pem");
    p.so.max_version = EM_TLS_1_2;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    pair_free(&p);
}

/* ALPN names of 255 bytes, the most the wire format holds, are accepted
 * and agreed on. */
TEST(tls_verify_alpn_longest_name)
{
    char name[256];
    memset(name, 'x', 255);
    name[255] = '\0';
    char list[300];
    snprintf(list, sizeof list, "h2,%s", name);
    pair p;
    pair_init(&p, "server.pem");
    p.co.alpn = list;
    p.so.alpn = name;
    pair_run(&p, "127.0.0.1", "localhost");
    assert_ok(&p);
    ASSERT_STREQ(p.cs.alpn, name);
    ASSERT_STREQ(p.ss.alpn, name);
    pair_free(&p);
}

/* "a certificate or key file changed on disk makes a new one": a server
 * whose certificate file is renewed serves the new one to the next
 * connection, whether the file is replaced (rename) or rewritten. */
static void copy_file(const char *from, const char *to, bool by_rename)
{
    char *text = tls_read_file(tls_file(from));
    ASSERT_NOT_NULL(text);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", to);
    FILE *f = fopen(by_rename ? tmp : to, "w");
    ASSERT_NOT_NULL(f);
    ASSERT_EQ(fwrite(text, 1, strlen(text), f), strlen(text));
    ASSERT_EQ(fclose(f), 0);
    if (by_rename)
        ASSERT_EQ(rename(tmp, to), 0);
    free(text);
}

static bool conv_done(void *arg)
{
    rec **v = arg;
    return v[0]->unbinds && v[1]->pool_used && v[1]->pool[v[1]->pool_used - 1].unbinds;
}

/* A client conversation with s (server rec srv) with handler h; waits for
 * both ends; no outcome asserted. */
static void conv_try(em_reactor *r, em_server *s, rec *srv, const em_tls_opts *co,
                     const em_handler *h, conv *v)
{
    v->cli.tls = co;
    v->cli.store = true;
    v->cli.ctx = &v->cs;
    v->cli.on_handshake = cli_handshake;
    v->cli.on_data = cli_data;
    int used = srv->pool_used;
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", em_server_port(s), h, &v->cli));
    rec *pr[2] = {&v->cli, srv};
    ASSERT(run_until_pred(r, conv_done, pr, 10));
    ASSERT_EQ(srv->pool_used, used + 1);
}

TEST(tls_verify_renewed_certificate_file)
{
    for (int by_rename = 0; by_rename <= 1; by_rename++) {
        char path[300];
        snprintf(path, sizeof path, "%s", tls_file(by_rename ? "renew-a.pem" : "renew-b.pem"));
        copy_file("server.pem", path, by_rename);
        em_reactor *r = new_reactor();
        em_tls_opts so = {.cert_chain_file = path, .private_key_file = tls_file("server.key")};
        em_tls_opts co = tls_client_opts();
        co.insecure = true;
        side ss = {0};
        rec srv = {.tls = &so, .store = true, .ctx = &ss, .on_handshake = srv_handshake};
        rec_pool_new(&srv, 2);
        em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
        ASSERT_NOT_NULL(s);
        conv v1 = {0}, v2 = {0};
        conv_try(r, s, &srv, &co, &rec_handler, &v1);
        ASSERT_EQ(v1.cli.reason, 0);
        ASSERT(pem_is_file_cert(v1.cs.peer_cert, "server.pem"));
        /* a different mtime even on a coarse clock */
        usleep(20000);
        copy_file("wronghost.pem", path, by_rename);
        conv_try(r, s, &srv, &co, &rec_handler, &v2);
        ASSERT_EQ(v2.cli.reason, 0);
        if (!pem_is_file_cert(v2.cs.peer_cert, "wronghost.pem"))
            FAIL("after the certificate file was %s, the server still serves the old one",
                 by_rename ? "replaced" : "rewritten");
        em_stop_server(s);
        REACTOR_FREE_CHECKED(r);
        rec_free(&v1.cli);
        side_free(&v1.cs);
        rec_free(&v2.cli);
        side_free(&v2.cs);
        rec_free(&srv);
        side_free(&ss);
    }
}

/* Session resumption must not let a connection skip the verification it
 * asked for. Connections with equal options share one context and so one
 * session cache, but the ssl_verify_peer handler is the connection's, not
 * the options'. A session made under one policy, offered by a connection
 * with another, resumes without any certificate being shown: no
 * ssl_verify_peer call, no OpenSSL verdict.
 *   (a) a pinning handler that refuses the server's leaf is bypassed when
 *       an earlier connection without a handler left a session;
 *   (b) a connection without a handler (default verification, which
 *       refuses a self-signed server) gets in on a session an earlier
 *       connection accepted through a permissive handler. */
static void resumption_policy(bool permissive_first)
{
    em_reactor *r = new_reactor();
    const char *cert = permissive_first ? "selfsigned.pem" : "server.pem";
    em_tls_opts so = tls_server_opts(cert, NULL);
    em_tls_opts co = tls_client_opts();
    side ss = {0};
    rec srv = {.tls = &so, .store = true, .ctx = &ss, .on_handshake = srv_handshake};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    char *leaf = tls_read_file(tls_file("server.pem"));
    conv v1 = {0}, v2 = {0};
    if (permissive_first) {
        v1.cli.on_verify = v_accept_all;
        conv_try(r, s, &srv, &co, &rec_verify_handler, &v1);
        conv_try(r, s, &srv, &co, &rec_handler, &v2);
    } else {
        conv_try(r, s, &srv, &co, &rec_handler, &v1);
        v2.cli.on_verify = v_refuse_pin;
        v2.cs.pin = leaf;
        conv_try(r, s, &srv, &co, &rec_verify_handler, &v2);
    }
    printf("  %s: first %s (reused %d), second %s (reused %d, ssl_verify_peer calls %d) \"%s\"\n",
           permissive_first ? "permissive handler, then none (self-signed server)"
                            : "no handler, then a pin refusing the leaf",
           reason_name(v1.cli.reason), v1.cs.reused, reason_name(v2.cli.reason), v2.cs.reused,
           v2.cli.verifies, v2.cli.tls_error);
    fflush(stdout);
    ASSERT_EQ(v1.cli.reason, 0);
    ASSERT_EQ(v1.cli.handshakes, 1);
    em_stop_server(s);
    int reason2 = v2.cli.reason, hs2 = v2.cli.handshakes;
    bool reused2 = v2.cs.reused;
    REACTOR_FREE_CHECKED(r);
    rec_free(&v1.cli);
    side_free(&v1.cs);
    rec_free(&v2.cli);
    side_free(&v2.cs);
    rec_free(&srv);
    side_free(&ss);
    free(leaf);
    if (reason2 != EM_ETLS)
        FAIL("the second connection was accepted (reason %d, handshakes %d, session reused %d) "
             "although its verification refuses this server",
             reason2, hs2, reused2);
}

TEST(tls_verify_resumption_keeps_pinning) { resumption_policy(false); }

TEST(tls_verify_resumption_keeps_default_verification) { resumption_policy(true); }

/* The same on the server side. Servers with equal options share one
 * context, hence one ticket key: a ticket issued by server A, whose
 * handler accepted a client certificate from an untrusted CA, resumes on
 * server B, whose handler follows OpenSSL's verdict and would refuse that
 * certificate. (B takes A's port after A stopped, so that a libem client,
 * which offers a session only to the address that issued it, offers it;
 * any other TLS client could offer it to B on any port.) */
TEST(tls_verify_resumption_keeps_server_policy)
{
    em_reactor *r = new_reactor();
    em_tls_opts so = tls_server_opts("server.pem", NULL);
    so.verify_peer = true;
    so.fail_if_no_peer_cert = true;
    so.ca_file = tls_file("ca.pem");
    em_tls_opts co = tls_client_opts();
    co.cert_chain_file = tls_file("client-other.pem");
    co.private_key_file = tls_file("client.key");
    side sa = {0}, sb = {0};
    rec a = {.tls = &so, .store = true, .ctx = &sa, .on_handshake = srv_handshake,
             .on_verify = v_accept_all};
    rec b = {.tls = &so, .store = true, .ctx = &sb, .on_handshake = srv_handshake,
             .on_verify = v_preverify};
    rec_pool_new(&a, 1);
    rec_pool_new(&b, 1);
    em_server *sa_srv = em_start_server(r, "127.0.0.1", 0, &rec_verify_handler, &a);
    ASSERT_NOT_NULL(sa_srv);
    int port = em_server_port(sa_srv);
    conv v1 = {0}, v2 = {0};
    conv_try(r, sa_srv, &a, &co, &rec_handler, &v1);
    ASSERT_EQ(v1.cli.reason, 0);
    ASSERT_EQ(a.pool[0].reason, 0);
    ASSERT_EQ(sa.nv, 1); /* A's handler saw the client's certificate (its CA is */
    ASSERT(!sa.vpre[0]); /* unknown: a chain of one), refused by OpenSSL */
    em_stop_server(sa_srv);
    em_server *sb_srv = em_start_server(r, "127.0.0.1", port, &rec_verify_handler, &b);
    ASSERT_NOT_NULL(sb_srv);
    conv_try(r, sb_srv, &b, &co, &rec_handler, &v2);
    rec *bs = &b.pool[0];
    printf("  server B: %s (client reused %d, B's ssl_verify_peer calls %d) \"%s\"\n",
           reason_name(bs->reason), v2.cs.reused, sb.nv, bs->tls_error);
    fflush(stdout);
    int reason = bs->reason, calls = sb.nv;
    bool reused = v2.cs.reused;
    em_stop_server(sb_srv);
    REACTOR_FREE_CHECKED(r);
    rec_free(&v1.cli);
    side_free(&v1.cs);
    rec_free(&v2.cli);
    side_free(&v2.cs);
    rec_free(&a);
    rec_free(&b);
    side_free(&sa);
    side_free(&sb);
    if (reason != EM_ETLS)
        FAIL("server B accepted a client certificate its verification refuses (reason %d, "
             "session reused %d, B's ssl_verify_peer calls %d)",
             reason, reused, calls);
}
