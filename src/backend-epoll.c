/* The epoll poller: level-triggered, one registration per descriptor, changed
 * only when a connection's interest changes (pause, partial write).
 *
 * A connection's socket is closed without EPOLL_CTL_DEL: the close ends the
 * registration, one system call fewer per connection. That holds only while
 * no other descriptor refers to the socket; after a fork, or a dup() of
 * em_conn_fd, the registration outlives the connection. So an event names a
 * connection by its signature, never by its address: a signature that no
 * longer names a registered connection marks a registration that outlived
 * it, which is not reported, and the set is rebuilt without it (it cannot
 * be removed by itself: this process may hold no descriptor of that file). */
#include "em-internal.h"

#include <sys/epoll.h>
#include <unistd.h>

static uint32_t to_epoll(unsigned interest)
{
    return (interest & EM_EV_READ ? EPOLLIN : 0) | (interest & EM_EV_WRITE ? EPOLLOUT : 0);
}

static int ep_init(em_reactor *r)
{
    r->be.ep.outer = -1;
    r->be.ep.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (r->be.ep.epfd < 0)
        return -errno;
    int err = em__fd_claim(r, r->be.ep.epfd);
    if (err) {
        close(r->be.ep.epfd);
        r->be.ep.epfd = -1;
    }
    return err;
}

static void ep_destroy(em_reactor *r)
{
    if (r->be.ep.outer >= 0)
        close(r->be.ep.outer);
    if (r->be.ep.epfd >= 0)
        close(r->be.ep.epfd);
    r->be.ep.epfd = r->be.ep.outer = -1;
}

/* Connections: signature << 1 | 1. Everything else lives as long as its
 * registration and is named by its (even) address. */
static uint64_t token_of(em_io *io)
{
    if (io->type == EM_IO_CONN)
        return EM_CONTAINER_OF(io, em_conn, io)->sig << 1 | 1;
    return (uint64_t)(uintptr_t)io;
}

/* NULL: the registration outlived what it was made for. */
static em_io *io_of(em_reactor *r, uint64_t token)
{
    if (!(token & 1))
        return (em_io *)(uintptr_t)token;
    em_conn *c = em__sigmap_get(&r->sigmap, token >> 1);
    return c && c->io.registered ? &c->io : NULL;
}

static int ctl(int epfd, int op, em_io *io, unsigned interest)
{
    struct epoll_event ev = {.events = to_epoll(interest), .data.u64 = token_of(io)};
    return epoll_ctl(epfd, op, io->fd, &ev) < 0 ? -errno : 0;
}

static int ep_ctl(em_reactor *r, int op, em_io *io, unsigned interest)
{
    return ctl(r->be.ep.epfd, op, io, interest);
}

typedef struct {
    int epfd;
    int err; /* the kernel is short of memory or watches: try again later */
} rebuild_ctx;

/* A descriptor the kernel refuses for good (closed behind libem's back)
 * is dropped, its connection closed with the error, rather than keep the
 * whole set from being rebuilt. */
static void add_again(em_io *io, void *arg)
{
    rebuild_ctx *ctx = arg;
    if (ctx->err)
        return;
    int err = ctl(ctx->epfd, EPOLL_CTL_ADD, io, io->interest);
    if (err == -ENOMEM || err == -ENOSPC) {
        ctx->err = err;
    } else if (err && io->type == EM_IO_CONN) {
        em__conn_fail(EM_CONTAINER_OF(io, em_conn, io), -err);
    } else if (err) {
        io->registered = false;
        io->interest = 0;
    }
}

static int watch_inner(int outer, int epfd)
{
    struct epoll_event ev = {.events = EPOLLIN};
    return epoll_ctl(outer, EPOLL_CTL_ADD, epfd, &ev) < 0 ? -errno : 0;
}

/* A new set with every live registration replaces the old one. 0, or a
 * negative errno with the old set still in place. */
static int rebuild(em_reactor *r)
{
    rebuild_ctx ctx = {.epfd = epoll_create1(EPOLL_CLOEXEC)};
    if (ctx.epfd < 0)
        return -errno;
    ctx.err = em__fd_claim(r, ctx.epfd);
    em__io_each_registered(r, add_again, &ctx);
    int outer = r->be.ep.outer;
    if (!ctx.err && outer >= 0 && !(ctx.err = watch_inner(outer, ctx.epfd)))
        epoll_ctl(outer, EPOLL_CTL_DEL, r->be.ep.epfd, NULL);
    if (ctx.err) {
        em__fd_release(r, ctx.epfd);
        close(ctx.epfd);
        return ctx.err;
    }
    em__fd_release(r, r->be.ep.epfd);
    close(r->be.ep.epfd);
    r->be.ep.epfd = ctx.epfd;
    return 0;
}

static int ep_add(em_reactor *r, em_io *io, unsigned interest)
{
    return ep_ctl(r, EPOLL_CTL_ADD, io, interest);
}

static int ep_modify(em_reactor *r, em_io *io, unsigned interest)
{
    return ep_ctl(r, EPOLL_CTL_MOD, io, interest);
}

static int ep_del(em_reactor *r, em_io *io)
{
    return ep_ctl(r, EPOLL_CTL_DEL, io, 0);
}

static int ep_wait(em_reactor *r, int timeout_ms, em_event *out, int max)
{
    struct epoll_event evs[EM_MAX_EVENTS];
    if (max > EM_MAX_EVENTS)
        max = EM_MAX_EVENTS;
    int n = epoll_wait(r->be.ep.epfd, evs, max, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    int kept = 0;
    for (int i = 0; i < n; i++) {
        em_io *io = io_of(r, evs[i].data.u64);
        if (!io)
            continue;
        uint32_t e = evs[i].events;
        out[kept].io = io;
        out[kept++].events = (e & EPOLLIN ? EM_EV_READ : 0) | (e & EPOLLOUT ? EM_EV_WRITE : 0) |
                             (e & EPOLLERR ? EM_EV_ERROR : 0) | (e & EPOLLHUP ? EM_EV_HUP : 0);
    }
    /* Not rebuilt (out of descriptors or memory), the leftover is reported
     * at once again: -EAGAIN makes em_run pause before the next try. */
    if (kept < n && rebuild(r) < 0 && kept == 0)
        return -EAGAIN;
    return kept;
}

/* Not the set itself but a set holding it, so that the descriptor a user
 * embeds stays the same when the set is rebuilt. */
static int ep_fd(em_reactor *r)
{
    if (r->be.ep.outer >= 0)
        return r->be.ep.outer;
    int outer = epoll_create1(EPOLL_CLOEXEC);
    if (outer < 0)
        return -errno;
    int err = em__fd_claim(r, outer);
    if (!err)
        err = watch_inner(outer, r->be.ep.epfd);
    if (err) {
        em__fd_release(r, outer);
        close(outer);
        return err;
    }
    return r->be.ep.outer = outer;
}

const em_backend em__backend_epoll = {
    .name = "epoll",
    .init = ep_init,
    .destroy = ep_destroy,
    .add = ep_add,
    .modify = ep_modify,
    .del = ep_del,
    .wait = ep_wait,
    .fd = ep_fd,
    .close_unregisters = true,
};
