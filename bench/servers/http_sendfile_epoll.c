/*
 * HTTP file server on raw epoll: the floor of the file-serving workloads,
 * what one thread can do with sendfile and nothing else.
 *
 * Its choices, each the cheap one that a minimal fast server would make:
 * - Level-triggered epoll, one thread, one accept per readiness event, as
 *   echo_epoll; TCP_NODELAY on accepted sockets, as every bench server.
 * - HTTP/1.1 keep-alive GET of a regular file under ROOT. Of a request only
 *   the request line and a "Connection: close" header are looked at; the
 *   path is taken as it is (no %-decoding, a query cut off) and refused
 *   with 404 when it has a ".." segment. HTTP/1.0, "Connection: close" or a
 *   400 close the connection once the response is out. Pipelined requests
 *   are answered in order.
 * - Per request: openat() under ROOT, fstat(), the header (status line and
 *   Content-Length, nothing else) with send(MSG_MORE) so that it leaves in
 *   the body's first segment, then sendfile() of the whole file, close().
 *   No cache of open files: nginx does not keep one by default either
 *   (open_file_cache off), so both pay the open per request.
 * - One read() per readable event into a static buffer. Per-connection
 *   state only while a response is unfinished (a send or sendfile the
 *   socket took in part: the connection is then watched for EPOLLOUT and
 *   not read) or while bytes of a request not yet whole, or of requests
 *   pipelined behind an unfinished response, wait.
 *
 * Usage: http_sendfile_epoll PORT ROOT (PORT 0 picks a free port). Listens
 * on 127.0.0.1.
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
#include <strings.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define REQ_MAX 16384 /* a request header longer than this gets 400 */
#define SENDFILE_MAX 0x7ffff000 /* the most one sendfile() moves */

/* A response not yet fully in the socket. */
typedef struct response {
    int file; /* -1 once sent or when there is no body */
    off_t off, end;
    size_t hlen, hoff;
    bool close_after;
    char head[128];
} response;

/* Only connections with something unfinished have one. */
typedef struct conn {
    bool sending; /* resp is unfinished */
    response resp;
    size_t inlen; /* bytes of requests not handled yet */
    char in[REQ_MAX];
} conn;

enum { DONE, PENDING, GONE };

static int ep, rootfd;
static conn **conns; /* indexed by fd */
static size_t nconns;

static conn *state(int fd) { return (size_t)fd < nconns ? conns[fd] : NULL; }

static conn *state_new(int fd)
{
    if ((size_t)fd >= nconns) {
        size_t n = nconns ? nconns : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        conn **p = realloc(conns, n * sizeof *p);
        if (!p)
            return NULL;
        memset(p + nconns, 0, (n - nconns) * sizeof *p);
        conns = p;
        nconns = n;
    }
    if (!conns[fd])
        conns[fd] = calloc(1, sizeof **conns);
    return conns[fd];
}

static void state_free(int fd)
{
    conn *c = state(fd);
    if (!c)
        return;
    if (c->sending && c->resp.file >= 0)
        close(c->resp.file);
    free(c);
    conns[fd] = NULL;
}

static void drop(int fd)
{
    state_free(fd);
    close(fd); /* also removes it from the epoll set */
}

