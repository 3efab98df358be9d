/*
 * The reactor's life: initialize_event_machine, run_machine, stop,
 * release_machine, signal_loopbreak, and the settings of the machine.
 *
 * run_machine drives libem with em_run_once instead of em_run so that the
 * wait happens outside libem, in poll(2) on em_backend_fd without the GVL:
 * other Ruby threads (EM.defer's pool, user threads) run while the reactor
 * sleeps, and Ruby's interrupts (Thread#raise, Ctrl-C) wake it.
 */
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <ruby/thread.h>

#include "rbem.h"

struct rbem rbem = {.wake_fd = -1};
static size_t max_timers = 100000; /* stock's default; settable before a run */
/* Stock accepts 10 per readiness unless told otherwise; libem chooses for
 * itself (em_set_accepts_per_event) until a program sets a count. */
static unsigned accepts_per_event;
static uint64_t turn;               /* turns run, for loopbreak's once-a-turn rule */
static uint64_t loopbreak_turn;     /* the turn of the last LoopbreakSignalled */
static bool loopbreak_pending;      /* an em_schedule for it is queued */

em_reactor *rbem_reactor(const char *caller)
{
    if (!rbem.r)
        rb_raise(rb_eRuntimeError, "eventmachine not initialized: %s", caller);
    return rbem.r;
}

static VALUE t_initialize_event_machine(VALUE self)
{
    (void)self;
    if (rbem.r)
        rb_raise(rb_eRuntimeError, "eventmachine already initialized: initialize_event_machine");
    /* epoll always: the poll backend has no descriptor to wait on without
     * the GVL (em_backend_fd), whatever EM_BACKEND says. */
    em_reactor_opts opts = {.backend = "epoll", .threadpool_size = 4, .max_timers = max_timers};
    em_reactor *r = em_reactor_new(&opts);
    if (!r)
        rb_sys_fail("initialize_event_machine");
    int bfd = em_backend_fd(r);
    int wake = bfd < 0 ? -1 : eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake < 0) {
        int err = bfd < 0 ? -bfd : errno;
        em_reactor_free(r);
        rb_syserr_fail(err, "initialize_event_machine");
    }
    em_set_accepts_per_event(r, accepts_per_event);
    rbem.wake_fd = wake;
    rbem.r = r;
    rbem.owner = getpid();
    rbem.stop_asked = false;
    rbem.error = Qnil;
    rbem.conns = rb_ivar_get(rbem_module, rb_intern("@conns"));
    rbem.timers = rb_ivar_get(rbem_module, rb_intern("@timers"));
    return Qnil;
}

static bool running_on(em_reactor *r)
{
    return rbem.r == r && !rbem.stop_asked && NIL_P(rbem.error);
}

/* Seconds to wait for I/O: until the next timer, capped by the quantum;
 * negative: no limit; 0: work is pending. */
static double wait_seconds(em_reactor *r)
{
    double t = em_backend_timeout(r);
    if (rbem.quantum_s > 0 && (t < 0 || t > rbem.quantum_s))
        t = rbem.quantum_s;
    return t;
}

struct wait {
    int backend_fd;
    int timeout_ms;
    bool interrupted; /* the wake descriptor was readable */
};

static void *poll_backend(void *arg)
{
    struct wait *w = arg;
    struct pollfd fds[2] = {{.fd = w->backend_fd, .events = POLLIN},
                            {.fd = rbem.wake_fd, .events = POLLIN}};
    w->interrupted = poll(fds, 2, w->timeout_ms) > 0 && (fds[1].revents & POLLIN);
    return NULL;
}

/* Ruby calls this to interrupt the wait (a signal, Thread#raise), from a
 * signal handler too: a write to an eventfd is async-signal-safe. */
static void interrupt_wait(void *arg)
{
    (void)arg;
    uint64_t one = 1;
    ssize_t n = write(rbem.wake_fd, &one, sizeof one);
    (void)n; /* a full counter already wakes it */
}

