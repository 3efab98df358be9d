/*
 * watch_filename / watch_pid: a file's changes (inotify) and a process's
 * exit (pidfd), each a watched descriptor of its own, so that each watch
 * has a libem signature the Ruby layer files in @conns. Events reach the
 * watch's receive_data as stock sends them: "modified", "moved",
 * "deleted", "exit". The descriptors are the extension's: closed when the
 * watch ends (unwatch, the file deleted, the process gone, release).
 */
#include <string.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rbem.h"

static const uint32_t file_events =
    IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF | IN_CREATE | IN_DELETE | IN_MOVE;

static int watch_fd(const em_conn *c) { return (int)(rbem_flags(c) >> RBEM_FLAG_BITS); }

/* Hands the descriptor back from libem and closes it; unbind follows. */
static void end_watch(em_conn *c)
{
    int fd = em_detach(c);
    rbem_clear_flags(c, RBEM_FILE_WATCH | RBEM_PID_WATCH);
    if (fd >= 0)
        close(fd);
}

/* The reactor's release unbinds watches that were never ended. */
void rbem_watch_unbound(em_conn *c)
{
    if (rbem_flags(c) & (RBEM_FILE_WATCH | RBEM_PID_WATCH)) {
        close(watch_fd(c));
        rbem_clear_flags(c, RBEM_FILE_WATCH | RBEM_PID_WATCH);
    }
}

static VALUE start_watch(em_reactor *r, int fd, uintptr_t kind)
{
    em_conn *c = em_watch(r, fd, &rbem_handler, NULL);
    if (!c) {
        int err = errno;
        close(fd);
        rb_raise(rbem_eUnsupported, "cannot watch: %s", em_strerror(err));
    }
    rbem_set_flags(c, kind | ((uintptr_t)fd << RBEM_FLAG_BITS));
    em_set_notify_readable(c, true);
    return RBEM_SIG2NUM(em_signature(c));
}

static VALUE t_watch_filename(VALUE self, VALUE name)
{
    (void)self;
    em_reactor *r = rbem_reactor("watch_filename");
    const char *path = StringValueCStr(name);
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        rb_raise(rbem_eUnsupported, "inotify: %s", strerror(errno));
    if (inotify_add_watch(fd, path, file_events) < 0) {
        int err = errno;
        close(fd);
        rb_raise(rbem_eUnsupported, "failed to open file %s for registering with inotify: %s",
                 path, strerror(err));
    }
    return start_watch(r, fd, RBEM_FILE_WATCH);
}

/* Stock has pid watching on kqueue only; a pidfd does it on Linux. */
static VALUE t_watch_pid(VALUE self, VALUE pid)
{
    (void)self;
    em_reactor *r = rbem_reactor("watch_pid");
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)NUM2INT(pid), 0);
    if (fd < 0)
        rb_raise(rbem_eUnsupported, "no pid watching for %d: %s", NUM2INT(pid), strerror(errno));
    return start_watch(r, fd, RBEM_PID_WATCH);
}

static VALUE unwatch(VALUE sig, uintptr_t kind)
{
    em_conn *c = rbem_conn(sig);
    if (!c || !(rbem_flags(c) & kind))
        rb_raise(rbem_eInvalidSignature, "attempted to remove invalid watch signature");
    end_watch(c);
    return Qnil;
}

static VALUE t_unwatch_filename(VALUE self, VALUE sig)
{
    (void)self;
    return unwatch(sig, RBEM_FILE_WATCH);
}

static VALUE t_unwatch_pid(VALUE self, VALUE sig)
{
    (void)self;
    return unwatch(sig, RBEM_PID_WATCH);
}

/* Ruby may end the watch from any event: stop at once when it did. */
static bool deliver(em_sig sig, const char *what)
{
    rbem_event_data(sig, RBEM_CONNECTION_READ, what, strlen(what));
    em_conn *c = rbem_conn(RBEM_SIG2NUM(sig));
    return c && (rbem_flags(c) & RBEM_FILE_WATCH);
}

static bool file_event(em_sig sig, const struct inotify_event *ev)
{
    if ((ev->mask & (IN_MODIFY | IN_CREATE | IN_DELETE | IN_MOVE)) && !deliver(sig, "modified"))
        return false;
    if ((ev->mask & IN_MOVE_SELF) && !deliver(sig, "moved"))
        return false;
    if ((ev->mask & IN_DELETE_SELF) && !deliver(sig, "deleted"))
        return false;
    return !(ev->mask & (IN_DELETE_SELF | IN_IGNORED));
}

static void file_readable(em_conn *c)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    em_sig sig = em_signature(c);
    ssize_t n = read(watch_fd(c), buf, sizeof buf);
    for (char *p = buf; n > 0 && p < buf + n;) {
        const struct inotify_event *ev = (const struct inotify_event *)p;
        if (!file_event(sig, ev)) {
            c = rbem_conn(RBEM_SIG2NUM(sig));
            if (c && (rbem_flags(c) & RBEM_FILE_WATCH))
                end_watch(c); /* the file is gone: so is its watch */
            return;
        }
        p += sizeof *ev + ev->len;
    }
}

void rbem_watch_readable(em_conn *c)
{
    if (rbem_flags(c) & RBEM_FILE_WATCH) {
        file_readable(c);
        return;
    }
    em_sig sig = em_signature(c);
    rbem_event_data(sig, RBEM_CONNECTION_READ, "exit", 4); /* a pidfd reads as exited */
    c = rbem_conn(RBEM_SIG2NUM(sig));
    if (c && (rbem_flags(c) & RBEM_PID_WATCH))
        end_watch(c);
}

void rbem_init_watch(void)
{
    VALUE m = rbem_module;
    rb_define_module_function(m, "watch_filename", t_watch_filename, 1);
    rb_define_module_function(m, "unwatch_filename", t_unwatch_filename, 1);
    rb_define_module_function(m, "watch_pid", t_watch_pid, 1);
    rb_define_module_function(m, "unwatch_pid", t_unwatch_pid, 1);
}
