/* The forward frame decoder under policy R: the committed events (tag, time, record bytes), the
 * ack bytes and the fatal/not-fatal outcome of every decoding case of docs/forward-protocol.md
 * section 7 (groups A, C, D, E and G). Case numbers are in the test names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include <cmocka.h>

#include "../../src/input/forward/forward_internal.h"
#include "weir/event.h"
#include "weir/forward.h"
#include "weir/inflate.h"
#include "weir/log.h"

#define MIB (1024u * 1024)
#define T_SEC 1700000000u
#define T "ce 65 53 f1 00"
#define R "81 a1 6b a1 76"
#define CHUNK_C1 "81 a5 63 68 75 6e 6b a2 63 31"
#define ACK_C1 "81 a3 61 63 6b a2 63 31"

static const weir_time_t NOW = {1234567890u, 42u};

/* ---- helpers ---- */

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

static void gzip_level_append(weir_buf_t *out, const void *in, size_t n, int level)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
                     Z_OK);
    weir_buf_reserve(out, deflateBound(&zs, n));
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (unsigned)n;
    zs.next_out = (unsigned char *)out->data + out->len;
    zs.avail_out = (unsigned)(out->cap - out->len);
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    out->len += zs.total_out;
    deflateEnd(&zs);
}

static void gzip_append(weir_buf_t *out, const void *in, size_t n)
{
    gzip_level_append(out, in, n, 6);
}

static void zstd_append(weir_buf_t *out, const void *in, size_t n)
{
    size_t bound = ZSTD_compressBound(n);
    weir_buf_reserve(out, bound);
    size_t z = ZSTD_compress(out->data + out->len, bound, in, n, 3);
    assert_false(ZSTD_isError(z));
    out->len += z;
}

/* [tag, str32/bin payload, option?] */
static weir_buf_t packed(const char *tag, const weir_buf_t *payload, bool bin,
                         const char *option_hex)
{
    weir_buf_t f;
    weir_buf_init(&f);
    fwd_buf_array_hdr(&f, option_hex ? 3 : 2);
    fwd_buf_cstr(&f, tag);
    if (bin) {
        fwd_buf_bin(&f, payload->data, payload->len);
    } else { /* Fluentd's out_forward: always str32 */
        char h[5];
        weir_buf_append(&f, h, fwd_hdr_sized(h, 0xdb, payload->len, 4));
        weir_buf_append(&f, payload->data, payload->len);
    }
    if (option_hex) hex_append(&f, option_hex);
    return f;
}

typedef struct res {
    weir_batch_t b;
    fwd_frame_info_t info;
    weir_err_t err;
    int rc;
    weir_buf_t frame; /* kept alive: info.chunk points into it */
} res_t;

static fwd_decode_opts_t opts(void)
{
    fwd_decode_opts_t o;
    fwd_decode_opts_init(&o);
    o.now = NOW;
    return o;
}

/* Walks a batch's canonical entries (92 d7 00 <sec> <nsec> <map>); returns 1 with *e filled,
 * 0 at the end, -1 if the bytes are not canonical entries. Records are measured with the
 * scanner's walker, which reads ext8/16/32 headers correctly (weir_mp_read in src/core/mp.c
 * currently does not, so weir_batch_iter_next misreads records that hold such values). */
static int entry_next(const char **p, const char *end, weir_entry_t *e)
{
    const unsigned char *u = (const unsigned char *)*p;
    if (*p == end) return 0;
    if (end - *p < 12 || u[0] != 0x92 || u[1] != 0xd7 || u[2] != 0) return -1;
    e->time.sec = fwd_rd32(u + 3);
    e->time.nsec = fwd_rd32(u + 7);
    e->record = *p + 11;
    unsigned char c = u[11];
    if (!((c & 0xf0) == 0x80 || c == 0xde || c == 0xdf)) return -1;
    long long n = fwd_value_len(e->record, (size_t)(end - e->record), FWD_MAX_DEPTH, NULL);
    if (n <= 0) return -1;
    e->record_len = (size_t)n;
    *p = e->record + n;
    return 1;
}

/* Decodes `frame` (taking ownership) and checks the batch invariant. */
static void run_with(res_t *r, weir_buf_t frame, const fwd_decode_opts_t *o)
{
    weir_batch_init(&r->b, "previous", 8);
    r->frame = frame;
    r->err.msg[0] = '\0';
    r->rc = fwd_decode_frame(frame.data, frame.len, o, &r->b, &r->info, &r->err);
    if (r->b.data.len == 0) { /* data may still be NULL: no pointer arithmetic on it */
        assert_int_equal(r->b.count, 0);
        return;
    }
    const char *p = r->b.data.data, *end = p + r->b.data.len;
    weir_entry_t e;
    uint32_t n = 0;
    int k;
    while ((k = entry_next(&p, end, &e)) == 1)
        n++;
    assert_int_equal(k, 0);
    assert_int_equal(n, r->b.count);
}

static void run(res_t *r, weir_buf_t frame)
{
    fwd_decode_opts_t o = opts();
    run_with(r, frame, &o);
}

static void run_hex(res_t *r, const char *h)
{
    run(r, hex(h));
}

static void done(res_t *r)
{
    weir_batch_free(&r->b);
    weir_buf_free(&r->frame);
}

static void expect_ok(res_t *r, uint32_t count)
{
    if (r->rc != 0) fprintf(stderr, "unexpected fatal: %s\n", r->err.msg);
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->b.count, count);
}

static void expect_fatal(res_t *r)
{
    if (getenv("WEIR_TEST_SHOW_ERRORS")) fprintf(stderr, "fatal: %s\n", r->err.msg);
    assert_int_equal(r->rc, -1);
    assert_int_equal(r->b.count, 0);
    assert_int_equal(r->b.data.len, 0);
    assert_null(r->info.chunk);
    assert_true(strlen(r->err.msg) > 0);
}

static void expect_event(res_t *r, uint32_t idx, uint32_t sec, uint32_t nsec, const char *rec_hex)
{
    const char *p = r->b.data.data, *end = p + r->b.data.len;
    weir_entry_t e;
    for (uint32_t i = 0; i <= idx; i++)
        assert_int_equal(entry_next(&p, end, &e), 1);
    assert_int_equal(e.time.sec, sec);
    assert_int_equal(e.time.nsec, nsec);
    weir_buf_t want = hex(rec_hex);
    assert_int_equal(e.record_len, want.len);
    assert_memory_equal(e.record, want.data, want.len);
    weir_buf_free(&want);
}

static void expect_tag(res_t *r, const char *tag)
{
    assert_string_equal(r->b.tag, tag);
    assert_int_equal(r->b.tag_len, strlen(tag));
}

static void expect_ack(res_t *r, const char *ack_hex)
{
    assert_non_null(r->info.chunk);
    weir_buf_t got, want = hex(ack_hex);
    weir_buf_init(&got);
    fwd_ack_build(r->info.chunk, r->info.chunk_len, false, &got);
    assert_int_equal(got.len, want.len);
    assert_memory_equal(got.data, want.data, want.len);
    weir_buf_free(&got);
    weir_buf_free(&want);
}

static void expect_no_ack(res_t *r)
{
    assert_null(r->info.chunk);
}

/* ---- A. basic modes and encodings ---- */

static void test_a01_message_int_time(void **state)
{
    res_t r;
    run_hex(&r, "93 a1 74 " T " " R);
    expect_ok(&r, 1);
    expect_tag(&r, "t");
    expect_event(&r, 0, T_SEC, 0, R);
    expect_no_ack(&r);
    assert_int_equal(r.info.mode, FWD_MODE_MESSAGE);
    done(&r);
}

static void test_a02_04_eventtime_encodings(void **state)
{
    const char *times[] = {
        "d7 00 65 53 f1 00 07 5b cd 15",             /* 2: fixext8 */
        "c7 08 00 65 53 f1 00 07 5b cd 15",          /* 3: ext8 */
        "c8 00 08 00 65 53 f1 00 07 5b cd 15",       /* 4: ext16 */
        "c9 00 00 00 08 00 65 53 f1 00 07 5b cd 15", /* 4: ext32 */
    };
    for (size_t i = 0; i < 4; i++) {
        weir_buf_t f = hex("93 a1 74");
        hex_append(&f, times[i]);
        hex_append(&f, R);
        res_t r;
        run(&r, f);
        expect_ok(&r, 1);
        expect_event(&r, 0, T_SEC, 123456789, R);
        done(&r);
    }
}

