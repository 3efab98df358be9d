/* Files sent on a stream connection (em_send_file_data, em_stream_file_data).
 *
 * A file is a feed in the connection's queue (see em_feed in em-internal.h):
 * its place in the queue keeps it in order with the bytes sent before and
 * after it, and the kernel writes it with sendfile() when the socket takes
 * more, so a slow reader costs no memory and a fast one no copy. Writers
 * that need bytes in memory (TLS) read it a buffer at a time, only when it
 * reaches the head of the queue. With EM_HTTP_CHUNKS the file is one HTTP
 * chunk: its size line is the feed's first bytes and the last chunk its
 * final ones.
 *
 * done is never called from inside a libem call the user made: a finished
 * file only marks its stream, and the streams are reported in call order
 * at the end of the connection's flush, or before its unbind. */
#include "em-internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK_HEAD_MAX 20 /* 16 hex digits and CRLF */

struct em_file_stream {
    em_feed feed;
    struct em_file_stream *next; /* the connection's, in call order */
    em_conn *c;
    int fd;
    bool queued; /* some of its bytes are still in the queue */
    int err;     /* why it ended; 0: written */
    size_t size; /* the file's bytes when it was opened */
    em_file_done_fn done;
    void *arg;
    uint8_t head_len, tail_len;
    char head[CHUNK_HEAD_MAX]; /* EM_HTTP_CHUNKS: the chunk's size line */
    char tail[8];              /* the CRLF ending it and the last chunk */
};

typedef struct em_file_stream stream;

static stream *stream_of(em_feed *f) { return EM_CONTAINER_OF(f, stream, feed); }

static size_t feed_len(const stream *s) { return s->head_len + s->size + s->tail_len; }

/* The feed's bytes past the file can only come from memory. */
static ssize_t file_send(em_feed *f, size_t pos, int fd, size_t *max, bool more)
{
    EM_UNUSED(more);
    stream *s = stream_of(f);
    if (pos < s->head_len || pos >= s->head_len + s->size) {
        errno = EINVAL;
        return -1;
    }
    off_t off = (off_t)(pos - s->head_len);
    size_t left = s->size - (size_t)off;
    if (*max > left)
        *max = left; /* the framing after it goes from memory */
    ssize_t n;
    do
        n = sendfile(fd, s->fd, &off, *max);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        errno = EIO; /* the file is shorter than it was */
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINVAL &&
                   errno != ENOSYS && errno != EOPNOTSUPP))
        s->err = errno; /* the connection fails with it; done hears it */
    return n;
}

static size_t copy_out(char *dst, const char *src, size_t len, size_t max)
{
    size_t n = len < max ? len : max;
    memcpy(dst, src, n);
    return n;
}

static ssize_t file_read(em_feed *f, size_t pos, char *buf, size_t max)
{
    stream *s = stream_of(f);
    if (pos < s->head_len)
        return (ssize_t)copy_out(buf, s->head + pos, s->head_len - pos, max);
    size_t off = pos - s->head_len;
    if (off >= s->size)
        return (ssize_t)copy_out(buf, s->tail + (off - s->size), s->tail_len - (off - s->size), max);
    size_t left = s->size - off;
    ssize_t n;
    do
        n = pread(s->fd, buf, max < left ? max : left, (off_t)off);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        s->err = n < 0 ? errno : EIO;
    return n;
}

