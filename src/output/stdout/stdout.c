/* @type stdout: Fluentd's out_stdout. Each event becomes one line on standard output, printed
 * by the stdout printer (stdout_printer.h), which the stdout filter shares. Unbuffered (as
 * Fluentd's without a <buffer>): the batch is done once it is written. */
#include <stdlib.h>

#include "weir/plugin.h"
#include "weir/stdout_printer.h"

static void stdout_destroy(void *state)
{
    weir_stdout_printer_t *p = state;
    if (!p) return;
    weir_stdout_printer_free(p);
    free(p);
}

static int stdout_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state,
                         weir_err_t *err)
{
    (void)eng;
    if (weir_conf_child(sec, "buffer", 0))
        return weir_conf_section_errorf(err, weir_conf_child(sec, "buffer", 0),
                                        "<buffer> under @type stdout is not supported: stdout "
                                        "writes each batch at once");
    weir_stdout_printer_t *p = weir_malloc(sizeof *p);
    if (weir_stdout_printer_init(p, sec, "stdout", err) != 0) {
        free(p);
        return -1;
    }
    *state = p;
    return 0;
}

static weir_emit_result_t stdout_emit(void *state, const weir_batch_t *b, weir_emit_cb cb,
                                      void *arg)
{
    (void)cb;
    (void)arg;
    return weir_stdout_printer_print(state, b) == 0 ? WEIR_EMIT_DONE : WEIR_EMIT_ERROR;
}

const weir_output_ops_t weir_out_stdout_ops = {
    .type = "stdout",
    .create = stdout_create,
    .emit = stdout_emit,
    .destroy = stdout_destroy,
};