static void test_a05_integer_encodings(void **state)
{
    struct {
        const char *hex;
        uint32_t sec;
    } times[] = {
        {"d2 65 53 f1 00", T_SEC},             /* Docker: int32 */
        {"cf 00 00 00 00 65 53 f1 00", T_SEC}, /* uint64 */
        {"d3 00 00 00 00 65 53 f1 00", T_SEC}, /* int64 */
        {"ce ff ff ff ff", 0xffffffffu},       /* 2^32-1 is the largest */
        {"05", 5},                             /* fixint */
        {"cc 80", 128},
        {"cd 01 00", 256},
        {"d0 05", 5},
        {"d1 01 00", 256},
    };
    for (size_t i = 0; i < sizeof times / sizeof *times; i++) {
        weir_buf_t f = hex("93 a1 74");
        hex_append(&f, times[i].hex);
        hex_append(&f, R);
        res_t r;
        run(&r, f);
        expect_ok(&r, 1);
        expect_event(&r, 0, times[i].sec, 0, R);
        done(&r);
    }
}

static void test_a06_eventtime_unsigned_seconds(void **state)
{
    res_t r;
    run_hex(&r, "93 a1 74 d7 00 80 00 00 00 00 00 00 00 " R);
    expect_ok(&r, 1);
    expect_event(&r, 0, 2147483648u, 0, R);
    done(&r);
}

static void test_a07_message_with_ack(void **state)
{
    res_t r;
    run_hex(&r, "94 a1 74 " T " " R " " CHUNK_C1);
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0, R);
    expect_ack(&r, ACK_C1);
    done(&r);
}

static void test_a08_09_empty_and_nil_option(void **state)
{
    res_t r;
    run_hex(&r, "94 a1 74 d2 65 53 f1 00 " R " 80"); /* Go logger */
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0, R);
    expect_no_ack(&r);
    done(&r);
    run_hex(&r, "94 a1 74 " T " " R " c0"); /* old Docker */
    expect_ok(&r, 1);
    expect_no_ack(&r);
    done(&r);
}

#define FWD10_ENTRIES                                                                              \
    "92 92 ce 65 53 f1 00 81 a1 61 01 92 d7 00 65 53 f1 00 00 00 00 05 81 a1 61 02"

static void test_a10_forward(void **state)
{
    res_t r;
    run_hex(&r, "92 a3 61 70 70 " FWD10_ENTRIES);
    expect_ok(&r, 2);
    expect_tag(&r, "app");
    expect_event(&r, 0, T_SEC, 0, "81 a1 61 01");
    expect_event(&r, 1, T_SEC, 5, "81 a1 61 02");
    expect_no_ack(&r);
    assert_int_equal(r.info.mode, FWD_MODE_FORWARD);
    done(&r);
}

static void test_a11_forward_with_ack(void **state)
{
    res_t r;
    run_hex(&r, "93 a1 74 " FWD10_ENTRIES " " CHUNK_C1);
    expect_ok(&r, 2);
    expect_ack(&r, ACK_C1);
    done(&r);
}

static void test_a12_packed_bin8(void **state)
{
    res_t r;
    run_hex(&r, "93 a3 61 70 70 c4 14 92 ce 65 53 f1 00 81 a1 61 01 92 ce 65 53 f1 01 81 a1 61 02 "
                "81 a4 73 69 7a 65 02");
    expect_ok(&r, 2);
    expect_event(&r, 0, T_SEC, 0, "81 a1 61 01");
    expect_event(&r, 1, T_SEC + 1, 0, "81 a1 61 02");
    expect_no_ack(&r);
    assert_int_equal(r.info.mode, FWD_MODE_PACKED);
    done(&r);
}

#define ENTRY1 "92 d7 00 65 53 f1 00 00 00 00 01 81 a1 61 01"
#define ENTRY2 "92 d7 00 65 53 f1 00 00 00 00 02 81 a1 61 02"
#define FLUENTD_CHUNK                                                                              \
    "b9 41 41 45 43 41 77 51 46 42 67 63 49 43 51 6f 4c 44 41 30 4f 44 77 3d 3d 0a"

static void test_a13_fluentd_packed(void **state)
{
    weir_buf_t f = hex("93 a3 61 70 70 db 00 00 00 1e " ENTRY1 " " ENTRY2
                       " 83 a4 73 69 7a 65 02 aa 63 6f 6d 70 72 65 73 73 65 64 a4 74 65 78 74 "
                       "a5 63 68 75 6e 6b " FLUENTD_CHUNK);
    assert_int_equal(f.len, 95);
    res_t r;
    run(&r, f);
    expect_ok(&r, 2);
    expect_event(&r, 0, T_SEC, 1, "81 a1 61 01");
    expect_event(&r, 1, T_SEC, 2, "81 a1 61 02");
    expect_ack(&r, "81 a3 61 63 6b " FLUENTD_CHUNK); /* the trailing 0a is echoed */
    /* already canonical: the payload is the batch, byte for byte */
    weir_buf_t entries = hex(ENTRY1 " " ENTRY2);
    assert_int_equal(r.b.data.len, entries.len);
    assert_memory_equal(r.b.data.data, entries.data, entries.len);
    weir_buf_free(&entries);
    done(&r);
}

static void test_a14_fluentd_gzip_members(void **state)
{
    weir_buf_t e1 = hex(ENTRY1), e2 = hex(ENTRY2), gz;
    weir_buf_init(&gz);
    gzip_append(&gz, e1.data, e1.len);
    gzip_append(&gz, e2.data, e2.len);
    res_t r;
    run(&r, packed("app", &gz, false,
                   "82 a4 73 69 7a 65 02 aa 63 6f 6d 70 72 65 73 73 65 64 a4 67 7a 69 70"));
    expect_ok(&r, 2);
    expect_event(&r, 0, T_SEC, 1, "81 a1 61 01");
    expect_event(&r, 1, T_SEC, 2, "81 a1 61 02");
    assert_int_equal(r.info.mode, FWD_MODE_COMPRESSED);
    assert_int_equal(r.info.decompressed_len, 30);
    done(&r);
    weir_buf_free(&e1);
    weir_buf_free(&e2);
    weir_buf_free(&gz);
}

/* {"size":2,"compressed":"gzip","fluent_signal":0} */
#define FB_GZIP_OPTION                                                                             \
    "83 a4 73 69 7a 65 02 aa 63 6f 6d 70 72 65 73 73 65 64 a4 67 7a 69 70 ad 66 6c 75 65 6e 74 "   \
    "5f 73 69 67 6e 61 6c 00"

static void test_a15_fluentbit_gzip(void **state)
{
    weir_buf_t e = hex(ENTRY1 " " ENTRY2), gz;
    weir_buf_init(&gz);
    gzip_append(&gz, e.data, e.len);
    res_t r;
    run(&r, packed("app", &gz, true, FB_GZIP_OPTION));
    expect_ok(&r, 2);
    expect_event(&r, 1, T_SEC, 2, "81 a1 61 02");
    done(&r);
    weir_buf_free(&e);
    weir_buf_free(&gz);
}

#define ZSTD_OPTION "81 aa 63 6f 6d 70 72 65 73 73 65 64 a4 7a 73 74 64"

static void test_a16_zstd_frames(void **state)
{
    weir_buf_t e1 = hex(ENTRY1), e2 = hex(ENTRY2), z;
    weir_buf_init(&z);
    zstd_append(&z, e1.data, e1.len);
    zstd_append(&z, e2.data, e2.len);
    res_t r;
    run(&r, packed("app", &z, false, ZSTD_OPTION));
    expect_ok(&r, 2);
    expect_event(&r, 0, T_SEC, 1, "81 a1 61 01");
    expect_event(&r, 1, T_SEC, 2, "81 a1 61 02");
    done(&r);
    /* truncated frame and trailing garbage are fatal */
    weir_buf_t cut = hex("");
    weir_buf_append(&cut, z.data, z.len - 3);
    run(&r, packed("app", &cut, false, ZSTD_OPTION));
    expect_fatal(&r);
    done(&r);
    weir_buf_append(&z, "\x00\x00\x00\x00", 4);
    run(&r, packed("app", &z, false, ZSTD_OPTION));
    expect_fatal(&r);
    done(&r);
    weir_buf_free(&cut);
    weir_buf_free(&e1);
    weir_buf_free(&e2);
    weir_buf_free(&z);
}

