#include "em-internal.h"

void em__cbq_push(em_cb_queue *q, em_callback *c)
{
    c->next = NULL;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
}

em_callback *em__cbq_take_all(em_cb_queue *q)
{
    em_callback *all = q->head;
    q->head = q->tail = NULL;
    return all;
}

void em__cbq_free_list(em_callback *c)
{
    while (c) {
        em_callback *next = c->next;
        em__free(c);
        c = next;
    }
}
