/* fluent.conf as Fluentd users write it: syntax, @include, "#{ENV[..]}", typed getters, the
 * unknown-parameter check, the masked dump, and every error message with its file:line:col. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/config/conf_internal.h"
#include "weir/config.h"
#include "weir/log.h"

#ifndef WEIR_TEST_DATA
#error "WEIR_TEST_DATA must name the test/data directory"
#endif

static weir_err_t err;

static weir_conf_section_t *parse_named(const char *text, const char *name)
{
    memset(&err, 0, sizeof err);
    weir_conf_section_t *root = weir_conf_parse_string(text, strlen(text), name, &err);
    if (!root) fail_msg("unexpected parse error: %s", err.msg);
    return root;
}

static weir_conf_section_t *parse(const char *text)
{
    return parse_named(text, "test.conf");
}

/* The message must start with "WHERE: " and contain every one of `words`. */
static void check_msg(const char *msg, const char *where, const char *const *words)
{
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s: ", where);
    if (strncmp(msg, prefix, strlen(prefix)) != 0)
        fail_msg("error \"%s\" does not start with \"%s\"", msg, prefix);
    for (; *words; words++)
        if (!strstr(msg, *words)) fail_msg("error \"%s\" lacks \"%s\"", msg, *words);
}

static void expect_error_(const char *text, size_t len, const char *where, const char *const *words)
{
    memset(&err, 0, sizeof err);
    weir_conf_section_t *root = weir_conf_parse_string(text, len, "test.conf", &err);
    if (root) {
        weir_conf_free(root);
        fail_msg("parsed, but an error at %s was expected", where);
    }
    check_msg(err.msg, where, words);
}

#define expect_error(text, where, ...)                                                             \
    expect_error_(text, strlen(text), where, (const char *const[]){__VA_ARGS__, NULL})
#define expect_msg(where, ...) check_msg(err.msg, where, (const char *const[]){__VA_ARGS__, NULL})

static const char *val(const weir_conf_section_t *s, const char *key)
{
    weir_conf_param_t *p = weir_conf_find(s, key);
    if (!p) fail_msg("no param '%s' in <%s>", key, s->name);
    return p->value;
}

static size_t count_children(const weir_conf_section_t *s, const char *name)
{
    size_t n = 0;
    while (weir_conf_child(s, name, n))
        n++;
    return n;
}

/* ---- a scratch directory for @include tests ---- */

static char tmpdir[64];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int make_tmpdir(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/weir_conf_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes tmpdir/rel and returns its path in a static buffer (valid until the next call). */
static const char *write_file(const char *rel, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static const char *tmp_path(const char *rel)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    return path;
}

/* ---- syntax ---- */

static void test_directives_and_args(void **state)
{
    weir_conf_section_t *root = parse("<system>\n"
                                      "  log_level info\n"
                                      "</system>\n"
                                      "<source>\n"
                                      "  @type forward\n"
                                      "</source>\n"
                                      "<filter app.**>\n"
                                      "  @type record_transformer\n"
                                      "</filter>\n"
                                      "<match  test.log   session.*.log  >\n"
                                      "  @type stdout\n"
                                      "</match>\n"
                                      "<label @FLUENT_LOG>\n"
                                      "  <match fluent.*>\n"
                                      "    @type null\n"
                                      "  </match>\n"
                                      "</label>\n"
                                      "<worker 0>\n"
                                      "  <source>\n"
                                      "    @type http\n"
                                      "  </source>\n"
                                      "</worker>\n");
    assert_string_equal(root->name, "ROOT");
    assert_null(root->parent);
    assert_int_equal(root->nchildren, 6);
    const char *names[] = {"system", "source", "filter", "match", "label", "worker"};
    const char *args[] = {"", "", "app.**", "test.log   session.*.log", "@FLUENT_LOG", "0"};
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(root->children[i]->name, names[i]);
        assert_string_equal(root->children[i]->arg, args[i]);
        assert_ptr_equal(root->children[i]->parent, root);
    }
    weir_conf_section_t *label = weir_conf_child(root, "label", 0);
    weir_conf_section_t *m = weir_conf_child(label, "match", 0);
    assert_string_equal(m->arg, "fluent.*");
    assert_string_equal(val(m, "@type"), "null");
    assert_int_equal(m->line, 14);
    assert_int_equal(m->col, 3);
    assert_string_equal(m->file, "test.conf");
    assert_string_equal(
        val(weir_conf_child(weir_conf_child(root, "worker", 0), "source", 0), "@type"), "http");
    weir_conf_free(root);
}

static void test_nested_sections(void **state)
{
    weir_conf_section_t *root = parse("<match **>\n"
                                      "  @type forward\n"
                                      "  <security>\n"
                                      "    self_hostname me\n"
                                      "    shared_key k\n"
                                      "    <user>\n"
                                      "      username a\n"
                                      "    </user>\n"
                                      "    <user>\n"
                                      "      username b\n"
                                      "    </user>\n"
                                      "  </security>\n"
                                      "  <server>\n"
                                      "    host 10.0.0.1\n"
                                      "  </server>\n"
                                      "  <buffer tag,time>\n"
                                      "    @type file\n"
                                      "  </buffer>\n"
                                      "  <anything_at_all x>\n"
                                      "    <deeper>\n"
                                      "    </deeper>\n"
                                      "  </anything_at_all>\n"
                                      "</match>\n");
    weir_conf_section_t *m = weir_conf_child(root, "match", 0);
    weir_conf_section_t *sec = weir_conf_child(m, "security", 0);
    assert_int_equal(count_children(sec, "user"), 2);
    assert_string_equal(val(weir_conf_child(sec, "user", 1), "username"), "b");
    assert_null(weir_conf_child(sec, "user", 2));
    assert_string_equal(weir_conf_child(m, "buffer", 0)->arg, "tag,time");
    assert_non_null(weir_conf_child(weir_conf_child(m, "anything_at_all", 0), "deeper", 0));
    /* NULL as the name walks every child in order. */
    assert_string_equal(weir_conf_child(m, NULL, 0)->name, "security");
    assert_string_equal(weir_conf_child(m, NULL, 3)->name, "anything_at_all");
    assert_null(weir_conf_child(m, NULL, 4));
    weir_conf_free(root);
}

static void test_bare_values_and_comments(void **state)
{
    weir_conf_section_t *root = parse("# a comment line\n"
                                      "   # an indented one\n"
                                      "\n"
                                      "<source> # after a tag\n"
                                      "  path /var/log/a#b\n"
                                      "  port 24224   # trailing comment\n"
                                      "  tab\tvalue\t# after a tab\n"
                                      "  format %Y-%m-%d %H:%M:%S  \n"
                                      "  hash_in_value a #b #c\n"
                                      "  url http://x/#frag\n"
                                      "  embedded #{not_ruby}\n"
                                      "</source> # after a close\n");
    weir_conf_section_t *s = weir_conf_child(root, "source", 0);
    assert_string_equal(val(s, "path"), "/var/log/a#b");
    assert_string_equal(val(s, "port"), "24224");
    assert_string_equal(val(s, "tab"), "value");
    assert_string_equal(val(s, "format"), "%Y-%m-%d %H:%M:%S");
    assert_string_equal(val(s, "hash_in_value"), "a");
    assert_string_equal(val(s, "url"), "http://x/#frag");
    assert_string_equal(val(s, "embedded"), "#{not_ruby}"); /* a leading '#' is text */
    weir_conf_param_t *p = weir_conf_find(s, "port");
    assert_int_equal(p->line, 6);
    assert_int_equal(p->col, 3);
    weir_conf_free(root);
}

