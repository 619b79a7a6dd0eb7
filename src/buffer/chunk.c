/* Chunks: their keys (time bucket, tag, record keys), ids, records, creation, the staged list
 * and enqueue (staged -> queued).
 *
 * Invariant: a staged chunk is the only one open for appends for its key. Staged chunks are
 * found by a linear search with a one-entry cache: there are few of them (tags x open time
 * buckets, at most staged_chunks_limit), and a batch does one lookup per run of events with
 * the same key. A hash table would replace it if thousands of tags were staged at once. */
#include "buffer_internal.h"
#include "weir/record.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "weir/format.h"
#include "weir/mp.h"

double buf_mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double buf_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void buf_list_push(chunk_list_t *l, weir_chunk_t *c)
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

void buf_list_push_front(chunk_list_t *l, weir_chunk_t *c)
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

void buf_list_remove(chunk_list_t *l, weir_chunk_t *c)
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

int64_t buf_bucket_of(weir_buffer_t *b, uint32_t sec)
{
    int64_t t = sec;
    int64_t tk = (int64_t)b->timekey;
    if (tk <= 0) return t;
    int64_t off = b->timekey_use_utc ? 0 : weir_tz_offset(&b->zone, t, NULL);
    int64_t r = (t + off) % tk;
    if (r < 0) r += tk;
    return t - r;
}

/* The value of a top-level key of the record as text, "" when absent (Fluentd: nil). Found
 * as the filters find it (record.h: of a key written twice, the last, as in Fluentd's Hash). */
static void record_var(const char *rec, size_t len, const char *key, weir_buf_t *out)
{
    const char *p;
    size_t vs;
    if (weir_record_get(rec, len, key, strlen(key), &p, &vs) != 1) return;
    weir_mp_obj_t v;
    size_t start = out->len;
    ssize_t n = weir_mp_read(p, vs, &v);
    if (n > 0 && (v.type == WEIR_MP_STR || v.type == WEIR_MP_BIN))
        weir_buf_append(out, v.ptr, v.len);
    else if (n > 0 && v.type == WEIR_MP_NIL)
        ; /* nil: empty */
    else
        weir_json_append(out, p, vs);
    if (out->len - start > WEIR_BUFFER_MAX_VAR_LEN) out->len = start + WEIR_BUFFER_MAX_VAR_LEN;
}

/* Builds the key string of one event into b->keybuf: "timekey\x1ftag\x1fvar\x1fvar...". */
void buf_event_key(weir_buffer_t *b, const char *tag, const weir_entry_t *e, int64_t *tk)
{
    weir_buf_t *k = &b->keybuf;
    k->len = 0;
    if (b->key_time) {
        *tk = buf_bucket_of(b, e->time.sec);
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

void buf_meta_key(weir_buffer_t *b, const chunk_meta_t *m, weir_buf_t *k)
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

void buf_hex_id(const uint8_t id[16], char out[33])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hx[id[i] >> 4];
        out[2 * i + 1] = hx[id[i] & 15];
    }
    out[32] = '\0';
}

char *buf_chunk_path(weir_buffer_t *b, const char *hex, char state)
{
    weir_buf_t p;
    weir_buf_init(&p);
    weir_buf_printf(&p, "%s/buffer.%c%s.chunk", b->path, state, hex);
    return p.data;
}

void buf_chunk_free(weir_chunk_t *c)
{
    free(c->fluentd_meta);
    if (c->fd >= 0) close(c->fd);
    chunk_meta_free(&c->meta);
    weir_buf_free(&c->mem);
    free(c->key);
    free(c->path);
    free(c);
}

/* Appends one record to a chunk: to its file with one writev, or (a memory chunk) to its
 * records in memory, which have the same layout. `tag` opens the payload of a
 * CHUNK_REC_TAGGED record. On a failed write the file is cut back to where it was. */
int buf_chunk_put_record(weir_chunk_t *c, int type, const char *tag, size_t tag_len, const char *p,
                         size_t len, uint32_t count)
{
    char hdr[CHUNK_HDR_LEN], th[CHUNK_TAG_HDR_MAX];
    struct iovec iov[4];
    int n = 0;
    size_t total = CHUNK_HDR_LEN + len;
    iov[n++] = (struct iovec){hdr, CHUNK_HDR_LEN};
    if (type == CHUNK_REC_TAGGED) {
        iov[n++] = (struct iovec){th, chunk_tag_header(th, tag_len)};
        iov[n++] = (struct iovec){(void *)tag, tag_len};
        total += iov[1].iov_len + tag_len;
    }
    if (len) iov[n++] = (struct iovec){(void *)p, len};
    chunk_record_header_v(hdr, type, iov + 1, n - 1, count);
    if (!c->path) {
        for (int i = 0; i < n; i++)
            weir_buf_append(&c->mem, iov[i].iov_base, iov[i].iov_len);
    } else if (buf_write_full(c->fd, iov, n) != 0) {
        int e = errno;
        if (ftruncate(c->fd, (off_t)c->bytes) != 0)
            weir_error("buffer: cannot cut %s back to %" PRIu64 " bytes after a failed write: %s",
                       c->path, c->bytes, strerror(errno));
        errno = e;
        return -1;
    }
    c->bytes += total;
    return 0;
}

