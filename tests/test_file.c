/* Files on stream connections: em_send_file_data and em_stream_file_data.
 *
 * The fixture makes the files once, in a temporary directory it removes at
 * the end: 0 B, 1 B, 5 KB and 64 MiB of pattern bytes, and a sparse 1 GiB
 * file (ftruncate) with pattern bytes at its start, middle and end; it
 * keeps each file's checksum, computed by reading the file back. Cases
 * that need other files (distinct contents, one to truncate, an unreadable
 * one, a FIFO) make them there too, under names of their own, so that the
 * runner removes them even after a failure.
 *
 * The sending end is a connection accepted by a libem server (TCP on
 * 127.0.0.1 and ::1, unix sockets) or libem's TLS; the reading end a raw
 * socket. Big transfers are read by a forked child that keeps a running
 * checksum, never the bytes (so 1 GiB costs no memory, and the sender's
 * memory can be measured alone), small ones in the test process. Every
 * em_ call a done callback must not run inside is made with in_call set.
 *
 * Some cases of this file also run under scripts/fault-inject.sh with
 * sendfile, sendmsg, sendto and writev failing with EINTR and EAGAIN.
 *
 * The four cases of the last section fail at 266fec1, each showing a
 * defect of libem (see there).
 */
#include "harness.h"
#include "tls_fixture.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <grp.h>
#include <limits.h>
#include <linux/sock_diag.h>
#include <time.h>
#include <unistd.h>

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)

extern char **environ;

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------ checksum
 *
 * Over 64-bit little-endian words of the byte stream, whatever pieces it
 * arrives in (a word may straddle two reads); position dependent, and
 * cheap enough for 1 GiB under ASan. */
typedef struct csum {
    uint64_t a, b, len, part;
} csum;

static uint64_t le64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

static void csum_word(csum *s, uint64_t w)
{
    s->a += w * 0x9E3779B97F4A7C15ull;
    s->b += s->a;
}

static void csum_add(csum *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    while (n && (s->len & 7)) {
        s->part |= (uint64_t)*p++ << (8 * (s->len++ & 7));
        n--;
        if (!(s->len & 7)) {
            csum_word(s, s->part);
            s->part = 0;
        }
    }
    for (; n >= 8; p += 8, n -= 8, s->len += 8)
        csum_word(s, le64(p));
    while (n--)
        s->part |= (uint64_t)*p++ << (8 * (s->len++ & 7));
}

static void csum_str(csum *s, const char *str) { csum_add(s, str, strlen(str)); }

static uint64_t csum_value(const csum *s)
{
    csum t = *s;
    if (t.len & 7)
        csum_word(&t, t.part);
    return t.b ^ (t.a << 1) ^ (t.len * 0xC2B2AE3D27D4EB4Full);
}

static void csum_zeros(csum *s, uint64_t n)
{
    static const unsigned char zeros[1 << 16];
    for (; n; n -= n < sizeof zeros ? n : sizeof zeros)
        csum_add(s, zeros, n < sizeof zeros ? (size_t)n : sizeof zeros);
}

/* Adds the whole of the file at path: its data read, its holes (which read
 * as zeros) added as zeros, sparing the kernel a GiB of zeroed pages. */
static void csum_file(csum *s, const char *path)
{
    static unsigned char buf[1 << 20];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        FAIL("open %s: %s", path, strerror(errno));
    off_t pos = 0, data;
    while ((data = lseek(fd, pos, SEEK_DATA)) >= 0) {
        csum_zeros(s, (uint64_t)(data - pos));
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0)
            FAIL("SEEK_HOLE %s: %s", path, strerror(errno));
        for (pos = data; pos < hole;) {
            size_t want = hole - pos < (off_t)sizeof buf ? (size_t)(hole - pos) : sizeof buf;
            ssize_t n = pread(fd, buf, want, pos);
            if (n <= 0)
                FAIL("read %s: %s", path, n ? strerror(errno) : "short file");
            csum_add(s, buf, (size_t)n);
            pos += n;
        }
    }
    if (errno != ENXIO)
        FAIL("SEEK_DATA %s: %s", path, strerror(errno));
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    csum_zeros(s, (uint64_t)(st.st_size - pos)); /* a hole at the end */
    close(fd);
}

/* ------------------------------------------- HTTP/1.1 chunked decoding */

enum { D_SIZE, D_SIZE_LF, D_DATA, D_DATA_CR, D_DATA_LF, D_END_CR, D_END_LF, D_DONE, D_BAD };

typedef struct dechunk {
    int state;
    int digits, chunks; /* digits of the size line read; chunks with data */
    uint64_t size, left;
    const char *why;    /* the framing error, at D_BAD */
} dechunk;

static int hex_value(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static void dechunk_bad(dechunk *d, const char *why)
{
    d->state = D_BAD;
    d->why = why;
}

/* One byte of framing (not chunk data). */
static void dechunk_byte(dechunk *d, int ch)
{
    switch (d->state) {
    case D_SIZE:
        if (hex_value(ch) >= 0 && d->digits < 16) {
            d->size = d->size * 16 + (uint64_t)hex_value(ch);
            d->digits++;
        } else if (ch == '\r' && d->digits) {
            d->state = D_SIZE_LF;
        } else {
            dechunk_bad(d, "bad chunk-size line");
        }
        break;
    case D_SIZE_LF:
        if (ch != '\n')
            dechunk_bad(d, "chunk-size not ended by CRLF");
        else if (d->size)
            d->left = d->size, d->chunks++, d->state = D_DATA;
        else
            d->state = D_END_CR;
        break;
    case D_DATA_CR:
        if (ch == '\r')
            d->state = D_DATA_LF;
        else
            dechunk_bad(d, "chunk data not followed by CRLF");
        break;
    case D_DATA_LF:
        if (ch == '\n')
            d->state = D_SIZE, d->size = 0, d->digits = 0;
        else
            dechunk_bad(d, "chunk data not followed by CRLF");
        break;
    case D_END_CR:
        if (ch == '\r')
            d->state = D_END_LF;
        else
            dechunk_bad(d, "trailer section not empty");
        break;
    case D_END_LF:
        if (ch == '\n')
            d->state = D_DONE;
        else
            dechunk_bad(d, "last chunk not ended by CRLF");
        break;
    }
}

/* Feeds raw bytes; chunk data goes to out. Returns the bytes it took:
 * fewer than n only once the message ended (D_DONE) or was bad. */
static size_t dechunk_feed(dechunk *d, const unsigned char *p, size_t n,
                           void (*out)(void *arg, const unsigned char *p, size_t n), void *arg)
{
    size_t i = 0;
    while (i < n && d->state != D_DONE && d->state != D_BAD) {
        if (d->state != D_DATA) {
            dechunk_byte(d, p[i++]);
            continue;
        }
        size_t take = n - i < d->left ? n - i : (size_t)d->left;
        out(arg, p + i, take);
        i += take;
        d->left -= take;
        if (!d->left)
            d->state = D_DATA_CR;
    }
    return i;
}

/* ---------------------------------------------------------------- sink
 *
 * What a reading end makes of the bytes it reads: their count, the
 * checksum of the payload (the chunk data when decoding), the first bytes
 * as they came, and optionally whether the payload follows the pattern. */
typedef struct sink {
    bool chunked;
    dechunk dec;
    csum sum;      /* of the payload */
    uint64_t raw;  /* bytes read */
    uint64_t extra; /* bytes after the last chunk */
    unsigned char *keep;
    size_t keep_cap, kept;
    bool check_pattern;
    uint64_t pattern_base;
    int64_t bad_at; /* payload offset of the first byte off the pattern; -1 */
    bool eof;
    int err;
} sink;

static void sink_init(sink *s, bool chunked, unsigned char *keep, size_t keep_cap)
{
    *s = (sink){.chunked = chunked, .keep = keep, .keep_cap = keep_cap, .bad_at = -1};
}

static void sink_payload(void *arg, const unsigned char *p, size_t n)
{
    sink *s = arg;
    if (s->check_pattern && s->bad_at < 0) {
        for (size_t i = 0; i < n; i++) {
            if (p[i] != pattern_byte(s->pattern_base + s->sum.len + i)) {
                s->bad_at = (int64_t)(s->sum.len + i);
                break;
            }
        }
    }
    csum_add(&s->sum, p, n);
}

static void sink_feed(sink *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    if (s->kept < s->keep_cap) {
        size_t k = n < s->keep_cap - s->kept ? n : s->keep_cap - s->kept;
        memcpy(s->keep + s->kept, p, k);
        s->kept += k;
    }
    s->raw += n;
    if (!s->chunked) {
        sink_payload(s, p, n);
        return;
    }
    s->extra += n - dechunk_feed(&s->dec, p, n, sink_payload, s);
}

/* A chunked message decoded whole: its last chunk seen, nothing after it. */
static void expect_decoded(const sink *s, uint64_t size)
{
    if (s->dec.state != D_DONE)
        FAIL("chunked decoding: %s after %llu raw bytes (state %d)",
             s->dec.why ? s->dec.why : "no last chunk", (unsigned long long)s->raw,
             s->dec.state);
    ASSERT_EQ(s->extra, 0);
    ASSERT_EQ(s->dec.chunks, size ? 1 : 0);
}

/* ---------------------------------------------------------------- files */

enum { F_EMPTY, F_ONE, F_5K, F_64M, F_1G, NFILES };

typedef struct tfile {
    const char *name;
    uint64_t size;
    uint64_t base; /* its bytes are pattern_byte(base + offset), or 0 in holes */
    uint64_t sum;  /* checksum of the file read back */
    char path[192];
} tfile;

static tfile files[NFILES] = {
    [F_EMPTY] = {"empty", 0, 0, 0, ""},
    [F_ONE] = {"one", 1, 101, 0, ""},
    [F_5K] = {"5k", 5000, 202, 0, ""},
    [F_64M] = {"64m", 64 * MiB, 303, 0, ""},
    [F_1G] = {"sparse-1g", GiB, 404, 0, ""},
};
static char file_dir[64];

static void pwrite_pattern(int fd, uint64_t off, uint64_t len, uint64_t base)
{
    static unsigned char buf[1 << 20];
    while (len) {
        size_t n = len < sizeof buf ? (size_t)len : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern_byte(base + off + i);
        ssize_t w = pwrite(fd, buf, n, (off_t)off);
        if (w <= 0)
            FAIL("pwrite: %s", strerror(errno));
        off += (uint64_t)w;
        len -= (uint64_t)w;
    }
}

/* A file of size pattern bytes (sparse: a hole but for three runs of them,
 * one at each end and one straddling the middle, unaligned). */
static void make_file(const char *path, uint64_t size, uint64_t base, bool sparse)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        FAIL("create %s: %s", path, strerror(errno));
    if (sparse) {
        if (ftruncate(fd, (off_t)size) != 0)
            FAIL("ftruncate %s: %s", path, strerror(errno));
        pwrite_pattern(fd, 0, 4096, base);
        pwrite_pattern(fd, size / 2 - 3, 100000, base);
        pwrite_pattern(fd, size - 4097, 4097, base);
    } else {
        pwrite_pattern(fd, 0, size, base);
    }
    close(fd);
}

static uint64_t file_sum(const char *path)
{
    csum s = {0};
    csum_file(&s, path);
    return csum_value(&s);
}

/* The fixture: the TLS certificates and the files. The directory lets
 * others in (the unreadable-file case reads as nobody). */
static void files_make(void)
{
    tls_certs_make();
    make_tmpdir(file_dir, sizeof file_dir);
    if (chmod(file_dir, 0755) != 0)
        FAIL("chmod %s: %s", file_dir, strerror(errno));
    for (int i = 0; i < NFILES; i++) {
        tfile *f = &files[i];
        snprintf(f->path, sizeof f->path, "%s/%s", file_dir, f->name);
        make_file(f->path, f->size, f->base, i == F_1G);
        f->sum = file_sum(f->path);
    }
}

static void files_remove(void)
{
    rm_tmpdir(file_dir);
    tls_certs_remove();
}

__attribute__((constructor)) static void file_fixture_register(void)
{
    test_set_fixture(files_make, files_remove);
}

/* The path of a case's own file (or socket) in the fixture's directory,
 * which the runner removes after the last case even when a case failed
 * (a directory of the case's own would then stay behind). What an earlier
 * case of the same name left there is removed first. */
static char *case_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", file_dir, name);
    if (unlink(buf) != 0 && errno != ENOENT)
        FAIL("unlink %s: %s", buf, strerror(errno));
    return buf;
}

static void case_unlink(const char *path)
{
    if (unlink(path) != 0)
        FAIL("unlink %s: %s", path, strerror(errno));
}

/* The bytes of a file of pattern bytes, in memory (small files only). */
static unsigned char *pattern_bytes(uint64_t base, size_t size)
{
    unsigned char *p = malloc(size ? size : 1);
    ASSERT_NOT_NULL(p);
    for (size_t i = 0; i < size; i++)
        p[i] = pattern_byte(base + i);
    return p;
}

/* The chunked framing libem puts around a file of size bytes. */
static void chunk_head(char *buf, size_t cap, uint64_t size)
{
    if (size)
        snprintf(buf, cap, "%llx\r\n", (unsigned long long)size);
    else
        buf[0] = '\0';
}

static const char *chunk_tail(uint64_t size) { return size ? "\r\n0\r\n\r\n" : "0\r\n\r\n"; }

