/* Event times read from records (include/weir/strptime.h): the time_type/time_format/timezone
 * rules of Fluentd's TimeParser and NumericTimeParser, and the subset of strptime that the
 * strptime gem (which Fluentd uses for time_format) understands. The HTTP input uses it.
 *
 * Invariants: parsing never reads past the value's length (values are not NUL-terminated),
 * and, like the strptime gem, it never looks at input left over after the last directive:
 * "2024-05-09T21:06:21.024Z" with "%Y-%m-%dT%H:%M:%S" is 21:06:21 and the rest is ignored.
 *
 * Wall times without an offset are read in the zone the configuration names, through the
 * formatter's zones (weir_tz_t: a fixed offset, a tz database zone read once at start-up, the
 * process's local zone, or UTC); local wall times go through mktime. Fluentd converts with the
 * offset in force when it started; weir uses the offset in force at the parsed instant, which
 * differs only across a DST change. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "format_internal.h"
#include "weir/strptime.h"

#define NUM_TEXT_MAX 64 /* digits of a number read by Ruby's to_f that we keep */

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* ---- Ruby's number conversions ----------------------------------------------------------- */

/* String#to_i: leading whitespace, a sign, digits with single '_' between them. Saturates
 * where Ruby would make a Bignum. */
static int64_t ruby_to_i(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && is_ws(s[i]))
        i++;
    bool neg = false;
    if (i < len && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    uint64_t v = 0, cap = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    bool any = false;
    while (i < len) {
        if (is_digit(s[i])) {
            uint64_t d = (uint64_t)(s[i] - '0');
            v = v > (cap - d) / 10 ? cap : v * 10 + d;
            any = true;
            i++;
        } else if (s[i] == '_' && any && i + 1 < len && is_digit(s[i + 1])) {
            i++;
        } else {
            break;
        }
    }
    if (!neg) return (int64_t)v;
    return v > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)v;
}

/* Appends digits (with single '_' between digits, which Ruby skips) from s[i..]; returns the
 * index after them. */
static size_t copy_digits(const char *s, size_t len, size_t i, char *buf, size_t *n, size_t *count)
{
    while (i < len) {
        if (is_digit(s[i])) {
            buf[(*n)++] = s[i++];
            (*count)++;
        } else if (s[i] == '_' && *count > 0 && i > 0 && is_digit(s[i - 1]) && i + 1 < len &&
                   is_digit(s[i + 1])) {
            i++;
        } else {
            break;
        }
    }
    return i;
}

double weir_ruby_to_f(const char *s, size_t len)
{
    char local[NUM_TEXT_MAX + 8];
    char *buf = len + 8 <= sizeof local ? local : weir_malloc(len + 8);
    size_t n = 0, i = 0, digits = 0, edigits = 0;
    while (i < len && is_ws(s[i]))
        i++;
    if (i < len && (s[i] == '+' || s[i] == '-')) buf[n++] = s[i++];
    i = copy_digits(s, len, i, buf, &n, &digits);
    if (i + 1 < len && s[i] == '.' && is_digit(s[i + 1])) {
        buf[n++] = '.';
        i = copy_digits(s, len, i + 1, buf, &n, &digits);
    }
    double d = 0.0;
    if (digits > 0) {
        if (i < len && (s[i] == 'e' || s[i] == 'E')) {
            size_t j = i + 1, mark = n;
            buf[n++] = 'e';
            if (j < len && (s[j] == '+' || s[j] == '-')) buf[n++] = s[j++];
            copy_digits(s, len, j, buf, &n, &edigits);
            if (edigits == 0) n = mark;
        }
        buf[n] = '\0';
        d = strtod(buf, NULL);
    }
    if (buf != local) free(buf);
    return d;
}

