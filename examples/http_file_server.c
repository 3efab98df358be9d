/* A static file server over HTTP/1.1, on 127.0.0.1.
 *
 * Usage: http_file_server [--port N] [--root DIR] [--tls CERT KEY]
 *   --port N        the port (default 8080; 0 picks a free one)
 *   --root DIR      the directory served (default: the current one)
 *   --tls CERT KEY  HTTPS, with that certificate chain and key (PEM)
 * Once listening it prints "ready port=PORT". SIGINT or SIGTERM stops it.
 *
 * GET and HEAD of the regular files under DIR (a directory serves its
 * index.html), with keep-alive and pipelining; no listing, no ranges, no
 * request bodies. Nothing outside DIR is served: ".." in a path is refused
 * and symbolic links are followed only when they stay inside DIR (the
 * kernel checks it as it opens the file: openat2, Linux 5.6 or later).
 * Try it with: curl -v http://127.0.0.1:8080/
 *
 * Each body goes out with em_stream_file_fd, straight from the file. A
 * connection answers one request at a time: the requests that come while a
 * body is streaming wait in its input buffer until the body is written. */
#include <em.h>

#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "http/request.h"

/* Room for the head being read and for pipelined requests behind a body
 * being written; what comes beyond it is dropped (see receive_data). */
#define INPUT_MAX (2 * HTTP_HEAD_MAX)
#define IDLE_TIMEOUT_S 30.0
/* How long a connection that answered its last request waits for the
 * client to close (see finish). */
#define LINGER_TIMEOUT_S 5.0

struct server {
    int root_fd; /* what is served is opened beneath it */
    bool tls;
    em_tls_opts tls_opts;
};

struct client {
    em_conn *conn;
    const struct server *srv;
    bool streaming;        /* a body is being written: later requests wait */
    bool close_after_body; /* the request being answered was the last */
    bool closing;          /* the connection ends once its output is written */
    bool input_cut;        /* input overflowed: the connection ends after what fitted */
    bool unbound;          /* unbind came while streaming: body_sent frees */
    size_t len;
    char in[INPUT_MAX];
};

/* ---------------------------------------------------------- responses */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Internal Server Error";
    }
}

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"}, {"htm", "text/html; charset=utf-8"},
        {"txt", "text/plain; charset=utf-8"}, {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"}, {"json", "application/json"},
        {"png", "image/png"}, {"jpg", "image/jpeg"}, {"jpeg", "image/jpeg"},
        {"gif", "image/gif"}, {"svg", "image/svg+xml"}, {"pdf", "application/pdf"},
        {"wasm", "application/wasm"},
    };
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(dot + 1, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

/* The IMF-fixdate of RFC 9110; strftime's day and month names are the C
 * locale's, which HTTP wants, as this program never calls setlocale. */
static void http_date(char *buf, size_t size)
{
    time_t now = time(NULL);
    struct tm tm;
    if (!gmtime_r(&now, &tm) || !strftime(buf, size, "%a, %d %b %Y %H:%M:%S GMT", &tm))
        snprintf(buf, size, "Thu, 01 Jan 1970 00:00:00 GMT");
}

static void end_lingering(em_reactor *r, void *arg)
{
    em_conn *c = em_conn_by_sig(r, (em_sig)(uintptr_t)arg);
    if (c)
        em_close_connection(c, false);
}

/* Ends the connection: the answer goes out, then the end of the stream,
 * and the client's own end is awaited for a while, its bytes read and
 * ignored. Closing at once, with request bytes unread in the socket,
 * would send a reset, which can destroy the answer before the client has
 * read it (an error about a head too long often comes while the head is
 * still arriving). */
static void finish(struct client *cl)
{
    cl->closing = true;
    em_reactor *r = em_conn_reactor(cl->conn);
    void *sig = (void *)(uintptr_t)em_signature(cl->conn);
    if (!em_add_timer(r, LINGER_TIMEOUT_S, end_lingering, sig) || em_close_write(cl->conn) < 0)
        em_close_connection_after_writing(cl->conn);
}

static void send_head(struct client *cl, int status, unsigned long long length, const char *type,
                      bool keep_alive, bool allow)
{
    char date[64], head[512];
    http_date(date, sizeof date);
    /* "keep-alive" even to HTTP/1.1, where it is the default: an HTTP/1.0
     * client that asked for it needs to hear it */
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %llu\r\n"
                     "%sConnection: %s\r\n\r\n",
                     status, reason_phrase(status), date, type, length,
                     allow ? "Allow: GET, HEAD\r\n" : "", keep_alive ? "keep-alive" : "close");
    if (n > 0 && (size_t)n < sizeof head)
        em_send_data(cl->conn, head, (size_t)n);
}

