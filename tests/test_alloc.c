/*
 * Allocation failure (issue 5, item 6).
 *
 * A counting allocator installed with em_set_allocator() fails exactly the
 * n-th allocation (malloc or realloc). For n = 1, 2, 3, ... a forked child
 * runs one scenario: reactor creation; a server on 127.0.0.1; a raw client
 * that is accepted and echoed; a burst of 50 raw clients (the signature map
 * and the poll backend's arrays grow past 64); em_connect to the server;
 * em_send_data of small and large data echoed back; timers added and
 * cancelled, 70 more (the timer heap grows), a periodic timer, next_tick,
 * em_schedule, em_defer; em_connect to "localhost" (resolved on the pool);
 * close; em_stop_server; em_reactor_free. The count
 * of allocations varies a little with timing: the loop ends past the largest
 * count seen, after three runs in a row that never reached n.
 *
 * For every n the child must:
 *  - see the failure as an error code: NULL + errno ENOMEM, -ENOMEM, 0 +
 *    errno ENOMEM (timers), -EAGAIN from em_defer (no thread), or
 *    unbind(ENOMEM); an accepted connection that could not be allocated is
 *    closed by the library (the API has no way to report it) and the client
 *    sees EOF: allowed;
 *  - never see a call succeed while its work is lost: every timer, tick,
 *    scheduled and deferred callback accepted runs, every byte accepted by
 *    em_send_data comes back unless some error was reported on the way;
 *  - clean up: every connection unbound, every block taken from the hook
 *    given back after em_reactor_free (counted here, independently of
 *    LeakSanitizer), and a clean exit (LeakSanitizer in the ASan build);
 *  - neither crash nor hang (10 s per n).
 * Every n that breaks one of these is printed on stderr as
 * "alloc n=N: what" (with the sanitizer's stack above it when there is one)
 * and fails the case.
 */
#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SMALL_LEN 16
#define LARGE_LEN (1024 * 1024 + 77)
#define RAW_MSG "hello, libem"
#define STEP_TIMEOUT 4.0
#define CHILD_TIMEOUT 10
#define MAX_N 5000
#define BURST 50
#define MANY_TIMERS 70

/* ------------------------------------------------------ counting allocator */

static atomic_long a_calls;   /* allocations asked for (malloc + realloc) */
static atomic_long a_fail_at; /* the one to fail; 0: none */
static atomic_long a_live;    /* blocks handed out and not freed */
static atomic_int a_hit;      /* the failure happened */

static bool fail_now(void)
{
    long k = atomic_fetch_add(&a_calls, 1) + 1;
    if (k == atomic_load(&a_fail_at)) {
        atomic_store(&a_hit, 1);
        errno = ENOMEM;
        return true;
    }
    return false;
}

static void *t_malloc(size_t n)
{
    if (fail_now())
        return NULL;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&a_live, 1);
    return p;
}

static void *t_realloc(void *p, size_t n)
{
    if (fail_now())
        return NULL;
    void *q = realloc(p, n);
    if (q && !p)
        atomic_fetch_add(&a_live, 1);
    return q;
}

static void t_free(void *p)
{
    if (p)
        atomic_fetch_sub(&a_live, 1);
    free(p);
}

/* ------------------------------------------------------ scenario state */

static struct {
    int reported;     /* error codes seen (ENOMEM and friends) */
    char first[160];  /* the first of them */
    char bad[400];    /* the first contract violation */
    /* server side */
    int accepted, srv_unbinds;
    /* em_connect side */
    em_conn *cli;
    int cli_post_init, cli_completed, cli_unbound, cli_reason;
    uint64_t cli_in;
    /* callbacks */
    int t_fired, t_never, p_fired, ticked, scheduled, defer_done;
    atomic_int defer_work;
    em_timer_id periodic;
    em_conn *name_conn;
    int name_completed, name_unbound;
} S;

