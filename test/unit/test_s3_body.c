/* An S3 object's bytes are the same every time its chunk is made into one (body.c): a chunk
 * uploaded again after a crash must overwrite its object with identical content, or Snowpipe
 * and the ETag see another file. Here: the same events formatted twice by fresh formatters
 * (as two processes would) give the same text, and the same text compressed by fresh writers,
 * fed in other slices, gives the same bytes, with the gzip header and zstd frame fields that
 * could carry a time, a name, a thread count or a checksum checked one by one. The whole path
 * across a real restart, against S3, is test_power_loss.py's crash between a PUT and the
 * chunk's deletion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/output/s3/s3_internal.h"

#define TEXT_LINES 40000 /* about 4 MB of text: many deflate blocks, 30 zstd blocks */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* JSON lines like Teleport's: a uid, repeated words, numbers; the same for the same seed. */
static void make_text(weir_buf_t *out)
{
    static const char *const words[] = {"user.login", "session.start", "alice", "bob",  "db",
                                        "kube",       "success",       "false", "true", "node-1"};
    rng = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < TEXT_LINES; i++) {
        uint64_t r = next_rand();
        weir_buf_printf(out,
                        "{\"uid\":\"%016llx%016llx\",\"event\":\"%s\",\"user\":\"%s\",\"ei\":%d,"
                        "\"pad\":\"%.*s\"}\n",
                        (unsigned long long)r, (unsigned long long)next_rand(), words[r % 10],
                        words[(r >> 8) % 10], i, (int)(r >> 16) % 64,
                        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    }
}

/* `text` compressed by a fresh writer, fed in slices: all at once when max_slice is 0, else
 * in pseudo-random slices of 1..max_slice bytes. */
static void body_of(s3_store_as_t kind, const weir_buf_t *text, size_t max_slice, uint64_t seed,
                    weir_buf_t *out)
{
    s3_body_writer_t w;
    out->len = 0;
    assert_int_equal(s3_body_init(&w, kind, 3, out), 0);
    rng = seed;
    size_t off = 0;
    while (off < text->len) {
        size_t n = max_slice ? 1 + (size_t)(next_rand() % max_slice) : text->len;
        if (n > text->len - off) n = text->len - off;
        assert_int_equal(s3_body_write(&w, text->data + off, n), 0);
        off += n;
    }
    assert_int_equal(s3_body_finish(&w), 0);
    s3_body_free(&w);
}

static void assert_same_bytes(const weir_buf_t *a, const weir_buf_t *b)
{
    assert_int_equal(a->len, b->len);
    assert_memory_equal(a->data, b->data, a->len);
}

static void same_bytes_every_time(s3_store_as_t kind)
{
    weir_buf_t text, first, again;
    weir_buf_init(&text);
    weir_buf_init(&first);
    weir_buf_init(&again);
    make_text(&text);
    body_of(kind, &text, 0, 1, &first);
    assert_true(first.len > 0);
    body_of(kind, &text, 0, 1, &again); /* a fresh writer, as after a restart */
    assert_same_bytes(&first, &again);
    /* slices of up to 7 bytes, up to 64 KiB, up to 1 MiB: the bytes do not depend on them */
    static const size_t slices[] = {7, 64 << 10, 1 << 20};
    for (size_t i = 0; i < sizeof slices / sizeof *slices; i++) {
        body_of(kind, &text, slices[i], 42 + i, &again);
        assert_same_bytes(&first, &again);
    }
    weir_buf_free(&text);
    weir_buf_free(&first);
    weir_buf_free(&again);
}

static void test_gzip_same_bytes_every_time(void **state)
{
    (void)state;
    same_bytes_every_time(S3_STORE_GZIP);
}

static void test_zstd_same_bytes_every_time(void **state)
{
    (void)state;
    same_bytes_every_time(S3_STORE_ZSTD);
}

static void test_json_and_text_are_the_text(void **state)
{
    (void)state;
    weir_buf_t text, body;
    weir_buf_init(&text);
    weir_buf_init(&body);
    make_text(&text);
    body_of(S3_STORE_JSON, &text, 1000, 3, &body);
    assert_same_bytes(&text, &body);
    body_of(S3_STORE_TEXT, &text, 1000, 4, &body);
    assert_same_bytes(&text, &body);
    weir_buf_free(&text);
    weir_buf_free(&body);
}

/* RFC 1952: ID1 ID2 CM FLG MTIME(4) XFL OS. No flag (no name, comment, extra, header CRC), no
 * time, OS Unix; and the member inflates back to the text. */
static void test_gzip_header_carries_no_time_and_no_name(void **state)
{
    (void)state;
    weir_buf_t text, body;
    weir_buf_init(&text);
    weir_buf_init(&body);
    weir_buf_printf(&text, "{\"uid\":\"1\"}\n");
    body_of(S3_STORE_GZIP, &text, 0, 1, &body);
    assert_true(body.len > 18);
    const unsigned char *h = (const unsigned char *)body.data;
    assert_int_equal(h[0], 0x1f);
    assert_int_equal(h[1], 0x8b);
    assert_int_equal(h[2], 8); /* deflate */
    assert_int_equal(h[3], 0); /* FLG: no FTEXT, FHCRC, FEXTRA, FNAME, FCOMMENT */
    assert_int_equal(h[4] | h[5] | h[6] | h[7], 0); /* MTIME */
    assert_int_equal(h[8], 0);                      /* XFL at the default level */
    assert_int_equal(h[9], 3);                      /* OS: Unix */
    char plain[64];
    z_stream z = {0};
    assert_int_equal(inflateInit2(&z, 16 + MAX_WBITS), Z_OK);
    z.next_in = (Bytef *)body.data;
    z.avail_in = (uInt)body.len;
    z.next_out = (Bytef *)plain;
    z.avail_out = sizeof plain;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    assert_int_equal(z.avail_in, 0); /* one member, nothing after it */
    assert_int_equal(z.total_out, text.len);
    assert_memory_equal(plain, text.data, text.len);
    inflateEnd(&z);
    weir_buf_free(&text);
    weir_buf_free(&body);
}

