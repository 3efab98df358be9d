/* io_uring's provided buffers: one ring of them per reactor, shared by
 * every connection it reads for, so an idle connection holds none. */
#ifndef EM_URING_BUFS_H
#define EM_URING_BUFS_H

#ifdef EM_HAVE_URING
#include <liburing.h>
#include <stdbool.h>

#define EM_UBUF_GROUP 0

typedef struct em_ubufs em_ubufs;

/* Buffers registered with ring as group EM_UBUF_GROUP: consumed a part at
 * a time where the kernel can (6.12), so a buffer holds many small
 * messages; whole buffers each read otherwise. count: a power of two up to
 * 32768, or 0 for libem's choice. A negative errno if the kernel has no
 * buffer rings (before 5.19) or memory is short. */
int em__ubufs_new(struct io_uring *ring, unsigned count, em_ubufs **out);
/* The bytes a completion (its flags and res) carries, NULL if none. Taken
 * in the order the ring gives them: a buffer consumed a part at a time
 * goes on where the last completion naming it ended, and one the kernel is
 * done with is lent until em__ubufs_recycle. */
const char *em__ubufs_take(em_ubufs *b, unsigned flags, int res);
/* The same for a completion further on in the ring, every one before it
 * peeked at too, without taking any; em__ubufs_peek_end forgets them. */
const char *em__ubufs_peek(em_ubufs *b, unsigned flags, int res);
void em__ubufs_peek_end(em_ubufs *b);
/* Every buffer lent goes back to the kernel. */
void em__ubufs_recycle(em_ubufs *b);
/* Unmapped, not freed to the heap: a ring torn down after its last wait
 * finds no memory of anyone else's to write into. */
void em__ubufs_free(em_ubufs *b);
/* In a forked child, which has not got the mapping: what the address may
 * hold now is someone else's. */
void em__ubufs_forget(em_ubufs *b);
/* A ring made again keeps its old buffers until the turn that may still
 * be reading one of them is over: kept on *list, then freed together. */
void em__ubufs_retire(em_ubufs **list, em_ubufs *b);
void em__ubufs_free_list(em_ubufs **list, bool mapped);

#endif
#endif
