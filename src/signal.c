/* Signal handlers on the reactor thread, through a self-pipe per reactor.
 * Dispositions are process-wide, so this file keeps the one table libem
 * shares between reactors: for each signal, the pipes to write to and the
 * disposition to restore when the last reactor lets go of it. */
#include "em-internal.h"

#include <fcntl.h>
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
    atomic_int pipe_plus_one[READERS_PER_SIGNAL]; /* 0: free slot */
    struct sigaction previous;
    int users;
} table[NSIG];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_signal(int signo)
{
    int saved = errno;
    unsigned char b = (unsigned char)signo;
    for (int i = 0; i < READERS_PER_SIGNAL; i++) {
        int fd = atomic_load(&table[signo].pipe_plus_one[i]) - 1;
        if (fd >= 0 && write(fd, &b, 1) < 0) {
            /* full pipe: a wake-up is already pending */
        }
    }
    errno = saved;
}

static int table_join(int signo, int fd)
{
    pthread_mutex_lock(&table_lock);
    int err = -EBUSY;
    for (int i = 0; i < READERS_PER_SIGNAL && err; i++) {
        if (atomic_load(&table[signo].pipe_plus_one[i]) == 0) {
            atomic_store(&table[signo].pipe_plus_one[i], fd + 1);
            err = 0;
        }
    }
    if (!err && table[signo].users == 0) {
        struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
        sigfillset(&sa.sa_mask);
        if (sigaction(signo, &sa, &table[signo].previous) < 0) {
            err = -errno;
            for (int i = 0; i < READERS_PER_SIGNAL; i++)
                if (atomic_load(&table[signo].pipe_plus_one[i]) == fd + 1)
                    atomic_store(&table[signo].pipe_plus_one[i], 0);
        }
    }
    if (!err)
        table[signo].users++;
    pthread_mutex_unlock(&table_lock);
    return err;
}

static void table_leave(int signo, int fd)
{
    pthread_mutex_lock(&table_lock);
    for (int i = 0; i < READERS_PER_SIGNAL; i++)
        if (atomic_load(&table[signo].pipe_plus_one[i]) == fd + 1)
            atomic_store(&table[signo].pipe_plus_one[i], 0);
    if (--table[signo].users == 0)
        sigaction(signo, &table[signo].previous, NULL);
    pthread_mutex_unlock(&table_lock);
}

static int open_pipe(em_reactor *r)
{
    if (r->sigpipe.type == EM_IO_SIGNAL)
        return 0;
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -errno;
    r->sigpipe = (em_io){.fd = fds[0], .type = EM_IO_SIGNAL};
    r->sigpipe_w = fds[1];
    int err = em__io_watch(r, &r->sigpipe, EM_EV_READ);
    if (err) {
        close(fds[0]);
        close(fds[1]);
        r->sigpipe = (em_io){.fd = -1};
    }
    return err;
}

static bool handles(const em_reactor *r, int signo)
{
    for (em_sighandler *h = r->sighandlers; h; h = h->next)
        if (h->signo == signo)
            return true;
    return false;
}

int em_add_signal_handler(em_reactor *r, int signo, em_cb cb, void *arg)
{
    if (!r || !cb || signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
        return -EINVAL;
    em_sighandler *h = em__malloc(sizeof *h);
    if (!h)
        return -ENOMEM;
    *h = (em_sighandler){.signo = signo, .cb = cb, .arg = arg};
    int err = open_pipe(r);
    if (!err && !handles(r, signo))
        err = table_join(signo, r->sigpipe_w);
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

void em__signal_on_event(em_reactor *r)
{
    bool seen[NSIG] = {0};
    unsigned char buf[64];
    ssize_t n;
    while ((n = read(r->sigpipe.fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] < NSIG)
                seen[buf[i]] = true;
    for (em_sighandler *h = r->sighandlers; h; h = h->next)
        if (seen[h->signo])
            h->cb(r, h->arg);
}

void em__signals_free(em_reactor *r)
{
    if (r->sigpipe.type != EM_IO_SIGNAL)
        return;
    while (r->sighandlers) {
        em_sighandler *h = r->sighandlers;
        r->sighandlers = h->next;
        if (!handles(r, h->signo))
            table_leave(h->signo, r->sigpipe_w);
        em__free(h);
    }
    em__io_unwatch(r, &r->sigpipe);
    close(r->sigpipe.fd);
    close(r->sigpipe_w);
    r->sigpipe = (em_io){.fd = -1};
}
