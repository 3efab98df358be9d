/* UDP: em_open_datagram_socket, em_send_datagram, replies with em_send_data,
 * over 127.0.0.1 and ::1. */
#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static int addr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static bool addr_is(const struct sockaddr_storage *ss, const char *ip)
{
    char buf[INET6_ADDRSTRLEN];
    const void *a = ss->ss_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    if (!inet_ntop(ss->ss_family, a, buf, sizeof buf))
        return false;
    return strcmp(buf, ip) == 0;
}

static int conn_port(em_conn *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ASSERT_EQ(em_get_sockname(c, &ss, &len), 0);
    return addr_port(&ss);
}

static void fill_addr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        ASSERT_EQ(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
        *len = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        ASSERT_EQ(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
        *len = sizeof *s4;
    }
}

/* A raw UDP socket bound to ip:0 (non-blocking); *port gets its port. */
static int udp_raw(const char *ip, int *port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    fill_addr(ip, 0, &ss, &len);
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&ss, len), 0);
    len = sizeof ss;
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    if (port)
        *port = addr_port(&ss);
    return fd;
}

static void udp_raw_send(int fd, const char *ip, int port, const void *data, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t len;
    fill_addr(ip, port, &ss, &len);
    ASSERT_EQ(sendto(fd, data, n, 0, (struct sockaddr *)&ss, len), (ssize_t)n);
}

/* Receives one datagram on a non-blocking raw socket, running the reactor
 * meanwhile. Returns its length. */
static ssize_t udp_raw_recv(em_reactor *r, int fd, void *buf, size_t cap,
                            struct sockaddr_storage *from)
{
    double deadline = now_mono() + 5;
    while (now_mono() < deadline) {
        socklen_t len = sizeof *from;
        ssize_t n = recvfrom(fd, buf, cap, 0, (struct sockaddr *)from, &len);
        if (n >= 0)
            return n;
        ASSERT(errno == EAGAIN || errno == EWOULDBLOCK);
        ASSERT_GE(em_run_once(r, 0.01), 0);
    }
    FAIL("no datagram within 5 s");
}

static void set_rcvbuf(em_conn *c, int bytes)
{
    ASSERT_EQ(em_set_sock_opt(c, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes), 0);
}

/* Per-datagram log kept in rec.ctx. */
#define MAX_DGRAMS 4096
struct dlog {
    int n;
    size_t len[MAX_DGRAMS];
    uint32_t seq[MAX_DGRAMS]; /* first 4 bytes, when len >= 4 */
    bool bad_content;
    bool peer_ok; /* peername checks inside receive_data all passed */
    int peer_checks;
    const char *peer_ip;
    int peer_port;
    bool reply;      /* echo every datagram with em_send_data */
    int reply_errs;
};

static void dlog_data(em_conn *c, rec *x, const char *d, size_t n)
{
    struct dlog *g = x->ctx;
    ASSERT(g->n < MAX_DGRAMS);
    g->len[g->n] = n;
    uint32_t seq = 0;
    if (n >= 4)
        memcpy(&seq, d, 4);
    g->seq[g->n] = seq;
    /* content after the 4-byte header: pattern from seq */
    for (size_t i = 4; i < n; i++)
        if ((unsigned char)d[i] != pattern_byte(seq * 7919u + i))
            g->bad_content = true;
    g->n++;
    if (g->peer_ip) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int rc = em_get_peername(c, &ss, &len);
        g->peer_checks++;
        if (rc != 0 || !addr_is(&ss, g->peer_ip) || addr_port(&ss) != g->peer_port)
            g->peer_ok = false;
    }
    if (g->reply && em_send_data(c, d, n) != 0)
        g->reply_errs++;
}

/* A datagram of n bytes: 4-byte sequence number then pattern bytes. */
static char *make_dgram(uint32_t seq, size_t n)
{
    char *b = malloc(n < 4 ? 4 : n);
    ASSERT_NOT_NULL(b);
    memcpy(b, &seq, 4);
    for (size_t i = 4; i < n; i++)
        b[i] = (char)pattern_byte(seq * 7919u + i);
    return b;
}

static void close_and_wait(em_reactor *r, rec *x)
{
    if (x->conn)
        ASSERT_EQ(close_conn(x->conn, false), 0);
    ASSERT(run_until(r, &x->unbinds, 5));
    ASSERT_EQ(x->reason, 0);
}

/* ------------------------------------------------------- basic round trip */

