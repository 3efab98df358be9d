/*
 * libFuzzer target: drives the real reactor through one stream connection
 * whose other end (the "peer") this file holds as a raw socket, following a
 * schedule decoded from the input.
 *
 * Input layout
 *   byte 0      mode: bit 0 backend (epoll / poll); bits 1-2 how the
 *               connection is made (em_attach on a socketpair, accepted by
 *               em_start_unix_server, or em_connect_unix to a raw listener);
 *               bit 3: the end is em_reactor_free with the connection open
 *   byte 1, 2   SO_SNDBUF of the libem side / SO_RCVBUF of the peer (0: default)
 *   bytes 3-10  reactions: what receive_data / outbound_drained do when
 *               called (cycled through)
 *   the rest    operations, one byte each plus their operands (see do_op)
 *
 * Invariants checked (a violation aborts, which libFuzzer reports):
 *   - unbind exactly once, and nothing called back after it; nothing called
 *     back from inside an em_ call (post_init aside);
 *   - em_conn_by_sig finds the connection until its unbind begins, never after;
 *   - bytes arrive in order both ways: receive_data gets a prefix of what the
 *     peer wrote, the peer reads a prefix of what em_send_data accepted;
 *   - nothing is lost without a reason: when the peer sees EOF, or after
 *     unbind, with no immediate close/detach/peer reset, the peer got every
 *     byte em_send_data accepted; after the peer's clean half-close with no
 *     local close, receive_data got every byte the peer wrote;
 *   - em_send_data after a requested close / half-close is -ENOTCONN;
 *   - after unbind: em_connection_count() == 0, em_timer_count() == 0 once
 *     our timers are cancelled; an attached descriptor is left open with its
 *     flags restored; no descriptor leaks; the unix socket file is removed.
 * Each input runs only zero-wait turns (timers of at most 1 ms), so it takes
 * a few milliseconds.
 */
#include "em.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_SENT (1u << 20)    /* bytes libem may be asked to send per input */
#define MAX_PEER_OUT (1u << 20) /* bytes the peer may write per input */
#define MAX_CBS 64             /* timers and ticks per input */
#define FINAL_TURNS 400

/* ------------------------------------------------------------- failures */

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_reactor invariant: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond))                                                          \
            die("%s:%d: %s", __FILE__, __LINE__, #cond);                      \
    } while (0)

/* ----------------------------------------------------------- the input */

struct input {
    const uint8_t *p;
    size_t len, pos;
};

static uint8_t next_byte(struct input *in) { return in->pos < in->len ? in->p[in->pos++] : 0; }

/* ----------------------------------------------------------- the state */

enum mode { MODE_ATTACH, MODE_SERVER, MODE_CONNECT, MODE_COUNT };

enum op {
    OP_PEER_WRITE,
    OP_PEER_READ,
    OP_PEER_SHUT_WR,
    OP_PEER_CLOSE,
    OP_PAUSE,
    OP_RESUME,
    OP_SEND,
    OP_CLOSE,
    OP_CLOSE_AFTER,
    OP_CLOSE_WRITE,
    OP_DETACH,
    OP_TURN,
    OP_TIMER,
    OP_TICK,
    OP_PERIODIC,
    OP_CANCEL,
    OP_TURNS,
    OP_COUNT
};

struct cb_slot {
    int op;
    uint8_t param;
    int runs_left; /* periodic */
    em_timer_id id;
    bool periodic;
};

static struct {
    em_reactor *r;
    enum mode mode;
    em_sig sig;
    em_conn *conn; /* valid until unbind */
    int peer;      /* raw end; -1 once closed */
    int lib_fd;    /* attach mode: the attached end (ours) */
    int lib_fl;    /* its flags before em_attach */
    int detached_fd;
    em_server *server;
    int listener;
    char path[108];
    uint8_t react[8];
    unsigned nreact;

    /* what libem accepted to send, and how much of it the peer read */
    uint8_t *sent;
    size_t sent_len, peer_read;
    bool peer_eof;
    /* what the peer wrote and how much receive_data got */
    size_t peer_written, lib_read;
    bool peer_shut, peer_closed;

    /* local requests */
    bool close_now, close_after, close_write, detached, paused;
    bool dropped; /* em_reactor_free with the connection open */
    bool freeing; /* inside em_reactor_free */
    bool in_em; /* inside an em_ call that must not call back */
    int post_inits, completed, unbinds, reason, drained;
    int data_calls;

