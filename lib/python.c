/*
 * python.c - `python:MODULE:CALLABLE` handlers, and the `_forksafe` bridge
 * module that lets pyramid_forksafe receive every event.
 *
 * forksafe is not linked against libpython: the host (uWSGI's python3
 * plugin) loads libpython with RTLD_GLOBAL, so the C-API is looked up at run
 * time with dlsym(RTLD_DEFAULT).  Only stable-ABI calls are used, and every
 * entry into Python takes the GIL with PyGILState_Ensure, which works
 * whether this thread already holds it (threads off) or not (threads on,
 * after the host released it).
 *
 * The callable gets one argument: the payload as a dict equal to json.loads
 * of the payload JSON, so every handler kind sees the same data.  It is
 * written directly as Python objects by the payload writer of lib/event.c:
 * no JSON is built, printed or parsed, and json (with re, enum ...) is never
 * imported, which every worker would otherwise pay for in memory, copied
 * pages and time.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forksafe_internal.h"

typedef struct _object PyObject;

/* PyMethodDef, whose layout is part of the stable ABI. */
struct python_method {
    const char *name;
    PyObject *(*function)(PyObject *self, PyObject *argument);
    int flags;
    const char *doc;
};
#define PYTHON_METH_O 0x0008

/* The C-API calls used, resolved once. */
static struct python_api {
    int resolved;
    int (*Py_IsInitialized)(void);
    int (*PyGILState_Ensure)(void);
    void (*PyGILState_Release)(int);
    PyObject *(*PyImport_ImportModule)(const char *);
    PyObject *(*PyImport_AddModule)(const char *);
    PyObject *(*PyObject_GetAttrString)(PyObject *, const char *);
    int (*PyObject_SetAttrString)(PyObject *, const char *, PyObject *);
    int (*PyObject_HasAttrString)(PyObject *, const char *);
    int (*PyCallable_Check)(PyObject *);
    long (*PyObject_Size)(PyObject *);
    PyObject *(*PyObject_CallFunctionObjArgs)(PyObject *, ...);
    PyObject *(*PyUnicode_FromString)(const char *);
    PyObject *(*PyUnicode_AsUTF8String)(PyObject *);
    char *(*PyBytes_AsString)(PyObject *);
    PyObject *(*PyErr_Occurred)(void);
    void (*PyErr_Fetch)(PyObject **, PyObject **, PyObject **);
    void (*PyErr_NormalizeException)(PyObject **, PyObject **, PyObject **);
    void (*PyErr_Clear)(void);
    void (*Py_DecRef)(PyObject *);
    PyObject *(*PyList_New)(long);
    PyObject *(*PyDict_New)(void);
    int (*PyDict_SetItemString)(PyObject *, const char *, PyObject *);
    void (*PyDict_Clear)(PyObject *);
    PyObject *(*PySequence_Tuple)(PyObject *);
    long (*PyTuple_Size)(PyObject *);
    PyObject *(*PyTuple_GetItem)(PyObject *, long);
    int (*PyDict_SetItem)(PyObject *, PyObject *, PyObject *);
    PyObject *(*PyDict_GetItemString)(PyObject *, const char *);
    int (*PyList_SetItem)(PyObject *, long, PyObject *);
    PyObject *(*PyUnicode_FromStringAndSize)(const char *, long);
    PyObject *(*PyLong_FromLongLong)(long long);
    PyObject *(*PyFloat_FromDouble)(double);
    PyObject *(*PyBool_FromLong)(long);
    void (*Py_IncRef)(PyObject *);
    PyObject *(*PyCFunction_NewEx)(struct python_method *, PyObject *, PyObject *);
    PyObject *(*PyErr_NoMemory)(void);
    PyObject *none;
} py;

