/* The fan-out of @type copy (include/weir/copy.h): one job per batch, walking the stores in
 * order.
 *
 * Invariants: a job's `next` store is the first not yet tried, so a store is emitted into at
 * most once per batch (FULL is "not tried": it gets the batch again later, the stores before
 * it never do); a job is freed only when no store callback is outstanding, since the stores'
 * callbacks point into it; the input's callback runs exactly once, and only for a job that was
 * answered PENDING. The batch is copied only when a job must wait for space after a store took
 * it: until then the stores read the input's batch, which lives through the emit call, so the
 * common case (every store takes it, some answer later) costs no copy. */
#include "weir/copy.h"

#include <stdlib.h>
#include <string.h>

#include "weir/log.h"

typedef struct copy_job copy_job_t;

typedef struct store_req {
    copy_job_t *job;
    size_t idx;
} store_req_t;

struct copy_job {
    weir_copy_t *c;
    const weir_batch_t *b; /* the input's batch during emit; &own once the job waits for space */
    weir_batch_t own;
    bool owned;
    uint32_t count;  /* events in the batch, for messages after the input's batch is gone */
    weir_emit_cb cb; /* NULL while the answer is synchronous (DONE/FULL/ERROR) */
    void *arg;
    size_t next;        /* first store not yet tried */
    bool prev_took;     /* the store just before `next` took the batch */
    bool taken;         /* some store took it */
    bool failed;        /* a store without ignore_error failed it: no ack */
    bool waiting;       /* `waiter` is registered: store `next` answered FULL */
    bool walking;       /* inside job_walk: a store calling back at once must not free it */
    size_t outstanding; /* store callbacks not yet in */
    weir_space_waiter_t waiter;
    copy_job_t *prev_job, *next_job;
    store_req_t reqs[]; /* one per store, the argument of its callback */
};

struct weir_copy {
    weir_copy_env_t env;
    weir_copy_store_t *stores;
    size_t n;
    copy_job_t *jobs; /* held: answered PENDING, or answered ERROR with callbacks outstanding */
    size_t held;
    weir_ratelimit_t warn_rl;
    bool stopping;
    void (*stop_done)(void *);
    void *stop_arg;
};

weir_copy_t *weir_copy_new(const weir_copy_env_t *env, const weir_copy_store_t *stores, size_t n)
{
    weir_copy_t *c = weir_calloc(1, sizeof *c);
    c->env = *env;
    c->stores = weir_calloc(n ? n : 1, sizeof *c->stores);
    memcpy(c->stores, stores, n * sizeof *stores);
    c->n = n;
    c->warn_rl.interval_ms = WEIR_WARN_INTERVAL_MS;
    return c;
}

size_t weir_copy_held(const weir_copy_t *c)
{
    return c->held;
}

void weir_copy_free(weir_copy_t *c)
{
    if (!c) return;
    for (copy_job_t *j = c->jobs, *next; j; j = next) {
        next = j->next_job;
        if (j->waiting) c->env.cancel_space(c->env.arg, &j->waiter);
        if (j->owned) weir_batch_free(&j->own);
        free(j);
    }
    free(c->stores);
    free(c);
}

static void stop_check(weir_copy_t *c)
{
    if (!c->stopping || c->held > 0 || !c->stop_done) return;
    void (*done)(void *) = c->stop_done;
    c->stop_done = NULL;
    done(c->stop_arg);
}

static void job_hold(copy_job_t *j)
{
    weir_copy_t *c = j->c;
    j->next_job = c->jobs;
    if (c->jobs) c->jobs->prev_job = j;
    c->jobs = j;
    c->held++;
}

static void job_free(copy_job_t *j)
{
    if (j->owned) weir_batch_free(&j->own);
    free(j);
}

/* Runs the input's callback and frees the job once nothing more can happen to it. */
static void job_maybe_finish(copy_job_t *j)
{
    weir_copy_t *c = j->c;
    if (j->waiting || j->walking || j->outstanding > 0) return;
    if (j->prev_job)
        j->prev_job->next_job = j->next_job;
    else
        c->jobs = j->next_job;
    if (j->next_job) j->next_job->prev_job = j->prev_job;
    c->held--;
    weir_emit_cb cb = j->cb;
    void *arg = j->arg;
    int status = j->failed ? -1 : 0;
    job_free(j);
    if (cb) cb(arg, status);
    stop_check(c);
}

/* `tag` NULL: the input's batch is gone (a late answer), the message goes without it. */
static void store_failed(copy_job_t *j, size_t idx, const char *tag)
{
    weir_copy_t *c = j->c;
    const weir_copy_store_t *s = &c->stores[idx];
    if (!s->ignore_error) {
        j->failed = true;
        return;
    }
    unsigned long skipped = 0;
    if (weir_ratelimit_ok(&c->warn_rl, &skipped))
        weir_error("copy: store %s failed %u events%s%s%s; ignore_error: the other stores go on "
                   "(%lu similar errors suppressed)",
                   s->out.plugin_id ? s->out.plugin_id : "?", j->count, tag ? " of tag \"" : "",
                   tag ? tag : "", tag ? "\"" : "", skipped);
}

