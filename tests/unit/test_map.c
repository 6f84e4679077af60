/*
 * test_map.c - the ordered map and its hash index: order, in-place puts,
 * removal, scale, allocation failures.
 */
#include <stdio.h>
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

START_TEST(map_remove_keeps_the_index)
{
    forksafe__map map = {0};
    char key[32];
    int i;

    for (i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "key.%d", i);
        ck_assert_int_eq(forksafe__map_put(&map, key, "v", i), 0);
    }
    for (i = 0; i < 1000; i += 3) {
        snprintf(key, sizeof(key), "key.%d", i);
        forksafe__map_remove(&map, key);
    }
    forksafe__map_remove(&map, "absent");
    ck_assert_uint_eq(map.count, 666);
    for (i = 0; i < 1000; i++) {
        const forksafe__entry *entry;

        snprintf(key, sizeof(key), "key.%d", i);
        entry = forksafe__map_find(&map, key);
        if (i % 3 == 0) {
            ck_assert_ptr_null(entry);
            continue;
        }
        ck_assert_ptr_nonnull(entry);
        ck_assert_int_eq(entry->line, i);
        ck_assert_int_eq(entry - map.entries, i - i / 3 - 1); /* order kept */
    }
    ck_assert_int_eq(forksafe__map_put(&map, "key.0", "back", 0), 0);
    ck_assert_str_eq(map.entries[map.count - 1].key, "key.0");
    ck_assert_str_eq(forksafe__map_get(&map, "key.0"), "back");
    forksafe__map_clear(&map);
}
END_TEST

START_TEST(index_finds_every_key)
{
    forksafe__map map = {0};
    forksafe__index index = {0};
    char key[32];
    int i;

    for (i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "key.%d", i);
        ck_assert_int_eq(forksafe__map_put(&map, key, "v", i), 0);
    }
    ck_assert_int_eq(forksafe__index_build(&index, map.entries, sizeof(forksafe__entry), map.count),
                     0);
    for (i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "key.%d", i);
        ck_assert_int_eq(forksafe__index_find(&index, map.entries, sizeof(forksafe__entry), key),
                         i);
    }
    ck_assert_int_eq(forksafe__index_find(&index, map.entries, sizeof(forksafe__entry), "key.5000"),
                     -1);
    forksafe__index_free(&index);
    ck_assert_int_eq(forksafe__index_find(&index, map.entries, sizeof(forksafe__entry), "key.1"),
                     -1);
    forksafe__map_clear(&map);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("map");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, map_keeps_order_and_replaces_in_place);
    tcase_add_test(tc, map_put_fails_cleanly_without_memory);
    tcase_add_test(tc, map_remove_keeps_the_index);
    tcase_add_test(tc, index_finds_every_key);
    suite_add_tcase(suite, tc);
    return suite;
}
