/* The outbound queue of a connection. Chunks are recycled through the
 * reactor's caches, so a connection that drains holds no memory and
 * steady-state sending allocates nothing. */
#include "em-internal.h"

#include <string.h>

/* A feed's chunk has no base and holds a pointer to the feed. */
static bool is_feed(const em_chunk *k) { return !k->base; }
static em_feed *feed_of(const em_chunk *k) { return *(em_feed *const *)(const void *)k->data; }

/* A borrowed chunk is a bare one whose base points elsewhere. */
static bool borrowed(const em_chunk *k) { return k->base && k->base != k->data; }

static em_chunk_cache *cache_for(em_reactor *r, const em_chunk *k)
{
    if (borrowed(k))
        return &r->bare_chunks;
    return k->cap == EM_CHUNK_SMALL ? &r->small_chunks : &r->large_chunks;
}

/* A chunk from cache, or a new one with room for cap bytes. */
static em_chunk *cached_or_new(em_chunk_cache *cache, size_t cap)
{
    em_chunk *k = cache->head;
    if (!k)
        return em__malloc(sizeof *k + cap);
    cache->head = k->next;
    cache->len--;
    return k;
}

/* A queue that already holds data is waiting on the kernel: it grows in
 * large chunks so that each write carries as much as possible. */
static em_chunk *chunk_get(em_reactor *r, size_t need, bool growing)
{
    size_t cap = need <= EM_CHUNK_SMALL && !growing ? EM_CHUNK_SMALL : EM_CHUNK_LARGE;
    em_chunk *k = cached_or_new(cap == EM_CHUNK_SMALL ? &r->small_chunks : &r->large_chunks, cap);
    if (!k)
        return NULL;
    k->cap = cap;
    k->base = k->data;
    k->next = NULL;
    k->head = k->tail = 0;
    return k;
}

static void chunk_put(em_reactor *r, em_chunk *k)
{
    if (is_feed(k)) {
        feed_of(k)->ops->release(feed_of(k), r, k->head == k->tail);
        em__free(k);
        return;
    }
    em_chunk_cache *cache = cache_for(r, k);
    size_t cap = cache == &r->bare_chunks    ? 1
                 : cache == &r->small_chunks ? EM_CHUNK_SMALL
                                             : EM_CHUNK_LARGE;
    if (!cache->max)
        cache->max = EM_CHUNK_CACHE_BYTES / (unsigned)(sizeof *k + cap);
    if (cache->len < cache->max) {
        k->next = cache->head;
        cache->head = k;
        cache->len++;
    } else {
        em__free(k);
    }
}

static void chain_put(em_reactor *r, em_chunk *k)
{
    while (k) {
        em_chunk *next = k->next;
        chunk_put(r, k);
        k = next;
    }
}

void em__chunk_cache_free(em_reactor *r)
{
    em_chunk_cache *caches[] = {&r->small_chunks, &r->large_chunks, &r->bare_chunks};
    for (size_t i = 0; i < sizeof caches / sizeof *caches; i++) {
        while (caches[i]->head) {
            em_chunk *k = caches[i]->head;
            caches[i]->head = k->next;
            em__free(k);
        }
        caches[i]->len = 0;
    }
}

/* Chunks for len bytes, linked, or NULL with nothing taken. */
static em_chunk *chain_get(em_reactor *r, size_t len, bool growing, em_chunk **last)
{
    em_chunk *first = NULL, *tail = NULL;
    while (len) {
        em_chunk *k = chunk_get(r, len, growing);
        if (!k) {
            chain_put(r, first);
            return NULL;
        }
        if (tail)
            tail->next = k;
        else
            first = k;
        tail = k;
        len -= len < k->cap ? len : k->cap;
    }
    *last = tail;
    return first;
}

static const char *fill(em_chunk *k, const char *p, size_t *len)
{
    size_t n = k->cap - k->tail;
    if (n > *len)
        n = *len;
    memcpy(k->base + k->tail, p, n);
    k->tail += n;
    *len -= n;
    return p + n;
}

