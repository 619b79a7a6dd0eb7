/* The queue: which staged chunks are ready (time bucket closed, flush interval, full), handing
 * queued chunks to the output (at most flush_thread_count at once), and what happens after:
 * delivered chunks are removed, failed ones retry with their own backoff (one bad chunk does
 * not hold back the others), and a chunk whose retries end moves to backup/, never to
 * nowhere.
 *
 * Invariant: a chunk is on exactly one of the staged list, the queue (waiting, maybe for a
 * retry time) or the output's hands (WRITING). */
#include "buffer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
void buf_enqueue_ready(weir_buffer_t *b)
{
    double mono = buf_mono_now();
    int64_t now = (int64_t)buf_wall_now();
    /* chunks waiting for a flush thread; those waiting out a retry do not count, or one
     * failing chunk would hold every other chunk back */
    size_t waiting = 0;
    for (weir_chunk_t *c = b->queue.head; c; c = c->next)
        waiting += c->state == CH_QUEUED && c->steps == 0;
    for (weir_chunk_t *c = b->staged.head, *next; c; c = next) {
        next = c->next;
        if (waiting >= (size_t)b->queued_chunks_limit_size) break;
        if (chunk_ready(b, c, mono, now)) {
            buf_enqueue(b, c);
            waiting++;
        }
    }
}

void buf_tick_cb(uv_timer_t *t)
{
    weir_buffer_t *b = t->data;
    buf_enqueue_ready(b);
    buf_dispatch(b);
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

/* Writes a memory chunk as a chunk file (its records are already in the file's layout), so a
 * backup is readable the same way. */
static int write_chunk_file(const char *path, const chunk_meta_t *meta, const weir_buf_t *records)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    weir_buf_t m;
    weir_buf_init(&m);
    chunk_meta_encode(meta, &m);
    char h1[CHUNK_HDR_LEN];
    chunk_record_header(h1, CHUNK_REC_META, m.data, m.len, 0);
    struct iovec iov[3] = {{h1, CHUNK_HDR_LEN}, {m.data, m.len}, {records->data, records->len}};
    int rc = buf_write_full(fd, iov, 3);
    if (rc == 0) rc = fsync(fd);
    close(fd);
    weir_buf_free(&m);
    return rc;
}

/* A given-up chunk on its way to backup/: the moves and directory fsyncs run on a worker
 * thread (senders can cause give-ups, e.g. with names S3 refuses, and each costs two
 * directory fsyncs), and the chunk, in no list meanwhile, is released after. */
typedef struct backup_job {
    uv_work_t req;
    weir_buffer_t *b;
    weir_chunk_t *c;
    char *why;
    weir_buf_t dst;
    int rc, err; /* the move's result; errno of its failure */
    bool no_dir; /* backup/ could not be created */
} backup_job_t;

static void backup_work(uv_work_t *req)
{
    backup_job_t *j = req->data;
    weir_buffer_t *b = j->b;
    weir_chunk_t *c = j->c;
    j->rc = -1;
    if (weir_dir_make(b->backup_dir, 0700) != 0) {
        j->err = errno;
        j->no_dir = true;
        return;
    }
    if (c->fluentd_meta) {
        /* Fluentd's own files, moved as they are: Fluentd (or weir) can read them back */
        const char *base = strrchr(c->path, '/');
        weir_buf_printf(&j->dst, "%s%s.meta", b->backup_dir, base);
        if (rename(c->fluentd_meta, j->dst.data) != 0)
            weir_warn("buffer %s: cannot move %s to backup: %s", b->plugin_id, c->fluentd_meta,
                      strerror(errno));
        j->dst.len = 0;
        weir_buf_printf(&j->dst, "%s%s", b->backup_dir, base);
    } else {
        weir_buf_printf(&j->dst, "%s/%s.chunk", b->backup_dir, c->id_hex);
    }
    int rc =
        c->path ? rename(c->path, j->dst.data) : write_chunk_file(j->dst.data, &c->meta, &c->mem);
    /* The backup is the only copy left once the chunk is freed: fsync backup/ for its entry,
     * then the buffer directory for the name it left. */
    if (rc == 0) rc = weir_dir_sync(b->backup_dir);
    if (rc == 0 && b->path) rc = weir_dir_sync(b->path);
    j->rc = rc;
    j->err = rc == 0 ? 0 : errno;
}

static void backup_after(uv_work_t *req, int status)
{
    (void)status;
    backup_job_t *j = req->data;
    weir_buffer_t *b = j->b;
    weir_chunk_t *c = j->c;
    if (j->rc == 0)
        weir_error("buffer %s: chunk %s (%" PRIu64 " events) given up (%s); moved to %s",
                   b->plugin_id, c->id_hex, c->events, j->why, j->dst.data);
    else if (j->no_dir)
        weir_error("buffer %s: cannot create backup directory %s: %s; chunk %s stays at %s",
                   b->plugin_id, b->backup_dir, strerror(j->err), c->id_hex,
                   c->path ? c->path : "(memory, lost)");
    else
        weir_error(
            "buffer %s: chunk %s given up (%s) but cannot be moved to %s: %s; it stays at %s",
            b->plugin_id, c->id_hex, j->why, j->dst.data, strerror(j->err),
            c->path ? c->path : "(memory)");
    b->backing_up--;
    buf_chunk_delivered(b, c);
    weir_buf_free(&j->dst);
    free(j->why);
    free(j);
    buf_maybe_finish_stop(b);
}

