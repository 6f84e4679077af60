/*
 * plugin.c - the uWSGI glue's entry: the plugin structs, uWSGI's hooks
 * and where each event is caught.  Only uwsgi/ knows uWSGI (glue.h says
 * which of its files does what).
 *
 * It turns uWSGI's scattered hooks into the nine forksafe events and hands
 * them to lib/ for dispatch (occurrence.c).  How each event is caught
 * (uWSGI 2.0.21), and in which file:
 *
 *   master-start      master_fixup(0), here: in the master, config loaded,
 *                     apps preloaded, before the first spooler/worker/mule
 *                     fork.
 *   pre-fork          workers: pre_uwsgi_fork, chained here in front of the
 *                     python plugin's (children.c: glue_worker_pre_fork);
 *                     mules and spoolers: the executable's fork(), wrapped
 *                     (python_fork.c), recognises uwsgi_mule() or
 *                     spooler_start() on the stack (children.c); without
 *                     the wrapper a pthread_atfork prepare handler does.
 *                     The wrapper also gives these forks os.fork()'s
 *                     semantics (forksafe-python-atfork).  Each
 *                     pre-fork carries the fork hazards (lib/hazard_watch.c),
 *                     and forksafe-hazards = fail refuses the fork
 *                     (hazards.c).
 *   post-fork         post_fork (child.c): workers before lazy app loading,
 *                     mules and spoolers.  post_uwsgi_fork only guards the
 *                     stop and reload signals around a worker's fork
 *                     (signals.c).
 *   post-fork-parent  a scan of worker/mule/spooler pids (children.c), run on
 *                     every master cycle and before every pre-fork: uWSGI
 *                     stores a child's pid only after its post_uwsgi_fork
 *                     hooks ran.  Each fork wakes the master (wake.c), so
 *                     the next cycle comes at once.
 *   worker-ready      hijack_worker (child.c): after apps are loaded, before
 *                     the first request.
 *   worker-exit       atexit in workers, mules and spoolers (child.c): the
 *                     generic plugin's, which runs before python's
 *                     finalizes, and forksafe's own, registered in the master
 *                     before the first fork; the reason is the one the
 *                     master wrote to the child's slot as it signalled it
 *                     (reasons.c).
 *   child-death       the same scan (children.c) peeks at zombies with
 *                     waitid(WNOWAIT) before the master reaps them, so the
 *                     status is known; dispatched when a child ended without
 *                     completing worker-exit.
 *   master-exit       master_cleanup, here (shutdown, and before a reload's
 *                     exec).
 *   generation-ready  the same scan (generation.c), once every worker of
 *                     the generation recorded in its shared slot that it
 *                     reached worker-ready.
 *
 * Settings travel once, at init: config.c finds the file (forksafe-settings,
 * the python plugin's paste option, or the ini's [app:main]), lib/ parses
 * it into glue.context, and every dispatch hands the same map to handlers.
 * Handlers are resolved in the private slot's preinit_apps (after the python
 * plugin set up sys.path, before apps load), where the `_forksafe` Python
 * module for pyramid_forksafe is also created.
 *
 * The hooks pre_uwsgi_fork, post_uwsgi_fork, master_fixup, hijack_worker and
 * the mule/spooler post_fork are only called for request plugins in
 * uwsgi.p[].  forksafe stays a generic plugin for its options and also
 * registers a private struct uwsgi_plugin in a free uwsgi.p[] slot (one still
 * pointing at uWSGI's unconfigured default), choosing from 249 down to 200 and
 * never taking a used slot.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "glue.h"

FORKSAFE__CHILD_WRITES struct glue_state glue;

static void forksafe_on_load(void);
static int forksafe_init(void);
static void forksafe_preinit_apps(void);
static void forksafe_master_fixup(int);
static void forksafe_master_cycle(void);
static void forksafe_master_cleanup(void);
static void forksafe_slot_pre_uwsgi_fork(void);

/* ------------------------------------------------------------ the plugins */

FORKSAFE_EXPORT struct uwsgi_plugin forksafe_plugin = {
    .name = "forksafe",
    .options = glue_options_table,
    .on_load = forksafe_on_load,
    .init = forksafe_init,
    .master_cycle = forksafe_master_cycle,
    .master_cleanup = forksafe_master_cleanup,
    /* Generic plugins' atexit runs before request plugins': worker-exit
     * handlers run before the python plugin's atexit finalizes Python. */
    .atexit = glue_child_atexit,
};

/* The private request-plugin slot: only lifecycle hooks, and the default
 * request handlers copied from the slot it replaces so a stray request with
 * this modifier1 is refused exactly as before. */
static struct uwsgi_plugin lifecycle_plugin = {
    .name = "forksafe-lifecycle",
    .preinit_apps = forksafe_preinit_apps,
    .master_fixup = forksafe_master_fixup,
    .pre_uwsgi_fork = forksafe_slot_pre_uwsgi_fork,
    .post_uwsgi_fork = glue_post_uwsgi_fork,
    .post_fork = glue_child_post_fork,
    .hijack_worker = glue_worker_ready,
    .harakiri = glue_note_harakiri,
};

static int lifecycle_slot = -1;

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

