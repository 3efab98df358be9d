/* examples/connect_client as a user runs it, against a server this test
 * plays on loopback: it sends its message and a newline, prints the first
 * line of the reply (without CR LF) and exits 0; a server that closes
 * without a word, a refused port and a bad command line each give a
 * non-zero status and a reason on stderr. */
#include "example_prog.h"

#include <netinet/in.h>

static int listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int accept_one(int lfd)
{
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    if (poll(&pfd, 1, 5000) != 1)
        FAIL("connect_client did not connect within 5 s");
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(fd, 0);
    return fd;
}

/* What the client sent, up to and with its first newline. */
static void expect_request(int fd, const char *want)
{
    char buf[256];
    size_t len = 0;
    while (len < sizeof buf - 1 && !memchr(buf, '\n', len)) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 5000) != 1)
            FAIL("waiting for '%s': only '%.*s' arrived", want, (int)len, buf);
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            FAIL("waiting for '%s': EOF after '%.*s'", want, (int)len, buf);
        len += (size_t)n;
    }
    buf[len] = '\0';
    ASSERT_STREQ(buf, want);
}

/* Everything on its stdout until it exits; its exit status (it must exit
 * normally within 5 s). */
static int finish(example_prog *p, char *out, size_t size)
{
    size_t len = 0;
    struct pollfd pfd = {.fd = p->out, .events = POLLIN};
    while (len < size - 1 && poll(&pfd, 1, 5000) == 1) {
        ssize_t n = read(p->out, out + len, size - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    out[len] = '\0';
    int status = example_wait(p, 5);
    if (status == -1)
        FAIL("connect_client still running; it printed '%s'", out);
    example_stop(p);
    ASSERT(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Runs connect_client MESSAGE (none: its default) against a server that
 * expects request and answers with the pieces of reply, a pause between
 * them, then closes; returns the client's exit status, its stdout in out. */
static int exchange(const char *message, const char *request, const char *const *reply,
                    char *out, size_t size)
{
    int port;
    int lfd = listener(&port);
    ASSERT_EQ(listen(lfd, 4), 0);
    char port_arg[16];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    char *argv[] = {"connect_client", "127.0.0.1", port_arg, (char *)message, NULL};
    example_prog p = example_spawn("connect_client", argv, false);
    int fd = accept_one(lfd);
    expect_request(fd, request);
    for (; *reply; reply++) {
        write_all(fd, *reply, strlen(*reply));
        nanosleep(&(struct timespec){.tv_nsec = 30 * 1000 * 1000}, NULL);
    }
    close(fd);
    int status = finish(&p, out, size);
    close(lfd);
    return status;
}

TEST(prints_the_first_line_of_the_reply_and_exits_0)
{
    char out[256];
    const char *reply[] = {"HELLO BACK\r\nand a second line\n", NULL};
    ASSERT_EQ(exchange(NULL, "hello\n", reply, out, sizeof out), 0);
    ASSERT_STREQ(out, "HELLO BACK\n");
    const char *answer[] = {"pong 42\n", NULL};
    ASSERT_EQ(exchange("ping 42", "ping 42\n", answer, out, sizeof out), 0);
    ASSERT_STREQ(out, "pong 42\n");
}

TEST(a_reply_in_pieces_is_put_together)
{
    char out[256];
    const char *reply[] = {"a rep", "ly in ", "three pieces\n", NULL};
    ASSERT_EQ(exchange("x", "x\n", reply, out, sizeof out), 0);
    ASSERT_STREQ(out, "a reply in three pieces\n");
    /* the server closing ends a last line without a newline */
    const char *unended[] = {"no newline", NULL};
    ASSERT_EQ(exchange("x", "x\n", unended, out, sizeof out), 0);
    ASSERT_STREQ(out, "no newline\n");
}

TEST(a_server_closing_without_reply_is_status_1)
{
    char out[256];
    const char *nothing[] = {NULL};
    ASSERT_EQ(exchange(NULL, "hello\n", nothing, out, sizeof out), 1);
    ASSERT_STREQ(out, "");
}

TEST(a_refused_port_is_status_1_with_the_reason)
{
    int port;
    int fd = listener(&port); /* bound, never listening: connecting is refused */
    char port_arg[16];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    char *argv[] = {"connect_client", "127.0.0.1", port_arg, NULL};
    char out[256], err[512];
    int status = example_run("connect_client", argv, 10, out, sizeof out, err, sizeof err);
    close(fd);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 1);
    ASSERT_STREQ(out, "");
    char want[128];
    snprintf(want, sizeof want, "connect_client: %s\n", em_strerror(ECONNREFUSED));
    ASSERT_STREQ(err, want);
}

TEST(a_bad_command_line_is_status_2)
{
    char *argv[] = {"connect_client", "127.0.0.1", NULL};
    char out[256], err[512];
    int status = example_run("connect_client", argv, 10, out, sizeof out, err, sizeof err);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 2);
    ASSERT_STREQ(out, "");
    ASSERT(strstr(err, "usage: connect_client HOST PORT [MESSAGE]") != NULL);
}
