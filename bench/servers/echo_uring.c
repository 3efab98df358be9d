/*
 * Echo server on raw io_uring (liburing): the io_uring floor, as
 * echo_epoll.c is the epoll one. One thread, one ring.
 *
 * The choices, those that mattered most when io_uring echo servers were
 * measured against raw epoll on kernel 6.x (SQPOLL, left out, lost badly
 * on 2 cores):
 * - IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN: completions
 *   are run only inside our io_uring_enter, not by task work interrupting
 *   us. ECHO_URING_DEFER=0 in the environment leaves DEFER_TASKRUN out
 *   (to measure it).
 * - one io_uring_enter per turn: every SQE a turn queued is submitted by
 *   the call that also waits for the next completions.
 * - a multishot accept straight into a sparse registered file table
 *   (direct descriptors): no accept4, no fd in the process table, no
 *   fget/fput per operation. TCP_NODELAY is set on the listener, which
 *   Linux copies to accepted sockets, since a direct descriptor cannot be
 *   given to setsockopt.
 * - a multishot receive per connection into a ring of provided buffers:
 *   one SQE per connection, not one per read. 64 KiB buffers, as big as
 *   echo_epoll's read: with 16 KiB ones the stream workload cost 1.7 x
 *   echo_epoll's CPU per message (four completions and copies where epoll
 *   has one read). 256 of them, touched at start-up (16 MiB).
 * - the echo is sent straight from the provided buffer the data came in
 *   (no copy, no poll first); the buffer goes back to the ring once the
 *   send is done. MSG_WAITALL makes the kernel itself send the rest of a
 *   send that went out short (it retries stream sockets then).
 *
 * Order: one send in flight per connection. Data that arrives meanwhile is
 * copied to the connection's queue and sent when the send in flight is
 * done; a send that completes short first sends the rest of its buffer.
 * Usage: echo_uring PORT (0 picks a free port).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum { OP_ACCEPT, OP_RECV, OP_SEND, OP_CLOSE };
#define NBUFS 256u /* a power of two, as a buffer ring needs */
#define BUFSZ 65536u
#define BGID 0
#define MAX_SLOTS 65536u

typedef struct conn {
    char *out;       /* what the send in flight sends; NULL when none */
    uint32_t off, len;
    int bid;         /* provided buffer under out, or -1 when out is ours */
    char *queue;     /* data that came while a send was in flight */
    size_t qlen, qcap;
    unsigned recv_armed : 1, closing : 1;
} conn;

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static unsigned nrecycled; /* buffers added to the ring this turn */
static conn *conns;
static unsigned nslots;
static int lfd;

static uint64_t tag(int op, unsigned slot) { return (uint64_t)op << 32 | slot; }

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (!sqe) { /* SQ full: hand it over now, the turn's batch is split */
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

static void recycle(int bid)
{
    io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, (unsigned short)bid,
                          io_uring_buf_ring_mask(NBUFS), (int)nrecycled);
    nrecycled++;
}

static void arm_accept(void)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_multishot_accept_direct(sqe, lfd, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, tag(OP_ACCEPT, 0));
}

static void arm_recv(unsigned slot)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_recv_multishot(sqe, (int)slot, NULL, 0, 0);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, tag(OP_RECV, slot));
    conns[slot].recv_armed = 1;
}

static void send_out(unsigned slot)
{
    conn *c = &conns[slot];
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, (int)slot, c->out + c->off, c->len - c->off, MSG_NOSIGNAL | MSG_WAITALL);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, tag(OP_SEND, slot));
}

/* Closes once nothing is in flight on the slot, so that no completion can
 * come for it after the slot is handed to the next connection. */
static void close_if_idle(unsigned slot)
{
    conn *c = &conns[slot];
    if (c->recv_armed || c->out)
        return;
    free(c->queue);
    memset(c, 0, sizeof *c);
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_close_direct(sqe, slot);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, tag(OP_CLOSE, slot));
}

/* An error on a send: the receive still armed must end before the close,
 * and a shutdown ends it (it completes with 0). */
static void abort_conn(unsigned slot)
{
    conn *c = &conns[slot];
    c->closing = 1;
    if (c->recv_armed) {
        struct io_uring_sqe *sqe = sqe_get();
        io_uring_prep_shutdown(sqe, (int)slot, SHUT_RDWR);
        sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS;
        io_uring_sqe_set_data64(sqe, tag(OP_CLOSE, slot));
    }
    close_if_idle(slot);
}

static int enqueue(conn *c, const char *data, size_t len)
{
    if (c->qlen + len > c->qcap) {
        size_t n = c->qcap ? c->qcap : BUFSZ;
        while (n < c->qlen + len)
            n *= 2;
        char *q = realloc(c->queue, n);
        if (!q)
            return -1;
        c->queue = q;
        c->qcap = n;
    }
    memcpy(c->queue + c->qlen, data, len);
    c->qlen += len;
    return 0;
}

static void on_accept(struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        arm_accept();
    if (cqe->res < 0) /* e.g. ENFILE: the table is full until a close */
        return;
    unsigned slot = (unsigned)cqe->res;
    memset(&conns[slot], 0, sizeof conns[slot]);
    arm_recv(slot);
}

