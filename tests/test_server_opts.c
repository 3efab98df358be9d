/* em_start_server_opts and em_start_unix_server_opts: the backlog the
 * kernel gives the listener (read back through sock_diag, and seen in the
 * connects it lets complete), SO_REUSEPORT across reactors on two threads,
 * IPV6_V6ONLY, the unix socket file's mode, the errors, and NULL or zeroed
 * options behaving as em_start_server and em_start_unix_server. */
#include "harness.h"

#include "em-internal.h" /* the listener's descriptor, for getsockopt */

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_BACKLOG 1024 /* server.c's LISTEN_BACKLOG */

static int accepted, unbound;

static void count_post_init(em_conn *c)
{
    (void)c;
    accepted++;
}

static void echo_data(em_conn *c, const char *data, size_t len) { em_send_data(c, data, len); }

static void count_unbind(em_conn *c, int reason)
{
    (void)c;
    (void)reason;
    unbound++;
}

static const em_handler counting_echo = {
    .post_init = count_post_init, .receive_data = echo_data, .unbind = count_unbind};

static int read_proc_int(const char *path)
{
    FILE *f = fopen(path, "r");
    ASSERT_NOT_NULL(f);
    int v = -1;
    ASSERT_EQ(fscanf(f, "%d", &v), 1);
    fclose(f);
    return v;
}

static int sockopt_int(const em_server *s, int level, int opt)
{
    int v = -1;
    socklen_t len = sizeof v;
    ASSERT_EQ(getsockopt(s->io.fd, level, opt, &v, &len), 0);
    return v;
}

/* ------------------------------------------------------------- backlog */

/* One netlink message of a sock_diag dump: the listener's entry, or the
 * end of the dump. Returns 1 at the end, else 0; sets *found for port. */
static int diag_message(const struct nlmsghdr *h, int port, int *found)
{
    if (h->nlmsg_type == NLMSG_DONE)
        return 1;
    if (h->nlmsg_type == NLMSG_ERROR)
        FAIL("sock_diag answered an error");
    const struct inet_diag_msg *d = NLMSG_DATA(h);
    if (ntohs(d->id.idiag_sport) == port)
        *found = (int)d->idiag_wqueue;
    return 0;
}

/* The backlog the kernel holds for the TCP listener on port (what ss -lt
 * shows as Send-Q: sock_diag's idiag_wqueue for a listener); -1 if none. */
static int kernel_backlog(int family, int port)
{
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    ASSERT_GE(nl, 0);
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
    } msg = {.nlh = {.nlmsg_len = sizeof msg,
                     .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                     .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
             .req = {.sdiag_family = (uint8_t)family,
                     .sdiag_protocol = IPPROTO_TCP,
                     .idiag_states = 1u << TCP_LISTEN}};
    ASSERT_EQ(send(nl, &msg, sizeof msg, 0), (ssize_t)sizeof msg);
    static _Alignas(struct nlmsghdr) char buf[32768];
    int found = -1, done = 0;
    while (!done) {
        ssize_t n = recv(nl, buf, sizeof buf, 0);
        ASSERT_GT(n, 0);
        for (size_t off = 0; !done && off + sizeof(struct nlmsghdr) <= (size_t)n;) {
            const struct nlmsghdr *h = (const struct nlmsghdr *)(buf + off);
            ASSERT_GE(h->nlmsg_len, sizeof *h);
            done = diag_message(h, port, &found);
            off += NLMSG_ALIGN(h->nlmsg_len);
        }
    }
    close(nl);
    return found;
}

static int expected_default_backlog(void)
{
    int max = read_proc_int("/proc/sys/net/core/somaxconn");
    return max < DEFAULT_BACKLOG ? max : DEFAULT_BACKLOG;
}

TEST(backlog_is_the_one_the_kernel_holds)
{
    em_reactor *r = new_reactor();
    em_server_opts o = {.backlog = 7};
    em_server *s = em_start_server_opts(r, "127.0.0.1", 0, &o, &counting_echo, NULL);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(kernel_backlog(AF_INET, em_server_port(s)), 7);
    em_server *d = em_start_server_opts(r, "127.0.0.1", 0, &(em_server_opts){0}, &counting_echo,
                                        NULL);
    ASSERT_NOT_NULL(d);
    ASSERT_EQ(kernel_backlog(AF_INET, em_server_port(d)), expected_default_backlog());
    REACTOR_FREE_CHECKED(r);
}

