/*
 * forksafe_internal.h - the private API shared by lib/ and the uWSGI glue:
 * logging, the clock, processes, backends, subscriptions, counters, the
 * context and its dispatch, the event object and the handler backends.  It
 * includes the rest: forksafe_base.h (errors, allocation) and
 * forksafe_settings.h (the map, the ini parser, the settings).
 *
 * Nothing here knows uWSGI.  Everything reports through return codes, a
 * caller-owned forksafe__error, and the context's log callback; nothing here
 * calls exit().  Names: forksafe__ = internal but shared between files,
 * `static` for everything else.
 *
 * Return codes: 0 on success, a negative FORKSAFE__E* on failure.
 */
#ifndef FORKSAFE_INTERNAL_H
#define FORKSAFE_INTERNAL_H

#include "forksafe_base.h"
#include "forksafe_settings.h"

/* ----------------------------------------------------------------- logging */

enum forksafe__log_level {
    FORKSAFE__LOG_ERROR,
    FORKSAFE__LOG_WARNING,
    FORKSAFE__LOG_INFO,
    FORKSAFE__LOG_DEBUG
};

/* The host's logger.  MESSAGE has no prefix and no trailing newline. */
typedef void (*forksafe__log_fn)(void *userdata, int level, const char *message);

typedef struct forksafe__context forksafe__context;

/* Logs one line through CTX's callback (lib/log.c); without a callback (or
 * CTX NULL), to stderr.  Lines longer than 2 KiB are truncated. */
void forksafe__log(const forksafe__context *ctx, int level, const char *fmt, ...)
    FORKSAFE__PRINTF(3, 4);

/* ------------------------------------------------------------------ clock */

/* Nanoseconds on the monotonic clock (lib/clock.c): durations, deadlines. */
int64_t forksafe__monotonic_ns(void);

/* Nanoseconds since the epoch on the wall clock: timestamps for others. */
int64_t forksafe__realtime_ns(void);

/* Seconds since the epoch on the wall clock, as the payload's "time". */
double forksafe__realtime_seconds(void);
/* NS nanoseconds in seconds (no constant read from .rodata: see clock.c). */
double forksafe__ns_to_seconds(int64_t ns);

/* ---------------------------------------------------------------- process */

enum forksafe__process_kind {
    FORKSAFE__MASTER,
    FORKSAFE__WORKER,
    FORKSAFE__MULE,
    FORKSAFE__SPOOLER,
    FORKSAFE__PROCESS_KIND_COUNT
};

/* Returns "master", "worker", "mule", "spooler". */
const char *forksafe__process_kind_name(int kind);

/* Returns the kind for a name, or -1. */
int forksafe__process_kind_from_name(const char *name);

typedef struct forksafe__process {
    int kind;  /* enum forksafe__process_kind */
    int id;    /* 0 for the master */
    pid_t pid; /* 0 if not known yet (pre-fork) */
    pid_t ppid;
    int respawn; /* times this slot was respawned */
} forksafe__process;

/* One worker of a generation, as generation-ready lists it. */
typedef struct forksafe__ready_worker {
    int id;
    pid_t pid;
    long long ms; /* from the generation's start to its worker-ready */
} forksafe__ready_worker;

/* What the host knows about one occurrence of an event.  The words, in
 * names and comments: an event occurs, the occurrence is dispatched, and
 * each matching handler runs. */
typedef struct forksafe__occurrence {
    forksafe_event_type type;
    forksafe__process self;         /* the process running the handlers */
    const forksafe__process *child; /* pre-fork, post-fork-parent, child-death */
    int child_status_known;         /* child-death: waitpid status known */
    int child_status;               /* raw waitpid status */
    const char *child_cause;        /* child-death: "signal", "exit", "harakiri", ... */
    const char *reason;             /* worker-exit, master-exit */
    int generation;
    /* pre-fork: what the child is about to inherit (lib/hazard_watch.c),
     * for the payload; NULL when not looked for. */
    const struct forksafe__hazard_list *hazards;
    /* generation-ready: the generation's workers (borrowed), and the ms
     * since master-start. */
    const forksafe__ready_worker *workers;
    size_t worker_count;
    long long elapsed_ms;
} forksafe__occurrence;

/* -------------------------------------------------------------- backends */
typedef struct forksafe__backend forksafe__backend;

