/* @type forward: Fluentd's out_forward on weir's buffer. Each ready chunk goes to one of the
 * <server>s as PackedForward frames ([tag, entries, {"size", "chunk"}], CompressedPackedForward
 * with compress gzip), one frame per run of one tag; with require_ack_response the chunk is
 * done only when every frame's ack came back, else when its bytes were written.
 *
 * Threads: flush_thread_count sender threads (the buffer hands out at most that many chunks at
 * once, so none ever waits for a thread), each with its own connection per server (keepalive),
 * and one heartbeat thread. Results go back to the loop through one uv_async; the loop alone
 * calls weir_chunk_write_done. Server state (available, the round robin's counters) is shared
 * under `lock`.
 *
 * Choice of server: smooth weighted round robin (each pick adds every candidate's weight to its
 * counter, takes the largest and subtracts the total), over the regular servers that are up
 * and the standby servers promoted to cover the weight of those that are down (Fluentd's
 * rule). A server that fails a send is down until a
 * heartbeat connects to it again (heartbeat_type transport), or for recover_wait (none); the
 * chunk is sent at once to the next server up, and only when none is left does it go back to
 * the buffer to retry with backoff. O(servers) per pick, which at FO_MAX_SERVERS is nothing
 * next to a chunk's bytes.
 *
 * Invariant: a chunk is reported delivered only after every one of its frames was acked (or,
 * without acks, written to a socket). Resending after a lost ack can deliver a chunk twice; it
 * never loses one: at least once, as Fluentd. */
#include <stdlib.h>
#include <string.h>

#include "fo_internal.h"
#include "weir/buffer.h"
#include "weir/log.h"
#include "weir/mp.h"
#include "weir/plugin.h"

typedef struct fo_job {
    weir_chunk_t *chunk;
    weir_write_status_t status;
    char msg[WEIR_ERR_MAX];
    struct fo_job *next;
} fo_job_t;

typedef struct fo_frame {
    weir_buf_t bytes;
    char id[FO_CHUNK_ID_B64 + 1];
} fo_frame_t;

typedef struct fo_out {
    weir_engine_t *eng;
    char *id;
    fo_opts_t opts;
    fo_server_t *servers;
    size_t n_servers;
    weir_buffer_t *buffer;

    pthread_mutex_t lock;
    pthread_cond_t work; /* a job is queued, or stopping */
    pthread_cond_t hb_wake;
    fo_job_t *queue, **queue_tail;
    fo_job_t *done;
    bool stopping;
    uv_async_t *async;
    pthread_t *threads;
    int n_threads;
    bool hb_started;
    pthread_t hb;
    bool sync_ready; /* lock and conds initialised */

    void (*stop_done)(void *);
    void *stop_arg;
} fo_out_t;

/* ---- choosing a server (under lock) ------------------------------------------------ */

static bool server_up(const fo_out_t *o, const fo_server_t *s, double now)
{
    return o->opts.heartbeat ? s->available : s->down_until <= now;
}

/* Whether server i may take this chunk: up, not tried for it yet, with a weight. */
static bool server_usable(const fo_out_t *o, size_t i, const bool *tried, double now)
{
    const fo_server_t *s = &o->servers[i];
    return !tried[i] && s->weight > 0 && server_up(o, s, now);
}

/* The next server for a chunk, skipping those already tried for it; -1 when none is up.
 * Candidates are the regular servers that are up, plus, as Fluentd promotes them, standby
 * servers (up, in configuration order) until their weight covers the weight of the regular
 * servers that are down. */
static int server_pick(fo_out_t *o, const bool *tried)
{
    double now = fo_mono_now();
    int64_t lost = 0, total = 0;
    for (size_t i = 0; i < o->n_servers; i++)
        if (!o->servers[i].standby && !server_usable(o, i, tried, now))
            lost += o->servers[i].weight;
    int best = -1;
    for (size_t i = 0; i < o->n_servers; i++) {
        fo_server_t *s = &o->servers[i];
        if (!server_usable(o, i, tried, now)) continue;
        if (s->standby) {
            if (lost <= 0) continue;
            lost -= s->weight;
        }
        s->current += s->weight;
        total += s->weight;
        if (best < 0 || s->current > o->servers[best].current) best = (int)i;
    }
    if (best >= 0) o->servers[best].current -= total;
    return best;
}

