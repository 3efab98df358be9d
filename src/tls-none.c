/* libem built without OpenSSL: TLS calls say so, and nothing else changes. */
#ifndef EM_HAVE_OPENSSL
#include "em-internal.h"

int em_start_tls(em_conn *c, const em_tls_opts *opts)
{
    EM_UNUSED(opts);
    return c ? -ENOTSUP : -EINVAL;
}

bool em_tls_preverify_ok(const em_conn *c) { return EM_UNUSED(c), false; }
char *em_get_peer_cert(const em_conn *c) { return EM_UNUSED(c), NULL; }
char *em_get_cipher_name(const em_conn *c) { return EM_UNUSED(c), NULL; }
char *em_get_cipher_protocol(const em_conn *c) { return EM_UNUSED(c), NULL; }
int em_get_cipher_bits(const em_conn *c) { return EM_UNUSED(c), -1; }
const char *em_get_sni_hostname(const em_conn *c) { return EM_UNUSED(c), NULL; }
const char *em_get_alpn_protocol(const em_conn *c) { return EM_UNUSED(c), NULL; }
bool em_tls_session_reused(const em_conn *c) { return EM_UNUSED(c), false; }
const char *em_tls_error_string(const em_conn *c) { return EM_UNUSED(c), NULL; }
void em__tls_reactor_free(em_reactor *r) { EM_UNUSED(r); }
#endif /* EM_HAVE_OPENSSL */
