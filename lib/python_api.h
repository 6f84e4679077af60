/*
 * python_api.h - the private API shared by lib/python*.c only: libpython's
 * C-API as lib/python_api.c reaches it, the payload as Python objects, and
 * a call into Python.  Everything else of lib/ sees Python through
 * forksafe_internal.h's python sections, which name no Python type.
 */
#ifndef FORKSAFE_PYTHON_API_H
#define FORKSAFE_PYTHON_API_H

#include "forksafe_internal.h"

/* ------------------------------------------------------------ python C-API */

/* libpython's C-API, which lib/python_api.c looks up at run time: forksafe
 * is not linked against libpython, the host (uWSGI's python3 plugin) loads
 * it.  Only calls of the stable ABI, and no struct of Python's is read by
 * hand (their layout differs between builds, free-threaded or not); sizes
 * are Py_ssize_t, which is long on every platform forksafe builds for. */
typedef struct _object PyObject;

/* PyMethodDef, whose layout is part of the stable ABI. */
typedef struct forksafe__python_method {
    const char *name;
    PyObject *(*function)(PyObject *self, PyObject *argument);
    int flags;
    const char *doc;
} forksafe__python_method;
#define FORKSAFE__PYTHON_METH_O 0x0008

#define FORKSAFE__PYTHON_CALLS(X)                                              \
    X(int, Py_IsInitialized, (void))                                           \
    X(int, PyGILState_Ensure, (void))                                          \
    X(void, PyGILState_Release, (int))                                         \
    X(void, PyOS_BeforeFork, (void))                                           \
    X(void, PyOS_AfterFork_Parent, (void))                                     \
    X(void, PyOS_AfterFork_Child, (void))                                      \
    X(PyObject *, PyImport_ImportModule, (const char *))                       \
    X(PyObject *, PyImport_AddModule, (const char *))                          \
    X(PyObject *, PyObject_GetAttrString, (PyObject *, const char *))          \
    X(int, PyObject_SetAttrString, (PyObject *, const char *, PyObject *))     \
    X(int, PyObject_HasAttrString, (PyObject *, const char *))                 \
    X(PyObject *, PyObject_Type, (PyObject *))                                 \
    X(int, PyCallable_Check, (PyObject *))                                     \
    X(long, PyObject_Size, (PyObject *))                                       \
    X(PyObject *, PyObject_CallFunctionObjArgs, (PyObject *, ...))             \
    X(PyObject *, PyUnicode_FromString, (const char *))                        \
    X(PyObject *, PyUnicode_FromStringAndSize, (const char *, long))           \
    X(PyObject *, PyUnicode_AsUTF8String, (PyObject *))                        \
    X(char *, PyBytes_AsString, (PyObject *))                                  \
    X(PyObject *, PyErr_Occurred, (void))                                      \
    X(void, PyErr_Fetch, (PyObject **, PyObject **, PyObject **))              \
    X(void, PyErr_NormalizeException, (PyObject **, PyObject **, PyObject **)) \
    X(void, PyErr_Clear, (void))                                               \
    X(PyObject *, PyErr_NoMemory, (void))                                      \
    X(void, Py_IncRef, (PyObject *))                                           \
    X(void, Py_DecRef, (PyObject *))                                           \
    X(PyObject *, PyList_New, (long))                                          \
    X(long, PyList_Size, (PyObject *))                                         \
    X(int, PyList_SetItem, (PyObject *, long, PyObject *))                     \
    X(PyObject *, PyDict_New, (void))                                          \
    X(int, PyDict_SetItem, (PyObject *, PyObject *, PyObject *))               \
    X(int, PyDict_SetItemString, (PyObject *, const char *, PyObject *))       \
    X(PyObject *, PyDict_GetItemString, (PyObject *, const char *))            \
    X(void, PyDict_Clear, (PyObject *))                                        \
    X(PyObject *, PySequence_Tuple, (PyObject *))                              \
    X(long, PyTuple_Size, (PyObject *))                                        \
    X(PyObject *, PyTuple_GetItem, (PyObject *, long))                         \
    X(PyObject *, PyLong_FromLongLong, (long long))                            \
    X(long long, PyLong_AsLongLong, (PyObject *))                              \
    X(PyObject *, PyFloat_FromDouble, (double))                                \
    X(PyObject *, PyBool_FromLong, (long))                                     \
    X(PyObject *, PyCFunction_NewEx, (forksafe__python_method *, PyObject *, PyObject *))

