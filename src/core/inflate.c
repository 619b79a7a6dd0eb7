/* Bounded, resumable decompression (include/weir/inflate.h): zlib for gzip and zlib streams,
 * libzstd for zstd, behind one step function.
 *
 * Invariants:
 * - out->cap never exceeds base + limit + 1, where base is out->len on entry: the buffer
 *   grows geometrically from WEIR_INFLATE_CHUNK but is clamped there, and producing byte
 *   limit + 1 is the error.
 * - in_off only grows; a step ends once it has produced or consumed its budget; the decoder is
 * handed at most UINT_MAX input bytes and WEIR_INFLATE_CHUNK output bytes per call, so one call
 * into zlib or zstd is short and a step ends within one chunk of its budget. */
#include "weir/inflate.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define GZIP_MAGIC0 0x1f     /* first byte of a gzip member (RFC 1952) */
#define ZLIB_WBITS MAX_WBITS /* zlib header, the largest window */
#define GZIP_WBITS (16 + MAX_WBITS)

struct weir_inflate {
    weir_inflate_format_t fmt;
    const unsigned char *in;
    size_t len, in_off;
    size_t limit, base;
    weir_buf_t *out;
    z_stream zs;
    ZSTD_DCtx *zd;
    size_t zret;     /* last ZSTD_decompressStream result: 0 at a frame's end */
    bool streaming;  /* input comes in pieces (weir_inflate_feed) */
    bool last;       /* streaming: the piece held now is the last one */
    bool member_end; /* streaming: a gzip member or zlib stream ended with its piece */
    uint64_t fed;    /* streaming: input bytes given so far */
};

const char *weir_inflate_format_name(weir_inflate_format_t fmt)
{
    switch (fmt) {
    case WEIR_INFLATE_GZIP:
        return "gzip";
    case WEIR_INFLATE_ZLIB:
        return "zlib";
    case WEIR_INFLATE_ZSTD:
        return "zstd";
    }
    return "?";
}

weir_inflate_t *weir_inflate_new(weir_inflate_format_t fmt, const char *in, size_t len,
                                 size_t limit, weir_buf_t *out, weir_err_t *err)
{
    weir_inflate_t *z = weir_calloc(1, sizeof *z);
    z->fmt = fmt;
    z->in = (const unsigned char *)in;
    z->len = len;
    z->limit = limit;
    z->out = out;
    z->base = out->len;
    z->zret = 1;
    if (fmt == WEIR_INFLATE_ZSTD) {
        z->zd = ZSTD_createDCtx();
        if (!z->zd) {
            weir_err_set(err, "zstd: cannot create a decompression context");
            free(z);
            return NULL;
        }
        int wlog = WEIR_INFLATE_ZSTD_WINDOWLOG_MIN;
        while (wlog < WEIR_INFLATE_ZSTD_WINDOWLOG_MAX && ((size_t)1 << wlog) < limit)
            wlog++;
        ZSTD_DCtx_setParameter(z->zd, ZSTD_d_windowLogMax, wlog);
        return z;
    }
    if (inflateInit2(&z->zs, fmt == WEIR_INFLATE_GZIP ? GZIP_WBITS : ZLIB_WBITS) != Z_OK) {
        weir_err_set(err, "%s: cannot initialise zlib", weir_inflate_format_name(fmt));
        free(z);
        return NULL;
    }
    return z;
}

void weir_inflate_free(weir_inflate_t *z)
{
    if (!z) return;
    if (z->fmt == WEIR_INFLATE_ZSTD)
        ZSTD_freeDCtx(z->zd);
    else
        inflateEnd(&z->zs);
    free(z);
}

size_t weir_inflate_produced(const weir_inflate_t *z)
{
    return z->out->len - z->base;
}

/* Makes room for the next call into the decoder; returns the space to offer (never 0 while
 * the output is within the limit). */
static size_t out_room(weir_inflate_t *z)
{
    weir_buf_t *out = z->out;
    size_t hard = z->limit > SIZE_MAX - 1 - z->base ? SIZE_MAX : z->base + z->limit + 1;
    if (out->len == out->cap && out->cap < hard) {
        size_t cap = out->cap ? out->cap * 2 : WEIR_INFLATE_CHUNK;
        if (cap < out->cap || cap > hard) cap = hard;
        out->data = weir_realloc(out->data, cap);
        out->cap = cap;
    }
    size_t room = out->cap - out->len;
    return room > WEIR_INFLATE_CHUNK ? WEIR_INFLATE_CHUNK : room;
}

