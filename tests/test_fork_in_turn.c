/* em_reactor_free in a child forked from inside a callback (EventMachine's
 * fork_reactor): the parent's descriptors are let go at once, the inherited
 * turn ends without a callback, and the child's own reactor is untouched by
 * the inherited frames unwinding. */
#include "harness.h"

#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LINKS 256

typedef enum { AT_TIMER, AT_RECEIVE, AT_UNBIND } fork_point;

typedef struct report {
    int late_calls;     /* callbacks of the inherited reactor after the free */
    int kept_fds;       /* its descriptors still open right after the free */
    int attached_kept;  /* but the em_attach'ed one is left as it was */
    int own_ok;         /* the child's reactor echoed before the unwind */
    int run_once_rc;    /* what the inherited em_run(_once) returned */
    int own_ok_after;   /* and after it */
    int fds_left;       /* open descriptors once all is freed */
} report;

static struct {
    em_reactor *r;
    em_server *srv;
    em_conn *acc, *acc2;
    int cli, cli2;
    int status[2], go[2];
    int attached[2]; /* a pipe whose read end is em_attach'ed: the user's */
    fork_point at;
    bool via_run; /* em_run, not em_run_once, drives the inherited turn */
    bool in_child;
    bool freed;
    pid_t pid;
    report rep;
} t;

typedef struct fdlink {
    int fd;
    char target[128];
} fdlink;

static int list_fds(fdlink *out)
{
    DIR *d = opendir("/proc/self/fd");
    ASSERT_NOT_NULL(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < MAX_LINKS;) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
            continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, out[n].target, sizeof out[n].target - 1);
        out[n].target[len > 0 ? len : 0] = 0;
        out[n++].fd = atoi(e->d_name);
    }
    closedir(d);
    return n;
}

/* Open before the reactor was made: the runner's. */
static fdlink baseline[MAX_LINKS];
static int baseline_n;

static bool test_owned(int fd)
{
    for (int i = 0; i < baseline_n; i++)
        if (baseline[i].fd == fd)
            return true;
    return fd == t.attached[0] || fd == t.attached[1] || fd == t.cli || fd == t.cli2 || fd == t.status[1] || fd == t.go[0];
}

static void late(void)
{
    if (t.freed)
        t.rep.late_calls++;
}

static void on_tick(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    late();
}

static void on_receive(em_conn *c, const char *data, size_t len);

static void fork_here(void);

/* AT_UNBIND: in em_run's shutdown, which goes on in the child quietly */
static void on_unbind(em_conn *c, int reason)
{
    (void)reason;
    late();
    if (t.at == AT_UNBIND && c == t.acc && !t.pid && !t.in_child)
        fork_here();
}

static void on_post_init(em_conn *c)
{
    if (!t.acc)
        t.acc = c;
    else
        t.acc2 = c;
}

static const em_handler attached_h = {.unbind = on_unbind};

static const em_handler server_h = {
    .post_init = on_post_init, .receive_data = on_receive, .unbind = on_unbind};

/* ------------------------------------------------ the child's own reactor */

static void echo(em_conn *c, const char *data, size_t len) { em_send_data(c, data, len); }

static const em_handler echo_h = {.receive_data = echo};

static struct {
    em_reactor *r;
    int cli;
} own;

