/* Fluentd's line formatters: out_file, json, ltsv, single_value, msgpack and out_stdout's line.
 *
 * A formatter is built from plain options (format_conf.c fills them from a <format> section) and
 * then appends one line per event. Invariant: a call that fails leaves the output buffer exactly
 * as it found it, so a chunk never holds half a line. */
#include "weir/format.h"

#include <stdlib.h>
#include <string.h>

#include "format_internal.h"

static const char *const format_names[] = {
    [WEIR_FORMAT_OUT_FILE] = "out_file", [WEIR_FORMAT_JSON] = "json",
    [WEIR_FORMAT_LTSV] = "ltsv",         [WEIR_FORMAT_SINGLE_VALUE] = "single_value",
    [WEIR_FORMAT_MSGPACK] = "msgpack",   [WEIR_FORMAT_STDOUT] = "stdout",
};

#define NFORMATS (sizeof format_names / sizeof format_names[0])

int weir_format_type_parse(const char *name)
{
    for (size_t i = 0; i < NFORMATS; i++)
        if (strcmp(name, format_names[i]) == 0) return (int)i;
    return -1;
}

const char *weir_format_type_name(weir_format_type_t type)
{
    return (size_t)type < NFORMATS ? format_names[type] : "?";
}

void weir_format_opts_init(weir_format_opts_t *o, weir_format_type_t type)
{
    memset(o, 0, sizeof *o);
    o->type = type;
    o->output_type = WEIR_FORMAT_JSON;
    o->output_time = true;
    o->output_tag = true;
    o->delimiter = "\t";
    o->label_delimiter = ":";
    o->replacement = " ";
    o->message_key = "message";
    o->add_newline = true;
    o->newline = "\n";
    o->time_type = WEIR_TIME_STRING;
    o->localtime = true;
}

static char *dup_or(const char *s, const char *dflt, size_t *len)
{
    char *d = weir_strdup(s ? s : dflt);
    *len = strlen(d);
    return d;
}

/* Fluentd's out_stdout line; always in the process zone. */
#define STDOUT_TIME_FORMAT "%Y-%m-%d %H:%M:%S.%N %z"

int weir_formatter_init(weir_formatter_t *f, const weir_format_opts_t *o, weir_err_t *err)
{
    memset(f, 0, sizeof *f);
    weir_buf_init(&f->scratch);
    f->keys = weir_malloc(sizeof *f->keys);
    weir_fmt_keys_init(f->keys);
    f->type = o->type;
    f->output_time = o->output_time;
    f->output_tag = o->output_tag;
    f->add_newline = o->add_newline;
    f->time_type = o->time_type;
    f->delimiter = dup_or(o->delimiter, "\t", &f->delimiter_len);
    f->label_delimiter = dup_or(o->label_delimiter, ":", &f->label_delimiter_len);
    f->replacement = dup_or(o->replacement, " ", &f->replacement_len);
    f->message_key = dup_or(o->message_key, "message", &f->message_key_len);
    f->newline = dup_or(o->newline, "\n", &f->newline_len);
    if (f->type == WEIR_FORMAT_OUT_FILE && f->output_time && f->time_type == WEIR_TIME_STRING) {
        if (weir_timefmt_init(&f->time, o->time_format, o->localtime, o->timezone, err) < 0)
            goto err;
        f->has_time = true;
    }
    if (f->type == WEIR_FORMAT_STDOUT) {
        if (o->output_type == WEIR_FORMAT_STDOUT || o->output_type == WEIR_FORMAT_MSGPACK) {
            weir_err_set(err, "output_type %s: the stdout format cannot wrap it",
                         weir_format_type_name(o->output_type));
            goto err;
        }
        if (weir_timefmt_init(&f->time, STDOUT_TIME_FORMAT, true, NULL, err) < 0) goto err;
        f->has_time = true;
        weir_format_opts_t sub = *o;
        sub.type = o->output_type;
        f->sub = weir_malloc(sizeof *f->sub);
        if (weir_formatter_init(f->sub, &sub, err) < 0) {
            free(f->sub);
            f->sub = NULL;
            goto err;
        }
    }
    return 0;
err:
    weir_formatter_free(f);
    return -1;
}

void weir_formatter_free(weir_formatter_t *f)
{
    if (f->sub) {
        weir_formatter_free(f->sub);
        free(f->sub);
        f->sub = NULL;
    }
    if (f->has_time) weir_timefmt_free(&f->time);
    f->has_time = false;
    free(f->delimiter);
    free(f->label_delimiter);
    free(f->replacement);
    free(f->message_key);
    free(f->newline);
    f->delimiter = f->label_delimiter = f->replacement = f->message_key = f->newline = NULL;
    weir_buf_free(&f->scratch);
    if (f->keys) weir_fmt_keys_free(f->keys);
    free(f->keys);
    f->keys = NULL;
}

