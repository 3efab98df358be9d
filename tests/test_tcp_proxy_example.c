/* examples/tcp_proxy as a user runs it: in front of examples/echo_server, a
 * client writes its whole request, half-closes (shutdown(SHUT_WR)) and
 * reads the echo until EOF. Every byte must come back, every run: the
 * client's FIN travels through the proxy to the echo server only after the
 * bytes before it, the echo server's FIN back the same way, and the proxy
 * keeps each pair until both directions have ended. */
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define REQUEST_BYTES 1000000
#define RUNS 10

typedef struct program {
    pid_t pid;
    int port;
} program;

static void example_path(char *out, size_t size, const char *name)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ASSERT_GT(n, 0);
    self[n] = '\0';
    snprintf(out, size, "%s/../examples/%s", dirname(self), name);
    ASSERT_EQ(access(out, X_OK), 0);
}

/* Starts an example and reads the port from its first line ("ready
 * port=PORT ..." or "proxying 127.0.0.1:PORT ..."). */
static program start(const char *name, const char *arg1, const char *arg2)
{
    char path[PATH_MAX];
    example_path(path, sizeof path, name);
    int out[2];
    ASSERT_EQ(pipe(out), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed case leaves nothing running */
        dup2(out[1], STDOUT_FILENO);
        close(out[0]);
        close(out[1]);
        execl(path, name, arg1, arg2, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    char line[256] = {0};
    size_t len = 0;
    struct pollfd pfd = {.fd = out[0], .events = POLLIN};
    while (len < sizeof line - 1 && !strchr(line, '\n') && poll(&pfd, 1, 5000) == 1) {
        ssize_t n = read(out[0], line + len, sizeof line - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(out[0]);
    const char *at = strstr(line, "ready port=");
    const char *port = at ? at + strlen("ready port=") : strstr(line, "127.0.0.1:");
    if (!port)
        FAIL("%s printed no port: '%s'", name, line);
    return (program){.pid = pid, .port = atoi(at ? port : port + strlen("127.0.0.1:"))};
}

static void stop(program p)
{
    kill(p.pid, SIGTERM);
    int status;
    ASSERT_EQ(waitpid(p.pid, &status, 0), p.pid);
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 131 + (i >> 13)); }

/* Writes the request while reading the echo (neither side may block the
 * other), half-closes after the last byte, then reads until EOF. Returns
 * the bytes echoed, each checked. */
static size_t request_and_echo(int port)
{
    int fd = connect_to(port);
    ASSERT_EQ(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    size_t sent = 0, got = 0;
    bool shut = false;
    unsigned char buf[65536];
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN | (shut ? 0 : POLLOUT)};
        ASSERT_EQ(poll(&pfd, 1, 10000), 1);
        if (!shut && (pfd.revents & POLLOUT)) {
            size_t n = REQUEST_BYTES - sent < sizeof buf ? REQUEST_BYTES - sent : sizeof buf;
            for (size_t i = 0; i < n; i++)
                buf[i] = pattern(sent + i);
            ssize_t w = write(fd, buf, n);
            if (w > 0)
                sent += (size_t)w;
            if (sent == REQUEST_BYTES && (shut = true))
                ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
        }
        if (pfd.revents & (POLLIN | POLLHUP)) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r == 0)
                break;
            ASSERT_GT(r, 0);
            for (ssize_t i = 0; i < r; i++)
                if (buf[i] != pattern(got + (size_t)i))
                    FAIL("byte %zu differs", got + (size_t)i);
            got += (size_t)r;
        }
    }
    close(fd);
    return got;
}

TEST(half_closed_request_gets_its_whole_echo_through_the_proxy)
{
    program echo = start("echo_server", "0", NULL);
    char backend[16];
    snprintf(backend, sizeof backend, "%d", echo.port);
    program proxy = start("tcp_proxy", "0", backend);
    for (int run = 0; run < RUNS; run++)
        ASSERT_EQ(request_and_echo(proxy.port), REQUEST_BYTES);
    stop(proxy);
    stop(echo);
}
TEST_TIMEOUT(half_closed_request_gets_its_whole_echo_through_the_proxy, 60);

/* The same without the half-close trick: a client that closes both ways at
 * once still leaves no pair behind (each run connects anew; a leaked pair
 * would hold its descriptors, which the proxy would run out of first). */
TEST(proxy_pairs_end_when_both_directions_have_ended)
{
    program echo = start("echo_server", "0", NULL);
    char backend[16];
    snprintf(backend, sizeof backend, "%d", echo.port);
    program proxy = start("tcp_proxy", "0", backend);
    for (int run = 0; run < 200; run++)
        ASSERT_EQ(request_and_echo(proxy.port) > 0, true);
    char fds[64];
    snprintf(fds, sizeof fds, "/proc/%d/fd", (int)proxy.pid);
    /* give the last pair its turn to close */
    usleep(200 * 1000);
    int open_fds = 0;
    DIR *d = opendir(fds);
    ASSERT(d);
    while (readdir(d))
        open_fds++;
    closedir(d);
    /* ., .., stdio, the poller, its wake-up, the listener, the pipe pool
     * (at most 16 pipes): under 48; 200 leaked pairs would be 400 more */
    ASSERT_LT(open_fds, 48);
    stop(proxy);
    stop(echo);
}
TEST_TIMEOUT(proxy_pairs_end_when_both_directions_have_ended, 120);
