/*
 * test_settings.c - PasteDeploy's local_conf and global_conf: interpolation,
 * set/get/use, section names, JSON files, overrides, the [forksafe]
 * interpolation entry point, the parsed file handed on, errors with
 * FILE:LINE, allocation failures and big inputs.  Files are written to a fresh temporary
 * directory per test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"

static char directory[256];

static void make_directory(void)
{
    snprintf(directory, sizeof(directory), "/tmp/forksafe-settings-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(directory));
}

static void remove_directory(void)
{
    char command[512];

    snprintf(command, sizeof(command), "rm -rf '%s'", directory);
    if (system(command) != 0)
        fprintf(stderr, "could not remove %s\n", directory);
}

/* Writes TEXT to NAME in the test directory; returns the full path (static
 * buffer, one of a small ring). */
static const char *write_file(const char *name, const char *text)
{
    static char paths[4][512];
    static int next;
    char *path = paths[next++ % 4];
    FILE *out;

    snprintf(path, 512, "%s/%s", directory, name);
    out = fopen(path, "wb");
    ck_assert_ptr_nonnull(out);
    fputs(text, out);
    fclose(out);
    return path;
}

static const char *local(const forksafe__settings *settings, const char *key)
{
    return forksafe__map_get(&settings->local, key);
}

static const char *global(const forksafe__settings *settings, const char *key)
{
    return forksafe__map_get(&settings->global, key);
}

/* Loads SPEC and returns the formatted error, or "" on success. */
static const char *load(forksafe__settings *settings, const char *spec)
{
    static char message[1200];
    forksafe__error err = {0};

    if (forksafe__settings_load(settings, spec, &err) == 0)
        return "";
    forksafe__error_format(&err, message, sizeof(message));
    return message;
}

/* The error that loading TEXT (as app.ini) gives, without the directory. */
static const char *error_of(const char *text)
{
    static char message[1200];
    forksafe__settings settings;
    const char *got;

    write_file("app.ini", text);
    snprintf(message, sizeof(message), "%s/app.ini", directory);
    got = load(&settings, message);
    ck_assert_msg(got[0] != '\0', "expected an error for:\n%s", text);
    ck_assert_int_eq(strncmp(got, directory, strlen(directory)), 0);
    memmove(message, got + strlen(directory) + 1, strlen(got + strlen(directory) + 1) + 1);
    return message;
}

/* ----------------------------------------------------------- interpolation */

START_TEST(interpolates_like_configparser)
{
    forksafe__settings settings;
    char expected[600];
    const char *path = write_file("app.ini", "[DEFAULT]\n"
                                             "data = %(here)s/data\n"
                                             "pct = 100%%\n"
                                             "[app:main]\n"
                                             "use = call:myapp:main\n"
                                             "db = sqlite:///%(data)s/app.db\n"
                                             "file = %(__file__)s\n"
                                             "pct_copy = %(pct)s and %%\n"
                                             "Case = A\n"
                                             "case = %(Case)s-b\n"
                                             "multi = x\n  %(Case)s\n");

    ck_assert_str_eq(load(&settings, path), "");
    snprintf(expected, sizeof(expected), "sqlite:///%s/data/app.db", directory);
    ck_assert_str_eq(local(&settings, "db"), expected);
    ck_assert_str_eq(local(&settings, "file"), path);
    ck_assert_str_eq(local(&settings, "pct_copy"), "100% and %");
    ck_assert_str_eq(local(&settings, "case"), "A-b");
    ck_assert_str_eq(local(&settings, "multi"), "x\nA");
    ck_assert_ptr_null(local(&settings, "use"));
    ck_assert_ptr_null(local(&settings, "data")); /* defaults stay global */
    ck_assert_str_eq(global(&settings, "here"), directory);
    ck_assert_str_eq(global(&settings, "__file__"), path);
    ck_assert_str_eq(global(&settings, "pct"), "100%");
    ck_assert_str_eq(settings.path, path);
    ck_assert_str_eq(settings.section, "app:main");
    ck_assert_uint_eq(settings.local.count, 6);
    forksafe__settings_free(&settings);
}
END_TEST

START_TEST(empty_default_keeps_its_raw_text)
{
    /* NicerConfigParser.defaults() does `self.get(...) or val`. */
    forksafe__settings settings;
    const char *path = write_file("app.ini", "[DEFAULT]\nempty =\nq = %(empty)s\n"
                                             "[app:main]\nuse = call:m:f\nuq = %(q)s\n");

    ck_assert_str_eq(load(&settings, path), "");
    ck_assert_str_eq(global(&settings, "q"), "%(empty)s");
    ck_assert_str_eq(local(&settings, "uq"), "");
    forksafe__settings_free(&settings);
}
END_TEST