static int connect_nb(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    ASSERT(rc == 0 || errno == EINPROGRESS);
    return fd;
}

static bool connected_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, ms) != 1)
        return false;
    int err = -1;
    socklen_t len = sizeof err;
    ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len), 0);
    return err == 0;
}

/* Clients connect one after the other to a listener nobody accepts on
 * yet; returns how many completed their handshake. Linux drops a SYN while
 * the accept queue is full, so the client waits for its retransmission
 * (1 s later): 300 ms tells the two cases apart. */
static int handshakes_completed(int port, int *fds, int n)
{
    int done = 0;
    for (int i = 0; i < n; i++) {
        fds[i] = connect_nb(port);
        if (connected_within(fds[i], 300))
            done++;
        usleep(20 * 1000); /* the server's side of it reaches the queue */
    }
    return done;
}

static bool all_accepted(void *arg) { return accepted == *(int *)arg; }
static bool all_unbound(void *arg) { return unbound == *(int *)arg; }

TEST(backlog_bounds_the_handshakes_completed_before_accept)
{
    enum { N = 4 };
    em_reactor *r = new_reactor();
    accepted = unbound = 0;
    em_server_opts small = {.backlog = 1};
    em_server *s = em_start_server_opts(r, "127.0.0.1", 0, &small, &counting_echo, NULL);
    ASSERT_NOT_NULL(s);
    int fds[N], dfds[N];
    int done = handshakes_completed(em_server_port(s), fds, N);
    /* Linux holds backlog + 1 in the accept queue */
    ASSERT_GE(done, 1);
    ASSERT_LE(done, 2);

    em_server *d = em_start_server_opts(r, "127.0.0.1", 0, NULL, &counting_echo, NULL);
    ASSERT_NOT_NULL(d);
    ASSERT_EQ(handshakes_completed(em_server_port(d), dfds, N), N);

    /* accepting frees the queue: the dropped SYNs get in when resent */
    int want = 2 * N;
    ASSERT(run_until_pred(r, all_accepted, &want, 10));
    for (int i = 0; i < N; i++) {
        ASSERT(connected_within(fds[i], 0));
        close(fds[i]);
        close(dfds[i]);
    }
    ASSERT(run_until_pred(r, all_unbound, &want, 5));
    REACTOR_FREE_CHECKED(r);
}

TEST(negative_backlog_and_unknown_v6only_are_refused)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    em_server_opts neg = {.backlog = -1};
    ASSERT_NULL_ERRNO(em_start_server_opts(r, "127.0.0.1", 0, &neg, &counting_echo, NULL),
                      EINVAL);
    int bad_v6only[] = {-1, 3, 100};
    for (size_t i = 0; i < sizeof bad_v6only / sizeof bad_v6only[0]; i++) {
        em_server_opts o = {.v6only = bad_v6only[i]};
        ASSERT_NULL_ERRNO(em_start_server_opts(r, "::1", 0, &o, &counting_echo, NULL), EINVAL);
    }
    /* a unix socket file's mode on a TCP listener is a mistake */
    em_server_opts mode = {.unix_mode = 0600};
    ASSERT_NULL_ERRNO(em_start_server_opts(r, "127.0.0.1", 0, &mode, &counting_echo, NULL),
                      EINVAL);
    ASSERT_NULL_ERRNO(em_start_server_opts(r, NULL, 0, NULL, &counting_echo, NULL), EINVAL);
    ASSERT_NULL_ERRNO(em_start_server_opts(r, "127.0.0.1", 0, NULL, NULL, NULL), EINVAL);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------------------- reuse_port */

typedef struct worker {
    pthread_t thread;
    sem_t ready;
    int port; /* 0: pick one, then the one picked */
    int err;
    em_reactor *r;
    atomic_int accepted;
} worker;

static void worker_post_init(em_conn *c)
{
    worker *w = em_conn_arg(c);
    atomic_fetch_add(&w->accepted, 1);
}

static const em_handler worker_echo = {.post_init = worker_post_init,
                                       .receive_data = echo_data};

/* One reactor per thread, each with a listener of its own on the port. */
static void *worker_main(void *arg)
{
    worker *w = arg;
    em_server_opts o = {.reuse_port = true};
    w->r = em_reactor_new(NULL);
    em_server *s = w->r ? em_start_server_opts(w->r, "127.0.0.1", w->port, &o, &worker_echo, w)
                        : NULL;
    w->err = s ? 0 : errno;
    if (s)
        w->port = em_server_port(s);
    sem_post(&w->ready);
    if (s)
        em_run(w->r);
    return NULL;
}

