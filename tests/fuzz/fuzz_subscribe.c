/*
 * fuzz_subscribe.c - the subscription parser (lib/subscribe.c).  Each line
 * of the input is a `forksafe-subscribe` value; then the whole input, after
 * a "[forksafe]" header, is a settings file's [forksafe] section (one key
 * per event, one "[OPTION...] HANDLER" per line of its value, interpolated).
 * Nothing is resolved: resolving would run exec: commands and dlopen files.
 */
#include "fuzz.h"

#define FILE_NAME "/nonexistent/forksafe-fuzz/app.ini"
#define MAX_LINES 64

/* hook: is registered by the uWSGI plugin, not by lib/; the parser only
 * needs the kind to exist. */
static forksafe__backend hook_backend = {.kind = "hook"};

static void quiet(void *userdata, int level, const char *message)
{
    (void)userdata;
    (void)level;
    if (strlen(message) > 65536)
        fuzz_fail("a log line grew past 64 KiB");
}

static void context_open(forksafe__context *ctx)
{
    if (forksafe__context_init(ctx, quiet, NULL) != 0 ||
        forksafe__context_add_backend(ctx, forksafe__python_backend()) != 0 ||
        forksafe__context_add_backend(ctx, &hook_backend) != 0)
        fuzz_fail("the context could not be set up");
}

static void check_subscriptions(const forksafe__context *ctx)
{
    size_t i;

    for (i = 0; i < ctx->subscription_count; i++) {
        const forksafe__subscription *sub = &ctx->subscriptions[i];
        size_t kind_length;

        if (sub->events == 0 || sub->events >= (1u << FORKSAFE_EVENT_COUNT))
            fuzz_fail("a subscription has no events, or events that do not exist");
        if (sub->kinds >= (1u << FORKSAFE__PROCESS_KIND_COUNT) || sub->id < 0)
            fuzz_fail("a subscription has an impossible process filter");
        if (sub->on_error < FORKSAFE__ON_ERROR_INHERIT || sub->on_error > FORKSAFE__ON_ERROR_FATAL)
            fuzz_fail("a subscription has an unknown on-error policy");
        if (!sub->backend || sub->index != i)
            fuzz_fail("a subscription has no backend or a wrong index");
        kind_length = strlen(sub->backend->kind);
        if (strncmp(sub->spec, sub->backend->kind, kind_length) != 0 ||
            sub->spec[kind_length] != ':')
            fuzz_fail("a subscription's spec does not start with its backend's kind");
        if (strlen(sub->name) > 60)
            fuzz_fail("a subscription's log label is longer than 60 bytes");
    }
    /* Walks every subscription through the redaction and the log. */
    forksafe__context_describe(ctx);
}

static void subscribe_lines(const char *text)
{
    forksafe__context ctx;
    const char *p = text;
    int line;

    context_open(&ctx);
    for (line = 1; *p && line <= MAX_LINES; line++) {
        size_t length = strcspn(p, "\n");
        char *value = fuzz_text("", (const unsigned char *)p, length);
        forksafe__error err = {0};
        size_t before = ctx.subscription_count;
        int rc = forksafe__subscribe(&ctx, value, NULL, line, &err);

        fuzz_check_error(rc, &err);
        if (rc != 0 && (rc != FORKSAFE__ESYNTAX || err.line != line))
            fuzz_fail("a bad subscription line gave no syntax error for its line");
        if (ctx.subscription_count != before + (rc == 0))
            fuzz_fail("a subscription line added other than one subscription");
        free(value);
        p += length;
        if (*p == '\n')
            p++;
    }
    check_subscriptions(&ctx);
    forksafe__context_free(&ctx);
}

static void subscribe_section(const unsigned char *data, size_t size)
{
    static const char prefix[] = "[forksafe]\n";
    forksafe__context ctx;
    forksafe__ini ini;
    forksafe__error err = {0};
    char *text = fuzz_text(prefix, data, size);
    int rc;

    rc = forksafe__ini_parse(&ini, FILE_NAME, text, strlen(prefix) + size, &err);
    free(text);
    if (rc != 0)
        fuzz_fail("parsing failed without running out of memory");
    context_open(&ctx);
    rc = forksafe__subscribe_ini(&ctx, &ini, &err);
    fuzz_check_error(rc, &err);
    if (rc == FORKSAFE__ENOMEM || rc == FORKSAFE__EINVAL)
        fuzz_fail("the [forksafe] section failed without a syntax error");
    check_subscriptions(&ctx);
    forksafe__context_free(&ctx);
    forksafe__ini_free(&ini);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *text = fuzz_text("", data, size);

    subscribe_lines(text);
    free(text);
    subscribe_section(data, size);
    return 0;
}
