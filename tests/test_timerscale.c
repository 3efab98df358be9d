/* Timers at scale and at the edges (issue 5, item 7), beyond test_timers.c:
 *  - a million timers, each firing exactly once (tracked one by one), in
 *    deadline order (those of one delay in the order they were added), never
 *    before the clock read just before its add, while
 *    a quarter of them cancel another timer and themselves as they fire;
 *  - a turn in which 100,000 due timers cancel each other;
 *  - huge timeouts (1e9 s, 1e12 s): added, counted, waited for without
 *    overflow (UBSan) or a stuck poller, cancelled;
 *  - tiny ones (1e-9 s and the smallest double): fire once, never early;
 *  - more rejected values: every negative, every NaN;
 *  - periodic timers with tiny intervals fire at most once a turn, do not
 *    starve I/O or ticks, and a 1 ms one lets the loop sleep between firings.
 */
#include "harness.h"

#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

static void never(em_reactor *r, void *arg)
{
    (void)r;
    FAIL("a cancelled or refused timer fired (arg %p)", arg);
}

/* ---------------------------------------------------- a million timers */

enum { MN = 1000000 };

enum { PENDING, FIRED, CANCELLED };

enum { MT_DELAYS = 250000 }; /* delays: 0 .. 0.25 s in steps of 1 us */

static struct {
    double *added;  /* CLOCK_MONOTONIC just before em_add_timer; [MN]: after the last */
    uint32_t *delay_us;
    em_timer_id *ids;
    unsigned char *state;
    size_t *last_of_delay; /* per delay: 1 + the last timer fired */
    size_t fired, cancelled, early, order_errors;
    double max_earliest;   /* the latest earliest-possible deadline fired */
    em_reactor *r;
} MT;

static double mt_delay(size_t i) { return MT.delay_us[i] / 1e6; }

/* A deadline is the clock at the call + the delay: the call's clock lies
 * between the reads around it, added[i] and added[i + 1]. A timer fired
 * after another whose deadline is surely later is out of order; so is one
 * fired after a later-added timer of the same delay. */
static void mt_check_order(size_t i)
{
    double earliest = MT.added[i] + mt_delay(i), latest = MT.added[i + 1] + mt_delay(i);
    if (latest < MT.max_earliest)
        MT.order_errors++;
    if (earliest > MT.max_earliest)
        MT.max_earliest = earliest;
    size_t *last = &MT.last_of_delay[MT.delay_us[i]];
    if (*last > i)
        MT.order_errors++;
    *last = i + 1;
}

static void mt_cb(em_reactor *r, void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    double t = now_mono();
    if (MT.state[i] == FIRED)
        FAIL("timer %zu fired twice", i);
    if (MT.state[i] == CANCELLED)
        FAIL("timer %zu fired after em_cancel_timer returned 0", i);
    MT.state[i] = FIRED;
    MT.fired++;
    if (t < MT.added[i] + mt_delay(i))
        MT.early++;
    mt_check_order(i);
    if (i % 4 == 0) {
        /* a one-shot timer inside its own callback has fired */
        ASSERT_EQ(em_cancel_timer(r, MT.ids[i]), -ENOENT);
        /* another one, due in this turn or later, or already gone */
        size_t j = (i * 7919 + 13) % MN;
        int rc = em_cancel_timer(r, MT.ids[j]);
        if (MT.state[j] == PENDING) {
            ASSERT_EQ(rc, 0);
            MT.state[j] = CANCELLED;
            MT.cancelled++;
        } else {
            ASSERT_EQ(rc, -ENOENT);
        }
    }
}

static bool mt_done(void *arg)
{
    (void)arg;
    return MT.fired + MT.cancelled >= MN;
}