static int to_ms(double t)
{
    if (t < 0)
        return -1;
    double ms = t * 1000.0 + 0.999; /* round up: waking early only spins */
    return ms > 3600e3 ? 3600000 : (int)ms;
}

/* The wait releases the GVL. Its unblocking function is async-signal-safe,
 * which spares Ruby the helper thread it would otherwise start to deliver
 * interrupts. em_schedule and em_stop from other threads wake it through
 * libem's eventfd, which the backend descriptor includes. */
static void wait_for_io(em_reactor *r, double t)
{
    struct wait w = {.backend_fd = em_backend_fd(r), .timeout_ms = to_ms(t)};
    rb_nogvl(poll_backend, &w, interrupt_wait, NULL, RB_NOGVL_UBF_ASYNC_SAFE);
    if (w.interrupted) { /* woken by Ruby: clear the wake-up, take its interrupts */
        uint64_t n;
        ssize_t got = read(rbem.wake_fd, &n, sizeof n);
        (void)got;
    }
    rb_thread_check_ints();
}

/* One turn: wait without the GVL if nothing is due, then run libem's turn
 * with it. Ruby's pending interrupts (a trap's EM.stop, an Interrupt) are
 * taken before the turn, outside libem's stack, where raising is safe. */
static void one_turn(em_reactor *r)
{
    double t = wait_seconds(r);
    if (t != 0)
        wait_for_io(r, t);
    else
        rb_thread_check_ints();
    if (!running_on(r))
        return;
    turn++;
    int n = em_run_once(r, 0);
    if (n == -ECANCELED) /* freed by release_machine in a forked child */
        return;
    if (n == -EAGAIN || n == -ENOMEM) /* short of memory or descriptors for now */
        rb_thread_wait_for((struct timeval){.tv_usec = 1000});
    else if (n < 0)
        rb_syserr_fail(-n, "run_machine");
}

static VALUE t_run_machine(VALUE self)
{
    (void)self;
    em_reactor *r = rbem_reactor("run_machine");
    while (running_on(r))
        one_turn(r);
    rbem_raise_pending();
    return Qnil;
}

static VALUE t_run_machine_once(VALUE self)
{
    (void)self;
    em_reactor *r = rbem_reactor("run_machine_once");
    if (running_on(r))
        one_turn(r);
    rbem_raise_pending();
    return running_on(r) ? Qtrue : Qfalse;
}

/* A forked child must neither stop nor drive the parent's reactor: its
 * eventfd is shared with the parent. */
static bool owned(void) { return rbem.r && rbem.owner == getpid(); }

static VALUE t_stop(VALUE self)
{
    (void)self;
    rbem_reactor("stop"); /* stock raises outside EM.run too */
    rbem.stop_asked = true;
    if (owned())
        em_stop(rbem.r);
    return Qnil;
}

static VALUE t_stopping(VALUE self)
{
    (void)self;
    return rbem.r && rbem.stop_asked ? Qtrue : Qfalse;
}

/* em_reactor_free unbinds what is open, and those unbinds reach Ruby, as
 * stock's release_machine does; the reactor stays reachable meanwhile so
 * that they may still call the extension. In a child forked from inside one
 * of the reactor's turns (EM.fork_reactor) it lets go of the parent's
 * descriptors at once and calls nothing back; the turn on the child's stack
 * frees the rest should it ever return (one_turn). In the parent a running
 * reactor is left behind, as before. */
static VALUE t_release_machine(VALUE self)
{
    (void)self;
    em_reactor *r = rbem.r;
    if (!r)
        return Qnil;
    rbem.stop_asked = true;
    rbem_servers_forget();
    if (!em_reactor_running(r) || rbem.owner != getpid())
        em_reactor_free(r);
    rbem.r = NULL;
    close(rbem.wake_fd);
    rbem.wake_fd = -1;
    rbem_close_scheduled = 0;
    loopbreak_pending = false; /* its callback went with the reactor */
    rbem_raise_pending();
    return Qnil;
}

