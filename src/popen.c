/* Child processes joined to a connection through a socketpair. The child
 * is started with posix_spawnp, which reports an exec (or chdir) failure as
 * its return value (glibc hands it back from the child, as libuv does
 * through a close-on-exec pipe), and reaped through a pidfd in the poller.
 * Without pidfds each child is polled with waitpid(its pid, WNOHANG) on
 * SIGCHLD and on a timer: never waitpid(-1), which would take the host's
 * children's statuses. */
#include "em-internal.h"

#include <fcntl.h>
#include <float.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define GRACE_S 2.0    /* by default, after close: stdin closed, then SIGTERM, then SIGKILL */
#define GRACE_MAX_S 86400.0
#define POLL_CHILDREN_S 0.5 /* without pidfds: when SIGCHLD does not come */

struct em_child {
    em_io io; /* the pidfd; fd -1 once it exited or was handed over */
    em_conn *conn;
    em_child *next_polled; /* in r->polled_children: no pidfd, not done */
    bool polled;
    em_sig stderr_sig; /* EM_STDERR_CONN: the stderr connection */
    pid_t pid;
    int status;
    bool exited;
    bool status_known; /* false: reaped by someone else, or handed over */
    bool handed_over;  /* em_detach: the user looks after it now */
    int kill_stage;    /* 0: none sent, 1: SIGTERM sent, 2: SIGKILL sent */
    double grace;      /* em_popen_opts.grace_s, or GRACE_S */
    em_timer_id timer;
};

/* A child still running when its reactor stopped: sent SIGTERM then, reaped
 * by em_reactor_free, which SIGKILLs it only once the grace period is over. */
typedef struct em_orphan {
    struct em_orphan *next;
    pid_t pid;
    em_io pidfd; /* not watched: em_reactor_free polls it */
    double kill_at; /* SIGTERM sent plus the child's grace period */
} em_orphan;

/* The child's stdio: 0 and 1 on child_fd, 2 as stderr_mode says (err_fd
 * for EM_STDERR_CONN). */
static int plan_stdio(posix_spawn_file_actions_t *fa, int child_fd, int err_fd, int stderr_mode)
{
    int err = posix_spawn_file_actions_adddup2(fa, child_fd, 0);
    if (!err)
        err = posix_spawn_file_actions_adddup2(fa, child_fd, 1);
    if (!err && stderr_mode != EM_STDERR_INHERIT)
        err = posix_spawn_file_actions_adddup2(fa, stderr_mode == EM_STDERR_MERGE ? child_fd : err_fd,
                                               2);
    if (!err) /* nothing of ours, nor of the host's, beyond stdio */
        err = posix_spawn_file_actions_addclosefrom_np(fa, 3);
    return err;
}

static int spawn(const char *const argv[], int child_fd, int err_fd, const em_popen_opts *o,
                 pid_t *pid)
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
    err = plan_stdio(&fa, child_fd, err_fd, o->stderr_mode);
    if (!err && o->cwd)
        err = posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
    if (!err)
        err = posix_spawnattr_setsigmask(&attr, &none);
    if (!err)
        err = posix_spawnattr_setsigdefault(&attr, &all);
    if (!err)
        err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *const *envp = o->envp ? (char *const *)o->envp : environ;
    if (!err)
        err = posix_spawnp(pid, argv[0], &fa, &attr, (char *const *)argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return err;
}

static void unpoll(em_reactor *r, em_child *ch);

/* Its pidfd closed, or its polling ended. */
static void stop_watching(em_reactor *r, em_child *ch)
{
    em__io_close(r, &ch->io);
    unpoll(r, ch);
}

