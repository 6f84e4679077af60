/*
 * subscribe.c - parsing subscriptions: the `forksafe-subscribe` option
 * ("EVENT[,EVENT...] [OPTION...] HANDLER") and the [forksafe] section of
 * the ini file (one key per event, one "[OPTION...] HANDLER" per line).
 *
 * Only the syntax and what can be known without running anything is
 * checked here; handlers are resolved later by forksafe__context_seal.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forksafe_internal.h"

#define ALL_EVENTS     ((1u << FORKSAFE_EVENT_COUNT) - 1)
#define ALL_KINDS      ((1u << FORKSAFE__PROCESS_KIND_COUNT) - 1)
#define KIND_BIT(kind) (1u << (kind))
#define CHILD_KINDS \
    (KIND_BIT(FORKSAFE__WORKER) | KIND_BIT(FORKSAFE__MULE) | KIND_BIT(FORKSAFE__SPOOLER))

/* Longest handler label in logs; longer specs are cut with "...". */
#define NAME_MAX_LENGTH 60

/* What the parser collected before the subscription is appended. */
typedef struct parsed {
    uint32_t events;
    int star; /* events given as "*": filters narrow it silently */
    uint32_t kinds;
    int id;
    int once;
    int on_error;
    const char *handler; /* borrowed, up to handler_length */
    size_t handler_length;
    const forksafe__backend *backend;
} parsed;

/* The kinds of process each event can occur in.  A filter that
 * excludes all of them is a mistake we can report at start-up. */
static uint32_t event_kinds(int event)
{
    switch (event) {
    case FORKSAFE_POST_FORK:
    case FORKSAFE_WORKER_EXIT:
        return CHILD_KINDS;
    case FORKSAFE_WORKER_READY:
        return KIND_BIT(FORKSAFE__WORKER);
    default: /* master-start, pre-fork, post-fork-parent, child-death, master-exit,
              generation-ready */
        return KIND_BIT(FORKSAFE__MASTER);
    }
}

/* "workers", "the master", "workers, mules and spoolers". */
static void kinds_phrase(uint32_t kinds, char *buf, size_t size)
{
    static const char *const plural[FORKSAFE__PROCESS_KIND_COUNT] = {"the master", "workers",
                                                                     "mules", "spoolers"};
    int i, count = 0, seen = 0;
    size_t used = 0;

    buf[0] = '\0';
    for (i = 0; i < FORKSAFE__PROCESS_KIND_COUNT; i++)
        count += !!(kinds & KIND_BIT(i));
    for (i = 0; i < FORKSAFE__PROCESS_KIND_COUNT && used < size; i++) {
        if (!(kinds & KIND_BIT(i)))
            continue;
        seen++;
        used += snprintf(buf + used, size - used, "%s%s",
                         seen == 1 ? "" : (seen == count ? " and " : ", "), plural[i]);
    }
}

/* ------------------------------------------------------------ suggestions */

static void event_list(char *buf, size_t size)
{
    size_t used = 0;
    int event;

    buf[0] = '\0';
    for (event = 0; event < FORKSAFE_EVENT_COUNT && used < size; event++)
        used += snprintf(buf + used, size - used, "%s, ", forksafe_event_type_name(event));
    if (used < size)
        snprintf(buf + used, size - used, "or * for all");
}

static void backend_list(const forksafe__context *ctx, char *buf, size_t size)
{
    size_t used = 0, i;

    buf[0] = '\0';
    for (i = 0; i < ctx->backend_count && used < size; i++)
        used += snprintf(buf + used, size - used, "%s%s:", i ? ", " : "", ctx->backends[i]->kind);
}

/* ------------------------------------------------------------------ parser */

static const char *skip_space(const char *p)
{
    while (*p && isspace((unsigned char)*p))
        p++;
    return p;
}

static size_t token_length(const char *p)
{
    size_t n = 0;

    while (p[n] && !isspace((unsigned char)p[n]))
        n++;
    return n;
}

