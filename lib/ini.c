/*
 * ini.c - the raw settings-file parser: ConfigParser's reading rules as
 * PasteDeploy configures them, without interpolation.
 *
 * The reference is Python's configparser.RawConfigParser._read with
 * PasteDeploy's settings (delimiters '=' and ':', full-line comments '#' and
 * ';', no inline comments, case-sensitive keys, strict, blank lines allowed
 * inside values) applied to a file opened as UTF-8 text with universal
 * newlines.  Where ConfigParser would raise, this parser records a problem
 * and keeps going: uWSGI's own sections share the file and may break
 * ConfigParser's rules, so the settings layer decides which problems count.
 *
 * A problem whose section is NULL is not tied to one section (text before
 * the first header, a byte order mark, invalid UTF-8): PasteDeploy fails on
 * it whatever section it reads, so every check reports it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "forksafe_internal.h"

/* How much of an offending line a problem quotes. */
#define QUOTE_LIMIT 60

typedef struct parser {
    forksafe__ini *ini;
    size_t section_capacity;
    size_t problem_capacity;
    size_t comment_capacity;
    forksafe__index section_index; /* the sections' keys have their maps' own */

    long section;  /* current section position; -1 before the first header */
    long option;   /* entry whose value is being read; -1 when none */
    size_t indent; /* indentation (in characters) of the last non-continuation line */
    int line;
    int bad_encoding_seen; /* Python stops decoding at the first bad byte: report one */

    /* The multi-line value being assembled for OPTION. */
    char *value;
    size_t value_length;
    size_t value_capacity;
    int value_continued;
    size_t pending_blank_lines;
} parser;

/* ConfigParser measures indentation in characters, not bytes. */
static size_t indentation(const char *line, const char *end)
{
    const char *p = line;
    size_t characters = 0;
    size_t n;

    while ((n = forksafe__text_space_at(p, end)) > 0) {
        p += n;
        characters++;
    }
    return characters;
}

/* --------------------------------------------------------------- problems */

static char *format_new(const char *fmt, va_list ap) FORKSAFE__PRINTF(1, 0);

static char *format_new(const char *fmt, va_list ap)
{
    va_list again;
    int length;
    char *text;

    va_copy(again, ap);
    length = vsnprintf(NULL, 0, fmt, again);
    va_end(again);
    if (length < 0)
        length = 0;
    text = forksafe__malloc((size_t)length + 1);
    if (!text)
        return NULL;
    vsnprintf(text, (size_t)length + 1, fmt, ap);
    return text;
}

/* Records a problem at the current line.  SECTION NULL: not tied to one. */
static int add_problem(parser *p, const char *section, const char *fmt, ...) FORKSAFE__PRINTF(3, 4);

static int add_problem(parser *p, const char *section, const char *fmt, ...)
{
    forksafe__ini *ini = p->ini;
    forksafe__ini_problem *problem;
    va_list ap;

    if (ini->problem_count == p->problem_capacity) {
        size_t capacity = p->problem_capacity ? p->problem_capacity * 2 : 4;
        forksafe__ini_problem *grown = forksafe__realloc(ini->problems, capacity * sizeof(*grown));

        if (!grown)
            return FORKSAFE__ENOMEM;
        ini->problems = grown;
        p->problem_capacity = capacity;
    }
    problem = &ini->problems[ini->problem_count];
    problem->line = p->line;
    problem->section = NULL;
    va_start(ap, fmt);
    problem->text = format_new(fmt, ap);
    va_end(ap);
    if (!problem->text)
        return FORKSAFE__ENOMEM;
    if (section) {
        problem->section = forksafe__strdup(section);
        if (!problem->section) {
            forksafe__free(problem->text);
            return FORKSAFE__ENOMEM;
        }
    }
    ini->problem_count++;
    return 0;
}

static const char *current_section_name(const parser *p)
{
    return p->section >= 0 ? p->ini->sections[p->section].name : NULL;
}

/* Copies LINE into BUF for quoting: shortened, control bytes escaped, never
 * cut inside a UTF-8 sequence. */
static void quote_line(char *buf, size_t size, const char *line, const char *end)
{
    size_t used = 0;
    const char *p = line;

    while (p < end && used + 8 < size) {
        unsigned char c = (unsigned char)*p;
        size_t n = 1;

        if ((size_t)(p - line) >= QUOTE_LIMIT) {
            memcpy(buf + used, "...", 3);
            used += 3;
            break;
        }
        if (c >= 0x80) {
            while (p + n < end && ((unsigned char)p[n] & 0xc0) == 0x80 && n < 4)
                n++;
            memcpy(buf + used, p, n);
            used += n;
        }
        else if (c < 0x20 || c == 0x7f) {
            used += (size_t)snprintf(buf + used, size - used, "\\x%02x", c);
        }
        else {
            buf[used++] = (char)c;
        }
        p += n;
    }
    buf[used] = '\0';
}

