/* em_tokenizer: BufferedTokenizer's framing, one byte or many at a time. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct toks {
    char items[64][128];
    size_t lens[64];
    int n;
} toks;

static void collect(void *arg, const char *tok, size_t len)
{
    toks *t = arg;
    ASSERT(t->n < 64 && len < 128);
    memcpy(t->items[t->n], tok, len);
    t->items[t->n][len] = 0;
    t->lens[t->n++] = len;
}

static int feed(em_tokenizer *tk, const char *s, toks *out)
{
    return em_tokenizer_extract(tk, s, strlen(s), collect, out);
}

TEST(tokenizer_bad_delimiter)
{
    errno = 0;
    ASSERT_NULL(em_tokenizer_new(NULL, 0));
    ASSERT_EQ(errno, EINVAL);
    errno = 0;
    ASSERT_NULL(em_tokenizer_new("", 0));
    ASSERT_EQ(errno, EINVAL);
    ASSERT_EQ(em_tokenizer_extract(NULL, "a", 1, collect, NULL), -EINVAL);
    em_tokenizer_free(NULL);
}

TEST(tokenizer_lines_and_partial)
{
    em_tokenizer *tk = em_tokenizer_new("\n", 0);
    ASSERT_NOT_NULL(tk);
    toks t = {0};
    ASSERT_EQ(feed(tk, "one\ntwo\nthr", &t), 2);
    ASSERT_EQ(feed(tk, "ee\n\nfour", &t), 2);
    ASSERT_EQ(t.n, 4);
    ASSERT_STREQ(t.items[0], "one");
    ASSERT_STREQ(t.items[1], "two");
    ASSERT_STREQ(t.items[2], "three");
    ASSERT_EQ(t.lens[3], 0); /* an empty line is an empty token */
    ASSERT_EQ(feed(tk, "\n", &t), 1);
    ASSERT_STREQ(t.items[4], "four");
    em_tokenizer_free(tk); /* nothing leaks with a token pending either */
}

TEST(tokenizer_delimiter_split_across_calls)
{
    em_tokenizer *tk = em_tokenizer_new("\r\n\r\n", 0);
    ASSERT_NOT_NULL(tk);
    toks t = {0};
    const char *in = "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /a\r\n\r\n";
    for (const char *p = in; *p; p++) /* one byte at a time */
        ASSERT_GE(em_tokenizer_extract(tk, p, 1, collect, &t), 0);
    ASSERT_EQ(t.n, 2);
    ASSERT_STREQ(t.items[0], "GET / HTTP/1.1\r\nHost: x");
    ASSERT_STREQ(t.items[1], "POST /a");
    em_tokenizer_free(tk);
}

TEST(tokenizer_size_limit_discards_and_goes_on)
{
    em_tokenizer *tk = em_tokenizer_new("\n", 5);
    ASSERT_NOT_NULL(tk);
    toks t = {0};
    /* "12345" fits exactly; "toolong" does not; "ok" after it is delivered */
    ASSERT_EQ(feed(tk, "12345\ntoolong\nok\n", &t), -EMSGSIZE);
    ASSERT_EQ(t.n, 2);
    ASSERT_STREQ(t.items[0], "12345");
    ASSERT_STREQ(t.items[1], "ok");
    /* an over-long token spread over calls is dropped through its delimiter */
    ASSERT_EQ(feed(tk, "abcdefgh", &t), -EMSGSIZE);
    ASSERT_EQ(feed(tk, "ijkl", &t), 0);
    ASSERT_EQ(feed(tk, "mn\nafter\n", &t), 1); /* "after" is 5: fits */
    ASSERT_EQ(t.n, 3);
    ASSERT_STREQ(t.items[2], "after");
    ASSERT_EQ(feed(tk, "x\n", &t), 1);
    ASSERT_STREQ(t.items[3], "x");
    em_tokenizer_free(tk);
}

TEST(tokenizer_limit_with_multibyte_delimiter_pending)
{
    /* "abcd\r" may still end in "\r\n": not yet too long for a limit of 4 */
    em_tokenizer *tk = em_tokenizer_new("\r\n", 4);
    ASSERT_NOT_NULL(tk);
    toks t = {0};
    ASSERT_EQ(feed(tk, "abcd\r", &t), 0);
    ASSERT_EQ(feed(tk, "\n", &t), 1);
    ASSERT_STREQ(t.items[0], "abcd");
    em_tokenizer_free(tk);
}

typedef struct order {
    int next; /* the line number expected next */
    int bad;
} order;

static void check_order(void *arg, const char *tok, size_t len)
{
    order *o = arg;
    char want[32];
    int n = snprintf(want, sizeof want, "line-%d", o->next++);
    if ((size_t)n != len || memcmp(want, tok, len) != 0)
        o->bad++;
}

TEST(tokenizer_many_random_chunks)
{
    /* 2000 numbered lines cut at random places arrive whole and in order */
    enum { LINES = 2000 };
    size_t cap = LINES * 16, len = 0;
    char *all = malloc(cap);
    ASSERT_NOT_NULL(all);
    for (int i = 0; i < LINES; i++)
        len += (size_t)snprintf(all + len, cap - len, "line-%d;;", i);
    em_tokenizer *tk = em_tokenizer_new(";;", 64);
    ASSERT_NOT_NULL(tk);
    order o = {0, 0};
    uint64_t seed = 7;
    int delivered = 0;
    for (size_t off = 0; off < len;) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t n = 1 + (size_t)(seed >> 33) % 37;
        if (n > len - off)
            n = len - off;
        int k = em_tokenizer_extract(tk, all + off, n, check_order, &o);
        ASSERT_GE(k, 0);
        delivered += k;
        off += n;
    }
    ASSERT_EQ(delivered, LINES);
    ASSERT_EQ(o.next, LINES);
    ASSERT_EQ(o.bad, 0);
    /* NULL token: the tokens are only counted */
    ASSERT_EQ(em_tokenizer_extract(tk, "a;;b;;", 6, NULL, NULL), 2);
    em_tokenizer_free(tk);
    free(all);
}
