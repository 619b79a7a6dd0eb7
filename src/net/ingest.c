/* The ingest-connection layer (include/weir/ingest.h): the connection list, read buffers, one
 * emit in flight per connection, backpressure, the limits and the drain on stop, for every
 * network input. Inputs bring their framing and their answer.
 *
 * Invariants:
 * - A connection's read buffer holds rbuf.data[rpos..len), and rpos is the first byte of the
 *   unit being read. While a unit is in flight (emitted, or waiting for space) reading is
 *   paused and the buffer neither grows nor moves, so what the framing pointed into stays put
 *   until .answer returns.
 * - A connection struct is freed only when its network connection is gone and none of its
 *   embedded requests (the emit, the name lookup) is outstanding. A request whose connection
 *   closed is cancelled: its completion only releases the struct. Everything else the
 *   connection held is freed when it closes.
 * - `held` is what the memory budget counts: unread bytes plus what the input reports. The
 *   budget is process-wide: g_held sums every connection of every input, kept exact at every
 *   change, and a connection of an input stops reading when g_held passes that input's
 *   connection_memory_limit (one value on every source is one budget; with several, the
 *   largest bounds the total).
 *
 * - A connection is on its input's `again` list exactly while its framing returned
 *   WEIR_INGEST_AGAIN and has not been called again: reading is paused and its buffer does not
 *   move. One uv_idle per input (active only while the list is not empty) calls each listed
 *   connection's framing once per loop turn, so the loop polls for I/O between slices (an
 *   active idle handle makes the poll not block) and the others' units are read and answered
 *   in between. A connection leaves the list when it closes, before anything of it is freed.
 *
 * Deadlines are checked by one timer per input that walks the connection list: O(connections)
 * per tick (at most a few per second). That is nothing next to the reads those connections
 * cost; a timer wheel would replace it if tens of thousands of connections ever matter. */
#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "weir/ingest.h"
#include "weir/log.h"

#define INGEST_COMPACT_MIN (64 * 1024) /* move the unread tail to the front past this offset */
#define INGEST_TICK_MS_MAX 1000        /* deadline check period; shorter for short timeouts */
#define INGEST_TICK_MS_MIN 50
/* weir_conn has no "everything written" callback, so a connection that stopped reading its
 * answers is looked at again this often, and only while one is in that state. */
#define INGEST_DRAIN_POLL_MS 10

/* Connections of every input together, against the descriptor share, and the bytes they
 * hold together, against the memory budget (loop thread only). */
static size_t g_open_conns;
static uint64_t g_held;
static weir_ingest_t *g_ingests; /* every live input, for unblocking across inputs */
/* Over the budget, one connection still reads: its unit ends within its own limits and
 * deadline and frees memory, where blocking every partial unit would hold them all until
 * progress_timeout. The exemption passes on as that connection's unit completes. */
static weir_ingest_conn_t *g_exempt;

struct weir_ingest_conn {
    weir_ingest_t *ing;
    weir_conn_t *c; /* NULL once the network connection is gone */
    weir_ingest_conn_t *prev, *next;
    weir_buf_t rbuf;
    size_t rpos;
    /* the unit in flight */
    weir_batch_t *batch;
    size_t unit_len;    /* bytes of rbuf it occupies, consumed after .answer */
    size_t wire_bytes;  /* for metrics */
    uint64_t unit_ns;   /* when it was complete (uv_hrtime), for the ack latency */
    bool waiting_space; /* the output was full: emit again when space frees up */
    weir_space_waiter_t waiter;
    /* embedded requests: outstanding ones keep the struct alive after a close */
    bool emit_active, emit_cancelled;
    bool gni_active;
    uv_getnameinfo_t gni;
    /* on ing->again: .frame is called again with the same bytes on a later turn */
    bool again;
    bool in_steps;       /* its framing answered AGAIN for the unit at rpos, not yet done */
    uint64_t again_turn; /* the idle turn it was listed in */
    weir_ingest_conn_t *again_prev, *again_next;
    char *hostname;
    /* state */
    bool opened;        /* .open ran: units are read */
    bool authenticated; /* always true without require_auth */
    bool write_blocked; /* the peer does not read its answers */
    bool budget_blocked;
    bool eof;
    bool closing;
    bool sent_any;                                      /* a byte arrived since accept */
    uint64_t accepted_ms, unit_first_ms, idle_since_ms; /* unit_first_ms 0: no unit begun */
    uint64_t blocked_ms;
    size_t blocked_queue;
    uint64_t held;
    alignas(max_align_t) unsigned char user[];
};

