/*
 * test_stats.c - the shared counters and dispatch history: what dispatch
 * counts, the ring and its order, records torn by a dead writer, counts
 * made by forked (and SIGKILLed) children, the JSON an operator reads (with
 * secrets redacted), and every allocation of that JSON failing in turn.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"

FORKSAFE_HANDLER_ABI_DECLARE();

static forksafe__context ctx;
static forksafe__occurrence occ;

static void quiet(void *data, int level, const char *message)
{
    (void)data;
    (void)level;
    (void)message;
}

int forksafe_test_stats_ok(const forksafe_event *ev);
int forksafe_test_stats_fail(const forksafe_event *ev);
int forksafe_test_stats_slow(const forksafe_event *ev);

int forksafe_test_stats_ok(const forksafe_event *ev)
{
    (void)ev;
    return 0;
}

int forksafe_test_stats_fail(const forksafe_event *ev)
{
    (void)ev;
    return 1;
}

int forksafe_test_stats_slow(const forksafe_event *ev)
{
    (void)ev;
    usleep(200000);
    return 0;
}

static void set_occurrence(forksafe_event_type type, int kind, int id)
{
    memset(&occ, 0, sizeof(occ));
    occ.type = type;
    occ.self.kind = kind;
    occ.self.id = id;
    occ.self.pid = getpid();
    occ.self.ppid = getppid();
}

static void subscribe(const char *text)
{
    unit_subscribe(&ctx, text, "stats.ini", 7);
}

static void seal(void)
{
    unit_seal(&ctx);
}

static void setup(void)
{
    ck_assert_int_eq(forksafe__context_init(&ctx, quiet, NULL), 0);
    set_occurrence(FORKSAFE_POST_FORK, FORKSAFE__WORKER, 1);
}

static void teardown(void)
{
    forksafe__context_free(&ctx);
}

static json_int_t counter(json_t *stats, const char *event, const char *name)
{
    json_t *value = json_object_get(json_object_get(json_object_get(stats, "events"), event), name);

    ck_assert_msg(json_is_integer(value), "no counter %s.%s", event, name);
    return json_integer_value(value);
}

static json_t *snapshot(void)
{
    json_t *stats = forksafe__stats_json(&ctx);

    ck_assert_ptr_nonnull(stats);
    return stats;
}

/* ----------------------------------------------------------------- counters */

START_TEST(seal_maps_default_history)
{
    seal();
    ck_assert_ptr_nonnull(ctx.stats);
    ck_assert_uint_eq(ctx.stats->history_capacity, FORKSAFE__HISTORY_DEFAULT);
}
END_TEST

START_TEST(setup_refuses_a_huge_history)
{
    ck_assert_int_eq(forksafe__stats_setup(&ctx, FORKSAFE__HISTORY_MAX + 1), FORKSAFE__EINVAL);
    ck_assert_ptr_null(ctx.stats);
    ck_assert_int_eq(forksafe__stats_setup(&ctx, 4), 0);
    /* A second call keeps the first size. */
    ck_assert_int_eq(forksafe__stats_setup(&ctx, 64), 0);
    ck_assert_uint_eq(ctx.stats->history_capacity, 4);
}
END_TEST

/* The host's room: zeroed, 64-byte aligned, just before the counters on
 * the same page, shared with the children like them, and unmapped with
 * them (ASan and valgrind see the context freed). */
START_TEST(room_before_the_counters_is_shared)
{
    unsigned char *room;
    pid_t pid;
    int status;
    size_t i;

    ck_assert_ptr_null(forksafe__stats_room(&ctx));
    ck_assert_int_eq(forksafe__stats_setup_with_room(&ctx, 4, 100), 0);
    room = forksafe__stats_room(&ctx);
    ck_assert_ptr_nonnull(room);
    ck_assert_uint_eq(ctx.stats_room, 128);
    ck_assert_ptr_eq(room + 128, (unsigned char *)ctx.stats);
    ck_assert_uint_eq((uintptr_t)room % 4096, 0);
    for (i = 0; i < 128; i++)
        ck_assert_uint_eq(room[i], 0);
    ck_assert_uint_eq(ctx.stats->history_capacity, 4);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        room[5] = 42;
        forksafe__stats_occurred(&ctx, FORKSAFE_POST_FORK);
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_uint_eq(room[5], 42);
    ck_assert_int_eq(ctx.stats->events[FORKSAFE_POST_FORK].occurred, 1);
    /* A second setup keeps the first mapping, room and all. */
    ck_assert_int_eq(forksafe__stats_setup_with_room(&ctx, 8, 4096), 0);
    ck_assert_ptr_eq(forksafe__stats_room(&ctx), room);
}
END_TEST

START_TEST(no_room_without_asking)
{
    ck_assert_int_eq(forksafe__stats_setup(&ctx, 4), 0);
    ck_assert_ptr_nonnull(ctx.stats);
    ck_assert_ptr_null(forksafe__stats_room(&ctx));
}
END_TEST

