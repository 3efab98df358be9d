/* em_popen_with: the child's environment, its directory and its stderr
 * (inherited, merged into the connection, or a connection of its own). */
#include "harness.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

struct opts_seen {
    int status_rc;
    int wstatus;
    em_conn *stderr_conn; /* em_popen_stderr in the main post_init */
    int stderr_post_inits; /* of the stderr connection, seen from main's post_init */
};

static void opts_record_status(em_conn *c, rec *x, int reason)
{
    (void)reason;
    struct opts_seen *s = x->ctx;
    s->wstatus = -1;
    s->status_rc = em_get_status(c, &s->wstatus);
}

/* The received bytes as a string (x->store). */
static char *opts_text(const rec *x)
{
    char *s = calloc(1, x->len + 1);
    if (!s)
        FAIL("calloc");
    memcpy(s, x->buf, x->len);
    return s;
}

static void opts_expect_text(const rec *x, const char *want)
{
    char *got = opts_text(x);
    ASSERT_STREQ(got, want);
    free(got);
}

static void opts_expect_exit(const struct opts_seen *s, int code)
{
    ASSERT_EQ(s->status_rc, 0);
    ASSERT(WIFEXITED(s->wstatus));
    ASSERT_EQ(WEXITSTATUS(s->wstatus), code);
}

