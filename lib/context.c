/*
 * context.c - one instance's configuration, from start to end: made with
 * its backends, sealed (handlers resolved once, in the master, before any
 * fork), described for forksafe-check, freed.  lib/dispatch.c runs it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "forksafe_internal.h"

/* ------------------------------------------------------------------ set-up */

int forksafe__context_init(forksafe__context *ctx, forksafe__log_fn log, void *log_data)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->on_error = FORKSAFE__ON_ERROR_LOG;
    ctx->timeout = 30.0;
    ctx->container = "uwsgi";
    ctx->log = log;
    ctx->log_data = log_data;
    if (forksafe__context_add_backend(ctx, forksafe__exec_backend()) ||
        forksafe__context_add_backend(ctx, forksafe__dl_backend()) ||
        forksafe__context_add_backend(ctx, forksafe__symbol_backend())) {
        forksafe__context_free(ctx);
        return FORKSAFE__ENOMEM;
    }
    return 0;
}

int forksafe__context_add_backend(forksafe__context *ctx, forksafe__backend *backend)
{
    forksafe__backend **grown;
    size_t i;

    for (i = 0; i < ctx->backend_count; i++) {
        if (strcmp(ctx->backends[i]->kind, backend->kind) == 0) {
            ctx->backends[i] = backend;
            return 0;
        }
    }
    grown = forksafe__realloc(ctx->backends, (ctx->backend_count + 1) * sizeof(*grown));
    if (!grown)
        return FORKSAFE__ENOMEM;
    ctx->backends = grown;
    ctx->backends[ctx->backend_count++] = backend;
    return 0;
}

const forksafe__backend *forksafe__context_backend(const forksafe__context *ctx, const char *kind)
{
    size_t i;

    for (i = 0; i < ctx->backend_count; i++) {
        if (strcmp(ctx->backends[i]->kind, kind) == 0)
            return ctx->backends[i];
    }
    return NULL;
}

/* -------------------------------------------------------------------- seal */

/* The spec after "kind:" - subscribe has already checked that it exists. */
static const char *spec_argument(const forksafe__subscription *sub)
{
    const char *colon = strchr(sub->spec, ':');

    return colon ? colon + 1 : sub->spec;
}

/* Start-up errors name the handler as written, minus what looks like a
 * secret: they go to the log, which operators share. */
static void resolve_error(forksafe__error *err, const forksafe__subscription *sub,
                          const char *detail)
{
    char *spec = forksafe__redact("handler", sub->spec);
    char *why = forksafe__redact("error", detail);

    forksafe__error_set(err, sub->source, sub->line, "handler '%s': %s", spec ? spec : "(redacted)",
                        why ? why : "(redacted)");
    forksafe__free(spec);
    forksafe__free(why);
}

/* "pre-fork, post-fork" for the event bits EVENTS. */
static void events_phrase(uint32_t events, char *buf, size_t size)
{
    size_t used = 0;
    int type;

    buf[0] = '\0';
    for (type = 0; type < FORKSAFE_EVENT_COUNT && used < size; type++) {
        if (events & (1u << type))
            used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? ", " : "",
                                     forksafe_event_type_name((forksafe_event_type)type));
    }
}

/* A handler that knows its own events (a recipe) is delivered all of them
 * from the one line that names it: a user who writes `post-fork =
 * recipe:prometheus` should not have to know that it also needs
 * child-death.  A line that names an event the handler has no part in is
 * a mistake said at start-up ("*" names none in particular). */
static int take_handler_events(forksafe__subscription *sub, const forksafe__backend *backend,
                               forksafe__error *err)
{
    const uint32_t all = (1u << FORKSAFE_EVENT_COUNT) - 1;
    uint32_t own = backend->events(backend->data, sub->handle);
    char named[256], belongs[256], detail[640];

    if (sub->events != all && (sub->events & ~own)) {
        events_phrase(sub->events & ~own, named, sizeof(named));
        events_phrase(own, belongs, sizeof(belongs));
        snprintf(detail, sizeof(detail),
                 "it has no part in %s; it runs at %s, whichever of them (or *) the line names",
                 named, belongs);
        resolve_error(err, sub, detail);
        backend->release(backend->data, sub->handle);
        sub->handle = NULL;
        return FORKSAFE__EINVAL;
    }
    sub->events = own;
    return 0;
}

