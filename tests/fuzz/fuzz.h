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

#endif
