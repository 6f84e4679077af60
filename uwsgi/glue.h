/*
 * glue.h - what the uWSGI glue's files share: the one state struct, the
 * child slots, and the calls between the files.  Only uwsgi/ includes it.
 *
 * Who calls whom (no file calls back into one that calls it):
 *
 *   plugin.c       the plugin structs, uWSGI's hooks -> every file below
 *   child.c        inside a worker, mule or spooler  -> reasons, children, signals,
 *                                                       stats_server, occurrence, wake
 *   reasons.c      why the master ends a child       -> children, compat
 *   children.c     the master's children             -> signals, occurrence, compat, wake,
 *                                                       generation
 *   generation.c   generation-ready                  -> occurrence
 *   signals.c      stop and reload signals           -> instance
 *   stats_server.c the forksafe-stats and -metrics    -> config, metrics
 *                  sockets
 *   metrics.c      one GET /metrics for Prometheus   -> children
 *   occurrence.c   an event occurs, lib/ dispatches  -> instance
 *   instance.c     running, reloading or stopping
 *   python_fork.c  os.fork()'s semantics at its forks -> children, compat, config, wake
 *   wake.c         the master woken at once (forks, deaths)
 *   compat.c       which uWSGI this is               -> config
 *   config.c       options, directives, settings
 *
 * tests/structure checks that no file calls back into a caller.
 */
#ifndef FORKSAFE_UWSGI_GLUE_H
#define FORKSAFE_UWSGI_GLUE_H

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

#include <uwsgi.h>

#include "forksafe_internal.h"
#include "hazard_watch.h"

extern struct uwsgi_server uwsgi;
extern struct uwsgi_plugin forksafe_plugin;

/* ---------------------------------------------------------------- types */

/* Why the master ended a child (reasons.c writes it to the child's slot). */
enum end_reason { END_NONE, END_SHUTDOWN, END_RELOAD, END_CHEAPER, END_RECYCLE };

/* Written by a child, read by the master: lives in MAP_SHARED memory. */
struct forksafe_child_shared {
    volatile pid_t pid;
    volatile int exit_state;   /* 0: none, 1: worker-exit running, 2: done */
    volatile int crash_signal; /* the fatal signal uWSGI turned into exit(1) */
    volatile pid_t command;    /* process group of the exec handler it runs */
    /* Why the master ended it, written before its signal left (see
     * reasons.c); only for the process whose pid is end_pid. */
    volatile int end_reason;
    volatile pid_t end_pid;
    /* The child whose pid is ready_pid finished starting at ready_ns
     * (monotonic; a worker: worker-ready ran; a mule or spooler: post-fork
     * ran): from then on its death wakes the master (children.c), and a
     * worker counts towards generation-ready (generation.c). */
    long long ready_ns;
    pid_t ready_pid;
};

/* What the master remembers of one child slot. */
struct forksafe_child_slot {
    int kind;
    int id;
    pid_t known_pid;
    int forks_seen;
    int death_reported;
    const char *pending_cause; /* "harakiri" when the master killed it */
    pid_t master_killed_pid;   /* the master sent it SIGKILL (reasons.c) */
    pid_t reaped_pid;          /* uWSGI's waitpid() reaped it, with this status */
    int reaped_status;
    int death_fd; /* its pidfd in the master's event queue (wake.c), or -1 */
};

/* The master's view of why the instance is going down, shared with children
 * so that worker-exit can say "reload" or "shutdown". */
enum forksafe_instance_state { INSTANCE_RUNNING, INSTANCE_RELOADING, INSTANCE_STOPPING };

struct forksafe_shared_state {
    volatile int instance_state;
    volatile long long state_changed_ns;
    volatile int fatal; /* a handler stopped the instance (on-error=fatal) */
};

/* forksafe's uWSGI options as uWSGI stored them (config.c's table). */
struct glue_options {
    struct uwsgi_string_list *subscribe;
    struct uwsgi_string_list *set;
    char *settings;
    char *on_error;
    char *timeout;
    char *stats;
    char *metrics;
    char *history;
    char *hazards;
    struct uwsgi_string_list *hazard_allow;
    char *python_atfork;
    char *fast_respawn;
    int check;
    int verbose;
};

/* Everything more than one glue file reads or writes.  Each process has
 * its own copy from the fork on; what must cross processes lives in the
 * MAP_SHARED memory the pointers lead to. */
struct glue_state {
    struct glue_options options;
    forksafe__context context;
    int context_ready;  /* handlers resolved (preinit_apps): events may occur */
    int master_started; /* master-start dispatched: children may be forked */
    int dispatching;    /* a dispatch is running in this process */
    int forking_worker; /* from a worker's pre-fork to the fork itself */

    /* Who this process is; set in the master at start, in children at
     * post_fork. */
    forksafe__process self;
    long long self_started_ns;

