/*
 * settings.c - what Pyramid sees as registry.settings: PasteDeploy's
 * local_conf and global_conf for one section of an ini file, or a flat JSON
 * object.
 *
 * The reference is paste.deploy.loadwsgi (ConfigLoader.get_context and
 * _context_from_use, NicerConfigParser.defaults) over configparser's
 * BasicInterpolation.  What PasteDeploy decides by importing Python code
 * (which factory a `use = egg:` or `call:` names, whether a `require`d
 * distribution is installed) cannot be checked from C: such references are
 * accepted as written.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "forksafe_internal.h"

/* configparser.MAX_INTERPOLATION_DEPTH */
#define MAX_INTERPOLATION_DEPTH 10

/* Python would recurse until RecursionError on a `use` cycle; stop sooner. */
#define MAX_USE_DEPTH 32

/* Ten levels of interpolation can still multiply a value enormously; Python
 * would try to build it anyway, forksafe refuses past this. */
#define MAX_INTERPOLATED_SIZE ((size_t)16 << 20)

enum object_type { OBJECT_APP, OBJECT_FILTER };

/* A forksafe__map with a hash index, for the maps built here: they can be as
 * big as the section they come from. */
typedef struct table {
    forksafe__map map;
    forksafe__index index;
} table;

/* One settings file as PasteDeploy's ConfigLoader sees it. */
typedef struct loader {
    const forksafe__ini *ini;
    char *file;         /* __file__: absolute and normalised */
    table raw_defaults; /* ConfigParser's defaults: here, __file__, [DEFAULT] */
    table defaults;     /* NicerConfigParser.defaults(): interpolated */
} loader;

/* What PasteDeploy's LoaderContext carries: local_conf and global_conf. */
typedef struct context {
    table local;
    table global;
} context;

/* Where a %(name)s is looked up: the section, then the defaults. */
typedef struct scope {
    const loader *loader;
    const forksafe__ini_section *section; /* NULL for [DEFAULT] itself */
    forksafe__index section_index;
} scope;

/* One value being interpolated, and what an error message needs. */
typedef struct expansion {
    const scope *scope;
    const char *section_name;
    const forksafe__entry *option;
    char *text;
    size_t length;
    size_t capacity;
    forksafe__error *err;
} expansion;

static int named_context(const loader *ld, int type, const char *name, const table *incoming,
                         context *ctx, int depth, int line, forksafe__error *err);

/* ------------------------------------------------------------------ table */

static const forksafe__entry *table_find(const table *t, const char *key)
{
    long position = forksafe__index_find(&t->index, t->map.entries, sizeof(forksafe__entry), key);

    return position >= 0 ? &t->map.entries[position] : NULL;
}

static const char *table_get(const table *t, const char *key)
{
    const forksafe__entry *entry = table_find(t, key);

    return entry ? entry->value : NULL;
}

/* Sets KEY to VALUE, in place if present, as a Python dict does; takes
 * VALUE (freed on failure).  On failure the table is unchanged. */
static int table_put_owned(table *t, const char *key, char *value, int line)
{
    forksafe__map *map = &t->map;
    long position = forksafe__index_find(&t->index, map->entries, sizeof(forksafe__entry), key);
    forksafe__entry *entry;

    if (position >= 0) {
        entry = &map->entries[position];
        forksafe__free(entry->value);
        entry->value = value;
        entry->line = line;
        return 0;
    }
    if (forksafe__map_reserve(map) != 0) {
        forksafe__free(value);
        return FORKSAFE__ENOMEM;
    }
    entry = &map->entries[map->count];
    entry->key = forksafe__strdup(key);
    entry->value = value;
    entry->line = line;
    if (!entry->key ||
        forksafe__index_add(&t->index, map->entries, sizeof(*entry), map->count) != 0) {
        forksafe__free(entry->key);
        forksafe__free(value);
        return FORKSAFE__ENOMEM;
    }
    map->count++;
    return 0;
}

/* The same with VALUE copied. */
static int table_put(table *t, const char *key, const char *value, int line)
{
    char *copy = forksafe__strdup(value);

    return copy ? table_put_owned(t, key, copy, line) : FORKSAFE__ENOMEM;
}

/* dict.update(): every entry of FROM put into T, in FROM's order. */
static int table_update(table *t, const table *from)
{
    size_t i;
    int rc;

    for (i = 0; i < from->map.count; i++) {
        const forksafe__entry *entry = &from->map.entries[i];

        if ((rc = table_put(t, entry->key, entry->value, entry->line)) != 0)
            return rc;
    }
    return 0;
}

/* Removes KEY.  The entries after it move down one place, so the index
 * is patched in place: its slot emptied, later positions decremented, and
 * the run of slots after the hole re-placed, as linear probing requires.
 * Never allocates: each re-placed key goes back into a table that held it. */
static void table_remove(table *t, const char *key)
{
    forksafe__index *index = &t->index;
    long position = forksafe__index_find(index, t->map.entries, sizeof(forksafe__entry), key);
    size_t mask = index->capacity - 1, hole = 0, slot;

    if (position < 0)
        return;
    forksafe__map_remove(&t->map, key);
    for (slot = 0; slot < index->capacity; slot++) {
        if (index->slots[slot] == (size_t)position + 1)
            hole = slot;
        else if (index->slots[slot] > (size_t)position + 1)
            index->slots[slot]--;
    }
    index->slots[hole] = 0;
    index->count--;
    for (slot = (hole + 1) & mask; index->slots[slot] != 0; slot = (slot + 1) & mask) {
        size_t moved = index->slots[slot] - 1;

        index->slots[slot] = 0;
        index->count--;
        (void)forksafe__index_add(index, t->map.entries, sizeof(forksafe__entry), moved);
    }
}

static void table_free(table *t)
{
    forksafe__map_clear(&t->map);
    forksafe__index_free(&t->index);
}

static void context_free(context *ctx)
{
    table_free(&ctx->local);
    table_free(&ctx->global);
}

/* Moves SOURCE into TARGET, which is freed first. */
static void context_move(context *target, context *source)
{
    context_free(target);
    *target = *source;
    memset(source, 0, sizeof(*source));
}

/* ------------------------------------------------------------------ paths */

static char *current_directory(void)
{
    size_t size = 256;

    for (;;) {
        char *buffer = forksafe__malloc(size);

        if (!buffer)
            return NULL;
        if (getcwd(buffer, size))
            return buffer;
        forksafe__free(buffer);
        if (errno != ERANGE)
            return forksafe__strdup("/");
        size *= 2;
    }
}

