/* em_stop from a POSIX signal handler: async-signal-safe, so a program
 * may stop its reactor straight from SIGALRM or SIGTERM's handler, and the
 * interrupted code finds errno as it was. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <sys/time.h>
#include <unistd.h>

static em_reactor *reactor;
static volatile sig_atomic_t errno_kept = 1;

static void on_alarm(int signo)
{
    (void)signo;
    errno = 12345;
    em_stop(reactor);
    if (errno != 12345)
        errno_kept = 0;
}

static void never(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
}

TEST(em_stop_from_a_signal_handler_ends_em_run)
{
    reactor = em_reactor_new(NULL);
    ASSERT(reactor);
    /* a timer far away: em_run would wait for it without the stop */
    ASSERT_GT(em_add_timer(reactor, 30.0, never, NULL), 0);
    struct sigaction sa = {.sa_handler = on_alarm};
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGALRM, &sa, NULL), 0);
    struct itimerval in_100ms = {.it_value = {.tv_usec = 100000}};
    ASSERT_EQ(setitimer(ITIMER_REAL, &in_100ms, NULL), 0);
    double start = now_mono();
    ASSERT_EQ(em_run(reactor), 0);
    ASSERT_LT(now_mono() - start, 5.0);
    ASSERT(errno_kept);
    em_reactor_free(reactor);
}

TEST(backend_names_are_the_accepted_ones)
{
    char names[64];
    snprintf(names, sizeof names, "%s", em_backend_names());
    int count = 0;
    for (char *save = NULL, *name = strtok_r(names, " ", &save); name;
         name = strtok_r(NULL, " ", &save), count++) {
        em_reactor *r = em_reactor_new(&(em_reactor_opts){.backend = name});
        ASSERT(r);
        if (!strcmp(name, "auto")) /* what it picked */
            ASSERT(!strcmp(em_backend_name(r), "io_uring") || !strcmp(em_backend_name(r), "epoll"));
        else
            ASSERT_EQ(strcmp(em_backend_name(r), name), 0);
        em_reactor_free(r);
    }
    ASSERT_GE(count, 2);
    errno = 0;
    ASSERT(!em_reactor_new(&(em_reactor_opts){.backend = "kqueue-on-linux"}));
    ASSERT_EQ(errno, EM_EBACKEND);
}