    struct cb_slot cbs[MAX_CBS];
    int ncbs;
    em_timer_id last_timer;
} S;

/* What the peer writes: byte i of its stream is pattern[i]. */
static uint8_t pattern[MAX_PEER_OUT];

static void pattern_init(void)
{
    static bool done;
    if (done)
        return;
    for (size_t i = 0; i < MAX_PEER_OUT; i++) {
        uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull;
        pattern[i] = (uint8_t)((x >> 29) ^ (x >> 47) ^ i);
    }
    done = true;
}

static bool lossy(void)
{
    return S.close_now || S.detached || S.peer_closed || S.dropped;
}

/* The connection, or NULL once its unbind began (checked both ways). */
static em_conn *live(void)
{
    em_conn *c = em_conn_by_sig(S.r, S.sig);
    if (S.unbinds)
        CHECK(c == NULL);
    else
        CHECK(c == S.conn);
    return c;
}

/* --------------------------------------------------------------- peer */

static void peer_check_eof(void)
{
    /* the peer sees EOF only after libem finished writing or was closed */
    CHECK(S.close_now || S.close_after || S.close_write || S.detached || S.peer_shut ||
          S.unbinds);
    if (!lossy() && S.reason == 0)
        if (S.peer_read != S.sent_len)
            die("peer EOF after %zu of %zu bytes sent", S.peer_read, S.sent_len);
}

/* Reads at most max bytes that are there; checks them. */
static void peer_read(size_t max)
{
    uint8_t buf[16384];
    while (S.peer >= 0 && !S.peer_eof && max > 0) {
        size_t want = max < sizeof buf ? max : sizeof buf;
        ssize_t n = recv(S.peer, buf, want, MSG_DONTWAIT);
        if (n > 0) {
            if (S.peer_read + (size_t)n > S.sent_len)
                die("peer read %zu bytes, only %zu sent", S.peer_read + (size_t)n, S.sent_len);
            if (memcmp(buf, S.sent + S.peer_read, (size_t)n) != 0) {
                size_t i = 0;
                while (buf[i] == S.sent[S.peer_read + i])
                    i++;
                die("peer got a wrong byte at offset %zu", S.peer_read + i);
            }
            S.peer_read += (size_t)n;
            max -= (size_t)n;
            continue;
        }
        if (n == 0) {
            S.peer_eof = true;
            peer_check_eof();
            return;
        }
        if (errno == EINTR)
            continue;
        return; /* EAGAIN, or ECONNRESET/EPIPE after a reset */
    }
}

static void peer_write(size_t len)
{
    if (S.peer < 0 || S.peer_shut)
        return;
    if (S.peer_written + len > MAX_PEER_OUT)
        len = MAX_PEER_OUT - S.peer_written;
    while (len > 0) {
        ssize_t n = send(S.peer, pattern + S.peer_written, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0)
            return; /* full, or libem's end is gone */
        S.peer_written += (size_t)n;
        len -= (size_t)n;
    }
}

/* ------------------------------------------------------------ handler */

static void send_bytes(em_conn *c, const uint8_t *d, size_t n)
{
    if (S.sent_len + n > MAX_SENT)
        n = MAX_SENT - S.sent_len;
    S.in_em = true;
    int rc = em_send_data(c, d, n);
    S.in_em = false;
    if (S.close_now || S.close_after || S.close_write || S.detached)
        CHECK(rc == -ENOTCONN);
    else
        CHECK(rc == 0 || rc == -ENOTCONN); /* -ENOTCONN: closing on EOF */
    if (rc == 0) {
        memcpy(S.sent + S.sent_len, d, n);
        S.sent_len += n;
    }
}

static void act(em_conn *c, int what);

static void check_cb(em_conn *c)
{
    CHECK(!S.in_em);
    CHECK(S.unbinds == 0);
    CHECK(c == S.conn);
    CHECK(S.post_inits == 1);
}

static void h_post_init(em_conn *c)
{
    CHECK(S.post_inits == 0);
    S.post_inits++;
    S.conn = c;
    S.sig = em_signature(c);
    CHECK(em_conn_arg(c) == &S);
}

static void h_completed(em_conn *c)
{
    check_cb(c);
    CHECK(S.mode == MODE_CONNECT);
    CHECK(S.completed == 0);
    CHECK(S.data_calls == 0);
    S.completed++;
}

