/*
 * signals.c - the stop and reload signals: caught in the master before
 * uWSGI's loop takes them, wrapped once it has (so the instance state is
 * recorded first), and held back around every fork until the new child
 * has handlers of its own.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "glue.h"

/* The stop and reload signals, blocked in the master around a fork (see
 * block_fork_signals), and the one a new worker deferred. */
FORKSAFE__CHILD_WRITES static int fork_signals_blocked;
/* from pre_uwsgi_fork to post_uwsgi_fork */
FORKSAFE__CHILD_WRITES static int worker_fork_in_progress;
static sigset_t fork_saved_mask;
FORKSAFE__CHILD_WRITES static volatile sig_atomic_t worker_deferred_signal;
/* The same guard for a mule's or a spooler's fork (see guard_child_fork). */
FORKSAFE__CHILD_WRITES static volatile sig_atomic_t child_fork_in_progress;
FORKSAFE__CHILD_WRITES static int child_deferred_signal;

/* A stop signal that reached the master before its loop took over the
 * signals (see catch_startup_signals), and the master's own exec handler. */
static volatile sig_atomic_t startup_signal_pending;
static volatile pid_t master_command;
static pid_t startup_master_pid;
static int signals_wrapped;
static struct sigaction original_actions[NSIG];

/* ------------------------------------------------------ around a fork */

/* uWSGI 2.0.21 loses a stop or reload signal that the master handles
 * while it forks a worker, and then waits for that worker for ever (or
 * for worker-reload-mercy):
 *  - in the master, from the fork until uwsgi_respawn_worker() stores the
 *    new pid (after every post_uwsgi_fork hook), the worker's slot holds
 *    pid 0, so kill_them_all()/grace_them_all() skip it and nobody ever
 *    tells that worker;
 *  - in the worker, until uwsgi_worker_run() installs its own handlers,
 *    the master's are still in place: the master's SIGINT (or SIGHUP)
 *    runs kill_them_all() (or grace_them_all()) inside the new worker,
 *    which signals its siblings, marks only its own copy of the state as
 *    dying, and serves on.
 * So the master blocks these signals from the end of pre-fork until its
 * next master cycle or pre-fork (the pid is stored by then), and a new
 * worker holds on to what arrives until uWSGI's handlers are in place
 * (hijack_worker), then raises it again for them.  pre-fork handlers run
 * unblocked, so a stop still cuts a slow start-up handler short. */
static void block_fork_signals(void)
{
    static const int guarded[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP};
    sigset_t set;
    size_t i;

    if (fork_signals_blocked)
        return;
    sigemptyset(&set);
    for (i = 0; i < sizeof(guarded) / sizeof(guarded[0]); i++)
        sigaddset(&set, guarded[i]);
    if (pthread_sigmask(SIG_BLOCK, &set, &fork_saved_mask) == 0)
        fork_signals_blocked = 1;
}

void glue_unblock_fork_signals(void)
{
    if (!fork_signals_blocked)
        return;
    fork_signals_blocked = 0;
    pthread_sigmask(SIG_SETMASK, &fork_saved_mask, NULL);
}

/* What uWSGI's master sends its workers for the stop or reload under way
 * (kill_them_all, reap_them_all, grace_them_all, gracefully_kill_them_all),
 * 0 if none. */
static int signal_for_workers(void)
{
    if (uwsgi.status.brutally_destroying)
        return SIGINT;
    if (uwsgi.status.brutally_reloading)
        return SIGTERM;
    if (uwsgi.status.gracefully_destroying || uwsgi.status.gracefully_reloading)
        return SIGHUP;
    return 0;
}

/* A new worker's handler until uWSGI's own: a stop beats a reload. */
static void defer_worker_signal(int signum)
{
    if (!worker_deferred_signal || signum != SIGHUP)
        worker_deferred_signal = signum;
}

void glue_guard_worker_fork(void)
{
    block_fork_signals();
    worker_fork_in_progress = 1;
    /* A stop or reload the master handled since it reaped this slot's
     * last worker skipped the slot (pid 0), and uWSGI forks anyway: the
     * new worker gets the signal its siblings got, at hijack_worker. */
    worker_deferred_signal = signal_for_workers();
}

FORKSAFE__CHILD_RUNS int glue_take_worker_deferred_signal(void)
{
    int deferred = worker_deferred_signal;

    worker_deferred_signal = 0;
    return deferred;
}

/* Mules, gateways and daemons are forked while the signals may still be
 * blocked after the last worker's fork (until the first master cycle):
 * they must not keep the master's mask (a daemon would even keep it
 * across exec). */
FORKSAFE__CHILD_RUNS void glue_atfork_child(void)
{
    if (fork_signals_blocked && !worker_fork_in_progress && !child_fork_in_progress)
        glue_unblock_fork_signals();
}

/* uWSGI 2.0.21 has the same gaps around a mule's and a spooler's fork as
 * around a worker's (see block_fork_signals): until uwsgi_mule() or
 * spooler_start() installs the child's own handlers, a stop or reload
 * runs the master's handler in the child (which then curses its siblings
 * and lives on until the master's mercy kills it), and the master skips
 * the child until it stores the pid.  So the master blocks the signals
 * before the fork until its next master cycle or pre-fork, and the child
 * keeps them blocked until forksafe's post_fork (after uWSGI's handlers),
 * then takes what arrived, and what its siblings got meanwhile. */
void glue_guard_child_fork(void)
{
    block_fork_signals();
    if (!fork_signals_blocked)
        return;
    child_fork_in_progress = 1;
    child_deferred_signal = signal_for_workers();
}