/* The calls above, and two objects. */
typedef struct forksafe__python_api {
#define FORKSAFE__PYTHON_CALL_MEMBER(result, name, parameters) result(*name) parameters;
    FORKSAFE__PYTHON_CALLS(FORKSAFE__PYTHON_CALL_MEMBER)
#undef FORKSAFE__PYTHON_CALL_MEMBER
    PyObject *none;      /* Py_None */
    PyObject *list_type; /* &PyList_Type; NULL if the library does not export it */
    /* The interpreters, in turn (NULL if not exported: then not asked). */
    void *(*PyInterpreterState_Head)(void);
    void *(*PyInterpreterState_Next)(void *);
} forksafe__python_api;

/* True if libpython's C-API is in the process and the interpreter is up. */
int forksafe__python_available(void);

/* The C-API table: complete once forksafe__python_available() said yes. */
const forksafe__python_api *forksafe__python(void);

/* Py_DecRef that accepts NULL.  With the GIL held, as every call below. */
void forksafe__python_decref(PyObject *object);

/* Returns a new forksafe__malloc'ed UTF-8 copy of the str TEXT, or NULL
 * (TEXT NULL, not a str, out of memory; no exception is left pending). */
char *forksafe__python_utf8(PyObject *text);

/* Takes the pending exception: returns its formatted traceback (a new
 * forksafe__malloc'ed string, NULL if it could not be formatted) and
 * stores its last line ("ValueError: boom") in WHY. */
char *forksafe__python_take_exception(char *why, size_t why_size);

/* -------------------------------------------------------- python payload */

/* Makes the payload's keys as str objects (lib/python_payload.c), once, in
 * the master, so that no payload interns them again.  GIL held. */
void forksafe__python_payload_keys(void);

/* A new dict equal to json.loads of OCC's payload JSON at TIME (0: now),
 * or NULL with an exception pending.  GIL held. */
PyObject *forksafe__python_payload(const forksafe__context *ctx, const forksafe__occurrence *occ,
                                   double time);

/* The same for EV: converted from the JSON payload if an earlier handler
 * of this dispatch built one. */
PyObject *forksafe__python_event_payload(const forksafe_event *ev);

/* ------------------------------------------------------------ python call */

/* Runs CALLABLE(PAYLOAD) for EV, GIL held.  On an exception, logs the
 * whole traceback as one record, "FAILED on EVENT in KIND ID (pid N):"
 * (FAILED says who, e.g. "handler 'python:app:warm' raised"), puts its
 * last line in WHY and returns FORKSAFE__EHANDLER; otherwise 0. */
int forksafe__python_call(const forksafe__context *ctx, PyObject *callable, PyObject *payload,
                          const char *failed, const forksafe_event *ev, char *why, size_t why_size);

/* Runs the handler CALLABLE for EV with EV's payload, GIL held, as
 * forksafe__python_call does ("handler 'NAME' raised" on an exception). */
int forksafe__python_run_handler(const forksafe__context *ctx, PyObject *callable,
                                 const forksafe_event *ev, char *why, size_t why_size);

/* Drops a handler's reference to OBJECT (may be NULL), taking the GIL; a
 * no-op once Python is gone. */
void forksafe__python_release_object(PyObject *object);

#endif /* FORKSAFE_PYTHON_API_H */
