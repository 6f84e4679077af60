/*
 * metrics.c - the shared counters, and the memory of each process of the
 * instance, in Prometheus' text exposition format (version 0.0.4): what a
 * scraper of /metrics reads.
 *
 * Memory comes from /proc/PID/smaps_rollup: a forked worker starts with
 * every page shared with the master and privatises each page it (or its
 * garbage collector, or its allocator) writes, so private bytes growing
 * while shared bytes shrink is copy-on-write eroding what preloading saved.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forksafe_internal.h"

/* The text being built; `failed` once an allocation failed (every later
 * append is then skipped, and the caller gets NULL). */
typedef struct metrics_out {
    char *text;
    size_t length;
    size_t capacity;
    int failed;
} metrics_out;

static void append(metrics_out *out, const char *more, size_t length)
{
    if (!out->failed &&
        forksafe__text_append(&out->text, &out->length, &out->capacity, more, length) != 0)
        out->failed = 1;
}

__attribute__((format(printf, 2, 3))) static void emit(metrics_out *out, const char *format, ...)
{
    char line[256];
    va_list args;
    int length;

    va_start(args, format);
    length = vsnprintf(line, sizeof(line), format, args);
    va_end(args);
    /* Every format here is a name and numbers: far shorter than LINE. */
    if (length < 0 || (size_t)length >= sizeof(line)) {
        out->failed = 1;
        return;
    }
    append(out, line, (size_t)length);
}

int forksafe__metrics_label_append(char **text, size_t *length, size_t *capacity, const char *value)
{
    const char *start = value, *p;

    for (p = value; *p; p++) {
        const char *escaped = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;

        if (!escaped)
            continue;
        if (forksafe__text_append(text, length, capacity, start, (size_t)(p - start)) != 0 ||
            forksafe__text_append(text, length, capacity, escaped, 2) != 0)
            return FORKSAFE__ENOMEM;
        start = p + 1;
    }
    return forksafe__text_append(text, length, capacity, start, (size_t)(p - start));
}

/* NAME="VALUE" with VALUE escaped, after a comma unless FIRST. */
static void label(metrics_out *out, const char *name, const char *value, int first)
{
    if (!first)
        append(out, ",", 1);
    append(out, name, strlen(name));
    append(out, "=\"", 2);
    if (!out->failed &&
        forksafe__metrics_label_append(&out->text, &out->length, &out->capacity, value) != 0)
        out->failed = 1;
    append(out, "\"", 1);
}

