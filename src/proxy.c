/* Proxying (em_proxy_incoming_to): the bytes read from one connection sent
 * on to another, without a copy and with backpressure of its own.
 *
 * The bytes go out as bytes of the read buffer (em__conn_send inside the
 * receiving window), so an unhindered proxy writes each read with one send()
 * and copies only what the target's kernel buffer does not take. While more
 * than bufsize bytes wait in the target's queue the source is not read (the
 * hold, EM_CF_PROXY_HELD, apart from the user's pause); the target's
 * writes, or its queue dropped when it closes, release it. */
#include "em-internal.h"

#define EM_PROXY_DEFAULT_BUFSIZE ((size_t)1 << 20)

struct em_proxy {
    em_conn *to; /* NULL once stopped */
    size_t bufsize;
    size_t left; /* bytes until it completes; SIZE_MAX: no limit */
    size_t proxied;
};

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
static void follow_target(em_conn *from, const em_conn *to, size_t bufsize)
{
    size_t queued = em__conn_pending(to);
    if (queued > bufsize)
        hold(from, true);
    else if (queued < bufsize)
        hold(from, false);
}

/* Undoes the link both ways; the count stays. */
static void stop(em_conn *from)
{
    struct em_proxy *p = proxy_of(from);
    if (!p || !p->to)
        return;
    p->to->flags &= ~(uint32_t)EM_CF_PROXY_TARGET;
    p->to->cold->proxy_from = NULL;
    p->to = NULL;
    from->flags &= ~(uint32_t)EM_CF_PROXY;
    hold(from, false);
}

int em_proxy_incoming_to(em_conn *from, em_conn *to, size_t bufsize, size_t length)
{
    if (!from || !to || from == to || ((from->flags | to->flags) & (EM_CF_DGRAM | EM_CF_WATCH)))
        return -EINVAL;
    if (!em__conn_usable(from) || !em__conn_usable(to) ||
        (to->flags & (EM_CF_CLOSE_AFTER_WRITE | EM_CF_SHUT_WR_PENDING | EM_CF_WR_SHUT)))
        return -ENOTCONN; /* a target that takes no more data */
    if ((to->flags & EM_CF_PROXY_TARGET) && to->cold->proxy_from != from)
        return -EBUSY;
    em_cold *fk = em__conn_cold(from), *tk = em__conn_cold(to);
    if (!fk || !tk || (!fk->proxy && !(fk->proxy = em__calloc(1, sizeof *fk->proxy))))
        return -ENOMEM;
    stop(from);
    *fk->proxy = (struct em_proxy){.to = to,
                                   .bufsize = bufsize ? bufsize : EM_PROXY_DEFAULT_BUFSIZE,
                                   .left = length ? length : SIZE_MAX};
    from->flags |= EM_CF_PROXY;
    to->flags |= EM_CF_PROXY_TARGET;
    tk->proxy_from = from;
    follow_target(from, to, fk->proxy->bufsize);
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

/* The first n bytes of the read buffer, read from `from`. */
void em__proxy_deliver(em_conn *from, size_t n)
{
    em_reactor *r = from->r;
    struct em_proxy *p = from->cold->proxy;
    em_conn *to = p->to;
    size_t k = n < p->left ? n : p->left;
    r->receiving = true;
    int err = em__conn_send(to, r->read_buf, k);
    r->receiving = false;
    if (r->borrower_count)
        em__conn_settle_borrowed(r);
    if (err) { /* a closing target takes nothing more: the source gets it */
        if (err == -ENOMEM)
            em__conn_fail(to, ENOMEM); /* rather than a hole in its stream */
        em__conn_receive(from, r->read_buf, n);
        return;
    }
    p->proxied += k;
    if (p->left != SIZE_MAX)
        p->left -= k;
    if (p->left) {
        follow_target(from, to, p->bufsize);
        return;
    }
    stop(from);
    if (from->h->proxy_completed)
        from->h->proxy_completed(from);
    if (k < n && from->state == EM_CS_OPEN)
        em__conn_receive(from, r->read_buf + k, n - k);
}

/* The target wrote some of its queue, or dropped it closing. */
void em__proxy_target_progress(em_conn *to)
{
    em_conn *from = to->cold->proxy_from;
    if (from->flags & EM_CF_PROXY_HELD)
        follow_target(from, to, from->cold->proxy->bufsize);
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