/* os.path.normpath: no symlinks resolved, "//" kept as a leading pair as
 * POSIX allows. */
static char *normalise_path(const char *path)
{
    size_t length = strlen(path);
    char *result = forksafe__malloc(length + 2);
    size_t leading = 0, used, root;
    const char *p = path;

    if (!result)
        return NULL;
    while (path[leading] == '/')
        leading++;
    if (leading == 2) {
        memcpy(result, "//", 2);
        root = 2;
    }
    else if (leading > 0) {
        result[0] = '/';
        root = 1;
    }
    else {
        root = 0;
    }
    used = root;
    while (*p) {
        const char *component, *stop;
        size_t size;

        while (*p == '/')
            p++;
        component = p;
        stop = strchr(p, '/');
        if (!stop)
            stop = p + strlen(p);
        size = (size_t)(stop - component);
        p = stop;
        if (size == 0 || (size == 1 && component[0] == '.'))
            continue;
        if (size == 2 && component[0] == '.' && component[1] == '.') {
            size_t last = used;
            int previous_is_dotdot;

            while (last > root && result[last - 1] != '/')
                last--;
            previous_is_dotdot = used - last == 2 && result[last] == '.' && result[last + 1] == '.';
            if (used > root && !previous_is_dotdot) {
                /* Drop the last component and its separator. */
                used = last > root ? last - 1 : root;
                continue;
            }
            if (root > 0)
                continue; /* "/.." is "/" */
        }
        if (used > root)
            result[used++] = '/';
        memcpy(result + used, component, size);
        used += size;
    }
    if (used == 0)
        result[used++] = '.';
    result[used] = '\0';
    return result;
}

/* os.path.abspath */
static char *absolute_path(const char *path)
{
    char *joined, *result;

    if (path[0] == '/')
        return normalise_path(path);
    {
        char *cwd = current_directory();
        size_t cwd_length;

        if (!cwd)
            return NULL;
        cwd_length = strlen(cwd);
        joined = forksafe__malloc(cwd_length + strlen(path) + 2);
        if (!joined) {
            forksafe__free(cwd);
            return NULL;
        }
        sprintf(joined, "%s%s%s", cwd, cwd_length && cwd[cwd_length - 1] == '/' ? "" : "/", path);
        forksafe__free(cwd);
    }
    result = normalise_path(joined);
    forksafe__free(joined);
    return result;
}

/* os.path.dirname */
static char *directory_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t length;

    if (!slash)
        return forksafe__strdup("");
    length = (size_t)(slash - path) + 1;
    /* Trailing slashes go, unless the head is nothing but slashes. */
    {
        size_t end = length;

        while (end > 0 && path[end - 1] == '/')
            end--;
        if (end > 0)
            length = end;
    }
    return forksafe__strndup(path, length);
}

/* ----------------------------------------------------------- interpolation */

static int expansion_append(expansion *x, const char *text, size_t length)
{
    if (x->length + length + 1 > x->capacity) {
        size_t capacity = x->capacity ? x->capacity : 64;
        char *grown;

        if (x->length + length > MAX_INTERPOLATED_SIZE) {
            forksafe__error_set(x->err, x->scope->loader->ini->path, x->option->line,
                                "the value of '%s' in section [%s] grows past %zu MiB when "
                                "interpolated",
                                x->option->key, x->section_name, MAX_INTERPOLATED_SIZE >> 20);
            return FORKSAFE__ESYNTAX;
        }
        while (capacity < x->length + length + 1)
            capacity *= 2;
        grown = forksafe__realloc(x->text, capacity);
        if (!grown)
            return FORKSAFE__ENOMEM;
        x->text = grown;
        x->capacity = capacity;
    }
    memcpy(x->text + x->length, text, length);
    x->length += length;
    x->text[x->length] = '\0';
    return 0;
}

static const forksafe__entry *scope_find(const scope *s, const char *key)
{
    if (s->section) {
        long position = forksafe__index_find(&s->section_index, s->section->entries.entries,
                                             sizeof(forksafe__entry), key);

        if (position >= 0)
            return &s->section->entries.entries[position];
    }
    return table_find(&s->loader->raw_defaults, key);
}

static int scope_open(scope *s, const loader *ld, const forksafe__ini_section *section)
{
    memset(s, 0, sizeof(*s));
    s->loader = ld;
    s->section = section;
    if (!section)
        return 0;
    return forksafe__index_build(&s->section_index, section->entries.entries,
                                 sizeof(forksafe__entry), section->entries.count);
}

static void scope_close(scope *s)
{
    forksafe__index_free(&s->section_index);
}

static int interpolation_error(expansion *x, const char *what, const char *rest)
{
    char shown[64];

    snprintf(shown, sizeof(shown), "%s", rest);
    if (strlen(rest) >= sizeof(shown))
        memcpy(shown + sizeof(shown) - 4, "...", 4);
    forksafe__error_set(x->err, x->scope->loader->ini->path, x->option->line,
                        "bad interpolation in '%s' in section [%s]: %s, found '%s'", x->option->key,
                        x->section_name, what, shown);
    return FORKSAFE__ESYNTAX;
}

/* BasicInterpolation._interpolate_some: a looked-up value that contains a
 * '%' (even an escaped "%%") is expanded one level deeper, and entering
 * level 11 is an error whatever the value holds. */
