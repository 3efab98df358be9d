/* UDP sockets. A datagram goes out at once; only when the kernel refuses for
 * now does it wait, in order, in a small per-socket queue. */
#include "em-internal.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define DGRAMS_PER_EVENT 32
#define DGRAM_QUEUE_MAX (4u << 20)
#define UDP4_MAX 65507
#define UDP6_MAX 65527

typedef struct em_dgram_msg {
    struct em_dgram_msg *next;
    socklen_t addr_len;
    struct sockaddr_storage addr;
    size_t len;
    char data[];
} em_dgram_msg;

struct em_dgram {
    struct sockaddr_storage peer; /* the last sender */
    socklen_t peer_len;           /* 0: none yet */
    em_dgram_msg *head, *tail;
    size_t bytes; /* queued */
};

static int bind_udp(const char *host, int port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, service, &hints, &ai);
    if (rc) {
        int err = em__resolve_reason(rc, errno);
        em__set_last_resolve_error(rc);
        return -err;
    }
    int fd = -EM_ERESOLVE;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fd = -errno;
            continue;
        }
        if (bind(fd, p->ai_addr, p->ai_addrlen) == 0)
            break;
        int err = -errno;
        close(fd);
        fd = err;
    }
    freeaddrinfo(ai);
    return fd;
}

em_conn *em_open_datagram_socket(em_reactor *r, const char *host, int port,
                                 const em_handler *h, void *arg)
{
    em__set_last_resolve_error(0);
    if (!r || !host || !*host || !h || port < 0 || port > 65535) {
        errno = EINVAL;
        return NULL;
    }
    int fd = em__may_add(r);
    if (!fd)
        fd = bind_udp(host, port);
    if (fd < 0) {
        errno = -fd;
        return NULL;
    }
    em_dgram *d = em__calloc(1, sizeof *d);
    em_conn *c = d ? em__conn_new(r, fd, h, arg) : NULL;
    if (c && !em__conn_cold(c)) {
        em__conn_discard(c); /* closes fd */
        fd = -1;
        c = NULL;
    }
    if (!c) {
        em__free(d);
        if (fd >= 0)
            close(fd);
        errno = ENOMEM;
        return NULL;
    }
    c->flags |= EM_CF_DGRAM;
    c->cold->dgram = d;
    em__conn_begin(c);
    return c;
}

/* ------------------------------------------------------------- receive */

void em__dgram_on_event(em_conn *c, unsigned events)
{
    em_reactor *r = c->r;
    em_dgram *d = c->cold->dgram;
    if ((events & (EM_EV_READ | EM_EV_ERROR)) && !(c->flags & EM_CF_PAUSED)) {
        for (int i = 0; i < DGRAMS_PER_EVENT && c->state == EM_CS_OPEN &&
                        !(c->flags & EM_CF_PAUSED);
             i++) {
            struct sockaddr_storage from;
            socklen_t from_len = sizeof from;
            ssize_t n = recvfrom(c->io.fd, r->read_buf, EM_READ_BUF_SIZE, MSG_DONTWAIT,
                                 (struct sockaddr *)&from, &from_len);
            if (n < 0) {
                /* ICMP errors of earlier sends are not this socket's death */
                if (errno == EINTR || errno == ECONNREFUSED || errno == EHOSTUNREACH ||
                    errno == ENETUNREACH)
                    continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                    em__conn_fail(c, errno);
                break;
            }
            memcpy(&d->peer, &from, from_len);
            d->peer_len = from_len;
            em__count_in(c, (size_t)n);
            c->last_activity = r->now;
            em__conn_deliver(c, (size_t)n);
        }
    }
    if (c->state == EM_CS_OPEN && (events & EM_EV_WRITE) && (c->flags & EM_CF_WRITE_WAITED))
        em__conn_flush(c);
}

/* ---------------------------------------------------------------- send */

static ssize_t send_one(em_conn *c, const void *data, size_t len,
                        const struct sockaddr_storage *to, socklen_t to_len)
{
    ssize_t n;
    do
        n = sendto(c->io.fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL,
                   (const struct sockaddr *)to, to_len);
    while (n < 0 && errno == EINTR);
    if (n >= 0) {
        em__count_out(c, len);
        c->last_activity = c->r->now;
    }
    return n;
}

