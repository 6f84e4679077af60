/*
 * test_hazard.c - the fork-hazard scan against real sockets and threads of
 * this process (TCP over 127.0.0.1 and ::1, UNIX paths and abstract names,
 * socketpairs, UDP, stdio), the allow rules, the service table, the
 * warning lines and the fingerprint.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hazard.h"
#include "unit.h"

/* --------------------------------------------------------------- helpers */

typedef struct connection {
    int listener, client, accepted;
    int listener_port, client_port;
} connection;

static int port_of(int fd)
{
    struct sockaddr_storage address;
    socklen_t length = sizeof(address);

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&address, &length), 0);
    if (address.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&address)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&address)->sin6_port);
}

/* A listener on the loopback address of FAMILY, a client connected to it
 * and the accepted end.  0, or -1 if FAMILY has no loopback address here. */
static int tcp_connect(int family, connection *c)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    struct sockaddr *address = family == AF_INET ? (struct sockaddr *)&in : (struct sockaddr *)&in6;
    socklen_t length = family == AF_INET ? sizeof(in) : sizeof(in6);

    c->listener = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->listener < 0)
        return -1;
    if (bind(c->listener, address, length) != 0) {
        close(c->listener);
        return -1;
    }
    ck_assert_int_eq(listen(c->listener, 8), 0);
    c->listener_port = port_of(c->listener);
    in.sin_port = htons((uint16_t)c->listener_port);
    in6.sin6_port = htons((uint16_t)c->listener_port);
    c->client = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(c->client, 0);
    ck_assert_int_eq(connect(c->client, address, length), 0);
    c->accepted = accept(c->listener, NULL, NULL);
    ck_assert_int_ge(c->accepted, 0);
    c->client_port = port_of(c->client);
    return 0;
}

static void disconnect(connection *c)
{
    close(c->client);
    close(c->accepted);
    close(c->listener);
}

/* A UNIX listener of TYPE at ADDRESS (LENGTH bytes), a client and the
 * accepted end. */
static void unix_connect(int type, const struct sockaddr_un *address, socklen_t length,
                         connection *c)
{
    c->listener = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(c->listener, 0);
    ck_assert_int_eq(bind(c->listener, (const struct sockaddr *)address, length), 0);
    ck_assert_int_eq(listen(c->listener, 8), 0);
    c->client = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(c->client, 0);
    ck_assert_int_eq(connect(c->client, (const struct sockaddr *)address, length), 0);
    c->accepted = accept(c->listener, NULL, NULL);
    ck_assert_int_ge(c->accepted, 0);
}

static struct sockaddr_un unix_path(const char *path)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};

    ck_assert_uint_lt(strlen(path), sizeof(address.sun_path));
    strcpy(address.sun_path, path);
    return address;
}

static const forksafe__hazard *find_fd(const forksafe__hazard_list *list, int fd)
{
    size_t i;

    for (i = 0; i < list->count; i++) {
        if (list->items[i].kind != FORKSAFE__HAZARD_THREAD && list->items[i].fd == fd)
            return &list->items[i];
    }
    return NULL;
}

static const forksafe__hazard *find_tid(const forksafe__hazard_list *list, pid_t tid)
{
    size_t i;

    for (i = 0; i < list->count; i++) {
        if (list->items[i].kind == FORKSAFE__HAZARD_THREAD && list->items[i].tid == tid)
            return &list->items[i];
    }
    return NULL;
}

static void scan(const forksafe__hazard_scope *scope, forksafe__hazard_list *list)
{
    ck_assert_int_eq(forksafe__hazards_scan(scope, list, NULL), 0);
}

static char temp_dir[64];

static void make_temp_dir(void)
{
    snprintf(temp_dir, sizeof(temp_dir), "/tmp/forksafe-hazard-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(temp_dir));
}

/* ------------------------------------------------------------------- TCP */

static void check_tcp(int family, const char *host)
{
    forksafe__hazard_list list = {0};
    const forksafe__hazard *client, *accepted;
    char listener_end[64], client_end[64];
    connection c;

    if (tcp_connect(family, &c) != 0) {
        fprintf(stderr, "test_hazard: skipped: no loopback address %s here\n", host);
        return;
    }
    snprintf(listener_end, sizeof(listener_end), "%s:%d", host, c.listener_port);
    snprintf(client_end, sizeof(client_end), "%s:%d", host, c.client_port);
    scan(NULL, &list);
    ck_assert_ptr_null(find_fd(&list, c.listener));
    client = find_fd(&list, c.client);
    ck_assert_ptr_nonnull(client);
    ck_assert_int_eq(client->kind, FORKSAFE__HAZARD_TCP);
    ck_assert_int_eq(client->tid, 0);
    ck_assert_str_eq(client->local, client_end);
    ck_assert_str_eq(client->peer, listener_end);
    ck_assert_int_eq(client->peer_port, c.listener_port);
    ck_assert_int_eq(client->allowed, 0);
    accepted = find_fd(&list, c.accepted);
    ck_assert_ptr_nonnull(accepted);
    ck_assert_str_eq(accepted->local, listener_end);
    ck_assert_str_eq(accepted->peer, client_end);
    ck_assert_int_eq(accepted->peer_port, c.client_port);
    /* Sockets come by fd. */
    ck_assert(client < accepted);
    disconnect(&c);
    scan(NULL, &list);
    ck_assert_ptr_null(find_fd(&list, c.client));
    forksafe__hazard_list_free(&list);
}

START_TEST(tcp_ipv4_connections_are_found)
{
    check_tcp(AF_INET, "127.0.0.1");
}
END_TEST

START_TEST(tcp_ipv6_connections_are_found)
{
    check_tcp(AF_INET6, "[::1]");
}
END_TEST

START_TEST(udp_and_socketpairs_are_not_hazards)
{
    struct sockaddr_in to = {
        .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(9)};
    forksafe__hazard_list list = {0};
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), pair[2], seqpair[2], pipes[2];

    ck_assert_int_ge(udp, 0);
    ck_assert_int_eq(connect(udp, (struct sockaddr *)&to, sizeof(to)), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, seqpair), 0);
    ck_assert_int_eq(pipe2(pipes, O_CLOEXEC), 0);
    scan(NULL, &list);
    ck_assert_ptr_null(find_fd(&list, udp));
    ck_assert_ptr_null(find_fd(&list, pair[0]));
    ck_assert_ptr_null(find_fd(&list, pair[1]));
    ck_assert_ptr_null(find_fd(&list, seqpair[0]));
    ck_assert_ptr_null(find_fd(&list, pipes[0]));
    close(udp);
    close(pair[0]);
    close(pair[1]);
    close(seqpair[0]);
    close(seqpair[1]);
    close(pipes[0]);
    close(pipes[1]);
    forksafe__hazard_list_free(&list);
}
END_TEST

