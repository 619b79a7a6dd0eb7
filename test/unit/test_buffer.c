/* The chunk file format (src/buffer/chunkfile.c) and CRC-32C: what recovery decides for whole,
 * torn and damaged files, byte by byte. The buffer's life cycle (group commit, kill -9,
 * disk full, retries) is tested through the real binary in
 * test/integration/test_buffer_durability.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../../src/buffer/chunkfile.h"
#include "weir/crc32c.h"
#include "weir/event.h"

uint32_t weir_crc32c_sw(uint32_t crc, const void *data, size_t n);

static void test_crc32c_known_vector(void **state)
{
    /* the CRC-32C check value (RFC 3720 / iSCSI) */
    assert_int_equal(weir_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(weir_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    /* 32 bytes of zeros, RFC 3720 B.4 */
    char zeros[32] = {0};
    assert_int_equal(weir_crc32c(0, zeros, 32), 0x8A9136AAu);
}

static void test_crc32c_hw_equals_sw_and_is_incremental(void **state)
{
    unsigned char buf[4099];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    for (size_t n = 0; n < sizeof buf; n += 97) {
        uint32_t a = weir_crc32c(0, buf, n);
        assert_int_equal(a, weir_crc32c_sw(0, buf, n));
        size_t half = n / 3;
        assert_int_equal(a, weir_crc32c(weir_crc32c(0, buf, half), buf + half, n - half));
    }
}

static void test_meta_roundtrip(void **state)
{
    chunk_meta_t m = {0};
    for (int i = 0; i < 16; i++)
        m.id[i] = (uint8_t)i;
    m.has_timekey = true;
    m.timekey = 1704067200;
    m.tag = strdup("app.web");
    m.nvars = 1;
    m.var_keys = calloc(1, sizeof(char *));
    m.var_values = calloc(1, sizeof(char *));
    m.var_keys[0] = strdup("namespace");
    m.var_values[0] = strdup("prod");
    m.created = 1704067201;
    weir_buf_t b;
    weir_buf_init(&b);
    chunk_meta_encode(&m, &b);
    chunk_meta_t d;
    assert_int_equal(chunk_meta_decode(b.data, b.len, &d, NULL), 0);
    assert_memory_equal(d.id, m.id, 16);
    assert_true(d.has_timekey);
    assert_int_equal(d.timekey, 1704067200);
    assert_string_equal(d.tag, "app.web");
    assert_int_equal(d.nvars, 1);
    assert_string_equal(d.var_values[0], "prod");
    assert_int_equal(d.created, 1704067201);
    /* every truncation of the meta is rejected, never read past */
    for (size_t n = 0; n < b.len; n++) {
        chunk_meta_t t;
        assert_int_equal(chunk_meta_decode(b.data, n, &t, NULL), -1);
    }
    chunk_meta_free(&d);
    chunk_meta_free(&m);
    weir_buf_free(&b);
}

/* WEIR_TAG_MAX bounds the tag in the metadata on read as the inputs bound it on the way in:
 * a tag exactly at the limit round-trips, one byte more is refused. */
static void test_meta_tag_at_and_past_the_limit(void **state)
{
    for (size_t n = WEIR_TAG_MAX; n <= WEIR_TAG_MAX + 1; n++) {
        chunk_meta_t m = {0};
        m.tag = malloc(n + 1);
        memset(m.tag, 't', n);
        m.tag[n] = '\0';
        weir_buf_t b;
        weir_buf_init(&b);
        chunk_meta_encode(&m, &b);
        assert_true(b.len <= CHUNK_META_MAX);
        chunk_meta_t d;
        int rc = chunk_meta_decode(b.data, b.len, &d, NULL);
        if (n == WEIR_TAG_MAX) {
            assert_int_equal(rc, 0);
            assert_int_equal(strlen(d.tag), WEIR_TAG_MAX);
            chunk_meta_free(&d);
        } else {
            assert_int_equal(rc, -1);
        }
        chunk_meta_free(&m);
        weir_buf_free(&b);
    }
}

/* Writes a chunk file of a meta record and `n` events records of 3 events each. Returns the
 * file size; offs[] receives each record's offset. */
static off_t write_chunk(const char *path, int n, off_t *offs)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    chunk_meta_t m = {0};
    m.created = 1;
    weir_buf_t meta;
    weir_buf_init(&meta);
    chunk_meta_encode(&m, &meta);
    char hdr[CHUNK_HDR_LEN];
    chunk_record_header(hdr, CHUNK_REC_META, meta.data, meta.len, 0);
    off_t off = 0;
    offs[0] = 0;
    assert_int_equal(write(fd, hdr, sizeof hdr), sizeof hdr);
    assert_int_equal(write(fd, meta.data, meta.len), (ssize_t)meta.len);
    off += CHUNK_HDR_LEN + (off_t)meta.len;
    for (int i = 0; i < n; i++) {
        weir_batch_t b;
        weir_batch_init(&b, "t", 1);
        for (int k = 0; k < 3; k++) {
            weir_time_t t = {1700000000u + (uint32_t)i, (uint32_t)k};
            weir_batch_append(&b, t, "\x81\xa1k\xa1v", 5);
        }
        chunk_record_header(hdr, CHUNK_REC_EVENTS, b.data.data, b.data.len, b.count);
        offs[i + 1] = off;
        assert_int_equal(write(fd, hdr, sizeof hdr), sizeof hdr);
        assert_int_equal(write(fd, b.data.data, b.data.len), (ssize_t)b.data.len);
        off += CHUNK_HDR_LEN + (off_t)b.data.len;
        weir_batch_free(&b);
    }
    close(fd);
    weir_buf_free(&meta);
    return off;
}

