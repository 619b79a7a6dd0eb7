/* The fluent.conf lexer: blanks and comments, and the four kinds of parameter value.
 *
 *   key bare text to the end of the line   # a '#' after whitespace starts a comment
 *   key 'single: only \' and \\ are escapes, #{ stays text'
 *   key "double: \n \t \" ... and #{ENV['NAME']}, may span lines"
 *   key ["json", "array"]  or  {"json": "hash"}, may span lines, '#' comments between tokens
 *
 * This follows Fluentd's literal parser (lib/fluent/config/literal_parser.rb) in what it
 * accepts, down to its quirk that a '#' which starts a value is text (`key #x` has the value
 * "#x"), except that embedded Ruby is limited to reading the environment. Invariant: the cursor
 * moves only through conf_src_next(), so its line and column are exact at every error. */
#include <stdlib.h>
#include <string.h>

#include "conf_internal.h"

void conf_src_init(conf_src_t *s, const char *file, const char *text, size_t len)
{
    s->file = file;
    s->p = text;
    s->end = text + len;
    s->bol = text;
    s->line = 1;
}

int conf_src_errorf(const conf_src_t *s, conf_pos_t pos, weir_err_t *err, const char *fmt, ...)
{
    char msg[WEIR_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return conf_errorf_at(err, s->file, pos.line, pos.col, "%s", msg);
}

static void skip_to_eol(conf_src_t *s)
{
    while (s->p < s->end && *s->p != '\n')
        conf_src_next(s);
}

void conf_skip_blank(conf_src_t *s)
{
    for (;;) {
        int c = conf_src_peek(s);
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            conf_src_next(s);
        else if (c == '#')
            skip_to_eol(s);
        else
            return;
    }
}

void conf_skip_inline_space(conf_src_t *s)
{
    while (conf_src_peek(s) == ' ' || conf_src_peek(s) == '\t')
        conf_src_next(s);
}

/* A short, printable rendering of the character at the cursor, for "got ..." in messages. */
static const char *describe_char(const conf_src_t *s, char *buf, size_t n)
{
    int c = conf_src_peek(s);
    if (c == -1) return "end of file";
    if (c < 0x20 || c == 0x7f) {
        snprintf(buf, n, "byte 0x%02x", c);
        return buf;
    }
    snprintf(buf, n, "'%c'", c);
    return buf;
}

int conf_expect_line_end(conf_src_t *s, const char *after, weir_err_t *err)
{
    conf_skip_inline_space(s);
    if (conf_src_peek(s) == '#') skip_to_eol(s);
    if (conf_src_peek(s) == '\r' && conf_src_peek2(s) == '\n') conf_src_next(s);
    int c = conf_src_peek(s);
    if (c == -1) return 0;
    if (c == '\n') {
        conf_src_next(s);
        return 0;
    }
    char got[16];
    return conf_src_errorf(s, conf_src_pos(s), err, "expected end of line after %s, got %s", after,
                           describe_char(s, got, sizeof got));
}

/* Bare text runs to the end of the line; a '#' preceded by a space or tab starts a comment,
 * any other '#' is text (`path /a#b`, and a '#' that starts the value), as in Fluentd.
 * Trailing blanks are not part of it. */
static void scan_bare(conf_src_t *s, weir_buf_t *out)
{
    char prev = 'x';
    while (s->p < s->end && *s->p != '\n') {
        char c = *s->p;
        if (c == '#' && (prev == ' ' || prev == '\t')) break;
        weir_buf_putc(out, c);
        prev = c;
        conf_src_next(s);
    }
    while (out->len > 0) {
        char c = out->data[out->len - 1];
        if (c != ' ' && c != '\t' && c != '\r') break;
        out->len--;
    }
}

static int scan_single(conf_src_t *s, weir_buf_t *out, weir_err_t *err)
{
    conf_pos_t open = conf_src_pos(s);
    conf_src_next(s);
    for (;;) {
        int c = conf_src_peek(s);
        if (c == -1 || c == '\n')
            return conf_src_errorf(s, open, err,
                                   "unterminated single-quoted string: expected a closing ' "
                                   "before the end of the line");
        if (c == '\'') {
            conf_src_next(s);
            return 0;
        }
        if (c == '\\' && (conf_src_peek2(s) == '\'' || conf_src_peek2(s) == '\\')) {
            conf_src_next(s);
            c = conf_src_peek(s);
        }
        weir_buf_putc(out, (char)c);
        conf_src_next(s);
    }
}

/* The escapes of Fluentd's double-quoted strings, plus Ruby's \a \e \s \v. A letter or digit
 * that is not one of them is an error (a typo like "\d" must not pass silently); any other
 * character stands for itself, so "\#{" is a literal "#{" and "\\" a backslash. */
static int scan_escape(conf_src_t *s, weir_buf_t *out, weir_err_t *err)
{
    conf_pos_t at = conf_src_pos(s);
    conf_src_next(s); /* the backslash */
    int c = conf_src_peek(s);
    if (c == -1) return 1; /* the caller reports the unterminated string */
    static const char from[] = "nrtfbvaes", to[] = "\n\r\t\f\b\v\a\x1b ";
    const char *k = strchr(from, c);
    if (c == '0')
        return conf_src_errorf(s, at, err,
                               "escape '\\0' would put a NUL byte in the value, which weir "
                               "cannot carry");
    if (!k && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
        return conf_src_errorf(s, at, err,
                               "unknown escape '\\%c' in a double-quoted string (known: \\\" "
                               "\\\\ \\n \\r \\t \\f \\b \\v \\a \\e \\s; write \\\\ for a "
                               "backslash)",
                               c);
    weir_buf_putc(out, k ? to[k - from] : (char)c);
    conf_src_next(s);
    return 0;
}

/* `code` is the text between "#{" and "}". Accepts ENV['NAME'] and ENV["NAME"] with optional
 * blanks; returns the name's bounds, or false for any other Ruby. */
static bool parse_env_ref(const char *code, size_t len, const char **name, size_t *nlen)
{
    const char *p = code, *end = code + len;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (end - p < 7 || memcmp(p, "ENV[", 4) != 0 || end[-1] != ']') return false;
    p += 4;
    end--;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (end - p < 3 || (*p != '\'' && *p != '"') || end[-1] != *p) return false;
    *name = p + 1;
    *nlen = (size_t)(end - p - 2);
    if (*nlen == 0 || memchr(*name, *p, *nlen) || memchr(*name, '\\', *nlen)) return false;
    return true;
}

/* At "#{": finds the closing '}' (quotes inside the code may hold one), then substitutes the
 * environment variable. An unset variable gives "", as Ruby's nil.to_s does in Fluentd. */
static int scan_embedded(conf_src_t *s, weir_buf_t *out, weir_err_t *err)
{
    conf_pos_t at = conf_src_pos(s);
    conf_src_next(s);
    conf_src_next(s);
    const char *code = s->p;
    char quote = 0;
    while (s->p < s->end && *s->p != '\n' && (quote || *s->p != '}')) {
        if (quote && *s->p == '\\' && s->p + 1 < s->end && s->p[1] != '\n')
            conf_src_next(s);
        else if (quote && *s->p == quote)
            quote = 0;
        else if (!quote && (*s->p == '\'' || *s->p == '"'))
            quote = *s->p;
        conf_src_next(s);
    }
    if (conf_src_peek(s) != '}')
        return conf_src_errorf(s, at, err,
                               "unterminated #{...}: expected '}' on the same line; write \\#{ "
                               "for a literal #{");
    size_t len = (size_t)(s->p - code);
    conf_src_next(s);
    const char *name;
    size_t nlen;
    if (!parse_env_ref(code, len, &name, &nlen))
        return conf_src_errorf(s, at, err,
                               "only #{ENV['NAME']} is supported in embedded Ruby, got #{%.*s}",
                               len > 100 ? 100 : (int)len, code);
    char *var = weir_strndup(name, nlen);
    const char *val = getenv(var);
    free(var);
    if (val) weir_buf_append(out, val, strlen(val));
    return 0;
}

static int scan_double(conf_src_t *s, weir_buf_t *out, weir_err_t *err)
{
    conf_pos_t open = conf_src_pos(s);
    conf_src_next(s);
    for (;;) {
        int c = conf_src_peek(s);
        int rc = 0;
        if (c == '"') {
            conf_src_next(s);
            return 0;
        } else if (c == '\\' && conf_src_peek2(s) == '\n') {
            conf_src_next(s); /* a backslash at the end of a line joins the next one */
            conf_src_next(s);
        } else if (c == '\\' && conf_src_peek2(s) == '\r' && s->p + 2 < s->end && s->p[2] == '\n') {
            conf_src_next(s);
            conf_src_next(s);
            conf_src_next(s);
        } else if (c == '\\') {
            rc = scan_escape(s, out, err);
        } else if (c == '#' && conf_src_peek2(s) == '{') {
            rc = scan_embedded(s, out, err);
        } else if (c != -1) {
            weir_buf_putc(out, (char)c); /* a raw newline is kept, as in Fluentd */
            conf_src_next(s);
        } else {
            rc = 1;
        }
        if (rc < 0) return -1;
        if (rc > 0)
            return conf_src_errorf(s, open, err,
                                   "unterminated double-quoted string: expected a closing \" "
                                   "before the end of the file (a double-quoted string may "
                                   "span lines)");
    }
}

/* Copies the JSON text [p, end) without its '#' comments (and the blanks before them). */
static void strip_json_comments(const char *p, const char *end, weir_buf_t *out)
{
    bool in_str = false;
    while (p < end) {
        char c = *p;
        if (in_str && c == '\\' && p + 1 < end) {
            weir_buf_append(out, p, 2);
            p += 2;
            continue;
        }
        if (c == '"') in_str = !in_str;
        if (c == '#' && !in_str) {
            while (out->len > 0 &&
                   (out->data[out->len - 1] == ' ' || out->data[out->len - 1] == '\t'))
                out->len--;
            while (p < end && *p != '\n')
                p++;
            continue;
        }
        weir_buf_putc(out, c);
        p++;
    }
}

/* A value starting with '[' or '{' is JSON and may span lines, as in Fluentd. It is checked
 * here so a typo is reported where it is, not when a plugin first reads the value. */
static int scan_json(conf_src_t *s, weir_buf_t *out, weir_err_t *err)
{
    conf_pos_t open = conf_src_pos(s);
    const char *what = *s->p == '[' ? "array" : "hash";
    char close = *s->p == '[' ? ']' : '}';
    conf_json_t j = {.p = s->p, .end = s->end, .comments = true};
    if (conf_json_value(&j, 0)) {
        strip_json_comments(s->p, j.p, out);
        while (s->p < j.p)
            conf_src_next(s);
        return 0;
    }
    if (j.err_at >= s->end)
        return conf_src_errorf(s, open, err,
                               "unterminated JSON %s: expected '%c' before the end of the file",
                               what, close);
    while (s->p < j.err_at)
        conf_src_next(s);
    return conf_src_errorf(s, conf_src_pos(s), err, "invalid JSON %s (opened at %s:%d:%d): %s",
                           what, s->file, open.line, open.col, j.err_msg);
}

static int scan_any(conf_src_t *s, char **out, bool json, weir_err_t *err)
{
    weir_buf_t b;
    weir_buf_init(&b);
    int c = conf_src_peek(s);
    int rc = 0;
    const char *after = "the closing quote";
    if (c == '"') {
        rc = scan_double(s, &b, err);
    } else if (c == '\'') {
        rc = scan_single(s, &b, err);
    } else if (json && (c == '[' || c == '{')) {
        rc = scan_json(s, &b, err);
        after = c == '[' ? "the JSON array" : "the JSON hash";
    } else {
        scan_bare(s, &b);
    }
    if (rc == 0) rc = conf_expect_line_end(s, after, err);
    if (rc < 0) {
        weir_buf_free(&b);
        return -1;
    }
    weir_buf_putc(&b, '\0');
    *out = b.data;
    return 0;
}

int conf_scan_value(conf_src_t *s, char **out, weir_err_t *err)
{
    return scan_any(s, out, true, err);
}

int conf_scan_string(conf_src_t *s, char **out, weir_err_t *err)
{
    return scan_any(s, out, false, err);
}