/* ---- helpers ---- */

static bool is_map(const char *rec, size_t len, weir_mp_obj_t *hdr, ssize_t *hlen)
{
    *hlen = weir_mp_read(rec, len, hdr);
    return *hlen > 0 && hdr->type == WEIR_MP_MAP;
}

/* The JSON of one record, which must be a map. Every fmt_* function below reads a record from
 * `avail` bytes that may hold more after it, and returns the record's length or -1, so a batch
 * walk learns where the next entry starts without a separate pass over the bytes. */
static ssize_t put_record_json(weir_formatter_t *f, weir_buf_t *out, const char *rec, size_t avail)
{
    weir_mp_obj_t hdr;
    ssize_t h;
    if (!is_map(rec, avail, &hdr, &h)) return -1;
    return weir_json_walk(out, rec, avail, f->keys);
}

/* Ruby's to_s of one value (see weir_value_to_s), the JSON of containers through `keys` (NULL:
 * weir_json_append's own). Returns the value's msgpack length or -1. */
static ssize_t to_s_walk(weir_buf_t *out, const char *mp, size_t len, weir_fmt_keys_t *keys)
{
    weir_mp_obj_t o;
    ssize_t n = weir_mp_read(mp, len, &o);
    if (n <= 0) return -1;
    switch (o.type) {
    case WEIR_MP_STR:
    case WEIR_MP_BIN:
        weir_buf_append(out, o.ptr, o.len);
        return n;
    case WEIR_MP_NIL:
        return n;
    case WEIR_MP_FLOAT: {
        char tmp[WEIR_DOUBLE_TEXT_MAX];
        weir_buf_append(out, tmp, weir_format_double(tmp, o.v.f, o.is_f32));
        return n;
    }
    default:
        return keys ? weir_json_walk(out, mp, len, keys) : weir_json_append(out, mp, len);
    }
}

ssize_t weir_value_to_s(weir_buf_t *out, const char *mp, size_t len)
{
    return to_s_walk(out, mp, len, NULL);
}

static ssize_t put_to_s(weir_formatter_t *f, weir_buf_t *out, const char *mp, size_t len)
{
    return to_s_walk(out, mp, len, f->keys);
}

static bool key_equals(const weir_mp_obj_t *k, const char *s, size_t n)
{
    return (k->type == WEIR_MP_STR || k->type == WEIR_MP_BIN) && k->len == n &&
           memcmp(k->ptr, s, n) == 0;
}

/* Appends `src` with every occurrence of `from` replaced by `to` (ltsv's value.gsub). */
static void put_replaced(weir_buf_t *out, const char *src, size_t n, const char *from,
                         size_t from_len, const char *to, size_t to_len)
{
    if (n == 0) return; /* src may be NULL then (an empty value in a buffer never grown) */
    if (from_len == 0) {
        weir_buf_append(out, src, n);
        return;
    }
    const char *p = src, *end = src + n;
    while (p < end) {
        const char *hit = memmem(p, (size_t)(end - p), from, from_len);
        if (!hit) break;
        weir_buf_append(out, p, (size_t)(hit - p));
        weir_buf_append(out, to, to_len);
        p = hit + from_len;
    }
    weir_buf_append(out, p, (size_t)(end - p));
}

/* ---- formatters ---- */

static void put_out_file_time(weir_formatter_t *f, weir_time_t t, weir_buf_t *out)
{
    switch (f->time_type) {
    case WEIR_TIME_FLOAT:
        /* NumericTimeFormatter#format_float: "sec.nsec" with nine digits */
        weir_buf_printf(out, "%u.%09u", (unsigned)t.sec, (unsigned)t.nsec);
        break;
    case WEIR_TIME_STRING:
        weir_timefmt_append(&f->time, t, out);
        break;
    default:
        weir_buf_printf(out, "%u", (unsigned)t.sec);
        break;
    }
}

static ssize_t fmt_out_file(weir_formatter_t *f, const char *tag, size_t tag_len, weir_time_t t,
                            const char *rec, size_t avail, weir_buf_t *out)
{
    if (f->output_time) {
        put_out_file_time(f, t, out);
        weir_buf_append(out, f->delimiter, f->delimiter_len);
    }
    if (f->output_tag) {
        weir_buf_append(out, tag, tag_len);
        weir_buf_append(out, f->delimiter, f->delimiter_len);
    }
    ssize_t n = put_record_json(f, out, rec, avail);
    if (n < 0) return -1;
    weir_buf_append(out, f->newline, f->newline_len);
    return n;
}

