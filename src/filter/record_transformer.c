/* <filter> @type record_transformer: Fluentd's filter_record_transformer without Ruby.
 *
 * Each event's new record is, as in Fluentd: the record (or, with renew_record, nothing but the
 * keep_keys it has), merged with the <record> fields, whose keys and values may hold
 * placeholders; then renew_time_key, if the new record has that field, sets the event's time;
 * then remove_keys are deleted. Merging keeps Ruby's Hash#merge! order: a field the record has
 * keeps its place and takes the new value, new fields follow in <record> order.
 *
 * Placeholders are Fluentd's non-Ruby ones, parsed once at configuration: ${tag},
 * ${tag_parts[N]}, ${tag_prefix[N]}, ${tag_suffix[N]} (N may be negative), ${hostname}, ${time}
 * (Time#to_s in the process zone), ${record["key"]} (a field of the incoming record). Any other
 * ${...} or __WORD__ is unknown: it expands to nil, with a warning. A value that is exactly one
 * placeholder keeps the field's type when auto_typecast (the default); otherwise placeholders
 * print as Ruby's to_s. A <record> value starting with '{' or '[' is JSON, expanded inside.
 *
 * The tag's parts are computed once per batch (a batch has one tag), so an event costs one pass
 * over its record plus the <record> fields. A new record larger than RT_RECORD_MAX is dropped
 * with a warning, as Fluentd sends a record it cannot transform to its error stream. */
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weir/format.h"
#include "weir/log.h"
#include "weir/mp.h"
#include "weir/plugin.h"
#include "weir/record.h"

/* Largest record the filter writes. Placeholders copy fields, so a record can grow by as many
 * copies of its largest field as <record> names; this bounds that growth per event. 8 MiB is
 * far above any audit event and below what the buffer's chunks hold. */
#define RT_RECORD_MAX (8u * 1024 * 1024)
/* Most dot-separated parts of a tag: WEIR_TAG_MAX bytes hold at most this many. */
#define RT_TAG_PARTS_MAX (WEIR_TAG_MAX / 2 + 1)
/* Most remove_keys paths (each is checked against every field on its way). */
#define RT_REMOVE_KEYS_MAX 128
/* Deepest JSON a <record> value may nest. */
#define RT_JSON_MAX_DEPTH 32

typedef enum seg_kind {
    SEG_TEXT,
    SEG_TAG,
    SEG_TAG_PARTS,
    SEG_TAG_PREFIX,
    SEG_TAG_SUFFIX,
    SEG_HOSTNAME,
    SEG_TIME,
    SEG_RECORD,
    SEG_UNKNOWN,
} seg_kind_t;

typedef struct seg {
    seg_kind_t kind;
    char *text; /* SEG_TEXT: the text; SEG_RECORD: the key; SEG_UNKNOWN: the placeholder */
    size_t len;
    int64_t index; /* tag_parts / tag_prefix / tag_suffix */
} seg_t;

/* A string with placeholders. */
typedef struct tstr {
    seg_t *segs;
    size_t n;
} tstr_t;

typedef enum tnode_type { T_RAW, T_STR, T_ARRAY, T_MAP } tnode_type_t;

/* A <record> value: fixed msgpack, a string with placeholders, or JSON containers of those. */
typedef struct tnode {
    tnode_type_t type;
    weir_buf_t raw;
    tstr_t str;
    struct tnode *items; /* T_ARRAY, T_MAP values */
    tstr_t *keys;        /* T_MAP keys */
    size_t n;
} tnode_t;

typedef struct rt_field {
    tstr_t key;
    tnode_t value;
} rt_field_t;

/* What a batch's tag gives every event of it. */
typedef struct rt_tag {
    const char *tag;
    size_t tag_len;
    size_t nparts;
    size_t start[RT_TAG_PARTS_MAX], end[RT_TAG_PARTS_MAX];
} rt_tag_t;

/* A field of the new record: offsets into rt->pairs. */
typedef struct rt_pair {
    size_t key_off, key_len, val_off, val_len;
    bool done;
} rt_pair_t;

typedef struct filter_rt {
    rt_field_t *fields;
    size_t nfields;
    char **keep_keys;
    size_t nkeep;
    size_t *keep_first;     /* index of the first keep_keys entry equal to each */
    weir_raccess_t *remove; /* remove_keys, as record_accessor paths */
    size_t nremove;
    char *renew_time_key;
    bool renew_record, auto_typecast;
    char hostname[256];
    weir_timefmt_t time_fmt;
    /* per event, reused */
    weir_buf_t text;  /* a string being expanded */
    weir_buf_t pairs; /* the expanded <record> fields: key bytes, then msgpack values */
    rt_pair_t *tpl;   /* one per field */
    weir_buf_t body;  /* the new record's pairs */
    weir_buf_t rec;   /* the new record */
    weir_buf_t rec2;  /* the new record without remove_keys */
    rt_tag_t tag;
    weir_ratelimit_t warn_rl, unknown_rl;
} filter_rt_t;