/* Stock reads its loopbreak pipe once a turn: every signal_loopbreak made
 * before that point gives one LoopbreakSignalled, one made after it waits
 * for the next turn, which never comes after EM.stop (EM.run's cleanup
 * then empties the next-tick queue). Both are kept: one em_schedule is
 * pending at a time, and a second delivery in a turn waits for the next. */
static void loopbreak(em_reactor *r, void *arg)
{
    (void)arg;
    loopbreak_pending = false;
    if (loopbreak_turn == turn) {
        loopbreak_pending = em_next_tick(r, loopbreak, NULL) == 0;
        return;
    }
    loopbreak_turn = turn;
    rbem_event(0, RBEM_LOOPBREAK_SIGNAL, 0);
}

/* Called from EM.defer's threads and EM.next_tick: em_schedule is the one
 * libem call made for any thread. */
static VALUE t_signal_loopbreak(VALUE self)
{
    (void)self;
    /* Ruby threads call this holding the GVL, as the reactor holds it
     * when it runs loopbreak: the flag needs no lock. */
    if (owned() && !loopbreak_pending)
        loopbreak_pending = em_schedule(rbem.r, loopbreak, NULL) == 0;
    return Qnil;
}

/* Stock's loop time is its monotonic clock given as a Time (seconds since
 * boot, not the date); programs use it for differences, and so it stays. */
static VALUE t_current_time(VALUE self)
{
    (void)self;
    if (!rbem.r)
        return Qnil;
    double t = em_now(rbem.r);
    time_t sec = (time_t)t;
    return rb_time_new(sec, (long)((t - (double)sec) * 1e6));
}

static VALUE t_get_connection_count(VALUE self)
{
    (void)self;
    return SIZET2NUM(em_connection_count(rbem_reactor("get_connection_count")) +
                     rbem_server_count());
}

static VALUE t_num_close_scheduled(VALUE self)
{
    (void)self;
    return SIZET2NUM(rbem_close_scheduled);
}

static VALUE t_get_max_timer_count(VALUE self)
{
    (void)self;
    return SIZET2NUM(max_timers);
}

static VALUE t_set_max_timer_count(VALUE self, VALUE count)
{
    (void)self;
    long n = NUM2LONG(count);
    max_timers = n < 100 ? 100 : (size_t)n; /* stock's floor */
    if (rbem.r)
        em_set_max_timers(rbem.r, max_timers);
    return Qnil;
}

static VALUE t_get_simultaneous_accept_count(VALUE self)
{
    (void)self;
    return UINT2NUM(accepts_per_event);
}

static VALUE t_set_simultaneous_accept_count(VALUE self, VALUE count)
{
    (void)self;
    long n = NUM2LONG(count);
    accepts_per_event = n < 1 ? 1 : n > 1000000 ? 1000000 : (unsigned)n; /* stock's floor */
    if (rbem.r)
        em_set_accepts_per_event(rbem.r, accepts_per_event);
    return Qnil;
}

/* Stock's quantum is its poller's longest wait, in milliseconds, 5 ms to
 * 5 minutes. libem needs none (timers wake it exactly); kept as a cap. */
static VALUE t_set_timer_quantum(VALUE self, VALUE ms)
{
    (void)self;
    long n = NUM2LONG(ms);
    if (n < 5 || n > 5 * 60 * 1000)
        rb_raise(rb_eRuntimeError, "invalid timer-quantum");
    rbem.quantum_s = (double)n / 1000.0;
    return Qnil;
}

/* Stock looks for idle connections every heartbeat (2 s by default), so
 * its inactivity timeouts fire up to one heartbeat late. libem times each
 * connection exactly, which meets any heartbeat: the value is kept for
 * the getter and validated as stock does, and needs no other effect. */
