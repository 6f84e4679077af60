/*
 * test_dispatch.c - sealing and dispatching for real: exec commands, dl
 * fixtures and symbol handlers of this binary; the payload key by key;
 * `once` across fork()ed processes; the policy dispatch returns; logs; the
 * listeners run after the subscriptions; and every allocation failing in
 * turn over a whole build + seal + dispatch.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"

#define FIXTURE "build/fixtures/handler_ok.so"

FORKSAFE_HANDLER_ABI_DECLARE();

/* ---------------------------------------------------------------- helpers */

#define MAX_LOGS 64

static struct {
    int level;
    char text[1024];
} logs[MAX_LOGS];
static int log_count;

static void capture(void *data, int level, const char *message)
{
    (void)data;
    if (log_count < MAX_LOGS) {
        logs[log_count].level = level;
        snprintf(logs[log_count].text, sizeof(logs[log_count].text), "%s", message);
        log_count++;
    }
}

/* Returns the first captured line containing PART, or NULL. */
static const char *logged(const char *part)
{
    int i;

    for (i = 0; i < log_count; i++) {
        if (strstr(logs[i].text, part))
            return logs[i].text;
    }
    return NULL;
}

static void dump_logs(void)
{
    int i;

    for (i = 0; i < log_count; i++)
        fprintf(stderr, "log[%d] %d: %s\n", i, logs[i].level, logs[i].text);
}

static forksafe__context ctx;
static forksafe__occurrence occ;
static char dir[64], record_path[128];