static void h_receive(em_conn *c, const char *d, size_t n)
{
    check_cb(c);
    CHECK(n > 0);
    CHECK(!S.paused);
    CHECK(!S.close_now && !S.detached);
    if (S.mode == MODE_CONNECT)
        CHECK(S.completed == 1);
    if (S.lib_read + n > S.peer_written)
        die("receive_data: %zu bytes, the peer wrote %zu", S.lib_read + n, S.peer_written);
    if (memcmp(d, pattern + S.lib_read, n) != 0) {
        size_t i = 0;
        while ((uint8_t)d[i] == pattern[S.lib_read + i])
            i++;
        die("receive_data: wrong byte at offset %zu", S.lib_read + i);
    }
    S.lib_read += n;
    S.data_calls++;
    uint8_t b = S.react[S.nreact++ % 8];
    if (b >= 128)
        act(c, b & 7); /* else nothing */
}

static void h_drained(em_conn *c)
{
    check_cb(c);
    S.drained++;
    uint8_t b = S.react[S.nreact++ % 8];
    if (b >= 192)
        act(c, (b >> 3) & 7);
}

static void h_unbind(em_conn *c, int reason)
{
    CHECK(!S.in_em);
    CHECK(c == S.conn);
    CHECK(S.unbinds == 0);
    S.unbinds++;
    S.reason = reason;
    CHECK(em_conn_by_sig(S.r, S.sig) == NULL);
    /* no reason without a cause: an error needs a peer that reset */
    if (reason != 0)
        CHECK(S.peer_closed);
    /* every method refuses or is a no-op now */
    CHECK(em_send_data(c, "x", 1) == -ENOTCONN);
    CHECK(em_close_connection(c, false) == 0);
    CHECK(em_detach(c) == -ENOTCONN);
    CHECK(em_pause(c) == -ENOTCONN);
    /* all of the peer's data arrived before a clean EOF we did not cause */
    if (reason == 0 && S.peer_shut && !S.peer_closed && !S.close_now && !S.close_after &&
        !S.detached && !S.paused && !S.freeing)
        if (S.lib_read != S.peer_written)
            die("unbind(0) after the peer's EOF with %zu of %zu bytes read", S.lib_read,
                S.peer_written);
}

static const em_handler handler = {
    .post_init = h_post_init,
    .connection_completed = h_completed,
    .receive_data = h_receive,
    .unbind = h_unbind,
    .outbound_drained = h_drained,
};

/* Actions on the connection, from anywhere (callbacks included). */
enum { A_NONE, A_ECHO, A_PAUSE, A_RESUME, A_CLOSE, A_CLOSE_AFTER, A_CLOSE_WRITE, A_DETACH };

static void act(em_conn *c, int what)
{
    int rc;
    if (!c)
        return;
    S.in_em = true;
    switch (what) {
    case A_ECHO:
        S.in_em = false;
        send_bytes(c, (const uint8_t *)"echo-echo-echo-echo", 1 + (S.sent_len % 19));
        break;
    case A_PAUSE:
        rc = em_pause(c);
        CHECK(rc == 0 || rc == -ENOTCONN);
        if (rc == 0)
            S.paused = true;
        if (rc == 0)
            CHECK(em_is_paused(c));
        break;
    case A_RESUME:
        rc = em_resume(c);
        CHECK(rc == 0 || rc == -ENOTCONN);
        if (rc == 0)
            S.paused = false;
        if (rc == 0)
            CHECK(!em_is_paused(c));
        break;
    case A_CLOSE:
        CHECK(em_close_connection(c, false) == 0);
        S.close_now = true;
        break;
    case A_CLOSE_AFTER:
        CHECK(em_close_connection_after_writing(c) == 0);
        S.close_after = true;
        break;
    case A_CLOSE_WRITE:
        rc = em_close_write(c);
        CHECK(rc == 0 || rc == -ENOTCONN);
        if (rc == 0)
            S.close_write = true;
        else
            CHECK(S.close_write || S.close_after || S.close_now || S.detached ||
                  S.peer_shut || S.peer_closed);
        break;
    case A_DETACH:
        rc = em_detach(c);
        if (rc >= 0) {
            S.detached = true;
            if (S.mode == MODE_ATTACH)
                CHECK(rc == S.lib_fd);
            else
                S.detached_fd = rc;
        } else {
            CHECK(rc == -ENOTCONN);
            CHECK(S.close_now || S.close_after || S.detached || S.peer_shut ||
                  S.peer_closed);
        }
        break;
    default:
        break;
    }
    S.in_em = false;
}

