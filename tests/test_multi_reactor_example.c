/* examples/multi_reactor as a user runs it, with 2 reactor threads: many
 * connections, 50 open at a time, each get their own bytes back; both
 * threads accept some of them (the kernel spreads them over the two
 * listeners), and SIGTERM or SIGINT ends it with status 0, also while
 * clients are still connected. */
#include "example_prog.h"

#include <netinet/in.h>
#include <sys/wait.h>

enum { BATCH = 50, BATCHES = 4, MAX_MSG = 3000 };

static size_t msg_len(int k) { return 1 + (size_t)(k * 7919) % MAX_MSG; }

static void fill(unsigned char *buf, size_t len, int k)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = pattern_byte((uint64_t)k * 1000003u + i);
}

static void read_exactly(int fd, unsigned char *buf, size_t len)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    for (size_t got = 0; got < len;) {
        if (poll(&pfd, 1, 5000) != 1)
            FAIL("echo stalled after %zu of %zu bytes", got, len);
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0)
            FAIL("connection ended after %zu of %zu bytes", got, len);
        got += (size_t)n;
    }
}

/* BATCH connections open at once, each writes its own message, then each
 * reads it back; k numbers the connections across batches. */
static void echo_batch(int port, int first_k)
{
    int fds[BATCH];
    static unsigned char out[MAX_MSG], in[MAX_MSG];
    for (int i = 0; i < BATCH; i++)
        fds[i] = tcp_connect_raw("127.0.0.1", port);
    for (int i = 0; i < BATCH; i++) {
        fill(out, msg_len(first_k + i), first_k + i);
        write_all(fds[i], out, msg_len(first_k + i));
    }
    for (int i = 0; i < BATCH; i++) {
        size_t len = msg_len(first_k + i);
        fill(out, len, first_k + i);
        read_exactly(fds[i], in, len);
        if (memcmp(in, out, len) != 0)
            FAIL("connection %d got other bytes back", first_k + i);
        close(fds[i]);
    }
}

/* The per-thread counts of the "stopped accepted=A,B" line; returns how
 * many there were. */
static int read_counts(example_prog *p, long *counts, int max)
{
    char line[256];
    if (!example_read_line(p, line, sizeof line, 5000))
        FAIL("no line after the signal: '%s'", line);
    const char *at = strstr(line, "stopped accepted=");
    if (!at)
        FAIL("unexpected line: '%s'", line);
    char *s = (char *)at + strlen("stopped accepted=");
    int n = 0;
    while (n < max && *s) {
        counts[n++] = strtol(s, &s, 10);
        if (*s == ',')
            s++;
    }
    return n;
}

static void expect_clean_exit(example_prog *p)
{
    int status = example_wait(p, 5);
    if (status == -1)
        FAIL("still running 5 s after the signal");
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
}

TEST(two_threads_echo_many_connections_and_both_accept)
{
    char *argv[] = {"multi_reactor", "-t", "2", "0", NULL};
    example_prog p = example_start("multi_reactor", argv, false);
    for (int b = 0; b < BATCHES; b++)
        echo_batch(p.port, b * BATCH);
    ASSERT_EQ(kill(p.pid, SIGTERM), 0);
    long counts[4];
    ASSERT_EQ(read_counts(&p, counts, 4), 2);
    /* each connection's port is hashed: one side empty has odds of 2^-199 */
    ASSERT_GT(counts[0], 0);
    ASSERT_GT(counts[1], 0);
    ASSERT_EQ(counts[0] + counts[1], BATCH * BATCHES);
    expect_clean_exit(&p);
    example_stop(&p);
}
TEST_TIMEOUT(two_threads_echo_many_connections_and_both_accept, 60);

TEST(sigint_with_clients_connected_exits_0)
{
    char *argv[] = {"multi_reactor", "-t", "2", "0", NULL};
    example_prog p = example_start("multi_reactor", argv, false);
    int fds[8];
    for (int i = 0; i < 8; i++) {
        fds[i] = tcp_connect_raw("127.0.0.1", p.port);
        unsigned char b = (unsigned char)i, back;
        write_all(fds[i], &b, 1);
        read_exactly(fds[i], &back, 1);
        ASSERT_EQ(back, b);
    }
    ASSERT_EQ(kill(p.pid, SIGINT), 0);
    long counts[4];
    ASSERT_EQ(read_counts(&p, counts, 4), 2);
    ASSERT_EQ(counts[0] + counts[1], 8);
    expect_clean_exit(&p);
    /* the stop closed them: each client reads EOF */
    for (int i = 0; i < 8; i++) {
        unsigned char b;
        ASSERT_EQ(read(fds[i], &b, 1), 0);
        close(fds[i]);
    }
    example_stop(&p);
}

TEST(the_port_is_shared_by_the_threads_only)
{
    char *argv[] = {"multi_reactor", "-t", "3", "0", NULL};
    example_prog p = example_start("multi_reactor", argv, false);
    /* a program that does not ask for reuse_port cannot join in */
    em_reactor *r = new_reactor();
    static const em_handler none = {0};
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", p.port, &none, NULL), EADDRINUSE);
    em_reactor_free(r);
    ASSERT_EQ(kill(p.pid, SIGTERM), 0);
    long counts[4];
    ASSERT_EQ(read_counts(&p, counts, 4), 3);
    expect_clean_exit(&p);
    example_stop(&p);
}

TEST(bad_arguments_exit_2)
{
    const char *bad[][4] = {{"multi_reactor", "-t", "0", NULL},
                            {"multi_reactor", "-t", "100000", NULL},
                            {"multi_reactor", "-x", NULL, NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        example_prog p = example_spawn("multi_reactor", (char *const *)bad[i], false);
        int status = example_wait(&p, 5);
        ASSERT(status != -1 && WIFEXITED(status));
        ASSERT_EQ(WEXITSTATUS(status), 2);
        example_stop(&p);
    }
}
