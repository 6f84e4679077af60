/*
 * dispatch_bench.c - what one event costs, in instructions, under callgrind.
 *
 * Run without arguments, it runs itself again under
 * `valgrind --tool=callgrind --collect-atstart=no`; in that child every
 * phase below runs ITERATIONS times between CALLGRIND_ZERO_STATS and
 * CALLGRIND_DUMP_STATS_AT(phase), so each dump holds that phase's loop and
 * nothing else.  The parent reads the totals back from the dump files and
 * prints instructions per iteration.  Instruction counts do not depend on
 * the machine's load, so unlike times they are comparable between runs.
 *
 * The baseline is a direct call of the same do-nothing handler through a
 * function pointer, measured in the same run: "beyond the handler" is the
 * dispatch phase minus that.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <valgrind/callgrind.h>

#include "forksafe_internal.h"

#define ITERATIONS 10000
#define WARMUP     100
#define SETTINGS   20

FORKSAFE_HANDLER_ABI_DECLARE();

FORKSAFE_EXPORT int bench_noop(const forksafe_event *ev);
FORKSAFE_EXPORT int bench_read_json(const forksafe_event *ev);
FORKSAFE_EXPORT int bench_read_setting(const forksafe_event *ev);

FORKSAFE_EXPORT int bench_noop(const forksafe_event *ev)
{
    (void)ev;
    return 0;
}

/* What an exec: or python: handler is given, and what event_log.c reads. */
FORKSAFE_EXPORT int bench_read_json(const forksafe_event *ev)
{
    return forksafe_event_payload_json(ev) ? 0 : 1;
}

FORKSAFE_EXPORT int bench_read_setting(const forksafe_event *ev)
{
    return forksafe_event_setting(ev, "bench.setting.7") ? 0 : 1;
}

static void quiet_log(void *userdata, int level, const char *message)
{
    (void)userdata;
    if (level <= FORKSAFE__LOG_WARNING)
        fprintf(stderr, "[forksafe] %s\n", message);
}

static void die(const char *what, const forksafe__error *err)
{
    char text[1200];

    forksafe__error_format(err, text, sizeof(text));
    fprintf(stderr, "dispatch_bench: %s: %s\n", what, text);
    exit(1);
}

/* A context as the plugin builds it: SETTINGS app settings, one
 * subscription per handler above, each on its own event, sealed. */
static void setup(forksafe__context *ctx, const char *directory)
{
    static const char *const subscriptions[] = {
        "post-fork symbol:bench_noop",
        "worker-ready symbol:bench_read_json",
        "worker-exit symbol:bench_read_setting",
    };
    forksafe__error err = {0};
    char path[512];
    FILE *f;
    size_t i;

    snprintf(path, sizeof(path), "%s/settings.ini", directory);
    f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fprintf(f, "[app:main]\nuse = egg:bench\n");
    for (i = 0; i < SETTINGS; i++)
        fprintf(f, "bench.setting.%zu = value number %zu\n", i, i);
    fclose(f);
    if (forksafe__context_init(ctx, quiet_log, NULL) != 0) {
        fprintf(stderr, "dispatch_bench: out of memory\n");
        exit(1);
    }
    if (forksafe__settings_load(&ctx->settings, path, &err) != 0)
        die("settings", &err);
    ctx->has_settings = 1;
    unlink(path);
    for (i = 0; i < sizeof(subscriptions) / sizeof(subscriptions[0]); i++) {
        if (forksafe__subscribe(ctx, subscriptions[i], "bench", (int)i + 1, &err) != 0)
            die("subscribe", &err);
    }
    if (forksafe__context_seal(ctx, &err) != 0)
        die("seal", &err);
}

static forksafe__occurrence occurrence(forksafe_event_type type)
{
    forksafe__occurrence occ;

    memset(&occ, 0, sizeof(occ));
    occ.type = type;
    occ.self.kind = FORKSAFE__WORKER;
    occ.self.id = 1;
    occ.self.pid = getpid();
    occ.self.ppid = getppid();
    return occ;
}

