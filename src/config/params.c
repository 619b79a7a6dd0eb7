/* Typed access to parameters, with Fluentd's value syntax and stricter checking: where Ruby's
 * to_i turns "10x" into 10 and "1h30m" into an hour, weir refuses the value and says what it
 * expected. Invariant: a getter marks the key used only when it is present, and marks every
 * occurrence of it, so an earlier duplicate that the last one overrides is not reported as
 * unknown by weir_conf_check_unused(). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conf_internal.h"

/* Finds the param (the last occurrence wins) and marks all of them used. */
static weir_conf_param_t *use(weir_conf_section_t *s, const char *key)
{
    weir_conf_param_t *last = NULL;
    for (size_t i = 0; i < s->nparams; i++)
        if (strcmp(s->params[i].key, key) == 0) {
            s->params[i].used = true;
            last = &s->params[i];
        }
    return last;
}

/* "FILE:LINE:COL: key: expected WHAT, got 'VALUE'", the value cut short and secrets masked. */
static int bad_value(weir_err_t *err, const weir_conf_param_t *p, const char *what)
{
    char *v = weir_conf_value_shown(p);
    int n = (int)strlen(v);
    weir_conf_errorf(err, p, "%s: expected %s, got '%.*s%s'", p->key, what, n > 80 ? 80 : n, v,
                     n > 80 ? "..." : "");
    free(v);
    return -1;
}

int weir_conf_get_str(weir_conf_section_t *s, const char *key, const char **out, weir_err_t *err)
{
    weir_conf_param_t *p = use(s, key);
    if (!p) return 0;
    *out = p->value;
    return 1;
}

/* Parses an unsigned decimal run at *pp into *v; false if none or it overflows. */
static bool parse_u64(const char **pp, uint64_t *v)
{
    const char *p = *pp;
    uint64_t x = 0;
    if (!isdigit((unsigned char)*p)) return false;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (x > (UINT64_MAX - d) / 10) return false;
        x = x * 10 + d;
    }
    *pp = p;
    *v = x;
    return true;
}

int weir_conf_get_int(weir_conf_section_t *s, const char *key, int64_t *out, weir_err_t *err)
{
    weir_conf_param_t *p = use(s, key);
    if (!p) return 0;
    const char *v = p->value;
    bool neg = *v == '-';
    if (*v == '-' || *v == '+') v++;
    uint64_t x;
    if (!parse_u64(&v, &x) || *v || x > (uint64_t)INT64_MAX + neg)
        return bad_value(err, p, "an integer");
    *out = neg ? (int64_t)(0 - x) : (int64_t)x;
    return 1;
}

int weir_conf_get_size(weir_conf_section_t *s, const char *key, uint64_t *out, weir_err_t *err)
{
    static const char what[] = "a size in bytes like 1024, 256k, 8m, 256MB or 1g";
    weir_conf_param_t *p = use(s, key);
    if (!p) return 0;
    const char *v = p->value;
    uint64_t x;
    if (!parse_u64(&v, &x)) return bad_value(err, p, what);
    unsigned shift = 0;
    const char *units = "kmgt", *u = *v ? strchr(units, tolower((unsigned char)*v)) : NULL;
    if (u) {
        shift = 10 * (unsigned)(u - units + 1);
        v++;
        if (*v == 'b' || *v == 'B') v++;
    }
    if (*v) return bad_value(err, p, what);
    if (shift && x > (UINT64_MAX >> shift))
        return weir_conf_errorf(err, p, "%s: '%s' is too large", p->key, p->value);
    *out = x << shift;
    return 1;
}

/* An unsigned decimal number with an optional fraction ("10", "1.5"); no sign, no exponent. */
static bool parse_decimal(const char **pp, double *out)
{
    const char *p = *pp;
    if (!isdigit((unsigned char)*p)) return false;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    char *end;
    errno = 0;
    *out = strtod(*pp, &end);
    if (end != p || !isfinite(*out)) return false;
    *pp = p;
    return true;
}

