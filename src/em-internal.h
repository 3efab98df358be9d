/* The contract between libem's source files. Nothing here is public. */
#ifndef EM_INTERNAL_H
#define EM_INTERNAL_H

#include "em.h"

#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/uio.h>

#define EM_UNUSED(x) ((void)(x))
#define EM_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ------------------------------------------------------------ allocator */
void *em__malloc(size_t n);
void *em__calloc(size_t n, size_t size);
void *em__realloc(void *p, size_t n);
/* Grows a byte buffer of capacity *cap to hold n bytes, doubling from 64;
 * -ENOMEM leaves it as it was. */
int em__bytes_reserve(char **buf, size_t *cap, size_t n);
void em__free(void *p);
char *em__strdup(const char *s);
void em__allocator_pin(int delta); /* counts live reactors */

/* ------------------------------------------------------------- poller */
enum { EM_EV_READ = 1, EM_EV_WRITE = 2, EM_EV_ERROR = 4, EM_EV_HUP = 8, EM_EV_RECV = 16,
       EM_EV_SENT = 32 };
enum { EM_IO_CONN = 1, EM_IO_SERVER, EM_IO_WAKE, EM_IO_CHILD };

/* Everything registered with the poller starts with this. */
typedef struct em_io {
    int fd;
    uint8_t type;      /* EM_IO_* */
    uint8_t interest;  /* EM_EV_READ|EM_EV_WRITE as registered */
    bool registered : 1;
    bool dead : 1;     /* closed during this turn: skip its pending events */
    bool armed : 1;    /* io_uring: a poll request of its is in the kernel */
    bool receiving : 1; /* io_uring: a receive request of its is */
    bool capped : 1;   /* io_uring: that receive ends after a set number of bytes */
    uint8_t rgen : 3;  /* io_uring: which receive request is its current one */
    uint8_t gen;       /* io_uring: which poll request is its current one */
} em_io;

/* With EM_EV_RECV the backend did the call itself: for a connection it
 * read (see backend_reads): res bytes at data, 0 for the peer's FIN, or a
 * negative errno; for a listener it accepted (see backend_accepts): res
 * the new descriptor, or a negative errno as accept4 would give. With
 * EM_EV_SENT it sent for a connection (see backend_sends): res bytes of
 * its queue went, or a negative errno (-EAGAIN: the socket was full). */
typedef struct em_event {
    em_io *io;
    unsigned events;
    int res;
    const char *data;
} em_event;

typedef struct em_backend {
    const char *name;
    int (*init)(em_reactor *r);
    void (*destroy)(em_reactor *r);
    int (*add)(em_reactor *r, em_io *io, unsigned interest);
    int (*modify)(em_reactor *r, em_io *io, unsigned interest);
    int (*del)(em_reactor *r, em_io *io);
    /* Fills out[0..n) and returns n, or a negative errno. */
    int (*wait)(em_reactor *r, int timeout_ms, em_event *out, int max);
    int (*fd)(em_reactor *r);
    /* Optional (io_uring): its requests hold a reference to the files they
     * watch, so a descriptor removed from it is not let go of by close()
     * until the removal reaches the kernel. settle: every removal queued
     * reaches it now, before a port is bound again or a descriptor handed
     * back to the user. flush: what the turn queued is handed to the kernel
     * at its end, for a host that waits on em_backend_fd instead. */
    void (*settle)(em_reactor *r);
    void (*flush)(em_reactor *r);
    /* Optional (see backend_sends). send: queues a send of iov[0..cnt) on
     * io's socket, made by the kernel as sends_submit submits it and never
     * later (MSG_DONTWAIT), so the bytes and the descriptor need to stay
     * only until then; more: more bytes follow at once (MSG_MORE). The
     * bytes it will send (its first buffer only, short of room for all),
     * or -ENOMEM with no room to queue. sends_submit: submits what is queued
     * and fills out[0..max) with the results of the sends (EM_EV_SENT
     * events; -ECANCELED for one the kernel never took), returning how many. */
    ssize_t (*send)(em_reactor *r, em_io *io, const struct iovec *iov, int cnt, bool more);
    int (*sends_submit)(em_reactor *r, em_event *out, int max);
    /* Closing a descriptor ends its registration (epoll, once no other
     * descriptor refers to the file): em__io_forget then needs no call. */
    bool close_unregisters;
    /* A wait costs time for every registered descriptor (poll), not only
     * the ready ones: a server then empties its backlog per report. */
    bool wait_scans_all;
} em_backend;

/* What em_backend_names and em_strerror(EM_EBACKEND) list. */
#ifdef EM_HAVE_URING
#define EM__BACKEND_NAMES "epoll poll io_uring auto"
#else
#define EM__BACKEND_NAMES "epoll poll"
#endif

