/* Test runner and shared helpers; see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TESTS 512
#define DEFAULT_TIMEOUT 20

struct test_case {
    const char *name;
    test_fn fn;
    int timeout;
};

static struct test_case tests[MAX_TESTS];
static int ntests;
static struct {
    const char *name;
    int secs;
} timeouts[MAX_TESTS];
static int ntimeouts;
static int result_fd = -1; /* child: where the failure reason goes */

void test_register(const char *name, test_fn fn)
{
    if (ntests >= MAX_TESTS) {
        fprintf(stderr, "harness: too many tests\n");
        abort();
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    tests[ntests].timeout = DEFAULT_TIMEOUT;
    ntests++;
}

void test_set_timeout(const char *name, int secs)
{
    if (ntimeouts >= MAX_TESTS)
        abort();
    timeouts[ntimeouts].name = name;
    timeouts[ntimeouts].secs = secs;
    ntimeouts++;
}

static void (*fixture_setup)(void), (*fixture_teardown)(void);

void test_set_fixture(void (*setup)(void), void (*teardown)(void))
{
    fixture_setup = setup;
    fixture_teardown = teardown;
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "%s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    if (result_fd >= 0) {
        size_t len = strlen(buf), off = 0;
        while (off < len) {
            ssize_t w = write(result_fd, buf + off, len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    } else {
        fprintf(stderr, "%s\n", buf);
    }
    _exit(1);
}

static void run_case(struct test_case *t, int *passed, int *failed)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        perror("pipe2");
        exit(2);
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        close(p[0]);
        result_fd = p[1];
        signal(SIGALRM, SIG_DFL);
        alarm((unsigned)t->timeout);
        t->fn();
        fflush(stdout);
        exit(0);
    }
    close(p[1]);
    char reason[1100];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(p[0], reason + len, sizeof reason - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            if (len >= sizeof reason - 1)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
    reason[len] = '\0';
    close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && len == 0) {
        printf("ok %s\n", t->name);
        (*passed)++;
    } else {
        if (len == 0) {
            if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
                snprintf(reason, sizeof reason, "timeout after %d s", t->timeout);
            else if (WIFSIGNALED(st))
                snprintf(reason, sizeof reason, "killed by signal %d (%s)",
                         WTERMSIG(st), strsignal(WTERMSIG(st)));
            else
                snprintf(reason, sizeof reason,
                         "exit status %d (sanitizer report on stderr?)",
                         WEXITSTATUS(st));
        }
        printf("FAIL %s: %s\n", t->name, reason);
        (*failed)++;
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    for (int i = 0; i < ntimeouts; i++)
        for (int j = 0; j < ntests; j++)
            if (strcmp(tests[j].name, timeouts[i].name) == 0)
                tests[j].timeout = timeouts[i].secs;
    int passed = 0, failed = 0;
    if (fixture_setup)
        fixture_setup();
    for (int i = 0; i < ntests; i++) {
        if (filter && !strstr(tests[i].name, filter))
            continue;
        run_case(&tests[i], &passed, &failed);
    }
    if (fixture_teardown)
        fixture_teardown();
    printf("%d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed ? 1 : 0;
}

/* --------------------------------------------------------------- helpers */

int open_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        test_fail(__FILE__, __LINE__, "opendir /proc/self/fd: %s", strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        n++;
    }
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool run_until(em_reactor *r, const volatile int *flag, double timeout_s)
{
    double deadline = now_mono() + timeout_s;
    while (!*flag) {
        double left = deadline - now_mono();
        if (left <= 0)
            break;
        int rc = em_run_once(r, left < 0.05 ? left : 0.05);
        if (rc < 0 && rc != -EINTR)
            test_fail(__FILE__, __LINE__, "em_run_once: %d (%s)", rc, em_strerror(rc));
    }
    return *flag != 0;
}

bool run_until_pred(em_reactor *r, bool (*pred)(void *arg), void *arg, double timeout_s)
{
    double deadline = now_mono() + timeout_s;
    while (!pred(arg)) {
        double left = deadline - now_mono();
        if (left <= 0)
            return pred(arg);
        int rc = em_run_once(r, left < 0.05 ? left : 0.05);
        if (rc < 0 && rc != -EINTR)
            test_fail(__FILE__, __LINE__, "em_run_once: %d (%s)", rc, em_strerror(rc));
    }
    return true;
}

void free_in_forked_child(em_reactor *r)
{
    pid_t pid = fork();
    if (pid < 0)
        test_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
    if (pid == 0) {
        alarm(5);
        em_reactor_free(r);
        _exit(0);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        test_fail(__FILE__, __LINE__, "the child freeing the reactor failed (status %d)", st);
}

void run_for(em_reactor *r, double secs)
{
    double deadline = now_mono() + secs;
    for (;;) {
        double left = deadline - now_mono();
        if (left <= 0)
            break;
        int rc = em_run_once(r, left < 0.02 ? left : 0.02);
        if (rc < 0 && rc != -EINTR)
            test_fail(__FILE__, __LINE__, "em_run_once: %d (%s)", rc, em_strerror(rc));
    }
}

em_reactor *new_reactor(void)
{
    errno = 0;
    em_reactor *r = em_reactor_new(NULL);
    if (!r)
        test_fail(__FILE__, __LINE__, "em_reactor_new: %s", strerror(errno));
    const char *want = getenv("EM_BACKEND");
    if (want && *want && strcmp(em_backend_name(r), want) != 0)
        test_fail(__FILE__, __LINE__, "backend %s, EM_BACKEND=%s", em_backend_name(r), want);
    return r;
}

em_reactor *new_uring_reactor(void)
{
    em_reactor *r = em_reactor_new(&(em_reactor_opts){.backend = "io_uring"});
    if (!r) /* nothing of the ring to check: why must be the kernel's */
        ASSERT(errno == EM_EBACKEND || errno == ENOSYS || errno == EPERM || errno == EOPNOTSUPP);
    return r;
}

static void fill_addr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, ip, &s6->sin6_addr) != 1)
            test_fail(__FILE__, __LINE__, "bad ip %s", ip);
        *len = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, ip, &s4->sin_addr) != 1)
            test_fail(__FILE__, __LINE__, "bad ip %s", ip);
        *len = sizeof *s4;
    }
}

