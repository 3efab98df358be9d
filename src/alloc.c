/* The allocator hook: process-wide by design (em_set_allocator). */
#include "em-internal.h"

#include <stdlib.h>
#include <string.h>

static void *(*malloc_fn)(size_t) = malloc;
static void *(*realloc_fn)(void *, size_t) = realloc;
static void (*free_fn)(void *) = free;
static atomic_int live_reactors;

int em_set_allocator(void *(*m)(size_t), void *(*re)(void *, size_t), void (*f)(void *))
{
    bool none = !m && !re && !f;
    if (!none && (!m || !re || !f))
        return -EINVAL;
    if (atomic_load(&live_reactors) > 0)
        return -EBUSY;
    malloc_fn = none ? malloc : m;
    realloc_fn = none ? realloc : re;
    free_fn = none ? free : f;
    return 0;
}

void em__allocator_pin(int delta) { atomic_fetch_add(&live_reactors, delta); }

/* A user allocator need not set errno: these do, so every caller can. */
static void *checked(void *p)
{
    if (!p)
        errno = ENOMEM;
    return p;
}

void *em__malloc(size_t n) { return checked(malloc_fn(n ? n : 1)); }

void *em__calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    size_t bytes = n * size;
    void *p = checked(malloc_fn(bytes ? bytes : 1));
    if (p)
        memset(p, 0, bytes);
    return p;
}

void *em__realloc(void *p, size_t n) { return checked(realloc_fn(p, n ? n : 1)); }

int em__bytes_reserve(char **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < n)
        c = c > SIZE_MAX / 2 ? n : c * 2;
    char *b = em__realloc(*buf, c);
    if (!b)
        return -ENOMEM;
    *buf = b;
    *cap = c;
    return 0;
}

void em__free(void *p)
{
    if (p)
        free_fn(p);
}

char *em__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = em__malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