weir_chunk_t *buf_chunk_create(weir_buffer_t *b, const char *key, const char *tag,
                               const weir_entry_t *e, int64_t tk, weir_err_t *err)
{
    if (b->staged.n >= (size_t)b->staged_chunks_limit) {
        unsigned long skipped = 0;
        if (weir_ratelimit_ok(&b->staged_rl, &skipped))
            weir_warn("buffer %s: %zu chunks staged at once (staged_chunks_limit); enqueuing the "
                      "oldest early (%lu more times since the last warning)",
                      b->plugin_id, b->staged.n, skipped);
        buf_enqueue(b, b->staged.head); /* the list is in creation order: the head is the oldest */
    }
    weir_chunk_t *c = weir_calloc(1, sizeof *c);
    c->b = b;
    c->fd = -1;
    c->key = weir_strdup(key);
    c->created = buf_mono_now();
    chunk_new_id(c->meta.id);
    buf_hex_id(c->meta.id, c->id_hex);
    c->meta.created = (int64_t)buf_wall_now();
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
        c->path = buf_chunk_path(b, c->id_hex, 'b');
        c->fd = open(c->path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
        if (c->fd < 0) {
            weir_err_set(err, "cannot create chunk %s: %s", c->path, strerror(errno));
            goto err;
        }
        weir_buf_t meta;
        weir_buf_init(&meta);
        chunk_meta_encode(&c->meta, &meta);
        int rc = buf_chunk_put_record(c, CHUNK_REC_META, NULL, 0, meta.data, meta.len, 0);
        weir_buf_free(&meta);
        if (rc != 0) {
            weir_err_set(err, "cannot write chunk %s: %s", c->path, strerror(errno));
            unlink(c->path);
            goto err;
        }
        /* the new name is made durable by the directory fsync of the sync round that the
         * append waits for (sync_start), before any of its events is acknowledged */
        b->dir_dirty = true;
    }
    b->bytes_total += c->bytes;
    buf_list_push(&b->staged, c);
    b->stats.staged_chunks++;
    return c;
err:
    buf_chunk_free(c);
    return NULL;
}

weir_chunk_t *buf_staged_find(weir_buffer_t *b, const char *key)
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
void buf_enqueue(weir_buffer_t *b, weir_chunk_t *c)
{
    if (c->state != CH_STAGED) return;
    buf_list_remove(&b->staged, c);
    b->stats.staged_chunks--;
    if (b->last_staged == c) b->last_staged = NULL;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
        char *q = buf_chunk_path(b, c->id_hex, 'q');
        /* durable with the next sync round's directory fsync; nothing waits for it: a lost
         * rename brings the chunk back staged (.b) with every synced record */
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
    buf_list_push(&b->queue, c);
    b->stats.queued_chunks++;
}

bool buf_chunk_is_full(weir_buffer_t *b, weir_chunk_t *c)
{
    double limit = (double)b->chunk_limit_size * b->chunk_full_threshold;
    if ((double)c->bytes >= limit) return true;
    return b->chunk_limit_records > 0 &&
           (double)c->events >= (double)b->chunk_limit_records * b->chunk_full_threshold;
}

/* Whether n more events of len bytes fit. An empty chunk always takes one event, however
 * large: an event larger than chunk_limit_size is stored alone rather than lost. */
bool buf_chunk_has_room(weir_buffer_t *b, weir_chunk_t *c, size_t len, uint32_t n)
{
    if (c->events == 0 && n == 1) return true;
    if (c->bytes + b->rec_overhead + len > b->chunk_limit_size) return false;
    return b->chunk_limit_records <= 0 || c->events + n <= (uint64_t)b->chunk_limit_records;
}

/* Removes a chunk that holds no acknowledged event (one a failed append created), from
 * whichever list holds it, and its file. */
void buf_chunk_discard(weir_buffer_t *b, weir_chunk_t *c)
{
    if (c->state == CH_STAGED) {
        buf_list_remove(&b->staged, c);
        b->stats.staged_chunks--;
        if (b->last_staged == c) b->last_staged = NULL;
    } else {
        buf_list_remove(&b->queue, c);
        b->stats.queued_chunks--;
    }
    /* no directory fsync: losing this unlink at a power cut only brings back a chunk with no
     * events, which recovery removes */
    if (c->path && unlink(c->path) != 0)
        weir_warn("buffer %s: cannot remove %s: %s", b->plugin_id, c->path, strerror(errno));
    b->bytes_total -= c->bytes;
    buf_chunk_free(c);
}
