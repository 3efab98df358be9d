/* examples/graceful_shutdown as a user runs it: after SIGTERM the server
 * refuses new connections at once, closes idle ones, finishes the job a
 * busy one asked for (its whole reply arrives, then EOF) and exits 0 when
 * the last connection is gone; a job longer than the grace period is cut
 * off when it expires, with exit status 1. */
#include "example_prog.h"

#include <netinet/in.h>

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

/* Exactly len bytes, each within 5 s of the last. */
static void read_exact(int fd, char *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 5000) != 1)
            FAIL("only %zu of %zu bytes arrived", got, len);
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0)
            FAIL("EOF or error after %zu of %zu bytes", got, len);
        got += (size_t)n;
    }
}

static void expect(int fd, const char *text)
{
    char buf[256];
    size_t len = strlen(text);
    read_exact(fd, buf, len);
    if (memcmp(buf, text, len) != 0)
        FAIL("expected '%s', got '%.*s'", text, (int)len, buf);
}

/* The job's reply: "done ", len letters of the alphabet, "\n". */
static void expect_result(int fd, size_t len)
{
    expect(fd, "done ");
    char *buf = malloc(len + 1);
    ASSERT_NOT_NULL(buf);
    read_exact(fd, buf, len + 1);
    for (size_t i = 0; i < len; i++)
        if (buf[i] != (char)('a' + i % 26))
            FAIL("byte %zu of the result differs", i);
    ASSERT_EQ(buf[len], '\n');
    free(buf);
}

/* Connects until the server refuses (it stops accepting once the signal
 * has been handled); a connect accepted before that is closed by it at once,
 * being idle, and one caught in the listener's backlog as it closes is
 * reset (ECONNRESET). */
static void wait_until_refused(int port)
{
    double end = now_mono() + 3.0;
    for (;;) {
        int fd = connect_to(port);
        if (fd == -ECONNREFUSED)
            return;
        if (fd != -ECONNRESET)
            ASSERT_GE(fd, 0);
        if (fd >= 0)
            close(fd);
        if (now_mono() > end)
            FAIL("still accepting 3 s after SIGTERM");
        usleep(10 * 1000);
    }
}

TEST(a_busy_connection_finishes_its_job_and_the_server_exits_0)
{
    char *argv[] = {"graceful_shutdown", "0", "10", NULL};
    example_prog p = example_start("graceful_shutdown", argv, false);
    int busy = connect_to(p.port), idle = connect_to(p.port);
    ASSERT_GE(busy, 0);
    ASSERT_GE(idle, 0);
    const size_t len = 1000000; /* more than the socket buffers take at once */
    /* a finished job on the idle one: the server has accepted it */
    write_all(idle, "0\n", 2);
    expect(idle, "started\n");
    expect_result(idle, 0);
    write_all(busy, "800 1000000\n", 12);
    expect(busy, "started\n");
    double signalled = now_mono();
    ASSERT_EQ(kill(p.pid, SIGTERM), 0);
    wait_until_refused(p.port);
    example_expect_eof(idle); /* idle: closed at once */
    /* a request sent while draining is refused, the job goes on */
    write_all(busy, "1\n", 2);
    expect(busy, "refused: shutting down\n");
    expect_result(busy, len);
    example_expect_eof(busy);
    int status = example_wait(&p, 5.0);
    ASSERT(status != -1);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    /* it waited for the job (the result came), not for the grace period */
    ASSERT_DBL_LE(now_mono() - signalled, 5.0);
    close(busy);
    close(idle);
    example_stop(&p);
}
TEST_TIMEOUT(a_busy_connection_finishes_its_job_and_the_server_exits_0, 30);

TEST(jobs_queued_before_the_signal_all_finish_in_order)
{
    char *argv[] = {"graceful_shutdown", "0", "10", NULL};
    example_prog p = example_start("graceful_shutdown", argv, false);
    int fd = connect_to(p.port);
    ASSERT_GE(fd, 0);
    write_all(fd, "200 3\n100 5\n50 7\n", 17);
    expect(fd, "started\nstarted\nstarted\n");
    ASSERT_EQ(kill(p.pid, SIGTERM), 0);
    expect_result(fd, 3);
    expect_result(fd, 5);
    expect_result(fd, 7);
    example_expect_eof(fd);
    int status = example_wait(&p, 5.0);
    ASSERT(status != -1 && WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    close(fd);
    example_stop(&p);
}

/* Not about shutting down: a client that half-closes after its request
 * still gets the answer, then EOF. */
TEST(a_half_closed_client_gets_its_answers)
{
    char *argv[] = {"graceful_shutdown", "0", "10", NULL};
    example_prog p = example_start("graceful_shutdown", argv, false);
    int fd = connect_to(p.port);
    ASSERT_GE(fd, 0);
    write_all(fd, "100 10\n0 2\n", 11);
    ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
    expect(fd, "started\nstarted\n");
    expect_result(fd, 10);
    expect_result(fd, 2);
    example_expect_eof(fd);
    close(fd);
    example_stop(&p);
}

TEST(the_grace_period_bounds_the_wait)
{
    char *argv[] = {"graceful_shutdown", "0", "0.5", NULL};
    example_prog p = example_start("graceful_shutdown", argv, false);
    int fd = connect_to(p.port);
    ASSERT_GE(fd, 0);
    write_all(fd, "30000\n", 6);
    expect(fd, "started\n");
    double signalled = now_mono();
    ASSERT_EQ(kill(p.pid, SIGTERM), 0);
    example_expect_eof(fd); /* cut off: no result */
    int status = example_wait(&p, 5.0);
    ASSERT(status != -1 && WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 1);
    ASSERT_DBL_GE(now_mono() - signalled, 0.4);
    ASSERT_DBL_LE(now_mono() - signalled, 3.0);
    close(fd);
    example_stop(&p);
}

TEST(an_idle_server_exits_0_at_once)
{
    char *argv[] = {"graceful_shutdown", "0", "10", NULL};
    example_prog p = example_start("graceful_shutdown", argv, false);
    ASSERT_EQ(kill(p.pid, SIGTERM), 0);
    int status = example_wait(&p, 2.0);
    ASSERT(status != -1 && WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    example_stop(&p);
}
