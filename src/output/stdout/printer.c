/* The line printer behind @type stdout, the output and the filter (see stdout_printer.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "weir/log.h"
#include "weir/stdout_printer.h"

int weir_stdout_printer_init(weir_stdout_printer_t *p, weir_conf_section_t *sec, const char *who,
                             weir_err_t *err)
{
    *p = (weir_stdout_printer_t){.who = who, .rl = {.interval_ms = WEIR_WARN_INTERVAL_MS}};
    weir_format_opts_t fo;
    weir_inject_opts_t io;
    weir_format_opts_init(&fo, WEIR_FORMAT_STDOUT);
    weir_inject_opts_init(&io);
    weir_conf_section_t *f = weir_conf_child(sec, "format", 0);
    weir_conf_section_t *inj = weir_conf_child(sec, "inject", 0);
    if (f) weir_conf_section_use(f);
    if (inj) weir_conf_section_use(inj);
    if (weir_format_opts_from_conf(&fo, f, WEIR_FORMAT_STDOUT, err) != 0) return -1;
    if (inj && weir_inject_opts_from_conf(&io, inj, err) != 0) return -1;
    if (weir_formatter_init(&p->fmt, &fo, err) != 0) return -1;
    if (weir_inject_init(&p->inject, &io, err) != 0) {
        weir_formatter_free(&p->fmt);
        return -1;
    }
    return 0;
}

void weir_stdout_printer_free(weir_stdout_printer_t *p)
{
    weir_formatter_free(&p->fmt);
    weir_inject_free(&p->inject);
    weir_buf_free(&p->out);
    weir_buf_free(&p->scratch);
}

int weir_stdout_printer_print(weir_stdout_printer_t *p, const weir_batch_t *b)
{
    size_t skipped = 0;
    weir_err_t err;
    p->out.len = 0;
    long n = weir_format_batch(&p->fmt, &p->inject, b, &p->out, &p->scratch, &skipped, &err);
    if (n < 0) return -1;
    unsigned long suppressed = 0;
    if (skipped && weir_ratelimit_ok(&p->rl, &suppressed))
        weir_warn("%s: skipped %zu records that cannot be formatted: %s (%lu similar lines "
                  "suppressed)",
                  p->who, skipped, err.msg, suppressed);
    if (p->out.len &&
        (fwrite(p->out.data, 1, p->out.len, stdout) != p->out.len || fflush(stdout) != 0)) {
        int e = errno;
        clearerr(stdout);
        if (weir_ratelimit_ok(&p->rl, &suppressed))
            weir_error("%s: write failed: %s (%lu similar lines suppressed)", p->who, strerror(e),
                       suppressed);
        return -1;
    }
    return 0;
}
