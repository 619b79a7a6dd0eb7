/* <filter> @type dedupe: an event whose key weir has already stored is acknowledged and not
 * stored again.
 *
 * The key is one or more fields of the record (`key uid`, `key sid,ei`), reduced to 128 bits by
 * two SipHash-2-4 runs under two keys drawn once and kept in the index directory (a sender who
 * cannot read that file cannot make two keys collide, and a collision is the only way this
 * filter could drop an event it should store).
 *
 * The invariant: a key counts as seen only once the event that carries it is durable. A key
 * enters the table "in flight", owned by the hold of the batch that carries it (see
 * weir_filter_ops_t); when the router settles that hold as durable, the key becomes seen and is
 * appended to the journal, and the sender's ack waits for the journal's fdatasync. So an
 * acknowledged event's key survives a crash, and a crash can only make weir store an event
 * twice (one whose output was durable but whose key was not yet synced: it was not acked
 * either), never drop one it did not store. A batch that is not taken (FULL) or fails removes
 * its in-flight keys. A copy of an in-flight key arriving in another batch is dropped from that
 * batch, and that batch's ack waits for the first batch's fate: if the first fails, the second
 * fails too (no ack), and the sender's resend is stored.
 *
 * Memory: a ring of entries in arrival order (24 bytes each, grown by doubling up to the cap)
 * and an open-addressing index of ring positions, a power of two of 8-byte slots at most half
 * full (16 to 32 bytes per key). The cap is the most keys whose ring and index fit in
 * memory_limit (64 MiB: 1.4 million). Keys leave the ring's tail when older than `window`, or
 * earlier when the ring holds that many (counted, with a warning). Every operation is O(1) on
 * average per event.
 *
 * The journal: segments path/journal-<created>-<seq> of 24-byte records (h0, h1, arrival
 * seconds, CRC32C), written by pool jobs (up to DD_JOBS at once, each at an offset reserved
 * for it) that write and fdatasync everything committed since the job before (a group commit). A
 * new segment begins at every start and every window/8; a segment is deleted once everything in it
 * is older than the window. At start the segments are read back; a torn or corrupt record is
 * skipped (it was never synced, so no ack depended on it). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "weir/crc32c.h"
#include "weir/dirsync.h"
#include "weir/hash.h"
#include "weir/log.h"
#include "weir/metrics.h"
#include "weir/mp.h"
#include "weir/plugin.h"
#include "weir/record.h"

#define DD_FIELDS_MAX 8
#define DD_REC_LEN 24
#define DD_KEY_FILE_LEN 40 /* "WEIRDDK1" + 32 key bytes */
#define DD_RING_BYTES 24   /* per key */
#define DD_INDEX_BYTES 8   /* per index slot; at least two slots per key */
#define DD_MIN_RING 1024
/* file names are made in fixed buffers of DD_NAME_MAX: the longest `path` leaves room for
 * "/journal-<created>-<seq>" and "/hash.key.tmp" */
#define DD_NAME_MAX 600
#define DD_PATH_MAX 512
#define DD_MIN_KEYS 16
#define DD_MIN_MEMORY (DD_RING_BYTES * DD_MIN_KEYS + DD_INDEX_BYTES * 2 * DD_MIN_KEYS)
#define DD_DEFAULT_WINDOW (24 * 3600.0)
#define DD_DEFAULT_MEMORY (64ull << 20)
#define DD_JOBS 3 /* journal writes in flight at once */
#define FLIGHT_DONE 0u
#define FLIGHT_DEAD UINT32_MAX

typedef struct dd_entry {
    uint64_t h0, h1;
    uint32_t sec;    /* when weir first saw the key */
    uint32_t flight; /* FLIGHT_DONE, FLIGHT_DEAD, or the owning hold's id */
} dd_entry_t;

typedef struct dd_hold dd_hold_t;
struct dd_hold {
    uint32_t id;
    uint64_t *seqs; /* its in-flight entries */
    size_t nseqs, cap;
    dd_hold_t **dependents; /* holds waiting for this one's fate */
    size_t ndependents, dcap;
    size_t waiting; /* holds this one waits for */
    bool dep_failed, settled, released;
    weir_emit_cb done;
    void *arg;
    dd_hold_t *next_sync; /* in a sync job's list */
};

typedef struct dd_job {
    uv_work_t req;
    struct dedupe *d;
    weir_buf_t data;
    dd_hold_t *holds;
    bool rotate, rotate_failed;
    off_t off;      /* where its records go in the segment */
    off_t prev_off; /* rotate: the old segment's state, back if the new one cannot be made */
    time_t prev_created;
    uint64_t prev_seq;
    char newpath[DD_NAME_MAX];
    int err;
} dd_job_t;