static uint64_t chunked_len(uint64_t size)
{
    char head[32];
    chunk_head(head, sizeof head, size);
    return strlen(head) + size + strlen(chunk_tail(size));
}

/* ------------------------------------------------- a reader in a child
 *
 * Reads the socket it is given until EOF (or close_after bytes) into a
 * sink in shared memory; the parent sees its progress as it goes. The
 * child closes every other descriptor, so that the sender's socket, once
 * libem closes it, is closed for real. */
typedef struct reader_cfg {
    bool chunked;
    size_t keep;           /* the first bytes kept */
    size_t slow_piece;     /* slow phase: reads of this many bytes... */
    double slow_gap;       /* ...this far apart... */
    double slow_secs;      /* ...for this long, from the fork */
    uint64_t close_after;  /* close after this many bytes; 0: read to EOF */
    bool check_pattern;
    uint64_t pattern_base;
} reader_cfg;

typedef struct reader_shared {
    _Atomic uint64_t got; /* bytes read so far */
    _Atomic int finished;
    sink s;
    unsigned char keep[];
} reader_shared;

typedef struct reader {
    pid_t pid;
    reader_shared *sh;
    size_t map_len;
} reader;

static unsigned char reader_buf[1 << 20]; /* touched in the children only */

static void reader_child(int fd, const reader_cfg *cfg, reader_shared *sh)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (fd != 3 && dup2(fd, 3) < 0)
        _exit(3);
    close_range(4, ~0u, 0);
    fd = 3;
    double t0 = now_mono();
    for (;;) {
        size_t want = sizeof reader_buf;
        if (cfg->slow_secs > 0 && now_mono() - t0 < cfg->slow_secs) {
            want = cfg->slow_piece;
            sleep_s(cfg->slow_gap);
        }
        if (cfg->close_after && want > cfg->close_after - sh->s.raw)
            want = (size_t)(cfg->close_after - sh->s.raw);
        ssize_t n = read(fd, reader_buf, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            sh->s.eof = n == 0;
            sh->s.err = n < 0 ? errno : 0;
            break;
        }
        sink_feed(&sh->s, reader_buf, (size_t)n);
        atomic_store(&sh->got, sh->s.raw);
        if (cfg->close_after && sh->s.raw >= cfg->close_after)
            break;
    }
    close(fd);
    atomic_store(&sh->finished, 1);
    _exit(0);
}

/* Forks the reader of fd; fd is the child's from then on (closed here). */
static void reader_start(reader *rd, int fd, const reader_cfg *cfg)
{
    rd->map_len = sizeof(reader_shared) + cfg->keep;
    void *m = mmap(NULL, rd->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT(m != MAP_FAILED);
    rd->sh = m;
    sink_init(&rd->sh->s, cfg->chunked, rd->sh->keep, cfg->keep);
    rd->sh->s.check_pattern = cfg->check_pattern;
    rd->sh->s.pattern_base = cfg->pattern_base;
    fflush(stdout);
    fflush(stderr);
    rd->pid = fork();
    ASSERT_GE(rd->pid, 0);
    if (rd->pid == 0)
        reader_child(fd, cfg, rd->sh);
    close(fd);
}

static uint64_t reader_got(const reader *rd) { return atomic_load(&rd->sh->got); }

/* Waits for the child to finish: it has what it reads, once the sender
 * has unbound. */
static void reader_wait(reader *rd, double timeout)
{
    double deadline = now_mono() + timeout;
    int st = 0;
    pid_t w;
    while ((w = waitpid(rd->pid, &st, WNOHANG)) == 0 && now_mono() < deadline)
        sleep_s(0.002);
    if (w == 0) {
        kill(rd->pid, SIGKILL);
        waitpid(rd->pid, &st, 0);
        FAIL("the reader did not finish in %.0f s: %llu bytes read", timeout,
             (unsigned long long)reader_got(rd));
    }
    ASSERT_EQ(w, rd->pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !atomic_load(&rd->sh->finished))
        FAIL("the reader failed: status %d", st);
}

static void reader_free(reader *rd)
{
    munmap(rd->sh, rd->map_len);
    rd->sh = NULL;
}

/* --------------------------------------------------- the sending end
 *
 * A libem server on 127.0.0.1, ::1 or a unix socket, and a raw client:
 * the accepted connection (x, c) sends, the raw socket (peer) reads. */
enum kind { TCP4, TCP6, UNIX_SOCK };
static const char *const kind_names[] = {"tcp 127.0.0.1", "tcp ::1", "unix"};

typedef struct sender {
    em_reactor *r;
    em_server *s;
    rec srv; /* the server's template */
    rec *x;  /* the accepted connection's */
    em_conn *c;
    int peer;
    em_conn_stats last; /* em_get_stats in unbind */
    int fd0;
} sender;

static void keep_last_stats(em_conn *c, rec *x, int reason)
{
    (void)reason;
    sender *p = x->ctx;
    ASSERT_EQ(em_get_stats(c, &p->last), 0);
}

static void sender_open(sender *p, int kind)
{
    *p = (sender){.fd0 = open_fd_count(), .peer = -1};
    p->r = new_reactor();
    p->srv = (rec){.tag = 1, .ctx = p, .on_unbind = keep_last_stats};
    rec_pool_new(&p->srv, 1);
    if (kind == UNIX_SOCK) {
        char path[128];
        case_path(path, sizeof path, "file.sock"); /* em_stop_server removes it */
        p->s = em_start_unix_server(p->r, path, &rec_handler, &p->srv);
        ASSERT_NOT_NULL(p->s);
        p->peer = unix_connect_raw(path);
    } else {
        const char *ip = kind == TCP6 ? "::1" : "127.0.0.1";
        p->s = em_start_server(p->r, ip, 0, &rec_handler, &p->srv);
        ASSERT_NOT_NULL(p->s);
        p->peer = tcp_connect_raw(ip, em_server_port(p->s));
    }
    ASSERT(run_until(p->r, &p->srv.pool_used, 5));
    p->x = &p->srv.pool[0];
    p->c = p->x->conn;
    ASSERT_NOT_NULL(p->c);
}

/* Closes what is still open, frees everything, checks for leaks. */
static void sender_finish(sender *p)
{
    if (p->x->conn)
        ASSERT_EQ(close_conn(p->x->conn, false), 0);
    ASSERT(run_until(p->r, &p->x->unbinds, 10));
    if (p->peer >= 0)
        close(p->peer);
    p->peer = -1;
    ASSERT_EQ(em_stop_server(p->s), 0);
    REACTOR_FREE_CHECKED(p->r);
    rec_free(&p->srv);
    ASSERT_NO_FD_LEAK(p->fd0);
}

static uint64_t bytes_out(em_conn *c)
{
    em_conn_stats st;
    ASSERT_EQ(em_get_stats(c, &st), 0);
    return st.bytes_out;
}

/* Reads what the peer has, without waiting. */
static void peer_pump(int fd, sink *s)
{
    static unsigned char buf[256 * 1024];
    while (!s->eof && !s->err) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0)
            sink_feed(s, buf, (size_t)n);
        else if (n == 0)
            s->eof = true;
        else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            s->err = errno;
        else if (errno != EINTR)
            break;
    }
}

/* Turns the reactor and reads the peer until pred or timeout. */
static bool pump_until(sender *p, sink *s, bool (*pred)(void *), void *arg, double timeout)
{
    double deadline = now_mono() + timeout;
    while (!pred(arg) && now_mono() < deadline) {
        ASSERT_GE(em_run_once(p->r, 0.002), 0);
        peer_pump(p->peer, s);
    }
    return pred(arg);
}

static bool sink_at_eof(void *arg) { return ((sink *)arg)->eof || ((sink *)arg)->err; }

typedef struct raw_at_least {
    sink *s;
    uint64_t n;
} raw_at_least;

static bool sink_has(void *arg)
{
    raw_at_least *w = arg;
    return w->s->raw >= w->n;
}

/* ------------------------------------------------------ done callbacks
 *
 * One fstream per em_stream_file_data call: how its done was called. The
 * order of all done calls is kept in done_seq. */
static int in_call;      /* inside an em_ call done must not run in */
static int done_seq[64]; /* fstream ids, in the order their done ran */
static int done_n;

typedef struct fstream fstream;
struct fstream {
    int id;
    int calls, err;
    bool after_unbind; /* the connection's unbind had run already */
    uint64_t out_at_done;    /* em_get_stats bytes_out when done ran */
    size_t queued_at_done;   /* em_get_outbound_data_size when done ran */
    void (*then)(em_conn *c, fstream *f); /* runs in done */
    void *ctx;
};

static void on_done(em_conn *c, int err, void *arg)
{
    fstream *f = arg;
    if (in_call)
        FAIL("done of file %d (err %d) ran inside an em_ call", f->id, err);
    rec *x = em_conn_user(c);
    ASSERT_NOT_NULL(x);
    f->calls++;
    f->err = err;
    f->after_unbind = x->unbinds > 0;
    f->out_at_done = bytes_out(c);
    f->queued_at_done = em_get_outbound_data_size(c);
    if (done_n < (int)(sizeof done_seq / sizeof done_seq[0]))
        done_seq[done_n++] = f->id;
    if (f->then)
        f->then(c, f);
}

static int stream_file(em_conn *c, const char *path, unsigned flags, fstream *f)
{
    in_call++;
    int rc = em_stream_file_data(c, path, flags, f ? on_done : NULL, f);
    in_call--;
    return rc;
}

static int send_file(em_conn *c, const char *path)
{
    in_call++;
    int rc = em_send_file_data(c, path);
    in_call--;
    return rc;
}

static int send_str(em_conn *c, const char *s)
{
    in_call++;
    int rc = em_send_data(c, s, strlen(s));
    in_call--;
    return rc;
}

static int close_after(em_conn *c)
{
    in_call++;
    int rc = em_close_connection_after_writing(c);
    in_call--;
    return rc;
}

static int close_now(em_conn *c)
{
    in_call++;
    int rc = close_conn(c, false);
    in_call--;
    return rc;
}

static void then_close_after_writing(em_conn *c, fstream *f)
{
    (void)f;
    ASSERT_EQ(close_after(c), 0);
}

/* Done once, with err, before unbind. */
static void expect_done(const fstream *f, int err)
{
    if (f->calls != 1 || f->err != err)
        FAIL("file %d: done called %d times, last with %d (%s); expected once with %d (%s)",
             f->id, f->calls, f->err, em_strerror(f->err), err, em_strerror(err));
    ASSERT(!f->after_unbind);
}

/* How many of this process's descriptors are open on path (an existing
 * file). */
