/* TLS against real peers and misbehaving ones: openssl s_client/s_server
 * and gnutls-cli/gnutls-serv as child processes, a small in-test OpenSSL
 * peer on memory BIOs (to control every byte it puts on the wire: half a
 * ClientHello, half a record, a reset, a close with or without
 * close_notify), raw TCP peers that send garbage or nothing.
 *
 * Everything runs on 127.0.0.1 (gnutls-serv has no bind address: it
 * listens on the wildcard, but only loopback traffic reaches it). Child
 * processes get PR_SET_PDEATHSIG(SIGKILL), so a failing case that exits
 * at once takes them along; a passing case kills and reaps each one and
 * checks that no child is left. Nothing is written to disk but the
 * fixture's certificates. */
#include "harness.h"
#include "tls_fixture.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

TLS_FIXTURE();

#define MIB (1024u * 1024u)

/* ------------------------------------------------------------ bytes */

typedef struct bytes {
    char *p;
    size_t n, cap;
} bytes;

static void bytes_add(bytes *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            FAIL("realloc");
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void bytes_free(bytes *b)
{
    free(b->p);
    *b = (bytes){0};
}

static bool bytes_has(const bytes *b, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= b->n; i++)
        if (memcmp(b->p + i, needle, k) == 0)
            return true;
    return false;
}

/* Printable lines (no CR), about n bytes, every line different. */
static void make_lines(bytes *b, size_t n)
{
    for (unsigned i = 0; b->n < n; i++) {
        char line[96];
        int k = snprintf(line, sizeof line, "line %05u ", i);
        int len = 20 + (int)(i * 7 % 60);
        for (; k < len; k++)
            line[k] = (char)('a' + (i + (unsigned)k) % 26);
        line[k++] = '\n';
        bytes_add(b, line, (size_t)k);
    }
}

/* What openssl s_server -rev answers to lines: each one reversed. */
static void reverse_lines(const bytes *in, bytes *out)
{
    size_t start = 0;
    for (size_t i = 0; i < in->n; i++) {
        if (in->p[i] != '\n')
            continue;
        for (size_t j = i; j > start; j--)
            bytes_add(out, &in->p[j - 1], 1);
        bytes_add(out, "\n", 1);
        start = i + 1;
    }
}

/* ------------------------------------------------- child processes */

typedef struct proc {
    pid_t pid;
    int in, out, err; /* our ends of its stdin, stdout, stderr; -1: closed */
    bytes o, e;       /* what it printed */
    const char *feed; /* written to its stdin as it takes it */
    size_t feed_len, feed_off;
    bool close_in_when_fed;
    bool exited;
    int status;
    char name[32];
} proc;

/* The children alive in this case, pumped by every turn. */
static proc *live_procs[4];

static void proc_pump(proc *p);

static void turn(em_reactor *r)
{
    for (int i = 0; i < 4; i++)
        if (live_procs[i])
            proc_pump(live_procs[i]);
    if (!r) {
        usleep(5000);
        return;
    }
    int rc = em_run_once(r, 0.005);
    if (rc < 0 && rc != -EINTR)
        FAIL("em_run_once: %d (%s)", rc, em_strerror(rc));
}

static bool drive(em_reactor *r, bool (*pred)(void *), void *arg, double timeout_s)
{
    double deadline = now_mono() + timeout_s;
    for (;;) {
        for (int i = 0; i < 4; i++)
            if (live_procs[i])
                proc_pump(live_procs[i]);
        if (pred(arg))
            return true;
        if (now_mono() > deadline)
            return false;
        turn(r);
    }
}

/* The last bytes of a child's stderr, for failure messages. */
static const char *proc_diag(proc *p)
{
    static char buf[400];
    size_t n = p->e.n < sizeof buf - 1 ? p->e.n : sizeof buf - 1;
    memcpy(buf, p->e.p + p->e.n - n, n);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\n')
            buf[i] = '|';
    return buf;
}

static void proc_start(proc *p, const char *const argv[])
{
    int pi[2], po[2], pe[2];
    if (pipe2(pi, O_CLOEXEC) || pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC))
        FAIL("pipe2: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN); /* writing to a child that died */
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        /* dies with the case's process, whatever way it ends */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(pi[0], 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pi[0]);
    close(po[1]);
    close(pe[1]);
    *p = (proc){.pid = pid, .in = pi[1], .out = po[0], .err = pe[0]};
    snprintf(p->name, sizeof p->name, "%s", argv[0]);
    set_nonblock(p->in);
    set_nonblock(p->out);
    set_nonblock(p->err);
    for (int i = 0; i < 4; i++)
        if (!live_procs[i]) {
            live_procs[i] = p;
            return;
        }
    FAIL("too many children");
}

static void drain_fd(int *fd, bytes *b)
{
    char buf[65536];
    while (*fd >= 0) {
        ssize_t n = read(*fd, buf, sizeof buf);
        if (n > 0) {
            bytes_add(b, buf, (size_t)n);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            close(*fd);
            *fd = -1;
        } else if (errno == EAGAIN) {
            return;
        }
    }
}

static void proc_close_in(proc *p)
{
    if (p->in >= 0)
        close(p->in);
    p->in = -1;
}

static void proc_pump(proc *p)
{
    while (p->in >= 0 && p->feed_off < p->feed_len) {
        size_t k = p->feed_len - p->feed_off;
        ssize_t n = write(p->in, p->feed + p->feed_off, k < 65536 ? k : 65536);
        if (n > 0)
            p->feed_off += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && errno == EAGAIN)
            break;
        else
            proc_close_in(p); /* EPIPE: it is gone */
    }
    if (p->in >= 0 && p->feed_off == p->feed_len && p->close_in_when_fed)
        proc_close_in(p);
    drain_fd(&p->out, &p->o);
    drain_fd(&p->err, &p->e);
    if (!p->exited && waitpid(p->pid, &p->status, WNOHANG) == p->pid)
        p->exited = true;
}

static void proc_feed(proc *p, const void *d, size_t n, bool then_close)
{
    p->feed = d;
    p->feed_len = n;
    p->feed_off = 0;
    p->close_in_when_fed = then_close;
    proc_pump(p);
}

static bool proc_done(void *arg)
{
    proc *p = arg;
    return p->exited && p->out < 0 && p->err < 0;
}

/* Kills it (if it still runs), reaps it, closes our ends; keeps o and e. */
static void proc_stop(proc *p)
{
    if (!p->pid)
        return;
    if (!p->exited) {
        kill(p->pid, SIGKILL);
        while (waitpid(p->pid, &p->status, 0) < 0 && errno == EINTR) {
        }
        p->exited = true;
    }
    proc_close_in(p);
    drain_fd(&p->out, &p->o);
    drain_fd(&p->err, &p->e);
    if (p->out >= 0)
        close(p->out);
    if (p->err >= 0)
        close(p->err);
    p->out = p->err = -1;
    for (int i = 0; i < 4; i++)
        if (live_procs[i] == p)
            live_procs[i] = NULL;
    p->pid = 0;
}

static void proc_free(proc *p)
{
    proc_stop(p);
    bytes_free(&p->o);
    bytes_free(&p->e);
}

static int proc_exit_code(const proc *p)
{
    return WIFEXITED(p->status) ? WEXITSTATUS(p->status) : 128 + WTERMSIG(p->status);
}

/* No child process of this case is left (running or unreaped). */
static void assert_no_children(void)
{
    errno = 0;
    pid_t w = waitpid(-1, NULL, WNOHANG);
    if (!(w < 0 && errno == ECHILD))
        FAIL("a child process is left (waitpid: %d, %s)", (int)w, strerror(errno));
}

/* Waits until something accepts connections on 127.0.0.1:port, probing
 * with connect (the probe connects and closes: the servers used here take
 * that as one failed handshake and go on accepting). */
static void wait_listen(em_reactor *r, int port, proc *p)
{
    double deadline = now_mono() + 10;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (;;) {
        proc_pump(p);
        if (p->exited)
            FAIL("%s exited (status %d) before listening on %d: %s", p->name, proc_exit_code(p),
                 port, proc_diag(p));
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            FAIL("socket: %s", strerror(errno));
        int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
        if (rc != 0 && errno == EINPROGRESS) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            if (poll(&pf, 1, 200) == 1) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                rc = err ? -1 : 0;
            }
        }
        close(fd);
        if (rc == 0)
            return;
        if (now_mono() > deadline)
            FAIL("%s never listened on port %d: %s", p->name, port, proc_diag(p));
        for (int i = 0; i < 4; i++)
            turn(r);
    }
}

/* The peers, each on 127.0.0.1:port with the test certificates; extra
 * arguments (NULL for none) go last. */

/* openssl s_client, verifying the server against the test CA, -quiet: its
 * stdout is the data only, and the end of its stdin does not close. */
static void s_client_start(proc *p, int port, const char *a1, const char *a2, const char *a3)
{
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    const char *argv[] = {"openssl", "s_client", "-connect", addr, "-CAfile", tls_file("ca.pem"),
                          "-verify_return_error", "-quiet", a1, a2, a3, NULL};
    proc_start(p, argv);
}

/* openssl s_server -rev: answers each line reversed. Keep its stdin open:
 * it stops at the end of its stdin. */
static void s_server_rev_start(proc *p, int port, const char *a1)
{
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    const char *argv[] = {"openssl", "s_server", "-accept", addr, "-cert", tls_file("server.pem"),
                          "-key", tls_file("server.key"), "-rev", a1, NULL};
    proc_start(p, argv);
}

/* gnutls-cli to 127.0.0.1: sends its stdin, says close_notify at its end,
 * prints what comes back on stdout (its messages go to stderr). */
static void gnutls_cli_start(proc *p, int port, const char *a1)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    const char *argv[] = {"gnutls-cli", "--logfile=/dev/stderr", "--x509cafile",
                          tls_file("ca.pem"), "-p", ps, a1 ? a1 : "127.0.0.1",
                          a1 ? "127.0.0.1" : NULL, NULL};
    proc_start(p, argv);
}

/* gnutls-serv --echo (it listens on the wildcard address: it has no
 * option to bind one). */
static void gnutls_serv_spawn(proc *p, int port, const char *a1)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    const char *argv[] = {"gnutls-serv", "--echo", "-p", ps, "--x509certfile",
                          tls_file("server.pem"), "--x509keyfile", tls_file("server.key"), a1,
                          NULL};
    proc_start(p, argv);
}

