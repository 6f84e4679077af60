/*
 * redact.c - what may be printed of a setting: secret-looking keys hidden
 * whole, passwords in URLs and in NAME=VALUE pairs hidden in any value, for
 * forksafe-check, the logs and the stats JSON.
 */
#include <string.h>

#include "forksafe_internal.h"

static int contains_ignoring_case(const char *text, const char *word)
{
    size_t length = strlen(word);

    for (; *text; text++) {
        size_t i;

        for (i = 0; i < length; i++) {
            char c = text[i];

            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            if (c != word[i])
                break;
        }
        if (i == length)
            return 1;
    }
    return 0;
}

int forksafe__is_secret_key(const char *key)
{
    static const char *const words[] = {"password", "passwd",     "secret", "token",
                                        "key",      "credential", NULL};
    size_t i;

    for (i = 0; words[i]; i++) {
        if (contains_ignoring_case(key, words[i]))
            return 1;
    }
    return 0;
}

static int is_scheme_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '-' || c == '.';
}

static int is_url_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

/* Hides the value of every NAME=VALUE whose NAME is secret-looking and
 * that starts the text, a word or a query parameter: libpq's
 * "host=db password=..." and "postgresql://db/app?password=...".  Returns a
 * new string (TEXT is freed), NULL on ENOMEM. */
static char *redact_assignments(char *text)
{
    /* "***" replaces at least one byte after at least "key=": three times
     * the length is always enough. */
    char *result = forksafe__malloc(strlen(text) * 3 + 1);
    size_t used = 0;
    const char *p = text;

    if (!result) {
        forksafe__free(text);
        return NULL;
    }
    while (*p) {
        const char *name = p, *end = p;
        char saved[64];

        if (p == text || is_url_space(p[-1]) || p[-1] == '?' || p[-1] == '&' || p[-1] == ';') {
            while (is_name_char(*end))
                end++;
        }
        if (end > name && *end == '=' && (size_t)(end - name) < sizeof(saved) && end[1] &&
            end[1] != '&' && end[1] != ';' && !is_url_space(end[1])) {
            memcpy(saved, name, (size_t)(end - name));
            saved[end - name] = '\0';
            if (forksafe__is_secret_key(saved)) {
                memcpy(result + used, name, (size_t)(end - name) + 1);
                used += (size_t)(end - name) + 1;
                memcpy(result + used, "***", 3);
                used += 3;
                for (p = end + 1; *p && *p != '&' && *p != ';' && !is_url_space(*p); p++)
                    ;
                continue;
            }
        }
        result[used++] = *p++;
    }
    result[used] = '\0';
    forksafe__free(text);
    return result;
}

char *forksafe__redact(const char *key, const char *value)
{
    size_t length = strlen(value);
    char *result;
    size_t used = 0;
    const char *p = value;

    if (forksafe__is_secret_key(key))
        return forksafe__strdup("***");
    /* Each "***" replaces at least one byte and follows at least "a://:"
     * plus '@', so three times the length is always enough. */
    result = forksafe__malloc(length * 3 + 1);
    if (!result)
        return NULL;
    while (*p) {
        const char *separator = strstr(p, "://");
        const char *authority, *end, *at = NULL, *colon, *q;

        if (!separator) {
            memcpy(result + used, p, strlen(p));
            used += strlen(p);
            break;
        }
        authority = separator + 3;
        memcpy(result + used, p, (size_t)(authority - p));
        used += (size_t)(authority - p);
        p = authority;
        if (separator == value || !is_scheme_char(separator[-1]))
            continue;
        /* The userinfo ends at the last '@' before whitespace: a password
         * with a raw '@' or '/' in it is still hidden whole, at the price of
         * hiding too much when a path holds an '@'. */
        for (end = authority; *end && !is_url_space(*end); end++) {
            if (*end == '@')
                at = end;
        }
        if (!at)
            continue;
        colon = memchr(authority, ':', (size_t)(at - authority));
        if (!colon) {
            /* A user name alone is often the credential itself
             * (https://TOKEN@host), so all of it is hidden; an '@' past a
             * '/', '?' or '#' is in the path or query, not userinfo. */
            if (at == authority || memchr(authority, '/', (size_t)(at - authority)) ||
                memchr(authority, '?', (size_t)(at - authority)) ||
                memchr(authority, '#', (size_t)(at - authority)))
                continue;
            memcpy(result + used, "***", 3);
            used += 3;
            p = at;
            continue;
        }
        if (colon + 1 == at)
            continue;
        for (q = authority; q < colon; q++) {
            if (*q == '/')
                break;
        }
        if (q < colon)
            continue; /* the ':' is past the host: a port or a path */
        memcpy(result + used, authority, (size_t)(colon + 1 - authority));
        used += (size_t)(colon + 1 - authority);
        memcpy(result + used, "***", 3);
        used += 3;
        p = at;
    }
    result[used] = '\0';
    return redact_assignments(result);
}
