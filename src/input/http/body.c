/* Request → events for <source> @type http: which part of the request holds the records
 * (the body, a query or form parameter, chosen by Content-Type as in_http does), how they
 * decode (JSON, ndjson, msgpack), each record's time (docs/http-input.md 2.5) and the keys
 * added to every record (HTTP_*, QUERY_*, REMOTE_ADDR).
 *
 * Invariant: a request is all-or-nothing. Records go into the caller's batch as they are
 * decoded, and any error that Fluentd answers with 400 cuts the batch back to where it was,
 * so nothing of a rejected request is ever emitted. */
#include <math.h>
#include <stdio.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "weir/hash.h"
#include "weir/http_input.h"
#include "weir/log.h"

/* Records with at most this many keys find repeats and look keys up by comparing with every
 * earlier key (at most 120 comparisons); larger ones use keyed hash sets, so a record's keys
 * cost linear time whatever a sender puts in them. */
#define BODY_LINEAR_KEYS 16

_Thread_local uint64_t weir_http_key_work;

/* One top-level key/value of a record being rewritten. */
typedef struct rec_ent {
    const char *key; /* encoded key */
    size_t key_len;
    const char *kstr; /* payload when the key is a string, else NULL */
    uint32_t kstr_len;
    const char *val; /* encoded value */
    size_t val_len;
    bool drop; /* removed (the time key, or a repeat) */
    bool nil;  /* replaced by nil (null_value_pattern / null_empty_string) */
    int extra; /* >= 0: replaced by extras[extra] */
} rec_ent_t;

typedef struct body_ctx {
    const weir_http_body_opts_t *o;
    const weir_http_body_in_t *in;
    weir_batch_t *out;
    size_t out_len0;  /* out->data.len on entry: what this request added is past it */
    size_t max_batch; /* opts' max_batch_bytes, or WEIR_HTTP_MAX_BATCH_BYTES */
    size_t records;
    bool have_param_time;
    weir_time_t param_time;
    bool from_json;  /* records from the JSON converter have no repeated keys */
    weir_buf_t conv; /* JSON converted to msgpack */
    weir_buf_t rec;  /* the rewritten record */
    rec_ent_t *ents;
    size_t ents_cap;
    size_t nents;
    bool indexed;           /* str_keys holds this record's keys (else find_key scans) */
    weir_hset_t str_keys;   /* string keys by payload → first entry (large records) */
    weir_hset_t other_keys; /* other keys by encoding → first entry (large records) */
    bool *extra_used;
    weir_err_t *err;
} body_ctx_t;

/* ---- parameters ----------------------------------------------------------------------------- */

typedef struct param {
    const char *p;
    size_t len;
    bool set;
    weir_buf_t store; /* decoded copy when it came from a query or form */
} param_t;

enum { P_JSON, P_MSGPACK, P_NDJSON, P_TIME, P_COUNT };
static const char *const param_names[P_COUNT] = {"json", "msgpack", "ndjson", "time"};

typedef struct params {
    param_t v[P_COUNT];
    bool seen[P_COUNT]; /* in the source being read: WEBrick keeps the first value */
} params_t;

static int param_cb(void *arg, const char *key, size_t klen, const char *val, size_t vlen)
{
    params_t *ps = arg;
    for (int i = 0; i < P_COUNT; i++) {
        if (strlen(param_names[i]) != klen || memcmp(param_names[i], key, klen) != 0) continue;
        if (ps->seen[i]) return 0;
        ps->seen[i] = true;
        param_t *pa = &ps->v[i];
        pa->store.len = 0;
        weir_buf_append(&pa->store, val, vlen);
        pa->p = pa->store.data ? pa->store.data : "";
        pa->len = vlen;
        pa->set = true;
    }
    return 0;
}

static bool prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static void set_body_param(params_t *ps, int which, const weir_http_body_in_t *in)
{
    ps->v[which].p = in->body ? in->body : "";
    ps->v[which].len = in->body_len;
    ps->v[which].set = true;
}

/* in_http's params: the query string, then (overriding it) the form body, or the body itself
 * as the parameter its Content-Type names. Content-Type is matched as a case-sensitive
 * prefix, as Ruby's /^application\/json/ does. */
