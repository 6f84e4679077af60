/*
 * symbol_handlers.c - a native handler linked into the embedded uWSGI
 * binary itself (buildconf/forksafe-embedded.ini's additional_sources), for
 * the symbol: tests: no library is loaded, symbol: finds it in the process.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forksafe.h"

FORKSAFE_HANDLER_ABI_DECLARE();

FORKSAFE_EXPORT int forksafe_embedded_record(const forksafe_event *ev);

/* Appends the payload, one JSON line, to the file named by the setting
 * `embedded.record`: one write(2) on an O_APPEND descriptor per line, so
 * lines from concurrent processes never interleave. */
FORKSAFE_EXPORT int forksafe_embedded_record(const forksafe_event *ev)
{
    const char *path = forksafe_event_setting(ev, "embedded.record");
    const char *json = forksafe_event_payload_json(ev);
    size_t length;
    ssize_t written;
    char *line;
    int fd;

    if (!path || !json)
        return 2;
    length = strlen(json);
    line = malloc(length + 1);
    if (!line)
        return 3;
    memcpy(line, json, length);
    line[length] = '\n';
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        free(line);
        return 4;
    }
    written = write(fd, line, length + 1);
    close(fd);
    free(line);
    return written == (ssize_t)(length + 1) ? 0 : 5;
}