/* --------------------------------------------------- timers and ticks */

static void do_op(struct input *in, int op);

/* Cancels the latest timer: 0 while it is pending, -ENOENT once fired. */
static void cancel_last(void)
{
    if (!S.last_timer)
        return;
    bool pending = false;
    for (int i = 0; i < S.ncbs; i++) {
        if (S.cbs[i].id == S.last_timer) {
            pending = true;
            S.cbs[i].id = 0;
        }
    }
    int rc = em_cancel_timer(S.r, S.last_timer);
    if (rc != (pending ? 0 : -ENOENT))
        die("em_cancel_timer: %d, the timer is %s", rc, pending ? "pending" : "gone");
    S.last_timer = 0;
}

static void run_slot(struct cb_slot *s)
{
    em_conn *c = live();
    switch (s->param % 10) {
    case 0:
        act(c, A_ECHO);
        break;
    case 1:
        act(c, A_PAUSE);
        break;
    case 2:
        act(c, A_RESUME);
        break;
    case 3:
        act(c, A_CLOSE);
        break;
    case 4:
        act(c, A_CLOSE_AFTER);
        break;
    case 5:
        act(c, A_CLOSE_WRITE);
        break;
    case 6:
        act(c, A_DETACH);
        break;
    case 7:
        peer_write(1 + s->param * 37u);
        break;
    case 8:
        peer_read(SIZE_MAX);
        break;
    default: /* cancel the latest timer (maybe this one) */
        cancel_last();
        break;
    }
}

static void timer_cb(em_reactor *r, void *arg)
{
    struct cb_slot *s = arg;
    CHECK(r == S.r);
    CHECK(!S.in_em);
    CHECK(s->id != 0);
    if (s->periodic) {
        CHECK(s->runs_left > 0);
        if (--s->runs_left == 0) {
            CHECK(em_cancel_timer(r, s->id) == 0);
            s->id = 0;
        }
    } else {
        s->id = 0; /* fired: never again */
    }
    run_slot(s);
}

static void tick_cb(em_reactor *r, void *arg)
{
    CHECK(r == S.r);
    CHECK(!S.in_em);
    run_slot(arg);
}

static struct cb_slot *new_slot(uint8_t param)
{
    if (S.ncbs >= MAX_CBS)
        return NULL;
    struct cb_slot *s = &S.cbs[S.ncbs++];
    memset(s, 0, sizeof *s);
    s->param = param;
    return s;
}

static void turn(void)
{
    S.in_em = false;
    int rc = em_run_once(S.r, 0);
    if (rc < 0)
        die("em_run_once: %d", rc);
}

