/* BufferedTokenizer: splits a byte stream on a delimiter. Tokens that lie
 * wholly inside one chunk of input are handed out in place; only a token
 * still incomplete at the end of a chunk is copied, to wait for the rest.
 * Each byte is searched once (the dlen - 1 at a seam between chunks twice),
 * so a peer sending a long token in small pieces costs linear time. */
#include "em-internal.h"

#include <string.h>

struct em_tokenizer {
    char *delim;
    char *seam;       /* after delim: room for 2 * (dlen - 1) bytes, where a
                         delimiter split between two pieces is looked for */
    size_t dlen;
    size_t limit;     /* 0: none */
    char *buf;        /* the incomplete token (or, while discarding, a
                         possible start of the delimiter) */
    size_t len, cap;
    bool discarding;  /* inside a token that exceeded the limit */
};

em_tokenizer *em_tokenizer_new(const char *delimiter, size_t size_limit)
{
    if (!delimiter || !*delimiter) {
        errno = EINVAL;
        return NULL;
    }
    size_t dlen = strlen(delimiter);
    em_tokenizer *t = em__calloc(1, sizeof *t);
    if (t && !(t->delim = em__malloc(3 * dlen))) {
        em__free(t);
        t = NULL;
    }
    if (!t)
        return NULL;
    memcpy(t->delim, delimiter, dlen);
    t->seam = t->delim + dlen;
    t->dlen = dlen;
    t->limit = size_limit;
    return t;
}

void em_tokenizer_free(em_tokenizer *t)
{
    if (!t)
        return;
    em__free(t->delim);
    em__free(t->buf);
    em__free(t);
}

static int reserve(em_tokenizer *t, size_t n) { return em__bytes_reserve(&t->buf, &t->cap, n); }

/* Adds n bytes of data to the pending bytes. */
static int append(em_tokenizer *t, const char *data, size_t n)
{
    if (n > SIZE_MAX - t->len || reserve(t, t->len + n) < 0)
        return -ENOMEM;
    if (n)
        memcpy(t->buf + t->len, data, n);
    t->len += n;
    return 0;
}

static int keep(em_tokenizer *t, const char *p, size_t n)
{
    t->len = 0;
    if (!n)
        return 0;
    int err = reserve(t, n);
    if (err)
        return err;
    memcpy(t->buf, p, n);
    t->len = n;
    return 0;
}

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* Puts the pending bytes' last head bytes and data's first k bytes in the
 * seam; returns how many it holds. */
static size_t fill_seam(em_tokenizer *t, size_t head, const char *data, size_t k)
{
    memcpy(t->seam, t->buf + t->len - head, head);
    memcpy(t->seam + head, data, k);
    return head + k;
}

/* While discarding only what may be the first bytes of a delimiter is kept:
 * the tail of the pending bytes followed by data. */
static int keep_partial_delim(em_tokenizer *t, const char *data, size_t n)
{
    size_t tail = t->dlen - 1;
    if (n >= tail || !t->len)
        return keep(t, data + n - min_size(n, tail), min_size(n, tail));
    size_t head = min_size(t->len, tail - n);
    return keep(t, t->seam, fill_seam(t, head, data, n));
}

/* A buffer grown for one long token is not held for the tokenizer's life
 * once that token is done with. */
static void shrink(em_tokenizer *t)
{
    enum { KEEP_CAP = 64 * 1024, MIN_CAP = 64 };
    if (t->cap <= KEEP_CAP || t->len > KEEP_CAP / 4)
        return;
    size_t cap = t->len > MIN_CAP ? t->len : MIN_CAP;
    char *b = em__realloc(t->buf, cap);
    if (b) {
        t->buf = b;
        t->cap = cap;
    }
}

static bool too_long(const em_tokenizer *t, size_t len) { return t->limit && len > t->limit; }

/* Pending bytes that may end with part of a delimiter are too long only if
 * even without that part they exceed the limit. */
