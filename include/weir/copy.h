/* The fan-out behind @type copy: one batch into several outputs ("stores"), acknowledged only
 * once every store that must have it has it durably.
 *
 * Stores are tried in order, as Fluentd's out_copy does: a store that answers ERROR fails the
 * batch and the stores after it are not tried, unless the store is marked ignore_error (the
 * error is logged and the next store is tried); a store marked ignore_if_prev_success is
 * skipped when the store just before it took the batch (a skipped store did not take it).
 *
 * The hard case is a store that answers FULL after an earlier store took the batch: answering
 * FULL to the input would make it emit the whole batch again and the earlier store would keep
 * it twice. So the fan-out keeps its own copy of the batch, answers PENDING, and tries again
 * from that store (never the earlier ones) each time an output reports free space; it calls
 * back once every store it reached has answered. FULL from the first store to be reached,
 * before any store took the batch, is answered FULL at once: the input then waits and emits
 * again, and nothing is kept twice.
 *
 * Memory: a batch answered PENDING keeps its input connection from reading until the
 * callback, so the copies held are at most one batch per input connection, each within the
 * input's own size limits. */
#ifndef WEIR_COPY_H
#define WEIR_COPY_H

#include "weir/plugin.h"

typedef struct weir_copy_store {
    weir_output_ref_t out;
    bool ignore_error;
    bool ignore_if_prev_success;
} weir_copy_store_t;

/* What the fan-out needs from its surroundings: the engine's space waiters (a test passes its
 * own). */
typedef struct weir_copy_env {
    void (*on_space)(void *arg, weir_space_waiter_t *w);
    void (*cancel_space)(void *arg, weir_space_waiter_t *w);
    void *arg;
} weir_copy_env_t;

typedef struct weir_copy weir_copy_t;

/* Copies `stores` (n >= 1); the outputs they name stay owned by whoever made them. */
weir_copy_t *weir_copy_new(const weir_copy_env_t *env, const weir_copy_store_t *stores, size_t n);
/* An output's emit (include/weir/plugin.h), with the rules above. */
weir_emit_result_t weir_copy_emit(weir_copy_t *c, const weir_batch_t *b, weir_emit_cb cb,
                                  void *arg);
/* Batches still waiting for space in a store: they can no longer be taken (the stores stop
 * too), so each is answered failed (-1: not acknowledged, the sender sends it again) as soon
 * as the stores that took it have answered. done(arg) runs once no batch is held. */
void weir_copy_stop(weir_copy_t *c, void (*done)(void *arg), void *arg);
/* Batches held (answered PENDING, not yet called back). */
size_t weir_copy_held(const weir_copy_t *c);
/* Frees what it holds without calling back: only after stop's done, or with nothing held. */
void weir_copy_free(weir_copy_t *c);

#endif
