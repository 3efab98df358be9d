/* A UDP echo server on 127.0.0.1: every datagram goes back, whole and
 * alone, to the address it came from.
 *
 * UDP has no connections: the one em_conn of em_open_datagram_socket
 * receives from everyone, one receive_data call per datagram. The sender's
 * address is known only during that call (em_get_peername), so the reply
 * is addressed explicitly with em_send_datagram.
 *
 * Usage: udp_echo [port]   (default 8083; 0 picks a free port)
 * Prints "ready port=N" once it is listening. */
#include <arpa/inet.h>
#include <em.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>

/* The sender as the literal and port em_send_datagram takes (it never
 * resolves names, so a literal is what it wants). */
static int sender_of(em_conn *c, char *host, size_t size, int *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int rc = em_get_peername(c, &ss, &len);
    if (rc < 0)
        return rc;
    if (ss.ss_family != AF_INET)
        return -EAFNOSUPPORT; /* bound to 127.0.0.1: only IPv4 arrives */
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
    if (!inet_ntop(AF_INET, &sin->sin_addr, host, (socklen_t)size))
        return -errno;
    *port = ntohs(sin->sin_port);
    return 0;
}

static void receive_datagram(em_conn *c, const char *data, size_t len)
{
    char host[INET_ADDRSTRLEN];
    int port = 0;
    int rc = sender_of(c, host, sizeof host, &port);
    if (rc == 0)
        rc = em_send_datagram(c, data, len, host, port);
    /* One lost reply is UDP's normal weather: say so and go on serving. */
    if (rc < 0)
        fprintf(stderr, "udp_echo: reply of %zu bytes: %s\n", len, em_strerror(rc));
}

static int bound_port(em_conn *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (em_get_sockname(c, &ss, &len) < 0 || ss.ss_family != AF_INET)
        return -1;
    return ntohs(((const struct sockaddr_in *)&ss)->sin_port);
}

int main(int argc, char **argv)
{
    static const em_handler echo = {.receive_data = receive_datagram};
    int port = argc > 1 ? atoi(argv[1]) : 8083;
    em_reactor *r = em_reactor_new(NULL);
    em_conn *sock = r ? em_open_datagram_socket(r, "127.0.0.1", port, &echo, NULL) : NULL;
    if (!sock) {
        fprintf(stderr, "udp_echo: %s\n", em_strerror(errno));
        em_reactor_free(r);
        return 1;
    }
    /* port 0 picks a free one: say which */
    printf("ready port=%d (%s backend)\n", bound_port(sock), em_backend_name(r));
    fflush(stdout);
    em_run(r);
    em_reactor_free(r);
    return 0;
}
