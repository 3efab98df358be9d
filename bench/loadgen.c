/*
 * loadgen: the load generator of libem's benchmark suite.
 *
 * Plain C on raw epoll (level-triggered), single-threaded, so that it is not
 * built on any library under test. It talks to an echo server on 127.0.0.1
 * and prints one key=value line per run.
 *
 *   loadgen pingpong --port P [--conns C] [--size S] [--seconds T] [--pid PID]
 *       C connections; each sends an S-byte message, waits for the whole
 *       echo, and repeats. Round trips/s, p50/p99 latency (µs).
 *   loadgen stream   --port P [--conns C] [--size S] [--seconds T] [--pid PID]
 *       C connections; each writes S-byte messages keeping at most 64 KiB in
 *       flight (written and not yet echoed back). MB/s echoed (10^6 bytes).
 *   loadgen connect  --port P [--conns C] [--seconds T] [--pid PID]
 *       C concurrent loops of: connect, send 1 byte, read the echo, close.
 *       Connections/s.
 *   loadgen idle     --port P [--conns N] --pid PID [--seconds T]
 *       Opens N connections (each echoes one byte once, so that the server
 *       has accepted it and set it up), leaves them idle, and reports the
 *       server's VmRSS growth per connection. --seconds is the settling time
 *       before the second reading (default 0.5).
 *   loadgen check    --port P [--size S]
 *       One S-byte echo, verified byte for byte; exit status 0 on success.
 *   loadgen freeport
 *       Prints a TCP port of 127.0.0.1 that was free a moment ago.
 *
 * With --pid, the server's CPU time (utime + stime from /proc/PID/stat) is
 * read before and after the measured interval and printed as
 * server_cpu_us_per_op: µs of server CPU per round trip (pingpong), per
 * S-byte message echoed (stream), per connection (connect, idle).
 *
 * Exit status: 0 on success, 1 on a failed run (connection errors, no
 * progress), 2 on bad usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STREAM_WINDOW (64 * 1024) /* bytes in flight per stream connection */
#define MAX_EVENTS 256
#define IDLE_IN_PROGRESS 100 /* idle mode: connections being set up at once */

static struct {
    const char *mode;
    int port;
    int conns;
    size_t size;
    double seconds;
    long pid;
} opt = {.port = 0, .conns = -1, .size = 64, .seconds = -1, .pid = 0};

static int ep = -1;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ /proc */

/* Server CPU time (user + system) in seconds; -1 when unknown. */
static double server_cpu_s(void)
{
    if (opt.pid <= 0)
        return -1;
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", opt.pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return -1;
    p++;
    /* Fields after the name: 3 state ... 14 utime 15 stime. */
    unsigned long long utime = 0, stime = 0;
    char state;
    if (sscanf(p, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &utime,
               &stime) != 3)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(utime + stime) / (double)(hz > 0 ? hz : 100);
}

