/* em_add_signal_handler: callbacks on the reactor thread, several per
 * signal and per reactor, dispositions restored on em_reactor_free. Each case
 * runs in its own forked process, so dispositions do not leak between them. */
#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

struct sig_rec {
    volatile int calls;
    pthread_t thread; /* of the last call */
    em_reactor *r;    /* the reactor the callback got */
    int order;        /* global order of the last call */
};

static int call_seq;

static void on_sig(em_reactor *r, void *arg)
{
    struct sig_rec *s = arg;
    s->calls++;
    s->thread = pthread_self();
    s->r = r;
    s->order = ++call_seq;
}

static void own_handler(int signo) { (void)signo; }
static volatile sig_atomic_t own_calls;
static void own_counting_handler(int signo)
{
    (void)signo;
    own_calls++;
}

static void (*current_handler(int signo))(int)
{
    struct sigaction sa;
    ASSERT_EQ(sigaction(signo, NULL, &sa), 0);
    return sa.sa_handler;
}

struct kill_later {
    int signo;
    double delay;
    bool use_raise; /* raise() in this thread instead of kill(getpid()) */
    bool unblock;   /* unblock signo in this thread (it inherits the mask) */
};

static void *killer(void *arg)
{
    struct kill_later *k = arg;
    if (k->unblock) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, k->signo);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    }
    struct timespec ts = {(time_t)k->delay, (long)((k->delay - (double)(time_t)k->delay) * 1e9)};
    nanosleep(&ts, NULL);
    if (k->use_raise)
        raise(k->signo); /* delivered to this thread, not the reactor's */
    else
        kill(getpid(), k->signo);
    return NULL;
}

/* ---------------------------------------------------------- delivery */

TEST(signal_usr1_usr2_callbacks_on_reactor_thread)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct sig_rec s1 = {0}, s2 = {0};
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_sig, &s1), 0);
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR2, on_sig, &s2), 0);
    /* nothing before a signal */
    run_for(r, 0.05);
    ASSERT_EQ(s1.calls, 0);
    ASSERT_EQ(s2.calls, 0);
    /* no callback inside kill(): it runs from the loop */
    ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
    ASSERT_EQ(s1.calls, 0);
    ASSERT(run_until(r, &s1.calls, 5));
    ASSERT_EQ(s1.calls, 1);
    ASSERT_EQ(s2.calls, 0);
    ASSERT(pthread_equal(s1.thread, pthread_self()));
    ASSERT(s1.r == r);
    ASSERT_EQ(raise(SIGUSR2), 0);
    ASSERT(run_until(r, &s2.calls, 5));
    ASSERT_EQ(s2.calls, 1);
    ASSERT_EQ(s1.calls, 1);
    ASSERT(pthread_equal(s2.thread, pthread_self()));
    /* again: handlers stay installed */
    for (int i = 2; i <= 4; i++) {
        ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
        double deadline = now_mono() + 5;
        while (s1.calls < i && now_mono() < deadline)
            ASSERT_GE(em_run_once(r, 0.05), 0);
        ASSERT_EQ(s1.calls, i);
    }
    ASSERT_EQ(s2.calls, 1);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A signal taken by another thread still calls back on the reactor thread,
 * and wakes a reactor blocked in the poller. */
TEST(signal_from_other_thread_wakes_reactor)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct sig_rec s1 = {0}, s2 = {0};
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_sig, &s1), 0);
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR2, on_sig, &s2), 0);

    struct kill_later k1 = {.signo = SIGUSR1, .delay = 0.2, .use_raise = true};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, killer, &k1), 0);
    double t0 = now_mono();
    /* one long wait: the signal must cut it short */
    while (!s1.calls && now_mono() - t0 < 5)
        ASSERT_GE(em_run_once(r, 5.0), 0);
    double took = now_mono() - t0;
    pthread_join(t, NULL);
    ASSERT_EQ(s1.calls, 1);
    ASSERT(pthread_equal(s1.thread, pthread_self()));
    ASSERT_DBL_LE(took, 2.0);

    /* the same with the reactor thread blocking the signal: the kernel must
     * deliver it to the other thread */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
    struct kill_later k2 = {.signo = SIGUSR2, .delay = 0.1, .unblock = true};
    ASSERT_EQ(pthread_create(&t, NULL, killer, &k2), 0);
    t0 = now_mono();
    while (!s2.calls && now_mono() - t0 < 5)
        ASSERT_GE(em_run_once(r, 5.0), 0);
    pthread_join(t, NULL);
    ASSERT_EQ(s2.calls, 1);
    ASSERT(pthread_equal(s2.thread, pthread_self()));
    ASSERT_DBL_LE(now_mono() - t0, 2.0);
    ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------- several handlers */

