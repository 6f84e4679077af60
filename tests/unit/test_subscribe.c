/*
 * test_subscribe.c - parsing forksafe-subscribe values and the [forksafe]
 * section: what is accepted, and the exact sentence for what is not.
 */
#include <string.h>

#include "unit.h"

static forksafe__context ctx;

static void setup(void)
{
    ck_assert_int_eq(forksafe__context_init(&ctx, NULL, NULL), 0);
}

static void teardown(void)
{
    forksafe__context_free(&ctx);
}

#define EV(type) (1u << (type))

START_TEST(full_subscription)
{
    forksafe__error err = {0};
    const forksafe__subscription *sub;

    ck_assert_int_eq(forksafe__subscribe(&ctx,
                                         "  post-fork,worker-exit kind=worker,mule id=2 once "
                                         "on-error=exit exec:echo  hi  there  ",
                                         "uwsgi.ini", 7, &err),
                     0);
    ck_assert_uint_eq(ctx.subscription_count, 1);
    sub = &ctx.subscriptions[0];
    ck_assert_uint_eq(sub->events, EV(FORKSAFE_POST_FORK) | EV(FORKSAFE_WORKER_EXIT));
    ck_assert_uint_eq(sub->kinds, (1u << FORKSAFE__WORKER) | (1u << FORKSAFE__MULE));
    ck_assert_int_eq(sub->id, 2);
    ck_assert_int_eq(sub->once, 1);
    ck_assert_int_eq(sub->on_error, FORKSAFE__ON_ERROR_EXIT);
    /* The handler is the rest of the line: inner spaces kept, the end trimmed. */
    ck_assert_str_eq(sub->spec, "exec:echo  hi  there");
    ck_assert_str_eq(sub->name, "exec:echo  hi  there");
    ck_assert_str_eq(sub->source, "uwsgi.ini");
    ck_assert_int_eq(sub->line, 7);
    ck_assert_uint_eq(sub->index, 0);
    ck_assert_ptr_eq(sub->backend, forksafe__exec_backend());
    ck_assert(!err.set);
}
END_TEST

START_TEST(defaults_and_order)
{
    forksafe__error err = {0};

    ck_assert_int_eq(forksafe__subscribe(&ctx, "pre-fork dl:/x.so:f", "a", 1, &err), 0);
    ck_assert_int_eq(forksafe__subscribe(&ctx, "worker-ready symbol:g", "a", 2, &err), 0);
    ck_assert_uint_eq(ctx.subscription_count, 2);
    ck_assert_uint_eq(ctx.subscriptions[0].kinds, 0);
    ck_assert_int_eq(ctx.subscriptions[0].id, 0);
    ck_assert_int_eq(ctx.subscriptions[0].once, 0);
    ck_assert_int_eq(ctx.subscriptions[0].on_error, FORKSAFE__ON_ERROR_INHERIT);
    ck_assert_uint_eq(ctx.subscriptions[1].index, 1);
    ck_assert_ptr_eq(ctx.subscriptions[1].backend, forksafe__symbol_backend());
}
END_TEST

START_TEST(star_means_every_event_the_filter_allows)
{
    forksafe__error err = {0};

    ck_assert_int_eq(forksafe__subscribe(&ctx, "* exec:true", "a", 1, &err), 0);
    ck_assert_uint_eq(ctx.subscriptions[0].events, (1u << FORKSAFE_EVENT_COUNT) - 1);
    ck_assert_int_eq(forksafe__subscribe(&ctx, "* kind=master exec:true", "a", 2, &err), 0);
    ck_assert_uint_eq(ctx.subscriptions[1].events,
                      EV(FORKSAFE_MASTER_START) | EV(FORKSAFE_PRE_FORK) |
                          EV(FORKSAFE_POST_FORK_PARENT) | EV(FORKSAFE_CHILD_DEATH) |
                          EV(FORKSAFE_MASTER_EXIT) | EV(FORKSAFE_GENERATION_READY));
    ck_assert_int_eq(forksafe__subscribe(&ctx, "* id=1 exec:true", "a", 3, &err), 0);
    ck_assert_uint_eq(ctx.subscriptions[2].events, EV(FORKSAFE_POST_FORK) |
                                                       EV(FORKSAFE_WORKER_READY) |
                                                       EV(FORKSAFE_WORKER_EXIT));
    ck_assert_int_eq(forksafe__subscribe(&ctx, "*,post-fork kind=spooler exec:true", "a", 4, &err),
                     0);
    ck_assert_uint_eq(ctx.subscriptions[3].events,
                      EV(FORKSAFE_POST_FORK) | EV(FORKSAFE_WORKER_EXIT));
}
END_TEST