/* How one handler kind ("exec", "dl", "symbol", "hook", "python") is
 * resolved at start-up and run per event.  lib/ provides exec, dl and
 * symbol; the host registers the rest (hook, python). */
struct forksafe__backend {
    const char *kind;
    /* Checks and prepares SPEC (the text after "kind:").  On success stores
     * a handle in *HANDLE (may be NULL) and returns 0; otherwise records a
     * human sentence in ERR (the caller adds file and line) and returns a
     * negative code. Runs once, in the master, before any fork. */
    int (*resolve)(forksafe__context *ctx, void *data, const char *spec, void **handle,
                   forksafe__error *err);
    /* Runs the handler for EV.  Returns 0 on success, negative on failure,
     * with a short reason in WHY. */
    int (*run)(forksafe__context *ctx, void *data, void *handle, const forksafe_event *ev,
               char *why, size_t why_size);
    /* Frees HANDLE (may be NULL). */
    void (*release)(void *data, void *handle);
    void *data;
    /* Optional: the events a resolved handler belongs to (a bit per event),
     * for a kind whose handlers know their own events (recipe:).  The
     * subscription is then delivered all of them, whichever of them (or
     * "*") it named; naming another is a start-up error. */
    uint32_t (*events)(void *data, void *handle);
};

/* The built-in backends that forksafe__context_init registers: exec (exec.c),
 * dl and symbol (native.c).  Static objects that live as long as the
 * process; never freed. */
forksafe__backend *forksafe__exec_backend(void);
forksafe__backend *forksafe__dl_backend(void);
forksafe__backend *forksafe__symbol_backend(void);

/* ----------------------------------------------------------- subscriptions */

enum forksafe__on_error {
    FORKSAFE__ON_ERROR_INHERIT = -1,
    FORKSAFE__ON_ERROR_LOG,
    FORKSAFE__ON_ERROR_EXIT,
    FORKSAFE__ON_ERROR_FATAL
};

/* Returns the event name NAME is most likely a typo of (lib/suggest.c), or
 * NULL.  '_' for '-' and case count as no difference: both are common
 * slips. */
const char *forksafe__closest_event(const char *name);

/* Returns the policy for "log", "exit", "fatal", or -1. */
int forksafe__on_error_from_name(const char *name);
const char *forksafe__on_error_name(int policy);

typedef struct forksafe__subscription {
    uint32_t events; /* bit (1u << forksafe_event_type) per event */
    uint32_t kinds;  /* bit per process kind; 0 = any */
    int id;          /* process id filter; 0 = any */
    int once;        /* run in the first process that reaches it only */
    int on_error;    /* enum forksafe__on_error */
    char *spec;      /* "exec:/usr/bin/true", as written */
    char *name;      /* label for logs: the spec, URL passwords redacted, truncated */
    const forksafe__backend *backend;
    void *handle;
    char *source; /* file or "forksafe-subscribe" */
    int line;
    unsigned index; /* position in the table, for the once flags */
} forksafe__subscription;

/* ------------------------------------------------------------------ stats */

/* Upper bounds, in microseconds, of the handler-duration histogram's
 * buckets; a last, unbounded bucket follows them (lib/metrics.c says them
 * in seconds). */
#define FORKSAFE__DURATION_BOUNDS_US                                 \
    {                                                                \
        100, 1000, 10000, 100000, 500000, 1000000, 5000000, 30000000 \
    }
#define FORKSAFE__DURATION_BUCKETS 9

/* Counters of one event, summed over every process of the instance. */
typedef struct forksafe__event_stats {
    int64_t occurred;         /* occurrences, in any process, handled or not;
                                 "fired" in the stats JSON and uWSGI's metrics */
    int64_t handlers_run;     /* handler runs (a listener call counts as one) */
    int64_t failed;           /* handler runs that failed */
    int64_t last_duration_us; /* the most recent handler run */
    int64_t max_duration_us;  /* the slowest handler run */
    int64_t duration_sum_us;  /* every handler run, added up */
    /* handler runs per duration bucket (not cumulative: one add per run) */
    int64_t duration_buckets[FORKSAFE__DURATION_BUCKETS];
} forksafe__event_stats;

/* One handler run.  A record is valid when `stamp` equals its sequence
 * number + 1: a writer zeroes the stamp first and sets it last, so a record
 * torn by a process killed while writing it is skipped, never misread. */
