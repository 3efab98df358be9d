/* The io_uring backend: reads for plain stream connections, readiness
 * through one-shot poll requests for everything else, all of a turn's
 * requests submitted with the wait in one io_uring_enter.
 *
 * A connection registered with EM_EV_RECV gets a multishot receive into
 * the reactor's ring of provided buffers (uring-bufs.c): every arrival is a
 * completion with its bytes, and no system call reads them. A buffer is
 * lent to the turn that takes its completion and given back at the next
 * wait. When the kernel runs out of buffers the receive ends with ENOBUFS
 * and is armed again, the bytes left in the socket. A connection that
 * stops asking for it (a pause, TLS started) has its receive cancelled at
 * once, and every completion of it still to be handled (in this turn's
 * events or in the ring) goes to the connection's stash, in order, so its
 * own reads later cannot overtake bytes read before.
 *
 * A poll request completes once; it is armed again as its completion is
 * taken, and the kernel checks readiness when the request arrives, so what
 * a handler leaves unread is reported on the next turn as epoll's level
 * triggering would. A removal cancels the request, whose late completion
 * must then name nothing: a request is named by a generation besides what
 * it is for (a connection's signature; a table slot for anything else,
 * which may be freed as soon as it is removed), and a completion whose
 * generation is not the current one is dropped without looking at memory
 * that may be gone.
 *
 * The ring is made disabled and enabled by the first thread that enters it,
 * which becomes its only submitter (IORING_SETUP_SINGLE_ISSUER): the thread
 * that runs the reactor, not necessarily the one that made it. Completions
 * are then run only when that thread waits (IORING_SETUP_DEFER_TASKRUN).
 * Its memory is not inherited by fork(): a child never writes the parent's
 * ring. */
#include "em-internal.h"

#ifdef EM_HAVE_URING

#include "uring-bufs.h"

#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RING_ENTRIES 1024
/* Room for the completions of many turns' worth of receives: a turn takes
 * EM_MAX_EVENTS, the rest wait here rather than in the kernel's overflow
 * list, which only a wait can empty (see hold_all()). */
#define CQ_ENTRIES (8 * RING_ENTRIES)
/* user_data of requests whose completion says nothing (cancellations) */
#define IGNORED UINT64_MAX
/* Rounds of waiting for a cancelled receive's last completion, 1 ms each;
 * the first, which only submits, is all it takes on the kernels tried. */
#define ABSORB_ROUNDS 100

typedef struct uring_slot {
    em_io *io;      /* NULL: not registered */
    uint32_t gen;   /* of its request in the kernel; 0: none */
    /* A listener's: the gen from which its accepts are its own (older ones
     * were another registration's), moved up as its accept is armed again
     * with none replaced still to end (so that the span never wraps). */
    uint32_t born;
    uint32_t reg;      /* which registration (a ring-wide count) */
    uint16_t replaced; /* accepts of its replaced, their last completion to come */
    bool accepting;    /* its request is a listener's multishot accept */
} uring_slot;

/* A connection the old ring had accepted when the ring was made again:
 * reported at the next wait as the new ring's would be, to the same
 * registration of its listener. */
typedef struct adopted_fd {
    int listener, fd;
    uint32_t reg;
} adopted_fd;

struct em_uring {
    struct io_uring ring;
    uring_slot *slots; /* indexed by descriptor */
    int slot_cap;
    int live;          /* slots registered */
    int shrink_below;  /* live count under which the table may shrink */
    unsigned pending;  /* requests queued since the last submission */
    unsigned cancels;  /* of which cancellations */
    unsigned epoch;    /* forked_children when made: another is a child's */
    uint32_t gen;      /* of the last request armed */
    bool enabled;
    bool embedded;     /* em_backend_fd was asked: submit at each turn's end */
    bool stranded;     /* a request could not be armed again: see sweep() */
    bool reads_off;    /* readiness only: $EM_URING_RECV=0, or the kernel can't */
    bool one_shot;     /* a read per receive: $EM_URING_RECV=single, or no cap */
    bool accepts_off;  /* listeners polled: $EM_URING_ACCEPT=0, or the kernel can't */
    bool sends_off;    /* connections write for themselves: $EM_URING_SEND=0 */
    bool accept_worked; /* an accept has completed: EINVAL is not a refusal */
    /* A receive of that kind has completed: EINVAL is not the kernel's refusal */
    bool capped_worked, one_shot_worked;
    unsigned buf_count;
    em_ubufs *bufs;    /* made at the first receive */
    em_ubufs *retired; /* of rings made again this turn */
    /* Connections whose receive ended (its cap reached, a one-shot's read,
     * ENOBUFS, the kernel's own cancellation): armed again at the next
     * wait, not at once, for a pause in this turn settles its receive by
     * submitting, and a new receive would read a second cap ahead. */
    em_sig *again;
    unsigned again_len, again_cap;
    adopted_fd *adopted;
    unsigned adopted_len, adopted_cap;
    /* Listeners whose accept ended: armed again at the next wait, if still
     * registered (a starved one is not), like the receives above. */
    int *again_fds;
    unsigned again_fds_len, again_fds_cap;
    uint32_t regs; /* registrations of slots made */
    /* Completions moved out of a full ring (hold_all()): they come before
     * the ring's. */
    struct io_uring_cqe *held;
    unsigned held_head, held_len, held_cap;
    /* The headers of sends of several buffers queued since the last
     * submission, which reads them: a send that finds none left takes its
     * first buffer only. */
    struct send_msg *msgs;
    unsigned msgs_used;
    em_reactor *r;
};

#define U (r->be.uring)
#define MIN_SLOTS 1024
#define SEND_MSGS 64
#define SEND_MSG_IOV 16

struct send_msg {
    struct msghdr hdr;
    struct iovec iov[SEND_MSG_IOV];
};

/* Counted in every forked child, so that a reactor inherited by one can
 * tell, without a system call, that the ring's memory is not there. */
static atomic_uint forked_children;
static pthread_once_t children_counted = PTHREAD_ONCE_INIT;

static void count_child(void) { atomic_fetch_add(&forked_children, 1); }

static void count_children(void) { pthread_atfork(NULL, NULL, count_child); }

static bool ours(const struct em_uring *u)
{
    return u->epoch == atomic_load_explicit(&forked_children, memory_order_relaxed);
}

static int ring_setup(struct io_uring *ring, struct io_uring_params *p, unsigned flags)
{
    memset(p, 0, sizeof *p);
    p->flags = flags | IORING_SETUP_CQSIZE;
    p->cq_entries = CQ_ENTRIES;
    return io_uring_queue_init_params(RING_ENTRIES, ring, p);
}

