/* The contract between the TLS files: tls.c (the connection layer and the
 * public calls), tls-ctx.c (configurations and their cache) and
 * tls-verify.c (certificate verification). Built only with OpenSSL. */
#ifndef EM_TLS_INTERNAL_H
#define EM_TLS_INTERNAL_H

#include "em-internal.h"

#include <openssl/ssl.h>

/* The most plaintext one record carries; also what one SSL_write is given,
 * so that a retry can always offer at least as much (see tls.c). */
#define EM_TLS_RECORD 16384

typedef struct em_tls_ctx em_tls_ctx;

/* A connection's TLS state: its layer. */
typedef struct em_tls {
    em_layer layer;
    SSL *ssl;        /* NULL: em_start_tls was refused; only error is kept */
    em_tls_ctx *ctx; /* shared, counted */
    char *error;     /* why TLS failed: em_tls_error_string */
    char *alpn;      /* the protocol agreed on, NUL-terminated */
    char *host;      /* client: the name or address checked */
    em_timer_id handshake_timer;
    double started;      /* em_start_tls: the handshake's time counts from it */
    size_t plain_left;   /* bytes queued before em_start_tls: sent as they are */
    uint64_t bad_depths; /* verification: the depths OpenSSL found fault with */
    int verify_err;      /* the first of those faults, and its depth */
    int verify_depth;
    int sys_err;         /* errno of the socket call that failed */
    bool server;
    bool insecure;
    bool handshake_done;
    bool session_set;    /* client: a stored session was offered (or none) */
    bool close_notify_sent;
    bool peer_eof;       /* the socket read returned 0 */
    bool read_wants_write;
    bool write_wants_read;
    bool kick_queued;    /* a tick will deliver what OpenSSL holds */
    bool reading;        /* inside tls_read */
    bool in_verify;      /* inside ssl_verify_peer: preverify is valid */
    bool preverify;
    bool rejected;       /* ssl_verify_peer said no */
    /* a session could skip what decided this connection's peer (the
     * handler, or a fault let through): none is kept, used or issued */
    bool no_resume;
} em_tls;

/* Reactor-wide: the configurations in use or kept, and where small
 * queued chunks are gathered into one record. */
struct em_tls_shared {
    em_tls_ctx *ctxs;
    unsigned idle; /* contexts no connection uses */
    EVP_MD *sha256;
    char staging[EM_TLS_RECORD];
};

static inline em_tls *em__tls(const em_conn *c)
{
    return c->cold ? (em_tls *)c->cold->layer : NULL;
}

/* tls.c */
em_conn *em__tls_conn_of(SSL *ssl);
/* A client's key for the sessions of its server: the name checked and the
 * peer's address; 0 when it cannot be made. */
size_t em__tls_session_key(em_conn *c, char *buf, size_t cap);
void em__tls_set_error(em_tls *t, const char *what);

/* tls-ctx.c: the context for these options, shared by every connection
 * that gives equal ones. 0, or -EINVAL / -EM_ETLS / -ENOMEM with *why set
 * to a new string (may stay NULL on -ENOMEM). */
int em__tls_ctx_get(em_reactor *r, const em_tls_opts *o, bool server, em_tls_ctx **out,
                    char **why);
void em__tls_ctx_put(em_reactor *r, em_tls_ctx *x);
SSL_CTX *em__tls_ctx_ssl(const em_tls_ctx *x);
/* Client sessions for resumption, by server (host and address). */
void em__tls_session_offer(em_tls_ctx *x, SSL *ssl, const char *key, size_t key_len);
void em__tls_ctxs_free(em_reactor *r);

/* tls-verify.c: OpenSSL's whole-chain verification callback; a
 * certificate as PEM (malloc'd; NULL for NULL or no memory). */
int em__tls_verify_chain(X509_STORE_CTX *store, void *arg);
char *em__tls_cert_pem(X509 *cert);

#endif /* EM_TLS_INTERNAL_H */