START_TEST(long_specs_get_a_short_name)
{
    forksafe__error err = {0};
    char text[200];

    memset(text, 0, sizeof(text));
    memcpy(text, "post-fork exec:", 15);
    memset(text + 15, 'x', 100);
    ck_assert_int_eq(forksafe__subscribe(&ctx, text, "a", 1, &err), 0);
    ck_assert_uint_eq(strlen(ctx.subscriptions[0].spec), 105);
    ck_assert_uint_eq(strlen(ctx.subscriptions[0].name), 60);
    ck_assert_str_eq(ctx.subscriptions[0].name + 57, "...");
}
END_TEST

/* The label goes into every verbose and failure log line: a URL password
 * in the spec must be hidden there too, also when the cut at 60 bytes
 * would fall between the password and its '@'. */
START_TEST(short_names_hide_url_passwords)
{
    forksafe__error err = {0};

    ck_assert_int_eq(forksafe__subscribe(&ctx,
                                         "post-fork exec:notify postgresql://deploy:"
                                         "s3cr3t-0123456789abcdef0123456789@db.example/app",
                                         "a", 1, &err),
                     0);
    ck_assert_str_eq(ctx.subscriptions[0].name,
                     "exec:notify postgresql://deploy:***@db.example/app");
    ck_assert_int_eq(forksafe__subscribe(&ctx,
                                         "post-fork exec:x https://u:pw@h/ "
                                         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
                                         "a", 2, &err),
                     0);
    /* 57 bytes would end inside an e-acute: the cut backs off to 56. */
    ck_assert_str_eq(ctx.subscriptions[1].name, "exec:x https://u:***@h/ "
                                                "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                                "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                                "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                                "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                                "...");
}
END_TEST

static forksafe__backend hook_backend = {.kind = "hook"};

START_TEST(host_backends_are_known)
{
    forksafe__error err = {0};
    char text[1200];

    ck_assert_int_eq(forksafe__subscribe(&ctx, "post-fork hook:print:hi", "a", 1, &err),
                     FORKSAFE__ESYNTAX);
    forksafe__error_format(&err, text, sizeof(text));
    ck_assert_str_eq(text,
                     "a:1: unknown handler kind 'hook:'; known kinds are exec:, dl:, symbol:");
    memset(&err, 0, sizeof(err));
    ck_assert_int_eq(forksafe__context_add_backend(&ctx, &hook_backend), 0);
    ck_assert_int_eq(forksafe__subscribe(&ctx, "post-fork hook:print:hi", "a", 1, &err), 0);
    ck_assert_ptr_eq(ctx.subscriptions[0].backend, &hook_backend);
    ck_assert_ptr_eq(forksafe__context_backend(&ctx, "hook"), &hook_backend);
    ck_assert_ptr_null(forksafe__context_backend(&ctx, "python"));
}
END_TEST

/* A kind whose handlers know their events, as recipe: does: pre-fork and
 * post-fork.  Resolving counts, releasing counts back. */
static int own_events_live;

static int own_events_resolve(forksafe__context *c, void *data, const char *spec, void **handle,
                              forksafe__error *err)
{
    (void)c;
    (void)data;
    (void)spec;
    (void)err;
    own_events_live++;
    *handle = &own_events_live;
    return 0;
}

