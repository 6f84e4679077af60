/*
 * paste_loader.c - one settings file as PasteDeploy's ConfigLoader holds it:
 * its interpolated defaults, and which section a name like "main" means.
 */
#include <string.h>

#include "forksafe_internal.h"

/* ---------------------------------------------------------------- defaults */

void forksafe__paste_loader_free(forksafe__paste_loader *ld)
{
    forksafe__defaults_close(&ld->parser);
    forksafe__map_clear(&ld->defaults);
    memset(ld, 0, sizeof(*ld));
}

/* NicerConfigParser.defaults(): each default interpolated against the
 * defaults alone - except that an empty result falls back to the raw value
 * (`get(...) or val`), so "a = %(empty)s" stays "%(empty)s". */
static int interpolate_defaults(forksafe__paste_loader *ld, forksafe__error *err)
{
    const char *const only_defaults[] = {"DEFAULT", NULL};
    const forksafe__scope scope = {&ld->parser, NULL};
    size_t i;
    int rc;

    if ((rc = forksafe__ini_check(ld->ini, only_defaults, err)) != 0)
        return rc;
    for (i = 0; i < ld->parser.raw.count; i++) {
        const forksafe__entry *entry = &ld->parser.raw.entries[i];
        char *value;

        if ((rc = forksafe__interpolate(&scope, entry, &value, err)) != 0)
            break;
        rc = forksafe__map_put(&ld->defaults, entry->key, value[0] ? value : entry->value,
                               entry->line);
        forksafe__free(value);
        if (rc != 0)
            break;
    }
    if (rc == FORKSAFE__ENOMEM)
        forksafe__error_set(err, ld->ini->path, 0, "%s", forksafe__strerror(rc));
    return rc;
}

int forksafe__paste_loader_open(forksafe__paste_loader *ld, const forksafe__ini *ini,
                                const forksafe__map *extra, forksafe__error *err)
{
    size_t i;
    int rc;

    memset(ld, 0, sizeof(*ld));
    ld->ini = ini;
    if ((rc = forksafe__defaults_open(&ld->parser, ini, err)) != 0)
        return rc;
    for (i = 0; extra && i < extra->count; i++) {
        const forksafe__entry *entry = &extra->entries[i];

        if (!forksafe__map_find(&ld->parser.raw, entry->key) &&
            (rc = forksafe__map_put(&ld->parser.raw, entry->key, entry->value, 0)) != 0) {
            forksafe__paste_loader_free(ld);
            forksafe__error_set(err, ini->path, 0, "%s", forksafe__strerror(rc));
            return rc;
        }
    }
    if ((rc = interpolate_defaults(ld, err)) != 0)
        forksafe__paste_loader_free(ld);
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
    forksafe__text_strip(&start, &end);
    return (size_t)(end - start) == strlen(name) && memcmp(start, name, strlen(name)) == 0;
}

/* In each group of prefixes the first prefix with a match wins; matches
 * from different groups are ambiguous. */
int forksafe__paste_find_section(const forksafe__ini *ini, int type, const char *name, int line,
                                 const forksafe__ini_section **found, forksafe__error *err)
{
    const char *const(*groups)[3] = type == FORKSAFE__PASTE_APP ? app_prefixes : filter_prefixes;
    size_t group_count = type == FORKSAFE__PASTE_APP ? 4 : 1;
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
        if (type == FORKSAFE__PASTE_APP)
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
