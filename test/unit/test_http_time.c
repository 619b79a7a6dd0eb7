/* Event time for <source> @type http: time_format (the strptime gem's subset, trailing input
 * ignored), time_type float/unixtime/string, zones, and Ruby's number conversions that
 * Fluentd's time rules go through. Expected epochs were computed independently (Python's
 * calendar.timegm and zoneinfo). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "weir/http_input.h"

static const weir_time_t NOW = {1715288440u, 0}; /* 2024-05-09 21:00:40 UTC */

static void set_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

static int setup_utc(void **state)
{
    set_tz("UTC");
    return 0;
}

static weir_timeparser_t *tp_new(weir_time_type_t type, const char *fmt, const char *tz, bool utc)
{
    weir_timeparser_conf_t c = {type, fmt, tz, true, utc};
    weir_err_t err;
    weir_timeparser_t *tp = weir_timeparser_new(&c, &err);
    if (!tp) fail_msg("timeparser_new(%s): %s", fmt ? fmt : "(null)", err.msg);
    return tp;
}

static const char *conf_error(weir_time_type_t type, const char *fmt, const char *tz, bool utc)
{
    static weir_err_t err;
    weir_timeparser_conf_t c = {type, fmt, tz, true, utc};
    weir_timeparser_t *tp = weir_timeparser_new(&c, &err);
    if (tp) {
        weir_timeparser_free(tp);
        return NULL;
    }
    return err.msg;
}

/* Parses a string with a string-type parser; returns 0 and the time, or -1. */
static int parse(const char *fmt, const char *tz, bool utc, const char *value, weir_time_t *t)
{
    weir_timeparser_t *tp = tp_new(WEIR_TIME_STRING, fmt, tz, utc);
    int rc = weir_timeparser_parse_str(tp, value, strlen(value), NOW, t);
    weir_timeparser_free(tp);
    return rc;
}

static void expect(const char *fmt, const char *tz, const char *value, uint32_t sec, uint32_t nsec)
{
    weir_time_t t = {0, 0};
    if (parse(fmt, tz, false, value, &t) != 0)
        fail_msg("'%s' with '%s' did not parse", value, fmt ? fmt : "(iso)");
    if (t.sec != sec || t.nsec != nsec)
        fail_msg("'%s' with '%s': got %u.%09u, want %u.%09u", value, fmt ? fmt : "(iso)", t.sec,
                 t.nsec, sec, nsec);
}

static void expect_fail(const char *fmt, const char *value)
{
    weir_time_t t;
    if (parse(fmt, NULL, false, value, &t) == 0)
        fail_msg("'%s' with '%s' parsed as %u, expected a failure", value, fmt, t.sec);
}

/* Teleport's config: time_type string, time_format %Y-%m-%dT%H:%M:%S, no zone (local = UTC
 * in the container). The fraction and the Z are trailing input and ignored. */
static void test_teleport_format_ignores_trailing_input(void **state)
{
    const char *f = "%Y-%m-%dT%H:%M:%S";
    expect(f, NULL, "2024-05-09T21:00:40.632Z", 1715288440u, 0);
    expect(f, NULL, "2024-05-09T20:58:57.77Z", 1715288337u, 0);
    expect(f, NULL, "2024-05-09T21:06:21.024Z", 1715288781u, 0);
    expect(f, NULL, "2024-05-09T21:01:02.5Z", 1715288462u, 0);
    expect(f, NULL, "2024-05-09T21:00:40", 1715288440u, 0);
    expect(f, NULL, "2024-05-09T21:00:40 and anything at all", 1715288440u, 0);
}

