/* examples/defer_worker as a user runs it: requests from several clients
 * at once, computed on the thread pool, are all answered correctly (each
 * answer to the client that asked); clients that hang up before their
 * answer is ready leave the server serving; SIGTERM then ends it with exit
 * status 0 (under ASan, a leaked job would make that non-zero). */
#include "example_prog.h"

#include <netinet/in.h>

typedef struct known {
    long n, prime;
} known;

static const known primes[] = {{1, 2},      {2, 3},         {10, 29},      {100, 541},
                               {1000, 7919}, {10000, 104729}, {30000, 350377}, {50000, 611953}};
#define NPRIMES (int)(sizeof primes / sizeof primes[0])

static void ask(int fd, long n)
{
    char line[32];
    int len = snprintf(line, sizeof line, "%ld\n", n);
    write_all(fd, line, (size_t)len);
}

/* One answer line from fd (within 20 s), parsed. */
static known read_answer(int fd)
{
    char line[64];
    size_t len = 0;
    while (len < sizeof line - 1) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 20000) != 1)
            FAIL("no answer within 20 s");
        ASSERT_EQ(read(fd, line + len, 1), 1);
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    known k = {0, 0};
    if (sscanf(line, "prime %ld %ld", &k.n, &k.prime) != 2)
        FAIL("unexpected answer '%s'", line);
    return k;
}

static long expected(long n)
{
    for (int i = 0; i < NPRIMES; i++)
        if (primes[i].n == n)
            return primes[i].prime;
    FAIL("answer for %ld, never asked", n);
}

static void stop_with_sigterm(example_prog *p)
{
    ASSERT_EQ(kill(p->pid, SIGTERM), 0);
    int status = example_wait(p, 20.0);
    ASSERT(status != -1 && WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    example_stop(p);
}

TEST(concurrent_requests_are_all_answered_correctly)
{
    char *argv[] = {"defer_worker", "0", NULL};
    example_prog p = example_start("defer_worker", argv, false);
    int fds[NPRIMES];
    /* one client per request, all asked before any answer is read */
    for (int i = 0; i < NPRIMES; i++) {
        fds[i] = example_connect(p.port);
        ask(fds[i], primes[NPRIMES - 1 - i].n);
    }
    /* and one client with every request at once: answers in any order */
    int many = example_connect(p.port);
    for (int i = 0; i < NPRIMES; i++)
        ask(many, primes[i].n);
    for (int i = 0; i < NPRIMES; i++) {
        known k = read_answer(fds[i]);
        ASSERT_EQ(k.n, primes[NPRIMES - 1 - i].n);
        ASSERT_EQ(k.prime, primes[NPRIMES - 1 - i].prime);
        close(fds[i]);
    }
    bool seen[NPRIMES] = {false};
    for (int i = 0; i < NPRIMES; i++) {
        known k = read_answer(many);
        ASSERT_EQ(k.prime, expected(k.n));
        for (int j = 0; j < NPRIMES; j++)
            if (primes[j].n == k.n) {
                ASSERT(!seen[j]);
                seen[j] = true;
            }
    }
    close(many);
    stop_with_sigterm(&p);
}
TEST_TIMEOUT(concurrent_requests_are_all_answered_correctly, 60);

/* Clients that leave before their answer. Half of them reset the
 * connection: it is gone when the job finishes, and the answer finds no
 * connection by its signature. The others close it (a FIN): the server
 * keeps the connection half-open until the answer is written to a socket
 * nobody reads. Either way the server goes on answering the others. */
TEST(clients_gone_before_their_answer_do_not_harm_the_server)
{
    char *argv[] = {"defer_worker", "0", NULL};
    example_prog p = example_start("defer_worker", argv, false);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 10; i++) {
            int fd = example_connect(p.port);
            ask(fd, 50000);
            if (i % 2) /* a reset rather than a FIN, for half of them */
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0},
                           sizeof(struct linger));
            close(fd);
        }
        int fd = example_connect(p.port);
        ask(fd, 10000);
        known k = read_answer(fd);
        ASSERT_EQ(k.n, 10000);
        ASSERT_EQ(k.prime, 104729);
        close(fd);
    }
    /* and SIGTERM while jobs of gone clients are still running */
    for (int i = 0; i < 4; i++) {
        int fd = example_connect(p.port);
        ask(fd, 50000);
        close(fd);
    }
    stop_with_sigterm(&p);
}
TEST_TIMEOUT(clients_gone_before_their_answer_do_not_harm_the_server, 60);

/* A client that half-closes after its requests gets every answer, then
 * EOF. */
TEST(a_half_closed_client_gets_its_answers)
{
    char *argv[] = {"defer_worker", "0", NULL};
    example_prog p = example_start("defer_worker", argv, false);
    int fd = example_connect(p.port);
    write_all(fd, "30000\n10\n", 9);
    ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
    known a = read_answer(fd), b = read_answer(fd);
    ASSERT_EQ(a.prime, expected(a.n));
    ASSERT_EQ(b.prime, expected(b.n));
    ASSERT_EQ(a.n + b.n, 30010);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    ASSERT_EQ(poll(&pfd, 1, 5000), 1);
    char ch;
    ASSERT_EQ(read(fd, &ch, 1), 0);
    close(fd);
    stop_with_sigterm(&p);
}

TEST(bad_requests_are_answered_with_an_error)
{
    char *argv[] = {"defer_worker", "0", NULL};
    example_prog p = example_start("defer_worker", argv, false);
    int fd = example_connect(p.port);
    write_all(fd, "0\nabc\n", 6);
    char buf[73];
    size_t got = 0;
    while (got < 72) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ASSERT_EQ(poll(&pfd, 1, 5000), 1);
        ssize_t n = read(fd, buf + got, 72 - got);
        ASSERT_GT(n, 0);
        got += (size_t)n;
    }
    buf[72] = '\0';
    ASSERT_STREQ(buf, "error: expected N from 1 to 1000000\n"
                      "error: expected N from 1 to 1000000\n");
    close(fd);
    stop_with_sigterm(&p);
}