    /* One slot per worker, mule and spooler, in that order (children.c). */
    struct forksafe_child_slot *slots; /* the master's memory */
    int slot_count;
    struct forksafe_child_shared *children_shared; /* MAP_SHARED, per slot */
    struct forksafe_shared_state *shared_state;    /* MAP_SHARED */
    int kills_watched; /* uWSGI's kill() and waitpid() are watched (reasons.c) */

    /* A stop signal reached the master before its loop took the signals
     * over (signals.c): nothing more is dispatched there but master-exit. */
    volatile sig_atomic_t startup_stop;

    /* What children must not inherit (hazards.c); hazard_refused: this
     * fork is refused (forksafe-hazards = fail), inherited by the child. */
    forksafe__hazard_watch hazards;
    int hazards_found; /* no rule allows them, at the last pre-fork */
    int hazard_refused;

    /* forksafe-python-atfork (python_fork.c): uWSGI's forks of its
     * children get os.fork()'s semantics.  fork_wrapped: the executable's
     * fork() goes through python_fork.c, which tells the fork apart. */
    int python_atfork;
    int fork_wrapped;

    /* forksafe-fast-respawn (wake.c): a ready child's death wakes the
     * master, which replaces it at once. */
    int fast_respawn;
};

extern struct glue_state glue;

static inline int glue_is_master(void)
{
    return uwsgi.workers && getpid() == uwsgi.workers[0].pid;
}

/* A function's extent in the executable (its address and st_size in the
 * dynamic symbol table), to recognise it on a stack. */
struct function_extent {
    const char *name;
    uintptr_t start, end;
};

/* ------------------------------------------------------------ config.c */

/* forksafe's options, for the plugin struct. */
extern struct uwsgi_option glue_options_table[];

/* Logs ERR (and, with forksafe-check, the verdict) and exits 1. */
void glue_die(const forksafe__error *err) __attribute__((noreturn));

/* The line of NAME = VALUE in the ini files uWSGI was given, with its file
 * in FILE; 0 (and "NAME (option)" in FILE) when it is not in one. */
int glue_locate_directive(const char *name, const char *value, char *file, size_t file_size);

/* Reads every forksafe option into glue.context: policy, timeout, history
 * (the counters' shared memory), settings and overrides, subscriptions.
 * Exits with a located error on bad input. */
void glue_configure(void);

/* ------------------------------------------------------------ compat.c */

/* Exits unless this plugin was built for the running uWSGI. */
void glue_check_uwsgi_build(void);

/* Exits on uWSGI options known to kill every worker with this Python. */
void glue_refuse_fatal_python_options(void);

/* A flag option's last value (uWSGI's uwsgi_opt_true reading). */
int glue_flag_option(const char *name);

/* st_size of the dynamic symbol that starts at ADDRESS, -1 if none does. */
long glue_symbol_size(const void *address);

/* Looks each function up; returns how many were found. */
size_t glue_find_extents(struct function_extent *functions, size_t count);

/* The index of the first of FUNCTIONS on this thread's stack, or -1. */
int glue_extent_on_stack(const struct function_extent *functions, size_t count);

/* ---------------------------------------------------------- instance.c */

/* The instance goes down (a reload when RELOAD), as of now. */
void glue_set_instance_state(int reload);

/* SIGNUM as uWSGI's master reads it: a reload or a stop. */
void glue_record_instance_state(int signum);

/* FIFO commands and touch-reload change uWSGI's status without a signal. */
void glue_note_instance_status(void);

/* A handler's on-error=fatal stops the instance: not as an operator's stop. */
void glue_mark_fatal(void);

/* The Emperor stops and reloads vassals through a pipe: hooked. */
void glue_hook_emperor_messages(void);

/* -------------------------------------------------------- occurrence.c */

/* TYPE occurs in this process: dispatched with the child it is about (or
 * NULL) and, for child-death, its status and cause; REASON for worker-exit
 * and master-exit.  EXITING: the process is ending anyway. */
void glue_event_occurs(forksafe_event_type type, const forksafe__process *child, int status_known,
                       int status, const char *cause, const char *reason, int exiting);

/* generation-ready occurs in the master: the generation's COUNT WORKERS,
 * ELAPSED_MS since master-start. */
void glue_generation_ready_occurs(const forksafe__ready_worker *workers, size_t count,
                                  long long elapsed_ms);

/* -------------------------------------------------------- generation.c */

/* master-start: the first generation begins. */
void glue_generation_begin(void);

/* In the master, at the end of each scan of its children: a reload that
 * replaces every worker begins a generation, and a generation whose
 * workers are all ready is announced. */
void glue_generation_scan(void);

/* ----------------------------------------------------------- signals.c */

/* Takes the stop signals in the master until uWSGI's loop installs its own. */
void glue_catch_startup_signals(void);

/* The master loop runs: wraps uWSGI's handlers, hands on an early stop. */
void glue_master_loop_signals(void);

