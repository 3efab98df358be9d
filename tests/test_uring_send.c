/* io_uring sends: the queues a turn's flush writes go to the kernel
 * together, and no send call of libem's own writes them. What must hold:
 * every byte once and in order, through full sockets (a send that takes
 * part, or -EAGAIN), pauses, a close after writing, a close in a later
 * callback, and a ring made again for the thread that runs the reactor.
 * The peer is a thread of the test; the reactor runs under em_run in a
 * thread whose system calls a seccomp filter can refuse. Cases return
 * early, after asserting why, where the kernel gives no ring. */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct {
    int unbinds, reason, pauses;
    em_conn *conn;
} S;

static void stop_on_unbind(em_conn *c, int reason)
{
    S.unbinds++;
    S.reason = reason;
    em_stop(em_conn_reactor(c));
}

/* ----------------------------------------------------------- the peer */

typedef struct peer {
    int fd;
    size_t len;     /* bytes to send (echo) or to expect */
    size_t piece;   /* echo: sent, then awaited back, a piece at a time */
    int read_pause_us; /* between reads: a slow reader fills the socket */
    int start_pause_us; /* before the first read */
    atomic_bool ok;
    size_t got;
} peer;

static bool read_back(int fd, size_t from, size_t n)
{
    char in[65536];
    size_t got = 0;
    while (got < n) {
        size_t want = n - got < sizeof in ? n - got : sizeof in;
        ssize_t m = read(fd, in, want);
        if (m <= 0)
            return false;
        for (ssize_t i = 0; i < m; i++)
            if ((unsigned char)in[i] != pattern_byte(from + got + (size_t)i))
                return false;
        got += (size_t)m;
    }
    return true;
}

static void *echo_peer(void *arg)
{
    peer *p = arg;
    char out[65536];
    bool ok = true;
    for (size_t done = 0; ok && done < p->len; done += p->piece) {
        for (size_t i = 0; i < p->piece; i++)
            out[i] = (char)pattern_byte(done + i);
        write_all(p->fd, out, p->piece);
        ok = read_back(p->fd, done, p->piece);
    }
    atomic_store(&p->ok, ok);
    close(p->fd);
    return NULL;
}

/* Reads p->len bytes of the pattern, then expects the FIN. */
static void *slow_reader(void *arg)
{
    peer *p = arg;
    char in[4096];
    bool ok = true;
    if (p->start_pause_us)
        usleep((useconds_t)p->start_pause_us);
    while (ok) {
        if (p->read_pause_us)
            usleep((useconds_t)p->read_pause_us);
        ssize_t m = read(p->fd, in, sizeof in);
        if (m <= 0)
            break;
        for (ssize_t i = 0; ok && i < m; i++)
            ok = (unsigned char)in[i] == pattern_byte(p->got + (size_t)i);
        p->got += (size_t)m;
    }
    atomic_store(&p->ok, ok && p->got == p->len);
    close(p->fd);
    return NULL;
}

/* send(2) and sendmsg(2) fail with EPERM in this thread from now on. */
static void refuse_sends(void)
{
    refuse_syscall(__NR_sendto, EPERM);
    refuse_syscall(__NR_sendmsg, EPERM);
}

/* r under em_run, with sends refused in this thread, p read by a
 * slow_reader thread: whether it got every byte in order. own_fd: an
 * attached descriptor to close when em_run returns (-1: none). */
static bool run_with_reader(em_reactor *r, peer *p, int own_fd)
{
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, slow_reader, p), 0);
    refuse_sends();
    ASSERT_EQ(em_run(r), 0);
    if (own_fd >= 0)
        close(own_fd);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    return atomic_load(&p->ok);
}

/* A server with handler h on r, and a client connected to it. */
static int client_of_new_server(em_reactor *r, const em_handler *h)
{
    em_server *s = em_start_server(r, "127.0.0.1", 0, h, NULL);
    ASSERT_NOT_NULL(s);
    return tcp_connect_raw("127.0.0.1", em_server_port(s));
}

/* ------------------------------------------------------------- echoes */

static void echo(em_conn *c, const char *d, size_t n) { em_send_data(c, d, n); }

static const em_handler echo_h = {.receive_data = echo, .unbind = stop_on_unbind};

static void resume_it(em_reactor *r, void *arg)
{
    (void)r;
    em_resume(arg);
}

