/* io_uring sends of lent echoes: a short echo of bytes the kernel read
 * into a provided buffer is sent from that buffer, uncopied, at the end of
 * the flush phase; the buffer goes back to the kernel at the next wait.
 * What must hold: bytes that could outlive the phase unsent are copied
 * first, so that the reads that reuse the buffer never show through. The
 * reactor has one or two provided buffers (EM_URING_BUFFERS): the second
 * connection's traffic fills them again and again. The test drives the
 * reactor with em_run_once and writes and reads the clients itself. Cases
 * return early, after asserting why, where the kernel gives no ring. */
#include "harness.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct {
    em_conn *conns[2]; /* in the order accepted: A, then B */
    int accepted, reason;
    size_t a_pending; /* A's outbound bytes, seen from B's receive_data */
    size_t a_got;     /* bytes A received */
    bool pause_a;     /* B's next receive_data pauses A */
} S;

static void remember(em_conn *c)
{
    if (S.accepted < 2)
        S.conns[S.accepted++] = c;
}

static void echo(em_conn *c, const char *d, size_t n)
{
    ASSERT_EQ(em_send_data(c, d, n), 0);
    if (c == S.conns[0])
        S.a_got += n;
    if (c == S.conns[1] && S.pause_a) {
        S.pause_a = false;
        S.a_pending = em_get_outbound_data_size(S.conns[0]);
        ASSERT_EQ(em_pause(S.conns[0]), 0);
    }
}

static void note_reason(em_conn *c, int reason)
{
    (void)c;
    if (reason)
        S.reason = reason;
}

static const em_handler echo_h = {.post_init = remember, .receive_data = echo, .unbind = note_reason};

/* A reactor whose kernel reads and sends (whatever the environment asks),
 * with n provided buffers. */
static em_reactor *lending_reactor(const char *n)
{
    unsetenv("EM_URING_RECV");
    unsetenv("EM_URING_SEND");
    setenv("EM_URING_BUFFERS", n, 1);
    return new_uring_reactor();
}

/* Two clients of an echo server on r, accepted (A first) and reading. */
static em_server *two_clients(em_reactor *r, int fds[2])
{
    em_server *s = em_start_server(r, "127.0.0.1", 0, &echo_h, NULL);
    ASSERT_NOT_NULL(s);
    for (int i = 0; i < 2; i++) {
        fds[i] = tcp_connect_raw("127.0.0.1", em_server_port(s));
        double deadline = now_mono() + 5;
        while (S.accepted == i && now_mono() < deadline)
            ASSERT_GE(em_run_once(r, 0.01), 0);
        ASSERT_EQ(S.accepted, i + 1);
    }
    run_for(r, 0.02); /* their receives armed */
    return s;
}

/* Reads n bytes of fd, which must be the pattern from offset from. */
static void expect_pattern(em_reactor *r, int fd, size_t from, size_t n)
{
    char in[4096];
    set_nonblock(fd);
    double deadline = now_mono() + 10;
    while (n && now_mono() < deadline) {
        ssize_t m = recv(fd, in, n < sizeof in ? n : sizeof in, 0);
        if (m > 0) {
            for (ssize_t i = 0; i < m; i++)
                ASSERT_EQ((unsigned char)in[i], pattern_byte(from + (size_t)i));
            from += (size_t)m;
            n -= (size_t)m;
        }
        ASSERT_GE(em_run_once(r, 0.001), 0);
    }
    ASSERT_EQ(n, (size_t)0);
}

/* Through B, echoed and read back: enough to fill the buffers more than
 * once over, so that they are read into again from their start. */
static void churn(em_reactor *r, int b)
{
    char out[8192], in[8192];
    memset(out, 'x', sizeof out);
    for (int k = 0; k < 48; k++) {
        write_all(b, out, sizeof out);
        size_t got = 0;
        double deadline = now_mono() + 10;
        while (got < sizeof out && now_mono() < deadline) {
            ssize_t m = recv(b, in, sizeof in, MSG_DONTWAIT);
            if (m > 0)
                got += (size_t)m;
            ASSERT_GE(em_run_once(r, 0.001), 0);
        }
        ASSERT_EQ(got, sizeof out);
    }
}

/* A's client sends the pattern's next len bytes, from *sent on; the
 * reactor turns until A has received them. */
static void send_to_a(em_reactor *r, int a, size_t *sent, size_t len)
{
    char msg[4096];
    ASSERT_LE(len, sizeof msg);
    fill_pattern(msg, *sent, len);
    write_all(a, msg, len);
    *sent += len;
    double deadline = now_mono() + 5;
    while (S.a_got < *sent && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(S.a_got, *sent);
}

static void finish(em_reactor *r, em_server *s, int fds[2])
{
    close(fds[0]);
    close(fds[1]);
    double deadline = now_mono() + 5;
    while (em_connection_count(r) && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(S.reason, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
}

/* A's echo is listed, lent; B's receive_data, later in the same dispatch,
 * pauses A before the sends. A's bytes wait for the resume, copied: the
 * buffer they came in is read into again meanwhile. */
TEST(a_lent_echo_paused_before_its_send_is_kept)
{
    int fd0 = open_fd_count();
    /* two: where buffers are read whole, A's and B's reads need one each */
    em_reactor *r = lending_reactor("2");
    if (!r)
        return;
    int fds[2];
    em_server *s = two_clients(r, fds);
    char msg[3000];
    fill_pattern(msg, 0, sizeof msg);
    write_all(fds[0], msg, sizeof msg); /* A, then B: one wait gets both */
    S.pause_a = true;
    write_all(fds[1], "b", 1);
    double deadline = now_mono() + 5;
    while (S.pause_a && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.5), 0);
    ASSERT(!S.pause_a);
    ASSERT_EQ(S.a_pending, sizeof msg); /* listed, not sent, when paused */
    char b;
    ASSERT_EQ(read(fds[1], &b, 1), 1);
    churn(r, fds[1]);
    ASSERT_EQ(em_resume(S.conns[0]), 0);
    expect_pattern(r, fds[0], 0, sizeof msg);
    finish(r, s, fds);
    ASSERT_NO_FD_LEAK(fd0);
}

/* A's client does not read: its echoes fill the socket until one goes
 * out short (or not at all), its queue empty before it, so lent; the next
 * finds the socket full. What is left of them is copied before the buffer
 * goes back; A's client then reads every byte as sent. */
TEST(what_a_short_send_leaves_of_a_lent_echo_is_kept)
{
    int fd0 = open_fd_count();
    em_reactor *r = lending_reactor("1");
    if (!r)
        return;
    int fds[2];
    em_server *s = two_clients(r, fds);
    int small = 4096;
    ASSERT_EQ(em_set_sock_opt(S.conns[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    ASSERT_EQ(setsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    size_t sent = 0;
    while (!em_get_outbound_data_size(S.conns[0]) && sent < (4u << 20))
        send_to_a(r, fds[0], &sent, 4000);
    size_t pending = em_get_outbound_data_size(S.conns[0]);
    ASSERT_GT(pending, (size_t)0);
    /* one more behind it: lent, though not a span, as it goes to the ring
     * with the rest (and finds the socket full) */
    send_to_a(r, fds[0], &sent, 4000);
    ASSERT_EQ(em_get_outbound_data_size(S.conns[0]), pending + 4000);
    churn(r, fds[1]);
    expect_pattern(r, fds[0], 0, sent);
    finish(r, s, fds);
    ASSERT_NO_FD_LEAK(fd0);
}
TEST_TIMEOUT(what_a_short_send_leaves_of_a_lent_echo_is_kept, 30);
