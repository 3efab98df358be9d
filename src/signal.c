/* Signal handlers on the reactor thread. Dispositions are process-wide, so
 * this file keeps the one table libem shares between reactors: for each
 * signal, the reactors to tell and the disposition to restore when the last
 * one lets go of it.
 *
 * The C handler only sets the reactor's pending flag for that signal and
 * wakes it through its eventfd (em__wake): a storm of one signal costs one
 * wake-up, never fills a pipe, and cannot crowd out another signal.
 *
 * Handlers belong to the process that installed them. A fork() child gets
 * the dispositions libem found (pthread_atfork), and the handler itself
 * checks the pid, for children made without fork(): a pre-fork server's
 * worker never runs its master's callbacks. */
#include "em-internal.h"

#include <sched.h>
#include <signal.h>
#include <unistd.h>

#define READERS_PER_SIGNAL 8

struct em_sighandler {
    em_sighandler *next;
    int signo;
    em_cb cb;
    void *arg;
};

static struct {
    _Atomic(em_reactor *) readers[READERS_PER_SIGNAL];
    struct sigaction previous;
    int users;
} table[NSIG];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int table_pid;        /* the process the handlers are installed for */
static atomic_int handlers_running; /* C handlers between reading and using a reader */
static pthread_once_t fork_hooks_set = PTHREAD_ONCE_INIT;

/* In a process the handlers were not installed for: libem was never asked
 * to handle signals here, so the signal gets the disposition found. */
static void not_ours(int signo)
{
    sigaction(signo, &table[signo].previous, NULL);
    raise(signo); /* blocked until this handler returns */
}

static void on_signal(int signo)
{
    int saved = errno;
    if (getpid() != atomic_load(&table_pid)) {
        not_ours(signo);
    } else {
        atomic_fetch_add(&handlers_running, 1);
        for (int i = 0; i < READERS_PER_SIGNAL; i++) {
            em_reactor *r = atomic_load(&table[signo].readers[i]);
            if (r) {
                atomic_store(&r->sig_pending[signo], true);
                atomic_store(&r->sig_any, true);
                em__wake(r);
            }
        }
        atomic_fetch_sub(&handlers_running, 1);
    }
    errno = saved;
}

/* Gives every signal back the disposition libem found and forgets every
 * reader: run in a child, whose reactors belong to its parent. */
static void table_reset(void)
{
    for (int s = 1; s < NSIG; s++) {
        if (table[s].users > 0)
            sigaction(s, &table[s].previous, NULL);
        for (int i = 0; i < READERS_PER_SIGNAL; i++)
            atomic_store(&table[s].readers[i], NULL);
        table[s].users = 0;
    }
    atomic_store(&handlers_running, 0);
    atomic_store(&table_pid, getpid());
}

/* A thread that held the lock at fork() does not exist in the child: the
 * fork waits until nobody holds it. */
static void fork_prepare(void) { pthread_mutex_lock(&table_lock); }
static void fork_parent(void) { pthread_mutex_unlock(&table_lock); }
static void fork_child(void)
{
    table_reset();
    pthread_mutex_unlock(&table_lock);
}

