/* io_uring reads for plain stream connections: the bytes come with the
 * completion, from buffers the reactor shares. What must hold: no read
 * call of libem's own, bytes read ahead of a pause or a detach kept and
 * delivered in order, and a ring of buffers run dry (ENOBUFS) costing a
 * re-arm, never bytes. Cases return early, after asserting why, where the
 * kernel gives no ring; the rest of the suite runs on io_uring besides. */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct {
    char *got;
    size_t len, cap;
    int unbinds, reason;
    int calls_while_paused, pauses;
    em_conn *conn;
} S;

static void keep(const char *d, size_t n)
{
    if (S.len + n > S.cap) {
        S.cap = (S.len + n) * 2;
        S.got = realloc(S.got, S.cap);
        ASSERT_NOT_NULL(S.got);
    }
    memcpy(S.got + S.len, d, n);
    S.len += n;
}

static void on_unbind(em_conn *c, int reason)
{
    (void)c;
    S.unbinds++;
    S.reason = reason;
}

static void echo(em_conn *c, const char *d, size_t n) { em_send_data(c, d, n); }

static const em_handler echo_h = {.receive_data = echo, .unbind = on_unbind};

static void pattern(char *buf, size_t n, size_t from)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)((from + i) * 131 % 251);
}

/* Echoes of n bytes in pieces of k from fd, each piece's echo awaited
 * before the next: whether all came back intact. */
static bool echoes(em_reactor *r, int fd, size_t n, size_t k)
{
    char out[4096], in[4096];
    for (size_t done = 0; done < n; done += k) {
        pattern(out, k, done);
        write_all(fd, out, k);
        size_t got = 0;
        double deadline = now_mono() + 5;
        while (got < k && now_mono() < deadline && !S.unbinds) {
            ASSERT_GE(em_run_once(r, 0.001), 0);
            ssize_t m = recv(fd, in + got, k - got, MSG_DONTWAIT);
            if (m > 0)
                got += (size_t)m;
        }
        if (got < k || memcmp(in, out, k))
            return false;
    }
    return true;
}

/* With read(2) refused, a connection reading for itself fails at its
 * first bytes; one the ring reads for echoes. $EM_URING_RECV=0 turns the
 * ring's reads off: the connection then reads, and fails here. */
/* mode: $EM_URING_RECV, or NULL for the default */
static void echo_without_read_calls(const char *mode)
{
    bool ring_reads = !mode || strcmp(mode, "0");
    if (mode)
        setenv("EM_URING_RECV", mode, 1);
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    em_server *s = em_start_server(r, "127.0.0.1", 0, &echo_h, NULL);
    ASSERT_NOT_NULL(s);
    int fd = tcp_connect_raw("127.0.0.1", em_server_port(s));
    refuse_syscall(__NR_read, EPERM);
    bool ok = echoes(r, fd, 64 * 1024, 1000);
    close(fd);
    ASSERT(run_until(r, &S.unbinds, 5));
    if (ring_reads) {
        ASSERT(ok);
        ASSERT_EQ(S.reason, 0);
    } else {
        ASSERT(!ok);
        ASSERT_EQ(S.reason, EPERM);
    }
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
}

TEST(ring_reads_need_no_read_call) { echo_without_read_calls(NULL); }

/* What a kernel that cannot cap a multishot receive gets: a receive per read. */
TEST(one_shot_ring_reads_need_no_read_call) { echo_without_read_calls("single"); }

TEST(ring_reads_turned_off_read_for_themselves) { echo_without_read_calls("0"); }

/* ------------------------------------------------------------- pause */

static void resume_later(em_reactor *r, void *arg)
{
    (void)r;
    em_resume(arg);
}

static void pause_each_time(em_conn *c, const char *d, size_t n)
{
    if (em_is_paused(c))
        S.calls_while_paused++;
    keep(d, n);
    em_pause(c);
    S.pauses++;
    ASSERT_NE(em_add_timer(em_conn_reactor(c), 0.0005, resume_later, c), 0);
}

static const em_handler pausing_h = {.receive_data = pause_each_time, .unbind = on_unbind};

static void keep_all(em_conn *c, const char *d, size_t n)
{
    (void)c;
    keep(d, n);
}

/* Small writes arrive as many completions; each delivery pauses the
 * connection, so those that follow in the same turn, or are already in
 * the ring, are read ahead of a pause: they must wait and come after, in
 * order, once it resumes. */