static int add_settings(forksafe__context *c)
{
    c->has_settings = 1;
    c->settings.path = forksafe__strdup("/srv/app/app.ini");
    c->settings.section = forksafe__strdup("app:main");
    if (!c->settings.path || !c->settings.section)
        return FORKSAFE__ENOMEM;
    if (forksafe__map_put(&c->settings.local, "record", record_path, 2) ||
        forksafe__map_put(&c->settings.local, "db_password", "hunter2", 3) ||
        forksafe__map_put(&c->settings.local, "greeting", "hello", 4) ||
        forksafe__map_put(&c->settings.global, "here", "/srv/app", 0) ||
        forksafe__map_put(&c->settings.global, "__file__", "/srv/app/app.ini", 0))
        return FORKSAFE__ENOMEM;
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

static void setup(void)
{
    log_count = 0;
    snprintf(dir, sizeof(dir), "/tmp/forksafe-dispatch-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(record_path, sizeof(record_path), "%s/record", dir);
    ck_assert_int_eq(forksafe__context_init(&ctx, capture, NULL), 0);
    ck_assert_int_eq(add_settings(&ctx), 0);
    set_occurrence(FORKSAFE_POST_FORK, FORKSAFE__WORKER, 1);
}

static void teardown(void)
{
    char command[128];

    forksafe__context_free(&ctx);
    snprintf(command, sizeof(command), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(command), 0);
}

static void subscribe(const char *format, ...) __attribute__((format(printf, 1, 2)));

static void subscribe(const char *format, ...)
{
    char text[1024];
    va_list ap;

    va_start(ap, format);
    vsnprintf(text, sizeof(text), format, ap);
    va_end(ap);
    unit_subscribe(&ctx, text, "test", 1);
}

static void seal(void)
{
    unit_seal(&ctx);
}

/* Reads PATH into a new string; "" if it does not exist. */
static char *slurp(const char *path)
{
    FILE *file = fopen(path, "rb");
    char *data;
    long size;

    if (!file)
        return strdup("");
    fseek(file, 0, SEEK_END);
    size = ftell(file);
    fseek(file, 0, SEEK_SET);
    data = calloc(1, (size_t)size + 1);
    ck_assert_ptr_nonnull(data);
    ck_assert_uint_eq(fread(data, 1, (size_t)size, file), (size_t)size);
    fclose(file);
    return data;
}

static int count_lines(const char *text, const char *line)
{
    size_t length = strlen(line);
    int count = 0;
    const char *p;

    for (p = text; *p;) {
        const char *end = strchr(p, '\n');
        size_t n = end ? (size_t)(end - p) : strlen(p);

        if (n == length && strncmp(p, line, n) == 0)
            count++;
        p += n + (end ? 1 : 0);
    }
    return count;
}

static int count_newlines(const char *text)
{
    int count = 0;

    for (; *text; text++)
        count += *text == '\n';
    return count;
}

/* Parses line N (0-based) of the record file: "EVENT KIND ID PID JSON". */
static json_t *recorded_payload(int n, char *event, char *kind, int *id, long *pid)
{
    char *text = slurp(record_path), *line = text, *json;
    json_error_t error;
    json_t *payload;
    int skip, consumed = 0;

    for (skip = n; skip > 0 && line; skip--) {
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    ck_assert_msg(line && *line, "no line %d in the record", n);
    ck_assert_int_eq(sscanf(line, "%63s %15s %d %ld %n", event, kind, id, pid, &consumed), 4);
    json = line + consumed;
    *strchr(json, '\n') = '\0';
    payload = json_loads(json, 0, &error);
    ck_assert_msg(payload != NULL, "bad JSON: %s", error.text);
    free(text);
    return payload;
}

static json_t *get(json_t *object, const char *key)
{
    json_t *value = json_object_get(object, key);

    ck_assert_msg(value != NULL, "no key '%s'", key);
    return value;
}

static double realtime(void)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- payload */

START_TEST(payload_key_by_key)
{
    char event[64], kind[16];
    json_t *payload, *process, *settings, *global;
    long pid;
    int id;

    subscribe("post-fork dl:" FIXTURE ":record");
    seal();
    set_occurrence(FORKSAFE_POST_FORK, FORKSAFE__WORKER, 2);
    occ.self.respawn = 3;
    occ.generation = 1;
    occ.reason = "ignored: post-fork has no reason";
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    payload = recorded_payload(0, event, kind, &id, &pid);
    ck_assert_str_eq(event, "post-fork");
    ck_assert_str_eq(kind, "worker");
    ck_assert_int_eq(id, 2);
    ck_assert_int_eq(pid, getpid());

    ck_assert_uint_eq(json_object_size(payload), 8);
    ck_assert_str_eq(json_string_value(get(payload, "event")), "post-fork");
    ck_assert_str_eq(json_string_value(get(payload, "container")), "uwsgi");
    process = get(payload, "process");
    ck_assert_uint_eq(json_object_size(process), 4);
    ck_assert_str_eq(json_string_value(get(process, "kind")), "worker");
    ck_assert_int_eq(json_integer_value(get(process, "id")), 2);
    ck_assert_int_eq(json_integer_value(get(process, "pid")), getpid());
    ck_assert_int_eq(json_integer_value(get(process, "ppid")), getppid());
    ck_assert(json_is_integer(get(payload, "generation")));
    ck_assert_int_eq(json_integer_value(get(payload, "generation")), 1);
    ck_assert_int_eq(json_integer_value(get(payload, "respawn")), 3);
    ck_assert(json_is_real(get(payload, "time")));
    ck_assert_double_lt(fabs(json_real_value(get(payload, "time")) - realtime()), 5.0);
    settings = get(payload, "settings");
    ck_assert_uint_eq(json_object_size(settings), 3);
    ck_assert_str_eq(json_string_value(get(settings, "record")), record_path);
    /* Handlers get the real values: redaction is for logs only. */
    ck_assert_str_eq(json_string_value(get(settings, "db_password")), "hunter2");
    ck_assert_str_eq(json_string_value(get(settings, "greeting")), "hello");
    global = get(payload, "global_settings");
    ck_assert_uint_eq(json_object_size(global), 2);
    ck_assert_str_eq(json_string_value(get(global, "here")), "/srv/app");
    ck_assert_str_eq(json_string_value(get(global, "__file__")), "/srv/app/app.ini");
    ck_assert_ptr_null(json_object_get(payload, "child"));
    ck_assert_ptr_null(json_object_get(payload, "reason"));
    json_decref(payload);
}
END_TEST

START_TEST(payload_child_death)
{
    forksafe__process child = {FORKSAFE__WORKER, 3, 4242, 100, 5};
    json_t *payload, *object;
    forksafe__error err = {0};

    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), 0);
    set_occurrence(FORKSAFE_CHILD_DEATH, FORKSAFE__MASTER, 0);
    occ.child = &child;
    occ.child_status_known = 1;
    occ.child_status = 9; /* killed by SIGKILL */
    occ.child_cause = "harakiri";
    payload = forksafe__payload_new(&ctx, &occ);
    ck_assert_ptr_nonnull(payload);
    ck_assert_uint_eq(json_object_size(payload), 9);
    object = get(payload, "child");
    ck_assert_uint_eq(json_object_size(object), 7);
    ck_assert_str_eq(json_string_value(get(object, "kind")), "worker");
    ck_assert_int_eq(json_integer_value(get(object, "id")), 3);
    ck_assert_int_eq(json_integer_value(get(object, "pid")), 4242);
    ck_assert_int_eq(json_integer_value(get(object, "respawn")), 5);
    ck_assert_int_eq(json_integer_value(get(object, "status")), 9);
    ck_assert_int_eq(json_integer_value(get(object, "signal")), 9);
    ck_assert_str_eq(json_string_value(get(object, "cause")), "harakiri");
    ck_assert_ptr_null(json_object_get(object, "exit_code"));
    ck_assert_ptr_null(json_object_get(object, "ppid"));
    ck_assert_str_eq(json_string_value(get(get(payload, "process"), "kind")), "master");
    ck_assert_int_eq(json_integer_value(get(get(payload, "process"), "id")), 0);
    json_decref(payload);

    occ.child_status = 3 << 8; /* exit(3) */
    occ.child_cause = NULL;
    payload = forksafe__payload_new(&ctx, &occ);
    object = get(payload, "child");
    ck_assert_int_eq(json_integer_value(get(object, "exit_code")), 3);
    ck_assert_ptr_null(json_object_get(object, "signal"));
    ck_assert_ptr_null(json_object_get(object, "cause"));
    json_decref(payload);

    occ.child_status_known = 0;
    payload = forksafe__payload_new(&ctx, &occ);
    ck_assert_uint_eq(json_object_size(get(payload, "child")), 4);
    json_decref(payload);
}
END_TEST

START_TEST(payload_pre_fork_child_has_no_pid)
{
    forksafe__process child = {FORKSAFE__MULE, 2, 777, 0, 1};
    json_t *payload, *object;
    forksafe__error err = {0};

    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), 0);
    set_occurrence(FORKSAFE_PRE_FORK, FORKSAFE__MASTER, 0);
    occ.child = &child;
    payload = forksafe__payload_new(&ctx, &occ);
    object = get(payload, "child");
    ck_assert_uint_eq(json_object_size(object), 3);
    ck_assert_str_eq(json_string_value(get(object, "kind")), "mule");
    ck_assert_int_eq(json_integer_value(get(object, "id")), 2);
    ck_assert_int_eq(json_integer_value(get(object, "respawn")), 1);
    json_decref(payload);

    occ.type = FORKSAFE_POST_FORK_PARENT;
    payload = forksafe__payload_new(&ctx, &occ);
    ck_assert_int_eq(json_integer_value(get(get(payload, "child"), "pid")), 777);
    json_decref(payload);
}
END_TEST