static void server_failed(fo_out_t *o, size_t i, const char *why)
{
    pthread_mutex_lock(&o->lock);
    fo_server_t *s = &o->servers[i];
    bool was = server_up(o, s, fo_mono_now());
    s->available = false;
    s->down_until = fo_mono_now() + o->opts.recover_wait;
    pthread_mutex_unlock(&o->lock);
    if (was) weir_warn("forward %s: server %s is down: %s", o->id, s->name, why);
}

/* ---- a chunk as frames (sender thread) ----------------------------------------------- */

static void frame_id(const weir_chunk_t *c, size_t k, char out[FO_CHUNK_ID_B64 + 1])
{
    const char *hex = weir_chunk_id_hex(c);
    uint8_t id[16];
    for (int i = 0; i < 16; i++) {
        unsigned v = 0;
        sscanf(hex + 2 * i, "%2x", &v);
        id[i] = (uint8_t)v;
    }
    /* frames after the first of a chunk (one per tag) need ids of their own */
    id[15] ^= (uint8_t)(k & 0xff);
    id[14] ^= (uint8_t)((k >> 8) & 0xff);
    id[13] ^= (uint8_t)((k >> 16) & 0xff);
    fo_chunk_id_b64(id, out);
}

typedef struct fo_frames {
    fo_frame_t *v;
    size_t n, cap;
} fo_frames_t;

/* What a sender thread keeps from one chunk to the next: its connections and its buffers,
 * so that a chunk of megabytes does not cost fresh pages (glibc maps allocations that large
 * anew each time, and the kernel zeroes every page) on every send. The price is the memory of
 * the largest chunk sent, held per thread while idle. */
typedef struct fo_sender {
    fo_out_t *o;
    fo_conn_t *conns; /* one per server */
    fo_frames_t frames;
    weir_buf_t entries; /* gzip and Fluentd chunks: the entries before they go into a frame */
    weir_buf_t scratch; /* gzip's output */
} fo_sender_t;

/* Empties the frames; the first keeps its memory for the next chunk. */
static void frames_reset(fo_frames_t *f)
{
    for (size_t i = 1; i < f->n; i++)
        weir_buf_free(&f->v[i].bytes);
    if (f->n) f->v[0].bytes.len = 0;
    f->n = 0;
}

static void frames_free(fo_frames_t *f)
{
    frames_reset(f);
    if (f->cap) weir_buf_free(&f->v[0].bytes);
    free(f->v);
    memset(f, 0, sizeof *f);
}

static fo_frame_t *frame_next(fo_frames_t *f, const weir_chunk_t *c)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 4;
        f->v = weir_realloc(f->v, cap * sizeof *f->v);
        for (size_t i = f->cap; i < cap; i++)
            weir_buf_init(&f->v[i].bytes);
        f->cap = cap;
    }
    fo_frame_t *fr = &f->v[f->n++];
    fr->bytes.len = 0;
    frame_id(c, f->n - 1, fr->id);
    return fr;
}

/* One frame of `count` entries gathered in snd->entries (gzip, or a Fluentd chunk). */
static int frame_from_entries(fo_sender_t *snd, const weir_chunk_t *c, const char *tag,
                              uint32_t count, bool gzip, weir_err_t *err)
{
    fo_frame_t *fr = frame_next(&snd->frames, c);
    return fo_frame_build(tag, strlen(tag), snd->entries.data, snd->entries.len, count, gzip,
                          snd->o->opts.require_ack ? fr->id : NULL, &snd->scratch, &fr->bytes, err);
}

/* A chunk Fluentd's own buffer wrote (adopted at start): its bytes are msgpack entries already,
 * its tag is a chunk key (out_forward's default). */
