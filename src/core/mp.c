/* Allocation-free msgpack reading: the one table of type bytes (weir_mp_hdr_table, used by
 * weir_mp_read here and by the forward input's frame scanner), and weir_mp_skip, which walks a
 * value with an explicit stack of "elements still to read" counters, so a hostile
 * 0x91 0x91 0x91 ... costs no recursion and a declared count of four billion costs nothing
 * until bytes arrive. */
#include "weir/mp.h"

#include <string.h>

const weir_mp_hdr_info_t weir_mp_hdr_table[32] = {
    {WEIR_MP_HDR_VALUE, 1, 0},  {WEIR_MP_HDR_RESERVED, 1, 0}, /* c0 nil, c1 */
    {WEIR_MP_HDR_VALUE, 1, 0},  {WEIR_MP_HDR_VALUE, 1, 0},    /* false, true */
    {WEIR_MP_HDR_VALUE, 2, 1},  {WEIR_MP_HDR_VALUE, 3, 2},
    {WEIR_MP_HDR_VALUE, 5, 4}, /* bin */
    {WEIR_MP_HDR_VALUE, 3, 1},  {WEIR_MP_HDR_VALUE, 4, 2},
    {WEIR_MP_HDR_VALUE, 6, 4},                             /* ext */
    {WEIR_MP_HDR_VALUE, 5, 0},  {WEIR_MP_HDR_VALUE, 9, 0}, /* float32/64 */
    {WEIR_MP_HDR_VALUE, 2, 0},  {WEIR_MP_HDR_VALUE, 3, 0}, /* uint8/16 */
    {WEIR_MP_HDR_VALUE, 5, 0},  {WEIR_MP_HDR_VALUE, 9, 0}, /* uint32/64 */
    {WEIR_MP_HDR_VALUE, 2, 0},  {WEIR_MP_HDR_VALUE, 3, 0}, /* int8/16 */
    {WEIR_MP_HDR_VALUE, 5, 0},  {WEIR_MP_HDR_VALUE, 9, 0}, /* int32/64 */
    {WEIR_MP_HDR_VALUE, 3, 0},  {WEIR_MP_HDR_VALUE, 4, 0},
    {WEIR_MP_HDR_VALUE, 6, 0},                              /* fixext */
    {WEIR_MP_HDR_VALUE, 10, 0}, {WEIR_MP_HDR_VALUE, 18, 0}, /* fixext8/16 */
    {WEIR_MP_HDR_VALUE, 2, 1},  {WEIR_MP_HDR_VALUE, 3, 2},
    {WEIR_MP_HDR_VALUE, 5, 4},                             /* str */
    {WEIR_MP_HDR_ARRAY, 3, 2},  {WEIR_MP_HDR_ARRAY, 5, 4}, /* array16/32 */
    {WEIR_MP_HDR_MAP, 3, 2},    {WEIR_MP_HDR_MAP, 5, 4},   /* map16/32 */
};

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

ssize_t weir_mp_read(const char *p, size_t avail, weir_mp_obj_t *o)
{
    if (avail == 0) return WEIR_MP_INCOMPLETE;
    const unsigned char *u = (const unsigned char *)p;
    size_t hlen;
    uint64_t n;
    weir_mp_hdr_kind_t k = weir_mp_hdr(u, avail, &hlen, &n);
    if (k == WEIR_MP_HDR_MORE) return WEIR_MP_INCOMPLETE;
    if (k == WEIR_MP_HDR_RESERVED) return WEIR_MP_INVALID;
    memset(o, 0, sizeof *o);
    if (k == WEIR_MP_HDR_ARRAY || k == WEIR_MP_HDR_MAP) {
        o->type = k == WEIR_MP_HDR_ARRAY ? WEIR_MP_ARRAY : WEIR_MP_MAP;
        o->v.n = (uint32_t)n;
        return (ssize_t)hlen;
    }
    if (n > avail - hlen) return WEIR_MP_INCOMPLETE;
    obj_fill(u, hlen, n, o);
    return (ssize_t)(hlen + n);
}

ssize_t weir_mp_skip(const char *p, size_t avail, int max_depth)
{
    uint64_t stack[WEIR_MP_MAX_DEPTH + 1];
    if (max_depth > WEIR_MP_MAX_DEPTH) max_depth = WEIR_MP_MAX_DEPTH;
    int depth = 0;
    uint64_t left = 1; /* values still to read at the current level */
    size_t off = 0;
    for (;;) {
        while (left == 0) {
            if (depth == 0) return (ssize_t)off;
            left = stack[--depth];
        }
        weir_mp_obj_t o;
        ssize_t n = weir_mp_read(p + off, avail - off, &o);
        if (n <= 0) return n;
        off += (size_t)n;
        left--;
        if (o.type == WEIR_MP_ARRAY || o.type == WEIR_MP_MAP) {
            uint64_t count = o.type == WEIR_MP_MAP ? 2ull * o.v.n : o.v.n;
            if (count == 0) continue;
            if (depth >= max_depth) return WEIR_MP_TOO_DEEP;
            stack[depth++] = left;
            left = count;
        }
    }
}
