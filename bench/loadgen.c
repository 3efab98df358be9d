/*
 * loadgen: the load generator of libem's benchmark suite.
 *
 * Plain C on raw epoll (level-triggered), single-threaded (idle --targets
 * forks a helper process per target, see below), so that it is not built on
 * any library under test. It talks to echo servers on 127.0.0.1 and prints
 * one key=value line per server.
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
 *       server's VmRSS growth per connection and its CPU per connection set
 *       up. --seconds is the settling time before the second readings
 *       (default 0.5).
 *   loadgen check    --port P [--size S]
 *       One S-byte echo, verified byte for byte; exit status 0 on success.
 *   loadgen freeport
 *       Prints a TCP port of 127.0.0.1 that was free a moment ago.
 *
 * TLS (--tls, every mode but freeport): every connection is a TLS 1.3
 * connection, with TLS_AES_128_GCM_SHA256 and X25519 offered alone and the
 * server's certificate not verified (tls_client.c). Pingpong, stream, idle
 * and check do the handshake and echo one byte on each connection before
 * anything is timed or measured, so that the server has finished setting
 * it up. Connect's loop becomes: connect, full handshake, send 1 byte, read
 * the echo, close_notify, close: a TLS handshake per operation. With
 * --resume (connect only) each loop offers the session ticket that the
 * server sent on that loop's previous connection (TLS 1.3 PSK resumption;
 * each loop gets its first ticket before the CPU readings) and the line
 * says how many handshakes resumed (resumed=N). The idle mode frees its
 * side of each TLS connection once set up: only the server keeps state.
 *
 * Several servers at once, interleaved (pingpong, stream and connect):
 *
 *   loadgen MODE --targets PORT:PID[,PORT:PID...] [--slice L] [--conns C]
 *                [--size S] [--seconds T]
 *       Sets every target up first (pingpong and stream open their C
 *       connections to each, all in one epoll set), then runs rounds. In a
 *       round each target in turn gets one slice: for L seconds (default
 *       0.25) the load goes to it alone; then no new work is started for it
 *       and its work in flight is drained (every outstanding echo read, every
 *       started connect loop finished). Work completed in the drain counts,
 *       and so does the drain's time, in the target's elapsed time. Rounds go
 *       on until every target has had T seconds of slices; the target that
 *       goes first rotates from one round to the next. On a machine whose
 *       speed drifts over seconds, targets measured this way see the same
 *       machine, so the ratios between them hold still. One line per target,
 *       in the order given, each starting with "target=K port=P " (K counts
 *       from 1) followed by the fields of the single-target line. PID 0 (or
 *       none, "PORT") means no CPU reading. A target that fails (refused or
 *       broken connection, no echo, its server process gone, no operation
 *       completed) is dropped from the run and its line says "failed=1"; the
 *       others go on.
 *
 * The single-target form (--port) is the same run with one target and, unless
 * --slice says otherwise, one slice of T seconds and its drain.
 *
 * Several servers at once, interleaved (idle: CPU only, no memory):
 *
 *   loadgen idle --targets PORT:PID[,PORT:PID...] [--conns N] [--chunk K]
 *       Sets up N connections to every target, as the single-target idle run
 *       does, in chunks of K (default 1000), and reports only the server's
 *       CPU per connection set up. Rounds: in a round each target in turn
 *       gets one chunk, K more connections opened (at most 100 in progress),
 *       each sending one byte and reading the echo; the server's CPU is read
 *       right before the chunk and right after its last echo, each time once
 *       the server has gone idle (polled every ms, up to 200 ms: what it still
 *       does after the last echo counts in the chunk and does not run during
 *       the next target's). Rounds go on until every target has N
 *       connections; the target that goes first rotates from one round to
 *       the next. The connections stay open to the end of the run, so every
 *       server sets up its connections while holding the earlier ones, as
 *       in the single-target run. One process may not hold N connections to
 *       each of several servers under the descriptor limit, so each target's
 *       connections are held by a helper process of its own (forked at the
 *       start, same CPU affinity), which sets up a chunk when the main
 *       process asks and answers when it is done; only one of them works at
 *       a time. Output and failures as for the load modes: "target=K port=P "
 *       then the single-target fields without the memory ones, plus chunk=K;
 *       seconds is the time of the chunks alone; server_cpu_us_per_op is per
 *       connection set up. --seconds is not used.
 *
 * With a PID, the server's CPU time is read once after the set-up, before the
 * first slice, and once 100 ms after the last drain (so that what the server
 * does after the load, such as closing connections the loader closed,
 * counts). It is the sum over the server's threads of the first field of
 * /proc/PID/task/TID/schedstat (ns spent on a CPU), or utime + stime from
 * /proc/PID/stat (clock ticks, usually 10 ms) where schedstat is missing. It
 * is printed as server_cpu_us_per_op: µs of server CPU per round trip
 * (pingpong), per S-byte message echoed (stream), per connection (connect,
 * idle). A server waiting in epoll_wait while other targets are loaded costs
 * next to nothing. (Single-target idle reads it before the first connection
 * and after the settling time; idle --targets around every chunk.)
 *
 * Exit status: 0 on success, 1 on a failed run (a failed target, no
 * progress), 2 on bad usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
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
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tls_client.h"

#define STREAM_WINDOW (64 * 1024) /* bytes in flight per stream connection */
#define MAX_EVENTS 256
#define IDLE_IN_PROGRESS 100 /* idle mode: connections being set up at once */
#define MAX_TARGETS 64
#define DEFAULT_SLICE 0.25 /* seconds, with --targets */
#define SETTLE_S 0.1 /* after the last drain, before the CPU readings */
#define DRAIN_TIMEOUT_MS 5000 /* a drain without any event this long fails */
#define DEFAULT_CHUNK 1000 /* idle --targets: connections set up per turn */
#define QUIET_MAX_MS 200 /* idle --targets: longest wait for a server to go idle */
#define HELPER_TIMEOUT_MS 60000 /* idle --targets: a chunk without an answer fails */

