/* A TCP server that shuts down gracefully on SIGTERM (or SIGINT): it stops
 * accepting at once, lets every connection finish the jobs it already
 * asked for, closes each connection once its replies are written, and
 * exits 0 when the last one is gone. A grace timer bounds the wait: when
 * it expires the rest are cut off and the exit status is 1.
 *
 * Protocol, one request per line: "MS [LEN]" is a slow job that takes MS
 * milliseconds (a timer stands for the work). The server answers
 * "started\n" at once, and when the job is done "done " followed by LEN
 * bytes of the alphabet ("abc...zabc...") and "\n". A connection's jobs run
 * one after the other, in order. A request that arrives after SIGTERM is
 * answered "refused: shutting down\n".
 *
 * Usage: graceful_shutdown [port] [grace_seconds]   (default 8084, 10;
 * port 0 picks a free one). Prints "ready port=N" once it is listening. */
#include <em.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_QUEUED 16              /* jobs a connection may have waiting */
#define MAX_MS 60000               /* a job takes at most a minute */
#define MAX_LEN (16 * 1024 * 1024) /* and answers at most 16 MiB */

typedef struct job {
    long ms, len;
} job;

typedef struct client {
    struct client *prev, *next; /* every open connection, for SIGTERM */
    em_conn *conn;
    em_tokenizer *lines;
    job queue[MAX_QUEUED]; /* queue[0] is running while timer != 0 */
    int queued;
    em_timer_id timer;
    bool peer_done; /* the client half-closed: it waits for its answers */
} client;

static em_reactor *reactor;
static em_server *server;
static client *clients;
static bool draining;
static int exit_status;

static void start_next_job(client *cl);

/* A finished connection: once what was queued is written. */
static void finish(client *cl) { em_close_connection_after_writing(cl->conn); }

static void send_result(em_conn *c, long len)
{
    char chunk[4096];
    em_send_data(c, "done ", 5);
    for (long sent = 0; sent < len;) {
        long n = len - sent < (long)sizeof chunk ? len - sent : (long)sizeof chunk;
        for (long i = 0; i < n; i++)
            chunk[i] = (char)('a' + (sent + i) % 26);
        em_send_data(c, chunk, (size_t)n);
        sent += n;
    }
    em_send_data(c, "\n", 1);
}

/* The timer's arg is the connection's signature, not a pointer: unbind
 * cancels the timer, but the signature could never dangle anyway. */
static void job_done(em_reactor *r, void *arg)
{
    em_conn *c = em_conn_by_sig(r, (em_sig)(uintptr_t)arg);
    if (!c)
        return;
    client *cl = em_conn_user(c);
    cl->timer = 0;
    send_result(c, cl->queue[0].len);
    memmove(cl->queue, cl->queue + 1, (size_t)(cl->queued - 1) * sizeof cl->queue[0]);
    cl->queued--;
    start_next_job(cl);
}

static void start_next_job(client *cl)
{
    if (cl->queued == 0) {
        if (draining || cl->peer_done) /* its work is over: it may go */
            finish(cl);
        return;
    }
    cl->timer = em_add_timer(reactor, (double)cl->queue[0].ms / 1000.0, job_done,
                             (void *)(uintptr_t)em_signature(cl->conn));
    if (!cl->timer) {
        em_send_data(cl->conn, "error: no timer\n", 16);
        finish(cl);
    }
}

static bool parse_job(const char *line, size_t len, job *j)
{
    char text[64];
    if (len == 0 || len >= sizeof text)
        return false;
    memcpy(text, line, len);
    text[len] = '\0';
    char *end;
    j->ms = strtol(text, &end, 10);
    j->len = *end ? strtol(end, &end, 10) : 0;
    return *end == '\0' && j->ms >= 0 && j->ms <= MAX_MS && j->len >= 0 && j->len <= MAX_LEN;
}

static void on_line(void *arg, const char *line, size_t len)
{
    client *cl = arg;
    job j;
    if (draining)
        em_send_data(cl->conn, "refused: shutting down\n", 23);
    else if (!parse_job(line, len, &j))
        em_send_data(cl->conn, "error: expected MS [LEN]\n", 25);
    else if (cl->queued == MAX_QUEUED)
        em_send_data(cl->conn, "error: too many jobs\n", 21);
    else {
        cl->queue[cl->queued++] = j;
        em_send_data(cl->conn, "started\n", 8);
        if (cl->queued == 1)
            start_next_job(cl);
    }
}