int weir_conf_get_time(weir_conf_section_t *s, const char *key, double *out, weir_err_t *err)
{
    static const char what[] = "a time like 10, 1.5, 30s, 5m, 1h or 1d (one unit only)";
    weir_conf_param_t *p = use(s, key);
    if (!p) return 0;
    const char *v = p->value;
    double x;
    if (!parse_decimal(&v, &x)) return bad_value(err, p, what);
    double mult = 1;
    switch (*v) {
    case 's':
        mult = 1;
        v++;
        break;
    case 'm':
        mult = 60;
        v++;
        break;
    case 'h':
        mult = 3600;
        v++;
        break;
    case 'd':
        mult = 86400;
        v++;
        break;
    }
    if (*v) return bad_value(err, p, what);
    *out = x * mult;
    return 1;
}

int weir_conf_get_float(weir_conf_section_t *s, const char *key, double *out, weir_err_t *err)
{
    weir_conf_param_t *p = use(s, key);
    if (!p) return 0;
    const char *v = p->value;
    /* strtod also takes "inf", "nan" and hex floats; a config number is plain decimal. */
    bool plain = *v != '\0' && strspn(v, "0123456789+-.eE") == strlen(v);
    char *end;
    double x = plain ? strtod(v, &end) : 0;
    if (!plain || *end || !isfinite(x)) return bad_value(err, p, "a number");
    *out = x;
    return 1;
}

int weir_conf_get_bool(weir_conf_section_t *s, const char *key, bool *out, weir_err_t *err)
{
    weir_conf_param_t *p = use(s, key);
    if (!p) return 0;
    const char *v = p->value;
    /* A bare key means true; so does "key # comment", whose value is "# comment" in Fluentd's
     * syntax and which Fluentd's own bool type reads as true for that reason. */
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !*v || *v == '#') {
        *out = true;
    } else if (!strcmp(v, "false") || !strcmp(v, "no")) {
        *out = false;
    } else {
        return bad_value(err, p, "true, yes, false or no");
    }
    return 1;
}

int weir_conf_get_enum(weir_conf_section_t *s, const char *key, const char *const *choices,
                       int *out, weir_err_t *err)
{
    weir_conf_param_t *p = use(s, key);
    if (!p) return 0;
    weir_buf_t list;
    weir_buf_init(&list);
    for (int i = 0; choices[i]; i++) {
        if (strcmp(p->value, choices[i]) == 0) {
            weir_buf_free(&list);
            *out = i;
            return 1;
        }
        weir_buf_printf(&list, "%s%s", i ? ", " : "", choices[i]);
    }
    weir_buf_putc(&list, '\0');
    char what[WEIR_ERR_MAX];
    snprintf(what, sizeof what, "one of %s", list.data);
    weir_buf_free(&list);
    return bad_value(err, p, what);
}