typedef struct forksafe__run_record {
    uint64_t stamp;
    int64_t time_us; /* wall clock at the end of the run */
    int64_t duration_us;
    int32_t event;
    int32_t kind;
    int32_t id;
    int32_t pid;
    int32_t subscription; /* index, or FORKSAFE__STATS_LISTENERS */
    int32_t result;       /* 0 or a FORKSAFE__E* code */
    char why[96];         /* why it failed, truncated; "" on success */
} forksafe__run_record;

/* The subscription index recorded for pyramid_forksafe's listeners. */
#define FORKSAFE__STATS_LISTENERS (-1)

/* Lives in MAP_SHARED memory made in the master before any fork, so every
 * process adds to the same counters with atomic operations, and what a
 * process recorded survives it being killed. */
/* What the masters found before their forks (lib/hazard_watch.c). */
typedef struct forksafe__hazard_stats {
    int64_t forks_looked;       /* pre-forks looked at */
    int64_t forks_with_hazards; /* ... that found a hazard no rule allows */
    int64_t last;               /* hazards no rule allows, at the last look */
    int64_t last_allowed;       /* hazards a rule allows, at the last look */
} forksafe__hazard_stats;

/* Counters of one subscription (slot 0: pyramid_forksafe's listeners,
 * slot N: subscription index N - 1); subscriptions past the last slot are
 * counted per event only. */
typedef struct forksafe__subscription_stats {
    int64_t runs;
    int64_t failed;
    int64_t duration_sum_us;
} forksafe__subscription_stats;

#define FORKSAFE__SUBSCRIPTION_STATS 256

/* Laid out for a new child's first writes (a write to a page of a shared
 * mapping is a fault in the child): what it writes as it starts, after the
 * host's room (the slots), comes first and fits on the room's page with it:
 * the sequence, the per-event counters and the first subscriptions' slots.
 * The rest of the 6 KiB of subscription slots follows, then the ring. */
typedef struct forksafe__stats {
    uint64_t next_sequence;
    uint32_t history_capacity;
    forksafe__event_stats events[FORKSAFE_EVENT_COUNT];
    forksafe__hazard_stats hazards;
    forksafe__subscription_stats subscriptions[FORKSAFE__SUBSCRIPTION_STATS];
    forksafe__run_record history[];
} forksafe__stats;

/* The default number of handler runs kept in the history. */
#define FORKSAFE__HISTORY_DEFAULT 128
#define FORKSAFE__HISTORY_MAX     1000000

/* -------------------------------------------------------------- listeners */

/* What the listeners keep for one dispatch, on the dispatcher's stack (a
 * listener may cause a nested dispatch: a fork's events). */
typedef struct forksafe__listener_round {
    void *listeners; /* a snapshot of the list, taken by open() */
    void *payload;   /* the payload all of them get */
    long count;
    int lock; /* what open() locked for close() to unlock: the GIL */
} forksafe__listener_round;

/* A built-in subscription to every event whose handlers change while the
 * process runs: pyramid_forksafe's listeners (lib/python_bridge.c).  They
 * run after the subscriptions, and the dispatcher treats each like a
 * subscription's handler - timed, counted in the stats as
 * FORKSAFE__STATS_LISTENERS, a failure under the context's policy - except
 * that a listener logs its own failure, with its traceback. */
typedef struct forksafe__listeners {
    forksafe__subscription subscription; /* name and spec, for logs */
    /* Prepares the listeners to hear EV.  Returns 1 with ROUND filled in
     * (close() follows), 0 when none is to run, or a negative code when it
     * failed (after logging why). */
    int (*open)(forksafe__context *ctx, const forksafe_event *ev, forksafe__listener_round *round);
    /* Runs listener INDEX of ROUND.  Returns 0, or a negative code with a
     * short reason in WHY. */
    int (*run)(forksafe__context *ctx, forksafe__listener_round *round, long index,
               const forksafe_event *ev, char *why, size_t why_size);
    void (*close)(forksafe__listener_round *round);
} forksafe__listeners;

/* ---------------------------------------------------------------- context */

/* One instance's configuration: settings, subscriptions, policy, backends.
 * Built once in the master at start-up (and again after a reload), then
 * inherited by every child copy-on-write; never re-parsed per fork. */
struct forksafe__context {
    forksafe__settings settings;
    int has_settings;
    json_t *settings_json; /* built once; shared by every payload */
    json_t *global_settings_json;

