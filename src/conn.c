/* Stream connections: the read path, the write path and the close path.
 *
 * Reads go through the reactor's one buffer, one read per readable event.
 * Writes are queued by em_send_data and flushed once per turn with one send
 * or sendmsg; received bytes sent on are written right after receive_data
 * (see "sending received bytes" below). The poller watches for writability
 * only while the kernel has refused part of a write. A close
 * only marks the connection and queues it; unbind and the free happen in the
 * close phase of the turn, so a connection pointer is valid for the whole
 * dispatch that closed it. */
#include "em-internal.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IOV_PER_WRITE 64
/* The largest echo of read_buf copied for a backend's sends rather than written now. */
#define SEND_COPY_MAX 4096

em_conn *em__conn_new(em_reactor *r, int fd, const em_handler *h, void *arg)
{
    em_conn *c = em__calloc(1, sizeof *c);
    if (!c) {
        errno = ENOMEM; /* a user allocator need not set it */
        return NULL;
    }
    c->io = (em_io){.fd = fd, .type = EM_IO_CONN};
    c->r = r;
    c->h = h;
    c->arg = arg;
    c->sig = em__next_sig(r);
    if (em__sigmap_put(&r->sigmap, c) < 0) {
        em__free(c);
        errno = ENOMEM;
        return NULL;
    }
    if (fd >= 0 && em__fd_claim(r, fd) < 0) {
        em__sigmap_del(&r->sigmap, c->sig);
        em__free(c);
        errno = ENOMEM;
        return NULL;
    }
    c->state = EM_CS_OPEN;
    c->created = c->last_activity = r->now;
    r->conn_count++;
    return c;
}

em_cold *em__conn_cold(em_conn *c)
{
    if (!c->cold && (c->cold = em__calloc(1, sizeof *c->cold)))
        c->cold->connect_timeout = EM_DEFAULT_CONNECT_TIMEOUT;
    return c->cold;
}

/* The high halves live in the cold part: most connections never move 4 GiB. */
static void carry(em_conn *c, uint32_t *lo, uint32_t hi, bool out)
{
    em_cold *k = em__conn_cold(c);
    if (k)
        *(out ? &k->out_hi : &k->in_hi) += hi;
    else
        *lo = UINT32_MAX; /* statistics only: saturate rather than fail */
}

static inline void count(em_conn *c, uint32_t *lo, size_t n, bool out)
{
    uint64_t sum = (uint64_t)*lo + n;
    *lo = (uint32_t)sum;
    if (sum >> 32)
        carry(c, lo, (uint32_t)(sum >> 32), out);
}

void em__count_in(em_conn *c, size_t n) { count(c, &c->in_lo, n, false); }
void em__count_out(em_conn *c, size_t n) { count(c, &c->out_lo, n, true); }

static void layer_free(em_conn *c, em_layer **slot)
{
    if (*slot)
        (*slot)->ops->free(*slot, c->r);
    *slot = NULL;
}

void em__conn_layer_free(em_conn *c)
{
    if (c->cold)
        layer_free(c, &c->cold->layer);
    c->flags &= ~(uint32_t)(EM_CF_LAYER | EM_CF_LAYER_HELD);
}

void em__conn_layer_retire(em_conn *c)
{
    if (c->cold && c->cold->layer) {
        layer_free(c, &c->cold->retired);
        c->cold->retired = c->cold->layer;
        c->cold->layer = NULL;
    }
    c->flags &= ~(uint32_t)(EM_CF_LAYER | EM_CF_LAYER_HELD);
}

static void cold_free(em_conn *c)
{
    em__files_free(c);
    em__proxy_free(c);
    em__conn_layer_free(c);
    layer_free(c, &c->cold->retired);
    em__free(c->cold->host);
    em__stash_free(c);
    em__free(c->cold);
}

static void conn_free(em_conn *c)
{
    c->r->conn_count--;
    if (c->cold)
        cold_free(c);
    em__free(c);
}

bool em__conn_usable(const em_conn *c)
{
    return c->state == EM_CS_OPEN || c->state == EM_CS_CONNECTING ||
           c->state == EM_CS_RESOLVING;
}

/* A completion backend may read for a connection whose bytes go straight
 * to receive_data; a layer or a splicing proxy reads the socket itself. */
static bool reads_plainly(const em_conn *c)
{
    return c->r->backend_reads && !(c->flags & (EM_CF_LAYER | EM_CF_PROXY | EM_CF_DGRAM |
                                                EM_CF_NOT_SOCKET | EM_CF_MESSAGES));
}