START_TEST(ten_levels_deep_is_the_limit)
{
    forksafe__settings settings;
    char text[1024];
    size_t used;
    int depth, i;

    for (depth = 9; depth <= 10; depth++) {
        used = (size_t)snprintf(text, sizeof(text), "[app:main]\nuse = call:m:f\n");
        for (i = 0; i < depth; i++)
            used +=
                (size_t)snprintf(text + used, sizeof(text) - used, "c%d = %%(c%d)s\n", i, i + 1);
        snprintf(text + used, sizeof(text) - used, "c%d = 100%%%%\n", depth);
        if (depth == 9) {
            ck_assert_str_eq(load(&settings, write_file("app.ini", text)), "");
            ck_assert_str_eq(local(&settings, "c0"), "100%");
            forksafe__settings_free(&settings);
        }
        else {
            /* Even the "%%" at the end of the chain counts as a level. */
            ck_assert_str_eq(error_of(text), "app.ini:3: interpolating 'c0' in section [app:main] "
                                             "takes more than 10 steps; is there a loop of "
                                             "%(name)s references?");
        }
    }
}
END_TEST

START_TEST(interpolation_errors_name_file_and_line)
{
    ck_assert_str_eq(error_of("[app:main]\nuse = call:m:f\nok = 1\nbad = %(nope)s\n"),
                     "app.ini:4: 'bad' in section [app:main] refers to %(nope)s, but there is no "
                     "key 'nope' in [app:main] or [DEFAULT]");
    ck_assert_str_eq(error_of("[app:main]\nuse = call:m:f\nk = 50% off\n"),
                     "app.ini:3: bad interpolation in 'k' in section [app:main]: '%' must be "
                     "followed by '%' or '(', found '% off'");
    ck_assert_str_eq(error_of("[app:main]\nuse = call:m:f\nk = %(x)d\nx = 1\n"),
                     "app.ini:3: bad interpolation in 'k' in section [app:main]: a reference must "
                     "look like %(name)s, found '%(x)d'");
    ck_assert_str_eq(error_of("[app:main]\nuse = call:m:f\na = %(b)s\nb = %(a)s\n"),
                     "app.ini:3: interpolating 'a' in section [app:main] takes more than 10 "
                     "steps; is there a loop of %(name)s references?");
    ck_assert_str_eq(error_of("[DEFAULT]\nd = %(only_here)s\n[app:main]\nonly_here = 1\n"),
                     "app.ini:2: 'd' in section [DEFAULT] refers to %(only_here)s, but there is "
                     "no key 'only_here' in [DEFAULT]");
    /* A key the section overrides is never interpolated from [DEFAULT]. */
    ck_assert_str_eq(
        error_of("[app:main]\nuse = call:m:f\nget x = missing\n"),
        "app.ini:3: 'get x = missing' in section [app:main]: there is no global setting 'missing'");
}
END_TEST

START_TEST(values_grow_only_so_far)
{
    char text[2048];
    size_t used;
    int i;

    /* Ten references per level, eight levels: 10^9 bytes. */
    used = (size_t)snprintf(text, sizeof(text), "[app:main]\nuse = call:m:f\nx0 = 0123456789\n");
    for (i = 1; i <= 8; i++)
        used += (size_t)snprintf(text + used, sizeof(text) - used,
                                 "x%d = %%(x%d)s%%(x%d)s%%(x%d)s%%(x%d)s%%(x%d)s%%(x%d)s%%(x%d)s"
                                 "%%(x%d)s%%(x%d)s%%(x%d)s\n",
                                 i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1,
                                 i - 1);
    ck_assert_ptr_nonnull(strstr(error_of(text), "grows past 16 MiB when interpolated"));
}
END_TEST

/* -------------------------------------------------------- set, get and use */

START_TEST(set_get_use_and_friends)
{
    forksafe__settings settings;
    const char *path = write_file("app.ini", "[DEFAULT]\n"
                                             "shared = from default\n"
                                             "[app:main]\n"
                                             "use = call:myapp:main\n"
                                             "set extra = %(shared)s!\n"
                                             "get copied = extra\n"
                                             "get from_default = shared\n"
                                             "shared = shadowed\n"
                                             "filter-with = logging\n"
                                             "require = SomeDistribution\n"
                                             "kept = yes\n"
                                             "[filter:logging]\n"
                                             "use = call:myapp:filter\n");

    ck_assert_str_eq(load(&settings, path), "");
    ck_assert_str_eq(local(&settings, "kept"), "yes");
    /* The section's own value shadows the default while interpolating. */
    ck_assert_str_eq(local(&settings, "copied"), "shadowed!");
    ck_assert_str_eq(local(&settings, "from_default"), "from default");
    ck_assert_ptr_null(local(&settings, "shared"));
    ck_assert_ptr_null(local(&settings, "set extra"));
    ck_assert_ptr_null(local(&settings, "filter-with"));
    ck_assert_ptr_null(local(&settings, "require"));
    ck_assert_uint_eq(settings.local.count, 3);
    ck_assert_str_eq(global(&settings, "extra"), "shadowed!");
    ck_assert_str_eq(global(&settings, "shared"), "from default");
    forksafe__settings_free(&settings);

    ck_assert_str_eq(error_of("[app:main]\nuse = call:m:f\nfilter-with = nowhere\n"),
                     "app.ini:3: no section [filter:nowhere]");
}
END_TEST

