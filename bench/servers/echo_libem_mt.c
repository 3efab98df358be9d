/*
 * Echo server on libem across threads, the multi-core recipe: THREADS
 * reactors, one per thread, each with a listener of its own on the port
 * (em_start_server_opts with reuse_port), so the kernel spreads the
 * connections over them. The handler is echo_libem's. Runs until killed.
 * Usage: echo_libem_mt PORT [THREADS]   (0 picks a free port; default 2).
 */
#include <em.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 64

static void receive_data(em_conn *c, const char *data, size_t len)
{
    em_send_data(c, data, len);
}

static const em_handler echo = {.receive_data = receive_data};

/* A reactor listening on port with reuse_port; NULL on failure (said). */
static em_reactor *listening_reactor(int *port)
{
    em_server_opts opts = {.reuse_port = true};
    em_reactor *r = em_reactor_new(NULL);
    em_server *s = r ? em_start_server_opts(r, "127.0.0.1", *port, &opts, &echo, NULL) : NULL;
    if (!s) {
        fprintf(stderr, "echo_libem_mt: %s\n", em_strerror(errno));
        return NULL;
    }
    *port = em_server_port(s);
    return r;
}

static void *run(void *r)
{
    em_run(r);
    return NULL;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    if (threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "echo_libem_mt: THREADS must be 1 to %d\n", MAX_THREADS);
        return 1;
    }
    em_reactor *r[MAX_THREADS];
    for (int i = 0; i < threads; i++) /* the first fixes the port */
        if (!(r[i] = listening_reactor(&port)))
            return 1;
    for (int i = 1; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, run, r[i]) != 0) {
            fprintf(stderr, "echo_libem_mt: no thread\n");
            return 1;
        }
    }
    printf("ready server=libem-%dt pid=%d port=%d threads=%d backend=%s\n", threads,
           (int)getpid(), port, threads, em_backend_name(r[0]));
    fflush(stdout);
    em_run(r[0]);
    return 0;
}
