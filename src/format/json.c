/* msgpack to JSON, as Ruby's JSON.generate prints a record (the rules are listed in format.h).
 *
 * The walk is iterative over an explicit stack of open containers, reading with weir_mp_read (the
 * commonest tags decoded inline), and writes straight into the output buffer: no object tree, no
 * allocation unless the buffer must grow (or, rarely, a map key is itself a container). Invariant:
 * when a call fails, the output buffer is cut back to the length it had, so a caller never sees
 * half a value. */
#include "weir/format.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format_internal.h"

/* Makes room for `n` more bytes and returns where they go; the caller adds what it wrote to
 * out->len. */
static inline char *room(weir_buf_t *out, size_t n)
{
    if (out->cap - out->len < n) weir_buf_reserve(out, n);
    return out->data + out->len;
}

static inline void put1(weir_buf_t *out, char c)
{
    *room(out, 1) = c;
    out->len++;
}

static inline void putn(weir_buf_t *out, const char *s, size_t n)
{
    memcpy(room(out, n), s, n);
    out->len += n;
}

/* ---- integers ---- */

static const char digit_pairs[] = "00010203040506070809101112131415161718192021222324252627282930"
                                  "31323334353637383940414243444546474849505152535455565758596061"
                                  "62636465666768697071727374757677787980818283848586878889909192"
                                  "93949596979899";

/* Writes the decimal digits of v (at most 20) and returns their count. */
static size_t u64_dec(char *dst, uint64_t v)
{
    char tmp[20];
    char *p = tmp + sizeof tmp;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        p -= 2;
        memcpy(p, digit_pairs + 2 * r, 2);
    }
    if (v >= 10) {
        p -= 2;
        memcpy(p, digit_pairs + 2 * v, 2);
    } else {
        *--p = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof tmp - p);
    memcpy(dst, p, n);
    return n;
}

static void put_u64(weir_buf_t *out, uint64_t v)
{
    out->len += u64_dec(room(out, 20), v);
}

static void put_i64(weir_buf_t *out, int64_t v)
{
    char *w = room(out, 21);
    *w = '-';
    /* negate in unsigned arithmetic so INT64_MIN does not overflow */
    out->len += 1 + u64_dec(w + 1, (uint64_t)0 - (uint64_t)v);
}

/* ---- floats ---- */

/* Shortest decimal digits that read back to `d` (d finite, not zero): fills digits (no dot, no
 * trailing zeros), returns their count and the decimal exponent in *decpt, meaning
 * d = 0.DIGITS x 10^decpt. Two decimals of up to 15 digits (6 for a float32) lie more than one
 * unit in the last place apart, so at most one of them reads back to a normal double; when the
 * correctly rounded 15-digit form reads back, stripping its zeros gives the shortest; otherwise 16,
 * then 17 digits (which always read back). The cost is one snprintf and one strtod per try; floats
 * are rare in log records, so this was preferred to a Ryu-style printer, which is what would
 * replace it if float-heavy records ever matter. */
static int shortest_digits(double d, bool is_f32, char digits[20], int *decpt)
{
    char buf[48];
    int lo = is_f32 ? 6 : 15, hi = is_f32 ? 9 : 17;
    /* a subnormal has fewer significant bits, so the uniqueness argument fails: try every
     * length */
    if (fabs(d) < (is_f32 ? FLT_MIN : DBL_MIN)) lo = 1;
    for (int p = lo; p <= hi; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, d);
        bool same = is_f32 ? strtof(buf, NULL) == (float)d : strtod(buf, NULL) == d;
        if (same) break;
    }
    /* buf is [-]D[.DDD]e[+-]XX */
    const char *q = buf;
    if (*q == '-') q++;
    int n = 0;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[n++] = *q;
    int exp10 = atoi(q + 1);
    while (n > 1 && digits[n - 1] == '0')
        n--;
    *decpt = exp10 + 1;
    return n;
}

