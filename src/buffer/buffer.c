/* The output buffer's life cycle and its interface to outputs (see include/weir/buffer.h for
 * the promise it keeps, and buffer_internal.h for the files that keep it): new, start (lock,
 * recovery, timers), stop (flush at shutdown, wait for writes and syncs), free; the chunk
 * accessors; and the chunk reader outputs stream chunks with.
 *
 * The buffer takes what it needs from a weir_buffer_env_t (a loop, a metrics handle, a space
 * callback), so a test can run it without an engine; weir_buffer_new builds that from the
 * engine. */
#include "buffer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void engine_space_available(void *eng)
{
    weir_engine_space_available(eng);
}

static bool engine_reloading(void *eng)
{
    return weir_engine_reloading(eng);
}

weir_buffer_t *weir_buffer_new(weir_engine_t *eng, weir_conf_section_t *sec,
                               const weir_buffer_defaults_t *defaults, const char *plugin_id,
                               const weir_buffer_sink_t *sink, weir_err_t *err)
{
    weir_buffer_env_t env = {
        .loop = weir_engine_loop(eng),
        .pm = weir_engine_plugin_metrics(eng),
        .space_available = engine_space_available,
        .reloading = engine_reloading,
        .arg = eng,
    };
    return weir_buffer_new_env(&env, sec, defaults, plugin_id, sink, err);
}

void buf_space_available(weir_buffer_t *b)
{
    if (b->env.space_available) b->env.space_available(b->env.arg);
}

weir_buffer_t *weir_buffer_new_env(const weir_buffer_env_t *env, weir_conf_section_t *sec,
                                   const weir_buffer_defaults_t *defaults, const char *plugin_id,
                                   const weir_buffer_sink_t *sink, weir_err_t *err)
{
    weir_buffer_t *b = weir_calloc(1, sizeof *b);
    b->env = *env;
    b->sink = *sink;
    b->plugin_id = weir_strdup(plugin_id);
    b->lock_fd = b->dir_fd = -1;
    b->warn_rl.interval_ms = WEIR_WARN_INTERVAL_MS;
    if (buf_read_conf(b, sec, defaults, err) != 0) {
        weir_buffer_free(b);
        return NULL;
    }
    buf_register_metrics(b, env->pm);
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
    b->loop = b->env.loop;
    signal(SIGXFSZ, SIG_IGN); /* RLIMIT_FSIZE shows up as EFBIG, handled as a full disk */
    if (b->type == BUF_FILE) {
        if (weir_dir_make(b->path, 0700) != 0) {
            weir_err_set(err, "cannot create buffer directory %s: %s", b->path, strerror(errno));
            return -1;
        }
        chmod(b->path, 0700);
        b->lock_fd = weir_dir_lock(b->path, ".weir.lock", "buffer path", err);
        if (b->lock_fd < 0) return -1;
        b->dir_fd = open(b->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (b->dir_fd < 0) {
            weir_err_set(err, "cannot open buffer directory %s: %s", b->path, strerror(errno));
            return -1;
        }
        if (buf_recover(b, err) != 0) return -1;
    }
    b->tick = weir_calloc(1, sizeof *b->tick);
    uv_timer_init(b->loop, b->tick);
    b->tick->data = b;
    uv_timer_start(b->tick, buf_tick_cb, BUF_TICK_MS, BUF_TICK_MS);
    b->disk_probe = weir_calloc(1, sizeof *b->disk_probe);
    uv_timer_init(b->loop, b->disk_probe);
    b->disk_probe->data = b;
    buf_dispatch(b);
    return 0;
}

static bool only_retry_waits(weir_buffer_t *b)
{
    for (weir_chunk_t *c = b->queue.head; c; c = c->next)
        if (c->state == CH_WRITING || c->steps == 0) return false;
    return true;
}

void buf_maybe_finish_stop(weir_buffer_t *b)
{
    if (!b->stopping || !b->stop_done) return;
    if (b->nrunning || b->pending || b->writing || b->backing_up) return;
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
    b->reload_handover = b->type == BUF_FILE && b->env.reloading && b->env.reloading(b->env.arg);
    if (b->flush_at_shutdown && !b->reload_handover) {
        weir_buffer_flush_all(b);
        for (weir_chunk_t *c = b->queue.head; c; c = c->next)
            c->steps = 0;
    }
    buf_sync_start(b);
    buf_maybe_finish_stop(b);
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
        buf_chunk_free(c);
    }
    for (weir_chunk_t *c = b->queue.head, *n; c; c = n) {
        n = c->next;
        buf_chunk_free(c);
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
    free(b->touched);
    free(b->path);
    free(b->backup_dir);
    free(b->plugin_id);
    free(b);
}

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
    chunk_reader_t rec; /* the chunk's records, in its file or in memory */
    const char *tag;    /* of the last run: c->meta.tag or `run_tag` */
    weir_buf_t run_tag; /* a CHUNK_REC_TAGGED record's tag, NUL-terminated */
    int raw_fd;         /* adopted Fluentd chunk */
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
    r->rec.fd = -1;
    r->raw_fd = -1;
    if (c->fluentd_meta) return r; /* read with weir_chunk_reader_raw */
    if (!c->path) {
        chunk_reader_open_mem(&r->rec, c->mem.data, c->mem.len);
    } else if (chunk_reader_open(&r->rec, c->path, (off_t)c->bytes, err) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

int weir_chunk_reader_next(weir_chunk_reader_t *r, const char **entries, size_t *len,
                           uint32_t *count, weir_err_t *err)
{
    chunk_run_t run;
    int rc = chunk_reader_next(&r->rec, &run, err);
    if (rc == 1) {
        *entries = run.entries;
        *len = run.len;
        *count = run.count;
        r->tag = r->c->meta.tag;
        if (run.tag) {
            r->run_tag.len = 0;
            weir_buf_append(&r->run_tag, run.tag, run.tag_len);
            weir_buf_putc(&r->run_tag, '\0');
            r->tag = r->run_tag.data;
        }
    } else if (rc == 0 && r->rec.events != r->c->events) {
        weir_err_set(err, "chunk %s: read %" PRIu64 " events, expected %" PRIu64, r->c->id_hex,
                     r->rec.events, r->c->events);
        return -1;
    }
    return rc;
}

const char *weir_chunk_reader_tag(const weir_chunk_reader_t *r)
{
    return r->tag ? r->tag : "";
}

void weir_chunk_reader_close(weir_chunk_reader_t *r)
{
    if (!r) return;
    if (!r->c->fluentd_meta) chunk_reader_close(&r->rec);
    weir_buf_free(&r->run_tag);
    if (r->raw_fd >= 0) close(r->raw_fd);
    weir_buf_free(&r->raw);
    free(r);
}

void weir_buffer_get_stats(const weir_buffer_t *b, weir_buffer_stats_t *out)
{
    *out = b->stats;
    out->bytes = b->bytes_total;
}
