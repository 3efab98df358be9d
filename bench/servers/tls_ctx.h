/*
 * The server context of the OpenSSL-based TLS echo servers (echo_tls_openssl,
 * echo_tls_libevent): one SSL_CTX for the process, OpenSSL's defaults but
 * for the certificate chain and key, so that the two differ only by what
 * they do around OpenSSL. The load generator picks the protocol, suite and
 * group (TLS 1.3, AES-128-GCM, X25519) by offering nothing else.
 */
#ifndef BENCH_TLS_CTX_H
#define BENCH_TLS_CTX_H

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>

/* The context with cert (PEM chain, leaf first) and key; NULL after
 * printing why, prefixed with who. */
static SSL_CTX *bench_tls_ctx(const char *who, const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx && SSL_CTX_use_certificate_chain_file(ctx, cert) == 1 &&
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1 &&
        SSL_CTX_check_private_key(ctx) == 1)
        return ctx;
    char err[256];
    ERR_error_string_n(ERR_get_error(), err, sizeof err);
    fprintf(stderr, "%s: certificate %s, key %s: %s\n", who, cert, key, err);
    SSL_CTX_free(ctx);
    return NULL;
}

#endif
