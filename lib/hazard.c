/*
 * hazard.c - the scan: which threads and connected sockets of this process
 * a child forked now would inherit (lib/hazard.h says which count and why).
 *
 * It runs in the parent just before every fork, so it asks only this
 * process's own /proc entries and descriptors, and never stat()s or reads a
 * descriptor: an fd on a hung FUSE or NFS mount would block the fork.  Its
 * link in /proc/self/fd says "socket:[...]" without touching the file, and
 * only sockets are then asked anything (getsockopt, getsockname,
 * getpeername: none of them blocks).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "hazard.h"

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

/* ------------------------------------------------------------------- list */

/* A cleared slot at the end of LIST, or NULL when it cannot grow.  Grows by
 * doubling, so a list reused across scans stops allocating once it has held
 * the largest set. */
static forksafe__hazard *list_add(forksafe__hazard_list *list)
{
    forksafe__hazard *slot;

    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? list->capacity * 2 : 16;
        forksafe__hazard *grown = forksafe__realloc(list->items, capacity * sizeof(*grown));

        if (!grown)
            return NULL;
        list->items = grown;
        list->capacity = capacity;
    }
    slot = &list->items[list->count++];
    memset(slot, 0, sizeof(*slot));
    return slot;
}

void forksafe__hazard_list_free(forksafe__hazard_list *list)
{
    forksafe__free(list->items);
    list->items = NULL;
    list->count = 0;
    list->capacity = 0;
}

static int by_tid(const void *a, const void *b)
{
    pid_t x = ((const forksafe__hazard *)a)->tid, y = ((const forksafe__hazard *)b)->tid;

    return (x > y) - (x < y);
}

static int by_fd(const void *a, const void *b)
{
    int x = ((const forksafe__hazard *)a)->fd, y = ((const forksafe__hazard *)b)->fd;

    return (x > y) - (x < y);
}

/* Sorts LIST's items from FIRST on (qsort must not see a NULL array). */
static void sort_from(forksafe__hazard_list *list, size_t first,
                      int (*compare)(const void *, const void *))
{
    if (list->count - first > 1)
        qsort(list->items + first, list->count - first, sizeof(*list->items), compare);
}

/* A /proc directory entry's number, or -1 for "." and anything else. */
static long entry_number(const char *name)
{
    char *end;
    long number;

    if (*name < '0' || *name > '9')
        return -1;
    errno = 0;
    number = strtol(name, &end, 10);
    if (*end != '\0' || errno != 0 || number > 0x7fffffff)
        return -1;
    return number;
}

/* One number per listed thread, mixed so that a sum of them stays a good
 * hash of the set whatever order /proc lists it in. */
