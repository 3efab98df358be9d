/* TLS configurations: em_tls_opts made into an SSL_CTX, and the reactor's
 * cache of them. Connections with equal options share one context, counted;
 * a context no connection uses is kept (a few), so that a server's ticket
 * keys and a client's sessions outlive the connections that made them. The
 * cache is keyed by a SHA-256 of the options (so no passphrase or key text
 * stays in memory) and of the identity and mtime of every file named, so
 * that a certificate renewed on disk is loaded by the next connection. */
#ifdef EM_HAVE_OPENSSL
#include "tls-internal.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define IDLE_CTXS_KEPT 8
#define SESSIONS_KEPT 64
#define MODERN_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL"

typedef struct em_tls_session {
    unsigned char *key;
    size_t key_len;
    SSL_SESSION *session;
} em_tls_session;

struct em_tls_ctx {
    em_tls_ctx *next;
    SSL_CTX *ssl_ctx;
    unsigned char digest[32];
    unsigned refs;
    unsigned char *alpn; /* server: what it accepts, in wire format */
    size_t alpn_len;
    em_tls_session sessions[SESSIONS_KEPT];
    unsigned session_count, session_next;
};

SSL_CTX *em__tls_ctx_ssl(const em_tls_ctx *x) { return x->ssl_ctx; }

/* ------------------------------------------------------------ cache key */

static void digest_str(EVP_MD_CTX *md, const char *s)
{
    unsigned char present = s != NULL;
    EVP_DigestUpdate(md, &present, 1);
    if (s)
        EVP_DigestUpdate(md, s, strlen(s) + 1);
}

static void digest_file(EVP_MD_CTX *md, const char *path)
{
    struct stat st;
    digest_str(md, path);
    if (!path)
        return;
    if (stat(path, &st) < 0)
        memset(&st, 0, sizeof st);
    long stamp[] = {(long)st.st_dev, (long)st.st_ino, (long)st.st_size, (long)st.st_mtim.tv_sec,
                    st.st_mtim.tv_nsec};
    EVP_DigestUpdate(md, stamp, sizeof stamp);
}

static int options_digest(em_reactor *r, const em_tls_opts *o, bool server, unsigned char *out)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || !EVP_DigestInit_ex(md, r->tls->sha256, NULL)) {
        EVP_MD_CTX_free(md);
        return -ENOMEM;
    }
    int ints[] = {server, o->verify_peer, o->fail_if_no_peer_cert, o->insecure, o->min_version,
                  o->max_version};
    EVP_DigestUpdate(md, ints, sizeof ints);
    digest_file(md, o->cert_chain_file);
    digest_file(md, o->private_key_file);
    digest_file(md, o->ca_file);
    digest_file(md, o->dhparam_file);
    const char *strs[] = {o->cert_chain_pem, o->private_key_pem, o->private_key_pass,
                          o->cipher_list,    o->ciphersuites,    o->alpn,
                          o->ecdh_curve};
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
        digest_str(md, strs[i]);
    /* sni_hostname is per connection (SSL_set1_host), not in the context */
    int ok = EVP_DigestFinal_ex(md, out, NULL);
    EVP_MD_CTX_free(md);
    return ok ? 0 : -ENOMEM;
}

/* -------------------------------------------------------------- errors */

/* *why = "what: OpenSSL's reason"; the error queue is emptied. */
static int failed(char **why, int err, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    size_t n = strlen(what) + (reason ? strlen(reason) : 0) + 3;
    if ((*why = em__malloc(n)))
        snprintf(*why, n, reason ? "%s: %s" : "%s", what, reason);
    ERR_clear_error();
    return err;
}

/* ------------------------------------------------- protocol parameters */

static int tls_version(int v, int fallback)
{
    if (v == 0)
        return fallback;
    return v == EM_TLS_1_2 ? TLS1_2_VERSION : v == EM_TLS_1_3 ? TLS1_3_VERSION : -1;
}

static int set_versions(SSL_CTX *ctx, const em_tls_opts *o, char **why)
{
    int min = tls_version(o->min_version, TLS1_2_VERSION);
    int max = tls_version(o->max_version, TLS1_3_VERSION);
    if (min < 0 || max < 0 || max < min)
        return failed(why, -EINVAL, "unsupported TLS version range (TLS 1.2 and 1.3 only)");
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_max_proto_version(ctx, max);
    return 0;
}

