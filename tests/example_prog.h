/* Runs a program of build/examples/ as a user does, for the tests of the
 * examples: its stdout (and, when asked, its stdin) on pipes, the port read
 * from its first line ("ready port=N ..."). The program gets SIGKILL when
 * the test case that started it ends (PR_SET_PDEATHSIG), so a failed case
 * leaves nothing running. Everything is static inline: each test includes
 * what it uses. */
#ifndef EM_TEST_EXAMPLE_PROG_H
#define EM_TEST_EXAMPLE_PROG_H

#include "harness.h"

#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct example_prog {
    pid_t pid;
    int port;
    int in;  /* write end of its stdin, or -1 (its stdin is then /dev/null) */
    int out; /* read end of its stdout */
} example_prog;

static inline void example_path(char *out, size_t size, const char *name)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ASSERT_GT(n, 0);
    self[n] = '\0';
    snprintf(out, size, "%s/../examples/%s", dirname(self), name);
    ASSERT_EQ(access(out, X_OK), 0);
}

/* One line of its stdout, without the newline; false on EOF or when none
 * comes within timeout_ms. Byte by byte, so nothing after the line is
 * consumed. */
static inline bool example_read_line(example_prog *p, char *line, size_t size, int timeout_ms)
{
    size_t len = 0;
    struct pollfd pfd = {.fd = p->out, .events = POLLIN};
    while (len < size - 1) {
        if (poll(&pfd, 1, timeout_ms) != 1)
            break;
        char ch;
        if (read(p->out, &ch, 1) != 1)
            break;
        if (ch == '\n') {
            line[len] = '\0';
            return true;
        }
        line[len++] = ch;
    }
    line[len] = '\0';
    return false;
}

static inline void example_child(const char *path, char *const argv[], int in[2], int out[2])
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed case leaves nothing running */
    dup2(out[1], STDOUT_FILENO);
    if (in[0] >= 0)
        dup2(in[0], STDIN_FILENO);
    else {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, STDIN_FILENO);
    }
    /* the pipes are O_CLOEXEC: only the duplicates reach the program */
    execv(path, argv);
    _exit(127);
}

/* Starts build/examples/NAME with argv (argv[0] included, NULL-ended),
 * reading nothing of its output (a client prints no port). */
static inline example_prog example_spawn(const char *name, char *const argv[], bool with_stdin)
{
    char path[PATH_MAX];
    example_path(path, sizeof path, name);
    int in[2] = {-1, -1}, out[2];
    ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
    if (with_stdin)
        ASSERT_EQ(pipe2(in, O_CLOEXEC), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0)
        example_child(path, argv, in, out);
    close(out[1]);
    if (with_stdin)
        close(in[0]);
    return (example_prog){.pid = pid, .port = -1, .in = in[1], .out = out[0]};
}

/* example_spawn, then the port read from its first line. */
static inline example_prog example_start(const char *name, char *const argv[], bool with_stdin)
{
    example_prog p = example_spawn(name, argv, with_stdin);
    char line[256];
    if (!example_read_line(&p, line, sizeof line, 5000))
        FAIL("%s printed no startup line: '%s'", name, line);
    const char *at = strstr(line, "ready port=");
    if (!at)
        FAIL("%s printed no port: '%s'", name, line);
    p.port = atoi(at + strlen("ready port="));
    ASSERT_GT(p.port, 0);
    return p;
}

/* Waits at most timeout_s for the program to exit; returns its wait
 * status, or -1 when it is still running. */
static inline int example_wait(example_prog *p, double timeout_s)
{
    double end = now_mono() + timeout_s;
    for (;;) {
        int status;
        pid_t w = waitpid(p->pid, &status, WNOHANG);
        ASSERT_GE(w, 0);
        if (w == p->pid) {
            p->pid = -1;
            return status;
        }
        if (now_mono() >= end)
            return -1;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
}

/* Ends the program (if still running) and closes the pipes. */
static inline void example_stop(example_prog *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        ASSERT_EQ(waitpid(p->pid, NULL, 0), p->pid);
        p->pid = -1;
    }
    if (p->in >= 0)
        close(p->in);
    close(p->out);
    p->in = p->out = -1;
}


/* Reads what comes on fd into buf (NUL-terminated, the rest dropped);
 * false at EOF. */
static inline bool example_take(int fd, char *buf, size_t size, size_t *len)
{
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n <= 0)
        return false;
    size_t keep = (size_t)n < size - 1 - *len ? (size_t)n : size - 1 - *len;
    memcpy(buf + *len, chunk, keep);
    *len += keep;
    buf[*len] = '\0';
    return true;
}

/* Runs build/examples/NAME (a client) to its end with argv, stdin
 * /dev/null: what it printed on stdout and stderr in out and err
 * (NUL-terminated, cut to their size), its wait status returned. Fails the
 * case when it is still running after timeout_s. */
static inline int example_run(const char *name, char *const argv[], double timeout_s, char *out,
                              size_t out_size, char *err, size_t err_size)
{
    char path[PATH_MAX];
    example_path(path, sizeof path, name);
    int o[2], e[2], no_stdin[2] = {-1, -1};
    ASSERT_EQ(pipe2(o, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(e, O_CLOEXEC), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        dup2(e[1], STDERR_FILENO);
        example_child(path, argv, no_stdin, o);
    }
    close(o[1]);
    close(e[1]);
    example_prog p = {.pid = pid, .port = -1, .in = -1, .out = o[0]};
    struct pollfd pfd[2] = {{.fd = o[0], .events = POLLIN}, {.fd = e[0], .events = POLLIN}};
    size_t out_len = 0, err_len = 0;
    out[0] = err[0] = '\0';
    double end = now_mono() + timeout_s;
    while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
        int left_ms = (int)((end - now_mono()) * 1000);
        if (left_ms <= 0 || poll(pfd, 2, left_ms) <= 0)
            break;
        if (pfd[0].revents && !example_take(o[0], out, out_size, &out_len))
            pfd[0].fd = -1;
        if (pfd[1].revents && !example_take(e[0], err, err_size, &err_len))
            pfd[1].fd = -1;
    }
    close(e[0]);
    /* with its output closed it is on its way out: a moment more for that */
    double left = end - now_mono();
    int status = example_wait(&p, left > 2 ? left : 2);
    if (status == -1) {
        example_stop(&p);
        FAIL("%s still running after %.0f s; stdout '%s', stderr '%s'", name, timeout_s, out, err);
    }
    close(o[0]);
    return status;
}

/* ---------------------------------------------- a client of an example */

/* A blocking TCP connection to the example on 127.0.0.1:port. */
static inline int example_connect(int port) { return tcp_connect_raw("127.0.0.1", port); }

/* Exactly the bytes of text on fd, each within 5 s of the last. */
static inline void example_expect(int fd, const char *text)
{
    char buf[4096];
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

/* The peer's EOF on fd within 5 s, nothing before it. */
static inline void example_expect_eof(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    ASSERT_EQ(poll(&pfd, 1, 5000), 1);
    char ch;
    ASSERT_EQ(read(fd, &ch, 1), 0);
}

/* Nothing arrives on fd for ms milliseconds. */
static inline void example_expect_quiet(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    ASSERT_EQ(poll(&pfd, 1, ms), 0);
}

#endif
