/* The outbound queue of a connection. Standard chunks are recycled through
 * the reactor's cache, so a connection that drains holds no memory and
 * steady-state sending allocates nothing. */
#include "em-internal.h"

#include <string.h>

static em_chunk *chunk_get(em_reactor *r, size_t need)
{
    em_chunk *k;
    if (need <= EM_CHUNK_SIZE && r->chunk_cache) {
        k = r->chunk_cache;
        r->chunk_cache = k->next;
        r->chunk_cache_len--;
    } else {
        size_t cap = need > EM_CHUNK_SIZE ? need : EM_CHUNK_SIZE;
        k = em__malloc(sizeof *k + cap);
        if (!k)
            return NULL;
        k->cap = cap;
    }
    k->next = NULL;
    k->head = k->tail = 0;
    return k;
}

static void chunk_put(em_reactor *r, em_chunk *k)
{
    if (k->cap == EM_CHUNK_SIZE && r->chunk_cache_len < EM_CHUNK_CACHE_MAX) {
        k->next = r->chunk_cache;
        r->chunk_cache = k;
        r->chunk_cache_len++;
    } else {
        em__free(k);
    }
}

void em__chunk_cache_free(em_reactor *r)
{
    while (r->chunk_cache) {
        em_chunk *k = r->chunk_cache;
        r->chunk_cache = k->next;
        em__free(k);
    }
    r->chunk_cache_len = 0;
}

int em__outq_append(em_reactor *r, em_outq *q, const void *data, size_t len)
{
    const char *p = data;
    size_t room = q->tail ? q->tail->cap - q->tail->tail : 0;
    size_t first = len < room ? len : room;
    em_chunk *extra = NULL;
    if (len > first && !(extra = chunk_get(r, len - first)))
        return -ENOMEM; /* nothing queued: all or nothing */
    if (first) {
        memcpy(q->tail->data + q->tail->tail, p, first);
        q->tail->tail += first;
    }
    if (extra) {
        memcpy(extra->data, p + first, len - first);
        extra->tail = len - first;
        if (q->tail)
            q->tail->next = extra;
        else
            q->head = extra;
        q->tail = extra;
    }
    q->bytes += len;
    return 0;
}

int em__outq_iov(const em_outq *q, struct iovec *iov, int max)
{
    int n = 0;
    for (em_chunk *k = q->head; k && n < max; k = k->next) {
        iov[n].iov_base = k->data + k->head;
        iov[n].iov_len = k->tail - k->head;
        n++;
    }
    return n;
}

void em__outq_consume(em_reactor *r, em_outq *q, size_t n)
{
    q->bytes -= n;
    while (n) {
        em_chunk *k = q->head;
        size_t avail = k->tail - k->head;
        if (n < avail) {
            k->head += n;
            return;
        }
        n -= avail;
        q->head = k->next;
        if (!q->head)
            q->tail = NULL;
        chunk_put(r, k);
    }
}

void em__outq_clear(em_reactor *r, em_outq *q)
{
    while (q->head) {
        em_chunk *k = q->head;
        q->head = k->next;
        chunk_put(r, k);
    }
    q->tail = NULL;
    q->bytes = 0;
}
