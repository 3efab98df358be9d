/*
 * libem: EventMachine's programming model in C.
 *
 * A reactor owns every socket. A connection's behaviour is a table of
 * callbacks (em_handler), the C form of a handler module mixed into
 * EventMachine::Connection; each method of that class has an em_ function.
 *
 * Conventions
 *  - Functions that can fail return 0 (or a non-negative value) on success
 *    and a negative errno on failure. Functions returning a pointer return
 *    NULL and set errno. libem's own codes (EM_ERESOLVE, ...) are >= 1000.
 *  - Every call except em_schedule() and em_stop() is made on the reactor's
 *    thread. Any call may be made from inside any callback, including closing
 *    or freeing the object being called back.
 *  - No callback runs inside an em_ call, except post_init, which the calls
 *    that create a connection (em_connect, ...) run before they return.
 *  - While a reactor shuts down (the unbinds at the end of em_run and in
 *    em_reactor_free), the calls that make a connection or a server fail
 *    with ECANCELED (em_reconnect: -ECANCELED), so that a handler that
 *    reconnects from unbind cannot keep the reactor alive.
 *
 * One turn of the loop (em_run_once):
 *   1. the cached clock is updated; due timers run in deadline order
 *      (timers added during this step wait for the next turn);
 *   2. next-tick callbacks queued before the turn, em_schedule() callbacks and
 *      finished em_defer() work run ("done" callbacks), in FIFO order;
 *   3. data sent so far is flushed and requested closes are carried out;
 *   4. the poller waits: 0 s if work is pending, else until the next timer,
 *      else up to max_wait_s;
 *   5. ready descriptors are dispatched (accept, connect completion, reads,
 *      writes after a partial write);
 *   6. data sent during the turn is flushed, one writev per connection;
 *   7. closes are carried out: each closed connection gets unbind, then is
 *      freed. A connection closed during this step (an unbind that retries
 *      and fails at once) is unbound in the next turn's, so every turn ends.
 */
#ifndef EM_H
#define EM_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define EM_EXPORT __attribute__((visibility("default")))
#else
#define EM_EXPORT
#endif

/* -------------------------------------------------------------- version */

/* The version of this header, and the one place the version is written
 * (CMakeLists.txt reads it from here). Until 1.0 a minor release may change
 * the ABI; the shared library's soname is libem.so.EM_VERSION_MAJOR. */
#define EM_VERSION_MAJOR 0
#define EM_VERSION_MINOR 1
#define EM_VERSION_PATCH 0

/* The version of the library linked in, "MAJOR.MINOR.PATCH": it may differ
 * from the EM_VERSION_ macros when a program runs against a shared library
 * newer than the header it was compiled with. Static string, never NULL. */
EM_EXPORT const char *em_version(void);

/* ---------------------------------------------------------------- types */

typedef struct em_reactor em_reactor;
typedef struct em_conn em_conn;     /* every watched descriptor */
typedef struct em_server em_server; /* a listening socket */
typedef uint64_t em_sig;            /* unique in a reactor, never reused */
typedef uint64_t em_timer_id;       /* 0 means "none" */
typedef void (*em_cb)(em_reactor *r, void *arg);

/* libem's own error codes: positive, outside the errno range. */
enum {
    EM_ERESOLVE = 1000,       /* a host name did not resolve (em_resolve_error,
                                 em_last_resolve_error: why) */
    EM_ETLS = 1001,           /* TLS handshake or verification failed */
    EM_ETLS_TRUNCATED = 1002, /* TLS peer closed without close_notify */
    EM_EBACKEND = 1003,       /* no backend of that name (em_strerror lists
                                 the known ones) */
};

/* Text for an errno or a libem code, either sign. Never NULL; the string is
 * static and must not be freed. */
EM_EXPORT const char *em_strerror(int err);

typedef struct em_conn_stats {
    uint64_t bytes_in;    /* bytes delivered to receive_data */
    uint64_t bytes_out;   /* bytes written to the kernel (TLS: plaintext bytes sent) */
    double created;       /* em_now() when the connection was made */
    double last_activity; /* em_now() of the last byte read or written */
} em_conn_stats;

/* -------------------------------------------------------------- reactor */

typedef struct em_reactor_opts {
    /* "epoll", "poll", "io_uring" (builds with liburing), or "auto":
     * io_uring where the kernel gives a ring, else epoll. NULL: $EM_BACKEND,
     * else epoll. On io_uring the kernel reads for stream connections (TCP,
     * unix, popen's, attached stream sockets; not TLS, proxies or
     * datagrams) into buffers the reactor shares (4 MiB by default, mapped
     * at the first one), at most 256 KiB ahead of a connection that
     * pauses; $EM_URING_RECV=0 makes it report readiness only. It accepts
     * for listeners too ($EM_URING_ACCEPT=0: they are polled), and sends
     * what those connections queue, a turn's sends in one system call
     * ($EM_URING_SEND=0: they write for themselves). */
    const char *backend;
    unsigned threadpool_size; /* threads for em_defer and name resolution; 0: 20 */
    size_t max_timers;        /* 0: no limit */
} em_reactor_opts;

/* Makes a reactor. opts may be NULL. NULL + errno: EM_EBACKEND (an
 * unknown backend, in opts or $EM_BACKEND: em_strerror(EM_EBACKEND) and
 * em_backend_names list the known ones), ENOMEM, or the errno of the
 * poller's creation. "io_uring" asked for where the kernel refuses it
 * fails with io_uring_setup's errno: ENOSYS (no io_uring), EPERM (the
 * kernel.io_uring_disabled sysctl, a seccomp filter), or EOPNOTSUPP (a
 * kernel without a feature libem needs); "auto" then takes epoll. A
 * reactor on io_uring runs its ring from one thread: used from another
 * (made on one thread and run on another) it makes its ring again there,
 * and descriptors closed by that first use are let go of when the kernel
 * has torn the old ring down, shortly after.
 * Threads of the pool start lazily, on the first em_defer() or name
 * resolution. */
EM_EXPORT em_reactor *em_reactor_new(const em_reactor_opts *opts);

/* The backends this build knows, separated by spaces ("epoll poll", then
 * "io_uring auto" when built with liburing): what em_reactor_opts.backend
 * and $EM_BACKEND accept. Static storage. */
EM_EXPORT const char *em_backend_names(void);

/* Runs turns until em_stop(). Then every connection is unbound with reason 0
 * (unsent data dropped), every server, timer, tick and scheduled callback is
 * freed, and 0 is returned; the reactor may be run again. A poller short of
 * memory (EAGAIN, ENOMEM) is retried; a broken one ends the run the same way
 * with its negative errno. -EINVAL for NULL, -EBUSY when already running
 * (em_run called from a callback). Deferred work still in flight keeps its
 * done callback for a later turn, or for em_reactor_free. A forked child
 * that freed r from a callback of this run gets 0 once the reactor is
 * freed (see em_reactor_free); r is gone then. */
EM_EXPORT int em_run(em_reactor *r);

/* One turn (see the top of this file), waiting at most max_wait_s seconds
 * for I/O (negative: until the next timer or event). Returns the number of
 * events dispatched, or -EINVAL / -EBUSY, or the poller's negative errno:
 * -EAGAIN or -ENOMEM mean it is short of memory or descriptors for now, and
 * the call should be repeated after a pause (em_run pauses 1 ms).
 * -ECANCELED: the reactor was freed (em_reactor_free in a forked child
 * during this turn); do not use it again. */
