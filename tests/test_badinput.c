/* Bad input: a clear negative errno or NULL + errno, never a crash or hang. */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

static const em_handler empty_handler = {0};

TEST(connect_bad_arguments)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec cli = {.tag = 1};
    ASSERT_NULL_ERRNO(em_connect(r, NULL, 80, &rec_handler, &cli), EINVAL);
    ASSERT_NULL_ERRNO(em_connect(r, "127.0.0.1", 80, NULL, &cli), EINVAL);
    ASSERT_NULL_ERRNO(em_connect(r, "127.0.0.1", -1, &rec_handler, &cli), EINVAL);
    ASSERT_NULL_ERRNO(em_connect(r, "127.0.0.1", 0, &rec_handler, &cli), EINVAL);
    ASSERT_NULL_ERRNO(em_connect(r, "127.0.0.1", 65536, &rec_handler, &cli), EINVAL);
    ASSERT_NULL_ERRNO(em_connect(NULL, "127.0.0.1", 80, &rec_handler, &cli), EINVAL);
    ASSERT_NULL_ERRNO(em_bind_connect(r, NULL, 0, NULL, 80, &rec_handler, &cli), EINVAL);
    ASSERT_NULL_ERRNO(em_bind_connect(r, NULL, -1, "127.0.0.1", 80, &rec_handler, &cli),
                      EINVAL);
    ASSERT_NULL_ERRNO(em_bind_connect(r, NULL, 65536, "127.0.0.1", 80, &rec_handler, &cli),
                      EINVAL);
    ASSERT_NULL_ERRNO(em_bind_connect(r, NULL, 0, "127.0.0.1", 65536, &rec_handler, &cli),
                      EINVAL);
    ASSERT_NULL_ERRNO(em_connect_unix(r, NULL, &rec_handler, &cli), EINVAL);
    ASSERT_NULL_ERRNO(em_connect_unix(r, "/tmp/x", NULL, &cli), EINVAL);
    struct sockaddr_un sun;
    char path[sizeof sun.sun_path + 16];
    memset(path, 'q', sizeof path - 1);
    path[0] = '/';
    path[sizeof path - 1] = '\0';
    ASSERT_NULL_ERRNO(em_connect_unix(r, path, &rec_handler, &cli), ENAMETOOLONG);
    /* nothing was made: no post_init ran, nothing is open */
    ASSERT_EQ(cli.post_inits, 0);
    ASSERT_EQ(em_connection_count(r), 0);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(server_bad_ports_and_paths)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", -1, &empty_handler, NULL), EINVAL);
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", 65536, &empty_handler, NULL), EINVAL);
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", 1 << 20, &empty_handler, NULL), EINVAL);
    ASSERT_NULL_ERRNO(em_start_server(r, NULL, 0, &empty_handler, NULL), EINVAL);
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", 0, NULL, NULL), EINVAL);
    struct sockaddr_un sun;
    char path[sizeof sun.sun_path + 1];
    memset(path, 'q', sizeof path - 1);
    path[0] = '/';
    path[sizeof path - 1] = '\0';
    ASSERT_NULL_ERRNO(em_start_unix_server(r, path, &empty_handler, NULL), ENAMETOOLONG);
    errno = 0;
    ASSERT_NULL(em_attach_server(r, -1, &empty_handler, NULL));
    ASSERT(errno == EBADF || errno == EINVAL);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(port_in_use)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 1, &port);
    ASSERT_NULL_ERRNO(em_start_server(r, "127.0.0.1", port, &empty_handler, NULL), EADDRINUSE);
    close(lfd);
    int lfd6 = tcp_listen_raw("::1", 1, &port);
    ASSERT_NULL_ERRNO(em_start_server(r, "::1", port, &empty_handler, NULL), EADDRINUSE);
    close(lfd6);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(timeouts_negative_nan)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec cli = {.tag = 2};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    em_conn *c = em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    double bad[] = {-1, -1e-9, NAN, -INFINITY};
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(em_set_pending_connect_timeout(c, bad[i]), -EINVAL);
        ASSERT_EQ(em_set_comm_inactivity_timeout(c, bad[i]), -EINVAL);
    }
    /* unchanged */
    ASSERT(em_get_pending_connect_timeout(c) == 20.0);
    ASSERT(em_get_comm_inactivity_timeout(c) == 0.0);
    ASSERT_EQ(em_set_comm_inactivity_timeout(c, 0), 0);
    ASSERT_EQ(em_set_pending_connect_timeout(c, 0), 0); /* no limit */
    ASSERT(run_until(r, &cli.completed, 5));
    ASSERT_EQ(em_run_once(r, NAN), -EINVAL);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(unresolvable_name_unbinds)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    char name[128];
    memset(name, 'b', 70);
    strcpy(name + 70, ".invalid");
    rec a = {.tag = 1}, b = {.tag = 2};
    ASSERT_NOT_NULL(em_connect(r, name, 443, &rec_handler, &a));
    ASSERT_NOT_NULL(em_bind_connect(r, NULL, 0, name, 443, &rec_handler, &b));
    ASSERT(run_until(r, &a.unbinds, 10));
    ASSERT(run_until(r, &b.unbinds, 10));
    ASSERT_EQ(a.reason, EM_ERESOLVE);
    ASSERT_EQ(b.reason, EM_ERESOLVE);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* API.md: em_bind_connect never blocks, names are resolved on the pool and
 * every failure, resolution included, arrives as unbind; NULL only for
 * invalid arguments. A bind host that is a name is a valid argument (as in
 * EventMachine's bind_connect). */
TEST(bind_connect_unresolvable_bind_host)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    char name[128];
    memset(name, 'b', 70);
    strcpy(name + 70, ".invalid");
    rec d = {.tag = 3};
    ASSERT_NOT_NULL(em_bind_connect(r, name, 0, "127.0.0.1", 9, &rec_handler, &d));
    ASSERT(run_until(r, &d.unbinds, 10));
    ASSERT_EQ(d.reason, EM_ERESOLVE);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Every operation on a connection being closed or already detached. */
static int ops_checked;
static void ops_after_detach(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    (void)d;
    (void)n;
    int fd = em_detach(c);
    ASSERT_GE(fd, 0);
    x->ctx = (void *)(intptr_t)(fd + 1);
    ASSERT_EQ(em_detach(c), -ENOTCONN);
    ASSERT_EQ(em_send_data(c, "x", 1), -ENOTCONN);
    ASSERT_EQ(em_close_connection(c, false), 0); /* already closing */
    ASSERT_EQ(em_close_connection_after_writing(c), 0);
    ASSERT_EQ(em_pause(c), -ENOTCONN);
    ASSERT_EQ(em_reconnect(c, "127.0.0.1", 9), -EISCONN);
    ASSERT_EQ(em_get_outbound_data_size(c), 0);
    ops_checked = 1;
}

TEST(operations_on_detached_connection)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1, .on_data = ops_after_detach};
    rec cli = {.tag = 2};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    em_conn *c = em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli);
    ASSERT_EQ(em_send_data(c, "go", 2), 0);
    ASSERT(run_until(r, &ops_checked, 5));
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(srv.pool[0].reason, 0);
    int fd = (int)(intptr_t)srv.pool[0].ctx - 1;
    ASSERT_GE(fd, 0);
    close(fd); /* the client sees EOF now */
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(detach_while_resolving_enotconn)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    char name[128];
    memset(name, 'c', 70);
    strcpy(name + 70, ".invalid");
    rec a = {.tag = 1};
    em_conn *c = em_connect(r, name, 80, &rec_handler, &a);
    ASSERT_NOT_NULL(c);
    if (!a.unbinds) {
        ASSERT_EQ(em_conn_fd(c), -1);
        ASSERT_EQ(em_detach(c), -ENOTCONN);
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        ASSERT_EQ(em_get_sockname(c, &ss, &len), -ENOTCONN);
    }
    ASSERT(run_until(r, &a.unbinds, 10));
    ASSERT_EQ(a.reason, EM_ERESOLVE);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(send_data_bad_and_after_close)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec cli = {.tag = 2};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    em_conn *c = em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli);
    ASSERT(run_until(r, &cli.completed, 5));
    ASSERT_EQ(em_send_data(c, NULL, 5), -EINVAL);
    ASSERT_EQ(em_send_data(NULL, "x", 1), -EINVAL);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT_EQ(em_send_data(c, "x", 1), -ENOTCONN);
    int cw = em_close_write(c);
    ASSERT(cw == 0 || cw == -ENOTCONN);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(srv.pool[0].bytes_in, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(null_reactor_arguments)
{
    ASSERT_EQ(em_run(NULL), -EINVAL);
    ASSERT_EQ(em_run_once(NULL, 0), -EINVAL);
    em_stop(NULL);
    em_reactor_free(NULL);
    ASSERT(!em_reactor_running(NULL));
    ASSERT_EQ(em_connection_count(NULL), 0);
    ASSERT_EQ(em_timer_count(NULL), 0);
    ASSERT_EQ(em_cancel_timer(NULL, 1), -EINVAL);
    ASSERT_EQ(em_next_tick(NULL, NULL, NULL), -EINVAL);
    ASSERT_EQ(em_schedule(NULL, NULL, NULL), -EINVAL);
    ASSERT_EQ(em_defer(NULL, NULL, NULL, NULL), -EINVAL);
    ASSERT_EQ(em_set_max_timers(NULL, 1), -EINVAL);
    ASSERT_EQ(em_server_port(NULL), -EINVAL);
    errno = 0;
    ASSERT_EQ(em_add_timer(NULL, 1, NULL, NULL), 0);
    ASSERT_EQ(errno, EINVAL);
    ASSERT_NULL_ERRNO(em_start_server(NULL, "127.0.0.1", 0, &empty_handler, NULL), EINVAL);
    ASSERT_NULL_ERRNO(em_start_unix_server(NULL, "/tmp/x", &empty_handler, NULL), EINVAL);
    ASSERT_NULL_ERRNO(em_connect_unix(NULL, "/tmp/x", &empty_handler, NULL), EINVAL);
}

TEST(reconnect_bad_arguments)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec srv = {.tag = 1};
    rec cli = {.tag = 2};
    rec_pool_new(&srv, 2);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    em_conn *c = em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli);
    ASSERT(run_until(r, &cli.completed, 5));
    /* not being unbound */
    ASSERT_EQ(em_reconnect(c, "127.0.0.1", em_server_port(s)), -EISCONN);
    ASSERT_EQ(close_conn(c, false), 0);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT(run_until(r, &srv.pool[0].unbinds, 5));
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

