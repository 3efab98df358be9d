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

/* Tokens of many megabytes in 512-byte pieces, as a peer may send them: the
 * search must go on where it stopped, not rescan the pending token per piece.
 * The quadratic tokenizer took 72 s for 8 MiB with "\r\n" and 3 minutes
 * for 64 MiB with "\n"; these cases take under a second (about one under
 * ASan), and their timeouts are their only bound on time. */
enum { BIG = 64 << 20, PIECE = 512 };

/* Letters only, so no delimiter inside; room for a few more bytes. */
static char *letters(size_t n)
{
    char *s = malloc(n + 16);
    ASSERT_NOT_NULL(s);
    for (size_t i = 0; i < n; i++)
        s[i] = (char)('a' + pattern_byte(i) % 26);
    return s;
}

typedef struct expect {
    const char *tok[2]; /* the tokens due, in order */
    size_t len[2];
    int n, bad;
} expect;

static void compare(void *arg, const char *tok, size_t len)
{
    expect *e = arg;
    if (e->n >= 2 || len != e->len[e->n] || memcmp(tok, e->tok[e->n], len) != 0)
        e->bad++;
    e->n++;
}

/* Feeds s in PIECE-byte pieces; returns the tokens delivered and counts the
 * -EMSGSIZE returns in *too_long. */
static int feed_pieces(em_tokenizer *tk, const char *s, size_t len, expect *e, int *too_long)
{
    int delivered = 0;
    for (size_t off = 0; off < len; off += PIECE) {
        size_t n = len - off < PIECE ? len - off : PIECE;
        int k = em_tokenizer_extract(tk, s + off, n, compare, e);
        if (k == -EMSGSIZE)
            (*too_long)++;
        else {
            ASSERT_GE(k, 0);
            delivered += k;
        }
    }
    return delivered;
}

static int feed_str(em_tokenizer *tk, const char *s, expect *e)
{
    return em_tokenizer_extract(tk, s, strlen(s), compare, e);
}

static void long_token_then_short(const char *delim)
{
    char *big = letters(BIG);
    em_tokenizer *tk = em_tokenizer_new(delim, 0);
    ASSERT_NOT_NULL(tk);
    expect e = {{big, "next"}, {BIG, 4}, 0, 0};
    int too_long = 0;
    ASSERT_EQ(feed_pieces(tk, big, BIG, &e, &too_long), 0);
    ASSERT_EQ(too_long, 0);
    ASSERT_EQ(feed_str(tk, delim, &e), 1);
    ASSERT_EQ(feed_str(tk, "next", &e), 0);
    ASSERT_EQ(feed_str(tk, delim, &e), 1);
    ASSERT_EQ(e.n, 2);
    ASSERT_EQ(e.bad, 0);
    em_tokenizer_free(tk);
    free(big);
}

TEST_TIMEOUT(tokenizer_long_token_in_small_pieces, 30);
TEST(tokenizer_long_token_in_small_pieces)
{
    long_token_then_short("\n");
    long_token_then_short("\r\n");
}

static void long_token_discarded(const char *delim)
{
    /* The limit is large enough that reaching it quadratically would take
     * minutes too: the search must resume below the limit as well. */
    char *big = letters(BIG);
    em_tokenizer *tk = em_tokenizer_new(delim, 16 << 20);
    ASSERT_NOT_NULL(tk);
    expect e = {{"next"}, {4}, 0, 0};
    int too_long = 0;
    ASSERT_EQ(feed_pieces(tk, big, BIG, &e, &too_long), 0);
    ASSERT_EQ(too_long, 1);
    ASSERT_EQ(feed_str(tk, delim, &e), 0); /* the end of the dropped token */
    char next[16];
    snprintf(next, sizeof next, "next%s", delim);
    ASSERT_EQ(feed_str(tk, next, &e), 1);
    ASSERT_EQ(e.n, 1);
    ASSERT_EQ(e.bad, 0);
    em_tokenizer_free(tk);
    free(big);
}

TEST_TIMEOUT(tokenizer_long_token_discarded_in_small_pieces, 30);
TEST(tokenizer_long_token_discarded_in_small_pieces)
{
    long_token_discarded("\n");
    long_token_discarded("\r\n");
}

/* The first cut bytes of delim end a piece, the rest begin the next: once
 * in the middle of the long token followed by 'x' (not a delimiter, the
 * bytes stay in the token), once at its end. */
static void delimiter_cut_at_piece_end(const char *delim, size_t cut)
{
    size_t dlen = strlen(delim), half = BIG / 2;
    char *s = letters(BIG);
    memcpy(s + half - cut, delim, cut);
    s[half] = 'x';
    size_t tok_len = BIG - cut;
    memcpy(s + tok_len, delim, dlen);
    memcpy(s + tok_len + dlen, "next", 4);
    memcpy(s + tok_len + dlen + 4, delim, dlen);
    em_tokenizer *tk = em_tokenizer_new(delim, 0);
    ASSERT_NOT_NULL(tk);
    expect e = {{s, "next"}, {tok_len, 4}, 0, 0};
    int too_long = 0;
    ASSERT_EQ(feed_pieces(tk, s, tok_len + 2 * dlen + 4, &e, &too_long), 2);
    ASSERT_EQ(too_long, 0);
    ASSERT_EQ(e.n, 2);
    ASSERT_EQ(e.bad, 0);
    em_tokenizer_free(tk);
    free(s);
}

TEST_TIMEOUT(tokenizer_delimiter_split_where_search_resumes, 30);
TEST(tokenizer_delimiter_split_where_search_resumes)
{
    delimiter_cut_at_piece_end("\r\n", 1);
    delimiter_cut_at_piece_end("\r\n\r\n", 1);
    delimiter_cut_at_piece_end("\r\n\r\n", 3);
}
