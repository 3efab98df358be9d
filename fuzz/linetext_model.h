/*
 * em_linetext checked against a model: a parser as simple as can be, one
 * byte at a time, that follows em.h's description of em_linetext. Both are
 * driven by the same input, split into a control part (chunk sizes, mode
 * switches between feeds and from callbacks, frees) and the bytes fed; each
 * writes a log of what it delivered and returned, and the logs must be
 * equal. Binary bytes are logged one by one, so that a block delivered in
 * pieces compares equal to the model's byte-at-a-time delivery.
 *
 * Included by fuzz/fuzz_linetext.c and tests/test_linetext.c, which define
 * LT_CHECK(cond) (abort, or fail the test case) before including it.
 *
 * Input: byte 0 picks the delimiter, byte 1 max_line, byte 2 the length of
 * the control part that follows; the rest is fed. Without control bytes
 * left, what remains is fed in one call.
 */
#ifndef LINETEXT_MODEL_H
#define LINETEXT_MODEL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "em.h"

/* ------------------------------------------------------------- the model */

typedef struct lt_run lt_run;
static void lt_run_line(lt_run *run, const char *line, size_t len);
static void lt_run_error(lt_run *run, int err);
static void lt_run_binary(lt_run *run, const char *data, size_t len, bool end);

enum { LTM_TEXT, LTM_BLOCK, LTM_RAW };

typedef struct lt_model {
    lt_run *run;
    char delim[8];
    size_t dlen, max_line;
    char *buf; /* the line so far (while discarding: its last dlen - 1 bytes) */
    size_t len, cap;
    bool discarding;
    int mode;
    size_t left;
    bool busy, freed;
} lt_model;

static bool ltm_ends_with_delim(const lt_model *m)
{
    return m->len >= m->dlen && !memcmp(m->buf + m->len - m->dlen, m->delim, m->dlen);
}

static void ltm_push(lt_model *m, char byte)
{
    if (m->len == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 16;
        m->buf = realloc(m->buf, m->cap);
        LT_CHECK(m->buf != NULL);
    }
    m->buf[m->len++] = byte;
}

/* One byte of text; returns -EMSGSIZE when it shows a line too long. */
static int ltm_text_byte(lt_model *m, char byte)
{
    ltm_push(m, byte);
    if (ltm_ends_with_delim(m)) {
        size_t line = m->len - m->dlen;
        bool was_discarding = m->discarding;
        m->len = 0;
        m->discarding = false;
        if (was_discarding)
            return 0;
        if (line > m->max_line) {
            lt_run_error(m->run, -EMSGSIZE);
            return -EMSGSIZE;
        }
        lt_run_line(m->run, m->buf, line);
        return 0;
    }
    if (m->discarding) { /* keep what may begin the delimiter */
        size_t keep = m->dlen - 1;
        if (m->len > keep) {
            memmove(m->buf, m->buf + m->len - keep, keep);
            m->len = keep;
        }
        return 0;
    }
    /* too long even without what may begin the delimiter */
    if (m->len >= m->dlen && m->len - (m->dlen - 1) > m->max_line) {
        m->discarding = true;
        size_t keep = m->dlen - 1;
        memmove(m->buf, m->buf + m->len - keep, keep);
        m->len = keep;
        lt_run_error(m->run, -EMSGSIZE);
        return -EMSGSIZE;
    }
    return 0;
}

static int ltm_step(lt_model *m, const char *p, size_t *pos, size_t n)
{
    if (m->mode == LTM_BLOCK) {
        bool end = m->left <= 1;
        if (m->left == 0) {
            m->mode = LTM_TEXT;
            lt_run_binary(m->run, "", 0, true);
            return 0;
        }
        m->left--;
        if (end)
            m->mode = LTM_TEXT;
        lt_run_binary(m->run, p + (*pos)++, 1, end);
        return 0;
    }
    if (m->mode == LTM_RAW) {
        lt_run_binary(m->run, p + (*pos)++, 1, false);
        return 0;
    }
    (void)n;
    return ltm_text_byte(m, p[(*pos)++]);
}

