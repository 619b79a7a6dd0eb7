/* The output buffer: Fluentd's <buffer> section for outputs, with a stronger promise. An event
 * is acknowledged only once it is durable: appended to a checksummed chunk file and covered by
 * an fsync (group commit: one fsync covers every batch written before it, and runs off the
 * loop). Chunks are keyed by time bucket, tag and record keys; a chunk becomes ready when its
 * bucket (plus timekey_wait) closes, when it is full, on flush_interval, or on shutdown, and is
 * then handed to the output, which formats and stores it. Failures retry with backoff per
 * chunk (one bad chunk does not stall the others); when retries end the chunk moves to the
 * backup directory, never to nowhere. The file format is docs/buffer-format.md.
 *
 * Threads: everything here runs on the loop thread except the fsyncs and the output's own
 * work; a chunk handed to the output may be read (weir_chunk_reader_*) from any thread. */
#ifndef WEIR_BUFFER_H
#define WEIR_BUFFER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "weir/common.h"
#include "weir/config.h"
#include "weir/event.h"
#include "weir/plugin.h"

#define WEIR_CHUNK_ID_LEN 16
#define WEIR_BUFFER_MAX_KEYS 8       /* record keys in <buffer ...> */
#define WEIR_BUFFER_MAX_KEY_LEN 128  /* the name of a record key in <buffer ...> */
#define WEIR_BUFFER_MAX_VAR_LEN 1024 /* a record-key value longer than this is cut (logged) */

typedef struct weir_buffer weir_buffer_t;
typedef struct weir_chunk weir_chunk_t;

/* What the output does with a ready chunk. write() starts storing the chunk (typically on a
 * worker thread) and must call weir_chunk_write_done() exactly once, on the loop thread. */
typedef struct weir_buffer_sink {
    void (*write)(void *out, weir_chunk_t *chunk);
    void *out;
} weir_buffer_sink_t;

typedef enum weir_write_status {
    WEIR_WRITE_OK = 0,
    WEIR_WRITE_RETRY = -1,         /* transient: retry with backoff */
    WEIR_WRITE_UNRECOVERABLE = -2, /* retrying cannot help: straight to backup */
} weir_write_status_t;

void weir_chunk_write_done(weir_chunk_t *chunk, weir_write_status_t status, const char *msg);

/* Chunk facts for keys and logs. Stable while the chunk is being written. */
const char *weir_chunk_tag(const weir_chunk_t *c); /* NULL unless tag is a chunk key */
bool weir_chunk_timekey(const weir_chunk_t *c, int64_t *timekey);   /* false unless time is a key */
const char *weir_chunk_var(const weir_chunk_t *c, const char *key); /* record-key value or NULL */
const char *weir_chunk_id_hex(const weir_chunk_t *c);               /* 32 lowercase hex chars */
uint64_t weir_chunk_events(const weir_chunk_t *c);
uint64_t weir_chunk_bytes(const weir_chunk_t *c);
void *weir_chunk_get_data(const weir_chunk_t *c); /* for the output's own per-write state */
void weir_chunk_set_data(weir_chunk_t *c, void *data);
/* Streams a chunk one appended batch at a time, so formatting a 256 MiB chunk needs memory for
 * one batch, not the chunk. Any thread. */
typedef struct weir_chunk_reader weir_chunk_reader_t;
weir_chunk_reader_t *weir_chunk_reader_open(weir_chunk_t *c, weir_err_t *err);
/* 1 with the next run of canonical entries (valid until the next call), 0 at the end, -1 on a
 * read or checksum error (err set). */
int weir_chunk_reader_next(weir_chunk_reader_t *r, const char **entries, size_t *len,
                           uint32_t *count, weir_err_t *err);
/* The tag of the entries the last weir_chunk_reader_next returned (valid until the next call).
 * A chunk holds several tags when tag is not a chunk key; each run carries its own. "" only for
 * a chunk written before weir kept the tag per run, when tag is not a chunk key. */
const char *weir_chunk_reader_tag(const weir_chunk_reader_t *r);
void weir_chunk_reader_close(weir_chunk_reader_t *r);

/* A chunk adopted from a Fluentd buffer directory (buffer.[bq]<id>.log + .meta): its bytes
 * are what Fluentd's output had already formatted, to be stored as they are. Outputs read
 * them with weir_chunk_reader_raw (1 MiB at a time; 1 with data, 0 at the end, -1 error)
 * instead of weir_chunk_reader_next. */
