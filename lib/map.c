/*
 * map.c - the ordered string map (forksafe__map) and the hash index that
 * finds its keys: insertion order kept, lookups in constant time.
 *
 * The index holds positions, not pointers, so it is generic over any array
 * of structs whose first member is the `char *` key (the ini parser indexes
 * its sections with it too), and it survives the array moving.
 */
#include <string.h>

#include "forksafe_internal.h"

/* ------------------------------------------------------------------ index */

static size_t hash_bytes(const char *key, size_t length)
{
    /* FNV-1a, then a final mix: FNV's low bits depend only on the low bits
     * of each byte, and the table is indexed by its low bits, so keys such
     * as "k0".."k9999" would otherwise pile up in a few runs. */
    uint64_t hash = 14695981039346656037ULL;
    size_t i;

    for (i = 0; i < length; i++) {
        hash ^= (unsigned char)key[i];
        hash *= 1099511628211ULL;
    }
    hash ^= hash >> 33;
    hash *= 0xff51afd7ed558ccdULL;
    hash ^= hash >> 33;
    return (size_t)hash;
}

static const char *key_at(const void *items, size_t stride, size_t position)
{
    return *(const char *const *)((const char *)items + position * stride);
}

static void index_insert(size_t *slots, size_t capacity, const void *items, size_t stride,
                         size_t position)
{
    size_t mask = capacity - 1;
    const char *key = key_at(items, stride, position);
    size_t slot = hash_bytes(key, strlen(key)) & mask;

    while (slots[slot] != 0)
        slot = (slot + 1) & mask;
    slots[slot] = position + 1;
}

int forksafe__index_add(forksafe__index *index, const void *items, size_t stride, size_t position)
{
    /* Half full at most, so probes stay short. */
    if ((index->count + 1) * 2 > index->capacity) {
        size_t capacity = index->capacity ? index->capacity * 2 : 16;
        size_t *slots = forksafe__calloc(capacity, sizeof(*slots));
        size_t i;

        if (!slots)
            return FORKSAFE__ENOMEM;
        for (i = 0; i < index->capacity; i++) {
            if (index->slots[i] != 0)
                index_insert(slots, capacity, items, stride, index->slots[i] - 1);
        }
        forksafe__free(index->slots);
        index->slots = slots;
        index->capacity = capacity;
    }
    index_insert(index->slots, index->capacity, items, stride, position);
    index->count++;
    return 0;
}

int forksafe__index_build(forksafe__index *index, const void *items, size_t stride, size_t count)
{
    size_t i;

    forksafe__index_free(index);
    for (i = 0; i < count; i++) {
        if (forksafe__index_add(index, items, stride, i) != 0) {
            forksafe__index_free(index);
            return FORKSAFE__ENOMEM;
        }
    }
    return 0;
}

long forksafe__index_find_bytes(const forksafe__index *index, const void *items, size_t stride,
                                const char *key, size_t length)
{
    size_t mask, slot;

    if (index->capacity == 0)
        return -1;
    mask = index->capacity - 1;
    for (slot = hash_bytes(key, length) & mask; index->slots[slot] != 0; slot = (slot + 1) & mask) {
        size_t position = index->slots[slot] - 1;
        const char *candidate = key_at(items, stride, position);

        if (strncmp(candidate, key, length) == 0 && candidate[length] == '\0')
            return (long)position;
    }
    return -1;
}

long forksafe__index_find(const forksafe__index *index, const void *items, size_t stride,
                          const char *key)
{
    return forksafe__index_find_bytes(index, items, stride, key, strlen(key));
}

/* Forgets the item at POSITION, which has just been removed from ITEMS:
 * the entries after it moved down one place, so its slot is emptied, later
 * positions are decremented, and the run of slots after the hole is
 * re-placed, as linear probing requires.  Never allocates: each re-placed
 * key goes back into a table that held it. */
static void index_remove(forksafe__index *index, const void *items, size_t stride, size_t position)
{
    size_t mask = index->capacity - 1, hole = 0, slot;

    for (slot = 0; slot < index->capacity; slot++) {
        if (index->slots[slot] == position + 1)
            hole = slot;
        else if (index->slots[slot] > position + 1)
            index->slots[slot]--;
    }
    index->slots[hole] = 0;
    index->count--;
    for (slot = (hole + 1) & mask; index->slots[slot] != 0; slot = (slot + 1) & mask) {
        size_t moved = index->slots[slot] - 1;

        index->slots[slot] = 0;
        index->count--;
        (void)forksafe__index_add(index, items, stride, moved);
    }
}

