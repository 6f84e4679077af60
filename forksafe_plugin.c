/*
 * forksafe_plugin.c - the uWSGI glue: the only file that knows uWSGI.
 *
 * It turns uWSGI's scattered hooks into the eight forksafe events and hands
 * them to lib/ for dispatch.  How each event is caught (uWSGI 2.0.21):
 *
 * Handlers are resolved in the private slot's preinit_apps (after the
 * python plugin set up sys.path, before apps load), where the `_forksafe`
 * Python module for pyramid_forksafe is also created.
 *
 *   master-start      master_fixup(0): in the master, config loaded, apps
 *                     preloaded, before the first spooler/worker/mule fork.
 *   pre-fork          workers: pre_uwsgi_fork (chained in front of the
 *                     python plugin's); mules and spoolers: a pthread_atfork
 *                     prepare handler in the master that recognises
 *                     uwsgi_mule() or spooler_start() on the stack (see
 *                     forking_child_kind).
 *   post-fork         post_fork (workers before lazy app loading, mules and
 *                     spoolers).  post_uwsgi_fork only guards the stop and
 *                     reload signals around a worker's fork (see
 *                     block_fork_signals).
 *   post-fork-parent  a scan of worker/mule/spooler pids, run on every master
 *                     cycle and before every pre-fork: uWSGI stores a child's
 *                     pid only after its post_uwsgi_fork hooks ran.
 *   worker-ready      hijack_worker: after apps are loaded, before the first
 *                     request.
 *   worker-exit       atexit in workers, mules and spoolers (the generic
 *                     plugin's, which runs before python's finalizes, and
 *                     forksafe's own, registered in the master before the
 *                     first fork); the reason the master wrote to the
 *                     child's slot as it signalled it (see watched_kill).
 *   child-death       the same scan peeks at zombies with waitid(WNOWAIT)
 *                     before the master reaps them, so the status is known;
 *                     fired when a child ended without completing worker-exit.
 *   master-exit       master_cleanup (shutdown, and before a reload's exec).
 *
 * The hooks pre_uwsgi_fork, post_uwsgi_fork, master_fixup, hijack_worker and
 * the mule/spooler post_fork are only called for request plugins in
 * uwsgi.p[].  forksafe stays a generic plugin for its options and also
 * registers a private struct uwsgi_plugin in a free uwsgi.p[] slot (one still
 * pointing at uWSGI's unconfigured default), choosing from 249 down to 200 and
 * never taking a used slot.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr1 */
#endif
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <netdb.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uwsgi.h>

#include "forksafe_internal.h"

extern struct uwsgi_server uwsgi;

/* ------------------------------------------------------------------ types */

/* Written by a child, read by the master: lives in MAP_SHARED memory. */
struct forksafe_child_shared {
    volatile pid_t pid;
    volatile int exit_state;   /* 0: none, 1: worker-exit running, 2: done */
    volatile int crash_signal; /* the fatal signal uWSGI turned into exit(1) */
    volatile pid_t command;    /* process group of the exec handler it runs */
    /* Why the master ended it, written before its signal left (see
     * watched_kill); only for the process whose pid is end_pid. */
    volatile int end_reason;
    volatile pid_t end_pid;
};

/* What the master remembers of one child slot. */
struct forksafe_child_slot {
    int kind;
    int id;
    pid_t known_pid;
    int forks_seen;
    int death_reported;
    const char *pending_cause; /* "harakiri" when the master killed it */
    pid_t master_killed_pid;   /* the master sent it SIGKILL (watched_kill) */
    pid_t reaped_pid;          /* uWSGI's waitpid() reaped it, with this status */
    int reaped_status;
};

/* The master's view of why the instance is going down, shared with children
 * so that worker-exit can say "reload" or "shutdown". */
enum forksafe_instance_state { INSTANCE_RUNNING, INSTANCE_RELOADING, INSTANCE_STOPPING };

struct forksafe_shared_state {
    volatile int instance_state;
    volatile long long state_changed_ns;
    volatile int fatal; /* a handler stopped the instance (on-error=fatal) */
};

/* -------------------------------------------------------------- prototypes */

static void forksafe_on_load(void);
static int forksafe_init(void);
static void forksafe_preinit_apps(void);
static void forksafe_master_fixup(int);
static void forksafe_master_cycle(void);
static void forksafe_slot_pre_uwsgi_fork(void);
static void forksafe_post_uwsgi_fork(int);
static void forksafe_post_fork(void);
static void forksafe_hijack_worker(void);
static void forksafe_atexit(void);
static void forksafe_harakiri(int);
static void forksafe_master_cleanup(void);
static void forksafe_atfork_prepare(void);
static void forksafe_atfork_child(void);
static void forksafe_atfork_parent(void);
static void guard_child_fork(void);
static void release_child_fork_guard(void);
static void hook_emperor_messages(void);
static void chain_pre_fork_hook(void);
static void find_forking_functions(void);

/* ---------------------------------------------------------------- options */

static struct forksafe_options {
    struct uwsgi_string_list *subscribe;
    struct uwsgi_string_list *set;
    char *settings;
    char *on_error;
    char *timeout;
    char *stats;
    char *history;
    int check;
    int verbose;
} options;

static struct uwsgi_option forksafe_options_table[] = {
    {"forksafe-subscribe", required_argument, 0,
     "subscribe a handler to events: EVENT[,EVENT...] [OPTION...] HANDLER",
     uwsgi_opt_add_string_list, &options.subscribe, 0},
    {"forksafe-settings", required_argument, 0,
     "settings file for the event payload: PATH[#SECTION] (default: the paste file's app:main)",
     uwsgi_opt_set_str, &options.settings, 0},
    {"forksafe-set", required_argument, 0, "override one setting: KEY=VALUE",
     uwsgi_opt_add_string_list, &options.set, 0},
    {"forksafe-on-error", required_argument, 0,
     "what a failed handler does: log (default), exit (the process), fatal (the instance)",
     uwsgi_opt_set_str, &options.on_error, 0},
    {"forksafe-timeout", required_argument, 0,
     "seconds an exec handler may run before it is killed (default 30)", uwsgi_opt_set_str,
     &options.timeout, 0},
    {"forksafe-check", no_argument, 0,
     "print the resolved subscriptions and settings, then exit 0 if valid, 1 if not",
     uwsgi_opt_true, &options.check, 0},
    {"forksafe-stats", required_argument, 0,
     "serve counters and the recent dispatch history as JSON on ADDRESS (unix path or "
     "HOST:PORT), like uWSGI's stats server",
     uwsgi_opt_set_str, &options.stats, 0},
    {"forksafe-history", required_argument, 0,
     "how many handler runs the dispatch history keeps (default 128, 0: none)", uwsgi_opt_set_str,
     &options.history, 0},
    {"forksafe-verbose", no_argument, 0, "log every dispatch with its duration", uwsgi_opt_true,
     &options.verbose, 0},
    {0, 0, 0, 0, 0, 0, 0},
};

/* ------------------------------------------------------------ the plugins */

FORKSAFE_EXPORT struct uwsgi_plugin forksafe_plugin = {
    .name = "forksafe",
    .options = forksafe_options_table,
    .on_load = forksafe_on_load,
    .init = forksafe_init,
    .master_cycle = forksafe_master_cycle,
    .master_cleanup = forksafe_master_cleanup,
    /* Generic plugins' atexit runs before request plugins': worker-exit
     * handlers run before the python plugin's atexit finalizes Python. */
    .atexit = forksafe_atexit,
};

/* The private request-plugin slot: only lifecycle hooks, and the default
 * request handlers copied from the slot it replaces so a stray request with
 * this modifier1 is refused exactly as before. */
static struct uwsgi_plugin lifecycle_plugin = {
    .name = "forksafe-lifecycle",
    .preinit_apps = forksafe_preinit_apps,
    .master_fixup = forksafe_master_fixup,
    .pre_uwsgi_fork = forksafe_slot_pre_uwsgi_fork,
    .post_uwsgi_fork = forksafe_post_uwsgi_fork,
    .post_fork = forksafe_post_fork,
    .hijack_worker = forksafe_hijack_worker,
    .harakiri = forksafe_harakiri,
};

/* ------------------------------------------------------------------ state */

static forksafe__context context;
static int context_ready;
static int lifecycle_slot = -1;

/* Who this process is; set in the master at start, in children at post_fork. */
static forksafe__process self;
static long long self_started_ns;

static struct forksafe_child_shared *children_shared;
/* uWSGI's kill() and waitpid() calls are watched (watch_master_kills). */
static int kills_watched;
static struct forksafe_shared_state *shared_state;
static struct forksafe_child_slot *slots;
static int slot_count;
static int spooler_count;

static int stats_fd = -1; /* forksafe-stats listening socket, master only */
static int stats_thread_started;

static int dispatching; /* a dispatch is running in this process */
/* A stop signal that reached the master before its loop took over the
 * signals (see catch_startup_signals), and the master's own exec handler. */
static volatile sig_atomic_t startup_signal_pending, startup_stop;
static int startup_stop_logged;
static volatile pid_t master_command;
static pid_t startup_master_pid;
static int forking_worker; /* between pre_uwsgi_fork and the scan */
static int master_started; /* master-start fired: children may be forked */
static int signals_wrapped;
static struct sigaction original_actions[NSIG];
/* The stop and reload signals, blocked in the master around a worker's fork
 * (see block_fork_signals), and the one a new worker deferred. */
static int fork_signals_blocked;
static int worker_fork_in_progress; /* from pre_uwsgi_fork to post_uwsgi_fork */
static sigset_t fork_saved_mask;
static volatile sig_atomic_t worker_deferred_signal;
/* The same guard for a mule's or a spooler's fork (see guard_child_fork). */
static volatile sig_atomic_t child_fork_in_progress;
static int child_deferred_signal;

/* --------------------------------------------------------------- logging */