static ssize_t fmt_json(weir_formatter_t *f, const char *rec, size_t avail, weir_buf_t *out)
{
    ssize_t n = put_record_json(f, out, rec, avail);
    if (n < 0) return -1;
    if (f->add_newline) weir_buf_append(out, f->newline, f->newline_len);
    return n;
}

/* Each label once, as in the JSON formatters: the pairs are recorded as written and
 * weir_fmt_keys_close keeps the last value of a repeated label at its first place. */
static ssize_t fmt_ltsv(weir_formatter_t *f, const char *rec, size_t avail, weir_buf_t *out)
{
    weir_mp_obj_t hdr;
    ssize_t h;
    if (!is_map(rec, avail, &hdr, &h)) return -1;
    size_t off = (size_t)h, base = f->keys->n;
    for (uint32_t i = 0; i < hdr.v.n; i++) {
        if (i > 0) weir_buf_append(out, f->delimiter, f->delimiter_len);
        size_t key_at = out->len;
        ssize_t k = put_to_s(f, out, rec + off, avail - off);
        if (k < 0) goto bad;
        off += (size_t)k;
        size_t val_at = out->len;
        weir_buf_append(out, f->label_delimiter, f->label_delimiter_len);
        f->scratch.len = 0;
        ssize_t v = put_to_s(f, &f->scratch, rec + off, avail - off);
        if (v < 0) goto bad;
        off += (size_t)v;
        put_replaced(out, f->scratch.data, f->scratch.len, f->delimiter, f->delimiter_len,
                     f->replacement, f->replacement_len);
        weir_fmt_pair_t *pair = weir_fmt_keys_push(f->keys);
        *pair = (weir_fmt_pair_t){.key = key_at, .val = val_at, .end = out->len};
    }
    weir_fmt_keys_close(f->keys, base, out, f->delimiter, f->delimiter_len);
    if (f->add_newline) weir_buf_append(out, f->newline, f->newline_len);
    return (ssize_t)off;
bad:
    f->keys->n = base;
    return -1;
}

static ssize_t fmt_single_value(weir_formatter_t *f, const char *rec, size_t avail, weir_buf_t *out)
{
    weir_mp_obj_t hdr;
    ssize_t h;
    if (!is_map(rec, avail, &hdr, &h)) return -1;
    size_t off = (size_t)h;
    ssize_t found = -1; /* offset of the value; the last duplicate wins, as in a Ruby Hash */
    for (uint32_t i = 0; i < hdr.v.n; i++) {
        weir_mp_obj_t k;
        if (weir_mp_read_fast(rec + off, avail - off, &k) <= 0) return -1;
        ssize_t kl = weir_mp_value_len(rec + off, avail - off, WEIR_JSON_MAX_DEPTH);
        if (kl <= 0) return -1;
        off += (size_t)kl;
        if (key_equals(&k, f->message_key, f->message_key_len)) found = (ssize_t)off;
        ssize_t vl = weir_mp_value_len(rec + off, avail - off, WEIR_JSON_MAX_DEPTH);
        if (vl <= 0) return -1;
        off += (size_t)vl;
    }
    if (found >= 0 && put_to_s(f, out, rec + found, avail - (size_t)found) < 0) return -1;
    if (f->add_newline) weir_buf_append(out, f->newline, f->newline_len);
    return (ssize_t)off;
}

static ssize_t fmt_msgpack(const char *rec, size_t avail, weir_buf_t *out)
{
    weir_mp_obj_t hdr;
    ssize_t h;
    if (!is_map(rec, avail, &hdr, &h)) return -1;
    ssize_t n = weir_mp_skip(rec, avail, WEIR_JSON_MAX_DEPTH);
    if (n <= 0) return -1;
    weir_buf_append(out, rec, (size_t)n);
    return n;
}

static ssize_t format_walk(weir_formatter_t *f, const char *tag, size_t tag_len, weir_time_t t,
                           const char *rec, size_t avail, weir_buf_t *out);

static ssize_t fmt_stdout(weir_formatter_t *f, const char *tag, size_t tag_len, weir_time_t t,
                          const char *rec, size_t avail, weir_buf_t *out)
{
    weir_timefmt_append(&f->time, t, out);
    weir_buf_putc(out, ' ');
    weir_buf_append(out, tag, tag_len);
    weir_buf_append(out, ": ", 2);
    ssize_t n = format_walk(f->sub, tag, tag_len, t, rec, avail, out);
    if (n < 0) return -1;
    /* the sub-line loses its newline (Ruby's chomp) and the line gets exactly one "\n" */
    if (out->len >= 2 && memcmp(out->data + out->len - 2, "\r\n", 2) == 0)
        out->len -= 2;
    else if (out->len >= 1 && (out->data[out->len - 1] == '\n' || out->data[out->len - 1] == '\r'))
        out->len -= 1;
    weir_buf_putc(out, '\n');
    return n;
}

