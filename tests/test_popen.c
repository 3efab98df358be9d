/* em_popen, em_get_pid, em_get_status with real child processes. */
#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

/* What unbind saw of the child. */
struct child_seen {
    int status_rc; /* em_get_status inside unbind */
    int wstatus;
    pid_t pid;     /* em_get_pid inside unbind */
    double at;     /* now_mono() of unbind */
};

static void record_status(em_conn *c, rec *x, int reason)
{
    (void)reason;
    struct child_seen *s = x->ctx;
    s->wstatus = -1;
    s->status_rc = em_get_status(c, &s->wstatus);
    s->pid = em_get_pid(c);
    s->at = now_mono();
}

static bool contains(const rec *x, const char *s)
{
    size_t n = strlen(s);
    if (x->len < n)
        return false;
    for (size_t i = 0; i + n <= x->len; i++)
        if (memcmp(x->buf + i, s, n) == 0)
            return true;
    return false;
}

static bool pid_reaped(pid_t pid)
{
    errno = 0;
    return waitpid(pid, NULL, WNOHANG) < 0 && errno == ECHILD;
}

/* --------------------------------------------------------------- cat */

TEST(popen_cat_echo_then_close_status_in_unbind)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .check_pattern = true, .on_unbind = record_status, .ctx = &seen};
    const char *argv[] = {"cat", NULL};
    em_conn *c = em_popen(r, argv, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(x.post_inits, 1);
    pid_t pid = em_get_pid(c);
    ASSERT_GT(pid, 0);
    ASSERT_EQ(kill(pid, 0), 0);
    int st;
    ASSERT_EQ(em_get_status(c, &st), -EAGAIN);
    ASSERT(!em_is_watch_only(c));
    /* more than a socket buffer, in pieces */
    const size_t total = 1u << 20;
    char *buf = malloc(total);
    ASSERT_NOT_NULL(buf);
    fill_pattern(buf, 0, total);
    for (size_t off = 0; off < total; off += 65536)
        ASSERT_EQ(em_send_data(c, buf + off, 65536), 0);
    free(buf);
    double deadline = now_mono() + 10;
    while (x.bytes_in < total && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(x.bytes_in, total); /* checked against the pattern */
    ASSERT_EQ(x.unbinds, 0);
    ASSERT_EQ(em_get_status(c, &st), -EAGAIN); /* cat still waits for input */
    /* closing closes cat's stdin: it exits 0 */
    double t0 = now_mono();
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT_EQ(x.unbinds, 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_DBL_LE(seen.at - t0, 1.5); /* no grace period needed */
    ASSERT_EQ(x.reason, 0);
    ASSERT_EQ(seen.status_rc, 0);
    ASSERT_EQ(seen.pid, pid);
    ASSERT(WIFEXITED(seen.wstatus));
    ASSERT_EQ(WEXITSTATUS(seen.wstatus), 0);
    ASSERT(pid_reaped(pid));
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* The child ends by itself: em_close_write gives cat EOF, it writes the
 * rest and exits; unbind follows the EOF of its output and its exit. */
TEST(popen_cat_close_write_then_natural_exit)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = record_status, .ctx = &seen};
    const char *argv[] = {"cat", NULL};
    em_conn *c = em_popen(r, argv, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(em_send_data(c, "hello, ", 7), 0);
    ASSERT_EQ(em_send_data(c, "child\n", 6), 0);
    ASSERT_EQ(em_close_write(c), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_EQ(x.reason, 0);
    ASSERT_EQ(x.len, 13);
    ASSERT(memcmp(x.buf, "hello, child\n", 13) == 0);
    ASSERT_EQ(seen.status_rc, 0);
    ASSERT(WIFEXITED(seen.wstatus));
    ASSERT_EQ(WEXITSTATUS(seen.wstatus), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------- exit status */

TEST(popen_exit_status_3)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .on_unbind = record_status, .ctx = &seen};
    const char *argv[] = {"sh", "-c", "exit 3", NULL};
    em_conn *c = em_popen(r, argv, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    pid_t pid = em_get_pid(c);
    ASSERT_GT(pid, 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_EQ(x.reason, 0);
    ASSERT_EQ(seen.status_rc, 0);
    ASSERT_EQ(seen.pid, pid);
    ASSERT(WIFEXITED(seen.wstatus));
    ASSERT_EQ(WEXITSTATUS(seen.wstatus), 3);
    ASSERT(pid_reaped(pid));
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* The child closes its output long before it exits: unbind waits for the
 * exit, so the status is there. */
TEST(popen_unbind_waits_for_exit_after_output_closed)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = record_status, .ctx = &seen};
    const char *argv[] = {"sh", "-c", "echo bye; exec >&- <&-; sleep 0.5; exit 7", NULL};
    double t0 = now_mono();
    ASSERT_NOT_NULL(em_popen(r, argv, &rec_handler, &x));
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_DBL_GE(seen.at - t0, 0.45);
    ASSERT_EQ(seen.status_rc, 0);
    ASSERT(WIFEXITED(seen.wstatus));
    ASSERT_EQ(WEXITSTATUS(seen.wstatus), 7);
    ASSERT(contains(&x, "bye\n"));
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ----------------------------------------------------------- refusals */

TEST(popen_missing_program_is_enoent)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec x = {.tag = 1};
    const char *a1[] = {"libem-test-no-such-program-9f3a", NULL}; /* PATH lookup */
    ASSERT_NULL_ERRNO(em_popen(r, a1, &rec_handler, &x), ENOENT);
    const char *a2[] = {"/nonexistent/dir/prog", "arg", NULL};
    ASSERT_NULL_ERRNO(em_popen(r, a2, &rec_handler, &x), ENOENT);
    /* exists, not executable: EACCES (also for root, without any x bit) */
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/not-exec", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    write_all(fd, "#!/bin/sh\nexit 0\n", 18);
    close(fd);
    const char *a3[] = {path, NULL};
    ASSERT_NULL_ERRNO(em_popen(r, a3, &rec_handler, &x), EACCES);
    rm_tmpdir(dir);
    const char *empty[] = {"", NULL};
    ASSERT_NULL_ERRNO(em_popen(r, empty, &rec_handler, &x), EINVAL);
    const char *none[] = {NULL};
    ASSERT_NULL_ERRNO(em_popen(r, none, &rec_handler, &x), EINVAL);
    ASSERT_NULL_ERRNO(em_popen(r, NULL, &rec_handler, &x), EINVAL);
    const char *cat[] = {"cat", NULL};
    ASSERT_NULL_ERRNO(em_popen(r, cat, NULL, &x), EINVAL);
    ASSERT_EQ(x.post_inits, 0);
    ASSERT_EQ(em_connection_count(r), 0);
    /* no zombie left behind by the failed attempts */
    errno = 0;
    ASSERT_EQ(waitpid(-1, NULL, WNOHANG), -1);
    ASSERT_EQ(errno, ECHILD);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(popen_pid_and_status_on_other_connections)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec x = {.tag = 1};
    em_conn *c = em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    int st;
    ASSERT_EQ(em_get_pid(c), -1);
    ASSERT_EQ(em_get_status(c, &st), -EINVAL);
    ASSERT_EQ(em_get_pid(NULL), -1);
    ASSERT_EQ(em_get_status(NULL, &st), -EINVAL);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------- grace period and kill */

/* A grace period short enough for the cases whose subject is not its
 * length (popen_child_ignoring_sigterm_is_killed checks the default). */
static const em_popen_opts quick = {.grace_s = 0.3};

/* grace: the child's grace period, or 0 for the default */
static void kill_child(const char *script, double grace, int want_sig, double min_s, double max_s)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = record_status, .ctx = &seen};
    const char *argv[] = {"sh", "-c", script, NULL};
    em_conn *c = em_popen_with(r, argv, &(em_popen_opts){.grace_s = grace}, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    pid_t pid = em_get_pid(c);
    /* wait until the trap is set */
    double deadline = now_mono() + 5;
    while (!contains(&x, "ready\n") && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT(contains(&x, "ready\n"));
    double t0 = now_mono();
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &x.unbinds, max_s + 1.5));
    double took = seen.at - t0;
    ASSERT_DBL_GE(took, min_s);
    ASSERT_DBL_LE(took, max_s);
    ASSERT_EQ(x.reason, 0);
    ASSERT_EQ(seen.status_rc, 0);
    ASSERT(WIFSIGNALED(seen.wstatus));
    ASSERT_EQ(WTERMSIG(seen.wstatus), want_sig);
    ASSERT(pid_reaped(pid));
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Ignores SIGTERM: SIGTERM 2 s after the close, SIGKILL 2 s later. */
TEST_TIMEOUT(popen_child_ignoring_sigterm_is_killed, 15);
TEST(popen_child_ignoring_sigterm_is_killed)
{
    kill_child("trap '' TERM; echo ready; while :; do sleep 0.1; done", 0, SIGKILL, 3.5, 6.0);
}

/* Does not read stdin, but dies of SIGTERM, a grace period (0.3 s) after
 * the close. */
TEST_TIMEOUT(popen_child_not_reading_stdin_gets_sigterm, 15);
TEST(popen_child_not_reading_stdin_gets_sigterm)
{
    kill_child("echo ready; while :; do sleep 0.1; done", quick.grace_s, SIGTERM, 0.25, 1.5);
}

/* The escalation does not block the loop: a periodic timer keeps firing
 * while the child is being killed. */
static int tick_count;
static double tick_last, tick_max_gap;
static void on_tick(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    double t = now_mono();
    if (tick_count > 0 && t - tick_last > tick_max_gap)
        tick_max_gap = t - tick_last;
    tick_last = t;
    tick_count++;
}

TEST_TIMEOUT(popen_kill_escalation_does_not_block_loop, 15);
TEST(popen_kill_escalation_does_not_block_loop)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = record_status, .ctx = &seen};
    const char *argv[] = {"sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done",
                          NULL};
    em_conn *c = em_popen_with(r, argv, &(em_popen_opts){.grace_s = 0.5}, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    double deadline = now_mono() + 5;
    while (!contains(&x, "ready\n") && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    tick_count = 0;
    tick_max_gap = 0;
    em_timer_id t = em_add_periodic_timer(r, 0.05, on_tick, NULL);
    ASSERT_NE(t, 0);
    ASSERT_EQ(close_conn(c, false), 0);
    deadline = now_mono() + 8;
    while (!x.unbinds && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, -1), 0); /* blocks only until the next event */
    ASSERT_EQ(x.unbinds, 1);
    ASSERT(WIFSIGNALED(seen.wstatus));
    ASSERT_GE(tick_count, 15); /* SIGKILL after two periods: 1 s of ticks */
    ASSERT_DBL_LE(tick_max_gap, 0.15);
    ASSERT_EQ(em_cancel_timer(r, t), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------- slow child, rhythm */

TEST(popen_periodic_timer_keeps_rhythm_while_child_exits_slowly)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = record_status, .ctx = &seen};
    tick_count = 0;
    tick_max_gap = 0;
    const double interval = 0.05;
    em_timer_id t = em_add_periodic_timer(r, interval, on_tick, NULL);
    ASSERT_NE(t, 0);
    const char *argv[] = {"sh", "-c", "sleep 1; echo done", NULL};
    double t0 = now_mono();
    em_conn *c = em_popen(r, argv, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT_GT(em_get_pid(c), 0);
    double deadline = now_mono() + 5;
    while (!x.unbinds && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, -1), 0);
    ASSERT_EQ(x.unbinds, 1);
    ASSERT_DBL_GE(seen.at - t0, 0.95);
    ASSERT_EQ(x.len, 5);
    ASSERT(memcmp(x.buf, "done\n", 5) == 0);
    ASSERT_EQ(seen.status_rc, 0);
    ASSERT(WIFEXITED(seen.wstatus));
    ASSERT_EQ(WEXITSTATUS(seen.wstatus), 0);
    ASSERT_GE(tick_count, 15);
    ASSERT_DBL_LE(tick_max_gap, 3 * interval);
    ASSERT_EQ(em_cancel_timer(r, t), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------- descriptor leaks */

TEST(popen_no_parent_fd_leaks_into_child)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    /* descriptors that would be inherited if libem did not stop them */
    int p[2];
    ASSERT_EQ(pipe(p), 0); /* no O_CLOEXEC */
    int lfd = tcp_listen_raw("127.0.0.1", 4, NULL);
    ASSERT_EQ(fcntl(lfd, F_SETFD, 0), 0); /* inheritable */
    rec u = {.tag = 2};
    ASSERT_NOT_NULL(em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &u));
    /* another child running at the same time: its socketpair must not
     * leak into the second child either */
    rec other = {.tag = 3};
    const char *cat[] = {"cat", NULL};
    em_conn *oc = em_popen(r, cat, &rec_handler, &other);
    ASSERT_NOT_NULL(oc);

    struct child_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = record_status, .ctx = &seen};
    const char *argv[] = {"ls", "-1", "/proc/self/fd", NULL};
    ASSERT_NOT_NULL(em_popen(r, argv, &rec_handler, &x));
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_EQ(seen.status_rc, 0);
    ASSERT(WIFEXITED(seen.wstatus));
    ASSERT_EQ(WEXITSTATUS(seen.wstatus), 0);
    /* expected: 0, 1, 2 and the directory ls itself opened */
    char *out = calloc(1, x.len + 1);
    memcpy(out, x.buf, x.len);
    bool have[3] = {false, false, false};
    int extra = 0;
    char extra_names[256] = "";
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        int fd = atoi(line);
        if (fd >= 0 && fd <= 2 && line[0] >= '0' && line[0] <= '2' && line[1] == '\0') {
            have[fd] = true;
        } else {
            extra++;
            strncat(extra_names, line, sizeof extra_names - strlen(extra_names) - 2);
            strcat(extra_names, " ");
        }
    }
    free(out);
    ASSERT(have[0] && have[1] && have[2]);
    if (extra != 1)
        FAIL("child had %d descriptors beyond stdio (want 1, ls's own): %s", extra,
             extra_names);

    ASSERT_EQ(close_conn(oc, false), 0);
    ASSERT(run_until(r, &other.unbinds, 5));
    ASSERT_EQ(close_conn(u.conn, false), 0);
    ASSERT(run_until(r, &u.unbinds, 5));
    close(p[0]);
    close(p[1]);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------- reactor free */

/* em_reactor_free with children still running: unbind(0) for each, every
 * child reaped (no zombie), quickly, even one that ignores SIGTERM (killed
 * after its grace period). */
TEST(popen_reactor_free_reaps_running_children)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec a = {.tag = 1}, b = {.tag = 2, .store = true};
    const char *cat[] = {"cat", NULL};
    const char *stubborn[] = {"sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done",
                              NULL};
    em_conn *ca = em_popen(r, cat, &rec_handler, &a);
    em_conn *cb = em_popen_with(r, stubborn, &quick, &rec_handler, &b);
    ASSERT_NOT_NULL(ca);
    ASSERT_NOT_NULL(cb);
    pid_t pa = em_get_pid(ca), pb = em_get_pid(cb);
    double deadline = now_mono() + 5;
    while (!contains(&b, "ready\n") && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(em_timer_count(r), 0);
    double t0 = now_mono();
    em_reactor_free(r);
    ASSERT_DBL_LE(now_mono() - t0, 1.5);
    ASSERT_EQ(a.unbinds, 1);
    ASSERT_EQ(b.unbinds, 1);
    ASSERT_EQ(a.reason, 0);
    ASSERT_EQ(b.reason, 0);
    ASSERT(pid_reaped(pa));
    ASSERT(pid_reaped(pb));
    rec_free(&b);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------------- detach */

/* em_detach hands the child over with its stdio: unbind follows at once
 * (it does not wait for the child), the child is neither signalled nor
 * reaped, and em_get_status says so (-ECHILD). The child then ends when
 * its new owner closes its stdin, with its own status. */
TEST(popen_detach_hands_child_over)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .on_unbind = record_status, .ctx = &seen};
    const char *argv[] = {"cat", NULL};
    em_conn *c = em_popen(r, argv, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    pid_t pid = em_get_pid(c);
    run_for(r, 0.05);
    double t0 = now_mono();
    int fd = em_detach(c);
    ASSERT_GE(fd, 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_DBL_LE(seen.at - t0, 1.0); /* not after a grace period */
    ASSERT_EQ(x.reason, 0);
    ASSERT_EQ(seen.pid, pid);
    ASSERT_EQ(seen.status_rc, -ECHILD);
    ASSERT_EQ(kill(pid, 0), 0);
    /* the child is the new owner's: its stdio works through fd */
    int fl = fcntl(fd, F_GETFL);
    ASSERT_EQ(fcntl(fd, F_SETFL, fl & ~O_NONBLOCK), 0);
    write_all(fd, "ping\n", 5);
    char buf[8];
    ASSERT_EQ(read(fd, buf, sizeof buf), 5);
    ASSERT_EQ(memcmp(buf, "ping\n", 5), 0);
    run_for(r, 0.1);
    ASSERT_EQ(em_timer_count(r), 0);
    close(fd);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid); /* not reaped by libem */
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* --------------------------------------------------- the grace period */

/* A child still running when the reactor stops gets SIGTERM, and
 * em_reactor_free waits for it (up to the grace period) instead of killing
 * it at once: one that needs 0.3 s to clean up finishes its cleanup. */
TEST_TIMEOUT(popen_reactor_free_gives_grace_period, 20);
TEST(popen_reactor_free_gives_grace_period)
{
    int fd0 = open_fd_count();
    char dir[64], done[128], script[512];
    make_tmpdir(dir, sizeof dir);
    snprintf(done, sizeof done, "%s/done", dir);
    snprintf(script, sizeof script,
             "trap 'sleep 0.3; echo ok > %s; exit 0' TERM; echo ready; "
             "while :; do sleep 0.05; done",
             done);
    em_reactor *r = new_reactor();
    rec x = {.tag = 1, .store = true};
    const char *argv[] = {"sh", "-c", script, NULL};
    em_conn *c = em_popen(r, argv, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    pid_t pid = em_get_pid(c);
    double deadline = now_mono() + 5;
    while (!contains(&x, "ready\n") && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT(contains(&x, "ready\n"));
    double t0 = now_mono();
    em_reactor_free(r);
    double took = now_mono() - t0;
    ASSERT_DBL_GE(took, 0.25);
    ASSERT_DBL_LE(took, 1.9); /* it exited: no need to wait out the period */
    ASSERT_EQ(access(done, F_OK), 0);
    ASSERT(pid_reaped(pid));
    rec_free(&x);
    rm_tmpdir(dir);
    ASSERT_NO_FD_LEAK(fd0);
}

/* One that ignores SIGTERM is killed once its grace period (0.6 s) is
 * over, not before it. */
TEST_TIMEOUT(popen_reactor_free_kills_after_grace_period, 20);
TEST(popen_reactor_free_kills_after_grace_period)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec x = {.tag = 1, .store = true};
    const char *argv[] = {"sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done",
                          NULL};
    em_conn *c = em_popen_with(r, argv, &(em_popen_opts){.grace_s = 0.6}, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    pid_t pid = em_get_pid(c);
    double deadline = now_mono() + 5;
    while (!contains(&x, "ready\n") && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    double t0 = now_mono();
    em_reactor_free(r);
    double took = now_mono() - t0;
    ASSERT_DBL_GE(took, 0.55);
    ASSERT_DBL_LE(took, 2.0);
    ASSERT(pid_reaped(pid));
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------- a status nobody can know */

/* The host's own waitpid took the child first: em_get_status reports
 * -ECHILD, never a made-up clean exit. */
static void steal_child(em_reactor *r, void *arg)
{
    (void)r;
    pid_t pid = *(pid_t *)arg;
    int st;
    pid_t p;
    while ((p = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    ASSERT_EQ(p, pid);
    ASSERT(WIFSIGNALED(st));
}

TEST(popen_child_reaped_elsewhere_status_is_echild)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .on_unbind = record_status, .ctx = &seen};
    const char *argv[] = {"sh", "-c", "exec 1>&- 0<&-; sleep 0.05; kill -9 $$", NULL};
    em_conn *c = em_popen(r, argv, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    pid_t pid = em_get_pid(c);
    ASSERT_NE(em_add_timer(r, 0, steal_child, &pid), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_EQ(seen.status_rc, -ECHILD);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------------- the pair */

/* libem's end of the socketpair is non-blocking; the child's stdio is
 * blocking, as programs expect. */
TEST(popen_socketpair_nonblocking_on_our_side_only)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec x = {.tag = 1, .store = true};
    const char *argv[] = {"sh", "-c", "grep '^flags' /proc/self/fdinfo/0", NULL};
    em_conn *c = em_popen(r, argv, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT(fcntl(em_conn_fd(c), F_GETFL) & O_NONBLOCK);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(contains(&x, "flags:"));
    char line[64] = {0};
    memcpy(line, x.buf, x.len < sizeof line - 1 ? x.len : sizeof line - 1);
    unsigned long flags = strtoul(strchr(line, ':') + 1, NULL, 8);
    ASSERT_EQ(flags & O_NONBLOCK, 0);
    rec_free(&x);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------------------- fork */

/* A forked child freeing the reactor neither signals nor reaps the
 * parent's popen children: the parent's child goes on and is reaped by the
 * parent's reactor, with its status. */
TEST(popen_reactor_freed_in_forked_child_leaves_children_alone)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = record_status, .ctx = &seen};
    const char *argv[] = {"cat", NULL};
    em_conn *c = em_popen(r, argv, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    pid_t pid = em_get_pid(c);
    free_in_forked_child(r);
    ASSERT_EQ(kill(pid, 0), 0);
    ASSERT_EQ(em_send_data(c, "still here\n", 11), 0);
    ASSERT(run_until(r, &x.data_calls, 5));
    ASSERT_EQ(em_close_write(c), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(contains(&x, "still here\n"));
    ASSERT_EQ(seen.status_rc, 0);
    ASSERT(WIFEXITED(seen.wstatus));
    ASSERT_EQ(WEXITSTATUS(seen.wstatus), 0);
    ASSERT(pid_reaped(pid));
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}