EM_EXPORT int em_run_once(em_reactor *r, double max_wait_s);

/* Asks em_run to return once the current turn is finished. Thread-safe,
 * and async-signal-safe: it may be called from a POSIX signal handler (it
 * sets a flag and writes to an eventfd, and leaves errno as it was). A loop driven by em_run_once is only woken if it waits in the poller;
 * later turns wait as usual, and nothing is shut down: the embedder ends
 * its loop (em_stopping tells it a stop was asked) and em_reactor_free
 * unbinds what is open. A request made while em_run is not
 * running is kept for the next em_run, which then shuts down and returns
 * at once. */
EM_EXPORT void em_stop(em_reactor *r);

/* True from em_stop until the em_run it stopped has returned (EventMachine's
 * stopping?). */
EM_EXPORT bool em_stopping(const em_reactor *r);

/* True while em_run or em_run_once is executing. */
EM_EXPORT bool em_reactor_running(const em_reactor *r);

/* Unbinds what is still open (reason 0), closes servers (removing unix socket
 * files they created), cancels timers, joins pool threads (work still
 * queued runs first) and runs the done callbacks of deferred work, then
 * frees the reactor. em_defer from those callbacks returns -ECANCELED. Not
 * while running; ignored then. Safe in a forked child, also while other
 * threads are busy in libem: nothing is called back, no file is removed,
 * no flag of a shared descriptor changed and no child reaped there. In a
 * child forked from inside a callback (EventMachine's fork_reactor), where
 * the parent's em_run or em_run_once is still on the stack, it is not
 * ignored: every descriptor the reactor holds (sockets, listeners, poller,
 * eventfd, pidfds, pipes, files being sent; not those of em_attach and
 * em_watch, which stay the user's) is let go at once, its number kept open
 * on /dev/null so that nothing the child opens meanwhile takes it; once
 * the callback returns the rest of that turn runs no callback, and that
 * em_run (returning 0) or em_run_once (returning -ECANCELED) frees the
 * reactor as it returns, closing those numbers. Do not use r after the
 * call in either case. Without /dev/null the descriptors are only closed
 * then. NULL is a no-op. */
EM_EXPORT void em_reactor_free(em_reactor *r);

/* The loop's cached monotonic time, in seconds. */
EM_EXPORT double em_now(const em_reactor *r);

/* Connections that have not been unbound yet: stream, datagram, attached,
 * watched and popen connections, outbound ones still connecting included;
 * servers (listening sockets) are not connections. */
EM_EXPORT size_t em_connection_count(const em_reactor *r);

/* "epoll", "poll" or "io_uring": for "auto", the one it took. */
EM_EXPORT const char *em_backend_name(const em_reactor *r);

/* A descriptor that polls readable when em_run_once(r, 0) has I/O to do, for
 * embedding in another loop; combine with em_backend_timeout(). Made on the
 * first call (on epoll, a set holding the reactor's; on io_uring, the ring's
 * own, made again on that call without deferred completions, which would
 * never make it readable), the same for the reactor's life, closed by
 * em_reactor_free. -EMFILE, -ENFILE or -ENOMEM when it cannot be made; the
 * poll backend has none: -EOPNOTSUPP. Not to be called from another
 * thread. */
EM_EXPORT int em_backend_fd(const em_reactor *r);

/* Seconds until the next timer; -1 when there is none; 0 when ticks,
 * scheduled callbacks, writes or closes are pending. */
EM_EXPORT double em_backend_timeout(const em_reactor *r);

/* Limits the number of pending user timers (0: no limit). Lowering it below
 * the current count keeps the existing timers and refuses new ones. */
EM_EXPORT int em_set_max_timers(em_reactor *r, size_t max);

/* Accept at most n connections each time a listener is reported readable
 * (EventMachine's set_simultaneous_accept_count), on every server of r.
 * 0, the default, lets libem choose: one per report while the reactor is
 * idle (what raw epoll servers do; the backlog is reported again next
 * turn), up to 16 while it is busy, and the whole backlog on the poll
 * backend; on io_uring the kernel accepts each connection as it comes (a
 * multishot accept; $EM_URING_ACCEPT=0 polls instead). A count set while
 * a server runs there applies from the next turn: what the kernel had
 * accepted by then is reported all the same. -EINVAL for NULL. */
EM_EXPORT int em_set_accepts_per_event(em_reactor *r, unsigned n);

/* What em_set_accepts_per_event set; 0: libem chooses. */
EM_EXPORT unsigned em_accepts_per_event(const em_reactor *r);

/* Replaces the allocator libem uses for its own memory (OpenSSL keeps its
 * own: see CRYPTO_set_mem_functions). Process-wide; only
 * before any reactor exists (-EBUSY otherwise). All three or none (NULL,
 * NULL, NULL restores malloc/realloc/free); -EINVAL for a partial set. */
EM_EXPORT int em_set_allocator(void *(*malloc_fn)(size_t),
                               void *(*realloc_fn)(void *, size_t),
                               void (*free_fn)(void *));

/* --------------------------------------------------------------- timers */

/* Calls cb(r, arg) once, at or after its deadline: the monotonic clock at
 * the call + seconds (not em_now() + seconds: em_now() may be older than the
 * call). Timers fire in deadline order, equal deadlines in the order they
 * were added, so timers of one delay fire in the order they were added;
 * timers whose delays differ by less than the time between their calls fire
 * in the order of their deadlines, not of their delays. One added from a
 * timer callback fires on a later turn. Returns the timer's id; 0 with errno
 * EINVAL (NULL, negative, NaN or infinite seconds), EAGAIN (max_timers
 * reached) or ENOMEM. */
EM_EXPORT em_timer_id em_add_timer(em_reactor *r, double seconds, em_cb cb, void *arg);

/* Calls cb every interval seconds without drift: the n-th call is due at
 * start + n * interval; calls missed while the loop was busy are skipped, not
 * bunched. It fires at most once a turn: an interval shorter than a turn
 * (down to the smallest double) makes it fire every turn. interval must be
 * > 0. Errors as em_add_timer. */
EM_EXPORT em_timer_id em_add_periodic_timer(em_reactor *r, double interval, em_cb cb,
                                            void *arg);

/* Cancels a timer; safe inside its own callback. -ENOENT if it already fired
 * (one-shot) or was cancelled, -EINVAL for NULL. */
EM_EXPORT int em_cancel_timer(em_reactor *r, em_timer_id id);

/* Pending user timers (periodic ones included). */
EM_EXPORT size_t em_timer_count(const em_reactor *r);

/* Calls cb(r, arg) on the next turn. FIFO; callbacks queued while ticks run
 * wait for the following turn. -EINVAL, -ENOMEM. */
EM_EXPORT int em_next_tick(em_reactor *r, em_cb cb, void *arg);

/* Like em_next_tick, callable from any thread; wakes the reactor. Callbacks
 * still queued when the reactor stops are dropped. -EINVAL, -ENOMEM. */
EM_EXPORT int em_schedule(em_reactor *r, em_cb cb, void *arg);

/* Runs work(arg) on a pool thread, then done(r, arg) on the reactor thread
 * (done may be NULL). A job that finds no idle thread free for it starts
 * one, so up to threadpool_size jobs run at once. -EINVAL, -ENOMEM, -EAGAIN
 * (no thread could start), -ECANCELED (the pool is gone: a done callback run
 * by em_reactor_free). */