START_TEST(payload_reason_only_for_exits)
{
    forksafe__process child = {FORKSAFE__WORKER, 1, 5, 0, 0};
    json_t *payload;
    forksafe__error err = {0};

    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), 0);
    set_occurrence(FORKSAFE_WORKER_EXIT, FORKSAFE__WORKER, 1);
    occ.reason = "reload";
    occ.child = &child; /* not an event with a child: ignored */
    payload = forksafe__payload_new(&ctx, &occ);
    ck_assert_str_eq(json_string_value(get(payload, "reason")), "reload");
    ck_assert_ptr_null(json_object_get(payload, "child"));
    ck_assert_uint_eq(json_object_size(payload), 9);
    json_decref(payload);
    occ.type = FORKSAFE_MASTER_EXIT;
    occ.reason = "shutdown";
    payload = forksafe__payload_new(&ctx, &occ);
    ck_assert_str_eq(json_string_value(get(payload, "reason")), "shutdown");
    json_decref(payload);
}
END_TEST

START_TEST(payload_generation_ready_lists_the_workers)
{
    forksafe__ready_worker workers[] = {{1, 501, 0}, {2, 502, 1234}};
    json_t *payload, *list;
    forksafe__error err = {0};

    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), 0);
    set_occurrence(FORKSAFE_GENERATION_READY, FORKSAFE__MASTER, 0);
    occ.workers = workers;
    occ.worker_count = 2;
    occ.elapsed_ms = 1500;
    occ.reason = "reload"; /* not an event with a reason: ignored */
    payload = forksafe__payload_new(&ctx, &occ);
    ck_assert_ptr_nonnull(payload);
    ck_assert_uint_eq(json_object_size(payload), 10);
    ck_assert_str_eq(json_string_value(get(payload, "event")), "generation-ready");
    ck_assert_int_eq(json_integer_value(get(payload, "elapsed_ms")), 1500);
    list = get(payload, "workers");
    ck_assert(json_is_array(list));
    ck_assert_uint_eq(json_array_size(list), 2);
    ck_assert_uint_eq(json_object_size(json_array_get(list, 1)), 3);
    ck_assert_int_eq(json_integer_value(get(json_array_get(list, 0), "id")), 1);
    ck_assert_int_eq(json_integer_value(get(json_array_get(list, 0), "pid")), 501);
    ck_assert_int_eq(json_integer_value(get(json_array_get(list, 0), "ms")), 0);
    ck_assert_int_eq(json_integer_value(get(json_array_get(list, 1), "ms")), 1234);
    ck_assert_ptr_null(json_object_get(payload, "reason"));
    json_decref(payload);

    /* Other events never carry the list, whatever the occurrence holds. */
    occ.type = FORKSAFE_MASTER_START;
    payload = forksafe__payload_new(&ctx, &occ);
    ck_assert_ptr_null(json_object_get(payload, "workers"));
    ck_assert_ptr_null(json_object_get(payload, "elapsed_ms"));
    json_decref(payload);

    occ.type = FORKSAFE_GENERATION_READY;
    occ.worker_count = 0;
    payload = forksafe__payload_new(&ctx, &occ);
    ck_assert_uint_eq(json_array_size(get(payload, "workers")), 0);
    json_decref(payload);
}
END_TEST

START_TEST(settings_are_shared_not_rebuilt)
{
    forksafe__error err = {0};
    json_t *first, *second;
    size_t refcount;

    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), 0);
    refcount = ctx.settings_json->refcount;
    first = forksafe__payload_new(&ctx, &occ);
    second = forksafe__payload_new(&ctx, &occ);
    ck_assert_ptr_eq(json_object_get(first, "settings"), ctx.settings_json);
    ck_assert_ptr_eq(json_object_get(second, "settings"), ctx.settings_json);
    ck_assert_ptr_eq(json_object_get(second, "global_settings"), ctx.global_settings_json);
    ck_assert_uint_eq(ctx.settings_json->refcount, refcount + 2);
    json_decref(first);
    json_decref(second);
    ck_assert_uint_eq(ctx.settings_json->refcount, refcount);
}
END_TEST