static bool echo_once(const char *msg)
{
    write_all(own.cli, msg, strlen(msg));
    char buf[32] = {0};
    size_t got = 0;
    double deadline = now_mono() + 3;
    while (got < strlen(msg) && now_mono() < deadline) {
        em_run_once(own.r, 0.01);
        ssize_t n = recv(own.cli, buf + got, sizeof buf - 1 - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
    }
    return got == strlen(msg) && !memcmp(buf, msg, got);
}

static void start_own_reactor(void)
{
    own.r = em_reactor_new(NULL);
    ASSERT_NOT_NULL(own.r);
    em_server *s = em_start_server(own.r, "127.0.0.1", 0, &echo_h, NULL);
    ASSERT_NOT_NULL(s);
    own.cli = tcp_connect_raw("127.0.0.1", em_server_port(s));
    t.rep.own_ok = echo_once("before");
}

/* ------------------------------------------------------------- the fork */

static void child_after_fork(void)
{
    fdlink before[MAX_LINKS], after[MAX_LINKS];
    t.in_child = true;
    alarm(10);
    close(t.status[0]);
    close(t.go[1]);
    int nb = list_fds(before);
    em_reactor_free(t.r);
    t.freed = true;
    int na = list_fds(after);
    for (int i = 0; i < nb; i++) {
        for (int j = 0; j < na; j++)
            if (before[i].fd == t.attached[0] && after[j].fd == t.attached[0])
                t.rep.attached_kept = !strcmp(after[j].target, before[i].target);
        if (test_owned(before[i].fd))
            continue;
        for (int j = 0; j < na; j++)
            if (!test_owned(after[j].fd) && !strcmp(after[j].target, before[i].target))
                t.rep.kept_fds++;
    }
    start_own_reactor();
}

static void fork_here(void)
{
    em_next_tick(t.r, on_tick, NULL); /* due in this very turn */
    t.pid = fork();
    ASSERT(t.pid >= 0);
    if (t.pid == 0)
        child_after_fork();
}

static void on_receive(em_conn *c, const char *data, size_t len)
{
    (void)data;
    (void)len;
    late();
    if (t.at == AT_RECEIVE && c == t.acc && !t.pid)
        fork_here();
}

static void on_timer(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    late();
    if (t.at != AT_RECEIVE && !t.pid && !t.in_child) {
        if (t.at == AT_TIMER)
            fork_here();
        if (t.via_run && !t.in_child)
            em_stop(r);
    }
}

/* After the unwind: the child's reactor still works, then the report. */
static void child_finish(int rc)
{
    t.rep.run_once_rc = rc;
    t.rep.own_ok_after = echo_once("after");
    close(own.cli);
    em_reactor_free(own.r);
    t.rep.fds_left = open_fd_count();
    ssize_t n = write(t.status[1], &t.rep, sizeof t.rep);
    char go;
    n += read(t.go[0], &go, 1); /* the parent checks while we live */
    _exit(n == (ssize_t)sizeof t.rep + 1 ? 0 : 3);
}

static bool readable_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

static bool rebind(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0;
    close(fd);
    return ok;
}

static void parent_checks(int fd0, int port)
{
    ASSERT(readable_within(t.status[0], 10000));
    report rep;
    ASSERT_EQ(read(t.status[0], &rep, sizeof rep), (ssize_t)sizeof rep);
    ASSERT_EQ(rep.late_calls, 0);
    ASSERT_EQ(rep.kept_fds, 0);
    ASSERT_EQ(rep.attached_kept, 1);
    ASSERT_EQ(rep.own_ok, 1);
    ASSERT_EQ(rep.run_once_rc, t.via_run ? 0 : -ECANCELED);
    ASSERT_EQ(rep.own_ok_after, 1);
    /* what the test itself holds in the child: cli, cli2, four pipe ends */
    ASSERT_EQ(rep.fds_left, fd0 + 6);
    ASSERT_EQ(waitpid(t.pid, NULL, WNOHANG), 0); /* still alive */

    /* em_run's return closed them all */
    if (!t.via_run) {
        ASSERT_EQ(em_close_connection(t.acc, false), 0);
        run_for(t.r, 0.05);
    }
    ASSERT(readable_within(t.cli, 3000));
    char buf[16];
    ASSERT_EQ(recv(t.cli, buf, sizeof buf, MSG_DONTWAIT), 0); /* EOF */
    if (!t.via_run)
        ASSERT_EQ(em_stop_server(t.srv), 0);
    ASSERT(rebind(port));
    ASSERT_EQ(waitpid(t.pid, NULL, WNOHANG), 0);

    ASSERT_EQ(write(t.go[1], "g", 1), 1);
    int st = 0;
    ASSERT_EQ(waitpid(t.pid, &st, 0), t.pid);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void run_case(fork_point at, bool via_run)
{
    bool in_receive = at == AT_RECEIVE;
    int fd0 = open_fd_count();
    baseline_n = list_fds(baseline);
    memset(&t, 0, sizeof t);
    t.at = at;
    t.via_run = via_run;
    t.r = new_reactor();
    ASSERT_EQ(pipe(t.status), 0);
    ASSERT_EQ(pipe(t.go), 0);
    ASSERT_EQ(pipe(t.attached), 0);
    ASSERT_NOT_NULL(em_attach(t.r, t.attached[0], &attached_h, NULL));
    t.srv = em_start_server(t.r, "127.0.0.1", 0, &server_h, NULL);
    ASSERT_NOT_NULL(t.srv);
    int port = em_server_port(t.srv);
    t.cli = tcp_connect_raw("127.0.0.1", port);
    t.cli2 = tcp_connect_raw("127.0.0.1", port);
    double deadline = now_mono() + 3;
    while (!t.acc2 && now_mono() < deadline)
        em_run_once(t.r, 0.01);
    ASSERT_NOT_NULL(t.acc2);
    /* more for the inherited turn to (not) run: a second timer due with
     * the first, data for both connections in one wait */
    ASSERT(em_add_timer(t.r, in_receive ? 30 : 0.05, on_timer, NULL));
    ASSERT(em_add_timer(t.r, in_receive ? 30 : 0.05, on_timer, NULL));
    if (in_receive) {
        write_all(t.cli2, "b", 1);
        write_all(t.cli, "a", 1);
    }
    usleep(100 * 1000);
    int rc = via_run ? em_run(t.r) : 0; /* in the child: 0 once unwound */
    deadline = now_mono() + 5;
    while (!via_run && !t.pid && !t.in_child && now_mono() < deadline)
        rc = em_run_once(t.r, 0.1); /* in the child: the reactor is gone */
    if (t.in_child)
        child_finish(rc);
    ASSERT(t.pid > 0);
    close(t.status[1]);
    close(t.go[0]);
    parent_checks(fd0, port);
    close(t.status[0]);
    close(t.go[1]);
    close(t.cli);
    close(t.cli2);
    em_reactor_free(t.r);
    close(t.attached[0]); /* em_attach leaves it to us */
    close(t.attached[1]);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(fork_in_timer_then_free)
{
    run_case(AT_TIMER, false);
}

TEST(fork_in_timer_under_em_run_then_free)
{
    run_case(AT_TIMER, true);
}

TEST(fork_in_receive_data_then_free)
{
    run_case(AT_RECEIVE, false);
}

TEST(fork_in_unbind_at_em_run_shutdown_then_free)
{
    run_case(AT_UNBIND, true);
}