EM_EXPORT int em_defer(em_reactor *r, void (*work)(void *arg), em_cb done, void *arg);

/* Calls cb(r, arg) on the reactor thread after signo is delivered to the
 * process (the C handler only sets a flag and wakes the reactor). Several
 * deliveries of one signal before the reactor looks run its callbacks once,
 * as the kernel merges them too; a storm of one signal never hides another.
 * Several handlers per reactor and several reactors per signal are allowed.
 * The handlers are removed, and the disposition found before the first one
 * restored, when the reactor is freed (unless the process has installed
 * another since: that one stays).
 * Handlers belong to the process that added them: a child made by fork()
 * (a pre-fork server's worker) gets the dispositions libem found, so a
 * SIGTERM sent to it terminates it, and may add handlers of its own on a
 * reactor of its own. -EINVAL for a signal that cannot be caught (SIGKILL,
 * SIGSTOP, out of range), a NULL cb, or a reactor inherited through fork()
 * (it is the parent's); -ENOMEM; -EBUSY when more than 8 reactors handle
 * the same signal. A signal the process ignores (SIG_IGN, perhaps inherited
 * from its parent, as nohup does for SIGHUP) is caught all the same: check
 * sigaction(signo, NULL, &old) first to respect it. */
EM_EXPORT int em_add_signal_handler(em_reactor *r, int signo, em_cb cb, void *arg);

/* -------------------------------------------------------------- handler */

typedef struct em_handler {
    /* Right after the connection object exists, before any I/O: the place
     * to set per-connection options (timeouts, an outbound limit, TLS,
     * user data), also for the connections a server accepts. */
    void (*post_init)(em_conn *c);
    /* An outbound connect succeeded. */
    void (*connection_completed)(em_conn *c);
    /* Bytes read, in arbitrary chunks, in order; data is valid only during
     * the call. NULL discards. A connection may get several calls in one
     * turn (on io_uring, one per arrival); after em_pause it gets none
     * until em_resume, even of bytes read before the pause, unless its
     * descriptor goes back to its owner first (em_detach, an attached one
     * closed): bytes already read then come just before unbind. */
    void (*receive_data)(em_conn *c, const char *data, size_t len);
    /* Exactly once per connection, always last. On the peer's clean EOF
     * what was queued is still written first (unless peer_closed is set),
     * then unbind(0). reason: 0 for a local close,
     * a clean EOF, em_detach and reactor shutdown; else ECONNREFUSED,
     * ETIMEDOUT, ECONNRESET, EPIPE, EM_ERESOLVE (em_resolve_error: why),
     * EM_ETLS, EM_ETLS_TRUNCATED, or the failed call's errno. */
    void (*unbind)(em_conn *c, int reason);
    /* TLS (em_start_tls): the handshake completed and the peer was
     * accepted. Data sent before it was queued; it is written now. With
     * TLS 1.3 a client hears that the server refused its certificate only
     * after this: it then unbinds with EM_ETLS. */
    void (*ssl_handshake_completed)(em_conn *c);
    /* TLS: once for each certificate of the chain being verified, root
     * first, leaf last, as PEM (valid during the call); false rejects the
     * peer (unbind with EM_ETLS). Its answer replaces OpenSSL's verdict,
     * which em_tls_preverify_ok gives during the call. */
    bool (*ssl_verify_peer)(em_conn *c, const char *pem);
    void (*proxy_target_unbound)(em_conn *c);
    void (*proxy_completed)(em_conn *c);
    void (*notify_readable)(em_conn *c);
    void (*notify_writable)(em_conn *c);
    /* Outbound data fell to 0 after a write had to wait for the kernel (also
     * just before a close_connection_after_writing that waited for it). It
     * does not run when the kernel took everything at once, which is the
     * common case: a producer that refills only from here must first fill
     * the queue past what the kernel takes (e.g. until em_send_data returns
     * -ENOBUFS under em_set_outbound_limit, or while
     * em_get_outbound_data_size is 0 after a turn, keep sending). */
    void (*outbound_drained)(em_conn *c);
    /* The peer closed its sending side (its FIN; through TLS, its
     * close_notify): nothing more will be read. NULL (the default, as
     * EventMachine): the connection closes once its queued data is written,
     * with unbind(0). Set: it stays open for writing, a half-open
     * connection, until the handler closes it or half-closes it too with
     * em_close_write, after which it closes by itself with unbind(0). Not
     * called when the connection's own FIN has already been sent: both
     * sides have closed, and it closes. A half-open connection with
     * nothing to send does not watch its socket: a reset by the peer shows
     * at the next send (an inactivity timeout bounds the wait). A proxy
     * (em_proxy_incoming_to) passes the FIN on either way. */
    void (*peer_closed)(em_conn *c);
} em_handler;

/* The arg given when the connection was made (a server's arg for accepted
 * connections). */
EM_EXPORT void *em_conn_arg(const em_conn *c);
/* User data; starts NULL. */
EM_EXPORT void *em_conn_user(const em_conn *c);
EM_EXPORT void em_conn_set_user(em_conn *c, void *user);
/* The connection's signature: unique in its reactor, never reused. A pointer
 * is valid until unbind returns; keep the signature to refer to a connection
 * that may be gone. */
EM_EXPORT em_sig em_signature(const em_conn *c);
/* The live connection with that signature; NULL from the moment its unbind
 * begins. */
EM_EXPORT em_conn *em_conn_by_sig(em_reactor *r, em_sig sig);
EM_EXPORT em_reactor *em_conn_reactor(const em_conn *c);
/* The descriptor, for diagnostics (-1 while resolving or closed); do not
 * read, write or close it. */
EM_EXPORT int em_conn_fd(const em_conn *c);
/* True for connections made by em_watch (notify mode). */
EM_EXPORT bool em_is_watch_only(const em_conn *c);

/* ----------------------------------------------------- making connections */

/* Listens on host:port (an IPv4 or IPv6 literal or a name resolved now, on
 * the calling thread; port 0 picks a free port). Accepted connections get h
 * and arg; post_init runs before their first read. SO_REUSEADDR is set;
 * accepted TCP sockets get TCP_NODELAY (libem coalesces writes itself).
 * NULL + errno: EINVAL (NULL host or h, port outside 0..65535), EM_ERESOLVE
 * (the name did not resolve: em_last_resolve_error says why), EADDRINUSE,
 * EACCES, ENOMEM, ... */
EM_EXPORT em_server *em_start_server(em_reactor *r, const char *host, int port,
                                     const em_handler *h, void *arg);

/* Listens on a unix socket at path. A stale socket file (nobody listening) is
 * replaced; a live one is refused with EADDRINUSE, and so is a path holding
 * anything but a socket. ENAMETOOLONG for a path longer than sun_path. */
EM_EXPORT em_server *em_start_unix_server(em_reactor *r, const char *path,
                                          const em_handler *h, void *arg);

/* em_server_opts.v6only: 0 leaves the system's default
 * (net.ipv6.bindv6only, usually off: "::" takes IPv4 clients too, as
 * v4-mapped addresses). */
enum { EM_V6ONLY_DEFAULT = 0, EM_V6ONLY_ON = 1, EM_V6ONLY_OFF = 2 };

