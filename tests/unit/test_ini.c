/*
 * test_ini.c - the raw parser: golden files, problems and checks, big
 * inputs, allocation failures.
 *
 * Golden cases live in tests/golden/ini: every NAME.ini has NAME.out, the
 * dump of the raw parse (sections, keys with lines, raw values, problems),
 * and NAME.err when loading it as settings (app:main) must fail: the first
 * line of NAME.err is the expected "FILE:LINE: text".  Set
 * FORKSAFE_UPDATE_GOLDEN=1 to rewrite the expectations from the current
 * output (then review the diff).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"

#define GOLDEN_DIR  "tests/golden/ini"
#define MAX_GOLDENS 256

static char golden_names[MAX_GOLDENS][128];
static int golden_count;

/* ----------------------------------------------------------------- helpers */

static void dump_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c == '\t')
            fputs("\\t", out);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* The golden .out format: one line per section, key and problem. */
static char *dump_ini(const forksafe__ini *ini)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    size_t i, k;

    for (i = 0; i < ini->count; i++) {
        const forksafe__ini_section *section = &ini->sections[i];

        fprintf(out, "[%s] line %d\n", section->name, section->line);
        for (k = 0; k < section->entries.count; k++) {
            const forksafe__entry *entry = &section->entries.entries[k];

            fputs("    ", out);
            dump_string(out, entry->key);
            fprintf(out, " line %d = ", entry->line);
            dump_string(out, entry->value);
            fputc('\n', out);
        }
    }
    for (i = 0; i < ini->problem_count; i++) {
        const forksafe__ini_problem *problem = &ini->problems[i];

        if (problem->section)
            fprintf(out, "problem line %d in [%s]: %s\n", problem->line, problem->section,
                    problem->text);
        else
            fprintf(out, "problem line %d (whole file): %s\n", problem->line, problem->text);
    }
    fclose(out);
    return text;
}

static char *read_text(const char *path)
{
    FILE *in = fopen(path, "rb");
    char *text;
    long size;

    if (!in)
        return NULL;
    fseek(in, 0, SEEK_END);
    size = ftell(in);
    fseek(in, 0, SEEK_SET);
    text = malloc((size_t)size + 1);
    if (fread(text, 1, (size_t)size, in) != (size_t)size)
        size = 0;
    text[size] = '\0';
    fclose(in);
    return text;
}