static uint64_t mixed(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* ---------------------------------------------------------------- threads */

static int own_tid(const forksafe__hazard_scope *scope, pid_t tid)
{
    size_t i;

    for (i = 0; i < scope->own_tid_count; i++) {
        if (scope->own_tids[i] == tid)
            return 1;
    }
    return 0;
}

/* TID's comm into NAME; 0 if the thread is already gone (not a hazard). */
static int read_comm(int task_fd, long tid, char *name, size_t size)
{
    char path[32];
    ssize_t length;
    int fd;

    snprintf(path, sizeof(path), "%ld/comm", tid);
    fd = openat(task_fd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    length = read(fd, name, size - 1);
    close(fd);
    if (length < 0)
        return 0;
    while (length > 0 && name[length - 1] == '\n')
        length--;
    name[length] = '\0';
    return 1;
}

static int scan_threads(const forksafe__hazard_scope *scope, forksafe__hazard_list *out,
                        forksafe__hazards_mark *mark)
{
    pid_t self = gettid();
    size_t first = out->count;
    struct dirent *entry;
    DIR *tasks = opendir("/proc/self/task");
    int rc = 0;

    if (!tasks)
        return FORKSAFE__EIO;
    if (mark)
        mark->lowest_free_fd = dirfd(tasks);
    while ((errno = 0, entry = readdir(tasks)) != NULL) {
        long tid = entry_number(entry->d_name);
        char name[FORKSAFE__HAZARD_NAME_MAX];
        forksafe__hazard *hazard;

        if (tid >= 0 && mark)
            mark->threads += mixed((uint64_t)tid);
        if (tid < 0 || tid == self || own_tid(scope, (pid_t)tid))
            continue;
        if (!read_comm(dirfd(tasks), tid, name, sizeof(name)))
            continue;
        hazard = list_add(out);
        if (!hazard) {
            rc = FORKSAFE__ENOMEM;
            break;
        }
        hazard->kind = FORKSAFE__HAZARD_THREAD;
        hazard->fd = -1;
        hazard->tid = (pid_t)tid;
        memcpy(hazard->name, name, sizeof(name));
    }
    if (rc == 0 && errno != 0)
        rc = FORKSAFE__EIO;
    closedir(tasks);
    sort_from(out, first, by_tid);
    return rc;
}

/* ---------------------------------------------------------------- sockets */

static int own_fd(const forksafe__hazard_scope *scope, int fd)
{
    size_t i;

    for (i = 0; i < scope->own_fd_count; i++) {
        if (scope->own_fds[i] == fd)
            return 1;
    }
    return 0;
}

static int socket_option(int fd, int option)
{
    int value = -1;
    socklen_t length = sizeof(value);

    if (getsockopt(fd, SOL_SOCKET, option, &value, &length) != 0)
        return -1;
    return value;
}

/* "127.0.0.1:5432" or "[::1]:5432"; the port is returned too. */
static int write_inet(const struct sockaddr_storage *address, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (address->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)address;

        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(buf, size, "%s:%d", host, port);
    }
    else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)address;

        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(buf, size, "[%s]:%d", host, port);
    }
    return port;
}

/* A UNIX address as a path, or "@name" for an abstract one (its NULs shown
 * as '@', as ss does); "" for an unnamed socket. */
static void write_unix(const struct sockaddr_un *address, socklen_t length, char *buf, size_t size)
{
    size_t offset = offsetof(struct sockaddr_un, sun_path), n, i;

    buf[0] = '\0';
    if (length <= offset)
        return;
    n = length - offset;
    if (address->sun_path[0] != '\0')
        n = strnlen(address->sun_path, n);
    if (n > size - 1)
        n = size - 1;
    for (i = 0; i < n; i++)
        buf[i] = address->sun_path[i] ? address->sun_path[i] : '@';
    buf[n] = '\0';
}

/* Fills HAZARD if FD is a connected stream socket worth a warning. */
static int inspect_socket(int fd, int domain, forksafe__hazard *hazard)
{
    int type = socket_option(fd, SO_TYPE);
    struct sockaddr_storage local, peer;
    socklen_t local_length = sizeof(local), peer_length = sizeof(peer);

    if (socket_option(fd, SO_ACCEPTCONN) != 0)
        return 0; /* listening (or not a socket any more) */
    if (domain == AF_INET || domain == AF_INET6) {
        int protocol = socket_option(fd, SO_PROTOCOL);

        if (type != SOCK_STREAM || (protocol != IPPROTO_TCP && protocol != IPPROTO_MPTCP))
            return 0;
        hazard->kind = FORKSAFE__HAZARD_TCP;
    }
    else if (domain == AF_UNIX) {
        if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
            return 0;
        hazard->kind = FORKSAFE__HAZARD_UNIX;
    }
    else {
        return 0;
    }
    memset(&peer, 0, sizeof(peer));
    if (getpeername(fd, (struct sockaddr *)&peer, &peer_length) != 0)
        return 0; /* not connected */
    memset(&local, 0, sizeof(local));
    if (getsockname(fd, (struct sockaddr *)&local, &local_length) != 0)
        local_length = 0;
    hazard->fd = fd;
    if (hazard->kind == FORKSAFE__HAZARD_TCP) {
        if (peer.ss_family != AF_INET && peer.ss_family != AF_INET6)
            return 0;
        hazard->peer_port = write_inet(&peer, hazard->peer, sizeof(hazard->peer));
        if (local.ss_family == AF_INET || local.ss_family == AF_INET6)
            write_inet(&local, hazard->local, sizeof(hazard->local));
        hazard->service = forksafe__hazard_service(hazard->kind, hazard->peer_port, NULL);
        return 1;
    }
    /* An unnamed peer is the other end of a socketpair, or a client this
     * process accepted: plumbing of its own, not a session with a server. */
    write_unix((const struct sockaddr_un *)&peer, peer_length, hazard->peer, sizeof(hazard->peer));
    if (hazard->peer[0] == '\0')
        return 0;
    write_unix((const struct sockaddr_un *)&local, local_length, hazard->local,
               sizeof(hazard->local));
    hazard->service = forksafe__hazard_service(hazard->kind, 0, hazard->peer);
    return 1;
}