static void close_file(stream *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static void file_release(em_feed *f, em_reactor *r, bool written)
{
    EM_UNUSED(r);
    stream *s = stream_of(f);
    s->queued = false;
    if (written)
        s->err = 0;
    else if (!s->err) /* the error that closed the connection, if any */
        s->err = s->c->reason ? s->c->reason : ECANCELED;
    close_file(s);
    em__conn_mark_dirty(s->c); /* its flush reports it */
}

static const em_feed_ops file_ops = {.send = file_send, .read = file_read, .release = file_release};

/* ---------------------------------------------------------------- open */

static int regular_size(int fd, size_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    if (!S_ISREG(st.st_mode)) /* a FIFO or a device has no end to send up to */
        return -EINVAL;
    *size = (size_t)st.st_size;
    return 0;
}

static void frame_chunked(stream *s)
{
    static const char last[] = "0\r\n\r\n", end_and_last[] = "\r\n0\r\n\r\n";
    if (s->size) {
        s->head_len = (uint8_t)snprintf(s->head, sizeof s->head, "%zx\r\n", s->size);
        memcpy(s->tail, end_and_last, s->tail_len = sizeof end_and_last - 1);
    } else {
        memcpy(s->tail, last, s->tail_len = sizeof last - 1);
    }
}

static void append_stream(em_cold *k, stream *s)
{
    stream **link = &k->files;
    while (*link)
        link = &(*link)->next;
    *link = s;
}

static int sendable(const em_conn *c)
{
    if (c->flags & (EM_CF_DGRAM | EM_CF_WATCH))
        return -EINVAL;
    return em__conn_takes_data(c) ? 0 : -ENOTCONN;
}

static int queue_stream(em_conn *c, stream *s)
{
    size_t len = feed_len(s);
    if (len && em__outq_feed(c->r, &c->out, &s->feed, len) < 0)
        return -ENOMEM;
    s->queued = len > 0;
    if (!len) /* nothing to write: done at the next flush */
        close_file(s);
    append_stream(c->cold, s);
    em__conn_mark_dirty(c);
    return 0;
}

int em_stream_file_fd(em_conn *c, int fd, unsigned flags,
                      void (*done)(em_conn *c, int err, void *arg), void *arg)
{
    if (!c || fd < 0 || (flags & ~(unsigned)EM_HTTP_CHUNKS))
        return -EINVAL;
    int err = sendable(c);
    size_t size = 0;
    if (err || (err = regular_size(fd, &size)))
        return err;
    stream *s = em__conn_cold(c) ? em__calloc(1, sizeof *s) : NULL;
    if (s) {
        *s = (stream){.feed.ops = &file_ops, .c = c, .fd = fd, .size = size, .done = done,
                      .arg = arg};
        if (flags & EM_HTTP_CHUNKS)
            frame_chunked(s);
        em__conn_unspan(c); /* bytes sent before it go first */
    }
    if (!s || c->state == EM_CS_CLOSING || queue_stream(c, s) < 0) {
        em__free(s); /* the caller keeps fd */
        return em__conn_usable(c) ? -ENOMEM : -ENOTCONN;
    }
    return 0;
}

int em_stream_file_data(em_conn *c, const char *path, unsigned flags,
                        void (*done)(em_conn *c, int err, void *arg), void *arg)
{
    if (!c || !path)
        return -EINVAL;
    int err = sendable(c);
    if (err)
        return err;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    err = em_stream_file_fd(c, fd, flags, done, arg);
    if (err)
        close(fd);
    return err;
}

int em_send_file_data(em_conn *c, const char *path)
{
    return em_stream_file_data(c, path, 0, NULL, NULL);
}

/* -------------------------------------------------------------- report */

static void report(em_conn *c, stream *s, int err)
{
    c->cold->files = s->next;
    if (s->done && !c->r->forked)
        s->done(c, err, s->arg);
    close_file(s);
    em__free(s);
}

void em__files_report(em_conn *c)
{
    stream *s;
    while (c->cold && (s = c->cold->files) && !s->queued)
        report(c, s, s->err);
}

/* Only the files queued before: one that done queues on a closing
 * connection was refused. Files behind one that was cut short were not
 * sent either, even an empty one. */
void em__files_report_all(em_conn *c)
{
    stream *s = c->cold ? c->cold->files : NULL;
    bool cut = false;
    while (s) {
        stream *next = s->next;
        int err = s->queued ? ECANCELED : s->err;
        cut = cut || err;
        report(c, s, cut && !err ? ECANCELED : err);
        s = next;
    }
}

void em__files_free(em_conn *c)
{
    while (c->cold->files) {
        stream *s = c->cold->files;
        c->cold->files = s->next;
        close_file(s);
        em__free(s);
    }
}

void em__files_stand_in(em_conn *c, int null_fd)
{
    for (stream *s = c->cold ? c->cold->files : NULL; s; s = s->next)
        if (s->fd >= 0)
            dup3(null_fd, s->fd, O_CLOEXEC);
}
