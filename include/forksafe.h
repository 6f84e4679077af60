/*
 * forksafe.h - the public API for native forksafe handlers.
 *
 * A native handler is a C function
 *
 *     int my_handler(const forksafe_event *ev);
 *
 * named by a subscription as `dl:/path/to/lib.so:my_handler` (loaded with
 * dlopen at start-up, in the master, before any fork) or `symbol:my_handler`
 * (already linked into the process, e.g. an embedded uWSGI build).  It returns
 * 0 on success and anything else on failure; what a failure does is decided by
 * the `forksafe-on-error` policy (log, exit the process, or stop the instance).
 *
 * Every library or object that provides handlers must say which handler ABI it
 * was built against, once, at file scope:
 *
 *     FORKSAFE_HANDLER_ABI_DECLARE();
 *
 * The loader refuses a handler whose ABI is missing or different, naming the
 * file and line of the subscription.
 *
 * The event payload (one JSON object, the same for every handler kind):
 *
 *   {
 *     "event":      "post-fork",            one of the event names below
 *     "container":  "uwsgi",
 *     "process":    {"kind": "master"|"worker"|"mule"|"spooler",
 *                    "id": 1, "pid": 1234, "ppid": 1200},
 *     "generation": 0,                      reload count of the instance
 *     "respawn":    0,                      times this process slot was respawned
 *     "time":       1764095000.123,         seconds since the epoch (float)
 *     "settings":   {"key": "value", ...},  the app's settings (strings)
 *     "global_settings": {...},             [DEFAULT] plus here and __file__
 *     "child":      {"kind", "id", "pid", "respawn"[, "status", "signal",
 *                    "exit_code", "cause"]}   pre-fork, post-fork-parent,
 *                                              child-death only
 *     "reason":     "shutdown"|"reload"|...   worker-exit and master-exit only
 *     "workers":    [{"id": 1, "pid": 1301, "ms": 412}, ...]
 *                                           generation-ready only: the workers
 *                                           of the generation, each with the
 *                                           ms from the generation's start to
 *                                           its worker-ready
 *     "elapsed_ms": 530                     generation-ready only: ms since
 *                                           master-start
 *   }
 *
 * In the master "id" is 0; workers, mules and spoolers count from 1.
 * In pre-fork the child does not exist yet: "child" has no "pid".
 *
 * Lifetime: a forksafe_event and everything reached through it (strings,
 * json_t) is borrowed and valid only during the handler call.  Handlers must
 * not modify or free any of it; copy what must outlive the call.
 */
#ifndef FORKSAFE_H
#define FORKSAFE_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the handler ABI described in this header.  Bumped whenever a
 * change would break an already compiled handler. */
#define FORKSAFE_HANDLER_ABI 1

/* Version of forksafe itself, for humans and pkg-config. */
#define FORKSAFE_VERSION "0.3.0"

#if defined(__GNUC__)
#define FORKSAFE_EXPORT __attribute__((visibility("default")))
#define FORKSAFE_PRINTF(fmt_index, args_index) \
    __attribute__((format(printf, fmt_index, args_index)))
#else
#define FORKSAFE_EXPORT
#define FORKSAFE_PRINTF(fmt_index, args_index)
#endif

/* Put once at file scope in every library or object that provides handlers.
 * Defines the symbol `forksafe_handler_abi` that the loader checks. */
#define FORKSAFE_HANDLER_ABI_DECLARE() \
    FORKSAFE_EXPORT const int forksafe_handler_abi = FORKSAFE_HANDLER_ABI

/* The standard lifecycle events.  Each keeps its value for good: a new one
 * is appended (generation-ready, an instance-wide moment, came last), so a
 * handler compiled against an older header still names the same events. */
#define FORKSAFE_EVENTS(X)                           \
    X(FORKSAFE_MASTER_START, "master-start")         \
    X(FORKSAFE_PRE_FORK, "pre-fork")                 \
    X(FORKSAFE_POST_FORK, "post-fork")               \
    X(FORKSAFE_POST_FORK_PARENT, "post-fork-parent") \
    X(FORKSAFE_WORKER_READY, "worker-ready")         \
    X(FORKSAFE_WORKER_EXIT, "worker-exit")           \
    X(FORKSAFE_CHILD_DEATH, "child-death")           \
    X(FORKSAFE_MASTER_EXIT, "master-exit")           \
    X(FORKSAFE_GENERATION_READY, "generation-ready")

typedef enum forksafe_event_type {
#define FORKSAFE__ENUM_ENTRY(id, name) id,
    FORKSAFE_EVENTS(FORKSAFE__ENUM_ENTRY)
#undef FORKSAFE__ENUM_ENTRY
        FORKSAFE_EVENT_COUNT
} forksafe_event_type;

/* Opaque: what a handler is given. */
typedef struct forksafe_event forksafe_event;

/* The signature of a native handler: 0 = success, anything else = failure. */
typedef int (*forksafe_handler_fn)(const forksafe_event *ev);

/* Returns the name of an event type ("post-fork"), or NULL if out of range. */
FORKSAFE_EXPORT const char *forksafe_event_type_name(forksafe_event_type type);

/* Returns the event type for a name, or -1 if the name is not an event. */
FORKSAFE_EXPORT int forksafe_event_type_from_name(const char *name);

/* Returns the type of the event that occurred. */
FORKSAFE_EXPORT forksafe_event_type forksafe_event_type_of(const forksafe_event *ev);

/* Returns the event's name ("post-fork").  Borrowed. */
FORKSAFE_EXPORT const char *forksafe_event_name(const forksafe_event *ev);

/* Returns the kind of process running the handler: "master", "worker",
 * "mule" or "spooler".  Borrowed. */
FORKSAFE_EXPORT const char *forksafe_event_process_kind(const forksafe_event *ev);

/* Returns the id of the process running the handler (0 for the master). */
FORKSAFE_EXPORT int forksafe_event_process_id(const forksafe_event *ev);

/* Returns the pid of the process running the handler. */
FORKSAFE_EXPORT pid_t forksafe_event_pid(const forksafe_event *ev);

/* Returns the value of the app setting KEY, or NULL if there is no such key.
 * Borrowed; valid during the call. */
FORKSAFE_EXPORT const char *forksafe_event_setting(const forksafe_event *ev, const char *key);

/* Returns the whole payload as a jansson `json_t *` (declared void * here so
 * that this header does not require jansson.h), built on the first call of
 * the dispatch.  Borrowed and read-only; NULL only if memory ran out. */
FORKSAFE_EXPORT const void *forksafe_event_payload(const forksafe_event *ev);

/* Returns the payload serialised as compact JSON.  Borrowed; valid during the
 * call; NULL only if memory ran out. */
FORKSAFE_EXPORT const char *forksafe_event_payload_json(const forksafe_event *ev);

/* Logs one line through the host's logger, prefixed with "[forksafe]" and the
 * handler's name.  Never use printf from a handler: stdout may be a socket. */
FORKSAFE_EXPORT void forksafe_event_log(const forksafe_event *ev, const char *fmt, ...)
    FORKSAFE_PRINTF(2, 3);

/* The host API, for servers other than uWSGI, is in forksafe_host.h. */

#ifdef __cplusplus
}
#endif

#endif /* FORKSAFE_H */
