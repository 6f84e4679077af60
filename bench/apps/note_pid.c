/*
 * note_pid.c - the native (dl:) post-fork handler of the spawn benchmark:
 * it does what the Python hooks there do, note the pid, so that what is
 * measured is forksafe's own cost of delivering the event.
 */
#include <forksafe.h>

FORKSAFE_HANDLER_ABI_DECLARE();

int bench_note_pid(const forksafe_event *ev);

static volatile pid_t last_pid;

int bench_note_pid(const forksafe_event *ev)
{
    last_pid = forksafe_event_pid(ev);
    return 0;
}
