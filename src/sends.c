/* Sends made by a completion backend (io_uring): the queues a turn's
 * flush writes go to the kernel together, in one system call, instead of a
 * send() each.
 *
 * A plain stream connection with bytes in memory at the head of its queue
 * is listed (EM_CF_SEND_LISTED) where it would write. At the end of the
 * flush phase each listed connection still plain, open and not paused gets
 * one send of what is queued then (EM_CF_SENDING), and the sends are
 * submitted together. The kernel makes each as it takes it and never later
 * (MSG_DONTWAIT: a full socket answers -EAGAIN at once), so their results
 * are in the completion queue when the submission returns, and are taken
 * there and then: what went leaves the queue, a connection whose socket
 * was full waits to be writable, one that sent part of its queue is listed
 * again for the next round. So nothing of a connection's is left in the
 * kernel after the phase, no callback ever sees a send in flight (a close,
 * a detach or TLS starting find at most a listing, and drop it), and a
 * turn's writes are done when it ends, as with send().
 *
 * An echo of a completion backend's buffer is listed without a copy
 * (EM_CF_LENT: conn.c's settle_span and settle): the buffer lasts until
 * the next wait, and its bytes go in the phase's sends. Whatever of a lent
 * queue could outlive the phase unsent is copied first (keep): what a send
 * left, a queue given back to the flush or to TLS, a listing the phase's
 * bounds carry over. */
#include "em-internal.h"

#include <string.h>

bool em__sends_plain(const em_conn *c)
{
    return c->r->backend_sends && !c->r->sends_refused &&
           !(c->flags & (EM_CF_LAYER | EM_CF_DGRAM | EM_CF_WATCH | EM_CF_NOT_SOCKET |
                         EM_CF_MESSAGES));
}

static bool head_in_memory(const em_conn *c)
{
    struct iovec first;
    return em__outq_iov(&c->out, &first, 1, NULL) == 1;
}

static bool list(em_reactor *r, em_sig sig)
{
    if (r->send_len == r->send_cap) {
        unsigned cap = r->send_cap ? r->send_cap * 2 : 64;
        em_sig *grown = em__realloc(r->send_list, cap * sizeof *grown);
        if (!grown)
            return false;
        r->send_list = grown;
        r->send_cap = cap;
    }
    r->send_list[r->send_len++] = sig;
    return true;
}

bool em__sends_take(em_conn *c)
{
    if (c->flags & EM_CF_SEND_LISTED)
        return true;
    if (!em__sends_plain(c) || !head_in_memory(c) || !list(c->r, c->sig))
        return false; /* no memory to list it: it writes for itself */
    c->flags |= EM_CF_SEND_LISTED;
    return true;
}

/* False: no memory for the copy, and c has failed. */
static bool keep(em_conn *c)
{
    if (!(c->flags & EM_CF_LENT))
        return true;
    if (em__outq_own(c->r, &c->out) < 0) {
        em__conn_fail(c, ENOMEM);
        return false;
    }
    c->flags &= ~(uint32_t)EM_CF_LENT;
    return true;
}

/* c's queue goes back to the flush, which writes it now. */
static bool write_itself(em_conn *c)
{
    if (keep(c))
        em__conn_mark_dirty(c);
    return false;
}

void em__sends_unlist(em_conn *c)
{
    if (c->flags & EM_CF_SEND_LISTED)
        keep(c);
    c->flags &= ~(uint32_t)EM_CF_SEND_LISTED;
}

/* Sends per submission, and submissions per em__sends_flush (the flush
 * phase calls it a bounded number of times): what is listed after them
 * waits for the next phase (the wait between does not block). */
#define SEND_BATCH 128
#define SEND_ROUNDS 16
/* The most buffers one send takes: a longer queue sends the rest next. */
#define SEND_IOV 16

/* Whether c's send was queued; *asked: its bytes. */
static bool issue(em_reactor *r, em_conn *c, size_t *asked)
{
    c->flags &= ~(uint32_t)EM_CF_SEND_LISTED;
    if (c->state != EM_CS_OPEN)
        return false; /* a close dropped the bytes */
    if (c->flags & EM_CF_PAUSED) {
        keep(c); /* a resume has its own flush */
        return false;
    }
    if (!em__sends_plain(c))
        return write_itself(c); /* sends refused this phase, or TLS, ... */
    struct iovec iov[SEND_IOV];
    bool feed_next;
    int cnt = em__outq_iov(&c->out, iov, SEND_IOV, &feed_next);
    if (!cnt)
        return write_itself(c); /* a feed at the head */
    ssize_t n = r->backend->send(r, &c->io, iov, cnt, feed_next);
    if (n < 0) {
        r->sends_refused = true; /* no room to ask */
        return write_itself(c);
    }
    c->flags |= EM_CF_SENDING;
    *asked = (size_t)n;
    return true;
}

enum next { NEXT_NONE, NEXT_WAIT, NEXT_FLUSH, NEXT_EMPTIED };

/* What went leaves the queue, for every result of a round before any
 * callback runs: none of them sees a send whose result is not taken. A
 * send that took less than it was offered found the socket full, as a
 * short write does: the rest waits for writability (and outbound_drained
 * follows the drain). */
