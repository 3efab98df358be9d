/* examples/kv_server as a user runs it: a key set on one connection is
 * seen and deleted from another; commands arrive byte by byte or many to a
 * write and are answered in order; a line over the limit is answered
 * "ERROR line too long" and the connection goes on; bad commands get
 * ERROR. */
#include "example_prog.h"

#include <netinet/in.h>

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Exactly the bytes of text, each within 5 s of the last. */
static void expect(int fd, const char *text)
{
    char buf[512];
    size_t len = strlen(text);
    ASSERT_LE(len, sizeof buf);
    for (size_t got = 0; got < len;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 5000) != 1)
            FAIL("waiting for '%s': only '%.*s' arrived", text, (int)got, buf);
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0)
            FAIL("waiting for '%s': EOF after '%.*s'", text, (int)got, buf);
        got += (size_t)n;
    }
    if (memcmp(buf, text, len) != 0)
        FAIL("expected '%s', got '%.*s'", text, (int)len, buf);
}

static void say(int fd, const char *text) { write_all(fd, text, strlen(text)); }

/* Nothing more arrives for a while: no reply was sent twice. */
static void expect_quiet(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    ASSERT_EQ(poll(&pfd, 1, 100), 0);
}

static example_prog start(void)
{
    char *argv[] = {"kv_server", "0", NULL};
    return example_start("kv_server", argv, false);
}

TEST(set_get_del_are_shared_between_connections)
{
    example_prog p = start();
    int a = connect_to(p.port), b = connect_to(p.port);
    say(a, "GET colour\n");
    expect(a, "NOT_FOUND\n");
    say(a, "SET colour dark blue\n");
    expect(a, "OK\n");
    say(b, "GET colour\n");
    expect(b, "VALUE dark blue\n");
    say(b, "SET colour red\n"); /* replaces */
    expect(b, "OK\n");
    say(a, "GET colour\n");
    expect(a, "VALUE red\n");
    say(b, "DEL colour\n");
    expect(b, "DELETED\n");
    say(a, "GET colour\n");
    expect(a, "NOT_FOUND\n");
    say(a, "DEL colour\n");
    expect(a, "NOT_FOUND\n");
    say(a, "SET empty \r\n"); /* an empty value; CRLF works too */
    expect(a, "OK\n");
    say(b, "GET empty\n");
    expect(b, "VALUE \n");
    expect_quiet(a);
    expect_quiet(b);
    close(a);
    close(b);
    example_stop(&p);
}

TEST(lines_split_byte_by_byte_and_many_to_a_write)
{
    example_prog p = start();
    int fd = connect_to(p.port);
    const char *cmds = "SET k1 v one\nSET k2 v two\nGET k1\n";
    for (const char *q = cmds; *q; q++) {
        write_all(fd, q, 1);
        /* now and then give the server a turn in the middle of a line */
        if ((q - cmds) % 5 == 0)
            nanosleep(&(struct timespec){.tv_nsec = 2 * 1000 * 1000}, NULL);
    }
    expect(fd, "OK\nOK\nVALUE v one\n");
    say(fd, "GET k2\nDEL k1\nGET k1\nBOGUS\nGET k2\n");
    expect(fd, "VALUE v two\nDELETED\nNOT_FOUND\nERROR unknown command\nVALUE v two\n");
    expect_quiet(fd);
    close(fd);
    example_stop(&p);
}

/* Over the limit (4096 bytes), in one write with good commands around it
 * and in pieces: each answered in its place, the connection still usable. */
TEST(a_line_too_long_is_refused_and_the_connection_goes_on)
{
    example_prog p = start();
    int fd = connect_to(p.port);
    static char big[10000];
    memcpy(big, "SET big ", 8);
    memset(big + 8, 'x', 5000);
    memcpy(big + 5008, "\n", 2);
    say(fd, "SET a 1\n");
    say(fd, big);
    say(fd, "GET a\n");
    expect(fd, "OK\nERROR line too long\nVALUE 1\n");
    say(fd, "GET big\n");
    expect(fd, "NOT_FOUND\n");
    /* in one write: the replies keep the order of the commands */
    char mixed[12000];
    snprintf(mixed, sizeof mixed, "GET a\n%sSET b 2\nGET b\n", big);
    say(fd, mixed);
    expect(fd, "VALUE 1\nERROR line too long\nOK\nVALUE 2\n");
    /* in pieces of 1000 bytes: refused once, whatever the piece it passes in */
    for (size_t off = 0; off < 5009; off += 1000)
        write_all(fd, big + off, off + 1000 < 5009 ? 1000 : 5009 - off);
    say(fd, "GET b\n");
    expect(fd, "ERROR line too long\nVALUE 2\n");
    /* exactly at the limit is accepted: "SET c " and 4090 bytes */
    memcpy(big, "SET c ", 6);
    memset(big + 6, 'y', 4090);
    memcpy(big + 4096, "\n", 2);
    say(fd, big);
    expect(fd, "OK\n");
    expect_quiet(fd);
    close(fd);
    example_stop(&p);
}

TEST(bad_commands_get_error)
{
    example_prog p = start();
    int fd = connect_to(p.port);
    say(fd, "\n");
    expect(fd, "ERROR unknown command\n");
    say(fd, "get a\n"); /* commands are upper case */
    expect(fd, "ERROR unknown command\n");
    say(fd, "SET\n");
    expect(fd, "ERROR usage: SET key value\n");
    say(fd, "SET onlykey\n");
    expect(fd, "ERROR usage: SET key value\n");
    say(fd, "SET  value\n"); /* empty key */
    expect(fd, "ERROR usage: SET key value\n");
    say(fd, "GET\n");
    expect(fd, "ERROR usage: GET key\n");
    say(fd, "GET a b\n");
    expect(fd, "ERROR usage: GET key\n");
    say(fd, "DEL \n");
    expect(fd, "ERROR usage: DEL key\n");
    write_all(fd, "GET a\0b\n", 8);
    expect(fd, "ERROR NUL byte in line\n");
    say(fd, "SET a 1\nGET a\n"); /* and it still works */
    expect(fd, "OK\nVALUE 1\n");
    expect_quiet(fd);
    close(fd);
    example_stop(&p);
}
