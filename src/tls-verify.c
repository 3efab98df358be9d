/* Certificate verification. OpenSSL's per-certificate callback runs once
 * per fault and in no order a user could rely on (a host-name mismatch is
 * reported before the walk from the root), so libem takes over the whole
 * chain: it lets OpenSSL verify it while only recording which depths were
 * at fault, then shows each certificate once, root first, to the handler's
 * ssl_verify_peer with that verdict (em_tls_preverify_ok). Without the
 * handler the verdict stands, unless the client is insecure. */
#ifdef EM_HAVE_OPENSSL
#include "tls-internal.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static em_tls *tls_of_store(X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    return em__tls(em__tls_conn_of(ssl));
}

static int record_fault(int ok, X509_STORE_CTX *store)
{
    if (!ok) {
        em_tls *t = tls_of_store(store);
        int depth = X509_STORE_CTX_get_error_depth(store);
        t->bad_depths |= 1ull << (depth < 63 ? depth : 63);
        if (!t->verify_err) {
            t->verify_err = X509_STORE_CTX_get_error(store);
            t->verify_depth = depth;
        }
    }
    return 1; /* go on: every fault is recorded, the decision comes after */
}

/* With malloc, not libem's allocator: em_get_peer_cert's caller frees it. */
char *em__tls_cert_pem(X509 *cert)
{
    BIO *b = cert ? BIO_new(BIO_s_mem()) : NULL;
    char *pem = NULL, *data;
    if (b && PEM_write_bio_X509(b, cert)) {
        long n = BIO_get_mem_data(b, &data);
        if (n > 0 && (pem = malloc((size_t)n + 1))) {
            memcpy(pem, data, (size_t)n);
            pem[n] = '\0';
        }
    }
    BIO_free(b);
    return pem;
}

/* Each certificate, root first, to ssl_verify_peer; true if all pass. */
static bool ask_handler(em_conn *c, em_tls *t, STACK_OF(X509) *chain)
{
    for (int depth = sk_X509_num(chain) - 1; depth >= 0; depth--) {
        char *pem = em__tls_cert_pem(sk_X509_value(chain, depth));
        if (!pem)
            return false;
        t->in_verify = true;
        t->preverify = !(t->bad_depths & (1ull << (depth < 63 ? depth : 63)));
        bool ok = c->h->ssl_verify_peer(c, pem);
        t->in_verify = false;
        free(pem);
        if (!ok || c->state != EM_CS_OPEN) {
            t->rejected = true;
            return false;
        }
    }
    return true;
}

static void describe_fault(em_tls *t)
{
    char text[256];
    if (t->rejected)
        snprintf(text, sizeof text, "certificate rejected by ssl_verify_peer");
    else
        snprintf(text, sizeof text, "certificate verify failed at depth %d: %s", t->verify_depth,
                 X509_verify_cert_error_string(t->verify_err));
    em__tls_set_error(t, text);
}

int em__tls_verify_chain(X509_STORE_CTX *store, void *arg)
{
    EM_UNUSED(arg);
    em_tls *t = tls_of_store(store);
    em_conn *c = em__tls_conn_of(
        X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    t->bad_depths = 0;
    t->verify_err = 0;
    X509_STORE_CTX_set_verify_cb(store, record_fault);
    if (X509_verify_cert(store) < 0) {
        em__tls_set_error(t, "certificate verification could not run");
        return 0;
    }
    bool accepted;
    if (c->h->ssl_verify_peer)
        accepted = ask_handler(c, t, X509_STORE_CTX_get0_chain(store));
    else
        accepted = !t->bad_depths || (t->insecure && !t->server);
    if (accepted) {
        t->no_resume |= t->bad_depths != 0; /* a fault let through is not kept */
        X509_STORE_CTX_set_error(store, X509_V_OK);
        return 1;
    }
    if (!t->verify_err)
        t->verify_err = X509_V_ERR_APPLICATION_VERIFICATION;
    X509_STORE_CTX_set_error(store, t->verify_err);
    describe_fault(t);
    return 0;
}
#endif /* EM_HAVE_OPENSSL */
