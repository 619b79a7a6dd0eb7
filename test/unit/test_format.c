/* Record formatting: JSON text for every msgpack type, time formats and zones, the formatters'
 * lines byte for byte (vectors from Fluentd's S3 plugin tests and the pipeline config), <inject>,
 * and reading <format>/<inject> sections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <msgpack.h>

#include "weir/config.h"
#include "weir/format.h"
#include "../../src/format/format_internal.h"

/* 2011-01-02T13:14:15Z, the S3 plugin's test time */
#define T_S3 1293974055u
/* 2024-05-09T21:00:40Z, the pipeline's sample event */
#define T_PIPE 1715288440u

/* ---- helpers ---- */

typedef struct mp {
    weir_buf_t buf;
    msgpack_packer pk;
} mp_t;

static void mp_init(mp_t *m)
{
    weir_buf_init(&m->buf);
    msgpack_packer_init(&m->pk, &m->buf, weir_buf_msgpack_write);
}

static void mp_str(mp_t *m, const char *s)
{
    msgpack_pack_str_with_body(&m->pk, s, strlen(s));
}

/* The JSON of `len` msgpack bytes, NUL-terminated in a static buffer ("<error>" on -1). */
static const char *json_of(const char *p, size_t len)
{
    static char text[65536];
    weir_buf_t out;
    weir_buf_init(&out);
    ssize_t n = weir_json_append(&out, p, len);
    size_t out_len = out.len;
    if (n < 0)
        snprintf(text, sizeof text, "<error>");
    else
        snprintf(text, sizeof text, "%.*s", (int)out.len, out.data);
    weir_buf_free(&out);
    if (n < 0) assert_int_equal(out_len, 0); /* a failure writes nothing */
    if (n >= 0) assert_int_equal((size_t)n, len);
    return text;
}

#define JSON_LIT(bytes) json_of(bytes, sizeof(bytes) - 1)
/* a string literal of msgpack bytes as (pointer, length) */
#define LIT(bytes) bytes, sizeof(bytes) - 1

static const char *json_of_double(double d)
{
    mp_t m;
    mp_init(&m);
    msgpack_pack_double(&m.pk, d);
    const char *r = json_of(m.buf.data, m.buf.len);
    weir_buf_free(&m.buf);
    return r;
}

static const char *json_of_float(float f)
{
    mp_t m;
    mp_init(&m);
    msgpack_pack_float(&m.pk, f);
    const char *r = json_of(m.buf.data, m.buf.len);
    weir_buf_free(&m.buf);
    return r;
}

/* Formats one time with a fresh formatter. */
static const char *fmt_time(const char *format, bool localtime, const char *zone, uint32_t sec,
                            uint32_t nsec)
{
    static char text[1024];
    weir_timefmt_t tf;
    weir_err_t err = {{0}};
    if (weir_timefmt_init(&tf, format, localtime, zone, &err) < 0) {
        snprintf(text, sizeof text, "<error: %s>", err.msg);
        return text;
    }
    weir_buf_t out;
    weir_buf_init(&out);
    weir_timefmt_append(&tf, (weir_time_t){sec, nsec}, &out);
    snprintf(text, sizeof text, "%.*s", (int)out.len, out.data);
    weir_buf_free(&out);
    weir_timefmt_free(&tf);
    return text;
}

static void use_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

/* {"a":1} */
static const char rec_a1[] = "\x81\xa1\x61\x01";
#define REC_A1 rec_a1, sizeof rec_a1 - 1

static const char *format_line(const weir_format_opts_t *o, const char *tag, weir_time_t t,
                               const char *rec, size_t len)
{
    static char text[4096];
    weir_formatter_t f;
    weir_err_t err = {{0}};
    if (weir_formatter_init(&f, o, &err) < 0) {
        snprintf(text, sizeof text, "<error: %s>", err.msg);
        return text;
    }
    weir_buf_t out;
    weir_buf_init(&out);
    if (weir_formatter_format(&f, tag, strlen(tag), t, rec, len, &out) < 0) {
        assert_int_equal(out.len, 0);
        snprintf(text, sizeof text, "<bad record>");
    } else {
        snprintf(text, sizeof text, "%.*s", (int)out.len, out.data);
    }
    weir_buf_free(&out);
    weir_formatter_free(&f);
    return text;
}

/* ---- JSON ---- */

static void test_json_scalars(void **state)
{
    assert_string_equal(JSON_LIT("\xc0"), "null");
    assert_string_equal(JSON_LIT("\xc3"), "true");
    assert_string_equal(JSON_LIT("\xc2"), "false");
    assert_string_equal(JSON_LIT("\x00"), "0");
    assert_string_equal(JSON_LIT("\x7f"), "127");
    assert_string_equal(JSON_LIT("\xcc\x80"), "128");
    assert_string_equal(JSON_LIT("\xcd\xff\xff"), "65535");
    assert_string_equal(JSON_LIT("\xce\xff\xff\xff\xff"), "4294967295");
    assert_string_equal(JSON_LIT("\xcf\xff\xff\xff\xff\xff\xff\xff\xff"), "18446744073709551615");
    assert_string_equal(JSON_LIT("\xff"), "-1");
    assert_string_equal(JSON_LIT("\xe0"), "-32");
    assert_string_equal(JSON_LIT("\xd0\xdf"), "-33");
    assert_string_equal(JSON_LIT("\xd1\x80\x00"), "-32768");
    assert_string_equal(JSON_LIT("\xd3\x80\x00\x00\x00\x00\x00\x00\x00"), "-9223372036854775808");
    assert_string_equal(JSON_LIT("\xd3\x7f\xff\xff\xff\xff\xff\xff\xff"), "9223372036854775807");
    assert_string_equal(JSON_LIT("\xd0\x05"), "5"); /* signed encoding of a positive value */
}

static void test_json_floats(void **state)
{
    assert_string_equal(json_of_double(1.0), "1.0");
    assert_string_equal(json_of_double(0.1), "0.1");
    assert_string_equal(json_of_double(1e20), "1.0e+20");
    assert_string_equal(json_of_double(1e-5), "1.0e-05");
    assert_string_equal(json_of_double(0.0001), "0.0001");
    assert_string_equal(json_of_double(-0.0), "-0.0");
    assert_string_equal(json_of_double(0.0), "0.0");
    assert_string_equal(json_of_double(1e16), "1.0e+16");
    assert_string_equal(json_of_double(1e15), "1000000000000000.0");
    assert_string_equal(json_of_double(9007199254740993.0), "9007199254740992.0");
    assert_string_equal(json_of_double(123456789.123), "123456789.123");
    assert_string_equal(json_of_double(100.0), "100.0");
    assert_string_equal(json_of_double(-1.5), "-1.5");
    assert_string_equal(json_of_double(2.5e-5), "2.5e-05");
    assert_string_equal(json_of_double(0.1 + 0.2), "0.30000000000000004");
    assert_string_equal(json_of_double(1.0 / 3), "0.3333333333333333");
    assert_string_equal(json_of_double(5e-324), "5.0e-324");
    assert_string_equal(json_of_double(1.7976931348623157e308), "1.7976931348623157e+308");
    assert_string_equal(json_of_double(1e100), "1.0e+100");
    assert_string_equal(json_of_double(1704114855.123456), "1704114855.123456");
    assert_string_equal(json_of_float(0.1f), "0.1");
    assert_string_equal(json_of_float(1.0f), "1.0");
    assert_string_equal(json_of_float(3.4028235e38f), "3.4028235e+38");
    assert_string_equal(json_of_float(16777216.0f), "16777216.0");
    assert_string_equal(json_of_double(NAN), "null");
    assert_string_equal(json_of_double(INFINITY), "null");
    assert_string_equal(json_of_double(-INFINITY), "null");

    char t[WEIR_DOUBLE_TEXT_MAX];
    weir_format_double(t, NAN, false);
    assert_string_equal(t, "NaN");
    weir_format_double(t, -INFINITY, false);
    assert_string_equal(t, "-Infinity");
    /* the longest text fits */
    size_t n = weir_format_double(t, -2.2250738585072014e-308, false);
    assert_string_equal(t, "-2.2250738585072014e-308");
    assert_true(n < WEIR_DOUBLE_TEXT_MAX);
}

static void test_json_strings(void **state)
{
    assert_string_equal(JSON_LIT("\xa0"), "\"\"");
    assert_string_equal(JSON_LIT("\xa5hello"), "\"hello\"");
    /* escapes: quote, backslash, the short forms, \u00xx for the rest; '/' and DEL raw */
    assert_string_equal(JSON_LIT("\xad\"\\\b\f\n\r\t\x01\x1f/\x7f a"),
                        "\"\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f/\x7f a\"");
    assert_string_equal(JSON_LIT("\xa1\x00"), "\"\\u0000\"");
    /* UTF-8 is written raw: é, €, U+1D11E */
    assert_string_equal(JSON_LIT("\xa9\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e"),
                        "\"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\"");
    /* str8 and str16 headers */
    mp_t m;
    mp_init(&m);
    char big[300];
    memset(big, 'x', sizeof big);
    msgpack_pack_str_with_body(&m.pk, big, sizeof big);
    const char *j = json_of(m.buf.data, m.buf.len);
    assert_int_equal(strlen(j), 302);
    weir_buf_free(&m.buf);
}

static void test_json_invalid_utf8(void **state)
{
#define FFFD "\xef\xbf\xbd"
    assert_string_equal(JSON_LIT("\xa1\xff"), "\"" FFFD "\"");
    assert_string_equal(JSON_LIT("\xa3"
                                 "a\x80z"),
                        "\"a" FFFD "z\"");
    /* truncated sequence at the end: each byte replaced */
    assert_string_equal(JSON_LIT("\xa3"
                                 "a\xe2\x82"),
                        "\"a" FFFD FFFD "\"");
    /* overlong '/', a surrogate, above U+10FFFF, 0xF5 */
    assert_string_equal(JSON_LIT("\xa2\xc0\xaf"), "\"" FFFD FFFD "\"");
    assert_string_equal(JSON_LIT("\xa3\xed\xa0\x80"), "\"" FFFD FFFD FFFD "\"");
    assert_string_equal(JSON_LIT("\xa4\xf4\x90\x80\x80"), "\"" FFFD FFFD FFFD FFFD "\"");
    assert_string_equal(JSON_LIT("\xa1\xf5"), "\"" FFFD "\"");
    /* a good sequence right after a bad byte survives */
    assert_string_equal(JSON_LIT("\xa3\xc3\xc3\xa9"), "\"" FFFD "\xc3\xa9\"");
    /* bin follows the same rules */
    assert_string_equal(JSON_LIT("\xc4\x03"
                                 "a\"\xff"),
                        "\"a\\\"" FFFD "\"");
#undef FFFD
}