size_t weir_ruby_float_to_s(double d, char out[32])
{
    if (isnan(d)) return (size_t)snprintf(out, 32, "NaN");
    if (isinf(d)) return (size_t)snprintf(out, 32, d < 0 ? "-Infinity" : "Infinity");
    if (d == 0) return (size_t)snprintf(out, 32, signbit(d) ? "-0.0" : "0.0");
    char e[40];
    int prec;
    /* the shortest digit string that reads back as the same double */
    for (prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, d);
        if (strtod(e, NULL) == d) break;
    }
    char digits[24];
    size_t nd = 0;
    const char *p = e;
    bool neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (is_digit(*p)) digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    int decpt = exp10 + 1;
    size_t o = 0;
    if (neg) out[o++] = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int z = 0; z < -decpt; z++)
                out[o++] = '0';
            memcpy(out + o, digits, nd);
            o += nd;
        } else if ((size_t)decpt >= nd) {
            memcpy(out + o, digits, nd);
            o += nd;
            for (size_t z = nd; z < (size_t)decpt; z++)
                out[o++] = '0';
            out[o++] = '.';
            out[o++] = '0';
        } else {
            memcpy(out + o, digits, (size_t)decpt);
            o += (size_t)decpt;
            out[o++] = '.';
            memcpy(out + o, digits + decpt, nd - (size_t)decpt);
            o += nd - (size_t)decpt;
        }
        out[o] = '\0';
        return o;
    }
    out[o++] = digits[0];
    out[o++] = '.';
    if (nd > 1) {
        memcpy(out + o, digits + 1, nd - 1);
        o += nd - 1;
    } else {
        out[o++] = '0';
    }
    o += (size_t)snprintf(out + o, 32 - o, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
    return o;
}

weir_time_t weir_time_from_float_text(const char *s, size_t len)
{
    const char *dot = memchr(s, '.', len);
    weir_time_t t = {(uint32_t)ruby_to_i(s, dot ? (size_t)(dot - s) : len), 0};
    if (!dot) return t;
    const char *f = dot + 1;
    size_t flen = len - (size_t)(f - s);
    const char *dot2 = memchr(f, '.', flen);
    if (dot2) flen = (size_t)(dot2 - f);
    /* Fluentd keeps 10 characters here, so a 10th digit gives nanoseconds >= 1e9; weir keeps
     * 9. The padding goes after whatever was there, so "1.5x" is 5 ns, as in Fluentd. */
    char nbuf[9];
    size_t n = flen < 9 ? flen : 9;
    memcpy(nbuf, f, n);
    memset(nbuf + n, '0', 9 - n);
    int64_t ns = ruby_to_i(nbuf, 9);
    t.nsec = ns < 0 ? 0 : (uint32_t)(ns > 999999999 ? 999999999 : ns);
    return t;
}

/* ---- zones: the formatter's weir_tz_t ------------------------------------------------------ */

/* Fluent::Timezone.validate's forms ("+09:00", "+0900", "+09", a tz database name), read by
 * weir_tz_init; a parser's `timezone` also takes "UTC" and "GMT". */
static int tz_from_spec(weir_tz_t *z, const char *spec, weir_err_t *err)
{
    if (strcmp(spec, "UTC") == 0 || strcmp(spec, "GMT") == 0)
        return weir_tz_init(z, NULL, false, err);
    return weir_tz_init(z, spec, false, err);
}

/* Seconds since the epoch of a wall time (given as seconds as if it were UTC) in zone z. In
 * a DST gap or overlap it picks one of the candidates, as mktime does. */
static int64_t tz_wall_to_utc(const weir_tz_t *z, int64_t wall)
{
    if (z->kind == WEIR_TZ_LOCAL) {
        time_t tt = (time_t)wall;
        struct tm tm;
        if (!gmtime_r(&tt, &tm)) return wall;
        tm.tm_isdst = -1;
        time_t r = mktime(&tm);
        return r == (time_t)-1 ? wall - weir_tz_offset(z, wall, NULL) : (int64_t)r;
    }
    int64_t t0 = wall - weir_tz_offset(z, wall, NULL);
    return wall - weir_tz_offset(z, t0, NULL);
}

/* ---- the strptime subset ----------------------------------------------------------------- */