static void worker_start(worker *w, int port)
{
    w->port = port;
    atomic_init(&w->accepted, 0);
    ASSERT_EQ(sem_init(&w->ready, 0, 0), 0);
    ASSERT_EQ(pthread_create(&w->thread, NULL, worker_main, w), 0);
    ASSERT_EQ(sem_wait(&w->ready), 0);
    if (w->err)
        FAIL("worker's em_start_server_opts: %s", strerror(w->err));
}

static void worker_join(worker *w)
{
    em_stop(w->r);
    ASSERT_EQ(pthread_join(w->thread, NULL), 0);
    /* here, not on its thread: em_stop may still be busy with it when
     * em_run returns there */
    em_reactor_free(w->r);
    sem_destroy(&w->ready);
}

static void ping_once(int port)
{
    int fd = tcp_connect_raw("127.0.0.1", port);
    write_all(fd, "x", 1);
    char ch = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    ASSERT_EQ(read(fd, &ch, 1), 1);
    ASSERT_EQ(ch, 'x');
    close(fd);
}

TEST(reuse_port_spreads_connections_over_two_reactor_threads)
{
    enum { CONNS = 200 };
    static worker w[2];
    worker_start(&w[0], 0);
    worker_start(&w[1], w[0].port);
    ASSERT_EQ(w[1].port, w[0].port);
    for (int i = 0; i < CONNS; i++)
        ping_once(w[0].port);
    int a = atomic_load(&w[0].accepted), b = atomic_load(&w[1].accepted);
    worker_join(&w[0]);
    worker_join(&w[1]);
    /* the kernel hashes each client's port: either side empty has odds of
     * 2^-199 */
    ASSERT_GT(a, 0);
    ASSERT_GT(b, 0);
    ASSERT_EQ(a + b, CONNS);
}
TEST_TIMEOUT(reuse_port_spreads_connections_over_two_reactor_threads, 60);

TEST(a_listener_without_reuse_port_cannot_share_the_port)
{
    em_reactor *r = new_reactor();
    em_server_opts o = {.reuse_port = true};
    em_server *s = em_start_server_opts(r, "127.0.0.1", 0, &o, &counting_echo, NULL);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);
    ASSERT_EQ(sockopt_int(s, SOL_SOCKET, SO_REUSEPORT), 1);
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", port, &counting_echo, NULL), EADDRINUSE);
    ASSERT_NULL_ERRNO(em_start_server_opts(r, "127.0.0.1", port, NULL, &counting_echo, NULL),
                      EADDRINUSE);
    em_server *twin = em_start_server_opts(r, "127.0.0.1", port, &o, &counting_echo, NULL);
    ASSERT_NOT_NULL(twin);
    ASSERT_EQ(em_server_port(twin), port);

    /* the other way round: the first one did not ask to share */
    em_server *alone = em_start_server(r, "127.0.0.1", 0, &counting_echo, NULL);
    ASSERT_NOT_NULL(alone);
    ASSERT_NULL_ERRNO(
        em_start_server_opts(r, "127.0.0.1", em_server_port(alone), &o, &counting_echo, NULL),
        EADDRINUSE);
    REACTOR_FREE_CHECKED(r);
}

/* -------------------------------------------------------------- v6only */

/* Connects to ip:port; true when the handshake completed, false when
 * refused. */
static bool connects(const char *ip, int port)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        ASSERT_EQ(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        ASSERT_EQ(inet_pton(AF_INET, ip, &a->sin_addr), 1);
        len = sizeof *a;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    int rc = connect(fd, (struct sockaddr *)&ss, len);
    if (rc < 0 && errno != ECONNREFUSED)
        FAIL("connect to %s: %s", ip, strerror(errno));
    close(fd);
    return rc == 0;
}

/* The dual-stack question without listening beyond loopback: "::1" for an
 * IPv6-only listener, and the v4-mapped loopback "::ffff:127.0.0.1", which
 * the kernel lets an IPv6 socket bind only while IPV6_V6ONLY is off. */
static em_server *listen6(em_reactor *r, const char *ip, int v6only)
{
    em_server_opts o = {.v6only = v6only};
    return em_start_server_opts(r, ip, 0, &o, &counting_echo, NULL);
}