/* How em_start_server_opts and em_start_unix_server_opts listen.
 * Zero-initialised means exactly what em_start_server and
 * em_start_unix_server do; a field that does not apply to the kind of
 * server must stay 0. */
typedef struct em_server_opts {
    /* listen(2)'s backlog; 0: 1024 (the kernel caps it at net.core.somaxconn) */
    int backlog;
    /* TCP: SO_REUSEPORT, so that listeners of one user share the port */
    bool reuse_port;
    /* TCP on an IPv6 address: IPV6_V6ONLY, EM_V6ONLY_ON or EM_V6ONLY_OFF */
    int v6only;
    /* unix: the socket file's permission bits (at most 0777); 0: as the
     * umask leaves them */
    unsigned unix_mode;
} em_server_opts;

/* em_start_server with options; opts NULL is em_start_server. With
 * reuse_port set on every listener of a port, the kernel spreads the
 * connections among them (by a hash of the client's address and port):
 * one reactor per thread, each with its own listener, uses every core.
 * Every listener of the port must set it, and belong to the same user:
 * one without it, or one joining a listener without it, fails with
 * EADDRINUSE. Errors as em_start_server, and EINVAL for a negative backlog, a v6only that is
 * not one of EM_V6ONLY_*, v6only set for an IPv4 address (the IPv4
 * addresses a name resolves to are skipped then) or a unix_mode. */
EM_EXPORT em_server *em_start_server_opts(em_reactor *r, const char *host, int port,
                                          const em_server_opts *opts, const em_handler *h,
                                          void *arg);

/* em_start_unix_server with options; opts NULL is em_start_unix_server.
 * unix_mode is set on the socket file after it is made and before the
 * listener accepts, so no client connects through wider permissions (a
 * connect in between is refused); chmod(2) ignores the umask, so 0666
 * opens the socket to every user. Errors as em_start_unix_server, the
 * errno of chmod(2) (no file is left behind then), and EINVAL for a
 * negative backlog, unix_mode bits outside 0777, reuse_port or v6only. */
EM_EXPORT em_server *em_start_unix_server_opts(em_reactor *r, const char *path,
                                               const em_server_opts *opts,
                                               const em_handler *h, void *arg);

/* Accepts on a listening descriptor you made; libem makes it non-blocking
 * and closes it when the server stops. NULL + errno: EINVAL (not a
 * listening socket), EBADF, EEXIST (a descriptor this reactor already
 * holds), ENOMEM. */
EM_EXPORT em_server *em_attach_server(em_reactor *r, int listen_fd, const em_handler *h,
                                      void *arg);

/* The bound port (useful with port 0); 0 for unix servers; -EINVAL. */
EM_EXPORT int em_server_port(const em_server *s);

/* Stops accepting, closes the listening socket at once (the port is free
 * when this returns) and removes the unix socket file the server created.
 * Accepted connections live on. The server is freed; do not use s again. */
EM_EXPORT int em_stop_server(em_server *s);

EM_EXPORT em_sig em_server_signature(const em_server *s);

/* Connects to host:port. Never blocks: a name is resolved on the pool and
 * every resolved address is tried in turn. Every failure (refused,
 * unreachable, timeout, resolution: EM_ERESOLVE, with em_resolve_error
 * telling why; EAGAIN when no pool thread could start
 * to resolve it, ECANCELED when the pool is gone: a done callback run by
 * em_reactor_free) arrives later as unbind(reason). post_init runs before
 * this returns. NULL + EINVAL for NULL host or h or a port outside
 * 1..65535; ENOMEM; ECANCELED during shutdown. */
EM_EXPORT em_conn *em_connect(em_reactor *r, const char *host, int port,
                              const em_handler *h, void *arg);

/* em_connect from a given local address: bind_host is a literal or a name
 * (resolved on the pool like host; NULL: any), bind_port 0: any. A bind or
 * resolution failure arrives as unbind(errno / EM_ERESOLVE), the latter
 * for either name (em_resolve_error says why). */
EM_EXPORT em_conn *em_bind_connect(em_reactor *r, const char *bind_host, int bind_port,
                                   const char *host, int port, const em_handler *h,
                                   void *arg);

/* Why a name of c's em_connect, em_bind_connect (target or bind host) or
 * em_reconnect did not resolve: getaddrinfo's code, from <netdb.h>
 * (gai_strerror gives its text): EAI_NONAME (no such name), EAI_AGAIN (a
 * temporary failure: a retry may succeed), EAI_NODATA or EAI_ADDRFAMILY
 * (the name has no address, or none of a family asked for), EAI_FAIL (a
 * permanent failure of the name server), EAI_MEMORY, EAI_SYSTEM (the errno
 * is then the unbind reason), ... Set when that unbind comes: with reason
 * EM_ERESOLVE, or ENOMEM for EAI_MEMORY, or the errno for EAI_SYSTEM; valid
 * until unbind returns, and cleared by em_reconnect. 0 when no resolution
 * of c failed (a literal address, a failure of another kind), and for
 * NULL. The codes are glibc's, negative, and not errnos: em_strerror does
 * not know them (EAI_NODATA and EAI_ADDRFAMILY need _GNU_SOURCE). */
EM_EXPORT int em_resolve_error(const em_conn *c);

/* em_resolve_error for the calls that resolve a name on the calling
 * thread, em_start_server (em_start_server_opts) and
 * em_open_datagram_socket: each call sets it,
 * to getaddrinfo's code when its name did not resolve (the call then fails
 * with errno EM_ERESOLVE, ENOMEM for EAI_MEMORY, or EAI_SYSTEM's errno),
 * else to 0. Per thread, like errno, and kept until the next such call. */
EM_EXPORT int em_last_resolve_error(void);

/* Connects to a unix socket. NULL + EINVAL / ENAMETOOLONG for a bad path;
 * a refused or missing socket arrives as unbind(ECONNREFUSED / ENOENT). */
EM_EXPORT em_conn *em_connect_unix(em_reactor *r, const char *path, const em_handler *h,
                                   void *arg);

/* Opens a UDP socket bound to host:port (a literal or a name resolved now;
 * port 0 picks one: em_get_sockname tells). receive_data gets one call per
 * datagram; during it em_get_peername gives the sender and em_send_data
 * replies to it. NULL + errno as em_start_server (em_last_resolve_error
 * too). */
EM_EXPORT em_conn *em_open_datagram_socket(em_reactor *r, const char *host, int port,
                                           const em_handler *h, void *arg);

/* Data mode on a descriptor you own (pipe, socket, tty): receive_data,
 * send_data, close-after-writing and pause work as on a connection. libem
 * never closes it. It is made non-blocking; it is yours again the moment the
 * connection closes (em_close_connection, an error, the peer's EOF once the
 * queue is written; bytes io_uring had read ahead reach receive_data before
 * unbind) or em_detach returns, and then, if libem set O_NONBLOCK,
 * that flag is cleared again and no other is touched (so it may be attached
 * again at once). A reactor freed in a forked child touches no flag: the
 * open file is the parent's too. NULL + errno: EBADF, EEXIST (a descriptor
 * this reactor already holds: attached, watched, a connection's or a
 * server's socket, or its own), EINVAL, ENOMEM. */
EM_EXPORT em_conn *em_attach(em_reactor *r, int fd, const em_handler *h, void *arg);

/* Notify mode: libem reads and writes nothing; it calls notify_readable and
 * notify_writable (level-triggered) while they are switched on with
 * em_set_notify_readable/writable, both off at first. Never closes the fd
 * and never changes its flags. Errors as em_attach. */