static void on_recv(unsigned slot, struct io_uring_cqe *cqe)
{
    conn *c = &conns[slot];
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    int bid = (cqe->flags & IORING_CQE_F_BUFFER) ? (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT) : -1;
    if (!more)
        c->recv_armed = 0;
    if (cqe->res == -ENOBUFS) { /* the ring ran dry: try again */
        if (!more && !c->closing)
            arm_recv(slot);
        return;
    }
    if (cqe->res <= 0) { /* end of stream or error */
        c->closing = 1;
        close_if_idle(slot);
        return;
    }
    if (c->closing) {
        recycle(bid);
        close_if_idle(slot);
        return;
    }
    char *data = bufs + (size_t)bid * BUFSZ;
    if (!c->out) {
        c->out = data;
        c->off = 0;
        c->len = (uint32_t)cqe->res;
        c->bid = bid;
        send_out(slot);
    } else {
        int rc = enqueue(c, data, (size_t)cqe->res);
        recycle(bid);
        if (rc < 0)
            abort_conn(slot);
    }
    if (!more && !c->closing)
        arm_recv(slot);
}

static void on_send(unsigned slot, struct io_uring_cqe *cqe)
{
    conn *c = &conns[slot];
    if (cqe->res < 0) {
        if (c->bid >= 0)
            recycle(c->bid);
        else
            free(c->out);
        c->out = NULL;
        abort_conn(slot);
        return;
    }
    c->off += (uint32_t)cqe->res;
    if (c->off < c->len && !c->closing) {
        send_out(slot);
        return;
    }
    if (c->bid >= 0)
        recycle(c->bid);
    else
        free(c->out);
    c->out = NULL;
    if (c->closing) {
        close_if_idle(slot);
    } else if (c->qlen) { /* the queue becomes the next send, as it is */
        c->out = c->queue;
        c->off = 0;
        c->len = (uint32_t)c->qlen;
        c->bid = -1;
        c->queue = NULL;
        c->qlen = c->qcap = 0;
        send_out(slot);
    }
}

static void on_cqe(struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    unsigned slot = (unsigned)ud;
    switch ((int)(ud >> 32)) {
    case OP_ACCEPT: on_accept(cqe); break;
    case OP_RECV: on_recv(slot, cqe); break;
    case OP_SEND: on_send(slot, cqe); break;
    default: break; /* a close or shutdown that failed: nothing to undo */
    }
}

static int listen_on(int port, struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *sa = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)sa, sizeof *sa) < 0 || listen(fd, 1024) < 0 ||
        getsockname(fd, (struct sockaddr *)sa, &len) < 0)
        return -1;
    return fd;
}

/* The ring, its file table (as big as RLIMIT_NOFILE lets it be, which the
 * kernel checks) and its provided buffers, touched now so that they count
 * as the server's start-up memory, not as memory per connection. */
static int setup(void)
{
    struct io_uring_params p = {0};
    p.flags = IORING_SETUP_SINGLE_ISSUER;
    const char *defer = getenv("ECHO_URING_DEFER");
    if (!defer || strcmp(defer, "0") != 0)
        p.flags |= IORING_SETUP_DEFER_TASKRUN;
    int rc = io_uring_queue_init_params(4096, &ring, &p);
    if (rc < 0)
        return rc;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    nslots = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < MAX_SLOTS ? (unsigned)rl.rlim_cur
                                                                           : MAX_SLOTS;
    conns = calloc(nslots, sizeof *conns);
    if (!conns)
        return -ENOMEM;
    if ((rc = io_uring_register_files_sparse(&ring, nslots)) < 0)
        return rc;
    size_t brsz = NBUFS * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, brsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    bufs = malloc((size_t)NBUFS * BUFSZ);
    if (mem == MAP_FAILED || !bufs)
        return -ENOMEM;
    /* not 0: the compiler may make malloc + memset 0 a calloc, which touches nothing */
    memset(bufs, 1, (size_t)NBUFS * BUFSZ);
    br = mem;
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg = {.ring_addr = (uintptr_t)br, .ring_entries = NBUFS, .bgid = BGID};
    if ((rc = io_uring_register_buf_ring(&ring, &reg, 0)) < 0)
        return rc;
    for (unsigned i = 0; i < NBUFS; i++)
        recycle((int)i);
    io_uring_buf_ring_advance(br, (int)nrecycled);
    nrecycled = 0;
    return 0;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in sa;
    lfd = listen_on(port, &sa);
    if (lfd < 0) {
        perror("echo_uring");
        return 1;
    }
    int rc = setup();
    if (rc < 0) {
        fprintf(stderr, "echo_uring: io_uring set-up: %s\n", strerror(-rc));
        return 1;
    }
    arm_accept();
    printf("ready server=uring pid=%d port=%d\n", (int)getpid(), ntohs(sa.sin_port));
    fflush(stdout);

    for (;;) {
        rc = io_uring_submit_and_wait(&ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            fprintf(stderr, "echo_uring: io_uring_enter: %s\n", strerror(-rc));
            return 1;
        }
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            on_cqe(cqe);
            n++;
        }
        io_uring_cq_advance(&ring, n);
        if (nrecycled) { /* before the next enter, which may want them */
            io_uring_buf_ring_advance(br, (int)nrecycled);
            nrecycled = 0;
        }
    }
}
