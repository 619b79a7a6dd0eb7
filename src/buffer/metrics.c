/* Metrics and monitor_agent status. The counters of the output's metrics handle are updated per
 * chunk (write, written, failed) where those happen; the gauges here (sizes, lengths, ages,
 * time buckets) are computed when scraped, by walking the chunk lists (few entries, see
 * chunk.c). `failing_since` is the wall-clock time of the first failed write with no
 * successful one since; the health check reads it. */
#include "buffer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t list_bytes(const chunk_list_t *l)
{
    uint64_t n = 0;
    for (const weir_chunk_t *c = l->head; c; c = c->next)
        n += c->bytes;
    return n;
}

/* A failure counts only while something is still waiting to be delivered: once the failing
 * chunks were given up (backup) nothing is failing any more. */
static double failing_since(const weir_buffer_t *b)
{
    return b->queue.n ? b->failing_since : 0;
}

static double oldest_chunk_age(const weir_buffer_t *b)
{
    int64_t oldest = 0;
    const chunk_list_t *lists[] = {&b->staged, &b->queue};
    for (size_t i = 0; i < 2; i++)
        for (const weir_chunk_t *c = lists[i]->head; c; c = c->next)
            if (!oldest || c->meta.created < oldest) oldest = c->meta.created;
    if (!oldest) return 0;
    double age = buf_wall_now() - (double)oldest;
    return age > 0 ? age : 0;
}

/* The time buckets held now, distinct and ascending, at most `max`. */
static size_t collect_timekeys(const weir_buffer_t *b, int64_t *out, size_t max)
{
    size_t n = 0;
    const chunk_list_t *lists[] = {&b->staged, &b->queue};
    for (size_t i = 0; i < 2 && b->key_time; i++) {
        for (const weir_chunk_t *c = lists[i]->head; c; c = c->next) {
            size_t j = 0;
            while (j < n && out[j] < c->meta.timekey)
                j++;
            if (j < n && out[j] == c->meta.timekey) continue;
            if (n == max) {
                if (j == n) continue;
                n--; /* keep the oldest ones */
            }
            memmove(out + j + 1, out + j, (n - j) * sizeof *out);
            out[j] = c->meta.timekey;
            n++;
        }
    }
    return n;
}

static double g_total_bytes(void *arg)
{
    return (double)((weir_buffer_t *)arg)->bytes_total;
}

static double g_stage_length(void *arg)
{
    return (double)((weir_buffer_t *)arg)->staged.n;
}

static double g_stage_bytes(void *arg)
{
    return (double)list_bytes(&((weir_buffer_t *)arg)->staged);
}

static double g_queue_length(void *arg)
{
    return (double)((weir_buffer_t *)arg)->queue.n;
}

static double g_queue_bytes(void *arg)
{
    return (double)list_bytes(&((weir_buffer_t *)arg)->queue);
}

static double g_space_ratio(void *arg)
{
    weir_buffer_t *b = arg;
    double used = (double)b->bytes_total / (double)b->total_limit_size;
    return used >= 1 ? 0 : 100.0 * (1 - used);
}

static double g_oldest_timekey(void *arg)
{
    int64_t tk[WEIR_STATUS_MAX_TIMEKEYS];
    return collect_timekeys(arg, tk, WEIR_STATUS_MAX_TIMEKEYS) ? (double)tk[0] : NAN;
}

static double g_newest_timekey(void *arg)
{
    weir_buffer_t *b = arg;
    double newest = NAN;
    const chunk_list_t *lists[] = {&b->staged, &b->queue};
    for (size_t i = 0; i < 2 && b->key_time; i++)
        for (const weir_chunk_t *c = lists[i]->head; c; c = c->next)
            if (isnan(newest) || (double)c->meta.timekey > newest) newest = (double)c->meta.timekey;
    return newest;
}

static double g_oldest_age(void *arg)
{
    return oldest_chunk_age(arg);
}

static double g_failing(void *arg)
{
    double since = failing_since(arg);
    return since ? buf_wall_now() - since : 0;
}

static double g_last_success(void *arg)
{
    return ((weir_buffer_t *)arg)->last_success_time;
}

static double g_last_error(void *arg)
{
    return ((weir_buffer_t *)arg)->last_error_time;
}