/* deferred: completions run only when the submitting thread waits, which
 * saves their work being done at every wake-up, but leaves the ring's
 * descriptor unreadable for a host waiting on it (em_backend_fd). Without
 * it the ring is enabled as made. -EINVAL from a kernel older than a flag
 * asked for: SUBMIT_ALL is 5.18, DEFER_TASKRUN 6.1 (the caller tries again
 * without it). */
static int ring_new(em_reactor *r, struct io_uring *ring, bool deferred)
{
    struct io_uring_params p;
    unsigned flags = IORING_SETUP_SUBMIT_ALL;
    if (deferred)
        flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
    int err = ring_setup(ring, &p, flags);
    if (err == -EINVAL && !deferred)
        err = ring_setup(ring, &p, 0);
    if (err)
        return err;
    /* needed: completions never dropped, and a wait with a timeout */
    if (!(p.features & IORING_FEAT_NODROP) || !(p.features & IORING_FEAT_EXT_ARG))
        err = -EOPNOTSUPP;
    if (!err)
        err = io_uring_ring_dontfork(ring);
    if (!err)
        err = em__fd_claim(r, ring->ring_fd);
    if (err)
        io_uring_queue_exit(ring);
    return err;
}

static int ur_init(em_reactor *r)
{
    struct em_uring *u = em__calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    const char *env = getenv("EM_URING_DEFER");
    bool deferred = !env || strcmp(env, "0");
    int err = ring_new(r, &u->ring, deferred);
    if (err == -EINVAL && deferred) /* older than 6.1: no deferred task running */
        err = ring_new(r, &u->ring, deferred = false);
    if (err) {
        em__free(u);
        return err == -EINVAL ? -EOPNOTSUPP : err; /* a kernel without what libem uses */
    }
    u->r = r;
    u->enabled = !deferred;
    env = getenv("EM_URING_RECV");
    u->reads_off = env && !strcmp(env, "0");
    u->one_shot = env && !strcmp(env, "single");
    env = getenv("EM_URING_ACCEPT");
    u->accepts_off = env && !strcmp(env, "0");
    env = getenv("EM_URING_SEND");
    u->sends_off = env && !strcmp(env, "0");
    env = getenv("EM_URING_BUFFERS"); /* a power of two; small ones test ENOBUFS */
    if (env && atoi(env) > 0 && atoi(env) <= 32768 && !(atoi(env) & (atoi(env) - 1)))
        u->buf_count = (unsigned)atoi(env);
    pthread_once(&children_counted, count_children);
    u->epoch = atomic_load(&forked_children);
    u->shrink_below = MIN_SLOTS / 8;
    U = u;
    r->backend_reads = !u->reads_off;
    r->backend_accepts = !u->accepts_off;
    r->backend_sends = !u->sends_off;
    return 0;
}

static void ur_settle(em_reactor *r);
static void close_accepted(struct em_uring *u);
static void close_one(struct io_uring_cqe *cqe, const char *data, void *arg);
static int report_adopted(em_reactor *r, em_event *out, int max);
static int remake(em_reactor *r, bool deferred);
static int run_now(struct em_uring *u);

/* In a forked child the ring's memory is not mapped: only the descriptor
 * is the child's to close. */
static void ur_destroy(em_reactor *r)
{
    struct em_uring *u = U;
    if (!u)
        return;
    em__fd_release(r, u->ring.ring_fd);
    if (ours(u)) {
        ur_settle(r);
        close_accepted(u);
        io_uring_queue_exit(&u->ring);
    } else { /* a forked child: its copies of what the parent accepted */
        close(u->ring.ring_fd);
        for (unsigned i = u->held_head; i < u->held_len; i++)
            close_one(&u->held[i], NULL, NULL);
        for (unsigned i = 0; i < u->adopted_len; i++)
            close(u->adopted[i].fd);
    }
    if (ours(u))
        em__ubufs_free(u->bufs);
    else
        em__ubufs_forget(u->bufs);
    em__ubufs_free_list(&u->retired, ours(u));
    em__free(u->held);
    em__free(u->again);
    em__free(u->adopted);
    em__free(u->again_fds);
    em__free(u->msgs);
    em__free(u->slots);
    em__free(u);
    U = NULL;
}

static int enter(struct em_uring *u)
{
    if (!u->enabled) {
        /* liburing 2.3 declares io_uring_enable_rings but does not export it */
        if (syscall(__NR_io_uring_register, u->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL,
                    0) < 0)
            return -errno;
        u->enabled = true;
    }
    return 0;
}

/* What was queued has reached the kernel. */
static void submitted(struct em_uring *u)
{
    u->pending = u->cancels = u->msgs_used = 0;
}

/* Submits what is queued; run: and runs the completions due as well. */
static int submit(struct em_uring *u, bool run)
{
    int err = enter(u);
    if (!err)
        err = run ? io_uring_submit_and_get_events(&u->ring) : io_uring_submit(&u->ring);
    if (err >= 0)
        submitted(u);
    return err;
}

/* A full submission queue is submitted at once. None in a forked child. */
static struct io_uring_sqe *sqe_get(struct em_uring *u)
{
    if (!ours(u))
        return NULL;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (sqe)
        return sqe;
    if (enter(u) < 0 || io_uring_submit(&u->ring) < 0)
        return NULL;
    submitted(u);
    return io_uring_get_sqe(&u->ring);
}

/* A host waiting on the ring's descriptor submits nothing itself: what is
 * asked outside a turn (a server started from the host's own code) goes to
 * the kernel at once; what a turn asks, at its end (ur_flush). */
static void queued(struct em_uring *u)
{
    u->pending++;
    if (u->embedded && !u->r->in_turn)
        ur_settle(u->r);
}

static unsigned to_poll(unsigned mask)
{
    return (mask & EM_EV_READ ? POLLIN : 0) | (mask & EM_EV_WRITE ? POLLOUT : 0);
}

static int submit_poll(struct em_uring *u, int fd, unsigned mask, uint64_t token)
{
    struct io_uring_sqe *sqe = sqe_get(u);
    if (!sqe)
        return -ENOMEM;
    io_uring_prep_poll_add(sqe, fd, to_poll(mask));
    io_uring_sqe_set_data64(sqe, token);
    queued(u);
    return 0;
}

/* Without room to ask, the request completes in its time and is dropped
 * as one of an older generation. */
static void submit_cancel(struct em_uring *u, uint64_t token)
{
    struct io_uring_sqe *sqe = sqe_get(u);
    if (sqe) {
        io_uring_prep_cancel64(sqe, token, 0);
        io_uring_sqe_set_data64(sqe, IGNORED);
        u->cancels++;
        queued(u);
    }
}

