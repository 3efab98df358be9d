/*
 * Tiny test framework for libem.
 *
 *   TEST(name) { ... }             defines and registers a case
 *   TEST_TIMEOUT(name, secs);      overrides the 20 s default for one case
 *   test_set_fixture(setup, down)  (from a constructor) work around all cases
 *
 * Every case runs in a forked child under alarm(timeout). The runner prints
 * "ok name" or "FAIL name: reason" per case and, as its last line,
 * "N passed, N failed"; it exits 1 when any case failed. argv[1], when given,
 * runs only the cases whose name contains it.
 */
#ifndef EM_TEST_HARNESS_H
#define EM_TEST_HARNESS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "em.h"

typedef void (*test_fn)(void);

void test_register(const char *name, test_fn fn);
void test_set_timeout(const char *name, int secs);
/* setup runs in the runner before the first case, teardown after the last
 * (cases inherit what setup made); exit from setup to fail them all. */
void test_set_fixture(void (*setup)(void), void (*teardown)(void));
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

#define TEST(name)                                                            \
    static void test_##name(void);                                            \
    __attribute__((constructor)) static void test_reg_##name(void)           \
    {                                                                         \
        test_register(#name, test_##name);                                    \
    }                                                                         \
    static void test_##name(void)

#define TEST_TIMEOUT(name, secs)                                              \
    __attribute__((constructor)) static void test_tmo_##name(void)           \
    {                                                                         \
        test_set_timeout(#name, (secs));                                      \
    }                                                                         \
    struct test_tmo_dummy_##name

/* ------------------------------------------------------------ assertions */

#define FAIL(...) test_fail(__FILE__, __LINE__, __VA_ARGS__)

#define ASSERT(cond)                                                          \
    do {                                                                      \
        if (!(cond))                                                          \
            test_fail(__FILE__, __LINE__, "ASSERT(%s)", #cond);               \
    } while (0)

#define ASSERT_CMP_(a, b, op)                                                 \
    do {                                                                      \
        int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                         \
        if (!(a_ op b_))                                                      \
            test_fail(__FILE__, __LINE__, "%s %s %s: %lld vs %lld", #a, #op,  \
                      #b, (long long)a_, (long long)b_);                      \
    } while (0)

#define ASSERT_EQ(a, b) ASSERT_CMP_(a, b, ==)
#define ASSERT_NE(a, b) ASSERT_CMP_(a, b, !=)
#define ASSERT_GE(a, b) ASSERT_CMP_(a, b, >=)
#define ASSERT_LE(a, b) ASSERT_CMP_(a, b, <=)
#define ASSERT_GT(a, b) ASSERT_CMP_(a, b, >)
#define ASSERT_LT(a, b) ASSERT_CMP_(a, b, <)

#define ASSERT_DBL_GE(a, b)                                                   \
    do {                                                                      \
        double a_ = (double)(a), b_ = (double)(b);                            \
        if (!(a_ >= b_))                                                      \
            test_fail(__FILE__, __LINE__, "%s >= %s: %.6f vs %.6f", #a, #b,   \
                      a_, b_);                                                \
    } while (0)
#define ASSERT_DBL_LE(a, b) ASSERT_DBL_GE(b, a)

#define ASSERT_STREQ(a, b)                                                    \
    do {                                                                      \
        const char *a_ = (a), *b_ = (b);                                      \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                  \
            test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" vs \"%s\"", #a,   \
                      #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");             \
    } while (0)

#define ASSERT_NULL(p)                                                        \
    do {                                                                      \
        const void *p_ = (const void *)(p);                                   \
        if (p_ != NULL)                                                       \
            test_fail(__FILE__, __LINE__, "%s is %p, expected NULL", #p, p_); \
    } while (0)

#define ASSERT_NOT_NULL(p)                                                    \
    do {                                                                      \
        if ((p) == NULL)                                                      \
            test_fail(__FILE__, __LINE__, "%s is NULL (errno %d: %s)", #p,    \
                      errno, strerror(errno));                                \
    } while (0)

/* NULL return with a given errno. */
#define ASSERT_NULL_ERRNO(expr, err)                                          \
    do {                                                                      \
        errno = 0;                                                            \
        const void *p_ = (const void *)(expr);                                \
        int e_ = errno;                                                       \
        if (p_ != NULL)                                                       \
            test_fail(__FILE__, __LINE__, "%s returned %p, expected NULL",    \
                      #expr, p_);                                             \
        if (e_ != (err))                                                      \
            test_fail(__FILE__, __LINE__, "%s: errno %d (%s), expected %d",   \
                      #expr, e_, strerror(e_), (int)(err));                   \
    } while (0)

#define ASSERT_NO_FD_LEAK(start) ASSERT_EQ(open_fd_count(), (start))

/* Asserts no connection and no timer is left, frees the reactor. */
#define REACTOR_FREE_CHECKED(r)                                               \
    do {                                                                      \
        ASSERT_EQ(em_connection_count(r), 0);                                 \
        ASSERT_EQ(em_timer_count(r), 0);                                      \
        em_reactor_free(r);                                                   \
    } while (0)

/* --------------------------------------------------------------- helpers */

int open_fd_count(void);
double now_mono(void);

/* Runs em_run_once until *flag is non-zero or timeout_s passed. Returns
 * whether the flag is set. */
bool run_until(em_reactor *r, const volatile int *flag, double timeout_s);
/* Same with a predicate. */
bool run_until_pred(em_reactor *r, bool (*pred)(void *arg), void *arg, double timeout_s);
/* Runs turns for about secs seconds (for "nothing happens" checks). */
void run_for(em_reactor *r, double secs);

/* A new reactor with the backend of $EM_BACKEND (or the default); asserts. */
em_reactor *new_reactor(void);
/* A reactor on io_uring, or NULL (asserting why) where the kernel or the
 * build has none: the io_uring cases return early then. */
em_reactor *new_uring_reactor(void);
/* Forks; the child frees r and exits; asserts that it exited with 0. */
void free_in_forked_child(em_reactor *r);

/* Raw sockets for tests (blocking unless said otherwise). */
int tcp_listen_raw(const char *ip, int backlog, int *port_out); /* port 0 */
int tcp_connect_raw(const char *ip, int port);                  /* blocking */
/* System call nr fails with err from now on, in this process (a test
 * case's own) and the children it makes (a seccomp filter). */
void refuse_syscall(long nr, int err);
int unix_connect_raw(const char *path);                         /* blocking */
/* A live unix listener at path that does not accept: its backlog is full of
 * clients (their descriptors in q->fds, q->n of them). Returns the
 * listener; unix_full_close closes it and the clients. */
typedef struct unix_full {
    int listener, fds[8], n;
} unix_full;
void unix_listen_full(const char *path, unix_full *q);
void unix_full_close(unix_full *q);
void set_nonblock(int fd);
/* Writes all of buf (blocking fd). */
void write_all(int fd, const void *buf, size_t len);
/* A free TCP port on 127.0.0.1 (bound, then closed). */
int free_port(void);

/* Temporary directory (mkdtemp under /tmp); rm_tmpdir removes it and its
 * entries (one level). */
void make_tmpdir(char *buf, size_t size);
void rm_tmpdir(const char *dir);

/* Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft
 * limit. */
long raise_nofile(void);

/* Deterministic PRNG (xorshift64*). */
uint64_t rng_next(uint64_t *state);
/* Byte i of the test pattern stream. */
static inline unsigned char pattern_byte(uint64_t i)
{
    uint64_t x = i * 0x9E3779B97F4A7C15ull;
    return (unsigned char)((x >> 29) ^ (x >> 47) ^ i);
}
/* n bytes of the pattern stream from byte off. */
static inline void fill_pattern(char *buf, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)pattern_byte(off + i);
}

/* ------------------------------------------------- a recording handler
 *
 * rec_handler records every callback into a struct rec: the connection's
 * arg for outbound connections; for a server whose arg has a pool, each
 * accepted connection takes the next rec of the pool. The rec is kept as the
 * connection's user data. It fails the test when unbind runs twice, runs
 * inside close_conn(), or when a callback comes after unbind.
 */
typedef struct rec rec;
struct rec {
    /* configuration */
    bool echo;          /* send back what arrives */
    bool check_pattern; /* incoming bytes must follow pattern_byte() */
    bool store;         /* keep incoming bytes in buf */
    rec *pool;          /* server arg: accepted connections use pool[i] */
    int pool_size, pool_used;
    void (*on_post_init)(em_conn *c, rec *x);
    void (*on_completed)(em_conn *c, rec *x);
    void (*on_data)(em_conn *c, rec *x, const char *d, size_t n);
    void (*on_unbind)(em_conn *c, rec *x, int reason);
    void (*on_drained)(em_conn *c, rec *x);
    /* TLS: em_start_tls(c, tls) in post_init, its result in tls_rc */
    const em_tls_opts *tls;
    void (*on_handshake)(em_conn *c, rec *x);
    /* rec_verify_handler's ssl_verify_peer: NULL answers em_tls_preverify_ok */
    bool (*on_verify)(em_conn *c, rec *x, const char *pem);
    void *ctx;
    int tag;
    /* observations */
    em_conn *conn; /* NULL once unbound */
    em_sig sig;
    int post_inits, completed, unbinds, reason, drained, data_calls;
    int tls_rc, handshakes, verifies;
    char tls_error[256]; /* em_tls_error_string in unbind */
    uint64_t bytes_in;
    char *buf;
    size_t len, cap;
    bool sig_found_in_unbind; /* em_conn_by_sig(sig) != NULL inside unbind */
};

extern const em_handler rec_handler;
/* rec_handler with ssl_verify_peer. */
extern const em_handler rec_verify_handler;
/* Live connections recorded by rec_handler (post_init - unbind). */
extern int rec_live;
/* Non-zero while close_conn() is inside em_close_connection. */
extern int in_em_call;
int close_conn(em_conn *c, bool after_writing);
void rec_free(rec *x);

/* Pool of n recs for a server arg (all with the same configuration). */
rec *rec_pool_new(rec *server_arg, int n);

#endif