/* ------------------------------------------- the in-test OpenSSL peer
 *
 * An SSL on memory BIOs over a non-blocking socket: every byte it sends is
 * in our hands (mc_seal keeps a record instead of sending it), and while it
 * waits for the socket the reactor turns, so the libem side runs in the
 * same thread. */

typedef struct mc {
    em_reactor *r;
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rb, *wb;
    bool eof;     /* the socket read 0 */
    bool dribble; /* send one byte at a time, the reactor turning between */
    int sys_err;  /* the socket's errno */
} mc;

enum { MC_OK, MC_CLOSE_NOTIFY, MC_EOF, MC_ERR };

static void mc_setup(mc *m, em_reactor *r, int fd, bool server, int version)
{
    *m = (mc){.r = r, .fd = fd};
    set_nonblock(fd);
    m->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    ASSERT_NOT_NULL(m->ctx);
    if (server) {
        ASSERT_EQ(SSL_CTX_use_certificate_chain_file(m->ctx, tls_file("server.pem")), 1);
        ASSERT_EQ(SSL_CTX_use_PrivateKey_file(m->ctx, tls_file("server.key"), SSL_FILETYPE_PEM), 1);
    } else {
        ASSERT_EQ(SSL_CTX_load_verify_locations(m->ctx, tls_file("ca.pem"), NULL), 1);
        SSL_CTX_set_verify(m->ctx, SSL_VERIFY_PEER, NULL);
    }
    if (version) {
        SSL_CTX_set_min_proto_version(m->ctx, version);
        SSL_CTX_set_max_proto_version(m->ctx, version);
    }
    m->ssl = SSL_new(m->ctx);
    ASSERT_NOT_NULL(m->ssl);
    m->rb = BIO_new(BIO_s_mem());
    m->wb = BIO_new(BIO_s_mem());
    ASSERT(m->rb && m->wb);
    SSL_set_bio(m->ssl, m->rb, m->wb);
    if (server) {
        SSL_set_accept_state(m->ssl);
    } else {
        SSL_set_connect_state(m->ssl);
        ASSERT_EQ(SSL_set1_host(m->ssl, "localhost"), 1);
        ASSERT_EQ(SSL_set_tlsext_host_name(m->ssl, "localhost"), 1);
    }
}

/* A client connected to 127.0.0.1:port (version 0: 1.2 or 1.3). */
static void mc_connect(mc *m, em_reactor *r, int port, int version)
{
    mc_setup(m, r, tcp_connect_raw("127.0.0.1", port), false, version);
}

static void mc_free(mc *m)
{
    if (m->ssl)
        SSL_free(m->ssl); /* and its BIOs */
    if (m->ctx)
        SSL_CTX_free(m->ctx);
    if (m->fd >= 0)
        close(m->fd);
    *m = (mc){.fd = -1};
}

static const char *ssl_errs(void)
{
    static char buf[256];
    unsigned long e = ERR_peek_last_error();
    if (!e)
        return "(no OpenSSL error)";
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

/* Sends all of d on the socket, turning the reactor while it is full;
 * false if the socket failed (sys_err). */
static bool mc_send_raw(mc *m, const void *d, size_t n)
{
    double deadline = now_mono() + 10;
    const char *s = d;
    while (n) {
        ssize_t k = send(m->fd, s, m->dribble ? 1 : n, MSG_NOSIGNAL);
        if (k > 0 && m->dribble)
            turn(m->r);
        if (k > 0) {
            s += k;
            n -= (size_t)k;
        } else if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (now_mono() > deadline)
                FAIL("in-test peer: send stuck for 10 s");
            turn(m->r);
        } else {
            m->sys_err = errno;
            return false;
        }
    }
    return true;
}

/* What OpenSSL wrote, taken from its BIO (not sent). */
static void mc_take(mc *m, bytes *out)
{
    char buf[16384];
    int k;
    while ((k = BIO_read(m->wb, buf, sizeof buf)) > 0)
        bytes_add(out, buf, (size_t)k);
}

static bool mc_flush(mc *m)
{
    bytes b = {0};
    mc_take(m, &b);
    bool ok = mc_send_raw(m, b.p, b.n);
    bytes_free(&b);
    return ok;
}

/* One read from the socket into OpenSSL's BIO, or one reactor turn when
 * there is nothing; false on end of file (eof) or error (sys_err). */
static bool mc_fill(mc *m)
{
    char buf[16384];
    ssize_t k = recv(m->fd, buf, sizeof buf, 0);
    if (k > 0) {
        BIO_write(m->rb, buf, (int)k);
        return true;
    }
    if (k == 0) {
        m->eof = true;
        return false;
    }
    if (errno == EAGAIN || errno == EINTR) {
        turn(m->r);
        return true;
    }
    m->sys_err = errno;
    return false;
}

static void mc_handshake(mc *m)
{
    double deadline = now_mono() + 10;
    for (;;) {
        ERR_clear_error();
        int rc = SSL_do_handshake(m->ssl);
        if (!mc_flush(m))
            FAIL("in-test peer: send during the handshake: %s", strerror(m->sys_err));
        if (rc == 1)
            return;
        int e = SSL_get_error(m->ssl, rc);
        if (e != SSL_ERROR_WANT_READ)
            FAIL("in-test peer: handshake failed (%d): %s", e, ssl_errs());
        if (!mc_fill(m))
            FAIL("in-test peer: the socket %s during the handshake",
                 m->eof ? "closed" : strerror(m->sys_err));
        if (now_mono() > deadline)
            FAIL("in-test peer: handshake not done in 10 s");
    }
}

/* Reads application data into out until it holds want bytes (MC_OK) or
 * the stream ends: MC_CLOSE_NOTIFY, MC_EOF (a TCP close without
 * close_notify), MC_ERR. */
static int mc_read(mc *m, bytes *out, size_t want)
{
    double deadline = now_mono() + 15;
    char buf[16384];
    while (out->n < want) {
        size_t k;
        ERR_clear_error();
        if (SSL_read_ex(m->ssl, buf, sizeof buf, &k)) {
            bytes_add(out, buf, k);
            continue;
        }
        int e = SSL_get_error(m->ssl, 0);
        mc_flush(m); /* e.g. a key update's answer */
        if (e == SSL_ERROR_ZERO_RETURN)
            return MC_CLOSE_NOTIFY;
        if (e != SSL_ERROR_WANT_READ)
            return MC_ERR;
        if (!mc_fill(m))
            return m->eof ? MC_EOF : MC_ERR;
        if (now_mono() > deadline)
            FAIL("in-test peer: read stuck for 15 s (%zu of %zu bytes)", out->n, want);
    }
    return MC_OK;
}

static void mc_write(mc *m, const void *d, size_t n)
{
    size_t k;
    ASSERT(SSL_write_ex(m->ssl, d, n, &k) && k == n);
    ASSERT(mc_flush(m));
}

/* Encrypts d into records kept in rec, not sent. */
static void mc_seal(mc *m, const void *d, size_t n, bytes *rec)
{
    size_t k;
    ASSERT(SSL_write_ex(m->ssl, d, n, &k) && k == n);
    mc_take(m, rec);
}

/* close_notify, sent. */
static void mc_shutdown(mc *m)
{
    ERR_clear_error();
    ASSERT(SSL_shutdown(m->ssl) >= 0);
    ASSERT(mc_flush(m));
}

/* Closes the socket with a reset (SO_LINGER 0). */
static void mc_reset(mc *m)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ASSERT_EQ(setsockopt(m->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(m->fd);
    m->fd = -1;
}

static void mc_close(mc *m)
{
    close(m->fd);
    m->fd = -1;
}

/* A ping the server echoes: after it, the in-test client has read what the
 * server sent after the handshake (TLS 1.3 session tickets), so closing
 * its socket leaves nothing unread there (which would make it a reset). */
static void mc_ping(mc *m)
{
    bytes b = {0};
    mc_write(m, "ping", 4);
    int rc = mc_read(m, &b, 4);
    if (rc != MC_OK)
        FAIL("in-test peer: no echo of the ping (%d, %s)", rc, ssl_errs());
    ASSERT(memcmp(b.p, "ping", 4) == 0);
    bytes_free(&b);
}

/* ---------------------------------------------- libem server and client */

typedef struct srv {
    em_reactor *r;
    em_server *s;
    rec arg; /* configure before srv_start; accepted ones: arg.pool[i] */
    em_tls_opts so;
    int port;
} srv;

/* A libem TLS server on 127.0.0.1 (TLS started by rec_handler in
 * post_init unless arg.tls is set to NULL by no_tls). */
static void srv_start(srv *v, em_reactor *r, int pool, bool no_tls)
{
    v->r = r;
    v->so = tls_server_opts("server.pem", NULL);
    v->arg.tls = no_tls ? NULL : &v->so;
    rec_pool_new(&v->arg, pool);
    v->s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &v->arg);
    ASSERT_NOT_NULL(v->s);
    v->port = em_server_port(v->s);
}

static void srv_stop(srv *v)
{
    em_stop_server(v->s);
    v->s = NULL;
}

static bool rec_unbound(void *arg)
{
    return ((rec *)arg)->unbinds > 0;
}
static bool rec_completed_pred(void *arg)
{
    return ((rec *)arg)->completed > 0 || ((rec *)arg)->unbinds;
}
/* A server's arg: a connection was accepted. */
static bool srv_accepted(void *arg)
{
    return ((rec *)arg)->pool_used > 0;
}
static bool rec_handshaken(void *arg)
{
    return ((rec *)arg)->handshakes > 0;
}

/* The protocol a handshake chose, kept in the rec's ctx (a char[32]). */
static void note_protocol(em_conn *c, rec *x)
{
    char *p = em_get_cipher_protocol(c);
    if (x->ctx)
        snprintf(x->ctx, 32, "%s", p ? p : "(null)");
    free(p);
}

/* Server side: close after writing once expect_in bytes came in. */
static size_t expect_in;
static void close_when_all_in(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    (void)n;
    if (x->bytes_in >= expect_in)
        close_conn(c, true);
}

static void assert_reason(const rec *x, int want, const char *who)
{
    if (x->reason != want)
        FAIL("%s: unbind reason %d (%s), expected %d (%s); tls error \"%s\"", who, x->reason,
             em_strerror(x->reason), want, em_strerror(want), x->tls_error);
}

/* ================================================================ 1. interop */

/* openssl s_client against a libem echo server: the echo comes back byte
 * for byte, the server closes with close_notify and s_client exits 0. */