/* ------------------------------------------------------------ connections
 * A connection's requests are named by its signature, whether it is its
 * poll (bit 1 clear) or its receive, and a generation of each kept in its
 * io, with bit 0 set: a completion for a connection gone, or for a request
 * it has since replaced, finds no match and is dropped. Nothing per
 * connection is kept here, so an idle one costs no more than on epoll. */
#define SIG_SHIFT 10
#define RECV_KIND 2
#define RECV_CAPPED_BIT 5
/* A send is of the receive's kind with this bit: a connection has one at
 * a time (EM_CF_SENDING), so it needs no generation. */
#define SEND_BIT (1u << 6)

/* The most a receive reads before it ends, to be armed again at the next
 * wait: what the kernel may have read for a connection that then pauses,
 * and what one connection may take of the shared buffers between two
 * turns. Four of epoll's reads; 64 KiB cost the stream workload 5% (the
 * re-arming), this about 1%. */
#define RECV_AHEAD (256 * 1024)

static em_sig sig_of(const em_io *io) { return EM_CONTAINER_OF(io, em_conn, io)->sig; }

static uint64_t conn_token(const em_io *io)
{
    return sig_of(io) << SIG_SHIFT | (uint64_t)io->gen << 2 | 1;
}

static uint64_t recv_token(const em_io *io, unsigned rgen)
{
    return sig_of(io) << SIG_SHIFT | (uint64_t)io->capped << RECV_CAPPED_BIT |
           (uint64_t)rgen << 2 | RECV_KIND | 1;
}

static unsigned rgen_of(uint64_t token) { return (unsigned)(token >> 2) & 7; }

static uint64_t send_token(const em_io *io) { return sig_of(io) << SIG_SHIFT | SEND_BIT | RECV_KIND | 1; }

static bool is_recv(uint64_t token)
{
    return (token & (SEND_BIT | RECV_KIND | 1)) == (RECV_KIND | 1);
}

static bool is_send(uint64_t token)
{
    return token != IGNORED && (token & (SEND_BIT | RECV_KIND | 1)) == (SEND_BIT | RECV_KIND | 1);
}

static int conn_arm(struct em_uring *u, em_io *io, unsigned mask)
{
    io->gen++;
    int err = submit_poll(u, io->fd, mask, conn_token(io));
    io->armed = !err;
    return err;
}

static bool wants_recv(const struct em_uring *u, unsigned interest)
{
    return (interest & EM_EV_RECV) && !u->reads_off;
}

/* What its poll request watches: what its receive does not. */
static unsigned poll_mask(const struct em_uring *u, unsigned interest)
{
    return interest & (wants_recv(u, interest) ? EM_EV_WRITE : EM_EV_READ | EM_EV_WRITE);
}

static int recv_arm(struct em_uring *u, em_io *io)
{
    struct io_uring_sqe *sqe = sqe_get(u);
    if (!sqe)
        return -ENOMEM;
    if (u->one_shot) {
        io_uring_prep_recv(sqe, io->fd, NULL, 0, 0);
    } else {
        io_uring_prep_recv_multishot(sqe, io->fd, NULL, 0, 0);
        /* The cap is the field newer headers call optlen; EINVAL where the
         * kernel has none. */
        sqe->file_index = RECV_AHEAD;
    }
    io->capped = !u->one_shot;
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = EM_UBUF_GROUP;
    io_uring_sqe_set_data64(sqe, recv_token(io, io->rgen));
    queued(u);
    io->receiving = true;
    return 0;
}

/* EINVAL before any receive of its kind worked is the kernel's refusal of
 * the request, not the socket's error: a kernel that cannot cap a
 * multishot receive gets one-shot receives from then on, one that has no
 * receive for libem leaves reads to the poll requests. */
static bool refused(em_reactor *r, uint64_t token, int res)
{
    struct em_uring *u = U;
    bool capped = token >> RECV_CAPPED_BIT & 1;
    bool *worked = capped ? &u->capped_worked : &u->one_shot_worked;
    if (res != -EINVAL) {
        *worked = true;
        return false;
    }
    if (*worked && !(u->reads_off && !capped))
        return false;
    if (capped) {
        u->one_shot = true;
    } else {
        u->reads_off = true;
        r->backend_reads = false;
    }
    return true;
}

static void conn_disarm(struct em_uring *u, em_io *io)
{
    if (io->armed)
        submit_cancel(u, conn_token(io));
    io->armed = false;
    io->gen++;
}

static em_io *conn_of(em_reactor *r, uint64_t token)
{
    em_conn *c = em__sigmap_get(&r->sigmap, token >> SIG_SHIFT);
    if (!c || !c->io.registered || !c->io.armed || c->io.gen != (uint8_t)(token >> 2))
        return NULL;
    c->io.armed = false;
    return &c->io;
}

/* Calls fn on every completion not yet taken, in order: those held, then
 * the ring's, each buffer's bytes peeked at (every one, for where the next
 * in the same buffer starts). */
static void each_pending(struct em_uring *u,
                         void (*fn)(struct io_uring_cqe *cqe, const char *data, void *ctx),
                         void *ctx)
{
    for (unsigned i = u->held_head; i < u->held_len; i++)
        fn(&u->held[i], em__ubufs_peek(u->bufs, u->held[i].flags, u->held[i].res), ctx);
    unsigned head;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        fn(cqe, em__ubufs_peek(u->bufs, cqe->flags, cqe->res), ctx);
    }
    em__ubufs_peek_end(u->bufs);
}

typedef struct {
    em_conn *c;
    uint64_t token;
    bool ended;
} absorb_ctx;

static void absorb_one(struct io_uring_cqe *cqe, const char *data, void *arg)
{
    absorb_ctx *a = arg;
    if (cqe->user_data != a->token)
        return;
    if ((cqe->res <= 0 || data) && !refused(a->c->r, cqe->user_data, cqe->res))
        em__conn_stash(a->c, data, cqe->res);
    cqe->user_data = IGNORED; /* its buffer is taken back when reaped */
    a->ended |= !(cqe->flags & IORING_CQE_F_MORE);
}

/* A ring full of completions not yet taken has the kernel keep the next
 * ones in its overflow list, out of sight until there is room: every one
 * in the ring is held aside, so that the next entry moves them in. false
 * without memory to hold them. */
static bool hold_all(struct em_uring *u)
{
    unsigned n = io_uring_cq_ready(&u->ring);
    if (u->held_len + n > u->held_cap) {
        unsigned cap = u->held_cap ? u->held_cap : CQ_ENTRIES;
        while (cap < u->held_len + n)
            cap *= 2;
        struct io_uring_cqe *grown = em__realloc(u->held, cap * sizeof *grown);
        if (!grown)
            return false;
        u->held = grown;
        u->held_cap = cap;
    }
    unsigned head;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        u->held[u->held_len++] = *cqe; /* no big CQEs on this ring */
    }
    io_uring_cq_advance(&u->ring, n);
    return true;
}

