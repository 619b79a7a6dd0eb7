/* Record formatting: turns canonical entries (EventTime + msgpack map, see event.h) into the
 * bytes Fluentd's formatters and <inject> would write to a file, an S3 object or stdout.
 *
 * Four layers, each usable alone:
 *   - JSON: any msgpack value to JSON text, as Ruby's JSON.generate prints it.
 *   - Time: a strftime format with Ruby's and Fluentd's extras, in UTC, the process zone, a fixed
 *     offset or a named tz database zone.
 *   - Formatters: out_file, json, ltsv, single_value, msgpack and the stdout line.
 *   - <inject>: hostname, worker id, tag and time keys written into the record.
 *
 * Everything appends to a weir_buf_t, and a formatter allocates nothing per record once its
 * buffers have grown (weir_json_append alone allocates the stack of map keys it checks for
 * repeats, once per call, when the value holds a map). Threads: a weir_timefmt_t, weir_formatter_t
 * or weir_inject_t caches the last second it formatted, so one object must not be used by two
 * threads at once; give each worker thread its own, built from the same options (building one is
 * cheap). The JSON functions keep no state and a weir_tz_t is read-only after init, so those may be
 * shared. */
#ifndef WEIR_FORMAT_H
#define WEIR_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "weir/common.h"
#include "weir/config.h"
#include "weir/event.h"
#include "weir/mp.h"

/* ---- JSON ------------------------------------------------------------------------------------
 *
 * The rules, matching Ruby JSON.generate / Oj compat / Yajl as Fluentd calls them, except where
 * marked (weir):
 *   - maps keep their key order; keys that are not str/bin become strings of their text: 1 -> "1",
 *     nil -> "", true -> "true", 1.5 -> "1.5"; a container used as a key becomes the string of
 *     its JSON text, cut at WEIR_JSON_KEY_TEXT_MAX bytes (Ruby would print its inspect form:
 *     weir). The cut keeps containers nested as keys of keys linear: each level escapes the
 *     level below, so the text would double with each level.
 *   - each key once, in every map at any depth: keys are compared as written, after the
 *     conversions here (so 1 and "1", nil and "", two invalid UTF-8 strings that both print
 *     U+FFFD are the same key), and a repeated key keeps its first place and takes its last
 *     value. Ruby's Hash does that for keys equal in Ruby; for keys that only print the same
 *     it would write the key twice, which strict JSON loaders reject (weir). Linear in the
 *     number of keys whatever they are (large maps go through a keyed hash set).
 *   - strings: UTF-8 is written raw; '"' and '\\' are escaped, control characters below 0x20 are
 *     written \b \f \n \r \t or \u00xx (lowercase hex); '/' and DEL are not escaped.
 *   - invalid UTF-8 (weir): every byte that does not begin a well-formed UTF-8 sequence
 *     (overlong forms, surrogates and code points above U+10FFFF included) is replaced by U+FFFD
 *     and scanning resumes at the next byte, so the output is always valid JSON. Fluentd would
 *     fail the record (JSON::GeneratorError) or pass the bytes through, depending on the library.
 *   - bin is written as a string of its bytes, under the same UTF-8 rule.
 *   - ext type 0 with 8 bytes (an EventTime inside a record) is its integer seconds, as
 *     Fluent::EventTime#to_json. Any other ext is a string of the base64 of its payload (weir).
 *   - integers over the full int64 and uint64 ranges.
 *   - floats as Ruby's Float#to_s: the shortest digits that read back to the same double, with
 *     a decimal point always (1.0, 0.1, 123456789.123); plain notation for 1e-4 <= |x| < 1e16,
 *     else d.ddde+XX with at least two exponent digits (1.0e+16, 1.0e-05); -0.0 stays -0.0.
 *     A float32 prints the shortest digits of the float32 itself (0.1, not Ruby's
 *     0.10000000149011612: weir). NaN and +-Infinity become null (Ruby raises: weir). */

/* Longest JSON text of a container used as a map key; the rest is cut (before escaping). */
#define WEIR_JSON_KEY_TEXT_MAX 4096

