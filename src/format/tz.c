/* Time zones for formatting: UTC, the process zone, fixed offsets and tz database zones.
 *
 * A named zone is read once from its compiled file (RFC 8536 "TZif": transition times, the offset
 * after each, and a POSIX TZ rule for everything past the last transition) and kept in memory,
 * read-only; looking an instant up is a binary search, with no cache to update, so one zone can
 * be shared by threads (the time formatter caches per second above this). Nothing here touches
 * TZ or tzset; only WEIR_TZ_LOCAL calls localtime_r, which is thread-safe. Invariant: every
 * offset stored or returned lies within +-WEIR_TZ_MAX_OFFSET. */
#include "weir/format.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format_internal.h"

#define TZ_DEFAULT_DIR "/usr/share/zoneinfo"

/* One end of a POSIX daylight-saving period: Jn, n or Mm.w.d, then a local time of day. */
typedef struct tz_rule_date {
    char kind; /* 'J' (1..365, no Feb 29), 'D' (0..365), 'M' (month, week, weekday) */
    int n, m, w, d;
    int32_t time; /* seconds after local midnight, may be negative or past 24 h */
} tz_rule_date_t;

typedef struct tz_rule {
    int32_t std_off, dst_off; /* seconds east */
    bool has_dst;
    tz_rule_date_t start, end;
} tz_rule_t;

struct weir_tzdata {
    int64_t *trans; /* ascending transition instants */
    uint8_t *idx;   /* type index in effect from trans[i] */
    size_t ntrans;
    int32_t *types; /* offset of each type */
    size_t ntypes;
    bool has_rule; /* footer rule for instants past the last transition */
    tz_rule_t rule;
};

/* ---- POSIX TZ rules ("EST5EDT,M3.2.0,M11.1.0", "<+0330>-3:30", "JST-9") ---- */

static const char *rule_name(const char *s)
{
    if (*s == '<') {
        const char *e = strchr(s, '>');
        return e && e > s + 1 ? e + 1 : NULL;
    }
    const char *b = s;
    while (isalpha((unsigned char)*s))
        s++;
    return s - b >= 3 ? s : NULL;
}

/* [+-]h[h[h]][:mm[:ss]] with at most `maxh` hours; stores seconds (signed as written). */
static const char *rule_hms(const char *s, int maxh, int32_t *out)
{
    int sign = 1;
    if (*s == '+' || *s == '-') sign = *s++ == '-' ? -1 : 1;
    if (!isdigit((unsigned char)*s)) return NULL;
    int h = 0, m = 0, sec = 0, nd = 0;
    while (isdigit((unsigned char)*s) && nd < 3) {
        h = h * 10 + (*s++ - '0');
        nd++;
    }
    if (h > maxh) return NULL;
    if (*s == ':') {
        if (!isdigit((unsigned char)s[1]) || !isdigit((unsigned char)s[2])) return NULL;
        m = (s[1] - '0') * 10 + (s[2] - '0');
        s += 3;
        if (*s == ':') {
            if (!isdigit((unsigned char)s[1]) || !isdigit((unsigned char)s[2])) return NULL;
            sec = (s[1] - '0') * 10 + (s[2] - '0');
            s += 3;
        }
    }
    if (m > 59 || sec > 59) return NULL;
    *out = sign * (h * 3600 + m * 60 + sec);
    return s;
}

static const char *rule_int(const char *s, int lo, int hi, int *out)
{
    if (!isdigit((unsigned char)*s)) return NULL;
    int v = 0;
    while (isdigit((unsigned char)*s) && v <= hi)
        v = v * 10 + (*s++ - '0');
    if (v < lo || v > hi) return NULL;
    *out = v;
    return s;
}

static const char *rule_date(const char *s, tz_rule_date_t *rd)
{
    memset(rd, 0, sizeof *rd);
    if (*s == 'J') {
        rd->kind = 'J';
        s = rule_int(s + 1, 1, 365, &rd->n);
    } else if (*s == 'M') {
        rd->kind = 'M';
        s = rule_int(s + 1, 1, 12, &rd->m);
        if (s && *s == '.')
            s = rule_int(s + 1, 1, 5, &rd->w);
        else
            s = NULL;
        if (s && *s == '.')
            s = rule_int(s + 1, 0, 6, &rd->d);
        else
            s = NULL;
    } else {
        rd->kind = 'D';
        s = rule_int(s, 0, 365, &rd->n);
    }
    if (!s) return NULL;
    rd->time = 2 * 3600;                                /* POSIX default 02:00 */
    if (*s == '/') s = rule_hms(s + 1, 167, &rd->time); /* RFC 8536 allows -167..167 h */
    return s;
}

