/*
 * reasons.c - why the master ends a child, written to the child's slot by
 * the master at the moment it decides: uWSGI's kill() and waitpid() calls
 * are watched (lib/intercept.c).
 */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>

#include "glue.h"

/* The master decides to end a child in many places: its signal handlers,
 * master FIFO commands (q Q r R c w W C -), touch-reload and its siblings,
 * the Emperor, cheaper, idle, chain reloads, worker lifetime.  Only some
 * have a hook, and a shared state updated on the next master cycle comes
 * too late (uWSGI sleeps in uwsgi_detach_daemons() right after signalling
 * the workers).  Every one of them ends in the master calling kill() on
 * the child, so forksafe points the uWSGI executable's kill() at
 * watched_kill (lib/intercept.c): the reason is written to the child's
 * slot, from the master's own state at that moment, before the signal
 * leaves.  It is exact because the writer is the decider, and the worker
 * reads it only after the signal has arrived. */
static const char *const end_reason_names[] = {NULL, "shutdown", "reload", "cheaper", "recycle"};

/* Reloads that set no instance-wide flag: FIFO w/W, touch-workers-reload,
 * touch-mules-reload, touch-spoolers-reload, chain reloads (FIFO c,
 * touch-chain-reload), and any reload under `lazy`. */
static struct function_extent reloading_functions[] = {
    {"uwsgi_reload_workers", 0, 0},     {"uwsgi_brutally_reload_workers", 0, 0},
    {"uwsgi_reload_mules", 0, 0},       {"uwsgi_reload_spoolers", 0, 0},
    {"uwsgi_master_check_chain", 0, 0}, {"grace_them_all", 0, 0},
};
#define RELOADING_FUNCTIONS (sizeof(reloading_functions) / sizeof(reloading_functions[0]))

static int (*libc_kill)(pid_t, int);

static enum end_reason master_end_reason(const struct forksafe_child_slot *slot, int signum)
{
    int worker = slot->kind == FORKSAFE__WORKER;

    if (uwsgi.status.gracefully_destroying || uwsgi.status.brutally_destroying)
        return END_SHUTDOWN;
    if (uwsgi.status.gracefully_reloading || uwsgi.status.brutally_reloading)
        return END_RELOAD;
    if (worker && uwsgi.workers[slot->id].cheaped)
        return END_CHEAPER;
    /* SIGWINCH ends a worker only once told to stop taking requests
     * (max-worker-lifetime); otherwise it is a wake-up. */
    if (signum == SIGWINCH && (!worker || uwsgi.workers[slot->id].manage_next_request))
        return END_NONE;
    if (glue_extent_on_stack(reloading_functions, RELOADING_FUNCTIONS) >= 0)
        return END_RELOAD;
    return END_RECYCLE;
}

/* The slot of the master's child PID (stored by uWSGI, or the last one
 * the scan saw), or -1; children run the watchers too (they inherit the
 * executable's GOT), and get -1. */
static int master_child_slot(pid_t pid)
{
    int index;

    if (!glue.slots || !glue.children_shared)
        return -1;
    for (index = 0; index < glue.slot_count; index++) {
        if (glue_current_pid(&glue.slots[index]) == pid || glue.slots[index].known_pid == pid)
            return glue_is_master() ? index : -1;
    }
    return -1;
}

static void note_child_end(pid_t pid, int signum)
{
    enum end_reason reason;
    int index = master_child_slot(pid);

    if (index < 0)
        return;
    if (signum == SIGKILL)
        glue.slots[index].master_killed_pid = pid;
    reason = master_end_reason(&glue.slots[index], signum);
    if (reason == END_NONE)
        return;
    glue.children_shared[index].end_pid = pid;
    glue.children_shared[index].end_reason = reason;
}

static int watched_kill(pid_t pid, int signum)
{
    if (pid > 0) {
        switch (signum) {
        case SIGHUP:
        case SIGINT:
        case SIGQUIT:
        case SIGTERM:
        case SIGKILL:
        case SIGWINCH: {
            int saved = errno;
            note_child_end(pid, signum);
            errno = saved;
            break;
        }
        default:
            break;
        }
    }
    return libc_kill(pid, signum);
}

/* uWSGI reaps a child in several places (its master loop, and right after
 * a SIGKILL in cheap mode, idle and gateway restarts), some before
 * forksafe's scan could peek at the zombie: the status is kept here for
 * the scan, which would otherwise report it unknown. */
static pid_t (*libc_waitpid)(pid_t, int *, int);

static pid_t watched_waitpid(pid_t pid, int *status, int options)
{
    int own_status = 0;
    int *where = status ? status : &own_status;
    pid_t reaped = libc_waitpid(pid, where, options);
    int index = reaped > 0 ? master_child_slot(reaped) : -1;

    if (index >= 0) {
        glue.slots[index].reaped_pid = reaped;
        glue.slots[index].reaped_status = *where;
    }
    return reaped;
}

void glue_watch_master_kills(void)
{
    int replaced;

    if (glue.kills_watched)
        return;
    /* Taken before the GOT changes: in a monolithic uWSGI these very
     * references are among the entries replaced. */
    libc_kill = kill;
    libc_waitpid = waitpid;
    glue_find_extents(reloading_functions, RELOADING_FUNCTIONS);
    replaced = forksafe__intercept_call("kill", (void *)watched_kill);
    if (replaced <= 0) {
        uwsgi_log("[forksafe] cannot watch this uWSGI's kill() calls (%s): a worker-exit "
                  "reason can come from the state of the master's previous cycle\n",
                  replaced == 0 ? "none found" : forksafe__strerror(replaced));
        return;
    }
    glue.kills_watched = 1;
    replaced = forksafe__intercept_call("waitpid", (void *)watched_waitpid);
    if (replaced <= 0)
        uwsgi_log("[forksafe] cannot watch this uWSGI's waitpid() calls (%s): a child it "
                  "reaps before forksafe's scan is reported with cause unknown\n",
                  replaced == 0 ? "none found" : forksafe__strerror(replaced));
}

/* The reason the master wrote for this very process, or NULL. */
FORKSAFE__CHILD_RUNS const char *glue_reason_from_master(void)
{
    int index = glue_slot_index(glue.self.kind, glue.self.id);

    if (index < 0 || index >= glue.slot_count ||
        glue.children_shared[index].end_pid != glue.self.pid)
        return NULL;
    return end_reason_names[glue.children_shared[index].end_reason];
}
