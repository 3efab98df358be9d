/*
 * Init_rubyeventmachine: the module, classes and constants the Ruby layer
 * expects of the stock extension, then each area's functions.
 */
#include "rbem.h"

VALUE rbem_module, rbem_connection_class;
VALUE rbem_eConnectionError, rbem_eUnsupported, rbem_eInvalidSignature, rbem_eInvalidPrivateKey;

/* Globals the extension keeps: registered so that a compacting GC
 * neither frees nor moves them behind its back. */
static void keep(VALUE *v) { rb_gc_register_address(v); }

static void define_errors(void)
{
    VALUE m = rbem_module;
    rb_define_class_under(m, "NoHandlerForAcceptedConnection", rb_eRuntimeError);
    rbem_eConnectionError = rb_define_class_under(m, "ConnectionError", rb_eRuntimeError);
    rbem_eUnsupported = rb_define_class_under(m, "Unsupported", rb_eRuntimeError);
    rbem_eInvalidSignature = rb_define_class_under(m, "InvalidSignature", rb_eRuntimeError);
    rbem_eInvalidPrivateKey = rb_define_class_under(m, "InvalidPrivateKey", rb_eRuntimeError);
    keep(&rbem_eConnectionError);
    keep(&rbem_eUnsupported);
    keep(&rbem_eInvalidSignature);
    keep(&rbem_eInvalidPrivateKey);
}

static void define_event_types(void)
{
    static const struct {
        const char *name;
        int value;
    } types[] = {
        {"TimerFired", RBEM_TIMER_FIRED},
        {"ConnectionData", RBEM_CONNECTION_READ},
        {"ConnectionUnbound", RBEM_CONNECTION_UNBOUND},
        {"ConnectionAccepted", RBEM_CONNECTION_ACCEPTED},
        {"ConnectionCompleted", RBEM_CONNECTION_COMPLETED},
        {"LoopbreakSignalled", RBEM_LOOPBREAK_SIGNAL},
        {"ConnectionNotifyReadable", RBEM_CONNECTION_NOTIFY_READABLE},
        {"ConnectionNotifyWritable", RBEM_CONNECTION_NOTIFY_WRITABLE},
        {"SslHandshakeCompleted", RBEM_SSL_HANDSHAKE_COMPLETED},
        {"SslVerify", RBEM_SSL_VERIFY},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        rb_define_const(rbem_module, types[i].name, INT2FIX(types[i].value));
}

RUBY_FUNC_EXPORTED void Init_rubyeventmachine(void);

void Init_rubyeventmachine(void)
{
    rbem_module = rb_define_module("EventMachine");
    rbem_connection_class = rb_define_class_under(rbem_module, "Connection", rb_cObject);
    keep(&rbem_module);
    keep(&rbem_connection_class);
    /* How a program (and the tests) tell this extension from stock's. */
    rb_define_const(rbem_module, "LIBEM_VERSION", rb_str_new_cstr(em_version()));
    define_errors();
    define_event_types();
    rbem_init_dispatch();
    rbem_init_reactor();
    rbem_init_timers();
    rbem_init_servers();
    rbem_init_connect();
    rbem_init_conn();
    rbem_init_conn_flow();
    rbem_init_popen();
    rbem_init_tls();
    rbem_init_watch();
}
