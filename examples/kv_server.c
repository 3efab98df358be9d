/* A line-based key-value server on 127.0.0.1, shared by every client.
 *
 * Protocol, one command per line ("\n", a "\r" before it is ignored):
 *   SET key value   -> OK            (value: the rest of the line, spaces too)
 *   GET key         -> VALUE value   or NOT_FOUND
 *   DEL key         -> DELETED       or NOT_FOUND
 *   anything else   -> ERROR ...
 * A line longer than LINE_MAX bytes is answered "ERROR line too long" and
 * dropped; the connection goes on with the next line.
 *
 * Memory is bounded: at most MAX_KEYS entries, each no bigger than a line,
 * and a connection buffers at most one line (em_tokenizer's size limit).
 *
 * Usage: kv_server [port]   (default 8085; 0 picks a free port)
 * Prints "ready port=N" once it is listening. */
#include <em.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX 4096 /* longest command line, delimiter excluded */
#define MAX_KEYS 1024 /* a SET of a new key beyond this is refused */
#define BUCKETS 256   /* a power of two: the hash is masked */

typedef struct entry {
    struct entry *next; /* in its bucket */
    char *key, *value;  /* one allocation: key, NUL, value, NUL */
} entry;

static entry *table[BUCKETS];
static size_t key_count;

/* ------------------------------------------------------------ the table */

static size_t bucket_of(const char *key, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    return h & (BUCKETS - 1);
}

/* The link that points at key's entry (or at NULL where it would go), so
 * that lookup, replace and delete share one walk. */
static entry **find(const char *key, size_t len)
{
    entry **at = &table[bucket_of(key, len)];
    while (*at && !(strlen((*at)->key) == len && memcmp((*at)->key, key, len) == 0))
        at = &(*at)->next;
    return at;
}

static entry *entry_new(const char *key, size_t klen, const char *value, size_t vlen)
{
    entry *e = malloc(sizeof *e + klen + vlen + 2);
    if (!e)
        return NULL;
    e->next = NULL;
    e->key = (char *)(e + 1);
    memcpy(e->key, key, klen);
    e->key[klen] = '\0';
    e->value = e->key + klen + 1;
    memcpy(e->value, value, vlen);
    e->value[vlen] = '\0';
    return e;
}

/* The reply to SET, without its newline. */
static const char *set(const char *key, size_t klen, const char *value, size_t vlen)
{
    entry **at = find(key, klen);
    if (!*at && key_count == MAX_KEYS)
        return "ERROR table full";
    entry *e = entry_new(key, klen, value, vlen);
    if (!e)
        return "ERROR out of memory";
    if (*at) { /* replace: the new entry takes the old one's place */
        e->next = (*at)->next;
        free(*at);
    } else
        key_count++;
    *at = e;
    return "OK";
}

static bool del(const char *key, size_t klen)
{
    entry **at = find(key, klen);
    entry *e = *at;
    if (!e)
        return false;
    *at = e->next;
    free(e);
    key_count--;
    return true;
}

/* ----------------------------------------------------------- the protocol */

static void reply(em_conn *c, const char *text)
{
    em_send_data(c, text, strlen(text));
    em_send_data(c, "\n", 1);
}

/* The text after the first space of [p, end), NULL when there is none. */
static const char *after_space(const char *p, const char *end)
{
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    return sp ? sp + 1 : NULL;
}

static bool is(const char *w, size_t len, const char *name)
{
    return len == strlen(name) && memcmp(w, name, len) == 0;
}

/* SET key value: the key ends at the first space; the value is all the
 * rest, spaces included (it may be empty). */
static void do_set(em_conn *c, const char *args, const char *end)
{
    const char *value = args ? after_space(args, end) : NULL;
    if (!value || value - 1 == args)
        reply(c, "ERROR usage: SET key value");
    else
        reply(c, set(args, (size_t)(value - 1 - args), value, (size_t)(end - value)));
}

/* GET key / DEL key: exactly one non-empty word. */
static void do_get_del(em_conn *c, bool get, const char *key, const char *end)
{
    if (!key || key == end || after_space(key, end)) {
        reply(c, get ? "ERROR usage: GET key" : "ERROR usage: DEL key");
        return;
    }
    size_t klen = (size_t)(end - key);
    if (!get) {
        reply(c, del(key, klen) ? "DELETED" : "NOT_FOUND");
        return;
    }
    entry *e = *find(key, klen);
    if (!e)
        reply(c, "NOT_FOUND");
    else {
        em_send_data(c, "VALUE ", 6);
        reply(c, e->value);
    }
}

static void command(em_conn *c, const char *line, size_t len)
{
    if (len && line[len - 1] == '\r') /* telnet and friends send CRLF */
        len--;
    if (len > LINE_MAX) { /* the limit's one byte of room was not a "\r" */
        reply(c, "ERROR line too long");
        return;
    }
    if (memchr(line, '\0', len)) { /* keys and values are kept as C strings */
        reply(c, "ERROR NUL byte in line");
        return;
    }
    const char *end = line + len, *args = after_space(line, end);
    size_t clen = args ? (size_t)(args - 1 - line) : len;
    if (is(line, clen, "SET"))
        do_set(c, args, end);
    else if (is(line, clen, "GET") || is(line, clen, "DEL"))
        do_get_del(c, line[0] == 'G', args, end);
    else
        reply(c, "ERROR unknown command");
}

static void on_line(void *arg, const char *line, size_t len) { command(arg, line, len); }

/* ------------------------------------------------------- the connections */

static void post_init(em_conn *c)
{
    em_tokenizer *t = em_tokenizer_new("\n", LINE_MAX + 1); /* + 1: a "\r" */
    if (!t) {
        em_close_connection(c, false);
        return;
    }
    em_conn_set_user(c, t);
}

/* The tokenizer reports a line over the limit by its return value, after
 * delivering the lines that follow it in the same call. Fed one line at a
 * time (each piece ends at a "\n" or at the end of the data), a call
 * delivers at most one line or one error, so the replies keep the order of
 * the commands. */
static void receive_data(em_conn *c, const char *data, size_t len)
{
    em_tokenizer *t = em_conn_user(c);
    while (t && len) {
        const char *nl = memchr(data, '\n', len);
        size_t n = nl ? (size_t)(nl - data) + 1 : len;
        int rc = em_tokenizer_extract(t, data, n, on_line, c);
        if (rc == -EMSGSIZE)
            reply(c, "ERROR line too long");
        else if (rc < 0) { /* out of memory: this connection cannot go on */
            em_close_connection(c, false);
            return;
        }
        data += n;
        len -= n;
    }
}

static void unbind(em_conn *c, int reason)
{
    (void)reason;
    em_tokenizer_free(em_conn_user(c));
}

int main(int argc, char **argv)
{
    static const em_handler kv = {
        .post_init = post_init, .receive_data = receive_data, .unbind = unbind};
    int port = argc > 1 ? atoi(argv[1]) : 8085;
    em_reactor *r = em_reactor_new(NULL);
    em_server *s = r ? em_start_server(r, "127.0.0.1", port, &kv, NULL) : NULL;
    if (!s) {
        fprintf(stderr, "kv_server: %s\n", em_strerror(errno));
        em_reactor_free(r);
        return 1;
    }
    /* port 0 picks a free one: say which */
    printf("ready port=%d (%s backend)\n", em_server_port(s), em_backend_name(r));
    fflush(stdout);
    em_run(r);
    em_reactor_free(r);
    return 0;
}
