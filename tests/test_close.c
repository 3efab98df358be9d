/* Closing, detaching, stopping and freeing from inside every callback;
 * unbind exactly once and never inside the call that caused it; SIGPIPE. */
#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum action { ACT_CLOSE, ACT_CLOSE_AFTER, ACT_DETACH, ACT_STOP, ACT_COUNT };
enum where {
    IN_POST_INIT,
    IN_COMPLETED,
    IN_RECEIVE,
    IN_UNBIND,
    IN_DRAINED,
    IN_TIMER,
    IN_TICK,
    IN_SERVER_POST_INIT,
    IN_SERVER_RECEIVE,
    WHERE_COUNT
};

static const char *action_name[] = {"close", "close_after_writing", "detach", "stop"};
static const char *where_name[] = {"post_init", "connection_completed", "receive_data",
                                   "unbind",    "outbound_drained",     "timer",
                                   "tick",      "server post_init",     "server receive_data"};

struct scen {
    enum action act;
    enum where where;
    em_reactor *r;
    em_server *s;
    em_conn *client;
    em_sig client_sig;
    int acted;
    int detached_fd;
    int data_after_close;
    int closed_now;
    int unbinds, reason;
    int server_unbinds, server_accepts;
    int completed;
    int drained;
    em_conn *server_conn;
};

static struct scen S;

/* Performs the action on c from inside a callback. */
static void act_on(em_conn *c)
{
    if (S.acted)
        return;
    S.acted = 1;
    in_em_call++;
    switch (S.act) {
    case ACT_CLOSE: {
        int rc = em_close_connection(c, false);
        if (rc != 0 && !(S.where == IN_UNBIND && rc == -ENOTCONN))
            FAIL("em_close_connection in %s: %d", where_name[S.where], rc);
        S.closed_now = 1;
        break;
    }
    case ACT_CLOSE_AFTER: {
        int rc = em_close_connection_after_writing(c);
        if (rc != 0 && !(S.where == IN_UNBIND && rc == -ENOTCONN))
            FAIL("em_close_connection_after_writing in %s: %d", where_name[S.where], rc);
        break;
    }
    case ACT_DETACH: {
        int fd = em_detach(c);
        if (fd >= 0)
            S.detached_fd = fd;
        else if (fd != -ENOTCONN)
            FAIL("em_detach in %s: %d", where_name[S.where], fd);
        else if (S.where != IN_UNBIND && S.where != IN_POST_INIT)
            FAIL("em_detach in %s: -ENOTCONN on a live connection", where_name[S.where]);
        if (fd >= 0)
            S.closed_now = 1;
        break;
    }
    case ACT_STOP:
        em_stop(S.r);
        em_reactor_free(S.r); /* ignored while running */
        break;
    default:
        break;
    }
    in_em_call--;
}

/* ---- client handler */

static void c_post_init(em_conn *c)
{
    S.client = c;
    S.client_sig = em_signature(c);
    if (S.where == IN_DRAINED) {
        int small = 4096;
        em_set_sock_opt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    }
    if (S.where == IN_POST_INIT)
        act_on(c);
}

static void c_completed(em_conn *c)
{
    S.completed++;
    if (S.where == IN_COMPLETED) {
        act_on(c);
        return;
    }
    if (S.where == IN_DRAINED) {
        size_t n = 4u << 20;
        char *buf = calloc(1, n);
        ASSERT_EQ(em_send_data(c, buf, n), 0);
        free(buf);
        return;
    }
    ASSERT_EQ(em_send_data(c, "ping", 4), 0);
}

static void c_receive(em_conn *c, const char *d, size_t n)
{
    (void)d;
    (void)n;
    if (S.closed_now)
        S.data_after_close++;
    if (S.where == IN_RECEIVE) {
        act_on(c);
        return;
    }
    if (S.where == IN_UNBIND && !S.closed_now) {
        /* close so that unbind runs */
        in_em_call++;
        ASSERT_EQ(em_close_connection(c, false), 0);
        in_em_call--;
        S.closed_now = 1;
    }
}

static void c_drained(em_conn *c)
{
    S.drained++;
    if (S.where == IN_DRAINED)
        act_on(c);
}

static void c_unbind(em_conn *c, int reason)
{
    if (in_em_call)
        FAIL("unbind inside an em_ call (%s/%s)", where_name[S.where], action_name[S.act]);
    S.unbinds++;
    if (S.unbinds > 1)
        FAIL("unbind twice");
    S.reason = reason;
    if (em_conn_by_sig(S.r, S.client_sig))
        FAIL("em_conn_by_sig finds a connection inside its unbind");
    if (S.where == IN_UNBIND)
        act_on(c);
    em_stop(S.r); /* the scenario is over */
}