static void test_bare_key(void **state)
{
    weir_conf_section_t *root = parse("<source>\n"
                                      "  flag\n"
                                      "  flag_with_blanks   \n"
                                      "  flag_with_comment   # as Fluentd: a value\n"
                                      "  last</source>\n"
                                      "</source>\n");
    weir_conf_section_t *s = weir_conf_child(root, "source", 0);
    assert_string_equal(val(s, "flag"), "");
    assert_string_equal(val(s, "flag_with_blanks"), "");
    /* Fluentd reads a '#' that starts a value as text, and its bool type takes that as true. */
    assert_string_equal(val(s, "flag_with_comment"), "# as Fluentd: a value");
    /* A key runs to the first blank, so "last</source>" is one key, as in Fluentd. */
    assert_string_equal(val(s, "last</source>"), "");
    bool b = false;
    assert_int_equal(weir_conf_get_bool(s, "flag", &b, &err), 1);
    assert_true(b);
    b = false;
    assert_int_equal(weir_conf_get_bool(s, "flag_with_comment", &b, &err), 1);
    assert_true(b);
    weir_conf_free(root);
}

static void test_single_quoted(void **state)
{
    weir_conf_section_t *root = parse("a 'it\\'s'\n"
                                      "b 'back\\\\slash \\n stays'\n"
                                      "c '#{ENV[\"HOME\"]} # not a comment'  # a comment\n"
                                      "d ''\n"
                                      "e '  padded  '\n");
    assert_string_equal(val(root, "a"), "it's");
    assert_string_equal(val(root, "b"), "back\\slash \\n stays");
    assert_string_equal(val(root, "c"), "#{ENV[\"HOME\"]} # not a comment");
    assert_string_equal(val(root, "d"), "");
    assert_string_equal(val(root, "e"), "  padded  ");
    weir_conf_free(root);
}

static void test_double_quoted_escapes(void **state)
{
    weir_conf_section_t *root =
        parse("a \"q\\\" b\\\\ n\\n t\\t r\\r f\\f b\\b v\\v a\\a e\\e s\\s\"\n"
              "b \"\\# \\{ \\$ \\' \\/\"   # symbols stand for themselves\n"
              "c \"\\#{not code}\"\n"
              "d \"  # not a comment  \"\n");
    assert_string_equal(val(root, "a"), "q\" b\\ n\n t\t r\r f\f b\b v\v a\a e\x1b s ");
    assert_string_equal(val(root, "b"), "# { $ ' /");
    assert_string_equal(val(root, "c"), "#{not code}");
    assert_string_equal(val(root, "d"), "  # not a comment  ");
    weir_conf_free(root);
}

static void test_double_quoted_spans_lines(void **state)
{
    weir_conf_section_t *root = parse("a \"line one\n"
                                      "line two\"\n"
                                      "b \"joined \\\n"
                                      "here\"\n"
                                      "c after\n");
    assert_string_equal(val(root, "a"), "line one\nline two");
    assert_string_equal(val(root, "b"), "joined here");
    weir_conf_param_t *c = weir_conf_find(root, "c");
    assert_int_equal(c->line, 5);
    weir_conf_free(root);
}

static void test_json_array_spans_lines(void **state)
{
    weir_conf_section_t *root = parse("<source>\n"
                                      "  one [\"a\", \"b\"]\n"
                                      "  many [\n"
                                      "    \"x\",  # first\n"
                                      "    \"y # not a comment\",\n"
                                      "    1.50, true, null, [1, {\"k\": \"v\"}]\n"
                                      "  ]   # end\n"
                                      "  empty []\n"
                                      "  after 1\n"
                                      "</source>\n");
    weir_conf_section_t *s = weir_conf_child(root, "source", 0);
    assert_string_equal(val(s, "one"), "[\"a\", \"b\"]");
    assert_string_equal(val(s, "many"), "[\n    \"x\",\n    \"y # not a comment\",\n"
                                        "    1.50, true, null, [1, {\"k\": \"v\"}]\n  ]");
    assert_string_equal(val(s, "empty"), "[]");
    assert_int_equal(weir_conf_find(s, "after")->line, 9);
    char **v;
    size_t n;
    assert_int_equal(weir_conf_get_array(s, "many", &v, &n, &err), 1);
    assert_int_equal(n, 6);
    assert_string_equal(v[0], "x");
    assert_string_equal(v[1], "y # not a comment");
    assert_string_equal(v[2], "1.50"); /* numbers keep the text written */
    assert_string_equal(v[3], "true");
    assert_string_equal(v[4], "null");
    assert_string_equal(v[5], "[1, {\"k\": \"v\"}]");
    weir_conf_strv_free(v, n);
    weir_conf_free(root);
}

static void test_json_hash_spans_lines(void **state)
{
    weir_conf_section_t *root = parse("h {\n"
                                      "  \"a\": \"1\",  # comment\n"
                                      "  \"b\\u00e9\": 2,\n"
                                      "  \"c\": {\"nested\": [1]}\n"
                                      "}\n");
    char **k, **v;
    size_t n;
    assert_int_equal(weir_conf_get_hash(root, "h", &k, &v, &n, &err), 1);
    assert_int_equal(n, 3);
    assert_string_equal(k[0], "a");
    assert_string_equal(v[0], "1");
    assert_string_equal(k[1], "b\xc3\xa9");
    assert_string_equal(v[1], "2");
    assert_string_equal(k[2], "c");
    assert_string_equal(v[2], "{\"nested\": [1]}");
    weir_conf_strv_free(k, n);
    weir_conf_strv_free(v, n);
    weir_conf_free(root);
}

static void test_at_params_are_params(void **state)
{
    weir_conf_section_t *root = parse("<match **>\n"
                                      "  @type \"s3\"\n"
                                      "  @id out_s3\n"
                                      "  @label @OTHER\n"
                                      "  @log_level debug\n"
                                      "</match>\n");
    weir_conf_section_t *m = weir_conf_child(root, "match", 0);
    assert_int_equal(m->nparams, 4);
    assert_string_equal(val(m, "@type"), "s3");
    assert_string_equal(val(m, "@id"), "out_s3");
    assert_string_equal(val(m, "@label"), "@OTHER");
    assert_string_equal(val(m, "@log_level"), "debug");
    weir_conf_free(root);
}

static void test_crlf_line_ends(void **state)
{
    weir_conf_section_t *root = parse("<source>\r\n"
                                      "  port 24224\r\n"
                                      "  flag\r\n"
                                      "  s \"x\"\r\n"
                                      "</source>\r\n");
    weir_conf_section_t *s = weir_conf_child(root, "source", 0);
    assert_string_equal(val(s, "port"), "24224");
    assert_string_equal(val(s, "flag"), "");
    assert_string_equal(val(s, "s"), "x");
    weir_conf_free(root);
}

static void test_long_line_is_not_truncated(void **state)
{
    size_t n = 300000;
    char *text = malloc(n + 64);
    strcpy(text, "k ");
    memset(text + 2, 'v', n);
    strcpy(text + 2 + n, "\nnext 1\n");
    weir_conf_section_t *root = parse(text);
    assert_int_equal(strlen(val(root, "k")), n);
    assert_string_equal(val(root, "next"), "1");
    weir_conf_free(root);
    free(text);
}

/* ---- "#{ENV[..]}" ---- */

static void test_env_expansion(void **state)
{
    setenv("WEIR_T_A", "alpha", 1);
    setenv("WEIR_T_B", "be ta", 1);
    unsetenv("WEIR_T_UNSET");
    weir_conf_section_t *root = parse("a \"#{ENV['WEIR_T_A']}\"\n"
                                      "b \"#{ENV[\"WEIR_T_B\"]}\"\n"
                                      "c \"x-#{ENV['WEIR_T_A']}-#{ ENV[ 'WEIR_T_B' ] }-y\"\n"
                                      "d \"#{ENV['WEIR_T_UNSET']}\"\n"
                                      "e 'single #{ENV[\"WEIR_T_A\"]}'\n"
                                      "f bare#{ENV['WEIR_T_A']}\n"
                                      "g bare #{ENV['WEIR_T_A']} is a comment\n");
    assert_string_equal(val(root, "a"), "alpha");
    assert_string_equal(val(root, "b"), "be ta");
    assert_string_equal(val(root, "c"), "x-alpha-be ta-y");
    assert_string_equal(val(root, "d"), ""); /* unset is "", as nil.to_s in Fluentd */
    assert_string_equal(val(root, "e"), "single #{ENV[\"WEIR_T_A\"]}");
    assert_string_equal(val(root, "f"), "bare#{ENV['WEIR_T_A']}");
    assert_string_equal(val(root, "g"), "bare");
    weir_conf_free(root);
}

