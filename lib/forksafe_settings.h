/*
 * forksafe_settings.h - the settings side of lib/: the ordered map, Python's
 * text rules, paths, the ini parser, interpolation, PasteDeploy's resolver,
 * the settings and their redaction.  Included through forksafe_internal.h.
 */
#ifndef FORKSAFE_SETTINGS_H
#define FORKSAFE_SETTINGS_H

#include "forksafe_base.h"

/* ------------------------------------------------------------- string map */

/* A hash index over an array of structs whose first member is the `char *`
 * key (forksafe__entry, forksafe__ini_section): a settings file may hold
 * 10,000 keys, where linear lookups turn quadratic.  The index holds
 * positions, not pointers, so the caller passes the array (which may have
 * moved) on every call.  Zero-initialise before use. */
typedef struct forksafe__index {
    size_t *slots; /* position + 1; 0 = empty */
    size_t capacity;
    size_t count;
} forksafe__index;

/* Indexes the item already stored at POSITION of ITEMS.  Returns 0 or
 * FORKSAFE__ENOMEM; on failure the index is unchanged. */
int forksafe__index_add(forksafe__index *index, const void *items, size_t stride, size_t position);

/* Indexes the first COUNT items.  Returns 0 or FORKSAFE__ENOMEM. */
int forksafe__index_build(forksafe__index *index, const void *items, size_t stride, size_t count);

/* Returns the position of KEY in ITEMS, or -1. */
long forksafe__index_find(const forksafe__index *index, const void *items, size_t stride,
                          const char *key);

/* The same for the LENGTH bytes at KEY, which need not be terminated. */
long forksafe__index_find_bytes(const forksafe__index *index, const void *items, size_t stride,
                                const char *key, size_t length);

void forksafe__index_free(forksafe__index *index);

/* An ordered map of strings, as a Python dict: insertion order is kept, a
 * put on an existing key replaces the value in place, lookups go through
 * the map's own index.  Zero-initialise before use; every change goes
 * through the calls below, which keep the index in step. */
typedef struct forksafe__entry {
    char *key;
    char *value;
    int line; /* where it was defined, 0 if not from a file */
} forksafe__entry;

typedef struct forksafe__map {
    forksafe__entry *entries;
    size_t count;
    size_t capacity;
    forksafe__index index; /* over entries */
} forksafe__map;

/* Sets KEY to VALUE (both copied).  Returns 0 or FORKSAFE__ENOMEM; on failure
 * the map is unchanged. */
int forksafe__map_put(forksafe__map *map, const char *key, const char *value, int line);

/* The same, taking KEY and VALUE (new strings; NULL counts as ENOMEM): both
 * are the map's, or freed, when it returns. */
int forksafe__map_put_new(forksafe__map *map, char *key, char *value, int line);

/* dict.update(): every entry of FROM put into MAP, in FROM's order.
 * Returns 0 or FORKSAFE__ENOMEM (MAP then holds part of FROM). */
int forksafe__map_update(forksafe__map *map, const forksafe__map *from);

/* Returns the entry for KEY, or NULL. Borrowed. */
const forksafe__entry *forksafe__map_find(const forksafe__map *map, const char *key);

/* The same for the LENGTH bytes at KEY, which need not be terminated. */
const forksafe__entry *forksafe__map_find_bytes(const forksafe__map *map, const char *key,
                                                size_t length);

/* Returns the value for KEY, or NULL. Borrowed. */
const char *forksafe__map_get(const forksafe__map *map, const char *key);

/* Removes KEY if present, keeping the order of the rest.  Never fails. */
void forksafe__map_remove(forksafe__map *map, const char *key);

/* Frees everything the map owns and leaves it empty and reusable. */
void forksafe__map_clear(forksafe__map *map);

/* Returns a new JSON object {key: value} in map order, or NULL on ENOMEM. */
json_t *forksafe__map_to_json(const forksafe__map *map);

/* ------------------------------------------------------------ Python text */

/* Returns the offset of the first byte of TEXT that is not valid UTF-8 (as
 * Python's strict decoder judges it), or strlen(TEXT) if all of it is.
 * Settings and handler specs must be text: they end up in JSON. */
