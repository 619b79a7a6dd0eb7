/* S3 object keys: every worked example of s3-output.md table 1.7.4 built on a real buffer chunk
 * (real placeholders, real time zones), the pieces (index_format, hex_random, time slices,
 * %{...} replacement), store_as and endpoint rules, and the configuration errors and warnings
 * of `<match> @type s3` as a user meets them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "weir/buffer.h"
#include "weir/config.h"
#include "weir/engine.h"
#include "weir/log.h"
#include "weir/placeholder.h"
#include "weir/s3.h"

/* 2024-01-01T13:14:15Z, the doc's example event */
#define T_DOC 1704114855u
/* 2011-01-02T13:14:15Z, fluent-plugin-s3's test time */
#define T_S3 1293974055u

static uv_loop_t loop;
static weir_engine_t *eng;
static weir_conf_section_t *eng_root;
static char hostname[256];

/* ---- a real chunk on a real memory buffer ---- */

typedef struct fixture {
    weir_conf_section_t *root;
    weir_buffer_t *b;
    weir_chunk_t *chunk;
} fixture_t;

static void capture(void *out, weir_chunk_t *c)
{
    ((fixture_t *)out)->chunk = c;
}

/* A buffer from `conf` ("<buffer tag,time> ... </buffer>", or NULL for none with the given
 * default chunk keys) holding one event of `tag` at `t`, handed to us as a ready chunk. */
static void fixture_init(fixture_t *f, const char *conf, const char *default_keys, const char *tag,
                         uint32_t t)
{
    memset(f, 0, sizeof *f);
    weir_err_t err = {{0}};
    weir_conf_section_t *sec = NULL;
    if (conf) {
        f->root = weir_conf_parse_string(conf, strlen(conf), "test.conf", &err);
        assert_non_null(f->root);
        sec = weir_conf_child(f->root, "buffer", 0);
        assert_non_null(sec);
    }
    weir_buffer_defaults_t defs = {.chunk_keys = default_keys, .timekey = 86400};
    weir_buffer_sink_t sink = {.write = capture, .out = f};
    f->b = weir_buffer_new(eng, sec, &defs, "keys", &sink, &err);
    if (!f->b) fail_msg("buffer: %s", err.msg);
    assert_int_equal(weir_buffer_start(f->b, &err), 0);
    weir_batch_t batch;
    weir_batch_init(&batch, tag, strlen(tag));
    weir_time_t wt = {t, 0};
    weir_batch_append(&batch, wt,
                      "\x81\xa1"
                      "a\x01",
                      4); /* {"a":1} */
    assert_int_equal(weir_buffer_append(f->b, &batch, NULL, NULL), WEIR_EMIT_DONE);
    weir_batch_free(&batch);
    weir_buffer_flush_all(f->b);
    assert_non_null(f->chunk);
}

static void fixture_free(fixture_t *f)
{
    weir_chunk_write_done(f->chunk, WEIR_WRITE_OK, NULL);
    weir_buffer_free(f->b);
    uv_run(&loop, UV_RUN_NOWAIT); /* let the buffer's timers close */
    weir_conf_free(f->root);
}

static s3_keyfmt_opts_t opts_for(const fixture_t *f)
{
    s3_keyfmt_opts_t o = {
        .format = NULL,
        .path = "",
        .extension = "gz",
        .hostname = hostname,
        .check_object = true,
        .index_format = "%d",
        .hex_random_length = 4,
        .timekey = weir_buffer_timekey(f->b),
    };
    return o;
}

/* The key for index `i` at upload time `now`, in a static buffer. */
static const char *key_of(const fixture_t *f, const s3_keyfmt_opts_t *o, long i, time_t now)
{
    static char out[2048];
    s3_keyfmt_t k;
    weir_err_t err = {{0}};
    if (s3_keyfmt_init(&k, o, &err) != 0) fail_msg("keyfmt: %s", err.msg);
    weir_buf_t b;
    weir_buf_init(&b);
    s3_key_vars_t v = {.index = i, .now = now};
    if (s3_key_build(&k, f->b, f->chunk, &v, &b, &err) != 0) fail_msg("key: %s", err.msg);
    snprintf(out, sizeof out, "%.*s", (int)b.len, b.data);
    weir_buf_free(&b);
    s3_keyfmt_free(&k);
    return out;
}