TEST_TIMEOUT(million_timers_each_once_in_order_never_early_cancelling, 90);
TEST(million_timers_each_once_in_order_never_early_cancelling)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    MT.r = r;
    MT.added = malloc((MN + 1) * sizeof(double));
    MT.delay_us = malloc(MN * sizeof(uint32_t));
    MT.ids = malloc(MN * sizeof(em_timer_id));
    MT.state = calloc(MN, 1);
    MT.last_of_delay = calloc(MT_DELAYS, sizeof(size_t));
    ASSERT(MT.added && MT.delay_us && MT.ids && MT.state && MT.last_of_delay);
    uint64_t seed = 0x5eed;
    ASSERT_GE(em_run_once(r, 0), 0);
    for (size_t i = 0; i < MN; i++) {
        /* many equal delays too */
        MT.delay_us[i] = (uint32_t)(rng_next(&seed) % MT_DELAYS);
        MT.added[i] = now_mono();
        MT.ids[i] = em_add_timer(r, mt_delay(i), mt_cb, (void *)(uintptr_t)i);
        if (MT.ids[i] == 0)
            FAIL("em_add_timer #%zu: errno %d", i, errno);
    }
    MT.added[MN] = now_mono();
    ASSERT_EQ(em_timer_count(r), MN);
    ASSERT(run_until_pred(r, mt_done, NULL, 60));
    ASSERT_EQ(MT.fired + MT.cancelled, MN);
    ASSERT_GT(MT.cancelled, MN / 10);
    ASSERT_EQ(MT.early, 0);
    ASSERT_EQ(MT.order_errors, 0);
    ASSERT_EQ(em_timer_count(r), 0);
    for (size_t i = 0; i < MN; i += 997)
        ASSERT_EQ(em_cancel_timer(r, MT.ids[i]), -ENOENT);
    run_for(r, 0.01); /* nothing more fires */
    for (size_t i = 0; i < MN; i++)
        if (MT.state[i] == PENDING)
            FAIL("timer %zu never fired", i);
    REACTOR_FREE_CHECKED(r);
    free(MT.added);
    free(MT.delay_us);
    free(MT.ids);
    free(MT.state);
    free(MT.last_of_delay);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------- cancelling each other within one turn */

enum { SN = 100000 };

static struct {
    em_timer_id ids[SN];
    unsigned char state[SN];
    int fired;
    em_timer_id periodic[64];
    int periodic_runs[64];
} ST;

static void st_cb(em_reactor *r, void *arg)
{
    int i = (int)(intptr_t)arg;
    if (ST.state[i] != PENDING)
        FAIL("timer %d fired in state %d", i, ST.state[i]);
    ST.state[i] = FIRED;
    ST.fired++;
    if (i % 2 == 0 && i + 1 < SN) {
        /* the next one is due in this very turn: cancelled, it never runs */
        ASSERT_EQ(em_cancel_timer(r, ST.ids[i + 1]), 0);
        ST.state[i + 1] = CANCELLED;
        ASSERT_EQ(em_cancel_timer(r, ST.ids[i + 1]), -ENOENT);
    }
    if (i % 2 == 0 && i > 0)
        ASSERT_EQ(em_cancel_timer(r, ST.ids[i - 2]), -ENOENT); /* fired already */
    ASSERT_EQ(em_cancel_timer(r, ST.ids[i]), -ENOENT);
}

static void st_periodic(em_reactor *r, void *arg)
{
    int k = (int)(intptr_t)arg;
    ST.periodic_runs[k]++;
    ASSERT_EQ(em_cancel_timer(r, ST.periodic[k]), 0); /* itself: never again */
    ASSERT_EQ(em_cancel_timer(r, ST.periodic[k]), -ENOENT);
    if (k + 1 < 64 && ST.periodic[k + 1]) {
        ASSERT_EQ(em_cancel_timer(r, ST.periodic[k + 1]), 0); /* the next one */
        ST.periodic[k + 1] = 0;
    }
}

TEST(timers_cancel_each_other_and_themselves_in_one_turn)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    memset(&ST, 0, sizeof ST);
    for (int i = 0; i < SN; i++) {
        ST.ids[i] = em_add_timer(r, 0, st_cb, (void *)(intptr_t)i);
        ASSERT_NE(ST.ids[i], 0);
    }
    for (int k = 0; k < 64; k++) {
        ST.periodic[k] = em_add_periodic_timer(r, 1e-6, st_periodic, (void *)(intptr_t)k);
        ASSERT_NE(ST.periodic[k], 0);
    }
    ASSERT_EQ(em_timer_count(r), SN + 64);
    /* a 1 us periodic timer is due after a few us: wait so that all of them
     * are due in the same turn as the zero-delay ones */
    double t = now_mono();
    while (now_mono() - t < 0.001) {
    }
    ASSERT_GE(em_run_once(r, 0), 0); /* one turn fires all of them */
    ASSERT_EQ(ST.fired, SN / 2);
    for (int i = 0; i < SN; i++)
        ASSERT_EQ(ST.state[i], i % 2 ? CANCELLED : FIRED);
    for (int k = 0; k < 64; k++)
        ASSERT_EQ(ST.periodic_runs[k], k % 2 ? 0 : 1);
    ASSERT_EQ(em_timer_count(r), 0);
    run_for(r, 0.01);
    ASSERT_EQ(ST.fired, SN / 2);
    for (int k = 0; k < 64; k++)
        ASSERT_LE(ST.periodic_runs[k], 1);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

