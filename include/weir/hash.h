/* Keyed hashing of bytes that a peer chose.
 *
 * A table indexed by keys from the network (record keys, above all) must hash them with a key
 * the peer cannot know, or a sender can pick keys that all land in one bucket and turn every
 * lookup into a scan (hash flooding). weir uses SipHash-2-4 (Aumasson and Bernstein, "SipHash:
 * a fast short-input PRF", 2012) with one 128-bit key per process, drawn from OpenSSL's
 * RAND_bytes the first time a hash is taken. */
#ifndef WEIR_HASH_H
#define WEIR_HASH_H

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

#endif
