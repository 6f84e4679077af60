/*
 * child.c - inside a worker, mule or spooler: who it is (post-fork),
 * worker-ready, and worker-exit with its reason, or the crash it leaves to
 * the master to report.
 */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "glue.h"

/* ------------------------------------------------------------ its start */

static int my_spooler_id(void)
{
    struct uwsgi_spooler *spooler;
    int id = 1;

    for (spooler = uwsgi.spoolers; spooler; spooler = spooler->next, id++) {
        if (spooler == uwsgi.i_am_a_spooler)
            return id;
    }
    return 0;
}

/* Which child this process is, from the ids uWSGI sets in it before any
 * post_fork hook runs; 0 for none (the master, a daemon, a hook command). */
FORKSAFE__CHILD_RUNS static int child_identity(int *kind, int *id)
{
    if (uwsgi.muleid > 0) {
        *kind = FORKSAFE__MULE;
        *id = uwsgi.muleid;
    }
    else if (uwsgi.i_am_a_spooler) {
        *kind = FORKSAFE__SPOOLER;
        *id = my_spooler_id();
    }
    else if (uwsgi.mywid > 0) {
        *kind = FORKSAFE__WORKER;
        *id = uwsgi.mywid;
    }
    else {
        return 0;
    }
    return 1;
}

/* The master learns at once that this child's start is over. */
static void mark_ready(int index)
{
    struct forksafe_child_shared *shared;

    if (index < 0)
        return;
    shared = &glue.children_shared[index];
    /* The time first, the pid last: the master takes the time only from
     * a slot whose pid is this child's. */
    __atomic_store_n(&shared->ready_ns, forksafe__monotonic_ns(), __ATOMIC_RELAXED);
    __atomic_store_n(&shared->ready_pid, getpid(), __ATOMIC_RELEASE);
    glue_wake_master();
}

static void start_child(void)
{
    int index, kind, id;

    if (!glue.context_ready)
        return;
    if (glue.hazard_refused) {
        /* forksafe-hazards = fail: the master stops; this child must not
         * start on what it inherited. */
        uwsgi_log("[forksafe] a child forked with fork hazards exits (forksafe-hazards = fail)\n");
        _exit(1);
    }
    glue.forking_worker = 0;
    glue.self_started_ns = forksafe__realtime_ns();
    glue_close_stats_socket();
    glue_drop_death_watches();
    if (!child_identity(&kind, &id))
        return;
    glue.self.kind = kind;
    glue.self.id = id;
    index = glue_slot_index(glue.self.kind, glue.self.id);
    glue.self.respawn = index >= 0 ? glue.slots[index].forks_seen : 0;
    if (glue.self.kind == FORKSAFE__WORKER)
        glue.self.respawn = (int)uwsgi.workers[glue.self.id].respawn_count - 1;
    if (index >= 0) {
        glue.children_shared[index].exit_state = 0;
        glue.children_shared[index].crash_signal = 0;
        glue.children_shared[index].pid = getpid();
        forksafe__exec_track(&glue.children_shared[index].command);
    }
    glue_event_occurs(FORKSAFE_POST_FORK, NULL, 0, 0, NULL, NULL, 0);
    if (glue.self.kind != FORKSAFE__WORKER)
        mark_ready(index);
}

FORKSAFE__CHILD_RUNS void glue_child_post_fork(void)
{
    start_child();
    /* A mule or spooler: uWSGI's handlers are in place now. */
    glue_release_child_fork_guard();
}

FORKSAFE__CHILD_RUNS void glue_worker_ready(void)
{
    int deferred = glue_take_worker_deferred_signal();

    if (deferred) {
        /* uWSGI's worker handlers are in place now: the signal the master
         * sent while this worker started is theirs. */
        kill(getpid(), deferred);
        return;
    }
    if (glue.self.kind != FORKSAFE__WORKER || uwsgi.mywid != glue.self.id)
        return;
    /* A SIGINT the master sent while this worker started (Python's handler
     * was still in place) only set a flag; uWSGI's end_me is installed by
     * now, so a worker born into a stopping instance ends here instead of
     * waiting for the master's mercy to run out. */
    if (glue.shared_state && glue.shared_state->instance_state == INSTANCE_STOPPING) {
        kill(getpid(), SIGINT);
        return;
    }
    glue_event_occurs(FORKSAFE_WORKER_READY, NULL, 0, 0, NULL, NULL, 0);
    mark_ready(glue_slot_index(FORKSAFE__WORKER, glue.self.id));
}

/* ------------------------------------------------------------- its end */

