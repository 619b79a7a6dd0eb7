/* The buffer's internals, shared by its files (one idea each):
 *
 *   config.c   <buffer> settings: reading and checking them
 *   chunk.c    chunks: keys, ids, records, creation, the staged list and enqueue
 *   append.c   appending a batch: runs per key, rollback, limits, the full disk
 *   commit.c   group commit: the sync rounds that acknowledgements wait for
 *   queue.c    the queue: readiness, dispatch to the output, retries, backup
 *   recover.c  recovery of chunk files at start, adoption of Fluentd's buffer files
 *   metrics.c  gauges and monitor_agent status
 *   durable.c  durable file-system steps: whole writes, directory fsyncs, mkdir -p
 *   buffer.c   life cycle (new, start, stop, free), accessors and the chunk reader
 *
 * Everything here runs on the loop thread except sync rounds (commit.c) and chunk readers.
 *
 * Invariants (every file keeps them):
 *  - a staged chunk is the only one open for appends for its key;
 *  - a chunk is on exactly one of: the staged list, the queue (waiting, maybe for a retry
 *    time), or in the output's hands (WRITING);
 *  - bytes_total is the sum of the sizes of all chunks not yet delivered;
 *  - an append either lands whole in every chunk it touches or is rolled back everywhere, and
 *    a chunk it created is removed again. */
#ifndef WEIR_BUFFER_INTERNAL_H
#define WEIR_BUFFER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <uv.h>

#include "chunkfile.h"
#include "weir/buffer.h"
#include "weir/dirsync.h"
#include "weir/format.h"
#include "weir/log.h"

#define BUF_TICK_MS 250                      /* how often ready chunks are looked for */
#define BUF_DISK_PROBE_MS 1000               /* how often a full disk is checked for space again */
#define BUF_DISK_MIN_FREE (4u * 1024 * 1024) /* free bytes that end the disk-full state */
#define BUF_JITTER 0.125                     /* retry_randomize: +-12.5 %, as Fluentd */
/* Sync rounds that may run at once. One round at a time makes a batch that arrives while a
 * sync runs wait for it and then for its own: up to two fsync latencies. Starting its round
 * at once halves that; each round still covers exactly what was written before it began. */
#define BUF_SYNC_PARALLEL 3
/* Descriptors duplicated for the next sync round, at most. A batch spanning thousands of time
 * buckets would otherwise hold one per chunk until its round and run out of them (a
 * container's soft limit is often 1024, and staged chunks hold up to staged_chunks_limit).
 * Past it (or when dup fails) the next round syncs the buffer's whole file system (syncfs)
 * instead: never on the loop thread, never wrong, costlier only in that rare round. */
#define BUF_DIRTY_FDS_MAX 256
/* Staged chunks open at once (each a file descriptor and a key): senders choose tags and
 * record-key values, so without a bound they choose how many files weir holds open. Past it
 * the oldest staged chunk is enqueued early. A container's soft fd limit is often 1024. */
#define BUF_STAGED_LIMIT_DEFAULT 512
/* Warnings a sender can cause (an event stored alone for its size, a tag refused): one per
 * interval, with the count of those not logged. */
#define BUF_STAGED_WARN_MS 60000 /* "staged_chunks_limit reached": one warning per minute */

typedef enum chunk_state { CH_STAGED, CH_QUEUED, CH_WRITING } chunk_state_t;
typedef enum buf_type { BUF_MEMORY, BUF_FILE } buf_type_t;
typedef enum flush_mode { FLUSH_LAZY, FLUSH_INTERVAL, FLUSH_IMMEDIATE } flush_mode_t;
typedef enum overflow_action { OVF_THROW, OVF_BLOCK, OVF_DROP_OLDEST } overflow_action_t;