/* What descriptor FD is, as the change check compares it: closed, not a
 * socket, or which socket (its cookie, unique for the system's uptime; on a
 * kernel without cookies its inode).  One getsockopt(), which answers at
 * once for a descriptor that is no socket, reaching no file system. */
#define DESCRIPTOR_CLOSED     0
#define DESCRIPTOR_NOT_SOCKET 1
#define DESCRIPTOR_UNKNOWN    2
#define SOCKET_COOKIE         (1ULL << 63)
/* How many numbers above the highest open one the change check reads. */
#define ABOVE_HIGHEST 32
static uint64_t descriptor_state(int fd)
{
    uint64_t cookie = 0;
    socklen_t length = sizeof(cookie);
    struct stat status;

    if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &length) == 0 && length == sizeof(cookie))
        return cookie | SOCKET_COOKIE;
    if (errno == EBADF)
        return DESCRIPTOR_CLOSED;
    if (errno == ENOTSOCK)
        return DESCRIPTOR_NOT_SOCKET;
    /* ENOPROTOOPT comes only from a socket, so this fstat reaches no file
     * system. */
    if (errno == ENOPROTOOPT && fstat(fd, &status) == 0)
        return ((uint64_t)status.st_ino << 2) | 3;
    return DESCRIPTOR_UNKNOWN;
}

static int is_socket(uint64_t state)
{
    return state != DESCRIPTOR_CLOSED && state != DESCRIPTOR_NOT_SOCKET &&
           state != DESCRIPTOR_UNKNOWN;
}

/* Records STATE as descriptor FD's in MARK, every number below it not
 * listed yet being closed. */
static int note_descriptor(forksafe__hazards_mark *mark, int fd, uint64_t state)
{
    size_t needed = (size_t)fd + 1;

    if (needed > mark->fd_capacity) {
        size_t capacity = mark->fd_capacity ? mark->fd_capacity : 64;
        uint64_t *grown;

        while (capacity < needed)
            capacity *= 2;
        grown = forksafe__realloc(mark->fds, capacity * sizeof(*grown));
        if (!grown)
            return FORKSAFE__ENOMEM;
        mark->fds = grown;
        mark->fd_capacity = capacity;
    }
    if (needed > mark->fd_count) {
        memset(mark->fds + mark->fd_count, 0, (needed - mark->fd_count) * sizeof(*mark->fds));
        mark->fd_count = needed;
    }
    mark->fds[fd] = state;
    mark->open_count++;
    return 0;
}

static int scan_sockets(const forksafe__hazard_scope *scope, forksafe__hazard_list *out,
                        forksafe__hazards_mark *mark)
{
    size_t first = out->count;
    struct dirent *entry;
    struct rlimit limit;
    rlim_t highest_openable = RLIM_INFINITY;
    DIR *fds = opendir("/proc/self/fd");
    int rc = 0;

    if (!fds)
        return FORKSAFE__EIO;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
        highest_openable = limit.rlim_cur;
    while ((errno = 0, entry = readdir(fds)) != NULL) {
        long fd = entry_number(entry->d_name);
        forksafe__hazard found, *slot;
        uint64_t state;
        int domain;

        if (fd < 0 || fd == dirfd(fds))
            continue;
        /* Asking a descriptor that is not a socket for a socket option
         * fails at once (ENOTSOCK) without reaching any file system: no
         * stat of a file on a hung mount, and no path lookup in /proc per
         * descriptor either, which costs several times more. */
        state = descriptor_state((int)fd);
        /* Listed but closed by now: a gap.  Past the soft RLIMIT_NOFILE
         * nothing can be opened or put (valgrind keeps its own there): the
         * check leaves those numbers out. */
        rc = mark && state != DESCRIPTOR_CLOSED && (rlim_t)fd < highest_openable
                 ? note_descriptor(mark, (int)fd, state)
                 : 0;
        if (rc != 0)
            break;
        /* stdin/out/err are the host's to hand down (uWSGI's logger may be
         * a socket). */
        if (fd <= 2 || !is_socket(state) || own_fd(scope, (int)fd))
            continue;
        domain = socket_option((int)fd, SO_DOMAIN);
        if (domain < 0)
            continue;
        memset(&found, 0, sizeof(found));
        if (!inspect_socket((int)fd, domain, &found))
            continue;
        slot = list_add(out);
        if (!slot) {
            rc = FORKSAFE__ENOMEM;
            break;
        }
        *slot = found;
    }
    if (rc == 0 && errno != 0)
        rc = FORKSAFE__EIO;
    closedir(fds);
    sort_from(out, first, by_fd);
    return rc;
}