static void bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void bad(const char *fmt, ...)
{
    if (S.bad[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(S.bad, sizeof S.bad, fmt, ap);
    va_end(ap);
}

static void reported(const char *what, int err)
{
    if (!S.reported++)
        snprintf(S.first, sizeof S.first, "%s: %s", what, strerror(err));
}

/* A negative-errno result: 0, or an allowed error (reported), else bad. */
static bool check_rc(const char *what, int rc)
{
    if (rc == 0)
        return true;
    if (rc == -ENOMEM) {
        reported(what, ENOMEM);
        return false;
    }
    bad("%s returned %d (%s), expected 0 or -ENOMEM", what, rc, em_strerror(rc));
    return false;
}

/* A pointer result: non-NULL, or NULL + ENOMEM (reported), else bad. */
static bool check_ptr(const char *what, const void *p, int err)
{
    if (p)
        return true;
    if (err == ENOMEM) {
        reported(what, ENOMEM);
        return false;
    }
    bad("%s returned NULL with errno %d (%s), expected ENOMEM", what, err, strerror(err));
    return false;
}

static bool unbind_reason_ok(int reason)
{
    /* 0: clean; ENOMEM: our failure; ECONNRESET / EPIPE: the peer in this
     * process closed at once after its own failure. */
    return reason == 0 || reason == ENOMEM || reason == ECONNRESET || reason == EPIPE;
}

/* ------------------------------------------------------------- server */

static void srv_post_init(em_conn *c)
{
    (void)c;
    S.accepted++;
}

static void srv_data(em_conn *c, const char *d, size_t n)
{
    int rc = em_send_data(c, d, n);
    if (rc == -ENOTCONN)
        return;
    if (!check_rc("server echo em_send_data", rc))
        em_close_connection(c, false);
}

static void srv_unbind(em_conn *c, int reason)
{
    (void)c;
    S.srv_unbinds++;
    if (reason == ENOMEM)
        reported("server unbind", ENOMEM);
    else if (!unbind_reason_ok(reason))
        bad("server connection unbind(%d: %s)", reason, em_strerror(reason));
}

static const em_handler srv_h = {
    .post_init = srv_post_init,
    .receive_data = srv_data,
    .unbind = srv_unbind,
};

/* --------------------------------------------------- em_connect client */

static void cli_post_init(em_conn *c)
{
    S.cli = c;
    S.cli_post_init++;
}

static void cli_completed(em_conn *c)
{
    (void)c;
    S.cli_completed++;
}

static void cli_data(em_conn *c, const char *d, size_t n)
{
    (void)c;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)d[i] != pattern_byte(S.cli_in + i)) {
            bad("echoed byte %llu is %u, expected %u",
                (unsigned long long)(S.cli_in + i), (unsigned char)d[i],
                pattern_byte(S.cli_in + i));
            break;
        }
    S.cli_in += n;
}

static void cli_unbind(em_conn *c, int reason)
{
    (void)c;
    S.cli = NULL;
    S.cli_unbound++;
    S.cli_reason = reason;
    if (reason == ENOMEM)
        reported("client unbind", ENOMEM);
    else if (!unbind_reason_ok(reason))
        bad("em_connect connection unbind(%d: %s)", reason, em_strerror(reason));
}

static const em_handler cli_h = {
    .post_init = cli_post_init,
    .connection_completed = cli_completed,
    .receive_data = cli_data,
    .unbind = cli_unbind,
};

/* ------------------------------------------ em_connect to a host name */

static void name_post_init(em_conn *c) { S.name_conn = c; }
static void name_completed(em_conn *c)
{
    (void)c;
    S.name_completed++;
}
static void name_unbind(em_conn *c, int reason)
{
    (void)c;
    S.name_conn = NULL;
    S.name_unbound++;
    if (reason == ENOMEM)
        reported("localhost unbind", ENOMEM);
    else if (!unbind_reason_ok(reason))
        bad("em_connect(localhost) unbind(%d: %s)", reason, em_strerror(reason));
}
static const em_handler name_h = {
    .post_init = name_post_init,
    .connection_completed = name_completed,
    .unbind = name_unbind,
};

/* ---------------------------------------------------------- callbacks */

static void on_timer(em_reactor *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
}

static void on_periodic(em_reactor *r, void *arg)
{
    (void)arg;
    if (++S.p_fired == 2 && em_cancel_timer(r, S.periodic) != 0)
        bad("em_cancel_timer(periodic) inside its callback failed");
}

static void defer_work(void *arg)
{
    (void)arg;
    atomic_fetch_add(&S.defer_work, 1);
}

/* ------------------------------------------------------------ helpers */

