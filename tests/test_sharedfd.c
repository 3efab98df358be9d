/* Sockets that another descriptor also refers to: a dup() of em_conn_fd or
 * a forked child. On epoll a closed connection's registration then outlives
 * it; libem must not report it (the connection is freed), must not spin on
 * it, and must keep every other registration working. A reactor freed in a
 * forked child must leave the parent's registrations alone. */
#include "harness.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    int closed;      /* connections closed by close_sharing */
    int dup_fd;      /* kept alive by the test */
    bool fork_child; /* hold the socket in a forked child instead */
    pid_t holder;
} sharer;

/* On the first bytes, when the socket is registered: share it, close it. */
static void close_sharing(em_conn *c, const char *d, size_t n)
{
    (void)d, (void)n;
    sharer *s = em_conn_arg(c);
    if (s->closed)
        FAIL("receive_data after em_close_connection");
    if (s->fork_child) {
        s->holder = fork();
        if (s->holder == 0) { /* holds every inherited descriptor */
            alarm(10);
            pause();
            _exit(0);
        }
    } else {
        s->dup_fd = dup(em_conn_fd(c));
    }
    em_close_connection(c, false);
    s->closed++;
}

static const em_handler sharing_handler = {.receive_data = close_sharing};

static void echo_data(em_conn *c, const char *d, size_t n) { em_send_data(c, d, n); }

static const em_handler echo_handler = {.receive_data = echo_data};

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static void expect_echo(em_reactor *r, int port)
{
    int fd = tcp_connect_raw("127.0.0.1", port);
    write_all(fd, "ping", 4);
    set_nonblock(fd);
    char buf[8];
    size_t got = 0;
    double end = now_mono() + 5;
    while (got < 4 && now_mono() < end) {
        em_run_once(r, 0.01);
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n > 0)
            got += (size_t)n;
    }
    ASSERT_EQ(got, 4);
    ASSERT(memcmp(buf, "ping", 4) == 0);
    close(fd);
}

/* A socket shared with a dup or a forked child, whose connection has been
 * closed and freed, made readable: its registration outlives the
 * connection. Next to it, an echo server. */
typedef struct {
    em_reactor *r;
    sharer s;
    em_server *closer, *echo;
    int client;
} stale;

static void make_stale_registration(stale *f, em_reactor *r, bool fork_child)
{
    f->r = r;
    f->s = (sharer){.dup_fd = -1, .fork_child = fork_child};
    f->closer = em_start_server(r, "127.0.0.1", 0, &sharing_handler, &f->s);
    f->echo = em_start_server(r, "127.0.0.1", 0, &echo_handler, NULL);
    ASSERT_NOT_NULL(f->closer);
    ASSERT_NOT_NULL(f->echo);
    f->client = tcp_connect_raw("127.0.0.1", em_server_port(f->closer));
    write_all(f->client, "x", 1);
    ASSERT(run_until(r, &f->s.closed, 5));
    run_for(r, 0.05); /* the close phase has run: the connection is freed */
    write_all(f->client, "stale", 5);
}

static void release_stale(stale *f)
{
    if (f->s.fork_child) {
        kill(f->s.holder, SIGKILL);
        ASSERT_EQ(waitpid(f->s.holder, NULL, 0), f->s.holder);
    } else {
        close(f->s.dup_fd);
    }
    close(f->client);
    em_stop_server(f->closer);
    em_stop_server(f->echo);
    run_for(f->r, 0.05);
}

/* The leftover's readiness must reach nobody, without a busy loop, and the
 * echo server must still answer, also through an embedding loop. */
static void stale_registration_case(bool fork_child)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int backend_fd = em_backend_fd(r);
    stale f;
    make_stale_registration(&f, r, fork_child);
    ASSERT_EQ(em_connection_count(r), 0);

    double cpu0 = cpu_seconds();
    run_for(r, 0.5);
    double used = cpu_seconds() - cpu0;
    ASSERT_DBL_LE(used, 0.25); /* a level-triggered leftover would spin */
    ASSERT_EQ(em_backend_fd(r), backend_fd);
    if (backend_fd >= 0) { /* an outer loop embedding it still wakes */
        int other = tcp_connect_raw("127.0.0.1", em_server_port(f.echo));
        struct pollfd p = {.fd = backend_fd, .events = POLLIN};
        ASSERT_EQ(poll(&p, 1, 2000), 1);
        close(other);
    }
    expect_echo(r, em_server_port(f.echo));

    release_stale(&f);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(closed_connection_whose_socket_was_duplicated) { stale_registration_case(false); }

TEST(closed_connection_whose_socket_a_forked_child_holds) { stale_registration_case(true); }

/* ---------------------------------------- every kind of registration */

static int signalled, scheduled, child_unbound;

static void on_signal(em_reactor *r, void *arg)
{
    (void)r, (void)arg;
    signalled++;
}

static void on_scheduled(em_reactor *r, void *arg)
{
    (void)r, (void)arg;
    scheduled++;
}

static void *schedule_later(void *arg)
{
    usleep(100 * 1000);
    em_schedule(arg, on_scheduled, NULL);
    return NULL;
}

static void child_unbind(em_conn *c, int reason)
{
    (void)reason;
    int st = -1;
    ASSERT_EQ(em_get_status(c, &st), 0);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    child_unbound++;
}

static const em_handler child_handler = {.unbind = child_unbind};

/* After the set is rebuilt, a listening socket, the signal pipe, the
 * cross-thread wake-up, a child's pidfd and a connection's pipe still
 * report. */
