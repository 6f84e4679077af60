/* The host API (include/forksafe_host.h) as another server's adapter uses it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "forksafe_host.h"
#include "unit.h"

static char directory[] = "/tmp/forksafe-host-XXXXXX";
/* Whether mkdtemp has filled in the template: its random suffix may itself
 * end in 'X', so the name cannot tell. */
static int directory_made;

static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    FILE *f;

    if (!directory_made) {
        ck_assert_ptr_nonnull(mkdtemp(directory));
        directory_made = 1;
    }
    snprintf(path, sizeof(path), "%s/%s", directory, name);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void remove_directory(void)
{
    char command[128];

    if (!directory_made)
        return;
    snprintf(command, sizeof(command), "rm -rf '%s'", directory);
    if (system(command) != 0)
        fprintf(stderr, "could not remove %s\n", directory);
    strcpy(directory + strlen(directory) - 6, "XXXXXX");
    directory_made = 0;
}

static char *read_file(const char *name)
{
    char path[512], *text = calloc(1, 65536);
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", directory, name);
    f = fopen(path, "r");
    if (!f) {
        free(text);
        return NULL;
    }
    if (fread(text, 1, 65535, f) == 0)
        text[0] = '\0';
    fclose(f);
    return text;
}

/* The host API's structs, filled from one call's worth of arguments. */
static forksafe_host *host_new(const char *container, const char *settings,
                               const char *subscriptions, const char *source, const char *on_error,
                               double timeout, int verbose, char *error, size_t error_size)
{
    forksafe_host_config config = {.version = FORKSAFE_HOST_API_VERSION,
                                   .container = container,
                                   .settings = settings,
                                   .subscriptions = subscriptions,
                                   .source = source,
                                   .on_error = on_error,
                                   .timeout = timeout,
                                   .verbose = verbose};

    return forksafe_host_new(&config, error, error_size);
}

static int host_dispatch(forksafe_host *host, const char *event, const char *kind, int id, int pid,
                         int ppid, int respawn, int generation, const char *child_kind,
                         int child_id, int child_pid, int child_respawn, int child_status_known,
                         int child_status, const char *cause, const char *reason)
{
    forksafe_host_process child = {child_kind, child_id, child_pid, 0, child_respawn};
    forksafe_host_occurrence occurrence = {FORKSAFE_HOST_API_VERSION,
                                           event,
                                           {kind, id, pid, ppid, respawn},
                                           generation,
                                           reason,
                                           child_kind ? &child : NULL,
                                           child_status_known,
                                           child_status,
                                           cause,
                                           NULL,
                                           0,
                                           0};

    return forksafe_host_dispatch(host, &occurrence);
}

START_TEST(settings_section_and_directives_drive_handlers)
{
    char error[512], ini[2048], *out;
    const char *path;
    forksafe_host *host;

    write_file("placeholder", "");
    snprintf(ini, sizeof(ini),
             "[DEFAULT]\nroot = /srv\n[app:main]\nuse = call:x:y\ndb = %%(root)s/db\n"
             "[forksafe]\npost-fork = exec:cat > %s/post-fork.json\n",
             directory);
    path = write_file("app.ini", ini);
    snprintf(ini, sizeof(ini),
             "\nworker-exit kind=worker exec:echo $FORKSAFE_EVENT > %s/exit.txt\n", directory);
    host = host_new("gunicorn", path, ini, "gunicorn.conf.py", "log", 5, 0, error, sizeof(error));
    ck_assert_msg(host != NULL, "%s", error);
    ck_assert_ptr_nonnull(strstr(forksafe_host_settings_json(host), "\"db\":\"/srv/db\""));
    ck_assert_ptr_null(strstr(forksafe_host_settings_json(host), "\"use\""));
    ck_assert_int_eq(
        host_dispatch(host, "post-fork", "worker", 3, 0, 0, 1, 2, NULL, 0, 0, 0, 0, 0, NULL, NULL),
        0);
    out = read_file("post-fork.json");
    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(strstr(out, "\"container\":\"gunicorn\""));
    ck_assert_ptr_nonnull(strstr(out, "\"kind\":\"worker\",\"id\":3"));
    ck_assert_ptr_nonnull(strstr(out, "\"generation\":2,\"respawn\":1"));
    free(out);
    ck_assert_int_eq(host_dispatch(host, "worker-exit", "worker", 1, 0, 0, 0, 0, NULL, 0, 0, 0, 0,
                                   0, NULL, "shutdown"),
                     0);
    out = read_file("exit.txt");
    ck_assert_str_eq(out, "worker-exit\n");
    free(out);
    ck_assert_int_eq(
        host_dispatch(host, "post_fork", "worker", 1, 0, 0, 0, 0, NULL, 0, 0, 0, 0, 0, NULL, NULL),
        -1);
    ck_assert_int_eq(host_dispatch(host, "child-death", "master", 0, 0, 0, 0, 0, "robot", 1, 1, 0,
                                   0, 0, NULL, NULL),
                     -1);
    forksafe_host_free(host);
}
END_TEST

