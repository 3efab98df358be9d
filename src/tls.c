/* TLS as a layer between a stream connection and its socket (see "The TLS
 * layer" in docs/design.md). OpenSSL reads and writes the socket itself
 * through a BIO of libem's (send with MSG_NOSIGNAL, and a record of why a
 * call failed); decrypted bytes go through the reactor's read buffer to
 * receive_data like any read, and the connection's queue of plaintext is
 * written with SSL_write, a record at a time. */
#ifdef EM_HAVE_OPENSSL
#include "tls-internal.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const em_layer_ops tls_ops;
static void kick_if_holding(em_conn *c, em_tls *t);

em_conn *em__tls_conn_of(SSL *ssl) { return SSL_get_app_data(ssl); }

void em__tls_set_error(em_tls *t, const char *what)
{
    em__free(t->error);
    t->error = em__strdup(what);
}

/* ------------------------------------------------------------------ BIO */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int bio_result(BIO *b, em_conn *c, ssize_t n, bool reading)
{
    if (n > 0) {
        c->last_activity = c->r->now;
        return (int)n;
    }
    em_tls *t = em__tls(c);
    if (n == 0) {
        t->peer_eof = true;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (reading)
            BIO_set_retry_read(b);
        else
            BIO_set_retry_write(b);
    } else {
        t->sys_err = errno;
    }
    return -1;
}

static int bio_read(BIO *b, char *buf, int len)
{
    em_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    if (em__stash_has(c)) /* read ahead before TLS started */
        return bio_result(b, c, em__stash_read(c, buf, (size_t)len), true);
    do
        n = read(c->io.fd, buf, (size_t)len);
    while (n < 0 && errno == EINTR);
    return bio_result(b, c, n, true);
}

static int bio_write(BIO *b, const char *buf, int len)
{
    em_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    do
        n = send(c->io.fd, buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n == 0) /* never an end of file when writing */
        n = -1, errno = EAGAIN;
    return bio_result(b, c, n, false);
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    EM_UNUSED(num);
    EM_UNUSED(ptr);
    if (cmd == BIO_CTRL_FLUSH)
        return 1;
    if (cmd == BIO_CTRL_EOF)
        return em__tls(BIO_get_data(b))->peer_eof;
    return 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_method_make(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "libem socket");
    if (m && BIO_meth_set_read(m, bio_read) && BIO_meth_set_write(m, bio_write) &&
        BIO_meth_set_ctrl(m, bio_ctrl) && BIO_meth_set_create(m, bio_create))
        bio_method = m;
    else
        BIO_meth_free(m);
}

/* ------------------------------------------------------------- failing */

static void describe_ssl_failure(em_tls *t, const char *stage)
{
    char text[320], reason[256] = "";
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    else if (t->sys_err)
        snprintf(reason, sizeof reason, "%s", strerror(t->sys_err));
    snprintf(text, sizeof text, "%s%s%s", stage, *reason ? ": " : "", reason);
    em__tls_set_error(t, text);
}

/* A failed SSL call ends the connection: EM_ETLS during the handshake
 * (whatever the cause), EM_ETLS_TRUNCATED for a close without close_notify
 * after it, the socket's errno for a failed read or write. */
static void fail_tls(em_conn *c, em_tls *t)
{
    int reason = EM_ETLS;
    if (!t->handshake_done) {
        if (t->peer_eof && !t->error)
            em__tls_set_error(t, "peer closed the connection during the handshake");
        else if (!t->error)
            describe_ssl_failure(t, "handshake failed");
    } else if (t->peer_eof) {
        reason = EM_ETLS_TRUNCATED;
        em__tls_set_error(t, "peer closed the connection without close_notify");
    } else if (t->sys_err) { /* after a close_notify, OpenSSL says ZERO_RETURN */
        reason = t->sys_err;
    } else {
        describe_ssl_failure(t, "TLS error");
    }
    ERR_clear_error();
    em__conn_fail(c, reason);
}

