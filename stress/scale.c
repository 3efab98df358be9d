/*
 * Scale stress (issue 5, item 9): N concurrent loopback connections, each
 * echoing a 32-byte message every INTERVAL seconds for DURATION seconds.
 *
 * Two processes, each with its own reactor (one process would need 2N
 * descriptors): the parent is a libem echo server on an attached listening
 * socket, the forked child a libem client that opens the N connections,
 * drives the echoes and checks every reply (content, order, and that it came
 * back before the connection's next turn). The server samples its RSS from
 * /proc/self/statm every second and reports it before the connections
 * (idle), once all are up (start), its peak, at the end of the run (end) and
 * after they closed.
 *
 * Usage: scale [CONNS [DURATION [INTERVAL]]]
 * Environment: STRESS_CONNS (15000), STRESS_DURATION (60), STRESS_INTERVAL
 * (1.0), EM_BACKEND. Exit status 0 only with zero errors and a stable RSS
 * (end <= start * 1.25 + 8 MiB).
 */
#include <em.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 32
#define SLICES 100        /* the send timer visits 1/SLICES of the conns per tick */
#define CONNECT_BATCH 250 /* connects started per 10 ms */
#define MAX_CONNECTING 2000

static long nconns = 15000;
static double duration = 60, interval = 1.0;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double rss_mib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (double)res * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

static void die(const char *what, int err)
{
    fprintf(stderr, "scale: %s: %s\n", what, em_strerror(err));
    exit(2);
}

/* =============================================================== server */

static struct {
    em_reactor *r;
    long accepted, live, errors, max_live;
    int first_errors_shown;
    bool client_gone;
    double rss_idle, rss_start, rss_peak, rss_end, rss_after;
    bool started;
    uint64_t bytes;
} S;

static void s_post_init(em_conn *c)
{
    (void)c;
    S.accepted++;
    S.live++;
    if (S.live > S.max_live)
        S.max_live = S.live;
}

static void s_data(em_conn *c, const char *d, size_t n)
{
    S.bytes += n;
    int rc = em_send_data(c, d, n);
    if (rc != 0) {
        S.errors++;
        fprintf(stderr, "server: send_data: %s\n", em_strerror(rc));
    }
}

static void s_unbind(em_conn *c, int reason)
{
    (void)c;
    S.live--;
    if (reason != 0) {
        S.errors++;
        if (S.first_errors_shown++ < 5)
            fprintf(stderr, "server: unbind(%s)\n", em_strerror(reason));
    }
}

static void s_sample(em_reactor *r, void *arg)
{
    (void)arg;
    double rss = rss_mib();
    if (S.rss_peak < rss)
        S.rss_peak = rss;
    if (!S.started && S.live == nconns) {
        S.started = true;
        S.rss_start = rss;
    }
    if (S.started && S.live == nconns)
        S.rss_end = rss; /* the last sample with every connection up */
    if (S.client_gone && em_connection_count(r) == 0)
        em_stop(r);
}

static void s_sigchld(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    S.client_gone = true;
}

static const em_handler s_handler = {
    .post_init = s_post_init,
    .receive_data = s_data,
    .unbind = s_unbind,
};

