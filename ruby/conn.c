/*
 * What EventMachine::Connection asks of a connection by signature: data,
 * closing, error status, addresses and socket options, plus the four
 * native Connection methods (conn-flow.c has the rest).
 *
 * A signature whose connection is gone is not an error, as in stock: the
 * Ruby layer may call these from unbind or after it.
 */
#include <string.h>

#include "rbem.h"

size_t rbem_close_scheduled;

void rbem_note_close(em_conn *c)
{
    if (!(rbem_flags(c) & RBEM_CLOSE_COUNTED)) {
        rbem_set_flags(c, RBEM_CLOSE_COUNTED);
        rbem_close_scheduled++;
    }
}

void rbem_note_unbind(em_conn *c)
{
    if ((rbem_flags(c) & RBEM_CLOSE_COUNTED) && rbem_close_scheduled > 0)
        rbem_close_scheduled--;
}

em_conn *rbem_conn(VALUE sig)
{
    em_sig s = RBEM_NUM2SIG(sig);
    if (!rbem.r)
        return NULL;
    if (rbem_unbinding && em_signature(rbem_unbinding) == s)
        return rbem_unbinding;
    return em_conn_by_sig(rbem.r, s);
}

void rbem_raise_errno(VALUE k, const char *what, int neg_err)
{
    rb_raise(k, "%s: %s", what, em_strerror(neg_err));
}

static VALUE t_send_data(VALUE self, VALUE sig, VALUE data, VALUE length)
{
    (void)self;
    StringValue(data);
    long len = NUM2LONG(length);
    if (len < 0 || len > RSTRING_LEN(data))
        len = RSTRING_LEN(data);
    em_conn *c = rbem_conn(sig);
    if (!c || em_send_data(c, RSTRING_PTR(data), (size_t)len) < 0)
        return INT2FIX(-1);
    return LONG2NUM(len);
}

static VALUE t_close_connection(VALUE self, VALUE sig, VALUE after_writing)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    if (c) {
        rbem_note_close(c);
        em_close_connection(c, RTEST(after_writing));
    }
    return Qnil;
}

static VALUE t_report_connection_error_status(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return INT2FIX(c ? rbem_stock_errno(em_error(c)) : -1);
}

typedef int (*name_fn)(const em_conn *, struct sockaddr_storage *, socklen_t *);

/* The packed sockaddr, as stock returns it (Socket.unpack_sockaddr_in). */
static VALUE address(VALUE sig, name_fn fn)
{
    em_conn *c = rbem_conn(sig);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (!c || fn(c, &ss, &len) < 0)
        return Qnil;
    return rb_str_new((const char *)&ss, (long)len);
}

static VALUE t_get_peername(VALUE self, VALUE sig)
{
    (void)self;
    return address(sig, em_get_peername);
}

static VALUE t_get_sockname(VALUE self, VALUE sig)
{
    (void)self;
    VALUE a = address(sig, em_get_sockname);
    return NIL_P(a) ? rbem_server_sockname(sig) : a;
}

static VALUE t_get_file_descriptor(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return INT2FIX(c ? em_conn_fd(c) : -1);
}

static VALUE t_get_sock_opt(VALUE self, VALUE sig, VALUE level, VALUE opt)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    char buf[128];
    socklen_t len = sizeof buf;
    int rc = c ? em_get_sock_opt(c, NUM2INT(level), NUM2INT(opt), buf, &len) : -EBADF;
    if (rc < 0)
        rb_syserr_fail(-rc, "getsockopt");
    return rb_str_new(buf, (long)len);
}

/* Integers and booleans go as an int, anything else as its bytes. */
static VALUE t_set_sock_opt(VALUE self, VALUE sig, VALUE level, VALUE opt, VALUE val)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    int i = 0, rc;
    const void *v = &i;
    socklen_t len = sizeof i;
    if (RB_INTEGER_TYPE_P(val))
        i = NUM2INT(val);
    else if (val == Qtrue || val == Qfalse)
        i = val == Qtrue;
    else {
        StringValue(val);
        v = RSTRING_PTR(val);
        len = (socklen_t)RSTRING_LEN(val);
    }
    rc = c ? em_set_sock_opt(c, NUM2INT(level), NUM2INT(opt), v, len) : -EBADF;
    if (rc < 0)
        rb_syserr_fail(-rc, "setsockopt");
    return INT2FIX(0);
}

static em_conn *self_conn(VALUE self)
{
    return rbem_conn(rb_ivar_get(self, rb_intern("@signature")));
}

static VALUE conn_get_outbound_data_size(VALUE self)
{
    em_conn *c = self_conn(self);
    return SIZET2NUM(c ? em_get_outbound_data_size(c) : 0);
}

/* A no-op in stock too: the Ruby layer binds objects by signature. */
static VALUE conn_associate_callback_target(VALUE self, VALUE sig)
{
    (void)self;
    (void)sig;
    return Qnil;
}

static VALUE conn_enable_keepalive(int argc, VALUE *argv, VALUE self)
{
    VALUE idle, intvl, cnt;
    rb_scan_args(argc, argv, "03", &idle, &intvl, &cnt);
    em_conn *c = self_conn(self);
    int rc = c ? em_enable_keepalive(c, NIL_P(idle) ? 0 : NUM2INT(idle),
                                     NIL_P(intvl) ? 0 : NUM2INT(intvl),
                                     NIL_P(cnt) ? 0 : NUM2INT(cnt))
               : -ENOTCONN;
    if (rc < 0)
        rbem_raise_errno(rb_eRuntimeError, "enable_keepalive", rc);
    return INT2FIX(0);
}

static VALUE conn_disable_keepalive(VALUE self)
{
    em_conn *c = self_conn(self);
    int rc = c ? em_disable_keepalive(c) : -ENOTCONN;
    if (rc < 0)
        rbem_raise_errno(rb_eRuntimeError, "disable_keepalive", rc);
    return INT2FIX(0);
}

static void define_connection_methods(void)
{
    VALUE k = rbem_connection_class;
    rb_define_method(k, "get_outbound_data_size", conn_get_outbound_data_size, 0);
    rb_define_method(k, "associate_callback_target", conn_associate_callback_target, 1);
    rb_define_method(k, "enable_keepalive", conn_enable_keepalive, -1);
    rb_define_method(k, "disable_keepalive", conn_disable_keepalive, 0);
}

void rbem_init_conn(void)
{
    VALUE m = rbem_module;
    rb_define_module_function(m, "send_data", t_send_data, 3);
    rb_define_module_function(m, "close_connection", t_close_connection, 2);
    rb_define_module_function(m, "report_connection_error_status",
                              t_report_connection_error_status, 1);
    rb_define_module_function(m, "get_peername", t_get_peername, 1);
    rb_define_module_function(m, "get_sockname", t_get_sockname, 1);
    rb_define_module_function(m, "get_file_descriptor", t_get_file_descriptor, 1);
    rb_define_module_function(m, "get_sock_opt", t_get_sock_opt, 3);
    rb_define_module_function(m, "set_sock_opt", t_set_sock_opt, 4);
    define_connection_methods();
}