#define META_ENTRY "92 92 d7 00 65 53 f1 00 00 00 00 00 80 81 a1 61 01"

static void test_a17_metadata_forward(void **state)
{
    res_t r;
    run_hex(&r, "93 a3 61 70 70 91 " META_ENTRY " 81 ad 66 6c 75 65 6e 74 5f 73 69 67 6e 61 6c 00");
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0, "81 a1 61 01");
    done(&r);
    /* a wrapped time as the 2nd element makes an array there, so the request is Forward mode,
     * exactly as Fluentd reads it: its "entries" T and {m:1} are both invalid, R the option */
    run_hex(&r, "93 a1 74 92 " T " 81 a1 6d 01 " R);
    expect_ok(&r, 0);
    assert_int_equal(r.info.mode, FWD_MODE_FORWARD);
    assert_int_equal(r.info.skipped, 2);
    done(&r);
}

static void test_a18_metadata_packed(void **state)
{
    weir_buf_t e = hex(META_ENTRY);
    res_t r;
    run(&r, packed("app", &e, true, NULL));
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0, "81 a1 61 01");
    done(&r);
    weir_buf_free(&e);
}

static void test_a19_group_markers(void **state)
{
    res_t r;
    run_hex(&r, "92 a1 74 93 92 92 d7 00 ff ff ff ff 00 00 00 00 80 81 a8 72 65 73 6f 75 72 63 "
                "65 80 92 92 d7 00 65 53 f1 00 00 00 00 00 80 " R
                " 92 92 d7 00 ff ff ff fe 00 00 00 00 80 80");
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0, R);
    assert_int_equal(r.info.group_markers, 2);
    assert_int_equal(r.info.skipped, 0);
    done(&r);
}

static void test_a20_21_empty_with_ack(void **state)
{
    res_t r;
    run_hex(&r, "93 a1 74 90 " CHUNK_C1);
    expect_ok(&r, 0);
    expect_ack(&r, ACK_C1);
    done(&r);
    run_hex(&r, "93 a1 74 c4 00 " CHUNK_C1);
    expect_ok(&r, 0);
    expect_ack(&r, ACK_C1);
    done(&r);
}

static void test_a22_bin_tag(void **state)
{
    res_t r;
    run_hex(&r, "93 c4 01 74 " T " " R);
    expect_ok(&r, 1);
    expect_tag(&r, "t");
    done(&r);
}

/* bin, nested map and array, int key, EventTime, ext 5, ext8/16/32 and float values: kept
 * byte for byte */
#define RICH_RECORD                                                                                \
    "89 a1 62 c4 02 00 ff a1 6e 81 a1 78 92 01 92 02 03 01 a1 69 a1 65 d7 00 65 53 f1 00 00 00 "   \
    "00 01 a1 66 d4 05 2a a1 67 cb 3f f8 00 00 00 00 00 00 a1 68 c7 03 05 61 62 63 a1 6a c8 00 "   \
    "00 ff a1 6c c9 00 00 00 01 7f 00"

static void test_a23_rich_records(void **state)
{
    res_t r;
    run_hex(&r, "93 a1 74 " T " " RICH_RECORD);
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0, RICH_RECORD);
    done(&r);
    run_hex(&r, "92 a1 74 91 92 " T " " RICH_RECORD);
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0, RICH_RECORD);
    done(&r);
    weir_buf_t e = hex("92 d7 00 65 53 f1 00 00 00 00 07 " RICH_RECORD);
    run(&r, packed("t", &e, false, NULL));
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 7, RICH_RECORD);
    done(&r);
    weir_buf_free(&e);
}

static void test_a24_compressed_on_forward_ignored(void **state)
{
    res_t r;
    run_hex(&r, "93 a1 74 " FWD10_ENTRIES " 81 aa 63 6f 6d 70 72 65 73 73 65 64 a4 67 7a 69 70");
    expect_ok(&r, 2);
    done(&r);
    run_hex(&r, "93 a1 74 " FWD10_ENTRIES " 81 aa 63 6f 6d 70 72 65 73 73 65 64 a3 6c 7a 34");
    expect_ok(&r, 2);
    done(&r);
    run_hex(&r, "94 a1 74 " T " " R " 81 aa 63 6f 6d 70 72 65 73 73 65 64 01"); /* Message */
    expect_ok(&r, 1);
    done(&r);
}

static void test_a25_wrong_size_ignored(void **state)
{
    res_t r;
    run_hex(&r, "93 a3 61 70 70 c4 14 92 ce 65 53 f1 00 81 a1 61 01 92 ce 65 53 f1 01 81 a1 61 02 "
                "81 a4 73 69 7a 65 63");
    expect_ok(&r, 2);
    done(&r);
}

static void test_a26_wrong_element_counts(void **state)
{
    const char *frames[] = {
        "95 a1 74 " T " " R " 80 01",       /* 26: a fifth element */
        "94 a1 74 " FWD10_ENTRIES " 80 01", /* Forward with 4 */
        "94 a1 74 c4 00 80 01",             /* Packed with 4 */
        ("92 a1 74 " T),                    /* Message with 2 */
    };
    for (size_t i = 0; i < sizeof frames / sizeof *frames; i++) {
        res_t r;
        run_hex(&r, frames[i]);
        expect_fatal(&r);
        done(&r);
    }
}

static void test_heartbeat(void **state)
{
    res_t r;
    run_hex(&r, "c0");
    expect_ok(&r, 0);
    assert_int_equal(r.info.mode, FWD_MODE_HEARTBEAT);
    expect_no_ack(&r);
    done(&r);
    run_hex(&r, "c0 c0"); /* one frame is one object */
    expect_fatal(&r);
    done(&r);
}

/* ---- C. event-level invalid: skipped, the rest kept, the ack still sent ---- */

static void expect_skipped_message(const char *time_hex)
{
    weir_buf_t f = hex("94 a1 74");
    hex_append(&f, time_hex);
    hex_append(&f, R " " CHUNK_C1);
    res_t r;
    run(&r, f);
    expect_ok(&r, 0);
    assert_int_equal(r.info.skipped, 1);
    expect_ack(&r, ACK_C1);
    done(&r);
}

static void test_c36_43_invalid_times(void **state)
{
    expect_skipped_message("c0");                         /* 36: nil */
    expect_skipped_message("cb 41 d9 54 fc 40 20 00 00"); /* 37: float64 */
    expect_skipped_message("ca 4e ca a7 e2");             /* 37: float32 */
    expect_skipped_message("ff");                         /* 38: negative */
    expect_skipped_message("d2 ff ff ff ff");             /* 38: int32 -1 */
    expect_skipped_message("cf 00 00 00 01 00 00 00 00"); /* 39: 2^32 */
    expect_skipped_message("d6 00 65 53 f1 00");          /* 40: ext0 len 4 */
    expect_skipped_message("d8 00 65 53 f1 00 00 00 00 00 00 00 00 00 00 00 00 00"); /* len 16 */
    expect_skipped_message("c7 09 00 65 53 f1 00 00 00 00 00 00"); /* ext8 len 9 */
    expect_skipped_message("d7 05 65 53 f1 00 00 00 00 00");       /* 41: type 5 */
    expect_skipped_message("d6 ff 65 53 f1 00");                   /* 41: timestamp32 */
    expect_skipped_message("d7 00 65 53 f1 00 3b 9a ca 00");       /* 42: nsec 1e9 */
    expect_skipped_message("c3");                                  /* bool */
    expect_skipped_message("80");                                  /* map */
}

