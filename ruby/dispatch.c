/*
 * Events from libem to the Ruby layer.
 *
 * libem calls these handlers from inside em_run_once, so Ruby code must
 * never unwind through them: every call into Ruby runs under rb_protect.
 * The first exception is kept, the reactor is asked to stop, and
 * run_machine raises it once em_run_once has returned, which is what a
 * user of stock EventMachine sees (the exception comes out of EM.run).
 */
#include "rbem.h"

static VALUE eConnectionNotBound, eUnknownTimerFired;
static ID id_receive_data, id_event_callback, id_run_deferred_callbacks, id_delete,
    id_call, id_connection_completed, id_notify_readable, id_notify_writable,
    id_ssl_handshake_completed, id_ssl_verify_peer, id_proxy_target_unbound,
    id_proxy_completed, id_at_error_handler;

struct event {
    em_sig sig;
    int type;
    const char *data; /* bytes of ConnectionData and SslVerify */
    size_t len;
    uint64_t num; /* the number the Ruby layer gets as data otherwise */
};

static VALUE conn_for(const struct event *e)
{
    VALUE conn = rb_hash_aref(rbem.conns, RBEM_SIG2NUM(e->sig));
    if (NIL_P(conn))
        rb_raise(eConnectionNotBound, "unknown connection: %llu", (unsigned long long)e->sig);
    return conn;
}

/* Stock does this in C too: the Ruby layer's own TimerFired branch is
 * only a fallback. false in @timers marks a timer cancelled by Ruby. */
static VALUE fire_timer(const struct event *e)
{
    VALUE blk = rb_funcall(rbem.timers, id_delete, 1, ULL2NUM(e->num));
    if (NIL_P(blk))
        rb_raise(eUnknownTimerFired, "no such timer: %llu", (unsigned long long)e->num);
    if (blk != Qfalse)
        rb_funcall(blk, id_call, 0);
    return Qnil;
}

static VALUE to_module(const struct event *e)
{
    return rb_funcall(rbem_module, id_event_callback, 3, RBEM_SIG2NUM(e->sig), INT2FIX(e->type),
                      ULL2NUM(e->num));
}

static ID method_for(int type)
{
    switch (type) {
    case RBEM_CONNECTION_COMPLETED: return id_connection_completed;
    case RBEM_CONNECTION_NOTIFY_READABLE: return id_notify_readable;
    case RBEM_CONNECTION_NOTIFY_WRITABLE: return id_notify_writable;
    case RBEM_SSL_HANDSHAKE_COMPLETED: return id_ssl_handshake_completed;
    case RBEM_PROXY_TARGET_UNBOUND: return id_proxy_target_unbound;
    case RBEM_PROXY_COMPLETED: return id_proxy_completed;
    default: return 0;
    }
}

static VALUE deliver(VALUE arg)
{
    const struct event *e = (const struct event *)arg;
    switch (e->type) {
    case RBEM_CONNECTION_READ:
        /* Straight to the connection, as stock does: the hot path. */
        return rb_funcall(conn_for(e), id_receive_data, 1, rb_str_new(e->data, (long)e->len));
    case RBEM_CONNECTION_ACCEPTED:
    case RBEM_CONNECTION_UNBOUND:
        return to_module(e);
    case RBEM_TIMER_FIRED:
        return fire_timer(e);
    case RBEM_LOOPBREAK_SIGNAL:
        return rb_funcall(rbem_module, id_run_deferred_callbacks, 0);
    case RBEM_SSL_VERIFY:
        return rb_funcall(conn_for(e), id_ssl_verify_peer, 1, rb_str_new(e->data, (long)e->len));
    default:
        return rb_funcall(conn_for(e), method_for(e->type), 0);
    }
}

static VALUE call_error_handler(VALUE unused, VALUE err)
{
    (void)unused;
    VALUE handler = rb_ivar_get(rbem_module, id_at_error_handler);
    rb_funcall(handler, id_call, 1, err);
    return Qnil;
}

/* With EM.error_handler set, stock rescues StandardError around each
 * event and hands it over; the handler's own exceptions stop the reactor. */
static VALUE deliver_guarded(VALUE arg)
{
    if (rb_ivar_defined(rbem_module, id_at_error_handler))
        return rb_rescue(deliver, arg, call_error_handler, Qnil);
    return deliver(arg);
}

static void record_error(void)
{
    VALUE err = rb_errinfo();
    rb_set_errinfo(Qnil);
    if (!NIL_P(rbem.error))
        return; /* the first one is the cause; later ones follow from it */
    if (RB_TYPE_P(err, T_OBJECT) && rb_obj_is_kind_of(err, rb_eException))
        rbem.error = err;
    else /* throw, break or a thread kill cannot be replayed later */
        rbem.error = rb_exc_new_cstr(rb_eRuntimeError,
                                     "non-local exit (throw, break or thread kill) out of an "
                                     "EventMachine callback");
    rbem.stop_asked = true;
    if (rbem.r)
        em_stop(rbem.r);
}

static VALUE dispatch(struct event *e)
{
    /* After an error only unbinds go through, so that the Ruby layer's
     * @conns still forgets the connections closed on the way out. */
    if (!NIL_P(rbem.error) && e->type != RBEM_CONNECTION_UNBOUND)
        return Qnil;
    int state = 0;
    VALUE ret = rb_protect(deliver_guarded, (VALUE)e, &state);
    if (state) {
        record_error();
        return Qnil;
    }
    return ret;
}

void rbem_event(em_sig sig, int type, uint64_t num)
{
    struct event e = {.sig = sig, .type = type, .num = num};
    dispatch(&e);
}

VALUE rbem_event_data(em_sig sig, int type, const char *data, size_t len)
{
    struct event e = {.sig = sig, .type = type, .data = data, .len = len};
    return dispatch(&e);
}

bool rbem_error_pending(void) { return !NIL_P(rbem.error); }

void rbem_raise_pending(void)
{
    VALUE err = rbem.error;
    if (NIL_P(err))
        return;
    rbem.error = Qnil;
    rb_exc_raise(err);
}

void rbem_init_dispatch(void)
{
    rb_gc_register_address(&rbem.error);
    rb_gc_register_address(&rbem.conns);
    rb_gc_register_address(&rbem.timers);
    rbem.error = rbem.conns = rbem.timers = Qnil;
    eConnectionNotBound =
        rb_define_class_under(rbem_module, "ConnectionNotBound", rb_eRuntimeError);
    eUnknownTimerFired = rb_define_class_under(rbem_module, "UnknownTimerFired", rb_eRuntimeError);
    rb_gc_register_address(&eConnectionNotBound);
    rb_gc_register_address(&eUnknownTimerFired);
    id_receive_data = rb_intern("receive_data");
    id_event_callback = rb_intern("event_callback");
    id_run_deferred_callbacks = rb_intern("run_deferred_callbacks");
    id_delete = rb_intern("delete");
    id_call = rb_intern("call");
    id_connection_completed = rb_intern("connection_completed");
    id_notify_readable = rb_intern("notify_readable");
    id_notify_writable = rb_intern("notify_writable");
    id_ssl_handshake_completed = rb_intern("ssl_handshake_completed");
    id_ssl_verify_peer = rb_intern("ssl_verify_peer");
    id_proxy_target_unbound = rb_intern("proxy_target_unbound");
    id_proxy_completed = rb_intern("proxy_completed");
    id_at_error_handler = rb_intern("@error_handler");
}
