/* An object's bytes: the formatted text of a chunk, compressed as store_as says, on the way in,
 * a slice at a time, so a chunk's text never exists whole in memory (for gzip and zstd; json
 * and text upload the text itself, so there it is the body).
 *
 * Invariant: the same text gives the same bytes, however it is sliced and in whichever process.
 * A chunk uploaded again after a crash (S3 had stored it, weir had not yet deleted the chunk)
 * then overwrites its object with identical content: the same ETag, and to Snowpipe, whose load
 * history skips a path it has loaded, the same file. Nothing here reads the clock, the host or
 * a random source:
 *   gzip  one member; the header is set here rather than left to zlib's build: MTIME 0 (Ruby's
 *         GzipWriter, which Fluentd uses, stamps the write time instead), OS 3 (Unix, what
 *         Debian's zlib writes by default, so objects from earlier weirs are unchanged), no
 *         file name, comment or extra field; Z_DEFAULT_COMPRESSION, window and memory fixed.
 *   zstd  one frame; the level given, one thread (zstd's multi-threaded mode makes other
 *         bytes), no content checksum, no dictionary.
 * The same weir build and libraries are assumed: another zlib or libzstd version may compress
 * differently (an upgrade between a PUT and its retry writes the same events, other bytes). */
#include <string.h>

#include "s3_internal.h"

#define S3_GZIP_STEP (1u << 30)      /* zlib counts in uInt: feed at most 1 GiB at a time */
#define S3_GZIP_OS_UNIX 3            /* RFC 1952's OS field */
#define S3_GZIP_MEM_LEVEL 8          /* zlib's default */
#define S3_GZIP_OUT_STEP (256 << 10) /* room made in the output per deflate call */

int s3_body_init(s3_body_writer_t *w, s3_store_as_t kind, int zstd_level, weir_buf_t *out)
{
    memset(w, 0, sizeof *w);
    w->kind = kind;
    w->out = out;
    if (kind == S3_STORE_GZIP) {
        if (deflateInit2(&w->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS,
                         S3_GZIP_MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK)
            return -1;
        w->z_open = true;
        /* zeroed above: no time, name, comment or extra; deflate reads it at the first call */
        w->gz_header.os = S3_GZIP_OS_UNIX;
        if (deflateSetHeader(&w->z, &w->gz_header) != Z_OK) return -1;
    } else if (kind == S3_STORE_ZSTD) {
        w->zc = ZSTD_createCCtx();
        if (!w->zc ||
            ZSTD_isError(ZSTD_CCtx_setParameter(w->zc, ZSTD_c_compressionLevel, zstd_level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(w->zc, ZSTD_c_nbWorkers, 0)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(w->zc, ZSTD_c_checksumFlag, 0)))
            return -1;
    }
    return 0;
}

static int body_gzip(s3_body_writer_t *w, const char *p, size_t n, int flush)
{
    int rc = Z_OK;
    size_t done = 0;
    do {
        size_t step = n - done < S3_GZIP_STEP ? n - done : S3_GZIP_STEP;
        w->z.next_in = (Bytef *)(p ? p + done : "");
        w->z.avail_in = (uInt)step;
        done += step;
        int f = done == n ? flush : Z_NO_FLUSH;
        do {
            weir_buf_reserve(w->out, S3_GZIP_OUT_STEP);
            size_t room = w->out->cap - w->out->len;
            if (room > S3_GZIP_STEP) room = S3_GZIP_STEP;
            w->z.next_out = (Bytef *)w->out->data + w->out->len;
            w->z.avail_out = (uInt)room;
            rc = deflate(&w->z, f);
            w->out->len += room - w->z.avail_out;
            if (rc == Z_STREAM_ERROR) return -1;
        } while (w->z.avail_out == 0 || (f == Z_FINISH && rc != Z_STREAM_END));
    } while (done < n);
    return flush == Z_FINISH && rc != Z_STREAM_END ? -1 : 0;
}

static int body_zstd(s3_body_writer_t *w, const char *p, size_t n, ZSTD_EndDirective mode)
{
    ZSTD_inBuffer in = {p ? p : "", n, 0};
    size_t left;
    do {
        weir_buf_reserve(w->out, ZSTD_CStreamOutSize());
        ZSTD_outBuffer ob = {w->out->data + w->out->len, w->out->cap - w->out->len, 0};
        left = ZSTD_compressStream2(w->zc, &ob, &in, mode);
        if (ZSTD_isError(left)) return -1;
        w->out->len += ob.pos;
    } while (mode == ZSTD_e_end ? left != 0 : in.pos < in.size);
    return 0;
}

int s3_body_write(s3_body_writer_t *w, const char *p, size_t n)
{
    switch (w->kind) {
    case S3_STORE_GZIP:
        return body_gzip(w, p, n, Z_NO_FLUSH);
    case S3_STORE_ZSTD:
        return body_zstd(w, p, n, ZSTD_e_continue);
    default:
        weir_buf_append(w->out, p, n);
        return 0;
    }
}

int s3_body_finish(s3_body_writer_t *w)
{
    switch (w->kind) {
    case S3_STORE_GZIP:
        return body_gzip(w, NULL, 0, Z_FINISH);
    case S3_STORE_ZSTD:
        return body_zstd(w, NULL, 0, ZSTD_e_end);
    default:
        return 0;
    }
}

void s3_body_free(s3_body_writer_t *w)
{
    if (w->z_open) deflateEnd(&w->z);
    ZSTD_freeCCtx(w->zc);
    w->z_open = false;
    w->zc = NULL;
}