static void collect_params(params_t *ps, const weir_http_body_in_t *in)
{
    if (in->query) weir_http_query_parse(in->query, in->query_len, param_cb, ps);
    memset(ps->seen, 0, sizeof ps->seen);
    const char *ct = in->content_type ? in->content_type : "";
    if (prefix(ct, "application/x-www-form-urlencoded")) {
        weir_http_query_parse(in->body ? in->body : "", in->body_len, param_cb, ps);
    } else if (prefix(ct, "multipart/form-data")) {
        weir_debug("http: multipart/form-data bodies are not supported; no parameters read");
    } else if (prefix(ct, "application/json") || prefix(ct, "application/csp-report")) {
        set_body_param(ps, P_JSON, in);
    } else if (prefix(ct, "application/msgpack")) {
        set_body_param(ps, P_MSGPACK, in);
    } else if (prefix(ct, "application/x-ndjson")) {
        set_body_param(ps, P_NDJSON, in);
    }
}

static void params_free(params_t *ps)
{
    for (int i = 0; i < P_COUNT; i++)
        weir_buf_free(&ps->v[i].store);
}

/* ?time=: Ruby's to_f, 0 means now, else the float-time rule on the float's text. */
static weir_time_t param_time(const param_t *pa, weir_time_t now)
{
    double d = weir_ruby_to_f(pa->p, pa->len);
    if (d == 0) return now;
    char text[32];
    size_t n = weir_ruby_float_to_s(d, text);
    return weir_time_from_float_text(text, n);
}

/* ---- record time ---------------------------------------------------------------------------- */

static const char *ruby_class(const weir_mp_obj_t *v)
{
    switch (v->type) {
    case WEIR_MP_STR:
    case WEIR_MP_BIN:
        return "String";
    case WEIR_MP_ARRAY:
        return "Array";
    case WEIR_MP_MAP:
        return "Hash";
    case WEIR_MP_BOOL:
        return "true";
    case WEIR_MP_FLOAT:
        return "Float";
    default:
        return "Object";
    }
}

/* Default mode without a time parser: Ruby's Time.at on the value; nil and false mean now. */
static int time_at(const weir_mp_obj_t *v, weir_time_t now, weir_time_t *t, weir_err_t *err)
{
    switch (v->type) {
    case WEIR_MP_NIL:
        *t = now;
        return 0;
    case WEIR_MP_BOOL:
        if (!v->v.b) {
            *t = now;
            return 0;
        }
        break;
    case WEIR_MP_UINT:
        *t = (weir_time_t){(uint32_t)v->v.u, 0};
        return 0;
    case WEIR_MP_INT:
        *t = (weir_time_t){(uint32_t)v->v.i, 0};
        return 0;
    case WEIR_MP_FLOAT: {
        if (!isfinite(v->v.f)) {
            weir_err_set(err, "can't convert %s into an exact number",
                         isnan(v->v.f) ? "NaN" : "Infinity");
            return -1;
        }
        if (fabs(v->v.f) >= WEIR_TIMEPARSER_FLOAT_MAX) {
            weir_err_set(err, "time value %g is out of range", v->v.f);
            return -1;
        }
        /* Ruby reads the float's exact value and truncates to nanoseconds */
        long double f = v->v.f, s = floorl(f);
        uint32_t ns = (uint32_t)floorl((f - s) * 1000000000.0L);
        *t = (weir_time_t){(uint32_t)(int64_t)s, ns > 999999999 ? 999999999 : ns};
        return 0;
    }
    default:
        break;
    }
    weir_err_set(err, "can't convert %s into an exact number", ruby_class(v));
    return -1;
}

/* ---- one record ----------------------------------------------------------------------------- */

/* A value dropped without failing the request (see weir_http_body_skips_t). */
static void skipped(body_ctx_t *c, const char *why)
{
    weir_debug("http: skipped %s", why);
    weir_http_body_skips_t *sk = c->in->skips;
    if (sk && sk->count++ == 0) weir_err_set(&sk->first, "%s", why);
}

static bool key_is(const rec_ent_t *e, const char *k, size_t klen)
{
    return e->kstr && e->kstr_len == klen && memcmp(e->kstr, k, klen) == 0;
}

/* Two keys are the same when both are strings with the same payload (however their length was
 * encoded, as msgpack-ruby decodes both to one Ruby String) or both are other values with the
 * same encoding. */
static bool same_key(const rec_ent_t *a, const rec_ent_t *b)
{
    weir_http_key_work++;
    if (a->kstr || b->kstr) return b->kstr && key_is(a, b->kstr, b->kstr_len);
    return a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0;
}