static int fds_on(const char *path)
{
    char want[PATH_MAX], link_path[300], target[PATH_MAX];
    if (!realpath(path, want))
        FAIL("realpath %s: %s", path, strerror(errno));
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        FAIL("opendir /proc/self/fd: %s", strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        snprintf(link_path, sizeof link_path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(link_path, target, sizeof target - 1);
        if (len < 0)
            continue;
        target[len] = '\0';
        n += strcmp(target, want) == 0;
    }
    closedir(d);
    return n;
}

/* ================================================ 0. the test's tools */

/* The checksum tells a changed, swapped or missing byte, however the
 * bytes are split; the decoder takes libem's framing, byte by byte, and
 * refuses what is not chunked encoding. */
static uint64_t sum_of(const unsigned char *p, size_t n)
{
    csum s = {0};
    csum_add(&s, p, n);
    return csum_value(&s);
}

static sink decode_bytewise(const char *raw)
{
    sink s;
    sink_init(&s, true, NULL, 0);
    for (size_t i = 0; raw[i]; i++)
        sink_feed(&s, raw + i, 1);
    return s;
}

TEST(checksum_and_decoder_self_check)
{
    const size_t n = 100003;
    unsigned char *a = pattern_bytes(5, n);
    uint64_t whole = sum_of(a, n);
    csum split = {0};
    for (size_t off = 0, k = 1; off < n; off += k, k = k * 7 % 1031 + 1)
        csum_add(&split, a + off, off + k > n ? n - off : k);
    ASSERT_EQ(csum_value(&split), whole);
    a[77777] ^= 0x10;
    ASSERT_NE(sum_of(a, n), whole);
    a[77777] ^= 0x10;
    unsigned char t = a[10];
    a[10] = a[11], a[11] = t;
    ASSERT(a[10] == a[11] || sum_of(a, n) != whole);
    a[11] = a[10], a[10] = t;
    ASSERT_NE(sum_of(a, n - 1), whole);
    ASSERT_NE(sum_of(a + 1, n - 1), whole);
    static const unsigned char zeros[17];
    ASSERT_NE(sum_of(zeros, 16), sum_of(zeros, 17));
    free(a);
    sink ok = decode_bytewise("5\r\nhello\r\n0\r\n\r\n");
    expect_decoded(&ok, 5);
    ASSERT_EQ(ok.sum.len, 5);
    ASSERT_EQ(csum_value(&ok.sum), sum_of((const unsigned char *)"hello", 5));
    sink empty = decode_bytewise("0\r\n\r\n");
    expect_decoded(&empty, 0);
    ASSERT_EQ(decode_bytewise("5\r\nhello0\r\n\r\n").dec.state, D_BAD);
    ASSERT_EQ(decode_bytewise("g\r\n").dec.state, D_BAD);
    ASSERT_EQ(decode_bytewise("\r\n").dec.state, D_BAD);
    ASSERT_EQ(decode_bytewise("0\r\nX: y\r\n\r\n").dec.state, D_BAD);
    ASSERT_EQ(decode_bytewise("5\r\nhel").dec.state, D_DATA);
    ASSERT_EQ(decode_bytewise("0\r\n\r\nextra").extra, 5);
}

/* ============================================ 1. byte-exact, every size */

enum api { API_SEND, API_STREAM, API_CHUNKED };
static const char *const api_names[] = {"em_send_file_data", "em_stream_file_data",
                                        "em_stream_file_data(EM_HTTP_CHUNKS)"};

/* The raw bytes expected for a small file sent through api. */
static unsigned char *expected_raw(const tfile *f, int api, size_t *len)
{
    unsigned char *data = pattern_bytes(f->base, (size_t)f->size);
    if (api != API_CHUNKED) {
        *len = (size_t)f->size;
        return data;
    }
    char head[32];
    chunk_head(head, sizeof head, f->size);
    const char *tail = chunk_tail(f->size);
    *len = strlen(head) + (size_t)f->size + strlen(tail);
    unsigned char *raw = malloc(*len);
    ASSERT_NOT_NULL(raw);
    memcpy(raw, head, strlen(head));
    memcpy(raw + strlen(head), data, (size_t)f->size);
    memcpy(raw + strlen(head) + f->size, tail, strlen(tail));
    free(data);
    return raw;
}

#define KEEP (64 * 1024) /* raw bytes a reader keeps: all of a small transfer */

/* One file through one connection to a reader in a child: the file, then
 * the close (after writing: right after the call, or from done); the
 * reader gets every byte, then EOF. */
static void transfer(int kind, int fi, int api)
{
    const tfile *f = &files[fi];
    sender p;
    sender_open(&p, kind);
    reader rd;
    reader_cfg cfg = {.chunked = api == API_CHUNKED, .keep = KEEP};
    reader_start(&rd, p.peer, &cfg);
    p.peer = -1;
    fstream fs = {.id = fi, .then = then_close_after_writing};
    double t0 = now_mono();
    if (api == API_SEND) {
        ASSERT_EQ(send_file(p.c, f->path), 0);
        ASSERT_EQ(close_after(p.c), 0);
    } else {
        ASSERT_EQ(stream_file(p.c, f->path, api == API_CHUNKED ? EM_HTTP_CHUNKS : 0, &fs), 0);
        ASSERT_EQ(fs.calls, 0);
    }
    if (!run_until(p.r, &p.x->unbinds, 40))
        FAIL("%s %s of %s: not unbound; %llu bytes written, %zu queued, reader got %llu",
             kind_names[kind], api_names[api], f->name,
             (unsigned long long)bytes_out(p.c), em_get_outbound_data_size(p.c),
             (unsigned long long)reader_got(&rd));
    reader_wait(&rd, 20);
    double secs = now_mono() - t0;
    const sink *s = &rd.sh->s;
    uint64_t raw_len = api == API_CHUNKED ? chunked_len(f->size) : f->size;
    ASSERT_EQ(p.x->reason, 0);
    if (api != API_SEND) {
        expect_done(&fs, 0);
        ASSERT_EQ(fs.out_at_done, raw_len); /* all of it handed to the kernel */
        ASSERT_EQ(fs.queued_at_done, 0);
    }
    ASSERT(s->eof);
    ASSERT_EQ(s->err, 0);
    ASSERT_EQ(s->raw, raw_len);
    ASSERT_EQ(p.last.bytes_out, raw_len);
    if (api == API_CHUNKED)
        expect_decoded(s, f->size);
    ASSERT_EQ(s->sum.len, f->size);
    if (csum_value(&s->sum) != f->sum)
        FAIL("%s %s of %s: %llu bytes arrived, but not the file's", kind_names[kind],
             api_names[api], f->name, (unsigned long long)s->sum.len);
    if (raw_len <= KEEP) { /* small: every byte, framing included */
        size_t len;
        unsigned char *want = expected_raw(f, api, &len);
        ASSERT_EQ(s->kept, len);
        ASSERT(memcmp(s->keep, want, len) == 0);
        free(want);
    }
    if (f->size >= 64 * MiB) {
        printf("  %s, %s, %s: %.2f s\n", kind_names[kind], api_names[api], f->name, secs);
        fflush(stdout);
    }
    reader_free(&rd);
    sender_finish(&p);
}

static void sizes(int kind, int api)
{
    const int small_to_big[] = {F_EMPTY, F_ONE, F_5K, F_64M};
    for (size_t i = 0; i < sizeof small_to_big / sizeof small_to_big[0]; i++)
        transfer(kind, small_to_big[i], api);
}

TEST_TIMEOUT(send_file_sizes_tcp4, 40);
TEST(send_file_sizes_tcp4) { sizes(TCP4, API_SEND); }
TEST_TIMEOUT(send_file_sizes_tcp6, 40);
TEST(send_file_sizes_tcp6) { sizes(TCP6, API_SEND); }
TEST_TIMEOUT(send_file_sizes_unix, 40);
TEST(send_file_sizes_unix) { sizes(UNIX_SOCK, API_SEND); }
TEST_TIMEOUT(stream_file_sizes_tcp4, 40);
TEST(stream_file_sizes_tcp4) { sizes(TCP4, API_STREAM); }
TEST_TIMEOUT(stream_file_sizes_tcp6, 40);
TEST(stream_file_sizes_tcp6) { sizes(TCP6, API_STREAM); }
TEST_TIMEOUT(stream_file_sizes_unix, 40);
TEST(stream_file_sizes_unix) { sizes(UNIX_SOCK, API_STREAM); }

/* 1 GiB, mostly hole: the reader checksums it as it reads. */
TEST_TIMEOUT(sparse_1gib_send_file_tcp, 60);
TEST(sparse_1gib_send_file_tcp) { transfer(TCP4, F_1G, API_SEND); }
TEST_TIMEOUT(sparse_1gib_send_file_unix, 60);
TEST(sparse_1gib_send_file_unix) { transfer(UNIX_SOCK, F_1G, API_SEND); }
TEST_TIMEOUT(sparse_1gib_stream_file_tcp, 60);
TEST(sparse_1gib_stream_file_tcp) { transfer(TCP4, F_1G, API_STREAM); }
TEST_TIMEOUT(sparse_1gib_stream_file_unix, 60);
TEST(sparse_1gib_stream_file_unix) { transfer(UNIX_SOCK, F_1G, API_STREAM); }

/* ================================================ 2. EM_HTTP_CHUNKS */

/* 0 B (the last chunk alone), 1 B, 5 KB (byte for byte) and 64 MiB through
 * the test's decoder. */
static void chunked_sizes(int kind)
{
    const int which[] = {F_EMPTY, F_ONE, F_5K, F_64M};
    for (size_t i = 0; i < sizeof which / sizeof which[0]; i++)
        transfer(kind, which[i], API_CHUNKED);
}

TEST_TIMEOUT(chunked_sizes_tcp, 40);
TEST(chunked_sizes_tcp) { chunked_sizes(TCP4); }
TEST_TIMEOUT(chunked_sizes_unix, 40);
TEST(chunked_sizes_unix) { chunked_sizes(UNIX_SOCK); }

/* ======================================================== 3. order */

/* Expected bytes, built piece by piece. */
typedef struct expect {
    unsigned char *p;
    size_t len, cap;
} expect;

static void expect_add(expect *e, const void *data, size_t n)
{
    if (!n)
        return;
    if (e->len + n > e->cap) {
        e->cap = (e->len + n) * 2;
        e->p = realloc(e->p, e->cap);
        ASSERT_NOT_NULL(e->p);
    }
    memcpy(e->p + e->len, data, n);
    e->len += n;
}

static void expect_str(expect *e, const char *s) { expect_add(e, s, strlen(s)); }

static void expect_pattern(expect *e, uint64_t base, size_t n)
{
    unsigned char *b = pattern_bytes(base, n);
    expect_add(e, b, n);
    free(b);
}

/* The peer's bytes are e's, exactly; on a difference, where. */
static void expect_same(const sink *s, const expect *e)
{
    size_t n = s->kept < e->len ? s->kept : e->len, i = 0;
    while (i < n && s->keep[i] == e->p[i])
        i++;
    if (s->raw != e->len || i != e->len)
        FAIL("the peer read %llu bytes, %zu expected; they differ from byte %zu",
             (unsigned long long)s->raw, e->len, i);
}

/* A small file of its own: size pattern bytes from base. */
typedef struct pfile {
    char path[160];
    uint64_t size, base;
} pfile;

static void pfile_make(pfile *f, const char *name, uint64_t size, uint64_t base)
{
    case_path(f->path, sizeof f->path, name);
    f->size = size;
    f->base = base;
    make_file(f->path, size, base, false);
}

/* em_send_data before, between and after two files, and from the done of
 * each; a third file streamed from the second's done, then data, then a
 * close after writing from the third's: all of it arrives in call order. */
typedef struct order_ctx {
    pfile f3;
    fstream *s3;
} order_ctx;

static void then_send_d1(em_conn *c, fstream *f)
{
    (void)f;
    ASSERT_EQ(send_str(c, "<done 1>"), 0);
}

static void then_send_d2_and_stream(em_conn *c, fstream *f)
{
    order_ctx *o = f->ctx;
    ASSERT_EQ(send_str(c, "<done 2>"), 0);
    ASSERT_EQ(stream_file(c, o->f3.path, 0, o->s3), 0);
    ASSERT_EQ(o->s3->calls, 0);
}

static void then_send_e_and_close(em_conn *c, fstream *f)
{
    (void)f;
    ASSERT_EQ(send_str(c, "<E>"), 0);
    ASSERT_EQ(close_after(c), 0);
}

static void order_around_files(int kind)
{
    pfile f1, f2;
    order_ctx o;
    pfile_make(&f1, "order-1", 5000, 1000);
    pfile_make(&f2, "order-2", 70003, 2000000);
    pfile_make(&o.f3, "order-3", MiB + 1, 3000000000u);
    fstream s1 = {.id = 1, .then = then_send_d1};
    fstream s2 = {.id = 2, .then = then_send_d2_and_stream, .ctx = &o};
    fstream s3 = {.id = 3, .then = then_send_e_and_close};
    o.s3 = &s3;
    sender p;
    sender_open(&p, kind);
    unsigned char *keep = malloc(4 * MiB);
    ASSERT_NOT_NULL(keep);
    sink s;
    sink_init(&s, false, keep, 4 * MiB);
    ASSERT_EQ(send_str(p.c, "<A>"), 0);
    ASSERT_EQ(stream_file(p.c, f1.path, 0, &s1), 0);
    ASSERT_EQ(send_str(p.c, "<B>"), 0);
    ASSERT_EQ(stream_file(p.c, f2.path, 0, &s2), 0);
    ASSERT_EQ(send_str(p.c, "<C>"), 0);
    ASSERT(pump_until(&p, &s, sink_at_eof, &s, 10));
    ASSERT(run_until(p.r, &p.x->unbinds, 5));
    ASSERT_EQ(p.x->reason, 0);
    expect_done(&s1, 0);
    expect_done(&s2, 0);
    expect_done(&s3, 0);
    ASSERT_EQ(done_n, 3);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(done_seq[i], i + 1);
    expect e = {0};
    expect_str(&e, "<A>");
    expect_pattern(&e, f1.base, f1.size);
    expect_str(&e, "<B>");
    expect_pattern(&e, f2.base, f2.size);
    expect_str(&e, "<C><done 1><done 2>");
    expect_pattern(&e, o.f3.base, o.f3.size);
    expect_str(&e, "<E>");
    expect_same(&s, &e);
    free(e.p);
    free(keep);
    sender_finish(&p);
    case_unlink(f1.path);
    case_unlink(f2.path);
    case_unlink(o.f3.path);
}

TEST(order_data_around_files_and_from_done_tcp) { order_around_files(TCP4); }
TEST(order_data_around_files_and_from_done_unix) { order_around_files(UNIX_SOCK); }

/* Eight files queued back to back, empty ones among them: they arrive in
 * order, their done calls come in order, and each done comes once its
 * file's last byte was handed to the kernel. */
#define BACK_TO_BACK 8

static void then_close_if_last(em_conn *c, fstream *f)
{
    if (f->id == BACK_TO_BACK - 1)
        ASSERT_EQ(close_after(c), 0);
}

static void back_to_back(int kind)
{
    static const uint64_t sizes[BACK_TO_BACK] = {0, 1, 5000, 65539, 0, MiB + 7, 3, 2 * MiB};
    pfile f[BACK_TO_BACK];
    fstream fs[BACK_TO_BACK];
    uint64_t end[BACK_TO_BACK], total = 0;
    expect e = {0};
    for (int i = 0; i < BACK_TO_BACK; i++) {
        char name[16];
        snprintf(name, sizeof name, "back-%d", i);
        pfile_make(&f[i], name, sizes[i], (uint64_t)(i + 1) << 36);
        fs[i] = (fstream){.id = i, .then = then_close_if_last};
        total += sizes[i];
        end[i] = total;
        expect_pattern(&e, f[i].base, (size_t)sizes[i]);
    }
    sender p;
    sender_open(&p, kind);
    unsigned char *keep = malloc(4 * MiB);
    ASSERT_NOT_NULL(keep);
    sink s;
    sink_init(&s, false, keep, 4 * MiB);
    for (int i = 0; i < BACK_TO_BACK; i++)
        ASSERT_EQ(stream_file(p.c, f[i].path, 0, &fs[i]), 0);
    ASSERT_EQ(em_get_outbound_data_size(p.c), total);
    ASSERT(pump_until(&p, &s, sink_at_eof, &s, 10));
    ASSERT(run_until(p.r, &p.x->unbinds, 5));
    ASSERT_EQ(p.x->reason, 0);
    ASSERT_EQ(done_n, BACK_TO_BACK);
    for (int i = 0; i < BACK_TO_BACK; i++) {
        ASSERT_EQ(done_seq[i], i);
        expect_done(&fs[i], 0);
        if (fs[i].out_at_done < end[i])
            FAIL("done of file %d (%llu bytes, ending at %llu) ran when %llu bytes were "
                 "written", i, (unsigned long long)sizes[i], (unsigned long long)end[i],
                 (unsigned long long)fs[i].out_at_done);
    }
    expect_same(&s, &e);
    free(e.p);
    free(keep);
    sender_finish(&p);
    for (int i = 0; i < BACK_TO_BACK; i++)
        case_unlink(f[i].path);
}

TEST(order_files_back_to_back_tcp) { back_to_back(TCP4); }
TEST(order_files_back_to_back_unix) { back_to_back(UNIX_SOCK); }

/* done runs on a later turn, never inside the em_ call that queued the
 * file or closed the connection: for an empty file (nothing to write), a
 * chunked empty file, a small file, a file streamed from another file's
 * done, and a big file whose connection is closed right after. */
typedef struct nested {
    fstream *inner;
    const char *path;
    bool outer_returned;
} nested;

static void then_stream_inner(em_conn *c, fstream *f)
{
    nested *n = f->ctx;
    ASSERT_EQ(stream_file(c, n->path, 0, n->inner), 0);
    ASSERT_EQ(n->inner->calls, 0);
    n->outer_returned = true;
}

static void then_outer_returned(em_conn *c, fstream *f)
{
    (void)c;
    nested *n = f->ctx;
    ASSERT(n->outer_returned);
}

TEST(done_runs_later_never_inside_the_call)
{
    sender p;
    sender_open(&p, TCP4);
    sink s;
    unsigned char keep[16384];
    sink_init(&s, false, keep, sizeof keep);
    /* an empty file on an idle connection */
    fstream a = {.id = 1};
    ASSERT_EQ(stream_file(p.c, files[F_EMPTY].path, 0, &a), 0);
    ASSERT_EQ(a.calls, 0);
    ASSERT_EQ(em_get_outbound_data_size(p.c), 0);
    ASSERT(run_until(p.r, &a.calls, 1));
    expect_done(&a, 0);
    /* the same, chunked: the last chunk alone */
    fstream b = {.id = 2};
    ASSERT_EQ(stream_file(p.c, files[F_EMPTY].path, EM_HTTP_CHUNKS, &b), 0);
    ASSERT_EQ(b.calls, 0);
    ASSERT_EQ(em_get_outbound_data_size(p.c), 5);
    ASSERT(run_until(p.r, &b.calls, 1));
    expect_done(&b, 0);
    /* a small file */
    fstream c5 = {.id = 3};
    ASSERT_EQ(stream_file(p.c, files[F_5K].path, 0, &c5), 0);
    ASSERT_EQ(c5.calls, 0);
    ASSERT(run_until(p.r, &c5.calls, 2));
    expect_done(&c5, 0);
    /* an empty file streamed from a done: its done after that one returned */
    fstream inner = {.id = 5, .then = then_outer_returned};
    nested n = {.inner = &inner, .path = files[F_EMPTY].path};
    inner.ctx = &n;
    fstream outer = {.id = 4, .then = then_stream_inner, .ctx = &n};
    ASSERT_EQ(stream_file(p.c, files[F_ONE].path, 0, &outer), 0);
    ASSERT(run_until(p.r, &inner.calls, 2));
    expect_done(&outer, 0);
    expect_done(&inner, 0);
    raw_at_least all = {&s, 5 + files[F_5K].size + 1};
    ASSERT(pump_until(&p, &s, sink_has, &all, 5));
    expect e = {0};
    expect_str(&e, "0\r\n\r\n");
    expect_pattern(&e, files[F_5K].base, 5000);
    expect_pattern(&e, files[F_ONE].base, 1);
    expect_same(&s, &e);
    free(e.p);
    /* a big file, and an immediate close: done (ECANCELED) comes later */
    fstream big = {.id = 6};
    ASSERT_EQ(stream_file(p.c, files[F_64M].path, 0, &big), 0);
    ASSERT_EQ(close_now(p.c), 0);
    ASSERT_EQ(big.calls, 0);
    ASSERT(run_until(p.r, &p.x->unbinds, 5));
    expect_done(&big, ECANCELED);
    ASSERT_EQ(p.x->reason, 0);
    ASSERT_EQ(done_n, 6);
    for (int i = 0; i < 6; i++)
        ASSERT_EQ(done_seq[i], i + 1);
    sender_finish(&p);
}

/* Data, a small file and data again, with no close after them: all of it
 * arrives at once (nothing is left corked behind MSG_MORE, which holds
 * bytes back for 200 ms). */
TEST(small_file_between_data_is_not_delayed)
{
    sender p;
    sender_open(&p, TCP4);
    expect e = {0};
    expect_str(&e, "HTTP/1.1 200 OK\r\n\r\n");
    expect_pattern(&e, files[F_5K].base, 5000);
    expect_str(&e, "!");
    for (int round = 0; round < 5; round++) {
        sink s;
        unsigned char keep[16384];
        sink_init(&s, false, keep, sizeof keep);
        fstream f = {.id = round};
        double t0 = now_mono();
        ASSERT_EQ(send_str(p.c, "HTTP/1.1 200 OK\r\n\r\n"), 0);
        ASSERT_EQ(stream_file(p.c, files[F_5K].path, 0, &f), 0);
        ASSERT_EQ(send_str(p.c, "!"), 0);
        raw_at_least all = {&s, e.len};
        ASSERT(pump_until(&p, &s, sink_has, &all, 5));
        double secs = now_mono() - t0;
        if (secs > 0.15)
            FAIL("round %d: the %zu bytes took %.3f s to arrive", round, e.len, secs);
        expect_same(&s, &e);
        expect_done(&f, 0);
    }
    free(e.p);
    sender_finish(&p);
}

/* ======================================================== 4. errors */

/* Refused with err by both calls: nothing queued, no descriptor left
 * open, and done never called (checked at the end). */
static void expect_refused(em_conn *c, const char *path, unsigned flags, fstream *f, int err)
{
    int fds = open_fd_count();
    size_t queued = c ? em_get_outbound_data_size(c) : 0;
    if (!flags) {
        int rc = send_file(c, path);
        if (rc != -err)
            FAIL("em_send_file_data(%s): %d (%s), expected -%d (%s)", path ? path : "NULL", rc,
                 em_strerror(rc), err, em_strerror(err));
    }
    int rc = stream_file(c, path, flags, f);
    if (rc != -err)
        FAIL("em_stream_file_data(%s, flags %#x): %d (%s), expected -%d (%s)",
             path ? path : "NULL", flags, rc, em_strerror(rc), err, em_strerror(err));
    ASSERT_EQ(open_fd_count(), fds);
    if (c)
        ASSERT_EQ(em_get_outbound_data_size(c), queued);
}

/* Each refusal between two em_send_data calls: the peer reads exactly
 * those, then a file sent after them all (the connection still works). */
TEST(errors_send_nothing_and_keep_the_connection)
{
    char missing[128];
    case_path(missing, sizeof missing, "no-such-file");
    sender p;
    sender_open(&p, TCP4);
    fstream never = {.id = 99};
    ASSERT_EQ(send_str(p.c, "<0>"), 0);
    expect_refused(p.c, missing, 0, &never, ENOENT);
    expect_refused(p.c, missing, EM_HTTP_CHUNKS, &never, ENOENT);
    ASSERT_EQ(send_str(p.c, "<1>"), 0);
    expect_refused(p.c, file_dir, 0, &never, EISDIR);
    expect_refused(p.c, "/", EM_HTTP_CHUNKS, &never, EISDIR);
    ASSERT_EQ(send_str(p.c, "<2>"), 0);
    expect_refused(p.c, "/dev/null", 0, &never, EINVAL);
    expect_refused(p.c, "/dev/null", EM_HTTP_CHUNKS, &never, EINVAL);
    ASSERT_EQ(send_str(p.c, "<3>"), 0);
    expect_refused(NULL, files[F_5K].path, 0, &never, EINVAL);
    expect_refused(p.c, NULL, 0, &never, EINVAL);
    expect_refused(p.c, NULL, EM_HTTP_CHUNKS, &never, EINVAL);
    expect_refused(p.c, files[F_5K].path, 2, &never, EINVAL);
    expect_refused(p.c, files[F_5K].path, EM_HTTP_CHUNKS | 0x80000000u, &never, EINVAL);
    expect_refused(p.c, files[F_5K].path, ~0u, &never, EINVAL);
    ASSERT_EQ(send_str(p.c, "<4>"), 0);
    /* the queue is intact: the same calls succeed now */
    fstream ok = {.id = 1};
    ASSERT_EQ(stream_file(p.c, files[F_5K].path, 0, &ok), 0);
    ASSERT_EQ(send_str(p.c, "<5>"), 0);
    ASSERT_EQ(send_file(p.c, files[F_ONE].path), 0);
    ASSERT_EQ(close_after(p.c), 0);
    sink s;
    unsigned char keep[16384];
    sink_init(&s, false, keep, sizeof keep);
    ASSERT(pump_until(&p, &s, sink_at_eof, &s, 5));
    ASSERT(run_until(p.r, &p.x->unbinds, 5));
    ASSERT_EQ(p.x->reason, 0);
    expect_done(&ok, 0);
    ASSERT_EQ(never.calls, 0);
    expect e = {0};
    expect_str(&e, "<0><1><2><3><4>");
    expect_pattern(&e, files[F_5K].base, 5000);
    expect_str(&e, "<5>");
    expect_pattern(&e, files[F_ONE].base, 1);
    expect_same(&s, &e);
    free(e.p);
    sender_finish(&p);
}

/* As the process is (the reactor, the files): a file it cannot read is
 * -EACCES, with nothing sent, and a readable one next to it still goes. */
static void unreadable_check(const char *secret, const char *control)
{
    sender p;
    sender_open(&p, TCP4);
    fstream never = {.id = 99}, ok = {.id = 1, .then = then_close_after_writing};
    ASSERT_EQ(send_str(p.c, "<a>"), 0);
    expect_refused(p.c, secret, 0, &never, EACCES);
    expect_refused(p.c, secret, EM_HTTP_CHUNKS, &never, EACCES);
    ASSERT_EQ(send_str(p.c, "<b>"), 0);
    ASSERT_EQ(stream_file(p.c, control, 0, &ok), 0);
    sink s;
    unsigned char keep[16384];
    sink_init(&s, false, keep, sizeof keep);
    ASSERT(pump_until(&p, &s, sink_at_eof, &s, 5));
    ASSERT(run_until(p.r, &p.x->unbinds, 5));
    ASSERT_EQ(p.x->reason, 0);
    expect_done(&ok, 0);
    ASSERT_EQ(never.calls, 0);
    expect e = {0};
    expect_str(&e, "<a><b>");
    expect_pattern(&e, 77, 300);
    expect_same(&s, &e);
    free(e.p);
    sender_finish(&p);
}

/* root reads anything: the check runs in a child that became nobody. Its
 * failures reach the runner like the case's own. */
static void unreadable_as_nobody(const char *secret, const char *control)
{
    fflush(stdout);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
            FAIL("dropping privileges: %s", strerror(errno));
        /* a process that changed its uid loses access to its own /proc/self/fd */
        prctl(PR_SET_DUMPABLE, 1);
        ASSERT_NE(geteuid(), 0);
        unreadable_check(secret, control);
        fflush(stdout);
        _exit(0);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(error_unreadable_file_is_eacces)
{
    char secret[128], control[128];
    case_path(secret, sizeof secret, "unreadable");
    case_path(control, sizeof control, "readable");
    make_file(secret, 300, 77, false);
    make_file(control, 300, 77, false);
    ASSERT_EQ(chmod(secret, 0), 0);
    if (geteuid() == 0) {
        unreadable_as_nobody(secret, control);
    } else {
        int fd = open(secret, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            close(fd);
            FAIL("uid %d reads a file of mode 000 here: the -EACCES check cannot run "
                 "(skipped, not passed)", (int)geteuid());
        }
        unreadable_check(secret, control);
    }
    case_unlink(secret);
    case_unlink(control);
}

/* Datagram and watched connections take no file. */
TEST(error_datagram_and_watched_connections_einval)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    rec d = {.tag = 1}, w = {.tag = 2};
    em_conn *u = em_open_datagram_socket(r, "127.0.0.1", 0, &rec_handler, &d);
    ASSERT_NOT_NULL(u);
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    em_conn *wc = em_watch(r, sv[0], &rec_handler, &w);
    ASSERT_NOT_NULL(wc);
    fstream never = {.id = 99};
    expect_refused(u, files[F_5K].path, 0, &never, EINVAL);
    expect_refused(u, files[F_5K].path, EM_HTTP_CHUNKS, &never, EINVAL);
    expect_refused(wc, files[F_5K].path, 0, &never, EINVAL);
    expect_refused(wc, files[F_5K].path, EM_HTTP_CHUNKS, &never, EINVAL);
    run_for(r, 0.05);
    ASSERT_EQ(never.calls, 0);
    /* the datagram socket still works */
    int port;
    {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        ASSERT_EQ(em_get_sockname(u, &ss, &len), 0);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    ASSERT_EQ(em_send_datagram(u, "ping", 4, "127.0.0.1", port), 0);
    ASSERT(run_until(r, &d.data_calls, 5));
    ASSERT_EQ(close_conn(u, false), 0);
    ASSERT_EQ(close_conn(wc, false), 0);
    ASSERT(run_until(r, &w.unbinds, 5));
    ASSERT(run_until(r, &d.unbinds, 5));
    REACTOR_FREE_CHECKED(r);
    close(sv[0]);
    close(sv[1]);
    ASSERT_NO_FD_LEAK(fd0);
}

/* Once a close was asked for (after writing, a half-close, at once), a
 * file is -ENOTCONN. */
TEST(error_enotconn_once_a_close_was_asked)
{
    for (int how = 0; how < 3; how++) {
        sender p;
        sender_open(&p, TCP4);
        fstream never = {.id = 99};
        ASSERT_EQ(send_str(p.c, "bye"), 0);
        in_call++;
        int rc = how == 0 ? em_close_connection_after_writing(p.c)
                 : how == 1 ? em_close_write(p.c)
                            : em_close_connection(p.c, false);
        in_call--;
        ASSERT_EQ(rc, 0);
        expect_refused(p.c, files[F_5K].path, 0, &never, ENOTCONN);
        expect_refused(p.c, files[F_5K].path, EM_HTTP_CHUNKS, &never, ENOTCONN);
        if (how == 1) /* the half-closed connection closes once the peer does */
            shutdown(p.peer, SHUT_WR);
        ASSERT(run_until(p.r, &p.x->unbinds, 5));
        ASSERT_EQ(never.calls, 0);
        sender_finish(&p);
    }
}

/* ========================================= 5. closed while a file is queued */

/* em_close_connection(c, false) with a big file partly written and two
 * more behind it: each done once, in order, with ECANCELED, before unbind;
 * the files' descriptors are closed by then. */
TEST(close_now_cancels_queued_files)
{
    sender p;
    sender_open(&p, TCP4);
    fstream a = {.id = 1}, b = {.id = 2}, c = {.id = 3};
    ASSERT_EQ(stream_file(p.c, files[F_64M].path, 0, &a), 0);
    ASSERT_EQ(stream_file(p.c, files[F_5K].path, 0, &b), 0);
    ASSERT_EQ(stream_file(p.c, files[F_ONE].path, EM_HTTP_CHUNKS, &c), 0);
    /* the peer reads nothing: the kernel takes what it holds, no more */
    run_for(p.r, 0.1);
    uint64_t written = bytes_out(p.c);
    ASSERT_GT(written, 0);
    ASSERT_LT(written, files[F_64M].size);
    ASSERT_EQ(em_get_outbound_data_size(p.c) + written,
              files[F_64M].size + files[F_5K].size + chunked_len(1));
    ASSERT_EQ(a.calls + b.calls + c.calls, 0);
    ASSERT_EQ(fds_on(files[F_64M].path), 1);
    ASSERT_EQ(fds_on(files[F_5K].path), 1);
    ASSERT_EQ(fds_on(files[F_ONE].path), 1);
    ASSERT_EQ(close_now(p.c), 0);
    ASSERT(run_until(p.r, &p.x->unbinds, 5));
    ASSERT_EQ(p.x->reason, 0);
    expect_done(&a, ECANCELED);
    expect_done(&b, ECANCELED);
    expect_done(&c, ECANCELED);
    ASSERT_EQ(done_n, 3);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(done_seq[i], i + 1);
    ASSERT_EQ(fds_on(files[F_64M].path), 0);
    ASSERT_EQ(fds_on(files[F_5K].path), 0);
    ASSERT_EQ(fds_on(files[F_ONE].path), 0);
    sender_finish(&p);
}

/* A close from a done cancels the files queued after it. */
static void then_close_now(em_conn *c, fstream *f)
{
    (void)f;
    ASSERT_EQ(close_now(c), 0);
}

TEST(close_from_done_cancels_the_next_file)
{
    sender p;
    sender_open(&p, UNIX_SOCK);
    fstream a = {.id = 1, .then = then_close_now}, b = {.id = 2};
    ASSERT_EQ(stream_file(p.c, files[F_5K].path, 0, &a), 0);
    ASSERT_EQ(stream_file(p.c, files[F_64M].path, 0, &b), 0);
    ASSERT(run_until(p.r, &p.x->unbinds, 5));
    expect_done(&a, 0);
    expect_done(&b, ECANCELED);
    ASSERT_EQ(done_seq[0], 1);
    ASSERT_EQ(done_seq[1], 2);
    ASSERT_EQ(fds_on(files[F_64M].path), 0);
    sender_finish(&p);
}

/* The reactor freed with a file queued: done (ECANCELED) just before
 * unbind(0). In a forked child, em_reactor_free calls back
 * nothing: no done either. */
static void fail_if_in_child(em_conn *c, fstream *f)
{
    (void)c;
    pid_t *parent = f->ctx;
    if (getpid() != *parent)
        FAIL("done (err %d) called in a forked child freeing the reactor", f->err);
}

TEST(reactor_free_cancels_queued_file)
{
    sender p;
    sender_open(&p, TCP4);
    pid_t me = getpid();
    fstream a = {.id = 1, .then = fail_if_in_child, .ctx = &me};
    ASSERT_EQ(stream_file(p.c, files[F_64M].path, 0, &a), 0);
    run_for(p.r, 0.05);
    ASSERT_EQ(a.calls, 0);
    free_in_forked_child(p.r);
    ASSERT_EQ(a.calls, 0);
    ASSERT_EQ(em_stop_server(p.s), 0);
    em_reactor_free(p.r);
    ASSERT_EQ(p.x->unbinds, 1);
    ASSERT_EQ(p.x->reason, 0);
    expect_done(&a, ECANCELED);
    close(p.peer);
    rec_free(&p.srv);
    ASSERT_EQ(fds_on(files[F_64M].path), 0);
    ASSERT_NO_FD_LEAK(p.fd0);
}

/* The peer reads 1 MiB of a 64 MiB file and closes: the connection fails
 * (ECONNRESET or EPIPE); done once, before unbind, with ECANCELED (the
 * failure was seen elsewhere first) or that same error (seen writing the
 * file); the file's descriptor is closed. */
TEST(peer_close_mid_file)
{
    const int kinds[] = {TCP4, UNIX_SOCK};
    for (int k = 0; k < 2; k++) {
        sender p;
        sender_open(&p, kinds[k]);
        reader rd;
        reader_cfg cfg = {.close_after = MiB, .check_pattern = true,
                          .pattern_base = files[F_64M].base};
        reader_start(&rd, p.peer, &cfg);
        p.peer = -1;
        fstream a = {.id = 1};
        ASSERT_EQ(stream_file(p.c, files[F_64M].path, 0, &a), 0);
        ASSERT(run_until(p.r, &p.x->unbinds, 10));
        reader_wait(&rd, 5);
        ASSERT_EQ(rd.sh->s.raw, MiB);
        ASSERT_EQ(rd.sh->s.bad_at, -1);
        int reason = p.x->reason;
        if (reason != ECONNRESET && reason != EPIPE)
            FAIL("%s: unbind(%d: %s), expected ECONNRESET or EPIPE", kind_names[kinds[k]],
                 reason, em_strerror(reason));
        ASSERT_EQ(a.calls, 1);
        ASSERT(!a.after_unbind);
        if (a.err != ECANCELED && a.err != reason)
            FAIL("%s: done(%d: %s) for a connection that failed with %d (%s)",
                 kind_names[kinds[k]], a.err, em_strerror(a.err), reason, em_strerror(reason));
        ASSERT_LT(p.last.bytes_out, files[F_64M].size);
        ASSERT_EQ(fds_on(files[F_64M].path), 0);
        printf("  %s: unbind(%s), done(%s) after %llu of %llu bytes\n", kind_names[kinds[k]],
               em_strerror(reason), em_strerror(a.err), (unsigned long long)p.last.bytes_out,
               (unsigned long long)files[F_64M].size);
        fflush(stdout);
        reader_free(&rd);
        sender_finish(&p);
    }
}

/* =============================================== 6. a file that shrinks */

/* 64 MiB streamed to a slow reader; once some bytes arrived, the file is
 * cut to 1 MiB. The connection fails with EIO, done gets EIO, the reader
 * gets what was written (the file's bytes) and then the end. */
static void shrink_case(int kind)
{
    char path[128];
    case_path(path, sizeof path, "shrinks");
    make_file(path, 64 * MiB, 505, false);
    sender p;
    sender_open(&p, kind);
    reader rd;
    reader_cfg cfg = {.slow_piece = 64 * KiB, .slow_gap = 0.005, .slow_secs = 1.0,
                      .check_pattern = true, .pattern_base = 505};
    reader_start(&rd, p.peer, &cfg);
    p.peer = -1;
    fstream a = {.id = 1};
    ASSERT_EQ(stream_file(p.c, path, 0, &a), 0);
    double deadline = now_mono() + 5;
    while (reader_got(&rd) < 256 * KiB && now_mono() < deadline)
        ASSERT_GE(em_run_once(p.r, 0.002), 0);
    ASSERT_GE(reader_got(&rd), 256 * KiB);
    ASSERT_EQ(truncate(path, (off_t)MiB), 0);
    double t0 = now_mono();
    if (!run_until(p.r, &p.x->unbinds, 10))
        FAIL("%s: a file cut to 1 MiB while streaming: not unbound after 10 s; %llu bytes "
             "written, %zu queued", kind_names[kind], (unsigned long long)bytes_out(p.c),
             em_get_outbound_data_size(p.c));
    double secs = now_mono() - t0;
    ASSERT_EQ(p.x->reason, EIO);
    expect_done(&a, EIO);
    ASSERT_EQ(fds_on(path), 0);
    reader_wait(&rd, 10);
    const sink *s = &rd.sh->s;
    ASSERT_EQ(s->raw, p.last.bytes_out); /* everything written arrived */
    ASSERT_GE(s->raw, MiB);              /* the bytes the file still has went */
    ASSERT_LT(s->raw, 64 * MiB);
    ASSERT_EQ(s->bad_at, -1);
    ASSERT(s->eof || s->err == ECONNRESET);
    printf("  %s: EIO %.2f s after the cut, %llu bytes sent\n", kind_names[kind], secs,
           (unsigned long long)s->raw);
    fflush(stdout);
    reader_free(&rd);
    sender_finish(&p);
    case_unlink(path);
}

TEST(shrinking_file_fails_with_eio_tcp) { shrink_case(TCP4); }
TEST(shrinking_file_fails_with_eio_unix) { shrink_case(UNIX_SOCK); }

/* ============================================ 7. close after writing */

/* A close after writing (and a half-close) asked right after the file
 * waits for all of it: the peer reads the file, the data after it, EOF. */
static void close_after_file(int kind, bool half)
{
    sender p;
    sender_open(&p, kind);
    reader rd;
    reader_cfg cfg = {0};
    reader_start(&rd, p.peer, &cfg);
    p.peer = -1;
    fstream a = {.id = 1};
    ASSERT_EQ(stream_file(p.c, files[F_64M].path, 0, &a), 0);
    ASSERT_EQ(send_str(p.c, "END"), 0);
    in_call++;
    ASSERT_EQ(half ? em_close_write(p.c) : em_close_connection_after_writing(p.c), 0);
    in_call--;
    ASSERT_EQ(send_str(p.c, "late"), -ENOTCONN);
    ASSERT_EQ(send_file(p.c, files[F_5K].path), -ENOTCONN);
    /* the half-closed end unbinds when the reader, at EOF, closes too */
    ASSERT(run_until(p.r, &p.x->unbinds, 30));
    reader_wait(&rd, 10);
    ASSERT_EQ(p.x->reason, 0);
    expect_done(&a, 0);
    csum want = {0};
    csum_file(&want, files[F_64M].path);
    csum_str(&want, "END");
    const sink *s = &rd.sh->s;
    ASSERT(s->eof);
    ASSERT_EQ(s->raw, files[F_64M].size + 3);
    ASSERT_EQ(csum_value(&s->sum), csum_value(&want));
    reader_free(&rd);
    sender_finish(&p);
}

TEST_TIMEOUT(close_after_writing_waits_for_the_file, 40);
TEST(close_after_writing_waits_for_the_file)
{
    close_after_file(TCP4, false);
    close_after_file(UNIX_SOCK, false);
}

TEST_TIMEOUT(close_write_waits_for_the_file, 40);
TEST(close_write_waits_for_the_file)
{
    close_after_file(TCP4, true);
    close_after_file(UNIX_SOCK, true);
}

/* ============================================ 8. a slow reader, memory */

static long vm_rss_kib(void)
{
    char buf[8192];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    const char *p = strstr(buf, "VmRSS:");
    if (!p)
        FAIL("no VmRSS in /proc/self/status");
    return strtol(p + 6, NULL, 10);
}

/* A raw TCP client with a fixed receive buffer (set before connecting, so
 * the kernel does not grow it), accepted by p's server. */
static void sender_open_small_rcvbuf(sender *p, int rcvbuf)
{
    *p = (sender){.fd0 = open_fd_count(), .peer = -1};
    p->r = new_reactor();
    p->srv = (rec){.tag = 1, .ctx = p, .on_unbind = keep_last_stats};
    rec_pool_new(&p->srv, 1);
    p->s = em_start_server(p->r, "127.0.0.1", 0, &rec_handler, &p->srv);
    ASSERT_NOT_NULL(p->s);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)em_server_port(p->s)),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    p->peer = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(p->peer, 0);
    ASSERT_EQ(setsockopt(p->peer, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    ASSERT_EQ(connect(p->peer, (struct sockaddr *)&sin, sizeof sin), 0);
    ASSERT(run_until(p->r, &p->srv.pool_used, 5));
    p->x = &p->srv.pool[0];
    p->c = p->x->conn;
}

static int sock_buf(int fd, int opt)
{
    int v = 0;
    socklen_t len = sizeof v;
    ASSERT_EQ(getsockopt(fd, SOL_SOCKET, opt, &v, &len), 0);
    return v;
}

/* 1 GiB streamed to a reader (a child) that takes 64 KiB every 4 ms for
 * 2 s, then reads fast. The sender's resident memory grows by less than
 * 16 MiB; the queue counts exactly the file's bytes not written; and while
 * the reader is slow, what was written is at most what the two socket
 * buffers hold beyond what it read: libem reads no further ahead. */
TEST_TIMEOUT(slow_reader_sender_memory_bounded, 60);
TEST(slow_reader_sender_memory_bounded)
{
    const uint64_t total = files[F_1G].size;
    sender p;
    sender_open_small_rcvbuf(&p, 1024 * 1024);
    int sndbuf = 1024 * 1024;
    ASSERT_EQ(em_set_sock_opt(p.c, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
    uint64_t buffers = (uint64_t)sock_buf(em_conn_fd(p.c), SO_SNDBUF) +
                       (uint64_t)sock_buf(p.peer, SO_RCVBUF);
    reader rd;
    reader_cfg cfg = {.slow_piece = 64 * KiB, .slow_gap = 0.004, .slow_secs = 2.0};
    reader_start(&rd, p.peer, &cfg);
    p.peer = -1;
    fstream a = {.id = 1, .then = then_close_after_writing};
    long rss0 = vm_rss_kib(), rss_max = rss0;
    double t0 = now_mono();
    ASSERT_EQ(stream_file(p.c, files[F_1G].path, 0, &a), 0);
    uint64_t ahead_max = 0, slow_out = 0;
    int samples = 0;
    double next_rss = 0;
    while (!p.x->unbinds && now_mono() < t0 + 45) {
        ASSERT_GE(em_run_once(p.r, 0.002), 0);
        if (now_mono() >= next_rss) { /* reading /proc costs: every 5 ms */
            long rss = vm_rss_kib();
            if (rss > rss_max)
                rss_max = rss;
            next_rss = now_mono() + 0.005;
        }
        if (!p.x->conn)
            break;
        uint64_t out = bytes_out(p.c), got = reader_got(&rd);
        ASSERT_EQ(em_get_outbound_data_size(p.c), total - out);
        if (now_mono() - t0 < 1.8) { /* the reader is slow */
            uint64_t ahead = out > got ? out - got : 0;
            if (ahead > ahead_max)
                ahead_max = ahead;
            slow_out = out;
            samples++;
        }
    }
    double secs = now_mono() - t0;
    ASSERT(run_until(p.r, &p.x->unbinds, 1));
    reader_wait(&rd, 20);
    ASSERT_EQ(p.x->reason, 0);
    expect_done(&a, 0);
    const sink *s = &rd.sh->s;
    ASSERT_EQ(s->raw, total);
    ASSERT_EQ(csum_value(&s->sum), files[F_1G].sum);
    printf("  1 GiB in %.2f s; RSS %ld -> %ld KiB at most; in the slow phase %llu bytes "
           "written (%d samples), at most %llu ahead of the reader (buffers %llu)\n",
           secs, rss0, rss_max, (unsigned long long)slow_out, samples,
           (unsigned long long)ahead_max, (unsigned long long)buffers);
    fflush(stdout);
    ASSERT_GT(samples, 10);
    ASSERT_LT(slow_out, 256 * MiB); /* the reader really was slow */
    if ((uint64_t)(rss_max - rss0) * KiB >= 16 * MiB)
        FAIL("the sender's RSS grew by %ld KiB while streaming 1 GiB", rss_max - rss0);
    if (ahead_max > buffers + MiB)
        FAIL("%llu bytes written ahead of a slow reader; the socket buffers hold %llu",
             (unsigned long long)ahead_max, (unsigned long long)buffers);
    reader_free(&rd);
    sender_finish(&p);
}

/* ===================================== 9. queue size, limit, pause */

/* A paused connection writes nothing: the queue counts the data before the
 * file, the file and its framing, and the data after it, exactly. An
 * outbound limit then refuses later em_send_data calls that would pass it
 * while the file is queued; once written, the queue is 0 and sends go. */
static bool stream_done(void *arg) { return ((fstream *)arg)->calls > 0; }

TEST(outbound_size_counts_the_file_and_the_limit_refuses_sends)
{
    const tfile *f = &files[F_64M];
    sender p;
    sender_open(&p, TCP4);
    ASSERT_EQ(em_pause(p.c), 0);
    ASSERT_EQ(send_str(p.c, "head"), 0);
    fstream a = {.id = 1};
    ASSERT_EQ(stream_file(p.c, f->path, EM_HTTP_CHUNKS, &a), 0);
    const uint64_t queued = 4 + chunked_len(f->size);
    ASSERT_EQ(em_get_outbound_data_size(p.c), queued);
    ASSERT_EQ(em_set_outbound_limit(p.c, queued + 10), 0);
    ASSERT_EQ(send_str(p.c, "0123456789A"), -ENOBUFS);
    ASSERT_EQ(em_get_outbound_data_size(p.c), queued);
    ASSERT_EQ(send_str(p.c, "0123456789"), 0);
    ASSERT_EQ(em_get_outbound_data_size(p.c), queued + 10);
    ASSERT_EQ(send_str(p.c, "x"), -ENOBUFS);
    ASSERT_EQ(em_set_outbound_limit(p.c, MiB), 0);
    ASSERT_EQ(send_str(p.c, "x"), -ENOBUFS);
    run_for(p.r, 0.05);
    ASSERT_EQ(bytes_out(p.c), 0);
    ASSERT_EQ(em_get_outbound_data_size(p.c), queued + 10);
    ASSERT_EQ(a.calls, 0);
    /* resumed: the queue shrinks as the kernel takes the file */
    ASSERT_EQ(em_resume(p.c), 0);
    sink s;
    sink_init(&s, false, NULL, 0);
    int refused = 0;
    double deadline = now_mono() + 20;
    for (int turn = 1; !a.calls && now_mono() < deadline; turn++) {
        ASSERT_GE(em_run_once(p.r, 0.002), 0);
        ASSERT_EQ(em_get_outbound_data_size(p.c) + bytes_out(p.c), queued + 10);
        if (em_get_outbound_data_size(p.c) > MiB + 10) {
            ASSERT_EQ(send_str(p.c, "x"), -ENOBUFS);
            refused++;
        }
        if (turn % 4 == 0) /* a slowish reader: the queue is seen at many sizes */
            peer_pump(p.peer, &s);
    }
    expect_done(&a, 0);
    ASSERT_GT(refused, 0);
    raw_at_least all = {&s, queued + 10};
    ASSERT(pump_until(&p, &s, sink_has, &all, 10));
    ASSERT(run_until_pred(p.r, stream_done, &a, 1));
    ASSERT_EQ(em_get_outbound_data_size(p.c), 0);
    ASSERT_EQ(send_str(p.c, "tail"), 0);
    all.n += 4;
    ASSERT(pump_until(&p, &s, sink_has, &all, 5));
    csum want = {0};
    char head[32];
    chunk_head(head, sizeof head, f->size);
    csum_str(&want, "head");
    csum_str(&want, head);
    csum_file(&want, f->path);
    csum_str(&want, chunk_tail(f->size));
    csum_str(&want, "0123456789tail");
    ASSERT_EQ(s.raw, queued + 14);
    ASSERT_EQ(csum_value(&s.sum), csum_value(&want));
    sender_finish(&p);
}

/* em_pause stops a file being written, em_resume continues it: while
 * paused nothing is written and the peer gets exactly what the kernel had;
 * a file queued on a paused connection does not start; bytes exact. */
TEST(pause_stops_a_file_and_resume_continues_it)
{
    const tfile *f = &files[F_64M];
    sender p;
    sender_open(&p, TCP4);
    sink s;
    sink_init(&s, false, NULL, 0);
    fstream a = {.id = 1};
    ASSERT_EQ(em_pause(p.c), 0);
    ASSERT_EQ(stream_file(p.c, f->path, 0, &a), 0);
    run_for(p.r, 0.1);
    peer_pump(p.peer, &s);
    ASSERT_EQ(s.raw, 0);
    ASSERT_EQ(bytes_out(p.c), 0);
    ASSERT_EQ(em_get_outbound_data_size(p.c), f->size);
    ASSERT_EQ(em_resume(p.c), 0);
    for (int round = 0; round < 3; round++) {
        raw_at_least some = {&s, s.raw + 4 * MiB};
        ASSERT(pump_until(&p, &s, sink_has, &some, 10));
        ASSERT_EQ(a.calls, 0);
        ASSERT_EQ(em_pause(p.c), 0);
        uint64_t out = bytes_out(p.c);
        size_t queued = em_get_outbound_data_size(p.c);
        ASSERT_GT(queued, 0);
        double until = now_mono() + 0.2;
        while (now_mono() < until) {
            ASSERT_GE(em_run_once(p.r, 0.002), 0);
            peer_pump(p.peer, &s);
        }
        ASSERT_EQ(bytes_out(p.c), out);
        ASSERT_EQ(em_get_outbound_data_size(p.c), queued);
        ASSERT_EQ(s.raw, out); /* what the kernel had, and nothing more */
        ASSERT_EQ(a.calls, 0);
        ASSERT_EQ(em_resume(p.c), 0);
    }
    raw_at_least all = {&s, f->size};
    ASSERT(pump_until(&p, &s, sink_has, &all, 20));
    ASSERT(run_until_pred(p.r, stream_done, &a, 1));
    expect_done(&a, 0);
    ASSERT_EQ(s.raw, f->size);
    ASSERT_EQ(csum_value(&s.sum), f->sum);
    sender_finish(&p);
}

/* The file is opened and sized by the call: removed after it, it is still
 * sent whole; grown after it, the bytes added are not sent. */
TEST(file_is_opened_and_sized_by_the_call)
{
    char gone[128], grows[128];
    case_path(gone, sizeof gone, "gone");
    case_path(grows, sizeof grows, "grows");
    make_file(gone, 3 * MiB, 9000, false);
    make_file(grows, 100000, 9100, false);
    sender p;
    sender_open(&p, UNIX_SOCK);
    ASSERT_EQ(em_pause(p.c), 0);
    fstream a = {.id = 1}, b = {.id = 2, .then = then_close_after_writing};
    ASSERT_EQ(stream_file(p.c, gone, 0, &a), 0);
    ASSERT_EQ(unlink(gone), 0);
    ASSERT_EQ(stream_file(p.c, grows, EM_HTTP_CHUNKS, &b), 0);
    int fd = open(grows, O_WRONLY | O_APPEND | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    write_all(fd, "appended later", 14);
    close(fd);
    ASSERT_EQ(em_get_outbound_data_size(p.c), 3 * MiB + chunked_len(100000));
    ASSERT_EQ(em_resume(p.c), 0);
    unsigned char *keep = malloc(4 * MiB);
    ASSERT_NOT_NULL(keep);
    sink s;
    sink_init(&s, false, keep, 4 * MiB);
    ASSERT(pump_until(&p, &s, sink_at_eof, &s, 10));
    ASSERT(run_until(p.r, &p.x->unbinds, 5));
    ASSERT_EQ(p.x->reason, 0);
    expect_done(&a, 0);
    expect_done(&b, 0);
    expect e = {0};
    expect_pattern(&e, 9000, 3 * MiB);
    expect_str(&e, "186a0\r\n");
    expect_pattern(&e, 9100, 100000);
    expect_str(&e, "\r\n0\r\n\r\n");
    expect_same(&s, &e);
    free(e.p);
    free(keep);
    sender_finish(&p);
    case_unlink(grows);
}

/* ============================================================ 10. TLS */

static void sink_on_data(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)c;
    sink_feed(x->ctx, d, n);
}

typedef struct tls_job {
    const char *path;
    unsigned flags;
    fstream *f;
} tls_job;

/* Queued right after em_start_tls, long before the handshake. */
static void stream_in_post_init(em_conn *c, rec *x)
{
    tls_job *t = x->ctx;
    ASSERT_EQ(x->tls_rc, 0);
    ASSERT_EQ(stream_file(c, t->path, t->flags, t->f), 0);
}

/* A file streamed by libem's TLS server (after the handshake, or queued
 * before it) to libem's TLS client: the plaintext is the file, byte for
 * byte; then close_notify: both ends unbind with 0. */
static void tls_file_case(int fi, unsigned flags, bool unix_sock, bool before_handshake)
{
    const tfile *file = &files[fi];
    static unsigned char keep[KEEP];
    sink s;
    sink_init(&s, flags & EM_HTTP_CHUNKS, keep, sizeof keep);
    fstream f = {.id = 1, .then = then_close_after_writing};
    tls_job t = {.path = file->path, .flags = flags, .f = &f};
    tls_pair p = {0};
    p.srv = (rec){.tag = 1, .ctx = &t, .on_post_init = before_handshake ? stream_in_post_init : NULL};
    p.cli = (rec){.tag = 2, .ctx = &s, .on_data = sink_on_data};
    double t0 = now_mono();
    tls_pair_start(&p, unix_sock);
    rec *sv = tls_srv0(&p);
    if (!before_handshake)
        ASSERT_EQ(stream_file(sv->conn, file->path, flags, &f), 0);
    if (!run_until_pred(p.r, tls_pair_unbound, &p, 40))
        FAIL("TLS %s: not unbound; the client got %llu bytes", file->name,
             (unsigned long long)s.raw);
    double secs = now_mono() - t0;
    expect_done(&f, 0);
    if (p.cli.reason || sv->reason)
        FAIL("TLS %s: unbind %d (%s) / %d (%s)", file->name, p.cli.reason, p.cli.tls_error,
             sv->reason, sv->tls_error);
    uint64_t raw_len = flags & EM_HTTP_CHUNKS ? chunked_len(file->size) : file->size;
    ASSERT_EQ(s.raw, raw_len);
    if (flags & EM_HTTP_CHUNKS)
        expect_decoded(&s, file->size);
    ASSERT_EQ(s.sum.len, file->size);
    ASSERT_EQ(csum_value(&s.sum), file->sum);
    if (raw_len <= KEEP) {
        size_t len;
        unsigned char *want = expected_raw(file, flags & EM_HTTP_CHUNKS ? API_CHUNKED : API_STREAM, &len);
        ASSERT(memcmp(s.keep, want, len) == 0);
        free(want);
    }
    printf("  TLS over %s, %s%s%s: %.2f s\n", unix_sock ? "unix" : "tcp", file->name,
           flags & EM_HTTP_CHUNKS ? ", chunked" : "", before_handshake ? ", queued before the handshake" : "",
           secs);
    fflush(stdout);
    tls_pair_finish(&p);
    tls_pair_free(&p);
}

TEST(tls_stream_file_5k) { tls_file_case(F_5K, 0, false, false); }
TEST_TIMEOUT(tls_stream_file_64mib_tcp, 60);
TEST(tls_stream_file_64mib_tcp) { tls_file_case(F_64M, 0, false, false); }
TEST_TIMEOUT(tls_stream_file_64mib_unix, 60);
TEST(tls_stream_file_64mib_unix) { tls_file_case(F_64M, 0, true, false); }
TEST_TIMEOUT(tls_stream_file_64mib_chunked, 60);
TEST(tls_stream_file_64mib_chunked) { tls_file_case(F_64M, EM_HTTP_CHUNKS, false, false); }
TEST(tls_stream_file_empty_chunked) { tls_file_case(F_EMPTY, EM_HTTP_CHUNKS, false, false); }
TEST(tls_stream_file_queued_before_the_handshake) { tls_file_case(F_5K, 0, true, true); }

/* em_start_tls is refused (-EBUSY) while a file is queued: right after the
 * call, and with the file half written; the file then arrives in the
 * clear, whole. After its done, TLS starts on the same connection: the
 * client, having read the whole file, starts it too, and a ping and a pong
 * go through it. */
typedef struct busy {
    em_tls_opts so, co;
    uint64_t total;
    sink s;
    bool client_tls;
    int paused;
    int client_tls_rc, server_tls_rc;
    char got[16]; /* what each end read through TLS */
    size_t got_len;
} busy;

static void busy_client_data(em_conn *c, rec *x, const char *d, size_t n)
{
    busy *b = x->ctx;
    if (b->client_tls) { /* decrypted: the server's pong */
        size_t k = n < sizeof b->got - b->got_len ? n : sizeof b->got - b->got_len;
        memcpy(b->got + b->got_len, d, k);
        b->got_len += k;
        return;
    }
    sink_feed(&b->s, d, n);
    ASSERT_LE(b->s.raw, b->total); /* the server speaks TLS only when asked */
    if (b->s.raw == b->total) {
        b->client_tls_rc = em_start_tls(c, &b->co);
        b->client_tls = true;
    } else if (b->s.raw >= MiB && !b->paused) {
        ASSERT_EQ(em_pause(c), 0); /* the file stays queued at the server */
        b->paused = 1;
    }
}

static void busy_client_handshake(em_conn *c, rec *x)
{
    (void)x;
    ASSERT_EQ(em_send_data(c, "ping", 4), 0);
}

static void busy_server_data(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)x;
    ASSERT_EQ(n, 4);
    ASSERT(memcmp(d, "ping", 4) == 0);
    ASSERT_EQ(em_send_data(c, "pong", 4), 0);
    ASSERT_EQ(close_after(c), 0);
}

static void then_start_server_tls(em_conn *c, fstream *f)
{
    busy *b = f->ctx;
    b->server_tls_rc = em_start_tls(c, &b->so);
}

static bool busy_all_unbound(void *arg)
{
    rec **ends = arg;
    return ends[0]->unbinds && ends[1]->unbinds;
}

TEST_TIMEOUT(tls_start_refused_while_a_file_is_queued, 40);
TEST(tls_start_refused_while_a_file_is_queued)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    busy b = {.so = tls_server_opts("server.pem", NULL), .co = tls_client_opts(),
              .total = files[F_64M].size};
    sink_init(&b.s, false, NULL, 0);
    rec srv = {.tag = 1, .ctx = &b, .on_data = busy_server_data};
    rec cli = {.tag = 2, .ctx = &b, .on_data = busy_client_data,
               .on_handshake = busy_client_handshake};
    rec_pool_new(&srv, 1);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    ASSERT_NOT_NULL(em_connect(r, "127.0.0.1", em_server_port(s), &rec_handler, &cli));
    ASSERT(run_until(r, &cli.completed, 5));
    ASSERT(run_until(r, &srv.pool_used, 5));
    rec *a = &srv.pool[0];
    fstream f = {.id = 1, .then = then_start_server_tls, .ctx = &b};
    ASSERT_EQ(stream_file(a->conn, files[F_64M].path, 0, &f), 0);
    in_call++;
    ASSERT_EQ(em_start_tls(a->conn, &b.so), -EBUSY);
    in_call--;
    ASSERT(run_until(r, &b.paused, 10));
    run_for(r, 0.05);
    ASSERT_EQ(f.calls, 0);
    ASSERT_GT(em_get_outbound_data_size(a->conn), 0);
    in_call++;
    ASSERT_EQ(em_start_tls(a->conn, &b.so), -EBUSY);
    in_call--;
    ASSERT_EQ(em_resume(cli.conn), 0);
    rec *ends[2] = {a, &cli};
    if (!run_until_pred(r, busy_all_unbound, ends, 30))
        FAIL("not unbound: the client read %llu bytes, TLS rc %d/%d, handshakes %d/%d",
             (unsigned long long)b.s.raw, b.server_tls_rc, b.client_tls_rc, a->handshakes,
             cli.handshakes);
    expect_done(&f, 0);
    ASSERT_EQ(b.server_tls_rc, 0);
    ASSERT_EQ(b.client_tls_rc, 0);
    ASSERT_EQ(a->handshakes, 1);
    ASSERT_EQ(cli.handshakes, 1);
    ASSERT_EQ(b.s.raw, files[F_64M].size);
    ASSERT_EQ(csum_value(&b.s.sum), files[F_64M].sum);
    ASSERT_EQ(b.got_len, 4);
    ASSERT(memcmp(b.got, "pong", 4) == 0);
    ASSERT_EQ(a->reason, 0);
    ASSERT_EQ(cli.reason, 0);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    rec_free(&cli);
    ASSERT_NO_FD_LEAK(fd0);
}

/* ============================================================ 11. curl */

/* A tiny HTTP responder: one GET, answered with a chunked file, closed
 * after writing from done. */
typedef struct http {
    int fi;
    fstream f;
    int requests;
    char bad[160];
} http;

static void http_on_data(em_conn *c, rec *x, const char *d, size_t n)
{
    (void)d;
    http *h = x->ctx;
    bool ended = memmem(x->buf, x->len, "\r\n\r\n", 4) != NULL;
    bool ended_before = x->len - n >= 4 && memmem(x->buf, x->len - n, "\r\n\r\n", 4) != NULL;
    if (!ended || ended_before)
        return;
    h->requests++;
    if (x->len < 16 || memcmp(x->buf, "GET / HTTP/1.1\r\n", 16) != 0) {
        snprintf(h->bad, sizeof h->bad, "request: %.*s", (int)(x->len < 60 ? x->len : 60), x->buf);
        ASSERT_EQ(close_now(c), 0);
        return;
    }
    ASSERT_EQ(send_str(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                          "Connection: close\r\n\r\n"), 0);
    ASSERT_EQ(stream_file(c, files[h->fi].path, EM_HTTP_CHUNKS, &h->f), 0);
}

/* curl fetches http://127.0.0.1:port/ into out (--raw: the chunks as they
 * came) while the reactor turns; it must exit 0 within 30 s. */
static void run_curl(em_reactor *r, int port, const char *out, bool raw)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    const char *argv[16];
    int n = 0;
    argv[n++] = "curl";
    argv[n++] = "-q"; /* no .curlrc */
    argv[n++] = "-sS";
    argv[n++] = "--noproxy";
    argv[n++] = "*";
    argv[n++] = "--max-time";
    argv[n++] = "20";
    argv[n++] = "-o";
    argv[n++] = out;
    if (raw)
        argv[n++] = "--raw";
    argv[n++] = url;
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    int err = posix_spawnp(&pid, "curl", &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err)
        FAIL("running curl: %s (scripts/install-deps.sh installs it)", strerror(err));
    double deadline = now_mono() + 30;
    int st = 0;
    pid_t w;
    while ((w = waitpid(pid, &st, WNOHANG)) == 0 && now_mono() < deadline)
        ASSERT_GE(em_run_once(r, 0.005), 0);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        FAIL("curl %s did not finish in 30 s", url);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("curl %s%s: exit status %d", raw ? "--raw " : "", url,
             WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

static void sink_file(sink *s, const char *path)
{
    static unsigned char buf[1 << 20];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        FAIL("open %s: %s", path, strerror(errno));
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        sink_feed(s, buf, (size_t)n);
    ASSERT_EQ(n, 0);
    close(fd);
}

static void curl_case(bool raw)
{
    static const int which[] = {F_EMPTY, F_5K, F_64M};
    const int count = (int)(sizeof which / sizeof which[0]);
    int fd0 = open_fd_count();
    char out[128];
    case_path(out, sizeof out, "curl-out");
    em_reactor *r = new_reactor();
    http h = {0};
    rec srv = {.tag = 1, .store = true, .ctx = &h, .on_data = http_on_data};
    rec_pool_new(&srv, count);
    em_server *s = em_start_server(r, "127.0.0.1", 0, &rec_handler, &srv);
    ASSERT_NOT_NULL(s);
    for (int i = 0; i < count; i++) {
        const tfile *f = &files[which[i]];
        h.fi = which[i];
        h.f = (fstream){.id = i, .then = then_close_after_writing};
        run_curl(r, em_server_port(s), out, raw);
        ASSERT_EQ(h.bad[0], '\0');
        ASSERT_EQ(srv.pool_used, i + 1);
        ASSERT(run_until(r, &srv.pool[i].unbinds, 5));
        ASSERT_EQ(srv.pool[i].reason, 0);
        expect_done(&h.f, 0);
        static unsigned char keep[KEEP];
        sink got;
        sink_init(&got, raw, keep, sizeof keep);
        sink_file(&got, out);
        if (raw) {
            expect_decoded(&got, f->size);
            ASSERT_EQ(got.raw, chunked_len(f->size));
            if (got.raw <= KEEP) {
                size_t len;
                unsigned char *want = expected_raw(f, API_CHUNKED, &len);
                ASSERT(memcmp(got.keep, want, len) == 0);
                free(want);
            }
        }
        if (got.sum.len != f->size || csum_value(&got.sum) != f->sum)
            FAIL("curl%s got %llu bytes for %s (%llu bytes), not the file", raw ? " --raw" : "",
                 (unsigned long long)got.sum.len, f->name, (unsigned long long)f->size);
        ASSERT_EQ(unlink(out), 0);
    }
    ASSERT_EQ(h.requests, count);
    ASSERT_EQ(em_stop_server(s), 0);
    REACTOR_FREE_CHECKED(r);
    rec_free(&srv);
    ASSERT_NO_FD_LEAK(fd0);
}

TEST_TIMEOUT(curl_decodes_chunked_files, 60);
TEST(curl_decodes_chunked_files) { curl_case(false); }
TEST_TIMEOUT(curl_raw_chunks_decoded_by_the_test, 60);
TEST(curl_raw_chunks_decoded_by_the_test) { curl_case(true); }

/* =================================================== 11b. an attached pipe */

/* em_attach on a pipe's write end: files (chunked too) and data in order
 * through the pipe, read by the test; the pipe stays the caller's. */
TEST(attached_pipe_takes_files_in_order)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    int pfd[2];
    ASSERT_EQ(pipe2(pfd, O_CLOEXEC), 0);
    set_nonblock(pfd[0]);
    rec x = {.tag = 4};
    em_conn *c = em_attach(r, pfd[1], &rec_handler, &x);
    ASSERT_NOT_NULL(c);
    fstream a = {.id = 1}, b = {.id = 2, .then = then_close_after_writing};
    ASSERT_EQ(send_str(c, "<pipe>"), 0);
    ASSERT_EQ(stream_file(c, files[F_64M].path, 0, &a), 0);
    ASSERT_EQ(send_str(c, "<between>"), 0);
    ASSERT_EQ(stream_file(c, files[F_5K].path, EM_HTTP_CHUNKS, &b), 0);
    sink s;
    sink_init(&s, false, NULL, 0);
    static unsigned char buf[1 << 16];
    double deadline = now_mono() + 20;
    while (!x.unbinds && now_mono() < deadline) {
        ASSERT_GE(em_run_once(r, 0.002), 0);
        ssize_t n;
        while ((n = read(pfd[0], buf, sizeof buf)) > 0)
            sink_feed(&s, buf, (size_t)n);
    }
    ASSERT_EQ(x.unbinds, 1);
    ASSERT_EQ(x.reason, 0);
    expect_done(&a, 0);
    expect_done(&b, 0);
    csum want = {0};
    char head[32];
    csum_str(&want, "<pipe>");
    csum_file(&want, files[F_64M].path);
    csum_str(&want, "<between>");
    chunk_head(head, sizeof head, files[F_5K].size);
    csum_str(&want, head);
    csum_file(&want, files[F_5K].path);
    csum_str(&want, chunk_tail(files[F_5K].size));
    REACTOR_FREE_CHECKED(r);
    close(pfd[1]); /* the caller's, as em_attach says */
    ssize_t n;
    while ((n = read(pfd[0], buf, sizeof buf)) > 0)
        sink_feed(&s, buf, (size_t)n);
    close(pfd[0]);
    ASSERT_EQ(s.raw, 6 + files[F_64M].size + 9 + chunked_len(files[F_5K].size));
    ASSERT_EQ(csum_value(&s.sum), csum_value(&want));
    ASSERT_NO_FD_LEAK(fd0);
}

/* ====================================== 12. failing at 266fec1: defects
 *
 * Each case below fails on libem at 266fec1, showing a defect:
 *
 *  - error_fifo_is_einval_at_once: the path is opened (open_regular in
 *    src/file.c) without O_NONBLOCK, so a FIFO that no one writes blocks
 *    the call, and the reactor, in open(2) until a writer comes; only then
 *    does fstat refuse it with -EINVAL.
 *  - close_now_cancels_an_empty_file_behind_a_big_one: an empty file
 *    (without EM_HTTP_CHUNKS: nothing queued) counts as written when it is
 *    queued, so when the connection closes before the file ahead of it was
 *    written, it still gets done(0), where the chunked empty file gets
 *    ECANCELED.
 *  - chunked_last_chunk_not_held_back_until_the_peer_reads: the feed is
 *    asked for all it holds, the file and the framing after it, but
 *    sendfile stops at the file's end; the short count reads as a full
 *    socket, so the CRLF and last chunk wait for the socket to poll
 *    writable: a unix socket does so only when its queue is down to a
 *    quarter of SO_SNDBUF, so they (and done) wait for the peer to read.
 *  - chunked_done_only_once_the_last_chunk_is_written: the feed reports
 *    itself written (src/outq.c, put_ahead) when its last bytes are copied
 *    into memory, before they are written; when that write is refused
 *    (EAGAIN), done(0) runs with the end of the last chunk still queued.
 *    Under scripts/fault-inject.sh send=EAGAIN, chunked_sizes_tcp fails
 *    the same way (an empty chunked file: done(0) with nothing written).
 */

/* A FIFO is not a regular file: -EINVAL, at once. Opening one for reading
 * waits for a writer, so a thread opens it for writing after a while: a
 * call that blocks in open(2) returns only then. */
typedef struct late_writer {
    const char *path;
    double delay;
    atomic_int stop, opened;
} late_writer;

static void *open_fifo_late(void *arg)
{
    late_writer *w = arg;
    for (double until = now_mono() + w->delay; now_mono() < until && !atomic_load(&w->stop);)
        sleep_s(0.005);
    while (!atomic_load(&w->stop)) {
        int fd = open(w->path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
            atomic_store(&w->opened, 1);
            close(fd);
            break;
        }
        sleep_s(0.005);
    }
    return NULL;
}

/* How long the call took; *writer: whether the thread's open succeeded
 * (only a reader blocked in open lets it). */
static double timed_fifo_call(em_conn *c, const char *fifo, bool stream, fstream *f, int *rc,
                              bool *writer)
{
    late_writer w = {.path = fifo, .delay = 1.0};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, open_fifo_late, &w), 0);
    double t0 = now_mono();
    *rc = stream ? stream_file(c, fifo, 0, f) : send_file(c, fifo);
    double secs = now_mono() - t0;
    atomic_store(&w.stop, 1);
    pthread_join(t, NULL);
    *writer = atomic_load(&w.opened);
    return secs;
}