static struct {
    const char *mode;
    int port;
    int conns;
    size_t size;
    double seconds;
    double slice; /* seconds; < 0: not given */
    long pid;
    const char *targets; /* --targets, as given */
    int chunk;           /* idle --targets: connections per turn */
    bool tls;            /* --tls */
    bool resume;         /* --resume: connect offers session tickets */
} opt = {.port = 0,
         .conns = -1,
         .size = 64,
         .seconds = -1,
         .slice = -1,
         .pid = 0,
         .chunk = DEFAULT_CHUNK};

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

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------ /proc */

/* CPU time of process pid from /proc/PID/stat (utime + stime, whole clock
 * ticks), in seconds; -1 when unknown. */
static double stat_cpu_s(long pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
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

/* CPU time of process pid in seconds; -1 when unknown (or pid <= 0). The sum
 * over its threads of the first field of /proc/PID/task/TID/schedstat, the
 * nanoseconds the thread has spent on a CPU; utime + stime of /proc/PID/stat
 * when the kernel has no schedstat. (Threads that have exited drop out of the
 * sum; the echo servers keep theirs.) */
static double server_cpu_s(long pid)
{
    if (pid <= 0)
        return -1;
    char path[320];
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    unsigned long long ns = 0;
    int threads = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%ld/task/%.32s/schedstat", pid, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* no schedstat, or the thread has just exited */
        unsigned long long v;
        if (fscanf(f, "%llu", &v) == 1) {
            ns += v;
            threads++;
        }
        fclose(f);
    }
    closedir(d);
    return threads ? (double)ns * 1e-9 : stat_cpu_s(pid);
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

/* A non-blocking TCP socket with TCP_NODELAY, connecting to 127.0.0.1:port.
 * Returns the fd (connection possibly in progress) or -errno. */
static int start_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* A connection to 127.0.0.1:port, connected (waits up to 5 s). Returns the fd,
 * or -1 with the reason in why. */
static int connect_blocking(int port, char *why, size_t whylen)
{
    int fd = start_connect(port);
    if (fd < 0) {
        snprintf(why, whylen, "connect to 127.0.0.1:%d: %s", port, strerror(-fd));
        return -1;
    }
    int e = 0;
    socklen_t len = sizeof e;
    struct epoll_event ev = {.events = EPOLLOUT};
    int tmp = epoll_create1(EPOLL_CLOEXEC);
    if (tmp < 0)
        die("epoll_create1: %s", strerror(errno));
    epoll_ctl(tmp, EPOLL_CTL_ADD, fd, &ev);
    int n = epoll_wait(tmp, &ev, 1, 5000);
    close(tmp);
    if (n != 1)
        snprintf(why, whylen, "connect to 127.0.0.1:%d timed out", port);
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0 || e != 0)
        snprintf(why, whylen, "connect to 127.0.0.1:%d: %s", port, strerror(e ? e : errno));
    else
        return fd;
    close(fd);
    return -1;
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

static void print_common(double elapsed, uint64_t ops)
{
    printf("mode=%s conns=%d size=%zu seconds=%.3f ops=%llu ops_per_s=%.1f", opt.mode,
           opt.conns, opt.size, elapsed, (unsigned long long)ops,
           elapsed > 0 ? (double)ops / elapsed : 0.0);
    if (opt.tls)
        printf(" tls=1");
}

static void print_cpu(double cpu0, double cpu1, uint64_t ops)
{
    if (cpu0 >= 0 && cpu1 >= 0) {
        double used = cpu1 - cpu0;
        printf(" server_cpu_s=%.3f server_cpu_us_per_op=%.3f", used,
               ops ? used * 1e6 / (double)ops : 0.0);
    } else {
        printf(" server_cpu_s=NA server_cpu_us_per_op=NA");
    }
}

/* ------------------------------------------------------------ latencies */

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

/* The p-quantile in µs of samples sorted in increasing order. */
static double percentile_us(const samples *s, double p)
{
    if (s->n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(s->n - 1) + 0.5);
    return (double)s->v[i] / 1000.0;
}

/* ------------------------------------------------------------ targets */

/* One connection of a target (pingpong, stream) or one connect loop
 * (connect). Each mode uses its own fields. */
typedef struct {
    int fd;    /* -1: none (connect: the loop is not running) */
    bool busy; /* work in flight that a drain waits for */
    /* pingpong */
    size_t got;       /* bytes of the echo read so far */
    uint64_t sent_at; /* when the message was written, ns */
    /* stream */
    uint64_t sent, received; /* bytes */
    size_t off;              /* bytes of the current message already written */
    bool want_out;           /* EPOLLOUT is watched */
    /* connect */
    bool connecting; /* waiting for the connect to finish, then for the echo */
    /* --tls */
    tlsc *tls;       /* NULL: plain, or no TLS connection yet */
    void *ticket;    /* --resume: the ticket this loop offers next */
    uint8_t stage;   /* connect and idle: TLS_HANDSHAKE, TLS_SEND or TLS_ECHO */
    uint32_t events; /* connect and idle: what epoll watches */
} conn;

enum { TLS_HANDSHAKE, TLS_SEND, TLS_ECHO };

/* read(2) and write(2) on connection c, through TLS when it has it. */
static inline ssize_t c_read(conn *c, void *b, size_t n)
{
    return c->tls ? tlsc_read(c->tls, b, n) : read(c->fd, b, n);
}

static inline ssize_t c_write(conn *c, const void *b, size_t n)
{
    return c->tls ? tlsc_write(c->tls, b, n) : write(c->fd, b, n);
}

/* Closes c; a TLS connection says close_notify first, as clients do. */
static void c_close(conn *c)
{
    if (c->tls) {
        tlsc_free(c->tls, false);
        c->tls = NULL;
    }
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
}

/* The text of the error of a failed c_read, c_write or TLS step: errno 0
 * is the server's close, EPROTO a TLS error. */
static const char *c_error(void)
{
    return errno == 0 ? "closed by the server" : errno == EPROTO ? tlsc_error() : strerror(errno);
}

/* Waits until fd is ready for events (POLLIN or POLLOUT), until the time
 * end (now_s()); false when it is not by then. */
static bool wait_fd(int fd, short events, double end)
{
    struct pollfd p = {.fd = fd, .events = events};
    int n;
    do {
        int ms = (int)((end - now_s()) * 1000);
        if (ms <= 0)
            return false;
        n = poll(&p, 1, ms);
    } while (n < 0 && errno == EINTR);
    return n > 0;
}

/* The TLS handshake on c, blocking until the time end; false with errno
 * as c_error reads it, or ETIMEDOUT. */
static bool tls_handshake_blocking(conn *c, double end)
{
    int st;
    while ((st = tlsc_handshake(c->tls)) != TLSC_DONE) {
        if (st == TLSC_ERROR)
            return false;
        if (!wait_fd(c->fd, st == TLSC_WANT_READ ? POLLIN : POLLOUT, end)) {
            errno = ETIMEDOUT;
            return false;
        }
    }
    return true;
}

/* One byte echoed over c's TLS connection, blocking until the time end;
 * false as tls_handshake_blocking. */
static bool tls_echo_blocking(conn *c, double end)
{
    char b = '.';
    for (int step = 0; step < 2;) { /* 0: write the byte, 1: read it back */
        ssize_t r = step ? tlsc_read(c->tls, &b, 1) : tlsc_write(c->tls, &b, 1);
        if (r == 1) {
            step++;
            continue;
        }
        if (r == 0)
            errno = 0;
        if (r == 0 || errno != EAGAIN)
            return false;
        if (!wait_fd(c->fd, step ? POLLIN : POLLOUT, end)) {
            errno = ETIMEDOUT;
            return false;
        }
    }
    return true;
}

/* The TLS handshake on c's connected socket, then one byte echoed (so that
 * the server has done its part of the set-up, session tickets included),
 * blocking, at most 5 s. slot as for tlsc_new. False with the reason in
 * why; c->tls, if made, stays for c_close. */
static bool tls_open_blocking(conn *c, void **slot, int port, char *why, size_t whylen)
{
    double end = now_s() + 5;
    errno = EPROTO;
    c->tls = tlsc_new(c->fd, slot);
    if (c->tls && tls_handshake_blocking(c, end) && tls_echo_blocking(c, end))
        return true;
    snprintf(why, whylen, "TLS set-up with 127.0.0.1:%d: %s", port,
             errno == ETIMEDOUT ? "timed out" : c_error());
    return false;
}

/* Watches events on c (epoll data key) unless it already does. */
static void c_watch(conn *c, uint32_t events, uint64_t key)
{
    if (c->events != events) {
        c->events = events;
        ep_ctl(EPOLL_CTL_MOD, c->fd, events, key);
    }
}

/* One step of c's TLS loop (connect, idle): the handshake, one byte
 * written, its echo read. 1 when the echo is back, 0 while it waits (the
 * socket watched for what it waits for), -1 on failure (errno as c_error
 * reads it). */
static int tls_step(conn *c, uint64_t key)
{
    if (c->stage == TLS_HANDSHAKE) {
        int st = tlsc_handshake(c->tls);
        if (st == TLSC_ERROR)
            return -1;
        if (st != TLSC_DONE) {
            c_watch(c, st == TLSC_WANT_READ ? EPOLLIN : EPOLLOUT, key);
            return 0;
        }
        c->stage = TLS_SEND;
    }
    char b = '!';
    ssize_t r;
    if (c->stage == TLS_SEND) {
        if ((r = tlsc_write(c->tls, &b, 1)) != 1) {
            if (r < 0 && errno == EAGAIN) {
                c_watch(c, EPOLLOUT, key);
                return 0;
            }
            if (r == 0)
                errno = 0;
            return -1;
        }
        c->stage = TLS_ECHO;
        c_watch(c, EPOLLIN, key); /* the echo cannot be back yet */
        return 0;
    }
    if ((r = tlsc_read(c->tls, &b, 1)) == 1)
        return 1;
    if (r < 0 && errno == EAGAIN) {
        c_watch(c, EPOLLIN, key);
        return 0;
    }
    if (r == 0)
        errno = 0;
    return -1;
}

/* One server under load and what has been measured of it. */
typedef struct {
    int num;           /* position in --targets, from 1 */
    int port;          /* on 127.0.0.1 */
    long pid;          /* 0: no CPU reading */
    conn *conns;       /* opt.conns of them */
    int busy;          /* connections with work in flight */
    bool active;       /* in its slice: new work may start */
    bool failed;       /* dropped from the run, its connections closed */
    double sliced;     /* seconds of slices had */
    double elapsed;    /* seconds of slices and drains */
    uint64_t ops, errors, bytes;
    uint64_t resumed;  /* connect --tls: handshakes that resumed a session */
    samples lat;       /* pingpong: round-trip times, ns */
    double cpu0, cpu1; /* server CPU seconds before and after; -1 unknown */
    /* idle with --targets */
    pid_t helper;    /* the process holding the connections; 0: none */
    int ctl;         /* its end of the socket to it (when helper > 0) */
    double cpu_used; /* server CPU seconds over the chunks; -1 unknown */
} target;

static target targets[MAX_TARGETS];
static int ntargets;
static void stop_helper(target *t, bool now);
static bool multi;      /* --targets: a line per target, a failure ends only its target */
static char *msg, *buf; /* the message written; the read buffer */
static size_t bufsize;

/* The epoll data of connection i of target t. */
static uint64_t ev_key(const target *t, int i)
{
    return ((uint64_t)(t - targets) << 32) | (uint32_t)i;
}

static void set_busy(target *t, conn *c, bool busy)
{
    if (c->busy != busy) {
        c->busy = busy;
        t->busy += busy ? 1 : -1;
    }
}

/* Target t failed. Alone it ends the run, as die() does; with --targets it
 * is reported, its connections are closed and it gets no more slices. */
static void fail(target *t, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (!multi)
        die("%s", why);
    fprintf(stderr, "loadgen: target %d (port %d): %s\n", t->num, t->port, why);
    if (t->helper > 0)
        stop_helper(t, true);
    for (int i = 0; t->conns && i < opt.conns; i++) {
        conn *c = &t->conns[i];
        if (c->fd >= 0)
            c_close(c);
        c->busy = false;
    }
    t->failed = true;
    t->active = false;
    t->busy = 0;
}

/* Opens the C connections of t, each registered for EPOLLIN; with --tls,
 * each has done its handshake and echoed a byte. */
static void open_conns(target *t)
{
    char why[256];
    for (int i = 0; i < opt.conns; i++) {
        conn *c = &t->conns[i];
        c->fd = connect_blocking(t->port, why, sizeof why);
        if (c->fd < 0 || (opt.tls && !tls_open_blocking(c, NULL, t->port, why, sizeof why))) {
            fail(t, "%s", why);
            return;
        }
        ep_ctl(EPOLL_CTL_ADD, c->fd, EPOLLIN, ev_key(t, i));
    }
}

/* What a load mode does, in steps the slice runner calls. */
typedef struct {
    /* Before the first CPU reading: connections (or t fails). */
    void (*setup)(target *t);
    /* A slice of t begins (t->active is set): start work everywhere. */
    void (*start)(target *t);
    /* Connection i of t is ready with the epoll events ev. Starts new work
     * only while t->active; clears the connection's busy flag when its work
     * in flight is done. */
    void (*event)(target *t, int i, uint32_t ev);
    /* The slice of t is over (t->active is clear), before the drain; NULL
     * when nothing is to be done. */
    void (*stop)(target *t);
    /* After each batch of events during the slice of t; NULL when none. */
    void (*tick)(target *t);
    /* The mode's own fields of the output line. */
    void (*print)(target *t);
} mode_ops;

/* ------------------------------------------------------------ pingpong */

/* Connection i of t writes its message, at time tn (ns). */
static void pp_send(target *t, int i, uint64_t tn)
{
    conn *c = &t->conns[i];
    c->got = 0;
    c->sent_at = tn;
    if (c_write(c, msg, opt.size) != (ssize_t)opt.size) {
        fail(t, "write: %s", c_error());
        return;
    }
    set_busy(t, c, true);
}

static void pp_start(target *t)
{
    for (int i = 0; i < opt.conns && !t->failed; i++)
        pp_send(t, i, now_ns());
}

static void pp_event(target *t, int i, uint32_t ev)
{
    (void)ev;
    conn *c = &t->conns[i];
    /* Never more than the echo still due: TLS keeps what a record holds
     * beyond what is asked for, and epoll would not say it is there. */
    ssize_t r = c_read(c, buf, opt.size - c->got);
    if (r <= 0) {
        if (r < 0 && errno == EAGAIN)
            return;
        if (r == 0)
            errno = 0;
        fail(t, "connection %d: %s", i, c_error());
        return;
    }
    c->got += (size_t)r;
    if (c->got < opt.size)
        return;
    uint64_t tn = now_ns();
    sample_add(&t->lat, tn - c->sent_at);
    t->ops++;
    set_busy(t, c, false);
    if (t->active)
        pp_send(t, i, tn);
}

static void pp_print(target *t)
{
    qsort(t->lat.v, t->lat.n, sizeof *t->lat.v, cmp_u32);
    printf(" p50_us=%.1f p99_us=%.1f", percentile_us(&t->lat, 0.50),
           percentile_us(&t->lat, 0.99));
}

static const mode_ops pingpong_ops = {
    .setup = open_conns, .start = pp_start, .event = pp_event, .print = pp_print};

/* ------------------------------------------------------------ stream */

/* Writes on connection i of t, while t is active, as much as the window
 * allows; watches EPOLLOUT when the kernel refused some. */
static void stream_fill(target *t, int i)
{
    conn *c = &t->conns[i];
    size_t S = opt.size;
    bool blocked = false;
    if (t->active) {
        while (c->sent - c->received + (S - c->off) <= STREAM_WINDOW) {
            ssize_t w = c_write(c, msg + c->off, S - c->off);
            if (w < 0) {
                if (errno != EAGAIN) {
                    fail(t, "write: %s", c_error());
                    return;
                }
                break;
            }
            c->sent += (uint64_t)w;
            c->off += (size_t)w;
            if (c->off < S)
                break; /* the kernel took part of it: wait for EPOLLOUT */
            c->off = 0;
        }
        blocked = c->off != 0 ||
                  (c->sent - c->received + S <= STREAM_WINDOW); /* EAGAIN on a fresh one */
    }
    if (blocked != c->want_out) {
        c->want_out = blocked;
        ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN | (blocked ? EPOLLOUT : 0), ev_key(t, i));
    }
    set_busy(t, c, c->sent != c->received);
}

