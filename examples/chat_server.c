/* A small multi-user chat server.
 *
 * Usage: chat_server [port]     (default 8023, on 127.0.0.1; 0 picks a free one)
 * Join with: nc 127.0.0.1 8023
 * Prints "ready port=N" once it is listening, then who joins and leaves.
 *
 * Every line a user sends goes to the others as "<name> line". Commands:
 * /nick NAME, /who, /quit. Ctrl-C (SIGINT) or SIGTERM stops the server.
 */
#include <em.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 20
#define LINE_MAX_LEN 1024

struct user {
    struct user *next;
    em_conn *conn;
    bool quitting;
    char name[NAME_MAX_LEN + 1];
    size_t len; /* bytes in line */
    char line[LINE_MAX_LEN];
};

struct chat {
    em_reactor *reactor;
    struct user *users;
    unsigned guests; /* numbers the default names */
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int signo) {
    (void)signo;
    stop_requested = 1;
}

/* A periodic timer turns the flag set by the signal handler into em_stop(). */
static void check_stop(em_reactor *r, void *arg) {
    (void)arg;
    if (stop_requested)
        em_stop(r);
}

static void say(struct user *u, const char *fmt, ...) {
    char buf[LINE_MAX_LEN + 64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        em_send_data(u->conn, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* Sends text to every user but except (which may be NULL). */
static void broadcast(struct chat *chat, const struct user *except, const char *text) {
    for (struct user *u = chat->users; u; u = u->next)
        if (u != except && !u->quitting)
            em_send_data(u->conn, text, strlen(text));
}

static struct user *find_user(struct chat *chat, const char *name) {
    for (struct user *u = chat->users; u; u = u->next)
        if (strcmp(u->name, name) == 0)
            return u;
    return NULL;
}

static bool valid_name(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (name[i] <= ' ' || name[i] > '~')
            return false;
    return true;
}

static void post_init(em_conn *c) {
    struct chat *chat = em_conn_arg(c);
    struct user *u = calloc(1, sizeof *u);
    if (!u) {
        em_close_connection(c, false);
        return;
    }
    u->conn = c;
    snprintf(u->name, sizeof u->name, "guest%u", ++chat->guests);
    u->next = chat->users;
    chat->users = u;
    em_conn_set_user(c, u);

    char addr[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (em_get_peername(c, &ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof addr);
            port = ntohs(sin->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof addr);
            port = ntohs(sin6->sin6_port);
        }
    }
    printf("%s joined from %s:%d\n", u->name, addr, port);

    say(u, "Welcome, %s. Commands: /nick NAME, /who, /quit\n", u->name);
    char text[64];
    snprintf(text, sizeof text, "* %s joined\n", u->name);
    broadcast(chat, u, text);
}

static void handle_line(struct chat *chat, struct user *u, char *line) {
    if (strncmp(line, "/nick ", 6) == 0) {
        const char *name = line + 6;
        if (!valid_name(name)) {
            say(u, "* names are 1 to %d printable characters, no spaces\n", NAME_MAX_LEN);
        } else if (find_user(chat, name)) {
            say(u, "* %s is taken\n", name);
        } else {
            char text[2 * NAME_MAX_LEN + 32];
            snprintf(text, sizeof text, "* %s is now known as %s\n", u->name, name);
            broadcast(chat, NULL, text);
            printf("%s", text + 2);
            snprintf(u->name, sizeof u->name, "%s", name);
        }
    } else if (strcmp(line, "/who") == 0) {
        for (struct user *o = chat->users; o; o = o->next)
            say(u, "* %s%s\n", o->name, o == u ? " (you)" : "");
    } else if (strcmp(line, "/quit") == 0) {
        say(u, "* bye\n");
        u->quitting = true;
        em_close_connection_after_writing(u->conn);
    } else if (line[0] == '/') {
        say(u, "* unknown command; try /nick NAME, /who, /quit\n");
    } else if (line[0] != '\0') {
        char text[NAME_MAX_LEN + LINE_MAX_LEN + 8];
        snprintf(text, sizeof text, "<%s> %s\n", u->name, line);
        broadcast(chat, u, text);
    }
}

static void receive_data(em_conn *c, const char *data, size_t len) {
    struct chat *chat = em_conn_arg(c);
    struct user *u = em_conn_user(c);
    for (size_t i = 0; i < len && u && !u->quitting; i++) {
        if (data[i] == '\n' || u->len == LINE_MAX_LEN - 1) {
            /* A line too long for the buffer is cut into several. */
            if (u->len > 0 && u->line[u->len - 1] == '\r')
                u->len--;
            u->line[u->len] = '\0';
            u->len = 0;
            handle_line(chat, u, u->line);
            if (data[i] == '\n')
                continue;
        }
        u->line[u->len++] = data[i];
    }
}

static void unbind(em_conn *c, int reason) {
    struct chat *chat = em_conn_arg(c);
    struct user *u = em_conn_user(c);
    if (!u)
        return;
    for (struct user **p = &chat->users; *p; p = &(*p)->next) {
        if (*p == u) {
            *p = u->next;
            break;
        }
    }
    printf("%s left%s%s\n", u->name, reason ? ": " : "", reason ? em_strerror(reason) : "");
    char text[64];
    snprintf(text, sizeof text, "* %s left\n", u->name);
    broadcast(chat, NULL, text);
    free(u);
}

int main(int argc, char **argv) {
    static const em_handler handler = {
        .post_init = post_init,
        .receive_data = receive_data,
        .unbind = unbind,
    };
    int port = 8023;
    if (argc > 1) {
        char *end;
        long p = strtol(argv[1], &end, 10);
        if (*argv[1] == '\0' || *end != '\0' || p < 0 || p > 65535) {
            fprintf(stderr, "usage: %s [port]\n", argv[0]);
            return 2;
        }
        port = (int)p;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct chat chat = {0};
    chat.reactor = em_reactor_new(NULL);
    if (!chat.reactor) {
        fprintf(stderr, "chat_server: %s\n", em_strerror(errno));
        return 1;
    }
    em_server *server = em_start_server(chat.reactor, "127.0.0.1", port, &handler, &chat);
    if (!server) {
        fprintf(stderr, "chat_server: 127.0.0.1:%d: %s\n", port, em_strerror(errno));
        em_reactor_free(chat.reactor);
        return 1;
    }
    em_add_periodic_timer(chat.reactor, 0.2, check_stop, NULL);

    port = em_server_port(server);
    printf("ready port=%d (%s backend)\n", port, em_backend_name(chat.reactor));
    printf("join with: nc 127.0.0.1 %d    (Ctrl-C stops the server)\n", port);
    em_run(chat.reactor); /* returns after em_stop, every user unbound */
    em_reactor_free(chat.reactor);
    printf("chat server stopped\n");
    return 0;
}
