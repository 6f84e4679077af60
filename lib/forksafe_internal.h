/*
 * forksafe_internal.h - the private API shared by lib/ and the uWSGI glue.
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

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "forksafe.h"

#define FORKSAFE__PRINTF(fmt_index, args_index) \
    __attribute__((format(printf, fmt_index, args_index)))

/* ------------------------------------------------------------------ errors */

#define FORKSAFE__ERRORS(X)                     \
    X(FORKSAFE__ENOMEM, -1, "out of memory")    \
    X(FORKSAFE__EIO, -2, "input/output error")  \
    X(FORKSAFE__ESYNTAX, -3, "syntax error")    \
    X(FORKSAFE__ENOTFOUND, -4, "not found")     \
    X(FORKSAFE__EINVAL, -5, "invalid value")    \
    X(FORKSAFE__EHANDLER, -6, "handler failed") \
    X(FORKSAFE__ETIMEDOUT, -7, "handler timed out")

enum forksafe__error_code {
#define FORKSAFE__ERROR_ENUM(id, value, text) id = value,
    FORKSAFE__ERRORS(FORKSAFE__ERROR_ENUM)
#undef FORKSAFE__ERROR_ENUM
};

/* Returns a static description of a FORKSAFE__E* code. */
const char *forksafe__strerror(int code);

/* Where and what went wrong.  The first error recorded wins: later calls to
 * forksafe__error_set on an already set error do nothing, so the root cause
 * survives the unwinding. */
typedef struct forksafe__error {
    int set;
    char source[512]; /* file name, or a label such as "forksafe-subscribe" */
    int line;         /* 1-based; 0 when there is no line */
    char text[512];
} forksafe__error;

/* Records an error if none is recorded yet.  ERR may be NULL. */
void forksafe__error_set(forksafe__error *err, const char *source, int line, const char *fmt, ...)
    FORKSAFE__PRINTF(4, 5);

/* Formats "SOURCE:LINE: TEXT" (or "SOURCE: TEXT" without a line) into BUF. */
void forksafe__error_format(const forksafe__error *err, char *buf, size_t size);

/* -------------------------------------------------------------- allocation */

/* Every allocation of lib/ (and of jansson, see forksafe__alloc_install_json)
 * goes through these so that a test can make the Nth allocation fail. */
void *forksafe__malloc(size_t size);
void *forksafe__calloc(size_t count, size_t size);
void *forksafe__realloc(void *ptr, size_t size);
char *forksafe__strdup(const char *s);
char *forksafe__strndup(const char *s, size_t n);
void forksafe__free(void *ptr);

/* Test hook: after N more successful allocations every allocation fails;
 * N < 0 turns failure injection off (the default). */
void forksafe__alloc_fail_after(long n);

/* Test hook: how many allocations were attempted since the process started. */
unsigned long forksafe__alloc_attempts(void);

/* Routes jansson's allocations through forksafe__malloc/free. */
void forksafe__alloc_install_json(void);

/* ------------------------------------------------------------- string map */

/* A hash index over an array of structs whose first member is the `char *`
 * key (forksafe__entry, forksafe__ini_section): a settings file may hold
 * 10,000 keys, where linear lookups turn quadratic.  The index holds
 * positions, not pointers, so the caller passes the array (which may have
 * moved) on every call.  Zero-initialise before use. */
typedef struct forksafe__index {
    size_t *slots; /* position + 1; 0 = empty */
    size_t capacity;
    size_t count;
} forksafe__index;

/* Indexes the item already stored at POSITION of ITEMS.  Returns 0 or
 * FORKSAFE__ENOMEM; on failure the index is unchanged. */
int forksafe__index_add(forksafe__index *index, const void *items, size_t stride, size_t position);

/* Indexes the first COUNT items.  Returns 0 or FORKSAFE__ENOMEM. */
int forksafe__index_build(forksafe__index *index, const void *items, size_t stride, size_t count);

/* Returns the position of KEY in ITEMS, or -1. */
long forksafe__index_find(const forksafe__index *index, const void *items, size_t stride,
                          const char *key);

/* The same for the LENGTH bytes at KEY, which need not be terminated. */
long forksafe__index_find_bytes(const forksafe__index *index, const void *items, size_t stride,
                                const char *key, size_t length);

