/* Decompression of CompressedPackedForward payloads: gzip (one or more concatenated members,
 * as Fluentd's buffer writes them) and zstd (one or more frames).
 *
 * Invariants:
 * - The output buffer never grows beyond limit + 1 bytes: it grows geometrically but is
 *   clamped there, and producing byte limit + 1 is the error. A gzip bomb therefore costs at
 *   most the limit in memory and the time to inflate that much.
 * - Success means every input byte was consumed by complete members/frames: a truncated
 *   member, a bad CRC32 or ISIZE (zlib checks both), or trailing bytes that are not another
 *   member are errors. */
#include <limits.h>
#include <zlib.h>
#include <zstd.h>

#include "forward_internal.h"

#define FWD_INFLATE_STEP (64u * 1024) /* first output allocation */
#define ZSTD_WINDOWLOG_MIN_LEGIT 23   /* window of zstd levels <= 19 on unsized input */
#define ZSTD_WINDOWLOG_MAX_LEGIT 27   /* zstd's own default ceiling (128 MiB) */

/* Makes room for more output; returns the free space (0 only when the buffer already holds
 * limit + 1 bytes, which callers have reported as an error before asking again). */
static size_t out_room(weir_buf_t *out, size_t limit)
{
    size_t hard = limit == SIZE_MAX ? SIZE_MAX : limit + 1;
    if (out->len == out->cap && out->cap < hard) {
        size_t cap = out->cap ? out->cap * 2 : FWD_INFLATE_STEP;
        if (cap < out->cap || cap > hard) cap = hard;
        out->data = weir_realloc(out->data, cap);
        out->cap = cap;
    }
    return out->cap - out->len;
}

static int over_limit(const weir_buf_t *out, size_t base, size_t limit, const char *what,
                      weir_err_t *err)
{
    if (out->len - base <= limit) return 0;
    weir_err_set(err, "%s payload decompresses to more than %zu bytes (decompression_size_limit)",
                 what, limit);
    return -1;
}

int fwd_gunzip(const char *in, size_t len, size_t limit, weir_buf_t *out, weir_err_t *err)
{
    if (len == 0) return 0;
    size_t base = out->len;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        weir_err_set(err, "gzip: cannot initialise zlib");
        return -1;
    }
    const unsigned char *next = (const unsigned char *)in;
    size_t in_left = len; /* bytes not yet handed to zlib */
    int rc = -1;
    for (;;) {
        if (zs.avail_in == 0 && in_left > 0) {
            zs.next_in = (unsigned char *)next;
            zs.avail_in = in_left > UINT_MAX ? UINT_MAX : (unsigned)in_left;
            next += zs.avail_in;
            in_left -= zs.avail_in;
        }
        /* limit is relative to `base`: grow against base + limit */
        size_t room = out_room(out, base + limit < base ? SIZE_MAX : base + limit);
        zs.next_out = (unsigned char *)out->data + out->len;
        zs.avail_out = room > UINT_MAX ? UINT_MAX : (unsigned)room;
        unsigned before = zs.avail_out;
        int z = inflate(&zs, Z_NO_FLUSH);
        out->len += before - zs.avail_out;
        if (over_limit(out, base, limit, "gzip", err)) goto done;
        if (z == Z_STREAM_END) {
            size_t rest = zs.avail_in + in_left;
            if (rest == 0) break;
            unsigned char c = zs.avail_in ? *zs.next_in : *next;
            if (c != 0x1f) {
                weir_err_set(err, "gzip: %zu trailing bytes after the last member", rest);
                goto done;
            }
            inflateReset(&zs); /* another member follows (Fluentd appends one per write) */
            continue;
        }
        if (z == Z_OK) continue;
        if (z == Z_BUF_ERROR && zs.avail_in == 0 && in_left == 0) {
            weir_err_set(err, "gzip: stream is truncated (member incomplete)");
            goto done;
        }
        if (z == Z_BUF_ERROR) continue; /* no progress possible this round; room was made */
        weir_err_set(err, "gzip: %s", zs.msg ? zs.msg : "invalid compressed data");
        goto done;
    }
    rc = 0;
done:
    inflateEnd(&zs);
    return rc;
}

int fwd_unzstd(const char *in, size_t len, size_t limit, weir_buf_t *out, weir_err_t *err)
{
    if (len == 0) return 0;
    size_t base = out->len;
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (!dctx) {
        weir_err_set(err, "zstd: cannot create a decompression context");
        return -1;
    }
    /* A frame header may declare a window of up to 2^27 bytes by default, which the decoder
     * allocates before producing anything. A window larger than the output limit is never
     * needed, so cap it there, but never below 2^23: that is what zstd's own levels up to 19
     * declare for streams of unknown size, however small. */
    int wlog = ZSTD_WINDOWLOG_MIN_LEGIT;
    while (wlog < ZSTD_WINDOWLOG_MAX_LEGIT && ((size_t)1 << wlog) < limit)
        wlog++;
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, wlog);
    ZSTD_inBuffer ib = {in, len, 0};
    int rc = -1;
    size_t ret = 1;
    for (;;) {
        size_t room = out_room(out, base + limit < base ? SIZE_MAX : base + limit);
        ZSTD_outBuffer ob = {out->data + out->len, room, 0};
        ret = ZSTD_decompressStream(dctx, &ob, &ib);
        if (ZSTD_isError(ret)) {
            weir_err_set(err, "zstd: %s", ZSTD_getErrorName(ret));
            goto done;
        }
        out->len += ob.pos;
        if (over_limit(out, base, limit, "zstd", err)) goto done;
        if (ib.pos == ib.size) {
            if (ret == 0) break; /* the last frame is complete and flushed */
            if (ob.pos < ob.size) {
                /* room was left yet the decoder wants more input */
                weir_err_set(err, "zstd: stream is truncated (frame incomplete)");
                goto done;
            }
        }
        /* ret == 0 with input left: the next frame starts right here */
    }
    rc = 0;
done:
    ZSTD_freeDCtx(dctx);
    return rc;
}