static void wait_writable(em_conn *c)
{
    c->flags |= EM_CF_WRITE_WAITED;
    em__conn_update_interest(c);
}

/* OpenSSL wants the socket readable or writable before it can go on; false
 * when the error is not such a wait. */
static bool wait_for(em_conn *c, int ssl_err)
{
    if (ssl_err == SSL_ERROR_WANT_WRITE) {
        wait_writable(c);
        return true;
    }
    if (ssl_err == SSL_ERROR_WANT_READ) {
        c->flags &= ~(uint32_t)EM_CF_WRITE_WAITED;
        em__conn_update_interest(c);
        return true;
    }
    return false;
}

/* ----------------------------------------------------------- handshake */

size_t em__tls_session_key(em_conn *c, char *buf, size_t cap)
{
    em_tls *t = em__tls(c);
    size_t n = t->host ? strlen(t->host) + 1 : 1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (n + sizeof ss > cap || getpeername(c->io.fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    memcpy(buf, t->host ? t->host : "", n);
    memcpy(buf + n, &ss, len);
    return n + len;
}

/* A client offers the session its last connection to this server got. */
static void offer_session(em_conn *c, em_tls *t)
{
    char key[512];
    size_t len = t->no_resume ? 0 : em__tls_session_key(c, key, sizeof key);
    if (len)
        em__tls_session_offer(t->ctx, t->ssl, key, len);
    t->session_set = true;
}

static void keep_alpn(em_tls *t)
{
    const unsigned char *p;
    unsigned n;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    if (n && (t->alpn = em__malloc(n + 1))) {
        memcpy(t->alpn, p, n);
        t->alpn[n] = '\0';
    }
}

static bool handshake_completed(em_conn *c, em_tls *t)
{
    t->handshake_done = true;
    if (t->handshake_timer)
        em__timer_cancel(c->r, t->handshake_timer);
    t->handshake_timer = 0;
    keep_alpn(t);
    c->flags &= ~(uint32_t)EM_CF_WRITE_WAITED;
    em__conn_update_interest(c);
    if (em__conn_pending(c) || (c->flags & (EM_CF_CLOSE_AFTER_WRITE | EM_CF_SHUT_WR_PENDING)))
        em__conn_mark_dirty(c);
    if (c->h->ssl_handshake_completed)
        c->h->ssl_handshake_completed(c);
    if (!t->reading) /* completed in a flush: records may have come with it */
        kick_if_holding(c, t);
    return c->state == EM_CS_OPEN && !(c->flags & EM_CF_PAUSED);
}

/* true: the handshake is complete, the connection open and not paused. */
static bool handshake(em_conn *c, em_tls *t)
{
    if (t->handshake_done)
        return true;
    if (!t->server && !t->session_set)
        offer_session(c, t);
    ERR_clear_error();
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1)
        return handshake_completed(c, t);
    if (c->state != EM_CS_OPEN) /* closed by ssl_verify_peer */
        return false;
    int err = SSL_get_error(t->ssl, rc);
    if (!wait_for(c, err))
        fail_tls(c, t);
    return false;
}

static void handshake_timed_out(em_reactor *r, void *arg)
{
    EM_UNUSED(r);
    em_conn *c = arg;
    em_tls *t = em__tls(c);
    t->handshake_timer = 0;
    em__tls_set_error(t, "handshake timed out");
    em__conn_fail(c, ETIMEDOUT);
}

/* ---------------------------------------------------------------- read */

static bool reading_wanted(const em_conn *c)
{
    return c->state == EM_CS_OPEN &&
           !(c->flags & (EM_CF_PAUSED | EM_CF_EOF | EM_CF_PROXY_HELD | EM_CF_LAYER_HELD));
}

static void after_read_error(em_conn *c, em_tls *t, int err)
{
    if (!em__conn_usable(c))
        return;
    if (err == SSL_ERROR_WANT_WRITE) {
        t->read_wants_write = true;
        wait_writable(c);
    } else if (err == SSL_ERROR_ZERO_RETURN) {
        em__conn_on_eof(c); /* close_notify: a clean end */
    } else if (err != SSL_ERROR_WANT_READ) {
        fail_tls(c, t);
    }
}

/* Fills the read buffer with as many records as OpenSSL has (it reads the
 * socket once, a record or more with read-ahead, and again only to finish
 * a record) and delivers them in one receive_data; again while it holds
 * more and the connection still wants them. */
static void read_records(em_conn *c, em_tls *t)
{
    bool was_done = t->handshake_done;
    /* a handshake just completed has read all the socket had, unless
     * OpenSSL holds more: reading again would only find EAGAIN */
    if (!handshake(c, t) || !reading_wanted(c) || (!was_done && !SSL_has_pending(t->ssl)))
        return;
    char *buf = c->r->read_buf;
    for (;;) {
        size_t off = 0, n;
        int err = SSL_ERROR_NONE;
        while (off < EM_READ_BUF_SIZE) {
            ERR_clear_error();
            if (!SSL_read_ex(t->ssl, buf + off, EM_READ_BUF_SIZE - off, &n)) {
                err = SSL_get_error(t->ssl, 0);
                break;
            }
            off += n;
            if (!SSL_has_pending(t->ssl))
                break;
        }
        if (off) {
            em__count_in(c, off);
            em__conn_deliver(c, off);
        }
        if (err != SSL_ERROR_NONE) {
            after_read_error(c, t, err);
            return;
        }
        if (!reading_wanted(c) || !SSL_has_pending(t->ssl))
            return;
    }
}

static void tls_read(em_conn *c, em_tls *t)
{
    t->reading = true;
    read_records(c, t);
    t->reading = false;
}

/* Bytes OpenSSL holds are not the socket's: no poller reports them. When
 * reading is wanted again, a tick delivers them. */
static void kick(em_reactor *r, void *arg)
{
    em_conn *c = em_conn_by_sig(r, (em_sig)(uintptr_t)arg);
    em_tls *t = c && (c->flags & EM_CF_LAYER) ? em__tls(c) : NULL;
    if (!t)
        return;
    t->kick_queued = false;
    if (reading_wanted(c) && SSL_has_pending(t->ssl))
        tls_read(c, t);
}

/* Not while tls_read runs: it goes on while OpenSSL holds bytes. */
static void kick_if_holding(em_conn *c, em_tls *t)
{
    if (t->kick_queued || t->reading || !t->handshake_done || !reading_wanted(c) ||
        !SSL_has_pending(t->ssl))
        return;
    if (em_next_tick(c->r, kick, (void *)(uintptr_t)c->sig) == 0)
        t->kick_queued = true;
}

/* A client paused before its handshake began sends its ClientHello now. */
static void tls_read_wanted(em_conn *c)
{
    em_tls *t = em__tls(c);
    if (!t->handshake_done && !t->server)
        em__conn_mark_dirty(c);
    kick_if_holding(c, t);
}

/* --------------------------------------------------------------- write */

/* The next bytes for one SSL_write: always min(a record, the queue), from
 * the first chunk when it holds them all, else gathered from as many
 * chunks as it takes into the staging buffer. A write OpenSSL could not
 * finish must be offered again with at least as many bytes: the queue's
 * head keeps its bytes until they are written (copied, perhaps, into
 * other chunks) and it only grows, so min(a record, the queue) never
 * shrinks. */
static size_t next_piece(em_conn *c, const void **out)
{
    size_t want = em__outq_bytes(&c->out);
    if (want > EM_TLS_RECORD)
        want = EM_TLS_RECORD;
    struct iovec first;
    em__outq_iov(&c->out, &first, 1, NULL);
    if (first.iov_len >= want) {
        *out = first.iov_base;
        return want;
    }
    *out = c->r->tls->staging;
    return em__outq_copy(&c->out, c->r->tls->staging, want);
}

/* true: the queue is empty. */
static bool write_records(em_conn *c, em_tls *t)
{
    while (em__outq_bytes(&c->out)) {
        /* a file at the head of the queue: a record's worth into memory */
        int err = em__outq_materialize(c->r, &c->out, EM_TLS_RECORD);
        if (err) {
            em__conn_fail(c, -err);
            return false;
        }
        const void *piece;
        size_t len = next_piece(c, &piece), n;
        ERR_clear_error();
        if (SSL_write_ex(t->ssl, piece, len, &n)) {
            em__outq_consume(c->r, &c->out, n);
            em__conn_sent(c, n);
            continue;
        }
        err = SSL_get_error(t->ssl, 0);
        if (err == SSL_ERROR_WANT_READ)
            t->write_wants_read = true;
        if (!wait_for(c, err))
            fail_tls(c, t);
        return false;
    }
    return true;
}

/* Bytes queued before em_start_tls (a STARTTLS reply) go out as they are. */
static bool write_plain(em_conn *c, em_tls *t)
{
    ssize_t n = em__conn_write_raw(c, t->plain_left);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        em__conn_fail(c, errno);
        return false;
    }
    if (n > 0) {
        em__outq_consume(c->r, &c->out, (size_t)n);
        em__conn_sent(c, (size_t)n);
        t->plain_left -= (size_t)n;
    }
    if (t->plain_left) {
        wait_writable(c);
        return false;
    }
    c->flags &= ~(uint32_t)EM_CF_LAYER_HELD; /* the handshake may read now */
    em__conn_update_interest(c);
    return c->state == EM_CS_OPEN;
}