void forksafe__index_free(forksafe__index *index);

/* An ordered map of strings, as a Python dict: insertion order is kept, a
 * put on an existing key replaces the value in place, lookups go through
 * the map's own index.  Zero-initialise before use; every change goes
 * through the calls below, which keep the index in step. */
typedef struct forksafe__entry {
    char *key;
    char *value;
    int line; /* where it was defined, 0 if not from a file */
} forksafe__entry;

typedef struct forksafe__map {
    forksafe__entry *entries;
    size_t count;
    size_t capacity;
    forksafe__index index; /* over entries */
} forksafe__map;

/* Sets KEY to VALUE (both copied).  Returns 0 or FORKSAFE__ENOMEM; on failure
 * the map is unchanged. */
int forksafe__map_put(forksafe__map *map, const char *key, const char *value, int line);

/* The same, taking KEY and VALUE (new strings; NULL counts as ENOMEM): both
 * are the map's, or freed, when it returns. */
int forksafe__map_put_new(forksafe__map *map, char *key, char *value, int line);

/* dict.update(): every entry of FROM put into MAP, in FROM's order.
 * Returns 0 or FORKSAFE__ENOMEM (MAP then holds part of FROM). */
int forksafe__map_update(forksafe__map *map, const forksafe__map *from);

/* Returns the entry for KEY, or NULL. Borrowed. */
const forksafe__entry *forksafe__map_find(const forksafe__map *map, const char *key);

/* The same for the LENGTH bytes at KEY, which need not be terminated. */
const forksafe__entry *forksafe__map_find_bytes(const forksafe__map *map, const char *key,
                                                size_t length);

/* Returns the value for KEY, or NULL. Borrowed. */
const char *forksafe__map_get(const forksafe__map *map, const char *key);

/* Removes KEY if present, keeping the order of the rest.  Never fails. */
void forksafe__map_remove(forksafe__map *map, const char *key);

/* Frees everything the map owns and leaves it empty and reusable. */
void forksafe__map_clear(forksafe__map *map);

/* Returns a new JSON object {key: value} in map order, or NULL on ENOMEM. */
json_t *forksafe__map_to_json(const forksafe__map *map);

/* ------------------------------------------------------------ Python text */

/* Returns the offset of the first byte of TEXT that is not valid UTF-8 (as
 * Python's strict decoder judges it), or strlen(TEXT) if all of it is.
 * Settings and handler specs must be text: they end up in JSON. */
size_t forksafe__utf8_invalid_offset(const char *text);

/* The same for the LENGTH bytes at TEXT, which may hold NUL bytes. */
size_t forksafe__utf8_invalid_offset_bytes(const char *text, size_t length);

/* Length of the character at P (before END) if Python's str.isspace() is
 * true for it, else 0. */
size_t forksafe__text_space_at(const char *p, const char *end);

/* Narrows [*START, *END) past the whitespace Python's str.strip() removes
 * (ASCII and Unicode spaces in UTF-8), as ConfigParser does to keys, values
 * and section names. */
void forksafe__text_strip(const char **start, const char **end);

/* ------------------------------------------------------------ files, paths */

/* os.path.abspath (against the current directory; no symlinks resolved).
 * Returns a new string, NULL on ENOMEM. */
char *forksafe__path_absolute(const char *path);

/* os.path.dirname.  Returns a new string, NULL on ENOMEM. */
char *forksafe__path_directory(const char *path);

/* Reads all of the settings file PATH into *TEXT (new, NUL-terminated;
 * *LENGTH bytes before the NUL), if it is a regular file: never blocking on
 * a FIFO.  Returns 0, FORKSAFE__EIO or FORKSAFE__ENOMEM, with ERR saying
 * why, with the path. */
int forksafe__read_settings_file(const char *path, char **text, size_t *length,
                                 forksafe__error *err);

/* ---------------------------------------------------------------- ini file */

/* A problem ConfigParser (and so PasteDeploy) would refuse the whole file
 * for.  The raw parser records them instead of failing, because uWSGI's own
 * sections in the same file may legitimately break ConfigParser's rules; the
 * settings layer decides which problems matter. */