static void test_json_bin_ext(void **state)
{
    assert_string_equal(JSON_LIT("\xc4\x00"), "\"\"");
    assert_string_equal(JSON_LIT("\xc5\x00\x02hi"), "\"hi\"");
    /* an EventTime inside a record prints its seconds */
    assert_string_equal(JSON_LIT("\xd7\x00\x4d\x20\x7a\x27\x00\x00\x00\x05"), "1293974055");
    /* other ext: base64 of the payload */
    assert_string_equal(JSON_LIT("\xd4\x05\xff"), "\"/w==\"");
    assert_string_equal(JSON_LIT("\xd5\x05\x01\x02"), "\"AQI=\"");
    /* ext type 0 that is not 8 bytes is not an EventTime */
    assert_string_equal(JSON_LIT("\xd6\x00\x00\x00\x00\x01"), "\"AAAAAQ==\"");
}

/* ext8/16/32 carry a length and then the type byte before the payload. */
static void test_json_ext_long_headers(void **state)
{
    assert_string_equal(JSON_LIT("\xc7\x03\x05\x01\x02\x03"), "\"AQID\"");
    assert_string_equal(JSON_LIT("\xc7\x00\x05"), "\"\"");
    assert_string_equal(JSON_LIT("\xc8\x00\x01\x05\xff"), "\"/w==\"");
    assert_string_equal(JSON_LIT("\xc9\x00\x00\x00\x02\x05\x01\x02"), "\"AQI=\"");
    /* an EventTime written as ext8 */
    assert_string_equal(JSON_LIT("\xc7\x08\x00\x4d\x20\x7a\x27\x00\x00\x00\x05"), "1293974055");
}

static void test_json_containers(void **state)
{
    assert_string_equal(JSON_LIT("\x90"), "[]");
    assert_string_equal(JSON_LIT("\x80"), "{}");
    assert_string_equal(JSON_LIT("\x93\x01\xc0\xa1x"), "[1,null,\"x\"]");
    /* key order is kept, nesting, empty containers inside */
    assert_string_equal(JSON_LIT("\x83\xa1z\x01\xa1\x61\x92\x80\x90\xa1m\x81\xa1k\x91\xc3"),
                        "{\"z\":1,\"a\":[{},[]],\"m\":{\"k\":[true]}}");
    /* map16 / array16 headers */
    assert_string_equal(JSON_LIT("\xde\x00\x01\xa1k\xdc\x00\x02\x01\x02"), "{\"k\":[1,2]}");
}

static void test_json_non_string_keys(void **state)
{
    assert_string_equal(JSON_LIT("\x81\x01\x02"), "{\"1\":2}");
    assert_string_equal(JSON_LIT("\x81\xff\x02"), "{\"-1\":2}");
    assert_string_equal(JSON_LIT("\x81\xc0\x02"), "{\"\":2}");
    assert_string_equal(JSON_LIT("\x82\xc3\x01\xc2\x02"), "{\"true\":1,\"false\":2}");
    assert_string_equal(JSON_LIT("\x81\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00\x01"), "{\"1.5\":1}");
    assert_string_equal(JSON_LIT("\x81\xc4\x01k\x01"), "{\"k\":1}");
    /* a container as a key: the string of its JSON text, escaped */
    assert_string_equal(JSON_LIT("\x81\x92\x01\xa1q\x00"), "{\"[1,\\\"q\\\"]\":0}");
    assert_string_equal(JSON_LIT("\x81\x81\xa1k\x90\x00"), "{\"{\\\"k\\\":[]}\":0}");
    /* an EventTime key prints its seconds */
    assert_string_equal(JSON_LIT("\x81\xd7\x00\x00\x00\x00\x07\x00\x00\x00\x00\x01"), "{\"7\":1}");
}

static void test_json_errors(void **state)
{
    assert_string_equal(JSON_LIT("\xc1"), "<error>");
    assert_string_equal(JSON_LIT("\x92\x01"), "<error>");         /* truncated array */
    assert_string_equal(JSON_LIT("\x81\xa1k"), "<error>");        /* map without its value */
    assert_string_equal(JSON_LIT("\xa3\x61"), "<error>");         /* truncated str */
    assert_string_equal(JSON_LIT("\x81\x91\xc1\x01"), "<error>"); /* bad byte in a container key */
    assert_string_equal(JSON_LIT(""), "<error>");

    /* a failed call leaves what the buffer held */
    weir_buf_t out;
    weir_buf_init(&out);
    weir_buf_append(&out, "keep", 4);
    assert_int_equal(weir_json_append(&out, "\x82\x01\x02\x03", 4), -1);
    assert_int_equal(out.len, 4);
    /* one value is consumed; what follows is left to the caller */
    assert_int_equal(weir_json_append(&out, "\x01\x02", 2), 1);
    assert_int_equal(out.len, 5);
    weir_buf_free(&out);
}

/* `depth` nested one-element arrays around a 0. */
static void nested(weir_buf_t *b, int depth, bool as_key)
{
    b->len = 0;
    if (as_key) weir_buf_append(b, "\x81", 1);
    for (int i = 0; i < depth; i++)
        weir_buf_putc(b, (char)0x91);
    weir_buf_putc(b, 0);
    if (as_key) weir_buf_putc(b, 0);
}

static void test_json_depth_limit(void **state)
{
    weir_buf_t in, out;
    weir_buf_init(&in);
    weir_buf_init(&out);
    nested(&in, WEIR_JSON_MAX_DEPTH, false);
    assert_int_equal(weir_json_append(&out, in.data, in.len), (ssize_t)in.len);
    assert_int_equal(out.len, 2 * WEIR_JSON_MAX_DEPTH + 1);
    out.len = 0;
    nested(&in, WEIR_JSON_MAX_DEPTH + 1, false);
    assert_int_equal(weir_json_append(&out, in.data, in.len), -1);
    assert_int_equal(out.len, 0);
    /* a container key counts toward the same limit: map (1) + key arrays */
    nested(&in, WEIR_JSON_MAX_DEPTH - 1, true);
    assert_int_equal(weir_json_append(&out, in.data, in.len), (ssize_t)in.len);
    out.len = 0;
    nested(&in, WEIR_JSON_MAX_DEPTH, true);
    assert_int_equal(weir_json_append(&out, in.data, in.len), -1);
    assert_int_equal(out.len, 0);
    weir_buf_free(&in);
    weir_buf_free(&out);
}

/* ---- each key once ---- */

/* True when a strict JSON parser accepts `text`: valid UTF-8, no repeated key in any object
 * (Snowflake's loader rejects both). Integers beyond int64 are read as reals, as jansson cannot
 * hold them; they are still JSON. */
static bool loads_strictly(const char *text, size_t len)
{
    json_error_t e;
    json_t *v = json_loadb(text, len,
                           JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &e);
    if (!v) {
        print_message("rejected: %s in %.*s\n", e.text, (int)(len > 200 ? 200 : len), text);
        return false;
    }
    json_decref(v);
    return true;
}

#define FFFD "\xef\xbf\xbd"

static void test_json_duplicate_keys(void **state)
{
    /* the same key: the first place, the last value */
    assert_string_equal(JSON_LIT("\x83\xa1\x61\x01\xa1\x62\x02\xa1\x61\x03"), "{\"a\":3,\"b\":2}");
    /* three times, and two keys repeated */
    assert_string_equal(JSON_LIT("\x86\xa1\x61\x01\xa1\x62\x02\xa1\x61\x03\xa1\x63\x04\xa1\x62\x05"
                                 "\xa1\x61\x06"),
                        "{\"a\":6,\"b\":5,\"c\":4}");
    /* keys that differ in msgpack and print the same: 1 and "1", nil and "", true and "true",
     * an int and a str of its digits, two invalid UTF-8 strings, str and bin */
    assert_string_equal(JSON_LIT("\x82\x01\xa1x\xa1\x31\xa1y"), "{\"1\":\"y\"}");
    assert_string_equal(JSON_LIT("\x82\xa1\x31\xa1y\x01\xa1x"), "{\"1\":\"x\"}");
    assert_string_equal(JSON_LIT("\x82\xc0\x01\xa0\x02"), "{\"\":2}");
    assert_string_equal(JSON_LIT("\x82\xc3\x01\xa4true\x02"), "{\"true\":2}");
    assert_string_equal(JSON_LIT("\x82\xd1\x01\x00\x01\xa3\x32\x35\x36\x02"), "{\"256\":2}");
    assert_string_equal(JSON_LIT("\x83\xa1\xff\x01\xa1\xfe\x02\xa1z\x03"),
                        "{\"" FFFD "\":2,\"z\":3}");
    assert_string_equal(JSON_LIT("\x82\xa1k\x01\xc4\x01k\x02"), "{\"k\":2}");
    /* escaped text compares as written: "a\n" twice, but "a\\n" is another key */
    assert_string_equal(JSON_LIT("\x83\xa2\x61\n\x01\xa3\x61\\n\x02\xa2\x61\n\x03"),
                        "{\"a\\n\":3,\"a\\\\n\":2}");
    /* a container key equal to a string key */
    assert_string_equal(JSON_LIT("\x82\x91\x01\x01\xa3[1]\x02"), "{\"[1]\":2}");
    /* nested maps, maps in arrays, the key's own map */
    assert_string_equal(JSON_LIT("\x82\xa1m\x82\xa1k\x01\xa1k\x02\xa1l\x92\x82\xa1q\x01\xa1q\x02"
                                 "\x80"),
                        "{\"m\":{\"k\":2},\"l\":[{\"q\":2},{}]}");
    assert_string_equal(JSON_LIT("\x81\x82\xa1k\x01\xa1k\x02\x00"), "{\"{\\\"k\\\":2}\":0}");
    /* a repeated key whose values are containers: the inner maps were deduplicated already */
    assert_string_equal(JSON_LIT("\x83\xa1m\x82\xa1x\x01\xa1x\x02\xa1n\x00\xa1m\x81\xa1y\x90"),
                        "{\"m\":{\"y\":[]},\"n\":0}");
    /* distinct keys keep every pair in order */
    assert_string_equal(JSON_LIT("\x83\xa1\x61\x01\xa2\x61\x61\x02\xa1\x41\x03"),
                        "{\"a\":1,\"aa\":2,\"A\":3}");
}