struct weir_chunk {
    weir_buffer_t *b;
    chunk_meta_t meta;
    char id_hex[33];
    char *key; /* chunk key as one string, for lookups */
    chunk_state_t state;
    int fd;             /* staged file chunk: open for appends; -1 otherwise */
    char *path;         /* file chunk */
    char *fluentd_meta; /* adopted from a Fluentd buffer: its .meta; `path` holds lines
                           Fluentd already formatted (see adopt_fluentd) */
    weir_buf_t mem;     /* memory chunk: the entries */
    uint64_t bytes;     /* file: size on disk; memory: entry bytes */
    uint64_t events;
    double created;     /* monotonic seconds, for flush_interval */
    bool dirty;         /* written since the last sync snapshot */
    uint64_t touch_gen; /* the append that last remembered it (see touched_t) */
    /* retries */
    unsigned steps;
    double first_failure; /* wall-clock seconds; 0 = never failed */
    double next_try;      /* monotonic seconds */
    void *out_data;
    struct weir_chunk *next, *prev; /* staged list or queue */
};

typedef struct sync_waiter {
    weir_emit_cb cb;
    void *arg;
    struct sync_waiter *next;
} sync_waiter_t;

typedef struct sync_round {
    uv_work_t req;
    weir_buffer_t *b;
    int *fds; /* dup'd descriptors to fdatasync */
    size_t nfds;
    int dirfd; /* -1 = the directory needs no sync */
    int fsfd;  /* >= 0: syncfs the file system of this descriptor (the buffer's directory) */
    sync_waiter_t *waiters;
    int error; /* errno of the first failure */
} sync_round_t;

/* A chunk one append wrote to, with its size before the append, so a failure can cut it
 * back. `created`: the append made it, so a rollback removes it rather than leaving an empty
 * chunk behind. */
typedef struct touched {
    weir_chunk_t *c;
    uint64_t bytes, events;
    size_t mem_len;
    bool created;
} touched_t;

typedef struct chunk_list {
    weir_chunk_t *head, *tail;
    size_t n;
} chunk_list_t;

struct weir_buffer {
    weir_buffer_env_t env; /* loop, metrics handle, space and reload callbacks */
    uv_loop_t *loop;
    weir_buffer_sink_t sink;
    char *plugin_id;
    /* settings */
    buf_type_t type;
    char *path;
    char *backup_dir;
    bool key_time, key_tag;
    char *var_keys[WEIR_BUFFER_MAX_KEYS];
    size_t nvar_keys;
    double timekey;
    double timekey_wait;
    bool timekey_use_utc;
    weir_tz_t zone;
    flush_mode_t flush_mode;
    double flush_interval;
    bool flush_at_shutdown;
    int64_t flush_thread_count;
    uint64_t chunk_limit_size;
    int64_t chunk_limit_records;
    double chunk_full_threshold;
    uint64_t total_limit_size;
    int64_t queued_chunks_limit_size;
    int64_t staged_chunks_limit; /* weir: see BUF_STAGED_LIMIT_DEFAULT */
    weir_ratelimit_t staged_rl;
    overflow_action_t overflow;
    bool retry_periodic;
    double retry_wait, retry_max_interval, retry_base, retry_timeout;
    int64_t retry_max_times;
    bool retry_forever, retry_randomize;
    bool disable_chunk_backup;
    bool ack_after_write;
    /* state */
    int lock_fd;
    int dir_fd;
    bool dir_dirty;
    chunk_list_t staged, queue;
    weir_chunk_t *last_staged; /* lookup cache */
    size_t writing;
    uint64_t bytes_total;
    bool disk_full;
    bool full_reported;
    uv_timer_t *tick;
    uv_timer_t *disk_probe;
    /* group commit */
    sync_waiter_t *pending, *pending_tail;
    int *dirty_fds;
    size_t ndirty, cap_dirty;
    bool dirty_past_fds;      /* a chunk was written with no duplicate: the next round syncfs */
    size_t nrunning;          /* sync rounds in flight */
    size_t dir_syncs_running; /* of which fsync the directory */
    size_t backing_up;        /* given-up chunks on their way to backup/ (queue.c) */
    /* stop */
    bool stopping;
    bool reload_handover;
    void (*stop_done)(void *);
    void *stop_arg;
    weir_buffer_stats_t stats;
    weir_buf_t keybuf;
    /* the chunks the current append touched: as many as it needs (a replayed backlog spans
     * hundreds of time buckets), reused across appends so the hot path does not allocate */
    touched_t *touched;
    size_t ntouched, cap_touched;
    uint64_t append_gen;
    size_t rec_overhead; /* bytes a record of the current append adds besides its entries */
    /* metrics and health */
    weir_plugin_metrics_t *pm;
    double failing_since;     /* wall clock; 0 = the last write succeeded (or none failed) */
    char last_error[256];     /* the reason the last failed write logged */
    double last_error_time;   /* wall clock of that failure; 0 = none yet */
    double last_success_time; /* wall clock of the last chunk delivered; 0 = none yet */
    weir_ratelimit_t warn_rl;
};

