/*
 * hazard_rule.c - the allow rules (forksafe-hazard-allow): what an operator
 * knows is safe to inherit, so the fork-hazard warnings keep meaning
 * something.  A rule is a glob on what the warning itself shows (a thread's
 * name, a TCP peer's host and port, a UNIX peer's path), so a line copied
 * from a warning is a rule that silences exactly it.
 */
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

#include "hazard.h"

#define FORMS                                                                            \
    "the accepted forms are thread:GLOB, tcp:HOST:PORT (e.g. tcp:*:5432, tcp:::1:6379) " \
    "and unix:GLOB"

static const struct {
    const char *prefix;
    forksafe__hazard_kind kind;
} kinds[] = {
    {"thread:", FORKSAFE__HAZARD_THREAD},
    {"tcp:", FORKSAFE__HAZARD_TCP},
    {"unix:", FORKSAFE__HAZARD_UNIX},
};

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* A port glob can match a port number: digits and glob characters only,
 * and a plain number is one a TCP port can have, written as a warning
 * writes it (no leading zero: "0543" would never match). */
static int valid_port(const char *port)
{
    const char *p;
    long number = 0;
    int plain = 1;

    if (*port == '\0')
        return 0;
    for (p = port; *p; p++) {
        if (*p >= '0' && *p <= '9') {
            if (number <= 65535)
                number = number * 10 + (*p - '0');
        }
        else if (strchr("*?[]!^-", *p)) {
            plain = 0;
        }
        else {
            return 0;
        }
    }
    return !plain || (port[0] != '0' && number <= 65535);
}

/* The rule is quoted up to 200 bytes, so the accepted forms always fit. */
static int invalid(const char *text, const char *source, int line, const char *why,
                   forksafe__error *err)
{
    forksafe__error_set(err, source ? source : "forksafe-hazard-allow", line,
                        "forksafe-hazard-allow \"%.200s\": %s; " FORMS, text, why);
    return FORKSAFE__EINVAL;
}

/* Leaves RULE empty, as every failure does, so freeing it is harmless. */
static int out_of_memory(forksafe__hazard_rule *rule, const char *source, int line,
                         forksafe__error *err)
{
    forksafe__hazard_rule_free(rule);
    forksafe__error_set(err, source ? source : "forksafe-hazard-allow", line, "out of memory");
    return FORKSAFE__ENOMEM;
}

/* "tcp:HOST:PORT": split at the last colon, so an IPv6 host needs no
 * brackets; "[::1]" is accepted too, as a warning writes it. */
static int parse_tcp(const char *text, const char *rest, size_t length, const char *source,
                     int line, forksafe__hazard_rule *rule, forksafe__error *err)
{
    const char *colon = NULL, *p, *host = rest;
    size_t host_length;

    for (p = rest; p < rest + length; p++) {
        if (*p == ':')
            colon = p;
    }
    if (!colon)
        return invalid(text, source, line, "a tcp rule needs HOST:PORT", err);
    host_length = (size_t)(colon - rest);
    if (host_length > 2 && host[0] == '[' && host[host_length - 1] == ']' &&
        memchr(host + 1, ':', host_length - 2) && !memchr(host + 1, '[', host_length - 2) &&
        !memchr(host + 1, ']', host_length - 2)) {
        host++;
        host_length -= 2;
    }
    if (host_length == 0)
        return invalid(text, source, line, "the host is empty (any host is *)", err);
    rule->port = forksafe__strndup(colon + 1, (size_t)(rest + length - colon - 1));
    if (!rule->port)
        return out_of_memory(rule, source, line, err);
    if (!valid_port(rule->port)) {
        forksafe__hazard_rule_free(rule);
        return invalid(text, source, line, "the port is not a port number or a glob of one", err);
    }
    rule->pattern = forksafe__strndup(host, host_length);
    if (!rule->pattern)
        return out_of_memory(rule, source, line, err);
    return 0;
}

int forksafe__hazard_rule_parse(const char *text, const char *source, int line,
                                forksafe__hazard_rule *rule, forksafe__error *err)
{
    const char *start = text, *end = text + strlen(text), *rest;
    size_t i, length;

    memset(rule, 0, sizeof(*rule));
    while (start < end && is_space(*start))
        start++;
    while (end > start && is_space(end[-1]))
        end--;
    for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t prefix_length = strlen(kinds[i].prefix);

        if ((size_t)(end - start) >= prefix_length &&
            strncmp(start, kinds[i].prefix, prefix_length) == 0)
            break;
    }
    if (i == sizeof(kinds) / sizeof(kinds[0]))
        return invalid(text, source, line, "not a rule", err);
    rule->kind = kinds[i].kind;
    rest = start + strlen(kinds[i].prefix);
    length = (size_t)(end - rest);
    if (rule->kind == FORKSAFE__HAZARD_TCP)
        return parse_tcp(text, rest, length, source, line, rule, err);
    if (length == 0)
        return invalid(text, source, line, "the glob is empty (anything is *)", err);
    rule->pattern = forksafe__strndup(rest, length);
    return rule->pattern ? 0 : out_of_memory(rule, source, line, err);
}

void forksafe__hazard_rule_free(forksafe__hazard_rule *rule)
{
    forksafe__free(rule->pattern);
    forksafe__free(rule->port);
    rule->pattern = NULL;
    rule->port = NULL;
}

/* TCP: HOST is the peer's address without its port, and without the
 * brackets of an IPv6 one. */
static int tcp_matches(const forksafe__hazard_rule *rule, const forksafe__hazard *hazard)
{
    char host[FORKSAFE__HAZARD_ADDRESS_MAX], port[16];
    const char *colon = strrchr(hazard->peer, ':');
    size_t length = colon ? (size_t)(colon - hazard->peer) : strlen(hazard->peer);
    const char *start = hazard->peer;

    if (length >= 2 && start[0] == '[' && start[length - 1] == ']') {
        start++;
        length -= 2;
    }
    snprintf(host, sizeof(host), "%.*s", (int)length, start);
    snprintf(port, sizeof(port), "%d", hazard->peer_port);
    return fnmatch(rule->pattern, host, 0) == 0 && fnmatch(rule->port, port, 0) == 0;
}

/* A glob without a slash names the file ("unix:.s.PGSQL.*"); one with a
 * slash the whole path, its * crossing slashes ("unix:/run*.sock"). */
static int unix_matches(const char *pattern, const char *path)
{
    const char *name = strrchr(path, '/');

    if (!strchr(pattern, '/') && name)
        path = name + 1;
    return fnmatch(pattern, path, 0) == 0;
}

int forksafe__hazard_rule_matches(const forksafe__hazard_rule *rule, const forksafe__hazard *hazard)
{
    if (rule->kind != hazard->kind || !rule->pattern)
        return 0;
    switch (rule->kind) {
    case FORKSAFE__HAZARD_THREAD:
        return fnmatch(rule->pattern, hazard->name, 0) == 0;
    case FORKSAFE__HAZARD_TCP:
        return rule->port && tcp_matches(rule, hazard);
    case FORKSAFE__HAZARD_UNIX:
        return unix_matches(rule->pattern, hazard->peer);
    }
    return 0;
}
