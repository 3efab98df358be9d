/* The epoll poller: level-triggered, one registration per descriptor, changed
 * only when a connection's interest changes (pause, partial write). */
#include "em-internal.h"

#include <sys/epoll.h>
#include <unistd.h>

static uint32_t to_epoll(unsigned interest)
{
    return (interest & EM_EV_READ ? EPOLLIN : 0) | (interest & EM_EV_WRITE ? EPOLLOUT : 0);
}

static int ep_init(em_reactor *r)
{
    r->be.epfd = epoll_create1(EPOLL_CLOEXEC);
    return r->be.epfd < 0 ? -errno : 0;
}

static void ep_destroy(em_reactor *r)
{
    if (r->be.epfd >= 0)
        close(r->be.epfd);
    r->be.epfd = -1;
}

static int ep_ctl(em_reactor *r, int op, em_io *io, unsigned interest)
{
    struct epoll_event ev = {.events = to_epoll(interest), .data.ptr = io};
    return epoll_ctl(r->be.epfd, op, io->fd, &ev) < 0 ? -errno : 0;
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
    int n = epoll_wait(r->be.epfd, evs, max, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        uint32_t e = evs[i].events;
        out[i].io = evs[i].data.ptr;
        out[i].events = (e & EPOLLIN ? EM_EV_READ : 0) | (e & EPOLLOUT ? EM_EV_WRITE : 0) |
                        (e & EPOLLERR ? EM_EV_ERROR : 0) | (e & EPOLLHUP ? EM_EV_HUP : 0);
    }
    return n;
}

static int ep_fd(const em_reactor *r) { return r->be.epfd; }

const em_backend em__backend_epoll = {
    .name = "epoll",
    .init = ep_init,
    .destroy = ep_destroy,
    .add = ep_add,
    .modify = ep_modify,
    .del = ep_del,
    .wait = ep_wait,
    .fd = ep_fd,
};