START_TEST(no_settings_means_empty_objects)
{
    forksafe__error err = {0};
    json_t *payload;

    forksafe__context_free(&ctx);
    ck_assert_int_eq(forksafe__context_init(&ctx, capture, NULL), 0);
    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), 0);
    payload = forksafe__payload_new(&ctx, &occ);
    ck_assert_uint_eq(json_object_size(get(payload, "settings")), 0);
    ck_assert_uint_eq(json_object_size(get(payload, "global_settings")), 0);
    json_decref(payload);
}
END_TEST

/* One payload per dispatch, shared by every handler: identical text
 * (including "time") in two dl handlers and an exec handler. */
START_TEST(one_payload_per_dispatch)
{
    char event[64], kind[16], path[192], *exec_text;
    json_t *first, *second, *third;
    long pid;
    int id;

    subscribe("post-fork dl:" FIXTURE ":record");
    subscribe("post-fork exec:cat > '%s/exec'", dir);
    subscribe("post-fork dl:" FIXTURE ":record");
    seal();
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    first = recorded_payload(0, event, kind, &id, &pid);
    second = recorded_payload(1, event, kind, &id, &pid);
    ck_assert(json_equal(first, second));
    ck_assert(json_real_value(get(first, "time")) == json_real_value(get(second, "time")));
    snprintf(path, sizeof(path), "%s/exec", dir);
    exec_text = slurp(path);
    third = json_loads(exec_text, 0, NULL);
    ck_assert_ptr_nonnull(third);
    ck_assert(json_equal(first, third));
    json_decref(first);
    json_decref(second);
    json_decref(third);
    free(exec_text);
}
END_TEST

/* ------------------------------------------------------------------- exec */

START_TEST(exec_gets_payload_on_stdin_and_identity_in_env)
{
    char path[192], expected[128], *text;
    json_t *payload;

    subscribe("post-fork exec:cat > '%s/payload'; "
              "printf '%%s %%s %%s %%s' \"$FORKSAFE_EVENT\" \"$FORKSAFE_PROCESS\" "
              "\"$FORKSAFE_ID\" \"$FORKSAFE_PID\" > '%s/identity'; env > '%s/env'; "
              "tr '\\0' ' ' < /proc/$$/cmdline > '%s/cmdline'",
              dir, dir, dir, dir);
    seal();
    set_occurrence(FORKSAFE_POST_FORK, FORKSAFE__SPOOLER, 4);
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);

    snprintf(path, sizeof(path), "%s/payload", dir);
    text = slurp(path);
    payload = json_loads(text, 0, NULL);
    ck_assert_ptr_nonnull(payload);
    ck_assert_str_eq(json_string_value(get(get(payload, "settings"), "db_password")), "hunter2");
    ck_assert_str_eq(json_string_value(get(get(payload, "process"), "kind")), "spooler");
    json_decref(payload);
    free(text);

    snprintf(path, sizeof(path), "%s/identity", dir);
    text = slurp(path);
    snprintf(expected, sizeof(expected), "post-fork spooler 4 %ld", (long)getpid());
    ck_assert_str_eq(text, expected);
    free(text);

    /* Settings never in the environment or the command line. */
    snprintf(path, sizeof(path), "%s/env", dir);
    text = slurp(path);
    ck_assert_ptr_nonnull(strstr(text, "FORKSAFE_EVENT=post-fork"));
    ck_assert_ptr_null(strstr(text, "hunter2"));
    free(text);
    snprintf(path, sizeof(path), "%s/cmdline", dir);
    text = slurp(path);
    ck_assert_ptr_nonnull(strstr(text, "sh -c "));
    ck_assert_ptr_null(strstr(text, "hunter2"));
    free(text);
}
END_TEST

START_TEST(filters_and_declaration_order)
{
    char path[192], *text;

    subscribe("post-fork exec:echo A >> '%s/order'", dir);
    subscribe("post-fork kind=mule exec:echo mule >> '%s/order'", dir);
    subscribe("post-fork id=2 exec:echo id2 >> '%s/order'", dir);
    subscribe("post-fork,worker-ready kind=worker id=1 exec:echo B >> '%s/order'", dir);
    subscribe("worker-ready exec:echo ready >> '%s/order'", dir);
    subscribe("* exec:echo C >> '%s/order'", dir);
    seal();
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    snprintf(path, sizeof(path), "%s/order", dir);
    text = slurp(path);
    ck_assert_str_eq(text, "A\nB\nC\n");
    free(text);
}
END_TEST