EM_EXPORT em_conn *em_watch(em_reactor *r, int fd, const em_handler *h, void *arg);

/* Runs argv[0] (PATH lookup) with argv, its stdin and stdout joined to the
 * connection through a socketpair (stderr is inherited; the child's end is
 * blocking, libem's is not). No descriptor of this process but those two
 * leaks into the child. The child is reaped without blocking (pidfd);
 * unbind runs once its output is closed and it has exited, so em_get_status
 * works in unbind. Closing the connection closes the child's stdin; a child
 * still running 2 s later gets SIGTERM, and SIGKILL 2 s after that (the
 * grace period; em_popen_opts.grace_s sets another). When the
 * reactor stops, children still running get SIGTERM at once; em_reactor_free
 * then waits for them to exit, for at most the rest of that grace
 * period, and SIGKILLs and reaps those still running after it.
 * em_detach hands the child over with its stdio: unbind follows without
 * waiting for it, and from then on libem neither signals nor reaps it (wait
 * for em_get_pid(c) yourself).
 * Without pidfds (Linux before 5.3, valgrind, a seccomp filter: ENOSYS or
 * EPERM), or with EM_PIDFD=0 in the environment when the reactor was made,
 * each child is reaped by waitpid(its pid, WNOHANG), never waitpid(-1), so
 * the host's own children keep their statuses. That is done when SIGCHLD
 * arrives and every 0.5 s besides. The reactor catches SIGCHLD as
 * em_add_signal_handler does, until it is freed, unless the process has a
 * disposition of its own for it (a handler, or SIG_IGN): then the 0.5 s
 * check alone finds the exits, and so it does for reactors beyond the 8
 * that may catch one signal (em_add_signal_handler's -EBUSY), and a
 * reactor's own em_add_signal_handler(SIGCHLD) then fails with -EBUSY.
 * While libem catches it, a child's exit may
 * interrupt the host's calls that SA_RESTART does not restart (EINTR).
 * NULL + errno: EINVAL (NULL or empty argv), the exec errno (ENOENT, EACCES,
 * ...) when the program cannot be executed, EMFILE, ENOMEM. */
EM_EXPORT em_conn *em_popen(em_reactor *r, const char *const argv[], const em_handler *h,
                            void *arg);

/* Where a popen child's stderr goes (em_popen_opts.stderr_mode). */
enum {
    EM_STDERR_INHERIT = 0, /* this process's stderr, as em_popen does */
    EM_STDERR_MERGE = 1,   /* into the connection, with stdout (2>&1) */
    EM_STDERR_CONN = 2,    /* a connection of its own: stderr_handler */
};

typedef struct em_popen_opts {
    /* The child's whole environment, "NAME=value" strings, NULL-terminated;
     * NULL: this process's. argv[0] is still looked up in this process's
     * PATH (as posix_spawnp and glibc's execvpe do), not in envp's. */
    const char *const *envp;
    /* The directory the child starts in; NULL: ours. It is entered before
     * the exec: an argv[0] such as "./prog" is found from there. */
    const char *cwd;
    int stderr_mode; /* EM_STDERR_*; 0 inherits */
    /* EM_STDERR_CONN: the stderr connection's handler and arg */
    const em_handler *stderr_handler;
    void *stderr_arg;
    /* The grace period, in seconds: how long a child still running after
     * its connection closed is given before SIGTERM, then before SIGKILL,
     * and how long em_reactor_free waits for it after a stop's SIGTERM.
     * 0: 2 s. Up to 86400; negative or NaN: EINVAL. */
    double grace_s;
} em_popen_opts;

/* em_popen with options; opts NULL is em_popen. Everything em_popen says
 * holds. With EM_STDERR_CONN the child's stderr is a read-only connection
 * of its own with stderr_handler and stderr_arg: its post_init runs first,
 * then the main connection's (where em_popen_stderr already finds it). Its
 * receive_data gets what the child writes to stderr; its unbind runs at
 * EOF, once every holder of the child's stderr closed it, with reason 0.
 * It is independent of the main connection: the child's exit status, the
 * main unbind and its wait for the child are unaffected by it, closing the
 * main connection leaves it open until that EOF, and em_detach on the main
 * connection hands the child over but not it. Closing it first makes the
 * child's later writes to stderr fail (EPIPE; SIGPIPE, by default fatal,
 * unless the child ignores it). Data sent on it fails it (EPIPE).
 * NULL + errno: as em_popen; EINVAL for a stderr_mode not listed above or
 * EM_STDERR_CONN without stderr_handler; the errno of chdir (ENOENT,
 * ENOTDIR, EACCES, ...) when cwd cannot be entered, reported as the exec
 * errno is (nothing ran, no callback was made). */
EM_EXPORT em_conn *em_popen_with(em_reactor *r, const char *const argv[],
                                 const em_popen_opts *opts, const em_handler *h, void *arg);

/* The stderr connection of a child started with EM_STDERR_CONN, given its
 * main connection; NULL when there is none, or no more (its unbind has
 * begun). */
EM_EXPORT em_conn *em_popen_stderr(const em_conn *c);

/* ---------------------------------------------------- connection methods */

/* Queues a copy of data; flushed at the end of the turn, coalesced with the
 * rest of the turn's data into one writev. Never blocks, never calls back.
 * -ENOTCONN after a close was requested (nothing is sent), -EINVAL, -ENOMEM,
 * -ENOBUFS when an outbound limit is set and len more bytes would pass it
 * (nothing is queued; the connection stays usable). Data sent while
 * connecting is sent once connected. */
EM_EXPORT int em_send_data(em_conn *c, const void *data, size_t len);

/* Bounds the bytes em_send_data may leave queued on c (not yet taken by
 * the kernel): a send that would pass max_bytes fails with -ENOBUFS and
 * queues nothing. 0 (the default, as in EventMachine) means no limit: a
 * peer that never reads then makes the queue grow as long as the sender
 * sends. A proxy into c keeps its own bound (bufsize and one read). Kept
 * across em_reconnect. -EINVAL for NULL, watched and datagram connections
 * (those queue at most 4 MiB anyway); -ENOMEM. */
EM_EXPORT int em_set_outbound_limit(em_conn *c, size_t max_bytes);
EM_EXPORT size_t em_get_outbound_limit(const em_conn *c);

/* Closes the connection: at once, dropping unsent data (after_writing false),
 * or once every queued byte is written (true). unbind runs later, never
 * inside this call. A later immediate close upgrades an after-writing one.
 * Idempotent: 0 when already closing. */
EM_EXPORT int em_close_connection(em_conn *c, bool after_writing);
EM_EXPORT int em_close_connection_after_writing(em_conn *c);

/* Half-close: sends FIN after the queued data; reading goes on and send_data
 * returns -ENOTCONN. -ENOTSOCK for non-sockets. Once the peer has closed
 * its side too (see peer_closed in em_handler), the connection closes with
 * unbind(0). */
EM_EXPORT int em_close_write(em_conn *c);

