/*
 * hazard.h - fork hazards: what a child is about to inherit from the
 * process that forks it and must not share (lib/hazard.c finds them,
 * lib/hazard_rule.c holds the allow rules, lib/hazard_report.c words the
 * warnings).  Every host (the uWSGI glue, the gunicorn and Celery
 * adapters through the host API) scans in the parent just before a fork
 * and reports what it found.
 *
 * Two kinds are found, each cheaply and without false alarms:
 * - threads other than the forking one and those the host declares its
 *   own: the child gets no copy of them, and a lock one of them holds
 *   stays locked in the child forever;
 * - connected stream sockets (TCP over IPv4/IPv6, UNIX stream and
 *   seqpacket with a peer address) other than stdin/out/err and those the
 *   host declares its own: parent and children would share one session.
 *   Listening sockets, unnamed UNIX sockets (socketpairs: a server's
 *   internal plumbing), datagram sockets and pipes are not hazards.
 *
 * Sockets are found from this process's own descriptors
 * (/proc/self/fd, then getsockopt/getsockname/getpeername on each socket),
 * never by reading /proc/net/tcp: the system's whole socket table grows
 * with the host's traffic, this process's descriptors do not.
 */
#ifndef FORKSAFE_HAZARD_H
#define FORKSAFE_HAZARD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "forksafe_base.h"

typedef enum forksafe__hazard_kind {
    FORKSAFE__HAZARD_THREAD,
    FORKSAFE__HAZARD_TCP, /* TCP over IPv4 or IPv6 */
    FORKSAFE__HAZARD_UNIX /* a UNIX stream or seqpacket socket connected to a named peer */
} forksafe__hazard_kind;

#define FORKSAFE__HAZARD_NAME_MAX 64
/* "[ffff:...]:65535" or a UNIX path (sun_path is 108 bytes; an abstract
 * name is written "@name"). */
#define FORKSAFE__HAZARD_ADDRESS_MAX 112

/* Who took charge of a hazard: a handler's name, "recipe:sqlalchemy". */
#define FORKSAFE__HAZARD_BY_MAX 48

typedef struct forksafe__hazard {
    forksafe__hazard_kind kind;
    int fd;    /* sockets; -1 for a thread */
    pid_t tid; /* threads; 0 for a socket */
    /* A thread's name: /proc/self/task/TID/comm, or the host's better
     * name for it (Python's threading name) set after the scan. */
    char name[FORKSAFE__HAZARD_NAME_MAX];
    /* TCP: "127.0.0.1:40312" / "[::1]:40312"; UNIX: this end's name, often
     * "" (a client socket is not bound). */
    char local[FORKSAFE__HAZARD_ADDRESS_MAX];
    /* TCP: "127.0.0.1:5432"; UNIX: the peer's path, e.g.
     * "/var/run/postgresql/.s.PGSQL.5432", or "@name" if abstract. */
    char peer[FORKSAFE__HAZARD_ADDRESS_MAX];
    int peer_port;       /* TCP; 0 for UNIX and threads */
    const char *service; /* "PostgreSQL", "Redis", ... (static), or NULL */
    int allowed;         /* an allow rule matches: counted, not warned about */
    /* A handler took charge of it (lib/hazard_claim.c): allowed too, and
     * who, e.g. "recipe:sqlalchemy"; "" if none. */
    char handled_by[FORKSAFE__HAZARD_BY_MAX];
} forksafe__hazard;

typedef struct forksafe__hazard_list {
    forksafe__hazard *items;
    size_t count;
    size_t capacity;
} forksafe__hazard_list;

/* An allow rule: "thread:GLOB" (the thread's name), "tcp:HOST:PORT"
 * (globs each; HOST is the peer's address as written in the hazard, an
 * IPv6 one without brackets, "[::1]" accepted too; split at the last colon,
 * so "tcp:::1:6379" and "tcp:*:5432"; PORT is a number without a leading
 * zero or a glob of digits), "unix:GLOB" (the peer's path, "@name" if
 * abstract; a glob without a slash is matched against the file name alone,
 * "unix:.s.PGSQL.*", and a * crosses slashes).  Globs are fnmatch(3)'s. */
typedef struct forksafe__hazard_rule {
    forksafe__hazard_kind kind;
    char *pattern; /* thread or unix: the glob; tcp: the host glob */
    char *port;    /* tcp: the port glob; NULL otherwise */
} forksafe__hazard_rule;

/* What a host excludes from a scan: its own threads and descriptors, and
 * the allow rules. */
typedef struct forksafe__hazard_scope {
    const pid_t *own_tids;
    size_t own_tid_count;
    const int *own_fds;
    size_t own_fd_count;
    const forksafe__hazard_rule *rules;
    size_t rule_count;
} forksafe__hazard_scope;

/* Parses one allow rule (TEXT as written after "forksafe-hazard-allow =";
 * blanks around it are ignored).  On a bad rule returns FORKSAFE__EINVAL
 * and sets ERR (SOURCE, LINE: where the rule was written; ERR may be NULL)
 * to what is wrong, naming the accepted forms; FORKSAFE__ENOMEM likewise.
 * On failure RULE is left empty (freeing it does nothing). */
int forksafe__hazard_rule_parse(const char *text, const char *source, int line,
                                forksafe__hazard_rule *rule, forksafe__error *err);
/* Frees RULE's strings and empties it; safe to call twice. */
void forksafe__hazard_rule_free(forksafe__hazard_rule *rule);

