/* em_reactor_free in a forked child while the inherited turn is still on
 * the child's stack (a fork from inside a callback, as EventMachine's
 * fork_reactor does). The parent's frames below the callback go on using
 * the reactor's memory and descriptor numbers once it returns, so neither
 * can go yet: each descriptor is swapped for /dev/null, which lets go of
 * the parent's socket, pipe or epoll set while its number stays taken
 * (the child reuses none of them meanwhile), and every handler is swapped
 * for one that calls nothing. The turn then dispatches nothing more, and
 * the outermost em_run or em_run_once frees the rest as it returns. */
#include "em-internal.h"

#include <fcntl.h>
#include <unistd.h>

static const em_handler quiet = {0};

static bool users_fd(const em_conn *c)
{
    return (c->flags & (EM_CF_DETACHED | EM_CF_NO_FD_CLOSE)) && c->io.fd >= 0;
}

/* Descriptors of em_attach and em_watch stay: libem never closes them, and
 * the user may go on with them in the child. */
static void mark_users_fds(em_reactor *r, bool held)
{
    for (size_t i = 0; i < r->sigmap.cap; i++) {
        em_conn *c = em__sigmap_at(&r->sigmap, i);
        if (c && users_fd(c)) {
            if (held)
                em__fd_claim(r, c->io.fd); /* its word exists: cannot fail */
            else
                em__fd_release(r, c->io.fd);
        }
    }
}

/* Without /dev/null (a chroot, or no descriptor left) the descriptors stay
 * the parent's until the turn unwinds: late, but never a wrong one. */
static void stand_in_for_held(em_reactor *r)
{
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0)
        return;
    mark_users_fds(r, false);
    for (size_t w = 0; w < r->held_words; w++)
        for (uint64_t bits = r->held_fds[w]; bits; bits &= bits - 1) {
            int fd = (int)(w * 64) + __builtin_ctzll(bits);
            if (fd != null_fd) /* else closed behind libem's back */
                dup3(null_fd, fd, O_CLOEXEC);
        }
    mark_users_fds(r, true);
    em__pipes_stand_in(r, NULL, null_fd);
    for (size_t i = 0; i < r->sigmap.cap; i++) {
        em_conn *c = em__sigmap_at(&r->sigmap, i);
        if (c) {
            em__pipes_stand_in(r, c, null_fd);
            em__files_stand_in(c, null_fd);
        }
    }
    if (!em__fd_held(r, null_fd))
        close(null_fd);
}

static void silence(em_reactor *r)
{
    r->wake.dead = true;
    for (em_server *s = r->servers; s; s = s->next) {
        s->io.dead = true; /* ends an accept loop on the stack too */
        s->h = &quiet;
    }
    for (size_t i = 0; i < r->sigmap.cap; i++) {
        em_conn *c = em__sigmap_at(&r->sigmap, i);
        if (!c)
            continue;
        c->io.dead = true;
        c->h = &quiet;
        em_io *child = (c->flags & EM_CF_POPEN) ? em__child_io(c) : NULL;
        if (child)
            child->dead = true;
    }
}

void em__release_inherited(em_reactor *r)
{
    r->freeing = true; /* em_run and em_run_once are refused from here on */
    r->forked = true;
    r->released = true;
    pthread_mutex_init(&r->xlock, NULL); /* a vanished thread may hold it */
    stand_in_for_held(r);
    silence(r);
}