static weir_write_status_t frames_fluentd(fo_sender_t *snd, weir_chunk_t *c,
                                          weir_chunk_reader_t *rd, weir_err_t *err)
{
    const char *tag = weir_chunk_tag(c);
    weir_buf_t *entries = &snd->entries;
    const char *p;
    size_t len;
    int rc;
    while ((rc = weir_chunk_reader_raw(rd, &p, &len, err)) == 1)
        weir_buf_append(entries, p, len);
    if (rc < 0) return WEIR_WRITE_RETRY;
    uint32_t count = 0;
    for (size_t off = 0; off < entries->len; count++) {
        ssize_t n = weir_mp_skip(entries->data + off, entries->len - off, WEIR_MP_MAX_DEPTH);
        if (n <= 0) {
            weir_err_set(err, "Fluentd chunk %s is not a run of msgpack entries",
                         weir_chunk_id_hex(c));
            return WEIR_WRITE_UNRECOVERABLE;
        }
        off += (size_t)n;
    }
    if (!tag) {
        weir_err_set(err, "Fluentd chunk %s has no tag (its buffer had no tag chunk key)",
                     weir_chunk_id_hex(c));
        return WEIR_WRITE_UNRECOVERABLE;
    }
    return frame_from_entries(snd, c, tag, count, snd->o->opts.gzip, err) == 0 ? WEIR_WRITE_OK
                                                                               : WEIR_WRITE_RETRY;
}

/* Reads the chunk into frames, one per run of one tag. Without gzip the entries are appended
 * straight into the frame (one copy); with gzip they are gathered first and compressed into
 * it. Either way the whole chunk is in memory while it is sent; a writer that streams a frame
 * from the chunk file would avoid that, at the price of knowing the frame's length first. */
static weir_write_status_t frames_build(fo_sender_t *snd, weir_chunk_t *c, weir_err_t *err)
{
    fo_out_t *o = snd->o;
    bool gzip = o->opts.gzip;
    char *tag = NULL;
    uint32_t count = 0;
    size_t len_off = 0;
    fo_frame_t *fr = NULL;
    weir_write_status_t st = WEIR_WRITE_RETRY;
    snd->entries.len = 0;
    weir_chunk_reader_t *rd = weir_chunk_reader_open(c, err);
    if (!rd) goto out;
    if (weir_chunk_is_fluentd(c)) {
        st = frames_fluentd(snd, c, rd, err);
        goto out;
    }
    const char *p;
    size_t len;
    uint32_t n;
    int rc;
    while ((rc = weir_chunk_reader_next(rd, &p, &len, &n, err)) == 1) {
        const char *t = weir_chunk_reader_tag(rd);
        if (!tag || strcmp(tag, t) != 0) {
            if (tag && (gzip ? frame_from_entries(snd, c, tag, count, true, err)
                             : fo_frame_finish(&fr->bytes, len_off, count,
                                               o->opts.require_ack ? fr->id : NULL, err)) != 0)
                goto out;
            free(tag);
            tag = weir_strdup(t);
            count = 0;
            snd->entries.len = 0;
            if (!gzip) {
                fr = frame_next(&snd->frames, c);
                /* the first frame (kept between chunks) is sized for the whole chunk; the
                 * others of a chunk whose tags alternate grow with what they get, so the
                 * frames together hold about the chunk, not a chunk each */
                if (snd->frames.n == 1)
                    weir_buf_reserve(&fr->bytes, weir_chunk_bytes(c) + strlen(t) + 64);
                len_off = fo_frame_begin(&fr->bytes, t, strlen(t));
            }
        }
        weir_buf_append(gzip ? &snd->entries : &fr->bytes, p, len);
        count += n;
    }
    if (rc < 0) goto out;
    if (tag && (gzip ? frame_from_entries(snd, c, tag, count, true, err)
                     : fo_frame_finish(&fr->bytes, len_off, count,
                                       o->opts.require_ack ? fr->id : NULL, err)) != 0)
        goto out;
    st = WEIR_WRITE_OK;
out:
    weir_chunk_reader_close(rd);
    free(tag);
    return st;
}

/* ---- sending (sender thread) ------------------------------------------------------------ */

/* Every frame to one server, each ack awaited when asked for. 0, or -1 with the connection
 * closed; *gone is set when the receiver had closed or reset the connection before anything
 * of this chunk was answered (what a kept-alive connection that went stale looks like). */
