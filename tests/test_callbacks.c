/* Closing from every callback, part two (issue 5, item 4): the callback
 * types test_close.c does not cover. From notify_readable / notify_writable
 * (em_watch), a popen child's exit (its unbind), a datagram's receive_data, a
 * signal handler, an em_defer done callback and an em_schedule callback:
 * close the connection itself, close the others, detach, stop the reactor,
 * cancel timers, free user state. Each scenario runs under em_run and checks:
 * unbind exactly once per connection, never inside an em_ call, nothing
 * called back after unbind or after an immediate close; cancelled timers
 * never fire again; detached descriptors are left open; nothing leaks. */
#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

enum src {
    SRC_WATCH_READABLE,
    SRC_WATCH_WRITABLE,
    SRC_POPEN_EXIT,
    SRC_DGRAM_RECEIVE,
    SRC_SIGNAL,
    SRC_DEFER_DONE,
    SRC_SCHEDULE,
};
enum act { ACT_CLOSE_SELF, ACT_CLOSE_OTHERS, ACT_DETACH, ACT_STOP, ACT_CANCEL_TIMERS, ACT_FREE_USER };

static const char *src_name[] = {"notify_readable", "notify_writable", "popen exit",
                                 "datagram receive_data", "signal", "defer done",
                                 "schedule"};
static const char *act_name[] = {"close self", "close others", "detach",
                                 "stop",       "cancel timers", "free user state"};

/* Connections: 0-3 the others (attached socketpair ends, a watched pipe, a
 * datagram socket), 4 the source connection when the source is one. */
enum { OTHERS = 4, SOURCE = 4, NCONN = 5 };

struct crec {
    em_conn *c;
    em_sig sig;
    int unbinds, reason;
    bool closed_now; /* closed immediately or detached by the scenario */
    int calls_after_close;
    int detached_fd;
};

#define USER_MAGIC 0x5eedf00du
struct user {
    uint32_t magic;
    int idx;
};

static struct {
    enum src src;
    enum act act;
    em_reactor *r;
    struct crec conns[NCONN];
    int in_em; /* inside an em_ call made by the scenario */
    int acted, act_in_unbind;
    em_timer_id periodic, oneshot;
    int periodic_fires, periodic_fires_at_cancel;
    int finished;
    /* owned descriptors: socketpairs (attached), pipes (watched), sender */
    int sp[2][2], wpipe[2], spipe[2], udp_tx;
    void *arg_state; /* malloc'd arg of signal / defer / schedule */
    pthread_t thread;
    bool thread_started;
    int status_rc, wstatus;
} S;

static struct crec *crec_of(em_conn *c) { return em_conn_arg(c); }

static void check_alive_call(em_conn *c)
{
    struct crec *x = crec_of(c);
    if (x->unbinds)
        FAIL("a callback after unbind (conn %d, %s in %s)", (int)(x - S.conns),
             act_name[S.act], src_name[S.src]);
    if (x->closed_now)
        x->calls_after_close++;
}

static void finish_cb(em_reactor *r, void *arg)
{
    (void)arg;
    S.finished = 1;
    em_stop(r);
}

static void periodic_cb(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    S.periodic_fires++;
}

static void oneshot_cb(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    FAIL("the 10 s victim timer fired");
}

static void watchdog(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    FAIL("%s in %s: the scenario did not finish", act_name[S.act], src_name[S.src]);
}

static void close_now(struct crec *x)
{
    em_conn *c = em_conn_by_sig(S.r, x->sig);
    if (!c)
        return; /* already unbinding */
    S.in_em++;
    ASSERT_EQ(em_close_connection(c, false), 0);
    S.in_em--;
    x->closed_now = true;
}

/* The action, from inside a callback. self: the source connection, or, for
 * the reactor-level sources, the first of the others. */
