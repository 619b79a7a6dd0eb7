/* Parsers for what credential sources answer: the shared credentials and config files, the
 * JSON documents of EC2 instance metadata and ECS, STS's XML, and S3's error bodies.
 *
 * These are pure functions over bytes, so each format has unit tests. The XML reader is not a
 * general parser: it finds the first <tag>...</tag> element and decodes the five predefined
 * entities, which is all STS and S3 responses need. Secrets pass through these functions but
 * never into an error message: messages name keys, never values. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "weir/s3.h"

void s3_creds_free(s3_creds_t *c)
{
    if (c->secret_key) memset(c->secret_key, 0, strlen(c->secret_key));
    if (c->token) memset(c->token, 0, strlen(c->token));
    free(c->access_key);
    free(c->secret_key);
    free(c->token);
    memset(c, 0, sizeof *c);
}

void s3_creds_set(s3_creds_t *c, const char *key, const char *secret, const char *token,
                  int64_t expiration)
{
    s3_creds_free(c);
    c->access_key = weir_strdup(key);
    c->secret_key = weir_strdup(secret);
    c->token = token && *token ? weir_strdup(token) : NULL;
    c->expiration = expiration;
}

void s3_creds_copy(s3_creds_t *dst, const s3_creds_t *src)
{
    if (!src->access_key) {
        s3_creds_free(dst);
        return;
    }
    s3_creds_set(dst, src->access_key, src->secret_key, src->token, src->expiration);
}

/* ---- ini files --------------------------------------------------------------------------- */

static void trim(const char **s, const char **e)
{
    while (*s < *e && (**s == ' ' || **s == '\t' || **s == '\r'))
        (*s)++;
    while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\r'))
        (*e)--;
}

static bool span_eq(const char *s, const char *e, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(e - s) == n && strncasecmp(s, word, n) == 0;
}

/* Does the section header text [s, e) name `profile`? */
static bool section_matches(const char *s, const char *e, const char *profile, bool config_file)
{
    if (!config_file) return (size_t)(e - s) == strlen(profile) && !strncmp(s, profile, e - s);
    if (strcmp(profile, "default") == 0 && span_eq(s, e, "default")) return true;
    if (e - s < 8 || strncmp(s, "profile", 7) != 0 || (s[7] != ' ' && s[7] != '\t')) return false;
    s += 8;
    trim(&s, &e);
    return (size_t)(e - s) == strlen(profile) && !strncmp(s, profile, e - s);
}

int s3_creds_parse_ini(const char *text, size_t len, const char *profile, bool config_file,
                       s3_creds_t *out, weir_err_t *err)
{
    const char *p = text, *end = text + len;
    bool in = false, found = false;
    char *key = NULL, *secret = NULL, *token = NULL;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *s = p, *e = nl ? nl : end;
        p = nl ? nl + 1 : end;
        trim(&s, &e);
        if (s == e || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            const char *close = memchr(s, ']', (size_t)(e - s));
            if (!close) continue;
            const char *ns = s + 1, *ne = close;
            trim(&ns, &ne);
            in = section_matches(ns, ne, profile, config_file);
            found |= in;
            continue;
        }
        if (!in) continue;
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (!eq) continue;
        const char *ks = s, *ke = eq, *vs = eq + 1, *ve = e;
        trim(&ks, &ke);
        trim(&vs, &ve);
        char **slot = span_eq(ks, ke, "aws_access_key_id")       ? &key
                      : span_eq(ks, ke, "aws_secret_access_key") ? &secret
                      : span_eq(ks, ke, "aws_session_token")     ? &token
                                                                 : NULL;
        if (!slot) continue;
        free(*slot);
        *slot = weir_strndup(vs, (size_t)(ve - vs));
    }
    int rc = 0;
    if (found && key && *key && secret && *secret) {
        s3_creds_set(out, key, secret, token, 0);
        rc = 1;
    } else if (found) {
        weir_err_set(err, "profile '%s' has no %s", profile,
                     key && *key ? "aws_secret_access_key" : "aws_access_key_id");
        rc = -1;
    }
    free(key);
    if (secret) memset(secret, 0, strlen(secret));
    free(secret);
    if (token) memset(token, 0, strlen(token));
    free(token);
    return rc;
}

/* ---- dates ------------------------------------------------------------------------------- */

int s3_parse_iso8601(const char *s, int64_t *out)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
        return -1;
    const char *p = s + n;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            continue;
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (sscanf(p + 1, "%2d:%2d", &oh, &om) != 2) return -1;
        off = (oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return -1;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    *out = (int64_t)timegm(&tm) - off;
    return 0;
}