/* Server VmRSS in kB; -1 when unknown. */
static long server_rss_kb(void)
{
    if (opt.pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", opt.pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* ------------------------------------------------------------ sockets */

static struct sockaddr_in server_addr(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sa;
}

/* A non-blocking TCP socket with TCP_NODELAY, connecting to the server.
 * Returns the fd (connection possibly in progress) or -errno. */
static int start_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = server_addr();
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* Waits for a connect started by start_connect to finish (blocking). */
static void wait_connected(int fd)
{
    int e = 0;
    socklen_t len = sizeof e;
    struct epoll_event ev = {.events = EPOLLOUT};
    int tmp = epoll_create1(EPOLL_CLOEXEC);
    if (tmp < 0)
        die("epoll_create1: %s", strerror(errno));
    epoll_ctl(tmp, EPOLL_CTL_ADD, fd, &ev);
    if (epoll_wait(tmp, &ev, 1, 5000) != 1)
        die("connect to 127.0.0.1:%d timed out", opt.port);
    close(tmp);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0 || e != 0)
        die("connect to 127.0.0.1:%d: %s", opt.port, strerror(e ? e : errno));
}

static int connect_blocking(void)
{
    int fd = start_connect();
    if (fd < 0)
        die("connect to 127.0.0.1:%d: %s", opt.port, strerror(-fd));
    wait_connected(fd);
    return fd;
}

static void ep_ctl(int op, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    if (epoll_ctl(ep, op, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ------------------------------------------------------------ output */

static double cpu0, cpu1;

static void print_common(double elapsed, uint64_t ops)
{
    printf("mode=%s conns=%d size=%zu seconds=%.3f ops=%llu ops_per_s=%.1f", opt.mode,
           opt.conns, opt.size, elapsed, (unsigned long long)ops,
           elapsed > 0 ? (double)ops / elapsed : 0.0);
}

static void print_cpu(uint64_t ops)
{
    if (cpu0 >= 0 && cpu1 >= 0) {
        double used = cpu1 - cpu0;
        printf(" server_cpu_s=%.3f server_cpu_us_per_op=%.3f", used,
               ops ? used * 1e6 / (double)ops : 0.0);
    } else {
        printf(" server_cpu_s=NA server_cpu_us_per_op=NA");
    }
}

/* ------------------------------------------------------------ pingpong */

typedef struct {
    uint32_t *v;
    size_t n, cap;
} samples;

static void sample_add(samples *s, uint64_t ns)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1 << 16;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            die("out of memory");
    }
    s->v[s->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double percentile_us(samples *s, double p)
{
    if (s->n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(s->n - 1) + 0.5);
    return (double)s->v[i] / 1000.0;
}

static int run_pingpong(void)
{
    int C = opt.conns;
    size_t S = opt.size;
    int *fds = calloc((size_t)C, sizeof *fds);
    size_t *got = calloc((size_t)C, sizeof *got);
    uint64_t *sent_at = calloc((size_t)C, sizeof *sent_at);
    char *msg = malloc(S), *buf = malloc(S);
    if (!fds || !got || !sent_at || !msg || !buf)
        die("out of memory");
    for (size_t i = 0; i < S; i++)
        msg[i] = (char)('a' + i % 26);
    for (int i = 0; i < C; i++) {
        fds[i] = connect_blocking();
        ep_ctl(EPOLL_CTL_ADD, fds[i], EPOLLIN, (uint64_t)i);
    }
    samples lat = {0};
    uint64_t ops = 0;
    cpu0 = server_cpu_s();
    double t0 = now_s(), end = t0 + opt.seconds;
    for (int i = 0; i < C; i++) {
        sent_at[i] = now_ns();
        if (write(fds[i], msg, S) != (ssize_t)S)
            die("write: %s", strerror(errno));
    }
    struct epoll_event evs[MAX_EVENTS];
    double t = t0;
    while (t < end) {
        int ms = (int)((end - t) * 1000) + 1;
        int n = epoll_wait(ep, evs, MAX_EVENTS, ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u64;
            ssize_t r = read(fds[i], buf, S - got[i]);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                die("connection %d: %s", i, r ? strerror(errno) : "closed by the server");
            }
            got[i] += (size_t)r;
            if (got[i] < S)
                continue;
            uint64_t tn = now_ns();
            sample_add(&lat, tn - sent_at[i]);
            ops++;
            got[i] = 0;
            sent_at[i] = tn;
            if (write(fds[i], msg, S) != (ssize_t)S)
                die("write: %s", strerror(errno));
        }
        t = now_s();
    }
    cpu1 = server_cpu_s();
    double elapsed = t - t0;
    qsort(lat.v, lat.n, sizeof *lat.v, cmp_u32);
    print_common(elapsed, ops);
    printf(" p50_us=%.1f p99_us=%.1f", percentile_us(&lat, 0.50), percentile_us(&lat, 0.99));
    print_cpu(ops);
    printf("\n");
    return ops ? 0 : 1;
}

/* ------------------------------------------------------------ stream */

typedef struct {
    int fd;
    uint64_t sent, received;
    size_t off; /* bytes of the current message already written */
    bool want_out;
} sconn;

static void stream_fill(sconn *c, int i, const char *msg)
{
    size_t S = opt.size;
    while (c->sent - c->received + (S - c->off) <= STREAM_WINDOW) {
        ssize_t w = write(c->fd, msg + c->off, S - c->off);
        if (w < 0) {
            if (errno != EAGAIN)
                die("write: %s", strerror(errno));
            break;
        }
        c->sent += (uint64_t)w;
        c->off += (size_t)w;
        if (c->off < S)
            break; /* the kernel took part of it: wait for EPOLLOUT */
        c->off = 0;
    }
    bool blocked = c->off != 0 ||
                   (c->sent - c->received + S <= STREAM_WINDOW); /* EAGAIN on a fresh one */
    if (blocked != c->want_out) {
        c->want_out = blocked;
        ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN | (blocked ? EPOLLOUT : 0), (uint64_t)i);
    }
}

static int run_stream(void)
{
    int C = opt.conns;
    size_t S = opt.size;
    if (S > STREAM_WINDOW)
        die("--size must be at most %d for stream", STREAM_WINDOW);
    sconn *cs = calloc((size_t)C, sizeof *cs);
    char *msg = malloc(S);
    size_t bufsize = 256 * 1024;
    char *buf = malloc(bufsize);
    if (!cs || !msg || !buf)
        die("out of memory");
    memset(msg, 'x', S);
    for (int i = 0; i < C; i++) {
        cs[i].fd = connect_blocking();
        ep_ctl(EPOLL_CTL_ADD, cs[i].fd, EPOLLIN, (uint64_t)i);
    }
    cpu0 = server_cpu_s();
    double t0 = now_s(), end = t0 + opt.seconds;
    uint64_t total = 0;
    for (int i = 0; i < C; i++)
        stream_fill(&cs[i], i, msg);
    struct epoll_event evs[MAX_EVENTS];
    double t = t0;
    while (t < end) {
        int ms = (int)((end - t) * 1000) + 1;
        int n = epoll_wait(ep, evs, MAX_EVENTS, ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u64;
            sconn *c = &cs[i];
            if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t r = read(c->fd, buf, bufsize);
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN)
                        continue;
                    die("connection %d: %s", i, r ? strerror(errno) : "closed by the server");
                }
                c->received += (uint64_t)r;
                total += (uint64_t)r;
            }
            stream_fill(c, i, msg);
        }
        t = now_s();
    }
    cpu1 = server_cpu_s();
    double elapsed = t - t0;
    uint64_t ops = total / S;
    print_common(elapsed, ops);
    printf(" bytes=%llu mb_per_s=%.2f", (unsigned long long)total,
           elapsed > 0 ? (double)total / 1e6 / elapsed : 0.0);
    print_cpu(ops);
    printf("\n");
    return ops ? 0 : 1;
}

