/* Echoes back every byte it receives, over TLS.
 * Usage: tls_echo_server CERT KEY [port] (default 8443; 0 picks a free one)
 * Prints "ready port=N" once it is listening.
 * Try it with: openssl s_client -connect 127.0.0.1:8443 -CAfile CERT */
#include <em.h>
#include <stdio.h>
#include <stdlib.h>

static em_tls_opts tls; /* the certificate and key, for every connection */

static void post_init(em_conn *c)
{
    int err = em_start_tls(c, &tls);
    if (err) {
        fprintf(stderr, "tls_echo_server: %s: %s\n", em_strerror(err), em_tls_error_string(c));
        em_close_connection(c, false);
    }
}

static void receive_data(em_conn *c, const char *data, size_t len) { em_send_data(c, data, len); }

static void unbind(em_conn *c, int reason)
{
    if (reason) /* a failed handshake says why */
        fprintf(stderr, "connection closed: %s%s%s\n", em_strerror(reason),
                em_tls_error_string(c) ? ": " : "",
                em_tls_error_string(c) ? em_tls_error_string(c) : "");
}

int main(int argc, char **argv)
{
    static const em_handler echo = {.post_init = post_init, .receive_data = receive_data,
                                    .unbind = unbind};
    if (argc < 3) {
        fprintf(stderr, "usage: tls_echo_server CERT KEY [port]\n");
        return 2;
    }
    tls.cert_chain_file = argv[1];
    tls.private_key_file = argv[2];
    int port = argc > 3 ? atoi(argv[3]) : 8443;
    em_reactor *r = em_reactor_new(NULL);
    em_server *s = r ? em_start_server(r, "127.0.0.1", port, &echo, NULL) : NULL;
    if (!s) {
        fprintf(stderr, "tls_echo_server: %s\n", em_strerror(errno));
        em_reactor_free(r);
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* each line out at once, even into a pipe */
    printf("ready port=%d (%s backend)\n", em_server_port(s), em_backend_name(r));
    em_run(r);
    em_reactor_free(r);
    return 0;
}
