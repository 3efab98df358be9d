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

static void fill_pattern(char *buf, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)pattern_byte(off + i);
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

static void kill_child(const char *script, int want_sig, double min_s, double max_s)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct child_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = record_status, .ctx = &seen};
    const char *argv[] = {"sh", "-c", script, NULL};
    em_conn *c = em_popen(r, argv, &rec_handler, &x);
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
    kill_child("trap '' TERM; echo ready; while :; do sleep 0.1; done", SIGKILL, 3.5, 6.0);
}

/* Does not read stdin, but dies of SIGTERM. */
TEST_TIMEOUT(popen_child_not_reading_stdin_gets_sigterm, 15);
TEST(popen_child_not_reading_stdin_gets_sigterm)
{
    kill_child("echo ready; while :; do sleep 0.1; done", SIGTERM, 1.5, 3.5);
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
    em_conn *c = em_popen(r, argv, &rec_handler, &x);
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
    ASSERT_GE(tick_count, 60);
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
 * child reaped (no zombie), quickly, even one that ignores SIGTERM. */
TEST(popen_reactor_free_reaps_running_children)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec a = {.tag = 1}, b = {.tag = 2, .store = true};
    const char *cat[] = {"cat", NULL};
    const char *stubborn[] = {"sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done",
                              NULL};
    em_conn *ca = em_popen(r, cat, &rec_handler, &a);
    em_conn *cb = em_popen(r, stubborn, &rec_handler, &b);
    ASSERT_NOT_NULL(ca);
    ASSERT_NOT_NULL(cb);
    pid_t pa = em_get_pid(ca), pb = em_get_pid(cb);
    double deadline = now_mono() + 5;
    while (!contains(&b, "ready\n") && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(em_timer_count(r), 0);
    double t0 = now_mono();
    em_reactor_free(r);
    ASSERT_DBL_LE(now_mono() - t0, 3.0);
    ASSERT_EQ(a.unbinds, 1);
    ASSERT_EQ(b.unbinds, 1);
    ASSERT_EQ(a.reason, 0);
    ASSERT_EQ(b.reason, 0);
    ASSERT(pid_reaped(pa));
    ASSERT(pid_reaped(pb));
    rec_free(&b);
    ASSERT_NO_FD_LEAK(fd0);
}