/* Files. (SIGPIPE: sendfile and splice cannot be told not to raise it, so
 * in a turn that writes a file, or a splicing proxy's pipe, libem blocks
 * SIGPIPE in its thread until the turn's writes are done and discards one
 * they raised; a write of the user's to a dead socket or pipe in that turn
 * fails with EPIPE then instead of raising it. Dispositions are never
 * changed.) The file takes its place in the outbound queue, in order with the
 * data sent before and after it, and is written from the file as the peer
 * reads (sendfile(2) on plain sockets, a buffer at a time through TLS): it
 * is never held in memory, and a slow reader makes libem read no further
 * ahead. The file is opened by the call and read as it goes: its size is
 * taken at the call; a file that has shrunk by the time its end is written
 * fails the connection with EIO (the peer was promised those bytes); bytes
 * appended later are not sent. Its unsent bytes count in
 * em_get_outbound_data_size and against em_set_outbound_limit's bound for
 * later em_send_data calls; a close after writing waits for them.
 *
 * em_send_file_data: the whole file, any size. 0, or -errno with nothing
 * queued: -EINVAL (NULL, a datagram or watched connection, a file that is
 * not a regular file), -EISDIR, -ENOENT, -EACCES and the other errors of
 * open(2), -ENOTCONN after a close was requested, -ENOMEM. */
EM_EXPORT int em_send_file_data(em_conn *c, const char *path);

/* Flag of em_stream_file_data: the file goes as HTTP/1.1 chunked encoding
 * (RFC 9112): one chunk with its bytes, then the last chunk, 0 CRLF CRLF
 * (for an empty file, the last chunk alone). */
#define EM_HTTP_CHUNKS 1u

/* em_stream_file_data: the same, and done(c, err, arg) (may be NULL) is
 * called exactly once, never inside a libem call the handler made (it runs
 * after the flush that wrote the file, like outbound_drained): err 0 once
 * the whole file has been written to the socket, or a positive errno:
 * ECANCELED when the connection closed first, or the error that failed it
 * while the file was queued (EIO for a file that shrank, ECONNRESET...).
 * For a closed connection done runs just before unbind, where unbind runs
 * (in em_reactor_free too), and em_reconnect is refused there. The calls of
 * several files come in the order the files were queued. Errors as
 * em_send_file_data, and -EINVAL for unknown flags; after an error done is
 * never called. */
EM_EXPORT int em_stream_file_data(em_conn *c, const char *path, unsigned flags,
                                  void (*done)(em_conn *c, int err, void *arg), void *arg);

/* em_stream_file_data for a file the caller opened (say with openat2 and
 * RESOLVE_BENEATH, so that the file checked is the file sent): the whole
 * file from offset 0, up to its size at the call. On success libem owns
 * fd and has closed it by the time done is called; on an error (-EINVAL for a
 * negative fd or one that is not a regular file, -EISDIR, the others as
 * em_stream_file_data) the caller keeps it. */
EM_EXPORT int em_stream_file_fd(em_conn *c, int fd, unsigned flags,
                                void (*done)(em_conn *c, int err, void *arg), void *arg);

/* Removes the connection from the reactor without closing its descriptor
 * and returns the descriptor; unsent data is dropped and unbind(0) follows.
 * Bytes that had already left the socket (io_uring reads ahead) reach
 * receive_data before that unbind; the descriptor has the rest. -ENOTCONN
 * when already closing or still resolving; -ENOMEM. */
EM_EXPORT int em_detach(em_conn *c);

/* 0 when healthy, else the error that is closing the connection. */
EM_EXPORT int em_error(const em_conn *c);

/* Bytes queued and not yet written to the kernel. */
EM_EXPORT size_t em_get_outbound_data_size(const em_conn *c);

/* The peer's / local address. -ENOTCONN while resolving or connecting,
 * -EINVAL for NULL arguments, else the errno of getpeername/getsockname. */
EM_EXPORT int em_get_peername(const em_conn *c, struct sockaddr_storage *ss,
                              socklen_t *len);
EM_EXPORT int em_get_sockname(const em_conn *c, struct sockaddr_storage *ss,
                              socklen_t *len);

/* getsockopt/setsockopt on the connection's socket; -errno on failure. */
EM_EXPORT int em_get_sock_opt(em_conn *c, int level, int opt, void *val, socklen_t *len);
EM_EXPORT int em_set_sock_opt(em_conn *c, int level, int opt, const void *val,
                              socklen_t len);

/* A paused connection neither reads nor writes (queued data waits); pausing
 * inside receive_data stops delivery at once. Timeouts keep running.
 * -ENOTCONN on a closing connection. */
EM_EXPORT int em_pause(em_conn *c);
EM_EXPORT int em_resume(em_conn *c);
EM_EXPORT bool em_is_paused(const em_conn *c);

/* An outbound connect (resolution included) not completed within this many
 * seconds unbinds with ETIMEDOUT. Default 20.0; 0 means no limit. -EINVAL
 * for negative or NaN. */
EM_EXPORT double em_get_pending_connect_timeout(const em_conn *c);
EM_EXPORT int em_set_pending_connect_timeout(em_conn *c, double s);

/* Closes the connection with ETIMEDOUT when no byte was read or written for
 * this many seconds. Default 0.0: none. -EINVAL for negative or NaN. */
EM_EXPORT double em_get_comm_inactivity_timeout(const em_conn *c);
EM_EXPORT int em_set_comm_inactivity_timeout(em_conn *c, double s);

/* Seconds since the last byte was read or written. */
EM_EXPORT double em_get_idle_time(const em_conn *c);

/* Proxying (EventMachine's proxy_incoming_to): from then on the bytes read
 * from `from` are sent to `to` without calling from's receive_data.
 * Between two plain sockets (TCP or unix) they never enter user space:
 * splice(2) moves them through a pipe, taken from a pool of at most 16
 * idle pipes per reactor while bytes are in flight and given back once
 * they are written, so an idle pair holds no extra descriptor. Where splice
 * cannot serve (TLS on either side, a descriptor that is not a socket, a
 * paused target), the bytes go from the
 * read buffer without a copy when the target's socket takes them; the two
 * ways share to's queue and keep the order. EM_SPLICE=0 in the environment
 * (read by em_reactor_new) turns splicing off. When from's peer closes its
 * side, `to` gets a FIN (em_close_write) after the bytes proxied before it
 * (see peer_closed in em_handler to keep `from` open meanwhile); a target
 * that is not a socket (a pipe) gets none.
 * Backpressure is the proxy's own: while more than `bufsize`
 * bytes (0: 1 MiB) wait in to's outbound queue (in memory or in its pipe),
 * or its pipe is full, `from` is not read; this
 * hold does not show in em_is_paused and never overrides em_pause or
 * em_resume. After `length` bytes (0: no limit) the proxy stops,
 * from's proxy_completed runs and the rest goes to receive_data (the rest of
 * that read is delivered even if proxy_completed paused `from`, having been
 * read already; an immediate close or em_detach there drops it). If `to`
 * unbinds first, the proxy stops, and after to's unbind from's
 * proxy_target_unbound runs once; later bytes go to receive_data, and so do
 * bytes a closing target can no longer take. `to` may still be
 * connecting. Nothing is lost, duplicated or reordered. Calling it again
 * replaces the proxy and restarts the count. Errors: -EINVAL (NULL, from == to, a datagram or watched
 * connection), -ENOTCONN (either is closing, or `to` was asked to close
 * after writing or to shut its writing side), -EBUSY (`to` is already the
 * target of another connection's proxy), -ENOMEM. */
EM_EXPORT int em_proxy_incoming_to(em_conn *from, em_conn *to, size_t bufsize, size_t length);
/* Stops from's proxy (if any) and releases its hold; later bytes go to
 * receive_data. 0, or -EINVAL for NULL. */
