/*
 * Timer benchmark: one million one-shot timers added, every other one
 * cancelled, the other half fired; libem against libuv, one library per
 * process. Deadlines are pseudo-random whole milliseconds in [0, 10), the
 * same sequence for both libraries, so every timer is due by the time all
 * are added and the loop's time goes to the timer structure, not to waiting.
 *
 *   timers libem|libuv [--count N]
 *
 * Prints one key=value line: wall time of each phase and in total (ms).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <em.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef BENCH_HAVE_LIBUV
#include <uv.h>
#endif

static size_t count = 1000000;
static size_t fired;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static uint32_t rng = 12345;
static unsigned next_ms(void)
{
    rng = rng * 1103515245u + 12345u;
    return (rng >> 16) % 10;
}

static void report(const char *lib, double t0, double t1, double t2, double t3)
{
    printf("bench=timers lib=%s timers=%zu cancelled=%zu fired=%zu add_ms=%.1f cancel_ms=%.1f "
           "fire_ms=%.1f total_ms=%.1f\n",
           lib, count, count / 2, fired, t1 - t0, t2 - t1, t3 - t2, t3 - t0);
}

/* ------------------------------------------------------------ libem */

static void em_fire(em_reactor *r, void *arg)
{
    (void)arg;
    if (++fired == count - count / 2)
        em_stop(r);
}

static int run_libem(void)
{
    em_reactor *r = em_reactor_new(NULL);
    em_timer_id *ids = malloc(count * sizeof *ids);
    if (!r || !ids) {
        fprintf(stderr, "timers: out of memory\n");
        return 1;
    }
    double t0 = now_ms();
    for (size_t i = 0; i < count; i++) {
        ids[i] = em_add_timer(r, next_ms() / 1000.0, em_fire, NULL);
        if (!ids[i]) {
            fprintf(stderr, "timers: em_add_timer: %s\n", em_strerror(errno));
            return 1;
        }
    }
    double t1 = now_ms();
    for (size_t i = 1; i < count; i += 2)
        em_cancel_timer(r, ids[i]);
    double t2 = now_ms();
    em_run(r);
    double t3 = now_ms();
    report("libem", t0, t1, t2, t3);
    free(ids);
    em_reactor_free(r);
    return fired == count - count / 2 ? 0 : 1;
}

/* ------------------------------------------------------------ libuv */

#ifdef BENCH_HAVE_LIBUV
static void uv_fire(uv_timer_t *t)
{
    (void)t;
    fired++;
}

static int run_libuv(void)
{
    uv_loop_t *loop = uv_default_loop();
    uv_timer_t *timers = malloc(count * sizeof *timers);
    if (!timers) {
        fprintf(stderr, "timers: out of memory\n");
        return 1;
    }
    double t0 = now_ms();
    for (size_t i = 0; i < count; i++) {
        uv_timer_init(loop, &timers[i]);
        uv_timer_start(&timers[i], uv_fire, next_ms(), 0);
    }
    double t1 = now_ms();
    for (size_t i = 1; i < count; i += 2)
        uv_timer_stop(&timers[i]);
    double t2 = now_ms();
    uv_run(loop, UV_RUN_DEFAULT); /* returns when no timer is left */
    double t3 = now_ms();
    report("libuv", t0, t1, t2, t3);
    free(timers); /* stopped timers hold no loop resources */
    return fired == count - count / 2 ? 0 : 1;
}
#endif

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: timers libem|libuv [--count N]\n");
        return 2;
    }
    if (argc >= 4 && !strcmp(argv[2], "--count"))
        count = strtoul(argv[3], NULL, 10);
    if (!strcmp(argv[1], "libem"))
        return run_libem();
#ifdef BENCH_HAVE_LIBUV
    if (!strcmp(argv[1], "libuv"))
        return run_libuv();
#else
    if (!strcmp(argv[1], "libuv")) {
        printf("bench=timers lib=libuv skipped=1 reason=not-built-with-libuv\n");
        return 3;
    }
#endif
    fprintf(stderr, "timers: unknown library %s\n", argv[1]);
    return 2;
}
