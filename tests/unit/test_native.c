/*
 * test_native.c - the dl: and symbol: backends: loading, the ABI check and
 * its messages, invoking.  symbol: handlers live in this very binary, which
 * is linked with -rdynamic so that dlsym(RTLD_DEFAULT) sees them.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"

#define FIXTURES "build/fixtures/"

FORKSAFE_HANDLER_ABI_DECLARE();

int forksafe_test_symbol_handler(const forksafe_event *ev);
int forksafe_test_symbol_failing(const forksafe_event *ev);

static int symbol_calls;

int forksafe_test_symbol_handler(const forksafe_event *ev)
{
    symbol_calls++;
    return forksafe_event_type_of(ev) == FORKSAFE_POST_FORK ? 0 : 1;
}

int forksafe_test_symbol_failing(const forksafe_event *ev)
{
    (void)ev;
    return -3;
}

static forksafe__context ctx;
static forksafe__occurrence occ;
static forksafe_event ev;

static void setup(void)
{
    ck_assert_int_eq(forksafe__context_init(&ctx, NULL, NULL), 0);
    memset(&occ, 0, sizeof(occ));
    occ.type = FORKSAFE_POST_FORK;
    occ.self.kind = FORKSAFE__WORKER;
    occ.self.id = 1;
    occ.self.pid = getpid();
    memset(&ev, 0, sizeof(ev));
    ev.ctx = &ctx;
    ev.occ = &occ;
}

static void teardown(void)
{
    forksafe__context_free(&ctx);
}

/* Resolves SPEC with BACKEND; on failure returns the code and copies the
 * message to WHY. */
static int resolve(const forksafe__backend *backend, const char *spec, void **handle, char *why,
                   size_t size)
{
    forksafe__error err = {0};
    int rc = backend->resolve(&ctx, backend->data, spec, handle, &err);

    snprintf(why, size, "%s", err.set ? err.text : "");
    return rc;
}

static void assert_contains(const char *text, const char *part)
{
    ck_assert_msg(strstr(text, part) != NULL, "'%s' not in '%s'", part, text);
}

START_TEST(dl_loads_and_calls)
{
    const forksafe__backend *dl = forksafe__dl_backend();
    void *handle = NULL;
    char why[512];

    ck_assert_int_eq(resolve(dl, FIXTURES "handler_ok.so:fail_seven", &handle, why, sizeof(why)),
                     0);
    ck_assert_ptr_nonnull(handle);
    why[0] = '\0';
    ck_assert_int_eq(dl->run(&ctx, dl->data, handle, &ev, why, sizeof(why)), FORKSAFE__EHANDLER);
    ck_assert_str_eq(why, "returned 7");
    dl->release(dl->data, handle);
    ck_assert_int_eq(resolve(dl, FIXTURES "handler_ok.so:slow", &handle, why, sizeof(why)), 0);
    ck_assert_int_eq(dl->run(&ctx, dl->data, handle, &ev, why, sizeof(why)), 0);
    dl->release(dl->data, handle);
}
END_TEST

START_TEST(dl_cannot_open)
{
    void *handle = NULL;
    char why[512];

    ck_assert_int_eq(
        resolve(forksafe__dl_backend(), FIXTURES "missing.so:f", &handle, why, sizeof(why)),
        FORKSAFE__ENOTFOUND);
    assert_contains(why, "cannot open " FIXTURES "missing.so: ");
    /* dlerror's own explanation follows. */
    assert_contains(why, "No such file");
    ck_assert_ptr_null(handle);
}
END_TEST

START_TEST(dl_no_such_symbol)
{
    void *handle = NULL;
    char why[512];

    ck_assert_int_eq(
        resolve(forksafe__dl_backend(), FIXTURES "handler_ok.so:nope", &handle, why, sizeof(why)),
        FORKSAFE__ENOTFOUND);
    ck_assert_str_eq(why, FIXTURES "handler_ok.so has no symbol 'nope'");
}
END_TEST