EM_EXPORT int em_stop_proxying(em_conn *from);
/* Bytes proxied since the last em_proxy_incoming_to; kept after the proxy
 * stops. 0 for NULL or a connection never proxied. */
EM_EXPORT size_t em_get_proxied_bytes(const em_conn *from);

/* Connects the same object again, to host:port, with a new signature: it
 * then gets connection_completed or another unbind. Meant for unbind, as
 * EventMachine programs use it to retry; on a connection that is not being
 * unbound it returns -EISCONN. -EINVAL for a bad host or port. TLS does not
 * carry over: call em_start_tls again after it. */
EM_EXPORT int em_reconnect(em_conn *c, const char *host, int port);
/* em_reconnect to a unix socket; -EINVAL / -ENAMETOOLONG for a bad path. */
EM_EXPORT int em_reconnect_unix(em_conn *c, const char *path);

/* TCP keepalive. Zero leaves the system default for that value; negative is
 * -EINVAL. */
EM_EXPORT int em_enable_keepalive(em_conn *c, int idle_s, int interval_s, int count);
EM_EXPORT int em_disable_keepalive(em_conn *c);

EM_EXPORT int em_get_stats(const em_conn *c, em_conn_stats *st);

/* ------------------------------------------------------------------ TLS */

enum { EM_TLS_1_2 = 0x0303, EM_TLS_1_3 = 0x0304 };

/* How em_start_tls sets up TLS. Zero-initialised means: a client that
 * verifies the server against the system trust store and the name it
 * connected to, TLS 1.2 or 1.3, modern ciphers, no ALPN. The strings are
 * read during the call only. */
typedef struct em_tls_opts {
    const char *cert_chain_file;  /* PEM chain, leaf first */
    const char *private_key_file; /* PEM */
    const char *cert_chain_pem;   /* the same, from memory (NUL-terminated) */
    const char *private_key_pem;
    const char *private_key_pass; /* passphrase of an encrypted key */
    bool verify_peer;             /* server: ask for and verify a client certificate */
    bool fail_if_no_peer_cert;    /* server, with verify_peer: refuse a client without one */
    bool insecure;                /* client: verify nothing (EventMachine's old default) */
    const char *ca_file;          /* trust anchors (PEM); NULL: the system store */
    const char *sni_hostname;     /* client: SNI and the name checked; NULL: em_connect's host */
    const char *cipher_list;      /* TLS 1.2 ciphers (OpenSSL syntax); NULL: ECDHE with AEADs */
    const char *ciphersuites;     /* TLS 1.3 suites; NULL: OpenSSL's default */
    const char *alpn;             /* comma-separated protocols, in order of preference */
    int min_version;              /* EM_TLS_1_2 (0 means the same) or EM_TLS_1_3 */
    int max_version;              /* 0: the highest (TLS 1.3) */
    const char *ecdh_curve;       /* key-exchange groups, e.g. "X25519:prime256v1" */
    const char *dhparam_file;     /* finite-field DH parameters; NULL: automatic */
} em_tls_opts;

/* Starts TLS on a stream connection (TCP or unix; accepted, outbound or
 * attached), at any time: usually in post_init or connection_completed. An
 * accepted connection is the server, any other the client. Bytes queued
 * before the call go out as they are (a STARTTLS reply); bytes sent after
 * it are encrypted and wait for the handshake; received bytes are
 * decrypted before receive_data sees them, up to a record (16 KiB) or more
 * per call. opts may be NULL (a verifying client); it is copied.
 *
 * Secure by default: a client verifies the server's chain against ca_file
 * or the system store and its name (sni_hostname, else the host given to
 * em_connect, a name or an IP address) unless insecure is set, sends SNI for
 * names, refuses TLS below 1.2 and renegotiation. A unix or attached client
 * has no host name: it needs sni_hostname, or insecure (-EINVAL otherwise).
 * A server needs a certificate and its key. A handshake not complete within
 * the pending-connect timeout (em_set_pending_connect_timeout, 20 s by
 * default, counted from this call) unbinds with ETIMEDOUT.
 *
 * After it, em_close_connection_after_writing and em_close_write send
 * close_notify after the last byte (then the FIN), and a peer that closes
 * without close_notify unbinds with EM_ETLS_TRUNCATED, never 0. A failed
 * handshake or verification unbinds with EM_ETLS; em_tls_error_string
 * says why. em_get_outbound_data_size counts plaintext bytes.
 *
 * Configurations are cached per reactor: connections with equal options
 * share one OpenSSL context (and a client's session tickets, for
 * resumption); a certificate or key file changed on disk makes a new one.
 *
 * Errors, with nothing started: -EM_ETLS for a certificate, key, CA or DH
 * file that cannot be loaded (missing, bad PEM, wrong passphrase, a key
 * that does not match its certificate); -EINVAL for NULL, a connection that
 * is not a stream socket, unknown ciphers, suites, groups or versions, a bad
 * ALPN list, a server without a certificate, a client without a name;
 * -EISCONN when TLS was already started; -ENOTCONN on a closing connection;
 * -EBUSY while a file, or a splicing proxy's bytes, sent before it are
 * still queued (the bytes before the handshake go as they are, from
 * memory); -ENOTSUP when libem was built without OpenSSL;
 * -ENOMEM. */
EM_EXPORT int em_start_tls(em_conn *c, const em_tls_opts *opts);

/* During ssl_verify_peer: OpenSSL's verdict on the certificate being shown
 * (chain and validity; for the leaf, the host name too). false elsewhere. */
EM_EXPORT bool em_tls_preverify_ok(const em_conn *c);

/* After the handshake: the PEM of the peer's certificate, the cipher's
 * name, the protocol ("TLSv1.3"), each a new string the caller releases
 * with free(); NULL without TLS, before the handshake, or with no
 * certificate. em_get_cipher_bits: the cipher's secret bits, or -1. */
EM_EXPORT char *em_get_peer_cert(const em_conn *c);
EM_EXPORT char *em_get_cipher_name(const em_conn *c);
EM_EXPORT char *em_get_cipher_protocol(const em_conn *c);
EM_EXPORT int em_get_cipher_bits(const em_conn *c);

/* Server side: the name the client asked for with SNI; NULL if none. The
 * protocol ALPN agreed on; NULL if none. Both valid until unbind returns. */
EM_EXPORT const char *em_get_sni_hostname(const em_conn *c);
EM_EXPORT const char *em_get_alpn_protocol(const em_conn *c);

/* Client side, after the handshake: whether the session was resumed from
 * a ticket of an earlier connection to the same server. */
EM_EXPORT bool em_tls_session_reused(const em_conn *c);

/* Why TLS failed on c, as text: the handshake or verification error that
 * unbinds it with EM_ETLS or EM_ETLS_TRUNCATED (valid until unbind
 * returns), or why the last em_start_tls on it was refused. NULL if none. */
EM_EXPORT const char *em_tls_error_string(const em_conn *c);

/* Sends one datagram to host:port (address literals only: the reactor never
 * waits for a name). It goes out at once; when the kernel refuses for now,
 * it waits in order behind the others (at most 4 MiB queued: -ENOBUFS).
 * -EMSGSIZE for a datagram too large, -EINVAL for a bad address or a
 * non-datagram connection, -ENOTCONN after a close. */