/* Slice start: every connection fills its window. Slice end: every
 * connection stops watching EPOLLOUT, the partly written message stays so
 * until the next slice and the drain waits only for what was written. */
static void stream_fill_all(target *t)
{
    for (int i = 0; i < opt.conns && !t->failed; i++)
        stream_fill(t, i);
}

static void st_event(target *t, int i, uint32_t ev)
{
    conn *c = &t->conns[i];
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        /* bufsize is more than a TLS record holds: nothing stays behind. */
        ssize_t r = c_read(c, buf, bufsize);
        if (r <= 0) {
            if (r < 0 && errno == EAGAIN)
                return;
            if (r == 0)
                errno = 0;
            fail(t, "connection %d: %s", i, c_error());
            return;
        }
        c->received += (uint64_t)r;
        t->bytes += (uint64_t)r;
        t->ops = t->bytes / opt.size;
    }
    stream_fill(t, i);
}

static void st_print(target *t)
{
    printf(" bytes=%llu mb_per_s=%.2f", (unsigned long long)t->bytes,
           t->elapsed > 0 ? (double)t->bytes / 1e6 / t->elapsed : 0.0);
}

static const mode_ops stream_ops = {.setup = open_conns,
                                    .start = stream_fill_all,
                                    .event = st_event,
                                    .stop = stream_fill_all,
                                    .print = st_print};