TEST(error_fifo_is_einval_at_once)
{
    char fifo[128];
    case_path(fifo, sizeof fifo, "fifo");
    ASSERT_EQ(mkfifo(fifo, 0600), 0);
    sender p;
    sender_open(&p, TCP4);
    fstream never = {.id = 99};
    for (int stream = 0; stream < 2; stream++) {
        int fds = open_fd_count(), rc;
        bool writer;
        double secs = timed_fifo_call(p.c, fifo, stream, &never, &rc, &writer);
        if (secs > 0.5)
            FAIL("%s on a FIFO without a writer blocked the reactor for %.2f s (%s), "
                 "then returned %d (%s)", stream ? "em_stream_file_data" : "em_send_file_data",
                 secs, writer ? "until a writer opened it" : "no writer came", rc,
                 em_strerror(rc));
        ASSERT_EQ(rc, -EINVAL);
        ASSERT_EQ(open_fd_count(), fds);
    }
    ASSERT_EQ(em_get_outbound_data_size(p.c), 0);
    run_for(p.r, 0.05);
    ASSERT_EQ(never.calls, 0);
    sender_finish(&p);
    case_unlink(fifo);
}

/* A plain empty file behind a cancelled one never reached the peer's
 * stream either: it is cancelled too, as the chunked empty file is (its
 * last chunk is queued). */
