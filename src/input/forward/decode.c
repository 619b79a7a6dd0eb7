/* The forward frame decoder: one complete top-level msgpack object in, one batch of canonical
 * entries ([fixext8 EventTime, map]) out, following policy R of docs/forward-protocol.md 6.2.
 *
 * Invariants:
 * - The whole frame is validated (and decompressed) before success is returned; a fatal frame
 *   leaves the batch empty, so nothing of it can be committed. Invalid *events* are skipped,
 *   counted in info->skipped and logged at warn (rate limited); the rest of the frame stands.
 *   skip_invalid_event false does not change this: Fluentd would then pass a broken event on
 *   to its filters and outputs, which weir cannot represent in a canonical batch, so such
 *   events are skipped either way.
 * - Nothing is allocated per event and no msgpack-c object tree is built: values are measured
 *   with the scanner (fwd_value_len) over bytes that are all present. Entries that are already
 *   canonical (the common case from Fluentd and Fluent Bit) are copied as they are, one memcpy
 *   per run of consecutive canonical entries.
 * - Nesting counts protocol levels: the request array is level 1; Forward's entry array and
 *   Packed's payload are level 2, so an entry is level 3 and its record level 4 in both modes,
 *   and Message's record is level 2. No level may exceed opts->max_depth.
 * - Unknown ext types inside records are kept as opaque bytes (case 71): weir never needs to
 *   interpret them, and Fluent Bit sends them. Fluentd would close the connection instead.
 * - A plain PackedForward payload that starts with gzip or zstd magic bytes is decompressed
 *   (case 68; see sniff()); info->mode still says what the sender announced.
 * - The ack echoes `chunk` of any type, except nil and false, which ask for no ack (Fluentd
 *   answers only `if option['chunk']`). A fluent_signal 1/2 (metrics/traces) PackedForward is
 *   dropped with 0 events and still acked. A nil heartbeat leaves the batch's tag as it was. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward_internal.h"
#include "weir/inflate.h"
#include "weir/log.h"
#include "weir/mp.h"

#define FWD_NSEC_PER_SEC 1000000000u
#define FWD_GROUP_START 0xffffffffu /* Fluent Bit's group marker times (flb_log_event.h) */
#define FWD_GROUP_END 0xfffffffeu
#define FWD_TAG_LOG_MAX 64u   /* tag bytes shown in a log line */
#define FWD_STREAM UINT64_MAX /* entry count of a Packed payload: until the end */

typedef enum time_result { TIME_OK, TIME_INVALID, TIME_MARKER } time_result_t;

typedef struct fwd_dec {
    const fwd_decode_opts_t *opts;
    weir_batch_t *out;
    fwd_frame_info_t *info;
    weir_err_t *err;
    int max_depth;
    const char *tag;
    size_t tag_len;
    weir_buf_t extras; /* the extra pairs, encoded once per frame as str:str */
    size_t *key_len;
    weir_buf_t inflated;
} fwd_dec_t;

static _Thread_local weir_ratelimit_t skip_warn_rl = {WEIR_WARN_INTERVAL_MS, 0, 0};

void fwd_decode_opts_init(fwd_decode_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->skip_invalid_event = true;
    o->max_decompressed = FWD_DECOMPRESS_LIMIT_DEFAULT;
    o->max_depth = FWD_MAX_DEPTH;
    o->now = weir_time_now();
}

static const char *type_name(weir_mp_type_t t)
{
    static const char *const names[] = {"nil",   "a bool", "an int",   "an int", "a float",
                                        "a str", "a bin",  "an array", "a map",  "an ext"};
    return names[t];
}