static int own_events_run(forksafe__context *c, void *data, void *handle, const forksafe_event *ev,
                          char *why, size_t why_size)
{
    (void)c;
    (void)data;
    (void)handle;
    (void)ev;
    (void)why;
    (void)why_size;
    return 0;
}

static void own_events_release(void *data, void *handle)
{
    (void)data;
    if (handle)
        own_events_live--;
}

static uint32_t own_events(void *data, void *handle)
{
    (void)data;
    (void)handle;
    return (1u << FORKSAFE_PRE_FORK) | (1u << FORKSAFE_POST_FORK);
}

static forksafe__backend own_events_backend = {.kind = "mine",
                                               .resolve = own_events_resolve,
                                               .run = own_events_run,
                                               .release = own_events_release,
                                               .events = own_events};

START_TEST(a_handler_that_knows_its_events_gets_them_all)
{
    const uint32_t both = (1u << FORKSAFE_PRE_FORK) | (1u << FORKSAFE_POST_FORK);
    forksafe__error err = {0};

    own_events_live = 0;
    ck_assert_int_eq(forksafe__context_add_backend(&ctx, &own_events_backend), 0);
    ck_assert_int_eq(forksafe__subscribe(&ctx, "post-fork mine:a", "a.ini", 3, &err), 0);
    ck_assert_int_eq(forksafe__subscribe(&ctx, "* mine:b", "a.ini", 4, &err), 0);
    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), 0);
    ck_assert_uint_eq(ctx.subscriptions[0].events, both);
    ck_assert_uint_eq(ctx.subscriptions[1].events, both);
    ck_assert_int_eq(own_events_live, 2);
}
END_TEST

START_TEST(a_handler_named_at_an_event_it_has_no_part_in_is_refused)
{
    forksafe__error err = {0};
    char text[1200];

    own_events_live = 0;
    ck_assert_int_eq(forksafe__context_add_backend(&ctx, &own_events_backend), 0);
    ck_assert_int_eq(
        forksafe__subscribe(&ctx, "post-fork,worker-ready,master-exit mine:a", "a.ini", 7, &err),
        0);
    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), FORKSAFE__EINVAL);
    forksafe__error_format(&err, text, sizeof(text));
    ck_assert_str_eq(text, "a.ini:7: handler 'mine:a': it has no part in worker-ready, "
                           "master-exit; it runs at pre-fork, post-fork, whichever of them (or "
                           "*) the line names");
    /* what it resolved is released, not leaked */
    ck_assert_int_eq(own_events_live, 0);
}
END_TEST

