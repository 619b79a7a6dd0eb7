/* strftime as Ruby's Time#strftime prints it, plus Fluentd's ISO-8601 default.
 *
 * A format is compiled once into a list of ops (literal runs and directives). Rendering keeps
 * the text of the last second seen: every op except the subsecond ones (%N, %L) depends only on
 * the whole second, so for a new second the ops are rendered into `cache`, recording where each
 * subsecond op goes, and each event then costs a copy plus its subsecond digits. Invariant: when
 * cache_sec is valid, `cache` holds exactly the rendering of that second with the subsecond ops
 * left out, and each subsecond op's `pos` is its offset in it. */
#include "weir/format.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format_internal.h"

enum tf_kind {
    OP_LIT,
    OP_YEAR,       /* Y */
    OP_CENTURY,    /* C */
    OP_YEAR2,      /* y */
    OP_MONTH,      /* m */
    OP_MONTH_FULL, /* B */
    OP_MONTH_ABBR, /* b h */
    OP_MDAY,       /* d e */
    OP_YDAY,       /* j */
    OP_HOUR,       /* H k */
    OP_HOUR12,     /* I l */
    OP_AMPM,       /* p P */
    OP_MIN,        /* M */
    OP_SEC,        /* S */
    OP_SUBSEC,     /* L N: `width` digits */
    OP_ZONE,       /* z with `colons` */
    OP_ZONE_NAME,  /* Z */
    OP_WDAY_FULL,  /* A */
    OP_WDAY_ABBR,  /* a */
    OP_WDAY_1_7,   /* u */
    OP_WDAY_0_6,   /* w */
    OP_WEEK_SUN,   /* U */
    OP_WEEK_MON,   /* W */
    OP_ISO_YEAR,   /* G */
    OP_ISO_YEAR2,  /* g */
    OP_ISO_WEEK,   /* V */
    OP_EPOCH,      /* s */
    OP_ISO_ZONE,   /* Time#iso8601's zone: "Z" in UTC, else +hh:mm */
};

struct weir_timefmt_op {
    enum tf_kind kind;
    char pad;            /* '0', ' ', or '-' for none */
    int width;           /* minimum width (digits for OP_SUBSEC) */
    bool upper;          /* ^, or # on names */
    bool lower;          /* # on %p and %Z */
    int colons;          /* %z, %:z, %::z */
    size_t lit, lit_len; /* OP_LIT: text in tf->lits */
    size_t pos;          /* OP_SUBSEC: offset in the cache */
};

typedef struct tf_compiler {
    struct weir_timefmt_op *ops;
    size_t nops, cap;
    weir_buf_t lits;
    const char *format;
    weir_err_t *err;
} tf_compiler_t;

