/*
 * children.c - the master's view of its children: a slot per worker, mule
 * and spooler, which child each fork is (pre-fork), and the births and
 * deaths its scan finds (post-fork-parent, child-death).
 */
#include <errno.h>
#include <execinfo.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "glue.h"

/* ------------------------------------------------------------ the glue.slots */

static int count_spoolers(void)
{
    struct uwsgi_spooler *spooler;
    int count = 0;

    for (spooler = uwsgi.spoolers; spooler; spooler = spooler->next)
        count++;
    return count;
}

static void *shared_alloc(size_t size)
{
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (memory == MAP_FAILED) {
        uwsgi_error("[forksafe] mmap()");
        exit(1);
    }
    return memory;
}

void glue_setup_child_tracking(void)
{
    int i, n = 0;

    int spooler_count = count_spoolers();
    glue.slot_count = uwsgi.numproc + uwsgi.mules_cnt + spooler_count;
    glue.slots = calloc((size_t)glue.slot_count + 1, sizeof(*glue.slots));
    if (!glue.slots) {
        uwsgi_log("[forksafe] out of memory\n");
        exit(1);
    }
    /* In the room config.c made before the shared counters (see
     * glue_shared_room), when there is one for these slots. */
    glue.shared_state = forksafe__stats_room(&glue.context);
    if (glue.shared_state && glue.context.stats_room >= glue_shared_room()) {
        glue.children_shared = (struct forksafe_child_shared *)(glue.shared_state + 1);
    }
    else {
        glue.children_shared =
            shared_alloc(((size_t)glue.slot_count + 1) * sizeof(*glue.children_shared));
        glue.shared_state = shared_alloc(sizeof(*glue.shared_state));
    }
    for (i = 0; i < glue.slot_count; i++)
        glue.slots[i].death_fd = -1;
    for (i = 1; i <= uwsgi.numproc; i++, n++) {
        glue.slots[n].kind = FORKSAFE__WORKER;
        glue.slots[n].id = i;
    }
    for (i = 1; i <= uwsgi.mules_cnt; i++, n++) {
        glue.slots[n].kind = FORKSAFE__MULE;
        glue.slots[n].id = i;
    }
    for (i = 1; i <= spooler_count; i++, n++) {
        glue.slots[n].kind = FORKSAFE__SPOOLER;
        glue.slots[n].id = i;
    }
}

FORKSAFE__CHILD_RUNS int glue_slot_index(int kind, int id)
{
    switch (kind) {
    case FORKSAFE__WORKER:
        return id - 1;
    case FORKSAFE__MULE:
        return uwsgi.numproc + id - 1;
    case FORKSAFE__SPOOLER:
        return uwsgi.numproc + uwsgi.mules_cnt + id - 1;
    default:
        return -1;
    }
}

static struct uwsgi_spooler *spooler_by_id(int id)
{
    struct uwsgi_spooler *spooler = uwsgi.spoolers;

    while (spooler && --id > 0)
        spooler = spooler->next;
    return spooler;
}

pid_t glue_current_pid(const struct forksafe_child_slot *slot)
{
    struct uwsgi_spooler *spooler;

    switch (slot->kind) {
    case FORKSAFE__WORKER:
        return uwsgi.workers[slot->id].pid;
    case FORKSAFE__MULE:
        return uwsgi.mules[slot->id - 1].pid;
    case FORKSAFE__SPOOLER:
        spooler = spooler_by_id(slot->id);
        return spooler ? spooler->pid : 0;
    default:
        return 0;
    }
}

/* ------------------------------------------------------------ the scan */

static void report_death(struct forksafe_child_slot *slot, int index, int status_known, int status)
{
    struct forksafe_child_shared *shared = &glue.children_shared[index];
    forksafe__process child = {0};
    const char *cause;

    slot->death_reported = 1;
    glue_unwatch_death(slot->death_fd);
    slot->death_fd = -1;
    if (shared->pid == slot->known_pid && shared->command > 0) {
        /* It died in an exec handler (SIGKILL, harakiri, mercy): the
         * command, in a process group of its own, would outlive it.  The
         * child cleared the slot before reaping the command, so the group
         * is the one it started, dead at most one master cycle ago. */
        pid_t group = shared->command;
        shared->command = 0;
        if (kill(-group, SIGKILL) == 0)
            uwsgi_log("[forksafe] killed the exec handler (process group %d) that %s %d "
                      "(pid %d) left running\n",
                      (int)group, forksafe__process_kind_name(slot->kind), slot->id,
                      (int)slot->known_pid);
    }
    if (shared->pid == slot->known_pid && shared->exit_state == 2)
        return;
    child.kind = slot->kind;
    child.id = slot->id;
    child.pid = slot->known_pid;
    child.respawn = slot->forks_seen - 1;
    if (shared->pid == slot->known_pid && shared->crash_signal) {
        /* uWSGI's crash handler logs a backtrace and exits; report what
         * killed the process, not the exit(1) that followed. */
        status_known = 1;
        status = shared->crash_signal;
        cause = "crash";
    }
    else if (slot->pending_cause)
        cause = slot->pending_cause;
    else if (!status_known)
        cause = "unknown";
    else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL &&
             (slot->master_killed_pid == slot->known_pid ||
              (!glue.kills_watched && glue.shared_state->instance_state != INSTANCE_RUNNING)))
        /* uWSGI SIGKILLs spoolers, and workers past their mercy, when the
         * instance stops or reloads; workers for evil-reload-on-*, cheap
         * mode and idle. */
        cause = "killed-by-master";
    else if (WIFSIGNALED(status))
        cause = "signal";
    else
        cause = "exit";
    slot->pending_cause = NULL;
    glue_event_occurs(FORKSAFE_CHILD_DEATH, &child, status_known, status, cause, NULL, 0);
}