/* Wall times without an offset are local: the same text is 9 hours earlier in Tokyo. */
static void test_wall_time_is_local_unless_utc(void **state)
{
    const char *f = "%Y-%m-%dT%H:%M:%S";
    set_tz("Asia/Tokyo");
    expect(f, NULL, "2024-05-09T21:00:40.632Z", 1715288440u - 9 * 3600, 0);
    weir_time_t t;
    assert_int_equal(parse(f, NULL, true, "2024-05-09T21:00:40.632Z", &t), 0); /* utc true */
    assert_int_equal(t.sec, 1715288440u);
    set_tz("UTC");
}

static void test_fraction_directives(void **state)
{
    expect("%Y-%m-%dT%H:%M:%S.%N", NULL, "2024-05-09T21:06:21.024064124Z", 1715288781u, 24064124);
    expect("%Y-%m-%dT%H:%M:%S.%N", NULL, "2024-05-09T21:06:21.5", 1715288781u, 500000000);
    /* digits past nanoseconds are read and dropped */
    expect("%Y-%m-%dT%H:%M:%S.%NZ", NULL, "2024-05-09T21:06:21.1234567891Z", 1715288781u,
           123456789);
    expect("%Y-%m-%dT%H:%M:%S.%L", NULL, "2024-05-09T21:06:21.024Z", 1715288781u, 24000000);
    expect("%Y-%m-%dT%H:%M:%S.%3N", NULL, "2024-05-09T21:06:21.024999", 1715288781u, 24000000);
    expect_fail("%Y-%m-%dT%H:%M:%S.%N", "2024-05-09T21:06:21.x");
}

static void test_zone_in_the_value(void **state)
{
    const char *f = "%Y-%m-%dT%H:%M:%S%z";
    expect(f, NULL, "2024-05-09T21:00:40+09:00", 1715288440u - 9 * 3600, 0);
    expect(f, NULL, "2024-05-09T21:00:40+0900", 1715288440u - 9 * 3600, 0);
    expect(f, NULL, "2024-05-09T21:00:40-05:30", 1715288440u + 5 * 3600 + 1800, 0);
    expect(f, NULL, "2024-05-09T21:00:40Z", 1715288440u, 0);
    expect(f, NULL, "2024-05-09T21:00:40UTC", 1715288440u, 0);
    /* an offset in the value wins over the configured zone */
    expect(f, "Asia/Tokyo", "2024-05-09T21:00:40+00:00", 1715288440u, 0);
    expect("%Y-%m-%d %H:%M:%S %Z", NULL, "2024-05-09 21:00:40 JST", 1715288440u - 9 * 3600, 0);
    expect("%Y-%m-%d %H:%M:%S %Z", NULL, "2024-05-09 21:00:40 +09:00", 1715288440u - 9 * 3600, 0);
    expect_fail(f, "2024-05-09T21:00:40");
}

static void test_configured_zones(void **state)
{
    const char *f = "%Y-%m-%d %H:%M:%S";
    expect(f, "Asia/Tokyo", "2024-05-09 21:00:40", 1715256040u, 0);
    expect(f, "+09:00", "2024-05-09 21:00:40", 1715256040u, 0);
    expect(f, "+0900", "2024-05-09 21:00:40", 1715256040u, 0);
    expect(f, "+09", "2024-05-09 21:00:40", 1715256040u, 0);
    expect(f, "-05:30", "2024-05-09 21:00:40", 1715288440u + 5 * 3600 + 1800, 0);
    expect(f, "UTC", "2024-05-09 21:00:40", 1715288440u, 0);
    /* a named zone follows its DST rules at the parsed instant */
    expect(f, "America/New_York", "2024-07-01 12:00:00", 1719849600u, 0); /* EDT */
    expect(f, "America/New_York", "2024-01-15 12:00:00", 1705338000u, 0); /* EST */
}