static bool rule_parse(const char *s, tz_rule_t *r)
{
    memset(r, 0, sizeof *r);
    int32_t v;
    s = rule_name(s);
    if (!s || !(s = rule_hms(s, 24, &v))) return false;
    r->std_off = -v; /* POSIX counts west as positive */
    if (*s == '\0') return true;
    if (!(s = rule_name(s))) return false;
    r->has_dst = true;
    r->dst_off = r->std_off + 3600;
    if (*s && *s != ',') {
        if (!(s = rule_hms(s, 24, &v))) return false;
        r->dst_off = -v;
    }
    if (*s == '\0') {
        /* no dates: POSIX leaves them to the implementation; use the US rule, as glibc does */
        s = ",M3.2.0,M11.1.0";
    }
    if (*s != ',' || !(s = rule_date(s + 1, &r->start))) return false;
    if (*s != ',' || !(s = rule_date(s + 1, &r->end))) return false;
    if (*s != '\0') return false;
    return r->std_off >= -WEIR_TZ_MAX_OFFSET && r->std_off <= WEIR_TZ_MAX_OFFSET &&
           r->dst_off >= -WEIR_TZ_MAX_OFFSET && r->dst_off <= WEIR_TZ_MAX_OFFSET;
}

/* Local seconds since the epoch at which a rule date's time falls in year y. */
static int64_t rule_local(int64_t y, const tz_rule_date_t *rd)
{
    int64_t day;
    if (rd->kind == 'J') {
        day = weir_days_from_civil(y, 1, 1) + rd->n - 1 + (weir_is_leap(y) && rd->n >= 60);
    } else if (rd->kind == 'D') {
        day = weir_days_from_civil(y, 1, 1) + rd->n;
    } else {
        static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int64_t first = weir_days_from_civil(y, (unsigned)rd->m, 1);
        int wday = (int)weir_floormod(first + 4, 7); /* 1970-01-01 was a Thursday */
        int len = mdays[rd->m - 1] + (rd->m == 2 && weir_is_leap(y));
        int64_t d = first + (rd->d - wday + 7) % 7 + (int64_t)(rd->w - 1) * 7;
        while (d >= first + len)
            d -= 7;
        day = d;
    }
    return day * 86400 + rd->time;
}

/* Offset at t under the rule. */
static int32_t rule_offset(const tz_rule_t *r, int64_t t)
{
    if (!r->has_dst) return r->std_off;
    int64_t y;
    unsigned m, d;
    weir_civil_from_days(weir_floordiv(t + r->std_off, 86400), &y, &m, &d);
    int64_t start = rule_local(y, &r->start) - r->std_off; /* clocks read standard time */
    int64_t end = rule_local(y, &r->end) - r->dst_off;     /* clocks read daylight time */
    /* in the southern hemisphere daylight time spans the new year: end comes before start */
    bool dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
    return dst ? r->dst_off : r->std_off;
}

/* ---- TZif files ---- */

typedef struct tzif_counts {
    uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
} tzif_counts_t;

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t rd64s(const unsigned char *p)
{
    return (int64_t)((uint64_t)rd32(p) << 32 | rd32(p + 4));
}

#define TZIF_HEADER 44

static tzif_counts_t tzif_counts(const unsigned char *h)
{
    const unsigned char *c = h + 20; /* magic, version, 15 reserved bytes */
    tzif_counts_t k = {rd32(c), rd32(c + 4), rd32(c + 8), rd32(c + 12), rd32(c + 16), rd32(c + 20)};
    return k;
}

/* Bytes of the data block after a header, with `ts` bytes per time value (4 in v1, 8 after). */
static uint64_t tzif_block_len(const tzif_counts_t *k, unsigned ts)
{
    return (uint64_t)k->timecnt * ts + k->timecnt + (uint64_t)k->typecnt * 6 + k->charcnt +
           (uint64_t)k->leapcnt * (ts + 4) + k->isstdcnt + k->isutcnt;
}

static void tzdata_free(struct weir_tzdata *z)
{
    if (!z) return;
    free(z->trans);
    free(z->idx);
    free(z->types);
    free(z);
}

