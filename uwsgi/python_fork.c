/*
 * python_fork.c - os.fork()'s semantics for the workers, mules and
 * spoolers uWSGI forks from C (forksafe-python-atfork, on by default):
 * the master runs os.register_at_fork's `before` handlers with the GIL and
 * the import lock held, then `after_in_parent`; each child runs
 * `after_in_child` with its interpreter made sane for one thread, before
 * anything else in it touches Python (lib/python_fork.c does the halves).
 *
 * uWSGI forks every child through the executable's fork(): its GOT entry is
 * pointed here (lib/intercept.c), so the halves run right around the fork
 * itself, outside glibc's fork and its atfork lock (a `before` handler may
 * import a C extension that registers an atfork handler of its own).  The
 * master's other forks (daemons, cron, gateways, the Emperor) pass through
 * untouched, as does every fork in a child.  A mule's or a spooler's
 * pre-fork event runs here too, before the before half: a pre-fork handler
 * sees the interpreter as Python code does outside a fork.
 *
 * The python plugin's own fork options do part of this for workers only:
 * py-call-osafterfork (the child half alone: Python 3.13 aborts on it) is
 * taken over; py-call-uwsgi-fork-hooks (both halves, its own GIL handling)
 * and python-worker-override (the child half, in its own worker loop) are
 * refused, so that no handler ever runs twice.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "glue.h"

static pid_t (*libc_fork)(void);

/* --------------------------------------------------- the plugin's options */

static void say_where(const char *name, char *where, size_t size)
{
    char file[PATH_MAX];
    int line = glue_locate_directive(name, "true", file, sizeof(file));

    where[0] = '\0';
    if (line > 0)
        snprintf(where, size, "%s:%d: ", file, line);
}

/* The int uWSGI's option NAME stores its flag in (its struct uwsgi_option's
 * data), or NULL when no loaded plugin has that option. */
static int *flag_storage(const char *name)
{
    struct uwsgi_option *option;

    for (option = uwsgi.options; option && option->name; option++)
        if (strcmp(option->name, name) == 0 && option->func == uwsgi_opt_true)
            return option->data;
    return NULL;
}

/* Stops the start when OPTION is set: it runs os.fork()'s child half
 * itself, and with forksafe's too a handler would run twice. */
static void refuse_with(const char *option, const char *why)
{
    char where[PATH_MAX + 16];

    if (!glue_flag_option(option))
        return;
    say_where(option, where, sizeof(where));
    uwsgi_log("[forksafe] %s%s %s\n", where, option, why);
    if (glue.options.check)
        uwsgi_log("[forksafe] configuration is NOT valid\n");
    exit(1);
}

void glue_settle_python_fork_options(void)
{
    char where[PATH_MAX + 16];
    int *after_fork;

    if (!glue.python_atfork) {
        glue_refuse_fatal_python_options();
        return;
    }
    refuse_with("py-call-uwsgi-fork-hooks",
                "and forksafe-python-atfork would both run os.register_at_fork handlers at each "
                "worker's fork, twice: drop py-call-uwsgi-fork-hooks (forksafe-python-atfork "
                "does what it does, for mules and spoolers too), or set forksafe-python-atfork "
                "= false");
    refuse_with("python-worker-override",
                "makes the python plugin run PyOS_AfterFork_Child in each worker itself: with "
                "forksafe-python-atfork it would run twice (Python 3.13 aborts the worker on "
                "it); set forksafe-python-atfork = false");
    after_fork = flag_storage("py-call-osafterfork");
    if (after_fork && *after_fork) {
        say_where("py-call-osafterfork", where, sizeof(where));
        *after_fork = 0;
        uwsgi_log("[forksafe] %spy-call-osafterfork is left to forksafe-python-atfork, which "
                  "runs what it runs in each new worker (PyOS_AfterFork_Child), and "
                  "PyOS_BeforeFork in the master before it, for mules and spoolers too\n",
                  where);
    }
}

/* ------------------------------------------------------------- the fork */

static void say_subinterpreters_once(void)
{
    static int said;

    if (said++)
        return;
    uwsgi_log("[forksafe] an app runs in a Python sub-interpreter (uWSGI gives each mount point "
              "one): its children are forked without os.fork()'s semantics, since Python keeps "
              "only the main interpreter in a forked child; set single-interpreter = true to "
              "have them\n");
}

FORKSAFE__CHILD_RUNS static pid_t wrapped_fork(void)
{
    int python = 0;
    pid_t pid;

    if (glue_prepare_child_fork() != 0 && glue.python_atfork) {
        int rc = forksafe__python_before_fork();
        if (rc == FORKSAFE__PYTHON_FORK_SUBINTERPRETERS)
            say_subinterpreters_once();
        python = rc == 0;
    }
    pid = libc_fork();
    if (python) {
        if (pid == 0)
            forksafe__python_after_fork_child();
        else
            forksafe__python_after_fork_parent();
    }
    return pid;
}

void glue_wrap_fork(void)
{
    int replaced;

    if (libc_fork)
        return;
    /* Taken before the GOT changes, as reasons.c does for kill(). */
    libc_fork = fork;
    replaced = forksafe__intercept_call("fork", (void *)wrapped_fork);
    if (replaced > 0) {
        glue.fork_wrapped = 1;
        return;
    }
    if (glue.python_atfork && dlsym(RTLD_DEFAULT, "Py_IsInitialized"))
        uwsgi_log("[forksafe] cannot wrap uWSGI's fork() (%s): its children are forked without "
                  "os.fork()'s semantics (forksafe-python-atfork)\n",
                  replaced == 0 ? "the executable makes no call to it"
                                : forksafe__strerror(replaced));
}
