/*
 * interpolate.c - ConfigParser's BasicInterpolation: %(name)s and %% in a
 * value, looked up in its section and then in the file's defaults.
 *
 * The defaults (PasteDeploy's here and __file__, then [DEFAULT]) are built
 * once per file; a scope is a section plus those defaults, so reading every
 * key of a section costs one lookup per reference and nothing per key.
 */
#include <stdio.h>
#include <string.h>

#include "forksafe_internal.h"

/* configparser.MAX_INTERPOLATION_DEPTH */
#define MAX_INTERPOLATION_DEPTH 10

/* Ten levels of interpolation can still multiply a value enormously; Python
 * would try to build it anyway, forksafe refuses past this. */
#define MAX_INTERPOLATED_SIZE ((size_t)16 << 20)

/* One value being interpolated, and what an error message needs. */
typedef struct expansion {
    const forksafe__scope *scope;
    const char *path;
    const char *section_name;
    const forksafe__entry *option;
    char *text;
    size_t length;
    size_t capacity;
    forksafe__error *err;
} expansion;

/* --------------------------------------------------------------- defaults */

void forksafe__defaults_close(forksafe__defaults *defaults)
{
    forksafe__free(defaults->file);
    forksafe__map_clear(&defaults->raw);
    memset(defaults, 0, sizeof(*defaults));
}

int forksafe__defaults_open(forksafe__defaults *defaults, const forksafe__ini *ini,
                            forksafe__error *err)
{
    const forksafe__ini_section *section = forksafe__ini_find(ini, "DEFAULT");
    char *here = NULL;
    int rc = FORKSAFE__ENOMEM;

    memset(defaults, 0, sizeof(*defaults));
    defaults->ini = ini;
    if (ini->path[forksafe__utf8_invalid_offset(ini->path)]) {
        /* here and __file__ are text to Pyramid and in every payload. */
        forksafe__error_set(err, ini->path, 0,
                            "the settings file's path is not valid UTF-8; rename it or a "
                            "directory above it");
        return FORKSAFE__EINVAL;
    }
    defaults->file = forksafe__path_absolute(ini->path);
    if (!defaults->file || !(here = forksafe__path_directory(defaults->file)))
        goto fail;
    if ((rc = forksafe__map_put(&defaults->raw, "here", here, 0)) != 0 ||
        (rc = forksafe__map_put(&defaults->raw, "__file__", defaults->file, 0)) != 0)
        goto fail;
    if (section && (rc = forksafe__map_update(&defaults->raw, &section->entries)) != 0)
        goto fail;
    forksafe__free(here);
    return 0;

fail:
    forksafe__free(here);
    forksafe__defaults_close(defaults);
    forksafe__error_set(err, ini->path, 0, "%s", forksafe__strerror(rc));
    return rc;
}

static const forksafe__entry *scope_find(const forksafe__scope *scope, const char *key)
{
    const forksafe__entry *entry =
        scope->section ? forksafe__map_find(&scope->section->entries, key) : NULL;

    return entry ? entry : forksafe__map_find(&scope->defaults->raw, key);
}

/* ---------------------------------------------------------- interpolation */

static int expansion_append(expansion *x, const char *text, size_t length)
{
    if (x->length + length > MAX_INTERPOLATED_SIZE) {
        forksafe__error_set(x->err, x->path, x->option->line,
                            "the value of '%s' in section [%s] grows past %zu MiB when "
                            "interpolated",
                            x->option->key, x->section_name, MAX_INTERPOLATED_SIZE >> 20);
        return FORKSAFE__ESYNTAX;
    }
    return forksafe__text_append(&x->text, &x->length, &x->capacity, text, length);
}

static int interpolation_error(expansion *x, const char *what, const char *rest)
{
    char shown[64];

    snprintf(shown, sizeof(shown), "%s", rest);
    if (strlen(rest) >= sizeof(shown))
        memcpy(shown + sizeof(shown) - 4, "...", 4);
    forksafe__error_set(x->err, x->path, x->option->line,
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
        forksafe__error_set(x->err, x->path, x->option->line,
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
            forksafe__error_set(x->err, x->path, x->option->line,
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

int forksafe__interpolate(const forksafe__scope *scope, const forksafe__entry *option, char **out,
                          forksafe__error *err)
{
    expansion x;
    int rc;

    if (!strchr(option->value, '%')) {
        *out = forksafe__strdup(option->value);
        return *out ? 0 : FORKSAFE__ENOMEM;
    }
    memset(&x, 0, sizeof(x));
    x.scope = scope;
    x.path = scope->defaults->ini->path;
    x.section_name = scope->section ? scope->section->name : "DEFAULT";
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

int forksafe__interpolate_key(const forksafe__ini *ini, const char *section, const char *key,
                              int line, char **out, forksafe__error *err)
{
    forksafe__defaults defaults;
    forksafe__scope scope = {&defaults, NULL};
    const forksafe__entry *option;
    forksafe__entry located;
    int rc;

    *out = NULL;
    if (strcmp(section, "DEFAULT") != 0 && !(scope.section = forksafe__ini_find(ini, section))) {
        forksafe__error_set(err, ini->path, line, "no section [%s]", section);
        return FORKSAFE__ENOTFOUND;
    }
    if ((rc = forksafe__defaults_open(&defaults, ini, err)) != 0)
        return rc;
    if (!(option = scope_find(&scope, key))) {
        forksafe__error_set(err, ini->path, line, "no key '%s' in section [%s] or [DEFAULT]", key,
                            section);
        rc = FORKSAFE__ENOTFOUND;
    }
    else {
        located = *option;
        if (line > 0)
            located.line = line;
        rc = forksafe__interpolate(&scope, &located, out, err);
        if (rc == FORKSAFE__ENOMEM)
            forksafe__error_set(err, ini->path, located.line, "%s", forksafe__strerror(rc));
    }
    forksafe__defaults_close(&defaults);
    return rc;
}
