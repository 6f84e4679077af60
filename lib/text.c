/*
 * text.c - text as Python sees it: strict UTF-8 validity and str.isspace(),
 * for the settings parsers (ConfigParser strips with Python's rules) and for
 * everything that ends up in JSON.
 */
#include <string.h>

#include "forksafe_internal.h"

/* ------------------------------------------------------------- whitespace */

/* The multi-byte cases are U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028,
 * U+2029, U+202F, U+205F and U+3000. */
size_t forksafe__text_space_at(const char *text, const char *text_end)
{
    const unsigned char *p = (const unsigned char *)text;
    const unsigned char *end = (const unsigned char *)text_end;
    size_t left = (size_t)(end - p);

    if (left == 0)
        return 0;
    if ((p[0] >= 0x09 && p[0] <= 0x0d) || (p[0] >= 0x1c && p[0] <= 0x20))
        return 1;
    if (left >= 2 && p[0] == 0xc2 && (p[1] == 0x85 || p[1] == 0xa0))
        return 2;
    if (left < 3)
        return 0;
    if (p[0] == 0xe1 && p[1] == 0x9a && p[2] == 0x80)
        return 3;
    if (p[0] == 0xe2 && p[1] == 0x80 &&
        ((p[2] >= 0x80 && p[2] <= 0x8a) || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf))
        return 3;
    if (p[0] == 0xe2 && p[1] == 0x81 && p[2] == 0x9f)
        return 3;
    if (p[0] == 0xe3 && p[1] == 0x80 && p[2] == 0x80)
        return 3;
    return 0;
}

/* Length of the whitespace character that ends just before END, or 0. */
static size_t space_before(const char *start, const char *end)
{
    size_t n;

    for (n = 1; n <= 3 && n <= (size_t)(end - start); n++) {
        if (forksafe__text_space_at(end - n, end) == n)
            return n;
    }
    return 0;
}

void forksafe__text_strip(const char **start, const char **end)
{
    const char *s = *start;
    const char *e = *end;
    size_t n;

    while (s < e && (n = forksafe__text_space_at(s, e)) > 0)
        s += n;
    while (e > s && (n = space_before(s, e)) > 0)
        e -= n;
    *start = s;
    *end = e;
}

/* ------------------------------------------------------------------ UTF-8 */

/* Python's strict decoder: no overlong forms, no UTF-16 surrogates, nothing
 * past U+10FFFF. */
size_t forksafe__utf8_invalid_offset_bytes(const char *bytes, size_t length)
{
    const unsigned char *text = (const unsigned char *)bytes;
    size_t i = 0;

    while (i < length) {
        unsigned char c = text[i];
        size_t need;
        unsigned char low = 0x80, high = 0xbf;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            need = 1;
        else if (c >= 0xe0 && c <= 0xef)
            need = 2;
        else if (c >= 0xf0 && c <= 0xf4)
            need = 3;
        else
            return i;
        /* Overlong forms, UTF-16 surrogates and code points past U+10FFFF. */
        if (c == 0xe0)
            low = 0xa0;
        else if (c == 0xed)
            high = 0x9f;
        else if (c == 0xf0)
            low = 0x90;
        else if (c == 0xf4)
            high = 0x8f;
        if (i + 1 >= length || text[i + 1] < low || text[i + 1] > high)
            return i;
        for (size_t k = 2; k <= need; k++) {
            if (i + k >= length || (text[i + k] & 0xc0) != 0x80)
                return i;
        }
        i += need + 1;
    }
    return length;
}

size_t forksafe__utf8_invalid_offset(const char *text)
{
    return forksafe__utf8_invalid_offset_bytes(text, strlen(text));
}
