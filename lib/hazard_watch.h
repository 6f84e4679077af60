/*
 * hazard_watch.h - the hazard policy every host shares (lib/hazard_watch.c):
 * off, warn or fail; the allow rules; the threads that are
 * the host's own; and what was last said, so that a hazard is said once per
 * generation and again only when the set changes.  What the host does on
 * fail (refuse to fork, stop) is the host's: it knows its processes.
 *
 * "Said once" is per child: each worker (mule, spooler) hears of what it
 * inherits once per generation, so a respawn says nothing new, and a
 * worker forked after a connection was opened says so.
 */
#ifndef FORKSAFE_HAZARD_WATCH_H
#define FORKSAFE_HAZARD_WATCH_H

#include "hazard.h"

#include "forksafe_internal.h"

typedef enum forksafe__hazards_mode {
    FORKSAFE__HAZARDS_OFF,
    FORKSAFE__HAZARDS_WARN,
    FORKSAFE__HAZARDS_FAIL
} forksafe__hazards_mode;

/* Threads a host starts before its first fork; more are not expected (a
 * thread registered past this is simply not known as the host's). */
#define FORKSAFE__HAZARD_OWN_THREADS 64

typedef struct forksafe__hazard_watch {
    forksafe__hazards_mode mode;
    forksafe__hazard_rule *rules;
    size_t rule_count;
    /* Registered by the threads themselves, as they start: written with
     * atomic operations, read by the forking thread. */
    pid_t own_tids[FORKSAFE__HAZARD_OWN_THREADS];
    unsigned own_tid_count;
    forksafe__hazard_list found; /* the last scan's, reused */
    /* What found was scanned from (lib/hazard.c's change check compares
     * it), in which generation, with the own threads then known: a full
     * scan is made once per generation and whenever the check fails. */
    int scanned;
    forksafe__hazards_mark mark;
    int mark_generation;
    unsigned mark_own_threads;
    unsigned mark_claims_version;
    int unallowed;
    /* What each child was last told: one record per child slot. */
    struct forksafe__hazard_said {
        int kind, id, generation;
        uint64_t fingerprint;
    } * said;
    size_t said_count;
    int proc_unreadable_said;
} forksafe__hazard_watch;

/* "off", "warn", "fail" -> the mode, or -1. */
int forksafe__hazards_mode_from_name(const char *name);

/* Adds the allow rule TEXT (written at SOURCE:LINE).  Returns 0,
 * FORKSAFE__EINVAL with ERR set, or FORKSAFE__ENOMEM. */
int forksafe__hazard_watch_allow(forksafe__hazard_watch *watch, const char *text,
                                 const char *source, int line, forksafe__error *err);

/* The calling thread is the host's own: never a hazard.  Safe to call from
 * any thread, concurrently with a scan. */
void forksafe__hazard_watch_own_this_thread(forksafe__hazard_watch *watch);

/* Dispatches OCC, a pre-fork in the calling process, with the hazards the
 * child is about to inherit in its payload ("hazards"): scanned before the
 * handlers run, and again after if any ran (one may have closed what it
 * was told about).  Then logs through CTX one line per hazard that no
 * rule allows, unless that child was told of the same set already in this
 * generation, and counts them in the stats.  Returns what
 * forksafe__dispatch returns; *HAZARDS gets how many hazards no rule
 * allows (0 when off), which stay in watch->found until the next scan.
 * Any other occurrence (or mode off) is dispatched as it is. */
int forksafe__hazards_dispatch_pre_fork(forksafe__hazard_watch *watch, forksafe__context *ctx,
                                        forksafe__occurrence *occ, int *hazards);

void forksafe__hazard_watch_free(forksafe__hazard_watch *watch);

/* Names the threads of LIST that Python's threading module knows by their
 * threading name (lib/python_threads.c); does nothing without Python, or
 * when no thread is in LIST. */
void forksafe__python_name_threads(forksafe__hazard_list *list);

#endif /* FORKSAFE_HAZARD_WATCH_H */
