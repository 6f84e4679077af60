/*
 * recipe.c - the `recipe:NAME[?OPTIONS]` backend: forksafe's own fixes for
 * the libraries that break across a fork.  The recipes are Python, in the
 * forksafe package (forksafe.recipes), which parses the spec, checks the
 * library is there and says what is wrong; this file hands it the spec in
 * the master, each event to the recipe it returned, and tells the context
 * which events that recipe belongs to.
 */
#include <stdio.h>
#include <string.h>

#include "python_api.h"

/* A resolved recipe: the Python object, which is called with the payload,
 * and the events it belongs to. */
typedef struct recipe_handle {
    PyObject *recipe;
    uint32_t events;
} recipe_handle;

/* The event bits of the recipe's `events` (a sequence of event names). */
static int recipe_events(PyObject *recipe, uint32_t *events, char *why, size_t why_size)
{
    const forksafe__python_api *py = forksafe__python();
    PyObject *names = py->PyObject_GetAttrString(recipe, "events");
    PyObject *tuple = names ? py->PySequence_Tuple(names) : NULL;
    long i, count;
    int rc = 0;

    *events = 0;
    forksafe__python_decref(names);
    if (!tuple) {
        forksafe__free(forksafe__python_take_exception(why, why_size));
        return FORKSAFE__EINVAL;
    }
    count = py->PyTuple_Size(tuple);
    for (i = 0; i < count && rc == 0; i++) {
        char *name = forksafe__python_utf8(py->PyTuple_GetItem(tuple, i));
        int type = name ? forksafe_event_type_from_name(name) : -1;

        if (type < 0) {
            snprintf(why, why_size, "the recipe names an unknown event '%s'",
                     name ? name : "(not a str)");
            rc = FORKSAFE__EINVAL;
        }
        else
            *events |= 1u << type;
        forksafe__free(name);
    }
    forksafe__python_decref(tuple);
    if (rc == 0 && !*events) {
        snprintf(why, why_size, "the recipe belongs to no event");
        rc = FORKSAFE__EINVAL;
    }
    return rc;
}

/* forksafe.recipes.resolve_for_core(SPEC, LAZY): (recipe, None) or (None,
 * the sentence that says what is wrong).  A new reference to the recipe,
 * or NULL with WHY set. */
static PyObject *ask_python(const char *spec, char *why, size_t why_size)
{
    const forksafe__python_api *py = forksafe__python();
    PyObject *module = py->PyImport_ImportModule("forksafe.recipes");
    PyObject *resolve, *text, *lazy, *answer = NULL, *recipe = NULL;
    char *message;

    if (!module) {
        char detail[256] = "";
        forksafe__free(forksafe__python_take_exception(detail, sizeof(detail)));
        snprintf(why, why_size,
                 "recipe: handlers need forksafe's Python package, which this Python cannot "
                 "import (%s); install python3-forksafe, or from a checkout add its python/ "
                 "directory to the path (python-path = .../python)",
                 detail);
        return NULL;
    }
    resolve = py->PyObject_GetAttrString(module, "resolve_for_core");
    text = py->PyUnicode_FromString(spec);
    lazy = py->PyBool_FromLong(forksafe__python_lazy());
    if (resolve && text && lazy)
        answer = py->PyObject_CallFunctionObjArgs(resolve, text, lazy, NULL);
    forksafe__python_decref(lazy);
    forksafe__python_decref(text);
    forksafe__python_decref(resolve);
    forksafe__python_decref(module);
    if (!answer) {
        forksafe__free(forksafe__python_take_exception(why, why_size));
        return NULL;
    }
    if (py->PyTuple_Size(answer) == 2) {
        recipe = py->PyTuple_GetItem(answer, 0);
        message = forksafe__python_utf8(py->PyTuple_GetItem(answer, 1));
        if (recipe == py->none) {
            snprintf(why, why_size, "%s", message ? message : "the recipe cannot be used");
            recipe = NULL;
        }
        else
            py->Py_IncRef(recipe);
        forksafe__free(message);
    }
    else {
        py->PyErr_Clear();
        snprintf(why, why_size, "forksafe.recipes answered something other than a pair");
    }
    forksafe__python_decref(answer);
    return recipe;
}

static int recipe_resolve(forksafe__context *ctx, void *data, const char *spec, void **handle,
                          forksafe__error *err)
{
    const forksafe__python_api *py;
    recipe_handle *resolved;
    char why[768] = "";
    int gil, rc = 0;

    (void)ctx;
    (void)data;
    if (!forksafe__python_available()) {
        forksafe__error_set(err, NULL, 0,
                            "recipe: handlers are Python and need Python in the process: load "
                            "uWSGI's python plugin (plugins = python3,forksafe)");
        return FORKSAFE__ENOTFOUND;
    }
    resolved = forksafe__calloc(1, sizeof(*resolved));
    if (!resolved)
        return FORKSAFE__ENOMEM;
    py = forksafe__python();
    gil = py->PyGILState_Ensure();
    forksafe__python_payload_keys();
    resolved->recipe = ask_python(spec, why, sizeof(why));
    if (!resolved->recipe)
        rc = FORKSAFE__EINVAL;
    else if ((rc = recipe_events(resolved->recipe, &resolved->events, why, sizeof(why))) != 0)
        forksafe__python_decref(resolved->recipe);
    py->PyGILState_Release(gil);
    if (rc != 0) {
        forksafe__error_set(err, NULL, 0, "%s", why);
        forksafe__free(resolved);
        return rc;
    }
    *handle = resolved;
    return 0;
}

static int recipe_run(forksafe__context *ctx, void *data, void *handle, const forksafe_event *ev,
                      char *why, size_t why_size)
{
    recipe_handle *resolved = handle;
    int gil, rc;

    (void)data;
    if (!forksafe__python_available()) {
        snprintf(why, why_size, "Python is not initialised in this process");
        return FORKSAFE__EHANDLER;
    }
    gil = forksafe__python()->PyGILState_Ensure();
    rc = forksafe__python_run_handler(ctx, resolved->recipe, ev, why, why_size);
    forksafe__python()->PyGILState_Release(gil);
    return rc;
}

static void recipe_release(void *data, void *handle)
{
    recipe_handle *resolved = handle;

    (void)data;
    if (!resolved)
        return;
    forksafe__python_release_object(resolved->recipe);
    forksafe__free(resolved);
}

static uint32_t recipe_event_bits(void *data, void *handle)
{
    (void)data;
    return handle ? ((recipe_handle *)handle)->events : 0;
}

static forksafe__backend recipe_backend = {
    .kind = "recipe",
    .resolve = recipe_resolve,
    .run = recipe_run,
    .release = recipe_release,
    .events = recipe_event_bits,
};

forksafe__backend *forksafe__recipe_backend(void)
{
    return &recipe_backend;
}