/* Maps used as keys of maps used as keys, `depth` deep: each level's key text is the escaped
 * JSON of the level below, so without a bound the backslashes double at every level. */
static void test_json_container_keys_stay_linear(void **state)
{
    weir_buf_t in, out;
    weir_buf_init(&in);
    weir_buf_init(&out);
    for (int d = 0; d < 24; d++)
        weir_buf_append(&in, "\x81", 1);
    weir_buf_append(&in, "\xa1\"", 2); /* the innermost key: a quote, escaped at each level */
    for (int d = 0; d < 24; d++)
        weir_buf_putc(&in, 0);
    assert_int_equal(weir_json_append(&out, in.data, in.len), (ssize_t)in.len);
    assert_true(loads_strictly(out.data, out.len));
    /* one key's text is cut at the limit, plus its escapes and the closing braces */
    assert_true(out.len <= 2 * WEIR_JSON_KEY_TEXT_MAX + 100);
    /* a key text exactly at the limit is whole; one byte past it is cut. The key is
     * ["xx..x"], whose text is the string plus 4 bytes. */
    for (size_t extra = 0; extra < 2; extra++) {
        size_t m = WEIR_JSON_KEY_TEXT_MAX - 4 + extra;
        in.len = 0;
        weir_buf_append(&in, "\x81\x91\xda", 3);
        weir_buf_putc(&in, (char)(m >> 8));
        weir_buf_putc(&in, (char)m);
        for (size_t i = 0; i < m; i++)
            weir_buf_putc(&in, 'x');
        weir_buf_putc(&in, 0);
        out.len = 0;
        assert_int_equal(weir_json_append(&out, in.data, in.len), (ssize_t)in.len);
        /* {"[\"xx..x\"]":0}: the text's two quotes escaped */
        assert_int_equal(out.len, WEIR_JSON_KEY_TEXT_MAX + 8);
        const char *tail = extra ? "x\\\"\":0}" : "x\\\"]\":0}";
        assert_memory_equal(out.data + out.len - strlen(tail), tail, strlen(tail));
    }
    weir_buf_free(&in);
    weir_buf_free(&out);
}

/* A map of `n` keys k0..k{n-1} (values their index), then "k0" again, value -1 (a map32
 * header, so any n fits). Returns the JSON. */
static const char *json_of_keys(weir_buf_t *out, uint32_t n, bool repeat)
{
    mp_t m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, n + (repeat ? 1 : 0));
    char key[16];
    for (uint32_t i = 0; i < n; i++) {
        mp_str(&m, (snprintf(key, sizeof key, "k%u", i), key));
        msgpack_pack_uint32(&m.pk, i);
    }
    if (repeat) {
        mp_str(&m, "k0");
        msgpack_pack_int(&m.pk, -1);
    }
    out->len = 0;
    assert_int_equal(weir_json_append(out, m.buf.data, m.buf.len), (ssize_t)m.buf.len);
    weir_buf_putc(out, '\0');
    out->len--;
    weir_buf_free(&m.buf);
    return out->data;
}

/* Checks a json_of_keys result: every key once, k0 with the repeat's value. */
static void check_keys(const char *text, size_t len, uint32_t n, bool repeat)
{
    assert_true(loads_strictly(text, len));
    json_t *v = json_loadb(text, len, 0, NULL);
    assert_int_equal(json_object_size(v), n);
    assert_int_equal(json_integer_value(json_object_get(v, "k0")), repeat ? -1 : 0);
    char key[16];
    snprintf(key, sizeof key, "k%u", n - 1);
    if (n > 1) assert_int_equal(json_integer_value(json_object_get(v, key)), n - 1);
    json_decref(v);
    /* the first place: k0 still leads */
    assert_memory_equal(text, "{\"k0\":", 6);
}

static void test_json_duplicate_keys_sizes(void **state)
{
    weir_buf_t out;
    weir_buf_init(&out);
    /* both sides of the scan/hash threshold (the repeat makes the map one pair larger) */
    uint32_t sizes[] = {
        1,    2,    WEIR_FMT_KEYS_SCAN_MAX - 1, WEIR_FMT_KEYS_SCAN_MAX, WEIR_FMT_KEYS_SCAN_MAX + 1,
        1000, 40000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int r = 0; r < 2; r++) {
            const char *j = json_of_keys(&out, sizes[i], r);
            check_keys(j, out.len, sizes[i], r);
        }
    }
    /* 40,000 copies of one key, and 40,000 keys that all repeat */
    mp_t m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 80000);
    char key[16];
    for (uint32_t i = 0; i < 80000; i++) {
        mp_str(&m, (snprintf(key, sizeof key, "k%u", i % 40000), key));
        msgpack_pack_uint32(&m.pk, i);
    }
    out.len = 0;
    assert_int_equal(weir_json_append(&out, m.buf.data, m.buf.len), (ssize_t)m.buf.len);
    assert_true(loads_strictly(out.data, out.len));
    json_t *v = json_loadb(out.data, out.len, 0, NULL);
    assert_int_equal(json_object_size(v), 40000);
    assert_int_equal(json_integer_value(json_object_get(v, "k7")), 40007);
    json_decref(v);
    m.buf.len = 0;
    msgpack_pack_map(&m.pk, 40000);
    for (uint32_t i = 0; i < 40000; i++) {
        mp_str(&m, "same");
        msgpack_pack_uint32(&m.pk, i);
    }
    out.len = 0;
    assert_int_equal(weir_json_append(&out, m.buf.data, m.buf.len), (ssize_t)m.buf.len);
    assert_int_equal(out.len, strlen("{\"same\":39999}"));
    assert_memory_equal(out.data, "{\"same\":39999}", out.len);
    weir_buf_free(&m.buf);
    weir_buf_free(&out);
}

/* Every formatter that writes keys writes each once; single_value reads the last. */
static void test_formatters_duplicate_keys(void **state)
{
    use_tz("UTC");
    weir_time_t t = {T_S3, 0};
    /* {"a":1, 1:"x", "a":2, "1":"y", nil:3, "":4} */
    static const char rec[] = "\x86\xa1\x61\x01\x01\xa1x\xa1\x61\x02\xa1\x31\xa1y\xc0\x03\xa0\x04";
    weir_format_opts_t o;
    weir_format_opts_init(&o, WEIR_FORMAT_JSON);
    assert_string_equal(format_line(&o, "t", t, LIT(rec)), "{\"a\":2,\"1\":\"y\",\"\":4}\n");
    weir_format_opts_init(&o, WEIR_FORMAT_OUT_FILE);
    o.localtime = false;
    assert_string_equal(format_line(&o, "t", t, LIT(rec)),
                        "2011-01-02T13:14:15Z\tt\t{\"a\":2,\"1\":\"y\",\"\":4}\n");
    weir_format_opts_init(&o, WEIR_FORMAT_LTSV);
    assert_string_equal(format_line(&o, "t", t, LIT(rec)), "a:2\t1:y\t:4\n");
    o.delimiter = "::";
    o.label_delimiter = "=";
    assert_string_equal(format_line(&o, "t", t, LIT(rec)), "a=2::1=y::=4\n");
    /* a nested map in an ltsv value */
    weir_format_opts_init(&o, WEIR_FORMAT_LTSV);
    assert_string_equal(format_line(&o, "t", t, LIT("\x81\xa1m\x82\xa1k\x01\xa1k\x02")),
                        "m:{\"k\":2}\n");
    weir_format_opts_init(&o, WEIR_FORMAT_STDOUT);
    o.output_type = WEIR_FORMAT_JSON;
    assert_non_null(strstr(format_line(&o, "t", t, LIT(rec)), ": {\"a\":2,\"1\":\"y\",\"\":4}\n"));

    /* <inject> then json: the injected tag replaces the record's own "tag" keys, and a
     * non-string key that prints as the tag key loses to the injected value */
    weir_inject_opts_t io;
    weir_inject_opts_init(&io);
    io.tag_key = "tag";
    io.hostname_key = "";
    io.hostname = "h";
    weir_inject_t inj;
    assert_int_equal(weir_inject_init(&inj, &io, NULL), 0);
    weir_buf_t injected;
    weir_buf_init(&injected);
    weir_format_opts_init(&o, WEIR_FORMAT_JSON);
    static const char tags[] = "\x83\xa3tag\xa1x\xa1\x61\x01\xa3tag\xa1y";
    assert_int_equal(weir_inject_record(&inj, "web", 3, t, LIT(tags), &injected), 0);
    assert_string_equal(format_line(&o, "web", t, injected.data, injected.len),
                        "{\"tag\":\"web\",\"a\":1,\"\":\"h\"}\n");
    injected.len = 0;
    static const char nil_key[] = "\x82\xc0\x01\xa1\x61\x02"; /* nil key, then "a" */
    assert_int_equal(weir_inject_record(&inj, "web", 3, t, LIT(nil_key), &injected), 0);
    assert_string_equal(format_line(&o, "web", t, injected.data, injected.len),
                        "{\"\":\"h\",\"a\":2,\"tag\":\"web\"}\n");
    weir_buf_free(&injected);
    weir_inject_free(&inj);
}

/* Every record shape a sender can produce gives a line a strict JSON loader accepts, so no
 * record can make the object around it fail to load. */
