/*
 * host.c - the host API of include/forksafe_host.h: the core driven by servers
 * other than uWSGI (pyramid_forksafe's gunicorn and Celery adapters, through
 * ctypes over libforksafe.so).  Same settings, same subscriptions, same
 * handler kinds and policy words as the uWSGI plugin; the server adapter
 * says what happened and acts on the returned policy.  On request the
 * host's dispatch also runs the `_forksafe` listeners, through the bridge
 * the uWSGI plugin uses (lib/python_bridge.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forksafe_host.h"
#include "forksafe_internal.h"
#include "hazard_watch.h"

struct forksafe_host {
    forksafe__context context;
    forksafe__hazard_watch hazards;
    int hazards_found;
    char *container;
    char *settings_json;
    char *stats_json;
    char *metrics_text;
};

/* One production.ini serves every server, and its [forksafe] section may
 * name uWSGI hook actions.  print: and log: (uWSGI's two names for "write
 * this line to the log") mean the same anywhere, so they do the same here:
 * the line goes to stderr, which gunicorn and Celery log.  Any other action
 * is accepted with a warning at start-up and does nothing, rather than
 * making the file unusable. */
static const char *printed_text(const char *spec)
{
    static const char *const actions[] = {"print:", "log:"};
    size_t i;

    for (i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
        if (strncmp(spec, actions[i], strlen(actions[i])) == 0)
            return spec + strlen(actions[i]);
    return NULL;
}

static int hook_resolve(forksafe__context *ctx, void *data, const char *spec, void **handle,
                        forksafe__error *err)
{
    const char *text = printed_text(spec);

    (void)data;
    (void)err;
    *handle = NULL;
    if (text) {
        *handle = forksafe__strdup(text);
        return *handle ? 0 : FORKSAFE__ENOMEM;
    }
    forksafe__log(ctx, FORKSAFE__LOG_WARNING,
                  "hook:%s is a uWSGI hook action: it does nothing under %s", spec, ctx->container);
    return 0;
}

static int hook_run(forksafe__context *ctx, void *data, void *handle, const forksafe_event *ev,
                    char *why, size_t why_size)
{
    (void)ctx;
    (void)data;
    (void)ev;
    (void)why;
    (void)why_size;
    if (handle) {
        fprintf(stderr, "%s\n", (const char *)handle);
        fflush(stderr);
    }
    return 0;
}

static void hook_release(void *data, void *handle)
{
    (void)data;
    forksafe__free(handle);
}

static forksafe__backend uwsgi_only_hook_backend = {
    .kind = "hook",
    .resolve = hook_resolve,
    .run = hook_run,
    .release = hook_release,
};

/* The host's levels are the core's, so a line passes through unchanged. */
_Static_assert((int)FORKSAFE_HOST_LOG_ERROR == (int)FORKSAFE__LOG_ERROR &&
                   (int)FORKSAFE_HOST_LOG_WARNING == (int)FORKSAFE__LOG_WARNING &&
                   (int)FORKSAFE_HOST_LOG_INFO == (int)FORKSAFE__LOG_INFO &&
                   (int)FORKSAFE_HOST_LOG_DEBUG == (int)FORKSAFE__LOG_DEBUG,
               "host log levels");

static void log_to_stderr(void *userdata, int level, const char *message)
{
    (void)userdata;
    (void)level;
    fprintf(stderr, "[forksafe] %s\n", message);
}

/* Settings and the [forksafe] section, from one read of the file. */
static int load_settings(forksafe_host *host, const char *spec, forksafe__error *err)
{
    forksafe__ini ini;
    int rc;

    rc = forksafe__settings_load_file(&host->context.settings, spec, &ini, err);
    if (rc != 0)
        return rc;
    host->context.has_settings = 1;
    /* A JSON file (no section) has no [forksafe] section. */
    if (host->context.settings.section)
        rc = forksafe__subscribe_ini(&host->context, &ini, err);
    forksafe__ini_free(&ini);
    return rc;
}

typedef int (*line_taker)(forksafe_host *host, const char *text, const char *source, int number,
                          forksafe__error *err);

/* Gives TAKE each line of LINES that is not blank, numbered from 1. */
static int each_line(forksafe_host *host, const char *lines, const char *source, line_taker take,
                     forksafe__error *err)
{
    const char *line = lines;
    int number = 0;

    while (line && *line) {
        size_t length = strcspn(line, "\n");
        char *text = forksafe__strndup(line, length);
        int rc = 0;

        number++;
        if (!text)
            return FORKSAFE__ENOMEM;
        if (text[strspn(text, " \t\r")] != '\0')
            rc = take(host, text, source, number, err);
        forksafe__free(text);
        if (rc != 0)
            return rc;
        line += length;
        if (*line == '\n')
            line++;
    }
    return 0;
}

static int subscribe_line(forksafe_host *host, const char *text, const char *source, int number,
                          forksafe__error *err)
{
    return forksafe__subscribe(&host->context, text, source, number, err);
}

/* A rule's error names no line: the adapters take the rules from a list
 * in code or a config file, whose line forksafe cannot know. */
static int allow_line(forksafe_host *host, const char *text, const char *source, int number,
                      forksafe__error *err)
{
    (void)number;
    return forksafe__hazard_watch_allow(&host->hazards, text, source, 0, err);
}

/* The config is the same in every version; the occurrence grew. */
static int host_version_known(int version)
{
    return version >= FORKSAFE_HOST_API_OLDEST && version <= FORKSAFE_HOST_API_VERSION;
}

FORKSAFE_EXPORT forksafe_host *forksafe_host_new(const forksafe_host_config *config, char *error,
                                                 size_t error_size)
{
    forksafe_host *host = NULL;
    forksafe__error err = {0};
    int rc = FORKSAFE__ENOMEM;

    if (error && error_size)
        error[0] = '\0';
    if (!config || !host_version_known(config->version)) {
        forksafe__error_set(&err, "forksafe", 0,
                            "this libforksafe speaks host API versions %d to %d, the caller %d",
                            FORKSAFE_HOST_API_OLDEST, FORKSAFE_HOST_API_VERSION,
                            config ? config->version : 0);
        rc = FORKSAFE__EINVAL;
        goto fail;
    }
    host = forksafe__calloc(1, sizeof(*host));
    if (!host)
        goto fail;
    host->container = forksafe__strdup(config->container ? config->container : "unknown");
    if (!host->container ||
        forksafe__context_init(&host->context, config->log ? config->log : log_to_stderr,
                               config->log ? config->log_data : NULL) != 0 ||
        forksafe__context_add_backend(&host->context, forksafe__python_backend()) != 0 ||
        forksafe__context_add_backend(&host->context, forksafe__recipe_backend()) != 0 ||
        forksafe__context_add_backend(&host->context, &uwsgi_only_hook_backend) != 0)
        goto fail;
    host->context.container = host->container;
    host->context.verbose = config->verbose;
    if (config->timeout > 0)
        host->context.timeout = config->timeout;
    if (config->on_error) {
        int policy = forksafe__on_error_from_name(config->on_error);
        if (policy < 0) {
            forksafe__error_set(&err, config->source ? config->source : "forksafe", 0,
                                "on-error must be log, exit or fatal, not '%s'", config->on_error);
            rc = FORKSAFE__EINVAL;
            goto fail;
        }
        host->context.on_error = policy;
    }
    host->hazards.mode = FORKSAFE__HAZARDS_WARN;
    if (config->hazards) {
        int mode = forksafe__hazards_mode_from_name(config->hazards);
        if (mode < 0) {
            forksafe__error_set(&err, config->source ? config->source : "forksafe", 0,
                                "hazards must be warn, fail or off, not '%s'", config->hazards);
            rc = FORKSAFE__EINVAL;
            goto fail;
        }
        host->hazards.mode = (forksafe__hazards_mode)mode;
    }
    if (config->hazard_allow &&
        (rc = each_line(host, config->hazard_allow, config->source ? config->source : "forksafe",
                        allow_line, &err)) != 0)
        goto fail;
    if (config->settings && (rc = load_settings(host, config->settings, &err)) != 0)
        goto fail;
    if (config->subscriptions &&
        (rc = each_line(host, config->subscriptions,
                        config->source ? config->source : "forksafe-subscribe", subscribe_line,
                        &err)) != 0)
        goto fail;
    if ((rc = forksafe__context_seal(&host->context, &err)) != 0)
        goto fail;
    return host;

fail:
    if (!err.set)
        forksafe__error_set(&err, "forksafe", 0, "%s", forksafe__strerror(rc));
    if (error && error_size)
        forksafe__error_format(&err, error, error_size);
    forksafe_host_free(host);
    return NULL;
}

/* A process of the host API as the core's; 0 when KIND is not a process kind. */
static int host_process(const forksafe_host_process *from, forksafe__process *to)
{
    int kind = from->kind ? forksafe__process_kind_from_name(from->kind) : -1;

    if (kind < 0)
        return -1;
    memset(to, 0, sizeof(*to));
    to->kind = kind;
    to->id = from->id;
    to->pid = from->pid;
    to->ppid = from->ppid;
    to->respawn = from->respawn;
    return 0;
}

FORKSAFE_EXPORT int forksafe_host_dispatch(forksafe_host *host,
                                           const forksafe_host_occurrence *occurrence)
{
    forksafe__occurrence occ;
    forksafe__process child;
    forksafe__ready_worker *workers = NULL;
    int type, rc;

    if (!host || !occurrence || !host_version_known(occurrence->version) || !occurrence->event ||
        (type = forksafe_event_type_from_name(occurrence->event)) < 0)
        return -1;
    memset(&occ, 0, sizeof(occ));
    if (host_process(&occurrence->self, &occ.self) != 0)
        return -1;
    occ.type = (forksafe_event_type)type;
    if (occ.self.pid <= 0)
        occ.self.pid = getpid();
    if (occ.self.ppid <= 0)
        occ.self.ppid = getppid();
    occ.generation = occurrence->generation;
    occ.reason = occurrence->reason;
    if (occurrence->child) {
        if (host_process(occurrence->child, &child) != 0)
            return -1;
        child.ppid = 0;
        occ.child = &child;
        occ.child_status_known = occurrence->child_status_known;
        occ.child_status = occurrence->child_status;
        occ.child_cause = occurrence->child_cause;
    }
    /* A version 1 struct ends before the generation-ready fields. */
    if (occurrence->version >= 2 && occ.type == FORKSAFE_GENERATION_READY) {
        int i, count = occurrence->worker_count;
        if (count < 0 || (count > 0 && !occurrence->workers))
            return -1;
        if (count > 0 && !(workers = forksafe__calloc((size_t)count, sizeof(*workers))))
            return -1;
        for (i = 0; i < count; i++) {
            workers[i].id = occurrence->workers[i].id;
            workers[i].pid = occurrence->workers[i].pid;
            workers[i].ms = occurrence->workers[i].ms;
        }
        occ.workers = workers;
        occ.worker_count = (size_t)count;
        occ.elapsed_ms = occurrence->elapsed_ms;
    }
    rc = forksafe__hazards_dispatch_pre_fork(&host->hazards, &host->context, &occ,
                                             &host->hazards_found);
    forksafe__free(workers);
    return rc;
}

FORKSAFE_EXPORT int forksafe_host_hazards(const forksafe_host *host)
{
    return host ? host->hazards_found : 0;
}

FORKSAFE_EXPORT int forksafe_host_python_bridge(forksafe_host *host)
{
    if (!host || forksafe__python_bridge_init(&host->context) != 0 || !host->context.listeners)
        return -1;
    return 0;
}

FORKSAFE_EXPORT const char *forksafe_host_stats_json(forksafe_host *host)
{
    json_t *object;
    char *text;

    if (!host)
        return NULL;
    object = forksafe__stats_json(&host->context);
    if (!object)
        return NULL;
    text = json_dumps(object, JSON_COMPACT);
    json_decref(object);
    if (!text)
        return NULL;
    free(host->stats_json);
    host->stats_json = text;
    return text;
}

FORKSAFE_EXPORT const char *forksafe_host_metrics_text(forksafe_host *host,
                                                       const forksafe_host_process *processes,
                                                       size_t count, int generation)
{
    forksafe__process *known;
    size_t i, used = 0;
    char *text;

    if (!host || (count && !processes))
        return NULL;
    known = count ? forksafe__calloc(count, sizeof(*known)) : NULL;
    if (count && !known)
        return NULL;
    /* A process of an unknown kind is left out, as one that is gone is. */
    for (i = 0; i < count; i++) {
        int kind = processes[i].kind ? forksafe__process_kind_from_name(processes[i].kind) : -1;

        if (kind < 0)
            continue;
        known[used].kind = kind;
        known[used].id = processes[i].id;
        known[used].pid = processes[i].pid > 0 ? processes[i].pid : getpid();
        used++;
    }
    text = forksafe__metrics_text(&host->context, host->container, generation, known, used);
    forksafe__free(known);
    if (!text)
        return NULL;
    forksafe__free(host->metrics_text);
    host->metrics_text = text;
    return text;
}

FORKSAFE_EXPORT const char *forksafe_host_settings_json(forksafe_host *host)
{
    json_t *object;

    if (!host)
        return NULL;
    if (host->settings_json)
        return host->settings_json;
    object = json_object();
    if (!object)
        return NULL;
    if (json_object_set_new(object, "settings",
                            host->context.settings_json ? json_incref(host->context.settings_json)
                                                        : json_object()) != 0 ||
        json_object_set_new(object, "global_settings",
                            host->context.global_settings_json
                                ? json_incref(host->context.global_settings_json)
                                : json_object()) != 0) {
        json_decref(object);
        return NULL;
    }
    host->settings_json = json_dumps(object, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(object);
    return host->settings_json;
}

FORKSAFE_EXPORT void forksafe_host_free(forksafe_host *host)
{
    if (!host)
        return;
    if (host->context.listeners)
        forksafe__python_bridge_forget(&host->context);
    forksafe__context_free(&host->context);
    forksafe__hazard_watch_free(&host->hazards);
    forksafe__free(host->container);
    free(host->settings_json);
    free(host->stats_json);
    forksafe__free(host->metrics_text);
    forksafe__free(host);
}