struct weir_ingest {
    uv_loop_t *loop;
    weir_engine_t *eng;
    const weir_ingest_ops_t *ops;
    weir_ingest_opts_t o;
    char *label;
    weir_listener_t *listener;
    uv_timer_t tick, drain_poll;
    uv_idle_t again_idle; /* runs the again list, one call per connection per turn */
    weir_ingest_conn_t *again_head, *again_tail;
    uint64_t again_turn;
    int open_handles; /* the timers and the idle; the struct goes when they and the connections are
                       */
    weir_ingest_conn_t *conns;
    size_t nconns;
    size_t nblocked; /* budget_blocked connections */
    uint64_t held;   /* this input's share of g_held */
    weir_ingest_t *gnext;
    bool stopping, freed;
    void (*stop_done)(void *);
    void *stop_arg;
    weir_ratelimit_t warn_rl, refuse_rl;
    weir_counter_t *refused;
};

static void conn_process(weir_ingest_conn_t *ic);
static void conn_cancel(weir_ingest_conn_t *ic);
static void on_again(uv_idle_t *h);

/* ---- small helpers ----------------------------------------------------------------------- */

/* A unit was emitted, or waits for space. */
static bool conn_emitting(const weir_ingest_conn_t *ic)
{
    return ic->emit_active || ic->waiting_space;
}

/* A unit is in flight: emitted, waiting for space, or being worked on in steps. */
static bool conn_busy(const weir_ingest_conn_t *ic)
{
    return conn_emitting(ic) || ic->again;
}

static uint64_t now_ms(const weir_ingest_t *ing)
{
    return uv_now(ing->loop);
}

static uint64_t secs_ms(double s)
{
    return (uint64_t)(s * 1000.0 + 0.5);
}

/* Reading is on exactly when nothing holds it: a unit in flight, a peer not reading its
 * answers, the memory budget. */
static void conn_update_reading(weir_ingest_conn_t *ic)
{
    if (ic->closing || !ic->c) return;
    if (conn_busy(ic) || ic->write_blocked || ic->budget_blocked)
        weir_conn_pause(ic->c);
    else
        weir_conn_resume(ic->c);
}

/* The total dropped: every input whose budget it is under again reads its blocked
 * connections. O(connections) per release, and only while some are blocked. */
static void unblock_budget(void)
{
    for (weir_ingest_t *ing = g_ingests; ing; ing = ing->gnext) {
        if (ing->nblocked == 0 || g_held > ing->o.memory_limit) continue;
        for (weir_ingest_conn_t *ic = ing->conns; ic && ing->nblocked > 0; ic = ic->next) {
            if (!ic->budget_blocked) continue;
            ic->budget_blocked = false;
            ing->nblocked--;
            conn_update_reading(ic);
        }
    }
}

static size_t g_nblocked(void)
{
    size_t n = 0;
    for (weir_ingest_t *ing = g_ingests; ing; ing = ing->gnext)
        n += ing->nblocked;
    return n;
}

/* The exempt connection finished a unit or closed: a blocked connection of an input still
 * over its budget reads next, in its place; with none, those under their budget read again. */
static void pass_exemption(void)
{
    g_exempt = NULL;
    for (weir_ingest_t *ing = g_ingests; ing; ing = ing->gnext) {
        if (ing->nblocked == 0 || g_held <= ing->o.memory_limit) continue;
        for (weir_ingest_conn_t *ic = ing->conns; ic; ic = ic->next) {
            if (!ic->budget_blocked) continue;
            ic->budget_blocked = false;
            ing->nblocked--;
            g_exempt = ic;
            conn_update_reading(ic);
            return;
        }
    }
    if (g_nblocked() > 0) unblock_budget();
}

/* Recounts what the connection holds (unread bytes, the unit in flight, what the input
 * reports); past the budget, one that holds something stops reading until the total drops
 * below it again, but for the one exempt connection. */
static void conn_account(weir_ingest_conn_t *ic)
{
    weir_ingest_t *ing = ic->ing;
    uint64_t h = 0, old = ic->held;
    if (!ic->closing) {
        h = ic->rbuf.len - ic->rpos;
        if (ic->batch) h += ic->batch->data.len;
        if (ing->ops->held) h += ing->ops->held(ic);
    }
    ing->held = ing->held - ic->held + h;
    g_held = g_held - ic->held + h;
    ic->held = h;
    if (ic == g_exempt && (h < old || ic->closing)) {
        pass_exemption(); /* a unit done (or the connection gone): another's turn */
        return;
    }
    if (g_held > ing->o.memory_limit) {
        if (!g_exempt && h > 0 && !ic->closing) g_exempt = ic;
        if (ic != g_exempt && h > 0 && !ic->budget_blocked && !ic->closing && !conn_busy(ic)) {
            ic->budget_blocked = true;
            ing->nblocked++;
            weir_debug("%s: %s holds %llu bytes and all connections hold %llu "
                       "(connection_memory_limit %llu): not reading it until they drop",
                       ing->ops->name, weir_ingest_conn_peer(ic), (unsigned long long)h,
                       (unsigned long long)g_held, (unsigned long long)ing->o.memory_limit);
            conn_update_reading(ic);
        }
    } else if (h < old && g_nblocked() > 0) {
        unblock_budget();
    }
}

