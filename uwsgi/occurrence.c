/*
 * occurrence.c - an event occurs in this process: the occurrence is built
 * from uWSGI's state, lib/ dispatches it, and the failure policy the
 * handlers' runs call for is applied.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "glue.h"

static int startup_stop_logged;

static void fill_self(void)
{
    glue.self.pid = getpid();
    glue.self.ppid = getppid();
}

/* Acts on the strongest failure policy the dispatch reported. */
static void apply_policy(int result, forksafe_event_type type, int exiting)
{
    if (result <= 1)
        return;
    if (result == 1 + FORKSAFE__ON_ERROR_EXIT && glue.self.kind != FORKSAFE__MASTER) {
        if (exiting)
            return;
        uwsgi_log("[forksafe] on-error=exit: %s %d (pid %d) exits after a failed %s handler\n",
                  forksafe__process_kind_name(glue.self.kind), glue.self.id, (int)getpid(),
                  forksafe_event_type_name(type));
        exit(1);
    }
    /* fatal, or exit in the master (which nobody would respawn). */
    uwsgi_log("[forksafe] on-error=%s: stopping the instance after a failed %s handler\n",
              result == 1 + FORKSAFE__ON_ERROR_FATAL ? "fatal" : "exit",
              forksafe_event_type_name(type));
    if (glue.self.kind == FORKSAFE__MASTER) {
        if (type == FORKSAFE_MASTER_START || type == FORKSAFE_MASTER_EXIT || !uwsgi.workers)
            exit(1);
        glue_mark_fatal();
        kill(getpid(), SIGINT);
        return;
    }
    glue_mark_fatal();
    if (uwsgi.workers && uwsgi.workers[0].pid > 0)
        kill(uwsgi.workers[0].pid, SIGINT);
    if (!exiting)
        exit(1);
}

/* OCC, filled in with what the caller knows, is completed and dispatched. */
FORKSAFE__CHILD_RUNS static void occurs(forksafe__occurrence *occ, int exiting)
{
    forksafe_event_type type = occ->type;
    int result;

    glue.hazards_found = 0;
    if (!glue.context_ready)
        return;
    if (glue.startup_stop && glue.self.kind == FORKSAFE__MASTER && type != FORKSAFE_MASTER_EXIT) {
        /* Stopping before the master loop even started: the children
         * forked meanwhile are stopped as soon as it does, and a slow
         * handler here would only hold the stop back. */
        if (!startup_stop_logged++)
            uwsgi_log("[forksafe] stop requested during start-up: the master runs no more "
                      "handlers until it exits\n");
        return;
    }
    fill_self();
    occ->self = glue.self;
    occ->generation = (int)uwsgi.reloads;
    glue.dispatching++;
    /* Always: dispatch counts the occurrence even when nobody listens, and
     * runs pyramid_forksafe's listeners after the subscriptions. */
    result =
        forksafe__hazards_dispatch_pre_fork(&glue.hazards, &glue.context, occ, &glue.hazards_found);
    glue.dispatching--;
    apply_policy(result, type, exiting);
}

FORKSAFE__CHILD_RUNS void glue_event_occurs(forksafe_event_type type,
                                            const forksafe__process *child, int status_known,
                                            int status, const char *cause, const char *reason,
                                            int exiting)
{
    forksafe__occurrence occ;

    memset(&occ, 0, sizeof(occ));
    occ.type = type;
    occ.child = child;
    occ.child_status_known = status_known;
    occ.child_status = status;
    occ.child_cause = cause;
    occ.reason = reason;
    occurs(&occ, exiting);
}

void glue_generation_ready_occurs(const forksafe__ready_worker *workers, size_t count,
                                  long long elapsed_ms)
{
    forksafe__occurrence occ;

    memset(&occ, 0, sizeof(occ));
    occ.type = FORKSAFE_GENERATION_READY;
    occ.workers = workers;
    occ.worker_count = count;
    occ.elapsed_ms = elapsed_ms;
    occurs(&occ, 0);
}
