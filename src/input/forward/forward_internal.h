/* Internal helpers shared by the socket-free part of the forward input: msgpack writers for
 * the few shapes weir produces (headers, strings, ints) and the scanners' work counters. Nothing
 * here is part of the public contract in include/weir/forward.h. */
#ifndef WEIR_FORWARD_INTERNAL_H
#define WEIR_FORWARD_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "weir/common.h"
#include "weir/forward.h"
#include "weir/mp.h"

/* Values (headers) the scanner has examined on this thread, summed over every call. Tests use
 * it to show that a frame delivered one byte at a time costs linear work; nothing else reads
 * it. Thread-local so that concurrent scanners neither race nor disturb a test's count. */
extern _Thread_local uint64_t fwd_scan_work;
/* Bytes the JSON request scan has examined on this thread, likewise for tests. */
extern _Thread_local uint64_t fwd_json_scan_work;

/* Length of the one msgpack value at p (which holds `avail` bytes), nesting at most `levels`
 * containers (the value itself counts as one when it is a container). Returns the length,
 * 0 when the value is truncated, or -1 when it is malformed (0xc1, too deep, a declared size
 * that cannot fit in `avail`); *why then names the reason. */
long long fwd_value_len(const char *p, size_t avail, int levels, const char **why);

/* ---- msgpack writers (big-endian, smallest encoding, as msgpack-ruby packs) ---- */

static inline void fwd_put_be(char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

/* Writes a header with a type byte and an n-byte big-endian length; returns its size. */
static inline size_t fwd_hdr_sized(char *p, unsigned char type, uint64_t v, int n)
{
    p[0] = (char)type;
    fwd_put_be(p + 1, v, n);
    return 1 + (size_t)n;
}

/* Header writers into a caller buffer of at least 5 bytes; each returns the bytes written. */
static inline size_t fwd_mp_str_hdr(char *p, uint32_t len)
{
    if (len < 32) {
        p[0] = (char)(0xa0 | len);
        return 1;
    }
    if (len <= 0xff) return fwd_hdr_sized(p, 0xd9, len, 1);
    if (len <= 0xffff) return fwd_hdr_sized(p, 0xda, len, 2);
    return fwd_hdr_sized(p, 0xdb, len, 4);
}

static inline size_t fwd_mp_map_hdr(char *p, uint32_t n)
{
    if (n < 16) {
        p[0] = (char)(0x80 | n);
        return 1;
    }
    if (n <= 0xffff) return fwd_hdr_sized(p, 0xde, n, 2);
    return fwd_hdr_sized(p, 0xdf, n, 4);
}

static inline size_t fwd_mp_array_hdr(char *p, uint32_t n)
{
    if (n < 16) {
        p[0] = (char)(0x90 | n);
        return 1;
    }
    if (n <= 0xffff) return fwd_hdr_sized(p, 0xdc, n, 2);
    return fwd_hdr_sized(p, 0xdd, n, 4);
}

static inline void fwd_buf_str(weir_buf_t *b, const void *s, size_t len)
{
    char h[5];
    weir_buf_append(b, h, fwd_mp_str_hdr(h, (uint32_t)len));
    weir_buf_append(b, s, len);
}

static inline void fwd_buf_cstr(weir_buf_t *b, const char *s)
{
    fwd_buf_str(b, s, strlen(s));
}

static inline void fwd_buf_bin(weir_buf_t *b, const void *s, size_t len)
{
    char h[5];
    size_t n = len <= 0xff     ? fwd_hdr_sized(h, 0xc4, len, 1)
               : len <= 0xffff ? fwd_hdr_sized(h, 0xc5, len, 2)
                               : fwd_hdr_sized(h, 0xc6, len, 4);
    weir_buf_append(b, h, n);
    weir_buf_append(b, s, len);
}

static inline void fwd_buf_map_hdr(weir_buf_t *b, uint32_t n)
{
    char h[5];
    weir_buf_append(b, h, fwd_mp_map_hdr(h, n));
}

static inline void fwd_buf_array_hdr(weir_buf_t *b, uint32_t n)
{
    char h[5];
    weir_buf_append(b, h, fwd_mp_array_hdr(h, n));
}

/* Integers in the smallest form: positive fixint / uint8..64, negative fixint / int8..64. */
static inline void fwd_buf_int(weir_buf_t *b, int64_t v)
{
    char h[9];
    size_t n;
    if (v >= 0) {
        uint64_t u = (uint64_t)v;
        if (u < 128) {
            h[0] = (char)u;
            n = 1;
        } else if (u <= 0xff) {
            n = fwd_hdr_sized(h, 0xcc, u, 1);
        } else if (u <= 0xffff) {
            n = fwd_hdr_sized(h, 0xcd, u, 2);
        } else if (u <= 0xffffffffu) {
            n = fwd_hdr_sized(h, 0xce, u, 4);
        } else {
            n = fwd_hdr_sized(h, 0xcf, u, 8);
        }
    } else if (v >= -32) {
        h[0] = (char)(int8_t)v;
        n = 1;
    } else if (v >= INT8_MIN) {
        n = fwd_hdr_sized(h, 0xd0, (uint64_t)v & 0xff, 1);
    } else if (v >= INT16_MIN) {
        n = fwd_hdr_sized(h, 0xd1, (uint64_t)v & 0xffff, 2);
    } else if (v >= INT32_MIN) {
        n = fwd_hdr_sized(h, 0xd2, (uint64_t)v & 0xffffffffu, 4);
    } else {
        n = fwd_hdr_sized(h, 0xd3, (uint64_t)v, 8);
    }
    weir_buf_append(b, h, n);
}

static inline void fwd_buf_double(weir_buf_t *b, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    char h[9];
    weir_buf_append(b, h, fwd_hdr_sized(h, 0xcb, bits, 8));
}

static inline uint32_t fwd_rd32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

#endif
