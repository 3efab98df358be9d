/* The reactor: its life cycle and one turn of the loop (order in em.h). */
#include "em-internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define EM_DEFAULT_POOL_SIZE 20

double em__clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

em_sig em__next_sig(em_reactor *r) { return r->next_sig++; }

int em__may_add(const em_reactor *r) { return r->shutting_down ? -ECANCELED : 0; }

/* fork() runs this in the parent; posix_spawn (em_popen, system) does not,
 * and there the child execs at once, closing every libem descriptor. */
static atomic_uint forks;
static pthread_once_t forks_counted = PTHREAD_ONCE_INIT;

static void count_fork(void) { atomic_fetch_add(&forks, 1); }

static void count_forks(void) { pthread_atfork(NULL, count_fork, NULL); }

const char *em_backend_names(void) { return EM__BACKEND_NAMES; }

#ifdef EM_HAVE_URING
/* "auto": io_uring where the kernel gives a ring, else epoll. */
static const em_backend em__backend_auto = {.name = "auto"};
#endif

static const em_backend *find_backend(const char *name)
{
    if (!name)
        name = getenv("EM_BACKEND");
    if (!name || !*name || !strcmp(name, "epoll"))
        return &em__backend_epoll;
    if (!strcmp(name, "poll"))
        return &em__backend_poll;
#ifdef EM_HAVE_URING
    if (!strcmp(name, "io_uring"))
        return &em__backend_uring;
    if (!strcmp(name, "auto"))
        return &em__backend_auto;
#endif
    return NULL;
}

static int backend_init(em_reactor *r, const em_backend *be)
{
#ifdef EM_HAVE_URING
    if (be == &em__backend_auto) {
        r->backend = &em__backend_uring;
        if (!em__backend_uring.init(r))
            return 0;
        be = &em__backend_epoll;
    }
#endif
    r->backend = be;
    return be->init(r);
}

static int wake_open(em_reactor *r)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    r->wake = (em_io){.fd = fd, .type = EM_IO_WAKE};
    int err = em__io_open(r, &r->wake, EM_EV_READ);
    if (err)
        close(fd);
    return err;
}

em_reactor *em_reactor_new(const em_reactor_opts *opts)
{
    const em_backend *be = find_backend(opts ? opts->backend : NULL);
    if (!be) {
        errno = EM_EBACKEND;
        return NULL;
    }
    em_reactor *r = em__calloc(1, sizeof *r);
    char *buf = em__malloc(EM_READ_BUF_SIZE);
    int err = r && buf ? 0 : -ENOMEM;
    if (!err) {
        r->read_buf = buf;
        r->next_sig = 1;
        r->owner_pid = getpid();
        const char *splice_env = getenv("EM_SPLICE");
        r->splice_off = splice_env && !strcmp(splice_env, "0");
        const char *pidfd_env = getenv("EM_PIDFD");
        r->pidfd_off = pidfd_env && !strcmp(pidfd_env, "0");
        pthread_once(&forks_counted, count_forks);
        r->forks_seen = atomic_load(&forks);
        r->now = em__clock();
        em__timers_init(&r->timers);
        r->timers.max_user = opts ? opts->max_timers : 0;
        unsigned pool = opts && opts->threadpool_size ? opts->threadpool_size
                                                      : EM_DEFAULT_POOL_SIZE;
        err = em__pool_init(&r->pool, pool);
    }
    if (!err && pthread_mutex_init(&r->xlock, NULL)) {
        em__pool_destroy(r, &r->pool);
        err = -ENOMEM;
    }
    if (!err && (err = backend_init(r, be)) < 0) {
        pthread_mutex_destroy(&r->xlock);
        em__pool_destroy(r, &r->pool);
    }
    if (!err)
        r->accept_per_report = em__accepts_per_report(r->backend);
    if (!err && (err = wake_open(r)) < 0) {
        r->backend->destroy(r);
        pthread_mutex_destroy(&r->xlock);
        em__pool_destroy(r, &r->pool);
    }
    if (err) {
        if (r)
            em__fds_free(r);
        em__free(buf);
        em__free(r);
        errno = -err;
        return NULL;
    }
    em__allocator_pin(1);
    return r;
}

/* Freed in a forked child, the reactor adds nothing to the set it shares
 * with the parent (a server resuming when the child closes descriptors). */
