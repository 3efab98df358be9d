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

#endif