extern const em_backend em__backend_epoll;
extern const em_backend em__backend_poll;
extern const em_backend em__backend_uring;

int em__io_watch(em_reactor *r, em_io *io, unsigned interest);
void em__io_unwatch(em_reactor *r, em_io *io);
/* A descriptor libem made (io->fd) joins the reactor: held and watched;
 * on failure neither, and the caller closes it. em__io_close undoes it all
 * and closes the descriptor (fd -1 after; nothing for -1). */
int em__io_open(em_reactor *r, em_io *io, unsigned interest);
void em__io_close(em_reactor *r, em_io *io);
/* io's descriptor is about to be closed by libem: unwatch it, with no system
 * call where the close itself does that. */
void em__io_forget(em_reactor *r, em_io *io);
/* Removals from the poller made so far are complete (see em_backend.settle). */
void em__io_settle(em_reactor *r);
/* Whether a connection with this signature may share its socket with a
 * process forked since it was made. */
bool em__maybe_forked_with(em_reactor *r, em_sig sig);
/* release.c: em_reactor_free in a forked child during an inherited turn:
 * every descriptor is let go (its number kept by /dev/null), nothing more
 * is called back, and the outermost em_run/em_run_once frees the memory. */
void em__release_inherited(em_reactor *r);
void em__reactor_free_now(em_reactor *r);
/* Calls fn for every io registered with the poller (epoll rebuilds its set
 * with it when a registration outlived its connection). */
void em__io_each_registered(em_reactor *r, void (*fn)(em_io *io, void *ctx), void *ctx);

/* fdset.c: the descriptors the reactor holds, for em_attach's EEXIST; a
 * bit each. Claims and releases are on every connection's path: inline,
 * with only the growth of the set out of line. */
int em__fd_claim_grow(em_reactor *r, int fd); /* 0 or -ENOMEM */
static inline int em__fd_claim(em_reactor *r, int fd);
static inline void em__fd_release(em_reactor *r, int fd);
bool em__fd_held(const em_reactor *r, int fd);
void em__fds_free(em_reactor *r);

/* --------------------------------------------------------------- timers */
typedef struct em_heap_entry {
    double deadline;
    uint64_t seq;  /* ties fire in insertion order */
    uint32_t slot;
} em_heap_entry;

typedef struct em_timer_slot {
    double interval; /* > 0: periodic */
    em_cb cb;
    void *arg;
    uint32_t gen;
    uint32_t heap_index; /* EM_NOT_IN_HEAP while firing or free */
    uint32_t next_free;
    bool live;
    bool internal; /* libem's own: not counted, not limited */
} em_timer_slot;

#define EM_NOT_IN_HEAP UINT32_MAX

typedef struct em_timers {
    em_heap_entry *heap;
    uint32_t heap_len, heap_cap;
    em_timer_slot *slots;
    uint32_t slots_len, slots_cap;
    uint32_t free_head; /* UINT32_MAX: none */
    uint64_t seq;
    size_t user_count;
    size_t max_user;
} em_timers;

void em__timers_init(em_timers *t);
void em__timers_destroy(em_timers *t);
/* deadline: an em__clock() time */
em_timer_id em__timer_add(em_reactor *r, double deadline, double interval, em_cb cb, void *arg,
                          bool internal);
int em__timer_cancel(em_reactor *r, em_timer_id id);
void em__timers_run(em_reactor *r);
double em__timers_next(const em_timers *t); /* deadline of the first, or -1 */
void em__timers_clear(em_reactor *r);

/* ---------------------------------------------------------- callbacks */
typedef struct em_callback {
    struct em_callback *next;
    em_cb cb;
    void *arg;
} em_callback;

typedef struct em_cb_queue {
    em_callback *head, *tail;
} em_cb_queue;

void em__cbq_push(em_cb_queue *q, em_callback *c);
em_callback *em__cbq_take_all(em_cb_queue *q);
void em__cbq_free_list(em_callback *c);

/* ----------------------------------------------------------- thread pool */
typedef struct em_job {
    struct em_job *next;
    void (*work)(void *arg);
    em_cb done;
    void *arg;
} em_job;

typedef struct em_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    em_job *queue_head, *queue_tail;
    pthread_t *threads;
    size_t queued; /* jobs in the queue */
    unsigned size, started, idle;
    bool stopping;
    bool closed; /* destroyed: no more jobs (reactor thread only) */
} em_pool;

int em__pool_init(em_pool *p, unsigned size);
int em__pool_submit(em_reactor *r, em_job *job);
void em__pool_destroy(em_reactor *r, em_pool *p);

/* -------------------------------------------------------- write queue */
/* Outbound bytes: a chain of chunks. Standard-size chunks come from and go
 * back to the reactor's cache, so steady-state sending does not allocate. The
 * queue itself is one pointer; its totals live in its first chunk, so a
 * connection with nothing to send pays 8 bytes for it. */
