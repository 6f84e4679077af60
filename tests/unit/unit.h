/*
 * unit.h - the shared main() of the Check unit tests, and the set-up steps
 * several of them take.  Each test_*.c file defines unit_suite() and
 * includes this header once.  Tests run from the repository root, so
 * fixtures are named relative to it.
 */
#ifndef FORKSAFE_UNIT_H
#define FORKSAFE_UNIT_H

#include <check.h>
#include <stdlib.h>

#include "forksafe_internal.h"

Suite *unit_suite(void);

/* Subscribes TEXT, written at FILE:LINE; forksafe's error fails the test. */
static inline void unit_subscribe(forksafe__context *ctx, const char *text, const char *file,
                                  int line)
{
    forksafe__error err = {0};
    char message[1200];

    if (forksafe__subscribe(ctx, text, file, line, &err) != 0) {
        forksafe__error_format(&err, message, sizeof(message));
        ck_abort_msg("%s", message);
    }
}

/* Resolves CTX's handlers; forksafe's error fails the test. */
static inline void unit_seal(forksafe__context *ctx)
{
    forksafe__error err = {0};
    char message[1200];

    if (forksafe__context_seal(ctx, &err) != 0) {
        forksafe__error_format(&err, message, sizeof(message));
        ck_abort_msg("%s", message);
    }
}

int main(void)
{
    SRunner *runner = srunner_create(unit_suite());
    int failed;

    srunner_run_all(runner, CK_NORMAL);
    failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