/* ---- the template ---- */

static void tstr_free(tstr_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->segs[i].text);
    free(s->segs);
}

static void tnode_free(tnode_t *t)
{
    weir_buf_free(&t->raw);
    tstr_free(&t->str);
    for (size_t i = 0; i < t->n; i++) {
        tnode_free(&t->items[i]);
        if (t->keys) tstr_free(&t->keys[i]);
    }
    free(t->items);
    free(t->keys);
}

static void seg_push(tstr_t *s, seg_kind_t kind, const char *text, size_t len, int64_t index)
{
    s->segs = weir_realloc(s->segs, (s->n + 1) * sizeof *s->segs);
    s->segs[s->n++] = (seg_t){kind, text ? weir_strndup(text, len) : NULL, len, index};
}

/* "[N]}" exactly as Ruby prints an integer: -?(0|[1-9][0-9]*). */
static bool parse_index(const char *p, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = n > 0 && p[0] == '-';
    if (neg) i++;
    if (i >= n || (p[i] == '0' && n - i > 1)) return false;
    int64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || v > RT_TAG_PARTS_MAX) return false;
        v = v * 10 + (p[i] - '0');
    }
    *out = neg ? -v : v;
    return true;
}

/* Classifies the placeholder p[0..n) ("${...}" or "__X__"). */
static void add_placeholder(tstr_t *s, const char *p, size_t n)
{
    static const struct {
        const char *name;
        seg_kind_t kind;
    } arrays[] = {
        {"${tag_parts[", SEG_TAG_PARTS},
        {"${tag_prefix[", SEG_TAG_PREFIX},
        {"${tag_suffix[", SEG_TAG_SUFFIX},
    };
    if (n == 6 && memcmp(p, "${tag}", 6) == 0) return seg_push(s, SEG_TAG, NULL, 0, 0);
    if (n == 11 && memcmp(p, "${hostname}", 11) == 0) return seg_push(s, SEG_HOSTNAME, NULL, 0, 0);
    if (n == 7 && memcmp(p, "${time}", 7) == 0) return seg_push(s, SEG_TIME, NULL, 0, 0);
    const char *rp = "${record[\"";
    size_t rl = strlen(rp);
    if (n >= rl + 3 && memcmp(p, rp, rl) == 0 && memcmp(p + n - 3, "\"]}", 3) == 0)
        return seg_push(s, SEG_RECORD, p + rl, n - rl - 3, 0);
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++) {
        size_t al = strlen(arrays[i].name);
        int64_t idx;
        if (n >= al + 2 && memcmp(p, arrays[i].name, al) == 0 && memcmp(p + n - 2, "]}", 2) == 0 &&
            parse_index(p + al, n - al - 2, &idx))
            return seg_push(s, arrays[i].kind, NULL, 0, idx);
    }
    seg_push(s, SEG_UNKNOWN, p, n, 0);
}

/* Length of the placeholder at p (Fluentd's /\$\{[^}]+\}|__[A-Z_]+__/), 0 if none starts
 * there. */
static size_t placeholder_len(const char *p, const char *end)
{
    if (end - p >= 4 && p[0] == '$' && p[1] == '{' && p[2] != '}') {
        const char *c = memchr(p + 2, '}', (size_t)(end - p - 2));
        return c ? (size_t)(c - p) + 1 : 0;
    }
    if (end - p >= 5 && p[0] == '_' && p[1] == '_') {
        const char *q = p + 2;
        while (q < end && ((*q >= 'A' && *q <= 'Z') || *q == '_'))
            q++;
        /* the regexp is greedy and backtracks: the name ends at the last "__" of the run */
        for (const char *e = q; e - p >= 5; e--)
            if (e[-1] == '_' && e[-2] == '_' && e - 2 > p + 2) return (size_t)(e - p);
    }
    return 0;
}

static void tstr_parse(tstr_t *s, const char *text, size_t len)
{
    const char *p = text, *end = text + len, *lit = text;
    while (p < end) {
        size_t n = placeholder_len(p, end);
        if (!n) {
            p++;
            continue;
        }
        if (p > lit) seg_push(s, SEG_TEXT, lit, (size_t)(p - lit), 0);
        add_placeholder(s, p, n);
        p += n;
        lit = p;
    }
    if (p > lit) seg_push(s, SEG_TEXT, lit, (size_t)(p - lit), 0);
}

static void warn_unknown_static(const tstr_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->segs[i].kind == SEG_UNKNOWN)
            weir_warn("record_transformer: unknown placeholder `%s` found: it expands to nil "
                      "(weir knows ${tag}, ${tag_parts[N]}, ${tag_prefix[N]}, "
                      "${tag_suffix[N]}, ${hostname}, ${time}, ${record[\"key\"]})",
                      s->segs[i].text);
}

