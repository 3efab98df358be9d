/*
 * The TLS client side of loadgen (loadgen --tls), on OpenSSL directly.
 *
 * Kept out of loadgen.c so that loadgen builds without OpenSSL (the calls
 * then fail with a message) and its plain paths stay as they were. Every
 * connection offers TLS 1.3 only, TLS_AES_128_GCM_SHA256 and X25519, so that
 * every server negotiates the same thing whatever its own defaults; nothing
 * is verified: the load generator is the peer, not the subject.
 */
#ifndef BENCH_TLS_CLIENT_H
#define BENCH_TLS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct tlsc tlsc; /* one TLS connection (an SSL) */

/* What a step of the handshake needs next. */
enum { TLSC_DONE, TLSC_WANT_READ, TLSC_WANT_WRITE, TLSC_ERROR };

/* Sets up the client context once; with resume, the session tickets servers
 * send are kept (see tlsc_new). False with the reason in why. */
bool tlsc_init(bool resume, char *why, size_t whylen);

/* A TLS connection over the connected (or connecting) socket fd, which
 * stays the caller's. With a slot (resume): offers the ticket *slot holds,
 * if any, and every ticket the server sends on this connection replaces
 * it. NULL on failure. */
tlsc *tlsc_new(int fd, void **slot);

/* One step of the handshake (non-blocking socket); TLSC_ERROR with errno
 * EPROTO for a TLS error (tlsc_error says which) or the system call's. */
int tlsc_handshake(tlsc *s);

/* read(2) and write(2) through TLS: the byte count, 0 when the server has
 * closed (read), or -1 with errno EAGAIN when the socket must be waited for,
 * EPROTO on a TLS error. Writes may be partial, as write(2)'s. */
ssize_t tlsc_read(tlsc *s, void *buf, size_t len);
ssize_t tlsc_write(tlsc *s, const void *buf, size_t len);

/* Whether the handshake resumed a session. */
bool tlsc_resumed(const tlsc *s);

/* Sends close_notify (without waiting for the server's) and frees s; with
 * quietly, frees it and sends nothing. The socket is left open. */
void tlsc_free(tlsc *s, bool quietly);

/* Frees a ticket kept in a slot and clears the slot. */
void tlsc_slot_clear(void **slot);

/* OpenSSL's last error as text, for messages. */
const char *tlsc_error(void);

#endif
