/* The connection methods that only read or set state: addresses, socket
 * options, timeouts, statistics and accessors. */
#include "em-internal.h"

#include <float.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

void *em_conn_arg(const em_conn *c) { return c ? c->arg : NULL; }
void *em_conn_user(const em_conn *c) { return c ? c->user : NULL; }
em_sig em_signature(const em_conn *c) { return c ? c->sig : 0; }
em_reactor *em_conn_reactor(const em_conn *c) { return c ? c->r : NULL; }
int em_conn_fd(const em_conn *c) { return c ? c->io.fd : -EINVAL; }

void em_conn_set_user(em_conn *c, void *user)
{
    if (c)
        c->user = user;
}

em_conn *em_conn_by_sig(em_reactor *r, em_sig sig)
{
    return r ? em__sigmap_get(&r->sigmap, sig) : NULL;
}

/* The socket, or a negative errno when there is none to use. */
static int sock_of(const em_conn *c)
{
    if (!c)
        return -EINVAL;
    if (c->io.fd < 0 || !em__conn_usable(c))
        return -ENOTCONN;
    return c->io.fd;
}

static int name_of(const em_conn *c, struct sockaddr_storage *ss, socklen_t *len, bool peer)
{
    int fd = sock_of(c);
    if (fd < 0)
        return fd;
    if (!ss || !len)
        return -EINVAL;
    if (peer && c->state != EM_CS_OPEN)
        return -ENOTCONN;
    if (peer && (c->flags & EM_CF_DGRAM))
        return em__dgram_peer(c, ss, len);
    *len = sizeof *ss;
    int rc = peer ? getpeername(fd, (struct sockaddr *)ss, len)
                  : getsockname(fd, (struct sockaddr *)ss, len);
    return rc < 0 ? -errno : 0;
}

int em_get_peername(const em_conn *c, struct sockaddr_storage *ss, socklen_t *len)
{
    return name_of(c, ss, len, true);
}

int em_get_sockname(const em_conn *c, struct sockaddr_storage *ss, socklen_t *len)
{
    return name_of(c, ss, len, false);
}

int em_get_sock_opt(em_conn *c, int level, int opt, void *val, socklen_t *len)
{
    int fd = sock_of(c);
    if (fd < 0)
        return fd;
    if (!val || !len)
        return -EINVAL;
    return getsockopt(fd, level, opt, val, len) < 0 ? -errno : 0;
}

int em_set_sock_opt(em_conn *c, int level, int opt, const void *val, socklen_t len)
{
    int fd = sock_of(c);
    if (fd < 0)
        return fd;
    if (!val && len)
        return -EINVAL;
    return setsockopt(fd, level, opt, val, len) < 0 ? -errno : 0;
}

static int set_int(int fd, int level, int opt, int v)
{
    return setsockopt(fd, level, opt, &v, sizeof v) < 0 ? -errno : 0;
}

int em_enable_keepalive(em_conn *c, int idle_s, int interval_s, int count)
{
    int fd = sock_of(c);
    if (fd < 0)
        return fd;
    if (idle_s < 0 || interval_s < 0 || count < 0)
        return -EINVAL;
    int err = set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    if (!err && idle_s)
        err = set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle_s);
    if (!err && interval_s)
        err = set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, interval_s);
    if (!err && count)
        err = set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, count);
    return err;
}

int em_disable_keepalive(em_conn *c)
{
    int fd = sock_of(c);
    return fd < 0 ? fd : set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 0);
}

/* ------------------------------------------------------------ timeouts */

static double idle_since(const em_conn *c)
{
    double set = c->cold->inactivity_set;
    return c->last_activity > set ? c->last_activity : set;
}

/* Checked lazily: reads and writes only store the time; the timer, when it
 * fires, re-arms itself at the real deadline if there was activity. */
static void inactivity_due(em_reactor *r, void *arg)
{
    em_conn *c = arg;
    c->cold->inactivity_timer = 0;
    double due = idle_since(c) + c->cold->inactivity;
    if (r->now >= due) {
        em__conn_fail(c, ETIMEDOUT);
        return;
    }
    c->cold->inactivity_timer = em__timer_add(r, due, 0, inactivity_due, c, true);
    if (!c->cold->inactivity_timer)
        em__conn_fail(c, ENOMEM);
}

double em_get_comm_inactivity_timeout(const em_conn *c)
{
    return c && c->cold ? c->cold->inactivity : 0;
}

/* Also re-arms the timer, as em_reconnect needs for the revived object. */
int em_set_comm_inactivity_timeout(em_conn *c, double s)
{
    if (!c || !(s >= 0))
        return -EINVAL;
    if (!em__conn_usable(c) && c->state != EM_CS_UNBINDING)
        return -ENOTCONN;
    if (!c->cold && s == 0)
        return 0;
    em_cold *to = em__conn_cold(c);
    if (!to)
        return -ENOMEM;
    if (to->inactivity_timer)
        em__timer_cancel(c->r, to->inactivity_timer);
    to->inactivity_timer = 0;
    to->inactivity = s > DBL_MAX ? 0 : s; /* infinite: none */
    to->inactivity_set = em__clock();
    if (to->inactivity <= 0)
        return 0;
    double due = idle_since(c) + to->inactivity;
    to->inactivity_timer = em__timer_add(c->r, due, 0, inactivity_due, c, true);
    return to->inactivity_timer ? 0 : -ENOMEM;
}

double em_get_idle_time(const em_conn *c)
{
    if (!c)
        return 0;
    double idle = em__clock() - c->last_activity;
    return idle > 0 ? idle : 0;
}

int em_get_stats(const em_conn *c, em_conn_stats *st)
{
    if (!c || !st)
        return -EINVAL;
    *st = (em_conn_stats){
        .bytes_in = ((uint64_t)(c->cold ? c->cold->in_hi : 0) << 32) | c->in_lo,
        .bytes_out = ((uint64_t)(c->cold ? c->cold->out_hi : 0) << 32) | c->out_lo,
        .created = c->created,
        .last_activity = c->last_activity,
    };
    return 0;
}
