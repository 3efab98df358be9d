/*
 * TLS: set_tls_parms, start_tls, the certificate and cipher getters.
 *
 * Compatibility first: like stock, a start_tls without verify_peer
 * verifies nothing (libem's insecure), and with verify_peer Ruby's
 * ssl_verify_peer decides (handler.c). EventMachine.tls_verify_by_default
 * = true (or EM_TLS_VERIFY=1 in the environment) makes every client that
 * did not ask for verify_peer verify the chain and the host name as libem
 * does by default.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <ruby/util.h>

#include "rbem.h"

enum { PROTO_TLSv1_2 = 32, PROTO_TLSv1_3 = 64 }; /* stock's EM_PROTO_ bits */

/* The Ruby layer calls set_tls_parms and then start_tls for the same
 * signature, back to back: one pending set is enough. */
enum { KEY_FILE, KEY_PEM, KEY_PASS, CERT_FILE, CERT_PEM, SNI, CIPHERS, CURVE, DHPARAM, NSTR };
static struct {
    em_sig sig;
    char *str[NSTR];
    bool verify_peer, fail_if_no_peer_cert;
    int protocols;
} parms;
static bool verify_by_default;

static void parms_clear(void)
{
    for (int i = 0; i < NSTR; i++) {
        ruby_xfree(parms.str[i]);
        parms.str[i] = NULL;
    }
    memset(&parms, 0, sizeof parms);
}

/* Stock passes '' for "not given". */
static char *optional(VALUE s)
{
    const char *p = StringValueCStr(s);
    return *p ? ruby_strdup(p) : NULL;
}

static VALUE t_set_tls_parms(VALUE self, VALUE sig, VALUE keyfile, VALUE key, VALUE pass,
                             VALUE certfile, VALUE cert, VALUE verify, VALUE fail_no_cert,
                             VALUE sni, VALUE ciphers, VALUE curve, VALUE dhparam, VALUE protocols)
{
    (void)self;
    parms_clear();
    VALUE strs[NSTR] = {keyfile, key, pass, certfile, cert, sni, ciphers, curve, dhparam};
    for (int i = 0; i < NSTR; i++)
        parms.str[i] = optional(strs[i]);
    parms.sig = RBEM_NUM2SIG(sig);
    parms.verify_peer = RTEST(verify);
    parms.fail_if_no_peer_cert = RTEST(fail_no_cert);
    parms.protocols = NUM2INT(protocols);
    return Qnil;
}

/* libem speaks TLS 1.2 and 1.3 only; older versions in the mask are
 * dropped, a mask with neither is refused. */
static void set_versions(em_tls_opts *o, int mask)
{
    if (!(mask & (PROTO_TLSv1_2 | PROTO_TLSv1_3)))
        rb_raise(rbem_eUnsupported, "libem speaks TLS 1.2 and 1.3 only");
    o->min_version = (mask & PROTO_TLSv1_2) ? EM_TLS_1_2 : EM_TLS_1_3;
    o->max_version = (mask & PROTO_TLSv1_3) ? 0 : EM_TLS_1_2;
}

static void fill_opts(em_tls_opts *o, em_sig sig)
{
    if (parms.sig != sig) { /* start_tls without set_tls_parms: stock's defaults */
        o->insecure = !verify_by_default;
        return;
    }
    o->private_key_file = parms.str[KEY_FILE];
    o->private_key_pem = parms.str[KEY_PEM];
    o->private_key_pass = parms.str[KEY_PASS];
    o->cert_chain_file = parms.str[CERT_FILE];
    o->cert_chain_pem = parms.str[CERT_PEM];
    o->sni_hostname = parms.str[SNI];
    o->cipher_list = parms.str[CIPHERS];
    o->ecdh_curve = parms.str[CURVE];
    o->dhparam_file = parms.str[DHPARAM];
    o->verify_peer = parms.verify_peer;
    o->fail_if_no_peer_cert = parms.fail_if_no_peer_cert;
    /* With verify_peer Ruby's ssl_verify_peer has the last word on the
     * chain, so libem needs no host name of its own (a unix socket). */
    o->insecure = parms.verify_peer || !verify_by_default;
    if (parms.protocols)
        set_versions(o, parms.protocols);
}

/* libem makes an accepted connection the server side; accepted ones are
 * the connections with a server's arg (handler.c). */
static bool is_server(const em_conn *c) { return em_conn_arg(c) != NULL; }