/* Every refused line: the code, the full message, and nothing appended. */
static const struct {
    const char *text;
    const char *message;
} refusals[] = {
    {"post_fork exec:x", "src:5: unknown event 'post_fork' (did you mean 'post-fork'?)"},
    {"postfork exec:x", "src:5: unknown event 'postfork' (did you mean 'post-fork'?)"},
    {"worker-redy exec:x", "src:5: unknown event 'worker-redy' (did you mean 'worker-ready'?)"},
    {"Master_Start exec:x", "src:5: unknown event 'Master_Start' (did you mean 'master-start'?)"},
    {"banana exec:x",
     "src:5: unknown event 'banana'; events are master-start, pre-fork, post-fork, "
     "post-fork-parent, worker-ready, worker-exit, child-death, master-exit, generation-ready, "
     "or * for all"},
    {"post-fork,,worker-ready exec:x", "src:5: empty event name in 'post-fork,,worker-ready'"},
    {"post-fork, exec:x", "src:5: empty event name in 'post-fork,'"},
    {"post-fork foo:bar",
     "src:5: unknown handler kind 'foo:'; known kinds are exec:, dl:, symbol:"},
    {"post-fork exec:", "src:5: empty handler 'exec:': say what to run after it"},
    {"post-fork once dl:   ", "src:5: empty handler 'dl:': say what to run after it"},
    {"post-fork", "src:5: no handler: end the line with KIND:SPEC, e.g. exec:/path/to/script"},
    {"post-fork once kind=worker",
     "src:5: no handler: end the line with KIND:SPEC, e.g. exec:/path/to/script"},
    {"post-fork /usr/bin/true",
     "src:5: '/usr/bin/true' is neither an option (kind=, id=, once, on-error=) nor a handler "
     "(KIND:SPEC, e.g. exec:/path/to/script)"},
    {"post-fork colour=red exec:x",
     "src:5: unknown option 'colour'; options are kind=, id=, once, on-error="},
    {"post-fork kind=robot exec:x",
     "src:5: unknown process kind 'robot' in kind=; use worker, mule, spooler or master, "
     "separated by commas"},
    {"post-fork kind=worker, exec:x",
     "src:5: unknown process kind '' in kind=; use worker, mule, spooler or master, separated "
     "by commas"},
    {"post-fork kind exec:x", "src:5: option 'kind' needs a value: kind=..."},
    {"post-fork id=0 exec:x",
     "src:5: bad id '0': id= takes a process number from 1 (the master has no id filter)"},
    {"post-fork id=-2 exec:x",
     "src:5: bad id '-2': id= takes a process number from 1 (the master has no id filter)"},
    {"post-fork id=1x exec:x",
     "src:5: bad id '1x': id= takes a process number from 1 (the master has no id filter)"},
    {"post-fork id= exec:x",
     "src:5: bad id '': id= takes a process number from 1 (the master has no id filter)"},
    {"post-fork id=99999999999 exec:x",
     "src:5: bad id '99999999999': id= takes a process number from 1 (the master has no id "
     "filter)"},
    {"post-fork on-error=panic exec:x", "src:5: bad on-error 'panic': use log, exit or fatal"},
    {"post-fork once once exec:x", "src:5: option 'once' given twice"},
    {"post-fork kind=worker kind=mule exec:x", "src:5: option 'kind' given twice"},
    {"post-fork once=yes exec:x", "src:5: option 'once' takes no value"},
    {"worker-ready kind=master exec:x",
     "src:5: worker-ready only runs in workers, so it can never run in the master as filtered "
     "here"},
    {"worker-ready kind=mule,spooler exec:x",
     "src:5: worker-ready only runs in workers, so it can never run in mules and spoolers as "
     "filtered here"},
    {"pre-fork kind=worker exec:x",
     "src:5: pre-fork only runs in the master, so it can never run in workers as filtered here"},
    {"post-fork kind=master exec:x",
     "src:5: post-fork only runs in workers, mules and spoolers, so it can never run in the "
     "master as filtered here"},
    {"worker-exit kind=master exec:x",
     "src:5: worker-exit only runs in workers, mules and spoolers, so it can never run in the "
     "master as filtered here"},
    {"post-fork,master-exit kind=worker exec:x",
     "src:5: master-exit only runs in the master, so it can never run in workers as filtered "
     "here"},
    {"generation-ready kind=worker exec:x",
     "src:5: generation-ready only runs in the master, so it can never run in workers as "
     "filtered here"},
    {"child-death id=3 exec:x",
     "src:5: child-death only runs in the master, whose id is 0, so id=3 never matches it"},
    {"post-fork kind=master id=1 exec:x",
     "src:5: id=1 never matches the master, whose id is 0; drop id= or kind=master"},
    {"", "src:5: empty subscription: expected EVENT[,EVENT...] [OPTION...] KIND:SPEC"},
    {"   ", "src:5: empty subscription: expected EVENT[,EVENT...] [OPTION...] KIND:SPEC"},
    {"exec:/bin/true",
     "src:5: no event before the handler 'exec:/bin/true': expected EVENT[,EVENT...] "
     "[OPTION...] KIND:SPEC"},
    {"post-fork exec:echo caf\xe9", "src:5: byte 0xe9 (byte 24) of the subscription is not valid "
                                    "UTF-8"},
};

