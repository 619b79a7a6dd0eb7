/* The forward frame scanner: frames found in any split of the byte stream, in linear work, with
 * the frame size, count and depth limits exactly at their limits and one past them.
 * Case numbers refer to docs/forward-protocol.md section 7. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#include "../../src/input/forward/forward_internal.h"
#include "weir/event.h"
#include "weir/forward.h"
#include "weir/log.h"

#define MIB (1024u * 1024)
#define T_SEC 1700000000u

/* "93 a1 74" -> bytes appended to b */
static void hex_append(weir_buf_t *b, const char *hex)
{
    for (const char *p = hex; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        unsigned v;
        assert_int_equal(sscanf(p, "%2x", &v), 1);
        weir_buf_putc(b, (char)v);
        p += 2;
    }
}

static weir_buf_t hex(const char *h)
{
    weir_buf_t b;
    weir_buf_init(&b);
    hex_append(&b, h);
    return b;
}

/* One gzip member (mtime 0, as Fluentd's and zlib's default header). */
static void gzip_append(weir_buf_t *out, const void *in, size_t n)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    weir_buf_reserve(out, deflateBound(&zs, n));
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (unsigned)n;
    zs.next_out = (unsigned char *)out->data + out->len;
    zs.avail_out = (unsigned)(out->cap - out->len);
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    out->len += zs.total_out;
    deflateEnd(&zs);
}

static const char ENTRY1[] = "92 d7 00 65 53 f1 00 00 00 00 01 81 a1 61 01";
static const char ENTRY2[] = "92 d7 00 65 53 f1 00 00 00 00 02 81 a1 61 02";

/* The frames of cases 7, 13, 14 and 17, and the PING of section 2.4. */
static weir_buf_t frame_case7(void)
{
    return hex("94 a1 74 ce 65 53 f1 00 81 a1 6b a1 76 81 a5 63 68 75 6e 6b a2 63 31");
}

static weir_buf_t frame_case13(void)
{
    weir_buf_t b = hex("93 a3 61 70 70 db 00 00 00 1e");
    hex_append(&b, ENTRY1);
    hex_append(&b, ENTRY2);
    hex_append(&b, "83 a4 73 69 7a 65 02 aa 63 6f 6d 70 72 65 73 73 65 64 a4 74 65 78 74 a5 63 68 "
                   "75 6e 6b b9 41 41 45 43 41 77 51 46 42 67 63 49 43 51 6f 4c 44 41 30 4f 44 77 "
                   "3d 3d 0a");
    return b;
}

static weir_buf_t frame_case14(void)
{
    weir_buf_t e1 = hex(ENTRY1), e2 = hex(ENTRY2), gz;
    weir_buf_init(&gz);
    gzip_append(&gz, e1.data, e1.len);
    gzip_append(&gz, e2.data, e2.len);
    weir_buf_t b = hex("93 a3 61 70 70 db");
    char len[4] = {0, 0, 0, (char)gz.len};
    weir_buf_append(&b, len, 4);
    weir_buf_append(&b, gz.data, gz.len);
    hex_append(&b, "82 a4 73 69 7a 65 02 aa 63 6f 6d 70 72 65 73 73 65 64 a4 67 7a 69 70");
    weir_buf_free(&e1);
    weir_buf_free(&e2);
    weir_buf_free(&gz);
    return b;
}

static weir_buf_t frame_case17(void)
{
    return hex("93 a3 61 70 70 91 92 92 d7 00 65 53 f1 00 00 00 00 00 80 81 a1 61 01 81 ad 66 6c "
               "75 65 6e 74 5f 73 69 67 6e 61 6c 00");
}