typedef struct dedupe {
    uv_loop_t *loop;
    weir_raccess_t fields[DD_FIELDS_MAX]; /* a field name, or "$.a.b" */
    size_t nfields;
    char *path;
    double window;
    size_t max_keys;
    weir_hash_key_t k0, k1;
    /* ring of entries, seqs [tail, head), slot = seq & (ring_cap - 1) */
    dd_entry_t *ring;
    size_t ring_cap;
    uint64_t tail, head;
    size_t live;     /* entries not dead */
    uint64_t *index; /* 0 = empty; else h0's high half << 32 | (ring slot + 1) */
    size_t index_cap;
    /* holds, by id (slot + 1) */
    dd_hold_t **holds;
    size_t holds_cap, nholds;
    /* journal */
    int lock_fd, fd;
    uint64_t seg_seq;
    time_t seg_created;
    weir_buf_t pending; /* records committed, not yet in a job */
    dd_hold_t *pending_holds;
    size_t njobs;  /* journal jobs running (at most DD_JOBS) */
    bool rotating; /* one of them starts a new segment: it runs alone */
    off_t seg_off; /* the current segment's length, records reserved by jobs included */
    void (*stop_done)(void *);
    void *stop_arg;
    weir_buf_t mat; /* key material scratch */
    weir_ratelimit_t evict_rl;
    /* metrics */
    weir_metrics_t *reg;
    weir_counter_t *duplicates, *keyless, *evicted, *sync_errors;
} dedupe_t;

static uint32_t now_sec(void)
{
    return (uint32_t)time(NULL);
}

/* ---- the table ------------------------------------------------------------------------- */

static size_t slot_of(const dedupe_t *d, uint64_t seq)
{
    return (size_t)(seq % d->ring_cap);
}

static dd_entry_t *at(dedupe_t *d, uint64_t seq)
{
    return &d->ring[slot_of(d, seq)];
}

static size_t home(const dedupe_t *d, uint64_t h0)
{
    return (size_t)(h0 & (d->index_cap - 1));
}

static uint64_t index_value(uint64_t h0, size_t slot)
{
    return (h0 & 0xffffffff00000000ull) | (uint64_t)(slot + 1);
}

static size_t index_slot(uint64_t v)
{
    return (size_t)(uint32_t)v - 1;
}

/* The index slot holding the entry with these hashes, or the empty slot where it would go.
 * The table is larger than any cache, so each slot carries the top half of h0: a probe reads
 * the ring (another cache miss) only when that matches. */
static size_t index_find(dedupe_t *d, uint64_t h0, uint64_t h1, bool *found)
{
    size_t i = home(d, h0);
    uint64_t tag = h0 & 0xffffffff00000000ull;
    for (;;) {
        uint64_t v = d->index[i];
        if (!v) {
            *found = false;
            return i;
        }
        if ((v & 0xffffffff00000000ull) == tag) {
            dd_entry_t *e = &d->ring[index_slot(v)];
            if (e->h0 == h0 && e->h1 == h1) {
                *found = true;
                return i;
            }
        }
        i = (i + 1) & (d->index_cap - 1);
    }
}

/* Removes the index slot that points at ring slot `slot`: linear probing's deletion, which
 * moves later entries of the run back so that no lookup stops early. */
static void index_remove(dedupe_t *d, size_t slot)
{
    dd_entry_t *e = &d->ring[slot];
    size_t i = home(d, e->h0);
    while ((uint32_t)d->index[i] != slot + 1)
        i = (i + 1) & (d->index_cap - 1);
    size_t mask = d->index_cap - 1;
    for (size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
        uint64_t v = d->index[j];
        if (!v) break;
        size_t h = home(d, d->ring[index_slot(v)].h0);
        /* the entry at j may move to i when i lies cyclically in [h, j) */
        if (((j - h) & mask) >= ((j - i) & mask)) {
            d->index[i] = v;
            i = j;
        }
    }
    d->index[i] = 0;
}

/* Twice the ring (at most half full), rebuilt from the ring. */
static void index_rebuild(dedupe_t *d)
{
    free(d->index);
    d->index_cap = 16;
    while (d->index_cap < d->ring_cap * 2)
        d->index_cap *= 2;
    d->index = weir_calloc(d->index_cap, sizeof *d->index);
    for (uint64_t s = d->tail; s < d->head; s++) {
        dd_entry_t *e = at(d, s);
        if (e->flight == FLIGHT_DEAD) continue;
        bool found;
        size_t i = index_find(d, e->h0, e->h1, &found);
        d->index[i] = index_value(e->h0, slot_of(d, s));
    }
}

/* Doubles the ring, up to max_keys; past it only when in-flight keys fill it. */
static void ring_grow(dedupe_t *d)
{
    size_t cap = d->ring_cap ? d->ring_cap * 2 : DD_MIN_RING;
    if (d->ring_cap < d->max_keys && cap > d->max_keys) cap = d->max_keys;
    dd_entry_t *ring = weir_calloc(cap, sizeof *ring);
    for (uint64_t s = d->tail; s < d->head; s++)
        ring[s % cap] = *at(d, s);
    free(d->ring);
    d->ring = ring;
    d->ring_cap = cap;
    index_rebuild(d);
}

