/* The descriptors a reactor holds (connections, servers, pidfds, its own
 * eventfd and poller), one bit each, so that em_attach and em_watch refuse
 * one it already holds (EEXIST) at once, without a look at every
 * connection. A bit is set when libem takes a descriptor and cleared when
 * it closes it or hands it back. */
#include "em-internal.h"

#include <string.h>

#define BITS 64

/* em__fd_claim (em-internal.h) for a descriptor beyond the set's end. */
int em__fd_claim_grow(em_reactor *r, int fd)
{
    size_t word = (size_t)fd / BITS;
    size_t words = r->held_words ? r->held_words : 4;
    while (words <= word)
        words *= 2;
    uint64_t *bits = em__realloc(r->held_fds, words * sizeof *bits);
    if (!bits)
        return -ENOMEM;
    memset(bits + r->held_words, 0, (words - r->held_words) * sizeof *bits);
    r->held_fds = bits;
    r->held_words = words;
    r->held_fds[word] |= 1ull << (fd % BITS);
    return 0;
}

bool em__fd_held(const em_reactor *r, int fd)
{
    return fd >= 0 && (size_t)fd / BITS < r->held_words &&
           (r->held_fds[fd / BITS] >> (fd % BITS) & 1);
}

void em__fds_free(em_reactor *r)
{
    em__free(r->held_fds);
    r->held_fds = NULL;
    r->held_words = 0;
}
