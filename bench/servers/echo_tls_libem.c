/*
 * TLS echo server on libem, written the way libem's users write one: the
 * handler's post_init starts TLS on every accepted connection with the
 * certificate and key given on the command line (em_start_tls), and its
 * receive_data sends the data back.
 * Usage: echo_tls_libem PORT CERT KEY (PORT 0 picks a free port).
 */
#include <em.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static em_tls_opts tls; /* the certificate and key; libem's defaults otherwise */

static void post_init(em_conn *c)
{
    static bool told;
    int rc = em_start_tls(c, &tls);
    if (rc < 0) {
        if (!told) /* once: it would fail the same way for every connection */
            fprintf(stderr, "echo_tls_libem: em_start_tls: %s\n", em_strerror(rc));
        told = true;
        em_close_connection(c, false);
    }
}

static void receive_data(em_conn *c, const char *data, size_t len)
{
    em_send_data(c, data, len);
}

int main(int argc, char **argv)
{
    static const em_handler echo = {.post_init = post_init, .receive_data = receive_data};
    if (argc != 4) {
        fprintf(stderr, "usage: echo_tls_libem PORT CERT KEY\n");
        return 2;
    }
    tls.cert_chain_file = argv[2];
    tls.private_key_file = argv[3];
    em_reactor *r = em_reactor_new(NULL);
    em_server *s = r ? em_start_server(r, "127.0.0.1", atoi(argv[1]), &echo, NULL) : NULL;
    if (!s) {
        fprintf(stderr, "echo_tls_libem: %s\n", em_strerror(errno));
        return 1;
    }
    printf("ready server=tls-libem pid=%d port=%d backend=%s\n", (int)getpid(), em_server_port(s),
           em_backend_name(r));
    fflush(stdout);
    em_run(r);
    em_reactor_free(r);
    return 0;
}
