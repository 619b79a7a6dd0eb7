/* The forward frame scanner: finds where one top-level msgpack object ends in a byte stream
 * that arrives in arbitrary pieces, without allocating and without decoding.
 *
 * Invariants:
 * - s->off only ever grows while a frame is incomplete, and every byte before it belongs to a
 *   value already accounted for, so a frame delivered one byte at a time is examined once in
 *   total (linear time). The only re-read is the header of the value at s->off (at most 9
 *   bytes, or a str/bin/ext header whose payload has not fully arrived): it is cheaper to
 *   re-read it than to remember half a header.
 * - No frame is ever reported, and no state is ever kept, for bytes beyond max_frame: the scan
 *   window is min(len, max_frame), a declared str/bin/ext length or container count that
 *   cannot fit in what is left of max_frame fails at once (every element takes at least one
 *   byte, every map pair two, and the value's own remaining siblings one each), and an
 *   incomplete frame with max_frame bytes buffered fails.
 * - Nesting is bounded by max_depth (<= FWD_MAX_DEPTH); the element-count stack lives in the
 *   struct, so hostile nesting costs no recursion. Every container counts as a level, empty
 *   ones included: the top-level array is level 1. */
#include <stdint.h>
#include <string.h>

#include "forward_internal.h"
#include "weir/forward.h"

_Thread_local uint64_t fwd_scan_work;

typedef enum hdr_kind {
    HDR_VALUE,    /* a value of hlen + n bytes (n = str/bin/ext payload length) */
    HDR_ARRAY,    /* an array header of hlen bytes, n elements */
    HDR_MAP,      /* a map header of hlen bytes, n pairs */
    HDR_MORE,     /* the header itself is not complete */
    HDR_RESERVED, /* 0xc1 */
} hdr_kind_t;

/* 0xc0..0xdf: the kind, the header length (the whole value for fixed-size kinds) and the
 * number of big-endian length bytes that follow the type byte. */
static const struct {
    uint8_t kind;
    uint8_t hlen;
    uint8_t lenbytes;
} hdr_table[32] = {
    {HDR_VALUE, 1, 0},  {HDR_RESERVED, 1, 0}, {HDR_VALUE, 1, 0}, {HDR_VALUE, 1, 0}, /* c0 */
    {HDR_VALUE, 2, 1},  {HDR_VALUE, 3, 2},    {HDR_VALUE, 5, 4},                    /* bin8/16/32 */
    {HDR_VALUE, 3, 1},  {HDR_VALUE, 4, 2},    {HDR_VALUE, 6, 4},                    /* ext8/16/32 */
    {HDR_VALUE, 5, 0},  {HDR_VALUE, 9, 0},                                          /* float32/64 */
    {HDR_VALUE, 2, 0},  {HDR_VALUE, 3, 0},    {HDR_VALUE, 5, 0}, {HDR_VALUE, 9, 0}, /* uint */
    {HDR_VALUE, 2, 0},  {HDR_VALUE, 3, 0},    {HDR_VALUE, 5, 0}, {HDR_VALUE, 9, 0}, /* int */
    {HDR_VALUE, 3, 0},  {HDR_VALUE, 4, 0},    {HDR_VALUE, 6, 0}, /* fixext1/2/4 */
    {HDR_VALUE, 10, 0}, {HDR_VALUE, 18, 0},                      /* fixext8/16 */
    {HDR_VALUE, 2, 1},  {HDR_VALUE, 3, 2},    {HDR_VALUE, 5, 4}, /* str8/16/32 */
    {HDR_ARRAY, 3, 2},  {HDR_ARRAY, 5, 4},    {HDR_MAP, 3, 2},   {HDR_MAP, 5, 4},
};

/* Decodes the header at p (avail >= 1 bytes). */
static inline hdr_kind_t hdr_read(const unsigned char *p, size_t avail, size_t *hlen, uint64_t *n)
{
    unsigned c = p[0];
    *hlen = 1;
    *n = 0;
    if (c <= 0x7f || c >= 0xe0) return HDR_VALUE;
    if (c <= 0x8f) {
        *n = c & 0x0f;
        return HDR_MAP;
    }
    if (c <= 0x9f) {
        *n = c & 0x0f;
        return HDR_ARRAY;
    }
    if (c <= 0xbf) {
        *n = c & 0x1f;
        return HDR_VALUE;
    }
    unsigned i = c - 0xc0;
    *hlen = hdr_table[i].hlen;
    if (avail < *hlen) return HDR_MORE;
    uint64_t v = 0;
    for (unsigned k = 1; k <= hdr_table[i].lenbytes; k++)
        v = (v << 8) | p[k];
    *n = v;
    return (hdr_kind_t)hdr_table[i].kind;
}

