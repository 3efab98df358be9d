/* examples/job_runner as a user runs it: a job's stdout comes back line by
 * line with its id, then its exit status; a program that cannot be run is
 * answered with an error; at most 4 jobs run at once, the rest wait their
 * turn; a client that disconnects leaves no child running and no queued
 * job behind; a client that reads slowly holds its jobs back instead of
 * filling the server's memory. */
#include "example_prog.h"

#include <errno.h>
#include <netinet/in.h>

static void say(int fd, const char *text) { write_all(fd, text, strlen(text)); }

/* One line from the socket, without its newline; fails when none comes
 * within 5 s. Byte by byte, so nothing after the line is consumed. */
static void read_line(int fd, char *line, size_t size)
{
    size_t len = 0;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        char ch;
        if (poll(&pfd, 1, 5000) != 1 || read(fd, &ch, 1) != 1)
            FAIL("no whole line within 5 s, got '%.*s'", (int)len, line);
        if (ch == '\n')
            break;
        ASSERT_LT(len, size - 1);
        line[len++] = ch;
    }
    line[len] = '\0';
}

static void expect_line(int fd, const char *want)
{
    char line[256];
    read_line(fd, line, sizeof line);
    if (strcmp(line, want) != 0)
        FAIL("expected '%s', got '%s'", want, line);
}

/* "[id] pid N": returns N. */
static pid_t expect_pid(int fd, unsigned id)
{
    char line[256];
    read_line(fd, line, sizeof line);
    unsigned got_id;
    int pid;
    if (sscanf(line, "[%u] pid %d", &got_id, &pid) != 2 || got_id != id || pid <= 0)
        FAIL("expected '[%u] pid N', got '%s'", id, line);
    return (pid_t)pid;
}

static example_prog start(void)
{
    char *argv[] = {"job_runner", "0", NULL};
    return example_start("job_runner", argv, false);
}

/* The server reaps its children: once reaped, a pid is gone (ESRCH). */
static bool gone_within(pid_t pid, double seconds)
{
    double end = now_mono() + seconds;
    while (now_mono() < end) {
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return true;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    return false;
}

TEST(output_exit_status_and_errors)
{
    example_prog p = start();
    int fd = example_connect(p.port);
    say(fd, "echo a b\n");
    expect_pid(fd, 1);
    expect_line(fd, "[1] a b");
    expect_line(fd, "[1] exit 0");
    /* printf reads the backslash escapes itself (no shell); the last line
     * has no newline and still comes through when the job ends */
    say(fd, "printf x\\ny\\nz\n");
    expect_pid(fd, 2);
    expect_line(fd, "[2] x");
    expect_line(fd, "[2] y");
    expect_line(fd, "[2] z");
    expect_line(fd, "[2] exit 0");
    say(fd, "\n   \nfalse\r\n"); /* blank lines are no jobs; CRLF works */
    expect_pid(fd, 3);
    expect_line(fd, "[3] exit 1");
    say(fd, "no-such-program-for-job-runner arg\n");
    char want[256];
    snprintf(want, sizeof want, "[4] error %s", strerror(ENOENT));
    expect_line(fd, want);
    /* words split on runs of spaces */
    say(fd, "echo   spaced    out\n");
    expect_pid(fd, 5);
    expect_line(fd, "[5] spaced out");
    expect_line(fd, "[5] exit 0");
    close(fd);
    example_stop(&p);
}

/* 6 jobs of 0.3 s with 4 slots: two rounds. Every start and exit line
 * arrives in the order the server saw them, so the number running is
 * read off the stream. */
TEST(at_most_four_jobs_run_at_once)
{
    example_prog p = start();
    int fd = example_connect(p.port);
    double t0 = now_mono();
    for (int i = 0; i < 6; i++)
        say(fd, "sleep 0.3\n");
    int started = 0, exited = 0, now_running = 0, most = 0;
    bool seen_pid[7] = {false}, seen_exit[7] = {false};
    while (exited < 6) {
        char line[256];
        read_line(fd, line, sizeof line);
        unsigned id;
        int value;
        if (sscanf(line, "[%u] pid %d", &id, &value) == 2) {
            ASSERT(id >= 1 && id <= 6 && !seen_pid[id]);
            seen_pid[id] = true;
            started++;
            now_running++;
        } else if (sscanf(line, "[%u] exit %d", &id, &value) == 2) {
            ASSERT(id >= 1 && id <= 6 && seen_pid[id] && !seen_exit[id]);
            ASSERT_EQ(value, 0);
            seen_exit[id] = true;
            exited++;
            now_running--;
        } else
            FAIL("unexpected line '%s'", line);
        if (now_running > most)
            most = now_running;
    }
    double elapsed = now_mono() - t0;
    ASSERT_EQ(started, 6);
    ASSERT_EQ(most, 4);
    ASSERT_DBL_GE(elapsed, 0.5);
    ASSERT_DBL_LE(elapsed, 3.0);
    close(fd);
    example_stop(&p);
}

/* A client with 4 running jobs and 1 queued disconnects: the running ones
 * are killed (reaped by the server: their pids vanish) and the queued one
 * never starts, so another client gets all 4 slots at once. */
TEST(a_disconnect_kills_running_jobs_and_drops_queued_ones)
{
    example_prog p = start();
    int a = example_connect(p.port);
    say(a, "sleep 5\nsleep 5\nsleep 5\nsleep 5\nsleep 5\n");
    pid_t pids[4];
    for (unsigned i = 0; i < 4; i++)
        pids[i] = expect_pid(a, i + 1);
    double t0 = now_mono();
    close(a);
    for (int i = 0; i < 4; i++)
        ASSERT(gone_within(pids[i], 3.0));
    ASSERT_DBL_LE(now_mono() - t0, 3.0); /* killed, not left to finish their 5 s */
    int b = example_connect(p.port);
    say(b, "sleep 0.3\nsleep 0.3\nsleep 0.3\nsleep 0.3\n");
    pid_t mine[4];
    for (unsigned i = 0; i < 4; i++) /* four starts before any exit */
        mine[i] = expect_pid(b, i + 1);
    int exits = 0;
    while (exits < 4) {
        char line[256];
        read_line(b, line, sizeof line);
        unsigned id;
        int status;
        if (sscanf(line, "[%u] exit %d", &id, &status) != 2 || status != 0)
            FAIL("expected an exit 0, got '%s'", line);
        exits++;
    }
    for (int i = 0; i < 4; i++)
        ASSERT(gone_within(mine[i], 3.0));
    close(b);
    example_stop(&p);
}

/* The resident memory of a process, in KiB (VmRSS of /proc/PID/status). */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    ASSERT_NOT_NULL(f);
    long kib = -1;
    while (kib < 0 && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) != 1)
            kib = -1;
    fclose(f);
    ASSERT_GE(kib, 0);
    return kib;
}

