/*
 * fuzz.h - what the libFuzzer harnesses share.  Each fuzz_*.c includes it
 * once and defines LLVMFuzzerTestOneInput.
 *
 * A harness checks more than "no crash": where forksafe promises something
 * about a result (the settings of a loaded file always encode as JSON, an
 * error always names its file), a broken promise is a finding too, reported
 * through fuzz_fail so libFuzzer saves the input like any crash.
 */
#ifndef FORKSAFE_FUZZ_H
#define FORKSAFE_FUZZ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "forksafe_internal.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

/* Aborts with WHAT: libFuzzer treats the abort as a crash and keeps the
 * input. */
__attribute__((noreturn, unused)) static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz: broken promise: %s\n", what);
    abort();
}

/* A failure must say where and why: a deploy that breaks on bad settings
 * has to tell the operator which file to fix. */
__attribute__((unused)) static void fuzz_check_error(int rc, const forksafe__error *err)
{
    char message[1200];

    if (rc == 0)
        return;
    if (rc > 0)
        fuzz_fail("a failure returned a positive code");
    if (!err->set || err->source[0] == '\0' || err->text[0] == '\0')
        fuzz_fail("a failure left no error message");
    forksafe__error_format(err, message, sizeof(message));
}

/* The settings are handed to every handler as JSON strings; a map that
 * cannot be encoded would fail each event delivery instead of the load. */
__attribute__((unused)) static void fuzz_check_json(const forksafe__map *map)
{
    json_t *object = forksafe__map_to_json(map);
    char *text;

    if (!object)
        fuzz_fail("loaded settings do not encode as JSON");
    text = json_dumps(object, JSON_COMPACT);
    if (!text)
        fuzz_fail("loaded settings do not serialise");
    free(text);
    json_decref(object);
}

/* A copy of DATA with a terminating NUL, for the entry points that take C
 * strings; PREFIX (may be "") goes in front. */
__attribute__((unused)) static char *fuzz_text(const char *prefix, const unsigned char *data,
                                               size_t size)
{
    size_t prefix_length = strlen(prefix);
    char *text = malloc(prefix_length + size + 1);

    if (!text)
        abort();
    memcpy(text, prefix, prefix_length);
    memcpy(text + prefix_length, data, size);
    text[prefix_length + size] = '\0';
    return text;
}

/* A private directory for the harnesses that need real files, removed
 * with what was made in it when the fuzzer exits normally.  In memory when possible:
 * a disk-backed /tmp makes every run wait on block I/O. */
static char fuzz_directory[64];
static char fuzz_made[8][128];
static int fuzz_made_count;

static void fuzz_remove_made(void)
{
    while (fuzz_made_count > 0)
        remove(fuzz_made[--fuzz_made_count]);
}

/* Returns DIRECTORY/NAME (a static buffer) and remembers it for removal. */
static const char *fuzz_made_path(const char *name)
{
    static char path[128];
    int i;

    snprintf(path, sizeof(path), "%s/%s", fuzz_directory, name);
    for (i = 0; i < fuzz_made_count; i++) {
        if (strcmp(fuzz_made[i], path) == 0)
            return path;
    }
    if (fuzz_made_count == 8)
        fuzz_fail("too many temporary files");
    snprintf(fuzz_made[fuzz_made_count++], sizeof(fuzz_made[0]), "%s", path);
    return path;
}

__attribute__((unused)) static const char *fuzz_make_directory(void)
{
    /* A crash skips atexit, so run.sh names a directory it removes itself. */
    const char *base = getenv("FUZZ_TMPDIR");

    if (!base)
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fuzz_directory, sizeof(fuzz_directory), "%s/forksafe-fuzz-XXXXXX", base);
    if (!mkdtemp(fuzz_directory))
        fuzz_fail("cannot make a temporary directory");
    snprintf(fuzz_made[fuzz_made_count++], sizeof(fuzz_made[0]), "%s", fuzz_directory);
    atexit(fuzz_remove_made);
    return fuzz_directory;
}

/* Writes DATA to DIRECTORY/NAME; returns the path (static buffer). */
__attribute__((unused)) static const char *fuzz_write_file(const char *name, const void *data,
                                                           size_t size)
{
    const char *path = fuzz_made_path(name);
    FILE *out = fopen(path, "wb");

    if (!out || fwrite(data, 1, size, out) != size || fclose(out) != 0)
        fuzz_fail("cannot write a temporary file");
    return path;
}

__attribute__((unused)) static void fuzz_make_subdirectory(const char *name)
{
    if (mkdir(fuzz_made_path(name), 0700) != 0)
        fuzz_fail("cannot make a temporary subdirectory");
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif
