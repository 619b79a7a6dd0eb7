/* The one bounded inflater (src/core/inflate.c): each format, the output limit exactly at it
 * and one past it, several gzip members and zstd frames, truncation, trailing bytes, and the
 * step budget that lets a caller inflate a large body a slice at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "weir/inflate.h"

#define MIB (1024u * 1024)

/* One gzip member (wbits 16 + 15), one zlib stream (15) or raw deflate (-15) of `n` bytes. */
static void deflate_append(weir_buf_t *out, const void *in, size_t n, int wbits)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t bound = deflateBound(&zs, (uLong)n) + 32;
    weir_buf_reserve(out, bound);
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (unsigned)n;
    zs.next_out = (unsigned char *)out->data + out->len;
    zs.avail_out = (unsigned)bound;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    out->len += bound - zs.avail_out;
    deflateEnd(&zs);
}

static void zstd_append(weir_buf_t *out, const void *in, size_t n)
{
    size_t bound = ZSTD_compressBound(n);
    weir_buf_reserve(out, bound);
    size_t r = ZSTD_compress(out->data + out->len, bound, in, n, 3);
    assert_false(ZSTD_isError(r));
    out->len += r;
}

static void pack(weir_inflate_format_t fmt, weir_buf_t *out, const void *in, size_t n)
{
    if (fmt == WEIR_INFLATE_ZSTD)
        zstd_append(out, in, n);
    else
        deflate_append(out, in, n, fmt == WEIR_INFLATE_GZIP ? 16 + MAX_WBITS : MAX_WBITS);
}

static const weir_inflate_format_t FORMATS[] = {WEIR_INFLATE_GZIP, WEIR_INFLATE_ZLIB,
                                                WEIR_INFLATE_ZSTD};

/* A payload that compresses, with some variety so the decoder's paths are exercised. */
static char *payload(size_t n)
{
    char *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)("weir audit log "[i % 15] + (i / 4096) % 3);
    return p;
}

/* A body exactly at the limit inflates; one byte more fails and names the parameter. */
static void test_limit_exact_and_past(void **state)
{
    (void)state;
    const size_t n = 300000;
    char *plain = payload(n);
    for (size_t f = 0; f < 3; f++) {
        weir_buf_t z, out;
        weir_buf_init(&z);
        weir_buf_init(&out);
        pack(FORMATS[f], &z, plain, n);
        weir_err_t err;
        assert_int_equal(weir_inflate(FORMATS[f], z.data, z.len, n, &out, &err), 0);
        assert_int_equal(out.len, n);
        assert_memory_equal(out.data, plain, n);
        assert_true(out.cap <= n + 1);
        out.len = 0;
        weir_buf_free(&out);
        weir_buf_init(&out);
        assert_int_equal(weir_inflate(FORMATS[f], z.data, z.len, n - 1, &out, &err), -1);
        assert_non_null(strstr(err.msg, "decompression_size_limit"));
        assert_non_null(strstr(err.msg, weir_inflate_format_name(FORMATS[f])));
        assert_true(out.cap <= n);
        weir_buf_free(&z);
        weir_buf_free(&out);
    }
    free(plain);
}

/* The output appends after what the buffer held, and the limit counts only the new bytes. */
static void test_appends(void **state)
{
    (void)state;
    weir_buf_t z, out;
    weir_buf_init(&z);
    weir_buf_init(&out);
    pack(WEIR_INFLATE_GZIP, &z, "hello", 5);
    weir_buf_append(&out, "abc", 3);
    weir_err_t err;
    assert_int_equal(weir_inflate(WEIR_INFLATE_GZIP, z.data, z.len, 5, &out, &err), 0);
    assert_int_equal(out.len, 8);
    assert_memory_equal(out.data, "abchello", 8);
    weir_buf_free(&z);
    weir_buf_free(&out);
}

/* Concatenated gzip members and zstd frames are one body (Fluentd's buffer appends a member
 * per write; the old HTTP inflater stopped after the first); zlib is one stream and anything
 * after it is an error. */
static void test_members_and_frames(void **state)
{
    (void)state;
    for (size_t f = 0; f < 3; f++) {
        weir_buf_t z, out;
        weir_buf_init(&z);
        weir_buf_init(&out);
        pack(FORMATS[f], &z, "first,", 6);
        pack(FORMATS[f], &z, "", 0);
        pack(FORMATS[f], &z, "second", 6);
        weir_err_t err;
        int rc = weir_inflate(FORMATS[f], z.data, z.len, MIB, &out, &err);
        if (FORMATS[f] == WEIR_INFLATE_ZLIB) {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(err.msg, "trailing bytes"));
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(out.len, 12);
            assert_memory_equal(out.data, "first,second", 12);
        }
        weir_buf_free(&z);
        weir_buf_free(&out);
    }
}