static void link_chain(em_outq *q, em_chunk *first, em_chunk *last, size_t len)
{
    em_chunk *tail = q->head ? q->head->q_tail : NULL;
    if (tail) {
        tail->next = first;
    } else {
        q->head = first;
        first->q_bytes = 0;
    }
    q->head->q_tail = last;
    q->head->q_bytes += len;
}

int em__outq_append(em_reactor *r, em_outq *q, const void *data, size_t len)
{
    const char *p = data;
    em_chunk *tail = q->head ? q->head->q_tail : NULL;
    em_chunk *last = tail && !is_feed(tail) ? tail : NULL; /* one with room, maybe */
    size_t room = last ? last->cap - last->tail : 0;
    size_t rest = len > room ? len - room : 0;
    em_chunk *extra_last = NULL;
    em_chunk *extra = rest ? chain_get(r, rest, tail != NULL, &extra_last) : NULL;
    if (rest && !extra)
        return -ENOMEM; /* nothing queued: all or nothing */
    size_t left = len;
    if (last)
        p = fill(last, p, &left);
    for (em_chunk *k = extra; k; k = k->next)
        p = fill(k, p, &left);
    if (extra)
        link_chain(q, extra, extra_last, len);
    else
        q->head->q_bytes += len;
    return 0;
}

/* Queues bytes of a read buffer without copying them; the caller makes
 * sure they are written or copied (em__outq_own) before the buffer is
 * read into again (read_buf: the next read; a provided buffer: the next
 * wait). */
int em__outq_borrow(em_reactor *r, em_outq *q, const char *data, size_t len)
{
    /* a byte of its own: no bytes borrowed can start at its data */
    em_chunk *k = cached_or_new(&r->bare_chunks, 1);
    if (!k)
        return -ENOMEM;
    k->base = (char *)data;
    k->next = NULL;
    k->head = 0;
    k->cap = k->tail = len;
    link_chain(q, k, k, len);
    return 0;
}

/* Replaces every borrowed chunk by owned copies of its unsent bytes. */
int em__outq_own(em_reactor *r, em_outq *q)
{
    em_chunk **link = &q->head;
    size_t total = em__outq_bytes(q);
    em_chunk *last = q->head ? q->head->q_tail : NULL;
    while (*link) {
        em_chunk *k = *link;
        if (!borrowed(k)) {
            link = &k->next;
            continue;
        }
        size_t n = k->tail - k->head;
        em_chunk *copy_last = NULL, *copy = chain_get(r, n, true, &copy_last);
        if (!copy)
            return -ENOMEM;
        const char *p = k->base + k->head;
        for (em_chunk *c = copy; c; c = c->next)
            p = fill(c, p, &n);
        copy_last->next = k->next;
        if (last == k)
            last = copy_last;
        *link = copy;
        chunk_put(r, k);
        link = &copy_last->next;
    }
    if (q->head) {
        q->head->q_bytes = total;
        q->head->q_tail = last;
    }
    return 0;
}

/* A feed whose bytes are all ahead of it in memory (put_ahead) only waits
 * to hear they were written: the bytes go on past it. */
static bool blocks(const em_chunk *k) { return is_feed(k) && k->head < k->tail; }

int em__outq_iov(const em_outq *q, struct iovec *iov, int max, bool *feed_next)
{
    int n = 0;
    em_chunk *k = q->head;
    for (; k && n < max && !blocks(k); k = k->next) {
        if (is_feed(k))
            continue;
        iov[n].iov_base = k->base + k->head;
        iov[n].iov_len = k->tail - k->head;
        n++;
    }
    if (feed_next)
        *feed_next = k && blocks(k);
    return n;
}

