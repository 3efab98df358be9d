/* Proxying (em_proxy_incoming_to): the bytes read from one connection sent
 * on to another with backpressure of its own, and the source's FIN passed
 * on as the target's once they are written.
 *
 * Between two plain sockets the bytes never enter user space: splice(2)
 * moves them from the source's socket into a pipe that stands in the
 * target's queue (pipe.c), and from there to the target's socket. Where
 * splice cannot serve (TLS on either side, a descriptor that is not a
 * socket, a paused target) they are read
 * into the read buffer and go out as bytes of it (em__conn_send inside the
 * receiving window): one send() for each read, and a copy only of what the
 * target's kernel buffer does not take. Both ways end in the target's one
 * queue, so switching between them keeps the order.
 *
 * While more than bufsize bytes wait in the target's queue (in memory or in
 * its pipe), or its pipe is full, the source is not read (the hold,
 * EM_CF_PROXY_HELD, apart from the user's pause); the target's writes, or
 * its queue dropped when it closes, release it. */
#include "em-internal.h"

#define EM_PROXY_DEFAULT_BUFSIZE ((size_t)1 << 20)

struct em_proxy {
    em_conn *to; /* NULL once stopped */
    size_t bufsize;
    size_t left; /* bytes until it completes; SIZE_MAX: no limit */
    size_t proxied;
    bool pipe_full;  /* splice found no room: wait for the target to write */
    bool no_splice;  /* splice refused these descriptors: copy */
    uint8_t smalls;  /* small splices in a row; SPLICE_SMALLS: copying */
};

/* Splice pays for its pipe on every call: for a few bytes at a time (a
 * chatty protocol) one read and one send cost less. SPLICE_SMALLS splices
 * in a row that move less than SPLICE_SMALL each turn the proxy to
 * copying; a read of SPLICE_LARGE or more turns it back. A stream's odd
 * short splice (the tail of a message) changes nothing. */
#define SPLICE_SMALL 1024
#define SPLICE_SMALLS 4
#define SPLICE_LARGE (8 * 1024)

static struct em_proxy *proxy_of(const em_conn *c) { return c->cold ? c->cold->proxy : NULL; }

static void hold(em_conn *from, bool on)
{
    if (on == !!(from->flags & EM_CF_PROXY_HELD))
        return;
    if (on)
        from->flags |= EM_CF_PROXY_HELD;
    else
        from->flags &= ~(uint32_t)EM_CF_PROXY_HELD;
    if (from->state == EM_CS_OPEN)
        em__conn_update_interest(from);
}

/* Held above bufsize, released below it: at bufsize it stays as it is. */
static void follow_target(em_conn *from, const em_conn *to, const struct em_proxy *p)
{
    size_t queued = em__conn_pending(to);
    if (queued > p->bufsize || p->pipe_full)
        hold(from, true);
    else if (queued < p->bufsize)
        hold(from, false);
}

/* Undoes the link both ways; the count stays. */
static bool unlink_target(em_conn *from)
{
    struct em_proxy *p = proxy_of(from);
    if (!p || !p->to)
        return false;
    p->to->flags &= ~(uint32_t)EM_CF_PROXY_TARGET;
    p->to->cold->proxy_from = NULL;
    p->to = NULL;
    from->flags &= ~(uint32_t)EM_CF_PROXY;
    return true;
}

static void stop(em_conn *from)
{
    if (!unlink_target(from))
        return;
    hold(from, false);
    if (from->state == EM_CS_OPEN) /* a backend may read for it again */
        em__conn_update_interest(from);
}

int em_proxy_incoming_to(em_conn *from, em_conn *to, size_t bufsize, size_t length)
{
    if (!from || !to || from == to || ((from->flags | to->flags) & (EM_CF_DGRAM | EM_CF_WATCH)))
        return -EINVAL;
    if (!em__conn_usable(from) || !em__conn_takes_data(to))
        return -ENOTCONN;
    if ((to->flags & EM_CF_PROXY_TARGET) && to->cold->proxy_from != from)
        return -EBUSY;
    em_cold *fk = em__conn_cold(from), *tk = em__conn_cold(to);
    if (!fk || !tk || (!fk->proxy && !(fk->proxy = em__calloc(1, sizeof *fk->proxy))))
        return -ENOMEM;
    unlink_target(from); /* not reading for itself a moment: a backend might */
    *fk->proxy = (struct em_proxy){.to = to,
                                   .bufsize = bufsize ? bufsize : EM_PROXY_DEFAULT_BUFSIZE,
                                   .left = length ? length : SIZE_MAX};
    from->flags |= EM_CF_PROXY;
    hold(from, false); /* the old target's hold ends; the new one's decides */
    to->flags |= EM_CF_PROXY_TARGET;
    tk->proxy_from = from;
    follow_target(from, to, fk->proxy);
    if (from->state == EM_CS_OPEN) /* it reads the socket itself now (splice) */
        em__conn_update_interest(from);
    return 0;
}

int em_stop_proxying(em_conn *from)
{
    if (!from)
        return -EINVAL;
    stop(from);
    return 0;
}

size_t em_get_proxied_bytes(const em_conn *from)
{
    struct em_proxy *p = from ? proxy_of(from) : NULL;
    return p ? p->proxied : 0;
}