static int frames_send(fo_out_t *o, fo_conn_t *c, const fo_frames_t *f, bool *gone, weir_err_t *err)
{
    const fo_opts_t *op = &o->opts;
    weir_buf_t reply;
    weir_buf_init(&reply);
    int rc = -1;
    *gone = false;
    for (size_t i = 0; i < f->n; i++) {
        int w = fo_conn_write(c, f->v[i].bytes.data, f->v[i].bytes.len, op->send_timeout, err);
        if (w != 0) {
            *gone = i == 0 && w == FO_READ_CLOSED;
            goto out;
        }
        if (!op->require_ack) continue;
        int r = fo_conn_read_reply(c, &reply, op->ack_timeout, err);
        if (r == FO_READ_TIMEOUT)
            weir_err_set(err, "no ack within ack_response_timeout (%gs)", op->ack_timeout);
        if (r != 0) {
            *gone = i == 0 && r == FO_READ_CLOSED;
            goto out;
        }
        if (fo_ack_check(reply.data, reply.len, f->v[i].id, err) != 0) goto out;
    }
    rc = 0;
out:
    weir_buf_free(&reply);
    if (rc != 0 || !c->reusable)
        fo_conn_close(c);
    else
        c->idle_since = fo_mono_now();
    return rc;
}

/* Sends through server i, on a kept-alive connection when there is one. A kept-alive
 * connection the receiver had closed (it may close idle connections at any time) gets one
 * fresh connection before the server is called down; any other failure (an ack that does not
 * come, a wrong answer) counts at once, so failover is not delayed by a second wait. */
static int server_send(fo_out_t *o, fo_conn_t *c, size_t i, const fo_frames_t *f, weir_err_t *err)
{
    const fo_server_t *s = &o->servers[i];
    bool reused = fo_conn_alive(c, &o->opts), gone;
    if (!reused && fo_conn_open(c, &o->opts, s, err) != 0) return -1;
    if (frames_send(o, c, f, &gone, err) == 0) return 0;
    if (reused && gone) {
        if (fo_conn_open(c, &o->opts, s, err) != 0) return -1;
        if (frames_send(o, c, f, &gone, err) == 0) return 0;
    }
    weir_err_prefix(err, "%s", s->name);
    return -1;
}

static void job_run(fo_sender_t *snd, fo_job_t *j)
{
    fo_out_t *o = snd->o;
    weir_err_t err = {{0}};
    bool *tried = weir_calloc(o->n_servers, sizeof *tried);
    frames_reset(&snd->frames);
    j->status = frames_build(snd, j->chunk, &err);
    if (j->status != WEIR_WRITE_OK) goto out;
    if (snd->frames.n == 0) goto out; /* nothing to send: done */
    for (;;) {
        pthread_mutex_lock(&o->lock);
        int i = server_pick(o, tried);
        pthread_mutex_unlock(&o->lock);
        if (i < 0) {
            char last[WEIR_ERR_MAX];
            snprintf(last, sizeof last, "%s", err.msg);
            j->status = WEIR_WRITE_RETRY;
            weir_err_set(&err, "no server is up%s%s", last[0] ? "; last error: " : "", last);
            break;
        }
        tried[i] = true;
        if (server_send(o, &snd->conns[i], (size_t)i, &snd->frames, &err) == 0) {
            j->status = WEIR_WRITE_OK;
            break;
        }
        server_failed(o, (size_t)i, err.msg);
        weir_info("forward %s: chunk %s not delivered to %s (%s); trying another server", o->id,
                  weir_chunk_id_hex(j->chunk), o->servers[i].name, err.msg);
    }
out:
    if (j->status == WEIR_WRITE_OK) err.msg[0] = '\0';
    snprintf(j->msg, sizeof j->msg, "%s", err.msg);
    free(tried);
}