static void test_json_every_shape_loads(void **state)
{
    static const struct {
        const char *what, *mp;
        size_t len;
        const char *want;
    } shapes[] = {
#define SHAPE(what, bytes, want) {what, bytes, sizeof(bytes) - 1, want}
        SHAPE("repeated key", "\x82\xa1k\x01\xa1k\x02", "{\"k\":2}"),
        SHAPE("1 and \"1\"", "\x82\x01\x01\xa1\x31\x02", "{\"1\":2}"),
        SHAPE("nil and \"\"", "\x82\xc0\x01\xa0\x02", "{\"\":2}"),
        SHAPE("invalid UTF-8 value", "\x81\xa1k\xa2\xff\xc3", "{\"k\":\"" FFFD FFFD "\"}"),
        SHAPE("invalid UTF-8 keys", "\x82\xa1\x80\x01\xa1\xbf\x02", "{\"" FFFD "\":2}"),
        SHAPE("surrogate", "\x81\xa1k\xa3\xed\xa0\x80", "{\"k\":\"" FFFD FFFD FFFD "\"}"),
        SHAPE("NaN", "\x81\xa1k\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", "{\"k\":null}"),
        SHAPE("Infinity", "\x81\xa1k\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00", "{\"k\":null}"),
        SHAPE("-Infinity float32", "\x81\xa1k\xca\xff\x80\x00\x00", "{\"k\":null}"),
        SHAPE("NaN key", "\x81\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\x01", "{\"NaN\":1}"),
        SHAPE("binary", "\x81\xa1k\xc4\x03\x00\xff\x22", "{\"k\":\"\\u0000" FFFD "\\\"\"}"),
        SHAPE("ext", "\x81\xa1k\xd5\x07\x00\xff", "{\"k\":\"AP8=\"}"),
        SHAPE("ext key", "\x81\xd4\x07\x01\x02", "{\"AQ==\":2}"),
        SHAPE("uint64 max", "\x81\xa1k\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
              "{\"k\":18446744073709551615}"),
        SHAPE("int64 min", "\x81\xa1k\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
              "{\"k\":-9223372036854775808}"),
        SHAPE("control characters", "\x81\xa1k\xa4\x00\x1f\x7f\n",
              "{\"k\":\"\\u0000\\u001f\x7f\\n\"}"),
        SHAPE("map key", "\x81\x81\xa1\x61\xc0\x01", "{\"{\\\"a\\\":null}\":1}"),
        SHAPE("array key", "\x81\x92\xc0\xc2\x01", "{\"[null,false]\":1}"),
        SHAPE("U+2028", "\x81\xa1k\xa3\xe2\x80\xa8", "{\"k\":\"\xe2\x80\xa8\"}"),
#undef SHAPE
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const char *j = json_of(shapes[i].mp, shapes[i].len);
        if (strcmp(j, shapes[i].want) != 0)
            fail_msg("%s: got %s, want %s", shapes[i].what, j, shapes[i].want);
        if (!loads_strictly(j, strlen(j))) fail_msg("%s: not strict JSON", shapes[i].what);
    }
    /* nesting: as deep as the writer goes, maps this time, and the line still loads */
    weir_buf_t in, out;
    weir_buf_init(&in);
    weir_buf_init(&out);
    for (int d = 0; d < WEIR_JSON_MAX_DEPTH - 1; d++)
        weir_buf_append(&in, "\x81\xa1k", 3);
    weir_buf_append(&in, "\x81\xa1k\x00", 4);
    assert_int_equal(weir_json_append(&out, in.data, in.len), (ssize_t)in.len);
    assert_true(loads_strictly(out.data, out.len));
    weir_buf_free(&in);
    weir_buf_free(&out);
}
#undef FFFD

/* ---- time ---- */

static void test_time_iso8601_default(void **state)
{
    use_tz("UTC");
    assert_string_equal(fmt_time(NULL, false, NULL, T_S3, 5), "2011-01-02T13:14:15Z");
    /* localtime in a UTC container: the offset form, as Time#iso8601 of a local time */
    assert_string_equal(fmt_time(NULL, true, NULL, T_S3, 0), "2011-01-02T13:14:15+00:00");
    assert_string_equal(fmt_time(NULL, true, "+09:00", T_S3, 0), "2011-01-02T22:14:15+09:00");
    assert_string_equal(fmt_time(NULL, false, "+00:00", T_S3, 0), "2011-01-02T13:14:15+00:00");
    use_tz("Asia/Tokyo");
    assert_string_equal(fmt_time(NULL, true, NULL, T_S3, 0), "2011-01-02T22:14:15+09:00");
    use_tz("UTC");
}

static void test_time_fixed_offsets(void **state)
{
    const char *f = "%Y-%m-%d %H:%M:%S %z|%:z|%::z|%Z|";
    assert_string_equal(fmt_time(f, true, "+09:00", T_S3, 0),
                        "2011-01-02 22:14:15 +0900|+09:00|+09:00:00||");
    assert_string_equal(fmt_time(f, true, "+0900", T_S3, 0),
                        "2011-01-02 22:14:15 +0900|+09:00|+09:00:00||");
    assert_string_equal(fmt_time(f, true, "+09", T_S3, 0),
                        "2011-01-02 22:14:15 +0900|+09:00|+09:00:00||");
    assert_string_equal(fmt_time(f, true, "-05", T_S3, 0),
                        "2011-01-02 08:14:15 -0500|-05:00|-05:00:00||");
    assert_string_equal(fmt_time(f, true, "-0530", T_S3, 0),
                        "2011-01-02 07:44:15 -0530|-05:30|-05:30:00||");
    assert_string_equal(fmt_time(f, false, NULL, T_S3, 0),
                        "2011-01-02 13:14:15 +0000|+00:00|+00:00:00|UTC|");
    /* crossing midnight backwards into the previous year */
    assert_string_equal(fmt_time("%Y-%m-%d %H:%M", true, "-03:00", 1293840000, 0),
                        "2010-12-31 21:00");
}

static void test_time_bad_zones(void **state)
{
    const char *bad[] = {"UTC",
                         "JST",
                         "+25:00",
                         "+24",
                         "+09:60",
                         "+9:00",
                         "+09:0",
                         "0900",
                         "Nowhere/City",
                         "../../etc/passwd",
                         "Asia/../Asia/Tokyo",
                         "/Asia/Tokyo",
                         "a/b/c/d",
                         ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *r = fmt_time(NULL, true, bad[i], T_S3, 0);
        if (strncmp(r, "<error: ", 8) != 0) fail_msg("timezone '%s' accepted: %s", bad[i], r);
        assert_non_null(strstr(r, "timezone"));
    }
    /* the limit on offsets sits at 23:59 */
    assert_string_equal(fmt_time("%z", true, "+23:59", 0, 0), "+2359");
    assert_string_equal(fmt_time("%z", true, "-23:59", 0, 0), "-2359");
}

static void test_time_named_zones(void **state)
{
    assert_string_equal(fmt_time(NULL, true, "Asia/Tokyo", T_S3, 0), "2011-01-02T22:14:15+09:00");
    /* %Z is empty for a named zone, as Fluentd formats Time#localtime(offset) */
    assert_string_equal(fmt_time("%H:%M %z [%Z]", true, "Asia/Tokyo", T_S3, 0), "22:14 +0900 []");
    const char *ny = "America/New_York";
    assert_string_equal(fmt_time(NULL, true, ny, 1719835200, 0), "2024-07-01T08:00:00-04:00");
    assert_string_equal(fmt_time(NULL, true, ny, 1704110400, 0), "2024-01-01T07:00:00-05:00");
    /* the exact second of a transition (from the table) */
    assert_string_equal(fmt_time(NULL, true, ny, 1710053999, 0), "2024-03-10T01:59:59-05:00");
    assert_string_equal(fmt_time(NULL, true, ny, 1710054000, 0), "2024-03-10T03:00:00-04:00");
    /* past the last transition: the POSIX rule at the end of the file */
    assert_string_equal(fmt_time(NULL, true, ny, 2224756800, 0), "2040-07-01T08:00:00-04:00");
    assert_string_equal(fmt_time(NULL, true, ny, 2209032000, 0), "2040-01-01T07:00:00-05:00");
    assert_string_equal(fmt_time(NULL, true, ny, 2215061999, 0), "2040-03-11T01:59:59-05:00");
    assert_string_equal(fmt_time(NULL, true, ny, 2215062000, 0), "2040-03-11T03:00:00-04:00");
    assert_string_equal(fmt_time(NULL, true, ny, 2235621599, 0), "2040-11-04T01:59:59-04:00");
    assert_string_equal(fmt_time(NULL, true, ny, 2235621600, 0), "2040-11-04T01:00:00-05:00");
    assert_string_equal(fmt_time(NULL, true, ny, 4118083200u, 0), "2100-06-30T20:00:00-04:00");
    /* southern hemisphere: daylight time spans the new year */
    const char *syd = "Australia/Sydney";
    assert_string_equal(fmt_time(NULL, true, syd, 2210198400u, 0), "2040-01-15T11:00:00+11:00");
    assert_string_equal(fmt_time(NULL, true, syd, 2225923200u, 0), "2040-07-15T10:00:00+10:00");
    assert_string_equal(fmt_time(NULL, true, syd, 2233151999u, 0), "2040-10-07T01:59:59+10:00");
    assert_string_equal(fmt_time(NULL, true, syd, 2233152000u, 0), "2040-10-07T03:00:00+11:00");
    assert_string_equal(fmt_time(NULL, true, "Asia/Kathmandu", 2000000000u, 0),
                        "2033-05-18T09:18:20+05:45");
    assert_string_equal(fmt_time(NULL, true, "America/Argentina/Buenos_Aires", T_S3, 0),
                        "2011-01-02T10:14:15-03:00");

    /* one zone object asked back and forth across transitions keeps answering right */
    weir_tz_t tz;
    assert_int_equal(weir_tz_init(&tz, ny, true, NULL), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(weir_tz_offset(&tz, 1710053999, NULL), -5 * 3600);
        assert_int_equal(weir_tz_offset(&tz, 1710054000, NULL), -4 * 3600);
        assert_int_equal(weir_tz_offset(&tz, 2215062000, NULL), -4 * 3600);
        assert_int_equal(weir_tz_offset(&tz, 2209032000, NULL), -5 * 3600);
    }
    weir_tz_free(&tz);
}