TEST(signal_two_handlers_for_one_signal_both_run)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct sig_rec a = {0}, b = {0}, other = {0};
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_sig, &a), 0);
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_sig, &b), 0);
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR2, on_sig, &other), 0);
    ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
    double deadline = now_mono() + 5;
    while ((!a.calls || !b.calls) && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    run_for(r, 0.05);
    ASSERT_EQ(a.calls, 1);
    ASSERT_EQ(b.calls, 1);
    ASSERT_EQ(other.calls, 0);
    ASSERT(pthread_equal(a.thread, pthread_self()));
    ASSERT(pthread_equal(b.thread, pthread_self()));
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Two reactors, one signal: each reactor's handler runs. Freeing one keeps
 * the other's working; freeing both restores the disposition. */
TEST(signal_two_reactors_one_signal)
{
    int fd0 = open_fd_count();
    struct sigaction mine = {.sa_handler = own_handler};
    sigemptyset(&mine.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &mine, NULL), 0);
    em_reactor *r1 = new_reactor(), *r2 = new_reactor();
    struct sig_rec a = {0}, b = {0};
    ASSERT_EQ(em_add_signal_handler(r1, SIGUSR1, on_sig, &a), 0);
    ASSERT_EQ(em_add_signal_handler(r2, SIGUSR1, on_sig, &b), 0);
    ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
    double deadline = now_mono() + 5;
    while ((!a.calls || !b.calls) && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r1, 0.01), 0);
        ASSERT_GE(em_run_once(r2, 0.01), 0);
    }
    ASSERT_EQ(a.calls, 1);
    ASSERT_EQ(b.calls, 1);
    ASSERT(a.r == r1);
    ASSERT(b.r == r2);
    REACTOR_FREE_CHECKED(r1);
    ASSERT(current_handler(SIGUSR1) != own_handler); /* r2 still handles it */
    ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
    deadline = now_mono() + 5;
    while (b.calls < 2 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r2, 0.05), 0);
    ASSERT_EQ(b.calls, 2);
    ASSERT_EQ(a.calls, 1);
    REACTOR_FREE_CHECKED(r2);
    ASSERT(current_handler(SIGUSR1) == own_handler);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------ restoring dispositions */

TEST(signal_previous_disposition_restored_on_free)
{
    int fd0 = open_fd_count();
    struct sigaction mine = {.sa_handler = own_counting_handler};
    sigemptyset(&mine.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &mine, NULL), 0);
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR2, &ign, NULL), 0);
    ASSERT(current_handler(SIGHUP) == SIG_DFL);

    em_reactor *r = new_reactor();
    struct sig_rec s1 = {0}, s1b = {0}, s2 = {0}, sh = {0};
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_sig, &s1), 0);
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_sig, &s1b), 0);
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR2, on_sig, &s2), 0);
    ASSERT_EQ(em_add_signal_handler(r, SIGHUP, on_sig, &sh), 0);
    ASSERT(current_handler(SIGUSR1) != own_counting_handler);
    ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
    ASSERT(run_until(r, &s1.calls, 5));
    ASSERT_EQ(own_calls, 0); /* libem's handler took it */
    REACTOR_FREE_CHECKED(r);

    ASSERT(current_handler(SIGUSR1) == own_counting_handler);
    ASSERT(current_handler(SIGUSR2) == SIG_IGN);
    ASSERT(current_handler(SIGHUP) == SIG_DFL);
    /* and it works: the test's own handler gets the signal now */
    ASSERT_EQ(raise(SIGUSR1), 0);
    ASSERT_EQ(own_calls, 1);
    ASSERT_EQ(raise(SIGUSR2), 0); /* ignored, as before */
    ASSERT_EQ(s1.calls, 1);
    ASSERT_EQ(s2.calls, 0);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A handler the host installs after libem's stays when the reactor goes:
 * what was found at the first join comes back only over libem's own. */
