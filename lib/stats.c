/*
 * stats.c - what ran where: per-event counters and a ring of recent handler
 * runs, in memory shared by the master and every process it forks.
 *
 * Any process writes (a worker records its own post-fork handlers); the
 * master reads (for uWSGI's metrics collector and the forksafe-stats
 * socket).  Writers never block and never take a lock: a process may be
 * SIGKILLed at any instruction, and a lock it held would freeze every other
 * process's dispatch.  Counters are atomic adds; history records are
 * stamped so a reader skips a record whose writer died half-way.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "forksafe_internal.h"

int forksafe__stats_setup_with_room(forksafe__context *ctx, unsigned history, size_t room)
{
    size_t size;
    char *memory;

    if (ctx->stats)
        return 0;
    if (history > FORKSAFE__HISTORY_MAX || room > (size_t)1 << 30)
        return FORKSAFE__EINVAL;
    room = (room + 63) & ~(size_t)63;
    size = room + sizeof(forksafe__stats) + (size_t)history * sizeof(forksafe__run_record);
    memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        return FORKSAFE__ENOMEM;
    ctx->stats = (forksafe__stats *)(memory + room);
    ctx->stats_size = size;
    ctx->stats_room = room;
    ctx->stats->history_capacity = history;
    return 0;
}

int forksafe__stats_setup(forksafe__context *ctx, unsigned history)
{
    return forksafe__stats_setup_with_room(ctx, history, 0);
}

void *forksafe__stats_room(const forksafe__context *ctx)
{
    if (!ctx->stats || !ctx->stats_room)
        return NULL;
    return (char *)ctx->stats - ctx->stats_room;
}

FORKSAFE__CHILD_RUNS void forksafe__stats_occurred(forksafe__context *ctx, forksafe_event_type type)
{
    if (!ctx->stats || (int)type < 0 || type >= FORKSAFE_EVENT_COUNT)
        return;
    __atomic_add_fetch(&ctx->stats->events[type].occurred, 1, __ATOMIC_RELAXED);
}

void forksafe__stats_hazards(forksafe__context *ctx, int unallowed, int allowed)
{
    forksafe__hazard_stats *hazards;

    if (!ctx->stats)
        return;
    hazards = &ctx->stats->hazards;
    __atomic_add_fetch(&hazards->forks_looked, 1, __ATOMIC_RELAXED);
    if (unallowed > 0)
        __atomic_add_fetch(&hazards->forks_with_hazards, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&hazards->last, unallowed, __ATOMIC_RELAXED);
    __atomic_store_n(&hazards->last_allowed, allowed, __ATOMIC_RELAXED);
}

static void raise_to(int64_t *target, int64_t value)
{
    int64_t seen = __atomic_load_n(target, __ATOMIC_RELAXED);

    while (value > seen && !__atomic_compare_exchange_n(target, &seen, value, 1, __ATOMIC_RELAXED,
                                                        __ATOMIC_RELAXED)) {
    }
}

/* The histogram bucket a run of DURATION_US falls in. */
static int duration_bucket(int64_t duration_us)
{
    /* Never written: on the page of what a new child writes as it starts
     * (forksafe_base.h) rather than in .rodata, where a child that runs
     * one handler would read a page for this table alone (a fault). */
    FORKSAFE__CHILD_WRITES static int64_t bounds[] = FORKSAFE__DURATION_BOUNDS_US;
    int i;

    for (i = 0; i < (int)(sizeof(bounds) / sizeof(bounds[0])); i++) {
        if (duration_us <= bounds[i])
            return i;
    }
    return FORKSAFE__DURATION_BUCKETS - 1;
}