static void s_client_echo(const char *version_flag, const char *want_protocol)
{
    int fds0 = open_fd_count();
    char proto[32] = "";
    em_reactor *r = new_reactor();
    srv v = {0};
    bytes data = {0};
    make_lines(&data, 64 * 1024);
    expect_in = data.n;
    v.arg.echo = true;
    v.arg.on_data = close_when_all_in;
    v.arg.on_handshake = note_protocol;
    v.arg.ctx = proto;
    srv_start(&v, r, 1, false);
    proc p;
    s_client_start(&p, v.port, version_flag, NULL, NULL);
    proc_feed(&p, data.p, data.n, false);
    if (!drive(r, proc_done, &p, 15))
        FAIL("s_client did not finish (%zu of %zu bytes back): %s", p.o.n, data.n, proc_diag(&p));
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    rec *s = &v.arg.pool[0];
    if (proc_exit_code(&p) != 0)
        FAIL("s_client exit status %d: %s", proc_exit_code(&p), proc_diag(&p));
    ASSERT_EQ(s->tls_rc, 0);
    ASSERT_EQ(s->handshakes, 1);
    ASSERT_STREQ(proto, want_protocol);
    assert_reason(s, 0, "libem server");
    ASSERT_EQ(s->bytes_in, data.n);
    ASSERT_EQ(p.o.n, data.n);
    ASSERT(memcmp(p.o.p, data.p, data.n) == 0);
    proc_free(&p);
    srv_stop(&v);
    REACTOR_FREE_CHECKED(r);
    rec_free(&v.arg);
    bytes_free(&data);
    assert_no_children();
    ASSERT_NO_FD_LEAK(fds0);
}

TEST(openssl_s_client_to_libem_server_tls13)
{
    s_client_echo("-tls1_3", "TLSv1.3");
}
TEST(openssl_s_client_to_libem_server_tls12)
{
    s_client_echo("-tls1_2", "TLSv1.2");
}

/* Client side: sends lines once the handshake is done, closes after
 * writing once expect_back bytes came back. */
static size_t expect_back;
static bytes *client_lines;
static void send_lines(em_conn *c, rec *x)
{
    note_protocol(c, x);
    ASSERT_EQ(em_send_data(c, client_lines->p, client_lines->n), 0);
}
static void close_when_all_back(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    (void)n;
    if (x->len >= expect_back)
        close_conn(c, true);
}

/* A libem client against openssl s_server -rev (it answers each line
 * reversed). */
static void s_server_rev(const char *version_flag, const char *want_protocol)
{
    int fds0 = open_fd_count();
    char proto[32] = "";
    em_reactor *r = new_reactor();
    int port = free_port();
    proc p;
    s_server_rev_start(&p, port, version_flag);
    wait_listen(r, port, &p);

    bytes data = {0}, want = {0};
    make_lines(&data, 32 * 1024);
    reverse_lines(&data, &want);
    client_lines = &data;
    expect_back = want.n;
    em_tls_opts co = tls_client_opts();
    rec cli = {.tls = &co,
               .store = true,
               .on_handshake = send_lines,
               .on_data = close_when_all_back,
               .ctx = proto};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    if (!drive(r, rec_unbound, &cli, 15))
        FAIL("libem client not done (%zu of %zu bytes): %s", cli.len, want.n, proc_diag(&p));
    ASSERT_EQ(cli.tls_rc, 0);
    ASSERT_EQ(cli.handshakes, 1);
    ASSERT_STREQ(proto, want_protocol);
    assert_reason(&cli, 0, "libem client");
    ASSERT_EQ(cli.len, want.n);
    ASSERT(memcmp(cli.buf, want.p, want.n) == 0);
    ASSERT(!p.exited);
    proc_free(&p);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    bytes_free(&data);
    bytes_free(&want);
    assert_no_children();
    ASSERT_NO_FD_LEAK(fds0);
}

TEST(libem_client_to_openssl_s_server_tls13)
{
    s_server_rev("-tls1_3", "TLSv1.3");
}
TEST(libem_client_to_openssl_s_server_tls12)
{
    s_server_rev("-tls1_2", "TLSv1.2");
}

/* gnutls-cli against a libem echo server: gnutls-cli sends its stdin,
 * says close_notify at its end (gnutls_bye), and prints what comes back
 * until the server's close_notify. */
TEST(gnutls_cli_to_libem_server)
{
    int fds0 = open_fd_count();
    em_reactor *r = new_reactor();
    srv v = {0};
    bytes data = {0};
    make_lines(&data, 64 * 1024);
    v.arg.echo = true;
    srv_start(&v, r, 1, false);
    proc p;
    gnutls_cli_start(&p, v.port, NULL);
    proc_feed(&p, data.p, data.n, true);
    if (!drive(r, proc_done, &p, 15))
        FAIL("gnutls-cli did not finish (%zu of %zu bytes back): %s", p.o.n, data.n, proc_diag(&p));
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    rec *s = &v.arg.pool[0];
    if (proc_exit_code(&p) != 0)
        FAIL("gnutls-cli exit status %d: %s", proc_exit_code(&p), proc_diag(&p));
    ASSERT_EQ(s->handshakes, 1);
    assert_reason(s, 0, "libem server"); /* gnutls-cli's close_notify */
    ASSERT_EQ(s->bytes_in, data.n);
    ASSERT_EQ(p.o.n, data.n);
    ASSERT(memcmp(p.o.p, data.p, data.n) == 0);
    ASSERT(bytes_has(&p.e, "Peer has closed the GnuTLS connection"));
    proc_free(&p);
    srv_stop(&v);
    REACTOR_FREE_CHECKED(r);
    rec_free(&v.arg);
    bytes_free(&data);
    assert_no_children();
    ASSERT_NO_FD_LEAK(fds0);
}

static void gnutls_serv_start(em_reactor *r, proc *p, int *port_out)
{
    int port = free_port();
    gnutls_serv_spawn(p, port, NULL);
    wait_listen(r, port, p);
    *port_out = port;
}

/* A libem client against gnutls-serv --echo. */
TEST(libem_client_to_gnutls_serv)
{
    int fds0 = open_fd_count();
    char proto[32] = "";
    em_reactor *r = new_reactor();
    proc p;
    int port;
    gnutls_serv_start(r, &p, &port);
    bytes data = {0};
    make_lines(&data, 64 * 1024);
    client_lines = &data;
    expect_back = data.n;
    em_tls_opts co = tls_client_opts();
    rec cli = {.tls = &co,
               .store = true,
               .on_handshake = send_lines,
               .on_data = close_when_all_back,
               .ctx = proto};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    if (!drive(r, rec_unbound, &cli, 15))
        FAIL("libem client not done (%zu of %zu bytes): %s", cli.len, data.n, proc_diag(&p));
    ASSERT_EQ(cli.handshakes, 1);
    ASSERT_STREQ(proto, "TLSv1.3");
    assert_reason(&cli, 0, "libem client");
    ASSERT_EQ(cli.len, data.n);
    ASSERT(memcmp(cli.buf, data.p, data.n) == 0);
    ASSERT(!p.exited);
    proc_free(&p);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    bytes_free(&data);
    assert_no_children();
    ASSERT_NO_FD_LEAK(fds0);
}

/* ======================================================== 2. TLS 1.1 refused */

/* s_client offers only an old version, its own security level lowered so
 * that it does offer it: the alert it gets back shows that the libem
 * server refused, not the client. */
static void old_version_refused(const char *version_flag)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_start(&v, r, 1, false);
    proc p;
    s_client_start(&p, v.port, version_flag, "-cipher", "DEFAULT@SECLEVEL=0");
    ASSERT(drive(r, proc_done, &p, 10));
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    rec *s = &v.arg.pool[0];
    ASSERT_NE(proc_exit_code(&p), 0);
    /* the client sent a hello and the server answered with an alert */
    if (!bytes_has(&p.e, "alert protocol version"))
        FAIL("s_client was not refused by the server: %s", proc_diag(&p));
    ASSERT_EQ(s->bytes_in, 0);
    ASSERT_EQ(s->handshakes, 0);
    assert_reason(s, EM_ETLS, "libem server");
    if (!strstr(s->tls_error, "unsupported protocol"))
        FAIL("tls error \"%s\" does not say unsupported protocol", s->tls_error);
    proc_free(&p);
    srv_stop(&v);
    REACTOR_FREE_CHECKED(r);
    rec_free(&v.arg);
    assert_no_children();
}

TEST(tls11_client_refused_by_libem_server)
{
    old_version_refused("-tls1_1");
}
TEST(tls10_client_refused_by_libem_server)
{
    old_version_refused("-tls1");
}

/* ============================================== 3. garbage for a ClientHello */

/* Waits until the raw socket reads its end (0, or a reset), ignoring an
 * alert; false if it stays open. */
static bool raw_sees_close(em_reactor *r, int fd, double timeout_s)
{
    set_nonblock(fd);
    double deadline = now_mono() + timeout_s;
    char buf[4096];
    while (now_mono() < deadline) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return true;
        if (n < 0)
            turn(r);
    }
    return false;
}

/* Sends what it can of d (non-blocking: the server may close first). */
static void raw_send_some(em_reactor *r, int fd, const void *d, size_t n)
{
    set_nonblock(fd);
    double deadline = now_mono() + 5;
    const char *s = d;
    while (n && now_mono() < deadline) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k > 0) {
            s += k;
            n -= (size_t)k;
        } else if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
            turn(r);
        } else {
            return;
        }
    }
}

static void echo_hello_check(em_reactor *r, srv *v, int idx)
{
    em_tls_opts co = tls_client_opts();
    bytes hello = {.p = "hello", .n = 5};
    client_lines = &hello;
    expect_back = 5;
    rec cli = {
        .tls = &co, .store = true, .on_handshake = send_lines, .on_data = close_when_all_back};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", v->port, &rec_handler, &cli));
    ASSERT(drive(r, rec_unbound, &cli, 10));
    ASSERT(drive(r, rec_unbound, &v->arg.pool[idx], 5));
    assert_reason(&cli, 0, "the good client");
    ASSERT_EQ(cli.handshakes, 1);
    ASSERT_EQ(cli.len, 5);
    ASSERT(memcmp(cli.buf, "hello", 5) == 0);
    ASSERT_EQ(v->arg.pool[idx].handshakes, 1);
    assert_reason(&v->arg.pool[idx], 0, "the good client's server side");
    rec_free(&cli);
}