static void test_error_embedded_ruby(void **state)
{
    expect_error("<source>\n  host \"#{Socket.gethostname}\"\n</source>\n", "test.conf:2:9",
                 "only #{ENV['NAME']} is supported in embedded Ruby", "Socket.gethostname");
    expect_error("x \"a #{1+1}\"\n", "test.conf:1:6", "only #{ENV['NAME']} is supported", "#{1+1}");
    expect_error("x \"#{ENV.fetch('A', 'b')}\"\n", "test.conf:1:4",
                 "only #{ENV['NAME']} is supported");
    expect_error("x \"#{ENV['A'}\"\n", "test.conf:1:4", "only #{ENV['NAME']} is supported");
}

static void test_error_unterminated_embedded(void **state)
{
    expect_error("x \"#{ENV['A']\"\ny 1\n", "test.conf:1:4", "unterminated #{", "'}'");
}

/* ---- syntax errors: each names file:line:col and what was expected ---- */

static void test_error_unterminated_double_quote(void **state)
{
    expect_error("<source>\n  tag \"abc\n</source>\n", "test.conf:2:7",
                 "unterminated double-quoted string", "closing \"");
    expect_error("x \"ends with backslash\\", "test.conf:1:3", "unterminated double-quoted string");
}

static void test_error_unterminated_single_quote(void **state)
{
    expect_error("a 1\nb 'abc\nc 2\n", "test.conf:2:3", "unterminated single-quoted string",
                 "closing '");
}

static void test_error_unclosed_section(void **state)
{
    expect_error("<source>\n  @type forward\n  <transport tls>\n  </transport>\n", "test.conf:1:1",
                 "<source> is never closed", "expected </source>", "end of the file");
    expect_error("<match a.**>\n  <buffer tag>\n</match>\n", "test.conf:3:1",
                 "expected </buffer> to close <buffer tag> opened at test.conf:2:3",
                 "got </match>");
}

static void test_error_mismatched_close(void **state)
{
    expect_error("<source>\n  port 1\n</match>\n", "test.conf:3:1",
                 "expected </source> to close <source> opened at test.conf:1:1", "got </match>");
}

static void test_error_stray_close(void **state)
{
    expect_error("a 1\n  </x>\n", "test.conf:2:3", "unexpected </x>", "no section is open");
}

static void test_error_unterminated_array(void **state)
{
    expect_error("<source>\n  tags [\"a\",\n    \"b\"\n", "test.conf:2:8",
                 "unterminated JSON array", "']'");
    /* Where the text goes on, the error is where the ']' was due, and names the opening. */
    expect_error("<source>\n  tags [\"a\",\n    \"b\"\n</source>\n", "test.conf:4:1",
                 "invalid JSON array (opened at test.conf:2:8)", "expected ',' or ']'");
    expect_error("h {\"a\": 1", "test.conf:1:3", "unterminated JSON hash", "'}'");
}

static void test_error_invalid_json(void **state)
{
    expect_error("tags [a, b]\n", "test.conf:1:7", "invalid JSON array", "expected a value");
    expect_error("tags [\"a\"\n  \"b\"]\n", "test.conf:2:3", "invalid JSON array",
                 "expected ',' or ']'");
    expect_error("tags [\"a\nb\"]\n", "test.conf:1:9", "a JSON string must end on the line");
    expect_error("h {\"a\" 1}\n", "test.conf:1:8", "invalid JSON hash", "expected ':'");
    expect_error("h {a: 1}\n", "test.conf:1:4", "expected a \"key\"");
    expect_error("tags [1] x\n", "test.conf:1:10", "expected end of line after the JSON array",
                 "got 'x'");
}

static void test_error_bad_escape(void **state)
{
    expect_error("a 1\nre \"\\d+\"\n", "test.conf:2:5", "unknown escape '\\d'",
                 "double-quoted string");
    expect_error("z \"\\0\"\n", "test.conf:1:4", "'\\0'", "NUL");
}

static void test_error_tag_syntax(void **state)
{
    expect_error("<source\n</source>\n", "test.conf:1:8", "expected '>' to end the tag <source");
    expect_error("<match a.**\n", "test.conf:1:12", "expected '>' to end the tag <match");
    expect_error("< source>\n", "test.conf:1:1", "expected a section name after '<'", "got ' '");
    expect_error("<sou-rce>\n", "test.conf:1:5", "unexpected '-' in the section name");
    expect_error("<source> port 1\n</source>\n", "test.conf:1:10",
                 "expected end of line after <source>", "got 'p'");
    expect_error("<source>\n</source x>\n", "test.conf:2:10",
                 "expected '>' to end the tag </source");
    expect_error("<source>\n</source> y\n", "test.conf:2:11",
                 "expected end of line after </source>");
}

static void test_error_text_after_quoted_value(void **state)
{
    expect_error("a \"x\" y\n", "test.conf:1:7", "expected end of line after the closing quote",
                 "got 'y'");
    expect_error("a 'x'y\n", "test.conf:1:6", "expected end of line after the closing quote");
}

static void test_error_nul_byte(void **state)
{
    static const char text[] = "a 1\nb x\0y\n";
    expect_error_(text, sizeof text - 1, "test.conf:2:4", (const char *const[]){"NUL byte", NULL});
}

/* ---- limits: exactly at each one, and one past ---- */

static char *nested(int depth)
{
    weir_buf_t b;
    weir_buf_init(&b);
    for (int i = 0; i < depth; i++)
        weir_buf_printf(&b, "%*s<s%d>\n", i, "", i + 1);
    for (int i = depth - 1; i >= 0; i--)
        weir_buf_printf(&b, "%*s</s%d>\n", i, "", i + 1);
    weir_buf_putc(&b, '\0');
    return b.data;
}

static void test_section_depth_limit(void **state)
{
    char *ok = nested(WEIR_CONF_MAX_DEPTH);
    weir_conf_section_t *root = parse(ok);
    const weir_conf_section_t *s = root;
    int depth = 0;
    while (s->nchildren) {
        s = s->children[0];
        depth++;
    }
    assert_int_equal(depth, WEIR_CONF_MAX_DEPTH);
    weir_conf_free(root);
    free(ok);

    char *deep = nested(WEIR_CONF_MAX_DEPTH + 1);
    expect_error(deep, "test.conf:33:33", "<s33> is nested 33 sections deep", "limit is 32");
    free(deep);
}

static char *json_nest(int depth)
{
    char *t = malloc((size_t)depth * 2 + 8);
    char *p = t;
    p += sprintf(p, "a ");
    for (int i = 0; i < depth; i++)
        *p++ = '[';
    for (int i = 0; i < depth; i++)
        *p++ = ']';
    strcpy(p, "\n");
    return t;
}

static void test_json_depth_limit(void **state)
{
    char *ok = json_nest(64);
    weir_conf_section_t *root = parse(ok);
    assert_int_equal(strlen(val(root, "a")), 128);
    weir_conf_free(root);
    free(ok);
    char *deep = json_nest(65);
    expect_error(deep, "test.conf:1:67", "JSON nested too deep", "64");
    free(deep);
}