int em__io_watch(em_reactor *r, em_io *io, unsigned interest)
{
    if (r->forked)
        return 0;
    int err = io->registered ? r->backend->modify(r, io, interest)
                             : r->backend->add(r, io, interest);
    if (!err) {
        io->registered = true;
        io->interest = (uint8_t)interest;
    }
    return err;
}

/* A forked child shares the parent's epoll set: a removal there would take
 * the parent's registrations of the same sockets with it. */
void em__io_unwatch(em_reactor *r, em_io *io)
{
    if (io->registered && !r->forked)
        r->backend->del(r, io);
    io->registered = false;
    io->interest = 0;
}

int em__io_open(em_reactor *r, em_io *io, unsigned interest)
{
    int err = em__fd_claim(r, io->fd);
    if (!err && (err = em__io_watch(r, io, interest)) < 0)
        em__fd_release(r, io->fd);
    return err;
}

void em__io_close(em_reactor *r, em_io *io)
{
    if (io->fd < 0)
        return;
    em__io_unwatch(r, io);
    em__fd_release(r, io->fd);
    close(io->fd);
    io->fd = -1;
    em__io_settle(r);
}

void em__io_settle(em_reactor *r)
{
    if (r->backend->settle && !r->forked)
        r->backend->settle(r);
}

void em__io_forget(em_reactor *r, em_io *io)
{
    if (r->backend->close_unregisters) {
        io->registered = false;
        io->interest = 0;
    } else {
        em__io_unwatch(r, io);
    }
}

bool em__maybe_forked_with(em_reactor *r, em_sig sig)
{
    unsigned n = atomic_load_explicit(&forks, memory_order_relaxed);
    if (n != r->forks_seen) {
        r->forks_seen = n;
        r->shared_below = r->next_sig;
    }
    return sig < r->shared_below;
}

static void visit(em_io *io, void (*fn)(em_io *io, void *ctx), void *ctx)
{
    if (io && io->registered)
        fn(io, ctx);
}

void em__io_each_registered(em_reactor *r, void (*fn)(em_io *io, void *ctx), void *ctx)
{
    visit(&r->wake, fn, ctx);
    for (em_server *s = r->servers; s; s = s->next)
        visit(&s->io, fn, ctx);
    for (size_t i = 0; i < r->sigmap.cap; i++) {
        em_conn *c = em__sigmap_at(&r->sigmap, i);
        if (!c)
            continue;
        visit(&c->io, fn, ctx);
        if (c->flags & EM_CF_POPEN)
            visit(em__child_io(c), fn, ctx);
    }
}

/* Async-signal-safe (em_stop from a signal handler): a lock-free atomic
 * and write(), and errno as it was found. */
_Static_assert(ATOMIC_BOOL_LOCK_FREE == 2, "em_stop must not take a lock");

void em__wake(em_reactor *r)
{
    if (atomic_exchange(&r->wake_pending, true))
        return;
    int saved = errno;
    uint64_t one = 1;
    ssize_t n = write(r->wake.fd, &one, sizeof one);
    EM_UNUSED(n); /* EAGAIN: the counter is already non-zero, which is enough */
    errno = saved;
}

static void wake_drain(em_reactor *r)
{
    uint64_t v;
    ssize_t n = read(r->wake.fd, &v, sizeof v);
    EM_UNUSED(n);
    atomic_store(&r->wake_pending, false);
}

void em_stop(em_reactor *r)
{
    if (!r)
        return;
    atomic_store(&r->stop_requested, true);
    em__wake(r);
}

/* ------------------------------------------------------- cross-thread */

static em_callback *callback_new(em_cb cb, void *arg)
{
    em_callback *c = em__malloc(sizeof *c);
    if (c) {
        c->cb = cb;
        c->arg = arg;
    }
    return c;
}

int em_next_tick(em_reactor *r, em_cb cb, void *arg)
{
    if (!r || !cb)
        return -EINVAL;
    em_callback *c = callback_new(cb, arg);
    if (!c)
        return -ENOMEM;
    em__cbq_push(&r->ticks, c);
    return 0;
}

int em_schedule(em_reactor *r, em_cb cb, void *arg)
{
    if (!r || !cb)
        return -EINVAL;
    em_callback *c = callback_new(cb, arg);
    if (!c)
        return -ENOMEM;
    pthread_mutex_lock(&r->xlock);
    em__cbq_push(&r->scheduled, c);
    pthread_mutex_unlock(&r->xlock);
    atomic_store_explicit(&r->xpending, true, memory_order_release);
    em__wake(r);
    return 0;
}

