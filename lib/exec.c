/*
 * exec.c - running a shell command with the payload on its stdin, and the
 * `exec:` backend built on it.
 *
 * A command in which the shell would only split words (no quoting,
 * expansion, globbing, redirection, operators, assignments or builtins) is
 * spawned directly: the same program with the same argv, PATH lookup and
 * environment, without the shell's own exec and fork, which in a worker's
 * post-fork is most of what a short command costs.  Anything else, and a
 * direct spawn that fails (not found, not executable, a script without #!),
 * goes to /bin/sh -c, so every outcome is the shell's.
 *
 * Handlers run inside uWSGI's master and workers, so the child is started
 * with posix_spawn (glibc: clone(CLONE_VM | CLONE_VFORK) + exec): no
 * pthread_atfork handler of the host or of a loaded library runs, and no
 * copy of a large process is made.  The command gets its own process group
 * so that a timeout kills everything it started.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "forksafe_internal.h"

#define SHELL "/bin/sh"

extern char **environ;

/* ------------------------------------------------------------------ timing */

/* Deadlines are monotonic seconds: a timeout is a double of seconds. */
static double monotonic_seconds(void)
{
    return (double)forksafe__monotonic_ns() / 1e9;
}

/* Milliseconds left until DEADLINE for poll(): -1 = forever (DEADLINE 0),
 * never negative otherwise, rounded up so that we do not spin. */
static int remaining_ms(double deadline)
{
    double left;

    if (deadline == 0)
        return -1;
    left = (deadline - monotonic_seconds()) * 1e3;
    if (left <= 0)
        return 0;
    if (left >= INT_MAX)
        return INT_MAX;
    return (int)left + 1;
}

static int expired(double deadline)
{
    return deadline != 0 && monotonic_seconds() >= deadline;
}

/* ------------------------------------------------------------- environment */

static size_t name_length(const char *assignment)
{
    return strcspn(assignment, "=");
}

static int overridden(const char *assignment, const char *const *extra)
{
    size_t length = name_length(assignment);

    for (; extra && *extra; extra++) {
        if (name_length(*extra) == length && strncmp(*extra, assignment, length) == 0)
            return 1;
    }
    return 0;
}

/* environ plus EXTRA, an EXTRA entry replacing an inherited one of the same
 * name (a nested uWSGI may have inherited FORKSAFE_* itself).  Only the
 * array is allocated; the strings are borrowed. */
static char **build_env(const char *const *extra)
{
    size_t count = 0, extra_count = 0, used = 0, i;
    char **env;

    for (i = 0; environ && environ[i]; i++)
        count++;
    for (i = 0; extra && extra[i]; i++)
        extra_count++;
    env = forksafe__calloc(count + extra_count + 1, sizeof(*env));
    if (!env)
        return NULL;
    for (i = 0; i < count; i++) {
        if (!overridden(environ[i], extra))
            env[used++] = environ[i];
    }
    for (i = 0; i < extra_count; i++)
        env[used++] = (char *)extra[i];
    env[used] = NULL;
    return env;
}

/* ------------------------------------------------------------------- spawn */

/* Keeps our pipe ends off 0-2: if the host runs with stdin closed, pipe()
 * may return 0, and dup2(0, 0) in the child would leave it close-on-exec. */
static int above_stdio(int fd)
{
    int moved;

    if (fd > 2)
        return fd;
    moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return moved;
}

/* dash's builtins and the shell's reserved words: a command starting with
 * one goes to the shell even where a program of that name exists (echo,
 * test, kill ...), so that it behaves exactly as under sh -c. */
static const char *const shell_words[] = {
    ".",        ":",        "[",      "alias",   "bg",    "break", "case",   "cd",    "chdir",
    "command",  "continue", "do",     "done",    "echo",  "elif",  "else",   "esac",  "eval",
    "exec",     "exit",     "export", "false",   "fc",    "fg",    "fi",     "for",   "getopts",
    "hash",     "if",       "in",     "jobs",    "kill",  "local", "printf", "pwd",   "read",
    "readonly", "return",   "set",    "shift",   "test",  "then",  "times",  "trap",  "true",
    "type",     "ulimit",   "umask",  "unalias", "unset", "until", "wait",   "while", NULL};

/* COMMAND's words, when sh -c would do nothing with it but split it at
 * blanks and run the first word with PATH; otherwise NULL (also when out of
 * memory: the shell then runs it).  One allocation: the pointers, then the
 * words. */