static void child_exited(em_child *ch, int status, bool known)
{
    ch->exited = true;
    ch->status = status;
    ch->status_known = known;
    em_reactor *r = ch->conn->r;
    stop_watching(r, ch);
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

/* ------------------------------------------------- without pidfds */

static void unpoll(em_reactor *r, em_child *ch)
{
    if (!ch->polled)
        return;
    for (em_child **link = &r->polled_children; *link; link = &(*link)->next_polled) {
        if (*link == ch) {
            *link = ch->next_polled;
            break;
        }
    }
    ch->polled = false;
    ch->next_polled = NULL;
    if (!r->polled_children && r->child_poll_timer) {
        em__timer_cancel(r, r->child_poll_timer);
        r->child_poll_timer = 0;
    }
}

/* waitpid on each child of ours, and on none other. A child that exited
 * leaves the list (try_reap unlinks it), the others stay. */
static void poll_children(em_reactor *r, void *arg)
{
    (void)arg;
    for (em_child *ch = r->polled_children, *next; ch; ch = next) {
        next = ch->next_polled;
        try_reap(ch);
    }
}

static int arm_poll_timer(em_reactor *r);

static void poll_timer_fired(em_reactor *r, void *arg)
{
    r->child_poll_timer = 0;
    poll_children(r, arg);
    if (r->polled_children) /* short of memory: SIGCHLD alone, till a new child re-arms */
        arm_poll_timer(r);
}

static int arm_poll_timer(em_reactor *r)
{
    if (r->child_poll_timer)
        return 0;
    r->child_poll_timer =
        em__timer_add(r, em__clock() + POLL_CHILDREN_S, 0, poll_timer_fired, NULL, true);
    return r->child_poll_timer ? 0 : -ENOMEM;
}

/* A disposition of the host's own (a handler, or SIG_IGN: its children are
 * reaped by the kernel) is left alone: the timer finds the exits then. */
static void catch_sigchld(em_reactor *r)
{
    if (r->sigchld_joined)
        return;
    struct sigaction sa;
    if (sigaction(SIGCHLD, NULL, &sa) < 0)
        return;
    bool free_to_take = !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL;
    if (!free_to_take && !em__signal_is_libems(SIGCHLD))
        return;
    r->sigchld_joined = em_add_signal_handler(r, SIGCHLD, poll_children, NULL) == 0;
}

/* The child may have exited before SIGCHLD was caught: it is looked at once
 * now, then on each SIGCHLD and each timer tick. */
static int poll_child(em_reactor *r, em_child *ch)
{
    int err = arm_poll_timer(r);
    if (err)
        return err;
    catch_sigchld(r);
    ch->polled = true;
    ch->next_polled = r->polled_children;
    r->polled_children = ch;
    try_reap(ch);
    return 0;
}

/* pidfds exist since Linux 5.3; valgrind and some seccomp filters refuse
 * them (ENOSYS, EPERM): the child is polled then, as with $EM_PIDFD=0. */
static int watch_child(em_reactor *r, em_child *ch)
{
    ch->io = (em_io){.fd = -1, .type = EM_IO_CHILD};
    int fd = r->pidfd_off ? -1 : (int)syscall(SYS_pidfd_open, ch->pid, 0);
    if (fd < 0 && !r->pidfd_off && errno != ENOSYS && errno != EPERM)
        return -errno;
    if (fd < 0) {
        r->pidfd_off = true; /* the next children need not try */
        return poll_child(r, ch);
    }
    ch->io.fd = fd;
    int err = em__io_open(r, &ch->io, EM_EV_READ);
    if (err) {
        close(fd);
        ch->io.fd = -1;
    }
    return err;
}

/* -------------------------------------------------------------- start */

static bool opts_valid(const em_popen_opts *o)
{
    if (!(o->grace_s >= 0 && o->grace_s <= GRACE_MAX_S)) /* NaN too */
        return false;
    switch (o->stderr_mode) {
    case EM_STDERR_INHERIT:
    case EM_STDERR_MERGE:
        return true;
    case EM_STDERR_CONN:
        return o->stderr_handler != NULL;
    default:
        return false;
    }
}

/* A socketpair whose end [0] (ours) is non-blocking; the child's end stays
 * blocking, as a program expects its stdio. */
static int make_pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return errno;
    if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
        int err = errno;
        close(sv[0]);
        close(sv[1]);
        return err;
    }
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* What em_popen_with puts together; on failure undone by abandon(). */
struct launch {
    int io[2], err[2]; /* err: EM_STDERR_CONN only, else -1 */
    em_child *ch;
    em_conn *c, *ec;
};

/* The stderr connection only reads: its write side is shut, so a child
 * reading its stderr sees EOF and data sent on it fails. */