static void scan_path(const char *path, chunk_scan_t *s)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(chunk_scan_fd(fd, s, NULL), 0);
    close(fd);
}

static void test_whole_file(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    close(mkstemp(path));
    off_t offs[8];
    off_t size = write_chunk(path, 5, offs);
    chunk_scan_t s;
    scan_path(path, &s);
    assert_true(s.meta_ok);
    assert_false(s.torn_tail);
    assert_false(s.corrupt);
    assert_int_equal(s.events, 15);
    assert_int_equal(s.records, 6);
    assert_int_equal(s.good_end, size);
    chunk_meta_free(&s.meta);
    chunk_reader_t r;
    assert_int_equal(chunk_reader_open(&r, path, 0, NULL), 0);
    uint32_t records = 0;
    chunk_run_t run;
    while (chunk_reader_next(&r, &run, NULL) == 1) {
        assert_int_equal(run.count, 3);
        assert_null(run.tag);
        records++;
    }
    assert_int_equal(records, 5);
    assert_int_equal(r.events, 15);
    chunk_reader_close(&r);
    unlink(path);
}

/* Cutting the file at any byte leaves the records before the cut and calls the rest torn. */
static void test_every_truncation_is_a_torn_tail(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    close(mkstemp(path));
    off_t offs[8];
    off_t size = write_chunk(path, 3, offs);
    for (off_t cut = 1; cut < size; cut++) {
        write_chunk(path, 3, offs);
        assert_int_equal(truncate(path, cut), 0);
        chunk_scan_t s;
        scan_path(path, &s);
        assert_false(s.corrupt);
        offs[4] = size; /* the end of record r is offs[r + 1] */
        int whole = 0;
        for (int r = 1; r <= 3; r++)
            whole += offs[r + 1] <= cut;
        if (cut < offs[1]) {
            assert_false(s.meta_ok);
            assert_int_equal(s.events, 0);
        } else {
            assert_true(s.meta_ok);
            assert_int_equal(s.events, (uint64_t)whole * 3);
            assert_int_equal(s.good_end, offs[whole + 1]);
        }
        assert_true(s.torn_tail || s.good_end == cut);
        chunk_meta_free(&s.meta);
    }
    unlink(path);
}

/* Flipping any byte of an events record is caught by its checksum; the records before it
 * are kept and the damaged part's claim is reported. */
static void test_every_flipped_byte_is_caught(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    close(mkstemp(path));
    off_t offs[8];
    off_t size = write_chunk(path, 4, offs);
    for (off_t at = offs[1]; at < size; at++) {
        write_chunk(path, 4, offs);
        int fd = open(path, O_RDWR);
        unsigned char ch;
        assert_int_equal(pread(fd, &ch, 1, at), 1);
        ch ^= 0x5a;
        assert_int_equal(pwrite(fd, &ch, 1, at), 1);
        close(fd);
        chunk_scan_t s;
        scan_path(path, &s);
        int rec = 1;
        while (rec < 4 && offs[rec + 1] <= at)
            rec++;
        /* a damaged length may also look like a cut write; either way nothing after it */
        assert_true(s.corrupt || s.torn_tail);
        assert_int_equal(s.events, (uint64_t)(rec - 1) * 3);
        assert_int_equal(s.good_end, offs[rec]);
        chunk_meta_free(&s.meta);
    }
    unlink(path);
}