/* Parses a whole TZif file. Returns NULL with `why` set when it is not one or breaks a limit. */
static struct weir_tzdata *tzif_parse(const unsigned char *p, size_t n, const char **why)
{
    const unsigned char *end = p + n;
    struct weir_tzdata *z = NULL;
    if (n < TZIF_HEADER || memcmp(p, "TZif", 4) != 0) {
        *why = "not a compiled tz file (no TZif header)";
        return NULL;
    }
    int version = p[4];
    tzif_counts_t k = tzif_counts(p);
    const unsigned char *blk = p + TZIF_HEADER;
    unsigned ts = 4;
    if (tzif_block_len(&k, 4) > (uint64_t)(end - blk)) goto truncated;
    if (version >= '2') {
        /* skip the 32-bit block; the second header and 64-bit block follow */
        const unsigned char *h2 = blk + tzif_block_len(&k, 4);
        if ((size_t)(end - h2) < TZIF_HEADER || memcmp(h2, "TZif", 4) != 0) goto truncated;
        k = tzif_counts(h2);
        blk = h2 + TZIF_HEADER;
        ts = 8;
        if (tzif_block_len(&k, 8) > (uint64_t)(end - blk)) goto truncated;
    }
    if (k.timecnt > WEIR_TZ_MAX_TRANSITIONS) {
        *why = "more transitions than WEIR_TZ_MAX_TRANSITIONS";
        return NULL;
    }
    if (k.typecnt == 0 || k.typecnt > WEIR_TZ_MAX_TYPES) {
        *why = "no local time types, or more than WEIR_TZ_MAX_TYPES";
        return NULL;
    }
    z = weir_calloc(1, sizeof *z);
    z->ntrans = k.timecnt;
    z->ntypes = k.typecnt;
    z->trans = weir_malloc(z->ntrans * sizeof *z->trans);
    z->idx = weir_malloc(z->ntrans);
    z->types = weir_malloc(z->ntypes * sizeof *z->types);
    const unsigned char *q = blk;
    for (size_t i = 0; i < z->ntrans; i++, q += ts) {
        z->trans[i] = ts == 8 ? rd64s(q) : (int64_t)(int32_t)rd32(q);
        if (i > 0 && z->trans[i] <= z->trans[i - 1]) {
            *why = "transition times are not ascending";
            goto bad;
        }
    }
    for (size_t i = 0; i < z->ntrans; i++, q++) {
        z->idx[i] = *q;
        if (*q >= z->ntypes) {
            *why = "a transition names a local time type that does not exist";
            goto bad;
        }
    }
    for (size_t i = 0; i < z->ntypes; i++, q += 6) {
        int32_t off = (int32_t)rd32(q);
        if (off < -WEIR_TZ_MAX_OFFSET || off > WEIR_TZ_MAX_OFFSET) {
            *why = "a UTC offset of 24 hours or more";
            goto bad;
        }
        z->types[i] = off;
    }
    if (ts == 8) {
        /* footer: "\n<POSIX TZ rule>\n" right after the 64-bit block */
        const unsigned char *f = blk + tzif_block_len(&k, 8);
        if (f < end && *f == '\n') {
            const unsigned char *nl = memchr(f + 1, '\n', (size_t)(end - f - 1));
            if (!nl) goto truncated;
            size_t len = (size_t)(nl - f - 1);
            if (len > 0) {
                char rule[256];
                if (len >= sizeof rule || memchr(f + 1, '\0', len)) {
                    *why = "the POSIX TZ rule at its end is too long or malformed";
                    goto bad;
                }
                memcpy(rule, f + 1, len);
                rule[len] = '\0';
                if (!rule_parse(rule, &z->rule)) {
                    *why = "the POSIX TZ rule at its end cannot be read";
                    goto bad;
                }
                z->has_rule = true;
            }
        }
    }
    return z;
truncated:
    *why = "the file is truncated";
bad:
    tzdata_free(z);
    return NULL;
}

static int32_t tzdata_offset(const struct weir_tzdata *z, int64_t t)
{
    size_t n = z->ntrans;
    if (n == 0) return z->has_rule ? rule_offset(&z->rule, t) : z->types[0];
    /* RFC 8536 3.2: before the first transition, time type 0 applies */
    if (t < z->trans[0]) return z->types[0];
    if (t >= z->trans[n - 1] && z->has_rule) return rule_offset(&z->rule, t);
    size_t a = 0, b = n; /* find the last transition <= t */
    while (b - a > 1) {
        size_t mid = a + (b - a) / 2;
        if (z->trans[mid] <= t)
            a = mid;
        else
            b = mid;
    }
    return z->types[z->idx[a]];
}

/* ---- zone specs ---- */

/* Fluentd's NUMERIC_PATTERN [+-]HH(:?MM)? and Ruby's Time.zone_offset. 1 = matched, 0 = not this
 * form, -1 = this form but out of range. */