int tcp_listen_raw(const char *ip, int backlog, int *port_out)
{
    struct sockaddr_storage ss;
    socklen_t len;
    fill_addr(ip, 0, &ss, &len);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        test_fail(__FILE__, __LINE__, "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&ss, len) != 0)
        test_fail(__FILE__, __LINE__, "bind: %s", strerror(errno));
    if (listen(fd, backlog) != 0)
        test_fail(__FILE__, __LINE__, "listen: %s", strerror(errno));
    len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    if (port_out)
        *port_out = ss.ss_family == AF_INET6
                        ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                        : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

int tcp_connect_raw(const char *ip, int port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    fill_addr(ip, port, &ss, &len);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        test_fail(__FILE__, __LINE__, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&ss, len) != 0)
        test_fail(__FILE__, __LINE__, "connect %s:%d: %s", ip, port, strerror(errno));
    return fd;
}

int unix_connect_raw(const char *path)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun.sun_path)
        test_fail(__FILE__, __LINE__, "path too long");
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        test_fail(__FILE__, __LINE__, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0)
        test_fail(__FILE__, __LINE__, "connect %s: %s", path, strerror(errno));
    return fd;
}

void unix_listen_full(const char *path, unix_full *q)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path)
        test_fail(__FILE__, __LINE__, "path too long");
    strcpy(sun.sun_path, path);
    q->n = 0;
    q->listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (q->listener < 0 || bind(q->listener, (struct sockaddr *)&sun, sizeof sun) < 0 ||
        listen(q->listener, 0) < 0)
        test_fail(__FILE__, __LINE__, "unix listener %s: %s", path, strerror(errno));
    while (q->n < 8) {
        int c = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (connect(c, (struct sockaddr *)&sun, sizeof sun) < 0) {
            if (errno != EAGAIN)
                test_fail(__FILE__, __LINE__, "connect %s: %s", path, strerror(errno));
            close(c);
            return; /* full */
        }
        q->fds[q->n++] = c;
    }
    test_fail(__FILE__, __LINE__, "the backlog of %s did not fill", path);
}

