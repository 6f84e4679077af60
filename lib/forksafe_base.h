/*
 * forksafe_base.h - what every file of lib/ and the uWSGI glue shares
 * first: error codes and the caller-owned error, and the allocator a test
 * can make fail.  Included through forksafe_internal.h.
 *
 * Return codes: 0 on success, a negative FORKSAFE__E* on failure.
 */
#ifndef FORKSAFE_BASE_H
#define FORKSAFE_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "forksafe.h"

#define FORKSAFE__PRINTF(fmt_index, args_index) \
    __attribute__((format(printf, fmt_index, args_index)))

/* Static state a new child writes as it starts (post-fork, worker-ready,
 * the child half of a fork): every such variable of every file goes in
 * one section, which lib/child_page.ld aligns to a page and which is
 * far smaller than one, so a child copies one page of the master's static
 * data instead of one per file (bench/spawn_faults.py).  Not for const
 * data, nor for what only the master writes. */
#define FORKSAFE__CHILD_WRITES __attribute__((section("forksafe_child_writes")))

/* Code a new child runs from its fork to its first request (the child
 * half of a fork, post-fork, worker-ready): in the linker's own
 * .text.hot.* input sections, which its default script puts together at
 * the start of .text, so the child's first instructions there fault one
 * 64 KiB fault-around window of forksafe's code in, not one per part of
 * .text the files' functions landed in (bench/spawn_faults.py). */
#define FORKSAFE__CHILD_RUNS __attribute__((section(".text.hot.forksafe_child")))

/* ------------------------------------------------------------------ errors */

#define FORKSAFE__ERRORS(X)                     \
    X(FORKSAFE__ENOMEM, -1, "out of memory")    \
    X(FORKSAFE__EIO, -2, "input/output error")  \
    X(FORKSAFE__ESYNTAX, -3, "syntax error")    \
    X(FORKSAFE__ENOTFOUND, -4, "not found")     \
    X(FORKSAFE__EINVAL, -5, "invalid value")    \
    X(FORKSAFE__EHANDLER, -6, "handler failed") \
    X(FORKSAFE__ETIMEDOUT, -7, "handler timed out")

enum forksafe__error_code {
#define FORKSAFE__ERROR_ENUM(id, value, text) id = value,
    FORKSAFE__ERRORS(FORKSAFE__ERROR_ENUM)
#undef FORKSAFE__ERROR_ENUM
};

/* Returns a static description of a FORKSAFE__E* code. */
const char *forksafe__strerror(int code);

/* Where and what went wrong.  The first error recorded wins: later calls to
 * forksafe__error_set on an already set error do nothing, so the root cause
 * survives the unwinding. */
typedef struct forksafe__error {
    int set;
    char source[512]; /* file name, or a label such as "forksafe-subscribe" */
    int line;         /* 1-based; 0 when there is no line */
    char text[512];
} forksafe__error;

/* Records an error if none is recorded yet.  ERR may be NULL. */
void forksafe__error_set(forksafe__error *err, const char *source, int line, const char *fmt, ...)
    FORKSAFE__PRINTF(4, 5);

/* Formats "SOURCE:LINE: TEXT" (or "SOURCE: TEXT" without a line) into BUF. */
void forksafe__error_format(const forksafe__error *err, char *buf, size_t size);

/* -------------------------------------------------------------- allocation */

/* Every allocation of lib/ (and of jansson, see forksafe__alloc_install_json)
 * goes through these so that a test can make the Nth allocation fail. */
void *forksafe__malloc(size_t size);
void *forksafe__calloc(size_t count, size_t size);
void *forksafe__realloc(void *ptr, size_t size);
char *forksafe__strdup(const char *s);
char *forksafe__strndup(const char *s, size_t n);

/* Appends MORE_LENGTH bytes of MORE to the NUL-terminated *TEXT of *LENGTH
 * bytes, growing its buffer (*CAPACITY bytes, 0 with *TEXT NULL at first)
 * by doubling.  Returns 0 or FORKSAFE__ENOMEM (*TEXT unchanged). */
int forksafe__text_append(char **text, size_t *length, size_t *capacity, const char *more,
                          size_t more_length);
void forksafe__free(void *ptr);

/* Test hook: after N more successful allocations every allocation fails;
 * N < 0 turns failure injection off (the default). */
void forksafe__alloc_fail_after(long n);

/* Test hook: how many allocations were attempted since the process started. */
unsigned long forksafe__alloc_attempts(void);

/* Routes jansson's allocations through forksafe__malloc/free. */
void forksafe__alloc_install_json(void);

#endif /* FORKSAFE_BASE_H */