/* The phases, in order; each is one callgrind dump. */
enum phase {
    PHASE_DIRECT,
    PHASE_DISPATCH,
    PHASE_UNSUBSCRIBED,
    PHASE_PAYLOAD,
    PHASE_PAYLOAD_JSON,
    PHASE_DISPATCH_JSON,
    PHASE_DISPATCH_SETTING,
    PHASE_COUNT
};

static const char *const phase_names[PHASE_COUNT] = {
    "direct",       "dispatch",      "unsubscribed",     "payload",
    "payload_json", "dispatch_json", "dispatch_setting",
};

/* Keeps the compiler from calling the handler directly or dropping it. */
static int (*volatile direct_handler)(const forksafe_event *) = bench_noop;

static void run_phase(forksafe__context *ctx, enum phase phase, int iterations)
{
    forksafe__occurrence post_fork = occurrence(FORKSAFE_POST_FORK);
    forksafe__occurrence ready = occurrence(FORKSAFE_WORKER_READY);
    forksafe__occurrence exiting = occurrence(FORKSAFE_WORKER_EXIT);
    forksafe__occurrence unsubscribed = occurrence(FORKSAFE_MASTER_START);
    forksafe_event ev = {ctx, &post_fork, &ctx->subscriptions[0], NULL, NULL, 0};
    json_t *payload = forksafe__payload_new(ctx, &post_fork);
    int i, failures = 0;

    if (!payload) {
        fprintf(stderr, "dispatch_bench: out of memory\n");
        exit(1);
    }
    for (i = 0; i < iterations; i++) {
        switch (phase) {
        case PHASE_DIRECT:
            failures += direct_handler(&ev);
            break;
        case PHASE_DISPATCH:
            failures += forksafe__dispatch(ctx, &post_fork);
            break;
        case PHASE_UNSUBSCRIBED:
            failures += forksafe__dispatch(ctx, &unsubscribed);
            break;
        case PHASE_PAYLOAD: {
            json_t *built = forksafe__payload_new(ctx, &post_fork);
            failures += !built;
            json_decref(built);
            break;
        }
        case PHASE_PAYLOAD_JSON: {
            forksafe_event fresh = {ctx, &post_fork, &ctx->subscriptions[0], payload, NULL, 0};
            failures += !forksafe_event_payload_json(&fresh);
            forksafe__free(fresh.payload_json);
            break;
        }
        case PHASE_DISPATCH_JSON:
            failures += forksafe__dispatch(ctx, &ready);
            break;
        case PHASE_DISPATCH_SETTING:
            failures += forksafe__dispatch(ctx, &exiting);
            break;
        case PHASE_COUNT:
            break;
        }
    }
    json_decref(payload);
    if (failures) {
        fprintf(stderr, "dispatch_bench: %s: %d failures\n", phase_names[phase], failures);
        exit(1);
    }
}

/* In the callgrind child: each phase warmed up (lazy symbol binding,
 * first allocations), then measured alone. */
static int measure(void)
{
    forksafe__context ctx;
    int phase;

    if (!RUNNING_ON_VALGRIND) {
        fprintf(stderr, "dispatch_bench: --measure runs under callgrind only\n");
        return 1;
    }
    memset(&ctx, 0, sizeof(ctx));
    setup(&ctx, "/tmp");
    for (phase = 0; phase < PHASE_COUNT; phase++) {
        run_phase(&ctx, (enum phase)phase, WARMUP);
        CALLGRIND_ZERO_STATS;
        CALLGRIND_START_INSTRUMENTATION;
        CALLGRIND_TOGGLE_COLLECT;
        run_phase(&ctx, (enum phase)phase, ITERATIONS);
        CALLGRIND_TOGGLE_COLLECT;
        CALLGRIND_DUMP_STATS_AT(phase_names[phase]);
    }
    forksafe__context_free(&ctx);
    return 0;
}

