/* A job runner on 127.0.0.1: each line a client sends is a command, run as
 * a child process with em_popen (the line split on spaces, no shell; argv[0]
 * is looked up in PATH).
 *
 * Replies, each on its own line, [id] being the job's number on that
 * connection (1, 2, ...):
 *   [id] pid N          the job started as process N
 *   [id] <text>         a line of its stdout (stderr is the server's)
 *   [id] exit N         it exited with status N
 *   [id] signal N       it was killed by signal N
 *   [id] error <text>   it could not be started (strerror of the cause)
 *   error <text>        the line was no command (too long, too many words)
 *
 * At most MAX_RUNNING children run at once for the whole server; the jobs
 * beyond that wait in one FIFO queue. A client that disconnects drops its
 * queued jobs and gets its running ones killed (SIGTERM), so nothing it
 * started outlives it. A child's stdin is closed at once: a job reads EOF.
 *
 * Backpressure: a client that reads slowly must not make the server hold a
 * child's output in memory. Once more than CLIENT_QUEUE_MAX bytes wait to be
 * sent to a client, its children's connections are paused (em_pause: the
 * child blocks on its full stdout), and resumed when the client's queue has
 * drained (outbound_drained), or at once if the kernel took the whole queue
 * (then nothing had to wait, and outbound_drained does not run).
 *
 * Usage: job_runner [port]   (default 8086; 0 picks a free port)
 * Prints "ready port=N" once it is listening. */
#include <em.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define MAX_RUNNING 4   /* children running at once, for the whole server */
#define LINE_MAX 1024   /* longest command line, delimiter excluded */
#define MAX_ARGS 64     /* words of a command */
#define OUT_LINE 1024   /* a longer stdout line is passed on in pieces */
/* Bytes queued to a client past which its children are paused; it may be
 * passed by one read of a child's output (with the line prefixes). */
#define CLIENT_QUEUE_MAX (1024 * 1024)

typedef struct client client;

typedef struct job {
    struct job *next_queued;     /* in the server's FIFO, while queued */
    struct job *prev, *next;     /* in its client's list, while it has one */
    client *owner;               /* NULL once the client has gone */
    em_conn *child;              /* NULL while queued */
    unsigned id;
    char *argv[MAX_ARGS + 1];    /* point into words */
    char *words;                 /* the command line, NULs between words */
    size_t out_len;              /* bytes of an incomplete stdout line */
    char out[OUT_LINE];
} job;

struct client {
    em_conn *conn;
    em_tokenizer *lines;
    job *jobs; /* queued and running, for the disconnect */
    unsigned next_id;
    em_timer_id recheck; /* after the turn's flush: was the queue written? */
};

static em_reactor *reactor;
static job *queue_head, *queue_tail;
static int running;

static void pump(void);

/* ---------------------------------------------------------------- replies */

/* "[id] " text "\n" to the job's client; dropped when it has gone. */
static void job_say(job *j, const char *text, size_t len)
{
    if (!j->owner)
        return;
    char prefix[32];
    int n = snprintf(prefix, sizeof prefix, "[%u] ", j->id);
    em_send_data(j->owner->conn, prefix, (size_t)n);
    em_send_data(j->owner->conn, text, len);
    em_send_data(j->owner->conn, "\n", 1);
}

static void job_sayf(job *j, const char *fmt, long value)
{
    char text[64];
    int n = snprintf(text, sizeof text, fmt, value);
    job_say(j, text, (size_t)n);
}

/* ------------------------------------------------------------- the jobs */

static void client_link(client *cl, job *j)
{
    j->owner = cl;
    j->prev = NULL;
    j->next = cl->jobs;
    if (cl->jobs)
        cl->jobs->prev = j;
    cl->jobs = j;
}

static void client_unlink(job *j)
{
    if (!j->owner)
        return;
    if (j->prev)
        j->prev->next = j->next;
    else
        j->owner->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->owner = NULL;
}

static void job_free(job *j)
{
    client_unlink(j);
    free(j->words);
    free(j);
}

/* Splits a copy of the line on spaces into argv. NULL when there is no
 * word, or too many (then *too_many is set). */