static struct weir_timefmt_op *tf_push(tf_compiler_t *c, enum tf_kind kind)
{
    if (c->nops == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->ops = weir_realloc(c->ops, c->cap * sizeof *c->ops);
    }
    struct weir_timefmt_op *op = &c->ops[c->nops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    return op;
}

static void tf_lit(tf_compiler_t *c, const char *s, size_t n)
{
    if (n == 0) return;
    struct weir_timefmt_op *last = c->nops ? &c->ops[c->nops - 1] : NULL;
    if (last && last->kind == OP_LIT && last->lit + last->lit_len == c->lits.len) {
        last->lit_len += n; /* merge with the literal just before */
    } else {
        struct weir_timefmt_op *op = tf_push(c, OP_LIT);
        op->lit = c->lits.len;
        op->lit_len = n;
    }
    weir_buf_append(&c->lits, s, n);
}

/* Numeric directives: op kind, default width, default pad. */
typedef struct tf_num_spec {
    char conv;
    enum tf_kind kind;
    int width;
    char pad;
} tf_num_spec_t;

static const tf_num_spec_t tf_nums[] = {
    {'Y', OP_YEAR, 4, '0'},      {'C', OP_CENTURY, 2, '0'},  {'y', OP_YEAR2, 2, '0'},
    {'m', OP_MONTH, 2, '0'},     {'d', OP_MDAY, 2, '0'},     {'e', OP_MDAY, 2, ' '},
    {'j', OP_YDAY, 3, '0'},      {'H', OP_HOUR, 2, '0'},     {'k', OP_HOUR, 2, ' '},
    {'I', OP_HOUR12, 2, '0'},    {'l', OP_HOUR12, 2, ' '},   {'M', OP_MIN, 2, '0'},
    {'S', OP_SEC, 2, '0'},       {'u', OP_WDAY_1_7, 1, '0'}, {'w', OP_WDAY_0_6, 1, '0'},
    {'U', OP_WEEK_SUN, 2, '0'},  {'W', OP_WEEK_MON, 2, '0'}, {'G', OP_ISO_YEAR, 4, '0'},
    {'g', OP_ISO_YEAR2, 2, '0'}, {'V', OP_ISO_WEEK, 2, '0'}, {'s', OP_EPOCH, 1, '0'},
};

/* Name directives (space padded). */
typedef struct tf_name_spec {
    char conv;
    enum tf_kind kind;
} tf_name_spec_t;

static const tf_name_spec_t tf_names[] = {
    {'A', OP_WDAY_FULL},  {'a', OP_WDAY_ABBR}, {'B', OP_MONTH_FULL}, {'b', OP_MONTH_ABBR},
    {'h', OP_MONTH_ABBR}, {'p', OP_AMPM},      {'P', OP_AMPM},       {'Z', OP_ZONE_NAME},
};

static const struct {
    char conv;
    const char *expansion;
} tf_composites[] = {
    {'c', "%a %b %e %H:%M:%S %Y"},
    {'D', "%m/%d/%y"},
    {'x', "%m/%d/%y"},
    {'F', "%Y-%m-%d"},
    {'T', "%H:%M:%S"},
    {'X', "%H:%M:%S"},
    {'R', "%H:%M"},
    {'r', "%I:%M:%S %p"},
    {'v', "%e-%^b-%4Y"},
    {'+', "%a %b %e %H:%M:%S %Z %Y"},
};

static int tf_compile(tf_compiler_t *c, const char *f);

/* Compiles the directive whose conversion character is *p; `start` is its '%'. Returns the
 * position after it, or NULL on error. */
static const char *tf_directive(tf_compiler_t *c, const char *start, const char *p, char flag,
                                bool upper, bool swap, int colons, int width)
{
    char conv = *p;
    for (size_t i = 0; i < sizeof tf_nums / sizeof tf_nums[0]; i++) {
        if (tf_nums[i].conv != conv) continue;
        struct weir_timefmt_op *op = tf_push(c, tf_nums[i].kind);
        op->width = width >= 0 ? width : tf_nums[i].width;
        op->pad = flag == '-' ? '-' : flag == '_' ? ' ' : flag == '0' ? '0' : tf_nums[i].pad;
        return p + 1;
    }
    for (size_t i = 0; i < sizeof tf_names / sizeof tf_names[0]; i++) {
        if (tf_names[i].conv != conv) continue;
        struct weir_timefmt_op *op = tf_push(c, tf_names[i].kind);
        op->width = width >= 0 ? width : 0;
        op->pad = flag == '0' ? '0' : ' ';
        /* %P is %p in lower case; # lowers %p and %Z and raises the others */
        op->lower = conv == 'P' || (swap && (conv == 'p' || conv == 'Z'));
        op->upper = upper || (swap && !op->lower);
        if (op->upper) op->lower = false;
        return p + 1;
    }
    for (size_t i = 0; i < sizeof tf_composites / sizeof tf_composites[0]; i++) {
        if (tf_composites[i].conv != conv) continue;
        return tf_compile(c, tf_composites[i].expansion) < 0 ? NULL : p + 1;
    }
    struct weir_timefmt_op *op;
    switch (conv) {
    case 'L':
    case 'N':
        op = tf_push(c, OP_SUBSEC);
        op->width = width > 0 ? width : conv == 'L' ? 3 : 9;
        return p + 1;
    case 'z':
        op = tf_push(c, OP_ZONE);
        op->colons = colons;
        return p + 1;
    case 'n':
        tf_lit(c, "\n", 1);
        return p + 1;
    case 't':
        tf_lit(c, "\t", 1);
        return p + 1;
    case '%':
        tf_lit(c, "%", 1);
        return p + 1;
    }
    /* unknown: printed as written, as Ruby does (a lone trailing '%' included) */
    const char *end = *p ? p + 1 : p;
    tf_lit(c, start, (size_t)(end - start));
    return end;
}

static int tf_compile(tf_compiler_t *c, const char *f)
{
    const char *p = f;
    while (*p) {
        const char *pct = strchr(p, '%');
        if (!pct) {
            tf_lit(c, p, strlen(p));
            break;
        }
        tf_lit(c, p, (size_t)(pct - p));
        const char *q = pct + 1;
        char flag = 0;
        bool upper = false, swap = false;
        int colons = 0;
        for (;; q++) {
            if (*q == '-' || *q == '_' || *q == '0')
                flag = *q;
            else if (*q == '^')
                upper = true;
            else if (*q == '#')
                swap = true;
            else if (*q == ':')
                colons++;
            else
                break;
        }
        int width = -1;
        if (isdigit((unsigned char)*q)) {
            width = 0;
            while (isdigit((unsigned char)*q)) {
                width = width * 10 + (*q++ - '0');
                if (width > WEIR_TIMEFMT_MAX_WIDTH) {
                    weir_err_set(c->err, "time_format '%s': a width larger than %d at '%.*s...'",
                                 c->format, WEIR_TIMEFMT_MAX_WIDTH, (int)(q - pct), pct);
                    return -1;
                }
            }
        }
        p = tf_directive(c, pct, q, flag, upper, swap, colons, width);
        if (!p) return -1;
    }
    return 0;
}

int weir_timefmt_init(weir_timefmt_t *tf, const char *format, bool localtime, const char *zone,
                      weir_err_t *err)
{
    memset(tf, 0, sizeof *tf);
    tf->cache_sec = -1;
    weir_buf_init(&tf->cache);
    if (weir_tz_init(&tf->tz, zone, localtime, err) < 0) return -1;
    tf_compiler_t c = {.format = format ? format : "", .err = err};
    weir_buf_init(&c.lits);
    if (format) {
        if (tf_compile(&c, format) < 0) goto err;
    } else {
        /* Time#iso8601: seconds only, "Z" for a UTC time and the offset otherwise */
        tf_compile(&c, "%Y-%m-%dT%H:%M:%S");
        tf_push(&c, OP_ISO_ZONE);
    }
    tf->ops = c.ops;
    tf->nops = c.nops;
    tf->lits = c.lits.data;
    for (size_t i = 0; i < tf->nops; i++)
        if (tf->ops[i].kind == OP_SUBSEC) tf->has_subsec = true;
    return 0;
err:
    free(c.ops);
    weir_buf_free(&c.lits);
    weir_tz_free(&tf->tz);
    return -1;
}

void weir_timefmt_free(weir_timefmt_t *tf)
{
    weir_tz_free(&tf->tz);
    free(tf->ops);
    free(tf->lits);
    weir_buf_free(&tf->cache);
    tf->ops = NULL;
    tf->lits = NULL;
    tf->nops = 0;
}

/* ---- rendering ---- */

typedef struct tf_tm {
    int64_t epoch, year;
    int mon, mday, yday, wday, hour, min, sec; /* mon 1-12, yday 0-365, wday 0 = Sunday */
    int32_t off;
    char abbr[WEIR_TZ_ABBR_MAX];
} tf_tm_t;

static void tf_breakdown(weir_timefmt_t *tf, int64_t t, tf_tm_t *tm)
{
    tm->epoch = t;
    tm->off = weir_tz_offset(&tf->tz, t, tm->abbr);
    int64_t local = t + tm->off;
    int64_t days = weir_floordiv(local, 86400);
    int sod = (int)(local - days * 86400);
    unsigned m, d;
    weir_civil_from_days(days, &tm->year, &m, &d);
    tm->mon = (int)m;
    tm->mday = (int)d;
    tm->yday = (int)(days - weir_days_from_civil(tm->year, 1, 1));
    tm->wday = (int)weir_floormod(days + 4, 7); /* 1970-01-01 was a Thursday */
    tm->hour = sod / 3600;
    tm->min = sod / 60 % 60;
    tm->sec = sod % 60;
}

static void put_num(weir_buf_t *out, int64_t v, int width, char pad)
{
    char tmp[24];
    bool neg = v < 0;
    uint64_t u = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int n = 0;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    int len = n + neg;
    if (pad == '-') width = 0;
    weir_buf_reserve(out, (size_t)(width > len ? width : len));
    char *w = out->data + out->len;
    if (pad == '0' && neg) *w++ = '-'; /* zeros go after the sign */
    for (int i = len; i < width; i++)
        *w++ = pad == '0' ? '0' : ' ';
    if (pad != '0' && neg) *w++ = '-';
    while (n)
        *w++ = tmp[--n];
    out->len = (size_t)(w - out->data);
}

static void put_name(weir_buf_t *out, const struct weir_timefmt_op *op, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = n; i < (size_t)op->width; i++)
        weir_buf_putc(out, op->pad);
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (op->upper) ch = (char)toupper((unsigned char)ch);
        if (op->lower) ch = (char)tolower((unsigned char)ch);
        weir_buf_putc(out, ch);
    }
}

