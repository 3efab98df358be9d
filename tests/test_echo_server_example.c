/* examples/echo_server as a user runs it: it says its port at once (stdout
 * into a pipe), and every byte sent comes back unchanged, for messages of
 * 1 byte to 1 MiB, to several clients at once, each getting only its own;
 * a client leaving with its echo unread does not disturb the others. */
#include "example_prog.h"

#include <netinet/in.h>

static const size_t sizes[] = {1, 2, 100, 4095, 4096, 4097, 65536, 65537, 300000, 1 << 20};

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ASSERT_EQ(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    return fd;
}

static example_prog start(void)
{
    char *argv[] = {"echo_server", "0", NULL};
    return example_start("echo_server", argv, false);
}

typedef struct client {
    int fd;
    uint64_t seed; /* the bytes sent are pattern_byte(seed + offset) */
    size_t sent, got;
} client;

/* Each client sends len bytes and reads them back, all at once, writing
 * and reading as the sockets allow (neither side may block the other);
 * every byte is checked in place. */
static void echo_all(client *cl, int n, size_t len)
{
    static unsigned char buf[65536];
    for (int done = 0; done < n;) {
        struct pollfd pfd[8];
        ASSERT_LE(n, 8);
        for (int i = 0; i < n; i++)
            pfd[i] = (struct pollfd){.fd = cl[i].got < len ? cl[i].fd : -1,
                                     .events = POLLIN | (cl[i].sent < len ? POLLOUT : 0)};
        if (poll(pfd, (nfds_t)n, 10000) <= 0)
            FAIL("no progress in 10 s (%d of %d clients done)", done, n);
        for (int i = 0; i < n; i++) {
            client *c = &cl[i];
            if ((pfd[i].revents & POLLOUT) && c->sent < len) {
                size_t k = len - c->sent < sizeof buf ? len - c->sent : sizeof buf;
                for (size_t j = 0; j < k; j++)
                    buf[j] = pattern_byte(c->seed + c->sent + j);
                ssize_t w = write(c->fd, buf, k);
                if (w > 0)
                    c->sent += (size_t)w;
            }
            if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t r = read(c->fd, buf, sizeof buf);
                if (r == 0)
                    FAIL("client %d: EOF after %zu of %zu bytes", i, c->got, len);
                if (r < 0 && errno == EAGAIN)
                    continue;
                ASSERT_GT(r, 0);
                if (c->got + (size_t)r > len)
                    FAIL("client %d: more came back than was sent", i);
                for (ssize_t j = 0; j < r; j++)
                    if (buf[j] != pattern_byte(c->seed + c->got + (size_t)j))
                        FAIL("client %d: byte %zu of %zu differs", i, c->got + (size_t)j, len);
                c->got += (size_t)r;
                done += c->got == len;
            }
        }
    }
}

static void echo_one(int fd, size_t len, uint64_t seed)
{
    client c = {.fd = fd, .seed = seed};
    echo_all(&c, 1, len);
}

TEST(startup_line_names_the_port_and_backend)
{
    char *argv[] = {"echo_server", "0", NULL};
    example_prog p = example_spawn("echo_server", argv, false);
    char line[256];
    /* read through a pipe, as from "echo_server > log &": flushed at once */
    ASSERT(example_read_line(&p, line, sizeof line, 5000));
    int port = 0;
    char backend[32] = "";
    ASSERT_EQ(sscanf(line, "ready port=%d (%31[a-z_] backend)", &port, backend), 2);
    ASSERT_GT(port, 0);
    const char *want = getenv("EM_BACKEND");
    ASSERT_STREQ(backend, want && *want ? want : "epoll");
    int fd = connect_to(port);
    echo_one(fd, 5, 1);
    close(fd);
    example_stop(&p);
}

TEST(every_size_comes_back_byte_exact)
{
    example_prog p = start();
    int fd = connect_to(p.port);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        echo_one(fd, sizes[i], i * 7919u); /* one after another on one connection */
    example_expect_quiet(fd, 100);
    close(fd);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        fd = connect_to(p.port); /* and each on a connection of its own */
        echo_one(fd, sizes[i], 1000003u + i);
        example_expect_quiet(fd, 100);
        close(fd);
    }
    example_stop(&p);
}
TEST_TIMEOUT(every_size_comes_back_byte_exact, 60);

TEST(several_clients_at_once_each_get_their_own_bytes)
{
    example_prog p = start();
    client cl[5];
    for (int i = 0; i < 5; i++)
        cl[i] = (client){.fd = connect_to(p.port), .seed = (uint64_t)i * 5000011u};
    echo_all(cl, 5, 1 << 20);
    for (int i = 0; i < 5; i++) {
        example_expect_quiet(cl[i].fd, 100);
        close(cl[i].fd);
    }
    example_stop(&p);
}
TEST_TIMEOUT(several_clients_at_once_each_get_their_own_bytes, 60);

/* A client that sends a lot and leaves without reading: the server drops
 * its echo and goes on serving the one already connected and new ones. */
TEST(a_client_leaving_unread_leaves_the_others_served)
{
    example_prog p = start();
    int stay = connect_to(p.port);
    echo_one(stay, 1000, 1);
    int leave = connect_to(p.port);
    static unsigned char big[1 << 18];
    memset(big, 'x', sizeof big);
    ssize_t w = write(leave, big, sizeof big); /* as much as fits, none read */
    ASSERT_GT(w, 0);
    struct linger abort_close = {.l_onoff = 1, .l_linger = 0}; /* RST */
    ASSERT_EQ(setsockopt(leave, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close), 0);
    close(leave);
    echo_one(stay, 100000, 2);
    int fresh = connect_to(p.port);
    echo_one(fresh, 100000, 3);
    ASSERT_EQ(example_wait(&p, 0), -1); /* still running */
    close(stay);
    close(fresh);
    example_stop(&p);
}
