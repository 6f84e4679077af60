/*
 * config.c - forksafe's uWSGI options: the table, their types and bounds,
 * where each was written, and where the settings come from.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "glue.h"

/* ---------------------------------------------------------------- the table */

struct uwsgi_option glue_options_table[] = {
    {"forksafe-subscribe", required_argument, 0,
     "subscribe a handler to events: EVENT[,EVENT...] [OPTION...] HANDLER",
     uwsgi_opt_add_string_list, &glue.options.subscribe, 0},
    {"forksafe-settings", required_argument, 0,
     "settings file for the event payload: PATH[#SECTION] (default: the paste file's app:main)",
     uwsgi_opt_set_str, &glue.options.settings, 0},
    {"forksafe-set", required_argument, 0, "override one setting: KEY=VALUE",
     uwsgi_opt_add_string_list, &glue.options.set, 0},
    {"forksafe-on-error", required_argument, 0,
     "what a failed handler does: log (default), exit (the process), fatal (the instance)",
     uwsgi_opt_set_str, &glue.options.on_error, 0},
    {"forksafe-timeout", required_argument, 0,
     "seconds an exec handler may run before it is killed (default 30)", uwsgi_opt_set_str,
     &glue.options.timeout, 0},
    {"forksafe-check", no_argument, 0,
     "print the resolved subscriptions and settings, then exit 0 if valid, 1 if not",
     uwsgi_opt_true, &glue.options.check, 0},
    {"forksafe-stats", required_argument, 0,
     "serve counters and the recent dispatch history as JSON on ADDRESS (unix path or "
     "HOST:PORT), like uWSGI's stats server",
     uwsgi_opt_set_str, &glue.options.stats, 0},
    {"forksafe-metrics", required_argument, 0,
     "serve the counters and each process's memory to Prometheus over HTTP (GET /metrics) on "
     "ADDRESS (HOST:PORT or unix path)",
     uwsgi_opt_set_str, &glue.options.metrics, 0},
    {"forksafe-history", required_argument, 0,
     "how many handler runs the dispatch history keeps (default 128, 0: none)", uwsgi_opt_set_str,
     &glue.options.history, 0},
    {"forksafe-verbose", no_argument, 0, "log every dispatch with its duration", uwsgi_opt_true,
     &glue.options.verbose, 0},
    {"forksafe-hazards", required_argument, 0,
     "what a child would inherit and must not share (a connection, a thread): warn (default), "
     "fail (the master refuses to fork), off",
     uwsgi_opt_set_str, &glue.options.hazards, 0},
    {"forksafe-hazard-allow", required_argument, 0,
     "a fork hazard not to warn about: thread:GLOB, tcp:HOST:PORT, unix:GLOB (repeatable)",
     uwsgi_opt_add_string_list, &glue.options.hazard_allow, 0},
    {"forksafe-python-atfork", required_argument, 0,
     "give every worker, mule and spooler fork what os.fork() does: os.register_at_fork "
     "handlers, the GIL and the import lock (true, the default with the python plugin; false)",
     uwsgi_opt_set_str, &glue.options.python_atfork, 0},
    {"forksafe-fast-respawn", required_argument, 0,
     "wake the master the moment a worker, mule or spooler that finished starting dies, so "
     "uWSGI replaces it at once instead of at its next cycle (true, the default; false)",
     uwsgi_opt_set_str, &glue.options.fast_respawn, 0},
    {0, 0, 0, 0, 0, 0, 0},
};

/* ---------------------------------------------------------------- errors */

void glue_die(const forksafe__error *err)
{
    char text[1200];

    forksafe__error_format(err, text, sizeof(text));
    uwsgi_log("[forksafe] %s\n", text);
    if (glue.options.check)
        uwsgi_log("[forksafe] configuration is NOT valid\n");
    exit(1);
}

/* ------------------------------------------------- locating directives */

/* How well line TEXT of a uWSGI ini matches "NAME = VALUE": 3 exactly, 2
 * when VALUE is part of the written value (uWSGI expands %p, %d, ... before
 * forksafe sees it), 1 for the key alone, 0 for another key, a comment or a
 * section header. */
static int directive_match(char *text, const char *name, const char *value)
{
    char *key = text, *equals, *end;

    while (*key == ' ' || *key == '\t')
        key++;
    if (*key == ';' || *key == '#' || *key == '[' || !(equals = strchr(key, '=')))
        return 0;
    for (end = equals; end > key && (end[-1] == ' ' || end[-1] == '\t'); end--)
        ;
    if ((size_t)(end - key) != strlen(name) || strncmp(key, name, (size_t)(end - key)) != 0)
        return 0;
    for (text = equals + 1; *text == ' ' || *text == '\t'; text++)
        ;
    for (end = text + strlen(text); end > text && isspace((unsigned char)end[-1]); end--)
        ;
    *end = '\0';
    if (strcmp(text, value) == 0)
        return 3;
    return strstr(text, value) || strstr(value, text) ? 2 : 1;
}

