/* <filter> @type grep: Fluentd's filter_grep. An event passes when every <regexp> of the top
 * level and of the <and> sections matches, at least one <regexp> of the <or> sections matches
 * (when there are any), not every <exclude> of the <and> sections matches, and no <exclude> of
 * the top level or of the <or> sections matches: Fluentd's four condition lists, filled from
 * the same places and checked in the same order. The old regexp1..20 / exclude1..20 params
 * ("KEY PATTERN") join the top-level lists, as in Fluentd.
 *
 * A field is matched as Ruby's to_s of its value (a missing field or nil is ""), found by name
 * or by record_accessor path ($.a.b). Regexps are PCRE2 (see compile_pattern for how they are
 * made to read as Ruby's). Matching is bounded: each match may take at most GREP_MATCH_LIMIT
 * steps, so a pattern that backtracks badly costs a bounded time per field whatever a peer
 * sends; a match that hits a limit counts as not matching, with a warning (rate-limited). The
 * filter passes the batch on untouched when nothing is dropped, and copies runs of kept
 * entries otherwise. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weir/format.h"
#include "weir/log.h"
#include "weir/mp.h"
#include "weir/plugin.h"
#include "weir/record.h"

/* Steps (PCRE2's match-function calls, the unit of backtracking) one match may take: a simple
 * pattern needs a few per character tried, so a field of a megabyte stays far below, while
 * ^(a+)+$ on thirty a's and a b needs about two billion. At ~10 ns a step, 10^6 steps bound one
 * field's match to about 10 ms. */
#define GREP_MATCH_LIMIT 1000000
/* Nested backtracking depth for the interpreter (the JIT has its own stack limit). */
#define GREP_DEPTH_LIMIT 10000
/* The old-style regexp1..regexpN / exclude1..excludeN params, as Fluentd's REGEXP_MAX_NUM. */
#define GREP_OLD_PARAMS_MAX 20

typedef struct grep_expr {
    char *key_text;
    char *pattern_text;
    weir_raccess_t key;
    pcre2_code *re;
} grep_expr_t;

typedef struct grep_list {
    grep_expr_t *v;
    size_t n;
} grep_list_t;

typedef struct filter_grep {
    grep_list_t regexp_and, regexp_or, exclude_and, exclude_or;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    weir_buf_t text; /* the to_s of a field that is not a string */
    weir_ratelimit_t warn_rl;
} filter_grep_t;

static void list_free(grep_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].key_text);
        free(l->v[i].pattern_text);
        weir_raccess_free(&l->v[i].key);
        pcre2_code_free(l->v[i].re);
    }
    free(l->v);
}

static void grep_destroy(void *state)
{
    filter_grep_t *g = state;
    if (!g) return;
    list_free(&g->regexp_and);
    list_free(&g->regexp_or);
    list_free(&g->exclude_and);
    list_free(&g->exclude_or);
    pcre2_match_data_free(g->md);
    pcre2_match_context_free(g->mctx);
    weir_buf_free(&g->text);
    free(g);
}

/* Compiles a pattern as Fluentd's regexp parameter type reads it: "/re/" with optional flags i
 * (ignore case) and m (Ruby's multiline: '.' matches a newline, PCRE2's DOTALL), or the bare
 * text of the regexp. Ruby's ^ and $ always match at line boundaries, hence PCRE2_MULTILINE;
 * a newline is LF only, as in Ruby. Strings are UTF-8; bytes that are not (a bin value, a torn
 * sequence) never match a character class and end no match early (MATCH_INVALID_UTF), where
 * Fluentd would first replace them by '?'. */
static pcre2_code *compile_pattern(const char *text, bool slashes, const char *where,
                                   weir_err_t *err)
{
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C;
    const char *re = text;
    size_t len = strlen(text);
    if (slashes && text[0] == '/') {
        const char *right = strrchr(text, '/');
        size_t flags = strlen(right + 1);
        if (right == text || flags > 2) {
            weir_err_set(err, "%s: invalid regexp: missing right slash: %s", where, text);
            return NULL;
        }
        for (const char *f = right + 1; *f; f++) {
            if (*f == 'i') {
                opts |= PCRE2_CASELESS;
            } else if (*f == 'm') {
                opts |= PCRE2_DOTALL;
            } else {
                weir_err_set(err, "%s: regexp flag '%c' in %s: weir knows i and m", where, *f,
                             text);
                return NULL;
            }
        }
        re = text + 1;
        len = (size_t)(right - re);
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int ecode;
    PCRE2_SIZE eoff;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)re, len, opts, &ecode, &eoff, cc);
    pcre2_compile_context_free(cc);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        weir_err_set(err, "%s: invalid regexp %s: %s at offset %zu", where, text, (char *)msg,
                     (size_t)eoff);
        return NULL;
    }
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* without JIT the interpreter runs */
    return code;
}

