/* em_add_signal_handler: callbacks on the reactor thread, several per
 * signal and per reactor, dispositions restored on em_reactor_free. Each case
 * runs in its own forked process, so dispositions do not leak between them. */
#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