START_TEST(stdio_and_own_fds_are_left_out)
{
    forksafe__hazard_list list = {0};
    forksafe__hazard_scope scope = {0};
    int saved_stdin = dup(0), saved_stderr = dup(2), own[1];
    int stdin_seen, stderr_seen, client_seen;
    connection c;

    ck_assert_int_eq(tcp_connect(AF_INET, &c), 0);
    ck_assert_int_ge(saved_stdin, 0);
    ck_assert_int_ge(saved_stderr, 0);
    /* A host's stdio may be a socket (uWSGI's logger); it is the host's. */
    dup2(c.client, 0);
    dup2(c.client, 2);
    ck_assert_int_eq(forksafe__hazards_scan(NULL, &list, NULL), 0);
    dup2(saved_stdin, 0);
    dup2(saved_stderr, 2);
    close(saved_stdin);
    close(saved_stderr);
    stdin_seen = find_fd(&list, 0) != NULL;
    stderr_seen = find_fd(&list, 2) != NULL;
    client_seen = find_fd(&list, c.client) != NULL;
    ck_assert(!stdin_seen);
    ck_assert(!stderr_seen);
    ck_assert(client_seen);

    own[0] = c.client;
    scope.own_fds = own;
    scope.own_fd_count = 1;
    scan(&scope, &list);
    ck_assert_ptr_null(find_fd(&list, c.client));
    ck_assert_ptr_nonnull(find_fd(&list, c.accepted));
    disconnect(&c);
    forksafe__hazard_list_free(&list);
}
END_TEST

/* ------------------------------------------------------------------ UNIX */

START_TEST(unix_connections_are_found_by_peer_path)
{
    forksafe__hazard_list list = {0};
    const forksafe__hazard *client;
    char pg_path[128], app_path[128];
    struct sockaddr_un address;
    connection pg, app;

    make_temp_dir();
    snprintf(pg_path, sizeof(pg_path), "%s/.s.PGSQL.5432", temp_dir);
    address = unix_path(pg_path);
    unix_connect(SOCK_STREAM, &address, sizeof(address), &pg);
    snprintf(app_path, sizeof(app_path), "%s/app.sock", temp_dir);
    address = unix_path(app_path);
    unix_connect(SOCK_SEQPACKET, &address, sizeof(address), &app);
    /* Gone from the file system, the names stay with the sockets; nothing
     * is left behind if an assertion fails. */
    unlink(pg_path);
    unlink(app_path);
    rmdir(temp_dir);
    scan(NULL, &list);

    ck_assert_ptr_null(find_fd(&list, pg.listener));
    /* The accepted end's peer is an unbound client: no name, no hazard. */
    ck_assert_ptr_null(find_fd(&list, pg.accepted));
    client = find_fd(&list, pg.client);
    ck_assert_ptr_nonnull(client);
    ck_assert_int_eq(client->kind, FORKSAFE__HAZARD_UNIX);
    ck_assert_str_eq(client->peer, pg_path);
    ck_assert_str_eq(client->local, "");
    ck_assert_int_eq(client->peer_port, 0);
    ck_assert_str_eq(client->service, "PostgreSQL");

    client = find_fd(&list, app.client);
    ck_assert_ptr_nonnull(client);
    ck_assert_str_eq(client->peer, app_path);
    ck_assert_ptr_null(client->service);
    disconnect(&pg);
    disconnect(&app);
    forksafe__hazard_list_free(&list);
}
END_TEST

START_TEST(abstract_unix_names_are_written_with_an_at)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    forksafe__hazard_list list = {0};
    const forksafe__hazard *client;
    char name[64], expected[80];
    socklen_t length;
    connection c;

    snprintf(name, sizeof(name), "forksafe-hazard-%d", (int)getpid());
    memcpy(address.sun_path + 1, name, strlen(name));
    length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
    unix_connect(SOCK_STREAM, &address, length, &c);
    scan(NULL, &list);
    client = find_fd(&list, c.client);
    ck_assert_ptr_nonnull(client);
    snprintf(expected, sizeof(expected), "@%s", name);
    ck_assert_str_eq(client->peer, expected);
    ck_assert_ptr_null(client->service);
    disconnect(&c);
    forksafe__hazard_list_free(&list);
}
END_TEST

/* --------------------------------------------------------------- threads */

typedef struct named_thread {
    pthread_t thread;
    const char *name;
    pid_t tid;
    int ready[2], stop[2];
} named_thread;