/* ------------------------------------------------------------ connect */

enum { CS_CONNECTING, CS_WAITING };

typedef struct {
    int fd;
    int state;
} cconn;

/* Starts one connect of loop slot i; returns false on failure (counted). */
static bool connect_slot(cconn *c, int i)
{
    int fd = start_connect();
    if (fd < 0) {
        c->fd = -1;
        return false;
    }
    c->fd = fd;
    c->state = CS_CONNECTING;
    ep_ctl(EPOLL_CTL_ADD, fd, EPOLLOUT, (uint64_t)i);
    return true;
}

static int run_connect(void)
{
    int C = opt.conns;
    cconn *cs = calloc((size_t)C, sizeof *cs);
    if (!cs)
        die("out of memory");
    uint64_t ops = 0, errors = 0;
    cpu0 = server_cpu_s();
    double t0 = now_s(), end = t0 + opt.seconds;
    for (int i = 0; i < C; i++)
        if (!connect_slot(&cs[i], i))
            errors++;
    struct epoll_event evs[MAX_EVENTS];
    double t = t0;
    while (t < end) {
        int ms = (int)((end - t) * 1000) + 1;
        int n = epoll_wait(ep, evs, MAX_EVENTS, ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u64;
            cconn *c = &cs[i];
            bool fail = false, done = false;
            if (c->state == CS_CONNECTING) {
                char one = '!';
                if (write(c->fd, &one, 1) == 1) {
                    c->state = CS_WAITING;
                    ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN, (uint64_t)i);
                } else if (errno != EAGAIN) {
                    fail = true;
                }
            } else {
                char b;
                ssize_t r = read(c->fd, &b, 1);
                if (r == 1)
                    done = true;
                else if (r == 0 || errno != EAGAIN)
                    fail = true;
            }
            if (done || fail) {
                close(c->fd);
                if (done)
                    ops++;
                else
                    errors++;
                if (!connect_slot(c, i))
                    errors++;
            }
        }
        /* Slots whose connect failed at once are retried here. */
        for (int i = 0; i < C; i++)
            if (cs[i].fd < 0 && !connect_slot(&cs[i], i))
                errors++;
        t = now_s();
    }
    cpu1 = server_cpu_s();
    double elapsed = t - t0;
    print_common(elapsed, ops);
    printf(" errors=%llu", (unsigned long long)errors);
    print_cpu(ops);
    printf("\n");
    return ops ? 0 : 1;
}

/* ------------------------------------------------------------ idle */