START_TEST(use_inherits_from_other_sections_and_files)
{
    forksafe__settings settings;
    char spec[600];
    const char *path;

    write_file("base.ini", "[DEFAULT]\nbase_default = b\n"
                           "[app:main]\nuse = call:myapp:main\nfrom_base = %(here)s\n"
                           "both = base\nset base_global = bg\n");
    path =
        write_file("app.ini", "[app:main]\nuse = other\nboth = main\nset g = main\n"
                              "[app:other]\nuse = config:base.ini\nfrom_other = 1\nboth = other\n"
                              "set g = other\nset h = other\n");
    ck_assert_str_eq(load(&settings, path), "");
    ck_assert_str_eq(local(&settings, "both"), "main");
    ck_assert_str_eq(local(&settings, "from_other"), "1");
    ck_assert_str_eq(local(&settings, "from_base"), directory);
    ck_assert_str_eq(global(&settings, "g"), "main");
    ck_assert_str_eq(global(&settings, "h"), "other");
    ck_assert_str_eq(global(&settings, "base_global"), "bg");
    ck_assert_str_eq(global(&settings, "base_default"), "b");
    ck_assert_str_eq(global(&settings, "__file__"), path);
    forksafe__settings_free(&settings);

    snprintf(spec, sizeof(spec), "%s#other", path);
    ck_assert_str_eq(load(&settings, spec), "");
    ck_assert_str_eq(settings.section, "app:other");
    ck_assert_str_eq(local(&settings, "both"), "other");
    forksafe__settings_free(&settings);

    ck_assert_str_eq(error_of("[app:main]\nuse = main\n"),
                     "app.ini:2: 'main' is reached through more than 32 'use' references; do "
                     "sections use each other in a loop?");
    ck_assert_str_eq(error_of("[app:main]\nuse = call:nofunction\n"),
                     "app.ini:2: 'call:nofunction' must have the form call:MODULE:FUNCTION");
    snprintf(spec, sizeof(spec),
             "app.ini:3: %s/missing.ini: cannot open the settings file: No such file or directory",
             directory);
    ck_assert_str_eq(error_of("[app:main]\n\nuse = config:missing.ini\n"), spec);
    snprintf(spec, sizeof(spec),
             "app.ini:2: %s/base.ini: no section [app:nothere] (nor application:, composite:, "
             "pipeline: or filter-app: nothere)",
             directory);
    ck_assert_str_eq(error_of("[app:main]\nuse = config:base.ini#nothere\n"), spec);
    write_file("broken.ini", "[app:main]\nuse = call:m:f\nk = %(nope)s\n");
    snprintf(spec, sizeof(spec),
             "%s/broken.ini:3: 'k' in section [app:main] refers to %%(nope)s, but there is no key "
             "'nope' in [app:main] or [DEFAULT]",
             directory);
    ck_assert_str_eq(
        load(&settings, write_file("app.ini", "[app:main]\nuse = config:broken.ini\n")), spec);
}
END_TEST

START_TEST(section_names)
{
    forksafe__settings settings;
    forksafe__error err = {0};
    char spec[600];
    const char *path = write_file("app.ini", "[application:main]\nuse = call:m:f\nwhich = main\n"
                                             "[app:second]\nuse = call:m:f\nwhich = second\n"
                                             "[custom:thing]\nwhich = thing\n");

    ck_assert_str_eq(load(&settings, path), "");
    ck_assert_str_eq(settings.section, "application:main");
    forksafe__settings_free(&settings);
    snprintf(spec, sizeof(spec), "%s#second", path);
    ck_assert_str_eq(load(&settings, spec), "");
    ck_assert_str_eq(local(&settings, "which"), "second");
    forksafe__settings_free(&settings);
    snprintf(spec, sizeof(spec), "%s#custom:thing", path);
    ck_assert_str_eq(load(&settings, spec), "");
    ck_assert_str_eq(local(&settings, "which"), "thing");
    forksafe__settings_free(&settings);

    snprintf(spec, sizeof(spec), "%s#third", path);
    ck_assert_int_eq(forksafe__settings_load(&settings, spec, &err), FORKSAFE__ENOTFOUND);
    ck_assert_str_eq(err.text, "no section [app:third] (nor application:, composite:, pipeline: "
                               "or filter-app: third)");
    memset(&err, 0, sizeof(err));
    snprintf(spec, sizeof(spec), "%s#app:none", path);
    ck_assert_int_eq(forksafe__settings_load(&settings, spec, &err), FORKSAFE__ENOTFOUND);
    ck_assert_str_eq(err.text, "no section [app:none]");
}
END_TEST