static int expand(expansion *x, const char *rest, int depth)
{
    int rc;

    if (depth > MAX_INTERPOLATION_DEPTH) {
        forksafe__error_set(x->err, x->scope->loader->ini->path, x->option->line,
                            "interpolating '%s' in section [%s] takes more than %d steps; is "
                            "there a loop of %%(name)s references?",
                            x->option->key, x->section_name, MAX_INTERPOLATION_DEPTH);
        return FORKSAFE__ESYNTAX;
    }
    while (*rest) {
        const char *percent = strchr(rest, '%');
        const char *name, *close;
        const forksafe__entry *found;
        char *key;

        if (!percent)
            return expansion_append(x, rest, strlen(rest));
        if ((rc = expansion_append(x, rest, (size_t)(percent - rest))) != 0)
            return rc;
        if (percent[1] == '%') {
            if ((rc = expansion_append(x, "%", 1)) != 0)
                return rc;
            rest = percent + 2;
            continue;
        }
        if (percent[1] != '(')
            return interpolation_error(x, "'%' must be followed by '%' or '('", percent);
        /* "%\(([^)]+)\)s": the name runs to the first ')', which must be
         * followed by 's'. */
        name = percent + 2;
        close = strchr(name, ')');
        if (!close || close == name || close[1] != 's')
            return interpolation_error(x, "a reference must look like %(name)s", percent);
        key = forksafe__strndup(name, (size_t)(close - name));
        if (!key)
            return FORKSAFE__ENOMEM;
        found = scope_find(x->scope, key);
        if (!found) {
            forksafe__error_set(x->err, x->scope->loader->ini->path, x->option->line,
                                "'%s' in section [%s] refers to %%(%s)s, but there is no key "
                                "'%s' in [%s]%s",
                                x->option->key, x->section_name, key, key, x->section_name,
                                x->scope->section ? " or [DEFAULT]" : "");
            forksafe__free(key);
            return FORKSAFE__ESYNTAX;
        }
        forksafe__free(key);
        if (strchr(found->value, '%'))
            rc = expand(x, found->value, depth + 1);
        else
            rc = expansion_append(x, found->value, strlen(found->value));
        if (rc != 0)
            return rc;
        rest = close + 2;
    }
    return 0;
}

/* ConfigParser.get(section, OPTION->key) with OPTION already looked up. */
static int interpolate(const scope *s, const forksafe__entry *option, char **out,
                       forksafe__error *err)
{
    expansion x;
    int rc;

    if (!strchr(option->value, '%')) {
        *out = forksafe__strdup(option->value);
        return *out ? 0 : FORKSAFE__ENOMEM;
    }
    memset(&x, 0, sizeof(x));
    x.scope = s;
    x.section_name = s->section ? s->section->name : "DEFAULT";
    x.option = option;
    x.err = err;
    rc = expansion_append(&x, "", 0);
    if (rc == 0)
        rc = expand(&x, option->value, 1);
    if (rc != 0) {
        forksafe__free(x.text);
        return rc;
    }
    *out = x.text;
    return 0;
}

/* ----------------------------------------------------------------- loader */

static void loader_free(loader *ld)
{
    forksafe__free(ld->file);
    table_free(&ld->raw_defaults);
    table_free(&ld->defaults);
    memset(ld, 0, sizeof(*ld));
}

/* ConfigLoader.__init__ over an already parsed INI (borrowed), plus
 * update_defaults(EXTRA, overwrite=False) when EXTRA is given. */
static int loader_open(loader *ld, const forksafe__ini *ini, const table *extra,
                       forksafe__error *err)
{
    const forksafe__ini_section *defaults = forksafe__ini_find(ini, "DEFAULT");
    char *here = NULL;
    size_t i;
    int rc = FORKSAFE__ENOMEM;

    memset(ld, 0, sizeof(*ld));
    ld->ini = ini;
    if (ini->path[forksafe__utf8_invalid_offset(ini->path)]) {
        /* here and __file__ are text to Pyramid and in every payload. */
        forksafe__error_set(err, ini->path, 0,
                            "the settings file's path is not valid UTF-8; rename it or a "
                            "directory above it");
        return FORKSAFE__EINVAL;
    }
    ld->file = absolute_path(ini->path);
    if (!ld->file || !(here = directory_of(ld->file)))
        goto fail;
    if ((rc = table_put(&ld->raw_defaults, "here", here, 0)) != 0 ||
        (rc = table_put(&ld->raw_defaults, "__file__", ld->file, 0)) != 0)
        goto fail;
    for (i = 0; defaults && i < defaults->entries.count; i++) {
        const forksafe__entry *entry = &defaults->entries.entries[i];

        if ((rc = table_put(&ld->raw_defaults, entry->key, entry->value, entry->line)) != 0)
            goto fail;
    }
    for (i = 0; extra && i < extra->map.count; i++) {
        const forksafe__entry *entry = &extra->map.entries[i];

        if (!table_find(&ld->raw_defaults, entry->key) &&
            (rc = table_put(&ld->raw_defaults, entry->key, entry->value, 0)) != 0)
            goto fail;
    }
    forksafe__free(here);
    return 0;

fail:
    forksafe__free(here);
    loader_free(ld);
    forksafe__error_set(err, ini->path, 0, "%s", forksafe__strerror(rc));
    return rc;
}

/* NicerConfigParser.defaults(): each default interpolated against the
 * defaults alone - except that an empty result falls back to the raw value
 * (`get(...) or val`), so "a = %(empty)s" stays "%(empty)s". */
static int loader_interpolate_defaults(loader *ld, forksafe__error *err)
{
    const char *const only_defaults[] = {"DEFAULT", NULL};
    scope s;
    size_t i;
    int rc;

    if ((rc = forksafe__ini_check(ld->ini, only_defaults, err)) != 0)
        return rc;
    scope_open(&s, ld, NULL);
    for (i = 0; i < ld->raw_defaults.map.count; i++) {
        const forksafe__entry *entry = &ld->raw_defaults.map.entries[i];
        char *value;

        if ((rc = interpolate(&s, entry, &value, err)) != 0)
            break;
        rc = table_put(&ld->defaults, entry->key, value[0] ? value : entry->value, entry->line);
        forksafe__free(value);
        if (rc != 0)
            break;
    }
    scope_close(&s);
    if (rc == FORKSAFE__ENOMEM)
        forksafe__error_set(err, ld->ini->path, 0, "%s", forksafe__strerror(rc));
    return rc;
}

/* ------------------------------------------------------- section lookup */

static const char *const app_prefixes[][3] = {{"app", "application", NULL},
                                              {"composite", "composit", NULL},
                                              {"pipeline", NULL},
                                              {"filter-app", NULL}};
static const char *const filter_prefixes[][3] = {{"filter", NULL, NULL}};

static int section_has_name(const char *section, const char *prefix, const char *name)
{
    size_t prefix_length = strlen(prefix);
    const char *start, *end;

    if (strncmp(section, prefix, prefix_length) != 0 || section[prefix_length] != ':')
        return 0;
    start = section + prefix_length + 1;
    end = start + strlen(start);
    forksafe__ini_strip(&start, &end);
    return (size_t)(end - start) == strlen(name) && memcmp(start, name, strlen(name)) == 0;
}