/* Splits a map into its entries. The bytes were validated before, so every read succeeds. */
static size_t read_entries(body_ctx_t *c, const char *p, size_t len)
{
    weir_mp_obj_t o;
    ssize_t h = weir_mp_read(p, len, &o);
    size_t n = o.v.n, off = (size_t)h;
    if (n > c->ents_cap) {
        c->ents_cap = n;
        c->ents = weir_realloc(c->ents, n * sizeof *c->ents);
    }
    for (size_t i = 0; i < n; i++) {
        rec_ent_t *e = &c->ents[i];
        memset(e, 0, sizeof *e);
        e->extra = -1;
        e->key = p + off;
        e->key_len = (size_t)weir_mp_skip(p + off, len - off, WEIR_MP_MAX_DEPTH);
        if (weir_mp_read(e->key, e->key_len, &o) > 0 && o.type == WEIR_MP_STR) {
            e->kstr = o.ptr;
            e->kstr_len = o.len;
        }
        off += e->key_len;
        e->val = p + off;
        e->val_len = (size_t)weir_mp_skip(p + off, len - off, WEIR_MP_MAX_DEPTH);
        off += e->val_len;
    }
    c->nents = n;
    return n;
}

/* A repeat of entry `first` found at entry i: the first place keeps the last value. */
static void merge_repeat(rec_ent_t *ents, size_t first, size_t i)
{
    ents[first].val = ents[i].val;
    ents[first].val_len = ents[i].val_len;
    ents[i].drop = true;
}

/* Removes repeated keys, as a Ruby Hash does: a repeated key keeps its first place and its
 * last value. For large records this also fills the key sets that find_key() then uses. JSON
 * records come without repeats (the converter removes them): they are indexed only when
 * there are added keys to look up (the time key alone is one scan, cheaper than a set). */
static void index_entries(body_ctx_t *c, bool may_repeat)
{
    rec_ent_t *ents = c->ents;
    size_t n = c->nents;
    c->indexed = n > BODY_LINEAR_KEYS && (may_repeat || c->in->nextras > 0);
    if (!c->indexed) {
        for (size_t i = 1; i < n && may_repeat; i++) {
            for (size_t k = 0; k < i; k++) {
                if (ents[k].drop || !same_key(&ents[k], &ents[i])) continue;
                merge_repeat(ents, k, i);
                break;
            }
        }
        return;
    }
    weir_hset_clear(&c->str_keys);
    weir_hset_clear(&c->other_keys);
    for (size_t i = 0; i < n; i++) {
        rec_ent_t *e = &ents[i];
        size_t first;
        bool added = e->kstr ? weir_hset_add(&c->str_keys, e->kstr, e->kstr_len, i, &first)
                             : weir_hset_add(&c->other_keys, e->key, e->key_len, i, &first);
        weir_http_key_work++;
        if (!added) merge_repeat(ents, first, i);
    }
}

/* The entry whose key is the string k, unless it was dropped (a repeat, or the time key). */
static rec_ent_t *find_key(body_ctx_t *c, const char *k, size_t klen)
{
    rec_ent_t *ents = c->ents;
    if (c->indexed) {
        size_t i;
        weir_http_key_work++;
        if (!weir_hset_get(&c->str_keys, k, klen, &i)) return NULL;
        return ents[i].drop ? NULL : &ents[i];
    }
    for (size_t i = 0; i < c->nents; i++) {
        weir_http_key_work++;
        if (!ents[i].drop && key_is(&ents[i], k, klen)) return &ents[i];
    }
    return NULL;
}

static bool nulled(const body_ctx_t *c, const weir_mp_obj_t *v)
{
    if (v->type != WEIR_MP_STR) return false;
    if (c->o->null_empty_string && v->len == 0) return true;
    if (!c->o->null_value) return false;
    char *s = weir_strndup(v->ptr, v->len);
    bool m = regexec(c->o->null_value, s, 0, NULL, 0) == 0;
    free(s);
    return m;
}

/* The record's time, per docs/http-input.md 2.5; drops the time key where Fluentd does. */
static int record_time(body_ctx_t *c, weir_time_t *t)
{
    const weir_http_body_opts_t *o = c->o;
    const char *tk = o->time_key ? o->time_key : "time";
    *t = c->in->now;
    if (!o->parse_json && c->have_param_time) {
        *t = c->param_time; /* default mode leaves the record's time field alone */
        return 0;
    }
    rec_ent_t *e = find_key(c, tk, strlen(tk));
    if (e) {
        weir_mp_obj_t v;
        weir_mp_read(e->val, e->val_len, &v);
        if (!o->keep_time_key) e->drop = true;
        int rc = o->time_parser ? weir_timeparser_parse(o->time_parser, &v, c->in->now, t, c->err)
                                : time_at(&v, c->in->now, t, c->err);
        if (rc != 0) return -1;
    }
    if (c->have_param_time) *t = c->param_time;
    return 0;
}