static unsigned wanted_interest(const em_conn *c)
{
    if (c->state == EM_CS_CONNECTING)
        return EM_EV_WRITE;
    if (c->state != EM_CS_OPEN || (c->flags & EM_CF_PAUSED))
        return 0;
    if (c->flags & EM_CF_WATCH)
        return em__watch_interest(c);
    unsigned want = 0;
    if (!(c->flags & (EM_CF_EOF | EM_CF_PROXY_HELD | EM_CF_LAYER_HELD)))
        want |= EM_EV_READ | (reads_plainly(c) ? EM_EV_RECV : 0);
    if (c->flags & EM_CF_WRITE_WAITED)
        want |= EM_EV_WRITE;
    return want;
}

/* No interest means no registration: a paused or half-dead socket left
 * registered would still report HUP/ERR and make the loop spin. */
void em__conn_update_interest(em_conn *c)
{
    unsigned want = wanted_interest(c);
    if (want == c->io.interest && (want != 0) == c->io.registered)
        return;
    if (want & EM_EV_READ) {
        if (em__stash_has(c))
            em__conn_mark_dirty(c); /* read ahead, it is fed from the flush */
    } else if ((c->io.interest & EM_EV_RECV) && !em__conn_cold(c)) {
        em__conn_fail(c, ENOMEM); /* nowhere to keep what the backend read */
        return;
    }
    /* reading wanted again (a resume, a hold released) changes the
     * interest: a layer may hold bytes no poller reports */
    if ((c->flags & EM_CF_LAYER) && (want & EM_EV_READ))
        em__layer(c)->ops->read_wanted(c);
    if (!want) {
        em__io_unwatch(c->r, &c->io);
        return;
    }
    int err = em__io_watch(c->r, &c->io, want);
    if (err)
        em__conn_fail(c, -err);
}

/* As EventMachine does: post_init runs before the connection joins the
 * poller, so it may send, pause or close before any byte is read. */
void em__conn_begin(em_conn *c)
{
    if (c->h->post_init)
        c->h->post_init(c);
    if (c->state == EM_CS_OPEN)
        em__conn_update_interest(c);
}

void em__conn_mark_dirty(em_conn *c)
{
    if ((c->flags & EM_CF_DIRTY) || c->state != EM_CS_OPEN)
        return;
    c->flags |= EM_CF_DIRTY;
    c->list_next = c->r->dirty;
    c->r->dirty = c;
}

void em__conn_touch(em_conn *c) { c->last_activity = c->r->now; }

static void cancel_timers(em_conn *c)
{
    if (c->cold && c->cold->inactivity_timer)
        em__timer_cancel(c->r, c->cold->inactivity_timer);
    if (c->cold)
        c->cold->inactivity_timer = 0;
}

static void drop_output(em_conn *c)
{
    if (c->flags & EM_CF_DGRAM) {
        em__dgram_clear(c);
    } else {
        em__outq_clear(c->r, &c->out);
        c->flags &= ~(uint32_t)(EM_CF_SPAN | EM_CF_LENT);
    }
    if (c->flags & EM_CF_PROXY_TARGET) /* its source is held no longer */
        em__proxy_target_progress(c);
}

/* Kind-specific state, freed with the connection. */
static void free_ext(em_conn *c)
{
    if (c->flags & EM_CF_DGRAM)
        em__dgram_free(c);
    else if (c->flags & EM_CF_POPEN)
        em__child_free(c);
    else
        em__connect_abandon(c);
}

static bool closes_fd(const em_conn *c)
{
    return !(c->flags & (EM_CF_DETACHED | EM_CF_NO_FD_CLOSE));
}

/* The descriptor is closed in the close phase of this turn, before the
 * poller is asked again. A socket a forked child may hold stays open after
 * that close, and so would its registration. */
static void leave_poller(em_conn *c)
{
    if (closes_fd(c) && !em__maybe_forked_with(c->r, c->sig))
        em__io_forget(c->r, &c->io);
    else
        em__io_unwatch(c->r, &c->io);
}

/* A descriptor libem does not close is the user's again from the moment
 * the connection closes or is detached, before the user may attach it
 * again: the flag libem changed is put back now, and only that one. A
 * forked child leaves it alone: the open file is its parent's too. */
static void hand_back(em_conn *c)
{
    if ((c->flags & EM_CF_RESTORE_FL) && !c->r->forked) {
        int fl = fcntl(c->io.fd, F_GETFL);
        if (fl >= 0)
            fcntl(c->io.fd, F_SETFL, fl & ~O_NONBLOCK);
    }
    c->flags &= ~(uint32_t)EM_CF_RESTORE_FL;
    em__fd_release(c->r, c->io.fd);
    c->io.fd = -1;
    em__io_settle(c->r);
}

