/* Descriptors exhausted (issue 5, item 2), beyond test_server.c's
 * server_emfile_no_spin_then_resumes: RLIMIT_NOFILE lowered and every
 * descriptor taken by dups of /dev/null while clients connect (pre-connected
 * sockets, or a forked process with its own descriptors connecting during
 * the shortage). The server's CPU time over 1 s stays near idle (getrusage),
 * nothing is accepted while nothing can be, and once descriptors are freed
 * (a few, then all) every client is served (echo, byte-exact); the calls
 * that need a descriptor fail cleanly meanwhile; /proc/self/fd counts match
 * before and after. */
#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* The descriptors that fill the table. */
struct filler {
    struct rlimit old;
    int devnull;
    int *fds;
    int n;
};

/* Lowers the soft limit to what is open now + room, then takes every free
 * descriptor. open_fd_count() cannot run until some are given back. */
static void exhaust(struct filler *f, int room)
{
    f->devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(f->devnull, 0);
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &f->old), 0);
    struct rlimit rl = f->old;
    rl.rlim_cur = (rlim_t)(open_fd_count() + room);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    f->fds = malloc(sizeof(int) * (size_t)(room + 64));
    ASSERT_NOT_NULL(f->fds);
    f->n = 0;
    for (;;) {
        int d = fcntl(f->devnull, F_DUPFD_CLOEXEC, 0);
        if (d < 0) {
            ASSERT_EQ(errno, EMFILE);
            break;
        }
        ASSERT_LT(f->n, room + 64);
        f->fds[f->n++] = d;
    }
    ASSERT_GE(f->n, room - 1);
}

/* Takes every free descriptor below the limit as it is (lowered before
 * the server started: the kernel's accept on io_uring keeps the limit in
 * force when it was armed); filler_done puts old back. */
static void exhaust_as_is(struct filler *f, struct rlimit old)
{
    f->old = old;
    f->devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(f->devnull, 0);
    f->fds = malloc(sizeof(int) * 256);
    ASSERT_NOT_NULL(f->fds);
    f->n = 0;
    for (int d; f->n < 256 && (d = fcntl(f->devnull, F_DUPFD_CLOEXEC, 0)) >= 0;)
        f->fds[f->n++] = d;
    ASSERT_EQ(fcntl(f->devnull, F_DUPFD_CLOEXEC, 0), -1);
    ASSERT_EQ(errno, EMFILE);
}

static void give_back(struct filler *f, int k)
{
    while (k-- > 0 && f->n > 0)
        close(f->fds[--f->n]);
}

static void filler_done(struct filler *f)
{
    give_back(f, f->n);
    close(f->devnull);
    free(f->fds);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &f->old), 0);
}

/* Runs turns for secs seconds; fails if the process used more than max_cpu
 * seconds of CPU or made more than max_turns turns meanwhile. */
static void assert_idle_for(em_reactor *r, double secs, double max_cpu, int max_turns)
{
    double c0 = cpu_seconds(), t0 = now_mono();
    int turns = 0;
    while (now_mono() - t0 < secs) {
        int rc = em_run_once(r, 0.25);
        if (rc < 0)
            FAIL("em_run_once: %d", rc);
        turns++;
    }
    double cpu = cpu_seconds() - c0;
    if (cpu > max_cpu || turns > max_turns)
        FAIL("out of descriptors: %.3f s CPU and %d turns in %.2f s (spinning)", cpu, turns,
             now_mono() - t0);
}

static void client_msg(int i, char *buf, size_t size, size_t *len)
{
    int n = snprintf(buf, size, "client %03d says hello, %s\n", i, i % 2 ? "odd" : "even");
    *len = (size_t)n;
}