static void garbage_then_good_client(const void *g, size_t n)
{
    int fds0 = open_fd_count();
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.echo = true;
    srv_start(&v, r, 2, false);
    int fd = tcp_connect_raw("127.0.0.1", v.port);
    raw_send_some(r, fd, g, n);
    if (!drive(r, rec_unbound, &v.arg.pool[0], 10))
        FAIL("the server did not end the connection that sent garbage");
    rec *s = &v.arg.pool[0];
    assert_reason(s, EM_ETLS, "garbage");
    ASSERT(s->tls_error[0] != '\0');
    ASSERT_EQ(s->bytes_in, 0);
    ASSERT_EQ(s->handshakes, 0);
    ASSERT(raw_sees_close(r, fd, 5));
    close(fd);
    echo_hello_check(r, &v, 1); /* the server goes on */
    srv_stop(&v);
    REACTOR_FREE_CHECKED(r);
    rec_free(&v.arg);
    ASSERT_NO_FD_LEAK(fds0);
}

TEST(garbage_random_bytes_instead_of_client_hello)
{
    static char g[64 * 1024]; /* more than a record: a header that looks
                                 valid cannot make the server wait */
    uint64_t st = 0x1234567;
    for (size_t i = 0; i < sizeof g; i++)
        g[i] = (char)rng_next(&st);
    garbage_then_good_client(g, sizeof g);
}

TEST(garbage_http_request_instead_of_client_hello)
{
    const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n";
    garbage_then_good_client(req, sizeof req - 1);
}

TEST(garbage_record_header_with_huge_length)
{
    /* a handshake record that claims 65535 bytes (more than TLS allows) */
    unsigned char g[5 + 64] = {0x16, 0x03, 0x01, 0xff, 0xff};
    garbage_then_good_client(g, sizeof g);
}

TEST(garbage_tls_record_of_zeros)
{
    /* a well-formed handshake record whose body is nonsense */
    unsigned char g[5 + 200] = {0x16, 0x03, 0x01, 0x00, 200};
    garbage_then_good_client(g, sizeof g);
}

/* ================================ 4. the peer closes during or after the handshake */

static void srv_one(srv *v, em_reactor *r)
{
    v->arg.echo = true;
    srv_start(v, r, 1, false);
}

static void srv_done(srv *v, em_reactor *r)
{
    srv_stop(v);
    REACTOR_FREE_CHECKED(r);
    rec_free(&v->arg);
}

TEST(peer_closes_right_after_connect)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    int fd = tcp_connect_raw("127.0.0.1", v.port);
    ASSERT(drive(r, srv_accepted, &v.arg, 5));
    run_for(r, 0.05);
    ASSERT_EQ(v.arg.pool[0].unbinds, 0);
    close(fd);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reason(&v.arg.pool[0], EM_ETLS, "libem server");
    ASSERT(strstr(v.arg.pool[0].tls_error, "during the handshake"));
    srv_done(&v, r);
}

/* The ClientHello an in-test client makes, not sent. */
static void client_hello(mc *m, bytes *hello)
{
    ERR_clear_error();
    ASSERT_EQ(SSL_do_handshake(m->ssl), -1);
    mc_take(m, hello);
    ASSERT_GT(hello->n, 50);
    ASSERT_EQ((unsigned char)hello->p[0], 0x16);
}

static void partial_hello_then(bool full, bool reset)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, 0);
    bytes hello = {0};
    client_hello(&m, &hello);
    ASSERT(mc_send_raw(&m, hello.p, full ? hello.n : hello.n / 2));
    /* the server has read what was sent before the close */
    ASSERT(drive(r, srv_accepted, &v.arg, 5));
    run_for(r, 0.1);
    ASSERT_EQ(v.arg.pool[0].unbinds, 0);
    if (reset)
        mc_reset(&m);
    else
        mc_close(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reason(&v.arg.pool[0], EM_ETLS, "libem server");
    ASSERT(v.arg.pool[0].tls_error[0] != '\0');
    mc_free(&m);
    bytes_free(&hello);
    srv_done(&v, r);
}

TEST(peer_closes_after_half_a_client_hello)
{
    partial_hello_then(false, false);
}
TEST(peer_closes_after_a_whole_client_hello)
{
    partial_hello_then(true, false);
}
TEST(peer_resets_after_half_a_client_hello)
{
    partial_hello_then(false, true);
}
TEST(peer_resets_after_a_whole_client_hello)
{
    partial_hello_then(true, true);
}

/* After the handshake: the in-test client closes its socket without
 * close_notify. */
TEST(peer_closes_without_close_notify_is_truncated)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    mc_ping(&m);
    mc_close(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    ASSERT_EQ(v.arg.pool[0].handshakes, 1);
    assert_reason(&v.arg.pool[0], EM_ETLS_TRUNCATED, "libem server");
    mc_free(&m);
    srv_done(&v, r);
}

TEST(peer_closes_without_close_notify_is_truncated_tls12)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, TLS1_2_VERSION);
    mc_handshake(&m);
    mc_ping(&m);
    mc_close(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reason(&v.arg.pool[0], EM_ETLS_TRUNCATED, "libem server");
    mc_free(&m);
    srv_done(&v, r);
}

/* After the handshake: close_notify, then the TCP close at once. */
TEST(peer_close_notify_then_close_is_clean)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    mc_ping(&m);
    mc_shutdown(&m);
    mc_close(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reason(&v.arg.pool[0], 0, "libem server");
    mc_free(&m);
    srv_done(&v, r);
}

/* close_notify both ways, then the close. */
TEST(peer_close_notify_answered_with_close_notify)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    mc_ping(&m);
    mc_shutdown(&m);
    bytes b = {0};
    ASSERT_EQ(mc_read(&m, &b, 1), MC_CLOSE_NOTIFY);
    ASSERT_EQ(b.n, 0);
    mc_close(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reason(&v.arg.pool[0], 0, "libem server");
    mc_free(&m);
    bytes_free(&b);
    srv_done(&v, r);
}

static bool out_has_hello(void *arg)
{
    proc *p = arg;
    return bytes_has(&p->o, "hello\n") || p->exited;
}

/* s_client killed after the handshake and an echo: its socket closes
 * without close_notify. */
TEST(s_client_killed_after_handshake_is_truncated)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    proc p;
    s_client_start(&p, v.port, NULL, NULL, NULL);
    proc_feed(&p, "hello\n", 6, false);
    ASSERT(drive(r, out_has_hello, &p, 10));
    if (p.exited)
        FAIL("s_client exited: %s", proc_diag(&p));
    proc_stop(&p); /* SIGKILL */
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    ASSERT_EQ(v.arg.pool[0].handshakes, 1);
    assert_reason(&v.arg.pool[0], EM_ETLS_TRUNCATED, "libem server");
    proc_free(&p);
    srv_done(&v, r);
    assert_no_children();
}

/* A libem client whose s_server is killed after an exchange. */
TEST(s_server_killed_after_handshake_client_is_truncated)
{
    em_reactor *r = new_reactor();
    int port = free_port();
    proc p;
    s_server_rev_start(&p, port, NULL);
    wait_listen(r, port, &p);
    bytes line = {.p = "abc\n", .n = 4};
    client_lines = &line;
    em_tls_opts co = tls_client_opts();
    rec cli = {.tls = &co, .store = true, .on_handshake = send_lines};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    for (double end = now_mono() + 10; cli.len < 4 && !cli.unbinds && now_mono() < end;)
        turn(r);
    ASSERT_EQ(cli.len, 4);
    ASSERT(memcmp(cli.buf, "cba\n", 4) == 0);
    proc_stop(&p); /* SIGKILL: the kernel closes its socket, no close_notify */
    ASSERT(drive(r, rec_unbound, &cli, 5));
    assert_reason(&cli, EM_ETLS_TRUNCATED, "libem client");
    proc_free(&p);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    assert_no_children();
}

/* ==================================================== 5. a reset mid-record */

/* Never 0, never a crash, nothing of the cut record delivered. What is
 * right: ECONNRESET. The socket was reset, and the API reports a reset as
 * ECONNRESET for any connection; EM_ETLS_TRUNCATED is for a peer that
 * closed (a FIN) without close_notify, which this peer did not do. Either
 * would tell the application that the stream did not end cleanly, but
 * only ECONNRESET says what happened. */
static void assert_reset(const rec *x, const char *who)
{
    if (x->reason == 0 || x->reason == EM_ETLS)
        FAIL("%s: a reset mid-record unbinds with %d (%s); \"%s\"", who, x->reason,
             em_strerror(x->reason), x->tls_error);
    assert_reason(x, ECONNRESET, who);
}

TEST(peer_resets_in_the_middle_of_a_record)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    mc_ping(&m);
    char body[1000];
    memset(body, 'x', sizeof body);
    bytes rec_bytes = {0};
    mc_seal(&m, body, sizeof body, &rec_bytes);
    ASSERT_GT(rec_bytes.n, sizeof body);
    ASSERT(mc_send_raw(&m, rec_bytes.p, rec_bytes.n / 2));
    /* the half record reaches the server before the reset */
    run_for(r, 0.1);
    ASSERT_EQ(v.arg.pool[0].unbinds, 0);
    mc_reset(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reset(&v.arg.pool[0], "libem server");
    ASSERT_EQ(v.arg.pool[0].bytes_in, 4); /* the ping only */
    mc_free(&m);
    bytes_free(&rec_bytes);
    srv_done(&v, r);
}

/* The reset arrives together with half a record: one read may see both. */
TEST(peer_resets_right_after_half_a_record)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    mc_ping(&m);
    char body[3000];
    memset(body, 'y', sizeof body);
    bytes rec_bytes = {0};
    mc_seal(&m, body, sizeof body, &rec_bytes);
    ASSERT(mc_send_raw(&m, rec_bytes.p, rec_bytes.n - 10));
    mc_reset(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reset(&v.arg.pool[0], "libem server");
    ASSERT_EQ(v.arg.pool[0].bytes_in, 4);
    mc_free(&m);
    bytes_free(&rec_bytes);
    srv_done(&v, r);
}

/* A whole record then a reset: the record is delivered, then the error. */
TEST(peer_resets_after_a_whole_record)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.store = true;
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    mc_ping(&m);
    bytes rec_bytes = {0};
    mc_seal(&m, "whole", 5, &rec_bytes);
    ASSERT(mc_send_raw(&m, rec_bytes.p, rec_bytes.n));
    mc_reset(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reset(&v.arg.pool[0], "libem server");
    ASSERT_EQ(v.arg.pool[0].len, 9);
    ASSERT(memcmp(v.arg.pool[0].buf, "pingwhole", 9) == 0);
    mc_free(&m);
    bytes_free(&rec_bytes);
    srv_done(&v, r);
}

