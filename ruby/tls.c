/*
 * TLS. This first version of the extension does not offer start_tls yet:
 * ssl? says false and set_tls_parms / start_tls / the certificate and
 * cipher getters are not defined (see ruby/README.md), so a program that
 * needs TLS fails at once instead of talking in clear. The constants the
 * Ruby layer reads to build its protocol mask are stock's.
 */
#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include "rbem.h"

static VALUE t_ssl_p(VALUE self)
{
    (void)self;
    return Qfalse;
}

static void define_protocols(void)
{
    VALUE m = rbem_module;
    rb_define_const(m, "EM_PROTO_SSLv2", INT2FIX(2));
    rb_define_const(m, "EM_PROTO_SSLv3", INT2FIX(4));
    rb_define_const(m, "EM_PROTO_TLSv1", INT2FIX(8));
    rb_define_const(m, "EM_PROTO_TLSv1_1", INT2FIX(16));
    rb_define_const(m, "EM_PROTO_TLSv1_2", INT2FIX(32));
    rb_define_const(m, "EM_PROTO_TLSv1_3", INT2FIX(64));
    /* libem refuses anything below TLS 1.2. */
    rb_define_const(m, "OPENSSL_NO_SSL2", Qtrue);
    rb_define_const(m, "OPENSSL_NO_SSL3", Qtrue);
    rb_define_const(m, "OPENSSL_VERSION", rb_str_new_cstr(OPENSSL_VERSION_TEXT));
    rb_define_const(m, "OPENSSL_LIBRARY_VERSION", rb_str_new_cstr(OpenSSL_version(OPENSSL_VERSION)));
}

void rbem_init_tls(void)
{
    rb_define_module_function(rbem_module, "ssl?", t_ssl_p, 0);
    define_protocols();
}