static void family(metrics_out *out, const char *name, const char *type, const char *help)
{
    emit(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One value from smaps_rollup's "Name:   123 kB" lines, in bytes. */
static int64_t field_bytes(const char *text, const char *name)
{
    size_t length = strlen(name);
    const char *line = text;

    while (line && *line) {
        if (strncmp(line, name, length) == 0 && line[length] == ':')
            return (int64_t)strtoll(line + length + 1, NULL, 10) * 1024;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

int forksafe__memory_read(pid_t pid, forksafe__memory *memory)
{
    char path[64], text[4096];
    size_t used = 0;
    ssize_t got;
    int fd, saved;

    snprintf(path, sizeof(path), "/proc/%ld/smaps_rollup", (long)(pid > 0 ? pid : getpid()));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    while (used < sizeof(text) - 1) {
        got = read(fd, text + used, sizeof(text) - 1 - used);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        used += (size_t)got;
    }
    saved = errno;
    close(fd);
    text[used] = '\0';
    memory->rss = field_bytes(text, "Rss");
    memory->pss = field_bytes(text, "Pss");
    memory->shared = field_bytes(text, "Shared_Clean") + field_bytes(text, "Shared_Dirty");
    memory->private_bytes = field_bytes(text, "Private_Clean") + field_bytes(text, "Private_Dirty");
    /* An exited process's file reads empty: no numbers is no process. */
    if (memory->rss < 0 || memory->pss < 0) {
        errno = used == 0 ? saved : EINVAL;
        return -1;
    }
    return 0;
}

static int64_t load(const int64_t *counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

static void event_family(metrics_out *out, const forksafe__context *ctx, const char *name,
                         const char *type, const char *help, size_t offset, int seconds)
{
    int event;

    family(out, name, type, help);
    for (event = 0; event < FORKSAFE_EVENT_COUNT; event++) {
        const char *counters = (const char *)&ctx->stats->events[event];
        int64_t value = load((const int64_t *)(const void *)(counters + offset));

        emit(out, "%s{event=\"%s\"} ", name, forksafe_event_type_name((forksafe_event_type)event));
        if (seconds)
            emit(out, "%.6f\n", (double)value / 1e6);
        else
            emit(out, "%lld\n", (long long)value);
    }
}

/* The buckets are counted one add each; a reader sums them itself so that
 * every bucket, +Inf and _count agree even while handlers run. */
static void duration_histogram(metrics_out *out, const forksafe__context *ctx)
{
    static const int64_t bounds[] = FORKSAFE__DURATION_BOUNDS_US;
    const char *name = "forksafe_handler_duration_seconds";
    int event, i;

    family(out, name, "histogram", "How long handler runs took, per event.");
    for (event = 0; event < FORKSAFE_EVENT_COUNT; event++) {
        const forksafe__event_stats *counters = &ctx->stats->events[event];
        const char *event_name = forksafe_event_type_name((forksafe_event_type)event);
        int64_t total = 0;

        for (i = 0; i < FORKSAFE__DURATION_BUCKETS; i++) {
            total += load(&counters->duration_buckets[i]);
            if (i < (int)(sizeof(bounds) / sizeof(bounds[0])))
                emit(out, "%s_bucket{event=\"%s\",le=\"%g\"} %lld\n", name, event_name,
                     (double)bounds[i] / 1e6, (long long)total);
            else
                emit(out, "%s_bucket{event=\"%s\",le=\"+Inf\"} %lld\n", name, event_name,
                     (long long)total);
        }
        emit(out, "%s_sum{event=\"%s\"} %.6f\n", name, event_name,
             (double)load(&counters->duration_sum_us) / 1e6);
        emit(out, "%s_count{event=\"%s\"} %lld\n", name, event_name, (long long)total);
    }
}

static void hazard_families(metrics_out *out, const forksafe__hazard_stats *hazards)
{
    family(out, "forksafe_hazard_forks_inspected_total", "counter",
           "Forks whose child's inheritance (threads, connected sockets) was looked at.");
    emit(out, "forksafe_hazard_forks_inspected_total %lld\n",
         (long long)load(&hazards->forks_looked));
    family(out, "forksafe_hazard_forks_total", "counter",
           "Forks that found a hazard no allow rule covers (refused under hazards = fail).");
    emit(out, "forksafe_hazard_forks_total %lld\n", (long long)load(&hazards->forks_with_hazards));
    family(out, "forksafe_hazards_last", "gauge",
           "Hazards the last fork found, allowed by a rule or not.");
    emit(out, "forksafe_hazards_last{allowed=\"false\"} %lld\n", (long long)load(&hazards->last));
    emit(out, "forksafe_hazards_last{allowed=\"true\"} %lld\n",
         (long long)load(&hazards->last_allowed));
}

/* index="N",handler="SPEC" of subscription SUBSCRIPTION (-1: the
 * listeners), its handler redacted as in the stats JSON. */
static void subscription_labels(metrics_out *out, const forksafe__context *ctx, int subscription)
{
    char number[24], *shown;

    snprintf(number, sizeof(number), "%d", subscription < 0 ? -1 : subscription + 1);
    label(out, "index", number, 1);
    if (subscription < 0) {
        label(out, "handler", "pyramid_forksafe", 0);
        return;
    }
    shown = forksafe__redact("handler", ctx->subscriptions[subscription].spec);
    if (!shown) {
        out->failed = 1;
        return;
    }
    label(out, "handler", shown, 0);
    forksafe__free(shown);
}

static void subscription_family(metrics_out *out, const forksafe__context *ctx)
{
    size_t i;

    family(out, "forksafe_subscription_info", "gauge",
           "The subscriptions, 1 each: their handler (secrets redacted) and where it was read.");
    for (i = 0; i < ctx->subscription_count; i++) {
        const forksafe__subscription *sub = &ctx->subscriptions[i];
        char number[24];

        append(out, "forksafe_subscription_info{", 27);
        subscription_labels(out, ctx, (int)i);
        label(out, "source", sub->source ? sub->source : "", 0);
        snprintf(number, sizeof(number), "%d", sub->line);
        label(out, "line", number, 0);
        append(out, "} 1\n", 4);
    }
}

/* One counter per subscription; the listeners' row once they exist. */
static void subscription_counter(metrics_out *out, const forksafe__context *ctx, const char *name,
                                 const char *help, size_t field, int seconds)
{
    int slot;

    family(out, name, "counter", help);
    for (slot = 0; slot < FORKSAFE__SUBSCRIPTION_STATS && (size_t)slot <= ctx->subscription_count;
         slot++) {
        const forksafe__subscription_stats *counters = &ctx->stats->subscriptions[slot];
        int64_t value = load((const int64_t *)(const void *)((const char *)counters + field));

        if (slot == 0 && !ctx->listeners && load(&counters->runs) == 0)
            continue;
        emit(out, "%s{", name);
        subscription_labels(out, ctx, slot - 1);
        if (seconds)
            emit(out, "} %.6f\n", (double)value / 1e6);
        else
            emit(out, "} %lld\n", (long long)value);
    }
}

static void subscription_families(metrics_out *out, const forksafe__context *ctx)
{
    subscription_family(out, ctx);
    subscription_counter(out, ctx, "forksafe_subscription_runs_total",
                         "Runs of each subscription's handler, in any process.",
                         offsetof(forksafe__subscription_stats, runs), 0);
    subscription_counter(out, ctx, "forksafe_subscription_failures_total",
                         "Runs of each subscription's handler that failed.",
                         offsetof(forksafe__subscription_stats, failed), 0);
    subscription_counter(out, ctx, "forksafe_subscription_duration_seconds_total",
                         "Time each subscription's handler ran, added up.",
                         offsetof(forksafe__subscription_stats, duration_sum_us), 1);
}

static void memory_family(metrics_out *out, const char *name, const char *help,
                          const forksafe__process *processes, const forksafe__memory *memory,
                          size_t count, size_t field)
{
    size_t i;

    family(out, name, "gauge", help);
    for (i = 0; i < count; i++) {
        const char *kind = forksafe__process_kind_name(processes[i].kind);

        if (memory[i].rss < 0)
            continue;
        emit(out, "%s{kind=\"%s\",id=\"%d\"} %lld\n", name, kind ? kind : "?", processes[i].id,
             (long long)*(const int64_t *)(const void *)((const char *)&memory[i] + field));
    }
}

static void memory_families(metrics_out *out, const forksafe__process *processes, size_t count)
{
    forksafe__memory *memory = count ? forksafe__calloc(count, sizeof(*memory)) : NULL;
    size_t i;

    if (count && !memory) {
        out->failed = 1;
        return;
    }
    for (i = 0; i < count; i++) {
        if (processes[i].pid <= 0 || forksafe__memory_read(processes[i].pid, &memory[i]) != 0)
            memory[i].rss = -1; /* gone (or not ours to read): no sample */
    }
    memory_family(out, "forksafe_process_private_bytes",
                  "Memory only this process maps (copy-on-write pages it wrote), smaps_rollup.",
                  processes, memory, count, offsetof(forksafe__memory, private_bytes));
    memory_family(out, "forksafe_process_shared_bytes",
                  "Resident memory this process shares with others (with the master: preloaded).",
                  processes, memory, count, offsetof(forksafe__memory, shared));
    memory_family(out, "forksafe_process_pss_bytes",
                  "Proportional set size: private plus its share of shared pages.", processes,
                  memory, count, offsetof(forksafe__memory, pss));
    memory_family(out, "forksafe_process_resident_bytes", "Resident set size.", processes, memory,
                  count, offsetof(forksafe__memory, rss));
    family(out, "forksafe_process_pid", "gauge", "The process id of each process.");
    for (i = 0; i < count; i++) {
        const char *kind = forksafe__process_kind_name(processes[i].kind);

        if (memory[i].rss >= 0)
            emit(out, "forksafe_process_pid{kind=\"%s\",id=\"%d\"} %ld\n", kind ? kind : "?",
                 processes[i].id, (long)processes[i].pid);
    }
    forksafe__free(memory);
}

char *forksafe__metrics_text(const forksafe__context *ctx, const char *container, long generation,
                             const forksafe__process *processes, size_t count)
{
    metrics_out out = {NULL, 0, 0, 0};

    if (!ctx->stats)
        return NULL;
    family(&out, "forksafe_info", "gauge", "1, labelled with forksafe's version and its server.");
    append(&out, "forksafe_info{", 14);
    label(&out, "version", FORKSAFE_VERSION, 1);
    label(&out, "container", container ? container : "", 0);
    append(&out, "} 1\n", 4);
    family(&out, "forksafe_generation", "gauge", "Reloads of the server so far (0: none).");
    emit(&out, "forksafe_generation %ld\n", generation);
    event_family(&out, ctx, "forksafe_event_occurrences_total", "counter",
                 "Occurrences of each event in any process, handled or not.",
                 offsetof(forksafe__event_stats, occurred), 0);
    event_family(&out, ctx, "forksafe_handler_runs_total", "counter",
                 "Handler runs per event (a pyramid_forksafe listener call counts as one).",
                 offsetof(forksafe__event_stats, handlers_run), 0);
    event_family(&out, ctx, "forksafe_handler_failures_total", "counter",
                 "Handler runs that failed, per event.", offsetof(forksafe__event_stats, failed),
                 0);
    duration_histogram(&out, ctx);
    event_family(&out, ctx, "forksafe_handler_last_duration_seconds", "gauge",
                 "The latest handler run of each event.",
                 offsetof(forksafe__event_stats, last_duration_us), 1);
    event_family(&out, ctx, "forksafe_handler_max_duration_seconds", "gauge",
                 "The slowest handler run of each event.",
                 offsetof(forksafe__event_stats, max_duration_us), 1);
    hazard_families(&out, &ctx->stats->hazards);
    subscription_families(&out, ctx);
    memory_families(&out, processes, count);
    if (out.failed || !out.text) {
        forksafe__free(out.text);
        return NULL;
    }
    return out.text;
}