/* k more bytes went to the target: false once the proxy completed. */
static bool advance(em_conn *from, struct em_proxy *p, size_t k)
{
    p->proxied += k;
    if (p->left != SIZE_MAX)
        p->left -= k;
    if (p->left) {
        follow_target(from, p->to, p);
        return true;
    }
    stop(from);
    if (from->h->proxy_completed)
        from->h->proxy_completed(from);
    return false;
}

/* The first n bytes of the read buffer, read from `from`. */
void em__proxy_deliver(em_conn *from, size_t n)
{
    em_reactor *r = from->r;
    struct em_proxy *p = from->cold->proxy;
    em_conn *to = p->to;
    size_t k = n < p->left ? n : p->left;
    if (n >= SPLICE_LARGE)
        p->smalls = 0;
    r->recv_lo = r->read_buf;
    r->recv_hi = r->read_buf + k;
    int err = em__conn_send(to, r->read_buf, k);
    r->recv_lo = r->recv_hi = NULL;
    if (r->borrower_count)
        em__conn_settle_borrowed(r);
    if (err) { /* a closing target takes nothing more: the source gets it */
        if (err == -ENOMEM)
            em__conn_fail(to, ENOMEM); /* rather than a hole in its stream */
        em__conn_receive(from, r->read_buf, n);
        return;
    }
    if (!advance(from, p, k) && k < n && from->state == EM_CS_OPEN)
        em__conn_receive(from, r->read_buf + k, n - k);
}

/* ---------------------------------------------------------------- splice */

static bool spliceable(const em_conn *from, const em_conn *to, const struct em_proxy *p)
{
    const uint32_t not_from = EM_CF_LAYER | EM_CF_NOT_SOCKET;
    const uint32_t not_to = not_from | EM_CF_PAUSED | EM_CF_SPAN | EM_CF_CLOSE_AFTER_WRITE |
                            EM_CF_SHUT_WR_PENDING | EM_CF_WR_SHUT;
    return !from->r->splice_off && !p->no_splice && p->smalls < SPLICE_SMALLS &&
           !(from->flags & not_from) && !(to->flags & not_to) && to->state == EM_CS_OPEN;
}

/* splice returned n < 0: why nothing moved. */
static void splice_failed(em_conn *from, struct em_proxy *p, em_pipe *pipe)
{
    int err = errno;
    bool empty = em__pipe_empty(pipe);
    em__pipe_untake(from->r, pipe); /* an empty one may be freed */
    if (err != EAGAIN && err != EWOULDBLOCK) {
        em__conn_fail(from, err);
    } else if (!empty) {
        /* a pipe with bytes in it can be full before its size: the pages
         * of small segments fill its slots */
        p->pipe_full = true;
        follow_target(from, p->to, p);
    }
}

/* Source readable: true when splice dealt with it, false when the caller
 * reads it into the read buffer instead. */
bool em__proxy_splice(em_conn *from)
{
    struct em_proxy *p = from->cold->proxy;
    em_conn *to = p->to;
    if (!spliceable(from, to, p))
        return false;
    em_pipe *pipe = em__pipe_take(from->r, &to->cold->pipe);
    if (!pipe)
        return false;
    size_t room = em__pipe_room(pipe), want = room < p->left ? room : p->left;
    ssize_t n = want ? em__pipe_fill(pipe, from->io.fd, want) : (errno = EAGAIN, -1);
    if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
        em__pipe_untake(from->r, pipe);
        p->no_splice = true; /* for good: these descriptors do not splice */
        return false;
    }
    if (n == 0) {
        em__pipe_untake(from->r, pipe);
        em__conn_on_eof(from);
        return true;
    }
    if (n < 0) {
        splice_failed(from, p, pipe);
        return true;
    }
    p->smalls = (size_t)n < SPLICE_SMALL ? p->smalls + 1 : 0;
    em__count_in(from, (size_t)n);
    em__conn_touch(from);
    if (em__pipe_queue(from->r, pipe, &to->out, (size_t)n) < 0) {
        em__conn_fail(to, ENOMEM); /* rather than a hole in its stream */
        return true;
    }
    advance(from, p, (size_t)n); /* may hold the source until the flush */
    em__conn_flush(to);
    return true;
}

/* ------------------------------------------------------------- the target */

/* The target wrote some of its queue, or dropped it closing. */
void em__proxy_target_progress(em_conn *to)
{
    em_conn *from = to->cold->proxy_from;
    struct em_proxy *p = from->cold->proxy;
    p->pipe_full = false;
    if (from->flags & EM_CF_PROXY_HELD)
        follow_target(from, to, p);
}

/* The source's peer closed its side: the target's closes once what was
 * proxied is written. */
void em__proxy_source_eof(em_conn *from)
{
    struct em_proxy *p = from->cold->proxy;
    if (p->to && !(p->to->flags & EM_CF_NOT_SOCKET))
        em_close_write(p->to);
}

/* Before c's unbind: c stops proxying, and stops being a target. Returns the
 * source to tell once c's unbind has returned, or NULL. */
em_conn *em__proxy_unlink(em_conn *c)
{
    stop(c);
    if (!(c->flags & EM_CF_PROXY_TARGET))
        return NULL;
    em_conn *from = c->cold->proxy_from;
    stop(from);
    return em__conn_usable(from) ? from : NULL;
}

void em__proxy_free(em_conn *c)
{
    if (c->cold)
        em__free(c->cold->proxy);
}
