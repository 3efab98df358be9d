/* Timers, ticks, em_schedule and em_defer. */
#include "harness.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ ordering */

struct order {
    int seq[16];
    int n;
};

struct order_item {
    struct order *o;
    int id;
};

static void order_cb(em_reactor *r, void *arg)
{
    (void)r;
    struct order_item *it = arg;
    it->o->seq[it->o->n++] = it->id;
}

TEST(timers_fire_in_deadline_order)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct order o = {.n = 0};
    double delays[] = {0.05, 0.01, 0.03, 0, 0.02, 0.04};
    int expect[] = {3, 1, 4, 2, 5, 0};
    struct order_item it[6];
    for (int i = 0; i < 6; i++) {
        it[i].o = &o;
        it[i].id = i;
        ASSERT_NE(em_add_timer(r, delays[i], order_cb, &it[i]), 0);
    }
    ASSERT_EQ(em_timer_count(r), 6);
    double deadline = now_mono() + 5;
    while (o.n < 6 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.1), 0);
    ASSERT_EQ(o.n, 6);
    for (int i = 0; i < 6; i++)
        ASSERT_EQ(o.seq[i], expect[i]);
    ASSERT_EQ(em_timer_count(r), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------- never early */

struct early {
    double added, due, fired, now_at_add, now_at_fire;
    int done;
};

static void early_cb(em_reactor *r, void *arg)
{
    struct early *e = arg;
    e->fired = now_mono();
    e->now_at_fire = em_now(r);
    e->done = 1;
}

TEST(timers_never_early)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    double delays[] = {0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2};
    enum { N = sizeof delays / sizeof delays[0] };
    struct early e[N];
    memset(e, 0, sizeof e);
    for (int i = 0; i < N; i++) {
        e[i].added = now_mono();
        ASSERT_GE(em_run_once(r, 0), 0); /* refreshes the cached clock */
        e[i].now_at_add = em_now(r);
        e[i].due = delays[i];
        ASSERT_NE(em_add_timer(r, delays[i], early_cb, &e[i]), 0);
    }
    double deadline = now_mono() + 5;
    int all = 0;
    while (!all && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.5), 0);
        all = 1;
        for (int i = 0; i < N; i++)
            all &= e[i].done;
    }
    ASSERT_EQ(all, 1);
    for (int i = 0; i < N; i++) {
        ASSERT_DBL_GE(e[i].fired - e[i].added, e[i].due);
        ASSERT_DBL_GE(e[i].now_at_fire - e[i].now_at_add, e[i].due);
        ASSERT_DBL_LE(e[i].fired - e[i].added, e[i].due + 1.0);
    }
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A timer added after a slow callback, when em_now() is 0.3 s old, must not
 * hold back one added later with an earlier deadline: B, added on the next
 * turn, fires 0.75 s after its call, not when A (1.0 s) does. The bound is
 * an ordering one: a B held behind A fires 1.0 s after its call. */
struct behind {
    em_timer_id a;
    double b_added, b_fired;
    int a_fired, b_done;
};

static void behind_a(em_reactor *r, void *arg)
{
    (void)r;
    ((struct behind *)arg)->a_fired = 1;
}

static void behind_b(em_reactor *r, void *arg)
{
    (void)r;
    struct behind *s = arg;
    s->b_fired = now_mono();
    s->b_done = 1;
}

static void behind_add_b(em_reactor *r, void *arg)
{
    struct behind *s = arg;
    s->b_added = now_mono();
    ASSERT_NE(em_add_timer(r, 0.75, behind_b, s), 0);
}

static void behind_slow(em_reactor *r, void *arg)
{
    struct behind *s = arg;
    double t = now_mono();
    while (now_mono() - t < 0.3) {
    }
    s->a = em_add_timer(r, 1.0, behind_a, s);
    ASSERT_NE(s->a, 0);
    ASSERT_NE(em_add_timer(r, 0, behind_add_b, s), 0);
}

