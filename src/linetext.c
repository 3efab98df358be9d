/* LineText2: lines split on a delimiter, with binary blocks between them.
 * Each step of a feed delivers at most one event, and the mode is read
 * again before the next step, so a callback that switches mode changes how
 * the very next byte is parsed. Binary bytes are handed out in place as
 * they come, never buffered: only an incomplete line is copied, so
 * max_line bounds the memory held. As in em_tokenizer, each byte is
 * searched for the delimiter once (a seam of 2 * (dlen - 1) bytes twice). */
#include "em-internal.h"

#include <string.h>

enum lt_mode { LT_TEXT, LT_BLOCK, LT_RAW };

struct em_linetext {
    em_linetext_cbs cbs;
    void *arg;
    char *delim;
    char *seam;   /* after delim: 2 * (dlen - 1) bytes */
    char *tail;   /* after seam: dlen - 1 bytes, while discarding */
    size_t dlen;
    size_t max_line;
    char *buf;    /* the incomplete line */
    size_t len, cap;
    size_t tail_len;
    bool discarding; /* inside a line over max_line: tail may start the delimiter */
    bool dropping;   /* in the error callback: that line may not be over */
    enum lt_mode mode;
    size_t left;  /* LT_BLOCK: bytes the block still needs */
    bool busy;    /* in a feed or a callback: feeding again is refused */
    bool freed;   /* em_linetext_free came from a callback */
};

em_linetext *em_linetext_new(const char *delimiter, size_t max_line,
                             const em_linetext_cbs *cbs, void *arg)
{
    if (!delimiter || !*delimiter || !max_line || !cbs) {
        errno = EINVAL;
        return NULL;
    }
    size_t dlen = strlen(delimiter);
    em_linetext *t = em__calloc(1, sizeof *t);
    if (t && !(t->delim = em__malloc(4 * dlen))) {
        em__free(t);
        t = NULL;
    }
    if (!t) {
        errno = ENOMEM; /* whatever the allocator left */
        return NULL;
    }
    memcpy(t->delim, delimiter, dlen);
    t->seam = t->delim + dlen;
    t->tail = t->seam + 2 * dlen;
    t->dlen = dlen;
    t->max_line = max_line;
    t->cbs = *cbs;
    t->arg = arg;
    return t;
}

static void destroy(em_linetext *t)
{
    em__free(t->buf);
    em__free(t->delim);
    em__free(t);
}

void em_linetext_free(em_linetext *t)
{
    if (!t)
        return;
    if (t->busy)
        t->freed = true; /* the feed frees it once the callback returns */
    else
        destroy(t);
}

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* An incomplete line of len bytes is over the limit only if it is even
 * without the dlen - 1 bytes that may start the delimiter. */
static bool too_long_pending(const em_linetext *t, size_t len)
{
    return len >= t->dlen && len - (t->dlen - 1) > t->max_line;
}

static bool text_pending(const em_linetext *t)
{
    return t->len || t->discarding || t->dropping;
}

static int reserve(em_linetext *t, size_t n) { return em__bytes_reserve(&t->buf, &t->cap, n); }

static int append(em_linetext *t, const char *p, size_t n)
{
    int err = reserve(t, t->len + n);
    if (err)
        return err;
    memcpy(t->buf + t->len, p, n);
    t->len += n;
    return 0;
}

/* The last bytes of the incomplete line (or of the one being discarded), up
 * to dlen - 1 of them: where a delimiter split between feeds begins. */
static size_t pending_tail(const em_linetext *t, const char **p)
{
    size_t k = t->discarding ? t->tail_len : min_size(t->len, t->dlen - 1);
    *p = t->discarding || !k ? t->tail : t->buf + t->len - k; /* never NULL */
    return k;
}

/* Starts or goes on discarding: only what may begin the delimiter is kept,
 * the tail of what was pending followed by p. */
static void discard(em_linetext *t, const char *p, size_t n)
{
    size_t keep = t->dlen - 1;
    const char *old;
    size_t old_len = pending_tail(t, &old);
    size_t head = n < keep ? min_size(old_len, keep - n) : 0;
    size_t k = min_size(n, keep);
    memmove(t->tail, old + old_len - head, head);
    memcpy(t->tail + head, p + n - k, k);
    t->tail_len = head + k;
    t->discarding = true;
    t->len = 0;
}

/* The offset in p just past the delimiter that ends the pending line,
 * SIZE_MAX when p does not end it. The pending bytes were searched when
 * they came; only a delimiter begun in their tail is new. */
static size_t find_pending_end(em_linetext *t, const char *p, size_t n)
{
    const char *old;
    size_t head = pending_tail(t, &old);
    size_t k = min_size(n, t->dlen - 1);
    memcpy(t->seam, old, head);
    memcpy(t->seam + head, p, k);
    const char *d = memmem(t->seam, head + k, t->delim, t->dlen);
    if (d)
        return (size_t)(d - t->seam) + t->dlen - head;
    d = memmem(p, n, t->delim, t->dlen);
    return d ? (size_t)(d - p) + t->dlen : SIZE_MAX;
}