    forksafe__subscription *subscriptions;
    size_t subscription_count;

    forksafe__backend **backends;
    size_t backend_count;

    /* Run after the subscriptions on every event; NULL: none. */
    const forksafe__listeners *listeners;

    int on_error;   /* default policy */
    double timeout; /* seconds, exec handlers; warning threshold otherwise */
    int verbose;
    const char *container; /* "uwsgi" */

    forksafe__log_fn log;
    void *log_data;

    /* Shared (MAP_SHARED) memory for `once` flags, one byte per
     * subscription; created by forksafe__context_seal in the master. */
    volatile unsigned char *once_flags;
    size_t once_flags_size;

    /* Counters and recent history shared by every process; made by
     * forksafe__stats_setup (or by seal with the default size), after
     * stats_room bytes of the host's own in the same mapping. */
    forksafe__stats *stats;
    size_t stats_size; /* the whole mapping, the host's room included */
    size_t stats_room;

    /* Set by a successful forksafe__context_seal: handlers resolved, no
     * more subscriptions may be added. */
    int sealed;
};

/* Initialises CTX with defaults: on-error log, timeout 30 s, the built-in
 * backends (exec, dl, symbol) registered. Returns 0 or FORKSAFE__ENOMEM. */
int forksafe__context_init(forksafe__context *ctx, forksafe__log_fn log, void *log_data);

/* Registers a backend (borrowed; must outlive CTX).  A kind registered
 * twice replaces the earlier one. Returns 0 or FORKSAFE__ENOMEM. */
int forksafe__context_add_backend(forksafe__context *ctx, forksafe__backend *backend);

/* Returns the backend for KIND, or NULL. */
const forksafe__backend *forksafe__context_backend(const forksafe__context *ctx, const char *kind);

/* Parses a `forksafe-subscribe` value "EVENT[,EVENT...] [OPTION...] HANDLER"
 * and appends it (not yet resolved).  OPTION is kind=worker|mule|spooler|
 * master[,...], id=N, once, on-error=log|exit|fatal.  SOURCE/LINE locate it
 * for errors.  Returns 0, FORKSAFE__ESYNTAX, FORKSAFE__ENOMEM. */
int forksafe__subscribe(forksafe__context *ctx, const char *text, const char *source, int line,
                        forksafe__error *err);

/* Appends the subscriptions of the [forksafe] section of INI (if present):
 * one key per event (or "*"), each line of the value "[OPTION...] HANDLER";
 * values interpolated like settings.  Returns as forksafe__subscribe. */
int forksafe__subscribe_ini(forksafe__context *ctx, const forksafe__ini *ini, forksafe__error *err);

/* Resolves every subscription's handler through its backend, builds the
 * settings JSON, and maps the shared memory for once flags.  Must run in the
 * master before any fork.  Returns 0 or the first error (with file:line). */
int forksafe__context_seal(forksafe__context *ctx, forksafe__error *err);

/* Dispatches OCC: runs the handler of every matching subscription, in
 * declaration order, then the listeners.  Returns 0 if all succeeded (or
 * none matched); otherwise the strongest policy among the failed ones as a
 * positive enum forksafe__on_error value + 1 (so 1 = log, 2 = exit,
 * 3 = fatal) - the host acts on it. */
int forksafe__dispatch(forksafe__context *ctx, const forksafe__occurrence *occ);

/* The on-error policy SUB's failures fall under: its own, or CTX's. */
int forksafe__subscription_policy(const forksafe__context *ctx, const forksafe__subscription *sub);

/* Returns 1 if any subscription would run on events of TYPE. */
int forksafe__wants(const forksafe__context *ctx, forksafe_event_type type);

/* Writes the resolved subscription table and the settings (secrets
 * redacted) through the log callback, for forksafe-check. */
void forksafe__context_describe(const forksafe__context *ctx);

/* Frees everything; CTX can be initialised again. */
void forksafe__context_free(forksafe__context *ctx);

/* Maps the shared counters and a history of HISTORY handler runs (0 keeps
 * counters only).  Must run in the master before any fork; a second call
 * does nothing.  Returns 0, FORKSAFE__EINVAL (HISTORY too large) or
 * FORKSAFE__ENOMEM. */
int forksafe__stats_setup(forksafe__context *ctx, unsigned history);