START_TEST(from_ini_refuses_problems_in_its_sections_only)
{
    const char *text = "[uwsgi]\nenv = A\nenv = B\n[DEFAULT]\nd = 1\n[app:main]\nk = v\n"
                       "[app:broken]\nx = 1\nx = 2\n";
    forksafe__settings settings;
    forksafe__error err = {0};
    forksafe__ini ini;
    char message[1200];

    ck_assert_int_eq(forksafe__ini_parse(&ini, "mem.ini", text, strlen(text), &err), 0);
    ck_assert_int_eq(forksafe__settings_from_ini(&settings, &ini, "app:main", &err), 0);
    ck_assert_str_eq(local(&settings, "k"), "v");
    forksafe__settings_free(&settings);
    ck_assert_int_eq(forksafe__settings_from_ini(&settings, &ini, "app:broken", &err),
                     FORKSAFE__ESYNTAX);
    forksafe__error_format(&err, message, sizeof(message));
    ck_assert_str_eq(
        message, "mem.ini:10: duplicate key 'x' in section [app:broken] (first defined at line 9)");
    ck_assert_ptr_null(settings.path);
    memset(&err, 0, sizeof(err));
    ck_assert_int_eq(forksafe__settings_from_ini(&settings, &ini, "DEFAULT", &err),
                     FORKSAFE__ENOTFOUND);
    ck_assert_int_eq(forksafe__settings_from_ini(&settings, &ini, "app:none", &err),
                     FORKSAFE__ENOTFOUND);
    forksafe__ini_free(&ini);
}
END_TEST

START_TEST(relative_paths_become_absolute)
{
    forksafe__settings settings;
    char cwd[512], expected[700];

    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    ck_assert_str_eq(load(&settings, "./tests/../tests/golden/ini//basic.ini"), "");
    snprintf(expected, sizeof(expected), "%s/tests/golden/ini/basic.ini", cwd);
    ck_assert_str_eq(settings.path, expected);
    ck_assert_str_eq(global(&settings, "__file__"), expected);
    snprintf(expected, sizeof(expected), "%s/tests/golden/ini", cwd);
    ck_assert_str_eq(global(&settings, "here"), expected);
    forksafe__settings_free(&settings);
}
END_TEST

/* -------------------------------------------------------------------- JSON */

START_TEST(json_flat_object)
{
    forksafe__settings settings;
    const char *path = write_file("settings.json", "{\"s\": \"text\", \"i\": 42, \"neg\": -7,\n"
                                                   " \"r\": 0.1, \"big\": 1e22, \"small\": 1e-5,\n"
                                                   " \"whole\": 2.0, \"t\": true, \"f\": false,\n"
                                                   " \"n\": null, \"u\": \"\\u00fcn\\u00efc\"}\n");

    ck_assert_str_eq(load(&settings, path), "");
    ck_assert_str_eq(local(&settings, "s"), "text");
    ck_assert_str_eq(local(&settings, "i"), "42");
    ck_assert_str_eq(local(&settings, "neg"), "-7");
    ck_assert_str_eq(local(&settings, "r"), "0.1");
    ck_assert_str_eq(local(&settings, "big"), "1e+22");
    ck_assert_str_eq(local(&settings, "small"), "1e-05");
    ck_assert_str_eq(local(&settings, "whole"), "2.0");
    ck_assert_str_eq(local(&settings, "t"), "true");
    ck_assert_str_eq(local(&settings, "f"), "false");
    ck_assert_str_eq(local(&settings, "n"), "null");
    ck_assert_str_eq(local(&settings, "u"), "\xc3\xbcn\xc3\xaf"
                                            "c");
    ck_assert_str_eq(settings.local.entries[0].key, "s"); /* file order */
    ck_assert_str_eq(global(&settings, "__file__"), path);
    ck_assert_str_eq(global(&settings, "here"), directory);
    ck_assert_uint_eq(settings.global.count, 2);
    ck_assert_ptr_null(settings.section);
    forksafe__settings_free(&settings);
}
END_TEST

