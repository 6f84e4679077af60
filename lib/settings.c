/*
 * settings.c - what Pyramid sees as registry.settings, from a spec
 * PATH[#NAME]: the one place that splits a spec and tells a JSON file from
 * an ini file, and that reads the file - once, handing the parsed file on
 * to the caller for its [forksafe] section.
 */
#include <string.h>

#include "forksafe_internal.h"

static int ends_with(const char *text, const char *suffix)
{
    size_t length = strlen(text), suffix_length = strlen(suffix);

    return length >= suffix_length && strcmp(text + length - suffix_length, suffix) == 0;
}

size_t forksafe__settings_path_length(const char *spec)
{
    return strcspn(spec, "#");
}

/* The settings of the application NAME of INI, as PasteDeploy's
 * appconfig('config:PATH#NAME') computes them. */
static int settings_from_named(forksafe__settings *settings, const forksafe__ini *ini,
                               const char *name, forksafe__error *err)
{
    const char *const only_defaults[] = {"DEFAULT", NULL};
    const forksafe__ini_section *section;
    char *section_name = NULL;
    int rc;

    /* The file's own errors come before the search for the section, as in
     * PasteDeploy. */
    rc = forksafe__ini_check(ini, only_defaults, err);
    if (rc == 0 && strchr(name, ':')) {
        section_name = forksafe__strdup(name);
        if (!section_name) {
            rc = FORKSAFE__ENOMEM;
            forksafe__error_set(err, ini->path, 0, "%s", forksafe__strerror(rc));
        }
    }
    else if (rc == 0) {
        rc = forksafe__paste_find_section(ini, FORKSAFE__PASTE_APP, name, 0, &section, err);
        if (rc == 0 && !(section_name = forksafe__strdup(section->name))) {
            rc = FORKSAFE__ENOMEM;
            forksafe__error_set(err, ini->path, 0, "%s", forksafe__strerror(rc));
        }
    }
    if (rc == 0)
        rc = forksafe__settings_from_ini(settings, ini, section_name, err);
    forksafe__free(section_name);
    return rc;
}

/* The settings of TEXT, the contents of PATH; INI receives TEXT parsed as
 * an ini file if not NULL. */
static int settings_from_text(forksafe__settings *settings, const char *path, const char *name,
                              const char *text, size_t length, forksafe__ini *ini,
                              forksafe__error *err)
{
    forksafe__ini parsed;
    int rc;

    if (ends_with(path, ".json")) {
        rc = forksafe__settings_from_json(settings, path, text, length, err);
        if (rc == 0 && ini)
            rc = forksafe__ini_parse(ini, path, text, length, err);
        return rc;
    }
    if ((rc = forksafe__ini_parse(&parsed, path, text, length, err)) != 0)
        return rc;
    rc = settings_from_named(settings, &parsed, name, err);
    if (rc == 0 && ini)
        *ini = parsed;
    else
        forksafe__ini_free(&parsed);
    return rc;
}

int forksafe__settings_load_file(forksafe__settings *settings, const char *spec, forksafe__ini *ini,
                                 forksafe__error *err)
{
    const char *hash = spec + forksafe__settings_path_length(spec);
    const char *name = hash[0] && hash[1] ? hash + 1 : "main";
    char *path, *text = NULL;
    size_t length;
    int rc;

    memset(settings, 0, sizeof(*settings));
    if (ini)
        memset(ini, 0, sizeof(*ini));
    if (!(path = forksafe__strndup(spec, (size_t)(hash - spec)))) {
        forksafe__error_set(err, spec, 0, "%s", forksafe__strerror(FORKSAFE__ENOMEM));
        return FORKSAFE__ENOMEM;
    }
    if (ends_with(path, ".json") && path[forksafe__utf8_invalid_offset(path)]) {
        /* Checked before the file is opened; an ini file's path is checked
         * as its defaults are built (here and __file__ hold it). */
        forksafe__error_set(err, path, 0,
                            "the settings file's path is not valid UTF-8; rename it or a "
                            "directory above it");
        rc = FORKSAFE__EINVAL;
    }
    else if ((rc = forksafe__read_settings_file(path, &text, &length, err)) == 0) {
        rc = settings_from_text(settings, path, name, text, length, ini, err);
    }
    if (rc != 0)
        forksafe__settings_free(settings);
    forksafe__free(text);
    forksafe__free(path);
    return rc;
}

int forksafe__settings_load(forksafe__settings *settings, const char *spec, forksafe__error *err)
{
    return forksafe__settings_load_file(settings, spec, NULL, err);
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
        forksafe__text_strip(&key, &key_end);
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
    forksafe__text_strip(&value, &value_end);
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

void forksafe__settings_free(forksafe__settings *settings)
{
    forksafe__free(settings->path);
    forksafe__free(settings->section);
    forksafe__map_clear(&settings->local);
    forksafe__map_clear(&settings->global);
    memset(settings, 0, sizeof(*settings));
}
