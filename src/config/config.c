/* What is done with a parsed fluent.conf tree as a whole: locating things for messages, the
 * check that every param and section was read by somebody, and the dump with secrets masked
 * (weir_conf_value_shown: the one place that decides what of a value may be printed).
 *
 * Invariant: an unknown parameter is an error at start-up, never silently ignored. The one
 * exception is weir_conf_ignored_params below: params that tune how Fluentd's Ruby runs and
 * mean nothing to weir are accepted, with a debug line saying so. */
#include <stdlib.h>
#include <string.h>

#include "conf_internal.h"
#include "weir/log.h"

/* Params that exist in Fluentd only to tune its Ruby internals. `section` is the name of the
 * section they may appear in. Add one only when it really has no effect weir could honour. */
static const struct {
    const char *section;
    const char *key;
} weir_conf_ignored_params[] = {
    {"parse", "json_parser"},                   /* which Ruby gem decodes JSON: oj, yajl, json */
    {"format", "json_parser"},                  /* which Ruby gem encodes JSON */
    {"source", "blocking_timeout"},             /* cool.io event loop tick of in_forward/in_http */
    {"buffer", "flush_thread_interval"},        /* sleep of the Ruby flush threads when idle */
    {"buffer", "flush_thread_burst_interval"},  /* their sleep between queued chunks */
    {"system", "suppress_repeated_stacktrace"}, /* Ruby backtraces in the log */
    {"system", "emit_error_log_interval"},      /* Ruby emit error backtrace throttling */
    {"system", "enable_msgpack_time_support"},  /* registers a Ruby msgpack extension */
    {"system", "enable_jit"},                   /* Ruby's YJIT */
    {"system", "enable_input_metrics"},         /* Fluentd's metrics plugin counters */
    {"system", "enable_size_metrics"},
};

static const char *const secret_keys[] = {
    "aws_key_id",
    "aws_sec_key",
    "shared_key",
    "password",
    "private_key_passphrase",
    "ca_private_key_passphrase",
    "tls_client_private_key_passphrase", /* out_forward's client key */
    "sse_customer_key",
    "ssekms_key_id",
    "external_id", /* assume_role_credentials: the shared secret of a third-party role */
};

#define MASK "xxxxxx"

bool weir_conf_is_secret_key(const char *key)
{
    for (size_t i = 0; i < sizeof secret_keys / sizeof *secret_keys; i++)
        if (strcmp(key, secret_keys[i]) == 0) return true;
    return false;
}

/* Characters that end a URL inside a value ("http://a,http://b", "a b"). */
#define URL_STOP " \t,;"

/* Appends the URL (or word) [p, end) with the credentials in its userinfo masked:
 * "scheme://user:pass@host" -> "scheme://user:xxxxxx@host", "scheme://token@host" ->
 * "scheme://xxxxxx@host", and, without a scheme (curl reads proxies so), "user:pass@host" ->
 * "user:xxxxxx@host". A word without a scheme and without ':' before its '@' is left alone
 * (an e-mail address), and so is an '@' after the authority (in a path or query). */
static void mask_url(const char *p, const char *end, weir_buf_t *out)
{
    const char *auth = p;
    for (const char *q = p; q + 3 <= end; q++) {
        if (memcmp(q, "://", 3) == 0) {
            auth = q + 3;
            break;
        }
    }
    const char *auth_end = auth;
    while (auth_end < end && !strchr("/?#", *auth_end))
        auth_end++;
    const char *at = NULL;
    for (const char *q = auth; q < auth_end; q++)
        if (*q == '@') at = q;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!at || (!colon && auth == p)) {
        weir_buf_append(out, p, (size_t)(end - p));
        return;
    }
    const char *keep = colon ? colon + 1 : auth; /* what stays before the mask */
    weir_buf_append(out, p, (size_t)(keep - p));
    weir_buf_append(out, MASK, strlen(MASK));
    weir_buf_append(out, at, (size_t)(end - at));
}

char *weir_conf_value_shown(const weir_conf_param_t *p)
{
    if (p->secret || weir_conf_is_secret_key(p->key)) return weir_strdup(MASK);
    if (!strchr(p->value, '@')) return weir_strdup(p->value);
    weir_buf_t out;
    weir_buf_init(&out);
    for (const char *s = p->value; *s;) {
        size_t word = strcspn(s, URL_STOP);
        mask_url(s, s + word, &out);
        s += word;
        size_t gap = strspn(s, URL_STOP);
        weir_buf_append(&out, s, gap);
        s += gap;
    }
    weir_buf_putc(&out, '\0');
    return out.data;
}

void weir_conf_where(const char *file, int line, int col, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s:%d:%d", file ? file : "(config)", line, col);
}