/* The formats of Fluentd's docs and common log formats. */
static void test_doc_formats(void **state)
{
    expect("%d/%b/%Y:%H:%M:%S %z", NULL, "09/May/2024:21:00:40 +0000", 1715288440u, 0);
    expect("%d/%b/%Y:%H:%M:%S %z", NULL, "09/may/2024:21:00:40 -0000", 1715288440u, 0);
    expect("%d/%B/%Y %H:%M:%S", NULL, "09/May/2024 21:00:40", 1715288440u, 0);
    expect("%a, %d %b %Y %H:%M:%S %z", NULL, "Thu, 09 May 2024 21:00:40 +0000", 1715288440u, 0);
    expect("%A %e %b %Y %T", NULL, "Thursday  9 May 2024 21:00:40", 1715288440u, 0);
    expect("%F %T", NULL, "2024-05-09 21:00:40", 1715288440u, 0);
    expect("%y%m%d %H%M%S", NULL, "240509 210040", 1715288440u, 0);
    expect("%Y %j", NULL, "2024 040", 1707436800u, 0); /* day 40 = Feb 9 */
    expect("%s", NULL, "1715288440", 1715288440u, 0);
    expect("%s.%N", NULL, "1715288440.5", 1715288440u, 500000000);
    expect("%Y%%%m%%%d", NULL, "2024%05%09", 1715212800u, 0);
    /* whitespace in the format matches any run of whitespace, or none */
    expect("%Y-%m-%d %H:%M:%S", NULL, "2024-05-09\t \t21:00:40", 1715288440u, 0);
    expect("%Y-%m-%d %H:%M:%S", NULL, "2024-05-0921:00:40", 1715288440u, 0);
}

/* Without a year the date is today's, as the strptime gem fills it. */
static void test_missing_date_is_today(void **state)
{
    expect("%H:%M:%S", NULL, "12:34:56", 1715212800u + 12 * 3600 + 34 * 60 + 56, 0);
    expect("%m-%d", NULL, "12-31", 1735603200u, 0);
}

static void test_mismatches_fail(void **state)
{
    const char *f = "%Y-%m-%dT%H:%M:%S";
    expect_fail(f, "");
    expect_fail(f, "2024-13-09T21:00:40");
    expect_fail(f, "2024-05-32T21:00:40");
    expect_fail(f, "2024-05-09T24:00:40");
    expect_fail(f, "2024-05-09T21:60:40");
    expect_fail(f, "2024-05-09 21:00:40"); /* 'T' is a literal */
    expect_fail(f, "2024-05-09T21:00");    /* input ends before %S */
    expect_fail(f, "May 9 2024");
    expect_fail("%d/%b/%Y", "09/Mai/2024");
}

static void test_unsupported_configs(void **state)
{
    const char *e = conf_error(WEIR_TIME_STRING, "%Y-%m-%d %I:%M %p", NULL, false);
    assert_non_null(e);
    assert_non_null(strstr(e, "%I is not supported"));
    e = conf_error(WEIR_TIME_STRING, NULL, "+09:00", false);
    assert_string_equal(e, "specifying timezone requires time format");
    e = conf_error(WEIR_TIME_STRING, NULL, NULL, true);
    assert_string_equal(e, "specifying timezone requires time format");
    e = conf_error(WEIR_TIME_STRING, "%Y", "Nowhere/Atlantis", false);
    assert_non_null(strstr(e, "Unsupported timezone 'Nowhere/Atlantis'"));
    e = conf_error(WEIR_TIME_STRING, "%Y", "../../etc/passwd", false);
    assert_non_null(e);
    e = conf_error(WEIR_TIME_STRING, "%Y-%", NULL, false);
    assert_non_null(e);
    /* numeric types ignore format and zone, as Fluentd's NumericTimeParser does */
    assert_null(conf_error(WEIR_TIME_FLOAT, NULL, "+09:00", true));
}

/* time_type string without time_format reads ISO 8601 (Fluentd uses Time.parse there) and
 * keeps the fraction; "%iso8601" is strict about trailing input. */