/* chunk.c */
double buf_mono_now(void);
double buf_wall_now(void);
void buf_list_push(chunk_list_t *l, weir_chunk_t *c);
void buf_list_push_front(chunk_list_t *l, weir_chunk_t *c);
void buf_list_remove(chunk_list_t *l, weir_chunk_t *c);
int64_t buf_bucket_of(weir_buffer_t *b, uint32_t sec);
/* The key string of one event, into b->keybuf; *tk receives its time bucket. */
void buf_event_key(weir_buffer_t *b, const char *tag, const weir_entry_t *e, int64_t *tk);
/* The key string of a recovered chunk's metadata, into k. */
void buf_meta_key(weir_buffer_t *b, const chunk_meta_t *m, weir_buf_t *k);
void buf_hex_id(const uint8_t id[16], char out[33]);
char *buf_chunk_path(weir_buffer_t *b, const char *hex, char state);
void buf_chunk_free(weir_chunk_t *c);
int buf_chunk_put_record(weir_chunk_t *c, int type, const char *tag, size_t tag_len, const char *p,
                         size_t len, uint32_t count);
weir_chunk_t *buf_chunk_create(weir_buffer_t *b, const char *key, const char *tag,
                               const weir_entry_t *e, int64_t tk, weir_err_t *err);
weir_chunk_t *buf_staged_find(weir_buffer_t *b, const char *key);
void buf_enqueue(weir_buffer_t *b, weir_chunk_t *c);
bool buf_chunk_is_full(weir_buffer_t *b, weir_chunk_t *c);
bool buf_chunk_has_room(weir_buffer_t *b, weir_chunk_t *c, size_t len, uint32_t n);
void buf_chunk_discard(weir_buffer_t *b, weir_chunk_t *c);

/* config.c: reads and checks <buffer> (s NULL: defaults). */
int buf_read_conf(weir_buffer_t *b, weir_conf_section_t *s, const weir_buffer_defaults_t *d,
                  weir_err_t *err);

/* commit.c */
void buf_mark_dirty(weir_buffer_t *b, weir_chunk_t *c);
void buf_sync_start(weir_buffer_t *b);
void buf_sync_wait(weir_buffer_t *b, weir_emit_cb cb, void *arg);

/* append.c */
void buf_enter_disk_full(weir_buffer_t *b, int e);
void buf_leave_disk_full(weir_buffer_t *b, const char *why);
void buf_disk_probe_cb(uv_timer_t *t);

/* queue.c */
void buf_enqueue_ready(weir_buffer_t *b);
void buf_tick_cb(uv_timer_t *t);
void buf_dispatch(weir_buffer_t *b);
/* Moves a given-up chunk to backup/ on a worker thread, then releases it. */
void buf_backup_chunk(weir_buffer_t *b, weir_chunk_t *c, const char *why);
void buf_chunk_delivered(weir_buffer_t *b, weir_chunk_t *c);

/* recover.c */
int buf_recover(weir_buffer_t *b, weir_err_t *err);

/* metrics.c: registers the gauges and the status callback on env.pm (if any). */
void buf_register_metrics(weir_buffer_t *b, weir_plugin_metrics_t *pm);

/* buffer.c */
void buf_maybe_finish_stop(weir_buffer_t *b);
/* Tells the environment that the buffer has room again (inputs may read). */
void buf_space_available(weir_buffer_t *b);

/* durable.c */
int buf_write_full(int fd, struct iovec *iov, int n);

#endif
