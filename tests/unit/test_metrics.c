/*
 * test_metrics.c - the counters in Prometheus' text format: label values
 * escaped per the exposition format, names, HELP and TYPE lines, the
 * cumulative duration histogram, subscriptions with their handler
 * redacted, each process's memory from smaps_rollup (a process that is
 * gone left out), and every allocation of the text failing in turn.
 */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit.h"

FORKSAFE_HANDLER_ABI_DECLARE();

static forksafe__context ctx;
static forksafe__occurrence occ;

int forksafe_test_metrics_ok(const forksafe_event *ev);
int forksafe_test_metrics_fail(const forksafe_event *ev);
int forksafe_test_metrics_slow(const forksafe_event *ev);

int forksafe_test_metrics_ok(const forksafe_event *ev)
{
    (void)ev;
    return 0;
}

int forksafe_test_metrics_fail(const forksafe_event *ev)
{
    (void)ev;
    return 1;
}

int forksafe_test_metrics_slow(const forksafe_event *ev)
{
    (void)ev;
    usleep(200000);
    return 0;
}

static void quiet(void *data, int level, const char *message)
{
    (void)data;
    (void)level;
    (void)message;
}

static void subscribe(const char *text)
{
    unit_subscribe(&ctx, text, "metrics \"x\".ini", 3);
}

static void seal(void)
{
    unit_seal(&ctx);
}

static void dispatch(forksafe_event_type type, int kind, int id)
{
    memset(&occ, 0, sizeof(occ));
    occ.type = type;
    occ.self.kind = kind;
    occ.self.id = id;
    occ.self.pid = getpid();
    occ.self.ppid = getppid();
    forksafe__dispatch(&ctx, &occ);
}

static void setup(void)
{
    ck_assert_int_eq(forksafe__context_init(&ctx, quiet, NULL), 0);
}

static void teardown(void)
{
    forksafe__context_free(&ctx);
}

static void assert_line(const char *text, const char *line)
{
    char wanted[512];

    snprintf(wanted, sizeof(wanted), "\n%s\n", line);
    ck_assert_msg(strstr(text, wanted) != NULL, "no line '%s' in:\n%s", line, text);
}

static char *escaped(const char *value)
{
    char *text = NULL;
    size_t length = 0, capacity = 0;

    ck_assert_int_eq(forksafe__metrics_label_append(&text, &length, &capacity, value), 0);
    ck_assert_uint_eq(strlen(text), length);
    return text;
}