/* The same toward a libem client: an in-test server resets mid-record. */
TEST(server_resets_in_the_middle_of_a_record_client_side)
{
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 4, &port);
    em_tls_opts co = tls_client_opts();
    rec cli = {.tls = &co, .store = true};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    ASSERT(drive(r, rec_completed_pred, &cli, 5));
    ASSERT_EQ(cli.unbinds, 0);
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(fd, 0);
    mc m;
    mc_setup(&m, r, fd, true, 0);
    mc_handshake(&m);
    ASSERT(drive(r, rec_handshaken, &cli, 5));
    mc_write(&m, "first", 5);
    for (double end = now_mono() + 5; cli.len < 5 && now_mono() < end;)
        turn(r);
    ASSERT_EQ(cli.len, 5);
    char body[2000];
    memset(body, 'z', sizeof body);
    bytes rec_bytes = {0};
    mc_seal(&m, body, sizeof body, &rec_bytes);
    ASSERT(mc_send_raw(&m, rec_bytes.p, rec_bytes.n / 2));
    run_for(r, 0.1);
    ASSERT_EQ(cli.unbinds, 0);
    mc_reset(&m);
    ASSERT(drive(r, rec_unbound, &cli, 5));
    assert_reset(&cli, "libem client");
    ASSERT_EQ(cli.len, 5);
    mc_free(&m);
    close(lfd);
    bytes_free(&rec_bytes);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
}

/* ===================================================== 6. handshake timeouts */

/* post_init: the timeout first, then em_start_tls. */
typedef struct tmo_cfg {
    bool inactivity; /* em_set_comm_inactivity_timeout, else the pending-connect one */
    double secs;
    const em_tls_opts *opts;
} tmo_cfg;

static void timeout_then_tls(em_conn *c, rec *x)
{
    tmo_cfg *t = x->ctx;
    if (t->inactivity)
        ASSERT_EQ(em_set_comm_inactivity_timeout(c, t->secs), 0);
    else
        ASSERT_EQ(em_set_pending_connect_timeout(c, t->secs), 0);
    x->tls_rc = em_start_tls(c, t->opts);
    ASSERT_EQ(x->tls_rc, 0);
}

/* A raw client that never sends a ClientHello (or sends one and then
 * nothing): the server's timeout ends the handshake. */
static void server_handshake_stalls(bool inactivity, bool send_hello)
{
    int fds0 = open_fd_count();
    em_reactor *r = new_reactor();
    srv v = {0};
    tmo_cfg t = {.inactivity = inactivity, .secs = 0.3, .opts = &v.so};
    v.arg.on_post_init = timeout_then_tls;
    v.arg.ctx = &t;
    srv_start(&v, r, 1, true);
    double t0 = now_mono();
    mc m;
    mc_connect(&m, r, v.port, 0);
    bytes hello = {0};
    if (send_hello) {
        client_hello(&m, &hello);
        ASSERT(mc_send_raw(&m, hello.p, hello.n));
    }
    if (!drive(r, rec_unbound, &v.arg.pool[0], 5))
        FAIL("the stalled handshake was not ended in 5 s");
    double took = now_mono() - t0;
    rec *s = &v.arg.pool[0];
    assert_reason(s, ETIMEDOUT, "libem server");
    ASSERT_EQ(s->handshakes, 0);
    ASSERT_DBL_GE(took, 0.29);
    ASSERT_DBL_LE(took, 1.5);
    if (!inactivity)
        ASSERT(strstr(s->tls_error, "timed out"));
    ASSERT(raw_sees_close(r, m.fd, 5));
    mc_free(&m);
    bytes_free(&hello);
    srv_done(&v, r);
    ASSERT_NO_FD_LEAK(fds0);
}

TEST(handshake_timeout_server_no_client_hello_pending_connect)
{
    server_handshake_stalls(false, false);
}
TEST(handshake_timeout_server_no_client_hello_inactivity)
{
    server_handshake_stalls(true, false);
}
TEST(handshake_timeout_server_stalled_after_client_hello)
{
    server_handshake_stalls(false, true);
}
TEST(handshake_timeout_server_stalled_after_client_hello_inactivity)
{
    server_handshake_stalls(true, true);
}

/* A libem client whose server accepts and never answers. */
static void client_handshake_stalls(bool inactivity)
{
    int fds0 = open_fd_count();
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 4, &port);
    em_tls_opts co = tls_client_opts();
    tmo_cfg t = {.inactivity = inactivity, .secs = 0.3, .opts = &co};
    rec cli = {.on_post_init = timeout_then_tls, .ctx = &t};
    double t0 = now_mono();
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    ASSERT(drive(r, rec_completed_pred, &cli, 5));
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(fd, 0);
    if (!drive(r, rec_unbound, &cli, 5))
        FAIL("the stalled handshake was not ended in 5 s");
    double took = now_mono() - t0;
    assert_reason(&cli, ETIMEDOUT, "libem client");
    ASSERT_EQ(cli.completed, 1); /* the TCP connect did complete */
    ASSERT_EQ(cli.handshakes, 0);
    ASSERT_DBL_GE(took, 0.29);
    ASSERT_DBL_LE(took, 1.5);
    if (!inactivity)
        ASSERT(strstr(cli.tls_error, "timed out"));
    /* it did start: the server's end holds a ClientHello, then the close */
    unsigned char b[8];
    ASSERT_GE(recv(fd, b, sizeof b, MSG_DONTWAIT), 1);
    ASSERT_EQ(b[0], 0x16);
    ASSERT(raw_sees_close(r, fd, 5));
    close(fd);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fds0);
}

TEST(handshake_timeout_client_server_never_answers_pending_connect)
{
    client_handshake_stalls(false);
}
TEST(handshake_timeout_client_server_never_answers_inactivity)
{
    client_handshake_stalls(true);
}

/* ===================================================== 7. close after writing */

static void send_1mib_then_close(em_conn *c, rec *x)
{
    (void)x;
    char *b = malloc(MIB);
    ASSERT_NOT_NULL(b);
    for (size_t i = 0; i < MIB; i++)
        b[i] = (char)pattern_byte(i);
    ASSERT_EQ(em_send_data(c, b, MIB), 0);
    free(b);
    ASSERT_EQ(em_close_connection_after_writing(c), 0);
}

static void assert_pattern(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] != pattern_byte(i))
            FAIL("byte %zu is %u, expected %u", i, (unsigned char)p[i], pattern_byte(i));
}

TEST(close_after_writing_1mib_to_s_client)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.on_handshake = send_1mib_then_close;
    srv_start(&v, r, 1, false);
    proc p;
    s_client_start(&p, v.port, NULL, NULL, NULL);
    if (!drive(r, proc_done, &p, 15))
        FAIL("s_client did not finish (%zu bytes): %s", p.o.n, proc_diag(&p));
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    if (proc_exit_code(&p) != 0)
        FAIL("s_client exit status %d: %s", proc_exit_code(&p), proc_diag(&p));
    if (bytes_has(&p.e, "unexpected eof"))
        FAIL("s_client saw no close_notify: %s", proc_diag(&p));
    ASSERT_EQ(p.o.n, MIB);
    assert_pattern(p.o.p, p.o.n);
    assert_reason(&v.arg.pool[0], 0, "libem server");
    proc_free(&p);
    srv_done(&v, r);
    assert_no_children();
}

TEST(close_after_writing_1mib_to_libem_client)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.on_handshake = send_1mib_then_close;
    srv_start(&v, r, 1, false);
    em_tls_opts co = tls_client_opts();
    rec cli = {.tls = &co, .check_pattern = true};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", v.port, &rec_handler, &cli));
    ASSERT(drive(r, rec_unbound, &cli, 15));
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    ASSERT_EQ(cli.bytes_in, MIB);
    assert_reason(&cli, 0, "libem client"); /* close_notify came */
    assert_reason(&v.arg.pool[0], 0, "libem server");
    srv_done(&v, r);
    rec_free(&cli);
}

/* The in-test OpenSSL client tells close_notify (SSL_ERROR_ZERO_RETURN)
 * from a bare TCP close; after close_notify the FIN follows. */
TEST(close_after_writing_1mib_close_notify_then_fin)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.on_handshake = send_1mib_then_close;
    srv_start(&v, r, 1, false);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    bytes b = {0};
    ASSERT_EQ(mc_read(&m, &b, MIB), MC_OK);
    int end = mc_read(&m, &b, MIB + 1);
    if (end != MC_CLOSE_NOTIFY)
        FAIL("after 1 MiB: %s, not close_notify", end == MC_EOF  ? "a TCP close"
                                                  : end == MC_OK ? "more data"
                                                                 : ssl_errs());
    ASSERT_EQ(b.n, MIB);
    assert_pattern(b.p, b.n);
    for (double t = now_mono() + 5; mc_fill(&m) && now_mono() < t;) {
    }
    ASSERT(m.eof);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reason(&v.arg.pool[0], 0, "libem server");
    mc_free(&m);
    bytes_free(&b);
    srv_done(&v, r);
}

/* em_close_write: close_notify then FIN; the peer goes on sending and
 * libem goes on receiving until the peer's own close_notify. */
static void ping_then_close_write(em_conn *c, rec *x)
{
    (void)x;
    ASSERT_EQ(em_send_data(c, "ping", 4), 0);
    ASSERT_EQ(em_close_write(c), 0);
}

static bool got_pong(void *arg)
{
    rec *x = arg;
    return x->len >= 4 || x->unbinds;
}

TEST(close_write_sends_close_notify_then_fin_and_still_receives)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.store = true;
    v.arg.on_handshake = ping_then_close_write;
    srv_start(&v, r, 1, false);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    bytes b = {0};
    ASSERT_EQ(mc_read(&m, &b, 4), MC_OK);
    ASSERT(b.n == 4 && memcmp(b.p, "ping", 4) == 0);
    int end = mc_read(&m, &b, 5);
    if (end != MC_CLOSE_NOTIFY)
        FAIL("after em_close_write: %s, not close_notify", end == MC_EOF  ? "a TCP close"
                                                           : end == MC_OK ? "more data"
                                                                          : ssl_errs());
    for (double t = now_mono() + 5; mc_fill(&m) && now_mono() < t;) {
    }
    if (!m.eof)
        FAIL("no FIN after close_notify (socket: %s)", strerror(m.sys_err));
    rec *s = &v.arg.pool[0];
    ASSERT_EQ(s->unbinds, 0); /* half closed, still open */
    mc_write(&m, "pong", 4);
    ASSERT(drive(r, got_pong, s, 5));
    ASSERT_EQ(s->unbinds, 0);
    ASSERT_EQ(s->len, 4);
    ASSERT(memcmp(s->buf, "pong", 4) == 0);
    mc_write(&m, "more", 4);
    mc_shutdown(&m);
    ASSERT(drive(r, rec_unbound, s, 5));
    assert_reason(s, 0, "libem server");
    ASSERT_EQ(s->len, 8);
    ASSERT(memcmp(s->buf, "pongmore", 8) == 0);
    mc_close(&m);
    mc_free(&m);
    bytes_free(&b);
    srv_done(&v, r);
}