static enum next account(em_conn *c, int res, size_t asked)
{
    c->flags &= ~(uint32_t)EM_CF_SENDING;
    if (c->state != EM_CS_OPEN)
        return NEXT_NONE;
    if (res == -ECANCELED) { /* never made: the kernel refused the submission */
        c->r->sends_refused = true;
        write_itself(c);
        return NEXT_NONE;
    }
    if (res < 0 && res != -EAGAIN && res != -EWOULDBLOCK) {
        em__conn_fail(c, -res);
        return NEXT_NONE;
    }
    if (res > 0) {
        em__outq_consume(c->r, &c->out, (size_t)res);
        em__conn_sent(c, (size_t)res);
    }
    if (!c->out.head) {
        c->flags &= ~(uint32_t)EM_CF_LENT;
        return NEXT_EMPTIED;
    }
    if (!keep(c))
        return NEXT_NONE;
    bool short_write = res < 0 || (size_t)res < asked;
    return short_write && em__outq_bytes(&c->out) ? NEXT_WAIT : NEXT_FLUSH;
}

/* An emptied queue is all most sends leave: the drain needs the flush only
 * when someone waits for it (outbound_drained, a close or shutdown after
 * writing, a file's report); otherwise the interest stays as it is. */
static bool drain_awaited(const em_conn *c)
{
    return (c->flags & (EM_CF_WRITE_WAITED | EM_CF_CLOSE_AFTER_WRITE | EM_CF_SHUT_WR_PENDING)) ||
           (c->cold && c->cold->files);
}

static void carry_on(em_conn *c, enum next next)
{
    if (c->state != EM_CS_OPEN || next == NEXT_NONE ||
        (next == NEXT_EMPTIED && !drain_awaited(c)))
        return;
    if (next == NEXT_WAIT) { /* the socket was full: wait to be writable */
        c->flags |= EM_CF_WRITE_WAITED;
        em__conn_update_interest(c);
        return;
    }
    em__conn_flush(c); /* the rest (part went: listed again), a feed next, or the drain */
}

/* Where c is in sent[0..n), looking from its likely place on. */
static int find(em_conn *const *sent, unsigned n, unsigned from, const em_conn *c)
{
    for (unsigned k = 0; k < n; k++) {
        unsigned at = (from + k) % n;
        if (sent[at] == c)
            return (int)at;
    }
    return 0; /* never: every result is of a send of the round */
}

/* Up to SEND_BATCH of the listed get their send, submitted at once, and
 * every result is taken. */
static void send_round(em_reactor *r)
{
    em_conn *sent[SEND_BATCH];
    size_t asked[SEND_BATCH];
    unsigned n = 0, i = 0;
    for (; i < r->send_len && n < SEND_BATCH; i++) {
        em_conn *c = em__sigmap_get(&r->sigmap, r->send_list[i]);
        if (c && (c->flags & EM_CF_SEND_LISTED) && issue(r, c, &asked[n]))
            sent[n++] = c;
    }
    r->send_len -= i; /* those listed after the batch go next round */
    memmove(r->send_list, r->send_list + i, r->send_len * sizeof *r->send_list);
    if (!n)
        return;
    em_event results[SEND_BATCH];
    enum next next[SEND_BATCH];
    int got = r->backend->sends_submit(r, results, (int)n);
    for (int k = 0, j = -1; k < got; k++) {
        em_conn *c = EM_CONTAINER_OF(results[k].io, em_conn, io);
        j = find(sent, n, (unsigned)j + 1, c); /* results come in the order sent */
        next[k] = c->flags & EM_CF_SENDING ? account(c, results[k].res, asked[j]) : NEXT_NONE;
    }
    for (unsigned k = 0; k < n; k++)
        if (sent[k]->flags & EM_CF_SENDING) /* no result: whether it went is unknown */
            account(sent[k], -EIO, asked[k]);
    for (int k = 0; k < got; k++)
        carry_on(EM_CONTAINER_OF(results[k].io, em_conn, io), next[k]);
}

/* After a refusal the rest of the listed write for themselves. */
static void unlist_all(em_reactor *r)
{
    for (unsigned i = 0; i < r->send_len; i++) {
        em_conn *c = em__sigmap_get(&r->sigmap, r->send_list[i]);
        if (c && (c->flags & EM_CF_SEND_LISTED)) {
            c->flags &= ~(uint32_t)EM_CF_SEND_LISTED;
            write_itself(c);
        }
    }
    r->send_len = 0;
}

void em__sends_flush(em_reactor *r)
{
    for (int round = 0; r->send_len && round < SEND_ROUNDS && !r->sends_refused; round++)
        send_round(r);
    if (r->sends_refused)
        unlist_all(r);
}

void em__sends_phase_end(em_reactor *r)
{
    for (unsigned i = 0; i < r->send_len; i++) {
        em_conn *c = em__sigmap_get(&r->sigmap, r->send_list[i]);
        if (c && (c->flags & EM_CF_SEND_LISTED))
            keep(c); /* listed still: sent next phase, after the buffer went back */
    }
    r->sends_refused = false; /* a refusal holds for its phase only */
}
