/* The output buffer (see include/weir/buffer.h for the promise it keeps).
 *
 * Appends run on the loop thread: the events of a batch are grouped by chunk key (time bucket,
 * tag, record keys), each group written to its staged chunk with one writev of a checksummed
 * record. The caller's acknowledgement waits for a group commit: a worker thread fdatasyncs
 * every chunk written since the last sync (through dup'd descriptors, so a chunk may be
 * enqueued and closed meanwhile), plus the directory when files were created or renamed, and
 * then every waiter of that round is told. Up to BUF_SYNC_PARALLEL rounds run at once; past
 * that, the next round collects while they finish.
 *
 * Invariants:
 *  - a staged chunk is the only one open for appends for its key;
 *  - a chunk is on exactly one of: the staged list, the queue (waiting, maybe for a retry
 *    time), or in the output's hands (WRITING);
 *  - bytes_total is the sum of the sizes of all chunks not yet delivered;
 *  - an append either lands whole in every chunk it touches or is rolled back everywhere.
 *
 * Staged chunks are found by a linear search with a one-entry cache: there are few of them
 * (tags x open time buckets), and a batch does one lookup per run of events with the same key.
 * A hash table would replace it if thousands of tags were staged at once.
 *
 * Metrics: the counters of the output's metrics handle are updated per chunk (write, written,
 * failed); sizes, lengths and ages are gauges computed when scraped, by walking the chunk
 * lists (few entries, see above). `failing_since` is the wall-clock time of the first failed
 * write with no successful one since; the health check reads it. */
#include "weir/buffer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "chunkfile.h"
#include "weir/format.h"
#include "weir/log.h"
#include "weir/mp.h"

#define BUF_TICK_MS 250                      /* how often ready chunks are looked for */
#define BUF_DISK_PROBE_MS 1000               /* how often a full disk is checked for space again */
#define BUF_DISK_MIN_FREE (4u * 1024 * 1024) /* free bytes that end the disk-full state */
#define BUF_JITTER 0.125                     /* retry_randomize: +-12.5 %, as Fluentd */
/* Sync rounds that may run at once. One round at a time makes a batch that arrives while a
 * sync runs wait for it and then for its own: up to two fsync latencies. Starting its round
 * at once halves that; each round still covers exactly what was written before it began. */
#define BUF_SYNC_PARALLEL 3
/* Staged chunks open at once (each a file descriptor and a key): senders choose tags and
 * record-key values, so without a bound they choose how many files weir holds open. Past it
 * the oldest staged chunk is enqueued early. A container's soft fd limit is often 1024. */
#define BUF_STAGED_LIMIT_DEFAULT 512
#define BUF_DROP_WARN_MS 5000 /* events dropped for their size: one warning per interval */

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
    double created; /* monotonic seconds, for flush_interval */
    bool dirty;     /* written since the last sync snapshot */
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
    sync_waiter_t *waiters;
    int error; /* errno of the first failure */
} sync_round_t;

typedef struct chunk_list {
    weir_chunk_t *head, *tail;
    size_t n;
} chunk_list_t;

struct weir_buffer {
    weir_engine_t *eng;
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
    size_t nrunning; /* sync rounds in flight */
    /* stop */
    bool stopping;
    bool reload_handover;
    void (*stop_done)(void *);
    void *stop_arg;
    weir_buffer_stats_t stats;
    weir_buf_t keybuf;
    /* metrics and health */
    weir_plugin_metrics_t *pm;
    double failing_since; /* wall clock; 0 = the last write succeeded (or none failed) */
    char last_error[256];
    weir_ratelimit_t drop_rl;
};

static void dispatch(weir_buffer_t *b);
static void maybe_finish_stop(weir_buffer_t *b);

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- lists -------------------------------------------------------------------------- */

static void list_push(chunk_list_t *l, weir_chunk_t *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

static void list_push_front(chunk_list_t *l, weir_chunk_t *c)
{
    c->prev = NULL;
    c->next = l->head;
    if (l->head)
        l->head->prev = c;
    else
        l->tail = c;
    l->head = c;
    l->n++;
}

static void list_remove(chunk_list_t *l, weir_chunk_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->next = c->prev = NULL;
    l->n--;
}

/* ---- configuration ------------------------------------------------------------------ */

static bool valid_record_key(const char *k)
{
    if (!*k) return false;
    for (const char *p = k; *p; p++)
        if (!(((*p | 32) >= 'a' && (*p | 32) <= 'z') || (*p >= '0' && *p <= '9') ||
              strchr("-_.@$", *p)))
            return false;
    return true;
}

static int parse_chunk_keys(weir_buffer_t *b, const char *arg, weir_conf_section_t *sec,
                            weir_err_t *err)
{
    char *copy = weir_strdup(arg);
    int rc = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (!*tok) continue;
        if (strcmp(tok, "time") == 0) {
            b->key_time = true;
        } else if (strcmp(tok, "tag") == 0) {
            b->key_tag = true;
        } else if (tok[0] == '$' || strchr(tok, '[')) {
            weir_conf_section_errorf(err, sec,
                                     "chunk key '%s': nested record keys are not supported yet; "
                                     "use a top-level record key",
                                     tok);
            rc = -1;
            break;
        } else if (!valid_record_key(tok)) {
            weir_conf_section_errorf(err, sec,
                                     "chunk key '%s' has characters outside [-_.@a-zA-Z0-9]", tok);
            rc = -1;
            break;
        } else if (b->nvar_keys >= WEIR_BUFFER_MAX_KEYS) {
            weir_conf_section_errorf(err, sec, "more than %d record chunk keys",
                                     WEIR_BUFFER_MAX_KEYS);
            rc = -1;
            break;
        } else {
            b->var_keys[b->nvar_keys++] = weir_strdup(tok);
        }
    }
    free(copy);
    return rc;
}

static int get_enum(weir_conf_section_t *s, const char *key, const char *const *names, int *out,
                    weir_err_t *err)
{
    return weir_conf_get_enum(s, key, names, out, err) < 0 ? -1 : 0;
}

/* Params Fluentd users write that change nothing in weir, each with the reason. */
static int accept_inert(weir_conf_section_t *s, weir_err_t *err)
{
    static const char *const inert[] = {
        "flush_thread_interval", /* weir's flush loop is event driven */
        "flush_thread_burst_interval",
        "delayed_commit_timeout",    /* no delayed commits: outputs report when done */
        "retry_secondary_threshold", /* weir has no <secondary> */
        "path_suffix",               /* weir's chunk files have their own names */
        NULL,
    };
    for (size_t i = 0; inert[i]; i++) {
        weir_conf_param_t *p = weir_conf_find(s, inert[i]);
        if (!p) continue;
        p->used = true;
        weir_debug("<buffer>: '%s' has no effect in weir", inert[i]);
    }
    const char *v = NULL;
    if (weir_conf_get_str(s, "file_permission", &v, err) < 0) return -1;
    if (v) weir_warn("<buffer>: file_permission %s ignored: weir keeps buffer files 0600", v);
    v = NULL;
    if (weir_conf_get_str(s, "dir_permission", &v, err) < 0) return -1;
    if (v) weir_warn("<buffer>: dir_permission %s ignored: weir keeps buffer directories 0700", v);
    return 0;
}