/* uWSGI does not keep the file and line an option came from.  Errors must
 * name them, so look the directive up in the [uwsgi] section (or the
 * section named after "file.ini:") of the ini files uWSGI was given:
 * comments are skipped, and the line whose value matches best wins. */
int glue_locate_directive(const char *name, const char *value, char *file, size_t file_size)
{
    int i, best = 0, best_score = 0;

    for (i = 0; i < uwsgi.exported_opts_cnt; i++) {
        struct uwsgi_opt *opt = uwsgi.exported_opts[i];
        char path[PATH_MAX];
        const char *section = "uwsgi";
        FILE *stream;
        char *line = NULL;
        size_t capacity = 0;
        int number = 0, inside = 0;

        if (!opt->key || !opt->value || strcmp(opt->key, "ini") != 0)
            continue;
        snprintf(path, sizeof(path), "%s", opt->value);
        /* "file.ini:section" */
        {
            char *colon = strrchr(path, ':');
            if (colon && access(path, R_OK) != 0) {
                *colon = '\0';
                section = opt->value + (colon - path) + 1;
            }
        }
        stream = fopen(path, "r");
        if (!stream)
            continue;
        while (getline(&line, &capacity, stream) > 0) {
            char *header = line;
            int score;

            number++;
            while (*header == ' ' || *header == '\t')
                header++;
            if (*header == '[') {
                char *close = strchr(header, ']');
                inside = close && (size_t)(close - header - 1) == strlen(section) &&
                         strncmp(header + 1, section, strlen(section)) == 0;
                continue;
            }
            if (!inside || (score = directive_match(line, name, value)) <= best_score)
                continue;
            best_score = score;
            best = number;
            snprintf(file, file_size, "%s", path);
            if (score == 3)
                break;
        }
        free(line);
        fclose(stream);
        if (best_score == 3)
            break;
    }
    if (best > 0)
        return best;
    snprintf(file, file_size, "%s (option)", name);
    return 0;
}

/* An error about a whole settings file (missing, unreadable, no such
 * section) has no line of its own: it belongs to the directive that named
 * the file. */
static void die_with_settings_error(forksafe__error *err, const char *directive, const char *value)
{
    char file[PATH_MAX], text[sizeof(err->source) + sizeof(err->text) + 2];
    int line;

    if (err->line == 0 &&
        (line = glue_locate_directive(directive, value, file, sizeof(file))) > 0) {
        snprintf(text, sizeof(text), "%s: %s", err->source, err->text);
        snprintf(err->source, sizeof(err->source), "%.*s", (int)sizeof(err->source) - 1, file);
        snprintf(err->text, sizeof(err->text), "%.*s", (int)sizeof(err->text) - 1, text);
        err->line = line;
    }
    glue_die(err);
}

/* ------------------------------------------------------ settings source */

/* The file PasteDeploy will read for the app, from the python plugin's
 * `paste` / `ini-paste` options: "config:PATH[#name]". */
static const char *paste_option(void)
{
    int i;

    for (i = 0; i < uwsgi.exported_opts_cnt; i++) {
        struct uwsgi_opt *opt = uwsgi.exported_opts[i];
        if (!opt->key || !opt->value)
            continue;
        if (strcmp(opt->key, "paste") == 0 || strcmp(opt->key, "ini-paste") == 0 ||
            strcmp(opt->key, "ini-paste-logged") == 0)
            return opt->value;
    }
    return NULL;
}

static const char *ini_option(void)
{
    int i;

    for (i = 0; i < uwsgi.exported_opts_cnt; i++) {
        struct uwsgi_opt *opt = uwsgi.exported_opts[i];
        if (opt->key && opt->value && strcmp(opt->key, "ini") == 0)
            return opt->value;
    }
    return NULL;
}

/* The file of a paste spec "config:PATH[#name]" (or a bare PATH). */
static void paste_file(const char *spec, char *path, size_t path_size)
{
    if (strncmp(spec, "config:", 7) == 0)
        spec += 7;
    snprintf(path, path_size, "%.*s", (int)forksafe__settings_path_length(spec), spec);
}

/* Reads the settings into the context, and into INI the file that may hold
 * a [forksafe] section (*HAVE_INI says whether there is one). */