START_TEST(json_errors)
{
    forksafe__settings settings;
    forksafe__error err = {0};
    char expected[700];
    const char *path;

    path = write_file("nested.json", "{\"ok\": 1, \"db\": {\"url\": \"x\"}}");
    snprintf(expected, sizeof(expected),
             "%s: setting 'db' is an object; a JSON settings file must be flat (strings, "
             "numbers, booleans, null)",
             path);
    ck_assert_str_eq(load(&settings, path), expected);
    ck_assert_uint_eq(settings.local.count, 0);

    path = write_file("list.json", "{\"hosts\": [1, 2]}");
    ck_assert_ptr_nonnull(strstr(load(&settings, path), "'hosts' is an array"));

    path = write_file("bad.json", "{\n\"a\": 1,\n\"b\": }\n");
    snprintf(expected, sizeof(expected), "%s:3: invalid JSON: ", path);
    ck_assert_int_eq(strncmp(load(&settings, path), expected, strlen(expected)), 0);

    path = write_file("dup.json", "{\"a\": 1,\n\"a\": 2}");
    ck_assert_ptr_nonnull(strstr(load(&settings, path), "duplicate"));

    path = write_file("array.json", "[1]");
    ck_assert_ptr_nonnull(strstr(load(&settings, path), "must hold one object"));

    /* A FIFO would block json_load_file until a writer came. */
    snprintf(expected, sizeof(expected), "%s/fifo.json", directory);
    ck_assert_int_eq(mkfifo(expected, 0600), 0);
    alarm(10);
    ck_assert_int_eq(forksafe__settings_load(&settings, expected, &err), FORKSAFE__EIO);
    alarm(0);
    ck_assert_str_eq(err.text, "cannot read the settings file: it is a FIFO, not a regular file");
    memset(&err, 0, sizeof(err));

    ck_assert_int_eq(forksafe__settings_load(&settings, "/nonexistent/x.json", &err),
                     FORKSAFE__EIO);
    ck_assert_str_eq(err.source, "/nonexistent/x.json");
    memset(&err, 0, sizeof(err));
    ck_assert_int_eq(forksafe__settings_load(&settings, "/nonexistent/x.ini", &err), FORKSAFE__EIO);
    ck_assert_str_eq(err.source, "/nonexistent/x.ini");
}
END_TEST

/* ------------------------------------------------------ the file, handed on */

START_TEST(load_file_hands_on_the_parsed_file)
{
    forksafe__settings settings;
    forksafe__error err = {0};
    forksafe__ini ini;
    const char *path;

    path = write_file("app.ini", "[app:main]\nuse = call:m:f\na = 1\n[forksafe]\n"
                                 "post-fork = exec:true\n[uwsgi]\nx = 1\nx = 2\n");
    ck_assert_int_eq(forksafe__settings_load_file(&settings, path, &ini, &err), 0);
    ck_assert_str_eq(settings.section, "app:main");
    ck_assert_str_eq(local(&settings, "a"), "1");
    ck_assert_str_eq(ini.path, path);
    ck_assert_ptr_nonnull(forksafe__ini_find(&ini, "forksafe"));
    ck_assert_uint_eq(ini.problem_count, 1); /* [uwsgi]'s, for the whole-file check */
    forksafe__ini_free(&ini);
    forksafe__settings_free(&settings);

    /* A JSON file has no section; parsed as ini it holds only problems. */
    path = write_file("settings.json", "{\"a\": 1}\n");
    ck_assert_int_eq(forksafe__settings_load_file(&settings, path, &ini, &err), 0);
    ck_assert_ptr_null(settings.section);
    ck_assert_str_eq(local(&settings, "a"), "1");
    ck_assert_uint_eq(ini.count, 0);
    ck_assert_uint_gt(ini.problem_count, 0);
    forksafe__ini_free(&ini);
    forksafe__settings_free(&settings);

    /* On failure nothing is handed on. */
    path = write_file("broken.ini", "[app:other]\na = 1\n");
    ck_assert_int_eq(forksafe__settings_load_file(&settings, path, &ini, &err),
                     FORKSAFE__ENOTFOUND);
    ck_assert_ptr_null(ini.path);
    ck_assert_uint_eq(ini.count, 0);
    ck_assert_ptr_null(settings.path);
}
END_TEST

/* --------------------------------------------------------------- overrides */

