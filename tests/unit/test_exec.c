/*
 * test_exec.c - forksafe__run_command: stdin, environment, process group,
 * timeouts, exit statuses, and that exactly our child is always reaped.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof(dir), "/tmp/forksafe-exec-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
    char command[128];

    snprintf(command, sizeof(command), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(command), 0);
}

/* Reads a whole file into a new buffer (NUL-terminated), *LENGTH its size. */
static char *slurp(const char *path, size_t *length)
{
    FILE *file = fopen(path, "rb");
    char *data;
    long size;

    ck_assert_msg(file != NULL, "cannot open %s", path);
    fseek(file, 0, SEEK_END);
    size = ftell(file);
    fseek(file, 0, SEEK_SET);
    data = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(data);
    ck_assert_uint_eq(fread(data, 1, (size_t)size, file), (size_t)size);
    data[size] = '\0';
    fclose(file);
    if (length)
        *length = (size_t)size;
    return data;
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The test process has no other children, so after run_command there must
 * be none at all: no zombie left behind, nothing still running. */
static void assert_no_children(void)
{
    errno = 0;
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}

/* True once PID is gone or a zombie (reparented to an init that may not
 * reap promptly). */
static int process_dead(pid_t pid)
{
    char path[64], stat[512];
    const char *state;
    FILE *file;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    file = fopen(path, "r");
    if (!file)
        return 1;
    n = fread(stat, 1, sizeof(stat) - 1, file);
    fclose(file);
    stat[n] = '\0';
    state = strrchr(stat, ')');
    return !state || state[2] == 'Z' || state[2] == 'X';
}

static int run(const char *command, const char *input, size_t length, const char *const *env,
               double timeout, int *status)
{
    return forksafe__run_command(command, input, length, env, timeout, status);
}

START_TEST(stdin_bigger_than_a_pipe_buffer)
{
    size_t size = 300 * 1024, got, i;
    char *input = malloc(size), *output, command[256], path[128];
    int status;

    ck_assert_ptr_nonnull(input);
    for (i = 0; i < size; i++)
        input[i] = (char)('a' + i % 26);
    make_dir();
    snprintf(path, sizeof(path), "%s/out", dir);
    snprintf(command, sizeof(command), "cat > '%s'", path);
    ck_assert_int_eq(run(command, input, size, NULL, 10, &status), 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    output = slurp(path, &got);
    ck_assert_uint_eq(got, size);
    ck_assert(memcmp(output, input, size) == 0);
    free(output);
    free(input);
    assert_no_children();
    remove_dir();
}
END_TEST

START_TEST(a_command_that_ignores_stdin_is_fine)
{
    size_t size = 1024 * 1024;
    char *input = calloc(1, size);
    sigset_t pending;
    int status;

    ck_assert_ptr_nonnull(input);
    /* Default SIGPIPE disposition: if run_command let one through, this
     * test process would die. */
    signal(SIGPIPE, SIG_DFL);
    ck_assert_int_eq(run("exit 0", input, size, NULL, 10, &status), 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    sigpending(&pending);
    ck_assert(!sigismember(&pending, SIGPIPE));
    free(input);
    assert_no_children();
}
END_TEST

START_TEST(environment_is_inherited_plus_extras)
{
    const char *const extra[] = {"FORKSAFE_EVENT=post-fork", "FORKSAFE_ID=3", NULL};
    char command[512], path[128], *output;
    int status;

    make_dir();
    setenv("FORKSAFE_TEST_INHERITED", "yes", 1);
    setenv("FORKSAFE_EVENT", "stale", 1);
    snprintf(path, sizeof(path), "%s/env", dir);
    snprintf(command, sizeof(command), "env > '%s'", path);
    ck_assert_int_eq(run(command, "", 0, extra, 10, &status), 0);
    ck_assert_int_eq(status, 0);
    output = slurp(path, NULL);
    ck_assert_ptr_nonnull(strstr(output, "FORKSAFE_TEST_INHERITED=yes\n"));
    ck_assert_ptr_nonnull(strstr(output, "FORKSAFE_EVENT=post-fork\n"));
    ck_assert_ptr_nonnull(strstr(output, "FORKSAFE_ID=3\n"));
    /* The extra replaces the inherited variable instead of duplicating it. */
    ck_assert_ptr_null(strstr(output, "FORKSAFE_EVENT=stale"));
    free(output);
    remove_dir();
}
END_TEST

START_TEST(exit_codes_are_reported)
{
    int status;

    ck_assert_int_eq(run("exit 3", NULL, 0, NULL, 10, &status), 0);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 3);
    ck_assert_int_eq(run("true", NULL, 0, NULL, 10, &status), 0);
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(run("/nonexistent/program 2>/dev/null", NULL, 0, NULL, 10, &status), 0);
    ck_assert_int_eq(WEXITSTATUS(status), 127);
    assert_no_children();
}
END_TEST

START_TEST(signals_are_reported)
{
    int status;

    ck_assert_int_eq(run("kill -TERM $$", NULL, 0, NULL, 10, &status), 0);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGTERM);
    assert_no_children();
}
END_TEST

/* Reads the pid a command wrote to FILE in the test directory. */
static pid_t pid_from(const char *file)
{
    char path[128], *text;
    pid_t pid;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    text = slurp(path, NULL);
    pid = (pid_t)atol(text);
    free(text);
    ck_assert_int_gt(pid, 1);
    return pid;
}

static void assert_dies(pid_t pid)
{
    int i;

    for (i = 0; i < 200 && !process_dead(pid); i++)
        usleep(10000);
    ck_assert_msg(process_dead(pid), "process %ld survived", (long)pid);
}

START_TEST(what_a_command_leaves_in_its_group_ends_with_it)
{
    char command[512];
    int status;

    /* A background job, and a double fork whose grandchild is orphaned at
     * once: both stay in the command's process group. */
    make_dir();
    snprintf(command, sizeof(command),
             "sleep 30 & echo $! > '%s/bg'; (sleep 30 & echo $! > '%s/orphan') ; exit 0", dir, dir);
    ck_assert_int_eq(run(command, NULL, 0, NULL, 10, &status), 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_no_children();
    assert_dies(pid_from("bg"));
    assert_dies(pid_from("orphan"));
    remove_dir();
}
END_TEST

static volatile pid_t published = -1;

static void *run_slow_command(void *result)
{
    char command[512];
    int status;

    /* Its input ends only once the pid is published, and it runs until the
     * test has looked: states, so a busy machine cannot reorder them. */
    snprintf(command, sizeof(command),
             "cat >/dev/null; echo $$ > '%s/self.tmp'; mv '%s/self.tmp' '%s/self'; "
             "while [ ! -e '%s/release' ]; do sleep 0.01; done",
             dir, dir, dir, dir);
    *(int *)result = run(command, NULL, 0, NULL, 60, &status);
    return NULL;
}

START_TEST(the_running_command_is_published_until_reaped)
{
    char path[128];
    pthread_t thread;
    pid_t seen;
    FILE *release;
    int result = -1, i;

    make_dir();
    forksafe__exec_track(&published);
    ck_assert_int_eq(published, 0);
    ck_assert_int_eq(pthread_create(&thread, NULL, run_slow_command, &result), 0);
    snprintf(path, sizeof(path), "%s/self", dir);
    for (i = 0; i < 6000 && access(path, R_OK) != 0; i++)
        usleep(10000);
    seen = published;
    /* The command's pid is its process group: what a survivor kills. */
    ck_assert_int_eq(seen, pid_from("self"));
    ck_assert_int_eq(getpgid(seen), seen);
    snprintf(path, sizeof(path), "%s/release", dir);
    release = fopen(path, "w");
    ck_assert_ptr_nonnull(release);
    fclose(release);
    ck_assert_int_eq(pthread_join(thread, NULL), 0);
    ck_assert_int_eq(result, 0);
    ck_assert_int_eq(published, 0);
    forksafe__exec_track(NULL);
    assert_no_children();
    remove_dir();
}
END_TEST

START_TEST(timeout_kills_the_whole_group)
{
    char command[512], path[128], *text;
    pid_t grandchild;
    double start;
    int status, i;

    make_dir();
    snprintf(path, sizeof(path), "%s/pid", dir);
    snprintf(command, sizeof(command), "sleep 30 & echo $! > '%s'; sleep 30", path);
    start = now();
    /* Long enough for the shell to write the pid file even under valgrind
     * on a loaded machine. */
    ck_assert_int_eq(run(command, NULL, 0, NULL, 2.0, &status), FORKSAFE__ETIMEDOUT);
    /* Well short of the 30 s the command would run: it was cut short. */
    ck_assert_double_lt(now() - start, 20.0);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGKILL);
    assert_no_children();
    text = slurp(path, NULL);
    grandchild = (pid_t)atol(text);
    free(text);
    ck_assert_int_gt(grandchild, 1);
    for (i = 0; i < 200 && !process_dead(grandchild); i++)
        usleep(10000);
    ck_assert_msg(process_dead(grandchild), "grandchild %ld survived", (long)grandchild);
    remove_dir();
}
END_TEST

START_TEST(timeout_while_the_input_is_still_being_written)
{
    size_t size = 1024 * 1024;
    char *input = calloc(1, size);
    double start = now();
    int status;

    ck_assert_ptr_nonnull(input);
    ck_assert_int_eq(run("sleep 30", input, size, NULL, 0.3, &status), FORKSAFE__ETIMEDOUT);
    ck_assert_double_lt(now() - start, 20.0);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    free(input);
    assert_no_children();
}
END_TEST

START_TEST(own_process_group_and_clean_signal_state)
{
    char command[512], path[128], *text, *ignored;
    long pid = 0, pgrp = -1;
    sigset_t block;
    int status;

    make_dir();
    /* What a uWSGI worker looks like: SIGPIPE ignored, some signals blocked. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, NULL);
    snprintf(path, sizeof(path), "%s/out", dir);
    /* The shell reads its own status with builtins: a child reading it
     * (grep) could catch the shell inside a fork, with signals blocked for
     * a moment (seen once under ASan). */
    snprintf(command, sizeof(command),
             "echo $$ $(cut -d' ' -f5 /proc/$$/stat) > '%s'; "
             "while read -r key value; do case \"$key\" in SigIgn:|SigBlk:) "
             "printf '%%s\\t%%s\\n' \"$key\" \"$value\" >> '%s';; esac; done < /proc/$$/status",
             path, path);
    ck_assert_int_eq(run(command, NULL, 0, NULL, 10, &status), 0);
    ck_assert_int_eq(status, 0);
    text = slurp(path, NULL);
    ck_assert_int_eq(sscanf(text, "%ld %ld", &pid, &pgrp), 2);
    ck_assert_int_eq(pid, pgrp);
    ck_assert_int_ne(pgrp, getpgrp());
    ck_assert_ptr_nonnull(strstr(text, "SigBlk:\t0000000000000000"));
    ignored = strstr(text, "SigIgn:\t");
    ck_assert_ptr_nonnull(ignored);
    /* Standard signals only: glibc's spawn helper leaves its own internal
     * real-time signals (32, 33) ignored, and exec keeps that. */
    ck_assert_uint_eq(strtoull(ignored + 8, NULL, 16) & 0x7fffffffull, 0);
    free(text);
    remove_dir();
}
END_TEST

START_TEST(host_descriptors_are_not_inherited)
{
    char command[512], path[128], *text;
    int fd = open("/dev/null", O_RDONLY), status;

    ck_assert_int_gt(fd, 2);
    make_dir();
    snprintf(path, sizeof(path), "%s/out", dir);
    snprintf(command, sizeof(command),
             "if [ -e /proc/$$/fd/%d ]; then echo open; else echo closed; fi > '%s'", fd, path);
    ck_assert_int_eq(run(command, NULL, 0, NULL, 10, &status), 0);
    text = slurp(path, NULL);
    ck_assert_str_eq(text, "closed\n");
    free(text);
    close(fd);
    remove_dir();
}
END_TEST

START_TEST(works_with_stdin_closed)
{
    char command[512], path[128], *text;
    int status;

    /* A daemonised host may have no fd 0: the pipe must still become the
     * command's stdin. */
    close(STDIN_FILENO);
    make_dir();
    snprintf(path, sizeof(path), "%s/out", dir);
    snprintf(command, sizeof(command), "cat > '%s'", path);
    ck_assert_int_eq(run(command, "payload", 7, NULL, 10, &status), 0);
    ck_assert_int_eq(status, 0);
    text = slurp(path, NULL);
    ck_assert_str_eq(text, "payload");
    free(text);
    remove_dir();
}
END_TEST

START_TEST(no_timeout_when_zero)
{
    int status;

    ck_assert_int_eq(run("sleep 0.2; exit 4", NULL, 0, NULL, 0, &status), 0);
    ck_assert_int_eq(WEXITSTATUS(status), 4);
    assert_no_children();
}
END_TEST

/* Writes DIR/NAME with TEXT and MODE. */
static void write_file(const char *name, const char *text, mode_t mode, char *path, size_t size)
{
    FILE *file;

    snprintf(path, size, "%s/%s", dir, name);
    file = fopen(path, "w");
    ck_assert_ptr_nonnull(file);
    fputs(text, file);
    fclose(file);
    ck_assert_int_eq(chmod(path, mode), 0);
}

/* A script that records who started it and with what: "PPID ARGC [1] [2]
 * FORKSAFE_T" in DIR/out. */
static void make_witness(char *path, size_t size)
{
    char text[256];

    snprintf(text, sizeof(text),
             "#!/bin/sh\necho \"$PPID $# [$1] [$2] ${FORKSAFE_T:-}\" > '%s/out'\n", dir);
    write_file("witness", text, 0755, path, size);
}

START_TEST(plain_commands_are_spawned_without_a_shell)
{
    char witness[128], command[256], out[128], expected[128], *output;
    int status;

    make_dir();
    make_witness(witness, sizeof(witness));
    snprintf(out, sizeof(out), "%s/out", dir);
    /* Blanks of both kinds, and every character the shell leaves alone. */
    snprintf(command, sizeof(command), "  %s \t a,b:c@d%%e+f^g  x=y/z.-_ ", witness);
    ck_assert_int_eq(run(command, "{}", 2, NULL, 10, &status), 0);
    ck_assert_int_eq(status, 0);
    output = slurp(out, NULL);
    /* Our child is the program itself: no shell in between. */
    snprintf(expected, sizeof(expected), "%ld 2 [a,b:c@d%%e+f^g] [x=y/z.-_] \n", (long)getpid());
    ck_assert_str_eq(output, expected);
    free(output);
    assert_no_children();
    remove_dir();
}
END_TEST

START_TEST(shell_syntax_builtins_and_assignments_go_to_the_shell)
{
    const char *const shell_only[] = {
        "%s 'a b'",        "%s *", "%s $HOME", "%s; :", "%s > /dev/null; %s",
        "FORKSAFE_T=7 %s", "%s ~", "%s \\x"};
    char witness[128], command[512], out[128], *output, parent[32];
    size_t i;
    int status;

    make_dir();
    make_witness(witness, sizeof(witness));
    snprintf(out, sizeof(out), "%s/out", dir);
    snprintf(parent, sizeof(parent), "%ld ", (long)getpid());
    for (i = 0; i < sizeof(shell_only) / sizeof(shell_only[0]); i++) {
        unlink(out);
        snprintf(command, sizeof(command), shell_only[i], witness, witness);
        ck_assert_int_eq(run(command, NULL, 0, NULL, 10, &status), 0);
        ck_assert_msg(status == 0, "%s: status %d", command, status);
        output = slurp(out, NULL);
        /* A shell ran it: the witness's parent is that shell, not us. */
        ck_assert_msg(strncmp(output, parent, strlen(parent)) != 0, "%s: started directly",
                      command);
        if (i == 5)
            ck_assert_ptr_nonnull(strstr(output, " 7\n"));
        free(output);
    }
    /* Builtins, even those with a program of the same name. */
    ck_assert_int_eq(run("exit 4", NULL, 0, NULL, 10, &status), 0);
    ck_assert_int_eq(WEXITSTATUS(status), 4);
    assert_no_children();
    remove_dir();
}
END_TEST

START_TEST(a_failed_direct_spawn_gets_the_shells_outcome)
{
    char path[128], command[256], out[128], text[256];
    int status;

    make_dir();
    /* Not found: 127, as sh says it. */
    snprintf(command, sizeof(command), "%s/missing-program", dir);
    ck_assert_int_eq(run(command, NULL, 0, NULL, 10, &status), 0);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 127);
    /* Not executable: 126. */
    write_file("not-executable", "exit 0\n", 0644, path, sizeof(path));
    ck_assert_int_eq(run(path, NULL, 0, NULL, 10, &status), 0);
    ck_assert_int_eq(WEXITSTATUS(status), 126);
    /* A script without #! (ENOEXEC): the shell runs it as a script. */
    snprintf(out, sizeof(out), "%s/out", dir);
    snprintf(text, sizeof(text), "echo ran > '%s'\nexit 5\n", out);
    write_file("no-interpreter", text, 0755, path, sizeof(path));
    ck_assert_int_eq(run(path, NULL, 0, NULL, 10, &status), 0);
    ck_assert_int_eq(WEXITSTATUS(status), 5);
    ck_assert_int_eq(access(out, F_OK), 0);
    assert_no_children();
    remove_dir();
}
END_TEST