static bool send_close_notify(em_conn *c, em_tls *t)
{
    if (t->close_notify_sent)
        return true;
    ERR_clear_error();
    int rc = SSL_shutdown(t->ssl);
    if (rc >= 0) {
        t->close_notify_sent = true;
        return true;
    }
    int err = SSL_get_error(t->ssl, rc);
    if (err == SSL_ERROR_WANT_WRITE)
        wait_writable(c);
    else
        fail_tls(c, t);
    return false;
}

static void tls_flush(em_conn *c)
{
    em_tls *t = em__tls(c);
    if (t->plain_left && !write_plain(c, t))
        return;
    if (!handshake(c, t) || !write_records(c, t))
        return;
    if ((c->flags & (EM_CF_CLOSE_AFTER_WRITE | EM_CF_SHUT_WR_PENDING)) && !send_close_notify(c, t))
        return;
    em__conn_after_drain(c);
}

/* ----------------------------------------------------- events and close */

static void tls_on_event(em_conn *c, unsigned events)
{
    em_tls *t = em__tls(c);
    if ((events & (EM_EV_READ | EM_EV_HUP | EM_EV_ERROR)) && reading_wanted(c)) {
        tls_read(c, t);
        if (t->write_wants_read && c->state == EM_CS_OPEN) {
            t->write_wants_read = false;
            em__conn_mark_dirty(c);
        }
    }
    if (c->state != EM_CS_OPEN || !(events & (EM_EV_WRITE | EM_EV_ERROR)) ||
        !(c->flags & EM_CF_WRITE_WAITED))
        return;
    if (t->read_wants_write) {
        t->read_wants_write = false;
        tls_read(c, t);
    }
    if (c->state == EM_CS_OPEN)
        tls_flush(c);
}