static void test_c43_string_time(void **state)
{
    /* a str 2nd element makes the request PackedForward (mode by type, as Fluentd): "123" is
     * then three entries that are not arrays, skipped, and the ack still goes out */
    res_t r;
    run_hex(&r, "93 a1 74 a3 31 32 33 " CHUNK_C1);
    expect_ok(&r, 0);
    assert_int_equal(r.info.mode, FWD_MODE_PACKED);
    assert_int_equal(r.info.skipped, 3);
    expect_ack(&r, ACK_C1);
    done(&r);
    /* with a record after it, that PackedForward has 4 elements: fatal under policy R */
    run_hex(&r, "94 a1 74 a3 31 32 33 " R " " CHUNK_C1);
    expect_fatal(&r);
    done(&r);
}

static void test_c42_nsec_boundary(void **state)
{
    res_t r;
    run_hex(&r, "93 a1 74 d7 00 65 53 f1 00 3b 9a c9 ff " R);
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 999999999u, R);
    done(&r);
}

static void test_c44_time_zero_is_now(void **state)
{
    res_t r;
    run_hex(&r, "93 a1 74 00 " R);
    expect_ok(&r, 1);
    expect_event(&r, 0, NOW.sec, NOW.nsec, R);
    done(&r);
    run_hex(&r, "93 a1 74 d7 00 00 00 00 00 00 00 00 05 " R);
    expect_ok(&r, 1);
    expect_event(&r, 0, NOW.sec, NOW.nsec, R);
    done(&r);
    /* inside a Packed payload too, between canonical neighbours */
    weir_buf_t e = hex(ENTRY1 " 92 d7 00 00 00 00 00 00 00 00 05 " R " " ENTRY2);
    run(&r, packed("t", &e, false, NULL));
    expect_ok(&r, 3);
    expect_event(&r, 0, T_SEC, 1, "81 a1 61 01");
    expect_event(&r, 1, NOW.sec, NOW.nsec, R);
    expect_event(&r, 2, T_SEC, 2, "81 a1 61 02");
    done(&r);
    weir_buf_free(&e);
}

static void test_c45_record_not_a_map(void **state)
{
    res_t r;
    run_hex(&r, "93 a1 74 92 92 " T " a1 78 92 " T " " R " " CHUNK_C1);
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0, R);
    assert_int_equal(r.info.skipped, 1);
    expect_ack(&r, ACK_C1);
    done(&r);
    /* Message mode: nil record */
    run_hex(&r, "94 a1 74 " T " c0 " CHUNK_C1);
    expect_ok(&r, 0);
    assert_int_equal(r.info.skipped, 1);
    expect_ack(&r, ACK_C1);
    done(&r);
}

static void test_c46_bad_entries(void **state)
{
    res_t r;
    run_hex(&r, "92 a1 74 92 01 92 " T " " R); /* an entry that is not an array */
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0, R);
    assert_int_equal(r.info.skipped, 1);
    done(&r);
    run_hex(&r, "92 a1 74 92 91 " T " 92 " T " " R); /* an entry of 1 element */
    expect_ok(&r, 1);
    assert_int_equal(r.info.skipped, 1);
    done(&r);
    run_hex(&r, "92 a1 74 91 93 " T " " R " 01"); /* an entry of 3 elements */
    expect_ok(&r, 0);
    assert_int_equal(r.info.skipped, 1);
    done(&r);
    /* and inside a Packed payload */
    weir_buf_t e = hex("01 93 " T " " R " 01 " ENTRY1);
    run(&r, packed("t", &e, true, NULL));
    expect_ok(&r, 1);
    assert_int_equal(r.info.skipped, 2);
    done(&r);
    weir_buf_free(&e);
}

static void test_c47_malformed_metadata_wrapper(void **state)
{
    const char *entries[] = {
        "92 91 d7 00 65 53 f1 00 00 00 00 00 " R,       /* [[EventTime], R] */
        "92 92 d7 00 65 53 f1 00 00 00 00 00 a1 78 " R, /* [[EventTime, "x"], R] */
        "92 93 d7 00 65 53 f1 00 00 00 00 00 80 80 " R, /* three elements */
        "92 92 c0 80 " R,                               /* [[nil, {}], R] */
        "92 92 92 " T " 80 80 " R,                      /* nested wrapper */
        "92 92 d7 00 ff ff ff ff 00 00 00 01 80 " R,    /* not a marker: nsec 1 */
    };
    for (size_t i = 0; i < sizeof entries / sizeof *entries; i++) {
        weir_buf_t f = hex("92 a1 74 91");
        hex_append(&f, entries[i]);
        res_t r;
        run(&r, f);
        expect_ok(&r, i == 5 ? 1 : 0);
        assert_int_equal(r.info.skipped, i == 5 ? 0 : 1);
        assert_int_equal(r.info.group_markers, 0);
        done(&r);
    }
}

static void test_skip_invalid_event_false_still_skips(void **state)
{
    fwd_decode_opts_t o = opts();
    o.skip_invalid_event = false;
    res_t r;
    run_with(&r, hex("93 a1 74 92 92 c0 " R " 92 " T " " R " " CHUNK_C1), &o);
    expect_ok(&r, 1);
    assert_int_equal(r.info.skipped, 1);
    expect_ack(&r, ACK_C1);
    done(&r);
}

/* ---- D. fatal and adversarial ---- */

static void test_d48_53_fatal_shapes(void **state)
{
    const char *frames[] = {
        "93 a1 74 c1 " R,             /* 48 */
        "01",                         /* 49 */
        "80",                         /* 49 */
        "a3 61 62 63",                /* 49 */
        "91 a1 74",                   /* 50 */
        "93 a1 74 90 01",             /* 51 */
        "93 a1 74 90 a1 78",          /* 51 */
        "93 01 " T " " R,             /* 52 */
        "93 c0 " T " " R,             /* 52 */
        "93 a1 74 91 92 c7",          /* 53 */
        "93 a1 74 91 92 c7 08 00 65", /* 53 */
        "",                           /* nothing at all */
        "93 a1 74 " T " " R " c0 c0", /* trailing bytes after the frame */
        "93 a1 74 " T " 81 a1 6b c1", /* reserved byte inside a record */
        "93 a1 74 c4 05 01 02",       /* payload truncated */
        "dc 00 02 a1 74 90",          /* array16 header, fine, but then 90 completes it: ok? */
    };
    for (size_t i = 0; i < sizeof frames / sizeof *frames - 1; i++) {
        res_t r;
        run_hex(&r, frames[i]);
        expect_fatal(&r);
        done(&r);
    }
    /* a non-minimal array16 header is still an array */
    res_t r;
    run_hex(&r, frames[sizeof frames / sizeof *frames - 1]);
    expect_ok(&r, 0);
    done(&r);
}

static void test_d54_56_huge_declared_sizes(void **state)
{
    const char *frames[] = {
        "92 a1 74 dd 7f ff ff ff 00 00 00 00 00 00 00 00 00 00", /* 54 */
        "93 a1 74 " T " df ff ff ff ff 00 00 00 00",             /* 55 */
        "93 db ff ff ff ff 61",                                  /* 56 */
        "92 a1 74 91 92 " T " df ff ff ff ff 01 01",
    };
    for (size_t i = 0; i < sizeof frames / sizeof *frames; i++) {
        res_t r;
        run_hex(&r, frames[i]);
        expect_fatal(&r);
        assert_true(r.b.data.cap < MIB); /* nothing was sized by the declared counts */
        done(&r);
    }
}

/* A record {"k": [[[...1...]]]} with `arrays` nested arrays. */
static void nested_record(weir_buf_t *b, int arrays)
{
    hex_append(b, "81 a1 6b");
    for (int i = 0; i < arrays; i++)
        weir_buf_putc(b, (char)0x91);
    weir_buf_putc(b, 0x01);
}

