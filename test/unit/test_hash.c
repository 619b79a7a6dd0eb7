/* SipHash-2-4 against the paper's vectors (key 00..0f; messages 00, 00 01, ...), and the
 * process-keyed hash: stable within the process, different from the zero key's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "weir/hash.h"

static weir_hash_key_t paper_key(void)
{
    unsigned char k[16];
    for (int i = 0; i < 16; i++)
        k[i] = (unsigned char)i;
    return weir_hash_key_from_bytes(k);
}

static void test_siphash_vectors(void **state)
{
    (void)state;
    weir_hash_key_t key = paper_key();
    unsigned char msg[64];
    for (int i = 0; i < 64; i++)
        msg[i] = (unsigned char)i;
    /* Appendix A: the 15-byte message */
    assert_int_equal(weir_siphash24(&key, msg, 15), 0xa129ca6149be45e5ull);
    /* the reference implementation's vectors for lengths 0, 1, 7, 8 and 63 (each a tail
     * length and a word boundary) */
    assert_int_equal(weir_siphash24(&key, msg, 0), 0x726fdb47dd0e0e31ull);
    assert_int_equal(weir_siphash24(&key, msg, 1), 0x74f839c593dc67fdull);
    assert_int_equal(weir_siphash24(&key, msg, 7), 0xab0200f58b01d137ull);
    assert_int_equal(weir_siphash24(&key, msg, 8), 0x93f5f5799a932462ull);
    assert_int_equal(weir_siphash24(&key, msg, 63), 0x958a324ceb064572ull);
}

static void test_process_key(void **state)
{
    (void)state;
    assert_int_equal(weir_hash("abc", 3), weir_hash("abc", 3));
    assert_int_not_equal(weir_hash("abc", 3), weir_hash("abd", 3));
    weir_hash_key_t zero = {0, 0};
    assert_int_not_equal(weir_hash("abc", 3), weir_siphash24(&zero, "abc", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vectors),
        cmocka_unit_test(test_process_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