static double heartbeat_s = 2.0;

static VALUE t_get_heartbeat_interval(VALUE self)
{
    (void)self;
    return DBL2NUM(heartbeat_s);
}

static VALUE t_set_heartbeat_interval(VALUE self, VALUE secs)
{
    (void)self;
    double s = NUM2DBL(secs);
    if (!(s > 0))
        return Qfalse;
    heartbeat_s = s;
    return Qtrue;
}

static VALUE t_set_rlimit_nofile(VALUE self, VALUE n)
{
    (void)self;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return INT2FIX(-1);
    if (!NIL_P(n) && NUM2LONG(n) > 0) {
        rl.rlim_cur = (rlim_t)NUM2LONG(n);
        setrlimit(RLIMIT_NOFILE, &rl); /* stock ignores a refusal and reports */
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return LONG2NUM((long)rl.rlim_cur);
}

static VALUE t_library_type(VALUE self)
{
    (void)self;
    return ID2SYM(rb_intern("extension"));
}

static VALUE t_true(VALUE self)
{
    (void)self;
    return Qtrue;
}

static VALUE t_false(VALUE self)
{
    (void)self;
    return Qfalse;
}

/* libem always uses epoll here (see initialize_event_machine); asking for
 * select instead is accepted and changes nothing. */
static VALUE t_set_epoll(VALUE self, VALUE val)
{
    (void)self;
    return val;
}

static VALUE t_set_kqueue(VALUE self, VALUE val)
{
    (void)self;
    if (RTEST(val))
        rb_raise(rbem_eUnsupported, "kqueue is not supported on this platform");
    return val;
}

void rbem_init_reactor(void)
{
    VALUE m = rbem_module;
    rb_define_module_function(m, "initialize_event_machine", t_initialize_event_machine, 0);
    rb_define_module_function(m, "run_machine", t_run_machine, 0);
    rb_define_module_function(m, "run_machine_without_threads", t_run_machine, 0);
    rb_define_module_function(m, "run_machine_once", t_run_machine_once, 0);
    rb_define_module_function(m, "release_machine", t_release_machine, 0);
    rb_define_module_function(m, "stop", t_stop, 0);
    rb_define_module_function(m, "stopping?", t_stopping, 0);
    rb_define_module_function(m, "signal_loopbreak", t_signal_loopbreak, 0);
    rb_define_module_function(m, "current_time", t_current_time, 0);
    rb_define_module_function(m, "get_connection_count", t_get_connection_count, 0);
    rb_define_module_function(m, "num_close_scheduled", t_num_close_scheduled, 0);
    rb_define_module_function(m, "get_max_timer_count", t_get_max_timer_count, 0);
    rb_define_module_function(m, "set_max_timer_count", t_set_max_timer_count, 1);
    rb_define_module_function(m, "get_simultaneous_accept_count",
                              t_get_simultaneous_accept_count, 0);
    rb_define_module_function(m, "set_simultaneous_accept_count",
                              t_set_simultaneous_accept_count, 1);
    rb_define_module_function(m, "set_timer_quantum", t_set_timer_quantum, 1);
    rb_define_module_function(m, "set_rlimit_nofile", t_set_rlimit_nofile, 1);
    rb_define_module_function(m, "get_heartbeat_interval", t_get_heartbeat_interval, 0);
    rb_define_module_function(m, "set_heartbeat_interval", t_set_heartbeat_interval, 1);
    rb_define_module_function(m, "library_type", t_library_type, 0);
    rb_define_module_function(m, "epoll", t_true, 0);
    rb_define_module_function(m, "epoll?", t_true, 0);
    rb_define_module_function(m, "epoll=", t_set_epoll, 1);
    rb_define_module_function(m, "kqueue", t_false, 0);
    rb_define_module_function(m, "kqueue?", t_false, 0);
    rb_define_module_function(m, "kqueue=", t_set_kqueue, 1);
}
