/*
 * native.c - the `dl:` and `symbol:` backends: C functions called in the
 * process itself, after checking that they were built for this handler ABI.
 *
 * Everything is looked up at resolve time, in the master before any fork,
 * so that a worker never calls dlopen (which takes locks a fork may have
 * copied held) and a typo stops the instance at start-up, not at the first
 * event.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "forksafe_internal.h"

#define ABI_SYMBOL "forksafe_handler_abi"

typedef struct native_handle {
    void *library; /* dlopen handle; NULL for symbol: */
    forksafe_handler_fn fn;
} native_handle;

static forksafe_handler_fn as_handler(void *symbol)
{
    forksafe_handler_fn fn;

    /* ISO C has no conversion from void * to a function pointer; POSIX
     * guarantees dlsym's result can be used as one. */
    memcpy(&fn, &symbol, sizeof(fn));
    return fn;
}

/* Checks the ABI marker found at MARKER (NULL: none).  WHAT names the
 * library or handler for the message. */
static int check_abi(const void *marker, const char *what, forksafe__error *err)
{
    int abi;

    if (!marker) {
        forksafe__error_set(err, NULL, 0,
                            "%s has no %s marker (built without FORKSAFE_HANDLER_ABI_DECLARE())",
                            what, ABI_SYMBOL);
        return FORKSAFE__EINVAL;
    }
    abi = *(const int *)marker;
    if (abi != FORKSAFE_HANDLER_ABI) {
        forksafe__error_set(err, NULL, 0,
                            "%s was built for handler ABI %d, but this forksafe provides ABI %d; "
                            "rebuild it against this forksafe.h",
                            what, abi, FORKSAFE_HANDLER_ABI);
        return FORKSAFE__EINVAL;
    }
    return 0;
}

static int new_handle(void *library, void *symbol, void **handle)
{
    native_handle *native = forksafe__malloc(sizeof(*native));

    if (!native)
        return FORKSAFE__ENOMEM;
    native->library = library;
    native->fn = as_handler(symbol);
    *handle = native;
    return 0;
}

FORKSAFE__CHILD_RUNS static int native_run(forksafe__context *ctx, void *data, void *handle,
                                           const forksafe_event *ev, char *why, size_t why_size)
{
    native_handle *native = handle;
    int rc;

    (void)ctx;
    (void)data;
    rc = native->fn(ev);
    if (rc == 0)
        return 0;
    snprintf(why, why_size, "returned %d", rc);
    return FORKSAFE__EHANDLER;
}

static void native_release(void *data, void *handle)
{
    native_handle *native = handle;

    (void)data;
    if (!native)
        return;
    if (native->library)
        dlclose(native->library);
    forksafe__free(native);
}

/* ---------------------------------------------------------------------- dl */

/* SPEC is PATH:SYMBOL.  Split on the last ':' because a path may contain
 * one and a C symbol cannot. */
static int dl_resolve(forksafe__context *ctx, void *data, const char *spec, void **handle,
                      forksafe__error *err)
{
    const char *colon = strrchr(spec, ':');
    const char *symbol_name;
    void *library, *symbol;
    char *path;
    int rc;

    (void)ctx;
    (void)data;
    if (!colon || colon == spec || colon[1] == '\0') {
        forksafe__error_set(err, NULL, 0, "expected dl:PATH:SYMBOL, got dl:%s", spec);
        return FORKSAFE__EINVAL;
    }
    symbol_name = colon + 1;
    path = forksafe__strndup(spec, (size_t)(colon - spec));
    if (!path)
        return FORKSAFE__ENOMEM;
    /* RTLD_NOW: an unresolved symbol fails here, not in a worker later.
     * RTLD_LOCAL: two handler libraries may both define
     * forksafe_handler_abi and their own helpers. */
    library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        const char *why = dlerror();

        forksafe__error_set(err, NULL, 0, "cannot open %s: %s", path, why ? why : "unknown error");
        forksafe__free(path);
        return FORKSAFE__ENOTFOUND;
    }
    dlerror();
    symbol = dlsym(library, symbol_name);
    if (!symbol) {
        forksafe__error_set(err, NULL, 0, "%s has no symbol '%s'", path, symbol_name);
        rc = FORKSAFE__ENOTFOUND;
        goto fail;
    }
    rc = check_abi(dlsym(library, ABI_SYMBOL), path, err);
    if (rc)
        goto fail;
    rc = new_handle(library, symbol, handle);
    if (rc)
        goto fail;
    forksafe__free(path);
    return 0;
fail:
    dlclose(library);
    forksafe__free(path);
    return rc;
}

static forksafe__backend dl_backend = {
    .kind = "dl", .resolve = dl_resolve, .run = native_run, .release = native_release};

forksafe__backend *forksafe__dl_backend(void)
{
    return &dl_backend;
}

/* ------------------------------------------------------------------ symbol */

static int symbol_resolve(forksafe__context *ctx, void *data, const char *spec, void **handle,
                          forksafe__error *err)
{
    void *symbol;

    (void)ctx;
    (void)data;
    if (spec[0] == '\0' || strpbrk(spec, " \t:")) {
        forksafe__error_set(err, NULL, 0,
                            "expected symbol:NAME with a C function name, got symbol:%s", spec);
        return FORKSAFE__EINVAL;
    }
    symbol = dlsym(RTLD_DEFAULT, spec);
    if (!symbol) {
        forksafe__error_set(err, NULL, 0,
                            "no symbol '%s' in the process (is it exported, e.g. linked with "
                            "-rdynamic?)",
                            spec);
        return FORKSAFE__ENOTFOUND;
    }
    /* The process-wide marker: whatever object defines it first in the
     * global lookup order speaks for the symbols linked into the process. */
    if (check_abi(dlsym(RTLD_DEFAULT, ABI_SYMBOL), "the process", err))
        return FORKSAFE__EINVAL;
    return new_handle(NULL, symbol, handle);
}

static forksafe__backend symbol_backend = {
    .kind = "symbol", .resolve = symbol_resolve, .run = native_run, .release = native_release};

forksafe__backend *forksafe__symbol_backend(void)
{
    return &symbol_backend;
}