START_TEST(unmatched_events_cost_nothing)
{
    unsigned long before;

    subscribe("worker-ready id=2 exec:true");
    seal();
    ck_assert(forksafe__wants(&ctx, FORKSAFE_WORKER_READY));
    ck_assert(!forksafe__wants(&ctx, FORKSAFE_POST_FORK));
    before = forksafe__alloc_attempts();
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    set_occurrence(FORKSAFE_WORKER_READY, FORKSAFE__WORKER, 1);
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    ck_assert_uint_eq(forksafe__alloc_attempts(), before);
}
END_TEST

/* ------------------------------------------------------------------- once */

START_TEST(once_across_forked_children)
{
    char path[192], *text;
    pid_t children[6];
    int i, status;

    subscribe("post-fork once exec:echo once >> '%s/runs'", dir);
    subscribe("post-fork exec:echo every >> '%s/runs'", dir);
    subscribe("post-fork once dl:" FIXTURE ":record");
    seal();
    for (i = 0; i < 6; i++) {
        children[i] = fork();
        ck_assert_int_ge(children[i], 0);
        if (children[i] == 0) {
            set_occurrence(FORKSAFE_POST_FORK, FORKSAFE__WORKER, i + 1);
            _exit(forksafe__dispatch(&ctx, &occ));
        }
    }
    for (i = 0; i < 6; i++) {
        ck_assert_int_eq(waitpid(children[i], &status, 0), children[i]);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    /* And not again in the master's later deliveries. */
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    snprintf(path, sizeof(path), "%s/runs", dir);
    text = slurp(path);
    ck_assert_int_eq(count_lines(text, "once"), 1);
    ck_assert_int_eq(count_lines(text, "every"), 7);
    free(text);
    text = slurp(record_path);
    ck_assert_int_eq(count_newlines(text), 1);
    free(text);
}
END_TEST

/* ----------------------------------------------------------------- policy */

START_TEST(failure_is_logged_with_context)
{
    char expected[256];

    subscribe("post-fork exec:exit 3");
    seal();
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 1 + FORKSAFE__ON_ERROR_LOG);
    snprintf(
        expected, sizeof(expected),
        "handler 'exec:exit 3' failed on post-fork in worker 1 (pid %ld): exited with status 3",
        (long)getpid());
    ck_assert_msg(logged(expected) != NULL, "missing: %s", expected);
}
END_TEST

START_TEST(default_policy_is_read_at_dispatch)
{
    subscribe("post-fork exec:exit 1");
    seal();
    ctx.on_error = FORKSAFE__ON_ERROR_EXIT;
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 1 + FORKSAFE__ON_ERROR_EXIT);
}
END_TEST

START_TEST(strongest_policy_wins)
{
    char expected[256];

    subscribe("post-fork on-error=log exec:exit 1");
    subscribe("post-fork on-error=fatal dl:" FIXTURE ":fail_seven");
    subscribe("post-fork on-error=exit exec:true");
    subscribe("pre-fork on-error=fatal exec:false");
    seal();
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 1 + FORKSAFE__ON_ERROR_FATAL);
    snprintf(expected, sizeof(expected),
             "handler 'dl:" FIXTURE ":fail_seven' failed on post-fork in worker 1 (pid %ld): "
             "returned 7",
             (long)getpid());
    ck_assert_msg(logged(expected) != NULL, "missing: %s", expected);
    set_occurrence(FORKSAFE_POST_FORK, FORKSAFE__WORKER, 1);
    occ.type = FORKSAFE_PRE_FORK;
    occ.self.kind = FORKSAFE__MASTER;
    occ.self.id = 0;
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 1 + FORKSAFE__ON_ERROR_FATAL);
    snprintf(
        expected, sizeof(expected),
        "handler 'exec:false' failed on pre-fork in the master (pid %ld): exited with status 1",
        (long)getpid());
    ck_assert_msg(logged(expected) != NULL, "missing: %s", expected);
}
END_TEST

START_TEST(success_returns_zero)
{
    subscribe("post-fork on-error=fatal exec:true");
    subscribe("post-fork on-error=fatal dl:" FIXTURE ":log_hello");
    seal();
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    ck_assert_ptr_null(logged("failed"));
}
END_TEST

START_TEST(killed_and_timed_out_commands)
{
    char expected[256];

    /* Two dispatches: the shell that kills itself gets all the time a busy
     * machine needs to start, only the sleeper meets the short timeout. */
    subscribe("post-fork id=1 exec:kill -9 $$");
    subscribe("post-fork id=2 exec:sleep 30");
    seal();
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 1);
    snprintf(expected, sizeof(expected),
             "handler 'exec:kill -9 $$' failed on post-fork in worker 1 (pid %ld): killed by "
             "signal 9",
             (long)getpid());
    ck_assert_msg(logged(expected) != NULL, "missing: %s", expected);
    ctx.timeout = 0.3;
    set_occurrence(FORKSAFE_POST_FORK, FORKSAFE__WORKER, 2);
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 1);
    snprintf(expected, sizeof(expected),
             "handler 'exec:sleep 30' failed on post-fork in worker 2 (pid %ld): timed out after "
             "0.3 s",
             (long)getpid());
    ck_assert_msg(logged(expected) != NULL, "missing: %s", expected);
    errno = 0;
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}
END_TEST

