/* Reactor: creation, backends, run/stop, run_once, threads, strerror. */
#include "harness.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    if (d)
        closedir(d);
    return n;
}

TEST(new_and_free)
{
    int fd0 = open_fd_count();
    int th0 = thread_count();
    em_reactor *r = new_reactor();
    ASSERT_NOT_NULL(em_backend_name(r));
    ASSERT_EQ(em_connection_count(r), 0);
    ASSERT_EQ(em_timer_count(r), 0);
    ASSERT(!em_reactor_running(r));
    /* pool threads start lazily */
    ASSERT_EQ(thread_count(), th0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_EQ(thread_count(), th0);
    ASSERT_NO_FD_LEAK(fd0);
    em_reactor_free(NULL); /* no-op */
}

TEST(backend_matches_env)
{
    int fd0 = open_fd_count();
    const char *env = getenv("EM_BACKEND");
    em_reactor *r = em_reactor_new(NULL);
    ASSERT_NOT_NULL(r);
    if (env && *env)
        ASSERT_STREQ(em_backend_name(r), env);
    else
        ASSERT_STREQ(em_backend_name(r), "epoll");
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(backend_explicit)
{
    int fd0 = open_fd_count();
    const char *names[] = {"epoll", "poll"};
    for (int i = 0; i < 2; i++) {
        em_reactor_opts o = {.backend = names[i]};
        em_reactor *r = em_reactor_new(&o);
        ASSERT_NOT_NULL(r);
        ASSERT_STREQ(em_backend_name(r), names[i]);
        int bfd = em_backend_fd(r);
        if (i == 0)
            ASSERT_GE(bfd, 0);
        else
            ASSERT_EQ(bfd, -EOPNOTSUPP);
        REACTOR_FREE_CHECKED(r);
    }
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(bad_backend_names_the_known_ones)
{
    int fd0 = open_fd_count();
    em_reactor_opts o = {.backend = "no-such-backend"};
    ASSERT_NULL_ERRNO(em_reactor_new(&o), EM_EBACKEND);
    setenv("EM_BACKEND", "bogus", 1);
    ASSERT_NULL_ERRNO(em_reactor_new(NULL), EM_EBACKEND);
    /* the message names what exists */
    char want[128];
    snprintf(want, sizeof want, "No such backend (known: %s)", em_backend_names());
    ASSERT_STREQ(em_strerror(EM_EBACKEND), want);
    ASSERT(!strncmp(em_backend_names(), "epoll poll", 10));
    /* opts->backend wins over the environment */
    o.backend = "poll";
    em_reactor *r = em_reactor_new(&o);
    ASSERT_NOT_NULL(r);
    ASSERT_STREQ(em_backend_name(r), "poll");
    em_reactor_free(r);
    ASSERT_NO_FD_LEAK(fd0);
}

static void stop_cb(em_reactor *r, void *arg)
{
    int *n = arg;
    (*n)++;
    ASSERT(em_reactor_running(r));
    em_stop(r);
}

TEST(run_and_stop_from_timer)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int fired = 0;
    double t0 = now_mono(); /* before the timer: it is due 0.01 s after its adding */
    ASSERT_NE(em_add_timer(r, 0.01, stop_cb, &fired), 0);
    ASSERT_EQ(em_run(r), 0);
    ASSERT_EQ(fired, 1);
    ASSERT(!em_reactor_running(r));
    ASSERT_DBL_GE(now_mono() - t0, 0.01);
    /* the reactor can be run again */
    ASSERT_NE(em_add_timer(r, 0, stop_cb, &fired), 0);
    ASSERT_EQ(em_run(r), 0);
    ASSERT_EQ(fired, 2);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

static void never_cb(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    FAIL("a stopped reactor ran a callback queued after the stop");
}

static void stop_then_queue(em_reactor *r, void *arg)
{
    int *n = arg;
    (*n)++;
    em_stop(r);
    /* the current turn finishes; what is queued for later is dropped */
    ASSERT_NE(em_add_timer(r, 0.5, never_cb, NULL), 0);
    ASSERT_NE(em_add_periodic_timer(r, 0.5, never_cb, NULL), 0);
}

TEST(stop_frees_timers)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int n = 0;
    ASSERT_NE(em_add_timer(r, 0, stop_then_queue, &n), 0);
    ASSERT_EQ(em_run(r), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(em_timer_count(r), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

static void busy_cb(em_reactor *r, void *arg)
{
    (void)arg;
    ASSERT_EQ(em_run(r), -EBUSY);
    ASSERT_EQ(em_run_once(r, 0), -EBUSY);
    em_reactor_free(r); /* ignored while running */
    em_stop(r);
}

TEST(run_inside_run_ebusy)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    ASSERT_NE(em_add_timer(r, 0, busy_cb, NULL), 0);
    ASSERT_EQ(em_run(r), 0);
    ASSERT(!em_reactor_running(r));
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

struct stopper {
    em_reactor *r;
    volatile int started;
};

static void mark_started(em_reactor *r, void *arg)
{
    (void)r;
    struct stopper *s = arg;
    __atomic_store_n(&s->started, 1, __ATOMIC_SEQ_CST);
}

static void *stop_thread(void *arg)
{
    struct stopper *s = arg;
    while (!__atomic_load_n(&s->started, __ATOMIC_SEQ_CST))
        sched_yield();
    em_stop(s->r);
    return NULL;
}

TEST(stop_from_other_thread)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct stopper s = {.r = r};
    ASSERT_EQ(em_next_tick(r, mark_started, &s), 0);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, stop_thread, &s), 0);
    double t0 = now_mono();
    ASSERT_EQ(em_run(r), 0); /* no timer, no fd: only em_stop can end it */
    ASSERT_LE(now_mono() - t0, 5);
    pthread_join(th, NULL);
    ASSERT_EQ(s.started, 1);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* em_run's shutdown unbinds every connection with reason 0 and frees
 * servers: the port is free afterwards. */
static void stop_when_connected(em_conn *c, rec *x)
{
    (void)x;
    em_stop(em_conn_reactor(c));
}

TEST(run_shutdown_unbinds_everything)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1}, cli = {.tag = 2, .on_completed = stop_when_connected};
    rec_pool_new(&srv, 4);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);
    ASSERT_GT(port, 0);
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    ASSERT_NE(em_add_periodic_timer(r, 0.5, never_cb, NULL), 0);
    ASSERT_EQ(em_run(r), 0);
    ASSERT_EQ(cli.completed, 1);
    ASSERT_EQ(cli.unbinds, 1);
    ASSERT_EQ(cli.reason, 0);
    for (int i = 0; i < srv.pool_used; i++) {
        ASSERT_EQ(srv.pool[i].unbinds, 1);
        ASSERT_EQ(srv.pool[i].reason, 0);
    }
    ASSERT_EQ(em_connection_count(r), 0);
    ASSERT_EQ(em_timer_count(r), 0);
    /* the server was freed: its port can be bound again */
    em_server *s2 = em_start_server(r, "127.0.0.1", port, &rec_handler, &srv);
    ASSERT_NOT_NULL(s2);
    ASSERT_EQ(em_stop_server(s2), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(free_unbinds_open_connections)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1}, cli = {.tag = 2};
    rec_pool_new(&srv, 4);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli));
    ASSERT(run_until(r, &cli.completed, 5));
    ASSERT(run_until(r, &srv.pool_used, 5));
    ASSERT_EQ(em_connection_count(r), 2);
    ASSERT_NE(em_add_timer(r, 100, never_cb, NULL), 0);
    em_reactor_free(r); /* server, connections and timer still open */
    ASSERT_EQ(cli.unbinds, 1);
    ASSERT_EQ(cli.reason, 0);
    ASSERT_EQ(srv.pool[0].unbinds, 1);
    ASSERT_EQ(srv.pool[0].reason, 0);
    ASSERT_EQ(rec_live, 0);
    rec_free(&srv);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

