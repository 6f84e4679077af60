/*
 * log.c - writing a line through the context's log callback.
 *
 * Every file of lib/ logs, and the dispatcher calls most of them, so the
 * logger lives apart from the dispatcher: a handler backend that logs then
 * calls a leaf, never back into the file that called it.
 */
#include <stdarg.h>
#include <stdio.h>

#include "forksafe_internal.h"

/* Longest log line; longer messages are truncated rather than allocated,
 * because logging must work when memory has run out. */
#define LOG_LINE_MAX 2048

static void log_va(const forksafe__context *ctx, int level, const char *fmt, va_list ap)
    FORKSAFE__PRINTF(3, 0);

static void log_va(const forksafe__context *ctx, int level, const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];

    vsnprintf(line, sizeof(line), fmt, ap);
    if (ctx && ctx->log) {
        ctx->log(ctx->log_data, level, line);
        return;
    }
    /* No host logger (a bare test or tool): stderr is the only place left
     * that cannot be a client socket. */
    fprintf(stderr, "[forksafe] %s\n", line);
}

void forksafe__log(const forksafe__context *ctx, int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_va(ctx, level, fmt, ap);
    va_end(ap);
}