void em__conn_fail(em_conn *c, int reason)
{
    if (!em__conn_usable(c))
        return;
    if (!c->reason)
        c->reason = reason;
    if (c->flags & EM_CF_LAYER)
        em__layer(c)->ops->closing(c, reason);
    c->state = EM_CS_CLOSING;
    leave_poller(c);
    c->io.dead = true;
    if (!closes_fd(c) && c->io.fd >= 0)
        hand_back(c);
    drop_output(c);
    em__connect_abandon(c);
    cancel_timers(c);
    em__close_list_push(c);
}

void em__conn_shutdown(em_conn *c)
{
    if (c->state == EM_CS_REAPING) { /* unbind now; the child becomes an orphan */
        c->state = EM_CS_CLOSING;
        em__close_list_push(c);
        return;
    }
    em__conn_fail(c, 0);
}

void em__conn_close_fd(em_conn *c)
{
    if (c->io.fd < 0)
        return;
    em__fd_release(c->r, c->io.fd);
    if (closes_fd(c))
        close(c->io.fd);
    c->io.fd = -1;
    if (c->r->starved_servers)
        em__servers_fds_freed(c->r);
}

void em__conn_discard(em_conn *c)
{
    em__sigmap_del(&c->r->sigmap, c->sig);
    leave_poller(c);
    em__conn_close_fd(c);
    drop_output(c);
    free_ext(c);
    cancel_timers(c);
    conn_free(c);
}

/* Bytes a backend read before the descriptor went back to its owner
 * (em_detach, an attached one closed) had left it: receive_data gets them
 * before unbind. A connection that closes its socket drops them, so that an
 * em_reconnect from unbind starts with none. */
static void settle_read_ahead(em_conn *c)
{
    ssize_t n;
    while (!closes_fd(c) && em__stash_has(c) &&
           (n = em__stash_read(c, c->r->read_buf, EM_READ_BUF_SIZE)) > 0) {
        count(c, &c->in_lo, (size_t)n, false);
        em__conn_receive(c, c->r->read_buf, (size_t)n);
    }
    em__stash_free(c);
}

void em__conn_finish(em_conn *c)
{
    em_reactor *r = c->r;
    em__conn_close_fd(c);
    if ((c->flags & EM_CF_POPEN) && !em__child_may_unbind(c))
        return; /* back on the close list once the child has exited */
    em__sigmap_del(&r->sigmap, c->sig);
    em_conn *source = (c->flags & (EM_CF_PROXY | EM_CF_PROXY_TARGET)) ? em__proxy_unlink(c) : NULL;
    em__files_report_all(c); /* still closing: done cannot revive it */
    if (em__stash_has(c))
        settle_read_ahead(c);
    c->state = EM_CS_UNBINDING;
    if (c->h->unbind && !r->forked)
        c->h->unbind(c, c->reason);
    if (source && source->h->proxy_target_unbound && em__conn_usable(source) && !r->forked)
        source->h->proxy_target_unbound(source);
    if (c->state != EM_CS_UNBINDING) { /* em_reconnect revived it */
        if (c->cold)
            layer_free(c, &c->cold->retired);
        return;
    }
    drop_output(c);
    free_ext(c);
    cancel_timers(c);
    conn_free(c);
}

/* ----------------------------------------------------------------- read */

/* As EventMachine: the peer's FIN closes the connection once what is
 * queued is written; a handler with peer_closed keeps it open for writing
 * (it closes when its own FIN is sent). A proxy passes the FIN on. */
static void on_eof(em_conn *c)
{
    c->flags |= EM_CF_EOF;
    if (c->flags & EM_CF_PROXY)
        em__proxy_source_eof(c);
    if (c->h->peer_closed && !(c->flags & (EM_CF_WR_SHUT | EM_CF_CLOSE_AFTER_WRITE))) {
        em__conn_update_interest(c);
        c->h->peer_closed(c);
        return;
    }
    if (em__conn_pending(c) && !(c->flags & EM_CF_PAUSED)) {
        c->flags |= EM_CF_CLOSE_AFTER_WRITE;
        em__conn_update_interest(c);
        em__conn_mark_dirty(c);
    } else if (em__conn_pending(c)) {
        c->flags |= EM_CF_CLOSE_AFTER_WRITE;
        em__conn_update_interest(c);
    } else {
        em__conn_fail(c, 0);
    }
}

void em__conn_on_eof(em_conn *c) { on_eof(c); }

/* Inline in the plain read path, which is hot; the TLS layer calls it
 * through em__conn_deliver. */