#define PY_SYMBOLS(X)               \
    X(Py_IsInitialized)             \
    X(PyGILState_Ensure)            \
    X(PyGILState_Release)           \
    X(PyImport_ImportModule)        \
    X(PyImport_AddModule)           \
    X(PyObject_GetAttrString)       \
    X(PyObject_SetAttrString)       \
    X(PyObject_HasAttrString)       \
    X(PyCallable_Check)             \
    X(PyObject_Size)                \
    X(PyObject_CallFunctionObjArgs) \
    X(PyUnicode_FromString)         \
    X(PyUnicode_AsUTF8String)       \
    X(PyBytes_AsString)             \
    X(PyErr_Occurred)               \
    X(PyErr_Fetch)                  \
    X(PyErr_NormalizeException)     \
    X(PyErr_Clear)                  \
    X(Py_DecRef)                    \
    X(PyList_New)                   \
    X(PyDict_New)                   \
    X(PyDict_SetItemString)         \
    X(PyDict_Clear)                 \
    X(PySequence_Tuple)             \
    X(PyTuple_Size)                 \
    X(PyTuple_GetItem)              \
    X(PyDict_SetItem)               \
    X(PyDict_GetItemString)         \
    X(PyList_SetItem)               \
    X(PyUnicode_FromStringAndSize)  \
    X(PyLong_FromLongLong)          \
    X(PyFloat_FromDouble)           \
    X(PyBool_FromLong)              \
    X(Py_IncRef)                    \
    X(PyCFunction_NewEx)            \
    X(PyErr_NoMemory)

/* Every python: handler: its spec split, and the callable once imported. */
typedef struct python_handle {
    char *module;
    char *attribute; /* may be dotted: "Class.method" */
    PyObject *callable;
} python_handle;

/* Set by the host: with lazy-apps, importing a handler's module in the
 * master would load app code there, so the master only checks the module
 * can be found and each process imports it on first use. */
static int lazy_imports;

/* Imported once per process and kept: the traceback module's
 * format_exception, the bridge module. */
static PyObject *format_exception;
static PyObject *bridge;

/* This process's post-fork when no listener heard it, kept as the bare
 * occurrence: most workers never need its payload.  An app loaded after
 * the fork (lazy-apps) gets it from _forksafe.recorded("post-fork"). */
static struct {
    int kept;
    const forksafe__context *ctx;
    forksafe__occurrence occ;
    double time;
} unheard_post_fork;

static void keep_unheard_post_fork(const forksafe__context *ctx, const forksafe__occurrence *occ)
{
    unheard_post_fork.kept = 1;
    unheard_post_fork.ctx = ctx;
    unheard_post_fork.occ = *occ;
    /* A post-fork's payload has no child and no reason. */
    unheard_post_fork.occ.child = NULL;
    unheard_post_fork.occ.reason = NULL;
    unheard_post_fork.occ.child_cause = NULL;
    unheard_post_fork.time = forksafe__realtime_seconds();
}

/* _forksafe.listeners, which pyramid_forksafe changes in place, and whether
 * _forksafe.delivered may hold anything.  With no listener and nothing to
 * forget, an event does not enter Python at all: taking the GIL and looking
 * up attributes writes to the interpreter's pages, and in a master just
 * after a fork every page written is a page copied. */
static PyObject *bridge_listeners;
static int delivered_dirty;

/* PyVarObject, whose layout is part of the stable ABI: a list's length
 * read without calling into Python. */
struct python_var_object {
    long refcnt;
    void *type;
    long size;
};

static long listener_count(void)
{
    return ((const struct python_var_object *)(const void *)bridge_listeners)->size;
}

static void make_payload_keys(void);

/* -------------------------------------------------------------- the API */

