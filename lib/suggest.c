/*
 * suggest.c - the event name a mistyped one most likely meant, for the
 * "did you mean" of subscription errors: the smallest edit distance, with
 * '_' for '-' and case forgiven, within two edits.
 */
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "forksafe_internal.h"

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), i, j;
    size_t row[32];

    /* Event names are short; anything longer is no typo of one. */
    if (lb >= sizeof(row) / sizeof(row[0]) || la >= 64)
        return SIZE_MAX;
    for (j = 0; j <= lb; j++)
        row[j] = j;
    for (i = 1; i <= la; i++) {
        size_t diagonal = row[0];

        row[0] = i;
        for (j = 1; j <= lb; j++) {
            size_t above = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) == b[j - 1] ? 0 : 1;
            size_t best = diagonal + cost;

            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diagonal = above;
        }
    }
    return row[lb];
}

const char *forksafe__closest_event(const char *name)
{
    char normalised[64];
    const char *best = NULL;
    size_t best_distance = SIZE_MAX, i;
    int event;

    for (i = 0; name[i] && i < sizeof(normalised) - 1; i++)
        normalised[i] = name[i] == '_' ? '-' : name[i];
    normalised[i] = '\0';
    for (event = 0; event < FORKSAFE_EVENT_COUNT; event++) {
        const char *candidate = forksafe_event_type_name(event);
        size_t distance = edit_distance(normalised, candidate);

        if (distance < best_distance) {
            best_distance = distance;
            best = candidate;
        }
    }
    /* Two edits catch "postfork", "pre-frok", "worker-redy"; more would
     * turn unrelated words into confident nonsense. */
    return best_distance <= 2 ? best : NULL;
}