typedef struct em_chunk {
    struct em_chunk *next;
    char *base;              /* data, or borrowed bytes of a read buffer */
    size_t head, tail, cap;
    struct em_chunk *q_tail; /* first chunk only: the queue's last chunk */
    size_t q_bytes;          /* first chunk only: bytes queued */
    char data[];
} em_chunk;

/* Two sizes, each with its own cache in the reactor: small chunks for the
 * small messages most protocols send (so a turn in which a thousand
 * connections reply holds a thousand small chunks, not a thousand large
 * ones), large ones for bulk data; a big send becomes a chain of large
 * chunks. A borrowed chunk holds no bytes of its own: the bare header,
 * cached apart. */
#define EM_CHUNK_SMALL (512 - sizeof(em_chunk))
#define EM_CHUNK_LARGE (16 * 1024 - sizeof(em_chunk))
#define EM_CHUNK_CACHE_BYTES (2u << 20) /* per size, and for the bare ones */

typedef struct em_chunk_cache {
    em_chunk *head;
    unsigned len, max;
} em_chunk_cache;

typedef struct em_outq {
    em_chunk *head;
} em_outq;

/* A feed: queued bytes that are not in memory but behind a descriptor (a
 * file being sent, the pipe of a splicing proxy), written by the kernel
 * without a copy. Its place in the queue is a chunk whose base is NULL,
 * whose head counts the bytes written and whose tail the bytes it holds;
 * the queue's byte count includes them, so everything that waits for the
 * queue (a close after writing, em_close_write, a proxy's hold) waits for
 * them too. One feed may stand in several chunks (a pipe refilled after
 * other bytes were queued); it hears of each chunk's end. */
typedef struct em_feed em_feed;
typedef struct em_feed_ops {
    /* Writes up to *max bytes from position pos to fd, lowering *max to
     * what it tried (a file's framing is not its to send): bytes written
     * (0 if it has none to give: an error, say why in errno), or -1 with
     * errno. */
    ssize_t (*send)(em_feed *f, size_t pos, int fd, size_t *max, bool more);
    /* The same bytes into memory, for writers that need them there (TLS,
     * a descriptor the kernel cannot write from a feed). */
    ssize_t (*read)(em_feed *f, size_t pos, char *buf, size_t max);
    /* One of its chunks left the queue: written whole, or dropped. */
    void (*release)(em_feed *f, em_reactor *r, bool written);
} em_feed_ops;
struct em_feed {
    const em_feed_ops *ops;
};

static inline size_t em__outq_bytes(const em_outq *q) { return q->head ? q->head->q_bytes : 0; }
int em__outq_append(em_reactor *r, em_outq *q, const void *data, size_t len);
int em__outq_borrow(em_reactor *r, em_outq *q, const char *data, size_t len);
int em__outq_own(em_reactor *r, em_outq *q); /* copy borrowed bytes; -ENOMEM */
/* The bytes in memory up to the first feed; *feed_next (may be NULL): a
 * feed follows them. */
int em__outq_iov(const em_outq *q, struct iovec *iov, int max, bool *feed_next);
/* Copies the first bytes of the queue, up to max and the first feed, into
 * dst: how many. */
size_t em__outq_copy(const em_outq *q, char *dst, size_t max);
/* Feeds: queued after what is queued (all or nothing: -ENOMEM); grown at
 * the end of the queue when its last chunk is f's. */
int em__outq_feed(em_reactor *r, em_outq *q, em_feed *f, size_t len);
bool em__outq_feed_grow(em_outq *q, em_feed *f, size_t len);
bool em__outq_feed_is_last(const em_outq *q, const em_feed *f);
bool em__outq_has_feed(const em_outq *q);
/* The feed at the head of the queue writes what it holds to fd, as
 * em_feed_ops.send; *asked: how much that is. */
ssize_t em__outq_send_feed(const em_outq *q, int fd, bool more, size_t *asked);
/* Up to max bytes of the feed at the head of the queue move into memory
 * ahead of it: 0, or a negative errno (-ENOMEM, the feed's read error;
 * -EIO when it has fewer bytes than it promised). */
int em__outq_materialize(em_reactor *r, em_outq *q, size_t max);
void em__outq_consume(em_reactor *r, em_outq *q, size_t n);
void em__outq_clear(em_reactor *r, em_outq *q);
void em__chunk_cache_free(em_reactor *r);

/* --------------------------------------------------------- connections */
enum em_conn_state {
    EM_CS_RESOLVING = 1, /* waiting for the pool's getaddrinfo */
    EM_CS_CONNECTING,    /* non-blocking connect in flight */
    EM_CS_OPEN,
    EM_CS_CLOSING,       /* on the close list; unbind pending */
    EM_CS_UNBINDING,     /* unbind running */
    EM_CS_REAPING,       /* popen: closed, waiting for the child to exit */
};

