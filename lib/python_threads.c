/*
 * python_threads.c - a thread hazard named the way its author named it:
 * the kernel knows most Python threads as the process's name ("uwsgi"),
 * while threading.Thread("metrics-exporter") says whose it is.
 *
 * Only a process that has threads besides the forking one enters Python
 * here, and only a threading module already imported is read: importing it
 * now would start what is being looked for.
 */
#include <stdio.h>

#include "hazard_watch.h"
#include "python_api.h"

/* The hazard of LIST for thread TID, or NULL. */
static forksafe__hazard *thread_hazard(forksafe__hazard_list *list, long long tid)
{
    size_t i;

    for (i = 0; i < list->count; i++)
        if (list->items[i].kind == FORKSAFE__HAZARD_THREAD && list->items[i].tid == tid)
            return &list->items[i];
    return NULL;
}

/* Names the hazard of THREAD (a threading.Thread) if LIST has one. */
static void name_from(forksafe__hazard_list *list, PyObject *thread)
{
    const forksafe__python_api *py = forksafe__python();
    PyObject *native_id = py->PyObject_GetAttrString(thread, "native_id");
    PyObject *name = NULL;
    forksafe__hazard *hazard = NULL;
    char *text;

    if (native_id && native_id != py->none)
        hazard = thread_hazard(list, py->PyLong_AsLongLong(native_id));
    if (hazard)
        name = py->PyObject_GetAttrString(thread, "name");
    text = name ? forksafe__python_utf8(name) : NULL;
    if (text) {
        snprintf(hazard->name, sizeof(hazard->name), "%s", text);
        forksafe__free(text);
    }
    forksafe__python_decref(name);
    forksafe__python_decref(native_id);
    py->PyErr_Clear();
}

void forksafe__python_name_threads(forksafe__hazard_list *list)
{
    const forksafe__python_api *py;
    PyObject *sys, *modules = NULL, *threading, *active = NULL, *threads = NULL, *values = NULL;
    size_t i;
    long n;
    int gil, any = 0;

    for (i = 0; i < list->count && !any; i++)
        any = list->items[i].kind == FORKSAFE__HAZARD_THREAD;
    if (!any || !forksafe__python_available())
        return;
    py = forksafe__python();
    gil = py->PyGILState_Ensure();
    sys = py->PyImport_AddModule("sys"); /* borrowed; always there */
    modules = sys ? py->PyObject_GetAttrString(sys, "modules") : NULL;
    threading = modules ? py->PyDict_GetItemString(modules, "threading") : NULL; /* borrowed */
    active = threading ? py->PyObject_GetAttrString(threading, "_active") : NULL;
    values = active ? py->PyObject_GetAttrString(active, "values") : NULL;
    threads = values ? py->PyObject_CallFunctionObjArgs(values, NULL) : NULL;
    forksafe__python_decref(values);
    values = threads ? py->PySequence_Tuple(threads) : NULL;
    for (n = 0; values && n < py->PyTuple_Size(values); n++)
        name_from(list, py->PyTuple_GetItem(values, n));
    forksafe__python_decref(values);
    forksafe__python_decref(threads);
    forksafe__python_decref(active);
    forksafe__python_decref(modules);
    py->PyErr_Clear();
    py->PyGILState_Release(gil);
}
