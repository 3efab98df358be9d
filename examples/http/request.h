/* The request side of HTTP/1.1 (RFC 9112) for http_file_server: the head of
 * a request (request line and header fields) parsed from a bounded buffer,
 * its target turned into a safe path. No libem here: fuzz/fuzz_http.c calls
 * it directly.
 *
 * Strict on purpose: a server that reads a request differently from a proxy
 * in front of it can be smuggled requests, so anything ambiguous (bare LF,
 * obsolete line folding, a space before a colon, a body it does not
 * support) is refused rather than guessed at. */
#ifndef HTTP_REQUEST_H
#define HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

/* The longest head (request line, header fields and the blank line) read;
 * a longer one is answered 414 or 431. */
#define HTTP_HEAD_MAX 8192
/* The longest request target, and so the room for its decoded path. */
#define HTTP_PATH_MAX 4096

enum http_method { HTTP_GET, HTTP_HEAD, HTTP_OTHER_METHOD };

struct http_request {
    /* 200: serve path; else the status to answer with (400, 403, 405, 413,
     * 414, 431, 501, 505). */
    int status;
    enum http_method method;
    /* Whether the connection may carry another request after the answer:
     * what the client asked for, and false after any error that leaves the
     * framing of what follows in doubt. */
    bool keep_alive;
    /* Whether the answer to 405 needs an Allow header. */
    bool allow_header;
    /* With status 200: the target's path, percent-decoded and normalised:
     * "/" or "/" segments joined by "/", none of them empty, "." or "..",
     * none holding a NUL or a "/"; NUL-terminated. */
    char path[HTTP_PATH_MAX];
    size_t path_len;
};

/* Parses the head at the start of buf (at most HTTP_HEAD_MAX bytes of it
 * are looked at). Returns 0 when the head is not complete yet and could
 * still be; else fills *req and returns how many bytes of buf the head took
 * (for an error that ends the connection, possibly all of them). */
size_t http_parse_request(const char *buf, size_t len, struct http_request *req);

/* Turns the path of an origin-form target (up to its '?') into out, as
 * described for http_request.path. Returns 200; 400 for a path that does not
 * start with '/' or a bad percent-escape; 403 for a ".." segment, an escaped
 * "/" or an escaped NUL. out must hold len + 1 bytes. */
int http_decode_path(const char *target, size_t len, char *out, size_t *out_len);

#endif