/* ---------------------------------------------------------------- storage */

/* A comment line inside a multi-line value is dropped from the value, so
 * the Nth line of a value is not always KEY_LINE + N; these let
 * forksafe__ini_value_line find the real one. */
static int add_comment_line(parser *p)
{
    forksafe__ini *ini = p->ini;

    if (ini->comment_count == p->comment_capacity) {
        size_t capacity = p->comment_capacity ? p->comment_capacity * 2 : 16;
        int *grown = forksafe__realloc(ini->comment_lines, capacity * sizeof(*grown));

        if (!grown)
            return FORKSAFE__ENOMEM;
        ini->comment_lines = grown;
        p->comment_capacity = capacity;
    }
    ini->comment_lines[ini->comment_count++] = p->line;
    return 0;
}

static int add_section(parser *p, const char *name, size_t length)
{
    forksafe__ini *ini = p->ini;
    forksafe__ini_section *section;

    if (ini->count == p->section_capacity) {
        size_t capacity = p->section_capacity ? p->section_capacity * 2 : 4;
        forksafe__ini_section *grown = forksafe__realloc(ini->sections, capacity * sizeof(*grown));

        if (!grown)
            return FORKSAFE__ENOMEM;
        ini->sections = grown;
        p->section_capacity = capacity;
    }
    section = &ini->sections[ini->count];
    memset(section, 0, sizeof(*section));
    section->name = forksafe__strndup(name, length);
    if (!section->name)
        return FORKSAFE__ENOMEM;
    section->line = p->line;
    if (forksafe__index_add(&p->section_index, ini->sections, sizeof(*section), ini->count) != 0) {
        forksafe__free(section->name);
        return FORKSAFE__ENOMEM;
    }
    p->section = (long)ini->count;
    ini->count++;
    return 0;
}

/* Appends KEY = VALUE to the current section, which must not hold KEY. */
static int append_entry(parser *p, const char *key, size_t key_length, const char *value,
                        size_t value_length)
{
    forksafe__map *map = &p->ini->sections[p->section].entries;
    int rc = forksafe__map_put_new(map, forksafe__strndup(key, key_length),
                                   forksafe__strndup(value, value_length), p->line);

    if (rc == 0)
        p->option = (long)map->count - 1;
    return rc;
}

static int value_append(parser *p, const char *text, size_t length)
{
    return forksafe__text_append(&p->value, &p->value_length, &p->value_capacity, text, length);
}

/* A continuation line: blank lines seen since the last text become empty
 * lines of the value; blank lines at the end never get here, which is how
 * ConfigParser's final rstrip() drops them. */
static int continue_value(parser *p, const char *text, size_t length)
{
    forksafe__entry *entry = &p->ini->sections[p->section].entries.entries[p->option];
    int rc;

    if (!p->value_continued) {
        p->value_length = 0;
        if ((rc = value_append(p, entry->value, strlen(entry->value))) != 0)
            return rc;
        p->value_continued = 1;
    }
    for (; p->pending_blank_lines > 0; p->pending_blank_lines--) {
        if ((rc = value_append(p, "\n", 1)) != 0)
            return rc;
    }
    if ((rc = value_append(p, "\n", 1)) != 0)
        return rc;
    return value_append(p, text, length);
}

/* Stores the assembled value of the current option, if it grew lines. */
static int finish_value(parser *p)
{
    if (p->option >= 0 && p->value_continued) {
        forksafe__entry *entry = &p->ini->sections[p->section].entries.entries[p->option];
        char *joined = forksafe__strndup(p->value, p->value_length);

        if (!joined)
            return FORKSAFE__ENOMEM;
        forksafe__free(entry->value);
        entry->value = joined;
    }
    p->option = -1;
    p->value_continued = 0;
    p->pending_blank_lines = 0;
    return 0;
}

/* ------------------------------------------------------------------ lines */

static int parse_header(parser *p, const char *name, size_t length)
{
    long found = forksafe__index_find_bytes(&p->section_index, p->ini->sections,
                                            sizeof(p->ini->sections[0]), name, length);

    if (found < 0)
        return add_section(p, name, length);
    p->section = found;
    /* ConfigParser lets [DEFAULT] reopen; any other repeat is an error (its
     * keys still collide with the first block's). */
    if (strcmp(p->ini->sections[found].name, "DEFAULT") == 0)
        return 0;
    return add_problem(p, p->ini->sections[found].name,
                       "duplicate section [%s] (first defined at line %d)",
                       p->ini->sections[found].name, p->ini->sections[found].line);
}