START_TEST(overrides)
{
    forksafe__settings settings;
    forksafe__error err = {0};
    char message[1200];
    const char *path = write_file("app.ini", "[app:main]\nuse = call:m:f\nk = from file\n");

    ck_assert_str_eq(load(&settings, path), "");
    ck_assert_int_eq(
        forksafe__settings_override(&settings, " k = overridden ", "uwsgi.ini", 3, &err), 0);
    ck_assert_int_eq(forksafe__settings_override(&settings, "new=a=b", "uwsgi.ini", 4, &err), 0);
    ck_assert_int_eq(forksafe__settings_override(&settings, "empty=", "uwsgi.ini", 5, &err), 0);
    ck_assert_str_eq(local(&settings, "k"), "overridden");
    ck_assert_str_eq(local(&settings, "new"), "a=b");
    ck_assert_str_eq(local(&settings, "empty"), "");
    ck_assert_int_eq(forksafe__settings_override(&settings, "novalue", "uwsgi.ini", 6, &err),
                     FORKSAFE__EINVAL);
    forksafe__error_format(&err, message, sizeof(message));
    ck_assert_str_eq(message,
                     "uwsgi.ini:6: 'novalue' is not a setting override of the form KEY=VALUE");
    memset(&err, 0, sizeof(err));
    ck_assert_int_eq(forksafe__settings_override(&settings, " = x", "uwsgi.ini", 7, &err),
                     FORKSAFE__EINVAL);
    /* Not text: it could not go into the settings JSON, which used to fail
     * later as "out of memory" with no line. */
    memset(&err, 0, sizeof(err));
    ck_assert_int_eq(forksafe__settings_override(&settings, "k=caf\xe9", "uwsgi.ini", 8, &err),
                     FORKSAFE__EINVAL);
    forksafe__error_format(&err, message, sizeof(message));
    ck_assert_str_eq(message, "uwsgi.ini:8: the setting override 'k=caf\xe9' is not valid UTF-8 "
                              "(byte 0xe9)");
    ck_assert_uint_eq(settings.local.count, 3);
    ck_assert_str_eq(local(&settings, "k"), "overridden");
    forksafe__settings_free(&settings);
}
END_TEST

START_TEST(path_that_is_not_utf8)
{
    forksafe__settings settings;
    forksafe__error err = {0};
    char path[600];

    snprintf(path, sizeof(path), "%s", write_file("caf\xe9.ini", "[app:main]\nk = v\n"));
    ck_assert_int_eq(forksafe__settings_load(&settings, path, &err), FORKSAFE__EINVAL);
    ck_assert_str_eq(err.source, path);
    ck_assert_str_eq(err.text, "the settings file's path is not valid UTF-8; rename it or a "
                               "directory above it");
    memset(&err, 0, sizeof(err));
    snprintf(path, sizeof(path), "%s", write_file("caf\xe9.json", "{\"k\": \"v\"}"));
    ck_assert_int_eq(forksafe__settings_load(&settings, path, &err), FORKSAFE__EINVAL);
    ck_assert_str_eq(err.source, path);
}
END_TEST

/* ---------------------------------------------------- [forksafe] values */

START_TEST(interpolate_any_section)
{
    const char *text = "[DEFAULT]\nlog = %(here)s/log\n[forksafe]\nworker-ready = exec:x %(log)s\n"
                       "  exec:y %(local)s\nlocal = L\nbad = %(nope)s\n";
    forksafe__error err = {0};
    forksafe__ini ini;
    char message[1200];
    char *value;

    ck_assert_int_eq(forksafe__ini_parse(&ini, "/etc/app/app.ini", text, strlen(text), &err), 0);
    ck_assert_int_eq(forksafe__interpolate_key(&ini, "forksafe", "worker-ready", 4, &value, &err),
                     0);
    ck_assert_str_eq(value, "exec:x /etc/app/log\nexec:y L");
    forksafe__free(value);
    ck_assert_int_eq(forksafe__interpolate_key(&ini, "DEFAULT", "log", 0, &value, &err), 0);
    ck_assert_str_eq(value, "/etc/app/log");
    forksafe__free(value);

    ck_assert_int_eq(forksafe__interpolate_key(&ini, "forksafe", "bad", 0, &value, &err),
                     FORKSAFE__ESYNTAX);
    ck_assert_ptr_null(value);
    forksafe__error_format(&err, message, sizeof(message));
    ck_assert_str_eq(message, "/etc/app/app.ini:7: 'bad' in section [forksafe] refers to "
                              "%(nope)s, but there is no key 'nope' in [forksafe] or [DEFAULT]");
    memset(&err, 0, sizeof(err));
    ck_assert_int_eq(forksafe__interpolate_key(&ini, "forksafe", "absent", 9, &value, &err),
                     FORKSAFE__ENOTFOUND);
    ck_assert_int_eq(err.line, 9);
    ck_assert_int_eq(forksafe__interpolate_key(&ini, "nosection", "x", 0, &value, &err),
                     FORKSAFE__ENOTFOUND);
    forksafe__ini_free(&ini);
}
END_TEST