typedef enum tf_op {
    TF_LIT,     /* a run of literal bytes of the format */
    TF_CHAR,    /* one literal byte (from %T, %F, %%) */
    TF_WS,      /* zero or more whitespace */
    TF_YEAR,    /* %Y: optional sign, 1-4 digits */
    TF_YEAR2,   /* %y: 1-2 digits, 69-99 → 19xx, else 20xx */
    TF_MON,     /* %m */
    TF_MDAY,    /* %d */
    TF_MDAY_SP, /* %e: %d after an optional space */
    TF_HOUR,
    TF_MIN,
    TF_SEC,
    TF_FRAC,      /* %N %L: digits of a fraction of a second */
    TF_ZONE,      /* %z: Z, UTC, GMT, or [+-]hh[[:]mm] */
    TF_ZONE_NAME, /* %Z: as %z, plus zone abbreviations */
    TF_MONNAME,   /* %b %h %B */
    TF_WDAYNAME,  /* %a %A: read and ignored */
    TF_YDAY,      /* %j */
    TF_EPOCH,     /* %s */
} tf_op_t;

typedef struct tf_ins {
    tf_op_t op;
    uint32_t off, len; /* TF_LIT: bytes of the format; TF_CHAR: the byte in off */
    int width;         /* TF_FRAC: most digits that count (0 = 9) */
} tf_ins_t;

typedef struct tf {
    char *fmt;
    tf_ins_t *ins;
    size_t n;
    bool has_zone;
} tf_t;

static void tf_free(tf_t *f)
{
    if (!f) return;
    free(f->fmt);
    free(f->ins);
    free(f);
}

static void tf_push(tf_t *f, tf_op_t op, uint32_t off, uint32_t len, int width)
{
    f->ins[f->n++] = (tf_ins_t){op, off, len, width};
}

#define TF_SUPPORTED "%Y %y %m %d %e %j %H %M %S %N %L %z %Z %b %h %B %a %A %s %T %F %n %t %%"

static tf_t *tf_compile(const char *fmt, weir_err_t *err)
{
    tf_t *f = weir_calloc(1, sizeof *f);
    size_t flen = strlen(fmt);
    f->fmt = weir_strdup(fmt);
    f->ins = weir_calloc(flen * 5 + 1, sizeof *f->ins); /* %T and %F expand to 5 */
    for (size_t i = 0; i < flen;) {
        char c = fmt[i];
        if (is_ws(c)) {
            tf_push(f, TF_WS, 0, 0, 0);
            i++;
            continue;
        }
        if (c != '%') {
            size_t j = i;
            while (j < flen && fmt[j] != '%' && !is_ws(fmt[j]))
                j++;
            tf_push(f, TF_LIT, (uint32_t)i, (uint32_t)(j - i), 0);
            i = j;
            continue;
        }
        size_t start = i++;
        int width = 0;
        while (i < flen && is_digit(fmt[i]) && width < 100)
            width = width * 10 + (fmt[i++] - '0');
        while (i < flen && fmt[i] == ':')
            i++; /* %:z and %::z */
        if (i >= flen) {
            weir_err_set(err, "time_format '%s' ends with an unfinished %% directive", fmt);
            goto err;
        }
        switch (fmt[i]) {
        case 'Y':
            tf_push(f, TF_YEAR, 0, 0, 0);
            break;
        case 'y':
            tf_push(f, TF_YEAR2, 0, 0, 0);
            break;
        case 'm':
            tf_push(f, TF_MON, 0, 0, 0);
            break;
        case 'd':
            tf_push(f, TF_MDAY, 0, 0, 0);
            break;
        case 'e':
            tf_push(f, TF_MDAY_SP, 0, 0, 0);
            break;
        case 'j':
            tf_push(f, TF_YDAY, 0, 0, 0);
            break;
        case 'H':
            tf_push(f, TF_HOUR, 0, 0, 0);
            break;
        case 'M':
            tf_push(f, TF_MIN, 0, 0, 0);
            break;
        case 'S':
            tf_push(f, TF_SEC, 0, 0, 0);
            break;
        case 'N':
        case 'L':
            tf_push(f, TF_FRAC, 0, 0, width > 9 ? 9 : width);
            break;
        case 'z':
            tf_push(f, TF_ZONE, 0, 0, 0);
            f->has_zone = true;
            break;
        case 'Z':
            tf_push(f, TF_ZONE_NAME, 0, 0, 0);
            f->has_zone = true;
            break;
        case 'b':
        case 'h':
        case 'B':
            tf_push(f, TF_MONNAME, 0, 0, 0);
            break;
        case 'a':
        case 'A':
            tf_push(f, TF_WDAYNAME, 0, 0, 0);
            break;
        case 's':
            tf_push(f, TF_EPOCH, 0, 0, 0);
            break;
        case 'n':
        case 't':
            tf_push(f, TF_WS, 0, 0, 0);
            break;
        case '%':
            tf_push(f, TF_CHAR, '%', 1, 0);
            break;
        case 'T':
            tf_push(f, TF_HOUR, 0, 0, 0);
            tf_push(f, TF_CHAR, ':', 1, 0);
            tf_push(f, TF_MIN, 0, 0, 0);
            tf_push(f, TF_CHAR, ':', 1, 0);
            tf_push(f, TF_SEC, 0, 0, 0);
            break;
        case 'F':
            tf_push(f, TF_YEAR, 0, 0, 0);
            tf_push(f, TF_CHAR, '-', 1, 0);
            tf_push(f, TF_MON, 0, 0, 0);
            tf_push(f, TF_CHAR, '-', 1, 0);
            tf_push(f, TF_MDAY, 0, 0, 0);
            break;
        default:
            weir_err_set(err, "time_format '%s': %.*s is not supported by weir (supported: %s)",
                         fmt, (int)(i - start + 1), fmt + start, TF_SUPPORTED);
            goto err;
        }
        i++;
    }
    return f;
err:
    tf_free(f);
    return NULL;
}

