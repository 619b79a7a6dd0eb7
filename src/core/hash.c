/* SipHash-2-4 and the keyed set of byte strings (include/weir/hash.h).
 *
 * The hash follows the paper's description: four 64-bit words initialised from the key and
 * the constants "somepseudorandomlygeneratedbytes", two SipRounds per 8-byte little-endian
 * message word, a last word holding the remaining bytes with the length (mod 256) in its top
 * byte, then 0xff into v2 and four SipRounds. test/unit/test_hash.c checks the paper's test
 * vector.
 *
 * Invariants: the process key is drawn once and never changes (a set built before and
 * searched after would otherwise lose its entries); the set is never more than half full, so
 * a probe sequence always ends at a free slot. */
#include "weir/hash.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weir/common.h"

#define SIP_C0 0x736f6d6570736575ull /* "somepseu" */
#define SIP_C1 0x646f72616e646f6dull /* "dorandom" */
#define SIP_C2 0x6c7967656e657261ull /* "lygenera" */
#define SIP_C3 0x7465646279746573ull /* "tedbytes" */

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = rotl(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = rotl(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = rotl(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = rotl(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = rotl(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = rotl(v2, 32);                                                                         \
    } while (0)

uint64_t weir_siphash24(const weir_hash_key_t *key, const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t v0 = key->k0 ^ SIP_C0, v1 = key->k1 ^ SIP_C1;
    uint64_t v2 = key->k0 ^ SIP_C2, v3 = key->k1 ^ SIP_C3;
    size_t whole = n - n % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = le64(p + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)(n & 0xff) << 56;
    for (size_t i = 0; i < n % 8; i++)
        b |= (uint64_t)p[whole + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

weir_hash_key_t weir_hash_key_from_bytes(const unsigned char bytes[16])
{
    return (weir_hash_key_t){le64(bytes), le64(bytes + 8)};
}

static weir_hash_key_t process_key;
static pthread_once_t process_key_once = PTHREAD_ONCE_INIT;

static void process_key_init(void)
{
    unsigned char k[16];
    if (RAND_bytes(k, sizeof k) != 1) {
        /* no logging here: the logger may not be set up, and this must never be ignored */
        fputs("weir: cannot draw the hash key from the system's random source\n", stderr);
        abort();
    }
    process_key = weir_hash_key_from_bytes(k);
}

uint64_t weir_hash(const void *data, size_t n)
{
    pthread_once(&process_key_once, process_key_init);
    return weir_siphash24(&process_key, data, n);
}

/* ---- set ----------------------------------------------------------------------------------- */

void weir_hset_init(weir_hset_t *s)
{
    memset(s, 0, sizeof *s);
    s->gen = 1;
}

void weir_hset_free(weir_hset_t *s)
{
    free(s->slots);
    free(s->entries);
    weir_hset_init(s);
}

void weir_hset_clear(weir_hset_t *s)
{
    s->n = 0;
    if (++s->gen == 0) { /* wrapped: stale generations would look live again */
        if (s->slots) memset(s->slots, 0, s->cap * sizeof *s->slots);
        s->gen = 1;
    }
}

static size_t find_slot(const weir_hset_t *s, const void *key, size_t len, uint64_t h,
                        uint64_t *probes)
{
    size_t mask = s->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const weir_hset_slot_t *sl = &s->slots[i];
        if (probes) (*probes)++;
        if (sl->gen != s->gen) return i;
        if (sl->hash != h) continue;
        const weir_hset_entry_t *e = &s->entries[sl->entry];
        if (e->len == len && (len == 0 || memcmp(e->key, key, len) == 0)) return i;
    }
}

static void grow(weir_hset_t *s)
{
    size_t cap = s->cap ? s->cap * 2 : WEIR_HSET_MIN_SLOTS;
    weir_hset_slot_t *old = s->slots;
    size_t old_cap = s->cap;
    uint32_t old_gen = s->gen;
    s->slots = weir_calloc(cap, sizeof *s->slots);
    s->cap = cap;
    s->gen = 1;
    size_t mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].gen != old_gen) continue;
        size_t j = (size_t)old[i].hash & mask; /* keys are distinct: the first free slot */
        while (s->slots[j].gen == s->gen)
            j = (j + 1) & mask;
        s->slots[j] = old[i];
        s->slots[j].gen = s->gen;
    }
    free(old);
}

bool weir_hset_add(weir_hset_t *s, const void *key, size_t len, size_t value, size_t *existing)
{
    if ((s->n + 1) * 2 > s->cap) grow(s);
    uint64_t h = weir_hash(key, len);
    size_t i = find_slot(s, key, len, h, &s->probes);
    weir_hset_slot_t *sl = &s->slots[i];
    if (sl->gen == s->gen) {
        if (existing) *existing = s->entries[sl->entry].value;
        return false;
    }
    if (s->n == UINT32_MAX) abort(); /* 4 billion keys: no caller gets near (bodies are MiBs) */
    if (s->n == s->entries_cap) {
        s->entries_cap = s->entries_cap ? s->entries_cap * 2 : WEIR_HSET_MIN_SLOTS / 2;
        s->entries = weir_realloc(s->entries, s->entries_cap * sizeof *s->entries);
    }
    s->entries[s->n] = (weir_hset_entry_t){.key = key, .len = len, .value = value};
    *sl = (weir_hset_slot_t){.gen = s->gen, .entry = (uint32_t)s->n, .hash = h};
    s->n++;
    return true;
}

bool weir_hset_get(const weir_hset_t *s, const void *key, size_t len, size_t *value)
{
    if (s->n == 0) return false;
    size_t i = find_slot(s, key, len, weir_hash(key, len), NULL);
    if (s->slots[i].gen != s->gen) return false;
    if (value) *value = s->entries[s->slots[i].entry].value;
    return true;
}