/* One frame, without a content checksum or a dictionary id, that decompresses to the text. */
static void test_zstd_frame_has_no_checksum_and_no_dictionary(void **state)
{
    (void)state;
    weir_buf_t text, body;
    weir_buf_init(&text);
    weir_buf_init(&body);
    make_text(&text);
    body_of(S3_STORE_ZSTD, &text, 0, 1, &body);
    /* RFC 8878: magic, then the frame header descriptor: bit 2 content checksum, bits 0-1
     * the size of the dictionary id (0: none) */
    const unsigned char *h = (const unsigned char *)body.data;
    assert_int_equal(h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24, ZSTD_MAGICNUMBER);
    assert_int_equal(h[4] & 0x04, 0);
    assert_int_equal(h[4] & 0x03, 0);
    assert_int_equal(ZSTD_getDictID_fromFrame(body.data, body.len), 0);
    assert_int_equal(ZSTD_findFrameCompressedSize(body.data, body.len), body.len);
    char *plain = malloc(text.len + 1);
    assert_non_null(plain);
    size_t n = ZSTD_decompress(plain, text.len + 1, body.data, body.len);
    assert_false(ZSTD_isError(n));
    assert_int_equal(n, text.len);
    assert_memory_equal(plain, text.data, n);
    free(plain);
    weir_buf_free(&text);
    weir_buf_free(&body);
}

/* A batch as a chunk holds it: events with floats, nested maps, a repeated key, a key that
 * prints like another; <inject> adds the tag and the event's own time (a string). */
static void make_batch(weir_batch_t *b)
{
    static const char r1[] = "\x84\xa3uid\xa2u1\xa5score\xcb\x3f\xb9\x99\x99\x99\x99\x99\x9a"
                             "\xa4meta\x82\xa1z\x01\xa1\x61\xc3\xa3uid\xa2u2";
    static const char r2[] = "\x83\x01\xa1x\xa1\x31\xa1y\xa2"
                             "ei\xcd\x01\x00";
    weir_batch_init(b, "events.log", 10);
    weir_batch_append(b, (weir_time_t){1700000000, 123456789}, r1, sizeof r1 - 1);
    weir_batch_append(b, (weir_time_t){1700000001, 0}, r2, sizeof r2 - 1);
}

static void format_once(const weir_batch_t *b, weir_buf_t *out)
{
    weir_format_opts_t fo;
    weir_format_opts_init(&fo, WEIR_FORMAT_JSON);
    weir_inject_opts_t io;
    weir_inject_opts_init(&io);
    io.tag_key = "tag";
    io.time_key = "at";
    io.time_type = WEIR_TIME_STRING;
    io.time_format = "%Y-%m-%dT%H:%M:%S.%NZ";
    io.utc = true;
    weir_formatter_t f;
    weir_inject_t inj;
    weir_err_t err = {{0}};
    assert_int_equal(weir_formatter_init(&f, &fo, &err), 0);
    assert_int_equal(weir_inject_init(&inj, &io, &err), 0);
    weir_buf_t scratch;
    weir_buf_init(&scratch);
    size_t skipped = 0;
    out->len = 0;
    assert_int_equal(weir_format_batch(&f, &inj, b, out, &scratch, &skipped, &err), 2);
    assert_int_equal(skipped, 0);
    weir_buf_free(&scratch);
    weir_inject_free(&inj);
    weir_formatter_free(&f);
}

static void test_formatting_the_same_events_twice_gives_the_same_text(void **state)
{
    (void)state;
    weir_batch_t b;
    make_batch(&b);
    weir_buf_t first, again, gz1, gz2;
    weir_buf_init(&first);
    weir_buf_init(&again);
    weir_buf_init(&gz1);
    weir_buf_init(&gz2);
    format_once(&b, &first);
    format_once(&b, &again);
    assert_same_bytes(&first, &again);
    weir_buf_putc(&first, '\0');
    first.len--;
    /* what each line holds: the event's own time, never the time it was formatted */
    assert_string_equal(first.data,
                        "{\"uid\":\"u2\",\"score\":0.1,\"meta\":{\"z\":1,\"a\":true},"
                        "\"tag\":\"events.log\",\"at\":\"2023-11-14T22:13:20.123456789Z\"}\n"
                        "{\"1\":\"y\",\"ei\":256,\"tag\":\"events.log\","
                        "\"at\":\"2023-11-14T22:13:21.000000000Z\"}\n");
    body_of(S3_STORE_GZIP, &first, 0, 1, &gz1);
    body_of(S3_STORE_GZIP, &again, 0, 1, &gz2);
    assert_same_bytes(&gz1, &gz2);
    weir_buf_free(&first);
    weir_buf_free(&again);
    weir_buf_free(&gz1);
    weir_buf_free(&gz2);
    weir_batch_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gzip_same_bytes_every_time),
        cmocka_unit_test(test_zstd_same_bytes_every_time),
        cmocka_unit_test(test_json_and_text_are_the_text),
        cmocka_unit_test(test_gzip_header_carries_no_time_and_no_name),
        cmocka_unit_test(test_zstd_frame_has_no_checksum_and_no_dictionary),
        cmocka_unit_test(test_formatting_the_same_events_twice_gives_the_same_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