/* ------------------------------------------------------------ connect */

/* Nothing to set up (every loop starts with its own connect), but with
 * --resume: each loop's first ticket, from a connection of its own. */
static void cn_setup(target *t)
{
    char why[256];
    for (int i = 0; opt.resume && i < opt.conns; i++) {
        conn *c = &t->conns[i];
        c->fd = connect_blocking(t->port, why, sizeof why);
        if (c->fd < 0 || !tls_open_blocking(c, &c->ticket, t->port, why, sizeof why)) {
            fail(t, "%s", why);
            return;
        }
        c_close(c);
    }
}

/* Starts the loop of slot i of t with a connect; a connect that fails at
 * once is an error and the slot stays empty (cn_tick tries it again). */
static void cn_open(target *t, int i)
{
    conn *c = &t->conns[i];
    int fd = start_connect(t->port);
    if (fd < 0) {
        t->errors++;
        return;
    }
    if (opt.tls && !(c->tls = tlsc_new(fd, opt.resume ? &c->ticket : NULL))) {
        close(fd);
        t->errors++;
        return;
    }
    c->fd = fd;
    c->connecting = true;
    c->stage = TLS_HANDSHAKE;
    c->events = EPOLLOUT;
    ep_ctl(EPOLL_CTL_ADD, fd, EPOLLOUT, ev_key(t, i));
    set_busy(t, c, true);
}