size_t forksafe__utf8_invalid_offset(const char *text);

/* The same for the LENGTH bytes at TEXT, which may hold NUL bytes. */
size_t forksafe__utf8_invalid_offset_bytes(const char *text, size_t length);

/* Length of the character at P (before END) if Python's str.isspace() is
 * true for it, else 0. */
size_t forksafe__text_space_at(const char *p, const char *end);

/* Narrows [*START, *END) past the whitespace Python's str.strip() removes
 * (ASCII and Unicode spaces in UTF-8), as ConfigParser does to keys, values
 * and section names. */
void forksafe__text_strip(const char **start, const char **end);

/* ------------------------------------------------------------ files, paths */

/* os.path.abspath (against the current directory; no symlinks resolved).
 * Returns a new string, NULL on ENOMEM. */
char *forksafe__path_absolute(const char *path);

/* os.path.dirname.  Returns a new string, NULL on ENOMEM. */
char *forksafe__path_directory(const char *path);

/* Reads all of the settings file PATH into *TEXT (new, NUL-terminated;
 * *LENGTH bytes before the NUL), if it is a regular file: never blocking on
 * a FIFO.  Returns 0, FORKSAFE__EIO or FORKSAFE__ENOMEM, with ERR saying
 * why, with the path. */
int forksafe__read_settings_file(const char *path, char **text, size_t *length,
                                 forksafe__error *err);

/* ---------------------------------------------------------------- ini file */

/* A problem ConfigParser (and so PasteDeploy) would refuse the whole file
 * for.  The raw parser records them instead of failing, because uWSGI's own
 * sections in the same file may legitimately break ConfigParser's rules; the
 * settings layer decides which problems matter. */
typedef struct forksafe__ini_problem {
    int line;
    char *section; /* NULL: before any section header */
    char *text;
} forksafe__ini_problem;

typedef struct forksafe__ini_section {
    char *name; /* "DEFAULT" for [DEFAULT] */
    int line;
    /* Raw values, not interpolated: continuation lines joined with "\n",
     * comment lines inside a value dropped, blank lines kept and trailing
     * blank lines stripped, as ConfigParser does. */
    forksafe__map entries;
} forksafe__ini_section;

typedef struct forksafe__ini {
    char *path;
    forksafe__ini_section *sections; /* in file order; a repeated section is
                                        merged into the first and recorded as
                                        a problem */
    size_t count;
    forksafe__ini_problem *problems; /* in line order */
    size_t problem_count;
    int *comment_lines; /* every full-line comment, in line order */
    size_t comment_count;
} forksafe__ini;

/* Reads and parses PATH.  Returns 0 (problems, if any, are recorded in INI),
 * FORKSAFE__EIO if the file cannot be read (ERR says why, with the path),
 * FORKSAFE__ENOMEM.  On failure INI is left empty. */
int forksafe__ini_load(forksafe__ini *ini, const char *path, forksafe__error *err);

/* The same from memory; NAME is used as the path in messages and for here
 * and __file__. */
int forksafe__ini_parse(forksafe__ini *ini, const char *name, const char *text, size_t length,
                        forksafe__error *err);

/* The line of INI that holds line OFFSET (0-based) of the multi-line value
 * whose key is on KEY_LINE: comment lines the value skipped are counted. */
int forksafe__ini_value_line(const forksafe__ini *ini, int key_line, int offset);

/* Returns the section called NAME, or NULL. Borrowed. */
const forksafe__ini_section *forksafe__ini_find(const forksafe__ini *ini, const char *name);

/* Records in ERR the first problem of INI that lies in one of the NULL-
 * terminated SECTIONS (or, if SECTIONS is NULL, anywhere) and returns
 * FORKSAFE__ESYNTAX; returns 0 if there is none. */
int forksafe__ini_check(const forksafe__ini *ini, const char *const *sections,
                        forksafe__error *err);

void forksafe__ini_free(forksafe__ini *ini);

/* ----------------------------------------------------------- interpolation */