static void test_d57_depth(void **state)
{
    /* Forward: request(1) entries(2) entry(3) record(4), so 60 arrays in the record reach 64 */
    for (int extra = 0; extra <= 1; extra++) {
        weir_buf_t f = hex("92 a1 74 91 92 " T);
        nested_record(&f, FWD_MAX_DEPTH - 4 + extra);
        res_t r;
        run(&r, f);
        if (extra)
            expect_fatal(&r);
        else
            expect_ok(&r, 1);
        done(&r);
        /* Packed: the payload counts as the entries level, so the same record, same limit */
        weir_buf_t e = hex("92 " T);
        nested_record(&e, FWD_MAX_DEPTH - 4 + extra);
        run(&r, packed("t", &e, true, NULL));
        if (extra)
            expect_fatal(&r);
        else
            expect_ok(&r, 1);
        done(&r);
        weir_buf_free(&e);
        /* Message: request(1) record(2) */
        f = hex("93 a1 74 " T);
        nested_record(&f, FWD_MAX_DEPTH - 2 + extra);
        run(&r, f);
        if (extra)
            expect_fatal(&r);
        else
            expect_ok(&r, 1);
        done(&r);
    }
    /* a configured smaller depth */
    fwd_decode_opts_t o = opts();
    o.max_depth = 8;
    res_t r;
    weir_buf_t f = hex("93 a1 74 " T);
    nested_record(&f, 6);
    run_with(&r, f, &o);
    expect_ok(&r, 1);
    done(&r);
    f = hex("93 a1 74 " T);
    nested_record(&f, 7);
    run_with(&r, f, &o);
    expect_fatal(&r);
    done(&r);
    /* a million nested arrays: an error, no stack overflow */
    f = hex("93 a1 74 " T);
    weir_buf_reserve(&f, 1000000);
    memset(f.data + f.len, 0x91, 1000000);
    f.len += 1000000;
    run(&r, f);
    expect_fatal(&r);
    done(&r);
}

#define GZIP_OPTION "81 aa 63 6f 6d 70 72 65 73 73 65 64 a4 67 7a 69 70"

static void expect_gzip_payload_fatal(const weir_buf_t *payload)
{
    res_t r;
    run(&r, packed("t", payload, false, GZIP_OPTION " "));
    expect_fatal(&r);
    done(&r);
}

static weir_buf_t gzip_of_hex(const char *h)
{
    weir_buf_t plain = hex(h), gz;
    weir_buf_init(&gz);
    gzip_append(&gz, plain.data, plain.len);
    weir_buf_free(&plain);
    return gz;
}

static void test_d60_62_65_bad_gzip(void **state)
{
    weir_buf_t rnd;
    weir_buf_init(&rnd);
    uint32_t x = 12345;
    for (int i = 0; i < 64; i++) { /* 60: 64 random bytes */
        x = x * 1103515245u + 12345u;
        weir_buf_putc(&rnd, (char)(x >> 16));
    }
    expect_gzip_payload_fatal(&rnd);
    weir_buf_free(&rnd);

    weir_buf_t gz = gzip_of_hex(ENTRY1 " " ENTRY2);
    weir_buf_t bad = hex("");
    weir_buf_append(&bad, gz.data, gz.len - 8); /* 61: the trailer cut off */
    expect_gzip_payload_fatal(&bad);
    bad.len = 0;
    weir_buf_append(&bad, gz.data, gz.len);
    bad.data[bad.len - 8] ^= 0x01; /* 62: CRC32 flipped */
    expect_gzip_payload_fatal(&bad);
    bad.data[bad.len - 8] ^= 0x01;
    bad.data[bad.len - 1] ^= 0x01; /* ISIZE flipped */
    expect_gzip_payload_fatal(&bad);
    bad.data[bad.len - 1] ^= 0x01;
    weir_buf_append(&bad, "\x1f\x8b", 2); /* 65: a header that never completes */
    expect_gzip_payload_fatal(&bad);
    bad.len -= 2;
    weir_buf_append(&bad, "\x00\x00", 2); /* 65: zero padding */
    expect_gzip_payload_fatal(&bad);
    bad.len -= 2;
    /* and the intact member decodes */
    res_t r;
    run(&r, packed("t", &bad, false, GZIP_OPTION));
    expect_ok(&r, 2);
    done(&r);
    weir_buf_free(&bad);
    weir_buf_free(&gz);
}

static void test_d63_stored_block_with_gzip_magic(void **state)
{
    /* records holding 1f 8b 08 00 in a bin value, compressed with stored (level 0) blocks so
     * the deflate body carries the bytes literally */
    weir_buf_t plain = hex("");
    for (int i = 0; i < 50; i++)
        hex_append(&plain, "92 d7 00 65 53 f1 00 00 00 00 09 81 a1 62 c4 06 1f 8b 08 00 00 00");
    weir_buf_t gz;
    weir_buf_init(&gz);
    gzip_level_append(&gz, plain.data, plain.len, 0);
    gzip_level_append(&gz, plain.data, plain.len, 0);
    bool found = false;
    for (size_t i = 10; i + 4 <= gz.len; i++)
        found |= memcmp(gz.data + i, "\x1f\x8b\x08\x00", 4) == 0;
    assert_true(found);
    res_t r;
    run(&r, packed("t", &gz, false, GZIP_OPTION));
    expect_ok(&r, 100);
    expect_event(&r, 99, T_SEC, 9, "81 a1 62 c4 06 1f 8b 08 00 00 00");
    done(&r);
    weir_buf_free(&plain);
    weir_buf_free(&gz);
}

/* 512 MiB of zeros, gzipped as a stream (about 500 KiB). */
static weir_buf_t gzip_bomb(void)
{
    static char zeros[MIB];
    weir_buf_t out;
    weir_buf_init(&out);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    for (int i = 0; i < 512; i++) {
        zs.next_in = (unsigned char *)zeros;
        zs.avail_in = sizeof zeros;
        int flush = i == 511 ? Z_FINISH : Z_NO_FLUSH;
        do {
            weir_buf_reserve(&out, 64 * 1024);
            zs.next_out = (unsigned char *)out.data + out.len;
            zs.avail_out = (unsigned)(out.cap - out.len);
            unsigned before = zs.avail_out;
            int rc = deflate(&zs, flush);
            assert_true(rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR);
            out.len += before - zs.avail_out;
        } while (zs.avail_in > 0 || (flush == Z_FINISH && zs.avail_out == 0));
    }
    deflateEnd(&zs);
    return out;
}

static void test_d64_gzip_bomb(void **state)
{
    weir_buf_t bomb = gzip_bomb();
    assert_true(bomb.len < 1024 * 1024);
    /* the decompressor stops at the cap without allocating beyond it */
    weir_buf_t out;
    weir_buf_init(&out);
    weir_err_t err;
    assert_int_equal(weir_inflate(WEIR_INFLATE_GZIP, bomb.data, bomb.len, 16 * MIB, &out, &err),
                     -1);
    assert_non_null(strstr(err.msg, "decompression_size_limit"));
    assert_true(out.cap <= 16 * MIB + 1);
    weir_buf_free(&out);
    /* and the frame is fatal */
    fwd_decode_opts_t o = opts();
    o.max_decompressed = 16 * MIB;
    res_t r;
    run_with(&r, packed("t", &bomb, false, GZIP_OPTION), &o);
    expect_fatal(&r);
    assert_non_null(strstr(r.err.msg, "decompression_size_limit"));
    done(&r);
    weir_buf_free(&bomb);
}

static void test_decompression_limit_exact(void **state)
{
    weir_buf_t plain = hex(ENTRY1 " " ENTRY2); /* 30 bytes */
    weir_buf_t gz, z;
    weir_buf_init(&gz);
    weir_buf_init(&z);
    gzip_append(&gz, plain.data, plain.len);
    zstd_append(&z, plain.data, plain.len);
    fwd_decode_opts_t o = opts();
    res_t r;
    o.max_decompressed = 30;
    run_with(&r, packed("t", &gz, false, GZIP_OPTION), &o);
    expect_ok(&r, 2);
    done(&r);
    run_with(&r, packed("t", &z, false, ZSTD_OPTION), &o);
    expect_ok(&r, 2);
    done(&r);
    o.max_decompressed = 29;
    run_with(&r, packed("t", &gz, false, GZIP_OPTION), &o);
    expect_fatal(&r);
    done(&r);
    run_with(&r, packed("t", &z, false, ZSTD_OPTION), &o);
    expect_fatal(&r);
    done(&r);
    /* zstd bomb: 64 MiB of zeros against a 1 MiB cap */
    char *zeros = calloc(1, 64 * MIB);
    z.len = 0;
    zstd_append(&z, zeros, 64 * MIB);
    free(zeros);
    weir_buf_t out;
    weir_buf_init(&out);
    weir_err_t err;
    assert_int_equal(weir_inflate(WEIR_INFLATE_ZSTD, z.data, z.len, MIB, &out, &err), -1);
    assert_true(out.cap <= MIB + 1);
    weir_buf_free(&out);
    weir_buf_free(&plain);
    weir_buf_free(&gz);
    weir_buf_free(&z);
}

