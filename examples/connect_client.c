/* Connects to HOST PORT, sends one line, prints the first line of the reply.
 * Usage: connect_client HOST PORT [MESSAGE]    (exit status 0 on a reply) */
#include <em.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct client {
    const char *message;
    char reply[4096];
    size_t len;
    bool replied;
};

static void connection_completed(em_conn *c) {
    struct client *cl = em_conn_arg(c);
    em_send_data(c, cl->message, strlen(cl->message));
    em_send_data(c, "\n", 1);
}

static void receive_data(em_conn *c, const char *data, size_t len) {
    struct client *cl = em_conn_arg(c);
    size_t room = sizeof cl->reply - 1 - cl->len;
    memcpy(cl->reply + cl->len, data, len < room ? len : room);
    cl->len += len < room ? len : room;
    if (memchr(data, '\n', len) || cl->len == sizeof cl->reply - 1)
        em_close_connection(c, false);
}

static void unbind(em_conn *c, int reason) {
    struct client *cl = em_conn_arg(c);
    if (reason != 0)
        fprintf(stderr, "connect_client: %s\n", em_strerror(reason));
    if (cl->len > 0) {
        cl->reply[cl->len] = '\0';
        cl->reply[strcspn(cl->reply, "\r\n")] = '\0';
        printf("%s\n", cl->reply);
        cl->replied = true;
    }
    em_stop(em_conn_reactor(c));
}

int main(int argc, char **argv) {
    static const em_handler handler = {
        .connection_completed = connection_completed,
        .receive_data = receive_data,
        .unbind = unbind,
    };
    if (argc < 3) {
        fprintf(stderr, "usage: %s HOST PORT [MESSAGE]\n", argv[0]);
        return 2;
    }
    struct client cl = {.message = argc > 3 ? argv[3] : "hello"};
    em_reactor *r = em_reactor_new(NULL);
    if (!r) {
        perror("connect_client");
        return 1;
    }
    em_conn *c = em_connect(r, argv[1], atoi(argv[2]), &handler, &cl);
    if (!c) {
        fprintf(stderr, "connect_client: %s\n", em_strerror(errno));
        em_reactor_free(r);
        return 1;
    }
    em_set_comm_inactivity_timeout(c, 10.0); /* give up on a silent server */
    em_run(r);
    em_reactor_free(r);
    return cl.replied ? 0 : 1;
}