static void roundtrip(const char *ip)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct dlog g = {.peer_ok = true, .reply = true};
    rec srv = {.tag = 1, .store = true, .on_data = dlog_data, .ctx = &g};
    em_conn *s = em_open_datagram_socket(r, ip, 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(srv.post_inits, 1);
    ASSERT(!em_is_watch_only(s));
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ASSERT_EQ(em_get_sockname(s, &ss, &len), 0);
    ASSERT_EQ(ss.ss_family, strchr(ip, ':') ? AF_INET6 : AF_INET);
    ASSERT(addr_is(&ss, ip));
    int port = addr_port(&ss);
    ASSERT_GT(port, 0);

    int raw_port;
    int raw = udp_raw(ip, &raw_port);
    g.peer_ip = ip;
    g.peer_port = raw_port;
    char *d = make_dgram(1, 32);
    udp_raw_send(raw, ip, port, d, 32);
    char buf[128];
    struct sockaddr_storage from;
    ssize_t n = udp_raw_recv(r, raw, buf, sizeof buf, &from);
    ASSERT_EQ(n, 32); /* the reply */
    ASSERT(memcmp(buf, d, 32) == 0);
    ASSERT_EQ(addr_port(&from), port); /* the reply came from the socket */
    ASSERT(addr_is(&from, ip));
    ASSERT_EQ(g.n, 1);
    ASSERT_EQ(srv.data_calls, 1);
    ASSERT_EQ(g.peer_checks, 1);
    ASSERT(g.peer_ok);
    ASSERT_EQ(g.reply_errs, 0);
    free(d);

    em_conn_stats st;
    ASSERT_EQ(em_get_stats(s, &st), 0);
    ASSERT_EQ(st.bytes_in, 32);
    ASSERT_EQ(st.bytes_out, 32);

    close(raw);
    close_and_wait(r, &srv);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(udp4_port0_sockname_peername_reply) { roundtrip("127.0.0.1"); }
TEST(udp6_port0_sockname_peername_reply) { roundtrip("::1"); }

/* A fixed port and a resolved name also work. */
TEST(udp_fixed_port_and_name)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int port;
    int tmp = udp_raw("127.0.0.1", &port);
    close(tmp); /* a port that was free a moment ago */
    rec a = {.tag = 1};
    em_conn *c = em_open_datagram_socket(r, "127.0.0.1", port, &rec_handler, &a);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(conn_port(c), port);
    /* the same port again: EADDRINUSE, as em_start_server */
    rec b = {.tag = 2};
    ASSERT_NULL_ERRNO(em_open_datagram_socket(r, "127.0.0.1", port, &rec_handler, &b),
                      EADDRINUSE);
    ASSERT_EQ(b.post_inits, 0);
    rec n = {.tag = 3};
    em_conn *cn = em_open_datagram_socket(r, "localhost", 0, &rec_handler, &n);
    ASSERT_NOT_NULL(cn);
    ASSERT_GT(conn_port(cn), 0);
    close_and_wait(r, &a);
    close_and_wait(r, &n);
    /* the port is free again after unbind */
    rec a2 = {.tag = 4};
    c = em_open_datagram_socket(r, "127.0.0.1", port, &rec_handler, &a2);
    ASSERT_NOT_NULL(c);
    close_and_wait(r, &a2);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------ boundaries kept */

static void boundaries(const char *ip, size_t maxsize)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    struct dlog g = {.peer_ok = true};
    rec srv = {.tag = 1, .on_data = dlog_data, .ctx = &g};
    em_conn *s = em_open_datagram_socket(r, ip, 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    set_rcvbuf(s, 2 << 20);
    int port = conn_port(s);
    int raw = udp_raw(ip, NULL);
    size_t sizes[] = {4, 5, 7, 100, 1, 1400, 9000, 3, 60000, maxsize, 17, 65536 - 1000, 2};
    int cnt = (int)(sizeof sizes / sizeof sizes[0]);
    /* all sent before the reactor reads any */
    for (int i = 0; i < cnt; i++) {
        char *d = make_dgram((uint32_t)i, sizes[i]);
        udp_raw_send(raw, ip, port, d, sizes[i]);
        free(d);
    }
    double deadline = now_mono() + 5;
    while (g.n < cnt && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(g.n, cnt);
    ASSERT_EQ(srv.data_calls, cnt);
    for (int i = 0; i < cnt; i++) {
        ASSERT_EQ(g.len[i], sizes[i]);
        if (sizes[i] >= 4)
            ASSERT_EQ(g.seq[i], i);
    }
    ASSERT(!g.bad_content);
    close(raw);
    close_and_wait(r, &srv);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(udp4_one_receive_per_datagram) { boundaries("127.0.0.1", 65507); }
TEST(udp6_one_receive_per_datagram) { boundaries("::1", 65527); }

/* ------------------------------------ libem to libem, many in one turn */

struct many {
    em_reactor *r;
    rec a, b;
    struct dlog ga, gb;
    em_conn *ca, *cb;
    int pa, pb;
};

static void many_open(struct many *m, const char *ip)
{
    m->r = new_reactor();
    m->ga = (struct dlog){.peer_ok = true};
    m->gb = (struct dlog){.peer_ok = true, .reply = true};
    m->a = (rec){.tag = 1, .on_data = dlog_data, .ctx = &m->ga};
    m->b = (rec){.tag = 2, .on_data = dlog_data, .ctx = &m->gb};
    m->ca = em_open_datagram_socket(m->r, ip, 0, &rec_handler, &m->a);
    ASSERT_NOT_NULL(m->ca);
    m->cb = em_open_datagram_socket(m->r, ip, 0, &rec_handler, &m->b);
    ASSERT_NOT_NULL(m->cb);
    set_rcvbuf(m->ca, 4 << 20);
    set_rcvbuf(m->cb, 4 << 20);
    m->pa = conn_port(m->ca);
    m->pb = conn_port(m->cb);
    m->gb.peer_ip = ip;
    m->gb.peer_port = m->pa;
    m->ga.peer_ip = ip;
    m->ga.peer_port = m->pb;
}

static void many_close(struct many *m)
{
    close_and_wait(m->r, &m->a);
    close_and_wait(m->r, &m->b);
    REACTOR_FREE_CHECKED(m->r);
}

static void many_in_one_turn(const char *ip)
{
    int fd0 = open_fd_count();
    struct many m;
    many_open(&m, ip);
    const int N = 1000;
    size_t total = 0;
    for (int i = 0; i < N; i++) {
        size_t n = 4 + (size_t)((i * 37) % 1200);
        char *d = make_dgram((uint32_t)i, n);
        ASSERT_EQ(em_send_datagram(m.ca, d, n, ip, m.pb), 0);
        free(d);
        total += n;
    }
    double deadline = now_mono() + 10;
    while ((m.gb.n < N || m.ga.n < N) && now_mono() < deadline)
        ASSERT_GE(em_run_once(m.r, 0.01), 0);
    ASSERT_EQ(m.gb.n, N);
    ASSERT_EQ(m.ga.n, N); /* every echo came back too */
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(m.gb.seq[i], i); /* in order on loopback */
        ASSERT_EQ(m.gb.len[i], 4 + (size_t)((i * 37) % 1200));
        ASSERT_EQ(m.ga.seq[i], i);
    }
    ASSERT(!m.ga.bad_content);
    ASSERT(!m.gb.bad_content);
    ASSERT(m.gb.peer_ok);
    ASSERT(m.ga.peer_ok);
    ASSERT_EQ(m.gb.peer_checks, N);
    ASSERT_EQ(m.gb.reply_errs, 0);
    ASSERT_EQ(m.a.bytes_in, total);
    ASSERT_EQ(m.b.bytes_in, total);
    ASSERT_EQ(em_get_outbound_data_size(m.ca), 0);
    many_close(&m);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(udp4_many_in_one_turn_all_arrive_in_order) { many_in_one_turn("127.0.0.1"); }
TEST(udp6_many_in_one_turn_all_arrive_in_order) { many_in_one_turn("::1"); }

/* Datagrams sent while paused wait in order and go out on resume. */
TEST(udp_paused_sender_queues_in_order)
{
    int fd0 = open_fd_count();
    struct many m;
    many_open(&m, "127.0.0.1");
    m.gb.reply = false;
    ASSERT_EQ(em_pause(m.ca), 0);
    ASSERT(em_is_paused(m.ca));
    const int N = 300;
    size_t total = 0;
    for (int i = 0; i < N; i++) {
        size_t n = 4 + (size_t)((i * 101) % 3000);
        char *d = make_dgram((uint32_t)i, n);
        ASSERT_EQ(em_send_datagram(m.ca, d, n, "127.0.0.1", m.pb), 0);
        free(d);
        total += n;
    }
    ASSERT_EQ(em_get_outbound_data_size(m.ca), total);
    run_for(m.r, 0.2);
    ASSERT_EQ(m.gb.n, 0);
    ASSERT_EQ(em_get_outbound_data_size(m.ca), total);
    ASSERT_EQ(em_resume(m.ca), 0);
    double deadline = now_mono() + 5;
    while (m.gb.n < N && now_mono() < deadline)
        ASSERT_GE(em_run_once(m.r, 0.01), 0);
    ASSERT_EQ(m.gb.n, N);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(m.gb.seq[i], i);
    ASSERT(!m.gb.bad_content);
    ASSERT_EQ(em_get_outbound_data_size(m.ca), 0);
    many_close(&m);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------------- errors */

TEST(udp_too_large_is_emsgsize)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec a = {.tag = 1}, b = {.tag = 2}, a6 = {.tag = 3};
    em_conn *ca = em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &a);
    em_conn *cb = em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &b);
    em_conn *c6 = em_open_datagram_socket(r, "::1", 0, &rec_handler, &a6);
    ASSERT_NOT_NULL(ca);
    ASSERT_NOT_NULL(cb);
    ASSERT_NOT_NULL(c6);
    set_rcvbuf(cb, 1 << 20);
    char *big = calloc(1, 70000);
    ASSERT_NOT_NULL(big);
    ASSERT_EQ(em_send_datagram(ca, big, 70000, "127.0.0.1", conn_port(cb)), -EMSGSIZE);
    ASSERT_EQ(em_send_datagram(c6, big, 70000, "::1", conn_port(c6)), -EMSGSIZE);
    ASSERT_EQ(em_send_datagram(ca, big, 65508, "127.0.0.1", conn_port(cb)), -EMSGSIZE);
    ASSERT_EQ(em_get_outbound_data_size(ca), 0);
    /* the socket is still fine, and the largest IPv4 datagram goes through */
    ASSERT_EQ(em_send_datagram(ca, big, 65507, "127.0.0.1", conn_port(cb)), 0);
    ASSERT(run_until(r, &b.data_calls, 5));
    ASSERT_EQ(b.bytes_in, 65507);
    free(big);
    ASSERT_EQ(a.unbinds, 0);
    close_and_wait(r, &a);
    close_and_wait(r, &b);
    close_and_wait(r, &a6);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(udp_bad_address_is_einval)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec a = {.tag = 1};
    em_conn *c = em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &a);
    ASSERT_NOT_NULL(c);
    int port = conn_port(c);
    ASSERT_EQ(em_send_datagram(c, "x", 1, "not-an-address", port), -EINVAL);
    ASSERT_EQ(em_send_datagram(c, "x", 1, "localhost", port), -EINVAL); /* literals only */
    ASSERT_EQ(em_send_datagram(c, "x", 1, "256.1.1.1", port), -EINVAL);
    ASSERT_EQ(em_send_datagram(c, "x", 1, "", port), -EINVAL);
    ASSERT_EQ(em_send_datagram(c, "x", 1, NULL, port), -EINVAL);
    ASSERT_EQ(em_send_datagram(c, "x", 1, "127.0.0.1", 0), -EINVAL);
    ASSERT_EQ(em_send_datagram(c, "x", 1, "127.0.0.1", -1), -EINVAL);
    ASSERT_EQ(em_send_datagram(c, "x", 1, "127.0.0.1", 65536), -EINVAL);
    ASSERT_EQ(em_send_datagram(NULL, "x", 1, "127.0.0.1", port), -EINVAL);
    ASSERT_EQ(em_send_datagram(c, NULL, 1, "127.0.0.1", port), -EINVAL);
    /* nothing arrived, nothing queued, still open */
    run_for(r, 0.05);
    ASSERT_EQ(a.data_calls, 0);
    ASSERT_EQ(em_get_outbound_data_size(c), 0);
    ASSERT_EQ(a.unbinds, 0);

    /* em_send_datagram on a stream connection */
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    rec pr = {.tag = 2};
    em_conn *pc = em_attach(r, p[0], &rec_handler, &pr);
    ASSERT_NOT_NULL(pc);
    ASSERT_EQ(em_send_datagram(pc, "x", 1, "127.0.0.1", port), -EINVAL);
    close_and_wait(r, &pr);
    close(p[0]);
    close(p[1]);

    /* em_open_datagram_socket's own argument checks */
    rec z = {.tag = 3};
    ASSERT_NULL_ERRNO(em_open_datagram_socket(r, NULL, 0, &rec_handler, &z), EINVAL);
    ASSERT_NULL_ERRNO(em_open_datagram_socket(r, "127.0.0.1", -1, &rec_handler, &z), EINVAL);
    ASSERT_NULL_ERRNO(em_open_datagram_socket(r, "127.0.0.1", 65536, &rec_handler, &z),
                      EINVAL);
    ASSERT_NULL_ERRNO(em_open_datagram_socket(r, "127.0.0.1", 0, NULL, &z), EINVAL);
    ASSERT_NULL_ERRNO(em_open_datagram_socket(NULL, "127.0.0.1", 0, &rec_handler, &z),
                      EINVAL);
    ASSERT_EQ(z.post_inits, 0);

    close_and_wait(r, &a);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* --------------------------------------------------- inactivity timeout */

static double last_rx;
static void note_rx(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)c;
    (void)x;
    (void)d;
    (void)n;
    last_rx = now_mono();
}