enum em_conn_flag {
    EM_CF_PAUSED = 1u << 0,
    EM_CF_CLOSE_AFTER_WRITE = 1u << 1,
    EM_CF_SHUT_WR_PENDING = 1u << 2, /* em_close_write: FIN once drained */
    EM_CF_WR_SHUT = 1u << 3,
    EM_CF_DIRTY = 1u << 4,           /* on the flush list */
    EM_CF_WRITE_WAITED = 1u << 5,    /* kernel refused part: drained fires */
    EM_CF_DETACHED = 1u << 6,        /* do not close the fd */
    EM_CF_OUTBOUND = 1u << 7,        /* made by connect: may reconnect */
    EM_CF_SEND_LISTED = 1u << 8,     /* its queue goes to the backend at the phase's end (sends.c) */
    EM_CF_NO_FD_CLOSE = 1u << 9,
    EM_CF_EOF = 1u << 10,            /* peer closed: no more reads */
    EM_CF_DGRAM = 1u << 11,
    EM_CF_WATCH = 1u << 12,          /* notify mode */
    EM_CF_NOT_SOCKET = 1u << 13,     /* attached pipe or tty: writev, not sendmsg */
    EM_CF_POPEN = 1u << 14,
    EM_CF_NOTIFY_R = 1u << 15,
    EM_CF_NOTIFY_W = 1u << 16,
    EM_CF_RESTORE_FL = 1u << 17,     /* attached: libem set O_NONBLOCK, cleared at hand-back */
    EM_CF_SPAN = 1u << 18,           /* its output is a span of read_buf (borrowers) */
    EM_CF_PROXY = 1u << 19,          /* proxies what it reads (cold->proxy) */
    EM_CF_PROXY_HELD = 1u << 20,     /* not read: its proxy target is full */
    EM_CF_PROXY_TARGET = 1u << 21,   /* a proxy's target (cold->proxy_from) */
    EM_CF_OUT_LIMIT = 1u << 22,      /* em_send_data bounded by cold->out_limit */
    EM_CF_LAYER = 1u << 23,          /* bytes pass through cold->layer (TLS) */
    EM_CF_ACCEPTED = 1u << 24,       /* made by a server's accept */
    EM_CF_LAYER_HELD = 1u << 25,     /* not read: its layer is not ready to */
    EM_CF_MESSAGES = 1u << 26,       /* attached socket of messages: a read takes one whole */
    EM_CF_INPUT_LOST = 1u << 27,     /* bytes read ahead had nowhere to go: fails with ENOMEM */
    EM_CF_SENDING = 1u << 28,        /* sends.c: a send of its queue submitted, its result not yet taken */
    EM_CF_LENT = 1u << 29,           /* its queue holds bytes of a backend's buffer (sends.c) */
};

typedef struct em_connect_state em_connect_state;
typedef struct em_dgram em_dgram;
typedef struct em_layer em_layer;
typedef struct em_child em_child;

/* What most connections never need, kept apart so that an accepted
 * connection with no timeout set stays small: timeouts, the high halves of
 * the byte counters, and the state of the other kinds of connection. */
typedef struct em_cold {
    double inactivity;     /* 0: none */
    double inactivity_set; /* when it was set: idle time counts from here too */
    double connect_timeout;
    em_timer_id inactivity_timer;
    uint32_t in_hi, out_hi; /* bytes_in / bytes_out >> 32 */
    size_t out_limit;       /* em_set_outbound_limit; 0: none */
    struct em_proxy *proxy; /* as a proxy's source, kept for its count */
    struct em_conn *proxy_from; /* as a proxy's target */
    char *host;             /* outbound TCP: the host given (TLS checks it) */
    int resolve_error;      /* getaddrinfo's EAI_ code of the last failed
                               resolution (em_resolve_error); 0: none */
    em_layer *layer;        /* EM_CF_LAYER; or a refused em_start_tls's error */
    em_layer *retired;      /* dropped by em_reconnect in unbind: freed after it */
    struct em_file_stream *files; /* files sent, until their done is called */
    struct em_pipe *pipe;   /* a splicing proxy's bytes queued here wait in it */
    struct em_stash *stash; /* see em__conn_stash */
    union {
        em_connect_state *connect; /* outbound stream, while resolving/connecting */
        em_dgram *dgram;           /* EM_CF_DGRAM */
        em_child *child;           /* EM_CF_POPEN */
    };
} em_cold;

#define EM_DEFAULT_CONNECT_TIMEOUT 20.0

/* Every live connection is in the reactor's signature map, which is also how
 * the reactor finds them all at shutdown: no list links here. */
