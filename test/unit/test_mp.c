/* The allocation-free msgpack reader and the batch encoding every stage walks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "weir/event.h"
#include "weir/mp.h"

static void test_every_type(void **state)
{
    struct {
        const char *bytes;
        size_t len;
        weir_mp_type_t type;
    } cases[] = {
        {"\xc0", 1, WEIR_MP_NIL},
        {"\xc3", 1, WEIR_MP_BOOL},
        {"\x7f", 1, WEIR_MP_UINT},
        {"\xff", 1, WEIR_MP_INT},
        {"\xcc\x80", 2, WEIR_MP_UINT},
        {"\xd0\x80", 2, WEIR_MP_INT},
        {"\xd2\x65\x53\xf1\x00", 5, WEIR_MP_UINT}, /* Docker's int32 time: non-negative */
        {"\xcf\x00\x00\x00\x00\x65\x53\xf1\x00", 9, WEIR_MP_UINT},
        {"\xca\x3f\x80\x00\x00", 5, WEIR_MP_FLOAT},
        {"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00", 9, WEIR_MP_FLOAT},
        {"\xa3"
         "abc",
         4, WEIR_MP_STR},
        {"\xd9\x03"
         "abc",
         5, WEIR_MP_STR},
        {"\xc4\x02\x01\x02", 4, WEIR_MP_BIN},
        {"\x92\x01\x02", 1, WEIR_MP_ARRAY},
        {"\x81\xa1k\xa1v", 1, WEIR_MP_MAP},
        {"\xd4\x05\x01", 3, WEIR_MP_EXT},
        {"\xd7\x00"
         "12345678",
         10, WEIR_MP_EXT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        weir_mp_obj_t o;
        ssize_t n = weir_mp_read(cases[i].bytes, strlen(cases[i].bytes) ? cases[i].len : 1, &o);
        assert_int_equal(n, (ssize_t)cases[i].len);
        assert_int_equal(o.type, cases[i].type);
    }
}

/* ext8/16/32 have a type byte after the length: a regression the fuzzer found. */
static void test_ext8_16_32_with_length_8(void **state)
{
    const char ext8[] = "\xc7\x08\x00\x65\x53\xf1\x00\x07\x5b\xcd\x15";
    const char ext16[] = "\xc8\x00\x08\x00\x65\x53\xf1\x00\x07\x5b\xcd\x15";
    const char ext32[] = "\xc9\x00\x00\x00\x08\x00\x65\x53\xf1\x00\x07\x5b\xcd\x15";
    const char *all[] = {ext8, ext16, ext32};
    size_t lens[] = {11, 12, 14};
    for (int i = 0; i < 3; i++) {
        weir_mp_obj_t o;
        assert_int_equal(weir_mp_read(all[i], lens[i], &o), (ssize_t)lens[i]);
        assert_int_equal(o.type, WEIR_MP_EXT);
        assert_int_equal(o.ext_type, 0);
        assert_int_equal(o.len, 8);
        assert_memory_equal(o.ptr, "\x65\x53\xf1\x00\x07\x5b\xcd\x15", 8);
        assert_int_equal(weir_mp_skip(all[i], lens[i], 4), (ssize_t)lens[i]);
        /* one byte short is incomplete, never read past */
        assert_int_equal(weir_mp_read(all[i], lens[i] - 1, &o), WEIR_MP_INCOMPLETE);
    }
}

static void test_skip_limits(void **state)
{
    char deep[200];
    memset(deep, 0x91, sizeof deep);
    deep[199] = 0x01;
    assert_int_equal(weir_mp_skip(deep, 200, WEIR_MP_MAX_DEPTH), WEIR_MP_TOO_DEEP);
    assert_int_equal(weir_mp_skip(deep + 200 - 11, 11, 10), 11); /* exactly 10 levels */
    assert_int_equal(weir_mp_skip(deep + 200 - 12, 12, 10), WEIR_MP_TOO_DEEP);
    assert_int_equal(weir_mp_skip("\xc1", 1, 4), WEIR_MP_INVALID);
    /* a declared count of 4 billion costs nothing until bytes arrive */
    assert_int_equal(weir_mp_skip("\xdd\xff\xff\xff\xff\x01", 6, 4), WEIR_MP_INCOMPLETE);
}

static void test_batch_roundtrip(void **state)
{
    weir_batch_t b;
    weir_batch_init(&b, "app.web", 7);
    weir_batch_iter_t it;
    weir_entry_t e;
    weir_batch_iter_init(&it, b.data.data, b.data.len); /* empty, data NULL */
    assert_int_equal(weir_batch_iter_next(&it, &e), 0);
    const char rec[] = "\x82\xa1k\xc7\x08\x00\x01\x02\x03\x04\x05\x06\x07\x08\xa1n\x01";
    for (uint32_t i = 0; i < 3; i++) {
        weir_time_t t = {1700000000u + i, i * 7};
        weir_batch_append(&b, t, rec, sizeof rec - 1);
    }
    assert_int_equal(b.count, 3);
    weir_batch_iter_init(&it, b.data.data, b.data.len);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(weir_batch_iter_next(&it, &e), 1);
        assert_int_equal(e.time.sec, 1700000000u + i);
        assert_int_equal(e.time.nsec, i * 7);
        assert_int_equal(e.record_len, sizeof rec - 1);
        assert_memory_equal(e.record, rec, sizeof rec - 1);
    }
    assert_int_equal(weir_batch_iter_next(&it, &e), 0);
    weir_batch_free(&b);
}

/* Every type byte, followed by zero bytes (so every length and count is 0): weir_mp_read and
 * weir_mp_skip take exactly the length weir_mp_hdr gives, and one byte less is incomplete.
 * The forward scanner reads the same table, so the three agree on where any value ends. */
static void test_every_type_byte_agrees(void **state)
{
    (void)state;
    char buf[32];
    for (int c = 0; c < 256; c++) {
        memset(buf, 0, sizeof buf);
        buf[0] = (char)c;
        size_t hlen;
        uint64_t n;
        weir_mp_hdr_kind_t k = weir_mp_hdr((const unsigned char *)buf, sizeof buf, &hlen, &n);
        weir_mp_obj_t o;
        ssize_t r = weir_mp_read(buf, sizeof buf, &o);
        if (c == 0xc1) {
            assert_int_equal(k, WEIR_MP_HDR_RESERVED);
            assert_int_equal(r, WEIR_MP_INVALID);
            continue;
        }
        /* fix types carry their length or count in the byte; the zeros after it are fixint 0 */
        size_t payload = k == WEIR_MP_HDR_VALUE ? (size_t)n : 0;
        size_t elems = k == WEIR_MP_HDR_MAP     ? 2 * (size_t)n
                       : k == WEIR_MP_HDR_ARRAY ? (size_t)n
                                                : 0;
        assert_int_equal(r, (ssize_t)(hlen + payload));
        assert_int_equal(weir_mp_skip(buf, sizeof buf, 4), (ssize_t)(hlen + payload + elems));
        assert_int_equal(weir_mp_read(buf, hlen + payload - 1, &o), WEIR_MP_INCOMPLETE);
        if (hlen > 1)
            assert_int_equal(weir_mp_hdr((const unsigned char *)buf, hlen - 1, &hlen, &n),
                             WEIR_MP_HDR_MORE);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type),
        cmocka_unit_test(test_every_type_byte_agrees),
        cmocka_unit_test(test_ext8_16_32_with_length_8),
        cmocka_unit_test(test_skip_limits),
        cmocka_unit_test(test_batch_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