static int set_ciphers(SSL_CTX *ctx, const em_tls_opts *o, char **why)
{
    if (!SSL_CTX_set_cipher_list(ctx, o->cipher_list ? o->cipher_list : MODERN_CIPHERS))
        return failed(why, -EINVAL, "no known cipher in cipher_list");
    if (o->ciphersuites && !SSL_CTX_set_ciphersuites(ctx, o->ciphersuites))
        return failed(why, -EINVAL, "unknown TLS 1.3 suite in ciphersuites");
    if (o->ecdh_curve && !SSL_CTX_set1_groups_list(ctx, o->ecdh_curve))
        return failed(why, -EINVAL, "unknown group in ecdh_curve");
    return 0;
}

/* "h2,http/1.1" -> "\x02h2\x08http/1.1"; -EINVAL for an empty or
 * over-long name. */
static int alpn_wire(const char *list, unsigned char **out, size_t *out_len)
{
    size_t n = strlen(list);
    unsigned char *w = em__malloc(n + 1);
    if (!w)
        return -ENOMEM;
    size_t len = 0;
    for (const char *p = list;; p++) {
        const char *end = strchr(p, ',');
        size_t k = end ? (size_t)(end - p) : strlen(p);
        if (k == 0 || k > 255) {
            em__free(w);
            return -EINVAL;
        }
        w[len++] = (unsigned char)k;
        memcpy(w + len, p, k);
        len += k;
        if (!end)
            break;
        p = end;
    }
    *out = w;
    *out_len = len;
    return 0;
}

/* RFC 7301: a client that offers only protocols the server does not
 * speak gets no_application_protocol, not a connection without one. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                       const unsigned char *offered, unsigned offered_len, void *arg)
{
    EM_UNUSED(ssl);
    em_tls_ctx *x = arg;
    unsigned char *chosen;
    if (SSL_select_next_proto(&chosen, out_len, x->alpn, (unsigned)x->alpn_len, offered,
                              offered_len) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

static int set_alpn(em_tls_ctx *x, const em_tls_opts *o, bool server, char **why)
{
    if (!o->alpn)
        return 0;
    int err = alpn_wire(o->alpn, &x->alpn, &x->alpn_len);
    if (err)
        return failed(why, err, "bad alpn list");
    if (server)
        SSL_CTX_set_alpn_select_cb(x->ssl_ctx, alpn_select, x);
    else if (SSL_CTX_set_alpn_protos(x->ssl_ctx, x->alpn, (unsigned)x->alpn_len) != 0)
        return failed(why, -ENOMEM, "alpn");
    return 0;
}

/* ------------------------------------------------------ keys and certs */

/* Never OpenSSL's default, which would prompt on the terminal. */
static int passphrase(char *buf, int size, int rwflag, void *arg)
{
    EM_UNUSED(rwflag);
    const char *pass = arg;
    if (!pass)
        return -1;
    size_t n = strlen(pass);
    if (n > (size_t)size)
        return -1;
    memcpy(buf, pass, n);
    return (int)n;
}

static int use_chain_pem(SSL_CTX *ctx, const char *pem, const char *pass)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *leaf = b ? PEM_read_bio_X509_AUX(b, NULL, passphrase, (void *)pass) : NULL;
    int ok = leaf && SSL_CTX_use_certificate(ctx, leaf);
    X509_free(leaf);
    X509 *ca;
    while (ok && (ca = PEM_read_bio_X509(b, NULL, passphrase, (void *)pass)))
        if (!SSL_CTX_add0_chain_cert(ctx, ca)) {
            X509_free(ca);
            ok = 0;
        }
    BIO_free(b);
    if (ok) /* the end of the PEM text is reported as an error */
        ERR_clear_error();
    return ok;
}

static int use_key_pem(SSL_CTX *ctx, const char *pem, const char *pass)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, passphrase, (void *)pass) : NULL;
    int ok = key && SSL_CTX_use_PrivateKey(ctx, key);
    EVP_PKEY_free(key);
    BIO_free(b);
    return ok;
}

