/*
 * instance.c - whether the instance runs, reloads or stops, as the master
 * learns it (signals, FIFO commands, touch files, the Emperor), shared with
 * every child so that worker-exit can say why.
 */
#include <string.h>

#include "glue.h"

long long glue_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void glue_set_instance_state(int reload)
{
    glue.shared_state->instance_state = reload ? INSTANCE_RELOADING : INSTANCE_STOPPING;
    glue.shared_state->state_changed_ns = forksafe__realtime_ns();
}

void glue_record_instance_state(int signum)
{
    int reload;

    switch (signum) {
    case SIGHUP:
        reload = 1;
        break;
    case SIGTERM:
        reload = !uwsgi.die_on_term;
        break;
    case SIGQUIT:
        reload = uwsgi.die_on_term;
        break;
    default:
        reload = 0;
        break;
    }
    glue_set_instance_state(reload);
}

void glue_note_instance_status(void)
{
    if (glue.shared_state->instance_state != INSTANCE_RUNNING)
        return;
    if (uwsgi.status.gracefully_reloading || uwsgi.status.brutally_reloading)
        glue_set_instance_state(1);
    else if (uwsgi.status.gracefully_destroying || uwsgi.status.brutally_destroying)
        glue_set_instance_state(0);
}

/* In the master: a stop that a handler caused must not look like an
 * operator's Ctrl-C to a supervisor.  uWSGI ends a dying instance with
 * exit(dying_for_need_app ? UWSGI_FAILED_APP_CODE : 0), the status it uses
 * when the app cannot work, which is what a fatal handler failure means. */
void glue_mark_fatal(void)
{
    /* An operator's stop was already under way: it stays a normal stop. */
    if (!glue.shared_state || glue.shared_state->instance_state == INSTANCE_STOPPING ||
        glue.startup_stop)
        return;
    glue.shared_state->fatal = 1;
    if (glue.self.kind == FORKSAFE__MASTER)
        uwsgi.status.dying_for_need_app = 1;
}

/* A vassal's Emperor stops or reloads it through a pipe, not a signal:
 * the master calls kill_them_all() / gracefully_kill_them_all() /
 * grace_them_all() itself, and its workers can exit before forksafe's next
 * master cycle notices.  uWSGI runs the emperor-stop/-reload/-lost hooks in
 * the master right before, so the reason is in shared memory first. */
static int exit_reason_hook(char *reason)
{
    if (!glue.shared_state || !glue_is_master())
        return 0;
    glue_set_instance_state(strcmp(reason, "reload") == 0);
    return 0;
}

void glue_hook_emperor_messages(void)
{
    if (!uwsgi.has_emperor)
        return;
    uwsgi_register_hook("forksafe-exit-reason", exit_reason_hook);
    /* uwsgi_hooks_run() edits the string in place: heap copies. */
    uwsgi_string_new_list(&uwsgi.hook_emperor_stop, uwsgi_str("forksafe-exit-reason:shutdown"));
    uwsgi_string_new_list(&uwsgi.hook_emperor_reload, uwsgi_str("forksafe-exit-reason:reload"));
    uwsgi_string_new_list(&uwsgi.hook_emperor_lost, uwsgi_str("forksafe-exit-reason:shutdown"));
}