static grep_expr_t *list_find(grep_list_t *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].key_text, key) == 0) return &l->v[i];
    return NULL;
}

static int list_add(grep_list_t *l, const char *key, const char *pattern, bool slashes,
                    const char *where, const char *dup_msg, weir_err_t *err)
{
    if (list_find(l, key)) {
        weir_err_set(err, "%s: %s%s", where, dup_msg, key);
        return -1;
    }
    grep_expr_t e = {0};
    if (weir_raccess_init(&e.key, key, err) != 0) {
        weir_err_prefix(err, "%s", where);
        return -1;
    }
    e.re = compile_pattern(pattern, slashes, where, err);
    if (!e.re) {
        weir_raccess_free(&e.key);
        return -1;
    }
    e.key_text = weir_strdup(key);
    e.pattern_text = weir_strdup(pattern);
    l->v = weir_realloc(l->v, (l->n + 1) * sizeof *l->v);
    l->v[l->n++] = e;
    return 0;
}

/* One <regexp> or <exclude> section: key and pattern, both required. */
static int add_section(grep_list_t *l, weir_conf_section_t *s, const char *dup_msg, weir_err_t *err)
{
    weir_conf_section_use(s);
    const char *key = NULL, *pattern = NULL;
    if (weir_conf_get_str(s, "key", &key, err) < 0) return -1;
    if (weir_conf_get_str(s, "pattern", &pattern, err) < 0) return -1;
    if (!key || !pattern)
        return weir_conf_section_errorf(err, s, "<%s> needs both 'key' and 'pattern'", s->name);
    char where[300];
    weir_conf_where(s->file, s->line, s->col, where, sizeof where);
    return list_add(l, key, pattern, true, where, dup_msg, err);
}

/* regexpN / excludeN: "KEY PATTERN", split at the first space, the pattern taken as written. */
static int add_old_params(weir_conf_section_t *sec, const char *name, grep_list_t *l,
                          weir_err_t *err)
{
    for (int i = 1; i <= GREP_OLD_PARAMS_MAX; i++) {
        char key[32];
        snprintf(key, sizeof key, "%s%d", name, i);
        const char *v = NULL;
        if (weir_conf_get_str(sec, key, &v, err) < 0) return -1;
        if (!v) continue;
        weir_conf_param_t *p = weir_conf_find(sec, key);
        const char *sp = strchr(v, ' ');
        if (!sp) return weir_conf_errorf(err, p, "%s does not contain 2 parameters", key);
        char *field = weir_strndup(v, (size_t)(sp - v));
        char where[300], dup[64];
        weir_conf_where(p->file, p->line, p->col, where, sizeof where);
        snprintf(dup, sizeof dup, "%s contains a duplicated key, ", key);
        int rc = list_add(l, field, sp + 1, false, where, dup, err);
        free(field);
        if (rc != 0) return -1;
    }
    return 0;
}

/* <and> / <or>: <regexp>s or <exclude>s, not both. */
static int add_group(weir_conf_section_t *grp, grep_list_t *regexps, grep_list_t *excludes,
                     weir_err_t *err)
{
    weir_conf_section_use(grp);
    char dup[32];
    snprintf(dup, sizeof dup, "Duplicate key in <%s>: ", grp->name);
    if (weir_conf_child(grp, "regexp", 0) && weir_conf_child(grp, "exclude", 0))
        return weir_conf_section_errorf(
            err, grp, "Do not specify both <regexp> and <exclude> in <%s>", grp->name);
    weir_conf_section_t *c;
    for (size_t i = 0; (c = weir_conf_child(grp, "regexp", i)); i++)
        if (add_section(regexps, c, dup, err) != 0) return -1;
    for (size_t i = 0; (c = weir_conf_child(grp, "exclude", i)); i++)
        if (add_section(excludes, c, dup, err) != 0) return -1;
    return 0;
}

static int grep_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    (void)eng;
    filter_grep_t *g = weir_calloc(1, sizeof *g);
    g->warn_rl.interval_ms = WEIR_WARN_INTERVAL_MS;
    weir_conf_section_t *c;
    if (add_old_params(sec, "regexp", &g->regexp_and, err) != 0) goto err;
    if (add_old_params(sec, "exclude", &g->exclude_or, err) != 0) goto err;
    for (size_t i = 0; (c = weir_conf_child(sec, "regexp", i)); i++)
        if (add_section(&g->regexp_and, c, "Duplicate key: ", err) != 0) goto err;
    for (size_t i = 0; (c = weir_conf_child(sec, "exclude", i)); i++)
        if (add_section(&g->exclude_or, c, "Duplicate key: ", err) != 0) goto err;
    for (size_t i = 0; (c = weir_conf_child(sec, "and", i)); i++)
        if (add_group(c, &g->regexp_and, &g->exclude_and, err) != 0) goto err;
    for (size_t i = 0; (c = weir_conf_child(sec, "or", i)); i++)
        if (add_group(c, &g->regexp_or, &g->exclude_or, err) != 0) goto err;
    g->md = pcre2_match_data_create(1, NULL);
    g->mctx = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(g->mctx, GREP_MATCH_LIMIT);
    pcre2_set_depth_limit(g->mctx, GREP_DEPTH_LIMIT);
    *state = g;
    return 0;