static int resolve_subscription(forksafe__context *ctx, forksafe__subscription *sub,
                                forksafe__error *err)
{
    forksafe__error why = {0};
    const forksafe__backend *backend;
    size_t kind_length = strcspn(sub->spec, ":");
    char kind[64], detail[128];
    int rc;

    /* Looked up again rather than trusting sub->backend, so that a backend
     * the host registered (or replaced) after the subscription still wins. */
    snprintf(kind, sizeof(kind), "%.*s", (int)kind_length, sub->spec);
    backend = forksafe__context_backend(ctx, kind);
    if (!backend) {
        snprintf(detail, sizeof(detail), "no backend for '%s:'", kind);
        resolve_error(err, sub, detail);
        return FORKSAFE__EINVAL;
    }
    if (!backend->run) {
        snprintf(detail, sizeof(detail), "the '%s:' backend cannot run handlers", kind);
        resolve_error(err, sub, detail);
        return FORKSAFE__EINVAL;
    }
    /* A seal retried after a failure must not leak what the first attempt
     * resolved. */
    if (sub->handle && sub->backend && sub->backend->release)
        sub->backend->release(sub->backend->data, sub->handle);
    sub->handle = NULL;
    sub->backend = backend;
    if (!backend->resolve)
        return 0;
    rc = backend->resolve(ctx, backend->data, spec_argument(sub), &sub->handle, &why);
    if (rc == 0)
        return backend->events ? take_handler_events(sub, backend, err) : 0;
    if (rc == FORKSAFE__ENOMEM && !why.set)
        resolve_error(err, sub, "out of memory");
    else
        resolve_error(err, sub, why.set ? why.text : forksafe__strerror(rc));
    return rc < 0 ? rc : FORKSAFE__EINVAL;
}

static int build_settings_json(forksafe__context *ctx)
{
    if (!ctx->settings_json) {
        ctx->settings_json =
            ctx->has_settings ? forksafe__map_to_json(&ctx->settings.local) : json_object();
        if (!ctx->settings_json)
            return FORKSAFE__ENOMEM;
    }
    if (!ctx->global_settings_json) {
        ctx->global_settings_json =
            ctx->has_settings ? forksafe__map_to_json(&ctx->settings.global) : json_object();
        if (!ctx->global_settings_json)
            return FORKSAFE__ENOMEM;
    }
    return 0;
}