static void stop_check(weir_ingest_t *ing)
{
    if (!ing->stopping || ing->nconns > 0 || !ing->stop_done) return;
    void (*done)(void *) = ing->stop_done;
    ing->stop_done = NULL;
    done(ing->stop_arg);
}

static void ingest_release(weir_ingest_t *ing)
{
    if (!ing->freed || ing->open_handles > 0 || ing->nconns > 0) return;
    for (weir_ingest_t **p = &g_ingests; *p; p = &(*p)->gnext) {
        if (*p != ing) continue;
        *p = ing->gnext;
        break;
    }
    free(ing->label);
    free(ing);
}

/* ---- work in steps -------------------------------------------------------------------------- */

static void again_list(weir_ingest_conn_t *ic)
{
    weir_ingest_t *ing = ic->ing;
    ic->again = true;
    ic->again_turn = ing->again_turn;
    ic->again_next = NULL;
    ic->again_prev = ing->again_tail;
    if (ing->again_tail)
        ing->again_tail->again_next = ic;
    else
        ing->again_head = ic;
    ing->again_tail = ic;
    if (!uv_is_active((uv_handle_t *)&ing->again_idle)) uv_idle_start(&ing->again_idle, on_again);
}

static void again_unlist(weir_ingest_conn_t *ic)
{
    weir_ingest_t *ing = ic->ing;
    if (!ic->again) return;
    ic->again = false;
    if (ic->again_prev)
        ic->again_prev->again_next = ic->again_next;
    else
        ing->again_head = ic->again_next;
    if (ic->again_next)
        ic->again_next->again_prev = ic->again_prev;
    else
        ing->again_tail = ic->again_prev;
    ic->again_prev = ic->again_next = NULL;
    if (!ing->again_head) uv_idle_stop(&ing->again_idle);
}

/* One loop turn: every connection listed before it began gets one more call of its framing;
 * one that answers AGAIN again is listed for the next turn. A connection closed meanwhile has
 * left the list (conn_cancel), so none is touched after its close. */
static void on_again(uv_idle_t *h)
{
    weir_ingest_t *ing = h->data;
    uint64_t turn = ++ing->again_turn;
    weir_ingest_conn_t *ic;
    while ((ic = ing->again_head) && ic->again_turn < turn) {
        again_unlist(ic);
        conn_process(ic);
        if (!ic->closing && !conn_busy(ic)) conn_update_reading(ic);
    }
}

/* ---- the connection's end --------------------------------------------------------------- */

static void conn_maybe_free(weir_ingest_conn_t *ic)
{
    if (ic->c || ic->emit_active || ic->gni_active) return;
    free(ic);
}

/* The network connection is gone: unlink, free what it held, cancel its requests. */
static void on_close(weir_conn_t *c, const char *reason)
{
    weir_ingest_conn_t *ic = weir_conn_get_data(c);
    weir_ingest_t *ing = ic->ing;
    conn_cancel(ic);
    if (ic->budget_blocked) ing->nblocked--;
    ic->budget_blocked = false;
    if (ic->prev)
        ic->prev->next = ic->next;
    else
        ing->conns = ic->next;
    if (ic->next) ic->next->prev = ic->prev;
    ing->nconns--;
    g_open_conns--;
    weir_metrics_input_connection(ing->o.pm, -1);
    if (ing->ops->closed) ing->ops->closed(ic);
    conn_account(ic); /* closing: counts 0 */
    weir_buf_free(&ic->rbuf);
    free(ic->hostname);
    ic->hostname = NULL;
    ic->batch = NULL;
    ic->c = NULL;
    if (g_nblocked() > 0) unblock_budget();
    conn_maybe_free(ic);
    stop_check(ing);
    ingest_release(ing);
}

/* Closing cancels what the connection waits for: a space waiter is removed, an emit the
 * output holds completes into a cancelled request (on_emitted), so no answer is written to a
 * connection that is going away and the input never hears of it again. */
static void conn_cancel(weir_ingest_conn_t *ic)
{
    ic->closing = true;
    again_unlist(ic);
    if (ic->waiting_space) weir_engine_cancel_space(ic->ing->eng, &ic->waiter);
    ic->waiting_space = false;
    if (ic->emit_active) ic->emit_cancelled = true;
}

void weir_ingest_conn_close(weir_ingest_conn_t *ic, const char *why)
{
    if (ic->closing) return;
    conn_cancel(ic);
    weir_conn_close(ic->c, why);
}

void weir_ingest_conn_fail(weir_ingest_conn_t *ic, const char *why)
{
    if (ic->closing) return;
    unsigned long skipped = 0;
    if (weir_ratelimit_ok(&ic->ing->warn_rl, &skipped))
        weir_warn("%s: closing connection from %s:%d: %s (%lu similar warnings suppressed)",
                  ic->ing->ops->name, weir_conn_peer_addr(ic->c), weir_conn_peer_port(ic->c), why,
                  skipped);
    weir_ingest_conn_close(ic, why);
}