static int tnode_from_json(tnode_t *t, json_t *j, int depth, weir_err_t *err)
{
    *t = (tnode_t){0};
    if (depth > RT_JSON_MAX_DEPTH) {
        weir_err_set(err, "JSON nested deeper than %d", RT_JSON_MAX_DEPTH);
        return -1;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, &t->raw, weir_buf_msgpack_write);
    switch (json_typeof(j)) {
    case JSON_STRING:
        t->type = T_STR;
        tstr_parse(&t->str, json_string_value(j), json_string_length(j));
        warn_unknown_static(&t->str);
        return 0;
    case JSON_ARRAY: {
        t->type = T_ARRAY;
        t->n = json_array_size(j);
        t->items = weir_calloc(t->n + 1, sizeof *t->items);
        for (size_t i = 0; i < t->n; i++)
            if (tnode_from_json(&t->items[i], json_array_get(j, i), depth + 1, err) != 0) return -1;
        return 0;
    }
    case JSON_OBJECT: {
        t->type = T_MAP;
        t->n = json_object_size(j);
        t->items = weir_calloc(t->n + 1, sizeof *t->items);
        t->keys = weir_calloc(t->n + 1, sizeof *t->keys);
        size_t i = 0;
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            tstr_parse(&t->keys[i], k, strlen(k));
            if (tnode_from_json(&t->items[i], v, depth + 1, err) != 0) return -1;
            i++;
        }
        return 0;
    }
    case JSON_INTEGER:
        t->type = T_RAW;
        msgpack_pack_int64(&pk, json_integer_value(j));
        return 0;
    case JSON_REAL:
        t->type = T_RAW;
        msgpack_pack_double(&pk, json_real_value(j));
        return 0;
    case JSON_TRUE:
        t->type = T_RAW;
        msgpack_pack_true(&pk);
        return 0;
    case JSON_FALSE:
        t->type = T_RAW;
        msgpack_pack_false(&pk);
        return 0;
    default:
        t->type = T_RAW;
        msgpack_pack_nil(&pk);
        return 0;
    }
}

/* Fluentd's parse_value: text starting with '{' or '[' is JSON; JSON that does not parse stays
 * a string, with a warning. */
static int tnode_parse(tnode_t *t, const weir_conf_param_t *p, weir_err_t *err)
{
    *t = (tnode_t){0};
    const char *v = p->value;
    if (v[0] == '{' || v[0] == '[') {
        json_error_t je;
        json_t *j = json_loads(v, JSON_DECODE_ANY, &je);
        if (j) {
            int rc = tnode_from_json(t, j, 0, err);
            json_decref(j);
            if (rc != 0) weir_conf_errorf(err, p, "%s: %s", p->key, err->msg);
            return rc;
        }
        char where[300];
        weir_conf_where(p->file, p->line, p->col, where, sizeof where);
        weir_warn("%s: record_transformer: failed to parse %s as JSON (%s). Assuming it is a "
                  "string",
                  where, v, je.text);
    }
    t->type = T_STR;
    tstr_parse(&t->str, v, strlen(v));
    warn_unknown_static(&t->str);
    return 0;
}

/* ---- configuration ---- */

static void rt_destroy(void *state)
{
    filter_rt_t *rt = state;
    if (!rt) return;
    for (size_t i = 0; i < rt->nfields; i++) {
        tstr_free(&rt->fields[i].key);
        tnode_free(&rt->fields[i].value);
    }
    free(rt->fields);
    weir_conf_strv_free(rt->keep_keys, rt->nkeep);
    free(rt->keep_first);
    for (size_t i = 0; i < rt->nremove; i++)
        weir_raccess_free(&rt->remove[i]);
    free(rt->remove);
    free(rt->renew_time_key);
    weir_timefmt_free(&rt->time_fmt);
    weir_buf_free(&rt->text);
    weir_buf_free(&rt->pairs);
    free(rt->tpl);
    weir_buf_free(&rt->body);
    weir_buf_free(&rt->rec);
    weir_buf_free(&rt->rec2);
    free(rt);
}

static int read_record_sections(filter_rt_t *rt, weir_conf_section_t *sec, weir_err_t *err)
{
    weir_conf_section_t *r;
    for (size_t i = 0; (r = weir_conf_child(sec, "record", i)); i++) {
        weir_conf_section_use(r);
        for (size_t k = 0; k < r->nparams; k++) {
            weir_conf_param_t *p = &r->params[k];
            p->used = true;
            rt->fields = weir_realloc(rt->fields, (rt->nfields + 1) * sizeof *rt->fields);
            rt_field_t *f = &rt->fields[rt->nfields++];
            *f = (rt_field_t){0};
            tstr_parse(&f->key, p->key, strlen(p->key));
            warn_unknown_static(&f->key);
            if (tnode_parse(&f->value, p, err) != 0) return -1;
        }
    }
    return 0;
}

