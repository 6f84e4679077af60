/*
 * wake.c - waking uWSGI's master at once instead of at its next cycle (up
 * to a second later): a descriptor in the master's event queue that any
 * process of the instance writes to (after each fork, so post-fork-parent
 * follows within a millisecond; when a child is ready), and a pidfd per
 * ready child, which the kernel makes readable when that child dies, so
 * that uWSGI reaps and replaces it at once (forksafe-fast-respawn).
 *
 * uWSGI's master waits in event_queue_wait() for up to a second when no
 * child has died; an event on a descriptor it does not know makes it go
 * round its loop once (uwsgi_master_manage_events() ignores it), and the
 * top of the loop runs forksafe's master_cycle (which drains the wake-up,
 * then scans the children) before uWSGI's own waitpid().  Nothing is
 * written while nothing forks, starts or dies: an idle master stays idle.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "glue.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

static int wake_fd = -1;
static int wake_queued; /* wake_fd is in uwsgi.master_queue */
static int pidfd_missing;

/* Before the first fork, so that every child inherits the descriptor it
 * wakes the master with. */
void glue_wake_setup(void)
{
    if (wake_fd >= 0)
        return;
    wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd < 0)
        uwsgi_log("[forksafe] eventfd(): %s: post-fork-parent comes at the master's next cycle "
                  "(up to a second after the fork)\n",
                  forksafe__strerror(errno));
}

/* Async-signal-safe.  A full counter (EAGAIN) already wakes the master. */
FORKSAFE__CHILD_RUNS void glue_wake_master(void)
{
    uint64_t one = 1;
    int saved = errno;

    if (wake_fd >= 0 && write(wake_fd, &one, sizeof(one)) < 0) {
        /* Nothing to do: a wake-up is a hint, the next cycle comes anyway. */
    }
    errno = saved;
}

/* In the master, at the top of its loop: uWSGI creates its event queue in
 * master_loop(), after the first workers are forked, so the descriptor
 * joins it at the first cycle. */
void glue_wake_drain(void)
{
    uint64_t count;

    if (wake_fd < 0 || uwsgi.master_queue < 0)
        return;
    if (!wake_queued) {
        if (event_queue_add_fd_read(uwsgi.master_queue, wake_fd) < 0) {
            uwsgi_log("[forksafe] cannot add forksafe's wake-up to the master's event queue: "
                      "post-fork-parent comes at the master's next cycle\n");
            close(wake_fd);
            wake_fd = -1;
            return;
        }
        wake_queued = 1;
    }
    while (read(wake_fd, &count, sizeof(count)) > 0)
        ;
}

/* ------------------------------------------------------------ deaths */

/* The master watches for PID's death with a pidfd in its event queue;
 * -1 when it cannot (the kernel is older than 5.3, or the queue is not
 * there yet). */
int glue_watch_death(pid_t pid)
{
    int fd;

    if (pidfd_missing || uwsgi.master_queue < 0)
        return -1;
    fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) {
        if (errno == ENOSYS) {
            pidfd_missing = 1;
            uwsgi_log("[forksafe] this kernel has no pidfd_open() (Linux 5.3): a dead child is "
                      "replaced at the master's next cycle, as without forksafe\n");
        }
        return -1;
    }
    if (event_queue_add_fd_read(uwsgi.master_queue, fd) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Out of the queue before the close: a child forked since holds a copy of
 * the descriptor, which would keep a closed one's registration alive and
 * the master spinning on a death long reaped. */
void glue_unwatch_death(int fd)
{
    if (fd < 0)
        return;
    if (uwsgi.master_queue >= 0)
        event_queue_del_fd(uwsgi.master_queue, fd, event_queue_read());
    close(fd);
}
