/* @type stdout: Fluentd's out_stdout. Each event becomes one line on standard output,
 *   2024-05-09 21:00:40.632000000 +0000 test.log: {"k":"v"}
 * formatted by the stdout formatter (or the <format> given) after <inject>. The whole batch is
 * written with one fwrite + fflush, so lines of different batches never interleave. Unbuffered
 * (as Fluentd's without a <buffer>): the batch is done once it is written. */
#include <stdio.h>
#include <stdlib.h>

#include "weir/format.h"
#include "weir/log.h"
#include "weir/plugin.h"

typedef struct out_stdout {
    weir_formatter_t fmt;
    weir_inject_t inject;
    weir_buf_t out;
    weir_buf_t scratch;
} out_stdout_t;

static void stdout_destroy(void *state)
{
    out_stdout_t *o = state;
    if (!o) return;
    weir_formatter_free(&o->fmt);
    weir_inject_free(&o->inject);
    weir_buf_free(&o->out);
    weir_buf_free(&o->scratch);
    free(o);
}

static int stdout_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state,
                         weir_err_t *err)
{
    out_stdout_t *o = weir_calloc(1, sizeof *o);
    weir_format_opts_t fo;
    weir_inject_opts_t io;
    weir_format_opts_init(&fo, WEIR_FORMAT_STDOUT);
    weir_inject_opts_init(&io);
    weir_conf_section_t *f = weir_conf_child(sec, "format", 0);
    weir_conf_section_t *inj = weir_conf_child(sec, "inject", 0);
    if (f) weir_conf_section_use(f);
    if (inj) weir_conf_section_use(inj);
    if (weir_conf_child(sec, "buffer", 0)) {
        weir_conf_section_errorf(err, weir_conf_child(sec, "buffer", 0),
                                 "<buffer> under @type stdout is not supported: stdout writes "
                                 "each batch at once");
        goto err;
    }
    if (weir_format_opts_from_conf(&fo, f, WEIR_FORMAT_STDOUT, err) != 0) goto err;
    if (inj && weir_inject_opts_from_conf(&io, inj, err) != 0) goto err;
    if (weir_formatter_init(&o->fmt, &fo, err) != 0) goto err;
    if (weir_inject_init(&o->inject, &io, err) != 0) {
        weir_formatter_free(&o->fmt);
        goto err;
    }
    *state = o;
    return 0;
err:
    free(o);
    return -1;
}

static weir_emit_result_t stdout_emit(void *state, const weir_batch_t *b, weir_emit_cb cb,
                                      void *arg)
{
    out_stdout_t *o = state;
    size_t skipped = 0;
    weir_err_t err;
    o->out.len = 0;
    long n = weir_format_batch(&o->fmt, &o->inject, b, &o->out, &o->scratch, &skipped, &err);
    if (n < 0) return WEIR_EMIT_ERROR;
    if (skipped)
        weir_warn("stdout: skipped %zu records that cannot be formatted: %s", skipped, err.msg);
    if (o->out.len &&
        (fwrite(o->out.data, 1, o->out.len, stdout) != o->out.len || fflush(stdout) != 0)) {
        weir_error("stdout: write failed");
        return WEIR_EMIT_ERROR;
    }
    return WEIR_EMIT_DONE;
}

const weir_output_ops_t weir_out_stdout_ops = {
    .type = "stdout",
    .create = stdout_create,
    .emit = stdout_emit,
    .destroy = stdout_destroy,
};