FORKSAFE__CHILD_RUNS void forksafe__stats_handler_ran(forksafe__context *ctx,
                                                      const forksafe__occurrence *occ,
                                                      int subscription, int result, const char *why,
                                                      int64_t duration_ns)
{
    forksafe__stats *stats = ctx->stats;
    forksafe__event_stats *counters;
    forksafe__run_record *record;
    int64_t duration_us = duration_ns / 1000;
    uint64_t sequence;

    if (!stats || (int)occ->type < 0 || occ->type >= FORKSAFE_EVENT_COUNT)
        return;
    counters = &stats->events[occ->type];
    __atomic_add_fetch(&counters->handlers_run, 1, __ATOMIC_RELAXED);
    if (result != 0)
        __atomic_add_fetch(&counters->failed, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&counters->last_duration_us, duration_us, __ATOMIC_RELAXED);
    raise_to(&counters->max_duration_us, duration_us);
    __atomic_add_fetch(&counters->duration_sum_us, duration_us, __ATOMIC_RELAXED);
    __atomic_add_fetch(&counters->duration_buckets[duration_bucket(duration_us)], 1,
                       __ATOMIC_RELAXED);
    if (subscription >= FORKSAFE__STATS_LISTENERS &&
        subscription + 1 < FORKSAFE__SUBSCRIPTION_STATS) {
        forksafe__subscription_stats *mine = &stats->subscriptions[subscription + 1];

        __atomic_add_fetch(&mine->runs, 1, __ATOMIC_RELAXED);
        if (result != 0)
            __atomic_add_fetch(&mine->failed, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&mine->duration_sum_us, duration_us, __ATOMIC_RELAXED);
    }

    if (stats->history_capacity == 0)
        return;
    sequence = __atomic_fetch_add(&stats->next_sequence, 1, __ATOMIC_RELAXED);
    record = &stats->history[sequence % stats->history_capacity];
    __atomic_store_n(&record->stamp, 0, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&record->time_us, forksafe__realtime_ns() / 1000, __ATOMIC_RELAXED);
    __atomic_store_n(&record->duration_us, duration_us, __ATOMIC_RELAXED);
    __atomic_store_n(&record->event, (int32_t)occ->type, __ATOMIC_RELAXED);
    __atomic_store_n(&record->kind, (int32_t)occ->self.kind, __ATOMIC_RELAXED);
    __atomic_store_n(&record->id, (int32_t)occ->self.id, __ATOMIC_RELAXED);
    __atomic_store_n(&record->pid, (int32_t)occ->self.pid, __ATOMIC_RELAXED);
    __atomic_store_n(&record->subscription, (int32_t)subscription, __ATOMIC_RELAXED);
    __atomic_store_n(&record->result, (int32_t)result, __ATOMIC_RELAXED);
    /* snprintf only for a failure: it would double a native dispatch. */
    if (result != 0 && why)
        snprintf(record->why, sizeof(record->why), "%s", why);
    else
        record->why[0] = '\0';
    __atomic_store_n(&record->stamp, sequence + 1, __ATOMIC_RELEASE);
}

/* Copies the record for SEQUENCE into OUT.  Returns 0 if it is gone (the
 * ring wrapped), still being written, or its writer died mid-way. */
static int read_record(const forksafe__stats *stats, uint64_t sequence, forksafe__run_record *out)
{
    const forksafe__run_record *record = &stats->history[sequence % stats->history_capacity];
    uint64_t before = __atomic_load_n(&record->stamp, __ATOMIC_ACQUIRE);

    if (before != sequence + 1)
        return 0;
    out->time_us = __atomic_load_n(&record->time_us, __ATOMIC_RELAXED);
    out->duration_us = __atomic_load_n(&record->duration_us, __ATOMIC_RELAXED);
    out->event = __atomic_load_n(&record->event, __ATOMIC_RELAXED);
    out->kind = __atomic_load_n(&record->kind, __ATOMIC_RELAXED);
    out->id = __atomic_load_n(&record->id, __ATOMIC_RELAXED);
    out->pid = __atomic_load_n(&record->pid, __ATOMIC_RELAXED);
    out->subscription = __atomic_load_n(&record->subscription, __ATOMIC_RELAXED);
    out->result = __atomic_load_n(&record->result, __ATOMIC_RELAXED);
    memcpy(out->why, record->why, sizeof(out->why));
    out->why[sizeof(out->why) - 1] = '\0';
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&record->stamp, __ATOMIC_RELAXED) == before;
}

/* Sets KEY of OBJECT to VALUE (stolen); returns -1 if either failed. */
static int put(json_t *object, const char *key, json_t *value)
{
    return value ? json_object_set_new(object, key, value) : -1;
}

static json_t *event_counters_json(const forksafe__event_stats *counters)
{
    json_t *object = json_object();

    /* "fired": the name operators' dashboards already read. */
    if (!object ||
        put(object, "fired",
            json_integer(__atomic_load_n(&counters->occurred, __ATOMIC_RELAXED))) ||
        put(object, "handlers",
            json_integer(__atomic_load_n(&counters->handlers_run, __ATOMIC_RELAXED))) ||
        put(object, "failed", json_integer(__atomic_load_n(&counters->failed, __ATOMIC_RELAXED))) ||
        put(object, "last_us",
            json_integer(__atomic_load_n(&counters->last_duration_us, __ATOMIC_RELAXED))) ||
        put(object, "max_us",
            json_integer(__atomic_load_n(&counters->max_duration_us, __ATOMIC_RELAXED)))) {
        json_decref(object);
        return NULL;
    }
    return object;
}

static const char *handler_label(const forksafe__context *ctx, int subscription)
{
    if (subscription == FORKSAFE__STATS_LISTENERS)
        return "pyramid_forksafe";
    if (subscription < 0 || (size_t)subscription >= ctx->subscription_count)
        return "?";
    return NULL;
}