void glue_atfork_parent(void)
{
    child_fork_in_progress = 0;
}

FORKSAFE__CHILD_RUNS void glue_release_child_fork_guard(void)
{
    int deferred = child_deferred_signal;

    if (!child_fork_in_progress)
        return;
    child_fork_in_progress = 0;
    child_deferred_signal = 0;
    glue_unblock_fork_signals();
    if (deferred)
        kill(getpid(), deferred);
}

static void defer_in_worker(int signum)
{
    struct sigaction ours;

    memset(&ours, 0, sizeof(ours));
    ours.sa_handler = defer_worker_signal;
    sigemptyset(&ours.sa_mask);
    sigaction(signum, &ours, NULL);
}

FORKSAFE__CHILD_RUNS void glue_post_uwsgi_fork(int in_child)
{
    worker_fork_in_progress = 0;
    if (!in_child) {
        worker_deferred_signal = 0;
        return;
    }
    if (!fork_signals_blocked)
        return;
    /* The signals uwsgi_worker_run() gives handlers of its own; SIGQUIT
     * keeps what uWSGI leaves a worker.  Immediates, not a table: a table
     * in .rodata is a page only a new child reads (a fault per spawn). */
    defer_in_worker(SIGINT);
    defer_in_worker(SIGTERM);
    defer_in_worker(SIGHUP);
    glue_unblock_fork_signals();
}

/* ------------------------------------------------------ in the master */

/* Runs before uWSGI's own handler, which curses the workers: by the time
 * a worker runs worker-exit, the reason is in shared memory. */
static void forksafe_master_signal(int signum)
{
    struct sigaction *original = &original_actions[signum];

    if (getpid() == uwsgi.workers[0].pid) {
        glue_record_instance_state(signum);
        /* A child's on-error=fatal: it set the flag, then sent SIGINT. */
        if (glue.shared_state->fatal)
            uwsgi.status.dying_for_need_app = 1;
    }
    if (original->sa_flags & SA_SIGINFO) {
        if (original->sa_sigaction)
            original->sa_sigaction(signum, NULL, NULL);
    }
    else if (original->sa_handler != SIG_IGN && original->sa_handler != SIG_DFL) {
        original->sa_handler(signum);
    }
}

/* Until master_loop installs uWSGI's handlers, the master's SIGINT is
 * Python's (the python plugin's Py_Initialize), which only sets a flag:
 * without this, a stop signal sent while start-up handlers run (or
 * workers are being forked) would be lost and the instance would go on
 * serving.  It is recorded, the master's running exec handler is killed,
 * the previous handler still runs (Python raises KeyboardInterrupt in a
 * python: handler), and the first master cycle delivers the signal again
 * to uWSGI's own handler. */
static struct sigaction startup_previous[NSIG];
static const int startup_signals[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP};

static void startup_signal(int signum)
{
    struct sigaction *previous = &startup_previous[signum];
    int saved = errno;

    if (getpid() == startup_master_pid) {
        /* What uWSGI's master loop will make of it (master.c). */
        int stops = signum == SIGINT || (signum == SIGQUIT && !uwsgi.die_on_term) ||
                    (signum == SIGTERM && uwsgi.die_on_term);
        if (!startup_signal_pending || stops)
            startup_signal_pending = signum;
        if (stops)
            glue.startup_stop = 1;
        if (glue.shared_state)
            glue_record_instance_state(signum);
        if (stops && master_command > 0)
            kill(-master_command, SIGKILL);
    }
    else if (previous->sa_handler == SIG_DFL) {
        /* A child, before uWSGI installed its own handlers: as if
         * forksafe had not been there. */
        signal(signum, SIG_DFL);
        raise(signum);
    }
    if (!(previous->sa_flags & SA_SIGINFO) && previous->sa_handler != SIG_IGN &&
        previous->sa_handler != SIG_DFL)
        previous->sa_handler(signum);
    errno = saved;
}

void glue_catch_startup_signals(void)
{
    size_t i;

    startup_master_pid = getpid();
    forksafe__exec_track(&master_command);
    for (i = 0; i < sizeof(startup_signals) / sizeof(startup_signals[0]); i++) {
        struct sigaction ours;
        int signum = startup_signals[i];

        if (sigaction(signum, NULL, &startup_previous[signum]) != 0)
            continue;
        memset(&ours, 0, sizeof(ours));
        ours.sa_handler = startup_signal;
        sigemptyset(&ours.sa_mask);
        sigaction(signum, &ours, NULL);
    }
}

static void wrap_master_signals(void)
{
    static const int wrapped[] = {SIGHUP, SIGTERM, SIGINT, SIGQUIT};
    size_t i;

    signals_wrapped = 1;
    for (i = 0; i < sizeof(wrapped) / sizeof(wrapped[0]); i++) {
        struct sigaction ours;
        int signum = wrapped[i];

        if (sigaction(signum, NULL, &original_actions[signum]) != 0)
            continue;
        if (original_actions[signum].sa_handler == SIG_IGN ||
            original_actions[signum].sa_handler == SIG_DFL)
            continue;
        ours = original_actions[signum];
        ours.sa_flags &= ~SA_SIGINFO;
        ours.sa_handler = forksafe_master_signal;
        sigaction(signum, &ours, NULL);
    }
}

void glue_master_loop_signals(void)
{
    if (signals_wrapped)
        return;
    wrap_master_signals();
    /* uWSGI's handlers are in place now: hand them the stop (or reload)
     * that arrived before. */
    if (startup_signal_pending) {
        glue.startup_stop = 0;
        kill(getpid(), startup_signal_pending);
        startup_signal_pending = 0;
    }
}