static double g_full(void *arg)
{
    weir_buffer_t *b = arg;
    return b->disk_full || b->bytes_total >= b->total_limit_size ? 1 : 0;
}

/* The chunk that has waited longest for a retry, for monitor_agent's "retry". */
static void retry_info(const weir_buffer_t *b, weir_output_status_t *st)
{
    const weir_chunk_t *worst = NULL;
    for (const weir_chunk_t *c = b->queue.head; c; c = c->next)
        if (c->steps && (!worst || c->first_failure < worst->first_failure)) worst = c;
    if (!worst) return;
    st->retry_steps = worst->steps;
    st->retry_start = worst->first_failure;
    double wait = worst->next_try - buf_mono_now();
    st->retry_next = buf_wall_now() + (wait > 0 ? wait : 0);
}

static void buffer_status(void *arg, weir_output_status_t *st)
{
    weir_buffer_t *b = arg;
    st->has_buffer = true;
    st->total_bytes = b->bytes_total;
    st->total_limit_size = b->total_limit_size;
    st->stage_length = b->staged.n;
    st->stage_bytes = list_bytes(&b->staged);
    st->queue_length = b->queue.n;
    st->queue_bytes = list_bytes(&b->queue);
    st->oldest_chunk_age = oldest_chunk_age(b);
    st->ntimekeys = collect_timekeys(b, st->timekeys, WEIR_STATUS_MAX_TIMEKEYS);
    st->disk_full = b->disk_full;
    st->failing_since = failing_since(b);
    snprintf(st->last_error, sizeof st->last_error, "%s", b->last_error);
    st->last_error_time = b->last_error_time;
    retry_info(b, st);
}

/* Registers the buffer's gauges under the output's labels (owner: the buffer, so that freeing
 * the buffer removes them) and its status callback. */
void buf_register_metrics(weir_buffer_t *b, weir_plugin_metrics_t *pm)
{
    static const struct {
        const char *name, *help;
        weir_gauge_fn fn;
    } gauges[] = {
        {"fluentd_output_status_buffer_total_bytes", "Bytes in the buffer (staged and queued).",
         g_total_bytes},
        {"fluentd_output_status_buffer_stage_length", "Chunks being filled.", g_stage_length},
        {"fluentd_output_status_buffer_stage_byte_size", "Bytes in chunks being filled.",
         g_stage_bytes},
        {"fluentd_output_status_buffer_queue_length",
         "Chunks waiting to be delivered or being delivered.", g_queue_length},
        {"fluentd_output_status_buffer_queue_byte_size", "Bytes in queued chunks.", g_queue_bytes},
        {"fluentd_output_status_buffer_available_space_ratio",
         "Free part of total_limit_size, in percent.", g_space_ratio},
        {"fluentd_output_status_buffer_oldest_timekey", "Oldest time bucket in the buffer.",
         g_oldest_timekey},
        {"fluentd_output_status_buffer_newest_timekey", "Newest time bucket in the buffer.",
         g_newest_timekey},
        {"weir_output_buffer_oldest_chunk_age_seconds",
         "Age of the oldest chunk not yet delivered; 0 when the buffer is empty.", g_oldest_age},
        {"weir_output_failing_seconds",
         "How long every chunk write has failed, with chunks still waiting; 0 when delivering.",
         g_failing},
        {"weir_output_last_success_timestamp_seconds",
         "When a chunk was last delivered, seconds since the Unix epoch; 0 before the first.",
         g_last_success},
        {"weir_output_last_error_timestamp_seconds",
         "When a chunk write last failed, seconds since the Unix epoch; 0 before the first.",
         g_last_error},
        {"weir_output_buffer_full",
         "1 while the buffer refuses events (total_limit_size reached or disk full), else 0.",
         g_full},
    };
    if (!pm) return;
    b->pm = pm;
    weir_metrics_t *m = weir_plugin_metrics_registry(pm);
    const char *const *labels = weir_plugin_metrics_labels(pm);
    for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++)
        weir_metrics_gauge_fn(m, b, gauges[i].name, gauges[i].help, labels, gauges[i].fn, b);
    weir_plugin_metrics_set_status(pm, buffer_status, b);
}