static void set_rcv_timeout(int fd, double secs)
{
    struct timeval tv = {.tv_sec = (time_t)secs, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

struct served {
    rec *srv;
    uint64_t total;
};

static bool all_echoed(void *arg)
{
    struct served *s = arg;
    uint64_t got = 0;
    for (int i = 0; i < s->srv->pool_used; i++)
        got += s->srv->pool[i].bytes_in;
    return got >= s->total;
}

/* ---------------------------------------- clients connected beforehand */

static void preconnected(bool unix_socket)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    enum { N = 40, FIRST = 5 };
    rec srv = {.tag = 1, .echo = true};
    rec_pool_new(&srv, N);
    char dir[64] = "", path[128];
    em_server *s;
    if (unix_socket) {
        make_tmpdir(dir, sizeof dir);
        snprintf(path, sizeof path, "%s/sock", dir);
        s = em_start_unix_server(r, path, &rec_handler, &srv);
    } else {
        s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    }
    ASSERT_NOT_NULL(s);
    int cl[N];
    char msg[N][64];
    size_t len[N];
    uint64_t total = 0;
    for (int i = 0; i < N; i++) {
        cl[i] = unix_socket ? unix_connect_raw(path) : tcp_connect_raw("127.0.0.1", em_server_port(s));
        set_rcv_timeout(cl[i], 10);
        client_msg(i, msg[i], sizeof msg[i], &len[i]);
        write_all(cl[i], msg[i], len[i]);
        total += len[i];
    }
    struct filler f;
    exhaust(&f, N + 8);

    /* a second of shortage with 40 clients waiting: near idle, none accepted */
    assert_idle_for(r, 1.0, 0.2, 60);
    ASSERT_EQ(srv.pool_used, 0);
    ASSERT_EQ(em_connection_count(r), 0);

    /* a few descriptors back: exactly that many accepted, then short again */
    give_back(&f, FIRST);
    double deadline = now_mono() + 5;
    while (srv.pool_used < FIRST && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(srv.pool_used, FIRST);
    assert_idle_for(r, 0.4, 0.1, 30);
    ASSERT_EQ(srv.pool_used, FIRST);

    /* all of them back: every client is served */
    give_back(&f, f.n);
    struct served sv = {.srv = &srv, .total = total};
    ASSERT(run_until_pred(r, all_echoed, &sv, 10));
    ASSERT_EQ(srv.pool_used, N);
    char buf[64];
    for (int i = 0; i < N; i++) {
        ssize_t n = recv(cl[i], buf, len[i], MSG_WAITALL);
        if (n != (ssize_t)len[i] || memcmp(buf, msg[i], len[i]) != 0)
            FAIL("client %d: echo of %zd bytes, wanted \"%.*s\"", i, n, (int)len[i] - 1, msg[i]);
        close(cl[i]);
    }
    deadline = now_mono() + 5;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(srv.pool[i].unbinds, 1);
        ASSERT_EQ(srv.pool[i].reason, 0);
    }
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    filler_done(&f);
    rec_free(&srv);
    if (unix_socket)
        rm_tmpdir(dir);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST_TIMEOUT(exhausted_tcp_preconnected_clients_no_spin_then_all_served, 30);
TEST(exhausted_tcp_preconnected_clients_no_spin_then_all_served) { preconnected(false); }

TEST_TIMEOUT(exhausted_unix_preconnected_clients_no_spin_then_all_served, 30);
TEST(exhausted_unix_preconnected_clients_no_spin_then_all_served) { preconnected(true); }

/* ------------------- a client process connecting during the shortage */

/* The child: its own descriptors (the fillers closed), connects m clients
 * while the parent is out of descriptors, says so, then waits for every
 * echo. Exit status 0 when all came back intact. No harness calls here. */
static void client_process(int port, int m, int ready_fd, struct filler *f)
{
    for (int i = 0; i < f->n; i++)
        close(f->fds[i]);
    int *cl = calloc((size_t)m, sizeof(int));
    if (!cl)
        _exit(2);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < m; i++) {
        cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (cl[i] < 0 || connect(cl[i], (struct sockaddr *)&sa, sizeof sa) != 0)
            _exit(3);
        set_rcv_timeout(cl[i], 10);
        char msg[64];
        size_t len;
        client_msg(i, msg, sizeof msg, &len);
        if (send(cl[i], msg, len, MSG_NOSIGNAL) != (ssize_t)len)
            _exit(4);
    }
    if (write(ready_fd, "r", 1) != 1)
        _exit(5);
    for (int i = 0; i < m; i++) {
        char msg[64], buf[64];
        size_t len;
        client_msg(i, msg, sizeof msg, &len);
        ssize_t n = recv(cl[i], buf, len, MSG_WAITALL);
        if (n != (ssize_t)len || memcmp(buf, msg, len) != 0)
            _exit(10);
        close(cl[i]);
    }
    _exit(0);
}

struct child_wait {
    pid_t pid;
    int status;
    bool done;
};

static bool child_exited(void *arg)
{
    struct child_wait *w = arg;
    if (!w->done && waitpid(w->pid, &w->status, WNOHANG) == w->pid)
        w->done = true;
    return w->done;
}

TEST_TIMEOUT(exhausted_clients_from_another_process_served_after, 30);
TEST(exhausted_clients_from_another_process_served_after)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    enum { M = 60 };
    rec srv = {.tag = 1, .echo = true};
    rec_pool_new(&srv, M);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int ready[2];
    ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
    struct filler f;
    exhaust(&f, M + 8);
    fflush(stdout);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        close(ready[0]);
        client_process(em_server_port(s), M, ready[1], &f);
    }
    /* our end of the pipe's write side goes; a filler takes its number */
    close(ready[1]);
    int d = fcntl(f.devnull, F_DUPFD_CLOEXEC, 0);
    ASSERT_GE(d, 0);
    f.fds[f.n++] = d;
    char c;
    ASSERT_EQ(read(ready[0], &c, 1), 1); /* all M have connected */

    assert_idle_for(r, 1.0, 0.2, 60);
    ASSERT_EQ(srv.pool_used, 0);

    give_back(&f, f.n);
    struct child_wait w = {.pid = pid};
    ASSERT(run_until_pred(r, child_exited, &w, 15));
    if (!WIFEXITED(w.status) || WEXITSTATUS(w.status) != 0)
        FAIL("client process: status 0x%x", w.status);
    ASSERT_EQ(srv.pool_used, M);
    double deadline = now_mono() + 5;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    for (int i = 0; i < M; i++)
        ASSERT_EQ(srv.pool[i].unbinds, 1);
    close(ready[0]);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    filler_done(&f);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------- a descriptor freed in that turn */