/* ------------------------------------------------------------------- scale */

START_TEST(ten_thousand_settings_load)
{
    /* Scale, not speed: bench/parse_bench measures the time. */
    size_t size = 10000 * 64 + 256, used = 0;
    char *text = malloc(size);
    forksafe__settings settings;
    const char *path;
    int i;

    used += (size_t)snprintf(text + used, size - used,
                             "[DEFAULT]\nroot = %%(here)s/r\n[app:main]\nuse = call:m:f\n");
    for (i = 0; i < 10000; i++)
        used += (size_t)snprintf(
            text + used, size - used,
            i % 3 ? "setting.%d = %%(root)s/%%(setting.0)s\n" : "setting.%d = plain value\n", i);
    path = write_file("big.ini", text);
    free(text);
    ck_assert_str_eq(load(&settings, path), "");
    ck_assert_uint_eq(settings.local.count, 10000);
    ck_assert_str_eq(forksafe__map_get(&settings.local, "setting.0"), "plain value");
    forksafe__settings_free(&settings);
}
END_TEST

START_TEST(megabyte_value)
{
    size_t length = 1 << 20;
    char *text = malloc(length + 128);
    forksafe__settings settings;
    size_t used;

    used = (size_t)sprintf(text, "[app:main]\nuse = call:m:f\nbig = %%(x)s");
    memset(text + used, 'v', length);
    used += length;
    sprintf(text + used, "\nx = <\n");
    ck_assert_str_eq(load(&settings, write_file("app.ini", text)), "");
    ck_assert_uint_eq(strlen(local(&settings, "big")), length + 1);
    ck_assert_int_eq(local(&settings, "big")[0], '<');
    forksafe__settings_free(&settings);
    free(text);
}
END_TEST

/* ------------------------------------------------------ allocation failure */

static const char *const realistic_ini = "# A Pyramid application served by uWSGI.\n"
                                         "[DEFAULT]\n"
                                         "data = %(here)s/data\n"
                                         "debug = false\n"
                                         "\n"
                                         "[app:main]\n"
                                         "use = base\n"
                                         "pyramid.reload_templates = %(debug)s\n"
                                         "sqlalchemy.url = postgresql://app:secret@db/app\n"
                                         "mako.directories =\n"
                                         "    app:templates\n"
                                         "\n"
                                         "    shared:templates\n"
                                         "set cache_dir = %(data)s/cache\n"
                                         "get cache = cache_dir\n"
                                         "filter-with = translogger\n"
                                         "\n"
                                         "[app:base]\n"
                                         "use = call:myapp:main\n"
                                         "retry.attempts = 3\n"
                                         "\n"
                                         "[filter:translogger]\n"
                                         "use = call:paste.translogger:make_filter\n"
                                         "\n"
                                         "[forksafe]\n"
                                         "worker-ready = exec:/bin/true %(data)s\n"
                                         "\n"
                                         "[uwsgi]\n"
                                         "processes = 4\n"
                                         "processes = 8\n";

/* Longer than jansson's first string buffer, so it has to grow. */
#define LONG_JSON_TEXT                                                                            \
    "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890" \
    "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890"

static void assert_load_survives_allocation_failures(const char *spec)
{
    forksafe__settings settings;
    forksafe__error err;
    long n;
    int rc;

    forksafe__alloc_install_json();
    for (n = 0;; n++) {
        memset(&err, 0, sizeof(err));
        forksafe__alloc_fail_after(n);
        rc = forksafe__settings_load(&settings, spec, &err);
        forksafe__alloc_fail_after(-1);
        if (rc == 0)
            break;
        ck_assert_msg(rc == FORKSAFE__ENOMEM, "allocation %ld: rc %d (%s)", n, rc, err.text);
        ck_assert_int_eq(err.set, 1);
        ck_assert_ptr_null(settings.path);
        ck_assert_uint_eq(settings.local.count, 0);
        ck_assert_uint_eq(settings.global.count, 0);
    }
    ck_assert_int_gt(n, 20);
    ck_assert_uint_gt(settings.local.count, 0);
    forksafe__settings_free(&settings);
}