/* ------------------------------------------------------------------- logs */

START_TEST(verbose_logs_durations)
{
    const char *line;
    char prefix[128];

    ctx.verbose = 1;
    subscribe("post-fork exec:true");
    seal();
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    snprintf(prefix, sizeof(prefix),
             "handler 'exec:true' ran on post-fork in worker 1 (pid %ld) in ", (long)getpid());
    line = logged(prefix);
    ck_assert_msg(line != NULL, "missing: %s", prefix);
    ck_assert_str_eq(line + strlen(line) - 3, " ms");
    snprintf(prefix, sizeof(prefix), "post-fork in worker 1 (pid %ld): 1 handler, 0 failed, ",
             (long)getpid());
    line = logged(prefix);
    ck_assert_msg(line != NULL, "missing: %s", prefix);
    ck_assert_str_eq(line + strlen(line) - 3, " ms");
}
END_TEST

START_TEST(slow_in_process_handler_warns)
{
    const char *line;

    ctx.timeout = 0.05;
    subscribe("post-fork dl:" FIXTURE ":slow");
    seal();
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    line = logged("more than the 0.05 s timeout");
    if (!line)
        dump_logs();
    ck_assert_ptr_nonnull(line);
    ck_assert_ptr_nonnull(strstr(line, "handler 'dl:" FIXTURE ":slow' took "));
    ck_assert_int_eq(logs[0].level, FORKSAFE__LOG_WARNING);
}
END_TEST

START_TEST(handlers_log_with_their_name)
{
    subscribe("post-fork dl:" FIXTURE ":log_hello");
    seal();
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    ck_assert_ptr_nonnull(logged("dl:" FIXTURE ":log_hello: hello from post-fork"));
}
END_TEST

START_TEST(dispatch_before_seal_runs_nothing)
{
    char path[192], *text;

    subscribe("post-fork exec:echo ran > '%s/ran'", dir);
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    ck_assert_ptr_nonnull(logged("post-fork delivered before start-up finished"));
    snprintf(path, sizeof(path), "%s/ran", dir);
    text = slurp(path);
    ck_assert_str_eq(text, "");
    free(text);
}
END_TEST

START_TEST(seal_twice_is_refused)
{
    forksafe__error err = {0};

    seal();
    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), FORKSAFE__EINVAL);
}
END_TEST

START_TEST(describe_redacts_secrets)
{
    int i;

    subscribe("post-fork,worker-ready kind=worker id=2 once on-error=fatal "
              "exec:curl https://bob:s3cret@example.org/");
    seal();
    forksafe__context_describe(&ctx);
    ck_assert_ptr_nonnull(logged("1 subscription (on-error log, timeout 30 s):"));
    ck_assert_ptr_nonnull(logged("#1 post-fork,worker-ready kind=worker id=2 once on-error=fatal "
                                 "exec:curl https://bob:"));
    ck_assert_ptr_nonnull(logged("(test:1)"));
    ck_assert_ptr_nonnull(logged("settings from /srv/app/app.ini [app:main]:"));
    ck_assert_ptr_nonnull(logged("greeting = hello"));
    ck_assert_ptr_nonnull(logged("db_password = "));
    ck_assert_ptr_nonnull(logged("here = /srv/app"));
    for (i = 0; i < log_count; i++) {
        ck_assert_msg(!strstr(logs[i].text, "hunter2"), "leaked: %s", logs[i].text);
        ck_assert_msg(!strstr(logs[i].text, "s3cret"), "leaked: %s", logs[i].text);
    }
}
END_TEST

/* ------------------------------------------------------ public accessors */

int forksafe_test_check_accessors(const forksafe_event *ev);

int forksafe_test_check_accessors(const forksafe_event *ev)
{
    const json_t *payload = forksafe_event_payload(ev);
    const char *json = forksafe_event_payload_json(ev);

    if (forksafe_event_type_of(ev) != FORKSAFE_WORKER_READY)
        return 1;
    if (strcmp(forksafe_event_name(ev), "worker-ready") != 0)
        return 2;
    if (strcmp(forksafe_event_process_kind(ev), "worker") != 0)
        return 3;
    if (forksafe_event_process_id(ev) != 5 || forksafe_event_pid(ev) != getpid())
        return 4;
    if (!forksafe_event_setting(ev, "greeting") ||
        strcmp(forksafe_event_setting(ev, "greeting"), "hello") != 0)
        return 5;
    if (forksafe_event_setting(ev, "here") || forksafe_event_setting(ev, "absent"))
        return 6;
    if (!payload || strcmp(json_string_value(json_object_get(payload, "event")), "worker-ready"))
        return 7;
    /* Serialised once, then the same text. */
    if (!json || forksafe_event_payload_json(ev) != json || json[0] != '{')
        return 8;
    return 0;
}

