/* Logging in Fluentd's style, to stderr:
 *   2024-05-09 21:00:40 +0000 [warn]: message
 * or, with <system><log> format json </log></system>, one JSON object per line:
 *   {"time":"2024-05-09 21:00:40 +0000","level":"warn","message":"message"}
 * The level comes from <system> log_level, -v and -q; the time format from <log> time_format.
 * A message is always one line: in text format control characters and bytes that are not UTF-8
 * are written as escapes (\n, \r, \xNN, \u0080..\u009f), in JSON format as JSON escapes, so a
 * tag or value quoted from the network can neither forge a line nor drive a terminal.
 * Never log a secret: configuration dumps mask them (see config.h). Safe to call from any
 * thread; the format setters are for start-up, before other threads log. */
#ifndef WEIR_LOG_H
#define WEIR_LOG_H

#include <stdbool.h>

typedef enum weir_log_level {
    WEIR_LOG_TRACE = 0,
    WEIR_LOG_DEBUG,
    WEIR_LOG_INFO,
    WEIR_LOG_WARN,
    WEIR_LOG_ERROR,
    WEIR_LOG_FATAL,
} weir_log_level_t;

void weir_log_set_level(weir_log_level_t level);
weir_log_level_t weir_log_get_level(void);
bool weir_log_enabled(weir_log_level_t level);
/* Parses "trace".."fatal"; returns -1 for anything else. */
int weir_log_level_parse(const char *name);
const char *weir_log_level_name(weir_log_level_t level);

typedef enum weir_log_format { WEIR_LOG_FORMAT_TEXT, WEIR_LOG_FORMAT_JSON } weir_log_format_t;
void weir_log_set_format(weir_log_format_t format);
weir_log_format_t weir_log_get_format(void);
/* A message longer than this is cut (a configuration dump fits). */
#define WEIR_LOG_MAX_MESSAGE (64 * 1024)
/* strftime(3) conversions plus Ruby's %L (milliseconds) and %N / %3N / %6N / %9N (fractions of
 * a second). NULL restores the default, "%Y-%m-%d %H:%M:%S %z". Returns -1 when the format is
 * longer than WEIR_LOG_TIME_FORMAT_MAX bytes or yields no text. */
#define WEIR_LOG_TIME_FORMAT_MAX 128
int weir_log_set_time_format(const char *fmt);

void weir_log(weir_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define weir_trace(...) weir_log(WEIR_LOG_TRACE, __VA_ARGS__)
#define weir_debug(...) weir_log(WEIR_LOG_DEBUG, __VA_ARGS__)
#define weir_info(...) weir_log(WEIR_LOG_INFO, __VA_ARGS__)
#define weir_warn(...) weir_log(WEIR_LOG_WARN, __VA_ARGS__)
#define weir_error(...) weir_log(WEIR_LOG_ERROR, __VA_ARGS__)

/* A rate limiter for warnings that bad input could otherwise turn into a flood: at most one line
 * per `interval_ms`, with the count of suppressed ones carried into the next line. */
/* The interval for warnings about what peers send (bad frames, dropped values, refused
 * connections): one line per 5 s at most, per source of warnings. */
#define WEIR_WARN_INTERVAL_MS 5000
typedef struct weir_ratelimit {
    unsigned interval_ms;
    unsigned long long last_ms;
    unsigned long suppressed;
} weir_ratelimit_t;

/* Returns true when a line may be written now; *suppressed receives the number skipped. */
bool weir_ratelimit_ok(weir_ratelimit_t *rl, unsigned long *suppressed);

#endif