static const uint8_t NONCE[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const uint8_t AUTH[16] = {16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

static weir_buf_t frame_ping(void)
{
    weir_buf_t b;
    weir_buf_init(&b);
    fwd_buf_array_hdr(&b, 6);
    fwd_buf_cstr(&b, "PING");
    fwd_buf_cstr(&b, "client.example");
    fwd_buf_cstr(&b, "0123456789abcdef0123456789abcdef");
    fwd_buf_cstr(&b, "3a680037d3979b4f789647cd22e7e55f2197791eb498799823c424e2213124ed63938d1c422f"
                     "50e08ec02957ef44df338e46c77e8ea164b0dde6d64e171b30df");
    fwd_buf_cstr(&b, "");
    fwd_buf_cstr(&b, "");
    return b;
}

/* ---- basic framing ---- */

static void test_frames_back_to_back(void **state)
{
    /* case 33: nil heartbeats around a Message frame; each is its own frame */
    weir_buf_t b = hex("c0 93 a1 74 ce 65 53 f1 00 81 a1 6b a1 76 c0 c0");
    fwd_scanner_t s;
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    size_t want[] = {1, 13, 1, 1}, off = 0, n;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(fwd_scanner_scan(&s, b.data + off, b.len - off, &n, NULL), FWD_SCAN_FRAME);
        assert_int_equal(n, want[i]);
        off += n;
    }
    assert_int_equal(off, b.len);
    assert_int_equal(fwd_scanner_scan(&s, b.data + off, 0, &n, NULL), FWD_SCAN_NEED_MORE);
    weir_buf_free(&b);
}

static void test_reserved_byte(void **state)
{
    /* case 48 */
    weir_buf_t b = hex("93 a1 74 c1 81 a1 6b a1 76");
    fwd_scanner_t s;
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    size_t n;
    const char *why = NULL;
    assert_int_equal(fwd_scanner_scan(&s, b.data, b.len, &n, &why), FWD_SCAN_ERROR);
    assert_non_null(strstr(why, "0xc1"));
    /* the reserved byte is reported even before the frame could complete */
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    assert_int_equal(fwd_scanner_scan(&s, b.data, 4, &n, &why), FWD_SCAN_ERROR);
    weir_buf_free(&b);
}

static void test_top_level_scalars_are_frames(void **state)
{
    /* the scanner only frames; case 49's non-arrays are the decoder's to reject */
    const char *frames[] = {"01", "80", "a3 61 62 63", "c0"};
    for (size_t i = 0; i < 4; i++) {
        weir_buf_t b = hex(frames[i]);
        fwd_scanner_t s;
        fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
        size_t n;
        assert_int_equal(fwd_scanner_scan(&s, b.data, b.len, &n, NULL), FWD_SCAN_FRAME);
        assert_int_equal(n, b.len);
        weir_buf_free(&b);
    }
}

/* ---- split at every byte (case 28, and the PING of case 91) ---- */

static void decode_summary(const char *f, size_t n, int *rc, uint32_t *count, weir_buf_t *bytes,
                           size_t *chunk_len)
{
    weir_batch_t b;
    weir_batch_init(&b, "", 0);
    fwd_decode_opts_t o;
    fwd_decode_opts_init(&o);
    fwd_frame_info_t info;
    weir_err_t err;
    *rc = fwd_decode_frame(f, n, &o, &b, &info, &err);
    *count = b.count;
    weir_buf_init(bytes);
    weir_buf_append(bytes, b.data.data, b.data.len);
    *chunk_len = info.chunk_len;
    weir_batch_free(&b);
}

static void split_everywhere(weir_buf_t f, bool is_ping)
{
    int rc0;
    uint32_t count0;
    weir_buf_t bytes0;
    size_t chunk0;
    if (!is_ping) decode_summary(f.data, f.len, &rc0, &count0, &bytes0, &chunk0);
    for (size_t k = 1; k < f.len; k++) {
        fwd_scanner_t s;
        fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
        size_t n = 0;
        assert_int_equal(fwd_scanner_scan(&s, f.data, k, &n, NULL), FWD_SCAN_NEED_MORE);
        assert_int_equal(fwd_scanner_scan(&s, f.data, f.len, &n, NULL), FWD_SCAN_FRAME);
        assert_int_equal(n, f.len);
        if (is_ping) {
            fwd_security_t sec = {.enabled = true,
                                  .self_hostname = "server.example",
                                  .shared_key = "secret",
                                  .allow_anonymous_source = true};
            weir_buf_t pong;
            weir_buf_init(&pong);
            assert_true(
                fwd_ping_check(&sec, f.data, n, NONCE, AUTH, NULL, "127.0.0.1", &pong, NULL));
            assert_int_equal(pong.len, 153);
            weir_buf_free(&pong);
        } else {
            int rc;
            uint32_t count;
            weir_buf_t bytes;
            size_t chunk;
            decode_summary(f.data, n, &rc, &count, &bytes, &chunk);
            assert_int_equal(rc, rc0);
            assert_int_equal(count, count0);
            assert_int_equal(chunk, chunk0);
            assert_int_equal(bytes.len, bytes0.len);
            assert_memory_equal(bytes.data, bytes0.data, bytes.len);
            weir_buf_free(&bytes);
        }
    }
    if (!is_ping) {
        assert_int_equal(rc0, 0);
        assert_true(count0 >= 1);
        weir_buf_free(&bytes0);
    }
}

static void test_split_case7(void **state)
{
    weir_buf_t f = frame_case7();
    split_everywhere(f, false);
    weir_buf_free(&f);
}

static void test_split_case13(void **state)
{
    weir_buf_t f = frame_case13();
    assert_int_equal(f.len, 95);
    split_everywhere(f, false);
    weir_buf_free(&f);
}

static void test_split_case14(void **state)
{
    weir_buf_t f = frame_case14();
    split_everywhere(f, false);
    weir_buf_free(&f);
}

static void test_split_case17(void **state)
{
    weir_buf_t f = frame_case17();
    split_everywhere(f, false);
    weir_buf_free(&f);
}

static void test_split_ping(void **state)
{
    weir_buf_t f = frame_ping();
    split_everywhere(f, true);
    weir_buf_free(&f);
}

static void test_ping_pipelined_with_frame(void **state)
{
    /* case 91: the PING and the first event frame in one read: two frames, in order */
    weir_buf_t b = frame_ping();
    size_t ping_len = b.len;
    hex_append(&b, "93 a1 74 ce 65 53 f1 00 81 a1 6b a1 76");
    fwd_scanner_t s;
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    size_t n;
    assert_int_equal(fwd_scanner_scan(&s, b.data, b.len, &n, NULL), FWD_SCAN_FRAME);
    assert_int_equal(n, ping_len);
    fwd_security_t sec = {.enabled = true,
                          .self_hostname = "server.example",
                          .shared_key = "secret",
                          .allow_anonymous_source = true};
    weir_buf_t pong;
    weir_buf_init(&pong);
    assert_true(fwd_ping_check(&sec, b.data, n, NONCE, AUTH, NULL, "127.0.0.1", &pong, NULL));
    weir_buf_free(&pong);
    assert_int_equal(fwd_scanner_scan(&s, b.data + n, b.len - n, &n, NULL), FWD_SCAN_FRAME);
    int rc;
    uint32_t count;
    weir_buf_t bytes;
    size_t chunk;
    decode_summary(b.data + ping_len, n, &rc, &count, &bytes, &chunk);
    assert_int_equal(rc, 0);
    assert_int_equal(count, 1);
    weir_buf_free(&bytes);
    weir_buf_free(&b);
}

/* ---- linear work (case 29) ---- */

/* Feeds f one byte at a time to the end; returns the scanner work it took. */
static uint64_t bytewise_work(const weir_buf_t *f)
{
    fwd_scanner_t s;
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    uint64_t before = fwd_scan_work;
    size_t n = 0;
    for (size_t k = 1; k < f->len; k++)
        assert_int_equal(fwd_scanner_scan(&s, f->data, k, &n, NULL), FWD_SCAN_NEED_MORE);
    assert_int_equal(fwd_scanner_scan(&s, f->data, f->len, &n, NULL), FWD_SCAN_FRAME);
    assert_int_equal(n, f->len);
    return fwd_scan_work - before;
}

static void test_bytewise_packed_64k_is_linear(void **state)
{
    /* a 64 KiB PackedForward, Fluentd style (str32 payload of canonical entries) */
    weir_buf_t entries;
    weir_buf_init(&entries);
    while (entries.len < 64 * 1024)
        hex_append(&entries, ENTRY1);
    weir_buf_t f = hex("93 a3 61 70 70 db");
    char len[4];
    fwd_put_be(len, entries.len, 4);
    weir_buf_append(&f, len, 4);
    weir_buf_append(&f, entries.data, entries.len);
    hex_append(&f, "81 a4 73 69 7a 65 02");
    uint64_t work = bytewise_work(&f);
    /* one header per call (the payload's, re-read until it is all there) plus each value */
    assert_true(work <= 2 * f.len);
    /* the same frame in one piece costs a handful of headers */
    fwd_scanner_t s;
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    uint64_t before = fwd_scan_work;
    size_t n;
    assert_int_equal(fwd_scanner_scan(&s, f.data, f.len, &n, NULL), FWD_SCAN_FRAME);
    assert_true(fwd_scan_work - before <= 8);
    weir_buf_free(&entries);
    weir_buf_free(&f);
}

static void test_bytewise_forward_64k_is_linear(void **state)
{
    /* a 64 KiB Forward frame: thousands of small values, each examined about once */
    weir_buf_t f = hex("92 a3 61 70 70 dc");
    size_t count = 64 * 1024 / 15;
    char c[2];
    fwd_put_be(c, count, 2);
    weir_buf_append(&f, c, 2);
    for (size_t i = 0; i < count; i++)
        hex_append(&f, ENTRY1);
    uint64_t work = bytewise_work(&f);
    /* 7 values per entry; a quadratic rescan would cost ~ len^2 / 2 = 2e9 */
    assert_true(work <= 2 * f.len);
    weir_buf_free(&f);
}

/* ---- frame size limit (cases 54, 55, 56, 58) ---- */

/* A PackedForward frame of exactly `total` bytes. */
static weir_buf_t packed_of_size(size_t total)
{
    weir_buf_t f = hex("93 a1 74 db");
    size_t payload = total - 3 - 5 - 1;
    char len[4];
    fwd_put_be(len, payload, 4);
    weir_buf_append(&f, len, 4);
    weir_buf_reserve(&f, payload + 1);
    memset(f.data + f.len, 0x01, payload); /* content is irrelevant to the scanner */
    f.len += payload;
    weir_buf_putc(&f, (char)0xc0);
    assert_int_equal(f.len, total);
    return f;
}

static void test_max_frame_exact_and_one_past(void **state)
{
    weir_buf_t f = packed_of_size(MIB);
    fwd_scanner_t s;
    size_t n;
    const char *why = NULL;
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    assert_int_equal(fwd_scanner_scan(&s, f.data, f.len, &n, &why), FWD_SCAN_FRAME);
    assert_int_equal(n, MIB);
    /* followed by more bytes in the buffer: still a frame of exactly the limit */
    weir_buf_putc(&f, (char)0xc0);
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    assert_int_equal(fwd_scanner_scan(&s, f.data, f.len, &n, &why), FWD_SCAN_FRAME);
    assert_int_equal(n, MIB);
    weir_buf_free(&f);

    /* case 58: cap + 1 is refused from its header, long before it is buffered */
    f = packed_of_size(MIB + 1);
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    assert_int_equal(fwd_scanner_scan(&s, f.data, 8, &n, &why), FWD_SCAN_ERROR);
    assert_non_null(strstr(why, "limit"));
    weir_buf_free(&f);
}

static void test_buffered_bytes_over_limit(void **state)
{
    /* every declared size fits, but the frame goes on past the cap: [[28 x [1]], 1] is 61
     * bytes, and only its last element does not fit in 60 */
    weir_buf_t f = hex("92 dc 00 1c");
    for (int i = 0; i < 28; i++)
        hex_append(&f, "91 01");
    hex_append(&f, "01");
    assert_int_equal(f.len, 61);
    fwd_scanner_t s;
    size_t n;
    const char *why = NULL;
    fwd_scanner_init(&s, 60, FWD_MAX_DEPTH);
    assert_int_equal(fwd_scanner_scan(&s, f.data, 59, &n, &why), FWD_SCAN_NEED_MORE);
    assert_int_equal(fwd_scanner_scan(&s, f.data, 60, &n, &why), FWD_SCAN_ERROR);
    assert_non_null(strstr(why, "frame exceeds"));
    weir_buf_free(&f);
}

static void test_huge_declared_sizes(void **state)
{
    /* 54: array of 2^31-1 entries; 55: map of 2^32-1 pairs; 56: str32 tag of 4 GiB */
    const char *frames[] = {
        "92 a1 74 dd 7f ff ff ff 00 00 00 00 00 00 00 00 00 00",
        "93 a1 74 ce 65 53 f1 00 df ff ff ff ff 00 00 00 00",
        "93 db ff ff ff ff 61",
        "93 a1 74 c6 ff ff ff ff",
        "93 a1 74 c9 ff ff ff ff 00",
    };
    for (size_t i = 0; i < sizeof frames / sizeof *frames; i++) {
        weir_buf_t f = hex(frames[i]);
        fwd_scanner_t s;
        size_t n;
        const char *why = NULL;
        fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
        assert_int_equal(fwd_scanner_scan(&s, f.data, f.len, &n, &why), FWD_SCAN_ERROR);
        assert_non_null(strstr(why, "exceeds the frame size limit"));
        weir_buf_free(&f);
    }
}

static void test_count_exactly_fitting(void **state)
{
    /* a map of n pairs needs 2n bytes: with exactly that budget left it is accepted */
    weir_buf_t f = hex("de 00 08"); /* 3-byte header + 16 bytes of pairs = 19 */
    for (int i = 0; i < 16; i++)
        weir_buf_putc(&f, 0x01);
    fwd_scanner_t s;
    size_t n;
    fwd_scanner_init(&s, 19, FWD_MAX_DEPTH);
    assert_int_equal(fwd_scanner_scan(&s, f.data, 3, &n, NULL), FWD_SCAN_NEED_MORE);
    assert_int_equal(fwd_scanner_scan(&s, f.data, f.len, &n, NULL), FWD_SCAN_FRAME);
    fwd_scanner_init(&s, 18, FWD_MAX_DEPTH);
    assert_int_equal(fwd_scanner_scan(&s, f.data, 3, &n, NULL), FWD_SCAN_ERROR);
    weir_buf_free(&f);
}

/* ---- depth (case 57) ---- */

static weir_buf_t nested(int levels)
{
    weir_buf_t f;
    weir_buf_init(&f);
    for (int i = 0; i < levels; i++)
        weir_buf_putc(&f, (char)0x91);
    weir_buf_putc(&f, 0x01);
    return f;
}

static void test_depth_exact_and_one_past(void **state)
{
    fwd_scanner_t s;
    size_t n;
    const char *why = NULL;
    weir_buf_t f = nested(FWD_MAX_DEPTH);
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    assert_int_equal(fwd_scanner_scan(&s, f.data, f.len, &n, &why), FWD_SCAN_FRAME);
    assert_int_equal(n, f.len);
    weir_buf_free(&f);

    f = nested(FWD_MAX_DEPTH + 1);
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    assert_int_equal(fwd_scanner_scan(&s, f.data, f.len, &n, &why), FWD_SCAN_ERROR);
    assert_non_null(strstr(why, "depth"));
    weir_buf_free(&f);

    /* an empty container is a level too */
    f = nested(FWD_MAX_DEPTH);
    f.data[f.len - 1] = (char)0x90;
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    assert_int_equal(fwd_scanner_scan(&s, f.data, f.len, &n, &why), FWD_SCAN_ERROR);
    weir_buf_free(&f);

    /* a smaller configured depth */
    f = nested(8);
    fwd_scanner_init(&s, MIB, 8);
    assert_int_equal(fwd_scanner_scan(&s, f.data, f.len, &n, &why), FWD_SCAN_FRAME);
    fwd_scanner_init(&s, MIB, 7);
    assert_int_equal(fwd_scanner_scan(&s, f.data, f.len, &n, &why), FWD_SCAN_ERROR);
    weir_buf_free(&f);
}

static void test_million_nested_arrays(void **state)
{
    size_t len = 1000000;
    char *b = malloc(len);
    memset(b, 0x91, len);
    fwd_scanner_t s;
    size_t n;
    const char *why = NULL;
    fwd_scanner_init(&s, 2 * MIB, FWD_MAX_DEPTH);
    assert_int_equal(fwd_scanner_scan(&s, b, len, &n, &why), FWD_SCAN_ERROR);
    assert_non_null(strstr(why, "depth"));
    /* fwd_value_len (the decoder's measure) fails the same way, without recursion */
    assert_int_equal(fwd_value_len(b, len, FWD_MAX_DEPTH, &why), -1);
    free(b);
}

static void test_value_len(void **state)
{
    weir_buf_t f = hex("92 ce 65 53 f1 00 81 a1 6b a1 76 c0");
    const char *why = NULL;
    assert_int_equal(fwd_value_len(f.data, f.len, 2, &why), 11);
    assert_int_equal(fwd_value_len(f.data, 10, 2, &why), 0); /* truncated */
    assert_int_equal(fwd_value_len(f.data, f.len, 1, &why), -1);
    assert_int_equal(fwd_value_len(f.data, 0, 2, &why), 0);
    weir_buf_free(&f);
}

int main(void)
{
    weir_log_set_level(WEIR_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_back_to_back),
        cmocka_unit_test(test_reserved_byte),
        cmocka_unit_test(test_top_level_scalars_are_frames),
        cmocka_unit_test(test_split_case7),
        cmocka_unit_test(test_split_case13),
        cmocka_unit_test(test_split_case14),
        cmocka_unit_test(test_split_case17),
        cmocka_unit_test(test_split_ping),
        cmocka_unit_test(test_ping_pipelined_with_frame),
        cmocka_unit_test(test_bytewise_packed_64k_is_linear),
        cmocka_unit_test(test_bytewise_forward_64k_is_linear),
        cmocka_unit_test(test_max_frame_exact_and_one_past),
        cmocka_unit_test(test_buffered_bytes_over_limit),
        cmocka_unit_test(test_huge_declared_sizes),
        cmocka_unit_test(test_count_exactly_fitting),
        cmocka_unit_test(test_depth_exact_and_one_past),
        cmocka_unit_test(test_million_nested_arrays),
        cmocka_unit_test(test_value_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
