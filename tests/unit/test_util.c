#include <string.h>

#include "unit.h"

START_TEST(first_error_wins)
{
    forksafe__error err = {0};
    char text[1200];

    forksafe__error_set(&err, "a.ini", 3, "first %s", "problem");
    forksafe__error_set(&err, "b.ini", 9, "second");
    forksafe__error_format(&err, text, sizeof(text));
    ck_assert_str_eq(text, "a.ini:3: first problem");
}
END_TEST

START_TEST(event_names_round_trip)
{
    int i;

    for (i = 0; i < FORKSAFE_EVENT_COUNT; i++)
        ck_assert_int_eq(forksafe_event_type_from_name(forksafe_event_type_name(i)), i);
    ck_assert_int_eq(forksafe_event_type_from_name("post_fork"), -1);
    ck_assert_ptr_null(forksafe_event_type_name(FORKSAFE_EVENT_COUNT));
    ck_assert_str_eq(forksafe_event_type_name(FORKSAFE_WORKER_READY), "worker-ready");
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("util");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, first_error_wins);
    tcase_add_test(tc, event_names_round_trip);
    suite_add_tcase(suite, tc);
    return suite;
}
