/*
 * TCP proxy on raw epoll and splice(2): the floor of the proxy workloads,
 * what one thread can do without the bytes ever entering user space.
 *
 * Its choices, each the cheap one that a minimal fast proxy would make:
 * - Level-triggered epoll, one thread, one accept per readiness event, as
 *   echo_epoll. Each accepted client gets its own non-blocking connect to
 *   the backend; the client is not read until that connect is done, so
 *   nothing needs holding meanwhile. TCP_NODELAY on both sockets, as every
 *   bench server sets it on its own.
 * - Per connection pair, one pipe per direction, made at accept (pipe2 at
 *   its default size, 64 KiB, as HAProxy leaves it unless tune.pipesize).
 *   A readable socket is spliced into its pipe and the pipe at once into
 *   the other socket: two splice() per chunk, no copy through a buffer of
 *   the proxy's.
 * - A side is read only while its pipe is empty. What the other socket
 *   did not take stays in the pipe (the only per-direction state, a byte
 *   count), and the other socket is watched for EPOLLOUT until it is out;
 *   so a slow side stops the fast one, with at most a pipe's worth held.
 * - End of file, an error or a hang-up on either side closes both at
 *   once: the workloads never half-close, so nothing in flight is lost.
 *   A pair closed while the same epoll_wait batch still holds an event for
 *   its other side is freed after the batch.
 *
 * Usage: proxy_splice_epoll LISTEN_PORT BACKEND_PORT (LISTEN_PORT 0 picks a
 * free port). Listens on 127.0.0.1 and connects to 127.0.0.1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PIPE_BYTES 65536 /* asked of one splice into a pipe: a default pipe's size */

typedef struct pair pair;
typedef struct end end;
struct end {
    int fd;
    int pipe[2];    /* what was read from fd, on its way to the peer */
    size_t queued;  /* bytes in pipe */
    uint32_t watch; /* events registered */
    bool connecting;
    end *peer;
    pair *owner;
};

struct pair {
    end side[2]; /* client, backend */
    bool dead;
    pair *next_dead;
};

static int ep;
static struct sockaddr_in backend;
static pair *dead; /* closed during this batch, freed after it */

static uint32_t wanted(const end *e)
{
    if (e->connecting)
        return EPOLLOUT;
    if (e->peer->connecting)
        return 0;
    return (e->queued ? 0 : EPOLLIN) | (e->peer->queued ? EPOLLOUT : 0);
}

static void rewatch(end *e)
{
    uint32_t w = wanted(e);
    if (w == e->watch)
        return;
    struct epoll_event ev = {.events = w, .data.ptr = e};
    epoll_ctl(ep, EPOLL_CTL_MOD, e->fd, &ev);
    e->watch = w;
}

static void close_pair(pair *p)
{
    if (p->dead)
        return;
    for (int i = 0; i < 2; i++) {
        end *e = &p->side[i];
        if (e->fd >= 0)
            close(e->fd);
        if (e->pipe[0] >= 0) {
            close(e->pipe[0]);
            close(e->pipe[1]);
        }
    }
    p->dead = true;
    p->next_dead = dead;
    dead = p;
}

/* Empties e's pipe into its peer, as far as the peer takes it; false when
 * the peer failed. One splice: a short one means the socket is full, and
 * the rest waits for EPOLLOUT rather than for an EAGAIN. */
static bool flush(end *e)
{
    if (!e->queued)
        return true;
    ssize_t w = splice(e->pipe[0], NULL, e->peer->fd, NULL, e->queued,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (w < 0)
        return errno == EAGAIN;
    e->queued -= (size_t)w;
    return true;
}

static void on_readable(end *e)
{
    ssize_t n = splice(e->fd, NULL, e->pipe[1], NULL, PIPE_BYTES,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        close_pair(e->owner);
        return;
    }
    e->queued = (size_t)n;
    if (!flush(e)) {
        close_pair(e->owner);
        return;
    }
    rewatch(e);
    rewatch(e->peer);
}

static void on_writable(end *e)
{
    if (e->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            close_pair(e->owner);
            return;
        }
        e->connecting = false;
    } else if (!flush(e->peer)) {
        close_pair(e->owner);
        return;
    }
    rewatch(e);
    rewatch(e->peer);
}

static bool end_init(end *e, int fd, end *peer)
{
    int one = 1;
    e->fd = fd;
    e->peer = peer;
    e->pipe[0] = e->pipe[1] = -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (pipe2(e->pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        return false;
    e->watch = wanted(e);
    struct epoll_event ev = {.events = e->watch, .data.ptr = e};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
}

static void on_accept(int lfd)
{
    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0)
        return;
    pair *p = calloc(1, sizeof *p);
    int b = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (!p || b < 0) {
        free(p);
        close(c);
        if (b >= 0)
            close(b);
        return;
    }
    p->side[0].fd = p->side[1].fd = -1;
    p->side[0].pipe[0] = p->side[1].pipe[0] = -1;
    p->side[0].owner = p->side[1].owner = p;
    int rc = connect(b, (struct sockaddr *)&backend, sizeof backend);
    if (rc < 0 && errno != EINPROGRESS) {
        close(b);
        close(c);
        free(p);
        return;
    }
    p->side[1].connecting = rc < 0;
    if (!end_init(&p->side[1], b, &p->side[0]) || !end_init(&p->side[0], c, &p->side[1])) {
        if (p->side[0].fd < 0)
            close(c);
        close_pair(p);
    }
}

static int listen_on(int port)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 1024) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &len) < 0) {
        perror("proxy_splice_epoll");
        exit(1);
    }
    printf("ready server=proxy-splice pid=%d port=%d\n", (int)getpid(), ntohs(sa.sin_port));
    fflush(stdout);
    return lfd;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: proxy_splice_epoll LISTEN_PORT BACKEND_PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    backend = (struct sockaddr_in){.sin_family = AF_INET,
                                   .sin_port = htons((uint16_t)atoi(argv[2]))};
    backend.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ep = epoll_create1(EPOLL_CLOEXEC);
    int lfd = listen_on(atoi(argv[1]));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            end *e = evs[i].data.ptr;
            if (!e) {
                on_accept(lfd);
                continue;
            }
            if (e->owner->dead)
                continue;
            uint32_t got = evs[i].events;
            if (got & (EPOLLERR | EPOLLHUP)) {
                close_pair(e->owner);
                continue;
            }
            if (got & EPOLLOUT)
                on_writable(e);
            if ((got & EPOLLIN) && !e->owner->dead && (e->watch & EPOLLIN))
                on_readable(e);
        }
        while (dead) {
            pair *p = dead;
            dead = p->next_dead;
            free(p);
        }
    }
}
