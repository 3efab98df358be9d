/* examples/udp_echo as a user runs it: datagrams of many sizes, from two
 * client sockets taking turns, each come back whole and unchanged to the
 * socket that sent it, and to no other. */
#include "example_prog.h"

#include <netinet/in.h>

static const size_t sizes[] = {1, 2, 17, 512, 1472, 1473, 4096, 9000, 32768, 65507};

static int udp_client(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void send_to(int fd, int port, const unsigned char *buf, size_t len)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(sendto(fd, buf, len, 0, (struct sockaddr *)&sa, sizeof sa), (ssize_t)len);
}

/* The next datagram on fd, which must come from the server's port. */
static size_t receive_from(int fd, int port, unsigned char *buf, size_t size)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 5000) != 1)
        FAIL("no reply within 5 s");
    struct sockaddr_in from;
    socklen_t from_len = sizeof from;
    ssize_t n = recvfrom(fd, buf, size, MSG_TRUNC, (struct sockaddr *)&from, &from_len);
    ASSERT_GE(n, 0);
    ASSERT_EQ(ntohs(from.sin_port), port);
    return (size_t)n;
}

static void fill(unsigned char *buf, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = pattern_byte(seed + i);
}

TEST(datagrams_of_every_size_come_back_whole_to_their_sender)
{
    char *argv[] = {"udp_echo", "0", NULL};
    example_prog p = example_start("udp_echo", argv, false);
    int clients[2] = {udp_client(), udp_client()};
    static unsigned char out[65507], in[65536];
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            int me = (int)(i + (size_t)round) % 2, other = 1 - me;
            uint64_t seed = (uint64_t)round * 1000003u + i * 7919u;
            fill(out, sizes[i], seed);
            send_to(clients[me], p.port, out, sizes[i]);
            ASSERT_EQ(receive_from(clients[me], p.port, in, sizeof in), sizes[i]);
            if (memcmp(in, out, sizes[i]) != 0)
                FAIL("datagram of %zu bytes came back changed", sizes[i]);
            /* the reply went to its sender only */
            ASSERT_EQ(recv(clients[other], in, sizeof in, MSG_DONTWAIT), -1);
            ASSERT_EQ(errno, EAGAIN);
        }
    }
    close(clients[0]);
    close(clients[1]);
    example_stop(&p);
}
TEST_TIMEOUT(datagrams_of_every_size_come_back_whole_to_their_sender, 60);

/* Both clients send before either reads: the server keeps the two senders
 * apart however their datagrams interleave. */
TEST(interleaved_senders_each_get_their_own_replies)
{
    char *argv[] = {"udp_echo", "0", NULL};
    example_prog p = example_start("udp_echo", argv, false);
    int clients[2] = {udp_client(), udp_client()};
    unsigned char out[2][300], in[65536];
    for (int k = 0; k < 20; k++) {
        for (int c = 0; c < 2; c++) {
            fill(out[c], sizeof out[c], (uint64_t)(k * 2 + c) * 65537u);
            send_to(clients[c], p.port, out[c], 100 + (size_t)c * 200);
        }
        for (int c = 0; c < 2; c++) {
            ASSERT_EQ(receive_from(clients[c], p.port, in, sizeof in), 100 + (size_t)c * 200);
            ASSERT_EQ(memcmp(in, out[c], 100 + (size_t)c * 200), 0);
        }
    }
    close(clients[0]);
    close(clients[1]);
    example_stop(&p);
}
