/*
 * The certificate of a TLS server that was given none. Stock falls back to
 * a certificate and key compiled into it (so its private key is public);
 * programs and tests rely on that fallback, whose clients verify nothing.
 * Here the fallback is a P-256 key and a self-signed certificate made
 * once per process, in memory, on first need.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "rbem.h"

static char *cert_pem, *key_pem;

static char *bio_string(BIO *b)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = n > 0 ? ruby_xmalloc((size_t)n + 1) : NULL;
    if (s) {
        memcpy(s, data, (size_t)n);
        s[n] = '\0';
    }
    return s;
}

static X509 *self_signed(EVP_PKEY *key)
{
    X509 *x = X509_new();
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    bool ok = x && RAND_bytes(serial, sizeof serial) == 1;
    serial[0] &= 0x7f; /* a positive serial */
    ok = ok && (bn = BN_bin2bn(serial, sizeof serial, NULL)) &&
         BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) && X509_set_version(x, 2) &&
         X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
         X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600) &&
         X509_set_pubkey(x, key) &&
         X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                    (const unsigned char *)"EventMachine on libem", -1, -1, 0) &&
         X509_set_issuer_name(x, X509_get_subject_name(x)) && X509_sign(x, key, EVP_sha256());
    BN_free(bn);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static bool make_default(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = key ? self_signed(key) : NULL;
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    bool ok = x && cb && kb && PEM_write_bio_X509(cb, x) &&
              PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL);
    if (ok) {
        cert_pem = bio_string(cb);
        key_pem = bio_string(kb);
    }
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    EVP_PKEY_free(key);
    return cert_pem && key_pem;
}

bool rbem_default_cert(const char **cert, const char **key)
{
    if (!cert_pem && !make_default())
        return false;
    *cert = cert_pem;
    *key = key_pem;
    return true;
}