void em__job_done(em_reactor *r, em_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&r->xlock);
    if (r->done_tail)
        r->done_tail->next = job;
    else
        r->done_head = job;
    r->done_tail = job;
    pthread_mutex_unlock(&r->xlock);
    atomic_store_explicit(&r->xpending, true, memory_order_release);
    em__wake(r);
}

static em_job *take_done(em_reactor *r)
{
    pthread_mutex_lock(&r->xlock);
    em_job *jobs = r->done_head;
    r->done_head = r->done_tail = NULL;
    pthread_mutex_unlock(&r->xlock);
    return jobs;
}

/* Jobs left when a done callback released the reactor go back, for
 * em_reactor_free to drop with the rest. */
static void run_done_jobs(em_reactor *r)
{
    for (em_job *j = take_done(r), *next; j; j = next) {
        next = j->next;
        if (r->released) {
            j->next = r->done_head;
            r->done_head = j;
            if (!r->done_tail)
                r->done_tail = j;
            continue;
        }
        j->done(r, j->arg); /* frees j */
    }
}

static void run_callbacks(em_reactor *r, em_callback *c)
{
    while (c) {
        em_callback *next = c->next;
        em_cb cb = c->cb;
        void *arg = c->arg;
        em__free(c);
        if (!r->released)
            cb(r, arg);
        c = next;
    }
}

/* The flag spares the lock in the turns where no other thread queued
 * anything, which is nearly all of them. */
static void run_cross_thread(em_reactor *r)
{
    if (!atomic_exchange_explicit(&r->xpending, false, memory_order_acquire))
        return;
    pthread_mutex_lock(&r->xlock);
    em_callback *scheduled = em__cbq_take_all(&r->scheduled);
    pthread_mutex_unlock(&r->xlock);
    run_callbacks(r, scheduled);
    run_done_jobs(r);
}

/* Ticks queued before the turn, then em_schedule() callbacks, then finished
 * pool work. Whatever these queue waits for the next turn. */
static void run_queued(em_reactor *r)
{
    run_callbacks(r, em__cbq_take_all(&r->ticks));
    run_cross_thread(r);
}

/* -------------------------------------------------------------- a turn */

static void flush_dirty(em_reactor *r)
{
    em_conn *c = r->dirty;
    r->dirty = NULL;
    while (c) {
        em_conn *next = c->list_next;
        c->flags &= ~(uint32_t)EM_CF_DIRTY;
        c->list_next = NULL;
        if (c->state == EM_CS_CLOSING) {
            em__close_list_push(c); /* closed while waiting to be flushed */
        } else {
            if (em__stash_has(c) || (c->flags & EM_CF_INPUT_LOST))
                em__stash_feed(c);
            em__conn_flush(c);
        }
        c = next;
    }
}

static void free_dead_servers(em_reactor *r)
{
    while (r->dead_servers) {
        em_server *s = r->dead_servers;
        r->dead_servers = s->next;
        em__free(s->unix_path);
        em__free(s);
    }
}

/* Writes before closes, so that a connection is never freed while on the
 * flush list: a closing connection is never added to it again.
 *
 * The phase finishes the connections closed before it began (the first
 * flush hands over those closed while on the flush list, and closes those
 * whose close waited for their data). Those closed by the phase itself (an
 * unbind's retry that failed at once, again and again) are unbound in the
 * next turn's, so that every turn ends and timers run; their descriptors
 * are closed now all the same, before the poller is asked. What a flush
 * lists for a backend's sends (sends.c) is sent right after it, and the
 * results taken, so that closes waiting for the bytes come in the same
 * phase. */
#define SEND_FLUSHES 64

static void flush_and_close(em_reactor *r)
{
    if (!r->dirty && !r->closing && !r->dead_servers && !r->send_len)
        return; /* most turns of a busy server: twice per turn */
    if (r->dirty)
        flush_dirty(r);
    if (r->send_len) /* what the flush and the turn's handlers listed */
        em__sends_flush(r);
    em_conn *batch = r->closing;
    r->closing = r->closing_tail = NULL;
    /* each send flush writes bytes or finds sockets full, as send() loops do;
     * bounded all the same, the rest waits for the next phase */
    unsigned send_flushes = 0;
    for (;;) {
        if (r->dirty) {
            flush_dirty(r);
        } else if (r->send_len && send_flushes++ < SEND_FLUSHES) {
            em__sends_flush(r);
        } else if (batch) {
            em_conn *c = batch;
            batch = c->list_next;
            c->list_next = NULL;
            em__conn_finish(c);
        } else {
            break;
        }
    }
    for (em_conn *c = r->closing; c; c = c->list_next)
        em__conn_close_fd(c);
    free_dead_servers(r);
    em__sends_phase_end(r);
}

