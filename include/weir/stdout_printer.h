/* What @type stdout prints, for the output and the filter alike: each event as one line on
 * standard output, formatted by the <format> given (Fluentd's stdout formatter by default:
 *   2024-05-09 21:00:40.632000000 +0000 test.log: {"k":"v"}
 * ) after <inject>. A whole batch is written with one fwrite + fflush, so lines of different
 * batches never interleave. One printer belongs to one plugin and is used on the loop thread. */
#ifndef WEIR_STDOUT_PRINTER_H
#define WEIR_STDOUT_PRINTER_H

#include "weir/config.h"
#include "weir/event.h"
#include "weir/format.h"
#include "weir/log.h"

typedef struct weir_stdout_printer {
    const char *who; /* "stdout" or "filter stdout", for messages; borrowed */
    weir_formatter_t fmt;
    weir_inject_t inject;
    weir_buf_t out;
    weir_buf_t scratch;
    weir_ratelimit_t rl; /* its warnings and errors: one line per WEIR_WARN_INTERVAL_MS */
} weir_stdout_printer_t;

/* Reads the <format> and <inject> sections of `sec` (marking them used). */
int weir_stdout_printer_init(weir_stdout_printer_t *p, weir_conf_section_t *sec, const char *who,
                             weir_err_t *err);
void weir_stdout_printer_free(weir_stdout_printer_t *p);
/* Prints the batch. Records that cannot be formatted are skipped with a warning. Returns 0, or
 * -1 when the batch's bytes are not entries or standard output cannot be written. */
int weir_stdout_printer_print(weir_stdout_printer_t *p, const weir_batch_t *b);

#endif
