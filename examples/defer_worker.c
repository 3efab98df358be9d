/* A server that does CPU-bound work on libem's thread pool: each request
 * line "N" asks for the N-th prime (2 is the first), found by trial
 * division on a pool thread with em_defer, so the reactor thread keeps
 * serving every other connection meanwhile. The answer, "prime N P\n", is
 * sent from the done callback, which runs on the reactor thread: only
 * there may a connection be used. Answers on one connection come in the
 * order the jobs finish, which is why they repeat N.
 *
 * The client may be gone by the time its job is done, and its em_conn with
 * it: a job keeps the connection's signature, never its pointer, and
 * em_conn_by_sig says whether it still exists.
 *
 * Usage: defer_worker [port]   (default 8085; 0 picks a free one)
 * Prints "ready port=N" once it is listening; SIGTERM or SIGINT stops it
 * (jobs still running are waited for, their answers dropped). */
#include <em.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_N 1000000 /* the millionth prime takes a pool thread seconds */

typedef struct client {
    em_tokenizer *lines;
    int in_flight;  /* jobs not answered yet */
    bool peer_done; /* the client half-closed: it waits for its answers */
} client;

typedef struct job {
    em_sig client; /* who asked: looked up again when the job is done */
    long n;        /* read on the pool thread ... */
    long prime;    /* ... written there, read by done on the reactor thread */
} job;

static bool is_prime(long x)
{
    if (x < 2)
        return false;
    for (long d = 2; d * d <= x; d++)
        if (x % d == 0)
            return false;
    return true;
}

/* On a pool thread: touches nothing but its job. */
static void find_nth_prime(void *arg)
{
    job *j = arg;
    long found = 0, x = 1;
    while (found < j->n)
        if (is_prime(++x))
            found++;
    j->prime = x;
}

/* On the reactor thread. Also run by em_reactor_free for jobs still in
 * flight at shutdown, when no connection is left: the job is freed either
 * way. */
static void answer(em_reactor *r, void *arg)
{
    job *j = arg;
    em_conn *c = em_conn_by_sig(r, j->client);
    if (c) {
        client *cl = em_conn_user(c);
        char line[64];
        int len = snprintf(line, sizeof line, "prime %ld %ld\n", j->n, j->prime);
        em_send_data(c, line, (size_t)len);
        if (--cl->in_flight == 0 && cl->peer_done)
            em_close_connection_after_writing(c);
    }
    free(j);
}

static bool parse_n(const char *line, size_t len, long *n)
{
    char text[16];
    if (len == 0 || len >= sizeof text)
        return false;
    memcpy(text, line, len);
    text[len] = '\0';
    char *end;
    *n = strtol(text, &end, 10);
    return *end == '\0' && *n >= 1 && *n <= MAX_N;
}

static void on_line(void *arg, const char *line, size_t len)
{
    em_conn *c = arg;
    client *cl = em_conn_user(c);
    long n;
    if (!parse_n(line, len, &n)) {
        em_send_data(c, "error: expected N from 1 to 1000000\n", 36);
        return;
    }
    job *j = malloc(sizeof *j);
    if (j) /* filled before em_defer: the pool may start on it at once */
        *j = (job){.client = em_signature(c), .n = n};
    int rc = j ? em_defer(em_conn_reactor(c), find_nth_prime, answer, j) : -ENOMEM;
    if (rc < 0) {
        free(j);
        char msg[64];
        int mlen = snprintf(msg, sizeof msg, "error: %s\n", em_strerror(rc));
        em_send_data(c, msg, (size_t)mlen);
        return;
    }
    cl->in_flight++;
}

static void post_init(em_conn *c)
{
    client *cl = calloc(1, sizeof *cl);
    if (cl)
        cl->lines = em_tokenizer_new("\n", 16);
    if (!cl || !cl->lines) {
        free(cl);
        em_close_connection(c, false);
        return;
    }
    em_conn_set_user(c, cl);
}

static void receive_data(em_conn *c, const char *data, size_t len)
{
    client *cl = em_conn_user(c);
    if (cl && em_tokenizer_extract(cl->lines, data, len, on_line, c) == -EMSGSIZE)
        em_send_data(c, "error: line too long\n", 21);
}

/* A client that sends its requests and then shuts its sending side
 * (echo 1000 | nc ...) still wants the answers: the connection stays open
 * until the last one is sent. */
static void peer_closed(em_conn *c)
{
    client *cl = em_conn_user(c);
    if (!cl) /* post_init failed: closing already */
        return;
    cl->peer_done = true;
    if (cl->in_flight == 0)
        em_close_connection_after_writing(c);
}

/* Jobs of this connection still running are not cancelled (a pool thread
 * cannot be interrupted); their answers find no connection and are dropped. */
static void unbind(em_conn *c, int reason)
{
    (void)reason;
    client *cl = em_conn_user(c);
    if (cl)
        em_tokenizer_free(cl->lines);
    free(cl);
}

static void on_terminate(em_reactor *r, void *arg)
{
    (void)arg;
    em_stop(r);
}

int main(int argc, char **argv)
{
    static const em_handler handler = {.post_init = post_init,
                                       .receive_data = receive_data,
                                       .unbind = unbind,
                                       .peer_closed = peer_closed};
    int port = argc > 1 ? atoi(argv[1]) : 8085;
    em_reactor *r = em_reactor_new(NULL);
    em_server *s = r ? em_start_server(r, "127.0.0.1", port, &handler, NULL) : NULL;
    int rc = s ? em_add_signal_handler(r, SIGTERM, on_terminate, NULL) : -errno;
    if (rc == 0)
        rc = em_add_signal_handler(r, SIGINT, on_terminate, NULL);
    if (rc < 0) {
        fprintf(stderr, "defer_worker: %s\n", em_strerror(rc));
        em_reactor_free(r);
        return 1;
    }
    /* port 0 picks a free one: say which */
    printf("ready port=%d (%s backend)\n", em_server_port(s), em_backend_name(r));
    fflush(stdout);
    em_run(r);
    em_reactor_free(r); /* waits for the jobs in flight and frees them */
    return 0;
}
