/* A TCP proxy: every client accepted on 127.0.0.1:listen_port gets its own
 * connection to 127.0.0.1:backend_port, and the bytes go both ways through
 * em_proxy_incoming_to: spliced from socket to socket by the kernel, never
 * copied through the proxy, with at most 1 MiB waiting for a slow side (the
 * faster side is simply not read meanwhile).
 *
 * A side that closes only its sending half (shutdown(SHUT_WR), as a client
 * does when it has sent its whole request) is half-closed on the other leg
 * too, once its bytes are written, and the reply still flows back: each
 * side has a peer_closed callback, so it stays open until both directions
 * have ended. When a side goes for good (a reset, an error), the other is
 * closed once what it was sent is written.
 *
 * Usage: tcp_proxy [listen_port] [backend_port]   (default 8082 -> 8081;
 * try it in front of echo_server) */
#include <em.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int backend_port = 8081;

/* Each side keeps the other's signature: a pointer could outlive it. */
static void pair_up(em_conn *a, em_conn *b)
{
    em_conn_set_user(a, (void *)(uintptr_t)em_signature(b));
    em_conn_set_user(b, (void *)(uintptr_t)em_signature(a));
}

static void close_other_side(em_conn *c, int reason)
{
    em_conn *other = em_conn_by_sig(em_conn_reactor(c), (em_sig)(uintptr_t)em_conn_user(c));
    if (other)
        em_close_connection_after_writing(other);
    if (reason)
        fprintf(stderr, "tcp_proxy: a connection ended: %s\n", em_strerror(reason));
}

/* The proxy passes the FIN on by itself; the connection stays open for
 * what the other side still sends, and closes once both have ended. */
static void keep_half_open(em_conn *c) { (void)c; }

static const em_handler backend_side = {.unbind = close_other_side,
                                        .peer_closed = keep_half_open};

static void client_post_init(em_conn *client)
{
    em_conn *backend = em_connect(em_conn_reactor(client), "127.0.0.1", backend_port,
                                  &backend_side, NULL);
    if (!backend) {
        fprintf(stderr, "tcp_proxy: backend: %s\n", em_strerror(errno));
        em_close_connection(client, false);
        return;
    }
    pair_up(client, backend);
    /* The backend may still be connecting: what the client sends waits. */
    if (em_proxy_incoming_to(client, backend, 0, 0) < 0 ||
        em_proxy_incoming_to(backend, client, 0, 0) < 0) {
        em_close_connection(backend, false);
        em_close_connection(client, false);
    }
}

int main(int argc, char **argv)
{
    static const em_handler client_side = {.post_init = client_post_init,
                                           .unbind = close_other_side,
                                           .peer_closed = keep_half_open};
    int port = argc > 1 ? atoi(argv[1]) : 8082;
    backend_port = argc > 2 ? atoi(argv[2]) : 8081;
    em_reactor *r = em_reactor_new(NULL);
    em_server *s = r ? em_start_server(r, "127.0.0.1", port, &client_side, NULL) : NULL;
    if (!s) {
        fprintf(stderr, "tcp_proxy: %s\n", em_strerror(errno));
        return 1;
    }
    /* port 0 picks a free one: say which */
    printf("proxying 127.0.0.1:%d to 127.0.0.1:%d (%s backend)\n", em_server_port(s),
           backend_port, em_backend_name(r));
    fflush(stdout);
    em_run(r);
    em_reactor_free(r);
    return 0;
}