/* What %(name)s can name in every section of one ini file besides the
 * section's own keys: PasteDeploy's here and __file__, then [DEFAULT]'s
 * raw values.  Built once per file; the scopes below borrow it. */
typedef struct forksafe__defaults {
    const forksafe__ini *ini; /* borrowed; its path names errors */
    char *file;               /* __file__: INI's path, absolute and normalised */
    forksafe__map raw;        /* here, __file__, [DEFAULT]: not interpolated */
} forksafe__defaults;

/* Builds DEFAULTS for INI, which must outlive it.  Returns 0,
 * FORKSAFE__EINVAL (INI's path is not valid UTF-8), FORKSAFE__ENOMEM; ERR
 * says why, with the path.  On failure DEFAULTS is left empty. */
int forksafe__defaults_open(forksafe__defaults *defaults, const forksafe__ini *ini,
                            forksafe__error *err);

void forksafe__defaults_close(forksafe__defaults *defaults);

/* One section as ConfigParser.get sees it: its own keys, then the
 * defaults.  Borrows both; costs nothing to make. */
typedef struct forksafe__scope {
    const forksafe__defaults *defaults;
    const forksafe__ini_section *section; /* NULL: [DEFAULT] itself */
} forksafe__scope;

/* ConfigParser.get(section, OPTION->key) with OPTION already looked up:
 * BasicInterpolation of %(name)s and %%, with its depth limit.  Returns 0
 * with a new string in *OUT, FORKSAFE__ESYNTAX (ERR has the file and
 * OPTION's line), or FORKSAFE__ENOMEM (ERR left to the caller). */
int forksafe__interpolate(const forksafe__scope *scope, const forksafe__entry *option, char **out,
                          forksafe__error *err);

/* Interpolates KEY of SECTION of INI (falling back to [DEFAULT], plus here
 * and __file__) in one call, building the defaults for it: to read many
 * keys, open the defaults once and use forksafe__interpolate.  LINE > 0
 * replaces the key's line in messages.  Returns a new string in *OUT, or
 * FORKSAFE__ENOTFOUND (no such section or key), or an error as
 * forksafe__defaults_open and forksafe__interpolate, always with ERR set. */
int forksafe__interpolate_key(const forksafe__ini *ini, const char *section, const char *key,
                              int line, char **out, forksafe__error *err);

/* --------------------------------------------------------------- settings */

/* What Pyramid would see as registry.settings, and PasteDeploy's global_conf. */
typedef struct forksafe__settings {
    char *path;           /* the settings file, absolute */
    char *section;        /* "app:main"; NULL for a JSON file */
    forksafe__map local;  /* PasteDeploy local_conf */
    forksafe__map global; /* [DEFAULT] + here + __file__ + set additions */
} forksafe__settings;

/* What a PasteDeploy name refers to: loadapp() or loadfilter(). */
enum forksafe__paste_object { FORKSAFE__PASTE_APP, FORKSAFE__PASTE_FILTER };

/* One settings file as PasteDeploy's ConfigLoader holds it. */
typedef struct forksafe__paste_loader {
    const forksafe__ini *ini;  /* borrowed */
    forksafe__defaults parser; /* ConfigParser's defaults: here, __file__, [DEFAULT] */
    forksafe__map defaults;    /* NicerConfigParser.defaults(): interpolated */
} forksafe__paste_loader;

/* ConfigLoader.__init__ over INI (borrowed), plus update_defaults(EXTRA,
 * overwrite=False) when EXTRA is not NULL, and the defaults interpolated
 * (problems in [DEFAULT] are errors).  Returns 0, or an error as
 * forksafe__defaults_open and forksafe__interpolate, with ERR set; on
 * failure LOADER is left empty. */
int forksafe__paste_loader_open(forksafe__paste_loader *loader, const forksafe__ini *ini,
                                const forksafe__map *extra, forksafe__error *err);

/* Frees what LOADER owns; an empty LOADER is fine. */
void forksafe__paste_loader_free(forksafe__paste_loader *loader);

