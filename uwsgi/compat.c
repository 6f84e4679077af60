/*
 * compat.c - which uWSGI this is: the build the plugin was compiled for,
 * the functions it exports (found on a stack by their extent), and the
 * options known to break it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr1 */
#endif
#include <ctype.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "glue.h"

/* ---------------------------------------- the uWSGI it was built for */

/* The plugin reads and writes uWSGI's globals through the struct layout of
 * the header it was compiled with, and that layout changes between uWSGI
 * releases (2.0.28 dropped six_feet_under_lock and added the
 * harakiri_graceful_* fields, 2.0.31 added max_requests_delta) and with
 * uWSGI's build glue.options.  In another uWSGI it would touch the wrong fields
 * and crash, so before touching any it compares what it was built for with
 * the running binary: the version in uwsgi_get_cflags(), which every uWSGI
 * 2.0 exports, and the size of the `uwsgi` object in the dynamic symbols. */

#define FORKSAFE_TEXT(x)       #x
#define FORKSAFE_MACRO_TEXT(x) FORKSAFE_TEXT(x)

/* uWSGI's own build passes the version macros through a shell, which strips
 * their quotes, and `make` passes them as they are: both are read as text. */
static const char *const built_version_text[] = {
    FORKSAFE_MACRO_TEXT(UWSGI_VERSION_BASE), FORKSAFE_MACRO_TEXT(UWSGI_VERSION_MAJOR),
    FORKSAFE_MACRO_TEXT(UWSGI_VERSION_MINOR), FORKSAFE_MACRO_TEXT(UWSGI_VERSION_REVISION)};
#define VERSION_PARTS (sizeof(built_version_text) / sizeof(built_version_text[0]))

/* The first number in TEXT, up to its first blank; -1 if there is none. */
static long first_number(const char *text)
{
    for (; *text && !isspace((unsigned char)*text); text++) {
        if (isdigit((unsigned char)*text))
            return strtol(text, NULL, 10);
    }
    return -1;
}

/* VERSION[] from "-DUWSGI_VERSION_BASE=..." and the others in CFLAGS, or
 * from the macros this file was compiled with (CFLAGS NULL); 0 when every
 * part is there. */
static int uwsgi_version_parts(const char *cflags, long version[VERSION_PARTS])
{
    static const char *const names[] = {"BASE", "MAJOR", "MINOR", "REVISION"};
    size_t i;

    for (i = 0; i < VERSION_PARTS; i++) {
        const char *text = built_version_text[i];
        if (cflags) {
            char define[64];
            snprintf(define, sizeof(define), "-DUWSGI_VERSION_%s=", names[i]);
            text = strstr(cflags, define);
            if (!text)
                return -1;
            text += strlen(define);
        }
        if ((version[i] = first_number(text)) < 0)
            return -1;
    }
    return 0;
}

/* The running uWSGI's version; 0 when known.  uwsgi_get_cflags() builds a
 * new string each time. */
static int running_uwsgi_version(long version[VERSION_PARTS])
{
    char *(*get_cflags)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "uwsgi_get_cflags");
    char *cflags = get_cflags ? get_cflags() : NULL;
    int rc = cflags ? uwsgi_version_parts(cflags, version) : -1;

    free(cflags);
    return rc;
}

static void format_version(const long version[VERSION_PARTS], char *out, size_t size)
{
    if (version[3] > 0)
        snprintf(out, size, "%ld.%ld.%ld.%ld", version[0], version[1], version[2], version[3]);
    else
        snprintf(out, size, "%ld.%ld.%ld", version[0], version[1], version[2]);
}

/* The size (st_size) of the dynamic symbol that starts at ADDRESS, -1 if
 * no exported symbol starts there. */
long glue_symbol_size(const void *address)
{
    Dl_info info;
    const ElfW(Sym) *symbol = NULL;

    if (!address || !dladdr1(address, &info, (void **)&symbol, RTLD_DL_SYMENT) || !symbol ||
        info.dli_saddr != address)
        return -1;
    return (long)symbol->st_size;
}

static void refuse_other_uwsgi(const char *why) __attribute__((noreturn));

static void refuse_other_uwsgi(const char *why)
{
    char binary[PATH_MAX] = "uwsgi";
    const char *plugin = "forksafe";
    Dl_info info;
    ssize_t length = readlink("/proc/self/exe", binary, sizeof(binary) - 1);

    if (length > 0)
        binary[length] = '\0';
    if (dladdr((void *)&forksafe_plugin, &info) && info.dli_fname)
        plugin = info.dli_fname;
    uwsgi_log("[forksafe] %s %s; uWSGI's internals differ between builds, so it cannot run in "
              "%s: rebuild it against this uWSGI (`make UWSGI=%s` in forksafe's source) or "
              "install the forksafe package built for it\n",
              plugin, why, binary, binary);
    exit(1);
}