void em__close_list_push(em_conn *c)
{
    em_reactor *r = c->r;
    if (c->flags & EM_CF_DIRTY)
        return; /* the flush list hands it over */
    c->list_next = NULL;
    if (r->closing_tail)
        r->closing_tail->list_next = c;
    else
        r->closing = c;
    r->closing_tail = c;
}

/* A stop request is not work: em_stop wakes the poller through the
 * eventfd, which ends the one wait it must cut short, and em_run_once turns
 * after it wait as usual. */
static bool work_pending(em_reactor *r)
{
    return r->ticks.head || r->dirty || r->closing || r->send_len;
}

static int wait_ms(em_reactor *r, double max_wait_s)
{
    if (work_pending(r))
        return 0;
    double wait = max_wait_s;
    double next = em__timers_next(&r->timers);
    if (next >= 0) {
        double until = next - em__clock();
        if (until < 0)
            until = 0;
        if (wait < 0 || until < wait)
            wait = until;
    }
    if (wait < 0)
        return -1;
    if (wait > 86400.0)
        return 86400000;
    int ms = (int)(wait * 1000.0);
    return ms < wait * 1000.0 ? ms + 1 : ms; /* round up: never wake early */
}

/* A connection a backend accepted for a listener stopped since is closed:
 * its client sees the reset it would have seen from the backlog. */
static void drop_event(const em_event *ev)
{
    if (ev->io && ev->io->type == EM_IO_SERVER && (ev->events & EM_EV_RECV) && ev->res >= 0)
        close(ev->res);
}

static void dispatch(em_reactor *r, int n)
{
    r->events_len = n;
    for (int i = 0; i < n; i++) {
        r->dispatching = i;
        em_io *io = r->events[i].io;
        if (!io || io->dead) { /* NULL: the backend took it back (a stash) */
            drop_event(&r->events[i]);
            continue;
        }
        switch (io->type) {
        case EM_IO_CONN:
            em__conn_on_event(EM_CONTAINER_OF(io, em_conn, io), &r->events[i]);
            break;
        case EM_IO_SERVER:
            em__server_on_event(EM_CONTAINER_OF(io, em_server, io), &r->events[i]);
            break;
        case EM_IO_CHILD:
            em__child_on_event(io);
            break;
        case EM_IO_WAKE: /* run them now: the wake-up is for them */
            wake_drain(r);
            run_cross_thread(r);
            em__signals_run(r);
            break;
        }
    }
    r->events_len = 0;
}

/* A callback that released the reactor (em__release_inherited) ends the
 * turn at the next phase; within dispatch every io is dead by then. */
static int turn(em_reactor *r, double max_wait_s)
{
    r->now = em__clock();
    em__timers_run(r);
    if (!r->released)
        run_queued(r);
    if (!r->released)
        flush_and_close(r);
    em__sigpipe_restore(r); /* a SIGPIPE from elsewhere is not held up */
    if (r->released)
        return 0;
    int n = r->backend->wait(r, wait_ms(r, max_wait_s), r->events, EM_MAX_EVENTS);
    r->now = em__clock();
    r->busy = n >= EM_BUSY_EVENTS;
    if (n > 0)
        dispatch(r, n);
    if (!r->released)
        flush_and_close(r);
    em__sigpipe_restore(r);
    if (r->backend->flush && !r->released)
        r->backend->flush(r);
    return n;
}

int em_run_once(em_reactor *r, double max_wait_s)
{
    if (!r)
        return -EINVAL;
    if (r->in_turn || r->freeing)
        return -EBUSY;
    if (max_wait_s != max_wait_s) /* NaN */
        return -EINVAL;
    r->in_turn = true;
    int n = turn(r, max_wait_s);
    r->in_turn = false;
    if (r->released && !r->running) {
        em__reactor_free_now(r);
        return -ECANCELED;
    }
    return n;
}

/* Unbinds every connection (reason 0, unsent data dropped) and frees servers
 * and timers. Connections made by unbind callbacks meanwhile go the same way. */