static int read_remove_keys(filter_rt_t *rt, weir_conf_section_t *sec, weir_err_t *err)
{
    char **keys = NULL;
    size_t n = 0;
    if (weir_conf_get_array(sec, "remove_keys", &keys, &n, err) < 0) return -1;
    if (n > RT_REMOVE_KEYS_MAX) {
        weir_conf_strv_free(keys, n);
        return weir_conf_errorf(err, weir_conf_find(sec, "remove_keys"),
                                "remove_keys: %zu keys, more than the %d weir takes", n,
                                RT_REMOVE_KEYS_MAX);
    }
    rt->remove = weir_calloc(n + 1, sizeof *rt->remove);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (weir_raccess_init(&rt->remove[i], keys[i], err) != 0) {
            weir_conf_errorf(err, weir_conf_find(sec, "remove_keys"), "remove_keys: %s", err->msg);
            rc = -1;
            break;
        }
        rt->nremove++;
    }
    weir_conf_strv_free(keys, n);
    return rc;
}

static int rt_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    filter_rt_t *rt = weir_calloc(1, sizeof *rt);
    rt->auto_typecast = true; /* Fluentd v1's default */
    rt->warn_rl.interval_ms = WEIR_WARN_INTERVAL_MS;
    rt->unknown_rl.interval_ms = WEIR_WARN_INTERVAL_MS;
    bool ruby = false;
    const char *rtk = NULL;
    if (weir_conf_get_bool(sec, "enable_ruby", &ruby, err) < 0) goto err;
    if (ruby) {
        weir_conf_errorf(err, weir_conf_find(sec, "enable_ruby"),
                         "enable_ruby true: weir runs no Ruby. Write the placeholders without "
                         "it: ${record[\"key\"]} for a field (instead of ${record['key']} or "
                         "${record.dig(...)}), ${tag}, ${tag_parts[N]}, ${tag_prefix[N]}, "
                         "${tag_suffix[N]}, ${hostname}, ${time}; remove 'enable_ruby'. An "
                         "expression (arithmetic, method calls) has no equivalent: compute it "
                         "before weir or after it");
        goto err;
    }
    if (weir_conf_get_bool(sec, "renew_record", &rt->renew_record, err) < 0) goto err;
    if (weir_conf_get_bool(sec, "auto_typecast", &rt->auto_typecast, err) < 0) goto err;
    if (weir_conf_get_str(sec, "renew_time_key", &rtk, err) < 0) goto err;
    if (rtk) rt->renew_time_key = weir_strdup(rtk);
    if (weir_conf_get_array(sec, "keep_keys", &rt->keep_keys, &rt->nkeep, err) < 0) goto err;
    if (rt->keep_keys && !rt->renew_record) {
        weir_conf_errorf(err, weir_conf_find(sec, "keep_keys"),
                         "`renew_record` must be true to use `keep_keys`");
        goto err;
    }
    rt->keep_first = weir_calloc(rt->nkeep + 1, sizeof *rt->keep_first);
    for (size_t i = 0; i < rt->nkeep; i++) {
        rt->keep_first[i] = i;
        for (size_t j = 0; j < i && rt->keep_first[i] == i; j++)
            if (strcmp(rt->keep_keys[i], rt->keep_keys[j]) == 0) rt->keep_first[i] = j;
    }
    if (read_remove_keys(rt, sec, err) != 0) goto err;
    if (read_record_sections(rt, sec, err) != 0) goto err;
    const char *host = eng ? weir_engine_hostname(eng) : NULL;
    if (host) {
        snprintf(rt->hostname, sizeof rt->hostname, "%s", host);
    } else if (gethostname(rt->hostname, sizeof rt->hostname - 1) != 0) {
        strcpy(rt->hostname, "localhost");
    }
    /* Ruby's Time#to_s */
    if (weir_timefmt_init(&rt->time_fmt, "%Y-%m-%d %H:%M:%S %z", true, NULL, err) != 0) goto err;
    rt->tpl = weir_calloc(rt->nfields + 1, sizeof *rt->tpl);
    *state = rt;
    return 0;
err:
    rt_destroy(rt);
    return -1;
}

/* ---- expansion ---- */

/* Ruby's tag.split('.'): trailing empty parts dropped. */
static void tag_split(rt_tag_t *t, const char *tag, size_t len)
{
    t->tag = tag;
    t->tag_len = len;
    t->nparts = 0;
    size_t s = 0;
    for (size_t i = 0; i <= len && t->nparts < RT_TAG_PARTS_MAX; i++) {
        if (i < len && tag[i] != '.') continue;
        t->start[t->nparts] = s;
        t->end[t->nparts] = i;
        t->nparts++;
        s = i + 1;
    }
    while (t->nparts && t->start[t->nparts - 1] == t->end[t->nparts - 1])
        t->nparts--;
}

