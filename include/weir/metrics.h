/* Metrics for operators: counters and gauges with Prometheus names and labels, rendered in the
 * Prometheus text exposition format (version 0.0.4) by `<source> @type prometheus`.
 *
 * A registry holds families (one name, one HELP text, one type) and each family holds series
 * (one set of label values). Plugins register their series at create or start time, under an
 * `owner` pointer of their choosing, and unregister them all at once with
 * weir_metrics_unregister(owner) (so a configuration reload can drop a plugin's series).
 * Registration takes a lock; updates do not: a counter or gauge is one relaxed C11 atomic, so
 * it may be updated from any thread, and hot paths update once per batch, never per event.
 *
 * Gauges whose value lives elsewhere (buffer sizes, ages) are computed at scrape time by a
 * callback. Callbacks run on the thread that renders (the loop thread, for the HTTP server),
 * under the registry lock: they must not register or unregister anything.
 *
 * Tagged counters carry one extra label, `tag`, whose values come from senders. They are
 * bounded: a series holds at most WEIR_METRICS_MAX_TAGS distinct tags (and none longer than
 * WEIR_METRICS_MAX_TAG_LEN bytes); every other tag is counted under tag="_other_". Teleport
 * names one tag per session, so without the bound the registry would grow without end.
 *
 * Every function accepts NULL handles and then does nothing, so code that runs without an
 * engine (unit tests, --dry-run) needs no special cases. A registration that fails (a bad
 * name, a type clash, a duplicate series) logs an error and returns NULL: metrics never stop
 * the data path.
 *
 * The plugin metrics handle (weir_plugin_metrics_t, further down) is what inputs, outputs and
 * the buffer use: the engine makes one per plugin, with the labels plugin_id and type, and
 * registers the families every input or output has; the helpers update them. */
#ifndef WEIR_METRICS_H
#define WEIR_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "weir/common.h"

#define WEIR_METRICS_MAX_TAGS 1000   /* distinct tag values per tagged series */
#define WEIR_METRICS_MAX_TAG_LEN 256 /* bytes; a longer tag counts under the other tag */
#define WEIR_METRICS_OTHER_TAG "_other_"
#define WEIR_METRICS_MAX_LABELS 8 /* fixed label pairs per series */
#define WEIR_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct weir_metrics weir_metrics_t;

typedef enum weir_metric_type {
    WEIR_METRIC_COUNTER,
    WEIR_METRIC_GAUGE,
    WEIR_METRIC_HISTOGRAM,
} weir_metric_type_t;

/* A histogram of durations with fixed buckets (WEIR_HISTOGRAM_BOUNDS, in seconds): one relaxed
 * atomic per bucket, so observing costs a search of 14 bounds and two atomic adds. */
#define WEIR_HISTOGRAM_BUCKETS 14
typedef struct weir_histogram {
    _Atomic uint64_t buckets[WEIR_HISTOGRAM_BUCKETS + 1]; /* the last is +Inf */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_ns;
} weir_histogram_t;
/* Upper bounds of the buckets, seconds: 0.1 ms to 10 s. */
extern const double weir_histogram_bounds[WEIR_HISTOGRAM_BUCKETS];

weir_histogram_t *weir_metrics_histogram(weir_metrics_t *m, const void *owner, const char *name,
                                         const char *help, const char *const *labels);
void weir_histogram_observe_ns(weir_histogram_t *h, uint64_t ns);

/* A counter only grows. */
typedef struct weir_counter {
    _Atomic uint64_t value;
} weir_counter_t;

/* A gauge set (or moved up and down) by its owner. */
typedef struct weir_gauge {
    _Atomic int64_t value;
} weir_gauge_t;

/* A counter with one value per tag (see the bound above). */
typedef struct weir_tag_counter weir_tag_counter_t;

/* A gauge computed at scrape time. Return NAN for "no value now": the sample is left out. */
typedef double (*weir_gauge_fn)(void *arg);

weir_metrics_t *weir_metrics_new(void);
/* Frees every family and series; handles into it become invalid. */
void weir_metrics_free(weir_metrics_t *m);