static void *run_named(void *arg)
{
    named_thread *t = arg;
    char byte = 0;

    pthread_setname_np(pthread_self(), t->name);
    t->tid = gettid();
    if (write(t->ready[1], &byte, 1) != 1 || read(t->stop[0], &byte, 1) < 0)
        return NULL;
    return NULL;
}

static void start_named(named_thread *t, const char *name)
{
    char byte;

    t->name = name;
    ck_assert_int_eq(pipe2(t->ready, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(t->stop, O_CLOEXEC), 0);
    ck_assert_int_eq(pthread_create(&t->thread, NULL, run_named, t), 0);
    ck_assert_int_eq(read(t->ready[0], &byte, 1), 1);
}

static void stop_named(named_thread *t)
{
    close(t->stop[1]);
    ck_assert_int_eq(pthread_join(t->thread, NULL), 0);
    close(t->stop[0]);
    close(t->ready[0]);
    close(t->ready[1]);
}

START_TEST(threads_are_found_by_name)
{
    forksafe__hazard_list list = {0};
    forksafe__hazard_scope scope = {0};
    const forksafe__hazard *found;
    named_thread exporter, poller;
    pid_t own[1];

    start_named(&exporter, "exporter");
    start_named(&poller, "poller");
    scan(NULL, &list);
    ck_assert_ptr_null(find_tid(&list, gettid()));
    found = find_tid(&list, exporter.tid);
    ck_assert_ptr_nonnull(found);
    ck_assert_str_eq(found->name, "exporter");
    ck_assert_int_eq(found->fd, -1);
    ck_assert_str_eq(found->peer, "");
    ck_assert_ptr_nonnull(find_tid(&list, poller.tid));
    /* Threads first, by tid. */
    ck_assert_int_eq(list.items[0].kind, FORKSAFE__HAZARD_THREAD);
    ck_assert((find_tid(&list, exporter.tid) < find_tid(&list, poller.tid)) ==
              (exporter.tid < poller.tid));

    own[0] = exporter.tid;
    scope.own_tids = own;
    scope.own_tid_count = 1;
    scan(&scope, &list);
    ck_assert_ptr_null(find_tid(&list, exporter.tid));
    ck_assert_ptr_nonnull(find_tid(&list, poller.tid));
    stop_named(&exporter);
    stop_named(&poller);
    scan(NULL, &list);
    ck_assert_ptr_null(find_tid(&list, poller.tid));
    forksafe__hazard_list_free(&list);
}
END_TEST

typedef struct scan_result {
    forksafe__hazard_list list;
    pid_t tid;
    int rc;
} scan_result;

static void *scan_elsewhere(void *arg)
{
    scan_result *result = arg;

    result->tid = gettid();
    result->rc = forksafe__hazards_scan(NULL, &result->list, NULL);
    return NULL;
}

START_TEST(the_forking_thread_is_the_calling_one)
{
    scan_result result = {{0}, 0, -1};
    pthread_t thread;

    ck_assert_int_eq(pthread_create(&thread, NULL, scan_elsewhere, &result), 0);
    ck_assert_int_eq(pthread_join(thread, NULL), 0);
    ck_assert_int_eq(result.rc, 0);
    ck_assert_ptr_null(find_tid(&result.list, result.tid));
    ck_assert_ptr_nonnull(find_tid(&result.list, gettid()));
    forksafe__hazard_list_free(&result.list);
}
END_TEST

/* ----------------------------------------------------------------- rules */

static void parse_ok(const char *text, forksafe__hazard_kind kind, const char *pattern,
                     const char *port, forksafe__hazard_rule *rule)
{
    forksafe__error err = {0};

    ck_assert_int_eq(forksafe__hazard_rule_parse(text, "app.ini", 7, rule, &err), 0);
    ck_assert(!err.set);
    ck_assert_int_eq(rule->kind, kind);
    ck_assert_str_eq(rule->pattern, pattern);
    if (port)
        ck_assert_str_eq(rule->port, port);
    else
        ck_assert_ptr_null(rule->port);
}

START_TEST(rules_parse)
{
    static const char *const bad[] = {
        "",
        "  ",
        "thread",
        "thread:",
        "unix:",
        "udp:*:53",
        "tcp:5432",
        "tcp::5432",
        "tcp:host:",
        "tcp:*",
        "tcp:db:postgres",
        "tcp:db:0",
        "tcp:db:05432",
        "tcp:db:65536",
        "tcp:db:99999999999",
        "Thread:x",
        "tcp :db:1",
    };
    forksafe__hazard_rule rule;
    size_t i;

    parse_ok("thread:export*", FORKSAFE__HAZARD_THREAD, "export*", NULL, &rule);
    forksafe__hazard_rule_free(&rule);
    forksafe__hazard_rule_free(&rule); /* twice is harmless */
    parse_ok("  unix:*.s.PGSQL.*\t", FORKSAFE__HAZARD_UNIX, "*.s.PGSQL.*", NULL, &rule);
    forksafe__hazard_rule_free(&rule);
    parse_ok("tcp:*:5432", FORKSAFE__HAZARD_TCP, "*", "5432", &rule);
    forksafe__hazard_rule_free(&rule);
    parse_ok("tcp:10.0.0.*:[0-9]*", FORKSAFE__HAZARD_TCP, "10.0.0.*", "[0-9]*", &rule);
    forksafe__hazard_rule_free(&rule);
    /* IPv6: split at the last colon; brackets as a warning writes them. */
    parse_ok("tcp:::1:6379", FORKSAFE__HAZARD_TCP, "::1", "6379", &rule);
    forksafe__hazard_rule_free(&rule);
    parse_ok("tcp:[::1]:6379", FORKSAFE__HAZARD_TCP, "::1", "6379", &rule);
    forksafe__hazard_rule_free(&rule);
    parse_ok("tcp:fe80::*:*", FORKSAFE__HAZARD_TCP, "fe80::*", "*", &rule);
    forksafe__hazard_rule_free(&rule);

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        forksafe__error err = {0};
        int rc = forksafe__hazard_rule_parse(bad[i], "app.ini", 7, &rule, &err);

        ck_assert_msg(rc == FORKSAFE__EINVAL, "%s was accepted", bad[i]);
        ck_assert(err.set);
        ck_assert_str_eq(err.source, "app.ini");
        ck_assert_int_eq(err.line, 7);
        ck_assert_ptr_nonnull(strstr(err.text, bad[i]));
        ck_assert_ptr_nonnull(strstr(err.text, "thread:GLOB"));
        ck_assert_ptr_nonnull(strstr(err.text, "tcp:HOST:PORT"));
        ck_assert_ptr_nonnull(strstr(err.text, "unix:GLOB"));
        ck_assert_ptr_null(rule.pattern);
        ck_assert_ptr_null(rule.port);
    }
}
END_TEST