static void test_time_directives(void **state)
{
    /* 2011-01-02 13:14:15 UTC was a Sunday, day 2 of the year, ISO week 52 of 2010 */
    assert_string_equal(fmt_time("%a %A %b %B %h %^a %^B %#b", false, NULL, T_S3, 0),
                        "Sun Sunday Jan January Jan SUN JANUARY JAN");
    assert_string_equal(fmt_time("%d %-d %e %-e %_d %j %-j %m %-m %_m %3m", false, NULL, T_S3, 0),
                        "02 2  2 2  2 002 2 01 1  1 001");
    assert_string_equal(fmt_time("%H %I %l %k %M %S %p %P %#p", false, NULL, T_S3, 0),
                        "13 01  1 13 14 15 PM pm pm");
    assert_string_equal(fmt_time("%y %C %Y %G %g %V %U %W %u %w", false, NULL, T_S3, 0),
                        "11 20 2011 2010 10 52 01 00 7 0");
    assert_string_equal(fmt_time("%s %%s %n%t|", false, NULL, T_S3, 0), "1293974055 %s \n\t|");
    assert_string_equal(fmt_time("%c|%D|%x|%F|%T|%X|%R|%r|%v|%+", false, NULL, T_S3, 0),
                        "Sun Jan  2 13:14:15 2011|01/02/11|01/02/11|2011-01-02|13:14:15|13:14:15|"
                        "13:14|01:14:15 PM| 2-JAN-2011|Sun Jan  2 13:14:15 UTC 2011");
    assert_string_equal(fmt_time("%10A|%-10A|%010d|%_5Y|%-Y", false, NULL, T_S3, 0),
                        "    Sunday|    Sunday|0000000002| 2011|2011");
    /* unknown directives and a trailing '%' print as written */
    assert_string_equal(fmt_time("%Q %Ey %5q 100%", false, NULL, T_S3, 0), "%Q %Ey %5q 100%");
    assert_string_equal(fmt_time("", false, NULL, T_S3, 0), "");
    assert_string_equal(fmt_time("plain", false, NULL, T_S3, 0), "plain");
    /* midnight and noon on the 12-hour clock; the epoch */
    assert_string_equal(fmt_time("%I %l %p", false, NULL, 0, 0), "12 12 AM");
    assert_string_equal(fmt_time("%I %p %a %j", false, NULL, 43200, 0), "12 PM Thu 001");
    /* 2024-12-30 is in ISO week 1 of 2025; 2021-01-03 in week 53 of 2020 */
    assert_string_equal(fmt_time("%G-W%V-%u", false, NULL, 1735560000, 0), "2025-W01-1");
    assert_string_equal(fmt_time("%G-W%V-%u", false, NULL, 1609675200, 0), "2020-W53-7");
    /* leap day and the last day of a leap year */
    assert_string_equal(fmt_time("%F %j", false, NULL, 1709208000, 0), "2024-02-29 060");
    assert_string_equal(fmt_time("%F %j", false, NULL, 1735646399, 0), "2024-12-31 366");
}

static void test_time_subseconds(void **state)
{
    assert_string_equal(fmt_time("%N|%L|%3N|%6N|%9N|%12N|%1N|%6L", false, NULL, T_S3, 123456789),
                        "123456789|123|123|123456|123456789|123456789000|1|123456");
    assert_string_equal(fmt_time("%N|%L", false, NULL, T_S3, 7), "000000007|000");
    assert_string_equal(fmt_time("%S.%L", false, NULL, T_S3, 999999999), "15.999");
    /* the pipeline's inject format */
    assert_string_equal(fmt_time("%Y-%m-%dT%H:%M:%S.%NZ", false, NULL, T_PIPE, 632000000),
                        "2024-05-09T21:00:40.632000000Z");
    /* Fluentd's out_stdout line time */
    assert_string_equal(fmt_time("%Y-%m-%d %H:%M:%S.%N %z", true, "+09:00", T_PIPE, 632000000),
                        "2024-05-10 06:00:40.632000000 +0900");

    /* the per-second cache: same second with other nanoseconds, then other seconds */
    weir_timefmt_t tf;
    assert_int_equal(weir_timefmt_init(&tf, "[%H:%M:%S.%3N %L]", false, NULL, NULL), 0);
    weir_buf_t out;
    weir_buf_init(&out);
    weir_timefmt_append(&tf, (weir_time_t){T_S3, 1000000}, &out);
    weir_timefmt_append(&tf, (weir_time_t){T_S3, 2000000}, &out);
    weir_timefmt_append(&tf, (weir_time_t){T_S3 + 1, 3000000}, &out);
    weir_timefmt_append(&tf, (weir_time_t){T_S3, 4000000}, &out);
    assert_int_equal(out.len, 4 * 18);
    assert_memory_equal(out.data,
                        "[13:14:15.001 001][13:14:15.002 002][13:14:16.003 003][13:14:15.004 004]",
                        out.len);
    weir_buf_free(&out);
    weir_timefmt_free(&tf);
}

static void test_time_width_limit(void **state)
{
    char f[16];
    snprintf(f, sizeof f, "%%%dY", WEIR_TIMEFMT_MAX_WIDTH);
    const char *r = fmt_time(f, false, NULL, T_S3, 0);
    assert_int_equal(strlen(r), WEIR_TIMEFMT_MAX_WIDTH);
    assert_string_equal(r + WEIR_TIMEFMT_MAX_WIDTH - 4, "2011");
    snprintf(f, sizeof f, "%%%dY", WEIR_TIMEFMT_MAX_WIDTH + 1);
    r = fmt_time(f, false, NULL, T_S3, 0);
    assert_non_null(strstr(r, "<error: time_format"));
    assert_non_null(strstr(r, "width"));
}

/* ---- crafted zone files under a private TZDIR ---- */

static char tzdir[64];

static void put_be32(FILE *f, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    fwrite(b, 1, 4, f);
}

static void put_header(FILE *f, uint32_t timecnt, uint32_t typecnt, uint32_t charcnt)
{
    fwrite("TZif2", 1, 5, f);
    static const char zero[15];
    fwrite(zero, 1, 15, f);
    put_be32(f, 0); /* isutcnt */
    put_be32(f, 0); /* isstdcnt */
    put_be32(f, 0); /* leapcnt */
    put_be32(f, timecnt);
    put_be32(f, typecnt);
    put_be32(f, charcnt);
}

/* A v2 file with `n` transitions every hour from t0, alternating +01:00 and +02:00 (types 0 and
 * 1 of `ntypes`), then the footer rule `rule`. `cut` bytes are dropped from the end; zeros are
 * added after the footer up to `pad_to` bytes. */
static void write_zone_ex(const char *name, uint32_t n, int64_t t0, const char *rule, size_t cut,
                          uint32_t ntypes, size_t pad_to)
{
    char path[128];
    snprintf(path, sizeof path, "%s/Test", tzdir);
    mkdir(path, 0755); /* EEXIST after the first zone */
    snprintf(path, sizeof path, "%s/Test/%s", tzdir, name);
    char *mem = NULL;
    size_t memlen = 0;
    FILE *f = open_memstream(&mem, &memlen);
    put_header(f, 0, 1, 0); /* v1 block: one type, nothing else */
    fwrite("\0\0\0\0\0\0", 1, 6, f);
    put_header(f, n, ntypes, 4);
    for (uint32_t i = 0; i < n; i++) {
        int64_t t = t0 + (int64_t)i * 3600;
        put_be32(f, (uint32_t)((uint64_t)t >> 32));
        put_be32(f, (uint32_t)t);
    }
    for (uint32_t i = 0; i < n; i++)
        fputc((int)(i % 2), f);
    put_be32(f, 3600);
    fputc(0, f);
    fputc(0, f);
    put_be32(f, 7200);
    fputc(1, f);
    fputc(0, f);
    for (uint32_t i = 2; i < ntypes; i++) {
        put_be32(f, 0);
        fputc(0, f);
        fputc(0, f);
    }
    fwrite("AB\0\0", 1, 4, f);
    fprintf(f, "\n%s\n", rule);
    fflush(f); /* memlen now holds the size so far */
    if (memlen < pad_to) {
        char *zeros = calloc(1, pad_to - memlen);
        fwrite(zeros, 1, pad_to - memlen, f);
        free(zeros);
    }
    fclose(f);
    FILE *out = fopen(path, "wb");
    assert_non_null(out);
    fwrite(mem, 1, memlen - cut, out);
    fclose(out);
    free(mem);
}

static void write_zone(const char *name, uint32_t n, int64_t t0, const char *rule, size_t cut)
{
    write_zone_ex(name, n, t0, rule, cut, 2, 0);
}

static int tzdir_setup(void **state)
{
    snprintf(tzdir, sizeof tzdir, "/tmp/weir_test_tz_XXXXXX");
    assert_non_null(mkdtemp(tzdir));
    setenv("TZDIR", tzdir, 1);
    return 0;
}

static int tzdir_teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tzdir);
    assert_int_equal(system(cmd), 0);
    unsetenv("TZDIR");
    return 0;
}

static void test_tzif_crafted(void **state)
{
    /* before the first transition: type 0; then alternating; past the end: the footer rule */
    write_zone("Small", 3, 1000000000, "<+0330>-3:30", 0);
    weir_tz_t tz;
    weir_err_t err = {{0}};
    assert_int_equal(weir_tz_init(&tz, "Test/Small", true, &err), 0);
    assert_int_equal(weir_tz_offset(&tz, 999999999, NULL), 3600);
    assert_int_equal(weir_tz_offset(&tz, 1000000000, NULL), 3600);
    assert_int_equal(weir_tz_offset(&tz, 1000003600, NULL), 7200);
    assert_int_equal(weir_tz_offset(&tz, 1000007199, NULL), 7200);
    assert_int_equal(weir_tz_offset(&tz, 1000007200, NULL), 3 * 3600 + 1800);
    assert_int_equal(weir_tz_offset(&tz, 2000000000, NULL), 3 * 3600 + 1800);
    weir_tz_free(&tz);

    /* an empty footer: the last transition's type holds forever */
    write_zone("NoRule", 2, 1000000000, "", 0);
    assert_int_equal(weir_tz_init(&tz, "Test/NoRule", true, &err), 0);
    assert_int_equal(weir_tz_offset(&tz, 2000000000, NULL), 7200);
    weir_tz_free(&tz);

    /* exactly at the transition limit, and one past it */
    write_zone("AtLimit", WEIR_TZ_MAX_TRANSITIONS, 0, "", 0);
    assert_int_equal(weir_tz_init(&tz, "Test/AtLimit", true, &err), 0);
    assert_int_equal(weir_tz_offset(&tz, (int64_t)(WEIR_TZ_MAX_TRANSITIONS - 1) * 3600, NULL),
                     (WEIR_TZ_MAX_TRANSITIONS - 1) % 2 ? 7200 : 3600);
    weir_tz_free(&tz);
    write_zone("OverLimit", WEIR_TZ_MAX_TRANSITIONS + 1, 0, "", 0);
    assert_int_equal(weir_tz_init(&tz, "Test/OverLimit", true, &err), -1);
    assert_non_null(strstr(err.msg, "WEIR_TZ_MAX_TRANSITIONS"));

    /* local time types: exactly at the limit, and one past it */
    write_zone_ex("TypesAt", 2, 0, "", 0, WEIR_TZ_MAX_TYPES, 0);
    assert_int_equal(weir_tz_init(&tz, "Test/TypesAt", true, &err), 0);
    weir_tz_free(&tz);
    write_zone_ex("TypesOver", 2, 0, "", 0, WEIR_TZ_MAX_TYPES + 1, 0);
    assert_int_equal(weir_tz_init(&tz, "Test/TypesOver", true, &err), -1);
    assert_non_null(strstr(err.msg, "WEIR_TZ_MAX_TYPES"));

    /* file size: exactly at the limit, and one byte past it */
    write_zone_ex("SizeAt", 2, 0, "XYZ-1", 0, 2, WEIR_TZ_MAX_FILE_SIZE);
    assert_int_equal(weir_tz_init(&tz, "Test/SizeAt", true, &err), 0);
    assert_int_equal(weir_tz_offset(&tz, 1000000, NULL), 3600);
    weir_tz_free(&tz);
    write_zone_ex("SizeOver", 2, 0, "XYZ-1", 0, 2, WEIR_TZ_MAX_FILE_SIZE + 1);
    assert_int_equal(weir_tz_init(&tz, "Test/SizeOver", true, &err), -1);
    assert_non_null(strstr(err.msg, "WEIR_TZ_MAX_FILE_SIZE"));

    /* truncated, a bad rule, not a TZif file at all */
    write_zone("Cut", 3, 0, "XYZ-1", 10);
    assert_int_equal(weir_tz_init(&tz, "Test/Cut", true, &err), -1);
    assert_non_null(strstr(err.msg, "truncated"));
    write_zone("BadRule", 3, 0, "X-1", 0);
    assert_int_equal(weir_tz_init(&tz, "Test/BadRule", true, &err), -1);
    assert_non_null(strstr(err.msg, "POSIX TZ rule"));
    char path[128];
    snprintf(path, sizeof path, "%s/Test/Text", tzdir);
    FILE *f = fopen(path, "w");
    fputs("hello\n", f);
    fclose(f);
    assert_int_equal(weir_tz_init(&tz, "Test/Text", true, &err), -1);
    assert_non_null(strstr(err.msg, "TZif"));
    assert_int_equal(weir_tz_init(&tz, "Test/Missing", true, &err), -1);
    assert_non_null(strstr(err.msg, "tzdata"));
}

