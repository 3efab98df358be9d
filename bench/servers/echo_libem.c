/*
 * Echo server on libem, written the way libem's users write it: a handler
 * whose receive_data sends the data back. libem sets TCP_NODELAY on accepted
 * sockets itself. Usage: echo_libem PORT (0 picks a free port).
 */
#include <em.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void receive_data(em_conn *c, const char *data, size_t len)
{
    em_send_data(c, data, len);
}

int main(int argc, char **argv)
{
    static const em_handler echo = {.receive_data = receive_data};
    int port = argc > 1 ? atoi(argv[1]) : 0;
    em_reactor *r = em_reactor_new(NULL);
    em_server *s = r ? em_start_server(r, "127.0.0.1", port, &echo, NULL) : NULL;
    if (!s) {
        fprintf(stderr, "echo_libem: %s\n", em_strerror(errno));
        return 1;
    }
    printf("ready server=libem pid=%d port=%d backend=%s\n", (int)getpid(), em_server_port(s),
           em_backend_name(r));
    fflush(stdout);
    em_run(r);
    em_reactor_free(r);
    return 0;
}
