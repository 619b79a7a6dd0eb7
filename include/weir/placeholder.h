/* Buffer placeholders in output paths and object keys, as Fluentd's extract_placeholders:
 *
 *   1. strftime over the whole string with the chunk's time bucket, in the buffer's timekey
 *      zone (only when time is a chunk key; unknown directives such as %{path} stay as written)
 *   2. ${tag}, ${tag[N]}, ${tag[-N]} (only when tag is a chunk key)
 *   3. the first ${chunk_id}
 *   4. ${KEY} for record chunk keys
 *
 * A value taken from an event (tag parts, record-key values) never becomes a path: '/', '\\',
 * control characters and any '.' next to another '.' are replaced by '_', and an empty value
 * becomes "_", so "../../etc" turns into "______etc" and cannot leave the output directory or
 * an S3 prefix. */
#ifndef WEIR_PLACEHOLDER_H
#define WEIR_PLACEHOLDER_H

#include "weir/buffer.h"
#include "weir/common.h"

/* Expands `tmpl` for chunk `c` of buffer `b` into `out` (appended). Returns 0, or -1 with err
 * set when the template is malformed (an unterminated ${). Unknown ${...} stay as written, as
 * Fluentd does, with a warning at configure time (weir_placeholders_check). */
int weir_placeholders_expand(const char *tmpl, const weir_buffer_t *b, const weir_chunk_t *c,
                             weir_buf_t *out, weir_err_t *err);

/* Configure-time check: warns about ${tag} without a tag chunk key, time directives without a
 * time key, and ${x} that is not a chunk key (Fluentd leaves those literal). */
void weir_placeholders_check(const char *what, const char *tmpl, const weir_buffer_t *b);

/* Makes an event-supplied value safe inside a path or key (see above). */
void weir_placeholder_sanitize(const char *v, size_t n, weir_buf_t *out);

#endif