static int resolve_api(void)
{
    void *symbol;

    if (py.resolved)
        return py.resolved > 0 ? 0 : -1;
    py.resolved = -1;
#define PY_RESOLVE(name)                 \
    symbol = dlsym(RTLD_DEFAULT, #name); \
    if (!symbol)                         \
        return -1;                       \
    memcpy(&py.name, &symbol, sizeof(symbol));
    PY_SYMBOLS(PY_RESOLVE)
#undef PY_RESOLVE
    py.none = dlsym(RTLD_DEFAULT, "_Py_NoneStruct");
    if (!py.none)
        return -1;
    py.resolved = 1;
    return 0;
}

int forksafe__python_available(void)
{
    return resolve_api() == 0 && py.Py_IsInitialized();
}

void forksafe__python_set_lazy(int lazy)
{
    lazy_imports = lazy;
}

static void decref(PyObject *object)
{
    if (object)
        py.Py_DecRef(object);
}

/* Returns a new malloc'ed UTF-8 copy of str(OBJECT) or of a Python str. */
static char *utf8_copy(PyObject *text)
{
    PyObject *bytes;
    char *copy = NULL;

    if (!text)
        return NULL;
    bytes = py.PyUnicode_AsUTF8String(text);
    if (bytes) {
        const char *data = py.PyBytes_AsString(bytes);
        if (data)
            copy = forksafe__strdup(data);
        decref(bytes);
    }
    if (!copy)
        py.PyErr_Clear();
    return copy;
}

/* Takes the pending exception; returns its formatted traceback (malloc'ed,
 * may be NULL) and stores its last line ("ValueError: boom") in WHY. */
static char *take_exception(char *why, size_t why_size)
{
    PyObject *type = NULL, *value = NULL, *traceback = NULL;
    PyObject *lines = NULL, *empty = NULL, *joined = NULL;
    char *text = NULL;

    py.PyErr_Fetch(&type, &value, &traceback);
    if (!type) {
        snprintf(why, why_size, "unknown Python error");
        return NULL;
    }
    py.PyErr_NormalizeException(&type, &value, &traceback);
    if (!format_exception) {
        PyObject *module = py.PyImport_ImportModule("traceback");
        if (module) {
            format_exception = py.PyObject_GetAttrString(module, "format_exception");
            decref(module);
        }
    }
    if (format_exception) {
        lines = py.PyObject_CallFunctionObjArgs(format_exception, type, value ? value : py.none,
                                                traceback ? traceback : py.none, NULL);
        empty = py.PyUnicode_FromString("");
        if (lines && empty) {
            PyObject *join = py.PyObject_GetAttrString(empty, "join");
            if (join) {
                joined = py.PyObject_CallFunctionObjArgs(join, lines, NULL);
                decref(join);
            }
        }
        text = utf8_copy(joined);
    }
    py.PyErr_Clear();
    if (text) {
        /* The last non-empty line is the exception itself. */
        size_t length = strlen(text);
        char *end, *start;
        while (length > 0 && (text[length - 1] == '\n' || text[length - 1] == ' '))
            text[--length] = '\0';
        end = text + length;
        start = end;
        while (start > text && start[-1] != '\n')
            start--;
        snprintf(why, why_size, "%s", start);
    }
    else {
        snprintf(why, why_size,
                 "a Python exception was raised (its traceback could not be formatted)");
    }
    decref(joined);
    decref(empty);
    decref(lines);
    decref(type);
    decref(value);
    decref(traceback);
    return text;
}

/* ----------------------------------------------------------- importing */

/* Imports MODULE and walks ATTRIBUTE ("a.b.c").  Returns a new reference or
 * NULL with the exception pending. */
static PyObject *import_callable(const python_handle *handle)
{
    PyObject *object = py.PyImport_ImportModule(handle->module);
    char *path, *part, *saveptr = NULL;

    if (!object)
        return NULL;
    path = forksafe__strdup(handle->attribute);
    if (!path) {
        decref(object);
        return NULL;
    }
    for (part = strtok_r(path, ".", &saveptr); part && object;
         part = strtok_r(NULL, ".", &saveptr)) {
        PyObject *next = py.PyObject_GetAttrString(object, part);
        decref(object);
        object = next;
    }
    forksafe__free(path);
    return object;
}

/* With lazy imports the master checks only that the top-level package can
 * be found: find_spec of a dotted name would import its parents. */
static int module_findable(const char *module, char *why, size_t why_size)
{
    PyObject *util = py.PyImport_ImportModule("importlib.util");
    PyObject *find_spec = util ? py.PyObject_GetAttrString(util, "find_spec") : NULL;
    char top[256];
    PyObject *name, *spec = NULL;
    int found = 0;

    snprintf(top, sizeof(top), "%.*s", (int)strcspn(module, "."), module);
    name = py.PyUnicode_FromString(top);
    if (find_spec && name)
        spec = py.PyObject_CallFunctionObjArgs(find_spec, name, NULL);
    if (spec)
        found = spec != py.none;
    else
        py.PyErr_Clear();
    if (!found)
        snprintf(why, why_size, "no Python module named '%s' on the path", top);
    decref(spec);
    decref(name);
    decref(find_spec);
    decref(util);
    return found;
}

static int python_resolve(forksafe__context *ctx, void *data, const char *spec, void **handle,
                          forksafe__error *err)
{
    const char *colon = strrchr(spec, ':');
    python_handle *python;
    int gil, rc = 0;
    char why[512] = "";

    (void)ctx;
    (void)data;
    if (!colon || colon == spec || !colon[1]) {
        forksafe__error_set(err, NULL, 0,
                            "python: handlers are written python:MODULE:CALLABLE, not 'python:%s'",
                            spec);
        return FORKSAFE__ESYNTAX;
    }
    if (!forksafe__python_available()) {
        forksafe__error_set(err, NULL, 0,
                            "python: handlers need Python in the process: load uWSGI's python "
                            "plugin (plugins = python3,forksafe)");
        return FORKSAFE__ENOTFOUND;
    }
    python = forksafe__calloc(1, sizeof(*python));
    if (!python)
        return FORKSAFE__ENOMEM;
    python->module = forksafe__strndup(spec, (size_t)(colon - spec));
    python->attribute = forksafe__strdup(colon + 1);
    if (!python->module || !python->attribute) {
        rc = FORKSAFE__ENOMEM;
        goto out;
    }
    gil = py.PyGILState_Ensure();
    make_payload_keys();
    if (lazy_imports) {
        if (!module_findable(python->module, why, sizeof(why)))
            rc = FORKSAFE__ENOTFOUND;
    }
    else {
        python->callable = import_callable(python);
        if (!python->callable) {
            char *traceback = take_exception(why, sizeof(why));
            forksafe__free(traceback);
            rc = FORKSAFE__ENOTFOUND;
        }
        else if (!py.PyCallable_Check(python->callable)) {
            snprintf(why, sizeof(why), "%s.%s is not callable", python->module, python->attribute);
            rc = FORKSAFE__EINVAL;
        }
    }
    py.PyGILState_Release(gil);
    if (rc != 0)
        forksafe__error_set(err, NULL, 0, "cannot load python:%s: %s", spec, why);
out:
    if (rc != 0) {
        if (python->callable) {
            gil = py.PyGILState_Ensure();
            decref(python->callable);
            py.PyGILState_Release(gil);
        }
        forksafe__free(python->module);
        forksafe__free(python->attribute);
        forksafe__free(python);
        return rc;
    }
    *handle = python;
    return 0;
}

/* ------------------------------------------------------------- calling */

/* A new Python object equal to json.loads of VALUE's JSON text, or NULL
 * with an exception.  jansson keeps object keys in insertion order, as a
 * dict does, and its strings are valid UTF-8. */
static PyObject *python_value(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT: {
        PyObject *dict = py.PyDict_New();
        const char *key;
        json_t *member;
        if (!dict)
            return NULL;
        json_object_foreach((json_t *)value, key, member)
        {
            PyObject *name = py.PyUnicode_FromString(key);
            PyObject *item = name ? python_value(member) : NULL;
            int rc = item ? py.PyDict_SetItem(dict, name, item) : -1;
            decref(item);
            decref(name);
            if (rc != 0) {
                decref(dict);
                return NULL;
            }
        }
        return dict;
    }
    case JSON_ARRAY: {
        size_t size = json_array_size(value), i;
        PyObject *list = py.PyList_New((long)size);
        for (i = 0; list && i < size; i++) {
            PyObject *item = python_value(json_array_get(value, i));
            /* PyList_SetItem steals ITEM. */
            if (!item || py.PyList_SetItem(list, (long)i, item) != 0) {
                decref(list);
                return NULL;
            }
        }
        return list;
    }
    case JSON_STRING:
        return py.PyUnicode_FromStringAndSize(json_string_value(value),
                                              (long)json_string_length(value));
    case JSON_INTEGER:
        return py.PyLong_FromLongLong(json_integer_value(value));
    case JSON_REAL:
        return py.PyFloat_FromDouble(json_real_value(value));
    case JSON_TRUE:
    case JSON_FALSE:
        return py.PyBool_FromLong(json_is_true(value));
    case JSON_NULL:
    default:
        py.Py_IncRef(py.none);
        return py.none;
    }
}