static void test_d66_69_70_bad_streams(void **state)
{
    weir_buf_t plain = hex(ENTRY1 " " ENTRY2);
    expect_gzip_payload_fatal(&plain); /* 66: "gzip" over plain msgpack */
    weir_buf_free(&plain);

    res_t r;
    weir_buf_t gz = gzip_of_hex(ENTRY1 " 92 d7 00 65 53 f1"); /* 69: truncated last entry */
    run(&r, packed("t", &gz, false, GZIP_OPTION));
    expect_fatal(&r);
    done(&r);
    weir_buf_free(&gz);
    gz = gzip_of_hex(ENTRY1 " 92 c1 80"); /* 70: malformed msgpack */
    run(&r, packed("t", &gz, false, GZIP_OPTION));
    expect_fatal(&r);
    done(&r);
    weir_buf_free(&gz);
    /* the same without compression */
    weir_buf_t e = hex(ENTRY1 " 92 d7 00 65 53 f1");
    run(&r, packed("t", &e, false, NULL));
    expect_fatal(&r);
    done(&r);
    weir_buf_free(&e);
}

static void test_d67_unknown_compression(void **state)
{
    weir_buf_t e = hex(ENTRY1);
    const char *options[] = {
        "81 aa 63 6f 6d 70 72 65 73 73 65 64 a3 6c 7a 34",    /* "lz4" */
        "81 aa 63 6f 6d 70 72 65 73 73 65 64 a4 47 5a 49 50", /* "GZIP" */
        "81 aa 63 6f 6d 70 72 65 73 73 65 64 01",             /* 1 */
    };
    for (size_t i = 0; i < sizeof options / sizeof *options; i++) {
        res_t r;
        run(&r, packed("t", &e, false, options[i]));
        expect_fatal(&r);
        done(&r);
    }
    /* nil and "text" mean none */
    res_t r;
    run(&r, packed("t", &e, false, "81 aa 63 6f 6d 70 72 65 73 73 65 64 c0"));
    expect_ok(&r, 1);
    done(&r);
    weir_buf_free(&e);
}

static void test_d68_unannounced_gzip_is_sniffed(void **state)
{
    weir_buf_t gz = gzip_of_hex(ENTRY1 " " ENTRY2);
    res_t r;
    run(&r, packed("t", &gz, false, NULL));
    expect_ok(&r, 2);
    expect_event(&r, 1, T_SEC, 2, "81 a1 61 02");
    done(&r);
    /* a corrupted one is fatal, never garbage events */
    gz.data[gz.len - 5] ^= 0x40;
    run(&r, packed("t", &gz, false, NULL));
    expect_fatal(&r);
    done(&r);
    weir_buf_free(&gz);
}

static void test_d71_unknown_ext_kept(void **state)
{
    res_t r;
    run_hex(&r, "93 a1 74 " T " 82 a1 6b a1 76 a1 78 d4 07 00");
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0, "82 a1 6b a1 76 a1 78 d4 07 00");
    done(&r);
}

static void test_fluent_signal_payload_dropped(void **state)
{
    weir_buf_t e = hex("01 02 03"); /* cmetrics bytes, not entries */
    res_t r;
    run(&r, packed("t", &e, true,
                   "82 a5 63 68 75 6e 6b a2 63 31 ad 66 6c 75 65 6e 74 5f 73 69 67 6e 61 6c 01"));
    expect_ok(&r, 0);
    expect_ack(&r, ACK_C1);
    done(&r);
    weir_buf_free(&e);
}

/* ---- E. ack echo ---- */

static void test_e73_76_ack_echo(void **state)
{
    res_t r;
    run_hex(&r, "94 a1 74 " T " " R " 81 a5 63 68 75 6e 6b c4 02 63 31"); /* 73: bin */
    expect_ok(&r, 1);
    expect_ack(&r, "81 a3 61 63 6b c4 02 63 31");
    done(&r);
    run_hex(&r, "94 a1 74 " T " " R " 81 a5 63 68 75 6e 6b 07"); /* 74: int */
    expect_ok(&r, 1);
    expect_ack(&r, "81 a3 61 63 6b 07");
    done(&r);
    /* 75: Fluent Bit's 24-char token and the legacy 32-char hex (str8) */
    const char *tokens[] = {
        "b8 70 38 6e 39 67 6d 78 54 51 56 43 38 2f 6e 68 32 77 6c 4b 4b 65 51 3d 3d",
        "d9 20 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66 30 31 32 33 34 35 36 37 38 39 61 "
        "62 63 64 65 66",
    };
    for (size_t i = 0; i < 2; i++) {
        weir_buf_t f = hex("94 a1 74 " T " " R " 81 a5 63 68 75 6e 6b");
        hex_append(&f, tokens[i]);
        run(&r, f);
        expect_ok(&r, 1);
        weir_buf_t want = hex("81 a3 61 63 6b");
        hex_append(&want, tokens[i]);
        weir_buf_t got;
        weir_buf_init(&got);
        fwd_ack_build(r.info.chunk, r.info.chunk_len, false, &got);
        assert_int_equal(got.len, want.len);
        assert_memory_equal(got.data, want.data, want.len);
        weir_buf_free(&got);
        weir_buf_free(&want);
        done(&r);
    }
    /* 76: the same frame twice: both decoded, both acked (no dedupe here) */
    for (int i = 0; i < 2; i++) {
        run_hex(&r, "94 a1 74 " T " " R " " CHUNK_C1);
        expect_ok(&r, 1);
        expect_ack(&r, ACK_C1);
        done(&r);
    }
    /* nil / false chunk: no ack, as Fluentd's `if chunk` */
    run_hex(&r, "94 a1 74 " T " " R " 81 a5 63 68 75 6e 6b c0");
    expect_ok(&r, 1);
    expect_no_ack(&r);
    done(&r);
    /* duplicated key: the last one wins */
    run_hex(&r, "94 a1 74 " T " " R " 82 a5 63 68 75 6e 6b 01 a5 63 68 75 6e 6b 02");
    expect_ack(&r, "81 a3 61 63 6b 02");
    done(&r);
}

static void test_ack_json(void **state)
{
    weir_buf_t chunk = hex("a6 61 22 62 5c 0a 01"), out; /* a"b\<LF><SOH> */
    weir_buf_init(&out);
    fwd_ack_build(chunk.data, chunk.len, true, &out);
    const char want[] = "{\"ack\":\"a\\\"b\\\\\\n\\u0001\"}";
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.data, want, out.len);
    weir_buf_free(&chunk);
    weir_buf_free(&out);
    chunk = hex("07");
    weir_buf_init(&out);
    fwd_ack_build(chunk.data, chunk.len, true, &out);
    assert_int_equal(out.len, strlen("{\"ack\":7}"));
    assert_memory_equal(out.data, "{\"ack\":7}", out.len);
    weir_buf_free(&chunk);
    weir_buf_free(&out);
}

/* ---- extra keys (source_address_key, source_hostname_key) ---- */