static bool overflowed(const struct em_uring *u)
{
    return IO_URING_READ_ONCE(*u->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW;
}

/* Completions of the receive named by token not yet taken go to c's
 * stash; true when its last one was among them. */
static bool absorb_ring(struct em_uring *u, em_conn *c, uint64_t token)
{
    absorb_ctx a = {.c = c, .token = token};
    each_pending(u, absorb_one, &a);
    return a.ended;
}

static int run_now(struct em_uring *u);

/* The first round submits the cancellation and runs what completes; the
 * next ones wait for one more completion, up to 1 ms. */
static int absorb_round(struct em_uring *u, int round)
{
    if (!round)
        return run_now(u);
    struct __kernel_timespec ts = {.tv_nsec = 1000000};
    struct io_uring_cqe *cqe;
    int err = io_uring_submit_and_wait_timeout(&u->ring, &cqe, io_uring_cq_ready(&u->ring) + 1,
                                               &ts, NULL);
    return err == -ETIME ? 0 : err;
}

/* What c's receives read that this turn has not dispatched yet. */
static void absorb_events(em_reactor *r, em_conn *c)
{
    for (int i = r->dispatching + 1; i < r->events_len; i++) {
        em_event *ev = &r->events[i];
        if (ev->io == &c->io && (ev->events & EM_EV_RECV)) {
            em__conn_stash(c, ev->data, ev->res);
            ev->io = NULL;
        }
    }
}

/* What the cancelled receive (generation rgen) read and c has not had yet,
 * after this turn's events: held aside, then in the ring. */
static void absorb(em_reactor *r, em_conn *c, unsigned rgen)
{
    struct em_uring *u = U;
    uint64_t token = recv_token(&c->io, rgen);
    bool ended = false;
    for (int round = 0; !ended && round < ABSORB_ROUNDS; round++) {
        if (absorb_round(u, round) < 0)
            break;
        ended = absorb_ring(u, c, token);
        if (!ended && overflowed(u) && !hold_all(u))
            break;
    }
}

/* The connection stops asking for reads: one that keeps what was read for
 * it gets it now, also from a receive that has ended already (the FIN, in
 * this turn's events); one closing does not, and its receive ends in its
 * own time. */
static void recv_stop(em_reactor *r, em_io *io)
{
    struct em_uring *u = U;
    em_conn *c = EM_CONTAINER_OF(io, em_conn, io);
    bool keep = ours(u) && em__conn_keeps_input(c);
    if (keep)
        absorb_events(r, c);
    if (!io->receiving)
        return;
    unsigned rgen = io->rgen;
    submit_cancel(u, recv_token(io, rgen));
    io->receiving = false;
    io->rgen++;
    if (keep)
        absorb(r, c, rgen);
}

static void bufs_make(struct em_uring *u)
{
    if (u->bufs || u->reads_off || !ours(u)) /* a child's would go into the parent's ring */
        return;
    if (em__ubufs_new(&u->ring, u->buf_count, &u->bufs) < 0) {
        u->reads_off = true; /* before 5.19, or no memory: poll for reads */
        u->r->backend_reads = false;
    }
}

/* From interest `from` to `to`; from == to arms what is missing, and never
 * stops a receive (it runs inside ur_wait's taking of completions, which
 * the settling of a stop would walk). */
static int conn_set(em_reactor *r, em_io *io, unsigned from, unsigned to)
{
    struct em_uring *u = U;
    if (to & EM_EV_RECV)
        bufs_make(u);
    if (from != to && (io->receiving || wants_recv(u, from)) && !wants_recv(u, to))
        recv_stop(r, io);
    unsigned mask = poll_mask(u, to);
    if (io->armed && poll_mask(u, from) != mask)
        conn_disarm(u, io);
    int err = 0;
    if (mask && !io->armed)
        err = conn_arm(u, io, mask);
    if (!err && wants_recv(u, to) && !io->receiving)
        err = recv_arm(u, io);
    return err;
}

/* arr with room for element len (of size bytes), grown if need be (cap
 * updated); NULL without memory, arr left as it was. */
static void *room_for_one(void *arr, unsigned len, unsigned *cap, size_t size)
{
    if (len < *cap)
        return arr;
    unsigned grown_cap = *cap ? *cap * 2 : 16;
    void *grown = em__realloc(arr, grown_cap * size);
    if (grown)
        *cap = grown_cap;
    return grown;
}

static void arm_later(struct em_uring *u, em_sig sig)
{
    em_sig *again = room_for_one(u->again, u->again_len, &u->again_cap, sizeof *again);
    if (!again) {
        u->stranded = true; /* sweep() finds it */
        return;
    }
    u->again = again;
    u->again[u->again_len++] = sig;
}

static void arm_again(em_reactor *r)
{
    struct em_uring *u = U;
    for (unsigned i = 0; i < u->again_len; i++) {
        em_conn *c = em__sigmap_get(&r->sigmap, u->again[i]);
        if (c && c->io.registered && conn_set(r, &c->io, c->io.interest, c->io.interest))
            u->stranded = true;
    }
    u->again_len = 0;
}

/* The receive a completion names; false when there is nothing to report:
 * a request replaced, ENOBUFS (armed again: the bytes wait in the socket),
 * a receive the kernel refused (see refused()). */
static bool take_recv(em_reactor *r, const struct io_uring_cqe *cqe, const char *data,
                      em_event *ev)
{
    struct em_uring *u = U;
    em_conn *c = em__sigmap_get(&r->sigmap, cqe->user_data >> SIG_SHIFT);
    if (!c || !c->io.receiving || c->io.rgen != rgen_of(cqe->user_data))
        return false;
    int res = cqe->res > 0 && !data ? -EIO : cqe->res; /* bytes nowhere: never */
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        c->io.receiving = false;
        if (refused(r, cqe->user_data, res)) {
            if (u->reads_off)
                conn_disarm(u, &c->io); /* its poll watches reading too now */
            res = -ENOBUFS;
        }
        if (res > 0 || res == -ENOBUFS || res == -ECANCELED)
            arm_later(u, c->sig);
    }
    if (res == -ENOBUFS || res == -ECANCELED)
        return false;
    *ev = (em_event){.io = &c->io, .events = EM_EV_RECV, .res = res, .data = data};
    return true;
}

/* ------------------------------------------------ listeners, wake-ups, ...
 * Anything else may be freed as soon as it is removed, with its request's
 * completion still to come: it is found through a table indexed by
 * descriptor, by a generation (bit 0 clear) the table, not the io, keeps.
 * Bit 31 marks a listener's multishot accept, whose completions carry new
 * descriptors: one that names no listener any more is closed. */