/* The Python writer of the payload (lib/event.c says what it holds): dicts,
 * str, int and float made directly, never through jansson.  In a worker
 * just forked, each small malloc jansson makes reuses a chunk the master
 * freed, on a page shared with it, and copies that page: some twenty page
 * faults for one payload, most of a python: handler's cost. */

static void *py_writer_object(const forksafe__payload_writer *w)
{
    (void)w;
    return py.PyDict_New();
}

/* The payload's own keys as str objects, made once in the master and kept:
 * PyDict_SetItemString would make and intern a new str per key per
 * payload, which dies with the payload and leaves a dummy slot in the
 * interpreter's interned-string table; enough of those and a worker has to
 * copy the whole table. */
static const char *const payload_key_names[] = {
    "event", "container",  "process", "kind",      "id",       "pid",
    "ppid",  "generation", "respawn", "time",      "settings", "global_settings",
    "child", "status",     "signal",  "exit_code", "cause",    "reason",
    NULL};
static PyObject *payload_keys[sizeof(payload_key_names) / sizeof(payload_key_names[0])];

static void make_payload_keys(void)
{
    size_t i;

    for (i = 0; payload_key_names[i]; i++) {
        if (!payload_keys[i])
            payload_keys[i] = py.PyUnicode_FromString(payload_key_names[i]);
        if (!payload_keys[i])
            py.PyErr_Clear();
    }
}