void unix_full_close(unix_full *q)
{
    for (int i = 0; i < q->n; i++)
        close(q->fds[i]);
    close(q->listener);
    q->n = 0;
}

void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            test_fail(__FILE__, __LINE__, "write: %s", strerror(errno));
        p += w;
        len -= (size_t)w;
    }
}

int free_port(void)
{
    int port;
    int fd = tcp_listen_raw("127.0.0.1", 1, &port);
    close(fd);
    return port;
}

void make_tmpdir(char *buf, size_t size)
{
    snprintf(buf, size, "/tmp/libem-test-XXXXXX");
    if (!mkdtemp(buf))
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
}

void rm_tmpdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[4096];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    if (rmdir(dir) != 0)
        test_fail(__FILE__, __LINE__, "rmdir %s: %s", dir, strerror(errno));
}

long raise_nofile(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* ------------------------------------------------- a recording handler */

int rec_live;
int in_em_call;

int close_conn(em_conn *c, bool after_writing)
{
    in_em_call++;
    int rc = em_close_connection(c, after_writing);
    in_em_call--;
    return rc;
}

static rec *rec_of(em_conn *c)
{
    rec *x = em_conn_user(c);
    if (!x)
        test_fail(__FILE__, __LINE__, "callback on a connection without post_init");
    if (x->unbinds)
        test_fail(__FILE__, __LINE__, "callback after unbind (tag %d)", x->tag);
    return x;
}

static void rec_post_init(em_conn *c)
{
    rec *a = em_conn_arg(c), *x = a;
    if (!a)
        test_fail(__FILE__, __LINE__, "rec_handler without a rec arg");
    if (a->pool) {
        if (a->pool_used >= a->pool_size)
            test_fail(__FILE__, __LINE__, "rec pool exhausted (%d)", a->pool_size);
        x = &a->pool[a->pool_used++];
    }
    if (em_conn_user(c) != NULL && em_conn_user(c) != x)
        test_fail(__FILE__, __LINE__, "user data does not start NULL");
    em_conn_set_user(c, x);
    x->conn = c;
    x->sig = em_signature(c);
    x->post_inits++;
    __atomic_add_fetch(&rec_live, 1, __ATOMIC_RELAXED);
    if (x->tls)
        x->tls_rc = em_start_tls(c, x->tls);
    if (x->on_post_init)
        x->on_post_init(c, x);
}

static void rec_completed(em_conn *c)
{
    rec *x = rec_of(c);
    x->completed++;
    if (x->on_completed)
        x->on_completed(c, x);
}

static void rec_data(em_conn *c, const char *d, size_t n)
{
    rec *x = rec_of(c);
    if (n == 0)
        test_fail(__FILE__, __LINE__, "receive_data with 0 bytes");
    x->data_calls++;
    if (x->check_pattern) {
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)d[i] != pattern_byte(x->bytes_in + i))
                test_fail(__FILE__, __LINE__, "byte %llu is %u, expected %u (tag %d)",
                          (unsigned long long)(x->bytes_in + i), (unsigned char)d[i],
                          pattern_byte(x->bytes_in + i), x->tag);
    }
    if (x->store) {
        if (x->len + n > x->cap) {
            size_t cap = x->cap ? x->cap : 4096;
            while (cap < x->len + n)
                cap *= 2;
            x->buf = realloc(x->buf, cap);
            if (!x->buf)
                test_fail(__FILE__, __LINE__, "realloc");
            x->cap = cap;
        }
        memcpy(x->buf + x->len, d, n);
        x->len += n;
    }
    x->bytes_in += n;
    if (x->echo) {
        int rc = em_send_data(c, d, n);
        if (rc != 0 && rc != -ENOTCONN)
            test_fail(__FILE__, __LINE__, "echo send_data: %d", rc);
    }
    if (x->on_data)
        x->on_data(c, x, d, n);
}