#define SLOT_ACCEPT (1u << 31)

static uint64_t slot_token(int fd, uint32_t gen, bool accept)
{
    return (uint64_t)gen << 32 | (accept ? SLOT_ACCEPT : 0) | (uint32_t)fd << 1;
}

static int slot_of_token(uint64_t token) { return (int)(((uint32_t)token & ~SLOT_ACCEPT) >> 1); }

static bool is_accept(uint64_t token) { return !(token & 1) && (token & SLOT_ACCEPT); }

static int submit_accept(struct em_uring *u, int fd, uint64_t token)
{
    struct io_uring_sqe *sqe = sqe_get(u);
    if (!sqe)
        return -ENOMEM;
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, token);
    queued(u);
    return 0;
}

/* A listener asking with EM_EV_RECV gets a multishot accept: each
 * connection comes in a completion, without an accept4 of libem's. */
static int slot_arm(struct em_uring *u, int fd, unsigned mask)
{
    uring_slot *s = &u->slots[fd];
    s->gen = ++u->gen ? u->gen : ++u->gen; /* never 0, which marks no request */
    s->accepting = (mask & EM_EV_RECV) && !u->accepts_off && s->io->type == EM_IO_SERVER;
    uint64_t token = slot_token(fd, s->gen, s->accepting);
    int err = s->accepting ? submit_accept(u, fd, token) : submit_poll(u, fd, mask, token);
    if (err)
        s->gen = 0;
    return err;
}

static void slot_disarm(struct em_uring *u, int fd)
{
    uring_slot *s = &u->slots[fd];
    if (s->gen)
        submit_cancel(u, slot_token(fd, s->gen, s->accepting));
    if (s->gen && s->accepting)
        s->replaced++; /* (a removal clears the slot: nothing counts then) */
    s->gen = 0;
}

static int resize(struct em_uring *u, int cap)
{
    uring_slot *t = em__realloc(u->slots, (size_t)cap * sizeof *t);
    if (!t)
        return -ENOMEM;
    if (cap > u->slot_cap)
        memset(t + u->slot_cap, 0, (size_t)(cap - u->slot_cap) * sizeof *t);
    u->slots = t;
    u->slot_cap = cap;
    return 0;
}

static int grow(struct em_uring *u, int fd)
{
    if (fd < u->slot_cap)
        return 0;
    int cap = u->slot_cap ? u->slot_cap : MIN_SLOTS;
    while (cap <= fd)
        cap *= 2;
    return resize(u, cap);
}

/* Once most entries are gone the table shrinks to its highest one, not
 * below MIN_SLOTS. The scan for it runs again only when the count has
 * halved since, so a long-lived high descriptor costs little. Generations
 * are the ring's, not the slot's: a late completion names no slot made
 * again. */
static void maybe_shrink(struct em_uring *u)
{
    if (u->live >= u->shrink_below || u->slot_cap <= MIN_SLOTS)
        return;
    int top = u->slot_cap - 1;
    while (top >= MIN_SLOTS && !u->slots[top].io)
        top--;
    int cap = MIN_SLOTS;
    while (cap <= top)
        cap *= 2;
    if (cap < u->slot_cap)
        resize(u, cap); /* -ENOMEM: stays as it is */
    u->shrink_below = u->live / 2;
}

static int slot_add(struct em_uring *u, em_io *io, unsigned interest)
{
    int err = grow(u, io->fd);
    if (err)
        return err;
    uring_slot *s = &u->slots[io->fd];
    if (s->io)
        return -EEXIST;
    s->io = io;
    err = slot_arm(u, io->fd, interest);
    if (err) {
        s->io = NULL;
        return err;
    }
    s->born = s->gen;
    s->reg = ++u->regs;
    s->replaced = 0;
    if (++u->live > 2 * u->shrink_below)
        u->shrink_below = u->live / 8;
    return 0;
}

static uring_slot *slot_of(struct em_uring *u, const em_io *io)
{
    bool found = io->fd >= 0 && io->fd < u->slot_cap && u->slots[io->fd].io == io;
    return found ? &u->slots[io->fd] : NULL;
}

/* The registration whose current request the token names, or NULL. */
static uring_slot *slot_named(struct em_uring *u, uint64_t token)
{
    int fd = slot_of_token(token);
    if (fd >= u->slot_cap)
        return NULL;
    uring_slot *s = &u->slots[fd];
    if (!s->io || !s->gen || s->gen != (uint32_t)(token >> 32))
        return NULL;
    return s;
}

static em_io *slot_io(struct em_uring *u, uint64_t token)
{
    uring_slot *s = slot_named(u, token);
    if (!s)
        return NULL;
    s->gen = 0;
    return s->io;
}

/* ------------------------------------------------------------ the seam */

static int ur_add(em_reactor *r, em_io *io, unsigned interest)
{
    struct em_uring *u = U;
    if (io->type == EM_IO_CONN)
        return conn_set(r, io, 0, interest);
    return slot_add(u, io, interest);
}

static int ur_modify(em_reactor *r, em_io *io, unsigned interest)
{
    struct em_uring *u = U;
    if (interest == io->interest)
        return 0;
    if (io->type == EM_IO_CONN)
        return conn_set(r, io, io->interest, interest);
    if (!slot_of(u, io))
        return -ENOENT;
    slot_disarm(u, io->fd);
    return slot_arm(u, io->fd, interest);
}

static int ur_del(em_reactor *r, em_io *io)
{
    struct em_uring *u = U;
    if (io->type == EM_IO_CONN) {
        if (io->receiving || wants_recv(u, io->interest))
            recv_stop(r, io);
        conn_disarm(u, io);
        return 0;
    }
    uring_slot *s = slot_of(u, io);
    if (!s)
        return -ENOENT;
    slot_disarm(u, io->fd);
    s->io = NULL;
    u->live--;
    maybe_shrink(u);
    return 0;
}

/* ------------------------------------------------------------------ sends
 * Made as the submission is taken (MSG_DONTWAIT), so their completions are
 * in the ring when the call that submitted them returns: nothing of a
 * connection's is in the kernel after that. */

static struct msghdr *send_msg(struct em_uring *u, const struct iovec *iov, int cnt)
{
    if (!u->msgs)
        u->msgs = em__calloc(SEND_MSGS, sizeof *u->msgs);
    if (!u->msgs || u->msgs_used == SEND_MSGS)
        return NULL;
    struct send_msg *m = &u->msgs[u->msgs_used++];
    if (cnt > SEND_MSG_IOV)
        cnt = SEND_MSG_IOV;
    memcpy(m->iov, iov, (size_t)cnt * sizeof *iov);
    m->hdr = (struct msghdr){.msg_iov = m->iov, .msg_iovlen = (size_t)cnt};
    return &m->hdr;
}

