/*
 * Making connections: connect_server, bind_connect_server,
 * connect_unix_server, open_udp_socket, attach_fd / detach_fd and
 * read_keyboard. Each returns the new connection's signature; the Ruby
 * layer then makes the Connection object and files it in @conns.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>

#include <ruby/thread.h>

#include "rbem.h"

struct lookup {
    const char *host;
    int gai;
};

static void *lookup_name(void *arg)
{
    struct lookup *l = arg;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    l->gai = getaddrinfo(l->host, NULL, &hints, &res);
    if (res)
        freeaddrinfo(res);
    return NULL;
}

static bool is_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Stock resolves at once and raises ConnectionError for a name that does
 * not resolve; programs rescue that around EM.connect. libem resolves on
 * its pool and reports the failure as an unbind, so a name is checked here
 * first (without the GVL), and libem then connects to every address it
 * finds, with the name kept for TLS. */
static void check_resolves(const char *host, const char *what)
{
    if (is_literal(host))
        return;
    struct lookup l = {.host = host};
    rb_thread_call_without_gvl(lookup_name, &l, RUBY_UBF_IO, NULL);
    if (l.gai != 0)
        rb_raise(rbem_eConnectionError, "%s: %s", what, gai_strerror(l.gai));
}

static VALUE connected(em_conn *c, VALUE k, const char *what)
{
    if (!c)
        rb_raise(k, "%s: %s", what, em_strerror(errno));
    return RBEM_SIG2NUM(em_signature(c));
}

static VALUE t_connect_server(VALUE self, VALUE host, VALUE port)
{
    (void)self;
    em_reactor *r = rbem_reactor("connect_server");
    const char *h = StringValueCStr(host);
    int p = NUM2INT(port);
    if (!*h || p <= 0 || p > 65535)
        rb_raise(rbem_eConnectionError, "invalid server or port");
    check_resolves(h, "unable to resolve address");
    return connected(em_connect(r, h, p, &rbem_handler, NULL), rbem_eConnectionError,
                     "no connection");
}

static VALUE t_bind_connect_server(VALUE self, VALUE bind_host, VALUE bind_port, VALUE host,
                                   VALUE port)
{
    (void)self;
    em_reactor *r = rbem_reactor("bind_connect_server");
    const char *bh = StringValueCStr(bind_host), *h = StringValueCStr(host);
    int bp = NUM2INT(bind_port), p = NUM2INT(port);
    if (!*h || p <= 0 || p > 65535)
        rb_raise(rbem_eConnectionError, "invalid server or port");
    check_resolves(h, "unable to resolve address");
    check_resolves(bh, "invalid bind address");
    return connected(em_bind_connect(r, bh, bp, h, p, &rbem_handler, NULL),
                     rbem_eConnectionError, "no connection");
}

static VALUE t_connect_unix_server(VALUE self, VALUE path)
{
    (void)self;
    em_reactor *r = rbem_reactor("connect_unix_server");
    const char *p = StringValueCStr(path);
    return connected(em_connect_unix(r, p, &rbem_handler, NULL), rb_eRuntimeError,
                     "no connection");
}

static VALUE t_open_udp_socket(VALUE self, VALUE host, VALUE port)
{
    (void)self;
    em_reactor *r = rbem_reactor("open_udp_socket");
    const char *h = StringValueCStr(host);
    int p = NUM2INT(port);
    return connected(em_open_datagram_socket(r, h, p, &rbem_handler, NULL), rb_eRuntimeError,
                     "no datagram socket");
}

/* Watch mode (EM.watch) gets notify events only; attach mode (EM.attach)
 * reads and writes like a connection. libem never closes either fd: the
 * Ruby layer closes an attached IO itself after unbind. */
static VALUE t_attach_fd(VALUE self, VALUE fd, VALUE watch_mode)
{
    (void)self;
    em_reactor *r = rbem_reactor("attach_fd");
    int d = NUM2INT(fd);
    em_conn *c = RTEST(watch_mode) ? em_watch(r, d, &rbem_handler, NULL)
                                   : em_attach(r, d, &rbem_handler, NULL);
    return connected(c, rb_eRuntimeError, "no connection");
}

static VALUE t_detach_fd(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    if (!c)
        rb_raise(rb_eRuntimeError, "invalid binding to detach");
    int fd = em_detach(c);
    if (fd < 0)
        rbem_raise_errno(rb_eRuntimeError, "detach_fd", fd);
    return INT2NUM(fd);
}

/* Stock reads the keyboard from standard input: an attached fd 0. */
static VALUE t_read_keyboard(VALUE self)
{
    (void)self;
    em_reactor *r = rbem_reactor("read_keyboard");
    return connected(em_attach(r, STDIN_FILENO, &rbem_handler, NULL), rb_eRuntimeError,
                     "no keyboard reader");
}

void rbem_init_connect(void)
{
    VALUE m = rbem_module;
    rb_define_module_function(m, "connect_server", t_connect_server, 2);
    rb_define_module_function(m, "bind_connect_server", t_bind_connect_server, 4);
    rb_define_module_function(m, "connect_unix_server", t_connect_unix_server, 1);
    rb_define_module_function(m, "open_udp_socket", t_open_udp_socket, 2);
    rb_define_module_function(m, "attach_fd", t_attach_fd, 2);
    rb_define_module_function(m, "detach_fd", t_detach_fd, 1);
    rb_define_module_function(m, "read_keyboard", t_read_keyboard, 0);
}