struct em_conn {
    em_io io;
    uint32_t flags;
    int16_t reason; /* pending unbind reason / em_error(): errno or EM_E* */
    uint8_t state;
    em_reactor *r;
    const em_handler *h;
    void *arg, *user;
    em_sig sig;
    em_outq out;
    /* The flush list, or the close list: a connection closed while on the
     * flush list moves to the close list when the flush reaches it. */
    struct em_conn *list_next;
    double created, last_activity;
    uint32_t in_lo, out_lo; /* byte counters; the high halves are cold */
    em_cold *cold;          /* NULL until needed */
};

em_conn *em__conn_new(em_reactor *r, int fd, const em_handler *h, void *arg);
void em__conn_begin(em_conn *c); /* post_init, then join the poller */
void em__conn_fail(em_conn *c, int reason); /* close at once with a reason */
void em__conn_mark_dirty(em_conn *c);
void em__conn_on_event(em_conn *c, const em_event *ev);
/* stash.c: bytes a completion backend read for a connection that cannot
 * take them now (res as in em_event), kept until it reads again: its own
 * reads take them first, as if from the socket. Only a connection open or
 * detached keeps them. */
void em__conn_stash(em_conn *c, const char *data, int res);
bool em__conn_keeps_input(const em_conn *c);
static inline bool em__stash_has(const em_conn *c) { return c->cold && c->cold->stash; }
/* read(2) from the stash: bytes, 0 at a stashed FIN, -1 with a stashed
 * errno; the stash is freed when it runs out. */
ssize_t em__stash_read(em_conn *c, char *buf, size_t len);
/* A connection reading again gets what is stashed (from the flush list);
 * one whose bytes could not be kept fails with ENOMEM. */
void em__stash_feed(em_conn *c);
void em__stash_free(em_conn *c);
void em__conn_flush(em_conn *c);
/* sends.c: a backend's sends (see backend_sends). em__sends_take: c's
 * queue, its head in memory, goes to the backend at the end of the flush
 * phase (false: write it yourself). em__sends_flush: that end, and
 * em__sends_phase_end the end of the phase, after the last. A listing is
 * dropped with em__sends_unlist by what takes the queue over (TLS).
 * em__sends_plain: c's queue would go to the backend. */
bool em__sends_plain(const em_conn *c);
bool em__sends_take(em_conn *c);
void em__sends_unlist(em_conn *c);
void em__sends_flush(em_reactor *r);
void em__sends_phase_end(em_reactor *r);
void em__conn_drained(em_conn *c, bool waited);
void em__conn_settle_borrowed(em_reactor *r);
/* receive_data with the first n bytes of read_buf, then their settling. */
void em__conn_deliver(em_conn *c, size_t n);
/* em_send_data without the outbound limit (what a proxy sends on). */
int em__conn_send(em_conn *c, const void *data, size_t len);
/* receive_data with bytes of read_buf, then their settling. */
void em__conn_receive(em_conn *c, const char *data, size_t n);
/* The same with bytes that stay where they are until the next wait. */
void em__conn_receive_kept(em_conn *c, const char *data, size_t n);
size_t em__conn_pending(const em_conn *c); /* bytes queued, any kind */
void em__conn_update_interest(em_conn *c);
void em__conn_finish(em_conn *c); /* unbind and free (close phase) */
void em__conn_close_fd(em_conn *c); /* a closing connection's; idempotent */
void em__conn_discard(em_conn *c); /* free one the user never saw */
void em__conn_shutdown(em_conn *c);  /* reactor stopping: close with reason 0 */
void em__conn_touch(em_conn *c);
em_cold *em__conn_cold(em_conn *c); /* allocated on first use; NULL: ENOMEM */
void em__count_in(em_conn *c, size_t n);
void em__count_out(em_conn *c, size_t n);
bool em__conn_usable(const em_conn *c); /* open or connecting, not closing */
/* Usable, and no close or half-close asked: bytes sent now would go out
 * (em_send_data, a file, a proxy's target). */
static inline bool em__conn_takes_data(const em_conn *c)
{
    return em__conn_usable(c) &&
           !(c->flags & (EM_CF_CLOSE_AFTER_WRITE | EM_CF_SHUT_WR_PENDING | EM_CF_WR_SHUT));
}

/* A layer between a stream connection and its socket (TLS). While
 * EM_CF_LAYER is set, the layer handles the connection's events and its
 * flush: it reads, decrypts and delivers with em__conn_deliver, writes the
 * queue with em__conn_sent for each byte taken, and ends a flush that
 * emptied the queue with em__conn_after_drain. conn.c tells it of a close
 * (before the queue is dropped) and of reading wanted again (resume, a
 * proxy's hold released), when bytes it holds must be delivered. */