START_TEST(rules_parse_fails_cleanly_without_memory)
{
    static const char *const texts[] = {"thread:x", "unix:/run/*", "tcp:*:5432"};
    size_t i;

    for (i = 0; i < 3; i++) {
        long n;

        for (n = 0;; n++) {
            forksafe__hazard_rule rule;
            forksafe__error err = {0};
            int rc;

            forksafe__alloc_fail_after(n);
            rc = forksafe__hazard_rule_parse(texts[i], NULL, 0, &rule, &err);
            forksafe__alloc_fail_after(-1);
            if (rc == 0) {
                forksafe__hazard_rule_free(&rule);
                break;
            }
            ck_assert_int_eq(rc, FORKSAFE__ENOMEM);
            ck_assert_str_eq(err.text, "out of memory");
            ck_assert_ptr_null(rule.pattern);
            ck_assert_ptr_null(rule.port);
        }
    }
}
END_TEST

static int rule_matches(const char *text, const forksafe__hazard *hazard)
{
    forksafe__hazard_rule rule;
    int matches;

    ck_assert_int_eq(forksafe__hazard_rule_parse(text, NULL, 0, &rule, NULL), 0);
    matches = forksafe__hazard_rule_matches(&rule, hazard);
    forksafe__hazard_rule_free(&rule);
    return matches;
}

START_TEST(rules_match)
{
    forksafe__hazard thread = {
        .kind = FORKSAFE__HAZARD_THREAD, .fd = -1, .tid = 42, .name = "exporter"};
    forksafe__hazard v4 = {.kind = FORKSAFE__HAZARD_TCP,
                           .fd = 7,
                           .local = "10.0.0.2:40312",
                           .peer = "10.0.0.5:5432",
                           .peer_port = 5432};
    forksafe__hazard v6 = {.kind = FORKSAFE__HAZARD_TCP,
                           .fd = 8,
                           .local = "[::1]:40313",
                           .peer = "[::1]:6379",
                           .peer_port = 6379};
    forksafe__hazard pg = {
        .kind = FORKSAFE__HAZARD_UNIX, .fd = 9, .peer = "/var/run/postgresql/.s.PGSQL.5432"};

    ck_assert(rule_matches("thread:exporter", &thread));
    ck_assert(rule_matches("thread:exp*", &thread));
    ck_assert(!rule_matches("thread:exp", &thread));
    ck_assert(!rule_matches("thread:*", &v4));

    ck_assert(rule_matches("tcp:*:5432", &v4));
    ck_assert(rule_matches("tcp:10.0.0.5:5432", &v4));
    ck_assert(rule_matches("tcp:10.0.0.*:54[0-9][0-9]", &v4));
    ck_assert(rule_matches("tcp:*:*", &v4));
    ck_assert(!rule_matches("tcp:10.0.0.2:*", &v4)); /* the local end is not the peer */
    ck_assert(!rule_matches("tcp:*:543", &v4));
    ck_assert(!rule_matches("tcp:*:6379", &v4));
    ck_assert(rule_matches("tcp:::1:6379", &v6));
    ck_assert(rule_matches("tcp:[::1]:6379", &v6));
    ck_assert(rule_matches("tcp:::*:*", &v6));
    ck_assert(!rule_matches("tcp:::2:6379", &v6));
    ck_assert(!rule_matches("tcp:*:6379", &pg));

    ck_assert(rule_matches("unix:/var/run/postgresql/.s.PGSQL.5432", &pg));
    ck_assert(rule_matches("unix:.s.PGSQL.*", &pg)); /* no slash: the file name */
    ck_assert(rule_matches("unix:/var/run/*.5432", &pg));
    ck_assert(rule_matches("unix:*", &pg));
    ck_assert(!rule_matches("unix:/tmp/*", &pg));
    ck_assert(!rule_matches("unix:postgresql", &pg));
    ck_assert(!rule_matches("unix:*", &thread));
}
END_TEST

