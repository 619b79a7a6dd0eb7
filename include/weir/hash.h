/* Keyed hashing of bytes that a peer chose, and a set of byte strings built on it.
 *
 * Any table indexed by keys from the network (record keys, query parameters, header names)
 * must hash them with a key the peer cannot know, or a sender can pick keys that all land in
 * one bucket and turn every lookup into a scan (hash flooding). weir uses SipHash-2-4
 * (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012) with one 128-bit key per
 * process, drawn from OpenSSL's RAND_bytes the first time a hash is taken.
 *
 * The set does not own the strings: it stores pointers, so the bytes must stay where they are
 * while the set refers to them (until weir_hset_clear or weir_hset_free). */
#ifndef WEIR_HASH_H
#define WEIR_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A SipHash key: the 16 key bytes read as two little-endian 64-bit words, as in the paper. */
typedef struct weir_hash_key {
    uint64_t k0, k1;
} weir_hash_key_t;

/* SipHash-2-4 of n bytes under `key`. */
uint64_t weir_siphash24(const weir_hash_key_t *key, const void *data, size_t n);
/* The key from 16 bytes (k0 from bytes 0..7, k1 from 8..15, little-endian). */
weir_hash_key_t weir_hash_key_from_bytes(const unsigned char bytes[16]);
/* SipHash-2-4 under the process's random key. Aborts with a message if the system cannot
 * supply random bytes: a predictable key would silently reopen hash flooding. */
uint64_t weir_hash(const void *data, size_t n);

/* ---- set of byte strings -------------------------------------------------------------------
 * Open addressing with linear probing, at most half full; each entry carries a caller value
 * (an index, usually). Clearing is O(1) (a generation number), so one set can serve many small
 * records after one large one without paying for its size again. */

#define WEIR_HSET_MIN_SLOTS 16

/* A slot is 16 bytes and the strings live in a dense array beside the slots, so a probe
 * touches one small slot and, only when the full 64-bit hash matches, one entry: with 40-byte
 * slots a table of 100,000 keys missed the cache on every probe. */
typedef struct weir_hset_slot {
    uint32_t gen;   /* the slot is in use when gen == the set's gen */
    uint32_t entry; /* index into entries */
    uint64_t hash;
} weir_hset_slot_t;

typedef struct weir_hset_entry {
    const char *key;
    size_t len;
    size_t value;
} weir_hset_entry_t;

typedef struct weir_hset {
    weir_hset_slot_t *slots;
    size_t cap; /* slots: a power of two, or 0 */
    weir_hset_entry_t *entries;
    size_t n, entries_cap;
    uint32_t gen;
    uint64_t probes; /* slots weir_hset_add examined so far: tests use it to show linear cost */
} weir_hset_t;

void weir_hset_init(weir_hset_t *s);
void weir_hset_free(weir_hset_t *s);
/* Forgets every entry; keeps the memory. */
void weir_hset_clear(weir_hset_t *s);
/* Adds `key` with `value` and returns true, or, when the key is already there, leaves the set
 * as it is, stores the existing entry's value in *existing (if not NULL) and returns false. */
bool weir_hset_add(weir_hset_t *s, const void *key, size_t len, size_t value, size_t *existing);
/* The value of `key`, or false when it is absent. */
bool weir_hset_get(const weir_hset_t *s, const void *key, size_t len, size_t *value);

#endif
