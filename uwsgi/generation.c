/*
 * generation.c - generation-ready: the master's scan dispatches it once
 * every worker of the generation has recorded in its shared slot (child.c)
 * that it reached worker-ready.
 *
 * A generation is the set of workers a master start (the first, or the one
 * after a graceful reload's exec: payloads' "generation", uWSGI's reload
 * count) brings up, or that a reload replacing every worker under the same
 * master brings up: a chain reload (chain-reload, touch-chain-reload, the
 * FIFO's `c`), a workers' reload (touch-workers-reload, the FIFO's `w` and
 * `W`), or a reload under `lazy`.  Those keep the reload count (the
 * master did not restart, and every event of the new workers says the
 * same), so generation-ready says the same "generation" again, with new
 * pids.  A respawn alone (max-requests, a crash, harakiri) starts nothing.
 *
 * The generation is ready when every worker that is alive and not cheaped
 * (cheaper, cheap mode) has reached worker-ready since the generation began:
 * with cheaper these are the workers alive when the last of them became
 * ready.  A worker that dies before it is ready is waited for in its
 * respawned form.  Mules and spoolers are not workers: not part of it.
 */
#include <stdlib.h>
#include <string.h>

#include "glue.h"

/* The master's bookkeeping (its own memory; after a reload's exec the new
 * master starts from zero, and its master-start begins the generation). */
static struct {
    long long master_start_ns; /* monotonic; 0: master-start has not run */
    long long start_ns;        /* this generation's start */
    int announced;             /* generation-ready dispatched for it */
    int chain_seen;            /* a chain reload ran at the last scan */
    long long lazy_reload_ns;  /* the `lazy` reload already taken as a start */
    pid_t *reload_seen;        /* per worker: the last end_pid looked at */
} gen;

/* children.c gives each worker the slot index id - 1 (workers first). */
static struct forksafe_child_shared *worker_shared(int id)
{
    return &glue.children_shared[id - 1];
}

void glue_generation_begin(void)
{
    gen.master_start_ns = forksafe__monotonic_ns();
    gen.start_ns = gen.master_start_ns;
    gen.announced = 0;
    gen.chain_seen = 0;
    gen.lazy_reload_ns = 0;
    if (gen.reload_seen)
        memset(gen.reload_seen, 0, (size_t)uwsgi.numproc * sizeof(pid_t));
}

static void begin_again(void)
{
    gen.start_ns = forksafe__monotonic_ns();
    gen.announced = 0;
}

/* Whether the master just told a worker of the current generation to
 * leave for a reload (reasons.c wrote it in the slot before the signal):
 * its generation is being replaced.  A worker of the generation before
 * (the rest of a chain reload) starts nothing. */
static int reload_of_current_worker(void)
{
    int id, found = 0;

    if (!gen.reload_seen && !(gen.reload_seen = calloc((size_t)uwsgi.numproc, sizeof(pid_t))))
        return 0;
    for (id = 1; id <= uwsgi.numproc; id++) {
        struct forksafe_child_shared *shared = worker_shared(id);
        pid_t pid = shared->end_pid;

        if (pid <= 0 || shared->end_reason != END_RELOAD || pid == gen.reload_seen[id - 1])
            continue;
        gen.reload_seen[id - 1] = pid;
        if (__atomic_load_n(&shared->ready_pid, __ATOMIC_ACQUIRE) == pid &&
            __atomic_load_n(&shared->ready_ns, __ATOMIC_RELAXED) >= gen.start_ns)
            found = 1;
    }
    return found;
}

/* A reload that replaces every worker while this master stays, seen
 * before the first replacement is forked (the scan runs before every
 * fork).  Without uWSGI's kill() watched (reasons.c), chain and `lazy`
 * reloads are still seen from uWSGI's own state. */
static void notice_worker_reload(void)
{
    int chain = uwsgi.status.chain_reloading != 0;
    long long lazy_reload = 0;

    if (uwsgi.lazy && glue.shared_state->instance_state == INSTANCE_RELOADING)
        lazy_reload = glue.shared_state->state_changed_ns;
    if (glue.kills_watched) {
        if (reload_of_current_worker())
            begin_again();
    }
    else if ((chain && !gen.chain_seen) || lazy_reload != gen.lazy_reload_ns) {
        begin_again();
    }
    gen.chain_seen = chain;
    gen.lazy_reload_ns = lazy_reload;
}

static int instance_going_down(void)
{
    return uwsgi_instance_is_reloading || uwsgi_instance_is_dying ||
           glue.shared_state->instance_state == INSTANCE_STOPPING || glue.startup_stop;
}

/* The generation's workers into WORKERS (room for uwsgi.numproc); their
 * count, or 0 while one of them is not ready yet. */
static size_t ready_workers(forksafe__ready_worker *workers)
{
    size_t count = 0;
    int id;

    for (id = 1; id <= uwsgi.numproc; id++) {
        struct uwsgi_worker *worker = &uwsgi.workers[id];
        const struct forksafe_child_slot *slot = &glue.slots[id - 1];
        struct forksafe_child_shared *shared = worker_shared(id);
        pid_t pid = worker->pid;
        long long ready_ns;

        if (worker->cheaped)
            continue;
        /* 0: about to be forked (or respawned); dead: about to be reaped
         * and respawned.  Either way its next process is the one. */
        if (pid <= 0 || (slot->known_pid == pid && slot->death_reported))
            return 0;
        if (__atomic_load_n(&shared->ready_pid, __ATOMIC_ACQUIRE) != pid)
            return 0;
        ready_ns = __atomic_load_n(&shared->ready_ns, __ATOMIC_RELAXED);
        if (ready_ns < gen.start_ns)
            return 0; /* ready in the generation before: not replaced yet */
        workers[count].id = id;
        workers[count].pid = pid;
        workers[count].ms = (ready_ns - gen.start_ns) / 1000000;
        count++;
    }
    return count;
}

void glue_generation_scan(void)
{
    forksafe__ready_worker *workers;
    size_t count;

    if (!gen.master_start_ns || !glue.children_shared || !glue.slots || !glue_is_master())
        return;
    notice_worker_reload();
    if (gen.announced || instance_going_down() || uwsgi.numproc < 1)
        return;
    workers = calloc((size_t)uwsgi.numproc, sizeof(*workers));
    if (!workers)
        return; /* the next scan tries again */
    count = ready_workers(workers);
    if (count > 0) {
        gen.announced = 1;
        glue_generation_ready_occurs(workers, count,
                                     (forksafe__monotonic_ns() - gen.master_start_ns) / 1000000);
    }
    free(workers);
}
