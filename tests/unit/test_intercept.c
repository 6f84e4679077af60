#include <dlfcn.h>
#include <unistd.h>

#include "unit.h"

/* This test program is the main program: its own calls to getppid() go
 * through its GOT entry, which forksafe__intercept_call replaces. */

static int replacement_calls;
static pid_t (*real_getppid)(void);

static pid_t fake_getppid(void)
{
    replacement_calls++;
    return real_getppid() + 1000000;
}

/* Under valgrind the tests share one process (CK_FORK=no): the entry
 * stays replaced from the first test on, and the count is per test. */
START_TEST(the_programs_calls_reach_the_replacement)
{
    pid_t parent = getppid();

    replacement_calls = 0;

    real_getppid = (pid_t(*)(void))dlsym(RTLD_DEFAULT, "getppid");
    ck_assert_ptr_nonnull(real_getppid);
    ck_assert_int_ge(forksafe__intercept_call("getppid", (void *)fake_getppid), 1);
    ck_assert_int_eq(getppid(), parent + 1000000);
    ck_assert_int_eq(getppid(), parent + 1000000);
    ck_assert_int_eq(replacement_calls, 2);
    /* the library function itself is untouched */
    ck_assert_int_eq(real_getppid(), parent);
    ck_assert_int_eq(replacement_calls, 2);
}
END_TEST

START_TEST(a_function_the_program_never_calls_changes_nothing)
{
    replacement_calls = 0;
    ck_assert_int_eq(forksafe__intercept_call("forksafe_no_such_function", (void *)fake_getppid),
                     0);
    ck_assert_int_eq(forksafe__intercept_call("", (void *)fake_getppid), 0);
    ck_assert_int_eq(replacement_calls, 0);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("intercept");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, the_programs_calls_reach_the_replacement);
    tcase_add_test(tc, a_function_the_program_never_calls_changes_nothing);
    suite_add_tcase(suite, tc);
    return suite;
}