/* ConfigLoader.find_config_section: in each group of prefixes the first
 * prefix with a match wins; matches from different groups are ambiguous. */
static int find_section(const forksafe__ini *ini, int type, const char *name, int line,
                        const forksafe__ini_section **found, forksafe__error *err)
{
    const char *const(*groups)[3] = type == OBJECT_APP ? app_prefixes : filter_prefixes;
    size_t group_count = type == OBJECT_APP ? 4 : 1;
    const forksafe__ini_section *first = NULL, *second = NULL;
    size_t g, p, i;

    for (g = 0; g < group_count; g++) {
        for (p = 0; groups[g][p]; p++) {
            int matched = 0;

            for (i = 0; i < ini->count; i++) {
                if (strcmp(ini->sections[i].name, "DEFAULT") != 0 &&
                    section_has_name(ini->sections[i].name, groups[g][p], name)) {
                    matched = 1;
                    if (!first)
                        first = &ini->sections[i];
                    else if (!second)
                        second = &ini->sections[i];
                }
            }
            if (matched)
                break;
        }
    }
    if (!first) {
        if (type == OBJECT_APP)
            forksafe__error_set(err, ini->path, line,
                                "no section [app:%s] (nor application:, composite:, pipeline: "
                                "or filter-app: %s)",
                                name, name);
        else
            forksafe__error_set(err, ini->path, line, "no section [filter:%s]", name);
        return FORKSAFE__ENOTFOUND;
    }
    if (second) {
        forksafe__error_set(err, ini->path, line,
                            "ambiguous name '%s': both [%s] (line %d) and [%s] (line %d) match",
                            name, first->name, first->line, second->name, second->line);
        return FORKSAFE__ESYNTAX;
    }
    *found = first;
    return 0;
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

    forksafe__ini_strip(&start, &end);
    return forksafe__strndup(start, (size_t)(end - start));
}

/* The loop of ConfigLoader.get_context over parser.options(section): the
 * section's keys, then the defaults the section does not override. */
typedef struct option_pass {
    scope scope;
    context *ctx;
    table additions; /* set NAME = ... */
    table gets;      /* get NAME = GLOBALKEY */
} option_pass;

static int take_option(option_pass *pass, const forksafe__entry *option, forksafe__error *err)
{
    const char *key = option->key;
    int is_set = starts_with(key, "set "), is_get = starts_with(key, "get ");
    char *value, *name = NULL;
    int rc;

    /* A key that is also a default belongs to global_conf, not local_conf. */
    if (!is_set && !is_get && table_find(&pass->scope.loader->raw_defaults, key))
        return 0;
    if ((rc = interpolate(&pass->scope, option, &value, err)) != 0)
        return rc;
    if (is_set || is_get) {
        name = stripped_copy(key + 4);
        if (!name) {
            forksafe__free(value);
            return FORKSAFE__ENOMEM;
        }
    }
    if (is_set) {
        rc = table_put(&pass->additions, name, value, option->line);
        if (rc == 0)
            rc = table_put_owned(&pass->ctx->global, name, value, option->line);
        else
            forksafe__free(value);
    }
    else if (is_get) {
        rc = table_put_owned(&pass->gets, name, value, option->line);
    }
    else {
        rc = table_put_owned(&pass->ctx->local, key, value, option->line);
    }
    forksafe__free(name);
    return rc;
}

/* Removes KEY from T and returns its value (new string) in *VALUE, or
 * *VALUE = NULL if absent. */
static int table_pop(table *t, const char *key, char **value, int *line)
{
    const forksafe__entry *entry = table_find(t, key);

    *value = NULL;
    if (!entry)
        return 0;
    if (line)
        *line = entry->line;
    if (!(*value = forksafe__strdup(entry->value)))
        return FORKSAFE__ENOMEM;
    table_remove(t, key);
    return 0;
}

/* Computes NAME's context only for the errors it may raise, as PasteDeploy
 * does for filter-with, next and pipeline members. */
static int check_named(const loader *ld, int type, const char *name, const table *global, int depth,
                       int line, forksafe__error *err)
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
static int use_context(const loader *ld, int type, context *ctx, const table *additions, int depth,
                       forksafe__error *err)
{
    context nested;
    const char *file;
    char *use;
    int line = 0;
    int rc;

    if ((rc = table_pop(&ctx->local, "use", &use, &line)) != 0)
        return rc;
    memset(&nested, 0, sizeof(nested));
    rc = named_context(ld, type, use, &ctx->global, &nested, depth, line, err);
    if (rc == 0)
        rc = table_update(&nested.global, additions);
    if (rc == 0 && nested.local.map.count == 0) {
        /* The usual `use = call:` or `egg:`: this section's settings are the
         * whole result, so move them rather than copy thousands of keys. */
        table_free(&nested.local);
        nested.local = ctx->local;
        memset(&ctx->local, 0, sizeof(ctx->local));
    }
    else if (rc == 0) {
        rc = table_update(&nested.local, &ctx->local);
    }
    if (rc == 0 && (file = table_get(&ctx->global, "__file__")))
        rc = table_put(&nested.global, "__file__", file, 0);
    if (rc == 0)
        context_move(ctx, &nested);
    context_free(&nested);
    forksafe__free(use);
    return rc;
}

/* _context_from_explicit without the import: the factory key is removed.
 * A section naming no factory at all is accepted (PasteDeploy would refuse
 * to load it, but its settings are still well defined). */