/* Runs argv with opts to its end; its stdout lands in out. */
static void opts_run(const char *const argv[], const em_popen_opts *o, rec *out,
                     struct opts_seen *seen)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    *out = (rec){.tag = 1, .store = true, .on_unbind = opts_record_status, .ctx = seen};
    ASSERT_NOT_NULL(em_popen_with(r, argv, o, &rec_handler, out));
    ASSERT(run_until(r, &out->unbinds, 5));
    ASSERT_EQ(out->reason, 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------------- environment */

TEST(popen_with_envp_is_the_whole_environment)
{
    const char *env[] = {"FOO=bar baz", "PATH=/usr/bin:/bin", NULL};
    em_popen_opts o = {.envp = env};
    const char *argv[] = {"sh", "-c", "echo \"$FOO\"; echo \"${HOME-unset}\"", NULL};
    rec x;
    struct opts_seen seen = {0};
    opts_run(argv, &o, &x, &seen);
    opts_expect_exit(&seen, 0);
    opts_expect_text(&x, "bar baz\nunset\n");
    rec_free(&x);
}

/* argv[0] is looked up in this process's PATH, not in envp's. */
TEST(popen_with_envp_without_path_still_finds_the_program)
{
    ASSERT_NOT_NULL(getenv("PATH"));
    const char *env[] = {"ONLY=1", NULL};
    em_popen_opts o = {.envp = env};
    const char *argv[] = {"sh", "-c", "echo \"$ONLY ${PATH-nopath}\"", NULL};
    rec x;
    struct opts_seen seen = {0};
    opts_run(argv, &o, &x, &seen);
    opts_expect_exit(&seen, 0);
    /* the shell sets a PATH of its own when none is given: only ONLY is ours */
    char *got = opts_text(&x);
    ASSERT(strncmp(got, "1 ", 2) == 0);
    free(got);
    rec_free(&x);
}

TEST(popen_with_null_envp_inherits)
{
    ASSERT_EQ(setenv("LIBEM_POPEN_OPTS_TEST", "inherited", 1), 0);
    em_popen_opts o = {.envp = NULL};
    const char *argv[] = {"sh", "-c", "echo $LIBEM_POPEN_OPTS_TEST", NULL};
    rec x;
    struct opts_seen seen = {0};
    opts_run(argv, &o, &x, &seen);
    opts_expect_exit(&seen, 0);
    opts_expect_text(&x, "inherited\n");
    rec_free(&x);
}

/* ----------------------------------------------------------------- cwd */

TEST(popen_with_cwd_starts_there)
{
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    char *real = realpath(dir, NULL);
    ASSERT_NOT_NULL(real);
    em_popen_opts o = {.cwd = dir};
    const char *argv[] = {"pwd", "-P", NULL};
    rec x;
    struct opts_seen seen = {0};
    opts_run(argv, &o, &x, &seen);
    opts_expect_exit(&seen, 0);
    char want[4200];
    snprintf(want, sizeof want, "%s\n", real);
    opts_expect_text(&x, want);
    free(real);
    rec_free(&x);
    rm_tmpdir(dir);
}

static void expect_cwd_refused(const char *cwd, int err)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec x = {.tag = 1};
    em_popen_opts o = {.cwd = cwd, .stderr_mode = EM_STDERR_CONN,
                       .stderr_handler = &rec_handler, .stderr_arg = &x};
    const char *argv[] = {"true", NULL};
    ASSERT_NULL_ERRNO(em_popen_with(r, argv, &o, &rec_handler, &x), err);
    ASSERT_EQ(x.post_inits, 0); /* nothing was made, nothing called back */
    ASSERT_EQ(rec_live, 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
    errno = 0;
    ASSERT_EQ(waitpid(-1, NULL, WNOHANG), -1); /* no zombie left behind */
    ASSERT_EQ(errno, ECHILD);
}

TEST(popen_with_bad_cwd_fails_with_its_errno)
{
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/missing", dir);
    expect_cwd_refused(path, ENOENT);
    snprintf(path, sizeof path, "%s/file", dir);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    close(fd);
    expect_cwd_refused(path, ENOTDIR);
    if (geteuid() != 0) { /* root enters any directory */
        snprintf(path, sizeof path, "%s/locked", dir);
        ASSERT_EQ(mkdir(path, 0), 0);
        expect_cwd_refused(path, EACCES);
        rmdir(path);
    }
    rm_tmpdir(dir);
}

/* ------------------------------------------------------------ bad input */

TEST(popen_with_bad_stderr_mode_is_einval)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec x = {.tag = 1};
    const char *argv[] = {"true", NULL};
    em_popen_opts o = {.stderr_mode = 3, .stderr_handler = &rec_handler};
    ASSERT_NULL_ERRNO(em_popen_with(r, argv, &o, &rec_handler, &x), EINVAL);
    o.stderr_mode = -1;
    ASSERT_NULL_ERRNO(em_popen_with(r, argv, &o, &rec_handler, &x), EINVAL);
    o = (em_popen_opts){.stderr_mode = EM_STDERR_CONN};
    ASSERT_NULL_ERRNO(em_popen_with(r, argv, &o, &rec_handler, &x), EINVAL);
    ASSERT_NULL_ERRNO(em_popen_with(r, NULL, NULL, &rec_handler, &x), EINVAL);
    ASSERT_NULL_ERRNO(em_popen_with(r, argv, NULL, NULL, &x), EINVAL);
    ASSERT_NULL_ERRNO(em_popen_with(NULL, argv, NULL, &rec_handler, &x), EINVAL);
    ASSERT_EQ(x.post_inits, 0);
    ASSERT_NULL(em_popen_stderr(NULL));
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(popen_with_bad_grace_period_is_einval)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec x = {.tag = 1};
    const char *argv[] = {"true", NULL};
    const double bad[] = {-0.5, NAN, INFINITY, 86400.5};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ASSERT_NULL_ERRNO(em_popen_with(r, argv, &(em_popen_opts){.grace_s = bad[i]}, &rec_handler,
                                        &x),
                          EINVAL);
    ASSERT_EQ(x.post_inits, 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* opts NULL is em_popen: stdout only, stderr inherited. */
TEST(popen_with_null_opts_is_em_popen)
{
    const char *argv[] = {"sh", "-c", "echo out; echo err >/dev/null 2>&1; exit 4", NULL};
    rec x;
    struct opts_seen seen = {0};
    opts_run(argv, NULL, &x, &seen);
    opts_expect_exit(&seen, 4);
    opts_expect_text(&x, "out\n");
    rec_free(&x);
}

/* ---------------------------------------------------------- stderr merge */

TEST(popen_with_stderr_merge_joins_both_streams)
{
    em_popen_opts o = {.stderr_mode = EM_STDERR_MERGE};
    const char *argv[] = {"sh", "-c", "echo out; echo err >&2; echo out2; exit 5", NULL};
    rec x;
    struct opts_seen seen = {0};
    opts_run(argv, &o, &x, &seen);
    opts_expect_exit(&seen, 5);
    opts_expect_text(&x, "out\nerr\nout2\n"); /* one descriptor: the order holds */
    rec_free(&x);
}

/* ------------------------------------------------ stderr, its own conn */

static void look_for_stderr_conn(em_conn *c, rec *x)
{
    struct opts_seen *s = x->ctx;
    s->stderr_conn = em_popen_stderr(c);
    rec *e = s->stderr_conn ? em_conn_arg(s->stderr_conn) : NULL;
    s->stderr_post_inits = e ? e->post_inits : -1;
}

TEST(popen_with_stderr_conn_separates_the_streams)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct opts_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_post_init = look_for_stderr_conn,
             .on_unbind = opts_record_status, .ctx = &seen};
    rec e = {.tag = 2, .store = true};
    em_popen_opts o = {.stderr_mode = EM_STDERR_CONN, .stderr_handler = &rec_handler,
                       .stderr_arg = &e};
    const char *argv[] = {"sh", "-c", "echo out; echo err >&2; echo out2; echo err2 >&2; exit 6",
                          NULL};
    em_conn *c = em_popen_with(r, argv, &o, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    /* the stderr connection began first: main's post_init found it */
    ASSERT_EQ(e.post_inits, 1);
    ASSERT_NOT_NULL(seen.stderr_conn);
    ASSERT(seen.stderr_conn == e.conn);
    ASSERT_EQ(seen.stderr_post_inits, 1);
    ASSERT(em_popen_stderr(c) == e.conn);
    ASSERT_NULL(em_popen_stderr(e.conn)); /* it is not a popen connection */
    ASSERT_EQ(em_get_pid(e.conn), -1);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(run_until(r, &e.unbinds, 5));
    opts_expect_exit(&seen, 6);
    ASSERT_EQ(x.reason, 0);
    ASSERT_EQ(e.reason, 0);
    opts_expect_text(&x, "out\nout2\n");
    opts_expect_text(&e, "err\nerr2\n");
    ASSERT_NULL(e.conn);
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    rec_free(&e);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Closing the main connection first: the child sees EOF on stdin, and its
 * last words on stderr still arrive; em_popen_stderr says NULL after the
 * stderr connection's unbind. */
TEST(popen_with_stderr_conn_outlives_main_close)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct opts_seen seen = {0};
    rec x = {.tag = 1, .on_unbind = opts_record_status, .ctx = &seen};
    rec e = {.tag = 2, .store = true};
    em_popen_opts o = {.stderr_mode = EM_STDERR_CONN, .stderr_handler = &rec_handler,
                       .stderr_arg = &e};
    const char *argv[] = {"sh", "-c", "cat >/dev/null; sleep 0.1; echo bye >&2", NULL};
    em_conn *c = em_popen_with(r, argv, &o, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    run_for(r, 0.05);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    opts_expect_exit(&seen, 0);
    ASSERT(run_until(r, &e.unbinds, 5));
    opts_expect_text(&e, "bye\n");
    ASSERT_EQ(e.reason, 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&e);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Closing the stderr connection first: the child's next write to stderr
 * raises SIGPIPE, which kills it by default; the main connection still
 * unbinds with that status. */
TEST(popen_with_stderr_conn_closed_first)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct opts_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = opts_record_status, .ctx = &seen};
    rec e = {.tag = 2};
    em_popen_opts o = {.stderr_mode = EM_STDERR_CONN, .stderr_handler = &rec_handler,
                       .stderr_arg = &e};
    const char *argv[] = {"sh", "-c", "echo out; read line; echo err >&2; echo after", NULL};
    em_conn *c = em_popen_with(r, argv, &o, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &x.data_calls, 5)); /* "out" */
    ASSERT_EQ(close_conn(e.conn, false), 0);
    ASSERT(run_until(r, &e.unbinds, 5));
    ASSERT_NULL(em_popen_stderr(c));
    ASSERT_EQ(em_send_data(c, "go\n", 3), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_EQ(seen.status_rc, 0);
    ASSERT(WIFSIGNALED(seen.wstatus));
    ASSERT_EQ(WTERMSIG(seen.wstatus), SIGPIPE);
    opts_expect_text(&x, "out\n");
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Sending on the read-only stderr connection fails it, and only it. */
TEST(popen_with_stderr_conn_is_read_only)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct opts_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = opts_record_status, .ctx = &seen};
    rec e = {.tag = 2};
    em_popen_opts o = {.stderr_mode = EM_STDERR_CONN, .stderr_handler = &rec_handler,
                       .stderr_arg = &e};
    const char *argv[] = {"cat", NULL};
    em_conn *c = em_popen_with(r, argv, &o, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(em_send_data(e.conn, "x", 1), 0);
    ASSERT(run_until(r, &e.unbinds, 5));
    ASSERT_EQ(e.reason, EPIPE);
    ASSERT_EQ(x.unbinds, 0);
    ASSERT_EQ(em_send_data(c, "still\n", 6), 0);
    ASSERT(run_until(r, &x.data_calls, 5));
    ASSERT_EQ(em_close_write(c), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    opts_expect_exit(&seen, 0);
    opts_expect_text(&x, "still\n");
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* em_detach on the main connection hands the child over; the stderr
 * connection stays libem's and ends at the child's EOF. */
TEST(popen_with_stderr_conn_survives_detach)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec x = {.tag = 1};
    rec e = {.tag = 2, .store = true};
    em_popen_opts o = {.stderr_mode = EM_STDERR_CONN, .stderr_handler = &rec_handler,
                       .stderr_arg = &e};
    const char *argv[] = {"sh", "-c", "sleep 0.2; echo done >&2", NULL};
    em_conn *c = em_popen_with(r, argv, &o, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    pid_t pid = em_get_pid(c);
    int fd = em_detach(c);
    ASSERT_GE(fd, 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(run_until(r, &e.unbinds, 5));
    opts_expect_text(&e, "done\n");
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(fd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&e);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------- descriptor leaks */

/* ls of the child's own descriptors: 0, 1, 2 and ls's directory, nothing
 * else, whatever the stderr mode. */
static void expect_only_stdio(int stderr_mode)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe(p), 0); /* inheritable, unless libem stops it */
    rec other = {.tag = 3}, other_err = {.tag = 4};
    em_popen_opts conn_opts = {.stderr_mode = EM_STDERR_CONN, .stderr_handler = &rec_handler,
                               .stderr_arg = &other_err};
    const char *cat[] = {"cat", NULL};
    em_conn *oc = em_popen_with(r, cat, &conn_opts, &rec_handler, &other);
    ASSERT_NOT_NULL(oc);
    struct opts_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = opts_record_status, .ctx = &seen};
    rec e = {.tag = 2};
    em_popen_opts o = {.stderr_mode = stderr_mode, .stderr_handler = &rec_handler,
                       .stderr_arg = &e};
    const char *argv[] = {"ls", "-1", "/proc/self/fd", NULL};
    ASSERT_NOT_NULL(em_popen_with(r, argv, &o, &rec_handler, &x));
    ASSERT(run_until(r, &x.unbinds, 5));
    opts_expect_exit(&seen, 0);
    char *out = opts_text(&x);
    int stdio = 0, extra = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strcmp(line, "0") || !strcmp(line, "1") || !strcmp(line, "2"))
            stdio++;
        else
            extra++;
    }
    free(out);
    ASSERT_EQ(stdio, 3);
    ASSERT_EQ(extra, 1); /* ls's own directory */
    ASSERT_EQ(close_conn(oc, false), 0);
    ASSERT(run_until(r, &other.unbinds, 5));
    ASSERT(run_until(r, &other_err.unbinds, 5));
    if (stderr_mode == EM_STDERR_CONN)
        ASSERT(run_until(r, &e.unbinds, 5));
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(popen_with_no_parent_fd_leaks_merge)
{
    expect_only_stdio(EM_STDERR_MERGE);
}

TEST(popen_with_no_parent_fd_leaks_stderr_conn)
{
    expect_only_stdio(EM_STDERR_CONN);
}

/* ------------------------------------------------------- reactor free */

/* Both connections unbind when the reactor stops, the child is reaped. */
TEST(popen_with_stderr_conn_reactor_free)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec x = {.tag = 1}, e = {.tag = 2};
    em_popen_opts o = {.stderr_mode = EM_STDERR_CONN, .stderr_handler = &rec_handler,
                       .stderr_arg = &e};
    const char *argv[] = {"sleep", "10", NULL};
    em_conn *c = em_popen_with(r, argv, &o, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    pid_t pid = em_get_pid(c);
    run_for(r, 0.05);
    double t0 = now_mono();
    em_reactor_free(r);
    ASSERT_DBL_LE(now_mono() - t0, 1.5); /* sleep dies of SIGTERM at once */
    ASSERT_EQ(x.unbinds, 1);
    ASSERT_EQ(e.unbinds, 1);
    errno = 0;
    ASSERT_EQ(waitpid(pid, NULL, WNOHANG), -1);
    ASSERT_EQ(errno, ECHILD);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------ out of memory */

static long oom_calls, oom_fail_at; /* the allocation to fail; 0: none */

static bool oom_now(void) { return ++oom_calls == oom_fail_at; }
static void *oom_malloc(size_t n) { return oom_now() ? NULL : malloc(n); }
static void *oom_realloc(void *p, size_t n) { return oom_now() ? NULL : realloc(p, n); }

/* One em_popen_with with a stderr connection, its n-th allocation failed:
 * NULL + ENOMEM with nothing left behind (no callback, descriptor or
 * child), or a child that runs as usual. Returns whether the n-th
 * allocation was reached. */
static bool popen_with_allocation_failed(long n)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct opts_seen seen = {0};
    rec x = {.tag = 1, .store = true, .on_unbind = opts_record_status, .ctx = &seen};
    rec e = {.tag = 2, .store = true};
    em_popen_opts o = {.stderr_mode = EM_STDERR_CONN, .stderr_handler = &rec_handler,
                       .stderr_arg = &e};
    const char *argv[] = {"sh", "-c", "echo out; echo err >&2", NULL};
    oom_calls = 0;
    oom_fail_at = n;
    errno = 0;
    em_conn *c = em_popen_with(r, argv, &o, &rec_handler, &x);
    int err = errno;
    bool reached = oom_calls >= n;
    oom_fail_at = 0;
    if (!c) {
        ASSERT(reached);
        ASSERT_EQ(err, ENOMEM);
        ASSERT_EQ(x.post_inits + e.post_inits, 0);
        errno = 0;
        ASSERT_EQ(waitpid(-1, NULL, WNOHANG), -1);
        ASSERT_EQ(errno, ECHILD);
    } else {
        ASSERT(run_until(r, &x.unbinds, 5));
        ASSERT(run_until(r, &e.unbinds, 5));
        opts_expect_exit(&seen, 0);
        opts_expect_text(&x, "out\n");
        opts_expect_text(&e, "err\n");
    }
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    rec_free(&e);
    ASSERT_NO_FD_LEAK(fd0);
    return reached;
}

TEST_TIMEOUT(popen_with_out_of_memory_leaves_nothing_behind, 60);
TEST(popen_with_out_of_memory_leaves_nothing_behind)
{
    ASSERT_EQ(em_set_allocator(oom_malloc, oom_realloc, free), 0);
    long n = 1;
    while (popen_with_allocation_failed(n))
        ASSERT_LT(++n, 100);
    ASSERT_GT(n, 3); /* the child, its connections: several were failed */
    ASSERT_EQ(em_set_allocator(NULL, NULL, NULL), 0);
}