/* Cut short anywhere, or followed by bytes that are not another member: an error, never a
 * silent partial body. */
static void test_truncated_and_trailing(void **state)
{
    (void)state;
    char *plain = payload(100000);
    for (size_t f = 0; f < 3; f++) {
        weir_buf_t z;
        weir_buf_init(&z);
        pack(FORMATS[f], &z, plain, 100000);
        weir_err_t err;
        for (size_t cut = 1; cut < z.len; cut += 1 + z.len / 50) {
            weir_buf_t out;
            weir_buf_init(&out);
            assert_int_equal(weir_inflate(FORMATS[f], z.data, cut, MIB, &out, &err), -1);
            weir_buf_free(&out);
        }
        weir_buf_append(&z, "xyz", 3);
        weir_buf_t out;
        weir_buf_init(&out);
        assert_int_equal(weir_inflate(FORMATS[f], z.data, z.len, MIB, &out, &err), -1);
        weir_buf_free(&out);
        weir_buf_free(&z);
    }
    /* a corrupted gzip CRC */
    weir_buf_t z, out;
    weir_buf_init(&z);
    weir_buf_init(&out);
    pack(WEIR_INFLATE_GZIP, &z, "hello", 5);
    z.data[z.len - 8] ^= 1;
    weir_err_t err;
    assert_int_equal(weir_inflate(WEIR_INFLATE_GZIP, z.data, z.len, MIB, &out, &err), -1);
    /* raw deflate is not zlib */
    z.len = 0;
    deflate_append(&z, "hello", 5, -MAX_WBITS);
    out.len = 0;
    assert_int_equal(weir_inflate(WEIR_INFLATE_ZLIB, z.data, z.len, MIB, &out, &err), -1);
    /* empty input is empty output */
    out.len = 0;
    assert_int_equal(weir_inflate(WEIR_INFLATE_GZIP, "", 0, MIB, &out, &err), 0);
    assert_int_equal(out.len, 0);
    weir_buf_free(&z);
    weir_buf_free(&out);
    free(plain);
}

/* A 512 MiB bomb against a 16 MiB limit, in steps of WEIR_INFLATE_STEP_BUDGET: each step stops
 * within one chunk of its budget, the output never passes the limit, and the step that passes
 * it fails. */
static void test_steps_bounded(void **state)
{
    (void)state;
    for (size_t f = 0; f < 3; f++) {
        char *zeros = calloc(1, 64 * MIB);
        weir_buf_t z;
        weir_buf_init(&z);
        for (int i = 0; i < (FORMATS[f] == WEIR_INFLATE_ZLIB ? 1 : 8); i++)
            pack(FORMATS[f], &z, zeros, 64 * MIB);
        free(zeros);
        weir_buf_t out;
        weir_buf_init(&out);
        weir_err_t err;
        weir_inflate_t *in = weir_inflate_new(FORMATS[f], z.data, z.len, 16 * MIB, &out, &err);
        assert_non_null(in);
        int rc, steps = 0;
        size_t before = 0;
        while ((rc = weir_inflate_step(in, WEIR_INFLATE_STEP_BUDGET, &err)) == 0) {
            size_t now = weir_inflate_produced(in);
            assert_true(now - before >= WEIR_INFLATE_STEP_BUDGET);
            assert_true(now - before <= WEIR_INFLATE_STEP_BUDGET + WEIR_INFLATE_CHUNK);
            before = now;
            steps++;
        }
        assert_int_equal(rc, -1);
        assert_non_null(strstr(err.msg, "decompression_size_limit"));
        assert_int_equal(steps, 16); /* 16 MiB in 1 MiB steps, the 17th passes the limit */
        assert_true(out.cap <= 16 * MIB + 1);
        weir_inflate_free(in);
        weir_buf_free(&out);
        weir_buf_free(&z);
    }
}