/* Moves a chunk that cannot be delivered to the backup directory (never deletes it, unless
 * disable_chunk_backup says so), then releases it. */
void buf_backup_chunk(weir_buffer_t *b, weir_chunk_t *c, const char *why)
{
    b->stats.backups++;
    if (b->disable_chunk_backup) {
        weir_error("buffer %s: chunk %s (%" PRIu64 " events) given up (%s); "
                   "disable_chunk_backup is set, so it is deleted",
                   b->plugin_id, c->id_hex, c->events, why);
        if (c->path) unlink(c->path);
        buf_chunk_delivered(b, c);
        return;
    }
    backup_job_t *j = weir_calloc(1, sizeof *j);
    j->req.data = j;
    j->b = b;
    j->c = c;
    j->why = weir_strdup(why);
    weir_buf_init(&j->dst);
    b->backing_up++;
    uv_queue_work(b->loop, &j->req, backup_work, backup_after);
}

void buf_chunk_delivered(weir_buffer_t *b, weir_chunk_t *c)
{
    bool was_full = b->bytes_total >= b->total_limit_size;
    b->bytes_total -= c->bytes;
    buf_chunk_free(c);
    if (b->full_reported && b->bytes_total < b->total_limit_size) {
        b->full_reported = false;
        weir_info("buffer %s has room again", b->plugin_id);
    }
    if (was_full || b->disk_full) {
        if (b->disk_full) buf_leave_disk_full(b, "a delivered chunk freed disk space");
        buf_space_available(b);
    }
}

void weir_chunk_write_done(weir_chunk_t *c, weir_write_status_t status, const char *msg)
{
    weir_buffer_t *b = c->b;
    b->writing--;
    buf_list_remove(&b->queue, c);
    if (status == WEIR_WRITE_OK) {
        if (c->steps)
            weir_info("buffer %s: chunk %s delivered after %u retries", b->plugin_id, c->id_hex,
                      c->steps);
        b->stats.events_written += c->events;
        b->stats.queued_chunks--;
        b->failing_since = 0;
        b->last_success_time = buf_wall_now();
        weir_metrics_output_written(b->pm, c->events);
        /* no directory fsync: a lost unlink only brings the delivered chunk back at the next
         * start, and it is delivered again (at least once, never lost) */
        if (c->path && unlink(c->path) != 0)
            weir_warn("buffer %s: cannot remove delivered chunk %s: %s", b->plugin_id, c->path,
                      strerror(errno));
        if (c->fluentd_meta) unlink(c->fluentd_meta);
        buf_chunk_delivered(b, c);
        buf_enqueue_ready(b);
        buf_dispatch(b);
        buf_maybe_finish_stop(b);
        return;
    }
    b->stats.write_errors++;
    double now = buf_wall_now();
    if (!c->first_failure) c->first_failure = now;
    if (!b->failing_since) b->failing_since = now;
    b->last_error_time = now;
    snprintf(b->last_error, sizeof b->last_error, "%s", msg && *msg ? msg : "write failed");
    bool give_up = status == WEIR_WRITE_UNRECOVERABLE ||
                   (!b->retry_forever &&
                    ((b->retry_max_times > 0 && c->steps >= (unsigned)b->retry_max_times) ||
                     now - c->first_failure >= b->retry_timeout));
    weir_metrics_output_failed(b->pm, !give_up, give_up);
    if (status == WEIR_WRITE_UNRECOVERABLE) weir_metrics_output_unrecoverable(b->pm);
    if (give_up) {
        b->stats.queued_chunks--;
        buf_backup_chunk(b, c, msg ? msg : "write failed");
    } else {
        double d = retry_delay(b, c->steps);
        c->steps++;
        b->stats.retries++;
        c->next_try = buf_mono_now() + d;
        c->state = CH_QUEUED;
        weir_warn("buffer %s: chunk %s failed to flush (%s); retry %u in %.1fs", b->plugin_id,
                  c->id_hex, msg ? msg : "error", c->steps, d);
        /* back at the head, as Fluentd's takeback, but other chunks do not wait for it */
        buf_list_push_front(&b->queue, c);
    }
    buf_dispatch(b);
    buf_maybe_finish_stop(b);
}

void buf_dispatch(weir_buffer_t *b)
{
    if (!b->sink.write) return;
    double now = buf_mono_now();
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

void weir_buffer_flush_all(weir_buffer_t *b)
{
    while (b->staged.head)
        buf_enqueue(b, b->staged.head);
    for (weir_chunk_t *c = b->queue.head; c; c = c->next)
        c->next_try = 0;
    buf_dispatch(b);
}
