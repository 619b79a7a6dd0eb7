/* Fluentd-style log lines on stderr. One fputs per line under a lock, so lines from worker
 * threads never interleave. */
#include "weir/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static weir_log_level_t g_level = WEIR_LOG_INFO;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

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

void weir_log(weir_log_level_t level, const char *fmt, ...)
{
    if (level < g_level) return;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S %z", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, " [%s]: ", level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    n += (size_t)m;
    if (n > sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    line[n] = '\0';
    pthread_mutex_lock(&g_lock);
    fputs(line, stderr);
    pthread_mutex_unlock(&g_lock);
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