static ssize_t ur_send(em_reactor *r, em_io *io, const struct iovec *iov, int cnt, bool more)
{
    struct em_uring *u = U;
    struct io_uring_sqe *sqe = sqe_get(u); /* first: it may submit, freeing the headers */
    if (!sqe)
        return -ENOMEM;
    struct msghdr *m = cnt > 1 ? send_msg(u, iov, cnt) : NULL;
    int flags = MSG_NOSIGNAL | MSG_DONTWAIT | (more || (cnt > 1 && !m) ? MSG_MORE : 0);
    size_t bytes = 0;
    if (m) {
        io_uring_prep_sendmsg(sqe, io->fd, m, (unsigned)flags);
        for (size_t i = 0; i < m->msg_iovlen; i++)
            bytes += m->msg_iov[i].iov_len;
    } else {
        io_uring_prep_send(sqe, io->fd, iov[0].iov_base, iov[0].iov_len, flags);
        bytes = iov[0].iov_len;
    }
    io_uring_sqe_set_data64(sqe, send_token(io));
    queued(u);
    return (ssize_t)bytes;
}

/* The send a completion names, reported in out[*n] and taken out of the
 * way of the next wait. */
static void sent_one(em_reactor *r, struct io_uring_cqe *cqe, em_event *out, int *n, int max)
{
    if (!is_send(cqe->user_data) || *n == max)
        return;
    em_conn *c = em__sigmap_get(&r->sigmap, cqe->user_data >> SIG_SHIFT);
    if (c && (c->flags & EM_CF_SENDING))
        out[(*n)++] = (em_event){.io = &c->io, .events = EM_EV_SENT, .res = cqe->res};
    cqe->user_data = IGNORED;
}

/* Sends the kernel did not take (a submission refused, or stopped at a
 * request it failed, on a ring without SUBMIT_ALL) become no-ops, reported
 * -ECANCELED: their connections write for themselves. */
static void unsend(em_reactor *r, em_event *out, int *n, int max)
{
    struct io_uring_sq *sq = &U->ring.sq;
    for (unsigned i = io_uring_smp_load_acquire(sq->khead); i != sq->sqe_tail; i++) {
        struct io_uring_sqe *sqe = &sq->sqes[i & sq->ring_mask];
        if (!is_send(sqe->user_data))
            continue;
        struct io_uring_cqe none = {.user_data = sqe->user_data, .res = -ECANCELED};
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, IGNORED);
        sent_one(r, &none, out, n, max);
    }
}

/* Completions taken out of the way at the head of the ring go as the wait
 * would take them (a buffer's, given back at the next wait); not while
 * completions held aside come first: a buffer's parts are taken in order. */
static void skip_ignored(struct em_uring *u)
{
    if (u->held_head < u->held_len)
        return;
    unsigned head, seen = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        if (cqe->user_data != IGNORED)
            break;
        em__ubufs_take(u->bufs, cqe->flags, cqe->res);
        seen++;
    }
    io_uring_cq_advance(&u->ring, seen);
}

/* Plain submission, without running completions: the sends are made as
 * they are taken, and their results are in the ring when it returns. */
static int submit_sends(em_reactor *r)
{
    int err = submit(U, false);
    if (err == -EEXIST && !(err = remake(r, true))) /* a ring for this thread */
        err = submit(U, false);
    return err;
}

static int ur_sends_submit(em_reactor *r, em_event *out, int max)
{
    struct em_uring *u = U;
    int n = 0;
    if (!ours(u))
        return 0;
    submit_sends(r);
    unsend(r, out, &n, max);
    /* results the ring had no room for wait in the kernel's overflow list,
     * moved in as room is made */
    for (int round = 0; round < ABSORB_ROUNDS && overflowed(u); round++)
        if (!hold_all(u) || run_now(u) < 0)
            break;
    for (unsigned i = u->held_head; i < u->held_len; i++)
        sent_one(r, &u->held[i], out, &n, max);
    unsigned head;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        sent_one(r, cqe, out, &n, max);
    }
    skip_ignored(u);
    return n;
}

static unsigned from_poll(int res)
{
    if (res < 0) /* the descriptor went bad behind libem's back */
        return EM_EV_ERROR;
    return (res & POLLIN ? EM_EV_READ : 0) | (res & POLLOUT ? EM_EV_WRITE : 0) |
           (res & POLLERR ? EM_EV_ERROR : 0) | (res & POLLHUP ? EM_EV_HUP : 0);
}

/* EINVAL from a first multishot accept is the kernel's refusal (before
 * 5.19): listeners are polled from then on, and accept for themselves. */
static bool accept_refused(em_reactor *r, int res)
{
    struct em_uring *u = U;
    if (res != -EINVAL || u->accept_worked) {
        u->accept_worked = true; /* EINVAL now: a listener shut down */
        return false;
    }
    u->accepts_off = true;
    r->backend_accepts = false;
    return true;
}

/* The listener an accept's completion is for: the one registered at its
 * descriptor since before the request (generations are the ring's, in the
 * span from its born to now), even if that request has been replaced
 * since (a connection it took before its cancellation is the listener's
 * all the same). */
static uring_slot *accept_owner(struct em_uring *u, uint64_t token)
{
    int fd = slot_of_token(token);
    if (fd >= u->slot_cap)
        return NULL;
    uring_slot *s = &u->slots[fd];
    uint32_t age = (uint32_t)(token >> 32) - s->born, span = u->gen - s->born;
    return s->io && s->io->type == EM_IO_SERVER && age <= span ? s : NULL;
}

static void accept_later(struct em_uring *u, int fd)
{
    int *again = room_for_one(u->again_fds, u->again_fds_len, &u->again_fds_cap, sizeof *again);
    if (!again) {
        u->stranded = true; /* sweep() finds it */
        return;
    }
    u->again_fds = again;
    u->again_fds[u->again_fds_len++] = fd;
}

static void accept_again(struct em_uring *u)
{
    for (unsigned i = 0; i < u->again_fds_len; i++) {
        uring_slot *s = &u->slots[u->again_fds[i]];
        if (!s->io || s->gen)
            continue; /* removed (starved, stopped), or armed since */
        if (slot_arm(u, s->io->fd, s->io->interest))
            u->stranded = true;
        else if (!s->replaced)
            s->born = s->gen;
    }
    u->again_fds_len = 0;
}

/* A new connection (res, a descriptor) or why none came (-errno) for the
 * listener the completion is for; its current request, ended, is armed
 * again (an error that repeats, EMFILE, has the server stop asking: see
 * server.c). A descriptor for a listener gone is closed: its client sees
 * the reset it would have seen in the backlog. */