TEST(close_now_cancels_an_empty_file_behind_a_big_one)
{
    sender p;
    sender_open(&p, TCP4);
    fstream a = {.id = 1}, e = {.id = 2}, ce = {.id = 3};
    ASSERT_EQ(stream_file(p.c, files[F_64M].path, 0, &a), 0);
    ASSERT_EQ(stream_file(p.c, files[F_EMPTY].path, 0, &e), 0);
    ASSERT_EQ(stream_file(p.c, files[F_EMPTY].path, EM_HTTP_CHUNKS, &ce), 0);
    run_for(p.r, 0.05);
    ASSERT_EQ(a.calls + e.calls + ce.calls, 0);
    ASSERT_EQ(close_now(p.c), 0);
    ASSERT(run_until(p.r, &p.x->unbinds, 5));
    expect_done(&a, ECANCELED);
    expect_done(&ce, ECANCELED);
    expect_done(&e, ECANCELED);
    sender_finish(&p);
}

/* A socketpair whose peer reads nothing, with a small send buffer, and a
 * connection attached to one end. */
typedef struct pairconn {
    int sv[2];
    rec x;
    em_conn *c;
} pairconn;

static void pairconn_open(pairconn *q, em_reactor *r, int sndbuf)
{
    *q = (pairconn){.x = {.tag = 3}};
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, q->sv), 0);
    ASSERT_EQ(setsockopt(q->sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
    q->c = em_attach(r, q->sv[0], &rec_handler, &q->x);
    ASSERT_NOT_NULL(q->c);
}

static void pairconn_close(pairconn *q, em_reactor *r)
{
    if (q->x.conn)
        ASSERT_EQ(close_now(q->c), 0);
    for (int turn = 0; turn < 3 && !q->x.unbinds; turn++) /* unbound in the closing turn */
        ASSERT_GE(em_run_once(r, 0), 0);
    ASSERT_EQ(q->x.unbinds, 1);
    close(q->sv[0]);
    close(q->sv[1]);
}

/* Bytes the kernel charges the socket's send side, and its bound. */
static void send_mem(int fd, unsigned *alloc, unsigned *sndbuf)
{
    unsigned mi[SK_MEMINFO_VARS];
    socklen_t len = sizeof mi;
    ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mi, &len), 0);
    *alloc = mi[SK_MEMINFO_WMEM_ALLOC];
    *sndbuf = mi[SK_MEMINFO_SNDBUF];
}