static job *job_new(const char *line, size_t len, bool *too_many)
{
    job *j = calloc(1, sizeof *j);
    char *words = j ? malloc(len + 1) : NULL;
    if (!words) {
        free(j);
        return NULL;
    }
    memcpy(words, line, len);
    words[len] = '\0';
    j->words = words;
    size_t argc = 0;
    for (char *save, *w = strtok_r(words, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        if (argc == MAX_ARGS) {
            *too_many = true;
            argc = 0;
            break;
        }
        j->argv[argc++] = w;
    }
    if (argc == 0) {
        job_free(j);
        return NULL;
    }
    return j;
}

static void enqueue(job *j)
{
    j->next_queued = NULL;
    if (queue_tail)
        queue_tail->next_queued = j;
    else
        queue_head = j;
    queue_tail = j;
}

static job *dequeue(void)
{
    job *j = queue_head;
    if (j && !(queue_head = j->next_queued))
        queue_tail = NULL;
    return j;
}

/* Drops the queued jobs of a client that has gone; the queue keeps the
 * order of the others. */
static void drop_queued_of(client *cl)
{
    for (job **at = &queue_head; *at;) {
        job *j = *at;
        if (j->owner == cl) {
            *at = j->next_queued;
            job_free(j);
        } else
            at = &j->next_queued;
    }
    queue_tail = NULL;
    for (job *j = queue_head; j; j = j->next_queued)
        queue_tail = j;
}

/* ------------------------------------------------------ the children */

/* The child's stdout, passed on a line at a time with the job's prefix; a
 * line longer than the buffer goes in pieces, so memory stays bounded. */
static void resume_children(client *cl)
{
    for (job *j = cl->jobs; j; j = j->next)
        if (j->child && em_is_paused(j->child))
            em_resume(j->child);
}

/* Runs after the flush of the turn that paused: a queue the kernel took
 * whole had nothing wait, so no outbound_drained comes for it. */
static void recheck_queue(em_reactor *r, void *arg)
{
    (void)r;
    client *cl = arg;
    cl->recheck = 0;
    if (em_get_outbound_data_size(cl->conn) <= CLIENT_QUEUE_MAX)
        resume_children(cl);
}

static void child_data(em_conn *c, const char *data, size_t len)
{
    job *j = em_conn_user(c);
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n' || j->out_len == OUT_LINE) {
            job_say(j, j->out, j->out_len);
            j->out_len = 0;
            if (data[i] == '\n')
                continue;
        }
        j->out[j->out_len++] = data[i];
    }
    if (j->owner && em_get_outbound_data_size(j->owner->conn) > CLIENT_QUEUE_MAX) {
        em_pause(c); /* until client_drained */
        if (!j->owner->recheck)
            j->owner->recheck = em_add_timer(reactor, 0, recheck_queue, j->owner);
    }
}

/* The child has exited and its output is closed: em_get_status works here.
 * Its slot goes to the next queued job. */
static void child_unbind(em_conn *c, int reason)
{
    (void)reason;
    job *j = em_conn_user(c);
    if (j->out_len) /* a last line without its newline */
        job_say(j, j->out, j->out_len);
    int status;
    if (em_get_status(c, &status) < 0)
        job_say(j, "exit unknown", strlen("exit unknown"));
    else if (WIFSIGNALED(status))
        job_sayf(j, "signal %ld", WTERMSIG(status));
    else
        job_sayf(j, "exit %ld", WEXITSTATUS(status));
    job_free(j);
    running--;
    pump();
}