static void printable(const char *s, size_t n, char *out, size_t outlen)
{
    size_t i, j = 0;
    for (i = 0; i < n && j + 4 < outlen && i < FWD_TAG_LOG_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        out[j++] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    if (i < n && j + 3 < outlen) {
        memcpy(out + j, "...", 3);
        j += 3;
    }
    out[j] = '\0';
}

static void skip_event(fwd_dec_t *d, const char *why)
{
    d->info->skipped++;
    unsigned long suppressed = 0;
    if (!weir_log_enabled(WEIR_LOG_WARN) || !weir_ratelimit_ok(&skip_warn_rl, &suppressed)) return;
    char tag[FWD_TAG_LOG_MAX + 8];
    printable(d->tag, d->tag_len, tag, sizeof tag);
    if (suppressed)
        weir_warn("forward: skip invalid event: %s (tag '%s'; %lu more skipped since the last "
                  "warning)",
                  why, tag, suppressed);
    else
        weir_warn("forward: skip invalid event: %s (tag '%s')", why, tag);
}

/* Length of a value already validated by an earlier, stricter fwd_value_len. */
static size_t extent(const char *p, size_t avail)
{
    return (size_t)fwd_value_len(p, avail, FWD_MAX_DEPTH, NULL);
}

/* ---- time ---- */

static time_result_t parse_time(const fwd_dec_t *d, const char *p, size_t len, bool wrapper_ok,
                                weir_time_t *t, const char **why);

/* v1.5 `[time, {metadata}]`: the metadata is dropped, as Fluentd does. */
static time_result_t parse_wrapper(const fwd_dec_t *d, const char *p, size_t len, uint32_t n,
                                   size_t h, weir_time_t *t, const char **why)
{
    if (n != 2) {
        *why = "time is an array but not a [time, metadata] pair";
        return TIME_INVALID;
    }
    size_t tl = extent(p + h, len - h);
    weir_mp_obj_t meta;
    if (weir_mp_read(p + h + tl, len - h - tl, &meta) <= 0 || meta.type != WEIR_MP_MAP) {
        *why = "metadata of a [time, metadata] pair is not a map";
        return TIME_INVALID;
    }
    weir_mp_obj_t o;
    if (weir_mp_read(p + h, tl, &o) > 0 && o.type == WEIR_MP_EXT && o.ext_type == 0 && o.len == 8) {
        uint32_t sec = fwd_rd32((const unsigned char *)o.ptr);
        uint32_t nsec = fwd_rd32((const unsigned char *)o.ptr + 4);
        if ((sec == FWD_GROUP_START || sec == FWD_GROUP_END) && nsec == 0) return TIME_MARKER;
    }
    return parse_time(d, p + h, tl, false, t, why);
}

static time_result_t parse_time(const fwd_dec_t *d, const char *p, size_t len, bool wrapper_ok,
                                weir_time_t *t, const char **why)
{
    weir_mp_obj_t o;
    ssize_t h = weir_mp_read(p, len, &o);
    if (h <= 0) {
        *why = "time is malformed";
        return TIME_INVALID;
    }
    switch (o.type) {
    case WEIR_MP_UINT:
        if (o.v.u > UINT32_MAX) {
            *why = "time is above 2^32-1";
            return TIME_INVALID;
        }
        t->sec = (uint32_t)o.v.u;
        t->nsec = 0;
        break;
    case WEIR_MP_EXT:
        if (o.ext_type != 0 || o.len != 8) {
            *why = "time is an ext value but not an EventTime (type 0, 8 bytes)";
            return TIME_INVALID;
        }
        t->sec = fwd_rd32((const unsigned char *)o.ptr);
        t->nsec = fwd_rd32((const unsigned char *)o.ptr + 4);
        if (t->nsec >= FWD_NSEC_PER_SEC) {
            *why = "EventTime nanoseconds are 10^9 or more";
            return TIME_INVALID;
        }
        break;
    case WEIR_MP_ARRAY:
        if (!wrapper_ok) {
            *why = "time inside a [time, metadata] pair is not an integer or EventTime";
            return TIME_INVALID;
        }
        return parse_wrapper(d, p, len, o.v.n, (size_t)h, t, why);
    case WEIR_MP_INT:
        *why = "time is negative";
        return TIME_INVALID;
    case WEIR_MP_NIL:
        *why = "time is nil";
        return TIME_INVALID;
    case WEIR_MP_FLOAT:
        *why = "time is a float";
        return TIME_INVALID;
    default:
        *why = o.type == WEIR_MP_STR ? "time is a string" : "time is not an integer or EventTime";
        return TIME_INVALID;
    }
    if (t->sec == 0) *t = d->opts->now; /* Fluentd: a zero time means "received now" */
    return TIME_OK;
}

/* ---- output ---- */

static bool is_extra_key(const fwd_dec_t *d, const char *k, size_t klen)
{
    unsigned char c = (unsigned char)k[0];
    const char *name = k + 1;
    size_t len = c & 0x1f;
    if ((c & 0xe0) != 0xa0) { /* not a fixstr, the usual key: take the general path */
        weir_mp_obj_t o;
        if (weir_mp_read(k, klen, &o) <= 0 || o.type != WEIR_MP_STR) return false;
        name = o.ptr;
        len = o.len;
    }
    for (size_t i = 0; i < d->opts->n_extra; i++)
        if (d->key_len[i] == len && memcmp(d->opts->extra_keys[i], name, len) == 0) return true;
    return false;
}

/* Appends [t, record] with the extra pairs set: existing pairs with those (str) keys are
 * dropped, the extras appended. The kept pairs are copied in runs after a gap as wide as the
 * largest map header, then moved down behind the header once the count is known. */
static void emit_rewritten(fwd_dec_t *d, weir_time_t t, const char *rec, size_t rlen)
{
    weir_mp_obj_t m;
    size_t off = (size_t)weir_mp_read(rec, rlen, &m);
    weir_buf_t *b = &d->out->data;
    const size_t head = 1 + WEIR_EVENTTIME_LEN, gap = 5;
    weir_buf_reserve(b, head + gap + rlen + d->extras.len);
    char *base = b->data + b->len;
    char *body = base + head + gap;
    size_t blen = 0;
    uint64_t kept = 0;
    const char *run = rec + off;
    size_t run_len = 0;
    for (uint32_t i = 0; i < m.v.n; i++) {
        size_t kl = extent(rec + off, rlen - off);
        size_t vl = extent(rec + off + kl, rlen - off - kl);
        if (is_extra_key(d, rec + off, kl)) {
            memcpy(body + blen, run, run_len);
            blen += run_len;
            run = rec + off + kl + vl;
            run_len = 0;
        } else {
            run_len += kl + vl;
            kept++;
        }
        off += kl + vl;
    }
    memcpy(body + blen, run, run_len);
    blen += run_len;
    memcpy(body + blen, d->extras.data, d->extras.len);
    blen += d->extras.len;
    base[0] = (char)0x92;
    weir_time_encode(t, base + 1);
    /* kept <= rlen / 2 and n_extra is a handful, so the count fits a map32 */
    size_t hl = fwd_mp_map_hdr(base + head, (uint32_t)(kept + d->opts->n_extra));
    memmove(base + head + hl, body, blen);
    b->len += head + hl + blen;
    d->out->count++;
    if (t.sec < d->out->tmin) d->out->tmin = t.sec;
    if (t.sec > d->out->tmax) d->out->tmax = t.sec;
}

static void emit(fwd_dec_t *d, weir_time_t t, const char *rec, size_t rlen)
{
    if (d->opts->n_extra == 0)
        weir_batch_append(d->out, t, rec, rlen);
    else
        emit_rewritten(d, t, rec, rlen);
}

/* One event from its time and record bytes (both already validated msgpack). */
static void decode_event(fwd_dec_t *d, const char *tp, size_t tlen, const char *rp, size_t rlen)
{
    weir_time_t t;
    const char *why = NULL;
    time_result_t r = parse_time(d, tp, tlen, true, &t, &why);
    if (r == TIME_MARKER) {
        d->info->group_markers++;
        return;
    }
    if (r == TIME_INVALID) {
        skip_event(d, why);
        return;
    }
    unsigned char c = (unsigned char)rp[0];
    if (!((c & 0xf0) == 0x80 || c == 0xde || c == 0xdf)) {
        skip_event(d, "record is not a map");
        return;
    }
    emit(d, t, rp, rlen);
}

/* One entry of a Forward array or a Packed stream (validated msgpack of `len` bytes). */
static void decode_entry(fwd_dec_t *d, const char *p, size_t len)
{
    weir_mp_obj_t o;
    ssize_t h = weir_mp_read(p, len, &o);
    if (h <= 0 || o.type != WEIR_MP_ARRAY || o.v.n != 2) {
        skip_event(d, "entry is not a [time, record] array");
        return;
    }
    size_t tl = extent(p + h, len - (size_t)h);
    decode_event(d, p + h, tl, p + h + tl, len - (size_t)h - tl);
}

/* `92 d7 00 <sec> <nsec> <map>` with a time that needs no normalisation: copy as it is. */
static inline bool entry_canonical(const unsigned char *q, size_t n)
{
    if (n < 12 || q[0] != 0x92 || q[1] != 0xd7 || q[2] != 0) return false;
    unsigned c = q[11];
    return fwd_rd32(q + 3) != 0 && fwd_rd32(q + 7) < FWD_NSEC_PER_SEC &&
           ((c & 0xf0) == 0x80 || c == 0xde || c == 0xdf);
}

/* Decodes `count` entries (FWD_STREAM: until `avail` is used up) at p; *used = their bytes. */
static int decode_entries(fwd_dec_t *d, const char *p, size_t avail, uint64_t count, size_t *used)
{
    const int levels = d->max_depth - 2;
    const bool copy_ok = d->opts->n_extra == 0;
    const char *run = NULL;
    size_t run_len = 0, off = 0;
    uint32_t run_n = 0, run_tmin = UINT32_MAX, run_tmax = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (count == FWD_STREAM && off == avail) break;
        const char *why = NULL;
        long long n = fwd_value_len(p + off, avail - off, levels, &why);
        if (n <= 0) {
            weir_err_set(d->err, "entry %llu: %s", (unsigned long long)i,
                         n == 0 ? "truncated (the entries end in the middle of an entry)" : why);
            return -1;
        }
        if (copy_ok && entry_canonical((const unsigned char *)p + off, (size_t)n)) {
            uint32_t sec = fwd_rd32((const unsigned char *)p + off + 3);
            if (!run) run = p + off;
            run_len += (size_t)n;
            run_n++;
            if (sec < run_tmin) run_tmin = sec;
            if (sec > run_tmax) run_tmax = sec;
        } else {
            if (run) weir_batch_append_raw(d->out, run, run_len, run_n, run_tmin, run_tmax);
            run = NULL;
            run_len = 0;
            run_n = 0;
            run_tmin = UINT32_MAX;
            run_tmax = 0;
            decode_entry(d, p + off, (size_t)n);
        }
        off += (size_t)n;
    }
    if (run) weir_batch_append_raw(d->out, run, run_len, run_n, run_tmin, run_tmax);
    *used = off;
    return 0;
}

