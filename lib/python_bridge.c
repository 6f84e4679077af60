/*
 * python_bridge.c - the `_forksafe` module, through which pyramid_forksafe
 * hears every event: its listeners are the context's built-in subscription
 * (forksafe__listeners), which the dispatcher runs after the subscriptions.
 *
 * _forksafe.listeners is a list pyramid_forksafe changes in place; each
 * event's payload is also recorded in _forksafe.delivered, so that an app
 * loaded after an event (lazy-apps loads it after the fork) can replay it
 * with _forksafe.recorded(event).  A recipe that makes every child drop a
 * socket claims it with _forksafe.claim_socket((fd, by)), so that the
 * fork hazard check counts it as handled (lib/hazard_claim.c).
 */
#include <stdio.h>
#include <string.h>

#include "hazard.h"
#include "python_api.h"

/* The module, made once per process.  A reference of ours: sys.modules
 * may lose it (a host API caller's tests do), the bridge must not. */
static PyObject *bridge;

/* _forksafe.listeners when it is a list, and whether _forksafe.delivered
 * may hold anything.  With no listener and nothing to forget, an event
 * does not enter Python at all: taking the GIL and looking up attributes
 * writes to the interpreter's pages, and in a master just after a fork
 * every page written is a page copied. */
static PyObject *bridge_listeners;
static int delivered_dirty;

/* This process's post-fork when no listener heard it, kept as the bare
 * occurrence: most workers never need its payload.  An app loaded after
 * the fork (lazy-apps) gets it from _forksafe.recorded("post-fork"). */