START_TEST(the_scan_marks_what_rules_allow)
{
    forksafe__hazard_rule rules[2];
    forksafe__hazard_scope scope = {0};
    forksafe__hazard_list list = {0};
    named_thread exporter;
    char text[64];
    connection c;

    ck_assert_int_eq(tcp_connect(AF_INET, &c), 0);
    start_named(&exporter, "exporter");
    snprintf(text, sizeof(text), "tcp:127.0.0.1:%d", c.listener_port);
    ck_assert_int_eq(forksafe__hazard_rule_parse(text, NULL, 0, &rules[0], NULL), 0);
    ck_assert_int_eq(forksafe__hazard_rule_parse("thread:export*", NULL, 0, &rules[1], NULL), 0);
    scope.rules = rules;
    scope.rule_count = 2;
    scan(&scope, &list);
    ck_assert_int_eq(find_fd(&list, c.client)->allowed, 1);
    ck_assert_int_eq(find_fd(&list, c.accepted)->allowed, 0);
    ck_assert_int_eq(find_tid(&list, exporter.tid)->allowed, 1);
    scope.rule_count = 0;
    scan(&scope, &list);
    ck_assert_int_eq(find_fd(&list, c.client)->allowed, 0);
    ck_assert_int_eq(find_tid(&list, exporter.tid)->allowed, 0);
    forksafe__hazard_rule_free(&rules[0]);
    forksafe__hazard_rule_free(&rules[1]);
    stop_named(&exporter);
    disconnect(&c);
    forksafe__hazard_list_free(&list);
}
END_TEST

/* ---------------------------------------------------- services and lines */

START_TEST(services_by_port_and_path)
{
    static const struct {
        int port;
        const char *service;
    } ports[] = {
        {5432, "PostgreSQL"}, {3306, "MySQL"},      {6379, "Redis"},
        {27017, "MongoDB"},   {11211, "memcached"}, {5672, "AMQP"},
        {9092, "Kafka"},      {2181, "ZooKeeper"},  {9200, "Elasticsearch"},
        {1433, "SQL Server"}, {1521, "Oracle"},     {4317, "OpenTelemetry (OTLP)"},
    };
    size_t i;

    for (i = 0; i < sizeof(ports) / sizeof(ports[0]); i++)
        ck_assert_str_eq(forksafe__hazard_service(FORKSAFE__HAZARD_TCP, ports[i].port, NULL),
                         ports[i].service);
    ck_assert_ptr_null(forksafe__hazard_service(FORKSAFE__HAZARD_TCP, 8125, NULL));
    ck_assert_ptr_null(forksafe__hazard_service(FORKSAFE__HAZARD_TCP, 80, NULL));
    ck_assert_ptr_null(forksafe__hazard_service(FORKSAFE__HAZARD_THREAD, 5432, "x"));
    ck_assert_str_eq(
        forksafe__hazard_service(FORKSAFE__HAZARD_UNIX, 0, "/var/run/postgresql/.s.PGSQL.5432"),
        "PostgreSQL");
    ck_assert_str_eq(
        forksafe__hazard_service(FORKSAFE__HAZARD_UNIX, 0, "/var/run/mysqld/mysqld.sock"), "MySQL");
    ck_assert_str_eq(forksafe__hazard_service(FORKSAFE__HAZARD_UNIX, 0, "/tmp/mysql.sock"),
                     "MySQL");
    ck_assert_str_eq(
        forksafe__hazard_service(FORKSAFE__HAZARD_UNIX, 0, "/run/redis/redis-server.sock"),
        "Redis");
    ck_assert_str_eq(forksafe__hazard_service(FORKSAFE__HAZARD_UNIX, 0, "/tmp/memcached.sock"),
                     "memcached");
    ck_assert_str_eq(forksafe__hazard_service(FORKSAFE__HAZARD_UNIX, 0, "/tmp/mongodb-27017.sock"),
                     "MongoDB");
    ck_assert_ptr_null(forksafe__hazard_service(FORKSAFE__HAZARD_UNIX, 0, "/run/app.sock"));
    ck_assert_ptr_null(
        forksafe__hazard_service(FORKSAFE__HAZARD_UNIX, 0, "/run/.s.PGSQL.5432/app.sock"));
    ck_assert_ptr_null(forksafe__hazard_service(FORKSAFE__HAZARD_UNIX, 0, NULL));
}
END_TEST

static const char *describe(const forksafe__hazard *hazard)
{
    static char line[1024];

    forksafe__hazard_describe(hazard, "worker 3", "master", 4240, line, sizeof(line));
    return line;
}

START_TEST(warning_lines)
{
    forksafe__hazard tcp = {.kind = FORKSAFE__HAZARD_TCP,
                            .fd = 7,
                            .local = "127.0.0.1:40312",
                            .peer = "127.0.0.1:5432",
                            .peer_port = 5432,
                            .service = "PostgreSQL"};
    forksafe__hazard unix_pg = {.kind = FORKSAFE__HAZARD_UNIX,
                                .fd = 9,
                                .peer = "/var/run/postgresql/.s.PGSQL.5432",
                                .service = "PostgreSQL"};
    forksafe__hazard thread = {
        .kind = FORKSAFE__HAZARD_THREAD, .fd = -1, .tid = 4242, .name = "exporter"};
    char small[10] = "untouched";

    ck_assert_str_eq(describe(&tcp),
                     "worker 3 will inherit fd 7: TCP 127.0.0.1:40312 -> 127.0.0.1:5432 "
                     "(PostgreSQL), opened by the master (pid 4240); dispose the pool before "
                     "forking (pre-fork) or in each child (post-fork)");
    ck_assert_str_eq(describe(&unix_pg),
                     "worker 3 will inherit fd 9: UNIX -> /var/run/postgresql/.s.PGSQL.5432 "
                     "(PostgreSQL), opened by the master (pid 4240); dispose the pool before "
                     "forking (pre-fork) or in each child (post-fork)");
    ck_assert_str_eq(describe(&thread),
                     "worker 3 is forked while thread 'exporter' (tid 4242) runs in the master "
                     "(pid 4240): the child has no such thread, and a lock it holds stays locked "
                     "there; stop it before forking (pre-fork) or start it in each child "
                     "(post-fork)");
    tcp.service = NULL;
    snprintf(tcp.peer, sizeof(tcp.peer), "[::1]:8080");
    ck_assert_str_eq(describe(&tcp),
                     "worker 3 will inherit fd 7: TCP 127.0.0.1:40312 -> [::1]:8080, opened by "
                     "the master (pid 4240); close it before forking (pre-fork) or reopen it in "
                     "each child (post-fork)");
    tcp.service = "Kafka";
    ck_assert_ptr_nonnull(strstr(describe(&tcp), "(Kafka), opened by the master (pid 4240); close "
                                                 "the client before forking (pre-fork) or create "
                                                 "it in each child (post-fork)"));
    tcp.service = "AMQP";
    ck_assert_ptr_nonnull(strstr(describe(&tcp), "; close the connection before forking"));
    tcp.service = "OpenTelemetry (OTLP)";
    ck_assert_ptr_nonnull(strstr(describe(&tcp), "; shut the exporter down before forking"));
    snprintf(unix_pg.local, sizeof(unix_pg.local), "/tmp/client.sock");
    unix_pg.service = "Redis";
    ck_assert_ptr_nonnull(strstr(describe(&unix_pg),
                                 "UNIX /tmp/client.sock -> /var/run/postgresql/.s.PGSQL.5432 "
                                 "(Redis), opened by the master (pid 4240); dispose the pool"));

    forksafe__hazard_describe(&thread, "worker 3", "master", 4240, small, sizeof(small));
    ck_assert_str_eq(small, "worker 3 ");
    forksafe__hazard_describe(&thread, "worker 3", "master", 4240, small, 0);
    ck_assert_str_eq(small, "worker 3 ");
}
END_TEST