/* ---- request ---- */

typedef struct fwd_option {
    const char *compressed; /* raw value bytes, NULL if absent */
    size_t compressed_len;
    const char *signal;
    size_t signal_len;
} fwd_option_t;

/* Reads the option (map or nil) at p; returns its length or -1. */
static long long parse_option(fwd_dec_t *d, const char *p, size_t avail, fwd_option_t *opt)
{
    const char *why = NULL;
    long long n = fwd_value_len(p, avail, d->max_depth - 1, &why);
    if (n <= 0) {
        weir_err_set(d->err, "option: %s", n == 0 ? "truncated" : why);
        return -1;
    }
    weir_mp_obj_t o;
    size_t off = (size_t)weir_mp_read(p, (size_t)n, &o);
    if (o.type == WEIR_MP_NIL) return n;
    if (o.type != WEIR_MP_MAP) {
        weir_err_set(d->err, "option is %s, expected a map or nil", type_name(o.type));
        return -1;
    }
    for (uint32_t i = 0; i < o.v.n; i++) {
        size_t kl = extent(p + off, (size_t)n - off);
        size_t vl = extent(p + off + kl, (size_t)n - off - kl);
        const char *v = p + off + kl;
        weir_mp_obj_t k;
        weir_mp_read(p + off, kl, &k);
        off += kl + vl;
        if (k.type != WEIR_MP_STR) continue;
        /* a repeated key: the last one wins, as in a Ruby Hash */
        if (k.len == 5 && memcmp(k.ptr, "chunk", 5) == 0) {
            unsigned char c = (unsigned char)v[0];
            bool falsy = c == 0xc0 || c == 0xc2; /* Fluentd: `if chunk = option['chunk']` */
            d->info->chunk = falsy ? NULL : v;
            d->info->chunk_len = falsy ? 0 : vl;
        } else if (k.len == 10 && memcmp(k.ptr, "compressed", 10) == 0) {
            opt->compressed = v;
            opt->compressed_len = vl;
        } else if (k.len == 13 && memcmp(k.ptr, "fluent_signal", 13) == 0) {
            opt->signal = v;
            opt->signal_len = vl;
        }
    }
    return n;
}

