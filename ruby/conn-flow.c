/*
 * The flow of a connection: pause and resume, the two timeouts and idle
 * time, notify modes of watched descriptors, proxies, files and
 * datagrams. As in conn.c, a signature whose connection is gone is not an
 * error.
 */
#include "rbem.h"

/* Stock answers whether the call changed the state. */
static VALUE t_pause_connection(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    if (!c || em_is_paused(c))
        return Qfalse;
    return em_pause(c) == 0 ? Qtrue : Qfalse;
}

static VALUE t_resume_connection(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    if (!c || !em_is_paused(c))
        return Qfalse;
    return em_resume(c) == 0 ? Qtrue : Qfalse;
}

static VALUE t_connection_paused(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return c && em_is_paused(c) ? Qtrue : Qfalse;
}

/* Both timeouts are in seconds (Float), as in stock. */
static VALUE t_get_comm_inactivity_timeout(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return DBL2NUM(c ? em_get_comm_inactivity_timeout(c) : 0.0);
}

static VALUE t_set_comm_inactivity_timeout(VALUE self, VALUE sig, VALUE secs)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return c && em_set_comm_inactivity_timeout(c, NUM2DBL(secs)) == 0 ? Qtrue : Qfalse;
}

static VALUE t_get_pending_connect_timeout(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return DBL2NUM(c ? em_get_pending_connect_timeout(c) : 0.0);
}

static VALUE t_set_pending_connect_timeout(VALUE self, VALUE sig, VALUE secs)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return c && em_set_pending_connect_timeout(c, NUM2DBL(secs)) == 0 ? Qtrue : Qfalse;
}

static VALUE t_get_idle_time(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return c ? DBL2NUM(em_get_idle_time(c)) : Qnil;
}

static VALUE t_set_notify_readable(VALUE self, VALUE sig, VALUE on)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    int rc = c ? em_set_notify_readable(c, RTEST(on)) : 0;
    if (rc < 0)
        rb_raise(rb_eRuntimeError, "notify_readable must be on 'watch only' connections");
    return Qnil;
}

static VALUE t_set_notify_writable(VALUE self, VALUE sig, VALUE on)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    int rc = c ? em_set_notify_writable(c, RTEST(on)) : 0;
    if (rc < 0)
        rb_raise(rb_eRuntimeError, "notify_writable must be on 'watch only' connections");
    return Qnil;
}

static VALUE t_is_notify_readable(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return c && em_is_notify_readable(c) ? Qtrue : Qfalse;
}

static VALUE t_is_notify_writable(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return c && em_is_notify_writable(c) ? Qtrue : Qfalse;
}

static VALUE t_watch_only(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return c && em_is_watch_only(c) ? Qtrue : Qfalse;
}

static VALUE t_start_proxy(VALUE self, VALUE from, VALUE to, VALUE bufsize, VALUE length)
{
    (void)self;
    em_conn *f = rbem_conn(from), *t = rbem_conn(to);
    if (!f || !t)
        rb_raise(rbem_eConnectionError, "start_proxy: unknown connection");
    int rc = em_proxy_incoming_to(f, t, NUM2SIZET(bufsize), NUM2SIZET(length));
    if (rc < 0)
        rbem_raise_errno(rbem_eConnectionError, "start_proxy", rc);
    return Qnil;
}

static VALUE t_stop_proxy(VALUE self, VALUE from)
{
    (void)self;
    em_conn *f = rbem_conn(from);
    if (f)
        em_stop_proxying(f);
    return Qnil;
}

static VALUE t_get_proxied_bytes(VALUE self, VALUE from)
{
    (void)self;
    em_conn *f = rbem_conn(from);
    return SIZET2NUM(f ? em_get_proxied_bytes(f) : 0);
}

/* Any size: libem streams the file from disk as the peer reads. */
static VALUE t_send_file_data(VALUE self, VALUE sig, VALUE filename)
{
    (void)self;
    const char *path = StringValueCStr(filename);
    em_conn *c = rbem_conn(sig);
    int rc = c ? em_send_file_data(c, path) : -ENOTCONN;
    if (rc < 0)
        rb_raise(rb_eIOError, ": %s %s", path, em_strerror(rc));
    return INT2FIX(0);
}

static VALUE t_send_datagram(VALUE self, VALUE sig, VALUE data, VALUE length, VALUE host,
                             VALUE port)
{
    (void)self;
    StringValue(data);
    long len = NUM2LONG(length);
    if (len < 0 || len > RSTRING_LEN(data))
        len = RSTRING_LEN(data);
    const char *h = StringValueCStr(host);
    em_conn *c = rbem_conn(sig);
    int rc = c ? em_send_datagram(c, RSTRING_PTR(data), (size_t)len, h, NUM2INT(port)) : -ENOTCONN;
    if (rc < 0)
        rb_raise(rbem_eConnectionError, "error in sending datagram: %s", em_strerror(rc));
    return LONG2NUM(len);
}

void rbem_init_conn_flow(void)
{
    VALUE m = rbem_module;
    rb_define_module_function(m, "pause_connection", t_pause_connection, 1);
    rb_define_module_function(m, "resume_connection", t_resume_connection, 1);
    rb_define_module_function(m, "connection_paused?", t_connection_paused, 1);
    rb_define_module_function(m, "get_comm_inactivity_timeout", t_get_comm_inactivity_timeout, 1);
    rb_define_module_function(m, "set_comm_inactivity_timeout", t_set_comm_inactivity_timeout, 2);
    rb_define_module_function(m, "get_pending_connect_timeout", t_get_pending_connect_timeout, 1);
    rb_define_module_function(m, "set_pending_connect_timeout", t_set_pending_connect_timeout, 2);
    rb_define_module_function(m, "get_idle_time", t_get_idle_time, 1);
    rb_define_module_function(m, "set_notify_readable", t_set_notify_readable, 2);
    rb_define_module_function(m, "set_notify_writable", t_set_notify_writable, 2);
    rb_define_module_function(m, "is_notify_readable", t_is_notify_readable, 1);
    rb_define_module_function(m, "is_notify_writable", t_is_notify_writable, 1);
    rb_define_module_function(m, "watch_only?", t_watch_only, 1);
    rb_define_module_function(m, "start_proxy", t_start_proxy, 4);
    rb_define_module_function(m, "stop_proxy", t_stop_proxy, 1);
    rb_define_module_function(m, "get_proxied_bytes", t_get_proxied_bytes, 1);
    rb_define_module_function(m, "send_file_data", t_send_file_data, 2);
    rb_define_module_function(m, "send_datagram", t_send_datagram, 5);
}