static bool run_while(em_reactor *r, bool (*pred)(void), double secs)
{
    double deadline = now_mono() + secs;
    while (!pred()) {
        double left = deadline - now_mono();
        if (left <= 0)
            return pred();
        int rc = em_run_once(r, left < 0.02 ? left : 0.02);
        if (rc < 0 && rc != -EINTR) {
            if (rc == -ENOMEM) {
                reported("em_run_once", ENOMEM);
            } else {
                bad("em_run_once: %d (%s)", rc, em_strerror(rc));
                return false;
            }
        }
    }
    return true;
}

static bool name_settled(void) { return S.name_completed || S.name_unbound; }
static bool name_settled_closed(void) { return S.name_unbound > 0; }
static bool cli_settled(void) { return S.cli_completed || S.cli_unbound; }

static uint64_t cli_sent;
static bool cli_echoed(void) { return S.cli_in >= cli_sent || S.cli_unbound; }

static int want_timer, want_periodic, want_tick, want_sched, want_defer;
static bool callbacks_done(void)
{
    return S.t_fired >= want_timer && S.p_fired >= 2 * want_periodic &&
           S.ticked >= want_tick && S.scheduled >= want_sched &&
           S.defer_done >= want_defer;
}

static em_reactor *g_r;
static bool raw_connected;
static size_t g_conns_before;
static bool all_unbound(void) { return em_connection_count(g_r) == 0; }
static bool burst_unbound(void) { return em_connection_count(g_r) <= g_conns_before; }

/* ------------------------------------------------------------ scenario */