typedef struct em_layer_ops {
    void (*on_event)(em_conn *c, unsigned events);
    void (*flush)(em_conn *c);
    void (*closing)(em_conn *c, int reason);
    void (*read_wanted)(em_conn *c);
    void (*connect_timeout_changed)(em_conn *c);
    void (*free)(em_layer *layer, em_reactor *r);
} em_layer_ops;

struct em_layer {
    const em_layer_ops *ops;
};

static inline em_layer *em__layer(const em_conn *c) { return c->cold->layer; }
void em__conn_layer_free(em_conn *c); /* and the layer pointer; idempotent */
/* The layer leaves the connection (em_reconnect) but what it returned to
 * the unbind running now stays valid until em__conn_finish frees it. */
void em__conn_layer_retire(em_conn *c);
void em__conn_sent(em_conn *c, size_t n); /* n queued bytes written */
void em__conn_on_eof(em_conn *c);
/* The queue is empty: the close_write or close that waited for it. */
void em__conn_after_drain(em_conn *c);
/* Writes up to max queued bytes as they are; the bytes written, or -1 with
 * errno (EAGAIN included). */
ssize_t em__conn_write_raw(em_conn *c, size_t max);
void em__conn_unspan(em_conn *c); /* a span becomes a queued chunk; may fail the conn */

/* file.c */
typedef void (*em_file_done_fn)(em_conn *c, int err, void *arg);
void em__files_report(em_conn *c);     /* done of the files written, in order */
void em__files_report_all(em_conn *c); /* closing: every done, written or not */
void em__files_free(em_conn *c);       /* no callbacks (forked, discarded) */

/* pipe.c: pipes of splicing proxies, pooled per reactor */
#define EM_PIPE_SIZE (256 * 1024)
#define EM_PIPE_POOL 16
typedef struct em_pipe em_pipe;
/* The pipe of owner's queue: its own, or one from the pool; NULL: none
 * could be made. */
em_pipe *em__pipe_take(em_reactor *r, em_pipe **owner);
void em__pipe_untake(em_reactor *r, em_pipe *p); /* back if nothing went in */
size_t em__pipe_room(const em_pipe *p);
bool em__pipe_empty(const em_pipe *p);
/* splice from fd into the pipe: as splice(2), EINTR retried. */
ssize_t em__pipe_fill(em_pipe *p, int fd, size_t max);
/* n bytes just filled join the owner's queue q; -ENOMEM: they are lost
 * (the owner must fail). */
int em__pipe_queue(em_reactor *r, em_pipe *p, em_outq *q, size_t n);
void em__pipes_free(em_reactor *r);
/* release.c: /dev/null (null_fd) dup'ed onto the pool's pipes (c NULL) or
 * onto c's pipe; onto the files c is sending. */
void em__pipes_stand_in(em_reactor *r, em_conn *c, int null_fd);
void em__files_stand_in(em_conn *c, int null_fd);

/* tls.c */
void em__tls_reactor_free(em_reactor *r);

/* proxy.c */
void em__proxy_deliver(em_conn *from, size_t n);
bool em__proxy_splice(em_conn *from); /* false: read it by copy */
void em__proxy_source_eof(em_conn *from);
void em__proxy_target_progress(em_conn *to);
em_conn *em__proxy_unlink(em_conn *c);
void em__proxy_free(em_conn *c);

/* datagram.c */
void em__dgram_on_event(em_conn *c, unsigned events);
int em__dgram_send_reply(em_conn *c, const void *data, size_t len);
void em__dgram_clear(em_conn *c);
void em__dgram_flush(em_conn *c);
void em__dgram_free(em_conn *c);
size_t em__dgram_bytes(const em_conn *c);
int em__dgram_peer(const em_conn *c, struct sockaddr_storage *ss, socklen_t *len);

/* attach.c */
void em__watch_on_event(em_conn *c, unsigned events);
unsigned em__watch_interest(const em_conn *c);
ssize_t em__writev_nosigpipe(int fd, const struct iovec *iov, int cnt);

/* popen.c */
bool em__child_may_unbind(em_conn *c); /* false: wait for the child first */
void em__child_free(em_conn *c);
void em__child_on_event(em_io *io);
em_io *em__child_io(em_conn *c); /* the pidfd's io; NULL if none */
void em__orphans_reap(em_reactor *r);

/* signal.c */
typedef struct em_sighandler em_sighandler;
void em__signals_run(em_reactor *r); /* callbacks of the signals that arrived */
void em__signals_free(em_reactor *r);
bool em__signal_is_libems(int signo); /* its disposition is libem's handler */
/* Around a turn's sendfile and splice calls, which raise SIGPIPE. */
void em__sigpipe_block(em_reactor *r);
void em__sigpipe_restore(em_reactor *r);

/* connect.c */
int em__connect_start(em_conn *c, const char *bind_host, int bind_port, const char *host,
                      int port);
