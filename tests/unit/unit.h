/*
 * unit.h - the shared main() of the Check unit tests.  Each test_*.c file
 * defines unit_suite() and includes this header once.  Tests run from the
 * repository root, so fixtures are named relative to it.
 */
#ifndef FORKSAFE_UNIT_H
#define FORKSAFE_UNIT_H

#include <check.h>
#include <stdlib.h>

#include "forksafe_internal.h"

Suite *unit_suite(void);

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