/* Deepest container nesting the JSON writer follows; deeper input is rejected. */
#define WEIR_JSON_MAX_DEPTH WEIR_MP_MAX_DEPTH

/* Appends the JSON text of the one msgpack value at `mp`. Returns the bytes of msgpack consumed,
 * or -1 when the bytes are truncated, invalid (0xc1) or nested deeper than WEIR_JSON_MAX_DEPTH;
 * on -1 `out` is left as it was. */
ssize_t weir_json_append(weir_buf_t *out, const char *mp, size_t len);
/* Appends a quoted, escaped JSON string. */
void weir_json_append_string(weir_buf_t *out, const char *s, size_t n);

/* Appends Ruby's to_s of the one msgpack value at `mp`, as ltsv, single_value and the filters
 * print a field: str/bin raw, nil as nothing, floats as Float#to_s, an EventTime as its seconds,
 * true/false and integers as their text, a container as its JSON text (Ruby prints its inspect
 * form: weir). Returns the bytes of msgpack consumed, or -1 as weir_json_append. */
ssize_t weir_value_to_s(weir_buf_t *out, const char *mp, size_t len);

/* Longest text weir_format_double writes, NUL included ("-2.2250738585072014e-308"). */
#define WEIR_DOUBLE_TEXT_MAX 32
/* Writes Ruby's Float#to_s of `d` (NaN, Infinity and -Infinity included) and returns its
 * length. With `is_f32`, `d` must hold a float32 value and gets the float32's shortest digits. */
size_t weir_format_double(char out[WEIR_DOUBLE_TEXT_MAX], double d, bool is_f32);

/* ---- Time zones ------------------------------------------------------------------------------
 *
 * Fluentd's `timezone` parameter accepts "[+-]HH:MM", "[+-]HHMM", "[+-]HH" and tz database names
 * with one or two slashes ("Asia/Tokyo", "America/Argentina/Buenos_Aires"); "UTC" or "JST" alone
 * are rejected, as in Fluentd (use `utc true` or "Etc/UTC"). Named zones are read once, at init,
 * from the compiled tz files under $TZDIR or /usr/share/zoneinfo (package tzdata): transitions
 * plus the POSIX rule at the end of the file for times past the last transition. No global state
 * (TZ, tzset) is touched, so zones are safe on any thread. The leap seconds of "right/" zone files
 * are ignored (their times come out up to 27 s off): use the ordinary zones. */

typedef enum weir_tz_kind {
    WEIR_TZ_UTC,   /* `utc true` / `localtime false`: %Z "UTC", ISO-8601 ends in "Z" */
    WEIR_TZ_LOCAL, /* the process zone, through localtime_r (TZ or /etc/localtime) */
    WEIR_TZ_FIXED, /* `timezone +09:00`: %Z prints "" (a fixed-offset Ruby Time has no name) */
    WEIR_TZ_NAMED, /* `timezone Asia/Tokyo`: offsets from tzdata; %Z prints "" as in Fluentd */
} weir_tz_kind_t;

/* Caps on what a zone file may declare, far above any real zone (New York has 236). */
#define WEIR_TZ_MAX_TRANSITIONS 4096
#define WEIR_TZ_MAX_TYPES 256
#define WEIR_TZ_MAX_FILE_SIZE (256 * 1024)
/* Largest offset accepted from any source: Ruby rejects |offset| >= 24 h. */
#define WEIR_TZ_MAX_OFFSET (24 * 3600 - 1)
/* Room for a zone abbreviation as %Z prints it. */
#define WEIR_TZ_ABBR_MAX 16

struct weir_tzdata; /* a parsed zone file (private) */

typedef struct weir_tz {
    weir_tz_kind_t kind;
    int32_t fixed;            /* WEIR_TZ_FIXED: seconds east of UTC */
    struct weir_tzdata *data; /* WEIR_TZ_NAMED, owned, read-only after init */
} weir_tz_t;

/* Fluentd's precedence: `timezone` when not NULL, else the process zone when `localtime`, else
 * UTC. Fails, with a message naming the value, on a malformed offset or an unknown zone. */