size_t weir_format_double(char out[WEIR_DOUBLE_TEXT_MAX], double d, bool is_f32)
{
    if (isnan(d)) {
        memcpy(out, "NaN", 4);
        return 3;
    }
    if (isinf(d)) {
        const char *s = d > 0 ? "Infinity" : "-Infinity";
        size_t n = strlen(s);
        memcpy(out, s, n + 1);
        return n;
    }
    char *w = out;
    if (signbit(d)) *w++ = '-';
    if (d == 0) {
        memcpy(w, "0.0", 4);
        return (size_t)(w - out) + 3;
    }
    char digits[20];
    int decpt;
    int nd = shortest_digits(d, is_f32, digits, &decpt);
    /* Ruby's flo_to_s: plain notation while 0 < decpt <= DBL_DIG + 1 or -4 < decpt <= 0. */
    if (decpt > 0 && decpt <= 16) {
        if (decpt < nd) {
            memcpy(w, digits, (size_t)decpt);
            w += decpt;
            *w++ = '.';
            memcpy(w, digits + decpt, (size_t)(nd - decpt));
            w += nd - decpt;
        } else {
            memcpy(w, digits, (size_t)nd);
            w += nd;
            for (int i = nd; i < decpt; i++)
                *w++ = '0';
            *w++ = '.';
            *w++ = '0';
        }
    } else if (decpt <= 0 && decpt > -4) {
        *w++ = '0';
        *w++ = '.';
        for (int i = decpt; i < 0; i++)
            *w++ = '0';
        memcpy(w, digits, (size_t)nd);
        w += nd;
    } else {
        *w++ = digits[0];
        *w++ = '.';
        if (nd > 1) {
            memcpy(w, digits + 1, (size_t)(nd - 1));
            w += nd - 1;
        } else {
            *w++ = '0';
        }
        w += sprintf(w, "e%+03d", decpt - 1);
    }
    *w = '\0';
    return (size_t)(w - out);
}

static void put_double(weir_buf_t *out, double d, bool is_f32)
{
    if (!isfinite(d)) {
        putn(out, "null", 4);
        return;
    }
    out->len += weir_format_double(room(out, WEIR_DOUBLE_TEXT_MAX), d, is_f32);
}

/* ---- strings ---- */

/* Per byte: 0 copied as is, 1 escaped, 2 starts (or is part of) a multi-byte sequence. */
static const unsigned char byte_class[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

static void put_escape(weir_buf_t *out, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char *w = room(out, 6);
    w[0] = '\\';
    switch (c) {
    case '"':
    case '\\':
        w[1] = (char)c;
        out->len += 2;
        return;
    case '\b':
        w[1] = 'b';
        out->len += 2;
        return;
    case '\f':
        w[1] = 'f';
        out->len += 2;
        return;
    case '\n':
        w[1] = 'n';
        out->len += 2;
        return;
    case '\r':
        w[1] = 'r';
        out->len += 2;
        return;
    case '\t':
        w[1] = 't';
        out->len += 2;
        return;
    }
    w[1] = 'u';
    w[2] = '0';
    w[3] = '0';
    w[4] = hex[c >> 4];
    w[5] = hex[c & 15];
    out->len += 6;
}

/* Nonzero when any of the 8 bytes in x needs attention: a control character, '"', '\\' or a
 * byte >= 0x80. Each test flags a byte only if some byte really matches (a borrow starts only
 * at a matching byte), so a zero result means eight plain bytes. */
static inline uint64_t special_bytes(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t ctl = (x - ones * 0x20) & ~x;
    uint64_t q = x ^ (ones * '"');
    uint64_t b = x ^ (ones * '\\');
    q = (q - ones) & ~q;
    b = (b - ones) & ~b;
    return (x | ctl | q | b) & high;
}

/* Index of the first byte at or after i that is not plain ASCII text. */
static inline size_t skip_plain(const unsigned char *s, size_t i, size_t n)
{
    while (i + 8 <= n) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if (special_bytes(x)) break;
        i += 8;
    }
    while (i < n && byte_class[s[i]] == 0)
        i++;
    return i;
}

/* The string's bytes, escaped, without quotes. Runs of bytes that need nothing (ASCII text and
 * well-formed UTF-8) are copied with one memcpy each. */
static void put_string_body(weir_buf_t *out, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t run = 0, i = 0;
    while ((i = skip_plain(s, i, n)) < n) {
        unsigned char cls = byte_class[s[i]];
        if (cls == 2) {
            size_t k = weir_utf8_seq(s + i, n - i);
            if (k) {
                i += k;
                continue;
            }
        }
        putn(out, str + run, i - run);
        if (cls == 1)
            put_escape(out, s[i]);
        else
            putn(out, "\xef\xbf\xbd", 3); /* U+FFFD for a byte outside any sequence */
        run = ++i;
    }
    putn(out, str + run, n - run);
}

/* Finishes a string whose first `i` bytes were already written after the opening quote. */
static void put_string_rest(weir_buf_t *out, const char *s, size_t n, size_t i)
{
    out->len += 1 + i;
    put_string_body(out, s + i, n - i);
    put1(out, '"');
}

/* A quoted string. The common case, plain text, is copied while it is checked, eight bytes at a
 * time; the first byte that needs attention hands the rest to put_string_rest. `end` is the end
 * of the input the string lies in: when at least 8 bytes remain, a short string is read as one
 * word (the bytes past it masked to spaces), which is most keys of a record. */
