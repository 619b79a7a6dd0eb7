/* Fluentd's buffer files as weir adopts them (src/buffer/fluentd_meta.c): the chunk file names,
 * and the .meta parser over what Fluentd's buf_file writes and over what it never writes. The
 * adoption itself (files moved, data delivered) is tested through the real binary in
 * test/integration/test_buffer_durability.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/buffer/fluentd_meta.h"
#include "weir/buffer.h"

static const uint8_t ID[16] = {0x5f, 0x32, 0x23, 0x2e, 0x76, 0xa4, 0xd1, 0xbd,
                               0xfd, 0xbe, 0xed, 0x36, 0xc3, 0x84, 0xb0, 0x3b};

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* A .meta body as buf_file writes it: timekey, tag, variables (with `nvars` entries, or nil
 * when negative), seq, id, s, c, m; then `tags` more "tag" keys and `varsets` more
 * "variables" keys (a Ruby Hash never has a key twice: those are not Fluentd's). */
static void meta_body(weir_buf_t *out, int nvars, int tags, int varsets, bool id)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, weir_buf_msgpack_write);
    msgpack_pack_map(&pk, (uint32_t)(7 + (id ? 1 : 0) + tags + varsets));
    pack_str(&pk, "timekey");
    msgpack_pack_int64(&pk, 1704110400);
    pack_str(&pk, "tag");
    pack_str(&pk, "app.web");
    pack_str(&pk, "variables");
    if (nvars < 0) {
        msgpack_pack_nil(&pk);
    } else {
        msgpack_pack_map(&pk, (uint32_t)nvars);
        for (int i = 0; i < nvars; i++) {
            char k[16];
            snprintf(k, sizeof k, "k%d", i);
            pack_str(&pk, k);
            pack_str(&pk, "v");
        }
    }
    pack_str(&pk, "seq");
    msgpack_pack_int64(&pk, 0);
    if (id) {
        pack_str(&pk, "id");
        msgpack_pack_bin_with_body(&pk, ID, 16);
    }
    pack_str(&pk, "s");
    msgpack_pack_int64(&pk, 3);
    pack_str(&pk, "c");
    msgpack_pack_int64(&pk, 1704110405);
    pack_str(&pk, "m");
    msgpack_pack_int64(&pk, 1704110409);
    for (int i = 0; i < tags; i++) {
        pack_str(&pk, "tag");
        pack_str(&pk, "again");
    }
    for (int i = 0; i < varsets; i++) {
        pack_str(&pk, "variables");
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "a");
        pack_str(&pk, "1");
        pack_str(&pk, "b");
        pack_str(&pk, "2");
    }
}

/* The file: C1 00, the body's length (u32, big-endian), the body. */
static void meta_file(weir_buf_t *out, const weir_buf_t *body)
{
    uint8_t hdr[6] = {0xc1,
                      0,
                      (uint8_t)(body->len >> 24),
                      (uint8_t)(body->len >> 16),
                      (uint8_t)(body->len >> 8),
                      (uint8_t)body->len};
    weir_buf_append(out, hdr, sizeof hdr);
    weir_buf_append(out, body->data, body->len);
}

static void test_name(void **state)
{
    char hex[33];
    assert_true(fluentd_name_parse("buffer.q5f32232e76a4d1bdfdbeed36c384b03b.log", hex));
    assert_string_equal(hex, "5f32232e76a4d1bdfdbeed36c384b03b");
    assert_true(fluentd_name_parse("buffer.b5f32232e76a4d1bdfdbeed36c384b03b.log", hex));
    assert_false(fluentd_name_parse("buffer.q5f32232e76a4d1bdfdbeed36c384b03b.log.meta", hex));
    assert_false(fluentd_name_parse("buffer.x5f32232e76a4d1bdfdbeed36c384b03b.log", hex));
    assert_false(fluentd_name_parse("buffer.q5F32232e76a4d1bdfdbeed36c384b03b.log", hex));
    assert_false(fluentd_name_parse("buffer.q5f32232e76a4d1bdfdbeed36c384b03.log", hex));
    assert_false(fluentd_name_parse("buffer.q5f32232e76a4d1bdfdbeed36c384b03b.chunk", hex));
}