typedef enum fwd_comp { COMP_NONE, COMP_GZIP, COMP_ZSTD } fwd_comp_t;

static int compression_of(fwd_dec_t *d, const fwd_option_t *opt, fwd_comp_t *c)
{
    *c = COMP_NONE;
    if (!opt->compressed) return 0;
    weir_mp_obj_t o;
    weir_mp_read(opt->compressed, opt->compressed_len, &o);
    if (o.type == WEIR_MP_NIL) return 0;
    if (o.type != WEIR_MP_STR) {
        weir_err_set(d->err,
                     "option 'compressed' is %s, expected \"gzip\", \"zstd\" or "
                     "\"text\"",
                     type_name(o.type));
        return -1;
    }
    if (o.len == 4 && memcmp(o.ptr, "text", 4) == 0) return 0;
    if (o.len == 4 && memcmp(o.ptr, "gzip", 4) == 0) {
        *c = COMP_GZIP;
        return 0;
    }
    if (o.len == 4 && memcmp(o.ptr, "zstd", 4) == 0) {
        *c = COMP_ZSTD;
        return 0;
    }
    char shown[FWD_TAG_LOG_MAX + 8];
    printable(o.ptr, o.len, shown, sizeof shown);
    weir_err_set(d->err, "unsupported compression '%s' (expected \"gzip\", \"zstd\" or \"text\")",
                 shown);
    return -1;
}