void fwd_scanner_init(fwd_scanner_t *s, size_t max_frame, int max_depth)
{
    s->max_frame = max_frame ? max_frame : FWD_FRAME_LIMIT_DEFAULT;
    if (max_depth < 0) max_depth = 0;
    if (max_depth > FWD_MAX_DEPTH) max_depth = FWD_MAX_DEPTH;
    s->max_depth = max_depth;
    fwd_scanner_reset(s);
}

void fwd_scanner_reset(fwd_scanner_t *s)
{
    s->off = 0;
    s->depth = 0;
    s->left = 1;
}

fwd_scan_result_t fwd_scanner_scan(fwd_scanner_t *s, const char *buf, size_t len, size_t *frame_len,
                                   const char **why)
{
    const unsigned char *p = (const unsigned char *)buf;
    if (len < s->off) fwd_scanner_reset(s); /* the caller lost bytes: start over, stay safe */
    const size_t max = s->max_frame;
    const size_t lim = len < max ? len : max;
    size_t off = s->off;
    int depth = s->depth;
    uint64_t left = s->left;
    uint64_t work = 0;
    const char *reason;

    for (;;) {
        while (left == 0) {
            if (depth == 0) {
                *frame_len = off;
                fwd_scan_work += work;
                fwd_scanner_reset(s);
                return FWD_SCAN_FRAME;
            }
            left = s->stack[--depth];
        }
        if (off >= lim) goto more;
        work++;
        size_t hlen;
        uint64_t n;
        hdr_kind_t k = hdr_read(p + off, lim - off, &hlen, &n);
        if (k == HDR_MORE) goto more;
        if (k == HDR_RESERVED) {
            reason = "reserved msgpack byte 0xc1";
            goto fail;
        }
        /* siblings still to come at this level need a byte each */
        const uint64_t siblings = left - 1;
        if (k == HDR_VALUE) {
            if (n + siblings > max - off - hlen) { /* off + hlen <= lim <= max here */
                reason = "a declared str/bin/ext length exceeds the frame size limit";
                goto fail;
            }
            if (n > lim - off - hlen) goto more;
            off += hlen + (size_t)n;
            left--;
            continue;
        }
        if (depth + 1 > s->max_depth) {
            reason = "msgpack nesting exceeds the depth limit";
            goto fail;
        }
        uint64_t elems = k == HDR_MAP ? 2 * n : n;
        if (elems + siblings > max - off - hlen) {
            reason = "a declared array/map count exceeds the frame size limit";
            goto fail;
        }
        off += hlen;
        left--;
        if (elems) {
            s->stack[depth++] = left;
            left = elems;
        }
    }

more:
    if (len >= max) {
        reason = "frame exceeds the frame size limit";
        goto fail;
    }
    s->off = off;
    s->depth = depth;
    s->left = left;
    fwd_scan_work += work;
    return FWD_SCAN_NEED_MORE;

fail:
    fwd_scan_work += work;
    fwd_scanner_reset(s);
    if (why) *why = reason;
    return FWD_SCAN_ERROR;
}

