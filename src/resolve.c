/* Name resolution on the pool: getaddrinfo blocks, so it never runs on the
 * reactor thread. The answer goes back by signature, so a connection that
 * closed meanwhile is simply not found. */
#include "em-internal.h"

#include <stdio.h>
#include <string.h>

typedef struct resolve_job {
    em_job job;
    char *host;
    char service[8];
    int socktype;
    em_sig sig;
    em_resolved_fn fn;
    struct addrinfo *result;
    int err, gai;
} resolve_job;

/* Set by the calls that resolve on the calling thread: a thread's own
 * answer, which no other thread's call can overwrite. */
static _Thread_local int last_resolve_error;

int em_last_resolve_error(void) { return last_resolve_error; }

void em__set_last_resolve_error(int gai) { last_resolve_error = gai; }

int em__resolve_reason(int gai, int err)
{
    if (gai == EAI_MEMORY)
        return ENOMEM;
    if (gai == EAI_SYSTEM && err)
        return err;
    return EM_ERESOLVE;
}

int em_resolve_error(const em_conn *c) { return c && c->cold ? c->cold->resolve_error : 0; }

static void resolve_work(void *arg)
{
    resolve_job *rj = arg;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = rj->socktype,
        .ai_flags = AI_NUMERICSERV,
    };
    int rc = getaddrinfo(rj->host, rj->service, &hints, &rj->result);
    if (rc != 0) {
        rj->err = em__resolve_reason(rc, errno);
        rj->gai = rc;
        rj->result = NULL;
    }
}

static void resolve_done(em_reactor *r, void *arg)
{
    resolve_job *rj = arg;
    rj->fn(r, rj->sig, rj->result, rj->err, rj->gai);
    em__free(rj->host);
    em__free(rj);
}

int em__resolve(em_reactor *r, const char *host, int port, int socktype, em_sig sig,
                em_resolved_fn fn)
{
    resolve_job *rj = em__calloc(1, sizeof *rj);
    if (!rj)
        return -ENOMEM;
    rj->host = em__strdup(host);
    if (!rj->host) {
        em__free(rj);
        return -ENOMEM;
    }
    snprintf(rj->service, sizeof rj->service, "%d", port);
    rj->socktype = socktype;
    rj->sig = sig;
    rj->fn = fn;
    rj->job = (em_job){.work = resolve_work, .done = resolve_done, .arg = rj};
    int err = em__pool_submit(r, &rj->job);
    if (err) {
        em__free(rj->host);
        em__free(rj);
    }
    return err;
}
