/* em_linetext: EventMachine's LineText2, lines and binary blocks, switched
 * from inside the callbacks; split at every byte, against a model, and as
 * the parser of an HTTP-like protocol over a loopback connection. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LT_CHECK(cond) ASSERT(cond)
#include "../fuzz/linetext_model.h"

/* What the callbacks saw: "[line]" per line, "{bytes}" per binary piece
 * (adjacent pieces of a block joined when merge is set), "$" per block end.
 * Lines steer the parser: "#B<n>" asks for a block of n bytes, "#R" for raw
 * mode, "#F" frees it, "#X" checks that feeding from a callback is refused;
 * a binary piece holding "#T" goes back to text mode, one holding "#F"
 * frees it. chain lists the blocks asked for from the end callbacks. */
typedef struct coll {
    char log[4096];
    size_t len;
    bool merge;
    bool piece_open; /* the log ends with a piece of a block not ended */
    size_t chain[8];
    int chain_n, chain_used;
    bool free_at_end;
    bool free_on_error;
    int error_switch_rc;
} coll;

static void put(coll *k, const char *p, size_t n)
{
    ASSERT(k->len + n < sizeof k->log);
    memcpy(k->log + k->len, p, n);
    k->len += n;
    k->log[k->len] = 0;
}

static void steer(em_linetext *t, const char *p, size_t n)
{
    if (n >= 3 && !memcmp(p, "#B", 2))
        ASSERT_EQ(em_linetext_set_binary(t, strtoul(p + 2, NULL, 10)), 0);
    else if (n == 2 && !memcmp(p, "#R", 2))
        ASSERT_EQ(em_linetext_set_raw(t), 0);
    else if (n == 2 && !memcmp(p, "#F", 2))
        em_linetext_free(t);
    else if (n == 2 && !memcmp(p, "#X", 2))
        ASSERT_EQ(em_linetext_feed(t, "a\r\n", 3), -EBUSY);
}

static void on_line(em_linetext *t, void *arg, const char *line, size_t len)
{
    coll *k = arg;
    k->piece_open = false;
    put(k, "[", 1);
    put(k, line, len);
    put(k, "]", 1);
    steer(t, line, len);
}

static void on_binary(em_linetext *t, void *arg, const char *data, size_t len, bool end)
{
    coll *k = arg;
    if (k->merge && k->piece_open)
        k->len--; /* reopen the piece before */
    else
        put(k, "{", 1);
    put(k, data, len);
    put(k, "}", 1);
    k->piece_open = !end;
    if (end)
        put(k, "$", 1);
    if (memmem(data, len, "#T", 2))
        ASSERT_EQ(em_linetext_set_text(t), 0);
    if (memmem(data, len, "#F", 2))
        em_linetext_free(t);
    if (end && k->free_at_end)
        em_linetext_free(t);
    else if (end && k->chain_used < k->chain_n)
        ASSERT_EQ(em_linetext_set_binary(t, k->chain[k->chain_used++]), 0);
}

static const em_linetext_cbs cbs = {.line = on_line, .binary = on_binary};

static em_linetext *new_lt(const char *delim, size_t max_line, coll *k)
{
    em_linetext *t = em_linetext_new(delim, max_line, &cbs, k);
    ASSERT_NOT_NULL(t);
    return t;
}

static int feed_str(em_linetext *t, const char *s) { return em_linetext_feed(t, s, strlen(s)); }

/* in, fed in three pieces split at every i <= j, gives want each time. */
static void check_all_splits(const char *delim, size_t max_line, const char *in,
                             const char *want)
{
    size_t n = strlen(in);
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            coll k = {.merge = true};
            em_linetext *t = new_lt(delim, max_line, &k);
            ASSERT_EQ(em_linetext_feed(t, in, i), 0);
            ASSERT_EQ(em_linetext_feed(t, in + i, j - i), 0);
            ASSERT_EQ(em_linetext_feed(t, in + j, n - j), 0);
            if (strcmp(k.log, want) != 0)
                FAIL("split at %zu, %zu: \"%s\", expected \"%s\"", i, j, k.log, want);
            em_linetext_free(t);
        }
    }
}