static int read_conf(weir_buffer_t *b, weir_conf_section_t *s, const weir_buffer_defaults_t *d,
                     weir_err_t *err)
{
    static const char *const types[] = {"memory", "file", NULL};
    static const char *const modes[] = {"default", "lazy", "interval", "immediate", NULL};
    static const char *const overflow[] = {"throw_exception", "block", "drop_oldest_chunk", NULL};
    static const char *const retry_types[] = {"exponential_backoff", "periodic", NULL};
    static const char *const acks[] = {"fsync", "write", NULL};
    static const char *const compress[] = {"text", NULL};
    int type = 0, mode = 0, ovf = 0, rt = 0, ack = 0, comp = 0;
    const char *path = NULL, *zone = NULL;
    bool have_flush_interval = false, fas_set = false;
    int64_t queue_len = 0;

    if (parse_chunk_keys(b, s && s->arg[0] ? s->arg : d->chunk_keys, s, err) != 0) return -1;
    b->timekey = (double)d->timekey;
    b->timekey_wait = 600;
    b->flush_interval = 60;
    b->flush_thread_count = 1;
    b->chunk_full_threshold = 0.95;
    b->retry_wait = 1;
    b->retry_base = 2;
    b->retry_timeout = 72 * 3600;
    b->retry_randomize = true;
    if (!s) {
        b->type = BUF_MEMORY;
    } else {
        weir_conf_section_use(s);
        int r;
        if (get_enum(s, "@type", types, &type, err) ||
            get_enum(s, "flush_mode", modes, &mode, err) ||
            get_enum(s, "overflow_action", overflow, &ovf, err) ||
            get_enum(s, "retry_type", retry_types, &rt, err) ||
            get_enum(s, "ack_after", acks, &ack, err) ||
            get_enum(s, "compress", compress, &comp, err))
            return -1;
        if (weir_conf_get_str(s, "path", &path, err) < 0 ||
            weir_conf_get_time(s, "timekey", &b->timekey, err) < 0 ||
            weir_conf_get_time(s, "timekey_wait", &b->timekey_wait, err) < 0 ||
            weir_conf_get_bool(s, "timekey_use_utc", &b->timekey_use_utc, err) < 0 ||
            weir_conf_get_str(s, "timekey_zone", &zone, err) < 0 ||
            weir_conf_get_int(s, "flush_thread_count", &b->flush_thread_count, err) < 0 ||
            weir_conf_get_int(s, "chunk_limit_records", &b->chunk_limit_records, err) < 0 ||
            weir_conf_get_float(s, "chunk_full_threshold", &b->chunk_full_threshold, err) < 0 ||
            weir_conf_get_int(s, "queue_limit_length", &queue_len, err) < 0 ||
            weir_conf_get_int(s, "queued_chunks_limit_size", &b->queued_chunks_limit_size, err) <
                0 ||
            weir_conf_get_int(s, "staged_chunks_limit", &b->staged_chunks_limit, err) < 0 ||
            weir_conf_get_time(s, "retry_wait", &b->retry_wait, err) < 0 ||
            weir_conf_get_time(s, "retry_max_interval", &b->retry_max_interval, err) < 0 ||
            weir_conf_get_float(s, "retry_exponential_backoff_base", &b->retry_base, err) < 0 ||
            weir_conf_get_time(s, "retry_timeout", &b->retry_timeout, err) < 0 ||
            weir_conf_get_int(s, "retry_max_times", &b->retry_max_times, err) < 0 ||
            weir_conf_get_bool(s, "retry_forever", &b->retry_forever, err) < 0 ||
            weir_conf_get_bool(s, "retry_randomize", &b->retry_randomize, err) < 0 ||
            weir_conf_get_bool(s, "disable_chunk_backup", &b->disable_chunk_backup, err) < 0 ||
            accept_inert(s, err) < 0)
            return -1;
        if ((r = weir_conf_get_time(s, "flush_interval", &b->flush_interval, err)) < 0) return -1;
        have_flush_interval = r == 1;
        if ((r = weir_conf_get_bool(s, "flush_at_shutdown", &b->flush_at_shutdown, err)) < 0)
            return -1;
        fas_set = r == 1;
        if (weir_conf_get_size(s, "chunk_limit_size", &b->chunk_limit_size, err) < 0 ||
            weir_conf_get_size(s, "total_limit_size", &b->total_limit_size, err) < 0)
            return -1;
    }
    b->type = (buf_type_t)type;
    b->overflow = (overflow_action_t)ovf;
    b->retry_periodic = rt == 1;
    b->ack_after_write = ack == 1;
    if (!fas_set) b->flush_at_shutdown = b->type == BUF_MEMORY;
    if (!b->chunk_limit_size) b->chunk_limit_size = b->type == BUF_FILE ? 256ull << 20 : 8ull << 20;
    if (queue_len > 0 && !b->total_limit_size)
        b->total_limit_size = b->chunk_limit_size * (uint64_t)queue_len;
    if (!b->total_limit_size)
        b->total_limit_size = b->type == BUF_FILE ? 64ull << 30 : 512ull << 20;
    if (!b->queued_chunks_limit_size) b->queued_chunks_limit_size = b->flush_thread_count;
    if (!b->staged_chunks_limit) b->staged_chunks_limit = BUF_STAGED_LIMIT_DEFAULT;
    if (b->staged_chunks_limit < 1) {
        weir_conf_errorf(err, weir_conf_find(s, "staged_chunks_limit"),
                         "staged_chunks_limit must be at least 1");
        return -1;
    }
    b->staged_rl.interval_ms = 60000;

    if (b->type == BUF_FILE) {
        if (!path) {
            weir_conf_section_errorf(err, s, "<buffer> @type file needs 'path' (a directory)");
            return -1;
        }
        if (strchr(path, '*')) {
            weir_conf_errorf(err, weir_conf_find(s, "path"),
                             "path: weir's buffer path is a directory; drop the '*' pattern");
            return -1;
        }
        b->path = weir_strdup(path);
    } else if (path) {
        weir_conf_errorf(err, weir_conf_find(s, "path"), "path is only for <buffer> @type file");
        return -1;
    }
    if (b->key_time && b->timekey <= 0) {
        weir_conf_section_errorf(err, s, "timekey must be greater than 0");
        return -1;
    }
    if (b->flush_thread_count < 1 || b->flush_thread_count > 64) {
        weir_conf_errorf(err, weir_conf_find(s, "flush_thread_count"),
                         "flush_thread_count must be 1..64");
        return -1;
    }
    if (b->chunk_full_threshold <= 0 || b->chunk_full_threshold > 1) {
        weir_conf_errorf(err, weir_conf_find(s, "chunk_full_threshold"),
                         "chunk_full_threshold must be in (0, 1]");
        return -1;
    }
    if (b->chunk_limit_size < 1024 || b->chunk_limit_size > (4ull << 30)) {
        weir_conf_errorf(err, weir_conf_find(s, "chunk_limit_size"),
                         "chunk_limit_size must be between 1k and 4g");
        return -1;
    }
    if (b->retry_base <= 1 && !b->retry_periodic) {
        weir_conf_errorf(err, weir_conf_find(s, "retry_exponential_backoff_base"),
                         "retry_exponential_backoff_base must be greater than 1");
        return -1;
    }
    /* Fluentd: flush_mode default is lazy with a time key, else interval */
    if (mode == 0)
        b->flush_mode = b->key_time ? FLUSH_LAZY : FLUSH_INTERVAL;
    else
        b->flush_mode = mode == 1 ? FLUSH_LAZY : mode == 2 ? FLUSH_INTERVAL : FLUSH_IMMEDIATE;
    if (have_flush_interval && b->key_time && mode == 0) {
        weir_warn("<buffer>: flush_interval is ignored with a time chunk key unless flush_mode "
                  "interval is set (as in Fluentd)");
    } else if (have_flush_interval && b->flush_mode != FLUSH_INTERVAL) {
        weir_conf_errorf(err, weir_conf_find(s, "flush_interval"),
                         "flush_interval needs flush_mode interval");
        return -1;
    }
    if (b->timekey_use_utc) zone = NULL;
    if (weir_tz_init(&b->zone, zone, !b->timekey_use_utc, err) != 0) {
        weir_err_prefix(err, "timekey_zone");
        return -1;
    }
    return 0;
}

/* ---- chunk keys --------------------------------------------------------------------- */

static int64_t bucket_of(weir_buffer_t *b, uint32_t sec)
{
    int64_t t = sec;
    int64_t tk = (int64_t)b->timekey;
    if (tk <= 0) return t;
    int64_t off = b->timekey_use_utc ? 0 : weir_tz_offset(&b->zone, t, NULL);
    int64_t r = (t + off) % tk;
    if (r < 0) r += tk;
    return t - r;
}

/* The value of a top-level key of the record as text, "" when absent (Fluentd: nil). */
static void record_var(const char *rec, size_t len, const char *key, weir_buf_t *out)
{
    const char *end = rec + len;
    weir_mp_obj_t m, k, v;
    ssize_t n = weir_mp_read(rec, len, &m);
    if (n <= 0 || m.type != WEIR_MP_MAP) return;
    const char *p = rec + n;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < m.v.n; i++) {
        n = weir_mp_read(p, (size_t)(end - p), &k);
        if (n <= 0) return;
        const char *kstart = p;
        ssize_t ks = weir_mp_skip(kstart, (size_t)(end - kstart), WEIR_MP_MAX_DEPTH);
        if (ks <= 0) return;
        p = kstart + ks;
        ssize_t vs = weir_mp_skip(p, (size_t)(end - p), WEIR_MP_MAX_DEPTH);
        if (vs <= 0) return;
        if ((k.type == WEIR_MP_STR || k.type == WEIR_MP_BIN) && k.len == klen &&
            memcmp(k.ptr, key, klen) == 0) {
            size_t start = out->len;
            if (weir_mp_read(p, (size_t)vs, &v) > 0 &&
                (v.type == WEIR_MP_STR || v.type == WEIR_MP_BIN))
                weir_buf_append(out, v.ptr, v.len);
            else if (weir_mp_read(p, (size_t)vs, &v) > 0 && v.type == WEIR_MP_NIL)
                ; /* nil: empty */
            else
                weir_json_append(out, p, (size_t)vs);
            if (out->len - start > WEIR_BUFFER_MAX_VAR_LEN)
                out->len = start + WEIR_BUFFER_MAX_VAR_LEN;
            return;
        }
        p += vs;
    }
}

/* Builds the key string of one event into b->keybuf: "timekey\x1ftag\x1fvar\x1fvar...". */
static void event_key(weir_buffer_t *b, const char *tag, const weir_entry_t *e, int64_t *tk)
{
    weir_buf_t *k = &b->keybuf;
    k->len = 0;
    if (b->key_time) {
        *tk = bucket_of(b, e->time.sec);
        weir_buf_printf(k, "%" PRId64, *tk);
    }
    weir_buf_putc(k, '\x1f');
    if (b->key_tag) weir_buf_append(k, tag, strlen(tag));
    for (size_t i = 0; i < b->nvar_keys; i++) {
        weir_buf_putc(k, '\x1f');
        record_var(e->record, e->record_len, b->var_keys[i], k);
    }
    weir_buf_putc(k, '\0');
}

/* ---- chunks ------------------------------------------------------------------------- */

static void chunk_new_id(uint8_t id[16])
{
    /* as Fluentd: microseconds << 12 | 12 random bits, then 8 random bytes; sortable by time */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    uint8_t rnd[10];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (uint8_t)rand();
    uint64_t hi = (us << 12) | ((uint64_t)(rnd[0] | (rnd[1] << 8)) & 0xfff);
    for (int i = 0; i < 8; i++)
        id[i] = (uint8_t)(hi >> (56 - 8 * i));
    memcpy(id + 8, rnd + 2, 8);
}

static void hex_id(const uint8_t id[16], char out[33])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hx[id[i] >> 4];
        out[2 * i + 1] = hx[id[i] & 15];
    }
    out[32] = '\0';
}

