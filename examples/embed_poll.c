/* libem embedded in a host program's own poll() loop: the host owns the
 * loop and its descriptors (here stdin, read line by line and acknowledged
 * on stdout), and libem serves a TCP echo server inside it. The host waits
 * on libem's descriptor (em_backend_fd) beside its own, for no longer than
 * em_backend_timeout says, and then lets libem do one turn without waiting
 * (em_run_once(r, 0)). libem never blocks the host, nor the host libem.
 *
 * The poll backend has no descriptor to offer (EM_BACKEND=poll): the host
 * then wakes at least every 10 ms to give libem its turn.
 *
 * Each line read from stdin is answered "ack N TEXT (connections=C)" on
 * stdout, N counting from 1. At EOF on stdin the program says "bye",
 * frees the reactor (closing the connections still open) and exits 0.
 *
 * Usage: embed_poll [port]   (default 8086; 0 picks a free one)
 * Prints "ready port=N" once it is listening. */
#include <em.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NO_FD_TICK_MS 10 /* the poll backend's turn, when it has no fd */

typedef struct host {
    em_reactor *r;
    int em_fd; /* libem's descriptor, or -1 */
    char line[4096];
    size_t len;
    unsigned long lines;
    bool eof;
} host;

static void echo(em_conn *c, const char *data, size_t len) { em_send_data(c, data, len); }

static void acknowledge(host *h)
{
    h->line[h->len] = '\0';
    printf("ack %lu %s (connections=%zu)\n", ++h->lines, h->line, em_connection_count(h->r));
    h->len = 0;
}

/* The host's own work: whatever stdin has, split into lines. A line too
 * long for the buffer is acknowledged in pieces. */
static void read_stdin(host *h)
{
    char buf[4096];
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n <= 0) {
        h->eof = n == 0 || (errno != EINTR && errno != EAGAIN);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] != '\n')
            h->line[h->len++] = buf[i];
        if (buf[i] == '\n' || h->len == sizeof h->line - 1)
            acknowledge(h);
    }
    fflush(stdout); /* the reader is another program, not a terminal */
}

/* How long poll() may sleep: until libem's next timer, no more than a tick
 * without libem's descriptor, and not at all when libem has work queued. */
static int wait_ms(const host *h)
{
    double t = em_backend_timeout(h->r) * 1000.0;
    int ms = t < 0 ? -1 : t > 3600000.0 ? 3600000 : (int)t;
    if (ms >= 0 && ms < t)
        ms++; /* rounded up: a wake-up before the timer is due would spin */
    if (h->em_fd < 0 && (ms < 0 || ms > NO_FD_TICK_MS))
        ms = NO_FD_TICK_MS;
    return ms;
}

/* One round of the host's loop; false when it should end. */
static bool host_turn(host *h)
{
    struct pollfd fds[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
                            {.fd = h->em_fd, .events = POLLIN}};
    int n = poll(fds, h->em_fd >= 0 ? 2 : 1, wait_ms(h));
    if (n < 0 && errno != EINTR) {
        perror("embed_poll: poll");
        return false;
    }
    if (n > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
        read_stdin(h);
    /* libem's fd readable or its timer due: either way a turn that does not
     * wait does what is ready and returns. */
    int rc = em_run_once(h->r, 0);
    if (rc < 0 && rc != -EAGAIN && rc != -ENOMEM) {
        fprintf(stderr, "embed_poll: %s\n", em_strerror(rc));
        return false;
    }
    return !h->eof;
}

int main(int argc, char **argv)
{
    static const em_handler echo_handler = {.receive_data = echo};
    static host h;
    int port = argc > 1 ? atoi(argv[1]) : 8086;
    h.r = em_reactor_new(NULL);
    em_server *s = h.r ? em_start_server(h.r, "127.0.0.1", port, &echo_handler, NULL) : NULL;
    if (!s) {
        fprintf(stderr, "embed_poll: %s\n", em_strerror(errno));
        em_reactor_free(h.r);
        return 1;
    }
    h.em_fd = em_backend_fd(h.r); /* -EOPNOTSUPP for the poll backend */
    if (h.em_fd < 0)
        h.em_fd = -1;
    /* port 0 picks a free one: say which */
    printf("ready port=%d (%s backend, %s)\n", em_server_port(s), em_backend_name(h.r),
           h.em_fd >= 0 ? "waiting on its fd" : "10 ms ticks");
    fflush(stdout);
    while (host_turn(&h))
        ;
    printf("bye\n");
    fflush(stdout);
    em_reactor_free(h.r); /* closes the connections still open */
    return 0;
}