START_TEST(dl_refuses_a_library_without_abi_marker)
{
    void *handle = NULL;
    char why[512];

    ck_assert_int_eq(resolve(forksafe__dl_backend(), FIXTURES "handler_noabi.so:handler", &handle,
                             why, sizeof(why)),
                     FORKSAFE__EINVAL);
    ck_assert_str_eq(why, FIXTURES "handler_noabi.so has no forksafe_handler_abi marker (built "
                                   "without FORKSAFE_HANDLER_ABI_DECLARE())");
}
END_TEST

START_TEST(dl_refuses_another_abi)
{
    void *handle = NULL;
    char why[512], expected[512];

    ck_assert_int_eq(resolve(forksafe__dl_backend(), FIXTURES "handler_badabi.so:handler", &handle,
                             why, sizeof(why)),
                     FORKSAFE__EINVAL);
    snprintf(expected, sizeof(expected),
             FIXTURES "handler_badabi.so was built for handler ABI %d, but this forksafe "
                      "provides ABI %d",
             FORKSAFE_HANDLER_ABI + 41, FORKSAFE_HANDLER_ABI);
    assert_contains(why, expected);
}
END_TEST

START_TEST(dl_splits_on_the_last_colon)
{
    char dir[64], link[128], spec[256], cwd[512], target[1024], why[512];
    void *handle = NULL;

    snprintf(dir, sizeof(dir), "/tmp/forksafe:native-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    snprintf(target, sizeof(target), "%s/" FIXTURES "handler_ok.so", cwd);
    snprintf(link, sizeof(link), "%s/lib:v1.so", dir);
    ck_assert_int_eq(symlink(target, link), 0);
    snprintf(spec, sizeof(spec), "%s:log_hello", link);
    ck_assert_int_eq(resolve(forksafe__dl_backend(), spec, &handle, why, sizeof(why)), 0);
    forksafe__dl_backend()->release(NULL, handle);
    unlink(link);
    rmdir(dir);
}
END_TEST

START_TEST(dl_malformed_specs)
{
    static const char *const specs[] = {"no-colon.so", ":symbol", FIXTURES "handler_ok.so:"};
    void *handle = NULL;
    char why[512];
    size_t i;

    for (i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        ck_assert_int_eq(resolve(forksafe__dl_backend(), specs[i], &handle, why, sizeof(why)),
                         FORKSAFE__EINVAL);
        assert_contains(why, "expected dl:PATH:SYMBOL");
        ck_assert_ptr_null(handle);
    }
}
END_TEST

START_TEST(symbol_finds_handlers_in_the_process)
{
    const forksafe__backend *symbol = forksafe__symbol_backend();
    void *handle = NULL;
    char why[512] = "";

    symbol_calls = 0;
    ck_assert_int_eq(resolve(symbol, "forksafe_test_symbol_handler", &handle, why, sizeof(why)), 0);
    ck_assert_int_eq(symbol->run(&ctx, symbol->data, handle, &ev, why, sizeof(why)), 0);
    ck_assert_int_eq(symbol_calls, 1);
    symbol->release(symbol->data, handle);
    ck_assert_int_eq(resolve(symbol, "forksafe_test_symbol_failing", &handle, why, sizeof(why)), 0);
    ck_assert_int_eq(symbol->run(&ctx, symbol->data, handle, &ev, why, sizeof(why)),
                     FORKSAFE__EHANDLER);
    ck_assert_str_eq(why, "returned -3");
    symbol->release(symbol->data, handle);
}
END_TEST

START_TEST(symbol_not_found)
{
    void *handle = NULL;
    char why[512];

    ck_assert_int_eq(resolve(forksafe__symbol_backend(), "forksafe_test_no_such_function", &handle,
                             why, sizeof(why)),
                     FORKSAFE__ENOTFOUND);
    assert_contains(why, "no symbol 'forksafe_test_no_such_function' in the process");
    ck_assert_int_eq(resolve(forksafe__symbol_backend(), "two words", &handle, why, sizeof(why)),
                     FORKSAFE__EINVAL);
    assert_contains(why, "expected symbol:NAME");
}
END_TEST

/* Through the context: the error names the subscription's file and line. */
START_TEST(seal_reports_source_and_line)
{
    forksafe__error err = {0};
    char text[1200];

    ck_assert_int_eq(forksafe__subscribe(&ctx, "post-fork symbol:forksafe_test_symbol_handler",
                                         "app.ini", 3, &err),
                     0);
    ck_assert_int_eq(forksafe__subscribe(&ctx, "post-fork exec:true", "app.ini", 4, &err), 0);
    ck_assert_int_eq(forksafe__subscribe(&ctx, "post-fork dl:" FIXTURES "handler_noabi.so:handler",
                                         "app.ini", 12, &err),
                     0);
    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), FORKSAFE__EINVAL);
    forksafe__error_format(&err, text, sizeof(text));
    ck_assert_str_eq(text,
                     "app.ini:12: handler 'dl:" FIXTURES "handler_noabi.so:handler': " FIXTURES
                     "handler_noabi.so has no forksafe_handler_abi marker (built without "
                     "FORKSAFE_HANDLER_ABI_DECLARE())");
    /* Retrying re-resolves without leaking the first attempt's handles
     * (the ASan build checks), and fails the same way. */
    memset(&err, 0, sizeof(err));
    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), FORKSAFE__EINVAL);
    ck_assert_int_eq(err.line, 12);
    ck_assert(!ctx.sealed);
}
END_TEST