TEST(timer_not_held_back_by_one_added_after_slow_callback)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct behind s = {0};
    ASSERT_NE(em_add_timer(r, 0.01, behind_slow, &s), 0);
    ASSERT(run_until(r, &s.b_done, 5));
    ASSERT_DBL_GE(s.b_fired - s.b_added, 0.75);
    ASSERT_DBL_LE(s.b_fired - s.b_added, 0.95);
    ASSERT_EQ(s.a_fired, 0);
    ASSERT_EQ(em_cancel_timer(r, s.a), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A timer of 0 s added in a timer callback runs on a later turn. */
static void zero_inner(em_reactor *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
}

static void zero_outer(em_reactor *r, void *arg)
{
    int *n = arg;
    ASSERT_NE(em_add_timer(r, 0, zero_inner, n), 0);
    ASSERT_EQ(*n, 0);
}

TEST(timer_added_in_timer_waits_next_turn)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int n = 0;
    ASSERT_NE(em_add_timer(r, 0, zero_outer, &n), 0);
    ASSERT_GE(em_run_once(r, 0), 0);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(em_timer_count(r), 1);
    ASSERT_GE(em_run_once(r, 0), 0);
    ASSERT_EQ(n, 1);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------------ periodic */

struct periodic {
    em_timer_id id;
    double start, interval, work;
    double fires[64];
    int n, stop_at, cancel_rc;
};

static void periodic_cb(em_reactor *r, void *arg)
{
    struct periodic *p = arg;
    double t = now_mono();
    p->fires[p->n++] = t;
    if (p->n == p->stop_at)
        p->cancel_rc = em_cancel_timer(r, p->id);
    /* simulated work inside the callback: a drifting timer would add it to
     * every period */
    while (now_mono() - t < p->work) {
    }
}

TEST(periodic_timer_does_not_drift)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct periodic p = {.interval = 0.025, .work = 0.006, .stop_at = 20, .cancel_rc = 1};
    p.start = now_mono();
    ASSERT_GE(em_run_once(r, 0), 0);
    p.id = em_add_periodic_timer(r, p.interval, periodic_cb, &p);
    ASSERT_NE(p.id, 0);
    ASSERT_EQ(em_timer_count(r), 1);
    double deadline = now_mono() + 5;
    while (p.n < 20 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.1), 0);
    ASSERT_EQ(p.n, 20);
    ASSERT_EQ(p.cancel_rc, 0);
    ASSERT_EQ(em_timer_count(r), 0);
    for (int i = 0; i < p.n; i++)
        ASSERT_DBL_GE(p.fires[i] - p.start, (i + 1) * p.interval);
    /* 20 periods of 6 ms work: a drifting timer would be >= 120 ms late */
    double late = p.fires[19] - (p.start + 20 * p.interval);
    ASSERT_DBL_LE(late, 0.06);
    /* cancelled inside its own callback: never fires again */
    run_for(r, 0.1);
    ASSERT_EQ(p.n, 20);
    ASSERT_EQ(em_cancel_timer(r, p.id), -ENOENT);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

struct selfcancel {
    em_timer_id id;
    int fired, rc;
};

static void oneshot_selfcancel(em_reactor *r, void *arg)
{
    struct selfcancel *s = arg;
    s->fired++;
    s->rc = em_cancel_timer(r, s->id);
}

