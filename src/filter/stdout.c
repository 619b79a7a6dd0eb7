/* <filter> @type stdout: Fluentd's filter_stdout. Prints each event as @type stdout does (the
 * same printer, <format> and <inject> included) and passes the batch on unchanged. Fluentd
 * writes these lines into its own log, which goes to standard output by default; weir's log
 * goes to standard error, so the lines go to standard output, where weir's stdout output
 * writes them too. A batch that a later stage rejects and the sender resends is printed again,
 * as Fluentd prints a retried event again. */
#include <stdlib.h>

#include "weir/plugin.h"
#include "weir/stdout_printer.h"

static void fstdout_destroy(void *state)
{
    weir_stdout_printer_t *p = state;
    if (!p) return;
    weir_stdout_printer_free(p);
    free(p);
}

static int fstdout_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state,
                          weir_err_t *err)
{
    (void)eng;
    weir_stdout_printer_t *p = weir_malloc(sizeof *p);
    if (weir_stdout_printer_init(p, sec, "filter stdout", err) != 0) {
        free(p);
        return -1;
    }
    *state = p;
    return 0;
}

/* A failed write to standard output does not stop the events: printing them is a side view. */
static weir_filter_result_t fstdout_filter(void *state, const weir_batch_t *in, weir_batch_t *out,
                                           void **hold)
{
    (void)out;
    (void)hold;
    (void)weir_stdout_printer_print(state, in);
    return WEIR_FILTER_SAME;
}

const weir_filter_ops_t weir_filter_stdout_ops = {
    .type = "stdout",
    .create = fstdout_create,
    .filter = fstdout_filter,
    .destroy = fstdout_destroy,
};
