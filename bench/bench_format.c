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

#include <msgpack.h>

#include "weir/format.h"

#define NRECORDS 1000

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* One teleport-like audit event; `i` varies ids, numbers and lengths. */
static void build_record(msgpack_packer *pk, int i)
{
    char uid[40], user[24], addr[32];
    snprintf(uid, sizeof uid, "%08x-4b1c-4d2e-9f3a-%012x", 0x1234567u * (unsigned)i, i * 7919u);
    snprintf(user, sizeof user, "user%d@example.com", i % 97);
    snprintf(addr, sizeof addr, "10.%d.%d.%d:%d", i % 250, (i / 7) % 250, i % 13, 40000 + i);
    msgpack_pack_map(pk, 9);
    pack_str(pk, "event");
    pack_str(pk, i % 3 ? "session.start" : "user.login");
    pack_str(pk, "uid");
    pack_str(pk, uid);
    pack_str(pk, "code");
    pack_str(pk, "T2000I");
    pack_str(pk, "user");
    pack_str(pk, user);
    pack_str(pk, "success");
    msgpack_pack_true(pk);
    pack_str(pk, "ei");
    msgpack_pack_int(pk, i * 31);
    pack_str(pk, "cluster_name");
    pack_str(pk, "teleport.example.com");
    pack_str(pk, "addr.remote");
    pack_str(pk, addr);
    pack_str(pk, "meta");
    msgpack_pack_map(pk, 2);
    pack_str(pk, "kind");
    pack_str(pk, "node");
    pack_str(pk, "attempt");
    msgpack_pack_int(pk, i % 5);
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
    weir_batch_init(&b, "teleport.audit", strlen("teleport.audit"));
    weir_buf_t rec;
    weir_buf_init(&rec);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &rec, weir_buf_msgpack_write);
    weir_time_t t = {1715288440, 632000000};
    for (int i = 0; i < NRECORDS; i++) {
        rec.len = 0;
        build_record(&pk, i);
        /* a few events share each second, as in a busy stream */
        weir_time_t ti = {t.sec + (uint32_t)(i / 50), t.nsec + (uint32_t)i * 1000};
        weir_batch_append(&b, ti, rec.data, rec.len);
    }
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
    weir_buf_free(&rec);
    weir_batch_free(&b);
    return 0;
fail:
    fprintf(stderr, "bench_format: %s\n", err.msg);
    return 1;
}