static bool start(job *j)
{
    static const em_handler child_handler = {.receive_data = child_data,
                                             .unbind = child_unbind};
    em_conn *c = em_popen(reactor, (const char *const *)j->argv, &child_handler, NULL);
    if (!c) {
        const char *why = strerror(errno);
        char text[128];
        int n = snprintf(text, sizeof text, "error %s", why);
        job_say(j, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
        return false;
    }
    em_conn_set_user(c, j);
    j->child = c;
    running++;
    job_sayf(j, "pid %ld", (long)em_get_pid(c));
    /* the jobs get no input: EOF on stdin rather than a read that waits */
    em_close_write(c);
    return true;
}

/* Starts queued jobs while there is a free slot. */
static void pump(void)
{
    while (running < MAX_RUNNING) {
        job *j = dequeue();
        if (!j)
            return;
        if (!start(j))
            job_free(j);
    }
}

/* ------------------------------------------------------- the clients */

static void reply(client *cl, const char *text)
{
    em_send_data(cl->conn, text, strlen(text));
    em_send_data(cl->conn, "\n", 1);
}

static void command(client *cl, const char *line, size_t len)
{
    if (len && line[len - 1] == '\r') /* telnet and friends send CRLF */
        len--;
    if (len > LINE_MAX) { /* the limit's one byte of room was not a "\r" */
        reply(cl, "error line too long");
        return;
    }
    if (memchr(line, '\0', len)) { /* argv strings cannot hold one */
        reply(cl, "error NUL byte in line");
        return;
    }
    bool too_many = false;
    job *j = job_new(line, len, &too_many);
    if (!j) { /* a blank line is no command: nothing to say */
        if (too_many)
            reply(cl, "error too many words");
        return;
    }
    j->id = ++cl->next_id;
    client_link(cl, j);
    enqueue(j);
    pump();
}

static void on_line(void *arg, const char *line, size_t len) { command(arg, line, len); }

/* The client has taken everything queued: its paused children go on. */
static void client_drained(em_conn *c)
{
    client *cl = em_conn_user(c);
    if (cl)
        resume_children(cl);
}

static void client_init(em_conn *c)
{
    client *cl = calloc(1, sizeof *cl);
    em_tokenizer *t = cl ? em_tokenizer_new("\n", LINE_MAX + 1) : NULL; /* + 1: "\r" */
    if (!t) {
        free(cl);
        em_close_connection(c, false);
        return;
    }
    cl->conn = c;
    cl->lines = t;
    em_conn_set_user(c, cl);
}

/* Fed one line at a time so that "line too long" (reported by the return
 * value, after the lines that follow it) keeps its place among replies. */
static void client_data(em_conn *c, const char *data, size_t len)
{
    client *cl = em_conn_user(c);
    while (cl && len) {
        const char *nl = memchr(data, '\n', len);
        size_t n = nl ? (size_t)(nl - data) + 1 : len;
        int rc = em_tokenizer_extract(cl->lines, data, n, on_line, cl);
        if (rc == -EMSGSIZE)
            reply(cl, "error line too long");
        else if (rc < 0) { /* out of memory: this connection cannot go on */
            em_close_connection(c, false);
            return;
        }
        data += n;
        len -= n;
    }
}

/* Nothing a client started outlives it: queued jobs are dropped, running
 * ones get SIGTERM at once (closing alone would give them 2 s first) and
 * free their slot when they have exited, in child_unbind. */
static void client_unbind(em_conn *c, int reason)
{
    (void)reason;
    client *cl = em_conn_user(c);
    if (!cl)
        return;
    drop_queued_of(cl);
    while (cl->jobs) {
        job *j = cl->jobs;
        client_unlink(j);
        pid_t pid = em_get_pid(j->child);
        if (pid > 0)
            kill(pid, SIGTERM);
        em_close_connection(j->child, false);
    }
    em_tokenizer_free(cl->lines);
    if (cl->recheck)
        em_cancel_timer(reactor, cl->recheck);
    free(cl);
}

int main(int argc, char **argv)
{
    static const em_handler client_handler = {.post_init = client_init,
                                              .receive_data = client_data,
                                              .outbound_drained = client_drained,
                                              .unbind = client_unbind};
    int port = argc > 1 ? atoi(argv[1]) : 8086;
    reactor = em_reactor_new(NULL);
    em_server *s = reactor ? em_start_server(reactor, "127.0.0.1", port, &client_handler, NULL)
                           : NULL;
    if (!s) {
        fprintf(stderr, "job_runner: %s\n", em_strerror(errno));
        em_reactor_free(reactor);
        return 1;
    }
    /* port 0 picks a free one: say which */
    printf("ready port=%d (%s backend)\n", em_server_port(s), em_backend_name(reactor));
    fflush(stdout);
    em_run(reactor);
    em_reactor_free(reactor);
    return 0;
}