/* The same between libem's own client and server: the client half-closes
 * after its request and still receives the answer. */
static void request_then_close_write(em_conn *c, rec *x)
{
    (void)x;
    ASSERT_EQ(em_send_data(c, "request", 7), 0);
    ASSERT_EQ(em_close_write(c), 0);
}

TEST(close_write_libem_client_still_receives)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.echo = true;
    srv_start(&v, r, 1, false);
    em_tls_opts co = tls_client_opts();
    rec cli = {.tls = &co, .store = true, .on_handshake = request_then_close_write};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", v.port, &rec_handler, &cli));
    ASSERT(drive(r, rec_unbound, &cli, 10));
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    ASSERT_EQ(cli.len, 7);
    ASSERT(memcmp(cli.buf, "request", 7) == 0);
    assert_reason(&cli, 0, "libem client");
    assert_reason(&v.arg.pool[0], 0, "libem server");
    srv_done(&v, r);
    rec_free(&cli);
}

/* ============================================ 8. data sent before the handshake */

static void greet_early(em_conn *c, rec *x)
{
    ASSERT_EQ(x->tls_rc, 0); /* rec_handler started TLS just before */
    ASSERT_EQ(em_send_data(c, "greeting\n", 9), 0);
    ASSERT_EQ(em_get_outbound_data_size(c), 9);
    ASSERT_EQ(x->handshakes, 0);
}

/* The server greets in post_init; s_client sends "bye" after its
 * handshake, and the server closes after writing on it. (When s_client's
 * "bye" comes in the segment of its Finished while the server has the
 * greeting to write, the "bye" stays in OpenSSL's buffer and this hangs:
 * see finished_and_data_in_one_segment_while_server_writes.) */
TEST(data_before_handshake_libem_server_to_s_client)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.on_post_init = greet_early;
    v.arg.on_data = close_when_all_in;
    expect_in = 4;
    srv_start(&v, r, 1, false);
    proc p;
    s_client_start(&p, v.port, NULL, NULL, NULL);
    proc_feed(&p, "bye\n", 4, false);
    if (!drive(r, proc_done, &p, 10))
        FAIL("s_client did not finish (%zu bytes out; server: %d handshakes, %llu bytes in, "
             "%d unbinds, reason %d \"%s\"): %s",
             p.o.n, v.arg.pool[0].handshakes, (unsigned long long)v.arg.pool[0].bytes_in,
             v.arg.pool[0].unbinds, v.arg.pool[0].reason, v.arg.pool[0].tls_error, proc_diag(&p));
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    if (proc_exit_code(&p) != 0)
        FAIL("s_client exit status %d: %s", proc_exit_code(&p), proc_diag(&p));
    ASSERT_EQ(p.o.n, 9);
    ASSERT(memcmp(p.o.p, "greeting\n", 9) == 0);
    ASSERT_EQ(v.arg.pool[0].handshakes, 1);
    assert_reason(&v.arg.pool[0], 0, "libem server");
    proc_free(&p);
    srv_done(&v, r);
    assert_no_children();
}

static void send_early(em_conn *c, rec *x)
{
    ASSERT_EQ(x->tls_rc, 0);
    ASSERT_EQ(em_send_data(c, "early\n", 6), 0);
    ASSERT_EQ(em_get_outbound_data_size(c), 6);
}

static void client_early_to(proc *p, int port, const char *want)
{
    em_reactor *r = new_reactor();
    wait_listen(r, port, p);
    em_tls_opts co = tls_client_opts();
    expect_back = strlen(want);
    rec cli = {
        .tls = &co, .store = true, .on_post_init = send_early, .on_data = close_when_all_back};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    if (!drive(r, rec_unbound, &cli, 10))
        FAIL("libem client not done (%zu bytes): %s", cli.len, proc_diag(p));
    ASSERT_EQ(cli.handshakes, 1);
    assert_reason(&cli, 0, "libem client");
    ASSERT_EQ(cli.len, strlen(want));
    ASSERT(memcmp(cli.buf, want, cli.len) == 0);
    proc_free(p);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    assert_no_children();
}

TEST(data_before_handshake_libem_client_to_s_server)
{
    int port = free_port();
    proc p;
    s_server_rev_start(&p, port, NULL);
    client_early_to(&p, port, "ylrae\n"); /* decrypted and reversed by s_server */
}

TEST(data_before_handshake_libem_client_to_gnutls_serv)
{
    int port = free_port();
    proc p;
    gnutls_serv_spawn(&p, port, NULL);
    client_early_to(&p, port, "early\n");
}

/* ============================================ more misbehaving and live peers */

/* TLS 1.3 KeyUpdate from the peer, asking for libem's own in return: the
 * connection goes on both ways with the new keys. */
TEST(peer_key_update_tls13)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, TLS1_3_VERSION);
    mc_handshake(&m);
    mc_ping(&m);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(SSL_key_update(m.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
        mc_ping(&m); /* the KeyUpdate goes out with it; the echo comes with libem's */
    }
    mc_shutdown(&m);
    bytes b = {0};
    ASSERT_EQ(mc_read(&m, &b, 1), MC_CLOSE_NOTIFY);
    mc_close(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reason(&v.arg.pool[0], 0, "libem server");
    ASSERT_EQ(v.arg.pool[0].bytes_in, 16);
    ASSERT_EQ(v.arg.pool[0].handshakes, 1);
    mc_free(&m);
    bytes_free(&b);
    srv_done(&v, r);
}

/* A TLS 1.2 client asks for a renegotiation: libem refuses it (a
 * no_renegotiation warning); OpenSSL's client takes that as fatal and
 * says so. No second handshake, no crash. */
TEST(client_renegotiation_refused_tls12)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, TLS1_2_VERSION);
    mc_handshake(&m);
    mc_ping(&m);
    ASSERT_EQ(SSL_renegotiate(m.ssl), 1);
    ERR_clear_error();
    SSL_do_handshake(m.ssl); /* sends the new ClientHello */
    ASSERT(mc_flush(&m));
    bytes b = {0};
    int end = mc_read(&m, &b, 1);
    ASSERT_EQ(end, MC_ERR);
    ASSERT(strstr(ssl_errs(), "renegotiation"));
    mc_flush(&m); /* its fatal alert */
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    ASSERT_EQ(v.arg.pool[0].handshakes, 1);
    assert_reason(&v.arg.pool[0], EM_ETLS, "libem server");
    mc_free(&m);
    bytes_free(&b);
    srv_done(&v, r);
}

/* A TLS 1.2 server asks a libem client to renegotiate (HelloRequest):
 * the client refuses; data still flows and no second handshake runs. */
TEST(server_renegotiation_request_refused_by_client_tls12)
{
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 4, &port);
    em_tls_opts co = tls_client_opts();
    rec cli = {.tls = &co, .store = true};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    ASSERT(drive(r, rec_completed_pred, &cli, 5));
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(fd, 0);
    mc m;
    mc_setup(&m, r, fd, true, TLS1_2_VERSION);
    mc_handshake(&m);
    ASSERT(drive(r, rec_handshaken, &cli, 5));
    ASSERT_EQ(SSL_renegotiate(m.ssl), 1);
    ERR_clear_error();
    SSL_do_handshake(m.ssl); /* the HelloRequest */
    ASSERT(mc_flush(&m));
    mc_write(&m, "after", 5);
    for (double end = now_mono() + 5; cli.len < 5 && !cli.unbinds && now_mono() < end;)
        turn(r);
    ASSERT_EQ(cli.handshakes, 1);
    if (cli.unbinds)
        FAIL("the client ended on a HelloRequest: %d (%s) \"%s\"", cli.reason,
             em_strerror(cli.reason), cli.tls_error);
    ASSERT_EQ(cli.len, 5);
    ASSERT(memcmp(cli.buf, "after", 5) == 0);
    close_conn(cli.conn, false);
    ASSERT(drive(r, rec_unbound, &cli, 5));
    mc_free(&m);
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
}

/* A record whose authentication tag is wrong, after the handshake: the
 * connection fails with EM_ETLS, nothing of it is delivered, and libem
 * does not pretend a clean end (no close_notify). */
TEST(corrupted_record_after_handshake)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    mc_ping(&m);
    bytes rec_bytes = {0};
    mc_seal(&m, "tampered", 8, &rec_bytes);
    rec_bytes.p[rec_bytes.n - 1] ^= 0x01;
    ASSERT(mc_send_raw(&m, rec_bytes.p, rec_bytes.n));
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reason(&v.arg.pool[0], EM_ETLS, "libem server");
    ASSERT_EQ(v.arg.pool[0].bytes_in, 4);
    ASSERT(v.arg.pool[0].tls_error[0] != '\0');
    bytes b = {0};
    ASSERT_NE(mc_read(&m, &b, 1), MC_CLOSE_NOTIFY);
    ASSERT_EQ(b.n, 0);
    mc_free(&m);
    bytes_free(&b);
    bytes_free(&rec_bytes);
    srv_done(&v, r);
}

/* The peer asks, then says close_notify at once: what libem queues in
 * answer after that is still sent, then its close_notify. */
static void answer_1mib(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    (void)d;
    (void)n;
    char *b = malloc(MIB);
    ASSERT_NOT_NULL(b);
    for (size_t i = 0; i < MIB; i++)
        b[i] = (char)pattern_byte(i);
    ASSERT_EQ(em_send_data(c, b, MIB), 0);
    free(b);
}

TEST(peer_close_notify_while_answer_queued)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.on_data = answer_1mib;
    srv_start(&v, r, 1, false);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    mc_write(&m, "go", 2);
    mc_shutdown(&m);
    bytes b = {0};
    ASSERT_EQ(mc_read(&m, &b, MIB), MC_OK);
    ASSERT_EQ(b.n, MIB);
    assert_pattern(b.p, b.n);
    ASSERT_EQ(mc_read(&m, &b, MIB + 1), MC_CLOSE_NOTIFY);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reason(&v.arg.pool[0], 0, "libem server");
    mc_free(&m);
    bytes_free(&b);
    srv_done(&v, r);
}