/* A clean close (nothing dropped, no error) tells the peer with a
 * close_notify, as far as the socket takes it now: the close does not wait.
 * A close that drops data sends none, so the peer sees the truncation. */
static void tls_closing(em_conn *c, int reason)
{
    em_tls *t = em__tls(c);
    if (t->handshake_timer)
        em__timer_cancel(c->r, t->handshake_timer);
    t->handshake_timer = 0;
    if (reason || !t->handshake_done || t->close_notify_sent || c->r->forked ||
        (c->flags & (EM_CF_DETACHED | EM_CF_WR_SHUT)) || em__conn_pending(c))
        return;
    ERR_clear_error();
    if (SSL_shutdown(t->ssl) >= 0)
        t->close_notify_sent = true;
    ERR_clear_error();
}

static int arm_handshake_timer(em_conn *c, em_tls *t);

static void tls_rearm(em_conn *c)
{
    if (arm_handshake_timer(c, em__tls(c)) < 0)
        em__conn_fail(c, ENOMEM);
}

static void tls_free(em_layer *layer, em_reactor *r)
{
    em_tls *t = (em_tls *)layer;
    if (t->handshake_timer)
        em__timer_cancel(r, t->handshake_timer);
    SSL_free(t->ssl);
    if (t->ctx)
        em__tls_ctx_put(r, t->ctx);
    em__free(t->error);
    em__free(t->alpn);
    em__free(t->host);
    em__free(t);
}

