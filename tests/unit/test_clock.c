/*
 * test_clock.c - the one clock of lib/: the monotonic clock never goes
 * back, and the three readings of the wall clock agree with time().
 */
#include <math.h>
#include <time.h>

#include "unit.h"

START_TEST(monotonic_never_goes_back)
{
    int64_t before = forksafe__monotonic_ns(), after;
    struct timespec pause = {0, 2000000};

    nanosleep(&pause, NULL);
    after = forksafe__monotonic_ns();
    ck_assert_int_ge(after - before, 2000000);
}
END_TEST

START_TEST(wall_clock_readings_agree)
{
    double seconds = forksafe__realtime_seconds();
    int64_t nanoseconds = forksafe__realtime_ns();

    /* A machine's time sync may step the clock between two readings, so
     * only plausibility: within a minute of time() and of each other. */
    ck_assert_double_lt(fabs(seconds - (double)time(NULL)), 60.0);
    ck_assert_double_lt(fabs((double)nanoseconds / 1e9 - seconds), 60.0);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("clock");
    TCase *clock = tcase_create("clock");

    tcase_add_test(clock, monotonic_never_goes_back);
    tcase_add_test(clock, wall_clock_readings_agree);
    suite_add_tcase(suite, clock);
    return suite;
}
