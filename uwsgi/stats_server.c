/*
 * stats_server.c - forksafe's counters as uWSGI metrics, and the thread
 * that serves them: with the dispatch history as JSON on the forksafe-stats
 * socket, and to Prometheus on the forksafe-metrics address (metrics.c).
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "glue.h"

static int stats_fd = -1;   /* the listening sockets, master only */
static int metrics_fd = -1; /* forksafe-metrics: HTTP, one GET /metrics */
static int stats_thread_started;

/* uWSGI's metrics collector (a thread in the master) copies these shared
 * counters into its own table every second, so they reach the stats
 * server, carbon, statsd... and what a killed process added stays. */
void glue_register_metrics(void)
{
    static const struct {
        const char *suffix;
        size_t offset;
        uint8_t type;
    } fields[] = {
        {"fired", offsetof(forksafe__event_stats, occurred), UWSGI_METRIC_COUNTER},
        {"handlers", offsetof(forksafe__event_stats, handlers_run), UWSGI_METRIC_COUNTER},
        {"failed", offsetof(forksafe__event_stats, failed), UWSGI_METRIC_COUNTER},
        {"last_us", offsetof(forksafe__event_stats, last_duration_us), UWSGI_METRIC_GAUGE},
        {"max_us", offsetof(forksafe__event_stats, max_duration_us), UWSGI_METRIC_GAUGE},
    };
    int type;
    size_t i;

    if (!uwsgi.has_metrics) {
        if (uwsgi.stats)
            uwsgi_log("[forksafe] counters are published in the stats server with "
                      "`enable-metrics = true`\n");
        return;
    }
    for (type = 0; type < FORKSAFE_EVENT_COUNT; type++) {
        for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
            char name[128];
            snprintf(name, sizeof(name), "forksafe.%s.%s",
                     forksafe_event_type_name((forksafe_event_type)type), fields[i].suffix);
            uwsgi_register_metric(name, NULL, fields[i].type, "ptr",
                                  (char *)&glue.context.stats->events[type] + fields[i].offset, 0,
                                  NULL);
        }
    }
    /* What the pre-forks found (lib/hazard_watch.c). */
    uwsgi_register_metric("forksafe.hazards.forks_with_hazards", NULL, UWSGI_METRIC_COUNTER, "ptr",
                          &glue.context.stats->hazards.forks_with_hazards, 0, NULL);
    uwsgi_register_metric("forksafe.hazards.last", NULL, UWSGI_METRIC_GAUGE, "ptr",
                          &glue.context.stats->hazards.last, 0, NULL);
    uwsgi_register_metric("forksafe.hazards.last_allowed", NULL, UWSGI_METRIC_GAUGE, "ptr",
                          &glue.context.stats->hazards.last_allowed, 0, NULL);
}

/* Returns a listening socket for a unix path, "@abstract" or HOST:PORT,
 * or -1 with errno set. */
static int listen_on(const char *address)
{
    int fd = -1, saved;

    if (address[0] == '/' || address[0] == '.' || address[0] == '@' || !strchr(address, ':')) {
        struct sockaddr_un where;
        struct stat existing;
        size_t length = strlen(address);

        if (length == 0 || length >= sizeof(where.sun_path)) {
            errno = ENAMETOOLONG;
            return -1;
        }
        memset(&where, 0, sizeof(where));
        where.sun_family = AF_UNIX;
        memcpy(where.sun_path, address, length);
        if (address[0] == '@')
            where.sun_path[0] = '\0';
        /* A socket file left by an earlier run (or the master before a
         * reload) is ours to replace; any other file is not. */
        else if (lstat(address, &existing) == 0 && S_ISSOCK(existing.st_mode))
            unlink(address);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (bind(fd, (struct sockaddr *)&where,
                 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length)) != 0)
            goto fail;
    }
    else {
        struct addrinfo hints, *found = NULL, *ai;
        char host[256];
        const char *colon = strrchr(address, ':');
        size_t host_length = (size_t)(colon - address);
        int rc, yes = 1;

        if (host_length >= sizeof(host) || !colon[1]) {
            errno = EINVAL;
            return -1;
        }
        memcpy(host, address, host_length);
        host[host_length] = '\0';
        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        rc = getaddrinfo(host_length ? host : NULL, colon + 1, &hints, &found);
        if (rc != 0) {
            errno = rc == EAI_SYSTEM ? errno : EINVAL;
            return -1;
        }
        errno = EADDRNOTAVAIL;
        for (ai = found; ai; ai = ai->ai_next) {
            fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
            if (fd < 0)
                continue;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
            if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
                break;
            saved = errno;
            close(fd);
            fd = -1;
            errno = saved;
        }
        freeaddrinfo(found);
        if (fd < 0)
            return -1;
    }
    if (listen(fd, 16) != 0)
        goto fail;
    return fd;