static void load_settings(forksafe__ini *ini, int *have_ini)
{
    forksafe__error err = {0};
    char path[PATH_MAX];
    const char *paste = paste_option();

    *have_ini = 0;
    if (glue.options.settings) {
        if (forksafe__settings_load_file(&glue.context.settings, glue.options.settings, ini,
                                         &err) != 0)
            die_with_settings_error(&err, "forksafe-settings", glue.options.settings);
        glue.context.has_settings = 1;
        /* A JSON file (no section) has no [forksafe] section. */
        *have_ini = glue.context.settings.section != NULL;
    }
    else if (paste) {
        /* The settings loader finds the app section by PasteDeploy's own
         * rules (app:, application:, pipeline:, ...) and hands on the file
         * it read for [forksafe] and the whole-file check. */
        const char *spec = strncmp(paste, "config:", 7) == 0 ? paste + 7 : paste;
        if (forksafe__settings_load_file(&glue.context.settings, spec, ini, &err) != 0)
            die_with_settings_error(&err, "paste", paste);
        glue.context.has_settings = 1;
        *have_ini = 1;
    }
    else if (ini_option()) {
        char *colon;
        snprintf(path, sizeof(path), "%s", ini_option());
        colon = strrchr(path, ':');
        if (colon && access(path, R_OK) != 0)
            *colon = '\0';
        if (forksafe__ini_load(ini, path, &err) != 0)
            glue_die(&err);
        *have_ini = 1;
        if (forksafe__ini_find(ini, "app:main")) {
            if (forksafe__settings_from_ini(&glue.context.settings, ini, "app:main", &err) != 0)
                glue_die(&err);
            glue.context.has_settings = 1;
        }
    }

    /* PasteDeploy refuses a file with any ConfigParser problem, in any
     * section; say so now rather than when the app fails to load. */
    if (paste && *have_ini) {
        char paste_path[PATH_MAX];
        paste_file(paste, paste_path, sizeof(paste_path));
        if (strcmp(paste_path, ini->path ? ini->path : "") == 0 &&
            forksafe__ini_check(ini, NULL, &err) != 0) {
            size_t used = strlen(err.text);
            snprintf(err.text + used, sizeof(err.text) - used,
                     " (PasteDeploy will refuse this file: paste = %s)", paste);
            glue_die(&err);
        }
    }
}

/* ------------------------------------------------------------- typed options */

/* The options uWSGI stores as text and forksafe reads as values, each
 * with its bounds: read once the ini files can be searched for the line a
 * bad value came from. */
enum option_type { OPTION_POLICY, OPTION_HAZARDS, OPTION_SECONDS, OPTION_COUNT, OPTION_BOOL };

struct typed_option {
    const char *name;
    size_t text; /* offsetof(struct glue_options, ...) */
    enum option_type type;
    double min, max;  /* OPTION_SECONDS: min < value <= max; OPTION_COUNT: min <= value <= max */
    const char *unit; /* "a number of UNIT between MIN and MAX" */
};

static const struct typed_option typed_options[] = {
    {"forksafe-on-error", offsetof(struct glue_options, on_error), OPTION_POLICY, 0, 0, NULL},
    {"forksafe-timeout", offsetof(struct glue_options, timeout), OPTION_SECONDS, 0, 86400,
     "seconds"},
    {"forksafe-history", offsetof(struct glue_options, history), OPTION_COUNT, 0,
     FORKSAFE__HISTORY_MAX, "handler runs"},
    {"forksafe-hazards", offsetof(struct glue_options, hazards), OPTION_HAZARDS, 0, 0, NULL},
    {"forksafe-python-atfork", offsetof(struct glue_options, python_atfork), OPTION_BOOL, 0, 0,
     NULL},
    {"forksafe-fast-respawn", offsetof(struct glue_options, fast_respawn), OPTION_BOOL, 0, 0, NULL},
};

static const char *option_text(const struct typed_option *option)
{
    return *(char *const *)((const char *)&glue.options + option->text);
}