/* The text of a tag placeholder, or false when the index is out of range (nil). */
static bool tag_text(const rt_tag_t *t, const seg_t *s, const char **p, size_t *n)
{
    int64_t i = s->index < 0 ? s->index + (int64_t)t->nparts : s->index;
    if (i < 0 || i >= (int64_t)t->nparts) return false;
    size_t a = t->start[i], b = t->end[i];
    if (s->kind == SEG_TAG_PREFIX) a = 0;
    if (s->kind == SEG_TAG_SUFFIX) b = t->end[t->nparts - 1];
    *p = t->tag + a;
    *n = b - a;
    return true;
}

static void warn_unknown(filter_rt_t *rt, const char *what, size_t n)
{
    unsigned long suppressed;
    if (weir_ratelimit_ok(&rt->unknown_rl, &suppressed))
        weir_warn("record_transformer: tag %s: unknown placeholder `%.*s` found (%lu more "
                  "suppressed)",
                  rt->tag.tag, (int)n, what, suppressed);
}

/* Fluentd knows ${record["k"]} only for the keys the record has: another is unknown. */
static void warn_missing(filter_rt_t *rt, const seg_t *s)
{
    unsigned long suppressed;
    if (weir_ratelimit_ok(&rt->unknown_rl, &suppressed))
        weir_warn("record_transformer: tag %s: unknown placeholder `${record[\"%.*s\"]}` found: "
                  "the record has no such key (%lu more suppressed)",
                  rt->tag.tag, (int)s->len, s->text, suppressed);
}

/* The value of one placeholder as msgpack (into out), for a value that is nothing else. */
static void seg_value(filter_rt_t *rt, const seg_t *s, weir_time_t t, const weir_entry_t *e,
                      weir_buf_t *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, weir_buf_msgpack_write);
    const char *p = NULL, *v;
    size_t n = 0, vlen;
    switch (s->kind) {
    case SEG_TEXT:
        p = s->text, n = s->len;
        break;
    case SEG_TAG:
        p = rt->tag.tag, n = rt->tag.tag_len;
        break;
    case SEG_HOSTNAME:
        p = rt->hostname, n = strlen(rt->hostname);
        break;
    case SEG_TIME: {
        size_t at = rt->text.len;
        weir_timefmt_append(&rt->time_fmt, t, &rt->text);
        msgpack_pack_str_with_body(&pk, rt->text.data + at, rt->text.len - at);
        rt->text.len = at;
        return;
    }
    case SEG_TAG_PARTS:
    case SEG_TAG_PREFIX:
    case SEG_TAG_SUFFIX:
        if (!tag_text(&rt->tag, s, &p, &n)) {
            msgpack_pack_nil(&pk);
            return;
        }
        break;
    case SEG_RECORD:
        if (weir_record_get(e->record, e->record_len, s->text, s->len, &v, &vlen) == 1) {
            weir_buf_append(out, v, vlen);
        } else {
            warn_missing(rt, s);
            msgpack_pack_nil(&pk);
        }
        return;
    case SEG_UNKNOWN:
        warn_unknown(rt, s->text, s->len);
        msgpack_pack_nil(&pk);
        return;
    }
    msgpack_pack_str_with_body(&pk, p, n);
}

/* The string of a placeholder string: each placeholder as Ruby's to_s of its value. */
static void tstr_text(filter_rt_t *rt, const tstr_t *s, weir_time_t t, const weir_entry_t *e,
                      weir_buf_t *out)
{
    for (size_t i = 0; i < s->n; i++) {
        const seg_t *g = &s->segs[i];
        const char *p, *v;
        size_t n, vlen;
        switch (g->kind) {
        case SEG_TEXT:
            weir_buf_append(out, g->text, g->len);
            break;
        case SEG_TAG:
            weir_buf_append(out, rt->tag.tag, rt->tag.tag_len);
            break;
        case SEG_HOSTNAME:
            weir_buf_append(out, rt->hostname, strlen(rt->hostname));
            break;
        case SEG_TIME:
            weir_timefmt_append(&rt->time_fmt, t, out);
            break;
        case SEG_TAG_PARTS:
        case SEG_TAG_PREFIX:
        case SEG_TAG_SUFFIX:
            if (tag_text(&rt->tag, g, &p, &n)) weir_buf_append(out, p, n);
            break;
        case SEG_RECORD:
            if (weir_record_get(e->record, e->record_len, g->text, g->len, &v, &vlen) == 1) {
                (void)weir_value_to_s(out, v, vlen);
            } else {
                warn_missing(rt, g);
            }
            break;
        case SEG_UNKNOWN:
            warn_unknown(rt, g->text, g->len);
            break;
        }
    }
}