/* The stop and reload signals, blocked around a worker's fork. */
void glue_guard_worker_fork(void);
void glue_unblock_fork_signals(void);

/* The same around a mule's or spooler's fork, released in the child. */
void glue_guard_child_fork(void);
void glue_release_child_fork_guard(void);

/* The signal a new worker got while starting, for uWSGI's handlers; 0 if none. */
int glue_take_worker_deferred_signal(void);

void glue_post_uwsgi_fork(int in_child);
void glue_atfork_parent(void);
void glue_atfork_child(void);

/* ---------------------------------------------------------- children.c */

/* How many workers, mules and spoolers there are: one slot each. */
static inline int glue_slot_total(void)
{
    struct uwsgi_spooler *spooler;
    int count = uwsgi.numproc + uwsgi.mules_cnt;

    for (spooler = uwsgi.spoolers; spooler; spooler = spooler->next)
        count++;
    return count;
}

/* The MAP_SHARED bytes of glue.shared_state and glue.children_shared (a
 * slot more than glue_slot_total()).  config.c maps them in the room
 * before lib/'s shared counters: a new child writes its slot, reads the
 * instance state and counts its first events on one page. */
static inline size_t glue_shared_room(void)
{
    return sizeof(struct forksafe_shared_state) +
           ((size_t)glue_slot_total() + 1) * sizeof(struct forksafe_child_shared);
}

/* Slots for every worker, mule and spooler; exits on failure. */
void glue_setup_child_tracking(void);

/* The slot of a child, -1 for none. */
int glue_slot_index(int kind, int id);

/* The pid uWSGI stores for SLOT's child (0 while none). */
pid_t glue_current_pid(const struct forksafe_child_slot *slot);

/* Births and deaths since the last scan: post-fork-parent, child-death;
 * ready children's deaths watched (forksafe-fast-respawn). */
void glue_scan_children(void);

/* In a new child: closes the master's watches on its siblings' deaths. */
void glue_drop_death_watches(void);

/* pre-fork of the worker uWSGI is about to fork. */
void glue_worker_pre_fork(void);

/* Which fork the master is about to make: FORKSAFE__WORKER, __MULE or
 * __SPOOLER (after the pre-fork of a mule or a spooler), 0 for any other.
 * Called once per fork: by the fork wrapper (python_fork.c), or inside
 * fork() by the atfork prepare handler when there is no wrapper. */
void glue_find_forking_functions(void);
int glue_prepare_child_fork(void);
void glue_atfork_prepare(void);

void glue_note_harakiri(int wid);

/* ------------------------------------------------------- python_fork.c */

/* forksafe-python-atfork against the python plugin's own fork options:
 * py-call-osafterfork is taken over, py-call-uwsgi-fork-hooks refused. */
void glue_settle_python_fork_options(void);

/* From here on the executable's fork() is python_fork.c's. */
void glue_wrap_fork(void);

/* ----------------------------------------------------------- reasons.c */

/* Watches uWSGI's kill() and waitpid() in the master. */
void glue_watch_master_kills(void);

/* The reason the master wrote for this very process, or NULL. */
const char *glue_reason_from_master(void);

/* ----------------------------------------------------------- hazards.c */

/* uWSGI's own threads register themselves as they start (from init on). */
void glue_watch_uwsgi_threads(void);

/* pthread_create() for forksafe's own threads: registered, so never a
 * hazard, by the time it returns. */
int glue_start_own_thread(pthread_t *thread, void *(*routine)(void *), void *argument);

/* After CHILD's pre-fork (which said the hazards): forksafe-hazards = fail
 * refuses the fork. */
void glue_refuse_hazards(void);

/* ------------------------------------------------------------- child.c */

void glue_child_post_fork(void);
void glue_worker_ready(void);
void glue_child_atexit(void);
void glue_register_exit_hook(void);

/* -------------------------------------------------------------- wake.c */

/* The descriptor children wake the master with: before the first fork. */
void glue_wake_setup(void);

/* The master's loop comes round at once (async-signal-safe, any process). */
void glue_wake_master(void);

/* In the master's cycle: the wake-up joins its event queue, and is read. */
void glue_wake_drain(void);

/* A pidfd in the master's event queue for PID's death, or -1; undone by
 * glue_unwatch_death (FD -1 is nothing to undo). */
int glue_watch_death(pid_t pid);
void glue_unwatch_death(int fd);

/* ------------------------------------------------------ stats_server.c */

void glue_register_metrics(void);
void glue_start_stats_server(void);

/* A child has no business with the master's listening sockets. */
void glue_close_stats_socket(void);

/* ----------------------------------------------------------- metrics.c */

/* Reads CLIENT's HTTP request and answers it (GET /metrics: Prometheus'
 * text format); the caller closes CLIENT. */
void glue_serve_metrics(int client);

/* -------------------------------------------------------------- clock */

long long glue_now_ns(void);

#endif