static int load_identity(SSL_CTX *ctx, const em_tls_opts *o, bool server, char **why)
{
    bool cert = o->cert_chain_file || o->cert_chain_pem;
    bool key = o->private_key_file || o->private_key_pem;
    if ((o->cert_chain_file && o->cert_chain_pem) || (o->private_key_file && o->private_key_pem))
        return failed(why, -EINVAL, "give the certificate and the key from a file or from memory, not both");
    if (cert != key)
        return failed(why, -EINVAL, "a certificate needs its private key, and a key its certificate");
    if (!cert)
        return server ? failed(why, -EINVAL, "a TLS server needs a certificate and its key") : 0;
    SSL_CTX_set_default_passwd_cb_userdata(ctx, (void *)o->private_key_pass);
    int ok = o->cert_chain_file ? SSL_CTX_use_certificate_chain_file(ctx, o->cert_chain_file)
                                : use_chain_pem(ctx, o->cert_chain_pem, o->private_key_pass);
    if (ok)
        ok = o->private_key_file
                 ? SSL_CTX_use_PrivateKey_file(ctx, o->private_key_file, SSL_FILETYPE_PEM)
                 : use_key_pem(ctx, o->private_key_pem, o->private_key_pass);
    else
        ok = -1;
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL); /* the caller's string */
    if (ok < 0)
        return failed(why, -EM_ETLS, "cannot load the certificate chain");
    unsigned long e = ERR_peek_last_error();
    if (!ok && ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
        return failed(why, -EM_ETLS, "the private key does not match the certificate");
    if (!ok)
        return failed(why, -EM_ETLS, "cannot load the private key (missing, bad PEM or wrong passphrase)");
    if (!SSL_CTX_check_private_key(ctx))
        return failed(why, -EM_ETLS, "the private key does not match the certificate");
    return 0;
}

static int load_dhparam(SSL_CTX *ctx, const char *path, char **why)
{
    if (!path) {
        SSL_CTX_set_dh_auto(ctx, 1);
        return 0;
    }
    /* PEM_read_bio_Parameters takes no passphrase callback: an encrypted
     * block would make OpenSSL prompt on the terminal. */
    BIO *b = BIO_new_file(path, "r");
    unsigned char *der = NULL;
    long len = 0;
    char *name = NULL, *header = NULL;
    EVP_PKEY *dh = NULL;
    if (b && PEM_read_bio(b, &name, &header, &der, &len) && !strstr(header, "ENCRYPTED")) {
        const unsigned char *p = der;
        int type = strcmp(name, PEM_STRING_DHXPARAMS) == 0 ? EVP_PKEY_DHX : EVP_PKEY_DH;
        dh = d2i_KeyParams(type, NULL, &p, len);
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    BIO_free(b);
    if (!dh || !SSL_CTX_set0_tmp_dh_pkey(ctx, dh)) {
        EVP_PKEY_free(dh);
        return failed(why, -EM_ETLS, "cannot load the DH parameters");
    }
    return 0;
}

/* ------------------------------------------------------- verification */

/* The system's trust anchors: its bundle file and its hashed directory,
 * not SSL_CTX_set_default_verify_paths, whose OpenSSL 3 store lookup reads
 * the whole directory again on every verification. */
static void load_system_store(SSL_CTX *ctx)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    const char *file = getenv(X509_get_default_cert_file_env());
    const char *dir = getenv(X509_get_default_cert_dir_env());
    X509_LOOKUP *by_file = X509_STORE_add_lookup(store, X509_LOOKUP_file());
    X509_LOOKUP *by_dir = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir());
    if (by_file)
        X509_LOOKUP_load_file(by_file, file ? file : X509_get_default_cert_file(), X509_FILETYPE_PEM);
    if (by_dir)
        X509_LOOKUP_add_dir(by_dir, dir ? dir : X509_get_default_cert_dir(), X509_FILETYPE_PEM);
    ERR_clear_error(); /* a system without a bundle or directory trusts nothing */
}

/* The names a server sends in its certificate request: the subjects of
 * the anchors ca_file loaded (read from the store, not by parsing the file
 * again with a call that could prompt for a passphrase). */
static void name_client_cas(SSL_CTX *ctx)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    for (int i = 0; names && i < sk_X509_OBJECT_num(objs); i++) {
        X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        X509_NAME *name = ca ? X509_NAME_dup(X509_get_subject_name(ca)) : NULL;
        if (name && !sk_X509_NAME_push(names, name))
            X509_NAME_free(name);
    }
    if (names)
        SSL_CTX_set_client_CA_list(ctx, names);
    ERR_clear_error();
}