static int run_server(int lfd, pid_t child)
{
    S.r = em_reactor_new(NULL);
    if (!S.r)
        die("server reactor", errno);
    int rc = em_add_signal_handler(S.r, SIGCHLD, s_sigchld, NULL);
    if (rc)
        die("SIGCHLD handler", -rc);
    /* the child may have died before the handler existed */
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)child, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == child)
        S.client_gone = true;
    if (!em_attach_server(S.r, lfd, &s_handler, NULL))
        die("em_attach_server", errno);
    S.rss_idle = S.rss_peak = rss_mib();
    if (!em_add_periodic_timer(S.r, 1.0, s_sample, NULL))
        die("timer", errno);
    rc = em_run(S.r);
    if (rc)
        die("em_run", -rc);
    S.rss_after = rss_mib();
    const char *backend = em_backend_name(S.r);
    em_reactor_free(S.r);
    int st = 0;
    while (waitpid(child, &st, 0) < 0 && errno == EINTR) {
    }
    bool stable = S.rss_end <= S.rss_start * 1.25 + 8;
    printf("server: %s backend, %ld accepted, at most %ld at once, %llu bytes echoed, "
           "%ld errors\n",
           backend, S.accepted, S.max_live,
           (unsigned long long)S.bytes, S.errors);
    printf("server RSS (MiB): idle %.1f, start %.1f (all %ld up), peak %.1f, end %.1f, "
           "after close %.1f: %s\n",
           S.rss_idle, S.rss_start, nconns, S.rss_peak, S.rss_end, S.rss_after,
           stable ? "stable" : "GROWING");
    bool client_ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!client_ok)
        printf("client: %s %d\n", WIFEXITED(st) ? "exit status" : "killed by signal",
               WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    bool ok = client_ok && S.errors == 0 && S.started && stable;
    printf("scale: %s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}

/* =============================================================== client */

struct cconn {
    em_conn *c;
    uint32_t seq;     /* of the message in flight */
    bool waiting;     /* a reply is due */
    double sent_at;
    size_t got;       /* bytes of the reply so far */
    char expect[MSG];
};

static struct {
    em_reactor *r;
    int port;
    struct cconn *cs;
    long started, connected, live, unbound;
    long errors, shown;
    uint64_t echoes, sent;
    double t_all_up, t_end;
    bool sending, closing;
    unsigned tick;
    em_timer_id connect_timer, send_timer, report_timer;
    uint64_t hist[1001]; /* round trips in ms; [1000]: 1 s and more */
    double rtt_max;
} C;

static void c_error(const char *fmt, long i, const char *what)
{
    C.errors++;
    if (C.shown++ < 10) {
        fprintf(stderr, "client: conn %ld: ", i);
        fprintf(stderr, fmt, what);
        fputc('\n', stderr);
    }
}

static void c_completed(em_conn *c)
{
    (void)c;
    C.connected++;
}

static void c_data(em_conn *c, const char *d, size_t n)
{
    struct cconn *x = em_conn_user(c);
    long i = x - C.cs;
    if (!x->waiting || x->got + n > MSG) {
        c_error("%s", i, "unexpected bytes");
        return;
    }
    if (memcmp(d, x->expect + x->got, n) != 0)
        c_error("%s", i, "reply does not match");
    x->got += n;
    if (x->got == MSG) {
        x->waiting = false;
        C.echoes++;
        double rtt = mono() - x->sent_at;
        if (rtt > C.rtt_max)
            C.rtt_max = rtt;
        long ms = (long)(rtt * 1000);
        C.hist[ms > 1000 ? 1000 : ms]++;
    }
}

static void c_unbind(em_conn *c, int reason)
{
    struct cconn *x = em_conn_user(c);
    C.live--;
    C.unbound++;
    if (reason != 0 || !C.closing)
        c_error("unbind(%s) before the end", x - C.cs, em_strerror(reason));
    x->c = NULL;
}

static const em_handler c_handler = {
    .connection_completed = c_completed,
    .receive_data = c_data,
    .unbind = c_unbind,
};

static void c_connect_more(em_reactor *r, void *arg)
{
    (void)arg;
    for (int k = 0; k < CONNECT_BATCH && C.started < nconns &&
                    C.started - C.connected < MAX_CONNECTING;
         k++) {
        struct cconn *x = &C.cs[C.started];
        x->c = em_connect(r, "127.0.0.1", C.port, &c_handler, NULL);
        if (!x->c) {
            c_error("em_connect: %s", C.started, em_strerror(errno));
            nconns = C.started; /* give up on the rest */
            break;
        }
        em_conn_set_user(x->c, x);
        C.started++;
        C.live++;
    }
    if (C.started >= nconns) {
        em_cancel_timer(r, C.connect_timer);
        C.connect_timer = 0;
    }
}

static void c_send(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    if (!C.sending)
        return;
    unsigned slice = C.tick++ % SLICES;
    for (long i = slice; i < nconns; i += SLICES) {
        struct cconn *x = &C.cs[i];
        if (!x->c)
            continue;
        if (x->waiting) {
            c_error("%s", i, "no reply within one interval");
            continue;
        }
        x->seq++;
        char line[96];
        memset(line, '.', sizeof line);
        int k = snprintf(line, sizeof line, "conn %06ld seq %08u ", i % 1000000,
                         (unsigned)x->seq);
        if (k > 0 && k < MSG)
            line[k] = '.'; /* dots up to MSG */
        memcpy(x->expect, line, MSG);
        x->expect[MSG - 1] = '\n';
        x->waiting = true;
        x->got = 0;
        x->sent_at = mono();
        int rc = em_send_data(x->c, x->expect, MSG);
        if (rc != 0)
            c_error("send_data: %s", i, em_strerror(rc));
        C.sent++;
    }
}

static void c_report(em_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    printf("client: t=%.0fs connections %ld/%ld, echoes %llu, errors %ld, RSS %.1f MiB\n",
           C.t_all_up ? mono() - C.t_all_up : 0.0, C.connected, nconns,
           (unsigned long long)C.echoes, C.errors, rss_mib());
}

static bool run_turns_until(bool (*done)(void), double secs)
{
    double deadline = mono() + secs;
    while (!done() && mono() < deadline) {
        int rc = em_run_once(C.r, 0.1);
        if (rc < 0 && rc != -EINTR)
            die("em_run_once", -rc);
    }
    return done();
}

static bool all_connected(void) { return C.connected + C.unbound >= nconns; }
static bool run_over(void) { return mono() >= C.t_end; }
static bool none_waiting(void)
{
    for (long i = 0; i < nconns; i++)
        if (C.cs[i].c && C.cs[i].waiting)
            return false;
    return true;
}
static bool all_unbound(void) { return C.live == 0; }

static double hist_pct(double p)
{
    uint64_t total = 0, acc = 0;
    for (int i = 0; i <= 1000; i++)
        total += C.hist[i];
    for (int i = 0; i <= 1000; i++) {
        acc += C.hist[i];
        if (total && (double)acc >= p * (double)total)
            return i + 1;
    }
    return 0;
}

static int run_client(int port)
{
    C.port = port;
    C.r = em_reactor_new(NULL);
    if (!C.r)
        die("client reactor", errno);
    C.cs = calloc((size_t)nconns, sizeof *C.cs);
    if (!C.cs)
        die("calloc", ENOMEM);
    double t0 = mono();
    C.connect_timer = em_add_periodic_timer(C.r, 0.01, c_connect_more, NULL);
    C.report_timer = em_add_periodic_timer(C.r, 10.0, c_report, NULL);
    if (!C.connect_timer || !C.report_timer)
        die("timer", errno);
    if (!run_turns_until(all_connected, 120))
        c_error("%s", C.connected, "connections not all up within 120 s");
    C.t_all_up = mono();
    printf("client: %ld connections up in %.2f s (%s backend)\n", C.connected, C.t_all_up - t0,
           em_backend_name(C.r));
    fflush(stdout);

    C.sending = true;
    C.send_timer = em_add_periodic_timer(C.r, interval / SLICES, c_send, NULL);
    if (!C.send_timer)
        die("timer", errno);
    C.t_end = C.t_all_up + duration;
    run_turns_until(run_over, duration + 1);
    C.sending = false;
    em_cancel_timer(C.r, C.send_timer);
    if (!run_turns_until(none_waiting, 10))
        c_error("%s", 0L, "replies still missing 10 s after the end");

    C.closing = true;
    for (long i = 0; i < nconns; i++)
        if (C.cs[i].c)
            em_close_connection(C.cs[i].c, false);
    if (!run_turns_until(all_unbound, 30))
        c_error("%s", 0L, "connections not all unbound 30 s after closing");
    em_cancel_timer(C.r, C.report_timer);
    if (C.connect_timer)
        em_cancel_timer(C.r, C.connect_timer);
    size_t left_conns = em_connection_count(C.r), left_timers = em_timer_count(C.r);
    if (left_conns || left_timers)
        c_error("%s", 0L, "connections or timers left at the end");
    em_reactor_free(C.r);
    printf("client: %ld connections, %.0f s of echoes every %.2f s: %llu sent, %llu echoed "
           "and checked, round trip p50 <= %.0f ms, p99 <= %.0f ms, max %.1f ms; %ld errors\n",
           C.connected, duration, interval, (unsigned long long)C.sent,
           (unsigned long long)C.echoes, hist_pct(0.5), hist_pct(0.99), C.rtt_max * 1e3,
           C.errors);
    fflush(stdout);
    free(C.cs);
    return C.errors || C.echoes != C.sent || C.echoes == 0 ? 1 : 0;
}

/* ================================================================= main */

static double env_num(const char *name, double def)
{
    const char *v = getenv(name);
    return v && *v ? atof(v) : def;
}

int main(int argc, char **argv)
{
    nconns = (long)env_num("STRESS_CONNS", 15000);
    duration = env_num("STRESS_DURATION", 60);
    interval = env_num("STRESS_INTERVAL", 1.0);
    if (argc > 1)
        nconns = atol(argv[1]);
    if (argc > 2)
        duration = atof(argv[2]);
    if (argc > 3)
        interval = atof(argv[3]);
    if (nconns <= 0 || !(duration > 0) || !(interval > 0)) {
        fprintf(stderr, "usage: scale [CONNS [DURATION [INTERVAL]]]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < nconns + 64) {
        fprintf(stderr, "scale: RLIMIT_NOFILE %ld is too low for %ld connections\n",
                (long)rl.rlim_cur, nconns);
        return 2;
    }
    printf("scale: %ld connections, %.0f s, one %d-byte echo per connection every %.2f s, "
           "RLIMIT_NOFILE %ld\n",
           nconns, duration, MSG, interval, (long)rl.rlim_cur);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &len) != 0)
        die("listen", errno);
    int port = ntohs(sa.sin_port);

    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", errno);
    if (pid == 0) {
        close(lfd);
        _exit(run_client(port));
    }
    return run_server(lfd, pid);
}