static const char *reversed_id(const fixture_t *f, size_t n)
{
    static char out[33];
    const char *id = weir_chunk_id_hex(f->chunk);
    for (size_t i = 0; i < n; i++)
        out[i] = id[31 - i];
    out[n] = '\0';
    return out;
}

/* ---- table 1.7.4, row by row ---- */

static void test_row_tag_path_hourly_utc(void **state)
{
    fixture_t f;
    fixture_init(&f, "<buffer tag,time>\n timekey 3600\n timekey_use_utc true\n</buffer>\n", "time",
                 "app.web", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.path = "logs/${tag}/%Y/%m/%d/";
    assert_string_equal(key_of(&f, &o, 0, T_DOC), "logs/app.web/2024/01/01/2024010113_0.gz");
    /* the next object in the same hour */
    assert_string_equal(key_of(&f, &o, 1, T_DOC), "logs/app.web/2024/01/01/2024010113_1.gz");
    fixture_free(&f);
}

static void test_row_defaults_daily(void **state)
{
    /* <buffer time> with its defaults: timekey 86400 in the process zone (TZ=UTC here) */
    fixture_t f;
    fixture_init(&f, NULL, "time", "app.web", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    assert_string_equal(key_of(&f, &o, 0, T_DOC), "20240101_0.gz");
    fixture_free(&f);
}

static void test_row_check_object_false_default_format(void **state)
{
    fixture_t f;
    fixture_init(&f, NULL, "time", "app.web", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.path = "logs";
    o.check_object = false;
    /* uploaded at 13:20:05Z */
    assert_string_equal(key_of(&f, &o, 0, 1704115205), "logs/20240101_132005.gz");
    fixture_free(&f);
}

static void test_row_chunk_id(void **state)
{
    fixture_t f;
    fixture_init(&f, "<buffer time>\n timekey 3600\n timekey_use_utc true\n</buffer>\n", "time",
                 "app.web", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.format = "%{path}%{time_slice}_${chunk_id}.%{file_extension}";
    o.path = "logs/";
    char want[128];
    snprintf(want, sizeof want, "logs/2024010113_%s.gz", weir_chunk_id_hex(f.chunk));
    assert_string_equal(key_of(&f, &o, 0, T_DOC), want);
    fixture_free(&f);
}

static void test_row_hex_random(void **state)
{
    fixture_t f;
    fixture_init(&f, "<buffer time>\n timekey 3600\n timekey_use_utc true\n</buffer>\n", "time",
                 "app.web", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.format = "%{path}%{time_slice}_%{hex_random}_%{index}.%{file_extension}";
    o.path = "logs/";
    char want[128];
    snprintf(want, sizeof want, "logs/2024010113_%s_0.gz", reversed_id(&f, 4));
    assert_string_equal(key_of(&f, &o, 0, T_DOC), want);
    /* stable across retries: the same chunk gives the same hex_random */
    assert_string_equal(key_of(&f, &o, 0, T_DOC + 3600), want);
    fixture_free(&f);
}

static void test_row_s3doc_hostname(void **state)
{
    fixture_t f;
    fixture_init(&f, "<buffer time>\n timekey 3600\n timekey_use_utc true\n</buffer>\n", "time",
                 "test", T_S3);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.format = "%{path}/events/ts=%{time_slice}/events_%{index}-%{hostname}.%{file_extension}";
    o.path = "log";
    o.time_slice_format = "%Y%m%d-%H";
    char want[512];
    snprintf(want, sizeof want, "log/events/ts=20110102-13/events_0-%s.gz", hostname);
    assert_string_equal(key_of(&f, &o, 0, T_S3), want);
    fixture_free(&f);
}

static void test_row_no_chunk_keys(void **state)
{
    fixture_t f;
    fixture_init(&f, NULL, "", "app.web", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.path = "log/";
    assert_string_equal(key_of(&f, &o, 0, T_DOC), "log/_0.gz");
    fixture_free(&f);
}

/* ---- more of section 1.7 ---- */

static void test_time_slice_in_timekey_zone(void **state)
{
    /* 13:14:15Z is 22:14:15 at +09:00: the slice and the strftime path follow the zone */
    fixture_t f;
    fixture_init(&f, "<buffer time>\n timekey 3600\n timekey_zone +09:00\n</buffer>\n", "time",
                 "app.web", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.path = "%H/";
    assert_string_equal(key_of(&f, &o, 0, T_DOC), "22/2024010122_0.gz");
    fixture_free(&f);
    /* daily in +09:00: the bucket starts 2024-01-01 00:00 +09:00 */
    fixture_init(&f, "<buffer time>\n timekey 1d\n timekey_zone +09:00\n</buffer>\n", "time",
                 "app.web", T_DOC);
    o = opts_for(&f);
    assert_string_equal(key_of(&f, &o, 0, T_DOC), "20240101_0.gz");
    fixture_free(&f);
}

static void test_time_slice_default_formats(void **state)
{
    assert_string_equal(s3_timekey_format(1), "%Y%m%d%H%M%S");
    assert_string_equal(s3_timekey_format(59), "%Y%m%d%H%M%S");
    assert_string_equal(s3_timekey_format(60), "%Y%m%d%H%M");
    assert_string_equal(s3_timekey_format(3599), "%Y%m%d%H%M");
    assert_string_equal(s3_timekey_format(3600), "%Y%m%d%H");
    assert_string_equal(s3_timekey_format(86399), "%Y%m%d%H");
    assert_string_equal(s3_timekey_format(86400), "%Y%m%d");
    fixture_t f;
    fixture_init(&f, "<buffer time>\n timekey 60\n timekey_use_utc true\n</buffer>\n", "time", "a",
                 T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    assert_string_equal(key_of(&f, &o, 0, T_DOC), "202401011314_0.gz");
    fixture_free(&f);
    fixture_init(&f, "<buffer time>\n timekey 1\n timekey_use_utc true\n</buffer>\n", "time", "a",
                 T_DOC);
    o = opts_for(&f);
    assert_string_equal(key_of(&f, &o, 0, T_DOC), "20240101131415_0.gz");
    fixture_free(&f);
}

static void test_tag_parts_and_unknown_placeholders(void **state)
{
    fixture_t f;
    fixture_init(&f, "<buffer tag,time>\n timekey 3600\n timekey_use_utc true\n</buffer>\n", "time",
                 "app.web.prod", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.format = "${tag[0]}/${tag[-1]}/%{nope}%{time_slice}%{}.%{file_extension}";
    /* unknown %{nope} is empty; %{} is not a placeholder and stays */
    assert_string_equal(key_of(&f, &o, 0, T_DOC), "app/prod/2024010113%{}.gz");
    /* %% is strftime's percent */
    o.format = "%{path}100%%_%{index}";
    o.path = "p/";
    assert_string_equal(key_of(&f, &o, 3, T_DOC), "p/100%_3");
    fixture_free(&f);
}

static void test_tag_never_becomes_a_path(void **state)
{
    fixture_t f;
    fixture_init(&f, "<buffer tag,time>\n timekey 3600\n timekey_use_utc true\n</buffer>\n", "time",
                 "../../etc", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.path = "logs/${tag}/";
    const char *k = key_of(&f, &o, 0, T_DOC);
    assert_null(strstr(k, ".."));
    assert_string_equal(k, "logs/______etc/2024010113_0.gz");
    fixture_free(&f);
}

static void test_percent_in_a_tag_is_never_a_placeholder(void **state)
{
    /* values taken from events are substituted once and never scanned again: a %{...} in a
     * tag stays as the sender wrote it instead of becoming "" (which turned "a.%{x}." into
     * "a..", past the '..' check) or an index, a time slice or random hex */
    fixture_t f;
    fixture_init(&f, "<buffer tag,time>\n timekey 3600\n timekey_use_utc true\n</buffer>\n", "time",
                 "a.%{x}.%{index}%{time_slice}", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.path = "logs/${tag}/";
    const char *k = key_of(&f, &o, 7, T_DOC);
    assert_null(strstr(k, ".."));
    assert_string_equal(k, "logs/a.%{x}.%{index}%{time_slice}/2024010113_7.gz");
    o.format = "${tag[1]}/${tag[2]}/%{index}";
    assert_string_equal(key_of(&f, &o, 7, T_DOC), "%{x}/%{index}%{time_slice}/7");
    fixture_free(&f);
}

static void test_path_inserted_before_strftime(void **state)
{
    /* %{path} goes in first, so its strftime directives are expanded; %{index} inside the
     * path is replaced in pass 3 as Ruby's gsub over the whole key does */
    fixture_t f;
    fixture_init(&f, "<buffer time>\n timekey 3600\n timekey_use_utc true\n</buffer>\n", "time",
                 "a", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.path = "y=%Y/i=%{index}/";
    assert_string_equal(key_of(&f, &o, 2, T_DOC), "y=2024/i=2/2024010113_2.gz");
    fixture_free(&f);
}

static void test_uuid_flush_fresh_each_time(void **state)
{
    fixture_t f;
    fixture_init(&f, NULL, "time", "a", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.format = "%{uuid_flush}";
    char a[64], b[64];
    snprintf(a, sizeof a, "%s", key_of(&f, &o, 0, T_DOC));
    snprintf(b, sizeof b, "%s", key_of(&f, &o, 0, T_DOC));
    assert_int_equal(strlen(a), 36);
    assert_int_equal(a[14], '4');               /* version 4 */
    assert_true(strchr("89ab", a[19]) != NULL); /* RFC 4122 variant */
    assert_string_not_equal(a, b);
    fixture_free(&f);
}

static void test_hms_and_date_slice_only_without_check_object(void **state)
{
    fixture_t f;
    fixture_init(&f, NULL, "time", "a", T_DOC);
    s3_keyfmt_opts_t o = opts_for(&f);
    o.format = "%{date_slice}-%{hms_slice}-%{index}";
    assert_string_equal(key_of(&f, &o, 0, 1704115205), "--0");
    o.check_object = false;
    assert_string_equal(key_of(&f, &o, 0, 1704115205), "20240101-132005-");
    fixture_free(&f);
}

static void test_key_length_limit(void **state)
{
    fixture_t f;
    fixture_init(&f, NULL, "", "a", T_DOC);
    char fmt[S3_KEY_MAX + 2];
    memset(fmt, 'k', S3_KEY_MAX);
    fmt[S3_KEY_MAX] = '\0';
    s3_keyfmt_opts_t o = opts_for(&f);
    o.format = fmt;
    assert_int_equal(strlen(key_of(&f, &o, 0, T_DOC)), S3_KEY_MAX); /* exactly at the limit */
    fmt[S3_KEY_MAX] = 'k';
    fmt[S3_KEY_MAX + 1] = '\0';
    s3_keyfmt_t k;
    weir_err_t err = {{0}};
    assert_int_equal(s3_keyfmt_init(&k, &o, &err), 0);
    weir_buf_t b;
    weir_buf_init(&b);
    s3_key_vars_t v = {0};
    assert_int_equal(s3_key_build(&k, f.b, f.chunk, &v, &b, &err), -1); /* one past */
    assert_non_null(strstr(err.msg, "longer than"));
    assert_int_equal(b.len, 0);
    weir_buf_free(&b);
    s3_keyfmt_free(&k);
    fixture_free(&f);
}

/* ---- the pieces ---- */

static const char *index_text(const char *fmt, long i)
{
    static char out[128];
    s3_index_fmt_t f;
    if (s3_index_format_parse(fmt, &f) != 0) return "<invalid>";
    weir_buf_t b;
    weir_buf_init(&b);
    s3_index_format(&f, i, &b);
    snprintf(out, sizeof out, "%.*s", (int)b.len, b.data);
    weir_buf_free(&b);
    return out;
}

static void test_index_format(void **state)
{
    assert_string_equal(index_text("%d", 0), "0");
    assert_string_equal(index_text("%d", 12), "12");
    assert_string_equal(index_text("%04d", 7), "0007");
    assert_string_equal(index_text("%0d", 7), "7");
    assert_string_equal(index_text("%x", 255), "ff");
    assert_string_equal(index_text("%X", 255), "FF");
    assert_string_equal(index_text("%08x", 255), "000000ff");
    assert_string_equal(index_text("%d", -1), "-1"); /* metadata without check_object */
    /* ^%(0\d*)?[dxX]$ */
    assert_string_equal(index_text("%4d", 1), "<invalid>");
    assert_string_equal(index_text("%s", 1), "<invalid>");
    assert_string_equal(index_text("d", 1), "<invalid>");
    assert_string_equal(index_text("%d ", 1), "<invalid>");
    assert_string_equal(index_text("%-04d", 1), "<invalid>");
    assert_string_equal(index_text("", 1), "<invalid>");
    assert_string_equal(index_text("%04i", 1), "<invalid>");
}

static const char *hexr(const char *id, int64_t n)
{
    static char out[64];
    weir_buf_t b;
    weir_buf_init(&b);
    s3_hex_random(id, n, &b);
    snprintf(out, sizeof out, "%.*s", (int)b.len, b.data);
    weir_buf_free(&b);
    return out;
}

static void test_hex_random(void **state)
{
    const char *id = "5f32232e76a4d1bdfdbeed36c384b03b";
    assert_string_equal(hexr(id, 4), "b30b"); /* the doc's example */
    assert_string_equal(hexr(id, 16), "b30b483c63deebdf");
    assert_string_equal(hexr(id, 0), "");
    assert_string_equal(hexr(id, -30), "b3"); /* Ruby's [0...-30] */
    assert_string_equal(hexr(id, -40), "");
}

static void test_replace_percent(void **state)
{
    const char *names[] = {"a", "bb"}, *values[] = {"1", "22"};
    weir_buf_t b;
    weir_buf_init(&b);
    weir_percent_vars_t vars = {names, values, 2};
    weir_placeholders_percent("x%{a}y%{bb}z%{c}%{}%{a", &vars, false, &b);
    weir_buf_putc(&b, '\0');
    assert_string_equal(b.data, "x1y22z%{}%{a");
    b.len = 0;
    weir_placeholders_percent("x%{a}y%{bb}z%{c}%{}%{a", &vars, true, &b);
    weir_buf_putc(&b, '\0');
    assert_string_equal(b.data, "x1y22z%{c}%{}%{a");
    weir_buf_free(&b);
}

static void test_store_as(void **state)
{
    s3_store_as_t s;
    weir_err_t err = {{0}};
    struct {
        const char *name, *ext, *type;
    } rows[] = {
        {"gzip", "gz", "application/x-gzip"},
        {"zstd", "zst", "application/x-zst"},
        {"json", "json", "application/json"},
        {"text", "txt", "text/plain"},
    };
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(s3_store_as_parse(rows[i].name, &s, &err), 0);
        assert_string_equal(s3_store_extension(s), rows[i].ext);
        assert_string_equal(s3_store_content_type(s), rows[i].type);
    }
    const char *refused[] = {"lzo", "lzma2", "gzip_command", "parquet"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(s3_store_as_parse(refused[i], &s, &err), -1);
        assert_non_null(strstr(err.msg, "not supported"));
    }
    /* unknown: text, as Fluentd */
    assert_int_equal(s3_store_as_parse("bzip9", &s, &err), 1);
    assert_int_equal(s, S3_STORE_TEXT);
}

static void test_endpoint_rules(void **state)
{
    assert_true(s3_endpoint_rejected("https://s3.amazonaws.com"));
    assert_true(s3_endpoint_rejected("https://s3.eu-west-1.amazonaws.com"));
    assert_false(s3_endpoint_rejected("https://bucket.vpce-1a2b.s3.us-east-1.vpce.amazonaws.com"));
    assert_false(s3_endpoint_rejected("https://s3-fips.us-east-1.amazonaws.com"));
    assert_false(s3_endpoint_rejected("https://s3.us-gov-west-1.amazonaws.com"));
    assert_false(s3_endpoint_rejected("http://127.0.0.1:9000"));
    assert_false(s3_endpoint_rejected("https://storage.googleapis.com"));

    assert_true(s3_bucket_dns_compatible("my-logs", true));
    assert_true(s3_bucket_dns_compatible("abc", true));
    assert_false(s3_bucket_dns_compatible("ab", true));
    assert_false(s3_bucket_dns_compatible("My-Logs", true));
    assert_false(s3_bucket_dns_compatible("my_logs", true));
    assert_false(s3_bucket_dns_compatible("-logs", true));
    assert_false(s3_bucket_dns_compatible("192.168.1.1", false));
    assert_false(s3_bucket_dns_compatible("my..logs", false));
    assert_true(s3_bucket_dns_compatible("my.logs", false));
    assert_false(s3_bucket_dns_compatible("my.logs", true)); /* TLS name would not match */
    char longname[65];
    memset(longname, 'a', 63);
    longname[63] = '\0';
    assert_true(s3_bucket_dns_compatible(longname, true));
    longname[63] = 'a';
    longname[64] = '\0';
    assert_false(s3_bucket_dns_compatible(longname, true));
}

/* ---- configure-time validation, through the plugin ---- */

static char log_path[] = "/tmp/weir-s3-keys-log-XXXXXX";
static int saved_stderr = -1;

static void log_capture_start(void)
{
    fflush(stderr);
    int fd = mkstemp(log_path);
    assert_true(fd >= 0);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

/* The captured log text (static). */
static const char *log_capture_end(void)
{
    static char text[16384];
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    FILE *f = fopen(log_path, "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = '\0';
    if (f) fclose(f);
    unlink(log_path);
    strcpy(log_path, "/tmp/weir-s3-keys-log-XXXXXX");
    return text;
}

/* Runs the plugin's create() on `<match **> @type s3 s3_bucket b BODY </match>`.
 * Returns 0 or -1 with err set; the log lines go to *log when not NULL. */
static int create_s3(const char *body, weir_err_t *err, const char **log)
{
    char conf[4096];
    snprintf(conf, sizeof conf, "<match **>\n  @type s3\n  s3_bucket my-bucket\n%s</match>\n",
             body);
    weir_conf_section_t *root = weir_conf_parse_string(conf, strlen(conf), "s3.conf", err);
    if (!root) fail_msg("parse: %s", err->msg);
    void *state = NULL;
    if (log) {
        weir_log_set_level(WEIR_LOG_WARN);
        log_capture_start();
    }
    int rc = weir_out_s3_ops.create(eng, weir_conf_child(root, "match", 0), &state, err);
    if (log) {
        *log = log_capture_end();
        weir_log_set_level(WEIR_LOG_ERROR);
    }
    if (rc == 0) weir_out_s3_ops.destroy(state);
    weir_conf_free(root);
    return rc;
}

static void expect_error(const char *body, const char *needle)
{
    weir_err_t err = {{0}};
    assert_int_equal(create_s3(body, &err, NULL), -1);
    if (!strstr(err.msg, needle)) fail_msg("error '%s' lacks '%s'", err.msg, needle);
}

static void expect_ok(const char *body)
{
    weir_err_t err = {{0}};
    if (create_s3(body, &err, NULL) != 0) fail_msg("unexpected error: %s", err.msg);
}

static void test_config_validation(void **state)
{
    weir_err_t err = {{0}};
    char conf[] = "<match **>\n  @type s3\n</match>\n";
    weir_conf_section_t *root = weir_conf_parse_string(conf, strlen(conf), "s3.conf", &err);
    void *st = NULL;
    assert_int_equal(weir_out_s3_ops.create(eng, weir_conf_child(root, "match", 0), &st, &err), -1);
    assert_non_null(strstr(err.msg, "s3_bucket"));
    weir_conf_free(root);

    expect_ok("");
    expect_ok("  hex_random_length 16\n"); /* at the limit */
    expect_error("  hex_random_length 17\n", "hex_random_length 17 is too long");
    expect_ok("  index_format %04x\n");
    expect_error("  index_format %4d\n", "index_format '%4d' is invalid");
    expect_error("  s3_object_key_format %{path}%{uuid}.gz\n", "%{uuid} placeholder was removed");
    expect_error("  s3_object_key_format %{uuid:random}\n", "removed");
    expect_error("  s3_object_key_format %{uuid:hostname}\n", "removed");
    expect_error("  s3_object_key_format %{uuid:timestamp}\n", "removed");
    expect_ok("  s3_object_key_format %{uuid_flush}\n");
    expect_error("  s3_endpoint https://s3.us-west-2.amazonaws.com\n",
                 "s3_endpoint parameter is not supported for S3");
    expect_ok("  s3_endpoint https://s3-fips.us-east-1.amazonaws.com\n");
    expect_ok("  s3_endpoint http://127.0.0.1:9000\n");
    expect_error("  s3_endpoint ftp://127.0.0.1\n", "http:// or https://");
    expect_error("  store_as lzo\n", "store_as lzo is not supported");
    expect_error("  store_as parquet\n", "not supported");
    expect_error("  store_as gzip_command\n", "not supported");
    expect_error("  store_as lzma2\n", "not supported");
    expect_ok("  store_as zstd\n  <compress>\n    level 19\n  </compress>\n");
    expect_error("  store_as gzip\n  <compress>\n    level 3\n  </compress>\n", "only for");
    expect_error("  signature_version s3\n", "SigV4 only");
    expect_ok("  signature_version v4\n");
    expect_ok("  multipart_chunk_size 5m\n"); /* S3's smallest part */
    expect_error("  multipart_chunk_size 5242879\n", "between 5m and 5g");
    expect_error("  multipart_threshold 6g\n", "at most 5g");
    expect_error("  aws_key_id AKIA\n", "go together");
    expect_error("  aws_credential_process /bin/creds\n", "not supported");
    expect_error("  checksum_algorithm CRC32\n", "not supported");
    expect_error("  <assume_role_credentials>\n    role_arn arn:aws:iam::1:role/x\n"
                 "  </assume_role_credentials>\n",
                 "needs 'role_session_name'");
    expect_error("  <web_identity_credentials>\n    role_arn a\n    role_session_name s\n"
                 "  </web_identity_credentials>\n",
                 "needs 'web_identity_token_file'");
    expect_error("  <bucket_lifecycle_rule>\n    id a\n    expiration_days 1\n"
                 "  </bucket_lifecycle_rule>\n",
                 "not supported");
    expect_error(
        "  sse_customer_algorithm AES256\n  sse_customer_key 0123456789abcdef0123456789abcdef\n"
        "  s3_endpoint http://127.0.0.1:9000\n",
        "only sent over https");
    expect_ok(
        "  sse_customer_algorithm AES256\n  sse_customer_key 0123456789abcdef0123456789abcdef\n");
    expect_ok("  s3_metadata {\"team\":\"audit\",\"tag\":\"${tag}\"}\n");
    expect_error("  time_slice_format %Y%m\n", "cannot set a timekey");
    expect_ok("  time_slice_format %Y%m%d%H\n");
    /* dry-run friendly: naming a credentials file that does not exist is not an error yet */
    expect_ok("  <shared_credentials>\n    path /nonexistent/credentials\n"
              "    profile_name nobody\n  </shared_credentials>\n");
}

static void test_config_warnings(void **state)
{
    weir_err_t err = {{0}};
    const char *log;
    assert_int_equal(create_s3("", &err, &log), 0);
    assert_non_null(strstr(log, "s3_object_key_format is not set"));

    assert_int_equal(create_s3("  s3_object_key_format %{path}%{time_slice}.gz\n", &err, &log), 0);
    assert_null(strstr(log, "is not set"));
    assert_non_null(strstr(log, "duplicated path is generated"));

    assert_int_equal(create_s3("  s3_object_key_format %{path}%{time_slice}_%{index}.gz\n"
                               "  <buffer time>\n    flush_thread_count 2\n  </buffer>\n",
                               &err, &log),
                     0);
    assert_non_null(strstr(log, "flush_thread_count > 1"));
    assert_int_equal(create_s3("  s3_object_key_format %{path}${chunk_id}.gz\n"
                               "  <buffer time>\n    flush_thread_count 2\n  </buffer>\n",
                               &err, &log),
                     0);
    assert_null(strstr(log, "flush_thread_count > 1"));

    assert_int_equal(
        create_s3("  s3_object_key_format %{path}%{hostname}_%{index}.gz\n", &err, &log), 0);
    assert_non_null(strstr(log, "%{hostname} will be removed"));

    assert_int_equal(create_s3("  check_object false\n"
                               "  s3_object_key_format %{path}${chunk_id}.gz\n",
                               &err, &log),
                     0);
    assert_non_null(strstr(log, "existing object is overwritten"));
    /* and no secret in any of it */
    assert_int_equal(create_s3("  aws_key_id AKIDKEYS\n  aws_sec_key VERYSECRET123\n", &err, &log),
                     0);
    assert_null(strstr(log, "VERYSECRET123"));
}

static int setup(void **state)
{
    setenv("TZ", "UTC", 1);
    tzset();
    gethostname(hostname, sizeof hostname - 1);
    uv_loop_init(&loop);
    const char conf[] = "<match **>\n  @type null\n</match>\n";
    weir_err_t err = {{0}};
    eng_root = weir_conf_parse_string(conf, sizeof conf - 1, "engine.conf", &err);
    weir_engine_opts_t o = {.dry_run = false, .log_level_override = -1};
    eng = weir_engine_new(&loop, eng_root, &o, &err);
    if (!eng) fprintf(stderr, "engine: %s\n", err.msg);
    weir_log_set_level(WEIR_LOG_ERROR); /* the warnings under test are captured one by one */
    return eng ? 0 : -1;
}

static int teardown(void **state)
{
    weir_engine_free(eng);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    weir_conf_free(eng_root);
    return 0;
}

/* The static part of a path: up to %, ${ or #{; a lone $ or # is part of it. */
static void test_static_prefix(void **state)
{
    static const char *const cases[][2] = {
        {"logs/%Y/%m/%d/", "logs/"},
        {"logs/${tag}/", "logs/"},
        {"a/#{ENV}/", "a/"},
        {"plain/path/", "plain/path/"},
        {"", ""},
        {"%Y", ""},
        {"cost$/x#y/${tag}", "cost$/x#y/"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *p = s3_static_prefix(cases[i][0]);
        assert_string_equal(p, cases[i][1]);
        free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_tag_path_hourly_utc),
        cmocka_unit_test(test_row_defaults_daily),
        cmocka_unit_test(test_row_check_object_false_default_format),
        cmocka_unit_test(test_row_chunk_id),
        cmocka_unit_test(test_row_hex_random),
        cmocka_unit_test(test_row_s3doc_hostname),
        cmocka_unit_test(test_row_no_chunk_keys),
        cmocka_unit_test(test_time_slice_in_timekey_zone),
        cmocka_unit_test(test_time_slice_default_formats),
        cmocka_unit_test(test_tag_parts_and_unknown_placeholders),
        cmocka_unit_test(test_tag_never_becomes_a_path),
        cmocka_unit_test(test_percent_in_a_tag_is_never_a_placeholder),
        cmocka_unit_test(test_path_inserted_before_strftime),
        cmocka_unit_test(test_uuid_flush_fresh_each_time),
        cmocka_unit_test(test_hms_and_date_slice_only_without_check_object),
        cmocka_unit_test(test_key_length_limit),
        cmocka_unit_test(test_index_format),
        cmocka_unit_test(test_hex_random),
        cmocka_unit_test(test_replace_percent),
        cmocka_unit_test(test_store_as),
        cmocka_unit_test(test_endpoint_rules),
        cmocka_unit_test(test_config_validation),
        cmocka_unit_test(test_config_warnings),
        cmocka_unit_test(test_static_prefix),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
