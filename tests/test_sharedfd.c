/* A reactor freed in a forked child must leave the parent's registrations
 * alone: the child shares the parent's epoll set. */
#include "harness.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------ freed in a forked child */

static void count_data(em_conn *c, const char *d, size_t n)
{
    (void)d;
    *(int *)em_conn_arg(c) += (int)n;
}

static const em_handler counting_handler = {.receive_data = count_data};

TEST(reactor_freed_in_forked_child_leaves_parent_registrations)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int got = 0;
    em_server *srv = em_start_server(r, "127.0.0.1", 0, &counting_handler, &got);
    ASSERT_NOT_NULL(srv);
    int client = tcp_connect_raw("127.0.0.1", em_server_port(srv));
    write_all(client, "a", 1);
    ASSERT(run_until(r, &got, 5));

    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        alarm(5);
        em_reactor_free(r);
        _exit(0);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    write_all(client, "bc", 2);
    double end = now_mono() + 3;
    while (got < 3 && now_mono() < end)
        em_run_once(r, 0.05);
    ASSERT_EQ(got, 3);
    int other = tcp_connect_raw("127.0.0.1", em_server_port(srv));
    write_all(other, "d", 1);
    end = now_mono() + 3;
    while (got < 4 && now_mono() < end)
        em_run_once(r, 0.05);
    ASSERT_EQ(got, 4);

    close(client);
    close(other);
    em_stop_server(srv);
    run_for(r, 0.1);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}