static void turns(em_reactor *r, double secs, fstream *until)
{
    double deadline = now_mono() + secs;
    while (now_mono() < deadline && !(until && until->calls))
        ASSERT_GE(em_run_once(r, 0.005), 0);
}

/* A chunked file after some data, on a socket with room for it all (the
 * same bytes as data go at once): the last chunk follows the file's bytes
 * without waiting for the peer to read. */
TEST(chunked_last_chunk_not_held_back_until_the_peer_reads)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    static char junk[776];
    /* the same bytes as data: all taken at once */
    pairconn q;
    pairconn_open(&q, r, 16384);
    size_t len;
    unsigned char *framed = expected_raw(&files[F_5K], API_CHUNKED, &len);
    ASSERT_EQ(em_send_data(q.c, junk, sizeof junk), 0);
    ASSERT_EQ(em_send_data(q.c, framed, len), 0);
    turns(r, 0.05, NULL);
    ASSERT_EQ(em_get_outbound_data_size(q.c), 0);
    ASSERT_EQ(bytes_out(q.c), sizeof junk + len);
    free(framed);
    pairconn_close(&q, r);
    /* as a file */
    pairconn_open(&q, r, 16384);
    fstream f = {.id = 1};
    ASSERT_EQ(em_send_data(q.c, junk, sizeof junk), 0);
    ASSERT_EQ(stream_file(q.c, files[F_5K].path, EM_HTTP_CHUNKS, &f), 0);
    turns(r, 0.3, &f);
    unsigned alloc, sndbuf;
    send_mem(q.sv[0], &alloc, &sndbuf);
    if (!f.calls)
        FAIL("after 0.3 s, %zu bytes (the end of the last chunk) still queued, %llu written "
             "and not read: the socket would take more (%u bytes charged of %u), but they "
             "wait for the peer to read; done not called",
             em_get_outbound_data_size(q.c), (unsigned long long)bytes_out(q.c), alloc,
             sndbuf);
    expect_done(&f, 0);
    ASSERT_EQ(f.queued_at_done, 0);
    pairconn_close(&q, r);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
}