static void test_file_size_limit(void **state)
{
    size_t n = WEIR_CONF_MAX_FILE_SIZE;
    char *text = malloc(n + 2);
    /* One long comment line: the size, not the content, is what is tested. */
    text[0] = '#';
    memset(text + 1, 'x', n);
    text[n - 1] = '\n';
    memset(&err, 0, sizeof err);
    weir_conf_section_t *root = weir_conf_parse_string(text, n, "big.conf", &err);
    if (!root) fail_msg("%s", err.msg);
    assert_int_equal(root->nparams + root->nchildren, 0);
    weir_conf_free(root);

    assert_null(weir_conf_parse_string(text, n + 1, "big.conf", &err));
    assert_non_null(strstr(err.msg, "big.conf"));
    assert_non_null(strstr(err.msg, "larger than 16777216 bytes"));

    /* The same limit applies to a file on disk. */
    FILE *f = fopen(tmp_path("big.conf"), "w");
    fwrite(text, 1, n + 1, f);
    fclose(f);
    assert_null(weir_conf_parse_file(tmp_path("big.conf"), &err));
    assert_non_null(strstr(err.msg, "larger than 16777216 bytes"));
    f = fopen(tmp_path("big.conf"), "w");
    fwrite(text, 1, n, f);
    fclose(f);
    root = weir_conf_parse_file(tmp_path("big.conf"), &err);
    assert_non_null(root);
    weir_conf_free(root);
    free(text);
}

/* ---- @include ---- */

static void test_include_relative_file(void **state)
{
    mkdir(tmp_path("conf.d"), 0700);
    write_file("conf.d/out.conf", "<match **>\n  @type stdout\n</match>\n");
    write_file("conf.d/extra.conf", "@include out.conf\n"); /* relative to conf.d/ */
    write_file("params.conf", "port 24224\n<transport tls>\n  cert_path /c\n</transport>\n");
    const char *main_path = write_file("main.conf", "<source>\n"
                                                    "  @type forward\n"
                                                    "  @include params.conf\n"
                                                    "  bind 0.0.0.0\n"
                                                    "</source>\n"
                                                    "@include conf.d/extra.conf\n");
    char main_copy[512];
    snprintf(main_copy, sizeof main_copy, "%s", main_path);
    weir_conf_section_t *root = weir_conf_parse_file(main_copy, &err);
    if (!root) fail_msg("%s", err.msg);
    weir_conf_section_t *src = weir_conf_child(root, "source", 0);
    assert_int_equal(src->nparams, 3);
    assert_string_equal(src->params[0].key, "@type");
    assert_string_equal(src->params[1].key, "port"); /* spliced in at the @include */
    assert_string_equal(src->params[2].key, "bind");
    assert_string_equal(src->params[1].file, tmp_path("params.conf"));
    assert_int_equal(src->params[1].line, 1);
    assert_string_equal(src->params[2].file, main_copy);
    weir_conf_section_t *tls = weir_conf_child(src, "transport", 0);
    assert_string_equal(val(tls, "cert_path"), "/c");
    assert_string_equal(tls->file, tmp_path("params.conf"));
    weir_conf_section_t *m = weir_conf_child(root, "match", 0);
    assert_non_null(m);
    assert_string_equal(m->file, tmp_path("conf.d/out.conf"));
    weir_conf_free(root);
}

static void test_include_glob_sorted(void **state)
{
    mkdir(tmp_path("g"), 0700);
    write_file("g/20-b.conf", "k b\n");
    write_file("g/10-a.conf", "k a\n");
    write_file("g/30-c.conf", "k c\n");
    write_file("g/ignored.txt", "k nope\n");
    char text[600];
    snprintf(text, sizeof text, "@include %s/g/*.conf\n@include %s/none/*.conf\n", tmpdir, tmpdir);
    weir_conf_section_t *root = parse(text);
    assert_int_equal(root->nparams, 3);
    assert_string_equal(root->params[0].value, "a");
    assert_string_equal(root->params[1].value, "b");
    assert_string_equal(root->params[2].value, "c");
    assert_string_equal(val(root, "k"), "c"); /* the last one wins */
    weir_conf_free(root);

    /* Relative globs resolve from the including file's directory, quoted paths work too. */
    char name[600];
    snprintf(name, sizeof name, "%s/main.conf", tmpdir);
    root = parse_named("@include \"g/1*.conf\"\n", name);
    assert_int_equal(root->nparams, 1);
    assert_string_equal(root->params[0].value, "a");
    weir_conf_free(root);
}

static void test_include_missing_file(void **state)
{
    char text[600];
    snprintf(text, sizeof text, "a 1\n  @include %s/nope.conf\n", tmpdir);
    char where[700];
    snprintf(where, sizeof where, "test.conf:2:3");
    expect_error(text, where, "@include", "nope.conf", "No such file or directory");
}

static void test_include_error_names_included_file(void **state)
{
    write_file("bad.conf", "ok 1\nbad \"unterminated\n");
    char text[600];
    snprintf(text, sizeof text, "<source>\n@include %s/bad.conf\n</source>\n", tmpdir);
    char where[700];
    snprintf(where, sizeof where, "%s/bad.conf:2:5", tmpdir);
    expect_error(text, where, "unterminated double-quoted string");
}

static void test_include_must_balance_sections(void **state)
{
    write_file("open.conf", "<buffer>\n");
    write_file("close.conf", "</source>\n");
    char text[600], where[700];
    snprintf(text, sizeof text, "<source>\n@include %s/open.conf\n</source>\n", tmpdir);
    snprintf(where, sizeof where, "%s/open.conf:1:1", tmpdir);
    expect_error(text, where, "<buffer> is never closed");
    snprintf(text, sizeof text, "<source>\n@include %s/close.conf\n</source>\n", tmpdir);
    snprintf(where, sizeof where, "%s/close.conf:1:1", tmpdir);
    expect_error(text, where, "unexpected </source>", "an included file must close");
}

static void test_include_depth_limit(void **state)
{
    /* inc0 includes inc1 ... includes incN, which holds a param. */
    char name[64], text[128];
    for (int i = 0; i <= WEIR_CONF_MAX_INCLUDE_DEPTH + 1; i++) {
        snprintf(name, sizeof name, "inc%d.conf", i);
        snprintf(text, sizeof text, "@include inc%d.conf\n", i + 1);
        write_file(name, text);
    }
    snprintf(name, sizeof name, "inc%d.conf", WEIR_CONF_MAX_INCLUDE_DEPTH);
    write_file(name, "leaf 1\n");
    /* main.conf -> inc1 -> ... -> inc16: 16 levels of @include, the limit. */
    char path[600];
    snprintf(path, sizeof path, "%s", tmp_path("inc1.conf"));
    weir_conf_section_t *root = parse_named("@include inc1.conf\n", tmp_path("main.conf"));
    assert_string_equal(val(root, "leaf"), "1");
    weir_conf_free(root);

    /* main.conf -> inc0 -> ... -> inc16: one more. */
    memset(&err, 0, sizeof err);
    const char *t = "@include inc0.conf\n";
    root = weir_conf_parse_string(t, strlen(t), tmp_path("main.conf"), &err);
    assert_null(root);
    char where[700];
    snprintf(where, sizeof where, "%s:1:1", tmp_path("inc15.conf"));
    expect_msg(where, "includes nested more than 16 deep", "include itself");

    /* A file including itself stops at the same limit. */
    write_file("self.conf", "@include self.conf\n");
    root = weir_conf_parse_file(tmp_path("self.conf"), &err);
    assert_null(root);
    assert_non_null(strstr(err.msg, "include itself"));
}

static void test_include_remote_not_supported(void **state)
{
    expect_error("\n@include http://example.com/fluent.conf\n", "test.conf:2:1",
                 "remote includes are not supported", "http://example.com/fluent.conf");
    expect_error("@include\n", "test.conf:1:1", "@include needs a file path");
}

