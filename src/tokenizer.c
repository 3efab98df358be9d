/* BufferedTokenizer: splits a byte stream on a delimiter. Tokens that lie
 * wholly inside one chunk of input are handed out in place; only a token
 * still incomplete at the end of a chunk is copied, to wait for the rest. */
#include "em-internal.h"

#include <string.h>

struct em_tokenizer {
    char *delim;
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
    em_tokenizer *t = em__calloc(1, sizeof *t);
    if (t && !(t->delim = em__strdup(delimiter))) {
        em__free(t);
        t = NULL;
    }
    if (!t)
        return NULL;
    t->dlen = strlen(delimiter);
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

static int reserve(em_tokenizer *t, size_t n)
{
    if (n <= t->cap)
        return 0;
    size_t cap = t->cap ? t->cap : 64;
    while (cap < n)
        cap = cap > SIZE_MAX / 2 ? n : cap * 2;
    char *b = em__realloc(t->buf, cap);
    if (!b)
        return -ENOMEM;
    t->buf = b;
    t->cap = cap;
    return 0;
}

/* p may point into buf itself. */
static int keep(em_tokenizer *t, const char *p, size_t n)
{
    t->len = 0;
    if (!n)
        return 0;
    int err = reserve(t, n);
    if (err)
        return err;
    memmove(t->buf, p, n);
    t->len = n;
    return 0;
}

/* Keeps the tail that may be the first bytes of a delimiter. */
static int keep_partial_delim(em_tokenizer *t, const char *p, size_t n)
{
    size_t tail = n < t->dlen - 1 ? n : t->dlen - 1;
    return keep(t, p + n - tail, tail);
}

static bool too_long(const em_tokenizer *t, size_t len) { return t->limit && len > t->limit; }

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
    /* The rest may end with part of a delimiter: it is too long only if
     * even without that part it exceeds the limit. */
    if (!t->discarding && too_long(t, rest >= t->dlen ? rest - (t->dlen - 1) : 0)) {
        err = -EMSGSIZE;
        t->discarding = true;
    }
    int kerr = t->discarding ? keep_partial_delim(t, in + pos, rest) : keep(t, in + pos, rest);
    if (kerr)
        return kerr;
    return err ? err : delivered;
}

int em_tokenizer_extract(em_tokenizer *t, const char *data, size_t len,
                         void (*token)(void *arg, const char *tok, size_t len), void *arg)
{
    if (!t || (!data && len))
        return -EINVAL;
    if (!t->len)
        return split(t, data, len, token, arg);
    /* An incomplete token waits in buf: the new bytes join it there. */
    if (len > SIZE_MAX - t->len || reserve(t, t->len + len) < 0)
        return -ENOMEM;
    if (len)
        memcpy(t->buf + t->len, data, len);
    return split(t, t->buf, t->len + len, token, arg);
}