/* Stepping and one call give the same bytes. */
static void test_steps_same_output(void **state)
{
    (void)state;
    const size_t n = 5 * MIB + 123;
    char *plain = payload(n);
    for (size_t f = 0; f < 3; f++) {
        weir_buf_t z, out;
        weir_buf_init(&z);
        weir_buf_init(&out);
        pack(FORMATS[f], &z, plain, n / 2);
        if (FORMATS[f] != WEIR_INFLATE_ZLIB) pack(FORMATS[f], &z, plain + n / 2, n - n / 2);
        size_t want = FORMATS[f] == WEIR_INFLATE_ZLIB ? n / 2 : n;
        weir_err_t err;
        weir_inflate_t *in = weir_inflate_new(FORMATS[f], z.data, z.len, n, &out, &err);
        int rc;
        while ((rc = weir_inflate_step(in, 100000, &err)) == 0)
            ;
        assert_int_equal(rc, 1);
        weir_inflate_free(in);
        assert_int_equal(out.len, want);
        assert_memory_equal(out.data, plain, want);
        weir_buf_free(&z);
        weir_buf_free(&out);
    }
    free(plain);
}

/* Many empty gzip members produce no output yet still end a step at its budget. */
static void test_steps_count_input(void **state)
{
    (void)state;
    weir_buf_t z, out;
    weir_buf_init(&z);
    weir_buf_init(&out);
    while (z.len < 4 * WEIR_INFLATE_CHUNK)
        pack(WEIR_INFLATE_GZIP, &z, "", 0);
    weir_err_t err;
    weir_inflate_t *in = weir_inflate_new(WEIR_INFLATE_GZIP, z.data, z.len, MIB, &out, &err);
    int rc, steps = 0;
    while ((rc = weir_inflate_step(in, WEIR_INFLATE_CHUNK, &err)) == 0)
        steps++;
    assert_int_equal(rc, 1);
    assert_true(steps >= 3);
    assert_int_equal(out.len, 0);
    weir_inflate_free(in);
    weir_buf_free(&z);
    weir_buf_free(&out);
}

/* weir_inflation_run, the state an input keeps across loop turns: the same bytes as one call,
 * one step per call, the same error text as one call, and the state is idle after an error
 * or a reset (the ASan build checks nothing leaks). */
static void test_inflation_across_calls(void **state)
{
    (void)state;
    const size_t n = 5 * MIB + 123;
    char *plain = payload(n);
    for (size_t f = 0; f < 3; f++) {
        weir_buf_t z;
        weir_buf_init(&z);
        pack(FORMATS[f], &z, plain, n);
        weir_inflation_t s = {0};
        weir_err_t err;
        int rc, calls = 0;
        weir_inflate_step_max = 0;
        while ((rc = weir_inflation_run(&s, FORMATS[f], z.data, z.len, n, &err)) == 0)
            calls++;
        assert_int_equal(rc, 1);
        assert_int_equal(calls, n / WEIR_INFLATE_STEP_BUDGET);
        assert_true(weir_inflate_step_max <= WEIR_INFLATE_STEP_BUDGET + WEIR_INFLATE_CHUNK);
        assert_int_equal(s.out.len, n);
        assert_memory_equal(s.out.data, plain, n);
        assert_int_equal(weir_inflation_run(&s, FORMATS[f], z.data, z.len, n, &err), 1);
        weir_inflation_reset(&s);
        assert_null(s.z);
        assert_int_equal(s.out.len, 0);

        /* one byte under the size: the same error as one call, on the call that passes it */
        weir_err_t one;
        weir_buf_t out;
        weir_buf_init(&out);
        assert_int_equal(weir_inflate(FORMATS[f], z.data, z.len, n - 1, &out, &one), -1);
        weir_buf_free(&out);
        while ((rc = weir_inflation_run(&s, FORMATS[f], z.data, z.len, n - 1, &err)) == 0)
            ;
        assert_int_equal(rc, -1);
        assert_string_equal(err.msg, one.msg);
        assert_null(s.z);
        assert_int_equal(s.out.len, 0);

        /* truncated: the same error as one call */
        assert_int_equal(weir_inflate(FORMATS[f], z.data, z.len - 1, n, &out, &one), -1);
        weir_buf_free(&out);
        while ((rc = weir_inflation_run(&s, FORMATS[f], z.data, z.len - 1, n, &err)) == 0)
            ;
        assert_int_equal(rc, -1);
        assert_string_equal(err.msg, one.msg);

        /* reset midway frees the decoder and what it produced */
        assert_int_equal(weir_inflation_run(&s, FORMATS[f], z.data, z.len, n, &err), 0);
        weir_inflation_reset(&s);
        assert_null(s.z);
        weir_buf_free(&z);
    }
    free(plain);
}