START_TEST(accessors)
{
    char why[64];
    int i;

    subscribe("worker-ready symbol:forksafe_test_check_accessors");
    seal();
    set_occurrence(FORKSAFE_WORKER_READY, FORKSAFE__WORKER, 5);
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    for (i = 1; i <= 8; i++) {
        snprintf(why, sizeof(why), "returned %d", i);
        ck_assert_msg(!logged(why), "accessor check %d failed", i);
    }
    ck_assert_str_eq(forksafe_event_type_name(FORKSAFE_CHILD_DEATH), "child-death");
}
END_TEST

/* ------------------------------------------------------- allocation chaos */

/* A realistic start-up and one delivery with allocation N failing.
 * Returns 0 if every step succeeded; otherwise the first failing step
 * must have failed cleanly, and everything is freed either way. */
static int build_and_dispatch(long n, const char *runs)
{
    forksafe__context c;
    forksafe__error err = {0};
    char text[256];
    int rc;

    forksafe__alloc_fail_after(n);
    rc = forksafe__context_init(&c, capture, NULL);
    if (rc) {
        forksafe__alloc_fail_after(-1);
        ck_assert_int_eq(rc, FORKSAFE__ENOMEM);
        return rc;
    }
    rc = add_settings(&c);
    snprintf(text, sizeof(text), "post-fork,worker-ready once exec:echo x >> '%s'", runs);
    if (!rc)
        rc = forksafe__subscribe(&c, text, "chaos.ini", 1, &err);
    if (!rc)
        rc = forksafe__subscribe(&c, "post-fork kind=worker dl:" FIXTURE ":record", "chaos.ini", 2,
                                 &err);
    if (!rc)
        rc =
            forksafe__subscribe(&c, "* symbol:forksafe_test_check_accessors", "chaos.ini", 3, &err);
    if (!rc)
        rc = forksafe__context_seal(&c, &err);
    if (rc) {
        forksafe__alloc_fail_after(-1);
        ck_assert_int_eq(rc, FORKSAFE__ENOMEM);
        forksafe__context_free(&c);
        return rc;
    }
    set_occurrence(FORKSAFE_WORKER_READY, FORKSAFE__WORKER, 5);
    rc = forksafe__dispatch(&c, &occ);
    forksafe__alloc_fail_after(-1);
    /* A handler that ran out of memory is a failed handler: "log". */
    ck_assert_int_le(rc, 1 + FORKSAFE__ON_ERROR_LOG);
    forksafe__context_free(&c);
    return rc;
}

START_TEST(every_allocation_failing_in_turn)
{
    char runs[128];
    long n;
    int rc = -1;

    snprintf(runs, sizeof(runs), "%s/runs", dir);
    forksafe__context_free(&ctx);
    forksafe__alloc_install_json();
    for (n = 0; n < 5000; n++) {
        log_count = 0;
        rc = build_and_dispatch(n, runs);
        if (rc == 0)
            break;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_int_gt(n, 20);
    ck_assert_int_eq(forksafe__context_init(&ctx, capture, NULL), 0);
}
END_TEST

/* -------------------------------------------------------------- listeners */

/* A listener list of this test: what ran, in order, in `ran`; listener 1
 * fails.  open_result says what open() returns. */
static char ran[64];
static int open_result, closed;

int forksafe_test_note_subscription(const forksafe_event *ev);

int forksafe_test_note_subscription(const forksafe_event *ev)
{
    (void)ev;
    strncat(ran, "S", sizeof(ran) - strlen(ran) - 1);
    return 0;
}

static int test_listeners_open(forksafe__context *c, const forksafe_event *ev,
                               forksafe__listener_round *round)
{
    (void)c;
    (void)ev;
    strncat(ran, "[", sizeof(ran) - strlen(ran) - 1);
    round->count = 2;
    return open_result;
}

static int test_listeners_run(forksafe__context *c, forksafe__listener_round *round, long index,
                              const forksafe_event *ev, char *why, size_t why_size)
{
    char step[16];

    (void)c;
    (void)round;
    ck_assert_str_eq(ev->subscription->name, "test listeners");
    snprintf(step, sizeof(step), "L%ld", index);
    strncat(ran, step, sizeof(ran) - strlen(ran) - 1);
    if (index != 1)
        return 0;
    snprintf(why, why_size, "listener %ld said no", index);
    return FORKSAFE__EHANDLER;
}

static void test_listeners_close(forksafe__listener_round *round)
{
    (void)round;
    closed++;
    strncat(ran, "]", sizeof(ran) - strlen(ran) - 1);
}

static const forksafe__listeners test_listeners = {
    .subscription = {.name = "test listeners",
                     .spec = "test:listeners",
                     .on_error = FORKSAFE__ON_ERROR_INHERIT},
    .open = test_listeners_open,
    .run = test_listeners_run,
    .close = test_listeners_close,
};

static void listeners_setup(void)
{
    setup();
    ran[0] = '\0';
    open_result = 1;
    closed = 0;
    ctx.listeners = &test_listeners;
}

START_TEST(listeners_run_after_the_subscriptions_as_handlers)
{
    json_t *stats, *history, *last;

    subscribe("post-fork symbol:forksafe_test_note_subscription");
    seal();
    ctx.on_error = FORKSAFE__ON_ERROR_EXIT;
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 1 + FORKSAFE__ON_ERROR_EXIT);
    ck_assert_str_eq(ran, "S[L0L1]");
    ck_assert_int_eq(closed, 1);
    /* Each listener is one handler run in the stats, under the listeners'
     * index; a listener logs its own failure, the dispatcher does not. */
    ck_assert_int_eq(ctx.stats->events[FORKSAFE_POST_FORK].occurred, 1);
    ck_assert_int_eq(ctx.stats->events[FORKSAFE_POST_FORK].handlers_run, 3);
    ck_assert_int_eq(ctx.stats->events[FORKSAFE_POST_FORK].failed, 1);
    stats = forksafe__stats_json(&ctx);
    ck_assert_ptr_nonnull(stats);
    history = json_object_get(stats, "history");
    ck_assert_uint_eq(json_array_size(history), 3);
    last = json_array_get(history, 2);
    ck_assert_int_eq(json_integer_value(json_object_get(last, "subscription")),
                     FORKSAFE__STATS_LISTENERS);
    ck_assert_str_eq(json_string_value(json_object_get(last, "handler")), "pyramid_forksafe");
    ck_assert_str_eq(json_string_value(json_object_get(last, "error")), "listener 1 said no");
    json_decref(stats);
    ck_assert_ptr_null(logged("failed on"));
}
END_TEST