static const em_layer_ops tls_ops = {
    .on_event = tls_on_event,
    .flush = tls_flush,
    .closing = tls_closing,
    .read_wanted = tls_read_wanted,
    .connect_timeout_changed = tls_rearm,
    .free = tls_free,
};

void em__tls_reactor_free(em_reactor *r) { em__tls_ctxs_free(r); }

/* ------------------------------------------------------------ starting */

static int refuse(em_tls *t, int err, const char *why)
{
    em__tls_set_error(t, why);
    return err;
}

/* The name checked in the server's certificate, and sent as SNI unless it
 * is an address. */
static int set_peer_name(em_tls *t, const char *host)
{
    unsigned char addr[16];
    X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
    if (!(t->host = em__strdup(host)))
        return -ENOMEM;
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(param, host) ? 0 : -EINVAL;
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (!SSL_set1_host(t->ssl, host) || !SSL_set_tlsext_host_name(t->ssl, host))
        return -EINVAL;
    return 0;
}

static int make_ssl(em_conn *c, em_tls *t, const char *host)
{
    pthread_once(&bio_once, bio_method_make);
    BIO *bio = bio_method ? BIO_new(bio_method) : NULL;
    if (!bio || !(t->ssl = SSL_new(em__tls_ctx_ssl(t->ctx)))) {
        BIO_free(bio);
        ERR_clear_error();
        return -ENOMEM;
    }
    BIO_set_data(bio, c);
    SSL_set_bio(t->ssl, bio, bio);
    SSL_set_app_data(t->ssl, c);
    if (t->server) {
        SSL_set_accept_state(t->ssl);
        if (t->no_resume)
            SSL_set_num_tickets(t->ssl, 0);
        return 0;
    }
    SSL_set_connect_state(t->ssl);
    return host ? set_peer_name(t, host) : 0;
}

static int arm_handshake_timer(em_conn *c, em_tls *t)
{
    double limit = em_get_pending_connect_timeout(c);
    if (t->handshake_timer)
        em__timer_cancel(c->r, t->handshake_timer);
    t->handshake_timer = 0;
    if (limit <= 0 || t->handshake_done)
        return 0;
    t->handshake_timer = em__timer_add(c->r, t->started + limit, 0, handshake_timed_out, c, true);
    return t->handshake_timer ? 0 : -ENOMEM;
}

/* A refused start keeps its reason (em_tls_error_string) and nothing else. */
static void undo_start(em_conn *c, em_tls *t)
{
    SSL_free(t->ssl);
    t->ssl = NULL;
    if (t->ctx)
        em__tls_ctx_put(c->r, t->ctx);
    t->ctx = NULL;
    em__free(t->host);
    t->host = NULL;
}

static int start(em_conn *c, em_tls *t, const em_tls_opts *o)
{
    t->server = c->flags & EM_CF_ACCEPTED;
    t->insecure = o->insecure;
    t->started = em__clock();
    t->no_resume = c->h->ssl_verify_peer && (!t->server || o->verify_peer);
    const char *host = t->server ? NULL : o->sni_hostname ? o->sni_hostname : c->cold->host;
    if (!t->server && !host && !o->insecure)
        return refuse(t, -EINVAL, "no host name to verify: give sni_hostname (or insecure)");
    char *why = NULL;
    int err = em__tls_ctx_get(c->r, o, t->server, &t->ctx, &why);
    if (err) {
        em__tls_set_error(t, why ? why : "out of memory");
        em__free(why);
        return err;
    }
    err = make_ssl(c, t, host);
    if (!err)
        err = arm_handshake_timer(c, t);
    if (err)
        return refuse(t, err, err == -EINVAL ? "bad sni_hostname" : "out of memory");
    return 0;
}