static const em_handler client_handler = {
    .post_init = c_post_init,
    .connection_completed = c_completed,
    .receive_data = c_receive,
    .unbind = c_unbind,
    .outbound_drained = c_drained,
};

/* ---- server handler: echo; can act too; pauses for the drained case */

static void resume_server(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    if (S.server_conn)
        em_resume(S.server_conn);
}

static void s_post_init(em_conn *c)
{
    S.server_accepts++;
    S.server_conn = c;
    if (S.where == IN_DRAINED) {
        em_pause(c);
        ASSERT_NE(em_add_timer(S.r, 0.2, resume_server, NULL), 0);
    }
    if (S.where == IN_SERVER_POST_INIT)
        act_on(c);
}

static void s_receive(em_conn *c, const char *d, size_t n)
{
    if (S.where == IN_SERVER_RECEIVE) {
        if (S.closed_now)
            S.data_after_close++;
        act_on(c);
        if (S.act == ACT_STOP)
            return;
        return;
    }
    if (S.where != IN_DRAINED)
        em_send_data(c, d, n);
}

static void s_unbind(em_conn *c, int reason)
{
    (void)reason;
    if (in_em_call)
        FAIL("server unbind inside an em_ call");
    S.server_unbinds++;
    if (c == S.server_conn)
        S.server_conn = NULL;
    /* when the server side is the one acting, the scenario ends here */
    if (S.where == IN_SERVER_POST_INIT || S.where == IN_SERVER_RECEIVE)
        em_stop(S.r);
}

static const em_handler server_handler = {
    .post_init = s_post_init,
    .receive_data = s_receive,
    .unbind = s_unbind,
};

static void reactor_act_cb(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    if (S.client && S.unbinds == 0)
        act_on(S.client);
}

static void start_cb(em_reactor *r, void *arg)
{
    (void)arg;
    S.s = em_start_server(r, "127.0.0.1", 0, &server_handler, NULL);
    ASSERT_NOT_NULL(S.s);
    em_conn *c = em_connect(r, "127.0.0.1", em_server_port(S.s), &client_handler, NULL);
    ASSERT_NOT_NULL(c);
    if (S.where == IN_TIMER)
        ASSERT_NE(em_add_timer(r, 0.05, reactor_act_cb, NULL), 0);
    if (S.where == IN_TICK)
        ASSERT_EQ(em_next_tick(r, reactor_act_cb, NULL), 0);
}

static void watchdog(em_reactor *r, void *arg)
{
    (void)arg;
    FAIL("scenario %s in %s did not finish", action_name[S.act], where_name[S.where]);
    em_stop(r);
}

static void run_scenario(enum action act, enum where where)
{
    int fd0 = open_fd_count();
    memset(&S, 0, sizeof S);
    S.act = act;
    S.where = where;
    S.detached_fd = -1;
    S.r = new_reactor();
    ASSERT_EQ(em_next_tick(S.r, start_cb, NULL), 0);
    em_timer_id wd = em_add_timer(S.r, 10, watchdog, NULL);
    ASSERT_NE(wd, 0);
    ASSERT_EQ(em_run(S.r), 0);
    if (!S.acted)
        FAIL("%s in %s: the callback never ran", action_name[act], where_name[where]);
    ASSERT_EQ(S.unbinds, 1);
    ASSERT_EQ(S.data_after_close, 0);
    if (where == IN_DRAINED)
        ASSERT_GE(S.drained, 1);
    if (act == ACT_DETACH && S.detached_fd >= 0) {
        ASSERT_NE(fcntl(S.detached_fd, F_GETFD), -1); /* left open */
        close(S.detached_fd);
    }
    /* em_run unbound everything and freed servers and timers */
    ASSERT_EQ(em_connection_count(S.r), 0);
    ASSERT_EQ(em_timer_count(S.r), 0);
    ASSERT_EQ(S.server_unbinds, S.server_accepts);
    em_reactor_free(S.r);
    ASSERT_NO_FD_LEAK(fd0);
}