static inline void deliver(em_conn *c, size_t n)
{
    if (c->flags & EM_CF_PROXY)
        em__proxy_deliver(c, n);
    else
        em__conn_receive(c, c->r->read_buf, n);
}

void em__conn_deliver(em_conn *c, size_t n) { deliver(c, n); }

/* What a read returned, n bytes at the start of read_buf. */
static inline void took(em_conn *c, ssize_t n)
{
    if (n > 0) {
        count(c, &c->in_lo, (size_t)n, false);
        c->last_activity = c->r->now;
        deliver(c, (size_t)n);
    } else if (n == 0) {
        on_eof(c);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        em__conn_fail(c, errno);
    }
}

/* One read per readiness event, as raw epoll servers do: polling is
 * level-triggered, so what is left is reported again on the next turn, and
 * a second read after a full buffer would mostly find nothing (EAGAIN). */
static void do_read(em_conn *c)
{
    ssize_t n;
    do
        n = read(c->io.fd, c->r->read_buf, EM_READ_BUF_SIZE);
    while (n < 0 && errno == EINTR);
    took(c, n);
}

/* Bytes read ahead come before anything the socket holds. */
static void read_stash(em_conn *c) { took(c, em__stash_read(c, c->r->read_buf, EM_READ_BUF_SIZE)); }

/* What the backend read: delivered from its buffer, as a read's would be
 * from read_buf, unless bytes read ahead wait or the connection does not
 * read now; then it waits behind them. */
static void on_received(em_conn *c, const em_event *ev)
{
    const uint32_t not_now = EM_CF_PAUSED | EM_CF_EOF | EM_CF_PROXY_HELD | EM_CF_LAYER |
                             EM_CF_LAYER_HELD | EM_CF_PROXY | EM_CF_WATCH | EM_CF_DGRAM;
    if ((c->flags & not_now) || em__stash_has(c)) {
        if (em__conn_cold(c))
            em__conn_stash(c, ev->data, ev->res);
        else
            em__conn_fail(c, ENOMEM);
    } else if (ev->res > 0) {
        count(c, &c->in_lo, (size_t)ev->res, false);
        c->last_activity = c->r->now;
        em__conn_receive_kept(c, ev->data, (size_t)ev->res);
    } else if (ev->res == 0) {
        on_eof(c);
    } else {
        em__conn_fail(c, -ev->res);
    }
}

bool em__conn_keeps_input(const em_conn *c) { return em__conn_usable(c) || !closes_fd(c); }

void em__stash_feed(em_conn *c)
{
    if (c->flags & EM_CF_INPUT_LOST) {
        em__conn_fail(c, ENOMEM);
        return;
    }
    if (c->flags & EM_CF_LAYER) {
        if (c->state == EM_CS_OPEN && (wanted_interest(c) & EM_EV_READ))
            em__layer(c)->ops->on_event(c, EM_EV_READ); /* it reads the stash first */
        return;
    }
    while (em__stash_has(c) && c->state == EM_CS_OPEN && (wanted_interest(c) & EM_EV_READ))
        read_stash(c);
}

void em__conn_on_event(em_conn *c, const em_event *ev)
{
    unsigned events = ev->events;
    if (c->state != EM_CS_OPEN) {
        if (c->state == EM_CS_CONNECTING)
            em__connect_on_writable(c);
        return;
    }
    if (events & EM_EV_RECV) {
        on_received(c, ev);
        return;
    }
    if (c->flags & (EM_CF_WATCH | EM_CF_DGRAM | EM_CF_LAYER)) {
        if (c->flags & EM_CF_WATCH)
            em__watch_on_event(c, events);
        else if (c->flags & EM_CF_DGRAM)
            em__dgram_on_event(c, events);
        else
            em__layer(c)->ops->on_event(c, events);
        return;
    }
    /* A backend reading for it reports the FIN and errors itself. */
    if ((events & (EM_EV_READ | EM_EV_HUP | EM_EV_ERROR)) &&
        !(c->flags & (EM_CF_PAUSED | EM_CF_EOF | EM_CF_PROXY_HELD))) {
        if (em__stash_has(c))
            read_stash(c);
        else if (!((c->io.interest & EM_EV_RECV) && c->r->backend_reads) &&
                 !((c->flags & EM_CF_PROXY) && em__proxy_splice(c)))
            do_read(c);
    }
    if (c->state == EM_CS_OPEN && (events & (EM_EV_WRITE | EM_EV_ERROR)) &&
        (c->flags & EM_CF_WRITE_WAITED))
        em__conn_flush(c);
}

/* ---------------------------------------------------------------- write */

