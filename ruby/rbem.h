/*
 * rubyeventmachine on libem: the native half of EventMachine's Ruby layer
 * (eventmachine.rb, the em/ files), written against libem's public API only.
 *
 * The Ruby layer keeps every Ruby object (connections in @conns, timer
 * blocks in @timers, acceptors in @acceptors) and talks to the extension
 * through signatures, so this side holds no Ruby object but the hashes it
 * reads on each event and the exception a callback left behind.
 */
#ifndef RBEM_H
#define RBEM_H

#include <ruby.h>

#include "em.h"

/* Event types of EventMachine::event_callback: the stock extension's
 * numbers, which the Ruby layer compares with its constants. */
enum {
    RBEM_TIMER_FIRED = 100,
    RBEM_CONNECTION_READ = 101,
    RBEM_CONNECTION_UNBOUND = 102,
    RBEM_CONNECTION_ACCEPTED = 103,
    RBEM_CONNECTION_COMPLETED = 104,
    RBEM_LOOPBREAK_SIGNAL = 105,
    RBEM_CONNECTION_NOTIFY_READABLE = 106,
    RBEM_CONNECTION_NOTIFY_WRITABLE = 107,
    RBEM_SSL_HANDSHAKE_COMPLETED = 108,
    RBEM_SSL_VERIFY = 109,
    RBEM_PROXY_TARGET_UNBOUND = 110,
    RBEM_PROXY_COMPLETED = 111,
};

/* One reactor per process, as in stock EventMachine. */
struct rbem {
    em_reactor *r;      /* NULL outside initialize_event_machine..release_machine */
    pid_t owner;        /* the process that made r: a forked child must not drive it */
    int wake_fd;        /* eventfd that interrupts the wait for Ruby (reactor.c) */
    bool stop_asked;    /* EM.stop, or a callback raised */
    VALUE error;        /* first exception a callback raised, re-raised by run_machine */
    VALUE conns;        /* EventMachine's @conns and @timers, cached per run */
    VALUE timers;
    uint64_t timer_seq; /* signatures of one-shot timers */
    double quantum_s;   /* longest wait in the poller; 0: until the next event */
};

extern struct rbem rbem;
extern VALUE rbem_module, rbem_connection_class;
extern VALUE rbem_eConnectionError, rbem_eUnsupported, rbem_eInvalidSignature,
    rbem_eInvalidPrivateKey;

/* The handler every connection made for Ruby gets. */
extern const em_handler rbem_handler;
/* An unbind reason or em_error as the errno stock reports for it: libem's
 * own codes (EM_ERESOLVE, EM_ETLS...) become errnos (handler.c). */
int rbem_stock_errno(int err);

/* Signatures are Ruby Integers. */
#define RBEM_SIG2NUM(s) ULL2NUM((unsigned long long)(s))
#define RBEM_NUM2SIG(v) ((em_sig)NUM2ULL(v))

/* The running reactor, or a RuntimeError naming the caller (stock's
 * "eventmachine not initialized"). */
em_reactor *rbem_reactor(const char *caller);
/* The live connection with that signature, or NULL (stock ignores calls on
 * connections that are gone, and so do these). */
em_conn *rbem_conn(VALUE sig);
/* The connection whose unbind is running (handler.c), found by rbem_conn. */
extern em_conn *rbem_unbinding;
/* Raises a Ruby exception of class k for a negative errno from libem. */
NORETURN(void rbem_raise_errno(VALUE k, const char *what, int neg_err));

/* Delivers one event to the Ruby layer under rb_protect (dispatch.c):
 * num is the data the Ruby layer gets (a signature, an errno, a timer);
 * rbem_event_data passes bytes instead and returns the Ruby answer (nil
 * after an exception). */
void rbem_event(em_sig sig, int type, uint64_t num);
VALUE rbem_event_data(em_sig sig, int type, const char *data, size_t len);
/* Whether a callback raised and the reactor is on its way out. */
bool rbem_error_pending(void);
/* Raises the recorded exception, if any, and forgets it. */
void rbem_raise_pending(void);

/* A self-signed certificate and key for a TLS server given none, as
 * stock's built-in one (tls-default.c); false if OpenSSL could not make it. */
bool rbem_default_cert(const char **cert_pem, const char **key_pem);

/* Per-area registration of module functions. */
void rbem_init_dispatch(void);
void rbem_init_reactor(void);
void rbem_init_timers(void);
void rbem_init_servers(void);
void rbem_init_connect(void);
void rbem_init_conn(void);
void rbem_init_conn_flow(void);
void rbem_init_popen(void);
void rbem_init_tls(void);
void rbem_init_watch(void);

/* A listening socket made for Ruby; accepted connections get it as their
 * arg, which is how post_init tells them from the others (arg NULL). */
struct rbem_server {
    em_sig sig;
    em_server *s;
    struct sockaddr_storage addr; /* for get_sockname, which stock answers for servers */
    socklen_t addrlen;            /* 0: unknown */
    struct rbem_server *next;
};
/* Forgets every server when the reactor goes (em_reactor_free closes them). */
void rbem_servers_forget(void);
/* Listening servers: stock counts them in get_connection_count. */
size_t rbem_server_count(void);
/* A server's packed local address, or nil when sig is not a server's. */
VALUE rbem_server_sockname(VALUE sig);

/* Per-connection flags, kept in libem's user pointer: no allocation per
 * connection. */
enum {
    RBEM_CLOSE_COUNTED = 1, /* counted in rbem_close_scheduled */
    RBEM_TLS_ASK_RUBY = 2,  /* start_tls(verify_peer: true): Ruby's ssl_verify_peer decides */
    RBEM_TLS_ACCEPT_ANY = 4, /* a client that verifies nothing, as stock's default */
    RBEM_FILE_WATCH = 8,     /* an inotify descriptor of watch_filename (watch.c) */
    RBEM_PID_WATCH = 16,     /* a pidfd of watch_pid (watch.c) */
    RBEM_FLAG_BITS = 8       /* the file and pid watches keep their fd above these */
};
static inline uintptr_t rbem_flags(const em_conn *c) { return (uintptr_t)em_conn_user(c); }
static inline void rbem_set_flags(em_conn *c, uintptr_t f)
{
    em_conn_set_user(c, (void *)(rbem_flags(c) | f));
}
static inline void rbem_clear_flags(em_conn *c, uintptr_t f)
{
    em_conn_set_user(c, (void *)(rbem_flags(c) & ~f));
}

/* File and pid watches (watch.c): their readiness and their end. */
void rbem_watch_readable(em_conn *c);
void rbem_watch_unbound(em_conn *c);

/* Connections on which close_connection was asked and that are not yet
 * unbound: stock's num_close_scheduled (conn.c). */
extern size_t rbem_close_scheduled;
void rbem_note_close(em_conn *c);
void rbem_note_unbind(em_conn *c);

#endif