START_TEST(ini_load_survives_every_allocation_failure)
{
    forksafe__settings settings;
    char expected[600];
    const char *path = write_file("app.ini", realistic_ini);

    ck_assert_str_eq(load(&settings, path), "");
    ck_assert_str_eq(local(&settings, "mako.directories"), "\napp:templates\n\nshared:templates");
    /* With filter-with, PasteDeploy returns this section's own local_conf:
     * nothing from [app:base]. */
    ck_assert_ptr_null(local(&settings, "retry.attempts"));
    snprintf(expected, sizeof(expected), "%s/data/cache", directory);
    ck_assert_str_eq(local(&settings, "cache"), expected);
    forksafe__settings_free(&settings);
    assert_load_survives_allocation_failures(path);

    /* The same through `use = config:` into another file. */
    write_file("base.ini",
               "[DEFAULT]\nbase = %(here)s\n[app:main]\nuse = call:m:f\nb = %(base)s\n");
    assert_load_survives_allocation_failures(
        write_file("via.ini", "[DEFAULT]\nd = 1\n[app:main]\nuse = config:base.ini\nset x = %(d)s\n"
                              "k = v\n"));
}
END_TEST

START_TEST(json_load_survives_every_allocation_failure)
{
    assert_load_survives_allocation_failures(write_file(
        "settings.json", "{\"sqlalchemy.url\": \"postgresql://db/app\", \"retry\": 3,\n"
                         " \"ratio\": 0.25, \"debug\": false, \"none\": null,\n"
                         " \"name\": \"\\u00fcber\", \"long\": \"" LONG_JSON_TEXT "\"}\n"));
}
END_TEST

START_TEST(helpers_survive_every_allocation_failure)
{
    forksafe__settings settings = {0};
    forksafe__error err;
    forksafe__ini ini;
    char *value;
    long n;
    int rc;

    ck_assert_int_eq(
        forksafe__ini_parse(&ini, "/srv/app.ini", realistic_ini, strlen(realistic_ini), &err), 0);
    for (n = 0;; n++) {
        memset(&err, 0, sizeof(err));
        forksafe__alloc_fail_after(n);
        rc = forksafe__interpolate_key(&ini, "forksafe", "worker-ready", 26, &value, &err);
        forksafe__alloc_fail_after(-1);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, FORKSAFE__ENOMEM);
        ck_assert_ptr_null(value);
    }
    ck_assert_str_eq(value, "exec:/bin/true /srv/data");
    forksafe__free(value);

    for (n = 0;; n++) {
        memset(&err, 0, sizeof(err));
        forksafe__alloc_fail_after(n);
        rc = forksafe__settings_from_ini(&settings, &ini, "app:main", &err);
        forksafe__alloc_fail_after(-1);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, FORKSAFE__ENOMEM);
    }
    for (n = 0;; n++) {
        memset(&err, 0, sizeof(err));
        forksafe__alloc_fail_after(n);
        rc = forksafe__settings_override(&settings, "new.key = v", "cli", 0, &err);
        forksafe__alloc_fail_after(-1);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, FORKSAFE__ENOMEM);
        ck_assert_ptr_null(local(&settings, "new.key"));
    }
    forksafe__alloc_fail_after(0);
    ck_assert_ptr_null(forksafe__redact("sqlalchemy.url", "postgresql://u:p@h/db"));
    forksafe__alloc_fail_after(-1);
    forksafe__settings_free(&settings);
    forksafe__ini_free(&ini);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("settings");
    TCase *core = tcase_create("core");
    TCase *chaos = tcase_create("chaos");

    tcase_add_checked_fixture(core, make_directory, remove_directory);
    tcase_set_timeout(core, 60);
    tcase_add_test(core, interpolates_like_configparser);
    tcase_add_test(core, empty_default_keeps_its_raw_text);
    tcase_add_test(core, ten_levels_deep_is_the_limit);
    tcase_add_test(core, interpolation_errors_name_file_and_line);
    tcase_add_test(core, values_grow_only_so_far);
    tcase_add_test(core, set_get_use_and_friends);
    tcase_add_test(core, use_inherits_from_other_sections_and_files);
    tcase_add_test(core, section_names);
    tcase_add_test(core, from_ini_refuses_problems_in_its_sections_only);
    tcase_add_test(core, relative_paths_become_absolute);
    tcase_add_test(core, json_flat_object);
    tcase_add_test(core, json_errors);
    tcase_add_test(core, load_file_hands_on_the_parsed_file);
    tcase_add_test(core, overrides);
    tcase_add_test(core, path_that_is_not_utf8);
    tcase_add_test(core, interpolate_any_section);
    tcase_add_test(core, ten_thousand_settings_load);
    tcase_add_test(core, megabyte_value);
    suite_add_tcase(suite, core);

    tcase_add_checked_fixture(chaos, make_directory, remove_directory);
    tcase_set_timeout(chaos, 120);
    tcase_add_test(chaos, ini_load_survives_every_allocation_failure);
    tcase_add_test(chaos, json_load_survives_every_allocation_failure);
    tcase_add_test(chaos, helpers_survive_every_allocation_failure);
    suite_add_tcase(suite, chaos);
    return suite;
}