TEST(signal_host_handler_set_later_survives_free)
{
    em_reactor *r = new_reactor();
    struct sig_rec s1 = {0};
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_sig, &s1), 0);
    struct sigaction mine = {.sa_handler = own_counting_handler};
    sigemptyset(&mine.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &mine, NULL), 0);
    int before = own_calls;
    REACTOR_FREE_CHECKED(r);
    ASSERT(current_handler(SIGUSR1) == own_counting_handler);
    ASSERT_EQ(raise(SIGUSR1), 0);
    ASSERT_EQ(own_calls, before + 1);
    signal(SIGUSR1, SIG_DFL);
}

/* A new reactor after the first was freed installs its handler again. */
TEST(signal_handler_again_after_free)
{
    int fd0 = open_fd_count();
    for (int round = 0; round < 3; round++) {
        em_reactor *r = new_reactor();
        struct sig_rec s = {0};
        ASSERT_EQ(em_add_signal_handler(r, SIGUSR2, on_sig, &s), 0);
        ASSERT_EQ(kill(getpid(), SIGUSR2), 0);
        ASSERT(run_until(r, &s.calls, 5));
        ASSERT_EQ(s.calls, 1);
        REACTOR_FREE_CHECKED(r);
        ASSERT(current_handler(SIGUSR2) == SIG_DFL);
    }
    ASSERT_NO_FD_LEAK(fd0);
}

/* --------------------------------------------------------- refusals */

TEST(signal_uncatchable_and_bad_arguments_are_einval)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct sig_rec s = {0};
    ASSERT_EQ(em_add_signal_handler(r, SIGKILL, on_sig, &s), -EINVAL);
    ASSERT_EQ(em_add_signal_handler(r, SIGSTOP, on_sig, &s), -EINVAL);
    ASSERT_EQ(em_add_signal_handler(r, 0, on_sig, &s), -EINVAL);
    ASSERT_EQ(em_add_signal_handler(r, -1, on_sig, &s), -EINVAL);
    ASSERT_EQ(em_add_signal_handler(r, 100000, on_sig, &s), -EINVAL);
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, NULL, &s), -EINVAL);
    ASSERT_EQ(em_add_signal_handler(NULL, SIGUSR1, on_sig, &s), -EINVAL);
    ASSERT(current_handler(SIGUSR1) == SIG_DFL); /* nothing installed */
    ASSERT(current_handler(SIGKILL) == SIG_DFL);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* em_reactor_free right after a signal arrived, before a turn ran: no
 * callback inside an em_ call other than post_init. */
TEST(signal_pending_at_free_not_called)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct sig_rec s = {0};
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_sig, &s), 0);
    ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_EQ(s.calls, 0);
    ASSERT(current_handler(SIGUSR1) == SIG_DFL);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------ forked children */

static void wait_status(pid_t pid, int *st)
{
    pid_t p;
    do
        p = waitpid(pid, st, 0);
    while (p < 0 && errno == EINTR);
    ASSERT_EQ(p, pid);
}

/* A pre-fork server's worker that never execs: a signal sent to it gets
 * the disposition libem found (here the default: it terminates the
 * worker), and the master's callback never runs. */
static void signal_to_worker(int signo)
{
    em_reactor *r = new_reactor();
    struct sig_rec s = {0};
    ASSERT_EQ(em_add_signal_handler(r, signo, on_sig, &s), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        for (int i = 0; i < 100; i++)
            usleep(20 * 1000);
        _exit(0);
    }
    ASSERT_EQ(kill(pid, signo), 0);
    int st;
    wait_status(pid, &st);
    ASSERT(WIFSIGNALED(st));
    ASSERT_EQ(WTERMSIG(st), signo);
    run_for(r, 0.1);
    ASSERT_EQ(s.calls, 0);
    REACTOR_FREE_CHECKED(r);
}

TEST(signal_forked_worker_terminated_by_sigterm) { signal_to_worker(SIGTERM); }
TEST(signal_forked_worker_gets_default_usr1) { signal_to_worker(SIGUSR1); }

/* The same for a signal the worker sends itself, in a child made by the
 * fork system call directly (no pthread_atfork hooks run: the handler's own
 * check must catch it), and with the user's handler found before libem's. */
