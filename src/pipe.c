/* Pipes for splicing proxies: bytes spliced from a source socket into a
 * pipe wait there, as a feed of the target's queue (see em_feed), until
 * splice moves them on to the target's socket. They never enter user
 * space.
 *
 * A pipe belongs to a target only while it holds bytes for it: once the
 * last of them is written the pipe goes back to the reactor's pool, so an
 * idle proxy pair holds no pipe. The pool keeps at most EM_PIPE_POOL idle
 * pipes (two descriptors each) per reactor; beyond that a drained pipe is
 * closed. A target that closes with bytes still in its pipe closes it. */
#include "em-internal.h"

#include <fcntl.h>
#include <unistd.h>

struct em_pipe {
    em_feed feed;
    int rd, wr;
    size_t bytes;     /* in the pipe, queued on its owner */
    size_t cap;       /* its size; splice may find it full sooner */
    unsigned chunks;  /* the owner's queue chunks that stand for it */
    em_pipe **owner;  /* the owner's slot (cold->pipe) */
    em_pipe *next;    /* in the pool */
};

static em_pipe *pipe_of(em_feed *f) { return EM_CONTAINER_OF(f, em_pipe, feed); }

static void pipe_close(em_pipe *p)
{
    close(p->rd);
    close(p->wr);
    em__free(p);
}

static ssize_t pipe_send(em_feed *f, size_t pos, int fd, size_t *max, bool more)
{
    EM_UNUSED(pos);
    em_pipe *p = pipe_of(f);
    unsigned flags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE | (more ? SPLICE_F_MORE : 0);
    ssize_t n;
    do
        n = splice(p->rd, NULL, fd, NULL, *max, flags);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        p->bytes -= (size_t)n;
    else if (n == 0)
        errno = EIO; /* the pipe lost bytes it was given: never expected */
    return n;
}

static ssize_t pipe_read(em_feed *f, size_t pos, char *buf, size_t max)
{
    EM_UNUSED(pos);
    em_pipe *p = pipe_of(f);
    ssize_t n;
    do
        n = read(p->rd, buf, max);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        p->bytes -= (size_t)n;
    return n;
}

static void pool_put(em_reactor *r, em_pipe *p)
{
    if (r->pipes_idle >= EM_PIPE_POOL || r->freeing) {
        pipe_close(p);
        return;
    }
    p->next = r->pipes;
    r->pipes = p;
    r->pipes_idle++;
}

/* Its last chunk left the owner's queue: written (then it is empty) or
 * dropped by a close (then what it still holds is garbage). */
static void pipe_release(em_feed *f, em_reactor *r, bool written)
{
    EM_UNUSED(written);
    em_pipe *p = pipe_of(f);
    if (--p->chunks)
        return;
    *p->owner = NULL;
    if (p->bytes)
        pipe_close(p);
    else
        pool_put(r, p);
}

static const em_feed_ops pipe_ops = {.send = pipe_send, .read = pipe_read, .release = pipe_release};

static em_pipe *pipe_new(void)
{
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return NULL;
    em_pipe *p = em__calloc(1, sizeof *p);
    if (!p) {
        close(fds[0]);
        close(fds[1]);
        return NULL;
    }
    *p = (em_pipe){.feed.ops = &pipe_ops, .rd = fds[0], .wr = fds[1]};
    /* a larger pipe moves more per splice; past the user's pipe quota the
     * kernel refuses, and the default size does */
    int size = fcntl(p->wr, F_SETPIPE_SZ, EM_PIPE_SIZE);
    if (size < 0)
        size = fcntl(p->wr, F_GETPIPE_SZ);
    p->cap = size > 0 ? (size_t)size : 4096;
    return p;
}

em_pipe *em__pipe_take(em_reactor *r, em_pipe **owner)
{
    if (*owner)
        return *owner;
    em_pipe *p = r->pipes;
    if (p) {
        r->pipes = p->next;
        r->pipes_idle--;
    } else if (!(p = pipe_new())) {
        return NULL;
    }
    p->owner = owner;
    p->next = NULL;
    return *owner = p;
}

/* Taken, and nothing went into it. */
void em__pipe_untake(em_reactor *r, em_pipe *p)
{
    if (p->chunks || p->bytes)
        return;
    *p->owner = NULL;
    pool_put(r, p);
}

size_t em__pipe_room(const em_pipe *p) { return p->bytes < p->cap ? p->cap - p->bytes : 0; }
bool em__pipe_empty(const em_pipe *p) { return !p->bytes; }

ssize_t em__pipe_fill(em_pipe *p, int fd, size_t max)
{
    ssize_t n;
    do
        n = splice(fd, NULL, p->wr, NULL, max, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    while (n < 0 && errno == EINTR);
    return n;
}

int em__pipe_queue(em_reactor *r, em_pipe *p, em_outq *q, size_t n)
{
    p->bytes += n;
    if (em__outq_feed_grow(q, &p->feed, n))
        return 0;
    int err = em__outq_feed(r, q, &p->feed, n);
    if (!err) {
        p->chunks++;
    } else if (!p->chunks) { /* its bytes are lost: the owner fails */
        *p->owner = NULL;
        pipe_close(p);
    }
    return err;
}

static void pipe_stand_in(em_pipe *p, int null_fd)
{
    dup3(null_fd, p->rd, O_CLOEXEC);
    dup3(null_fd, p->wr, O_CLOEXEC);
}

void em__pipes_stand_in(em_reactor *r, em_conn *c, int null_fd)
{
    if (!c) {
        for (em_pipe *p = r->pipes; p; p = p->next)
            pipe_stand_in(p, null_fd);
    } else if (c->cold && c->cold->pipe) {
        pipe_stand_in(c->cold->pipe, null_fd);
    }
}

void em__pipes_free(em_reactor *r)
{
    while (r->pipes) {
        em_pipe *p = r->pipes;
        r->pipes = p->next;
        pipe_close(p);
    }
    r->pipes_idle = 0;
}