static void forksafe_log_to_uwsgi(void *userdata, int level, const char *message)
{
    (void)userdata;
    (void)level;
    uwsgi_log("[forksafe] %s\n", message);
}

static void die_with_error(const forksafe__error *err) __attribute__((noreturn));

static void die_with_error(const forksafe__error *err)
{
    char text[1200];

    forksafe__error_format(err, text, sizeof(text));
    uwsgi_log("[forksafe] %s\n", text);
    if (options.check)
        uwsgi_log("[forksafe] configuration is NOT valid\n");
    exit(1);
}

static long long now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---------------------------------------------------- the private slot */

/* uWSGI's unconfigured default plugin is not in its header; every unused
 * slot points at it, so the pointer most slots share is that default. */
static struct uwsgi_plugin *unconfigured_default(void)
{
    struct uwsgi_plugin *best = dlsym(RTLD_DEFAULT, "unconfigured_plugin");
    int i, j, best_count = 0;

    if (best)
        return best;
    for (i = 0; i < 256; i++) {
        int count = 0;
        for (j = 0; j < 256; j++)
            count += uwsgi.p[j] == uwsgi.p[i];
        if (count > best_count) {
            best_count = count;
            best = uwsgi.p[i];
        }
    }
    return best;
}

static int claim_lifecycle_slot(void)
{
    struct uwsgi_plugin *unused = unconfigured_default();
    int i;

    if (lifecycle_slot >= 0 && uwsgi.p[lifecycle_slot] == &lifecycle_plugin)
        return 0;
    for (i = 249; i >= 200; i--) {
        if (uwsgi.p[i] == unused) {
            lifecycle_plugin.modifier1 = (uint8_t)i;
            lifecycle_plugin.request = unused->request;
            lifecycle_plugin.after_request = unused->after_request;
            uwsgi.p[i] = &lifecycle_plugin;
            lifecycle_slot = i;
            return 0;
        }
    }
    return -1;
}

/* ---------------------------------------- the uWSGI it was built for */

/* The plugin reads and writes uWSGI's globals through the struct layout of
 * the header it was compiled with, and that layout changes between uWSGI
 * releases (2.0.28 dropped six_feet_under_lock and added the
 * harakiri_graceful_* fields, 2.0.31 added max_requests_delta) and with
 * uWSGI's build options.  In another uWSGI it would touch the wrong fields
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
static long symbol_size(const void *address)
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

static void check_uwsgi_build(void)
{
    long built[VERSION_PARTS], running[VERSION_PARTS], size = symbol_size(&uwsgi);
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

static void forksafe_on_load(void)
{
    check_uwsgi_build();
    /* Claimed this early so the slot's init-time hooks run; checked again in
     * init, after every plugin is loaded, in case a later plugin took it. */
    claim_lifecycle_slot();
}

/* ------------------------------------------------- locating directives */

/* How well line TEXT of a uWSGI ini matches "NAME = VALUE": 3 exactly, 2
 * when VALUE is part of the written value (uWSGI expands %p, %d, ... before
 * forksafe sees it), 1 for the key alone, 0 for another key, a comment or a
 * section header. */
static int directive_match(char *text, const char *name, const char *value)
{
    char *key = text, *equals, *end;

    while (*key == ' ' || *key == '\t')
        key++;
    if (*key == ';' || *key == '#' || *key == '[' || !(equals = strchr(key, '=')))
        return 0;
    for (end = equals; end > key && (end[-1] == ' ' || end[-1] == '\t'); end--)
        ;
    if ((size_t)(end - key) != strlen(name) || strncmp(key, name, (size_t)(end - key)) != 0)
        return 0;
    for (text = equals + 1; *text == ' ' || *text == '\t'; text++)
        ;
    for (end = text + strlen(text); end > text && isspace((unsigned char)end[-1]); end--)
        ;
    *end = '\0';
    if (strcmp(text, value) == 0)
        return 3;
    return strstr(text, value) || strstr(value, text) ? 2 : 1;
}

/* uWSGI does not keep the file and line an option came from.  Errors must
 * name them, so look the directive up in the [uwsgi] section (or the
 * section named after "file.ini:") of the ini files uWSGI was given:
 * comments are skipped, and the line whose value matches best wins. */
static int locate_directive(const char *name, const char *value, char *file, size_t file_size)
{
    int i, best = 0, best_score = 0;

    for (i = 0; i < uwsgi.exported_opts_cnt; i++) {
        struct uwsgi_opt *opt = uwsgi.exported_opts[i];
        char path[PATH_MAX];
        const char *section = "uwsgi";
        FILE *stream;
        char *line = NULL;
        size_t capacity = 0;
        int number = 0, inside = 0;

        if (!opt->key || !opt->value || strcmp(opt->key, "ini") != 0)
            continue;
        snprintf(path, sizeof(path), "%s", opt->value);
        /* "file.ini:section" */
        {
            char *colon = strrchr(path, ':');
            if (colon && access(path, R_OK) != 0) {
                *colon = '\0';
                section = opt->value + (colon - path) + 1;
            }
        }
        stream = fopen(path, "r");
        if (!stream)
            continue;
        while (getline(&line, &capacity, stream) > 0) {
            char *header = line;
            int score;

            number++;
            while (*header == ' ' || *header == '\t')
                header++;
            if (*header == '[') {
                char *close = strchr(header, ']');
                inside = close && (size_t)(close - header - 1) == strlen(section) &&
                         strncmp(header + 1, section, strlen(section)) == 0;
                continue;
            }
            if (!inside || (score = directive_match(line, name, value)) <= best_score)
                continue;
            best_score = score;
            best = number;
            snprintf(file, file_size, "%s", path);
            if (score == 3)
                break;
        }
        free(line);
        fclose(stream);
        if (best_score == 3)
            break;
    }
    if (best > 0)
        return best;
    snprintf(file, file_size, "%s (option)", name);
    return 0;
}

/* An error about a whole settings file (missing, unreadable, no such
 * section) has no line of its own: it belongs to the directive that named
 * the file. */
static void die_with_settings_error(forksafe__error *err, const char *directive, const char *value)
{
    char file[PATH_MAX], text[sizeof(err->source) + sizeof(err->text) + 2];
    int line;

    if (err->line == 0 && (line = locate_directive(directive, value, file, sizeof(file))) > 0) {
        snprintf(text, sizeof(text), "%s: %s", err->source, err->text);
        snprintf(err->source, sizeof(err->source), "%.*s", (int)sizeof(err->source) - 1, file);
        snprintf(err->text, sizeof(err->text), "%.*s", (int)sizeof(err->text) - 1, text);
        err->line = line;
    }
    die_with_error(err);
}

/* ------------------------------------------------------ settings source */

/* The file PasteDeploy will read for the app, from the python plugin's
 * `paste` / `ini-paste` options: "config:PATH[#name]". */
static const char *paste_option(void)
{
    int i;

    for (i = 0; i < uwsgi.exported_opts_cnt; i++) {
        struct uwsgi_opt *opt = uwsgi.exported_opts[i];
        if (!opt->key || !opt->value)
            continue;
        if (strcmp(opt->key, "paste") == 0 || strcmp(opt->key, "ini-paste") == 0 ||
            strcmp(opt->key, "ini-paste-logged") == 0)
            return opt->value;
    }
    return NULL;
}

static const char *ini_option(void)
{
    int i;

    for (i = 0; i < uwsgi.exported_opts_cnt; i++) {
        struct uwsgi_opt *opt = uwsgi.exported_opts[i];
        if (opt->key && opt->value && strcmp(opt->key, "ini") == 0)
            return opt->value;
    }
    return NULL;
}

/* The file of a paste spec "config:PATH[#name]" (or a bare PATH). */
static void paste_file(const char *spec, char *path, size_t path_size)
{
    const char *hash;

    if (strncmp(spec, "config:", 7) == 0)
        spec += 7;
    hash = strchr(spec, '#');
    snprintf(path, path_size, "%.*s", hash ? (int)(hash - spec) : (int)strlen(spec), spec);
}

/* Reads the settings into the context, and into INI the file that may hold
 * a [forksafe] section (*HAVE_INI says whether there is one). */
static void load_settings(forksafe__ini *ini, int *have_ini)
{
    forksafe__error err = {0};
    char path[PATH_MAX];
    const char *paste = paste_option();

    *have_ini = 0;
    if (options.settings) {
        const char *hash = strchr(options.settings, '#');
        size_t length = hash ? (size_t)(hash - options.settings) : strlen(options.settings);
        if (forksafe__settings_load(&context.settings, options.settings, &err) != 0)
            die_with_settings_error(&err, "forksafe-settings", options.settings);
        context.has_settings = 1;
        snprintf(path, sizeof(path), "%.*s", (int)length, options.settings);
        if (length < 5 || strcmp(path + length - 5, ".json") != 0) {
            if (forksafe__ini_load(ini, path, &err) != 0)
                die_with_settings_error(&err, "forksafe-settings", options.settings);
            *have_ini = 1;
        }
    }
    else if (paste) {
        /* The settings loader finds the app section by PasteDeploy's own
         * rules (app:, application:, pipeline:, ...); the ini is read again
         * for [forksafe] and the whole-file check.  Start-up only. */
        const char *spec = strncmp(paste, "config:", 7) == 0 ? paste + 7 : paste;
        paste_file(paste, path, sizeof(path));
        if (forksafe__settings_load(&context.settings, spec, &err) != 0)
            die_with_settings_error(&err, "paste", paste);
        context.has_settings = 1;
        if (forksafe__ini_load(ini, path, &err) != 0)
            die_with_settings_error(&err, "paste", paste);
        *have_ini = 1;
    }
    else if (ini_option()) {
        char *colon;
        snprintf(path, sizeof(path), "%s", ini_option());
        colon = strrchr(path, ':');
        if (colon && access(path, R_OK) != 0)
            *colon = '\0';
        if (forksafe__ini_load(ini, path, &err) != 0)
            die_with_error(&err);
        *have_ini = 1;
        if (forksafe__ini_find(ini, "app:main")) {
            if (forksafe__settings_from_ini(&context.settings, ini, "app:main", &err) != 0)
                die_with_error(&err);
            context.has_settings = 1;
        }
    }

    /* PasteDeploy refuses a file with any ConfigParser problem, in any
     * section; say so now rather than when the app fails to load. */
    if (paste && *have_ini) {
        char paste_path[PATH_MAX];
        paste_file(paste, paste_path, sizeof(paste_path));
        if (strcmp(paste_path, ini->path ? ini->path : "") == 0 &&
            forksafe__ini_check(ini, NULL, &err) != 0) {
            size_t used = strlen(err.text);
            snprintf(err.text + used, sizeof(err.text) - used,
                     " (PasteDeploy will refuse this file: paste = %s)", paste);
            die_with_error(&err);
        }
    }
}