static int over_limit(const weir_inflate_t *z, weir_err_t *err)
{
    if (weir_inflate_produced(z) <= z->limit) return 0;
    weir_err_set(err, "%s payload decompresses to more than %zu bytes (decompression_size_limit)",
                 weir_inflate_format_name(z->fmt), z->limit);
    return -1;
}

/* One call into zlib. Returns 1 at the end of the input, 0 to go on, -1 on an error. */
static int zlib_call(weir_inflate_t *z, weir_err_t *err)
{
    z_stream *zs = &z->zs;
    const char *name = weir_inflate_format_name(z->fmt);
    if (z->member_end) { /* streaming: what follows the member is in this piece or the next */
        if (z->in_off == z->len) return z->last ? 1 : 2;
        if (z->fmt == WEIR_INFLATE_GZIP && z->in[z->in_off] == GZIP_MAGIC0) {
            inflateReset(zs);
            z->member_end = false;
        } else {
            weir_err_set(err, "%s: trailing bytes after the end of the stream", name);
            return -1;
        }
    }
    size_t in_left = z->len - z->in_off;
    zs->next_in = (unsigned char *)z->in + z->in_off;
    zs->avail_in = in_left > UINT_MAX ? UINT_MAX : (unsigned)in_left;
    size_t room = out_room(z);
    zs->next_out = (unsigned char *)z->out->data + z->out->len;
    zs->avail_out = (unsigned)room;
    unsigned in_before = zs->avail_in;
    int rc = inflate(zs, Z_NO_FLUSH);
    z->in_off += in_before - zs->avail_in;
    z->out->len += room - zs->avail_out;
    if (over_limit(z, err)) return -1;
    if (rc == Z_STREAM_END) {
        if (z->in_off == z->len && z->streaming) {
            z->member_end = true;
            return z->last ? 1 : 2;
        }
        if (z->in_off == z->len) return 1;
        if (z->fmt == WEIR_INFLATE_GZIP && z->in[z->in_off] == GZIP_MAGIC0) {
            inflateReset(zs); /* another member follows (Fluentd appends one per write) */
            return 0;
        }
        weir_err_set(err, "%s: %zu trailing bytes after the end of the stream", name,
                     z->len - z->in_off);
        return -1;
    }
    if (rc == Z_OK) return 0;
    if (rc == Z_BUF_ERROR && z->in_off == z->len && zs->avail_out > 0) {
        if (z->streaming && !z->last) return 2;
        weir_err_set(err, "%s: stream is truncated", name);
        return -1;
    }
    if (rc == Z_BUF_ERROR) return 0; /* no progress this call; room or input is offered again */
    weir_err_set(err, "%s: %s", name, zs->msg ? zs->msg : "invalid compressed data");
    return -1;
}

/* One call into zstd, with the same results. */
static int zstd_call(weir_inflate_t *z, weir_err_t *err)
{
    /* streaming: a frame ended with the piece before, and this piece is empty */
    if (z->streaming && z->zret == 0 && z->in_off == z->len) return z->last ? 1 : 2;
    size_t room = out_room(z);
    ZSTD_inBuffer ib = {z->in, z->len, z->in_off};
    ZSTD_outBuffer ob = {z->out->data + z->out->len, room, 0};
    size_t ret = ZSTD_decompressStream(z->zd, &ob, &ib);
    if (ZSTD_isError(ret)) {
        weir_err_set(err, "zstd: %s", ZSTD_getErrorName(ret));
        return -1;
    }
    z->in_off = ib.pos;
    z->out->len += ob.pos;
    z->zret = ret;
    if (over_limit(z, err)) return -1;
    if (ib.pos < ib.size) return 0; /* ret == 0 here: the next frame starts right here */
    if (ret == 0) return z->streaming && !z->last ? 2 : 1; /* a frame is complete, flushed */
    if (ob.pos < ob.size) { /* room was left, yet the decoder wants more input */
        if (z->streaming && !z->last) return 2;
        weir_err_set(err, "zstd: stream is truncated (frame incomplete)");
        return -1;
    }
    return 0;
}

