/* Buffer placeholders (see include/weir/placeholder.h). Runs once per chunk, so clarity wins
 * over speed here: the strftime pass builds a formatter for the template each time.
 * Invariant: after the strftime pass over the template, ${...} and %{...} are replaced in one
 * scan that never looks at what it inserted, so a value from an event is never a placeholder. */
#include "weir/placeholder.h"

#include <stdlib.h>
#include <string.h>

#include "weir/format.h"
#include "weir/log.h"

void weir_placeholder_sanitize(const char *v, size_t n, weir_buf_t *out)
{
    if (n == 0) {
        weir_buf_putc(out, '_');
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        bool dotdot = ch == '.' && ((i > 0 && v[i - 1] == '.') || (i + 1 < n && v[i + 1] == '.'));
        if (ch == '/' || ch == '\\' || (unsigned char)ch < 0x20 || ch == 0x7f || dotdot) ch = '_';
        weir_buf_putc(out, ch);
    }
}

/* The N-th part of the tag (negative counts from the end), or NULL. */
static const char *tag_part(const char *tag, long n, size_t *len)
{
    size_t parts = 1;
    for (const char *p = tag; *p; p++)
        parts += *p == '.';
    if (n < 0) n += (long)parts;
    if (n < 0 || (size_t)n >= parts) return NULL;
    const char *s = tag;
    for (long i = 0; i < n; i++)
        s = strchr(s, '.') + 1;
    const char *e = strchr(s, '.');
    *len = e ? (size_t)(e - s) : strlen(s);
    return s;
}

static int strftime_pass(const char *tmpl, const weir_buffer_t *b, const weir_chunk_t *c,
                         weir_buf_t *out, weir_err_t *err)
{
    int64_t tk;
    if (!weir_chunk_timekey(c, &tk) || !strchr(tmpl, '%')) {
        weir_buf_append(out, tmpl, strlen(tmpl));
        return 0;
    }
    int off = weir_buffer_timekey_offset(b, tk);
    char zone[16];
    snprintf(zone, sizeof zone, "%c%02d:%02d", off < 0 ? '-' : '+', abs(off) / 3600,
             abs(off) % 3600 / 60);
    weir_timefmt_t tf;
    if (weir_timefmt_init(&tf, tmpl, false, weir_buffer_timekey_utc(b) ? NULL : zone, err) != 0)
        return -1;
    weir_time_t t = {(uint32_t)tk, 0};
    weir_timefmt_append(&tf, t, out);
    weir_timefmt_free(&tf);
    return 0;
}

/* The %{name} at p, if there is one: appends its value (or, when unknown, "" or the
 * placeholder itself with keep_unknown) and returns its length; 0 when p is not one. */
static size_t percent_one(const char *p, const weir_percent_vars_t *vars, bool keep_unknown,
                          weir_buf_t *out)
{
    const char *end = p[0] == '%' && p[1] == '{' ? strchr(p + 2, '}') : NULL;
    if (!end || end == p + 2) return 0;
    size_t len = (size_t)(end - p - 2), i = 0;
    for (; i < vars->n; i++)
        if (strlen(vars->names[i]) == len && memcmp(vars->names[i], p + 2, len) == 0) break;
    if (i < vars->n)
        weir_buf_append(out, vars->values[i], strlen(vars->values[i]));
    else if (keep_unknown)
        weir_buf_append(out, p, len + 3);
    return len + 3;
}

void weir_placeholders_percent(const char *s, const weir_percent_vars_t *vars, bool keep_unknown,
                               weir_buf_t *out)
{
    while (*s) {
        size_t n = percent_one(s, vars, keep_unknown, out);
        if (n == 0) weir_buf_putc(out, *s++);
        s += n;
    }
}

int weir_placeholders_expand(const char *tmpl, const weir_buffer_t *b, const weir_chunk_t *c,
                             weir_buf_t *out, weir_err_t *err)
{
    return weir_placeholders_expand_vars(tmpl, b, c, NULL, out, err);
}

int weir_placeholders_expand_vars(const char *tmpl, const weir_buffer_t *b, const weir_chunk_t *c,
                                  const weir_percent_vars_t *vars, weir_buf_t *out, weir_err_t *err)
{
    weir_buf_t s1;
    weir_buf_init(&s1);
    if (strftime_pass(tmpl, b, c, &s1, err) != 0) {
        weir_buf_free(&s1);
        return -1;
    }
    weir_buf_putc(&s1, '\0');
    const char *tag = weir_chunk_tag(c);
    bool chunk_id_done = false;
    int rc = 0;
    for (const char *p = s1.data; *p;) {
        size_t pn = vars ? percent_one(p, vars, false, out) : 0;
        if (pn) {
            p += pn;
            continue;
        }
        if (p[0] != '$' || p[1] != '{') {
            weir_buf_putc(out, *p++);
            continue;
        }
        const char *end = strchr(p + 2, '}');
        if (!end) {
            weir_err_set(err, "unterminated '${' in '%s'", tmpl);
            rc = -1;
            break;
        }
        size_t nlen = (size_t)(end - (p + 2));
        const char *name = p + 2;
        size_t vlen;
        const char *v = NULL;
        char *key = weir_strndup(name, nlen);
        if (tag && strcmp(key, "tag") == 0) {
            weir_placeholder_sanitize(tag, strlen(tag), out);
        } else if (tag && strncmp(key, "tag[", 4) == 0 && key[nlen - 1] == ']') {
            char *endn;
            long n = strtol(key + 4, &endn, 10);
            if (endn == key + nlen - 1 && (v = tag_part(tag, n, &vlen)))
                weir_placeholder_sanitize(v, vlen, out);
            else
                weir_buf_append(out, p, (size_t)(end - p) + 1);
        } else if (!chunk_id_done && strcmp(key, "chunk_id") == 0) {
            weir_buf_append(out, weir_chunk_id_hex(c), 32);
            chunk_id_done = true;
        } else if ((v = weir_chunk_var(c, key))) {
            weir_placeholder_sanitize(v, strlen(v), out);
        } else {
            weir_buf_append(out, p, (size_t)(end - p) + 1);
        }
        free(key);
        p = end + 1;
    }
    weir_buf_free(&s1);
    return rc;
}

void weir_placeholders_check(const char *what, const char *tmpl, const weir_buffer_t *b)
{
    if (strstr(tmpl, "${tag") && !weir_buffer_has_key(b, "tag"))
        weir_warn("%s '%s' uses ${tag} but tag is not a chunk key: it stays literal "
                  "(add tag to <buffer ...>)",
                  what, tmpl);
    if (weir_buffer_timekey(b) <= 0) {
        for (const char *p = strchr(tmpl, '%'); p; p = strchr(p + 2, '%')) {
            if (p[1] && p[1] != '{' && p[1] != '%') {
                weir_warn("%s '%s' has time directives but time is not a chunk key: they stay "
                          "literal (add time to <buffer ...>)",
                          what, tmpl);
                break;
            }
            if (!p[1]) break;
        }
    }
    for (const char *p = strstr(tmpl, "${"); p; p = strstr(p + 2, "${")) {
        const char *e = strchr(p, '}');
        if (!e) break;
        size_t n = (size_t)(e - p - 2);
        char *k = weir_strndup(p + 2, n);
        bool known = strcmp(k, "tag") == 0 || strncmp(k, "tag[", 4) == 0 ||
                     strcmp(k, "chunk_id") == 0 || weir_buffer_has_key(b, k);
        if (!known) weir_warn("%s '%s': ${%s} is not a chunk key; it stays literal", what, tmpl, k);
        free(k);
    }
}