/* ------------------------------------------------------ the hook backend */

/* hook:ACTION:ARGS runs any registered uWSGI hook action (print, write,
 * mount, callret, ...). */
static int hook_resolve(forksafe__context *ctx, void *data, const char *spec, void **handle,
                        forksafe__error *err)
{
    const char *colon = strchr(spec, ':');
    char name[128];
    struct uwsgi_hook *hook;

    (void)ctx;
    (void)data;
    if (!colon) {
        snprintf(name, sizeof(name), "%s", spec);
    }
    else {
        snprintf(name, sizeof(name), "%.*s", (int)(colon - spec), spec);
    }
    hook = uwsgi_hook_by_name(name);
    if (!hook) {
        forksafe__error_set(err, NULL, 0, "no uWSGI hook action named '%s'", name);
        return FORKSAFE__ENOTFOUND;
    }
    *handle = hook;
    return 0;
}

static int hook_invoke(forksafe__context *ctx, void *data, void *handle, const forksafe_event *ev,
                       char *why, size_t why_size)
{
    struct uwsgi_hook *hook = handle;
    const char *spec = ev->subscription->spec + strlen("hook:");
    const char *colon = strchr(spec, ':');
    /* Hook actions may split their argument in place: give each call its
     * own copy. */
    char *argument = forksafe__strdup(colon ? colon + 1 : "");
    int rc;

    (void)ctx;
    (void)data;
    if (!argument) {
        snprintf(why, why_size, "out of memory");
        return FORKSAFE__ENOMEM;
    }
    rc = hook->func(argument);
    forksafe__free(argument);
    if (rc != 0) {
        snprintf(why, why_size, "hook action '%s' returned %d", hook->name, rc);
        return FORKSAFE__EHANDLER;
    }
    return 0;
}

static forksafe__backend hook_backend = {
    .kind = "hook",
    .resolve = hook_resolve,
    .invoke = hook_invoke,
};

/* ----------------------------------------------------------------- init */

static void parse_policy_options(void)
{
    forksafe__error err = {0};
    char file[PATH_MAX];
    int line;

    if (options.on_error) {
        int policy = forksafe__on_error_from_name(options.on_error);
        if (policy < 0) {
            line = locate_directive("forksafe-on-error", options.on_error, file, sizeof(file));
            forksafe__error_set(&err, file, line,
                                "forksafe-on-error must be log, exit or fatal, not '%s'",
                                options.on_error);
            die_with_error(&err);
        }
        context.on_error = policy;
    }
    if (options.timeout) {
        char *end = NULL;
        double timeout = strtod(options.timeout, &end);
        if (!end || *end || end == options.timeout || !(timeout > 0) || timeout > 86400) {
            line = locate_directive("forksafe-timeout", options.timeout, file, sizeof(file));
            forksafe__error_set(&err, file, line,
                                "forksafe-timeout must be a number of seconds between 0 and "
                                "86400, not '%s'",
                                options.timeout);
            die_with_error(&err);
        }
        context.timeout = timeout;
    }
    context.verbose = options.verbose;
}

static unsigned history_size_option(void)
{
    forksafe__error err = {0};
    char file[PATH_MAX], *end = NULL;
    unsigned long size;
    int line;

    if (!options.history)
        return FORKSAFE__HISTORY_DEFAULT;
    errno = 0;
    size = strtoul(options.history, &end, 10);
    if (errno || !end || *end || end == options.history || options.history[0] == '-' ||
        size > FORKSAFE__HISTORY_MAX) {
        line = locate_directive("forksafe-history", options.history, file, sizeof(file));
        forksafe__error_set(&err, file, line,
                            "forksafe-history must be a number of handler runs between 0 and %d, "
                            "not '%s'",
                            FORKSAFE__HISTORY_MAX, options.history);
        die_with_error(&err);
    }
    return (unsigned)size;
}

/* ------------------------------------------------------------ counters */

/* uWSGI's metrics collector (a thread in the master) copies these shared
 * counters into its own table every second, so they reach the stats
 * server, carbon, statsd... and what a killed process added stays. */
static void register_metrics(void)
{
    static const struct {
        const char *suffix;
        size_t offset;
        uint8_t type;
    } fields[] = {
        {"fired", offsetof(forksafe__event_stats, occurred), UWSGI_METRIC_COUNTER},
        {"handlers", offsetof(forksafe__event_stats, handlers_run), UWSGI_METRIC_COUNTER},
        {"failed", offsetof(forksafe__event_stats, failed), UWSGI_METRIC_COUNTER},
        {"last_us", offsetof(forksafe__event_stats, last_duration_us), UWSGI_METRIC_GAUGE},
        {"max_us", offsetof(forksafe__event_stats, max_duration_us), UWSGI_METRIC_GAUGE},
    };
    int type;
    size_t i;

    if (!uwsgi.has_metrics) {
        if (uwsgi.stats)
            uwsgi_log("[forksafe] counters are published in the stats server with "
                      "`enable-metrics = true`\n");
        return;
    }
    for (type = 0; type < FORKSAFE_EVENT_COUNT; type++) {
        for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
            char name[128];
            snprintf(name, sizeof(name), "forksafe.%s.%s",
                     forksafe_event_type_name((forksafe_event_type)type), fields[i].suffix);
            uwsgi_register_metric(name, NULL, fields[i].type, "ptr",
                                  (char *)&context.stats->events[type] + fields[i].offset, 0, NULL);
        }
    }
}

/* Returns a listening socket for a unix path, "@abstract" or HOST:PORT,
 * or -1 with errno set. */
static int listen_on(const char *address)
{
    int fd = -1, saved;

    if (address[0] == '/' || address[0] == '.' || address[0] == '@' || !strchr(address, ':')) {
        struct sockaddr_un where;
        struct stat existing;
        size_t length = strlen(address);

        if (length == 0 || length >= sizeof(where.sun_path)) {
            errno = ENAMETOOLONG;
            return -1;
        }
        memset(&where, 0, sizeof(where));
        where.sun_family = AF_UNIX;
        memcpy(where.sun_path, address, length);
        if (address[0] == '@')
            where.sun_path[0] = '\0';
        /* A socket file left by an earlier run (or the master before a
         * reload) is ours to replace; any other file is not. */
        else if (lstat(address, &existing) == 0 && S_ISSOCK(existing.st_mode))
            unlink(address);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (bind(fd, (struct sockaddr *)&where,
                 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length)) != 0)
            goto fail;
    }
    else {
        struct addrinfo hints, *found = NULL, *ai;
        char host[256];
        const char *colon = strrchr(address, ':');
        size_t host_length = (size_t)(colon - address);
        int rc, yes = 1;

        if (host_length >= sizeof(host) || !colon[1]) {
            errno = EINVAL;
            return -1;
        }
        memcpy(host, address, host_length);
        host[host_length] = '\0';
        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        rc = getaddrinfo(host_length ? host : NULL, colon + 1, &hints, &found);
        if (rc != 0) {
            errno = rc == EAI_SYSTEM ? errno : EINVAL;
            return -1;
        }
        errno = EADDRNOTAVAIL;
        for (ai = found; ai; ai = ai->ai_next) {
            fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
            if (fd < 0)
                continue;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
            if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
                break;
            saved = errno;
            close(fd);
            fd = -1;
            errno = saved;
        }
        freeaddrinfo(found);
        if (fd < 0)
            return -1;
    }
    if (listen(fd, 16) != 0)
        goto fail;
    return fd;
fail:
    saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

static void bind_stats_socket(void)
{
    forksafe__error err = {0};
    char file[PATH_MAX];
    int line;

    /* Close-on-exec: a reload re-executes the master, which binds again. */
    stats_fd = listen_on(options.stats);
    if (stats_fd < 0) {
        line = locate_directive("forksafe-stats", options.stats, file, sizeof(file));
        forksafe__error_set(&err, file, line, "forksafe-stats cannot listen on '%s': %s",
                            options.stats, strerror(errno));
        die_with_error(&err);
    }
    uwsgi_log("[forksafe] stats and dispatch history on %s\n", options.stats);
}

static char *stats_document(void)
{
    json_t *root = forksafe__stats_json(&context);
    char *text;

    if (!root)
        return NULL;
    json_object_set_new(root, "version", json_string(FORKSAFE_VERSION));
    json_object_set_new(root, "container", json_string("uwsgi"));
    json_object_set_new(root, "pid", json_integer(getpid()));
    json_object_set_new(root, "generation", json_integer((json_int_t)uwsgi.reloads));
    text = json_dumps(root, JSON_INDENT(1));
    json_decref(root);
    return text;
}

static void write_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t written = write(fd, data, length);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return;
        data += written;
        length -= (size_t)written;
    }
}

/* One JSON document per connection, then close: the protocol of uWSGI's
 * stats server, so `uwsgi --connect-and-read ADDRESS` and its tools read
 * it too.  A thread, because the master loop has no place for a plugin's
 * socket; it only reads shared memory. */
