/*
 * event_log.c - a native forksafe handler: appends every event's payload,
 * one JSON line, to the file named by the setting `forksafe.event_log`.
 * One write(2) per line on an O_APPEND descriptor, so lines from concurrent
 * processes never interleave.  The example app shows this file; the
 * integration tests read it.
 *
 * Build: cc -shared -fPIC $(pkg-config --cflags forksafe) -o event_log.so event_log.c
 * Use:   forksafe-subscribe = * dl:/path/to/event_log.so:record
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forksafe.h"

FORKSAFE_HANDLER_ABI_DECLARE();

FORKSAFE_EXPORT int record(const forksafe_event *ev);

FORKSAFE_EXPORT int record(const forksafe_event *ev)
{
    const char *path = forksafe_event_setting(ev, "forksafe.event_log");
    const char *json = forksafe_event_payload_json(ev);
    size_t length;
    char *line;
    int fd;
    ssize_t written;

    if (!path || !json) {
        forksafe_event_log(ev, "record: no forksafe.event_log setting or no payload");
        return 1;
    }
    length = strlen(json);
    line = malloc(length + 2);
    if (!line)
        return 1;
    memcpy(line, json, length);
    line[length] = '\n';
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(line);
        return 1;
    }
    written = write(fd, line, length + 1);
    close(fd);
    free(line);
    return written == (ssize_t)(length + 1) ? 0 : 1;
}