/* Registration. `name` matches [a-zA-Z_:][a-zA-Z0-9_:]*; `labels` is NULL or a NULL-terminated
 * list of name, value pairs ({"plugin_id", "in1", "type", "forward", NULL}); label names match
 * [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__". The first registration of a name fixes
 * the family's type and HELP text. */
weir_counter_t *weir_metrics_counter(weir_metrics_t *m, const void *owner, const char *name,
                                     const char *help, const char *const *labels);
weir_gauge_t *weir_metrics_gauge(weir_metrics_t *m, const void *owner, const char *name,
                                 const char *help, const char *const *labels);
/* Returns 0, or -1 (logged) when the series cannot be registered. */
int weir_metrics_gauge_fn(weir_metrics_t *m, const void *owner, const char *name, const char *help,
                          const char *const *labels, weir_gauge_fn fn, void *arg);
/* A counter family whose series carry `labels` plus tag="...". */
weir_tag_counter_t *weir_metrics_tag_counter(weir_metrics_t *m, const void *owner, const char *name,
                                             const char *help, const char *const *labels);

/* Drops every series registered under `owner`, and families left empty. The owner must have
 * stopped updating them (its worker threads joined): the handles are freed. */
void weir_metrics_unregister(weir_metrics_t *m, const void *owner);

/* Appends the whole registry in the text exposition format: per family a HELP and a TYPE line
 * and its samples; families without samples are left out. Label values are escaped (\\, \",
 * \n) and bytes that are not UTF-8 become U+FFFD. */
void weir_metrics_render(weir_metrics_t *m, weir_buf_t *out);

/* Updates: one relaxed atomic each; any thread. */
static inline void weir_counter_add(weir_counter_t *c, uint64_t n)
{
    if (c) atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}
static inline uint64_t weir_counter_get(const weir_counter_t *c)
{
    return c ? atomic_load_explicit(&c->value, memory_order_relaxed) : 0;
}
static inline void weir_gauge_set(weir_gauge_t *g, int64_t v)
{
    if (g) atomic_store_explicit(&g->value, v, memory_order_relaxed);
}
static inline void weir_gauge_add(weir_gauge_t *g, int64_t delta)
{
    if (g) atomic_fetch_add_explicit(&g->value, delta, memory_order_relaxed);
}
static inline int64_t weir_gauge_get(const weir_gauge_t *g)
{
    return g ? atomic_load_explicit(&g->value, memory_order_relaxed) : 0;
}
/* A hash lookup without a lock for a tag seen before; a new tag takes the series' lock once. */
void weir_tag_counter_add(weir_tag_counter_t *tc, const char *tag, uint64_t n);
/* The value counted for `tag` (WEIR_METRICS_OTHER_TAG for the overflow), 0 if none. */
uint64_t weir_tag_counter_get(const weir_tag_counter_t *tc, const char *tag);
/* The sum over every tag, the overflow included. */
uint64_t weir_tag_counter_sum(const weir_tag_counter_t *tc);

/* Registers the process's gauges under `owner`, with the names Prometheus client libraries use:
 * process_start_time_seconds, process_resident_memory_bytes, process_open_fds and
 * process_max_fds, read from /proc when scraped (left out where /proc cannot be read). The
 * engine registers them once. */
void weir_metrics_process(weir_metrics_t *m, const void *owner);

/* ---- per-plugin metrics ------------------------------------------------------------------ */

typedef struct weir_plugin_metrics weir_plugin_metrics_t;

/* What an output reports about itself, for monitor_agent and the health check. The buffer
 * fills the buffer part through the status callback; the counters come from the handle. */
#define WEIR_STATUS_MAX_TIMEKEYS 64
typedef struct weir_output_status {
    bool has_buffer;
    uint64_t total_bytes, total_limit_size;
    uint64_t stage_length, stage_bytes, queue_length, queue_bytes;
    double oldest_chunk_age; /* seconds since the oldest undelivered chunk was created */
    int64_t timekeys[WEIR_STATUS_MAX_TIMEKEYS]; /* distinct, ascending; the first ones only */
    size_t ntimekeys;
    bool disk_full;
    double failing_since; /* wall clock of the first failed write with no success since; 0 */
    unsigned retry_steps; /* of the chunk retried longest; 0 = nothing waits for a retry */
    double retry_start, retry_next; /* wall clock */
    char last_error[256];           /* the reason the last failed write logged; "" = none yet */
    double last_error_time;         /* wall clock of that failure; 0 = none yet */
    /* counters */
    uint64_t emit_records, emit_count, write_count, num_errors, retry_count;
    uint64_t delivered_records, delivered_chunks, backup_chunks;
} weir_output_status_t;
typedef void (*weir_output_status_fn)(void *arg, weir_output_status_t *st);

