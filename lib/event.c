/*
 * event.c - the payload (the JSON object every handler kind receives) and
 * the public accessors of forksafe_event that native handlers call.
 */
#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>

#include "forksafe_internal.h"

/* ----------------------------------------------------------------- payload */

/* json_object_set_new steals VALUE even when it fails, so a chain of these
 * needs no cleanup of its own beyond the object. */
static int set(json_t *object, const char *key, json_t *value)
{
    return json_object_set_new(object, key, value);
}

/* {"kind", "id"[, "pid"][, "ppid"]}: "process" has all four, "child" no
 * ppid (it is the master) and no pid before it exists. */
static json_t *process_json(const forksafe__process *process, int with_pid, int with_ppid)
{
    json_t *object = json_object();

    if (!object)
        return NULL;
    if (set(object, "kind", json_string(forksafe__process_kind_name(process->kind))) ||
        set(object, "id", json_integer(process->id)) ||
        (with_pid && set(object, "pid", json_integer(process->pid))) ||
        (with_ppid && set(object, "ppid", json_integer(process->ppid)))) {
        json_decref(object);
        return NULL;
    }
    return object;
}

static json_t *child_json(const forksafe__occurrence *occ)
{
    const forksafe__process *child = occ->child;
    /* In pre-fork the child does not exist yet, whatever the host put in
     * its pid field. */
    int with_pid = occ->type != FORKSAFE_PRE_FORK && child->pid > 0;
    json_t *object = process_json(child, with_pid, 0);
    int status = occ->child_status;

    if (!object)
        return NULL;
    if (set(object, "respawn", json_integer(child->respawn)))
        goto fail;
    if (occ->child_status_known) {
        if (set(object, "status", json_integer(status)))
            goto fail;
        if (WIFSIGNALED(status) && set(object, "signal", json_integer(WTERMSIG(status))))
            goto fail;
        if (WIFEXITED(status) && set(object, "exit_code", json_integer(WEXITSTATUS(status))))
            goto fail;
    }
    if (occ->child_cause && set(object, "cause", json_string(occ->child_cause)))
        goto fail;
    return object;
fail:
    json_decref(object);
    return NULL;
}

/* The settings objects are built once at seal and shared by reference; an
 * unsealed context (tests, forksafe-check) gets an empty object instead. */
static json_t *shared_or_empty(json_t *shared)
{
    return shared ? json_incref(shared) : json_object();
}

static int has_child(forksafe_event_type type)
{
    return type == FORKSAFE_PRE_FORK || type == FORKSAFE_POST_FORK_PARENT ||
           type == FORKSAFE_CHILD_DEATH;
}

static int has_reason(forksafe_event_type type)
{
    return type == FORKSAFE_WORKER_EXIT || type == FORKSAFE_MASTER_EXIT;
}

static double realtime_now(void)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static json_t *payload_at(const forksafe__context *ctx, const forksafe__occurrence *occ,
                          double time)
{
    const char *name = forksafe_event_type_name(occ->type);
    json_t *payload;

    if (!name)
        return NULL;
    payload = json_object();
    if (!payload)
        return NULL;
    if (set(payload, "event", json_string(name)) ||
        set(payload, "container", json_string(ctx->container ? ctx->container : "uwsgi")) ||
        set(payload, "process", process_json(&occ->self, 1, 1)) ||
        set(payload, "generation", json_integer(occ->generation)) ||
        set(payload, "respawn", json_integer(occ->self.respawn)) ||
        set(payload, "time", json_real(time)) ||
        set(payload, "settings", shared_or_empty(ctx->settings_json)) ||
        set(payload, "global_settings", shared_or_empty(ctx->global_settings_json)))
        goto fail;
    if (has_child(occ->type) && occ->child && set(payload, "child", child_json(occ)))
        goto fail;
    if (has_reason(occ->type) && occ->reason && set(payload, "reason", json_string(occ->reason)))
        goto fail;
    return payload;
fail:
    json_decref(payload);
    return NULL;
}

json_t *forksafe__payload_new(const forksafe__context *ctx, const forksafe__occurrence *occ)
{
    return payload_at(ctx, occ, realtime_now());
}

/* --------------------------------------------------------------- accessors */

FORKSAFE_EXPORT forksafe_event_type forksafe_event_type_of(const forksafe_event *ev)
{
    return ev->occ->type;
}

FORKSAFE_EXPORT const char *forksafe_event_name(const forksafe_event *ev)
{
    return forksafe_event_type_name(ev->occ->type);
}

FORKSAFE_EXPORT const char *forksafe_event_process_kind(const forksafe_event *ev)
{
    return forksafe__process_kind_name(ev->occ->self.kind);
}

FORKSAFE_EXPORT int forksafe_event_process_id(const forksafe_event *ev)
{
    return ev->occ->self.id;
}

FORKSAFE_EXPORT pid_t forksafe_event_pid(const forksafe_event *ev)
{
    return ev->occ->self.pid;
}

FORKSAFE_EXPORT const char *forksafe_event_setting(const forksafe_event *ev, const char *key)
{
    if (!ev->ctx->has_settings || !key)
        return NULL;
    return forksafe__map_get(&ev->ctx->settings.local, key);
}

/* Built on first use: building it costs several times what the rest of a
 * dispatch does, and a native handler that reads only the accessors above
 * never needs it.  Every forksafe_event is a non-const object of the
 * dispatcher; the payload and its text are the caches a handler's call may
 * fill in. */
FORKSAFE_EXPORT const void *forksafe_event_payload(const forksafe_event *ev)
{
    forksafe_event *mutable_ev = (forksafe_event *)ev;

    if (ev->payload)
        return ev->payload;
    mutable_ev->payload = payload_at(ev->ctx, ev->occ, ev->time > 0 ? ev->time : realtime_now());
    if (!ev->payload)
        forksafe__log(ev->ctx, FORKSAFE__LOG_ERROR, "%s: out of memory building the %s payload",
                      ev->subscription ? ev->subscription->name : "handler",
                      forksafe_event_type_name(ev->occ->type));
    return ev->payload;
}

FORKSAFE_EXPORT const char *forksafe_event_payload_json(const forksafe_event *ev)
{
    forksafe_event *mutable_ev = (forksafe_event *)ev;
    const json_t *payload;
    size_t size;
    char *text;

    if (ev->payload_json)
        return ev->payload_json;
    payload = forksafe_event_payload(ev);
    if (!payload)
        return NULL;
    /* Sized first, then written into our own allocation, so the text is
     * freed with forksafe__free whichever allocator jansson was given. */
    size = json_dumpb(payload, NULL, 0, JSON_COMPACT);
    if (size == 0)
        return NULL;
    text = forksafe__malloc(size + 1);
    if (!text)
        return NULL;
    if (json_dumpb(payload, text, size, JSON_COMPACT) != size) {
        forksafe__free(text);
        return NULL;
    }
    text[size] = '\0';
    mutable_ev->payload_json = text;
    return text;
}

FORKSAFE_EXPORT void forksafe_event_log(const forksafe_event *ev, const char *fmt, ...)
{
    char message[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    forksafe__log(ev->ctx, FORKSAFE__LOG_INFO, "%s: %s",
                  ev->subscription ? ev->subscription->name : "handler", message);
}