/* ----------------------------------------------- fingerprint, allocation */

START_TEST(fingerprints_follow_the_set)
{
    forksafe__hazard items[3] = {
        {.kind = FORKSAFE__HAZARD_THREAD, .fd = -1, .tid = 42, .name = "a"},
        {.kind = FORKSAFE__HAZARD_TCP, .fd = 7, .local = "127.0.0.1:1", .peer = "127.0.0.1:2"},
        {.kind = FORKSAFE__HAZARD_UNIX, .fd = 8, .peer = "/run/x.sock"},
    };
    forksafe__hazard swapped[3] = {items[2], items[0], items[1]};
    forksafe__hazard_list list = {items, 3, 3}, other = {swapped, 3, 3}, empty = {NULL, 0, 0};
    forksafe__hazard_list scanned = {0};
    uint64_t fingerprint = forksafe__hazards_fingerprint(&list), before;
    connection c;

    ck_assert_uint_eq(forksafe__hazards_fingerprint(&empty), 0);
    ck_assert_uint_ne(fingerprint, 0);
    ck_assert_uint_eq(forksafe__hazards_fingerprint(&other), fingerprint);
    /* A name the host fills in later is not a change. */
    snprintf(items[0].name, sizeof(items[0].name), "Thread-1 (worker)");
    ck_assert_uint_eq(forksafe__hazards_fingerprint(&list), fingerprint);
    /* Allowed hazards do not count. */
    items[2].allowed = 1;
    ck_assert_uint_ne(forksafe__hazards_fingerprint(&list), fingerprint);
    list.count = 2;
    ck_assert_uint_eq(forksafe__hazards_fingerprint(&list),
                      forksafe__hazards_fingerprint(&(forksafe__hazard_list){items, 3, 3}));
    items[1].fd = 9;
    ck_assert_uint_ne(forksafe__hazards_fingerprint(&list),
                      forksafe__hazards_fingerprint(&(forksafe__hazard_list){swapped + 1, 2, 2}));

    /* A real process: the same set twice, then one socket more. */
    ck_assert_int_eq(tcp_connect(AF_INET, &c), 0);
    scan(NULL, &scanned);
    before = forksafe__hazards_fingerprint(&scanned);
    scan(NULL, &scanned);
    ck_assert_uint_eq(forksafe__hazards_fingerprint(&scanned), before);
    disconnect(&c);
    scan(NULL, &scanned);
    ck_assert_uint_ne(forksafe__hazards_fingerprint(&scanned), before);
    ck_assert_int_eq(tcp_connect(AF_INET, &c), 0);
    scan(NULL, &scanned);
    ck_assert_uint_ne(forksafe__hazards_fingerprint(&scanned), before);
    disconnect(&c);
    forksafe__hazard_list_free(&scanned);
}
END_TEST

#define MANY 12

START_TEST(the_scan_reuses_its_list)
{
    forksafe__hazard_list list = {0};
    connection c[MANY];
    unsigned long attempts;
    size_t capacity;
    int i;

    /* 24 hazards: the list grows past its first 16. */
    for (i = 0; i < MANY; i++)
        ck_assert_int_eq(tcp_connect(AF_INET, &c[i]), 0);
    scan(NULL, &list);
    ck_assert_uint_ge(list.count, 2 * MANY);
    capacity = list.capacity;
    attempts = forksafe__alloc_attempts();
    forksafe__alloc_fail_after(0);
    i = forksafe__hazards_scan(NULL, &list, NULL);
    forksafe__alloc_fail_after(-1);
    ck_assert_int_eq(i, 0);
    ck_assert_uint_eq(forksafe__alloc_attempts(), attempts);
    ck_assert_uint_eq(list.capacity, capacity);
    ck_assert_uint_ge(list.count, 2 * MANY);
    for (i = 0; i < MANY; i++)
        disconnect(&c[i]);
    forksafe__hazard_list_free(&list);
}
END_TEST

