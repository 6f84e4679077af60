/*
 * python_fork.c - what os.fork() does around a fork, for a host that forks
 * from C (uWSGI): the before half in the parent (the GIL taken by the
 * forking thread, os.register_at_fork's `before` handlers, the import
 * lock), then after the fork the parent's half (`after_in_parent`) or the
 * child's (the interpreter's locks and thread states made anew for the one
 * thread the child has, `after_in_child`).
 *
 * CPython does each half in one public call (PyOS_BeforeFork,
 * PyOS_AfterFork_Parent, PyOS_AfterFork_Child, stable ABI since 3.7); what
 * is left to the caller is the GIL: os.fork() is called with it held, a
 * host's master usually has released it (uWSGI with enable-threads).  So
 * the forking thread takes it with PyGILState_Ensure() before, and gives
 * it back after, in both processes: the child then holds what the master
 * held, and the host's own code after the fork finds the GIL as it left
 * it.
 *
 * PyOS_AfterFork_Child() keeps only the main interpreter: a sub-interpreter
 * (uWSGI's mount points each get one unless single-interpreter is set) would
 * be deleted under the app it runs.  A fork with sub-interpreters is left
 * as the host makes it, and the host is told so.
 */
#include "python_api.h"

/* The before half happened in this process and the after half is due. */
FORKSAFE__CHILD_WRITES static int before_done;
FORKSAFE__CHILD_WRITES static int gil_state;

/* Whether the interpreter that would survive the fork is the only one.
 * PyInterpreterState_Head/Next are the debugger API: public, exported and
 * read through calls, no struct of Python's. */
static int only_main_interpreter(const forksafe__python_api *py)
{
    void *head;

    if (!py->PyInterpreterState_Head || !py->PyInterpreterState_Next)
        return 1;
    head = py->PyInterpreterState_Head();
    return !head || !py->PyInterpreterState_Next(head);
}

int forksafe__python_before_fork(void)
{
    const forksafe__python_api *py;

    before_done = 0;
    if (!forksafe__python_available())
        return FORKSAFE__PYTHON_FORK_NO_PYTHON;
    py = forksafe__python();
    gil_state = py->PyGILState_Ensure();
    if (!only_main_interpreter(py)) {
        py->PyGILState_Release(gil_state);
        return FORKSAFE__PYTHON_FORK_SUBINTERPRETERS;
    }
    py->PyOS_BeforeFork();
    before_done = 1;
    return 0;
}

void forksafe__python_after_fork_parent(void)
{
    const forksafe__python_api *py = forksafe__python();

    if (!before_done)
        return;
    before_done = 0;
    py->PyOS_AfterFork_Parent();
    py->PyGILState_Release(gil_state);
}

FORKSAFE__CHILD_RUNS void forksafe__python_after_fork_child(void)
{
    const forksafe__python_api *py = forksafe__python();

    if (!before_done)
        return;
    before_done = 0;
    py->PyOS_AfterFork_Child();
    py->PyGILState_Release(gil_state);
}