static void tnode_expand(filter_rt_t *rt, const tnode_t *t, weir_time_t tm, const weir_entry_t *e,
                         weir_buf_t *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, weir_buf_msgpack_write);
    switch (t->type) {
    case T_RAW:
        weir_buf_append(out, t->raw.data, t->raw.len);
        return;
    case T_STR:
        if (rt->auto_typecast && t->str.n == 1 && t->str.segs[0].kind != SEG_TEXT) {
            seg_value(rt, &t->str.segs[0], tm, e, out);
            return;
        }
        rt->text.len = 0;
        tstr_text(rt, &t->str, tm, e, &rt->text);
        msgpack_pack_str_with_body(&pk, rt->text.data ? rt->text.data : "", rt->text.len);
        return;
    case T_ARRAY:
        msgpack_pack_array(&pk, t->n);
        for (size_t i = 0; i < t->n; i++)
            tnode_expand(rt, &t->items[i], tm, e, out);
        return;
    case T_MAP:
        msgpack_pack_map(&pk, t->n);
        for (size_t i = 0; i < t->n; i++) {
            rt->text.len = 0;
            tstr_text(rt, &t->keys[i], tm, e, &rt->text);
            msgpack_pack_str_with_body(&pk, rt->text.data ? rt->text.data : "", rt->text.len);
            tnode_expand(rt, &t->items[i], tm, e, out);
        }
        return;
    }
}

/* Expands every <record> field into rt->pairs / rt->tpl. A key expanded twice keeps its first
 * place and takes the last value, as Ruby's Hash. */
static size_t expand_fields(filter_rt_t *rt, weir_time_t t, const weir_entry_t *e)
{
    rt->pairs.len = 0;
    size_t n = 0;
    for (size_t i = 0; i < rt->nfields; i++) {
        rt_pair_t p = {0};
        p.key_off = rt->pairs.len;
        tstr_text(rt, &rt->fields[i].key, t, e, &rt->pairs);
        p.key_len = rt->pairs.len - p.key_off;
        p.val_off = rt->pairs.len;
        tnode_expand(rt, &rt->fields[i].value, t, e, &rt->pairs);
        p.val_len = rt->pairs.len - p.val_off;
        size_t j = 0;
        for (; j < n; j++)
            if (rt->tpl[j].key_len == p.key_len &&
                memcmp(rt->pairs.data + rt->tpl[j].key_off, rt->pairs.data + p.key_off,
                       p.key_len) == 0)
                break;
        if (j < n) {
            rt->tpl[j].val_off = p.val_off;
            rt->tpl[j].val_len = p.val_len;
        } else {
            rt->tpl[n++] = p;
        }
    }
    return n;
}

static rt_pair_t *tpl_find(filter_rt_t *rt, size_t n, const char *k, size_t klen)
{
    for (size_t i = 0; i < n; i++)
        if (rt->tpl[i].key_len == klen && memcmp(rt->pairs.data + rt->tpl[i].key_off, k, klen) == 0)
            return &rt->tpl[i];
    return NULL;
}

/* Appends one key/value pair to the body; *count counts them. */
static void put_pair(weir_buf_t *body, const char *k, size_t klen, const char *v, size_t vlen,
                     uint32_t *count)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, body, weir_buf_msgpack_write);
    msgpack_pack_str_with_body(&pk, k, klen);
    weir_buf_append(body, v, vlen);
    (*count)++;
}

/* A field of the record, or the <record> field that replaces it (once, at its first place). */
static void put_field(filter_rt_t *rt, size_t ntpl, const char *k, size_t klen, const char *v,
                      size_t vlen, uint32_t *count)
{
    rt_pair_t *tp = tpl_find(rt, ntpl, k, klen);
    if (!tp) return put_pair(&rt->body, k, klen, v, vlen, count);
    if (tp->done) return;
    tp->done = true;
    put_pair(&rt->body, k, klen, rt->pairs.data + tp->val_off, tp->val_len, count);
}

/* Builds rt->rec: the merged record, before remove_keys. Returns -1 on bytes that are not a
 * map. */