static void put_offset(weir_buf_t *out, int32_t off, int colons)
{
    char sign = off < 0 ? '-' : '+';
    int32_t a = off < 0 ? -off : off;
    int h = a / 3600, m = a / 60 % 60, s = a % 60;
    if (colons == 0)
        weir_buf_printf(out, "%c%02d%02d", sign, h, m);
    else if (colons == 1)
        weir_buf_printf(out, "%c%02d:%02d", sign, h, m);
    else
        weir_buf_printf(out, "%c%02d:%02d:%02d", sign, h, m, s);
}

/* ISO 8601 week-numbering: weeks start on Monday; week 1 holds the year's first Thursday. */
static int iso_weeks_in_year(int64_t y)
{
    int64_t p = weir_floormod(y + y / 4 - y / 100 + y / 400, 7);
    int64_t q = weir_floormod((y - 1) + (y - 1) / 4 - (y - 1) / 100 + (y - 1) / 400, 7);
    return (p == 4 || q == 3) ? 53 : 52;
}

static void iso_week(const tf_tm_t *tm, int64_t *year, int *week)
{
    int wd = (tm->wday + 6) % 7; /* Monday = 0 */
    int w = (tm->yday - wd + 10) / 7;
    int64_t y = tm->year;
    if (w < 1) {
        y--;
        w = iso_weeks_in_year(y);
    } else if (w > iso_weeks_in_year(y)) {
        y++;
        w = 1;
    }
    *year = y;
    *week = w;
}