static void ltm_destroy(lt_model *m)
{
    free(m->buf);
    free(m);
}

static int ltm_leave(lt_model *m, int ret)
{
    m->busy = false;
    if (!m->freed)
        return ret;
    ltm_destroy(m);
    return -ECANCELED;
}

static int ltm_feed(void *h, const char *p, size_t n)
{
    lt_model *m = h;
    if (m->busy)
        return -EBUSY;
    m->busy = true;
    int ret = 0;
    size_t pos = 0;
    while (!m->freed && (pos < n || (m->mode == LTM_BLOCK && !m->left))) {
        int err = ltm_step(m, p, &pos, n);
        if (err)
            ret = err;
    }
    return ltm_leave(m, ret);
}

static bool ltm_pending(const lt_model *m) { return m->len || m->discarding; }

static int ltm_set_binary(void *h, size_t n)
{
    lt_model *m = h;
    if (ltm_pending(m))
        return -EBUSY;
    m->mode = LTM_BLOCK;
    m->left = n;
    if (n || m->busy)
        return 0;
    m->busy = true;
    while (!m->freed && m->mode == LTM_BLOCK && !m->left) {
        m->mode = LTM_TEXT;
        lt_run_binary(m->run, "", 0, true);
    }
    return ltm_leave(m, 0);
}

static int ltm_set_raw(void *h)
{
    lt_model *m = h;
    if (ltm_pending(m))
        return -EBUSY;
    m->mode = LTM_RAW;
    return 0;
}

static int ltm_set_text(void *h)
{
    lt_model *m = h;
    m->mode = LTM_TEXT;
    m->left = 0;
    return 0;
}

static void ltm_free(void *h)
{
    lt_model *m = h;
    if (m->busy)
        m->freed = true;
    else
        ltm_destroy(m);
}

static void *ltm_new(const char *delim, size_t max_line, lt_run *run)
{
    lt_model *m = calloc(1, sizeof *m);
    LT_CHECK(m != NULL && strlen(delim) < sizeof m->delim);
    strcpy(m->delim, delim);
    m->dlen = strlen(delim);
    m->max_line = max_line;
    m->run = run;
    return m;
}

/* --------------------------------------------------------- the real one */

static void lt_real_line(em_linetext *t, void *arg, const char *line, size_t len)
{
    (void)t;
    lt_run_line(arg, line, len);
}

static void lt_real_binary(em_linetext *t, void *arg, const char *data, size_t len, bool end)
{
    (void)t;
    lt_run_binary(arg, data, len, end);
}

static void lt_real_error(em_linetext *t, void *arg, int err)
{
    (void)t;
    lt_run_error(arg, err);
}

static void *lt_real_new(const char *delim, size_t max_line, lt_run *run)
{
    static const em_linetext_cbs cbs = {
        .line = lt_real_line, .binary = lt_real_binary, .error = lt_real_error};
    em_linetext *t = em_linetext_new(delim, max_line, &cbs, run);
    LT_CHECK(t != NULL);
    return t;
}

static int lt_real_feed(void *h, const char *p, size_t n) { return em_linetext_feed(h, p, n); }
static int lt_real_set_binary(void *h, size_t n) { return em_linetext_set_binary(h, n); }
static int lt_real_set_raw(void *h) { return em_linetext_set_raw(h); }
static int lt_real_set_text(void *h) { return em_linetext_set_text(h); }
static void lt_real_free(void *h) { em_linetext_free(h); }

/* ------------------------------------------------------------ the driver */

typedef struct lt_impl {
    void *(*make)(const char *delim, size_t max_line, lt_run *run);
    int (*feed)(void *h, const char *p, size_t n);
    int (*set_binary)(void *h, size_t n);
    int (*set_raw)(void *h);
    int (*set_text)(void *h);
    void (*destroy)(void *h);
    bool real; /* pieces as em_linetext delivers them: checked */
} lt_impl;

static const lt_impl lt_model_impl = {ltm_new, ltm_feed, ltm_set_binary, ltm_set_raw,
                                      ltm_set_text, ltm_free, false};