static void *sender_main(void *arg)
{
    fo_sender_t snd = {.o = arg};
    fo_out_t *o = snd.o;
    snd.conns = weir_calloc(o->n_servers, sizeof *snd.conns);
    weir_buf_init(&snd.entries);
    weir_buf_init(&snd.scratch);
    for (size_t i = 0; i < o->n_servers; i++)
        fo_conn_init(&snd.conns[i]);
    for (;;) {
        pthread_mutex_lock(&o->lock);
        while (!o->queue && !o->stopping)
            pthread_cond_wait(&o->work, &o->lock);
        fo_job_t *j = o->queue;
        if (j) {
            o->queue = j->next;
            if (!o->queue) o->queue_tail = &o->queue;
        }
        pthread_mutex_unlock(&o->lock);
        if (!j) break;
        job_run(&snd, j);
        pthread_mutex_lock(&o->lock);
        j->next = o->done;
        o->done = j;
        pthread_mutex_unlock(&o->lock);
        uv_async_send(o->async);
    }
    for (size_t i = 0; i < o->n_servers; i++)
        fo_conn_close(&snd.conns[i]);
    free(snd.conns);
    frames_free(&snd.frames);
    weir_buf_free(&snd.entries);
    weir_buf_free(&snd.scratch);
    return NULL;
}

/* heartbeat_type transport: a TCP connect to each server every heartbeat_interval decides
 * whether it is up. A connect waits at most the interval (or connect_timeout when shorter), so
 * that stopping never waits long for this thread. */