START_TEST(out_of_memory_is_reported)
{
    int status = -1;

    forksafe__alloc_fail_after(0);
    ck_assert_int_eq(run("true", NULL, 0, NULL, 10, &status), FORKSAFE__ENOMEM);
    forksafe__alloc_fail_after(-1);
    assert_no_children();
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("exec");
    TCase *tc = tcase_create("run_command");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, stdin_bigger_than_a_pipe_buffer);
    tcase_add_test(tc, a_command_that_ignores_stdin_is_fine);
    tcase_add_test(tc, environment_is_inherited_plus_extras);
    tcase_add_test(tc, exit_codes_are_reported);
    tcase_add_test(tc, signals_are_reported);
    tcase_add_test(tc, timeout_kills_the_whole_group);
    tcase_add_test(tc, timeout_while_the_input_is_still_being_written);
    tcase_add_test(tc, what_a_command_leaves_in_its_group_ends_with_it);
    tcase_add_test(tc, the_running_command_is_published_until_reaped);
    tcase_add_test(tc, own_process_group_and_clean_signal_state);
    tcase_add_test(tc, host_descriptors_are_not_inherited);
    tcase_add_test(tc, works_with_stdin_closed);
    tcase_add_test(tc, no_timeout_when_zero);
    tcase_add_test(tc, out_of_memory_is_reported);
    tcase_add_test(tc, plain_commands_are_spawned_without_a_shell);
    tcase_add_test(tc, shell_syntax_builtins_and_assignments_go_to_the_shell);
    tcase_add_test(tc, a_failed_direct_spawn_gets_the_shells_outcome);
    suite_add_tcase(suite, tc);
    return suite;
}
