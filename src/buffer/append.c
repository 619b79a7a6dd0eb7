/* Appending a batch. The events are grouped into runs of one chunk key, each run written to
 * its staged chunk as one checksummed record; a batch within one time bucket without record
 * keys (the common case) is one run, without walking its entries.
 *
 * Invariant: an append lands whole in every chunk it touches or is rolled back everywhere, and
 * the chunks it created are removed again; it may touch any number of chunks. Nothing is
 * allocated per event. Also here: the full disk, which stops appends until space returns. */
#include "buffer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

static void rollback(weir_buffer_t *b)
{
    touched_t *t = b->touched;
    for (size_t i = 0; i < b->ntouched; i++) {
        weir_chunk_t *c = t[i].c;
        if (t[i].created) {
            buf_chunk_discard(b, c); /* made by this append: no empty chunk stays behind */
            continue;
        }
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

/* Writes one run of entries of `batch` that share a key. Where tag is not a chunk key the
 * chunk holds batches of several tags, so the record carries the batch's tag
 * (CHUNK_REC_TAGGED). Returns 0 or -1 (errno set). */
static int append_run(weir_buffer_t *b, weir_chunk_t *c, const weir_batch_t *batch, const char *p,
                      size_t len, uint32_t n)
{
    uint64_t before = c->bytes;
    int type = b->key_tag ? CHUNK_REC_EVENTS : CHUNK_REC_TAGGED;
    if (buf_chunk_put_record(c, type, batch->tag, batch->tag_len, p, len, n) != 0) return -1;
    c->events += n;
    b->bytes_total += c->bytes - before;
    if (b->type != BUF_MEMORY) buf_mark_dirty(b, c);
    return 0;
}

/* Notes a chunk the current append writes to, once: the chunk's generation says whether it
 * is noted already, so a batch touching n chunks costs O(n), not O(n^2). */
static void remember(weir_buffer_t *b, weir_chunk_t *c, bool created)
{
    if (c->touch_gen == b->append_gen) return;
    c->touch_gen = b->append_gen;
    if (b->ntouched == b->cap_touched) {
        b->cap_touched = b->cap_touched ? b->cap_touched * 2 : 16;
        b->touched = weir_realloc(b->touched, b->cap_touched * sizeof *b->touched);
    }
    touched_t *t = &b->touched[b->ntouched++];
    t->c = c;
    t->bytes = c->bytes;
    t->events = c->events;
    t->mem_len = c->mem.len;
    t->created = created;
}

static weir_emit_result_t over_limit(weir_buffer_t *b)
{
    if (b->overflow == OVF_DROP_OLDEST) {
        for (weir_chunk_t *c = b->queue.head; c; c = c->next) {
            if (c->state != CH_QUEUED) continue;
            weir_warn("buffer %s: total_limit_size reached, overflow_action drop_oldest_chunk: "
                      "dropping chunk %s with %" PRIu64 " events",
                      b->plugin_id, c->id_hex, c->events);
            buf_list_remove(&b->queue, c);
            b->stats.queued_chunks--;
            b->bytes_total -= c->bytes;
            if (c->path) unlink(c->path);
            buf_chunk_free(c);
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
static bool append_whole(weir_buffer_t *b, const weir_batch_t *batch, weir_err_t *err, bool *failed)
{
    if (b->nvar_keys || batch->count == 0 || batch->tmin > batch->tmax) return false;
    int64_t tk = b->key_time ? buf_bucket_of(b, batch->tmin) : 0;
    if (b->key_time && buf_bucket_of(b, batch->tmax) != tk) return false;
    /* the key of any event: build it from the first entry's time and the batch's tag */
    weir_batch_iter_t it;
    weir_entry_t e;
    weir_batch_iter_init(&it, batch->data.data, batch->data.len);
    if (weir_batch_iter_next(&it, &e) != 1) return false;
    buf_event_key(b, batch->tag, &e, &tk);
    size_t len = batch->data.len;
    /* a batch that no single chunk can hold is split per event */
    if (len + b->rec_overhead > b->chunk_limit_size) return false;
    if (b->chunk_limit_records > 0 && batch->count > (uint64_t)b->chunk_limit_records) return false;
    weir_chunk_t *c = buf_staged_find(b, b->keybuf.data);
    if (c && !buf_chunk_has_room(b, c, len, batch->count)) {
        buf_enqueue(b, c);
        c = NULL;
    }
    bool created = !c;
    if (!c) {
        c = buf_chunk_create(b, b->keybuf.data, batch->tag, &e, tk, err);
        if (!c) {
            *failed = true;
            return true;
        }
    }
    remember(b, c, created);
    if (append_run(b, c, batch, batch->data.data, len, batch->count) != 0) {
        *failed = true;
        return true;
    }
    if (buf_chunk_is_full(b, c)) buf_enqueue(b, c);
    return true;
}

weir_emit_result_t weir_buffer_append(weir_buffer_t *b, const weir_batch_t *batch, weir_emit_cb cb,
                                      void *arg)
{
    if (b->stopping) return WEIR_EMIT_FULL;
    if (b->disk_full) return WEIR_EMIT_FULL;
    if (b->bytes_total >= b->total_limit_size && over_limit(b) == WEIR_EMIT_FULL)
        return WEIR_EMIT_FULL;
    if (batch->tag_len > WEIR_TAG_MAX) {
        /* the inputs refuse such tags; a filter that rewrote the tag may still make one, and a
         * chunk would keep it only until recovery refuses it */
        unsigned long skipped = 0;
        if (weir_ratelimit_ok(&b->warn_rl, &skipped))
            weir_error("buffer %s: a batch with a tag of %zu bytes (longer than %d bytes) is "
                       "refused (%lu more like it not logged)",
                       b->plugin_id, batch->tag_len, WEIR_TAG_MAX, skipped);
        return WEIR_EMIT_ERROR;
    }
    b->ntouched = 0;
    b->append_gen++;
    b->rec_overhead = CHUNK_HDR_LEN + (b->key_tag ? 0 : CHUNK_TAG_HDR_MAX + batch->tag_len);
    weir_err_t err = {{0}};
    bool failed = false;
    if (append_whole(b, batch, &err, &failed)) {
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
            if (b->nvar_keys == 0 && c) {
                tk = b->key_time ? buf_bucket_of(b, e.time.sec) : 0;
                same = tk == prev_tk;
                if (!same) buf_event_key(b, batch->tag, &e, &tk);
            } else {
                buf_event_key(b, batch->tag, &e, &tk);
                same = c && strcmp(c->key, b->keybuf.data) == 0; /* c: the run's chunk */
            }
            same = same && buf_chunk_has_room(b, c, run_len + elen, run_n + 1);
        }
        if (!same && run_n > 0) {
            if (append_run(b, c, batch, run_start, run_len, run_n) != 0) goto fail;
            if (buf_chunk_is_full(b, c)) buf_enqueue(b, c);
            run_n = 0;
            run_len = 0;
        }
        if (!r) break;
        if (!same) {
            if (elen + b->rec_overhead > b->chunk_limit_size) {
                /* Never acknowledged and dropped: it goes into a chunk of its own (an empty
                 * chunk always has room, see chunk_has_room), which is then full. */
                unsigned long skipped = 0;
                if (weir_ratelimit_ok(&b->warn_rl, &skipped))
                    weir_warn("buffer %s: an event of %zu bytes is larger than chunk_limit_size "
                              "(%" PRIu64 "); stored in a chunk of its own (%lu more like it not "
                              "logged)",
                              b->plugin_id, elen, b->chunk_limit_size, skipped);
            }
            c = buf_staged_find(b, b->keybuf.data);
            if (c && !buf_chunk_has_room(b, c, elen, 1)) {
                buf_enqueue(b, c);
                c = NULL;
            }
            bool created = !c;
            if (!c) {
                c = buf_chunk_create(b, b->keybuf.data, batch->tag, &e, tk, &err);
                if (!c) goto fail;
            }
            remember(b, c, created);
            prev_tk = tk;
            run_start = entry_start;
        }
        run_n++;
        run_len += elen;
    }
done:
    if (b->flush_mode == FLUSH_IMMEDIATE)
        for (size_t i = 0; i < b->ntouched; i++)
            buf_enqueue(b, b->touched[i].c);
    buf_dispatch(b);
    if (b->type == BUF_MEMORY || b->ack_after_write) return WEIR_EMIT_DONE;
    buf_sync_wait(b, cb, arg);
    return WEIR_EMIT_PENDING;
fail : {
    int e2 = errno;
    rollback(b);
    if (e2 == ENOSPC || e2 == EDQUOT || e2 == EFBIG) {
        buf_enter_disk_full(b, e2);
        return WEIR_EMIT_FULL;
    }
    if (err.msg[0])
        weir_error("buffer %s: %s", b->plugin_id, err.msg);
    else
        weir_error("buffer %s: write failed: %s", b->plugin_id, strerror(e2));
    return WEIR_EMIT_ERROR;
}
fail_noerrno:
    rollback(b);
    return WEIR_EMIT_ERROR;
}

void buf_leave_disk_full(weir_buffer_t *b, const char *why)
{
    if (!b->disk_full) return;
    b->disk_full = false;
    uv_timer_stop(b->disk_probe);
    weir_info("buffer %s: %s; accepting events again", b->plugin_id, why);
    buf_space_available(b);
}

void buf_disk_probe_cb(uv_timer_t *t)
{
    weir_buffer_t *b = t->data;
    struct statvfs sv;
    if (statvfs(b->path, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize >= BUF_DISK_MIN_FREE)
        buf_leave_disk_full(b, "disk space is available again");
}

void buf_enter_disk_full(weir_buffer_t *b, int e)
{
    if (!b->disk_full)
        weir_error("buffer %s: cannot write to %s: %s; inputs stop reading until space returns "
                   "(everything stored is kept)",
                   b->plugin_id, b->path, strerror(e));
    b->disk_full = true;
    uv_timer_start(b->disk_probe, buf_disk_probe_cb, BUF_DISK_PROBE_MS, BUF_DISK_PROBE_MS);
}