static void cn_start(target *t)
{
    for (int i = 0; i < opt.conns; i++)
        cn_open(t, i);
}

/* The loop of slot i of t has ended (done: with its echo): the next one
 * starts while t is active. */
static void cn_end(target *t, int i, bool done)
{
    conn *c = &t->conns[i];
    c_close(c);
    set_busy(t, c, false);
    if (done)
        t->ops++;
    else
        t->errors++;
    if (t->active)
        cn_open(t, i);
}

static void cn_event(target *t, int i, uint32_t ev)
{
    (void)ev;
    conn *c = &t->conns[i];
    bool bad = false, done = false;
    if (c->connecting) {
        char one = '!';
        if (write(c->fd, &one, 1) == 1) {
            c->connecting = false;
            ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN, ev_key(t, i));
        } else if (errno != EAGAIN) {
            bad = true;
        }
    } else {
        char b;
        ssize_t r = read(c->fd, &b, 1);
        if (r == 1)
            done = true;
        else if (r == 0 || errno != EAGAIN)
            bad = true;
    }
    if (done || bad)
        cn_end(t, i, done);
}

/* connect --tls: the loop's next step on any event. */
static void cn_event_tls(target *t, int i, uint32_t ev)
{
    (void)ev;
    conn *c = &t->conns[i];
    int st = tls_step(c, ev_key(t, i));
    if (st > 0 && tlsc_resumed(c->tls))
        t->resumed++;
    if (st != 0)
        cn_end(t, i, st > 0);
}

/* Slots whose connect failed at once are tried again. */
static void cn_tick(target *t)
{
    for (int i = 0; i < opt.conns; i++)
        if (t->conns[i].fd < 0)
            cn_open(t, i);
}

static void cn_print(target *t)
{
    printf(" errors=%llu", (unsigned long long)t->errors);
    if (opt.tls)
        printf(" resumed=%llu", (unsigned long long)t->resumed);
}

static const mode_ops connect_ops = {.setup = cn_setup,
                                     .start = cn_start,
                                     .event = cn_event,
                                     .tick = cn_tick,
                                     .print = cn_print};

static const mode_ops connect_tls_ops = {.setup = cn_setup,
                                         .start = cn_start,
                                         .event = cn_event_tls,
                                         .tick = cn_tick,
                                         .print = cn_print};

/* ------------------------------------------------------------ slices */

static const mode_ops *mode;

/* Runs the events of every target's connections (only t's are expected to
 * have any) until the time `until` (now_s()), or, with drain, until t has no
 * work in flight. Returns early when t fails. */
