/* An echo server on every core: one reactor per thread, each with a
 * listener of its own on the same port (em_server_opts.reuse_port). The
 * kernel spreads the connections among the listeners, so the threads share
 * nothing and take no lock; a connection stays on the thread that accepted
 * it for its whole life.
 *
 * Usage: multi_reactor [-t THREADS] [PORT]   (default: one thread per
 * online CPU, port 8087; port 0 picks a free one). Prints "ready port=N
 * threads=T" once every thread listens. SIGINT or SIGTERM stops every
 * reactor; it then prints "stopped accepted=A,B,..." (the connections each
 * thread accepted) and exits 0. */
#include <em.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 256

typedef struct reactor_thread {
    pthread_t thread;
    em_reactor *r;
    em_server *server;
    int err; /* why its listener did not start, an errno; 0 when it did */
    unsigned long accepted;
} reactor_thread;

static reactor_thread threads[MAX_THREADS];
static int nthreads;
static int port;
static sem_t listening;

/* A connection's arg is the thread that accepted it: counted without a
 * lock, as only that thread touches it until the threads are joined. */
static void post_init(em_conn *c)
{
    reactor_thread *t = em_conn_arg(c);
    t->accepted++;
}

static void receive_data(em_conn *c, const char *data, size_t len)
{
    em_send_data(c, data, len);
}

static const em_handler echo = {.post_init = post_init, .receive_data = receive_data};

/* Every listener must ask for reuse_port, the first one too. */
static int listen_on_port(reactor_thread *t)
{
    em_server_opts opts = {.reuse_port = true};
    t->r = em_reactor_new(NULL);
    if (!t->r)
        return errno;
    t->server = em_start_server_opts(t->r, "127.0.0.1", port, &opts, &echo, t);
    return t->server ? 0 : errno;
}

static void *reactor_main(void *arg)
{
    reactor_thread *t = arg;
    t->err = listen_on_port(t);
    sem_post(&listening);
    if (!t->err)
        em_run(t->r);
    return NULL;
}

/* em_stop is thread-safe: the first reactor's signal handler stops them
 * all, itself last. */
static void stop_all(em_reactor *r, void *arg)
{
    (void)arg;
    for (int i = 1; i < nthreads; i++)
        em_stop(threads[i].r);
    em_stop(r);
}

/* The first thread is this one: its listener fixes the port (port 0
 * picks one) before the others start on it. Returns the number of threads
 * started besides this one; *err is the first failure. */
static int start_threads(int *err)
{
    *err = listen_on_port(&threads[0]);
    if (*err)
        return 0;
    port = em_server_port(threads[0].server);
    int started = 0;
    for (int i = 1; i < nthreads && !*err; i++) {
        if ((*err = pthread_create(&threads[i].thread, NULL, reactor_main, &threads[i])))
            break;
        started++;
        sem_wait(&listening);
        *err = threads[i].err;
    }
    return started;
}

static void join_threads(int started)
{
    for (int i = 1; i <= started; i++) {
        em_stop(threads[i].r);
        pthread_join(threads[i].thread, NULL);
    }
}

static void print_counts(void)
{
    printf("stopped accepted=");
    for (int i = 0; i < nthreads; i++)
        printf("%s%lu", i ? "," : "", threads[i].accepted);
    printf("\n");
}

static int parse_args(int argc, char **argv)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    int opt;
    while ((opt = getopt(argc, argv, "t:")) != -1) {
        if (opt != 't')
            return -1;
        n = strtol(optarg, NULL, 10);
    }
    if (n < 1 || n > MAX_THREADS || argc - optind > 1)
        return -1;
    nthreads = (int)n;
    port = optind < argc ? atoi(argv[optind]) : 8087;
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (parse_args(argc, argv) < 0) {
        fprintf(stderr, "usage: multi_reactor [-t THREADS (1-%d)] [PORT]\n", MAX_THREADS);
        return 2;
    }
    sem_init(&listening, 0, 0);
    int err;
    int started = start_threads(&err);
    em_reactor *first = threads[0].r;
    if (!err && (err = -em_add_signal_handler(first, SIGTERM, stop_all, NULL)) == 0)
        err = -em_add_signal_handler(first, SIGINT, stop_all, NULL);
    if (!err) {
        printf("ready port=%d threads=%d (%s backend)\n", port, nthreads,
               em_backend_name(first));
        em_run(first);
    } else {
        fprintf(stderr, "multi_reactor: %s\n", em_strerror(err));
    }
    join_threads(started);
    if (!err)
        print_counts();
    /* freed once joined: em_stop may still be waking a reactor whose
     * em_run has returned */
    for (int i = 0; i < nthreads; i++)
        em_reactor_free(threads[i].r);
    return err ? 1 : 0;
}
