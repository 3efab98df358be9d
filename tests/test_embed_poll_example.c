/* examples/embed_poll as a user runs it: libem inside the host's poll()
 * loop. Lines written to its stdin are acknowledged on stdout while its
 * echo server serves several clients, each step of one interleaved with
 * the other, so neither side can starve the other; at EOF on stdin it
 * exits 0 at once, with clients still connected (they then read EOF). */
#include "example_prog.h"

#include <netinet/in.h>

/* Writes len pattern bytes starting at byte `at` of the stream while
 * reading their echo (a large write would otherwise fill both ways). */
static void echo_round(int fd, uint64_t at, size_t len)
{
    size_t sent = 0, got = 0;
    unsigned char buf[16384];
    while (got < len) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0)};
        if (poll(&pfd, 1, 5000) != 1)
            FAIL("echo stalled at %zu of %zu bytes", got, len);
        if (sent < len && (pfd.revents & POLLOUT)) {
            size_t n = len - sent < sizeof buf ? len - sent : sizeof buf;
            for (size_t i = 0; i < n; i++)
                buf[i] = pattern_byte(at + sent + i);
            ssize_t w = send(fd, buf, n, MSG_DONTWAIT);
            if (w > 0)
                sent += (size_t)w;
        }
        if (pfd.revents & POLLIN) {
            ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            ASSERT_GT(r, 0);
            for (ssize_t i = 0; i < r; i++)
                if (buf[i] != pattern_byte(at + got + (size_t)i))
                    FAIL("echoed byte %zu differs", got + (size_t)i);
            got += (size_t)r;
        }
    }
}

static void host_line(example_prog *p, int n, int connections)
{
    char line[64], expect[96], ack[160];
    int len = snprintf(line, sizeof line, "line %d\n", n);
    write_all(p->in, line, (size_t)len);
    snprintf(expect, sizeof expect, "ack %d line %d (connections=%d)", n, n, connections);
    if (!example_read_line(p, ack, sizeof ack, 5000))
        FAIL("no acknowledgement of line %d", n);
    ASSERT_STREQ(ack, expect);
}

TEST(stdin_lines_and_echo_traffic_are_served_together)
{
    char *argv[] = {"embed_poll", "0", NULL};
    example_prog p = example_start("embed_poll", argv, true);
    enum { CLIENTS = 3 };
    int fds[CLIENTS];
    uint64_t at[CLIENTS] = {0};
    for (int i = 0; i < CLIENTS; i++)
        fds[i] = example_connect(p.port);
    /* the count proves the acknowledgement was made inside the same loop
     * as the accepts; wait for all three to be accepted first */
    for (int i = 0; i < CLIENTS; i++) {
        echo_round(fds[i], at[i], 1);
        at[i] += 1;
    }
    for (int n = 1; n <= 60; n++) {
        int c = n % CLIENTS;
        size_t len = n % 10 == 0 ? 300000 : (size_t)n * 37;
        host_line(&p, n, CLIENTS);
        echo_round(fds[c], at[c], len);
        at[c] += len;
    }
    for (int i = 0; i < CLIENTS; i++)
        close(fds[i]);
    close(p.in);
    p.in = -1;
    int status = example_wait(&p, 5.0);
    ASSERT(status != -1 && WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    example_stop(&p);
}
TEST_TIMEOUT(stdin_lines_and_echo_traffic_are_served_together, 60);

/* EOF on stdin ends the program at once, however idle libem is (it has no
 * timer: without the host's own fd in the loop it would sleep forever),
 * and the connections still open are closed. */
TEST(eof_on_stdin_exits_0_and_closes_the_connections)
{
    char *argv[] = {"embed_poll", "0", NULL};
    example_prog p = example_start("embed_poll", argv, true);
    int fd = example_connect(p.port);
    echo_round(fd, 0, 1000);
    host_line(&p, 1, 1);
    double closed = now_mono();
    close(p.in);
    p.in = -1;
    char line[64];
    ASSERT(example_read_line(&p, line, sizeof line, 5000));
    ASSERT_STREQ(line, "bye");
    int status = example_wait(&p, 5.0);
    ASSERT(status != -1 && WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_DBL_LE(now_mono() - closed, 2.0);
    char ch;
    ASSERT_EQ(read(fd, &ch, 1), 0); /* its connection was closed */
    close(fd);
    example_stop(&p);
}