static void test_iso8601(void **state)
{
    expect(NULL, NULL, "2024-05-09T21:00:40.632Z", 1715288440u, 632000000);
    expect(NULL, NULL, "2024-05-09 21:00:40 +09:00", 1715256040u, 0);
    expect(NULL, NULL, "2024-05-09", 1715212800u, 0);
    expect("%iso8601", NULL, "2024-05-09T21:00:40Z", 1715288440u, 0);
    expect("%iso8601", NULL, "2024-05-09T21:00:40.5+00:00", 1715288440u, 500000000);
    expect_fail("%iso8601", "2024-05-09T21:00:40Z trailing");
    expect_fail("%iso8601", "2024-05-09 21:00:40Z");
}

static int parse_obj(weir_time_type_t type, const char *fmt, weir_mp_obj_t v, weir_time_t *t,
                     weir_err_t *err)
{
    weir_timeparser_t *tp = tp_new(type, fmt, NULL, false);
    int rc = weir_timeparser_parse(tp, &v, NOW, t, err);
    weir_timeparser_free(tp);
    return rc;
}

static weir_mp_obj_t str_obj(const char *s)
{
    weir_mp_obj_t o = {.type = WEIR_MP_STR, .ptr = s, .len = (uint32_t)strlen(s)};
    return o;
}

static void test_string_type_needs_a_string(void **state)
{
    weir_time_t t;
    weir_err_t err;
    weir_mp_obj_t v = {.type = WEIR_MP_UINT, .v.u = 12345};
    assert_int_equal(parse_obj(WEIR_TIME_STRING, "%Y", v, &t, &err), -1);
    assert_string_equal(err.msg, "value must be string: 12345");
    assert_int_equal(parse_obj(WEIR_TIME_STRING, "%Y-%m-%d", str_obj("yesterday"), &t, &err), -1);
    assert_non_null(strstr(err.msg, "invalid time format: value = yesterday"));
}

/* NumericTimeParser :float reads the text of the value: seconds before the dot, nanoseconds
 * from the digits after it. */
static void test_float_type(void **state)
{
    weir_time_t t;
    weir_err_t err;
    assert_int_equal(parse_obj(WEIR_TIME_FLOAT, NULL, str_obj("1715288440.5"), &t, &err), 0);
    assert_int_equal(t.sec, 1715288440u);
    assert_int_equal(t.nsec, 500000000);
    weir_mp_obj_t f = {.type = WEIR_MP_FLOAT, .v.f = 1715288440.25};
    assert_int_equal(parse_obj(WEIR_TIME_FLOAT, NULL, f, &t, &err), 0);
    assert_int_equal(t.sec, 1715288440u);
    assert_int_equal(t.nsec, 250000000);
    weir_mp_obj_t i = {.type = WEIR_MP_UINT, .v.u = 1715288440};
    assert_int_equal(parse_obj(WEIR_TIME_FLOAT, NULL, i, &t, &err), 0);
    assert_int_equal(t.sec, 1715288440u);
    assert_int_equal(t.nsec, 0);
    /* a string that is no number is 0, as Ruby's to_i makes it */
    assert_int_equal(parse_obj(WEIR_TIME_FLOAT, NULL, str_obj("soon"), &t, &err), 0);
    assert_int_equal(t.sec, 0);
    weir_mp_obj_t b = {.type = WEIR_MP_BOOL, .v.b = true};
    assert_int_equal(parse_obj(WEIR_TIME_FLOAT, NULL, b, &t, &err), -1);
    weir_mp_obj_t n = {.type = WEIR_MP_NIL};
    assert_int_equal(parse_obj(WEIR_TIME_FLOAT, NULL, n, &t, &err), -1);
}

