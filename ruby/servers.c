/*
 * Listening sockets: start_tcp_server, start_unix_server, attach_sd and
 * stop_tcp_server. Accepted connections reach Ruby as ConnectionAccepted
 * (handler.c); the Ruby layer finds the acceptor by the server's signature.
 */
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

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

/* The address libem listens on: the first one the host resolves to (a
 * literal is exact), with the port it got. */
static void note_tcp_address(struct rbem_server *srv, const char *host)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    if (getaddrinfo(host, NULL, &hints, &ai) != 0 || !ai)
        return;
    if (ai->ai_addrlen <= sizeof srv->addr) {
        memcpy(&srv->addr, ai->ai_addr, ai->ai_addrlen);
        srv->addrlen = ai->ai_addrlen;
        in_port_t port = htons((in_port_t)em_server_port(srv->s));
        if (ai->ai_family == AF_INET)
            ((struct sockaddr_in *)&srv->addr)->sin_port = port;
        else if (ai->ai_family == AF_INET6)
            ((struct sockaddr_in6 *)&srv->addr)->sin6_port = port;
    }
    freeaddrinfo(ai);
}

/* As getsockname gives it for a bound unix socket: the path and its NUL. */
static void note_unix_address(struct rbem_server *srv, const char *path)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&srv->addr;
    size_t n = strlen(path);
    if (n >= sizeof un->sun_path)
        return;
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n + 1);
    srv->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

static VALUE t_start_tcp_server(VALUE self, VALUE host, VALUE port)
{
    (void)self;
    em_reactor *r = rbem_reactor("start_tcp_server");
    const char *h = StringValueCStr(host);
    int p = NUM2INT(port);
    struct rbem_server *srv = add_server();
    VALUE sig = finish(srv, em_start_server(r, h, p, &rbem_handler, srv),
                       "no acceptor (port is in use or requires root privileges)");
    note_tcp_address(srv, h);
    return sig;
}

static VALUE t_start_unix_server(VALUE self, VALUE path)
{
    (void)self;
    em_reactor *r = rbem_reactor("start_unix_server");
    const char *p = StringValueCStr(path);
    struct rbem_server *srv = add_server();
    VALUE sig = finish(srv, em_start_unix_server(r, p, &rbem_handler, srv),
                       "no unix-domain acceptor");
    note_unix_address(srv, p);
    return sig;
}

static VALUE t_attach_sd(VALUE self, VALUE fd)
{
    (void)self;
    em_reactor *r = rbem_reactor("attach_sd");
    int d = NUM2INT(fd);
    struct rbem_server *srv = add_server();
    srv->addrlen = sizeof srv->addr;
    if (getsockname(d, (struct sockaddr *)&srv->addr, &srv->addrlen) < 0)
        srv->addrlen = 0;
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

VALUE rbem_server_sockname(VALUE sig)
{
    em_sig s = RBEM_NUM2SIG(sig);
    for (const struct rbem_server *srv = servers; srv; srv = srv->next)
        if (srv->sig == s && srv->addrlen)
            return rb_str_new((const char *)&srv->addr, (long)srv->addrlen);
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