TEST(linetext_bad_args)
{
    coll k = {0};
    ASSERT_NULL_ERRNO(em_linetext_new(NULL, 10, &cbs, &k), EINVAL);
    ASSERT_NULL_ERRNO(em_linetext_new("", 10, &cbs, &k), EINVAL);
    ASSERT_NULL_ERRNO(em_linetext_new("\n", 0, &cbs, &k), EINVAL);
    ASSERT_NULL_ERRNO(em_linetext_new("\n", 10, NULL, &k), EINVAL);
    ASSERT_EQ(em_linetext_feed(NULL, "a", 1), -EINVAL);
    ASSERT_EQ(em_linetext_set_binary(NULL, 1), -EINVAL);
    ASSERT_EQ(em_linetext_set_raw(NULL), -EINVAL);
    ASSERT_EQ(em_linetext_set_text(NULL), -EINVAL);
    em_linetext_free(NULL);
    em_linetext *t = new_lt("\n", 10, &k);
    ASSERT_EQ(em_linetext_feed(t, NULL, 1), -EINVAL);
    ASSERT_EQ(em_linetext_feed(t, NULL, 0), 0);
    ASSERT_EQ(k.len, 0);
    em_linetext_free(t);
}

TEST(linetext_lines_split_at_every_byte)
{
    check_all_splits("\r\n", 64, "alpha\r\nbeta\r\n\r\ngam\rma\r\n", "[alpha][beta][][gam\rma]");
    /* lone CR and LF stay in the line; only CRLF ends it */
    check_all_splits("\r\n", 64, "a\rb\nc\r\n\n\r\r\n", "[a\rb\nc][\n\r]");
}

TEST(linetext_multibyte_delimiter_split_across_feeds)
{
    check_all_splits("\r\n\r\n", 64, "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST\r\n\r\n\r\n\r\n",
                     "[GET / HTTP/1.1\r\nHost: x][POST][]");
    /* a delimiter that overlaps itself: the first occurrence ends the line */
    check_all_splits("aab", 64, "xaaabyaabaab", "[xa][y][]");
}

TEST(linetext_lines_one_byte_at_a_time)
{
    coll k = {0};
    em_linetext *t = new_lt("\n", 16, &k);
    const char *in = "one\ntwo\n\nthree\n";
    for (const char *p = in; *p; p++)
        ASSERT_EQ(em_linetext_feed(t, p, 1), 0);
    ASSERT_STREQ(k.log, "[one][two][][three]");
    em_linetext_free(t);
}

TEST(linetext_binary_from_line_callback_same_feed)
{
    coll k = {0};
    em_linetext *t = new_lt("\r\n", 64, &k);
    /* the body holds the delimiter: it is not a line */
    ASSERT_EQ(feed_str(t, "PUT /k\r\n#B5\r\nhe\r\nlNEXT\r\n#B3\r\nabc"), 0);
    ASSERT_STREQ(k.log, "[PUT /k][#B5]{he\r\nl}$[NEXT][#B3]{abc}$");
    ASSERT_EQ(feed_str(t, "after\r\n"), 0);
    ASSERT_STREQ(k.log, "[PUT /k][#B5]{he\r\nl}$[NEXT][#B3]{abc}$[after]");
    em_linetext_free(t);
    /* the same at every split: the switching line completed from buffered
     * bytes too */
    check_all_splits("\r\n", 64, "PUT /k\r\n#B5\r\nhe\r\nlNEXT\r\n#B3\r\nabcafter\r\n",
                     "[PUT /k][#B5]{he\r\nl}$[NEXT][#B3]{abc}$[after]");
}