static int py_writer_set(const forksafe__payload_writer *w, void *object, const char *key,
                         void *value)
{
    PyObject *name = NULL;
    size_t i;
    int rc;

    (void)w;
    if (!value)
        return -1;
    for (i = 0; payload_key_names[i]; i++) {
        if (strcmp(payload_key_names[i], key) == 0) {
            name = payload_keys[i];
            break;
        }
    }
    if (name) {
        rc = py.PyDict_SetItem(object, name, value);
    }
    else {
        rc = py.PyDict_SetItemString(object, key, value);
    }
    decref(value);
    return rc;
}

static void *py_writer_string(const forksafe__payload_writer *w, const char *text)
{
    (void)w;
    return py.PyUnicode_FromString(text);
}

static void *py_writer_integer(const forksafe__payload_writer *w, long long value)
{
    (void)w;
    return py.PyLong_FromLongLong(value);
}

static void *py_writer_real(const forksafe__payload_writer *w, double value)
{
    (void)w;
    return py.PyFloat_FromDouble(value);
}

static void *py_writer_shared(const forksafe__payload_writer *w, const json_t *value)
{
    (void)w;
    return value ? python_value(value) : py.PyDict_New();
}

static void py_writer_release(const forksafe__payload_writer *w, void *object)
{
    (void)w;
    decref(object);
}

static const forksafe__payload_writer python_writer = {
    py_writer_object, py_writer_set,    py_writer_string, py_writer_integer,
    py_writer_real,   py_writer_shared, py_writer_release};

