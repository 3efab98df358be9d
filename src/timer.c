/* Timers: a binary min-heap of (deadline, seq) entries pointing into a slot
 * table. A timer id is (generation << 32 | slot + 1), so a stale id never
 * matches a slot's later timer and lookup needs no hashing.
 *
 * A one-shot timer's deadline is the real clock at the call + seconds, not
 * em_now() + seconds as in libuv and EventMachine: em_now() may be older
 * than the call (a slow callback earlier in the turn), and the timer must
 * not fire early. Ordering and firing go by that one deadline: a timer
 * ordered by one clock but held back by the other would hold back every
 * timer behind it. Timers of one delay still fire in the order they were
 * added: the clock never goes back. */
#include "em-internal.h"

#include <float.h>


#define NO_SLOT UINT32_MAX

void em__timers_init(em_timers *t)
{
    *t = (em_timers){.free_head = NO_SLOT};
}

void em__timers_destroy(em_timers *t)
{
    em__free(t->heap);
    em__free(t->slots);
    em__timers_init(t);
}

static bool entry_before(const em_heap_entry *a, const em_heap_entry *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_set(em_timers *t, uint32_t i, em_heap_entry e)
{
    t->heap[i] = e;
    t->slots[e.slot].heap_index = i;
}

static void sift_up(em_timers *t, uint32_t i)
{
    em_heap_entry e = t->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!entry_before(&e, &t->heap[parent]))
            break;
        heap_set(t, i, t->heap[parent]);
        i = parent;
    }
    heap_set(t, i, e);
}

static void sift_down(em_timers *t, uint32_t i)
{
    em_heap_entry e = t->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= t->heap_len)
            break;
        if (child + 1 < t->heap_len && entry_before(&t->heap[child + 1], &t->heap[child]))
            child++;
        if (!entry_before(&t->heap[child], &e))
            break;
        heap_set(t, i, t->heap[child]);
        i = child;
    }
    heap_set(t, i, e);
}

static void heap_remove(em_timers *t, uint32_t i)
{
    uint32_t slot = t->heap[i].slot;
    em_heap_entry last = t->heap[--t->heap_len];
    if (i < t->heap_len) {
        heap_set(t, i, last);
        if (i > 0 && entry_before(&last, &t->heap[(i - 1) / 2]))
            sift_up(t, i);
        else
            sift_down(t, i);
    }
    t->slots[slot].heap_index = EM_NOT_IN_HEAP;
}

static int heap_push(em_timers *t, uint32_t slot, double deadline)
{
    if (t->heap_len == t->heap_cap) {
        uint32_t cap = t->heap_cap ? t->heap_cap * 2 : 64;
        em_heap_entry *h = em__realloc(t->heap, (size_t)cap * sizeof *h);
        if (!h)
            return -ENOMEM;
        t->heap = h;
        t->heap_cap = cap;
    }
    t->heap[t->heap_len] = (em_heap_entry){deadline, t->seq++, slot};
    sift_up(t, t->heap_len++);
    return 0;
}

static uint32_t slot_alloc(em_timers *t)
{
    if (t->free_head != NO_SLOT) {
        uint32_t s = t->free_head;
        t->free_head = t->slots[s].next_free;
        return s;
    }
    if (t->slots_len == t->slots_cap) {
        if (t->slots_cap >= NO_SLOT / 2)
            return NO_SLOT;
        uint32_t cap = t->slots_cap ? t->slots_cap * 2 : 64;
        em_timer_slot *s = em__realloc(t->slots, (size_t)cap * sizeof *s);
        if (!s)
            return NO_SLOT;
        t->slots = s;
        t->slots_cap = cap;
    }
    t->slots[t->slots_len].gen = 0;
    return t->slots_len++;
}

static void slot_release(em_timers *t, uint32_t s)
{
    em_timer_slot *ts = &t->slots[s];
    if (!ts->internal)
        t->user_count--;
    ts->live = false;
    ts->gen++;
    ts->next_free = t->free_head;
    t->free_head = s;
}

static em_timer_id make_id(uint32_t slot, uint32_t gen)
{
    return ((uint64_t)gen << 32) | (uint64_t)(slot + 1);
}

em_timer_id em__timer_add(em_reactor *r, double deadline, double interval, em_cb cb, void *arg,
                          bool internal)
{
    em_timers *t = &r->timers;
    if (!internal && t->max_user && t->user_count >= t->max_user) {
        errno = EAGAIN;
        return 0;
    }
    uint32_t s = slot_alloc(t);
    if (s == NO_SLOT) {
        errno = ENOMEM;
        return 0;
    }
    em_timer_slot *ts = &t->slots[s];
    ts->interval = interval;
    ts->cb = cb;
    ts->arg = arg;
    ts->internal = internal;
    ts->live = true;
    if (!internal)
        t->user_count++;
    if (heap_push(t, s, deadline) < 0) {
        slot_release(t, s);
        errno = ENOMEM;
        return 0;
    }
    return make_id(s, ts->gen);
}

