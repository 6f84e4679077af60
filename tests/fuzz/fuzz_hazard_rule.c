/*
 * fuzz_hazard_rule.c - the fork-hazard allow rules (lib/hazard_rule.c).
 * Each line of the input is a `forksafe-hazard-allow` value: parsed, then
 * matched against a few fixed hazards (a thread, TCP over IPv4 and IPv6, a
 * UNIX path and an abstract name), whose warning lines and fingerprint are
 * written too.  No scan: /proc changes under the fuzzer, a rule does not.
 */
#include "fuzz.h"
#include "hazard.h"

#define FILE_NAME "/nonexistent/forksafe-fuzz/app.ini"
#define MAX_LINES 16

static const forksafe__hazard fixed[] = {
    {.kind = FORKSAFE__HAZARD_THREAD, .fd = -1, .tid = 4242, .name = "exporter"},
    {.kind = FORKSAFE__HAZARD_TCP,
     .fd = 7,
     .local = "127.0.0.1:40312",
     .peer = "127.0.0.1:5432",
     .peer_port = 5432,
     .service = "PostgreSQL"},
    {.kind = FORKSAFE__HAZARD_TCP,
     .fd = 8,
     .local = "[::1]:40313",
     .peer = "[::1]:6379",
     .peer_port = 6379,
     .service = "Redis"},
    {.kind = FORKSAFE__HAZARD_UNIX,
     .fd = 9,
     .peer = "/var/run/postgresql/.s.PGSQL.5432",
     .service = "PostgreSQL"},
    {.kind = FORKSAFE__HAZARD_UNIX, .fd = 10, .local = "@client", .peer = "@forksafe/abstract"},
};

#define FIXED_COUNT (sizeof(fixed) / sizeof(fixed[0]))

static void check_line(const forksafe__hazard *hazard)
{
    char line[512];

    forksafe__hazard_describe(hazard, "worker 3", "master", 4240, line, sizeof(line));
    if (strncmp(line, "worker 3 ", 9) != 0 || strlen(line) >= sizeof(line))
        fuzz_fail("a warning line does not name the child");
}

static int literal(const char *glob)
{
    return strpbrk(glob, "*?[\\") == NULL;
}

/* A rule without glob characters matches the hazard it spells out. */
static void check_literal(const forksafe__hazard_rule *rule)
{
    forksafe__hazard hazard = {.kind = rule->kind, .fd = 11};
    size_t length = strlen(rule->pattern);

    if (!literal(rule->pattern) ||
        (rule->port && strspn(rule->port, "0123456789") != strlen(rule->port)))
        return;
    if (rule->kind == FORKSAFE__HAZARD_THREAD) {
        if (length >= sizeof(hazard.name))
            return;
        memcpy(hazard.name, rule->pattern, length + 1);
    }
    else if (rule->kind == FORKSAFE__HAZARD_UNIX) {
        if (length + 6 >= sizeof(hazard.peer))
            return;
        snprintf(hazard.peer, sizeof(hazard.peer), "%s%s",
                 strchr(rule->pattern, '/') ? "" : "/run/", rule->pattern);
    }
    else {
        const char *open = strchr(rule->pattern, ':') ? "[" : "";
        const char *close = *open ? "]" : "";

        if (length + 10 >= sizeof(hazard.peer))
            return;
        hazard.peer_port = atoi(rule->port);
        snprintf(hazard.peer, sizeof(hazard.peer), "%s%s%s:%d", open, rule->pattern, close,
                 hazard.peer_port);
    }
    if (!forksafe__hazard_rule_matches(rule, &hazard))
        fuzz_fail("a rule without glob characters does not match what it spells");
    check_line(&hazard);
}

/* The rule written back in its plain form parses to the same rule. */
static void check_round_trip(const forksafe__hazard_rule *rule)
{
    static const char *const prefixes[] = {"thread:", "tcp:", "unix:"};
    forksafe__hazard_rule again;
    forksafe__error err = {0};
    char *text;
    size_t size = strlen(rule->pattern) + (rule->port ? strlen(rule->port) : 0) + 16;

    text = malloc(size);
    if (!text)
        abort();
    snprintf(text, size, "%s%s%s%s", prefixes[rule->kind], rule->pattern, rule->port ? ":" : "",
             rule->port ? rule->port : "");
    if (forksafe__hazard_rule_parse(text, FILE_NAME, 1, &again, &err) != 0)
        fuzz_fail("a parsed rule written back does not parse");
    if (again.kind != rule->kind || strcmp(again.pattern, rule->pattern) != 0 ||
        (!again.port != !rule->port) || (rule->port && strcmp(again.port, rule->port) != 0))
        fuzz_fail("a parsed rule written back parses to another rule");
    forksafe__hazard_rule_free(&again);
    free(text);
}

static void check_rule(const forksafe__hazard_rule *rule)
{
    forksafe__hazard hazards[FIXED_COUNT];
    forksafe__hazard_list list = {hazards, FIXED_COUNT, FIXED_COUNT};
    size_t i, matched = 0;

    if ((int)rule->kind < FORKSAFE__HAZARD_THREAD || rule->kind > FORKSAFE__HAZARD_UNIX)
        fuzz_fail("a rule has an unknown kind");
    if (!rule->pattern || rule->pattern[0] == '\0')
        fuzz_fail("a rule has no pattern");
    if ((rule->kind == FORKSAFE__HAZARD_TCP) != (rule->port != NULL) ||
        (rule->port && rule->port[0] == '\0'))
        fuzz_fail("a tcp rule has no port, or another rule has one");
    memcpy(hazards, fixed, sizeof(fixed));
    for (i = 0; i < FIXED_COUNT; i++) {
        int matches = forksafe__hazard_rule_matches(rule, &fixed[i]);

        if (matches != 0 && matches != 1)
            fuzz_fail("a match is neither 0 nor 1");
        if (matches && fixed[i].kind != rule->kind)
            fuzz_fail("a rule matches a hazard of another kind");
        hazards[i].allowed = matches;
        matched += (size_t)matches;
        check_line(&fixed[i]);
    }
    if ((matched == FIXED_COUNT) != (forksafe__hazards_fingerprint(&list) == 0))
        fuzz_fail("the fingerprint counts allowed hazards, or not the others");
    check_literal(rule);
    check_round_trip(rule);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *text = fuzz_text("", data, size);
    const char *p = text;
    int line;

    for (line = 1; *p && line <= MAX_LINES; line++) {
        size_t length = strcspn(p, "\n");
        char *value = fuzz_text("", (const unsigned char *)p, length);
        forksafe__hazard_rule rule;
        forksafe__error err = {0};
        int rc = forksafe__hazard_rule_parse(value, FILE_NAME, line, &rule, &err);

        fuzz_check_error(rc, &err);
        if (rc == 0) {
            check_rule(&rule);
        }
        else {
            if (rc != FORKSAFE__EINVAL || err.line != line || strcmp(err.source, FILE_NAME) != 0)
                fuzz_fail("a bad rule gave no EINVAL for its line");
            if (!strstr(err.text, "thread:GLOB") || !strstr(err.text, "tcp:HOST:PORT") ||
                !strstr(err.text, "unix:GLOB"))
                fuzz_fail("a bad rule's error does not name the accepted forms");
            if (rule.pattern || rule.port)
                fuzz_fail("a bad rule left a pattern behind");
        }
        forksafe__hazard_rule_free(&rule);
        free(value);
        p += length;
        if (*p == '\n')
            p++;
    }
    free(text);
    return 0;
}
