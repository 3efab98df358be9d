/* Connects over TLS, verifies the server (its chain against CAFILE, or
 * the system's trust store, and its name), says what was agreed, sends
 * a line and prints what comes back until the server closes.
 * Usage: tls_client HOST PORT [CAFILE]    (exit status 0 on a reply) */
#include <em.h>
#include <stdio.h>
#include <stdlib.h>

static em_tls_opts tls;
static bool replied; /* only a verified server gets this far */

static void post_init(em_conn *c)
{
    int err = em_start_tls(c, &tls); /* before the connect completes: fine */
    if (err) {
        fprintf(stderr, "tls_client: %s: %s\n", em_strerror(err), em_tls_error_string(c));
        em_close_connection(c, false);
        return;
    }
    em_send_data(c, "hello\n", 6); /* queued until the handshake is done */
}

static void handshake_completed(em_conn *c)
{
    char *protocol = em_get_cipher_protocol(c), *cipher = em_get_cipher_name(c);
    printf("verified; %s, %s (%d bits)\n", protocol, cipher, em_get_cipher_bits(c));
    free(protocol);
    free(cipher);
}

static void receive_data(em_conn *c, const char *data, size_t len)
{
    fwrite(data, 1, len, stdout);
    replied = true;
    em_close_connection_after_writing(c); /* sends close_notify */
}

static void unbind(em_conn *c, int reason)
{
    if (reason)
        fprintf(stderr, "tls_client: %s%s%s\n", em_strerror(reason),
                em_tls_error_string(c) ? ": " : "",
                em_tls_error_string(c) ? em_tls_error_string(c) : "");
    em_stop(em_conn_reactor(c));
}

int main(int argc, char **argv)
{
    static const em_handler h = {.post_init = post_init,
                                 .ssl_handshake_completed = handshake_completed,
                                 .receive_data = receive_data,
                                 .unbind = unbind};
    if (argc < 3) {
        fprintf(stderr, "usage: tls_client HOST PORT [CAFILE]\n");
        return 2;
    }
    tls.ca_file = argc > 3 ? argv[3] : NULL;
    em_reactor *r = em_reactor_new(NULL);
    if (!r || !em_connect(r, argv[1], atoi(argv[2]), &h, NULL)) {
        fprintf(stderr, "tls_client: %s\n", em_strerror(errno));
        em_reactor_free(r);
        return 1;
    }
    em_run(r);
    em_reactor_free(r);
    return replied ? 0 : 1;
}
