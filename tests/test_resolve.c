/* Why a name did not resolve: em_resolve_error on a connection (em_connect,
 * em_bind_connect, em_reconnect, resolved on the pool) and
 * em_last_resolve_error after em_start_server and em_open_datagram_socket
 * (resolved on the calling thread).
 *
 * No name server is asked: this file defines getaddrinfo, which the static
 * link gives libem in place of libc's. Names under .test (a reserved
 * domain) fail with the code their first label names, or, for ok.test,
 * resolve as 127.0.0.1; other names go to libc's getaddrinfo (only
 * "localhost" and literals are used, which never leave the machine). Every
 * case first checks that libem calls this getaddrinfo at all. */
#include "harness.h"

#include <dlfcn.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const struct fake {
    const char *name;
    int code;
} fakes[] = {
    {"noname.test", EAI_NONAME},         {"again.test", EAI_AGAIN},
    {"nodata.test", EAI_NODATA},         {"addrfamily.test", EAI_ADDRFAMILY},
    {"fail.test", EAI_FAIL},             {"memory.test", EAI_MEMORY},
    {"system.test", EAI_SYSTEM},
};

static int calls; /* atomically: the pool's threads call it too */
static char last_name[64];

static int real_getaddrinfo(const char *node, const char *service,
                            const struct addrinfo *hints, struct addrinfo **res)
{
    typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *,
                          struct addrinfo **);
    static gai_fn real;
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
    if (!real)
        return EAI_FAIL;
    return real(node, service, hints, res);
}

/* ::1, then 127.0.0.1: two answers of libc's chained (freeaddrinfo frees
 * node by node). */
static int dual_stack(const char *service, const struct addrinfo *hints,
                      struct addrinfo **res)
{
    struct addrinfo *v6 = NULL, *v4 = NULL;
    int rc = real_getaddrinfo("::1", service, hints, &v6);
    if (rc)
        return rc;
    rc = real_getaddrinfo("127.0.0.1", service, hints, &v4);
    if (rc) {
        freeaddrinfo(v6);
        return rc;
    }
    struct addrinfo *last = v6;
    while (last->ai_next)
        last = last->ai_next;
    last->ai_next = v4;
    *res = v6;
    return 0;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
    if (node)
        snprintf(last_name, sizeof last_name, "%s", node);
    size_t n = node ? strlen(node) : 0;
    if (n < 5 || strcmp(node + n - 5, ".test") != 0)
        return real_getaddrinfo(node, service, hints, res);
    if (!strcmp(node, "ok.test"))
        return real_getaddrinfo("127.0.0.1", service, hints, res);
    if (!strcmp(node, "dual.test")) /* ::1 first, as "localhost" often is */
        return dual_stack(service, hints, res);
    for (size_t i = 0; i < sizeof fakes / sizeof fakes[0]; i++) {
        if (!strcmp(node, fakes[i].name)) {
            if (fakes[i].code == EAI_SYSTEM)
                errno = EMFILE;
            return fakes[i].code;
        }
    }
    return EAI_NONAME; /* never a query for a .test name */
}

/* What the test servers accept: counted, closed by the peer. */
static int accepted, accepted_unbound;

static void sink_post_init(em_conn *c)
{
    (void)c;
    accepted++;
}

static void sink_unbind(em_conn *c, int reason)
{
    (void)c;
    (void)reason;
    accepted_unbound++;
}

static const em_handler sink_h = {.post_init = sink_post_init, .unbind = sink_unbind};

static bool all_accepted_unbound(void *arg)
{
    (void)arg;
    return accepted_unbound == accepted;
}

/* libem's calls come here: "localhost" through em_start_server is seen. */
static void require_interposed(em_reactor *r)
{
    int before = __atomic_load_n(&calls, __ATOMIC_SEQ_CST);
    em_server *s = em_start_server(r, "localhost", 0, &sink_h, NULL);
    ASSERT_NOT_NULL(s);
    em_stop_server(s);
    if (__atomic_load_n(&calls, __ATOMIC_SEQ_CST) == before)
        FAIL("libem does not call this file's getaddrinfo: nothing to test safely");
    ASSERT_STREQ(last_name, "localhost");
    ASSERT_EQ(em_last_resolve_error(), 0);
}

/* The unbind of a connection records em_resolve_error there. */
typedef struct outcome {
    int unbinds, reason, gai, completed;
    bool reconnect_to_ok;
    int port;
} outcome;

static void out_unbind(em_conn *c, int reason)
{
    outcome *o = em_conn_arg(c);
    o->unbinds++;
    o->reason = reason;
    o->gai = em_resolve_error(c);
    if (o->reconnect_to_ok) {
        o->reconnect_to_ok = false;
        ASSERT_EQ(em_reconnect(c, "ok.test", o->port), 0);
        ASSERT_EQ(em_resolve_error(c), 0); /* cleared by em_reconnect */
    }
}

static void out_completed(em_conn *c)
{
    outcome *o = em_conn_arg(c);
    o->completed++;
    ASSERT_EQ(em_resolve_error(c), 0);
    em_close_connection(c, false);
}