static bool take_accept(em_reactor *r, const struct io_uring_cqe *cqe, em_event *ev)
{
    struct em_uring *u = U;
    uring_slot *s = accept_owner(u, cqe->user_data);
    if (!s) {
        if (cqe->res >= 0)
            close(cqe->res);
        return false;
    }
    bool current = s == slot_named(u, cqe->user_data);
    int res = accept_refused(r, cqe->res) ? -ECANCELED : cqe->res;
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        if (current) { /* armed at the next wait: a starve in this turn comes first */
            s->gen = 0;
            accept_later(u, s->io->fd);
        } else if (s->replaced) {
            s->replaced--;
        }
    }
    if (res == -ECANCELED || (res < 0 && !current)) /* the kernel's own; or said of the past */
        return false;
    *ev = (em_event){.io = s->io, .events = EM_EV_RECV, .res = res};
    return true;
}

/* The registration a poll completion names, armed again at once: its next
 * request goes in with the next submission, after this turn's handlers
 * changed what they want or removed it. */
static bool take(em_reactor *r, const struct io_uring_cqe *cqe, const char *data, em_event *ev)
{
    struct em_uring *u = U;
    uint64_t token = cqe->user_data;
    if (token == IGNORED)
        return false;
    if (is_send(token))
        return false; /* taken by ur_sends_submit; one left: its connection failed */
    if (is_recv(token))
        return take_recv(r, cqe, data, ev);
    if (is_accept(token))
        return take_accept(r, cqe, ev);
    /* a cancellation of libem's changed the generation: one that matches is
     * the kernel's (the submitting thread gone), and the request is armed
     * again like any other */
    em_io *io = token & 1 ? conn_of(r, token) : slot_io(u, token);
    if (!io)
        return false;
    int err = io->type == EM_IO_CONN ? conn_set(r, io, io->interest, io->interest)
                                     : slot_arm(u, io->fd, io->interest);
    if (err)
        u->stranded = true;
    if (cqe->res == -ECANCELED)
        return false;
    *ev = (em_event){.io = io, .events = from_poll(cqe->res)};
    return true;
}

typedef struct {
    em_reactor *r;
    int err;
} rearm_ctx;

/* Registrations left without a request when one could not be armed again
 * (no room in the submission queue, the kernel refusing a submission), or
 * on a new ring, get one now; rare, so a walk over all of them is fine. */
static void arm_missing(em_io *io, void *arg)
{
    rearm_ctx *ctx = arg;
    struct em_uring *u = ctx->r->be.uring;
    int err = 0;
    if (io->type == EM_IO_CONN)
        err = conn_set(ctx->r, io, io->interest, io->interest);
    else if (u->slots[io->fd].io == io && !u->slots[io->fd].gen)
        err = slot_arm(u, io->fd, io->interest);
    if (err) {
        u->stranded = true;
        ctx->err = err;
    }
}

static void sweep(em_reactor *r)
{
    struct em_uring *u = U;
    u->stranded = false;
    rearm_ctx ctx = {.r = r};
    em__io_each_registered(r, arm_missing, &ctx);
}

static int submit_and_wait(struct em_uring *u, int timeout_ms)
{
    int err = enter(u);
    if (err)
        return err;
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                   .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
    if (timeout_ms == 0 || io_uring_cq_ready(&u->ring))
        err = io_uring_submit_and_get_events(&u->ring);
    else if (timeout_ms < 0)
        err = io_uring_submit_and_wait(&u->ring, 1);
    else
        err = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
    if (err >= 0 || err == -ETIME || err == -EINTR)
        submitted(u); /* whatever the wait did */
    return err;
}

static int ur_wait(em_reactor *r, int timeout_ms, em_event *out, int max)
{
    struct em_uring *u = U;
    if (!ours(u))
        return -ECHILD; /* a forked child has no ring to wait on */
    em__ubufs_recycle(u->bufs);
    em__ubufs_free_list(&u->retired, true);
    if (u->held_head < u->held_len || u->adopted_len)
        timeout_ms = 0; /* completions wait already */
    arm_again(r);
    accept_again(u);
    if (u->stranded)
        sweep(r);
    int err = submit_and_wait(u, timeout_ms);
    if (err == -EEXIST) { /* another thread submitted first: a ring for this one */
        err = remake(r, true);
        if (!err)
            err = submit_and_wait(u, timeout_ms);
    }
    if (err < 0 && err != -ETIME && err != -EINTR && err != -EBUSY)
        return err;
    int n = report_adopted(r, out, max);
    while (n < max && u->held_head < u->held_len) {
        struct io_uring_cqe *cqe = &u->held[u->held_head++];
        if (take(r, cqe, em__ubufs_take(u->bufs, cqe->flags, cqe->res), &out[n]))
            n++;
    }
    if (u->held_head < u->held_len)
        return n; /* the ring's come after them */
    u->held_head = u->held_len = 0;
    unsigned head, seen = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        if (n == max)
            break;
        seen++;
        if (take(r, cqe, em__ubufs_take(u->bufs, cqe->flags, cqe->res), &out[n]))
            n++;
    }
    io_uring_cq_advance(&u->ring, seen);
    return n;
}

static void adopt(struct em_uring *u, int listener, uint32_t reg, int fd)
{
    adopted_fd *adopted = room_for_one(u->adopted, u->adopted_len, &u->adopted_cap, sizeof *adopted);
    if (!adopted) {
        close(fd); /* its client sees a reset, as from a backlog dropped */
        return;
    }
    u->adopted = adopted;
    u->adopted[u->adopted_len++] = (adopted_fd){listener, fd, reg};
}

/* The connections adopted, as events of their listeners (those gone close
 * them), as many as out has room for: the next wait reports the rest. */
static int report_adopted(em_reactor *r, em_event *out, int max)
{
    struct em_uring *u = U;
    int n = 0;
    unsigned i = 0;
    if (!u->adopted_len)
        return 0;
    for (; i < u->adopted_len && n < max; i++) {
        adopted_fd a = u->adopted[i];
        uring_slot *s = a.listener < u->slot_cap ? &u->slots[a.listener] : NULL;
        if (s && s->io && s->reg == a.reg)
            out[n++] = (em_event){.io = s->io, .events = EM_EV_RECV, .res = a.fd};
        else
            close(a.fd);
    }
    memmove(u->adopted, u->adopted + i, (u->adopted_len - i) * sizeof *u->adopted);
    u->adopted_len -= i;
    return n;
}

/* A completion of nothing, so that a host polling the ring's descriptor
 * comes for what waits outside the ring (connections adopted). */
static void wake_host(struct em_uring *u)
{
    struct io_uring_sqe *sqe = sqe_get(u);
    if (!sqe)
        return;
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, IGNORED);
    queued(u);
}