static void forksafe_on_load(void)
{
    glue_check_uwsgi_build();
    /* Claimed this early so the slot's init-time hooks run; checked again in
     * init, after every plugin is loaded, in case a later plugin took it. */
    claim_lifecycle_slot();
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

static int hook_run(forksafe__context *ctx, void *data, void *handle, const forksafe_event *ev,
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
    .run = hook_run,
};

/* ------------------------------------------------------------------ init */

static void log_to_uwsgi(void *userdata, int level, const char *message)
{
    (void)userdata;
    (void)level;
    uwsgi_log("[forksafe] %s\n", message);
}

static int forksafe_init(void)
{
    if (claim_lifecycle_slot() != 0) {
        uwsgi_log("[forksafe] no free request-plugin slot between 200 and 249 for the "
                  "lifecycle hooks; unload a plugin that uses those modifiers\n");
        exit(1);
    }
    if (!uwsgi.master_process && !glue.options.check) {
        uwsgi_log("[forksafe] forksafe needs the master process: add `master = true`\n");
        exit(1);
    }
    forksafe__alloc_install_json();
    forksafe__python_set_lazy(uwsgi.lazy || uwsgi.lazy_apps);
    if (forksafe__context_init(&glue.context, log_to_uwsgi, NULL) != 0 ||
        forksafe__context_add_backend(&glue.context, &hook_backend) != 0 ||
        forksafe__context_add_backend(&glue.context, forksafe__python_backend()) != 0 ||
        forksafe__context_add_backend(&glue.context, forksafe__recipe_backend()) != 0) {
        uwsgi_log("[forksafe] out of memory\n");
        exit(1);
    }
    glue_configure();
    glue_settle_python_fork_options();
    glue_watch_uwsgi_threads();

    glue_setup_child_tracking();
    glue_hook_emperor_messages();
    if (!glue.options.check)
        glue_register_metrics();
    glue.self.kind = FORKSAFE__MASTER;
    glue.self.id = 0;
    return 0;
}

/* ---------------------------------------------------- pre-fork of a worker */

/* The python plugin's pre_uwsgi_fork (py-call-uwsgi-fork-hooks with
 * threads) takes the GIL and runs PyOS_BeforeFork(), which from Python 3.13
 * on holds the runtime's HEAD_LOCK until the fork: a pre-fork handler that
 * forks or starts a thread after it would wait for that lock for ever.
 * uWSGI calls the hooks in slot order and the python plugin's slot (0)
 * comes before forksafe's, so forksafe's pre-fork is chained in front of the
 * first plugin's hook; forksafe's own slot then has nothing left to do. */
static void (*first_pre_fork_hook)(void);
static int pre_fork_ran_early; /* by the chained hook, in this hook loop */

static void chained_pre_uwsgi_fork(void)
{
    /* the same plugin can fill several slots: once per loop */
    if (!pre_fork_ran_early) {
        glue_worker_pre_fork();
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
    glue_worker_pre_fork();
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

/* Every fork the master makes brings its loop round at once: the scan that
 * delivers post-fork-parent runs within a millisecond, not at the next
 * cycle (a cheaper spawn is followed by up to a second of waiting). */
static void forksafe_atfork_parent(void)
{
    glue_atfork_parent();
    if (glue.master_started && glue_is_master())
        glue_wake_master();
}

/* Handlers are resolved after the language plugins set up their
 * environment (the python plugin adds `pythonpath` in its preinit_apps,
 * which runs before this slot's), before apps load and before any fork. */
static void forksafe_preinit_apps(void)
{
    forksafe__error err = {0};

    if (glue.context_ready)
        return;
    if (forksafe__context_seal(&glue.context, &err) != 0)
        glue_die(&err);
    glue.context_ready = 1;
    if (glue.options.check) {
        forksafe__context_describe(&glue.context);
        uwsgi_log("[forksafe] configuration is valid\n");
        exit(0);
    }
    if (forksafe__python_bridge_init(&glue.context) != 0) {
        uwsgi_log("[forksafe] cannot create the _forksafe Python module\n");
        exit(1);
    }
    if (pthread_atfork(glue_atfork_prepare, forksafe_atfork_parent, glue_atfork_child) != 0) {
        uwsgi_log("[forksafe] pthread_atfork() failed\n");
        exit(1);
    }
    chain_pre_fork_hook();
    glue_find_forking_functions();
    glue_wrap_fork();
    forksafe__log(&glue.context, FORKSAFE__LOG_INFO,
                  "%zu subscription(s), lifecycle hooks in request-plugin slot %d",
                  glue.context.subscription_count, lifecycle_slot);
}

/* ------------------------------------------------------------ the master */

FORKSAFE__CHILD_RUNS static void forksafe_master_fixup(int in_child)
{
    if (in_child || !glue.context_ready)
        return;
    if (getpid() != uwsgi.workers[0].pid && uwsgi.workers[0].pid > 0)
        return;
    glue.self.kind = FORKSAFE__MASTER;
    glue.self.id = 0;
    glue.self.respawn = 0;
    glue.master_started = 1;
    glue_wake_setup();
    glue_start_stats_server();
    glue_catch_startup_signals();
    glue_watch_master_kills();
    glue_register_exit_hook();
    glue_generation_begin();
    glue_event_occurs(FORKSAFE_MASTER_START, NULL, 0, 0, NULL, NULL, 0);
}

static void forksafe_master_cycle(void)
{
    if (!glue.context_ready || !glue_is_master())
        return;
    glue_master_loop_signals();
    /* The last fork's pid is stored by now (see signals.c). */
    glue_unblock_fork_signals();
    glue_note_instance_status();
    glue_wake_drain();
    glue_scan_children();
}

static void forksafe_master_cleanup(void)
{
    int reload;

    if (!glue.context_ready || !glue_is_master())
        return;
    reload = uwsgi.status.gracefully_reloading || uwsgi.status.brutally_reloading;
    glue_scan_children();
    glue_event_occurs(FORKSAFE_MASTER_EXIT, NULL, 0, 0, NULL, reload ? "reload" : "shutdown", 1);
}
