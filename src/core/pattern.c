/* Tag patterns, compiled once to POSIX extended regular expressions anchored at both ends.
 * A glob is translated piece by piece ("*" -> "[^.]*", "**." -> "(.*\.)?", ".**" at the end ->
 * "(\..*)?", "**" -> ".*"), and "{a,b}" becomes "(a|b)". Matching then costs one regexec;
 * the router caches results per tag, so this is off the per-event path. */
#include "weir/pattern.h"

#include <regex.h>
#include <stdlib.h>
#include <string.h>

struct weir_pattern {
    regex_t *res;
    size_t n;
};

static void put_literal(weir_buf_t *re, char c)
{
    if (strchr(".[]()|*+?{}^$\\", c)) weir_buf_putc(re, '\\');
    weir_buf_putc(re, c);
}

/* Translates the glob g[0..len) into `re`. Returns 0, or -1 with err set. */
static int glob_to_re(const char *g, size_t len, weir_buf_t *re, weir_err_t *err)
{
    int braces = 0;
    for (size_t i = 0; i < len; i++) {
        char c = g[i];
        if (c == '*') {
            if (i + 1 < len && g[i + 1] == '*') {
                if (i + 2 < len && g[i + 2] == '.') {
                    weir_buf_append(re, "(.*\\.)?", 7);
                    i += 2;
                } else {
                    weir_buf_append(re, ".*", 2);
                    i += 1;
                }
            } else {
                weir_buf_append(re, "[^.]*", 5);
            }
        } else if (c == '.' && i + 2 < len && g[i + 1] == '*' && g[i + 2] == '*' &&
                   (i + 3 == len || g[i + 3] == '}' || g[i + 3] == ',')) {
            weir_buf_append(re, "(\\..*)?", 7);
            i += 2;
        } else if (c == '{') {
            braces++;
            weir_buf_putc(re, '(');
        } else if (c == ',' && braces > 0) {
            weir_buf_putc(re, '|');
        } else if (c == '}') {
            if (braces == 0) {
                weir_err_set(err, "unbalanced '}' in pattern '%.*s'", (int)len, g);
                return -1;
            }
            braces--;
            weir_buf_putc(re, ')');
        } else {
            put_literal(re, c);
        }
    }
    if (braces != 0) {
        weir_err_set(err, "unbalanced '{' in pattern '%.*s'", (int)len, g);
        return -1;
    }
    return 0;
}

static int add_one(weir_pattern_t *p, const char *g, size_t len, weir_err_t *err)
{
    if (p->n >= WEIR_PATTERN_MAX_ALTERNATIVES) {
        weir_err_set(err, "too many patterns (limit %d)", WEIR_PATTERN_MAX_ALTERNATIVES);
        return -1;
    }
    weir_buf_t re;
    weir_buf_init(&re);
    weir_buf_putc(&re, '^');
    int rc = 0;
    if (len >= 2 && g[0] == '/' && g[len - 1] == '/') {
        weir_buf_append(&re, g + 1, len - 2);
    } else {
        rc = glob_to_re(g, len, &re, err);
    }
    weir_buf_append(&re, "$", 2); /* with the NUL */
    if (rc == 0) {
        int e = regcomp(&p->res[p->n], re.data, REG_EXTENDED | REG_NOSUB);
        if (e != 0) {
            char msg[128];
            regerror(e, &p->res[p->n], msg, sizeof msg);
            weir_err_set(err, "bad pattern '%.*s': %s", (int)len, g, msg);
            rc = -1;
        } else {
            p->n++;
        }
    }
    weir_buf_free(&re);
    return rc;
}

weir_pattern_t *weir_pattern_compile(const char *text, weir_err_t *err)
{
    size_t tlen = strlen(text);
    if (tlen > WEIR_PATTERN_MAX_LEN) {
        weir_err_set(err, "pattern longer than %d bytes", WEIR_PATTERN_MAX_LEN);
        return NULL;
    }
    weir_pattern_t *p = weir_calloc(1, sizeof *p);
    p->res = weir_calloc(WEIR_PATTERN_MAX_ALTERNATIVES, sizeof *p->res);
    const char *s = text;
    while (*s) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s) break;
        const char *e = s;
        /* a /regex/ may contain spaces; a glob ends at whitespace */
        if (*s == '/') {
            e = strchr(s + 1, '/');
            e = e ? e + 1 : s + strlen(s);
        } else {
            while (*e && *e != ' ' && *e != '\t')
                e++;
        }
        if (add_one(p, s, (size_t)(e - s), err) != 0) goto err;
        s = e;
    }
    if (p->n == 0) {
        weir_err_set(err, "empty pattern");
        goto err;
    }
    return p;
err:
    weir_pattern_free(p);
    return NULL;
}

bool weir_pattern_match(const weir_pattern_t *p, const char *tag)
{
    for (size_t i = 0; i < p->n; i++)
        if (regexec(&p->res[i], tag, 0, NULL, 0) == 0) return true;
    return false;
}

void weir_pattern_free(weir_pattern_t *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++)
        regfree(&p->res[i]);
    free(p->res);
    free(p);
}