static void close_one(struct io_uring_cqe *cqe, const char *data, void *arg)
{
    EM_UNUSED(data);
    EM_UNUSED(arg);
    if (is_accept(cqe->user_data) && cqe->res >= 0)
        close(cqe->res);
}

/* At the end: the connections accepted that no listener took, those in
 * the kernel's overflow list too. */
static void close_accepted(struct em_uring *u)
{
    for (int round = 0; round < ABSORB_ROUNDS && overflowed(u); round++)
        if (!hold_all(u) || run_now(u) < 0)
            break;
    each_pending(u, close_one, NULL);
    for (unsigned i = 0; i < u->adopted_len; i++)
        close(u->adopted[i].fd);
    u->adopted_len = 0;
}

/* Sends queued on a ring another thread entered first never reached the
 * kernel: they go on the new one as they were (their headers are still
 * there: nothing was submitted). */
static void carry_sends(em_reactor *r, const struct io_uring *old)
{
    struct em_uring *u = U;
    for (unsigned i = io_uring_smp_load_acquire(old->sq.khead); i != old->sq.sqe_tail; i++) {
        const struct io_uring_sqe *from = &old->sq.sqes[i & old->sq.ring_mask];
        if (!is_send(from->user_data))
            continue;
        struct io_uring_sqe *to = sqe_get(u);
        if (!to)
            break; /* their connections find no result: they fail with EIO */
        *to = *from;
        queued(u);
    }
}

static void keep_one(struct io_uring_cqe *cqe, const char *data, void *arg)
{
    em_reactor *r = arg;
    uint64_t t = cqe->user_data;
    uring_slot *owner = is_accept(t) && cqe->res >= 0 ? accept_owner(r->be.uring, t) : NULL;
    if (owner)
        adopt(r->be.uring, slot_of_token(t), owner->reg, cqe->res);
    else if (is_accept(t) && cqe->res >= 0)
        close(cqe->res);
    if (t == IGNORED || !is_recv(t))
        return;
    em_conn *c = em__sigmap_get(&r->sigmap, t >> SIG_SHIFT);
    if (c && c->io.receiving && c->io.rgen == rgen_of(t) && (cqe->res <= 0 || data) &&
        !refused(r, t, cqe->res))
        em__conn_stash(c, data, cqe->res);
}

/* What the old ring's receives read that no connection has had yet goes
 * to their stashes, this turn's events first. */
static void keep_reads(em_reactor *r)
{
    struct em_uring *u = U;
    for (int i = r->dispatching + 1; i < r->events_len; i++) {
        em_event *ev = &r->events[i];
        if (ev->io && ev->io->type == EM_IO_CONN && (ev->events & EM_EV_RECV)) {
            em__conn_stash(EM_CONTAINER_OF(ev->io, em_conn, io), ev->data, ev->res);
            ev->io = NULL;
        }
    }
    /* what the kernel kept in its overflow list comes in as room is made */
    for (int round = 0; round < ABSORB_ROUNDS && overflowed(u); round++)
        if (!hold_all(u) || run_now(u) < 0)
            break;
    each_pending(u, keep_one, r);
    u->held_head = u->held_len = 0; /* their buffers go with the ring */
}

static void forget_requests(em_io *io, void *arg)
{
    EM_UNUSED(arg);
    if (io->type != EM_IO_CONN)
        return;
    io->armed = false;
    if (io->receiving)
        io->rgen++;
    io->receiving = false;
}

/* A new ring takes the place of the first, every registration armed again
 * on it; the old ring's requests go with it. */
static int remake(em_reactor *r, bool deferred)
{
    struct em_uring *u = U;
    struct io_uring fresh;
    int err = ring_new(r, &fresh, deferred);
    if (err)
        return err;
    run_now(u); /* the old ring's cancellations, where this thread may */
    keep_reads(r);
    em__io_each_registered(r, forget_requests, NULL);
    struct io_uring old = u->ring;
    em__ubufs_retire(&u->retired, u->bufs);
    u->bufs = NULL;
    u->ring = fresh;
    u->enabled = !deferred;
    u->pending = u->cancels = 0;
    carry_sends(r, &old);
    for (int fd = 0; fd < u->slot_cap; fd++)
        u->slots[fd].gen = 0;
    rearm_ctx ctx = {.r = r};
    em__io_each_registered(r, arm_missing, &ctx);
    if (ctx.err)
        err = ctx.err;
    for (int fd = 0; fd < u->slot_cap; fd++) { /* the old ring's requests are gone */
        u->slots[fd].born = u->slots[fd].gen;
        u->slots[fd].replaced = 0;
    }
    em__fd_release(r, old.ring_fd);
    io_uring_queue_exit(&old);
    return err;
}

/* The ring's descriptor, readable when completions wait. A ring that
 * defers them is made again without: a host polling it would never see
 * them. What each turn queued is submitted at its end from now on, so that
 * the host's wait is not kept from it. */
static int ur_fd(em_reactor *r)
{
    struct em_uring *u = U;
    if (!u->embedded && (u->ring.flags & IORING_SETUP_DEFER_TASKRUN)) {
        int err = remake(r, false);
        if (err)
            return err;
    }
    u->embedded = true;
    if (u->adopted_len)
        wake_host(u);
    ur_settle(r);
    return u->ring.ring_fd;
}

/* Submits what is queued and runs the completions due. */
static int run_now(struct em_uring *u) { return submit(u, true); }

/* Cancellations and completions are run now: a file no request holds is
 * closed by its close(). On a ring another thread entered first, on a new
 * one for this thread. */
static void ur_settle(em_reactor *r)
{
    struct em_uring *u = U;
    if (!ours(u))
        return;
    if (run_now(u) == -EEXIST && !remake(r, true))
        run_now(u);
}

/* A host waiting on the ring's descriptor gets the turn's requests at its
 * end; so does a caller of em_run_once the FIN of a connection closed by
 * the turn (em_run's next turn submits them at once anyway). */
static void ur_flush(em_reactor *r)
{
    struct em_uring *u = U;
    if (u->embedded && ours(u)) {
        arm_again(r);
        accept_again(u);
        if (u->adopted_len)
            wake_host(u);
    }
    if ((u->embedded && u->pending) || (u->cancels && !r->running))
        ur_settle(r);
}

const em_backend em__backend_uring = {
    .name = "io_uring",
    .init = ur_init,
    .destroy = ur_destroy,
    .add = ur_add,
    .modify = ur_modify,
    .del = ur_del,
    .wait = ur_wait,
    .fd = ur_fd,
    .settle = ur_settle,
    .flush = ur_flush,
    .send = ur_send,
    .sends_submit = ur_sends_submit,
};

#endif /* EM_HAVE_URING */