static void test_fluentd_meta_and_legacy(void **state)
{
    weir_buf_t body, file;
    weir_buf_init(&body);
    weir_buf_init(&file);
    meta_body(&body, 2, 0, 0, true);
    meta_file(&file, &body);
    const weir_buf_t *forms[] = {&file, &body}; /* with the header, and legacy without */
    for (size_t i = 0; i < 2; i++) {
        chunk_meta_t m;
        uint64_t records = 0;
        assert_int_equal(fluentd_meta_parse(forms[i]->data, forms[i]->len, &m, &records), 0);
        assert_memory_equal(m.id, ID, 16);
        assert_true(m.has_timekey);
        assert_int_equal(m.timekey, 1704110400);
        assert_string_equal(m.tag, "app.web");
        assert_int_equal(m.nvars, 2);
        assert_string_equal(m.var_keys[1], "k1");
        assert_string_equal(m.var_values[1], "v");
        assert_int_equal(records, 3);
        chunk_meta_free(&m);
    }
    /* a header whose length runs past the end of the file, and every cut of the file */
    for (size_t n = 0; n < file.len; n++) {
        chunk_meta_t m;
        uint64_t records = 0;
        assert_int_equal(fluentd_meta_parse(file.data, n, &m, &records), -1);
    }
    weir_buf_free(&body);
    weir_buf_free(&file);
}

/* WEIR_BUFFER_MAX_KEYS variables are kept; one more, and the variables are ignored (the chunk
 * is still adopted, under no record keys). */
static void test_variables_limit(void **state)
{
    for (int n = WEIR_BUFFER_MAX_KEYS; n <= WEIR_BUFFER_MAX_KEYS + 1; n++) {
        weir_buf_t body;
        weir_buf_init(&body);
        meta_body(&body, n, 0, 0, true);
        chunk_meta_t m;
        uint64_t records = 0;
        assert_int_equal(fluentd_meta_parse(body.data, body.len, &m, &records), 0);
        assert_int_equal(m.nvars, n == WEIR_BUFFER_MAX_KEYS ? (size_t)n : 0);
        chunk_meta_free(&m);
        weir_buf_free(&body);
    }
}

/* A tag is held to WEIR_TAG_MAX here as in weir's own metadata and at the inputs: a .meta
 * from a foreign volume with a longer tag is refused, not adopted into a key S3 cannot take. */
static void test_tag_at_and_past_the_limit(void **state)
{
    for (size_t n = WEIR_TAG_MAX; n <= WEIR_TAG_MAX + 1; n++) {
        char *tag = malloc(n);
        memset(tag, 't', n);
        weir_buf_t body;
        weir_buf_init(&body);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &body, weir_buf_msgpack_write);
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "id");
        msgpack_pack_bin_with_body(&pk, ID, 16);
        pack_str(&pk, "tag");
        msgpack_pack_str_with_body(&pk, tag, n);
        chunk_meta_t m;
        uint64_t records = 0;
        int rc = fluentd_meta_parse(body.data, body.len, &m, &records);
        if (n == WEIR_TAG_MAX) {
            assert_int_equal(rc, 0);
            assert_int_equal(strlen(m.tag), WEIR_TAG_MAX);
            chunk_meta_free(&m);
        } else {
            assert_int_equal(rc, -1);
            assert_null(m.tag);
        }
        free(tag);
        weir_buf_free(&body);
    }
}

/* What Fluentd never writes is refused with nothing left allocated (found by
 * fuzz_fluentd_meta: a .meta without an id leaked its tag and variables, and a second
 * "variables" wrote past the first one's arrays). */
static void test_refused_leaves_nothing(void **state)
{
    static const struct {
        int tags, varsets;
        bool id;
    } cases[] = {{0, 0, false}, {1, 0, true}, {0, 1, true}, {1, 1, false}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        weir_buf_t body;
        weir_buf_init(&body);
        meta_body(&body, 1, cases[i].tags, cases[i].varsets, cases[i].id);
        chunk_meta_t m;
        uint64_t records = 0;
        assert_int_equal(fluentd_meta_parse(body.data, body.len, &m, &records), -1);
        assert_null(m.tag);
        assert_null(m.var_keys);
        assert_int_equal(m.nvars, 0);
        weir_buf_free(&body);
    }
}

static void test_read_file(void **state)
{
    char path[] = "/tmp/weir-fluentd-meta-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    weir_buf_t body, file;
    weir_buf_init(&body);
    weir_buf_init(&file);
    meta_body(&body, -1, 0, 0, true);
    meta_file(&file, &body);
    assert_int_equal(write(fd, file.data, file.len), (ssize_t)file.len);
    close(fd);
    chunk_meta_t m;
    uint64_t records = 0;
    assert_int_equal(fluentd_meta_read(path, &m, &records), 0);
    assert_string_equal(m.tag, "app.web");
    assert_int_equal(m.nvars, 0);
    chunk_meta_free(&m);
    unlink(path);
    assert_int_equal(fluentd_meta_read(path, &m, &records), -1);
    weir_buf_free(&body);
    weir_buf_free(&file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name),
        cmocka_unit_test(test_fluentd_meta_and_legacy),
        cmocka_unit_test(test_variables_limit),
        cmocka_unit_test(test_tag_at_and_past_the_limit),
        cmocka_unit_test(test_refused_leaves_nothing),
        cmocka_unit_test(test_read_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
