/*
 * TLS echo server on OpenSSL and raw epoll: the floor of the TLS workloads,
 * what one thread can do with OpenSSL and nothing else.
 *
 * Its choices, each the cheap one that a minimal fast server would make:
 * - Level-triggered epoll, one thread, one accept per readiness event, as
 *   echo_epoll. OpenSSL reads and writes the socket itself (SSL_set_fd):
 *   no copies through memory BIOs.
 * - The handshake needs no code of its own: an accepted connection gets an
 *   SSL in accept state, and SSL_read, called on every readable event, does
 *   the handshake before it reads data.
 * - Read-ahead: OpenSSL fills its buffer with one read(2) instead of
 *   reading each record's 5-byte header and then its body (two per record).
 *   Records it already holds are read before going back to epoll_wait
 *   (SSL_has_pending), since epoll sees only the socket.
 * - Per record read, one SSL_read into a 16 KiB buffer (a record's most)
 *   and one SSL_write of it. State only for a write OpenSSL could not
 *   finish (WANT_WRITE): a copy of its bytes, for the retry OpenSSL
 *   requires with the same bytes; reading stops and the socket is watched
 *   for EPOLLOUT until it is done.
 * - A client's close_notify is answered with one SSL_shutdown (not waited
 *   for); a connection with an error is freed and closed at once.
 * - OpenSSL's defaults otherwise (tls_ctx.h): stateless TLS 1.3 session
 *   tickets, 2 per full handshake; buffers kept while a connection lives
 *   (SSL_MODE_RELEASE_BUFFERS would allocate and free per record).
 *
 * Usage: echo_tls_openssl PORT CERT KEY (PORT 0 picks a free port; CERT a
 * PEM chain, leaf first; KEY its private key). Listens on 127.0.0.1.
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

#include "tls_ctx.h"

typedef struct {
    SSL *ssl;   /* NULL: no connection on this descriptor */
    char *rest; /* the bytes of an unfinished SSL_write, for its retry */
    int rest_len;
} slot;

static int ep;
static SSL_CTX *ctx;
static slot *slots; /* indexed by descriptor */
static size_t nslots;

static void drop(int fd)
{
    slot *s = &slots[fd];
    SSL_free(s->ssl);
    free(s->rest);
    *s = (slot){0};
    ERR_clear_error(); /* a stale error would confuse the next SSL_get_error */
    close(fd);         /* also removes it from the epoll set */
}

static void watch(int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0)
        drop(fd);
}

/* SSL_read returned n <= 0 on fd: wait, answer a close_notify, or drop. */
static void read_failed(int fd, int n)
{
    SSL *ssl = slots[fd].ssl;
    switch (SSL_get_error(ssl, n)) {
    case SSL_ERROR_WANT_READ:
        return;
    case SSL_ERROR_WANT_WRITE: /* the handshake's own write */
        watch(fd, EPOLLOUT);
        return;
    case SSL_ERROR_ZERO_RETURN:
        SSL_shutdown(ssl);
        /* fall through */
    default:
        drop(fd);
    }
}

/* Keeps the n bytes of an SSL_write that must be retried, and waits for
 * EPOLLOUT instead of EPOLLIN. */
static void keep(int fd, const char *data, int n)
{
    slot *s = &slots[fd];
    s->rest = malloc((size_t)n);
    if (!s->rest) {
        drop(fd);
        return;
    }
    memcpy(s->rest, data, (size_t)n);
    s->rest_len = n;
    watch(fd, EPOLLOUT);
}

static void on_readable(int fd)
{
    static char buf[16384];
    SSL *ssl = slots[fd].ssl;
    do {
        int n = SSL_read(ssl, buf, sizeof buf);
        if (n <= 0) {
            read_failed(fd, n);
            return;
        }
        int w = SSL_write(ssl, buf, n);
        if (w <= 0) {
            if (SSL_get_error(ssl, w) == SSL_ERROR_WANT_WRITE)
                keep(fd, buf, n);
            else
                drop(fd);
            return;
        }
    } while (SSL_has_pending(ssl));
}

static void on_writable(int fd)
{
    slot *s = &slots[fd];
    if (s->rest) {
        int w = SSL_write(s->ssl, s->rest, s->rest_len);
        if (w <= 0) {
            if (SSL_get_error(s->ssl, w) != SSL_ERROR_WANT_WRITE)
                drop(fd);
            return;
        }
        free(s->rest);
        s->rest = NULL;
    }
    watch(fd, EPOLLIN);
    /* Records read ahead while writing wait in OpenSSL, not in the socket;
     * a handshake that was waiting to write goes on. */
    if (slots[fd].ssl && (SSL_has_pending(s->ssl) || !SSL_is_init_finished(s->ssl)))
        on_readable(fd);
}

/* The slot of descriptor fd, the table grown as needed; NULL when out of
 * memory. */
static slot *slot_for(int fd)
{
    if ((size_t)fd >= nslots) {
        size_t n = nslots ? nslots : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        slot *p = realloc(slots, n * sizeof *p);
        if (!p)
            return NULL;
        memset(p + nslots, 0, (n - nslots) * sizeof *p);
        slots = p;
        nslots = n;
    }
    return &slots[fd];
}

static void on_accept(int lfd)
{
    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0)
        return;
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    slot *s = slot_for(c);
    SSL *ssl = s ? SSL_new(ctx) : NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
    if (!ssl || !SSL_set_fd(ssl, c) || epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0) {
        SSL_free(ssl);
        ERR_clear_error();
        close(c);
        return;
    }
    SSL_set_accept_state(ssl);
    s->ssl = ssl;
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
        perror("echo_tls_openssl");
        exit(1);
    }
    printf("ready server=tls-openssl pid=%d port=%d\n", (int)getpid(), ntohs(sa.sin_port));
    fflush(stdout);
    return lfd;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: echo_tls_openssl PORT CERT KEY\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    ctx = bench_tls_ctx("echo_tls_openssl", argv[2], argv[3]);
    if (!ctx)
        return 1;
    SSL_CTX_set_read_ahead(ctx, 1);
    ep = epoll_create1(EPOLL_CLOEXEC);
    int lfd = listen_on(atoi(argv[1]));
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd)
                on_accept(lfd);
            else if (!slots[fd].ssl)
                continue; /* dropped earlier in this batch */
            else if (evs[i].events & EPOLLOUT)
                on_writable(fd);
            else
                on_readable(fd);
        }
    }
}
