/*
 * path.c - the file system as PasteDeploy sees it: os.path's abspath and
 * dirname (no symlinks resolved), and reading a settings file whole without
 * ever blocking on a FIFO.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "forksafe_internal.h"

/* ------------------------------------------------------------------ paths */

static char *current_directory(void)
{
    size_t size = 256;

    for (;;) {
        char *buffer = forksafe__malloc(size);

        if (!buffer)
            return NULL;
        if (getcwd(buffer, size))
            return buffer;
        forksafe__free(buffer);
        if (errno != ERANGE)
            return forksafe__strdup("/");
        size *= 2;
    }
}

/* os.path.normpath: no symlinks resolved, "//" kept as a leading pair as
 * POSIX allows. */
static char *normalise_path(const char *path)
{
    size_t length = strlen(path);
    char *result = forksafe__malloc(length + 2);
    size_t leading = 0, used, root;
    const char *p = path;

    if (!result)
        return NULL;
    while (path[leading] == '/')
        leading++;
    if (leading == 2) {
        memcpy(result, "//", 2);
        root = 2;
    }
    else if (leading > 0) {
        result[0] = '/';
        root = 1;
    }
    else {
        root = 0;
    }
    used = root;
    while (*p) {
        const char *component, *stop;
        size_t size;

        while (*p == '/')
            p++;
        component = p;
        stop = strchr(p, '/');
        if (!stop)
            stop = p + strlen(p);
        size = (size_t)(stop - component);
        p = stop;
        if (size == 0 || (size == 1 && component[0] == '.'))
            continue;
        if (size == 2 && component[0] == '.' && component[1] == '.') {
            size_t last = used;
            int previous_is_dotdot;

            while (last > root && result[last - 1] != '/')
                last--;
            previous_is_dotdot = used - last == 2 && result[last] == '.' && result[last + 1] == '.';
            if (used > root && !previous_is_dotdot) {
                /* Drop the last component and its separator. */
                used = last > root ? last - 1 : root;
                continue;
            }
            if (root > 0)
                continue; /* "/.." is "/" */
        }
        if (used > root)
            result[used++] = '/';
        memcpy(result + used, component, size);
        used += size;
    }
    if (used == 0)
        result[used++] = '.';
    result[used] = '\0';
    return result;
}

/* os.path.abspath */
char *forksafe__path_absolute(const char *path)
{
    char *joined, *result;

    if (path[0] == '/')
        return normalise_path(path);
    {
        char *cwd = current_directory();
        size_t cwd_length;

        if (!cwd)
            return NULL;
        cwd_length = strlen(cwd);
        joined = forksafe__malloc(cwd_length + strlen(path) + 2);
        if (!joined) {
            forksafe__free(cwd);
            return NULL;
        }
        sprintf(joined, "%s%s%s", cwd, cwd_length && cwd[cwd_length - 1] == '/' ? "" : "/", path);
        forksafe__free(cwd);
    }
    result = normalise_path(joined);
    forksafe__free(joined);
    return result;
}

/* os.path.dirname */
char *forksafe__path_directory(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t length;

    if (!slash)
        return forksafe__strdup("");
    length = (size_t)(slash - path) + 1;
    /* Trailing slashes go, unless the head is nothing but slashes. */
    {
        size_t end = length;

        while (end > 0 && path[end - 1] == '/')
            end--;
        if (end > 0)
            length = end;
    }
    return forksafe__strndup(path, length);
}

/* ------------------------------------------------------------------ files */

/* Opens PATH for reading if it is a regular file.  Returns the descriptor,
 * or FORKSAFE__EIO with ERR saying why, with the path. */
static int open_settings_file(const char *path, forksafe__error *err)
{
    struct stat st;
    const char *what;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
     * writer, and the instance would hang at start-up instead of failing. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0) {
        forksafe__error_set(err, path, 0, "cannot open the settings file: %s", strerror(errno));
        return FORKSAFE__EIO;
    }
    if (fstat(fd, &st) != 0) {
        forksafe__error_set(err, path, 0, "cannot read the settings file: %s", strerror(errno));
        close(fd);
        return FORKSAFE__EIO;
    }
    if (!S_ISREG(st.st_mode)) {
        what = S_ISDIR(st.st_mode)    ? "a directory"
               : S_ISFIFO(st.st_mode) ? "a FIFO"
               : S_ISSOCK(st.st_mode) ? "a socket"
               : S_ISCHR(st.st_mode)  ? "a character device"
                                      : "a special file";
        forksafe__error_set(err, path, 0,
                            "cannot read the settings file: it is %s, not a regular file", what);
        close(fd);
        return FORKSAFE__EIO;
    }
    return fd;
}

int forksafe__read_settings_file(const char *path, char **text, size_t *length,
                                 forksafe__error *err)
{
    size_t used = 0, capacity = 0;
    char *buffer = NULL;
    int fd = open_settings_file(path, err);

    if (fd < 0)
        return fd;
    for (;;) {
        ssize_t got;

        if (capacity - used < 4096) {
            size_t grown_capacity = capacity ? capacity * 2 : 65536;
            char *grown = forksafe__realloc(buffer, grown_capacity);

            if (!grown) {
                forksafe__free(buffer);
                close(fd);
                forksafe__error_set(err, path, 0, "%s", forksafe__strerror(FORKSAFE__ENOMEM));
                return FORKSAFE__ENOMEM;
            }
            buffer = grown;
            capacity = grown_capacity;
        }
        got = read(fd, buffer + used, capacity - used - 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            forksafe__error_set(err, path, 0, "cannot read the settings file: %s", strerror(errno));
            forksafe__free(buffer);
            close(fd);
            return FORKSAFE__EIO;
        }
        if (got == 0)
            break;
        used += (size_t)got;
    }
    close(fd);
    buffer[used] = '\0';
    *text = buffer;
    *length = used;
    return 0;
}