static void act(em_conn *self, bool in_unbind)
{
    if (S.acted)
        return;
    S.acted = 1;
    S.act_in_unbind = in_unbind;
    struct crec *sx = crec_of(self);
    switch (S.act) {
    case ACT_CLOSE_SELF:
        S.in_em++;
        ASSERT_EQ(em_close_connection(self, false), 0); /* 0 also in its unbind */
        S.in_em--;
        if (!in_unbind)
            sx->closed_now = true;
        break;
    case ACT_CLOSE_OTHERS:
        for (int i = 0; i < OTHERS; i++)
            if (&S.conns[i] != sx)
                close_now(&S.conns[i]);
        break;
    case ACT_DETACH: {
        S.in_em++;
        int fd = em_detach(self);
        S.in_em--;
        if (in_unbind) {
            ASSERT_EQ(fd, -ENOTCONN);
        } else {
            ASSERT_GE(fd, 0);
            sx->detached_fd = fd;
            sx->closed_now = true;
        }
        break;
    }
    case ACT_STOP:
        em_stop(S.r);
        em_reactor_free(S.r); /* ignored while running */
        return;               /* em_run returns after this turn */
    case ACT_CANCEL_TIMERS:
        ASSERT_EQ(em_cancel_timer(S.r, S.periodic), 0);
        ASSERT_EQ(em_cancel_timer(S.r, S.oneshot), 0);
        ASSERT_EQ(em_cancel_timer(S.r, S.periodic), -ENOENT);
        S.periodic_fires_at_cancel = S.periodic_fires;
        break;
    case ACT_FREE_USER: {
        struct user *u = em_conn_user(self);
        ASSERT_NOT_NULL(u);
        ASSERT_EQ(u->magic, USER_MAGIC);
        u->magic = 0;
        free(u);
        em_conn_set_user(self, NULL);
        if (S.arg_state) { /* the callback's own state too */
            free(S.arg_state);
            S.arg_state = NULL;
        }
        if (!in_unbind) {
            S.in_em++;
            ASSERT_EQ(em_close_connection(self, false), 0);
            S.in_em--;
            sx->closed_now = true;
        }
        break;
    }
    }
    /* long enough for a periodic timer or a closed watch to misbehave */
    ASSERT_NE(em_add_timer(S.r, 0.03, finish_cb, NULL), 0);
}

/* --------------------------------------------------------- the handler */

static void h_post_init(em_conn *c)
{
    struct crec *x = crec_of(c);
    x->c = c;
    x->sig = em_signature(c);
    struct user *u = malloc(sizeof *u);
    ASSERT_NOT_NULL(u);
    u->magic = USER_MAGIC;
    u->idx = (int)(x - S.conns);
    em_conn_set_user(c, u);
}

static void h_receive(em_conn *c, const char *d, size_t n)
{
    (void)d;
    (void)n;
    check_alive_call(c);
    if (S.src == SRC_DGRAM_RECEIVE && crec_of(c) == &S.conns[SOURCE])
        act(c, false);
}

static void h_unbind(em_conn *c, int reason)
{
    struct crec *x = crec_of(c);
    if (S.in_em)
        FAIL("unbind inside an em_ call (%s in %s)", act_name[S.act], src_name[S.src]);
    if (x->unbinds++)
        FAIL("unbind twice (conn %d)", (int)(x - S.conns));
    x->reason = reason;
    if (em_conn_by_sig(S.r, x->sig) != NULL)
        FAIL("em_conn_by_sig finds a connection in its unbind");
    if (S.src == SRC_POPEN_EXIT && x == &S.conns[SOURCE]) {
        S.status_rc = em_get_status(c, &S.wstatus);
        act(c, true);
    }
    struct user *u = em_conn_user(c);
    if (u) {
        ASSERT_EQ(u->magic, USER_MAGIC);
        u->magic = 0;
        free(u);
        em_conn_set_user(c, NULL);
    }
}

static void after_notify(em_conn *c)
{
    /* level-triggered: switch it off, or it comes back every turn */
    if (em_conn_by_sig(S.r, crec_of(c)->sig) && !crec_of(c)->closed_now) {
        em_set_notify_readable(c, false);
        em_set_notify_writable(c, false);
    }
}

static void h_readable(em_conn *c)
{
    check_alive_call(c);
    if (S.src == SRC_WATCH_READABLE && crec_of(c) == &S.conns[SOURCE])
        act(c, false);
    after_notify(c);
}

static void h_writable(em_conn *c)
{
    check_alive_call(c);
    if (S.src == SRC_WATCH_WRITABLE && crec_of(c) == &S.conns[SOURCE])
        act(c, false);
    after_notify(c);
}

static const em_handler handler = {
    .post_init = h_post_init,
    .receive_data = h_receive,
    .unbind = h_unbind,
    .notify_readable = h_readable,
    .notify_writable = h_writable,
};

/* ------------------------------------------- reactor-level sources */

struct arg_state {
    uint32_t magic;
};

static em_conn *first_other(void)
{
    em_conn *c = em_conn_by_sig(S.r, S.conns[0].sig);
    ASSERT_NOT_NULL(c);
    return c;
}

static void check_arg(void *arg)
{
    ASSERT(arg == S.arg_state);
    ASSERT_EQ(((struct arg_state *)arg)->magic, USER_MAGIC);
}

static void on_signal(em_reactor *r, void *arg)
{
    ASSERT(r == S.r);
    check_arg(arg);
    act(first_other(), false);
}

static void defer_work(void *arg) { ((struct arg_state *)arg)->magic = USER_MAGIC; }

static void defer_done(em_reactor *r, void *arg)
{
    ASSERT(r == S.r);
    check_arg(arg);
    act(first_other(), false);
}

