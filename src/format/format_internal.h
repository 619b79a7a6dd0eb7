/* Calendar arithmetic shared by the zone reader and the time formatter (proleptic Gregorian,
 * days counted from 1970-01-01, valid far beyond the uint32 seconds an EventTime holds). */
#ifndef WEIR_FORMAT_INTERNAL_H
#define WEIR_FORMAT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "weir/common.h"
#include "weir/hash.h"
#include "weir/mp.h"

/* ---- each key once (keys.c) ---- */

/* One key/value pair as written into an output buffer, by offsets: the key's text at
 * [key, val), then the value part (the ':' or label delimiter, then the value) at [val, end).
 * first/last are keys.c's working fields. */
typedef struct weir_fmt_pair {
    size_t key, val, end;
    uint32_t first, last;
} weir_fmt_pair_t;

/* The pairs of every map being written, innermost last, and the hash set keys.c keeps for
 * large maps; both grow to the largest record seen and are reused. */
typedef struct weir_fmt_keys {
    weir_fmt_pair_t *pairs;
    size_t n, cap;
    weir_hset_t seen; /* the keys of a large map (weir_fmt_keys_close) */
} weir_fmt_keys_t;

/* Maps with at most this many pairs are checked by a filtered scan; larger ones through a set
 * hashed with the process's SipHash key. */
#define WEIR_FMT_KEYS_SCAN_MAX 32

void weir_fmt_keys_init(weir_fmt_keys_t *k);
void weir_fmt_keys_free(weir_fmt_keys_t *k);
weir_fmt_pair_t *weir_fmt_keys_grow(weir_fmt_keys_t *k);

/* A new pair on the stack, its offsets for the caller to fill. */
static inline weir_fmt_pair_t *weir_fmt_keys_push(weir_fmt_keys_t *k)
{
    if (k->n < k->cap) return &k->pairs[k->n++];
    return weir_fmt_keys_grow(k);
}

/* Closes the map whose pairs are those from index `base` on, the last of which ends at
 * out->len: pops them and, when two keys have the same text, rewrites the pairs so that each
 * key appears once, at its first place, with its last value, `sep` between pairs. */
void weir_fmt_keys_close(weir_fmt_keys_t *k, size_t base, weir_buf_t *out, const char *sep,
                         size_t sep_len);

/* weir_json_append with the caller's key stack (reused across records, so formatting
 * allocates nothing once it has grown). On return the stack is as it was. */
ssize_t weir_json_walk(weir_buf_t *out, const char *mp, size_t len, weir_fmt_keys_t *keys);

/* Days from 1970-01-01 to a proleptic Gregorian date (month 1..12). Linear in `d`, so a day
 * past the end of the month (or 0) rolls into the next (or previous) one, as timegm does. */
static inline int64_t weir_days_from_civil(int64_t y, int m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static inline void weir_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static inline bool weir_is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* weir_mp_read with the tags of a typical record decoded inline (fixstr, str8, positive fixint,
 * fixmap, fixarray, nil, booleans); anything else goes to weir_mp_read. A function call per
 * object was a fifth of the JSON time. */
static inline ssize_t weir_mp_read_fast(const char *p, size_t avail, weir_mp_obj_t *o)
{
    if (avail == 0) return WEIR_MP_INCOMPLETE;
    unsigned char c = (unsigned char)p[0];
    if (c >= 0xa0 && c <= 0xbf) {
        uint32_t n = c & 0x1f;
        if (avail - 1 < n) return WEIR_MP_INCOMPLETE;
        o->type = WEIR_MP_STR;
        o->ptr = p + 1;
        o->len = n;
        return 1 + (ssize_t)n;
    }
    if (c <= 0x7f) {
        o->type = WEIR_MP_UINT;
        o->v.u = c;
        return 1;
    }
    if (c <= 0x9f) {
        o->type = c <= 0x8f ? WEIR_MP_MAP : WEIR_MP_ARRAY;
        o->v.n = c & 0x0f;
        return 1;
    }
    if (c == 0xd9 && avail >= 2) {
        uint32_t n = (unsigned char)p[1];
        if (avail - 2 < n) return WEIR_MP_INCOMPLETE;
        o->type = WEIR_MP_STR;
        o->ptr = p + 2;
        o->len = n;
        return 2 + (ssize_t)n;
    }
    if (c >= 0xc0 && c <= 0xc3 && c != 0xc1) {
        o->type = c == 0xc0 ? WEIR_MP_NIL : WEIR_MP_BOOL;
        o->v.b = c == 0xc3;
        return 1;
    }
    return weir_mp_read(p, avail, o);
}

/* Length of the whole value at p (containers included), or <= 0 as weir_mp_skip. */
static inline ssize_t weir_mp_value_len(const char *p, size_t avail, int max_depth)
{
    weir_mp_obj_t o;
    ssize_t n = weir_mp_read_fast(p, avail, &o);
    if (n <= 0) return n;
    if ((o.type == WEIR_MP_MAP || o.type == WEIR_MP_ARRAY) && o.v.n > 0)
        return weir_mp_skip(p, avail, max_depth);
    return n;
}

/* Floor division and modulo for possibly negative seconds. */
static inline int64_t weir_floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static inline int64_t weir_floormod(int64_t a, int64_t b)
{
    return a - weir_floordiv(a, b) * b;
}

#endif