static void test_extra_keys_rewrite_record(void **state)
{
    const char *keys[] = {"host", "addr"};
    const char *values[] = {"10.0.0.1", "example.org"};
    fwd_decode_opts_t o = opts();
    o.extra_keys = keys;
    o.extra_values = values;
    o.n_extra = 2;
    res_t r;
    /* {"k":"v","host":"old"}: host replaced, addr added, canonical input still rewritten */
    weir_buf_t e =
        hex("92 d7 00 65 53 f1 00 00 00 00 01 82 a1 6b a1 76 a4 68 6f 73 74 a3 6f 6c 64 " ENTRY2);
    run_with(&r, packed("t", &e, false, NULL), &o);
    expect_ok(&r, 2);
    expect_event(&r, 0, T_SEC, 1,
                 "83 a1 6b a1 76 a4 68 6f 73 74 a8 31 30 2e 30 2e 30 2e 31 a4 61 64 64 72 ab 65 78 "
                 "61 6d 70 6c 65 2e 6f 72 67");
    expect_event(&r, 1, T_SEC, 2,
                 "83 a1 61 02 a4 68 6f 73 74 a8 31 30 2e 30 2e 30 2e 31 a4 61 64 64 72 ab 65 78 "
                 "61 6d 70 6c 65 2e 6f 72 67");
    done(&r);
    weir_buf_free(&e);
    /* a bin key "host" is not the str key and stays */
    run_with(&r, hex("93 a1 74 " T " 81 c4 04 68 6f 73 74 01"), &o);
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0,
                 "83 c4 04 68 6f 73 74 01 a4 68 6f 73 74 a8 31 30 2e 30 2e 30 2e 31 a4 61 64 64 "
                 "72 ab 65 78 61 6d 70 6c 65 2e 6f 72 67");
    done(&r);
    /* 15 pairs + 1 extra need a map16 header */
    o.n_extra = 1;
    weir_buf_t f = hex("93 a1 74 " T " 8f");
    for (int i = 0; i < 15; i++) {
        char pair[16];
        snprintf(pair, sizeof pair, "a1 %02x %02x", 0x41 + i, i);
        hex_append(&f, pair);
    }
    run_with(&r, f, &o);
    expect_ok(&r, 1);
    const char *p = r.b.data.data;
    weir_entry_t ev;
    assert_int_equal(entry_next(&p, p + r.b.data.len, &ev), 1);
    assert_memory_equal(ev.record, "\xde\x00\x10", 3);
    assert_int_equal(ev.record_len, 3 + 15 * 3 + 5 + 9);
    done(&r);
}

/* ---- the hot path ---- */

static void test_canonical_runs_copied_verbatim(void **state)
{
    weir_buf_t e = hex("");
    for (int i = 0; i < 1000; i++) {
        char ent[96];
        snprintf(ent, sizeof ent, "92 d7 00 65 53 f1 00 00 00 %02x %02x 81 a1 6e cd %02x %02x",
                 i >> 8, i & 0xff, i >> 8, i & 0xff);
        hex_append(&e, ent);
    }
    res_t r;
    run(&r, packed("t", &e, false, NULL));
    expect_ok(&r, 1000);
    assert_int_equal(r.b.data.len, e.len);
    assert_memory_equal(r.b.data.data, e.data, e.len);
    expect_event(&r, 999, T_SEC, 999, "81 a1 6e cd 03 e7");
    done(&r);
    /* a non-canonical entry in the middle is converted in place, order kept */
    weir_buf_t m = hex(ENTRY1 " 92 " T " " R " " ENTRY2);
    run(&r, packed("t", &m, false, NULL));
    expect_ok(&r, 3);
    expect_event(&r, 0, T_SEC, 1, "81 a1 61 01");
    expect_event(&r, 1, T_SEC, 0, R);
    expect_event(&r, 2, T_SEC, 2, "81 a1 61 02");
    done(&r);
    weir_buf_free(&m);
    weir_buf_free(&e);
}

static void test_tag_replaced(void **state)
{
    res_t r;
    run_hex(&r, "93 aa 61 70 70 2e 61 63 63 65 73 73 " T " " R);
    expect_ok(&r, 1);
    expect_tag(&r, "app.access");
    done(&r);
}

/* ---- G. JSON ---- */

static int json_decode(const char *text, size_t *consumed, res_t *r, const char *what)
{
    weir_buf_t frame;
    weir_buf_init(&frame);
    weir_err_t err;
    int rc = fwd_json_next(NULL, text, strlen(text), MIB, consumed, &frame, &err);
    if (rc == 1) {
        run(r, frame);
    } else {
        weir_buf_free(&frame);
    }
    (void)what;
    return rc;
}

static void test_g81_json_message(void **state)
{
    res_t r;
    size_t used;
    const char *text = "[\"t\",1700000000,{\"a\":1}]";
    assert_int_equal(json_decode(text, &used, &r, "81"), 1);
    assert_int_equal(used, strlen(text));
    expect_ok(&r, 1);
    expect_tag(&r, "t");
    expect_event(&r, 0, T_SEC, 0, "81 a1 61 01");
    expect_no_ack(&r);
    done(&r);
}

static void test_g82_json_ack(void **state)
{
    res_t r;
    size_t used;
    assert_int_equal(json_decode("[\"t\",1700000000,{\"a\":1},{\"chunk\":\"x\"}]", &used, &r, "82"),
                     1);
    expect_ok(&r, 1);
    weir_buf_t ack;
    weir_buf_init(&ack);
    fwd_ack_build(r.info.chunk, r.info.chunk_len, true, &ack);
    assert_int_equal(ack.len, strlen("{\"ack\":\"x\"}"));
    assert_memory_equal(ack.data, "{\"ack\":\"x\"}", ack.len);
    weir_buf_free(&ack);
    done(&r);
}

static void test_g83_two_json_values(void **state)
{
    const char *text = "[\"t\",1700000000,{\"a\":1}]\n[\"t\",1700000001,{\"a\":2}]\n";
    size_t len = strlen(text), off = 0, used;
    int n = 0;
    weir_buf_t frame;
    weir_buf_init(&frame);
    weir_err_t err;
    while (fwd_json_next(NULL, text + off, len - off, MIB, &used, &frame, &err) == 1) {
        off += used;
        n++;
    }
    assert_int_equal(n, 2);
    /* the two frames were appended one after the other */
    fwd_scanner_t s;
    fwd_scanner_init(&s, MIB, FWD_MAX_DEPTH);
    size_t f1, f2;
    assert_int_equal(fwd_scanner_scan(&s, frame.data, frame.len, &f1, NULL), FWD_SCAN_FRAME);
    assert_int_equal(fwd_scanner_scan(&s, frame.data + f1, frame.len - f1, &f2, NULL),
                     FWD_SCAN_FRAME);
    assert_int_equal(f1 + f2, frame.len);
    res_t r;
    weir_buf_t second = hex("");
    weir_buf_append(&second, frame.data + f1, f2);
    run(&r, second);
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC + 1, 0, "81 a1 61 02");
    done(&r);
    /* only whitespace is left: incomplete, not an error */
    assert_int_equal(fwd_json_next(NULL, text + off, len - off, MIB, &used, &frame, &err), 0);
    weir_buf_free(&frame);
}

static void test_g84_leading_space_is_msgpack(void **state)
{
    /* the connection is JSON only if its first byte is '[' or '{'; " [" read as msgpack is a
     * positive fixint, a fatal request */
    res_t r;
    run_hex(&r, "20");
    expect_fatal(&r);
    done(&r);
}

static void test_json_values(void **state)
{
    res_t r;
    size_t used;
    /* reals become float64, ints stay ints, brackets inside strings do not count, escapes */
    assert_int_equal(json_decode("[\"t\",1700000000,{\"f\":1.5,\"n\":-5,\"s\":\"]\\\"}\","
                                 "\"b\":true,\"z\":null,\"a\":[1,false]}]",
                                 &used, &r, "types"),
                     1);
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0,
                 "86 a1 66 cb 3f f8 00 00 00 00 00 00 a1 6e fb a1 73 a3 5d 22 7d a1 62 c3 a1 7a "
                 "c0 a1 61 92 01 c2");
    done(&r);
    /* duplicate keys keep the last value */
    assert_int_equal(json_decode("[\"t\",1700000000,{\"a\":1,\"a\":2}]", &used, &r, "dup"), 1);
    expect_event(&r, 0, T_SEC, 0, "81 a1 61 02");
    done(&r);
    /* a float time is an invalid event */
    assert_int_equal(json_decode("[\"t\",1700000000.5,{\"a\":1}]", &used, &r, "float"), 1);
    expect_ok(&r, 0);
    assert_int_equal(r.info.skipped, 1);
    done(&r);
    /* Forward mode in JSON */
    assert_int_equal(
        json_decode("[\"t\",[[1700000000,{\"a\":1}],[1700000001,{\"a\":2}]]]", &used, &r, "fwd"),
        1);
    expect_ok(&r, 2);
    done(&r);
}