void em__connect_on_writable(em_conn *c);
void em__connect_abandon(em_conn *c);
int em__sockaddr_parse(const char *host, int port, struct sockaddr_storage *ss,
                       socklen_t *len); /* numeric only; -EINVAL if not */
int em__sockaddr_unix(const char *path, struct sockaddr_storage *ss, socklen_t *len);

/* resolve.c */
/* err: the unbind reason for a failure (em__resolve_reason), gai: its
 * getaddrinfo code; ai NULL then. */
typedef void (*em_resolved_fn)(em_reactor *r, em_sig sig, struct addrinfo *ai, int err,
                               int gai);
/* The reason a failed getaddrinfo gives, from its code and the errno it
 * left: ENOMEM for EAI_MEMORY, the errno for EAI_SYSTEM, else EM_ERESOLVE. */
int em__resolve_reason(int gai, int err);
/* em_last_resolve_error's value on this thread. */
void em__set_last_resolve_error(int gai);
int em__resolve(em_reactor *r, const char *host, int port, int socktype, em_sig sig,
                em_resolved_fn fn);

/* --------------------------------------------------------------- servers */
struct em_server {
    em_io io;
    em_reactor *r;
    const em_handler *h;
    void *arg;
    em_sig sig;
    char *unix_path; /* created by us: unlinked on stop */
    dev_t unix_dev;
    ino_t unix_ino;
    bool starved;    /* out of descriptors: not accepting for now */
    uint8_t nodelay; /* EM_NODELAY_*: how accepted sockets get TCP_NODELAY */
    em_timer_id retry_timer;
    struct em_server *prev, *next;
};

/* Linux gives an accepted socket the listener's TCP_NODELAY: set on the
 * listener, it costs no system call per connection. The first accepted
 * socket is checked, so a kernel that does not copy it is still served. */
enum {
    EM_NODELAY_NONE,      /* not TCP */
    EM_NODELAY_SET_EACH,  /* set on every accepted socket */
    EM_NODELAY_CHECK,     /* the listener has it: see if the next one got it */
    EM_NODELAY_INHERITED, /* accepted sockets get it from the listener */
};

void em__server_on_event(em_server *s, const em_event *ev);
unsigned em__accepts_per_report(const em_backend *be); /* when not busy */
void em__server_free_all(em_reactor *r);
void em__servers_fds_freed(em_reactor *r);

/* ------------------------------------------------------------- sig map */
typedef struct em_sigmap {
    em_conn **slots;
    size_t cap, len; /* cap is 0 or a power of two */
} em_sigmap;

int em__sigmap_put(em_sigmap *m, em_conn *c); /* keyed by c->sig */
em_conn *em__sigmap_get(const em_sigmap *m, em_sig sig);
void em__sigmap_del(em_sigmap *m, em_sig sig);
void em__sigmap_destroy(em_sigmap *m);
em_conn *em__sigmap_at(const em_sigmap *m, size_t i); /* slot i: NULL if empty */

/* --------------------------------------------------------------- reactor */
#define EM_READ_BUF_SIZE (64 * 1024)
#define EM_MAX_BORROWERS 16
#define EM_MAX_EVENTS 256
/* A turn with this many events is long: servers then accept several. */
#define EM_BUSY_EVENTS 64