/* The table is full when a client connects (its accept fails with EMFILE
 * and the server stops asking); then a connection of the server's ends
 * (its peer's FIN), freeing a descriptor: the waiting client is accepted
 * with it and served, never reset. */
TEST(descriptor_freed_in_the_starving_turn_serves_the_waiting_client)
{
    int fd0 = open_fd_count();
    struct rlimit old, low;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)(fd0 + 64);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1, .echo = true};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int first = tcp_connect_raw("127.0.0.1", em_server_port(s));
    double deadline = now_mono() + 5;
    while (srv.pool_used < 1 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(srv.pool_used, 1);
    int waiting = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* made while one can be */
    ASSERT_GE(waiting, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)em_server_port(s)),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct filler f;
    exhaust_as_is(&f, old);
    ASSERT_EQ(connect(waiting, (struct sockaddr *)&sin, sizeof sin), 0);
    ASSERT_GE(em_run_once(r, 0.05), 0); /* EMFILE */
    ASSERT_EQ(srv.pool_used, 1);
    ASSERT_EQ(shutdown(first, SHUT_WR), 0); /* its server side ends: a descriptor back */
    deadline = now_mono() + 5;
    while (srv.pool_used < 2 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(srv.pool_used, 2);
    write_all(waiting, "hello", 5);
    char buf[5];
    size_t got = 0;
    deadline = now_mono() + 5;
    while (got < sizeof buf && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        ssize_t n = recv(waiting, buf + got, sizeof buf - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        else
            ASSERT(n < 0 && errno == EAGAIN); /* not reset */
    }
    ASSERT_EQ(got, sizeof buf);
    ASSERT(!memcmp(buf, "hello", 5));
    close(waiting);
    close(first);
    filler_done(&f);
    deadline = now_mono() + 5;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------- calls that need a descriptor fail cleanly */

TEST(exhausted_calls_fail_cleanly_then_work_again)
{
    signal(SIGPIPE, SIG_IGN);
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1, .echo = true};
    rec_pool_new(&srv, 4);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);
    int sp[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/sock", dir);

    struct filler f;
    exhaust(&f, 8);

    /* these need a new descriptor: refused now, nothing half-made */
    errno = 0;
    ASSERT_NULL(em_reactor_new(NULL));
    ASSERT(errno == EMFILE || errno == ENFILE);
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv), EMFILE);
    ASSERT_NULL_ERRNO(em_start_unix_server(r, path, &rec_handler, &srv), EMFILE);
    ASSERT_NULL_ERRNO(em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &srv), EMFILE);
    const char *argv[] = {"sh", "-c", "exit 0", NULL};
    ASSERT_NULL_ERRNO(em_popen(r, argv, &rec_handler, &srv), EMFILE);
    ASSERT_EQ(em_connection_count(r), 0);
    /* em_connect never fails at once: unbind(EMFILE) comes later */
    rec cli = {.tag = 2};
    em_conn *c = em_connect(r, "127.0.0.1", port, &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, EMFILE);
    ASSERT_EQ(cli.completed, 0);
    rec ucli = {.tag = 3};
    ASSERT_NOT_NULL(em_connect_unix(r, path, &rec_handler, &ucli));
    ASSERT(run_until(r, &ucli.unbinds, 5));
    ASSERT_EQ(ucli.reason, EMFILE);

    /* attaching needs none: data mode works meanwhile */
    rec att = {.tag = 4, .echo = true};
    em_conn *a = em_attach(r, sp[0], &rec_handler, &att);
    ASSERT_NOT_NULL(a);
    write_all(sp[1], "ping", 4);
    set_rcv_timeout(sp[1], 5);
    double deadline = now_mono() + 5;
    while (att.bytes_in < 4 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    char buf[8];
    ASSERT_EQ(recv(sp[1], buf, 4, MSG_WAITALL), 4);
    ASSERT_EQ(memcmp(buf, "ping", 4), 0);
    ASSERT_EQ(close_conn(a, false), 0);
    ASSERT(run_until(r, &att.unbinds, 5));

    /* descriptors back: the same calls work */
    give_back(&f, f.n);
    em_reactor *r2 = new_reactor();
    em_reactor_free(r2);
    rec cli2 = {.tag = 5, .store = true};
    em_conn *c2 = em_connect(r, "127.0.0.1", port, &rec_handler, &cli2);
    ASSERT_NOT_NULL(c2);
    ASSERT_EQ(em_send_data(c2, "again", 5), 0);
    deadline = now_mono() + 5;
    while (cli2.len < 5 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(cli2.len, 5);
    ASSERT_EQ(memcmp(cli2.buf, "again", 5), 0);
    ASSERT_EQ(close_conn(c2, false), 0);
    deadline = now_mono() + 5;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(rec_live, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    filler_done(&f);
    close(sp[0]);
    close(sp[1]);
    rec_free(&srv);
    rec_free(&cli2);
    rm_tmpdir(dir);
    ASSERT_NO_FD_LEAK(fd0);
}