static int parse_fixed(const char *s, int32_t *off)
{
    size_t n = strlen(s);
    if ((n != 3 && n != 5 && n != 6) || (s[0] != '+' && s[0] != '-')) return 0;
    const char *mm = n == 3 ? NULL : n == 5 ? s + 3 : s + 4;
    if (n == 6 && s[3] != ':') return 0;
    if (!isdigit((unsigned char)s[1]) || !isdigit((unsigned char)s[2])) return 0;
    if (mm && (!isdigit((unsigned char)mm[0]) || !isdigit((unsigned char)mm[1]))) return 0;
    int h = (s[1] - '0') * 10 + (s[2] - '0');
    int m = mm ? (mm[0] - '0') * 10 + (mm[1] - '0') : 0;
    if (h > 23 || m > 59) return -1;
    *off = (s[0] == '-' ? -1 : 1) * (h * 3600 + m * 60);
    return 1;
}

/* Fluentd's NAME_PATTERN: two or three non-empty parts separated by '/'. Parts "." and ".." are
 * refused so a name cannot leave the zone directory. */
static bool is_zone_name(const char *s)
{
    int parts = 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) return false;
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.')) return false;
        parts++;
        if (!e) break;
        p = e + 1;
    }
    return parts == 2 || parts == 3;
}

static struct weir_tzdata *load_zone(const char *name, weir_err_t *err)
{
    const char *dir = getenv("TZDIR");
    if (!dir || !*dir) dir = TZ_DEFAULT_DIR;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        weir_err_set(err, "timezone '%s': name too long", name);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        weir_err_set(err,
                     "Unsupported timezone '%s': %s: %s (is the tzdata package installed, or "
                     "TZDIR set?)",
                     name, path, strerror(errno));
        return NULL;
    }
    unsigned char *buf = weir_malloc(WEIR_TZ_MAX_FILE_SIZE + 1);
    size_t n = fread(buf, 1, WEIR_TZ_MAX_FILE_SIZE + 1, f);
    fclose(f);
    const char *why = NULL;
    struct weir_tzdata *z = NULL;
    if (n > WEIR_TZ_MAX_FILE_SIZE)
        why = "larger than WEIR_TZ_MAX_FILE_SIZE";
    else
        z = tzif_parse(buf, n, &why);
    free(buf);
    if (!z) weir_err_set(err, "timezone '%s': %s: %s", name, path, why);
    return z;
}

int weir_tz_init(weir_tz_t *tz, const char *zone, bool localtime, weir_err_t *err)
{
    memset(tz, 0, sizeof *tz);
    if (!zone) {
        tz->kind = localtime ? WEIR_TZ_LOCAL : WEIR_TZ_UTC;
        return 0;
    }
    int r = parse_fixed(zone, &tz->fixed);
    if (r == 1) {
        tz->kind = WEIR_TZ_FIXED;
        return 0;
    }
    if (r < 0) {
        weir_err_set(err, "Unsupported timezone '%s': hours must be 00-23 and minutes 00-59", zone);
        return -1;
    }
    if (!is_zone_name(zone)) {
        weir_err_set(err,
                     "Unsupported timezone '%s': expected [+-]HH:MM, [+-]HHMM, [+-]HH or a tz "
                     "database name such as Asia/Tokyo (for UTC use 'utc true' or Etc/UTC)",
                     zone);
        return -1;
    }
    tz->data = load_zone(zone, err);
    if (!tz->data) return -1;
    tz->kind = WEIR_TZ_NAMED;
    return 0;
}

void weir_tz_free(weir_tz_t *tz)
{
    tzdata_free(tz->data);
    tz->data = NULL;
}

int32_t weir_tz_offset(const weir_tz_t *tz, int64_t t, char abbr[WEIR_TZ_ABBR_MAX])
{
    if (abbr) abbr[0] = '\0';
    switch (tz->kind) {
    case WEIR_TZ_UTC:
        if (abbr) memcpy(abbr, "UTC", 4);
        return 0;
    case WEIR_TZ_FIXED:
        return tz->fixed;
    case WEIR_TZ_LOCAL: {
        time_t tt = (time_t)t;
        struct tm tm;
        if (!localtime_r(&tt, &tm)) return 0;
        if (abbr && tm.tm_zone) snprintf(abbr, WEIR_TZ_ABBR_MAX, "%s", tm.tm_zone);
        long off = tm.tm_gmtoff;
        if (off < -WEIR_TZ_MAX_OFFSET || off > WEIR_TZ_MAX_OFFSET) off = 0;
        return (int32_t)off;
    }
    case WEIR_TZ_NAMED:
        return tzdata_offset(tz->data, t);
    }
    return 0;
}