static char **plain_words(const char *command)
{
    static const char plain[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789_-./,:=@%+^ \t";
    size_t length = strlen(command), count = 0, i;
    const char *p;
    char **words, *cursor, *first;

    if (command[strspn(command, plain)] != '\0')
        return NULL;
    for (p = command + strspn(command, " \t"); *p; p += strspn(p, " \t")) {
        count++;
        p += strcspn(p, " \t");
    }
    if (count == 0)
        return NULL;
    words = forksafe__malloc((count + 1) * sizeof(*words) + length + 1);
    if (!words)
        return NULL;
    cursor = (char *)(words + count + 1);
    memcpy(cursor, command, length + 1);
    for (i = 0; i < count; i++) {
        cursor += strspn(cursor, " \t");
        words[i] = cursor;
        cursor += strcspn(cursor, " \t");
        if (*cursor)
            *cursor++ = '\0';
    }
    words[count] = NULL;
    first = words[0];
    for (i = 0; shell_words[i]; i++) {
        if (strcmp(first, shell_words[i]) == 0)
            break;
    }
    /* NAME=VALUE before a command is an assignment for it. */
    if (shell_words[i] || strchr(first, '=')) {
        forksafe__free(words);
        return NULL;
    }
    return words;
}

/* Whether PATH names a regular file we may execute that the kernel runs
 * itself (ELF or #!).  A script without #! is one the shell would run. */
static int directly_executable(const char *path)
{
    unsigned char magic[4];
    struct stat st;
    ssize_t got;
    int fd;

    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || access(path, X_OK) != 0)
        return 0;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return 0;
    got = read(fd, magic, sizeof(magic));
    close(fd);
    return (got >= 2 && magic[0] == '#' && magic[1] == '!') ||
           (got == 4 && memcmp(magic, "\177ELF", 4) == 0);
}

/* Finds PROGRAM as sh would (PATH when it has no '/'; an empty PATH entry
 * is the current directory) into FOUND, at each run as sh does, so that a
 * program installed or replaced after start-up is the one that runs.  0 if found and directly
 * executable: then the spawn cannot fail on the program, which matters
 * where a failed exec is not reported back (valgrind turns posix_spawn's
 * vfork into a fork). */
static int find_program(const char *program, char *found, size_t size)
{
    const char *path = getenv("PATH"), *entry;

    if (strchr(program, '/')) {
        if ((size_t)snprintf(found, size, "%s", program) >= size)
            return -1;
        return directly_executable(found) ? 0 : -1;
    }
    if (!path)
        return -1;
    for (entry = path;; entry += strcspn(entry, ":") + 1) {
        int length = (int)strcspn(entry, ":");
        int n = length ? snprintf(found, size, "%.*s/%s", length, entry, program)
                       : snprintf(found, size, "./%s", program);
        if (n > 0 && (size_t)n < size && directly_executable(found))
            return 0;
        if (!entry[length])
            return -1;
    }
}

