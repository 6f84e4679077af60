/*
 * python.c - the `python:MODULE:CALLABLE` backend: importing a handler (in
 * the master, or lazily in each process) and running it with the payload
 * as a dict (lib/python_payload.c) through the C-API of lib/python_api.c.
 */
#include <stdio.h>
#include <string.h>

#include "python_api.h"

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

void forksafe__python_set_lazy(int lazy)
{
    lazy_imports = lazy;
}

int forksafe__python_lazy(void)
{
    return lazy_imports;
}

/* ----------------------------------------------------------- importing */

/* Imports MODULE and walks ATTRIBUTE ("a.b.c").  Returns a new reference or
 * NULL with the exception pending. */
static PyObject *import_callable(const python_handle *handle)
{
    const forksafe__python_api *py = forksafe__python();
    PyObject *object = py->PyImport_ImportModule(handle->module);
    char *path, *part, *saveptr = NULL;

    if (!object)
        return NULL;
    path = forksafe__strdup(handle->attribute);
    if (!path) {
        forksafe__python_decref(object);
        return NULL;
    }
    for (part = strtok_r(path, ".", &saveptr); part && object;
         part = strtok_r(NULL, ".", &saveptr)) {
        PyObject *next = py->PyObject_GetAttrString(object, part);
        forksafe__python_decref(object);
        object = next;
    }
    forksafe__free(path);
    return object;
}

/* With lazy imports the master checks only that the top-level package can
 * be found: find_spec of a dotted name would import its parents. */
static int module_findable(const char *module, char *why, size_t why_size)
{
    const forksafe__python_api *py = forksafe__python();
    PyObject *util = py->PyImport_ImportModule("importlib.util");
    PyObject *find_spec = util ? py->PyObject_GetAttrString(util, "find_spec") : NULL;
    char top[256];
    PyObject *name, *spec = NULL;
    int found = 0;

    snprintf(top, sizeof(top), "%.*s", (int)strcspn(module, "."), module);
    name = py->PyUnicode_FromString(top);
    if (find_spec && name)
        spec = py->PyObject_CallFunctionObjArgs(find_spec, name, NULL);
    if (spec)
        found = spec != py->none;
    else
        py->PyErr_Clear();
    if (!found)
        snprintf(why, why_size, "no Python module named '%s' on the path", top);
    forksafe__python_decref(spec);
    forksafe__python_decref(name);
    forksafe__python_decref(find_spec);
    forksafe__python_decref(util);
    return found;
}

static int python_resolve(forksafe__context *ctx, void *data, const char *spec, void **handle,
                          forksafe__error *err)
{
    const char *colon = strrchr(spec, ':');
    const forksafe__python_api *py = forksafe__python();
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
    gil = py->PyGILState_Ensure();
    forksafe__python_payload_keys();
    if (lazy_imports) {
        if (!module_findable(python->module, why, sizeof(why)))
            rc = FORKSAFE__ENOTFOUND;
    }
    else {
        python->callable = import_callable(python);
        if (!python->callable) {
            char *traceback = forksafe__python_take_exception(why, sizeof(why));
            forksafe__free(traceback);
            rc = FORKSAFE__ENOTFOUND;
        }
        else if (!py->PyCallable_Check(python->callable)) {
            snprintf(why, sizeof(why), "%s.%s is not callable", python->module, python->attribute);
            rc = FORKSAFE__EINVAL;
        }
    }
    py->PyGILState_Release(gil);
    if (rc != 0)
        forksafe__error_set(err, NULL, 0, "cannot load python:%s: %s", spec, why);
out:
    if (rc != 0) {
        if (python->callable) {
            gil = py->PyGILState_Ensure();
            forksafe__python_decref(python->callable);
            py->PyGILState_Release(gil);
        }
        forksafe__free(python->module);
        forksafe__free(python->attribute);
        forksafe__free(python);
        return rc;
    }
    *handle = python;
    return 0;
}

/* ------------------------------------------------------------- running */

int forksafe__python_call(const forksafe__context *ctx, PyObject *callable, PyObject *payload,
                          const char *failed, const forksafe_event *ev, char *why, size_t why_size)
{
    PyObject *result = forksafe__python()->PyObject_CallFunctionObjArgs(callable, payload, NULL);
    char *traceback;

    if (result) {
        forksafe__python_decref(result);
        return 0;
    }
    traceback = forksafe__python_take_exception(why, why_size);
    forksafe__log(ctx, FORKSAFE__LOG_ERROR, "%s on %s in %s %d (pid %d):\n%s", failed,
                  forksafe_event_name(ev), forksafe_event_process_kind(ev),
                  forksafe_event_process_id(ev), (int)forksafe_event_pid(ev),
                  traceback ? traceback : why);
    forksafe__free(traceback);
    return FORKSAFE__EHANDLER;
}

static int python_run(forksafe__context *ctx, void *data, void *handle, const forksafe_event *ev,
                      char *why, size_t why_size)
{
    const forksafe__python_api *py = forksafe__python();
    python_handle *python = handle;
    int gil, rc;

    (void)data;
    if (!forksafe__python_available()) {
        snprintf(why, why_size, "Python is not initialised in this process");
        return FORKSAFE__EHANDLER;
    }
    gil = py->PyGILState_Ensure();
    if (!python->callable) {
        python->callable = import_callable(python);
        if (python->callable && !py->PyCallable_Check(python->callable)) {
            forksafe__python_decref(python->callable);
            python->callable = NULL;
            snprintf(why, why_size, "%s.%s is not callable", python->module, python->attribute);
            py->PyGILState_Release(gil);
            return FORKSAFE__EINVAL;
        }
    }
    if (!python->callable) {
        char *traceback = forksafe__python_take_exception(why, why_size);
        forksafe__log(ctx, FORKSAFE__LOG_ERROR, "cannot import handler '%s':\n%s",
                      ev->subscription->name, traceback ? traceback : why);
        forksafe__free(traceback);
        py->PyGILState_Release(gil);
        return FORKSAFE__ENOTFOUND;
    }
    rc = forksafe__python_run_handler(ctx, python->callable, ev, why, why_size);
    py->PyGILState_Release(gil);
    return rc;
}

int forksafe__python_run_handler(const forksafe__context *ctx, PyObject *callable,
                                 const forksafe_event *ev, char *why, size_t why_size)
{
    char failed[256]; /* a name is at most NAME_MAX_LENGTH (subscribe.c) */
    PyObject *payload = forksafe__python_event_payload(ev);
    int rc;

    if (!payload) {
        forksafe__free(forksafe__python_take_exception(why, why_size));
        return FORKSAFE__EHANDLER;
    }
    snprintf(failed, sizeof(failed), "handler '%s' raised", ev->subscription->name);
    rc = forksafe__python_call(ctx, callable, payload, failed, ev, why, why_size);
    forksafe__python_decref(payload);
    return rc;
}

void forksafe__python_release_object(PyObject *object)
{
    if (object && forksafe__python_available()) {
        const forksafe__python_api *py = forksafe__python();
        int gil = py->PyGILState_Ensure();

        forksafe__python_decref(object);
        py->PyGILState_Release(gil);
    }
}

static void python_release(void *data, void *handle)
{
    python_handle *python = handle;

    (void)data;
    if (!python)
        return;
    forksafe__python_release_object(python->callable);
    forksafe__free(python->module);
    forksafe__free(python->attribute);
    forksafe__free(python);
}

static forksafe__backend python_backend = {
    .kind = "python",
    .resolve = python_resolve,
    .run = python_run,
    .release = python_release,
};

forksafe__backend *forksafe__python_backend(void)
{
    return &python_backend;
}