TEST(linetext_empty_block)
{
    coll k = {0};
    em_linetext *t = new_lt("\n", 64, &k);
    ASSERT_EQ(feed_str(t, "#B0\nnext\n"), 0); /* its end comes before "next" */
    ASSERT_STREQ(k.log, "[#B0]{}$[next]");
    /* outside a callback, its end comes inside the call */
    ASSERT_EQ(em_linetext_set_binary(t, 0), 0);
    ASSERT_STREQ(k.log, "[#B0]{}$[next]{}$");
    ASSERT_EQ(feed_str(t, "x\n"), 0); /* back in text mode */
    ASSERT_STREQ(k.log, "[#B0]{}$[next]{}$[x]");
    /* one empty block chained from another */
    k.chain[k.chain_n++] = 0;
    ASSERT_EQ(em_linetext_set_binary(t, 0), 0);
    ASSERT_STREQ(k.log, "[#B0]{}$[next]{}$[x]{}${}$");
    em_linetext_free(t);
}

TEST(linetext_blocks_chained_from_end_callback)
{
    coll k = {.chain = {3, 0, 2}, .chain_n = 3};
    em_linetext *t = new_lt("\n", 64, &k);
    ASSERT_EQ(feed_str(t, "#B2\nxxyyyzzafter\n"), 0);
    ASSERT_STREQ(k.log, "[#B2]{xx}${yyy}${}${zz}$[after]");
    em_linetext_free(t);
}

/* Pieces counted, not logged. */
typedef struct tally {
    size_t bytes, pieces, ends, last_len;
    char first;
    int lines;
} tally;

static void tally_line(em_linetext *t, void *arg, const char *line, size_t len)
{
    (void)t;
    tally *y = arg;
    ASSERT(len == 4 && !memcmp(line, "tail", 4));
    y->lines++;
}

static void tally_binary(em_linetext *t, void *arg, const char *data, size_t len, bool end)
{
    (void)t;
    tally *y = arg;
    ASSERT_EQ(y->ends, 0);
    y->bytes += len;
    y->pieces++;
    y->ends += end;
    y->last_len = len;
    y->first = data[0];
}

TEST(linetext_huge_block_across_many_feeds)
{
    static const em_linetext_cbs tally_cbs = {.line = tally_line, .binary = tally_binary};
    tally y = {0};
    em_linetext *t = em_linetext_new("\r\n", 64, &tally_cbs, &y);
    ASSERT_NOT_NULL(t);
    static char chunk[4099];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (char)pattern_byte(i);
    const size_t n = (size_t)1 << 30; /* nothing of it is buffered */
    ASSERT_EQ(em_linetext_set_binary(t, n), 0);
    size_t fed = 0;
    while (fed < n) {
        size_t len = n - fed < sizeof chunk ? n - fed : sizeof chunk;
        size_t pieces = y.pieces;
        ASSERT_EQ(em_linetext_feed(t, chunk, len), 0);
        /* each feed one piece, in place */
        ASSERT_EQ(y.pieces, pieces + 1);
        ASSERT_EQ(y.last_len, len);
        ASSERT_EQ(y.first, chunk[0]);
        fed += len;
    }
    ASSERT_EQ(y.bytes, n);
    ASSERT_EQ(y.ends, 1);
    ASSERT_EQ(y.pieces, (n + sizeof chunk - 1) / sizeof chunk);
    /* the block's last piece and the next line in one feed */
    y = (tally){0};
    ASSERT_EQ(em_linetext_set_binary(t, 3), 0);
    ASSERT_EQ(feed_str(t, "abctail\r\n"), 0);
    ASSERT_EQ(y.bytes, 3);
    ASSERT_EQ(y.ends, 1);
    ASSERT_EQ(y.lines, 1);
    em_linetext_free(t);
}
TEST_TIMEOUT(linetext_huge_block_across_many_feeds, 60);