static const char *const month_names[12] = {"January",   "February", "March",    "April",
                                            "May",       "June",     "July",     "August",
                                            "September", "October",  "November", "December"};
static const char *const wday_names[7] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                          "Thursday", "Friday", "Saturday"};

static void put_abbr(weir_buf_t *out, const struct weir_timefmt_op *op, const char *full)
{
    char a[4] = {full[0], full[1], full[2], '\0'};
    put_name(out, op, a);
}

static void tf_render_op(weir_timefmt_t *tf, const struct weir_timefmt_op *op, const tf_tm_t *tm,
                         weir_buf_t *out)
{
    int64_t iy;
    int iw;
    switch (op->kind) {
    case OP_LIT:
        weir_buf_append(out, tf->lits + op->lit, op->lit_len);
        break;
    case OP_YEAR:
        put_num(out, tm->year, op->width, op->pad);
        break;
    case OP_CENTURY:
        put_num(out, weir_floordiv(tm->year, 100), op->width, op->pad);
        break;
    case OP_YEAR2:
        put_num(out, weir_floormod(tm->year, 100), op->width, op->pad);
        break;
    case OP_MONTH:
        put_num(out, tm->mon, op->width, op->pad);
        break;
    case OP_MONTH_FULL:
        put_name(out, op, month_names[tm->mon - 1]);
        break;
    case OP_MONTH_ABBR:
        put_abbr(out, op, month_names[tm->mon - 1]);
        break;
    case OP_MDAY:
        put_num(out, tm->mday, op->width, op->pad);
        break;
    case OP_YDAY:
        put_num(out, tm->yday + 1, op->width, op->pad);
        break;
    case OP_HOUR:
        put_num(out, tm->hour, op->width, op->pad);
        break;
    case OP_HOUR12:
        put_num(out, tm->hour % 12 == 0 ? 12 : tm->hour % 12, op->width, op->pad);
        break;
    case OP_AMPM:
        put_name(out, op, tm->hour < 12 ? "AM" : "PM");
        break;
    case OP_MIN:
        put_num(out, tm->min, op->width, op->pad);
        break;
    case OP_SEC:
        put_num(out, tm->sec, op->width, op->pad);
        break;
    case OP_ZONE:
        put_offset(out, tm->off, op->colons);
        break;
    case OP_ZONE_NAME:
        put_name(out, op, tm->abbr);
        break;
    case OP_WDAY_FULL:
        put_name(out, op, wday_names[tm->wday]);
        break;
    case OP_WDAY_ABBR:
        put_abbr(out, op, wday_names[tm->wday]);
        break;
    case OP_WDAY_1_7:
        put_num(out, tm->wday == 0 ? 7 : tm->wday, op->width, op->pad);
        break;
    case OP_WDAY_0_6:
        put_num(out, tm->wday, op->width, op->pad);
        break;
    case OP_WEEK_SUN:
        put_num(out, (tm->yday + 7 - tm->wday) / 7, op->width, op->pad);
        break;
    case OP_WEEK_MON:
        put_num(out, (tm->yday + 7 - (tm->wday + 6) % 7) / 7, op->width, op->pad);
        break;
    case OP_ISO_YEAR:
        iso_week(tm, &iy, &iw);
        put_num(out, iy, op->width, op->pad);
        break;
    case OP_ISO_YEAR2:
        iso_week(tm, &iy, &iw);
        put_num(out, weir_floormod(iy, 100), op->width, op->pad);
        break;
    case OP_ISO_WEEK:
        iso_week(tm, &iy, &iw);
        put_num(out, iw, op->width, op->pad);
        break;
    case OP_EPOCH:
        put_num(out, tm->epoch, op->width, op->pad);
        break;
    case OP_ISO_ZONE:
        if (tf->tz.kind == WEIR_TZ_UTC)
            weir_buf_putc(out, 'Z');
        else
            put_offset(out, tm->off, 1);
        break;
    case OP_SUBSEC:
        break; /* per event, see weir_timefmt_append */
    }
}