typedef struct tf_fields {
    int64_t year;
    int mon, mday, hour, min, sec, yday;
    uint32_t nsec;
    bool has_year, has_off, has_epoch;
    int32_t off;
    int64_t epoch;
} tf_fields_t;

/* Reads 1..width digits. Returns the count (0 = none). */
static size_t read_num(const char *s, size_t len, size_t *si, size_t width, int64_t *out)
{
    size_t i = *si, n = 0;
    int64_t v = 0;
    while (i < len && n < width && is_digit(s[i])) {
        v = v * 10 + (s[i++] - '0');
        n++;
    }
    *si = i;
    *out = v;
    return n;
}

static int read_ranged(const char *s, size_t len, size_t *si, int lo, int hi, size_t width,
                       int *out)
{
    int64_t v;
    if (read_num(s, len, si, width, &v) == 0 || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static const char *const month_names[] = {
    "January",   "February", "March",    "April",    "May", "June", "July", "August",
    "September", "October",  "November", "December", "Jan", "Feb",  "Mar",  "Apr",
    "May",       "Jun",      "Jul",      "Aug",      "Sep", "Oct",  "Nov",  "Dec"};
static const char *const wday_names[] = {"Sunday", "Monday",   "Tuesday", "Wednesday", "Thursday",
                                         "Friday", "Saturday", "Sun",     "Mon",       "Tue",
                                         "Wed",    "Thu",      "Fri",     "Sat"};

/* Index of the first name (full names come first) that the input starts with, or -1. */
static int read_name(const char *s, size_t len, size_t *si, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(names[i]);
        if (len - *si >= l && strncasecmp(s + *si, names[i], l) == 0) {
            *si += l;
            return (int)i;
        }
    }
    return -1;
}

/* Zone abbreviations Ruby's zone_to_diff knows that people actually write. */
static const struct {
    const char *name;
    int32_t off;
} zone_abbrevs[] = {
    {"UTC", 0},         {"GMT", 0},         {"UT", 0},          {"Z", 0},
    {"EST", -5 * 3600}, {"EDT", -4 * 3600}, {"CST", -6 * 3600}, {"CDT", -5 * 3600},
    {"MST", -7 * 3600}, {"MDT", -6 * 3600}, {"PST", -8 * 3600}, {"PDT", -7 * 3600},
    {"JST", 9 * 3600},  {"CET", 1 * 3600},  {"CEST", 2 * 3600}, {"BST", 1 * 3600},
};

static bool is_alpha(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* %z: Z, UTC, GMT, or [+-]hh[[:]mm] (the sign is optional, as in the strptime gem). %Z also
 * takes a zone abbreviation; an unknown one gives no offset, so the configured zone applies,
 * as with Ruby's Time.strptime. */
static int read_zone(const char *s, size_t len, size_t *si, bool names, tf_fields_t *f)
{
    size_t i = *si;
    if (names && i < len && is_alpha(s[i])) {
        size_t j = i;
        while (j < len && is_alpha(s[j]))
            j++;
        *si = j;
        for (size_t k = 0; k < sizeof zone_abbrevs / sizeof *zone_abbrevs; k++) {
            if (strlen(zone_abbrevs[k].name) == j - i &&
                strncasecmp(zone_abbrevs[k].name, s + i, j - i) == 0) {
                f->has_off = true;
                f->off = zone_abbrevs[k].off;
            }
        }
        return 0;
    }
    f->has_off = true;
    f->off = 0;
    if (len - i >= 3 && (strncasecmp(s + i, "UTC", 3) == 0 || strncasecmp(s + i, "GMT", 3) == 0)) {
        *si = i + 3;
        return 0;
    }
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        *si = i + 1;
        return 0;
    }
    int sign = 1;
    if (i < len && (s[i] == '+' || s[i] == '-')) sign = s[i++] == '-' ? -1 : 1;
    int64_t h, m = 0;
    if (read_num(s, len, &i, 2, &h) == 0) return -1;
    if (i < len && s[i] == ':') i++;
    read_num(s, len, &i, 2, &m);
    *si = i;
    f->off = (int32_t)(sign * (h * 3600 + m * 60));
    return 0;
}

static int tf_step(const tf_t *fm, const tf_ins_t *in, const char *s, size_t len, size_t *si,
                   tf_fields_t *f)
{
    int64_t v;
    switch (in->op) {
    case TF_LIT:
        if (len - *si < in->len || memcmp(s + *si, fm->fmt + in->off, in->len) != 0) return -1;
        *si += in->len;
        return 0;
    case TF_CHAR:
        if (*si >= len || s[*si] != (char)in->off) return -1;
        (*si)++;
        return 0;
    case TF_WS:
        while (*si < len && is_ws(s[*si]))
            (*si)++;
        return 0;
    case TF_YEAR: {
        bool neg = false;
        if (*si < len && (s[*si] == '+' || s[*si] == '-')) neg = s[(*si)++] == '-';
        if (read_num(s, len, si, 4, &v) == 0) return -1;
        f->year = neg ? -v : v;
        f->has_year = true;
        return 0;
    }
    case TF_YEAR2:
        if (read_num(s, len, si, 2, &v) == 0) return -1;
        f->year = v + (v < 69 ? 2000 : 1900);
        f->has_year = true;
        return 0;
    case TF_MON:
        return read_ranged(s, len, si, 1, 12, 2, &f->mon);
    case TF_MDAY_SP:
        if (*si < len && s[*si] == ' ') (*si)++;
        return read_ranged(s, len, si, 1, 31, 2, &f->mday);
    case TF_MDAY:
        return read_ranged(s, len, si, 1, 31, 2, &f->mday);
    case TF_HOUR:
        return read_ranged(s, len, si, 0, 23, 2, &f->hour);
    case TF_MIN:
        return read_ranged(s, len, si, 0, 59, 2, &f->min);
    case TF_SEC:
        return read_ranged(s, len, si, 0, 60, 2, &f->sec);
    case TF_YDAY:
        return read_ranged(s, len, si, 1, 366, 3, &f->yday);
    case TF_FRAC: {
        size_t w = in->width ? (size_t)in->width : 9;
        size_t n = read_num(s, len, si, w, &v);
        if (n == 0) return -1;
        for (; n < 9; n++)
            v *= 10;
        f->nsec = (uint32_t)v;
        if (!in->width)
            while (*si < len && is_digit(s[*si]))
                (*si)++; /* digits past nanoseconds */
        return 0;
    }
    case TF_ZONE:
        return read_zone(s, len, si, false, f);
    case TF_ZONE_NAME:
        return read_zone(s, len, si, true, f);
    case TF_MONNAME: {
        int i = read_name(s, len, si, month_names, 24);
        if (i < 0) return -1;
        f->mon = i % 12 + 1;
        return 0;
    }
    case TF_WDAYNAME:
        return read_name(s, len, si, wday_names, 14) < 0 ? -1 : 0;
    case TF_EPOCH: {
        bool neg = false;
        if (*si < len && s[*si] == '-') neg = s[(*si)++] == '-';
        if (read_num(s, len, si, 18, &v) == 0) return -1;
        f->epoch = neg ? -v : v;
        f->has_epoch = true;
        return 0;
    }
    }
    return -1;
}

/* Fills what the format left out, as the strptime gem does: with a year, the missing parts
 * are the start of their unit; without one, the date (and the larger units) is today's in
 * the zone the value is read in. */
static void fill_defaults(tf_fields_t *f, int64_t now_wall)
{
    if (f->has_year) {
        if (f->yday > 0 && f->mon < 0 && f->mday < 0) {
            f->mon = 1;
            f->mday = f->yday; /* weir_days_from_civil rolls Jan 40 into Feb 9 */
        }
        if (f->mon < 0) f->mon = 1;
        if (f->mday < 0) f->mday = 1;
        if (f->hour < 0) f->hour = 0;
        if (f->min < 0) f->min = 0;
        if (f->sec < 0) f->sec = 0;
        return;
    }
    time_t t = (time_t)now_wall;
    struct tm tm;
    gmtime_r(&t, &tm);
    f->year = tm.tm_year + 1900;
    int cur[5] = {tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec};
    int *dst[5] = {&f->mon, &f->mday, &f->hour, &f->min, &f->sec};
    static const int start[5] = {1, 1, 0, 0, 0};
    bool below = false; /* a larger unit was given: smaller missing ones start at zero */
    for (int i = 0; i < 5; i++) {
        if (*dst[i] >= 0)
            below = true;
        else
            *dst[i] = below ? start[i] : cur[i];
    }
}

static int tf_exec(const tf_t *fm, const weir_tz_t *zone, const char *s, size_t len,
                   weir_time_t now, weir_time_t *out)
{
    tf_fields_t f = {.mon = -1, .mday = -1, .hour = -1, .min = -1, .sec = -1, .yday = -1};
    size_t si = 0;
    for (size_t i = 0; i < fm->n; i++)
        if (tf_step(fm, &fm->ins[i], s, len, &si, &f) != 0) return -1;
    /* whatever input is left is ignored, as the strptime gem's final instruction does */
    int64_t t;
    if (f.has_epoch) {
        t = f.epoch;
    } else {
        int32_t now_off = f.has_off ? f.off : weir_tz_offset(zone, now.sec, NULL);
        fill_defaults(&f, (int64_t)now.sec + now_off);
        int64_t wall = weir_days_from_civil(f.year, f.mon, f.mday) * 86400 + f.hour * 3600 +
                       f.min * 60 + f.sec;
        t = f.has_off ? wall - f.off : tz_wall_to_utc(zone, wall);
    }
    out->sec = (uint32_t)t; /* EventTime packs seconds as uint32, as Fluentd's pack('NN') */
    out->nsec = f.nsec;
    return 0;
}

/* ISO 8601 date-times, for time_type string without time_format (Fluentd calls Ruby's
 * Time.parse there; weir reads the ISO 8601 / RFC 3339 forms it is used with) and for
 * "%iso8601" (strict: nothing may follow). */
static int iso_parse(const weir_tz_t *zone, bool strict, const char *s, size_t len,
                     weir_time_t *out)
{
    tf_fields_t f = {.hour = 0, .min = 0, .sec = 0};
    size_t i = 0;
    int64_t v;
    if (!strict)
        while (i < len && is_ws(s[i]))
            i++;
    if (read_num(s, len, &i, 4, &v) != 4) return -1;
    f.year = v;
    char sep = i < len ? s[i] : 0;
    if (sep != '-' && (strict || sep != '/')) return -1;
    i++;
    if (read_ranged(s, len, &i, 1, 12, 2, &f.mon) != 0 || i >= len || s[i] != sep) return -1;
    i++;
    if (read_ranged(s, len, &i, 1, 31, 2, &f.mday) != 0) return -1;
    if (i < len && (s[i] == 'T' || s[i] == 't' || (!strict && s[i] == ' ')) && i + 1 < len &&
        is_digit(s[i + 1])) {
        i++;
        if (read_ranged(s, len, &i, 0, 23, 2, &f.hour) != 0 || i >= len || s[i] != ':') return -1;
        i++;
        if (read_ranged(s, len, &i, 0, 59, 2, &f.min) != 0) return -1;
        if (i < len && s[i] == ':') {
            i++;
            if (read_ranged(s, len, &i, 0, 60, 2, &f.sec) != 0) return -1;
            if (i < len && (s[i] == '.' || s[i] == ',')) {
                i++;
                tf_ins_t frac = {TF_FRAC, 0, 0, 0};
                if (tf_step(NULL, &frac, s, len, &i, &f) != 0) return -1;
            }
        }
        if (!strict)
            while (i < len && s[i] == ' ')
                i++;
        if (i < len && (s[i] == 'Z' || s[i] == 'z' || s[i] == '+' || s[i] == '-' ||
                        (!strict && len - i >= 3 &&
                         (strncasecmp(s + i, "UTC", 3) == 0 || strncasecmp(s + i, "GMT", 3) == 0))))
            if (read_zone(s, len, &i, false, &f) != 0) return -1;
    }
    if (strict && i != len) return -1;
    int64_t wall =
        weir_days_from_civil(f.year, f.mon, f.mday) * 86400 + f.hour * 3600 + f.min * 60 + f.sec;
    int64_t t = f.has_off ? wall - f.off : tz_wall_to_utc(zone, wall);
    out->sec = (uint32_t)t;
    out->nsec = f.nsec;
    return 0;
}

/* ---- the time parser --------------------------------------------------------------------- */

struct weir_timeparser {
    weir_time_type_t type;
    tf_t *fmt;       /* NULL: ISO 8601 */
    bool iso_strict; /* "%iso8601" */
    weir_tz_t zone;  /* wall times without an offset are read here */
};

weir_timeparser_t *weir_timeparser_new(const weir_timeparser_conf_t *c, weir_err_t *err)
{
    weir_timeparser_t *tp = weir_calloc(1, sizeof *tp);
    tp->type = c->type;
    bool localtime = c->localtime && !c->utc && !c->timezone;
    if (c->type != WEIR_TIME_STRING) return tp; /* numeric types ignore format and zone */
    if (!c->format && (c->timezone || !localtime)) {
        weir_err_set(err, "specifying timezone requires time format");
        goto err;
    }
    if (c->timezone) {
        if (tz_from_spec(&tp->zone, c->timezone, err) != 0) goto err;
    } else {
        weir_tz_init(&tp->zone, NULL, localtime, err); /* cannot fail without a name */
    }
    if (c->format && strcmp(c->format, "%iso8601") == 0) {
        tp->iso_strict = true;
    } else if (c->format) {
        tp->fmt = tf_compile(c->format, err);
        if (!tp->fmt) goto err;
    }
    return tp;
err:
    weir_timeparser_free(tp);
    return NULL;
}

void weir_timeparser_free(weir_timeparser_t *tp)
{
    if (!tp) return;
    tf_free(tp->fmt);
    weir_tz_free(&tp->zone);
    free(tp);
}

int weir_timeparser_parse_str(const weir_timeparser_t *tp, const char *s, size_t len,
                              weir_time_t now, weir_time_t *out)
{
    if (tp->fmt) return tf_exec(tp->fmt, &tp->zone, s, len, now, out);
    return iso_parse(&tp->zone, tp->iso_strict, s, len, out);
}

/* The value as Fluentd's messages show it, bounded. */
static void brief(const weir_mp_obj_t *v, char *buf, size_t n)
{
    switch (v->type) {
    case WEIR_MP_STR:
    case WEIR_MP_BIN:
        snprintf(buf, n, "%.*s", (int)(v->len > 200 ? 200 : v->len), v->ptr);
        break;
    case WEIR_MP_UINT:
        snprintf(buf, n, "%llu", (unsigned long long)v->v.u);
        break;
    case WEIR_MP_INT:
        snprintf(buf, n, "%lld", (long long)v->v.i);
        break;
    case WEIR_MP_FLOAT:
        weir_ruby_float_to_s(v->v.f, buf);
        break;
    case WEIR_MP_BOOL:
        snprintf(buf, n, "%s", v->v.b ? "true" : "false");
        break;
    case WEIR_MP_NIL:
        snprintf(buf, n, "(nil)");
        break;
    case WEIR_MP_ARRAY:
        snprintf(buf, n, "(an array)");
        break;
    case WEIR_MP_MAP:
        snprintf(buf, n, "(a map)");
        break;
    default:
        snprintf(buf, n, "(ext)");
        break;
    }
}

static int numeric_time(const weir_timeparser_t *tp, const weir_mp_obj_t *v, weir_time_t *out,
                        weir_err_t *err)
{
    char text[256];
    switch (v->type) {
    case WEIR_MP_STR:
    case WEIR_MP_BIN:
        if (tp->type == WEIR_TIME_UNIXTIME) {
            *out = (weir_time_t){(uint32_t)ruby_to_i(v->ptr, v->len), 0};
            return 0;
        }
        *out = weir_time_from_float_text(v->ptr, v->len);
        return 0;
    case WEIR_MP_UINT:
        *out = (weir_time_t){(uint32_t)v->v.u, 0};
        return 0;
    case WEIR_MP_INT:
        *out = (weir_time_t){(uint32_t)v->v.i, 0};
        return 0;
    case WEIR_MP_FLOAT:
        if (tp->type == WEIR_TIME_UNIXTIME) {
            if (!isfinite(v->v.f) || fabs(v->v.f) >= WEIR_TIMEPARSER_FLOAT_MAX) {
                brief(v, text, sizeof text);
                weir_err_set(err, "invalid time value: %s is out of range", text);
                return -1;
            }
            *out = (weir_time_t){(uint32_t)(int64_t)v->v.f, 0};
            return 0;
        } else {
            size_t n = weir_ruby_float_to_s(v->v.f, text);
            *out = weir_time_from_float_text(text, n);
            return 0;
        }
    default:
        break;
    }
    brief(v, text, sizeof text);
    weir_err_set(err, "invalid time value: value must be a string or a number: %s", text);
    return -1;
}

int weir_timeparser_parse(const weir_timeparser_t *tp, const weir_mp_obj_t *v, weir_time_t now,
                          weir_time_t *out, weir_err_t *err)
{
    if (tp->type != WEIR_TIME_STRING) return numeric_time(tp, v, out, err);
    char text[256];
    brief(v, text, sizeof text);
    if (v->type != WEIR_MP_STR && v->type != WEIR_MP_BIN) {
        weir_err_set(err, "value must be string: %s", text);
        return -1;
    }
    if (weir_timeparser_parse_str(tp, v->ptr, v->len, now, out) != 0) {
        weir_err_set(err,
                     "invalid time format: value = %s, error_class = ArgumentError, error = "
                     "string doesn't match",
                     text);
        return -1;
    }
    return 0;
}