static void do_op(struct input *in, int op)
{
    switch (op) {
    case OP_PEER_WRITE: {
        uint8_t b = next_byte(in);
        size_t len;
        switch (b & 3) {
        case 0:
            len = 1 + (b >> 2) % 16;
            break;
        case 1:
            len = 1 + (size_t)(b >> 2) * 4;
            break;
        case 2:
            len = 1 + (size_t)(b >> 2) * 64;
            break;
        default:
            len = 1 + (size_t)(b >> 2) * 1024;
            break;
        }
        peer_write(len);
        break;
    }
    case OP_PEER_READ: {
        uint8_t b = next_byte(in);
        peer_read(b == 0 ? SIZE_MAX : (size_t)b * 256);
        break;
    }
    case OP_PEER_SHUT_WR:
        if (S.peer >= 0 && !S.peer_shut) {
            shutdown(S.peer, SHUT_WR);
            S.peer_shut = true;
        }
        break;
    case OP_PEER_CLOSE:
        if (S.peer >= 0) {
            close(S.peer);
            S.peer = -1;
            S.peer_closed = true;
            S.peer_shut = true;
        }
        break;
    case OP_PAUSE:
        act(live(), A_PAUSE);
        break;
    case OP_RESUME:
        act(live(), A_RESUME);
        break;
    case OP_SEND: {
        uint8_t l = next_byte(in), rep = next_byte(in);
        size_t n = l;
        if (n > in->len - in->pos)
            n = in->len - in->pos;
        const uint8_t *d = in->p + in->pos;
        in->pos += n;
        em_conn *c = live();
        if (!c)
            break;
        if (n == 0) {
            send_bytes(c, (const uint8_t *)"", 0);
            break;
        }
        /* repeated: big sends make partial writes and outbound_drained */
        unsigned times = rep < 200 ? 1 : 1u << ((rep - 200) % 10);
        for (unsigned i = 0; i < times && live(); i++)
            send_bytes(c, d, n);
        break;
    }
    case OP_CLOSE:
        act(live(), A_CLOSE);
        break;
    case OP_CLOSE_AFTER:
        act(live(), A_CLOSE_AFTER);
        break;
    case OP_CLOSE_WRITE:
        act(live(), A_CLOSE_WRITE);
        break;
    case OP_DETACH:
        act(live(), A_DETACH);
        break;
    case OP_TURN:
        turn();
        break;
    case OP_TURNS: {
        int n = 1 + next_byte(in) % 8;
        for (int i = 0; i < n; i++) {
            turn();
            peer_read(SIZE_MAX);
        }
        break;
    }
    case OP_TIMER:
    case OP_PERIODIC: {
        uint8_t when = next_byte(in), param = next_byte(in);
        struct cb_slot *s = new_slot(param);
        if (!s)
            break;
        double secs = (when % 3) * 0.0005;
        if (op == OP_PERIODIC) {
            s->periodic = true;
            s->runs_left = 1 + when % 4;
            s->id = em_add_periodic_timer(S.r, secs > 0 ? secs : 1e-9, timer_cb, s);
        } else {
            s->id = em_add_timer(S.r, secs, timer_cb, s);
        }
        CHECK(s->id != 0);
        S.last_timer = s->id;
        break;
    }
    case OP_TICK: {
        struct cb_slot *s = new_slot(next_byte(in));
        if (s)
            CHECK(em_next_tick(S.r, tick_cb, s) == 0);
        break;
    }
    case OP_CANCEL:
        cancel_last();
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------- set-up */

static int fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1;
}

static void set_buf(int fd, int opt, uint8_t b)
{
    if (!b)
        return;
    int v = 1024 * (int)b;
    setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v);
}

static bool setup(uint8_t mode_byte, uint8_t snd, uint8_t rcv)
{
    em_reactor_opts o = {.backend = (mode_byte & 1) ? "poll" : "epoll"};
    S.r = em_reactor_new(&o);
    if (!S.r)
        die("em_reactor_new: %s", strerror(errno));
    S.mode = (enum mode)(((mode_byte >> 1) & 3) % MODE_COUNT);
    S.peer = S.lib_fd = S.listener = S.detached_fd = -1;
    snprintf(S.path, sizeof S.path, "/tmp/libem-fuzz-%d.sock", (int)getpid());
    if (S.mode == MODE_ATTACH) {
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        S.lib_fd = sv[0];
        S.peer = sv[1];
        set_buf(S.lib_fd, SO_SNDBUF, snd);
        set_buf(S.peer, SO_RCVBUF, rcv);
        S.lib_fl = fcntl(S.lib_fd, F_GETFL);
        S.in_em = true;
        em_conn *c = em_attach(S.r, S.lib_fd, &handler, &S);
        S.in_em = false;
        if (!c)
            die("em_attach: %s", strerror(errno));
        CHECK(c == S.conn);
        return true;
    }
    if (S.mode == MODE_SERVER) {
        S.server = em_start_unix_server(S.r, S.path, &handler, &S);
        if (!S.server)
            die("em_start_unix_server: %s", strerror(errno));
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        strcpy(sun.sun_path, S.path);
        S.peer = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(S.peer >= 0);
        set_buf(S.peer, SO_RCVBUF, rcv);
        CHECK(connect(S.peer, (struct sockaddr *)&sun, sizeof sun) == 0);
        for (int i = 0; i < 100 && !S.conn; i++)
            turn();
        CHECK(S.conn != NULL);
        int small = 1024 * snd;
        if (snd)
            em_set_sock_opt(S.conn, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        /* the listening socket is closed now: one connection only */
        CHECK(em_stop_server(S.server) == 0);
        S.server = NULL;
        CHECK(access(S.path, F_OK) != 0);
        return true;
    }
    /* MODE_CONNECT */
    unlink(S.path);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, S.path);
    S.listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    CHECK(S.listener >= 0);
    CHECK(bind(S.listener, (struct sockaddr *)&sun, sizeof sun) == 0);
    CHECK(listen(S.listener, 4) == 0);
    em_conn *c = em_connect_unix(S.r, S.path, &handler, &S);
    if (!c)
        die("em_connect_unix: %s", strerror(errno));
    CHECK(c == S.conn);
    if (snd) {
        int small = 1024 * snd;
        em_set_sock_opt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    }
    for (int i = 0; i < 100 && S.peer < 0; i++) {
        S.peer = accept4(S.listener, NULL, NULL, SOCK_CLOEXEC);
        if (S.peer < 0)
            turn();
    }
    CHECK(S.peer >= 0);
    set_buf(S.peer, SO_RCVBUF, rcv);
    close(S.listener);
    S.listener = -1;
    unlink(S.path);
    return true;
}