static const em_handler out_h = {.connection_completed = out_completed,
                                 .unbind = out_unbind};

static void connect_and_wait(em_reactor *r, const char *bind_host, const char *host, int port,
                             outcome *o)
{
    ASSERT_NOT_NULL(em_bind_connect(r, bind_host, 0, host, port, &out_h, o));
    ASSERT(run_until(r, &o->unbinds, 10));
}

TEST(connect_tells_why_a_name_failed)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    require_interposed(r);
    for (size_t i = 0; i < sizeof fakes / sizeof fakes[0]; i++) {
        outcome o = {0};
        ASSERT_NOT_NULL(em_connect(r, fakes[i].name, 80, &out_h, &o));
        ASSERT(run_until(r, &o.unbinds, 10));
        int want = fakes[i].code == EAI_MEMORY   ? ENOMEM
                   : fakes[i].code == EAI_SYSTEM ? EMFILE
                                                 : EM_ERESOLVE;
        if (o.reason != want || o.gai != fakes[i].code)
            FAIL("%s: reason %d, em_resolve_error %d (%s); expected %d, %d", fakes[i].name,
                 o.reason, o.gai, gai_strerror(o.gai), want, fakes[i].code);
        ASSERT_EQ(o.completed, 0);
    }
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(connect_text_of_the_code)
{
    em_reactor *r = new_reactor();
    require_interposed(r);
    outcome o = {0};
    ASSERT_NOT_NULL(em_connect(r, "again.test", 80, &out_h, &o));
    ASSERT(run_until(r, &o.unbinds, 10));
    ASSERT_EQ(o.reason, EM_ERESOLVE);
    ASSERT_EQ(o.gai, EAI_AGAIN);
    /* the text is getaddrinfo's own, not em_strerror's */
    ASSERT_STREQ(gai_strerror(o.gai), gai_strerror(EAI_AGAIN));
    ASSERT(strcmp(gai_strerror(o.gai), gai_strerror(EAI_NONAME)) != 0);
    REACTOR_FREE_CHECKED(r);
}

TEST(connect_that_resolves_or_fails_otherwise_has_no_code)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    require_interposed(r);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &sink_h, NULL);
    ASSERT_NOT_NULL(s);
    int port = em_server_port(s);
    outcome o = {0};
    connect_and_wait(r, NULL, "ok.test", port, &o); /* a name that resolves */
    ASSERT_EQ(o.completed, 1);
    ASSERT_EQ(o.reason, 0);
    ASSERT_EQ(o.gai, 0);
    ASSERT(run_until_pred(r, all_accepted_unbound, NULL, 5));
    em_stop_server(s);
    o = (outcome){0};
    connect_and_wait(r, NULL, "ok.test", port, &o); /* resolved, then refused */
    ASSERT_EQ(o.reason, ECONNREFUSED);
    ASSERT_EQ(o.gai, 0);
    o = (outcome){0};
    connect_and_wait(r, NULL, "127.0.0.1", port, &o); /* a literal */
    ASSERT_EQ(o.reason, ECONNREFUSED);
    ASSERT_EQ(o.gai, 0);
    ASSERT_EQ(em_resolve_error(NULL), 0);
    ASSERT(run_until_pred(r, all_accepted_unbound, NULL, 5));
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(bind_connect_tells_which_name_failed_and_why)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    require_interposed(r);
    outcome o = {0};
    connect_and_wait(r, "again.test", "127.0.0.1", 9, &o); /* the bind host */
    ASSERT_EQ(o.reason, EM_ERESOLVE);
    ASSERT_EQ(o.gai, EAI_AGAIN);
    o = (outcome){0};
    connect_and_wait(r, "nodata.test", "noname.test", 9, &o); /* the bind host first */
    ASSERT_EQ(o.reason, EM_ERESOLVE);
    ASSERT_EQ(o.gai, EAI_NODATA);
    o = (outcome){0};
    connect_and_wait(r, "ok.test", "fail.test", 9, &o); /* then the target */
    ASSERT_EQ(o.reason, EM_ERESOLVE);
    ASSERT_EQ(o.gai, EAI_FAIL);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

static bool two_unbinds(void *arg) { return ((outcome *)arg)->unbinds >= 2; }

