/* io_uring's kernel accepts for listeners (a multishot accept): each
 * connection comes in a completion, without an accept4 of libem's. Beyond
 * the suite's servers, which run on io_uring too, what must hold: a
 * connection the kernel accepted for a server stopped, or a reactor freed,
 * before it was taken is closed, never leaked; those the old ring accepted
 * when em_backend_fd makes the ring again are served. Real EMFILE is
 * test_fdlimit's; a count of accepts per report, test_server's. */
#include "harness.h"

#include <stdlib.h>
#include <unistd.h>

enum { CLIENTS = 8 };

static int connect_all(int port, int *fds)
{
    for (int i = 0; i < CLIENTS; i++)
        fds[i] = tcp_connect_raw("127.0.0.1", port);
    return CLIENTS;
}

/* Whether fd's peer closed it (EOF or reset) within 5 s. */
static bool closed_by_peer(int fd)
{
    set_nonblock(fd);
    double deadline = now_mono() + 5;
    char b;
    while (now_mono() < deadline) {
        ssize_t n = recv(fd, &b, 1, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        usleep(1000);
    }
    return false;
}

/* ------------------------------------------- a server stopped in its turn */

static em_server *stopping;
static int posts;

static void stop_at_first(em_conn *c)
{
    posts++;
    if (stopping)
        ASSERT_EQ(em_stop_server(stopping), 0);
    stopping = NULL;
    em_close_connection(c, false);
}

static const em_handler stop_first_h = {.post_init = stop_at_first};

/* All clients wait in the backlog, so the kernel accepts them in one go:
 * the first one's post_init stops the server, and the rest, reported in
 * the same turn, are closed. */
TEST(server_stopped_in_the_turn_closes_what_the_kernel_accepted)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    stopping = em_start_server(r, "127.0.0.1", 0, &stop_first_h, NULL);
    ASSERT_NOT_NULL(stopping);
    ASSERT_GE(em_run_once(r, 0), 0); /* the accept is in the kernel */
    int fds[CLIENTS];
    connect_all(em_server_port(stopping), fds);
    double deadline = now_mono() + 5;
    while (!posts && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(posts, 1);
    for (int i = 0; i < CLIENTS; i++) {
        ASSERT(closed_by_peer(fds[i]));
        close(fds[i]);
    }
    ASSERT_EQ(posts, 1);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ------------------------------------------------------ a reactor freed */

static void count_post(em_conn *c)
{
    (void)c;
    posts++;
}

static const em_handler counting_h = {.post_init = count_post};

/* More clients wait than a turn takes events: the kernel accepts them all
 * in the turn's wait, and those not taken yet are closed with the reactor
 * freed after it. */
TEST(reactor_freed_closes_what_the_kernel_accepted)
{
    enum { MANY = 400 };
    int fd0 = open_fd_count();
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    em_server *s = em_start_server(r, "127.0.0.1", 0, &counting_h, NULL);
    ASSERT_NOT_NULL(s);
    ASSERT_GE(em_run_once(r, 0), 0);
    static int fds[MANY];
    for (int i = 0; i < MANY; i++)
        fds[i] = tcp_connect_raw("127.0.0.1", em_server_port(s));
    ASSERT_GE(em_run_once(r, 0), 0);
    ASSERT_GT(posts, 0);
    ASSERT_LT(posts, MANY);
    em_reactor_free(r); /* its connections closed with it */
    for (int i = 0; i < MANY; i++) {
        ASSERT(closed_by_peer(fds[i]));
        close(fds[i]);
    }
    ASSERT_NO_FD_LEAK(fd0);
}

/* ---------------------------------------------- the ring made again */

static void echo(em_conn *c, const char *d, size_t n) { em_send_data(c, d, n); }

static const em_handler echo_h = {.receive_data = echo};

/* em_backend_fd makes the ring again (without deferred task running): the
 * old ring's accept takes the waiting clients as it is settled, and they
 * are served on the new one. */
TEST(ring_made_again_serves_what_the_old_one_accepted)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_uring_reactor();
    if (!r)
        return;
    em_server *s = em_start_server(r, "127.0.0.1", 0, &echo_h, NULL);
    ASSERT_NOT_NULL(s);
    ASSERT_GE(em_run_once(r, 0), 0);
    int fds[CLIENTS];
    connect_all(em_server_port(s), fds);
    for (int i = 0; i < CLIENTS; i++)
        write_all(fds[i], "ping", 4);
    ASSERT_GE(em_backend_fd(r), 0);
    for (int i = 0; i < CLIENTS; i++) {
        char buf[4];
        size_t got = 0;
        double deadline = now_mono() + 5;
        while (got < 4 && now_mono() < deadline) {
            ASSERT_GE(em_run_once(r, 0.01), 0);
            ssize_t n = recv(fds[i], buf + got, 4 - got, MSG_DONTWAIT);
            if (n > 0)
                got += (size_t)n;
        }
        ASSERT_EQ(got, 4u);
        ASSERT(!memcmp(buf, "ping", 4));
        close(fds[i]);
    }
    double deadline = now_mono() + 5;
    while (em_connection_count(r) && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.01), 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}