static void rec_unbind(em_conn *c, int reason)
{
    rec *x = em_conn_user(c);
    if (!x)
        test_fail(__FILE__, __LINE__, "unbind on a connection without post_init");
    if (x->unbinds)
        test_fail(__FILE__, __LINE__, "unbind twice (tag %d)", x->tag);
    if (in_em_call)
        test_fail(__FILE__, __LINE__, "unbind inside em_close_connection (tag %d)", x->tag);
    x->unbinds++;
    x->reason = reason;
    x->sig_found_in_unbind = em_conn_by_sig(em_conn_reactor(c), x->sig) != NULL;
    const char *why = em_tls_error_string(c);
    snprintf(x->tls_error, sizeof x->tls_error, "%s", why ? why : "");
    __atomic_sub_fetch(&rec_live, 1, __ATOMIC_RELAXED);
    x->conn = NULL;
    if (x->on_unbind)
        x->on_unbind(c, x, reason);
}

static void rec_drained(em_conn *c)
{
    rec *x = rec_of(c);
    x->drained++;
    if (x->on_drained)
        x->on_drained(c, x);
}

static void rec_handshake(em_conn *c)
{
    rec *x = rec_of(c);
    x->handshakes++;
    if (x->on_handshake)
        x->on_handshake(c, x);
}

static bool rec_verify(em_conn *c, const char *pem)
{
    rec *x = rec_of(c);
    x->verifies++;
    if (!pem || strncmp(pem, "-----BEGIN CERTIFICATE-----", 27) != 0)
        test_fail(__FILE__, __LINE__, "ssl_verify_peer without a PEM certificate");
    return x->on_verify ? x->on_verify(c, x, pem) : em_tls_preverify_ok(c);
}

const em_handler rec_handler = {
    .post_init = rec_post_init,
    .connection_completed = rec_completed,
    .receive_data = rec_data,
    .unbind = rec_unbind,
    .ssl_handshake_completed = rec_handshake,
    .outbound_drained = rec_drained,
};

const em_handler rec_verify_handler = {
    .post_init = rec_post_init,
    .connection_completed = rec_completed,
    .receive_data = rec_data,
    .unbind = rec_unbind,
    .ssl_handshake_completed = rec_handshake,
    .ssl_verify_peer = rec_verify,
    .outbound_drained = rec_drained,
};

void rec_free(rec *x)
{
    free(x->buf);
    x->buf = NULL;
    x->len = x->cap = 0;
    if (x->pool) {
        for (int i = 0; i < x->pool_size; i++)
            free(x->pool[i].buf);
        free(x->pool);
        x->pool = NULL;
    }
}

rec *rec_pool_new(rec *a, int n)
{
    a->pool = calloc((size_t)n, sizeof(rec));
    if (!a->pool)
        test_fail(__FILE__, __LINE__, "calloc");
    a->pool_size = n;
    a->pool_used = 0;
    for (int i = 0; i < n; i++) {
        rec *x = &a->pool[i];
        x->echo = a->echo;
        x->check_pattern = a->check_pattern;
        x->store = a->store;
        x->on_post_init = a->on_post_init;
        x->on_completed = a->on_completed;
        x->on_data = a->on_data;
        x->on_unbind = a->on_unbind;
        x->on_drained = a->on_drained;
        x->tls = a->tls;
        x->on_handshake = a->on_handshake;
        x->on_verify = a->on_verify;
        x->ctx = a->ctx;
        x->tag = a->tag * 100000 + i;
    }
    return a->pool;
}

void refuse_syscall(long nr, int err)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    ASSERT_EQ(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    ASSERT_EQ(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
}
