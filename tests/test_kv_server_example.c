/* examples/kv_server as a user runs it: a key set on one connection is
 * seen and deleted from another; commands arrive byte by byte or many to a
 * write and are answered in order; a line over the limit is answered
 * "ERROR line too long" and the connection goes on; bad commands get
 * ERROR. */
#include "example_prog.h"

#include <netinet/in.h>

static void say(int fd, const char *text) { write_all(fd, text, strlen(text)); }

static example_prog start(void)
{
    char *argv[] = {"kv_server", "0", NULL};
    return example_start("kv_server", argv, false);
}

TEST(set_get_del_are_shared_between_connections)
{
    example_prog p = start();
    int a = example_connect(p.port), b = example_connect(p.port);
    say(a, "GET colour\n");
    example_expect(a, "NOT_FOUND\n");
    say(a, "SET colour dark blue\n");
    example_expect(a, "OK\n");
    say(b, "GET colour\n");
    example_expect(b, "VALUE dark blue\n");
    say(b, "SET colour red\n"); /* replaces */
    example_expect(b, "OK\n");
    say(a, "GET colour\n");
    example_expect(a, "VALUE red\n");
    say(b, "DEL colour\n");
    example_expect(b, "DELETED\n");
    say(a, "GET colour\n");
    example_expect(a, "NOT_FOUND\n");
    say(a, "DEL colour\n");
    example_expect(a, "NOT_FOUND\n");
    say(a, "SET empty \r\n"); /* an empty value; CRLF works too */
    example_expect(a, "OK\n");
    say(b, "GET empty\n");
    example_expect(b, "VALUE \n");
    example_expect_quiet(a, 100);
    example_expect_quiet(b, 100);
    close(a);
    close(b);
    example_stop(&p);
}

TEST(lines_split_byte_by_byte_and_many_to_a_write)
{
    example_prog p = start();
    int fd = example_connect(p.port);
    const char *cmds = "SET k1 v one\nSET k2 v two\nGET k1\n";
    for (const char *q = cmds; *q; q++) {
        write_all(fd, q, 1);
        /* now and then give the server a turn in the middle of a line */
        if ((q - cmds) % 5 == 0)
            nanosleep(&(struct timespec){.tv_nsec = 2 * 1000 * 1000}, NULL);
    }
    example_expect(fd, "OK\nOK\nVALUE v one\n");
    say(fd, "GET k2\nDEL k1\nGET k1\nBOGUS\nGET k2\n");
    example_expect(fd, "VALUE v two\nDELETED\nNOT_FOUND\nERROR unknown command\nVALUE v two\n");
    example_expect_quiet(fd, 100);
    close(fd);
    example_stop(&p);
}

/* Over the limit (4096 bytes), in one write with good commands around it
 * and in pieces: each answered in its place, the connection still usable. */
TEST(a_line_too_long_is_refused_and_the_connection_goes_on)
{
    example_prog p = start();
    int fd = example_connect(p.port);
    static char big[10000];
    memcpy(big, "SET big ", 8);
    memset(big + 8, 'x', 5000);
    memcpy(big + 5008, "\n", 2);
    say(fd, "SET a 1\n");
    say(fd, big);
    say(fd, "GET a\n");
    example_expect(fd, "OK\nERROR line too long\nVALUE 1\n");
    say(fd, "GET big\n");
    example_expect(fd, "NOT_FOUND\n");
    /* in one write: the replies keep the order of the commands */
    char mixed[12000];
    snprintf(mixed, sizeof mixed, "GET a\n%sSET b 2\nGET b\n", big);
    say(fd, mixed);
    example_expect(fd, "VALUE 1\nERROR line too long\nOK\nVALUE 2\n");
    /* in pieces of 1000 bytes: refused once, whatever the piece it passes in */
    for (size_t off = 0; off < 5009; off += 1000)
        write_all(fd, big + off, off + 1000 < 5009 ? 1000 : 5009 - off);
    say(fd, "GET b\n");
    example_expect(fd, "ERROR line too long\nVALUE 2\n");
    /* exactly at the limit is accepted: "SET c " and 4090 bytes */
    memcpy(big, "SET c ", 6);
    memset(big + 6, 'y', 4090);
    memcpy(big + 4096, "\n", 2);
    say(fd, big);
    example_expect(fd, "OK\n");
    example_expect_quiet(fd, 100);
    close(fd);
    example_stop(&p);
}

TEST(bad_commands_get_error)
{
    example_prog p = start();
    int fd = example_connect(p.port);
    say(fd, "\n");
    example_expect(fd, "ERROR unknown command\n");
    say(fd, "get a\n"); /* commands are upper case */
    example_expect(fd, "ERROR unknown command\n");
    say(fd, "SET\n");
    example_expect(fd, "ERROR usage: SET key value\n");
    say(fd, "SET onlykey\n");
    example_expect(fd, "ERROR usage: SET key value\n");
    say(fd, "SET  value\n"); /* empty key */
    example_expect(fd, "ERROR usage: SET key value\n");
    say(fd, "GET\n");
    example_expect(fd, "ERROR usage: GET key\n");
    say(fd, "GET a b\n");
    example_expect(fd, "ERROR usage: GET key\n");
    say(fd, "DEL \n");
    example_expect(fd, "ERROR usage: DEL key\n");
    write_all(fd, "GET a\0b\n", 8);
    example_expect(fd, "ERROR NUL byte in line\n");
    say(fd, "SET a 1\nGET a\n"); /* and it still works */
    example_expect(fd, "OK\nVALUE 1\n");
    example_expect_quiet(fd, 100);
    close(fd);
    example_stop(&p);
}