/* more: a feed follows, which the kernel writes next (the headers of a
 * file sent): the two leave in as few packets as they fit. */
static ssize_t write_iov(em_conn *c, struct iovec *iov, int cnt, bool more)
{
    if (c->flags & EM_CF_NOT_SOCKET)
        return em__writev_nosigpipe(c->io.fd, iov, cnt);
    const int flags = MSG_NOSIGNAL | MSG_DONTWAIT | (more ? MSG_MORE : 0);
    ssize_t n;
    if (cnt == 1) { /* send() spares the kernel the iovec import */
        do
            n = send(c->io.fd, iov[0].iov_base, iov[0].iov_len, flags);
        while (n < 0 && errno == EINTR);
        return n;
    }
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
    do
        n = sendmsg(c->io.fd, &msg, flags);
    while (n < 0 && errno == EINTR);
    return n;
}

/* A descriptor that sendfile or splice cannot write to gets the feed's
 * bytes through memory, a buffer at a time. */
static bool feed_unwritable(int err) { return err == EINVAL || err == ENOSYS || err == EOPNOTSUPP; }

static ssize_t write_queue(em_conn *c, size_t *asked);

/* The feed at the head of the queue, written by the kernel. */
static ssize_t write_feed(em_conn *c, size_t *asked)
{
    em__sigpipe_block(c->r);
    ssize_t n = em__outq_send_feed(&c->out, c->io.fd, false, asked);
    if (n > 0 || (n < 0 && !feed_unwritable(errno)))
        return n;
    if (!n) /* a file that shrank: the feed said why in errno */
        return -1;
    int err = em__outq_materialize(c->r, &c->out, EM_READ_BUF_SIZE);
    if (err) {
        errno = -err;
        return -1;
    }
    return write_queue(c, asked); /* its next bytes are in memory now */
}

static ssize_t write_queue(em_conn *c, size_t *asked)
{
    struct iovec iov[IOV_PER_WRITE];
    bool feed_next;
    int cnt = em__outq_iov(&c->out, iov, IOV_PER_WRITE, &feed_next);
    if (!cnt)
        return write_feed(c, asked);
    *asked = 0;
    for (int i = 0; i < cnt; i++)
        *asked += iov[i].iov_len;
    return write_iov(c, iov, cnt, feed_next);
}

ssize_t em__conn_write_raw(em_conn *c, size_t max)
{
    struct iovec iov[IOV_PER_WRITE];
    int cnt = em__outq_iov(&c->out, iov, IOV_PER_WRITE, NULL);
    size_t total = 0;
    for (int i = 0; i < cnt; i++) {
        if (iov[i].iov_len >= max - total) {
            iov[i].iov_len = max - total;
            cnt = i + 1;
            break;
        }
        total += iov[i].iov_len;
    }
    return write_iov(c, iov, cnt, false);
}

/* A proxy's target that wrote may release its source's hold. */
void em__conn_sent(em_conn *c, size_t n)
{
    count(c, &c->out_lo, n, true);
    c->last_activity = c->r->now;
    if (c->flags & EM_CF_PROXY_TARGET)
        em__proxy_target_progress(c);
}

/* Writes until the queue is empty or the kernel takes less than offered.
 * false: the connection failed. */
static bool drain_queue(em_conn *c)
{
    if ((c->flags & EM_CF_SEND_LISTED) || (c->r->backend_sends && em__sends_take(c)))
        return true; /* the backend sends it at the end of the phase */
    while (em__outq_bytes(&c->out)) {
        size_t asked;
        ssize_t n = write_queue(c, &asked);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return true;
            em__conn_fail(c, errno);
            return false;
        }
        em__outq_consume(c->r, &c->out, (size_t)n);
        em__conn_sent(c, (size_t)n);
        if ((size_t)n < asked)
            return true;
    }
    return true;
}

void em__conn_after_drain(em_conn *c)
{
    bool waited = c->flags & EM_CF_WRITE_WAITED;
    c->flags &= ~(uint32_t)EM_CF_WRITE_WAITED;
    if (c->flags & EM_CF_SHUT_WR_PENDING) {
        c->flags = (uint32_t)((c->flags & ~EM_CF_SHUT_WR_PENDING) | EM_CF_WR_SHUT);
        if (shutdown(c->io.fd, SHUT_WR) < 0 && errno != ENOTCONN) {
            em__conn_fail(c, errno);
            return;
        }
    }
    em__conn_drained(c, waited);
    if (c->state == EM_CS_OPEN && (c->flags & EM_CF_WR_SHUT) && (c->flags & EM_CF_EOF))
        em__conn_fail(c, 0); /* both sides have closed */
}