void forksafe__index_free(forksafe__index *index)
{
    forksafe__free(index->slots);
    index->slots = NULL;
    index->capacity = 0;
    index->count = 0;
}

/* -------------------------------------------------------------------- map */

/* Makes room for one more entry.  On failure the map is unchanged. */
static int map_reserve(forksafe__map *map)
{
    size_t capacity;
    forksafe__entry *grown;

    if (map->count < map->capacity)
        return 0;
    capacity = map->capacity ? map->capacity * 2 : 8;
    grown = forksafe__realloc(map->entries, capacity * sizeof(*grown));
    if (!grown)
        return FORKSAFE__ENOMEM;
    map->entries = grown;
    map->capacity = capacity;
    return 0;
}

static forksafe__entry *map_lookup(const forksafe__map *map, const char *key, size_t length)
{
    long position =
        forksafe__index_find_bytes(&map->index, map->entries, sizeof(forksafe__entry), key, length);

    return position >= 0 ? &map->entries[position] : NULL;
}

int forksafe__map_put_new(forksafe__map *map, char *key, char *value, int line)
{
    forksafe__entry *entry;

    if (!key || !value)
        goto fail;
    if ((entry = map_lookup(map, key, strlen(key)))) {
        /* In place, as a Python dict does: the order stays the first put's. */
        forksafe__free(key);
        forksafe__free(entry->value);
        entry->value = value;
        entry->line = line;
        return 0;
    }
    if (map_reserve(map) != 0)
        goto fail;
    entry = &map->entries[map->count];
    entry->key = key;
    entry->value = value;
    entry->line = line;
    if (forksafe__index_add(&map->index, map->entries, sizeof(*entry), map->count) != 0)
        goto fail;
    map->count++;
    return 0;

fail:
    forksafe__free(key);
    forksafe__free(value);
    return FORKSAFE__ENOMEM;
}

int forksafe__map_put(forksafe__map *map, const char *key, const char *value, int line)
{
    forksafe__entry *entry = map_lookup(map, key, strlen(key));
    char *value_copy;

    if (!entry)
        return forksafe__map_put_new(map, forksafe__strdup(key), forksafe__strdup(value), line);
    if (!(value_copy = forksafe__strdup(value)))
        return FORKSAFE__ENOMEM;
    forksafe__free(entry->value);
    entry->value = value_copy;
    entry->line = line;
    return 0;
}

int forksafe__map_update(forksafe__map *map, const forksafe__map *from)
{
    size_t i;
    int rc;

    for (i = 0; i < from->count; i++) {
        const forksafe__entry *entry = &from->entries[i];

        if ((rc = forksafe__map_put(map, entry->key, entry->value, entry->line)) != 0)
            return rc;
    }
    return 0;
}

const forksafe__entry *forksafe__map_find(const forksafe__map *map, const char *key)
{
    return map_lookup(map, key, strlen(key));
}

const forksafe__entry *forksafe__map_find_bytes(const forksafe__map *map, const char *key,
                                                size_t length)
{
    return map_lookup(map, key, length);
}

const char *forksafe__map_get(const forksafe__map *map, const char *key)
{
    const forksafe__entry *entry = forksafe__map_find(map, key);

    return entry ? entry->value : NULL;
}

void forksafe__map_remove(forksafe__map *map, const char *key)
{
    forksafe__entry *entry = map_lookup(map, key, strlen(key));
    size_t position;

    if (!entry)
        return;
    position = (size_t)(entry - map->entries);
    forksafe__free(entry->key);
    forksafe__free(entry->value);
    memmove(entry, entry + 1, (map->count - position - 1) * sizeof(*entry));
    map->count--;
    index_remove(&map->index, map->entries, sizeof(*entry), position);
}

void forksafe__map_clear(forksafe__map *map)
{
    size_t i;

    for (i = 0; i < map->count; i++) {
        forksafe__free(map->entries[i].key);
        forksafe__free(map->entries[i].value);
    }
    forksafe__free(map->entries);
    forksafe__index_free(&map->index);
    map->entries = NULL;
    map->count = 0;
    map->capacity = 0;
}

json_t *forksafe__map_to_json(const forksafe__map *map)
{
    json_t *object = json_object();
    size_t i;

    if (!object)
        return NULL;
    for (i = 0; i < map->count; i++) {
        if (json_object_set_new(object, map->entries[i].key, json_string(map->entries[i].value))) {
            json_decref(object);
            return NULL;
        }
    }
    return object;
}
