/* The io_uring backend where it differs from the others: a kernel that
 * refuses the ring (seccomp, the io_uring_disabled sysctl, no io_uring at
 * all), the "auto" choice, a forked child that must not touch its parent's
 * ring, and a reactor made on one thread and run on another. The suite as a
 * whole runs on io_uring as one of its backends. */
#include "harness.h"

#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Whether this build and kernel give a ring at all; the cases below check
 * what the answer implies either way. */
static bool uring_here(int *why)
{
    em_reactor *r = em_reactor_new(&(em_reactor_opts){.backend = "io_uring"});
    *why = r ? 0 : errno;
    em_reactor_free(r);
    return r != NULL;
}

static bool built_with_uring(void) { return strstr(em_backend_names(), "io_uring") != NULL; }

static void refused_case(int err)
{
    int fd0 = open_fd_count();
    refuse_syscall(__NR_io_uring_setup, err);
    errno = 0;
    em_reactor *r = em_reactor_new(&(em_reactor_opts){.backend = "io_uring"});
    ASSERT_NULL(r);
    ASSERT_EQ(errno, built_with_uring() ? err : EM_EBACKEND);
    if (!built_with_uring())
        return;
    r = em_reactor_new(&(em_reactor_opts){.backend = "auto"});
    ASSERT_NOT_NULL(r);
    ASSERT_STREQ(em_backend_name(r), "epoll");
    em_reactor_free(r);
    setenv("EM_BACKEND", "auto", 1);
    r = em_reactor_new(NULL);
    ASSERT_NOT_NULL(r);
    ASSERT_STREQ(em_backend_name(r), "epoll");
    em_reactor_free(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* As with kernel.io_uring_disabled=2 or a container's seccomp profile. */
TEST(refused_with_eperm_explicit_fails_auto_takes_epoll) { refused_case(EPERM); }

/* As on a kernel built without io_uring. */
TEST(refused_with_enosys_explicit_fails_auto_takes_epoll) { refused_case(ENOSYS); }

TEST(auto_takes_io_uring_where_the_kernel_gives_a_ring)
{
    int why;
    bool here = uring_here(&why);
    if (!built_with_uring()) {
        ASSERT_EQ(why, EM_EBACKEND);
        ASSERT_NULL(em_reactor_new(&(em_reactor_opts){.backend = "auto"}));
        return;
    }
    em_reactor *r = em_reactor_new(&(em_reactor_opts){.backend = "auto"});
    ASSERT_NOT_NULL(r);
    ASSERT_STREQ(em_backend_name(r), here ? "io_uring" : "epoll");
    em_reactor_free(r);
}

static void echo(em_conn *c, const char *d, size_t n) { em_send_data(c, d, n); }
static const em_handler echo_handler = {.receive_data = echo};

static void expect_echo(em_reactor *r, int port)
{
    int fd = tcp_connect_raw("127.0.0.1", port);
    ASSERT_EQ(write(fd, "ping", 4), 4);
    char buf[8];
    size_t got = 0;
    double deadline = now_mono() + 5;
    while (got < 4 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        ssize_t n = recv(fd, buf + got, sizeof buf - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
    }
    ASSERT_EQ(got, 4u);
    ASSERT(!memcmp(buf, "ping", 4));
    close(fd);
    while (em_connection_count(r) && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(em_connection_count(r), 0u);
}

static em_reactor *uring_reactor(void)
{
    int why;
    if (!uring_here(&why)) { /* nothing of the ring to check: say why */
        ASSERT(why == EM_EBACKEND || why == ENOSYS || why == EPERM || why == EOPNOTSUPP);
        return NULL;
    }
    em_reactor *r = em_reactor_new(&(em_reactor_opts){.backend = "io_uring"});
    ASSERT_NOT_NULL(r);
    return r;
}

static em_server *echo_server(em_reactor *r)
{
    em_server *s = em_start_server(r, "127.0.0.1", 0, &echo_handler, NULL);
    ASSERT_NOT_NULL(s);
    return s;
}

/* Stops s and frees r: nothing of either may be left. */
static void finish(em_reactor *r, em_server *s, int fd0)
{
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* The ring's memory is not inherited: the child's turn fails instead of
 * writing requests into the parent's ring, and freeing the reactor there
 * leaves the parent serving. */
TEST(forked_child_does_not_use_the_parents_ring)
{
    int fd0 = open_fd_count();
    em_reactor *r = uring_reactor();
    if (!r)
        return;
    em_server *s = echo_server(r);
    int port = em_server_port(s);
    expect_echo(r, port);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        int rc = em_run_once(r, 0);
        em_reactor_free(r);
        _exit(rc == -ECHILD ? 0 : 1);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
    expect_echo(r, port);
    finish(r, s, fd0);
}

typedef struct {
    em_reactor *r;
    int port;
} runner;

static void *run_elsewhere(void *arg)
{
    runner *x = arg;
    expect_echo(x->r, x->port);
    return NULL;
}

/* The ring's one submitter is the thread that entered it first; a reactor
 * made and used on one thread, then run on another, gets a ring for that
 * one and goes on serving. */
TEST(reactor_made_on_one_thread_runs_on_another)
{
    int fd0 = open_fd_count();
    em_reactor *r = uring_reactor();
    if (!r)
        return;
    em_server *s = echo_server(r);
    em_server *gone = echo_server(r);
    ASSERT_EQ(em_stop_server(gone), 0); /* enters the ring on this thread */
    ASSERT_EQ(em_run_once(r, 0), 0);
    runner x = {.r = r, .port = em_server_port(s)};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, run_elsewhere, &x), 0);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    /* and back on this thread, which makes a ring again: the listener's
     * request on the other thread's ring goes with that ring's teardown,
     * which the kernel finishes on its own time, shortly */
    ASSERT_EQ(em_stop_server(s), 0);
    double deadline = now_mono() + 2;
    while (!(s = em_start_server(r, "127.0.0.1", x.port, &echo_handler, NULL)) &&
           errno == EADDRINUSE && now_mono() < deadline)
        usleep(1000);
    ASSERT_NOT_NULL(s);
    expect_echo(r, x.port);
    finish(r, s, fd0);
}

static bool readable_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

/* A host waiting on em_backend_fd submits nothing itself: a server started
 * from the host's code, outside any turn, must still wake it. */
TEST(backend_fd_wakes_for_a_server_started_outside_a_turn)
{
    int fd0 = open_fd_count();
    em_reactor *r = uring_reactor();
    if (!r)
        return;
    int efd = em_backend_fd(r);
    ASSERT_GE(efd, 0);
    ASSERT_EQ(em_run_once(r, 0), 0);
    em_server *s = echo_server(r);
    int cli = tcp_connect_raw("127.0.0.1", em_server_port(s));
    ASSERT(readable_within(efd, 2000));
    ASSERT_EQ(em_backend_fd(r), efd);
    close(cli);
    run_for(r, 0.05);
    finish(r, s, fd0);
}

static em_conn *accepted[2];
static int n_accepted;

static void remember(em_conn *c) { accepted[n_accepted++ % 2] = c; }

/* Closes both: the other one's poll request is in the kernel. */
static void close_on_data(em_conn *c, const char *d, size_t n)
{
    (void)c;
    (void)d;
    (void)n;
    em_close_connection(accepted[0], false);
    em_close_connection(accepted[1], false);
}

/* A caller of em_run_once that waits on its own for the peer: the turn
 * that closed a connection sent its FIN, though the connection's poll
 * request, in the kernel until its cancellation is submitted, holds the
 * socket open. */
TEST(fin_leaves_with_the_turn_that_closed)
{
    int fd0 = open_fd_count();
    em_reactor *r = uring_reactor();
    if (!r)
        return;
    static const em_handler closer = {.post_init = remember, .receive_data = close_on_data};
    em_server *s = em_start_server(r, "127.0.0.1", 0, &closer, NULL);
    ASSERT_NOT_NULL(s);
    int idle = tcp_connect_raw("127.0.0.1", em_server_port(s));
    int cli = tcp_connect_raw("127.0.0.1", em_server_port(s));
    double deadline = now_mono() + 5;
    while (em_connection_count(r) < 2 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(em_connection_count(r), 2u);
    ASSERT_EQ(em_run_once(r, 0.01), 0); /* the idle one's request is in the kernel */
    ASSERT_EQ(write(cli, "x", 1), 1);
    while (em_connection_count(r) == 2 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0); /* the turn that closes both */
    ASSERT_EQ(em_connection_count(r), 0u);
    ASSERT(readable_within(idle, 2000)); /* no em_run_once meanwhile */
    char b;
    ASSERT_EQ(read(idle, &b, 1), 0);
    close(cli);
    close(idle);
    run_for(r, 0.05);
    finish(r, s, fd0);
}

/* A listener stopped is closed at once, not when the ring next submits:
 * its port can be bound again straight away. */
TEST(stopped_server_port_is_free_at_once)
{
    int fd0 = open_fd_count();
    em_reactor *r = uring_reactor();
    if (!r)
        return;
    em_server *s = echo_server(r);
    int port = em_server_port(s);
    ASSERT_EQ(em_run_once(r, 0), 0);
    ASSERT_EQ(em_stop_server(s), 0);
    em_server *again = em_start_server(r, "127.0.0.1", port, &echo_handler, NULL);
    ASSERT_NOT_NULL(again);
    expect_echo(r, port);
    finish(r, again, fd0);
}