static void pack_extra_value(msgpack_packer *pk, const weir_http_extra_t *x)
{
    if (!x->value) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_str(pk, x->value_len);
    msgpack_pack_str_body(pk, x->value, x->value_len);
}

static int emit_record(body_ctx_t *c, const char *p, size_t len)
{
    if (++c->records > c->o->max_records) {
        weir_err_set(c->err, "too many records in one request (the limit is %zu)",
                     c->o->max_records);
        return -1;
    }
    size_t n = read_entries(c, p, len);
    rec_ent_t *ents = c->ents;
    index_entries(c, !c->from_json);
    weir_time_t t;
    if (record_time(c, &t) != 0) return -1;
    for (size_t i = 0; i < n && c->o->parse_json; i++) {
        weir_mp_obj_t v;
        if (!ents[i].drop && weir_mp_read(ents[i].val, ents[i].val_len, &v) > 0 && nulled(c, &v))
            ents[i].nil = true;
    }
    size_t kept = 0, added = 0;
    for (size_t x = 0; x < c->in->nextras; x++) {
        const weir_http_extra_t *ex = &c->in->extras[x];
        rec_ent_t *e = find_key(c, ex->key, ex->key_len);
        c->extra_used[x] = e != NULL;
        if (e)
            e->extra = (int)x;
        else
            added++;
    }
    for (size_t i = 0; i < n; i++)
        kept += !ents[i].drop;
    c->rec.len = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &c->rec, weir_buf_msgpack_write);
    msgpack_pack_map(&pk, kept + added);
    for (size_t i = 0; i < n; i++) {
        rec_ent_t *e = &ents[i];
        if (e->drop) continue;
        weir_buf_append(&c->rec, e->key, e->key_len);
        if (e->extra >= 0)
            pack_extra_value(&pk, &c->in->extras[e->extra]);
        else if (e->nil)
            msgpack_pack_nil(&pk);
        else
            weir_buf_append(&c->rec, e->val, e->val_len);
    }
    for (size_t x = 0; x < c->in->nextras; x++) {
        if (c->extra_used[x]) continue;
        const weir_http_extra_t *ex = &c->in->extras[x];
        msgpack_pack_str(&pk, ex->key_len);
        msgpack_pack_str_body(&pk, ex->key, ex->key_len);
        pack_extra_value(&pk, ex);
    }
    weir_batch_append(c->out, t, c->rec.data, c->rec.len);
    /* checked per record, so the work done before a refusal is bounded too: each record
     * costs time in proportion to what it writes (its entries and the added keys). The
     * caller cuts the batch back to where it was on a refusal. */
    if (c->out->data.len - c->out_len0 > c->max_batch) {
        weir_err_set(c->err, "the request decodes to more than %zu bytes of events", c->max_batch);
        return -1;
    }
    return 0;
}

/* A decoded value: a map is one record, an array's maps are records, anything else (and an
 * array's non-map elements) is skipped, as Fluentd's parsers yield nil for them. */
static int emit_value(body_ctx_t *c, const char *p, size_t len)
{
    weir_mp_obj_t o;
    ssize_t h = weir_mp_read(p, len, &o);
    if (h <= 0) return 0;
    if (o.type == WEIR_MP_MAP) return emit_record(c, p, len);
    if (o.type != WEIR_MP_ARRAY) {
        skipped(c, "a body value that is not a map or an array");
        return 0;
    }
    size_t off = (size_t)h;
    for (uint32_t i = 0; i < o.v.n; i++) {
        ssize_t el = weir_mp_skip(p + off, len - off, WEIR_MP_MAX_DEPTH);
        weir_mp_obj_t e;
        if (weir_mp_read(p + off, len - off, &e) > 0 && e.type == WEIR_MP_MAP) {
            if (emit_record(c, p + off, (size_t)el) != 0) return -1;
        } else {
            skipped(c, "an array element that is not a map");
        }
        off += (size_t)el;
    }
    return 0;
}

/* ---- the three encodings -------------------------------------------------------------------- */