/* Drops the tail while it is dead, older than the window, or (committed keys only) past the
 * memory cap. In-flight keys are never dropped: the ring grows past the cap instead. */
static void expire(dedupe_t *d, uint32_t now)
{
    uint32_t horizon = now > d->window ? now - (uint32_t)d->window : 0;
    while (d->tail < d->head) {
        dd_entry_t *e = at(d, d->tail);
        if (e->flight != FLIGHT_DEAD) {
            bool old = e->sec < horizon;
            bool over = d->live >= d->max_keys;
            if (e->flight != FLIGHT_DONE || (!old && !over)) break;
            if (!old) {
                weir_counter_add(d->evicted, 1);
                unsigned long skipped = 0;
                if (weir_ratelimit_ok(&d->evict_rl, &skipped))
                    weir_warn("dedupe %s: memory_limit holds %zu keys; keys are forgotten after "
                              "%us instead of the window's %.0fs, so a resend older than that "
                              "is stored again (%lu similar warnings suppressed)",
                              d->path, d->max_keys, now - e->sec, d->window, skipped);
            }
            index_remove(d, slot_of(d, d->tail));
            d->live--;
        }
        d->tail++;
    }
}

/* Appends an entry (the key must be absent). Returns its seq. */
static uint64_t insert(dedupe_t *d, uint64_t h0, uint64_t h1, uint32_t sec, uint32_t flight)
{
    if (d->live >= d->max_keys) expire(d, sec); /* the cap: drop the oldest committed */
    if (d->head - d->tail >= d->ring_cap) ring_grow(d);
    uint64_t seq = d->head++;
    *at(d, seq) = (dd_entry_t){h0, h1, sec, flight};
    d->live++;
    bool found;
    size_t i = index_find(d, h0, h1, &found);
    d->index[i] = index_value(h0, slot_of(d, seq));
    return seq;
}

/* ---- keys ------------------------------------------------------------------------------- */

static void mat_put(weir_buf_t *m, char type, const void *p, size_t n)
{
    unsigned char hdr[5] = {(unsigned char)type, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                            (unsigned char)(n >> 8), (unsigned char)n};
    weir_buf_append(m, hdr, sizeof hdr);
    weir_buf_append(m, p, n);
}

/* The key of a record as bytes in d->mat: per field, a type and the value, so that a string
 * sent as str8 or as str16 (or as bin) and an integer in any width give the same key. Fields
 * are found as grep and record_transformer find them (record.h: the last of a repeated key).
 * Returns false when a field is missing or nil. */
static bool record_key(dedupe_t *d, const char *rec, size_t len)
{
    const char *vals[DD_FIELDS_MAX];
    size_t vlens[DD_FIELDS_MAX];
    for (size_t f = 0; f < d->nfields; f++)
        if (weir_raccess_get(&d->fields[f], rec, len, &vals[f], &vlens[f]) != 1) return false;
    d->mat.len = 0;
    for (size_t f = 0; f < d->nfields; f++) {
        weir_mp_obj_t v;
        if (weir_mp_read(vals[f], vlens[f], &v) <= 0) return false;
        unsigned char num[8];
        switch (v.type) {
        case WEIR_MP_NIL:
            return false;
        case WEIR_MP_STR:
        case WEIR_MP_BIN:
            mat_put(&d->mat, 's', v.ptr, v.len);
            break;
        case WEIR_MP_UINT:
        case WEIR_MP_INT:
            for (int b = 0; b < 8; b++)
                num[b] = (unsigned char)(v.v.u >> (56 - 8 * b));
            mat_put(&d->mat, v.type == WEIR_MP_INT || v.v.u <= INT64_MAX ? 'i' : 'u', num, 8);
            break;
        default: /* floats, booleans, containers: their msgpack bytes */
            mat_put(&d->mat, 'r', vals[f], vlens[f]);
            break;
        }
    }
    return true;
}

/* ---- holds ------------------------------------------------------------------------------ */

static dd_hold_t *hold_new(dedupe_t *d)
{
    if (d->nholds == d->holds_cap) {
        size_t cap = d->holds_cap ? d->holds_cap * 2 : 64;
        d->holds = weir_realloc(d->holds, cap * sizeof *d->holds);
        memset(d->holds + d->holds_cap, 0, (cap - d->holds_cap) * sizeof *d->holds);
        d->holds_cap = cap;
    }
    size_t i = 0;
    while (d->holds[i])
        i++;
    dd_hold_t *h = weir_calloc(1, sizeof *h);
    h->id = (uint32_t)i + 1;
    d->holds[i] = h;
    d->nholds++;
    return h;
}

static void stop_check(dedupe_t *d);