static void conn_abort(weir_ingest_conn_t *ic, const char *why)
{
    if (ic->closing) return;
    conn_cancel(ic);
    weir_conn_abort(ic->c, why);
}

/* ---- units ------------------------------------------------------------------------------- */

/* A unit is finished: the next one begins with the bytes already here, if any. */
static void unit_done(weir_ingest_conn_t *ic)
{
    uint64_t now = now_ms(ic->ing);
    ic->unit_first_ms = ic->rpos < ic->rbuf.len ? now : 0;
    ic->idle_since_ms = now;
}

static void compact(weir_ingest_conn_t *ic)
{
    weir_buf_t *b = &ic->rbuf;
    if (ic->rpos == b->len) {
        ic->rpos = b->len = 0;
        if (b->cap > WEIR_INGEST_KEEP_BUF_MAX) weir_buf_free(b);
    } else if (ic->rpos >= INGEST_COMPACT_MIN && ic->rpos * 2 >= b->len) {
        memmove(b->data, b->data + ic->rpos, b->len - ic->rpos);
        b->len -= ic->rpos;
        ic->rpos = 0;
    }
}

/* The emitted unit is done: answer, consume its bytes. */
static void unit_answered(weir_ingest_conn_t *ic, weir_ingest_status_t st)
{
    weir_ingest_t *ing = ic->ing;
    if (st == WEIR_INGEST_STORED)
        weir_metrics_input_ack_latency(ing->o.pm, uv_hrtime() - ic->unit_ns);
    ic->batch = NULL;
    if (ing->ops->answer) ing->ops->answer(ic, st);
    if (ic->closing) return; /* closed from inside the answer */
    ic->rpos += ic->unit_len;
    ic->unit_len = 0;
    unit_done(ic);
}

static void space_ready(void *arg);

static void on_emitted(void *arg, int status)
{
    weir_ingest_conn_t *ic = arg;
    ic->emit_active = false;
    if (ic->emit_cancelled) { /* the connection closed while the output held the batch */
        conn_maybe_free(ic);
        return;
    }
    unit_answered(ic, status == 0 ? WEIR_INGEST_STORED : WEIR_INGEST_FAILED);
    if (ic->closing) return;
    conn_update_reading(ic);
    conn_process(ic);
}

/* Hands the unit's batch to the router. Returns true when the connection may go on with the
 * next unit now. */
static bool conn_emit(weir_ingest_conn_t *ic)
{
    weir_ingest_t *ing = ic->ing;
    if (ic->batch->count == 0) {
        unit_answered(ic, WEIR_INGEST_STORED);
        return !ic->closing;
    }
    weir_emit_result_t r = weir_engine_emit(ing->eng, ing->label, ic->batch, on_emitted, ic);
    if (r == WEIR_EMIT_DONE || r == WEIR_EMIT_PENDING)
        weir_metrics_input_events(ing->o.pm, ic->batch->tag, ic->batch->count, ic->wire_bytes);
    switch (r) {
    case WEIR_EMIT_DONE:
        unit_answered(ic, WEIR_INGEST_STORED);
        return !ic->closing;
    case WEIR_EMIT_PENDING:
        ic->emit_active = true;
        ic->emit_cancelled = false;
        conn_update_reading(ic);
        return false;
    case WEIR_EMIT_FULL:
        ic->waiting_space = true;
        conn_update_reading(ic);
        ic->waiter.fn = space_ready;
        ic->waiter.arg = ic;
        weir_engine_on_space(ing->eng, &ic->waiter);
        return false;
    case WEIR_EMIT_ERROR:
    default:
        unit_answered(ic, WEIR_INGEST_REJECTED);
        return !ic->closing;
    }
}

/* A waiter is cancelled when its connection closes, so this runs only for a live one. */
static void space_ready(void *arg)
{
    weir_ingest_conn_t *ic = arg;
    ic->waiting_space = false;
    if (conn_emit(ic)) {
        conn_update_reading(ic);
        conn_process(ic);
    }
}

static bool conn_can_read_units(const weir_ingest_conn_t *ic)
{
    /* once the input stops, a connection finishes the unit it has begun (emitted, or in
     * steps), answers it and closes: a sender streaming units would otherwise hold the stop
     * (and a reload) for ever */
    return !ic->closing && ic->opened && !conn_busy(ic) && !ic->write_blocked &&
           (!ic->ing->stopping || ic->in_steps);
}