TEST(every_registration_survives_a_rebuild)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_signal, NULL), 0);
    /* Its end of the pipe closes at once: only its pidfd tells when it exits. */
    const char *argv[] = {"sh", "-c", "exec <&- >&-; sleep 0.4", NULL};
    double started = now_mono();
    em_conn *child = em_popen(r, argv, &child_handler, NULL);
    ASSERT_NOT_NULL(child);
    stale f;
    make_stale_registration(&f, r, false);
    run_for(r, 0.05); /* the stale event arrives: the set is rebuilt */

    ASSERT(run_until(r, &child_unbound, 5));
    ASSERT_DBL_LE(now_mono() - started, 1.5); /* not the 2 s grace timer */
    raise(SIGUSR1);
    ASSERT(run_until(r, &signalled, 5));
    expect_echo(r, em_server_port(f.echo));

    /* Nothing else is due: only the wake-up ends this wait early. */
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, schedule_later, r), 0);
    double t0 = now_mono();
    while (!scheduled && now_mono() - t0 < 4)
        em_run_once(r, 4.0);
    pthread_join(t, NULL);
    ASSERT_EQ(scheduled, 1);
    ASSERT_DBL_LE(now_mono() - t0, 2.0);

    release_stale(&f);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------ a rebuild that fails */

static bool on_epoll(em_reactor *r) { return strcmp(em_backend_name(r), "epoll") == 0; }

/* Descriptors run out: every number up to the limit is taken. */
typedef struct {
    struct rlimit saved;
    int fillers[64];
    int n;
} no_fds;

static void exhaust_fds(no_fds *x)
{
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &x->saved), 0);
    int top = dup(0);
    ASSERT_GE(top, 0);
    close(top);
    struct rlimit low = {.rlim_cur = (rlim_t)top + 1, .rlim_max = x->saved.rlim_max};
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    x->n = 0;
    int fd;
    while (x->n < 64 && (fd = dup(0)) >= 0)
        x->fillers[x->n++] = fd;
    ASSERT_EQ(dup(0), -1);
}

static void restore_fds(no_fds *x)
{
    for (int i = 0; i < x->n; i++)
        close(x->fillers[i]);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &x->saved), 0);
}

/* With no descriptor for a new set, the turn reports -EAGAIN (em_run
 * pauses on it) instead of returning 0 at once forever; once descriptors
 * are back the set is rebuilt and the reactor serves again. */
TEST(rebuild_without_descriptors_is_eagain_then_recovers)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    stale f;
    make_stale_registration(&f, r, false);
    no_fds x;
    exhaust_fds(&x);
    int rc = em_run_once(r, 0.2);
    restore_fds(&x);
    if (on_epoll(r))
        ASSERT_EQ(rc, -EAGAIN);
    else
        ASSERT_GE(rc, 0);

    double cpu0 = cpu_seconds();
    run_for(r, 0.3);
    ASSERT_DBL_LE(cpu_seconds() - cpu0, 0.15); /* rebuilt: no leftover */
    expect_echo(r, em_server_port(f.echo));
    release_stale(&f);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

static int attached_reason = -1;

static void attached_unbind(em_conn *c, int reason)
{
    (void)c;
    attached_reason = reason;
}

static const em_handler attached_handler = {.unbind = attached_unbind};

/* An attached descriptor closed behind libem's back cannot be registered
 * again: that connection is closed with EBADF, and the rest is rebuilt. */
TEST(rebuild_drops_a_descriptor_closed_behind_its_back)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    ASSERT_NOT_NULL(em_attach(r, p[0], &attached_handler, NULL));
    stale f;
    make_stale_registration(&f, r, false);
    close(p[0]); /* the contract says not to; the reactor must survive it */
    run_for(r, 0.1);
    /* io_uring: its request holds the pipe open, so libem learns of it at
     * the next report, the writer's close, when the read finds no fd */
    if (!strcmp(em_backend_name(r), "io_uring")) {
        close(p[1]);
        p[1] = -1;
        run_for(r, 0.1);
    }
    /* epoll: refused by the rebuild (EBADF, or EINVAL when the new set took
     * its number); poll: reported invalid (POLLNVAL), then EBADF */
    ASSERT(attached_reason == EBADF || attached_reason == EINVAL);
    expect_echo(r, em_server_port(f.echo));
    release_stale(&f);
    if (p[1] >= 0)
        close(p[1]);
    run_for(r, 0.05);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------ freed in a forked child */

static void count_data(em_conn *c, const char *d, size_t n)
{
    (void)d;
    *(int *)em_conn_arg(c) += (int)n;
}

static const em_handler counting_handler = {.receive_data = count_data};

TEST(reactor_freed_in_forked_child_leaves_parent_registrations)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int got = 0;
    em_server *srv = em_start_server(r, "127.0.0.1", 0, &counting_handler, &got);
    ASSERT_NOT_NULL(srv);
    int client = tcp_connect_raw("127.0.0.1", em_server_port(srv));
    write_all(client, "a", 1);
    ASSERT(run_until(r, &got, 5));

    free_in_forked_child(r);

    write_all(client, "bc", 2);
    double end = now_mono() + 3;
    while (got < 3 && now_mono() < end)
        em_run_once(r, 0.05);
    ASSERT_EQ(got, 3);
    int other = tcp_connect_raw("127.0.0.1", em_server_port(srv));
    write_all(other, "d", 1);
    end = now_mono() + 3;
    while (got < 4 && now_mono() < end)
        em_run_once(r, 0.05);
    ASSERT_EQ(got, 4);

    close(client);
    close(other);
    em_stop_server(srv);
    run_for(r, 0.1);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}