static int parse_option(parser *p, const char *start, const char *end)
{
    const char *delimiter = start;
    const char *key_end, *value_start, *value_end;
    const char *section = current_section_name(p);
    char quoted[QUOTE_LIMIT * 4 + 16];
    forksafe__map *map = &p->ini->sections[p->section].entries;
    const forksafe__entry *found;
    size_t key_length;
    int rc;

    /* The first '=' or ':' wins, so "url = http://x" splits at '='. */
    while (delimiter < end && *delimiter != '=' && *delimiter != ':')
        delimiter++;
    if (delimiter == end) {
        /* A ParsingError: ConfigParser carries on with the previous option,
         * so a deeper-indented line after this one still continues it. */
        quote_line(quoted, sizeof(quoted), start, end);
        return add_problem(p, section,
                           "'%s' in section [%s] is not a 'key = value' line, a section header, "
                           "a comment or an indented continuation",
                           quoted, section);
    }
    if ((rc = finish_value(p)) != 0)
        return rc;
    key_end = delimiter;
    forksafe__text_strip(&start, &key_end);
    value_start = delimiter + 1;
    value_end = end;
    forksafe__text_strip(&value_start, &value_end);

    key_length = (size_t)(key_end - start);
    found = forksafe__map_find_bytes(map, start, key_length);
    if (found) {
        /* The parser owns the map: it may edit the entry it found. */
        forksafe__entry *entry = &map->entries[found - map->entries];
        char *value = forksafe__strndup(value_start, (size_t)(value_end - value_start));

        rc = value ? add_problem(p, section,
                                 "duplicate key '%s' in section [%s] (first defined at line %d)",
                                 entry->key, section, entry->line)
                   : FORKSAFE__ENOMEM;
        if (rc == 0) {
            /* Later wins, as a non-strict ConfigParser would; only uWSGI's
             * sections, which PasteDeploy never reads, get to use it. */
            forksafe__free(entry->value);
            entry->value = value;
            entry->line = p->line;
            p->option = (long)(found - map->entries);
        }
        else {
            forksafe__free(value);
        }
    }
    else {
        rc = append_entry(p, start, key_length, value_start, (size_t)(value_end - value_start));
    }
    if (rc == 0 && key_length == 0) {
        /* ConfigParser stores the empty key but never continues it. */
        p->option = -1;
        quote_line(quoted, sizeof(quoted), delimiter, end);
        rc = add_problem(p, section, "'%s' in section [%s] has no key before the '%c'", quoted,
                         section, *delimiter);
    }
    return rc;
}

static int parse_line(parser *p, const char *line, const char *end)
{
    const char *nul = memchr(line, '\0', (size_t)(end - line));
    const char *start, *stop;
    size_t indent;
    int rc;

    if (nul) {
        /* Python would keep the NUL in the value; a C string cannot. */
        if ((rc = add_problem(p, current_section_name(p),
                              "NUL byte in line; forksafe cannot represent it in a setting")) != 0)
            return rc;
    }
    /* The whole line, bytes after a NUL included: Python decodes the whole
     * file before it parses anything. */
    if (!p->bad_encoding_seen) {
        size_t offset = forksafe__utf8_invalid_offset_bytes(line, (size_t)(end - line));

        if (offset < (size_t)(end - line)) {
            p->bad_encoding_seen = 1;
            if ((rc = add_problem(p, NULL,
                                  "byte 0x%02x (byte %zu of the line) is not valid UTF-8, and "
                                  "PasteDeploy reads settings files as UTF-8",
                                  (unsigned char)line[offset], offset + 1)) != 0)
                return rc;
        }
    }
    if (nul)
        end = nul;

    start = line;
    stop = end;
    forksafe__text_strip(&start, &stop);
    if (start < stop && (*start == '#' || *start == ';'))
        return add_comment_line(p);
    if (start == stop) {
        if (p->option >= 0)
            p->pending_blank_lines++;
        return 0;
    }

    indent = indentation(line, end);
    if (p->section >= 0 && p->option >= 0 && indent > p->indent)
        return continue_value(p, start, (size_t)(stop - start));
    p->indent = indent;

    /* "\[(?P<header>.+)\]" matched at the start: the name runs to the last
     * ']' of the line, and whatever follows that is ignored. */
    if (*start == '[') {
        const char *close = stop - 1;

        while (close > start + 1 && *close != ']')
            close--;
        if (close > start + 1) {
            if ((rc = finish_value(p)) != 0)
                return rc;
            return parse_header(p, start + 1, (size_t)(close - start - 1));
        }
    }
    if (p->section < 0) {
        char quoted[QUOTE_LIMIT * 4 + 16];

        quote_line(quoted, sizeof(quoted), start, stop);
        return add_problem(p, NULL, "'%s' comes before the first [section] header", quoted);
    }
    return parse_option(p, start, stop);
}