/* The instruction total of the dump whose trigger names PHASE, or -1. */
static long long dump_total(const char *directory, const char *phase)
{
    char wanted[128], line[1024];
    long long total = -1;
    struct dirent *entry;
    DIR *dir = opendir(directory);

    if (!dir)
        return -1;
    snprintf(wanted, sizeof(wanted), "desc: Trigger: Client Request: %s\n", phase);
    while (total < 0 && (entry = readdir(dir))) {
        char path[1024];
        FILE *f;
        int match = 0;

        if (strncmp(entry->d_name, "callgrind.out", 13) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", directory, entry->d_name);
        f = fopen(path, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof(line), f)) {
            if (strcmp(line, wanted) == 0)
                match = 1;
            if (match && strncmp(line, "summary: ", 9) == 0)
                total = atoll(line + 9);
            if (match && strncmp(line, "totals: ", 8) == 0)
                total = atoll(line + 8);
        }
        fclose(f);
    }
    closedir(dir);
    return total;
}

static void remove_tree(const char *directory)
{
    struct dirent *entry;
    DIR *dir = opendir(directory);

    if (dir) {
        while ((entry = readdir(dir))) {
            char path[1024];

            if (entry->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", directory, entry->d_name);
            unlink(path);
        }
        closedir(dir);
    }
    rmdir(directory);
}

int main(int argc, char **argv)
{
    char directory[] = "/tmp/forksafe-dispatch-XXXXXX";
    char out_file[256], out_option[300];
    double per[PHASE_COUNT];
    int status, phase;
    pid_t pid;

    if (argc > 1 && strcmp(argv[1], "--measure") == 0)
        return measure();
    if (!mkdtemp(directory)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(out_file, sizeof(out_file), "%s/callgrind.out", directory);
    snprintf(out_option, sizeof(out_option), "--callgrind-out-file=%s", out_file);
    pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        execlp("valgrind", "valgrind", "--tool=callgrind", "--quiet", "--collect-atstart=no",
               "--instr-atstart=no", out_option, argv[0], "--measure", (char *)NULL);
        perror("valgrind");
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "dispatch_bench: the callgrind run failed (dumps kept in %s)\n", directory);
        return 1;
    }
    for (phase = 0; phase < PHASE_COUNT; phase++) {
        long long total = dump_total(directory, phase_names[phase]);

        if (total < 0) {
            fprintf(stderr, "dispatch_bench: no callgrind dump for %s in %s\n", phase_names[phase],
                    directory);
            return 1;
        }
        per[phase] = (double)total / ITERATIONS;
    }
    if (getenv("FORKSAFE_BENCH_KEEP"))
        printf("callgrind dumps kept in %s\n", directory);
    else
        remove_tree(directory);

    printf("dispatch cost in instructions (callgrind, %d iterations per row, %d settings)\n",
           ITERATIONS, SETTINGS);
    printf("%-52s %10s %10s\n", "", "instr", "- direct");
    printf("%-52s %10.0f %10s\n", "direct call of the no-op handler (baseline)", per[PHASE_DIRECT],
           "");
    printf("%-52s %10.0f %10.0f\n", "dispatch post-fork to symbol:no-op", per[PHASE_DISPATCH],
           per[PHASE_DISPATCH] - per[PHASE_DIRECT]);
    printf("%-52s %10.0f %10s\n", "dispatch an event nobody subscribed to", per[PHASE_UNSUBSCRIBED],
           "");
    printf("%-52s %10.0f %10.0f\n", "dispatch to a handler reading one setting",
           per[PHASE_DISPATCH_SETTING], per[PHASE_DISPATCH_SETTING] - per[PHASE_DIRECT]);
    printf("%-52s %10.0f %10.0f\n", "dispatch to a handler reading the payload JSON",
           per[PHASE_DISPATCH_JSON], per[PHASE_DISPATCH_JSON] - per[PHASE_DIRECT]);
    printf("%-52s %10.0f %10s\n", "payload object alone (forksafe__payload_new + free)",
           per[PHASE_PAYLOAD], "");
    printf("%-52s %10.0f %10s\n", "payload JSON text alone (forksafe_event_payload_json)",
           per[PHASE_PAYLOAD_JSON], "");
    printf("target: dispatch beyond the handler <= 2000 instructions: %s\n",
           per[PHASE_DISPATCH] - per[PHASE_DIRECT] <= 2000 ? "met" : "MISSED");
    return 0;
}