static int spawn_command(const char *command, char **env, pid_t *pid, int *input_fd)
{
    char *argv[] = {"sh", "-c", (char *)command, NULL};
    char **words = NULL, program[PATH_MAX];
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t none, all;
    int fds[2], rc;

    if (pipe2(fds, O_CLOEXEC) != 0)
        return errno;
    fds[0] = above_stdio(fds[0]);
    fds[1] = above_stdio(fds[1]);
    if (fds[0] < 0 || fds[1] < 0) {
        rc = errno;
        goto close_pipe;
    }
    if (fcntl(fds[1], F_SETFL, O_NONBLOCK) != 0) {
        rc = errno;
        goto close_pipe;
    }
    sigemptyset(&none);
    sigfillset(&all);
    rc = posix_spawn_file_actions_init(&actions);
    if (rc)
        goto close_pipe;
    rc = posix_spawnattr_init(&attr);
    if (rc) {
        posix_spawn_file_actions_destroy(&actions);
        goto close_pipe;
    }
    /* A new process group (for the timeout kill), no blocked signals and
     * default dispositions: uWSGI ignores SIGPIPE and blocks others, and a
     * command must not inherit that. */
    rc = posix_spawn_file_actions_adddup2(&actions, fds[0], STDIN_FILENO);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* The host's listening sockets and client connections must not live on
     * in a command that starts something long-lived. */
    if (!rc)
        rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
    if (!rc)
        rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                 POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = posix_spawnattr_setpgroup(&attr, 0);
    if (!rc)
        rc = posix_spawnattr_setsigmask(&attr, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(&attr, &all);
    if (!rc) {
        words = plain_words(command);
        if (words && find_program(words[0], program, sizeof(program)) != 0) {
            forksafe__free(words);
            words = NULL;
        }
        /* glibc reports a failed exec here (and reaps that child): the
         * shell then gets its say. */
        if (!words || posix_spawn(pid, program, &actions, &attr, words, env) != 0)
            rc = posix_spawn(pid, SHELL, &actions, &attr, argv, env);
        forksafe__free(words);
    }
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    if (rc)
        goto close_pipe;
    close(fds[0]);
    *input_fd = fds[1];
    return 0;
close_pipe:
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    return rc;
}

/* ------------------------------------------------------------------- input */

/* Writes INPUT to FD until done, the reader is gone, or DEADLINE.  Returns
 * 0 or FORKSAFE__ETIMEDOUT.  A command that does not read its stdin is not
 * an error: EPIPE just ends the input.  SIGPIPE is blocked meanwhile (and a
 * SIGPIPE we caused is consumed), because the host may not ignore it. */
static int feed_input(int fd, const char *input, size_t length, double deadline)
{
    struct timespec zero = {0, 0};
    sigset_t sigpipe, saved, pending;
    int was_pending, raised = 0, rc = 0;
    size_t written = 0;

    sigemptyset(&sigpipe);
    sigaddset(&sigpipe, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigpipe, &saved);
    while (written < length) {
        struct pollfd pfd = {fd, POLLOUT, 0};
        ssize_t n;
        int ready = poll(&pfd, 1, remaining_ms(deadline));

        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0)
            break;
        if (ready == 0) {
            if (expired(deadline)) {
                rc = FORKSAFE__ETIMEDOUT;
                break;
            }
            continue;
        }
        if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL) && !(pfd.revents & POLLOUT))
            break;
        n = write(fd, input + written, length - written);
        if (n > 0) {
            written += (size_t)n;
        }
        else if (n < 0 && errno == EPIPE) {
            raised = 1;
            break;
        }
        else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            break;
        }
    }
    if (raised && !was_pending) {
        while (sigtimedwait(&sigpipe, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return rc;
}

/* -------------------------------------------------------------------- wait */

static int reap(pid_t pid, int *status)
{
    pid_t done;

    do
        done = waitpid(pid, status, 0);
    while (done < 0 && errno == EINTR);
    return done == pid ? 0 : -1;
}

/* Waits for PID to exit until DEADLINE.  Returns 1 once it has exited
 * (not reaped yet), 0 on timeout, -1 on error. */
static int await_exit(pid_t pid, double deadline)
{
    /* Remembered so that a kernel (or valgrind) without pidfd_open is asked
     * once per process, not once per handler run.  A benign race: at worst
     * two threads both ask. */
    static int no_pidfd;
    int pidfd = no_pidfd ? -1 : (int)syscall(SYS_pidfd_open, pid, 0);
    long pause_ns = 1000000;

    if (pidfd < 0 && errno == ENOSYS)
        no_pidfd = 1;

    if (pidfd >= 0) {
        for (;;) {
            struct pollfd pfd = {pidfd, POLLIN, 0};
            int ready = poll(&pfd, 1, remaining_ms(deadline));

            if (ready > 0 || (ready < 0 && errno != EINTR)) {
                close(pidfd);
                return ready > 0 ? 1 : -1;
            }
            if (ready == 0 && expired(deadline)) {
                close(pidfd);
                return 0;
            }
        }
    }
    /* No pidfd (kernel before 5.3, or a seccomp filter): poll with a
     * growing pause, at most 50 ms late.  WNOWAIT leaves the child a
     * zombie, which keeps its pid - the process group id - ours until the
     * group has been killed. */
    for (;;) {
        struct timespec pause;
        siginfo_t info;

        memset(&info, 0, sizeof(info));
        if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0) {
            if (info.si_pid == pid)
                return 1;
        }
        else if (errno != EINTR) {
            return -1;
        }
        if (expired(deadline))
            return 0;
        pause.tv_sec = 0;
        pause.tv_nsec = pause_ns;
        nanosleep(&pause, NULL);
        if (pause_ns < 50000000)
            pause_ns *= 2;
    }
}

/* Where the process publishes the pid (= process group) of the command it
 * is running, so that whoever outlives it can kill what it left. */
FORKSAFE__CHILD_WRITES static volatile pid_t *running_command;

FORKSAFE__CHILD_RUNS void forksafe__exec_track(volatile pid_t *slot)
{
    running_command = slot;
    if (slot)
        *slot = 0;
}

int forksafe__run_command(const char *command, const char *input, size_t input_length,
                          const char *const *env, double timeout, int *status)
{
    double deadline = timeout > 0 ? monotonic_seconds() + timeout : 0;
    char **full_env = build_env(env);
    int input_fd = -1, exited = 0, rc;
    pid_t pid;

    *status = 0;
    if (!full_env)
        return FORKSAFE__ENOMEM;
    rc = spawn_command(command, full_env, &pid, &input_fd);
    forksafe__free(full_env);
    if (rc) {
        errno = rc;
        return FORKSAFE__EIO;
    }
    if (running_command)
        *running_command = pid;
    rc = feed_input(input_fd, input ? input : "", input ? input_length : 0, deadline);
    close(input_fd);
    if (rc == 0) {
        exited = await_exit(pid, deadline);
        if (exited < 0 && errno == ECHILD) {
            /* Someone else reaped our child (SIGCHLD ignored, or a
             * waitpid(-1) elsewhere): its status is lost, and its pid may
             * be reused already, so its group is not ours to kill. */
            if (running_command)
                *running_command = 0;
            return FORKSAFE__EIO;
        }
    }
    /* The command's run is its whole process group: whatever it left there
     * (a background job, a double fork) ends with it, on a timeout and on
     * a normal exit alike.  Our child is not reaped yet, so its pid - and
     * with it the group id - cannot have been reused. */
    kill(-pid, SIGKILL);
    if (running_command)
        *running_command = 0;
    if (reap(pid, status) != 0)
        return FORKSAFE__EIO;
    if (exited == 1)
        return 0;
    return exited == 0 ? FORKSAFE__ETIMEDOUT : FORKSAFE__EIO;
}

/* ------------------------------------------------------------ exec backend */

static int exec_resolve(forksafe__context *ctx, void *data, const char *spec, void **handle,
                        forksafe__error *err)
{
    (void)ctx;
    (void)data;
    /* Only the shell is checked: the command is shell text that may name a
     * program installed later, use builtins, or depend on PATH at run time,
     * so the shell is the one judge of it. */
    if (access(SHELL, X_OK) != 0) {
        forksafe__error_set(err, NULL, 0, "cannot run exec handlers: %s: %s", SHELL,
                            strerror(errno));
        return FORKSAFE__EINVAL;
    }
    if (spec[strspn(spec, " \t")] == '\0') {
        forksafe__error_set(err, NULL, 0, "the command is empty");
        return FORKSAFE__EINVAL;
    }
    *handle = forksafe__strdup(spec);
    return *handle ? 0 : FORKSAFE__ENOMEM;
}

static int exec_run(forksafe__context *ctx, void *data, void *handle, const forksafe_event *ev,
                    char *why, size_t why_size)
{
    const char *payload = forksafe_event_payload_json(ev);
    char event_var[64], process_var[64], id_var[32], pid_var[32];
    const char *env[] = {event_var, process_var, id_var, pid_var, NULL};
    int status, rc;

    (void)data;
    if (!payload) {
        snprintf(why, why_size, "out of memory serialising the payload");
        return FORKSAFE__ENOMEM;
    }
    /* Only the event's identity goes in the environment; settings (which
     * may be secrets) travel on stdin, never in argv or env where ps and
     * /proc/PID/environ would show them. */
    snprintf(event_var, sizeof(event_var), "FORKSAFE_EVENT=%s", forksafe_event_name(ev));
    snprintf(process_var, sizeof(process_var), "FORKSAFE_PROCESS=%s",
             forksafe_event_process_kind(ev));
    snprintf(id_var, sizeof(id_var), "FORKSAFE_ID=%d", forksafe_event_process_id(ev));
    snprintf(pid_var, sizeof(pid_var), "FORKSAFE_PID=%ld", (long)forksafe_event_pid(ev));
    rc = forksafe__run_command(handle, payload, strlen(payload), env, ctx->timeout, &status);
    if (rc == FORKSAFE__ETIMEDOUT) {
        snprintf(why, why_size, "timed out after %g s", ctx->timeout);
        return rc;
    }
    if (rc == FORKSAFE__EIO && errno == ECHILD) {
        snprintf(why, why_size, "its exit status was lost: something else reaped it");
        return rc;
    }
    if (rc == FORKSAFE__EIO) {
        snprintf(why, why_size, "could not start %s: %s", SHELL, strerror(errno));
        return rc;
    }
    if (rc) {
        snprintf(why, why_size, "%s", forksafe__strerror(rc));
        return rc;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status))
        snprintf(why, why_size, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(why, why_size, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(why, why_size, "ended with wait status %d", status);
    return FORKSAFE__EHANDLER;
}

static void exec_release(void *data, void *handle)
{
    (void)data;
    forksafe__free(handle);
}

static forksafe__backend exec_backend = {
    .kind = "exec", .resolve = exec_resolve, .run = exec_run, .release = exec_release};

forksafe__backend *forksafe__exec_backend(void)
{
    return &exec_backend;
}