/* Parses TEXT as OPTION's type into *VALUE; 0, or -1 when out of bounds. */
static int parse_typed(const struct typed_option *option, const char *text, double *value)
{
    char *end = NULL;

    switch (option->type) {
    case OPTION_POLICY:
        *value = forksafe__on_error_from_name(text);
        return *value < 0 ? -1 : 0;
    case OPTION_HAZARDS:
        *value = forksafe__hazards_mode_from_name(text);
        return *value < 0 ? -1 : 0;
    case OPTION_BOOL:
        if (!strcasecmp(text, "true") || !strcasecmp(text, "yes") || !strcasecmp(text, "on") ||
            !strcmp(text, "1"))
            *value = 1;
        else if (!strcasecmp(text, "false") || !strcasecmp(text, "no") ||
                 !strcasecmp(text, "off") || !strcmp(text, "0"))
            *value = 0;
        else
            return -1;
        return 0;
    case OPTION_SECONDS:
        *value = strtod(text, &end);
        return !end || *end || end == text || !(*value > option->min) || *value > option->max ? -1
                                                                                              : 0;
    case OPTION_COUNT: {
        unsigned long count;
        errno = 0;
        count = strtoul(text, &end, 10);
        *value = (double)count;
        return errno || !end || *end || end == text || text[0] == '-' || *value < option->min ||
                       *value > option->max
                   ? -1
                   : 0;
    }
    }
    return -1;
}

static void die_with_bad_option(const struct typed_option *option, const char *text)
{
    forksafe__error err = {0};
    char file[PATH_MAX];
    int line = glue_locate_directive(option->name, text, file, sizeof(file));

    if (option->type == OPTION_POLICY)
        forksafe__error_set(&err, file, line, "%s must be log, exit or fatal, not '%s'",
                            option->name, text);
    else if (option->type == OPTION_HAZARDS)
        forksafe__error_set(&err, file, line, "%s must be warn, fail or off, not '%s'",
                            option->name, text);
    else if (option->type == OPTION_BOOL)
        forksafe__error_set(&err, file, line, "%s must be true or false, not '%s'", option->name,
                            text);
    else
        forksafe__error_set(&err, file, line,
                            "%s must be a number of %s between %.0f and %.0f, "
                            "not '%s'",
                            option->name, option->unit, option->min, option->max, text);
    glue_die(&err);
}

/* OPTION's value, or FALLBACK when it was not given. */
static double typed_value(const struct typed_option *option, double fallback)
{
    const char *text = option_text(option);
    double value;

    if (!text)
        return fallback;
    if (parse_typed(option, text, &value) != 0)
        die_with_bad_option(option, text);
    return value;
}

/* ------------------------------------------------------------ configure */

void glue_configure(void)
{
    forksafe__error err = {0};
    forksafe__ini ini = {0};
    int have_ini = 0;
    struct uwsgi_string_list *item;

    glue.context.on_error = (int)typed_value(&typed_options[0], glue.context.on_error);
    glue.context.timeout = typed_value(&typed_options[1], glue.context.timeout);
    glue.context.verbose = glue.options.verbose;
    if (forksafe__stats_setup(
            &glue.context, (unsigned)typed_value(&typed_options[2], FORKSAFE__HISTORY_DEFAULT)) !=
        0) {
        uwsgi_log("[forksafe] cannot map shared memory for the counters\n");
        exit(1);
    }
    glue.hazards.mode =
        (forksafe__hazards_mode)typed_value(&typed_options[3], FORKSAFE__HAZARDS_WARN);
    glue.python_atfork = (int)typed_value(&typed_options[4], 1);
    glue.fast_respawn = (int)typed_value(&typed_options[5], 1);
    for (item = glue.options.hazard_allow; item; item = item->next) {
        char file[PATH_MAX];
        int line = glue_locate_directive("forksafe-hazard-allow", item->value, file, sizeof(file));
        int rc = forksafe__hazard_watch_allow(&glue.hazards, item->value, file, line, &err);
        if (rc == FORKSAFE__ENOMEM)
            forksafe__error_set(&err, file, line, "out of memory");
        if (rc != 0)
            glue_die(&err);
    }
    load_settings(&ini, &have_ini);

    for (item = glue.options.set; item; item = item->next) {
        char file[PATH_MAX];
        int line = glue_locate_directive("forksafe-set", item->value, file, sizeof(file));
        /* Overrides alone make a settings map. */
        glue.context.has_settings = 1;
        if (forksafe__settings_override(&glue.context.settings, item->value, file, line, &err) != 0)
            glue_die(&err);
    }

    /* The [forksafe] section first, then the directives, in order. */
    if (have_ini && forksafe__subscribe_ini(&glue.context, &ini, &err) != 0)
        glue_die(&err);
    for (item = glue.options.subscribe; item; item = item->next) {
        char file[PATH_MAX];
        int line = glue_locate_directive("forksafe-subscribe", item->value, file, sizeof(file));
        if (forksafe__subscribe(&glue.context, item->value, file, line, &err) != 0)
            glue_die(&err);
    }
    forksafe__ini_free(&ini);
}