/* The same, with ROOM zeroed bytes for the host at the start of the
 * mapping, just before the counters: what a new child writes there and the
 * counters its first events add to are then on one page, one fault where
 * separate mappings would each cost one (bench/spawn_faults.py).  The room
 * is forksafe__stats_room(CTX), 64-byte aligned, shared like the counters. */
int forksafe__stats_setup_with_room(forksafe__context *ctx, unsigned history, size_t room);

/* The host's room of forksafe__stats_setup_with_room, NULL without one. */
void *forksafe__stats_room(const forksafe__context *ctx);

/* Counts one occurrence of TYPE. */
void forksafe__stats_occurred(forksafe__context *ctx, forksafe_event_type type);

/* Counts one look for fork hazards: UNALLOWED and ALLOWED found. */
void forksafe__stats_hazards(forksafe__context *ctx, int unallowed, int allowed);

/* Records one handler run: counters and a history record.  SUBSCRIPTION is
 * an index into ctx->subscriptions or FORKSAFE__STATS_LISTENERS; WHY (may be
 * NULL or "") says why a failed run failed. */
void forksafe__stats_handler_ran(forksafe__context *ctx, const forksafe__occurrence *occ,
                                 int subscription, int result, const char *why,
                                 int64_t duration_ns);

/* Returns a new JSON object: {"events": {EVENT: {fired (= occurred),
 * handlers, failed, last_us, max_us}}, "history": [oldest first],
 * "subscriptions": [...]} with handler specs redacted as in forksafe-check;
 * NULL on ENOMEM. */
json_t *forksafe__stats_json(const forksafe__context *ctx);

/* ---------------------------------------------------------------- metrics */

/* One process's memory from /proc/PID/smaps_rollup, in bytes. */
typedef struct forksafe__memory {
    int64_t rss;
    int64_t pss;
    int64_t shared;        /* Shared_Clean + Shared_Dirty */
    int64_t private_bytes; /* Private_Clean + Private_Dirty */
} forksafe__memory;

/* Reads PID's (0: this process's) memory into *MEMORY.  Returns 0, or -1
 * with errno set (no such process, not ours to read). */
int forksafe__memory_read(pid_t pid, forksafe__memory *memory);

/* Appends VALUE to *TEXT (see forksafe__text_append) as a label value of
 * Prometheus' text format: backslash, double quote and newline escaped.
 * Returns 0 or FORKSAFE__ENOMEM. */
int forksafe__metrics_label_append(char **text, size_t *length, size_t *capacity,
                                   const char *value);

/* The counters of CTX, the subscriptions, CONTAINER's GENERATION and the
 * memory of each of the COUNT PROCESSES (one that is gone is left out) in
 * Prometheus' text exposition format 0.0.4.  Returns a new text (free it
 * with forksafe__free), or NULL without stats or memory. */
char *forksafe__metrics_text(const forksafe__context *ctx, const char *container, long generation,
                             const forksafe__process *processes, size_t count);

/* ------------------------------------------------------------ event object */

/* The concrete forksafe_event handed to handlers. */
struct forksafe_event {
    const forksafe__context *ctx;
    const forksafe__occurrence *occ;
    const forksafe__subscription *subscription;
    json_t *payload;    /* built on first use, once per dispatch, shared */
    char *payload_json; /* serialised lazily, once per dispatch */
    double time;        /* when the event happened (epoch seconds); 0: now */
};

/* Builds the payload object for OCC. Returns a new reference or NULL. */
json_t *forksafe__payload_new(const forksafe__context *ctx, const forksafe__occurrence *occ);

/* Builds the payload of OCC at TIME with W: the one place that says what
 * a payload holds, for every form of it.  Returns W's object, or NULL. */
typedef struct forksafe__payload_writer forksafe__payload_writer;
struct forksafe__payload_writer {
    void *(*object)(const forksafe__payload_writer *w);
    /* Adds KEY = VALUE to OBJECT and takes VALUE, also on failure (VALUE
     * NULL: it could not be made).  0 on success. */
    int (*set)(const forksafe__payload_writer *w, void *object, const char *key, void *value);
    void *(*string)(const forksafe__payload_writer *w, const char *text);
    void *(*integer)(const forksafe__payload_writer *w, long long value);
    void *(*real)(const forksafe__payload_writer *w, double value);
    /* The settings maps, shared JSON built at seal (NULL: none). */
    void *(*shared)(const forksafe__payload_writer *w, const json_t *value);
    void (*release)(const forksafe__payload_writer *w, void *object);
};
void *forksafe__payload_write(const forksafe__payload_writer *w, const forksafe__context *ctx,
                              const forksafe__occurrence *occ, double time);

