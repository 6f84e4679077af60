/*
 * hazards.c - what a worker, mule or spooler would inherit from the master
 * and must not share (lib/hazard_watch.c looks at each pre-fork, and again
 * after its handlers ran, so a handler that disposes a pool clears its own
 * hazard): said (forksafe-hazards = warn), or the fork refused (fail).
 *
 * uWSGI's own threads are not hazards: the master's calls to
 * pthread_create() go through the executable's GOT (lib/intercept.c), so
 * each thread uWSGI starts (a cache sweeper, the threaded logger, the
 * memory collector of reload-on-rss) registers itself as it starts, while
 * a thread an application or a library starts (through libpython or its
 * own shared object) does not.  uWSGI's sockets need no such list: its
 * sockets are listening ones or unnamed socketpairs, which are not hazards.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "glue.h"

/* -------------------------------------------------------- uWSGI's threads */

static int (*libc_pthread_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

struct own_start {
    void *(*routine)(void *);
    void *argument;
    sem_t registered;
};

static void *start_own_thread(void *data)
{
    struct own_start *start = data;
    void *(*routine)(void *) = start->routine;
    void *argument = start->argument;

    forksafe__hazard_watch_own_this_thread(&glue.hazards);
    sem_post(&start->registered); /* START is the creator's from here on */
    return routine(argument);
}

/* Starts a thread of uWSGI's or forksafe's, returning once it is
 * registered: a fork right after must not find it unknown. */
static int create_own_thread(int (*create)(pthread_t *, const pthread_attr_t *, void *(*)(void *),
                                           void *),
                             pthread_t *thread, const pthread_attr_t *attributes,
                             void *(*routine)(void *), void *argument)
{
    struct own_start start = {routine, argument, {{0}}};
    int rc;

    if (sem_init(&start.registered, 0, 0) != 0)
        return create(thread, attributes, routine, argument);
    rc = create(thread, attributes, start_own_thread, &start);
    if (rc == 0)
        while (sem_wait(&start.registered) != 0 && errno == EINTR)
            ;
    sem_destroy(&start.registered);
    return rc;
}

static int watched_pthread_create(pthread_t *thread, const pthread_attr_t *attributes,
                                  void *(*routine)(void *), void *argument)
{
    return create_own_thread(libc_pthread_create, thread, attributes, routine, argument);
}

int glue_start_own_thread(pthread_t *thread, void *(*routine)(void *), void *argument)
{
    return create_own_thread(pthread_create, thread, NULL, routine, argument);
}

void glue_watch_uwsgi_threads(void)
{
    int replaced;

    if (glue.hazards.mode == FORKSAFE__HAZARDS_OFF || libc_pthread_create)
        return;
    /* Taken before the GOT changes, as reasons.c does for kill(). */
    libc_pthread_create = pthread_create;
    replaced = forksafe__intercept_call("pthread_create", (void *)watched_pthread_create);
    if (replaced < 0)
        uwsgi_log("[forksafe] cannot tell uWSGI's own threads apart (%s): a thread it starts "
                  "in the master may be reported as a fork hazard; allow it with "
                  "forksafe-hazard-allow = thread:NAME\n",
                  forksafe__strerror(replaced));
}

/* --------------------------------------------------------------- the fork */

static int any_child_alive(void)
{
    struct uwsgi_spooler *spooler;
    int i;

    for (i = 1; i <= uwsgi.numproc; i++)
        if (uwsgi.workers[i].pid > 0)
            return 1;
    for (i = 0; i < uwsgi.mules_cnt; i++)
        if (uwsgi.mules[i].pid > 0)
            return 1;
    for (spooler = uwsgi.spoolers; spooler; spooler = spooler->next)
        if (spooler->pid > 0)
            return 1;
    return 0;
}

void glue_refuse_hazards(void)
{
    int count = glue.hazards_found;

    if (count == 0 || glue.hazards.mode != FORKSAFE__HAZARDS_FAIL || !glue_is_master())
        return;
    if (!any_child_alive()) {
        /* The deploy fails here, loudly (the pre-fork just said each
         * hazard: the first fork of a generation says them all), before
         * anything shares them. */
        uwsgi_log("[forksafe] forksafe-hazards = fail: the master refuses to fork with %d "
                  "hazard%s (above); exiting\n",
                  count, count == 1 ? "" : "s");
        exit(1);
    }
    /* A hazard that appeared while children run: this child stops as it
     * starts (child.c), and so does the instance. */
    if (!glue.hazard_refused) {
        uwsgi_log("[forksafe] forksafe-hazards = fail: %d hazard%s appeared (above); stopping "
                  "the instance\n",
                  count, count == 1 ? "" : "s");
        glue_mark_fatal();
        kill(getpid(), SIGINT);
    }
    glue.hazard_refused = 1;
}