EM_EXPORT int em_send_datagram(em_conn *c, const void *data, size_t len, const char *host,
                               int port);

/* Watch mode only (else -EINVAL): switch notify_readable / notify_writable
 * calls on or off; allowed inside those callbacks. */
EM_EXPORT int em_set_notify_readable(em_conn *c, bool on);
EM_EXPORT bool em_is_notify_readable(const em_conn *c);
EM_EXPORT int em_set_notify_writable(em_conn *c, bool on);
EM_EXPORT bool em_is_notify_writable(const em_conn *c);

/* The popen child's pid, else -1. */
EM_EXPORT pid_t em_get_pid(const em_conn *c);
/* The popen child's waitpid status in *wstatus; -EAGAIN until it exited;
 * -ECHILD when its status cannot be known: the host's own waitpid reaped it
 * first, or it was handed over by em_detach before it exited; -EINVAL for
 * other connections. */
EM_EXPORT int em_get_status(const em_conn *c, int *wstatus);

/* ------------------------------------------ framing (BufferedTokenizer) */

typedef struct em_tokenizer em_tokenizer;

/* A tokenizer splitting a byte stream on delimiter (any non-empty string,
 * copied). size_limit 0: no limit. NULL + errno EINVAL for a NULL or empty
 * delimiter, ENOMEM. */
EM_EXPORT em_tokenizer *em_tokenizer_new(const char *delimiter, size_t size_limit);

/* Feeds len bytes; calls token(arg, tok, len) for each complete token, in
 * order, without its delimiter (a delimiter may be split across calls; tok
 * is valid only during the call; token may be NULL to count). Returns how
 * many tokens it delivered. A token longer than size_limit makes it return
 * -EMSGSIZE: that token is discarded up to and including its delimiter (also
 * across later calls) and the tokens after it are still delivered. -EINVAL,
 * -ENOMEM. Not reentrant: do not feed or free t from inside token. */
EM_EXPORT int em_tokenizer_extract(em_tokenizer *t, const char *data, size_t len,
                                   void (*token)(void *arg, const char *tok, size_t len),
                                   void *arg);

/* Frees t and any incomplete token; NULL is a no-op. */
EM_EXPORT void em_tokenizer_free(em_tokenizer *t);

/* ------------------------------------------- framing (LineText2: lines and blocks) */

/* EventMachine's LineText2: lines split on a delimiter, switchable to
 * binary blocks and back, for protocols whose headers are lines and whose
 * bodies are not (an HTTP body after Content-Length, a STOMP frame). The
 * mode may be switched from inside a callback, and the switch applies to
 * the very next byte: the rest of the data already fed is parsed in the
 * new mode, nothing lost or seen twice. Binary bytes are never buffered:
 * they are delivered in place as they are fed, so the memory held is
 * bounded by max_line (plus the delimiter). Differences from EventMachine:
 * an over-long line is an error, not a silent growth; a block is
 * delivered in pieces (the last with end set), not whole; a block of 0
 * bytes is an empty block, not line mode; raw mode (EventMachine's
 * set_binary_mode without a size) has a function of its own. Not
 * thread-safe; tied to no reactor. */
typedef struct em_linetext em_linetext;

typedef struct em_linetext_cbs {
    /* A complete line, without its delimiter; line is valid only during
     * the call. NULL discards lines. */
    void (*line)(em_linetext *t, void *arg, const char *line, size_t len);
    /* Bytes of a binary block (em_linetext_set_binary) or of raw mode
     * (em_linetext_set_raw), in order, in pieces as they were fed; data is
     * valid only during the call. end is true on the last piece of a
     * block (len 0 for an empty block), and t is already back in text
     * mode then, so the callback may chain another block; in raw mode end
     * is always false. NULL discards them. */
    void (*binary)(em_linetext *t, void *arg, const char *data, size_t len, bool end);
    /* A line was dropped: err is -EMSGSIZE (longer than max_line) or
     * -ENOMEM (it could not be stored). Called as soon as that is known,
     * before any byte after it is parsed (the rest of the line is still
     * discarded as it comes), so that a handler can stop there: free t,
     * close the connection. Switching to binary or raw mode from it is
     * refused (-EBUSY): the line may not be over. NULL: the feed's return
     * value tells. */
    void (*error)(em_linetext *t, void *arg, int err);
} em_linetext_cbs;

/* A parser in text mode splitting on delimiter (a non-empty string,
 * copied) with lines of at most max_line bytes (without the delimiter;
 * SIZE_MAX for no limit, and then no bound on what a peer's endless line
 * makes it hold). cbs is copied; its functions get t and arg.
 * NULL + errno EINVAL for a NULL or empty delimiter, max_line 0 or NULL
 * cbs; ENOMEM. */
EM_EXPORT em_linetext *em_linetext_new(const char *delimiter, size_t max_line,
                                       const em_linetext_cbs *cbs, void *arg);

/* Parses len bytes in the current mode, calling back for each line and
 * each binary piece, in order; callbacks may switch the mode, and may free
 * t. Bytes of an incomplete line are kept (at most max_line + the
 * delimiter) until a later call completes it; nothing else is kept and,
 * once the buffer has grown to the longest line, nothing is allocated.
 * Returns 0, or after parsing all of data: -EMSGSIZE when a line longer
 * than max_line was dropped (discarded up to and including its delimiter,
 * across later calls too; the lines after it are delivered), -ENOMEM when
 * a line could not be stored (dropped the same way); -ECANCELED when a
 * callback freed t (the rest of data is dropped; t is gone). -EINVAL for
 * NULL t or NULL data with len > 0; -EBUSY from inside a callback (feeding
 * is not reentrant). */
EM_EXPORT int em_linetext_feed(em_linetext *t, const char *data, size_t len);

/* Binary mode for a block of the next n bytes: delivered to cbs.binary in
 * pieces, the last with end set, after which t is back in text mode. From
 * a callback it applies from the next byte not yet delivered (the rest of
 * the data being fed included); a block already under way is replaced.
 * n == 0 makes an empty block: its end (len 0) is delivered right after
 * the current callback returns, or, called outside a callback, at once,
 * inside this call (which then returns -ECANCELED if that callback freed
 * t). Else 0; -EINVAL for NULL; -EBUSY when an incomplete line is
 * buffered (or the rest of an over-long one being discarded, or called
 * from the error callback): switch from the callback of the line before,
 * which leaves nothing buffered. */
EM_EXPORT int em_linetext_set_binary(em_linetext *t, size_t n);

/* Raw mode: every byte from the next one not yet delivered goes to
 * cbs.binary (end false), each fed chunk as one piece, until
 * em_linetext_set_text or em_linetext_set_binary; a switch from that
 * callback applies after its piece. 0, -EINVAL, -EBUSY as
 * em_linetext_set_binary. */
EM_EXPORT int em_linetext_set_raw(em_linetext *t);

/* Back to text mode from the next byte not yet delivered; the rest of a
 * block under way is parsed as lines. A no-op in text mode. 0, -EINVAL. */
EM_EXPORT int em_linetext_set_text(em_linetext *t);

/* Frees t and any incomplete line; NULL is a no-op. From inside a callback
 * t is freed when the callback returns, and the feed (or set_binary) that
 * called it returns -ECANCELED without parsing further. */
EM_EXPORT void em_linetext_free(em_linetext *t);

#ifdef __cplusplus
}
#endif
#endif /* EM_H */