static void count_fire(em_reactor *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
}

TEST(run_once_waits_bounded)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    double t0 = now_mono();
    ASSERT_GE(em_run_once(r, 0), 0);
    ASSERT_LE(now_mono() - t0, 0.5);
    t0 = now_mono();
    ASSERT_GE(em_run_once(r, 0.1), 0);
    double el = now_mono() - t0;
    ASSERT_LE(el, 1.0);
    /* a negative wait: until the next timer (a second one bounds the turn
     * in which the first fires) */
    int fired = 0, later = 0;
    ASSERT_NE(em_add_timer(r, 0.05, count_fire, &fired), 0);
    em_timer_id t2 = em_add_timer(r, 0.15, count_fire, &later);
    ASSERT_NE(t2, 0);
    t0 = now_mono();
    for (int i = 0; i < 100 && !fired; i++)
        ASSERT_GE(em_run_once(r, -1), 0);
    ASSERT_EQ(fired, 1);
    ASSERT_EQ(later, 0);
    ASSERT_DBL_GE(now_mono() - t0, 0.05);
    ASSERT_LE(now_mono() - t0, 2.0);
    ASSERT_EQ(em_cancel_timer(r, t2), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

static void noop_cb(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
}

TEST(now_and_backend_timeout)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    ASSERT_GE(em_run_once(r, 0), 0);
    double a = em_now(r);
    ASSERT_DBL_GE(a, 0);
    ASSERT_GE(em_run_once(r, 0.02), 0);
    double b = em_now(r);
    ASSERT_DBL_GE(b, a);
    /* em_now is the monotonic clock in seconds */
    ASSERT_LE(b - now_mono(), 0.001);
    ASSERT_LE(now_mono() - b, 1.0);
    ASSERT_DBL_LE(em_backend_timeout(r), -1);
    ASSERT_DBL_GE(em_backend_timeout(r), -1);
    em_timer_id t = em_add_timer(r, 5, noop_cb, NULL);
    ASSERT_NE(t, 0);
    double bt = em_backend_timeout(r);
    ASSERT_DBL_GE(bt, 4.0);
    ASSERT_DBL_LE(bt, 5.0);
    ASSERT_EQ(em_next_tick(r, noop_cb, NULL), 0);
    ASSERT_DBL_LE(em_backend_timeout(r), 0);
    ASSERT_DBL_GE(em_backend_timeout(r), 0);
    ASSERT_GE(em_run_once(r, 0), 0);
    ASSERT_EQ(em_cancel_timer(r, t), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Two reactors in two threads, each with its own echo exchange and timers. */
struct thr_res {
    int ok, fired, got;
    char err[128];
};

static bool pred_got(void *arg)
{
    rec *x = arg;
    return x->bytes_in >= 100000;
}

static void *reactor_thread(void *arg)
{
    struct thr_res *res = arg;
    em_reactor *r = em_reactor_new(NULL);
    if (!r)
        return NULL;
    rec srv = {.echo = true, .tag = 1};
    rec cli = {.check_pattern = true, .tag = 2};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    if (!s)
        return NULL;
    em_conn *c = em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli);
    char *buf = malloc(100000);
    for (int i = 0; i < 100000; i++)
        buf[i] = (char)pattern_byte((uint64_t)i);
    em_send_data(c, buf, 100000);
    free(buf);
    for (int i = 0; i < 10; i++)
        em_add_timer(r, 0.001 * i, count_fire, &res->fired);
    run_until_pred(r, pred_got, &cli, 10);
    run_for(r, 0.02);
    res->got = (int)cli.bytes_in;
    em_close_connection(c, false);
    em_stop_server(s);
    run_until(r, &cli.unbinds, 5);
    if (srv.pool_used)
        run_until(r, &srv.pool[0].unbinds, 5);
    res->ok = em_connection_count(r) == 0 && em_timer_count(r) == 0;
    em_reactor_free(r);
    rec_free(&srv);
    rec_free(&cli);
    return NULL;
}

TEST(two_reactors_two_threads)
{
    int fd0 = open_fd_count();
    pthread_t t[2];
    struct thr_res res[2];
    memset(res, 0, sizeof res);
    /* rec_live is shared by both threads; it is not checked here */
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, reactor_thread, &res[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        ASSERT_EQ(res[i].ok, 1);
        ASSERT_EQ(res[i].fired, 10);
        ASSERT_EQ(res[i].got, 100000);
    }
    ASSERT_NO_FD_LEAK(fd0);
}

static void work_noop(void *arg)
{
    (void)arg;
}

static void set_flag(em_reactor *r, void *arg)
{
    (void)r;
    *(int *)arg = 1;
}

TEST(free_in_forked_child)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int done = 0;
    ASSERT_EQ(em_defer(r, work_noop, set_flag, &done), 0);
    ASSERT(run_until(r, &done, 5));
    free_in_forked_child(r);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(strerror_codes)
{
    const char *a = em_strerror(EM_ERESOLVE);
    const char *b = em_strerror(-EM_ERESOLVE);
    ASSERT_NOT_NULL(a);
    ASSERT_NOT_NULL(b);
    ASSERT_STREQ(a, b);
    ASSERT(strlen(a) > 0);
    ASSERT_STREQ(em_strerror(EM_ETLS), em_strerror(-EM_ETLS));
    ASSERT_STREQ(em_strerror(EM_ETLS_TRUNCATED), em_strerror(-EM_ETLS_TRUNCATED));
    ASSERT(strcmp(em_strerror(EM_ERESOLVE), em_strerror(EM_ETLS)) != 0);
    ASSERT(strcmp(em_strerror(EM_ETLS), em_strerror(EM_ETLS_TRUNCATED)) != 0);
    ASSERT_STREQ(em_strerror(ECONNREFUSED), em_strerror(-ECONNREFUSED));
    ASSERT_STREQ(em_strerror(-ECONNREFUSED), strerror(ECONNREFUSED));
    ASSERT_STREQ(em_strerror(-ETIMEDOUT), strerror(ETIMEDOUT));
    ASSERT(strcmp(em_strerror(ECONNREFUSED), em_strerror(ETIMEDOUT)) != 0);
    ASSERT_NOT_NULL(em_strerror(0));
    ASSERT_NOT_NULL(em_strerror(99999));
    ASSERT_NOT_NULL(em_strerror(-99999));
    ASSERT_NOT_NULL(em_strerror(-2147483647 - 1));
}

/* An embedder's em_run_once loop after em_stop: the next turn does not
 * wait, later ones wait as usual (no spin), em_backend_timeout is not stuck
 * at 0, and em_stopping tells the embedder. em_run then consumes the
 * request. */
TEST(stop_with_run_once_loop_does_not_spin)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    ASSERT(!em_stopping(r));
    em_stop(r);
    ASSERT(em_stopping(r));
    double t0 = now_mono();
    ASSERT_GE(em_run_once(r, 5.0), 0); /* woken at once */
    ASSERT_DBL_LE(now_mono() - t0, 2.0);
    int turns = 0;
    t0 = now_mono();
    while (now_mono() - t0 < 0.5) {
        ASSERT_GE(em_run_once(r, 0.2), 0);
        turns++;
    }
    ASSERT_LE(turns, 10);
    ASSERT_DBL_LE(em_backend_timeout(r), -1);
    ASSERT(em_stopping(r));
    ASSERT_EQ(em_run(r), 0); /* the kept request: returns at once */
    ASSERT(!em_stopping(r));
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* em_stop from a callback inside em_run still ends the run at once, though
 * a stop request no longer counts as pending work. */
static void stop_and_count(em_reactor *r, void *arg)
{
    (*(int *)arg)++;
    em_stop(r);
}

TEST(stop_from_tick_ends_run_without_waiting)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int calls = 0;
    ASSERT_NE(em_add_timer(r, 60, noop_cb, NULL), 0); /* a long wait otherwise */
    ASSERT_EQ(em_next_tick(r, stop_and_count, &calls), 0);
    double t0 = now_mono();
    ASSERT_EQ(em_run(r), 0);
    ASSERT_DBL_LE(now_mono() - t0, 2.0);
    ASSERT_EQ(calls, 1);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A chain of deferred work (each done callback defers the next), with the
 * reactor stopped and freed while a job is in flight: the done callback that
 * em_reactor_free runs gets -ECANCELED from em_defer, and nothing touches
 * the freed pool or leaks. */
struct chain {
    int done_calls, last_rc;
};

static void chain_work(void *arg)
{
    (void)arg;
    usleep(30 * 1000);
}

static void chain_done(em_reactor *r, void *arg)
{
    struct chain *ch = arg;
    ch->done_calls++;
    ch->last_rc = em_defer(r, chain_work, chain_done, ch);
}

static void defer_chain_at_free(unsigned threads)
{
    int fd0 = open_fd_count();
    em_reactor_opts o = {.threadpool_size = threads};
    em_reactor *r = em_reactor_new(&o);
    ASSERT_NOT_NULL(r);
    struct chain ch = {0};
    int stops = 0;
    ASSERT_EQ(em_defer(r, chain_work, chain_done, &ch), 0);
    ASSERT_NE(em_add_timer(r, 0.1, stop_cb, &stops), 0);
    ASSERT_EQ(em_run(r), 0);
    ASSERT_EQ(ch.last_rc, 0); /* a job is in flight */
    int before = ch.done_calls;
    em_reactor_free(r);
    ASSERT_EQ(ch.done_calls, before + 1); /* its done ran in the free */
    ASSERT_EQ(ch.last_rc, -ECANCELED);
    usleep(100 * 1000); /* a stray pool thread would touch freed memory now */
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(defer_from_done_run_by_free_is_ecanceled) { defer_chain_at_free(20); }
TEST(defer_from_done_run_by_free_is_ecanceled_one_thread) { defer_chain_at_free(1); }