static int bad_reconnect_rc[3];
static void bad_reconnect_in_unbind(em_conn *c, rec *x, int reason)
{
    (void)x;
    (void)reason;
    bad_reconnect_rc[0] = em_reconnect(c, NULL, 80);
    bad_reconnect_rc[1] = em_reconnect(c, "127.0.0.1", 0);
    bad_reconnect_rc[2] = em_reconnect(c, "127.0.0.1", 65536);
}

TEST(reconnect_bad_host_port_in_unbind)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec cli = {.tag = 2, .on_unbind = bad_reconnect_in_unbind};
    em_conn *c = em_connect(r, "127.0.0.1", free_port(), &rec_handler, &cli);
    ASSERT_NOT_NULL(c);
    ASSERT(run_until(r, &cli.unbinds, 5));
    ASSERT_EQ(cli.reason, ECONNREFUSED);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(bad_reconnect_rc[i], -EINVAL);
    run_for(r, 0.05); /* nothing more happens to the object */
    ASSERT_EQ(cli.unbinds, 1);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(allocator_rules)
{
    int fd0 = open_fd_count();
    ASSERT_EQ(em_set_allocator(malloc, NULL, free), -EINVAL);
    em_reactor *r = new_reactor();
    ASSERT_EQ(em_set_allocator(malloc, realloc, free), -EBUSY);
    REACTOR_FREE_CHECKED(r);
    ASSERT_EQ(em_set_allocator(malloc, realloc, free), 0);
    ASSERT_EQ(em_set_allocator(NULL, NULL, NULL), 0);
    ASSERT_NO_FD_LEAK(fd0);
}