static void send_8mib(em_conn *c, rec *x)
{
    (void)x;
    char *b = malloc(MIB);
    ASSERT_NOT_NULL(b);
    for (size_t i = 0; i < MIB; i++)
        b[i] = (char)pattern_byte(i);
    for (int i = 0; i < 8; i++)
        ASSERT_EQ(em_send_data(c, b, MIB), 0);
    free(b);
}

static bool out_has_64k(void *arg)
{
    proc *p = arg;
    return p->o.n >= 64 * 1024 || p->exited;
}

/* s_client killed while libem is writing to it: never 0. */
TEST(s_client_killed_while_server_writes)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.on_handshake = send_8mib;
    srv_start(&v, r, 1, false);
    proc p;
    s_client_start(&p, v.port, NULL, NULL, NULL);
    ASSERT(drive(r, out_has_64k, &p, 10));
    ASSERT(!p.exited);
    proc_stop(&p);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    rec *s = &v.arg.pool[0];
    if (s->reason != ECONNRESET && s->reason != EPIPE && s->reason != EM_ETLS_TRUNCATED)
        FAIL("libem server: unbind %d (%s) \"%s\", expected ECONNRESET, EPIPE or "
             "EM_ETLS_TRUNCATED",
             s->reason, em_strerror(s->reason), s->tls_error);
    proc_free(&p);
    srv_done(&v, r);
    assert_no_children();
}

/* GnuTLS limited to TLS 1.2, both ways. */
TEST(gnutls_cli_tls12_to_libem_server)
{
    char proto[32] = "";
    em_reactor *r = new_reactor();
    srv v = {0};
    bytes data = {0};
    make_lines(&data, 16 * 1024);
    v.arg.echo = true;
    v.arg.on_handshake = note_protocol;
    v.arg.ctx = proto;
    srv_start(&v, r, 1, false);
    proc p;
    gnutls_cli_start(&p, v.port, "--priority=NORMAL:-VERS-ALL:+VERS-TLS1.2");
    proc_feed(&p, data.p, data.n, true);
    if (!drive(r, proc_done, &p, 15))
        FAIL("gnutls-cli did not finish: %s", proc_diag(&p));
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    if (proc_exit_code(&p) != 0)
        FAIL("gnutls-cli exit status %d: %s", proc_exit_code(&p), proc_diag(&p));
    ASSERT_STREQ(proto, "TLSv1.2");
    assert_reason(&v.arg.pool[0], 0, "libem server");
    ASSERT_EQ(p.o.n, data.n);
    ASSERT(memcmp(p.o.p, data.p, data.n) == 0);
    proc_free(&p);
    srv_done(&v, r);
    bytes_free(&data);
    assert_no_children();
}

TEST(libem_client_to_gnutls_serv_tls12)
{
    char proto[32] = "";
    em_reactor *r = new_reactor();
    int port = free_port();
    proc p;
    gnutls_serv_spawn(&p, port, "--priority=NORMAL:-VERS-ALL:+VERS-TLS1.2");
    wait_listen(r, port, &p);
    bytes data = {0};
    make_lines(&data, 16 * 1024);
    client_lines = &data;
    expect_back = data.n;
    em_tls_opts co = tls_client_opts();
    rec cli = {.tls = &co,
               .store = true,
               .on_handshake = send_lines,
               .on_data = close_when_all_back,
               .ctx = proto};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    if (!drive(r, rec_unbound, &cli, 15))
        FAIL("libem client not done (%zu bytes): %s", cli.len, proc_diag(&p));
    ASSERT_STREQ(proto, "TLSv1.2");
    assert_reason(&cli, 0, "libem client");
    ASSERT_EQ(cli.len, data.n);
    ASSERT(memcmp(cli.buf, data.p, data.n) == 0);
    proc_free(&p);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
    bytes_free(&data);
    assert_no_children();
}

/* Three s_clients at once on one libem server, each with its own data. */
TEST(three_s_clients_at_once)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.echo = true;
    srv_start(&v, r, 3, false);
    proc p[3];
    bytes data[3] = {{0}};
    for (int i = 0; i < 3; i++) {
        char head[32];
        int k = snprintf(head, sizeof head, "client %d\n", i);
        bytes_add(&data[i], head, (size_t)k);
        make_lines(&data[i], 20000 + 5000 * (size_t)i);
        s_client_start(&p[i], v.port, NULL, NULL, NULL);
        proc_feed(&p[i], data[i].p, data[i].n, false);
    }
    /* each gets its echo back, then is killed (s_client -quiet never
     * closes by itself) */
    double end = now_mono() + 15;
    for (int i = 0; i < 3; i++) {
        while (p[i].o.n < data[i].n && !p[i].exited && now_mono() < end)
            turn(r);
        if (p[i].o.n != data[i].n || memcmp(p[i].o.p, data[i].p, data[i].n) != 0)
            FAIL("s_client %d: %zu of %zu bytes back: %s", i, p[i].o.n, data[i].n,
                 proc_diag(&p[i]));
    }
    for (int i = 0; i < 3; i++)
        proc_free(&p[i]);
    for (int i = 0; i < 3; i++) {
        ASSERT(drive(r, rec_unbound, &v.arg.pool[i], 5));
        ASSERT_EQ(v.arg.pool[i].handshakes, 1);
        assert_reason(&v.arg.pool[i], EM_ETLS_TRUNCATED, "libem server");
        bytes_free(&data[i]);
    }
    srv_done(&v, r);
    assert_no_children();
}

/* The whole client side of the handshake one byte per TCP segment, the
 * reactor reading between them. */
TEST(handshake_one_byte_at_a_time)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, 0);
    m.dribble = true;
    mc_handshake(&m);
    mc_ping(&m);
    m.dribble = false;
    mc_ping(&m);
    mc_shutdown(&m);
    mc_close(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    ASSERT_EQ(v.arg.pool[0].handshakes, 1);
    assert_reason(&v.arg.pool[0], 0, "libem server");
    ASSERT_EQ(v.arg.pool[0].bytes_in, 8);
    mc_free(&m);
    srv_done(&v, r);
}

/* TLS 1.3: the client's Finished and its first record in one segment;
 * the record is delivered without waiting for more bytes. */
TEST(finished_and_data_in_one_segment_tls13)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.store = true;
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, TLS1_3_VERSION);
    bytes out = {0};
    double deadline = now_mono() + 10;
    for (;;) { /* the handshake, holding back the last flight */
        ERR_clear_error();
        int rc = SSL_do_handshake(m.ssl);
        if (rc == 1)
            break;
        ASSERT_EQ(SSL_get_error(m.ssl, rc), SSL_ERROR_WANT_READ);
        ASSERT(mc_flush(&m));
        ASSERT(mc_fill(&m));
        ASSERT(now_mono() < deadline);
    }
    mc_take(&m, &out); /* Finished */
    ASSERT_GT(out.n, 0);
    mc_seal(&m, "together", 8, &out);
    ASSERT(mc_send_raw(&m, out.p, out.n));
    if (!drive(r, got_pong, &v.arg.pool[0], 3)) /* 4 bytes or more */
        FAIL("the record that came with Finished was not delivered (%zu bytes)", v.arg.pool[0].len);
    for (double end = now_mono() + 2; v.arg.pool[0].len < 8 && now_mono() < end;)
        turn(r);
    ASSERT_EQ(v.arg.pool[0].len, 8);
    ASSERT(memcmp(v.arg.pool[0].buf, "together", 8) == 0);
    ASSERT_EQ(v.arg.pool[0].handshakes, 1);
    mc_shutdown(&m);
    mc_close(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    mc_free(&m);
    bytes_free(&out);
    srv_done(&v, r);
}

/* em_close_connection(c, false) on a TLS connection: with nothing queued
 * it is a clean close (close_notify); with data dropped it must not say
 * close_notify, or the peer would take a cut stream for a whole one. */
static bool immediate_close_drops;
static void queue_then_close_now(em_conn *c, rec *x)
{
    (void)x;
    if (immediate_close_drops) {
        char *b = calloc(1, 8 * MIB);
        ASSERT_NOT_NULL(b);
        ASSERT_EQ(em_send_data(c, b, 8 * MIB), 0);
        free(b);
        ASSERT_GT(em_get_outbound_data_size(c), 0);
    }
    ASSERT_EQ(close_conn(c, false), 0);
}

static void immediate_close(bool drops)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    immediate_close_drops = drops;
    srv_start(&v, r, 1, false);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    ASSERT(drive(r, rec_handshaken, &v.arg.pool[0], 5));
    queue_then_close_now(v.arg.pool[0].conn, &v.arg.pool[0]);
    bytes b = {0};
    int end = mc_read(&m, &b, 16 * MIB);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    assert_reason(&v.arg.pool[0], 0, "libem server");
    if (drops) {
        ASSERT_LT(b.n, 8 * MIB);
        if (end == MC_CLOSE_NOTIFY)
            FAIL("close_notify after dropping %zu bytes: the cut looks like a clean end",
                 (size_t)(8 * MIB - b.n));
        ASSERT(end == MC_EOF || end == MC_ERR);
    } else {
        ASSERT_EQ(b.n, 0);
        ASSERT_EQ(end, MC_CLOSE_NOTIFY);
    }
    mc_free(&m);
    bytes_free(&b);
    srv_done(&v, r);
}

TEST(immediate_close_with_nothing_queued_sends_close_notify)
{
    immediate_close(false);
}
TEST(immediate_close_dropping_data_sends_no_close_notify)
{
    immediate_close(true);
}

/* Client side: the server closes, or answers plaintext, during the
 * handshake. */
static void client_vs_raw_server(const char *answer, bool reset)
{
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 4, &port);
    em_tls_opts co = tls_client_opts();
    rec cli = {.tls = &co};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    ASSERT(drive(r, rec_completed_pred, &cli, 5));
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(fd, 0);
    unsigned char hello[4096];
    set_nonblock(fd);
    ssize_t got = -1;
    for (double end = now_mono() + 5; got <= 0 && now_mono() < end;) {
        got = recv(fd, hello, sizeof hello, 0);
        if (got <= 0)
            turn(r);
    }
    ASSERT_GT(got, 0);
    ASSERT_EQ(hello[0], 0x16);
    if (answer)
        raw_send_some(r, fd, answer, strlen(answer));
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd);
    ASSERT(drive(r, rec_unbound, &cli, 5));
    assert_reason(&cli, EM_ETLS, "libem client");
    ASSERT_EQ(cli.handshakes, 0);
    ASSERT(cli.tls_error[0] != '\0');
    close(lfd);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
}

