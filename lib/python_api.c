/*
 * python_api.c - reaching libpython's C-API without linking against it:
 * the table of calls, and the helpers every caller of it needs (a NULL-safe
 * decref, a str as UTF-8, the pending exception as text).
 *
 * The host (uWSGI's python3 plugin) loads libpython with RTLD_GLOBAL, so
 * the calls are looked up once with dlsym(RTLD_DEFAULT); a process without
 * Python simply has no python: handlers.  Every entry into Python takes the
 * GIL with PyGILState_Ensure, which works whether this thread already holds
 * it (threads off) or not (threads on, after the host released it).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "python_api.h"

static forksafe__python_api py;

/* 1 resolved, -1 tried and failed, 0 not tried yet. */
static int resolved;

/* Imported once per process and kept: traceback.format_exception. */
static PyObject *format_exception;

static int resolve_api(void)
{
    void *symbol;

    if (resolved)
        return resolved > 0 ? 0 : -1;
    resolved = -1;
#define FORKSAFE__PYTHON_RESOLVE(result, name, parameters) \
    symbol = dlsym(RTLD_DEFAULT, #name);                   \
    if (!symbol)                                           \
        return -1;                                         \
    memcpy(&py.name, &symbol, sizeof(symbol));
    FORKSAFE__PYTHON_CALLS(FORKSAFE__PYTHON_RESOLVE)
#undef FORKSAFE__PYTHON_RESOLVE
    py.none = dlsym(RTLD_DEFAULT, "_Py_NoneStruct");
    if (!py.none)
        return -1;
    /* Optional: without it the bridge asks Python for the listeners'
     * length on every event instead of reading it lock-free. */
    py.list_type = dlsym(RTLD_DEFAULT, "PyList_Type");
    symbol = dlsym(RTLD_DEFAULT, "PyInterpreterState_Head");
    memcpy(&py.PyInterpreterState_Head, &symbol, sizeof(symbol));
    symbol = dlsym(RTLD_DEFAULT, "PyInterpreterState_Next");
    memcpy(&py.PyInterpreterState_Next, &symbol, sizeof(symbol));
    resolved = 1;
    return 0;
}

FORKSAFE__CHILD_RUNS int forksafe__python_available(void)
{
    return resolve_api() == 0 && py.Py_IsInitialized();
}

FORKSAFE__CHILD_RUNS const forksafe__python_api *forksafe__python(void)
{
    return &py;
}

void forksafe__python_decref(PyObject *object)
{
    if (object)
        py.Py_DecRef(object);
}

char *forksafe__python_utf8(PyObject *text)
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
        forksafe__python_decref(bytes);
    }
    if (!copy)
        py.PyErr_Clear();
    return copy;
}

char *forksafe__python_take_exception(char *why, size_t why_size)
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
            forksafe__python_decref(module);
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
                forksafe__python_decref(join);
            }
        }
        text = forksafe__python_utf8(joined);
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
    forksafe__python_decref(joined);
    forksafe__python_decref(empty);
    forksafe__python_decref(lines);
    forksafe__python_decref(type);
    forksafe__python_decref(value);
    forksafe__python_decref(traceback);
    return text;
}