static void *serve_stats(void *unused)
{
    sigset_t all;

    (void)unused;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        int client = accept(stats_fd, NULL, NULL);
        char *text;

        if (client < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
                continue;
            uwsgi_error("[forksafe] stats accept()");
            return NULL;
        }
        text = stats_document();
        if (text) {
            write_all(client, text, strlen(text));
            write_all(client, "\n", 1);
        }
        free(text);
        close(client);
    }
    return NULL;
}

static void start_stats_thread(void)
{
    pthread_t thread;

    if (!options.stats || stats_thread_started)
        return;
    /* Bound here, not in init: after a reload uWSGI closes inherited
     * sockets it does not recognise, which would take a socket bound
     * earlier with them. */
    bind_stats_socket();
    if (pthread_create(&thread, NULL, serve_stats, NULL) != 0) {
        uwsgi_log("[forksafe] cannot start the stats thread\n");
        exit(1);
    }
    pthread_detach(thread);
    stats_thread_started = 1;
}

static int count_spoolers(void)
{
    struct uwsgi_spooler *spooler;
    int count = 0;

    for (spooler = uwsgi.spoolers; spooler; spooler = spooler->next)
        count++;
    return count;
}

static void *shared_alloc(size_t size)
{
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (memory == MAP_FAILED) {
        uwsgi_error("[forksafe] mmap()");
        exit(1);
    }
    return memory;
}

static void setup_child_tracking(void)
{
    int i, n = 0;

    spooler_count = count_spoolers();
    slot_count = uwsgi.numproc + uwsgi.mules_cnt + spooler_count;
    slots = calloc((size_t)slot_count + 1, sizeof(*slots));
    if (!slots) {
        uwsgi_log("[forksafe] out of memory\n");
        exit(1);
    }
    children_shared = shared_alloc(((size_t)slot_count + 1) * sizeof(*children_shared));
    shared_state = shared_alloc(sizeof(*shared_state));
    for (i = 1; i <= uwsgi.numproc; i++, n++) {
        slots[n].kind = FORKSAFE__WORKER;
        slots[n].id = i;
    }
    for (i = 1; i <= uwsgi.mules_cnt; i++, n++) {
        slots[n].kind = FORKSAFE__MULE;
        slots[n].id = i;
    }
    for (i = 1; i <= spooler_count; i++, n++) {
        slots[n].kind = FORKSAFE__SPOOLER;
        slots[n].id = i;
    }
}

/* ------------------------------------------ known-fatal uWSGI options */

/* A flag option's last value, as uWSGI's uwsgi_opt_true reads it. */
static int flag_option(const char *name)
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
static void refuse_fatal_python_options(void)
{
    long running[VERSION_PARTS];
    int python = embedded_python_version(), line;
    char file[PATH_MAX], where[PATH_MAX + 16] = "";

    if (python < 313 || !flag_option("py-call-osafterfork") ||
        flag_option("py-call-uwsgi-fork-hooks"))
        return;
    /* a uWSGI after 2.0.31 may have fixed it */
    if (running_uwsgi_version(running) == 0 &&
        running[0] * 10000 + running[1] * 100 + running[2] > 20031)
        return;
    line = locate_directive("py-call-osafterfork", "true", file, sizeof(file));
    if (line > 0)
        snprintf(where, sizeof(where), "%s:%d: ", file, line);
    uwsgi_log("[forksafe] %spy-call-osafterfork makes Python %d.%d abort every worker at fork "
              "(\"PyMutex_Unlock: unlocking mutex that is not locked\", unbit/uwsgi#2710): use "
              "enable-threads = true and py-call-uwsgi-fork-hooks = true instead, which also "
              "run PyOS_BeforeFork() in the master\n",
              where, python / 100, python % 100);
    if (options.check)
        uwsgi_log("[forksafe] configuration is NOT valid\n");
    exit(1);
}

static int forksafe_init(void)
{
    forksafe__error err = {0};
    forksafe__ini ini = {0};
    int have_ini = 0;
    struct uwsgi_string_list *item;

    if (claim_lifecycle_slot() != 0) {
        uwsgi_log("[forksafe] no free request-plugin slot between 200 and 249 for the "
                  "lifecycle hooks; unload a plugin that uses those modifiers\n");
        exit(1);
    }
    if (!uwsgi.master_process && !options.check) {
        uwsgi_log("[forksafe] forksafe needs the master process: add `master = true`\n");
        exit(1);
    }
    refuse_fatal_python_options();

    forksafe__alloc_install_json();
    forksafe__python_set_lazy(uwsgi.lazy || uwsgi.lazy_apps);
    if (forksafe__context_init(&context, forksafe_log_to_uwsgi, NULL) != 0 ||
        forksafe__context_add_backend(&context, &hook_backend) != 0 ||
        forksafe__context_add_backend(&context, forksafe__python_backend()) != 0) {
        uwsgi_log("[forksafe] out of memory\n");
        exit(1);
    }
    parse_policy_options();
    if (forksafe__stats_setup(&context, history_size_option()) != 0) {
        uwsgi_log("[forksafe] cannot map shared memory for the counters\n");
        exit(1);
    }
    load_settings(&ini, &have_ini);

    for (item = options.set; item; item = item->next) {
        char file[PATH_MAX];
        int line = locate_directive("forksafe-set", item->value, file, sizeof(file));
        if (!context.has_settings) {
            /* Overrides alone make a settings map. */
            context.has_settings = 1;
        }
        if (forksafe__settings_override(&context.settings, item->value, file, line, &err) != 0)
            die_with_error(&err);
    }

    /* The [forksafe] section first, then the directives, in order. */
    if (have_ini && forksafe__subscribe_ini(&context, &ini, &err) != 0)
        die_with_error(&err);
    for (item = options.subscribe; item; item = item->next) {
        char file[PATH_MAX];
        int line = locate_directive("forksafe-subscribe", item->value, file, sizeof(file));
        if (forksafe__subscribe(&context, item->value, file, line, &err) != 0)
            die_with_error(&err);
    }
    forksafe__ini_free(&ini);

    setup_child_tracking();
    hook_emperor_messages();
    if (!options.check)
        register_metrics();
    self.kind = FORKSAFE__MASTER;
    self.id = 0;
    return 0;
}

/* Handlers are resolved after the language plugins set up their
 * environment (the python plugin adds `pythonpath` in its preinit_apps,
 * which runs before this slot's), before apps load and before any fork. */
static void forksafe_preinit_apps(void)
{
    forksafe__error err = {0};

    if (context_ready)
        return;
    if (forksafe__context_seal(&context, &err) != 0)
        die_with_error(&err);
    context_ready = 1;
    if (options.check) {
        forksafe__context_describe(&context);
        uwsgi_log("[forksafe] configuration is valid\n");
        exit(0);
    }
    if (forksafe__python_bridge_init(&context) != 0) {
        uwsgi_log("[forksafe] cannot create the _forksafe Python module\n");
        exit(1);
    }
    if (pthread_atfork(forksafe_atfork_prepare, forksafe_atfork_parent, forksafe_atfork_child) !=
        0) {
        uwsgi_log("[forksafe] pthread_atfork() failed\n");
        exit(1);
    }
    chain_pre_fork_hook();
    find_forking_functions();
    forksafe__log(&context, FORKSAFE__LOG_INFO,
                  "%zu subscription(s), lifecycle hooks in request-plugin slot %d",
                  context.subscription_count, lifecycle_slot);
}

/* -------------------------------------------------------------- dispatch */

static void fill_self(void)
{
    self.pid = getpid();
    self.ppid = getppid();
}

/* In the master: a stop that a handler caused must not look like an
 * operator's Ctrl-C to a supervisor.  uWSGI ends a dying instance with
 * exit(dying_for_need_app ? UWSGI_FAILED_APP_CODE : 0), the status it uses
 * when the app cannot work, which is what a fatal handler failure means. */
static void mark_fatal(void)
{
    /* An operator's stop was already under way: it stays a normal stop. */
    if (!shared_state || shared_state->instance_state == INSTANCE_STOPPING || startup_stop)
        return;
    shared_state->fatal = 1;
    if (self.kind == FORKSAFE__MASTER)
        uwsgi.status.dying_for_need_app = 1;
}

/* Acts on the strongest failure policy the dispatch reported. */
static void apply_policy(int result, forksafe_event_type type, int exiting)
{
    if (result <= 1)
        return;
    if (result == 1 + FORKSAFE__ON_ERROR_EXIT && self.kind != FORKSAFE__MASTER) {
        if (exiting)
            return;
        uwsgi_log("[forksafe] on-error=exit: %s %d (pid %d) exits after a failed %s handler\n",
                  forksafe__process_kind_name(self.kind), self.id, (int)getpid(),
                  forksafe_event_type_name(type));
        exit(1);
    }
    /* fatal, or exit in the master (which nobody would respawn). */
    uwsgi_log("[forksafe] on-error=%s: stopping the instance after a failed %s handler\n",
              result == 1 + FORKSAFE__ON_ERROR_FATAL ? "fatal" : "exit",
              forksafe_event_type_name(type));
    if (self.kind == FORKSAFE__MASTER) {
        if (type == FORKSAFE_MASTER_START || type == FORKSAFE_MASTER_EXIT || !uwsgi.workers)
            exit(1);
        mark_fatal();
        kill(getpid(), SIGINT);
        return;
    }
    mark_fatal();
    if (uwsgi.workers && uwsgi.workers[0].pid > 0)
        kill(uwsgi.workers[0].pid, SIGINT);
    if (!exiting)
        exit(1);
}

