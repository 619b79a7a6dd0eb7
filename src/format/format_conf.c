/* Reading <format> and <inject> sections into formatter and inject options.
 *
 * Each formatter type reads only the parameters Fluentd's plugin of that type declares (plus the
 * time parameters every Fluentd formatter accepts), so a parameter that belongs to another type
 * stays unused and weir_conf_check_unused() reports it. Every value is validated here, where its
 * file and line are known, rather than later in weir_formatter_init. */
#include "weir/format.h"

#include <stdlib.h>
#include <strings.h>
#include <string.h>

static const char *const newline_choices[] = {"lf", "crlf", NULL};

/* Fluentd's out_file delimiter: /SPACE/i -> ' ', /COMMA/i -> ',', anything else TAB. */
static const char *out_file_delimiter(const char *v)
{
    if (strcasestr(v, "SPACE")) return " ";
    if (strcasestr(v, "COMMA")) return ",";
    return "\t";
}

/* A timezone value must name a zone weir can load: checked now, with the param's location. */
static int check_timezone(weir_conf_section_t *s, const char *tz, weir_err_t *err)
{
    weir_tz_t z;
    weir_err_t why;
    if (weir_tz_init(&z, tz, false, &why) == 0) {
        weir_tz_free(&z);
        return 0;
    }
    return weir_conf_errorf(err, weir_conf_find(s, "timezone"), "timezone: %s", why.msg);
}

/* time_format, localtime, utc, timezone (Fluentd's TimeMixin). */
static int read_time_params(weir_conf_section_t *s, const char **format, bool *localtime,
                            const char **timezone, bool strict_pair, weir_err_t *err)
{
    if (strict_pair && weir_conf_find(s, "localtime") && weir_conf_find(s, "utc"))
        return weir_conf_errorf(err, weir_conf_find(s, "utc"),
                                "both of utc and localtime are specified, use only one of them");
    if (weir_conf_get_str(s, "time_format", format, err) < 0) return -1;
    if (weir_conf_get_bool(s, "localtime", localtime, err) < 0) return -1;
    bool utc = false;
    int r = weir_conf_get_bool(s, "utc", &utc, err);
    if (r < 0) return -1;
    if (r == 1 && strict_pair) *localtime = !utc;
    if (r == 1 && !strict_pair && utc) *localtime = false;
    if (weir_conf_get_str(s, "timezone", timezone, err) < 0) return -1;
    if (*timezone && check_timezone(s, *timezone, err) < 0) return -1;
    return 0;
}

static int read_format_type(weir_conf_section_t *s, const char *key, weir_format_type_t *out,
                            weir_err_t *err)
{
    const char *v = NULL;
    if (weir_conf_get_str(s, key, &v, err) <= 0) return 0;
    int t = weir_format_type_parse(v);
    if (t < 0)
        return weir_conf_errorf(err, weir_conf_find(s, key),
                                "%s: format '%s' is not supported; weir has out_file, json, ltsv, "
                                "single_value, msgpack and stdout",
                                key, v);
    *out = (weir_format_type_t)t;
    return 0;
}

/* newline (lf|crlf), and add_newline where the type has it (out_file always ends its line). */
static int read_newline(weir_format_opts_t *o, weir_conf_section_t *s, bool add_newline,
                        weir_err_t *err)
{
    int nl = 0;
    if (add_newline && weir_conf_get_bool(s, "add_newline", &o->add_newline, err) < 0) return -1;
    int r = weir_conf_get_enum(s, "newline", newline_choices, &nl, err);
    if (r < 0) return -1;
    if (r == 1) o->newline = nl == 1 ? "\r\n" : "\n";
    return 0;
}