static void pauses_keep_order(void)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    em_server *s = em_start_server(r, "127.0.0.1", 0, &pausing_h, NULL);
    ASSERT_NOT_NULL(s);
    int fd = tcp_connect_raw("127.0.0.1", em_server_port(s));
    const size_t total = 512 * 1024, piece = 700;
    char *sent = malloc(total);
    ASSERT_NOT_NULL(sent);
    pattern(sent, total, 0);
    for (size_t off = 0; off < total; off += piece) {
        write_all(fd, sent + off, off + piece < total ? piece : total - off);
        ASSERT_GE(em_run_once(r, 0), 0);
    }
    double deadline = now_mono() + 10;
    while (S.len < total && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.001), 0);
    ASSERT_EQ(S.len, total);
    ASSERT(!memcmp(S.got, sent, total));
    ASSERT_EQ(S.calls_while_paused, 0);
    ASSERT_GT(S.pauses, 1);
    close(fd);
    ASSERT(run_until(r, &S.unbinds, 5));
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    free(sent);
    free(S.got);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(pause_keeps_what_was_read_ahead_in_order) { pauses_keep_order(); }

TEST(pause_keeps_what_one_shot_receives_read_ahead_in_order)
{
    setenv("EM_URING_RECV", "single", 1);
    pauses_keep_order();
}

/* A writer on another thread keeps the socket full while the connection
 * is paused at its first bytes, the socket full when the turn that
 * delivers them began. What the ring read for it before the pause
 * waits in memory: no more than one receive's cap (256 KiB), or a paused
 * connection would hold up to all the buffers (megabytes). It is what the
 * writer wrote less what was delivered and what is still in the socket. */
static struct {
    int fd;
    atomic_size_t written;
    atomic_bool stop;
} W;

static void *write_on(void *arg)
{
    (void)arg;
    static char buf[16384];
    for (size_t off = 0; !atomic_load(&W.stop);) {
        pattern(buf, sizeof buf, off);
        ssize_t k = write(W.fd, buf, sizeof buf);
        if (k < 0 && errno != EINTR)
            break;
        if (k > 0) { /* whole pieces: the next one's pattern starts where it ends */
            ASSERT_EQ((size_t)k, sizeof buf);
            off += sizeof buf;
            atomic_fetch_add(&W.written, sizeof buf);
        }
    }
    shutdown(W.fd, SHUT_WR);
    return NULL;
}

static void pause_at_first(em_conn *c, const char *d, size_t n)
{
    if (em_is_paused(c))
        S.calls_while_paused++;
    char want[65536];
    for (size_t done = 0; done < n; done += sizeof want) {
        size_t k = n - done < sizeof want ? n - done : sizeof want;
        pattern(want, k, S.len + done);
        ASSERT(!memcmp(d + done, want, k));
    }
    S.len += n;
    if (!S.pauses++)
        em_pause(c);
}

static const em_handler pause_first_h = {.receive_data = pause_at_first, .unbind = on_unbind};

static size_t written_when_still(em_reactor *r)
{
    size_t last = atomic_load(&W.written);
    double still_since = now_mono(), deadline = still_since + 10;
    while (now_mono() - still_since < 0.3 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.005), 0);
        size_t now = atomic_load(&W.written);
        if (now != last) {
            last = now;
            still_since = now_mono();
        }
    }
    return last;
}