static void pump(target *t, double until, bool drain)
{
    struct epoll_event evs[MAX_EVENTS];
    double tn = now_s();
    while (!t->failed && (drain ? t->busy > 0 : tn < until)) {
        int ms = drain ? DRAIN_TIMEOUT_MS : (int)((until - tn) * 1000) + 1;
        int n = epoll_wait(ep, evs, MAX_EVENTS, ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        if (n == 0 && drain) {
            fail(t, "no echo for %d ms after the slice (%d connections waiting)",
                 DRAIN_TIMEOUT_MS, t->busy);
            break;
        }
        for (int k = 0; k < n; k++) {
            target *x = &targets[evs[k].data.u64 >> 32];
            if (!x->failed)
                mode->event(x, (int)(uint32_t)evs[k].data.u64, evs[k].events);
        }
        if (!drain && mode->tick && !t->failed)
            mode->tick(t);
        tn = now_s();
    }
}

/* One slice of len seconds for t, then its drain. */
static void run_slice(target *t, double len)
{
    double t0 = now_s();
    t->active = true;
    mode->start(t);
    pump(t, t0 + len, false);
    t->active = false;
    if (!t->failed && mode->stop)
        mode->stop(t);
    pump(t, 0, true);
    t->elapsed += now_s() - t0;
    t->sliced += len;
}

/* pingpong, stream, connect: every target set up, then rounds of slices
 * until each target has had opt.seconds, then one line per target. */
static int run_load(void)
{
    size_t S = opt.size;
    bufsize = S > 256 * 1024 ? S : 256 * 1024;
    msg = malloc(S);
    buf = malloc(bufsize);
    if (!msg || !buf)
        die("out of memory");
    for (size_t i = 0; i < S; i++)
        msg[i] = (char)('a' + i % 26);
    for (int k = 0; k < ntargets; k++) {
        target *t = &targets[k];
        t->conns = calloc((size_t)opt.conns, sizeof *t->conns);
        if (!t->conns)
            die("out of memory");
        for (int i = 0; i < opt.conns; i++)
            t->conns[i].fd = -1;
        mode->setup(t);
    }
    for (int k = 0; k < ntargets; k++)
        targets[k].cpu0 = server_cpu_s(targets[k].pid);
    for (int round = 0;; round++) {
        bool any = false;
        for (int k = 0; k < ntargets; k++) {
            target *t = &targets[(round + k) % ntargets];
            double left = opt.seconds - t->sliced;
            if (t->failed || left < 1e-6)
                continue;
            run_slice(t, left < opt.slice ? left : opt.slice);
            any = true;
        }
        if (!any)
            break;
    }
    sleep_s(SETTLE_S);
    for (int k = 0; k < ntargets; k++) {
        target *t = &targets[k];
        t->cpu1 = server_cpu_s(t->pid);
        /* A server that has gone shows, in connect mode, only as errors. */
        if (multi && t->pid > 0 && !t->failed && t->cpu1 < 0)
            fail(t, "server process %ld has gone", t->pid);
        if (multi && !t->failed && t->ops == 0)
            fail(t, "no operation completed (%llu errors)", (unsigned long long)t->errors);
    }
    int status = 0;
    for (int k = 0; k < ntargets; k++) {
        target *t = &targets[k];
        if (multi)
            printf("target=%d port=%d ", t->num, t->port);
        if (t->failed) {
            printf("mode=%s failed=1\n", opt.mode);
            status = 1;
            continue;
        }
        print_common(t->elapsed, t->ops);
        mode->print(t);
        print_cpu(t->cpu0, t->cpu1, t->ops);
        printf("\n");
        if (t->ops == 0)
            status = 1;
    }
    return status;
}

/* ------------------------------------------------------------ idle */

/* One step of idle connection i (socket fd) on the epoll events ev: one
 * byte written, then its echo read. 1 when the echo is back, 0 while it
 * waits, -1 on failure with the reason in why. */
static int idle_step(int fd, int i, uint32_t ev, char *why, size_t whylen)
{
    if (ev & EPOLLOUT) {
        char one = '.';
        if (write(fd, &one, 1) != 1) {
            if (errno == EAGAIN)
                return 0;
            snprintf(why, whylen, "connection %d: %s", i, strerror(errno));
            return -1;
        }
        ep_ctl(EPOLL_CTL_MOD, fd, EPOLLIN, (uint64_t)i);
        return 0;
    }
    char b;
    ssize_t r = read(fd, &b, 1);
    if (r < 0 && errno == EAGAIN)
        return 0;
    if (r != 1) {
        snprintf(why, whylen, "connection %d: %s", i, r ? strerror(errno) : "closed by the server");
        return -1;
    }
    return 1;
}

/* idle_step over TLS (c: the connection's TLS state): the handshake comes
 * first, and the client's side of the connection is freed once set up. */
static int idle_step_tls(conn *c, int i, char *why, size_t whylen)
{
    int st = tls_step(c, (uint64_t)i);
    if (st < 0)
        snprintf(why, whylen, "connection %d: %s", i, c_error());
    if (st > 0) {
        tlsc_free(c->tls, true);
        c->tls = NULL;
    }
    return st;
}

/* Sets up the connections fds[from] to fds[to - 1] to 127.0.0.1:port, at
 * most IDLE_IN_PROGRESS at a time: each connects, writes one byte and reads
 * its echo (so the server has accepted it and set it up), then stays open
 * and out of the epoll set. With cs (--tls), cs[i - from] is connection i's
 * TLS state. Returns true, or false with the reason in why (connections set
 * up so far stay open). */
static bool idle_open_loop(int port, int *fds, conn *cs, int from, int to, char *why,
                           size_t whylen)
{
    int started = from, done = from, active = 0;
    struct epoll_event evs[MAX_EVENTS];
    while (done < to) {
        while (active < IDLE_IN_PROGRESS && started < to) {
            int fd = start_connect(port);
            if (fd < 0) {
                snprintf(why, whylen, "connection %d: %s (raise the descriptor limit?)",
                         started, strerror(-fd));
                return false;
            }
            fds[started] = fd;
            if (cs) {
                conn *c = &cs[started - from];
                *c = (conn){.fd = fd, .stage = TLS_HANDSHAKE, .events = EPOLLOUT};
                if (!(c->tls = tlsc_new(fd, NULL))) {
                    snprintf(why, whylen, "connection %d: TLS: %s", started, tlsc_error());
                    return false;
                }
            }
            ep_ctl(EPOLL_CTL_ADD, fd, EPOLLOUT, (uint64_t)started);
            started++;
            active++;
        }
        int n = epoll_wait(ep, evs, MAX_EVENTS, 10000);
        if (n == 0) {
            snprintf(why, whylen, "no progress for 10 s (%d of %d connections set up)", done,
                     to);
            return false;
        }
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u64;
            int st = cs ? idle_step_tls(&cs[i - from], i, why, whylen)
                        : idle_step(fds[i], i, evs[k].events, why, whylen);
            if (st < 0)
                return false;
            if (st > 0) {
                ep_ctl(EPOLL_CTL_DEL, fds[i], 0, 0);
                active--;
                done++;
            }
        }
    }
    return true;
}

/* idle_open_loop, with the TLS state it needs under --tls. */
static bool idle_open(int port, int *fds, int from, int to, char *why, size_t whylen)
{
    conn *cs = NULL;
    if (opt.tls && !(cs = calloc((size_t)(to - from), sizeof *cs))) {
        snprintf(why, whylen, "out of memory");
        return false;
    }
    bool ok = idle_open_loop(port, fds, cs, from, to, why, whylen);
    for (int i = 0; cs && i < to - from; i++)
        tlsc_free(cs[i].tls, true);
    free(cs);
    return ok;
}

static int run_idle(void)
{
    int N = opt.conns;
    if (opt.pid <= 0)
        die("idle needs --pid");
    int *fds = malloc((size_t)N * sizeof *fds);
    if (!fds)
        die("out of memory");
    long rss0 = server_rss_kb();
    double cpu0 = server_cpu_s(opt.pid);
    double t0 = now_s();
    char why[256];
    if (!idle_open(opt.port, fds, 0, N, why, sizeof why))
        die("%s", why);
    double setup = now_s() - t0;
    /* Let the server settle (lazily freed buffers, deferred work). */
    sleep_s(opt.seconds);
    long rss1 = server_rss_kb();
    double cpu1 = server_cpu_s(opt.pid);
    print_common(setup, (uint64_t)N);
    printf(" rss_before_kb=%ld rss_after_kb=%ld bytes_per_conn=%.1f", rss0, rss1,
           (rss0 >= 0 && rss1 >= 0) ? (double)(rss1 - rss0) * 1024.0 / N : -1.0);
    print_cpu(cpu0, cpu1, (uint64_t)N);
    printf("\n");
    fflush(stdout);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    free(fds);
    return 0;
}

