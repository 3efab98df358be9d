/* Children reaped without pidfds: test_popen's and test_popen_opts's cases
 * again with EM_PIDFD=0 (waitpid(pid, WNOHANG) on SIGCHLD and on a timer),
 * and the fallback's own: it takes no status of the host's children, leaves
 * a host's SIGCHLD handler alone, and is chosen by itself when pidfd_open
 * is refused (ENOSYS, EPERM: here by a seccomp filter). */
#include <stdlib.h>

__attribute__((constructor)) static void pidfds_off(void) { setenv("EM_PIDFD", "0", 1); }

#include "test_popen.c"
#include "test_popen_opts.c"

#include <sys/syscall.h>

static bool sigchld_is_default(void)
{
    struct sigaction sa;
    ASSERT_EQ(sigaction(SIGCHLD, NULL, &sa), 0);
    return !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL;
}

/* One child, `sh -c 'exit CODE'`, to its unbind; returns the seconds from
 * em_popen to unbind. caught: whether libem catches SIGCHLD meanwhile. */
static double run_exit(int code, double timeout_s, bool caught)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .on_unbind = record_status, .ctx = &seen};
    char script[32];
    snprintf(script, sizeof script, "exit %d", code);
    const char *argv[] = {"sh", "-c", script, NULL};
    double t0 = now_mono();
    ASSERT_NOT_NULL(em_popen(r, argv, &rec_handler, &x));
    if (caught)
        ASSERT(!sigchld_is_default());
    ASSERT(run_until(r, &x.unbinds, timeout_s));
    ASSERT_EQ(seen.status_rc, 0);
    ASSERT(WIFEXITED(seen.wstatus));
    ASSERT_EQ(WEXITSTATUS(seen.wstatus), code);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
    return seen.at - t0;
}

/* SIGCHLD finds the exit: well before the 0.5 s check would. */
TEST(popen_fallback_catches_sigchld)
{
    ASSERT(sigchld_is_default());
    double took = run_exit(3, 5, true);
    ASSERT_DBL_LE(took, 0.45);
    ASSERT(sigchld_is_default()); /* given back by em_reactor_free */
}

/* The host's own child, forked outside libem, exits while libem's run:
 * libem's SIGCHLD handling leaves its status for the host's waitpid. */
TEST(popen_fallback_leaves_host_children_alone)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    pid_t own = fork();
    ASSERT_GE(own, 0);
    if (own == 0) {
        usleep(100 * 1000);
        _exit(7);
    }
    struct child_seen seen[3] = {{0}};
    rec x[3];
    const char *argv[] = {"sh", "-c", "sleep 0.2; exit 2", NULL};
    for (int i = 0; i < 3; i++) {
        x[i] = (rec){.tag = i + 1, .on_unbind = record_status, .ctx = &seen[i]};
        ASSERT_NOT_NULL(em_popen(r, argv, &rec_handler, &x[i]));
    }
    ASSERT(!sigchld_is_default());
    for (int i = 0; i < 3; i++)
        ASSERT(run_until(r, &x[i].unbinds, 5));
    run_for(r, 0.6); /* the timer's check too has passed */
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(seen[i].status_rc, 0);
        ASSERT(WIFEXITED(seen[i].wstatus));
        ASSERT_EQ(WEXITSTATUS(seen[i].wstatus), 2);
    }
    int st;
    pid_t p;
    while ((p = waitpid(own, &st, 0)) < 0 && errno == EINTR)
        ;
    ASSERT_EQ(p, own);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 7);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

static volatile sig_atomic_t host_sigchlds;
static void host_on_sigchld(int signo)
{
    (void)signo;
    host_sigchlds++;
}

/* A host with a SIGCHLD handler of its own keeps it; the timer's check
 * finds the exit then. */
TEST(popen_fallback_keeps_host_sigchld_handler)
{
    struct sigaction sa = {.sa_handler = host_on_sigchld, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGCHLD, &sa, NULL), 0);
    double took = run_exit(4, 5, false);
    ASSERT_DBL_LE(took, 1.5);
    ASSERT_GE(host_sigchlds, 1);
    struct sigaction now;
    ASSERT_EQ(sigaction(SIGCHLD, NULL, &now), 0);
    ASSERT(now.sa_handler == host_on_sigchld);
}

/* pidfd_open fails with err from now on, in this process (a test case's
 * own) and its children. */
static void refuse_pidfd_open(int err)
{
    refuse_syscall(SYS_pidfd_open, err);
    errno = 0;
    ASSERT_EQ(syscall(SYS_pidfd_open, getpid(), 0), -1);
    ASSERT_EQ(errno, err);
}

/* Without EM_PIDFD=0 too: a refused pidfd_open is not em_popen's failure. */
static void fallback_chosen_when_refused(int err)
{
    ASSERT_EQ(unsetenv("EM_PIDFD"), 0);
    refuse_pidfd_open(err);
    ASSERT(sigchld_is_default());
    double took = run_exit(9, 5, true);
    ASSERT_DBL_LE(took, 0.45);
}

TEST(popen_fallback_when_pidfd_open_is_enosys)
{
    fallback_chosen_when_refused(ENOSYS);
}

TEST(popen_fallback_when_pidfd_open_is_eperm)
{
    fallback_chosen_when_refused(EPERM);
}
