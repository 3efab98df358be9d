/* The thread pool behind em_defer and name resolution. Threads start lazily,
 * one per job that finds no idle thread free for it, up to the configured
 * size; finished jobs go back to the reactor thread through its cross-thread
 * queue. */
#include "em-internal.h"

#include <signal.h>

int em__pool_init(em_pool *p, unsigned size)
{
    *p = (em_pool){.size = size};
    if (pthread_mutex_init(&p->lock, NULL))
        return -ENOMEM;
    if (pthread_cond_init(&p->cond, NULL)) {
        pthread_mutex_destroy(&p->lock);
        return -ENOMEM;
    }
    return 0;
}

static void *pool_main(void *arg)
{
    em_reactor *r = arg;
    em_pool *p = &r->pool;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->queue_head && !p->stopping) {
            p->idle++;
            pthread_cond_wait(&p->cond, &p->lock);
            p->idle--;
        }
        em_job *job = p->queue_head;
        if (!job)
            break; /* stopping and nothing left */
        p->queue_head = job->next;
        if (!p->queue_head)
            p->queue_tail = NULL;
        p->queued--;
        pthread_mutex_unlock(&p->lock);
        job->work(job->arg);
        em__job_done(r, job);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Pool threads take no signals: they belong to the host's threads. */
static int start_thread(em_reactor *r)
{
    em_pool *p = &r->pool;
    if (!p->threads) {
        p->threads = em__calloc(p->size, sizeof *p->threads);
        if (!p->threads)
            return -ENOMEM;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&p->threads[p->started], NULL, pool_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err)
        return -err;
    p->started++;
    return 0;
}

/* A signalled thread counts as idle until it wakes and takes a job, so the
 * idle threads free for a new job are those the queued jobs have not
 * claimed: a burst submitted while one thread idles gets a thread a job,
 * not a queue behind that one. */
int em__pool_submit(em_reactor *r, em_job *job)
{
    em_pool *p = &r->pool;
    if (p->closed) /* em_reactor_free joined the threads: a done callback it ran */
        return -ECANCELED;
    job->next = NULL;
    pthread_mutex_lock(&p->lock);
    int err = 0;
    if (p->queued >= p->idle && p->started < p->size)
        err = start_thread(r);
    if (err && p->started == 0) {
        pthread_mutex_unlock(&p->lock);
        return err == -ENOMEM ? err : -EAGAIN;
    }
    if (p->queue_tail)
        p->queue_tail->next = job;
    else
        p->queue_head = job;
    p->queue_tail = job;
    p->queued++;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

/* Lets queued work finish and joins the threads. In a forked child the
 * parent's threads do not exist: nothing to join. */
void em__pool_destroy(em_reactor *r, em_pool *p)
{
    p->closed = true;
    if (r->forked) { /* the lock may have been held by a thread that is gone */
        em__free(p->threads);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->started; i++)
        pthread_join(p->threads[i], NULL);
    em__free(p->threads);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
}

/* em_defer's job owns itself: its done step runs the user's and frees it. */
typedef struct defer_job {
    em_job job;
    void (*work)(void *arg);
    em_cb done;
    void *arg;
} defer_job;

static void defer_work(void *arg)
{
    defer_job *dj = arg;
    dj->work(dj->arg);
}

static void defer_done(em_reactor *r, void *arg)
{
    defer_job *dj = arg;
    em_cb done = dj->done;
    void *user_arg = dj->arg;
    em__free(dj);
    if (done)
        done(r, user_arg);
}

int em_defer(em_reactor *r, void (*work)(void *arg), em_cb done, void *arg)
{
    if (!r || !work)
        return -EINVAL;
    defer_job *dj = em__malloc(sizeof *dj);
    if (!dj)
        return -ENOMEM;
    *dj = (defer_job){.work = work, .done = done, .arg = arg};
    dj->job = (em_job){.work = defer_work, .done = defer_done, .arg = dj};
    int err = em__pool_submit(r, &dj->job);
    if (err)
        em__free(dj);
    return err;
}