static bool too_long_pending(const em_tokenizer *t, size_t len)
{
    return too_long(t, len >= t->dlen ? len - (t->dlen - 1) : 0);
}

/* Called with nothing pending: tokens are handed out from in itself. */
static int split(em_tokenizer *t, const char *in, size_t n,
                 void (*token)(void *arg, const char *tok, size_t len), void *arg)
{
    int delivered = 0, err = 0;
    size_t pos = 0;
    for (;;) {
        const char *d = memmem(in + pos, n - pos, t->delim, t->dlen);
        if (!d)
            break;
        size_t end = (size_t)(d - in);
        if (t->discarding)
            t->discarding = false;
        else if (too_long(t, end - pos))
            err = -EMSGSIZE;
        else {
            delivered++;
            if (token)
                token(arg, in + pos, end - pos);
        }
        pos = end + t->dlen;
    }
    size_t rest = n - pos;
    if (!t->discarding && too_long_pending(t, rest)) {
        err = -EMSGSIZE;
        t->discarding = true;
    }
    int kerr = t->discarding ? keep_partial_delim(t, in + pos, rest) : keep(t, in + pos, rest);
    if (kerr)
        return kerr;
    return err ? err : delivered;
}

/* The offset in data just past the delimiter that ends the pending token,
 * SIZE_MAX when data does not end it. The pending bytes were all searched
 * when they came: searching them again for every piece of a long token
 * would be quadratic. Only a delimiter begun in their last dlen - 1 bytes
 * is new; the seam holds those bytes and data's first ones. */
static size_t find_pending_end(em_tokenizer *t, const char *data, size_t n)
{
    size_t head = min_size(t->len, t->dlen - 1);
    size_t seam_len = fill_seam(t, head, data, min_size(n, t->dlen - 1));
    const char *d = memmem(t->seam, seam_len, t->delim, t->dlen);
    if (d)
        return (size_t)(d - t->seam) + t->dlen - head;
    d = memmem(data, n, t->delim, t->dlen);
    return d ? (size_t)(d - data) + t->dlen : SIZE_MAX;
}

/* Hands out or drops the pending token, which ends at data + end. Only the
 * part of data inside it is copied; the rest is split in place. */
static int finish_pending(em_tokenizer *t, const char *data, size_t end,
                          void (*token)(void *arg, const char *tok, size_t len), void *arg)
{
    size_t tok_len = t->len + end - t->dlen;
    int ret = 0;
    if (t->discarding)
        t->discarding = false;
    else if (too_long(t, tok_len))
        ret = -EMSGSIZE;
    else if (tok_len > t->len && append(t, data, tok_len - t->len) < 0)
        return -ENOMEM;
    else {
        ret = 1;
        if (token)
            token(arg, t->buf, tok_len);
    }
    t->len = 0;
    shrink(t);
    return ret;
}

/* data holds no end of the pending token: it joins it, unless that makes it
 * too long. */
static int add_pending(em_tokenizer *t, const char *data, size_t n)
{
    if (t->discarding)
        return keep_partial_delim(t, data, n);
    if (!too_long_pending(t, t->len + n))
        return append(t, data, n);
    t->discarding = true;
    int err = keep_partial_delim(t, data, n);
    shrink(t);
    return err ? err : -EMSGSIZE;
}

int em_tokenizer_extract(em_tokenizer *t, const char *data, size_t len,
                         void (*token)(void *arg, const char *tok, size_t len), void *arg)
{
    if (!t || (!data && len))
        return -EINVAL;
    if (!len) /* data may be NULL: nothing to search */
        return 0;
    if (!t->len)
        return split(t, data, len, token, arg);
    size_t end = find_pending_end(t, data, len);
    if (end == SIZE_MAX)
        return add_pending(t, data, len);
    int first = finish_pending(t, data, end, token, arg);
    if (first == -ENOMEM)
        return first;
    int rest = split(t, data + end, len - end, token, arg);
    if (rest < 0)
        return rest;
    return first < 0 ? first : first + rest;
}