int weir_tz_init(weir_tz_t *tz, const char *zone, bool localtime, weir_err_t *err);
void weir_tz_free(weir_tz_t *tz);
/* Seconds east of UTC at the instant `t` (seconds since the epoch). When `abbr` is not NULL it
 * receives what %Z prints (see the kinds above). The zone is not modified, so one zone may serve
 * several threads at once. A named zone costs a binary search over its transitions (about 240
 * for a zone with daylight saving) or, past the last one, the POSIX rule's date arithmetic;
 * weir_timefmt_t calls it once per distinct second. */
int32_t weir_tz_offset(const weir_tz_t *tz, int64_t t, char abbr[WEIR_TZ_ABBR_MAX]);

/* ---- Time formatting -------------------------------------------------------------------------
 *
 * Ruby Time#strftime directives: %Y %C %y %m %B %b %h %d %e %j %H %k %I %l %P %p %M %S %L %N %z
 * %:z %::z %Z %A %a %u %w %U %W %G %g %V %s %n %t %% and the composites %c %D %x %F %T %X %R %r
 * %v %+ (English names, as Ruby). Flags - (no padding), _ (spaces), 0 (zeros), ^ (upper case),
 * # (swap case) and a width, e.g. %-d, %_3m, %10A. %N prints nanoseconds as 9 digits and %L
 * milliseconds as 3; a width gives the number of digits (%3N milliseconds, %6N microseconds,
 * wider pads with zeros), truncating, never rounding. An unknown directive is printed as written
 * (Ruby does the same). Flags and widths on composites are ignored.
 *
 * A NULL format means Time#iso8601 with seconds only: %Y-%m-%dT%H:%M:%S then "Z" in UTC or
 * %:z otherwise ("+00:00" for localtime in a UTC container, as Fluentd's out_file writes).
 *
 * Speed: everything that depends on whole seconds is rendered once per distinct second and
 * kept; only %N/%L are rendered for each event. */

/* Widest width a directive may ask for (a typo like %1000000Y should not print a megabyte). */
#define WEIR_TIMEFMT_MAX_WIDTH 64

struct weir_timefmt_op; /* a compiled directive (private) */

typedef struct weir_timefmt {
    weir_tz_t tz;
    struct weir_timefmt_op *ops;
    size_t nops;
    char *lits; /* literal text the ops point into */
    bool has_subsec;
    /* Cache: `cache` holds the rendering of second `cache_sec`, subsecond ops left out. */
    int64_t cache_sec;
    weir_buf_t cache;
} weir_timefmt_t;

/* `timezone` and `localtime` as for weir_tz_init. */
int weir_timefmt_init(weir_timefmt_t *tf, const char *format, bool localtime, const char *zone,
                      weir_err_t *err);
void weir_timefmt_free(weir_timefmt_t *tf);
void weir_timefmt_append(weir_timefmt_t *tf, weir_time_t t, weir_buf_t *out);

/* ---- Formatters ------------------------------------------------------------------------------ */

typedef enum weir_format_type {
    /* <time><delim><tag><delim><JSON><newline>; the default of out_file and out_s3. */
    WEIR_FORMAT_OUT_FILE,
    /* <JSON><newline if add_newline>. */
    WEIR_FORMAT_JSON,
    /* label<label_delimiter>value joined by <delimiter>, then the newline if add_newline. A
     * value is written as Ruby's to_s: str/bin raw, nil as nothing, other values as their JSON
     * text (Ruby would print a nested map in inspect form: weir). Every occurrence of the
     * delimiter inside a value is replaced by `replacement` (default " "). Each label once, as
     * in JSON: compared as written, the first place, the last value. */
    WEIR_FORMAT_LTSV,
    /* The value of `message_key` as to_s (as ltsv; a missing key prints nothing), then the
     * newline if add_newline. */
    WEIR_FORMAT_SINGLE_VALUE,
    /* The record's msgpack bytes as stored (after <inject>): no re-encoding, so an integer
     * keeps the width its sender chose where Ruby would pick the smallest. */
    WEIR_FORMAT_MSGPACK,
    /* out_stdout's line: "<time %Y-%m-%d %H:%M:%S.%N %z, process zone> <tag>: <output_type
     * line without its newline>\n". */
    WEIR_FORMAT_STDOUT,
} weir_format_type_t;