typedef struct forksafe__ini_problem {
    int line;
    char *section; /* NULL: before any section header */
    char *text;
} forksafe__ini_problem;

typedef struct forksafe__ini_section {
    char *name; /* "DEFAULT" for [DEFAULT] */
    int line;
    /* Raw values, not interpolated: continuation lines joined with "\n",
     * comment lines inside a value dropped, blank lines kept and trailing
     * blank lines stripped, as ConfigParser does. */
    forksafe__map entries;
} forksafe__ini_section;

typedef struct forksafe__ini {
    char *path;
    forksafe__ini_section *sections; /* in file order; a repeated section is
                                        merged into the first and recorded as
                                        a problem */
    size_t count;
    forksafe__ini_problem *problems; /* in line order */
    size_t problem_count;
    int *comment_lines; /* every full-line comment, in line order */
    size_t comment_count;
} forksafe__ini;

/* Reads and parses PATH.  Returns 0 (problems, if any, are recorded in INI),
 * FORKSAFE__EIO if the file cannot be read (ERR says why, with the path),
 * FORKSAFE__ENOMEM.  On failure INI is left empty. */
int forksafe__ini_load(forksafe__ini *ini, const char *path, forksafe__error *err);

/* The same from memory; NAME is used as the path in messages and for here
 * and __file__. */
int forksafe__ini_parse(forksafe__ini *ini, const char *name, const char *text, size_t length,
                        forksafe__error *err);

/* The line of INI that holds line OFFSET (0-based) of the multi-line value
 * whose key is on KEY_LINE: comment lines the value skipped are counted. */
int forksafe__ini_value_line(const forksafe__ini *ini, int key_line, int offset);

/* Returns the section called NAME, or NULL. Borrowed. */
const forksafe__ini_section *forksafe__ini_find(const forksafe__ini *ini, const char *name);

/* Records in ERR the first problem of INI that lies in one of the NULL-
 * terminated SECTIONS (or, if SECTIONS is NULL, anywhere) and returns
 * FORKSAFE__ESYNTAX; returns 0 if there is none. */
int forksafe__ini_check(const forksafe__ini *ini, const char *const *sections,
                        forksafe__error *err);

void forksafe__ini_free(forksafe__ini *ini);

/* ----------------------------------------------------------- interpolation */

/* What %(name)s can name in every section of one ini file besides the
 * section's own keys: PasteDeploy's here and __file__, then [DEFAULT]'s
 * raw values.  Built once per file; the scopes below borrow it. */
typedef struct forksafe__defaults {
    const forksafe__ini *ini; /* borrowed; its path names errors */
    char *file;               /* __file__: INI's path, absolute and normalised */
    forksafe__map raw;        /* here, __file__, [DEFAULT]: not interpolated */
} forksafe__defaults;

/* Builds DEFAULTS for INI, which must outlive it.  Returns 0,
 * FORKSAFE__EINVAL (INI's path is not valid UTF-8), FORKSAFE__ENOMEM; ERR
 * says why, with the path.  On failure DEFAULTS is left empty. */
int forksafe__defaults_open(forksafe__defaults *defaults, const forksafe__ini *ini,
                            forksafe__error *err);

void forksafe__defaults_close(forksafe__defaults *defaults);

/* One section as ConfigParser.get sees it: its own keys, then the
 * defaults.  Borrows both; costs nothing to make. */
typedef struct forksafe__scope {
    const forksafe__defaults *defaults;
    const forksafe__ini_section *section; /* NULL: [DEFAULT] itself */
} forksafe__scope;

/* Returns the entry %(KEY)s names in SCOPE, or NULL. Borrowed. */
const forksafe__entry *forksafe__scope_find(const forksafe__scope *scope, const char *key);

/* ConfigParser.get(section, OPTION->key) with OPTION already looked up:
 * BasicInterpolation of %(name)s and %%, with its depth limit.  Returns 0
 * with a new string in *OUT, FORKSAFE__ESYNTAX (ERR has the file and
 * OPTION's line), or FORKSAFE__ENOMEM (ERR left to the caller). */
int forksafe__interpolate(const forksafe__scope *scope, const forksafe__entry *option, char **out,
                          forksafe__error *err);