struct em_reactor {
    const em_backend *backend;
    union {
        struct {
            int epfd;
            int outer; /* em_backend_fd: an epoll set holding epfd; -1 until asked */
        } ep;
        struct {
            struct pollfd *fds;
            em_io **ios;
            int len, cap;
            int *slot_of_fd; /* the pollfd slot of each descriptor */
            int fd_cap;
            int start;       /* where the next scan begins: fairness */
        } poll;
        struct em_uring *uring; /* backend-uring.c */
    } be;
    double now;
    em_timers timers;
    em_cb_queue ticks;
    em_sigmap sigmap;
    em_sig next_sig;
    size_t conn_count;    /* not yet freed */
    em_conn *dirty;       /* to flush at the end of the turn */
    em_conn *closing, *closing_tail;
    em_server *servers;
    em_server *dead_servers; /* stopped this turn: freed after dispatch */
    uint64_t *held_fds;      /* fdset.c: a bit per descriptor held */
    size_t held_words;
    unsigned starved_servers;
    bool shutting_down;
    bool forked; /* freed in a forked child: no callbacks, no unlink */
    bool released; /* em__release_inherited: the turn on the stack ends */
    /* Connections older than the last fork() may share their socket with
     * the child: they leave the epoll set with a DEL, not just the close. */
    unsigned forks_seen;
    em_sig shared_below;
    em_chunk_cache small_chunks, large_chunks, bare_chunks;
    struct em_tls_shared *tls; /* contexts and write staging; NULL until TLS is used */
    struct em_pipe *pipes;     /* idle pipes for splicing proxies */
    unsigned pipes_idle;
    bool splice_off;           /* $EM_SPLICE=0: proxies copy */
    bool sigpipe_blocked;      /* em__sigpipe_block: until the turn's writes end */
    bool sigpipe_was_pending;
    sigset_t sigpipe_mask;     /* the thread's mask before */
    /* A completion backend (io_uring) sets it while it reads for the
     * connections registered with EM_EV_RECV besides EM_EV_READ, into
     * buffers of its own, reporting the bytes in the event; they stay valid
     * until its next wait. Those connections never read their socket
     * themselves then. What it read after a connection stopped asking (a
     * pause, TLS or a proxy started, a detach, an attached descriptor's
     * close) is handed to em__conn_stash before the change returns, so no
     * read of the connection's own can overtake it. Other backends ignore
     * EM_EV_RECV. */
    bool backend_reads;
    /* Set likewise while the backend accepts for listeners registered with
     * EM_EV_RECV: each new descriptor comes in an event, and a listener's
     * own accept4 is not called. One reported for a listener stopped in
     * the same turn is closed by dispatch. */
    bool backend_accepts;
    /* Set likewise while the backend sends for plain stream connections
     * (sends.c): their queues go to it at the end of the flush phase,
     * listed here by signature meanwhile. sends_refused: a submission
     * failed in this phase, the connections write for themselves until its
     * end. */
    bool backend_sends;
    bool sends_refused;
    em_sig *send_list;
    unsigned send_len, send_cap;
    char *read_buf;
    /* Inside receive_data, the bytes it was given (of read_buf, or of a
     * backend's buffer): NULL outside. Connections whose queue points into
     * them (em_send_data of received bytes) write or copy them before the
     * buffer is read into again. */
    const char *recv_lo, *recv_hi;
    /* Those bytes stay where they are until the next wait (a completion
     * backend's buffer, not read_buf): an echo is lent to the phase's sends
     * instead of copied (sends.c). Until they are settled. */
    bool recv_kept;
    em_conn *borrowers[EM_MAX_BORROWERS];
    /* A borrower whose queue was empty holds its bytes here instead, while
     * they are one run of read_buf (EM_CF_SPAN): an echo is one send(). */
    struct em_span {
        const char *p;
        size_t len;
    } spans[EM_MAX_BORROWERS];
    unsigned borrower_count;
    em_event events[EM_MAX_EVENTS];
    int events_len;  /* of the wait being dispatched; 0 outside dispatch */
    int dispatching; /* the event being dispatched: later ones are not yet */
    struct em_orphan *orphans;    /* popen children left running at shutdown */
    /* popen children watched without a pidfd ($EM_PIDFD=0, or no pidfd_open):
     * waitpid(pid, WNOHANG) on SIGCHLD and on a timer */
    em_child *polled_children;
    em_timer_id child_poll_timer;
    bool sigchld_joined; /* the SIGCHLD handler is in sighandlers */
    bool pidfd_off;
    em_sighandler *sighandlers;
    /* set by the C signal handler, on any thread */
    atomic_bool sig_pending[NSIG];
    atomic_bool sig_any;

    /* cross-thread: guarded by xlock */
    pthread_mutex_t xlock;
    em_cb_queue scheduled;
    em_job *done_head, *done_tail;
    em_io wake;
    atomic_bool wake_pending;
    atomic_bool xpending; /* scheduled callbacks or finished jobs queued */
    atomic_bool stop_requested;
    em_pool pool;
    pid_t owner_pid;
    bool running;
    bool in_turn;
    bool freeing;
    bool busy; /* the last wait returned EM_BUSY_EVENTS or more */
    unsigned accept_per_report; /* when not busy: em__accepts_per_report */
    unsigned accepts_asked;     /* em_set_accepts_per_event; 0: ours */
};

static inline int em__fd_claim(em_reactor *r, int fd)
{
    size_t word = (size_t)fd / 64;
    if (word >= r->held_words)
        return em__fd_claim_grow(r, fd);
    r->held_fds[word] |= 1ull << (fd % 64);
    return 0;
}

static inline void em__fd_release(em_reactor *r, int fd)
{
    if (fd >= 0 && (size_t)fd / 64 < r->held_words)
        r->held_fds[fd / 64] &= ~(1ull << (fd % 64));
}

double em__clock(void);
/* 0, or -ECANCELED while the reactor shuts down: nothing new is made then,
 * so that a handler reconnecting from unbind cannot keep it alive. */
int em__may_add(const em_reactor *r);
em_sig em__next_sig(em_reactor *r);
void em__wake(em_reactor *r);
void em__close_list_push(em_conn *c);
void em__job_done(em_reactor *r, em_job *job); /* from pool threads */

#endif /* EM_INTERNAL_H */
