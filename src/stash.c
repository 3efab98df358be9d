/* Bytes read ahead. A completion backend reads for a connection before
 * the connection asks; when it then stops reading (a pause, TLS or a proxy
 * started, a detach) what was already read waits here, and the
 * connection's next reads take it before the socket's bytes. Rare, so it
 * costs nothing until used: a pointer in the cold part. */
#include "em-internal.h"

#include <errno.h>
#include <string.h>

#define STASH_EOF (-1)

typedef struct em_stash {
    size_t head, len, cap;
    int end; /* 0: more may follow; STASH_EOF: the peer's FIN; else an errno */
    char data[];
} em_stash;

/* Where no stash could be made: the connection fails with ENOMEM when it
 * reads, rather than read on past a hole in its stream. */
static em_stash out_of_memory = {.end = ENOMEM};

static em_stash *room_for(em_conn *c, size_t n)
{
    em_stash *s = c->cold->stash;
    if (s == &out_of_memory)
        return NULL;
    if (s && s->head) { /* bytes read are not kept: a pause after a pause must not grow it */
        memmove(s->data, s->data + s->head, s->len - s->head);
        s->len -= s->head;
        s->head = 0;
    }
    size_t used = s ? s->len : 0;
    if (s && used + n <= s->cap)
        return s;
    size_t cap = s ? s->cap * 2 : 4096;
    while (cap < used + n)
        cap *= 2;
    em_stash *grown = em__realloc(s, sizeof *grown + cap);
    if (!grown) {
        if (s)
            s->end = ENOMEM;
        else
            c->cold->stash = &out_of_memory;
        return NULL;
    }
    if (!s)
        *grown = (em_stash){0};
    grown->cap = cap;
    return c->cold->stash = grown;
}

void em__conn_stash(em_conn *c, const char *data, int res)
{
    if (!em__conn_keeps_input(c) || res == -ENOBUFS || res == -ECANCELED)
        return;
    if (!em__conn_cold(c)) { /* no hole in the stream: the connection fails */
        if (!c->reason)
            c->reason = ENOMEM;
        if (c->state == EM_CS_OPEN) {
            c->flags |= EM_CF_INPUT_LOST;
            em__conn_mark_dirty(c);
        }
        return;
    }
    em_stash *s = c->cold->stash;
    if (s && s->end)
        return; /* nothing follows a FIN or an error */
    if (!(s = room_for(c, res > 0 ? (size_t)res : 0)))
        return;
    if (res > 0) {
        memcpy(s->data + s->len, data, (size_t)res);
        s->len += (size_t)res;
    } else {
        s->end = res ? -res : STASH_EOF;
    }
    if (c->state == EM_CS_OPEN)
        em__conn_mark_dirty(c); /* fed there if it reads by then */
}

ssize_t em__stash_read(em_conn *c, char *buf, size_t len)
{
    em_stash *s = c->cold->stash;
    size_t n = s->len - s->head;
    if (n > len)
        n = len;
    if (n) {
        memcpy(buf, s->data + s->head, n);
        s->head += n;
        if (s->head == s->len && !s->end)
            em__stash_free(c);
        return (ssize_t)n;
    }
    int end = s->end;
    em__stash_free(c);
    if (end == STASH_EOF)
        return 0;
    errno = end ? end : EAGAIN;
    return -1;
}

void em__stash_free(em_conn *c)
{
    if (!c->cold || !c->cold->stash)
        return;
    if (c->cold->stash != &out_of_memory)
        em__free(c->cold->stash);
    c->cold->stash = NULL;
}