/* A client always verifies (insecure only lets it accept anyway), a server
 * only with verify_peer: a server that verifies nothing loads no anchors. */
static int set_verify(SSL_CTX *ctx, const em_tls_opts *o, bool server, char **why)
{
    bool verifies = !server || o->verify_peer;
    if (verifies && o->ca_file && !SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL))
        return failed(why, -EM_ETLS, "cannot load the CA file");
    if (verifies && !o->ca_file)
        load_system_store(ctx);
    int mode = SSL_VERIFY_NONE;
    if (!server) {
        mode = SSL_VERIFY_PEER; /* insecure too: ssl_verify_peer still sees the chain */
    } else if (o->verify_peer) {
        mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE |
               (o->fail_if_no_peer_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
        if (o->ca_file)
            name_client_cas(ctx);
    }
    SSL_CTX_set_verify(ctx, mode, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, em__tls_verify_chain, NULL);
    return 0;
}

/* ----------------------------------------------------------- sessions */

static void session_drop(em_tls_session *s)
{
    em__free(s->key);
    SSL_SESSION_free(s->session);
    *s = (em_tls_session){0};
}

static em_tls_session *session_find(em_tls_ctx *x, const char *key, size_t len)
{
    for (unsigned i = 0; i < x->session_count; i++)
        if (x->sessions[i].key_len == len && !memcmp(x->sessions[i].key, key, len))
            return &x->sessions[i];
    return NULL;
}

void em__tls_session_offer(em_tls_ctx *x, SSL *ssl, const char *key, size_t key_len)
{
    em_tls_session *s = session_find(x, key, key_len);
    if (s && SSL_SESSION_is_resumable(s->session))
        SSL_set_session(ssl, s->session);
}

/* The slot for a server's session: its own, else a new one (the oldest
 * slot is reused once all are taken); NULL when out of memory. */
static em_tls_session *session_slot(em_tls_ctx *x, const char *key, size_t len)
{
    em_tls_session *s = session_find(x, key, len);
    if (s)
        return s;
    unsigned i = x->session_count < SESSIONS_KEPT ? x->session_count++
                                                  : x->session_next++ % SESSIONS_KEPT;
    s = &x->sessions[i];
    session_drop(s);
    if (!(s->key = em__malloc(len)))
        return NULL;
    memcpy(s->key, key, len);
    s->key_len = len;
    return s;
}

/* A client's new session (a TLS 1.3 ticket): kept for the next connection
 * to the same server, replacing the one before. */
static int session_new(SSL *ssl, SSL_SESSION *session)
{
    em_conn *c = em__tls_conn_of(ssl);
    em_tls *t = em__tls(c);
    char key[512];
    size_t len = t->no_resume ? 0 : em__tls_session_key(c, key, sizeof key);
    em_tls_session *s = len ? session_slot(t->ctx, key, len) : NULL;
    if (!s)
        return 0;
    SSL_SESSION_free(s->session);
    s->session = session;
    return 1; /* the reference is ours */
}

/* A server connection whose client certificate is decided by
 * ssl_verify_peer never resumes: a session would skip the handler. */
static SSL_TICKET_RETURN ticket_decrypted(SSL *ssl, SSL_SESSION *session,
                                          const unsigned char *key_name, size_t key_name_len,
                                          SSL_TICKET_STATUS status, void *arg)
{
    EM_UNUSED(session);
    EM_UNUSED(key_name);
    EM_UNUSED(key_name_len);
    EM_UNUSED(arg);
    bool refuse = em__tls(em__tls_conn_of(ssl))->no_resume;
    switch (status) {
    case SSL_TICKET_SUCCESS:
        return refuse ? SSL_TICKET_RETURN_IGNORE : SSL_TICKET_RETURN_USE;
    case SSL_TICKET_SUCCESS_RENEW:
        return refuse ? SSL_TICKET_RETURN_IGNORE : SSL_TICKET_RETURN_USE_RENEW;
    case SSL_TICKET_FATAL_ERR_MALLOC:
    case SSL_TICKET_FATAL_ERR_OTHER:
        return SSL_TICKET_RETURN_ABORT;
    default: /* none, empty, or not ours */
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    }
}

/* ------------------------------------------------------------ building */