/* ------------------------------------------------------------------- scan */

static void apply_rules(const forksafe__hazard_scope *scope, forksafe__hazard_list *list)
{
    size_t i, j;

    for (i = 0; i < list->count; i++) {
        for (j = 0; j < scope->rule_count && !list->items[i].allowed; j++)
            list->items[i].allowed =
                forksafe__hazard_rule_matches(&scope->rules[j], &list->items[i]);
    }
}

int forksafe__hazards_scan(const forksafe__hazard_scope *scope, forksafe__hazard_list *out,
                           forksafe__hazards_mark *mark)
{
    static const forksafe__hazard_scope nothing_excluded;
    int rc;

    if (!scope)
        scope = &nothing_excluded;
    out->count = 0;
    if (mark) {
        mark->threads = 0;
        mark->lowest_free_fd = -1;
        mark->fd_count = 0;
        mark->open_count = 0;
    }
    rc = scan_threads(scope, out, mark);
    if (rc == 0)
        rc = scan_sockets(scope, out, mark);
    if (rc != 0 && mark)
        mark->lowest_free_fd = -1; /* matches no look */
    apply_rules(scope, out);
    return rc;
}

/* ----------------------------------------------------------- change check */

int forksafe__hazards_unchanged(const forksafe__hazards_mark *mark)
{
    uint64_t threads = 0;
    struct dirent *entry;
    DIR *tasks;
    size_t i;
    int same;

    /* One getsockopt per number, gaps included: past this the scan's
     * listing, which costs per open descriptor, is the cheaper look. */
    if (mark->lowest_free_fd < 0 || mark->fd_count > 3 * mark->open_count + 64)
        return 0;
    tasks = opendir("/proc/self/task");
    if (!tasks)
        return 0;
    /* The listing takes the lowest free number itself, as the scan's did. */
    same = dirfd(tasks) == mark->lowest_free_fd;
    while (same && (errno = 0, entry = readdir(tasks)) != NULL) {
        long tid = entry_number(entry->d_name);
        if (tid >= 0)
            threads += mixed((uint64_t)tid);
    }
    if (same && errno != 0)
        same = 0;
    closedir(tasks);
    if (!same || threads != mark->threads)
        return 0;
    /* The listing is closed again: its number reads as closed, as the
     * scan's own listing did. */
    for (i = 0; i < mark->fd_count; i++) {
        if (descriptor_state((int)i) != mark->fds[i])
            return 0;
    }
    /* Above the highest number then open, new ones appear when what was
     * opened below them is closed again (a pool's process pipes, a file
     * read while connecting), so the lowest free number is back where it
     * was: the first numbers above must still be free. */
    for (i = mark->fd_count; i < mark->fd_count + ABOVE_HIGHEST; i++) {
        if (descriptor_state((int)i) != DESCRIPTOR_CLOSED)
            return 0;
    }
    return 1;
}

void forksafe__hazards_mark_free(forksafe__hazards_mark *mark)
{
    forksafe__free(mark->fds);
    memset(mark, 0, sizeof(*mark));
    mark->lowest_free_fd = -1;
}