FORKSAFE__CHILD_WRITES static struct {
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

/* Whether the listener list is known to be empty without entering Python.
 * PyList_Size only reads the list's length (atomically on a free-threaded
 * build) and changes nothing, so it is safe without the GIL: at worst it
 * reads a length a thread is changing, and an event is heard as if it came
 * a moment earlier or later. */
static int surely_unheard(void)
{
    return bridge_listeners && forksafe__python()->PyList_Size(bridge_listeners) == 0 &&
           !delivered_dirty;
}

/* ------------------------------------------------------------ listeners */

FORKSAFE__CHILD_RUNS static int listeners_open(forksafe__context *ctx, const forksafe_event *ev,
                                               forksafe__listener_round *round)
{
    const forksafe__python_api *py;
    const forksafe__occurrence *occ = ev->occ;
    PyObject *listeners, *delivered = NULL, *payload, *snapshot;
    int gil;

    if (!bridge || !forksafe__python_available())
        return 0;
    if (surely_unheard()) {
        if (occ->type == FORKSAFE_POST_FORK)
            keep_unheard_post_fork(ctx, occ);
        return 0;
    }
    py = forksafe__python();
    gil = py->PyGILState_Ensure();
    listeners = py->PyObject_GetAttrString(bridge, "listeners");
    if (occ->type == FORKSAFE_POST_FORK) {
        /* A child inherits the master's record: it starts afresh at its fork. */
        unheard_post_fork.kept = 0;
        delivered = py->PyObject_GetAttrString(bridge, "delivered");
        if (delivered) {
            py->PyDict_Clear(delivered);
            delivered_dirty = 0;
        }
    }
    /* Nobody listens (no app included pyramid_forksafe yet): only a
     * post-fork is worth recording, for an app loaded later (lazy-apps) to
     * replay, and only as the occurrence until it asks.  Every other event
     * costs nothing here. */
    if (listeners && py->PyObject_Size(listeners) == 0) {
        if (occ->type == FORKSAFE_POST_FORK)
            keep_unheard_post_fork(ctx, occ);
        forksafe__python_decref(delivered);
        forksafe__python_decref(listeners);
        py->PyGILState_Release(gil);
        return 0;
    }
    if (!delivered)
        delivered = py->PyObject_GetAttrString(bridge, "delivered");
    payload = forksafe__python_payload(ctx, occ, 0);
    if (!listeners || !delivered || !payload) {
        char why[256];
        char *traceback = forksafe__python_take_exception(why, sizeof(why));

        forksafe__log(ctx, FORKSAFE__LOG_ERROR, "the _forksafe bridge failed: %s", why);
        forksafe__free(traceback);
        snapshot = NULL;
        goto fail;
    }
    delivered_dirty = 1;
    if (py->PyDict_SetItemString(delivered, forksafe_event_type_name(occ->type), payload) != 0)
        py->PyErr_Clear();
    /* A listener may add or remove listeners: walk a snapshot. */
    snapshot = py->PySequence_Tuple(listeners);
    if (!snapshot) {
        py->PyErr_Clear();
        goto fail;
    }
    forksafe__python_decref(delivered);
    forksafe__python_decref(listeners);
    round->listeners = snapshot;
    round->payload = payload;
    round->count = py->PyTuple_Size(snapshot);
    round->lock = gil;
    return 1;
fail:
    forksafe__python_decref(payload);
    forksafe__python_decref(delivered);
    forksafe__python_decref(listeners);
    py->PyGILState_Release(gil);
    return FORKSAFE__EHANDLER;
}

static int listeners_run(forksafe__context *ctx, forksafe__listener_round *round, long index,
                         const forksafe_event *ev, char *why, size_t why_size)
{
    PyObject *listener = forksafe__python()->PyTuple_GetItem(round->listeners, index);

    /* Borrowed from the snapshot, which holds it for the whole round. */
    if (!listener) {
        forksafe__python()->PyErr_Clear();
        snprintf(why, why_size, "listener %ld is gone", index);
        return FORKSAFE__EHANDLER;
    }
    /* The listeners are pyramid_forksafe's registries (or callables in
     * their place): every server words their failure the same way. */
    return forksafe__python_call(ctx, listener, round->payload,
                                 "pyramid_forksafe subscriber failed", ev, why, why_size);
}

static void listeners_close(forksafe__listener_round *round)
{
    forksafe__python_decref(round->listeners);
    forksafe__python_decref(round->payload);
    forksafe__python()->PyGILState_Release(round->lock);
}

static const forksafe__listeners bridge_listener_list = {
    .subscription =
        {
            .events = (1u << FORKSAFE_EVENT_COUNT) - 1,
            .on_error = FORKSAFE__ON_ERROR_INHERIT,
            .spec = "python:_forksafe.listeners",
            .name = "pyramid_forksafe",
            .source = "_forksafe",
        },
    .open = listeners_open,
    .run = listeners_run,
    .close = listeners_close,
};

/* -------------------------------------------------------------- module */

/* _forksafe.recorded(event): the payload of EVENT as last dispatched in
 * this process (or kept for later: post-fork), or None.  The docstring
 * keeps the word pyramid_forksafe's users know. */
static PyObject *bridge_recorded(PyObject *self, PyObject *argument)
{
    const forksafe__python_api *py = forksafe__python();
    PyObject *delivered, *payload;
    char *event;

    (void)self;
    event = forksafe__python_utf8(argument);
    if (!event)
        return py->PyErr_Occurred() ? NULL : py->PyErr_NoMemory();
    delivered = py->PyObject_GetAttrString(bridge, "delivered");
    if (!delivered) {
        forksafe__free(event);
        return NULL;
    }
    if (unheard_post_fork.kept && strcmp(event, "post-fork") == 0) {
        payload = forksafe__python_payload(unheard_post_fork.ctx, &unheard_post_fork.occ,
                                           unheard_post_fork.time);
        if (!payload || py->PyDict_SetItemString(delivered, event, payload) != 0) {
            forksafe__python_decref(payload);
            forksafe__python_decref(delivered);
            forksafe__free(event);
            return NULL;
        }
        forksafe__python_decref(payload);
        delivered_dirty = 1;
        unheard_post_fork.kept = 0;
    }
    payload = py->PyDict_GetItemString(delivered, event); /* borrowed */
    if (!payload)
        payload = py->none;
    py->Py_IncRef(payload);
    forksafe__python_decref(delivered);
    forksafe__free(event);
    return payload;
}

static forksafe__python_method bridge_recorded_method = {
    "recorded", bridge_recorded, FORKSAFE__PYTHON_METH_O,
    "recorded(event) -> the payload of EVENT last delivered in this process, or None"};

/* _forksafe.claim_socket((fd, by)): BY (a handler's name) takes charge of
 * the socket FD, which every child drops (lib/hazard_claim.c); True if
 * claimed, False if FD is not a socket.  A tuple, so that the one
 * METH_O calling convention of the stable ABI serves. */
static PyObject *bridge_claim_socket(PyObject *self, PyObject *argument)
{
    const forksafe__python_api *py = forksafe__python();
    long long fd;
    char *by;
    int rc;

    (void)self;
    if (py->PyTuple_Size(argument) != 2)
        return NULL; /* PyTuple_Size said why */
    fd = py->PyLong_AsLongLong(py->PyTuple_GetItem(argument, 0));
    if (py->PyErr_Occurred())
        return NULL;
    by = forksafe__python_utf8(py->PyTuple_GetItem(argument, 1));
    if (!by)
        return py->PyErr_Occurred() ? NULL : py->PyErr_NoMemory();
    rc = fd >= 0 && fd <= 0x7fffffff ? forksafe__hazard_claim((int)fd, by) : FORKSAFE__EINVAL;
    forksafe__free(by);
    return py->PyBool_FromLong(rc == 0);
}

/* _forksafe.unclaim_socket(fd): the socket is being closed. */
static PyObject *bridge_unclaim_socket(PyObject *self, PyObject *argument)
{
    const forksafe__python_api *py = forksafe__python();
    long long fd;

    (void)self;
    fd = py->PyLong_AsLongLong(argument);
    if (py->PyErr_Occurred())
        return NULL;
    if (fd >= 0 && fd <= 0x7fffffff)
        forksafe__hazard_unclaim((int)fd);
    py->Py_IncRef(py->none);
    return py->none;
}

static forksafe__python_method bridge_claim_socket_method = {
    "claim_socket", bridge_claim_socket, FORKSAFE__PYTHON_METH_O,
    "claim_socket((fd, by)) -> whether BY now answers for the socket FD: the fork hazard "
    "check counts it as handled"};

static forksafe__python_method bridge_unclaim_socket_method = {
    "unclaim_socket", bridge_unclaim_socket, FORKSAFE__PYTHON_METH_O,
    "unclaim_socket(fd) -> None; the claimed socket FD is being closed"};

/* Sets the module's attributes on a module made afresh. */
static int populate(PyObject *module, const char *container)
{
    static const struct {
        const char *name;
        int kind; /* 0 list, 1 dict, 2 str */
        const char *text;
    } attributes[] = {{"listeners", 0, NULL},
                      {"delivered", 1, NULL},
                      {"version", 2, FORKSAFE_VERSION},
                      {"container", 2, NULL}};
    static forksafe__python_method *const methods[] = {
        &bridge_recorded_method, &bridge_claim_socket_method, &bridge_unclaim_socket_method};
    const forksafe__python_api *py = forksafe__python();
    PyObject *value;
    size_t i;
    int rc = 0;

    for (i = 0; i < sizeof(attributes) / sizeof(attributes[0]) && rc == 0; i++) {
        const char *text = attributes[i].text ? attributes[i].text : container;
        value = attributes[i].kind == 0   ? py->PyList_New(0)
                : attributes[i].kind == 1 ? py->PyDict_New()
                                          : py->PyUnicode_FromString(text);
        if (!value || py->PyObject_SetAttrString(module, attributes[i].name, value) != 0) {
            py->PyErr_Clear();
            rc = FORKSAFE__ENOMEM;
        }
        forksafe__python_decref(value);
    }
    for (i = 0; i < sizeof(methods) / sizeof(methods[0]) && rc == 0; i++) {
        value = py->PyCFunction_NewEx(methods[i], NULL, NULL);
        if (!value || py->PyObject_SetAttrString(module, methods[i]->name, value) != 0) {
            py->PyErr_Clear();
            rc = FORKSAFE__ENOMEM;
        }
        forksafe__python_decref(value);
    }
    return rc;
}

/* Keeps _forksafe.listeners for surely_unheard() if it is a list proper:
 * anything else (set by someone else) is asked in Python on every event. */
static void keep_listener_list(PyObject *module)
{
    const forksafe__python_api *py = forksafe__python();
    PyObject *listeners = py->PyObject_GetAttrString(module, "listeners");
    PyObject *type = listeners ? py->PyObject_Type(listeners) : NULL;

    /* A second call (another host of the host API) asks afresh. */
    forksafe__python_decref(bridge_listeners);
    bridge_listeners = NULL;
    if (type && py->list_type && type == py->list_type)
        bridge_listeners = listeners;
    else
        forksafe__python_decref(listeners);
    forksafe__python_decref(type);
    py->PyErr_Clear();
}

int forksafe__python_bridge_init(forksafe__context *ctx)
{
    const forksafe__python_api *py;
    PyObject *module;
    int gil, created, rc = 0;

    if (!forksafe__python_available())
        return 0;
    py = forksafe__python();
    gil = py->PyGILState_Ensure();
    /* Borrowed; creates the module in sys.modules if absent. */
    module = py->PyImport_AddModule("_forksafe");
    if (!module) {
        py->PyErr_Clear();
        rc = FORKSAFE__ENOMEM;
        goto out;
    }
    created = !py->PyObject_HasAttrString(module, "listeners");
    if (created)
        rc = populate(module, ctx->container ? ctx->container : "uwsgi");
    if (rc == 0) {
        forksafe__python_payload_keys();
        keep_listener_list(module);
        if (bridge != module) {
            py->Py_IncRef(module);
            forksafe__python_decref(bridge);
            bridge = module;
        }
        /* A module made before us may have a record already. */
        delivered_dirty = !created;
        ctx->listeners = &bridge_listener_list;
    }
out:
    py->PyGILState_Release(gil);
    return rc;
}

void forksafe__python_bridge_forget(const forksafe__context *ctx)
{
    if (unheard_post_fork.ctx == ctx) {
        unheard_post_fork.kept = 0;
        unheard_post_fork.ctx = NULL;
    }
}