/* ---- formatters ---- */

static void test_out_file(void **state)
{
    use_tz("UTC");
    weir_format_opts_t o;
    weir_format_opts_init(&o, WEIR_FORMAT_OUT_FILE);
    weir_time_t t = {T_S3, 0};
    /* the S3 plugin's test vector (config has `utc`) */
    o.localtime = false;
    assert_string_equal(format_line(&o, "test", t, REC_A1),
                        "2011-01-02T13:14:15Z\ttest\t{\"a\":1}\n");
    /* Fluentd's default, localtime, in a UTC container */
    o.localtime = true;
    assert_string_equal(format_line(&o, "test", t, REC_A1),
                        "2011-01-02T13:14:15+00:00\ttest\t{\"a\":1}\n");
    o.timezone = "+09:00";
    assert_string_equal(format_line(&o, "test", t, REC_A1),
                        "2011-01-02T22:14:15+09:00\ttest\t{\"a\":1}\n");
    o.timezone = NULL;
    o.time_format = "%Y%m%d %H%M%S.%L";
    o.delimiter = ",";
    o.newline = "\r\n";
    t.nsec = 632000000;
    assert_string_equal(format_line(&o, "a.b", t, REC_A1), "20110102 131415.632,a.b,{\"a\":1}\r\n");
    o.time_type = WEIR_TIME_FLOAT;
    assert_string_equal(format_line(&o, "a.b", t, REC_A1),
                        "1293974055.632000000,a.b,{\"a\":1}\r\n");
    o.time_type = WEIR_TIME_UNIXTIME;
    assert_string_equal(format_line(&o, "a.b", t, REC_A1), "1293974055,a.b,{\"a\":1}\r\n");
    o.output_time = false;
    assert_string_equal(format_line(&o, "a.b", t, REC_A1), "a.b,{\"a\":1}\r\n");
    o.output_tag = false;
    assert_string_equal(format_line(&o, "a.b", t, REC_A1), "{\"a\":1}\r\n");
    /* a record that is not a map, or is cut short, writes nothing */
    assert_string_equal(format_line(&o, "a.b", t, "\x91\x01", 2), "<bad record>");
    assert_string_equal(format_line(&o, "a.b", t, "\x82\xa1\x61\x01", 4), "<bad record>");
    assert_string_equal(format_line(&o, "a.b", t, "\x81\xa1\x61\x01\x01", 5), "<bad record>");
    /* a bad timezone fails at init */
    o.output_time = true;
    o.time_type = WEIR_TIME_STRING;
    o.timezone = "Mars/Olympus";
    assert_non_null(strstr(format_line(&o, "a.b", t, REC_A1), "<error: "));
}

static void test_json_and_msgpack_formatters(void **state)
{
    weir_format_opts_t o;
    weir_format_opts_init(&o, WEIR_FORMAT_JSON);
    weir_time_t t = {T_S3, 0};
    assert_string_equal(format_line(&o, "test", t, REC_A1), "{\"a\":1}\n");
    o.add_newline = false;
    assert_string_equal(format_line(&o, "test", t, REC_A1), "{\"a\":1}");
    assert_string_equal(format_line(&o, "test", t, "\xc0", 1), "<bad record>");

    weir_format_opts_init(&o, WEIR_FORMAT_MSGPACK);
    weir_formatter_t f;
    assert_int_equal(weir_formatter_init(&f, &o, NULL), 0);
    weir_buf_t out;
    weir_buf_init(&out);
    /* kept as sent, even a map16 holding one pair */
    static const char rec16[] = "\xde\x00\x01\xa1k\xcd\x00\x01";
    assert_int_equal(weir_formatter_format(&f, "t", 1, t, rec16, sizeof rec16 - 1, &out), 0);
    assert_int_equal(out.len, sizeof rec16 - 1);
    assert_memory_equal(out.data, rec16, out.len);
    assert_int_equal(weir_formatter_format(&f, "t", 1, t, "\x81\xa1k", 3, &out), -1);
    assert_int_equal(out.len, sizeof rec16 - 1);
    weir_buf_free(&out);
    weir_formatter_free(&f);
}

/* fuzz_format: an empty first value, formatted by a fresh ltsv formatter (whose scratch
 * buffer was never grown, so its data is NULL), was NULL + 0: undefined behaviour. */
static void test_ltsv_empty_first_value(void **state)
{
    weir_format_opts_t o;
    weir_format_opts_init(&o, WEIR_FORMAT_LTSV);
    weir_time_t t = {T_S3, 0};
    assert_string_equal(format_line(&o, "test", t, "\x81\xa0\xa0", 3), ":\n");
}

static void test_ltsv(void **state)
{
    /* {"a":1,"b":"x\ty","c":nil,"d":{"e":[1,2.5]},"f":true,"g":0.1} */
    mp_t m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 6);
    mp_str(&m, "a");
    msgpack_pack_int(&m.pk, 1);
    mp_str(&m, "b");
    mp_str(&m, "x\ty");
    mp_str(&m, "c");
    msgpack_pack_nil(&m.pk);
    mp_str(&m, "d");
    msgpack_pack_map(&m.pk, 1);
    mp_str(&m, "e");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_int(&m.pk, 1);
    msgpack_pack_double(&m.pk, 2.5);
    mp_str(&m, "f");
    msgpack_pack_true(&m.pk);
    msgpack_pack_int(&m.pk, 7); /* a non-string label */
    msgpack_pack_double(&m.pk, 0.1);
    weir_format_opts_t o;
    weir_format_opts_init(&o, WEIR_FORMAT_LTSV);
    weir_time_t t = {T_S3, 0};
    assert_string_equal(format_line(&o, "test", t, m.buf.data, m.buf.len),
                        "a:1\tb:x y\tc:\td:{\"e\":[1,2.5]}\tf:true\t7:0.1\n");
    o.delimiter = "|";
    o.label_delimiter = "=";
    o.replacement = "_";
    o.add_newline = false;
    assert_string_equal(format_line(&o, "test", t, m.buf.data, m.buf.len),
                        "a=1|b=x\ty|c=|d={\"e\":[1,2.5]}|f=true|7=0.1");
    /* the replacement also applies inside nested values' text */
    assert_string_equal(format_line(&o, "test", t, "\x81\xa1k\xa3p|q", 7), "k=p_q");
    assert_string_equal(format_line(&o, "test", t, "\x80", 1), "");
    weir_buf_free(&m.buf);
}

static void test_single_value(void **state)
{
    weir_format_opts_t o;
    weir_format_opts_init(&o, WEIR_FORMAT_SINGLE_VALUE);
    weir_time_t t = {T_S3, 0};
    assert_string_equal(format_line(&o, "t", t, LIT("\x82\xa1\x61\x01\xa7message\xa5hello")),
                        "hello\n");
    /* a missing key prints an empty line (nil.to_s) */
    assert_string_equal(format_line(&o, "t", t, REC_A1), "\n");
    /* the last duplicate wins, as in a Ruby Hash */
    assert_string_equal(format_line(&o, "t", t, LIT("\x82\xa7message\xa1x\xa7message\xa1y")),
                        "y\n");
    o.message_key = "a";
    o.add_newline = false;
    assert_string_equal(format_line(&o, "t", t, REC_A1), "1");
    assert_string_equal(format_line(&o, "t", t, "\x81\xa1\x61\x92\x01\xc0", 6), "[1,null]");
    assert_string_equal(format_line(&o, "t", t, "\x81\xa1\x61\xc0", 4), "");
    assert_string_equal(
        format_line(&o, "t", t, "\x81\xa1\x61\xcb\x3f\xb9\x99\x99\x99\x99\x99\x9a", 12), "0.1");
}

static void test_stdout_line(void **state)
{
    use_tz("UTC");
    weir_format_opts_t o;
    weir_format_opts_init(&o, WEIR_FORMAT_STDOUT);
    weir_time_t t = {T_PIPE, 632000000};
    assert_string_equal(format_line(&o, "http.audit", t, REC_A1),
                        "2024-05-09 21:00:40.632000000 +0000 http.audit: {\"a\":1}\n");
    /* the header is always the process zone, whatever utc/timezone say */
    o.localtime = false;
    o.timezone = "+09:00";
    use_tz("Asia/Tokyo");
    assert_string_equal(format_line(&o, "x", t, REC_A1),
                        "2024-05-10 06:00:40.632000000 +0900 x: {\"a\":1}\n");
    use_tz("UTC");
    o.timezone = NULL;
    /* the sub-line loses its newline (crlf too) and the line ends in one "\n" */
    o.newline = "\r\n";
    o.output_type = WEIR_FORMAT_LTSV;
    assert_string_equal(format_line(&o, "x", t, REC_A1),
                        "2024-05-09 21:00:40.632000000 +0000 x: a:1\n");
    o.output_type = WEIR_FORMAT_MSGPACK;
    assert_non_null(strstr(format_line(&o, "x", t, REC_A1), "<error: output_type msgpack"));
}