fail:
    saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

static int bind_or_die(const char *option, const char *address)
{
    forksafe__error err = {0};
    char file[PATH_MAX];
    int line, fd;

    /* Close-on-exec: a reload re-executes the master, which binds again. */
    fd = listen_on(address);
    if (fd < 0) {
        line = glue_locate_directive(option, address, file, sizeof(file));
        forksafe__error_set(&err, file, line, "%s cannot listen on '%s': %s", option, address,
                            strerror(errno));
        glue_die(&err);
    }
    return fd;
}

static char *stats_document(void)
{
    json_t *root = forksafe__stats_json(&glue.context);
    char *text;

    if (!root)
        return NULL;
    json_object_set_new(root, "version", json_string(FORKSAFE_VERSION));
    json_object_set_new(root, "container", json_string("uwsgi"));
    json_object_set_new(root, "pid", json_integer(getpid()));
    json_object_set_new(root, "generation", json_integer((json_int_t)uwsgi.reloads));
    text = json_dumps(root, JSON_INDENT(1));
    json_decref(root);
    return text;
}

static void write_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t written = write(fd, data, length);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return;
        data += written;
        length -= (size_t)written;
    }
}

/* One JSON document per connection, then close: the protocol of uWSGI's
 * stats server, so `uwsgi --connect-and-read ADDRESS` and its tools read
 * it too. */
static void serve_stats(int client)
{
    char *text = stats_document();

    if (text) {
        write_all(client, text, strlen(text));
        write_all(client, "\n", 1);
    }
    free(text);
}

/* A thread, because the master loop has no place for a plugin's socket;
 * it only reads shared memory (and /proc, for the metrics). */
static void *serve(void *unused)
{
    struct pollfd listening[2];
    nfds_t count = 0, i;
    sigset_t all;

    (void)unused;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    if (stats_fd >= 0)
        listening[count++] = (struct pollfd){.fd = stats_fd, .events = POLLIN};
    if (metrics_fd >= 0)
        listening[count++] = (struct pollfd){.fd = metrics_fd, .events = POLLIN};
    for (;;) {
        if (poll(listening, count, -1) < 0) {
            if (errno == EINTR)
                continue;
            uwsgi_error("[forksafe] stats poll()");
            return NULL;
        }
        for (i = 0; i < count; i++) {
            int client;

            if (!(listening[i].revents & POLLIN))
                continue;
            client = accept(listening[i].fd, NULL, NULL);
            if (client < 0) {
                if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
                    continue;
                uwsgi_error("[forksafe] stats accept()");
                return NULL;
            }
            if (listening[i].fd == metrics_fd)
                glue_serve_metrics(client);
            else
                serve_stats(client);
            close(client);
        }
    }
    return NULL;
}

void glue_start_stats_server(void)
{
    pthread_t thread;

    if ((!glue.options.stats && !glue.options.metrics) || stats_thread_started)
        return;
    /* Bound here, not in init: after a reload uWSGI closes inherited
     * sockets it does not recognise, which would take a socket bound
     * earlier with them. */
    if (glue.options.stats) {
        stats_fd = bind_or_die("forksafe-stats", glue.options.stats);
        uwsgi_log("[forksafe] stats and dispatch history on %s\n", glue.options.stats);
    }
    if (glue.options.metrics) {
        metrics_fd = bind_or_die("forksafe-metrics", glue.options.metrics);
        uwsgi_log("[forksafe] Prometheus metrics (GET /metrics) on %s\n", glue.options.metrics);
    }
    if (glue_start_own_thread(&thread, serve, NULL) != 0) {
        uwsgi_log("[forksafe] cannot start the stats thread\n");
        exit(1);
    }
    pthread_detach(thread);
    stats_thread_started = 1;
}

FORKSAFE__CHILD_RUNS void glue_close_stats_socket(void)
{
    if (stats_fd >= 0) {
        close(stats_fd);
        stats_fd = -1;
    }
    if (metrics_fd >= 0) {
        close(metrics_fd);
        metrics_fd = -1;
    }
}