static void shut_down(em_reactor *r)
{
    r->shutting_down = true;
    em__cbq_free_list(em__cbq_take_all(&r->ticks));
    pthread_mutex_lock(&r->xlock);
    em__cbq_free_list(em__cbq_take_all(&r->scheduled));
    pthread_mutex_unlock(&r->xlock);
    while (r->conn_count || r->dirty || r->closing) {
        for (size_t i = 0; i < r->sigmap.cap; i++) {
            em_conn *c = em__sigmap_at(&r->sigmap, i);
            if (c)
                em__conn_shutdown(c); /* changes no map entry */
        }
        flush_and_close(r);
    }
    em__server_free_all(r);
    free_dead_servers(r);
    em__timers_clear(r);
    em__cbq_free_list(em__cbq_take_all(&r->ticks));
    em__sigpipe_restore(r);
    em__io_settle(r); /* em_run returns with every socket really closed */
    r->shutting_down = false;
}

int em_run(em_reactor *r)
{
    if (!r)
        return -EINVAL;
    if (r->running || r->in_turn || r->freeing)
        return -EBUSY;
    r->running = true;
    int err = 0;
    while (!atomic_load(&r->stop_requested)) {
        int n = em_run_once(r, -1);
        if (r->released)
            break;
        if (n == -EAGAIN || n == -ENOMEM || n == -EINTR) {
            /* the poller is short of memory for now: try again shortly */
            struct timespec pause = {0, 1000 * 1000};
            nanosleep(&pause, NULL);
        } else if (n < 0) {
            err = n; /* EBADF, EINVAL: the poller itself is broken */
            break;
        }
    }
    r->in_turn = true; /* em_run_once from unbind during shutdown is refused */
    if (!r->released)
        shut_down(r);
    r->in_turn = false;
    atomic_store(&r->stop_requested, false);
    r->running = false;
    if (r->released)
        em__reactor_free_now(r);
    return err;
}

bool em_reactor_running(const em_reactor *r) { return r && (r->running || r->in_turn); }

bool em_stopping(const em_reactor *r)
{
    return r && atomic_load(&((em_reactor *)r)->stop_requested);
}

void em_reactor_free(em_reactor *r)
{
    if (!r || r->freeing)
        return;
    if (r->running || r->in_turn) {
        if (r->owner_pid != getpid())
            em__release_inherited(r); /* freed as the turn unwinds */
        return;
    }
    em__reactor_free_now(r);
}

void em__reactor_free_now(em_reactor *r)
{
    r->freeing = true; /* em_run and em_run_once are refused from here on */
    /* In a forked child: release descriptors and memory, call nothing back,
     * remove no file, and take no lock a vanished thread may hold. */
    if (!r->released)
        r->forked = r->owner_pid != getpid();
    if (r->forked && !r->released)
        pthread_mutex_init(&r->xlock, NULL);
    shut_down(r);
    em__pool_destroy(r, &r->pool);
    if (!r->forked)
        run_done_jobs(r); /* deferred work's done callbacks run exactly once */
    shut_down(r);         /* whatever those callbacks made */
    em__orphans_reap(r);
    em__signals_free(r);
    em__io_close(r, &r->wake);
    r->backend->destroy(r);
    em__timers_destroy(&r->timers);
    em__sigmap_destroy(&r->sigmap);
    em__tls_reactor_free(r);
    em__pipes_free(r);
    em__chunk_cache_free(r);
    em__fds_free(r);
    pthread_mutex_destroy(&r->xlock);
    em__free(r->read_buf);
    em__free(r->send_list);
    em__free(r);
    em__allocator_pin(-1);
}

double em_now(const em_reactor *r) { return r ? r->now : 0; }

size_t em_connection_count(const em_reactor *r) { return r ? r->conn_count : 0; }

const char *em_backend_name(const em_reactor *r) { return r ? r->backend->name : NULL; }

/* The epoll backend makes its descriptor on the first call: const in what
 * the caller can observe. */
int em_backend_fd(const em_reactor *r) { return r ? r->backend->fd((em_reactor *)r) : -EINVAL; }

double em_backend_timeout(const em_reactor *r)
{
    if (!r)
        return -1;
    if (work_pending((em_reactor *)r) || atomic_load(&((em_reactor *)r)->xpending))
        return 0;
    double next = em__timers_next(&r->timers);
    if (next < 0)
        return -1;
    double until = next - em__clock();
    return until > 0 ? until : 0;
}
