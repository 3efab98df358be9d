/*
 * libFuzzer target: em_linetext (src/linetext.c), the LineText2 parser a
 * connection feeds with what any peer sends.
 *
 * The input picks the delimiter and max_line, the sizes of the chunks fed,
 * and the mode switches made between feeds and from the callbacks (blocks
 * of any size, empty ones, raw mode, back to text, a free from inside a
 * callback, a reentrant feed). fuzz/linetext_model.h runs it through
 * em_linetext and through a byte-at-a-time model of what em.h promises,
 * and checks:
 *   - both deliver the same lines, the same binary bytes and block ends,
 *     in the same order, and return the same value from every call;
 *   - no line is longer than max_line; a block never delivers more than
 *     it asked for, its last piece alone has end set, no empty piece but
 *     an empty block's end;
 *   - when no line was dropped, what was delivered, delimiters put back,
 *     is the input fed, short of at most one incomplete line;
 *   - nothing is read outside the bytes fed (ASan) and nothing leaks.
 */
#include <stdio.h>
#include <stdlib.h>

#define LT_CHECK(cond)                                                        \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz_linetext invariant: %s:%d: %s\n", __FILE__, \
                    __LINE__, #cond);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)

#include "linetext_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lt_compare(data, size);
    return 0;
}