err:
    grep_destroy(g);
    return -1;
}

/* Whether the expression's field matches. A match that PCRE2 gives up on (a limit) counts as
 * not matching, and says so. */
static bool expr_match(filter_grep_t *g, const grep_expr_t *e, const char *tag,
                       const weir_entry_t *ent)
{
    const char *val, *subject = "";
    size_t vlen, slen = 0;
    weir_mp_obj_t o;
    if (weir_raccess_get(&e->key, ent->record, ent->record_len, &val, &vlen) == 1) {
        if (weir_mp_read(val, vlen, &o) > 0 && (o.type == WEIR_MP_STR || o.type == WEIR_MP_BIN)) {
            subject = o.len ? o.ptr : ""; /* a string is its own to_s: matched in place */
            slen = o.len;
        } else {
            g->text.len = 0;
            (void)weir_value_to_s(&g->text, val, vlen);
            subject = g->text.len ? g->text.data : "";
            slen = g->text.len;
        }
    }
    int rc = pcre2_match(e->re, (PCRE2_SPTR)subject, slen, 0, 0, g->md, g->mctx);
    if (rc >= 0) return true;
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    unsigned long suppressed;
    if (weir_ratelimit_ok(&g->warn_rl, &suppressed)) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        weir_warn("grep: tag %s: pattern %s on key '%s' gave up on a value of %zu bytes (%s): "
                  "counted as not matching (%lu more suppressed)",
                  tag, e->pattern_text, e->key_text, slen, (char *)msg, suppressed);
    }
    return false;
}

static bool any_match(filter_grep_t *g, const grep_list_t *l, const char *tag,
                      const weir_entry_t *e)
{
    for (size_t i = 0; i < l->n; i++)
        if (expr_match(g, &l->v[i], tag, e)) return true;
    return false;
}

static bool all_match(filter_grep_t *g, const grep_list_t *l, const char *tag,
                      const weir_entry_t *e)
{
    for (size_t i = 0; i < l->n; i++)
        if (!expr_match(g, &l->v[i], tag, e)) return false;
    return true;
}

/* Fluentd's order: each list is consulted only when it has expressions. */
static bool grep_keep(filter_grep_t *g, const char *tag, const weir_entry_t *e)
{
    if (g->regexp_and.n && !all_match(g, &g->regexp_and, tag, e)) return false;
    if (g->regexp_or.n && !any_match(g, &g->regexp_or, tag, e)) return false;
    if (g->exclude_and.n && all_match(g, &g->exclude_and, tag, e)) return false;
    if (g->exclude_or.n && any_match(g, &g->exclude_or, tag, e)) return false;
    return true;
}

static weir_filter_result_t grep_filter(void *state, const weir_batch_t *in, weir_batch_t *out,
                                        void **hold)
{
    (void)hold;
    filter_grep_t *g = state;
    weir_batch_iter_t it;
    weir_entry_t e;
    weir_batch_iter_init(&it, in->data.data, in->data.len);
    /* the run of kept entries not yet copied: [run, it.p) */
    const char *run = it.p;
    uint32_t run_n = 0, run_min = UINT32_MAX, run_max = 0;
    bool dropped = false;
    for (;;) {
        const char *start = it.p;
        int r = weir_batch_iter_next(&it, &e);
        if (r < 0) return WEIR_FILTER_ERROR;
        if (r == 0) break;
        if (grep_keep(g, in->tag, &e)) {
            run_n++;
            if (e.time.sec < run_min) run_min = e.time.sec;
            if (e.time.sec > run_max) run_max = e.time.sec;
            continue;
        }
        dropped = true;
        if (run_n) weir_batch_append_raw(out, run, (size_t)(start - run), run_n, run_min, run_max);
        run = it.p;
        run_n = 0;
        run_min = UINT32_MAX;
        run_max = 0;
    }
    if (!dropped) return WEIR_FILTER_SAME;
    if (run_n) weir_batch_append_raw(out, run, (size_t)(it.p - run), run_n, run_min, run_max);
    return WEIR_FILTER_NEW;
}

const weir_filter_ops_t weir_filter_grep_ops = {
    .type = "grep",
    .create = grep_create,
    .filter = grep_filter,
    .destroy = grep_destroy,
};