static void hold_free(dedupe_t *d, dd_hold_t *h)
{
    d->holds[h->id - 1] = NULL;
    d->nholds--;
    free(h->seqs);
    free(h->dependents);
    free(h);
    stop_check(d);
}

static void hold_proceed(dedupe_t *d, dd_hold_t *h);

/* The hold's fate is known: its dependents learn it. */
static void hold_end(dedupe_t *d, dd_hold_t *h, bool ok)
{
    dd_hold_t **deps = h->dependents;
    size_t n = h->ndependents;
    h->dependents = NULL;
    h->ndependents = 0;
    for (size_t i = 0; i < n; i++) {
        dd_hold_t *w = deps[i];
        if (!ok) w->dep_failed = true;
        if (--w->waiting > 0) continue;
        if (w->released)
            hold_free(d, w);
        else if (w->settled)
            hold_proceed(d, w);
    }
    free(deps);
}

static void job_kick(dedupe_t *d);

/* Durable, and every hold it waited for has ended: its keys become seen and go to the journal;
 * the ack waits for the journal's sync. */
static void hold_proceed(dedupe_t *d, dd_hold_t *h)
{
    for (size_t i = 0; i < h->nseqs; i++) {
        dd_entry_t *e = at(d, h->seqs[i]);
        e->flight = FLIGHT_DONE;
        unsigned char r[DD_REC_LEN];
        for (int b = 0; b < 8; b++) {
            r[b] = (unsigned char)(e->h0 >> (8 * b));
            r[8 + b] = (unsigned char)(e->h1 >> (8 * b));
        }
        for (int b = 0; b < 4; b++)
            r[16 + b] = (unsigned char)(e->sec >> (8 * b));
        uint32_t crc = weir_crc32c(0, r, 20);
        for (int b = 0; b < 4; b++)
            r[20 + b] = (unsigned char)(crc >> (8 * b));
        weir_buf_append(&d->pending, r, sizeof r);
    }
    if (!h->nseqs) { /* nothing to sync */
        weir_emit_cb done = h->done;
        void *arg = h->arg;
        bool ok = !h->dep_failed;
        hold_end(d, h, true);
        done(arg, ok ? 0 : -1);
        hold_free(d, h);
        return;
    }
    h->next_sync = d->pending_holds;
    d->pending_holds = h;
    job_kick(d);
}

/* ---- the journal ------------------------------------------------------------------------ */

static void seg_name(const dedupe_t *d, char *out, size_t n, time_t created, uint64_t seq)
{
    snprintf(out, n, "%s/journal-%lld-%010llu", d->path, (long long)created,
             (unsigned long long)seq);
}

static bool seg_parse(const char *name, long long *created, unsigned long long *seq)
{
    int end = 0;
    return sscanf(name, "journal-%lld-%llu%n", created, seq, &end) == 2 && name[end] == '\0';
}

/* Deletes segments whose every record is older than the window (created + rotation period +
 * window in the past); never the one being written. */
static void seg_prune(dedupe_t *d, uint64_t keep_seq)
{
    DIR *dir = opendir(d->path);
    if (!dir) return;
    time_t now = time(NULL);
    double period = d->window / 8;
    bool removed = false;
    struct dirent *de;
    while ((de = readdir(dir))) {
        long long created;
        unsigned long long seq;
        if (!seg_parse(de->d_name, &created, &seq) || seq == keep_seq) continue;
        if ((double)created + period + d->window + 60 >= (double)now) continue;
        char p[DD_NAME_MAX];
        snprintf(p, sizeof p, "%s/%s", d->path, de->d_name);
        if (unlink(p) == 0) removed = true;
    }
    closedir(dir);
    if (removed) weir_dir_sync(d->path);
}