static void write_text(const char *path, const char *text)
{
    FILE *out = fopen(path, "wb");

    ck_assert_ptr_nonnull(out);
    fputs(text, out);
    fclose(out);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void collect_goldens(void)
{
    DIR *dir = opendir(GOLDEN_DIR);
    struct dirent *entry;

    golden_count = 0;
    if (!dir)
        return;
    while ((entry = readdir(dir)) && golden_count < MAX_GOLDENS) {
        size_t length = strlen(entry->d_name);

        if (length > 4 && strcmp(entry->d_name + length - 4, ".ini") == 0 && length < 128) {
            memcpy(golden_names[golden_count], entry->d_name, length - 4);
            golden_names[golden_count][length - 4] = '\0';
            golden_count++;
        }
    }
    closedir(dir);
    qsort(golden_names, (size_t)golden_count, sizeof(golden_names[0]), compare_names);
}

static int parse_text(forksafe__ini *ini, const char *text)
{
    forksafe__error err = {0};

    return forksafe__ini_parse(ini, "test.ini", text, strlen(text), &err);
}

/* ------------------------------------------------------------------ golden */

START_TEST(golden_case)
{
    const char *name = golden_names[_i];
    char path[512], out_path[512], err_path[512], message[1200];
    forksafe__ini ini;
    forksafe__settings settings;
    forksafe__error err = {0};
    char *dump, *expected;
    int update = getenv("FORKSAFE_UPDATE_GOLDEN") != NULL;
    int rc;

    snprintf(path, sizeof(path), GOLDEN_DIR "/%s.ini", name);
    snprintf(out_path, sizeof(out_path), GOLDEN_DIR "/%s.out", name);
    snprintf(err_path, sizeof(err_path), GOLDEN_DIR "/%s.err", name);

    ck_assert_int_eq(forksafe__ini_load(&ini, path, &err), 0);
    dump = dump_ini(&ini);
    forksafe__ini_free(&ini);
    if (update)
        write_text(out_path, dump);
    expected = read_text(out_path);
    ck_assert_msg(expected != NULL, "%s has no %s", path, out_path);
    ck_assert_msg(strcmp(dump, expected) == 0, "%s: dump differs\n--- expected\n%s--- got\n%s",
                  name, expected, dump);
    free(dump);
    free(expected);

    rc = forksafe__settings_load(&settings, path, &err);
    forksafe__error_format(&err, message, sizeof(message));
    strcat(message, "\n");
    if (update) {
        if (rc != 0)
            write_text(err_path, message);
        else
            unlink(err_path);
    }
    expected = read_text(err_path);
    if (expected) {
        ck_assert_msg(rc != 0, "%s: expected an error, settings loaded", name);
        ck_assert_str_eq(message, expected);
        free(expected);
    }
    else {
        ck_assert_msg(rc == 0, "%s: unexpected error %s", name, message);
        forksafe__settings_free(&settings);
    }
}
END_TEST

START_TEST(golden_directory_is_populated)
{
    ck_assert_int_ge(golden_count, 25);
}
END_TEST

/* ---------------------------------------------------------------- problems */

START_TEST(check_only_reports_listed_sections)
{
    const char *text = "[uwsgi]\nenv = A=1\nenv = B=2\n[app:main]\nk = v\n[other]\nx = 1\nx = 2\n";
    const char *const main_only[] = {"DEFAULT", "app:main", NULL};
    const char *const other[] = {"other", NULL};
    forksafe__error err = {0};
    char message[1200];
    forksafe__ini ini;

    ck_assert_int_eq(parse_text(&ini, text), 0);
    ck_assert_uint_eq(ini.problem_count, 2);
    ck_assert_int_eq(forksafe__ini_check(&ini, main_only, &err), 0);
    ck_assert_int_eq(err.set, 0);
    ck_assert_int_eq(forksafe__ini_check(&ini, other, &err), FORKSAFE__ESYNTAX);
    forksafe__error_format(&err, message, sizeof(message));
    ck_assert_str_eq(message,
                     "test.ini:8: duplicate key 'x' in section [other] (first defined at line 7)");
    memset(&err, 0, sizeof(err));
    ck_assert_int_eq(forksafe__ini_check(&ini, NULL, &err), FORKSAFE__ESYNTAX);
    ck_assert_int_eq(err.line, 3);
    /* The later value wins, as uWSGI-only sections may expect. */
    ck_assert_str_eq(forksafe__map_get(&forksafe__ini_find(&ini, "uwsgi")->entries, "env"), "B=2");
    forksafe__ini_free(&ini);
}
END_TEST

START_TEST(whole_file_problems_are_always_reported)
{
    const char *const main_only[] = {"app:main", NULL};
    forksafe__error err = {0};
    forksafe__ini ini;

    ck_assert_int_eq(parse_text(&ini, "stray = 1\n[app:main]\nk = v\n"), 0);
    ck_assert_int_eq(forksafe__ini_check(&ini, main_only, &err), FORKSAFE__ESYNTAX);
    ck_assert_int_eq(err.line, 1);
    ck_assert_ptr_null(ini.problems[0].section);
    /* The line is dropped; the rest still parses. */
    ck_assert_str_eq(forksafe__map_get(&forksafe__ini_find(&ini, "app:main")->entries, "k"), "v");
    forksafe__ini_free(&ini);
}
END_TEST

START_TEST(embedded_nul_is_a_problem_not_a_crash)
{
    static const char text[] = "[app:main]\nk = a\0b\nnext = 1\n";
    forksafe__error err = {0};
    forksafe__ini ini;
    const forksafe__ini_section *section;

    ck_assert_int_eq(forksafe__ini_parse(&ini, "nul.ini", text, sizeof(text) - 1, &err), 0);
    ck_assert_uint_eq(ini.problem_count, 1);
    ck_assert_int_eq(ini.problems[0].line, 2);
    section = forksafe__ini_find(&ini, "app:main");
    ck_assert_str_eq(forksafe__map_get(&section->entries, "k"), "a");
    ck_assert_str_eq(forksafe__map_get(&section->entries, "next"), "1");
    forksafe__ini_free(&ini);
}
END_TEST

/* Found by replaying the fuzz_ini corpus against PasteDeploy (make
 * fuzz-replay): the encoding check stopped at a NUL, so a bad byte
 * after it in another section (here uWSGI's) let a file through that
 * PasteDeploy refuses with UnicodeDecodeError. */
START_TEST(invalid_utf8_after_nul_is_reported)
{
    static const char text[] = "[app:main]\nuse = call:m:f\n\n[uwsgi]\nhttp = :80\0\xff\n";
    const char *const main_only[] = {"DEFAULT", "app:main", NULL};
    forksafe__error err = {0};
    forksafe__ini ini;

    ck_assert_int_eq(forksafe__ini_parse(&ini, "app.ini", text, sizeof(text) - 1, &err), 0);
    ck_assert_int_eq(forksafe__ini_check(&ini, main_only, &err), FORKSAFE__ESYNTAX);
    ck_assert_int_eq(err.line, 5);
    ck_assert_str_eq(err.text, "byte 0xff (byte 12 of the line) is not valid UTF-8, and "
                               "PasteDeploy reads settings files as UTF-8");
    ck_assert_str_eq(forksafe__map_get(&forksafe__ini_find(&ini, "uwsgi")->entries, "http"), ":80");
    forksafe__ini_free(&ini);
}
END_TEST

START_TEST(missing_file_names_the_path)
{
    forksafe__error err = {0};
    char message[1200];
    forksafe__ini ini;

    ck_assert_int_eq(forksafe__ini_load(&ini, "tests/golden/ini/no-such-file.ini", &err),
                     FORKSAFE__EIO);
    forksafe__error_format(&err, message, sizeof(message));
    ck_assert_str_eq(message, "tests/golden/ini/no-such-file.ini: cannot open the settings file: "
                              "No such file or directory");
    ck_assert_uint_eq(ini.count, 0);
    memset(&err, 0, sizeof(err));
    ck_assert_int_eq(forksafe__ini_load(&ini, "tests/golden", &err), FORKSAFE__EIO);
    ck_assert_str_eq(err.text, "cannot read the settings file: it is a directory, not a regular "
                               "file");
}
END_TEST

/* Opening a FIFO for reading waits for a writer: a settings file that is
 * one must be refused at once, not hang the start-up. */
START_TEST(fifo_is_refused_without_blocking)
{
    char directory[] = "/tmp/forksafe-fifo-XXXXXX", path[64];
    forksafe__error err = {0};
    forksafe__ini ini;

    ck_assert_ptr_nonnull(mkdtemp(directory));
    snprintf(path, sizeof(path), "%s/app.ini", directory);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    alarm(10); /* a regression hangs here: let Check report it */
    ck_assert_int_eq(forksafe__ini_load(&ini, path, &err), FORKSAFE__EIO);
    alarm(0);
    ck_assert_str_eq(err.text, "cannot read the settings file: it is a FIFO, not a regular file");
    ck_assert_int_eq(forksafe__ini_load(&ini, "/dev/null", &err), FORKSAFE__EIO);
    unlink(path);
    rmdir(directory);
}
END_TEST

START_TEST(value_lines_skip_comment_lines)
{
    forksafe__ini ini;

    ck_assert_int_eq(parse_text(&ini, "; 1\n[s]\nk =\n  a\n# 5\n; 6\n\n  b\n# 9\n  c\n"), 0);
    ck_assert_int_eq(forksafe__ini_value_line(&ini, 3, 0), 3);
    ck_assert_int_eq(forksafe__ini_value_line(&ini, 3, 1), 4);
    ck_assert_int_eq(forksafe__ini_value_line(&ini, 3, 2), 7);
    ck_assert_int_eq(forksafe__ini_value_line(&ini, 3, 3), 8);
    ck_assert_int_eq(forksafe__ini_value_line(&ini, 3, 4), 10);
    ck_assert_str_eq(forksafe__map_get(&forksafe__ini_find(&ini, "s")->entries, "k"),
                     "\na\n\nb\nc");
    forksafe__ini_free(&ini);
}
END_TEST

START_TEST(empty_input)
{
    forksafe__ini ini;

    ck_assert_int_eq(parse_text(&ini, ""), 0);
    ck_assert_uint_eq(ini.count, 0);
    ck_assert_uint_eq(ini.problem_count, 0);
    ck_assert_ptr_null(forksafe__ini_find(&ini, "DEFAULT"));
    forksafe__ini_free(&ini);
    forksafe__ini_free(&ini); /* freeing twice is harmless */
}
END_TEST

/* ------------------------------------------------------------------- strip */

START_TEST(strip_removes_python_whitespace)
{
    const char *text = "\xc2\xa0\t x y\xe3\x80\x80\x0b\xe2\x80\x8a";
    const char *start = text, *end = text + strlen(text);

    forksafe__text_strip(&start, &end);
    ck_assert_int_eq((int)(end - start), 3);
    ck_assert_int_eq(memcmp(start, "x y", 3), 0);
    /* U+200B ZERO WIDTH SPACE is not whitespace for Python. */
    text = "\xe2\x80\x8bz";
    start = text;
    end = text + strlen(text);
    forksafe__text_strip(&start, &end);
    ck_assert_ptr_eq(start, text);
}
END_TEST

/* ------------------------------------------------------------- big inputs */

START_TEST(ten_thousand_keys_parse)
{
    /* Scale, not speed: bench/parse_bench measures the time. */
    size_t size = 10000 * 48 + 64, used = 0;
    char *text = malloc(size);
    forksafe__ini ini;
    int i;

    used += (size_t)snprintf(text + used, size - used, "[app:main]\n");
    for (i = 0; i < 10000; i++)
        used += (size_t)snprintf(text + used, size - used, "setting.number.%d = value %d\n", i, i);
    i = parse_text(&ini, text);
    free(text);
    ck_assert_int_eq(i, 0);
    ck_assert_uint_eq(ini.sections[0].entries.count, 10000);
    ck_assert_str_eq(ini.sections[0].entries.entries[9999].value, "value 9999");
    ck_assert_uint_eq(ini.problem_count, 0);
    forksafe__ini_free(&ini);
}
END_TEST

START_TEST(huge_values_are_not_truncated)
{
    size_t line_length = 1 << 20;
    char *text = malloc(line_length * 2 + 1024);
    const forksafe__ini_section *section;
    const char *value;
    forksafe__ini ini;
    size_t used = 0, i;

    used += (size_t)sprintf(text, "[app:main]\nbig = ");
    memset(text + used, 'x', line_length);
    used += line_length;
    used += (size_t)sprintf(text + used, "\nmulti = start\n");
    /* 1 MiB more over 16,384 continuation lines. */
    for (i = 0; i < 16384; i++) {
        memset(text + used, ' ', 2);
        memset(text + used + 2, 'y', 61);
        text[used + 63] = '\n';
        used += 64;
    }
    text[used] = '\0';
    ck_assert_int_eq(parse_text(&ini, text), 0);
    section = forksafe__ini_find(&ini, "app:main");
    ck_assert_uint_eq(strlen(forksafe__map_get(&section->entries, "big")), line_length);
    value = forksafe__map_get(&section->entries, "multi");
    ck_assert_uint_eq(strlen(value), strlen("start") + 16384 * 62);
    ck_assert_int_eq(strncmp(value, "start\nyyy", 9), 0);
    forksafe__ini_free(&ini);
    free(text);
}
END_TEST

START_TEST(many_sections)
{
    size_t size = 5000 * 32, used = 0;
    char *text = malloc(size);
    forksafe__ini ini;
    int i;

    for (i = 0; i < 5000; i++)
        used += (size_t)snprintf(text + used, size - used, "[s%d]\nk = %d\n", i, i);
    used += (size_t)snprintf(text + used, size - used, "[s17]\nk = again\n");
    ck_assert_int_eq(parse_text(&ini, text), 0);
    ck_assert_uint_eq(ini.count, 5000);
    ck_assert_uint_eq(ini.problem_count, 2); /* duplicate section, then its duplicate key */
    ck_assert_str_eq(ini.problems[0].text, "duplicate section [s17] (first defined at line 35)");
    forksafe__ini_free(&ini);
    free(text);
}
END_TEST

/* ------------------------------------------------------- allocation failure */

START_TEST(parse_survives_every_allocation_failure)
{
    const char *text = "[DEFAULT]\nhere_too = %(here)s\n[app:main]\nuse = egg:x\n"
                       "multi = a\n  b\n\n  c\nk = v\nk = again\nbad line\n[uwsgi]\nm = 1\n";
    forksafe__error err;
    forksafe__ini ini;
    long n;
    int rc;

    for (n = 0;; n++) {
        memset(&err, 0, sizeof(err));
        forksafe__alloc_fail_after(n);
        rc = forksafe__ini_parse(&ini, "chaos.ini", text, strlen(text), &err);
        forksafe__alloc_fail_after(-1);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, FORKSAFE__ENOMEM);
        ck_assert_uint_eq(ini.count, 0);
        ck_assert_ptr_null(ini.path);
        ck_assert_int_eq(err.set, 1);
    }
    ck_assert_int_gt(n, 10);
    ck_assert_uint_eq(ini.problem_count, 2);
    forksafe__ini_free(&ini);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("ini");
    TCase *golden = tcase_create("golden");
    TCase *core = tcase_create("core");

    collect_goldens();
    tcase_add_test(golden, golden_directory_is_populated);
    tcase_add_loop_test(golden, golden_case, 0, golden_count);
    suite_add_tcase(suite, golden);

    tcase_set_timeout(core, 30);
    tcase_add_test(core, check_only_reports_listed_sections);
    tcase_add_test(core, whole_file_problems_are_always_reported);
    tcase_add_test(core, embedded_nul_is_a_problem_not_a_crash);
    tcase_add_test(core, invalid_utf8_after_nul_is_reported);
    tcase_add_test(core, missing_file_names_the_path);
    tcase_add_test(core, fifo_is_refused_without_blocking);
    tcase_add_test(core, value_lines_skip_comment_lines);
    tcase_add_test(core, empty_input);
    tcase_add_test(core, strip_removes_python_whitespace);
    tcase_add_test(core, ten_thousand_keys_parse);
    tcase_add_test(core, huge_values_are_not_truncated);
    tcase_add_test(core, many_sections);
    tcase_add_test(core, parse_survives_every_allocation_failure);
    suite_add_tcase(suite, core);
    return suite;
}