/* How a time is written: by out_file (string, float, unixtime) and <inject> (all). */
typedef enum weir_time_type {
    WEIR_TIME_STRING,   /* time_format, localtime/utc, timezone */
    WEIR_TIME_FLOAT,    /* inject: float64 seconds truncated to microseconds (EventTime#to_r
                           .truncate(6).to_f); out_file: "sec.nnnnnnnnn" text */
    WEIR_TIME_UNIXTIME, /* integer seconds */
    WEIR_TIME_UNIXTIME_MILLIS,
    WEIR_TIME_UNIXTIME_MICROS,
    WEIR_TIME_UNIXTIME_NANOS,
} weir_time_type_t;

/* Everything a formatter is built from. The strings are borrowed (from the configuration tree,
 * usually) and copied by weir_formatter_init. weir_format_opts_init sets Fluentd's defaults. */
typedef struct weir_format_opts {
    weir_format_type_t type;
    weir_format_type_t output_type; /* stdout: the line after the header; default json */
    bool output_time, output_tag;   /* out_file; default true, true */
    const char *delimiter;          /* out_file "\t" (see from_conf), ltsv "\t" */
    const char *label_delimiter;    /* ltsv ":" */
    const char *replacement;        /* ltsv " " */
    const char *message_key;        /* single_value "message" */
    bool add_newline;               /* json, ltsv, single_value; default true */
    const char *newline;            /* "\n" (lf) or "\r\n" (crlf) */
    weir_time_type_t time_type;     /* out_file: STRING, FLOAT or UNIXTIME */
    const char *time_format;        /* NULL: ISO-8601 */
    bool localtime;                 /* default true */
    const char *timezone;           /* NULL or as weir_tz_init */
} weir_format_opts_t;

void weir_format_opts_init(weir_format_opts_t *o, weir_format_type_t type);
/* Reads a <format> section (NULL: defaults only) into `o`, validating every value; @type falls
 * back to `default_type` (out_file for out_s3 and out_file, stdout for out_stdout). The params
 * are Fluentd's: @type, output_time, output_tag, delimiter (out_file: a value containing SPACE
 * or COMMA, any case, selects ' ' or ','; anything else means TAB, exactly as Fluentd),
 * label_delimiter, replacement, message_key, add_newline, newline (lf|crlf), output_type,
 * json_parser (accepted, ignored: it picks a Ruby library), time_type, time_as_epoch,
 * time_format, localtime, utc (both localtime and utc is an error, as in Fluentd), timezone.
 * The time params are accepted by every type, as Fluentd does, and used by out_file. Fails
 * for csv, tsv, hash and unknown types with a message naming the supported ones. */
int weir_format_opts_from_conf(weir_format_opts_t *o, weir_conf_section_t *s,
                               weir_format_type_t default_type, weir_err_t *err);
/* Makes every string of `o` a private copy, so the options outlive the configuration tree
 * (outputs rebuild a formatter for each job on a worker thread). Undo with _release. */
void weir_format_opts_own(weir_format_opts_t *o);
void weir_format_opts_release(weir_format_opts_t *o);
/* "out_file", "json", ... -> type; -1 when unknown. */
int weir_format_type_parse(const char *name);
const char *weir_format_type_name(weir_format_type_t type);

typedef struct weir_formatter {
    weir_format_type_t type;
    struct weir_formatter *sub; /* stdout: formats what follows the header; owned */
    bool output_time, output_tag, add_newline;
    weir_time_type_t time_type;
    char *delimiter, *label_delimiter, *replacement, *message_key, *newline;
    size_t delimiter_len, label_delimiter_len, replacement_len, message_key_len, newline_len;
    bool has_time;
    weir_timefmt_t time;        /* out_file time, or the stdout header time */
    weir_buf_t scratch;         /* ltsv/single_value value text, stdout sub-line */
    struct weir_fmt_keys *keys; /* the pairs of the maps being written (private, owned) */
} weir_formatter_t;

int weir_formatter_init(weir_formatter_t *f, const weir_format_opts_t *o, weir_err_t *err);
void weir_formatter_free(weir_formatter_t *f);
/* Appends the formatted line of one event. Returns 0, or -1 when `record` is not a valid msgpack
 * map within WEIR_JSON_MAX_DEPTH (then `out` is left as it was). */
