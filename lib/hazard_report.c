/*
 * hazard_report.c - what a fork hazard is called in a warning: the service
 * behind a socket, the one line that says what the child inherits and the
 * usual fix, and a fingerprint so a host repeats itself only when the set
 * changes.  An operator acts on the line, so it names the peer's service
 * when one is known ("PostgreSQL", not a port) and the fix that fits what a
 * client of that service holds (a pool, a client, an exporter).
 */
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

#include "hazard.h"

/* The fix, by what an application holds of the service. */
#define POOL "dispose the pool before forking (pre-fork) or in each child (post-fork)"
#define CONNECTION \
    "close the connection before forking (pre-fork) or open it in each child (post-fork)"
#define CLIENT "close the client before forking (pre-fork) or create it in each child (post-fork)"
#define EXPORTER \
    "shut the exporter down before forking (pre-fork) or start it in each child (post-fork)"
#define ANY_SOCKET "close it before forking (pre-fork) or reopen it in each child (post-fork)"

/* Well-known server ports.  UDP services (statsd's 8125, ...) are left out:
 * a datagram socket is no hazard. */
static const struct {
    int port;
    const char *service;
    const char *fix;
} tcp_services[] = {
    {5432, "PostgreSQL", POOL},      {3306, "MySQL", POOL},
    {6379, "Redis", POOL},           {27017, "MongoDB", POOL},
    {11211, "memcached", POOL},      {1433, "SQL Server", POOL},
    {1521, "Oracle", POOL},          {5672, "AMQP", CONNECTION},
    {9092, "Kafka", CLIENT},         {2181, "ZooKeeper", CLIENT},
    {9200, "Elasticsearch", CLIENT}, {4317, "OpenTelemetry (OTLP)", EXPORTER},
};

/* The servers' default socket file names. */
static const struct {
    const char *glob;
    const char *service;
} unix_services[] = {
    {".s.PGSQL.*", "PostgreSQL"}, {"mysql*.sock", "MySQL"},         {"mysqld*.sock", "MySQL"},
    {"redis*.sock", "Redis"},     {"memcached*.sock", "memcached"}, {"mongodb-*.sock", "MongoDB"},
};

#define COUNT(table) (sizeof(table) / sizeof((table)[0]))

const char *forksafe__hazard_service(forksafe__hazard_kind kind, int port, const char *path)
{
    size_t i;

    if (kind == FORKSAFE__HAZARD_TCP) {
        for (i = 0; i < COUNT(tcp_services); i++) {
            if (tcp_services[i].port == port)
                return tcp_services[i].service;
        }
    }
    else if (kind == FORKSAFE__HAZARD_UNIX && path) {
        const char *name = strrchr(path, '/');

        name = name ? name + 1 : path;
        for (i = 0; i < COUNT(unix_services); i++) {
            if (fnmatch(unix_services[i].glob, name, 0) == 0)
                return unix_services[i].service;
        }
    }
    return NULL;
}

/* A service reached over UNIX is held the same way as over TCP. */
static const char *fix_for(const char *service)
{
    size_t i;

    for (i = 0; service && i < COUNT(tcp_services); i++) {
        if (strcmp(tcp_services[i].service, service) == 0)
            return tcp_services[i].fix;
    }
    return ANY_SOCKET;
}

void forksafe__hazard_describe(const forksafe__hazard *hazard, const char *child,
                               const char *parent_kind, pid_t parent_pid, char *buf, size_t size)
{
    const char *service = hazard->service;

    if (size == 0)
        return;
    if (hazard->kind == FORKSAFE__HAZARD_THREAD) {
        snprintf(buf, size,
                 "%s is forked while thread '%s' (tid %d) runs in the %s (pid %d): the child has "
                 "no such thread, and a lock it holds stays locked there; stop it before "
                 "forking (pre-fork) or start it in each child (post-fork)",
                 child, hazard->name, (int)hazard->tid, parent_kind, (int)parent_pid);
        return;
    }
    snprintf(buf, size, "%s will inherit fd %d: %s %s%s-> %s%s%s%s, opened by the %s (pid %d); %s",
             child, hazard->fd, hazard->kind == FORKSAFE__HAZARD_TCP ? "TCP" : "UNIX",
             hazard->local, hazard->local[0] ? " " : "", hazard->peer, service ? " (" : "",
             service ? service : "", service ? ")" : "", parent_kind, (int)parent_pid,
             fix_for(service));
}

/* FNV-1a over BYTES, continuing from HASH. */
static uint64_t fnv1a(uint64_t hash, const void *bytes, size_t length)
{
    const unsigned char *p = bytes;
    size_t i;

    for (i = 0; i < length; i++) {
        hash ^= p[i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

/* splitmix64's finaliser: spreads one hazard's hash over all 64 bits, so
 * that summing them stays a good hash of the set. */
static uint64_t mix(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A sum of per-hazard hashes: the same set gives the same fingerprint in
 * any order, and an empty set gives 0. */
uint64_t forksafe__hazards_fingerprint(const forksafe__hazard_list *list)
{
    uint64_t sum = 0;
    size_t i;

    for (i = 0; i < list->count; i++) {
        const forksafe__hazard *hazard = &list->items[i];
        int numbers[3] = {(int)hazard->kind, hazard->fd, (int)hazard->tid};
        uint64_t hash = 0xcbf29ce484222325ULL;

        if (hazard->allowed)
            continue;
        hash = fnv1a(hash, numbers, sizeof(numbers));
        hash = fnv1a(hash, hazard->local, strnlen(hazard->local, sizeof(hazard->local)));
        hash = fnv1a(hash, "", 1); /* "ab" + "c" is not "a" + "bc" */
        hash = fnv1a(hash, hazard->peer, strnlen(hazard->peer, sizeof(hazard->peer)));
        sum += mix(hash);
    }
    return sum;
}

/* ----------------------------------------------------------- the payload */

static const char *const kind_names[] = {"thread", "tcp", "unix"};

static json_t *hazard_json(const forksafe__hazard *hazard)
{
    json_t *object = json_object();
    int failed;

    if (!object)
        return NULL;
    failed = json_object_set_new(object, "kind", json_string(kind_names[hazard->kind]));
    if (hazard->kind == FORKSAFE__HAZARD_THREAD) {
        failed |= json_object_set_new(object, "tid", json_integer(hazard->tid));
        failed |= json_object_set_new(object, "name", json_string(hazard->name));
    }
    else {
        failed |= json_object_set_new(object, "fd", json_integer(hazard->fd));
        failed |= json_object_set_new(object, "local", json_string(hazard->local));
        failed |= json_object_set_new(object, "peer", json_string(hazard->peer));
        failed |= json_object_set_new(object, "service",
                                      hazard->service ? json_string(hazard->service) : json_null());
    }
    failed |= json_object_set_new(object, "allowed", json_boolean(hazard->allowed));
    if (hazard->handled_by[0])
        failed |= json_object_set_new(object, "handled_by", json_string(hazard->handled_by));
    if (failed) {
        json_decref(object);
        return NULL;
    }
    return object;
}

json_t *forksafe__hazards_json(const forksafe__hazard_list *list)
{
    json_t *array = json_array();
    size_t i;

    for (i = 0; array && i < list->count; i++) {
        if (json_array_append_new(array, hazard_json(&list->items[i])) != 0) {
            json_decref(array);
            return NULL;
        }
    }
    return array;
}