_Thread_local size_t weir_inflate_step_max;

static int step(weir_inflate_t *z, size_t budget, weir_err_t *err)
{
    if (!z->streaming && z->len == 0) return 1;
    if (z->streaming && z->last && z->fed == 0) return 1; /* an empty stream */
    size_t start = weir_inflate_produced(z), in_start = z->in_off;
    for (;;) {
        int rc = z->fmt == WEIR_INFLATE_ZSTD ? zstd_call(z, err) : zlib_call(z, err);
        if (rc != 0) return rc;
        /* input counts too: thousands of empty gzip members produce nothing yet take time */
        if (weir_inflate_produced(z) - start >= budget || z->in_off - in_start >= budget) return 0;
    }
}

int weir_inflate_step(weir_inflate_t *z, size_t budget, weir_err_t *err)
{
    size_t start = weir_inflate_produced(z);
    int rc = step(z, budget, err);
    size_t made = weir_inflate_produced(z) - start;
    if (made > weir_inflate_step_max) weir_inflate_step_max = made;
    return rc;
}

void weir_inflate_feed(weir_inflate_t *z, const char *in, size_t len, bool last)
{
    /* streaming, `limit` bounds what `out` holds, not the whole: it cannot size the window,
     * and a frame of zstd's levels 20-22 declares up to 2^27 */
    if (!z->streaming && z->fmt == WEIR_INFLATE_ZSTD)
        ZSTD_DCtx_setParameter(z->zd, ZSTD_d_windowLogMax, WEIR_INFLATE_ZSTD_WINDOWLOG_MAX);
    z->streaming = true;
    z->in = (const unsigned char *)in;
    z->len = len;
    z->in_off = 0;
    z->last = last;
    z->fed += len;
}

int weir_inflate(weir_inflate_format_t fmt, const char *in, size_t len, size_t limit,
                 weir_buf_t *out, weir_err_t *err)
{
    weir_inflate_t *z = weir_inflate_new(fmt, in, len, limit, out, err);
    if (!z) return -1;
    int rc = weir_inflate_step(z, SIZE_MAX, err);
    weir_inflate_free(z);
    return rc == 1 ? 0 : -1;
}

void weir_inflation_reset(weir_inflation_t *s)
{
    weir_inflate_free(s->z);
    s->z = NULL;
    weir_buf_free(&s->out);
    s->done = false;
}

int weir_inflation_run(weir_inflation_t *s, weir_inflate_format_t fmt, const char *in, size_t len,
                       size_t limit, weir_err_t *err)
{
    if (s->done) return 1;
    if (!s->z) {
        weir_buf_init(&s->out);
        s->z = weir_inflate_new(fmt, in, len, limit, &s->out, err);
        if (!s->z) goto fail;
    }
    int rc = weir_inflate_step(s->z, WEIR_INFLATE_STEP_BUDGET, err);
    if (rc == 0) return 0;
    if (rc < 0) goto fail;
    weir_inflate_free(s->z);
    s->z = NULL;
    s->done = true;
    return 1;
fail:
    weir_inflation_reset(s);
    return -1;
}

int weir_gzip(const char *in, size_t len, weir_buf_t *out, weir_err_t *err)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, GZIP_WBITS, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        weir_err_set(err, "gzip: cannot start the compressor");
        return -1;
    }
    int rc = Z_OK;
    z.next_in = (Bytef *)in;
    /* zlib counts in uInt: feed a larger input in pieces */
    size_t left = len;
    while (rc != Z_STREAM_END) {
        if (z.avail_in == 0 && left > 0) {
            z.avail_in = left > UINT_MAX ? UINT_MAX : (uInt)left;
            left -= z.avail_in;
        }
        weir_buf_reserve(out, WEIR_INFLATE_CHUNK);
        z.next_out = (Bytef *)out->data + out->len;
        z.avail_out = (uInt)(out->cap - out->len > UINT_MAX ? UINT_MAX : out->cap - out->len);
        uInt before = z.avail_out;
        rc = deflate(&z, left == 0 ? Z_FINISH : Z_NO_FLUSH);
        out->len += before - z.avail_out;
        if (rc == Z_STREAM_ERROR) break;
    }
    deflateEnd(&z);
    if (rc == Z_STREAM_END) return 0;
    weir_err_set(err, "gzip: compression failed");
    return -1;
}