TEST(cancel_inside_own_callback)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct selfcancel s = {.rc = 1};
    s.id = em_add_timer(r, 0.001, oneshot_selfcancel, &s);
    ASSERT_NE(s.id, 0);
    run_until(r, &s.fired, 5);
    ASSERT_EQ(s.fired, 1);
    /* a one-shot timer has fired once its callback runs */
    ASSERT(s.rc == 0 || s.rc == -ENOENT);
    run_for(r, 0.05);
    ASSERT_EQ(s.fired, 1);
    ASSERT_EQ(em_cancel_timer(r, s.id), -ENOENT);
    ASSERT_EQ(em_timer_count(r), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

struct cancel_other {
    em_timer_id victim;
    int rc;
};

static void cancel_other_cb(em_reactor *r, void *arg)
{
    struct cancel_other *c = arg;
    c->rc = em_cancel_timer(r, c->victim);
}

static void must_not_fire(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    FAIL("a cancelled timer fired");
}

TEST(cancel_timer_due_in_same_turn)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct cancel_other c = {.rc = 1};
    ASSERT_NE(em_add_timer(r, 0.01, cancel_other_cb, &c), 0);
    c.victim = em_add_timer(r, 0.011, must_not_fire, NULL);
    ASSERT_NE(c.victim, 0);
    /* make both due before the next turn */
    double t = now_mono();
    while (now_mono() - t < 0.03) {
    }
    ASSERT_GE(em_run_once(r, 0), 0);
    ASSERT_EQ(c.rc, 0);
    run_for(r, 0.03);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(cancel_enoent)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int n = 0;
    em_timer_id a = em_add_timer(r, 0, zero_inner, &n);
    em_timer_id b = em_add_timer(r, 10, zero_inner, &n);
    em_timer_id p = em_add_periodic_timer(r, 10, zero_inner, &n);
    ASSERT_NE(a, 0);
    ASSERT_NE(b, 0);
    ASSERT_NE(p, 0);
    ASSERT_NE(a, b);
    ASSERT_NE(b, p);
    ASSERT_EQ(em_timer_count(r), 3);
    ASSERT(run_until(r, &n, 5));
    ASSERT_EQ(em_timer_count(r), 2);
    ASSERT_EQ(em_cancel_timer(r, a), -ENOENT); /* fired */
    ASSERT_EQ(em_cancel_timer(r, b), 0);
    ASSERT_EQ(em_cancel_timer(r, b), -ENOENT); /* cancelled */
    ASSERT_EQ(em_cancel_timer(r, p), 0);
    ASSERT_EQ(em_cancel_timer(r, p), -ENOENT);
    ASSERT_EQ(em_cancel_timer(r, 0), -ENOENT);
    ASSERT_EQ(em_cancel_timer(r, 123456789), -ENOENT);
    ASSERT_EQ(em_cancel_timer(NULL, b), -EINVAL);
    ASSERT_EQ(em_timer_count(r), 0);
    /* ids are not reused */
    em_timer_id c = em_add_timer(r, 10, zero_inner, &n);
    ASSERT_NE(c, a);
    ASSERT_NE(c, b);
    ASSERT_NE(c, p);
    ASSERT_EQ(em_cancel_timer(r, b), -ENOENT);
    ASSERT_EQ(em_cancel_timer(r, c), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(max_timers_eagain)
{
    int fd0 = open_fd_count();
    em_reactor_opts o = {.max_timers = 3};
    em_reactor *r = em_reactor_new(&o);
    ASSERT_NOT_NULL(r);
    int n = 0;
    em_timer_id t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = i == 2 ? em_add_periodic_timer(r, 10, zero_inner, &n)
                      : em_add_timer(r, 10, zero_inner, &n);
        ASSERT_NE(t[i], 0);
    }
    errno = 0;
    ASSERT_EQ(em_add_timer(r, 1, zero_inner, &n), 0);
    ASSERT_EQ(errno, EAGAIN);
    errno = 0;
    ASSERT_EQ(em_add_periodic_timer(r, 1, zero_inner, &n), 0);
    ASSERT_EQ(errno, EAGAIN);
    ASSERT_EQ(em_timer_count(r), 3);
    ASSERT_EQ(em_cancel_timer(r, t[0]), 0);
    em_timer_id x = em_add_timer(r, 10, zero_inner, &n);
    ASSERT_NE(x, 0);
    /* lowering keeps existing timers, refuses new ones */
    ASSERT_EQ(em_set_max_timers(r, 1), 0);
    ASSERT_EQ(em_timer_count(r), 3);
    errno = 0;
    ASSERT_EQ(em_add_timer(r, 1, zero_inner, &n), 0);
    ASSERT_EQ(errno, EAGAIN);
    /* next_tick is not a timer */
    ASSERT_EQ(em_next_tick(r, zero_inner, &n), 0);
    ASSERT(run_until(r, &n, 2));
    ASSERT_EQ(em_set_max_timers(r, 0), 0);
    em_timer_id y = em_add_timer(r, 10, zero_inner, &n);
    ASSERT_NE(y, 0);
    ASSERT_EQ(em_timer_count(r), 4);
    ASSERT_EQ(em_cancel_timer(r, t[1]), 0);
    ASSERT_EQ(em_cancel_timer(r, t[2]), 0);
    ASSERT_EQ(em_cancel_timer(r, x), 0);
    ASSERT_EQ(em_cancel_timer(r, y), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(bad_timer_values_einval)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int n = 0;
    double bad[] = {-1, -0.001, NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 5; i++) {
        errno = 0;
        ASSERT_EQ(em_add_timer(r, bad[i], zero_inner, &n), 0);
        ASSERT_EQ(errno, EINVAL);
        errno = 0;
        ASSERT_EQ(em_add_periodic_timer(r, bad[i], zero_inner, &n), 0);
        ASSERT_EQ(errno, EINVAL);
    }
    errno = 0;
    ASSERT_EQ(em_add_periodic_timer(r, 0, zero_inner, &n), 0);
    ASSERT_EQ(errno, EINVAL);
    errno = 0;
    ASSERT_EQ(em_add_timer(r, 1, NULL, &n), 0);
    ASSERT_EQ(errno, EINVAL);
    errno = 0;
    ASSERT_EQ(em_add_timer(NULL, 1, zero_inner, &n), 0);
    ASSERT_EQ(errno, EINVAL);
    errno = 0;
    ASSERT_EQ(em_add_periodic_timer(r, 1, NULL, &n), 0);
    ASSERT_EQ(errno, EINVAL);
    ASSERT_EQ(em_timer_count(r), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------- a million timers */

struct million {
    double *lo, *hi; /* bounds of each timer's deadline */
    int fired;
    double max_lo;
    int order_errors;
};

static struct million M;

static void million_cb(em_reactor *r, void *arg)
{
    (void)r;
    size_t i = (size_t)(uintptr_t)arg;
    /* a timer whose deadline is surely earlier than one already fired */
    if (M.hi[i] < M.max_lo)
        M.order_errors++;
    if (M.lo[i] > M.max_lo)
        M.max_lo = M.lo[i];
    M.fired++;
}

static bool million_done(void *arg)
{
    (void)arg;
    return M.fired >= 500000;
}

TEST_TIMEOUT(million_timers, 120);
TEST(million_timers)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    enum { N = 1000000 };
    M.lo = malloc(N * sizeof(double));
    M.hi = malloc(N * sizeof(double));
    em_timer_id *ids = malloc(N * sizeof(em_timer_id));
    ASSERT_NOT_NULL(M.lo);
    ASSERT_NOT_NULL(M.hi);
    ASSERT_NOT_NULL(ids);
    uint64_t seed = 12345;
    ASSERT_GE(em_run_once(r, 0), 0);
    /* the deadline is now + d, "now" being the cached loop time or the
     * clock at the call: between the last turn and the call's return */
    double before = now_mono();
    for (size_t i = 0; i < N; i++) {
        double d = (double)(rng_next(&seed) % 500000) / 1e6; /* 0 .. 0.5 s */
        M.lo[i] = before + d;
        ids[i] = em_add_timer(r, d, million_cb, (void *)(uintptr_t)i);
        M.hi[i] = now_mono() + d;
        if (ids[i] == 0)
            FAIL("em_add_timer #%zu failed: errno %d", i, errno);
    }
    ASSERT_EQ(em_timer_count(r), N);
    /* cancel every odd one, the rest fire in deadline order */
    for (size_t i = 1; i < N; i += 2)
        ASSERT_EQ(em_cancel_timer(r, ids[i]), 0);
    ASSERT_EQ(em_timer_count(r), N / 2);
    ASSERT(run_until_pred(r, million_done, NULL, 90));
    ASSERT_EQ(M.fired, N / 2);
    ASSERT_EQ(M.order_errors, 0);
    ASSERT_EQ(em_timer_count(r), 0);
    for (size_t i = 0; i < N; i += 100000) {
        ASSERT_EQ(em_cancel_timer(r, ids[i]), -ENOENT);
        ASSERT_EQ(em_cancel_timer(r, ids[i + 1]), -ENOENT);
    }
    /* a million pending timers left to em_reactor_free */
    for (size_t i = 0; i < N; i++)
        if (em_add_timer(r, 100 + (double)i / N, million_cb, (void *)(uintptr_t)i) == 0)
            FAIL("em_add_timer #%zu failed", i);
    ASSERT_EQ(em_timer_count(r), N);
    em_reactor_free(r);
    free(M.lo);
    free(M.hi);
    free(ids);
    ASSERT_NO_FD_LEAK(fd0);
}

/* --------------------------------------------------------------- ticks */

struct ticks {
    int seq[32];
    int n;
    em_reactor *r;
};

struct tick_item {
    struct ticks *t;
    int id;
    int requeue; /* queue another tick with this id when run */
};

static void tick_cb(em_reactor *r, void *arg)
{
    struct tick_item *it = arg;
    it->t->seq[it->t->n++] = it->id;
    if (it->requeue) {
        ASSERT_EQ(em_next_tick(r, tick_cb, it + 1), 0);
    }
}

TEST(next_tick_fifo_and_next_turn)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct ticks t = {.n = 0};
    struct tick_item it[8];
    memset(it, 0, sizeof it);
    for (int i = 0; i < 8; i++) {
        it[i].t = &t;
        it[i].id = i;
    }
    it[1].requeue = 1; /* queues it[2] */
    it[2].requeue = 1; /* queues it[3] */
    ASSERT_EQ(em_next_tick(r, tick_cb, &it[0]), 0);
    ASSERT_EQ(em_next_tick(r, tick_cb, &it[1]), 0);
    ASSERT_EQ(em_next_tick(r, tick_cb, &it[4]), 0);
    ASSERT_EQ(em_next_tick(r, tick_cb, &it[5]), 0);
    ASSERT_EQ(t.n, 0); /* never inside the call */
    ASSERT_GE(em_run_once(r, 0), 0);
    ASSERT_EQ(t.n, 4);
    ASSERT_EQ(t.seq[0], 0);
    ASSERT_EQ(t.seq[1], 1);
    ASSERT_EQ(t.seq[2], 4);
    ASSERT_EQ(t.seq[3], 5);
    /* the turn with pending ticks does not wait */
    double t0 = now_mono();
    ASSERT_GE(em_run_once(r, 5), 0);
    ASSERT_LE(now_mono() - t0, 1.0);
    ASSERT_EQ(t.n, 5);
    ASSERT_EQ(t.seq[4], 2);
    ASSERT_GE(em_run_once(r, 0), 0); /* nothing queued after it: 5 would wait 5 s */
    ASSERT_EQ(t.n, 6);
    ASSERT_EQ(t.seq[5], 3);
    ASSERT_EQ(em_next_tick(r, NULL, NULL), -EINVAL);
    ASSERT_EQ(em_next_tick(NULL, tick_cb, NULL), -EINVAL);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ticks still queued when the reactor is freed are dropped, not run */
TEST(pending_ticks_freed)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    for (int i = 0; i < 100; i++)
        ASSERT_EQ(em_next_tick(r, must_not_fire, NULL), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------------ schedule */

enum { SCHED_THREADS = 4, SCHED_PER = 2000 };

struct sched {
    em_reactor *r;
    pthread_t main;
    int last[SCHED_THREADS];
    int count;
    int wrong_thread, out_of_order;
};

struct sched_item {
    struct sched *s;
    int thread, seq;
};

static struct sched_item sched_items[SCHED_THREADS][SCHED_PER];

static void sched_cb(em_reactor *r, void *arg)
{
    (void)r;
    struct sched_item *it = arg;
    struct sched *s = it->s;
    if (!pthread_equal(pthread_self(), s->main))
        s->wrong_thread++;
    if (it->seq != s->last[it->thread] + 1)
        s->out_of_order++;
    s->last[it->thread] = it->seq;
    s->count++;
}

struct sched_thr {
    struct sched *s;
    int idx;
    int errors;
};

static void *sched_thread(void *arg)
{
    struct sched_thr *t = arg;
    for (int i = 0; i < SCHED_PER; i++) {
        struct sched_item *it = &sched_items[t->idx][i];
        it->s = t->s;
        it->thread = t->idx;
        it->seq = i;
        if (em_schedule(t->s->r, sched_cb, it) != 0)
            t->errors++;
    }
    return NULL;
}

static bool sched_all(void *arg)
{
    struct sched *s = arg;
    return s->count == SCHED_THREADS * SCHED_PER;
}

TEST(schedule_from_other_threads)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct sched s = {.r = r, .main = pthread_self()};
    for (int i = 0; i < SCHED_THREADS; i++)
        s.last[i] = -1;
    pthread_t th[SCHED_THREADS];
    struct sched_thr st[SCHED_THREADS];
    for (int i = 0; i < SCHED_THREADS; i++) {
        st[i] = (struct sched_thr){.s = &s, .idx = i};
        ASSERT_EQ(pthread_create(&th[i], NULL, sched_thread, &st[i]), 0);
    }
    ASSERT(run_until_pred(r, sched_all, &s, 10));
    for (int i = 0; i < SCHED_THREADS; i++) {
        pthread_join(th[i], NULL);
        ASSERT_EQ(st[i].errors, 0);
    }
    ASSERT_EQ(s.count, SCHED_THREADS * SCHED_PER);
    ASSERT_EQ(s.wrong_thread, 0);
    ASSERT_EQ(s.out_of_order, 0);
    ASSERT_EQ(em_schedule(r, NULL, NULL), -EINVAL);
    ASSERT_EQ(em_schedule(NULL, sched_cb, NULL), -EINVAL);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* em_schedule wakes a reactor blocked in the poller. */
struct waker {
    em_reactor *r;
    volatile int polling;
    int ran, ticked;
    double ran_at;
};

static void woken_cb(em_reactor *r, void *arg)
{
    struct waker *w = arg;
    w->ran = 1;
    w->ran_at = now_mono();
    /* pending work: this turn's poll does not wait */
    ASSERT_EQ(em_next_tick(r, zero_inner, &w->ticked), 0);
}

static void *wake_thread(void *arg)
{
    struct waker *w = arg;
    while (!__atomic_load_n(&w->polling, __ATOMIC_SEQ_CST))
        sched_yield();
    /* the reactor is in (or about to enter) a 10 s wait */
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    em_schedule(w->r, woken_cb, w);
    return NULL;
}

TEST(schedule_wakes_poller)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct waker w = {.r = r};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, wake_thread, &w), 0);
    __atomic_store_n(&w.polling, 1, __ATOMIC_SEQ_CST);
    double t0 = now_mono();
    while (!w.ran && now_mono() - t0 < 8)
        ASSERT_GE(em_run_once(r, 10), 0);
    pthread_join(th, NULL);
    ASSERT_EQ(w.ran, 1);
    ASSERT_DBL_LE(w.ran_at - t0, 3.0);
    ASSERT_DBL_LE(now_mono() - t0, 3.0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* --------------------------------------------------------------- defer */

enum { DEFERS = 200 };

struct defer_job {
    pthread_t main;
    int work_on_main, done_off_main;
    int worked, done;
    int *active, *max_active;
};

static struct {
    int active, max_active, done;
} D;

static void defer_work(void *arg)
{
    struct defer_job *j = arg;
    if (pthread_equal(pthread_self(), j->main))
        j->work_on_main = 1;
    int a = __atomic_add_fetch(&D.active, 1, __ATOMIC_SEQ_CST);
    int m = __atomic_load_n(&D.max_active, __ATOMIC_SEQ_CST);
    while (a > m && !__atomic_compare_exchange_n(&D.max_active, &m, a, false,
                                                 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    double t = now_mono();
    while (now_mono() - t < 0.001) {
    }
    __atomic_sub_fetch(&D.active, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&j->worked, 1, __ATOMIC_SEQ_CST);
}

static void defer_done(em_reactor *r, void *arg)
{
    (void)r;
    struct defer_job *j = arg;
    if (!pthread_equal(pthread_self(), j->main))
        j->done_off_main = 1;
    if (!__atomic_load_n(&j->worked, __ATOMIC_SEQ_CST))
        FAIL("done ran before work finished");
    j->done++;
    D.done++;
}

static bool defers_done(void *arg)
{
    (void)arg;
    return D.done == DEFERS;
}

TEST(defer_runs_on_pool_done_on_reactor)
{
    int fd0 = open_fd_count();
    em_reactor_opts o = {.threadpool_size = 3};
    em_reactor *r = em_reactor_new(&o);
    ASSERT_NOT_NULL(r);
    static struct defer_job jobs[DEFERS];
    for (int i = 0; i < DEFERS; i++) {
        jobs[i] = (struct defer_job){.main = pthread_self()};
        ASSERT_EQ(em_defer(r, defer_work, defer_done, &jobs[i]), 0);
    }
    ASSERT(run_until_pred(r, defers_done, NULL, 15));
    for (int i = 0; i < DEFERS; i++) {
        ASSERT_EQ(jobs[i].work_on_main, 0);
        ASSERT_EQ(jobs[i].done_off_main, 0);
        ASSERT_EQ(jobs[i].done, 1);
    }
    ASSERT_GE(D.max_active, 1);
    ASSERT_LE(D.max_active, 3);
    /* done may be NULL */
    struct defer_job j = {.main = pthread_self()};
    ASSERT_EQ(em_defer(r, defer_work, NULL, &j), 0);
    double deadline = now_mono() + 5;
    while (!__atomic_load_n(&j.worked, __ATOMIC_SEQ_CST) && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(j.worked, 1);
    ASSERT_EQ(em_defer(r, NULL, NULL, NULL), -EINVAL);
    ASSERT_EQ(em_defer(NULL, defer_work, NULL, &j), -EINVAL);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A burst submitted while one pool thread idles runs at once, a thread a
 * job: the idle thread, once signalled, is no longer free for the next job.
 * Each job waits (bounded) until the whole burst has started, so the case
 * asserts concurrency, not timing.
 *
 * The idle thread must not take its job before the rest are submitted, or
 * it would no longer count as idle and hide the fault: it shares the
 * reactor thread's CPU under SCHED_IDLE, so it runs only once that CPU has
 * nothing else to do. Pinning and SCHED_IDLE are best effort: refused, the
 * window is only a thread's wake-up, and the case may miss the fault. */
enum { BURST = 8 };

static struct {
    pthread_mutex_t lock;
    int started, running, max_running, done;
    bool gave_up;
    cpu_set_t cpu;
} B = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void burst_work(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&B.lock);
    B.started++;
    if (++B.running > B.max_running)
        B.max_running = B.running;
    double give_up_at = now_mono() + 5.0;
    while (B.started < BURST && !B.gave_up) {
        if (now_mono() > give_up_at) {
            B.gave_up = true; /* the rest need not wait as well */
            break;
        }
        pthread_mutex_unlock(&B.lock);
        struct timespec ms = {0, 1000 * 1000};
        nanosleep(&ms, NULL);
        pthread_mutex_lock(&B.lock);
    }
    B.running--;
    pthread_mutex_unlock(&B.lock);
}

static void burst_idle_last(void *arg)
{
    (void)arg;
    struct sched_param none = {0};
    sched_setaffinity(0, sizeof B.cpu, &B.cpu);
    sched_setscheduler(0, SCHED_IDLE, &none);
}

static void burst_done(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    B.done++;
}

static bool burst_all_done(void *arg) { return B.done == *(int *)arg; }

TEST(defer_burst_gets_a_thread_per_job)
{
    int fd0 = open_fd_count();
    em_reactor_opts o = {.threadpool_size = 20};
    em_reactor *r = em_reactor_new(&o);
    ASSERT_NOT_NULL(r);
    CPU_ZERO(&B.cpu);
    int cpu = sched_getcpu();
    if (cpu >= 0 && cpu < CPU_SETSIZE) {
        CPU_SET(cpu, &B.cpu);
        sched_setaffinity(0, sizeof B.cpu, &B.cpu);
    }
    /* the pool's one thread; done may run before it waits again: a pause */
    int goal = 1;
    ASSERT_EQ(em_defer(r, burst_idle_last, burst_done, NULL), 0);
    ASSERT(run_until_pred(r, burst_all_done, &goal, 5));
    struct timespec settle = {0, 50 * 1000 * 1000};
    nanosleep(&settle, NULL);
    goal += BURST;
    for (int i = 0; i < BURST; i++)
        ASSERT_EQ(em_defer(r, burst_work, burst_done, NULL), 0);
    ASSERT(run_until_pred(r, burst_all_done, &goal, 15));
    ASSERT_EQ(B.gave_up, 0);
    ASSERT_EQ(B.max_running, BURST);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}
