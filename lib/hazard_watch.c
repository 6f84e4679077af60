/*
 * hazard_watch.c - the hazard policy every host shares: scan before a fork
 * (lib/hazard.c), leave out what is the host's own or allowed, and say each
 * remaining hazard once per generation, again only when the set changes.
 *
 * A master forks many times with the same connection open: a line per fork
 * would bury every other line of the log, and a warning repeated a hundred
 * times is read as noise.  So each child slot (worker 3) hears of a set
 * once per generation, and of a new set (a connection opened or closed, a
 * thread started) in full; its respawns are quiet.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "forksafe_internal.h"
#include "hazard_watch.h"

int forksafe__hazards_mode_from_name(const char *name)
{
    static const char *const names[] = {"off", "warn", "fail"};
    size_t i;

    for (i = 0; name && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(name, names[i]) == 0)
            return (int)i;
    return -1;
}

int forksafe__hazard_watch_allow(forksafe__hazard_watch *watch, const char *text,
                                 const char *source, int line, forksafe__error *err)
{
    forksafe__hazard_rule rule, *grown;
    int rc = forksafe__hazard_rule_parse(text, source, line, &rule, err);

    if (rc != 0)
        return rc;
    grown = forksafe__realloc(watch->rules, (watch->rule_count + 1) * sizeof(*grown));
    if (!grown) {
        forksafe__hazard_rule_free(&rule);
        return FORKSAFE__ENOMEM;
    }
    watch->rules = grown;
    watch->rules[watch->rule_count++] = rule;
    return 0;
}

void forksafe__hazard_watch_own_this_thread(forksafe__hazard_watch *watch)
{
    unsigned slot = __atomic_fetch_add(&watch->own_tid_count, 1, __ATOMIC_ACQ_REL);

    if (slot < FORKSAFE__HAZARD_OWN_THREADS)
        __atomic_store_n(&watch->own_tids[slot], (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
}

/* "worker 3", "mule 1", "the master". */
static void process_label(const forksafe__process *process, char *buf, size_t size)
{
    if (process->kind == FORKSAFE__MASTER)
        snprintf(buf, size, "master");
    else
        snprintf(buf, size, "%s %d", forksafe__process_kind_name(process->kind), process->id);
}

static void say(const forksafe__hazard_watch *watch, const forksafe__context *ctx,
                const forksafe__process *parent, const forksafe__process *child)
{
    char child_label[64], parent_label[64], line[640];
    size_t i;

    process_label(child, child_label, sizeof(child_label));
    process_label(parent, parent_label, sizeof(parent_label));
    for (i = 0; i < watch->found.count; i++) {
        const forksafe__hazard *hazard = &watch->found.items[i];
        if (hazard->allowed)
            continue;
        forksafe__hazard_describe(hazard, child_label, parent_label, parent->pid, line,
                                  sizeof(line));
        forksafe__log(ctx, FORKSAFE__LOG_WARNING, "%s", line);
    }
}

/* Whether CHILD has not been told of this set in GENERATION yet; records
 * that it now is.  Out of memory, a child is told again rather than never. */
static int news_for(forksafe__hazard_watch *watch, const forksafe__process *child, int generation,
                    uint64_t fingerprint)
{
    struct forksafe__hazard_said *record = NULL, *grown;
    size_t i;

    for (i = 0; i < watch->said_count && !record; i++)
        if (watch->said[i].kind == child->kind && watch->said[i].id == child->id)
            record = &watch->said[i];
    if (record && record->generation == generation && record->fingerprint == fingerprint)
        return 0;
    if (!record) {
        grown = forksafe__realloc(watch->said, (watch->said_count + 1) * sizeof(*grown));
        if (!grown)
            return 1;
        watch->said = grown;
        record = &watch->said[watch->said_count++];
        record->kind = child->kind;
        record->id = child->id;
    }
    record->generation = generation;
    record->fingerprint = fingerprint;
    return 1;
}

/* Scans the calling process into watch->found, rules applied, unless the
 * change check says the last scan of this generation still holds; returns
 * how many hazards no rule allows. */