TEST(server_closes_during_handshake_client_side)
{
    client_vs_raw_server(NULL, false);
}
TEST(server_resets_during_handshake_client_side)
{
    client_vs_raw_server(NULL, true);
}
TEST(server_answers_plaintext_http_client_side)
{
    client_vs_raw_server("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", false);
}

/* em_close_write and em_close_connection_after_writing called before the
 * handshake completes (right after em_start_tls): the data goes after the
 * handshake, then close_notify. */
static void early_then_close_write(em_conn *c, rec *x)
{
    ASSERT_EQ(x->tls_rc, 0);
    ASSERT_EQ(em_send_data(c, "early", 5), 0);
    ASSERT_EQ(em_close_write(c), 0);
}

static void early_then_close_after_writing(em_conn *c, rec *x)
{
    ASSERT_EQ(x->tls_rc, 0);
    ASSERT_EQ(em_send_data(c, "early", 5), 0);
    ASSERT_EQ(em_close_connection_after_writing(c), 0);
}

static void close_before_handshake(bool half)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    /* the echo only for the half close: a client that closed after
     * writing cannot take it */
    v.arg.echo = half;
    v.arg.store = true;
    srv_start(&v, r, 1, false);
    em_tls_opts co = tls_client_opts();
    rec cli = {.tls = &co,
               .store = true,
               .on_post_init = half ? early_then_close_write : early_then_close_after_writing};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", v.port, &rec_handler, &cli));
    ASSERT(drive(r, rec_unbound, &cli, 10));
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    rec *s = &v.arg.pool[0];
    ASSERT_EQ(cli.handshakes, 1);
    ASSERT_EQ(s->handshakes, 1);
    ASSERT_EQ(s->len, 5);
    ASSERT(memcmp(s->buf, "early", 5) == 0);
    assert_reason(s, 0, "libem server"); /* close_notify came */
    assert_reason(&cli, 0, "libem client");
    if (half) { /* still reading: the echo came back */
        ASSERT_EQ(cli.len, 5);
        ASSERT(memcmp(cli.buf, "early", 5) == 0);
    }
    srv_done(&v, r);
    rec_free(&cli);
}

TEST(close_write_before_handshake)
{
    close_before_handshake(true);
}
TEST(close_after_writing_before_handshake)
{
    close_before_handshake(false);
}

/* em_set_pending_connect_timeout called after em_start_tls, during the
 * handshake (rec_handler starts TLS before on_post_init runs): the
 * handshake is bounded by the value set. */
static void pending_timeout_after_start(em_conn *c, rec *x)
{
    ASSERT_EQ(x->tls_rc, 0);
    ASSERT_EQ(em_set_pending_connect_timeout(c, 0.3), 0);
}

TEST(handshake_timeout_set_after_start_tls)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.on_post_init = pending_timeout_after_start;
    srv_start(&v, r, 1, false);
    double t0 = now_mono();
    int fd = tcp_connect_raw("127.0.0.1", v.port);
    bool ended = drive(r, rec_unbound, &v.arg.pool[0], 3);
    double took = now_mono() - t0;
    close(fd);
    if (!ended)
        FAIL("pending-connect timeout 0.3 s set after em_start_tls: the handshake still runs "
             "after 3 s (the handshake timer keeps the value em_start_tls saw)");
    assert_reason(&v.arg.pool[0], ETIMEDOUT, "libem server");
    ASSERT_DBL_LE(took, 1.5);
    srv_done(&v, r);
}

/* The peer says close_notify and closes its socket; libem's answer, queued
 * after that, cannot be delivered (the peer's kernel resets). The unbind
 * reason is the failed write's errno (EPIPE or ECONNRESET): not 0, since
 * the answer was lost, and not EM_ETLS, which says the handshake or
 * verification failed. */
TEST(write_error_after_peer_close_notify_is_errno)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.on_data = answer_1mib;
    srv_start(&v, r, 1, false);
    mc m;
    mc_connect(&m, r, v.port, 0);
    mc_handshake(&m);
    mc_write(&m, "go", 2);
    mc_shutdown(&m);
    mc_close(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    rec *s = &v.arg.pool[0];
    if (s->reason != EPIPE && s->reason != ECONNRESET)
        FAIL("libem server: unbind %d (%s) \"%s\", expected EPIPE or ECONNRESET", s->reason,
             em_strerror(s->reason), s->tls_error);
    mc_free(&m);
    srv_done(&v, r);
}

/* TLS 1.3 HelloRetryRequest: the client's key share (P-256) is not in the
 * server's groups (X25519 only), so the server asks again and the client
 * sends a second ClientHello. */
static int client_hellos;
static void count_client_hellos(int write_p, int version, int content_type, const void *buf,
                                size_t len, SSL *ssl, void *arg)
{
    (void)version;
    (void)ssl;
    (void)arg;
    if (write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 &&
        ((const unsigned char *)buf)[0] == SSL3_MT_CLIENT_HELLO)
        client_hellos++;
}

TEST(hello_retry_request_tls13)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.echo = true;
    srv_start(&v, r, 1, false);
    /* srv_start set v.so; the pool's recs point at it: change the groups */
    v.so.ecdh_curve = "X25519";
    mc m;
    mc_connect(&m, r, v.port, TLS1_3_VERSION);
    ASSERT_EQ(SSL_set1_groups_list(m.ssl, "P-256:X25519"), 1);
    SSL_set_msg_callback(m.ssl, count_client_hellos);
    client_hellos = 0;
    mc_handshake(&m);
    ASSERT_EQ(client_hellos, 2);
    mc_ping(&m);
    mc_shutdown(&m);
    mc_close(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    ASSERT_EQ(v.arg.pool[0].tls_rc, 0);
    ASSERT_EQ(v.arg.pool[0].handshakes, 1);
    assert_reason(&v.arg.pool[0], 0, "libem server");
    mc_free(&m);
    srv_done(&v, r);
}

/* The same Finished-and-data segment, arriving while the server has
 * something to write: the reactor's flush, before it polls, runs the
 * handshake step that reads the Finished, and OpenSSL's read-ahead takes
 * the data record with it into its buffer. The socket is then empty, so
 * no poller reports it: the record must still be delivered. (s_client
 * sending its stdin right after its Finished hits this by chance:
 * data_before_handshake_libem_server_to_s_client hangs then.) */
TEST(finished_and_data_in_one_segment_while_server_writes)
{
    em_reactor *r = new_reactor();
    srv v = {0};
    v.arg.store = true;
    srv_one(&v, r);
    mc m;
    mc_connect(&m, r, v.port, TLS1_3_VERSION);
    bytes out = {0};
    double deadline = now_mono() + 10;
    for (;;) { /* the handshake, holding back the last flight */
        ERR_clear_error();
        int rc = SSL_do_handshake(m.ssl);
        if (rc == 1)
            break;
        ASSERT_EQ(SSL_get_error(m.ssl, rc), SSL_ERROR_WANT_READ);
        ASSERT(mc_flush(&m));
        ASSERT(mc_fill(&m));
        ASSERT(now_mono() < deadline);
    }
    ASSERT_EQ(v.arg.pool[0].handshakes, 0);
    /* the server has something to write: its next turn flushes first */
    ASSERT_EQ(em_send_data(v.arg.pool[0].conn, "hi", 2), 0);
    mc_take(&m, &out); /* Finished */
    mc_seal(&m, "together", 8, &out);
    ASSERT(mc_send_raw(&m, out.p, out.n));
    for (double end = now_mono() + 3; v.arg.pool[0].len < 8 && now_mono() < end;)
        turn(r);
    ASSERT_EQ(v.arg.pool[0].handshakes, 1);
    if (v.arg.pool[0].len != 8)
        FAIL("the record that came with Finished is not delivered after 3 s (%zu bytes); "
             "it waits in OpenSSL's read-ahead buffer",
             v.arg.pool[0].len);
    ASSERT(memcmp(v.arg.pool[0].buf, "together", 8) == 0);
    mc_shutdown(&m);
    mc_close(&m);
    ASSERT(drive(r, rec_unbound, &v.arg.pool[0], 5));
    mc_free(&m);
    bytes_free(&out);
    srv_done(&v, r);
}

/* The client side of the same: a TLS 1.2 server's last flight (its
 * Finished) and its first record in one segment, arriving while the libem
 * client has something to write. */
TEST(server_finished_and_data_in_one_segment_while_client_writes_tls12)
{
    em_reactor *r = new_reactor();
    int port;
    int lfd = tcp_listen_raw("127.0.0.1", 4, &port);
    em_tls_opts co = tls_client_opts();
    rec cli = {.tls = &co, .store = true};
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", port, &rec_handler, &cli));
    ASSERT(drive(r, rec_completed_pred, &cli, 5));
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(fd, 0);
    mc m;
    mc_setup(&m, r, fd, true, TLS1_2_VERSION);
    double deadline = now_mono() + 10;
    for (;;) { /* the server's handshake, holding back its last flight */
        ERR_clear_error();
        int rc = SSL_do_handshake(m.ssl);
        if (rc == 1)
            break;
        ASSERT_EQ(SSL_get_error(m.ssl, rc), SSL_ERROR_WANT_READ);
        ASSERT(mc_flush(&m));
        ASSERT(mc_fill(&m));
        ASSERT(now_mono() < deadline);
    }
    ASSERT_EQ(cli.handshakes, 0);
    ASSERT_EQ(em_send_data(cli.conn, "hi", 2), 0); /* the client's next turn flushes first */
    bytes out = {0};
    mc_take(&m, &out); /* ChangeCipherSpec, Finished */
    mc_seal(&m, "together", 8, &out);
    ASSERT(mc_send_raw(&m, out.p, out.n));
    for (double end = now_mono() + 3; cli.len < 8 && now_mono() < end;)
        turn(r);
    ASSERT_EQ(cli.handshakes, 1);
    if (cli.len != 8)
        FAIL("the record that came with the server's Finished is not delivered after 3 s "
             "(%zu bytes); it waits in OpenSSL's read-ahead buffer",
             cli.len);
    ASSERT(memcmp(cli.buf, "together", 8) == 0);
    close_conn(cli.conn, false);
    ASSERT(drive(r, rec_unbound, &cli, 5));
    mc_free(&m);
    close(lfd);
    bytes_free(&out);
    REACTOR_FREE_CHECKED(r);
    rec_free(&cli);
}