static int verrorf_at(weir_err_t *err, const char *file, int line, int col, const char *fmt,
                      va_list ap)
{
    char msg[WEIR_ERR_MAX], where[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    weir_conf_where(file, line, col, where, sizeof where);
    weir_err_set(err, "%s: %s", where, msg);
    return -1;
}

int conf_errorf_at(weir_err_t *err, const char *file, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verrorf_at(err, file, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

int weir_conf_errorf(weir_err_t *err, const weir_conf_param_t *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (p) {
        verrorf_at(err, p->file, p->line, p->col, fmt, ap);
    } else if (err) {
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    va_end(ap);
    return -1;
}

int weir_conf_section_errorf(weir_err_t *err, const weir_conf_section_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (s) {
        verrorf_at(err, s->file, s->line, s->col, fmt, ap);
    } else if (err) {
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    va_end(ap);
    return -1;
}

void conf_section_label(const weir_conf_section_t *s, char *out, size_t outlen)
{
    snprintf(out, outlen, "<%s%s%s>", s->name, *s->arg ? " " : "", s->arg);
}

/* "in <source> (@type forward)", or "at the top level" for the root. */
static void context(const weir_conf_section_t *s, char *out, size_t outlen)
{
    if (!s->parent) {
        snprintf(out, outlen, "at the top level");
        return;
    }
    char label[200];
    conf_section_label(s, label, sizeof label);
    const weir_conf_param_t *type = weir_conf_find(s, "@type");
    if (type)
        snprintf(out, outlen, "in %s (@type %s)", label, type->value);
    else
        snprintf(out, outlen, "in %s", label);
}

static bool ignored(const weir_conf_section_t *s, const weir_conf_param_t *p)
{
    for (size_t i = 0; i < sizeof weir_conf_ignored_params / sizeof *weir_conf_ignored_params; i++)
        if (strcmp(s->name, weir_conf_ignored_params[i].section) == 0 &&
            strcmp(p->key, weir_conf_ignored_params[i].key) == 0)
            return true;
    return false;
}

int weir_conf_check_unused(weir_conf_section_t *s, weir_err_t *err)
{
    char ctx[300];
    for (size_t i = 0; i < s->nparams; i++) {
        weir_conf_param_t *p = &s->params[i];
        if (p->used) continue;
        if (ignored(s, p)) {
            char *shown = weir_conf_value_shown(p);
            weir_debug("%s:%d: ignoring '%s %s': tunes Fluentd's Ruby internals, nothing to do "
                       "in weir",
                       p->file, p->line, p->key, shown);
            free(shown);
            p->used = true;
            continue;
        }
        context(s, ctx, sizeof ctx);
        return weir_conf_errorf(err, p, "unknown parameter '%s' %s", p->key, ctx);
    }
    for (size_t i = 0; i < s->nchildren; i++) {
        weir_conf_section_t *c = s->children[i];
        if (!c->used) {
            char label[200];
            conf_section_label(c, label, sizeof label);
            context(s, ctx, sizeof ctx);
            return weir_conf_section_errorf(err, c, "unknown section %s %s", label, ctx);
        }
        if (weir_conf_check_unused(c, err) < 0) return -1;
    }
    return 0;
}

/* A value that can be written as it is: re-reading it as bare text gives the same string. */
static bool bare_ok(const char *v)
{
    if (strchr(" \t\"'#[{", v[0])) return false;
    char prev = 0;
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f) return false;
        if (c == '#' && (prev == ' ' || prev == '\t')) return false;
        prev = (char)c;
    }
    return prev != ' ' && prev != '\t';
}

/* A JSON array or hash that re-reads as the same string: nothing may follow the value, not
 * even blanks, since the lexer keeps the JSON text only. */
static bool json_ok(const char *v)
{
    if (v[0] != '[' && v[0] != '{') return false;
    conf_json_t j = {.p = v, .end = v + strlen(v)};
    return conf_json_value(&j, 0) && j.p == j.end;
}

static void dump_quoted(const char *v, FILE *out)
{
    fputc('"', out);
    for (const char *p = v; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", out);
            break;
        case '\\':
            fputs("\\\\", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        case '\r':
            fputs("\\r", out);
            break;
        case '\t':
            fputs("\\t", out);
            break;
        case '\f':
            fputs("\\f", out);
            break;
        case '\b':
            fputs("\\b", out);
            break;
        case '\v':
            fputs("\\v", out);
            break;
        case '\a':
            fputs("\\a", out);
            break;
        case '\x1b':
            fputs("\\e", out);
            break;
        case '#':
            /* "\#{" keeps a literal "#{" from being read as embedded Ruby. */
            fputs(p[1] == '{' ? "\\#" : "#", out);
            break;
        default:
            fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void dump_params(const weir_conf_section_t *s, FILE *out, int indent)
{
    for (size_t i = 0; i < s->nparams; i++) {
        const weir_conf_param_t *p = &s->params[i];
        fprintf(out, "%*s%s", indent, "", p->key);
        char *v = weir_conf_value_shown(p);
        if (*v) {
            fputc(' ', out);
            if (bare_ok(v) || json_ok(v))
                fputs(v, out);
            else
                dump_quoted(v, out);
        }
        free(v);
        fputc('\n', out);
    }
}

static void dump_section(const weir_conf_section_t *s, FILE *out, int indent)
{
    fprintf(out, "%*s<%s%s%s>\n", indent, "", s->name, *s->arg ? " " : "", s->arg);
    dump_params(s, out, indent + 2);
    for (size_t i = 0; i < s->nchildren; i++)
        dump_section(s->children[i], out, indent + 2);
    fprintf(out, "%*s</%s>\n", indent, "", s->name);
}

void weir_conf_dump(const weir_conf_section_t *s, FILE *out)
{
    if (s->parent) {
        dump_section(s, out, 0);
        return;
    }
    dump_params(s, out, 0);
    for (size_t i = 0; i < s->nchildren; i++) {
        if (i > 0 || s->nparams > 0) fputc('\n', out);
        dump_section(s->children[i], out, 0);
    }
}