/* The queue is empty: stop watching for writability, tell the handler if a
 * write had to wait, then carry out a close that waited for the data. */
void em__conn_drained(em_conn *c, bool waited)
{
    em__conn_update_interest(c);
    if (waited && c->h->outbound_drained)
        c->h->outbound_drained(c);
    if (c->state == EM_CS_OPEN && (c->flags & EM_CF_CLOSE_AFTER_WRITE) && !em__conn_pending(c))
        em__conn_fail(c, 0);
}

static void flush(em_conn *c);

/* Files written are reported after the flush that wrote them, not inside
 * the write: done may send, close or stream another file. */
void em__conn_flush(em_conn *c)
{
    flush(c);
    if (c->cold && c->cold->files && c->state == EM_CS_OPEN)
        em__files_report(c);
}

static void flush(em_conn *c)
{
    if (c->state != EM_CS_OPEN || (c->flags & EM_CF_PAUSED))
        return;
    if (c->flags & (EM_CF_DGRAM | EM_CF_LAYER)) {
        if (c->flags & EM_CF_DGRAM)
            em__dgram_flush(c);
        else
            em__layer(c)->ops->flush(c);
        return;
    }
    if (!drain_queue(c) || (c->flags & EM_CF_SEND_LISTED))
        return;
    if (em__conn_pending(c)) {
        c->flags |= EM_CF_WRITE_WAITED;
        em__conn_update_interest(c);
        return;
    }
    em__conn_after_drain(c);
}

/* ------------------------------------------------------- public methods */

/* ------------------------------------------------ sending received bytes */

/* Bytes of the read buffer (an echo, a proxy, a broadcast of what was just
 * received) are queued without a copy: right after the receive_data call,
 * before the buffer is read into again, they are written, and only what the
 * kernel does not take is copied. A connection whose queue was empty keeps
 * them as a span of the buffer (EM_CF_SPAN), which grows while what it is
 * sent continues it: the echo of a read is then one send() and nothing
 * else; anything else sent turns the span into a queued chunk first. */
static bool borrowable(const em_conn *c, const void *data, size_t len)
{
    const em_reactor *r = c->r;
    const char *p = data;
    return r->recv_lo && p >= r->recv_lo && p + len <= r->recv_hi && !(c->flags & EM_CF_DGRAM);
}

static unsigned borrower_index(const em_reactor *r, const em_conn *c)
{
    unsigned i = 0;
    while (i < r->borrower_count && r->borrowers[i] != c)
        i++;
    return i;
}

static int unspan(em_conn *c)
{
    em_reactor *r = c->r;
    struct em_span *s = &r->spans[borrower_index(r, c)];
    int err = em__outq_borrow(r, &c->out, s->p, s->len);
    if (!err)
        c->flags &= ~(uint32_t)EM_CF_SPAN;
    return err;
}

void em__conn_unspan(em_conn *c)
{
    if ((c->flags & EM_CF_SPAN) && unspan(c) < 0)
        em__conn_fail(c, ENOMEM);
}

static int queue_borrowed(em_conn *c, const char *data, size_t len)
{
    em_reactor *r = c->r;
    unsigned i = borrower_index(r, c);
    if (i == EM_MAX_BORROWERS) /* no room to remember it: copy */
        return em__outq_append(r, &c->out, data, len);
    if (i == r->borrower_count && !em__outq_bytes(&c->out) && !(c->flags & EM_CF_LAYER)) {
        r->spans[i] = (struct em_span){.p = data, .len = len};
        r->borrowers[r->borrower_count++] = c;
        c->flags |= EM_CF_SPAN;
        return 0;
    }
    if (c->flags & EM_CF_SPAN) {
        struct em_span *s = &r->spans[i];
        if (s->p + s->len == data) {
            s->len += len;
            return 0;
        }
        int err = unspan(c);
        if (err)
            return err;
    }
    int err = em__outq_borrow(r, &c->out, data, len);
    if (!err && i == r->borrower_count)
        r->borrowers[r->borrower_count++] = c;
    return err;
}

static void settle(em_conn *c)
{
    if (c->flags & EM_CF_LAYER) {
        em__conn_flush(c);
        if (em__outq_own(c->r, &c->out) < 0)
            em__conn_fail(c, ENOMEM);
        return;
    }
    if (c->state == EM_CS_OPEN && !(c->flags & EM_CF_PAUSED) && !drain_queue(c))
        return; /* failed: the queue is gone */
    if (em__conn_pending(c) && c->state == EM_CS_OPEN && !(c->flags & EM_CF_PAUSED) &&
        !(c->flags & EM_CF_SEND_LISTED)) {
        c->flags |= EM_CF_WRITE_WAITED;
        em__conn_update_interest(c);
    }
    if ((c->flags & EM_CF_SEND_LISTED) && c->r->recv_kept) {
        c->flags |= EM_CF_LENT; /* to the phase's sends, as a span is (settle_span) */
        return;
    }
    if (em__outq_own(c->r, &c->out) < 0)
        em__conn_fail(c, ENOMEM);
    else
        c->flags &= ~(uint32_t)EM_CF_LENT;
}