static int startable(const em_conn *c)
{
    if (!c || (c->flags & (EM_CF_DGRAM | EM_CF_WATCH | EM_CF_POPEN | EM_CF_NOT_SOCKET)))
        return -EINVAL;
    if (!em__conn_takes_data(c) || (c->flags & EM_CF_EOF))
        return -ENOTCONN;
    if (c->flags & EM_CF_LAYER)
        return -EISCONN;
    /* the bytes before the handshake go as they are, from memory only */
    return em__outq_has_feed(&c->out) ? -EBUSY : 0;
}

int em_start_tls(em_conn *c, const em_tls_opts *opts)
{
    static const em_tls_opts defaults;
    int err = startable(c);
    if (err)
        return err;
    if (!em__conn_cold(c))
        return -ENOMEM;
    em__conn_layer_free(c); /* a refused start's error */
    em_tls *t = em__calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->layer.ops = &tls_ops;
    c->cold->layer = &t->layer;
    err = start(c, t, opts ? opts : &defaults);
    if (err) {
        undo_start(c, t);
        return err;
    }
    em__conn_unspan(c);
    em__sends_unlist(c); /* its queue is the layer's to write now */
    t->plain_left = em__outq_bytes(&c->out);
    /* the handshake waits for the plain bytes, even a peer's early hello */
    c->flags |= EM_CF_LAYER | (t->plain_left ? EM_CF_LAYER_HELD : 0);
    em__conn_update_interest(c); /* held, or reading the socket itself */
    if (!t->server || t->plain_left) /* a client speaks first */
        em__conn_mark_dirty(c);
    return 0;
}

/* ------------------------------------------------------------- getters */

static SSL *established(const em_conn *c)
{
    em_tls *t = c && (c->flags & EM_CF_LAYER) ? em__tls(c) : NULL;
    return t && t->handshake_done ? t->ssl : NULL;
}

bool em_tls_preverify_ok(const em_conn *c)
{
    em_tls *t = c ? em__tls(c) : NULL;
    return t && t->in_verify && t->preverify;
}

static char *copy_out(const char *s)
{
    return s ? strdup(s) : NULL; /* released by the caller with free() */
}

char *em_get_peer_cert(const em_conn *c)
{
    SSL *ssl = established(c);
    return ssl ? em__tls_cert_pem(SSL_get0_peer_certificate(ssl)) : NULL;
}

char *em_get_cipher_name(const em_conn *c)
{
    SSL *ssl = established(c);
    return ssl ? copy_out(SSL_get_cipher_name(ssl)) : NULL;
}

char *em_get_cipher_protocol(const em_conn *c)
{
    SSL *ssl = established(c);
    return ssl ? copy_out(SSL_get_version(ssl)) : NULL;
}

int em_get_cipher_bits(const em_conn *c)
{
    SSL *ssl = established(c);
    return ssl ? SSL_CIPHER_get_bits(SSL_get_current_cipher(ssl), NULL) : -1;
}

const char *em_get_sni_hostname(const em_conn *c)
{
    em_tls *t = c && (c->flags & EM_CF_LAYER) ? em__tls(c) : NULL;
    return t && t->server ? SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}

const char *em_get_alpn_protocol(const em_conn *c)
{
    em_tls *t = c && (c->flags & EM_CF_LAYER) ? em__tls(c) : NULL;
    return t ? t->alpn : NULL;
}

bool em_tls_session_reused(const em_conn *c)
{
    SSL *ssl = established(c);
    return ssl && SSL_session_reused(ssl);
}

const char *em_tls_error_string(const em_conn *c)
{
    em_tls *t = c ? em__tls(c) : NULL;
    return t ? t->error : NULL;
}
#endif /* EM_HAVE_OPENSSL */