/* Fluent Bit's metrics (1) and traces (2) ride in PackedForward payloads; this logs-only
 * server drops them and still acks, which is what Fluentd effectively does. */
static bool is_signal_payload(const fwd_option_t *opt)
{
    if (!opt->signal) return false;
    weir_mp_obj_t o;
    weir_mp_read(opt->signal, opt->signal_len, &o);
    return o.type == WEIR_MP_UINT && (o.v.u == 1 || o.v.u == 2);
}

/* An uncompressed entries stream starts with an entry, an array; gzip (1f 8b 08) and zstd
 * (28 b5 2f fd) magic bytes are positive fixints, never a valid entry. So a payload announced
 * as plain (or "text") that starts with a magic is decompressed, as Fluent Bit does, instead of
 * being read as garbage entries: it changes the outcome of no valid plain stream. */
static fwd_comp_t sniff(const char *p, size_t n, fwd_comp_t announced)
{
    const unsigned char *u = (const unsigned char *)p;
    if (announced != COMP_NONE) return announced;
    if (n >= 3 && u[0] == 0x1f && u[1] == 0x8b && u[2] == 0x08) return COMP_GZIP;
    if (n >= 4 && u[0] == 0x28 && u[1] == 0xb5 && u[2] == 0x2f && u[3] == 0xfd) return COMP_ZSTD;
    return COMP_NONE;
}