/* The fuzz target's parser: an @include names a file beside the including one, or nothing. */
static void test_include_confined(void **state)
{
    write_file("side.conf", "k side\n");
    char name[600];
    snprintf(name, sizeof name, "%s", tmp_path("main.conf"));
    const char *t = "@include side.conf\n@include s*.conf\n";
    weir_conf_section_t *root = conf_parse_string_confined(t, strlen(t), name, &err);
    if (!root) fail_msg("%s", err.msg);
    assert_int_equal(root->nparams, 2);
    assert_string_equal(val(root, "k"), "side");
    weir_conf_free(root);
    static const char *const outside[] = {"@include /etc/hostname\n", "@include ../x.conf\n",
                                          "@include file:///dev/zero\n",
                                          "@include \"\\/etc/hostname\"\n"};
    for (size_t i = 0; i < sizeof outside / sizeof *outside; i++) {
        memset(&err, 0, sizeof err);
        root = conf_parse_string_confined(outside[i], strlen(outside[i]), name, &err);
        assert_null(root);
        char where[700];
        snprintf(where, sizeof where, "%s:1:1", name);
        expect_msg(where, "only a file name beside this file is allowed here");
    }
}

/* ---- getters ---- */

static weir_conf_section_t *one(const char *key, const char *value)
{
    char text[512];
    snprintf(text, sizeof text, "<source>\n  %s %s\n</source>\n", key, value);
    weir_conf_section_t *root = parse(text);
    return root;
}

#define SRC(root) weir_conf_child(root, "source", 0)

static void test_get_str_and_absent(void **state)
{
    weir_conf_section_t *root = one("tag", "app.log");
    const char *s = "default";
    int64_t i = 7;
    assert_int_equal(weir_conf_get_str(SRC(root), "nope", &s, &err), 0);
    assert_string_equal(s, "default");
    assert_int_equal(weir_conf_get_int(SRC(root), "nope", &i, &err), 0);
    assert_int_equal(i, 7);
    assert_false(SRC(root)->params[0].used);
    assert_int_equal(weir_conf_get_str(SRC(root), "tag", &s, &err), 1);
    assert_string_equal(s, "app.log");
    assert_true(SRC(root)->params[0].used);
    weir_conf_free(root);
}

static void test_get_int_and_float(void **state)
{
    static const struct {
        const char *text;
        int ok;
        int64_t v;
    } ints[] = {
        {"0", 1, 0},
        {"-12", 1, -12},
        {"+5", 1, 5},
        {"9223372036854775807", 1, INT64_MAX},
        {"-9223372036854775808", 1, INT64_MIN},
        {"9223372036854775808", -1, 0},
        {"10x", -1, 0},
        {"1.5", -1, 0},
        {"\"\"", -1, 0},
        {"abc", -1, 0},
    };
    for (size_t k = 0; k < sizeof ints / sizeof *ints; k++) {
        weir_conf_section_t *root = one("n", ints[k].text);
        int64_t v = 42;
        int rc = weir_conf_get_int(SRC(root), "n", &v, &err);
        if (rc != ints[k].ok) fail_msg("'%s': rc %d", ints[k].text, rc);
        if (rc == 1) assert_true(v == ints[k].v);
        if (rc < 0) expect_msg("test.conf:2:3", "n: expected an integer, got '");
        weir_conf_free(root);
    }
    weir_conf_section_t *root = one("f", "2.5e3");
    double d;
    assert_int_equal(weir_conf_get_float(SRC(root), "f", &d, &err), 1);
    assert_true(d == 2500.0);
    weir_conf_free(root);
    const char *bad[] = {"nan", "inf", "0x10", "1.5.5", "x"};
    for (size_t k = 0; k < 5; k++) {
        root = one("f", bad[k]);
        assert_int_equal(weir_conf_get_float(SRC(root), "f", &d, &err), -1);
        expect_msg("test.conf:2:3", "f: expected a number, got '", bad[k]);
        weir_conf_free(root);
    }
}

static void test_get_size(void **state)
{
    static const struct {
        const char *text;
        uint64_t v;
    } ok[] = {
        {"1024", 1024},
        {"256k", 256ull << 10},
        {"256K", 256ull << 10},
        {"8m", 8ull << 20},
        {"256MB", 256ull << 20},
        {"256mb", 256ull << 20},
        {"1g", 1ull << 30},
        {"1Gb", 1ull << 30},
        {"2t", 2ull << 40},
        {"2TB", 2ull << 40},
        {"0", 0},
    };
    for (size_t k = 0; k < sizeof ok / sizeof *ok; k++) {
        weir_conf_section_t *root = one("chunk_limit_size", ok[k].text);
        uint64_t v = 1;
        assert_int_equal(weir_conf_get_size(SRC(root), "chunk_limit_size", &v, &err), 1);
        if (v != ok[k].v) fail_msg("'%s' gave %llu", ok[k].text, (unsigned long long)v);
        weir_conf_free(root);
    }
    const char *bad[] = {"1.5m", "m", "-1", "8x", "8mbb", "8 m", "abc", "20000000t"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        weir_conf_section_t *root = one("chunk_limit_size", bad[k]);
        uint64_t v = 1;
        assert_int_equal(weir_conf_get_size(SRC(root), "chunk_limit_size", &v, &err), -1);
        assert_int_equal(v, 1);
        expect_msg("test.conf:2:3", "chunk_limit_size: ");
        weir_conf_free(root);
    }
}

static void test_get_time(void **state)
{
    static const struct {
        const char *text;
        double v;
    } ok[] = {
        {"10", 10},   {"1.5", 1.5},  {"30s", 30},  {"5m", 300},
        {"1h", 3600}, {"1d", 86400}, {"0.5m", 30}, {"0", 0},
    };
    for (size_t k = 0; k < sizeof ok / sizeof *ok; k++) {
        weir_conf_section_t *root = one("flush_interval", ok[k].text);
        double v = -1;
        assert_int_equal(weir_conf_get_time(SRC(root), "flush_interval", &v, &err), 1);
        if (v != ok[k].v) fail_msg("'%s' gave %g", ok[k].text, v);
        weir_conf_free(root);
    }
    const char *bad[] = {"1h30m", "abc", "10x", "1.", ".5", "-1", "1 h", "5M", "1e3"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        weir_conf_section_t *root = one("flush_interval", bad[k]);
        double v = -1;
        assert_int_equal(weir_conf_get_time(SRC(root), "flush_interval", &v, &err), -1);
        assert_true(v == -1);
        expect_msg("test.conf:2:3", "flush_interval: expected a time like", "got '", bad[k]);
        weir_conf_free(root);
    }
}

static void test_get_bool(void **state)
{
    weir_conf_section_t *root = parse("a true\nb yes\nc false\nd no\ne\nf 1\ng TRUE\n");
    bool v;
    const struct {
        const char *key;
        int rc;
        bool v;
    } cases[] = {{"a", 1, true}, {"b", 1, true}, {"c", 1, false}, {"d", 1, false},
                 {"e", 1, true}, {"f", -1, 0},   {"g", -1, 0}};
    for (size_t k = 0; k < 7; k++) {
        v = !cases[k].v;
        assert_int_equal(weir_conf_get_bool(root, cases[k].key, &v, &err), cases[k].rc);
        if (cases[k].rc == 1) assert_int_equal(v, cases[k].v);
    }
    expect_msg("test.conf:7:1", "g: expected true, yes, false or no, got 'TRUE'");
    weir_conf_free(root);
}

static void test_get_enum(void **state)
{
    static const char *const choices[] = {"gzip", "json", "txt", NULL};
    weir_conf_section_t *root = parse("store_as json\nbad zip\n");
    int v = -1;
    assert_int_equal(weir_conf_get_enum(root, "store_as", choices, &v, &err), 1);
    assert_int_equal(v, 1);
    v = -1;
    assert_int_equal(weir_conf_get_enum(root, "bad", choices, &v, &err), -1);
    assert_int_equal(v, -1);
    expect_msg("test.conf:2:1", "bad: expected one of gzip, json, txt, got 'zip'");
    weir_conf_free(root);
}