static inline void put_str(weir_buf_t *out, const char *s, size_t n, const char *end)
{
    const unsigned char *u = (const unsigned char *)s;
    char *w = room(out, n + 2 + 8) + 1; /* 8 spare bytes for whole-word stores */
    w[-1] = '"';
    size_t i = 0;
    uint64_t x;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n < 8 && (size_t)(end - s) >= 8) {
        uint64_t keep = n ? ~0ull >> (64 - 8 * n) : 0; /* the string's bytes are the low ones */
        memcpy(&x, u, 8);
        x = (x & keep) | (0x2020202020202020ull & ~keep);
        if (special_bytes(x)) {
            put_string_rest(out, s, n, 0);
            return;
        }
        memcpy(w, &x, 8);
        w[n] = '"';
        out->len += n + 2;
        return;
    }
#endif
    for (; i + 8 <= n; i += 8) {
        memcpy(&x, u + i, 8);
        if (special_bytes(x)) {
            put_string_rest(out, s, n, i);
            return;
        }
        memcpy(w + i, &x, 8);
    }
    if (n >= 8 && i < n) {
        /* the tail as one word that overlaps bytes already checked */
        memcpy(&x, u + n - 8, 8);
        if (special_bytes(x)) {
            put_string_rest(out, s, n, i);
            return;
        }
        memcpy(w + n - 8, &x, 8);
        i = n;
    }
    for (; i < n; i++) {
        if (byte_class[u[i]]) {
            put_string_rest(out, s, n, i);
            return;
        }
        w[i] = s[i];
    }
    w[n] = '"';
    out->len += n + 2;
}

void weir_json_append_string(weir_buf_t *out, const char *s, size_t n)
{
    put_str(out, s, n, s + n);
}

/* ---- ext ---- */

