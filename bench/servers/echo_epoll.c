/*
 * Echo server on raw epoll: the practical limit for one thread.
 *
 * Level-triggered; per readable event one read() and one write() of what was
 * read. Per-connection state exists only while a write is partial: then the
 * rest is kept, reading stops and the socket is watched for EPOLLOUT until
 * the rest is written. Usage: echo_epoll PORT (0 picks a free port).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct pending {
    size_t len, off;
    char data[];
} pending;

static int ep;
static pending **pend; /* indexed by fd; NULL when nothing is left to write */
static size_t npend;

static void drop(int fd)
{
    if ((size_t)fd < npend && pend[fd]) {
        free(pend[fd]);
        pend[fd] = NULL;
    }
    close(fd); /* also removes it from the epoll set */
}

static int keep(int fd, const char *data, size_t len)
{
    if ((size_t)fd >= npend) {
        size_t n = npend ? npend : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        pending **p = realloc(pend, n * sizeof *p);
        if (!p)
            return -1;
        memset(p + npend, 0, (n - npend) * sizeof *p);
        pend = p;
        npend = n;
    }
    pending *p = malloc(sizeof *p + len);
    if (!p)
        return -1;
    p->len = len;
    p->off = 0;
    memcpy(p->data, data, len);
    pend[fd] = p;
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
    return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

static void on_writable(int fd)
{
    pending *p = (size_t)fd < npend ? pend[fd] : NULL;
    if (!p)
        return;
    ssize_t w = write(fd, p->data + p->off, p->len - p->off);
    if (w < 0) {
        if (errno != EAGAIN)
            drop(fd);
        return;
    }
    p->off += (size_t)w;
    if (p->off < p->len)
        return;
    free(p);
    pend[fd] = NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

static void on_readable(int fd)
{
    static char buf[65536];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        drop(fd);
        return;
    }
    ssize_t w = write(fd, buf, (size_t)n);
    if (w == n)
        return;
    if (w < 0) {
        if (errno != EAGAIN) {
            drop(fd);
            return;
        }
        w = 0;
    }
    if (keep(fd, buf + w, (size_t)(n - w)) < 0)
        drop(fd);
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 1024) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &len) < 0) {
        perror("echo_epoll");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("ready server=epoll pid=%d port=%d\n", (int)getpid(), ntohs(sa.sin_port));
    fflush(stdout);

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
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (c < 0)
                    continue;
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
            } else if (evs[i].events & EPOLLOUT) {
                on_writable(fd);
            } else {
                on_readable(fd);
            }
        }
    }
}