/* A new dict of OCC's payload at TIME (0: now), or NULL with an exception. */
static PyObject *payload_object(const forksafe__context *ctx, const forksafe__occurrence *occ,
                                double time)
{
    PyObject *payload = forksafe__payload_write(&python_writer, ctx, occ,
                                                time > 0 ? time : forksafe__realtime_seconds());

    if (!payload && !py.PyErr_Occurred())
        py.PyErr_NoMemory();
    return payload;
}

/* Returns a new dict equal to EV's payload, or NULL with an exception.  A
 * JSON payload an earlier handler of this dispatch made is converted. */
static PyObject *payload_dict(const forksafe_event *ev)
{
    if (ev->payload)
        return python_value(ev->payload);
    return payload_object(ev->ctx, ev->occ, ev->time);
}

/* Calls CALLABLE(payload) with the GIL held; on an exception logs the whole
 * traceback as one record naming NAME and fills WHY. */
static int call_with_payload(forksafe__context *ctx, PyObject *callable, PyObject *payload,
                             const char *name, const forksafe_event *ev, char *why, size_t why_size)
{
    PyObject *result = py.PyObject_CallFunctionObjArgs(callable, payload, NULL);
    char *traceback;

    if (result) {
        decref(result);
        return 0;
    }
    traceback = take_exception(why, why_size);
    forksafe__log(ctx, FORKSAFE__LOG_ERROR, "handler '%s' raised on %s in %s %d (pid %d):\n%s",
                  name, forksafe_event_name(ev), forksafe_event_process_kind(ev),
                  forksafe_event_process_id(ev), (int)forksafe_event_pid(ev),
                  traceback ? traceback : why);
    forksafe__free(traceback);
    return FORKSAFE__EHANDLER;
}

static int python_invoke(forksafe__context *ctx, void *data, void *handle, const forksafe_event *ev,
                         char *why, size_t why_size)
{
    python_handle *python = handle;
    PyObject *payload;
    int gil, rc;

    (void)data;
    if (!forksafe__python_available()) {
        snprintf(why, why_size, "Python is not initialised in this process");
        return FORKSAFE__EHANDLER;
    }
    gil = py.PyGILState_Ensure();
    if (!python->callable) {
        python->callable = import_callable(python);
        if (python->callable && !py.PyCallable_Check(python->callable)) {
            decref(python->callable);
            python->callable = NULL;
            snprintf(why, why_size, "%s.%s is not callable", python->module, python->attribute);
            py.PyGILState_Release(gil);
            return FORKSAFE__EINVAL;
        }
    }
    if (!python->callable) {
        char *traceback = take_exception(why, why_size);
        forksafe__log(ctx, FORKSAFE__LOG_ERROR, "cannot import handler '%s':\n%s",
                      ev->subscription->name, traceback ? traceback : why);
        forksafe__free(traceback);
        py.PyGILState_Release(gil);
        return FORKSAFE__ENOTFOUND;
    }
    payload = payload_dict(ev);
    if (!payload) {
        char *traceback = take_exception(why, why_size);
        forksafe__free(traceback);
        py.PyGILState_Release(gil);
        return FORKSAFE__EHANDLER;
    }
    rc = call_with_payload(ctx, python->callable, payload, ev->subscription->name, ev, why,
                           why_size);
    decref(payload);
    py.PyGILState_Release(gil);
    return rc;
}

static void python_release(void *data, void *handle)
{
    python_handle *python = handle;

    (void)data;
    if (!python)
        return;
    if (python->callable && forksafe__python_available()) {
        int gil = py.PyGILState_Ensure();
        decref(python->callable);
        py.PyGILState_Release(gil);
    }
    forksafe__free(python->module);
    forksafe__free(python->attribute);
    forksafe__free(python);
}

static forksafe__backend python_backend = {
    .kind = "python",
    .resolve = python_resolve,
    .invoke = python_invoke,
    .release = python_release,
};

