/*
 * TLS echo server on libevent with bufferevent_openssl, as libevent's users
 * write one: an evconnlistener; per connection an SSL from the shared
 * context (tls_ctx.h, OpenSSL's defaults) under a
 * bufferevent_openssl_socket_new in BUFFEREVENT_SSL_ACCEPTING state; a read
 * callback that moves the input buffer into the output buffer.
 * Usage: echo_tls_libevent PORT CERT KEY (PORT 0 picks a free port).
 */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tls_ctx.h"

static SSL_CTX *ctx;

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        bufferevent_free(bev);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    (void)sa;
    (void)socklen;
    (void)arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    SSL *ssl = SSL_new(ctx);
    /* Only out of memory fails. The SSL is not freed here then: with
     * BEV_OPT_CLOSE_ON_FREE libevent may have done it already. */
    struct bufferevent *bev =
        ssl ? bufferevent_openssl_socket_new(evconnlistener_get_base(l), fd, ssl,
                                             BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)
            : NULL;
    if (!bev) {
        evutil_closesocket(fd);
        return;
    }
    bufferevent_setcb(bev, read_cb, NULL, event_cb, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: echo_tls_libevent PORT CERT KEY\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    ctx = bench_tls_ctx("echo_tls_libevent", argv[2], argv[3]);
    if (!ctx)
        return 1;
    int port = atoi(argv[1]);
    struct event_base *base = event_base_new();
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct evconnlistener *l =
        base ? evconnlistener_new_bind(base, accept_cb, NULL,
                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
                                       (struct sockaddr *)&sa, sizeof sa)
             : NULL;
    socklen_t len = sizeof sa;
    if (!l || getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sa, &len) < 0) {
        fprintf(stderr, "echo_tls_libevent: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    printf("ready server=tls-libevent pid=%d port=%d backend=%s\n", (int)getpid(),
           ntohs(sa.sin_port), event_base_get_method(base));
    fflush(stdout);
    event_base_dispatch(base);
    evconnlistener_free(l);
    event_base_free(base);
    SSL_CTX_free(ctx);
    return 0;
}