/* Streaming (weir_inflate_feed): the input in pieces of every size from 1 byte, the output
 * emptied after each step, gives the same bytes as one call, for several members/frames;
 * a stream cut short is "truncated" only once the last piece was fed; empty is done. */
static void stream_all(weir_inflate_format_t fmt, const weir_buf_t *in, size_t piece,
                       bool end_empty, weir_buf_t *got, int *rc_out, weir_err_t *err)
{
    weir_buf_t out;
    weir_buf_init(&out);
    weir_inflate_t *z = weir_inflate_new(fmt, NULL, 0, 64 * 1024, &out, err);
    assert_non_null(z);
    int rc = 2;
    size_t off = 0;
    do {
        size_t n = in->len - off < piece ? in->len - off : piece;
        weir_inflate_feed(z, in->data + off, n, off + n == in->len && !end_empty);
        off += n;
        do {
            rc = weir_inflate_step(z, 64 * 1024, err);
            assert_true(out.len <= 64 * 1024 + 1); /* never more than the step held */
            weir_buf_append(got, out.data, out.len);
            out.len = 0;
        } while (rc == 0);
    } while (rc == 2 && off < in->len);
    if (rc == 2) { /* the last piece was not marked last: say so with an empty one */
        weir_inflate_feed(z, NULL, 0, true);
        rc = weir_inflate_step(z, 64 * 1024, err);
    }
    weir_inflate_free(z);
    weir_buf_free(&out);
    *rc_out = rc;
}

static void test_streaming_pieces(void **state)
{
    size_t n = 3 * MIB + 17;
    char *p = payload(n);
    for (size_t f = 0; f < sizeof FORMATS / sizeof *FORMATS; f++) {
        weir_buf_t in;
        weir_buf_init(&in);
        pack(FORMATS[f], &in, p, n);
        if (FORMATS[f] != WEIR_INFLATE_ZLIB) pack(FORMATS[f], &in, p, 1000); /* a 2nd member */
        size_t want = FORMATS[f] != WEIR_INFLATE_ZLIB ? n + 1000 : n;
        size_t pieces[] = {1, 7, 4096, 65536, in.len};
        for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) {
            weir_buf_t got;
            weir_buf_init(&got);
            int rc;
            weir_err_t err = {{0}};
            stream_all(FORMATS[f], &in, pieces[i], i % 2, &got, &rc, &err);
            assert_int_equal(rc, 1);
            assert_int_equal(got.len, want);
            assert_memory_equal(got.data, p, n);
            weir_buf_free(&got);
        }
        /* cut 5 bytes short: "truncated" once the last piece came, and what came is right */
        {
            weir_buf_t cut, got;
            weir_buf_init(&cut);
            weir_buf_init(&got);
            weir_buf_append(&cut, in.data, in.len - 5);
            int rc;
            weir_err_t err = {{0}};
            stream_all(FORMATS[f], &cut, 4096, false, &got, &rc, &err);
            assert_int_equal(rc, -1);
            assert_non_null(strstr(err.msg, "truncated"));
            assert_memory_equal(got.data, p, got.len < n ? got.len : n);
            weir_buf_free(&got);
            weir_buf_free(&cut);
        }
        /* trailing garbage after the last member, in its own piece */
        weir_buf_append(&in, "xyz", 3);
        weir_buf_t got;
        weir_buf_init(&got);
        int rc;
        weir_err_t err = {{0}};
        stream_all(FORMATS[f], &in, in.len - 3, false, &got, &rc, &err);
        assert_int_equal(rc, -1);
        weir_buf_free(&got);
        weir_buf_free(&in);
        /* empty input: done, nothing out */
        weir_buf_t empty;
        weir_buf_init(&empty);
        weir_buf_init(&got);
        weir_buf_t out;
        weir_buf_init(&out);
        weir_inflate_t *z = weir_inflate_new(FORMATS[f], NULL, 0, 100, &out, &err);
        weir_inflate_feed(z, NULL, 0, true);
        assert_int_equal(weir_inflate_step(z, 1000, &err), 1);
        assert_int_equal(out.len, 0);
        weir_inflate_free(z);
        weir_buf_free(&out);
    }
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit_exact_and_past), cmocka_unit_test(test_appends),
        cmocka_unit_test(test_members_and_frames),   cmocka_unit_test(test_truncated_and_trailing),
        cmocka_unit_test(test_steps_bounded),        cmocka_unit_test(test_steps_same_output),
        cmocka_unit_test(test_steps_count_input),    cmocka_unit_test(test_inflation_across_calls),
        cmocka_unit_test(test_streaming_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