static int run_idle(void)
{
    int N = opt.conns;
    if (opt.pid <= 0)
        die("idle needs --pid");
    raise_nofile();
    int *fds = malloc((size_t)N * sizeof *fds);
    if (!fds)
        die("out of memory");
    long rss0 = server_rss_kb();
    cpu0 = server_cpu_s();
    double t0 = now_s();
    int started = 0, done = 0, active = 0;
    struct epoll_event evs[MAX_EVENTS];
    while (done < N) {
        while (active < IDLE_IN_PROGRESS && started < N) {
            int fd = start_connect();
            if (fd < 0)
                die("connection %d: %s (raise the descriptor limit?)", started,
                    strerror(-fd));
            fds[started] = fd;
            ep_ctl(EPOLL_CTL_ADD, fd, EPOLLOUT, (uint64_t)started);
            started++;
            active++;
        }
        int n = epoll_wait(ep, evs, MAX_EVENTS, 10000);
        if (n == 0)
            die("no progress for 10 s (%d of %d connections set up)", done, N);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u64;
            int fd = fds[i];
            if (evs[k].events & EPOLLOUT) {
                char one = '.';
                if (write(fd, &one, 1) != 1) {
                    if (errno == EAGAIN)
                        continue;
                    die("connection %d: %s", i, strerror(errno));
                }
                ep_ctl(EPOLL_CTL_MOD, fd, EPOLLIN, (uint64_t)i);
            } else {
                char b;
                ssize_t r = read(fd, &b, 1);
                if (r < 0 && errno == EAGAIN)
                    continue;
                if (r != 1)
                    die("connection %d: %s", i, r ? strerror(errno) : "closed by the server");
                ep_ctl(EPOLL_CTL_DEL, fd, 0, 0);
                active--;
                done++;
            }
        }
    }
    double setup = now_s() - t0;
    /* Let the server settle (lazily freed buffers, deferred work). */
    double settle = opt.seconds;
    struct timespec ts = {(time_t)settle, (long)((settle - (double)(time_t)settle) * 1e9)};
    nanosleep(&ts, NULL);
    long rss1 = server_rss_kb();
    cpu1 = server_cpu_s();
    print_common(setup, (uint64_t)N);
    printf(" rss_before_kb=%ld rss_after_kb=%ld bytes_per_conn=%.1f", rss0, rss1,
           (rss0 >= 0 && rss1 >= 0) ? (double)(rss1 - rss0) * 1024.0 / N : -1.0);
    print_cpu((uint64_t)N);
    printf("\n");
    fflush(stdout);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    return 0;
}

/* ------------------------------------------------------------ check */

static int run_check(void)
{
    size_t S = opt.size;
    char *msg = malloc(S), *buf = malloc(S);
    if (!msg || !buf)
        die("out of memory");
    for (size_t i = 0; i < S; i++)
        msg[i] = (char)('A' + (i * 7) % 53);
    int fd = connect_blocking();
    ep_ctl(EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLOUT, 0);
    size_t off = 0, got = 0;
    double end = now_s() + 5;
    while (got < S) {
        struct epoll_event ev;
        int n = epoll_wait(ep, &ev, 1, 100);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        if (now_s() > end)
            die("no echo within 5 s (%zu of %zu bytes back)", got, S);
        if (n <= 0)
            continue;
        if ((ev.events & EPOLLOUT) && off < S) {
            ssize_t w = write(fd, msg + off, S - off);
            if (w < 0 && errno != EAGAIN)
                die("write: %s", strerror(errno));
            if (w > 0)
                off += (size_t)w;
            if (off == S)
                ep_ctl(EPOLL_CTL_MOD, fd, EPOLLIN, 0);
        }
        if (ev.events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            ssize_t r = read(fd, buf + got, S - got);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r <= 0)
                die("read: %s", r ? strerror(errno) : "closed by the server");
            got += (size_t)r;
        }
    }
    if (memcmp(msg, buf, S) != 0)
        die("the echo differs from what was sent");
    close(fd);
    free(msg);
    free(buf);
    printf("mode=check port=%d size=%zu ok=1\n", opt.port, S);
    return 0;
}

static int run_freeport(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        die("freeport: %s", strerror(errno));
    printf("%d\n", ntohs(sa.sin_port));
    close(fd);
    return 0;
}

/* ------------------------------------------------------------ main */

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen pingpong|stream|connect|idle|check|freeport --port P\n"
            "               [--conns C] [--size S] [--seconds T] [--pid SERVER_PID]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    opt.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--port"))
            opt.port = atoi(v);
        else if (!strcmp(a, "--conns"))
            opt.conns = atoi(v);
        else if (!strcmp(a, "--size"))
            opt.size = (size_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--seconds"))
            opt.seconds = atof(v);
        else if (!strcmp(a, "--pid"))
            opt.pid = atol(v);
        else
            usage();
    }
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(opt.mode, "freeport"))
        return run_freeport();
    if (opt.port <= 0 || opt.port > 65535)
        usage();
    if (opt.size == 0)
        usage();
    raise_nofile();
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    bool idle = !strcmp(opt.mode, "idle");
    if (opt.conns <= 0)
        opt.conns = idle ? 10000 : 1;
    if (opt.seconds < 0)
        opt.seconds = idle ? 0.5 : 5;
    if (!strcmp(opt.mode, "pingpong"))
        return run_pingpong();
    if (!strcmp(opt.mode, "stream"))
        return run_stream();
    if (!strcmp(opt.mode, "connect")) {
        opt.size = 1;
        return run_connect();
    }
    if (idle) {
        opt.size = 1;
        return run_idle();
    }
    if (!strcmp(opt.mode, "check"))
        return run_check();
    usage();
    return 2;
}