/* ConfigLoader.find_config_section: the one section NAME refers to as an
 * app ([app:NAME], or application:, composite:, pipeline:, filter-app:) or
 * a filter ([filter:NAME]), TYPE an enum forksafe__paste_object.  LINE is
 * for the message.  Returns 0 with *SECTION borrowed from INI,
 * FORKSAFE__ENOTFOUND, or FORKSAFE__ESYNTAX (two sections match). */
int forksafe__paste_find_section(const forksafe__ini *ini, int type, const char *name, int line,
                                 const forksafe__ini_section **section, forksafe__error *err);

/* Computes the settings of SECTION of an already parsed INI exactly as
 * paste.deploy.appconfig('config:PATH', name=...).local_conf would: problems
 * in [DEFAULT] and SECTION are errors, interpolation of %(here)s,
 * %(__file__)s, %(key)s and %% with ConfigParser's depth limit, `set` and
 * `get` keys, `use` removed.  SECTION is a full section name ("app:main").
 * Returns 0, FORKSAFE__ENOTFOUND (no such section), FORKSAFE__ESYNTAX
 * (problems, interpolation errors; ERR has file and line), FORKSAFE__ENOMEM.
 * On failure SETTINGS is left empty. */
int forksafe__settings_from_ini(forksafe__settings *settings, const forksafe__ini *ini,
                                const char *section, forksafe__error *err);

/* Fills SETTINGS from TEXT (LENGTH bytes), the contents of the JSON file
 * PATH: one flat object of strings (numbers and booleans are converted to
 * their JSON text, reals as Python's repr() writes them, null to "null").
 * Returns 0, FORKSAFE__ESYNTAX or FORKSAFE__ENOMEM, with ERR naming PATH;
 * on failure SETTINGS may hold part of the file (forksafe__settings_free). */
int forksafe__settings_from_json(forksafe__settings *settings, const char *path, const char *text,
                                 size_t length, forksafe__error *err);

/* The length of the PATH of SPEC = PATH[#NAME]: like PasteDeploy, the first
 * '#' starts the name. */
size_t forksafe__settings_path_length(const char *spec);

/* Loads SPEC = PATH[#NAME].  NAME "main" means section "app:main" as in
 * PasteDeploy; a NAME containing ':' is a section name as written.  Default
 * "app:main".  A PATH ending in ".json" is read as a flat JSON object (see
 * forksafe__settings_from_json).  Returns as forksafe__settings_from_ini,
 * plus FORKSAFE__EIO, and FORKSAFE__EINVAL for a path that is not valid
 * UTF-8. */
int forksafe__settings_load(forksafe__settings *settings, const char *spec, forksafe__error *err);

/* The same, and hands on the file it read so that nothing opens it again
 * (its [forksafe] section, PasteDeploy's whole-file check): INI, if not
 * NULL, receives the file parsed as an ini file, whatever its name - a JSON
 * file parsed so has no sections, only the problems PasteDeploy would find
 * in it.  SETTINGS->section is NULL for a JSON file.  On success the caller
 * frees INI with forksafe__ini_free; on failure INI is left empty. */
int forksafe__settings_load_file(forksafe__settings *settings, const char *spec, forksafe__ini *ini,
                                 forksafe__error *err);

/* Applies an override "KEY=VALUE" to the local settings.  SOURCE and LINE
 * are for the error message.  Returns 0, FORKSAFE__EINVAL (no '=' or empty
 * key), FORKSAFE__ENOMEM. */
int forksafe__settings_override(forksafe__settings *settings, const char *assignment,
                                const char *source, int line, forksafe__error *err);

void forksafe__settings_free(forksafe__settings *settings);

/* --------------------------------------------------------------- redaction */

/* True if KEY looks like it holds a secret (password, secret, token, key,
 * credential; case-insensitive). */
int forksafe__is_secret_key(const char *key);

/* Returns a new copy of VALUE fit to print: the whole value replaced by
 * "***" if KEY is secret-looking, otherwise only URL userinfo passwords
 * (scheme://user:PASSWORD@host) replaced.  NULL on ENOMEM. */
char *forksafe__redact(const char *key, const char *value);

#endif /* FORKSAFE_SETTINGS_H */