/* Runs the scenario and leaves a verdict in S.bad (empty: fine). */
static void scenario(void)
{
    errno = 0;
    em_reactor *r = em_reactor_new(NULL);
    if (!check_ptr("em_reactor_new", r, errno))
        return;
    g_r = r;

    /* A server, echoing. */
    errno = 0;
    em_server *srv = em_start_server(r, "127.0.0.1", 0, &srv_h, NULL);
    int port = 0;
    if (check_ptr("em_start_server", srv, errno))
        port = em_server_port(srv);

    /* A raw client, accepted and echoed. */
    int raw = -1;
    if (srv) {
        raw = tcp_connect_raw("127.0.0.1", port);
        raw_connected = true;
        write_all(raw, RAW_MSG, sizeof RAW_MSG - 1);
        set_nonblock(raw);
        char got[64];
        size_t have = 0;
        bool eof = false;
        double deadline = now_mono() + STEP_TIMEOUT;
        while (have < sizeof RAW_MSG - 1 && !eof && now_mono() < deadline && !S.bad[0]) {
            int rc = em_run_once(r, 0.01);
            if (rc == -ENOMEM)
                reported("em_run_once", ENOMEM);
            else if (rc < 0 && rc != -EINTR)
                bad("em_run_once: %d", rc);
            ssize_t n = read(raw, got + have, sizeof got - have);
            if (n > 0)
                have += (size_t)n;
            else if (n == 0 || (errno != EAGAIN && errno != EINTR))
                eof = true;
        }
        if (have == sizeof RAW_MSG - 1) {
            if (memcmp(got, RAW_MSG, have) != 0)
                bad("raw client: wrong echo");
        } else if (eof) {
            /* Allowed when the accepted connection could not be made (never
             * reported: no callback for it) or its echo failed (reported). */
            if (S.accepted && !S.reported)
                bad("raw client: EOF after %zu bytes with no error reported", have);
        } else if (!S.bad[0]) {
            bad("raw client: no echo within %.0f s (accepted %d, reported %d)",
                STEP_TIMEOUT, S.accepted, S.reported);
        }
    }

    /* A burst of raw clients: grows the signature map (and the poll
     * backend's arrays) past their first capacity. */
    if (srv) {
        int fds[BURST];
        bool done[BURST] = {false};
        int left = BURST, accepted_before = S.accepted, reported_before = S.reported;
        g_conns_before = em_connection_count(r);
        for (int i = 0; i < BURST; i++) {
            fds[i] = tcp_connect_raw("127.0.0.1", port);
            write_all(fds[i], "x", 1);
            set_nonblock(fds[i]);
        }
        double deadline = now_mono() + STEP_TIMEOUT;
        int eofs = 0;
        while (left && now_mono() < deadline && !S.bad[0]) {
            int rc = em_run_once(r, 0.01);
            if (rc == -ENOMEM)
                reported("em_run_once", ENOMEM);
            else if (rc < 0 && rc != -EINTR)
                bad("em_run_once: %d", rc);
            for (int i = 0; i < BURST; i++) {
                if (done[i])
                    continue;
                char ch;
                ssize_t n = read(fds[i], &ch, 1);
                if (n == 1 && ch != 'x')
                    bad("burst client %d: wrong echo", i);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                    eofs++;
                if (n >= 0 || (errno != EAGAIN && errno != EINTR)) {
                    done[i] = true;
                    left--;
                }
            }
        }
        if (left && !S.bad[0])
            bad("burst: %d of %d clients got no echo in %.0f s (accepted %d)", left, BURST,
                STEP_TIMEOUT, S.accepted - accepted_before);
        /* An EOF is allowed for a connection that could not be accepted, or
         * whose echo failed with an error reported. */
        if (eofs > BURST - (S.accepted - accepted_before) &&
            S.reported == reported_before)
            bad("burst: %d clients got EOF, %d accepted, no error reported", eofs,
                S.accepted - accepted_before);
        for (int i = 0; i < BURST; i++)
            close(fds[i]);
        if (!run_while(r, burst_unbound, STEP_TIMEOUT))
            bad("burst: %zu connections still open %.0f s after the clients closed",
                em_connection_count(r), STEP_TIMEOUT);
    }

    /* em_connect to it, small and large data echoed. */
    if (srv) {
        errno = 0;
        em_conn *c = em_connect(r, "127.0.0.1", port, &cli_h, NULL);
        if (check_ptr("em_connect", c, errno)) {
            if (S.cli_post_init != 1)
                bad("em_connect: post_init ran %d times", S.cli_post_init);
            if (!run_while(r, cli_settled, STEP_TIMEOUT))
                bad("em_connect: neither connection_completed nor unbind in %.0f s",
                    STEP_TIMEOUT);
        } else if (S.cli_post_init) {
            bad("em_connect failed after post_init ran");
        }
        if (S.cli && S.cli_completed) {
            static char data[SMALL_LEN + LARGE_LEN];
            for (size_t i = 0; i < sizeof data; i++)
                data[i] = (char)pattern_byte(i);
            if (check_rc("em_send_data(small)", em_send_data(S.cli, data, SMALL_LEN))) {
                cli_sent = SMALL_LEN;
                if (check_rc("em_send_data(large)",
                             em_send_data(S.cli, data + SMALL_LEN, LARGE_LEN)))
                    cli_sent += LARGE_LEN;
            }
            if (!run_while(r, cli_echoed, STEP_TIMEOUT))
                bad("echo: %llu of %llu bytes back in %.0f s",
                    (unsigned long long)S.cli_in, (unsigned long long)cli_sent,
                    STEP_TIMEOUT);
            else if (S.cli_in < cli_sent && !S.reported && S.accepted == 1 + raw_connected)
                bad("echo: unbind(%d) after %llu of %llu bytes, no error reported "
                    "(accepted %d)",
                    S.cli_reason, (unsigned long long)S.cli_in,
                    (unsigned long long)cli_sent, S.accepted);
        }
    }

    /* em_connect to a name: resolved on the pool, each address tried. */
    if (srv) {
        errno = 0;
        em_conn *c = em_connect(r, "localhost", port, &name_h, NULL);
        if (check_ptr("em_connect(localhost)", c, errno)) {
            if (!run_while(r, name_settled, STEP_TIMEOUT))
                bad("em_connect(localhost): neither connection_completed nor unbind in "
                    "%.0f s", STEP_TIMEOUT);
            if (S.name_conn)
                em_close_connection(S.name_conn, false);
            if (!run_while(r, name_settled_closed, STEP_TIMEOUT))
                bad("em_connect(localhost): no unbind %.0f s after closing", STEP_TIMEOUT);
        }
    }

    /* Timers, ticks, schedule, defer. */
    errno = 0;
    em_timer_id t1 = em_add_timer(r, 0.005, on_timer, &S.t_fired);
    if (check_ptr("em_add_timer", t1 ? (void *)1 : NULL, errno))
        want_timer = 1;
    errno = 0;
    em_timer_id t2 = em_add_timer(r, 30, on_timer, &S.t_never);
    if (check_ptr("em_add_timer(cancelled)", t2 ? (void *)1 : NULL, errno)) {
        int rc = em_cancel_timer(r, t2);
        if (rc != 0)
            bad("em_cancel_timer: %d (%s)", rc, em_strerror(rc));
    }
    /* Enough timers to grow the heap and the slot table past 64. */
    for (int i = 0; i < MANY_TIMERS; i++) {
        errno = 0;
        em_timer_id id = em_add_timer(r, 0.001 * (i % 7), on_timer, &S.t_fired);
        if (check_ptr("em_add_timer(many)", id ? (void *)1 : NULL, errno))
            want_timer++;
    }
    errno = 0;
    S.periodic = em_add_periodic_timer(r, 0.002, on_periodic, NULL);
    if (check_ptr("em_add_periodic_timer", S.periodic ? (void *)1 : NULL, errno))
        want_periodic = 1;
    if (check_rc("em_next_tick", em_next_tick(r, on_timer, &S.ticked)))
        want_tick = 1;
    if (check_rc("em_schedule", em_schedule(r, on_timer, &S.scheduled)))
        want_sched = 1;
    int rc = em_defer(r, defer_work, on_timer, &S.defer_done);
    if (rc == -EAGAIN)
        reported("em_defer", EAGAIN);
    else if (check_rc("em_defer", rc))
        want_defer = 1;
    if (!run_while(r, callbacks_done, STEP_TIMEOUT))
        bad("accepted callbacks did not run: timer %d/%d, periodic %d/%d, tick %d/%d, "
            "schedule %d/%d, defer %d/%d (work %d)",
            S.t_fired, want_timer, S.p_fired, 2 * want_periodic, S.ticked, want_tick,
            S.scheduled, want_sched, S.defer_done, want_defer,
            atomic_load(&S.defer_work));
    if (S.t_never)
        bad("a cancelled timer fired");

    /* Close everything. */
    if (S.cli)
        em_close_connection(S.cli, true);
    if (raw >= 0)
        close(raw);
    if (!run_while(r, all_unbound, STEP_TIMEOUT))
        bad("%zu connections still open %.0f s after closing",
            em_connection_count(r), STEP_TIMEOUT);
    if (srv) {
        rc = em_stop_server(srv);
        if (rc != 0)
            bad("em_stop_server: %d", rc);
    }
    if (S.cli_post_init && S.cli_unbound != 1)
        bad("em_connect connection unbound %d times", S.cli_unbound);
    if (S.srv_unbinds != S.accepted)
        bad("server: %d accepted, %d unbound", S.accepted, S.srv_unbinds);
    em_reactor_free(r);
    g_r = NULL;
}

