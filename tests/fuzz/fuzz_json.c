/*
 * fuzz_json.c - the JSON settings loader (`forksafe-settings = FILE.json`,
 * lib/settings_json.c).  It reads a file, so each input is written to a
 * settings.json in a private temporary directory first.
 */
#include "fuzz.h"

static char path[128];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_make_directory();
    snprintf(path, sizeof(path), "%s", fuzz_write_file("settings.json", "", 0));
    return 0;
}

/* A number's text must read back as the same number: Python's float()
 * of a setting would otherwise disagree with the JSON the operator wrote. */
static void check_numbers(const unsigned char *data, size_t size, const forksafe__map *local)
{
    json_error_t error;
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &error);
    const char *key;
    json_t *value;

    if (!root)
        fuzz_fail("forksafe accepted JSON that jansson refuses");
    json_object_foreach(root, key, value)
    {
        const char *text = forksafe__map_get(local, key);

        if (!text)
            fuzz_fail("a key of the JSON object is missing from the settings");
        if (json_is_real(value) && strtod(text, NULL) != json_real_value(value))
            fuzz_fail("a real does not read back as the same number");
        if (json_is_integer(value) && strtoll(text, NULL, 10) != json_integer_value(value))
            fuzz_fail("an integer does not read back as the same number");
    }
    json_decref(root);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    forksafe__settings settings;
    forksafe__error err = {0};
    int rc;

    fuzz_write_file("settings.json", data, size);
    rc = forksafe__settings_load(&settings, path, &err);
    fuzz_check_error(rc, &err);
    if (rc != 0 && rc != FORKSAFE__ESYNTAX)
        fuzz_fail("a readable JSON file failed without a syntax error");
    if (rc != 0 && strcmp(err.source, path) != 0)
        fuzz_fail("a JSON error names another file");
    if (rc != 0)
        return 0;
    if (settings.section || strcmp(settings.path, path) != 0)
        fuzz_fail("JSON settings name a section or another file");
    if (!forksafe__map_get(&settings.global, "here") ||
        !forksafe__map_get(&settings.global, "__file__"))
        fuzz_fail("global_conf lacks here or __file__");
    fuzz_check_json(&settings.local);
    fuzz_check_json(&settings.global);
    check_numbers(data, size, &settings.local);
    forksafe__settings_free(&settings);
    return 0;
}
