/*
 * The em_handler every connection made for Ruby gets: each callback turns
 * into the event the stock extension would have sent for it.
 */
#include <errno.h>

#include "rbem.h"

/* Outbound, attached, popen and datagram connections are announced by the
 * Ruby layer itself (Connection.new after the native call returns); only
 * accepted ones need ConnectionAccepted, with the server's signature. */
static void on_post_init(em_conn *c)
{
    const struct rbem_server *srv = em_conn_arg(c);
    if (srv)
        rbem_event(srv->sig, RBEM_CONNECTION_ACCEPTED, em_signature(c));
}

static void on_receive_data(em_conn *c, const char *data, size_t len)
{
    rbem_event_data(em_signature(c), RBEM_CONNECTION_READ, data, len);
}

/* The Ruby layer maps the reason through EventMachine::ERRNOS, which only
 * knows errno values: libem's own codes become the errno stock reports
 * for the same failure. */
int rbem_stock_errno(int reason)
{
    switch (reason) {
    case EM_ERESOLVE: return EHOSTUNREACH; /* stock raised at connect time instead */
    case EM_ETLS: return EPROTO;           /* stock's code for a failed handshake */
    case EM_ETLS_TRUNCATED: return ECONNRESET;
    default: return reason;
    }
}

em_conn *rbem_unbinding;

/* em_conn_by_sig forgets a connection as its unbind begins, but Ruby's
 * unbind methods still ask about it (get_subprocess_status in
 * EM.system's, get_peername, get_proxied_bytes): rbem_conn finds it here
 * while the pointer is valid, until unbind returns. */
static void on_unbind(em_conn *c, int reason)
{
    em_conn *outer = rbem_unbinding;
    rbem_unbinding = c;
    rbem_watch_unbound(c);
    /* Stock counts a connection in num_close_scheduled until its unbind
     * has returned, a close asked from unbind included. */
    rbem_note_close(c);
    rbem_event(em_signature(c), RBEM_CONNECTION_UNBOUND, (uint64_t)rbem_stock_errno(reason));
    rbem_note_unbind(c);
    rbem_unbinding = outer;
}

static void on_completed(em_conn *c)
{
    rbem_event(em_signature(c), RBEM_CONNECTION_COMPLETED, 0);
}

static void on_notify_readable(em_conn *c)
{
    if (rbem_flags(c) & (RBEM_FILE_WATCH | RBEM_PID_WATCH)) {
        rbem_watch_readable(c);
        return;
    }
    rbem_event(em_signature(c), RBEM_CONNECTION_NOTIFY_READABLE, 0);
}

static void on_notify_writable(em_conn *c)
{
    rbem_event(em_signature(c), RBEM_CONNECTION_NOTIFY_WRITABLE, 0);
}

static void on_proxy_target_unbound(em_conn *c)
{
    rbem_event(em_signature(c), RBEM_PROXY_TARGET_UNBOUND, 0);
}

static void on_proxy_completed(em_conn *c)
{
    rbem_event(em_signature(c), RBEM_PROXY_COMPLETED, 0);
}

static void on_handshake(em_conn *c)
{
    rbem_event(em_signature(c), RBEM_SSL_HANDSHAKE_COMPLETED, 0);
}

/* libem asks for each certificate of every chain it verifies; only a
 * start_tls with verify_peer asks Ruby, as stock does. A client that
 * verifies nothing accepts all (stock's default); one under
 * tls_verify_by_default keeps OpenSSL's verdict, host name included. */
static bool on_verify_peer(em_conn *c, const char *pem)
{
    uintptr_t f = rbem_flags(c);
    if (f & RBEM_TLS_ASK_RUBY)
        return RTEST(rbem_event_data(em_signature(c), RBEM_SSL_VERIFY, pem, strlen(pem)));
    if (f & RBEM_TLS_ACCEPT_ANY)
        return true;
    return em_tls_preverify_ok(c);
}

const em_handler rbem_handler = {
    .post_init = on_post_init,
    .connection_completed = on_completed,
    .receive_data = on_receive_data,
    .unbind = on_unbind,
    .ssl_handshake_completed = on_handshake,
    .ssl_verify_peer = on_verify_peer,
    .proxy_target_unbound = on_proxy_target_unbound,
    .proxy_completed = on_proxy_completed,
    .notify_readable = on_notify_readable,
    .notify_writable = on_notify_writable,
};