/* -------------------------------------------------------- python backend */

/* The `python:MODULE:CALLABLE` backend (lib/python.c).  Resolving fails
 * with a clear sentence if libpython is not in the process.  Static object;
 * never freed. */
forksafe__backend *forksafe__python_backend(void);

/* LAZY nonzero: resolve only checks that a handler's top-level package can
 * be found, and each process imports the module on first use (for
 * lazy-apps, where importing app code in the master is wrong). */
void forksafe__python_set_lazy(int lazy);

/* Whether forksafe__python_set_lazy said so. */
int forksafe__python_lazy(void);

/* The `recipe:NAME[?OPTIONS]` backend (lib/recipe.c): forksafe's own
 * handlers for the libraries that break across a fork, written in Python
 * (the forksafe package's forksafe.recipes).  Static object; never freed. */
forksafe__backend *forksafe__recipe_backend(void);

/* --------------------------------------------------------- python bridge */

/* Creates the `_forksafe` module in sys.modules (listeners, delivered,
 * version, container, recorded(), claim_socket(), unclaim_socket()) for
 * pyramid_forksafe and the recipes, and makes its
 * listeners CTX's listeners (lib/python_bridge.c), so that every event
 * dispatched in CTX runs them.  A no-op without Python.  Returns 0 or
 * FORKSAFE__ENOMEM. */
int forksafe__python_bridge_init(forksafe__context *ctx);

/* Forgets what the bridge keeps of CTX (the post-fork no listener heard),
 * before CTX is freed: the host API frees its context, the uWSGI plugin
 * never does.  Touches no Python object. */
void forksafe__python_bridge_forget(const forksafe__context *ctx);

/* ------------------------------------------------------- python at fork */

/* os.fork()'s semantics for a fork made from C (lib/python_fork.c), in the
 * forking thread: forksafe__python_before_fork() right before fork(), then
 * the parent's or the child's half right after it.  Before returns 0 when
 * the before half ran (the GIL is held until the after half), or why it
 * did not (nothing is then held, and either after half does nothing). */
#define FORKSAFE__PYTHON_FORK_NO_PYTHON       1 /* no interpreter in this process */
#define FORKSAFE__PYTHON_FORK_SUBINTERPRETERS 2 /* the child half would delete them */
int forksafe__python_before_fork(void);
void forksafe__python_after_fork_parent(void);
void forksafe__python_after_fork_child(void);

/* ---------------------------------------------------------- exec backend */

/* Exposed for tests and for the host's exec-like needs: runs COMMAND with
 * /bin/sh -c, INPUT on its stdin, ENV extra "NAME=VALUE" entries (NULL-
 * terminated), in its own process group; kills the group after TIMEOUT
 * seconds (TIMEOUT <= 0: no limit), and what is left of it when the
 * command exits.  Always reaps.  Stores the waitpid
 * status in *STATUS.  Returns 0 if it ran to the end, FORKSAFE__ETIMEDOUT,
 * FORKSAFE__EIO (could not start; errno says why), FORKSAFE__ENOMEM. */
int forksafe__run_command(const char *command, const char *input, size_t input_length,
                          const char *const *env, double timeout, int *status);

/* From now on this process writes the pid of the command it is running
 * (its process group) to *SLOT, and 0 when none runs; SLOT in memory
 * shared with a process that outlives this one (the uWSGI master), so that
 * it can kill the group if this process dies mid-handler.  NULL: stop. */
void forksafe__exec_track(volatile pid_t *slot);

/* ------------------------------------------------------------- intercept */

/* Points every GOT entry through which the main program calls SYMBOL (a
 * function of a shared library, e.g. "kill") at REPLACEMENT.  Returns how
 * many entries changed (0: the program never calls SYMBOL that way), or
 * FORKSAFE__ENOTFOUND (no dynamic section, an unknown architecture),
 * FORKSAFE__EIO (a read-only page could not be opened).  The replacement
 * must reach the real function through a pointer taken before this call. */
int forksafe__intercept_call(const char *symbol, void *replacement);

#endif /* FORKSAFE_INTERNAL_H */
