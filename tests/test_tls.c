/* TLS between libem's own server and client: the handshake, data both
 * ways, close_notify, the getters. */
#include "harness.h"
#include "tls_fixture.h"

#include <stdlib.h>

TLS_FIXTURE();

typedef struct pair {
    em_reactor *r;
    em_server *s;
    rec srv, cli;
    em_tls_opts so, co;
} pair;

/* A TLS server on 127.0.0.1 whose accepted connection records into
 * p->srv (a pool of one), and a client into p->cli, both started in
 * post_init with p->so and p->co. */
static void pair_start(pair *p, const em_handler *srv_h, const em_handler *cli_h, const char *host)
{
    p->r = new_reactor();
    p->srv.tls = &p->so;
    rec_pool_new(&p->srv, 1);
    p->s = em_start_server(p->r, "127.0.0.1", 0, srv_h, &p->srv);
    ASSERT_NOT_NULL(p->s);
    p->cli.tls = &p->co;
    em_conn *c = em_connect(p->r, host, em_server_port(p->s), cli_h, &p->cli);
    ASSERT_NOT_NULL(c);
}

static bool both_unbound(void *arg)
{
    pair *p = arg;
    return p->cli.unbinds && p->srv.pool[0].unbinds;
}

static void pair_finish(pair *p)
{
    ASSERT(run_until_pred(p->r, both_unbound, p, 10));
    em_stop_server(p->s);
    REACTOR_FREE_CHECKED(p->r);
}

static void pair_free(pair *p)
{
    rec_free(&p->srv);
    rec_free(&p->cli);
}

static void send_hello(em_conn *c, rec *x)
{
    (void)x;
    ASSERT_EQ(em_send_data(c, "hello", 5), 0);
}

static void close_on_5(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    (void)n;
    if (x->len >= 5)
        close_conn(c, true);
}

TEST(tls_echo_between_libem_server_and_client)
{
    pair p = {0};
    p.so = tls_server_opts("server.pem", NULL);
    p.co = tls_client_opts();
    p.srv.echo = true;
    p.cli.store = true;
    p.cli.on_completed = send_hello; /* before the handshake: queued */
    p.cli.on_data = close_on_5;
    pair_start(&p, &rec_handler, &rec_handler, "127.0.0.1");
    pair_finish(&p);
    rec *s = &p.srv.pool[0];
    ASSERT_EQ(p.cli.tls_rc, 0);
    ASSERT_EQ(s->tls_rc, 0);
    ASSERT_EQ(p.cli.handshakes, 1);
    ASSERT_EQ(s->handshakes, 1);
    ASSERT_EQ(p.cli.len, 5);
    ASSERT(memcmp(p.cli.buf, "hello", 5) == 0);
    ASSERT_EQ(p.cli.reason, 0);
    ASSERT_EQ(s->reason, 0); /* close_notify, not a truncation */
    pair_free(&p);
}