/* A handler that fails to resolve is named in the start-up log, so what
 * looks like a secret in its spec is hidden there too. */
START_TEST(seal_error_redacts_the_spec)
{
    static const char expected[] = "app.ini:7: handler 'symbol:lookup api_token=***': expected "
                                   "symbol:NAME with a C function name, got symbol:lookup "
                                   "api_token=***";
    forksafe__error err = {0};
    char text[1200];

    ck_assert_int_eq(
        forksafe__subscribe(&ctx, "post-fork symbol:lookup api_token=hunter2", "app.ini", 7, &err),
        0);
    ck_assert_int_lt(forksafe__context_seal(&ctx, &err), 0);
    forksafe__error_format(&err, text, sizeof(text));
    ck_assert_str_eq(text, expected);
}
END_TEST

START_TEST(seal_then_dispatch_symbol)
{
    forksafe__error err = {0};

    symbol_calls = 0;
    ck_assert_int_eq(
        forksafe__subscribe(&ctx, "post-fork symbol:forksafe_test_symbol_handler", "test", 1, &err),
        0);
    ck_assert_int_eq(
        forksafe__subscribe(&ctx, "post-fork dl:" FIXTURES "handler_ok.so:slow", "test", 2, &err),
        0);
    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), 0);
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    ck_assert_int_eq(symbol_calls, 1);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("native");
    TCase *tc = tcase_create("backends");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, dl_loads_and_calls);
    tcase_add_test(tc, dl_cannot_open);
    tcase_add_test(tc, dl_no_such_symbol);
    tcase_add_test(tc, dl_refuses_a_library_without_abi_marker);
    tcase_add_test(tc, dl_refuses_another_abi);
    tcase_add_test(tc, dl_splits_on_the_last_colon);
    tcase_add_test(tc, dl_malformed_specs);
    tcase_add_test(tc, symbol_finds_handlers_in_the_process);
    tcase_add_test(tc, symbol_not_found);
    tcase_add_test(tc, seal_reports_source_and_line);
    tcase_add_test(tc, seal_error_redacts_the_spec);
    tcase_add_test(tc, seal_then_dispatch_symbol);
    suite_add_tcase(suite, tc);
    return suite;
}
