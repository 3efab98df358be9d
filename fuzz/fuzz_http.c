/*
 * libFuzzer target: the request parser of examples/http_file_server
 * (examples/http/request.c), which reads what any client sends.
 *
 * The input is fed twice: as the bytes a connection received
 * (http_parse_request) and as a target path (http_decode_path).
 *
 * Invariants checked (a violation aborts, which libFuzzer reports):
 *   - nothing is read outside the bytes given (each parse gets an exact
 *     copy, so ASan sees an over-read);
 *   - 0 ("more bytes needed") only below HTTP_HEAD_MAX bytes; else at most
 *     HTTP_HEAD_MAX bytes taken, with a status the server knows;
 *   - a request that is served (200) is GET or HEAD, its head ends with the
 *     blank line, and its path is safe: it starts with "/", holds no NUL,
 *     no empty, "." or ".." segment, so joined to a root it cannot leave it;
 *   - keep-alive only after answers whose framing is sound (200, 403, 405);
 *   - the verdict does not depend on what follows the head: the head alone
 *     parses the same, and the head short of its last byte is not complete;
 *   - a served path, percent-encoded again, decodes to itself.
 */
#include "http/request.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz_http invariant: %s:%d: %s\n", __FILE__,     \
                    __LINE__, #cond);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)

static bool known_status(int status)
{
    static const int known[] = {200, 400, 403, 405, 413, 414, 431, 501, 505};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (status == known[i])
            return true;
    return false;
}

static void check_safe_path(const char *path, size_t len)
{
    CHECK(len >= 1 && path[0] == '/');
    CHECK(strlen(path) == len);
    if (len == 1)
        return;
    for (size_t i = 0; i < len;) {
        CHECK(path[i] == '/');
        size_t start = ++i;
        while (i < len && path[i] != '/')
            i++;
        size_t seg = i - start;
        CHECK(seg > 0);
        CHECK(!(seg == 1 && path[start] == '.'));
        CHECK(!(seg == 2 && path[start] == '.' && path[start + 1] == '.'));
    }
}

/* http_parse_request on an exact copy of data[0..len). */
static size_t parse_copy(const uint8_t *data, size_t len, struct http_request *req)
{
    char *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    if (len)
        memcpy(copy, data, len);
    size_t used = http_parse_request(copy, len, req);
    free(copy);
    return used;
}

static void check_reencoded(const struct http_request *req)
{
    static const char hex[] = "0123456789ABCDEF";
    char *enc = malloc(3 * req->path_len + 1), *out = malloc(3 * req->path_len + 2);
    CHECK(enc && out);
    size_t n = 0, out_len = 0;
    for (size_t i = 0; i < req->path_len; i++) {
        unsigned char c = (unsigned char)req->path[i];
        if (c == '/' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9')) {
            enc[n++] = (char)c;
        } else {
            enc[n++] = '%';
            enc[n++] = hex[c >> 4];
            enc[n++] = hex[c & 15];
        }
    }
    CHECK(http_decode_path(enc, n, out, &out_len) == 200);
    CHECK(out_len == req->path_len && memcmp(out, req->path, out_len) == 0);
    free(enc);
    free(out);
}

static void fuzz_request(const uint8_t *data, size_t size)
{
    static struct http_request req, again;
    size_t used = parse_copy(data, size, &req);
    if (used == 0) {
        CHECK(size < HTTP_HEAD_MAX);
        return;
    }
    CHECK(used <= size && used <= HTTP_HEAD_MAX);
    CHECK(known_status(req.status));
    CHECK(!req.keep_alive || req.status == 200 || req.status == 403 || req.status == 405);
    CHECK(!req.allow_header || req.status == 405);
    bool complete = used >= 4 && memcmp(data + used - 4, "\r\n\r\n", 4) == 0;
    if (req.status == 200) {
        CHECK(complete);
        CHECK(req.method == HTTP_GET || req.method == HTTP_HEAD);
        check_safe_path(req.path, req.path_len);
        check_reencoded(&req);
    }
    if (!complete)
        return;
    /* the verdict on a head must not depend on the bytes after it */
    CHECK(parse_copy(data, used, &again) == used);
    CHECK(again.status == req.status && again.keep_alive == req.keep_alive &&
          again.method == req.method && again.path_len == req.path_len &&
          memcmp(again.path, req.path, req.path_len + 1) == 0);
    size_t short_used = parse_copy(data, used - 1, &again);
    CHECK(short_used == 0 || (again.status == 400 && !again.keep_alive));
}

static void fuzz_path(const uint8_t *data, size_t size)
{
    char *target = malloc(size ? size : 1), *out = malloc(size + 1);
    CHECK(target && out);
    if (size)
        memcpy(target, data, size);
    size_t out_len = 0;
    int status = http_decode_path(target, size, out, &out_len);
    CHECK(status == 200 || status == 400 || status == 403);
    if (status == 200) {
        CHECK(out_len <= size);
        check_safe_path(out, out_len);
    }
    free(target);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_request(data, size);
    fuzz_path(data, size);
    return 0;
}
