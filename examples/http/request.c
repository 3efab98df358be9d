/* The request head of HTTP/1.1 (RFC 9112, RFC 9110), strictly: see
 * request.h. */
#include "request.h"

#include <string.h>
#include <strings.h>

/* What the header fields said, as far as serving files cares. */
struct fields {
    int hosts;
    bool close;      /* a "close" connection option */
    bool keep_alive; /* a "keep-alive" connection option (HTTP/1.0) */
    bool chunked_or_other_coding; /* any Transfer-Encoding */
    int lengths;     /* Content-Length fields */
    bool body;       /* a Content-Length other than 0 */
};

struct request_line {
    const char *method, *target;
    size_t method_len, target_len;
    int major, minor;
};

/* -------------------------------------------------------- characters */

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* field-vchar, SP or HTAB: what a field value may hold (obs-text included,
 * as RFC 9110 allows recipients to). */
static bool is_field_char(unsigned char c) { return c == '\t' || (c >= ' ' && c != 0x7f); }

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool all_tchars(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i]))
            return false;
    return n > 0;
}

static bool equals_ignoring_case(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* A LF without its CR anywhere before the end of the head: RFC 9112 lets a
 * server read it as a line end, which a proxy in front might not. */
static bool has_bare_lf(const char *s, size_t n)
{
    for (const char *lf = memchr(s, '\n', n); lf; lf = memchr(lf + 1, '\n', n - (size_t)(lf + 1 - s)))
        if (lf == s || lf[-1] != '\r')
            return true;
    return false;
}

/* ------------------------------------------------------------- paths */

/* Decodes one segment of the path at target[*i] (up to the next '/') onto
 * out[*o]. 200, or the status that refuses the path. */
static int decode_segment(const char *target, size_t len, size_t *i, char *out, size_t *o)
{
    while (*i < len && target[*i] != '/') {
        unsigned char c = (unsigned char)target[*i];
        if (c == '%') {
            int hi = *i + 2 < len ? hex_value(target[*i + 1]) : -1;
            int lo = hi >= 0 ? hex_value(target[*i + 2]) : -1;
            if (lo < 0)
                return 400;
            c = (unsigned char)(hi << 4 | lo);
            *i += 3;
        } else {
            *i += 1;
        }
        /* an escaped "/" would name a file the server does not have, and
         * "%00" cut the path short in every C call that takes it */
        if (c == '/' || c == 0)
            return 403;
        out[(*o)++] = (char)c;
    }
    return 200;
}

/* Decodes the path into out; 200, or the status that refuses it. */
static int decode_path(const char *target, size_t len, char *out, size_t *out_len)
{
    if (len == 0 || target[0] != '/')
        return 400;
    size_t i = 0, o = 0;
    while (i < len) {
        i++; /* the '/' */
        size_t start = o;
        out[o++] = '/';
        int status = decode_segment(target, len, &i, out, &o);
        if (status != 200)
            return status;
        const char *seg = out + start + 1;
        size_t seg_len = o - start - 1;
        /* Refused, not resolved: the file a ".." names is found by the
         * server's file system, where a symbolic link could take it out. */
        if (seg_len == 2 && seg[0] == '.' && seg[1] == '.')
            return 403;
        if (seg_len == 0 || (seg_len == 1 && seg[0] == '.'))
            o = start;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    *out_len = o;
    return 200;
}

int http_decode_path(const char *target, size_t len, char *out, size_t *out_len)
{
    int status = decode_path(target, len, out, out_len);
    if (status != 200) { /* no half-decoded path to be used by mistake */
        out[0] = '\0';
        *out_len = 0;
    }
    return status;
}

/* The path part of an origin-form or absolute-form (http or https) target,
 * without the query; false for any other form. */
static bool target_path(const char *target, size_t len, const char **path, size_t *path_len)
{
    const char *p = target, *end = target + len;
    if (memchr(target, '#', len)) /* a fragment is never sent */
        return false;
    if (len > 0 && target[0] != '/') {
        size_t scheme = len >= 7 && strncasecmp(target, "http://", 7) == 0    ? 7
                        : len >= 8 && strncasecmp(target, "https://", 8) == 0 ? 8
                                                                               : 0;
        if (!scheme)
            return false;
        p += scheme;
        const char *authority = p;
        while (p < end && *p != '/' && *p != '?')
            p++;
        if (p == authority)
            return false;
    }
    const char *query = memchr(p, '?', (size_t)(end - p));
    *path = p;
    *path_len = (size_t)((query ? query : end) - p);
    if (*path_len == 0) { /* "http://host" asks for the root */
        *path = "/";
        *path_len = 1;
    }
    return true;
}

/* ---------------------------------------------------------- the head */

/* Status 0, or the error the request line earns. */
static int parse_request_line(const char *s, size_t n, struct request_line *rl)
{
    const char *sp1 = memchr(s, ' ', n);
    if (!sp1)
        return 400;
    const char *t = sp1 + 1, *end = s + n;
    const char *sp2 = memchr(t, ' ', (size_t)(end - t));
    if (!sp2)
        return 400;
    rl->method = s;
    rl->method_len = (size_t)(sp1 - s);
    rl->target = t;
    rl->target_len = (size_t)(sp2 - t);
    if (!all_tchars(rl->method, rl->method_len) || rl->target_len == 0)
        return 400;
    for (size_t i = 0; i < rl->target_len; i++)
        if ((unsigned char)t[i] <= ' ' || (unsigned char)t[i] >= 0x7f)
            return 400;
    const char *v = sp2 + 1;
    if (end - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return 400;
    rl->major = v[5] - '0';
    rl->minor = v[7] - '0';
    if (rl->major != 1)
        return 505;
    if (rl->target_len >= HTTP_PATH_MAX)
        return 414;
    return 0;
}

static void parse_connection_options(const char *v, size_t n, struct fields *f)
{
    const char *end = v + n;
    while (v < end) {
        const char *comma = memchr(v, ',', (size_t)(end - v));
        const char *stop = comma ? comma : end;
        const char *a = v, *b = stop;
        while (a < b && is_ows(*a))
            a++;
        while (b > a && is_ows(b[-1]))
            b--;
        if (equals_ignoring_case(a, (size_t)(b - a), "close"))
            f->close = true;
        else if (equals_ignoring_case(a, (size_t)(b - a), "keep-alive"))
            f->keep_alive = true;
        v = comma ? comma + 1 : end;
    }
}

/* Status 0, or 400 for a Content-Length that is not one plain number. */
static int parse_content_length(const char *v, size_t n, struct fields *f)
{
    if (++f->lengths > 1 || n == 0)
        return 400;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 400;
        if (v[i] != '0')
            f->body = true;
    }
    return 0;
}

/* One header field line; status 0 or 400. */
static int parse_field(const char *s, size_t n, struct fields *f)
{
    const char *colon = memchr(s, ':', n);
    /* a name must be a token: this also refuses obsolete line folding
     * (a line starting with white space) and white space before the colon */
    if (!colon || !all_tchars(s, (size_t)(colon - s)))
        return 400;
    size_t name_len = (size_t)(colon - s);
    const char *v = colon + 1, *end = s + n;
    while (v < end && is_ows(*v))
        v++;
    while (end > v && is_ows(end[-1]))
        end--;
    for (const char *p = v; p < end; p++)
        if (!is_field_char((unsigned char)*p))
            return 400;
    size_t vlen = (size_t)(end - v);
    if (equals_ignoring_case(s, name_len, "host"))
        f->hosts++;
    else if (equals_ignoring_case(s, name_len, "connection"))
        parse_connection_options(v, vlen, f);
    else if (equals_ignoring_case(s, name_len, "transfer-encoding"))
        f->chunked_or_other_coding = true;
    else if (equals_ignoring_case(s, name_len, "content-length"))
        return parse_content_length(v, vlen, f);
    return 0;
}

/* The lines of head[0..len), each ending in CRLF; the first is the request
 * line, and the blank line that ends the head is not in len. */
static int parse_lines(const char *head, size_t len, struct request_line *rl, struct fields *f)
{
    const char *p = head, *end = head + len;
    bool first = true;
    while (p < end) {
        const char *crlf = memmem(p, (size_t)(end - p), "\r\n", 2);
        size_t n = (size_t)(crlf - p);
        if (memchr(p, '\r', n)) /* a CR alone */
            return 400;
        int status = first ? parse_request_line(p, n, rl) : parse_field(p, n, f);
        if (status)
            return status;
        first = false;
        p = crlf + 2;
    }
    return 0;
}

/* Methods are case-sensitive (RFC 9110, 9.1): "get" is not GET. */
static enum http_method method_of(const struct request_line *rl)
{
    if (rl->method_len == 3 && memcmp(rl->method, "GET", 3) == 0)
        return HTTP_GET;
    if (rl->method_len == 4 && memcmp(rl->method, "HEAD", 4) == 0)
        return HTTP_HEAD;
    return HTTP_OTHER_METHOD;
}

/* What a syntactically sound head asks for: the status and the path. */
static void judge(const struct request_line *rl, const struct fields *f, struct http_request *req)
{
    bool has_body = f->body || f->chunked_or_other_coding;
    req->method = method_of(rl);
    req->keep_alive = rl->minor >= 1 ? !f->close : f->keep_alive && !f->close;
    if (f->hosts > 1 || (rl->minor >= 1 && f->hosts == 0)) {
        req->status = 400;
    } else if (req->method == HTTP_OTHER_METHOD) {
        req->status = 405;
        req->allow_header = true;
        /* the body is not read: what follows it cannot be found */
        req->keep_alive = req->keep_alive && !has_body;
        return;
    } else if (f->chunked_or_other_coding) {
        req->status = 501;
    } else if (f->body) {
        req->status = 413;
    } else {
        const char *path;
        size_t path_len;
        req->status = target_path(rl->target, rl->target_len, &path, &path_len)
                          ? http_decode_path(path, path_len, req->path, &req->path_len)
                          : 400;
        if (req->status == 200 || req->status == 403)
            return; /* the framing is sound: the connection can go on */
    }
    req->keep_alive = false;
}

/* Ends the parse with an error that closes the connection. */
static size_t refuse(struct http_request *req, int status, size_t used)
{
    req->status = status;
    req->keep_alive = false;
    return used;
}

size_t http_parse_request(const char *buf, size_t len, struct http_request *req)
{
    size_t n = len < HTTP_HEAD_MAX ? len : HTTP_HEAD_MAX;
    req->status = 400;
    req->method = HTTP_OTHER_METHOD;
    req->keep_alive = false;
    req->allow_header = false;
    req->path[0] = '\0';
    req->path_len = 0;

    const char *blank = memmem(buf, n, "\r\n\r\n", 4);
    size_t head_len = blank ? (size_t)(blank - buf) + 4 : n;
    if (has_bare_lf(buf, head_len))
        return refuse(req, 400, head_len);
    if (!blank) {
        if (len < HTTP_HEAD_MAX)
            return 0;
        return refuse(req, memmem(buf, n, "\r\n", 2) ? 431 : 414, n);
    }

    struct request_line rl = {0};
    struct fields f = {0};
    /* the request line's CRLF and the fields' are in the lines; the blank
     * line's is not */
    int status = parse_lines(buf, head_len - 2, &rl, &f);
    if (status)
        return refuse(req, status, head_len);
    judge(&rl, &f, req);
    return head_len;
}