/* Parses "EVENT[,EVENT...]" (LENGTH bytes of TEXT) into OUT. */
static int parse_events(const char *text, size_t length, parsed *out, const char *source, int line,
                        forksafe__error *err)
{
    const char *p = text, *end = text + length;

    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t n = comma ? (size_t)(comma - p) : (size_t)(end - p);
        char name[64];
        int event;

        if (n == 0) {
            forksafe__error_set(err, source, line, "empty event name in '%.*s'", (int)length, text);
            return FORKSAFE__ESYNTAX;
        }
        snprintf(name, sizeof(name), "%.*s", (int)n, p);
        if (strcmp(name, "*") == 0) {
            out->events |= ALL_EVENTS;
            out->star = 1;
        }
        else if ((event = forksafe_event_type_from_name(name)) >= 0 && n < sizeof(name)) {
            out->events |= 1u << event;
        }
        else {
            const char *guess = forksafe__closest_event(name);
            char known[256];

            if (guess) {
                forksafe__error_set(err, source, line, "unknown event '%.*s' (did you mean '%s'?)",
                                    (int)n, p, guess);
            }
            else {
                event_list(known, sizeof(known));
                forksafe__error_set(err, source, line, "unknown event '%.*s'; events are %s",
                                    (int)n, p, known);
            }
            return FORKSAFE__ESYNTAX;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

static int parse_kinds(const char *value, size_t length, parsed *out, const char *source, int line,
                       forksafe__error *err)
{
    const char *p = value, *end = value + length;

    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t n = comma ? (size_t)(comma - p) : (size_t)(end - p);
        char name[16];
        int kind = -1;

        if (n > 0 && n < sizeof(name)) {
            snprintf(name, sizeof(name), "%.*s", (int)n, p);
            kind = forksafe__process_kind_from_name(name);
        }
        if (kind < 0) {
            forksafe__error_set(err, source, line,
                                "unknown process kind '%.*s' in kind=; use worker, mule, spooler "
                                "or master, separated by commas",
                                (int)n, p);
            return FORKSAFE__ESYNTAX;
        }
        out->kinds |= KIND_BIT(kind);
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static int parse_id(const char *value, size_t length, parsed *out, const char *source, int line,
                    forksafe__error *err)
{
    char digits[16];
    char *end;
    long id;

    if (length == 0 || length >= sizeof(digits) || !isdigit((unsigned char)value[0]))
        goto bad;
    snprintf(digits, sizeof(digits), "%.*s", (int)length, value);
    errno = 0;
    id = strtol(digits, &end, 10);
    if (*end || errno || id < 1 || id > INT_MAX)
        goto bad;
    out->id = (int)id;
    return 0;
bad:
    forksafe__error_set(err, source, line,
                        "bad id '%.*s': id= takes a process number from 1 (the master has no "
                        "id filter)",
                        (int)length, value);
    return FORKSAFE__ESYNTAX;
}

/* True if the token at P looks like "kind:..." - a handler, known or not. */
static int looks_like_handler(const char *p, size_t length)
{
    size_t n = 0;

    while (n < length && (isalnum((unsigned char)p[n]) || p[n] == '_' || p[n] == '-'))
        n++;
    return n > 0 && n < length && p[n] == ':';
}

/* Parses one option token.  Returns 0 or FORKSAFE__ESYNTAX. */
static int parse_option(const char *p, size_t length, parsed *out, unsigned *seen,
                        const char *source, int line, forksafe__error *err)
{
    static const char *const names[] = {"kind", "id", "once", "on-error"};
    const char *eq = memchr(p, '=', length);
    size_t name_length = eq ? (size_t)(eq - p) : length;
    const char *value = eq ? eq + 1 : NULL;
    size_t value_length = eq ? length - name_length - 1 : 0;
    unsigned option;
    char policy[16];

    for (option = 0; option < sizeof(names) / sizeof(names[0]); option++) {
        if (strlen(names[option]) == name_length && strncmp(names[option], p, name_length) == 0)
            break;
    }
    if (option == sizeof(names) / sizeof(names[0])) {
        if (eq)
            forksafe__error_set(err, source, line,
                                "unknown option '%.*s'; options are kind=, id=, once, on-error=",
                                (int)name_length, p);
        else
            forksafe__error_set(err, source, line,
                                "'%.*s' is neither an option (kind=, id=, once, on-error=) nor a "
                                "handler (KIND:SPEC, e.g. exec:/path/to/script)",
                                (int)length, p);
        return FORKSAFE__ESYNTAX;
    }
    if (*seen & (1u << option)) {
        forksafe__error_set(err, source, line, "option '%s' given twice", names[option]);
        return FORKSAFE__ESYNTAX;
    }
    *seen |= 1u << option;
    if (option == 2) {
        if (eq) {
            forksafe__error_set(err, source, line, "option 'once' takes no value");
            return FORKSAFE__ESYNTAX;
        }
        out->once = 1;
        return 0;
    }
    if (!eq) {
        forksafe__error_set(err, source, line, "option '%s' needs a value: %s=...", names[option],
                            names[option]);
        return FORKSAFE__ESYNTAX;
    }
    if (option == 0)
        return parse_kinds(value, value_length, out, source, line, err);
    if (option == 1)
        return parse_id(value, value_length, out, source, line, err);
    if (value_length < sizeof(policy))
        snprintf(policy, sizeof(policy), "%.*s", (int)value_length, value);
    else
        policy[0] = '\0';
    out->on_error = forksafe__on_error_from_name(policy);
    if (out->on_error < 0) {
        forksafe__error_set(err, source, line, "bad on-error '%.*s': use log, exit or fatal",
                            (int)value_length, value);
        return FORKSAFE__ESYNTAX;
    }
    return 0;
}

/* Rejects filters that leave an explicitly named event nowhere to run.
 * With "*" the filter just narrows the set, as the user obviously meant. */
static int check_reachable(parsed *out, const char *source, int line, forksafe__error *err)
{
    uint32_t kinds = out->kinds ? out->kinds : ALL_KINDS;
    int event;

    /* The master's id is 0, so an id filter leaves only child processes. */
    if (out->id)
        kinds &= ~KIND_BIT(FORKSAFE__MASTER);
    if (!kinds) {
        forksafe__error_set(
            err, source, line,
            "id=%d never matches the master, whose id is 0; drop id= or kind=master", out->id);
        return FORKSAFE__ESYNTAX;
    }
    if (out->star) {
        uint32_t reachable = 0;

        for (event = 0; event < FORKSAFE_EVENT_COUNT; event++) {
            if (event_kinds(event) & kinds)
                reachable |= 1u << event;
        }
        out->events &= reachable;
        return 0;
    }
    for (event = 0; event < FORKSAFE_EVENT_COUNT; event++) {
        char where[64], filter[64];

        if (!(out->events & (1u << event)) || (event_kinds(event) & kinds))
            continue;
        kinds_phrase(event_kinds(event), where, sizeof(where));
        kinds_phrase(kinds, filter, sizeof(filter));
        if (out->id && !(event_kinds(event) & ~KIND_BIT(FORKSAFE__MASTER)))
            forksafe__error_set(err, source, line,
                                "%s only runs in the master, whose id is 0, so id=%d never "
                                "matches it",
                                forksafe_event_type_name(event), out->id);
        else
            forksafe__error_set(err, source, line,
                                "%s only runs in %s, so it can never run in %s as filtered here",
                                forksafe_event_type_name(event), where, filter);
        return FORKSAFE__ESYNTAX;
    }
    return 0;
}

/* Parses "[OPTION...] HANDLER" at TEXT into OUT (whose events are set). */
static int parse_rest(const forksafe__context *ctx, const char *text, parsed *out,
                      const char *source, int line, forksafe__error *err)
{
    const char *p = skip_space(text);
    unsigned seen = 0;
    int rc;

    while (*p) {
        size_t n = token_length(p);

        if (looks_like_handler(p, n))
            break;
        rc = parse_option(p, n, out, &seen, source, line, err);
        if (rc)
            return rc;
        p = skip_space(p + n);
    }
    if (!*p) {
        forksafe__error_set(err, source, line,
                            "no handler: end the line with KIND:SPEC, e.g. exec:/path/to/script");
        return FORKSAFE__ESYNTAX;
    }
    {
        /* The handler is the rest of the line, inner spaces included. */
        size_t length = strlen(p);
        size_t kind_length = strcspn(p, ":");
        const char *spec;
        char kind[64], known[256];

        while (length > 0 && isspace((unsigned char)p[length - 1]))
            length--;
        snprintf(kind, sizeof(kind), "%.*s", (int)kind_length, p);
        out->backend = forksafe__context_backend(ctx, kind);
        if (!out->backend) {
            backend_list(ctx, known, sizeof(known));
            forksafe__error_set(err, source, line, "unknown handler kind '%s:'; known kinds are %s",
                                kind, known);
            return FORKSAFE__ESYNTAX;
        }
        spec = skip_space(p + kind_length + 1);
        if (spec >= p + length) {
            forksafe__error_set(err, source, line, "empty handler '%s:': say what to run after it",
                                kind);
            return FORKSAFE__ESYNTAX;
        }
        out->handler = p;
        out->handler_length = length;
    }
    return check_reachable(out, source, line, err);
}

/* The label used in logs, stats and errors: the spec with URL passwords
 * redacted - before it is cut, or a cut through the '@' would hide the
 * password from the redactor - then cut to NAME_MAX_LENGTH bytes, never
 * inside a UTF-8 sequence. */
static char *short_name(const char *spec)
{
    char *name = forksafe__redact("handler", spec);
    size_t length;

    if (!name || strlen(name) <= NAME_MAX_LENGTH)
        return name;
    length = NAME_MAX_LENGTH - 3;
    while (length > 0 && ((unsigned char)name[length] & 0xc0) == 0x80)
        length--;
    memcpy(name + length, "...", 4);
    return name;
}

static int append(forksafe__context *ctx, const parsed *in, const char *source, int line,
                  forksafe__error *err)
{
    forksafe__subscription sub = {0}, *grown;

    sub.events = in->events;
    sub.kinds = in->kinds;
    sub.id = in->id;
    sub.once = in->once;
    sub.on_error = in->on_error;
    sub.backend = in->backend;
    sub.line = line;
    sub.index = (unsigned)ctx->subscription_count;
    sub.spec = forksafe__strndup(in->handler, in->handler_length);
    sub.name = sub.spec ? short_name(sub.spec) : NULL;
    sub.source = forksafe__strdup(source);
    grown = NULL;
    if (sub.spec && sub.name && sub.source)
        grown =
            forksafe__realloc(ctx->subscriptions, (ctx->subscription_count + 1) * sizeof(*grown));
    if (!grown) {
        forksafe__free(sub.spec);
        forksafe__free(sub.name);
        forksafe__free(sub.source);
        forksafe__error_set(err, source, line, "out of memory");
        return FORKSAFE__ENOMEM;
    }
    ctx->subscriptions = grown;
    ctx->subscriptions[ctx->subscription_count++] = sub;
    return 0;
}

static int refuse_after_seal(const forksafe__context *ctx, const char *source, int line,
                             forksafe__error *err)
{
    if (!ctx->sealed)
        return 0;
    /* The once flags and resolved handles are sized at seal. */
    forksafe__error_set(err, source, line, "subscriptions cannot be added after start-up");
    return FORKSAFE__EINVAL;
}

int forksafe__subscribe(forksafe__context *ctx, const char *text, const char *source, int line,
                        forksafe__error *err)
{
    parsed out = {0};
    const char *p = skip_space(text);
    size_t n = token_length(p);
    int rc;

    if (!source)
        source = "forksafe-subscribe";
    rc = refuse_after_seal(ctx, source, line, err);
    if (rc)
        return rc;
    if (n == 0) {
        forksafe__error_set(err, source, line,
                            "empty subscription: expected EVENT[,EVENT...] [OPTION...] KIND:SPEC");
        return FORKSAFE__ESYNTAX;
    }
    if (looks_like_handler(p, n)) {
        forksafe__error_set(err, source, line,
                            "no event before the handler '%.*s': expected EVENT[,EVENT...] "
                            "[OPTION...] KIND:SPEC",
                            (int)n, p);
        return FORKSAFE__ESYNTAX;
    }
    if (text[forksafe__utf8_invalid_offset(text)]) {
        /* The spec is shown in logs and in the stats JSON, which must be
         * text; the [forksafe] section is held to the same rule by the ini
         * reader. */
        forksafe__error_set(err, source, line,
                            "byte 0x%02x (byte %zu) of the subscription is not valid UTF-8",
                            (unsigned char)text[forksafe__utf8_invalid_offset(text)],
                            forksafe__utf8_invalid_offset(text) + 1);
        return FORKSAFE__ESYNTAX;
    }
    out.on_error = FORKSAFE__ON_ERROR_INHERIT;
    rc = parse_events(p, n, &out, source, line, err);
    if (!rc)
        rc = parse_rest(ctx, p + n, &out, source, line, err);
    if (!rc)
        rc = append(ctx, &out, source, line, err);
    return rc;
}

/* ------------------------------------------------------------- [forksafe] */

/* Appends the subscriptions of one [forksafe] entry.  The Nth line of the
 * value is on the Nth non-comment line after the key: exact unless
 * interpolation brought in extra newlines, in which case the error points a
 * little too low - near enough for a human, and the message quotes the
 * handler. */
static int subscribe_entry(forksafe__context *ctx, const forksafe__ini *ini,
                           forksafe__defaults *defaults, const forksafe__ini_section *section,
                           const forksafe__entry *entry, forksafe__error *err)
{
    const forksafe__scope scope = {defaults, section};
    const char *source = ini->path ? ini->path : "[forksafe]";
    parsed events = {0};
    char *value = NULL;
    const char *p;
    int rc, offset = 0;

    events.on_error = FORKSAFE__ON_ERROR_INHERIT;
    rc = parse_events(entry->key, strlen(entry->key), &events, source, entry->line, err);
    if (rc)
        return rc;
    /* The defaults are built on the section's first key, once for all of
     * them, after its events (a bad event name is the error reported). */
    if (!defaults->ini && (rc = forksafe__defaults_open(defaults, ini, err)) != 0)
        return rc;
    rc = forksafe__interpolate(&scope, entry, &value, err);
    if (rc == FORKSAFE__ENOMEM)
        forksafe__error_set(err, ini->path, entry->line, "%s", forksafe__strerror(rc));
    if (rc)
        return rc;
    for (p = value; *p; offset++) {
        size_t length = strcspn(p, "\n");
        const char *start = skip_space(p);
        parsed out = events;
        int where = forksafe__ini_value_line(ini, entry->line, offset);
        char *line_text;

        if (start < p + length) {
            line_text = forksafe__strndup(p, length);
            if (!line_text) {
                forksafe__error_set(err, source, where, "out of memory");
                rc = FORKSAFE__ENOMEM;
                break;
            }
            rc = parse_rest(ctx, line_text, &out, source, where, err);
            if (!rc)
                rc = append(ctx, &out, source, where, err);
            forksafe__free(line_text);
            if (rc)
                break;
        }
        p += length;
        if (*p == '\n')
            p++;
    }
    forksafe__free(value);
    return rc;
}

int forksafe__subscribe_ini(forksafe__context *ctx, const forksafe__ini *ini, forksafe__error *err)
{
    const forksafe__ini_section *section = forksafe__ini_find(ini, "forksafe");
    forksafe__defaults defaults = {0};
    size_t i;
    int rc;

    if (!section)
        return 0;
    rc = refuse_after_seal(ctx, ini->path, section->line, err);
    if (rc)
        return rc;
    rc = forksafe__ini_check(ini, (const char *const[]){"forksafe", NULL}, err);
    if (rc)
        return rc;
    for (i = 0; i < section->entries.count; i++) {
        rc = subscribe_entry(ctx, ini, &defaults, section, &section->entries.entries[i], err);
        if (rc)
            break;
    }
    forksafe__defaults_close(&defaults);
    return rc;
}