/* ---- inject ---- */

/* Injects into `rec` and returns the JSON of the result. */
static const char *inject_json(const weir_inject_opts_t *o, const char *tag, weir_time_t t,
                               const char *rec, size_t len)
{
    static char text[4096];
    weir_inject_t inj;
    weir_err_t err = {{0}};
    if (weir_inject_init(&inj, o, &err) < 0) {
        snprintf(text, sizeof text, "<error: %s>", err.msg);
        return text;
    }
    weir_buf_t out;
    weir_buf_init(&out);
    weir_buf_append(&out, "pre", 3);
    if (weir_inject_record(&inj, tag, strlen(tag), t, rec, len, &out) < 0) {
        assert_int_equal(out.len, 3);
        snprintf(text, sizeof text, "<bad record>");
    } else {
        /* the result is one whole msgpack map */
        assert_int_equal(weir_mp_skip(out.data + 3, out.len - 3, WEIR_MP_MAX_DEPTH),
                         (ssize_t)(out.len - 3));
        snprintf(text, sizeof text, "%s", json_of(out.data + 3, out.len - 3));
    }
    weir_buf_free(&out);
    weir_inject_free(&inj);
    return text;
}

static void test_inject_vectors(void **state)
{
    weir_inject_opts_t o;
    /* S3 plugin's compat test: include_tag_key, include_time_key, utc */
    weir_inject_opts_init(&o);
    o.tag_key = "tag";
    o.time_key = "time";
    o.time_type = WEIR_TIME_STRING;
    o.utc = true;
    assert_string_equal(inject_json(&o, "test", (weir_time_t){T_S3, 0}, REC_A1),
                        "{\"a\":1,\"tag\":\"test\",\"time\":\"2011-01-02T13:14:15Z\"}");
    /* the pipeline's <inject>: time_format %Y-%m-%dT%H:%M:%S.%NZ, utc, tag_key tag */
    o.time_format = "%Y-%m-%dT%H:%M:%S.%NZ";
    assert_string_equal(
        inject_json(&o, "http.audit", (weir_time_t){T_PIPE, 632000000}, REC_A1),
        "{\"a\":1,\"tag\":\"http.audit\",\"time\":\"2024-05-09T21:00:40.632000000Z\"}");
    /* localtime and a timezone */
    o.utc = false;
    o.time_format = NULL;
    o.timezone = "Asia/Tokyo";
    assert_string_equal(inject_json(&o, "t", (weir_time_t){T_S3, 0}, REC_A1),
                        "{\"a\":1,\"tag\":\"t\",\"time\":\"2011-01-02T22:14:15+09:00\"}");
}

static void test_inject_time_types(void **state)
{
    weir_inject_opts_t o;
    weir_inject_opts_init(&o);
    o.time_key = "time";
    weir_time_t t = {1704114855, 123456789};
    /* the default: float seconds truncated to microseconds */
    assert_string_equal(inject_json(&o, "t", t, REC_A1), "{\"a\":1,\"time\":1704114855.123456}");
    assert_string_equal(inject_json(&o, "t", (weir_time_t){1704114855, 0}, REC_A1),
                        "{\"a\":1,\"time\":1704114855.0}");
    o.time_type = WEIR_TIME_UNIXTIME;
    assert_string_equal(inject_json(&o, "t", t, REC_A1), "{\"a\":1,\"time\":1704114855}");
    o.time_type = WEIR_TIME_UNIXTIME_MILLIS;
    assert_string_equal(inject_json(&o, "t", t, REC_A1), "{\"a\":1,\"time\":1704114855123}");
    o.time_type = WEIR_TIME_UNIXTIME_MICROS;
    assert_string_equal(inject_json(&o, "t", t, REC_A1), "{\"a\":1,\"time\":1704114855123456}");
    o.time_type = WEIR_TIME_UNIXTIME_NANOS;
    assert_string_equal(inject_json(&o, "t", t, REC_A1), "{\"a\":1,\"time\":1704114855123456789}");
    assert_string_equal(inject_json(&o, "t", (weir_time_t){UINT32_MAX, 999999999}, REC_A1),
                        "{\"a\":1,\"time\":4294967295999999999}");
}

static void test_inject_keys(void **state)
{
    weir_inject_opts_t o;
    weir_inject_opts_init(&o);
    o.hostname_key = "host";
    o.hostname = "web-1";
    o.worker_id_key = "worker";
    o.tag_key = "tag";
    o.time_key = "time";
    o.time_type = WEIR_TIME_UNIXTIME;
    weir_time_t t = {T_S3, 0};
    assert_string_equal(
        inject_json(&o, "t", t, REC_A1),
        "{\"a\":1,\"host\":\"web-1\",\"worker\":0,\"tag\":\"t\",\"time\":1293974055}");
    /* an existing key keeps its place; a later duplicate of it is dropped */
    static const char rec[] = "\x84\xa3tag\xa3old\xa1\x61\x01\xa3tag\xa4old2\xa1z\x02";
    assert_string_equal(
        inject_json(&o, "t", t, rec, sizeof rec - 1),
        "{\"tag\":\"t\",\"a\":1,\"z\":2,\"host\":\"web-1\",\"worker\":0,\"time\":1293974055}");
    /* two injected keys with one name: the later value at the first one's place */
    weir_inject_opts_init(&o);
    o.tag_key = "x";
    o.time_key = "x";
    o.time_type = WEIR_TIME_UNIXTIME;
    assert_string_equal(inject_json(&o, "t", t, REC_A1), "{\"a\":1,\"x\":1293974055}");
    /* the default host name is the machine's */
    weir_inject_opts_init(&o);
    o.hostname_key = "h";
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char want[512];
    snprintf(want, sizeof want, "{\"a\":1,\"h\":\"%s\"}", host);
    assert_string_equal(inject_json(&o, "t", t, REC_A1), want);
    /* nothing named: disabled */
    weir_inject_t inj;
    weir_inject_opts_init(&o);
    assert_int_equal(weir_inject_init(&inj, &o, NULL), 0);
    assert_false(weir_inject_enabled(&inj));
    weir_inject_free(&inj);
}

static void test_inject_map_headers(void **state)
{
    /* 15 pairs + 1 injected: fixmap grows to map16; a map16 with 2 pairs shrinks to fixmap */
    mp_t m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 15);
    for (int i = 0; i < 15; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        mp_str(&m, k);
        msgpack_pack_int(&m.pk, i);
    }
    weir_inject_opts_t o;
    weir_inject_opts_init(&o);
    o.tag_key = "tag";
    weir_inject_t inj;
    assert_int_equal(weir_inject_init(&inj, &o, NULL), 0);
    weir_buf_t out;
    weir_buf_init(&out);
    assert_int_equal(
        weir_inject_record(&inj, "t", 1, (weir_time_t){0, 0}, m.buf.data, m.buf.len, &out), 0);
    assert_int_equal((unsigned char)out.data[0], 0xde);
    assert_int_equal(out.data[2], 16);
    assert_non_null(strstr(json_of(out.data, out.len), "\"k14\":14,\"tag\":\"t\"}"));
    out.len = 0;
    static const char rec16[] = "\xde\x00\x02\xa1x\x01\xa3tag\x02";
    assert_int_equal(
        weir_inject_record(&inj, "t", 1, (weir_time_t){0, 0}, rec16, sizeof rec16 - 1, &out), 0);
    assert_int_equal((unsigned char)out.data[0], 0x82);
    assert_string_equal(json_of(out.data, out.len), "{\"x\":1,\"tag\":\"t\"}");
    /* not a map, truncated, trailing bytes */
    out.len = 0;
    assert_int_equal(weir_inject_record(&inj, "t", 1, (weir_time_t){0, 0}, "\x91\x01", 2, &out),
                     -1);
    assert_int_equal(
        weir_inject_record(&inj, "t", 1, (weir_time_t){0, 0}, "\x82\xa1x\x01", 4, &out), -1);
    assert_int_equal(weir_inject_record(&inj, "t", 1, (weir_time_t){0, 0}, "\x80\x01", 2, &out),
                     -1);
    assert_int_equal(out.len, 0);
    weir_buf_free(&out);
    weir_inject_free(&inj);
    weir_buf_free(&m.buf);
}

/* ---- batches ---- */

static void test_format_batch(void **state)
{
    use_tz("UTC");
    weir_batch_t b;
    weir_batch_init(&b, "test", 4);
    weir_batch_append(&b, (weir_time_t){T_S3, 0}, REC_A1);
    weir_batch_append(&b, (weir_time_t){T_S3 + 1, 0}, "\x91\x01", 2); /* not a map */
    weir_batch_append(&b, (weir_time_t){T_S3 + 2, 0}, "\x81\xa1\x62\x02", 4);
    weir_format_opts_t fo;
    weir_format_opts_init(&fo, WEIR_FORMAT_OUT_FILE);
    fo.localtime = false;
    weir_formatter_t f;
    assert_int_equal(weir_formatter_init(&f, &fo, NULL), 0);
    weir_inject_opts_t io;
    weir_inject_opts_init(&io);
    io.tag_key = "tag";
    weir_inject_t inj;
    assert_int_equal(weir_inject_init(&inj, &io, NULL), 0);
    weir_buf_t out, scratch;
    weir_buf_init(&out);
    weir_buf_init(&scratch);
    size_t skipped = 99;
    weir_err_t err = {{0}};
    assert_int_equal(weir_format_batch(&f, &inj, &b, &out, &scratch, &skipped, &err), 2);
    assert_int_equal(skipped, 1);
    assert_non_null(strstr(err.msg, "record 1"));
    const char want[] = "2011-01-02T13:14:15Z\ttest\t{\"a\":1,\"tag\":\"test\"}\n"
                        "2011-01-02T13:14:17Z\ttest\t{\"b\":2,\"tag\":\"test\"}\n";
    assert_int_equal(out.len, sizeof want - 1);
    assert_memory_equal(out.data, want, out.len);
    /* without inject */
    out.len = 0;
    assert_int_equal(weir_format_batch(&f, NULL, &b, &out, &scratch, &skipped, NULL), 2);
    assert_int_equal(out.len, sizeof want - 1 - 2 * strlen(",\"tag\":\"test\""));
    /* bytes that are not entries */
    weir_batch_append_raw(&b, "\x01", 1, 1, 0, 0);
    assert_int_equal(weir_format_batch(&f, NULL, &b, &out, &scratch, &skipped, &err), -1);
    assert_non_null(strstr(err.msg, "entry 3"));
    weir_buf_free(&out);
    weir_buf_free(&scratch);
    weir_inject_free(&inj);
    weir_formatter_free(&f);
    weir_batch_free(&b);
}

