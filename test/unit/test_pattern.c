/* Tag patterns as Fluentd's <match> reads them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "weir/pattern.h"

static bool m(const char *pattern, const char *tag)
{
    weir_err_t err;
    weir_pattern_t *p = weir_pattern_compile(pattern, &err);
    assert_non_null(p);
    bool r = weir_pattern_match(p, tag);
    weir_pattern_free(p);
    return r;
}

static void test_literal(void **state)
{
    assert_true(m("test.log", "test.log"));
    assert_false(m("test.log", "test.logs"));
    assert_false(m("test.log", "testxlog")); /* '.' is literal, not "any char" */
    assert_false(m("test.log", "a.test.log"));
}

static void test_star_is_one_part(void **state)
{
    assert_true(m("a.*", "a.b"));
    assert_false(m("a.*", "a.b.c"));
    assert_false(m("a.*", "a"));
    assert_true(m("session.*.log", "session.a2836fe1-51b5-4ab6-994e-f2f32eb97dc5.log"));
    assert_false(m("session.*.log", "session.log.a2836fe1.log"));
    assert_true(m("*.log", "x.log"));
}

static void test_double_star(void **state)
{
    assert_true(m("**", "a"));
    assert_true(m("**", "a.b.c"));
    assert_true(m("a.**", "a"));
    assert_true(m("a.**", "a.b"));
    assert_true(m("a.**", "a.b.c"));
    assert_false(m("a.**", "ab"));
    assert_true(m("**.log", "log"));
    assert_true(m("**.log", "x.y.log"));
    assert_false(m("**.log", "xlog"));
    assert_true(m("a.**.z", "a.z"));
    assert_true(m("a.**.z", "a.b.c.z"));
    assert_false(m("a.**.z", "a.bz"));
}

static void test_braces(void **state)
{
    assert_true(m("{a,b}.c", "a.c"));
    assert_true(m("{a,b}.c", "b.c"));
    assert_false(m("{a,b}.c", "ab.c"));
    assert_true(m("x.{a.*,b}", "x.a.q"));
    assert_true(m("{x,{y,z}}.end", "z.end"));
}

static void test_several_patterns(void **state)
{
    assert_true(m("test.log session.*.log", "test.log"));
    assert_true(m("test.log session.*.log", "session.s1.log"));
    assert_false(m("test.log session.*.log", "events.log"));
    assert_true(m("  a   b  ", "b"));
}

static void test_regex(void **state)
{
    assert_true(m("/^app\\.(web|api)$/", "app.web"));
    assert_false(m("/app\\.(web|api)/", "app.db"));
}

static void test_special_chars_are_literal(void **state)
{
    assert_true(m("a+b", "a+b"));
    assert_false(m("a+b", "aab"));
    assert_true(m("a$b", "a$b"));
}

static void test_errors(void **state)
{
    weir_err_t err;
    assert_null(weir_pattern_compile("{a,b", &err));
    assert_non_null(strstr(err.msg, "unbalanced '{'"));
    assert_null(weir_pattern_compile("a}", &err));
    assert_non_null(strstr(err.msg, "unbalanced '}'"));
    assert_null(weir_pattern_compile("   ", &err));
    assert_non_null(strstr(err.msg, "empty pattern"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal),
        cmocka_unit_test(test_star_is_one_part),
        cmocka_unit_test(test_double_star),
        cmocka_unit_test(test_braces),
        cmocka_unit_test(test_several_patterns),
        cmocka_unit_test(test_regex),
        cmocka_unit_test(test_special_chars_are_literal),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