void glue_check_uwsgi_build(void)
{
    long built[VERSION_PARTS], running[VERSION_PARTS], size = glue_symbol_size(&uwsgi);
    char built_text[64] = "of unknown version", running_text[64], why[320];
    int versions_known =
        uwsgi_version_parts(NULL, built) == 0 && running_uwsgi_version(running) == 0;

    if (versions_known) {
        format_version(built, built_text, sizeof(built_text));
        format_version(running, running_text, sizeof(running_text));
        if (memcmp(built, running, sizeof(built)) != 0) {
            snprintf(why, sizeof(why), "was built for uWSGI %s, and this is uWSGI %s", built_text,
                     running_text);
            refuse_other_uwsgi(why);
        }
    }
    if (size >= 0 && (size_t)size != sizeof(struct uwsgi_server)) {
        snprintf(why, sizeof(why),
                 "was built for a uWSGI %s whose `struct uwsgi_server` has %zu bytes, and in "
                 "this one it has %ld (built with other options)",
                 built_text, sizeof(struct uwsgi_server), size);
        refuse_other_uwsgi(why);
    }
}

/* ------------------------------------------------- functions on the stack */

/* Mules and spoolers are forked without a plugin hook, and the master ends
 * children from many places: the return addresses on the current thread's
 * stack say which of uWSGI's exported functions is running.  Each is
 * compared with the function's extent (its address and st_size in the
 * dynamic symbol table), so no neighbouring function can pass for it. */
/* Looks each function up; returns how many were found. */
size_t glue_find_extents(struct function_extent *functions, size_t count)
{
    size_t i, found = 0;

    for (i = 0; i < count; i++) {
        struct function_extent *f = &functions[i];
        void *start = dlsym(RTLD_DEFAULT, f->name);
        long size = glue_symbol_size(start);

        if (size <= 0)
            continue;
        f->start = (uintptr_t)start;
        f->end = f->start + (uintptr_t)size;
        found++;
    }
    return found;
}

/* The index of the first of FUNCTIONS running on this thread's stack
 * (innermost first), or -1. */
int glue_extent_on_stack(const struct function_extent *functions, size_t count)
{
    void *frames[24];
    int depth, i;
    size_t j;

    depth = backtrace(frames, (int)(sizeof(frames) / sizeof(frames[0])));
    for (i = 0; i < depth; i++) {
        /* a return address points just past its call */
        uintptr_t address = (uintptr_t)frames[i] - 1;
        for (j = 0; j < count; j++) {
            if (address >= functions[j].start && address < functions[j].end)
                return (int)j;
        }
    }
    return -1;
}

/* ------------------------------------------ known-fatal uWSGI options */

/* A flag option's last value, as uWSGI's uwsgi_opt_true reads it. */
int glue_flag_option(const char *name)
{
    int i, on = 0;

    for (i = 0; i < uwsgi.exported_opts_cnt; i++) {
        struct uwsgi_opt *opt = uwsgi.exported_opts[i];
        if (!opt->key || strcmp(opt->key, name) != 0)
            continue;
        on = !opt->value ||
             !(strcasecmp(opt->value, "false") == 0 || strcasecmp(opt->value, "off") == 0 ||
               strcasecmp(opt->value, "no") == 0 || strcmp(opt->value, "0") == 0);
    }
    return on;
}

/* The Python that the python plugin embeds, as MAJOR * 100 + MINOR; 0 if none. */
static int embedded_python_version(void)
{
    const char *(*get_version)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "Py_GetVersion");
    int major, minor;

    if (!get_version || sscanf(get_version(), "%d.%d", &major, &minor) != 2)
        return 0;
    return major * 100 + minor;
}

/* `py-call-osafterfork` alone makes the python plugin call
 * PyOS_AfterFork_Child() in every new worker without PyOS_BeforeFork() in
 * the master.  From Python 3.13 on that releases an import lock nobody took,
 * and Python aborts the worker - every worker, respawned for ever
 * (unbit/uwsgi#2710, in every uWSGI up to 2.0.31 at least).  Said once, at
 * start-up, instead. */
void glue_refuse_fatal_python_options(void)
{
    long running[VERSION_PARTS];
    int python = embedded_python_version(), line;
    char file[PATH_MAX], where[PATH_MAX + 16] = "";

    if (python < 313 || !glue_flag_option("py-call-osafterfork") ||
        glue_flag_option("py-call-uwsgi-fork-hooks"))
        return;
    /* a uWSGI after 2.0.31 may have fixed it */
    if (running_uwsgi_version(running) == 0 &&
        running[0] * 10000 + running[1] * 100 + running[2] > 20031)
        return;
    line = glue_locate_directive("py-call-osafterfork", "true", file, sizeof(file));
    if (line > 0)
        snprintf(where, sizeof(where), "%s:%d: ", file, line);
    uwsgi_log("[forksafe] %spy-call-osafterfork makes Python %d.%d abort every worker at fork "
              "(\"PyMutex_Unlock: unlocking mutex that is not locked\", unbit/uwsgi#2710): use "
              "enable-threads = true and py-call-uwsgi-fork-hooks = true instead, which also "
              "run PyOS_BeforeFork() in the master\n",
              where, python / 100, python % 100);
    if (glue.options.check)
        uwsgi_log("[forksafe] configuration is NOT valid\n");
    exit(1);
}