/* Reads the 64 MiB job's whole answer: pieces of "[1] " + 1024 NULs + "\n"
 * (a line longer than the server's buffer), then "[1] exit 0\n". */
static void read_zero_pieces(int fd, size_t pieces)
{
    static const char tail[] = "[1] exit 0\n";
    const size_t piece = 4 + 1024 + 1, body = pieces * piece, total = body + strlen(tail);
    static char buf[1 << 16];
    size_t got = 0;
    while (got < total) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 10000) != 1)
            FAIL("stalled after %zu of %zu bytes", got, total);
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            FAIL("read %zd after %zu of %zu bytes", n, got, total);
        for (ssize_t i = 0; i < n; i++, got++) {
            size_t at = got % piece;
            char want = got >= body ? tail[got - body]
                        : at < 4    ? "[1] "[at]
                        : at < piece - 1 ? '\0' : '\n';
            if (got >= total || buf[i] != want)
                FAIL("byte %zu: got 0x%02x, want 0x%02x", got, (unsigned char)buf[i],
                     (unsigned char)want);
        }
    }
}

/* A job writes 64 MiB to a client that does not read for 2 s: the server
 * pauses the job rather than queue its output, so its memory grows by far
 * less than that; then the client reads every byte, and the exit line. */
TEST_TIMEOUT(a_slow_reader_holds_the_job_back, 90);
TEST(a_slow_reader_holds_the_job_back)
{
    example_prog p = start();
    int fd = example_connect(p.port);
    long before = rss_kib(p.pid);
    const size_t mib = 64;
    char cmd[64];
    snprintf(cmd, sizeof cmd, "head -c %zu /dev/zero\n", mib << 20);
    say(fd, cmd);
    expect_pid(fd, 1);
    long most = before;
    for (int i = 0; i < 20; i++) {
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
        long now = rss_kib(p.pid);
        if (now > most)
            most = now;
    }
    if (most - before > 16 * 1024)
        FAIL("the server grew by %ld KiB while the client did not read", most - before);
    read_zero_pieces(fd, (mib << 20) / 1024);
    close(fd);
    example_stop(&p);
}
