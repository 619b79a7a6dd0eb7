/* Fluentd-style log lines on stderr, as text or as one JSON object per line. One fputs per
 * line under a lock, so lines from worker threads never interleave, and one line per message in
 * either format: what a message quotes from the network is escaped, never written raw. A message is
 * formatted on the stack when it fits (the common case) and on the heap up to WEIR_LOG_MAX_MESSAGE.
 */
#include "weir/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "weir/common.h"

#define LOG_STACK_MESSAGE 2048 /* messages up to this size need no allocation */
#define LOG_DEFAULT_TIME_FORMAT "%Y-%m-%d %H:%M:%S %z"

static weir_log_level_t g_level = WEIR_LOG_INFO;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static weir_log_format_t g_format = WEIR_LOG_FORMAT_TEXT;
static char g_time_format[WEIR_LOG_TIME_FORMAT_MAX + 1] = LOG_DEFAULT_TIME_FORMAT;

static const char *const level_names[] = {"trace", "debug", "info", "warn", "error", "fatal"};

void weir_log_set_level(weir_log_level_t level)
{
    g_level = level;
}

weir_log_level_t weir_log_get_level(void)
{
    return g_level;
}

bool weir_log_enabled(weir_log_level_t level)
{
    return level >= g_level;
}

int weir_log_level_parse(const char *name)
{
    for (int i = 0; i <= WEIR_LOG_FATAL; i++)
        if (strcasecmp(name, level_names[i]) == 0) return i;
    return -1;
}

const char *weir_log_level_name(weir_log_level_t level)
{
    return level_names[level];
}

void weir_log_set_format(weir_log_format_t format)
{
    g_format = format;
}

weir_log_format_t weir_log_get_format(void)
{
    return g_format;
}

/* Expands %L and %[digits]N (Ruby's fractions of a second, which strftime lacks) into `out`,
 * leaving every other conversion for strftime. */
static void expand_fraction(const char *fmt, long nsec, char *out, size_t outlen)
{
    size_t o = 0;
    for (const char *p = fmt; *p && o + 12 < outlen; p++) {
        if (p[0] != '%' || !p[1]) {
            out[o++] = *p;
            continue;
        }
        int digits = 9;
        const char *q = p + 1;
        if (*q >= '1' && *q <= '9' && q[1] == 'N') digits = *q++ - '0';
        if (*q == 'L' || *q == 'N') {
            if (*q == 'L') digits = 3;
            long v = nsec;
            for (int i = digits; i < 9; i++)
                v /= 10;
            o += (size_t)snprintf(out + o, outlen - o, "%0*ld", digits, v);
            p = q;
            continue;
        }
        out[o++] = '%';
        out[o++] = p[1]; /* "%%" stays one conversion */
        p++;
    }
    out[o] = '\0';
}

static size_t format_time(const char *tfmt, char *out, size_t outlen)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    char fmt[2 * WEIR_LOG_TIME_FORMAT_MAX + 16];
    expand_fraction(tfmt, ts.tv_nsec, fmt, sizeof fmt);
    return strftime(out, outlen, fmt, &tm);
}

int weir_log_set_time_format(const char *fmt)
{
    if (!fmt) fmt = LOG_DEFAULT_TIME_FORMAT;
    if (strlen(fmt) > WEIR_LOG_TIME_FORMAT_MAX) return -1;
    char probe[256];
    if (format_time(fmt, probe, sizeof probe) == 0) return -1;
    pthread_mutex_lock(&g_lock);
    snprintf(g_time_format, sizeof g_time_format, "%s", fmt);
    pthread_mutex_unlock(&g_lock);
    return 0;
}

/* JSON string content: quote, backslash and control characters (C1 too, which a terminal
 * showing the log may obey) escaped; bytes that are not UTF-8 become U+FFFD so that every line
 * parses. */