TEST(linetext_back_to_text_mid_block)
{
    coll k = {0};
    em_linetext *t = new_lt("\n", 64, &k);
    ASSERT_EQ(em_linetext_set_binary(t, 10), 0);
    ASSERT_EQ(feed_str(t, "abc"), 0);
    ASSERT_EQ(em_linetext_set_text(t), 0); /* the rest of the block is lines */
    ASSERT_EQ(feed_str(t, "de\nf\n"), 0);
    ASSERT_STREQ(k.log, "{abc}[de][f]");
    ASSERT_EQ(em_linetext_set_text(t), 0); /* a no-op in text mode */
    /* from a piece's callback: the next feed is lines */
    ASSERT_EQ(em_linetext_set_binary(t, 10), 0);
    ASSERT_EQ(feed_str(t, "xy#T"), 0);
    ASSERT_EQ(feed_str(t, "g\n"), 0);
    ASSERT_STREQ(k.log, "{abc}[de][f]{xy#T}[g]");
    em_linetext_free(t);
}

TEST(linetext_raw_mode)
{
    coll k = {0};
    em_linetext *t = new_lt("\r\n", 64, &k);
    ASSERT_EQ(em_linetext_set_raw(t), 0);
    ASSERT_EQ(feed_str(t, "ab\r\ncd"), 0); /* each feed one piece, never an end */
    ASSERT_EQ(feed_str(t, "ef"), 0);
    ASSERT_STREQ(k.log, "{ab\r\ncd}{ef}");
    ASSERT_EQ(em_linetext_set_text(t), 0);
    ASSERT_EQ(feed_str(t, "g\r\n#R\r\nraw\r\n"), 0); /* raw again from a line */
    ASSERT_STREQ(k.log, "{ab\r\ncd}{ef}[g][#R]{raw\r\n}");
    ASSERT_EQ(feed_str(t, "more#T"), 0); /* and back to text from its piece */
    ASSERT_EQ(feed_str(t, "line\r\n"), 0);
    ASSERT_STREQ(k.log, "{ab\r\ncd}{ef}[g][#R]{raw\r\n}{more#T}[line]");
    em_linetext_free(t);
}

TEST(linetext_over_long_lines)
{
    coll k = {0};
    em_linetext *t = new_lt("\n", 5, &k);
    /* "12345" fits exactly; "toolong" is dropped; "ok" after it comes */
    ASSERT_EQ(feed_str(t, "12345\ntoolong\nok\n"), -EMSGSIZE);
    ASSERT_STREQ(k.log, "[12345][ok]");
    em_linetext_free(t);

    k = (coll){0};
    t = new_lt("\r\n", 4, &k);
    ASSERT_EQ(feed_str(t, "abcd\r"), 0); /* the CR may begin the delimiter */
    ASSERT_EQ(feed_str(t, "\n"), 0);
    ASSERT_EQ(feed_str(t, "abcde"), 0); /* "e" might still be a CR... */
    ASSERT_EQ(feed_str(t, "f"), -EMSGSIZE); /* ...now it is too long */
    ASSERT_EQ(feed_str(t, "gh\r"), 0);      /* discarded, reported once */
    ASSERT_EQ(feed_str(t, "\nok\r\n"), 0);
    ASSERT_STREQ(k.log, "[abcd][ok]");
    /* a line over the limit cannot switch the mode either */
    ASSERT_EQ(feed_str(t, "#B100\r\nxy\r\n"), -EMSGSIZE);
    ASSERT_STREQ(k.log, "[abcd][ok][xy]");
    em_linetext_free(t);
}

TEST(linetext_switch_refused_with_a_line_buffered)
{
    coll k = {0};
    em_linetext *t = new_lt("\n", 8, &k);
    ASSERT_EQ(feed_str(t, "part"), 0);
    ASSERT_EQ(em_linetext_set_binary(t, 4), -EBUSY);
    ASSERT_EQ(em_linetext_set_raw(t), -EBUSY);
    ASSERT_EQ(feed_str(t, "ial\n"), 0); /* nothing changed */
    ASSERT_EQ(em_linetext_set_binary(t, 2), 0);
    ASSERT_EQ(feed_str(t, "bb\n"), 0);
    ASSERT_STREQ(k.log, "[partial]{bb}$[]");
    /* the rest of an over-long line being discarded counts too */
    ASSERT_EQ(feed_str(t, "0123456789"), -EMSGSIZE);
    ASSERT_EQ(em_linetext_set_binary(t, 2), -EBUSY);
    ASSERT_EQ(feed_str(t, "\n"), 0);
    ASSERT_EQ(em_linetext_set_raw(t), 0);
    /* feeding from a callback is refused; the feed goes on */
    ASSERT_EQ(em_linetext_set_text(t), 0);
    ASSERT_EQ(feed_str(t, "#X\nz\n"), 0);
    ASSERT_STREQ(k.log, "[partial]{bb}$[][#X][z]");
    em_linetext_free(t);
}