static int build_record(filter_rt_t *rt, size_t ntpl, const weir_entry_t *e)
{
    rt->body.len = 0;
    uint32_t count = 0;
    if (rt->renew_record) {
        for (size_t i = 0; i < rt->nkeep; i++) {
            const char *v;
            size_t vlen;
            const char *k = rt->keep_keys[i];
            if (rt->keep_first[i] != i) continue; /* named twice: one field, as in a Hash */
            if (weir_record_get(e->record, e->record_len, k, strlen(k), &v, &vlen) == 1)
                put_field(rt, ntpl, k, strlen(k), v, vlen, &count);
        }
    } else {
        weir_mp_obj_t m, k;
        ssize_t h = weir_mp_read(e->record, e->record_len, &m);
        if (h <= 0 || m.type != WEIR_MP_MAP) return -1;
        size_t off = (size_t)h;
        for (uint32_t i = 0; i < m.v.n; i++) {
            ssize_t kl = weir_mp_skip(e->record + off, e->record_len - off, WEIR_MP_MAX_DEPTH);
            if (kl <= 0) return -1;
            ssize_t vl = weir_mp_skip(e->record + off + (size_t)kl,
                                      e->record_len - off - (size_t)kl, WEIR_MP_MAX_DEPTH);
            if (vl <= 0) return -1;
            (void)weir_mp_read(e->record + off, e->record_len - off, &k);
            bool strkey = k.type == WEIR_MP_STR || k.type == WEIR_MP_BIN;
            rt_pair_t *tp = strkey ? tpl_find(rt, ntpl, k.ptr, k.len) : NULL;
            if (tp) {
                put_field(rt, ntpl, k.ptr, k.len, NULL, 0, &count);
            } else { /* as it was, whatever the key's type */
                weir_buf_append(&rt->body, e->record + off, (size_t)(kl + vl));
                count++;
            }
            off += (size_t)(kl + vl);
        }
    }
    for (size_t i = 0; i < ntpl; i++)
        if (!rt->tpl[i].done)
            put_pair(&rt->body, rt->pairs.data + rt->tpl[i].key_off, rt->tpl[i].key_len,
                     rt->pairs.data + rt->tpl[i].val_off, rt->tpl[i].val_len, &count);
    rt->rec.len = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &rt->rec, weir_buf_msgpack_write);
    msgpack_pack_map(&pk, count);
    weir_buf_append(&rt->rec, rt->body.data, rt->body.len);
    return 0;
}

/* Whether path `p` names, at `depth`, the map key k (kind STR/BIN) or the array index i of an
 * array of n elements. */
static bool part_hits(const weir_raccess_part_t *p, const weir_mp_obj_t *k, int64_t i, uint32_t n)
{
    if (k)
        return p->key && (k->type == WEIR_MP_STR || k->type == WEIR_MP_BIN) &&
               k->len == p->key_len && memcmp(k->ptr, p->key, p->key_len) == 0;
    if (p->key) return false;
    int64_t want = p->index < 0 ? p->index + (int64_t)n : p->index;
    return want == i;
}

/* Copies the map or array at v (len bytes) to out without the elements that the paths in
 * `paths` (those still on the way, `depth` elements in) end at: record_accessor's delete,
 * for each remove_keys path. Returns the bytes of v read, or -1. */
static ssize_t copy_without(const char *v, size_t len, const weir_raccess_t **paths, size_t np,
                            size_t depth, weir_buf_t *out)
{
    weir_mp_obj_t c;
    ssize_t h = weir_mp_read(v, len, &c);
    if (h <= 0) return -1;
    bool map = c.type == WEIR_MP_MAP;
    if (!map && c.type != WEIR_MP_ARRAY) { /* a path through a scalar deletes nothing */
        ssize_t n = weir_mp_skip(v, len, WEIR_MP_MAX_DEPTH);
        if (n > 0) weir_buf_append(out, v, (size_t)n);
        return n;
    }
    /* first pass: how many elements stay */
    uint32_t keep = 0;
    size_t off = (size_t)h;
    for (uint32_t i = 0; i < c.v.n; i++) {
        weir_mp_obj_t k;
        bool gone = false;
        ssize_t kl = 0;
        if (map) {
            kl = weir_mp_skip(v + off, len - off, WEIR_MP_MAX_DEPTH);
            if (kl <= 0) return -1;
            (void)weir_mp_read(v + off, len - off, &k);
        }
        for (size_t j = 0; j < np && !gone; j++)
            gone = paths[j]->n == depth + 1 &&
                   part_hits(&paths[j]->parts[depth], map ? &k : NULL, i, c.v.n);
        ssize_t vl = weir_mp_skip(v + off + (size_t)kl, len - off - (size_t)kl, WEIR_MP_MAX_DEPTH);
        if (vl <= 0) return -1;
        off += (size_t)(kl + vl);
        keep += !gone;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, weir_buf_msgpack_write);
    if (map) {
        msgpack_pack_map(&pk, keep);
    } else {
        msgpack_pack_array(&pk, keep);
    }
    /* second pass: copy, going down where a longer path continues */
    off = (size_t)h;
    const weir_raccess_t *below[RT_REMOVE_KEYS_MAX];
    for (uint32_t i = 0; i < c.v.n; i++) {
        weir_mp_obj_t k;
        ssize_t kl = 0;
        if (map) {
            kl = weir_mp_skip(v + off, len - off, WEIR_MP_MAX_DEPTH);
            (void)weir_mp_read(v + off, len - off, &k);
        }
        bool gone = false;
        size_t nb = 0;
        for (size_t j = 0; j < np && !gone; j++) {
            if (!part_hits(&paths[j]->parts[depth], map ? &k : NULL, i, c.v.n)) continue;
            if (paths[j]->n == depth + 1) {
                gone = true;
            } else if (nb < sizeof below / sizeof *below) {
                below[nb++] = paths[j];
            }
        }
        const char *val = v + off + (size_t)kl;
        ssize_t vl = weir_mp_skip(val, len - off - (size_t)kl, WEIR_MP_MAX_DEPTH);
        off += (size_t)(kl + vl);
        if (gone) continue;
        weir_buf_append(out, v + off - (size_t)(kl + vl), (size_t)kl);
        if (nb == 0) {
            weir_buf_append(out, val, (size_t)vl);
        } else if (copy_without(val, (size_t)vl, below, nb, depth + 1, out) < 0) {
            return -1;
        }
    }
    return (ssize_t)off;
}

