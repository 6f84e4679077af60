/*
 * settings_dump - prints what forksafe computes for a settings spec, for the
 * PasteDeploy differential test.
 *
 *   settings_dump PATH[#NAME]
 *
 * Prints {"local": {...}, "global": {...}} with sorted keys and exits 0, or
 * prints "ERROR FILE:LINE: text" and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>

#include "forksafe_internal.h"

int main(int argc, char **argv)
{
    forksafe__settings settings;
    forksafe__error err = {0};
    json_t *output;
    char *text;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH[#NAME]\n", argv[0]);
        return 2;
    }
    if (forksafe__settings_load(&settings, argv[1], &err) != 0) {
        char message[1200];

        forksafe__error_format(&err, message, sizeof(message));
        printf("ERROR %s\n", message);
        return 1;
    }
    output = json_pack("{s:o, s:o}", "local", forksafe__map_to_json(&settings.local), "global",
                       forksafe__map_to_json(&settings.global));
    text = output ? json_dumps(output, JSON_SORT_KEYS | JSON_INDENT(1)) : NULL;
    if (!text) {
        /* Only invalid UTF-8 can get here, and the parser refuses that. */
        printf("ERROR %s: cannot encode the settings as JSON\n", argv[1]);
        json_decref(output);
        forksafe__settings_free(&settings);
        return 1;
    }
    printf("%s\n", text);
    free(text);
    json_decref(output);
    forksafe__settings_free(&settings);
    return 0;
}
