/*
 * TCP proxy on raw epoll, read(2) and write(2) through a buffer of its own:
 * the floor of the proxy workloads for a proxy that copies, as HAProxy
 * does without splicing and libem does with EM_SPLICE=0.
 *
 * Its choices, each the cheap one that a minimal fast proxy would make:
 * - Level-triggered epoll, one thread, one accept per readiness event, as
 *   echo_epoll. Each accepted client gets its own non-blocking connect to
 *   the backend; the client is not read until that connect is done, so
 *   nothing needs holding meanwhile. TCP_NODELAY on both sockets, as every
 *   bench server sets it on its own.
 * - One static buffer of BUFFER_BYTES (default 64 KiB) for every read: per
 *   readable event one read() into it and one write() of what was read to
 *   the other socket. The buffer's size sets how many bytes a pair of
 *   system calls moves; HAProxy's is 16 KiB (tune.bufsize).
 * - State only while a write is partial: the rest is copied out of the
 *   static buffer, that side is not read, and the other socket is watched
 *   for EPOLLOUT until the rest is written; so a slow side stops the fast
 *   one, with at most a buffer's worth held per direction.
 * - End of file, an error or a hang-up on either side closes both at
 *   once: the workloads never half-close, so nothing in flight is lost.
 *   A pair closed while the same epoll_wait batch still holds an event for
 *   its other side is freed after the batch.
 *
 * Usage: proxy_copy_epoll LISTEN_PORT BACKEND_PORT [BUFFER_BYTES]
 * (LISTEN_PORT 0 picks a free port). Listens on 127.0.0.1 and connects to
 * 127.0.0.1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
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

#define DEFAULT_BUFFER 65536

typedef struct pair pair;
typedef struct end end;
struct end {
    int fd;
    char *rest;     /* what was read from fd and the peer did not take yet */
    size_t queued;  /* bytes at rest + off */
    size_t off;
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
static char *buf;
static size_t bufsize;

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
        free(e->rest);
    }
    p->dead = true;
    p->next_dead = dead;
    dead = p;
}

/* Writes what the peer did not take of e's earlier read; false when the
 * peer failed. A short write means the socket is full: the rest waits for
 * EPOLLOUT rather than for an EAGAIN. */
static bool flush(end *e)
{
    if (!e->queued)
        return true;
    ssize_t w = write(e->peer->fd, e->rest + e->off, e->queued);
    if (w < 0)
        return errno == EAGAIN;
    e->off += (size_t)w;
    e->queued -= (size_t)w;
    if (!e->queued) {
        free(e->rest);
        e->rest = NULL;
    }
    return true;
}

/* Keeps buf[from..n) for a later write; false without memory. */
static bool keep(end *e, size_t from, size_t n)
{
    e->rest = malloc(n - from);
    if (!e->rest)
        return false;
    memcpy(e->rest, buf + from, n - from);
    e->off = 0;
    e->queued = n - from;
    return true;
}

static void on_readable(end *e)
{
    ssize_t n = read(e->fd, buf, bufsize);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        close_pair(e->owner);
        return;
    }
    ssize_t w = write(e->peer->fd, buf, (size_t)n);
    if (w == n)
        return;
    if (w < 0 && errno != EAGAIN) {
        close_pair(e->owner);
        return;
    }
    if (!keep(e, w < 0 ? 0 : (size_t)w, (size_t)n)) {
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
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
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
        perror("proxy_copy_epoll");
        exit(1);
    }
    printf("ready server=proxy-copy pid=%d port=%d\n", (int)getpid(), ntohs(sa.sin_port));
    fflush(stdout);
    return lfd;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: proxy_copy_epoll LISTEN_PORT BACKEND_PORT [BUFFER_BYTES]\n");
        return 2;
    }
    bufsize = argc == 4 ? strtoul(argv[3], NULL, 10) : DEFAULT_BUFFER;
    if (!bufsize || !(buf = malloc(bufsize))) {
        fprintf(stderr, "proxy_copy_epoll: no buffer of %s bytes\n", argv[3]);
        return 1;
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