static VALUE t_start_tls(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    if (!c)
        rb_raise(rbem_eConnectionError, "start_tls: unknown connection");
    em_tls_opts o = {0};
    fill_opts(&o, RBEM_NUM2SIG(sig));
    if (is_server(c) && !o.cert_chain_file && !o.cert_chain_pem && !o.private_key_file &&
        !o.private_key_pem && !rbem_default_cert(&o.cert_chain_pem, &o.private_key_pem))
        rb_raise(rb_eRuntimeError, "start_tls: no certificate given and none could be made");
    bool ask_ruby = o.verify_peer;
    int rc = em_start_tls(c, &o);
    parms_clear();
    const char *why = em_tls_error_string(c);
    if (rc == -EM_ETLS) /* a certificate or key that does not load */
        rb_raise(rbem_eInvalidPrivateKey, "%s", why ? why : "bad certificate or key");
    if (rc < 0)
        rb_raise(rb_eRuntimeError, "start_tls: %s", why ? why : em_strerror(rc));
    rbem_set_flags(c, ask_ruby ? RBEM_TLS_ASK_RUBY : o.insecure ? RBEM_TLS_ACCEPT_ANY : 0);
    return Qnil;
}

/* The getters answer nil before the handshake and without TLS. */
static VALUE owned_string(char *s)
{
    if (!s)
        return Qnil;
    VALUE v = rb_str_new_cstr(s);
    free(s);
    return v;
}

static VALUE t_get_peer_cert(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return c ? owned_string(em_get_peer_cert(c)) : Qnil;
}

static VALUE t_get_cipher_name(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return c ? owned_string(em_get_cipher_name(c)) : Qnil;
}

static VALUE t_get_cipher_protocol(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    return c ? owned_string(em_get_cipher_protocol(c)) : Qnil;
}

static VALUE t_get_cipher_bits(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    int bits = c ? em_get_cipher_bits(c) : -1;
    return bits < 0 ? Qnil : INT2FIX(bits);
}

static VALUE t_get_sni_hostname(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    const char *name = c ? em_get_sni_hostname(c) : NULL;
    return name ? rb_str_new_cstr(name) : Qnil;
}

static VALUE t_ssl_p(VALUE self)
{
    (void)self;
    return Qtrue;
}

static VALUE t_get_verify_by_default(VALUE self)
{
    (void)self;
    return verify_by_default ? Qtrue : Qfalse;
}

static VALUE t_set_verify_by_default(VALUE self, VALUE on)
{
    (void)self;
    verify_by_default = RTEST(on);
    return on;
}

static void define_protocols(void)
{
    VALUE m = rbem_module;
    rb_define_const(m, "EM_PROTO_SSLv2", INT2FIX(2));
    rb_define_const(m, "EM_PROTO_SSLv3", INT2FIX(4));
    rb_define_const(m, "EM_PROTO_TLSv1", INT2FIX(8));
    rb_define_const(m, "EM_PROTO_TLSv1_1", INT2FIX(16));
    rb_define_const(m, "EM_PROTO_TLSv1_2", INT2FIX(PROTO_TLSv1_2));
    rb_define_const(m, "EM_PROTO_TLSv1_3", INT2FIX(PROTO_TLSv1_3));
    /* libem refuses anything below TLS 1.2. */
    rb_define_const(m, "OPENSSL_NO_SSL2", Qtrue);
    rb_define_const(m, "OPENSSL_NO_SSL3", Qtrue);
    rb_define_const(m, "OPENSSL_VERSION", rb_str_new_cstr(OPENSSL_VERSION_TEXT));
    rb_define_const(m, "OPENSSL_LIBRARY_VERSION",
                    rb_str_new_cstr(OpenSSL_version(OPENSSL_VERSION)));
}

void rbem_init_tls(void)
{
    VALUE m = rbem_module;
    const char *env = getenv("EM_TLS_VERIFY");
    verify_by_default = env && strcmp(env, "1") == 0;
    rb_define_module_function(m, "ssl?", t_ssl_p, 0);
    rb_define_module_function(m, "set_tls_parms", t_set_tls_parms, 13);
    rb_define_module_function(m, "start_tls", t_start_tls, 1);
    rb_define_module_function(m, "get_peer_cert", t_get_peer_cert, 1);
    rb_define_module_function(m, "get_cipher_name", t_get_cipher_name, 1);
    rb_define_module_function(m, "get_cipher_protocol", t_get_cipher_protocol, 1);
    rb_define_module_function(m, "get_cipher_bits", t_get_cipher_bits, 1);
    rb_define_module_function(m, "get_sni_hostname", t_get_sni_hostname, 1);
    rb_define_module_function(m, "tls_verify_by_default", t_get_verify_by_default, 0);
    rb_define_module_function(m, "tls_verify_by_default=", t_set_verify_by_default, 1);
    define_protocols();
}