#define SCEN(w, a)                                                            \
    TEST(a##_in_##w)                                                          \
    {                                                                         \
        run_scenario(ACT_##a, IN_##w);                                        \
    }

#define ALL_ACTIONS(w) SCEN(w, CLOSE) SCEN(w, CLOSE_AFTER) SCEN(w, DETACH) SCEN(w, STOP)

ALL_ACTIONS(POST_INIT)
ALL_ACTIONS(COMPLETED)
ALL_ACTIONS(RECEIVE)
ALL_ACTIONS(UNBIND)
ALL_ACTIONS(DRAINED)
ALL_ACTIONS(TIMER)
ALL_ACTIONS(TICK)
ALL_ACTIONS(SERVER_POST_INIT)
ALL_ACTIONS(SERVER_RECEIVE)

/* em_reactor_free right after em_run returns, with callbacks having queued
 * more work (ticks, timers, connections) during shutdown's unbinds. */
static void must_not_run(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    FAIL("a callback queued during shutdown ran");
}

static int late_unbinds;
static void late_unbind(em_conn *c, rec *x, int reason)
{
    (void)x;
    (void)reason;
    em_reactor *r = em_conn_reactor(c);
    late_unbinds++;
    /* queued while em_run shuts down: freed, never run */
    ASSERT_EQ(em_next_tick(r, must_not_run, NULL), 0);
    ASSERT_NE(em_add_timer(r, 0.5, must_not_run, NULL), 0);
}

static void stop_now(em_reactor *r, void *arg)
{
    (void)arg;
    em_stop(r);
}

TEST(free_after_run_with_work_queued_in_unbind)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1, .on_unbind = late_unbind};
    rec cli = {.tag = 2, .on_unbind = late_unbind};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli));
    ASSERT(run_until(r, &cli.completed, 5));
    ASSERT(run_until(r, &srv.pool_used, 5));
    ASSERT_NE(em_add_timer(r, 0, stop_now, NULL), 0);
    ASSERT_EQ(em_run(r), 0);
    ASSERT_EQ(late_unbinds, 2);
    ASSERT_EQ(em_connection_count(r), 0);
    ASSERT_EQ(em_timer_count(r), 0);
    run_for(r, 0.6); /* the reactor runs again: nothing left over fires */
    ASSERT_EQ(rec_live, 0);
    em_reactor_free(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------- closing other connections */

enum { OTHERS = 12 };
static em_conn *others_srv[OTHERS];
static int others_closed[OTHERS];
static int others_n;

static void close_all_others(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    (void)n;
    int me = x->tag % 100000;
    if (others_closed[me])
        FAIL("receive_data on server conn %d after its immediate close", me);
    for (int i = 0; i < others_n; i++) {
        if (i == me || others_closed[i] || !others_srv[i])
            continue;
        ASSERT_EQ(close_conn(others_srv[i], false), 0);
        others_closed[i] = 1;
    }
    (void)c;
}

static void remember_srv(em_conn *c, rec *x)
{
    int me = x->tag % 100000;
    others_srv[me] = c;
    others_n = me + 1 > others_n ? me + 1 : others_n;
}

TEST(close_other_connections_from_callback)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 0, .on_post_init = remember_srv, .on_data = close_all_others};
    rec_pool_new(&srv, OTHERS);
    rec cli[OTHERS];
    memset(cli, 0, sizeof cli);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    em_conn *c[OTHERS];
    for (int i = 0; i < OTHERS; i++) {
        cli[i].tag = 100 + i;
        c[i] = em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli[i]);
        ASSERT_NOT_NULL(c[i]);
    }
    double deadline = now_mono() + 5;
    while (srv.pool_used < OTHERS && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.02), 0);
    ASSERT_EQ(srv.pool_used, OTHERS);
    /* every client sends at once: many server reads ready in one batch */
    for (int i = 0; i < OTHERS; i++)
        ASSERT_EQ(em_send_data(c[i], "data", 4), 0);
    deadline = now_mono() + 5;
    int closed = 0;
    while (closed < OTHERS - 1 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.02), 0);
        closed = 0;
        for (int i = 0; i < OTHERS; i++)
            closed += srv.pool[i].unbinds;
    }
    ASSERT_EQ(closed, OTHERS - 1);
    /* the clients of the closed ones see EOF: unbind(0) */
    for (int i = 0; i < OTHERS; i++) {
        if (srv.pool[i].unbinds)
            continue;
        ASSERT_EQ(close_conn(others_srv[i], false), 0);
    }
    deadline = now_mono() + 5;
    while (rec_live > 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.02), 0);
    ASSERT_EQ(rec_live, 0);
    for (int i = 0; i < OTHERS; i++) {
        ASSERT_EQ(cli[i].unbinds, 1);
        ASSERT_EQ(srv.pool[i].unbinds, 1);
        ASSERT_EQ(srv.pool[i].reason, 0);
    }
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    for (int i = 0; i < OTHERS; i++)
        rec_free(&cli[i]);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Stopping a server from an accepted connection's callback. */
static em_server *stop_me;
static void stop_server_in_post_init(em_conn *c, rec *x)
{
    (void)c;
    (void)x;
    if (stop_me) {
        ASSERT_EQ(em_stop_server(stop_me), 0);
        stop_me = NULL;
    }
}

