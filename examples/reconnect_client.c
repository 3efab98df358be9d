/* A client that stays connected: it connects to HOST:PORT, sends
 * "ping N\n" every 100 ms while connected and prints each line it gets
 * back; when the connection drops or cannot be made it tries again after a
 * delay that starts at 50 ms and doubles up to 1 s, back to 50 ms once a
 * connect succeeds.
 *
 * Why not em_reconnect? It connects the same object again, but only from
 * inside unbind, and at once: it cannot wait. A backoff needs a delay, so
 * unbind arms a timer and the timer makes a new connection with
 * em_connect. (A client that wants to retry at once would call
 * em_reconnect(c, host, port) in unbind instead.)
 *
 * Usage: reconnect_client HOST PORT
 * Prints, one line each, flushed: "connected", "reply: LINE",
 * "disconnected: REASON", "retry in N ms". Runs until killed. */
#include <em.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIRST_DELAY_MS 50
#define MAX_DELAY_MS 1000
#define PING_S 0.1
#define LINE_MAX 4096

static struct {
    em_reactor *r;
    const char *host;
    int port;
    em_sig conn;         /* the live connection's signature, 0 when none */
    em_timer_id ping;    /* while connected */
    int delay_ms;        /* the next retry's delay */
    unsigned long count; /* pings sent so far, across connections */
} cl;

/* One line of output, flushed: whoever reads the pipe sees each event as
 * it happens. */
static void say(const char *what, const char *detail)
{
    printf(detail ? "%s: %s\n" : "%s\n", what, detail);
    fflush(stdout);
}

static void connect_now(void);

static void retry_timer(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    connect_now();
}

static void schedule_retry(void)
{
    printf("retry in %d ms\n", cl.delay_ms);
    fflush(stdout);
    if (!em_add_timer(cl.r, cl.delay_ms / 1000.0, retry_timer, NULL)) {
        fprintf(stderr, "reconnect_client: timer: %s\n", em_strerror(errno));
        em_stop(cl.r); /* nothing would ever retry */
        return;
    }
    cl.delay_ms = cl.delay_ms * 2 > MAX_DELAY_MS ? MAX_DELAY_MS : cl.delay_ms * 2;
}

/* The timer holds the signature, not the pointer: the connection may be
 * gone by the time it fires. */
static void send_ping(em_reactor *r, void *arg)
{
    (void)arg;
    em_conn *c = em_conn_by_sig(r, cl.conn);
    if (!c)
        return;
    char line[32];
    int n = snprintf(line, sizeof line, "ping %lu\n", ++cl.count);
    em_send_data(c, line, (size_t)n);
}

static void post_init(em_conn *c)
{
    /* a host that never answers should not hold the retries for the default
     * 20 s */
    em_set_pending_connect_timeout(c, 5.0);
    em_tokenizer *t = em_tokenizer_new("\n", LINE_MAX);
    if (!t)
        em_close_connection(c, false); /* unbind(0) follows: it retries */
    em_conn_set_user(c, t);
}

static void connection_completed(em_conn *c)
{
    say("connected", NULL);
    cl.delay_ms = FIRST_DELAY_MS; /* the server is back: start over */
    cl.conn = em_signature(c);
    cl.ping = em_add_periodic_timer(cl.r, PING_S, send_ping, NULL);
}

static void on_line(void *arg, const char *line, size_t len)
{
    (void)arg;
    printf("reply: %.*s\n", (int)len, line);
    fflush(stdout);
}

static void receive_data(em_conn *c, const char *data, size_t len)
{
    em_tokenizer *t = em_conn_user(c);
    if (t && em_tokenizer_extract(t, data, len, on_line, NULL) == -EMSGSIZE)
        say("reply too long, dropped", NULL);
}

static void unbind(em_conn *c, int reason)
{
    em_tokenizer_free(em_conn_user(c));
    if (cl.ping) {
        em_cancel_timer(cl.r, cl.ping);
        cl.ping = 0;
    }
    cl.conn = 0;
    say("disconnected", reason ? em_strerror(reason) : "closed");
    schedule_retry();
}

static void connect_now(void)
{
    static const em_handler h = {.post_init = post_init,
                                 .connection_completed = connection_completed,
                                 .receive_data = receive_data,
                                 .unbind = unbind};
    /* every failure after this call comes to unbind, which retries */
    if (!em_connect(cl.r, cl.host, cl.port, &h, NULL)) {
        say("disconnected", em_strerror(errno));
        schedule_retry();
    }
}

int main(int argc, char **argv)
{
    if (argc != 3 || atoi(argv[2]) < 1 || atoi(argv[2]) > 65535) {
        fprintf(stderr, "usage: reconnect_client HOST PORT\n");
        return 2;
    }
    cl.host = argv[1];
    cl.port = atoi(argv[2]);
    cl.delay_ms = FIRST_DELAY_MS;
    cl.r = em_reactor_new(NULL);
    if (!cl.r) {
        fprintf(stderr, "reconnect_client: %s\n", em_strerror(errno));
        return 1;
    }
    connect_now();
    em_run(cl.r);
    em_reactor_free(cl.r);
    return 1; /* only a failed retry timer ends the loop */
}