static void watch(int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

/* Writes what is left of r: DONE, PENDING (the socket is full) or GONE
 * (the connection was closed). A short write means the socket buffer is
 * full, so the next call waits for EPOLLOUT instead of failing with EAGAIN. */
static int push(int fd, response *r)
{
    while (r->hoff < r->hlen) {
        size_t len = r->hlen - r->hoff;
        int more = r->file >= 0 && r->off < r->end ? MSG_MORE : 0;
        ssize_t w = send(fd, r->head + r->hoff, len, MSG_NOSIGNAL | more);
        if (w < 0)
            return errno == EAGAIN ? PENDING : GONE;
        r->hoff += (size_t)w;
        if ((size_t)w < len)
            return PENDING;
    }
    while (r->file >= 0 && r->off < r->end) {
        off_t left = r->end - r->off;
        size_t len = left > SENDFILE_MAX ? SENDFILE_MAX : (size_t)left;
        ssize_t w = sendfile(fd, r->file, &r->off, len);
        if (w < 0)
            return errno == EAGAIN ? PENDING : GONE;
        if (w == 0)
            return GONE; /* the file shrank: the length promised can't be kept */
        if ((size_t)w < len)
            return PENDING;
    }
    if (r->file >= 0) {
        close(r->file);
        r->file = -1;
    }
    return r->close_after ? GONE : DONE;
}

static bool has_dotdot(const char *p)
{
    for (const char *s = strstr(p, ".."); s; s = strstr(s + 1, ".."))
        if (s[-1] == '/' && (s[2] == '/' || s[2] == '\0'))
            return true;
    return false;
}

/* Case-insensitive memmem, for a header name. */
static bool has_header(const char *h, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (!strncasecmp(h + i, needle, n))
            return true;
    return false;
}

static void status_only(response *r, const char *status, bool close_after)
{
    r->hlen = (size_t)snprintf(r->head, sizeof r->head, "HTTP/1.1 %s\r\nContent-Length: 0\r\n%s\r\n",
                               status, close_after ? "Connection: close\r\n" : "");
    r->close_after = close_after;
}

/* Fills r for the request req[0..len) (its header, up to CRLF CRLF). */
static void prepare(response *r, char *req, size_t len)
{
    *r = (response){.file = -1};
    char *path = req + 4;
    char *sp2 = len > 4 && !memcmp(req, "GET /", 5) ? memchr(path, ' ', len - 4) : NULL;
    if (!sp2 || (size_t)(sp2 - req) + 9 > len) {
        status_only(r, "400 Bad Request", true);
        return;
    }
    bool close_after = !memcmp(sp2 + 1, "HTTP/1.0", 8) ||
                       has_header(req, len, "\nConnection: close\r");
    *sp2 = '\0';
    path[strcspn(path, "?")] = '\0';
    struct stat st;
    int f = has_dotdot(path) ? -1 : openat(rootfd, path + 1, O_RDONLY | O_CLOEXEC);
    if (f < 0 || fstat(f, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (f >= 0)
            close(f);
        status_only(r, "404 Not Found", close_after);
        return;
    }
    r->file = f;
    r->end = st.st_size;
    r->close_after = close_after;
    r->hlen = (size_t)snprintf(r->head, sizeof r->head, "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\n\r\n",
                               (long long)st.st_size);
}

/* Answers the whole requests in buf[0..len); keeps an unfinished response
 * and the bytes after it in the connection's state. */
static void serve(int fd, char *buf, size_t len)
{
    size_t pos = 0;
    conn *c = state(fd);
    while (pos < len) {
        char *end = memmem(buf + pos, len - pos, "\r\n\r\n", 4);
        if (!end)
            break;
        size_t rlen = (size_t)(end + 4 - (buf + pos));
        response r;
        prepare(&r, buf + pos, rlen);
        pos += rlen;
        int st = push(fd, &r);
        if (st == GONE) {
            if (r.file >= 0)
                close(r.file);
            drop(fd);
            return;
        }
        if (st == PENDING) {
            if (!(c = state_new(fd))) {
                if (r.file >= 0)
                    close(r.file);
                drop(fd);
                return;
            }
            c->resp = r;
            c->sending = true;
            watch(fd, EPOLLOUT);
            break;
        }
    }
    size_t left = len - pos;
    if (left == 0) {
        if (c && !c->sending)
            state_free(fd);
        else if (c)
            c->inlen = 0;
        return;
    }
    if (left >= REQ_MAX || (!c && !(c = state_new(fd)))) {
        drop(fd); /* a header too long for the buffer, or no memory */
        return;
    }
    memmove(c->in, buf + pos, left);
    c->inlen = left;
}

static void on_readable(int fd)
{
    static char buf[REQ_MAX];
    conn *c = state(fd);
    size_t have = c ? c->inlen : 0;
    if (have)
        memcpy(buf, c->in, have); /* rare: a request that came in pieces */
    ssize_t n = read(fd, buf + have, sizeof buf - have);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        drop(fd);
        return;
    }
    serve(fd, buf, have + (size_t)n);
}

static void on_writable(int fd)
{
    static char buf[REQ_MAX];
    conn *c = state(fd);
    if (!c || !c->sending)
        return;
    int st = push(fd, &c->resp);
    if (st == PENDING)
        return;
    if (st == GONE) {
        drop(fd);
        return;
    }
    c->sending = false;
    watch(fd, EPOLLIN);
    size_t have = c->inlen;
    memcpy(buf, c->in, have);
    serve(fd, buf, have); /* the requests pipelined behind it */
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
        perror("http_sendfile_epoll");
        exit(1);
    }
    printf("ready server=http-floor pid=%d port=%d\n", (int)getpid(), ntohs(sa.sin_port));
    fflush(stdout);
    return lfd;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: http_sendfile_epoll PORT ROOT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    rootfd = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        perror(argv[2]);
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    int lfd = listen_on(atoi(argv[1]));
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

    int one = 1;
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
            } else if (state(fd) && state(fd)->sending) {
                on_writable(fd); /* an error or hang-up too: its send fails */
            } else {
                on_readable(fd);
            }
        }
    }
}
