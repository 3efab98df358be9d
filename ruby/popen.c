/*
 * Child processes: invoke_popen and the subprocess getters, and
 * setuid_string (EM.set_effective_user).
 */
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rbem.h"

/* libem reports a program that cannot be executed at once; stock's child
 * fails its exec and exits with status 255, which is what programs see
 * (EM.system('missing') yields a failed status, not an exception). Such a
 * child is made here so that they still do. */
static const char *const failed_exec_argv[] = {"/bin/sh", "-c", "exit 255", NULL};

static bool cannot_exec(int err)
{
    switch (err) {
    case EMFILE: case ENFILE: case ENOMEM: case EAGAIN: case EINVAL: return false;
    default: return true;
    }
}

/* EM.popen passes [program, argv0, args...] (it repeats the first word);
 * libem runs argv[0] found on PATH with argv, so the program is argv0. */
static VALUE t_invoke_popen(VALUE self, VALUE cmd)
{
    (void)self;
    em_reactor *r = rbem_reactor("invoke_popen");
    Check_Type(cmd, T_ARRAY);
    long n = RARRAY_LEN(cmd);
    if (n < 2)
        rb_raise(rb_eRuntimeError, "no popen: empty command");
    VALUE words = rb_ary_subseq(cmd, 1, n - 1); /* keeps the strings alive */
    const char **argv = ALLOCA_N(const char *, n);
    for (long i = 0; i < n - 1; i++) {
        VALUE w = rb_ary_entry(words, i);
        argv[i] = StringValueCStr(w);
    }
    argv[n - 1] = NULL;
    em_conn *c = em_popen(r, argv, &rbem_handler, NULL);
    RB_GC_GUARD(words);
    if (!c && cannot_exec(errno))
        c = em_popen(r, failed_exec_argv, &rbem_handler, NULL);
    if (!c)
        rb_raise(rb_eRuntimeError, "no popen: %s", em_strerror(errno));
    return RBEM_SIG2NUM(em_signature(c));
}

static VALUE t_get_subprocess_pid(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    pid_t pid = c ? em_get_pid(c) : -1;
    return pid < 0 ? Qnil : INT2NUM(pid);
}

/* A real Process::Status can only be made by Ruby itself: through $?,
 * which is put back afterwards when the thread had one. */
static VALUE process_status(pid_t pid, int wstatus)
{
    VALUE saved = rb_last_status_get();
    rb_last_status_set(wstatus, pid);
    VALUE st = rb_last_status_get();
    if (!NIL_P(saved))
        rb_last_status_set(NUM2INT(rb_funcall(saved, rb_intern("to_i"), 0)),
                           NUM2PIDT(rb_funcall(saved, rb_intern("pid"), 0)));
    return st;
}

static VALUE t_get_subprocess_status(VALUE self, VALUE sig)
{
    (void)self;
    em_conn *c = rbem_conn(sig);
    int wstatus;
    if (!c || em_get_status(c, &wstatus) < 0)
        return Qnil;
    return process_status(em_get_pid(c), wstatus);
}

/* EM.set_effective_user: stock gives up root for the named user and
 * exits when it cannot. */
static VALUE t_setuid_string(VALUE self, VALUE name)
{
    (void)self;
    const char *user = StringValueCStr(name);
    struct passwd *pw = getpwnam(user);
    if (!pw)
        rb_raise(rb_eRuntimeError, "setuid_string: unknown user %s", user);
    if (setuid(pw->pw_uid) < 0)
        rb_sys_fail("setuid_string");
    return Qnil;
}

void rbem_init_popen(void)
{
    VALUE m = rbem_module;
    rb_define_module_function(m, "invoke_popen", t_invoke_popen, 1);
    rb_define_module_function(m, "get_subprocess_pid", t_get_subprocess_pid, 1);
    rb_define_module_function(m, "get_subprocess_status", t_get_subprocess_status, 1);
    rb_define_module_function(m, "setuid_string", t_setuid_string, 1);
}
