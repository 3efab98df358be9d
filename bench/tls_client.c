/*
 * loadgen's TLS client (tls_client.h). A tlsc is an OpenSSL SSL; nothing
 * else is allocated per connection.
 */
#include "tls_client.h"

#include <errno.h>
#include <stdio.h>

#ifdef BENCH_HAVE_OPENSSL
#include <openssl/err.h>
#include <openssl/ssl.h>

static SSL_CTX *ctx;
static char last_error[256] = "no error";

/* Keeps the text of OpenSSL's first queued error and empties the queue: a
 * stale entry would make SSL_get_error misreport the next call's outcome,
 * and connect mode goes on after a failed connection. */
static void take_error(void)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, last_error, sizeof last_error);
    else
        snprintf(last_error, sizeof last_error, "TLS error (no detail from OpenSSL)");
    ERR_clear_error();
}

/* A new TLS 1.3 ticket of a connection with a slot replaces the slot's. */
static int keep_ticket(SSL *ssl, SSL_SESSION *sess)
{
    void **slot = SSL_get_app_data(ssl);
    if (!slot)
        return 0; /* not kept: OpenSSL frees it */
    if (*slot)
        SSL_SESSION_free(*slot);
    *slot = sess;
    return 1;
}

bool tlsc_init(bool resume, char *why, size_t whylen)
{
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") ||
        !SSL_CTX_set1_groups_list(ctx, "X25519")) {
        take_error();
        snprintf(why, whylen, "TLS client context: %s", last_error);
        return false;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* SSL_write then behaves as write(2) does for the stream mode's
     * bookkeeping: partial counts, retries from a moved pointer. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (resume) {
        /* Tickets go to the connections' slots, not to a cache. */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                                SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, keep_ticket);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    return true;
}

tlsc *tlsc_new(int fd, void **slot)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl || !SSL_set_fd(ssl, fd)) {
        take_error();
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    if (slot) {
        SSL_set_app_data(ssl, slot);
        if (*slot)
            SSL_set_session(ssl, *slot);
    }
    return (tlsc *)ssl;
}

int tlsc_handshake(tlsc *s)
{
    SSL *ssl = (SSL *)s;
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return TLSC_DONE;
    int saved = errno;
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return TLSC_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLSC_WANT_WRITE;
    case SSL_ERROR_SYSCALL: /* a refused connect, a reset */
        take_error();
        errno = saved ? saved : EPROTO;
        return TLSC_ERROR;
    default:
        take_error();
        errno = EPROTO;
        return TLSC_ERROR;
    }
}

/* The read(2)-style result of SSL_read or SSL_write's r. */
static ssize_t io_result(SSL *ssl, int r)
{
    if (r > 0)
        return r;
    int saved = errno;
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        take_error();
        errno = saved ? saved : EPROTO;
        return -1;
    default:
        take_error();
        errno = EPROTO;
        return -1;
    }
}

ssize_t tlsc_read(tlsc *s, void *buf, size_t len)
{
    return io_result((SSL *)s, SSL_read((SSL *)s, buf, len > 1 << 30 ? 1 << 30 : (int)len));
}

ssize_t tlsc_write(tlsc *s, const void *buf, size_t len)
{
    return io_result((SSL *)s, SSL_write((SSL *)s, buf, len > 1 << 30 ? 1 << 30 : (int)len));
}

bool tlsc_resumed(const tlsc *s)
{
    return SSL_session_reused((const SSL *)s) == 1;
}

void tlsc_free(tlsc *s, bool quietly)
{
    SSL *ssl = (SSL *)s;
    if (!ssl)
        return;
    if (!quietly && SSL_is_init_finished(ssl))
        SSL_shutdown(ssl);
    ERR_clear_error();
    SSL_free(ssl);
}

void tlsc_slot_clear(void **slot)
{
    if (*slot)
        SSL_SESSION_free(*slot);
    *slot = NULL;
}

const char *tlsc_error(void)
{
    return last_error;
}

#else /* no OpenSSL: --tls is refused at start, nothing else is reached */

bool tlsc_init(bool resume, char *why, size_t whylen)
{
    (void)resume;
    snprintf(why, whylen, "loadgen was built without OpenSSL: no --tls");
    return false;
}

tlsc *tlsc_new(int fd, void **slot)
{
    (void)fd;
    (void)slot;
    return NULL;
}

int tlsc_handshake(tlsc *s)
{
    (void)s;
    errno = EPROTO;
    return TLSC_ERROR;
}

ssize_t tlsc_read(tlsc *s, void *buf, size_t len)
{
    (void)s, (void)buf, (void)len;
    errno = EPROTO;
    return -1;
}

ssize_t tlsc_write(tlsc *s, const void *buf, size_t len)
{
    (void)s, (void)buf, (void)len;
    errno = EPROTO;
    return -1;
}

bool tlsc_resumed(const tlsc *s)
{
    (void)s;
    return false;
}

void tlsc_free(tlsc *s, bool quietly)
{
    (void)s;
    (void)quietly;
}

void tlsc_slot_clear(void **slot)
{
    *slot = NULL;
}

const char *tlsc_error(void)
{
    return "no OpenSSL";
}

#endif
