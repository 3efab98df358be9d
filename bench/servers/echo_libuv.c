/*
 * Echo server on libuv, the idiomatic fast path: uv_read_start with one
 * static buffer per loop handed out by alloc_cb, uv_try_write first, and
 * uv_write of a copy of the rest only when the kernel did not take it all.
 * Usage: echo_libuv PORT (0 picks a free port).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

typedef struct {
    uv_write_t req;
    char data[];
} write_req;

static void on_close(uv_handle_t *h)
{
    free(h);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char slab[65536]; /* one loop, consumed before the next read */
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(slab, sizeof slab);
}

static void write_cb(uv_write_t *req, int status)
{
    if (status < 0 && !uv_is_closing((uv_handle_t *)req->handle))
        uv_close((uv_handle_t *)req->handle, on_close);
    free(req);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) {
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (nread == 0)
        return;
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
    int w = uv_try_write(s, &b, 1);
    if (w == nread)
        return;
    if (w == UV_EAGAIN)
        w = 0;
    if (w < 0) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    size_t rest = (size_t)nread - (size_t)w;
    write_req *wr = malloc(sizeof *wr + rest);
    if (!wr) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    memcpy(wr->data, buf->base + w, rest);
    uv_buf_t rb = uv_buf_init(wr->data, (unsigned)rest);
    if (uv_write(&wr->req, s, &rb, 1, write_cb) < 0) {
        free(wr);
        uv_close((uv_handle_t *)s, on_close);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    uv_tcp_t *client = malloc(sizeof *client);
    if (!client)
        return;
    uv_tcp_init(server->loop, client);
    if (uv_accept(server, (uv_stream_t *)client) != 0) {
        uv_close((uv_handle_t *)client, on_close);
        return;
    }
    uv_tcp_nodelay(client, 1);
    uv_read_start((uv_stream_t *)client, alloc_cb, read_cb);
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_tcp_init(loop, &server);
    uv_ip4_addr("127.0.0.1", port, &addr);
    int err = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (!err)
        err = uv_listen((uv_stream_t *)&server, 1024, on_connection);
    int len = sizeof addr;
    if (!err)
        err = uv_tcp_getsockname(&server, (struct sockaddr *)&addr, &len);
    if (err) {
        fprintf(stderr, "echo_libuv: %s\n", uv_strerror(err));
        return 1;
    }
    printf("ready server=libuv pid=%d port=%d\n", (int)getpid(), ntohs(addr.sin_port));
    fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}