static int decode_packed(fwd_dec_t *d, const char *payload, size_t plen, const fwd_option_t *opt)
{
    fwd_comp_t comp;
    if (compression_of(d, opt, &comp) < 0) return -1;
    d->info->mode = comp == COMP_NONE ? FWD_MODE_PACKED : FWD_MODE_COMPRESSED;
    if (is_signal_payload(opt)) {
        weir_debug("forward: dropped a fluent_signal metrics/traces payload of %zu bytes", plen);
        return 0;
    }
    comp = sniff(payload, plen, comp);
    const char *entries = payload;
    size_t elen = plen;
    if (comp != COMP_NONE) {
        weir_inflate_format_t fmt = comp == COMP_GZIP ? WEIR_INFLATE_GZIP : WEIR_INFLATE_ZSTD;
        const weir_buf_t *plain = &d->inflated;
        if (d->opts->inflation) {
            int rc = weir_inflation_run(d->opts->inflation, fmt, payload, plen,
                                        d->opts->max_decompressed, d->err);
            if (rc <= 0) return rc < 0 ? -1 : FWD_DECODE_AGAIN;
            plain = &d->opts->inflation->out;
        } else if (weir_inflate(fmt, payload, plen, d->opts->max_decompressed, &d->inflated,
                                d->err) < 0) {
            return -1;
        }
        entries = plain->data;
        elen = plain->len;
        d->info->decompressed_len = elen;
    }
    size_t used;
    return decode_entries(d, entries, elen, FWD_STREAM, &used);
}

/* Reads one value header at p for the request structure; fails on truncation. */
static ssize_t read_hdr(fwd_dec_t *d, const char *p, size_t avail, weir_mp_obj_t *o,
                        const char *what)
{
    ssize_t h = weir_mp_read(p, avail, o);
    if (h == WEIR_MP_INCOMPLETE)
        weir_err_set(d->err, "%s: truncated", what);
    else if (h < 0)
        weir_err_set(d->err, "%s: reserved msgpack byte 0xc1", what);
    return h > 0 ? h : -1;
}

static void set_tag(weir_batch_t *b, const char *tag, size_t len)
{
    if (b->tag && b->tag_len == len && memcmp(b->tag, tag, len) == 0) return;
    weir_batch_set_tag(b, tag, len);
}

static int decode_request(fwd_dec_t *d, const char *p, size_t len)
{
    weir_mp_obj_t o;
    ssize_t h = read_hdr(d, p, len, &o, "request");
    if (h < 0) return -1;
    if (o.type == WEIR_MP_NIL) { /* in-band heartbeat */
        d->info->mode = FWD_MODE_HEARTBEAT;
        if (len == 1) return 0;
        weir_err_set(d->err, "%zu trailing bytes after a nil heartbeat", len - 1);
        return -1;
    }
    if (o.type != WEIR_MP_ARRAY) {
        weir_err_set(d->err, "request is %s, expected an array (or nil)", type_name(o.type));
        return -1;
    }
    const uint32_t nelem = o.v.n;
    if (nelem < 2 || nelem > 4) {
        weir_err_set(d->err, "request array has %u element(s), expected 2 to 4", nelem);
        return -1;
    }
    if (d->max_depth < 2) {
        weir_err_set(d->err, "msgpack nesting exceeds the depth limit");
        return -1;
    }
    size_t off = (size_t)h;

    if ((h = read_hdr(d, p + off, len - off, &o, "tag")) < 0) return -1;
    if (o.type != WEIR_MP_STR && o.type != WEIR_MP_BIN) {
        weir_err_set(d->err, "tag is %s, expected a string", type_name(o.type));
        return -1;
    }
    if (o.len > WEIR_TAG_MAX) {
        weir_err_set(d->err, "tag of %zu bytes is longer than %d bytes (WEIR_TAG_MAX)",
                     (size_t)o.len, WEIR_TAG_MAX);
        return -1;
    }
    d->tag = o.ptr;
    d->tag_len = o.len;
    set_tag(d->out, o.ptr, o.len);
    off += (size_t)h;

    if ((h = read_hdr(d, p + off, len - off, &o, "second element")) < 0) return -1;
    fwd_mode_t mode = o.type == WEIR_MP_STR || o.type == WEIR_MP_BIN ? FWD_MODE_PACKED
                      : o.type == WEIR_MP_ARRAY                      ? FWD_MODE_FORWARD
                                                                     : FWD_MODE_MESSAGE;
    d->info->mode = mode;
    uint32_t min = mode == FWD_MODE_MESSAGE ? 3 : 2;
    if (nelem < min || nelem > min + 1) {
        weir_err_set(d->err, "%s request has %u elements, expected %u or %u",
                     mode == FWD_MODE_MESSAGE   ? "Message"
                     : mode == FWD_MODE_FORWARD ? "Forward"
                                                : "PackedForward",
                     nelem, min, min + 1);
        return -1;
    }

    const char *tp = NULL, *rp = NULL, *payload = NULL;
    size_t tl = 0, rl = 0, plen = 0;
    if (mode == FWD_MODE_FORWARD) {
        off += (size_t)h;
        if (o.v.n > len - off) {
            weir_err_set(d->err, "entry array declares %u entries, more than the frame holds",
                         o.v.n);
            return -1;
        }
        size_t used;
        if (decode_entries(d, p + off, len - off, o.v.n, &used) < 0) return -1;
        off += used;
    } else if (mode == FWD_MODE_PACKED) {
        payload = o.ptr;
        plen = o.len;
        off += (size_t)h;
    } else {
        const char *why = NULL;
        long long n = fwd_value_len(p + off, len - off, d->max_depth - 1, &why);
        if (n > 0) {
            tp = p + off;
            tl = (size_t)n;
            off += tl;
            n = fwd_value_len(p + off, len - off, d->max_depth - 1, &why);
        }
        if (n <= 0) {
            weir_err_set(d->err, "Message: %s", n == 0 ? "truncated" : why);
            return -1;
        }
        rp = p + off;
        rl = (size_t)n;
        off += rl;
    }

    fwd_option_t opt = {0};
    if (nelem > min) {
        long long n = parse_option(d, p + off, len - off, &opt);
        if (n < 0) return -1;
        off += (size_t)n;
    }
    if (off != len) {
        weir_err_set(d->err, "%zu trailing bytes after the request array", len - off);
        return -1;
    }
    if (mode == FWD_MODE_PACKED) return decode_packed(d, payload, plen, &opt);
    if (mode == FWD_MODE_MESSAGE) decode_event(d, tp, tl, rp, rl);
    return 0;
}

