/* Child processes joined to a connection through a socketpair. The child
 * is started with posix_spawnp, which reports an exec failure as its return
 * value (glibc hands it back from the child, as libuv does through a
 * close-on-exec pipe), and
 * reaped through a pidfd in the poller: never waitpid(-1), never a SIGCHLD
 * handler of our own. */
#include "em-internal.h"

#include <fcntl.h>
#include <float.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define GRACE_S 2.0    /* after close: stdin closed, then SIGTERM, then SIGKILL */

struct em_child {
    em_io io; /* the pidfd; fd -1 once it exited or was handed over */
    em_conn *conn;
    pid_t pid;
    int status;
    bool exited;
    bool status_known; /* false: reaped by someone else, or handed over */
    bool handed_over;  /* em_detach: the user looks after it now */
    int kill_stage;    /* 0: none sent, 1: SIGTERM sent, 2: SIGKILL sent */
    em_timer_id timer;
};

/* A child still running when its reactor stopped: sent SIGTERM then, reaped
 * by em_reactor_free, which SIGKILLs it only once the grace period is over. */
typedef struct em_orphan {
    struct em_orphan *next;
    pid_t pid;
    em_io pidfd; /* not watched: em_reactor_free polls it */
    double term_sent;
} em_orphan;

static int spawn(const char *const argv[], int child_fd, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int err = posix_spawn_file_actions_init(&fa);
    if (err)
        return err;
    err = posix_spawnattr_init(&attr);
    if (err) {
        posix_spawn_file_actions_destroy(&fa);
        return err;
    }
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    err = posix_spawn_file_actions_adddup2(&fa, child_fd, 0);
    if (!err)
        err = posix_spawn_file_actions_adddup2(&fa, child_fd, 1);
    if (!err) /* nothing of ours, nor of the host's, beyond stdio */
        err = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    if (!err)
        err = posix_spawnattr_setsigmask(&attr, &none);
    if (!err)
        err = posix_spawnattr_setsigdefault(&attr, &all);
    if (!err)
        err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (!err)
        err = posix_spawnp(pid, argv[0], &fa, &attr, (char *const *)argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return err;
}

static void child_exited(em_child *ch, int status, bool known)
{
    ch->exited = true;
    ch->status = status;
    ch->status_known = known;
    em_reactor *r = ch->conn->r;
    em__io_close(r, &ch->io);
    if (ch->timer)
        em__timer_cancel(r, ch->timer);
    ch->timer = 0;
    if (ch->conn->state == EM_CS_REAPING) {
        ch->conn->state = EM_CS_CLOSING;
        em__close_list_push(ch->conn);
    }
}

static bool try_reap(em_child *ch)
{
    int status;
    pid_t p;
    do
        p = waitpid(ch->pid, &status, WNOHANG);
    while (p < 0 && errno == EINTR);
    if (p == ch->pid) {
        child_exited(ch, status, true);
        return true;
    }
    if (p < 0 && errno == ECHILD) { /* reaped by someone else: status unknown */
        child_exited(ch, 0, false);
        return true;
    }
    return false;
}

void em__child_on_event(em_io *io) { try_reap(EM_CONTAINER_OF(io, em_child, io)); }

em_io *em__child_io(em_conn *c)
{
    return (c->flags & EM_CF_POPEN) && c->cold->child ? &c->cold->child->io : NULL;
}

/* pidfds exist since Linux 5.3; without one em_popen fails (ENOSYS) rather
 * than reap by polling. */
static int watch_child(em_reactor *r, em_child *ch)
{
    ch->io = (em_io){.fd = -1, .type = EM_IO_CHILD};
    int fd = (int)syscall(SYS_pidfd_open, ch->pid, 0);
    if (fd < 0)
        return -errno;
    ch->io.fd = fd;
    int err = em__io_open(r, &ch->io, EM_EV_READ);
    if (err) {
        close(fd);
        ch->io.fd = -1;
    }
    return err;
}

em_conn *em_popen(em_reactor *r, const char *const argv[], const em_handler *h, void *arg)
{
    if (!r || !h || !argv || !argv[0] || !*argv[0]) {
        errno = EINVAL;
        return NULL;
    }
    if (em__may_add(r)) {
        errno = ECANCELED;
        return NULL;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return NULL;
    /* the child's end stays blocking, as a program expects its stdio */
    if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
        int err = errno;
        close(sv[0]);
        close(sv[1]);
        errno = err;
        return NULL;
    }
    em_child *ch = em__calloc(1, sizeof *ch);
    int err = ch ? spawn(argv, sv[1], &ch->pid) : ENOMEM;
    close(sv[1]);
    em_conn *c = err ? NULL : em__conn_new(r, sv[0], h, arg);
    if (c) {
        ch->conn = c;
        err = em__conn_cold(c) ? -watch_child(r, ch) : ENOMEM;
    } else if (!err) {
        err = ENOMEM;
    }
    if (err) {
        if (ch && ch->pid > 0) { /* started, but we cannot look after it */
            kill(ch->pid, SIGKILL);
            waitpid(ch->pid, NULL, 0);
        }
        if (c)
            em__conn_discard(c); /* closes sv[0] */
        else
            close(sv[0]);
        em__free(ch);
        errno = err;
        return NULL;
    }
    c->flags |= EM_CF_POPEN;
    c->cold->child = ch;
    em__conn_begin(c);
    return c;
}

/* --------------------------------------------------------- closing down */

static void grace_expired(em_reactor *r, void *arg)
{
    em_child *ch = arg;
    ch->timer = 0;
    if (try_reap(ch))
        return;
    ch->kill_stage++;
    kill(ch->pid, ch->kill_stage == 1 ? SIGTERM : SIGKILL);
    if (ch->kill_stage < 2) {
        double due = em__clock() + GRACE_S;
        ch->timer = em__timer_add(r, due, 0, grace_expired, ch, true);
    }
}

static void reap_blocking(pid_t pid)
{
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* The orphan takes the child's pidfd, to wait for its exit with poll. */
static void orphan(em_reactor *r, em_child *ch)
{
    kill(ch->pid, SIGTERM);
    if (try_reap(ch))
        return;
    em_orphan *o = em__malloc(sizeof *o);
    if (!o) { /* cannot remember it: do not leave a zombie behind */
        kill(ch->pid, SIGKILL);
        reap_blocking(ch->pid);
        return;
    }
    em__io_unwatch(r, &ch->io);
    *o = (em_orphan){.next = r->orphans, .pid = ch->pid, .pidfd = ch->io,
                     .term_sent = em__clock()};
    ch->io.fd = -1;
    r->orphans = o;
}

/* em_detach: the child goes with its stdio. libem neither signals nor
 * reaps it from now on; one that has exited already was reaped before. */
static void hand_over(em_reactor *r, em_child *ch)
{
    if (ch->exited)
        return;
    em__io_close(r, &ch->io);
    ch->handed_over = true;
}

/* The connection is closed (its fd too, so the child's stdin saw EOF).
 * Unbind waits for the child, unless the reactor is shutting down or the
 * child was handed over with em_detach. */
bool em__child_may_unbind(em_conn *c)
{
    em_child *ch = c->cold->child;
    if (c->flags & EM_CF_DETACHED)
        hand_over(c->r, ch);
    if (ch->exited || ch->handed_over || try_reap(ch) || c->r->forked)
        return true;
    if (c->r->shutting_down) {
        orphan(c->r, ch);
        return true;
    }
    c->state = EM_CS_REAPING;
    double due = em__clock() + GRACE_S;
    ch->timer = em__timer_add(c->r, due, 0, grace_expired, ch, true);
    if (!ch->timer) { /* no memory for a timer: do not wait without one */
        kill(ch->pid, SIGKILL);
        ch->kill_stage = 2;
    }
    return false;
}

void em__child_free(em_conn *c)
{
    em_child *ch = c->cold->child;
    if (!ch)
        return;
    em__io_close(c->r, &ch->io);
    if (ch->timer)
        em__timer_cancel(c->r, ch->timer);
    em__free(ch);
    c->cold->child = NULL;
}

/* true once o is reaped: it exited, somebody else reaped it, or its grace
 * period is over and it was killed. */
static bool orphan_reaped(const em_orphan *o, double now)
{
    pid_t p = waitpid(o->pid, NULL, WNOHANG);
    if (p != 0 && !(p < 0 && errno == EINTR))
        return true;
    if (now < o->term_sent + GRACE_S)
        return false;
    kill(o->pid, SIGKILL);
    reap_blocking(o->pid);
    return true;
}

static void orphan_free(em_reactor *r, em_orphan *o)
{
    em__io_close(r, &o->pidfd);
    em__free(o);
}

/* Reaps the orphans that are done; the others' pidfds go into fds (at most
 * max). Returns the earliest end of a grace period still running. */
static double reap_done_orphans(em_reactor *r, struct pollfd *fds, int max, int *n)
{
    double now = em__clock(), next = DBL_MAX;
    *n = 0;
    for (em_orphan **link = &r->orphans; *link;) {
        em_orphan *o = *link;
        if (orphan_reaped(o, now)) {
            *link = o->next;
            orphan_free(r, o);
            continue;
        }
        if (*n < max && o->pidfd.fd >= 0)
            fds[(*n)++] = (struct pollfd){.fd = o->pidfd.fd, .events = POLLIN};
        if (o->term_sent + GRACE_S < next)
            next = o->term_sent + GRACE_S;
        link = &o->next;
    }
    return next;
}

/* At em_reactor_free: children that outlived their reactor's run got
 * SIGTERM when it stopped. Each has the rest of its grace period to exit
 * (waited for on the pidfds, so an exit ends the wait at once) before it
 * is killed. A forked child reaps none: they are its parent's children. */
void em__orphans_reap(em_reactor *r)
{
    while (r->orphans && !r->forked) {
        struct pollfd fds[64];
        int n;
        double next = reap_done_orphans(r, fds, 64, &n);
        if (!r->orphans)
            break;
        /* at most 100 ms: orphans beyond the 64 watched are looked at then */
        double ms = (next - em__clock()) * 1000.0;
        poll(fds, (nfds_t)n, ms < 1 ? 1 : ms >= 100 ? 100 : (int)ms + 1);
    }
    while (r->orphans) {
        em_orphan *o = r->orphans;
        r->orphans = o->next;
        orphan_free(r, o);
    }
}

pid_t em_get_pid(const em_conn *c)
{
    return c && (c->flags & EM_CF_POPEN) && c->cold->child ? c->cold->child->pid : -1;
}

int em_get_status(const em_conn *c, int *wstatus)
{
    if (!c || !wstatus || !(c->flags & EM_CF_POPEN) || !c->cold->child)
        return -EINVAL;
    const em_child *ch = c->cold->child;
    if (ch->handed_over || (ch->exited && !ch->status_known))
        return -ECHILD;
    if (!ch->exited)
        return -EAGAIN;
    *wstatus = ch->status;
    return 0;
}