static void fire(forksafe_event_type type, const forksafe__process *child, int status_known,
                 int status, const char *cause, const char *reason, int exiting)
{
    forksafe__occurrence occ;
    int result;

    if (!context_ready)
        return;
    if (startup_stop && self.kind == FORKSAFE__MASTER && type != FORKSAFE_MASTER_EXIT) {
        /* Stopping before the master loop even started: the children
         * forked meanwhile are stopped as soon as it does, and a slow
         * handler here would only hold the stop back. */
        if (!startup_stop_logged++)
            uwsgi_log("[forksafe] stop requested during start-up: the master runs no more "
                      "handlers until it exits\n");
        return;
    }
    fill_self();
    memset(&occ, 0, sizeof(occ));
    occ.type = type;
    occ.self = self;
    occ.child = child;
    occ.child_status_known = status_known;
    occ.child_status = status;
    occ.child_cause = cause;
    occ.reason = reason;
    occ.generation = (int)uwsgi.reloads;
    dispatching++;
    /* Always: dispatch counts the occurrence even when nobody listens, and
     * runs pyramid_forksafe's listeners after the subscriptions. */
    result = forksafe__dispatch(&context, &occ);
    dispatching--;
    apply_policy(result, type, exiting);
}

/* ------------------------------------------------------- master: start */

static void wrap_master_signals(void);
static void catch_startup_signals(void);
static void watch_master_kills(void);
static void register_exit_hook(void);
static void unblock_fork_signals(void);

static void forksafe_master_fixup(int in_child)
{
    if (in_child || !context_ready)
        return;
    if (getpid() != uwsgi.workers[0].pid && uwsgi.workers[0].pid > 0)
        return;
    self.kind = FORKSAFE__MASTER;
    self.id = 0;
    self.respawn = 0;
    master_started = 1;
    start_stats_thread();
    catch_startup_signals();
    watch_master_kills();
    register_exit_hook();
    fire(FORKSAFE_MASTER_START, NULL, 0, 0, NULL, NULL, 0);
}

/* -------------------------------------------- master: children tracking */

static int slot_index(int kind, int id)
{
    switch (kind) {
    case FORKSAFE__WORKER:
        return id - 1;
    case FORKSAFE__MULE:
        return uwsgi.numproc + id - 1;
    case FORKSAFE__SPOOLER:
        return uwsgi.numproc + uwsgi.mules_cnt + id - 1;
    default:
        return -1;
    }
}

static struct uwsgi_spooler *spooler_by_id(int id)
{
    struct uwsgi_spooler *spooler = uwsgi.spoolers;

    while (spooler && --id > 0)
        spooler = spooler->next;
    return spooler;
}

static pid_t current_pid(const struct forksafe_child_slot *slot)
{
    struct uwsgi_spooler *spooler;

    switch (slot->kind) {
    case FORKSAFE__WORKER:
        return uwsgi.workers[slot->id].pid;
    case FORKSAFE__MULE:
        return uwsgi.mules[slot->id - 1].pid;
    case FORKSAFE__SPOOLER:
        spooler = spooler_by_id(slot->id);
        return spooler ? spooler->pid : 0;
    default:
        return 0;
    }
}

static int is_master(void)
{
    return uwsgi.workers && getpid() == uwsgi.workers[0].pid;
}

static void report_death(struct forksafe_child_slot *slot, int index, int status_known, int status)
{
    struct forksafe_child_shared *shared = &children_shared[index];
    forksafe__process child = {0};
    const char *cause;

    slot->death_reported = 1;
    if (shared->pid == slot->known_pid && shared->command > 0) {
        /* It died in an exec handler (SIGKILL, harakiri, mercy): the
         * command, in a process group of its own, would outlive it.  The
         * child cleared the slot before reaping the command, so the group
         * is the one it started, dead at most one master cycle ago. */
        pid_t group = shared->command;
        shared->command = 0;
        if (kill(-group, SIGKILL) == 0)
            uwsgi_log("[forksafe] killed the exec handler (process group %d) that %s %d "
                      "(pid %d) left running\n",
                      (int)group, forksafe__process_kind_name(slot->kind), slot->id,
                      (int)slot->known_pid);
    }
    if (shared->pid == slot->known_pid && shared->exit_state == 2)
        return;
    child.kind = slot->kind;
    child.id = slot->id;
    child.pid = slot->known_pid;
    child.respawn = slot->forks_seen - 1;
    if (shared->pid == slot->known_pid && shared->crash_signal) {
        /* uWSGI's crash handler logs a backtrace and exits; report what
         * killed the process, not the exit(1) that followed. */
        status_known = 1;
        status = shared->crash_signal;
        cause = "crash";
    }
    else if (slot->pending_cause)
        cause = slot->pending_cause;
    else if (!status_known)
        cause = "unknown";
    else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL &&
             (slot->master_killed_pid == slot->known_pid ||
              (!kills_watched && shared_state->instance_state != INSTANCE_RUNNING)))
        /* uWSGI SIGKILLs spoolers, and workers past their mercy, when the
         * instance stops or reloads; workers for evil-reload-on-*, cheap
         * mode and idle. */
        cause = "killed-by-master";
    else if (WIFSIGNALED(status))
        cause = "signal";
    else
        cause = "exit";
    slot->pending_cause = NULL;
    fire(FORKSAFE_CHILD_DEATH, &child, status_known, status, cause, NULL, 0);
}

/* Reports births the master has recorded since the last scan, and deaths
 * of children it has not reaped yet (with their status) or has reaped
 * already (status unknown). */
static void scan_children(void)
{
    int i;

    if (!slots || !is_master())
        return;
    for (i = 0; i < slot_count; i++) {
        struct forksafe_child_slot *slot = &slots[i];
        pid_t pid = current_pid(slot);

        if (slot->known_pid > 0 && !slot->death_reported) {
            siginfo_t info;
            int peeked;
            memset(&info, 0, sizeof(info));
            peeked = waitid(P_PID, (id_t)slot->known_pid, &info, WEXITED | WNOHANG | WNOWAIT);
            if (peeked == 0 && info.si_pid == slot->known_pid) {
                int status = info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8
                                                        : (info.si_status & 0x7f);
                report_death(slot, i, 1, status);
            }
            else if ((peeked != 0 && errno == ECHILD) || pid != slot->known_pid) {
                /* Already reaped by uWSGI (it does not always clear the
                 * slot's pid, e.g. for spoolers at shutdown): its waitpid()
                 * told watched_waitpid the status. */
                if (slot->reaped_pid == slot->known_pid)
                    report_death(slot, i, 1, slot->reaped_status);
                else
                    report_death(slot, i, 0, 0);
            }
        }
        if (pid > 0 && pid != slot->known_pid) {
            forksafe__process child = {0};
            slot->known_pid = pid;
            slot->death_reported = 0;
            slot->forks_seen++;
            child.kind = slot->kind;
            child.id = slot->id;
            child.pid = pid;
            child.respawn = slot->forks_seen - 1;
            fire(FORKSAFE_POST_FORK_PARENT, &child, 0, 0, NULL, NULL, 0);
        }
    }
}

static void forksafe_master_cycle(void)
{
    if (!context_ready || !is_master())
        return;
    if (!signals_wrapped) {
        wrap_master_signals();
        /* uWSGI's handlers are in place now: hand them the stop (or
         * reload) that arrived before. */
        if (startup_signal_pending) {
            startup_stop = 0;
            kill(getpid(), startup_signal_pending);
            startup_signal_pending = 0;
        }
    }
    /* The last fork's pid is stored by now (see block_fork_signals). */
    unblock_fork_signals();
    /* FIFO commands and touch-reload change the status without a signal. */
    if (shared_state->instance_state == INSTANCE_RUNNING) {
        if (uwsgi.status.gracefully_reloading || uwsgi.status.brutally_reloading) {
            shared_state->instance_state = INSTANCE_RELOADING;
            shared_state->state_changed_ns = now_ns();
        }
        else if (uwsgi.status.gracefully_destroying || uwsgi.status.brutally_destroying) {
            shared_state->instance_state = INSTANCE_STOPPING;
            shared_state->state_changed_ns = now_ns();
        }
    }
    scan_children();
}

static void forksafe_harakiri(int wid)
{
    if (slots && wid >= 1 && wid <= uwsgi.numproc)
        slots[slot_index(FORKSAFE__WORKER, wid)].pending_cause = "harakiri";
}

/* ---------------------------------------------------- master: pre-fork */

static void fire_pre_fork(int kind, int id)
{
    forksafe__process child = {0};
    int index = slot_index(kind, id);

    child.kind = kind;
    child.id = id;
    child.respawn = index >= 0 ? slots[index].forks_seen : 0;
    fire(FORKSAFE_PRE_FORK, &child, 0, 0, NULL, NULL, 0);
}

/* uWSGI bumps respawn_count of the worker it is about to fork; the slot
 * whose count moved since the last look is the one. */
static int worker_being_forked(void)
{
    int i;

    for (i = 1; i <= uwsgi.numproc; i++) {
        struct forksafe_child_slot *slot = &slots[slot_index(FORKSAFE__WORKER, i)];
        if (uwsgi.workers[i].pid == 0 && !uwsgi.workers[i].cheaped &&
            (int)uwsgi.workers[i].respawn_count > slot->forks_seen)
            return i;
    }
    return 0;
}

/* uWSGI 2.0.21 loses a stop or reload signal that the master handles
 * while it forks a worker, and then waits for that worker for ever (or
 * for worker-reload-mercy):
 *  - in the master, from the fork until uwsgi_respawn_worker() stores the
 *    new pid (after every post_uwsgi_fork hook), the worker's slot holds
 *    pid 0, so kill_them_all()/grace_them_all() skip it and nobody ever
 *    tells that worker;
 *  - in the worker, until uwsgi_worker_run() installs its own handlers,
 *    the master's are still in place: the master's SIGINT (or SIGHUP)
 *    runs kill_them_all() (or grace_them_all()) inside the new worker,
 *    which signals its siblings, marks only its own copy of the state as
 *    dying, and serves on.
 * So the master blocks these signals from the end of pre-fork until its
 * next master cycle or pre-fork (the pid is stored by then), and a new
 * worker holds on to what arrives until uWSGI's handlers are in place
 * (hijack_worker), then raises it again for them.  pre-fork handlers run
 * unblocked, so a stop still cuts a slow start-up handler short. */
