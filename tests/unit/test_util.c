#include <string.h>

#include "unit.h"

START_TEST(map_keeps_order_and_replaces_in_place)
{
    forksafe__map map = {0};

    ck_assert_int_eq(forksafe__map_put(&map, "b", "1", 1), 0);
    ck_assert_int_eq(forksafe__map_put(&map, "a", "2", 2), 0);
    ck_assert_int_eq(forksafe__map_put(&map, "b", "3", 3), 0);
    ck_assert_uint_eq(map.count, 2);
    ck_assert_str_eq(map.entries[0].key, "b");
    ck_assert_str_eq(map.entries[0].value, "3");
    ck_assert_int_eq(map.entries[0].line, 3);
    ck_assert_str_eq(forksafe__map_get(&map, "a"), "2");
    ck_assert_ptr_null(forksafe__map_get(&map, "c"));
    forksafe__map_remove(&map, "b");
    ck_assert_uint_eq(map.count, 1);
    ck_assert_str_eq(map.entries[0].key, "a");
    forksafe__map_clear(&map);
    ck_assert_uint_eq(map.count, 0);
}
END_TEST

START_TEST(map_put_fails_cleanly_without_memory)
{
    forksafe__map map = {0};
    long n;

    ck_assert_int_eq(forksafe__map_put(&map, "kept", "v", 1), 0);
    for (n = 0; n < 3; n++) {
        forksafe__alloc_fail_after(n);
        int rc = forksafe__map_put(&map, "new", "value", 2);
        forksafe__alloc_fail_after(-1);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, FORKSAFE__ENOMEM);
        ck_assert_uint_eq(map.count, 1);
        ck_assert_str_eq(map.entries[0].value, "v");
    }
    forksafe__map_clear(&map);
}
END_TEST

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

    tcase_add_test(tc, map_keeps_order_and_replaces_in_place);
    tcase_add_test(tc, map_put_fails_cleanly_without_memory);
    tcase_add_test(tc, first_error_wins);
    tcase_add_test(tc, event_names_round_trip);
    suite_add_tcase(suite, tc);
    return suite;
}