/* forksafe-fast-respawn: a child whose start is over is watched, so that
 * its death wakes the master.  One that dies while it starts is left to
 * uWSGI's own pace (about one respawn a second): a crash loop goes no
 * faster than without forksafe. */
static void watch_if_ready(struct forksafe_child_slot *slot, int index)
{
    const struct forksafe_child_shared *shared = &glue.children_shared[index];

    if (!glue.fast_respawn || slot->death_fd >= 0 || slot->death_reported || slot->known_pid <= 0 ||
        shared->pid != slot->known_pid ||
        __atomic_load_n(&shared->ready_pid, __ATOMIC_ACQUIRE) != slot->known_pid)
        return;
    slot->death_fd = glue_watch_death(slot->known_pid);
}

/* Reports births the master has recorded since the last scan, and deaths
 * of children it has not reaped yet (with their status) or has reaped
 * already (status unknown). */
void glue_scan_children(void)
{
    int i;

    if (!glue.slots || !glue_is_master())
        return;
    for (i = 0; i < glue.slot_count; i++) {
        struct forksafe_child_slot *slot = &glue.slots[i];
        pid_t pid = glue_current_pid(slot);

        if (slot->known_pid > 0 && !slot->death_reported) {
            siginfo_t info;
            int peeked;
            memset(&info, 0, sizeof(info));
            peeked = waitid(P_PID, (id_t)slot->known_pid, &info, WEXITED | WNOHANG | WNOWAIT);
            if (peeked == 0 && info.si_pid == slot->known_pid) {
                int status = info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8
                                                        : (info.si_status & 0x7f);
                report_death(slot, i, 1, status);
            }
            else if ((peeked != 0 && errno == ECHILD) || pid != slot->known_pid) {
                /* Already reaped by uWSGI (it does not always clear the
                 * slot's pid, e.g. for spoolers at shutdown): its waitpid()
                 * told watched_waitpid the status. */
                if (slot->reaped_pid == slot->known_pid)
                    report_death(slot, i, 1, slot->reaped_status);
                else
                    report_death(slot, i, 0, 0);
            }
        }
        if (pid > 0 && pid != slot->known_pid) {
            forksafe__process child = {0};
            glue_unwatch_death(slot->death_fd);
            slot->death_fd = -1;
            slot->known_pid = pid;
            slot->death_reported = 0;
            slot->forks_seen++;
            child.kind = slot->kind;
            child.id = slot->id;
            child.pid = pid;
            child.respawn = slot->forks_seen - 1;
            glue_event_occurs(FORKSAFE_POST_FORK_PARENT, &child, 0, 0, NULL, NULL, 0);
        }
        watch_if_ready(slot, i);
    }
    glue_generation_scan();
}

/* In a new child: the master's pidfds are not its own to watch.  The
 * slots are only read: a child never scans, and a write would copy the
 * master's page of them into every new child. */
FORKSAFE__CHILD_RUNS void glue_drop_death_watches(void)
{
    int i;

    for (i = 0; glue.slots && i < glue.slot_count; i++)
        if (glue.slots[i].death_fd >= 0)
            close(glue.slots[i].death_fd);
}

void glue_note_harakiri(int wid)
{
    if (glue.slots && wid >= 1 && wid <= uwsgi.numproc)
        glue.slots[glue_slot_index(FORKSAFE__WORKER, wid)].pending_cause = "harakiri";
}

/* ------------------------------------------------------------ pre-fork */

static void fire_pre_fork(int kind, int id)
{
    forksafe__process child = {0};
    int index = glue_slot_index(kind, id);

    child.kind = kind;
    child.id = id;
    child.respawn = index >= 0 ? glue.slots[index].forks_seen : 0;
    glue_event_occurs(FORKSAFE_PRE_FORK, &child, 0, 0, NULL, NULL, 0);
    glue_refuse_hazards();
}

/* uWSGI bumps respawn_count of the worker it is about to fork; the slot
 * whose count moved since the last look is the one. */