/* Runs every whole unit in the buffer, until one is in flight or the bytes run out. */
static void conn_process(weir_ingest_conn_t *ic)
{
    weir_ingest_t *ing = ic->ing;
    while (conn_can_read_units(ic) && ic->rpos < ic->rbuf.len) {
        weir_ingest_frame_t f = {0};
        size_t avail = ic->rbuf.len - ic->rpos;
        weir_ingest_res_t r = ing->ops->frame(ic, ic->rbuf.data + ic->rpos, avail, &f);
        if (ic->closing) return;
        ic->in_steps = r == WEIR_INGEST_AGAIN;
        if (f.consumed > avail) f.consumed = avail; /* never trust past the bytes handed over */
        if (r == WEIR_INGEST_ERROR) {
            weir_ingest_conn_fail(ic, f.why ? f.why : "malformed input");
            return;
        }
        if (r == WEIR_INGEST_AGAIN) { /* the same bytes again, next turn */
            again_list(ic);
            conn_update_reading(ic);
            break;
        }
        if (r == WEIR_INGEST_EMIT) {
            ic->batch = f.batch;
            ic->unit_len = f.consumed;
            ic->wire_bytes = f.wire_bytes;
            ic->unit_ns = uv_hrtime();
            if (!conn_emit(ic)) break;
            continue;
        }
        ic->rpos += f.consumed;
        if (r == WEIR_INGEST_CLOSE) {
            weir_ingest_conn_close(ic, NULL);
            return;
        }
        if (r == WEIR_INGEST_NEXT) {
            unit_done(ic);
            continue;
        }
        if (!ic->authenticated && ic->rbuf.len - ic->rpos > ing->o.preauth_limit) {
            char why[96];
            snprintf(why, sizeof why, "more than %zu bytes before authenticating",
                     ing->o.preauth_limit);
            weir_ingest_conn_fail(ic, why);
            return;
        }
        if (f.consumed == 0 || ic->rpos == ic->rbuf.len) break; /* MORE */
    }
    if (ic->closing) return;
    if (!conn_busy(ic)) compact(ic);
    conn_account(ic);
    if (conn_busy(ic) || ic->write_blocked || !ic->opened) return;
    if (ic->eof) {
        if (ic->unit_first_ms)
            weir_debug("%s: %s closed in the middle of a unit (%zu unread bytes)", ing->ops->name,
                       weir_ingest_conn_peer(ic), ic->rbuf.len - ic->rpos);
        weir_ingest_conn_close(ic, NULL);
        return;
    }
    if (ing->stopping) weir_ingest_conn_close(ic, NULL);
}

/* ---- network callbacks ------------------------------------------------------------------- */

static void on_data(weir_conn_t *c, const char *data, size_t len)
{
    weir_ingest_conn_t *ic = weir_conn_get_data(c);
    if (ic->closing) return;
    if (!ic->unit_first_ms) ic->unit_first_ms = now_ms(ic->ing);
    ic->sent_any = true;
    weir_buf_append(&ic->rbuf, data, len);
    conn_process(ic);
}

static void on_eof(weir_conn_t *c)
{
    weir_ingest_conn_t *ic = weir_conn_get_data(c);
    ic->eof = true;
    if (ic->closing) return;
    if (!ic->opened) { /* still resolving: nothing can be answered any more */
        weir_ingest_conn_close(ic, NULL);
        return;
    }
    conn_process(ic);
}

static void conn_open(weir_ingest_conn_t *ic)
{
    ic->opened = true;
    if (ic->ing->ops->open) ic->ing->ops->open(ic);
    if (ic->closing) return;
    conn_update_reading(ic);
    conn_process(ic);
}

static void on_resolved(uv_getnameinfo_t *req, int status, const char *host, const char *service)
{
    weir_ingest_conn_t *ic = req->data;
    ic->gni_active = false;
    if (!ic->c) { /* closed while the lookup ran */
        conn_maybe_free(ic);
        return;
    }
    ic->hostname = weir_strdup(status == 0 && host ? host : "name resolution failed");
    if (!ic->closing) conn_open(ic);
}

static void on_ready(weir_conn_t *c)
{
    weir_ingest_conn_t *ic = weir_conn_get_data(c);
    weir_ingest_t *ing = ic->ing;
    if (ing->o.resolve_hostname) {
        ic->gni.data = ic;
        if (uv_getnameinfo(ing->loop, &ic->gni, on_resolved,
                           (const struct sockaddr *)weir_conn_peer_sockaddr(c), 0) == 0) {
            ic->gni_active = true;
            return;
        }
        ic->hostname = weir_strdup("name resolution failed");
    }
    conn_open(ic);
}

static const weir_conn_cbs_t conn_cbs = {
    .on_data = on_data,
    .on_eof = on_eof,
    .on_ready = on_ready,
    .on_close = on_close,
};

/* Over the limit: accepted and closed at once (a reset, so the descriptor is free now), while
 * the established connections go on. */
static void refuse(weir_ingest_t *ing, weir_conn_t *c, size_t limit)
{
    weir_counter_add(ing->refused, 1);
    unsigned long skipped = 0;
    if (weir_ratelimit_ok(&ing->refuse_rl, &skipped))
        weir_warn("%s: refusing the connection from %s: %zu connections open (max_connections "
                  "%zu; %lu more refusals not logged)",
                  ing->ops->name, weir_conn_peer_addr(c), ing->nconns, limit, skipped);
    weir_conn_abort(c, "too many connections");
}

