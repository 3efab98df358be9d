/* sendfile(2) and splice(2) have no MSG_NOSIGNAL: a file or a proxy's pipe
 * written to a socket that the peer reset must not kill the process with
 * SIGPIPE (at its default disposition here, as in a program that never
 * touched it), and must leave no SIGPIPE blocked or pending behind. */
#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char file_path[64];

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void make_file(size_t size)
{
    snprintf(file_path, sizeof file_path, "/tmp/libem-sigpipe-%d", (int)getpid());
    int fd = open(file_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, (off_t)size), 0);
    close(fd);
}

static void turns(em_reactor *r, int n)
{
    for (int i = 0; i < n; i++)
        ASSERT_GE(em_run_once(r, 0.01), 0);
}

/* Reads a byte (so the sender is mid-file), half-closes, then closes with
 * bytes unread: a reset, after which the socket's writes fail with EPIPE. */
static void reset_midway(em_reactor *r, int fd)
{
    char b;
    turns(r, 10);
    ASSERT_EQ(read(fd, &b, 1), 1);
    ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
    turns(r, 10);
    close(fd);
    turns(r, 50);
}

static void assert_sigpipe_untouched(void)
{
    sigset_t mask, pending;
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, NULL, &mask), 0);
    ASSERT(!sigismember(&mask, SIGPIPE));
    ASSERT_EQ(sigpending(&pending), 0);
    ASSERT(!sigismember(&pending, SIGPIPE));
}

static int unbinds, unbind_reason;
static void count_unbind(em_conn *c, int reason)
{
    (void)c;
    unbinds++;
    unbind_reason = reason;
}

static void send_file(em_conn *c) { ASSERT_EQ(em_send_file_data(c, file_path), 0); }

TEST(a_file_to_a_reset_peer_does_not_raise_sigpipe)
{
    signal(SIGPIPE, SIG_DFL);
    make_file(64u << 20);
    static const em_handler h = {.post_init = send_file, .unbind = count_unbind};
    em_reactor *r = em_reactor_new(NULL);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &h, NULL);
    ASSERT(s);
    reset_midway(r, connect_port(em_server_port(s)));
    ASSERT_EQ(unbinds, 1);
    ASSERT(unbind_reason == EPIPE || unbind_reason == ECONNRESET);
    assert_sigpipe_untouched();
    em_reactor_free(r);
    unlink(file_path);
}

/* The accepted connection proxies what its peer sends into a connection to
 * a plain listener of the test, which reads one byte and resets it while
 * the pipe holds more. */
static em_conn *target;
static int target_port;
static void proxy_post_init(em_conn *c)
{
    static const em_handler quiet = {0};
    target = em_connect(em_conn_reactor(c), "127.0.0.1", target_port, &quiet, NULL);
    ASSERT(target);
    ASSERT_EQ(em_proxy_incoming_to(c, target, 0, 0), 0);
}

TEST(a_splice_to_a_reset_peer_does_not_raise_sigpipe)
{
    signal(SIGPIPE, SIG_DFL);
    int sink = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ASSERT_EQ(bind(sink, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(listen(sink, 1), 0);
    socklen_t len = sizeof a;
    ASSERT_EQ(getsockname(sink, (struct sockaddr *)&a, &len), 0);
    target_port = ntohs(a.sin_port);
    static const em_handler h = {.post_init = proxy_post_init};
    em_reactor *r = em_reactor_new(NULL);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &h, NULL);
    ASSERT(s);
    int src = connect_port(em_server_port(s));
    ASSERT_EQ(fcntl(src, F_SETFL, O_NONBLOCK), 0);
    turns(r, 10);
    int peer = accept(sink, NULL, NULL);
    ASSERT_GE(peer, 0);
    static char chunk[65536];
    for (int i = 0; i < 200; i++) { /* fill the sink, the pipe and more */
        (void)!write(src, chunk, sizeof chunk);
        turns(r, 1);
    }
    reset_midway(r, peer);
    for (int i = 0; i < 20; i++) { /* more for the pipe to write: EPIPE */
        (void)!write(src, chunk, sizeof chunk);
        turns(r, 1);
    }
    assert_sigpipe_untouched();
    close(src);
    close(sink);
    em_reactor_free(r);
}
