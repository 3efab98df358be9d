/* The poll(2) poller: a dense pollfd array; each io remembers its slot, and a
 * removal moves the last slot into the hole. */
#include "em-internal.h"

static int pl_init(em_reactor *r)
{
    r->be.poll.fds = NULL;
    r->be.poll.ios = NULL;
    r->be.poll.len = r->be.poll.cap = 0;
    return 0;
}

static void pl_destroy(em_reactor *r)
{
    em__free(r->be.poll.fds);
    em__free(r->be.poll.ios);
    r->be.poll.fds = NULL;
    r->be.poll.ios = NULL;
    r->be.poll.len = r->be.poll.cap = 0;
}

static short to_poll(unsigned interest)
{
    return (short)((interest & EM_EV_READ ? POLLIN : 0) | (interest & EM_EV_WRITE ? POLLOUT : 0));
}

static int grow(em_reactor *r)
{
    int cap = r->be.poll.cap ? r->be.poll.cap * 2 : 64;
    struct pollfd *fds = em__realloc(r->be.poll.fds, (size_t)cap * sizeof *fds);
    if (!fds)
        return -ENOMEM;
    r->be.poll.fds = fds;
    em_io **ios = em__realloc(r->be.poll.ios, (size_t)cap * sizeof *ios);
    if (!ios)
        return -ENOMEM;
    r->be.poll.ios = ios;
    r->be.poll.cap = cap;
    return 0;
}

static int pl_add(em_reactor *r, em_io *io, unsigned interest)
{
    if (r->be.poll.len == r->be.poll.cap) {
        int err = grow(r);
        if (err)
            return err;
    }
    int i = r->be.poll.len++;
    r->be.poll.fds[i] = (struct pollfd){.fd = io->fd, .events = to_poll(interest)};
    r->be.poll.ios[i] = io;
    io->poll_index = i;
    return 0;
}

static int pl_modify(em_reactor *r, em_io *io, unsigned interest)
{
    r->be.poll.fds[io->poll_index].events = to_poll(interest);
    return 0;
}

static int pl_del(em_reactor *r, em_io *io)
{
    int i = io->poll_index, last = --r->be.poll.len;
    if (i != last) {
        r->be.poll.fds[i] = r->be.poll.fds[last];
        r->be.poll.ios[i] = r->be.poll.ios[last];
        r->be.poll.ios[i]->poll_index = i;
    }
    io->poll_index = -1;
    return 0;
}

static int pl_wait(em_reactor *r, int timeout_ms, em_event *out, int max)
{
    int n = poll(r->be.poll.fds, (nfds_t)r->be.poll.len, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    int k = 0;
    for (int i = 0; i < r->be.poll.len && k < n && k < max; i++) {
        short re = r->be.poll.fds[i].revents;
        if (!re)
            continue;
        out[k].io = r->be.poll.ios[i];
        out[k].events = (re & POLLIN ? EM_EV_READ : 0) | (re & POLLOUT ? EM_EV_WRITE : 0) |
                        (re & (POLLERR | POLLNVAL) ? EM_EV_ERROR : 0) |
                        (re & POLLHUP ? EM_EV_HUP : 0);
        k++;
    }
    return k;
}

static int pl_fd(const em_reactor *r)
{
    EM_UNUSED(r);
    return -EOPNOTSUPP;
}

const em_backend em__backend_poll = {
    .name = "poll",
    .init = pl_init,
    .destroy = pl_destroy,
    .add = pl_add,
    .modify = pl_modify,
    .del = pl_del,
    .wait = pl_wait,
    .fd = pl_fd,
};