static int scan(forksafe__hazard_watch *watch, const forksafe__context *ctx, int generation)
{
    pid_t tids[FORKSAFE__HAZARD_OWN_THREADS];
    forksafe__hazard_scope scope = {0};
    unsigned registered, i;
    size_t count = 0, k;
    int rc;

    registered = __atomic_load_n(&watch->own_tid_count, __ATOMIC_ACQUIRE);
    if (registered > FORKSAFE__HAZARD_OWN_THREADS)
        registered = FORKSAFE__HAZARD_OWN_THREADS;
    /* A respawn, where the master's threads and descriptors do not move.
     * A new generation is looked at in full, so what the check cannot see
     * (lib/hazard.h) lasts one generation at most. */
    if (watch->scanned && generation == watch->mark_generation &&
        registered == watch->mark_own_threads &&
        forksafe__hazard_claims_version() == watch->mark_claims_version &&
        forksafe__hazards_unchanged(&watch->mark))
        return watch->unallowed;
    watch->scanned = 0;
    for (i = 0; i < registered; i++)
        tids[i] = __atomic_load_n(&watch->own_tids[i], __ATOMIC_ACQUIRE);
    scope.own_tids = tids;
    scope.own_tid_count = registered;
    scope.rules = watch->rules;
    scope.rule_count = watch->rule_count;
    rc = forksafe__hazards_scan(&scope, &watch->found, &watch->mark);
    if (rc == FORKSAFE__ENOMEM)
        forksafe__log(ctx, FORKSAFE__LOG_WARNING,
                      "out of memory while looking for fork hazards: some may go unsaid");
    else if (rc != 0 && !watch->proc_unreadable_said++)
        forksafe__log(ctx, FORKSAFE__LOG_WARNING,
                      "cannot read /proc/self: fork hazards are not looked for");
    /* Python knows its threads by a better name than the kernel does, and
     * a rule may allow a thread by either. */
    forksafe__python_name_threads(&watch->found);
    for (k = 0; k < watch->found.count; k++) {
        forksafe__hazard *hazard = &watch->found.items[k];
        size_t r;
        const char *by;

        for (r = 0; r < watch->rule_count && !hazard->allowed; r++)
            hazard->allowed = forksafe__hazard_rule_matches(&watch->rules[r], hazard);
        hazard->handled_by[0] = '\0';
        if (hazard->kind != FORKSAFE__HAZARD_THREAD &&
            (by = forksafe__hazard_claimed_by(hazard->fd)) != NULL) {
            snprintf(hazard->handled_by, sizeof(hazard->handled_by), "%s", by);
            hazard->allowed = 1;
        }
        count += !hazard->allowed;
    }
    watch->scanned = rc == 0;
    watch->mark_generation = generation;
    watch->mark_own_threads = registered;
    watch->mark_claims_version = forksafe__hazard_claims_version();
    watch->unallowed = (int)count;
    return (int)count;
}

/* Handler runs of every event so far, in every process. */
static int64_t handler_runs(const forksafe__context *ctx, forksafe_event_type type)
{
    return ctx->stats ? __atomic_load_n(&ctx->stats->events[type].handlers_run, __ATOMIC_ACQUIRE)
                      : 0;
}

int forksafe__hazards_dispatch_pre_fork(forksafe__hazard_watch *watch, forksafe__context *ctx,
                                        forksafe__occurrence *occ, int *hazards)
{
    int64_t runs_before;
    int count, result;

    *hazards = 0;
    if (watch->mode == FORKSAFE__HAZARDS_OFF || occ->type != FORKSAFE_PRE_FORK || !occ->child)
        return forksafe__dispatch(ctx, occ);
    count = scan(watch, ctx, occ->generation);
    occ->hazards = &watch->found;
    runs_before = handler_runs(ctx, FORKSAFE_PRE_FORK);
    result = forksafe__dispatch(ctx, occ);
    occ->hazards = NULL;
    /* A handler may have closed what it was told about (a pool disposed
     * in the master): what the child inherits is what is left. */
    if (handler_runs(ctx, FORKSAFE_PRE_FORK) != runs_before || !ctx->stats)
        count = scan(watch, ctx, occ->generation);
    forksafe__stats_hazards(ctx, count, (int)watch->found.count - count);
    if (news_for(watch, occ->child, occ->generation, forksafe__hazards_fingerprint(&watch->found)))
        say(watch, ctx, &occ->self, occ->child);
    *hazards = count;
    return result;
}

void forksafe__hazard_watch_free(forksafe__hazard_watch *watch)
{
    size_t i;

    for (i = 0; i < watch->rule_count; i++)
        forksafe__hazard_rule_free(&watch->rules[i]);
    forksafe__free(watch->rules);
    forksafe__hazard_list_free(&watch->found);
    forksafe__hazards_mark_free(&watch->mark);
    forksafe__free(watch->said);
    memset(watch, 0, sizeof(*watch));
}
