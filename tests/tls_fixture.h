/*
 * What the TLS tests share: certificates made at start-up by
 * tests/tls/make-certs.sh in a temporary directory (removed at the end), and
 * option sets built on them. Include from one test file; call
 * TLS_FIXTURE() once at file scope.
 */
#ifndef EM_TEST_TLS_FIXTURE_H
#define EM_TEST_TLS_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#include "harness.h"

static char tls_dir[128];

static void tls_certs_make(void)
{
    char cmd[512];
    make_tmpdir(tls_dir, sizeof tls_dir);
    snprintf(cmd, sizeof cmd, "sh tests/tls/make-certs.sh '%s' >/dev/null 2>&1", tls_dir);
    if (system(cmd) != 0) {
        printf("FAIL tls fixture: tests/tls/make-certs.sh failed (is openssl installed?)\n");
        exit(1);
    }
}

static void tls_certs_remove(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tls_dir);
    if (system(cmd) != 0)
        printf("warning: could not remove %s\n", tls_dir);
}

#define TLS_FIXTURE()                                                         \
    __attribute__((constructor)) static void tls_fixture_register(void)      \
    {                                                                         \
        test_set_fixture(tls_certs_make, tls_certs_remove);                   \
    }                                                                         \
    struct tls_fixture_dummy

/* The path of a file made by make-certs.sh (a static buffer per call site
 * would be reused: each call returns one of 16 rotating buffers). */
static inline const char *tls_file(const char *name)
{
    static char bufs[16][256];
    static unsigned next;
    char *b = bufs[next++ % 16];
    snprintf(b, sizeof bufs[0], "%s/%s", tls_dir, name);
    return b;
}

/* A server with cert.pem and key (server.key unless given). */
static inline em_tls_opts tls_server_opts(const char *cert, const char *key)
{
    return (em_tls_opts){.cert_chain_file = tls_file(cert),
                         .private_key_file = tls_file(key ? key : "server.key")};
}

/* A client trusting the test CA. */
static inline em_tls_opts tls_client_opts(void)
{
    return (em_tls_opts){.ca_file = tls_file("ca.pem")};
}

/* The whole of a file, NUL-terminated (malloc'd). */
static inline char *tls_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = '\0';
    fclose(f);
    return s;
}

/* ------------------------------------------------------------- a pair
 *
 * A libem TLS server (TCP on 127.0.0.1, or a unix socket) whose accepted
 * connection records into srv.pool[0], and a libem TLS client recording
 * into cli. Both start TLS in post_init (rec.tls) unless the test starts
 * the client's itself (manual_client). srv is the pool's template: set its
 * fields before tls_pair_start. */
typedef struct tls_pair {
    em_reactor *r;
    em_server *s;
    rec srv, cli;
    em_tls_opts so, co;
    bool unix_sock, manual_client;
    char dir[64], path[128];
    int fd0;
} tls_pair;

static inline rec *tls_srv0(tls_pair *p) { return &p->srv.pool[0]; }

static inline bool tls_pair_handshaken(void *arg)
{
    tls_pair *p = arg;
    return p->cli.handshakes && p->srv.pool_used && p->srv.pool[0].handshakes;
}

static inline bool tls_pair_unbound(void *arg)
{
    tls_pair *p = arg;
    return p->cli.unbinds && p->srv.pool_used && p->srv.pool[0].unbinds;
}

/* Starts both ends; returns once the client exists (not connected yet). */
static inline void tls_pair_open(tls_pair *p, bool unix_sock)
{
    p->fd0 = open_fd_count();
    p->r = new_reactor();
    p->unix_sock = unix_sock;
    p->so = tls_server_opts("server.pem", NULL);
    p->co = tls_client_opts();
    p->srv.tls = &p->so;
    if (!p->manual_client)
        p->cli.tls = &p->co;
    rec_pool_new(&p->srv, 1);
    em_conn *c;
    if (unix_sock) {
        make_tmpdir(p->dir, sizeof p->dir);
        snprintf(p->path, sizeof p->path, "%s/tls.sock", p->dir);
        p->s = em_start_unix_server(p->r, p->path, &rec_handler, &p->srv);
        ASSERT_NOT_NULL(p->s);
        p->co.sni_hostname = "localhost"; /* a unix client has no host name */
        c = em_connect_unix(p->r, p->path, &rec_handler, &p->cli);
    } else {
        p->s = em_start_server(p->r, "127.0.0.1", 0, &rec_handler, &p->srv);
        ASSERT_NOT_NULL(p->s);
        c = em_connect(p->r, "127.0.0.1", em_server_port(p->s), &rec_handler, &p->cli);
    }
    ASSERT_NOT_NULL(c);
    if (!p->manual_client)
        ASSERT_EQ(p->cli.tls_rc, 0);
}

/* tls_pair_open, then runs until both handshakes completed. */
static inline void tls_pair_start(tls_pair *p, bool unix_sock)
{
    tls_pair_open(p, unix_sock);
    if (!run_until_pred(p->r, tls_pair_handshaken, p, 10))
        FAIL("no handshake: client %d (%s), server %d (%s)", p->cli.handshakes,
             p->cli.tls_error, p->srv.pool_used ? tls_srv0(p)->handshakes : -1,
             p->srv.pool_used ? tls_srv0(p)->tls_error : "not accepted");
    ASSERT_EQ(tls_srv0(p)->tls_rc, 0);
}

/* Waits for both unbinds, frees the reactor, checks for leaks; the recs stay
 * readable until tls_pair_free. */
static inline void tls_pair_finish(tls_pair *p)
{
    if (!run_until_pred(p->r, tls_pair_unbound, p, 10))
        FAIL("not unbound: client %d, server %d", p->cli.unbinds,
             p->srv.pool_used ? tls_srv0(p)->unbinds : -1);
    ASSERT_EQ(em_stop_server(p->s), 0);
    REACTOR_FREE_CHECKED(p->r);
    if (p->unix_sock)
        rm_tmpdir(p->dir);
    ASSERT_NO_FD_LEAK(p->fd0);
}

/* After the last look at the recs. */
static inline void tls_pair_free(tls_pair *p)
{
    rec_free(&p->srv);
    rec_free(&p->cli);
}

#endif
