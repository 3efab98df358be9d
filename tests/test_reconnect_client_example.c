/* examples/reconnect_client as a user runs it: against a port where nothing
 * listens it retries with delays doubling from 50 ms to 1 s; once a
 * listener appears there it connects, pings every 100 ms and prints the
 * echoed lines; when the server drops it (and stops listening) it says
 * so and retries from 50 ms again, and it connects again once the port
 * listens again. */
#include "example_prog.h"

#include <netinet/in.h>

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    int one = 1;
    ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ASSERT_EQ(listen(fd, 4), 0);
    return fd;
}

static int accept_within(int lfd, int timeout_ms)
{
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) != 1)
        FAIL("the client did not connect within %d ms", timeout_ms);
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(fd, 0);
    return fd;
}

/* The client's next line of output; fails when none comes within 5 s. */
static void next_line(example_prog *p, char *line, size_t size)
{
    if (!example_read_line(p, line, size, 5000))
        FAIL("the client printed no line within 5 s (got '%s')", line);
}

/* Skips lines until one equal to want; fails after max_lines others. */
static void expect_line(example_prog *p, const char *want, int max_lines)
{
    char line[256];
    for (int i = 0; i <= max_lines; i++) {
        next_line(p, line, sizeof line);
        if (strcmp(line, want) == 0)
            return;
    }
    FAIL("no '%s' among %d lines (last: '%s')", want, max_lines + 1, line);
}

/* Echoes back what the client sends until `lines` whole lines went back;
 * the lines echoed, concatenated, in out. */
static void echo_lines(int fd, int lines, char *out, size_t size)
{
    size_t len = 0;
    for (int seen = 0; seen < lines;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 5000) != 1)
            FAIL("the client sent no ping within 5 s");
        char buf[256];
        ssize_t n = read(fd, buf, sizeof buf);
        ASSERT_GT(n, 0);
        write_all(fd, buf, (size_t)n);
        ASSERT_LT(len + (size_t)n, size);
        memcpy(out + len, buf, (size_t)n);
        len += (size_t)n;
        for (ssize_t i = 0; i < n; i++)
            seen += buf[i] == '\n';
    }
    out[len] = '\0';
}

/* Each echoed line appears as "reply: LINE", in order (a last partial line
 * is left out: it may not have come back whole yet). */
static void expect_replies(example_prog *p, char *echoed)
{
    for (char *nl; (nl = strchr(echoed, '\n')); echoed = nl + 1) {
        *nl = '\0';
        ASSERT_EQ(strncmp(echoed, "ping ", 5), 0);
        char want[300];
        snprintf(want, sizeof want, "reply: %s", echoed);
        char line[256];
        next_line(p, line, sizeof line);
        ASSERT_STREQ(line, want);
    }
}

static void expect_retries(example_prog *p, const int *delays, int n)
{
    char line[256], want[64];
    for (int i = 0; i < n; i++) {
        next_line(p, line, sizeof line);
        ASSERT_STREQ(line, "disconnected: Connection refused");
        next_line(p, line, sizeof line);
        snprintf(want, sizeof want, "retry in %d ms", delays[i]);
        ASSERT_STREQ(line, want);
    }
}

static example_prog start(int port)
{
    char port_arg[16];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    char *argv[] = {"reconnect_client", "127.0.0.1", port_arg, NULL};
    return example_spawn("reconnect_client", argv, false);
}

TEST(refused_connects_back_off_doubling_up_to_one_second)
{
    int port = free_port(); /* nothing listens there now */
    example_prog p = start(port);
    double t0 = now_mono();
    static const int delays[] = {50, 100, 200, 400, 800, 1000, 1000};
    expect_retries(&p, delays, 7);
    /* the delays were waited: 50 + ... + 1000 before the 7th refusal */
    ASSERT_DBL_GE(now_mono() - t0, 2.4);
    example_stop(&p);
}
TEST_TIMEOUT(refused_connects_back_off_doubling_up_to_one_second, 30);

TEST(connects_when_the_server_comes_and_again_after_it_drops)
{
    int port = free_port();
    example_prog p = start(port);
    static const int delays[] = {50, 100};
    expect_retries(&p, delays, 2);

    /* the server comes up: the client connects and its pings come back */
    int lfd = listen_on(port);
    int fd = accept_within(lfd, 3000);
    expect_line(&p, "connected", 10); /* after the retries still in flight */
    char echoed[4096];
    echo_lines(fd, 3, echoed, sizeof echoed);
    expect_replies(&p, echoed);

    /* the server drops it and stops listening: retries start again at
     * 50 ms (the reason depends on whether a ping was left unread, which
     * makes close send a reset) */
    close(lfd);
    close(fd);
    char line[256];
    do
        next_line(&p, line, sizeof line);
    while (strncmp(line, "reply: ", 7) == 0);
    ASSERT_EQ(strncmp(line, "disconnected: ", 14), 0);
    next_line(&p, line, sizeof line);
    ASSERT_STREQ(line, "retry in 50 ms");
    static const int after[] = {100, 200};
    expect_retries(&p, after, 2);

    /* and back again */
    lfd = listen_on(port);
    fd = accept_within(lfd, 3000);
    expect_line(&p, "connected", 10);
    echo_lines(fd, 2, echoed, sizeof echoed);
    expect_replies(&p, echoed);
    close(fd);
    close(lfd);
    example_stop(&p);
}
TEST_TIMEOUT(connects_when_the_server_comes_and_again_after_it_drops, 30);