TEST(linetext_free_from_callbacks)
{
    coll k = {0};
    em_linetext *t = new_lt("\n", 8, &k);
    ASSERT_EQ(feed_str(t, "a\n#F\nb\n"), -ECANCELED); /* nothing after it */
    ASSERT_STREQ(k.log, "[a][#F]");

    k = (coll){0};
    t = new_lt("\n", 8, &k);
    ASSERT_EQ(feed_str(t, "#B4\nx#Fyz\n"), -ECANCELED);
    ASSERT_STREQ(k.log, "[#B4]{x#Fy}$");

    /* from a raw piece */
    k = (coll){0};
    t = new_lt("\n", 8, &k);
    ASSERT_EQ(feed_str(t, "#R\n"), 0);
    ASSERT_EQ(feed_str(t, "#F"), -ECANCELED);
    ASSERT_STREQ(k.log, "[#R]{#F}");

    /* from the end of an empty block delivered inside set_binary */
    k = (coll){.free_at_end = true};
    t = new_lt("\n", 8, &k);
    ASSERT_EQ(em_linetext_set_binary(t, 0), -ECANCELED);
    ASSERT_STREQ(k.log, "{}$");
}

/* ---------------------------------------------- no allocation per feed */

static size_t allocs, largest;

static void *count_malloc(size_t n)
{
    allocs++;
    largest = n > largest ? n : largest;
    return malloc(n);
}

static void *count_realloc(void *p, size_t n)
{
    allocs++;
    largest = n > largest ? n : largest;
    return realloc(p, n);
}

TEST(linetext_memory_bounded_and_steady)
{
    ASSERT_EQ(em_set_allocator(count_malloc, count_realloc, free), 0);
    coll k = {0};
    em_linetext *t = new_lt("\r\n", 1000, &k);
    static char big[1 << 20];
    memset(big, 'x', sizeof big);
    /* a line without end, 1 MiB of it in pieces: only max_line is kept */
    for (size_t i = 0; i < sizeof big; i += 700)
        em_linetext_feed(t, big + i, sizeof big - i < 700 ? sizeof big - i : 700);
    ASSERT_LE(largest, 2 * (1000 + 2));
    ASSERT_EQ(feed_str(t, "\r\n"), 0);
    /* lines split across feeds, blocks and raw bytes: after the first
     * rounds, not one allocation */
    const char *round = "GET /a HTTP/1.1\r\nContent-Length: 5\r\n#B5\r\n12345tail\r\n";
    size_t len = strlen(round), warm = 0;
    for (int r = 0; r < 2000; r++) {
        if (r == 10)
            warm = allocs;
        for (size_t i = 0; i < len; i += 7) {
            ASSERT_EQ(em_linetext_feed(t, round + i, len - i < 7 ? len - i : 7), 0);
            k.len = 0;
        }
    }
    ASSERT_EQ(allocs, warm);
    em_linetext_free(t);
}

/* ----------------------------------------------------- against the model */

TEST(linetext_random_inputs_match_the_model)
{
    static const char alphabet[] = "ab\r\n\r\nxa#";
    uint64_t seed = 0x5eed1e7e;
    uint8_t in[700];
    for (int run = 0; run < 20000; run++) {
        size_t n = 3 + rng_next(&seed) % (sizeof in - 3);
        in[0] = (uint8_t)rng_next(&seed);
        in[1] = (uint8_t)rng_next(&seed);
        in[2] = (uint8_t)rng_next(&seed);
        size_t ctl = in[2] < n - 3 ? in[2] : n - 3;
        for (size_t i = 3; i < n; i++) {
            uint8_t r = (uint8_t)rng_next(&seed);
            /* data bytes from a small alphabet, so that delimiters occur */
            in[i] = i < 3 + ctl ? r : (uint8_t)alphabet[r % (sizeof alphabet - 1)];
        }
        lt_compare(in, n);
    }
}
TEST_TIMEOUT(linetext_random_inputs_match_the_model, 120);