static void on_accept(weir_listener_t *l, weir_conn_t *c)
{
    weir_ingest_t *ing = weir_listener_data(l);
    size_t global = weir_ingest_default_max_connections();
    if (ing->nconns >= ing->o.max_connections || g_open_conns >= global) {
        refuse(ing, c, ing->nconns >= ing->o.max_connections ? ing->o.max_connections : global);
        return;
    }
    weir_ingest_conn_t *ic = weir_calloc(1, sizeof *ic + ing->ops->conn_size);
    ic->ing = ing;
    ic->c = c;
    ic->authenticated = !ing->o.require_auth;
    ic->accepted_ms = ic->idle_since_ms = now_ms(ing);
    weir_buf_init(&ic->rbuf);
    ic->next = ing->conns;
    if (ing->conns) ing->conns->prev = ic;
    ing->conns = ic;
    ing->nconns++;
    g_open_conns++;
    weir_metrics_input_connection(ing->o.pm, 1);
    weir_conn_setup(c, &conn_cbs, ic);
}

static void on_tls_fail(weir_listener_t *l, const char *peer, const char *reason)
{
    weir_ingest_t *ing = weir_listener_data(l);
    weir_metrics_input_tls_failure(ing->o.pm);
}

/* ---- deadlines --------------------------------------------------------------------------- */

static void conn_deadlines(weir_ingest_conn_t *ic, uint64_t now)
{
    const weir_ingest_opts_t *o = &ic->ing->o;
    char why[128];
    if (!ic->authenticated && o->auth_timeout > 0 &&
        now - ic->accepted_ms >= secs_ms(o->auth_timeout)) {
        snprintf(why, sizeof why, "no handshake within %g s", o->auth_timeout);
        weir_ingest_conn_fail(ic, why);
        return;
    }
    if (ic->write_blocked) return; /* the drain poll watches these */
    if (ic->unit_first_ms && o->progress_timeout > 0 &&
        now - ic->unit_first_ms >= secs_ms(o->progress_timeout)) {
        snprintf(why, sizeof why, "a %s did not arrive whole within %g s (progress_timeout)",
                 ic->opened ? "frame or request" : "handshake", o->progress_timeout);
        weir_ingest_conn_fail(ic, why);
        return;
    }
    if (ic->unit_first_ms) return;
    /* an idle keep-alive; a new connection that sent nothing is held to the same clock, or
     * to progress_timeout where there is no idle timeout */
    double idle = o->idle_timeout > 0 ? o->idle_timeout : ic->sent_any ? 0 : o->progress_timeout;
    if (idle > 0 && now - ic->idle_since_ms >= secs_ms(idle)) {
        if (!ic->sent_any && o->idle_timeout <= 0)
            weir_ingest_conn_fail(ic, "sent nothing within progress_timeout");
        else
            weir_ingest_conn_close(ic, NULL);
    }
}

static void on_tick(uv_timer_t *t)
{
    weir_ingest_t *ing = t->data;
    uint64_t now = now_ms(ing);
    for (weir_ingest_conn_t *ic = ing->conns, *next; ic; ic = next) {
        next = ic->next;
        if (!ic->closing && !conn_emitting(ic)) conn_deadlines(ic, now);
    }
}

/* A connection blocked on unread answers reads again once they drained to half the limit, and
 * is dropped when they stop draining for the idle (or progress) timeout. Returns true while
 * it stays blocked. */
static bool check_blocked(weir_ingest_conn_t *ic, uint64_t now)
{
    const weir_ingest_opts_t *o = &ic->ing->o;
    size_t q = weir_conn_write_queue_size(ic->c);
    if (q <= o->max_unsent / 2) {
        weir_debug("%s: %s reads its responses again", ic->ing->ops->name,
                   weir_ingest_conn_peer(ic));
        ic->write_blocked = false;
        ic->idle_since_ms = now;
        conn_update_reading(ic);
        conn_process(ic);
        return ic->write_blocked;
    }
    double limit = o->idle_timeout > 0 ? o->idle_timeout : o->progress_timeout;
    if (q < ic->blocked_queue) {
        ic->blocked_queue = q;
        ic->blocked_ms = now;
    } else if (limit > 0 && now - ic->blocked_ms >= secs_ms(limit)) {
        conn_abort(ic, "the peer stopped reading responses");
        return false;
    }
    return true;
}

static void on_drain_poll(uv_timer_t *t)
{
    weir_ingest_t *ing = t->data;
    uint64_t now = now_ms(ing);
    bool any = false;
    for (weir_ingest_conn_t *ic = ing->conns, *next; ic; ic = next) {
        next = ic->next;
        if (ic->write_blocked && !ic->closing && !conn_busy(ic)) any |= check_blocked(ic, now);
    }
    if (!any) uv_timer_stop(t);
}