START_TEST(the_scan_fails_cleanly_without_memory)
{
    forksafe__hazard_list list = {0};
    connection c[MANY];
    named_thread exporter;
    int i, rc;

    for (i = 0; i < MANY; i++)
        ck_assert_int_eq(tcp_connect(AF_INET, &c[i]), 0);
    start_named(&exporter, "exporter");
    forksafe__alloc_fail_after(0);
    rc = forksafe__hazards_scan(NULL, &list, NULL);
    forksafe__alloc_fail_after(-1);
    ck_assert_int_eq(rc, FORKSAFE__ENOMEM);
    ck_assert_uint_eq(list.count, 0);
    /* The list's first 16 slots, then no more: OUT keeps what was found. */
    forksafe__alloc_fail_after(1);
    rc = forksafe__hazards_scan(NULL, &list, NULL);
    forksafe__alloc_fail_after(-1);
    ck_assert_int_eq(rc, FORKSAFE__ENOMEM);
    ck_assert_uint_eq(list.count, 16);
    ck_assert_ptr_nonnull(find_tid(&list, exporter.tid));
    forksafe__hazard_list_free(&list);
    ck_assert_ptr_null(list.items);
    ck_assert_uint_eq(list.capacity, 0);
    stop_named(&exporter);
    for (i = 0; i < MANY; i++)
        disconnect(&c[i]);
}
END_TEST

/* ---------------------------------------------------------- change check */

/* Whether /proc/self/task still lists TID: a joined thread's task can
 * linger there a moment after pthread_join returns. */
static int task_listed(pid_t tid)
{
    char path[64];

    snprintf(path, sizeof(path), "/proc/self/task/%d", (int)tid);
    return access(path, F_OK) == 0;
}

static void wait_task_gone(pid_t tid)
{
    int tries;

    for (tries = 0; task_listed(tid) && tries < 20000; tries++)
        usleep(500);
    ck_assert_msg(!task_listed(tid), "thread %d still listed after 10 s", (int)tid);
}

/* A test runner may hand down a high descriptor (a shell's 255), and a
 * table with long gaps makes the change check give way to a scan (see
 * a_sparse_table_is_scanned).  The tests below fill the table up to it
 * with descriptors of their own, closed after. */
static int padding[1024];
static int padding_count;

static void pad_table(void)
{
    DIR *listing = opendir("/proc/self/fd");
    struct dirent *entry;
    int open_count = 0, highest = 0;

    ck_assert_ptr_nonnull(listing);
    while ((entry = readdir(listing)) != NULL) {
        int fd = atoi(entry->d_name);
        if (entry->d_name[0] == '.' || fd == dirfd(listing))
            continue;
        open_count++;
        if (fd > highest)
            highest = fd;
    }
    closedir(listing);
    padding_count = 0;
    while ((open_count + padding_count) * 3 + 64 < highest + 1 + 32 && padding_count < 1024) {
        padding[padding_count] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(padding[padding_count], 0);
        padding_count++;
    }
}

static void unpad_table(void)
{
    while (padding_count > 0)
        close(padding[--padding_count]);
}

static void mark_now(forksafe__hazard_list *list, forksafe__hazards_mark *mark)
{
    ck_assert_int_eq(forksafe__hazards_scan(NULL, list, mark), 0);
    ck_assert_int_eq(forksafe__hazards_unchanged(mark), 1);
}

START_TEST(the_change_check_holds_while_nothing_moves)
{
    forksafe__hazard_list list = {0};
    forksafe__hazards_mark mark = {0};
    connection c;

    ck_assert_int_eq(tcp_connect(AF_INET, &c), 0);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0); /* never taken */
    mark_now(&list, &mark);
    ck_assert_uint_gt(mark.fd_count, (size_t)c.accepted);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 1);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 1);
    disconnect(&c);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0);
    forksafe__hazards_mark_free(&mark);
    ck_assert_ptr_null(mark.fds);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0);
    forksafe__hazard_list_free(&list);
}
END_TEST

/* Whatever opens a descriptor takes the lowest free number; whatever closes
 * one below it frees a lower one. */
START_TEST(the_change_check_sees_descriptors_come_and_go)
{
    forksafe__hazard_list list = {0};
    forksafe__hazards_mark mark = {0};
    int low, high;

    low = open("/dev/null", O_RDONLY | O_CLOEXEC);
    high = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(high, 0);
    mark_now(&list, &mark);
    close(low);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0);
    low = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 1); /* a file, as it was */
    /* a file closed and a socket under its number: what a prefork pool
     * does (the child's pipe ends closed, a connection opened) */
    close(low);
    low = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(low, 0);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0);
    close(low);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0); /* a hole now */
    close(high);
    low = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(low, 0);
    mark_now(&list, &mark);
    high = dup(low);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0); /* a new number */
    close(high);
    close(low);
    forksafe__hazards_mark_free(&mark);
    forksafe__hazard_list_free(&list);
}
END_TEST

/* A pool that reconnects: its connection closed and another opened under
 * the same number, every number as it was.  A listing of numbers cannot
 * tell; the socket's identity does. */
START_TEST(the_change_check_sees_a_socket_replaced_under_its_number)
{
    forksafe__hazard_list list = {0};
    forksafe__hazards_mark mark = {0};
    connection first, second;
    int fd;

    ck_assert_int_eq(tcp_connect(AF_INET, &first), 0);
    ck_assert_int_eq(tcp_connect(AF_INET, &second), 0);
    mark_now(&list, &mark);
    fd = dup(second.client);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(dup2(fd, first.client), first.client);
    close(fd);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0);
    /* and a socket replaced by a file */
    mark_now(&list, &mark);
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(dup2(fd, first.client), first.client);
    close(fd);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0);
    disconnect(&first);
    disconnect(&second);
    forksafe__hazards_mark_free(&mark);
    forksafe__hazard_list_free(&list);
}
END_TEST