static void test_get_array(void **state)
{
    weir_conf_section_t *root = parse("a  x, y ,z\n"
                                      "b [\"x\", \"y\\n\", 3]\n"
                                      "c single\n"
                                      "d\n"
                                      "e a,,b,\n"
                                      "f \"[not json\"\n"
                                      "g \"[1,]\"\n");
    char **v;
    size_t n;
    assert_int_equal(weir_conf_get_array(root, "a", &v, &n, &err), 1);
    assert_int_equal(n, 3);
    assert_string_equal(v[0], "x");
    assert_string_equal(v[1], "y");
    assert_string_equal(v[2], "z");
    weir_conf_strv_free(v, n);
    assert_int_equal(weir_conf_get_array(root, "b", &v, &n, &err), 1);
    assert_int_equal(n, 3);
    assert_string_equal(v[1], "y\n");
    assert_string_equal(v[2], "3");
    weir_conf_strv_free(v, n);
    assert_int_equal(weir_conf_get_array(root, "c", &v, &n, &err), 1);
    assert_int_equal(n, 1);
    assert_string_equal(v[0], "single");
    weir_conf_strv_free(v, n);
    assert_int_equal(weir_conf_get_array(root, "d", &v, &n, &err), 1);
    assert_int_equal(n, 0);
    weir_conf_strv_free(v, n);
    assert_int_equal(weir_conf_get_array(root, "e", &v, &n, &err), 1);
    assert_int_equal(n, 3); /* as Ruby's split: the trailing empty element goes */
    assert_string_equal(v[1], "");
    weir_conf_strv_free(v, n);
    assert_int_equal(weir_conf_get_array(root, "f", &v, &n, &err), -1);
    expect_msg("test.conf:6:1", "f: expected a JSON array", "got '[not json'");
    assert_int_equal(weir_conf_get_array(root, "g", &v, &n, &err), -1);
    expect_msg("test.conf:7:1", "g: expected a JSON array", "got '[1,]'");
    weir_conf_free(root);
}

static void test_get_hash(void **state)
{
    weir_conf_section_t *root = parse("a k1:v1, k2 : v2:with:colons\n"
                                      "b {\"x\": \"1\", \"y\": [2]}\n"
                                      "c k1:v1,oops\n"
                                      "d \"{\\\"x\\\": }\"\n"
                                      "e\n");
    char **k, **v;
    size_t n;
    assert_int_equal(weir_conf_get_hash(root, "a", &k, &v, &n, &err), 1);
    assert_int_equal(n, 2);
    assert_string_equal(k[1], "k2");
    assert_string_equal(v[1], "v2:with:colons");
    weir_conf_strv_free(k, n);
    weir_conf_strv_free(v, n);
    assert_int_equal(weir_conf_get_hash(root, "b", &k, &v, &n, &err), 1);
    assert_int_equal(n, 2);
    assert_string_equal(k[0], "x");
    assert_string_equal(v[0], "1");
    assert_string_equal(v[1], "[2]");
    weir_conf_strv_free(k, n);
    weir_conf_strv_free(v, n);
    assert_int_equal(weir_conf_get_hash(root, "c", &k, &v, &n, &err), -1);
    expect_msg("test.conf:3:1", "c: expected k1:v1,k2:v2", "got 'k1:v1,oops'");
    assert_int_equal(weir_conf_get_hash(root, "d", &k, &v, &n, &err), -1);
    expect_msg("test.conf:4:1", "d: expected a JSON hash");
    assert_int_equal(weir_conf_get_hash(root, "e", &k, &v, &n, &err), 1);
    assert_int_equal(n, 0);
    weir_conf_strv_free(k, n);
    weir_conf_strv_free(v, n);
    weir_conf_free(root);
}

static void test_last_occurrence_wins(void **state)
{
    weir_conf_section_t *root = parse("<source>\n  port 1\n  port 2\n</source>\n");
    weir_conf_section_t *s = SRC(root);
    assert_int_equal(weir_conf_find(s, "port")->line, 3);
    int64_t port = 0;
    assert_int_equal(weir_conf_get_int(s, "port", &port, &err), 1);
    assert_int_equal(port, 2);
    weir_conf_section_use(s);
    /* The overridden "port 1" was read too, in effect: it is not an unknown parameter. */
    assert_int_equal(weir_conf_check_unused(root, &err), 0);
    weir_conf_free(root);
}

static void test_getter_error_masks_secrets(void **state)
{
    weir_conf_section_t *root = parse("shared_key hunter2\n");
    int64_t v;
    assert_int_equal(weir_conf_get_int(root, "shared_key", &v, &err), -1);
    expect_msg("test.conf:1:1", "shared_key: expected an integer", "got 'xxxxxx'");
    assert_null(strstr(err.msg, "hunter2"));
    weir_conf_free(root);
    root = parse("proxy_uri http://u:hunter3@proxy\n");
    assert_int_equal(weir_conf_get_int(root, "proxy_uri", &v, &err), -1);
    expect_msg("test.conf:1:1", "got 'http://u:xxxxxx@proxy'");
    weir_conf_free(root);
}

/* ---- the unknown-parameter check ---- */

static void test_check_unused_param(void **state)
{
    weir_conf_section_t *root = parse("<source>\n"
                                      "  @type forward\n"
                                      "  port 24224\n"
                                      "  prot 1\n"
                                      "</source>\n");
    weir_conf_section_t *s = SRC(root);
    const char *type;
    int64_t port;
    weir_conf_section_use(s);
    weir_conf_get_str(s, "@type", &type, &err);
    weir_conf_get_int(s, "port", &port, &err);
    assert_int_equal(weir_conf_check_unused(root, &err), -1);
    expect_msg("test.conf:4:3", "unknown parameter 'prot' in <source> (@type forward)");
    weir_conf_free(root);
}

static void test_check_unused_section(void **state)
{
    weir_conf_section_t *root = parse("<match test.log>\n"
                                      "  @type s3\n"
                                      "  <buffer time>\n"
                                      "    timekey 60\n"
                                      "  </buffer>\n"
                                      "  <foo>\n"
                                      "  </foo>\n"
                                      "</match>\n"
                                      "<bar x>\n"
                                      "</bar>\n");
    weir_conf_section_t *m = weir_conf_child(root, "match", 0);
    weir_conf_section_t *b = weir_conf_child(m, "buffer", 0);
    const char *type;
    double timekey;
    weir_conf_section_use(m);
    weir_conf_get_str(m, "@type", &type, &err);
    assert_int_equal(weir_conf_check_unused(root, &err), -1);
    expect_msg("test.conf:3:3", "unknown section <buffer time> in <match test.log> (@type s3)");
    weir_conf_section_use(b);
    assert_int_equal(weir_conf_check_unused(root, &err), -1);
    expect_msg("test.conf:4:5", "unknown parameter 'timekey' in <buffer time>");
    weir_conf_get_time(b, "timekey", &timekey, &err);
    assert_int_equal(weir_conf_check_unused(root, &err), -1);
    expect_msg("test.conf:6:3", "unknown section <foo> in <match test.log> (@type s3)");
    weir_conf_section_use(weir_conf_child(m, "foo", 0));
    assert_int_equal(weir_conf_check_unused(root, &err), -1);
    expect_msg("test.conf:9:1", "unknown section <bar x> at the top level");
    weir_conf_section_use(weir_conf_child(root, "bar", 0));
    assert_int_equal(weir_conf_check_unused(root, &err), 0);
    weir_conf_free(root);
}

static void test_check_unused_top_level_param(void **state)
{
    weir_conf_section_t *root = parse("\n  stray 1\n");
    assert_int_equal(weir_conf_check_unused(root, &err), -1);
    expect_msg("test.conf:2:3", "unknown parameter 'stray' at the top level");
    weir_conf_free(root);
}