static const char *worker_exit_reason(void)
{
    const char *decided = glue_reason_from_master();
    int state = glue.shared_state ? glue.shared_state->instance_state : INSTANCE_RUNNING;
    int state_applies =
        glue.shared_state && glue.shared_state->state_changed_ns > glue.self_started_ns;

    if (decided)
        return decided;
    /* A stopping master never runs again: a process forked while it was
     * already stopping (its signal came in a pre-fork handler) ends in
     * that stop.  A reload under `lazy` leaves the master running, so a
     * reload applies only to processes started before it. */
    if (state == INSTANCE_STOPPING)
        return "shutdown";
    if (glue.self.kind == FORKSAFE__WORKER && uwsgi.workers[glue.self.id].cheaped)
        return "cheaper";
    if (state_applies && state == INSTANCE_RELOADING)
        return "reload";
    if (glue.self.kind == FORKSAFE__WORKER && uwsgi.max_requests > 0 &&
        uwsgi.workers[glue.self.id].delta_requests >= uwsgi.max_requests)
        return "max-requests";
    if (glue.self.kind == FORKSAFE__WORKER && uwsgi.workers[glue.self.id].cursed_at)
        return "recycle";
    return "exit";
}

/* uWSGI's SIGSEGV/SIGFPE handlers re-raise the signal while it is blocked
 * and then call exit(1): a crash reaches atexit with the signal pending. */
static int crash_signal_pending(void)
{
    static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    sigset_t pending;
    size_t i;

    if (sigpending(&pending) != 0)
        return 0;
    for (i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) {
        if (sigismember(&pending, fatal[i]))
            return fatal[i];
    }
    return 0;
}

/* A child that ends before forksafe's post_fork ran in it (another
 * plugin's post_fork crashed) still carries the master's identity: if it
 * crashed, its slot is told so, and the master reports a crash, not the
 * exit(1) uWSGI's crash handler ends with. */
static void report_early_crash(void)
{
    int kind, id, index, crash;

    if (glue_is_master() || getppid() != uwsgi.workers[0].pid || !glue.children_shared ||
        !(crash = crash_signal_pending()) || !child_identity(&kind, &id))
        return;
    if ((index = glue_slot_index(kind, id)) < 0 || index >= glue.slot_count)
        return;
    glue.children_shared[index].exit_state = 0;
    glue.children_shared[index].command = 0;
    glue.children_shared[index].crash_signal = crash;
    glue.children_shared[index].pid = getpid();
}

FORKSAFE__CHILD_RUNS void glue_child_atexit(void)
{
    static pid_t ran_in;
    int index, crash;

    if (!glue.context_ready)
        return;
    if (getpid() != glue.self.pid) {
        report_early_crash();
        return;
    }
    if (glue.self.kind == FORKSAFE__MASTER || ran_in == glue.self.pid)
        return;
    ran_in = glue.self.pid;
    index = glue_slot_index(glue.self.kind, glue.self.id);
    /* Exiting in the middle of an exec handler (uWSGI's SIGHUP/SIGINT
     * handlers exit an idle worker at once): its command goes too. */
    if (index >= 0 && glue.children_shared[index].command > 0) {
        kill(-glue.children_shared[index].command, SIGKILL);
        glue.children_shared[index].command = 0;
    }
    crash = crash_signal_pending();
    if (crash) {
        /* A crashed process is no place to run handlers: the master
         * reports it as child-death. */
        if (index >= 0 && glue.children_shared[index].pid == getpid())
            glue.children_shared[index].crash_signal = crash;
        return;
    }
    if (index >= 0 && glue.children_shared[index].pid == getpid())
        glue.children_shared[index].exit_state = 1;
    glue_event_occurs(FORKSAFE_WORKER_EXIT, NULL, 0, 0, NULL, worker_exit_reason(), 1);
    if (index >= 0 && glue.children_shared[index].pid == getpid())
        glue.children_shared[index].exit_state = 2;
}

/* Registered once in the master, before any fork, so that every child
 * has it from its first instruction: uWSGI registers the plugins' atexit
 * hooks only once apps are loaded (2.0.30 and later, unbit/uwsgi#2726:
 * with lazy-apps a mule or a spooler would exit without worker-exit), and
 * a child that crashes in an earlier plugin's post_fork has none yet.
 * Where uWSGI's hook runs too, worker-exit still runs once. */
void glue_register_exit_hook(void)
{
    static int registered;

    if (registered++)
        return;
    if (atexit(glue_child_atexit) != 0)
        uwsgi_log("[forksafe] atexit() failed: a mule or spooler may end without worker-exit, "
                  "and a crash before forksafe's post-fork is reported as an exit\n");
}