/* Writes one CHUNK_REC_TAGGED record of 2 events of `tag` (tag_len bytes) at the end of fd. */
static void put_tagged(int fd, const char *tag, size_t tag_len)
{
    weir_batch_t b;
    weir_batch_init(&b, "x", 1);
    for (int k = 0; k < 2; k++)
        weir_batch_append(&b, (weir_time_t){1700000000u, (uint32_t)k}, "\x81\xa1k\xa1v", 5);
    char hdr[CHUNK_HDR_LEN], th[CHUNK_TAG_HDR_MAX];
    struct iovec iov[4] = {{hdr, CHUNK_HDR_LEN},
                           {th, chunk_tag_header(th, tag_len)},
                           {(void *)tag, tag_len},
                           {b.data.data, b.data.len}};
    chunk_record_header_v(hdr, CHUNK_REC_TAGGED, iov + 1, 3, b.count);
    assert_true(lseek(fd, 0, SEEK_END) >= 0);
    assert_true(writev(fd, iov, 4) > 0);
    weir_batch_free(&b);
}

/* A chunk of several tags: each tagged record gives its own tag back with its entries, whatever
 * the tag's msgpack header length (fixstr, str 8, str 16, up to WEIR_TAG_MAX bytes). */
static void test_tagged_records_keep_each_batch_tag(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    close(mkstemp(path));
    off_t offs[8];
    write_chunk(path, 1, offs);
    static char longtag[WEIR_TAG_MAX];
    memset(longtag, 'L', sizeof longtag);
    const size_t lens[] = {5, 31, 32, 255, 256, WEIR_TAG_MAX};
    int fd = open(path, O_WRONLY);
    for (size_t i = 0; i < 6; i++)
        put_tagged(fd, longtag, lens[i]);
    close(fd);
    chunk_scan_t s;
    scan_path(path, &s);
    assert_false(s.corrupt || s.torn_tail);
    assert_int_equal(s.events, 3 + 6 * 2);
    chunk_meta_free(&s.meta);
    chunk_reader_t r;
    assert_int_equal(chunk_reader_open(&r, path, 0, NULL), 0);
    chunk_run_t run;
    assert_int_equal(chunk_reader_next(&r, &run, NULL), 1);
    assert_null(run.tag); /* type 2: the chunk's tag */
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(chunk_reader_next(&r, &run, NULL), 1);
        assert_int_equal(run.tag_len, lens[i]);
        assert_memory_equal(run.tag, longtag, lens[i]);
        assert_int_equal(run.count, 2);
        weir_batch_iter_t it;
        weir_entry_t e;
        weir_batch_iter_init(&it, run.entries, run.len);
        int n = 0;
        while (weir_batch_iter_next(&it, &e) == 1)
            n++;
        assert_int_equal(n, 2);
    }
    assert_int_equal(chunk_reader_next(&r, &run, NULL), 0);
    chunk_reader_close(&r);
    unlink(path);
}

/* A checksummed tagged record whose tag is longer than WEIR_TAG_MAX was not written by weir:
 * recovery treats it as damage, never reads it as events. */
static void test_tagged_record_past_the_tag_limit_is_damage(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    close(mkstemp(path));
    off_t offs[8];
    off_t size = write_chunk(path, 1, offs);
    static char tag[WEIR_TAG_MAX + 1];
    memset(tag, 'T', sizeof tag);
    int fd = open(path, O_WRONLY);
    put_tagged(fd, tag, sizeof tag);
    close(fd);
    chunk_scan_t s;
    scan_path(path, &s);
    assert_true(s.corrupt);
    assert_int_equal(s.events, 3);
    assert_int_equal(s.good_end, size);
    chunk_meta_free(&s.meta);
    unlink(path);
}

static void test_garbage_is_not_metadata(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    int fd = mkstemp(path);
    char junk[300];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 37 + 1);
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    chunk_scan_t s;
    scan_path(path, &s);
    assert_false(s.meta_ok);
    assert_int_equal(s.events, 0);
    assert_int_equal(s.good_end, 0);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_known_vector),
        cmocka_unit_test(test_crc32c_hw_equals_sw_and_is_incremental),
        cmocka_unit_test(test_meta_roundtrip),
        cmocka_unit_test(test_meta_tag_at_and_past_the_limit),
        cmocka_unit_test(test_whole_file),
        cmocka_unit_test(test_every_truncation_is_a_torn_tail),
        cmocka_unit_test(test_every_flipped_byte_is_caught),
        cmocka_unit_test(test_tagged_records_keep_each_batch_tag),
        cmocka_unit_test(test_tagged_record_past_the_tag_limit_is_damage),
        cmocka_unit_test(test_garbage_is_not_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