static int configure(em_tls_ctx *x, const em_tls_opts *o, bool server, char **why)
{
    SSL_CTX *ctx = x->ssl_ctx;
    SSL_CTX_set_default_passwd_cb(ctx, passphrase); /* before any PEM is read */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* An idle connection holds no record buffers; a write may be retried
     * from where the bytes have moved to (a borrowed buffer copied); the
     * chain sent is the one given, not one built from the trust store on
     * every handshake. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_NO_AUTO_CHAIN);
    SSL_CTX_set_read_ahead(ctx, 1);
    int err = set_versions(ctx, o, why);
    if (!err)
        err = set_ciphers(ctx, o, why);
    if (!err)
        err = set_alpn(x, o, server, why);
    if (!err)
        err = set_verify(ctx, o, server, why);
    if (!err)
        err = load_identity(ctx, o, server, why);
    if (!err && server)
        err = load_dhparam(ctx, o->dhparam_file, why);
    if (err)
        return err;
    if (server) {
        static const unsigned char sid[] = "libem";
        SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
        /* resumption by ticket only, each one passed by ticket_decrypted */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_session_ticket_cb(ctx, NULL, ticket_decrypted, NULL);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, session_new);
    }
    return 0;
}

static void ctx_free(em_tls_ctx *x)
{
    for (unsigned i = 0; i < x->session_count; i++)
        session_drop(&x->sessions[i]);
    SSL_CTX_free(x->ssl_ctx);
    em__free(x->alpn);
    em__free(x);
}

static em_tls_ctx *ctx_build(const em_tls_opts *o, bool server, int *err, char **why)
{
    em_tls_ctx *x = em__calloc(1, sizeof *x);
    if (!x || !(x->ssl_ctx = SSL_CTX_new(TLS_method()))) {
        em__free(x);
        *err = failed(why, -ENOMEM, "cannot make an SSL_CTX");
        return NULL;
    }
    *err = configure(x, o, server, why);
    if (*err) {
        ctx_free(x);
        return NULL;
    }
    return x;
}

static int shared_init(em_reactor *r)
{
    if (r->tls)
        return 0;
    if (!(r->tls = em__calloc(1, sizeof *r->tls)))
        return -ENOMEM;
    if (!(r->tls->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL))) {
        em__free(r->tls);
        r->tls = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* Keeps at most IDLE_CTXS_KEPT contexts no connection uses: the oldest go. */
static void trim_idle(em_reactor *r)
{
    em_tls_ctx **p = &r->tls->ctxs, *last_idle = NULL, **last_link = NULL;
    while (r->tls->idle > IDLE_CTXS_KEPT) {
        for (p = &r->tls->ctxs; *p; p = &(*p)->next)
            if (!(*p)->refs) {
                last_idle = *p;
                last_link = p;
            }
        *last_link = last_idle->next;
        ctx_free(last_idle);
        r->tls->idle--;
    }
}

int em__tls_ctx_get(em_reactor *r, const em_tls_opts *o, bool server, em_tls_ctx **out,
                    char **why)
{
    unsigned char digest[32];
    int err = shared_init(r);
    if (!err)
        err = options_digest(r, o, server, digest);
    if (err)
        return err;
    for (em_tls_ctx **p = &r->tls->ctxs; *p; p = &(*p)->next) {
        em_tls_ctx *x = *p;
        if (memcmp(x->digest, digest, sizeof digest))
            continue;
        if (!x->refs++)
            r->tls->idle--;
        *p = x->next; /* most recently used first */
        x->next = r->tls->ctxs;
        r->tls->ctxs = x;
        *out = x;
        return 0;
    }
    em_tls_ctx *x = ctx_build(o, server, &err, why);
    if (!x)
        return err;
    memcpy(x->digest, digest, sizeof digest);
    x->refs = 1;
    x->next = r->tls->ctxs;
    r->tls->ctxs = x;
    *out = x;
    return 0;
}

void em__tls_ctx_put(em_reactor *r, em_tls_ctx *x)
{
    if (--x->refs == 0) {
        r->tls->idle++;
        trim_idle(r);
    }
}

void em__tls_ctxs_free(em_reactor *r)
{
    if (!r->tls)
        return;
    while (r->tls->ctxs) {
        em_tls_ctx *x = r->tls->ctxs;
        r->tls->ctxs = x->next;
        ctx_free(x);
    }
    EVP_MD_free(r->tls->sha256);
    em__free(r->tls);
    r->tls = NULL;
}
#endif /* EM_HAVE_OPENSSL */
