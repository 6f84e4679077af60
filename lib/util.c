/*
 * util.c - errors, allocation with failure injection, and the small name
 * tables shared by every module.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forksafe_internal.h"

/* ------------------------------------------------------------------ errors */

const char *forksafe__strerror(int code)
{
    switch (code) {
#define FORKSAFE__ERROR_TEXT(id, value, text) \
    case id:                                  \
        return text;
        FORKSAFE__ERRORS(FORKSAFE__ERROR_TEXT)
#undef FORKSAFE__ERROR_TEXT
    case 0:
        return "success";
    default:
        return "unknown error";
    }
}

void forksafe__error_set(forksafe__error *err, const char *source, int line, const char *fmt, ...)
{
    va_list ap;

    if (!err || err->set)
        return;
    err->set = 1;
    snprintf(err->source, sizeof(err->source), "%s", source ? source : "forksafe");
    err->line = line;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
}

void forksafe__error_format(const forksafe__error *err, char *buf, size_t size)
{
    if (!err->set)
        snprintf(buf, size, "no error");
    else if (err->line > 0)
        snprintf(buf, size, "%s:%d: %s", err->source, err->line, err->text);
    else
        snprintf(buf, size, "%s: %s", err->source, err->text);
}

/* -------------------------------------------------------------- allocation */

/* Not thread-safe on purpose: failure injection is a single-threaded test
 * facility, and the counters cost one increment per allocation. */
static long allocations_left = -1;
static unsigned long allocation_attempts;

static int allocation_allowed(void)
{
    allocation_attempts++;
    if (allocations_left < 0)
        return 1;
    if (allocations_left == 0)
        return 0;
    allocations_left--;
    return 1;
}

void forksafe__alloc_fail_after(long n)
{
    allocations_left = n;
}

unsigned long forksafe__alloc_attempts(void)
{
    return allocation_attempts;
}

void *forksafe__malloc(size_t size)
{
    return allocation_allowed() ? malloc(size ? size : 1) : NULL;
}

void *forksafe__calloc(size_t count, size_t size)
{
    return allocation_allowed() ? calloc(count ? count : 1, size ? size : 1) : NULL;
}

void *forksafe__realloc(void *ptr, size_t size)
{
    return allocation_allowed() ? realloc(ptr, size ? size : 1) : NULL;
}

int forksafe__text_append(char **text, size_t *length, size_t *capacity, const char *more,
                          size_t more_length)
{
    if (*length + more_length + 1 > *capacity) {
        size_t grown_capacity = *capacity ? *capacity : 64;
        char *grown;

        while (grown_capacity < *length + more_length + 1)
            grown_capacity *= 2;
        grown = forksafe__realloc(*text, grown_capacity);
        if (!grown)
            return FORKSAFE__ENOMEM;
        *text = grown;
        *capacity = grown_capacity;
    }
    memcpy(*text + *length, more, more_length);
    *length += more_length;
    (*text)[*length] = '\0';
    return 0;
}

char *forksafe__strndup(const char *s, size_t n)
{
    size_t length = strnlen(s, n);
    char *copy = forksafe__malloc(length + 1);

    if (!copy)
        return NULL;
    memcpy(copy, s, length);
    copy[length] = '\0';
    return copy;
}

char *forksafe__strdup(const char *s)
{
    return forksafe__strndup(s, strlen(s));
}

FORKSAFE__CHILD_RUNS void forksafe__free(void *ptr)
{
    free(ptr);
}

void forksafe__alloc_install_json(void)
{
    json_set_alloc_funcs(forksafe__malloc, forksafe__free);
}

/* ------------------------------------------------------------- name tables */

static const char *const event_names[] = {
#define FORKSAFE__EVENT_NAME(id, name) name,
    FORKSAFE_EVENTS(FORKSAFE__EVENT_NAME)
#undef FORKSAFE__EVENT_NAME
};

FORKSAFE__CHILD_RUNS FORKSAFE_EXPORT const char *forksafe_event_type_name(forksafe_event_type type)
{
    if ((int)type < 0 || type >= FORKSAFE_EVENT_COUNT)
        return NULL;
    return event_names[type];
}

FORKSAFE_EXPORT int forksafe_event_type_from_name(const char *name)
{
    int i;

    for (i = 0; i < FORKSAFE_EVENT_COUNT; i++) {
        if (strcmp(event_names[i], name) == 0)
            return i;
    }
    return -1;
}

static const char *const process_kind_names[FORKSAFE__PROCESS_KIND_COUNT] = {"master", "worker",
                                                                             "mule", "spooler"};

const char *forksafe__process_kind_name(int kind)
{
    if (kind < 0 || kind >= FORKSAFE__PROCESS_KIND_COUNT)
        return "unknown";
    return process_kind_names[kind];
}

int forksafe__process_kind_from_name(const char *name)
{
    int i;

    for (i = 0; i < FORKSAFE__PROCESS_KIND_COUNT; i++) {
        if (strcmp(process_kind_names[i], name) == 0)
            return i;
    }
    return -1;
}

static const char *const on_error_names[] = {"log", "exit", "fatal"};

int forksafe__on_error_from_name(const char *name)
{
    int i;

    for (i = 0; i < 3; i++) {
        if (strcmp(on_error_names[i], name) == 0)
            return i;
    }
    return -1;
}

const char *forksafe__on_error_name(int policy)
{
    if (policy < 0 || policy > 2)
        return "inherit";
    return on_error_names[policy];
}