static void test_unixtime_type(void **state)
{
    weir_time_t t;
    weir_err_t err;
    assert_int_equal(parse_obj(WEIR_TIME_UNIXTIME, NULL, str_obj(" 1715288440xyz"), &t, &err), 0);
    assert_int_equal(t.sec, 1715288440u);
    weir_mp_obj_t f = {.type = WEIR_MP_FLOAT, .v.f = 1715288440.9};
    assert_int_equal(parse_obj(WEIR_TIME_UNIXTIME, NULL, f, &t, &err), 0);
    assert_int_equal(t.sec, 1715288440u);
    assert_int_equal(t.nsec, 0);
    /* found by fuzz_http: a float past 2^63 must not reach an integer conversion */
    f.v.f = -3.24661e38;
    assert_int_equal(parse_obj(WEIR_TIME_UNIXTIME, NULL, f, &t, &err), -1);
    assert_non_null(strstr(err.msg, "out of range"));
    f.v.f = 1e300;
    assert_int_equal(parse_obj(WEIR_TIME_FLOAT, NULL, f, &t, &err), 0); /* text rule */
}

static void check_to_s(double d, const char *want)
{
    char buf[32];
    weir_ruby_float_to_s(d, buf);
    assert_string_equal(buf, want);
}

static void test_ruby_float_to_s(void **state)
{
    check_to_s(1715288440.5, "1715288440.5");
    check_to_s(1715288440.123456789, "1715288440.1234567");
    check_to_s(100.0, "100.0");
    check_to_s(0.1, "0.1");
    check_to_s(-1.5, "-1.5");
    check_to_s(0.0001, "0.0001");
    check_to_s(0.00001, "1.0e-05");
    check_to_s(1e15, "1000000000000000.0");
    check_to_s(1e16, "1.0e+16");
    check_to_s(1.5e20, "1.5e+20");
    check_to_s(0.0, "0.0");
}

static void check_to_f(const char *s, double want)
{
    double got = weir_ruby_to_f(s, strlen(s));
    if (got != want) fail_msg("to_f('%s') = %.17g, want %.17g", s, got, want);
}

static void test_ruby_to_f(void **state)
{
    check_to_f("1715288440.5", 1715288440.5);
    check_to_f("  12abc", 12.0);
    check_to_f("", 0.0);
    check_to_f("abc", 0.0);
    check_to_f("1_000.5", 1000.5);
    check_to_f("1e3", 1000.0);
    check_to_f("1e", 1.0);
    check_to_f(".5", 0.5);
    check_to_f("1.", 1.0);
    check_to_f("-2.5", -2.5);
    check_to_f("0x10", 0.0);
}

static void test_float_text_rule(void **state)
{
    weir_time_t t = weir_time_from_float_text("1715288440.5", 12);
    assert_int_equal(t.sec, 1715288440u);
    assert_int_equal(t.nsec, 500000000);
    t = weir_time_from_float_text("1715288440.000000001", 20);
    assert_int_equal(t.nsec, 1);
    t = weir_time_from_float_text("1715288440", 10);
    assert_int_equal(t.nsec, 0);
    /* padding comes after what was there: Fluentd's quirk, kept */
    t = weir_time_from_float_text("10.5x", 5);
    assert_int_equal(t.sec, 10);
    assert_int_equal(t.nsec, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_teleport_format_ignores_trailing_input),
        cmocka_unit_test(test_wall_time_is_local_unless_utc),
        cmocka_unit_test(test_fraction_directives),
        cmocka_unit_test(test_zone_in_the_value),
        cmocka_unit_test(test_configured_zones),
        cmocka_unit_test(test_doc_formats),
        cmocka_unit_test(test_missing_date_is_today),
        cmocka_unit_test(test_mismatches_fail),
        cmocka_unit_test(test_unsupported_configs),
        cmocka_unit_test(test_iso8601),
        cmocka_unit_test(test_string_type_needs_a_string),
        cmocka_unit_test(test_float_type),
        cmocka_unit_test(test_unixtime_type),
        cmocka_unit_test(test_ruby_float_to_s),
        cmocka_unit_test(test_ruby_to_f),
        cmocka_unit_test(test_float_text_rule),
    };
    return cmocka_run_group_tests(tests, setup_utc, NULL);
}