/* Interpolates KEY of SECTION of INI (falling back to [DEFAULT], plus here
 * and __file__) in one call, building the defaults for it: to read many
 * keys, open the defaults once and use forksafe__interpolate.  LINE > 0
 * replaces the key's line in messages.  Returns a new string in *OUT, or
 * FORKSAFE__ENOTFOUND (no such section or key), or an error as
 * forksafe__defaults_open and forksafe__interpolate, always with ERR set. */
int forksafe__interpolate_key(const forksafe__ini *ini, const char *section, const char *key,
                              int line, char **out, forksafe__error *err);

/* --------------------------------------------------------------- settings */

/* What Pyramid would see as registry.settings, and PasteDeploy's global_conf. */
typedef struct forksafe__settings {
    char *path;           /* the settings file, absolute */
    char *section;        /* "app:main"; NULL for a JSON file */
    forksafe__map local;  /* PasteDeploy local_conf */
    forksafe__map global; /* [DEFAULT] + here + __file__ + set additions */
} forksafe__settings;

/* What a PasteDeploy name refers to: loadapp() or loadfilter(). */
enum forksafe__paste_object { FORKSAFE__PASTE_APP, FORKSAFE__PASTE_FILTER };

/* One settings file as PasteDeploy's ConfigLoader holds it. */
typedef struct forksafe__paste_loader {
    const forksafe__ini *ini;  /* borrowed */
    forksafe__defaults parser; /* ConfigParser's defaults: here, __file__, [DEFAULT] */
    forksafe__map defaults;    /* NicerConfigParser.defaults(): interpolated */
} forksafe__paste_loader;

/* ConfigLoader.__init__ over INI (borrowed), plus update_defaults(EXTRA,
 * overwrite=False) when EXTRA is not NULL, and the defaults interpolated
 * (problems in [DEFAULT] are errors).  Returns 0, or an error as
 * forksafe__defaults_open and forksafe__interpolate, with ERR set; on
 * failure LOADER is left empty. */
int forksafe__paste_loader_open(forksafe__paste_loader *loader, const forksafe__ini *ini,
                                const forksafe__map *extra, forksafe__error *err);

/* Frees what LOADER owns; an empty LOADER is fine. */
void forksafe__paste_loader_free(forksafe__paste_loader *loader);

/* ConfigLoader.find_config_section: the one section NAME refers to as an
 * app ([app:NAME], or application:, composite:, pipeline:, filter-app:) or
 * a filter ([filter:NAME]), TYPE an enum forksafe__paste_object.  LINE is
 * for the message.  Returns 0 with *SECTION borrowed from INI,
 * FORKSAFE__ENOTFOUND, or FORKSAFE__ESYNTAX (two sections match). */
int forksafe__paste_find_section(const forksafe__ini *ini, int type, const char *name, int line,
                                 const forksafe__ini_section **section, forksafe__error *err);

/* Computes the settings of SECTION of an already parsed INI exactly as
 * paste.deploy.appconfig('config:PATH', name=...).local_conf would: problems
 * in [DEFAULT] and SECTION are errors, interpolation of %(here)s,
 * %(__file__)s, %(key)s and %% with ConfigParser's depth limit, `set` and
 * `get` keys, `use` removed.  SECTION is a full section name ("app:main").
 * Returns 0, FORKSAFE__ENOTFOUND (no such section), FORKSAFE__ESYNTAX
 * (problems, interpolation errors; ERR has file and line), FORKSAFE__ENOMEM.
 * On failure SETTINGS is left empty. */
int forksafe__settings_from_ini(forksafe__settings *settings, const forksafe__ini *ini,
                                const char *section, forksafe__error *err);

/* Fills SETTINGS from TEXT (LENGTH bytes), the contents of the JSON file
 * PATH: one flat object of strings (numbers and booleans are converted to
 * their JSON text, reals as Python's repr() writes them, null to "null").
 * Returns 0, FORKSAFE__ESYNTAX or FORKSAFE__ENOMEM, with ERR naming PATH;
 * on failure SETTINGS may hold part of the file (forksafe__settings_free). */
int forksafe__settings_from_json(forksafe__settings *settings, const char *path, const char *text,
                                 size_t length, forksafe__error *err);