/* One line from the record at the start of `avail` bytes; returns the record's length, or -1
 * with `out` as it was. */
static ssize_t format_walk(weir_formatter_t *f, const char *tag, size_t tag_len, weir_time_t t,
                           const char *rec, size_t avail, weir_buf_t *out)
{
    size_t start = out->len;
    ssize_t n = -1;
    switch (f->type) {
    case WEIR_FORMAT_OUT_FILE:
        n = fmt_out_file(f, tag, tag_len, t, rec, avail, out);
        break;
    case WEIR_FORMAT_JSON:
        n = fmt_json(f, rec, avail, out);
        break;
    case WEIR_FORMAT_LTSV:
        n = fmt_ltsv(f, rec, avail, out);
        break;
    case WEIR_FORMAT_SINGLE_VALUE:
        n = fmt_single_value(f, rec, avail, out);
        break;
    case WEIR_FORMAT_MSGPACK:
        n = fmt_msgpack(rec, avail, out);
        break;
    case WEIR_FORMAT_STDOUT:
        n = fmt_stdout(f, tag, tag_len, t, rec, avail, out);
        break;
    }
    if (n < 0) out->len = start;
    return n;
}

int weir_formatter_format(weir_formatter_t *f, const char *tag, size_t tag_len, weir_time_t t,
                          const char *record, size_t record_len, weir_buf_t *out)
{
    size_t start = out->len;
    ssize_t n = format_walk(f, tag, tag_len, t, record, record_len, out);
    if (n == (ssize_t)record_len) return 0;
    out->len = start; /* failed, or bytes after the map */
    return -1;
}

/* Reads the [EventTime, record] header of the entry at p: 0x92, fixext8 type 0, sec, nsec. */
static bool entry_header(const char *p, size_t avail, weir_time_t *t)
{
    const unsigned char *u = (const unsigned char *)p;
    if (avail < 1 + WEIR_EVENTTIME_LEN || u[0] != 0x92 || u[1] != 0xd7 || u[2] != 0) return false;
    t->sec = (uint32_t)u[3] << 24 | (uint32_t)u[4] << 16 | (uint32_t)u[5] << 8 | u[6];
    t->nsec = (uint32_t)u[7] << 24 | (uint32_t)u[8] << 16 | (uint32_t)u[9] << 8 | u[10];
    return true;
}

long weir_format_batch(weir_formatter_t *f, weir_inject_t *inj, const weir_batch_t *b,
                       weir_buf_t *out, weir_buf_t *scratch, size_t *skipped, weir_err_t *err)
{
    /* The entries are walked here rather than with weir_batch_iter_next: the formatter's own
     * walk finds where each record ends, which saves a second pass over every record (a fifth
     * of the time of a json line). A record the formatter rejects is measured with
     * weir_mp_skip so the walk can go on to the next one. */
    const char *p = b->data.data, *end = b->data.data + b->data.len;
    long lines = 0;
    size_t bad = 0, index = 0;
    bool do_inject = inj && weir_inject_enabled(inj);
    for (; p < end; index++) {
        weir_time_t t;
        if (!entry_header(p, (size_t)(end - p), &t)) goto not_entries;
        const char *rec = p + 1 + WEIR_EVENTTIME_LEN;
        size_t avail = (size_t)(end - rec);
        ssize_t n;
        if (do_inject) {
            scratch->len = 0;
            n = weir_inject_walk(inj, b->tag, b->tag_len, t, rec, avail, scratch);
            if (n > 0 && format_walk(f, b->tag, b->tag_len, t, scratch->data, scratch->len, out) !=
                             (ssize_t)scratch->len)
                n = -1;
        } else {
            n = format_walk(f, b->tag, b->tag_len, t, rec, avail, out);
        }
        if (n > 0) {
            lines++;
            p = rec + n;
            continue;
        }
        if (bad++ == 0)
            weir_err_set(err,
                         "tag '%s': record %zu is not a msgpack map that can be formatted "
                         "(nested deeper than %d?); skipped",
                         b->tag, index, WEIR_JSON_MAX_DEPTH);
        n = weir_mp_skip(rec, avail, WEIR_MP_MAX_DEPTH);
        if (n <= 0) goto not_entries;
        p = rec + n;
    }
    if (skipped) *skipped = bad;
    return lines;
not_entries:
    if (skipped) *skipped = bad;
    weir_err_set(err, "tag '%s': entry %zu is not a canonical [time, record] entry", b->tag, index);
    return -1;
}