size_t em__outq_copy(const em_outq *q, char *dst, size_t max)
{
    size_t n = 0;
    for (em_chunk *k = q->head; k && n < max && !blocks(k); k = k->next) {
        if (is_feed(k))
            continue;
        size_t take = k->tail - k->head < max - n ? k->tail - k->head : max - n;
        memcpy(dst + n, k->base + k->head, take);
        n += take;
    }
    return n;
}

void em__outq_consume(em_reactor *r, em_outq *q, size_t n)
{
    size_t left = q->head->q_bytes - n;
    em_chunk *last = q->head->q_tail;
    for (;;) {
        em_chunk *k = q->head;
        size_t avail = k ? k->tail - k->head : 0;
        if (!k || n < avail || (!n && avail)) {
            if (k)
                k->head += n;
            break;
        }
        /* written whole; an emptied feed behind them goes too */
        n -= avail;
        k->head = k->tail; /* a feed hears it was written whole */
        q->head = k->next;
        chunk_put(r, k);
    }
    if (q->head) {
        q->head->q_bytes = left;
        q->head->q_tail = last;
    }
}

void em__outq_clear(em_reactor *r, em_outq *q)
{
    chain_put(r, q->head);
    q->head = NULL;
}

/* ---------------------------------------------------------------- feeds */

int em__outq_feed(em_reactor *r, em_outq *q, em_feed *f, size_t len)
{
    EM_UNUSED(r);
    em_chunk *k = em__malloc(sizeof *k + sizeof f);
    if (!k)
        return -ENOMEM;
    *k = (em_chunk){.base = NULL, .tail = len, .cap = len};
    memcpy(k->data, &f, sizeof f);
    link_chain(q, k, k, len);
    return 0;
}

bool em__outq_feed_grow(em_outq *q, em_feed *f, size_t len)
{
    if (!em__outq_feed_is_last(q, f))
        return false;
    em_chunk *last = q->head->q_tail;
    last->tail += len;
    last->cap = last->tail;
    q->head->q_bytes += len;
    return true;
}

bool em__outq_feed_is_last(const em_outq *q, const em_feed *f)
{
    const em_chunk *last = q->head ? q->head->q_tail : NULL;
    return last && is_feed(last) && feed_of(last) == f;
}

bool em__outq_has_feed(const em_outq *q)
{
    for (const em_chunk *k = q->head; k; k = k->next)
        if (is_feed(k))
            return true;
    return false;
}

/* sendfile and splice take at most this much per call anyway */
#define FEED_SEND_MAX ((size_t)1 << 30)

ssize_t em__outq_send_feed(const em_outq *q, int fd, bool more, size_t *asked)
{
    em_chunk *k = q->head;
    size_t left = k->tail - k->head;
    *asked = left < FEED_SEND_MAX ? left : FEED_SEND_MAX;
    return feed_of(k)->ops->send(feed_of(k), k->head, fd, asked, more);
}

/* The chunk m of memory goes in front of the feed's chunk k, the head. A
 * feed that gave all it had stays behind it, empty, until m is written:
 * its end is heard once its bytes are written, not read. */
static void put_ahead(em_outq *q, em_chunk *m, em_chunk *k)
{
    m->q_bytes = k->q_bytes;
    m->q_tail = k->q_tail;
    m->next = k;
    q->head = m;
}

int em__outq_materialize(em_reactor *r, em_outq *q, size_t max)
{
    em_chunk *k = q->head;
    if (!k || !blocks(k))
        return 0;
    em_chunk *m = chunk_get(r, 0, true);
    if (!m)
        return -ENOMEM;
    size_t want = k->tail - k->head;
    if (want > max)
        want = max;
    if (want > m->cap)
        want = m->cap;
    ssize_t n = feed_of(k)->ops->read(feed_of(k), k->head, m->base, want);
    if (n <= 0) {
        int err = n < 0 ? errno : EIO;
        chunk_put(r, m);
        return -err;
    }
    m->tail = (size_t)n;
    k->head += (size_t)n;
    put_ahead(q, m, k);
    return 0;
}