/* rt->rec without the remove_keys, into rt->rec2; returns the record to use. */
static weir_buf_t *remove_fields(filter_rt_t *rt)
{
    if (!rt->nremove) return &rt->rec;
    const weir_raccess_t *paths[RT_REMOVE_KEYS_MAX];
    size_t np = 0;
    for (size_t i = 0; i < rt->nremove && np < sizeof paths / sizeof *paths; i++)
        paths[np++] = &rt->remove[i];
    rt->rec2.len = 0;
    if (copy_without(rt->rec.data, rt->rec.len, paths, np, 0, &rt->rec2) < 0) return &rt->rec;
    return &rt->rec2;
}

/* Fluentd's Time.at(value.to_f): numbers as they are, strings by their leading number (none:
 * 0), nil 0. Returns -1 for what has no to_f (true, false, containers) or a time weir cannot
 * store (before 1970 or after 2106). */
static int renewed_time(const char *v, size_t vlen, weir_time_t *t)
{
    weir_mp_obj_t o;
    if (weir_mp_read(v, vlen, &o) <= 0) return -1;
    double d;
    switch (o.type) {
    case WEIR_MP_UINT:
        d = (double)o.v.u;
        break;
    case WEIR_MP_INT:
        d = (double)o.v.i;
        break;
    case WEIR_MP_FLOAT:
        d = o.v.f;
        break;
    case WEIR_MP_NIL:
        d = 0;
        break;
    case WEIR_MP_STR:
    case WEIR_MP_BIN: {
        char tmp[64];
        size_t n = o.len < sizeof tmp - 1 ? o.len : sizeof tmp - 1;
        memcpy(tmp, o.ptr, n);
        tmp[n] = 0;
        d = strtod(tmp, NULL);
        break;
    }
    default:
        return -1;
    }
    if (!(d >= 0 && d < 4294967296.0)) return -1;
    t->sec = (uint32_t)d;
    t->nsec = (uint32_t)((d - (double)t->sec) * 1e9);
    return 0;
}

static void warn_dropped(filter_rt_t *rt, const char *why)
{
    unsigned long suppressed;
    if (weir_ratelimit_ok(&rt->warn_rl, &suppressed))
        weir_warn("record_transformer: tag %s: an event was dropped: %s (%lu more suppressed)",
                  rt->tag.tag, why, suppressed);
}

static weir_filter_result_t rt_filter(void *state, const weir_batch_t *in, weir_batch_t *out,
                                      void **hold)
{
    (void)hold;
    filter_rt_t *rt = state;
    tag_split(&rt->tag, in->tag, in->tag_len);
    weir_batch_iter_t it;
    weir_entry_t e;
    weir_batch_iter_init(&it, in->data.data, in->data.len);
    int r;
    while ((r = weir_batch_iter_next(&it, &e)) == 1) {
        size_t ntpl = expand_fields(rt, e.time, &e);
        if (build_record(rt, ntpl, &e) != 0) return WEIR_FILTER_ERROR;
        weir_time_t t = e.time;
        const char *v;
        size_t vlen;
        if (rt->renew_time_key &&
            weir_record_get(rt->rec.data, rt->rec.len, rt->renew_time_key,
                            strlen(rt->renew_time_key), &v, &vlen) == 1 &&
            renewed_time(v, vlen, &t) != 0) {
            warn_dropped(rt, "its renew_time_key field is not a time from 1970 to 2106");
            continue;
        }
        weir_buf_t *rec = remove_fields(rt);
        if (rec->len > RT_RECORD_MAX) {
            warn_dropped(rt, "its new record is larger than 8 MiB");
            continue;
        }
        weir_batch_append(out, t, rec->data, rec->len);
    }
    return r < 0 ? WEIR_FILTER_ERROR : WEIR_FILTER_NEW;
}

const weir_filter_ops_t weir_filter_record_transformer_ops = {
    .type = "record_transformer",
    .create = rt_create,
    .filter = rt_filter,
    .destroy = rt_destroy,
};
