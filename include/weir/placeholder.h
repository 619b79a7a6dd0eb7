/* Buffer placeholders in output paths and object keys, as Fluentd's extract_placeholders:
 *
 *   1. strftime over the whole string with the chunk's time bucket, in the buffer's timekey
 *      zone (only when time is a chunk key; unknown directives such as %{path} stay as written)
 *   2. ${tag}, ${tag[N]}, ${tag[-N]} (only when tag is a chunk key)
 *   3. the first ${chunk_id}
 *   4. ${KEY} for record chunk keys
 *   5. with weir_placeholders_expand_vars, the S3 output's %{name} placeholders (%{index},
 *      %{time_slice}, ...), in the same scan as 2-4
 *
 * Steps 2-5 are one left-to-right scan that never rescans what it inserted: a tag such as
 * "a.%{x}." or "${tag}" stays as written, it cannot expand as a placeholder (Fluentd's gsub
 * after extract_placeholders would expand it; weir does not, on purpose).
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

/* %{name} placeholders and their values (names without the braces). */
typedef struct weir_percent_vars {
    const char *const *names;
    const char *const *values;
    size_t n;
} weir_percent_vars_t;

/* weir_placeholders_expand, plus step 5: each %{name} (at least one character, up to the first
 * '}') becomes its value in `vars`, or "" when it is not there; "%{}" stays. */
int weir_placeholders_expand_vars(const char *tmpl, const weir_buffer_t *b, const weir_chunk_t *c,
                                  const weir_percent_vars_t *vars, weir_buf_t *out,
                                  weir_err_t *err);

/* Only %{name} replacement over `s`, for templates without a chunk (the S3 output's %{path}
 * at configure time): known names become their values; unknown ones become "", or stay as
 * written when `keep_unknown`. */
void weir_placeholders_percent(const char *s, const weir_percent_vars_t *vars, bool keep_unknown,
                               weir_buf_t *out);

/* Configure-time check: warns about ${tag} without a tag chunk key, time directives without a
 * time key, and ${x} that is not a chunk key (Fluentd leaves those literal). */
void weir_placeholders_check(const char *what, const char *tmpl, const weir_buffer_t *b);

/* Makes an event-supplied value safe inside a path or key (see above). */
void weir_placeholder_sanitize(const char *v, size_t n, weir_buf_t *out);

#endif