static const lt_impl lt_real_impl = {lt_real_new, lt_real_feed, lt_real_set_binary,
                                     lt_real_set_raw, lt_real_set_text, lt_real_free, true};

struct lt_run {
    const lt_impl *impl;
    void *h;
    bool gone;
    const uint8_t *ctl;
    size_t ctl_len, ctl_pos;
    size_t max_line;
    size_t block_left; /* real: what the block in progress may still deliver */
    int mode;          /* real: what the driver asked for, to check pieces */
    char *log;
    size_t log_len, log_cap;
    /* what was delivered, delimiters put back: the input, if no line was
     * dropped */
    char *out;
    size_t out_len, out_cap;
    const char *delim;
    bool dropped;
};

static void lt_put(char **b, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        while (*len + n > *cap)
            *cap = *cap ? 2 * *cap : 256;
        *b = realloc(*b, *cap);
        LT_CHECK(*b != NULL);
    }
    if (n)
        memcpy(*b + *len, p, n);
    *len += n;
}

static void lt_log(lt_run *run, const void *p, size_t n)
{
    lt_put(&run->log, &run->log_len, &run->log_cap, p, n);
}

static void lt_log_ret(lt_run *run, char what, int ret)
{
    char rec[1 + sizeof ret];
    rec[0] = what;
    memcpy(rec + 1, &ret, sizeof ret);
    lt_log(run, rec, sizeof rec);
    if (ret == -EMSGSIZE)
        run->dropped = true;
}

static int lt_next(lt_run *run)
{
    return run->ctl_pos < run->ctl_len ? run->ctl[run->ctl_pos++] : -1;
}

static void lt_set_binary(lt_run *run, size_t n)
{
    /* an empty block ends inside the call: the driver knows first */
    int old_mode = run->mode;
    size_t old_left = run->block_left;
    run->mode = LTM_BLOCK;
    run->block_left = n;
    int ret = run->impl->set_binary(run->h, n);
    if (ret != 0 && ret != -ECANCELED) {
        run->mode = old_mode;
        run->block_left = old_left;
    }
    if (ret == -ECANCELED)
        run->gone = true;
    lt_log_ret(run, 'S', ret);
}

static void lt_set_raw(lt_run *run)
{
    int ret = run->impl->set_raw(run->h);
    if (ret == 0)
        run->mode = LTM_RAW;
    lt_log_ret(run, 'W', ret);
}

static void lt_set_text(lt_run *run)
{
    int ret = run->impl->set_text(run->h);
    LT_CHECK(ret == 0);
    run->mode = LTM_TEXT;
    lt_log_ret(run, 'T', ret);
}

/* A switch or a free asked for from a callback; c from the control part. */
static void lt_callback_op(lt_run *run, int c)
{
    if (c < 0)
        return;
    switch (c % 8) {
    case 4:
        lt_set_binary(run, (size_t)(c >> 3) % 24);
        break;
    case 5:
        lt_set_raw(run);
        break;
    case 6:
        lt_set_text(run);
        break;
    case 7:
        if (c >> 3 == 31) {
            run->impl->destroy(run->h);
            run->gone = true;
            lt_log(run, "F", 1);
        } else {
            LT_CHECK(run->impl->feed(run->h, "x", 1) == -EBUSY);
        }
        break;
    default:
        break;
    }
}

static void lt_run_line(lt_run *run, const char *line, size_t len)
{
    LT_CHECK(len <= run->max_line);
    LT_CHECK(run->mode == LTM_TEXT);
    char rec[1 + sizeof len];
    rec[0] = 'L';
    memcpy(rec + 1, &len, sizeof len);
    lt_log(run, rec, sizeof rec);
    lt_log(run, line, len);
    lt_put(&run->out, &run->out_len, &run->out_cap, line, len);
    lt_put(&run->out, &run->out_len, &run->out_cap, run->delim, strlen(run->delim));
    lt_callback_op(run, lt_next(run));
}

