/*
 * settings_json.c - settings from a JSON file: one flat object whose values
 * become the strings Python's str() would make of them (reals as repr()
 * writes a float), with here and __file__ as for an ini file.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forksafe_internal.h"

/* The text of a JSON real as Python's repr() writes a float: the fewest
 * digits that read back to the same double, positional for exponents -4 to
 * 15 ("100000.0", "0.0001"), scientific otherwise ("1e+16", "1.5e-07"). */
static void format_real(double value, char *buf, size_t size)
{
    char scientific[40], digits[24];
    int precision, exponent, count = 0, i;
    size_t used = 0;
    const char *p;

    for (precision = 0; precision <= 16; precision++) {
        snprintf(scientific, sizeof(scientific), "%.*e", precision, value);
        if (strtod(scientific, NULL) == value)
            break;
    }
    /* "-d.dddde+XX": collect the digits, drop trailing zeros. */
    for (p = scientific; *p && *p != 'e'; p++) {
        if (*p >= '0' && *p <= '9')
            digits[count++] = *p;
    }
    exponent = atoi(p + 1);
    while (count > 1 && digits[count - 1] == '0')
        count--;
    digits[count] = '\0';
    if (value < 0 || (value == 0 && signbit(value)))
        buf[used++] = '-';
    if (exponent >= -4 && exponent < 16) {
        if (exponent < 0) {
            used += (size_t)snprintf(buf + used, size - used, "0.");
            for (i = exponent + 1; i < 0; i++)
                buf[used++] = '0';
            used += (size_t)snprintf(buf + used, size - used, "%s", digits);
        }
        else {
            for (i = 0; i <= exponent; i++)
                buf[used++] = i < count ? digits[i] : '0';
            buf[used++] = '.';
            if (count > exponent + 1)
                used += (size_t)snprintf(buf + used, size - used, "%s", digits + exponent + 1);
            else
                buf[used++] = '0';
        }
        buf[used] = '\0';
    }
    else {
        buf[used++] = digits[0];
        if (count > 1)
            used += (size_t)snprintf(buf + used, size - used, ".%s", digits + 1);
        snprintf(buf + used, size - used, "e%c%02d", exponent < 0 ? '-' : '+', abs(exponent));
    }
}

static char *json_scalar_text(const json_t *value)
{
    char number[64];

    switch (json_typeof(value)) {
    case JSON_STRING:
        return forksafe__strndup(json_string_value(value), json_string_length(value));
    case JSON_INTEGER:
        snprintf(number, sizeof(number), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        return forksafe__strdup(number);
    case JSON_REAL:
        format_real(json_real_value(value), number, sizeof(number));
        return forksafe__strdup(number);
    case JSON_TRUE:
        return forksafe__strdup("true");
    case JSON_FALSE:
        return forksafe__strdup("false");
    default:
        return forksafe__strdup("null");
    }
}

/* jansson reports an allocation failure inside its parser as a syntax
 * error, or as an error with no text, so the allocator is watched while it
 * parses.  Settings load once, in the master, before any thread exists. */
static json_malloc_t json_underlying_malloc;
static int json_allocation_failed;

static void *watched_json_malloc(size_t size)
{
    void *memory = json_underlying_malloc(size);

    if (!memory)
        json_allocation_failed = 1;
    return memory;
}

static json_t *parse_json(const char *text, size_t length, json_error_t *json_err,
                          int *out_of_memory)
{
    json_malloc_t malloc_function;
    json_free_t free_function;
    json_t *root;

    json_get_alloc_funcs(&malloc_function, &free_function);
    json_underlying_malloc = malloc_function;
    json_allocation_failed = 0;
    json_set_alloc_funcs(watched_json_malloc, free_function);
    root = json_loadb(text, length, JSON_REJECT_DUPLICATES, json_err);
    json_set_alloc_funcs(malloc_function, free_function);
    *out_of_memory =
        !root && (json_allocation_failed || json_error_code(json_err) == json_error_out_of_memory);
    return root;
}

int forksafe__settings_from_json(forksafe__settings *settings, const char *path, const char *text,
                                 size_t length, forksafe__error *err)
{
    int out_of_memory;
    json_error_t json_err;
    json_t *root, *value;
    const char *key;
    char *here = NULL;
    int rc = 0;

    root = parse_json(text, length, &json_err, &out_of_memory);
    if (!root && out_of_memory) {
        forksafe__error_set(err, path, 0, "%s", forksafe__strerror(FORKSAFE__ENOMEM));
        return FORKSAFE__ENOMEM;
    }
    if (!root) {
        forksafe__error_set(err, path, json_err.line > 0 ? json_err.line : 0, "invalid JSON: %s",
                            json_err.text);
        return FORKSAFE__ESYNTAX;
    }
    if (!json_is_object(root)) {
        forksafe__error_set(err, path, 0, "a JSON settings file must hold one object");
        json_decref(root);
        return FORKSAFE__ESYNTAX;
    }
    settings->path = forksafe__path_absolute(path);
    if (!settings->path || !(here = forksafe__path_directory(settings->path)) ||
        forksafe__map_put(&settings->global, "here", here, 0) != 0 ||
        forksafe__map_put(&settings->global, "__file__", settings->path, 0) != 0)
        rc = FORKSAFE__ENOMEM;
    json_object_foreach(root, key, value)
    {
        if (rc != 0)
            break;
        if (json_is_object(value) || json_is_array(value)) {
            forksafe__error_set(err, path, 0,
                                "setting '%s' is an %s; a JSON settings file must be flat "
                                "(strings, numbers, booleans, null)",
                                key, json_is_object(value) ? "object" : "array");
            rc = FORKSAFE__ESYNTAX;
            break;
        }
        rc = forksafe__map_put_new(&settings->local, forksafe__strdup(key), json_scalar_text(value),
                                   0);
    }
    forksafe__free(here);
    json_decref(root);
    if (rc == FORKSAFE__ENOMEM)
        forksafe__error_set(err, path, 0, "%s", forksafe__strerror(rc));
    return rc;
}
