/*
 * paste.c - the PasteDeploy resolver: the local_conf and global_conf that
 * loadapp() hands an application's factory, through use, set, get,
 * filter-with, pipelines and config: files.
 *
 * The reference is paste.deploy.loadwsgi (ConfigLoader.get_context and
 * _context_from_use) over configparser's BasicInterpolation
 * (interpolate.c).  What PasteDeploy decides by importing
 * Python code (which factory a `use = egg:` or `call:` names, whether a
 * `require`d distribution is installed) cannot be checked from C: such
 * references are accepted as written.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "forksafe_internal.h"

/* Python would recurse until RecursionError on a `use` cycle; stop sooner. */
#define MAX_USE_DEPTH 32

/* What PasteDeploy's LoaderContext carries: local_conf and global_conf. */
typedef struct context {
    forksafe__map local;
    forksafe__map global;
} context;

static int named_context(const forksafe__paste_loader *ld, int type, const char *name,
                         const forksafe__map *incoming, context *ctx, int depth, int line,
                         forksafe__error *err);

/* ---------------------------------------------------------------- context */

static void context_free(context *ctx)
{
    forksafe__map_clear(&ctx->local);
    forksafe__map_clear(&ctx->global);
}

/* Moves SOURCE into TARGET, which is freed first. */
static void context_move(context *target, context *source)
{
    context_free(target);
    *target = *source;
    memset(source, 0, sizeof(*source));
}

/* ------------------------------------------------------- PasteDeploy */