/* 1 if RULE matches HAZARD (only a rule of the hazard's kind can), else 0. */
int forksafe__hazard_rule_matches(const forksafe__hazard_rule *rule,
                                  const forksafe__hazard *hazard);

/* What a scan saw that a later, cheaper look can compare (the change
 * check, forksafe__hazards_unchanged): which threads there were, the
 * lowest free descriptor number, and what each descriptor number up to the
 * highest open one was: closed, not a socket, or which socket.  {0} at
 * first; reused across scans. */
typedef struct forksafe__hazards_mark {
    uint64_t threads;   /* a hash of every tid listed */
    int lowest_free_fd; /* what the next open() gets */
    uint64_t *fds;      /* per descriptor number (lib/hazard.c's states) */
    size_t fd_count;    /* the highest open number + 1 */
    size_t open_count;  /* how many of them were open */
    size_t fd_capacity;
} forksafe__hazards_mark;

/* Scans the calling process: OUT gets every hazard (threads first, by tid;
 * then sockets, by fd), each with `allowed` set from SCOPE's rules (SCOPE
 * may be NULL: nothing excluded, no rules).  OUT ({0} at first) is emptied
 * first and may be reused across scans (no allocation once it has grown).
 * MARK (may be NULL) gets what forksafe__hazards_unchanged compares; after
 * a failed scan it matches nothing.  Returns 0, FORKSAFE__ENOMEM, or
 * FORKSAFE__EIO when /proc cannot be read (after either, OUT holds what
 * was found before). */
int forksafe__hazards_scan(const forksafe__hazard_scope *scope, forksafe__hazard_list *out,
                           forksafe__hazards_mark *mark);

/* Frees LIST's items and empties it. */
void forksafe__hazard_list_free(forksafe__hazard_list *list);

/* 1 if a scan now would find what the one that took MARK found, for a
 * fraction of its cost: the same threads (one listing of /proc/self/task),
 * the same lowest free descriptor, under each number up to the highest
 * then open the same thing as then (closed, not a socket, the same socket:
 * one getsockopt each, no listing of /proc/self/fd), and the next 32
 * numbers still free.  Not seen: a descriptor opened further above than
 * that, with everything opened below it since closed again (or put there
 * with dup2()), and one closed above the soft RLIMIT_NOFILE (where none
 * can be opened).  0 on any difference, when /proc cannot be read, and
 * when the numbers open then were few and far apart (checking each gap
 * would cost more than a scan). */
int forksafe__hazards_unchanged(const forksafe__hazards_mark *mark);

/* Frees MARK's descriptor list and empties it. */
void forksafe__hazards_mark_free(forksafe__hazards_mark *mark);

/* The service at a TCP port or UNIX path ("PostgreSQL" for 5432 or a path
 * whose file name is ".s.PGSQL.*"), or NULL. */
const char *forksafe__hazard_service(forksafe__hazard_kind kind, int port, const char *path);

/* One line (no newline) saying what CHILD (e.g. "worker 3") is about to
 * inherit from the PARENT_KIND process (e.g. "master") PARENT_PID, and the
 * usual fix, e.g.:
 *   worker 3 will inherit fd 7: TCP 127.0.0.1:40312 -> 127.0.0.1:5432
 *   (PostgreSQL), opened by the master (pid 4240); dispose the pool before
 *   forking (pre-fork) or in each child (post-fork)
 *   worker 3 is forked while thread 'exporter' (tid 4242) runs in the
 *   master (pid 4240): the child has no such thread, and a lock it holds
 *   stays locked there; stop it before forking (pre-fork) or start it in
 *   each child (post-fork)
 * The fix fits what a client of the service holds: "dispose the pool" for
 * databases and caches, the client, connection or exporter for the others
 * (lib/hazard_report.c), and "close it before forking (pre-fork) or reopen
 * it in each child (post-fork)" when the service is not known.  A UNIX
 * socket's line shows "UNIX -> PEER" when its own end has no name.
 * Truncated to SIZE. */
void forksafe__hazard_describe(const forksafe__hazard *hazard, const char *child,
                               const char *parent_kind, pid_t parent_pid, char *buf, size_t size);

/* A fingerprint of LIST's hazards that are not allowed (kind, fd or tid,
 * addresses; not thread names, which a host may fill in later), so a host
 * can say them again only when the set changes.  The same set gives the
 * same fingerprint in any order; no hazard (or all allowed) gives 0. */
uint64_t forksafe__hazards_fingerprint(const forksafe__hazard_list *list);

/* LIST as the pre-fork payload's "hazards": a new JSON array of objects
 * {"kind": "thread", "tid", "name", "allowed"} or {"kind": "tcp"|"unix",
 * "fd", "local", "peer", "service" (null if unknown), "allowed"}; NULL
 * when out of memory. */
json_t *forksafe__hazards_json(const forksafe__hazard_list *list);

/* ------------------------------------------------------------- claims */

/* Records that BY (a handler's name) takes charge of the socket FD in this
 * process: each child drops it.  Returns 0, FORKSAFE__EINVAL (FD is not a
 * socket) or FORKSAFE__ENOMEM (too many claims). */
int forksafe__hazard_claim(int fd, const char *by);

/* Forgets FD's claim (its connection is being closed). */
void forksafe__hazard_unclaim(int fd);

/* Who claimed FD, if FD is still the socket that was claimed; else NULL. */
const char *forksafe__hazard_claimed_by(int fd);

/* Changes with every claim and unclaim: a scan made under another version
 * is made again. */
unsigned forksafe__hazard_claims_version(void);

#endif /* FORKSAFE_HAZARD_H */