static void scheduled(em_reactor *r, void *arg)
{
    ASSERT(r == S.r);
    check_arg(arg);
    act(first_other(), false);
}

static void *schedule_thread(void *arg)
{
    (void)arg;
    if (em_schedule(S.r, scheduled, S.arg_state) != 0)
        abort();
    return NULL;
}

/* ----------------------------------------------------------- scenario */

static void run_scenario(enum src src, enum act action)
{
    signal(SIGPIPE, SIG_IGN);
    int fd0 = open_fd_count();
    memset(&S, 0, sizeof S);
    S.src = src;
    S.act = action;
    for (int i = 0; i < NCONN; i++)
        S.conns[i].detached_fd = -1;
    S.udp_tx = -1;
    S.r = new_reactor();
    em_reactor *r = S.r;

    /* the others: two attached socketpair ends, a watched pipe, a UDP socket */
    for (int i = 0; i < 2; i++) {
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, S.sp[i]), 0);
        ASSERT_NOT_NULL(em_attach(r, S.sp[i][0], &handler, &S.conns[i]));
    }
    ASSERT_EQ(pipe2(S.wpipe, O_CLOEXEC), 0);
    ASSERT_NOT_NULL(em_watch(r, S.wpipe[0], &handler, &S.conns[2]));
    ASSERT_NOT_NULL(em_open_datagram_socket(r, "127.0.0.1", 0, &handler, &S.conns[3]));

    /* victims for ACT_CANCEL_TIMERS, and a watchdog */
    S.periodic = em_add_periodic_timer(r, 0.002, periodic_cb, NULL);
    S.oneshot = em_add_timer(r, 10, oneshot_cb, NULL);
    ASSERT(S.periodic && S.oneshot);
    ASSERT_NE(em_add_timer(r, 8, watchdog, NULL), 0);

    /* the source */
    struct crec *src_rec = &S.conns[SOURCE];
    switch (src) {
    case SRC_WATCH_READABLE:
    case SRC_WATCH_WRITABLE: {
        ASSERT_EQ(pipe2(S.spipe, O_CLOEXEC), 0);
        bool rd = src == SRC_WATCH_READABLE;
        em_conn *c = em_watch(r, S.spipe[rd ? 0 : 1], &handler, src_rec);
        ASSERT_NOT_NULL(c);
        if (rd) {
            write_all(S.spipe[1], "r", 1);
            ASSERT_EQ(em_set_notify_readable(c, true), 0);
        } else {
            ASSERT_EQ(em_set_notify_writable(c, true), 0);
        }
        break;
    }
    case SRC_POPEN_EXIT: {
        const char *argv[] = {"sh", "-c", "exit 0", NULL};
        ASSERT_NOT_NULL(em_popen(r, argv, &handler, src_rec));
        break;
    }
    case SRC_DGRAM_RECEIVE: {
        em_conn *c = em_open_datagram_socket(r, "127.0.0.1", 0, &handler, src_rec);
        ASSERT_NOT_NULL(c);
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        ASSERT_EQ(em_get_sockname(c, &ss, &len), 0);
        S.udp_tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(S.udp_tx, 0);
        for (int i = 0; i < 3; i++) /* more than one: none after a close */
            ASSERT_EQ(sendto(S.udp_tx, "dgram", 5, 0, (struct sockaddr *)&ss, len), 5);
        break;
    }
    case SRC_SIGNAL:
    case SRC_DEFER_DONE:
    case SRC_SCHEDULE: {
        struct arg_state *a = malloc(sizeof *a);
        ASSERT_NOT_NULL(a);
        a->magic = src == SRC_DEFER_DONE ? 0 : USER_MAGIC; /* the work sets it */
        S.arg_state = a;
        if (src == SRC_SIGNAL) {
            ASSERT_EQ(em_add_signal_handler(r, SIGUSR1, on_signal, a), 0);
            ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
        } else if (src == SRC_DEFER_DONE) {
            ASSERT_EQ(em_defer(r, defer_work, defer_done, a), 0);
        } else {
            ASSERT_EQ(pthread_create(&S.thread, NULL, schedule_thread, NULL), 0);
            S.thread_started = true;
        }
        break;
    }
    }

    ASSERT_EQ(em_run(r), 0);
    if (S.thread_started)
        pthread_join(S.thread, NULL);

    if (!S.acted)
        FAIL("%s in %s: the callback never ran", act_name[action], src_name[src]);
    if (action != ACT_STOP)
        ASSERT_EQ(S.finished, 1);
    int nconn = src <= SRC_DGRAM_RECEIVE ? NCONN : OTHERS;
    for (int i = 0; i < nconn; i++) {
        struct crec *x = &S.conns[i];
        if (x->unbinds != 1)
            FAIL("conn %d: %d unbinds (%s in %s)", i, x->unbinds, act_name[action],
                 src_name[src]);
        ASSERT_EQ(x->reason, 0);
        ASSERT_EQ(x->calls_after_close, 0);
        if (x->detached_fd >= 0) {
            ASSERT_NE(fcntl(x->detached_fd, F_GETFD), -1); /* left open */
            if (src == SRC_DGRAM_RECEIVE && i == SOURCE)
                close(x->detached_fd); /* libem's socket, ours now */
        }
    }
    if (action == ACT_CANCEL_TIMERS)
        ASSERT_EQ(S.periodic_fires, S.periodic_fires_at_cancel);
    if (src == SRC_POPEN_EXIT) {
        ASSERT_EQ(S.status_rc, 0);
        ASSERT(WIFEXITED(S.wstatus) && WEXITSTATUS(S.wstatus) == 0);
    }
    if (action == ACT_CLOSE_OTHERS) /* closed by us before shutdown */
        for (int i = 0; i < OTHERS; i++)
            if (&S.conns[i] != (src >= SRC_SIGNAL ? &S.conns[0] : &S.conns[SOURCE]))
                ASSERT(S.conns[i].closed_now);
    ASSERT_EQ(em_connection_count(r), 0);
    ASSERT_EQ(em_timer_count(r), 0);
    em_reactor_free(r);
    free(S.arg_state);
    /* libem never closes attached or watched descriptors */
    for (int i = 0; i < 2; i++) {
        ASSERT_NE(fcntl(S.sp[i][0], F_GETFD), -1);
        close(S.sp[i][0]);
        close(S.sp[i][1]);
    }
    ASSERT_NE(fcntl(S.wpipe[0], F_GETFD), -1);
    close(S.wpipe[0]);
    close(S.wpipe[1]);
    if (src == SRC_WATCH_READABLE || src == SRC_WATCH_WRITABLE) {
        ASSERT_NE(fcntl(S.spipe[0], F_GETFD), -1);
        ASSERT_NE(fcntl(S.spipe[1], F_GETFD), -1);
        close(S.spipe[0]);
        close(S.spipe[1]);
    }
    if (S.udp_tx >= 0)
        close(S.udp_tx);
    ASSERT_NO_FD_LEAK(fd0);
}

