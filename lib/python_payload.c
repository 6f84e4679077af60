/*
 * python_payload.c - the payload as Python objects, for python: handlers
 * and pyramid_forksafe's listeners.
 *
 * lib/event.c says what a payload holds; this is its Python writer: dicts,
 * str, int and float made directly, never through jansson, equal to
 * json.loads of the payload JSON, so every handler kind sees the same data.
 * No JSON is built, printed or parsed and json (with re, enum ...) is never
 * imported, which every worker would otherwise pay for in memory, copied
 * pages and time.  And in a worker just forked, each small malloc jansson
 * makes reuses a chunk the master freed, on a page shared with it, and
 * copies that page: some twenty page faults for one payload, most of a
 * python: handler's cost.
 */
#include <string.h>

#include "python_api.h"

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

void forksafe__python_payload_keys(void)
{
    const forksafe__python_api *py = forksafe__python();
    size_t i;

    for (i = 0; payload_key_names[i]; i++) {
        if (!payload_keys[i])
            payload_keys[i] = py->PyUnicode_FromString(payload_key_names[i]);
        if (!payload_keys[i])
            py->PyErr_Clear();
    }
}

/* A new Python object equal to json.loads of VALUE's JSON text, or NULL
 * with an exception.  jansson keeps object keys in insertion order, as a
 * dict does, and its strings are valid UTF-8. */
static PyObject *python_value(const json_t *value)
{
    const forksafe__python_api *py = forksafe__python();

    switch (json_typeof(value)) {
    case JSON_OBJECT: {
        PyObject *dict = py->PyDict_New();
        const char *key;
        json_t *member;
        if (!dict)
            return NULL;
        json_object_foreach((json_t *)value, key, member)
        {
            PyObject *name = py->PyUnicode_FromString(key);
            PyObject *item = name ? python_value(member) : NULL;
            int rc = item ? py->PyDict_SetItem(dict, name, item) : -1;
            forksafe__python_decref(item);
            forksafe__python_decref(name);
            if (rc != 0) {
                forksafe__python_decref(dict);
                return NULL;
            }
        }
        return dict;
    }
    case JSON_ARRAY: {
        size_t size = json_array_size(value), i;
        PyObject *list = py->PyList_New((long)size);
        for (i = 0; list && i < size; i++) {
            PyObject *item = python_value(json_array_get(value, i));
            /* PyList_SetItem steals ITEM. */
            if (!item || py->PyList_SetItem(list, (long)i, item) != 0) {
                forksafe__python_decref(list);
                return NULL;
            }
        }
        return list;
    }
    case JSON_STRING:
        return py->PyUnicode_FromStringAndSize(json_string_value(value),
                                               (long)json_string_length(value));
    case JSON_INTEGER:
        return py->PyLong_FromLongLong(json_integer_value(value));
    case JSON_REAL:
        return py->PyFloat_FromDouble(json_real_value(value));
    case JSON_TRUE:
    case JSON_FALSE:
        return py->PyBool_FromLong(json_is_true(value));
    case JSON_NULL:
    default:
        py->Py_IncRef(py->none);
        return py->none;
    }
}

/* ------------------------------------------------------------ the writer */

static void *py_writer_object(const forksafe__payload_writer *w)
{
    (void)w;
    return forksafe__python()->PyDict_New();
}

static int py_writer_set(const forksafe__payload_writer *w, void *object, const char *key,
                         void *value)
{
    const forksafe__python_api *py = forksafe__python();
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
        rc = py->PyDict_SetItem(object, name, value);
    }
    else {
        rc = py->PyDict_SetItemString(object, key, value);
    }
    forksafe__python_decref(value);
    return rc;
}

static void *py_writer_string(const forksafe__payload_writer *w, const char *text)
{
    (void)w;
    return forksafe__python()->PyUnicode_FromString(text);
}

static void *py_writer_integer(const forksafe__payload_writer *w, long long value)
{
    (void)w;
    return forksafe__python()->PyLong_FromLongLong(value);
}

static void *py_writer_real(const forksafe__payload_writer *w, double value)
{
    (void)w;
    return forksafe__python()->PyFloat_FromDouble(value);
}

static void *py_writer_shared(const forksafe__payload_writer *w, const json_t *value)
{
    (void)w;
    return value ? python_value(value) : forksafe__python()->PyDict_New();
}

static void py_writer_release(const forksafe__payload_writer *w, void *object)
{
    (void)w;
    forksafe__python_decref(object);
}

static const forksafe__payload_writer python_writer = {
    py_writer_object, py_writer_set,    py_writer_string, py_writer_integer,
    py_writer_real,   py_writer_shared, py_writer_release};

PyObject *forksafe__python_payload(const forksafe__context *ctx, const forksafe__occurrence *occ,
                                   double time)
{
    const forksafe__python_api *py = forksafe__python();
    PyObject *payload = forksafe__payload_write(&python_writer, ctx, occ,
                                                time > 0 ? time : forksafe__realtime_seconds());

    if (!payload && !py->PyErr_Occurred())
        py->PyErr_NoMemory();
    return payload;
}

PyObject *forksafe__python_event_payload(const forksafe_event *ev)
{
    if (ev->payload)
        return python_value(ev->payload);
    return forksafe__python_payload(ev->ctx, ev->occ, ev->time);
}
