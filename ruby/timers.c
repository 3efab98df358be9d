/*
 * One-shot timers. The Ruby layer keeps the block in @timers under the
 * signature returned here and cancels by replacing it with false, so the
 * native side only has to say "timer N fired" (TimerFired); periodic
 * timers are Ruby's (EM::PeriodicTimer re-arms a one-shot timer).
 */
#include "rbem.h"

static void timer_fired(em_reactor *r, void *arg)
{
    (void)r;
    rbem_event(0, RBEM_TIMER_FIRED, (uint64_t)(uintptr_t)arg);
}

/* The delay comes in milliseconds (EM.add_timer multiplies by 1000). The
 * signature is the extension's own counter, not libem's timer id, so that
 * it is known before the timer is armed and fits in the callback's arg. */
static VALUE t_add_oneshot_timer(VALUE self, VALUE ms)
{
    (void)self;
    em_reactor *r = rbem_reactor("add_oneshot_timer");
    long delay = NUM2LONG(ms);
    uint64_t sig = ++rbem.timer_seq;
    if (!em_add_timer(r, delay > 0 ? (double)delay / 1000.0 : 0.0, timer_fired,
                      (void *)(uintptr_t)sig)) {
        if (errno == EAGAIN)
            rb_raise(rb_eRuntimeError,
                     "ran out of timers; use #set_max_timers to increase limit");
        rb_sys_fail("add_oneshot_timer");
    }
    return ULL2NUM(sig);
}

static VALUE t_get_timer_count(VALUE self)
{
    (void)self;
    return SIZET2NUM(rbem.r ? em_timer_count(rbem.r) : 0);
}

void rbem_init_timers(void)
{
    rb_define_module_function(rbem_module, "add_oneshot_timer", t_add_oneshot_timer, 1);
    rb_define_module_function(rbem_module, "get_timer_count", t_get_timer_count, 0);
}
