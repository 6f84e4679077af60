/*
 * fuzz_interpolate.c - ConfigParser's %(name)s interpolation as forksafe
 * does it (lib/interpolate.c): every key of every section of the input is
 * interpolated through the [forksafe] entry point, and [app:main] is loaded
 * through PasteDeploy's rules.  The input is a settings file that starts in
 * [DEFAULT], so the fuzzer spends its time on values, not on headers.
 */
#include "fuzz.h"

#define FILE_NAME "/nonexistent/forksafe-fuzz/app.ini"

/* Each interpolation copies [DEFAULT]: bounded so a file of many keys
 * stays fast to run. */
#define MAX_KEYS 64

/* What a value without any %(name)s reference must become: "%%" is "%",
 * any other '%' is an error (NULL is returned; *HAS_REFERENCE is set when
 * the value does hold a reference and so cannot be predicted here). */
static char *expected_without_references(const char *value, int *has_reference)
{
    char *out = malloc(strlen(value) + 1), *q = out;
    const char *p;

    if (!out)
        abort();
    *has_reference = 0;
    for (p = value; *p; p++) {
        if (*p != '%') {
            *q++ = *p;
            continue;
        }
        if (p[1] == '%') {
            *q++ = '%';
            p++;
            continue;
        }
        if (p[1] == '(')
            *has_reference = 1;
        free(out);
        return NULL;
    }
    *q = '\0';
    return out;
}

/* UTF8_CHECKED: the file has no problem outside a section, so the parser
 * found no invalid UTF-8 and neither may the result hold any. */
static void interpolate_one(const forksafe__ini *ini, const char *section,
                            const forksafe__entry *entry, int utf8_checked)
{
    forksafe__error err = {0};
    char *out = NULL, *expected;
    int has_reference;
    int rc = forksafe__interpolate_key(ini, section, entry->key, 0, &out, &err);

    fuzz_check_error(rc, &err);
    if (rc != 0 && rc != FORKSAFE__ESYNTAX)
        fuzz_fail("interpolating an existing key failed without a syntax error");
    if (rc != 0 && out)
        fuzz_fail("a failed interpolation returned a value");
    if (rc == 0 && !out)
        fuzz_fail("a successful interpolation returned no value");
    if (rc != 0 && err.line != entry->line)
        fuzz_fail("an interpolation error names another line than the key's");
    expected = expected_without_references(entry->value, &has_reference);
    if (expected && (rc != 0 || strcmp(out, expected) != 0))
        fuzz_fail("a value without references did not come out with only %% unescaped");
    if (!expected && !has_reference && rc == 0)
        fuzz_fail("a lone '%' was accepted");
    free(expected);
    if (rc == 0 && utf8_checked) {
        /* Each handler gets the value as a JSON string. */
        json_t *string = json_string(out);

        if (!string)
            fuzz_fail("an interpolated value is not valid UTF-8");
        json_decref(string);
    }
    forksafe__free(out);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static const char prefix[] = "[DEFAULT]\n";
    forksafe__ini ini;
    forksafe__settings settings;
    forksafe__error err = {0};
    char *text = fuzz_text(prefix, data, size);
    size_t i, k, keys = 0;
    int rc, utf8_checked = 1;

    rc = forksafe__ini_parse(&ini, FILE_NAME, text, strlen(prefix) + size, &err);
    free(text);
    if (rc != 0)
        fuzz_fail("parsing failed without running out of memory");
    for (i = 0; i < ini.problem_count; i++) {
        if (!ini.problems[i].section)
            utf8_checked = 0;
    }
    /* Every value, even of a file with problems: the entry point must cope
     * whatever its callers checked first. */
    for (i = 0; i < ini.count && keys < MAX_KEYS; i++) {
        const forksafe__ini_section *section = &ini.sections[i];

        for (k = 0; k < section->entries.count && keys < MAX_KEYS; k++, keys++)
            interpolate_one(&ini, section->name, &section->entries.entries[k], utf8_checked);
    }
    if (forksafe__ini_find(&ini, "app:main")) {
        memset(&err, 0, sizeof(err));
        rc = forksafe__settings_from_ini(&settings, &ini, "app:main", &err);
        fuzz_check_error(rc, &err);
        if (rc == 0) {
            fuzz_check_json(&settings.local);
            fuzz_check_json(&settings.global);
            forksafe__settings_free(&settings);
        }
    }
    forksafe__ini_free(&ini);
    return 0;
}
