/* Descriptors the user owns: em_attach (data mode) and em_watch (notify
 * mode). libem never closes them and gives them back as it found them. */
#include "em-internal.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/uio.h>
#include <time.h>

static int check_new_fd(em_reactor *r, int fd)
{
    if (fd < 0 || fcntl(fd, F_GETFL) < 0)
        return -EBADF;
    return em__fd_held(r, fd) ? -EEXIST : 0;
}

static em_conn *adopt(em_reactor *r, int fd, const em_handler *h, void *arg, uint32_t flags)
{
    int err = r && h ? check_new_fd(r, fd) : -EINVAL;
    if (!err)
        err = em__may_add(r);
    if (err) {
        errno = -err;
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    bool set_nonblock = !(flags & EM_CF_WATCH) && !(fl & O_NONBLOCK);
    if (set_nonblock && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return NULL;
    em_conn *c = em__conn_new(r, fd, h, arg);
    if (!c) {
        if (set_nonblock)
            fcntl(fd, F_SETFL, fl);
        errno = ENOMEM;
        return NULL;
    }
    int type;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        flags |= EM_CF_NOT_SOCKET;
    else if (type != SOCK_STREAM)
        flags |= EM_CF_MESSAGES;
    if ((fl & O_ACCMODE) == O_WRONLY)
        flags |= EM_CF_EOF; /* a write end has nothing to read: never try */
    c->flags |= flags | EM_CF_NO_FD_CLOSE | (set_nonblock ? EM_CF_RESTORE_FL : 0);
    em__conn_begin(c);
    return c;
}

em_conn *em_attach(em_reactor *r, int fd, const em_handler *h, void *arg)
{
    return adopt(r, fd, h, arg, 0);
}

em_conn *em_watch(em_reactor *r, int fd, const em_handler *h, void *arg)
{
    return adopt(r, fd, h, arg, EM_CF_WATCH);
}

bool em_is_watch_only(const em_conn *c) { return c && (c->flags & EM_CF_WATCH); }

/* ------------------------------------------------------------ notify mode */

unsigned em__watch_interest(const em_conn *c)
{
    return (c->flags & EM_CF_NOTIFY_R ? EM_EV_READ : 0) |
           (c->flags & EM_CF_NOTIFY_W ? EM_EV_WRITE : 0);
}

void em__watch_on_event(em_conn *c, unsigned events)
{
    if ((events & (EM_EV_READ | EM_EV_HUP | EM_EV_ERROR)) && (c->flags & EM_CF_NOTIFY_R) &&
        c->h->notify_readable)
        c->h->notify_readable(c);
    if (c->state == EM_CS_OPEN && (events & (EM_EV_WRITE | EM_EV_ERROR)) &&
        (c->flags & EM_CF_NOTIFY_W) && c->h->notify_writable)
        c->h->notify_writable(c);
}

static int set_notify(em_conn *c, uint32_t flag, bool on)
{
    if (!c || !(c->flags & EM_CF_WATCH))
        return -EINVAL;
    if (!em__conn_usable(c))
        return -ENOTCONN;
    c->flags = on ? c->flags | flag : c->flags & ~flag;
    em__conn_update_interest(c);
    return 0;
}

int em_set_notify_readable(em_conn *c, bool on) { return set_notify(c, EM_CF_NOTIFY_R, on); }
int em_set_notify_writable(em_conn *c, bool on) { return set_notify(c, EM_CF_NOTIFY_W, on); }
bool em_is_notify_readable(const em_conn *c) { return c && (c->flags & EM_CF_NOTIFY_R); }
bool em_is_notify_writable(const em_conn *c) { return c && (c->flags & EM_CF_NOTIFY_W); }

/* ------------------------------------------------------ pipes and ttys */

/* writev to a pipe whose reader is gone raises SIGPIPE; libem must not kill
 * the host nor change its signal dispositions, so the signal is blocked in
 * this thread for the call and a SIGPIPE it caused is consumed. */
ssize_t em__writev_nosigpipe(int fd, const struct iovec *iov, int cnt)
{
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t n;
    do
        n = writev(fd, iov, cnt);
    while (n < 0 && errno == EINTR);
    int saved = errno;
    if (n < 0 && saved == EPIPE && !was_pending) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return n;
}