/* Was never on the flush list: goes there only for what a flush must do. */
static void settle_span(em_conn *c, struct em_span s)
{
    c->flags &= ~(uint32_t)EM_CF_SPAN;
    bool writable = c->state == EM_CS_OPEN && !(c->flags & EM_CF_PAUSED);
    /* It goes with the phase's other sends, lent, where its buffer lasts
     * until the next wait; where the buffer is read into again, copied if
     * small, and a large one written now: its copy costs more than a call. */
    bool plain = em__sends_plain(c);
    bool lendable = plain && c->r->recv_kept;
    bool by_backend = lendable || (plain && s.len <= SEND_COPY_MAX);
    size_t done = 0;
    if (writable && !by_backend) {
        struct iovec v = {.iov_base = (void *)s.p, .iov_len = s.len};
        ssize_t n = write_iov(c, &v, 1, false);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            em__conn_fail(c, errno);
            return;
        }
        if (n > 0)
            em__conn_sent(c, done = (size_t)n);
    }
    if (done == s.len) {
        if (c->flags & (EM_CF_CLOSE_AFTER_WRITE | EM_CF_SHUT_WR_PENDING))
            em__conn_mark_dirty(c);
        return;
    }
    bool lent = writable && lendable;
    int err = lent ? em__outq_borrow(c->r, &c->out, s.p + done, s.len - done)
                   : em__outq_append(c->r, &c->out, s.p + done, s.len - done);
    if (err < 0) {
        em__conn_fail(c, ENOMEM);
    } else if (writable && by_backend && em__sends_take(c)) {
        if (lent)
            c->flags |= EM_CF_LENT;
        return;
    } else if (lent && em__outq_own(c->r, &c->out) < 0) {
        em__conn_fail(c, ENOMEM);
    } else if (writable) {
        c->flags |= EM_CF_WRITE_WAITED;
        em__conn_update_interest(c);
    } else {
        em__conn_mark_dirty(c);
    }
}

void em__conn_settle_borrowed(em_reactor *r)
{
    for (unsigned i = 0; i < r->borrower_count; i++) {
        em_conn *c = r->borrowers[i];
        if (c->flags & EM_CF_SPAN)
            settle_span(c, r->spans[i]);
        else
            settle(c);
    }
    r->borrower_count = 0;
}

/* Outside receive_data the buffer's bytes are not borrowed: a span made
 * then would wait for some later read to be written. */
static void receive(em_conn *c, const char *data, size_t n, bool kept)
{
    em_reactor *r = c->r;
    if (c->h->receive_data) {
        r->recv_lo = data;
        r->recv_hi = data + n;
        r->recv_kept = kept;
        c->h->receive_data(c, data, n);
        r->recv_lo = r->recv_hi = NULL;
    }
    if (r->borrower_count)
        em__conn_settle_borrowed(r);
    r->recv_kept = false;
}

void em__conn_receive(em_conn *c, const char *data, size_t n) { receive(c, data, n, false); }

void em__conn_receive_kept(em_conn *c, const char *data, size_t n) { receive(c, data, n, true); }

static bool over_limit(const em_conn *c, size_t len)
{
    size_t limit = c->cold->out_limit, queued = em__conn_pending(c);
    return len > limit || queued > limit - len;
}

/* limited: the user's em_send_data, which the outbound limit bounds; a
 * proxy's target takes what its source reads (its bound is the proxy's). */
static int send_data(em_conn *c, const void *data, size_t len, bool limited)
{
    if (!c || (!data && len))
        return -EINVAL;
    if (!em__conn_takes_data(c))
        return -ENOTCONN;
    if (c->flags & (EM_CF_WATCH | EM_CF_DGRAM | EM_CF_OUT_LIMIT)) {
        if (c->flags & EM_CF_WATCH)
            return -EINVAL;
        if (c->flags & EM_CF_DGRAM)
            return em__dgram_send_reply(c, data, len);
        if (limited && len && over_limit(c, len))
            return -ENOBUFS;
    }
    if (!len)
        return 0;
    int err;
    if (borrowable(c, data, len)) {
        err = queue_borrowed(c, data, len);
        if (err || (c->flags & EM_CF_SPAN))
            return err; /* a span is written by the settle, not the flush */
    } else {
        err = (c->flags & EM_CF_SPAN) ? unspan(c) : 0;
        if (!err)
            err = em__outq_append(c->r, &c->out, data, len);
        if (err)
            return err;
    }
    em__conn_mark_dirty(c);
    return 0;
}