static int decode_json(body_ctx_t *c, const char *s, size_t len)
{
    weir_err_t jerr;
    c->conv.len = 0;
    if (weir_http_json_to_msgpack(s, len, c->o->max_depth, &c->conv, &jerr) != 0) {
        /* Fluentd >= 1.17 skips a record its parser cannot read and still answers 200 */
        skipped(c, jerr.msg); /* "invalid JSON at byte N: why" */
        return 0;
    }
    c->from_json = true;
    return emit_value(c, c->conv.data, c->conv.len);
}

/* ndjson: lines split on \r?\n, each decoded as JSON on its own. */
static int decode_ndjson(body_ctx_t *c, const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t l = (size_t)(le - p);
        if (nl && l > 0 && p[l - 1] == '\r') l--;
        if (l > 0 && decode_json(c, p, l) != 0) return -1;
        p = nl ? nl + 1 : end;
    }
    return 0;
}

/* A stream of msgpack values; an incomplete value at the end is ignored, as the msgpack
 * unpacker's feed_each does, and malformed bytes fail the request. */
static int decode_msgpack(body_ctx_t *c, const char *s, size_t len)
{
    size_t off = 0;
    c->from_json = false;
    while (off < len) {
        ssize_t n = weir_mp_skip(s + off, len - off, c->o->max_depth);
        if (n == WEIR_MP_INCOMPLETE) {
            char why[80];
            snprintf(why, sizeof why, "an incomplete msgpack value (%zu bytes) at the end",
                     len - off);
            skipped(c, why);
            return 0;
        }
        if (n < 0) {
            weir_err_set(c->err, "invalid msgpack at byte %zu: %s", off,
                         n == WEIR_MP_TOO_DEEP ? "nested too deeply" : "malformed");
            return -1;
        }
        if (emit_value(c, s + off, (size_t)n) != 0) return -1;
        off += (size_t)n;
    }
    return 0;
}

/* ---- entry point ---------------------------------------------------------------------------- */

static int decode(body_ctx_t *c, params_t *ps)
{
    const weir_http_body_in_t *in = c->in;
    if (c->o->parse_json) return decode_json(c, in->body ? in->body : "", in->body_len);
    if (ps->v[P_MSGPACK].set) return decode_msgpack(c, ps->v[P_MSGPACK].p, ps->v[P_MSGPACK].len);
    if (ps->v[P_JSON].set) return decode_json(c, ps->v[P_JSON].p, ps->v[P_JSON].len);
    if (ps->v[P_NDJSON].set) return decode_ndjson(c, ps->v[P_NDJSON].p, ps->v[P_NDJSON].len);
    weir_err_set(c->err, "'json', 'ndjson' or 'msgpack' parameter is required");
    return -1;
}

int weir_http_body_decode(const weir_http_body_opts_t *o, const weir_http_body_in_t *in,
                          weir_batch_t *out, weir_err_t *err)
{
    body_ctx_t c;
    memset(&c, 0, sizeof c);
    c.o = o;
    c.in = in;
    c.out = out;
    c.out_len0 = out->data.len;
    c.max_batch = o->max_batch_bytes ? o->max_batch_bytes : WEIR_HTTP_MAX_BATCH_BYTES;
    c.err = err;
    if (in->skips) memset(in->skips, 0, sizeof *in->skips);
    c.extra_used = weir_calloc(in->nextras + 1, sizeof *c.extra_used);
    weir_buf_init(&c.conv);
    weir_buf_init(&c.rec);
    weir_hset_init(&c.str_keys);
    weir_hset_init(&c.other_keys);
    params_t ps;
    memset(&ps, 0, sizeof ps);
    uint32_t count0 = out->count;
    if (o->parse_json) {
        if (in->query) weir_http_query_parse(in->query, in->query_len, param_cb, &ps);
    } else {
        collect_params(&ps, in);
    }
    if (ps.v[P_TIME].set) {
        c.have_param_time = true;
        c.param_time = param_time(&ps.v[P_TIME], in->now);
    }
    int rc = decode(&c, &ps);
    if (rc != 0) {
        out->data.len = c.out_len0;
        out->count = count0;
    }
    params_free(&ps);
    weir_buf_free(&c.conv);
    weir_buf_free(&c.rec);
    free(c.ents);
    free(c.extra_used);
    weir_hset_free(&c.str_keys);
    weir_hset_free(&c.other_keys);
    return rc;
}