/* ------------------------------------------------------------ idle, interleaved */

/* With --targets, idle measures only the server CPU per connection set up,
 * target by target in chunks. Every target's connections stay open to the
 * end, as in the single-target run, and one process may not hold N of them
 * for each of several targets under the descriptor limit: a helper process
 * per target (forked, same CPU affinity) holds them. The parent tells a
 * helper over a socket how many connections to add; the helper sets them up
 * and answers with an empty message, or with the reason it failed. */

/* The helper of a target on port: serves chunks until the parent closes the
 * socket ctl (or sends 0), then exits, which closes its connections. */
static void idle_helper(int ctl, int port)
{
    close(ep); /* shared with the parent: the helper needs a set of its own */
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    int N = opt.conns, have = 0;
    int *fds = malloc((size_t)N * sizeof *fds);
    for (;;) {
        int32_t want;
        if (read(ctl, &want, sizeof want) != (ssize_t)sizeof want || want <= 0)
            break;
        char why[256] = "";
        if (!fds)
            snprintf(why, sizeof why, "out of memory");
        else if (want > N - have)
            snprintf(why, sizeof why, "asked for more than %d connections", N);
        else if (idle_open(port, fds, have, have + want, why, sizeof why))
            have += want;
        if (write(ctl, why, strlen(why) + 1) < 0 || why[0])
            break;
    }
    _exit(0);
}

/* Starts the helper of t. */
static void start_helper(target *t)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t p = fork();
    if (p < 0)
        die("fork: %s", strerror(errno));
    if (p == 0) {
        /* The parent's ends of the other helpers' sockets: a helper must
         * see the end of file when the parent goes, whatever the others do. */
        for (int k = 0; k < ntargets; k++)
            if (targets[k].helper > 0)
                close(targets[k].ctl);
        close(sv[0]);
        /* Not the parent's output: a caller reading it to the end must
         * not wait for helpers still finishing a chunk. */
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0) {
            dup2(null, STDOUT_FILENO);
            close(null);
        }
        idle_helper(sv[1], t->port);
    }
    close(sv[1]);
    t->helper = p;
    t->ctl = sv[0];
}

/* Stops the helper of t: closes the socket and waits for it to exit (it
 * does as soon as it reads the end of file), or kills it at once with now. */
static void stop_helper(target *t, bool now)
{
    close(t->ctl);
    if (now)
        kill(t->helper, SIGKILL);
    waitpid(t->helper, NULL, 0);
    t->helper = 0;
}

/* Has the helper of t set up want more connections; false with the reason
 * in why when it did not. */
static bool helper_chunk(target *t, int want, char *why, size_t whylen)
{
    int32_t w = want;
    if (write(t->ctl, &w, sizeof w) != (ssize_t)sizeof w) {
        snprintf(why, whylen, "helper process: %s", strerror(errno));
        return false;
    }
    struct pollfd p = {.fd = t->ctl, .events = POLLIN};
    int n;
    do
        n = poll(&p, 1, HELPER_TIMEOUT_MS);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        snprintf(why, whylen, "no answer from the helper process in %d s",
                 HELPER_TIMEOUT_MS / 1000);
        return false;
    }
    ssize_t r = read(t->ctl, why, whylen - 1);
    if (r <= 0) {
        snprintf(why, whylen, "the helper process has ended");
        return false;
    }
    why[r] = 0;
    return why[0] == 0;
}

/* Whether a thread of process pid is running or waiting for a CPU (state R
 * in /proc/PID/task/TID/stat). */
static bool server_running(long pid)
{
    char path[320], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return false;
    bool running = false;
    struct dirent *e;
    while (!running && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%ld/task/%.32s/stat", pid, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')'); /* the command name may hold spaces */
        running = p && p[1] == ' ' && p[2] == 'R';
    }
    closedir(d);
    return running;
}

/* The CPU time of server pid once it has stopped running: every millisecond,
 * until no thread of it is running and its CPU time has not moved since the
 * previous reading, at most QUIET_MAX_MS. (The schedstat time of a running
 * thread lags, by up to a clock tick, until it sleeps.) So what a server
 * still does after the last echo of a chunk counts in that chunk, and does
 * not run during the next target's. -1 when unknown. */
static double quiet_cpu_s(long pid)
{
    double prev = server_cpu_s(pid);
    for (int i = 0; i < QUIET_MAX_MS && prev >= 0; i++) {
        sleep_s(0.001);
        double v = server_cpu_s(pid);
        if (v == prev && !server_running(pid))
            break;
        prev = v;
    }
    return prev;
}

/* idle --targets: rounds in which every target in turn gets one chunk of
 * connections set up, the server's CPU read before and after it, until every
 * target has N; then one line per target. */
static int run_idle_targets(void)
{
    int N = opt.conns;
    for (int k = 0; k < ntargets; k++)
        start_helper(&targets[k]);
    for (int round = 0;; round++) {
        bool any = false;
        for (int k = 0; k < ntargets; k++) {
            target *t = &targets[(round + k) % ntargets];
            if (t->failed || t->ops >= (uint64_t)N)
                continue;
            int want = N - (int)t->ops < opt.chunk ? N - (int)t->ops : opt.chunk;
            char why[256];
            double cpu0 = quiet_cpu_s(t->pid);
            double t0 = now_s();
            bool ok = helper_chunk(t, want, why, sizeof why);
            t->elapsed += now_s() - t0;
            double cpu1 = quiet_cpu_s(t->pid);
            any = true;
            if (!ok) {
                fail(t, "%s", why);
                continue;
            }
            if (t->pid > 0 && cpu1 < 0) {
                fail(t, "server process %ld has gone", t->pid);
                continue;
            }
            if (cpu0 < 0 || cpu1 < 0)
                t->cpu_used = -1;
            else if (t->cpu_used >= 0)
                t->cpu_used += cpu1 - cpu0;
            t->ops += (uint64_t)want;
        }
        if (!any)
            break;
    }
    int status = 0;
    for (int k = 0; k < ntargets; k++) {
        target *t = &targets[k];
        printf("target=%d port=%d ", t->num, t->port);
        if (t->failed) {
            printf("mode=%s failed=1\n", opt.mode);
            status = 1;
            continue;
        }
        print_common(t->elapsed, t->ops);
        printf(" chunk=%d", opt.chunk);
        print_cpu(0, t->cpu_used, t->ops);
        printf("\n");
    }
    fflush(stdout);
    for (int k = 0; k < ntargets; k++)
        if (targets[k].helper > 0)
            stop_helper(&targets[k], false);
    return status;
}