static int worker_being_forked(void)
{
    int i;

    for (i = 1; i <= uwsgi.numproc; i++) {
        struct forksafe_child_slot *slot = &glue.slots[glue_slot_index(FORKSAFE__WORKER, i)];
        if (uwsgi.workers[i].pid == 0 && !uwsgi.workers[i].cheaped &&
            (int)uwsgi.workers[i].respawn_count > slot->forks_seen)
            return i;
    }
    return 0;
}

void glue_worker_pre_fork(void)
{
    int wid;

    if (!glue.context_ready || !glue_is_master())
        return;
    glue_unblock_fork_signals();
    glue_scan_children();
    wid = worker_being_forked();
    glue.forking_worker = 1;
    if (wid > 0)
        fire_pre_fork(FORKSAFE__WORKER, wid);
    glue_guard_worker_fork();
}

static int pid_is_gone(pid_t pid)
{
    return pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH);
}

/* Mules and spoolers are forked without a plugin hook, and the master also
 * forks for exec hooks, daemons, cron, gateways and the Emperor.  uWSGI forks
 * a mule only in uwsgi_mule() and a spooler only in spooler_start(), both
 * exported, so at each fork the return addresses on the forking thread's
 * stack say exactly which of them, if either, is forking. */
static struct function_extent forking_functions[] = {
    {"uwsgi_mule", 0, 0},
    {"spooler_start", 0, 0},
};
#define FORKING_FUNCTIONS (sizeof(forking_functions) / sizeof(forking_functions[0]))
static int fork_callers_known;

void glue_find_forking_functions(void)
{
    void *frames[4];

    fork_callers_known =
        glue_find_extents(forking_functions, FORKING_FUNCTIONS) == FORKING_FUNCTIONS;
    if (!fork_callers_known)
        uwsgi_log("[forksafe] this uWSGI does not export uwsgi_mule() and spooler_start(): "
                  "mule and spooler forks are told apart from the master's other forks by "
                  "which glue.slots have no live process\n");
    /* The first backtrace() loads the unwinder (a dlopen): here, not in a
     * fork handler. */
    backtrace(frames, 4);
}

/* FORKSAFE__MULE or FORKSAFE__SPOOLER when uwsgi_mule() or spooler_start()
 * is forking, 0 for any other fork, -1 when that cannot be known. */
static int forking_child_kind(void)
{
    if (!fork_callers_known)
        return -1;
    switch (glue_extent_on_stack(forking_functions, FORKING_FUNCTIONS)) {
    case 0:
        return FORKSAFE__MULE;
    case 1:
        return FORKSAFE__SPOOLER;
    default:
        return 0;
    }
}

/* Which child the fork about to be made is, and the pre-fork of a mule or
 * a spooler (a worker's ran in pre_uwsgi_fork).  Which mule or spooler:
 * the one whose slot has no live process.  uWSGI forks them in order at
 * start (each pid stored before the next fork) and respawns a dead one
 * right after reaping it. */
int glue_prepare_child_fork(void)
{
    struct uwsgi_spooler *spooler;
    int i, id, kind;

    if (!glue.context_ready || !glue.slots || glue.dispatching || !glue.master_started ||
        !glue_is_master())
        return 0;
    if (glue.forking_worker) {
        glue.forking_worker = 0;
        return FORKSAFE__WORKER;
    }
    kind = forking_child_kind();
    if (kind == 0)
        return 0;
    /* As before a worker's pre-fork: the children forked since the last
     * cycle get their post-fork-parent now, not after this fork (uWSGI
     * forks the mules after the last worker, before its loop starts).
     * Not inside fork() itself: there, no handler should run that could
     * fork. */
    if (glue.fork_wrapped)
        glue_scan_children();
    for (spooler = uwsgi.spoolers, id = 1; kind != FORKSAFE__MULE && spooler;
         spooler = spooler->next, id++) {
        if (spooler->mode == UWSGI_SPOOLER_EXTERNAL)
            continue;
        if (pid_is_gone(spooler->pid) &&
            glue.slots[glue_slot_index(FORKSAFE__SPOOLER, id)].known_pid == spooler->pid) {
            fire_pre_fork(FORKSAFE__SPOOLER, id);
            glue_guard_child_fork();
            return FORKSAFE__SPOOLER;
        }
    }
    for (i = 1; kind != FORKSAFE__SPOOLER && i <= uwsgi.mules_cnt; i++) {
        pid_t pid = uwsgi.mules[i - 1].pid;
        if (pid_is_gone(pid) && glue.slots[glue_slot_index(FORKSAFE__MULE, i)].known_pid == pid) {
            fire_pre_fork(FORKSAFE__MULE, i);
            glue_guard_child_fork();
            return FORKSAFE__MULE;
        }
    }
    return 0;
}

/* Without the fork wrapper (python_fork.c), inside fork() itself. */
void glue_atfork_prepare(void)
{
    if (!glue.fork_wrapped)
        glue_prepare_child_fork();
}