TEST(linetext_seeds_match_the_model)
{
    /* every seed of the fuzz corpus, whatever it holds */
    const char *names[] = {"http-body", "raw-mode", "overlong", "chained-blocks"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "fuzz/corpus-linetext/%s", names[i]);
        FILE *f = fopen(path, "rb");
        ASSERT_NOT_NULL(f);
        uint8_t in[4096];
        size_t n = fread(in, 1, sizeof in, f);
        fclose(f);
        ASSERT_GT(n, 3);
        lt_compare(in, n);
    }
}

/* The error callback: "X" in the log; it tries a switch; it may free t. */
static void on_error(em_linetext *t, void *arg, int err)
{
    coll *k = arg;
    ASSERT(err == -EMSGSIZE || err == -ENOMEM);
    put(k, err == -EMSGSIZE ? "X" : "M", 1);
    k->error_switch_rc = em_linetext_set_binary(t, 1);
    if (k->free_on_error)
        em_linetext_free(t);
}

TEST(linetext_error_callback_where_a_line_is_dropped)
{
    static const em_linetext_cbs with_error = {
        .line = on_line, .binary = on_binary, .error = on_error};
    coll k = {0};
    em_linetext *t = em_linetext_new("\n", 4, &with_error, &k);
    ASSERT_NOT_NULL(t);
    /* in order with the lines, once per dropped line */
    ASSERT_EQ(feed_str(t, "a\ntoolong\nb\n0123"), -EMSGSIZE);
    ASSERT_EQ(feed_str(t, "45"), -EMSGSIZE);
    ASSERT_EQ(feed_str(t, "67\nc\n"), 0);
    ASSERT_STREQ(k.log, "[a]X[b]X[c]");
    ASSERT_EQ(k.error_switch_rc, -EBUSY); /* the line may not be over */
    em_linetext_free(t);

    /* a handler that frees t there sees nothing after the dropped line */
    k = (coll){.free_on_error = true};
    t = em_linetext_new("\n", 4, &with_error, &k);
    ASSERT_NOT_NULL(t);
    ASSERT_EQ(feed_str(t, "a\ntoolong\nb\n"), -ECANCELED);
    ASSERT_STREQ(k.log, "[a]X");
}

static bool fail_allocs;

static void *maybe_malloc(size_t n) { return fail_allocs ? NULL : malloc(n); }

static void *maybe_realloc(void *p, size_t n) { return fail_allocs ? NULL : realloc(p, n); }

TEST(linetext_out_of_memory_drops_the_line)
{
    ASSERT_EQ(em_set_allocator(maybe_malloc, maybe_realloc, free), 0);
    static const em_linetext_cbs with_error = {
        .line = on_line, .binary = on_binary, .error = on_error};
    coll k = {0};
    fail_allocs = true;
    ASSERT_NULL_ERRNO(em_linetext_new("\n", 256, &with_error, &k), ENOMEM);
    fail_allocs = false;
    em_linetext *t = em_linetext_new("\n", 256, &with_error, &k);
    ASSERT_NOT_NULL(t);
    /* a line that must be stored cannot be: dropped like an over-long one */
    fail_allocs = true;
    ASSERT_EQ(feed_str(t, "a\nbro"), -ENOMEM);
    ASSERT_EQ(feed_str(t, "ken\nc\n"), 0); /* lines in place need nothing */
    ASSERT_STREQ(k.log, "[a]M[c]");
    /* a buffered line whose rest outgrows the buffer */
    fail_allocs = false;
    ASSERT_EQ(feed_str(t, "ab"), 0);
    fail_allocs = true;
    char rest[102];
    memset(rest, 'r', 100);
    memcpy(rest + 100, "\n", 2);
    ASSERT_EQ(feed_str(t, rest), -ENOMEM);
    ASSERT_EQ(feed_str(t, "d\n"), 0);
    fail_allocs = false;
    ASSERT_EQ(feed_str(t, "ef\n"), 0); /* memory again: as before */
    ASSERT_STREQ(k.log, "[a]M[c]M[d][ef]");
    em_linetext_free(t);
}

