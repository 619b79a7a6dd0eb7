/* The log's escaping (src/core/log.c) and the UTF-8 check it shares (weir_utf8_seq in
 * src/core/common.c): stderr is pointed at a temporary file, weir_log writes real lines, and the
 * tests read them back as a user reading the log would. Every boundary of the UTF-8 rules
 * (Unicode table 3-7) sits here with the byte just past it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weir/common.h"
#include "weir/log.h"

/* ---- weir_utf8_seq --------------------------------------------------------------------- */

static size_t seq(const char *s, size_t n)
{
    return weir_utf8_seq((const unsigned char *)s, n);
}

static void test_utf8_boundaries(void **state)
{
    (void)state;
    assert_int_equal(seq("\x7f", 1), 1);
    assert_int_equal(seq("\x80", 1), 0);             /* a continuation byte alone */
    assert_int_equal(seq("\xc1\xbf", 2), 0);         /* overlong U+007F */
    assert_int_equal(seq("\xc2\x80", 2), 2);         /* U+0080, the first 2-byte */
    assert_int_equal(seq("\xdf\xbf", 2), 2);         /* U+07FF */
    assert_int_equal(seq("\xc2\xc0", 2), 0);         /* second byte past 0xbf */
    assert_int_equal(seq("\xe0\x9f\xbf", 3), 0);     /* overlong U+07FF */
    assert_int_equal(seq("\xe0\xa0\x80", 3), 3);     /* U+0800 */
    assert_int_equal(seq("\xed\x9f\xbf", 3), 3);     /* U+D7FF */
    assert_int_equal(seq("\xed\xa0\x80", 3), 0);     /* U+D800, a surrogate */
    assert_int_equal(seq("\xef\xbf\xbf", 3), 3);     /* U+FFFF */
    assert_int_equal(seq("\xf0\x8f\xbf\xbf", 4), 0); /* overlong U+FFFF */
    assert_int_equal(seq("\xf0\x90\x80\x80", 4), 4); /* U+10000 */
    assert_int_equal(seq("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF, the last */
    assert_int_equal(seq("\xf4\x90\x80\x80", 4), 0); /* past U+10FFFF */
    assert_int_equal(seq("\xf5\x80\x80\x80", 4), 0);
    assert_int_equal(seq("\xe2\x82\xac", 2), 0); /* truncated: the bytes end first */
    assert_int_equal(seq("\xe2\x82\x41", 3), 0); /* third byte not a continuation */
}

/* ---- lines ----------------------------------------------------------------------------- */

static FILE *g_capture;

static int setup(void **state)
{
    (void)state;
    g_capture = tmpfile();
    weir_log_set_level(WEIR_LOG_INFO);
    return g_capture ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    fclose(g_capture);
    weir_log_set_format(WEIR_LOG_FORMAT_TEXT);
    return 0;
}

/* Logs "tag=<value>" at warn with stderr pointed at the capture file, only for that call (so
 * that cmocka's own messages still reach the terminal); returns the line (static buffer). */
static const char *logged(const char *value, size_t n)
{
    static char out[4096];
    rewind(g_capture);
    if (ftruncate(fileno(g_capture), 0) != 0) fail_msg("ftruncate");
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(g_capture), STDERR_FILENO);
    weir_warn("tag=%.*s", (int)n, value);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(g_capture);
    size_t got = fread(out, 1, sizeof out - 1, g_capture);
    out[got] = '\0';
    return out;
}

/* The message part of a text line ("... [warn]: tag=..."), without the newline. */
static const char *text_message(const char *line)
{
    static char msg[4096];
    const char *p = strstr(line, " [warn]: ");
    if (!p) fail_msg("not a warn line: %s", line);
    snprintf(msg, sizeof msg, "%s", p + strlen(" [warn]: "));
    size_t n = strlen(msg);
    assert_true(n > 0 && msg[n - 1] == '\n');
    msg[n - 1] = '\0';
    assert_null(strchr(msg, '\n')); /* one line */
    return msg;
}

#define TEXT(value, want)                                                                          \
    assert_string_equal(text_message(logged(value, sizeof(value) - 1)), "tag=" want)

static void test_text_escapes_controls(void **state)
{
    (void)state;
    TEXT("a\nb", "a\\nb");
    TEXT("a\r\nb", "a\\r\\nb");
    TEXT("a\tb", "a\tb"); /* tab stays: it cannot forge a line */
    TEXT("\x1b[2J", "\\x1b[2J");
    TEXT("\x07\x01\x1f\x7f", "\\x07\\x01\\x1f\\x7f");
    TEXT("back\\slash", "back\\slash"); /* not doubled */
    /* C1 controls, U+0080..U+009F, escaped; U+00A0 is text */
    TEXT("\xc2\x80|\xc2\x9b|\xc2\x9f|\xc2\xa0", "\\u0080|\\u009b|\\u009f|\xc2\xa0");
    /* UTF-8 text as it is */
    TEXT("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92");
    /* bytes that are not UTF-8, one escape each */
    TEXT("\xff\xc0\xaf", "\\xff\\xc0\\xaf");
    TEXT("\xed\xa0\x80", "\\xed\\xa0\\x80");
    TEXT("x\xe2\x82", "x\\xe2\\x82"); /* a sequence cut by the end of the message */
}

static void test_text_forged_line_stays_one_line(void **state)
{
    (void)state;
    const char forged[] = "x\n2026-01-01 00:00:00 +0000 [error]: forged";
    const char *line = logged(forged, sizeof forged - 1);
    assert_string_equal(text_message(line), "tag=x\\n2026-01-01 00:00:00 +0000 [error]: forged");
}

static void test_json_escapes_controls(void **state)
{
    (void)state;
    weir_log_set_format(WEIR_LOG_FORMAT_JSON);
    const char v[] = "a\n\"b\"\\\x1b[2J\xc2\x9b\xc2\xa0\xff";
    const char *line = logged(v, sizeof v - 1);
    const char *want = "\"message\":\"tag=a\\n\\\"b\\\"\\\\\\u001b[2J\\u009b\xc2\xa0\\ufffd\"}\n";
    if (!strstr(line, want)) fail_msg("line %s lacks %s", line, want);
    assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_boundaries),
        cmocka_unit_test_setup_teardown(test_text_escapes_controls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_forged_line_stays_one_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_escapes_controls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