static int starts_with(const char *text, const char *prefix)
{
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

/* "set NAME" / "get NAME": NAME with Python's strip(). */
static char *stripped_copy(const char *text)
{
    const char *start = text, *end = text + strlen(text);

    forksafe__text_strip(&start, &end);
    return forksafe__strndup(start, (size_t)(end - start));
}

/* The loop of ConfigLoader.get_context over parser.options(section): the
 * section's keys, then the defaults the section does not override. */
typedef struct option_pass {
    forksafe__scope scope;
    context *ctx;
    forksafe__map additions; /* set NAME = ... */
    forksafe__map gets;      /* get NAME = GLOBALKEY */
} option_pass;

static int take_option(option_pass *pass, const forksafe__entry *option, forksafe__error *err)
{
    const char *key = option->key;
    int is_set = starts_with(key, "set "), is_get = starts_with(key, "get ");
    char *value, *name = NULL;
    int rc;

    /* A key that is also a default belongs to global_conf, not local_conf. */
    if (!is_set && !is_get && forksafe__map_find(&pass->scope.defaults->raw, key))
        return 0;
    if ((rc = forksafe__interpolate(&pass->scope, option, &value, err)) != 0)
        return rc;
    if (is_set || is_get) {
        name = stripped_copy(key + 4);
        if (!name) {
            forksafe__free(value);
            return FORKSAFE__ENOMEM;
        }
    }
    if (is_set) {
        rc = forksafe__map_put(&pass->additions, name, value, option->line);
        if (rc == 0)
            return forksafe__map_put_new(&pass->ctx->global, name, value, option->line);
        forksafe__free(name);
        forksafe__free(value);
        return rc;
    }
    if (is_get)
        return forksafe__map_put_new(&pass->gets, name, value, option->line);
    return forksafe__map_put_new(&pass->ctx->local, forksafe__strdup(key), value, option->line);
}

/* Removes KEY from T and returns its value (new string) in *VALUE, or
 * *VALUE = NULL if absent. */
static int map_pop(forksafe__map *t, const char *key, char **value, int *line)
{
    const forksafe__entry *entry = forksafe__map_find(t, key);

    *value = NULL;
    if (!entry)
        return 0;
    if (line)
        *line = entry->line;
    if (!(*value = forksafe__strdup(entry->value)))
        return FORKSAFE__ENOMEM;
    forksafe__map_remove(t, key);
    return 0;
}

/* Computes NAME's context only for the errors it may raise, as PasteDeploy
 * does for filter-with, next and pipeline members. */
static int check_named(const forksafe__paste_loader *ld, int type, const char *name,
                       const forksafe__map *global, int depth, int line, forksafe__error *err)
{
    context scratch;
    int rc;

    memset(&scratch, 0, sizeof(scratch));
    rc = named_context(ld, type, name, global, &scratch, depth, line, err);
    context_free(&scratch);
    return rc;
}

/* _context_from_use: the named context, updated with this section's
 * set-additions and local settings; __file__ stays this file's. */
static int use_context(const forksafe__paste_loader *ld, int type, context *ctx,
                       const forksafe__map *additions, int depth, forksafe__error *err)
{
    context nested;
    const char *file;
    char *use;
    int line = 0;
    int rc;

    if ((rc = map_pop(&ctx->local, "use", &use, &line)) != 0)
        return rc;
    memset(&nested, 0, sizeof(nested));
    rc = named_context(ld, type, use, &ctx->global, &nested, depth, line, err);
    if (rc == 0)
        rc = forksafe__map_update(&nested.global, additions);
    if (rc == 0 && nested.local.count == 0) {
        /* The usual `use = call:` or `egg:`: this section's settings are the
         * whole result, so move them rather than copy thousands of keys. */
        forksafe__map_clear(&nested.local);
        nested.local = ctx->local;
        memset(&ctx->local, 0, sizeof(ctx->local));
    }
    else if (rc == 0) {
        rc = forksafe__map_update(&nested.local, &ctx->local);
    }
    if (rc == 0 && (file = forksafe__map_get(&ctx->global, "__file__")))
        rc = forksafe__map_put(&nested.global, "__file__", file, 0);
    if (rc == 0)
        context_move(ctx, &nested);
    context_free(&nested);
    forksafe__free(use);
    return rc;
}

/* _context_from_explicit without the import: the factory key is removed.
 * A section naming no factory at all is accepted (PasteDeploy would refuse
 * to load it, but its settings are still well defined). */
static int explicit_context(const forksafe__paste_loader *ld, int type,
                            const forksafe__ini_section *section, context *ctx,
                            forksafe__error *err)
{
    static const char *const app_factories[] = {"paste.app_factory", "paste.composite_factory",
                                                "paste.composit_factory", NULL};
    static const char *const filter_factories[] = {"paste.filter_factory",
                                                   "paste.filter_app_factory", NULL};
    const char *found = NULL;
    size_t i;

    if (type == FORKSAFE__PASTE_FILTER) {
        /* One group: the first present wins. */
        for (i = 0; filter_factories[i] && !found; i++) {
            if (forksafe__map_find(&ctx->local, filter_factories[i]))
                found = filter_factories[i];
        }
    }
    else {
        for (i = 0; app_factories[i]; i++) {
            if (!forksafe__map_find(&ctx->local, app_factories[i]))
                continue;
            if (found) {
                forksafe__error_set(err, ld->ini->path, section->line,
                                    "section [%s] names two factories, '%s' and '%s'",
                                    section->name, found, app_factories[i]);
                return FORKSAFE__ESYNTAX;
            }
            found = app_factories[i];
        }
    }
    if (found)
        forksafe__map_remove(&ctx->local, found);
    return 0;
}

static int pipeline_context(const forksafe__paste_loader *ld, const forksafe__ini_section *section,
                            context *ctx, int depth, forksafe__error *err)
{
    char *pipeline, *word, *save = NULL, *last = NULL;
    int line = section->line;
    int rc;

    if ((rc = map_pop(&ctx->local, "pipeline", &pipeline, &line)) != 0)
        return rc;
    if (!pipeline) {
        forksafe__error_set(err, ld->ini->path, section->line,
                            "section [%s] has no 'pipeline' setting", section->name);
        return FORKSAFE__ESYNTAX;
    }
    if (ctx->local.count > 0) {
        forksafe__error_set(err, ld->ini->path, ctx->local.entries[0].line,
                            "section [%s] may hold only 'pipeline', not '%s'", section->name,
                            ctx->local.entries[0].key);
        forksafe__free(pipeline);
        return FORKSAFE__ESYNTAX;
    }
    /* The last word is the application, the others are filters. */
    for (word = strtok_r(pipeline, " \t\n\r\f\v", &save); word;
         word = strtok_r(NULL, " \t\n\r\f\v", &save)) {
        if (last &&
            (rc = check_named(ld, FORKSAFE__PASTE_FILTER, last, &ctx->global, depth, line, err)))
            break;
        last = word;
    }
    if (rc == 0 && !last) {
        forksafe__error_set(err, ld->ini->path, line, "the pipeline of section [%s] is empty",
                            section->name);
        rc = FORKSAFE__ESYNTAX;
    }
    if (rc == 0)
        rc = check_named(ld, FORKSAFE__PASTE_APP, last, &ctx->global, depth, line, err);
    forksafe__free(pipeline);
    return rc;
}

/* ConfigLoader.get_context for SECTION of LD, with INCOMING as the caller's
 * global_conf (NULL at the top). */
static int section_context(const forksafe__paste_loader *ld, int type,
                           const forksafe__ini_section *section, const forksafe__map *incoming,
                           context *ctx, int depth, forksafe__error *err)
{
    const char *const only_section[] = {section->name, NULL};
    option_pass pass;
    char *filter_with = NULL, *dropped = NULL;
    int filter_with_line = 0;
    size_t i;
    int rc;

    if (depth > MAX_USE_DEPTH) {
        forksafe__error_set(err, ld->ini->path, section->line,
                            "section [%s] is reached through more than %d 'use' references; "
                            "do sections use each other in a loop?",
                            section->name, MAX_USE_DEPTH);
        return FORKSAFE__ESYNTAX;
    }
    if ((rc = forksafe__ini_check(ld->ini, only_section, err)) != 0)
        return rc;
    memset(&pass, 0, sizeof(pass));
    pass.ctx = ctx;
    pass.scope.defaults = &ld->parser;
    pass.scope.section = section;
    if ((rc = forksafe__map_update(&ctx->global, &ld->defaults)) != 0 ||
        (incoming && (rc = forksafe__map_update(&ctx->global, incoming)) != 0))
        goto done;

    for (i = 0; i < section->entries.count; i++) {
        if ((rc = take_option(&pass, &section->entries.entries[i], err)) != 0)
            goto done;
    }
    for (i = 0; i < ld->parser.raw.count; i++) {
        const forksafe__entry *option = &ld->parser.raw.entries[i];

        if (!forksafe__map_find(&section->entries, option->key) &&
            (rc = take_option(&pass, option, err)) != 0)
            goto done;
    }
    for (i = 0; i < pass.gets.count; i++) {
        const forksafe__entry *get = &pass.gets.entries[i];
        const char *value = forksafe__map_get(&ctx->global, get->value);

        if (!value) {
            forksafe__error_set(err, ld->ini->path, get->line,
                                "'get %s = %s' in section [%s]: there is no global setting "
                                "'%s'",
                                get->key, get->value, section->name, get->value);
            rc = FORKSAFE__ESYNTAX;
            goto done;
        }
        if ((rc = forksafe__map_put(&ctx->local, get->key, value, get->line)) != 0)
            goto done;
    }

    if ((rc = map_pop(&ctx->local, "filter-with", &filter_with, &filter_with_line)) != 0)
        goto done;
    /* `require` names distributions PasteDeploy checks are installed; that
     * is Python's business, the key just goes. */
    forksafe__map_remove(&ctx->local, "require");

    if (starts_with(section->name, "filter-app:")) {
        int next_line = section->line;

        if ((rc = map_pop(&ctx->local, "next", &dropped, &next_line)) != 0)
            goto done;
        if (!dropped) {
            forksafe__error_set(err, ld->ini->path, section->line,
                                "section [%s] has no 'next' setting", section->name);
            rc = FORKSAFE__ESYNTAX;
            goto done;
        }
        if ((rc = check_named(ld, FORKSAFE__PASTE_APP, dropped, &ctx->global, depth + 1, next_line,
                              err)))
            goto done;
        if (forksafe__map_find(&ctx->local, "use")) {
            /* The filter's context is built from the same local_conf, which
             * loses its `use`; the result is the filter-app's own. */
            context filter;

            memset(&filter, 0, sizeof(filter));
            if ((rc = forksafe__map_update(&filter.local, &ctx->local)) == 0 &&
                (rc = forksafe__map_update(&filter.global, &ctx->global)) == 0)
                rc = use_context(ld, FORKSAFE__PASTE_FILTER, &filter, &pass.additions, depth + 1,
                                 err);
            context_free(&filter);
            if (rc == 0)
                forksafe__map_remove(&ctx->local, "use");
        }
        else {
            rc = explicit_context(ld, FORKSAFE__PASTE_FILTER, section, ctx, err);
        }
    }
    else if (starts_with(section->name, "pipeline:")) {
        rc = pipeline_context(ld, section, ctx, depth + 1, err);
    }
    else if (forksafe__map_find(&ctx->local, "use")) {
        if (filter_with) {
            /* With filter-with, PasteDeploy returns this section's own
             * settings; the used context only has to load. */
            context used;

            memset(&used, 0, sizeof(used));
            if ((rc = forksafe__map_update(&used.local, &ctx->local)) == 0 &&
                (rc = forksafe__map_update(&used.global, &ctx->global)) == 0)
                rc = use_context(ld, type, &used, &pass.additions, depth + 1, err);
            context_free(&used);
            if (rc == 0)
                forksafe__map_remove(&ctx->local, "use");
        }
        else {
            rc = use_context(ld, type, ctx, &pass.additions, depth + 1, err);
        }
    }
    else {
        rc = explicit_context(ld, type, section, ctx, err);
    }
    if (rc == 0 && filter_with)
        rc = check_named(ld, FORKSAFE__PASTE_FILTER, filter_with, &ctx->global, depth + 1,
                         filter_with_line, err);

done:
    forksafe__map_clear(&pass.additions);
    forksafe__map_clear(&pass.gets);
    forksafe__free(filter_with);
    forksafe__free(dropped);
    if (rc == FORKSAFE__ENOMEM)
        forksafe__error_set(err, ld->ini->path, 0, "%s", forksafe__strerror(rc));
    return rc;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* urllib.parse.unquote for the path of a `config:` URI. */
static void unquote_in_place(char *text)
{
    char *out = text;
    int high, low;

    for (; *text; text++) {
        if (text[0] == '%' && (high = hex_digit(text[1])) >= 0 && (low = hex_digit(text[2])) >= 0) {
            *out++ = (char)(high * 16 + low);
            text += 2;
        }
        else {
            *out++ = *text;
        }
    }
    *out = '\0';
}

/* `use = config:PATH[#NAME]`: another file, relative to this one's
 * directory, whose defaults gain INCOMING's keys it does not define. */
static int config_context(const forksafe__paste_loader *ld, int type, const char *uri,
                          const char *name, const forksafe__map *incoming, context *ctx, int depth,
                          int line, forksafe__error *err)
{
    char *path, *directory = NULL, *p;
    forksafe__error file_err = {0};
    forksafe__ini file;
    forksafe__paste_loader nested;
    int rc;

    if (uri[0] == '/') {
        path = forksafe__strdup(uri);
    }
    else {
        directory = forksafe__path_directory(ld->parser.file);
        path = directory ? forksafe__malloc(strlen(directory) + strlen(uri) + 2) : NULL;
        if (path)
            sprintf(path, "%s/%s", directory, uri);
    }
    forksafe__free(directory);
    if (!path)
        return FORKSAFE__ENOMEM;
    for (p = path; *p; p++) {
        if (*p == '\\')
            *p = '/';
    }
    if (starts_with(path, "///"))
        memmove(path, path + 2, strlen(path + 2) + 1);
    unquote_in_place(path);

    rc = forksafe__ini_load(&file, path, &file_err);
    if (rc == 0) {
        rc = forksafe__paste_loader_open(&nested, &file, incoming, &file_err);
        if (rc == 0)
            rc = named_context(&nested, type, name, incoming, ctx, depth, 0, &file_err);
        forksafe__paste_loader_free(&nested);
        forksafe__ini_free(&file);
    }
    /* An error located in the other file stands as it is; one that is not
     * (the file is missing, has no such section) belongs to this line. */
    if (rc != 0 && (file_err.line > 0 || rc == FORKSAFE__ENOMEM))
        forksafe__error_set(err, file_err.source, file_err.line, "%s", file_err.text);
    else if (rc != 0)
        forksafe__error_set(err, ld->ini->path, line, "%s: %s", file_err.source, file_err.text);
    forksafe__free(path);
    return rc;
}

static int scheme_is(const char *name, size_t length, const char *scheme)
{
    return length == strlen(scheme) && strncasecmp(name, scheme, length) == 0;
}

/* get_context by NAME: a URI ("call:...", "egg:...", "config:...") or the
 * name of another section of LD's file. */
static int named_context(const forksafe__paste_loader *ld, int type, const char *name,
                         const forksafe__map *incoming, context *ctx, int depth, int line,
                         forksafe__error *err)
{
    const char *colon = name;
    const forksafe__ini_section *section;
    int rc;

    if (depth > MAX_USE_DEPTH) {
        forksafe__error_set(err, ld->ini->path, line,
                            "'%s' is reached through more than %d 'use' references; do sections "
                            "use each other in a loop?",
                            name, MAX_USE_DEPTH);
        return FORKSAFE__ESYNTAX;
    }
    /* _Loader.absolute_name: "^[a-zA-Z]+:" */
    while ((*colon >= 'a' && *colon <= 'z') || (*colon >= 'A' && *colon <= 'Z'))
        colon++;
    if (colon > name && *colon == ':') {
        size_t scheme_length = (size_t)(colon - name);
        char *uri = forksafe__strdup(colon + 1);
        char *fragment;
        const char *target = "main";

        if (!uri)
            return FORKSAFE__ENOMEM;
        fragment = strchr(uri, '#');
        if (fragment) {
            *fragment = '\0';
            target = fragment + 1;
        }
        if (scheme_is(name, scheme_length, "config")) {
            rc = config_context(ld, type, uri, target, incoming, ctx, depth + 1, line, err);
        }
        else if (scheme_is(name, scheme_length, "call") && !strchr(uri, ':')) {
            forksafe__error_set(err, ld->ini->path, line,
                                "'%s' must have the form call:MODULE:FUNCTION", name);
            rc = FORKSAFE__ESYNTAX;
        }
        else if (scheme_is(name, scheme_length, "call") || scheme_is(name, scheme_length, "egg")) {
            /* Python code: nothing to read; the context's global_conf is
             * the caller's. */
            rc = incoming ? forksafe__map_update(&ctx->global, incoming) : 0;
        }
        else {
            forksafe__error_set(err, ld->ini->path, line,
                                "'%s' uses an unknown scheme; PasteDeploy knows config:, egg: and "
                                "call:",
                                name);
            rc = FORKSAFE__ESYNTAX;
        }
        forksafe__free(uri);
        return rc;
    }
    rc = forksafe__paste_find_section(ld->ini, type, name, line, &section, err);
    if (rc == FORKSAFE__ENOTFOUND)
        rc = FORKSAFE__ESYNTAX; /* a dangling reference inside the file */
    if (rc != 0)
        return rc;
    return section_context(ld, type, section, incoming, ctx, depth + 1, err);
}

/* ----------------------------------------------------------- public API */

/* Moves CTX's maps into SETTINGS, which is left empty on failure. */
static int settings_from_context(forksafe__settings *settings, const forksafe__paste_loader *ld,
                                 const char *section, context *ctx)
{
    char *path = forksafe__strdup(ld->parser.file);
    char *name = forksafe__strdup(section);

    if (!path || !name) {
        forksafe__free(path);
        forksafe__free(name);
        return FORKSAFE__ENOMEM;
    }
    settings->path = path;
    settings->section = name;
    settings->local = ctx->local;
    settings->global = ctx->global;
    memset(&ctx->local, 0, sizeof(ctx->local));
    memset(&ctx->global, 0, sizeof(ctx->global));
    return 0;
}

int forksafe__settings_from_ini(forksafe__settings *settings, const forksafe__ini *ini,
                                const char *section, forksafe__error *err)
{
    const char *const only_defaults[] = {"DEFAULT", NULL};
    const forksafe__ini_section *found;
    context ctx;
    forksafe__paste_loader ld;
    int rc;

    memset(settings, 0, sizeof(*settings));
    memset(&ctx, 0, sizeof(ctx));
    if ((rc = forksafe__ini_check(ini, only_defaults, err)) != 0)
        return rc;
    found = forksafe__ini_find(ini, section);
    if (!found || strcmp(section, "DEFAULT") == 0) {
        forksafe__error_set(err, ini->path, 0, "no section [%s]", section);
        return FORKSAFE__ENOTFOUND;
    }
    if ((rc = forksafe__paste_loader_open(&ld, ini, NULL, err)) != 0)
        return rc;
    rc = section_context(&ld, FORKSAFE__PASTE_APP, found, NULL, &ctx, 0, err);
    if (rc == 0 && (rc = settings_from_context(settings, &ld, section, &ctx)) != 0)
        forksafe__error_set(err, ini->path, 0, "%s", forksafe__strerror(rc));
    context_free(&ctx);
    forksafe__paste_loader_free(&ld);
    return rc;
}