/* Lets the connection finish what was asked, then closes it. */
static void finish(bool free_open)
{
    if (!free_open && !S.unbinds && !S.close_now && !S.detached && live()) {
        em_conn *c = live();
        if (S.paused)
            act(c, A_RESUME);
        if (!S.close_after)
            act(c, A_CLOSE_AFTER);
    }
    for (int i = 0; i < FINAL_TURNS && !S.unbinds && !free_open; i++) {
        turn();
        peer_read(SIZE_MAX);
    }
    if (!S.unbinds && live() && !free_open) {
        /* stuck: the peer stopped reading (its buffer is full) or is paused */
        act(live(), A_CLOSE);
        turn();
        CHECK(S.unbinds == 1); /* an immediate close unbinds in that turn */
    }
    /* cancel what is left of our timers */
    for (int i = 0; i < S.ncbs; i++) {
        if (S.cbs[i].id) {
            int rc = em_cancel_timer(S.r, S.cbs[i].id);
            if (rc != 0)
                die("em_cancel_timer of a pending timer: %d", rc);
            S.cbs[i].id = 0;
        }
    }
    if (free_open && !S.unbinds)
        S.dropped = true;
    if (!free_open) {
        turn(); /* ticks still queued run against a dead connection */
        CHECK(S.unbinds == 1);
        CHECK(em_connection_count(S.r) == 0);
        CHECK(em_timer_count(S.r) == 0);
    }
    S.freeing = true;
    em_reactor_free(S.r);
    S.freeing = false;
    S.r = NULL;
    CHECK(S.unbinds == 1);
    if (S.dropped)
        CHECK(S.reason == 0); /* shutdown unbinds with 0 */

    /* nothing lost without a reason: read the rest, then EOF */
    if (S.mode == MODE_ATTACH) {
        /* libem never closes an attached descriptor and restores its flags */
        CHECK(fcntl(S.lib_fd, F_GETFD) != -1);
        CHECK(fcntl(S.lib_fd, F_GETFL) == S.lib_fl);
        close(S.lib_fd);
        S.lib_fd = -1;
    }
    if (S.detached_fd >= 0) {
        CHECK(fcntl(S.detached_fd, F_GETFD) != -1);
        close(S.detached_fd);
        S.detached_fd = -1;
    }
    if (S.peer >= 0) {
        set_buf(S.peer, SO_RCVBUF, 255);
        peer_read(SIZE_MAX);
        if (!lossy() && S.reason == 0 && S.peer_read != S.sent_len)
            die("the peer got %zu of %zu bytes sent", S.peer_read, S.sent_len);
        close(S.peer);
        S.peer = -1;
    }
    CHECK(access(S.path, F_OK) != 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 11)
        return -1; /* not worth running */
    pattern_init();
    int fds0 = fd_count();
    memset(&S, 0, sizeof S);
    S.sent = malloc(MAX_SENT);
    CHECK(S.sent != NULL);
    struct input in = {.p = data, .len = size, .pos = 0};
    uint8_t mode = next_byte(&in), snd = next_byte(&in), rcv = next_byte(&in);
    for (int i = 0; i < 8; i++)
        S.react[i] = next_byte(&in);
    setup(mode, snd, rcv);
    while (in.pos < in.len) {
        int op = next_byte(&in) % OP_COUNT;
        do_op(&in, op);
    }
    finish(mode & 8);
    free(S.sent);
    S.sent = NULL;
    int fds1 = fd_count();
    if (fds1 != fds0)
        die("descriptors: %d before, %d after", fds0, fds1);
    return 0;
}