/* Made by the engine for each plugin; `category` is "input" or "output". Registers, with the
 * labels plugin_id and type:
 *   inputs:  fluentd_input_status_num_records_total{tag}, weir_input_bytes_total{tag}
 *   outputs: fluentd_output_status_emit_records, _emit_count, _write_count, _num_errors,
 *            _retry_count, weir_output_delivered_records_total, _delivered_chunks_total,
 *            _backup_chunks_total, _unrecoverable_chunks_total. */
weir_plugin_metrics_t *weir_plugin_metrics_new(weir_metrics_t *m, const char *category,
                                               const char *plugin_id, const char *type);
/* Unregisters everything registered under the handle, then frees it. */
void weir_plugin_metrics_free(weir_plugin_metrics_t *pm);
weir_metrics_t *weir_plugin_metrics_registry(const weir_plugin_metrics_t *pm);
const char *weir_plugin_metrics_id(const weir_plugin_metrics_t *pm);
const char *weir_plugin_metrics_type(const weir_plugin_metrics_t *pm);
const char *weir_plugin_metrics_category(const weir_plugin_metrics_t *pm);
/* {"plugin_id", id, "type", type, NULL}, for a plugin's own series. */
const char *const *weir_plugin_metrics_labels(const weir_plugin_metrics_t *pm);

/* Inputs, after a batch was taken by the router (never per event). `bytes` is what the batch
 * occupied on the wire. */
void weir_metrics_input_events(weir_plugin_metrics_t *pm, const char *tag, uint64_t events,
                               uint64_t bytes);
/* Inputs with connections call this once at create: registers weir_input_connections,
 * weir_input_tls_handshake_failures_total and (with `acks`) weir_input_acks_total. */
void weir_metrics_input_network(weir_plugin_metrics_t *pm, bool acks);
void weir_metrics_input_connection(weir_plugin_metrics_t *pm, int delta); /* +1 open, -1 gone */
void weir_metrics_input_tls_failure(weir_plugin_metrics_t *pm);
void weir_metrics_input_acks(weir_plugin_metrics_t *pm, uint64_t n);
/* Time from a complete request (frame or HTTP request) to its acknowledgement (ack or 200):
 * decoding, routing and waiting for the output to make it durable. Inputs that answer their
 * senders register the histogram once with weir_metrics_input_timed. */
void weir_metrics_input_timed(weir_plugin_metrics_t *pm);
void weir_metrics_input_ack_latency(weir_plugin_metrics_t *pm, uint64_t ns);
void weir_metrics_input_totals(const weir_plugin_metrics_t *pm, uint64_t *events, uint64_t *bytes);

/* Outputs. emit: the router handed the output a batch. write: a chunk went to the output.
 * written: it was stored. failed: it was not; `retry` when it will be tried again, `backup`
 * when it was given up (moved to the backup directory). */
void weir_metrics_output_emit(weir_plugin_metrics_t *pm, uint64_t records);
void weir_metrics_output_write(weir_plugin_metrics_t *pm);
void weir_metrics_output_written(weir_plugin_metrics_t *pm, uint64_t records);
void weir_metrics_output_failed(weir_plugin_metrics_t *pm, bool retry, bool backup);
/* A chunk was given up at once on WEIR_WRITE_UNRECOVERABLE (besides output_failed's backup). */
void weir_metrics_output_unrecoverable(weir_plugin_metrics_t *pm);
/* The buffer sets its status callback (NULL to remove it). Loop thread. */
void weir_plugin_metrics_set_status(weir_plugin_metrics_t *pm, weir_output_status_fn fn, void *arg);
/* Fills `st` (zeroed first): the counters, then the status callback if there is one. */
void weir_plugin_metrics_output_status(const weir_plugin_metrics_t *pm, weir_output_status_t *st);

#endif
