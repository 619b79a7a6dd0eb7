/* Reading event times from records, as Fluentd's TimeParser and NumericTimeParser do: the
 * time_type / time_format / timezone rules, the subset of strptime that the strptime gem
 * understands, and Ruby's number conversions that feed them. Lives with the formatter's time
 * code (src/format/), whose zones (weir_tz_t) it uses; the HTTP input is its user today.
 *
 * The reference is docs/http-input.md section 2.5. */
#ifndef WEIR_STRPTIME_H
#define WEIR_STRPTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/common.h"
#include "weir/event.h"
#include "weir/format.h"
#include "weir/mp.h"

typedef struct weir_timeparser_conf {
    weir_time_type_t type; /* WEIR_TIME_FLOAT, WEIR_TIME_UNIXTIME or WEIR_TIME_STRING */
    const char *format;    /* strptime subset, "%iso8601", or NULL (string type: ISO 8601) */
    const char *timezone;  /* "+09:00", "-0530", "+09", or a zone name ("Asia/Tokyo"); NULL */
    bool localtime;        /* wall times without a zone are local (default true) */
    bool utc;              /* wall times without a zone are UTC */
} weir_timeparser_conf_t;

typedef struct weir_timeparser weir_timeparser_t;

/* Validates the configuration as Fluentd does ("specifying timezone requires time format",
 * unsupported directives, unknown zones) and compiles the format. */
weir_timeparser_t *weir_timeparser_new(const weir_timeparser_conf_t *c, weir_err_t *err);
void weir_timeparser_free(weir_timeparser_t *tp);
/* Reads a record's time value. Returns -1 with a message when Fluentd would raise
 * TimeParseError (the request then gets 400). `now` fills the date of formats without one. */
int weir_timeparser_parse(const weir_timeparser_t *tp, const weir_mp_obj_t *v, weir_time_t now,
                          weir_time_t *out, weir_err_t *err);
/* The string path of the same parser (time_type string). */
int weir_timeparser_parse_str(const weir_timeparser_t *tp, const char *s, size_t len,
                              weir_time_t now, weir_time_t *out);

/* A float time at or past this magnitude (2^63 seconds) is refused with 400 rather than
 * converted: it fits no integer second count. */
#define WEIR_TIMEPARSER_FLOAT_MAX 9223372036854775808.0

/* Fluentd's float-time rule (NumericTimeParser :float) on the text of a number: seconds
 * before the first '.', nanoseconds from the next 9 characters, each read as Ruby's to_i. */
weir_time_t weir_time_from_float_text(const char *s, size_t len);
/* Ruby's Float#to_s (shortest round trip; "1.0e+20" past 1e16). Returns the length. */
size_t weir_ruby_float_to_s(double d, char out[32]);
/* Ruby's String#to_f (a leading decimal number, else 0.0). */
double weir_ruby_to_f(const char *s, size_t len);

#endif
