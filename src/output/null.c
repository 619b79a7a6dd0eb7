/* @type null: accepts every batch and keeps nothing, as Fluentd's out_null. Useful to try a
 * pipeline and to measure the inputs alone. */
#include <stdlib.h>

#include "weir/plugin.h"

typedef struct out_null {
    uint64_t events;
} out_null_t;

static int null_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    /* Fluentd's out_null has buffer-related params only; a <buffer> here is accepted because
     * nothing is kept either way. */
    weir_conf_section_t *buf = weir_conf_child(sec, "buffer", 0);
    if (buf) {
        weir_conf_section_use(buf);
        for (size_t i = 0; i < buf->nparams; i++)
            buf->params[i].used = true;
    }
    *state = weir_calloc(1, sizeof(out_null_t));
    return 0;
}

static weir_emit_result_t null_emit(void *state, const weir_batch_t *b, weir_emit_cb cb, void *arg)
{
    ((out_null_t *)state)->events += b->count;
    return WEIR_EMIT_DONE;
}

const weir_output_ops_t weir_out_null_ops = {
    .type = "null",
    .create = null_create,
    .emit = null_emit,
    .destroy = free,
};
