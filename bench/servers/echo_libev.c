/*
 * Echo server on libev: an ev_io per connection reading into one buffer and
 * writing straight back; the watcher switches to EV_WRITE only when a write
 * was partial, and back to EV_READ once the rest is written.
 * Usage: echo_libev PORT (0 picks a free port).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct conn {
    ev_io io;
    char *rest; /* unwritten bytes of a partial write, else NULL */
    size_t len, off;
} conn;

static void conn_free(struct ev_loop *loop, conn *c)
{
    ev_io_stop(loop, &c->io);
    close(c->io.fd);
    free(c->rest);
    free(c);
}

static void watch(struct ev_loop *loop, conn *c, int events)
{
    ev_io_stop(loop, &c->io);
    ev_io_set(&c->io, c->io.fd, events);
    ev_io_start(loop, &c->io);
}

static void conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    static char buf[65536];
    conn *c = (conn *)w;
    if (revents & EV_WRITE) {
        ssize_t n = write(w->fd, c->rest + c->off, c->len - c->off);
        if (n < 0) {
            if (errno != EAGAIN)
                conn_free(loop, c);
            return;
        }
        c->off += (size_t)n;
        if (c->off == c->len) {
            free(c->rest);
            c->rest = NULL;
            watch(loop, c, EV_READ);
        }
        return;
    }
    ssize_t n = read(w->fd, buf, sizeof buf);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        conn_free(loop, c);
        return;
    }
    ssize_t m = write(w->fd, buf, (size_t)n);
    if (m == n)
        return;
    if (m < 0) {
        if (errno != EAGAIN) {
            conn_free(loop, c);
            return;
        }
        m = 0;
    }
    c->len = (size_t)(n - m);
    c->off = 0;
    c->rest = malloc(c->len);
    if (!c->rest) {
        conn_free(loop, c);
        return;
    }
    memcpy(c->rest, buf + m, c->len);
    watch(loop, c, EV_WRITE);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    ev_io_init(&c->io, conn_cb, fd, EV_READ);
    ev_io_start(loop, &c->io);
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    signal(SIGPIPE, SIG_IGN);
    struct ev_loop *loop = ev_default_loop(0);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (!loop || lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(lfd, 1024) < 0 || getsockname(lfd, (struct sockaddr *)&sa, &len) < 0) {
        perror("echo_libev");
        return 1;
    }
    ev_io accept_w;
    ev_io_init(&accept_w, accept_cb, lfd, EV_READ);
    ev_io_start(loop, &accept_w);
    const char *backend = ev_backend(loop) == EVBACKEND_EPOLL ? "epoll" : "other";
    printf("ready server=libev pid=%d port=%d backend=%s\n", (int)getpid(), ntohs(sa.sin_port),
           backend);
    fflush(stdout);
    ev_run(loop, 0);
    return 0;
}