static void deliver_line(em_linetext *t, const char *line, size_t len)
{
    if (t->cbs.line)
        t->cbs.line(t, t->arg, line, len);
}

static void deliver_binary(em_linetext *t, const char *data, size_t len, bool end)
{
    if (t->cbs.binary)
        t->cbs.binary(t, t->arg, data, len, end);
}

/* The pending line ends at p + end. Only the part of it in p is copied. */
static int finish_pending(em_linetext *t, const char *p, size_t end)
{
    if (t->discarding) {
        t->discarding = false;
        t->tail_len = 0;
        return 0;
    }
    size_t line_len = t->len + end - t->dlen;
    int err = line_len > t->max_line ? -EMSGSIZE : 0;
    if (!err && line_len > t->len)
        err = append(t, p, line_len - t->len);
    t->len = 0; /* nothing pending while the callback runs: it may switch */
    if (!err)
        deliver_line(t, t->buf, line_len);
    return err;
}

/* p holds no end of the pending line: it joins it, unless that makes the
 * line too long (or memory is short: the line is lost either way). */
static int add_pending(em_linetext *t, const char *p, size_t n)
{
    if (t->discarding) {
        discard(t, p, n);
        return 0;
    }
    bool too_long = n > SIZE_MAX - t->len || too_long_pending(t, t->len + n);
    int err = too_long ? -EMSGSIZE : append(t, p, n);
    if (err)
        discard(t, p, n);
    return err;
}

/* Nothing pending: a line wholly in p is handed out in place. */
static size_t text_fresh(em_linetext *t, const char *p, size_t n, int *err)
{
    const char *d = memmem(p, n, t->delim, t->dlen);
    if (!d) {
        *err = add_pending(t, p, n);
        return n;
    }
    size_t len = (size_t)(d - p);
    if (len > t->max_line)
        *err = -EMSGSIZE;
    else
        deliver_line(t, p, len);
    return len + t->dlen;
}

/* At most one line; returns how many bytes of p it took. */
static size_t text_step(em_linetext *t, const char *p, size_t n, int *err)
{
    if (!text_pending(t))
        return text_fresh(t, p, n, err);
    size_t end = find_pending_end(t, p, n);
    if (end == SIZE_MAX) {
        *err = add_pending(t, p, n);
        return n;
    }
    *err = finish_pending(t, p, end);
    return end;
}

/* The mode is set back to text before the end of a block is delivered, so
 * that its callback may chain another block. */
static size_t block_step(em_linetext *t, const char *p, size_t n)
{
    size_t take = min_size(t->left, n);
    t->left -= take;
    bool end = !t->left;
    if (end)
        t->mode = LT_TEXT;
    deliver_binary(t, p, take, end);
    return take;
}

static size_t step(em_linetext *t, const char *p, size_t n, int *err)
{
    *err = 0;
    switch (t->mode) {
    case LT_BLOCK:
        return block_step(t, p, n);
    case LT_RAW:
        deliver_binary(t, p, n, false);
        return n;
    default:
        return text_step(t, p, n, err);
    }
}

/* An empty block (em_linetext_set_binary(t, 0)) ends without a byte. */
static bool empty_block_due(const em_linetext *t) { return t->mode == LT_BLOCK && !t->left; }

/* Ends the call that ran callbacks: -ECANCELED when one of them freed t. */
static int leave(em_linetext *t, int ret)
{
    t->busy = false;
    if (!t->freed)
        return ret;
    destroy(t);
    return -ECANCELED;
}

/* A switch from the error callback is refused: the line may go on. */
static void report_dropped(em_linetext *t, int err)
{
    if (!t->cbs.error || t->freed)
        return;
    t->dropping = true;
    t->cbs.error(t, t->arg, err);
    t->dropping = false;
}

int em_linetext_feed(em_linetext *t, const char *data, size_t len)
{
    if (!t || (!data && len))
        return -EINVAL;
    if (t->busy)
        return -EBUSY;
    if (!len)
        data = ""; /* no arithmetic on NULL */
    t->busy = true;
    int ret = 0;
    size_t pos = 0;
    while (!t->freed && (pos < len || empty_block_due(t))) {
        int err;
        pos += step(t, data + pos, len - pos, &err);
        if (err && ret != -ENOMEM)
            ret = err;
        if (err)
            report_dropped(t, err);
    }
    return leave(t, ret);
}

int em_linetext_set_binary(em_linetext *t, size_t n)
{
    if (!t)
        return -EINVAL;
    if (text_pending(t))
        return -EBUSY;
    t->mode = LT_BLOCK;
    t->left = n;
    if (n || t->busy)
        return 0; /* in a feed, the feed delivers an empty block's end */
    t->busy = true;
    while (!t->freed && empty_block_due(t))
        block_step(t, "", 0);
    return leave(t, 0);
}

int em_linetext_set_raw(em_linetext *t)
{
    if (!t)
        return -EINVAL;
    if (text_pending(t))
        return -EBUSY;
    t->mode = LT_RAW;
    t->left = 0;
    return 0;
}

int em_linetext_set_text(em_linetext *t)
{
    if (!t)
        return -EINVAL;
    t->mode = LT_TEXT;
    t->left = 0;
    return 0;
}