static em_timer_slot *lookup(em_timers *t, em_timer_id id, uint32_t *slot)
{
    uint32_t s = (uint32_t)(id & 0xffffffffu);
    if (s == 0 || s > t->slots_len)
        return NULL;
    em_timer_slot *ts = &t->slots[s - 1];
    if (!ts->live || ts->gen != (uint32_t)(id >> 32))
        return NULL;
    *slot = s - 1;
    return ts;
}

int em__timer_cancel(em_reactor *r, em_timer_id id)
{
    uint32_t s;
    em_timer_slot *ts = lookup(&r->timers, id, &s);
    if (!ts)
        return -ENOENT;
    if (ts->heap_index != EM_NOT_IN_HEAP)
        heap_remove(&r->timers, ts->heap_index);
    slot_release(&r->timers, s); /* a firing periodic timer sees gen change */
    return 0;
}

/* The integer part of q >= 0 without libm: every double from 2^53 up is
 * whole, and below it the conversion cannot overflow. */
static double whole(double q) { return q < 0x1p53 ? (double)(uint64_t)q : q; }

/* The next due time of a periodic timer: keeps its phase and skips the
 * firings the loop was too busy to make, rather than bunching them. The
 * periods missed are counted in double: for an interval far below the
 * clock's resolution they number 1e24 and more, or infinitely many for a
 * denormal one. When rounding leaves no due time after now, the next one
 * is a period from now, or the next double after now if the interval is too
 * small to tell: never early, never stuck, and re-armed timers wait for the
 * next turn, so even then the timer fires once a turn. */
static double next_periodic(double due, double interval, double now)
{
    double next = due + interval;
    if (next > now)
        return next;
    next = due + interval * (whole((now - due) / interval) + 1);
    if (next > now && next <= DBL_MAX)
        return next;
    next = now + interval;
    return next > now ? next : now + now * DBL_EPSILON;
}

static void fire(em_reactor *r, em_heap_entry e)
{
    em_timers *t = &r->timers;
    heap_remove(t, 0);
    em_timer_slot *ts = &t->slots[e.slot];
    em_cb cb = ts->cb;
    void *arg = ts->arg;
    if (ts->interval <= 0) {
        slot_release(t, e.slot);
        cb(r, arg);
        return;
    }
    uint32_t gen = ts->gen;
    double interval = ts->interval;
    cb(r, arg);
    ts = &t->slots[e.slot]; /* the table may have moved */
    if (!ts->live || ts->gen != gen || ts->heap_index != EM_NOT_IN_HEAP)
        return;
    if (heap_push(t, e.slot, next_periodic(e.deadline, interval, r->now)) < 0)
        slot_release(t, e.slot);
}

void em__timers_run(em_reactor *r)
{
    em_timers *t = &r->timers;
    uint64_t seq_limit = t->seq; /* timers added while running wait a turn */
    while (t->heap_len && t->heap[0].seq < seq_limit && t->heap[0].deadline <= r->now &&
           !r->released)
        fire(r, t->heap[0]);
}

double em__timers_next(const em_timers *t)
{
    return t->heap_len ? t->heap[0].deadline : -1;
}

void em__timers_clear(em_reactor *r)
{
    em_timers *t = &r->timers;
    while (t->heap_len) {
        uint32_t s = t->heap[t->heap_len - 1].slot;
        heap_remove(t, t->heap_len - 1);
        slot_release(t, s);
    }
}

static bool bad_seconds(double s) { return !(s >= 0 && s <= DBL_MAX); /* NaN, <0, inf */ }

em_timer_id em_add_timer(em_reactor *r, double seconds, em_cb cb, void *arg)
{
    if (!r || !cb || bad_seconds(seconds)) {
        errno = EINVAL;
        return 0;
    }
    return em__timer_add(r, em__clock() + seconds, 0, cb, arg, false);
}

em_timer_id em_add_periodic_timer(em_reactor *r, double interval, em_cb cb, void *arg)
{
    if (!r || !cb || bad_seconds(interval) || interval <= 0) {
        errno = EINVAL;
        return 0;
    }
    return em__timer_add(r, em__clock() + interval, interval, cb, arg, false);
}

int em_cancel_timer(em_reactor *r, em_timer_id id)
{
    if (!r)
        return -EINVAL;
    uint32_t s;
    em_timer_slot *ts = lookup(&r->timers, id, &s);
    if (!ts || ts->internal)
        return -ENOENT;
    return em__timer_cancel(r, id);
}

size_t em_timer_count(const em_reactor *r) { return r ? r->timers.user_count : 0; }

int em_set_max_timers(em_reactor *r, size_t max)
{
    if (!r)
        return -EINVAL;
    r->timers.max_user = max;
    return 0;
}
