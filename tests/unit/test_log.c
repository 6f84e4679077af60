/*
 * test_log.c - lines go to the context's callback whole, with their level;
 * a line too long is cut, never allocated.
 */
#include <string.h>

#include "unit.h"

static int last_level;
static char last_line[4096];

static void capture(void *data, int level, const char *message)
{
    (void)data;
    last_level = level;
    strncpy(last_line, message, sizeof(last_line) - 1);
}

START_TEST(lines_go_to_the_callback)
{
    forksafe__context ctx;

    memset(&ctx, 0, sizeof(ctx));
    ctx.log = capture;
    forksafe__log(&ctx, FORKSAFE__LOG_WARNING, "%s %d", "answer", 42);
    ck_assert_int_eq(last_level, FORKSAFE__LOG_WARNING);
    ck_assert_str_eq(last_line, "answer 42");
}
END_TEST

START_TEST(long_lines_are_cut_without_allocating)
{
    forksafe__context ctx;
    char text[3000];
    unsigned long attempts;

    memset(text, 'x', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    memset(&ctx, 0, sizeof(ctx));
    ctx.log = capture;
    attempts = forksafe__alloc_attempts();
    forksafe__log(&ctx, FORKSAFE__LOG_ERROR, "%s", text);
    ck_assert_uint_eq(forksafe__alloc_attempts(), attempts);
    ck_assert_uint_eq(strlen(last_line), 2047);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("log");
    TCase *log = tcase_create("log");

    tcase_add_test(log, lines_go_to_the_callback);
    tcase_add_test(log, long_lines_are_cut_without_allocating);
    suite_add_tcase(suite, log);
    return suite;
}
