/*
 * forksafe_host.h - the host API: the forksafe core driven by a server other
 * than uWSGI.  The gunicorn and Celery adapters (ctypes over libforksafe.so)
 * use it, so every server parses the same settings and [forksafe] section,
 * runs the same handler kinds (exec:, dl:, symbol:, python:) and applies the
 * same on-error policy words.  Handler authors need only forksafe.h.
 *
 * The structs passed in are versioned: their first field is the
 * FORKSAFE_HOST_API_VERSION the caller was written for, and a library that
 * does not speak that version refuses the call instead of misreading it.
 * Version 2 appended the generation-ready fields to the occurrence; a
 * version 1 caller (whose struct ends before them) is still understood.
 */
#ifndef FORKSAFE_HOST_H
#define FORKSAFE_HOST_H

#include <stddef.h>

#include "forksafe.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FORKSAFE_HOST_API_VERSION 2

/* The oldest version this library still reads. */
#define FORKSAFE_HOST_API_OLDEST 1

/* Opaque: one server instance's configuration. */
typedef struct forksafe_host forksafe_host;

/* A log line's level, for a host's own logger. */
enum {
    FORKSAFE_HOST_LOG_ERROR,
    FORKSAFE_HOST_LOG_WARNING,
    FORKSAFE_HOST_LOG_INFO,
    FORKSAFE_HOST_LOG_DEBUG
};

/* Receives each line the core logs: LINE has no prefix and no newline (a
 * traceback makes it span lines).  It runs in the thread that dispatches,
 * and must not call back into the host. */
typedef void (*forksafe_host_log_fn)(void *data, int level, const char *line);

/* What forksafe_host_new reads. */
typedef struct forksafe_host_config {
    int version;               /* FORKSAFE_HOST_API_VERSION */
    const char *container;     /* "gunicorn", "celery": the payload's "container" */
    const char *settings;      /* PATH[#NAME] as forksafe-settings; NULL: no settings */
    const char *subscriptions; /* newline-separated forksafe-subscribe values; NULL: none */
    const char *source;        /* names SUBSCRIPTIONS in errors; NULL: "forksafe-subscribe" */
    const char *on_error;      /* "log", "exit", "fatal"; NULL: log */
    double timeout;            /* seconds an exec handler may run; <= 0: 30 */
    int verbose;               /* log every dispatch */
    forksafe_host_log_fn log;  /* NULL: stderr, each line prefixed "[forksafe] " */
    void *log_data;            /* LOG's DATA */
    const char *hazards;       /* "warn", "fail", "off": see forksafe_host_hazards; NULL: warn */
    const char *hazard_allow;  /* newline-separated allow rules: thread:GLOB, tcp:HOST:PORT,
                                  unix:GLOB; named by SOURCE in errors; NULL: none */
} forksafe_host_config;

/* One process as the server sees it. */
typedef struct forksafe_host_process {
    const char *kind; /* "master", "worker", "mule", "spooler" */
    int id;           /* 0 for the master; workers count from 1 */
    int pid;          /* 0: this process's (a child's: not known yet) */
    int ppid;         /* 0: this process's parent */
    int respawn;      /* times this process slot was forked before */
} forksafe_host_process;

/* One worker of a generation, for generation-ready (version 2). */
typedef struct forksafe_host_ready_worker {
    int id;
    int pid;
    long long ms; /* from the generation's start to its worker-ready */
} forksafe_host_ready_worker;

/* An event that occurred in SELF, the calling process. */
typedef struct forksafe_host_occurrence {
    int version;       /* FORKSAFE_HOST_API_VERSION */
    const char *event; /* an event name: "post-fork", "worker-exit", ... */
    forksafe_host_process self;
    int generation;     /* the instance's reload count */
    const char *reason; /* worker-exit and master-exit; NULL: none */
    /* pre-fork, post-fork-parent and child-death: the child; NULL for the
     * other events.  For child-death, its waitpid() status if known, and
     * the cause ("exit", "signal", "crash", "killed-by-master", ...). */
    const forksafe_host_process *child;
    int child_status_known;
    int child_status;
    const char *child_cause;
    /* Version 2 on.  generation-ready: the generation's WORKER_COUNT
     * workers, and the ms since master-start; ignored for other events. */
    const forksafe_host_ready_worker *workers;
    int worker_count;
    long long elapsed_ms;
} forksafe_host_occurrence;