START_TEST(refused)
{
    forksafe__error err = {0};
    char text[1200];

    ck_assert_int_eq(forksafe__subscribe(&ctx, refusals[_i].text, "src", 5, &err),
                     FORKSAFE__ESYNTAX);
    forksafe__error_format(&err, text, sizeof(text));
    ck_assert_str_eq(text, refusals[_i].message);
    ck_assert_uint_eq(ctx.subscription_count, 0);
}
END_TEST

START_TEST(default_source)
{
    forksafe__error err = {0};

    ck_assert_int_eq(forksafe__subscribe(&ctx, "post-fork exec:x", NULL, 0, &err), 0);
    ck_assert_str_eq(ctx.subscriptions[0].source, "forksafe-subscribe");
}
END_TEST

START_TEST(nothing_added_after_seal)
{
    forksafe__error err = {0};
    char text[1200];

    ck_assert_int_eq(forksafe__subscribe(&ctx, "post-fork exec:true", "a", 1, &err), 0);
    ck_assert_int_eq(forksafe__context_seal(&ctx, &err), 0);
    ck_assert_int_eq(forksafe__subscribe(&ctx, "post-fork exec:true", "a", 2, &err),
                     FORKSAFE__EINVAL);
    forksafe__error_format(&err, text, sizeof(text));
    ck_assert_str_eq(text, "a:2: subscriptions cannot be added after start-up");
    ck_assert_uint_eq(ctx.subscription_count, 1);
}
END_TEST

START_TEST(out_of_memory_leaves_the_table_unchanged)
{
    forksafe__error err = {0};
    long n;
    int rc = -1;

    ck_assert_int_eq(forksafe__subscribe(&ctx, "post-fork exec:first", "a", 1, &err), 0);
    for (n = 0; n < 20; n++) {
        memset(&err, 0, sizeof(err));
        forksafe__alloc_fail_after(n);
        rc = forksafe__subscribe(&ctx, "worker-ready once exec:second", "a", 2, &err);
        forksafe__alloc_fail_after(-1);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, FORKSAFE__ENOMEM);
        ck_assert_uint_eq(ctx.subscription_count, 1);
        ck_assert_str_eq(err.text, "out of memory");
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(ctx.subscription_count, 2);
}
END_TEST

/* ------------------------------------------------------------- [forksafe] */

static forksafe__ini ini;

static int parse_ini(const char *text, forksafe__error *err)
{
    return forksafe__ini_parse(&ini, "/etc/app/app.ini", text, strlen(text), err);
}

static void ini_teardown(void)
{
    forksafe__ini_free(&ini);
    forksafe__context_free(&ctx);
}

START_TEST(ini_section)
{
    forksafe__error err = {0};
    char text[1200];

    ck_assert_int_eq(parse_ini("[app:main]\n"                      /* 1 */
                               "use = egg:demo\n"                  /* 2 */
                               "\n"                                /* 3 */
                               "[forksafe]\n"                      /* 4 */
                               "post-fork = exec:echo %(here)s\n"  /* 5 */
                               "    kind=worker once dl:/x.so:f\n" /* 6 */
                               "worker-ready =\n"                  /* 7 */
                               "    exec:a\n"                      /* 8 */
                               "\n"                                /* 9 */
                               "    on-error=fatal exec:b\n"       /* 10 */
                               "* = kind=mule symbol:c\n",         /* 11 */
                               &err),
                     0);
    ck_assert_int_eq(forksafe__subscribe_ini(&ctx, &ini, &err), 0);
    if (err.set) {
        forksafe__error_format(&err, text, sizeof(text));
        ck_abort_msg("%s", text);
    }
    ck_assert_uint_eq(ctx.subscription_count, 5);
    ck_assert_str_eq(ctx.subscriptions[0].spec, "exec:echo /etc/app");
    ck_assert_int_eq(ctx.subscriptions[0].line, 5);
    ck_assert_str_eq(ctx.subscriptions[0].source, "/etc/app/app.ini");
    ck_assert_uint_eq(ctx.subscriptions[0].events, EV(FORKSAFE_POST_FORK));
    ck_assert_str_eq(ctx.subscriptions[1].spec, "dl:/x.so:f");
    ck_assert_int_eq(ctx.subscriptions[1].line, 6);
    ck_assert_int_eq(ctx.subscriptions[1].once, 1);
    ck_assert_uint_eq(ctx.subscriptions[1].kinds, 1u << FORKSAFE__WORKER);
    ck_assert_str_eq(ctx.subscriptions[2].spec, "exec:a");
    ck_assert_int_eq(ctx.subscriptions[2].line, 8);
    ck_assert_uint_eq(ctx.subscriptions[2].events, EV(FORKSAFE_WORKER_READY));
    ck_assert_str_eq(ctx.subscriptions[3].spec, "exec:b");
    ck_assert_int_eq(ctx.subscriptions[3].line, 10);
    ck_assert_int_eq(ctx.subscriptions[3].on_error, FORKSAFE__ON_ERROR_FATAL);
    ck_assert_str_eq(ctx.subscriptions[4].spec, "symbol:c");
    ck_assert_int_eq(ctx.subscriptions[4].line, 11);
    ck_assert_uint_eq(ctx.subscriptions[4].events,
                      EV(FORKSAFE_POST_FORK) | EV(FORKSAFE_WORKER_EXIT));
}
END_TEST

