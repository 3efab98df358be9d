#include "em-internal.h"
#include "uring-bufs.h"

#ifdef EM_HAVE_URING

#include <sys/mman.h>
#include <unistd.h>

/* Newer than liburing 2.3's header: buffers consumed a part at a time. */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

/* Consumed a part at a time, few large buffers serve both a stream's large
 * reads and a thousand small messages; read whole, a busy turn needs a
 * buffer per connection with something to say. */
#define INC_COUNT 64
#define INC_SIZE (64 * 1024)
#define WHOLE_COUNT 256
#define WHOLE_SIZE (16 * 1024)

struct em_ubufs {
    struct io_uring_buf_ring *br; /* at the start of the mapping */
    char *data;                   /* count buffers of size bytes */
    size_t map_len;
    unsigned count, size;
    uint32_t *used;               /* bytes of each the kernel has filled */
    uint32_t *ahead;              /* peeked at beyond used */
    unsigned short *lent_ids, *ahead_ids;
    unsigned lent, nahead;
    em_ubufs *next;               /* retired */
};

static size_t page_round(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) / page * page;
}

static void give(em_ubufs *b, unsigned id, int offset)
{
    b->used[id] = 0;
    io_uring_buf_ring_add(b->br, b->data + (size_t)id * b->size, b->size, (unsigned short)id,
                          io_uring_buf_ring_mask(b->count), offset);
}

static em_ubufs *alloc(unsigned count, unsigned size)
{
    em_ubufs *b = em__calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->used = em__calloc(count, sizeof *b->used);
    b->ahead = em__calloc(count, sizeof *b->ahead);
    b->lent_ids = em__calloc(count, sizeof *b->lent_ids);
    b->ahead_ids = em__calloc(count, sizeof *b->ahead_ids);
    size_t head = page_round(count * sizeof(struct io_uring_buf));
    b->map_len = head + (size_t)count * size;
    void *mem = MAP_FAILED;
    if (b->used && b->ahead && b->lent_ids && b->ahead_ids)
        mem = mmap(NULL, b->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        em__ubufs_forget(b);
        return NULL;
    }
    madvise(mem, b->map_len, MADV_DONTFORK); /* the ring's descriptors are pinned */
    b->br = mem;
    b->data = (char *)mem + head;
    b->count = count;
    b->size = size;
    return b;
}

static int make(struct io_uring *ring, unsigned count, unsigned size, bool inc, em_ubufs **out)
{
    em_ubufs *b = alloc(count, size);
    if (!b)
        return -ENOMEM;
    io_uring_buf_ring_init(b->br);
    struct io_uring_buf_reg reg = {.ring_addr = (uintptr_t)b->br,
                                   .ring_entries = count,
                                   .bgid = EM_UBUF_GROUP,
                                   .pad = inc ? IOU_PBUF_RING_INC : 0};
    int err = io_uring_register_buf_ring(ring, &reg, 0);
    if (err) {
        em__ubufs_free(b);
        return err;
    }
    for (unsigned i = 0; i < count; i++)
        give(b, i, (int)i);
    io_uring_buf_ring_advance(b->br, (int)count);
    *out = b;
    return 0;
}

int em__ubufs_new(struct io_uring *ring, unsigned count, em_ubufs **out)
{
    int err = make(ring, count ? count : INC_COUNT, INC_SIZE, true, out);
    if (err == -EINVAL) /* before 6.12 */
        err = make(ring, count ? count : WHOLE_COUNT, WHOLE_SIZE, false, out);
    return err;
}

static const char *at(em_ubufs *b, unsigned flags, int res, uint32_t extra, unsigned *id)
{
    *id = flags >> IORING_CQE_BUFFER_SHIFT;
    if (!b || !(flags & IORING_CQE_F_BUFFER) || *id >= b->count ||
        b->used[*id] + extra + (res > 0 ? (unsigned)res : 0) > b->size)
        return NULL;
    return b->data + (size_t)*id * b->size + b->used[*id] + extra;
}

const char *em__ubufs_take(em_ubufs *b, unsigned flags, int res)
{
    unsigned id;
    const char *p = at(b, flags, res, 0, &id);
    if (!p)
        return NULL;
    if ((flags & IORING_CQE_F_BUF_MORE) && res > 0)
        b->used[id] += (uint32_t)res;
    else if (!(flags & IORING_CQE_F_BUF_MORE) && b->lent < b->count)
        b->lent_ids[b->lent++] = (unsigned short)id;
    return p;
}

const char *em__ubufs_peek(em_ubufs *b, unsigned flags, int res)
{
    unsigned id = flags >> IORING_CQE_BUFFER_SHIFT;
    const char *p = at(b, flags, res, b && id < b->count ? b->ahead[id] : 0, &id);
    if (!p)
        return NULL;
    if ((flags & IORING_CQE_F_BUF_MORE) && res > 0) {
        if (!b->ahead[id] && b->nahead < b->count)
            b->ahead_ids[b->nahead++] = (unsigned short)id;
        b->ahead[id] += (uint32_t)res;
    }
    return p;
}

void em__ubufs_peek_end(em_ubufs *b)
{
    if (!b)
        return;
    for (unsigned i = 0; i < b->nahead; i++)
        b->ahead[b->ahead_ids[i]] = 0;
    b->nahead = 0;
}

void em__ubufs_recycle(em_ubufs *b)
{
    if (!b || !b->lent)
        return;
    for (unsigned i = 0; i < b->lent; i++)
        give(b, b->lent_ids[i], (int)i);
    io_uring_buf_ring_advance(b->br, (int)b->lent);
    b->lent = 0;
}

void em__ubufs_forget(em_ubufs *b)
{
    if (!b)
        return;
    em__free(b->used);
    em__free(b->ahead);
    em__free(b->lent_ids);
    em__free(b->ahead_ids);
    em__free(b);
}

void em__ubufs_free(em_ubufs *b)
{
    if (b && b->br)
        munmap(b->br, b->map_len);
    em__ubufs_forget(b);
}

void em__ubufs_retire(em_ubufs **list, em_ubufs *b)
{
    if (!b)
        return;
    b->next = *list;
    *list = b;
}

void em__ubufs_free_list(em_ubufs **list, bool mapped)
{
    while (*list) {
        em_ubufs *b = *list;
        *list = b->next;
        if (mapped)
            em__ubufs_free(b);
        else
            em__ubufs_forget(b);
    }
}

#endif /* EM_HAVE_URING */