static void *heartbeat_main(void *arg)
{
    fo_out_t *o = arg;
    fo_opts_t probe = o->opts;
    if (probe.connect_timeout > probe.heartbeat_interval)
        probe.connect_timeout = probe.heartbeat_interval;
    pthread_mutex_lock(&o->lock);
    while (!o->stopping) {
        for (size_t i = 0; i < o->n_servers && !o->stopping; i++) {
            fo_server_t *s = &o->servers[i];
            pthread_mutex_unlock(&o->lock);
            weir_err_t err = {{0}};
            int rc = fo_probe(&probe, s, &err);
            pthread_mutex_lock(&o->lock);
            if (rc == 0 && !s->available)
                weir_info("forward %s: server %s is up again", o->id, s->name);
            else if (rc != 0 && s->available)
                weir_warn("forward %s: server %s is down (heartbeat): %s", o->id, s->name, err.msg);
            s->available = rc == 0;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_nsec / 1e9 + o->opts.heartbeat_interval;
        ts.tv_sec += (time_t)t;
        ts.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
        if (!o->stopping) pthread_cond_timedwait(&o->hb_wake, &o->lock, &ts);
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

/* ---- the loop side -------------------------------------------------------------------- */

static void fo_async(uv_async_t *a)
{
    fo_out_t *o = a->data;
    pthread_mutex_lock(&o->lock);
    fo_job_t *j = o->done;
    o->done = NULL;
    pthread_mutex_unlock(&o->lock);
    while (j) {
        fo_job_t *next = j->next;
        weir_chunk_write_done(j->chunk, j->status, j->msg[0] ? j->msg : NULL);
        free(j);
        j = next;
    }
}

static void fo_write(void *out, weir_chunk_t *chunk)
{
    fo_out_t *o = out;
    fo_job_t *j = weir_calloc(1, sizeof *j);
    j->chunk = chunk;
    pthread_mutex_lock(&o->lock);
    *o->queue_tail = j;
    o->queue_tail = &j->next;
    pthread_cond_signal(&o->work);
    pthread_mutex_unlock(&o->lock);
}

static void threads_join(fo_out_t *o)
{
    pthread_mutex_lock(&o->lock);
    o->stopping = true;
    pthread_cond_broadcast(&o->work);
    pthread_cond_broadcast(&o->hb_wake);
    pthread_mutex_unlock(&o->lock);
    for (int i = 0; i < o->n_threads; i++)
        pthread_join(o->threads[i], NULL);
    o->n_threads = 0;
    if (o->hb_started) pthread_join(o->hb, NULL);
    o->hb_started = false;
}

static void fo_destroy(void *state)
{
    fo_out_t *o = state;
    if (!o) return;
    if (o->sync_ready) {
        threads_join(o);
        pthread_mutex_destroy(&o->lock);
        pthread_cond_destroy(&o->work);
        pthread_cond_destroy(&o->hb_wake);
    }
    free(o->threads);
    weir_buffer_free(o->buffer);
    fo_servers_free(o->servers, o->n_servers);
    fo_opts_free(&o->opts);
    free(o->id);
    free(o);
}

static int fo_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    fo_out_t *o = weir_calloc(1, sizeof *o);
    o->eng = eng;
    o->queue_tail = &o->queue;
    const char *id = NULL;
    if (weir_conf_get_str(sec, "@id", &id, err) < 0) goto err;
    o->id = weir_strdup(id ? id : "forward");
    if (fo_opts_from_conf(&o->opts, sec, err) != 0 ||
        fo_servers_from_conf(sec, &o->servers, &o->n_servers, err) != 0)
        goto err;
    bool any = false;
    for (size_t i = 0; i < o->n_servers; i++)
        any |= o->servers[i].weight > 0;
    if (!any) {
        weir_conf_section_errorf(err, sec, "every <server> has weight 0: none would be used");
        goto err;
    }
    /* out_forward's buffer: chunks by tag (Fluentd's default), flushed as they fill */
    weir_buffer_defaults_t defs = {.chunk_keys = "tag", .timekey = 0};
    weir_buffer_sink_t sink = {.write = fo_write, .out = o};
    o->buffer = weir_buffer_new(eng, weir_conf_child(sec, "buffer", 0), &defs, o->id, &sink, err);
    if (!o->buffer) goto err;
    *state = o;
    return 0;
err:
    fo_destroy(o);
    return -1;
}

static int fo_start(void *state, weir_err_t *err)
{
    fo_out_t *o = state;
    fo_opts_t *op = &o->opts;
    if (op->tls) {
        op->ssl_ctx = weir_tls_client_ctx_new(&op->tls_opts, op->tls_ca_paths, op->n_tls_ca,
                                              op->tls_allow_self_signed, err);
        if (!op->ssl_ctx) {
            weir_err_prefix(err, "forward %s", o->id);
            return -1;
        }
    }
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->work, NULL);
    pthread_cond_init(&o->hb_wake, NULL);
    o->sync_ready = true;
    o->async = weir_calloc(1, sizeof *o->async);
    o->async->data = o;
    uv_async_init(weir_engine_loop(o->eng), o->async, fo_async);
    int n = weir_buffer_flush_threads(o->buffer);
    o->threads = weir_calloc((size_t)n, sizeof *o->threads);
    for (; o->n_threads < n; o->n_threads++)
        if (pthread_create(&o->threads[o->n_threads], NULL, sender_main, o) != 0) {
            weir_err_set(err, "forward %s: cannot start a sender thread", o->id);
            return -1;
        }
    if (op->heartbeat) {
        if (pthread_create(&o->hb, NULL, heartbeat_main, o) != 0) {
            weir_err_set(err, "forward %s: cannot start the heartbeat thread", o->id);
            return -1;
        }
        o->hb_started = true;
    }
    return weir_buffer_start(o->buffer, err);
}

static weir_emit_result_t fo_emit(void *state, const weir_batch_t *b, weir_emit_cb cb, void *arg)
{
    return weir_buffer_append(((fo_out_t *)state)->buffer, b, cb, arg);
}

static void fo_flush(void *state)
{
    weir_buffer_flush_all(((fo_out_t *)state)->buffer);
}

static void fo_async_closed(uv_handle_t *h)
{
    fo_out_t *o = h->data;
    free(h);
    o->async = NULL;
    if (o->stop_done) o->stop_done(o->stop_arg);
}

/* The buffer has no write in flight any more: the senders are idle, stop them. */
static void fo_buffer_stopped(void *arg)
{
    fo_out_t *o = arg;
    threads_join(o);
    uv_close((uv_handle_t *)o->async, fo_async_closed);
}

static void fo_stop(void *state, void (*done)(void *), void *arg)
{
    fo_out_t *o = state;
    o->stop_done = done;
    o->stop_arg = arg;
    weir_buffer_stop(o->buffer, fo_buffer_stopped, o);
}

const weir_output_ops_t weir_out_forward_ops = {
    .type = "forward",
    .create = fo_create,
    .start = fo_start,
    .emit = fo_emit,
    .flush = fo_flush,
    .stop = fo_stop,
    .destroy = fo_destroy,
};