static void set_fork_hooks(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* Under the lock: a table inherited without fork() (no atfork hooks ran)
 * is the parent's. */
static void table_adopt(void)
{
    if (atomic_load(&table_pid) != getpid())
        table_reset();
}

static int take_slot(int signo, em_reactor *r)
{
    for (int i = 0; i < READERS_PER_SIGNAL; i++) {
        if (atomic_load(&table[signo].readers[i]) == NULL) {
            atomic_store(&table[signo].readers[i], r);
            return i;
        }
    }
    return -1;
}

static int table_join(int signo, em_reactor *r)
{
    pthread_once(&fork_hooks_set, set_fork_hooks);
    pthread_mutex_lock(&table_lock);
    table_adopt();
    int slot = take_slot(signo, r), err = slot < 0 ? -EBUSY : 0;
    if (!err && table[signo].users == 0) {
        struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
        sigfillset(&sa.sa_mask);
        if (sigaction(signo, &sa, &table[signo].previous) < 0) {
            err = -errno;
            atomic_store(&table[signo].readers[slot], NULL);
        }
    }
    if (!err)
        table[signo].users++;
    pthread_mutex_unlock(&table_lock);
    return err;
}

/* The disposition found at the first join comes back only while libem's
 * handler is still installed: one the host set since then stays. */
static void restore_unless_replaced(int signo)
{
    struct sigaction now;
    if (sigaction(signo, NULL, &now) == 0 && now.sa_handler == on_signal)
        sigaction(signo, &table[signo].previous, NULL);
}

static void table_leave(int signo, em_reactor *r)
{
    pthread_mutex_lock(&table_lock);
    table_adopt();
    for (int i = 0; i < READERS_PER_SIGNAL; i++) {
        if (atomic_load(&table[signo].readers[i]) == r) {
            atomic_store(&table[signo].readers[i], NULL);
            if (--table[signo].users == 0)
                restore_unless_replaced(signo);
        }
    }
    pthread_mutex_unlock(&table_lock);
}

/* A handler on another thread may have read r from the table just before
 * it left: r is not freed until no handler is between that read and its
 * wake-up. Handlers take no lock and never wait, so this ends at once. */
static void wait_for_running_handlers(void)
{
    while (atomic_load(&handlers_running) > 0)
        sched_yield();
}

static bool handles(const em_reactor *r, int signo)
{
    for (em_sighandler *h = r->sighandlers; h; h = h->next)
        if (h->signo == signo)
            return true;
    return false;
}

/* A reactor inherited through fork() is its parent's: the table forgot it at
 * the fork, so handlers added to it in the child would never run. */
int em_add_signal_handler(em_reactor *r, int signo, em_cb cb, void *arg)
{
    if (!r || !cb || signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP ||
        r->owner_pid != getpid())
        return -EINVAL;
    em_sighandler *h = em__malloc(sizeof *h);
    if (!h)
        return -ENOMEM;
    *h = (em_sighandler){.signo = signo, .cb = cb, .arg = arg};
    int err = handles(r, signo) ? 0 : table_join(signo, r);
    if (err) {
        em__free(h);
        return err;
    }
    em_sighandler **tail = &r->sighandlers;
    while (*tail)
        tail = &(*tail)->next;
    *tail = h;
    return 0;
}

/* Each signal that arrived since the last look runs its callbacks once:
 * like the kernel's own pending set, several deliveries of one signal
 * before the reactor looks are one. Handlers added by a callback wait for
 * the next signal. */
void em__signals_run(em_reactor *r)
{
    if (!atomic_exchange(&r->sig_any, false))
        return;
    bool seen[NSIG];
    for (int s = 1; s < NSIG; s++)
        seen[s] = atomic_exchange(&r->sig_pending[s], false);
    size_t n = 0;
    for (em_sighandler *h = r->sighandlers; h; h = h->next)
        n++;
    for (em_sighandler *h = r->sighandlers; h && n && !r->released; h = h->next, n--)
        if (seen[h->signo])
            h->cb(r, h->arg);
}

bool em__signal_is_libems(int signo)
{
    struct sigaction sa;
    return sigaction(signo, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
           sa.sa_handler == on_signal;
}

/* In a forked child the table was reset at the fork: leaving it finds the
 * reactor nowhere and changes nothing (the hooks keep its lock usable). */
void em__signals_free(em_reactor *r)
{
    bool joined = r->sighandlers != NULL;
    while (r->sighandlers) {
        em_sighandler *h = r->sighandlers;
        r->sighandlers = h->next;
        if (!handles(r, h->signo))
            table_leave(h->signo, r);
        em__free(h);
    }
    if (joined)
        wait_for_running_handlers();
}

/* ------------------------------------------------------------- SIGPIPE */

/* sendfile and splice have no MSG_NOSIGNAL: writing a file or a pipe to a
 * socket the peer reset raises SIGPIPE, whose default kills the process.
 * libem changes no disposition, so the first such write of a turn blocks
 * SIGPIPE in this thread until the turn's writes are done, and a SIGPIPE
 * they raised is then consumed (one that was pending before is left). A
 * turn without them pays nothing; one with many pays four system calls. */
void em__sigpipe_block(em_reactor *r)
{
    if (r->sigpipe_blocked)
        return;
    sigset_t pipe_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    r->sigpipe_was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &r->sigpipe_mask);
    r->sigpipe_blocked = true;
}

void em__sigpipe_restore(em_reactor *r)
{
    if (!r->sigpipe_blocked)
        return;
    sigset_t pipe_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE) && !r->sigpipe_was_pending &&
        !sigismember(&r->sigpipe_mask, SIGPIPE)) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &r->sigpipe_mask, NULL);
    r->sigpipe_blocked = false;
}