/* ---- configuration ---- */

static weir_conf_section_t *parse_conf(const char *text)
{
    weir_err_t err = {{0}};
    weir_conf_section_t *root = weir_conf_parse_string(text, strlen(text), "test.conf", &err);
    if (!root) fail_msg("parse: %s", err.msg);
    return root;
}

/* The first <format>/<inject> inside the first <match>. */
static weir_conf_section_t *conf_child(weir_conf_section_t *root, const char *name)
{
    weir_conf_section_t *match = weir_conf_child(root, "match", 0);
    assert_non_null(match);
    return weir_conf_child(match, name, 0);
}

static const char *conf_format_line(const char *conf, weir_format_type_t dflt, weir_time_t t,
                                    const char *rec, size_t len)
{
    static char text[1024];
    weir_conf_section_t *root = parse_conf(conf);
    weir_format_opts_t o;
    weir_err_t err = {{0}};
    if (weir_format_opts_from_conf(&o, conf_child(root, "format"), dflt, &err) < 0) {
        snprintf(text, sizeof text, "<error: %s>", err.msg);
    } else if (weir_conf_check_unused(conf_child(root, "format"), &err) != 0) {
        snprintf(text, sizeof text, "<unused: %s>", err.msg);
    } else {
        snprintf(text, sizeof text, "%s", format_line(&o, "test", t, rec, len));
    }
    weir_conf_free(root);
    return text;
}

static void test_format_conf(void **state)
{
    use_tz("UTC");
    weir_time_t t = {T_S3, 0};
    assert_string_equal(
        conf_format_line("<match **>\n<format>\n@type out_file\nutc true\n</format>\n</match>\n",
                         WEIR_FORMAT_JSON, t, REC_A1),
        "2011-01-02T13:14:15Z\ttest\t{\"a\":1}\n");
    /* Fluentd's delimiter keywords; any other value means TAB */
    assert_string_equal(conf_format_line("<match **>\n<format>\ndelimiter comma\n"
                                         "output_time false\n</format>\n</match>\n",
                                         WEIR_FORMAT_OUT_FILE, t, REC_A1),
                        "test,{\"a\":1}\n");
    assert_string_equal(conf_format_line("<match **>\n<format>\ndelimiter SPACE\n"
                                         "output_tag false\ntimezone +09:00\n</format>\n</match>\n",
                                         WEIR_FORMAT_OUT_FILE, t, REC_A1),
                        "2011-01-02T22:14:15+09:00 {\"a\":1}\n");
    assert_string_equal(conf_format_line("<match **>\n<format>\ndelimiter \"|\"\n"
                                         "output_time false\n</format>\n</match>\n",
                                         WEIR_FORMAT_OUT_FILE, t, REC_A1),
                        "test\t{\"a\":1}\n");
    assert_string_equal(conf_format_line("<match **>\n<format>\n@type json\njson_parser oj\n"
                                         "add_newline false\n</format>\n</match>\n",
                                         WEIR_FORMAT_OUT_FILE, t, REC_A1),
                        "{\"a\":1}");
    assert_string_equal(conf_format_line("<match **>\n<format>\n@type ltsv\nlabel_delimiter =\n"
                                         "newline crlf\n</format>\n</match>\n",
                                         WEIR_FORMAT_OUT_FILE, t, REC_A1),
                        "a=1\r\n");
    assert_string_equal(conf_format_line("<match **>\n<format>\n@type single_value\n"
                                         "message_key a\n</format>\n</match>\n",
                                         WEIR_FORMAT_OUT_FILE, t, REC_A1),
                        "1\n");
    assert_string_equal(
        conf_format_line("<match **>\n<format>\n@type out_file\ntime_type unixtime\n"
                         "</format>\n</match>\n",
                         WEIR_FORMAT_OUT_FILE, t, REC_A1),
        "1293974055\ttest\t{\"a\":1}\n");
    assert_string_equal(conf_format_line("<match **>\n<format>\noutput_type single_value\n"
                                         "message_key a\n</format>\n</match>\n",
                                         WEIR_FORMAT_STDOUT, (weir_time_t){T_S3, 5}, REC_A1),
                        "2011-01-02 13:14:15.000000005 +0000 test: 1\n");
    /* no <format>: the output's default */
    weir_format_opts_t o;
    assert_int_equal(weir_format_opts_from_conf(&o, NULL, WEIR_FORMAT_OUT_FILE, NULL), 0);
    assert_int_equal(o.type, WEIR_FORMAT_OUT_FILE);
    assert_true(o.localtime);
}

static void test_format_conf_errors(void **state)
{
    weir_time_t t = {T_S3, 0};
    const char *r;
    r = conf_format_line("<match **>\n<format>\n@type csv\n</format>\n</match>\n",
                         WEIR_FORMAT_OUT_FILE, t, REC_A1);
    assert_non_null(strstr(r, "test.conf:3"));
    assert_non_null(strstr(r, "'csv' is not supported"));
    r = conf_format_line("<match **>\n<format>\nutc true\nlocaltime true\n</format>\n</match>\n",
                         WEIR_FORMAT_OUT_FILE, t, REC_A1);
    assert_non_null(strstr(r, "both of utc and localtime"));
    r = conf_format_line("<match **>\n<format>\ntimezone Japan\n</format>\n</match>\n",
                         WEIR_FORMAT_OUT_FILE, t, REC_A1);
    assert_non_null(strstr(r, "test.conf:3"));
    assert_non_null(strstr(r, "Unsupported timezone 'Japan'"));
    r = conf_format_line("<match **>\n<format>\nnewline cr\n</format>\n</match>\n",
                         WEIR_FORMAT_OUT_FILE, t, REC_A1);
    assert_non_null(strstr(r, "newline"));
    r = conf_format_line("<match **>\n<format>\noutput_type msgpack\n</format>\n</match>\n",
                         WEIR_FORMAT_STDOUT, t, REC_A1);
    assert_non_null(strstr(r, "output_type"));
    /* a parameter of another formatter type stays unused, and is reported */
    r = conf_format_line("<match **>\n<format>\n@type json\nmessage_key m\n</format>\n</match>\n",
                         WEIR_FORMAT_OUT_FILE, t, REC_A1);
    assert_non_null(strstr(r, "<unused: "));
    assert_non_null(strstr(r, "message_key"));
    r = conf_format_line("<match **>\n<format>\n@type out_file\nadd_newline false\n</format>\n"
                         "</match>\n",
                         WEIR_FORMAT_OUT_FILE, t, REC_A1);
    assert_non_null(strstr(r, "add_newline"));
}

static void test_inject_conf(void **state)
{
    const char *conf = "<match **>\n<inject>\ntime_key time\ntime_type string\n"
                       "time_format %Y-%m-%dT%H:%M:%S.%NZ\nutc true\nlocaltime true\n"
                       "tag_key tag\n</inject>\n</match>\n";
    weir_conf_section_t *root = parse_conf(conf);
    weir_inject_opts_t o;
    weir_err_t err = {{0}};
    weir_conf_section_t *s = conf_child(root, "inject");
    assert_int_equal(weir_inject_opts_from_conf(&o, s, &err), 0);
    assert_int_equal(weir_conf_check_unused(s, &err), 0);
    /* in <inject> utc wins over localtime */
    assert_string_equal(
        inject_json(&o, "http.audit", (weir_time_t){T_PIPE, 632000000}, REC_A1),
        "{\"a\":1,\"tag\":\"http.audit\",\"time\":\"2024-05-09T21:00:40.632000000Z\"}");
    weir_conf_free(root);

    root = parse_conf("<match **>\n<inject>\ntime_key t\n</inject>\n</match>\n");
    assert_int_equal(weir_inject_opts_from_conf(&o, conf_child(root, "inject"), &err), 0);
    assert_int_equal(o.time_type, WEIR_TIME_FLOAT);
    weir_conf_free(root);

    root = parse_conf("<match **>\n<inject>\ntime_key t\ntime_type unixtime_seconds\n</inject>\n"
                      "</match>\n");
    assert_int_equal(weir_inject_opts_from_conf(&o, conf_child(root, "inject"), &err), -1);
    assert_non_null(strstr(err.msg, "time_type"));
    weir_conf_free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_scalars),
        cmocka_unit_test(test_json_floats),
        cmocka_unit_test(test_json_strings),
        cmocka_unit_test(test_json_invalid_utf8),
        cmocka_unit_test(test_json_bin_ext),
        cmocka_unit_test(test_json_ext_long_headers),
        cmocka_unit_test(test_json_containers),
        cmocka_unit_test(test_json_non_string_keys),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_json_depth_limit),
        cmocka_unit_test(test_json_duplicate_keys),
        cmocka_unit_test(test_json_duplicate_keys_sizes),
        cmocka_unit_test(test_json_container_keys_stay_linear),
        cmocka_unit_test(test_formatters_duplicate_keys),
        cmocka_unit_test(test_json_every_shape_loads),
        cmocka_unit_test(test_time_iso8601_default),
        cmocka_unit_test(test_time_fixed_offsets),
        cmocka_unit_test(test_time_bad_zones),
        cmocka_unit_test(test_time_named_zones),
        cmocka_unit_test(test_time_directives),
        cmocka_unit_test(test_time_subseconds),
        cmocka_unit_test(test_time_width_limit),
        cmocka_unit_test_setup_teardown(test_tzif_crafted, tzdir_setup, tzdir_teardown),
        cmocka_unit_test(test_out_file),
        cmocka_unit_test(test_json_and_msgpack_formatters),
        cmocka_unit_test(test_ltsv_empty_first_value),
        cmocka_unit_test(test_ltsv),
        cmocka_unit_test(test_single_value),
        cmocka_unit_test(test_stdout_line),
        cmocka_unit_test(test_inject_vectors),
        cmocka_unit_test(test_inject_time_types),
        cmocka_unit_test(test_inject_keys),
        cmocka_unit_test(test_inject_map_headers),
        cmocka_unit_test(test_format_batch),
        cmocka_unit_test(test_format_conf),
        cmocka_unit_test(test_format_conf_errors),
        cmocka_unit_test(test_inject_conf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
