/* examples/chat_server (make demo) as a user runs it, with several clients:
 * a line from one reaches every other one as "<name> line" and not its
 * sender; /nick, /who and /quit answer as documented; a client that quits
 * or just goes is announced to the others and the server goes on; SIGTERM
 * and SIGINT stop it with exit status 0. Its stdout says who joins and
 * leaves, each line at once. */
#include "example_prog.h"

#include <netinet/in.h>

static void say(int fd, const char *text) { write_all(fd, text, strlen(text)); }

/* The server's next stdout line starts with prefix. */
static void expect_log(example_prog *p, const char *prefix)
{
    char line[256];
    if (!example_read_line(p, line, sizeof line, 5000))
        FAIL("waiting for '%s' on stdout: '%s'", prefix, line);
    if (strncmp(line, prefix, strlen(prefix)) != 0)
        FAIL("expected '%s...' on stdout, got '%s'", prefix, line);
}

static example_prog start(void)
{
    char *argv[] = {"chat_server", "0", NULL};
    example_prog p = example_start("chat_server", argv, false);
    char join[128];
    snprintf(join, sizeof join, "join with: nc 127.0.0.1 %d ", p.port);
    expect_log(&p, join);
    return p;
}

/* A new client, welcomed as guestN; the others (n of them, in others) are
 * told, and the server's stdout says so. */
static int join(example_prog *p, int n_guest, const int *others, int n)
{
    int fd = example_connect(p->port);
    char text[128];
    snprintf(text, sizeof text, "Welcome, guest%d. Commands: /nick NAME, /who, /quit\n", n_guest);
    example_expect(fd, text);
    snprintf(text, sizeof text, "* guest%d joined\n", n_guest);
    for (int i = 0; i < n; i++)
        example_expect(others[i], text);
    snprintf(text, sizeof text, "guest%d joined from 127.0.0.1:", n_guest);
    expect_log(p, text);
    return fd;
}

TEST(a_line_reaches_the_others_and_not_its_sender)
{
    example_prog p = start();
    int a = join(&p, 1, NULL, 0);
    int b = join(&p, 2, (int[]){a}, 1);
    int c = join(&p, 3, (int[]){a, b}, 2);
    say(a, "hello all\n");
    example_expect(b, "<guest1> hello all\n");
    example_expect(c, "<guest1> hello all\n");
    say(b, "from b\r\n"); /* CRLF, as telnet sends */
    example_expect(a, "<guest2> from b\n");
    example_expect(c, "<guest2> from b\n");
    say(c, "in ");
    nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
    say(c, "two writes\n\n"); /* and an empty line, which is not sent */
    example_expect(a, "<guest3> in two writes\n");
    example_expect(b, "<guest3> in two writes\n");
    example_expect_quiet(a, 150);
    example_expect_quiet(b, 150);
    example_expect_quiet(c, 150);
    close(a);
    close(b);
    close(c);
    example_stop(&p);
}

TEST(nick_who_and_bad_commands)
{
    example_prog p = start();
    int a = join(&p, 1, NULL, 0);
    int b = join(&p, 2, (int[]){a}, 1);
    say(a, "/nick alice\n");
    example_expect(a, "* guest1 is now known as alice\n"); /* to everyone, its sender too */
    example_expect(b, "* guest1 is now known as alice\n");
    expect_log(&p, "guest1 is now known as alice");
    say(a, "hi\n");
    example_expect(b, "<alice> hi\n");
    say(b, "/nick alice\n");
    example_expect(b, "* alice is taken\n");
    say(b, "/nick two words\n");
    example_expect(b, "* names are 1 to 20 printable characters, no spaces\n");
    say(b, "/nick \n");
    example_expect(b, "* names are 1 to 20 printable characters, no spaces\n");
    say(b, "/dance\n");
    example_expect(b, "* unknown command; try /nick NAME, /who, /quit\n");
    say(b, "/who\n");
    example_expect(b, "* guest2 (you)\n* alice\n"); /* newest first */
    example_expect_quiet(a, 150);
    example_expect_quiet(b, 150);
    close(a);
    close(b);
    example_stop(&p);
}

/* A line longer than the server's buffer (1023 bytes) reaches the others
 * cut into pieces of that size, nothing lost. */
TEST(a_long_line_arrives_in_pieces)
{
    example_prog p = start();
    int a = join(&p, 1, NULL, 0);
    int b = join(&p, 2, (int[]){a}, 1);
    static char line[3001], want[4096];
    memset(line, 'x', 3000);
    line[2999] = '\n';
    say(a, line);
    snprintf(want, sizeof want, "<guest1> %.1023s\n<guest1> %.1023s\n<guest1> %.953s\n", line,
             line, line);
    example_expect(b, want);
    example_expect_quiet(b, 150);
    close(a);
    close(b);
    example_stop(&p);
}

TEST(clients_leaving_are_announced_and_the_server_goes_on)
{
    example_prog p = start();
    int a = join(&p, 1, NULL, 0);
    int b = join(&p, 2, (int[]){a}, 1);
    int c = join(&p, 3, (int[]){a, b}, 2);
    say(c, "/quit\n");
    example_expect(c, "* bye\n");
    example_expect_eof(c);
    close(c);
    example_expect(a, "* guest3 left\n");
    example_expect(b, "* guest3 left\n");
    expect_log(&p, "guest3 left");
    close(b); /* no /quit: just gone */
    example_expect(a, "* guest2 left\n");
    expect_log(&p, "guest2 left");
    int d = join(&p, 4, (int[]){a}, 1);
    say(d, "still here?\n");
    example_expect(a, "<guest4> still here?\n");
    say(a, "yes\n");
    example_expect(d, "<guest1> yes\n");
    example_expect_quiet(a, 150);
    example_expect_quiet(d, 150);
    close(a);
    close(d);
    example_stop(&p);
}

static void stops_on(int signo)
{
    example_prog p = start();
    int a = join(&p, 1, NULL, 0);
    int b = join(&p, 2, (int[]){a}, 1);
    ASSERT_EQ(kill(p.pid, signo), 0);
    int status = example_wait(&p, 5);
    ASSERT(status != -1);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    /* every user was let go: a closed connection, whatever came first */
    int fds[] = {a, b};
    for (int i = 0; i < 2; i++) {
        char buf[256];
        ssize_t n;
        while ((n = read(fds[i], buf, sizeof buf)) > 0)
            ;
        ASSERT_EQ(n, 0);
        close(fds[i]);
    }
    char line[256];
    bool stopped = false;
    while (example_read_line(&p, line, sizeof line, 2000))
        stopped = strcmp(line, "chat server stopped") == 0;
    ASSERT(stopped); /* its last line */
    example_stop(&p);
}

TEST(sigterm_stops_it_with_status_0) { stops_on(SIGTERM); }

TEST(sigint_stops_it_with_status_0) { stops_on(SIGINT); }