TEST(a_paused_connection_was_read_ahead_by_one_cap_at_most)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int size = 1 << 20; /* as much as the system lets the writer have in the socket */
    ASSERT_EQ(setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size), 0);
    em_conn *c = em_attach(r, sv[0], &pause_first_h, NULL);
    ASSERT_NOT_NULL(c);
    W.fd = sv[1];
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, write_on, NULL), 0);
    usleep(100 * 1000); /* the socket full before the first receive */
    double deadline = now_mono() + 10;
    while (!S.pauses && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.001), 0);
    ASSERT(em_is_paused(c));
    size_t delivered = S.len, written = written_when_still(r);
    ASSERT_EQ(S.len, delivered);
    int in_socket = -1;
    ASSERT_EQ(ioctl(sv[0], SIOCINQ, &in_socket), 0);
    ASSERT_LE(written - delivered - (size_t)in_socket, (size_t)256 * 1024);
    atomic_store(&W.stop, true);
    em_resume(c);
    ASSERT(run_until(r, &S.unbinds, 10)); /* the writer's FIN */
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(S.len, atomic_load(&W.written));
    ASSERT_EQ(S.calls_while_paused, 0);
    close(sv[0]); /* an attached descriptor is its owner's again */
    close(sv[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------------ detach */

static int detached_fd = -1;

static void detach_at_second(em_conn *c, const char *d, size_t n)
{
    keep(d, n);
    if (S.len >= 2 && detached_fd < 0)
        detached_fd = em_detach(c);
}

static const em_handler detaching_h = {.receive_data = detach_at_second, .unbind = on_unbind};

/* The ring read on after the detach was asked: those bytes reach
 * receive_data before unbind, and the descriptor handed back has the rest.
 * Together they are the stream, nothing lost or doubled. */
TEST(detach_hands_back_every_byte_once)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    em_server *s = em_start_server(r, "127.0.0.1", 0, &detaching_h, NULL);
    ASSERT_NOT_NULL(s);
    int fd = tcp_connect_raw("127.0.0.1", em_server_port(s));
    char sent[64];
    pattern(sent, sizeof sent, 7);
    write_all(fd, sent, 1); /* delivered, no detach yet */
    double deadline = now_mono() + 5;
    while (S.len < 1 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.001), 0);
    for (int i = 1; i < 40; i++) { /* separate arrivals: separate completions */
        write_all(fd, sent + i, 1);
        usleep(200);
    }
    ASSERT(run_until(r, &S.unbinds, 5));
    ASSERT_GE(detached_fd, 0);
    write_all(fd, sent + 40, sizeof sent - 40);
    char rest[64];
    size_t got = 0;
    while (S.len + got < sizeof sent && now_mono() < deadline) {
        ssize_t m = recv(detached_fd, rest + got, sizeof rest - got, MSG_DONTWAIT);
        if (m > 0)
            got += (size_t)m;
        else
            usleep(1000);
    }
    ASSERT_EQ(S.len + got, sizeof sent);
    ASSERT(!memcmp(S.got, sent, S.len));
    ASSERT(!memcmp(rest, sent + S.len, got));
    close(detached_fd);
    close(fd);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    free(S.got);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ----------------------------------------------------------- ENOBUFS */

#define CLIENTS 24
#define EACH (48 * 1024)

/* One buffer for the whole reactor: a burst from many connections runs the
 * ring dry in every turn. A receive that finds no buffer ends (ENOBUFS)
 * and is armed again, the bytes still in the socket: every echo completes,
 * byte for byte. */
TEST(one_buffer_for_a_burst_loses_nothing)
{
    int fd0 = open_fd_count();
    setenv("EM_URING_BUFFERS", "1", 1);
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    em_server *s = em_start_server(r, "127.0.0.1", 0, &echo_h, NULL);
    ASSERT_NOT_NULL(s);
    int fds[CLIENTS];
    char *out = malloc(EACH), *in = malloc(EACH);
    ASSERT(out && in);
    size_t got[CLIENTS] = {0};
    for (int i = 0; i < CLIENTS; i++) {
        fds[i] = tcp_connect_raw("127.0.0.1", em_server_port(s));
        set_nonblock(fds[i]);
    }
    pattern(out, EACH, 0);
    size_t put[CLIENTS] = {0};
    double deadline = now_mono() + 20;
    for (bool done = false; !done && now_mono() < deadline;) {
        done = true;
        for (int i = 0; i < CLIENTS; i++) {
            if (put[i] < EACH) {
                ssize_t m = send(fds[i], out + put[i], EACH - put[i], MSG_NOSIGNAL);
                if (m > 0)
                    put[i] += (size_t)m;
            }
            ssize_t m = recv(fds[i], in, EACH, MSG_DONTWAIT);
            if (m > 0) {
                ASSERT(!memcmp(in, out + got[i], (size_t)m));
                got[i] += (size_t)m;
            }
            done = done && got[i] == EACH;
        }
        ASSERT_GE(em_run_once(r, 0.001), 0);
    }
    for (int i = 0; i < CLIENTS; i++) {
        ASSERT_EQ(got[i], (size_t)EACH);
        close(fds[i]);
    }
    deadline = now_mono() + 5;
    while (em_connection_count(r) && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(S.reason, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    free(out);
    free(in);
    ASSERT_NO_FD_LEAK(fd0);
}


/* ------------------------------------------- a ring full of completions */

#define MANY 600
#define ROUNDS 40
#define PIECE 1000

static struct {
    em_reactor *r;
    em_conn *c[MANY];
    size_t got[MANY];
    int bad, peer[MANY], own[MANY];
    unsigned seed;
} M;

static unsigned rnd(void)
{
    M.seed = M.seed * 1103515245 + 12345;
    return M.seed >> 8;
}

static void resume_cb(em_reactor *r, void *arg)
{
    (void)r;
    em_resume(arg);
}

static void check_and_pause_some(em_conn *c, const char *d, size_t n)
{
    int i = (int)(intptr_t)em_conn_arg(c);
    char want[65536];
    pattern(want, n, M.got[i] + (size_t)i);
    M.bad += memcmp(want, d, n) != 0;
    M.got[i] += n;
    em_conn *other = M.c[rnd() % MANY];
    if (rnd() % 50 == 0 && !em_is_paused(other)) {
        em_pause(other);
        ASSERT_NE(em_add_timer(M.r, 0.002, resume_cb, other), 0);
    }
}

static const em_handler checking_h = {.receive_data = check_and_pause_some};

/* Hundreds of busy connections: a turn takes 256 completions, so they
 * pile up in the ring, and past its size in the kernel's overflow list.
 * Connections paused meanwhile must still get every byte read for them,
 * from wherever it waits, in order. */
TEST(pauses_with_the_ring_overflowing_lose_nothing)
{
    if (raise_nofile() < 2 * MANY + 64)
        FAIL("needs %d descriptors", 2 * MANY + 64);
    int fd0 = open_fd_count();
    setenv("EM_URING_BUFFERS", "512", 1); /* room in buffers for more than the ring holds */
    M.r = new_uring_reactor();
    if (!M.r)
        return;
    M.seed = 7;
    for (int i = 0; i < MANY; i++) {
        int sv[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        M.peer[i] = sv[1];
        M.own[i] = sv[0];
        int size = 1 << 20;
        setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        M.c[i] = em_attach(M.r, sv[0], &checking_h, (void *)(intptr_t)i);
        ASSERT_NOT_NULL(M.c[i]);
    }
    char buf[PIECE];
    for (int k = 0; k < ROUNDS; k++) {
        for (int i = 0; i < MANY; i++) {
            pattern(buf, PIECE, (size_t)k * PIECE + (size_t)i);
            write_all(M.peer[i], buf, PIECE);
        }
        ASSERT_GE(em_run_once(M.r, 0), 0);
    }
    double deadline = now_mono() + 10;
    size_t total = 0;
    while (total < (size_t)MANY * ROUNDS * PIECE && now_mono() < deadline) {
        ASSERT_GE(em_run_once(M.r, 0.001), 0);
        total = 0;
        for (int i = 0; i < MANY; i++)
            total += M.got[i];
    }
    ASSERT_EQ(total, (size_t)MANY * ROUNDS * PIECE);
    ASSERT_EQ(M.bad, 0);
    for (int i = 0; i < MANY; i++) {
        em_close_connection(M.c[i], false);
        close(M.peer[i]);
    }
    while (em_connection_count(M.r) && now_mono() < deadline + 5)
        ASSERT_GE(em_run_once(M.r, 0.001), 0);
    while (em_timer_count(M.r) && now_mono() < deadline + 5)
        ASSERT_GE(em_run_once(M.r, 0.001), 0);
    REACTOR_FREE_CHECKED(M.r);
    for (int i = 0; i < MANY; i++)
        close(M.own[i]); /* attached: the test's to close */
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------- closing, reconnecting */

static size_t handed_got;

static void close_at_first(em_conn *c, const char *d, size_t n)
{
    (void)d;
    handed_got += n;
    em_close_connection(c, false);
}

static const em_handler closing_h = {.receive_data = close_at_first, .unbind = on_unbind};

/* An attached socket is its owner's again once closed: what the ring had
 * read of it by then reaches receive_data before unbind, and the rest is
 * still in the socket. */
TEST(attached_socket_closed_keeps_every_byte)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int size = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    ASSERT_NOT_NULL(em_attach(r, sv[0], &closing_h, NULL));
    ASSERT_GE(em_run_once(r, 0), 0);
    static char m[200000];
    memset(m, 'x', sizeof m);
    write_all(sv[1], m, sizeof m);
    ASSERT(run_until(r, &S.unbinds, 5));
    set_nonblock(sv[0]);
    size_t rest = 0;
    ssize_t k;
    char b[65536];
    while ((k = recv(sv[0], b, sizeof b, 0)) > 0)
        rest += (size_t)k;
    ASSERT_EQ(handed_got + rest, sizeof m);
    close(sv[0]);
    close(sv[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

static int listen_port;
static size_t second_got;
static char second_first[8];

static void pause_and_close(em_conn *c, const char *d, size_t n)
{
    if (S.unbinds == 0) {
        em_pause(c);
        em_close_connection(c, false);
        return;
    }
    if (second_got < sizeof second_first)
        memcpy(second_first + second_got, d,
               n < sizeof second_first - second_got ? n : sizeof second_first - second_got);
    second_got += n;
}

static void reconnect_once(em_conn *c, int reason)
{
    (void)reason;
    if (S.unbinds++ == 0)
        ASSERT_EQ(em_reconnect(c, "127.0.0.1", listen_port), 0);
}

static const em_handler reconnecting_h = {.receive_data = pause_and_close,
                                          .unbind = reconnect_once};

/* Bytes read ahead of a paused connection that then closes are dropped:
 * an em_reconnect from its unbind reads the new socket's bytes only. */
TEST(reconnect_after_a_paused_close_starts_clean)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    int ls = tcp_listen_raw("127.0.0.1", 4, &listen_port);
    em_conn *c = em_connect(r, "127.0.0.1", listen_port, &reconnecting_h, NULL);
    ASSERT_NOT_NULL(c);
    int a = -1;
    double deadline = now_mono() + 5;
    while (a < 0 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.005), 0);
        a = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
    ASSERT_GE(a, 0);
    static char old[300000];
    memset(old, 'O', sizeof old);
    set_nonblock(a);
    size_t put = 0;
    while (put < sizeof old && now_mono() < deadline && S.unbinds == 0) {
        ssize_t m = send(a, old + put, sizeof old - put, MSG_NOSIGNAL);
        if (m > 0)
            put += (size_t)m;
        ASSERT_GE(em_run_once(r, 0.001), 0);
    }
    int b = -1;
    while (b < 0 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.005), 0);
        b = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    }
    ASSERT_GE(b, 0);
    write_all(b, "NEWDATA!", 8);
    while (second_got < 8 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.005), 0);
    ASSERT_EQ(second_got, 8u);
    ASSERT(!memcmp(second_first, "NEWDATA!", 8));
    close(b);
    while (em_connection_count(r) && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.005), 0);
    close(a);
    close(ls);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------ kinds of socket */

static size_t lens[8], nlens;

static void note_length(em_conn *c, const char *d, size_t n)
{
    (void)c;
    (void)d;
    if (nlens < 8)
        lens[nlens] = n;
    nlens++;
}

static const em_handler lengths_h = {.receive_data = note_length};

/* A socket of messages reads for itself: a message in a buffer's leftover
 * room would be cut. Each comes whole, one receive_data call each. */
TEST(attached_seqpacket_gets_whole_messages)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    int size = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    em_conn *c = em_attach(r, sv[0], &lengths_h, NULL);
    ASSERT_NOT_NULL(c);
    static char m[40000];
    memset(m, 'x', sizeof m);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(send(sv[1], m, sizeof m, 0), (ssize_t)sizeof m);
    double deadline = now_mono() + 5;
    while (nlens < 4 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.005), 0);
    ASSERT_EQ(nlens, 4u);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(lens[i], sizeof m);
    em_close_connection(c, false);
    ASSERT_GE(em_run_once(r, 0), 0);
    close(sv[0]);
    close(sv[1]);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------------ threads */

static void *five_turns(void *arg)
{
    for (int i = 0; i < 5; i++)
        em_run_once(arg, 0.005);
    return NULL;
}

/* Without SINGLE_ISSUER the requests a thread submitted are cancelled by
 * the kernel when it exits: the reactor, run on after it, arms them again. */
TEST(requests_of_a_thread_gone_are_armed_again)
{
    int fd0 = open_fd_count();
    setenv("EM_URING_DEFER", "0", 1);
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    S.len = 0;
    em_conn *c = em_attach(r, sv[0], &(em_handler){.receive_data = keep_all}, NULL);
    ASSERT_NOT_NULL(c);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, five_turns, r), 0);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    write_all(sv[1], "hello", 5);
    double deadline = now_mono() + 5;
    while (S.len < 5 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.005), 0);
    ASSERT_EQ(S.len, 5u);
    em_close_connection(c, false);
    ASSERT_GE(em_run_once(r, 0), 0);
    close(sv[0]);
    close(sv[1]);
    REACTOR_FREE_CHECKED(r);
    free(S.got);
    ASSERT_NO_FD_LEAK(fd0);
}