/* ------------------------------------------------------------- driver */

/* Child for one n: the result line goes to fd. */
static void child(long n, int fd)
{
    signal(SIGALRM, SIG_DFL);
    alarm(CHILD_TIMEOUT);
    int rc = em_set_allocator(t_malloc, t_realloc, t_free);
    if (rc != 0) {
        dprintf(fd, "bad em_set_allocator: %d\n", rc);
        _exit(0);
    }
    atomic_store(&a_fail_at, n);
    scenario();
    long live = atomic_load(&a_live);
    if (!S.bad[0] && live != 0)
        bad("%ld blocks from the allocator hook not freed after em_reactor_free", live);
    int want_accepts = (raw_connected ? 1 + BURST : 0) + (S.cli_completed ? 1 : 0) +
                       (S.name_completed ? 1 : 0);
    if (S.bad[0])
        dprintf(fd, "bad %s (first error: %s)\n", S.bad, S.first[0] ? S.first : "none");
    else if (!atomic_load(&a_hit))
        dprintf(fd, "ok-clean %ld\n", atomic_load(&a_calls));
    else if (S.reported)
        dprintf(fd, "ok-hit %ld %s\n", atomic_load(&a_calls), S.first);
    else if (S.accepted < want_accepts)
        dprintf(fd, "ok-dropped %ld accepted connection dropped\n", atomic_load(&a_calls));
    else /* nothing lost (checked above): the library got over it by itself */
        dprintf(fd, "absorbed %ld\n", atomic_load(&a_calls));
    close(fd);
    exit(0); /* LeakSanitizer runs here in the ASan build */
}

typedef struct {
    char line[600];
    int status;
    bool timed_out;
} outcome;