int forksafe__context_seal(forksafe__context *ctx, forksafe__error *err)
{
    size_t i;
    int rc, any_once = 0;

    if (ctx->sealed) {
        forksafe__error_set(err, "forksafe", 0, "the configuration is already sealed");
        return FORKSAFE__EINVAL;
    }
    for (i = 0; i < ctx->subscription_count; i++) {
        rc = resolve_subscription(ctx, &ctx->subscriptions[i], err);
        if (rc)
            return rc;
        any_once |= ctx->subscriptions[i].once;
    }
    if (forksafe__stats_setup(ctx, FORKSAFE__HISTORY_DEFAULT) != 0) {
        forksafe__error_set(err, "forksafe", 0, "cannot map shared memory for the counters: %s",
                            strerror(errno));
        return FORKSAFE__ENOMEM;
    }
    if (build_settings_json(ctx)) {
        forksafe__error_set(err, "forksafe", 0, "out of memory building the settings JSON");
        return FORKSAFE__ENOMEM;
    }
    /* `once` must hold across every process the master forks, so the flags
     * live in memory that fork shares instead of copying. */
    if (any_once) {
        void *flags = mmap(NULL, ctx->subscription_count, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (flags == MAP_FAILED) {
            forksafe__error_set(err, "forksafe", 0,
                                "cannot map shared memory for 'once' subscriptions: %s",
                                strerror(errno));
            return FORKSAFE__ENOMEM;
        }
        ctx->once_flags = flags;
        ctx->once_flags_size = ctx->subscription_count;
    }
    ctx->sealed = 1;
    return 0;
}

/* ------------------------------------------------------------------ policy */

FORKSAFE__CHILD_RUNS int forksafe__subscription_policy(const forksafe__context *ctx,
                                                       const forksafe__subscription *sub)
{
    return sub->on_error == FORKSAFE__ON_ERROR_INHERIT ? ctx->on_error : sub->on_error;
}

/* ---------------------------------------------------------------- describe */

static void events_text(uint32_t events, char *buf, size_t size)
{
    size_t used = 0;
    int i;

    buf[0] = '\0';
    if (events == (1u << FORKSAFE_EVENT_COUNT) - 1) {
        snprintf(buf, size, "*");
        return;
    }
    for (i = 0; i < FORKSAFE_EVENT_COUNT && used < size; i++) {
        if (events & (1u << i))
            used += snprintf(buf + used, size - used, "%s%s", used ? "," : "",
                             forksafe_event_type_name(i));
    }
}

static void kinds_text(uint32_t kinds, char *buf, size_t size)
{
    size_t used = 0;
    int i;

    if (!kinds) {
        snprintf(buf, size, "any");
        return;
    }
    buf[0] = '\0';
    for (i = 0; i < FORKSAFE__PROCESS_KIND_COUNT && used < size; i++) {
        if (kinds & (1u << i))
            used += snprintf(buf + used, size - used, "%s%s", used ? "," : "",
                             forksafe__process_kind_name(i));
    }
}

static void describe_map(const forksafe__context *ctx, const forksafe__map *map)
{
    size_t i;

    if (map->count == 0)
        forksafe__log(ctx, FORKSAFE__LOG_INFO, "  (none)");
    for (i = 0; i < map->count; i++) {
        char *shown = forksafe__redact(map->entries[i].key, map->entries[i].value);

        forksafe__log(ctx, FORKSAFE__LOG_INFO, "  %s = %s", map->entries[i].key,
                      shown ? shown : "(out of memory)");
        forksafe__free(shown);
    }
}

void forksafe__context_describe(const forksafe__context *ctx)
{
    size_t i;

    forksafe__log(ctx, FORKSAFE__LOG_INFO,
                  "%zu subscription%s (on-error %s, timeout %g s):", ctx->subscription_count,
                  ctx->subscription_count == 1 ? "" : "s", forksafe__on_error_name(ctx->on_error),
                  ctx->timeout);
    for (i = 0; i < ctx->subscription_count; i++) {
        const forksafe__subscription *sub = &ctx->subscriptions[i];
        char events[256], kinds[64], id[32];
        /* Commands may carry URLs with passwords; redact them like a
         * setting that is not itself secret-looking. */
        char *spec = forksafe__redact("handler", sub->spec);

        events_text(sub->events, events, sizeof(events));
        kinds_text(sub->kinds, kinds, sizeof(kinds));
        if (sub->id)
            snprintf(id, sizeof(id), "%d", sub->id);
        else
            snprintf(id, sizeof(id), "any");
        forksafe__log(ctx, FORKSAFE__LOG_INFO, "  #%u %s kind=%s id=%s%s on-error=%s %s (%s:%d)%s",
                      sub->index + 1, events, kinds, id, sub->once ? " once" : "",
                      forksafe__on_error_name(forksafe__subscription_policy(ctx, sub)),
                      spec ? spec : "(out of memory)", sub->source, sub->line,
                      ctx->sealed ? "" : " [not resolved]");
        forksafe__free(spec);
    }
    if (!ctx->has_settings) {
        forksafe__log(ctx, FORKSAFE__LOG_INFO, "no settings");
        return;
    }
    /* Overrides alone (forksafe-set without a file) make settings with no
     * path. */
    if (ctx->settings.section)
        forksafe__log(ctx, FORKSAFE__LOG_INFO, "settings from %s [%s]:",
                      ctx->settings.path ? ctx->settings.path : "overrides", ctx->settings.section);
    else
        forksafe__log(ctx, FORKSAFE__LOG_INFO,
                      "settings from %s:", ctx->settings.path ? ctx->settings.path : "overrides");
    describe_map(ctx, &ctx->settings.local);
    forksafe__log(ctx, FORKSAFE__LOG_INFO, "global settings:");
    describe_map(ctx, &ctx->settings.global);
}

/* -------------------------------------------------------------------- free */

static void free_subscription(forksafe__subscription *sub)
{
    if (sub->handle && sub->backend && sub->backend->release)
        sub->backend->release(sub->backend->data, sub->handle);
    forksafe__free(sub->spec);
    forksafe__free(sub->name);
    forksafe__free(sub->source);
    memset(sub, 0, sizeof(*sub));
}

void forksafe__context_free(forksafe__context *ctx)
{
    size_t i;

    for (i = 0; i < ctx->subscription_count; i++)
        free_subscription(&ctx->subscriptions[i]);
    forksafe__free(ctx->subscriptions);
    forksafe__free(ctx->backends);
    json_decref(ctx->settings_json);
    json_decref(ctx->global_settings_json);
    if (ctx->once_flags)
        munmap((void *)ctx->once_flags, ctx->once_flags_size);
    if (ctx->stats)
        munmap((char *)ctx->stats - ctx->stats_room, ctx->stats_size);
    if (ctx->has_settings)
        forksafe__settings_free(&ctx->settings);
    memset(ctx, 0, sizeof(*ctx));
}