static uint64_t be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Fills o from a value whose header hdr_read() accepted; `hlen`/`n` are its results. */
static void obj_fill(const unsigned char *u, size_t hlen, uint64_t n, weir_mp_obj_t *o)
{
    unsigned c = u[0];
    const char *p = (const char *)u;
    if (c <= 0x7f || c >= 0xe0) {
        o->type = c <= 0x7f ? WEIR_MP_UINT : WEIR_MP_INT;
        if (c <= 0x7f)
            o->v.u = c;
        else
            o->v.i = (int8_t)c;
        return;
    }
    if ((c >= 0xa0 && c <= 0xbf) || (c >= 0xd9 && c <= 0xdb) || (c >= 0xc4 && c <= 0xc6)) {
        o->type = c >= 0xc4 && c <= 0xc6 ? WEIR_MP_BIN : WEIR_MP_STR;
        o->ptr = p + hlen;
        o->len = (uint32_t)n;
        return;
    }
    if (c >= 0xc7 && c <= 0xc9) { /* ext8/16/32: length, then the type byte */
        o->type = WEIR_MP_EXT;
        o->ext_type = (int8_t)u[hlen - 1];
        o->ptr = p + hlen;
        o->len = (uint32_t)n;
        return;
    }
    if (c >= 0xd4 && c <= 0xd8) { /* fixext: the type byte, then 1..16 bytes */
        o->type = WEIR_MP_EXT;
        o->ext_type = (int8_t)u[1];
        o->ptr = p + 2;
        o->len = (uint32_t)(hlen - 2);
        return;
    }
    if (c == 0xc0) {
        o->type = WEIR_MP_NIL;
    } else if (c == 0xc2 || c == 0xc3) {
        o->type = WEIR_MP_BOOL;
        o->v.b = c == 0xc3;
    } else if (c == 0xca) {
        uint32_t bits = (uint32_t)be(u + 1, 4);
        float f;
        memcpy(&f, &bits, sizeof f);
        o->type = WEIR_MP_FLOAT;
        o->v.f = f;
        o->is_f32 = true;
    } else if (c == 0xcb) {
        uint64_t bits = be(u + 1, 8);
        o->type = WEIR_MP_FLOAT;
        memcpy(&o->v.f, &bits, sizeof o->v.f);
    } else if (c >= 0xcc && c <= 0xcf) {
        o->type = WEIR_MP_UINT;
        o->v.u = be(u + 1, hlen - 1);
    } else { /* d0..d3: sign-extend; non-negative values read as UINT, as weir_mp_read does */
        uint64_t raw = be(u + 1, hlen - 1);
        unsigned bits = (unsigned)(hlen - 1) * 8;
        int64_t v = bits == 64
                        ? (int64_t)raw
                        : (int64_t)(raw ^ (1ull << (bits - 1))) - (int64_t)(1ull << (bits - 1));
        o->type = v < 0 ? WEIR_MP_INT : WEIR_MP_UINT;
        if (v < 0)
            o->v.i = v;
        else
            o->v.u = (uint64_t)v;
    }
}

ssize_t fwd_mp_read(const char *p, size_t avail, weir_mp_obj_t *o)
{
    if (avail == 0) return WEIR_MP_INCOMPLETE;
    const unsigned char *u = (const unsigned char *)p;
    size_t hlen;
    uint64_t n;
    hdr_kind_t k = hdr_read(u, avail, &hlen, &n);
    if (k == HDR_MORE) return WEIR_MP_INCOMPLETE;
    if (k == HDR_RESERVED) return WEIR_MP_INVALID;
    memset(o, 0, sizeof *o);
    if (k == HDR_ARRAY || k == HDR_MAP) {
        o->type = k == HDR_ARRAY ? WEIR_MP_ARRAY : WEIR_MP_MAP;
        o->v.n = (uint32_t)n;
        return (ssize_t)hlen;
    }
    if (n > avail - hlen) return WEIR_MP_INCOMPLETE;
    obj_fill(u, hlen, n, o);
    return (ssize_t)(hlen + n);
}

long long fwd_value_len(const char *p, size_t avail, int levels, const char **why)
{
    if (avail == 0) return 0;
    /* scalars (most keys and values) are measured from their header alone */
    size_t hlen;
    uint64_t n0;
    hdr_kind_t k = hdr_read((const unsigned char *)p, avail, &hlen, &n0);
    if (k == HDR_VALUE || k == HDR_MORE) {
        if (k == HDR_VALUE && n0 <= avail - hlen) return (long long)(hlen + n0);
        if (why) *why = "truncated msgpack value";
        return 0;
    }
    if (k == HDR_RESERVED) {
        if (why) *why = "reserved msgpack byte 0xc1";
        return -1;
    }
    fwd_scanner_t s;
    /* No size cap here: the bytes are all present, so a count that cannot be met just runs
     * out of bytes (truncated) in time linear in `avail`. */
    fwd_scanner_init(&s, SIZE_MAX, levels);
    size_t n;
    fwd_scan_result_t r = fwd_scanner_scan(&s, p, avail, &n, why);
    if (r == FWD_SCAN_FRAME) return (long long)n;
    if (r == FWD_SCAN_NEED_MORE) {
        if (why) *why = "truncated msgpack value";
        return 0;
    }
    return -1;
}