/* ------------------------------------------------------------ check */

static int run_check(void)
{
    size_t S = opt.size;
    char *m = malloc(S), *b = malloc(S);
    if (!m || !b)
        die("out of memory");
    for (size_t i = 0; i < S; i++)
        m[i] = (char)('A' + (i * 7) % 53);
    char why[256];
    conn c = {.fd = connect_blocking(opt.port, why, sizeof why)};
    if (c.fd < 0 || (opt.tls && !tls_open_blocking(&c, NULL, opt.port, why, sizeof why)))
        die("%s", why);
    int fd = c.fd;
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
            ssize_t w = c_write(&c, m + off, S - off);
            if (w < 0 && errno != EAGAIN)
                die("write: %s", c_error());
            if (w > 0)
                off += (size_t)w;
            if (off == S)
                ep_ctl(EPOLL_CTL_MOD, fd, EPOLLIN, 0);
        }
        if (ev.events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            ssize_t r = c_read(&c, b + got, S - got);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r == 0)
                errno = 0;
            if (r <= 0)
                die("read: %s", c_error());
            got += (size_t)r;
        }
    }
    if (memcmp(m, b, S) != 0)
        die("the echo differs from what was sent");
    c_close(&c);
    free(m);
    free(b);
    printf("mode=check port=%d size=%zu%s ok=1\n", opt.port, S, opt.tls ? " tls=1" : "");
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
            "               [--conns C] [--size S] [--seconds T] [--pid SERVER_PID]\n"
            "       loadgen pingpong|stream|connect --targets PORT:PID[,PORT:PID...]\n"
            "               [--slice L] [--conns C] [--size S] [--seconds T]\n"
            "       loadgen idle --targets PORT:PID[,PORT:PID...] [--conns N] [--chunk K]\n"
            "       --tls (any mode but freeport): over TLS 1.3; --resume (connect --tls):\n"
            "       resumed handshakes\n");
    exit(2);
}

/* A whole decimal number in [lo, hi] from s, which it must fill up to end
 * (or to its terminating 0 when end is NULL); -1 when it is not one. */
static long parse_num(const char *s, const char *end, long lo, long hi)
{
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (e == s || errno || v < lo || v > hi || (end ? e != end : *e != 0))
        return -1;
    return v;
}

/* Parses --targets PORT[:PID],... into targets[]; false when malformed. */
static bool parse_targets(const char *list)
{
    const char *p = list;
    while (*p) {
        if (ntargets == MAX_TARGETS)
            return false;
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *colon = memchr(p, ':', (size_t)(end - p));
        target *t = &targets[ntargets];
        t->num = ntargets + 1;
        t->port = (int)parse_num(p, colon ? colon : end, 1, 65535);
        t->pid = colon ? parse_num(colon + 1, end, 0, 0x7fffffffL) : 0;
        if (t->port < 0 || t->pid < 0)
            return false;
        ntargets++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return ntargets > 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    opt.mode = argv[1];
    bool chunk_given = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--tls") || !strcmp(a, "--resume")) {
            *(a[2] == 't' ? &opt.tls : &opt.resume) = true;
            continue;
        }
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
        else if (!strcmp(a, "--targets"))
            opt.targets = v;
        else if (!strcmp(a, "--slice") && atof(v) > 0)
            opt.slice = atof(v);
        else if (!strcmp(a, "--chunk") && atoi(v) > 0)
            opt.chunk = atoi(v), chunk_given = true;
        else
            usage();
    }
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(opt.mode, "freeport"))
        return run_freeport();
    bool idle = !strcmp(opt.mode, "idle");
    if (!strcmp(opt.mode, "pingpong"))
        mode = &pingpong_ops;
    else if (!strcmp(opt.mode, "stream"))
        mode = &stream_ops;
    else if (!strcmp(opt.mode, "connect"))
        mode = opt.tls ? &connect_tls_ops : &connect_ops;
    else if (!idle && strcmp(opt.mode, "check"))
        usage();
    if (chunk_given && !(idle && opt.targets))
        usage(); /* chunks are idle --targets' only */
    if (opt.resume && mode != &connect_tls_ops)
        usage(); /* resumption is of handshakes, which only connect repeats */
    char why[256];
    if (opt.tls && !tlsc_init(opt.resume, why, sizeof why))
        die("%s", why);
    if (opt.targets) {
        /* Several targets: load modes and idle, not with --port/--pid. */
        if (!(mode || idle) || opt.port || opt.pid || !parse_targets(opt.targets))
            usage();
        multi = true;
    } else {
        if (opt.port <= 0 || opt.port > 65535)
            usage();
        targets[0] = (target){.num = 1, .port = opt.port, .pid = opt.pid};
        ntargets = 1;
    }
    if (opt.size == 0)
        usage();
    raise_nofile();
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    if (opt.conns <= 0)
        opt.conns = idle ? 10000 : 1;
    if (opt.seconds < 0)
        opt.seconds = idle ? 0.5 : 5;
    if (opt.slice < 0)
        opt.slice = multi ? DEFAULT_SLICE : opt.seconds;
    if (idle) {
        opt.size = 1;
        return multi ? run_idle_targets() : run_idle();
    }
    if (!mode)
        return run_check();
    if (mode == &connect_ops || mode == &connect_tls_ops)
        opt.size = 1;
    if (mode == &stream_ops && opt.size > STREAM_WINDOW)
        die("--size must be at most %d for stream", STREAM_WINDOW);
    return run_load();
}