TEST(v6only_on_refuses_ipv4_clients)
{
    em_reactor *r = new_reactor();
    accepted = 0;
    em_server *s = listen6(r, "::1", EM_V6ONLY_ON);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(sockopt_int(s, IPPROTO_IPV6, IPV6_V6ONLY), 1);
    int port = em_server_port(s);
    ASSERT(connects("::1", port));
    int one = 1;
    ASSERT(run_until_pred(r, all_accepted, &one, 5));
    ASSERT_NULL_ERRNO(listen6(r, "::ffff:127.0.0.1", EM_V6ONLY_ON), EINVAL);
    ASSERT_EQ(em_stop_server(s), 0);
    em_reactor_free(r);
}

TEST(v6only_off_takes_ipv4_clients_as_v4_mapped)
{
    em_reactor *r = new_reactor();
    accepted = 0;
    em_server *s = listen6(r, "::ffff:127.0.0.1", EM_V6ONLY_OFF);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(sockopt_int(s, IPPROTO_IPV6, IPV6_V6ONLY), 0);
    int port = em_server_port(s);
    ASSERT(connects("127.0.0.1", port));
    ASSERT(connects("127.0.0.1", port));
    int two = 2;
    ASSERT(run_until_pred(r, all_accepted, &two, 5));
    ASSERT_EQ(em_stop_server(s), 0);
    em_reactor_free(r);
}

/* The kernel sets IPV6_V6ONLY itself on a socket bound to "::1", so the
 * system default shows on the v4-mapped address: allowed only where
 * net.ipv6.bindv6only is 0. */
TEST(v6only_default_leaves_the_system_setting)
{
    em_reactor *r = new_reactor();
    em_server *s = listen6(r, "::ffff:127.0.0.1", EM_V6ONLY_DEFAULT);
    if (read_proc_int("/proc/sys/net/ipv6/bindv6only") == 0) {
        ASSERT_NOT_NULL(s);
        ASSERT_EQ(sockopt_int(s, IPPROTO_IPV6, IPV6_V6ONLY), 0);
        ASSERT_EQ(em_stop_server(s), 0);
    } else {
        ASSERT_NULL_ERRNO(s, EINVAL);
    }
    REACTOR_FREE_CHECKED(r);
}

TEST(v6only_with_an_ipv4_address_is_refused)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int modes[] = {EM_V6ONLY_ON, EM_V6ONLY_OFF};
    for (int i = 0; i < 2; i++) {
        em_server_opts o = {.v6only = modes[i]};
        ASSERT_NULL_ERRNO(em_start_server_opts(r, "127.0.0.1", 0, &o, &counting_echo, NULL),
                          EINVAL);
    }
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ----------------------------------------------------------- unix_mode */

static mode_t file_mode(const char *path)
{
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT(S_ISSOCK(st.st_mode));
    return st.st_mode & 07777;
}

/* One echo through the reactor from a raw client, which it closes. */
static void echo_once(em_reactor *r, int fd)
{
    set_nonblock(fd);
    write_all(fd, "hi", 2);
    char buf[2];
    size_t got = 0;
    double deadline = now_mono() + 5;
    while (got < 2 && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n > 0)
            got += (size_t)n;
    }
    ASSERT_EQ(got, 2);
    ASSERT(memcmp(buf, "hi", 2) == 0);
    int gone = unbound + 1;
    close(fd);
    ASSERT(run_until_pred(r, all_unbound, &gone, 5));
}

static void check_unix_mode(const char *dir, unsigned mode, mode_t want)
{
    char path[256];
    snprintf(path, sizeof path, "%s/s%o", dir, mode);
    em_reactor *r = new_reactor();
    em_server_opts o = {.unix_mode = mode};
    em_server *s = em_start_unix_server_opts(r, path, &o, &counting_echo, NULL);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(file_mode(path), want);
    echo_once(r, unix_connect_raw(path));
    ASSERT_EQ(em_stop_server(s), 0);
    ASSERT_EQ(access(path, F_OK), -1);
    run_for(r, 0.05);
    em_reactor_free(r);
}