START_TEST(ini_without_section)
{
    forksafe__error err = {0};

    ck_assert_int_eq(parse_ini("[app:main]\nx = 1\n", &err), 0);
    ck_assert_int_eq(forksafe__subscribe_ini(&ctx, &ini, &err), 0);
    ck_assert_uint_eq(ctx.subscription_count, 0);
}
END_TEST

static const struct {
    const char *text;
    const char *message;
} ini_refusals[] = {
    {"[forksafe]\npost_fork = exec:x\n",
     "/etc/app/app.ini:2: unknown event 'post_fork' (did you mean 'post-fork'?)"},
    {"[forksafe]\n\npost-fork =\n    exec:ok\n    kind=master exec:x\n",
     "/etc/app/app.ini:5: post-fork only runs in workers, mules and spoolers, so it can never "
     "run in the master as filtered here"},
    {"[forksafe]\npost-fork = exec:ok\n    nope:x\n",
     "/etc/app/app.ini:3: unknown handler kind 'nope:'; known kinds are exec:, dl:, symbol:"},
    /* Comment lines inside the value are dropped from it, not from the
     * count of lines: the error names the line that holds the mistake. */
    {"[forksafe]\n; before\npost-fork =\n    exec:ok\n# one\n\n; two\n    exec:fine\n"
     "    nope:x\n# after\n",
     "/etc/app/app.ini:9: unknown handler kind 'nope:'; known kinds are exec:, dl:, symbol:"},
};

START_TEST(ini_refused)
{
    forksafe__error err = {0};
    char text[1200];

    ck_assert_int_eq(parse_ini(ini_refusals[_i].text, &err), 0);
    ck_assert_int_eq(forksafe__subscribe_ini(&ctx, &ini, &err), FORKSAFE__ESYNTAX);
    forksafe__error_format(&err, text, sizeof(text));
    ck_assert_str_eq(text, ini_refusals[_i].message);
}
END_TEST

/* Problems the ini parser recorded in [forksafe] are errors; those in
 * other sections (uWSGI's own, say) are none of our business. */
START_TEST(ini_problems_in_forksafe_only)
{
    forksafe__error err = {0};

    ck_assert_int_eq(parse_ini("[uwsgi]\nplugin = a\nplugin = b\n"
                               "[forksafe]\npost-fork = exec:a\n",
                               &err),
                     0);
    ck_assert_int_eq(forksafe__subscribe_ini(&ctx, &ini, &err), 0);
    ck_assert_uint_eq(ctx.subscription_count, 1);
    forksafe__ini_free(&ini);
    forksafe__context_free(&ctx);
    ck_assert_int_eq(forksafe__context_init(&ctx, NULL, NULL), 0);
    ck_assert_int_eq(parse_ini("[forksafe]\npost-fork = exec:a\npost-fork = exec:b\n", &err), 0);
    ck_assert_int_eq(forksafe__subscribe_ini(&ctx, &ini, &err), FORKSAFE__ESYNTAX);
    ck_assert_int_eq(err.line, 3);
    ck_assert_str_eq(err.source, "/etc/app/app.ini");
}
END_TEST