static void block_fork_signals(void)
{
    static const int guarded[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP};
    sigset_t set;
    size_t i;

    if (fork_signals_blocked)
        return;
    sigemptyset(&set);
    for (i = 0; i < sizeof(guarded) / sizeof(guarded[0]); i++)
        sigaddset(&set, guarded[i]);
    if (pthread_sigmask(SIG_BLOCK, &set, &fork_saved_mask) == 0)
        fork_signals_blocked = 1;
}

static void unblock_fork_signals(void)
{
    if (!fork_signals_blocked)
        return;
    fork_signals_blocked = 0;
    pthread_sigmask(SIG_SETMASK, &fork_saved_mask, NULL);
}

/* What uWSGI's master sends its workers for the stop or reload under way
 * (kill_them_all, reap_them_all, grace_them_all, gracefully_kill_them_all),
 * 0 if none. */
static int signal_for_workers(void)
{
    if (uwsgi.status.brutally_destroying)
        return SIGINT;
    if (uwsgi.status.brutally_reloading)
        return SIGTERM;
    if (uwsgi.status.gracefully_destroying || uwsgi.status.gracefully_reloading)
        return SIGHUP;
    return 0;
}

/* A new worker's handler until uWSGI's own: a stop beats a reload. */
static void defer_worker_signal(int signum)
{
    if (!worker_deferred_signal || signum != SIGHUP)
        worker_deferred_signal = signum;
}

static void forksafe_pre_uwsgi_fork(void)
{
    int wid;

    if (!context_ready || !is_master())
        return;
    unblock_fork_signals();
    scan_children();
    wid = worker_being_forked();
    forking_worker = 1;
    if (wid > 0)
        fire_pre_fork(FORKSAFE__WORKER, wid);
    block_fork_signals();
    worker_fork_in_progress = 1;
    /* A stop or reload the master handled since it reaped this slot's
     * last worker skipped the slot (pid 0), and uWSGI forks anyway: the
     * new worker gets the signal its siblings got, at hijack_worker. */
    worker_deferred_signal = signal_for_workers();
}

/* The python plugin's pre_uwsgi_fork (py-call-uwsgi-fork-hooks with
 * threads) takes the GIL and runs PyOS_BeforeFork(), which from Python 3.13
 * on holds the runtime's HEAD_LOCK until the fork: a pre-fork handler that
 * forks or starts a thread after it would wait for that lock for ever.
 * uWSGI calls the hooks in slot order and the python plugin's slot (0)
 * comes before forksafe's, so forksafe's pre-fork is chained in front of the
 * first plugin's hook; forksafe's own slot then has nothing left to do. */
static void (*first_pre_fork_hook)(void);
static int pre_fork_ran_early; /* by the chained hook, in this hook loop */

static void forksafe_pre_uwsgi_fork(void);

static void chained_pre_uwsgi_fork(void)
{
    /* the same plugin can fill several slots: once per loop */
    if (!pre_fork_ran_early) {
        forksafe_pre_uwsgi_fork();
        pre_fork_ran_early = 1;
    }
    first_pre_fork_hook();
}

static void forksafe_slot_pre_uwsgi_fork(void)
{
    if (pre_fork_ran_early) {
        pre_fork_ran_early = 0;
        return;
    }
    forksafe_pre_uwsgi_fork();
}

static void chain_pre_fork_hook(void)
{
    int i;

    for (i = 0; i < lifecycle_slot && !first_pre_fork_hook; i++) {
        struct uwsgi_plugin *plugin = uwsgi.p[i];
        if (plugin && plugin->pre_uwsgi_fork && plugin != &lifecycle_plugin) {
            first_pre_fork_hook = plugin->pre_uwsgi_fork;
            plugin->pre_uwsgi_fork = chained_pre_uwsgi_fork;
        }
    }
}

/* Mules, gateways and daemons are forked while the signals may still be
 * blocked after the last worker's fork (until the first master cycle):
 * they must not keep the master's mask (a daemon would even keep it
 * across exec). */
static void forksafe_atfork_child(void)
{
    if (fork_signals_blocked && !worker_fork_in_progress && !child_fork_in_progress)
        unblock_fork_signals();
}

/* uWSGI 2.0.21 has the same gaps around a mule's and a spooler's fork as
 * around a worker's (see block_fork_signals): until uwsgi_mule() or
 * spooler_start() installs the child's own handlers, a stop or reload
 * runs the master's handler in the child (which then curses its siblings
 * and lives on until the master's mercy kills it), and the master skips
 * the child until it stores the pid.  So the master blocks the signals
 * before the fork until its next master cycle or pre-fork, and the child
 * keeps them blocked until forksafe's post_fork (after uWSGI's handlers),
 * then takes what arrived, and what its siblings got meanwhile. */
static void guard_child_fork(void)
{
    block_fork_signals();
    if (!fork_signals_blocked)
        return;
    child_fork_in_progress = 1;
    child_deferred_signal = signal_for_workers();
}

static void forksafe_atfork_parent(void)
{
    child_fork_in_progress = 0;
}

static void release_child_fork_guard(void)
{
    int deferred = child_deferred_signal;

    if (!child_fork_in_progress)
        return;
    child_fork_in_progress = 0;
    child_deferred_signal = 0;
    unblock_fork_signals();
    if (deferred)
        kill(getpid(), deferred);
}

static void forksafe_post_uwsgi_fork(int in_child)
{
    /* The signals uwsgi_worker_run() gives handlers of its own; SIGQUIT
     * keeps what uWSGI leaves a worker. */
    static const int deferred[] = {SIGINT, SIGTERM, SIGHUP};
    size_t i;

    worker_fork_in_progress = 0;
    if (!in_child) {
        worker_deferred_signal = 0;
        return;
    }
    if (!fork_signals_blocked)
        return;
    for (i = 0; i < sizeof(deferred) / sizeof(deferred[0]); i++) {
        struct sigaction ours;
        memset(&ours, 0, sizeof(ours));
        ours.sa_handler = defer_worker_signal;
        sigemptyset(&ours.sa_mask);
        sigaction(deferred[i], &ours, NULL);
    }
    unblock_fork_signals();
}

static int pid_is_gone(pid_t pid)
{
    return pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH);
}

/* Mules and spoolers are forked without a plugin hook, and the master also
 * forks for exec hooks, daemons, cron, gateways and the Emperor.  uWSGI forks
 * a mule only in uwsgi_mule() and a spooler only in spooler_start(), both
 * exported, so at each fork the return addresses on the forking thread's
 * stack say exactly which of them, if either, is forking: they are compared
 * with each function's extent (its address and st_size in the dynamic
 * symbol table), so no neighbouring function can pass for it. */
struct function_extent {
    const char *name;
    uintptr_t start, end;
};

