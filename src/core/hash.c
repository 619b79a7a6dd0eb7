/* SipHash-2-4 as the paper describes it (section 2): four 64-bit words of state initialised
 * from the key and four constants, two SipRounds per 8-byte message word, the last word
 * carrying the leftover bytes and the length's low byte in its top byte, then 0xff into v2 and
 * four finalisation rounds. Words are read little-endian whatever the host, so a hash does not
 * depend on the machine.
 *
 * The process key is drawn once, under pthread_once, from OpenSSL's RAND_bytes; after that
 * weir_hash only reads it, so any thread may hash. */
#include "weir/hash.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/rand.h>

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
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
    /* "somepseudorandomlygeneratedbytes", the paper's initialisation constants */
    uint64_t v0 = key->k0 ^ 0x736f6d6570736575ull;
    uint64_t v1 = key->k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = key->k0 ^ 0x6c7967656e657261ull;
    uint64_t v3 = key->k1 ^ 0x7465646279746573ull;
    size_t whole = n & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = le64(p + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)(n & 0xff) << 56;
    for (size_t i = 0; i < (n & 7); i++)
        last |= (uint64_t)p[whole + i] << (8 * i);
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
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
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1) {
        fprintf(stderr, "weir: cannot draw a random hash key (RAND_bytes failed)\n");
        abort();
    }
    process_key = weir_hash_key_from_bytes(b);
}

uint64_t weir_hash(const void *data, size_t n)
{
    pthread_once(&process_key_once, process_key_init);
    return weir_siphash24(&process_key, data, n);
}