START_TEST(label_values_are_escaped)
{
    static const char *const cases[][2] = {
        {"plain", "plain"},
        {"", ""},
        {"a\\b", "a\\\\b"},
        {"say \"hi\"", "say \\\"hi\\\""},
        {"two\nlines", "two\\nlines"},
        {"\\\"\n", "\\\\\\\"\\n"},
        /* Anything else, UTF-8 and tabs included, is as it is. */
        {"caf\xc3\xa9\t{x}", "caf\xc3\xa9\t{x}"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text = escaped(cases[i][0]);

        ck_assert_str_eq(text, cases[i][1]);
        forksafe__free(text);
    }
}
END_TEST

START_TEST(counters_histogram_and_subscriptions)
{
    forksafe__process self = {FORKSAFE__MASTER, 0, 0, 0, 0};
    char *text;

    subscribe("post-fork symbol:forksafe_test_metrics_ok");
    subscribe("post-fork kind=worker symbol:forksafe_test_metrics_fail");
    subscribe("worker-ready symbol:forksafe_test_metrics_slow");
    subscribe("master-exit exec:/bin/sh -c 'echo \"a\\b\"' postgresql://app:hunter2@db/app");
    seal();
    dispatch(FORKSAFE_POST_FORK, FORKSAFE__WORKER, 1);
    dispatch(FORKSAFE_POST_FORK, FORKSAFE__MULE, 1);
    dispatch(FORKSAFE_WORKER_READY, FORKSAFE__WORKER, 1);
    dispatch(FORKSAFE_CHILD_DEATH, FORKSAFE__MASTER, 0);
    self.pid = getpid();

    text = forksafe__metrics_text(&ctx, "gunicorn", 3, &self, 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strncmp(text, "# HELP forksafe_info ", 21) == 0, "%s", text);
    assert_line(text, "# TYPE forksafe_event_occurrences_total counter");
    assert_line(text, "forksafe_info{version=\"" FORKSAFE_VERSION "\",container=\"gunicorn\"} 1");
    assert_line(text, "forksafe_generation 3");
    assert_line(text, "forksafe_event_occurrences_total{event=\"post-fork\"} 2");
    assert_line(text, "forksafe_event_occurrences_total{event=\"child-death\"} 1");
    assert_line(text, "forksafe_event_occurrences_total{event=\"master-exit\"} 0");
    assert_line(text, "forksafe_handler_runs_total{event=\"post-fork\"} 3");
    assert_line(text, "forksafe_handler_failures_total{event=\"post-fork\"} 1");
    assert_line(text, "# TYPE forksafe_handler_duration_seconds histogram");
    /* The slow handler (200 ms) is in the 0.5 s bucket and every one
     * above it, not in 0.1 s: buckets are cumulative. */
    assert_line(text,
                "forksafe_handler_duration_seconds_bucket{event=\"worker-ready\",le=\"0.1\"} 0");
    assert_line(text,
                "forksafe_handler_duration_seconds_bucket{event=\"worker-ready\",le=\"0.5\"} 1");
    assert_line(text,
                "forksafe_handler_duration_seconds_bucket{event=\"worker-ready\",le=\"30\"} 1");
    assert_line(text,
                "forksafe_handler_duration_seconds_bucket{event=\"worker-ready\",le=\"+Inf\"} 1");
    assert_line(text, "forksafe_handler_duration_seconds_count{event=\"worker-ready\"} 1");
    assert_line(text,
                "forksafe_handler_duration_seconds_bucket{event=\"post-fork\",le=\"+Inf\"} 3");
    assert_line(text, "forksafe_handler_duration_seconds_count{event=\"post-fork\"} 3");
    ck_assert_ptr_nonnull(
        strstr(text, "forksafe_handler_max_duration_seconds{event=\"worker-ready\"} 0.2"));
    assert_line(text, "forksafe_hazard_forks_total 0");
    assert_line(text, "forksafe_hazards_last{allowed=\"true\"} 0");
    /* The source's quotes, the handler's quotes and backslash escaped; its
     * password redacted. */
    assert_line(text, "forksafe_subscription_info{index=\"4\",handler=\"exec:/bin/sh -c 'echo "
                      "\\\"a\\\\b\\\"' postgresql://app:***@db/app\",source=\"metrics "
                      "\\\"x\\\".ini\",line=\"3\"} 1");
    ck_assert_ptr_null(strstr(text, "hunter2"));
    /* Per subscription: the same runs, by handler; no listeners' row
     * without listeners. */
    assert_line(text, "forksafe_subscription_runs_total{index=\"1\",handler=\"symbol:forksafe_test_"
                      "metrics_ok\"} 2");
    assert_line(text, "forksafe_subscription_failures_total{index=\"2\",handler=\"symbol:"
                      "forksafe_test_metrics_fail\"} 1");
    assert_line(text, "forksafe_subscription_failures_total{index=\"1\",handler=\"symbol:"
                      "forksafe_test_metrics_ok\"} 0");
    ck_assert_ptr_nonnull(strstr(text, "\nforksafe_subscription_duration_seconds_total{index=\"3\","
                                       "handler=\"symbol:forksafe_test_metrics_slow\"} 0.2"));
    ck_assert_ptr_nonnull(strstr(text, "\nforksafe_subscription_runs_total{index=\"4\",handler="
                                       "\"exec:/bin/sh -c 'echo \\\"a\\\\b\\\"' "
                                       "postgresql://app:***@db/app\"} 0\n"));
    ck_assert_ptr_null(strstr(text, "index=\"-1\""));
    ck_assert_ptr_nonnull(
        strstr(text, "\nforksafe_process_private_bytes{kind=\"master\",id=\"0\"} "));
    forksafe__free(text);
}
END_TEST

START_TEST(memory_of_each_process_and_none_of_a_gone_one)
{
    forksafe__process processes[2] = {{FORKSAFE__WORKER, 1, 0, 0, 0},
                                      {FORKSAFE__WORKER, 2, 0, 0, 0}};
    forksafe__memory memory;
    char line[128], *text;
    pid_t gone = fork();
    int status;

    if (gone == 0)
        _exit(0);
    ck_assert_int_eq(waitpid(gone, &status, 0), gone);
    ck_assert_int_eq(forksafe__memory_read(gone, &memory), -1);
    ck_assert_int_eq(forksafe__memory_read(0, &memory), 0);
    ck_assert_int_gt(memory.rss, 0);
    ck_assert_int_gt(memory.pss, 0);
    ck_assert_int_gt(memory.private_bytes, 0);
    ck_assert_int_le(memory.private_bytes + memory.shared, memory.rss);

    seal();
    processes[0].pid = getpid();
    processes[1].pid = gone;
    text = forksafe__metrics_text(&ctx, "uwsgi", 0, processes, 2);
    ck_assert_ptr_nonnull(text);
    assert_line(text, "# TYPE forksafe_process_private_bytes gauge");
    snprintf(line, sizeof(line), "forksafe_process_pid{kind=\"worker\",id=\"1\"} %ld",
             (long)getpid());
    assert_line(text, line);
    ck_assert_ptr_nonnull(
        strstr(text, "\nforksafe_process_shared_bytes{kind=\"worker\",id=\"1\"} "));
    ck_assert_ptr_nonnull(strstr(text, "\nforksafe_process_pss_bytes{kind=\"worker\",id=\"1\"} "));
    ck_assert_ptr_null(strstr(text, "id=\"2\""));
    forksafe__free(text);
}
END_TEST

START_TEST(text_survives_every_allocation_failing)
{
    forksafe__process self = {FORKSAFE__MASTER, 0, 0, 0, 0};
    char *text = NULL;
    long n;

    subscribe("post-fork symbol:forksafe_test_metrics_ok");
    subscribe("post-fork exec:/bin/false \"quoted\"");
    seal();
    dispatch(FORKSAFE_POST_FORK, FORKSAFE__WORKER, 1);
    self.pid = getpid();
    for (n = 0; n < 2000; n++) {
        forksafe__alloc_fail_after(n);
        text = forksafe__metrics_text(&ctx, "uwsgi", 0, &self, 1);
        forksafe__alloc_fail_after(-1);
        if (text)
            break;
    }
    ck_assert_ptr_nonnull(text);
    ck_assert_int_gt(n, 3);
    assert_line(text, "forksafe_handler_runs_total{event=\"post-fork\"} 2");
    forksafe__free(text);
}
END_TEST

START_TEST(no_stats_no_text)
{
    ck_assert_ptr_null(forksafe__metrics_text(&ctx, "uwsgi", 0, NULL, 0));
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("metrics");
    TCase *format = tcase_create("format");

    tcase_add_checked_fixture(format, setup, teardown);
    tcase_add_test(format, label_values_are_escaped);
    tcase_add_test(format, counters_histogram_and_subscriptions);
    tcase_add_test(format, memory_of_each_process_and_none_of_a_gone_one);
    tcase_add_test(format, text_survives_every_allocation_failing);
    tcase_add_test(format, no_stats_no_text);
    suite_add_tcase(suite, format);
    return suite;
}