#define SCEN(s, a)                                                            \
    TEST(a##_from_##s) { run_scenario(SRC_##s, ACT_##a); }

#define ALL_ACTIONS(s)                                                        \
    SCEN(s, CLOSE_SELF)                                                       \
    SCEN(s, CLOSE_OTHERS)                                                     \
    SCEN(s, DETACH)                                                           \
    SCEN(s, STOP)                                                             \
    SCEN(s, CANCEL_TIMERS)                                                    \
    SCEN(s, FREE_USER)

ALL_ACTIONS(WATCH_READABLE)
ALL_ACTIONS(WATCH_WRITABLE)
ALL_ACTIONS(POPEN_EXIT)
ALL_ACTIONS(DGRAM_RECEIVE)
ALL_ACTIONS(SIGNAL)
ALL_ACTIONS(DEFER_DONE)
ALL_ACTIONS(SCHEDULE)

/* Stopping from a popen unbind while other children still run: em_run
 * returns, the running ones get SIGTERM and em_reactor_free reaps them. */
static int popen_unbinds;
static void stop_in_unbind(em_conn *c, rec *x, int reason)
{
    (void)x;
    (void)reason;
    popen_unbinds++;
    int st = -1;
    if (em_get_status(c, &st) == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
        em_stop(em_conn_reactor(c));
}

TEST(stop_from_popen_exit_with_other_children_running)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec quick = {.tag = 1, .on_unbind = stop_in_unbind};
    rec slow[3];
    memset(slow, 0, sizeof slow);
    const char *exit0[] = {"sh", "-c", "exit 0", NULL};
    const char *sleeper[] = {"sh", "-c", "exec sleep 30", NULL};
    ASSERT_NOT_NULL(em_popen(r, exit0, &rec_handler, &quick));
    for (int i = 0; i < 3; i++) {
        slow[i].tag = 10 + i;
        slow[i].on_unbind = stop_in_unbind;
        ASSERT_NOT_NULL(em_popen(r, sleeper, &rec_handler, &slow[i]));
    }
    ASSERT_NE(em_add_timer(r, 8, watchdog, NULL), 0);
    double t0 = now_mono();
    ASSERT_EQ(em_run(r), 0);
    ASSERT_EQ(quick.unbinds, 1);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(slow[i].unbinds, 1); /* unbound (reason 0) by the shutdown */
    ASSERT_EQ(popen_unbinds, 4);
    ASSERT_EQ(rec_live, 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_DBL_LE(now_mono() - t0, 6.0);
    ASSERT_NO_FD_LEAK(fd0);
}