int em_send_data(em_conn *c, const void *data, size_t len) { return send_data(c, data, len, true); }

int em__conn_send(em_conn *c, const void *data, size_t len)
{
    return send_data(c, data, len, false);
}

int em_set_outbound_limit(em_conn *c, size_t max_bytes)
{
    if (!c || (c->flags & (EM_CF_WATCH | EM_CF_DGRAM)))
        return -EINVAL;
    if (!max_bytes) {
        c->flags &= ~(uint32_t)EM_CF_OUT_LIMIT;
        if (c->cold)
            c->cold->out_limit = 0;
        return 0;
    }
    if (!em__conn_cold(c))
        return -ENOMEM;
    c->cold->out_limit = max_bytes;
    c->flags |= EM_CF_OUT_LIMIT;
    return 0;
}

size_t em_get_outbound_limit(const em_conn *c)
{
    return c && (c->flags & EM_CF_OUT_LIMIT) ? c->cold->out_limit : 0;
}

int em_close_connection(em_conn *c, bool after_writing)
{
    if (!c)
        return -EINVAL;
    if (!em__conn_usable(c))
        return 0;
    /* a layer may have its own last words to write (close_notify); a
     * paused connection writes nothing, and closes now when nothing waits */
    bool layer_words = (c->flags & (EM_CF_LAYER | EM_CF_PAUSED)) == EM_CF_LAYER;
    if (after_writing && (em__conn_pending(c) || layer_words)) {
        c->flags |= EM_CF_CLOSE_AFTER_WRITE;
        em__conn_mark_dirty(c);
        return 0;
    }
    em__conn_fail(c, 0);
    return 0;
}

int em_close_connection_after_writing(em_conn *c) { return em_close_connection(c, true); }

int em_close_write(em_conn *c)
{
    if (!c)
        return -EINVAL;
    if (c->flags & (EM_CF_DGRAM | EM_CF_WATCH))
        return -EINVAL;
    if (c->flags & EM_CF_NOT_SOCKET)
        return -ENOTSOCK;
    if (!em__conn_usable(c) || (c->flags & (EM_CF_CLOSE_AFTER_WRITE | EM_CF_WR_SHUT)))
        return -ENOTCONN;
    c->flags |= EM_CF_SHUT_WR_PENDING;
    em__conn_mark_dirty(c);
    return 0;
}

int em_detach(em_conn *c)
{
    if (!c)
        return -EINVAL;
    if (!em__conn_usable(c) || c->io.fd < 0)
        return -ENOTCONN;
    if (!em__conn_cold(c)) /* where bytes read ahead would wait */
        return -ENOMEM;
    int fd = c->io.fd;
    c->flags |= EM_CF_DETACHED;
    em__conn_fail(c, 0);
    return fd;
}

int em_pause(em_conn *c)
{
    if (!c)
        return -EINVAL;
    if (!em__conn_usable(c))
        return -ENOTCONN;
    c->flags |= EM_CF_PAUSED;
    em__conn_update_interest(c);
    return 0;
}

int em_resume(em_conn *c)
{
    if (!c)
        return -EINVAL;
    if (!em__conn_usable(c))
        return -ENOTCONN;
    if (!(c->flags & EM_CF_PAUSED))
        return 0;
    c->flags &= (uint32_t)~EM_CF_PAUSED;
    em__conn_update_interest(c);
    if (em__conn_pending(c) || (c->flags & EM_CF_SHUT_WR_PENDING) ||
        ((c->flags & EM_CF_CLOSE_AFTER_WRITE) && !em__conn_pending(c)))
        em__conn_mark_dirty(c);
    return 0;
}

bool em_is_paused(const em_conn *c) { return c && (c->flags & EM_CF_PAUSED); }

int em_error(const em_conn *c) { return c ? c->reason : EINVAL; }

size_t em__conn_pending(const em_conn *c)
{
    if (c->flags & EM_CF_DGRAM)
        return em__dgram_bytes(c);
    size_t n = em__outq_bytes(&c->out);
    if (c->flags & EM_CF_SPAN)
        n += c->r->spans[borrower_index(c->r, c)].len;
    return n;
}

size_t em_get_outbound_data_size(const em_conn *c) { return c ? em__conn_pending(c) : 0; }