START_TEST(dispatch_counts_every_occurrence_and_run)
{
    json_t *stats;

    subscribe("post-fork symbol:forksafe_test_stats_ok");
    subscribe("post-fork kind=worker symbol:forksafe_test_stats_fail");
    subscribe("worker-ready id=9 symbol:forksafe_test_stats_ok");
    seal();
    forksafe__dispatch(&ctx, &occ);
    set_occurrence(FORKSAFE_POST_FORK, FORKSAFE__MULE, 1);
    forksafe__dispatch(&ctx, &occ);
    /* No subscription matches worker 1's worker-ready, and nobody listens
     * to child-death: both are still occurrences. */
    set_occurrence(FORKSAFE_WORKER_READY, FORKSAFE__WORKER, 1);
    forksafe__dispatch(&ctx, &occ);
    set_occurrence(FORKSAFE_CHILD_DEATH, FORKSAFE__MASTER, 0);
    forksafe__dispatch(&ctx, &occ);

    stats = snapshot();
    ck_assert_int_eq(counter(stats, "post-fork", "fired"), 2);
    ck_assert_int_eq(counter(stats, "post-fork", "handlers"), 3);
    ck_assert_int_eq(counter(stats, "post-fork", "failed"), 1);
    ck_assert_int_eq(counter(stats, "worker-ready", "fired"), 1);
    ck_assert_int_eq(counter(stats, "worker-ready", "handlers"), 0);
    ck_assert_int_eq(counter(stats, "child-death", "fired"), 1);
    ck_assert_int_eq(counter(stats, "master-exit", "fired"), 0);
    json_decref(stats);
}
END_TEST

START_TEST(durations_last_and_max)
{
    json_t *stats;

    subscribe("post-fork symbol:forksafe_test_stats_slow");
    subscribe("post-fork symbol:forksafe_test_stats_ok");
    seal();
    forksafe__dispatch(&ctx, &occ);
    stats = snapshot();
    /* The slow handler slept 200 ms; the fast one ran last.  A fast run
     * that a busy machine stretches to a few ms must not pass for the
     * slow one, so the margin is wide. */
    ck_assert_int_ge(counter(stats, "post-fork", "max_us"), 200000);
    ck_assert_int_lt(counter(stats, "post-fork", "last_us"), 100000);
    json_decref(stats);
}
END_TEST

/* ------------------------------------------------------------------ history */

START_TEST(history_records_what_ran_where)
{
    json_t *stats, *history, *first, *second;

    subscribe("post-fork symbol:forksafe_test_stats_ok");
    subscribe("post-fork exec:/bin/sh -c 'exit 3'");
    seal();
    occ.self.pid = 4242;
    occ.self.id = 3;
    forksafe__dispatch(&ctx, &occ);
    stats = snapshot();
    history = json_object_get(stats, "history");
    ck_assert_uint_eq(json_array_size(history), 2);
    first = json_array_get(history, 0);
    second = json_array_get(history, 1);
    ck_assert_int_eq(json_integer_value(json_object_get(first, "seq")), 0);
    ck_assert_str_eq(json_string_value(json_object_get(first, "event")), "post-fork");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(first, "process"), "kind")),
                     "worker");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(first, "process"), "id")),
                     3);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(first, "process"), "pid")),
                     4242);
    ck_assert_str_eq(json_string_value(json_object_get(first, "handler")),
                     "symbol:forksafe_test_stats_ok");
    ck_assert_int_eq(json_integer_value(json_object_get(first, "subscription")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(first, "result")), "ok");
    ck_assert_ptr_null(json_object_get(first, "error"));
    ck_assert_str_eq(json_string_value(json_object_get(second, "result")), "failed");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(second, "error")), "3"));
    ck_assert_int_eq(json_integer_value(json_object_get(second, "subscription")), 2);
    /* Wall-clock time, which a fresh machine's time sync may step back, so
     * order comes from seq and time is only checked to be plausible. */
    ck_assert_int_eq(json_integer_value(json_object_get(second, "seq")), 1);
    ck_assert_double_lt(fabs(json_real_value(json_object_get(second, "time")) - (double)time(NULL)),
                        60.0);
    json_decref(stats);
}
END_TEST

START_TEST(ring_keeps_the_latest)
{
    json_t *stats, *history;
    int i;

    ck_assert_int_eq(forksafe__stats_setup(&ctx, 4), 0);
    subscribe("post-fork symbol:forksafe_test_stats_ok");
    seal();
    for (i = 1; i <= 10; i++) {
        occ.self.id = i;
        forksafe__dispatch(&ctx, &occ);
    }
    stats = snapshot();
    history = json_object_get(stats, "history");
    ck_assert_uint_eq(json_array_size(history), 4);
    for (i = 0; i < 4; i++) {
        json_t *record = json_array_get(history, (size_t)i);
        ck_assert_int_eq(json_integer_value(json_object_get(record, "seq")), 6 + i);
        ck_assert_int_eq(
            json_integer_value(json_object_get(json_object_get(record, "process"), "id")), 7 + i);
    }
    ck_assert_int_eq(counter(stats, "post-fork", "handlers"), 10);
    json_decref(stats);
}
END_TEST

