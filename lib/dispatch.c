/*
 * dispatch.c - an occurrence dispatched: the handler of every subscription
 * it matches runs, then the listeners (the built-in subscription of
 * lib/python_bridge.c), each timed and counted in the stats, and the
 * strongest policy among the failed ones goes back to the host.  The one
 * place where handlers run; the backends it calls never call back.
 */
#include <stdio.h>
#include <string.h>

#include "forksafe_internal.h"

int forksafe__wants(const forksafe__context *ctx, forksafe_event_type type)
{
    size_t i;

    if ((int)type < 0 || type >= FORKSAFE_EVENT_COUNT)
        return 0;
    for (i = 0; i < ctx->subscription_count; i++) {
        if (ctx->subscriptions[i].events & (1u << type))
            return 1;
    }
    return 0;
}

static int matches(const forksafe__subscription *sub, const forksafe__occurrence *occ)
{
    if (!(sub->events & (1u << occ->type)))
        return 0;
    if (sub->kinds && !(sub->kinds & (1u << occ->self.kind)))
        return 0;
    if (sub->id && sub->id != occ->self.id)
        return 0;
    return 1;
}

/* Claims a `once` subscription for this process.  Returns 1 if this
 * process is the first (and so runs the handler), 0 if another already did. */
static int claim_once(const forksafe__context *ctx, const forksafe__subscription *sub)
{
    unsigned char expected = 0;

    if (!ctx->once_flags || sub->index >= ctx->once_flags_size)
        return 1;
    return __atomic_compare_exchange_n((unsigned char *)&ctx->once_flags[sub->index], &expected, 1,
                                       0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* "worker 1 (pid 123)" or "the master (pid 100)". */
static void describe_process(const forksafe__process *process, char *buf, size_t size)
{
    if (process->kind == FORKSAFE__MASTER)
        snprintf(buf, size, "the master (pid %ld)", (long)process->pid);
    else
        snprintf(buf, size, "%s %d (pid %ld)", forksafe__process_kind_name(process->kind),
                 process->id, (long)process->pid);
}

static double elapsed_ms(int64_t start_ns)
{
    return (double)(forksafe__monotonic_ns() - start_ns) / 1e6;
}

/* WHERE is described only when a line is logged: snprintf alone would cost
 * as much as the rest of a dispatch to a native handler. */
static int run_handler(forksafe__context *ctx, const forksafe__subscription *sub,
                       forksafe_event *ev)
{
    const char *event = forksafe_event_type_name(ev->occ->type);
    char why[512], where[128];
    int64_t start, duration;
    double ms;
    int rc;

    why[0] = '\0';
    ev->subscription = sub;
    start = forksafe__monotonic_ns();
    rc = sub->backend->run(ctx, sub->backend->data, sub->handle, ev, why, sizeof(why));
    duration = forksafe__monotonic_ns() - start;
    /* The reason only for a failure: forksafe__strerror's table is in
     * .rodata, a page a new child would read for nothing else. */
    forksafe__stats_handler_ran(ctx, ev->occ, (int)sub->index, rc,
                                rc == 0  ? NULL
                                : why[0] ? why
                                         : forksafe__strerror(rc),
                                duration);
    /* No double constant on this path: see forksafe__ns_to_seconds. */
    if (rc == 0 && !ctx->verbose &&
        (ctx->timeout <= 0 || forksafe__ns_to_seconds(duration) <= ctx->timeout))
        return 0;
    ms = (double)duration / 1e6;
    describe_process(&ev->occ->self, where, sizeof(where));
    if (rc != 0)
        forksafe__log(ctx, FORKSAFE__LOG_ERROR, "handler '%s' failed on %s in %s: %s", sub->name,
                      event, where, why[0] ? why : forksafe__strerror(rc));
    if (ctx->verbose)
        forksafe__log(ctx, FORKSAFE__LOG_INFO, "handler '%s' %s on %s in %s in %.3f ms", sub->name,
                      rc ? "failed" : "ran", event, where, ms);
    /* exec handlers are killed at the timeout; an in-process handler cannot
     * be, so the most we can do is say it blocked the process too long. */
    if (ctx->timeout > 0 && ms > ctx->timeout * 1e3 && strcmp(sub->backend->kind, "exec") != 0)
        forksafe__log(ctx, FORKSAFE__LOG_WARNING,
                      "handler '%s' took %.3f s on %s in %s, more than the %g s timeout", sub->name,
                      ms / 1e3, event, where, ctx->timeout);
    return rc;
}

/* Runs the listeners for OCC, each timed and counted like a handler.
 * Returns 0, or the context's policy + 1 if one failed (or they could not
 * be made ready). */
static int run_listeners(forksafe__context *ctx, const forksafe__occurrence *occ)
{
    const forksafe__listeners *listeners = ctx->listeners;
    forksafe_event ev = {ctx, occ, &listeners->subscription, NULL, NULL, 0};
    forksafe__listener_round round;
    int failed = 0, rc;
    long i;

    memset(&round, 0, sizeof(round));
    rc = listeners->open(ctx, &ev, &round);
    if (rc < 0)
        failed = 1;
    for (i = 0; rc > 0 && i < round.count; i++) {
        char why[512] = "";
        int64_t start = forksafe__monotonic_ns();
        int run = listeners->run(ctx, &round, i, &ev, why, sizeof(why));

        forksafe__stats_handler_ran(ctx, occ, FORKSAFE__STATS_LISTENERS, run,
                                    why[0] ? why : forksafe__strerror(run),
                                    forksafe__monotonic_ns() - start);
        if (run != 0)
            failed = 1;
    }
    if (rc > 0)
        listeners->close(&round);
    json_decref(ev.payload);
    forksafe__free(ev.payload_json);
    return failed ? forksafe__subscription_policy(ctx, &listeners->subscription) + 1 : 0;
}

FORKSAFE__CHILD_RUNS int forksafe__dispatch(forksafe__context *ctx, const forksafe__occurrence *occ)
{
    forksafe_event ev = {ctx, occ, NULL, NULL, NULL, 0};
    int64_t start = 0;
    int result = 0, ran = 0, failed = 0;
    size_t i;

    if ((int)occ->type < 0 || occ->type >= FORKSAFE_EVENT_COUNT)
        return 0;
    forksafe__stats_occurred(ctx, occ->type);
    if (!ctx->sealed) {
        if (forksafe__wants(ctx, occ->type))
            forksafe__log(ctx, FORKSAFE__LOG_ERROR,
                          "%s delivered before start-up finished; handlers not run",
                          forksafe_event_type_name(occ->type));
        return 0;
    }
    for (i = 0; i < ctx->subscription_count; i++) {
        const forksafe__subscription *sub = &ctx->subscriptions[i];
        int policy = forksafe__subscription_policy(ctx, sub), rc;

        if (!matches(sub, occ))
            continue;
        /* The event's time is taken on the first match; the payload is
         * built only if a handler asks for it (forksafe_event_payload). */
        if (ev.time == 0) {
            start = forksafe__monotonic_ns();
            ev.time = forksafe__realtime_seconds();
        }
        /* Claimed just before running: a failed handler still counts as
         * run, so a crash loop cannot make every worker retry it. */
        if (sub->once && !claim_once(ctx, sub))
            continue;
        rc = run_handler(ctx, sub, &ev);
        ran++;
        if (rc != 0) {
            failed++;
            if (policy + 1 > result)
                result = policy + 1;
        }
    }
    if (ran && ctx->verbose) {
        char where[128];

        describe_process(&occ->self, where, sizeof(where));
        forksafe__log(ctx, FORKSAFE__LOG_INFO, "%s in %s: %d handler%s, %d failed, %.3f ms",
                      forksafe_event_type_name(occ->type), where, ran, ran == 1 ? "" : "s", failed,
                      elapsed_ms(start));
    }
    json_decref(ev.payload);
    forksafe__free(ev.payload_json);
    /* After the subscriptions, and after the line above: the listeners'
     * runs are counted in the stats, not in that summary. */
    if (ctx->listeners) {
        int policy = run_listeners(ctx, occ);

        if (policy > result)
            result = policy;
    }
    return result;
}