static void send_error(struct client *cl, int status, bool head_only, bool keep_alive, bool allow)
{
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, reason_phrase(status));
    send_head(cl, status, (unsigned long long)n, "text/plain; charset=utf-8", keep_alive, allow);
    if (!head_only)
        em_send_data(cl->conn, body, (size_t)n);
    if (!keep_alive)
        finish(cl);
}

/* -------------------------------------------------------------- files */

/* Opens rel beneath dirfd: the kernel refuses a ".." or a symbolic link
 * that leads out of it (RESOLVE_BENEATH), so no race can swap a link in
 * between a check and the open, and the file checked is the file sent.
 * O_NONBLOCK: a FIFO must not make the open wait for a writer. */
static int open_beneath(int dirfd, const char *rel)
{
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    return (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
}

static int status_of_open_error(int err)
{
    return err == ENOENT || err == ENOTDIR || err == ENAMETOOLONG ? 404 : 403;
}

/* The file a decoded path names, opened: 200 with its descriptor and size,
 * else the status to answer. A directory serves its index.html, else 403
 * (no listing); FIFOs and devices are 403. */
static int open_file(const struct server *srv, const char *path, int *fd_out, off_t *size)
{
    int fd = open_beneath(srv->root_fd, path[1] ? path + 1 : ".");
    if (fd < 0)
        return status_of_open_error(errno);
    struct stat st;
    bool ok = fstat(fd, &st) == 0;
    if (ok && S_ISDIR(st.st_mode)) {
        int index = open_beneath(fd, "index.html");
        close(fd);
        if (index < 0)
            return 403;
        fd = index;
        ok = fstat(fd, &st) == 0;
    }
    if (!ok || !S_ISREG(st.st_mode)) {
        close(fd);
        return 403;
    }
    *fd_out = fd;
    *size = st.st_size;
    return 200;
}

/* ----------------------------------------------------------- requests */

static void serve_buffered(struct client *cl);

static void body_sent(em_conn *c, int err, void *arg)
{
    struct client *cl = arg;
    cl->streaming = false;
    if (cl->unbound) {
        free(cl);
        return;
    }
    if (err) {
        cl->closing = true;
        em_close_connection(c, false);
    } else if (cl->close_after_body) {
        finish(cl);
    } else {
        serve_buffered(cl);
    }
}

/* Ends the connection at once, dropping what is queued: a head already
 * queued was wrong, and the client can only be told so by the end. */
static void abort_answer(struct client *cl, const char *path, const char *why)
{
    fprintf(stderr, "http_file_server: %s: %s\n", path, why);
    cl->closing = true;
    em_close_connection(cl->conn, false);
}

/* The body of the file open on fd, whose head announced size bytes. */
static void stream_body(struct client *cl, const char *path, int fd, off_t size,
                        bool keep_alive)
{
    size_t queued = em_get_outbound_data_size(cl->conn);
    int err = em_stream_file_fd(cl->conn, fd, 0, body_sent, cl);
    if (err < 0) {
        close(fd); /* still ours */
        abort_answer(cl, path, em_strerror(err));
        return;
    }
    cl->streaming = true;
    cl->close_after_body = !keep_alive;
    /* libem sends the size it finds: a file that grew since the head was
     * made would overrun it */
    if (em_get_outbound_data_size(cl->conn) - queued != (size_t)size)
        abort_answer(cl, path, "changed while being served");
}

static void send_file(struct client *cl, const struct http_request *req)
{
    bool head_only = req->method == HTTP_HEAD;
    int fd = -1;
    off_t size = 0;
    int status = open_file(cl->srv, req->path, &fd, &size);
    if (status != 200) {
        send_error(cl, status, head_only, req->keep_alive, false);
        return;
    }
    send_head(cl, 200, (unsigned long long)size, content_type(req->path), req->keep_alive,
              false);
    if (!head_only) {
        stream_body(cl, req->path, fd, size, req->keep_alive);
        return;
    }
    close(fd);
    if (!req->keep_alive)
        finish(cl);
}

static void answer(struct client *cl, const struct http_request *req)
{
    if (req->status == 200)
        send_file(cl, req);
    else
        send_error(cl, req->status, req->method == HTTP_HEAD, req->keep_alive,
                   req->allow_header);
}

static void drop_input(struct client *cl, size_t n)
{
    memmove(cl->in, cl->in + n, cl->len - n);
    cl->len -= n;
}

/* Answers the complete requests in the input, in order, until one of them
 * streams a body (body_sent comes back here) or ends the connection. */
static void serve_buffered(struct client *cl)
{
    while (!cl->streaming && !cl->closing) {
        struct http_request req;
        size_t used = http_parse_request(cl->in, cl->len, &req);
        if (!used)
            break;
        drop_input(cl, used);
        answer(cl, &req);
    }
    if (cl->input_cut && !cl->streaming && !cl->closing)
        finish(cl);
}

/* ---------------------------------------------------------- callbacks */

static void post_init(em_conn *c)
{
    const struct server *srv = em_conn_arg(c);
    struct client *cl = calloc(1, sizeof *cl);
    if (!cl) {
        em_close_connection(c, false);
        return;
    }
    cl->conn = c;
    cl->srv = srv;
    em_conn_set_user(c, cl);
    em_set_comm_inactivity_timeout(c, IDLE_TIMEOUT_S);
    if (srv->tls) {
        int err = em_start_tls(c, &srv->tls_opts);
        if (err) {
            fprintf(stderr, "http_file_server: TLS: %s%s%s\n", em_strerror(err),
                    em_tls_error_string(c) ? ": " : "",
                    em_tls_error_string(c) ? em_tls_error_string(c) : "");
            em_close_connection(c, false);
        }
    }
}

static void receive_data(em_conn *c, const char *data, size_t len)
{
    struct client *cl = em_conn_user(c);
    while (cl && len > 0 && !cl->closing && !cl->input_cut) {
        size_t room = sizeof cl->in - cl->len;
        if (room == 0) {
            /* Only while a body streams: otherwise no more than a head is
             * ever kept. Not reading would hold the body too (a paused
             * connection writes nothing), so the rest is dropped, and the
             * connection ends once the requests that fitted are answered;
             * HTTP clients retry what a closed connection left unanswered
             * (RFC 9112, 9.3.2). */
            cl->input_cut = true;
            break;
        }
        size_t n = len < room ? len : room;
        memcpy(cl->in + cl->len, data, n);
        cl->len += n;
        data += n;
        len -= n;
        serve_buffered(cl);
    }
}

static void unbind(em_conn *c, int reason)
{
    struct client *cl = em_conn_user(c);
    if (reason == EM_ETLS)
        fprintf(stderr, "http_file_server: TLS: %s\n",
                em_tls_error_string(c) ? em_tls_error_string(c) : em_strerror(reason));
    if (cl && cl->streaming)
        cl->unbound = true;
    else
        free(cl);
}

/* --------------------------------------------------------------- main */

struct options {
    int port;
    const char *root, *cert, *key;
};

static bool parse_port(const char *s, int *port)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 65535)
        return false;
    *port = (int)v;
    return true;
}