/* done(0) of a chunked file means its last chunk too was handed to the
 * kernel. The socket (a socketpair whose peer reads nothing) is filled to
 * a different level before each try, and a byte sent after the file makes
 * libem write again once the file's data went: in some tries the file's
 * data fits and its last chunk does not. */
typedef struct tail_try {
    int tries, done_calls, early;
    uint64_t out_at_done, needed;
    size_t first_early_fill;
} tail_try;

static void tail_try_once(em_reactor *r, size_t fill, tail_try *t)
{
    pairconn q;
    pairconn_open(&q, r, 16384);
    static char junk[1 << 16];
    ASSERT_EQ(em_send_data(q.c, junk, fill), 0);
    fstream f = {.id = 1};
    ASSERT_EQ(stream_file(q.c, files[F_5K].path, EM_HTTP_CHUNKS, &f), 0);
    ASSERT_GE(em_run_once(r, 0), 0);
    ASSERT_EQ(send_str(q.c, "x"), 0);
    for (int turn = 0; turn < 3 && !f.calls; turn++) /* the peer reads nothing: 3 are plenty */
        ASSERT_GE(em_run_once(r, 0), 0);
    t->tries++;
    uint64_t needed = fill + chunked_len(files[F_5K].size);
    if (f.calls) {
        t->done_calls++;
        if (f.err == 0 && f.out_at_done < needed && !t->early++) {
            t->out_at_done = f.out_at_done;
            t->needed = needed;
            t->first_early_fill = fill;
        }
    }
    pairconn_close(&q, r);
}

TEST(chunked_done_only_once_the_last_chunk_is_written)
{
    int fd0 = open_fd_count();
    em_reactor *r = new_reactor();
    tail_try t = {0};
    for (size_t fill = 0; fill < 40000; fill += 97)
        tail_try_once(r, fill, &t);
    REACTOR_FREE_CHECKED(r);
    ASSERT_NO_FD_LEAK(fd0);
    ASSERT_GT(t.done_calls, 0);
    ASSERT_LT(t.done_calls, t.tries); /* some tries did fill the socket */
    if (t.early)
        FAIL("done(0) of a chunked 5000-byte file ran when %llu bytes were written, %llu "
             "needed: the end of its last chunk was still queued (%d of %d tries, the first "
             "after %zu bytes of data; socketpair, SO_SNDBUF 16384)",
             (unsigned long long)t.out_at_done, (unsigned long long)t.needed, t.early,
             t.tries, t.first_early_fill);
}
