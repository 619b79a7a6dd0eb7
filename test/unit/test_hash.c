/* SipHash-2-4 against the paper's published vector, and the keyed set of byte strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "weir/hash.h"

static weir_hash_key_t paper_key(void)
{
    unsigned char k[16];
    for (int i = 0; i < 16; i++)
        k[i] = (unsigned char)i;
    return weir_hash_key_from_bytes(k);
}

/* Appendix A of the paper: key 00..0f, message 00..0e (15 bytes) -> a129ca6149be45e5. */
static void test_paper_vector(void **state)
{
    (void)state;
    weir_hash_key_t key = paper_key();
    assert_int_equal(key.k0, 0x0706050403020100ull);
    assert_int_equal(key.k1, 0x0f0e0d0c0b0a0908ull);
    unsigned char msg[15];
    for (int i = 0; i < 15; i++)
        msg[i] = (unsigned char)i;
    assert_int_equal(weir_siphash24(&key, msg, sizeof msg), 0xa129ca6149be45e5ull);
}

/* The reference implementation's vectors.h: the empty message and an 8-byte one (the first
 * and ninth entries, read as little-endian words), so both the tail-only path and the path
 * with one whole word and an empty tail are covered. */
static void test_reference_vectors(void **state)
{
    (void)state;
    weir_hash_key_t key = paper_key();
    assert_int_equal(weir_siphash24(&key, "", 0), 0x726fdb47dd0e0e31ull);
    unsigned char msg[8];
    for (int i = 0; i < 8; i++)
        msg[i] = (unsigned char)i;
    assert_int_equal(weir_siphash24(&key, msg, 8), 0x93f5f5799a932462ull);
}

static void test_process_key_is_random_and_stable(void **state)
{
    (void)state;
    weir_hash_key_t key = paper_key();
    /* the process key is not the all-zero or the paper's key (a 2^-64 chance of a false
     * failure), and it does not change between calls */
    weir_hash_key_t zero = {0, 0};
    uint64_t h = weir_hash("abc", 3);
    assert_int_not_equal(h, weir_siphash24(&zero, "abc", 3));
    assert_int_not_equal(h, weir_siphash24(&key, "abc", 3));
    assert_int_equal(h, weir_hash("abc", 3));
}

static void test_set_add_get(void **state)
{
    (void)state;
    weir_hset_t s;
    weir_hset_init(&s);
    size_t v = 99;
    assert_false(weir_hset_get(&s, "a", 1, &v));
    assert_true(weir_hset_add(&s, "a", 1, 0, NULL));
    assert_true(weir_hset_add(&s, "", 0, 1, NULL)); /* the empty key is a key */
    assert_true(weir_hset_add(&s, "ab", 2, 2, NULL));
    assert_false(weir_hset_add(&s, "a", 1, 7, &v));
    assert_int_equal(v, 0); /* the first value stays */
    assert_false(weir_hset_add(&s, "", 0, 7, &v));
    assert_int_equal(v, 1);
    assert_true(weir_hset_get(&s, "ab", 2, &v));
    assert_int_equal(v, 2);
    assert_false(weir_hset_get(&s, "b", 1, &v));
    assert_int_equal(s.n, 3);
    weir_hset_clear(&s);
    assert_int_equal(s.n, 0);
    assert_false(weir_hset_get(&s, "a", 1, &v));
    assert_true(weir_hset_add(&s, "a", 1, 5, NULL));
    assert_true(weir_hset_get(&s, "a", 1, &v));
    assert_int_equal(v, 5);
    weir_hset_free(&s);
}

/* 40,000 distinct keys and then each again: every one is found as a repeat with its index, and
 * the probes stay a small multiple of the key count (a list would take 800 million). */
#define MANY 40000
static void test_set_many_keys_linear(void **state)
{
    (void)state;
    static char keys[MANY][8];
    weir_hset_t s;
    weir_hset_init(&s);
    for (size_t i = 0; i < MANY; i++) {
        snprintf(keys[i], sizeof keys[i], "k%zu", i);
        assert_true(weir_hset_add(&s, keys[i], strlen(keys[i]), i, NULL));
    }
    for (size_t i = 0; i < MANY; i++) {
        size_t v;
        assert_false(weir_hset_add(&s, keys[i], strlen(keys[i]), 0, &v));
        assert_int_equal(v, i);
    }
    assert_int_equal(s.n, MANY);
    assert_true(s.probes < 8ull * 2 * MANY);
    weir_hset_free(&s);
}

/* Clearing many times never brings back an entry of an earlier generation, including across
 * the generation counter's wrap. */
static void test_set_clear_wrap(void **state)
{
    (void)state;
    weir_hset_t s;
    weir_hset_init(&s);
    assert_true(weir_hset_add(&s, "x", 1, 1, NULL));
    s.gen = UINT32_MAX; /* as if cleared four billion times, then "y" added */
    s.n = 0;
    assert_true(weir_hset_add(&s, "y", 1, 2, NULL));
    weir_hset_clear(&s); /* wraps */
    assert_int_equal(s.gen, 1);
    assert_false(weir_hset_get(&s, "x", 1, NULL));
    assert_false(weir_hset_get(&s, "y", 1, NULL));
    assert_true(weir_hset_add(&s, "y", 1, 3, NULL));
    weir_hset_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paper_vector),
        cmocka_unit_test(test_reference_vectors),
        cmocka_unit_test(test_process_key_is_random_and_stable),
        cmocka_unit_test(test_set_add_get),
        cmocka_unit_test(test_set_many_keys_linear),
        cmocka_unit_test(test_set_clear_wrap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