static int seg_open(dedupe_t *d, const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    if (weir_dir_sync(d->path) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void job_work(uv_work_t *req)
{
    dd_job_t *j = req->data;
    dedupe_t *d = j->d;
    if (j->rotate) {
        int fd = seg_open(d, j->newpath);
        if (fd < 0) { /* the loop goes on with the old segment; these keys are not acked */
            j->err = errno;
            j->rotate_failed = true;
            return;
        }
        close(d->fd);
        d->fd = fd;
    }
    size_t off = 0;
    while (off < j->data.len) {
        ssize_t w = pwrite(d->fd, j->data.data + off, j->data.len - off, j->off + (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            j->err = w < 0 ? errno : EIO;
            break;
        }
        off += (size_t)w;
    }
    if (!j->err && fdatasync(d->fd) != 0) j->err = errno;
    if (j->rotate) seg_prune(d, d->seg_seq);
}

static void job_after(uv_work_t *req, int status)
{
    dd_job_t *j = req->data;
    dedupe_t *d = j->d;
    d->njobs--;
    if (j->rotate) d->rotating = false;
    if (j->rotate_failed) {
        d->seg_off = j->prev_off;
        d->seg_created = j->prev_created;
        d->seg_seq = j->prev_seq;
    }
    int err = j->err ? j->err : status != 0 ? ECANCELED : 0;
    if (err) {
        weir_counter_add(d->sync_errors, 1);
        weir_error("dedupe %s: the key journal cannot be written (%s); the events whose keys it "
                   "held are stored but not acknowledged: their senders resend them, and the "
                   "resends are dropped as duplicates while this weir runs",
                   d->path, strerror(err));
    }
    dd_hold_t *h = j->holds;
    weir_buf_free(&j->data);
    free(j);
    while (h) {
        dd_hold_t *next = h->next_sync;
        weir_emit_cb done = h->done;
        void *arg = h->arg;
        bool ok = !h->dep_failed && !err;
        hold_end(d, h, true); /* its events are durable whatever the journal did */
        done(arg, ok ? 0 : -1);
        hold_free(d, h);
        h = next;
    }
    job_kick(d);
    stop_check(d);
}

/* Up to DD_JOBS journal jobs run at once, each writing and syncing everything committed since
 * the one before it started (a group commit), so a batch that becomes durable while a job
 * syncs does not wait for that sync before its own begins. Each job writes at an offset the
 * loop reserved for it, so records never interleave; a job that fails leaves a hole that the
 * reader skips. A job that starts a new segment runs alone. */
static void job_kick(dedupe_t *d)
{
    while (d->pending_holds && d->njobs < DD_JOBS && !d->rotating) {
        time_t now = time(NULL);
        bool rotate = (double)(now - d->seg_created) >= d->window / 8;
        if (rotate && d->njobs) return; /* after the running ones, on its own */
        dd_job_t *j = weir_calloc(1, sizeof *j);
        j->req.data = j;
        j->d = d;
        j->data = d->pending;
        weir_buf_init(&d->pending);
        j->holds = d->pending_holds;
        d->pending_holds = NULL;
        if (rotate) {
            j->rotate = true;
            j->prev_off = d->seg_off;
            j->prev_created = d->seg_created;
            j->prev_seq = d->seg_seq;
            d->rotating = true;
            d->seg_seq++;
            d->seg_created = now;
            d->seg_off = 0;
            seg_name(d, j->newpath, sizeof j->newpath, now, d->seg_seq);
        }
        j->off = d->seg_off;
        d->seg_off += (off_t)j->data.len;
        d->njobs++;
        uv_queue_work(d->loop, &j->req, job_work, job_after);
    }
}

/* ---- loading ---------------------------------------------------------------------------- */

typedef struct seg_ref {
    unsigned long long seq;
    char name[256];
} seg_ref_t;

static int seg_cmp(const void *a, const void *b)
{
    const seg_ref_t *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int b = 7; b >= 0; b--)
        v = (v << 8) | p[b];
    return v;
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads one segment's records into the table. A record whose CRC fails (a torn tail, or a hole
 * a power loss left where a write was never synced) is skipped: it was never acknowledged, and
 * the records are fixed-size, so the ones after it are read as written. */
static void load_segment(dedupe_t *d, const char *name, uint32_t horizon, size_t *loaded)
{
    char p[DD_NAME_MAX];
    snprintf(p, sizeof p, "%s/%s", d->path, name);
    FILE *f = fopen(p, "rb");
    if (!f) {
        weir_warn("dedupe %s: cannot read %s: %s; keys in it are forgotten", d->path, name,
                  strerror(errno));
        return;
    }
    unsigned char r[DD_REC_LEN];
    size_t bad = 0;
    while (fread(r, 1, sizeof r, f) == sizeof r) {
        if (weir_crc32c(0, r, 20) != rd32(r + 20)) {
            bad++;
            continue;
        }
        uint64_t h0 = rd64(r), h1 = rd64(r + 8);
        uint32_t sec = rd32(r + 16);
        if (sec < horizon) continue;
        bool found;
        index_find(d, h0, h1, &found);
        if (found) continue;
        insert(d, h0, h1, sec, FLIGHT_DONE);
        (*loaded)++;
    }
    fclose(f);
    if (bad)
        weir_warn("dedupe %s: %s: %zu records torn or corrupt (never synced, so never "
                  "acknowledged) skipped",
                  d->path, name, bad);
}

static int load(dedupe_t *d, weir_err_t *err)
{
    DIR *dir = opendir(d->path);
    if (!dir) {
        weir_err_set(err, "dedupe: cannot read %s: %s", d->path, strerror(errno));
        return -1;
    }
    seg_ref_t *segs = NULL;
    size_t nsegs = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        long long created;
        unsigned long long seq;
        if (!seg_parse(de->d_name, &created, &seq) || strlen(de->d_name) >= 256) continue;
        segs = weir_realloc(segs, (nsegs + 1) * sizeof *segs);
        segs[nsegs].seq = seq;
        strcpy(segs[nsegs].name, de->d_name);
        nsegs++;
    }
    closedir(dir);
    if (nsegs) qsort(segs, nsegs, sizeof *segs, seg_cmp);
    uint32_t now = now_sec();
    uint32_t horizon = now > d->window ? now - (uint32_t)d->window : 0;
    size_t loaded = 0;
    for (size_t i = 0; i < nsegs; i++) {
        load_segment(d, segs[i].name, horizon, &loaded);
        if (segs[i].seq > d->seg_seq) d->seg_seq = segs[i].seq;
    }
    free(segs);
    expire(d, now);
    weir_info("dedupe %s: %zu keys remembered from the last %.0fs", d->path, d->live, d->window);
    return 0;
}

/* The two SipHash keys, drawn once and kept: without them the journal means nothing. */
static int load_hash_keys(dedupe_t *d, weir_err_t *err)
{
    char p[DD_NAME_MAX];
    snprintf(p, sizeof p, "%s/hash.key", d->path);
    unsigned char buf[DD_KEY_FILE_LEN];
    FILE *f = fopen(p, "rb");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        if (n != sizeof buf || memcmp(buf, "WEIRDDK1", 8) != 0) {
            weir_err_set(err,
                         "dedupe: %s is not a key file weir wrote (%zu bytes); move it away to "
                         "start with an empty index",
                         p, n);
            return -1;
        }
    } else {
        if (errno != ENOENT) {
            weir_err_set(err, "dedupe: cannot read %s: %s", p, strerror(errno));
            return -1;
        }
        memcpy(buf, "WEIRDDK1", 8);
        if (RAND_bytes(buf + 8, 32) != 1) {
            weir_err_set(err, "dedupe: no random bytes for the key file");
            return -1;
        }
        char tmp[DD_NAME_MAX + 20];
        snprintf(tmp, sizeof tmp, "%s.tmp", p);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        bool ok = fd >= 0 && write(fd, buf, sizeof buf) == (ssize_t)sizeof buf && fsync(fd) == 0;
        int e = errno;
        if (fd >= 0) close(fd);
        if (!ok || rename(tmp, p) != 0 || weir_dir_sync(d->path) != 0) {
            weir_err_set(err, "dedupe: cannot write %s: %s", p, strerror(ok ? errno : e));
            unlink(tmp);
            return -1;
        }
        /* segments from an earlier key (the file was removed) cannot be read any more */
        seg_prune(d, UINT64_MAX);
    }
    d->k0 = weir_hash_key_from_bytes(buf + 8);
    d->k1 = weir_hash_key_from_bytes(buf + 24);
    return 0;
}

