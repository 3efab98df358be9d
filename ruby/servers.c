/*
 * Listening sockets: start_tcp_server, start_unix_server, attach_sd and
 * stop_tcp_server. Accepted connections reach Ruby as ConnectionAccepted
 * (handler.c); the Ruby layer finds the acceptor by the server's signature.
 */
#include <string.h>

#include "rbem.h"

static struct rbem_server *servers; /* few: a list is enough */

static struct rbem_server *add_server(void)
{
    struct rbem_server *srv = ruby_xcalloc(1, sizeof *srv);
    srv->next = servers;
    servers = srv;
    return srv;
}

static void unlink_server(struct rbem_server *srv)
{
    for (struct rbem_server **p = &servers; *p; p = &(*p)->next) {
        if (*p == srv) {
            *p = srv->next;
            break;
        }
    }
    ruby_xfree(srv);
}

/* srv is the arg of the connections it accepts: it must exist before the
 * server, which is why it is allocated first and filled in after. */
static VALUE finish(struct rbem_server *srv, em_server *s, const char *fail)
{
    if (!s) {
        int err = errno;
        unlink_server(srv);
        rb_raise(rb_eRuntimeError, "%s: %s", fail, em_strerror(err));
    }
    srv->s = s;
    srv->sig = em_server_signature(s);
    return RBEM_SIG2NUM(srv->sig);
}

static VALUE t_start_tcp_server(VALUE self, VALUE host, VALUE port)
{
    (void)self;
    em_reactor *r = rbem_reactor("start_tcp_server");
    const char *h = StringValueCStr(host);
    int p = NUM2INT(port);
    struct rbem_server *srv = add_server();
    return finish(srv, em_start_server(r, h, p, &rbem_handler, srv),
                  "no acceptor (port is in use or requires root privileges)");
}

static VALUE t_start_unix_server(VALUE self, VALUE path)
{
    (void)self;
    em_reactor *r = rbem_reactor("start_unix_server");
    const char *p = StringValueCStr(path);
    struct rbem_server *srv = add_server();
    return finish(srv, em_start_unix_server(r, p, &rbem_handler, srv), "no unix-domain acceptor");
}

static VALUE t_attach_sd(VALUE self, VALUE fd)
{
    (void)self;
    em_reactor *r = rbem_reactor("attach_sd");
    int d = NUM2INT(fd);
    struct rbem_server *srv = add_server();
    return finish(srv, em_attach_server(r, d, &rbem_handler, srv),
                  "no socket descriptor acceptor");
}

/* Stock unbinds a stopped acceptor on a later turn, and the Ruby layer
 * then drops it from @acceptors. */
static void acceptor_unbound(em_reactor *r, void *arg)
{
    (void)r;
    rbem_event((em_sig)(uintptr_t)arg, RBEM_CONNECTION_UNBOUND, 0);
}

static VALUE t_stop_tcp_server(VALUE self, VALUE sig)
{
    (void)self;
    em_reactor *r = rbem_reactor("stop_tcp_server");
    em_sig s = RBEM_NUM2SIG(sig);
    for (struct rbem_server *srv = servers; srv; srv = srv->next) {
        if (srv->sig == s) {
            em_stop_server(srv->s);
            unlink_server(srv);
            em_next_tick(r, acceptor_unbound, (void *)(uintptr_t)s);
            break;
        }
    }
    return Qnil;
}

size_t rbem_server_count(void)
{
    size_t n = 0;
    for (const struct rbem_server *srv = servers; srv; srv = srv->next)
        n++;
    return n;
}

void rbem_servers_forget(void)
{
    while (servers)
        unlink_server(servers);
}

void rbem_init_servers(void)
{
    rb_define_module_function(rbem_module, "start_tcp_server", t_start_tcp_server, 2);
    rb_define_module_function(rbem_module, "start_unix_server", t_start_unix_server, 1);
    rb_define_module_function(rbem_module, "attach_sd", t_attach_sd, 1);
    rb_define_module_function(rbem_module, "stop_tcp_server", t_stop_tcp_server, 1);
}