/* The same production.ini under every server: uWSGI's print/log hook
 * actions write their line to stderr here too, other actions only warn. */
START_TEST(hook_print_prints_and_other_actions_warn)
{
    char error[512], *out;
    const char *path;
    forksafe_host *host;
    int saved, fd;

    path = write_file("stderr.txt", "");
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    fd = open(path, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    host = host_new("gunicorn", NULL,
                    "post-fork hook:print:first line\n"
                    "post-fork hook:log:second: with a colon\n"
                    "post-fork hook:mount:proc none /proc\n",
                    "gunicorn.conf.py", "log", 5, 0, error, sizeof(error));
    if (host)
        ck_assert_int_eq(host_dispatch(host, "post-fork", "worker", 1, 0, 0, 0, 0, NULL, 0, 0, 0, 0,
                                       0, NULL, NULL),
                         0);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    ck_assert_msg(host != NULL, "%s", error);
    forksafe_host_free(host);
    out = read_file("stderr.txt");
    ck_assert_ptr_nonnull(out);
    ck_assert_str_eq(out, "[forksafe] hook:mount:proc none /proc is a uWSGI hook action: it does "
                          "nothing under gunicorn\n"
                          "first line\n"
                          "second: with a colon\n");
    free(out);
}
END_TEST

START_TEST(failures_return_the_policy)
{
    char error[512];
    forksafe_host *host = host_new("celery", NULL,
                                   "post-fork exec:exit 3\n"
                                   "worker-exit on-error=fatal exec:false\n",
                                   "celeryconfig", "exit", 0, 0, error, sizeof(error));

    ck_assert_msg(host != NULL, "%s", error);
    ck_assert_int_eq(
        host_dispatch(host, "post-fork", "worker", 1, 0, 0, 0, 0, NULL, 0, 0, 0, 0, 0, NULL, NULL),
        1 + FORKSAFE__ON_ERROR_EXIT);
    ck_assert_int_eq(host_dispatch(host, "worker-exit", "worker", 1, 0, 0, 0, 0, NULL, 0, 0, 0, 0,
                                   0, NULL, "shutdown"),
                     1 + FORKSAFE__ON_ERROR_FATAL);
    ck_assert_int_eq(host_dispatch(host, "master-start", "master", 0, 0, 0, 0, 0, NULL, 0, 0, 0, 0,
                                   0, NULL, NULL),
                     0);
    forksafe_host_free(host);
}
END_TEST

/* What a host's logger was given, in order. */
typedef struct {
    int count;
    int levels[8];
    char lines[8][512];
} logged_lines;

static void collect_line(void *data, int level, const char *line)
{
    logged_lines *logged = data;

    if (logged->count < 8) {
        logged->levels[logged->count] = level;
        snprintf(logged->lines[logged->count], sizeof(logged->lines[0]), "%s", line);
    }
    logged->count++;
}

/* A host that logs its own way (Celery's logger, say) gets every line the
 * core would have written to stderr, at start-up and at dispatch. */
START_TEST(a_host_logger_gets_every_line)
{
    char error[512];
    logged_lines logged = {0};
    forksafe_host_config config = {.version = FORKSAFE_HOST_API_VERSION,
                                   .container = "celery",
                                   .subscriptions = "post-fork hook:mount:proc none /proc\n"
                                                    "post-fork exec:exit 3\n",
                                   .source = "celeryconfig",
                                   .log = collect_line,
                                   .log_data = &logged};
    forksafe_host *host = forksafe_host_new(&config, error, sizeof(error));

    ck_assert_msg(host != NULL, "%s", error);
    ck_assert_int_eq(logged.count, 1);
    ck_assert_int_eq(logged.levels[0], FORKSAFE_HOST_LOG_WARNING);
    ck_assert_str_eq(logged.lines[0],
                     "hook:mount:proc none /proc is a uWSGI hook action: it does nothing under "
                     "celery");
    ck_assert_int_eq(
        host_dispatch(host, "post-fork", "worker", 1, 0, 0, 0, 0, NULL, 0, 0, 0, 0, 0, NULL, NULL),
        1 + FORKSAFE__ON_ERROR_LOG);
    ck_assert_int_ge(logged.count, 2);
    ck_assert_int_eq(logged.levels[1], FORKSAFE_HOST_LOG_ERROR);
    ck_assert_msg(strstr(logged.lines[1], "exec:exit 3") && !strchr(logged.lines[1], '\n'), "%s",
                  logged.lines[1]);
    forksafe_host_free(host);
}
END_TEST

START_TEST(errors_name_source_and_line)
{
    char error[512];

    ck_assert_ptr_null(host_new("gunicorn", NULL, "post-fork exec:true\n\npost_fork x:y\n",
                                "gunicorn.conf.py", NULL, 0, 0, error, sizeof(error)));
    ck_assert_str_eq(error, "gunicorn.conf.py:3: unknown event 'post_fork' (did you mean "
                            "'post-fork'?)");
    ck_assert_ptr_null(
        host_new("gunicorn", NULL, NULL, "conf", "explode", 0, 0, error, sizeof(error)));
    ck_assert_ptr_nonnull(strstr(error, "log, exit or fatal"));
    ck_assert_ptr_null(host_new("gunicorn", "/nonexistent/app.ini", NULL, "conf", NULL, 0, 0, error,
                                sizeof(error)));
    ck_assert_ptr_nonnull(strstr(error, "/nonexistent/app.ini"));
    forksafe_host_free(NULL);
}
END_TEST

/* A caller written for another version of the structs is refused, not misread. */
START_TEST(another_api_version_is_refused)
{
    char error[512];
    forksafe_host_config config = {.version = FORKSAFE_HOST_API_VERSION + 1,
                                   .container = "gunicorn"};
    forksafe_host_occurrence occurrence = {0};
    forksafe_host *host;

    ck_assert_ptr_null(forksafe_host_new(&config, error, sizeof(error)));
    ck_assert_ptr_nonnull(strstr(error, "host API versions 1 to 2, the caller 3"));
    ck_assert_ptr_null(forksafe_host_new(NULL, error, sizeof(error)));
    config.version = FORKSAFE_HOST_API_VERSION;
    host = forksafe_host_new(&config, error, sizeof(error));
    ck_assert_msg(host != NULL, "%s", error);
    occurrence.version = FORKSAFE_HOST_API_VERSION + 1;
    occurrence.event = "post-fork";
    occurrence.self.kind = "worker";
    ck_assert_int_eq(forksafe_host_dispatch(host, &occurrence), -1);
    occurrence.version = FORKSAFE_HOST_API_VERSION;
    ck_assert_int_eq(forksafe_host_dispatch(host, &occurrence), 0);
    ck_assert_int_eq(forksafe_host_dispatch(host, NULL), -1);
    forksafe_host_free(host);
}
END_TEST

/* forksafe_host_occurrence as version 1 of the host API had it. */
struct host_occurrence_v1 {
    int version;
    const char *event;
    forksafe_host_process self;
    int generation;
    const char *reason;
    const forksafe_host_process *child;
    int child_status_known;
    int child_status;
    const char *child_cause;
};

/* generation-ready's workers and elapsed_ms travel in a version 2
 * occurrence; a version 1 caller, whose struct ends before them, is still
 * served (its generation-ready has an empty list). */
START_TEST(generation_ready_carries_its_workers)
{
    char error[512], subscriptions[512], *out;
    forksafe_host_ready_worker workers[2] = {{1, 4001, 120}, {2, 4002, 345}};
    forksafe_host_occurrence occurrence = {0};
    forksafe_host *host;
    struct host_occurrence_v1 old = {
        1, "generation-ready", {"master", 0, 0, 0, 0}, 4, NULL, NULL, 0, 0, NULL};

    write_file("placeholder", "");
    snprintf(subscriptions, sizeof(subscriptions), "generation-ready exec:cat > %s/ready.json\n",
             directory);
    host = host_new("gunicorn", NULL, subscriptions, NULL, NULL, 5, 0, error, sizeof(error));
    ck_assert_msg(host != NULL, "%s", error);
    occurrence.version = FORKSAFE_HOST_API_VERSION;
    occurrence.event = "generation-ready";
    occurrence.self.kind = "master";
    occurrence.generation = 3;
    occurrence.workers = workers;
    occurrence.worker_count = 2;
    occurrence.elapsed_ms = 2500;
    ck_assert_int_eq(forksafe_host_dispatch(host, &occurrence), 0);
    out = read_file("ready.json");
    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(strstr(out, "\"event\":\"generation-ready\""));
    ck_assert_ptr_nonnull(strstr(out, "\"generation\":3"));
    ck_assert_ptr_nonnull(strstr(out, "\"workers\":[{\"id\":1,\"pid\":4001,\"ms\":120},"
                                      "{\"id\":2,\"pid\":4002,\"ms\":345}]"));
    ck_assert_ptr_nonnull(strstr(out, "\"elapsed_ms\":2500"));
    free(out);
    occurrence.worker_count = -1;
    ck_assert_int_eq(forksafe_host_dispatch(host, &occurrence), -1);
    ck_assert_int_eq(forksafe_host_dispatch(host, (const forksafe_host_occurrence *)&old), 0);
    out = read_file("ready.json");
    ck_assert_ptr_nonnull(strstr(out, "\"generation\":4"));
    ck_assert_ptr_nonnull(strstr(out, "\"workers\":[],\"elapsed_ms\":0"));
    free(out);
    forksafe_host_free(host);
}
END_TEST

/* The Prometheus text of a host: its container, its counters, the
 * processes given (pid 0: this one), an unknown kind left out. */
START_TEST(metrics_text_of_a_host)
{
    char error[512], line[128];
    forksafe_host_process processes[] = {
        {.kind = "master", .id = 0, .pid = 0},
        {.kind = "sorcerer", .id = 7, .pid = 1},
    };
    forksafe_host_occurrence occurrence = {.version = FORKSAFE_HOST_API_VERSION,
                                           .event = "post-fork",
                                           .self = {.kind = "worker", .id = 1}};
    forksafe_host *host =
        host_new("celery", NULL, "post-fork exec:true\n", "conf", NULL, 0, 0, error, sizeof(error));
    const char *text;

    ck_assert_msg(host != NULL, "%s", error);
    ck_assert_ptr_null(forksafe_host_metrics_text(NULL, NULL, 0, 0));
    ck_assert_ptr_null(forksafe_host_metrics_text(host, NULL, 1, 0));
    ck_assert_int_eq(forksafe_host_dispatch(host, &occurrence), 0);
    text = forksafe_host_metrics_text(host, processes, 2, 5);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "container=\"celery\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nforksafe_generation 5\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nforksafe_handler_runs_total{event=\"post-fork\"} 1\n"));
    snprintf(line, sizeof(line), "\nforksafe_process_pid{kind=\"master\",id=\"0\"} %ld\n",
             (long)getpid());
    ck_assert_ptr_nonnull(strstr(text, line));
    ck_assert_ptr_null(strstr(text, "id=\"7\""));
    /* A second call replaces the first text. */
    ck_assert_ptr_nonnull(forksafe_host_metrics_text(host, NULL, 0, 0));
    forksafe_host_free(host);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("host");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, NULL, remove_directory);
    tcase_add_test(tc, settings_section_and_directives_drive_handlers);
    tcase_add_test(tc, hook_print_prints_and_other_actions_warn);
    tcase_add_test(tc, failures_return_the_policy);
    tcase_add_test(tc, a_host_logger_gets_every_line);
    tcase_add_test(tc, errors_name_source_and_line);
    tcase_add_test(tc, another_api_version_is_refused);
    tcase_add_test(tc, generation_ready_carries_its_workers);
    tcase_add_test(tc, metrics_text_of_a_host);
    suite_add_tcase(suite, tc);
    return suite;
}
