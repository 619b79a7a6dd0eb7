/* Group commit. An append's acknowledgement waits for a sync round: a worker thread
 * fdatasyncs every chunk written since the last round (through duplicated descriptors, so a
 * chunk may be enqueued and closed meanwhile; past BUF_DIRTY_FDS_MAX of them, with syncfs),
 * plus the directory when files were created or renamed, and then every waiter of that round
 * is told. Up to BUF_SYNC_PARALLEL rounds run at
 * once; past that, the next round collects while they finish.
 *
 * Invariant: a round covers exactly what was written before it started, directory entries
 * included (a round that starts while another round's directory fsync runs fsyncs the
 * directory as well, since it may finish first). */
#include "buffer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Notes a chunk written since the last sync snapshot: the next round fdatasyncs a duplicate of
 * its descriptor, so the chunk may be enqueued (and its own descriptor closed) meanwhile. With
 * ack_after write no round ever runs, so nothing is kept (a kept duplicate would hold the
 * chunk's disk space after its deletion, and one descriptor per chunk). */
void buf_mark_dirty(weir_buffer_t *b, weir_chunk_t *c)
{
    if (c->dirty || c->fd < 0 || b->ack_after_write) return;
    int d = b->ndirty < BUF_DIRTY_FDS_MAX ? dup(c->fd) : -1;
    if (d < 0) {
        /* a batch touching very many chunks (BUF_DIRTY_FDS_MAX), or out of descriptors: the
         * next round syncs the whole file system, which covers this chunk with no descriptor
         * of its own (and keeps the fdatasync off the loop thread) */
        b->dirty_past_fds = true;
        c->dirty = true;
        return;
    }
    if (b->ndirty == b->cap_dirty) {
        b->cap_dirty = b->cap_dirty ? b->cap_dirty * 2 : 16;
        b->dirty_fds = weir_realloc(b->dirty_fds, b->cap_dirty * sizeof(int));
    }
    b->dirty_fds[b->ndirty++] = d;
    c->dirty = true;
}

static void sync_work(uv_work_t *req)
{
    sync_round_t *r = req->data;
    for (size_t i = 0; i < r->nfds; i++) {
        if (fdatasync(r->fds[i]) != 0 && !r->error) r->error = errno;
        close(r->fds[i]);
    }
    if (r->dirfd >= 0 && fsync(r->dirfd) != 0 && !r->error) r->error = errno;
    if (r->fsfd >= 0 && syncfs(r->fsfd) != 0 && !r->error) r->error = errno;
}

static void sync_after(uv_work_t *req, int status)
{
    sync_round_t *r = req->data;
    weir_buffer_t *b = r->b;
    b->nrunning--;
    if (r->dirfd >= 0) b->dir_syncs_running--;
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
    if (b->pending) buf_sync_start(b);
    buf_maybe_finish_stop(b);
}

void buf_sync_start(weir_buffer_t *b)
{
    if (b->nrunning >= BUF_SYNC_PARALLEL || !b->pending) return;
    sync_round_t *r = weir_calloc(1, sizeof *r);
    r->b = b;
    r->req.data = r;
    r->fds = b->dirty_fds;
    r->nfds = b->ndirty;
    b->dirty_fds = NULL;
    b->ndirty = b->cap_dirty = 0;
    r->fsfd = b->dirty_past_fds ? b->dir_fd : -1;
    b->dirty_past_fds = false;
    for (weir_chunk_t *c = b->staged.head; c; c = c->next)
        c->dirty = false;
    /* The directory, when files were created or renamed since the last round took it, or
     * while an earlier round's directory fsync runs: this round may finish first, and its
     * batches may be in a chunk that round's fsync is to make durable. */
    r->dirfd = -1;
    if (b->dir_dirty || b->dir_syncs_running) {
        r->dirfd = b->dir_fd;
        b->dir_dirty = false;
        b->dir_syncs_running++;
    }
    r->waiters = b->pending;
    b->pending = b->pending_tail = NULL;
    b->nrunning++;
    uv_queue_work(b->loop, &r->req, sync_work, sync_after);
}

void buf_sync_wait(weir_buffer_t *b, weir_emit_cb cb, void *arg)
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
    buf_sync_start(b);
}