static bool refused_for_now(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS; }

static int enqueue(em_conn *c, const void *data, size_t len,
                   const struct sockaddr_storage *to, socklen_t to_len)
{
    em_dgram *d = c->cold->dgram;
    if (c->cold->dgram->bytes + len > DGRAM_QUEUE_MAX)
        return -ENOBUFS;
    em_dgram_msg *m = em__malloc(sizeof *m + len);
    if (!m)
        return -ENOMEM;
    m->next = NULL;
    m->addr = *to;
    m->addr_len = to_len;
    m->len = len;
    memcpy(m->data, data, len);
    if (d->tail)
        d->tail->next = m;
    else
        d->head = m;
    d->tail = m;
    d->bytes += len;
    c->flags |= EM_CF_WRITE_WAITED;
    em__conn_update_interest(c);
    return 0;
}

static int send_to(em_conn *c, const void *data, size_t len,
                   const struct sockaddr_storage *to, socklen_t to_len)
{
    if (!em__conn_usable(c) || (c->flags & EM_CF_CLOSE_AFTER_WRITE))
        return -ENOTCONN;
    size_t max = to->ss_family == AF_INET6 ? UDP6_MAX : UDP4_MAX;
    if (len > max)
        return -EMSGSIZE;
    if (c->cold->dgram->head || (c->flags & EM_CF_PAUSED))
        return enqueue(c, data, len, to, to_len);
    if (send_one(c, data, len, to, to_len) >= 0)
        return 0;
    if (refused_for_now(errno))
        return enqueue(c, data, len, to, to_len);
    return -errno;
}

int em__dgram_send_reply(em_conn *c, const void *data, size_t len)
{
    if (!c->cold->dgram->peer_len)
        return -EDESTADDRREQ;
    return send_to(c, data, len, &c->cold->dgram->peer, c->cold->dgram->peer_len);
}

int em_send_datagram(em_conn *c, const void *data, size_t len, const char *host, int port)
{
    if (!c || !(c->flags & EM_CF_DGRAM) || (!data && len) || !host || port <= 0 ||
        port > 65535)
        return -EINVAL;
    struct sockaddr_storage to;
    socklen_t to_len;
    if (em__sockaddr_parse(host, port, &to, &to_len) < 0)
        return -EINVAL;
    return send_to(c, data, len, &to, to_len);
}

/* Sends what waited, in order; called by em__conn_flush for datagrams. */
void em__dgram_flush(em_conn *c)
{
    em_dgram *d = c->cold->dgram;
    while (d->head) {
        em_dgram_msg *m = d->head;
        if (send_one(c, m->data, m->len, &m->addr, m->addr_len) < 0 && refused_for_now(errno))
            return; /* still waiting: WRITE interest stays */
        /* sent, or refused for good (dropped: UDP promises no delivery) */
        d->head = m->next;
        if (!d->head)
            d->tail = NULL;
        d->bytes -= m->len;
        em__free(m);
    }
    bool waited = c->flags & EM_CF_WRITE_WAITED;
    c->flags &= ~(uint32_t)EM_CF_WRITE_WAITED;
    em__conn_drained(c, waited);
}

void em__dgram_clear(em_conn *c)
{
    em_dgram *d = c->cold->dgram;
    while (d->head) {
        em_dgram_msg *m = d->head;
        d->head = m->next;
        em__free(m);
    }
    d->tail = NULL;
    d->bytes = 0;
}

void em__dgram_free(em_conn *c)
{
    em__dgram_clear(c);
    em__free(c->cold->dgram);
    c->cold->dgram = NULL;
}

size_t em__dgram_bytes(const em_conn *c) { return c->cold->dgram->bytes; }

int em__dgram_peer(const em_conn *c, struct sockaddr_storage *ss, socklen_t *len)
{
    if (!c->cold->dgram->peer_len)
        return -ENOTCONN;
    memcpy(ss, &c->cold->dgram->peer, c->cold->dgram->peer_len);
    *len = c->cold->dgram->peer_len;
    return 0;
}