static int open_stderr_conn(em_reactor *r, struct launch *l, const em_popen_opts *o)
{
    l->ec = em__conn_new(r, l->err[0], o->stderr_handler, o->stderr_arg);
    if (!l->ec)
        return errno;
    l->err[0] = -1; /* the connection's now */
    shutdown(l->ec->io.fd, SHUT_WR);
    l->ch->stderr_sig = l->ec->sig;
    return 0;
}

static int launch(em_reactor *r, struct launch *l, const char *const argv[],
                  const em_popen_opts *o, const em_handler *h, void *arg)
{
    int err = make_pair(l->io);
    if (!err && o->stderr_mode == EM_STDERR_CONN)
        err = make_pair(l->err);
    if (!err && !(l->ch = em__calloc(1, sizeof *l->ch)))
        err = ENOMEM;
    if (!err)
        l->ch->grace = o->grace_s > 0 ? o->grace_s : GRACE_S;
    if (!err)
        err = spawn(argv, l->io[1], l->err[1], o, &l->ch->pid);
    close_fd(&l->io[1]);
    close_fd(&l->err[1]);
    if (!err && !(l->c = em__conn_new(r, l->io[0], h, arg)))
        err = errno;
    if (!err)
        l->io[0] = -1; /* the connection's now */
    if (!err && l->err[0] >= 0)
        err = open_stderr_conn(r, l, o);
    if (!err && !em__conn_cold(l->c))
        err = ENOMEM;
    if (!err) {
        l->ch->conn = l->c;
        err = -watch_child(r, l->ch);
    }
    return err;
}

static void abandon(em_reactor *r, struct launch *l)
{
    if (l->ch && l->ch->pid > 0 && !l->ch->exited) { /* started, but not looked after */
        unpoll(r, l->ch);
        kill(l->ch->pid, SIGKILL);
        waitpid(l->ch->pid, NULL, 0);
    }
    if (l->ec)
        em__conn_discard(l->ec);
    if (l->c)
        em__conn_discard(l->c); /* closes its fd */
    for (int i = 0; i < 2; i++) {
        close_fd(&l->io[i]);
        close_fd(&l->err[i]);
    }
    em__free(l->ch);
}

em_conn *em_popen_with(em_reactor *r, const char *const argv[], const em_popen_opts *opts,
                       const em_handler *h, void *arg)
{
    static const em_popen_opts inherit_all;
    const em_popen_opts *o = opts ? opts : &inherit_all;
    if (!r || !h || !argv || !argv[0] || !*argv[0] || !opts_valid(o)) {
        errno = EINVAL;
        return NULL;
    }
    if (em__may_add(r)) {
        errno = ECANCELED;
        return NULL;
    }
    struct launch l = {.io = {-1, -1}, .err = {-1, -1}};
    int err = launch(r, &l, argv, o, h, arg);
    if (err) {
        abandon(r, &l);
        errno = err;
        return NULL;
    }
    em_conn *c = l.c;
    c->flags |= EM_CF_POPEN;
    c->cold->child = l.ch;
    if (l.ec)
        em__conn_begin(l.ec);
    em__conn_begin(c);
    return c;
}

em_conn *em_popen(em_reactor *r, const char *const argv[], const em_handler *h, void *arg)
{
    return em_popen_with(r, argv, NULL, h, arg);
}

em_conn *em_popen_stderr(const em_conn *c)
{
    if (!c || !(c->flags & EM_CF_POPEN) || !c->cold->child || !c->cold->child->stderr_sig)
        return NULL;
    return em__sigmap_get(&c->r->sigmap, c->cold->child->stderr_sig);
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
        double due = em__clock() + ch->grace;
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
    unpoll(r, ch);
    *o = (em_orphan){.next = r->orphans, .pid = ch->pid, .pidfd = ch->io,
                     .kill_at = em__clock() + ch->grace};
    ch->io.fd = -1;
    r->orphans = o;
}

/* em_detach: the child goes with its stdio. libem neither signals nor
 * reaps it from now on; one that has exited already was reaped before. */
static void hand_over(em_reactor *r, em_child *ch)
{
    if (ch->exited)
        return;
    stop_watching(r, ch);
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
    double due = em__clock() + ch->grace;
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
    stop_watching(c->r, ch);
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
    if (now < o->kill_at)
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
        if (o->kill_at < next)
            next = o->kill_at;
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