/* Creates a host from CONFIG: loads the settings, subscribes the [forksafe]
 * section of that file if it is an ini, then each line of the
 * subscriptions, and resolves every handler.  Logs go to CONFIG's log (from
 * this call on, for the host's life).  Returns a new host to free with forksafe_host_free, or NULL
 * with "FILE:LINE: what is wrong" in ERROR (also for a CONFIG of another
 * API version). */
FORKSAFE_EXPORT forksafe_host *forksafe_host_new(const forksafe_host_config *config, char *error,
                                                 size_t error_size);

/* Dispatches OCCURRENCE to the host's subscriptions, whose handlers run in
 * the calling process.  A pre-fork (unless hazards are off) also looks for
 * what the child is about to inherit and must not share (threads,
 * connected sockets: the payload's "hazards"), before the handlers run and
 * again after, and logs each hazard no allow rule covers, once per child
 * and generation.  Returns 0 if every handler succeeded, otherwise 1 +
 * the strongest failing policy (1 log, 2 exit, 3 fatal) for the caller to
 * act on; -1 for an unknown event or kind, or another API version. */
FORKSAFE_EXPORT int forksafe_host_dispatch(forksafe_host *host,
                                           const forksafe_host_occurrence *occurrence);

/* How many hazards no allow rule covers the last pre-fork dispatched in
 * this process found (0 when hazards are off).  With hazards = "fail" the
 * caller refuses that fork: it stops before the first child is forked,
 * or stops the server if children already run. */
FORKSAFE_EXPORT int forksafe_host_hazards(const forksafe_host *host);

/* Makes the host's dispatch run the listeners of the `_forksafe` module of
 * the calling process's Python interpreter, after the subscriptions, as
 * the uWSGI plugin does: each gets the payload (a dict, from the writer
 * python: handlers use), each is timed and counted in the stats (handler
 * "pyramid_forksafe" in the history), and one that raises is logged with its
 * traceback and counts as a failure under the host's on-error policy.
 * Creates the module if sys.modules has none (listeners, delivered,
 * version, container: the host's, recorded()); keeps the one there is.
 * Takes the GIL itself, so it may be called with or without it.  Returns
 * 0, or -1 when Python is not initialised in this process or memory ran
 * out. */
FORKSAFE_EXPORT int forksafe_host_python_bridge(forksafe_host *host);

/* Returns the settings as a JSON object {"settings": {...},
 * "global_settings": {...}}.  Borrowed; valid until forksafe_host_free. */
FORKSAFE_EXPORT const char *forksafe_host_settings_json(forksafe_host *host);

/* Returns the counters and recent history of every process forked after
 * forksafe_host_new (they share memory with it) as a JSON object:
 * {"events": {EVENT: {"fired", "handlers", "failed", "last_us", "max_us"}},
 * "history": [{"seq", "time", "event", "process", "subscription",
 * "handler", "result", "duration_us"}, ...] oldest first, "history_size",
 * "subscriptions": [...]}.  Borrowed; valid until the next call or
 * forksafe_host_free; NULL when out of memory. */
FORKSAFE_EXPORT const char *forksafe_host_stats_json(forksafe_host *host);

/* Returns the same counters in Prometheus' text exposition format 0.0.4
 * (what the uWSGI plugin's forksafe-metrics address serves at /metrics),
 * with GENERATION (the server's reload count) and the memory of each of
 * the COUNT PROCESSES (kind, id and pid read; pid 0: this process) from
 * /proc/PID/smaps_rollup; one that is gone, or of an unknown kind, is left
 * out.  Borrowed; valid until the next call or forksafe_host_free; NULL
 * when out of memory. */
FORKSAFE_EXPORT const char *forksafe_host_metrics_text(forksafe_host *host,
                                                       const forksafe_host_process *processes,
                                                       size_t count, int generation);

/* Frees HOST (NULL is fine). */
FORKSAFE_EXPORT void forksafe_host_free(forksafe_host *host);

#ifdef __cplusplus
}
#endif

#endif /* FORKSAFE_HOST_H */
