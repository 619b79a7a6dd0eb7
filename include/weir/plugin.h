/* The interfaces between stages: what an input, an output and the engine that connects them
 * promise each other.
 *
 * Acknowledgement: an input hands a batch to weir_engine_emit() and may acknowledge it to the
 * sender only when the emit reports it durable, either at once (WEIR_EMIT_DONE) or later through
 * the callback (WEIR_EMIT_PENDING). WEIR_EMIT_FULL means the output cannot take the batch now:
 * the input stops reading from its senders and retries after weir_engine_on_space() calls
 * back. The batch is never owned by the callee: outputs copy what they keep. */
#ifndef WEIR_PLUGIN_H
#define WEIR_PLUGIN_H

#include <stdbool.h>
#include <uv.h>

#include "weir/common.h"
#include "weir/config.h"
#include "weir/event.h"
#include "weir/metrics.h"

typedef struct weir_engine weir_engine_t;

typedef enum weir_emit_result {
    WEIR_EMIT_ERROR = -1,  /* rejected for good (e.g. the record cannot be stored): no ack */
    WEIR_EMIT_DONE = 0,    /* durable now; the callback is not called */
    WEIR_EMIT_PENDING = 1, /* the callback is called once, on the loop thread, later */
    WEIR_EMIT_FULL = 2,    /* not taken: wait for space (backpressure), then emit again */
} weir_emit_result_t;

/* status: 0 durable, -1 failed (do not ack). */
typedef void (*weir_emit_cb)(void *arg, int status);

typedef struct weir_output_ops {
    const char *type;
    /* Reads the <match> section (and its <buffer>, <format>, ...), validating everything;
     * opens nothing, so --dry-run can call it. */
    int (*create)(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err);
    /* Opens files, starts timers and threads. */
    int (*start)(void *state, weir_err_t *err);
    weir_emit_result_t (*emit)(void *state, const weir_batch_t *b, weir_emit_cb cb, void *arg);
    /* SIGUSR1: flush everything buffered now. May be NULL. */
    void (*flush)(void *state);
    /* Shutdown: finish what is in flight (flush_at_shutdown where configured), then call
     * done(arg) once. May be NULL (nothing to finish). */
    void (*stop)(void *state, void (*done)(void *arg), void *arg);
    void (*destroy)(void *state);
} weir_output_ops_t;

typedef struct weir_input_ops {
    const char *type;
    /* Reads the <source> section, validating everything; opens no port. */
    int (*create)(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err);
    /* Opens the ports. */
    int (*start)(void *state, weir_err_t *err);
    /* Stops accepting, lets connections finish what they already sent (acks included), then
     * calls done(arg) once. */
    void (*stop)(void *state, void (*done)(void *arg), void *arg);
    void (*destroy)(void *state);
} weir_input_ops_t;

/* A <filter> section. The router passes a batch through every filter of its label whose
 * pattern matches the tag and that comes before the <match> that takes it, in file order, as
 * Fluentd does; each filter sees what the one before it passed on.
 *
 * filter() reads `in` and either passes it on as it is (WEIR_FILTER_SAME) or writes what goes
 * on into `out` (WEIR_FILTER_NEW; `out` is empty and carries in's tag; an empty `out` means
 * nothing goes further and the batch is acknowledged), or rejects the whole batch
 * (WEIR_FILTER_ERROR: no ack, the sender resends). It runs on the loop thread and must not
 * block.
 *
 * A filter that must learn what became of the batch sets *hold (any non-NULL pointer it
 * chooses). The router then calls settle() exactly once for it, with the batch's fate:
 *   status 0: what the filter passed on is durable (or was dropped on purpose: unmatched, or
 *             filtered out further on). The filter may finish work of its own first: it calls
 *             done(arg, st) once, now or later on the loop thread, and the sender is
 *             acknowledged only after every filter's done reported st == 0.
 *   status -1: failed (no ack); done is NULL.
 *   status WEIR_EMIT_FULL: not taken; the input will emit the same batch again later, through
 *             the filters again; done is NULL.
 * stop() finishes what the filter still holds, then calls done(arg) once; the router calls it
 * after the outputs have stopped, so every hold has been settled by then. */
typedef enum weir_filter_result {
    WEIR_FILTER_ERROR = -1,
    WEIR_FILTER_SAME = 0,
    WEIR_FILTER_NEW = 1,
} weir_filter_result_t;