/* The length of the PATH of SPEC = PATH[#NAME]: like PasteDeploy, the first
 * '#' starts the name. */
size_t forksafe__settings_path_length(const char *spec);

/* Loads SPEC = PATH[#NAME].  NAME "main" means section "app:main" as in
 * PasteDeploy; a NAME containing ':' is a section name as written.  Default
 * "app:main".  A PATH ending in ".json" is read as a flat JSON object (see
 * forksafe__settings_from_json).  Returns as forksafe__settings_from_ini,
 * plus FORKSAFE__EIO, and FORKSAFE__EINVAL for a path that is not valid
 * UTF-8. */
int forksafe__settings_load(forksafe__settings *settings, const char *spec, forksafe__error *err);

/* The same, and hands on the file it read so that nothing opens it again
 * (its [forksafe] section, PasteDeploy's whole-file check): INI, if not
 * NULL, receives the file parsed as an ini file, whatever its name - a JSON
 * file parsed so has no sections, only the problems PasteDeploy would find
 * in it.  SETTINGS->section is NULL for a JSON file.  On success the caller
 * frees INI with forksafe__ini_free; on failure INI is left empty. */
int forksafe__settings_load_file(forksafe__settings *settings, const char *spec, forksafe__ini *ini,
                                 forksafe__error *err);

/* Applies an override "KEY=VALUE" to the local settings.  SOURCE and LINE
 * are for the error message.  Returns 0, FORKSAFE__EINVAL (no '=' or empty
 * key), FORKSAFE__ENOMEM. */
int forksafe__settings_override(forksafe__settings *settings, const char *assignment,
                                const char *source, int line, forksafe__error *err);

void forksafe__settings_free(forksafe__settings *settings);

/* --------------------------------------------------------------- redaction */

/* True if KEY looks like it holds a secret (password, secret, token, key,
 * credential; case-insensitive). */
int forksafe__is_secret_key(const char *key);

/* Returns a new copy of VALUE fit to print: the whole value replaced by
 * "***" if KEY is secret-looking, otherwise only URL userinfo passwords
 * (scheme://user:PASSWORD@host) replaced.  NULL on ENOMEM. */
char *forksafe__redact(const char *key, const char *value);

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
} forksafe__occurrence;

/* -------------------------------------------------------------- backends */
typedef struct forksafe__backend forksafe__backend;

/* How one handler kind ("exec", "dl", "symbol", "hook", "python") is
 * resolved at start-up and invoked per event.  lib/ provides exec, dl and
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
    int (*invoke)(forksafe__context *ctx, void *data, void *handle, const forksafe_event *ev,
                  char *why, size_t why_size);
    /* Frees HANDLE (may be NULL). */
    void (*release)(void *data, void *handle);
    void *data;
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

/* Counters of one event, summed over every process of the instance. */
typedef struct forksafe__event_stats {
    int64_t occurred;         /* occurrences, in any process, handled or not;
                                 "fired" in the stats JSON and uWSGI's metrics */
    int64_t handlers_run;     /* handler runs (a listener call counts as one) */
    int64_t failed;           /* handler runs that failed */
    int64_t last_duration_us; /* the most recent handler run */
    int64_t max_duration_us;  /* the slowest handler run */
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
typedef struct forksafe__stats {
    forksafe__event_stats events[FORKSAFE_EVENT_COUNT];
    uint64_t next_sequence;
    uint32_t history_capacity;
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
     * forksafe__stats_setup (or by seal with the default size). */
    forksafe__stats *stats;
    size_t stats_size;

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

/* Counts one occurrence of TYPE. */
void forksafe__stats_occurred(forksafe__context *ctx, forksafe_event_type type);

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

/* --------------------------------------------------------- python bridge */

/* Creates the `_forksafe` module in sys.modules (listeners, delivered,
 * version, container, recorded()) for pyramid_forksafe, and makes its
 * listeners CTX's listeners (lib/python_bridge.c), so that every event
 * dispatched in CTX runs them.  A no-op without Python.  Returns 0 or
 * FORKSAFE__ENOMEM. */
int forksafe__python_bridge_init(forksafe__context *ctx);

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