forksafe__backend *forksafe__python_backend(void)
{
    return &python_backend;
}

/* ------------------------------------------------------------- bridge */

/* _forksafe.recorded(event): the payload of EVENT as last delivered in this
 * process (or recorded for later: post-fork), or None. */
static PyObject *bridge_recorded(PyObject *self, PyObject *argument)
{
    PyObject *delivered, *payload;
    char *event;

    (void)self;
    event = utf8_copy(argument);
    if (!event)
        return py.PyErr_Occurred() ? NULL : py.PyErr_NoMemory();
    delivered = py.PyObject_GetAttrString(bridge, "delivered");
    if (!delivered) {
        forksafe__free(event);
        return NULL;
    }
    if (unheard_post_fork.kept && strcmp(event, "post-fork") == 0) {
        payload =
            payload_object(unheard_post_fork.ctx, &unheard_post_fork.occ, unheard_post_fork.time);
        if (!payload || py.PyDict_SetItemString(delivered, event, payload) != 0) {
            decref(payload);
            decref(delivered);
            forksafe__free(event);
            return NULL;
        }
        decref(payload);
        delivered_dirty = 1;
        unheard_post_fork.kept = 0;
    }
    payload = py.PyDict_GetItemString(delivered, event); /* borrowed */
    if (!payload)
        payload = py.none;
    py.Py_IncRef(payload);
    decref(delivered);
    forksafe__free(event);
    return payload;
}

static struct python_method bridge_recorded_method = {
    "recorded", bridge_recorded, PYTHON_METH_O,
    "recorded(event) -> the payload of EVENT last delivered in this process, or None"};

int forksafe__python_bridge_init(const char *container)
{
    PyObject *module, *value;
    int gil, created, rc = 0;

    if (!forksafe__python_available())
        return 0;
    gil = py.PyGILState_Ensure();
    /* Borrowed; creates the module in sys.modules if absent. */
    module = py.PyImport_AddModule("_forksafe");
    if (!module) {
        py.PyErr_Clear();
        rc = FORKSAFE__ENOMEM;
        goto out;
    }
    created = !py.PyObject_HasAttrString(module, "listeners");
    if (created) {
        static const struct {
            const char *name;
            int kind; /* 0 list, 1 dict, 2 str */
            const char *text;
        } attributes[] = {{"listeners", 0, NULL},
                          {"delivered", 1, NULL},
                          {"version", 2, FORKSAFE_VERSION},
                          {"container", 2, NULL}};
        size_t i;
        for (i = 0; i < sizeof(attributes) / sizeof(attributes[0]) && rc == 0; i++) {
            const char *text = attributes[i].text ? attributes[i].text : container;
            value = attributes[i].kind == 0   ? py.PyList_New(0)
                    : attributes[i].kind == 1 ? py.PyDict_New()
                                              : py.PyUnicode_FromString(text);
            if (!value || py.PyObject_SetAttrString(module, attributes[i].name, value) != 0) {
                py.PyErr_Clear();
                rc = FORKSAFE__ENOMEM;
            }
            decref(value);
        }
        if (rc == 0) {
            value = py.PyCFunction_NewEx(&bridge_recorded_method, NULL, NULL);
            if (!value || py.PyObject_SetAttrString(module, "recorded", value) != 0) {
                py.PyErr_Clear();
                rc = FORKSAFE__ENOMEM;
            }
            decref(value);
        }
    }
    if (rc == 0) {
        void *list_type = dlsym(RTLD_DEFAULT, "PyList_Type");
        make_payload_keys();
        PyObject *listeners = py.PyObject_GetAttrString(module, "listeners");
        bridge = module;
        /* Anything but a list (set by someone else) is asked in Python. */
        if (listeners && list_type &&
            ((const struct python_var_object *)(const void *)listeners)->type == list_type)
            bridge_listeners = listeners;
        else
            decref(listeners);
        py.PyErr_Clear();
        /* A module made before us may have a record already. */
        delivered_dirty = !created;
    }
out:
    py.PyGILState_Release(gil);
    return rc;
}

