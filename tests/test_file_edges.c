/* Files sent on connections at their edges: regressions from review, each
 * failing before its fix. */
#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char path[64];
static int listener = -1, port;

static void make_file(size_t size)
{
    snprintf(path, sizeof path, "/tmp/libem-file-edges-%d", (int)getpid());
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, (off_t)size), 0);
    close(fd);
}

static void listen_plain(void)
{
    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ASSERT_EQ(bind(listener, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(listen(listener, 4), 0);
    socklen_t len = sizeof a;
    ASSERT_EQ(getsockname(listener, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
}

/* Turns for t seconds; the first connection to the listener is returned
 * in *peer (if asked) and the others are closed. */
static void turn_for(em_reactor *r, double t, int *peer)
{
    for (double end = now_mono() + t; now_mono() < end;) {
        ASSERT_GE(em_run_once(r, 0.01), 0);
        int s = accept(listener, NULL, NULL);
        if (s < 0)
            continue;
        if (peer && *peer < 0)
            *peer = s;
        else
            close(s);
    }
}

static void cleanup(em_reactor *r, int peer)
{
    REACTOR_FREE_CHECKED(r);
    if (peer >= 0)
        close(peer);
    close(listener);
    unlink(path);
}

/* ------------------------------------------- done cannot revive the conn */

static int done_calls, done_err, reconnect_rc, stream_rc, unbinds, unbind_reason;

static void done_reconnects(em_conn *c, int err, void *arg)
{
    (void)arg;
    done_calls++;
    done_err = err;
    reconnect_rc = em_reconnect(c, "127.0.0.1", port);
    stream_rc = em_stream_file_data(c, path, 0, done_reconnects, NULL);
}

static void count_unbind(em_conn *c, int reason)
{
    (void)c;
    unbinds++;
    unbind_reason = reason;
}

/* done with ECANCELED runs just before unbind; an em_reconnect there would
 * revive a connection whose unbind is still to come (and a file queued
 * then was freed while queued: a use after free). */
TEST(done_of_a_closed_connection_cannot_reconnect_it)
{
    make_file(1u << 20);
    listen_plain();
    static const em_handler h = {.unbind = count_unbind};
    em_reactor *r = em_reactor_new(NULL);
    em_conn *c = em_connect(r, "127.0.0.1", port, &h, NULL);
    ASSERT(c);
    ASSERT_EQ(em_stream_file_data(c, path, 0, done_reconnects, NULL), 0);
    ASSERT_EQ(em_close_connection(c, false), 0);
    turn_for(r, 0.3, NULL);
    ASSERT_EQ(done_calls, 1);
    ASSERT_EQ(done_err, ECANCELED);
    ASSERT_LT(reconnect_rc, 0);
    ASSERT_EQ(stream_rc, -ENOTCONN);
    ASSERT_EQ(unbinds, 1);
    ASSERT_EQ(em_connection_count(r), 0);
    cleanup(r, -1);
}

/* ----------------------------- done hears the error that failed the conn */

static void note_done(em_conn *c, int err, void *arg)
{
    (void)c;
    (void)arg;
    done_calls++;
    done_err = err;
}

TEST(done_gets_the_reset_that_ended_the_file)
{
    make_file(64u << 20);
    listen_plain();
    static const em_handler h = {.unbind = count_unbind};
    em_reactor *r = em_reactor_new(NULL);
    em_conn *c = em_connect(r, "127.0.0.1", port, &h, NULL);
    ASSERT(c);
    ASSERT_EQ(em_stream_file_data(c, path, 0, note_done, NULL), 0);
    int peer = -1;
    turn_for(r, 0.2, &peer);
    ASSERT_GE(peer, 0);
    ASSERT_GT(em_get_outbound_data_size(c), 0); /* mid-file */
    struct linger reset = {1, 0};
    ASSERT_EQ(setsockopt(peer, SOL_SOCKET, SO_LINGER, &reset, sizeof reset), 0);
    close(peer);
    turn_for(r, 0.3, NULL);
    ASSERT_EQ(unbinds, 1);
    ASSERT_NE(unbind_reason, 0);
    ASSERT_EQ(done_calls, 1);
    ASSERT_EQ(done_err, unbind_reason);
    cleanup(r, -1);
}

/* --------------------------------------- bytes after a file in the queue */

static void file_between_bytes(em_conn *c)
{
    ASSERT_EQ(em_send_data(c, "before", 6), 0);
    ASSERT_EQ(em_send_file_data(c, path), 0);
    /* the last chunk of the queue is the file's: these need a chunk of
     * their own, not the file's (which has no memory to fill) */
    ASSERT_EQ(em_send_data(c, "after", 5), 0);
    ASSERT_EQ(em_close_connection_after_writing(c), 0);
}

TEST(bytes_sent_after_a_file_follow_it)
{
    make_file(1000);
    listen_plain();
    static const em_handler h = {.post_init = file_between_bytes};
    em_reactor *r = em_reactor_new(NULL);
    ASSERT(em_connect(r, "127.0.0.1", port, &h, NULL));
    int peer = -1;
    turn_for(r, 0.2, &peer);
    ASSERT_GE(peer, 0);
    char got[2048];
    size_t len = 0;
    ssize_t n;
    while ((n = read(peer, got + len, sizeof got - len)) > 0)
        len += (size_t)n;
    ASSERT_EQ(len, 6 + 1000 + 5);
    ASSERT(!memcmp(got, "before", 6));
    for (size_t i = 6; i < 1006; i++)
        ASSERT_EQ(got[i], 0);
    ASSERT(!memcmp(got + 1006, "after", 5));
    cleanup(r, peer);
}

/* ------------------------------------ an empty file before the connect */

static void empty_file_while_connecting(em_conn *c)
{
    ASSERT_EQ(em_stream_file_data(c, path, 0, note_done, NULL), 0);
}

TEST(an_empty_file_queued_while_connecting_is_done_once_connected)
{
    make_file(0);
    listen_plain();
    static const em_handler h = {.post_init = empty_file_while_connecting};
    em_reactor *r = em_reactor_new(NULL);
    em_conn *c = em_connect(r, "127.0.0.1", port, &h, NULL);
    ASSERT(c);
    int peer = -1;
    turn_for(r, 0.2, &peer);
    ASSERT_EQ(done_calls, 1);
    ASSERT_EQ(done_err, 0);
    ASSERT_EQ(em_connection_count(r), 1); /* done, and still open */
    ASSERT_EQ(em_close_connection(c, false), 0);
    turn_for(r, 0.05, NULL);
    cleanup(r, peer);
}