static bool parse_args(int argc, char **argv, struct options *opt)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            if (!parse_port(argv[++i], &opt->port))
                return false;
        } else if (strcmp(argv[i], "--root") == 0 && i + 1 < argc) {
            opt->root = argv[++i];
        } else if (strcmp(argv[i], "--tls") == 0 && i + 2 < argc) {
            opt->cert = argv[++i];
            opt->key = argv[++i];
        } else {
            return false;
        }
    }
    return true;
}

static bool set_root(struct server *srv, const char *root)
{
    srv->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (srv->root_fd < 0)
        return false;
    int probe = open_beneath(srv->root_fd, ".");
    if (probe < 0) /* openat2 needs Linux 5.6 */
        return false;
    close(probe);
    return true;
}

/* Says at the start, not at the first connection, that a file will not do. */
static bool readable(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "http_file_server: %s: %s\n", path, strerror(errno));
        return false;
    }
    fclose(f);
    return true;
}

static void stop(em_reactor *r, void *arg)
{
    (void)arg;
    em_stop(r);
}

int main(int argc, char **argv)
{
    static const em_handler http = {.post_init = post_init, .receive_data = receive_data,
                                    .unbind = unbind};
    static struct server srv;
    struct options opt = {.port = 8080, .root = "."};
    if (!parse_args(argc, argv, &opt)) {
        fprintf(stderr, "usage: http_file_server [--port N] [--root DIR] [--tls CERT KEY]\n");
        return 2;
    }
    if (!set_root(&srv, opt.root)) {
        fprintf(stderr, "http_file_server: %s: %s\n", opt.root, strerror(errno));
        return 1;
    }
    if (opt.cert) {
        if (!readable(opt.cert) || !readable(opt.key))
            return 1;
        srv.tls = true;
        srv.tls_opts.cert_chain_file = opt.cert;
        srv.tls_opts.private_key_file = opt.key;
    }
    em_reactor *r = em_reactor_new(NULL);
    em_server *s = r ? em_start_server(r, "127.0.0.1", opt.port, &http, &srv) : NULL;
    int err = s ? em_add_signal_handler(r, SIGINT, stop, NULL) : -errno;
    if (!err)
        err = em_add_signal_handler(r, SIGTERM, stop, NULL);
    if (err) {
        fprintf(stderr, "http_file_server: %s\n", em_strerror(err));
        em_reactor_free(r);
        return 1;
    }
    printf("ready port=%d\n", em_server_port(s));
    fflush(stdout);
    int rc = em_run(r);
    em_reactor_free(r);
    return rc < 0 ? 1 : 0;
}