TEST(reconnect_clears_the_code)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    require_interposed(r);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &sink_h, NULL);
    ASSERT_NOT_NULL(s);
    outcome o = {.reconnect_to_ok = true, .port = em_server_port(s)};
    ASSERT_NOT_NULL(em_connect(r, "noname.test", 80, &out_h, &o));
    ASSERT(run_until(r, &o.unbinds, 10));
    ASSERT_EQ(o.reason, EM_ERESOLVE);
    ASSERT_EQ(o.gai, EAI_NONAME);
    /* the retry from unbind resolved, connected and closed */
    ASSERT(run_until_pred(r, two_unbinds, &o, 10));
    ASSERT_EQ(o.completed, 1);
    ASSERT_EQ(o.reason, 0);
    ASSERT_EQ(o.gai, 0);
    em_stop_server(s);
    ASSERT(run_until_pred(r, all_accepted_unbound, NULL, 5));
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(start_server_tells_why_a_name_failed)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    require_interposed(r);
    for (size_t i = 0; i < sizeof fakes / sizeof fakes[0]; i++) {
        int want = fakes[i].code == EAI_MEMORY   ? ENOMEM
                   : fakes[i].code == EAI_SYSTEM ? EMFILE
                                                 : EM_ERESOLVE;
        ASSERT_NULL_ERRNO(em_start_server(r, fakes[i].name, 0, &sink_h, NULL), want);
        ASSERT_EQ(em_last_resolve_error(), fakes[i].code);
    }
    /* each call sets it: a success, and a failure of another kind, clear it */
    ASSERT_NULL(em_start_server(r, "noname.test", 0, &sink_h, NULL));
    em_server *s = em_start_server(r, "ok.test", 0, &sink_h, NULL);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(em_last_resolve_error(), 0);
    ASSERT_NULL(em_start_server(r, "noname.test", 0, &sink_h, NULL));
    ASSERT_NULL_ERRNO(em_start_server(r, "ok.test", em_server_port(s), &sink_h, NULL),
                      EADDRINUSE);
    ASSERT_EQ(em_last_resolve_error(), 0);
    ASSERT_NULL(em_start_server(r, "noname.test", 0, &sink_h, NULL));
    ASSERT_NULL_ERRNO(em_start_server(r, NULL, 0, &sink_h, NULL), EINVAL);
    ASSERT_EQ(em_last_resolve_error(), 0);
    /* with options too */
    em_server_opts o = {.backlog = 8};
    ASSERT_NULL_ERRNO(em_start_server_opts(r, "again.test", 0, &o, &sink_h, NULL), EM_ERESOLVE);
    ASSERT_EQ(em_last_resolve_error(), EAI_AGAIN);
    em_stop_server(s);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* With v6only a name's IPv4 addresses are skipped: they do not decide the
 * error, so a busy ::1 is EADDRINUSE even with 127.0.0.1 after it. */
TEST(v6only_error_comes_from_the_ipv6_address_tried)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    require_interposed(r);
    em_server *busy = em_start_server(r, "::1", 0, &sink_h, NULL);
    ASSERT_NOT_NULL(busy);
    em_server_opts o = {.v6only = EM_V6ONLY_ON};
    ASSERT_NULL_ERRNO(em_start_server_opts(r, "dual.test", em_server_port(busy), &o, &sink_h, NULL),
                      EADDRINUSE);
    /* and with the port free, the IPv6 address is the one listening */
    em_server *s = em_start_server_opts(r, "dual.test", 0, &o, &sink_h, NULL);
    ASSERT_NOT_NULL(s);
    /* a name with IPv4 addresses only has nothing v6only applies to */
    ASSERT_NULL_ERRNO(em_start_server_opts(r, "ok.test", 0, &o, &sink_h, NULL), EINVAL);
    em_stop_server(s);
    em_stop_server(busy);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST(open_datagram_socket_tells_why_a_name_failed)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    require_interposed(r);
    for (size_t i = 0; i < sizeof fakes / sizeof fakes[0]; i++) {
        int want = fakes[i].code == EAI_MEMORY   ? ENOMEM
                   : fakes[i].code == EAI_SYSTEM ? EMFILE
                                                 : EM_ERESOLVE;
        ASSERT_NULL_ERRNO(em_open_datagram_socket(r, fakes[i].name, 0, &sink_h, NULL),
                          want);
        ASSERT_EQ(em_last_resolve_error(), fakes[i].code);
    }
    rec d = {0};
    em_conn *c = em_open_datagram_socket(r, "ok.test", 0, &rec_handler, &d);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(em_last_resolve_error(), 0);
    ASSERT_EQ(em_resolve_error(c), 0);
    em_close_connection(c, false);
    ASSERT(run_until(r, &d.unbinds, 5));
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Per thread: a failure on another thread's reactor leaves this thread's
 * value alone. */
static void *fail_elsewhere(void *arg)
{
    int *seen = arg;
    em_reactor *r = em_reactor_new(NULL);
    if (!r)
        return NULL;
    if (!em_start_server(r, "fail.test", 0, &sink_h, NULL))
        *seen = em_last_resolve_error();
    em_reactor_free(r);
    return NULL;
}

TEST(last_resolve_error_is_per_thread)
{
    em_reactor *r = new_reactor();
    require_interposed(r);
    ASSERT_NULL(em_start_server(r, "again.test", 0, &sink_h, NULL));
    ASSERT_EQ(em_last_resolve_error(), EAI_AGAIN);
    int seen = 0;
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, fail_elsewhere, &seen), 0);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_EQ(seen, EAI_FAIL);
    ASSERT_EQ(em_last_resolve_error(), EAI_AGAIN);
    REACTOR_FREE_CHECKED(r);
}