/* ---- the plugin ------------------------------------------------------------------------- */

static weir_filter_result_t dedupe_filter(void *state, const weir_batch_t *in, weir_batch_t *out,
                                          void **hold)
{
    dedupe_t *d = state;
    uint32_t now = now_sec();
    expire(d, now);
    dd_hold_t *h = NULL;
    uint32_t kept = 0;
    bool dropped = false;
    uint64_t dups = 0, keyless = 0;
    weir_batch_iter_t it;
    weir_batch_iter_init(&it, in->data.data, in->data.len);
    weir_entry_t e;
    const char *start = in->data.data;
    const char *before = start;
    while (weir_batch_iter_next(&it, &e) == 1) {
        bool keep = true;
        if (!record_key(d, e.record, e.record_len)) {
            keyless++;
        } else {
            uint64_t h0 = weir_siphash24(&d->k0, d->mat.data, d->mat.len);
            uint64_t h1 = weir_siphash24(&d->k1, d->mat.data, d->mat.len);
            bool found;
            size_t i = index_find(d, h0, h1, &found);
            if (!h) h = hold_new(d);
            if (found) {
                keep = false;
                dups++;
                dd_entry_t *en = &d->ring[index_slot(d->index[i])];
                if (en->flight != FLIGHT_DONE && en->flight != h->id) {
                    dd_hold_t *first = d->holds[en->flight - 1];
                    if (!first->ndependents || first->dependents[first->ndependents - 1] != h) {
                        if (first->ndependents == first->dcap) {
                            first->dcap = first->dcap ? first->dcap * 2 : 4;
                            first->dependents = weir_realloc(
                                first->dependents, first->dcap * sizeof *first->dependents);
                        }
                        first->dependents[first->ndependents++] = h;
                        h->waiting++;
                    }
                }
            } else {
                if (h->nseqs == h->cap) {
                    h->cap = h->cap ? h->cap * 2 : 16;
                    h->seqs = weir_realloc(h->seqs, h->cap * sizeof *h->seqs);
                }
                h->seqs[h->nseqs++] = insert(d, h0, h1, now, h->id);
            }
        }
        if (keep) {
            if (dropped) weir_batch_append(out, e.time, e.record, e.record_len);
            kept++;
        } else if (!dropped) { /* the entries before this one go out as they are */
            dropped = true;
            if (kept)
                weir_batch_append_raw(out, start, (size_t)(before - start), kept, in->tmin,
                                      in->tmax);
        }
        before = it.p;
    }
    weir_counter_add(d->duplicates, dups);
    weir_counter_add(d->keyless, keyless);
    if (h && !h->nseqs && !h->waiting) { /* only duplicates of stored keys: nothing to wait for */
        hold_free(d, h);
        h = NULL;
    }
    *hold = h;
    return dropped ? WEIR_FILTER_NEW : WEIR_FILTER_SAME;
}