/* A store's callback for a batch it answered PENDING. */
static void store_answered(void *arg, int status)
{
    store_req_t *r = arg;
    copy_job_t *j = r->job;
    j->outstanding--;
    if (status != 0) {
        store_failed(j, r->idx, j->owned ? j->own.tag : NULL);
        if (j->failed && j->waiting) { /* the rest would be sent again anyway: stop trying */
            j->c->env.cancel_space(j->c->env.arg, &j->waiter);
            j->waiting = false;
        }
    }
    job_maybe_finish(j);
}

/* Tries the stores from `next` on. Returns true when store `next` answered FULL. */
static bool job_walk(copy_job_t *j)
{
    weir_copy_t *c = j->c;
    bool full = false;
    j->walking = true;
    while (j->next < c->n && !j->failed) {
        size_t i = j->next;
        const weir_copy_store_t *s = &c->stores[i];
        if (i > 0 && j->prev_took && s->ignore_if_prev_success) {
            j->prev_took = false; /* as Fluentd: a skipped store counts as not succeeded */
            j->next++;
            continue;
        }
        j->outstanding++; /* before the call: its callback may not come first, but if it did */
        weir_emit_result_t r = s->out.ops->emit(s->out.state, j->b, store_answered, &j->reqs[i]);
        if (r != WEIR_EMIT_PENDING) j->outstanding--;
        if (r == WEIR_EMIT_FULL) {
            full = true;
            break;
        }
        j->next++;
        if (r == WEIR_EMIT_DONE || r == WEIR_EMIT_PENDING) {
            j->prev_took = j->taken = true;
            weir_metrics_output_emit(s->out.metrics, j->b->count);
            continue;
        }
        j->prev_took = false;
        store_failed(j, i, j->b->tag);
    }
    j->walking = false;
    return full;
}

static void job_space(void *arg);

static void job_wait(copy_job_t *j)
{
    if (!j->owned) { /* the input's batch is gone once its emit call returns */
        weir_batch_init(&j->own, j->b->tag, j->b->tag_len);
        weir_batch_append_raw(&j->own, j->b->data.data, j->b->data.len, j->b->count, j->b->tmin,
                              j->b->tmax);
        j->owned = true;
        j->b = &j->own;
    }
    j->waiting = true;
    j->waiter.fn = job_space;
    j->waiter.arg = j;
    j->c->env.on_space(j->c->env.arg, &j->waiter);
}

/* An output reported space: try the store that was full (and those after it) again. */
static void job_space(void *arg)
{
    copy_job_t *j = arg;
    j->waiting = false;
    if (job_walk(j))
        job_wait(j);
    else
        job_maybe_finish(j);
}

weir_emit_result_t weir_copy_emit(weir_copy_t *c, const weir_batch_t *b, weir_emit_cb cb, void *arg)
{
    copy_job_t *j = weir_calloc(1, sizeof *j + c->n * sizeof j->reqs[0]);
    j->c = c;
    j->b = b;
    j->count = b->count;
    for (size_t i = 0; i < c->n; i++) {
        j->reqs[i].job = j;
        j->reqs[i].idx = i;
    }
    bool full = job_walk(j);
    if (full && !j->taken) { /* no store has it: the input waits and emits it again */
        job_free(j);
        return WEIR_EMIT_FULL;
    }
    if (!full && j->outstanding == 0) { /* every store answered at once */
        weir_emit_result_t r = j->failed ? WEIR_EMIT_ERROR : WEIR_EMIT_DONE;
        job_free(j);
        return r;
    }
    job_hold(j); /* stores' callbacks outstanding, or a store to retry */
    /* past this call only a waiting job reads its batch again, from its own copy */
    if (full)
        job_wait(j);
    else
        j->b = NULL;
    if (j->failed) return WEIR_EMIT_ERROR; /* answered now; the job waits for its stores */
    j->cb = cb;
    j->arg = arg;
    return WEIR_EMIT_PENDING;
}

void weir_copy_stop(weir_copy_t *c, void (*done)(void *), void *arg)
{
    c->stopping = true;
    c->stop_done = done;
    c->stop_arg = arg;
    size_t abandoned = 0;
    for (copy_job_t *j = c->jobs; j; j = j->next_job) {
        if (!j->waiting) continue;
        c->env.cancel_space(c->env.arg, &j->waiter);
        j->waiting = false;
        j->failed = true;
        abandoned++;
    }
    if (abandoned)
        weir_warn("copy: stopping with %zu batches a full store has not taken; they are not "
                  "acknowledged, so their senders send them again",
                  abandoned);
    /* finish after the loop: a finished job's callback may make the input emit again */
    for (copy_job_t *j = c->jobs, *next; j; j = next) {
        next = j->next_job;
        job_maybe_finish(j);
    }
    stop_check(c);
}