TEST(stop_server_from_accepted_post_init)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1, .echo = true, .on_post_init = stop_server_in_post_init};
    rec cli = {.tag = 2, .store = true};
    rec_pool_new(&srv, 4);
    stop_me = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(stop_me);
    em_conn *c = em_connect(r, "127.0.0.1", em_server_port(stop_me), &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(em_send_data(c, "hey", 3), 0);
    double deadline = now_mono() + 5;
    while (cli.len < 3 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.02), 0);
    ASSERT_EQ(cli.len, 3); /* the accepted connection lives on */
    ASSERT_NULL(stop_me);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Cancelling timers and closing connections from a timer, all in one turn. */
static em_timer_id cancel_ids[8];
static em_conn *timer_victim;
static void cancel_many(em_reactor *r, void *arg)
{
    (void)arg;
    for (int i = 0; i < 8; i++)
        ASSERT_EQ(em_cancel_timer(r, cancel_ids[i]), 0);
    ASSERT_EQ(close_conn(timer_victim, false), 0);
}

static void never(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    FAIL("cancelled timer fired");
}

TEST(free_timers_and_close_from_timer)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec cli = {.tag = 2};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    timer_victim = em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli);
    ASSERT(run_until(r, &cli.completed, 5));
    ASSERT_NE(em_add_timer(r, 0.01, cancel_many, NULL), 0);
    for (int i = 0; i < 8; i++) {
        cancel_ids[i] = i % 2 ? em_add_periodic_timer(r, 0.011, never, NULL)
                              : em_add_timer(r, 0.011 + 0.001 * i, never, NULL);
        ASSERT_NE(cancel_ids[i], 0);
    }
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, 0);
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    run_for(r, 0.05);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------------ SIGPIPE */

static void flood(em_conn *c, rec *x)
{
    (void)x;
    char buf[65536];
    memset(buf, 'z', sizeof buf);
    for (int i = 0; i < 64; i++)
        if (em_send_data(c, buf, sizeof buf) != 0)
            break;
}

TEST(sigpipe_never_kills_tcp)
{
    signal(SIGPIPE, SIG_DFL);
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1, .on_post_init = flood};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int fd = tcp_connect_raw("127.0.0.1", em_server_port(s));
    close(fd); /* the peer is gone before the server writes */
    ASSERT(run_until(r, &srv.pool_used, 5));
    ASSERT(run_until(r, &srv.pool[0].unbinds, 10));
    int reason = srv.pool[0].reason;
    ASSERT(reason == 0 || reason == EPIPE || reason == ECONNRESET);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(sigpipe_never_kills_unix)
{
    signal(SIGPIPE, SIG_DFL);
    int fd0 = open_fd_count();
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/s", dir);
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_unix_server(r, path, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int fd = unix_connect_raw(path);
    ASSERT(run_until(r, &srv.pool_used, 5));
    close(fd);
    /* the server writes to a unix peer that closed: EPIPE, not SIGPIPE */
    em_conn *c = srv.pool[0].conn;
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(em_send_data(c, "data", 4), 0);
    ASSERT(run_until(r, &srv.pool[0].unbinds, 10));
    int reason = srv.pool[0].reason;
    ASSERT(reason == 0 || reason == EPIPE || reason == ECONNRESET);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rm_tmpdir(dir);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A reply and a close in the same receive_data (a request/response
 * server): the connection is unbound in the turn that closed it, not the
 * next, with either close (the immediate one drops the reply). */
static void reply_and_close(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    (void)n;
    em_send_data(c, "bye", 3);
    em_close_connection(c, *(bool *)x->ctx);
}

static void unbind_in_closing_turn(bool after_writing)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1, .on_data = reply_and_close, .ctx = &after_writing};
    rec_pool_new(&srv, 1);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int fd = tcp_connect_raw("127.0.0.1", em_server_port(s));
    ASSERT(run_until(r, &srv.pool[0].post_inits, 5));
    write_all(fd, "hi", 2);
    double deadline = now_mono() + 5;
    while (!srv.pool[0].data_calls && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(srv.pool[0].data_calls, 1);
    ASSERT_EQ(srv.pool[0].unbinds, 1); /* the same turn */
    char buf[8];
    ASSERT_EQ(read(fd, buf, sizeof buf), after_writing ? 3 : 0);
    close(fd);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(send_and_close_unbinds_in_the_same_turn) { unbind_in_closing_turn(false); }
TEST(send_and_close_after_writing_unbinds_in_the_same_turn) { unbind_in_closing_turn(true); }