/* Pauses after every other echo, its bytes queued and not yet sent, and
 * resumes at the next tick. */
static void echo_and_pause(em_conn *c, const char *d, size_t n)
{
    em_send_data(c, d, n);
    if (S.pauses++ % 2 == 0) {
        ASSERT_EQ(em_pause(c), 0);
        ASSERT_EQ(em_next_tick(em_conn_reactor(c), resume_it, c), 0);
    }
}

static const em_handler pausing_h = {.receive_data = echo_and_pause, .unbind = stop_on_unbind};

/* An echo server under em_run with a peer thread: whether every piece
 * came back intact. refuse: send(2), sendmsg(2) and writev(2) fail with
 * EPERM in the reactor's thread. */
static bool run_echo(const em_handler *h, size_t len, size_t piece, bool refuse)
{
    em_reactor *r = new_uring_reactor();
    if (!r)
        return true;
    peer p = {.fd = client_of_new_server(r, h), .len = len, .piece = piece};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, echo_peer, &p), 0);
    if (refuse) { /* the peer's thread keeps its own calls */
        refuse_sends();
        refuse_syscall(__NR_writev, EPERM);
    }
    ASSERT_EQ(em_run(r), 0);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(S.unbinds, 1);
    REACTOR_FREE_CHECKED(r);
    if (atomic_load(&p.ok))
        ASSERT_EQ(S.reason, 0);
    return atomic_load(&p.ok);
}

/* Send calls refused: the echo comes back all the same, the ring sent it. */
TEST(ring_sends_need_no_send_call) { ASSERT(run_echo(&echo_h, 1 << 20, 1000, true)); }

/* The same with the ring's sends turned off: the connection's own send
 * is refused, and the echo never comes back. */
TEST(ring_sends_turned_off_send_for_themselves)
{
    setenv("EM_URING_SEND", "0", 1);
    ASSERT(!run_echo(&echo_h, 1000, 1000, true));
    ASSERT_EQ(S.reason, EPERM);
}

/* Large pieces: a send takes several buffers, and may take part of them. */
TEST(ring_sends_echo_large_pieces_byte_exact) { ASSERT(run_echo(&echo_h, 8 << 20, 65536, false)); }

/* A pause with bytes queued for a send, and a resume: order and every
 * byte kept. */
TEST(ring_sends_survive_pause_and_resume) { ASSERT(run_echo(&pausing_h, 1 << 20, 3000, false)); }

/* ------------------------------------------------- a full socket, closing */

#define BIG (2u << 20)

static void send_big_and_close(em_conn *c)
{
    char *buf = malloc(BIG);
    ASSERT_NOT_NULL(buf);
    for (size_t i = 0; i < BIG; i++)
        buf[i] = (char)pattern_byte(i);
    int small = 16 * 1024;
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    for (size_t off = 0; off < BIG; off += 100000)
        ASSERT_EQ(em_send_data(c, buf + off, BIG - off < 100000 ? BIG - off : 100000), 0);
    free(buf);
    ASSERT_EQ(em_close_connection_after_writing(c), 0);
}

static int drained;

static void count_drained(em_conn *c)
{
    (void)c;
    drained++;
}

static const em_handler big_h = {
    .post_init = send_big_and_close, .outbound_drained = count_drained, .unbind = stop_on_unbind};

/* A slow reader: sends take part of the queue or find the socket full, the
 * connection waits to be writable, and the close waits for the last byte.
 * Sends stay refused throughout. */
TEST(ring_sends_through_a_full_socket_then_close_after_writing)
{
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    peer p = {.fd = client_of_new_server(r, &big_h), .len = BIG, .read_pause_us = 20};
    ASSERT(run_with_reader(r, &p, -1));
    ASSERT_EQ(S.reason, 0);
    ASSERT_GT(drained, 0); /* a write had to wait */
    REACTOR_FREE_CHECKED(r);
}
TEST_TIMEOUT(ring_sends_through_a_full_socket_then_close_after_writing, 60);

/* ------------------------------------------- a ring made again (EEXIST) */

static void send_on_tick(em_reactor *r, void *arg)
{
    (void)r;
    em_conn *c = arg;
    char buf[50000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)pattern_byte(i);
    ASSERT_EQ(em_send_data(c, buf, sizeof buf), 0);
    ASSERT_EQ(em_close_connection_after_writing(c), 0);
}

