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

json_t *forksafe__payload_new(const forksafe__context *ctx, const forksafe__occurrence *occ)
{
    const char *name = forksafe_event_type_name(occ->type);
    json_t *payload;
    struct timespec now;

    if (!name)
        return NULL;
    payload = json_object();
    if (!payload)
        return NULL;
    clock_gettime(CLOCK_REALTIME, &now);
    if (set(payload, "event", json_string(name)) ||
        set(payload, "container", json_string(ctx->container ? ctx->container : "uwsgi")) ||
        set(payload, "process", process_json(&occ->self, 1, 1)) ||
        set(payload, "generation", json_integer(occ->generation)) ||
        set(payload, "respawn", json_integer(occ->self.respawn)) ||
        set(payload, "time", json_real((double)now.tv_sec + (double)now.tv_nsec / 1e9)) ||
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

FORKSAFE_EXPORT const void *forksafe_event_payload(const forksafe_event *ev)
{
    return ev->payload;
}

FORKSAFE_EXPORT const char *forksafe_event_payload_json(const forksafe_event *ev)
{
    /* Every forksafe_event is a non-const object of forksafe__dispatch; the
     * cache is the one thing a handler's call may fill in. */
    forksafe_event *mutable_ev = (forksafe_event *)ev;
    size_t size;
    char *text;

    if (ev->payload_json)
        return ev->payload_json;
    if (!ev->payload)
        return NULL;
    /* Sized first, then written into our own allocation, so the text is
     * freed with forksafe__free whichever allocator jansson was given. */
    size = json_dumpb(ev->payload, NULL, 0, JSON_COMPACT);
    if (size == 0)
        return NULL;
    text = forksafe__malloc(size + 1);
    if (!text)
        return NULL;
    if (json_dumpb(ev->payload, text, size, JSON_COMPACT) != size) {
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