typedef struct weir_filter_ops {
    const char *type;
    /* Reads the <filter> section, validating everything; opens nothing (--dry-run). */
    int (*create)(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err);
    /* Opens files. May be NULL. */
    int (*start)(void *state, weir_err_t *err);
    weir_filter_result_t (*filter)(void *state, const weir_batch_t *in, weir_batch_t *out,
                                   void **hold);
    /* Only for filters that set holds. */
    void (*settle)(void *state, void *hold, int status, weir_emit_cb done, void *arg);
    /* May be NULL. */
    void (*stop)(void *state, void (*done)(void *arg), void *arg);
    void (*destroy)(void *state);
} weir_filter_ops_t;

/* The registry of built-in plugins (src/core/registry.c). */
const weir_input_ops_t *weir_input_find(const char *type);
const weir_output_ops_t *weir_output_find(const char *type);
const weir_filter_ops_t *weir_filter_find(const char *type);
/* "forward, http" / "null, stdout, file": the names weir has of a category ("input",
 * "output", "filter"), for messages. */
void weir_plugin_names(const char *category, weir_buf_t *out);

/* What each input uses of the engine. `label` is the source's @label ("" or NULL for the
 * top level). */
uv_loop_t *weir_engine_loop(weir_engine_t *eng);
weir_emit_result_t weir_engine_emit(weir_engine_t *eng, const char *label, const weir_batch_t *b,
                                    weir_emit_cb cb, void *arg);
/* Calls fn(arg) once, on the loop thread, the next time an output reports free space. A
 * waiter is removed with weir_engine_cancel_space(). */
typedef struct weir_space_waiter {
    void (*fn)(void *arg);
    void *arg;
    struct weir_space_waiter *next;
    bool queued;
} weir_space_waiter_t;
void weir_engine_on_space(weir_engine_t *eng, weir_space_waiter_t *w);
void weir_engine_cancel_space(weir_engine_t *eng, weir_space_waiter_t *w);
/* Outputs call this when space frees up after having answered WEIR_EMIT_FULL. */
void weir_engine_space_available(weir_engine_t *eng);
/* An output that another output made and emits into (copy's <store>s). */
typedef struct weir_output_ref {
    const weir_output_ops_t *ops;
    void *state;
    weir_plugin_metrics_t *metrics; /* its own handle: count what it takes with it */
    const char *plugin_id;          /* its @id, or "object:N" */
} weir_output_ref_t;
/* Creates the output that `sec` describes (its own @type, @id, <buffer>, ...) as the engine
 * creates a <match>'s, from inside another output's create(). The engine owns it: it is
 * listed by weir_engine_plugin_at after the output that made it (as Fluentd's monitor_agent
 * lists a copy's stores, so /metrics shows it too), and started, flushed, stopped (its pending
 * callbacks all run before its stop is done) and destroyed with the other outputs, after the
 * output that made it: that output only emits into it, and must not touch it in destroy(). */
int weir_engine_output_new(weir_engine_t *eng, weir_conf_section_t *sec, weir_output_ref_t *ref,
                           weir_err_t *err);
/* For an output that sends its batches into a label (relabel), from its create(): checks that
 * `label` is defined and that routing the label being built into it closes no loop. On error,
 * err says which: the unknown label, or the loop as "@a -> @b -> @a". */
int weir_engine_route_to_label(weir_engine_t *eng, const char *label, weir_err_t *err);
/* <system> values a plugin may need. */
const char *weir_engine_hostname(const weir_engine_t *eng);
bool weir_engine_dry_run(const weir_engine_t *eng);
/* True while a configuration reload replaces the outputs: a buffer then stops without
 * flushing its chunks to disk-backed storage, since the next output takes them over. */
bool weir_engine_reloading(const weir_engine_t *eng);
/* The metrics registry (never NULL for an engine; NULL for a NULL engine). */
weir_metrics_t *weir_engine_metrics(weir_engine_t *eng);
/* The metrics handle of the plugin whose create() is running, NULL at any other time: inputs
 * keep it for weir_metrics_input_events() and friends; the buffer registers under it. */
weir_plugin_metrics_t *weir_engine_plugin_metrics(weir_engine_t *eng);

#endif