int weir_formatter_format(weir_formatter_t *f, const char *tag, size_t tag_len, weir_time_t t,
                          const char *record, size_t record_len, weir_buf_t *out);

/* ---- <inject> -------------------------------------------------------------------------------- */

typedef struct weir_inject_opts {
    const char *hostname_key;  /* NULL: not injected */
    const char *hostname;      /* NULL: gethostname() at init */
    const char *worker_id_key; /* value: worker_id, an integer */
    int worker_id;             /* weir runs one worker: 0 */
    const char *tag_key;
    const char *time_key;
    weir_time_type_t time_type; /* default WEIR_TIME_FLOAT */
    const char *time_format;    /* WEIR_TIME_STRING; NULL: ISO-8601 */
    bool localtime;             /* default true */
    bool utc;                   /* overrides localtime */
    const char *timezone;       /* overrides both */
} weir_inject_opts_t;

void weir_inject_opts_init(weir_inject_opts_t *o);
/* Reads an <inject> section: hostname_key, hostname, worker_id_key, tag_key, time_key,
 * time_type (float|unixtime|unixtime_millis|unixtime_micros|unixtime_nanos|string), time_format,
 * localtime, utc, timezone. */
int weir_inject_opts_from_conf(weir_inject_opts_t *o, weir_conf_section_t *s, weir_err_t *err);
/* As weir_format_opts_own / _release. */
void weir_inject_opts_own(weir_inject_opts_t *o);
void weir_inject_opts_release(weir_inject_opts_t *o);

/* One key to inject and which value it takes (private to inject.c). */
typedef struct weir_inject_key {
    const char *key; /* points at one of the weir_inject_t strings */
    size_t key_len;
    int kind;
} weir_inject_key_t;

typedef struct weir_inject {
    char *hostname_key, *hostname, *worker_id_key, *tag_key, *time_key;
    int worker_id;
    weir_time_type_t time_type;
    weir_inject_key_t keys[4]; /* distinct keys in injection order */
    int nkeys;
    bool has_timefmt;
    weir_timefmt_t time;
    weir_buf_t text; /* the formatted time string */
} weir_inject_t;

int weir_inject_init(weir_inject_t *inj, const weir_inject_opts_t *o, weir_err_t *err);
void weir_inject_free(weir_inject_t *inj);
/* True when the options name at least one key (Fluentd's @_inject_enabled). */
bool weir_inject_enabled(const weir_inject_t *inj);
/* Appends to `out` the record with the injected keys, in Fluentd's order hostname, worker_id,
 * tag, time. A key the record already has keeps its place and gets the new value (Ruby's
 * Hash#[]= on a copy); later duplicates of that key are dropped; new keys go at the end.
 * Values: hostname and tag as str, worker_id as an integer, time as time_type says (float64,
 * integers, or str). Returns 0, or -1 when `record` is not a valid map (out left as it was). */
int weir_inject_record(weir_inject_t *inj, const char *tag, size_t tag_len, weir_time_t t,
                       const char *record, size_t record_len, weir_buf_t *out);
/* As weir_inject_record for a record at the start of `avail` bytes that may continue past it:
 * returns the record's length, or -1. */
ssize_t weir_inject_walk(weir_inject_t *inj, const char *tag, size_t tag_len, weir_time_t t,
                         const char *record, size_t avail, weir_buf_t *out);

/* ---- Batches --------------------------------------------------------------------------------- */

/* Formats every entry of `b` (applying `inj` first when it is not NULL and enabled) onto `out`,
 * using `scratch` for injected records. A record that cannot be formatted is skipped and counted
 * in *skipped, and `err` (when not NULL) describes the first one. Returns the number of lines
 * written, or -1 when the batch's bytes are not canonical entries (out keeps the lines written
 * before). */
long weir_format_batch(weir_formatter_t *f, weir_inject_t *inj, const weir_batch_t *b,
                       weir_buf_t *out, weir_buf_t *scratch, size_t *skipped, weir_err_t *err);

#endif
