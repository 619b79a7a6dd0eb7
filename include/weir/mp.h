/* A minimal, allocation-free msgpack reader over a byte range.
 *
 * weir reads untrusted msgpack without msgpack-c's unpacker, because that allocates room for a
 * container's declared element count before the elements exist. These functions only look at
 * bytes that are present, never allocate, and bound nesting depth with an explicit stack. */
#ifndef WEIR_MP_H
#define WEIR_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum weir_mp_type {
    WEIR_MP_NIL,
    WEIR_MP_BOOL,
    WEIR_MP_UINT,  /* non-negative integer, in v.u */
    WEIR_MP_INT,   /* negative integer, in v.i */
    WEIR_MP_FLOAT, /* float32 or float64, in v.f */
    WEIR_MP_STR,
    WEIR_MP_BIN,
    WEIR_MP_ARRAY, /* v.n elements follow */
    WEIR_MP_MAP,   /* v.n key/value pairs follow */
    WEIR_MP_EXT,
} weir_mp_type_t;

typedef struct weir_mp_obj {
    weir_mp_type_t type;
    union {
        bool b;
        uint64_t u;
        int64_t i;
        double f;
        uint32_t n;
    } v;
    const char *ptr; /* payload of str/bin/ext */
    uint32_t len;    /* payload length of str/bin/ext */
    int8_t ext_type;
    bool is_f32; /* FLOAT read from a float32 */
} weir_mp_obj_t;

#define WEIR_MP_INCOMPLETE 0
#define WEIR_MP_INVALID (-1)
#define WEIR_MP_TOO_DEEP (-2)

/* ---- header classification: the one table of msgpack's type bytes ----------------------
 * Both weir_mp_read and the forward input's resumable frame scanner classify a value from its
 * first bytes with weir_mp_hdr, so the two can never disagree on where a value ends. */
typedef enum weir_mp_hdr_kind {
    WEIR_MP_HDR_VALUE,    /* a value of hlen + n bytes (n = str/bin/ext payload length) */
    WEIR_MP_HDR_ARRAY,    /* an array header of hlen bytes, n elements */
    WEIR_MP_HDR_MAP,      /* a map header of hlen bytes, n pairs */
    WEIR_MP_HDR_MORE,     /* the header itself is not complete */
    WEIR_MP_HDR_RESERVED, /* 0xc1 */
} weir_mp_hdr_kind_t;

/* 0xc0..0xdf: the kind, the header length (the whole value for fixed-size kinds) and the
 * number of big-endian length bytes that follow the type byte. */
typedef struct weir_mp_hdr_info {
    uint8_t kind;
    uint8_t hlen;
    uint8_t lenbytes;
} weir_mp_hdr_info_t;
extern const weir_mp_hdr_info_t weir_mp_hdr_table[32];

/* Classifies the value at p (avail >= 1 bytes): its kind, header length and count/length.
 * Inline: it is the inner loop of the forward scanner. */
static inline weir_mp_hdr_kind_t weir_mp_hdr(const unsigned char *p, size_t avail, size_t *hlen,
                                             uint64_t *n)
{
    unsigned c = p[0];
    *hlen = 1;
    *n = 0;
    if (c <= 0x7f || c >= 0xe0) return WEIR_MP_HDR_VALUE;
    if (c <= 0x8f) {
        *n = c & 0x0f;
        return WEIR_MP_HDR_MAP;
    }
    if (c <= 0x9f) {
        *n = c & 0x0f;
        return WEIR_MP_HDR_ARRAY;
    }
    if (c <= 0xbf) {
        *n = c & 0x1f;
        return WEIR_MP_HDR_VALUE;
    }
    const weir_mp_hdr_info_t *t = &weir_mp_hdr_table[c - 0xc0];
    *hlen = t->hlen;
    if (avail < *hlen) return WEIR_MP_HDR_MORE;
    uint64_t v = 0;
    for (unsigned k = 1; k <= t->lenbytes; k++)
        v = (v << 8) | p[k];
    *n = v;
    return (weir_mp_hdr_kind_t)t->kind;
}

/* Reads one object header (and the payload of str/bin/ext) at p. Returns the bytes consumed,
 * WEIR_MP_INCOMPLETE if more bytes are needed, WEIR_MP_INVALID for the reserved byte 0xc1. */
ssize_t weir_mp_read(const char *p, size_t avail, weir_mp_obj_t *o);

/* Skips one whole value at p, nesting at most `max_depth` containers. Returns its length,
 * WEIR_MP_INCOMPLETE, WEIR_MP_INVALID or WEIR_MP_TOO_DEEP. Linear in the value's size. */
ssize_t weir_mp_skip(const char *p, size_t avail, int max_depth);

/* Largest depth weir_mp_skip supports (its stack is on the C stack). */
#define WEIR_MP_MAX_DEPTH 128

#endif