static int explicit_context(const loader *ld, int type, const forksafe__ini_section *section,
                            context *ctx, forksafe__error *err)
{
    static const char *const app_factories[] = {"paste.app_factory", "paste.composite_factory",
                                                "paste.composit_factory", NULL};
    static const char *const filter_factories[] = {"paste.filter_factory",
                                                   "paste.filter_app_factory", NULL};
    const char *found = NULL;
    size_t i;

    if (type == OBJECT_FILTER) {
        /* One group: the first present wins. */
        for (i = 0; filter_factories[i] && !found; i++) {
            if (table_find(&ctx->local, filter_factories[i]))
                found = filter_factories[i];
        }
    }
    else {
        for (i = 0; app_factories[i]; i++) {
            if (!table_find(&ctx->local, app_factories[i]))
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
        table_remove(&ctx->local, found);
    return 0;
}

static int pipeline_context(const loader *ld, const forksafe__ini_section *section, context *ctx,
                            int depth, forksafe__error *err)
{
    char *pipeline, *word, *save = NULL, *last = NULL;
    int line = section->line;
    int rc;

    if ((rc = table_pop(&ctx->local, "pipeline", &pipeline, &line)) != 0)
        return rc;
    if (!pipeline) {
        forksafe__error_set(err, ld->ini->path, section->line,
                            "section [%s] has no 'pipeline' setting", section->name);
        return FORKSAFE__ESYNTAX;
    }
    if (ctx->local.map.count > 0) {
        forksafe__error_set(err, ld->ini->path, ctx->local.map.entries[0].line,
                            "section [%s] may hold only 'pipeline', not '%s'", section->name,
                            ctx->local.map.entries[0].key);
        forksafe__free(pipeline);
        return FORKSAFE__ESYNTAX;
    }
    /* The last word is the application, the others are filters. */
    for (word = strtok_r(pipeline, " \t\n\r\f\v", &save); word;
         word = strtok_r(NULL, " \t\n\r\f\v", &save)) {
        if (last && (rc = check_named(ld, OBJECT_FILTER, last, &ctx->global, depth, line, err)))
            break;
        last = word;
    }
    if (rc == 0 && !last) {
        forksafe__error_set(err, ld->ini->path, line, "the pipeline of section [%s] is empty",
                            section->name);
        rc = FORKSAFE__ESYNTAX;
    }
    if (rc == 0)
        rc = check_named(ld, OBJECT_APP, last, &ctx->global, depth, line, err);
    forksafe__free(pipeline);
    return rc;
}

/* ConfigLoader.get_context for SECTION of LD, with INCOMING as the caller's
 * global_conf (NULL at the top). */
static int section_context(const loader *ld, int type, const forksafe__ini_section *section,
                           const table *incoming, context *ctx, int depth, forksafe__error *err)
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
    if ((rc = scope_open(&pass.scope, ld, section)) != 0)
        goto done;
    if ((rc = table_update(&ctx->global, &ld->defaults)) != 0 ||
        (incoming && (rc = table_update(&ctx->global, incoming)) != 0))
        goto done;

    for (i = 0; i < section->entries.count; i++) {
        if ((rc = take_option(&pass, &section->entries.entries[i], err)) != 0)
            goto done;
    }
    for (i = 0; i < ld->raw_defaults.map.count; i++) {
        const forksafe__entry *option = &ld->raw_defaults.map.entries[i];

        if (forksafe__index_find(&pass.scope.section_index, section->entries.entries,
                                 sizeof(forksafe__entry), option->key) < 0 &&
            (rc = take_option(&pass, option, err)) != 0)
            goto done;
    }
    for (i = 0; i < pass.gets.map.count; i++) {
        const forksafe__entry *get = &pass.gets.map.entries[i];
        const char *value = table_get(&ctx->global, get->value);

        if (!value) {
            forksafe__error_set(err, ld->ini->path, get->line,
                                "'get %s = %s' in section [%s]: there is no global setting "
                                "'%s'",
                                get->key, get->value, section->name, get->value);
            rc = FORKSAFE__ESYNTAX;
            goto done;
        }
        if ((rc = table_put(&ctx->local, get->key, value, get->line)) != 0)
            goto done;
    }

    if ((rc = table_pop(&ctx->local, "filter-with", &filter_with, &filter_with_line)) != 0)
        goto done;
    /* `require` names distributions PasteDeploy checks are installed; that
     * is Python's business, the key just goes. */
    table_remove(&ctx->local, "require");

    if (starts_with(section->name, "filter-app:")) {
        int next_line = section->line;

        if ((rc = table_pop(&ctx->local, "next", &dropped, &next_line)) != 0)
            goto done;
        if (!dropped) {
            forksafe__error_set(err, ld->ini->path, section->line,
                                "section [%s] has no 'next' setting", section->name);
            rc = FORKSAFE__ESYNTAX;
            goto done;
        }
        if ((rc = check_named(ld, OBJECT_APP, dropped, &ctx->global, depth + 1, next_line, err)))
            goto done;
        if (table_find(&ctx->local, "use")) {
            /* The filter's context is built from the same local_conf, which
             * loses its `use`; the result is the filter-app's own. */
            context filter;

            memset(&filter, 0, sizeof(filter));
            if ((rc = table_update(&filter.local, &ctx->local)) == 0 &&
                (rc = table_update(&filter.global, &ctx->global)) == 0)
                rc = use_context(ld, OBJECT_FILTER, &filter, &pass.additions, depth + 1, err);
            context_free(&filter);
            if (rc == 0)
                table_remove(&ctx->local, "use");
        }
        else {
            rc = explicit_context(ld, OBJECT_FILTER, section, ctx, err);
        }
    }
    else if (starts_with(section->name, "pipeline:")) {
        rc = pipeline_context(ld, section, ctx, depth + 1, err);
    }
    else if (table_find(&ctx->local, "use")) {
        if (filter_with) {
            /* With filter-with, PasteDeploy returns this section's own
             * settings; the used context only has to load. */
            context used;

            memset(&used, 0, sizeof(used));
            if ((rc = table_update(&used.local, &ctx->local)) == 0 &&
                (rc = table_update(&used.global, &ctx->global)) == 0)
                rc = use_context(ld, type, &used, &pass.additions, depth + 1, err);
            context_free(&used);
            if (rc == 0)
                table_remove(&ctx->local, "use");
        }
        else {
            rc = use_context(ld, type, ctx, &pass.additions, depth + 1, err);
        }
    }
    else {
        rc = explicit_context(ld, type, section, ctx, err);
    }
    if (rc == 0 && filter_with)
        rc = check_named(ld, OBJECT_FILTER, filter_with, &ctx->global, depth + 1, filter_with_line,
                         err);

done:
    scope_close(&pass.scope);
    table_free(&pass.additions);
    table_free(&pass.gets);
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
static int config_context(const loader *ld, int type, const char *uri, const char *name,
                          const table *incoming, context *ctx, int depth, int line,
                          forksafe__error *err)
{
    char *path, *directory = NULL, *p;
    forksafe__error file_err = {0};
    forksafe__ini file;
    loader nested;
    int rc;

    if (uri[0] == '/') {
        path = forksafe__strdup(uri);
    }
    else {
        directory = directory_of(ld->file);
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
        rc = loader_open(&nested, &file, incoming, &file_err);
        if (rc == 0)
            rc = loader_interpolate_defaults(&nested, &file_err);
        if (rc == 0)
            rc = named_context(&nested, type, name, incoming, ctx, depth, 0, &file_err);
        loader_free(&nested);
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
static int named_context(const loader *ld, int type, const char *name, const table *incoming,
                         context *ctx, int depth, int line, forksafe__error *err)
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
            rc = incoming ? table_update(&ctx->global, incoming) : 0;
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
    rc = find_section(ld->ini, type, name, line, &section, err);
    if (rc == FORKSAFE__ENOTFOUND)
        rc = FORKSAFE__ESYNTAX; /* a dangling reference inside the file */
    if (rc != 0)
        return rc;
    return section_context(ld, type, section, incoming, ctx, depth + 1, err);
}

/* ----------------------------------------------------------- public API */

static int settings_from_context(forksafe__settings *settings, const loader *ld,
                                 const char *section, context *ctx)
{
    settings->path = forksafe__strdup(ld->file);
    settings->section = section ? forksafe__strdup(section) : NULL;
    if (!settings->path || (section && !settings->section))
        return FORKSAFE__ENOMEM;
    settings->local = ctx->local.map;
    settings->global = ctx->global.map;
    memset(&ctx->local.map, 0, sizeof(ctx->local.map));
    memset(&ctx->global.map, 0, sizeof(ctx->global.map));
    return 0;
}

int forksafe__settings_from_ini(forksafe__settings *settings, const forksafe__ini *ini,
                                const char *section, forksafe__error *err)
{
    const char *const only_defaults[] = {"DEFAULT", NULL};
    const forksafe__ini_section *found;
    context ctx;
    loader ld;
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
    if ((rc = loader_open(&ld, ini, NULL, err)) != 0)
        return rc;
    rc = loader_interpolate_defaults(&ld, err);
    if (rc == 0)
        rc = section_context(&ld, OBJECT_APP, found, NULL, &ctx, 0, err);
    if (rc == 0 && (rc = settings_from_context(settings, &ld, section, &ctx)) != 0)
        forksafe__error_set(err, ini->path, 0, "%s", forksafe__strerror(rc));
    if (rc != 0)
        forksafe__settings_free(settings);
    context_free(&ctx);
    loader_free(&ld);
    return rc;
}

/* The text of a JSON real as Python's repr() writes a float: the fewest
 * digits that read back to the same double, positional for exponents -4 to
 * 15 ("100000.0", "0.0001"), scientific otherwise ("1e+16", "1.5e-07"). */
static void format_real(double value, char *buf, size_t size)
{
    char scientific[40], digits[24];
    int precision, exponent, count = 0, i;
    size_t used = 0;
    const char *p;

    for (precision = 0; precision <= 16; precision++) {
        snprintf(scientific, sizeof(scientific), "%.*e", precision, value);
        if (strtod(scientific, NULL) == value)
            break;
    }
    /* "-d.dddde+XX": collect the digits, drop trailing zeros. */
    for (p = scientific; *p && *p != 'e'; p++) {
        if (*p >= '0' && *p <= '9')
            digits[count++] = *p;
    }
    exponent = atoi(p + 1);
    while (count > 1 && digits[count - 1] == '0')
        count--;
    digits[count] = '\0';
    if (value < 0 || (value == 0 && signbit(value)))
        buf[used++] = '-';
    if (exponent >= -4 && exponent < 16) {
        if (exponent < 0) {
            used += (size_t)snprintf(buf + used, size - used, "0.");
            for (i = exponent + 1; i < 0; i++)
                buf[used++] = '0';
            used += (size_t)snprintf(buf + used, size - used, "%s", digits);
        }
        else {
            for (i = 0; i <= exponent; i++)
                buf[used++] = i < count ? digits[i] : '0';
            buf[used++] = '.';
            if (count > exponent + 1)
                used += (size_t)snprintf(buf + used, size - used, "%s", digits + exponent + 1);
            else
                buf[used++] = '0';
        }
        buf[used] = '\0';
    }
    else {
        buf[used++] = digits[0];
        if (count > 1)
            used += (size_t)snprintf(buf + used, size - used, ".%s", digits + 1);
        snprintf(buf + used, size - used, "e%c%02d", exponent < 0 ? '-' : '+', abs(exponent));
    }
}

static char *json_scalar_text(const json_t *value)
{
    char number[64];

    switch (json_typeof(value)) {
    case JSON_STRING:
        return forksafe__strndup(json_string_value(value), json_string_length(value));
    case JSON_INTEGER:
        snprintf(number, sizeof(number), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        return forksafe__strdup(number);
    case JSON_REAL:
        format_real(json_real_value(value), number, sizeof(number));
        return forksafe__strdup(number);
    case JSON_TRUE:
        return forksafe__strdup("true");
    case JSON_FALSE:
        return forksafe__strdup("false");
    default:
        return forksafe__strdup("null");
    }
}

/* jansson reports an allocation failure inside its parser as a syntax
 * error, or as an error with no text, so the allocator is watched while it
 * parses.  Settings load once, in the master, before any thread exists. */
static json_malloc_t json_underlying_malloc;
static int json_allocation_failed;

static void *watched_json_malloc(size_t size)
{
    void *memory = json_underlying_malloc(size);

    if (!memory)
        json_allocation_failed = 1;
    return memory;
}

static json_t *load_json_file(FILE *stream, json_error_t *json_err, int *out_of_memory)
{
    json_malloc_t malloc_function;
    json_free_t free_function;
    json_t *root;

    json_get_alloc_funcs(&malloc_function, &free_function);
    json_underlying_malloc = malloc_function;
    json_allocation_failed = 0;
    json_set_alloc_funcs(watched_json_malloc, free_function);
    root = json_loadf(stream, JSON_REJECT_DUPLICATES, json_err);
    json_set_alloc_funcs(malloc_function, free_function);
    *out_of_memory =
        !root && (json_allocation_failed || json_error_code(json_err) == json_error_out_of_memory);
    return root;
}

static int settings_load_json(forksafe__settings *settings, const char *path, forksafe__error *err)
{
    int out_of_memory;
    json_error_t json_err;
    json_t *root, *value;
    const char *key;
    char *here = NULL;
    int rc = 0;
    FILE *stream;
    int fd;

    if (path[forksafe__utf8_invalid_offset(path)]) {
        forksafe__error_set(err, path, 0,
                            "the settings file's path is not valid UTF-8; rename it or a "
                            "directory above it");
        return FORKSAFE__EINVAL;
    }
    if ((fd = forksafe__open_settings_file(path, err)) < 0)
        return fd;
    if (!(stream = fdopen(fd, "rb"))) {
        close(fd);
        forksafe__error_set(err, path, 0, "%s", forksafe__strerror(FORKSAFE__ENOMEM));
        return FORKSAFE__ENOMEM;
    }
    root = load_json_file(stream, &json_err, &out_of_memory);
    fclose(stream);
    if (!root && out_of_memory) {
        forksafe__error_set(err, path, 0, "%s", forksafe__strerror(FORKSAFE__ENOMEM));
        return FORKSAFE__ENOMEM;
    }
    if (!root) {
        forksafe__error_set(err, path, json_err.line > 0 ? json_err.line : 0, "invalid JSON: %s",
                            json_err.text);
        return FORKSAFE__ESYNTAX;
    }
    if (!json_is_object(root)) {
        forksafe__error_set(err, path, 0, "a JSON settings file must hold one object");
        json_decref(root);
        return FORKSAFE__ESYNTAX;
    }
    settings->path = absolute_path(path);
    if (!settings->path || !(here = directory_of(settings->path)) ||
        forksafe__map_put(&settings->global, "here", here, 0) != 0 ||
        forksafe__map_put(&settings->global, "__file__", settings->path, 0) != 0)
        rc = FORKSAFE__ENOMEM;
    {
        table local;

        memset(&local, 0, sizeof(local));
        json_object_foreach(root, key, value)
        {
            char *text;

            if (rc != 0)
                break;
            if (json_is_object(value) || json_is_array(value)) {
                forksafe__error_set(err, path, 0,
                                    "setting '%s' is an %s; a JSON settings file must be flat "
                                    "(strings, numbers, booleans, null)",
                                    key, json_is_object(value) ? "object" : "array");
                rc = FORKSAFE__ESYNTAX;
                break;
            }
            if (!(text = json_scalar_text(value))) {
                rc = FORKSAFE__ENOMEM;
                break;
            }
            rc = table_put(&local, key, text, 0);
            forksafe__free(text);
        }
        settings->local = local.map;
        forksafe__index_free(&local.index);
    }
    forksafe__free(here);
    json_decref(root);
    if (rc == FORKSAFE__ENOMEM)
        forksafe__error_set(err, path, 0, "%s", forksafe__strerror(rc));
    return rc;
}

static int ends_with(const char *text, const char *suffix)
{
    size_t length = strlen(text), suffix_length = strlen(suffix);

    return length >= suffix_length && strcmp(text + length - suffix_length, suffix) == 0;
}

int forksafe__settings_load(forksafe__settings *settings, const char *spec, forksafe__error *err)
{
    const char *const only_defaults[] = {"DEFAULT", NULL};
    const forksafe__ini_section *section;
    const char *hash;
    char *path, *section_name = NULL;
    const char *name = "main";
    forksafe__ini ini;
    int rc;

    memset(settings, 0, sizeof(*settings));
    /* Like PasteDeploy, the first '#' starts the name. */
    hash = strchr(spec, '#');
    path = hash ? forksafe__strndup(spec, (size_t)(hash - spec)) : forksafe__strdup(spec);
    if (!path) {
        forksafe__error_set(err, spec, 0, "%s", forksafe__strerror(FORKSAFE__ENOMEM));
        return FORKSAFE__ENOMEM;
    }
    if (hash && hash[1])
        name = hash + 1;

    if (ends_with(path, ".json")) {
        rc = settings_load_json(settings, path, err);
        if (rc != 0)
            forksafe__settings_free(settings);
        forksafe__free(path);
        return rc;
    }

    if ((rc = forksafe__ini_load(&ini, path, err)) != 0) {
        forksafe__free(path);
        return rc;
    }
    /* The file's own errors come before the search for the section, as in
     * PasteDeploy. */
    rc = forksafe__ini_check(&ini, only_defaults, err);
    if (rc == 0 && strchr(name, ':')) {
        section_name = forksafe__strdup(name);
        if (!section_name) {
            rc = FORKSAFE__ENOMEM;
            forksafe__error_set(err, path, 0, "%s", forksafe__strerror(rc));
        }
    }
    else if (rc == 0) {
        rc = find_section(&ini, OBJECT_APP, name, 0, &section, err);
        if (rc == 0 && !(section_name = forksafe__strdup(section->name))) {
            rc = FORKSAFE__ENOMEM;
            forksafe__error_set(err, path, 0, "%s", forksafe__strerror(rc));
        }
    }
    if (rc == 0)
        rc = forksafe__settings_from_ini(settings, &ini, section_name, err);
    forksafe__free(section_name);
    forksafe__ini_free(&ini);
    forksafe__free(path);
    return rc;
}

int forksafe__settings_override(forksafe__settings *settings, const char *assignment,
                                const char *source, int line, forksafe__error *err)
{
    const char *equals = strchr(assignment, '=');
    const char *key = assignment, *key_end = equals;
    const char *value, *value_end;
    char *key_copy, *value_copy;
    int rc;

    if (equals) {
        forksafe__ini_strip(&key, &key_end);
    }
    if (!equals || key == key_end) {
        forksafe__error_set(err, source, line,
                            "'%s' is not a setting override of the form KEY=VALUE", assignment);
        return FORKSAFE__EINVAL;
    }
    if (assignment[forksafe__utf8_invalid_offset(assignment)]) {
        forksafe__error_set(
            err, source, line, "the setting override '%s' is not valid UTF-8 (byte 0x%02x)",
            assignment, (unsigned char)assignment[forksafe__utf8_invalid_offset(assignment)]);
        return FORKSAFE__EINVAL;
    }
    value = equals + 1;
    value_end = value + strlen(value);
    forksafe__ini_strip(&value, &value_end);
    key_copy = forksafe__strndup(key, (size_t)(key_end - key));
    value_copy = forksafe__strndup(value, (size_t)(value_end - value));
    rc = key_copy && value_copy ? forksafe__map_put(&settings->local, key_copy, value_copy, line)
                                : FORKSAFE__ENOMEM;
    if (rc != 0)
        forksafe__error_set(err, source, line, "%s", forksafe__strerror(rc));
    forksafe__free(key_copy);
    forksafe__free(value_copy);
    return rc;
}

int forksafe__settings_interpolate(const forksafe__ini *ini, const char *section, const char *key,
                                   int line, char **out, forksafe__error *err)
{
    const forksafe__ini_section *found = NULL;
    const forksafe__entry *option;
    forksafe__entry located;
    loader ld;
    scope s;
    int rc;

    *out = NULL;
    if (strcmp(section, "DEFAULT") != 0 && !(found = forksafe__ini_find(ini, section))) {
        forksafe__error_set(err, ini->path, line, "no section [%s]", section);
        return FORKSAFE__ENOTFOUND;
    }
    if ((rc = loader_open(&ld, ini, NULL, err)) != 0)
        return rc;
    if ((rc = scope_open(&s, &ld, found)) != 0) {
        forksafe__error_set(err, ini->path, line, "%s", forksafe__strerror(rc));
    }
    else if (!(option = scope_find(&s, key))) {
        forksafe__error_set(err, ini->path, line, "no key '%s' in section [%s] or [DEFAULT]", key,
                            section);
        rc = FORKSAFE__ENOTFOUND;
    }
    else {
        located = *option;
        if (line > 0)
            located.line = line;
        rc = interpolate(&s, &located, out, err);
        if (rc == FORKSAFE__ENOMEM)
            forksafe__error_set(err, ini->path, located.line, "%s", forksafe__strerror(rc));
    }
    scope_close(&s);
    loader_free(&ld);
    return rc;
}

void forksafe__settings_free(forksafe__settings *settings)
{
    forksafe__free(settings->path);
    forksafe__free(settings->section);
    forksafe__map_clear(&settings->local);
    forksafe__map_clear(&settings->global);
    memset(settings, 0, sizeof(*settings));
}

/* ------------------------------------------------------------- redaction */

static int contains_ignoring_case(const char *text, const char *word)
{
    size_t length = strlen(word);

    for (; *text; text++) {
        size_t i;

        for (i = 0; i < length; i++) {
            char c = text[i];

            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            if (c != word[i])
                break;
        }
        if (i == length)
            return 1;
    }
    return 0;
}

int forksafe__is_secret_key(const char *key)
{
    static const char *const words[] = {"password", "passwd",     "secret", "token",
                                        "key",      "credential", NULL};
    size_t i;

    for (i = 0; words[i]; i++) {
        if (contains_ignoring_case(key, words[i]))
            return 1;
    }
    return 0;
}

static int is_scheme_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '-' || c == '.';
}

static int is_url_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

/* Hides the value of every NAME=VALUE whose NAME is secret-looking and
 * that starts the text, a word or a query parameter: libpq's
 * "host=db password=..." and "postgresql://db/app?password=...".  Returns a
 * new string (TEXT is freed), NULL on ENOMEM. */
static char *redact_assignments(char *text)
{
    /* "***" replaces at least one byte after at least "key=": three times
     * the length is always enough. */
    char *result = forksafe__malloc(strlen(text) * 3 + 1);
    size_t used = 0;
    const char *p = text;

    if (!result) {
        forksafe__free(text);
        return NULL;
    }
    while (*p) {
        const char *name = p, *end = p;
        char saved[64];

        if (p == text || is_url_space(p[-1]) || p[-1] == '?' || p[-1] == '&' || p[-1] == ';') {
            while (is_name_char(*end))
                end++;
        }
        if (end > name && *end == '=' && (size_t)(end - name) < sizeof(saved) && end[1] &&
            end[1] != '&' && end[1] != ';' && !is_url_space(end[1])) {
            memcpy(saved, name, (size_t)(end - name));
            saved[end - name] = '\0';
            if (forksafe__is_secret_key(saved)) {
                memcpy(result + used, name, (size_t)(end - name) + 1);
                used += (size_t)(end - name) + 1;
                memcpy(result + used, "***", 3);
                used += 3;
                for (p = end + 1; *p && *p != '&' && *p != ';' && !is_url_space(*p); p++)
                    ;
                continue;
            }
        }
        result[used++] = *p++;
    }
    result[used] = '\0';
    forksafe__free(text);
    return result;
}

char *forksafe__redact(const char *key, const char *value)
{
    size_t length = strlen(value);
    char *result;
    size_t used = 0;
    const char *p = value;

    if (forksafe__is_secret_key(key))
        return forksafe__strdup("***");
    /* Each "***" replaces at least one byte and follows at least "a://:"
     * plus '@', so three times the length is always enough. */
    result = forksafe__malloc(length * 3 + 1);
    if (!result)
        return NULL;
    while (*p) {
        const char *separator = strstr(p, "://");
        const char *authority, *end, *at = NULL, *colon, *q;

        if (!separator) {
            memcpy(result + used, p, strlen(p));
            used += strlen(p);
            break;
        }
        authority = separator + 3;
        memcpy(result + used, p, (size_t)(authority - p));
        used += (size_t)(authority - p);
        p = authority;
        if (separator == value || !is_scheme_char(separator[-1]))
            continue;
        /* The userinfo ends at the last '@' before whitespace: a password
         * with a raw '@' or '/' in it is still hidden whole, at the price of
         * hiding too much when a path holds an '@'. */
        for (end = authority; *end && !is_url_space(*end); end++) {
            if (*end == '@')
                at = end;
        }
        if (!at)
            continue;
        colon = memchr(authority, ':', (size_t)(at - authority));
        if (!colon) {
            /* A user name alone is often the credential itself
             * (https://TOKEN@host), so all of it is hidden; an '@' past a
             * '/', '?' or '#' is in the path or query, not userinfo. */
            if (at == authority || memchr(authority, '/', (size_t)(at - authority)) ||
                memchr(authority, '?', (size_t)(at - authority)) ||
                memchr(authority, '#', (size_t)(at - authority)))
                continue;
            memcpy(result + used, "***", 3);
            used += 3;
            p = at;
            continue;
        }
        if (colon + 1 == at)
            continue;
        for (q = authority; q < colon; q++) {
            if (*q == '/')
                break;
        }
        if (q < colon)
            continue; /* the ':' is past the host: a port or a path */
        memcpy(result + used, authority, (size_t)(colon + 1 - authority));
        used += (size_t)(colon + 1 - authority);
        memcpy(result + used, "***", 3);
        used += 3;
        p = at;
    }
    result[used] = '\0';
    return redact_assignments(result);
}