START_TEST(the_change_check_sees_threads_come_and_go)
{
    forksafe__hazard_list list = {0};
    forksafe__hazards_mark mark = {0};
    named_thread exporter;
    int pipe_fds[4];

    /* The thread's pipes are opened first, so its start and stop move no
     * descriptor number: the thread alone must be seen. */
    ck_assert_int_eq(pipe2(pipe_fds, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(pipe_fds + 2, O_CLOEXEC), 0);
    mark_now(&list, &mark);
    exporter.name = "exporter";
    exporter.ready[0] = pipe_fds[0];
    exporter.ready[1] = pipe_fds[1];
    exporter.stop[0] = pipe_fds[2];
    exporter.stop[1] = pipe_fds[3];
    {
        char byte;
        ck_assert_int_eq(pthread_create(&exporter.thread, NULL, run_named, &exporter), 0);
        ck_assert_int_eq(read(exporter.ready[0], &byte, 1), 1);
    }
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0);
    ck_assert_int_eq(write(exporter.stop[1], "x", 1), 1);
    ck_assert_int_eq(pthread_join(exporter.thread, NULL), 0);
    wait_task_gone(exporter.tid);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 1);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    close(pipe_fds[2]);
    close(pipe_fds[3]);
    forksafe__hazards_mark_free(&mark);
    forksafe__hazard_list_free(&list);
}
END_TEST

/* A pool's way: a pipe opened for a child, a connection opened above it,
 * the pipe closed; the lowest free number is where it was. */
START_TEST(the_change_check_sees_a_socket_above_a_closed_one)
{
    forksafe__hazard_list list = {0};
    forksafe__hazards_mark mark = {0};
    int transient, above;

    mark_now(&list, &mark);
    transient = open("/dev/null", O_RDONLY | O_CLOEXEC);
    above = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_gt(above, transient);
    close(transient);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0);
    close(above);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 1);
    forksafe__hazards_mark_free(&mark);
    forksafe__hazard_list_free(&list);
}
END_TEST

/* One descriptor far above the rest: checking every gap would cost more
 * than the scan's listing, so the check says "look again". */
START_TEST(a_sparse_table_is_scanned)
{
    forksafe__hazard_list list = {0};
    forksafe__hazards_mark mark = {0};
    int high;

    unpad_table();
    high = dup2(0, 900);

    ck_assert_int_eq(high, 900);
    ck_assert_int_eq(forksafe__hazards_scan(NULL, &list, &mark), 0);
    ck_assert_uint_gt(mark.fd_count, 900);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0);
    close(high);
    forksafe__hazards_mark_free(&mark);
    forksafe__hazard_list_free(&list);
}
END_TEST

/* A scan that ran out of memory took no mark: the next look is a full one. */
START_TEST(a_failed_scan_marks_nothing)
{
    forksafe__hazard_list list = {0};
    forksafe__hazards_mark mark = {0};
    connection c;

    ck_assert_int_eq(tcp_connect(AF_INET, &c), 0);
    forksafe__alloc_fail_after(0);
    ck_assert_int_eq(forksafe__hazards_scan(NULL, &list, &mark), FORKSAFE__ENOMEM);
    forksafe__alloc_fail_after(-1);
    ck_assert_int_eq(forksafe__hazards_unchanged(&mark), 0);
    mark_now(&list, &mark);
    disconnect(&c);
    forksafe__hazards_mark_free(&mark);
    forksafe__hazard_list_free(&list);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("hazard");
    TCase *sockets = tcase_create("sockets");
    TCase *threads = tcase_create("threads");
    TCase *rules = tcase_create("rules");
    TCase *report = tcase_create("report");
    TCase *change = tcase_create("change check");

    tcase_add_test(sockets, tcp_ipv4_connections_are_found);
    tcase_add_test(sockets, tcp_ipv6_connections_are_found);
    tcase_add_test(sockets, udp_and_socketpairs_are_not_hazards);
    tcase_add_test(sockets, stdio_and_own_fds_are_left_out);
    tcase_add_test(sockets, unix_connections_are_found_by_peer_path);
    tcase_add_test(sockets, abstract_unix_names_are_written_with_an_at);
    tcase_add_test(threads, threads_are_found_by_name);
    tcase_add_test(threads, the_forking_thread_is_the_calling_one);
    tcase_add_test(rules, rules_parse);
    tcase_add_test(rules, rules_parse_fails_cleanly_without_memory);
    tcase_add_test(rules, rules_match);
    tcase_add_test(rules, the_scan_marks_what_rules_allow);
    tcase_add_test(report, services_by_port_and_path);
    tcase_add_test(report, warning_lines);
    tcase_add_test(report, fingerprints_follow_the_set);
    tcase_add_test(report, the_scan_reuses_its_list);
    tcase_add_test(report, the_scan_fails_cleanly_without_memory);
    tcase_add_test(change, the_change_check_holds_while_nothing_moves);
    tcase_add_test(change, the_change_check_sees_descriptors_come_and_go);
    tcase_add_test(change, the_change_check_sees_a_socket_replaced_under_its_number);
    tcase_add_test(change, the_change_check_sees_threads_come_and_go);
    tcase_add_test(change, a_failed_scan_marks_nothing);
    tcase_add_test(change, a_sparse_table_is_scanned);
    tcase_add_test(change, the_change_check_sees_a_socket_above_a_closed_one);
    suite_add_tcase(suite, sockets);
    suite_add_tcase(suite, threads);
    suite_add_tcase(suite, rules);
    suite_add_tcase(suite, report);
    tcase_add_checked_fixture(change, pad_table, unpad_table);
    suite_add_tcase(suite, change);
    return suite;
}