TEST(udp_inactivity_timeout_closes_idle_socket)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec a = {.tag = 1, .on_data = note_rx};
    em_conn *c = em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &a);
    ASSERT_NOT_NULL(c);
    int port = conn_port(c);
    ASSERT_EQ(em_set_comm_inactivity_timeout(c, 0.3), 0);
    ASSERT_DBL_GE(em_get_comm_inactivity_timeout(c), 0.3);
    ASSERT_DBL_LE(em_get_comm_inactivity_timeout(c), 0.3);
    /* datagrams keep it alive for a while */
    int raw = udp_raw("127.0.0.1", NULL);
    double t0 = now_mono();
    for (int i = 0; i < 6; i++) {
        udp_raw_send(raw, "127.0.0.1", port, "keep", 4);
        run_for(r, 0.1);
    }
    ASSERT_EQ(a.unbinds, 0);
    ASSERT_EQ(a.data_calls, 6);
    double last = last_rx;
    ASSERT(run_until(r, &a.unbinds, 5));
    double t1 = now_mono();
    ASSERT_EQ(a.reason, ETIMEDOUT);
    ASSERT_DBL_GE(t1 - last, 0.25);
    ASSERT_DBL_LE(t1 - last, 1.5);
    ASSERT_DBL_GE(t1 - t0, 0.8);
    close(raw);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------- close and unbind */