static void run_n(long n, outcome *o)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        FAIL("pipe2: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        close(p[0]);
        child(n, p[1]);
    }
    close(p[1]);
    size_t len = 0;
    for (;;) {
        ssize_t k = read(p[0], o->line + len, sizeof o->line - 1 - len);
        if (k > 0 && (len += (size_t)k) < sizeof o->line - 1)
            continue;
        if (k < 0 && errno == EINTR)
            continue;
        break;
    }
    o->line[len] = '\0';
    char *nl = strchr(o->line, '\n');
    if (nl)
        *nl = '\0';
    close(p[0]);
    while (waitpid(pid, &o->status, 0) < 0 && errno == EINTR) {
    }
    o->timed_out = WIFSIGNALED(o->status) && WTERMSIG(o->status) == SIGALRM;
}

TEST(alloc_fail_every_point)
{
    /* n = 0: no failure; the scenario must pass and gives the count. */
    outcome o;
    run_n(0, &o);
    if (strncmp(o.line, "ok-clean ", 9) != 0 || !WIFEXITED(o.status) ||
        WEXITSTATUS(o.status) != 0)
        FAIL("scenario without failures: \"%s\", status 0x%x", o.line, o.status);
    long base = atol(o.line + 9);

    char summary[900] = "";
    size_t slen = 0;
    int nbad = 0, nhit = 0, nabsorbed = 0, ndropped = 0, clean_in_row = 0;
    long first_base = base;
    long n;
    for (n = 1; n <= MAX_N; n++) {
        run_n(n, &o);
        const char *what = NULL;
        char buf[700];
        if (strncmp(o.line, "ok-clean ", 9) != 0)
            clean_in_row = 0;
        if (o.timed_out) {
            snprintf(buf, sizeof buf, "hung (no exit in %d s)%s%s", CHILD_TIMEOUT,
                     o.line[0] ? ": " : "", o.line);
            what = buf;
        } else if (WIFSIGNALED(o.status)) {
            snprintf(buf, sizeof buf, "crashed: signal %d (%s)%s%s", WTERMSIG(o.status),
                     strsignal(WTERMSIG(o.status)), o.line[0] ? " after: " : "", o.line);
            what = buf;
        } else if (WEXITSTATUS(o.status) != 0) {
            snprintf(buf, sizeof buf,
                     "exit status %d (sanitizer report, leak?) after \"%s\"",
                     WEXITSTATUS(o.status), o.line);
            what = buf;
        } else if (strncmp(o.line, "bad ", 4) == 0) {
            what = o.line + 4;
        } else if (strncmp(o.line, "absorbed ", 9) == 0) {
            nabsorbed++;
            nhit++;
        } else if (strncmp(o.line, "ok-hit ", 7) == 0) {
            nhit++;
        } else if (strncmp(o.line, "ok-dropped ", 11) == 0) {
            nhit++;
            ndropped++;
        } else if (strncmp(o.line, "ok-clean ", 9) == 0) {
            /* n is beyond this run's allocations; the count varies a little
             * with timing, so go on until past the largest count seen and
             * three clean runs in a row. */
            long calls = atol(o.line + 9);
            if (calls > base)
                base = calls;
            if (++clean_in_row >= 3 && n > base)
                break;
            continue;
        } else {
            snprintf(buf, sizeof buf, "no result (\"%s\")", o.line);
            what = buf;
        }
        if (what) {
            nbad++;
            fprintf(stderr, "alloc n=%ld: %s\n", n, what);
            if (slen < sizeof summary - 80)
                slen += (size_t)snprintf(summary + slen, sizeof summary - slen,
                                         "%sn=%ld: %.60s", slen ? "; " : "", n, what);
        }
    }
    printf("alloc: backend %s, %ld allocations without failure (up to %ld), points "
           "n=1..%ld tried, %d hit (%d only dropped an accepted connection, %d absorbed), "
           "%d broken\n",
           getenv("EM_BACKEND") ? getenv("EM_BACKEND") : "default", first_base, base, n,
           nhit, ndropped, nabsorbed, nbad);
    fflush(stdout);
    if (n > MAX_N)
        FAIL("the scenario still allocates after %d points", MAX_N);
    if (nbad)
        FAIL("%d failing points: %s", nbad, summary);
}
TEST_TIMEOUT(alloc_fail_every_point, 400);
