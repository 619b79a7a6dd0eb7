/* Allocation-free msgpack reading. weir_mp_skip walks a value with an explicit stack of
 * "elements still to read" counters, so a hostile 0x91 0x91 0x91 ... costs no recursion and a
 * declared count of four billion costs nothing until bytes arrive. */
#include "weir/mp.h"

#include <string.h>

static inline uint16_t rd16(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint16_t)((u[0] << 8) | u[1]);
}

static inline uint32_t rd32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return ((uint32_t)u[0] << 24) | ((uint32_t)u[1] << 16) | ((uint32_t)u[2] << 8) | u[3];
}

static inline uint64_t rd64(const char *p)
{
    return ((uint64_t)rd32(p) << 32) | rd32(p + 4);
}

/* Payload-carrying types: header of `hlen` bytes, then `len` payload bytes. */
static ssize_t payload(const char *p, size_t avail, size_t hlen, uint32_t len, weir_mp_obj_t *o)
{
    if (avail - hlen < len) return WEIR_MP_INCOMPLETE;
    o->ptr = p + hlen;
    o->len = len;
    return (ssize_t)(hlen + len);
}

ssize_t weir_mp_read(const char *p, size_t avail, weir_mp_obj_t *o)
{
    if (avail == 0) return WEIR_MP_INCOMPLETE;
    unsigned char c = (unsigned char)p[0];
    o->is_f32 = false;
    if (c <= 0x7f) {
        o->type = WEIR_MP_UINT;
        o->v.u = c;
        return 1;
    }
    if (c >= 0xe0) {
        o->type = WEIR_MP_INT;
        o->v.i = (int8_t)c;
        return 1;
    }
    if (c >= 0xa0 && c <= 0xbf) {
        o->type = WEIR_MP_STR;
        return payload(p, avail, 1, c & 0x1f, o);
    }
    if (c >= 0x90 && c <= 0x9f) {
        o->type = WEIR_MP_ARRAY;
        o->v.n = c & 0x0f;
        return 1;
    }
    if (c >= 0x80 && c <= 0x8f) {
        o->type = WEIR_MP_MAP;
        o->v.n = c & 0x0f;
        return 1;
    }
    /* Fixed header sizes of 0xc0..0xdf, by (c - 0xc0): the bytes after the type byte. */
    static const unsigned char extra[32] = {
        0, 0, 0, 0, 1, 2, 4, 2, 3,  5, 4, 8, 1, 2, 4, 8, /* c0..cf: ext8/16/32 add a type byte */
        1, 2, 4, 8, 2, 3, 5, 9, 17, 1, 2, 4, 2, 4, 2, 4, /* d0..df */
    };
    size_t h = 1 + extra[c - 0xc0];
    if (avail < h) return WEIR_MP_INCOMPLETE;
    const char *q = p + 1;
    switch (c) {
    case 0xc0:
        o->type = WEIR_MP_NIL;
        return 1;
    case 0xc1:
        return WEIR_MP_INVALID;
    case 0xc2:
    case 0xc3:
        o->type = WEIR_MP_BOOL;
        o->v.b = c == 0xc3;
        return 1;
    case 0xc4:
        o->type = WEIR_MP_BIN;
        return payload(p, avail, h, (uint8_t)q[0], o);
    case 0xc5:
        o->type = WEIR_MP_BIN;
        return payload(p, avail, h, rd16(q), o);
    case 0xc6:
        o->type = WEIR_MP_BIN;
        return payload(p, avail, h, rd32(q), o);
    case 0xc7:
        o->type = WEIR_MP_EXT;
        o->ext_type = (int8_t)q[1];
        return payload(p, avail, h, (uint8_t)q[0], o);
    case 0xc8:
        o->type = WEIR_MP_EXT;
        o->ext_type = (int8_t)q[2];
        return payload(p, avail, h, rd16(q), o);
    case 0xc9:
        o->type = WEIR_MP_EXT;
        o->ext_type = (int8_t)q[4];
        return payload(p, avail, h, rd32(q), o);
    case 0xca: {
        uint32_t bits = rd32(q);
        float f;
        memcpy(&f, &bits, 4);
        o->type = WEIR_MP_FLOAT;
        o->v.f = f;
        o->is_f32 = true;
        return (ssize_t)h;
    }
    case 0xcb: {
        uint64_t bits = rd64(q);
        memcpy(&o->v.f, &bits, 8);
        o->type = WEIR_MP_FLOAT;
        return (ssize_t)h;
    }
    case 0xcc:
        o->type = WEIR_MP_UINT;
        o->v.u = (uint8_t)q[0];
        return (ssize_t)h;
    case 0xcd:
        o->type = WEIR_MP_UINT;
        o->v.u = rd16(q);
        return (ssize_t)h;
    case 0xce:
        o->type = WEIR_MP_UINT;
        o->v.u = rd32(q);
        return (ssize_t)h;
    case 0xcf:
        o->type = WEIR_MP_UINT;
        o->v.u = rd64(q);
        return (ssize_t)h;
    case 0xd0:
        o->v.i = (int8_t)q[0];
        break;
    case 0xd1:
        o->v.i = (int16_t)rd16(q);
        break;
    case 0xd2:
        o->v.i = (int32_t)rd32(q);
        break;
    case 0xd3:
        o->v.i = (int64_t)rd64(q);
        break;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        o->type = WEIR_MP_EXT;
        o->ext_type = (int8_t)q[0];
        return payload(p, avail, 2, 1u << (c - 0xd4), o);
    case 0xd9:
        o->type = WEIR_MP_STR;
        return payload(p, avail, h, (uint8_t)q[0], o);
    case 0xda:
        o->type = WEIR_MP_STR;
        return payload(p, avail, h, rd16(q), o);
    case 0xdb:
        o->type = WEIR_MP_STR;
        return payload(p, avail, h, rd32(q), o);
    case 0xdc:
        o->type = WEIR_MP_ARRAY;
        o->v.n = rd16(q);
        return (ssize_t)h;
    case 0xdd:
        o->type = WEIR_MP_ARRAY;
        o->v.n = rd32(q);
        return (ssize_t)h;
    case 0xde:
        o->type = WEIR_MP_MAP;
        o->v.n = rd16(q);
        return (ssize_t)h;
    case 0xdf:
        o->type = WEIR_MP_MAP;
        o->v.n = rd32(q);
        return (ssize_t)h;
    }
    /* signed ints d0..d3: normalise non-negative values to UINT so callers test one type */
    if (o->v.i >= 0) {
        o->type = WEIR_MP_UINT;
        o->v.u = (uint64_t)o->v.i;
    } else {
        o->type = WEIR_MP_INT;
    }
    return (ssize_t)h;
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
