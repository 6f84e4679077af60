/*
 * fuzz_ini.c - the settings-file parser (lib/ini.c) and PasteDeploy's view
 * of it (lib/paste.c).  The input is a whole settings file; every
 * section of it is loaded as the application, as `forksafe-settings =
 * FILE#NAME` would.
 */
#define _GNU_SOURCE /* memmem */
#include "fuzz.h"

/* The file is parsed from memory as DIRECTORY/app.ini; it is written there
 * too only when it can read itself (`use = config:app.ini`).  Beside it,
 * other.ini and an empty sub/ give `config:` references something to find,
 * including through "sub/../". */
static char file_name[128];

static const char other_ini[] = "[DEFAULT]\n"
                                "shared = from other\n"
                                "ref = %(here)s/%(shared)s\n"
                                "[app:main]\n"
                                "use = call:m:f\n"
                                "x = %(ref)s\n"
                                "[app:loop]\n"
                                "use = config:other.ini#loop\n"
                                "[filter:f]\n"
                                "paste.filter_factory = m:f\n"
                                "[pipeline:p]\n"
                                "pipeline = f main\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_make_directory();
    fuzz_write_file("other.ini", other_ini, sizeof(other_ini) - 1);
    fuzz_make_subdirectory("sub");
    snprintf(file_name, sizeof(file_name), "%s", fuzz_write_file("app.ini", "", 0));
    return 0;
}

/* Enough to load every kind of section a small file holds, without making
 * a file of thousands of sections quadratic. */
#define MAX_SECTIONS_LOADED 16

/* Line breaks as the parser counts them: "\n", "\r\n" and a lone "\r". */
static int count_lines(const unsigned char *data, size_t size)
{
    int lines = 1;
    size_t i;

    for (i = 0; i < size; i++) {
        if (data[i] == '\n' || (data[i] == '\r' && (i + 1 == size || data[i + 1] != '\n')))
            lines++;
    }
    return lines;
}

static void check_structure(const forksafe__ini *ini, int lines)
{
    size_t i, k;

    for (i = 0; i < ini->count; i++) {
        const forksafe__ini_section *section = &ini->sections[i];

        if (forksafe__ini_find(ini, section->name) != section)
            fuzz_fail("a section name appears twice, or cannot be found");
        if (section->line < 1 || section->line > lines)
            fuzz_fail("a section's line is outside the file");
        for (k = 0; k < section->entries.count; k++) {
            const forksafe__entry *entry = &section->entries.entries[k];
            const char *start = entry->key, *end = entry->key + strlen(entry->key);

            if (entry->line < 1 || entry->line > lines)
                fuzz_fail("a key's line is outside the file");
            forksafe__text_strip(&start, &end);
            if (start != entry->key || *end != '\0')
                fuzz_fail("a key keeps surrounding whitespace");
            if (section->entries.count < 64 &&
                forksafe__map_find(&section->entries, entry->key) != entry)
                fuzz_fail("a key appears twice in one section");
        }
    }
    for (i = 0; i < ini->problem_count; i++) {
        const forksafe__ini_problem *problem = &ini->problems[i];

        if (problem->line < 1 || problem->line > lines)
            fuzz_fail("a problem's line is outside the file");
        if (problem->section && !forksafe__ini_find(ini, problem->section))
            fuzz_fail("a problem names a section the file does not have");
        if (i > 0 && problem->line < ini->problems[i - 1].line)
            fuzz_fail("problems are out of line order");
    }
}

/* PasteDeploy decodes the whole file as strict UTF-8 and refuses it at the
 * first bad byte, wherever it is; jansson's decoder applies the same rules
 * (no overlong forms, surrogates or code points past U+10FFFF), so it is
 * the reference here. */
static void check_encoding(const forksafe__ini *ini, const unsigned char *data, size_t size)
{
    json_t *decoded = json_stringn((const char *)data, size);
    int reported = 0;
    size_t i;

    for (i = 0; i < ini->problem_count; i++) {
        /* Other problems quote the line, which may say anything. */
        if (!ini->problems[i].section && strncmp(ini->problems[i].text, "byte 0x", 7) == 0 &&
            strstr(ini->problems[i].text, "is not valid UTF-8"))
            reported++;
    }
    if (!decoded && reported != 1)
        fuzz_fail("invalid UTF-8 is not reported exactly once");
    if (decoded && reported)
        fuzz_fail("valid UTF-8 is reported as invalid");
    json_decref(decoded);
}

static void load_section(const forksafe__ini *ini, const char *name)
{
    forksafe__settings settings;
    forksafe__error err = {0};
    int rc = forksafe__settings_from_ini(&settings, ini, name, &err);

    fuzz_check_error(rc, &err);
    if (rc == FORKSAFE__ENOMEM || rc == FORKSAFE__ENOTFOUND)
        fuzz_fail("loading an existing section failed without a syntax error");
    if (rc != 0)
        return;
    if (strcmp(settings.path, file_name) != 0 || strcmp(settings.section, name) != 0)
        fuzz_fail("the settings name another file or section");
    if (forksafe__map_get(&settings.local, "use"))
        fuzz_fail("'use' is left in local_conf");
    if (!forksafe__map_get(&settings.global, "here") ||
        !forksafe__map_get(&settings.global, "__file__"))
        fuzz_fail("global_conf lacks here or __file__");
    fuzz_check_json(&settings.local);
    fuzz_check_json(&settings.global);
    forksafe__settings_free(&settings);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    forksafe__ini ini;
    forksafe__error err = {0};
    size_t i, loaded = 0;
    int rc;

    if (memmem(data, size, "config:", 7))
        fuzz_write_file("app.ini", data, size);
    rc = forksafe__ini_parse(&ini, file_name, (const char *)data, size, &err);
    if (rc != 0)
        fuzz_fail("parsing failed without running out of memory");
    check_structure(&ini, count_lines(data, size));
    check_encoding(&ini, data, size);

    rc = forksafe__ini_check(&ini, NULL, &err);
    fuzz_check_error(rc, &err);
    if ((rc != 0) != (ini.problem_count > 0))
        fuzz_fail("the check disagrees with the recorded problems");
    if (rc != 0 && err.line != ini.problems[0].line)
        fuzz_fail("the check reports another line than the first problem's");

    for (i = 0; i < ini.count && loaded < MAX_SECTIONS_LOADED; i++) {
        if (strcmp(ini.sections[i].name, "DEFAULT") == 0)
            continue;
        load_section(&ini, ini.sections[i].name);
        loaded++;
    }
    forksafe__ini_free(&ini);
    return 0;
}