static int parse_text(parser *p, const char *text, size_t length)
{
    const char *end = text + length;
    const char *line = text;
    int rc;

    /* Python decodes with "utf-8", not "utf-8-sig": the mark is text before
     * the first header, and ConfigParser refuses the file. */
    if (length >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        p->line = 1;
        if ((rc = add_problem(p, NULL,
                              "file starts with a UTF-8 byte order mark, which "
                              "PasteDeploy reads as text before the first section")) != 0)
            return rc;
        p->line = 0;
        line += 3;
    }
    while (line < end) {
        const char *stop = line;

        /* Universal newlines: "\n", "\r\n" and a lone "\r" all end a line. */
        while (stop < end && *stop != '\n' && *stop != '\r')
            stop++;
        p->line++;
        if ((rc = parse_line(p, line, stop)) != 0)
            return rc;
        if (stop < end && *stop == '\r' && stop + 1 < end && stop[1] == '\n')
            stop++;
        line = stop < end ? stop + 1 : end;
    }
    return finish_value(p);
}

/* ------------------------------------------------------------- public API */

int forksafe__ini_parse(forksafe__ini *ini, const char *name, const char *text, size_t length,
                        forksafe__error *err)
{
    parser p;
    int rc;

    memset(ini, 0, sizeof(*ini));
    memset(&p, 0, sizeof(p));
    p.ini = ini;
    p.section = -1;
    p.option = -1;
    ini->path = forksafe__strdup(name);
    rc = ini->path ? parse_text(&p, text, length) : FORKSAFE__ENOMEM;

    forksafe__index_free(&p.section_index);
    forksafe__free(p.value);
    if (rc != 0) {
        forksafe__ini_free(ini);
        forksafe__error_set(err, name, 0, "%s", forksafe__strerror(rc));
    }
    return rc;
}

int forksafe__ini_load(forksafe__ini *ini, const char *path, forksafe__error *err)
{
    char *text;
    size_t length;
    int rc;

    memset(ini, 0, sizeof(*ini));
    if ((rc = forksafe__read_settings_file(path, &text, &length, err)) != 0)
        return rc;
    rc = forksafe__ini_parse(ini, path, text, length, err);
    forksafe__free(text);
    return rc;
}

const forksafe__ini_section *forksafe__ini_find(const forksafe__ini *ini, const char *name)
{
    size_t i;

    for (i = 0; i < ini->count; i++) {
        if (strcmp(ini->sections[i].name, name) == 0)
            return &ini->sections[i];
    }
    return NULL;
}

int forksafe__ini_value_line(const forksafe__ini *ini, int key_line, int offset)
{
    int line = key_line;
    size_t i = 0;

    /* comment_lines is in file order: skip those before the key once. */
    while (i < ini->comment_count && ini->comment_lines[i] <= line)
        i++;
    while (offset-- > 0) {
        line++;
        while (i < ini->comment_count && ini->comment_lines[i] == line) {
            line++;
            i++;
        }
    }
    return line;
}

static int problem_applies(const forksafe__ini_problem *problem, const char *const *sections)
{
    if (!sections || !problem->section)
        return 1;
    for (; *sections; sections++) {
        if (strcmp(*sections, problem->section) == 0)
            return 1;
    }
    return 0;
}

int forksafe__ini_check(const forksafe__ini *ini, const char *const *sections, forksafe__error *err)
{
    size_t i;

    for (i = 0; i < ini->problem_count; i++) {
        const forksafe__ini_problem *problem = &ini->problems[i];

        if (problem_applies(problem, sections)) {
            forksafe__error_set(err, ini->path, problem->line, "%s", problem->text);
            return FORKSAFE__ESYNTAX;
        }
    }
    return 0;
}

void forksafe__ini_free(forksafe__ini *ini)
{
    size_t i;

    for (i = 0; i < ini->count; i++) {
        forksafe__free(ini->sections[i].name);
        forksafe__map_clear(&ini->sections[i].entries);
    }
    for (i = 0; i < ini->problem_count; i++) {
        forksafe__free(ini->problems[i].section);
        forksafe__free(ini->problems[i].text);
    }
    forksafe__free(ini->sections);
    forksafe__free(ini->problems);
    forksafe__free(ini->comment_lines);
    forksafe__free(ini->path);
    memset(ini, 0, sizeof(*ini));
}