static void put_base64(weir_buf_t *out, const unsigned char *p, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *w = room(out, (n + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *w++ = tbl[v >> 18];
        *w++ = tbl[(v >> 12) & 63];
        *w++ = tbl[(v >> 6) & 63];
        *w++ = tbl[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *w++ = tbl[v >> 18];
        *w++ = tbl[(v >> 12) & 63];
        *w++ = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        *w++ = '=';
    }
    out->len = (size_t)(w - out->data);
}

static bool is_event_time(const weir_mp_obj_t *o)
{
    return o->ext_type == 0 && o->len == 8;
}

static uint32_t be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* An EventTime prints as its integer seconds (EventTime#to_json); other ext as base64 text. */
static void put_ext(weir_buf_t *out, const weir_mp_obj_t *o, bool as_key)
{
    if (is_event_time(o)) {
        if (as_key) put1(out, '"');
        put_u64(out, be32(o->ptr));
        if (as_key) put1(out, '"');
        return;
    }
    put1(out, '"');
    put_base64(out, (const unsigned char *)o->ptr, o->len);
    put1(out, '"');
}

/* ---- the walk ---- */

/* `end`: the end of the msgpack input, see put_str. */
static void put_scalar(weir_buf_t *out, const weir_mp_obj_t *o, const char *end)
{
    switch (o->type) {
    case WEIR_MP_NIL:
        putn(out, "null", 4);
        break;
    case WEIR_MP_BOOL:
        if (o->v.b)
            putn(out, "true", 4);
        else
            putn(out, "false", 5);
        break;
    case WEIR_MP_UINT:
        put_u64(out, o->v.u);
        break;
    case WEIR_MP_INT:
        put_i64(out, o->v.i);
        break;
    case WEIR_MP_FLOAT:
        put_double(out, o->v.f, o->is_f32);
        break;
    case WEIR_MP_STR:
    case WEIR_MP_BIN:
        put_str(out, o->ptr, o->len, end);
        break;
    case WEIR_MP_EXT:
        put_ext(out, o, false);
        break;
    case WEIR_MP_ARRAY:
    case WEIR_MP_MAP:
        break; /* handled by the walk */
    }
}

static ssize_t json_value(weir_buf_t *out, const char *mp, size_t len, int max_depth,
                          weir_fmt_keys_t *keys);

/* A map key that is not a string prints as a string of its Ruby to_s: nil is "", a float is
 * Float#to_s (NaN included), a container is the string of its JSON text, cut at
 * WEIR_JSON_KEY_TEXT_MAX (a cut UTF-8 sequence becomes U+FFFD like any other bad byte).
 * Returns the key's msgpack length, or -1. */
static ssize_t put_key(weir_buf_t *out, const weir_mp_obj_t *o, const char *at, size_t avail,
                       ssize_t hdr, int max_depth, weir_fmt_keys_t *keys)
{
    switch (o->type) {
    case WEIR_MP_STR:
    case WEIR_MP_BIN:
        put_str(out, o->ptr, o->len, at + avail);
        return hdr;
    case WEIR_MP_NIL:
        putn(out, "\"\"", 2);
        return hdr;
    case WEIR_MP_FLOAT: {
        char *w = room(out, WEIR_DOUBLE_TEXT_MAX + 2);
        w[0] = '"';
        size_t n = weir_format_double(w + 1, o->v.f, o->is_f32);
        w[n + 1] = '"';
        out->len += n + 2;
        return hdr;
    }
    case WEIR_MP_EXT:
        put_ext(out, o, true);
        return hdr;
    case WEIR_MP_ARRAY:
    case WEIR_MP_MAP: {
        weir_buf_t tmp;
        weir_buf_init(&tmp);
        ssize_t n = json_value(&tmp, at, avail, max_depth, keys);
        /* cut: a key inside this one was escaped once already, and would be again here */
        if (n >= 0)
            weir_json_append_string(
                out, tmp.data, tmp.len < WEIR_JSON_KEY_TEXT_MAX ? tmp.len : WEIR_JSON_KEY_TEXT_MAX);
        weir_buf_free(&tmp);
        return n;
    }
    default: /* bool and integers: their JSON text is their to_s */
        put1(out, '"');
        put_scalar(out, o, at + avail);
        put1(out, '"');
        return hdr;
    }
}

typedef struct json_frame {
    uint32_t left; /* elements (or pairs) not yet completed */
    bool is_map;
    bool want_key;
    size_t base; /* maps: where this map's pairs start on the key stack */
} json_frame_t;

/* The walk. Every map's pairs are recorded on `keys` as they are written, and the map is
 * handed to weir_fmt_keys_close before its '}' so that each key is written once. A container
 * key is written through a nested walk into a scratch buffer, which shares the key stack: it
 * pushes and pops above the pairs of the maps open here. */
static ssize_t json_value(weir_buf_t *out, const char *mp, size_t len, int max_depth,
                          weir_fmt_keys_t *keys)
{
    json_frame_t stack[WEIR_JSON_MAX_DEPTH];
    if (max_depth > WEIR_JSON_MAX_DEPTH) max_depth = WEIR_JSON_MAX_DEPTH;
    int depth = 0;
    size_t off = 0;
    for (;;) {
        weir_mp_obj_t o;
        ssize_t n = weir_mp_read_fast(mp + off, len - off, &o);
        if (n <= 0) return -1;
        json_frame_t *top = depth ? &stack[depth - 1] : NULL;
        if (top && top->want_key) {
            size_t key_at = out->len;
            ssize_t k = put_key(out, &o, mp + off, len - off, n, max_depth - depth, keys);
            if (k < 0) return -1;
            off += (size_t)k;
            weir_fmt_pair_t *pair = weir_fmt_keys_push(keys);
            pair->key = key_at;
            pair->val = out->len;
            put1(out, ':');
            top->want_key = false;
            continue;
        }
        off += (size_t)n;
        if (o.type == WEIR_MP_ARRAY || o.type == WEIR_MP_MAP) {
            bool is_map = o.type == WEIR_MP_MAP;
            if (o.v.n > 0) {
                if (depth >= max_depth) return -1;
                put1(out, is_map ? '{' : '[');
                stack[depth++] = (json_frame_t){o.v.n, is_map, is_map, keys->n};
                continue;
            }
            putn(out, is_map ? "{}" : "[]", 2);
        } else {
            put_scalar(out, &o, mp + len);
        }
        /* a value is complete: close every container it completes */
        while (depth > 0) {
            json_frame_t *f = &stack[depth - 1];
            if (f->is_map) keys->pairs[keys->n - 1].end = out->len;
            if (--f->left > 0) {
                put1(out, ',');
                f->want_key = f->is_map;
                break;
            }
            if (f->is_map) weir_fmt_keys_close(keys, f->base, out, ",", 1);
            put1(out, f->is_map ? '}' : ']');
            depth--;
        }
        if (depth == 0) return (ssize_t)off;
    }
}

ssize_t weir_json_walk(weir_buf_t *out, const char *mp, size_t len, weir_fmt_keys_t *keys)
{
    size_t start = out->len, base = keys->n;
    ssize_t n = json_value(out, mp, len, WEIR_JSON_MAX_DEPTH, keys);
    keys->n = base; /* a failed walk leaves its maps open */
    if (n < 0) out->len = start;
    return n;
}

ssize_t weir_json_append(weir_buf_t *out, const char *mp, size_t len)
{
    weir_fmt_keys_t keys;
    weir_fmt_keys_init(&keys);
    ssize_t n = weir_json_walk(out, mp, len, &keys);
    weir_fmt_keys_free(&keys);
    return n;
}