static void dedupe_settle(void *state, void *hold, int status, weir_emit_cb done, void *arg)
{
    dedupe_t *d = state;
    dd_hold_t *h = hold;
    if (status != 0) { /* not stored: its keys were never seen */
        for (size_t i = 0; i < h->nseqs; i++) {
            dd_entry_t *e = at(d, h->seqs[i]);
            index_remove(d, slot_of(d, h->seqs[i]));
            e->flight = FLIGHT_DEAD;
            d->live--;
        }
        h->nseqs = 0;
        hold_end(d, h, false);
        if (h->waiting)
            h->released = true; /* freed when the holds it waits for end */
        else
            hold_free(d, h);
        return;
    }
    h->settled = true;
    h->done = done;
    h->arg = arg;
    if (!h->waiting) hold_proceed(d, h);
}

static double g_keys(void *arg)
{
    return (double)((dedupe_t *)arg)->live;
}

static double g_oldest(void *arg)
{
    dedupe_t *d = arg;
    for (uint64_t s = d->tail; s < d->head; s++) {
        dd_entry_t *e = at(d, s);
        if (e->flight == FLIGHT_DONE) return (double)(now_sec() - e->sec);
    }
    return NAN;
}

/* The most keys whose ring (24 bytes each) and index (a power of two of 8-byte slots, at least
 * twice the keys) fit in `mem`. */
static size_t keys_for_memory(uint64_t mem)
{
    size_t best = DD_MIN_KEYS;
    for (uint64_t slots = 2 * DD_MIN_KEYS; slots * DD_INDEX_BYTES < mem && slots <= (1ull << 31);
         slots *= 2) {
        uint64_t k = (mem - slots * DD_INDEX_BYTES) / DD_RING_BYTES;
        if (k > slots / 2) k = slots / 2;
        if (k > best) best = (size_t)k;
    }
    return best;
}

static int dedupe_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state,
                         weir_err_t *err)
{
    dedupe_t *d = weir_calloc(1, sizeof *d);
    d->loop = weir_engine_loop(eng);
    d->lock_fd = d->fd = -1;
    d->window = DD_DEFAULT_WINDOW;
    d->evict_rl.interval_ms = 60000;
    weir_buf_init(&d->pending);
    weir_buf_init(&d->mat);
    uint64_t mem = DD_DEFAULT_MEMORY;
    char **keys = NULL;
    size_t nkeys = 0;
    const char *path = NULL;
    if (weir_conf_get_array(sec, "key", &keys, &nkeys, err) < 0 ||
        weir_conf_get_str(sec, "path", &path, err) < 0 ||
        weir_conf_get_time(sec, "window", &d->window, err) < 0 ||
        weir_conf_get_size(sec, "memory_limit", &mem, err) < 0)
        goto fail;
    if (!nkeys || nkeys > DD_FIELDS_MAX) {
        weir_conf_section_errorf(err, sec,
                                 "dedupe needs 'key': the field (or up to %d comma-separated "
                                 "fields) that identify an event, like 'key uid' for Teleport "
                                 "audit events or 'key sid,ei' for session events",
                                 DD_FIELDS_MAX);
        goto fail;
    }
    for (size_t i = 0; i < nkeys; i++) {
        if (!keys[i][0]) {
            weir_conf_errorf(err, weir_conf_find(sec, "key"), "key: an empty field name");
            goto fail;
        }
        if (weir_raccess_init(&d->fields[d->nfields], keys[i], err) != 0) {
            weir_err_prefix(err, "%s:%d:%d: key", sec->file, sec->line, sec->col);
            goto fail;
        }
        d->nfields++;
    }
    if (!path || !*path) {
        weir_conf_section_errorf(err, sec,
                                 "dedupe needs 'path': a directory of its own for the index of "
                                 "stored keys, which must outlive restarts (next to the "
                                 "buffer, like /fluentd/buffer/dedupe)");
        goto fail;
    }
    if (d->window < 1 || d->window > 366 * 86400.0) {
        weir_conf_errorf(err, weir_conf_find(sec, "window"),
                         "window: expected 1s to 366d (how long a key is remembered)");
        goto fail;
    }
    if (mem < DD_MIN_MEMORY) {
        weir_conf_errorf(err, weir_conf_find(sec, "memory_limit"),
                         "memory_limit: at least %d bytes (each remembered key takes %d to %d)",
                         DD_MIN_MEMORY, DD_RING_BYTES + 2 * DD_INDEX_BYTES,
                         DD_RING_BYTES + 4 * DD_INDEX_BYTES);
        goto fail;
    }
    if (strlen(path) > DD_PATH_MAX) {
        weir_conf_errorf(err, weir_conf_find(sec, "path"), "path: at most %d bytes", DD_PATH_MAX);
        goto fail;
    }
    d->path = weir_strdup(path);
    d->max_keys = keys_for_memory(mem);
    weir_conf_strv_free(keys, nkeys);
    weir_plugin_metrics_t *pm = weir_engine_plugin_metrics(eng);
    d->reg = weir_plugin_metrics_registry(pm);
    const char *const *labels = weir_plugin_metrics_labels(pm);
    d->duplicates = weir_metrics_counter(
        d->reg, d, "weir_dedupe_duplicates_total",
        "Events acknowledged but not stored again: their key was stored already.", labels);
    d->keyless = weir_metrics_counter(d->reg, d, "weir_dedupe_keyless_total",
                                      "Events passed on without deduplication: a key field is "
                                      "missing or null.",
                                      labels);
    d->evicted = weir_metrics_counter(d->reg, d, "weir_dedupe_evicted_early_total",
                                      "Keys forgotten before the window ended because "
                                      "memory_limit was reached.",
                                      labels);
    d->sync_errors = weir_metrics_counter(d->reg, d, "weir_dedupe_journal_errors_total",
                                          "Key journal writes or syncs that failed.", labels);
    weir_metrics_gauge_fn(d->reg, d, "weir_dedupe_keys", "Keys remembered now.", labels, g_keys, d);
    weir_metrics_gauge_fn(d->reg, d, "weir_dedupe_oldest_key_age_seconds",
                          "Age of the oldest remembered key: the window actually covered.", labels,
                          g_oldest, d);
    *state = d;
    return 0;
fail:
    weir_conf_strv_free(keys, nkeys);
    for (size_t i = 0; i < d->nfields; i++)
        weir_raccess_free(&d->fields[i]);
    weir_buf_free(&d->pending);
    weir_buf_free(&d->mat);
    free(d);
    return -1;
}

