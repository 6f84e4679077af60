/*
 * event.c - the payload (the JSON object every handler kind receives) and
 * the public accessors of forksafe_event that native handlers call.
 */
#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>

#include "forksafe_internal.h"
#include "hazard.h"

/* ----------------------------------------------------------------- payload */

/* The payload's shape is written once, here, against a writer: jansson
 * values for the JSON that exec: and native handlers read, and Python
 * objects for python: handlers (lib/python.c).  Each writer's set() takes
 * VALUE even when it fails (NULL = an earlier failure), so a chain of sets
 * needs no cleanup beyond the object. */

static int set(const forksafe__payload_writer *w, void *object, const char *key, void *value)
{
    return w->set(w, object, key, value);
}

/* {"kind", "id"[, "pid"][, "ppid"]}: "process" has all four, "child" no
 * ppid (it is the master) and no pid before it exists. */
static void *process_value(const forksafe__payload_writer *w, const forksafe__process *process,
                           int with_pid, int with_ppid)
{
    void *object = w->object(w);

    if (!object)
        return NULL;
    if (set(w, object, "kind", w->string(w, forksafe__process_kind_name(process->kind))) ||
        set(w, object, "id", w->integer(w, process->id)) ||
        (with_pid && set(w, object, "pid", w->integer(w, process->pid))) ||
        (with_ppid && set(w, object, "ppid", w->integer(w, process->ppid)))) {
        w->release(w, object);
        return NULL;
    }
    return object;
}

static void *child_value(const forksafe__payload_writer *w, const forksafe__occurrence *occ)
{
    const forksafe__process *child = occ->child;
    /* In pre-fork the child does not exist yet, whatever the host put in
     * its pid field. */
    int with_pid = occ->type != FORKSAFE_PRE_FORK && child->pid > 0;
    void *object = process_value(w, child, with_pid, 0);
    int status = occ->child_status;

    if (!object)
        return NULL;
    if (set(w, object, "respawn", w->integer(w, child->respawn)))
        goto fail;
    if (occ->child_status_known) {
        if (set(w, object, "status", w->integer(w, status)))
            goto fail;
        if (WIFSIGNALED(status) && set(w, object, "signal", w->integer(w, WTERMSIG(status))))
            goto fail;
        if (WIFEXITED(status) && set(w, object, "exit_code", w->integer(w, WEXITSTATUS(status))))
            goto fail;
    }
    if (occ->child_cause && set(w, object, "cause", w->string(w, occ->child_cause)))
        goto fail;
    return object;
fail:
    w->release(w, object);
    return NULL;
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

/* The workers list, as JSON that every writer takes like the settings:
 * built once per dispatch, in the master. */
static json_t *workers_json(const forksafe__occurrence *occ)
{
    json_t *list = json_array();
    size_t i;

    if (!list)
        return NULL;
    for (i = 0; i < occ->worker_count; i++) {
        const forksafe__ready_worker *worker = &occ->workers[i];
        json_t *entry = json_pack("{s:i, s:I, s:I}", "id", worker->id, "pid",
                                  (json_int_t)worker->pid, "ms", (json_int_t)worker->ms);
        if (!entry || json_array_append_new(list, entry) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

void *forksafe__payload_write(const forksafe__payload_writer *w, const forksafe__context *ctx,
                              const forksafe__occurrence *occ, double time)
{
    const char *name = forksafe_event_type_name(occ->type);
    void *payload;

    if (!name)
        return NULL;
    payload = w->object(w);
    if (!payload)
        return NULL;
    /* The settings objects are built once at seal and shared; an unsealed
     * context (tests, forksafe-check) gets empty objects instead. */
    if (set(w, payload, "event", w->string(w, name)) ||
        set(w, payload, "container", w->string(w, ctx->container ? ctx->container : "uwsgi")) ||
        set(w, payload, "process", process_value(w, &occ->self, 1, 1)) ||
        set(w, payload, "generation", w->integer(w, occ->generation)) ||
        set(w, payload, "respawn", w->integer(w, occ->self.respawn)) ||
        set(w, payload, "time", w->real(w, time)) ||
        set(w, payload, "settings", w->shared(w, ctx->settings_json)) ||
        set(w, payload, "global_settings", w->shared(w, ctx->global_settings_json)))
        goto fail;
    if (has_child(occ->type) && occ->child && set(w, payload, "child", child_value(w, occ)))
        goto fail;
    if (has_reason(occ->type) && occ->reason &&
        set(w, payload, "reason", w->string(w, occ->reason)))
        goto fail;
    if (occ->type == FORKSAFE_GENERATION_READY) {
        json_t *workers = workers_json(occ);
        int failed = !workers || set(w, payload, "workers", w->shared(w, workers)) ||
                     set(w, payload, "elapsed_ms", w->integer(w, occ->elapsed_ms));
        json_decref(workers);
        if (failed)
            goto fail;
    }
    if (occ->type == FORKSAFE_PRE_FORK && occ->hazards) {
        /* Built once per fork, in the master: any writer takes it as
         * JSON, as it takes the settings. */
        json_t *hazards = forksafe__hazards_json(occ->hazards);
        int failed = !hazards || set(w, payload, "hazards", w->shared(w, hazards));
        json_decref(hazards);
        if (failed)
            goto fail;
    }
    return payload;
fail:
    w->release(w, payload);
    return NULL;
}

/* The jansson writer. */

static void *json_writer_object(const forksafe__payload_writer *w)
{
    (void)w;
    return json_object();
}

static int json_writer_set(const forksafe__payload_writer *w, void *object, const char *key,
                           void *value)
{
    (void)w;
    return json_object_set_new(object, key, value);
}

static void *json_writer_string(const forksafe__payload_writer *w, const char *text)
{
    (void)w;
    return json_string(text);
}

static void *json_writer_integer(const forksafe__payload_writer *w, long long value)
{
    (void)w;
    return json_integer(value);
}

static void *json_writer_real(const forksafe__payload_writer *w, double value)
{
    (void)w;
    return json_real(value);
}

static void *json_writer_shared(const forksafe__payload_writer *w, const json_t *value)
{
    (void)w;
    return value ? json_incref((json_t *)value) : json_object();
}

static void json_writer_release(const forksafe__payload_writer *w, void *object)
{
    (void)w;
    json_decref(object);
}

static const forksafe__payload_writer json_writer = {
    json_writer_object, json_writer_set,    json_writer_string, json_writer_integer,
    json_writer_real,   json_writer_shared, json_writer_release};

static json_t *payload_at(const forksafe__context *ctx, const forksafe__occurrence *occ,
                          double time)
{
    return forksafe__payload_write(&json_writer, ctx, occ, time);
}

json_t *forksafe__payload_new(const forksafe__context *ctx, const forksafe__occurrence *occ)
{
    return payload_at(ctx, occ, forksafe__realtime_seconds());
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

FORKSAFE__CHILD_RUNS FORKSAFE_EXPORT pid_t forksafe_event_pid(const forksafe_event *ev)
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
    mutable_ev->payload =
        payload_at(ev->ctx, ev->occ, ev->time > 0 ? ev->time : forksafe__realtime_seconds());
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