START_TEST(ini_interpolation_errors)
{
    forksafe__error err = {0};

    ck_assert_int_eq(parse_ini("[forksafe]\npost-fork = exec:%(missing)s\n", &err), 0);
    ck_assert_int_ne(forksafe__subscribe_ini(&ctx, &ini, &err), 0);
    ck_assert(err.set);
    ck_assert_int_eq(err.line, 2);
    ck_assert_uint_eq(ctx.subscription_count, 0);
}
END_TEST

START_TEST(ini_defaults_are_built_once_per_section)
{
    /* 200 [DEFAULT] keys and 50 [forksafe] keys ("post-fork", then
     * "post-fork,post-fork", ...): copying the defaults for every key, as
     * the reader once did, costs 50 * 400 allocations. */
    size_t size = 200 * 32 + 50 * 50 * 12, used = 0;
    char *text = malloc(size);
    forksafe__error err = {0};
    unsigned long before;
    int i, k;

    used += (size_t)snprintf(text + used, size - used, "[DEFAULT]\n");
    for (i = 0; i < 200; i++)
        used += (size_t)snprintf(text + used, size - used, "default.%d = %d\n", i, i);
    used += (size_t)snprintf(text + used, size - used, "[forksafe]\n");
    for (i = 0; i < 50; i++) {
        for (k = 0; k <= i; k++)
            used += (size_t)snprintf(text + used, size - used, "%spost-fork", k ? "," : "");
        used += (size_t)snprintf(text + used, size - used, " = exec:echo %%(default.%d)s\n", i);
    }
    ck_assert_int_eq(parse_ini(text, &err), 0);
    free(text);
    before = forksafe__alloc_attempts();
    ck_assert_int_eq(forksafe__subscribe_ini(&ctx, &ini, &err), 0);
    ck_assert_uint_eq(ctx.subscription_count, 50);
    ck_assert_str_eq(ctx.subscriptions[49].spec, "exec:echo 49");
    ck_assert_uint_lt(forksafe__alloc_attempts() - before, 50 * 400 / 4);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("subscribe");
    TCase *tc = tcase_create("forksafe-subscribe");
    TCase *ini_tc = tcase_create("[forksafe]");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, full_subscription);
    tcase_add_test(tc, defaults_and_order);
    tcase_add_test(tc, star_means_every_event_the_filter_allows);
    tcase_add_test(tc, long_specs_get_a_short_name);
    tcase_add_test(tc, short_names_hide_url_passwords);
    tcase_add_test(tc, host_backends_are_known);
    tcase_add_loop_test(tc, refused, 0, sizeof(refusals) / sizeof(refusals[0]));
    tcase_add_test(tc, default_source);
    tcase_add_test(tc, nothing_added_after_seal);
    tcase_add_test(tc, a_handler_that_knows_its_events_gets_them_all);
    tcase_add_test(tc, a_handler_named_at_an_event_it_has_no_part_in_is_refused);
    tcase_add_test(tc, out_of_memory_leaves_the_table_unchanged);
    suite_add_tcase(suite, tc);

    tcase_add_checked_fixture(ini_tc, setup, ini_teardown);
    tcase_add_test(ini_tc, ini_section);
    tcase_add_test(ini_tc, ini_without_section);
    tcase_add_loop_test(ini_tc, ini_refused, 0, sizeof(ini_refusals) / sizeof(ini_refusals[0]));
    tcase_add_test(ini_tc, ini_problems_in_forksafe_only);
    tcase_add_test(ini_tc, ini_interpolation_errors);
    tcase_add_test(ini_tc, ini_defaults_are_built_once_per_section);
    suite_add_tcase(suite, ini_tc);
    return suite;
}