static void close_in_data(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    (void)n;
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT_EQ(em_send_data(c, "late", 4), -ENOTCONN);
    ASSERT_EQ(em_send_datagram(c, "late", 4, "127.0.0.1", 9), -ENOTCONN);
    ASSERT_EQ(x->unbinds, 0);
}

TEST(udp_close_then_unbind)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec a = {.tag = 1};
    em_conn *c = em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &a);
    ASSERT_NOT_NULL(c);
    em_sig sig = em_signature(c);
    ASSERT(em_conn_by_sig(r, sig) == c);
    ASSERT_EQ(em_connection_count(r), 1);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT_EQ(a.unbinds, 0); /* never inside the call */
    ASSERT_EQ(em_send_datagram(c, "x", 1, "127.0.0.1", 9), -ENOTCONN);
    ASSERT_EQ(close_conn(c, false), 0); /* idempotent */
    ASSERT(run_until(r, &a.unbinds, 5));
    ASSERT_EQ(a.reason, 0);
    ASSERT(!a.sig_found_in_unbind);
    ASSERT_NULL(em_conn_by_sig(r, sig));
    ASSERT_EQ(em_connection_count(r), 0);

    /* closed from its own receive_data: no more data calls after that */
    rec b = {.tag = 2, .on_data = close_in_data};
    em_conn *cb = em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &b);
    ASSERT_NOT_NULL(cb);
    int port = conn_port(cb);
    int raw = udp_raw("127.0.0.1", NULL);
    for (int i = 0; i < 5; i++)
        udp_raw_send(raw, "127.0.0.1", port, "abc", 3);
    ASSERT(run_until(r, &b.unbinds, 5));
    ASSERT_EQ(b.data_calls, 1);
    ASSERT_EQ(b.reason, 0);
    close(raw);

    /* close after writing with nothing queued closes at once */
    rec d = {.tag = 3};
    em_conn *cd = em_open_datagram_socket(r, "::1", 0, &rec_handler, &d);
    ASSERT_NOT_NULL(cd);
    ASSERT_EQ(em_close_connection_after_writing(cd), 0);
    ASSERT(run_until(r, &d.unbinds, 5));
    ASSERT_EQ(d.reason, 0);

    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(udp_reactor_free_unbinds_open_socket)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec a = {.tag = 1};
    ASSERT_NOT_NULL(em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &a));
    run_for(r, 0.02);
    ASSERT_EQ(em_timer_count(r), 0);
    em_reactor_free(r);
    ASSERT_EQ(a.unbinds, 1);
    ASSERT_EQ(a.reason, 0);
    ASSERT_NO_FD_LEAK(fd0);
}
