/* Echoes back every byte it receives. Usage: echo_server [port] (default
 * 8081; port 0 picks a free one). Prints "ready port=N" once it is listening. */
#include <em.h>
#include <stdio.h>
#include <stdlib.h>

static void receive_data(em_conn *c, const char *data, size_t len) { em_send_data(c, data, len); }

int main(int argc, char **argv) {
    static const em_handler echo = {.receive_data = receive_data};
    int port = argc > 1 ? atoi(argv[1]) : 8081;
    em_reactor *r = em_reactor_new(NULL);
    em_server *s = r ? em_start_server(r, "127.0.0.1", port, &echo, NULL) : NULL;
    if (!s) {
        fprintf(stderr, "echo_server: %s\n", em_strerror(errno));
        em_reactor_free(r);
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* each line out at once, even into a pipe */
    printf("ready port=%d (%s backend)\n", em_server_port(s), em_backend_name(r));
    em_run(r);
    em_reactor_free(r);
    return 0;
}