static char *chunk_path(weir_buffer_t *b, const char *hex, char state)
{
    weir_buf_t p;
    weir_buf_init(&p);
    weir_buf_printf(&p, "%s/buffer.%c%s.chunk", b->path, state, hex);
    return p.data;
}

static void chunk_free(weir_chunk_t *c)
{
    free(c->fluentd_meta);
    if (c->fd >= 0) close(c->fd);
    chunk_meta_free(&c->meta);
    weir_buf_free(&c->mem);
    free(c->key);
    free(c->path);
    free(c);
}

static void mark_dirty(weir_buffer_t *b, weir_chunk_t *c)
{
    if (c->dirty || c->fd < 0) return;
    int d = dup(c->fd);
    if (d < 0) return; /* the sync of this round then misses it; logged by the append path */
    if (b->ndirty == b->cap_dirty) {
        b->cap_dirty = b->cap_dirty ? b->cap_dirty * 2 : 16;
        b->dirty_fds = weir_realloc(b->dirty_fds, b->cap_dirty * sizeof(int));
    }
    b->dirty_fds[b->ndirty++] = d;
    c->dirty = true;
}

static int write_full(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Appends one record to a file chunk. On failure the file is cut back to where it was. */
static int chunk_file_append(weir_chunk_t *c, int type, const char *p, size_t len, uint32_t count)
{
    char hdr[CHUNK_HDR_LEN];
    chunk_record_header(hdr, type, p, len, count);
    struct iovec iov[2] = {{hdr, CHUNK_HDR_LEN}, {(void *)p, len}};
    if (write_full(c->fd, iov, len ? 2 : 1) != 0) {
        int e = errno;
        if (ftruncate(c->fd, (off_t)c->bytes) != 0)
            weir_error("buffer: cannot cut %s back to %" PRIu64 " bytes after a failed write: %s",
                       c->path, c->bytes, strerror(errno));
        errno = e;
        return -1;
    }
    c->bytes += CHUNK_HDR_LEN + len;
    return 0;
}

static void enqueue(weir_buffer_t *b, weir_chunk_t *c);

static weir_chunk_t *chunk_create(weir_buffer_t *b, const char *key, const char *tag,
                                  const weir_entry_t *e, int64_t tk, weir_err_t *err)
{
    if (b->staged.n >= (size_t)b->staged_chunks_limit) {
        unsigned long skipped = 0;
        if (weir_ratelimit_ok(&b->staged_rl, &skipped))
            weir_warn("buffer %s: %zu chunks staged at once (staged_chunks_limit); enqueuing the "
                      "oldest early (%lu more times since the last warning)",
                      b->plugin_id, b->staged.n, skipped);
        enqueue(b, b->staged.head); /* the list is in creation order: the head is the oldest */
    }
    weir_chunk_t *c = weir_calloc(1, sizeof *c);
    c->b = b;
    c->fd = -1;
    c->key = weir_strdup(key);
    c->created = mono_now();
    chunk_new_id(c->meta.id);
    hex_id(c->meta.id, c->id_hex);
    c->meta.created = (int64_t)wall_now();
    c->meta.has_timekey = b->key_time;
    c->meta.timekey = tk;
    if (b->key_tag) c->meta.tag = weir_strdup(tag);
    if (b->nvar_keys) {
        c->meta.var_keys = weir_calloc(b->nvar_keys, sizeof(char *));
        c->meta.var_values = weir_calloc(b->nvar_keys, sizeof(char *));
        weir_buf_t v;
        weir_buf_init(&v);
        for (size_t i = 0; i < b->nvar_keys; i++) {
            v.len = 0;
            record_var(e->record, e->record_len, b->var_keys[i], &v);
            c->meta.var_keys[i] = weir_strdup(b->var_keys[i]);
            c->meta.var_values[i] = weir_strndup(v.data ? v.data : "", v.len);
        }
        weir_buf_free(&v);
        c->meta.nvars = b->nvar_keys;
    }
    if (b->type == BUF_FILE) {
        c->path = chunk_path(b, c->id_hex, 'b');
        c->fd = open(c->path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
        if (c->fd < 0) {
            weir_err_set(err, "cannot create chunk %s: %s", c->path, strerror(errno));
            goto err;
        }
        weir_buf_t meta;
        weir_buf_init(&meta);
        chunk_meta_encode(&c->meta, &meta);
        int rc = chunk_file_append(c, CHUNK_REC_META, meta.data, meta.len, 0);
        weir_buf_free(&meta);
        if (rc != 0) {
            weir_err_set(err, "cannot write chunk %s: %s", c->path, strerror(errno));
            unlink(c->path);
            goto err;
        }
        b->dir_dirty = true;
    }
    b->bytes_total += c->bytes;
    list_push(&b->staged, c);
    b->stats.staged_chunks++;
    return c;
err:
    chunk_free(c);
    return NULL;
}

static weir_chunk_t *staged_find(weir_buffer_t *b, const char *key)
{
    if (b->last_staged && strcmp(b->last_staged->key, key) == 0) return b->last_staged;
    for (weir_chunk_t *c = b->staged.head; c; c = c->next) {
        if (strcmp(c->key, key) == 0) {
            b->last_staged = c;
            return c;
        }
    }
    return NULL;
}

/* staged -> queued. The file is renamed .b -> .q so a restart knows it was closed. */
static void enqueue(weir_buffer_t *b, weir_chunk_t *c)
{
    if (c->state != CH_STAGED) return;
    list_remove(&b->staged, c);
    b->stats.staged_chunks--;
    if (b->last_staged == c) b->last_staged = NULL;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
        char *q = chunk_path(b, c->id_hex, 'q');
        if (rename(c->path, q) == 0) {
            free(c->path);
            c->path = q;
            b->dir_dirty = true;
        } else {
            weir_warn("buffer: cannot rename %s to %s: %s (it stays staged on disk until sent)",
                      c->path, q, strerror(errno));
            free(q);
        }
    }
    c->state = CH_QUEUED;
    c->next_try = 0;
    list_push(&b->queue, c);
    b->stats.queued_chunks++;
}

/* ---- group commit ------------------------------------------------------------------- */

static void sync_work(uv_work_t *req)
{
    sync_round_t *r = req->data;
    for (size_t i = 0; i < r->nfds; i++) {
        if (fdatasync(r->fds[i]) != 0 && !r->error) r->error = errno;
        close(r->fds[i]);
    }
    if (r->dirfd >= 0 && fsync(r->dirfd) != 0 && !r->error) r->error = errno;
}

static void sync_start(weir_buffer_t *b);

static void sync_after(uv_work_t *req, int status)
{
    sync_round_t *r = req->data;
    weir_buffer_t *b = r->b;
    b->nrunning--;
    b->stats.syncs++;
    if (r->error)
        weir_error("buffer %s: fsync failed: %s; the batches of this round are not acknowledged",
                   b->path, strerror(r->error));
    for (sync_waiter_t *w = r->waiters, *next; w; w = next) {
        next = w->next;
        w->cb(w->arg, r->error ? -1 : 0);
        free(w);
    }
    free(r->fds);
    free(r);
    if (b->pending) sync_start(b);
    maybe_finish_stop(b);
}

static void sync_start(weir_buffer_t *b)
{
    if (b->nrunning >= BUF_SYNC_PARALLEL || !b->pending) return;
    sync_round_t *r = weir_calloc(1, sizeof *r);
    r->b = b;
    r->req.data = r;
    r->fds = b->dirty_fds;
    r->nfds = b->ndirty;
    b->dirty_fds = NULL;
    b->ndirty = b->cap_dirty = 0;
    for (weir_chunk_t *c = b->staged.head; c; c = c->next)
        c->dirty = false;
    r->dirfd = -1;
    if (b->dir_dirty) {
        r->dirfd = b->dir_fd;
        b->dir_dirty = false;
    }
    r->waiters = b->pending;
    b->pending = b->pending_tail = NULL;
    b->nrunning++;
    uv_queue_work(b->loop, &r->req, sync_work, sync_after);
}

static void sync_wait(weir_buffer_t *b, weir_emit_cb cb, void *arg)
{
    sync_waiter_t *w = weir_malloc(sizeof *w);
    w->cb = cb;
    w->arg = arg;
    w->next = NULL;
    if (b->pending_tail)
        b->pending_tail->next = w;
    else
        b->pending = w;
    b->pending_tail = w;
    sync_start(b);
}

/* ---- appending ---------------------------------------------------------------------- */

typedef struct touched {
    weir_chunk_t *c;
    uint64_t bytes, events;
    size_t mem_len;
} touched_t;

#define MAX_TOUCHED 64 /* chunks one append may touch before it is split in rounds */

static bool chunk_is_full(weir_buffer_t *b, weir_chunk_t *c)
{
    double limit = (double)b->chunk_limit_size * b->chunk_full_threshold;
    if ((double)c->bytes >= limit) return true;
    return b->chunk_limit_records > 0 &&
           (double)c->events >= (double)b->chunk_limit_records * b->chunk_full_threshold;
}

static bool chunk_has_room(weir_buffer_t *b, weir_chunk_t *c, size_t len, uint32_t n)
{
    if (c->events == 0) return true;
    if (c->bytes + CHUNK_HDR_LEN + len > b->chunk_limit_size) return false;
    return b->chunk_limit_records <= 0 || c->events + n <= (uint64_t)b->chunk_limit_records;
}

static void rollback(weir_buffer_t *b, touched_t *t, size_t nt)
{
    for (size_t i = 0; i < nt; i++) {
        weir_chunk_t *c = t[i].c;
        /* an enqueued chunk is closed already: cut it by name */
        int rc = 0;
        if (c->path && c->bytes != t[i].bytes)
            rc = c->fd >= 0 ? ftruncate(c->fd, (off_t)t[i].bytes)
                            : truncate(c->path, (off_t)t[i].bytes);
        if (rc != 0)
            weir_error("buffer: cannot cut %s back after a failed append: %s", c->path,
                       strerror(errno));
        b->bytes_total -= c->bytes - t[i].bytes;
        c->bytes = t[i].bytes;
        c->events = t[i].events;
        c->mem.len = t[i].mem_len;
    }
}

/* Writes one run of entries that share a key. Returns 0 or -1 (errno set). */
static int append_run(weir_buffer_t *b, weir_chunk_t *c, const char *p, size_t len, uint32_t n)
{
    if (b->type == BUF_MEMORY) {
        weir_buf_append(&c->mem, p, len);
        c->bytes += len;
    } else {
        if (chunk_file_append(c, CHUNK_REC_EVENTS, p, len, n) != 0) return -1;
        mark_dirty(b, c);
    }
    c->events += n;
    b->bytes_total += (b->type == BUF_MEMORY ? len : CHUNK_HDR_LEN + len);
    return 0;
}

static void remember(touched_t *t, size_t *nt, weir_chunk_t *c)
{
    for (size_t i = 0; i < *nt; i++)
        if (t[i].c == c) return;
    t[*nt].c = c;
    t[*nt].bytes = c->bytes;
    t[*nt].events = c->events;
    t[*nt].mem_len = c->mem.len;
    (*nt)++;
}

static void enter_disk_full(weir_buffer_t *b, int e);

static weir_emit_result_t over_limit(weir_buffer_t *b)
{
    if (b->overflow == OVF_DROP_OLDEST) {
        for (weir_chunk_t *c = b->queue.head; c; c = c->next) {
            if (c->state != CH_QUEUED) continue;
            weir_warn("buffer %s: total_limit_size reached, overflow_action drop_oldest_chunk: "
                      "dropping chunk %s with %" PRIu64 " events",
                      b->plugin_id, c->id_hex, c->events);
            list_remove(&b->queue, c);
            b->stats.queued_chunks--;
            b->bytes_total -= c->bytes;
            if (c->path) unlink(c->path);
            chunk_free(c);
            return b->bytes_total < b->total_limit_size ? WEIR_EMIT_DONE : WEIR_EMIT_FULL;
        }
    }
    if (!b->full_reported) {
        weir_warn("buffer %s is full (%" PRIu64 " bytes, total_limit_size %" PRIu64
                  "): inputs stop reading until chunks are delivered",
                  b->plugin_id, b->bytes_total, b->total_limit_size);
        b->full_reported = true;
    }
    return WEIR_EMIT_FULL;
}

/* The common case, without walking the entries: no record keys, and every event of the batch
 * in one time bucket (senders batch recent events), so the batch is one run for one chunk.
 * Returns false when the batch needs the per-event path (several buckets, or it would not
 * fit the staged chunk whole). */
static bool append_whole(weir_buffer_t *b, const weir_batch_t *batch, touched_t *t, size_t *nt,
                         weir_err_t *err, bool *failed)
{
    if (b->nvar_keys || batch->count == 0 || batch->tmin > batch->tmax) return false;
    int64_t tk = b->key_time ? bucket_of(b, batch->tmin) : 0;
    if (b->key_time && bucket_of(b, batch->tmax) != tk) return false;
    /* the key of any event: build it from the first entry's time and the batch's tag */
    weir_batch_iter_t it;
    weir_entry_t e;
    weir_batch_iter_init(&it, batch->data.data, batch->data.len);
    if (weir_batch_iter_next(&it, &e) != 1) return false;
    event_key(b, batch->tag, &e, &tk);
    size_t len = batch->data.len;
    /* a batch that no single chunk can hold is split per event */
    if (len + CHUNK_HDR_LEN > b->chunk_limit_size) return false;
    if (b->chunk_limit_records > 0 && batch->count > (uint64_t)b->chunk_limit_records) return false;
    weir_chunk_t *c = staged_find(b, b->keybuf.data);
    if (c && !chunk_has_room(b, c, len, batch->count)) {
        enqueue(b, c);
        c = NULL;
    }
    if (!c) {
        c = chunk_create(b, b->keybuf.data, batch->tag, &e, tk, err);
        if (!c) {
            *failed = true;
            return true;
        }
    }
    remember(t, nt, c);
    if (append_run(b, c, batch->data.data, len, batch->count) != 0) {
        *failed = true;
        return true;
    }
    if (chunk_is_full(b, c)) enqueue(b, c);
    return true;
}

weir_emit_result_t weir_buffer_append(weir_buffer_t *b, const weir_batch_t *batch, weir_emit_cb cb,
                                      void *arg)
{
    if (b->stopping) return WEIR_EMIT_FULL;
    if (b->disk_full) return WEIR_EMIT_FULL;
    if (b->bytes_total >= b->total_limit_size && over_limit(b) == WEIR_EMIT_FULL)
        return WEIR_EMIT_FULL;
    touched_t touched[MAX_TOUCHED];
    size_t nt = 0;
    weir_err_t err = {{0}};
    const char *prev_key = NULL;
    bool failed = false;
    if (append_whole(b, batch, touched, &nt, &err, &failed)) {
        if (failed) goto fail;
        goto done;
    }
    weir_batch_iter_t it;
    weir_entry_t e;
    weir_batch_iter_init(&it, batch->data.data, batch->data.len);
    const char *run_start = batch->data.data;
    weir_chunk_t *c = NULL;
    uint32_t run_n = 0;
    size_t run_len = 0;
    int64_t prev_tk = 0;
    /* The loop closes a run when the key changes or the chunk would overflow; a sentinel pass
     * with at_end closes the last one. */
    for (;;) {
        const char *entry_start = it.p;
        int r = weir_batch_iter_next(&it, &e);
        if (r < 0) {
            weir_error("buffer %s: batch with invalid entries rejected", b->plugin_id);
            goto fail_noerrno;
        }
        size_t elen = r ? (size_t)(it.p - entry_start) : 0;
        bool same = false;
        int64_t tk = 0;
        if (r) {
            /* Without record keys the key changes only with the time bucket: compare the
             * bucket, and build the key string only when it changes. */
            if (b->nvar_keys == 0 && c && prev_key) {
                tk = b->key_time ? bucket_of(b, e.time.sec) : 0;
                same = tk == prev_tk;
                if (!same) event_key(b, batch->tag, &e, &tk);
            } else {
                event_key(b, batch->tag, &e, &tk);
                same = c && prev_key && strcmp(prev_key, b->keybuf.data) == 0;
            }
            same = same && chunk_has_room(b, c, run_len + elen, run_n + 1);
        }
        if (!same && run_n > 0) {
            if (append_run(b, c, run_start, run_len, run_n) != 0) goto fail;
            if (chunk_is_full(b, c)) enqueue(b, c);
            run_n = 0;
            run_len = 0;
        }
        if (!r) break;
        if (!same) {
            if (elen + CHUNK_HDR_LEN > b->chunk_limit_size) {
                unsigned long skipped = 0;
                if (weir_ratelimit_ok(&b->drop_rl, &skipped))
                    weir_error("buffer %s: an event of %zu bytes is larger than chunk_limit_size "
                               "(%" PRIu64 "); dropped (%lu more like it not logged)",
                               b->plugin_id, elen, b->chunk_limit_size, skipped);
                run_start = it.p;
                c = NULL;
                continue;
            }
            c = staged_find(b, b->keybuf.data);
            if (c && !chunk_has_room(b, c, elen, 1)) {
                enqueue(b, c);
                c = NULL;
            }
            if (!c) {
                c = chunk_create(b, b->keybuf.data, batch->tag, &e, tk, &err);
                if (!c) goto fail;
            }
            if (nt == MAX_TOUCHED) {
                /* many distinct keys in one batch: make what is written so far durable as one
                 * unit is not possible without a bound, so refuse such a batch cleanly */
                unsigned long skipped = 0;
                if (weir_ratelimit_ok(&b->drop_rl, &skipped))
                    weir_error("buffer %s: one batch spans more than %d chunks; rejected (%lu more "
                               "like it not logged)",
                               b->plugin_id, MAX_TOUCHED, skipped);
                goto fail_noerrno;
            }
            remember(touched, &nt, c);
            free((char *)prev_key);
            prev_key = weir_strdup(b->keybuf.data);
            prev_tk = tk;
            run_start = entry_start;
        }
        run_n++;
        run_len += elen;
    }
    free((char *)prev_key);
done:
    if (b->flush_mode == FLUSH_IMMEDIATE)
        for (size_t i = 0; i < nt; i++)
            enqueue(b, touched[i].c);
    dispatch(b);
    if (b->type == BUF_MEMORY || b->ack_after_write) return WEIR_EMIT_DONE;
    sync_wait(b, cb, arg);
    return WEIR_EMIT_PENDING;
fail : {
    int e2 = errno;
    free((char *)prev_key);
    rollback(b, touched, nt);
    if (e2 == ENOSPC || e2 == EDQUOT || e2 == EFBIG) {
        enter_disk_full(b, e2);
        return WEIR_EMIT_FULL;
    }
    if (err.msg[0])
        weir_error("buffer %s: %s", b->plugin_id, err.msg);
    else
        weir_error("buffer %s: write failed: %s", b->plugin_id, strerror(e2));
    return WEIR_EMIT_ERROR;
}
fail_noerrno:
    free((char *)prev_key);
    rollback(b, touched, nt);
    return WEIR_EMIT_ERROR;
}

/* ---- disk full -------------------------------------------------------------------- */

static void leave_disk_full(weir_buffer_t *b, const char *why)
{
    if (!b->disk_full) return;
    b->disk_full = false;
    uv_timer_stop(b->disk_probe);
    weir_info("buffer %s: %s; accepting events again", b->plugin_id, why);
    weir_engine_space_available(b->eng);
}

static void disk_probe_cb(uv_timer_t *t)
{
    weir_buffer_t *b = t->data;
    struct statvfs sv;
    if (statvfs(b->path, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize >= BUF_DISK_MIN_FREE)
        leave_disk_full(b, "disk space is available again");
}

static void enter_disk_full(weir_buffer_t *b, int e)
{
    if (!b->disk_full)
        weir_error("buffer %s: cannot write to %s: %s; inputs stop reading until space returns "
                   "(everything stored is kept)",
                   b->plugin_id, b->path, strerror(e));
    b->disk_full = true;
    uv_timer_start(b->disk_probe, disk_probe_cb, BUF_DISK_PROBE_MS, BUF_DISK_PROBE_MS);
}

/* ---- flushing ----------------------------------------------------------------------- */

static bool chunk_ready(weir_buffer_t *b, weir_chunk_t *c, double mono, int64_t now)
{
    if (c->events == 0) return false;
    if (b->flush_mode == FLUSH_INTERVAL) return c->created + b->flush_interval <= mono;
    if (b->flush_mode == FLUSH_IMMEDIATE) return true;
    if (b->key_time) return c->meta.timekey + (int64_t)b->timekey + (int64_t)b->timekey_wait <= now;
    return false;
}

/* Enqueues the staged chunks that are ready. As Fluentd, a pass stops once
 * queued_chunks_limit_size chunks wait for a flush thread; the pass runs again on every tick
 * and after every delivered chunk, so the limit paces the queue without stalling it. */
static void enqueue_ready(weir_buffer_t *b)
{
    double mono = mono_now();
    int64_t now = (int64_t)wall_now();
    /* chunks waiting for a flush thread; those waiting out a retry do not count, or one
     * failing chunk would hold every other chunk back */
    size_t waiting = 0;
    for (weir_chunk_t *c = b->queue.head; c; c = c->next)
        waiting += c->state == CH_QUEUED && c->steps == 0;
    for (weir_chunk_t *c = b->staged.head, *next; c; c = next) {
        next = c->next;
        if (waiting >= (size_t)b->queued_chunks_limit_size) break;
        if (chunk_ready(b, c, mono, now)) {
            enqueue(b, c);
            waiting++;
        }
    }
}

static void tick_cb(uv_timer_t *t)
{
    weir_buffer_t *b = t->data;
    enqueue_ready(b);
    dispatch(b);
}

static double retry_delay(weir_buffer_t *b, unsigned steps)
{
    double d = b->retry_periodic ? b->retry_wait : b->retry_wait * pow(b->retry_base, steps);
    if (b->retry_max_interval > 0 && d > b->retry_max_interval) d = b->retry_max_interval;
    if (b->retry_randomize) {
        double r = (double)rand() / RAND_MAX; /* jitter only spreads retries; not security */
        d *= 1.0 - BUF_JITTER + 2 * BUF_JITTER * r;
    }
    return d;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char *p = weir_strdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) { /* parents: ordinary directories */
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = mkdir(p, mode) != 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

/* Writes a memory chunk's events as a chunk file, so a backup is readable the same way. */
static int write_chunk_file(const char *path, const chunk_meta_t *meta, const weir_buf_t *data,
                            uint64_t events)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    weir_buf_t m;
    weir_buf_init(&m);
    chunk_meta_encode(meta, &m);
    char h1[CHUNK_HDR_LEN], h2[CHUNK_HDR_LEN];
    chunk_record_header(h1, CHUNK_REC_META, m.data, m.len, 0);
    chunk_record_header(h2, CHUNK_REC_EVENTS, data->data, data->len, (uint32_t)events);
    struct iovec iov[4] = {
        {h1, CHUNK_HDR_LEN}, {m.data, m.len}, {h2, CHUNK_HDR_LEN}, {data->data, data->len}};
    int rc = write_full(fd, iov, 4);
    if (rc == 0) rc = fsync(fd);
    close(fd);
    weir_buf_free(&m);
    return rc;
}

/* Moves a chunk that cannot be delivered to the backup directory. Never deletes it. */
static void backup_chunk(weir_buffer_t *b, weir_chunk_t *c, const char *why)
{
    b->stats.backups++;
    if (b->disable_chunk_backup) {
        weir_error("buffer %s: chunk %s (%" PRIu64 " events) given up (%s); "
                   "disable_chunk_backup is set, so it is deleted",
                   b->plugin_id, c->id_hex, c->events, why);
        if (c->path) unlink(c->path);
        return;
    }
    if (mkdir_p(b->backup_dir, 0700) != 0) {
        weir_error("buffer %s: cannot create backup directory %s: %s; chunk %s stays at %s",
                   b->plugin_id, b->backup_dir, strerror(errno), c->id_hex,
                   c->path ? c->path : "(memory, lost)");
        return;
    }
    weir_buf_t dst;
    weir_buf_init(&dst);
    if (c->fluentd_meta) {
        /* Fluentd's own files, moved as they are: Fluentd (or weir) can read them back */
        const char *base = strrchr(c->path, '/');
        weir_buf_printf(&dst, "%s%s.meta", b->backup_dir, base);
        if (rename(c->fluentd_meta, dst.data) != 0)
            weir_warn("buffer %s: cannot move %s to backup: %s", b->plugin_id, c->fluentd_meta,
                      strerror(errno));
        dst.len = 0;
        weir_buf_printf(&dst, "%s%s", b->backup_dir, base);
    } else {
        weir_buf_printf(&dst, "%s/%s.chunk", b->backup_dir, c->id_hex);
    }
    int rc = c->path ? rename(c->path, dst.data)
                     : write_chunk_file(dst.data, &c->meta, &c->mem, c->events);
    if (rc == 0)
        weir_error("buffer %s: chunk %s (%" PRIu64 " events) given up (%s); moved to %s",
                   b->plugin_id, c->id_hex, c->events, why, dst.data);
    else
        weir_error(
            "buffer %s: chunk %s given up (%s) but cannot be moved to %s: %s; it stays at %s",
            b->plugin_id, c->id_hex, why, dst.data, strerror(errno),
            c->path ? c->path : "(memory)");
    weir_buf_free(&dst);
}

static void chunk_delivered(weir_buffer_t *b, weir_chunk_t *c)
{
    bool was_full = b->bytes_total >= b->total_limit_size;
    b->bytes_total -= c->bytes;
    chunk_free(c);
    if (b->full_reported && b->bytes_total < b->total_limit_size) {
        b->full_reported = false;
        weir_info("buffer %s has room again", b->plugin_id);
    }
    if (was_full || b->disk_full) {
        if (b->disk_full) leave_disk_full(b, "a delivered chunk freed disk space");
        weir_engine_space_available(b->eng);
    }
}

void weir_chunk_write_done(weir_chunk_t *c, weir_write_status_t status, const char *msg)
{
    weir_buffer_t *b = c->b;
    b->writing--;
    list_remove(&b->queue, c);
    if (status == WEIR_WRITE_OK) {
        if (c->steps)
            weir_info("buffer %s: chunk %s delivered after %u retries", b->plugin_id, c->id_hex,
                      c->steps);
        b->stats.events_written += c->events;
        b->stats.queued_chunks--;
        b->failing_since = 0;
        weir_metrics_output_written(b->pm, c->events);
        if (c->path && unlink(c->path) != 0)
            weir_warn("buffer %s: cannot remove delivered chunk %s: %s", b->plugin_id, c->path,
                      strerror(errno));
        if (c->fluentd_meta) unlink(c->fluentd_meta);
        chunk_delivered(b, c);
        enqueue_ready(b);
        dispatch(b);
        maybe_finish_stop(b);
        return;
    }
    b->stats.write_errors++;
    double now = wall_now();
    if (!c->first_failure) c->first_failure = now;
    if (!b->failing_since) b->failing_since = now;
    snprintf(b->last_error, sizeof b->last_error, "%s", msg && *msg ? msg : "write failed");
    bool give_up = status == WEIR_WRITE_UNRECOVERABLE ||
                   (!b->retry_forever &&
                    ((b->retry_max_times > 0 && c->steps >= (unsigned)b->retry_max_times) ||
                     now - c->first_failure >= b->retry_timeout));
    weir_metrics_output_failed(b->pm, !give_up, give_up);
    if (status == WEIR_WRITE_UNRECOVERABLE) weir_metrics_output_unrecoverable(b->pm);
    if (give_up) {
        b->stats.queued_chunks--;
        backup_chunk(b, c, msg ? msg : "write failed");
        chunk_delivered(b, c);
    } else {
        double d = retry_delay(b, c->steps);
        c->steps++;
        b->stats.retries++;
        c->next_try = mono_now() + d;
        c->state = CH_QUEUED;
        weir_warn("buffer %s: chunk %s failed to flush (%s); retry %u in %.1fs", b->plugin_id,
                  c->id_hex, msg ? msg : "error", c->steps, d);
        /* back at the head, as Fluentd's takeback, but other chunks do not wait for it */
        list_push_front(&b->queue, c);
    }
    dispatch(b);
    maybe_finish_stop(b);
}

static void dispatch(weir_buffer_t *b)
{
    if (!b->sink.write) return;
    double now = mono_now();
    for (weir_chunk_t *c = b->queue.head, *next; c && b->writing < (size_t)b->flush_thread_count;
         c = next) {
        next = c->next;
        if (c->state != CH_QUEUED || c->next_try > now) continue;
        c->state = CH_WRITING;
        b->writing++;
        weir_metrics_output_write(b->pm);
        b->sink.write(b->sink.out, c);
    }
}

/* ---- recovery ----------------------------------------------------------------------- */

static bool parse_chunk_name(const char *name, char *state, char hex[33])
{
    /* buffer.<b|q><32 hex>.chunk */
    if (strncmp(name, "buffer.", 7) != 0 || strlen(name) != 7 + 1 + 32 + 6) return false;
    if (name[7] != 'b' && name[7] != 'q') return false;
    if (strcmp(name + 40, ".chunk") != 0) return false;
    for (int i = 0; i < 32; i++) {
        char ch = name[8 + i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
        hex[i] = ch;
    }
    hex[32] = '\0';
    *state = name[7];
    return true;
}

static void meta_key(weir_buffer_t *b, const chunk_meta_t *m, weir_buf_t *k)
{
    k->len = 0;
    if (m->has_timekey) weir_buf_printf(k, "%" PRId64, m->timekey);
    weir_buf_putc(k, '\x1f');
    if (m->tag) weir_buf_append(k, m->tag, strlen(m->tag));
    for (size_t i = 0; i < b->nvar_keys; i++) {
        weir_buf_putc(k, '\x1f');
        for (size_t j = 0; j < m->nvars; j++)
            if (strcmp(m->var_keys[j], b->var_keys[i]) == 0)
                weir_buf_append(k, m->var_values[j], strlen(m->var_values[j]));
    }
    weir_buf_putc(k, '\0');
}

/* Copies bytes [from, EOF) of a damaged chunk into the backup directory. */
static int save_damaged_tail(weir_buffer_t *b, int fd, const char *hex, off_t from, off_t size,
                             char **where)
{
    if (mkdir_p(b->backup_dir, 0700) != 0) return -1;
    weir_buf_t dst;
    weir_buf_init(&dst);
    weir_buf_printf(&dst, "%s/%s.damaged-at-%lld", b->backup_dir, hex, (long long)from);
    int out = open(dst.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = out < 0 ? -1 : 0;
    char buf[65536];
    for (off_t off = from; rc == 0 && off < size;) {
        ssize_t n = pread(fd, buf, sizeof buf, off);
        if (n <= 0 || write(out, buf, (size_t)n) != n) rc = -1;
        off += n > 0 ? n : 0;
    }
    if (out >= 0) {
        if (rc == 0) rc = fsync(out);
        close(out);
    }
    *where = dst.data;
    return rc;
}

static void fmt_time(uint32_t sec, char out[32])
{
    time_t t = sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int recover_one(weir_buffer_t *b, const char *name, char state, const char *hex,
                       weir_buf_t *key)
{
    char *path = weir_malloc(strlen(b->path) + strlen(name) + 2);
    sprintf(path, "%s/%s", b->path, name);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        weir_error("buffer %s: cannot open %s: %s; left as it is", b->plugin_id, path,
                   strerror(errno));
        free(path);
        return 0;
    }
    chunk_scan_t s;
    weir_err_t err;
    if (chunk_scan_fd(fd, &s, &err) != 0) {
        weir_error("buffer %s: cannot read %s: %s; left as it is", b->plugin_id, path, err.msg);
        close(fd);
        free(path);
        return 0;
    }
    if (!s.meta_ok) {
        /* nothing can be trusted without the metadata: keep the whole file in backup */
        close(fd);
        mkdir_p(b->backup_dir, 0700);
        weir_buf_t dst;
        weir_buf_init(&dst);
        weir_buf_printf(&dst, "%s/%s.no-metadata", b->backup_dir, hex);
        if (s.file_size == 0) {
            weir_warn("buffer %s: %s is empty (a crash right after it was created); removed",
                      b->plugin_id, path);
            unlink(path);
        } else if (rename(path, dst.data) == 0) {
            weir_error("buffer %s: %s has no valid metadata (%lld bytes); moved to %s",
                       b->plugin_id, path, (long long)s.file_size, dst.data);
        } else {
            weir_error("buffer %s: %s has no valid metadata and cannot be moved: %s", b->plugin_id,
                       path, strerror(errno));
        }
        weir_buf_free(&dst);
        chunk_meta_free(&s.meta);
        free(path);
        return 0;
    }
    if (s.corrupt) {
        char *where = NULL;
        int rc = save_damaged_tail(b, fd, hex, s.good_end, s.file_size, &where);
        char t0[32] = "?", t1[32] = "?";
        if (s.bad_min_sec) fmt_time(s.bad_min_sec, t0);
        if (s.bad_max_sec) fmt_time(s.bad_max_sec, t1);
        if (rc == 0) {
            weir_error("buffer %s: chunk %s: checksum mismatch at byte %lld; kept the first %u "
                       "records (%" PRIu64 " events), moved the rest (%lld bytes, about %" PRIu64
                       " events from %s to %s) to %s",
                       b->plugin_id, hex, (long long)s.good_end, s.records ? s.records - 1 : 0,
                       s.events, (long long)(s.file_size - s.good_end), s.bad_events, t0, t1,
                       where);
        } else {
            weir_error("buffer %s: chunk %s is damaged at byte %lld and the damaged part cannot "
                       "be saved (%s); the chunk is left untouched for inspection",
                       b->plugin_id, hex, (long long)s.good_end, strerror(errno));
            free(where);
            close(fd);
            chunk_meta_free(&s.meta);
            free(path);
            return 0;
        }
        free(where);
    } else if (s.torn_tail) {
        weir_warn("buffer %s: chunk %s ends in a cut write (%lld bytes after the last whole "
                  "record, never acknowledged); cut back",
                  b->plugin_id, hex, (long long)(s.file_size - s.good_end));
    }
    if ((s.corrupt || s.torn_tail) && ftruncate(fd, s.good_end) != 0)
        weir_error("buffer %s: cannot cut %s: %s", b->plugin_id, path, strerror(errno));
    if (s.events == 0) {
        close(fd);
        unlink(path);
        chunk_meta_free(&s.meta);
        free(path);
        return 0;
    }
    weir_chunk_t *c = weir_calloc(1, sizeof *c);
    c->b = b;
    c->fd = -1;
    c->meta = s.meta;
    memcpy(c->id_hex, hex, 33);
    c->path = path;
    c->bytes = (uint64_t)s.good_end;
    c->events = s.events;
    c->created = mono_now();
    meta_key(b, &c->meta, key);
    c->key = weir_strdup(key->data);
    b->bytes_total += c->bytes;
    if (state == 'b' && !staged_find(b, c->key) && !chunk_is_full(b, c)) {
        if (lseek(fd, 0, SEEK_END) < 0 || fcntl(fd, F_SETFL, O_APPEND) != 0) {
            close(fd);
            fd = -1;
        }
        c->fd = fd;
        c->state = CH_STAGED;
        list_push(&b->staged, c);
        b->stats.staged_chunks++;
        if (c->fd < 0) enqueue(b, c);
    } else {
        close(fd);
        c->state = CH_STAGED; /* so enqueue() accepts it */
        list_push(&b->staged, c);
        b->stats.staged_chunks++;
        if (state == 'q') {
            /* already renamed: just queue it */
            list_remove(&b->staged, c);
            b->stats.staged_chunks--;
            c->state = CH_QUEUED;
            list_push(&b->queue, c);
            b->stats.queued_chunks++;
        } else {
            enqueue(b, c);
        }
    }
    return 1;
}

static int cmp_names(const void *a, const void *b)
{
    /* by the id part, which starts with the creation time */
    return strcmp((*(char *const *)a) + 8, (*(char *const *)b) + 8);
}

/* ---- Fluentd's buffer files ----------------------------------------------------------
 *
 * A buffer directory that Fluentd used holds buffer.b<id>.log / buffer.q<id>.log with a
 * .meta sibling (docs: ../shared/docs/s3-output.md section 3). Their data is what Fluentd's
 * output had already formatted (for out_s3 and out_file: text lines), so weir adopts each
 * as a queued chunk the output stores as it is: swapping the container keeps what Fluentd
 * had not uploaded yet. A file without a readable .meta is left where it is, with a warning. */

static bool parse_fluentd_name(const char *name, char hex[33])
{
    /* buffer.<b|q><32 hex>.log */
    size_t n = strlen(name);
    if (strncmp(name, "buffer.", 7) != 0 || n != 7 + 1 + 32 + 4) return false;
    if ((name[7] != 'b' && name[7] != 'q') || strcmp(name + 40, ".log") != 0) return false;
    for (int i = 0; i < 32; i++) {
        char ch = name[8 + i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
        hex[i] = ch;
    }
    hex[32] = '\0';
    return true;
}

#define FLUENTD_META_MAX (1024 * 1024) /* a .meta is a few hundred bytes */

/* Reads Fluentd's .meta: C1 00, a u32 length, a msgpack map (or, legacy, the whole file is
 * the map). Fills timekey, tag, variables, id and the record count. */
static int read_fluentd_meta(const char *path, chunk_meta_t *m, uint64_t *records)
{
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char *buf = weir_malloc(FLUENTD_META_MAX);
    ssize_t n = read(fd, buf, FLUENTD_META_MAX);
    close(fd);
    const char *p = buf, *end = buf + (n > 0 ? n : 0);
    if (n >= 6 && (unsigned char)buf[0] == 0xc1 && buf[1] == 0) {
        uint32_t len = ((uint32_t)(unsigned char)buf[2] << 24) |
                       ((uint32_t)(unsigned char)buf[3] << 16) |
                       ((uint32_t)(unsigned char)buf[4] << 8) | (unsigned char)buf[5];
        if (len > (size_t)(n - 6)) goto bad;
        p = buf + 6;
        end = p + len;
    }
    weir_mp_obj_t o, k, v;
    ssize_t h = weir_mp_read(p, (size_t)(end - p), &o);
    if (h <= 0 || o.type != WEIR_MP_MAP) goto bad;
    p += h;
    bool have_id = false;
    for (uint32_t i = 0; i < o.v.n; i++) {
        ssize_t kn = weir_mp_read(p, (size_t)(end - p), &k);
        if (kn <= 0) goto bad;
        p += kn;
        const char *vstart = p;
        ssize_t vn = weir_mp_read(p, (size_t)(end - p), &v);
        if (vn <= 0) goto bad;
        bool str = k.type == WEIR_MP_STR;
        if (str && k.len == 2 && memcmp(k.ptr, "id", 2) == 0 && v.type == WEIR_MP_BIN &&
            v.len == 16) {
            memcpy(m->id, v.ptr, 16);
            have_id = true;
        } else if (str && k.len == 7 && memcmp(k.ptr, "timekey", 7) == 0 &&
                   (v.type == WEIR_MP_UINT || v.type == WEIR_MP_INT)) {
            m->has_timekey = true;
            m->timekey = v.type == WEIR_MP_UINT ? (int64_t)v.v.u : v.v.i;
        } else if (str && k.len == 3 && memcmp(k.ptr, "tag", 3) == 0 && v.type == WEIR_MP_STR) {
            m->tag = weir_strndup(v.ptr, v.len);
        } else if (str && k.len == 1 && k.ptr[0] == 's' && v.type == WEIR_MP_UINT) {
            *records = v.v.u;
        } else if (str && k.len == 9 && memcmp(k.ptr, "variables", 9) == 0 &&
                   v.type == WEIR_MP_MAP && v.v.n <= WEIR_BUFFER_MAX_KEYS) {
            const char *q = p + vn;
            m->var_keys = weir_calloc(v.v.n, sizeof(char *));
            m->var_values = weir_calloc(v.v.n, sizeof(char *));
            for (uint32_t j = 0; j < v.v.n; j++) {
                weir_mp_obj_t vk, vv;
                ssize_t a = weir_mp_read(q, (size_t)(end - q), &vk);
                if (a <= 0 || vk.type != WEIR_MP_STR) goto bad;
                q += a;
                ssize_t c = weir_mp_read(q, (size_t)(end - q), &vv);
                if (c <= 0) goto bad;
                m->var_keys[m->nvars] = weir_strndup(vk.ptr, vk.len);
                m->var_values[m->nvars] =
                    vv.type == WEIR_MP_STR ? weir_strndup(vv.ptr, vv.len) : weir_strdup("");
                m->nvars++;
                ssize_t skip = weir_mp_skip(q, (size_t)(end - q), 8);
                if (skip <= 0) goto bad;
                q += skip;
            }
        }
        ssize_t skip = weir_mp_skip(vstart, (size_t)(end - vstart), 8);
        if (skip <= 0) goto bad;
        p = vstart + skip;
    }
    free(buf);
    return have_id ? 0 : -1;
bad:
    free(buf);
    chunk_meta_free(m);
    return -1;
}

/* Adopts one Fluentd chunk as a queued chunk. Returns 1 when adopted. */
static int adopt_fluentd(weir_buffer_t *b, const char *name)
{
    weir_buf_t path, meta;
    weir_buf_init(&path);
    weir_buf_init(&meta);
    weir_buf_printf(&path, "%s/%s", b->path, name);
    weir_buf_printf(&meta, "%s/%s.meta", b->path, name);
    chunk_meta_t m;
    uint64_t records = 0;
    struct stat st;
    if (stat(path.data, &st) != 0 || read_fluentd_meta(meta.data, &m, &records) != 0) {
        weir_warn("buffer %s: %s looks like a Fluentd chunk but its .meta is missing or "
                  "unreadable; left as it is",
                  b->plugin_id, path.data);
        weir_buf_free(&path);
        weir_buf_free(&meta);
        return 0;
    }
    unsigned char magic[2] = {0, 0};
    int fd = open(path.data, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, magic, 2) != 2) magic[0] = 0;
        close(fd);
    }
    if (magic[0] == 0x1f && magic[1] == 0x8b) {
        /* a buffer with compress gzip: the data is gzip members, which no output here stores
         * as they are */
        weir_warn("buffer %s: %s is a Fluentd chunk compressed with gzip (compress gzip); weir "
                  "cannot adopt it; left as it is",
                  b->plugin_id, path.data);
        chunk_meta_free(&m);
        weir_buf_free(&path);
        weir_buf_free(&meta);
        return 0;
    }
    weir_chunk_t *c = weir_calloc(1, sizeof *c);
    c->b = b;
    c->fd = -1;
    c->meta = m;
    hex_id(c->meta.id, c->id_hex);
    c->path = path.data;
    c->fluentd_meta = meta.data;
    c->bytes = (uint64_t)st.st_size;
    c->events = records;
    c->created = mono_now();
    c->key = weir_strdup("");
    c->state = CH_QUEUED;
    b->bytes_total += c->bytes;
    list_push(&b->queue, c);
    b->stats.queued_chunks++;
    return 1;
}

static int recover(weir_buffer_t *b, weir_err_t *err)
{
    DIR *d = opendir(b->path);
    if (!d) {
        weir_err_set(err, "cannot read buffer directory %s: %s", b->path, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0, foreign = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char state, hex[33];
        if (!parse_chunk_name(de->d_name, &state, hex)) {
            if (parse_fluentd_name(de->d_name, hex))
                foreign += (size_t)adopt_fluentd(b, de->d_name);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = weir_realloc(names, cap * sizeof *names);
        }
        names[n++] = weir_strdup(de->d_name);
    }
    closedir(d);
    if (foreign)
        weir_warn("buffer %s: adopted %zu chunks that Fluentd left in %s; they are delivered as "
                  "Fluentd formatted them",
                  b->plugin_id, foreign, b->path);
    if (n > 1) qsort(names, n, sizeof *names, cmp_names); /* qsort(NULL, 0) is undefined */
    weir_buf_t key;
    weir_buf_init(&key);
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        char state, hex[33];
        parse_chunk_name(names[i], &state, hex);
        found += (size_t)recover_one(b, names[i], state, hex, &key);
        free(names[i]);
    }
    free(names);
    weir_buf_free(&key);
    if (found)
        weir_info("buffer %s: resumed %zu chunks from %s (%zu staged, %zu queued, %" PRIu64
                  " bytes)",
                  b->plugin_id, found, b->path, b->staged.n, b->queue.n, b->bytes_total);
    return 0;
}

/* ---- metrics and status ----------------------------------------------------------- */

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
    double age = wall_now() - (double)oldest;
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
    return since ? wall_now() - since : 0;
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
    double wait = worst->next_try - mono_now();
    st->retry_next = wall_now() + (wait > 0 ? wait : 0);
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
    retry_info(b, st);
}

/* Registers the buffer's gauges under the output's labels (owner: the buffer, so that freeing
 * the buffer removes them) and its status callback. */
static void register_metrics(weir_buffer_t *b, weir_plugin_metrics_t *pm)
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

/* ---- life cycle --------------------------------------------------------------------- */

weir_buffer_t *weir_buffer_new(weir_engine_t *eng, weir_conf_section_t *sec,
                               const weir_buffer_defaults_t *defaults, const char *plugin_id,
                               const weir_buffer_sink_t *sink, weir_err_t *err)
{
    weir_buffer_t *b = weir_calloc(1, sizeof *b);
    b->eng = eng;
    b->sink = *sink;
    b->plugin_id = weir_strdup(plugin_id);
    b->lock_fd = b->dir_fd = -1;
    b->drop_rl.interval_ms = BUF_DROP_WARN_MS;
    if (read_conf(b, sec, defaults, err) != 0) {
        weir_buffer_free(b);
        return NULL;
    }
    register_metrics(b, weir_engine_plugin_metrics(eng));
    weir_buf_t bd;
    weir_buf_init(&bd);
    if (b->type == BUF_FILE) {
        weir_buf_printf(&bd, "%s/backup", b->path);
    } else {
        const char *root = getenv("WEIR_BACKUP_DIR");
        weir_buf_printf(&bd, "%s/%s", root && *root ? root : "/tmp/weir/backup", plugin_id);
    }
    b->backup_dir = bd.data;
    return b;
}

int weir_buffer_start(weir_buffer_t *b, weir_err_t *err)
{
    b->loop = weir_engine_loop(b->eng);
    signal(SIGXFSZ, SIG_IGN); /* RLIMIT_FSIZE shows up as EFBIG, handled as a full disk */
    if (b->type == BUF_FILE) {
        if (mkdir_p(b->path, 0700) != 0) {
            weir_err_set(err, "cannot create buffer directory %s: %s", b->path, strerror(errno));
            return -1;
        }
        chmod(b->path, 0700);
        weir_buf_t lp;
        weir_buf_init(&lp);
        weir_buf_printf(&lp, "%s/.weir.lock", b->path);
        b->lock_fd = open(lp.data, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (b->lock_fd < 0 || flock(b->lock_fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            char pid[32] = "";
            if (b->lock_fd >= 0) {
                ssize_t n = pread(b->lock_fd, pid, sizeof pid - 1, 0);
                pid[n > 0 ? n : 0] = '\0';
                pid[strcspn(pid, "\n")] = '\0';
            }
            weir_err_set(err, "buffer path %s is in use by another weir process%s%s%s (%s)",
                         b->path, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "",
                         e == EWOULDBLOCK ? "lock held" : strerror(e));
            weir_buf_free(&lp);
            return -1;
        }
        weir_buf_free(&lp);
        char pid[32];
        int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
        if (ftruncate(b->lock_fd, 0) != 0 || pwrite(b->lock_fd, pid, (size_t)n, 0) != n)
            weir_warn("buffer %s: cannot write the pid into the lock file", b->plugin_id);
        b->dir_fd = open(b->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (b->dir_fd < 0) {
            weir_err_set(err, "cannot open buffer directory %s: %s", b->path, strerror(errno));
            return -1;
        }
        if (recover(b, err) != 0) return -1;
    }
    b->tick = weir_calloc(1, sizeof *b->tick);
    uv_timer_init(b->loop, b->tick);
    b->tick->data = b;
    uv_timer_start(b->tick, tick_cb, BUF_TICK_MS, BUF_TICK_MS);
    b->disk_probe = weir_calloc(1, sizeof *b->disk_probe);
    uv_timer_init(b->loop, b->disk_probe);
    b->disk_probe->data = b;
    dispatch(b);
    return 0;
}

void weir_buffer_flush_all(weir_buffer_t *b)
{
    while (b->staged.head)
        enqueue(b, b->staged.head);
    for (weir_chunk_t *c = b->queue.head; c; c = c->next)
        c->next_try = 0;
    dispatch(b);
}

static bool only_retry_waits(weir_buffer_t *b)
{
    for (weir_chunk_t *c = b->queue.head; c; c = c->next)
        if (c->state == CH_WRITING || c->steps == 0) return false;
    return true;
}

static void maybe_finish_stop(weir_buffer_t *b)
{
    if (!b->stopping || !b->stop_done) return;
    if (b->nrunning || b->pending || b->writing) return;
    /* with flush_at_shutdown, go on until the queue is empty or only failing chunks remain
     * (they stay on disk for the next start, as Fluentd) */
    if (b->flush_at_shutdown && !b->reload_handover && b->queue.head && !only_retry_waits(b))
        return;
    if (b->tick) uv_timer_stop(b->tick);
    if (b->disk_probe) uv_timer_stop(b->disk_probe);
    if (b->type == BUF_MEMORY && (b->queue.n || b->staged.n))
        weir_warn("buffer %s: %zu memory chunks are lost at shutdown (use @type file to keep "
                  "them)",
                  b->plugin_id, b->queue.n + b->staged.n);
    void (*done)(void *) = b->stop_done;
    b->stop_done = NULL;
    done(b->stop_arg);
}

void weir_buffer_stop(weir_buffer_t *b, void (*done)(void *), void *arg)
{
    b->stopping = true;
    b->stop_done = done;
    b->stop_arg = arg;
    /* a reload hands a file buffer's chunks to the next output on disk: no flush then */
    b->reload_handover = b->type == BUF_FILE && weir_engine_reloading(b->eng);
    if (b->flush_at_shutdown && !b->reload_handover) {
        weir_buffer_flush_all(b);
        for (weir_chunk_t *c = b->queue.head; c; c = c->next)
            c->steps = 0;
    }
    sync_start(b);
    maybe_finish_stop(b);
}

void weir_buffer_free(weir_buffer_t *b)
{
    if (!b) return;
    if (b->pm) {
        weir_metrics_unregister(weir_plugin_metrics_registry(b->pm), b);
        weir_plugin_metrics_set_status(b->pm, NULL, NULL);
    }
    for (weir_chunk_t *c = b->staged.head, *n; c; c = n) {
        n = c->next;
        chunk_free(c);
    }
    for (weir_chunk_t *c = b->queue.head, *n; c; c = n) {
        n = c->next;
        chunk_free(c);
    }
    for (size_t i = 0; i < b->ndirty; i++)
        close(b->dirty_fds[i]);
    free(b->dirty_fds);
    if (b->tick) uv_close((uv_handle_t *)b->tick, (uv_close_cb)free);
    if (b->disk_probe) uv_close((uv_handle_t *)b->disk_probe, (uv_close_cb)free);
    if (b->lock_fd >= 0) close(b->lock_fd);
    if (b->dir_fd >= 0) close(b->dir_fd);
    for (size_t i = 0; i < b->nvar_keys; i++)
        free(b->var_keys[i]);
    weir_tz_free(&b->zone);
    weir_buf_free(&b->keybuf);
    free(b->path);
    free(b->backup_dir);
    free(b->plugin_id);
    free(b);
}

/* ---- accessors ---------------------------------------------------------------------- */

const char *weir_chunk_tag(const weir_chunk_t *c)
{
    return c->meta.tag;
}

bool weir_chunk_timekey(const weir_chunk_t *c, int64_t *timekey)
{
    if (!c->meta.has_timekey) return false;
    *timekey = c->meta.timekey;
    return true;
}

const char *weir_chunk_var(const weir_chunk_t *c, const char *key)
{
    for (size_t i = 0; i < c->meta.nvars; i++)
        if (strcmp(c->meta.var_keys[i], key) == 0) return c->meta.var_values[i];
    return NULL;
}

const char *weir_chunk_id_hex(const weir_chunk_t *c)
{
    return c->id_hex;
}

uint64_t weir_chunk_events(const weir_chunk_t *c)
{
    return c->events;
}

uint64_t weir_chunk_bytes(const weir_chunk_t *c)
{
    return c->bytes;
}

void *weir_chunk_get_data(const weir_chunk_t *c)
{
    return c->out_data;
}

void weir_chunk_set_data(weir_chunk_t *c, void *data)
{
    c->out_data = data;
}

struct weir_chunk_reader {
    weir_chunk_t *c;
    chunk_reader_t file;
    bool mem_done;
    int raw_fd; /* adopted Fluentd chunk */
    weir_buf_t raw;
};

bool weir_chunk_is_fluentd(const weir_chunk_t *c)
{
    return c->fluentd_meta != NULL;
}

#define RAW_PIECE (1024 * 1024)

int weir_chunk_reader_raw(weir_chunk_reader_t *r, const char **data, size_t *len, weir_err_t *err)
{
    if (r->raw_fd < 0) {
        r->raw_fd = open(r->c->path, O_RDONLY | O_CLOEXEC);
        if (r->raw_fd < 0) {
            weir_err_set(err, "open %s: %s", r->c->path, strerror(errno));
            return -1;
        }
    }
    weir_buf_reserve(&r->raw, RAW_PIECE);
    ssize_t n;
    do {
        n = read(r->raw_fd, r->raw.data, RAW_PIECE);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        weir_err_set(err, "read %s: %s", r->c->path, strerror(errno));
        return -1;
    }
    *data = r->raw.data;
    *len = (size_t)n;
    return n > 0;
}

weir_chunk_reader_t *weir_chunk_reader_open(weir_chunk_t *c, weir_err_t *err)
{
    weir_chunk_reader_t *r = weir_calloc(1, sizeof *r);
    r->c = c;
    r->file.fd = -1;
    r->raw_fd = -1;
    if (c->fluentd_meta) return r; /* read with weir_chunk_reader_raw */
    if (c->path && chunk_reader_open(&r->file, c->path, (off_t)c->bytes, err) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

int weir_chunk_reader_next(weir_chunk_reader_t *r, const char **entries, size_t *len,
                           uint32_t *count, weir_err_t *err)
{
    if (!r->c->path) {
        if (r->mem_done || r->c->mem.len == 0) return 0;
        r->mem_done = true;
        *entries = r->c->mem.data;
        *len = r->c->mem.len;
        *count = (uint32_t)r->c->events;
        return 1;
    }
    int rc = chunk_reader_next(&r->file, count, err);
    if (rc == 1) {
        *entries = r->file.payload.data;
        *len = r->file.payload.len;
    } else if (rc == 0 && r->file.events != r->c->events) {
        weir_err_set(err, "chunk %s: read %" PRIu64 " events, expected %" PRIu64, r->c->id_hex,
                     r->file.events, r->c->events);
        return -1;
    }
    return rc;
}

void weir_chunk_reader_close(weir_chunk_reader_t *r)
{
    if (!r) return;
    if (r->c->path && !r->c->fluentd_meta) chunk_reader_close(&r->file);
    if (r->raw_fd >= 0) close(r->raw_fd);
    weir_buf_free(&r->raw);
    free(r);
}

void weir_buffer_get_stats(const weir_buffer_t *b, weir_buffer_stats_t *out)
{
    *out = b->stats;
    out->bytes = b->bytes_total;
}

bool weir_buffer_has_key(const weir_buffer_t *b, const char *key)
{
    if (strcmp(key, "time") == 0) return b->key_time;
    if (strcmp(key, "tag") == 0) return b->key_tag;
    for (size_t i = 0; i < b->nvar_keys; i++)
        if (strcmp(b->var_keys[i], key) == 0) return true;
    return false;
}

double weir_buffer_timekey(const weir_buffer_t *b)
{
    return b->key_time ? b->timekey : 0;
}

bool weir_buffer_timekey_utc(const weir_buffer_t *b)
{
    return b->timekey_use_utc;
}

int weir_buffer_timekey_offset(const weir_buffer_t *b, int64_t t)
{
    return b->timekey_use_utc ? 0 : weir_tz_offset((weir_tz_t *)&b->zone, t, NULL);
}