static volatile sig_atomic_t child_own_calls;
static void child_own_handler(int signo)
{
    (void)signo;
    child_own_calls++;
}

TEST(signal_child_without_atfork_gets_found_handler)
{
    struct sigaction mine = {.sa_handler = child_own_handler};
    sigemptyset(&mine.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR2, &mine, NULL), 0);
    em_reactor *r = new_reactor();
    struct sig_rec s = {0};
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR2, on_sig, &s), 0);
    pid_t pid = (pid_t)syscall(SYS_fork);
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        kill((pid_t)syscall(SYS_getpid), SIGUSR2);
        _exit(child_own_calls == 1 ? 0 : 3);
    }
    int st;
    wait_status(pid, &st);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
    run_for(r, 0.1);
    ASSERT_EQ(s.calls, 0);
    REACTOR_FREE_CHECKED(r);
}

/* A worker may handle signals itself, on a reactor of its own; freeing its
 * copy of the master's reactor leaves the worker's handler in place. */
TEST(signal_forked_worker_own_reactor_own_handler)
{
    em_reactor *r = new_reactor();
    struct sig_rec s = {0};
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_sig, &s), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        em_reactor *mine = em_reactor_new(NULL);
        struct sig_rec w = {0};
        if (!mine || em_add_signal_handler(mine, SIGUSR1, on_sig, &w))
            _exit(2);
        em_reactor_free(r);
        kill(getpid(), SIGUSR1);
        double end = now_mono() + 5;
        while (!w.calls && now_mono() < end)
            em_run_once(mine, 0.05);
        bool ok = w.calls == 1 && s.calls == 0;
        em_reactor_free(mine);
        _exit(ok && current_handler(SIGUSR1) == SIG_DFL ? 0 : 3);
    }
    int st;
    wait_status(pid, &st);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
    run_for(r, 0.1);
    ASSERT_EQ(s.calls, 0);
    ASSERT_EQ(kill(getpid(), SIGUSR1), 0); /* the master's handler is intact */
    ASSERT(run_until(r, &s.calls, 5));
    REACTOR_FREE_CHECKED(r);
}

/* Another thread adds and removes signal handlers without pause while this
 * one forks: em_reactor_free in each child must never find the signal
 * table's lock held by a thread that does not exist there. */
static atomic_int churn_stop;

static void nop_cb(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
}

static void *churn_handlers(void *arg)
{
    (void)arg;
    em_reactor_opts o = {.threadpool_size = 1};
    while (!atomic_load(&churn_stop)) {
        em_reactor *x = em_reactor_new(&o);
        if (!x)
            continue;
        em_add_signal_handler(x, SIGUSR2, nop_cb, NULL);
        em_reactor_free(x);
    }
    return NULL;
}

static void hung_child(int signo)
{
    (void)signo;
    _exit(99);
}

TEST(signal_fork_while_other_thread_uses_table)
{
    em_reactor *r = new_reactor();
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, nop_cb, NULL), 0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, churn_handlers, NULL), 0);
    int hung = 0;
    for (int i = 0; i < 1000 && !hung; i++) {
        pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            signal(SIGALRM, hung_child);
            alarm(2);
            em_reactor_free(r);
            _exit(0);
        }
        int st;
        wait_status(pid, &st);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 99)
            hung++;
        else
            ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    atomic_store(&churn_stop, 1);
    pthread_join(t, NULL);
    ASSERT_EQ(hung, 0);
    REACTOR_FREE_CHECKED(r);
}
TEST_TIMEOUT(signal_fork_while_other_thread_uses_table, 60);

/* ------------------------------------------------ storms and races */

/* While the reactor is busy in a callback, another process sends a storm of
 * one signal and then another signal: the second must still run its
 * callback (a self-pipe of one byte per signal filled up and lost it). The
 * storm is of a real-time signal, which the kernel queues rather than
 * merges, so that each one sent runs the C handler once. */
static struct sig_rec storm_rt, storm_term;

/* Whether any signal sent to the process is still waiting for a thread. */
static bool shared_pending(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    bool pending = false;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "ShdPnd:", 7))
            pending = strtoull(line + 7, NULL, 16) != 0;
    if (f)
        fclose(f);
    return pending;
}
static pid_t storm_pid;