static const em_handler quiet_h = {.unbind = stop_on_unbind};

/* Sends refused in this thread: what reaches the peer went by the ring. */
static void *run_reactor(void *arg)
{
    refuse_sends();
    ASSERT_EQ(em_run(arg), 0);
    return NULL;
}

/* The ring was entered by the thread that made the reactor; em_run on
 * another thread finds its first submission refused and makes a ring of
 * its own. The send queued for that submission goes on the new ring: the
 * peer gets its bytes once, then the FIN. */
TEST(a_send_queued_on_a_ring_made_again_is_sent_once)
{
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    int port, lfd = tcp_listen_raw("127.0.0.1", 1, &port);
    em_conn *c = em_connect(r, "127.0.0.1", port, &quiet_h, NULL);
    ASSERT_NOT_NULL(c);
    int fd = accept(lfd, NULL, NULL);
    ASSERT_GE(fd, 0);
    run_for(r, 0.05); /* this thread enters the ring */
    ASSERT_EQ(em_next_tick(r, send_on_tick, c), 0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, run_reactor, r), 0);
    peer p = {.fd = fd, .len = 50000};
    slow_reader(&p);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT(atomic_load(&p.ok));
    ASSERT_EQ(S.reason, 0);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
}



/* ------------------------------------------- a close in a later callback */

static void close_now(em_reactor *r, void *arg)
{
    (void)r;
    ASSERT_EQ(em_close_connection(arg, false), 0);
}

/* A reply, then an immediate close at the next tick: the reply went with
 * the turn that queued it, as a send() would have, and reaches the peer
 * before the FIN. */
static void reply_then_close_at_tick(em_conn *c, const char *d, size_t n)
{
    (void)d;
    (void)n;
    char buf[3000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)pattern_byte(i);
    ASSERT_EQ(em_send_data(c, buf, sizeof buf), 0);
    ASSERT_EQ(em_next_tick(em_conn_reactor(c), close_now, c), 0);
}

static const em_handler reply_h = {.receive_data = reply_then_close_at_tick,
                                   .unbind = stop_on_unbind};

TEST(a_reply_is_sent_before_a_close_at_the_next_tick)
{
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    peer p = {.fd = client_of_new_server(r, &reply_h), .len = 3000};
    write_all(p.fd, "?", 1);
    ASSERT(run_with_reader(r, &p, -1));
    ASSERT_EQ(S.reason, 0);
    REACTOR_FREE_CHECKED(r);
}

/* ------------------------------------- a send that finds the socket full */

/* One byte a millisecond on a unix socket its peer does not read for a
 * while: each byte is a send of its own, whole or refused (-EAGAIN), never
 * partial, until the socket is full. The connection must then wait to be
 * writable (and hear outbound_drained after), not send again at once. */
static struct {
    em_conn *conn;
    em_timer_id timer;
    int sent;
} T;

static void one_byte(em_reactor *r, void *arg)
{
    (void)arg;
    if (T.sent == 2000) {
        em_cancel_timer(r, T.timer);
        ASSERT_EQ(em_close_connection_after_writing(T.conn), 0);
        return;
    }
    char b = (char)pattern_byte((size_t)T.sent++);
    ASSERT_EQ(em_send_data(T.conn, &b, 1), 0);
}

static const em_handler bytes_h = {.outbound_drained = count_drained, .unbind = stop_on_unbind};

TEST(a_send_refused_by_a_full_socket_waits_for_writability)
{
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    ASSERT_EQ(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    T.conn = em_attach(r, sv[0], &bytes_h, NULL);
    ASSERT_NOT_NULL(T.conn);
    T.timer = em_add_periodic_timer(r, 0.001, one_byte, NULL);
    peer p = {.fd = sv[1], .len = 2000, .start_pause_us = 300000};
    ASSERT(run_with_reader(r, &p, sv[0])); /* attached: sv[0] is still the test's */
    ASSERT_EQ(S.reason, 0);
    ASSERT_GT(drained, 0); /* it waited: the socket was full */
    REACTOR_FREE_CHECKED(r);
}
TEST_TIMEOUT(a_send_refused_by_a_full_socket_waits_for_writability, 30);
