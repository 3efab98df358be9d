/* em_attach (data mode), em_watch (notify mode), em_detach and the notify
 * switches, over pipes and socketpairs. */
#include "harness.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static bool fd_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }
static bool fd_nonblock(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

/* Reads what is there from a non-blocking fd into buf (at most cap - *len
 * bytes); returns 0 at EOF, 1 otherwise. */
static int drain_fd(int fd, char *buf, size_t cap, size_t *len)
{
    for (;;) {
        if (*len >= cap)
            return 1;
        ssize_t n = read(fd, buf + *len, cap - *len);
        if (n > 0) {
            *len += (size_t)n;
            continue;
        }
        if (n == 0)
            return 0;
        ASSERT(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
        return 1;
    }
}

/* ----------------------------------------------------- data mode: pipes */

TEST(attach_pipe_read_end_receive_then_eof)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    ASSERT(!fd_nonblock(p[0]));
    rec x = {.tag = 1, .store = true};
    em_conn *c = em_attach(r, p[0], &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(x.post_inits, 1);
    ASSERT(!em_is_watch_only(c));
    ASSERT_EQ(em_conn_fd(c), p[0]);
    ASSERT(fd_nonblock(p[0])); /* made non-blocking while attached */
    write_all(p[1], "hello ", 6);
    write_all(p[1], "pipe", 4);
    double deadline = now_mono() + 5;
    while (x.len < 10 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(x.len, 10);
    ASSERT(memcmp(x.buf, "hello pipe", 10) == 0);
    ASSERT_EQ(x.unbinds, 0);
    close(p[1]); /* EOF */
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_EQ(x.reason, 0);
    /* the fd is the caller's: still open, flags as found */
    ASSERT(fd_open(p[0]));
    ASSERT(!fd_nonblock(p[0]));
    ASSERT_EQ(fcntl(p[0], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    char b;
    ASSERT_EQ(read(p[0], &b, 1), 0); /* still usable: EOF */
    close(p[0]);
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A descriptor that was already non-blocking stays so. */
TEST(attach_keeps_nonblocking_flag_as_found)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    rec x = {.tag = 1};
    ASSERT_NOT_NULL(em_attach(r, p[0], &rec_handler, &x));
    close(p[1]);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(fd_open(p[0]));
    ASSERT(fd_nonblock(p[0]));
    close(p[0]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* send_data into a pipe's write end; more than the pipe holds, then close
 * after writing: every byte arrives, unbind(0), fd still open. */
TEST(attach_pipe_write_end_send_and_close_after_writing)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    set_nonblock(p[0]);
    rec x = {.tag = 1};
    em_conn *c = em_attach(r, p[1], &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    const size_t total = 1u << 20; /* far beyond the 64 KiB of a pipe */
    char *out = malloc(total), *in = malloc(total);
    ASSERT_NOT_NULL(out);
    ASSERT_NOT_NULL(in);
    fill_pattern(out, 0, total);
    for (size_t off = 0; off < total; off += total / 8)
        ASSERT_EQ(em_send_data(c, out + off, total / 8), 0);
    ASSERT_EQ(em_close_connection_after_writing(c), 0);
    ASSERT_EQ(em_send_data(c, "x", 1), -ENOTCONN);
    size_t got = 0;
    double deadline = now_mono() + 10;
    while ((got < total || !x.unbinds) && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.005), 0);
        drain_fd(p[0], in, total, &got);
    }
    ASSERT_EQ(got, total);
    ASSERT(memcmp(in, out, total) == 0);
    ASSERT_EQ(x.unbinds, 1);
    ASSERT_EQ(x.reason, 0);
    ASSERT(fd_open(p[1]));
    ASSERT(!fd_nonblock(p[1])); /* flags as found, also after sending */
    /* libem did not close it: writing still works */
    ASSERT_EQ(write(p[1], "z", 1), 1);
    char b;
    ASSERT_EQ(read(p[0], &b, 1), 1);
    ASSERT_EQ(b, 'z');
    free(out);
    free(in);
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

static void pause_on_first(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    (void)n;
    if (x->data_calls == 1) {
        ASSERT_EQ(em_pause(c), 0);
        ASSERT(em_is_paused(c));
    }
}

TEST(attach_pipe_pause_and_resume)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    rec x = {.tag = 1, .store = true, .on_data = pause_on_first};
    em_conn *c = em_attach(r, p[0], &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    write_all(p[1], "first", 5);
    ASSERT(run_until(r, &x.data_calls, 5));
    ASSERT(em_is_paused(c));
    write_all(p[1], "second", 6);
    run_for(r, 0.2);
    ASSERT_EQ(x.data_calls, 1);
    ASSERT_EQ(x.len, 5);
    close(p[1]); /* EOF waits too while paused */
    run_for(r, 0.1);
    ASSERT_EQ(x.unbinds, 0);
    ASSERT_EQ(em_resume(c), 0);
    ASSERT(!em_is_paused(c));
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_EQ(x.reason, 0);
    ASSERT_EQ(x.len, 11);
    ASSERT(memcmp(x.buf, "firstsecond", 11) == 0);
    ASSERT(fd_open(p[0]));
    ASSERT(!fd_nonblock(p[0]));
    close(p[0]);
    REACTOR_FREE_CHECKED(r);
    rec_free(&x);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A socket in data mode: both directions, then a local close. */
TEST(attach_socketpair_echo_and_close)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    set_nonblock(sv[1]);
    rec x = {.tag = 1, .echo = true, .check_pattern = true};
    em_conn *c = em_attach(r, sv[0], &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    const size_t total = 300000;
    char *out = malloc(total), *in = malloc(total);
    fill_pattern(out, 0, total);
    size_t sent = 0, got = 0;
    double deadline = now_mono() + 10;
    while (got < total && now_mono() < deadline) {
        if (sent < total) {
            ssize_t n = write(sv[1], out + sent, total - sent > 8192 ? 8192 : total - sent);
            if (n > 0)
                sent += (size_t)n;
        }
        ASSERT_GE(em_run_once(r, 0.002), 0);
        drain_fd(sv[1], in, total, &got);
    }
    ASSERT_EQ(got, total);
    ASSERT(memcmp(in, out, total) == 0);
    ASSERT_EQ(x.bytes_in, total);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT_EQ(x.unbinds, 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_EQ(x.reason, 0);
    ASSERT(fd_open(sv[0]));
    ASSERT(!fd_nonblock(sv[0]));
    /* still connected: the socket was not closed */
    ASSERT_EQ(write(sv[0], "k", 1), 1);
    char b;
    double d2 = now_mono() + 2;
    ssize_t n;
    while ((n = read(sv[1], &b, 1)) < 0 && now_mono() < d2) {
    }
    ASSERT_EQ(n, 1);
    ASSERT_EQ(b, 'k');
    free(out);
    free(in);
    close(sv[0]);
    close(sv[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------------- refusals */

TEST(attach_same_fd_twice_is_eexist)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    rec x = {.tag = 1}, y = {.tag = 2};
    em_conn *c = em_attach(r, p[0], &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT_NULL_ERRNO(em_attach(r, p[0], &rec_handler, &y), EEXIST);
    ASSERT_NULL_ERRNO(em_watch(r, p[0], &rec_handler, &y), EEXIST);
    ASSERT_EQ(y.post_inits, 0);
    ASSERT_EQ(em_connection_count(r), 1);
    /* a watched fd likewise */
    em_conn *w = em_watch(r, p[1], &rec_handler, &y);
    ASSERT_NOT_NULL(w);
    rec z = {.tag = 3};
    ASSERT_NULL_ERRNO(em_watch(r, p[1], &rec_handler, &z), EEXIST);
    ASSERT_NULL_ERRNO(em_attach(r, p[1], &rec_handler, &z), EEXIST);
    ASSERT_EQ(z.post_inits, 0);
    /* the refusal changed nothing: the first attachment still works */
    write_all(p[1], "ok", 2);
    ASSERT(run_until(r, &x.data_calls, 5));
    ASSERT_EQ(x.bytes_in, 2);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT_EQ(close_conn(w, false), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(run_until(r, &y.unbinds, 5));
    /* once unbound, the fd may be attached again */
    rec x2 = {.tag = 4};
    em_conn *c2 = em_attach(r, p[0], &rec_handler, &x2);
    ASSERT_NOT_NULL(c2);
    ASSERT_EQ(close_conn(c2, false), 0);
    ASSERT(run_until(r, &x2.unbinds, 5));
    ASSERT(fd_open(p[0]));
    ASSERT(fd_open(p[1]));
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(attach_bad_fd_and_arguments)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec x = {.tag = 1};
    ASSERT_NULL_ERRNO(em_attach(r, -1, &rec_handler, &x), EBADF);
    ASSERT_NULL_ERRNO(em_watch(r, -1, &rec_handler, &x), EBADF);
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    int closed_fd = p[0];
    close(p[0]);
    ASSERT_NULL_ERRNO(em_attach(r, closed_fd, &rec_handler, &x), EBADF);
    ASSERT_NULL_ERRNO(em_watch(r, closed_fd, &rec_handler, &x), EBADF);
    ASSERT_NULL_ERRNO(em_attach(r, p[1], NULL, &x), EINVAL);
    ASSERT_NULL_ERRNO(em_watch(r, p[1], NULL, &x), EINVAL);
    ASSERT_NULL_ERRNO(em_attach(NULL, p[1], &rec_handler, &x), EINVAL);
    ASSERT_EQ(x.post_inits, 0);
    ASSERT_EQ(em_connection_count(r), 0);
    ASSERT(fd_open(p[1]));
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* em_reactor_free unbinds attached and watched fds and closes neither. */
TEST(attach_reactor_free_leaves_fds_open)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    rec x = {.tag = 1}, y = {.tag = 2};
    ASSERT_NOT_NULL(em_attach(r, p[0], &rec_handler, &x));
    ASSERT_NOT_NULL(em_watch(r, p[1], &rec_handler, &y));
    run_for(r, 0.02);
    ASSERT_EQ(em_timer_count(r), 0);
    em_reactor_free(r);
    ASSERT_EQ(x.unbinds, 1);
    ASSERT_EQ(y.unbinds, 1);
    ASSERT_EQ(x.reason, 0);
    ASSERT_EQ(y.reason, 0);
    ASSERT(fd_open(p[0]));
    ASSERT(fd_open(p[1]));
    ASSERT(!fd_nonblock(p[0]));
    ASSERT(!fd_nonblock(p[1]));
    close(p[0]);
    close(p[1]);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------- notify mode */

struct watch_state {
    int readable, writable;
    int read_limit;          /* readable: switch off after this many calls */
    bool read_it;            /* readable: consume one byte per call */
    int detach_fd;           /* em_detach's result from a callback */
    bool detach_in_readable;
    bool wrong;
};

static struct watch_state *ws_of(em_conn *c) { return em_conn_arg(c); }

static void w_post_init(em_conn *c) { (void)c; }

static int w_unbinds, w_reason;
static void w_unbind(em_conn *c, int reason)
{
    (void)c;
    w_unbinds++;
    w_reason = reason;
}

static void w_readable(em_conn *c)
{
    struct watch_state *s = ws_of(c);
    s->readable++;
    if (s->detach_in_readable) {
        s->detach_fd = em_detach(c);
        return;
    }
    if (s->read_it) {
        char b;
        if (read(em_conn_fd(c), &b, 1) != 1)
            s->wrong = true;
    }
    if (s->read_limit && s->readable >= s->read_limit) {
        if (em_set_notify_readable(c, false) != 0 || em_is_notify_readable(c))
            s->wrong = true;
    }
}

static void w_writable(em_conn *c)
{
    struct watch_state *s = ws_of(c);
    s->writable++;
    /* once per call: switch itself off */
    if (em_set_notify_writable(c, false) != 0 || em_is_notify_writable(c))
        s->wrong = true;
}

static const em_handler watch_h = {
    .post_init = w_post_init,
    .unbind = w_unbind,
    .notify_readable = w_readable,
    .notify_writable = w_writable,
};

TEST(watch_readable_level_triggered_and_switched_off_inside)
{
    int fd0 = open_fd_count();
    w_unbinds = 0;
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    struct watch_state s = {.read_limit = 5};
    em_conn *c = em_watch(r, p[0], &watch_h, &s);
    ASSERT_NOT_NULL(c);
    ASSERT(em_is_watch_only(c));
    /* both off at first */
    ASSERT(!em_is_notify_readable(c));
    ASSERT(!em_is_notify_writable(c));
    write_all(p[1], "abc", 3);
    run_for(r, 0.1);
    ASSERT_EQ(s.readable, 0);
    ASSERT(!fd_nonblock(p[0])); /* notify mode leaves the fd alone */
    ASSERT_EQ(em_set_notify_readable(c, true), 0);
    ASSERT(em_is_notify_readable(c));
    /* nobody reads: it keeps firing, once per turn, until switched off */
    double deadline = now_mono() + 5;
    while (s.readable < 5 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    ASSERT_EQ(s.readable, 5);
    ASSERT(!s.wrong);
    ASSERT(!em_is_notify_readable(c));
    run_for(r, 0.15);
    ASSERT_EQ(s.readable, 5);
    /* libem read nothing */
    char buf[8];
    ASSERT_EQ(read(p[0], buf, sizeof buf), 3);
    ASSERT(memcmp(buf, "abc", 3) == 0);
    /* switched on again with nothing to read: silent */
    ASSERT_EQ(em_set_notify_readable(c, true), 0);
    s.read_limit = 0;
    s.read_it = true;
    run_for(r, 0.1);
    ASSERT_EQ(s.readable, 5);
    write_all(p[1], "xy", 2);
    deadline = now_mono() + 5;
    while (s.readable < 7 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.05), 0);
    run_for(r, 0.1);
    ASSERT_EQ(s.readable, 7); /* one per byte read, then quiet */
    ASSERT(!s.wrong);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &w_unbinds, 5));
    ASSERT_EQ(w_reason, 0);
    ASSERT(fd_open(p[0]));
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(watch_writable_switched_off_inside_and_on_again)
{
    int fd0 = open_fd_count();
    w_unbinds = 0;
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    struct watch_state s = {0};
    em_conn *c = em_watch(r, p[1], &watch_h, &s);
    ASSERT_NOT_NULL(c);
    run_for(r, 0.05);
    ASSERT_EQ(s.writable, 0);
    for (int i = 1; i <= 3; i++) {
        ASSERT_EQ(em_set_notify_writable(c, true), 0);
        ASSERT(em_is_notify_writable(c));
        double deadline = now_mono() + 5;
        while (s.writable < i && now_mono() < deadline)
            ASSERT_GE(em_run_once(r, 0.05), 0);
        run_for(r, 0.1);
        ASSERT_EQ(s.writable, i); /* switched itself off: exactly one call */
        ASSERT(!em_is_notify_writable(c));
        ASSERT(!s.wrong);
    }
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &w_unbinds, 5));
    ASSERT(fd_open(p[1]));
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Each callback switches itself off and the other on: writable -> the peer
 * answers -> readable -> writable ... */
static int pp_readable, pp_writable;
static bool pp_wrong;

static void pp_on_readable(em_conn *c)
{
    pp_readable++;
    char b;
    if (read(em_conn_fd(c), &b, 1) != 1 || b != 'p')
        pp_wrong = true;
    if (em_set_notify_readable(c, false) || em_set_notify_writable(c, true))
        pp_wrong = true;
}

static void pp_on_writable(em_conn *c)
{
    pp_writable++;
    if (write(em_conn_fd(c), "q", 1) != 1)
        pp_wrong = true;
    if (em_set_notify_writable(c, false) || em_set_notify_readable(c, true))
        pp_wrong = true;
}

static const em_handler pp_h = {
    .unbind = w_unbind,
    .notify_readable = pp_on_readable,
    .notify_writable = pp_on_writable,
};

TEST(watch_ping_pong_switching_both_inside_callbacks)
{
    int fd0 = open_fd_count();
    w_unbinds = 0;
    em_reactor *r = new_reactor();
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    set_nonblock(sv[1]);
    em_conn *c = em_watch(r, sv[0], &pp_h, NULL);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(em_set_notify_writable(c, true), 0);
    double deadline = now_mono() + 5;
    while (pp_writable < 20 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        char b;
        if (read(sv[1], &b, 1) == 1) {
            ASSERT_EQ(b, 'q');
            ASSERT_EQ(write(sv[1], "p", 1), 1);
        }
    }
    ASSERT(!pp_wrong);
    ASSERT_GE(pp_writable, 20);
    ASSERT(pp_readable >= pp_writable - 1 && pp_readable <= pp_writable);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &w_unbinds, 5));
    close(sv[0]);
    close(sv[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(notify_setters_on_non_watch_conn_are_einval)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    rec x = {.tag = 1}, u = {.tag = 2};
    em_conn *c = em_attach(r, p[0], &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT(!em_is_watch_only(c));
    ASSERT_EQ(em_set_notify_readable(c, true), -EINVAL);
    ASSERT_EQ(em_set_notify_writable(c, true), -EINVAL);
    ASSERT_EQ(em_set_notify_readable(c, false), -EINVAL);
    ASSERT_EQ(em_set_notify_writable(c, false), -EINVAL);
    ASSERT(!em_is_notify_readable(c));
    ASSERT(!em_is_notify_writable(c));
    em_conn *d = em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &u);
    ASSERT_NOT_NULL(d);
    ASSERT(!em_is_watch_only(d));
    ASSERT_EQ(em_set_notify_readable(d, true), -EINVAL);
    ASSERT_EQ(em_set_notify_writable(d, true), -EINVAL);
    ASSERT_EQ(em_set_notify_readable(NULL, true), -EINVAL);
    ASSERT(!em_is_watch_only(NULL));
    /* the attached pipe still works in data mode */
    write_all(p[1], "d", 1);
    ASSERT(run_until(r, &x.data_calls, 5));
    /* em_send_data on a watch conn is refused: libem writes nothing */
    struct watch_state s = {0};
    w_unbinds = 0;
    em_conn *w = em_watch(r, p[1], &watch_h, &s);
    ASSERT_NOT_NULL(w);
    ASSERT_NE(em_send_data(w, "x", 1), 0);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT_EQ(close_conn(d, false), 0);
    ASSERT_EQ(close_conn(w, false), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(run_until(r, &u.unbinds, 5));
    ASSERT(run_until(r, &w_unbinds, 5));
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ----------------------------------------------------------- detach */

TEST(detach_watch_returns_fd_open_then_unbind)
{
    int fd0 = open_fd_count();
    w_unbinds = 0;
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    struct watch_state s = {0};
    em_conn *c = em_watch(r, p[0], &watch_h, &s);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(em_set_notify_readable(c, true), 0);
    int fd = em_detach(c);
    ASSERT_EQ(fd, p[0]);
    ASSERT_EQ(w_unbinds, 0); /* later, not inside */
    ASSERT_EQ(em_detach(c), -ENOTCONN);
    ASSERT(run_until(r, &w_unbinds, 5));
    ASSERT_EQ(w_reason, 0);
    ASSERT_EQ(em_connection_count(r), 0);
    ASSERT(fd_open(fd));
    /* removed from the poller: readable data calls nothing */
    write_all(p[1], "z", 1);
    run_for(r, 0.1);
    ASSERT_EQ(s.readable, 0);
    char b;
    ASSERT_EQ(read(fd, &b, 1), 1);
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(detach_from_notify_readable)
{
    int fd0 = open_fd_count();
    w_unbinds = 0;
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    struct watch_state s = {.detach_in_readable = true, .detach_fd = -100};
    em_conn *c = em_watch(r, p[0], &watch_h, &s);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(em_set_notify_readable(c, true), 0);
    write_all(p[1], "z", 1);
    ASSERT(run_until(r, &w_unbinds, 5));
    ASSERT_EQ(s.readable, 1);
    ASSERT_EQ(s.detach_fd, p[0]);
    ASSERT_EQ(w_reason, 0);
    run_for(r, 0.05);
    ASSERT_EQ(s.readable, 1);
    ASSERT(fd_open(p[0]));
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(detach_attached_pipe_restores_flags)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    rec x = {.tag = 1};
    em_conn *c = em_attach(r, p[0], &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT(fd_nonblock(p[0]));
    int fd = em_detach(c);
    ASSERT_EQ(fd, p[0]);
    ASSERT_EQ(x.unbinds, 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT_EQ(x.reason, 0);
    ASSERT(fd_open(fd));
    ASSERT(!fd_nonblock(fd));
    write_all(p[1], "abc", 3);
    run_for(r, 0.1);
    ASSERT_EQ(x.data_calls, 0); /* no longer polled */
    char buf[4];
    ASSERT_EQ(read(fd, buf, sizeof buf), 3);
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------- giving the descriptor back */

/* The fd is the user's again when em_detach returns: blocking as it was
 * found, at once, not in the close phase (where it would already be the
 * user's, maybe attached again). */
TEST(detach_restores_flags_before_returning)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    rec x = {.tag = 1};
    em_conn *c = em_attach(r, p[1], &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT(fd_nonblock(p[1]));
    ASSERT_EQ(em_detach(c), p[1]);
    ASSERT(!fd_nonblock(p[1]));
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(!fd_nonblock(p[1]));
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Detached and attached again in the same callback (or closed and attached
 * again): the second connection's fd must stay non-blocking, or the
 * reactor blocks in a write to a pipe nobody reads. */
struct reattach {
    em_conn *first, *second;
    int fd;
    bool detach; /* else close */
    rec second_rec;
};

static void reattach_now(em_reactor *r, void *arg)
{
    struct reattach *ra = arg;
    if (ra->detach)
        ASSERT_EQ(em_detach(ra->first), ra->fd);
    else
        ASSERT_EQ(em_close_connection(ra->first, false), 0);
    ra->second = em_attach(r, ra->fd, &rec_handler, &ra->second_rec);
    ASSERT_NOT_NULL(ra->second);
}

static void reattach_case(bool detach)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0); /* blocking, as a user's fd may be */
    rec x = {.tag = 1};
    struct reattach ra = {.fd = p[1], .detach = detach, .second_rec = {.tag = 2}};
    ra.first = em_attach(r, p[1], &rec_handler, &x);
    ASSERT_NOT_NULL(ra.first);
    ASSERT_EQ(em_next_tick(r, reattach_now, &ra), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(fd_nonblock(p[1]));
    static char big[1 << 20]; /* more than a pipe holds; nobody reads */
    ASSERT_EQ(em_send_data(ra.second, big, sizeof big), 0);
    double t0 = now_mono();
    run_for(r, 0.1); /* a blocking write would never return */
    ASSERT_DBL_LE(now_mono() - t0, 5.0);
    ASSERT_GT(em_get_outbound_data_size(ra.second), 0);
    ASSERT_EQ(close_conn(ra.second, false), 0);
    ASSERT(run_until(r, &ra.second_rec.unbinds, 5));
    ASSERT(!fd_nonblock(p[1]));
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(attach_again_after_detach_in_same_callback_stays_nonblocking) { reattach_case(true); }
TEST(attach_again_after_close_in_same_callback_stays_nonblocking) { reattach_case(false); }

/* A detached fd closed by its owner and the number reused: libem must not
 * touch the new descriptor's flags later. */
TEST(detach_then_number_reused_flags_untouched)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    rec x = {.tag = 1};
    em_conn *c = em_attach(r, p[0], &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    int fd = em_detach(c);
    ASSERT_EQ(fd, p[0]);
    close(fd);
    int q[2];
    ASSERT_EQ(pipe2(q, O_CLOEXEC | O_NONBLOCK), 0);
    ASSERT_EQ(q[0], fd); /* the lowest free number */
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(fd_nonblock(q[0]));
    close(q[0]);
    close(q[1]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* em_watch never changes the flags, so it restores none: a flag the user
 * changes while watching stays as the user set it. */
TEST(watch_leaves_flags_the_user_changed)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    rec x = {.tag = 1};
    em_conn *w = em_watch(r, p[0], &rec_handler, &x);
    ASSERT_NOT_NULL(w);
    ASSERT(!fd_nonblock(p[0]));
    ASSERT_EQ(fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK), 0);
    ASSERT_EQ(close_conn(w, false), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(fd_nonblock(p[0]));
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* em_attach gives back only what it changed: O_APPEND set by the user on
 * an attached fd survives the hand-back. */
TEST(attach_restores_only_nonblock)
{
    int fd0 = open_fd_count();
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/f", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    em_reactor *r = new_reactor();
    rec x = {.tag = 1};
    em_conn *c = em_attach(r, fd, &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_APPEND), 0);
    ASSERT_EQ(em_detach(c), fd);
    ASSERT(!fd_nonblock(fd));
    ASSERT(fcntl(fd, F_GETFL) & O_APPEND);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(fcntl(fd, F_GETFL) & O_APPEND);
    close(fd);
    rm_tmpdir(dir);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A forked child's em_reactor_free shares the open file with its parent:
 * clearing O_NONBLOCK there would make the parent block in a write. */
TEST(attach_forked_child_free_keeps_parent_flags)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    rec x = {.tag = 1};
    em_conn *c = em_attach(r, p[1], &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    free_in_forked_child(r);
    ASSERT(fd_nonblock(p[1]));
    static char big[1 << 20];
    ASSERT_EQ(em_send_data(c, big, sizeof big), 0);
    run_for(r, 0.1);
    ASSERT_GT(em_get_outbound_data_size(c), 0);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &x.unbinds, 5));
    ASSERT(!fd_nonblock(p[1]));
    close(p[0]);
    close(p[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* --------------------------------------- descriptors the reactor holds */

/* Any descriptor the reactor already holds is refused with EEXIST on every
 * backend: a server's listening socket, an accepted or outbound socket.
 * Once the server is stopped, its number is free to watch. */
TEST(watch_of_reactor_held_fds_is_eexist)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    int lfd = tcp_listen_raw("127.0.0.1", 4, NULL);
    em_server *s2 = em_attach_server(r, lfd, &rec_handler, &srv);
    ASSERT_NOT_NULL(s2);
    rec y = {.tag = 2};
    ASSERT_NULL_ERRNO(em_watch(r, lfd, &rec_handler, &y), EEXIST);
    ASSERT_NULL_ERRNO(em_attach(r, lfd, &rec_handler, &y), EEXIST);
    rec cl = {.tag = 3};
    em_conn *c = em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cl);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &cl.completed, 5));
    ASSERT_NULL_ERRNO(em_watch(r, em_conn_fd(c), &rec_handler, &y), EEXIST);
    ASSERT_EQ(y.post_inits, 0);
    ASSERT_EQ(em_stop_server(s2), 0); /* closes lfd */
    int again = tcp_listen_raw("127.0.0.1", 4, NULL);
    ASSERT_EQ(again, lfd);
    em_conn *w = em_watch(r, again, &rec_handler, &y);
    ASSERT_NOT_NULL(w);
    ASSERT_EQ(em_set_notify_readable(w, true), 0);
    run_for(r, 0.05); /* the stopped server's slot is gone, not reused */
    ASSERT_EQ(close_conn(w, false), 0);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &cl.unbinds, 5));
    ASSERT(run_until(r, &y.unbinds, 5));
    close(again);
    ASSERT_EQ(em_stop_server(s), 0);
    run_for(r, 0.05);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}