/* Spins rather than sleeps: the storm then interrupts it at every signal
 * instead of being merged by the kernel while this thread sleeps. */
static void wait_out_storm(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    int st;
    pid_t p;
    while ((p = waitpid(storm_pid, &st, WNOHANG)) == 0 || (p < 0 && errno == EINTR))
        ;
    ASSERT_EQ(p, storm_pid);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(signal_storm_does_not_lose_another_signal)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    ASSERT_EQ(em_add_signal_handler(r, SIGRTMIN, on_sig, &storm_rt), 0);
    ASSERT_EQ(em_add_signal_handler(r, SIGTERM, on_sig, &storm_term), 0);
    pid_t parent = getpid();
    storm_pid = fork();
    ASSERT_GE(storm_pid, 0);
    if (storm_pid == 0) {
        for (int i = 0; i < 100000; i++) {
            while (sigqueue(parent, SIGRTMIN, (union sigval){0}) < 0)
                if (errno != EAGAIN)
                    _exit(2);
        }
        /* the kernel hands out a pending SIGTERM before queued real-time
         * signals: let the storm be handled first */
        while (shared_pending(parent))
            usleep(1000);
        _exit(kill(parent, SIGTERM) < 0 ? 2 : 0);
    }
    ASSERT_NE(em_add_timer(r, 0, wait_out_storm, NULL), 0);
    ASSERT(run_until(r, &storm_term.calls, 10));
    ASSERT_EQ(storm_term.calls, 1);
    ASSERT_GE(storm_rt.calls, 1);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}
TEST_TIMEOUT(signal_storm_does_not_lose_another_signal, 60);

/* Reactors with a handler are freed on one thread while the signal's C
 * handler runs on others: the handler must never touch a freed reactor nor
 * write to a descriptor number after it was closed (and reused: a pipe
 * made right after the free must stay empty). */
static atomic_int race_stop;

static void *spin_until_stopped(void *arg)
{
    (void)arg;
    while (!atomic_load(&race_stop))
        ;
    return NULL;
}

TEST(signal_free_races_handler_on_other_thread)
{
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &ign, NULL), 0);
    pthread_t spinners[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&spinners[i], NULL, spin_until_stopped, NULL), 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &set, NULL), 0); /* handlers run elsewhere */
    pid_t parent = getpid();
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        double end = now_mono() + 2;
        while (now_mono() < end)
            kill(parent, SIGUSR1);
        _exit(0);
    }
    long stray = 0, rounds = 0;
    double end = now_mono() + 1.5;
    while (now_mono() < end) {
        em_reactor *r = new_reactor();
        ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, nop_cb, NULL), 0);
        em_reactor_free(r);
        int p[2];
        ASSERT_EQ(pipe(p), 0);
        usleep(50);
        int queued = 0;
        ASSERT_EQ(ioctl(p[0], FIONREAD, &queued), 0);
        stray += queued > 0;
        close(p[0]);
        close(p[1]);
        rounds++;
    }
    atomic_store(&race_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(spinners[i], NULL);
    int st;
    wait_status(pid, &st);
    ASSERT_GT(rounds, 10);
    ASSERT_EQ(stray, 0);
    ASSERT(current_handler(SIGUSR1) == SIG_IGN);
}
TEST_TIMEOUT(signal_free_races_handler_on_other_thread, 30);

/* The reactor a forked child inherited is its parent's: the child may not
 * add handlers to it (they would never run, and would outlive its free),
 * and freeing it there leaves the parent's handler working. */
TEST(signal_handler_on_inherited_reactor_refused)
{
    em_reactor *r = new_reactor();
    struct sig_rec s = {0};
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_sig, &s), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        struct sig_rec w = {0};
        int rc1 = em_add_signal_handler(r, SIGUSR2, on_sig, &w);
        int rc2 = em_add_signal_handler(r, SIGUSR1, on_sig, &w);
        em_reactor_free(r);
        signal(SIGUSR2, SIG_IGN);
        raise(SIGUSR2);
        _exit(rc1 == -EINVAL && rc2 == -EINVAL ? 0 : 3);
    }
    int st;
    wait_status(pid, &st);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
    ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
    ASSERT(run_until(r, &s.calls, 5));
    REACTOR_FREE_CHECKED(r);
}