void weir_ingest_conn_write(weir_ingest_conn_t *ic, const void *data, size_t len)
{
    if (ic->closing) return;
    weir_ingest_t *ing = ic->ing;
    weir_conn_write(ic->c, data, len);
    size_t q = weir_conn_write_queue_size(ic->c);
    if (!ing->o.max_unsent || q <= ing->o.max_unsent || ic->write_blocked) return;
    /* the peer is not reading what we answer: stop reading what it asks */
    ic->write_blocked = true;
    ic->blocked_ms = now_ms(ing);
    ic->blocked_queue = q;
    conn_update_reading(ic);
    if (!uv_is_active((uv_handle_t *)&ing->drain_poll))
        uv_timer_start(&ing->drain_poll, on_drain_poll, INGEST_DRAIN_POLL_MS, INGEST_DRAIN_POLL_MS);
    weir_debug("%s: %s is not reading its responses (%zu bytes waiting); not reading its requests "
               "until it does",
               ing->ops->name, weir_ingest_conn_peer(ic), q);
}

/* ---- the input ----------------------------------------------------------------------------- */

size_t weir_ingest_default_max_connections(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 65536; /* no usable limit: the backlog and memory budget bound the rest */
    size_t n = (size_t)rl.rlim_cur / WEIR_INGEST_NOFILE_SHARE;
    return n < WEIR_INGEST_MIN_CONNECTIONS ? WEIR_INGEST_MIN_CONNECTIONS : n;
}

void weir_ingest_opts_init(weir_ingest_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->bind = "0.0.0.0";
    o->linger_timeout = -1;
    o->progress_timeout = WEIR_INGEST_PROGRESS_TIMEOUT_DEFAULT;
    o->auth_timeout = WEIR_INGEST_AUTH_TIMEOUT_DEFAULT;
    o->preauth_limit = WEIR_INGEST_PREAUTH_LIMIT;
    o->memory_limit = WEIR_INGEST_MEMORY_LIMIT_DEFAULT;
    o->max_unsent = WEIR_INGEST_MAX_UNSENT;
}

int weir_ingest_conf_read(weir_ingest_opts_t *o, weir_conf_section_t *sec, weir_err_t *err)
{
    weir_ingest_opts_init(o);
    int64_t maxc = 0;
    uint64_t mem = o->memory_limit;
    int r = weir_conf_get_int(sec, "max_connections", &maxc, err);
    if (r < 0) return -1;
    if (r == 1 && maxc < 1) {
        weir_conf_errorf(err, weir_conf_find(sec, "max_connections"),
                         "max_connections must be at least 1");
        return -1;
    }
    if (weir_conf_get_time(sec, "progress_timeout", &o->progress_timeout, err) < 0 ||
        weir_conf_get_time(sec, "handshake_timeout", &o->auth_timeout, err) < 0 ||
        weir_conf_get_size(sec, "connection_memory_limit", &mem, err) < 0)
        return -1;
    if (o->progress_timeout < 0 || o->auth_timeout <= 0) {
        weir_conf_errorf(
            err,
            weir_conf_find(sec, o->auth_timeout <= 0 ? "handshake_timeout" : "progress_timeout"),
            "%s must be positive", o->auth_timeout <= 0 ? "handshake_timeout" : "progress_timeout");
        return -1;
    }
    o->max_connections = (size_t)maxc;
    o->memory_limit = mem;
    o->memory_limit_set = weir_conf_find(sec, "connection_memory_limit") != NULL;
    return 0;
}

int weir_ingest_conf_unit_limit(weir_ingest_opts_t *o, weir_conf_section_t *sec,
                                uint64_t unit_limit, const char *param, weir_err_t *err)
{
    if (!o->memory_limit_set) {
        if (o->memory_limit < 2 * unit_limit) o->memory_limit = 2 * unit_limit;
        return 0;
    }
    if (o->memory_limit >= unit_limit) return 0;
    weir_conf_errorf(err, weir_conf_find(sec, "connection_memory_limit"),
                     "connection_memory_limit (%llu) is below %s (%llu): a unit that large "
                     "could never be read",
                     (unsigned long long)o->memory_limit, param, (unsigned long long)unit_limit);
    return -1;
}

static uint64_t tick_period(const weir_ingest_opts_t *o)
{
    double shortest = 0;
    const double ts[] = {o->progress_timeout, o->idle_timeout,
                         o->require_auth ? o->auth_timeout : 0};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        if (ts[i] > 0 && (shortest == 0 || ts[i] < shortest)) shortest = ts[i];
    uint64_t tick = shortest > 0 ? secs_ms(shortest) / 4 : INGEST_TICK_MS_MAX;
    if (tick > INGEST_TICK_MS_MAX) tick = INGEST_TICK_MS_MAX;
    if (tick < INGEST_TICK_MS_MIN) tick = INGEST_TICK_MS_MIN;
    return tick;
}