static void json_escape(FILE *f, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
        } else {
            size_t len = weir_utf8_seq(p, (size_t)(end - p));
            if (len == 0) {
                fputs("\\ufffd", f);
                len = 1;
            } else if (c == 0xc2 && p[1] < 0xa0) {
                fprintf(f, "\\u%04x", p[1]); /* C1 control: 0xc2 0x80..0x9f */
            } else {
                fwrite(p, 1, len, f);
            }
            p += len;
            continue;
        }
        p++;
    }
}

/* A text line is one line on a terminal whatever a sender put in a tag or a record: messages
 * quote such values, so a newline could forge a line ("...\n2026-01-01 00:00:00 +0000 [error]:
 * ...") and an escape sequence could rewrite what a terminal shows. Every C0 and C1 control
 * character but tab is written as an escape (\n, \r, \xNN, \uNNNN for C1), and every byte that
 * does not begin well-formed UTF-8 as \xNN, so the byte stays visible to whoever audits the
 * log. A backslash is not doubled: messages quote paths and patterns that users compare with
 * their files, at the cost that "\n" in a line may also be those two characters. */
static void text_escape(FILE *f, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned char c = *p;
        size_t len = weir_utf8_seq(p, (size_t)(end - p));
        if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if ((c < 0x20 && c != '\t') || c == 0x7f || len == 0) {
            fprintf(f, "\\x%02x", c);
            len = 1;
        } else if (c == 0xc2 && len == 2 && p[1] < 0xa0) {
            fprintf(f, "\\u%04x", p[1]); /* C1 control: 0xc2 0x80..0x9f */
        } else {
            fwrite(p, 1, len, f);
        }
        p += len;
    }
}

/* Builds the whole line in memory (open_memstream) so it reaches stderr in one fputs. */
static void emit_line(weir_log_level_t level, const char *msg, size_t len)
{
    char *line = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&line, &n);
    if (!f) return;
    char tbuf[256];
    pthread_mutex_lock(&g_lock);
    size_t tl = format_time(g_time_format, tbuf, sizeof tbuf);
    weir_log_format_t format = g_format;
    pthread_mutex_unlock(&g_lock);
    if (format == WEIR_LOG_FORMAT_JSON) {
        fputs("{\"time\":\"", f);
        json_escape(f, tbuf, tl);
        fprintf(f, "\",\"level\":\"%s\",\"message\":\"", level_names[level]);
        json_escape(f, msg, len);
        fputs("\"}\n", f);
    } else {
        fwrite(tbuf, 1, tl, f);
        fprintf(f, " [%s]: ", level_names[level]);
        text_escape(f, msg, len);
        fputc('\n', f);
    }
    fclose(f);
    pthread_mutex_lock(&g_lock);
    fputs(line, stderr);
    pthread_mutex_unlock(&g_lock);
    free(line);
}

void weir_log(weir_log_level_t level, const char *fmt, ...)
{
    if (level < g_level) return;
    char stack[LOG_STACK_MESSAGE];
    char *msg = stack;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(stack, sizeof stack, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    if ((size_t)m >= sizeof stack) {
        size_t cap = (size_t)m < WEIR_LOG_MAX_MESSAGE ? (size_t)m + 1 : WEIR_LOG_MAX_MESSAGE;
        msg = malloc(cap);
        if (msg) {
            va_start(ap, fmt);
            vsnprintf(msg, cap, fmt, ap);
            va_end(ap);
            m = (int)cap - 1;
        } else {
            msg = stack;
            m = sizeof stack - 1;
        }
    }
    emit_line(level, msg, (size_t)m);
    if (msg != stack) free(msg);
}

static unsigned long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000 + (unsigned long long)ts.tv_nsec / 1000000;
}

bool weir_ratelimit_ok(weir_ratelimit_t *rl, unsigned long *suppressed)
{
    unsigned long long t = now_ms();
    if (rl->last_ms != 0 && t - rl->last_ms < rl->interval_ms) {
        rl->suppressed++;
        return false;
    }
    rl->last_ms = t;
    if (suppressed) *suppressed = rl->suppressed;
    rl->suppressed = 0;
    return true;
}