static void test_check_unused_ignores_ruby_tuning(void **state)
{
    weir_conf_section_t *root = parse("<source>\n"
                                      "  @type http\n"
                                      "  blocking_timeout 0.5\n"
                                      "  <parse>\n"
                                      "    @type json\n"
                                      "    json_parser oj\n"
                                      "  </parse>\n"
                                      "</source>\n"
                                      "<source>\n"
                                      "  json_parser oj\n"
                                      "</source>\n");
    weir_conf_section_t *s = SRC(root);
    weir_conf_section_t *p = weir_conf_child(s, "parse", 0);
    const char *t;
    weir_conf_section_use(s);
    weir_conf_section_use(p);
    weir_conf_section_use(weir_conf_child(root, "source", 1));
    weir_conf_get_str(s, "@type", &t, &err);
    weir_conf_get_str(p, "@type", &t, &err);
    assert_int_equal(weir_conf_check_unused(root, &err), -1);
    /* json_parser means nothing in weir's <parse>, but it is no <source> parameter. */
    expect_msg("test.conf:10:3", "unknown parameter 'json_parser' in <source>");
    assert_true(weir_conf_find(p, "json_parser")->used);
    assert_true(weir_conf_find(s, "blocking_timeout")->used);
    weir_conf_free(root);
}

/* ---- dump ---- */

static char *dump(const weir_conf_section_t *s)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    weir_conf_dump(s, f);
    fclose(f);
    return text;
}

static void test_dump_masks_secrets(void **state)
{
    setenv("WEIR_T_SECRET", "topsecret", 1);
    weir_conf_section_t *root = parse("<match **>\n"
                                      "  @type s3\n"
                                      "  aws_key_id AKIAREAL\n"
                                      "  aws_sec_key \"#{ENV['WEIR_T_SECRET']}\"\n"
                                      "  custom_token abc123\n"
                                      "  <security>\n"
                                      "    shared_key sharedsecret\n"
                                      "    <user>\n"
                                      "      password pw\n"
                                      "    </user>\n"
                                      "  </security>\n"
                                      "  <transport tls>\n"
                                      "    private_key_passphrase pass\n"
                                      "  </transport>\n"
                                      "</match>\n");
    weir_conf_section_t *m = weir_conf_child(root, "match", 0);
    assert_true(weir_conf_find(m, "aws_sec_key")->secret);
    weir_conf_find(m, "custom_token")->secret = true; /* a plugin may mark its own */
    char *text = dump(root);
    const char *leaks[] = {"AKIAREAL", "topsecret", "sharedsecret", " pw", "pass\n", "abc123"};
    for (size_t i = 0; i < 6; i++)
        if (strstr(text, leaks[i])) fail_msg("dump shows '%s':\n%s", leaks[i], text);
    assert_non_null(strstr(text, "  aws_sec_key xxxxxx\n"));
    assert_non_null(strstr(text, "      password xxxxxx\n"));
    assert_non_null(strstr(text, "<match **>\n  @type s3\n"));
    /* The dump is a valid fluent.conf with the same shape. */
    weir_conf_section_t *again = parse(text);
    weir_conf_section_t *m2 = weir_conf_child(again, "match", 0);
    assert_string_equal(val(m2, "aws_key_id"), "xxxxxx");
    assert_string_equal(
        val(weir_conf_child(weir_conf_child(m2, "security", 0), "user", 0), "password"), "xxxxxx");
    weir_conf_free(again);
    free(text);
    weir_conf_free(root);
}

static void test_dump_masks_url_credentials(void **state)
{
    weir_conf_section_t *root = parse("<match **>\n"
                                      "  @type s3\n"
                                      "  proxy_uri http://proxyuser:proxypass@proxy:3128\n"
                                      "  endpoint https://s3.example.com/x@y\n"
                                      "  <assume_role_credentials>\n"
                                      "    external_id ext-3141\n"
                                      "    sts_http_proxy https://u:p%40ss@sts-proxy/\n"
                                      "    sts_endpoint_url https://TOKEN123@sts.example\n"
                                      "  </assume_role_credentials>\n"
                                      "  schemeless u2:pw2@host:8080\n"
                                      "  email alice@example.com\n"
                                      "  list http://a:s1@h1,http://b:s2@h2\n"
                                      "</match>\n");
    char *text = dump(root);
    const char *leaks[] = {"proxypass", "ext-3141", "p%40ss", "TOKEN123", "pw2", "s1", "s2"};
    for (size_t i = 0; i < sizeof leaks / sizeof *leaks; i++)
        if (strstr(text, leaks[i])) fail_msg("dump shows '%s':\n%s", leaks[i], text);
    const char *shown[] = {
        "  proxy_uri http://proxyuser:xxxxxx@proxy:3128\n",
        "  endpoint https://s3.example.com/x@y\n", /* an '@' in the path is no user */
        "    external_id xxxxxx\n",
        "    sts_http_proxy https://u:xxxxxx@sts-proxy/\n",
        "    sts_endpoint_url https://xxxxxx@sts.example\n", /* a lone user may be a token */
        "  schemeless u2:xxxxxx@host:8080\n",                /* curl takes proxies without scheme */
        "  email alice@example.com\n",
        "  list http://a:xxxxxx@h1,http://b:xxxxxx@h2\n",
    };
    for (size_t i = 0; i < sizeof shown / sizeof *shown; i++)
        if (!strstr(text, shown[i])) fail_msg("dump lacks '%s':\n%s", shown[i], text);
    free(text);
    weir_conf_free(root);
}

static void test_dump_round_trip(void **state)
{
    const char *src = "top 1\n"
                      "<source>\n"
                      "  a plain value\n"
                      "  b \"  padded \\\"quoted\\\" \\\\ \\n\\t\"\n"
                      "  c \"x #comment-like\"\n"
                      "  d \"\\#{not code}\"\n"
                      "  e [\"j\", 1,\n"
                      "     2]\n"
                      "  f \"[not json\"\n"
                      "  g\n"
                      "  h '#hash first'\n"
                      "  i \"[1, 2] \"\n" /* JSON, then a blank: found by fuzz_config */
                      "  j \"{}\\n\"\n"
                      "  <buffer tag,time>\n"
                      "    @type file\n"
                      "  </buffer>\n"
                      "</source>\n"
                      "<label @X>\n"
                      "</label>\n";
    weir_conf_section_t *root = parse(src);
    char *text = dump(root);
    weir_conf_section_t *again = parse(text);
    weir_conf_section_t *s1 = SRC(root), *s2 = SRC(again);
    assert_int_equal(s1->nparams, s2->nparams);
    for (size_t i = 0; i < s1->nparams; i++) {
        assert_string_equal(s1->params[i].key, s2->params[i].key);
        assert_string_equal(s1->params[i].value, s2->params[i].value);
    }
    assert_string_equal(val(again, "top"), "1");
    assert_string_equal(weir_conf_child(s2, "buffer", 0)->arg, "tag,time");
    assert_string_equal(weir_conf_child(again, "label", 0)->arg, "@X");
    weir_conf_free(again);
    free(text);

    /* Dumping one section writes just that section. */
    text = dump(weir_conf_child(s1, "buffer", 0));
    assert_string_equal(text, "<buffer tag,time>\n  @type file\n</buffer>\n");
    free(text);
    weir_conf_free(root);
}

/* ---- locations and messages ---- */

static void test_where_and_errorf(void **state)
{
    char where[64];
    weir_conf_where("a.conf", 3, 7, where, sizeof where);
    assert_string_equal(where, "a.conf:3:7");
    weir_conf_section_t *root = parse("<source>\n  port abc\n</source>\n");
    weir_conf_section_t *s = SRC(root);
    assert_int_equal(weir_conf_errorf(&err, &s->params[0], "port: %s", "out of range"), -1);
    assert_string_equal(err.msg, "test.conf:2:3: port: out of range");
    assert_int_equal(weir_conf_section_errorf(&err, s, "needs %s", "a port"), -1);
    assert_string_equal(err.msg, "test.conf:1:1: needs a port");
    weir_conf_free(root);
}

