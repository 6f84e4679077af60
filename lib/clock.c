/*
 * clock.c - the time, read one way for all of lib/ (and the uWSGI glue).
 *
 * Two clocks: the monotonic one for durations and deadlines (a wall clock
 * stepped by NTP would make a handler run look negative, or time it out at
 * once), the wall clock for timestamps that other processes and people
 * read.  Integer nanoseconds, which each caller divides down to what it
 * shows; the payload's "time" is epoch seconds as a double, as Python's
 * time.time() is.
 */
#include <time.h>

#include "forksafe_internal.h"

static struct timespec now(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return ts;
}

FORKSAFE__CHILD_RUNS int64_t forksafe__monotonic_ns(void)
{
    struct timespec ts = now(CLOCK_MONOTONIC);

    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

FORKSAFE__CHILD_RUNS int64_t forksafe__realtime_ns(void)
{
    struct timespec ts = now(CLOCK_REALTIME);

    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

FORKSAFE__CHILD_RUNS double forksafe__ns_to_seconds(int64_t ns)
{
    int64_t per_second = 1000000000;

    /* A new child comes here as it starts (a handler run's timing, the
     * event's time): 1e9 as a double constant would be read from .rodata,
     * a page it touches for nothing else (a fault per spawn); converted
     * from a register, it is not. */
    __asm__("" : "+r"(per_second));
    return (double)ns / (double)per_second;
}

FORKSAFE__CHILD_RUNS double forksafe__realtime_seconds(void)
{
    struct timespec ts = now(CLOCK_REALTIME);

    /* Seconds and nanoseconds apart: one int64 of nanoseconds has more
     * digits than a double keeps. */
    return (double)ts.tv_sec + forksafe__ns_to_seconds(ts.tv_nsec);
}
