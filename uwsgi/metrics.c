/*
 * metrics.c - the forksafe-metrics address's one HTTP exchange: a
 * Prometheus scraper's `GET /metrics`, answered with the counters and every
 * process's memory in the text exposition format (lib/metrics.c).
 *
 * Its own address, not the forksafe-stats socket: there the server speaks
 * first (uWSGI's stats protocol, which clients read without sending a
 * byte), while an HTTP client speaks first.  One socket would have to wait
 * to learn which client it has, and how long a client that never writes
 * takes to say so is a timeout: every JSON reader would wait it out, and a
 * scraper slower than it would read JSON.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "glue.h"

/* A request line and headers fit in this; a longer request is refused. */
#define REQUEST_MAX 8192

static void send_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t sent = send(fd, data, length, MSG_NOSIGNAL);

        if (sent < 0 && errno == EINTR)
            continue;
        if (sent <= 0)
            return;
        data += sent;
        length -= (size_t)sent;
    }
}

static void respond(int client, const char *status, const char *type, const char *body,
                    size_t length)
{
    char head[256];
    int head_length = snprintf(head, sizeof(head),
                               "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                               "Connection: close\r\n\r\n",
                               status, type, length);

    send_all(client, head, (size_t)head_length);
    send_all(client, body, length);
}

/* Reads until the end of the headers.  Returns the request's length, 0 if
 * the client closed, timed out or sent more than REQUEST_MAX. */
static size_t read_request(int client, char *request)
{
    size_t used = 0;

    while (used < REQUEST_MAX - 1) {
        ssize_t got = recv(client, request + used, REQUEST_MAX - 1 - used, 0);

        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return 0;
        used += (size_t)got;
        request[used] = '\0';
        if (strstr(request, "\r\n\r\n") || strstr(request, "\n\n"))
            return used;
    }
    return 0;
}

/* The master and every child whose pid uWSGI knows now.  Read from this
 * thread while the master forks: a pid is one aligned word, and the slot
 * table does not move once the master has started. */
static size_t processes_now(forksafe__process *processes)
{
    size_t count = 0;
    int i;

    processes[count].kind = FORKSAFE__MASTER;
    processes[count].id = 0;
    processes[count].pid = getpid();
    count++;
    for (i = 0; i < glue.slot_count; i++) {
        pid_t pid = glue_current_pid(&glue.slots[i]);

        if (pid <= 0)
            continue;
        processes[count].kind = glue.slots[i].kind;
        processes[count].id = glue.slots[i].id;
        processes[count].pid = pid;
        count++;
    }
    return count;
}

static void answer_metrics(int client, int head_only)
{
    forksafe__process *processes = calloc((size_t)glue.slot_count + 1, sizeof(*processes));
    char *text = NULL;

    if (processes)
        text = forksafe__metrics_text(&glue.context, "uwsgi", (long)uwsgi.reloads, processes,
                                      processes_now(processes));
    free(processes);
    if (!text) {
        respond(client, "500 Internal Server Error", "text/plain; charset=utf-8", "out of memory\n",
                14);
        return;
    }
    if (head_only) {
        /* The length the GET would have, without its body. */
        char head[256];
        int length = snprintf(head, sizeof(head),
                              "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; "
                              "charset=utf-8\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                              strlen(text));
        send_all(client, head, (size_t)length);
    }
    else
        respond(client, "200 OK", "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    forksafe__free(text);
}

void glue_serve_metrics(int client)
{
    /* A client that connects and says nothing must not hold the thread
     * (it serves forksafe-stats too) for ever. */
    struct timeval patience = {5, 0};
    char *request = malloc(REQUEST_MAX), *path, *end;
    static const char not_found[] = "forksafe serves /metrics only\n";
    int head_only;

    if (!request)
        return;
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof(patience));
    setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &patience, sizeof(patience));
    if (read_request(client, request) == 0) {
        free(request);
        return;
    }
    head_only = strncmp(request, "HEAD ", 5) == 0;
    if (strncmp(request, "GET ", 4) != 0 && !head_only) {
        respond(client, "405 Method Not Allowed", "text/plain; charset=utf-8", "GET /metrics\n",
                13);
        free(request);
        return;
    }
    path = request + (head_only ? 5 : 4);
    end = path + strcspn(path, " ?\r\n");
    if ((size_t)(end - path) == strlen("/metrics") && strncmp(path, "/metrics", 8) == 0)
        answer_metrics(client, head_only);
    else
        respond(client, "404 Not Found", "text/plain; charset=utf-8", not_found,
                sizeof(not_found) - 1);
    free(request);
}