void weir_conf_strv_free(char **v, size_t n)
{
    if (!v) return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* A growable vector of strings; the capacity is implicit as in parser.c's grow(). */
static void strv_push(char ***v, size_t *n, char *s)
{
    if (*n == 0 || (*n & (*n - 1)) == 0) *v = weir_realloc(*v, (*n ? 2 * *n : 1) * sizeof **v);
    (*v)[(*n)++] = s;
}

/* One JSON element as the string a caller wants: a string decoded, anything else (a number,
 * true, null, a nested array) as the text the user wrote. NULL for a string holding \u0000. */
static char *json_element(const char *start, const char *end)
{
    if (*start != '"') return weir_strndup(start, (size_t)(end - start));
    weir_buf_t b;
    weir_buf_init(&b);
    if (!conf_json_decode_string(start, end, &b)) {
        weir_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* Splits a JSON array (keys == NULL) or hash into strings. On failure sets *why; what was
 * already split stays in the vectors for the caller to free. */
static bool split_json(const char *text, char ***keys, size_t *nk, char ***vals, size_t *nv,
                       const char **why)
{
    char close = keys ? '}' : ']';
    conf_json_t j = {.p = text, .end = text + strlen(text)};
    conf_json_ws(&j);
    conf_json_t whole = j;
    if (!conf_json_value(&whole, 0)) {
        *why = whole.err_msg;
        return false;
    }
    conf_json_ws(&whole);
    if (whole.p != whole.end) {
        *why = "text after the closing bracket";
        return false;
    }
    /* Valid from here on, so the walk below needs no checks. */
    j.p++;
    for (;;) {
        conf_json_ws(&j);
        if (*j.p == close) return true;
        if (keys) {
            const char *k = j.p;
            conf_json_value(&j, 1);
            char *ks = json_element(k, j.p);
            if (!ks) break;
            strv_push(keys, nk, ks);
            conf_json_ws(&j);
            j.p++; /* ':' */
            conf_json_ws(&j);
        }
        const char *v = j.p;
        conf_json_value(&j, 1);
        char *vs = json_element(v, j.p);
        if (!vs) break;
        strv_push(vals, nv, vs);
        conf_json_ws(&j);
        if (*j.p == ',') j.p++;
    }
    *why = "\\u0000 cannot be carried in a C string";
    return false;
}

static char *trimmed(const char *p, const char *end)
{
    while (p < end && isspace((unsigned char)*p))
        p++;
    while (end > p && isspace((unsigned char)end[-1]))
        end--;
    return weir_strndup(p, (size_t)(end - p));
}

/* "a, b ,c" -> a b c. As Ruby's split, trailing empty elements are dropped ("a,b," has 2). */
static void split_commas(const char *v, char ***out, size_t *n)
{
    const char *p = v;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        strv_push(out, n, trimmed(p, end));
        if (!comma) break;
        p = comma + 1;
    }
    while (*n > 0 && (*out)[*n - 1][0] == '\0')
        free((*out)[--*n]);
}

static bool starts_with(const char *v, char c)
{
    while (isspace((unsigned char)*v))
        v++;
    return *v == c;
}

int weir_conf_get_array(weir_conf_section_t *s, const char *key, char ***out, size_t *n,
                        weir_err_t *err)
{
    weir_conf_param_t *p = use(s, key);
    if (!p) return 0;
    char **v = NULL;
    size_t count = 0;
    if (starts_with(p->value, '[')) {
        const char *why;
        if (!split_json(p->value, NULL, NULL, &v, &count, &why)) {
            weir_conf_strv_free(v, count);
            char what[WEIR_ERR_MAX];
            snprintf(what, sizeof what, "a JSON array (%s) or a comma-separated list", why);
            return bad_value(err, p, what);
        }
    } else {
        split_commas(p->value, &v, &count);
    }
    *out = v;
    *n = count;
    return 1;
}

/* "k1:v1, k2:v2": every element needs its ':'; keys and values are trimmed. */
static bool split_pairs(const char *text, char ***keys, size_t *nk, char ***vals, size_t *nv)
{
    char **items = NULL;
    size_t count = 0;
    split_commas(text, &items, &count);
    bool ok = true;
    for (size_t i = 0; i < count; i++) {
        char *colon = strchr(items[i], ':');
        if (!colon) {
            ok = false;
            break;
        }
        strv_push(keys, nk, trimmed(items[i], colon));
        strv_push(vals, nv, trimmed(colon + 1, colon + strlen(colon)));
    }
    weir_conf_strv_free(items, count);
    return ok;
}

int weir_conf_get_hash(weir_conf_section_t *s, const char *key, char ***keys, char ***values,
                       size_t *n, weir_err_t *err)
{
    weir_conf_param_t *p = use(s, key);
    if (!p) return 0;
    char **k = NULL, **v = NULL;
    size_t nk = 0, nv = 0;
    char what[WEIR_ERR_MAX];
    bool ok;
    if (starts_with(p->value, '{')) {
        const char *why = "";
        ok = split_json(p->value, &k, &nk, &v, &nv, &why);
        snprintf(what, sizeof what, "a JSON hash (%s) or k1:v1,k2:v2", why);
    } else {
        ok = split_pairs(p->value, &k, &nk, &v, &nv);
        snprintf(what, sizeof what, "k1:v1,k2:v2 (every element with a ':') or a JSON hash");
    }
    if (!ok) {
        weir_conf_strv_free(k, nk);
        weir_conf_strv_free(v, nv);
        return bad_value(err, p, what);
    }
    *keys = k;
    *values = v;
    *n = nv;
    return 1;
}