START_TEST(no_history_keeps_counters)
{
    json_t *stats;

    ck_assert_int_eq(forksafe__stats_setup(&ctx, 0), 0);
    subscribe("post-fork symbol:forksafe_test_stats_ok");
    seal();
    forksafe__dispatch(&ctx, &occ);
    stats = snapshot();
    ck_assert_uint_eq(json_array_size(json_object_get(stats, "history")), 0);
    ck_assert_int_eq(counter(stats, "post-fork", "handlers"), 1);
    json_decref(stats);
}
END_TEST

START_TEST(torn_record_is_skipped)
{
    json_t *stats, *history;

    subscribe("post-fork symbol:forksafe_test_stats_ok");
    seal();
    forksafe__dispatch(&ctx, &occ);
    forksafe__dispatch(&ctx, &occ);
    forksafe__dispatch(&ctx, &occ);
    /* What a writer killed between its first and last store leaves. */
    ctx.stats->history[1].stamp = 0;
    stats = snapshot();
    history = json_object_get(stats, "history");
    ck_assert_uint_eq(json_array_size(history), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(history, 0), "seq")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(history, 1), "seq")), 2);
    json_decref(stats);
}
END_TEST

START_TEST(redacts_handler_secrets)
{
    json_t *stats;
    char *text;

    subscribe("post-fork exec:/bin/true postgresql://app:hunter2@db/app");
    seal();
    forksafe__dispatch(&ctx, &occ);
    stats = snapshot();
    text = json_dumps(stats, 0);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_null(strstr(text, "hunter2"));
    ck_assert_ptr_nonnull(strstr(text, "postgresql://app:***@db/app"));
    ck_assert_ptr_nonnull(strstr(text, "\"source\": \"stats.ini\""));
    free(text);
    json_decref(stats);
}
END_TEST

/* ------------------------------------------------------------ across fork */

START_TEST(children_share_counters_even_when_killed)
{
    json_t *stats, *history;
    pid_t pids[3];
    int i, status;

    subscribe("post-fork symbol:forksafe_test_stats_ok");
    seal();
    for (i = 0; i < 3; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            set_occurrence(FORKSAFE_POST_FORK, FORKSAFE__WORKER, i + 1);
            forksafe__dispatch(&ctx, &occ);
            /* The third child dies without any exit path running. */
            if (i == 2)
                raise(SIGKILL);
            _exit(0);
        }
        ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
    }
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    stats = snapshot();
    ck_assert_int_eq(counter(stats, "post-fork", "fired"), 3);
    ck_assert_int_eq(counter(stats, "post-fork", "handlers"), 3);
    history = json_object_get(stats, "history");
    ck_assert_uint_eq(json_array_size(history), 3);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(
            json_integer_value(json_object_get(
                json_object_get(json_array_get(history, (size_t)i), "process"), "pid")),
            pids[i]);
    json_decref(stats);
}
END_TEST

START_TEST(json_survives_every_allocation_failing)
{
    json_t *stats = NULL;
    long n;

    subscribe("post-fork symbol:forksafe_test_stats_ok");
    subscribe("post-fork exec:/bin/false");
    seal();
    forksafe__dispatch(&ctx, &occ);
    forksafe__alloc_install_json();
    for (n = 0; n < 2000; n++) {
        forksafe__alloc_fail_after(n);
        stats = forksafe__stats_json(&ctx);
        forksafe__alloc_fail_after(-1);
        if (stats)
            break;
    }
    ck_assert_ptr_nonnull(stats);
    ck_assert_int_gt(n, 10);
    ck_assert_uint_eq(json_array_size(json_object_get(stats, "history")), 2);
    json_decref(stats);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("stats");
    TCase *counters = tcase_create("counters");
    TCase *history = tcase_create("history");

    tcase_add_checked_fixture(counters, setup, teardown);
    tcase_add_test(counters, seal_maps_default_history);
    tcase_add_test(counters, setup_refuses_a_huge_history);
    tcase_add_test(counters, room_before_the_counters_is_shared);
    tcase_add_test(counters, no_room_without_asking);
    tcase_add_test(counters, dispatch_counts_every_occurrence_and_run);
    tcase_add_test(counters, durations_last_and_max);
    tcase_add_test(counters, children_share_counters_even_when_killed);
    suite_add_tcase(suite, counters);

    tcase_add_checked_fixture(history, setup, teardown);
    tcase_add_test(history, history_records_what_ran_where);
    tcase_add_test(history, ring_keeps_the_latest);
    tcase_add_test(history, no_history_keeps_counters);
    tcase_add_test(history, torn_record_is_skipped);
    tcase_add_test(history, redacts_handler_secrets);
    tcase_add_test(history, json_survives_every_allocation_failing);
    suite_add_tcase(suite, history);
    return suite;
}