static void lt_run_binary(lt_run *run, const char *data, size_t len, bool end)
{
    LT_CHECK(run->mode != LTM_TEXT);
    if (run->impl->real) {
        LT_CHECK(len > 0 || end);
        LT_CHECK(!end || run->mode == LTM_BLOCK);
        if (run->mode == LTM_BLOCK) {
            LT_CHECK(len <= run->block_left);
            run->block_left -= len;
            LT_CHECK(end == (run->block_left == 0));
        }
    }
    for (size_t i = 0; i < len; i++) {
        char rec[2] = {'b', data[i]};
        lt_log(run, rec, 2);
    }
    lt_put(&run->out, &run->out_len, &run->out_cap, data, len);
    if (!end)
        return;
    run->mode = LTM_TEXT;
    lt_log(run, "E", 1);
    lt_callback_op(run, lt_next(run));
}

static void lt_run_error(lt_run *run, int err)
{
    LT_CHECK(err == -EMSGSIZE);
    LT_CHECK(run->mode == LTM_TEXT);
    lt_log(run, "X", 1);
    lt_callback_op(run, lt_next(run));
}

/* A switch between feeds; c from the control part. */
static void lt_between_op(lt_run *run, int op)
{
    switch (op) {
    case 10:
        lt_set_binary(run, (size_t)lt_next(run) % 16 + 1);
        break;
    case 11:
        lt_set_binary(run, 0);
        break;
    case 12:
        lt_set_raw(run);
        break;
    case 13:
        lt_set_text(run);
        break;
    case 14:
        lt_set_binary(run, (size_t)(lt_next(run) & 0xff) * 7);
        break;
    default:
        break;
    }
}

static void lt_run_feeds(lt_run *run, const uint8_t *data, size_t size)
{
    size_t pos = 0;
    while (!run->gone && pos < size) {
        int c = lt_next(run);
        size_t chunk = c < 0 ? size - pos : (c & 15) == 15 ? 64 : (size_t)(c & 15);
        if (chunk > size - pos)
            chunk = size - pos;
        /* a chunk of 0 bytes, NULL or not, still ends an empty block */
        const char *p = chunk || (c & 1) ? (const char *)data + pos : NULL;
        int ret = run->impl->feed(run->h, p, chunk);
        lt_log_ret(run, 'R', ret);
        pos += chunk;
        if (ret == -ECANCELED)
            return;
        if (c >= 0)
            lt_between_op(run, c >> 4);
    }
    if (!run->gone) {
        if (!run->dropped) { /* what was delivered is the input, short of a line */
            LT_CHECK(run->out_len <= size);
            LT_CHECK(!run->out_len || !memcmp(run->out, data, run->out_len));
            LT_CHECK(size - run->out_len <= run->max_line + strlen(run->delim) - 1 ||
                     run->max_line == SIZE_MAX);
        }
        run->impl->destroy(run->h);
    }
}

/* Runs one implementation on an input; the caller frees run->log. */
static void lt_run_one(lt_run *run, const lt_impl *impl, const uint8_t *in, size_t size)
{
    static const char *const delims[] = {"\n", "\r\n", "ab", "aab", "abab", "\r\n\r\n"};
    memset(run, 0, sizeof *run);
    if (size < 3)
        return;
    run->impl = impl;
    run->delim = delims[in[0] % 6];
    run->max_line = in[1] >= 240 ? SIZE_MAX : (size_t)(1 + in[1] % 16);
    size_t ctl_len = (size_t)in[2] < size - 3 ? (size_t)in[2] : size - 3;
    run->ctl = in + 3;
    run->ctl_len = ctl_len;
    run->h = impl->make(run->delim, run->max_line, run);
    lt_run_feeds(run, in + 3 + ctl_len, size - 3 - ctl_len);
}

/* The real one and the model on one input: the same log. */
static void lt_compare(const uint8_t *in, size_t size)
{
    lt_run real, model;
    lt_run_one(&real, &lt_real_impl, in, size);
    lt_run_one(&model, &lt_model_impl, in, size);
    LT_CHECK(real.log_len == model.log_len);
    LT_CHECK(real.log_len == 0 || !memcmp(real.log, model.log, real.log_len));
    free(real.log);
    free(model.log);
    free(real.out);
    free(model.out);
}

#endif