int forksafe__python_bridge_deliver(forksafe__context *ctx, const forksafe__occurrence *occ)
{
    forksafe_event ev;
    PyObject *listeners = NULL, *delivered = NULL, *payload = NULL, *snapshot = NULL;
    forksafe__subscription bridge_subscription;
    long i, count;
    int gil, failed = 0;

    if (!bridge || !forksafe__python_available())
        return 0;
    if (bridge_listeners && listener_count() == 0 && !delivered_dirty) {
        if (occ->type == FORKSAFE_POST_FORK)
            keep_unheard_post_fork(ctx, occ);
        return 0;
    }
    memset(&ev, 0, sizeof(ev));
    memset(&bridge_subscription, 0, sizeof(bridge_subscription));
    bridge_subscription.name = "pyramid_forksafe";
    bridge_subscription.spec = "python:_forksafe.listeners";
    ev.ctx = ctx;
    ev.occ = occ;
    ev.subscription = &bridge_subscription;
    gil = py.PyGILState_Ensure();
    listeners = py.PyObject_GetAttrString(bridge, "listeners");
    if (occ->type == FORKSAFE_POST_FORK) {
        /* A child inherits the master's record: it starts afresh at its fork. */
        unheard_post_fork.kept = 0;
        delivered = py.PyObject_GetAttrString(bridge, "delivered");
        if (delivered) {
            py.PyDict_Clear(delivered);
            delivered_dirty = 0;
        }
    }
    /* Nobody listens (no app included pyramid_forksafe yet): only a
     * post-fork is worth recording, for an app loaded later (lazy-apps) to
     * replay, and only as JSON until it asks.  Every other event costs
     * nothing here. */
    if (listeners && py.PyObject_Size(listeners) == 0) {
        if (occ->type == FORKSAFE_POST_FORK)
            keep_unheard_post_fork(ctx, occ);
        decref(delivered);
        decref(listeners);
        py.PyGILState_Release(gil);
        return 0;
    }
    if (!delivered)
        delivered = py.PyObject_GetAttrString(bridge, "delivered");
    payload = payload_object(ctx, occ, 0);
    if (!listeners || !delivered || !payload) {
        char why[256];
        char *traceback = take_exception(why, sizeof(why));
        forksafe__log(ctx, FORKSAFE__LOG_ERROR, "the _forksafe bridge failed: %s", why);
        forksafe__free(traceback);
        failed = 1;
        goto out;
    }
    delivered_dirty = 1;
    if (py.PyDict_SetItemString(delivered, forksafe_event_type_name(occ->type), payload) != 0)
        py.PyErr_Clear();
    /* A listener may add or remove listeners: walk a snapshot. */
    snapshot = py.PySequence_Tuple(listeners);
    if (!snapshot) {
        py.PyErr_Clear();
        failed = 1;
        goto out;
    }
    count = py.PyTuple_Size(snapshot);
    for (i = 0; i < count; i++) {
        PyObject *listener = py.PyTuple_GetItem(snapshot, i);
        char why[512] = "";
        int64_t start;
        int rc;
        if (!listener) {
            py.PyErr_Clear();
            break;
        }
        start = forksafe__monotonic_ns();
        rc = call_with_payload(ctx, listener, payload, "pyramid_forksafe", &ev, why, sizeof(why));
        forksafe__stats_handler_ran(ctx, occ, FORKSAFE__STATS_LISTENERS, rc, why,
                                    forksafe__monotonic_ns() - start);
        if (rc != 0)
            failed = 1;
    }
out:
    decref(snapshot);
    decref(payload);
    decref(delivered);
    decref(listeners);
    py.PyGILState_Release(gil);
    json_decref(ev.payload);
    forksafe__free(ev.payload_json);
    return failed ? 1 + ctx->on_error : 0;
}
