/* Record formatting speed: 1,000 audit-style records of about 200 bytes of msgpack (strings,
 * integers, a boolean, a nested map), formatted N times as json, as out_file (UTC, ISO-8601
 * time), and as json after the pipeline's <inject> (tag plus a %N time string). Prints records/s
 * and MB/s of msgpack read and text written, per formatter, on one thread, by the wall clock and
 * per second of the thread's CPU time (on a shared machine the wall clock also counts other
 * processes). The whole weir_format_batch call is timed, entry walk included, as an output pays
 * it. No assertions: the numbers go to bench/RESULTS.md by hand.
 *
 *   bench_format [iterations]   (default 2000, i.e. 2 million records per formatter) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_records.h"
#include "weir/format.h"

#define NRECORDS 1000

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run(const char *name, weir_formatter_t *f, weir_inject_t *inj, const weir_batch_t *b,
                int iterations)
{
    weir_buf_t out, scratch;
    weir_buf_init(&out);
    weir_buf_init(&scratch);
    size_t skipped = 0;
    weir_err_t err;
    /* one warm-up pass grows the buffers */
    weir_format_batch(f, inj, b, &out, &scratch, &skipped, &err);
    size_t line_bytes = out.len;
    double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    long lines = 0;
    for (int it = 0; it < iterations; it++) {
        out.len = 0;
        lines += weir_format_batch(f, inj, b, &out, &scratch, &skipped, &err);
    }
    double dt = clock_s(CLOCK_MONOTONIC) - t0, dc = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    double in_mb = (double)b->data.len * iterations / 1e6;
    double out_mb = (double)line_bytes * iterations / 1e6;
    printf("%-12s %9.0f records/s %7.1f MB/s in %7.1f MB/s out | per cpu-s: %9.0f records "
           "%7.1f MB in | %ld records, %.2f s wall, %.2f s cpu, %zu bytes/line\n",
           name, (double)lines / dt, in_mb / dt, out_mb / dt, (double)lines / dc, in_mb / dc, lines,
           dt, dc, line_bytes / (size_t)b->count);
    weir_buf_free(&out);
    weir_buf_free(&scratch);
}

int main(int argc, char **argv)
{
    int iterations = argc > 1 ? atoi(argv[1]) : 2000;
    if (iterations <= 0) iterations = 2000;

    weir_batch_t b;
    bench_audit_batch(&b, NRECORDS);
    size_t record_bytes = b.data.len / NRECORDS - 1 - WEIR_EVENTTIME_LEN;
    printf("%d records, %zu bytes of msgpack per record on average, %d iterations\n", NRECORDS,
           record_bytes, iterations);

    weir_err_t err;
    weir_format_opts_t o;
    weir_formatter_t json, out_file;
    weir_format_opts_init(&o, WEIR_FORMAT_JSON);
    if (weir_formatter_init(&json, &o, &err) < 0) goto fail;
    weir_format_opts_init(&o, WEIR_FORMAT_OUT_FILE);
    o.localtime = false;
    if (weir_formatter_init(&out_file, &o, &err) < 0) goto fail;
    weir_inject_opts_t io;
    weir_inject_opts_init(&io);
    io.tag_key = "tag";
    io.time_key = "time";
    io.time_type = WEIR_TIME_STRING;
    io.time_format = "%Y-%m-%dT%H:%M:%S.%NZ";
    io.utc = true;
    weir_inject_t inj;
    if (weir_inject_init(&inj, &io, &err) < 0) goto fail;

    run("json", &json, NULL, &b, iterations);
    run("out_file", &out_file, NULL, &b, iterations);
    run("json+inject", &json, &inj, &b, iterations);

    weir_inject_free(&inj);
    weir_formatter_free(&out_file);
    weir_formatter_free(&json);
    weir_batch_free(&b);
    return 0;
fail:
    fprintf(stderr, "bench_format: %s\n", err.msg);
    return 1;
}