/* The parameters of one formatter type. */
static int read_type_params(weir_format_opts_t *o, weir_conf_section_t *s, weir_format_type_t t,
                            weir_err_t *err)
{
    const char *v = NULL;
    switch (t) {
    case WEIR_FORMAT_OUT_FILE: {
        bool epoch = false;
        if (weir_conf_get_bool(s, "output_time", &o->output_time, err) < 0) return -1;
        if (weir_conf_get_bool(s, "output_tag", &o->output_tag, err) < 0) return -1;
        if (weir_conf_get_str(s, "delimiter", &v, err) < 0) return -1;
        if (v) o->delimiter = out_file_delimiter(v);
        if (weir_conf_get_bool(s, "time_as_epoch", &epoch, err) < 0) return -1;
        if (epoch) o->time_type = WEIR_TIME_UNIXTIME;
        return read_newline(o, s, false, err);
    }
    case WEIR_FORMAT_JSON:
        if (weir_conf_get_str(s, "json_parser", &v, err) < 0) return -1; /* a Ruby library */
        return read_newline(o, s, true, err);
    case WEIR_FORMAT_LTSV:
        if (weir_conf_get_str(s, "delimiter", &o->delimiter, err) < 0) return -1;
        if (weir_conf_get_str(s, "label_delimiter", &o->label_delimiter, err) < 0) return -1;
        if (weir_conf_get_str(s, "replacement", &o->replacement, err) < 0) return -1;
        return read_newline(o, s, true, err);
    case WEIR_FORMAT_SINGLE_VALUE:
        if (weir_conf_get_str(s, "message_key", &o->message_key, err) < 0) return -1;
        return read_newline(o, s, true, err);
    case WEIR_FORMAT_MSGPACK:
        return 0;
    case WEIR_FORMAT_STDOUT:
        if (read_format_type(s, "output_type", &o->output_type, err) < 0) return -1;
        if (o->output_type == WEIR_FORMAT_STDOUT || o->output_type == WEIR_FORMAT_MSGPACK)
            return weir_conf_errorf(err, weir_conf_find(s, "output_type"),
                                    "output_type: %s cannot follow the stdout header; use json, "
                                    "ltsv, single_value or out_file",
                                    weir_format_type_name(o->output_type));
        return read_type_params(o, s, o->output_type, err);
    }
    return 0;
}

int weir_format_opts_from_conf(weir_format_opts_t *o, weir_conf_section_t *s,
                               weir_format_type_t default_type, weir_err_t *err)
{
    weir_format_opts_init(o, default_type);
    if (!s) return 0;
    weir_conf_section_use(s);
    if (read_format_type(s, "@type", &o->type, err) < 0) return -1;
    static const char *const time_types[] = {"string", "unixtime", "float", NULL};
    int tt = 0;
    int r = weir_conf_get_enum(s, "time_type", time_types, &tt, err);
    if (r < 0) return -1;
    if (r == 1)
        o->time_type = tt == 0 ? WEIR_TIME_STRING : tt == 1 ? WEIR_TIME_UNIXTIME : WEIR_TIME_FLOAT;
    if (read_time_params(s, &o->time_format, &o->localtime, &o->timezone, true, err) < 0) return -1;
    return read_type_params(o, s, o->type, err);
}

int weir_inject_opts_from_conf(weir_inject_opts_t *o, weir_conf_section_t *s, weir_err_t *err)
{
    weir_inject_opts_init(o);
    if (!s) return 0;
    weir_conf_section_use(s);
    static const char *const keys[] = {"hostname_key", "hostname", "worker_id_key", "tag_key",
                                       "time_key"};
    const char **dst[] = {&o->hostname_key, &o->hostname, &o->worker_id_key, &o->tag_key,
                          &o->time_key};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (weir_conf_get_str(s, keys[i], dst[i], err) < 0) return -1;
    static const char *const time_types[] = {
        "float",  "unixtime", "unixtime_millis", "unixtime_micros", "unixtime_nanos",
        "string", NULL};
    static const weir_time_type_t map[] = {WEIR_TIME_FLOAT,           WEIR_TIME_UNIXTIME,
                                           WEIR_TIME_UNIXTIME_MILLIS, WEIR_TIME_UNIXTIME_MICROS,
                                           WEIR_TIME_UNIXTIME_NANOS,  WEIR_TIME_STRING};
    int tt = 0;
    int r = weir_conf_get_enum(s, "time_type", time_types, &tt, err);
    if (r < 0) return -1;
    if (r == 1) o->time_type = map[tt];
    /* in <inject> both may be given and utc wins (localtime && !utc), as inject.rb computes */
    return read_time_params(s, &o->time_format, &o->localtime, &o->timezone, false, err);
}

/* ---- owning the strings ---- */

static void own(const char **s)
{
    if (*s) *s = weir_strdup(*s);
}

static void release(const char **s)
{
    free((char *)*s);
    *s = NULL;
}

#define FORMAT_OPTS_STRINGS(F)                                                                     \
    F(delimiter)                                                                                   \
    F(label_delimiter) F(replacement) F(message_key) F(newline) F(time_format) F(timezone)
#define INJECT_OPTS_STRINGS(F)                                                                     \
    F(hostname_key) F(hostname) F(worker_id_key) F(tag_key) F(time_key) F(time_format) F(timezone)
#define OWN(f) own(&o->f);
#define RELEASE(f) release(&o->f);

void weir_format_opts_own(weir_format_opts_t *o)
{
    FORMAT_OPTS_STRINGS(OWN)
}

void weir_format_opts_release(weir_format_opts_t *o)
{
    FORMAT_OPTS_STRINGS(RELEASE)
}

void weir_inject_opts_own(weir_inject_opts_t *o)
{
    INJECT_OPTS_STRINGS(OWN)
}

void weir_inject_opts_release(weir_inject_opts_t *o)
{
    INJECT_OPTS_STRINGS(RELEASE)
}
