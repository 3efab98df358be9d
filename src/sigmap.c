/* Signature -> connection: open addressing with linear probing and
 * backward-shift deletion (no tombstones). A slot holds only the connection
 * pointer; the key is the connection's own sig, so an entry costs 8 bytes.
 * Entries are deleted only outside the loops that walk the slots, so a
 * deletion may resize the table. */
#include "em-internal.h"

static size_t home_of(em_sig sig, size_t cap)
{
    uint64_t h = sig * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (cap - 1);
}

#define MIN_CAP 64
/* Below this a table is not worth shrinking, and a few dozen connections
 * coming and going would make it grow and shrink again and again. */
#define SHRINK_ABOVE 1024

static int resize(em_sigmap *m, size_t cap)
{
    em_conn **slots = em__calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        em_conn *c = m->slots[i];
        if (!c)
            continue;
        size_t j = home_of(c->sig, cap);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = c;
    }
    em__free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

static int grow(em_sigmap *m) { return resize(m, m->cap ? m->cap * 2 : MIN_CAP); }

/* A map that held many connections gives the memory back once most are
 * gone: below 1/8 full it halves, which leaves it 1/4 full, far from the
 * 3/4 that makes it grow again. Short of memory it simply stays large. */
static void shrink_if_sparse(em_sigmap *m)
{
    if (m->cap > SHRINK_ABOVE && m->len * 8 < m->cap)
        resize(m, m->cap / 2);
}

/* c->sig must be set. */
int em__sigmap_put(em_sigmap *m, em_conn *c)
{
    if ((m->len + 1) * 4 > m->cap * 3 && grow(m) < 0)
        return -ENOMEM;
    size_t i = home_of(c->sig, m->cap);
    while (m->slots[i])
        i = (i + 1) & (m->cap - 1);
    m->slots[i] = c;
    m->len++;
    return 0;
}

static size_t find(const em_sigmap *m, em_sig sig)
{
    if (!m->cap || !sig)
        return SIZE_MAX;
    for (size_t i = home_of(sig, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (!m->slots[i])
            return SIZE_MAX;
        if (m->slots[i]->sig == sig)
            return i;
    }
}

em_conn *em__sigmap_get(const em_sigmap *m, em_sig sig)
{
    size_t i = find(m, sig);
    return i == SIZE_MAX ? NULL : m->slots[i];
}

void em__sigmap_del(em_sigmap *m, em_sig sig)
{
    size_t i = find(m, sig);
    if (i == SIZE_MAX)
        return;
    size_t mask = m->cap - 1;
    for (size_t j = (i + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
        size_t home = home_of(m->slots[j]->sig, m->cap);
        /* move j into the hole at i unless its home lies in (i, j] */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i] = NULL;
    m->len--;
    shrink_if_sparse(m);
}

em_conn *em__sigmap_at(const em_sigmap *m, size_t i) { return i < m->cap ? m->slots[i] : NULL; }

void em__sigmap_destroy(em_sigmap *m)
{
    em__free(m->slots);
    *m = (em_sigmap){0};
}