bool weir_chunk_is_fluentd(const weir_chunk_t *c);
int weir_chunk_reader_raw(weir_chunk_reader_t *r, const char **data, size_t *len, weir_err_t *err);

/* Buffer settings, as <buffer> spells them. Defaults come from the output (out_s3 and out_file
 * use chunk keys "time" and timekey 86400). */
typedef struct weir_buffer_defaults {
    const char *chunk_keys; /* used when <buffer> has no argument, e.g. "time" */
    int64_t timekey;        /* default timekey when time is a key */
} weir_buffer_defaults_t;

/* What the buffer needs from its surroundings. weir_buffer_new takes it from the engine; a
 * test passes its own (a loop it runs, no metrics, callbacks it counts). */
typedef struct weir_buffer_env {
    uv_loop_t *loop;           /* the loop thread's loop: timers and sync rounds run on it */
    weir_plugin_metrics_t *pm; /* the output's metrics handle, or NULL for none */
    /* Called when the buffer has room again after refusing appends (FULL): inputs may read. */
    void (*space_available)(void *arg);
    /* Whether the stop under way is a reload (a file buffer then hands its chunks over on
     * disk instead of flushing). NULL: never. */
    bool (*reloading)(void *arg);
    void *arg;
} weir_buffer_env_t;

/* Reads the <buffer> section (NULL = none: all defaults, memory buffer) of an output whose
 * @id is `plugin_id`. Validates everything; opens nothing. */
weir_buffer_t *weir_buffer_new(weir_engine_t *eng, weir_conf_section_t *sec,
                               const weir_buffer_defaults_t *defaults, const char *plugin_id,
                               const weir_buffer_sink_t *sink, weir_err_t *err);
/* The same with an explicit environment (copied), for use without an engine. */
weir_buffer_t *weir_buffer_new_env(const weir_buffer_env_t *env, weir_conf_section_t *sec,
                                   const weir_buffer_defaults_t *defaults, const char *plugin_id,
                                   const weir_buffer_sink_t *sink, weir_err_t *err);
/* Takes the lock, recovers chunks left on disk, starts the flush timer. */
int weir_buffer_start(weir_buffer_t *b, weir_err_t *err);
/* Appends a batch, whole (it may touch any number of chunks; an event larger than
 * chunk_limit_size gets a chunk of its own) or not at all. DONE (memory buffer, or ack_after
 * write), PENDING (the callback fires after the covering fsync), FULL (over total_limit_size,
 * or the disk is full: backpressure) or ERROR (refused for good, logged: entries that are not
 * events, a tag longer than WEIR_TAG_MAX, a write error). */
weir_emit_result_t weir_buffer_append(weir_buffer_t *b, const weir_batch_t *batch, weir_emit_cb cb,
                                      void *arg);
/* SIGUSR1: enqueue every staged chunk and flush now, retry waits included. */
void weir_buffer_flush_all(weir_buffer_t *b);
/* Shutdown: stop the timer; with flush_at_shutdown, flush everything first; wait for the writes
 * in flight; then done(arg). */
void weir_buffer_stop(weir_buffer_t *b, void (*done)(void *arg), void *arg);
void weir_buffer_free(weir_buffer_t *b);

typedef struct weir_buffer_stats {
    uint64_t staged_chunks, queued_chunks;
    uint64_t bytes;          /* staged + queued */
    uint64_t events_written; /* delivered to the output successfully */
    uint64_t write_errors, retries, backups;
    uint64_t syncs; /* fsyncs run */
} weir_buffer_stats_t;
void weir_buffer_get_stats(const weir_buffer_t *b, weir_buffer_stats_t *out);

/* Whether the chunk keys include tag / time (for an output's key-format checks). */
bool weir_buffer_has_key(const weir_buffer_t *b, const char *key);
/* flush_thread_count: at most this many chunks are in the output's hands at once. */
int weir_buffer_flush_threads(const weir_buffer_t *b);
double weir_buffer_timekey(const weir_buffer_t *b);
/* The directory of a file buffer; NULL for a memory buffer. */
const char *weir_buffer_path(const weir_buffer_t *b);
bool weir_buffer_timekey_utc(const weir_buffer_t *b);
int weir_buffer_timekey_offset(const weir_buffer_t *b, int64_t t); /* seconds east of UTC */

#endif
