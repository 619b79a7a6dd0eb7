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
        weir_mp_hdr_kind_t k = weir_mp_hdr(p + off, lim - off, &hlen, &n);
        if (k == WEIR_MP_HDR_MORE) goto more;
        if (k == WEIR_MP_HDR_RESERVED) {
            reason = "reserved msgpack byte 0xc1";
            goto fail;
        }
        /* siblings still to come at this level need a byte each */
        const uint64_t siblings = left - 1;
        if (k == WEIR_MP_HDR_VALUE) {
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
        uint64_t elems = k == WEIR_MP_HDR_MAP ? 2 * n : n;
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

long long fwd_value_len(const char *p, size_t avail, int levels, const char **why)
{
    if (avail == 0) return 0;
    /* scalars (most keys and values) are measured from their header alone */
    size_t hlen;
    uint64_t n0;
    weir_mp_hdr_kind_t k = weir_mp_hdr((const unsigned char *)p, avail, &hlen, &n0);
    if (k == WEIR_MP_HDR_VALUE || k == WEIR_MP_HDR_MORE) {
        if (k == WEIR_MP_HDR_VALUE && n0 <= avail - hlen) return (long long)(hlen + n0);
        if (why) *why = "truncated msgpack value";
        return 0;
    }
    if (k == WEIR_MP_HDR_RESERVED) {
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