static int dedupe_start(void *state, weir_err_t *err)
{
    dedupe_t *d = state;
    if (weir_dir_make(d->path, 0700) != 0) {
        weir_err_set(err, "dedupe: cannot create %s: %s", d->path, strerror(errno));
        return -1;
    }
    d->lock_fd = weir_dir_lock(d->path, ".lock", "dedupe: the index", err);
    if (d->lock_fd < 0) return -1;
    ring_grow(d); /* the first ring and index */
    if (load_hash_keys(d, err) != 0 || load(d, err) != 0) return -1;
    d->seg_seq++;
    d->seg_created = time(NULL);
    char p[DD_NAME_MAX];
    seg_name(d, p, sizeof p, d->seg_created, d->seg_seq);
    d->fd = seg_open(d, p);
    if (d->fd < 0) {
        weir_err_set(err, "dedupe: cannot create %s: %s", p, strerror(errno));
        return -1;
    }
    seg_prune(d, d->seg_seq);
    return 0;
}

static void stop_check(dedupe_t *d)
{
    if (!d->stop_done || d->nholds || d->njobs || d->pending_holds) return;
    void (*done)(void *) = d->stop_done;
    d->stop_done = NULL;
    done(d->stop_arg);
}

static void dedupe_stop(void *state, void (*done)(void *arg), void *arg)
{
    dedupe_t *d = state;
    d->stop_done = done;
    d->stop_arg = arg;
    stop_check(d);
}

static void dedupe_destroy(void *state)
{
    dedupe_t *d = state;
    if (!d) return;
    weir_metrics_unregister(d->reg, d);
    for (size_t i = 0; i < d->holds_cap; i++) {
        if (!d->holds[i]) continue;
        free(d->holds[i]->seqs);
        free(d->holds[i]->dependents);
        free(d->holds[i]);
    }
    free(d->holds);
    if (d->fd >= 0) close(d->fd);
    if (d->lock_fd >= 0) close(d->lock_fd);
    for (size_t i = 0; i < d->nfields; i++)
        weir_raccess_free(&d->fields[i]);
    free(d->path);
    free(d->ring);
    free(d->index);
    weir_buf_free(&d->pending);
    weir_buf_free(&d->mat);
    free(d);
}

const weir_filter_ops_t weir_filter_dedupe_ops = {
    .type = "dedupe",
    .create = dedupe_create,
    .start = dedupe_start,
    .filter = dedupe_filter,
    .settle = dedupe_settle,
    .stop = dedupe_stop,
    .destroy = dedupe_destroy,
};