static void post_init(em_conn *c)
{
    client *cl = calloc(1, sizeof *cl);
    if (cl)
        cl->lines = em_tokenizer_new("\n", 128);
    if (!cl || !cl->lines) {
        free(cl);
        em_close_connection(c, false);
        return;
    }
    cl->conn = c;
    em_conn_set_user(c, cl);
    cl->next = clients;
    if (clients)
        clients->prev = cl;
    clients = cl;
}

static void receive_data(em_conn *c, const char *data, size_t len)
{
    client *cl = em_conn_user(c);
    if (cl && em_tokenizer_extract(cl->lines, data, len, on_line, cl) == -EMSGSIZE)
        em_send_data(c, "error: line too long\n", 21);
}

/* A client that sends its requests and then shuts its sending side
 * (printf '500\n' | nc ...) still wants the answers: the connection stays
 * open until its last job is done. */
static void peer_closed(em_conn *c)
{
    client *cl = em_conn_user(c);
    if (!cl) /* post_init failed: closing already */
        return;
    cl->peer_done = true;
    if (cl->queued == 0)
        finish(cl);
}

/* Runs on a later turn than the unbind that may have been the last: the
 * count no longer includes that connection. */
static void stop_if_idle(em_reactor *r, void *arg)
{
    (void)arg;
    if (em_connection_count(r) == 0)
        em_stop(r);
}

static void unbind(em_conn *c, int reason)
{
    client *cl = em_conn_user(c);
    if (reason)
        fprintf(stderr, "graceful_shutdown: a connection ended: %s\n", em_strerror(reason));
    if (cl) {
        if (cl->timer)
            em_cancel_timer(reactor, cl->timer);
        if (cl->prev)
            cl->prev->next = cl->next;
        else
            clients = cl->next;
        if (cl->next)
            cl->next->prev = cl->prev;
        em_tokenizer_free(cl->lines);
        free(cl);
    }
    if (draining)
        em_next_tick(reactor, stop_if_idle, NULL);
}

static void grace_expired(em_reactor *r, void *arg)
{
    (void)arg;
    fprintf(stderr, "graceful_shutdown: grace period over, %zu connection(s) cut off\n",
            em_connection_count(r));
    exit_status = 1;
    em_stop(r); /* em_run unbinds what is left */
}

static const em_handler handler = {.post_init = post_init,
                                   .receive_data = receive_data,
                                   .unbind = unbind,
                                   .peer_closed = peer_closed};

static void on_terminate(em_reactor *r, void *arg)
{
    double grace = *(const double *)arg;
    if (draining)
        return;
    draining = true;
    em_stop_server(server); /* new connects are refused from here on */
    server = NULL;
    fprintf(stderr, "graceful_shutdown: draining %zu connection(s)\n", em_connection_count(r));
    /* Idle connections go now; busy ones when their last job is done
     * (start_next_job). The close happens later, so the list stays put. */
    for (client *cl = clients; cl; cl = cl->next)
        if (cl->queued == 0)
            finish(cl);
    em_next_tick(r, stop_if_idle, NULL);
    em_add_timer(r, grace, grace_expired, NULL);
}

/* The reactor, the server and the two signals; a negative errno if any
 * fails. */
static int setup(int port, double *grace)
{
    reactor = em_reactor_new(NULL);
    if (!reactor)
        return -errno;
    server = em_start_server(reactor, "127.0.0.1", port, &handler, NULL);
    if (!server)
        return -errno;
    int rc = em_add_signal_handler(reactor, SIGTERM, on_terminate, grace);
    return rc < 0 ? rc : em_add_signal_handler(reactor, SIGINT, on_terminate, grace);
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 8084;
    static double grace;
    grace = argc > 2 ? atof(argv[2]) : 10.0;
    int rc = grace > 0 ? setup(port, &grace) : -EINVAL;
    if (rc < 0) {
        fprintf(stderr, "graceful_shutdown: %s\n", em_strerror(rc));
        em_reactor_free(reactor);
        return 1;
    }
    /* port 0 picks a free one: say which */
    printf("ready port=%d (%s backend)\n", em_server_port(server), em_backend_name(reactor));
    fflush(stdout);
    em_run(reactor);
    em_reactor_free(reactor);
    return exit_status;
}