static void prepare_extras(fwd_dec_t *d)
{
    size_t n = d->opts->n_extra;
    if (n == 0) return;
    d->key_len = weir_calloc(n, sizeof *d->key_len);
    for (size_t i = 0; i < n; i++) {
        const char *v = d->opts->extra_values[i] ? d->opts->extra_values[i] : "";
        d->key_len[i] = strlen(d->opts->extra_keys[i]);
        fwd_buf_str(&d->extras, d->opts->extra_keys[i], d->key_len[i]);
        fwd_buf_cstr(&d->extras, v);
    }
}

int fwd_decode_frame(const char *frame, size_t len, const fwd_decode_opts_t *opts,
                     weir_batch_t *out, fwd_frame_info_t *info, weir_err_t *err)
{
    fwd_decode_opts_t defaults;
    fwd_frame_info_t scratch;
    if (!opts) {
        fwd_decode_opts_init(&defaults);
        opts = &defaults;
    }
    if (!info) info = &scratch;
    memset(info, 0, sizeof *info);
    weir_batch_reset(out);

    fwd_dec_t d = {.opts = opts, .out = out, .info = info, .err = err};
    d.max_depth =
        opts->max_depth <= 0 || opts->max_depth > FWD_MAX_DEPTH ? FWD_MAX_DEPTH : opts->max_depth;
    weir_buf_init(&d.extras);
    weir_buf_init(&d.inflated);
    prepare_extras(&d);

    int rc = decode_request(&d, frame, len);
    if (rc == FWD_DECODE_AGAIN) {
        weir_batch_reset(out);
        info->chunk = NULL;
        info->chunk_len = 0;
    } else if (rc < 0) {
        weir_err_prefix(err, "forward: broken request");
        weir_batch_reset(out);
        info->chunk = NULL;
        info->chunk_len = 0;
    }
    weir_buf_free(&d.extras);
    weir_buf_free(&d.inflated);
    free(d.key_len);
    return rc;
}