static void tf_fill_cache(weir_timefmt_t *tf, int64_t sec)
{
    tf_tm_t tm;
    tf_breakdown(tf, sec, &tm);
    tf->cache.len = 0;
    for (size_t i = 0; i < tf->nops; i++) {
        struct weir_timefmt_op *op = &tf->ops[i];
        if (op->kind == OP_SUBSEC)
            op->pos = tf->cache.len;
        else
            tf_render_op(tf, op, &tm, &tf->cache);
    }
    tf->cache_sec = sec;
}

/* `width` digits of the nanoseconds: truncated when fewer than 9, zero-filled when more. */
static void put_subsec(weir_buf_t *out, uint32_t nsec, int width)
{
    char nine[9];
    for (int i = 8; i >= 0; i--) {
        nine[i] = (char)('0' + nsec % 10);
        nsec /= 10;
    }
    weir_buf_reserve(out, (size_t)width);
    char *w = out->data + out->len;
    for (int i = 0; i < width; i++)
        w[i] = i < 9 ? nine[i] : '0';
    out->len += (size_t)width;
}

void weir_timefmt_append(weir_timefmt_t *tf, weir_time_t t, weir_buf_t *out)
{
    if ((int64_t)t.sec != tf->cache_sec) tf_fill_cache(tf, t.sec);
    if (!tf->has_subsec) {
        weir_buf_append(out, tf->cache.data, tf->cache.len);
        return;
    }
    size_t done = 0;
    for (size_t i = 0; i < tf->nops; i++) {
        const struct weir_timefmt_op *op = &tf->ops[i];
        if (op->kind != OP_SUBSEC) continue;
        weir_buf_append(out, tf->cache.data + done, op->pos - done);
        put_subsec(out, t.nsec > 999999999 ? 999999999 : t.nsec, op->width);
        done = op->pos;
    }
    weir_buf_append(out, tf->cache.data + done, tf->cache.len - done);
}