struct tiny {
    double added, delay, fired_at;
    int fired;
};

static void tiny_cb(em_reactor *r, void *arg)
{
    (void)r;
    struct tiny *t = arg;
    t->fired++;
    t->fired_at = now_mono();
}

/* ------------------------------------------------------ huge timeouts */

static void count_cb(em_reactor *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
}

static void noop_receive(em_conn *c, const char *d, size_t n)
{
    (void)c;
    (void)d;
    (void)n;
}
static const em_handler noop_handler = {.receive_data = noop_receive};

TEST(huge_timeouts_counted_waited_for_and_cancelled)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    em_timer_id a = em_add_timer(r, 1e9, never, NULL);
    em_timer_id b = em_add_periodic_timer(r, 1e9, never, NULL);
    em_timer_id c = em_add_timer(r, 1e12, never, NULL);
    em_timer_id d = em_add_periodic_timer(r, 1e12, never, NULL);
    ASSERT(a && b && c && d);
    ASSERT_EQ(em_timer_count(r), 4);
    double to = em_backend_timeout(r);
    ASSERT_DBL_GE(to, 1e9 - 10);
    ASSERT_DBL_LE(to, 1e9 + 10);
    /* the poller waits max_wait_s, not "forever" or "not at all" */
    double t0 = now_mono();
    ASSERT_GE(em_run_once(r, 0.02), 0);
    double el = now_mono() - t0;
    ASSERT_DBL_GE(el, 0.015);
    ASSERT_DBL_LE(el, 2.0);
    /* with no max_wait: the timeout comes from the huge timer; readiness
     * ends the wait (the poller's timeout was computed without overflow) */
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    em_conn *conn = em_attach(r, sv[0], &noop_handler, NULL);
    ASSERT_NOT_NULL(conn);
    write_all(sv[1], "x", 1);
    t0 = now_mono();
    ASSERT_GE(em_run_once(r, -1), 1);
    ASSERT_DBL_LE(now_mono() - t0, 2.0);
    /* and a short timer next to them fires on time (a turn runs its timers,
     * then waits: hence a bounded wait here) */
    struct tiny sh = {.added = now_mono(), .delay = 0.02};
    ASSERT_NE(em_add_timer(r, 0.02, tiny_cb, &sh), 0);
    while (!sh.fired && now_mono() - sh.added < 5)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(sh.fired, 1);
    ASSERT_DBL_GE(sh.fired_at - sh.added, 0.02);
    ASSERT_DBL_LE(sh.fired_at - sh.added, 1.0);
    ASSERT_EQ(em_timer_count(r), 4);
    ASSERT_EQ(em_cancel_timer(r, a), 0);
    ASSERT_EQ(em_cancel_timer(r, b), 0);
    ASSERT_EQ(em_cancel_timer(r, c), 0);
    ASSERT_EQ(em_cancel_timer(r, d), 0);
    ASSERT_EQ(em_cancel_timer(r, a), -ENOENT);
    ASSERT_EQ(em_cancel_timer(r, d), -ENOENT);
    ASSERT_EQ(em_timer_count(r), 0);
    ASSERT_DBL_LE(em_backend_timeout(r), 0); /* -1: none (0 if I/O pending) */
    ASSERT_EQ(em_close_connection(conn, false), 0);
    ASSERT_GE(em_run_once(r, 0), 0);
    close(sv[0]);
    close(sv[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A reactor freed with huge timers pending, after turns have run. */
TEST(huge_timeouts_many_then_free)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    em_timer_id ids[1000];
    for (int i = 0; i < 1000; i++) {
        double s = i % 2 ? 1e9 + i : 1e12 - i;
        ids[i] = i % 3 ? em_add_timer(r, s, never, NULL)
                       : em_add_periodic_timer(r, s, never, NULL);
        ASSERT_NE(ids[i], 0);
    }
    ASSERT_EQ(em_timer_count(r), 1000);
    run_for(r, 0.02);
    for (int i = 0; i < 1000; i++)
        ASSERT_EQ(em_cancel_timer(r, ids[i]), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------ tiny timeouts */

static bool tiny_all(void *arg)
{
    struct tiny *t = arg;
    for (int i = 0; i < 6; i++)
        if (!t[i].fired)
            return false;
    return true;
}

TEST(tiny_timeouts_fire_once_never_early)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    double delays[6] = {1e-9, 5e-324 /* the smallest double */, 1e-300, 1e-6, 0.0, 2e-9};
    struct tiny t[6];
    em_timer_id ids[6];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 6; i++) {
        t[i].delay = delays[i];
        t[i].added = now_mono();
        ids[i] = em_add_timer(r, delays[i], tiny_cb, &t[i]);
        ASSERT_NE(ids[i], 0);
    }
    ASSERT(run_until_pred(r, tiny_all, t, 5));
    run_for(r, 0.01);
    for (int i = 0; i < 6; i++) {
        ASSERT_EQ(t[i].fired, 1);
        ASSERT_DBL_GE(t[i].fired_at, t[i].added + t[i].delay);
        ASSERT_EQ(em_cancel_timer(r, ids[i]), -ENOENT);
    }
    ASSERT_EQ(em_timer_count(r), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------- rejected values */

TEST(every_negative_and_nan_rejected)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    double bad[16] = {-1e-9, -1e-300, -5e-324, -DBL_MAX, -1e9, -INFINITY, NAN, -NAN, INFINITY};
    int n = 9;
    /* NaNs with other payloads, quiet and signalling, either sign */
    uint64_t nan_bits[] = {0x7ff0000000000001ull, 0x7ff8000000000042ull,
                           0xfff0000000000001ull, 0xffffffffffffffffull,
                           0x7fffffffffffffffull};
    for (size_t i = 0; i < sizeof nan_bits / sizeof nan_bits[0]; i++)
        memcpy(&bad[n++], &nan_bits[i], sizeof(double));
    int hits = 0;
    for (int i = 0; i < n; i++) {
        errno = 0;
        ASSERT_EQ(em_add_timer(r, bad[i], never, &hits), 0);
        ASSERT_EQ(errno, EINVAL);
        errno = 0;
        ASSERT_EQ(em_add_periodic_timer(r, bad[i], never, &hits), 0);
        ASSERT_EQ(errno, EINVAL);
    }
    /* -0.0 is zero: a valid one-shot delay, not a valid interval */
    int zero = 0;
    ASSERT_NE(em_add_timer(r, -0.0, count_cb, &zero), 0);
    errno = 0;
    ASSERT_EQ(em_add_periodic_timer(r, -0.0, never, &hits), 0);
    ASSERT_EQ(errno, EINVAL);
    ASSERT_EQ(em_timer_count(r), 1);
    ASSERT(run_until(r, &zero, 5));
    run_for(r, 0.01);
    ASSERT_EQ(zero, 1);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ----------------------------------------- periodic, tiny intervals */

struct spin {
    int fires, turn_fires, max_per_turn, ticks, data;
    em_timer_id id;
    int stop_after;
};

static void spin_cb(em_reactor *r, void *arg)
{
    struct spin *s = arg;
    s->fires++;
    s->turn_fires++;
    if (s->turn_fires > s->max_per_turn)
        s->max_per_turn = s->turn_fires;
    if (s->stop_after && s->fires == s->stop_after)
        ASSERT_EQ(em_cancel_timer(r, s->id), 0);
}

static void spin_tick(em_reactor *r, void *arg)
{
    (void)r;
    ((struct spin *)arg)->ticks++;
}

static struct spin *spin_for_data;
static void spin_receive(em_conn *c, const char *d, size_t n)
{
    (void)c;
    (void)d;
    spin_for_data->data += (int)n;
}
static const em_handler spin_handler = {.receive_data = spin_receive};

TEST(periodic_tiny_interval_once_per_turn_io_still_served)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct spin s;
    memset(&s, 0, sizeof s);
    spin_for_data = &s;
    s.id = em_add_periodic_timer(r, 1e-9, spin_cb, &s);
    ASSERT_NE(s.id, 0);
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    em_conn *c = em_attach(r, sv[0], &spin_handler, NULL);
    ASSERT_NOT_NULL(c);
    int turns = 0;
    for (; turns < 300; turns++) {
        s.turn_fires = 0;
        if (turns == 100) {
            write_all(sv[1], "0123456789", 10);
            ASSERT_EQ(em_next_tick(r, spin_tick, &s), 0);
        }
        /* each turn returns: the timer cannot keep the turn going */
        ASSERT_GE(em_run_once(r, 0.5), 0);
    }
    ASSERT_EQ(s.max_per_turn, 1);
    ASSERT_GE(s.fires, 1);
    ASSERT_LE(s.fires, turns);
    ASSERT_EQ(s.ticks, 1);
    ASSERT_EQ(s.data, 10);
    /* cancelled inside its own callback: never again */
    s.stop_after = s.fires + 3;
    int fires_goal = s.stop_after;
    for (int i = 0; i < 50; i++)
        ASSERT_GE(em_run_once(r, 0.001), 0);
    ASSERT_EQ(s.fires, fires_goal);
    ASSERT_EQ(em_timer_count(r), 0);
    ASSERT_EQ(em_close_connection(c, false), 0);
    ASSERT_GE(em_run_once(r, 0), 0);
    close(sv[0]);
    close(sv[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

TEST(periodic_1ms_sleeps_between_firings)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct spin s;
    memset(&s, 0, sizeof s);
    s.id = em_add_periodic_timer(r, 0.001, spin_cb, &s);
    ASSERT_NE(s.id, 0);
    /* and a 7 ms one beside it */
    struct spin s7;
    memset(&s7, 0, sizeof s7);
    s7.id = em_add_periodic_timer(r, 0.007, spin_cb, &s7);
    ASSERT_NE(s7.id, 0);
    double t0 = now_mono(), c0 = cpu_seconds();
    int turns = 0;
    while (now_mono() - t0 < 0.3) {
        s.turn_fires = s7.turn_fires = 0;
        ASSERT_GE(em_run_once(r, 10), 0);
        turns++;
    }
    double el = now_mono() - t0, cpu = cpu_seconds() - c0;
    /* no bunching: at most one per interval elapsed (+1 for the edges) */
    ASSERT_LE(s.fires, (int)(el / 0.001) + 2);
    ASSERT_GE(s.fires, 20);
    ASSERT_LE(s7.fires, (int)(el / 0.007) + 2);
    ASSERT_GE(s7.fires, 5);
    ASSERT_EQ(s.max_per_turn, 1);
    /* the loop sleeps until the next firing: a turn per firing or so, not
     * thousands of zero-wait turns in the last millisecond */
    if (turns > 2 * (s.fires + s7.fires) + 10)
        FAIL("%d turns for %d + %d firings in %.3f s: the loop spins", turns, s.fires,
             s7.fires, el);
    if (cpu > 0.5 * el)
        FAIL("%.3f s of CPU in %.3f s: the loop spins", cpu, el);
    ASSERT_EQ(em_cancel_timer(r, s.id), 0);
    ASSERT_EQ(em_cancel_timer(r, s7.id), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Intervals far below what the clock can tell from its own value: the
 * periods missed since the last firing number 1e24 and more (infinitely
 * many for a denormal interval), which must neither overflow a conversion
 * (UBSan: float-cast-overflow) nor stop the timer. */
struct crawl {
    int fires;
};

static void crawl_cb(em_reactor *r, void *arg)
{
    struct crawl *c = arg;
    if (++c->fires == 3)
        em_stop(r);
}

TEST(periodic_intervals_below_clock_resolution_fire_and_stop)
{
    int fd0 = open_fd_count();
    double intervals[] = {1e-30, 1e-320, 5e-324 /* the smallest double */};
    for (size_t i = 0; i < sizeof intervals / sizeof intervals[0]; i++) {
        em_reactor *r = new_reactor();
        struct crawl c = {0};
        ASSERT_NE(em_add_periodic_timer(r, intervals[i], crawl_cb, &c), 0);
        ASSERT_EQ(em_run(r), 0);
        ASSERT_EQ(c.fires, 3);
        REACTOR_FREE_CHECKED(r);
    }
    ASSERT_NO_FD_LEAK(fd0);
}