/* ---- JSON (IMDS, ECS) -------------------------------------------------------------------- */

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int s3_creds_parse_json(const char *text, size_t len, s3_creds_t *out, weir_err_t *err)
{
    json_error_t je;
    json_t *o = json_loadb(text, len, 0, &je);
    if (!o || !json_is_object(o)) {
        weir_err_set(err, "credentials document is not a JSON object");
        json_decref(o);
        return -1;
    }
    int rc = -1;
    const char *code = jstr(o, "Code");
    const char *key = jstr(o, "AccessKeyId"), *secret = jstr(o, "SecretAccessKey");
    const char *token = jstr(o, "Token"), *exp = jstr(o, "Expiration");
    int64_t expiration = 0;
    if (code && strcmp(code, "Success") != 0) {
        const char *msg = jstr(o, "Message");
        weir_err_set(err, "credentials document says %s%s%s", code, msg ? ": " : "",
                     msg ? msg : "");
    } else if (!key || !*key || !secret || !*secret) {
        weir_err_set(err, "credentials document has no %s",
                     key && *key ? "SecretAccessKey" : "AccessKeyId");
    } else if (exp && s3_parse_iso8601(exp, &expiration) != 0) {
        weir_err_set(err, "credentials document has a malformed Expiration '%s'", exp);
    } else {
        s3_creds_set(out, key, secret, token, expiration);
        rc = 0;
    }
    json_decref(o);
    return rc;
}

/* ---- XML (STS, S3 errors) ---------------------------------------------------------------- */

static void xml_decode(const char *s, size_t n, weir_buf_t *out)
{
    static const struct {
        const char *ent;
        char ch;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    for (size_t i = 0; i < n;) {
        size_t j = 0;
        if (s[i] == '&') {
            for (; j < sizeof ents / sizeof *ents; j++) {
                size_t el = strlen(ents[j].ent);
                if (i + el <= n && memcmp(s + i, ents[j].ent, el) == 0) {
                    weir_buf_putc(out, ents[j].ch);
                    i += el;
                    break;
                }
            }
            if (j < sizeof ents / sizeof *ents) continue;
        }
        weir_buf_putc(out, s[i++]);
    }
}

/* The raw bytes between the first <tag> and the </tag> after it. */
static bool xml_span(const char *xml, size_t len, const char *tag, const char **v, size_t *n)
{
    char open[96], close[96];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    size_t ol = strlen(open), cl = strlen(close);
    const char *end = xml + len;
    const char *s = memmem(xml, len, open, ol);
    if (!s) return false;
    const char *b = s + ol;
    const char *e = memmem(b, (size_t)(end - b), close, cl);
    if (!e) return false;
    *v = b;
    *n = (size_t)(e - b);
    return true;
}

int s3_xml_text(const char *xml, size_t len, const char *tag, weir_buf_t *out)
{
    const char *v;
    size_t n;
    if (!xml || !xml_span(xml, len, tag, &v, &n)) return 0;
    xml_decode(v, n, out);
    return 1;
}

void s3_error_summary(const char *xml, size_t len, weir_buf_t *out)
{
    weir_buf_t code, msg;
    weir_buf_init(&code);
    weir_buf_init(&msg);
    if (xml && s3_xml_text(xml, len, "Code", &code) == 1) {
        weir_buf_append(out, code.data, code.len);
        if (s3_xml_text(xml, len, "Message", &msg) == 1 && msg.len) {
            weir_buf_printf(out, ": ");
            weir_buf_append(out, msg.data, msg.len);
        }
    }
    weir_buf_free(&code);
    weir_buf_free(&msg);
}

int s3_creds_parse_sts(const char *xml, size_t len, s3_creds_t *out, weir_err_t *err)
{
    weir_buf_t key, secret, token, exp;
    weir_buf_init(&key);
    weir_buf_init(&secret);
    weir_buf_init(&token);
    weir_buf_init(&exp);
    int rc = -1;
    int64_t expiration = 0;
    const char *cv;
    size_t cn;
    if (!xml_span(xml, len, "Credentials", &cv, &cn)) {
        weir_buf_t sum;
        weir_buf_init(&sum);
        s3_error_summary(xml, len, &sum);
        weir_buf_putc(&sum, '\0');
        weir_err_set(err, "STS answered without credentials%s%s", sum.len > 1 ? ": " : "",
                     sum.data);
        weir_buf_free(&sum);
        goto out;
    }
    if (s3_xml_text(cv, cn, "AccessKeyId", &key) != 1 ||
        s3_xml_text(cv, cn, "SecretAccessKey", &secret) != 1 || !key.len || !secret.len) {
        weir_err_set(err, "STS credentials lack AccessKeyId or SecretAccessKey");
        goto out;
    }
    s3_xml_text(cv, cn, "SessionToken", &token);
    if (s3_xml_text(cv, cn, "Expiration", &exp) == 1) {
        weir_buf_putc(&exp, '\0');
        if (s3_parse_iso8601(exp.data, &expiration) != 0) {
            weir_err_set(err, "STS credentials have a malformed Expiration '%s'", exp.data);
            goto out;
        }
    }
    weir_buf_putc(&key, '\0');
    weir_buf_putc(&secret, '\0');
    weir_buf_putc(&token, '\0');
    s3_creds_set(out, key.data, secret.data, token.data, expiration);
    rc = 0;
out:
    if (secret.data) memset(secret.data, 0, secret.len);
    if (token.data) memset(token.data, 0, token.len);
    weir_buf_free(&key);
    weir_buf_free(&secret);
    weir_buf_free(&token);
    weir_buf_free(&exp);
    return rc;
}
