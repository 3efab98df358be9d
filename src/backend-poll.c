/* The poll(2) poller: a dense pollfd array; a table indexed by descriptor
 * finds an io's slot, and a removal moves the last slot into the hole. The
 * scan for ready slots starts where the previous one stopped, so that slots
 * at the end of a long array are not starved when more are ready than one
 * batch holds. */
#include "em-internal.h"

#include <string.h>

#define P (r->be.poll)

static int pl_init(em_reactor *r)
{
    memset(&P, 0, sizeof P);
    return 0;
}

static void pl_destroy(em_reactor *r)
{
    em__free(P.fds);
    em__free(P.ios);
    em__free(P.slot_of_fd);
    memset(&P, 0, sizeof P);
}

static short to_poll(unsigned interest)
{
    return (short)((interest & EM_EV_READ ? POLLIN : 0) | (interest & EM_EV_WRITE ? POLLOUT : 0));
}

#define MIN_CAP 64
/* Below this an array is not worth shrinking, and a few dozen descriptors
 * coming and going would make it grow and shrink again and again. */
#define SHRINK_ABOVE 1024

/* A failure between the two reallocs leaves them of different sizes: the
 * usable capacity is the smaller. */
static int resize_slots(em_reactor *r, int cap)
{
    struct pollfd *fds = em__realloc(P.fds, (size_t)cap * sizeof *fds);
    if (!fds)
        return -ENOMEM;
    P.fds = fds;
    em_io **ios = em__realloc(P.ios, (size_t)cap * sizeof *ios);
    if (!ios) {
        if (cap < P.cap)
            P.cap = cap;
        return -ENOMEM;
    }
    P.ios = ios;
    P.cap = cap;
    return 0;
}

static int resize_fd_table(em_reactor *r, int cap)
{
    int *t = em__realloc(P.slot_of_fd, (size_t)cap * sizeof *t);
    if (!t)
        return -ENOMEM;
    P.slot_of_fd = t;
    P.fd_cap = cap;
    return 0;
}

static int grow_fd_table(em_reactor *r, int fd)
{
    int cap = P.fd_cap ? P.fd_cap : MIN_CAP;
    while (cap <= fd)
        cap *= 2;
    return resize_fd_table(r, cap);
}

/* Once most descriptors are gone the arrays give their memory back: below
 * 1/8 full they are halved, far from growing again. Short of memory they
 * stay as they are. */
static void shrink_slots(em_reactor *r)
{
    if (P.cap > SHRINK_ABOVE && P.len * 8 < P.cap)
        resize_slots(r, P.cap / 2);
}

/* The table by descriptor number shrinks to the highest number still
 * polled, looked for only when few are polled and the one removed was in
 * the table's top half, so the scan stays small. */
static void shrink_fd_table(em_reactor *r, int removed_fd)
{
    if (P.fd_cap <= SHRINK_ABOVE || P.len * 8 >= P.fd_cap || removed_fd < P.fd_cap / 2)
        return;
    int top = 0;
    for (int i = 0; i < P.len; i++)
        if (P.fds[i].fd > top)
            top = P.fds[i].fd;
    int cap = P.fd_cap;
    while (cap > SHRINK_ABOVE && cap / 2 > top)
        cap /= 2;
    if (cap < P.fd_cap)
        resize_fd_table(r, cap);
}

static int pl_add(em_reactor *r, em_io *io, unsigned interest)
{
    int err = 0;
    if (P.len == P.cap)
        err = resize_slots(r, P.cap ? P.cap * 2 : MIN_CAP);
    if (!err && io->fd >= P.fd_cap)
        err = grow_fd_table(r, io->fd);
    if (err)
        return err;
    int i = P.len++;
    P.fds[i] = (struct pollfd){.fd = io->fd, .events = to_poll(interest)};
    P.ios[i] = io;
    P.slot_of_fd[io->fd] = i;
    return 0;
}

static int pl_modify(em_reactor *r, em_io *io, unsigned interest)
{
    P.fds[P.slot_of_fd[io->fd]].events = to_poll(interest);
    return 0;
}

static int pl_del(em_reactor *r, em_io *io)
{
    int i = P.slot_of_fd[io->fd], last = --P.len;
    if (i != last) {
        P.fds[i] = P.fds[last];
        P.ios[i] = P.ios[last];
        P.slot_of_fd[P.fds[i].fd] = i;
    }
    shrink_slots(r);
    shrink_fd_table(r, io->fd);
    return 0;
}

static unsigned from_poll(short re)
{
    return (re & POLLIN ? EM_EV_READ : 0) | (re & POLLOUT ? EM_EV_WRITE : 0) |
           (re & (POLLERR | POLLNVAL) ? EM_EV_ERROR : 0) | (re & POLLHUP ? EM_EV_HUP : 0);
}

static int pl_wait(em_reactor *r, int timeout_ms, em_event *out, int max)
{
    int n = poll(P.fds, (nfds_t)P.len, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    int k = 0, len = P.len;
    int start = P.start < len ? P.start : 0;
    for (int j = 0; j < len && k < n && k < max; j++) {
        int i = (start + j) % len;
        if (!P.fds[i].revents)
            continue;
        out[k].io = P.ios[i];
        out[k].events = from_poll(P.fds[i].revents);
        k++;
        P.start = i + 1;
    }
    return k;
}

static int pl_fd(em_reactor *r)
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
    .wait_scans_all = true,
};