/* A request arriving in pieces: the scan resumes where it stopped, so the bytes examined stay
 * the request's size (scanning again from the start on every read cost O(n^2 / piece): 16 MB
 * in 4 KiB writes took seconds), and a string, an escape or a bracket cut at a piece's edge
 * still reads right. */
static void test_json_resumes_linear(void **state)
{
    const char *tricky = "  [\"t\",1700000000,{\"s\":\"]\\\"}\\\\\",\"a\":[1,{\"b\":2}]}]";
    size_t tl = strlen(tricky);
    fwd_json_scan_t js;
    fwd_json_scan_reset(&js);
    weir_buf_t frame;
    weir_buf_init(&frame);
    weir_err_t err;
    size_t used = 0;
    fwd_json_scan_work = 0;
    for (size_t n = 1; n < tl; n++) /* one byte more per call */
        assert_int_equal(fwd_json_next(&js, tricky, n, MIB, &used, &frame, &err), 0);
    assert_int_equal(fwd_json_next(&js, tricky, tl, MIB, &used, &frame, &err), 1);
    assert_int_equal(used, tl);
    assert_int_equal(fwd_json_scan_work, tl);
    res_t r;
    run(&r, frame);
    expect_ok(&r, 1);
    expect_event(&r, 0, T_SEC, 0, "82 a1 73 a4 5d 22 7d 5c a1 61 92 01 81 a1 62 02");
    done(&r);

    /* 1 MiB in 4 KiB pieces, then a second value in the same buffer */
    const size_t big = MIB, piece = 4096;
    weir_buf_t text;
    weir_buf_init(&text);
    weir_buf_printf(&text, "[\"t\",1700000000,{\"s\":\"");
    while (text.len < big - 4) /* escapes here and there, some cut at a piece's edge */
        weir_buf_append(&text, text.len % 64 ? "x" : "\\n", text.len % 64 ? 1 : 2);
    weir_buf_printf(&text, "\"}]");
    size_t first = text.len;
    weir_buf_printf(&text, "[\"t\",1700000000,{}]");
    weir_buf_init(&frame);
    fwd_json_scan_work = 0;
    size_t n = 0;
    int rc = 0;
    while (rc == 0 && n < text.len) {
        n = n + piece > text.len ? text.len : n + piece;
        rc = fwd_json_next(&js, text.data, n, 2 * MIB, &used, &frame, &err);
    }
    assert_int_equal(rc, 1);
    assert_int_equal(used, first);
    assert_true(fwd_json_scan_work <= first);
    assert_int_equal(
        fwd_json_next(&js, text.data + used, text.len - used, 2 * MIB, &used, &frame, &err), 1);
    weir_buf_free(&frame);
    weir_buf_free(&text);
}

static void test_json_incomplete_and_errors(void **state)
{
    weir_buf_t frame;
    weir_buf_init(&frame);
    weir_err_t err;
    size_t used;
    const char *partial[] = {"[", "[\"t\",1", "[\"t\",\"]", "  ", "", "{\"a\":[1,2]"};
    for (size_t i = 0; i < sizeof partial / sizeof *partial; i++)
        assert_int_equal(
            fwd_json_next(NULL, partial[i], strlen(partial[i]), MIB, &used, &frame, &err), 0);
    const char *bad[] = {"[1,,2]", "x", "[\"t\" 1]", "[1}", "[\"\xff\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(fwd_json_next(NULL, bad[i], strlen(bad[i]), MIB, &used, &frame, &err), -1);
    assert_int_equal(frame.len, 0);
    /* the size cap: exactly at it parses, an incomplete value past it fails */
    const char *v = "[\"t\",1,{}]";
    assert_int_equal(fwd_json_next(NULL, v, strlen(v), strlen(v), &used, &frame, &err), 1);
    assert_int_equal(fwd_json_next(NULL, v, strlen(v), strlen(v) - 1, &used, &frame, &err), -1);
    assert_int_equal(fwd_json_next(NULL, "[\"t\",1,", 7, 6, &used, &frame, &err), -1);
    /* nesting: 64 levels is the limit */
    char deep[2 * FWD_MAX_DEPTH + 3];
    memset(deep, '[', FWD_MAX_DEPTH);
    memset(deep + FWD_MAX_DEPTH, ']', FWD_MAX_DEPTH);
    assert_int_equal(fwd_json_next(NULL, deep, 2 * FWD_MAX_DEPTH, MIB, &used, &frame, &err), 1);
    memset(deep, '[', FWD_MAX_DEPTH + 1);
    memset(deep + FWD_MAX_DEPTH + 1, ']', FWD_MAX_DEPTH + 1);
    assert_int_equal(fwd_json_next(NULL, deep, 2 * FWD_MAX_DEPTH + 2, MIB, &used, &frame, &err),
                     -1);
    weir_buf_free(&frame);
}

int main(void)
{
    weir_log_set_level(WEIR_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a01_message_int_time),
        cmocka_unit_test(test_a02_04_eventtime_encodings),
        cmocka_unit_test(test_a05_integer_encodings),
        cmocka_unit_test(test_a06_eventtime_unsigned_seconds),
        cmocka_unit_test(test_a07_message_with_ack),
        cmocka_unit_test(test_a08_09_empty_and_nil_option),
        cmocka_unit_test(test_a10_forward),
        cmocka_unit_test(test_a11_forward_with_ack),
        cmocka_unit_test(test_a12_packed_bin8),
        cmocka_unit_test(test_a13_fluentd_packed),
        cmocka_unit_test(test_a14_fluentd_gzip_members),
        cmocka_unit_test(test_a15_fluentbit_gzip),
        cmocka_unit_test(test_a16_zstd_frames),
        cmocka_unit_test(test_a17_metadata_forward),
        cmocka_unit_test(test_a18_metadata_packed),
        cmocka_unit_test(test_a19_group_markers),
        cmocka_unit_test(test_a20_21_empty_with_ack),
        cmocka_unit_test(test_a22_bin_tag),
        cmocka_unit_test(test_a23_rich_records),
        cmocka_unit_test(test_a24_compressed_on_forward_ignored),
        cmocka_unit_test(test_a25_wrong_size_ignored),
        cmocka_unit_test(test_a26_wrong_element_counts),
        cmocka_unit_test(test_heartbeat),
        cmocka_unit_test(test_c36_43_invalid_times),
        cmocka_unit_test(test_c43_string_time),
        cmocka_unit_test(test_c42_nsec_boundary),
        cmocka_unit_test(test_c44_time_zero_is_now),
        cmocka_unit_test(test_c45_record_not_a_map),
        cmocka_unit_test(test_c46_bad_entries),
        cmocka_unit_test(test_c47_malformed_metadata_wrapper),
        cmocka_unit_test(test_skip_invalid_event_false_still_skips),
        cmocka_unit_test(test_d48_53_fatal_shapes),
        cmocka_unit_test(test_d54_56_huge_declared_sizes),
        cmocka_unit_test(test_d57_depth),
        cmocka_unit_test(test_d60_62_65_bad_gzip),
        cmocka_unit_test(test_d63_stored_block_with_gzip_magic),
        cmocka_unit_test(test_d64_gzip_bomb),
        cmocka_unit_test(test_decompression_limit_exact),
        cmocka_unit_test(test_d66_69_70_bad_streams),
        cmocka_unit_test(test_d67_unknown_compression),
        cmocka_unit_test(test_d68_unannounced_gzip_is_sniffed),
        cmocka_unit_test(test_d71_unknown_ext_kept),
        cmocka_unit_test(test_fluent_signal_payload_dropped),
        cmocka_unit_test(test_e73_76_ack_echo),
        cmocka_unit_test(test_ack_json),
        cmocka_unit_test(test_extra_keys_rewrite_record),
        cmocka_unit_test(test_canonical_runs_copied_verbatim),
        cmocka_unit_test(test_tag_replaced),
        cmocka_unit_test(test_g81_json_message),
        cmocka_unit_test(test_g82_json_ack),
        cmocka_unit_test(test_g83_two_json_values),
        cmocka_unit_test(test_g84_leading_space_is_msgpack),
        cmocka_unit_test(test_json_values),
        cmocka_unit_test(test_json_resumes_linear),
        cmocka_unit_test(test_json_incomplete_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
