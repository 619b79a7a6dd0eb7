/* Fluentd's <match> tag patterns.
 *
 *   a.*      one tag part after "a." ('*' never crosses a '.')
 *   a.**     "a" itself and anything below it
 *   **       every tag
 *   {a,b}.c  alternation (may nest and hold globs)
 *   /re/     an extended regular expression over the whole tag
 *
 * One <match> argument may hold several patterns separated by spaces; the tag matches when any
 * of them does. */
#ifndef WEIR_PATTERN_H
#define WEIR_PATTERN_H

#include <stdbool.h>

#include "weir/common.h"

#define WEIR_PATTERN_MAX_LEN 4096         /* one <match> argument */
#define WEIR_PATTERN_MAX_ALTERNATIVES 256 /* after {a,b} expansion */

typedef struct weir_pattern weir_pattern_t;

weir_pattern_t *weir_pattern_compile(const char *text, weir_err_t *err);
bool weir_pattern_match(const weir_pattern_t *p, const char *tag);
void weir_pattern_free(weir_pattern_t *p);

#endif