START_TEST(listeners_that_cannot_open_fail_under_the_policy)
{
    seal();
    open_result = FORKSAFE__EHANDLER;
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 1 + FORKSAFE__ON_ERROR_LOG);
    ck_assert_str_eq(ran, "[");
    ck_assert_int_eq(closed, 0);
    ck_assert_int_eq(ctx.stats->events[FORKSAFE_POST_FORK].handlers_run, 0);
}
END_TEST

START_TEST(listeners_with_nothing_to_run_cost_nothing)
{
    seal();
    open_result = 0;
    ck_assert_int_eq(forksafe__dispatch(&ctx, &occ), 0);
    ck_assert_str_eq(ran, "[");
    ck_assert_int_eq(closed, 0);
    ck_assert_int_eq(ctx.stats->events[FORKSAFE_POST_FORK].occurred, 1);
    ck_assert_int_eq(ctx.stats->events[FORKSAFE_POST_FORK].handlers_run, 0);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("dispatch");
    TCase *payload = tcase_create("payload");
    TCase *delivery = tcase_create("delivery");
    TCase *chaos = tcase_create("chaos");
    TCase *listeners = tcase_create("listeners");

    tcase_add_checked_fixture(payload, setup, teardown);
    tcase_add_test(payload, payload_key_by_key);
    tcase_add_test(payload, payload_child_death);
    tcase_add_test(payload, payload_pre_fork_child_has_no_pid);
    tcase_add_test(payload, payload_reason_only_for_exits);
    tcase_add_test(payload, payload_generation_ready_lists_the_workers);
    tcase_add_test(payload, settings_are_shared_not_rebuilt);
    tcase_add_test(payload, no_settings_means_empty_objects);
    tcase_add_test(payload, one_payload_per_dispatch);
    tcase_add_test(payload, accessors);
    suite_add_tcase(suite, payload);

    tcase_set_timeout(delivery, 30);
    tcase_add_checked_fixture(delivery, setup, teardown);
    tcase_add_test(delivery, exec_gets_payload_on_stdin_and_identity_in_env);
    tcase_add_test(delivery, filters_and_declaration_order);
    tcase_add_test(delivery, unmatched_events_cost_nothing);
    tcase_add_test(delivery, once_across_forked_children);
    tcase_add_test(delivery, failure_is_logged_with_context);
    tcase_add_test(delivery, default_policy_is_read_at_dispatch);
    tcase_add_test(delivery, strongest_policy_wins);
    tcase_add_test(delivery, success_returns_zero);
    tcase_add_test(delivery, killed_and_timed_out_commands);
    tcase_add_test(delivery, verbose_logs_durations);
    tcase_add_test(delivery, slow_in_process_handler_warns);
    tcase_add_test(delivery, handlers_log_with_their_name);
    tcase_add_test(delivery, dispatch_before_seal_runs_nothing);
    tcase_add_test(delivery, seal_twice_is_refused);
    tcase_add_test(delivery, describe_redacts_secrets);
    suite_add_tcase(suite, delivery);

    tcase_add_checked_fixture(listeners, listeners_setup, teardown);
    tcase_add_test(listeners, listeners_run_after_the_subscriptions_as_handlers);
    tcase_add_test(listeners, listeners_that_cannot_open_fail_under_the_policy);
    tcase_add_test(listeners, listeners_with_nothing_to_run_cost_nothing);
    suite_add_tcase(suite, listeners);

    tcase_set_timeout(chaos, 300);
    tcase_add_checked_fixture(chaos, setup, teardown);
    tcase_add_test(chaos, every_allocation_failing_in_turn);
    suite_add_tcase(suite, chaos);
    return suite;
}