/* A handler as an operator may see it: commands can carry passwords. */
static json_t *handler_json(const forksafe__context *ctx, int subscription)
{
    const char *label = handler_label(ctx, subscription);
    char *shown;
    json_t *value;

    if (label)
        return json_string(label);
    shown = forksafe__redact("handler", ctx->subscriptions[subscription].spec);
    if (!shown)
        return NULL;
    value = json_string(shown);
    forksafe__free(shown);
    return value;
}

static json_t *record_json(const forksafe__context *ctx, uint64_t sequence,
                           const forksafe__run_record *record)
{
    json_t *object = json_object(), *process = json_object();
    const char *event = forksafe_event_type_name((forksafe_event_type)record->event);
    const char *kind = forksafe__process_kind_name(record->kind);

    if (!object || !process || put(process, "kind", json_string(kind ? kind : "?")) ||
        put(process, "id", json_integer(record->id)) ||
        put(process, "pid", json_integer(record->pid)) ||
        put(object, "seq", json_integer((json_int_t)sequence)) ||
        put(object, "time", json_real((double)record->time_us / 1e6)) ||
        put(object, "event", json_string(event ? event : "?")) ||
        put(object, "process", json_incref(process)) ||
        put(object, "subscription",
            json_integer(record->subscription < 0 ? record->subscription
                                                  : record->subscription + 1)) ||
        put(object, "handler", handler_json(ctx, record->subscription)) ||
        put(object, "result", json_string(record->result == 0 ? "ok" : "failed")) ||
        (record->result != 0 &&
         put(object, "error",
             json_string(record->why[0] ? record->why : forksafe__strerror(record->result)))) ||
        put(object, "duration_us", json_integer(record->duration_us))) {
        json_decref(process);
        json_decref(object);
        return NULL;
    }
    json_decref(process);
    return object;
}

static json_t *history_json(const forksafe__context *ctx)
{
    const forksafe__stats *stats = ctx->stats;
    json_t *list = json_array();
    uint64_t end, sequence;

    if (!list || stats->history_capacity == 0)
        return list;
    end = __atomic_load_n(&stats->next_sequence, __ATOMIC_ACQUIRE);
    sequence = end > stats->history_capacity ? end - stats->history_capacity : 0;
    for (; sequence < end; sequence++) {
        forksafe__run_record record;

        if (!read_record(stats, sequence, &record))
            continue;
        if (json_array_append_new(list, record_json(ctx, sequence, &record)) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

static json_t *subscriptions_json(const forksafe__context *ctx)
{
    json_t *list = json_array();
    size_t i;

    for (i = 0; list && i < ctx->subscription_count; i++) {
        const forksafe__subscription *sub = &ctx->subscriptions[i];
        json_t *object = json_object();

        if (!object || put(object, "index", json_integer(sub->index + 1)) ||
            put(object, "handler", handler_json(ctx, (int)i)) ||
            put(object, "source", json_string(sub->source ? sub->source : "")) ||
            put(object, "line", json_integer(sub->line)) ||
            json_array_append_new(list, object) != 0) {
            json_decref(object);
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

static json_t *hazards_json(const forksafe__hazard_stats *hazards)
{
    json_t *object = json_object();

    if (!object ||
        put(object, "forks_looked",
            json_integer(__atomic_load_n(&hazards->forks_looked, __ATOMIC_RELAXED))) ||
        put(object, "forks_with_hazards",
            json_integer(__atomic_load_n(&hazards->forks_with_hazards, __ATOMIC_RELAXED))) ||
        put(object, "last", json_integer(__atomic_load_n(&hazards->last, __ATOMIC_RELAXED))) ||
        put(object, "last_allowed",
            json_integer(__atomic_load_n(&hazards->last_allowed, __ATOMIC_RELAXED)))) {
        json_decref(object);
        return NULL;
    }
    return object;
}

json_t *forksafe__stats_json(const forksafe__context *ctx)
{
    json_t *root = json_object(), *events = json_object();
    int type;

    if (!root || !events || !ctx->stats)
        goto fail;
    for (type = 0; type < FORKSAFE_EVENT_COUNT; type++) {
        if (put(events, forksafe_event_type_name((forksafe_event_type)type),
                event_counters_json(&ctx->stats->events[type])))
            goto fail;
    }
    if (put(root, "events", json_incref(events)) ||
        put(root, "hazards", hazards_json(&ctx->stats->hazards)) ||
        put(root, "history_size", json_integer(ctx->stats->history_capacity)) ||
        put(root, "history", history_json(ctx)) ||
        put(root, "subscriptions", subscriptions_json(ctx)))
        goto fail;
    json_decref(events);
    return root;
fail:
    json_decref(events);
    json_decref(root);
    return NULL;
}