static void test_parse_file_missing(void **state)
{
    assert_null(weir_conf_parse_file("/nonexistent/fluent.conf", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/fluent.conf"));
    assert_non_null(strstr(err.msg, "No such file or directory"));
    assert_null(weir_conf_parse_file(tmpdir, &err));
    assert_non_null(strstr(err.msg, "is a directory"));
}

/* ---- the pipeline's own configuration ---- */

/* Reads every param and marks every section, as the plugins will; leaves `skip` unread. */
static void use_all(weir_conf_section_t *s, const char *skip)
{
    weir_conf_section_use(s);
    for (size_t i = 0; i < s->nparams; i++) {
        const char *v;
        if (strcmp(s->params[i].key, skip) != 0) weir_conf_get_str(s, s->params[i].key, &v, &err);
    }
    for (size_t i = 0; i < s->nchildren; i++)
        use_all(s->children[i], skip);
}

static void test_teleport_example(void **state)
{
    setenv("FLUENTD_KEY_PASSPHRASE", "key pass #1", 1);
    setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE", 1);
    unsetenv("AWS_SECRET_ACCESS_KEY");
    const char *path = WEIR_TEST_DATA "/config/teleport.conf";
    weir_conf_section_t *root = weir_conf_parse_file(path, &err);
    if (!root) fail_msg("%s", err.msg);
    assert_int_equal(count_children(root, "system"), 1);
    assert_int_equal(count_children(root, "source"), 2);
    assert_int_equal(count_children(root, "match"), 2);
    assert_int_equal(root->nchildren, 5);

    weir_conf_section_t *http = weir_conf_child(root, "source", 0);
    assert_string_equal(val(http, "@type"), "http");
    assert_string_equal(val(http, "@id"), "teleport_in");
    int64_t port = 0;
    assert_int_equal(weir_conf_get_int(http, "port", &port, &err), 1);
    assert_int_equal(port, 8888);
    weir_conf_section_t *tls = weir_conf_child(http, "transport", 0);
    assert_non_null(tls);
    assert_string_equal(tls->arg, "tls");
    assert_int_equal(tls->line, 16);
    assert_int_equal(tls->col, 3);
    assert_string_equal(tls->file, path);
    assert_string_equal(val(tls, "ca_path"), "/keys/ca.crt");
    weir_conf_param_t *pass = weir_conf_find(tls, "private_key_passphrase");
    assert_string_equal(pass->value, "key pass #1");
    assert_true(pass->secret);
    bool cca = false;
    assert_int_equal(weir_conf_get_bool(tls, "client_cert_auth", &cca, &err), 1);
    assert_true(cca);
    weir_conf_section_t *p = weir_conf_child(http, "parse", 0);
    assert_string_equal(val(p, "time_format"), "%Y-%m-%dT%H:%M:%S");
    assert_string_equal(val(p, "json_parser"), "oj");

    assert_string_equal(val(weir_conf_child(root, "source", 1), "@type"), "forward");

    weir_conf_section_t *s3 = weir_conf_child(root, "match", 0);
    assert_string_equal(s3->arg, "test.log session.*.log");
    assert_string_equal(val(s3, "aws_key_id"), "AKIAEXAMPLE");
    assert_string_equal(val(s3, "aws_sec_key"), "");
    assert_string_equal(val(s3, "s3_object_key_format"),
                        "%{path}%{time_slice}_%{index}.%{file_extension}");
    assert_string_equal(val(weir_conf_child(s3, "inject", 0), "time_format"),
                        "%Y-%m-%dT%H:%M:%S.%NZ");
    weir_conf_section_t *buf = weir_conf_child(s3, "buffer", 0);
    assert_string_equal(buf->arg, "tag,time");
    uint64_t chunk = 0;
    double timekey = 0;
    assert_int_equal(weir_conf_get_size(buf, "chunk_limit_size", &chunk, &err), 1);
    assert_true(chunk == 256ull << 20);
    assert_int_equal(weir_conf_get_time(buf, "timekey", &timekey, &err), 1);
    assert_true(timekey == 60);
    assert_string_equal(weir_conf_child(root, "match", 1)->arg, "**");

    /* Every plugin reads its params; nobody reads json_parser, and that is fine. */
    use_all(root, "json_parser");
    assert_false(weir_conf_find(p, "json_parser")->used);
    assert_int_equal(weir_conf_check_unused(root, &err), 0);
    assert_true(weir_conf_find(p, "json_parser")->used);

    char *text = dump(root);
    assert_null(strstr(text, "key pass"));
    assert_null(strstr(text, "AKIAEXAMPLE"));
    assert_non_null(strstr(text, "private_key_passphrase xxxxxx"));
    free(text);
    weir_conf_free(root);
}

int main(void)
{
    weir_log_set_level(WEIR_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_directives_and_args),
        cmocka_unit_test(test_nested_sections),
        cmocka_unit_test(test_bare_values_and_comments),
        cmocka_unit_test(test_bare_key),
        cmocka_unit_test(test_single_quoted),
        cmocka_unit_test(test_double_quoted_escapes),
        cmocka_unit_test(test_double_quoted_spans_lines),
        cmocka_unit_test(test_json_array_spans_lines),
        cmocka_unit_test(test_json_hash_spans_lines),
        cmocka_unit_test(test_at_params_are_params),
        cmocka_unit_test(test_crlf_line_ends),
        cmocka_unit_test(test_long_line_is_not_truncated),
        cmocka_unit_test(test_env_expansion),
        cmocka_unit_test(test_error_embedded_ruby),
        cmocka_unit_test(test_error_unterminated_embedded),
        cmocka_unit_test(test_error_unterminated_double_quote),
        cmocka_unit_test(test_error_unterminated_single_quote),
        cmocka_unit_test(test_error_unclosed_section),
        cmocka_unit_test(test_error_mismatched_close),
        cmocka_unit_test(test_error_stray_close),
        cmocka_unit_test(test_error_unterminated_array),
        cmocka_unit_test(test_error_invalid_json),
        cmocka_unit_test(test_error_bad_escape),
        cmocka_unit_test(test_error_tag_syntax),
        cmocka_unit_test(test_error_text_after_quoted_value),
        cmocka_unit_test(test_error_nul_byte),
        cmocka_unit_test(test_section_depth_limit),
        cmocka_unit_test(test_json_depth_limit),
        cmocka_unit_test_setup_teardown(test_file_size_limit, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_include_relative_file, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_include_glob_sorted, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_include_missing_file, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_include_error_names_included_file, make_tmpdir,
                                        remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_include_must_balance_sections, make_tmpdir,
                                        remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_include_depth_limit, make_tmpdir, remove_tmpdir),
        cmocka_unit_test(test_include_remote_not_supported),
        cmocka_unit_test_setup_teardown(test_include_confined, make_tmpdir, remove_tmpdir),
        cmocka_unit_test(test_get_str_and_absent),
        cmocka_unit_test(test_get_int_and_float),
        cmocka_unit_test(test_get_size),
        cmocka_unit_test(test_get_time),
        cmocka_unit_test(test_get_bool),
        cmocka_unit_test(test_get_enum),
        cmocka_unit_test(test_get_array),
        cmocka_unit_test(test_get_hash),
        cmocka_unit_test(test_last_occurrence_wins),
        cmocka_unit_test(test_getter_error_masks_secrets),
        cmocka_unit_test(test_check_unused_param),
        cmocka_unit_test(test_check_unused_section),
        cmocka_unit_test(test_check_unused_top_level_param),
        cmocka_unit_test(test_check_unused_ignores_ruby_tuning),
        cmocka_unit_test(test_dump_masks_secrets),
        cmocka_unit_test(test_dump_masks_url_credentials),
        cmocka_unit_test(test_dump_round_trip),
        cmocka_unit_test(test_where_and_errorf),
        cmocka_unit_test_setup_teardown(test_parse_file_missing, make_tmpdir, remove_tmpdir),
        cmocka_unit_test(test_teleport_example),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