TEST(unix_mode_sets_the_socket_files_permissions_whatever_the_umask)
{
    char dir[128];
    make_tmpdir(dir, sizeof dir);
    umask(022);
    check_unix_mode(dir, 0600, 0600);
    check_unix_mode(dir, 0666, 0666); /* wider than the umask lets bind make */
    check_unix_mode(dir, 0, 0755);    /* 0: the umask's */
    umask(077);
    check_unix_mode(dir, 0660, 0660);
    check_unix_mode(dir, 0, 0700);
    rm_tmpdir(dir);
}

TEST(unix_options_that_do_not_apply_are_refused_and_leave_no_file)
{
    char dir[128], path[256];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/sock", dir);
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    em_server_opts bad[] = {
        {.unix_mode = 01000}, {.unix_mode = 04755}, {.unix_mode = 0x10000}, {.backlog = -5},
        {.reuse_port = true}, {.v6only = EM_V6ONLY_ON},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_NULL_ERRNO(em_start_unix_server_opts(r, path, &bad[i], &counting_echo, NULL),
                          EINVAL);
        ASSERT_EQ(access(path, F_OK), -1);
    }
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
    rm_tmpdir(dir);
}

/* A unix listener's queue is plain to see: a non-blocking connect beyond
 * it fails with EAGAIN at once. Linux queues backlog + 1. */
static int unix_connects_queued(const char *path, int *fds, int n)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ASSERT_LT(strlen(path), sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int ok = 0;
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ASSERT_GE(fds[i], 0);
        if (connect(fds[i], (struct sockaddr *)&sa, sizeof sa) == 0)
            ok++;
        else
            ASSERT_EQ(errno, EAGAIN);
    }
    return ok;
}

TEST(unix_backlog_bounds_the_queue)
{
    char dir[128], path[256];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/sock", dir);
    em_reactor *r = new_reactor();
    accepted = unbound = 0;
    em_server_opts o = {.backlog = 2};
    em_server *s = em_start_unix_server_opts(r, path, &o, &counting_echo, NULL);
    ASSERT_NOT_NULL(s);
    int fds[6];
    ASSERT_EQ(unix_connects_queued(path, fds, 6), 3);
    int three = 3;
    ASSERT(run_until_pred(r, all_accepted, &three, 5));
    for (int i = 0; i < 6; i++)
        close(fds[i]);
    ASSERT(run_until_pred(r, all_unbound, &three, 5));
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rm_tmpdir(dir);
}

/* ------------------------------------------- NULL and zeroed options */

TEST(null_or_zeroed_opts_listen_as_em_start_server)
{
    em_reactor *r = new_reactor();
    em_server_opts zero = {0};
    em_server *s[3] = {
        em_start_server(r, "127.0.0.1", 0, &counting_echo, NULL),
        em_start_server_opts(r, "127.0.0.1", 0, NULL, &counting_echo, NULL),
        em_start_server_opts(r, "127.0.0.1", 0, &zero, &counting_echo, NULL),
    };
    for (int i = 0; i < 3; i++) {
        ASSERT_NOT_NULL(s[i]);
        ASSERT_EQ(sockopt_int(s[i], SOL_SOCKET, SO_REUSEPORT), 0);
        ASSERT_EQ(sockopt_int(s[i], SOL_SOCKET, SO_REUSEADDR), 1);
        ASSERT_NE(sockopt_int(s[i], IPPROTO_TCP, TCP_NODELAY), 0);
        ASSERT_EQ(kernel_backlog(AF_INET, em_server_port(s[i])), expected_default_backlog());
        echo_once(r, tcp_connect_raw("127.0.0.1", em_server_port(s[i])));
    }
    REACTOR_FREE_CHECKED(r);
}

TEST(null_or_zeroed_opts_make_the_unix_socket_as_em_start_unix_server)
{
    char dir[128], path[256];
    make_tmpdir(dir, sizeof dir);
    umask(027);
    em_reactor *r = new_reactor();
    em_server_opts zero = {0};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/s%d", dir, i);
        em_server *s = i == 0   ? em_start_unix_server(r, path, &counting_echo, NULL)
                       : i == 1 ? em_start_unix_server_opts(r, path, NULL, &counting_echo, NULL)
                                : em_start_unix_server_opts(r, path, &zero, &counting_echo, NULL);
        ASSERT_NOT_NULL(s);
        ASSERT_EQ(file_mode(path), 0750);
        echo_once(r, unix_connect_raw(path));
    }
    run_for(r, 0.05);
    em_reactor_free(r);
    rm_tmpdir(dir);
}