weir_ingest_t *weir_ingest_new(uv_loop_t *loop, weir_engine_t *eng, const weir_ingest_ops_t *ops,
                               const weir_ingest_opts_t *o, weir_err_t *err)
{
    weir_ingest_t *ing = weir_calloc(1, sizeof *ing);
    ing->loop = loop;
    ing->eng = eng;
    ing->ops = ops;
    ing->o = *o;
    ing->label = o->label ? weir_strdup(o->label) : NULL;
    ing->o.label = ing->label;
    if (!ing->o.max_connections) ing->o.max_connections = weir_ingest_default_max_connections();
    ing->warn_rl.interval_ms = WEIR_WARN_INTERVAL_MS;
    ing->refuse_rl.interval_ms = WEIR_WARN_INTERVAL_MS;
    weir_listener_opts_t lo = {
        .bind = o->bind,
        .port = o->port,
        .backlog = o->backlog,
        .tls = o->tls,
        .linger_timeout = o->linger_timeout,
        .keepalive = o->keepalive,
        .on_accept = on_accept,
        .on_tls_fail = on_tls_fail,
        .data = ing,
    };
    ing->listener = weir_listener_new(loop, &lo, err);
    if (!ing->listener) {
        free(ing->label);
        free(ing);
        return NULL;
    }
    if (o->pm)
        ing->refused = weir_metrics_counter(
            weir_plugin_metrics_registry(o->pm), o->pm, "weir_input_connections_refused_total",
            "Connections closed at once because the input had max_connections open",
            weir_plugin_metrics_labels(o->pm));
    ing->gnext = g_ingests;
    g_ingests = ing;
    uv_timer_init(loop, &ing->tick);
    uv_timer_init(loop, &ing->drain_poll);
    uv_idle_init(loop, &ing->again_idle);
    ing->tick.data = ing->drain_poll.data = ing->again_idle.data = ing;
    ing->open_handles = 3;
    uint64_t tick = tick_period(&ing->o);
    uv_timer_start(&ing->tick, on_tick, tick, tick);
    uv_unref((uv_handle_t *)&ing->tick); /* never keeps the loop alive on its own */
    uv_unref((uv_handle_t *)&ing->drain_poll);
    return ing;
}

int weir_ingest_port(const weir_ingest_t *ing)
{
    return weir_listener_port(ing->listener);
}

void *weir_ingest_data(const weir_ingest_t *ing)
{
    return ing->o.data;
}

size_t weir_ingest_connections(const weir_ingest_t *ing)
{
    return ing->nconns;
}

uint64_t weir_ingest_held(const weir_ingest_t *ing)
{
    return ing->held;
}

void weir_ingest_stop(weir_ingest_t *ing, void (*done)(void *), void *arg)
{
    ing->stopping = true;
    ing->stop_done = done;
    ing->stop_arg = arg;
    if (ing->listener) weir_listener_close(ing->listener);
    ing->listener = NULL;
    /* idle (or half-read) connections close now; one with a unit in flight after its answer */
    for (weir_ingest_conn_t *ic = ing->conns, *next; ic; ic = next) {
        next = ic->next;
        if (!conn_busy(ic)) weir_ingest_conn_close(ic, NULL);
    }
    stop_check(ing);
}

static void on_timer_closed(uv_handle_t *h)
{
    weir_ingest_t *ing = h->data;
    ing->open_handles--;
    ingest_release(ing);
}

void weir_ingest_free(weir_ingest_t *ing)
{
    if (!ing) return;
    ing->freed = true;
    ing->stop_done = NULL;
    if (ing->listener) weir_listener_close(ing->listener);
    ing->listener = NULL;
    for (weir_ingest_conn_t *ic = ing->conns; ic; ic = ic->next)
        conn_abort(ic, "shutting down");
    uv_close((uv_handle_t *)&ing->tick, on_timer_closed);
    uv_close((uv_handle_t *)&ing->drain_poll, on_timer_closed);
    uv_close((uv_handle_t *)&ing->again_idle, on_timer_closed);
}

/* ---- connection accessors ------------------------------------------------------------------ */

void *weir_ingest_conn_data(weir_ingest_conn_t *ic)
{
    return ic->user;
}

weir_ingest_t *weir_ingest_conn_ingest(const weir_ingest_conn_t *ic)
{
    return ic->ing;
}

weir_conn_t *weir_ingest_conn_net(const weir_ingest_conn_t *ic)
{
    return ic->c;
}

const char *weir_ingest_conn_peer(const weir_ingest_conn_t *ic)
{
    return ic->c ? weir_conn_peer_addr(ic->c) : "(closed)";
}

const char *weir_ingest_conn_hostname(const weir_ingest_conn_t *ic)
{
    return ic->hostname;
}

void weir_ingest_conn_authenticated(weir_ingest_conn_t *ic)
{
    ic->authenticated = true;
}

bool weir_ingest_conn_closing(const weir_ingest_conn_t *ic)
{
    return ic->closing;
}
