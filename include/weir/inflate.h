/* Bounded decompression of bytes a peer sent: the one inflater behind every input that
 * accepts compressed data (forward's CompressedPackedForward, in_http's Content-Encoding).
 *
 * Formats: gzip (one or more concatenated members, as Fluentd's buffer and pigz write them),
 * zlib (HTTP's "deflate", RFC 9110) and zstd (one or more frames). For every format:
 * - the output never exceeds `limit` bytes: producing byte limit + 1 is the error, and the
 *   output buffer is never allocated beyond limit + 1 bytes, so a bomb costs at most the
 *   limit in memory (deflate cannot expand more than 1032:1, so the limit also bounds the
 *   time; zstd's window is capped as well, see WEIR_INFLATE_ZSTD_WINDOWLOG_*);
 * - success means every input byte belonged to complete members/frames: a truncated stream, a
 *   bad checksum, or trailing bytes that do not start another member are errors;
 * - empty input is empty output.
 *
 * The work can be cut in steps (weir_inflate_step with an output budget), so a caller on the
 * event loop can inflate a large body a slice at a time and let other connections run in
 * between; weir_inflate() does it all in one call. */
#ifndef WEIR_INFLATE_H
#define WEIR_INFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/common.h"

typedef enum weir_inflate_format {
    WEIR_INFLATE_GZIP,
    WEIR_INFLATE_ZLIB,
    WEIR_INFLATE_ZSTD,
} weir_inflate_format_t;

/* The first output allocation, and the most output handed to the decoder per call into it. */
#define WEIR_INFLATE_CHUNK (64u * 1024)
/* A suggested output budget per step for callers on the event loop: about a millisecond of
 * inflating on the project's machine. */
#define WEIR_INFLATE_STEP_BUDGET (1024u * 1024)
/* zstd frames may declare a window up to 2^27 bytes by default, which the decoder allocates
 * before producing anything. A window larger than the limit is never needed, so the window is
 * capped at the limit, but never below 2^23 (what zstd's own levels up to 19 declare for
 * input of unknown size) nor above 2^27 (zstd's default ceiling). */
#define WEIR_INFLATE_ZSTD_WINDOWLOG_MIN 23
#define WEIR_INFLATE_ZSTD_WINDOWLOG_MAX 27

typedef struct weir_inflate weir_inflate_t;

/* A decompression of one input of `len` bytes at `in` (which must stay valid and unchanged
 * until weir_inflate_free) into `out`, appending after what `out` already holds. NULL with
 * err set if the decoder cannot be set up. */
weir_inflate_t *weir_inflate_new(weir_inflate_format_t fmt, const char *in, size_t len,
                                 size_t limit, weir_buf_t *out, weir_err_t *err);
/* Goes on until about `budget` more output bytes were produced or input bytes consumed (at
 * most one chunk more), or the end.
 * Returns 1 when the input is fully decoded, 0 when there is more to do (call again), 2 when
 * streaming and the piece fed is consumed (weir_inflate_feed the next), -1 with
 * err set on an error (a message naming the format and why; "decompression_size_limit" when
 * the limit was passed). After 1 or -1 only weir_inflate_free may be called. */
int weir_inflate_step(weir_inflate_t *z, size_t budget, weir_err_t *err);
/* Streaming, for input that arrives in pieces (an HTTP body): create with in = NULL and len =
 * 0, then give each piece with weir_inflate_feed and call weir_inflate_step until it returns
 * 2 (this piece is consumed, feed the next; `in` must stay valid until then) or 1 (done: the
 * piece fed with last = true is consumed and the stream ended there; an empty stream is
 * done). A stream that ends inside a member/frame after the last piece is "truncated". The
 * caller may consume and empty `out` between steps (out->len = its length at creation), so
 * that the output is never held whole; the limit then bounds what `out` holds, and zstd's
 * window is allowed up to WEIR_INFLATE_ZSTD_WINDOWLOG_MAX whatever the limit. */
void weir_inflate_feed(weir_inflate_t *z, const char *in, size_t len, bool last);
/* Output bytes produced so far. */
size_t weir_inflate_produced(const weir_inflate_t *z);
void weir_inflate_free(weir_inflate_t *z);

/* All in one call: 0, or -1 with err set. `out` stays valid either way (the caller frees). */
int weir_inflate(weir_inflate_format_t fmt, const char *in, size_t len, size_t limit,
                 weir_buf_t *out, weir_err_t *err);

/* A decompression an input runs across event-loop turns, one step per call of its framing:
 * the state it keeps between the calls (zeroed, or after weir_inflation_reset, it is idle). */
typedef struct weir_inflation {
    weir_inflate_t *z; /* the decoder while in progress */
    weir_buf_t out;    /* what was produced so far; all of it once done */
    bool done;
} weir_inflation_t;

/* One step of about WEIR_INFLATE_STEP_BUDGET output over `in` (the same bytes on every call),
 * beginning on the first call. Returns 1 when the input is fully decoded (s->out holds it;
 * later calls return 1 at once), 0 when there is more to do (call again on a later loop turn),
 * -1 with err set as weir_inflate() sets it (s is reset). */
int weir_inflation_run(weir_inflation_t *s, weir_inflate_format_t fmt, const char *in, size_t len,
                       size_t limit, weir_err_t *err);
/* Frees what s holds and makes it idle. */
void weir_inflation_reset(weir_inflation_t *s);

/* Test hook: the most output one weir_inflate_step call produced on this thread since it was
 * last set to 0 (a test's way to see that no caller inflates a whole body in one call). */
extern _Thread_local size_t weir_inflate_step_max;

/* The other direction, for data weir sends: one gzip member of the `len` bytes at `in`,
 * appended to `out` in one call (the caller holds the input whole anyway; out_forward's
 * CompressedPackedForward). 0, or -1 with err set. */
int weir_gzip(const char *in, size_t len, weir_buf_t *out, weir_err_t *err);

/* "gzip", "zlib", "zstd". */
const char *weir_inflate_format_name(weir_inflate_format_t fmt);

#endif