/* Looks each function up; returns how many were found. */
static size_t find_extents(struct function_extent *functions, size_t count)
{
    size_t i, found = 0;

    for (i = 0; i < count; i++) {
        struct function_extent *f = &functions[i];
        void *start = dlsym(RTLD_DEFAULT, f->name);
        long size = symbol_size(start);

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
static int extent_on_stack(const struct function_extent *functions, size_t count)
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

static struct function_extent forking_functions[] = {
    {"uwsgi_mule", 0, 0},
    {"spooler_start", 0, 0},
};
#define FORKING_FUNCTIONS (sizeof(forking_functions) / sizeof(forking_functions[0]))
static int fork_callers_known;

static void find_forking_functions(void)
{
    void *frames[4];

    fork_callers_known = find_extents(forking_functions, FORKING_FUNCTIONS) == FORKING_FUNCTIONS;
    if (!fork_callers_known)
        uwsgi_log("[forksafe] this uWSGI does not export uwsgi_mule() and spooler_start(): "
                  "mule and spooler forks are told apart from the master's other forks by "
                  "which slots have no live process\n");
    /* The first backtrace() loads the unwinder (a dlopen): here, not in a
     * fork handler. */
    backtrace(frames, 4);
}

/* FORKSAFE__MULE or FORKSAFE__SPOOLER when uwsgi_mule() or spooler_start()
 * is forking, 0 for any other fork, -1 when that cannot be known. */
static int forking_child_kind(void)
{
    if (!fork_callers_known)
        return -1;
    switch (extent_on_stack(forking_functions, FORKING_FUNCTIONS)) {
    case 0:
        return FORKSAFE__MULE;
    case 1:
        return FORKSAFE__SPOOLER;
    default:
        return 0;
    }
}

/* Which mule or spooler: the one whose slot has no live process.  uWSGI
 * forks them in order at start (each pid stored before the next fork) and
 * respawns a dead one right after reaping it. */
static void forksafe_atfork_prepare(void)
{
    struct uwsgi_spooler *spooler;
    int i, id, kind;

    if (!context_ready || !slots || dispatching || !master_started || !is_master())
        return;
    if (forking_worker) {
        forking_worker = 0;
        return;
    }
    kind = forking_child_kind();
    if (kind == 0)
        return;
    for (spooler = uwsgi.spoolers, id = 1; kind != FORKSAFE__MULE && spooler;
         spooler = spooler->next, id++) {
        if (spooler->mode == UWSGI_SPOOLER_EXTERNAL)
            continue;
        if (pid_is_gone(spooler->pid) &&
            slots[slot_index(FORKSAFE__SPOOLER, id)].known_pid == spooler->pid) {
            fire_pre_fork(FORKSAFE__SPOOLER, id);
            guard_child_fork();
            return;
        }
    }
    for (i = 1; kind != FORKSAFE__SPOOLER && i <= uwsgi.mules_cnt; i++) {
        pid_t pid = uwsgi.mules[i - 1].pid;
        if (pid_is_gone(pid) && slots[slot_index(FORKSAFE__MULE, i)].known_pid == pid) {
            fire_pre_fork(FORKSAFE__MULE, i);
            guard_child_fork();
            return;
        }
    }
}

/* ----------------------------------------------------- children: start */

static int my_spooler_id(void)
{
    struct uwsgi_spooler *spooler;
    int id = 1;

    for (spooler = uwsgi.spoolers; spooler; spooler = spooler->next, id++) {
        if (spooler == uwsgi.i_am_a_spooler)
            return id;
    }
    return 0;
}

/* Which child this process is, from the ids uWSGI sets in it before any
 * post_fork hook runs; 0 for none (the master, a daemon, a hook command). */
static int uwsgi_child_identity(int *kind, int *id)
{
    if (uwsgi.muleid > 0) {
        *kind = FORKSAFE__MULE;
        *id = uwsgi.muleid;
    }
    else if (uwsgi.i_am_a_spooler) {
        *kind = FORKSAFE__SPOOLER;
        *id = my_spooler_id();
    }
    else if (uwsgi.mywid > 0) {
        *kind = FORKSAFE__WORKER;
        *id = uwsgi.mywid;
    }
    else {
        return 0;
    }
    return 1;
}

static void start_child(void)
{
    int index, kind, id;

    if (!context_ready)
        return;
    forking_worker = 0;
    self_started_ns = now_ns();
    if (stats_fd >= 0) {
        close(stats_fd);
        stats_fd = -1;
    }
    if (!uwsgi_child_identity(&kind, &id))
        return;
    self.kind = kind;
    self.id = id;
    index = slot_index(self.kind, self.id);
    self.respawn = index >= 0 ? slots[index].forks_seen : 0;
    if (self.kind == FORKSAFE__WORKER)
        self.respawn = (int)uwsgi.workers[self.id].respawn_count - 1;
    if (index >= 0) {
        children_shared[index].exit_state = 0;
        children_shared[index].crash_signal = 0;
        children_shared[index].pid = getpid();
        forksafe__exec_track(&children_shared[index].command);
    }
    fire(FORKSAFE_POST_FORK, NULL, 0, 0, NULL, NULL, 0);
}

static void forksafe_post_fork(void)
{
    start_child();
    /* A mule or spooler: uWSGI's handlers are in place now. */
    release_child_fork_guard();
}

static void forksafe_hijack_worker(void)
{
    int deferred = worker_deferred_signal;

    if (deferred) {
        /* uWSGI's worker handlers are in place now: the signal the master
         * sent while this worker started is theirs. */
        worker_deferred_signal = 0;
        kill(getpid(), deferred);
        return;
    }
    if (self.kind != FORKSAFE__WORKER || uwsgi.mywid != self.id)
        return;
    /* A SIGINT the master sent while this worker started (Python's handler
     * was still in place) only set a flag; uWSGI's end_me is installed by
     * now, so a worker born into a stopping instance ends here instead of
     * waiting for the master's mercy to run out. */
    if (shared_state && shared_state->instance_state == INSTANCE_STOPPING) {
        kill(getpid(), SIGINT);
        return;
    }
    fire(FORKSAFE_WORKER_READY, NULL, 0, 0, NULL, NULL, 0);
}

/* ------------------------------------------- master: why a child ends */

/* The master decides to end a child in many places: its signal handlers,
 * master FIFO commands (q Q r R c w W C -), touch-reload and its siblings,
 * the Emperor, cheaper, idle, chain reloads, worker lifetime.  Only some
 * have a hook, and a shared state updated on the next master cycle comes
 * too late (uWSGI sleeps in uwsgi_detach_daemons() right after signalling
 * the workers).  Every one of them ends in the master calling kill() on
 * the child, so forksafe points the uWSGI executable's kill() at
 * watched_kill (lib/intercept.c): the reason is written to the child's
 * slot, from the master's own state at that moment, before the signal
 * leaves.  It is exact because the writer is the decider, and the worker
 * reads it only after the signal has arrived. */
enum end_reason { END_NONE, END_SHUTDOWN, END_RELOAD, END_CHEAPER, END_RECYCLE };
static const char *const end_reason_names[] = {NULL, "shutdown", "reload", "cheaper", "recycle"};

/* Reloads that set no instance-wide flag: FIFO w/W, touch-workers-reload,
 * touch-mules-reload, touch-spoolers-reload, chain reloads (FIFO c,
 * touch-chain-reload), and any reload under `lazy`. */
static struct function_extent reloading_functions[] = {
    {"uwsgi_reload_workers", 0, 0},     {"uwsgi_brutally_reload_workers", 0, 0},
    {"uwsgi_reload_mules", 0, 0},       {"uwsgi_reload_spoolers", 0, 0},
    {"uwsgi_master_check_chain", 0, 0}, {"grace_them_all", 0, 0},
};
#define RELOADING_FUNCTIONS (sizeof(reloading_functions) / sizeof(reloading_functions[0]))

static int (*libc_kill)(pid_t, int);

static enum end_reason master_end_reason(const struct forksafe_child_slot *slot, int signum)
{
    int worker = slot->kind == FORKSAFE__WORKER;

    if (uwsgi.status.gracefully_destroying || uwsgi.status.brutally_destroying)
        return END_SHUTDOWN;
    if (uwsgi.status.gracefully_reloading || uwsgi.status.brutally_reloading)
        return END_RELOAD;
    if (worker && uwsgi.workers[slot->id].cheaped)
        return END_CHEAPER;
    /* SIGWINCH ends a worker only once told to stop taking requests
     * (max-worker-lifetime); otherwise it is a wake-up. */
    if (signum == SIGWINCH && (!worker || uwsgi.workers[slot->id].manage_next_request))
        return END_NONE;
    if (extent_on_stack(reloading_functions, RELOADING_FUNCTIONS) >= 0)
        return END_RELOAD;
    return END_RECYCLE;
}

/* The slot of the master's child PID (stored by uWSGI, or the last one
 * the scan saw), or -1; children run the watchers too (they inherit the
 * executable's GOT), and get -1. */
static int master_child_slot(pid_t pid)
{
    int index;

    if (!slots || !children_shared)
        return -1;
    for (index = 0; index < slot_count; index++) {
        if (current_pid(&slots[index]) == pid || slots[index].known_pid == pid)
            return is_master() ? index : -1;
    }
    return -1;
}

static void note_child_end(pid_t pid, int signum)
{
    enum end_reason reason;
    int index = master_child_slot(pid);

    if (index < 0)
        return;
    if (signum == SIGKILL)
        slots[index].master_killed_pid = pid;
    reason = master_end_reason(&slots[index], signum);
    if (reason == END_NONE)
        return;
    children_shared[index].end_pid = pid;
    children_shared[index].end_reason = reason;
}

static int watched_kill(pid_t pid, int signum)
{
    if (pid > 0) {
        switch (signum) {
        case SIGHUP:
        case SIGINT:
        case SIGQUIT:
        case SIGTERM:
        case SIGKILL:
        case SIGWINCH: {
            int saved = errno;
            note_child_end(pid, signum);
            errno = saved;
            break;
        }
        default:
            break;
        }
    }
    return libc_kill(pid, signum);
}

/* uWSGI reaps a child in several places (its master loop, and right after
 * a SIGKILL in cheap mode, idle and gateway restarts), some before
 * forksafe's scan could peek at the zombie: the status is kept here for
 * the scan, which would otherwise report it unknown. */
static pid_t (*libc_waitpid)(pid_t, int *, int);

static pid_t watched_waitpid(pid_t pid, int *status, int options)
{
    int own_status = 0;
    int *where = status ? status : &own_status;
    pid_t reaped = libc_waitpid(pid, where, options);
    int index = reaped > 0 ? master_child_slot(reaped) : -1;

    if (index >= 0) {
        slots[index].reaped_pid = reaped;
        slots[index].reaped_status = *where;
    }
    return reaped;
}

static void watch_master_kills(void)
{
    int replaced;

    if (kills_watched)
        return;
    /* Taken before the GOT changes: in a monolithic uWSGI these very
     * references are among the entries replaced. */
    libc_kill = kill;
    libc_waitpid = waitpid;
    find_extents(reloading_functions, RELOADING_FUNCTIONS);
    replaced = forksafe__intercept_call("kill", (void *)watched_kill);
    if (replaced <= 0) {
        uwsgi_log("[forksafe] cannot watch this uWSGI's kill() calls (%s): a worker-exit "
                  "reason can come from the state of the master's previous cycle\n",
                  replaced == 0 ? "none found" : forksafe__strerror(replaced));
        return;
    }
    kills_watched = 1;
    replaced = forksafe__intercept_call("waitpid", (void *)watched_waitpid);
    if (replaced <= 0)
        uwsgi_log("[forksafe] cannot watch this uWSGI's waitpid() calls (%s): a child it "
                  "reaps before forksafe's scan is reported with cause unknown\n",
                  replaced == 0 ? "none found" : forksafe__strerror(replaced));
}

/* The reason the master wrote for this very process, or NULL. */
static const char *reason_from_master(void)
{
    int index = slot_index(self.kind, self.id);

    if (index < 0 || index >= slot_count || children_shared[index].end_pid != self.pid)
        return NULL;
    return end_reason_names[children_shared[index].end_reason];
}

/* ------------------------------------------------------ children: exit */

static const char *worker_exit_reason(void)
{
    const char *decided = reason_from_master();
    int state = shared_state ? shared_state->instance_state : INSTANCE_RUNNING;
    int state_applies = shared_state && shared_state->state_changed_ns > self_started_ns;

    if (decided)
        return decided;
    /* A stopping master never runs again: a process forked while it was
     * already stopping (its signal came in a pre-fork handler) ends in
     * that stop.  A reload under `lazy` leaves the master running, so a
     * reload applies only to processes started before it. */
    if (state == INSTANCE_STOPPING)
        return "shutdown";
    if (self.kind == FORKSAFE__WORKER && uwsgi.workers[self.id].cheaped)
        return "cheaper";
    if (state_applies && state == INSTANCE_RELOADING)
        return "reload";
    if (self.kind == FORKSAFE__WORKER && uwsgi.max_requests > 0 &&
        uwsgi.workers[self.id].delta_requests >= uwsgi.max_requests)
        return "max-requests";
    if (self.kind == FORKSAFE__WORKER && uwsgi.workers[self.id].cursed_at)
        return "recycle";
    return "exit";
}

/* uWSGI's SIGSEGV/SIGFPE handlers re-raise the signal while it is blocked
 * and then call exit(1): a crash reaches atexit with the signal pending. */
static int crash_signal_pending(void)
{
    static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    sigset_t pending;
    size_t i;

    if (sigpending(&pending) != 0)
        return 0;
    for (i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) {
        if (sigismember(&pending, fatal[i]))
            return fatal[i];
    }
    return 0;
}

/* A child that ends before forksafe's post_fork ran in it (another
 * plugin's post_fork crashed) still carries the master's identity: if it
 * crashed, its slot is told so, and the master reports a crash, not the
 * exit(1) uWSGI's crash handler ends with. */
static void report_early_crash(void)
{
    int kind, id, index, crash;

    if (is_master() || getppid() != uwsgi.workers[0].pid || !children_shared ||
        !(crash = crash_signal_pending()) || !uwsgi_child_identity(&kind, &id))
        return;
    if ((index = slot_index(kind, id)) < 0 || index >= slot_count)
        return;
    children_shared[index].exit_state = 0;
    children_shared[index].command = 0;
    children_shared[index].crash_signal = crash;
    children_shared[index].pid = getpid();
}

static void forksafe_atexit(void)
{
    static pid_t ran_in;
    int index, crash;

    if (!context_ready)
        return;
    if (getpid() != self.pid) {
        report_early_crash();
        return;
    }
    if (self.kind == FORKSAFE__MASTER || ran_in == self.pid)
        return;
    ran_in = self.pid;
    index = slot_index(self.kind, self.id);
    /* Exiting in the middle of an exec handler (uWSGI's SIGHUP/SIGINT
     * handlers exit an idle worker at once): its command goes too. */
    if (index >= 0 && children_shared[index].command > 0) {
        kill(-children_shared[index].command, SIGKILL);
        children_shared[index].command = 0;
    }
    crash = crash_signal_pending();
    if (crash) {
        /* A crashed process is no place to run handlers: the master
         * reports it as child-death. */
        if (index >= 0 && children_shared[index].pid == getpid())
            children_shared[index].crash_signal = crash;
        return;
    }
    if (index >= 0 && children_shared[index].pid == getpid())
        children_shared[index].exit_state = 1;
    fire(FORKSAFE_WORKER_EXIT, NULL, 0, 0, NULL, worker_exit_reason(), 1);
    if (index >= 0 && children_shared[index].pid == getpid())
        children_shared[index].exit_state = 2;
}

/* Registered once in the master, before any fork, so that every child
 * has it from its first instruction: uWSGI registers the plugins' atexit
 * hooks only once apps are loaded (2.0.30 and later, unbit/uwsgi#2726:
 * with lazy-apps a mule or a spooler would exit without worker-exit), and
 * a child that crashes in an earlier plugin's post_fork has none yet.
 * Where uWSGI's hook runs too, worker-exit still runs once. */
static void register_exit_hook(void)
{
    static int registered;

    if (registered++)
        return;
    if (atexit(forksafe_atexit) != 0)
        uwsgi_log("[forksafe] atexit() failed: a mule or spooler may end without worker-exit, "
                  "and a crash before forksafe's post-fork is reported as an exit\n");
}

/* -------------------------------------------------------- master: exit */

static void record_instance_state(int signum)
{
    int reload;

    switch (signum) {
    case SIGHUP:
        reload = 1;
        break;
    case SIGTERM:
        reload = !uwsgi.die_on_term;
        break;
    case SIGQUIT:
        reload = uwsgi.die_on_term;
        break;
    default:
        reload = 0;
        break;
    }
    shared_state->instance_state = reload ? INSTANCE_RELOADING : INSTANCE_STOPPING;
    shared_state->state_changed_ns = now_ns();
}

/* A vassal's Emperor stops or reloads it through a pipe, not a signal:
 * the master calls kill_them_all() / gracefully_kill_them_all() /
 * grace_them_all() itself, and its workers can exit before forksafe's next
 * master cycle notices.  uWSGI runs the emperor-stop/-reload/-lost hooks in
 * the master right before, so the reason is in shared memory first. */
static int forksafe_exit_reason_hook(char *reason)
{
    if (!shared_state || !is_master())
        return 0;
    shared_state->instance_state =
        strcmp(reason, "reload") == 0 ? INSTANCE_RELOADING : INSTANCE_STOPPING;
    shared_state->state_changed_ns = now_ns();
    return 0;
}

static void hook_emperor_messages(void)
{
    if (!uwsgi.has_emperor)
        return;
    uwsgi_register_hook("forksafe-exit-reason", forksafe_exit_reason_hook);
    /* uwsgi_hooks_run() edits the string in place: heap copies. */
    uwsgi_string_new_list(&uwsgi.hook_emperor_stop, uwsgi_str("forksafe-exit-reason:shutdown"));
    uwsgi_string_new_list(&uwsgi.hook_emperor_reload, uwsgi_str("forksafe-exit-reason:reload"));
    uwsgi_string_new_list(&uwsgi.hook_emperor_lost, uwsgi_str("forksafe-exit-reason:shutdown"));
}

/* Runs before uWSGI's own handler, which curses the workers: by the time
 * a worker runs worker-exit, the reason is in shared memory. */
static void forksafe_master_signal(int signum)
{
    struct sigaction *original = &original_actions[signum];

    if (getpid() == uwsgi.workers[0].pid) {
        record_instance_state(signum);
        /* A child's on-error=fatal: it set the flag, then sent SIGINT. */
        if (shared_state->fatal)
            uwsgi.status.dying_for_need_app = 1;
    }
    if (original->sa_flags & SA_SIGINFO) {
        if (original->sa_sigaction)
            original->sa_sigaction(signum, NULL, NULL);
    }
    else if (original->sa_handler != SIG_IGN && original->sa_handler != SIG_DFL) {
        original->sa_handler(signum);
    }
}

/* Until master_loop installs uWSGI's handlers, the master's SIGINT is
 * Python's (the python plugin's Py_Initialize), which only sets a flag:
 * without this, a stop signal sent while start-up handlers run (or
 * workers are being forked) would be lost and the instance would go on
 * serving.  It is recorded, the master's running exec handler is killed,
 * the previous handler still runs (Python raises KeyboardInterrupt in a
 * python: handler), and the first master cycle delivers the signal again
 * to uWSGI's own handler. */
static struct sigaction startup_previous[NSIG];
static const int startup_signals[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP};

static void startup_signal(int signum)
{
    struct sigaction *previous = &startup_previous[signum];
    int saved = errno;

    if (getpid() == startup_master_pid) {
        /* What uWSGI's master loop will make of it (master.c). */
        int stops = signum == SIGINT || (signum == SIGQUIT && !uwsgi.die_on_term) ||
                    (signum == SIGTERM && uwsgi.die_on_term);
        if (!startup_signal_pending || stops)
            startup_signal_pending = signum;
        if (stops)
            startup_stop = 1;
        if (shared_state)
            record_instance_state(signum);
        if (stops && master_command > 0)
            kill(-master_command, SIGKILL);
    }
    else if (previous->sa_handler == SIG_DFL) {
        /* A child, before uWSGI installed its own handlers: as if
         * forksafe had not been there. */
        signal(signum, SIG_DFL);
        raise(signum);
    }
    if (!(previous->sa_flags & SA_SIGINFO) && previous->sa_handler != SIG_IGN &&
        previous->sa_handler != SIG_DFL)
        previous->sa_handler(signum);
    errno = saved;
}

static void catch_startup_signals(void)
{
    size_t i;

    startup_master_pid = getpid();
    forksafe__exec_track(&master_command);
    for (i = 0; i < sizeof(startup_signals) / sizeof(startup_signals[0]); i++) {
        struct sigaction ours;
        int signum = startup_signals[i];

        if (sigaction(signum, NULL, &startup_previous[signum]) != 0)
            continue;
        memset(&ours, 0, sizeof(ours));
        ours.sa_handler = startup_signal;
        sigemptyset(&ours.sa_mask);
        sigaction(signum, &ours, NULL);
    }
}

static void wrap_master_signals(void)
{
    static const int wrapped[] = {SIGHUP, SIGTERM, SIGINT, SIGQUIT};
    size_t i;

    signals_wrapped = 1;
    for (i = 0; i < sizeof(wrapped) / sizeof(wrapped[0]); i++) {
        struct sigaction ours;
        int signum = wrapped[i];

        if (sigaction(signum, NULL, &original_actions[signum]) != 0)
            continue;
        if (original_actions[signum].sa_handler == SIG_IGN ||
            original_actions[signum].sa_handler == SIG_DFL)
            continue;
        ours = original_actions[signum];
        ours.sa_flags &= ~SA_SIGINFO;
        ours.sa_handler = forksafe_master_signal;
        sigaction(signum, &ours, NULL);
    }
}

static void forksafe_master_cleanup(void)
{
    int reload;

    if (!context_ready || !is_master())
        return;
    reload = uwsgi.status.gracefully_reloading || uwsgi.status.brutally_reloading;
    scan_children();
    fire(FORKSAFE_MASTER_EXIT, NULL, 0, 0, NULL, reload ? "reload" : "shutdown", 1);
}