/* ------------------------------------- an HTTP-like protocol on loopback
 *
 * Requests: "PUT <key>" and header lines, a blank line, then a body of
 * Content-Length bytes (which may hold CRLFs, or be empty); several sent at
 * once. The server answers each with "200 <key> <length> <hash>"; a header
 * line over the limit gets "431", and nothing after it is parsed. (The
 * client closes: a server closing with bytes unread would reset.) */

enum { HEAD_MAX = 256 };

typedef struct req_state {
    em_conn *c;
    em_linetext *lt;
    char key[64];
    size_t clen, got;
    uint32_t hash;
    bool in_head;
} req_state;

static uint32_t fnv(uint32_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

static void srv_line(em_linetext *t, void *arg, const char *line, size_t len)
{
    req_state *s = arg;
    if (!s->in_head) { /* the request line */
        ASSERT(len > 4 && len - 4 < sizeof s->key && !memcmp(line, "PUT ", 4));
        memcpy(s->key, line + 4, len - 4);
        s->key[len - 4] = 0;
        s->clen = 0;
        s->in_head = true;
    } else if (len > 16 && !memcmp(line, "Content-Length: ", 16)) {
        s->clen = strtoul(line + 16, NULL, 10);
    } else if (len == 0) { /* the body, even an empty one, from the next byte */
        s->in_head = false;
        s->got = 0;
        s->hash = 2166136261u;
        ASSERT_EQ(em_linetext_set_binary(t, s->clen), 0);
    }
}

static void srv_body(em_linetext *t, void *arg, const char *data, size_t len, bool end)
{
    (void)t;
    req_state *s = arg;
    s->got += len;
    s->hash = fnv(s->hash, data, len);
    if (!end)
        return;
    char answer[128];
    int n = snprintf(answer, sizeof answer, "200 %s %zu %08x\r\n", s->key, s->got, s->hash);
    ASSERT_EQ(em_send_data(s->c, answer, (size_t)n), 0);
}

static void srv_error(em_linetext *t, void *arg, int err)
{
    req_state *s = arg;
    ASSERT_EQ(err, -EMSGSIZE);
    em_send_data(s->c, "431\r\n", 5);
    em_linetext_free(t); /* nothing after the bad line is parsed */
    s->lt = NULL;
}

static void srv_post_init(em_conn *c)
{
    static const em_linetext_cbs srv_cbs = {
        .line = srv_line, .binary = srv_body, .error = srv_error};
    req_state *s = calloc(1, sizeof *s);
    ASSERT_NOT_NULL(s);
    s->c = c;
    s->lt = em_linetext_new("\r\n", HEAD_MAX, &srv_cbs, s);
    ASSERT_NOT_NULL(s->lt);
    em_conn_set_user(c, s);
}

static void srv_receive(em_conn *c, const char *data, size_t len)
{
    req_state *s = em_conn_user(c);
    if (s->lt) /* NULL once a bad line was answered */
        em_linetext_feed(s->lt, data, len);
}

static int srv_unbinds;

static void srv_unbind(em_conn *c, int reason)
{
    (void)reason;
    srv_unbinds++;
    req_state *s = em_conn_user(c);
    em_linetext_free(s->lt);
    free(s);
}

/* The client: sends every request at once, reads the answers as lines. */
typedef struct client {
    em_linetext *lt;
    char *requests;
    size_t len;
    char answers[8][128];
    int n_answers;
    int unbinds, reason;
} client;

static void cli_line(em_linetext *t, void *arg, const char *line, size_t len)
{
    (void)t;
    client *k = arg;
    ASSERT(k->n_answers < 8 && len < sizeof k->answers[0]);
    memcpy(k->answers[k->n_answers], line, len);
    k->answers[k->n_answers++][len] = 0;
}

static void cli_completed(em_conn *c)
{
    client *k = em_conn_arg(c);
    /* in uneven pieces: the server's reads end anywhere */
    for (size_t i = 0; i < k->len; i += 1000)
        ASSERT_EQ(em_send_data(c, k->requests + i, k->len - i < 1000 ? k->len - i : 1000), 0);
}

static void cli_receive(em_conn *c, const char *data, size_t len)
{
    client *k = em_conn_arg(c);
    ASSERT_EQ(em_linetext_feed(k->lt, data, len), 0);
    if (k->n_answers == 6)
        em_close_connection(c, false);
}

static void cli_unbind(em_conn *c, int reason)
{
    client *k = em_conn_arg(c);
    k->reason = reason;
    k->unbinds++;
}

static void add(client *k, const void *p, size_t n)
{
    k->requests = realloc(k->requests, k->len + n);
    ASSERT_NOT_NULL(k->requests);
    memcpy(k->requests + k->len, p, n);
    k->len += n;
}

static void add_request(client *k, const char *key, const char *body, size_t n,
                        char *want, size_t want_size)
{
    char head[128];
    int h = snprintf(head, sizeof head, "PUT %s\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
                     key, n);
    add(k, head, (size_t)h);
    add(k, body, n);
    snprintf(want, want_size, "200 %s %zu %08x", key, n, fnv(2166136261u, body, n));
}

TEST(linetext_http_like_requests_over_loopback)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    static const em_handler srv_h = {
        .post_init = srv_post_init, .receive_data = srv_receive, .unbind = srv_unbind};
    em_server *srv = em_start_server(r, "127.0.0.1", 0, &srv_h, NULL);
    ASSERT_NOT_NULL(srv);

    static const em_linetext_cbs cli_cbs = {.line = cli_line};
    client k = {0};
    k.lt = em_linetext_new("\r\n", 1024, &cli_cbs, &k);
    ASSERT_NOT_NULL(k.lt);
    char want[6][128];
    static char big[300000], bin[256];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)pattern_byte(i);
    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = (char)i;
    add_request(&k, "/a", "hello\r\n\r\nworld\r\n", 16, want[0], sizeof want[0]);
    add_request(&k, "/empty", "", 0, want[1], sizeof want[1]);
    add_request(&k, "/big", big, sizeof big, want[2], sizeof want[2]);
    add_request(&k, "/bin", bin, sizeof bin, want[3], sizeof want[3]);
    add_request(&k, "/last", "xyz", 3, want[4], sizeof want[4]);
    /* then a header line over the limit, and a request never answered */
    char longline[HEAD_MAX + 20];
    memset(longline, 'h', sizeof longline);
    add(&k, "PUT /bad\r\n", 10);
    add(&k, longline, sizeof longline);
    add(&k, "\r\n\r\n", 4);
    add_request(&k, "/after", "nope", 4, want[5], sizeof want[5]);

    static const em_handler cli_h = {
        .connection_completed = cli_completed, .receive_data = cli_receive,
        .unbind = cli_unbind};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", em_server_port(srv), &cli_h, &k));
    ASSERT(run_until(r, &k.unbinds, 10));
    ASSERT_EQ(k.reason, 0);
    ASSERT_EQ(k.n_answers, 6); /* none for the request after the bad line */
    for (int i = 0; i < 5; i++)
        ASSERT_STREQ(k.answers[i], want[i]);
    ASSERT_STREQ(k.answers[5], "431");

    ASSERT(run_until(r, &srv_unbinds, 10)); /* it sees the client's FIN */
    em_stop_server(srv);
    REACTOR_FREE_CHECKED(r);
    em_linetext_free(k.lt);
    free(k.requests);
    ASSERT_NO_FD_LEAK(fd0);
}
