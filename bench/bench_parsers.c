/* Input parsers against hostile shapes, on one thread, by CPU time: the cases issue 11 named
 * as super-linear, plus the common shape for comparison.
 *
 *   1. an HTTP msgpack body: one record of 40,000 distinct keys plus 100 repeats
 *   2. the same record as a JSON body
 *   3. a forward-port JSON request of 16 MiB arriving in 4 KiB reads (the connection calls
 *      fwd_json_next after every read with the bytes buffered so far)
 *   4. a Teleport-like JSON event of 12 keys, 100,000 times (the common case must not pay)
 *   5. a 32 MiB HTTP JSON body: one array of strings, flat and inside 100 levels of arrays
 *
 * Built against a tree before the fixes (no weir/hash.h), case 3 calls the old stateless
 * fwd_json_next. No assertions: the numbers go to bench/RESULTS.md by hand.
 *
 *   bench_parsers */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>

#include "weir/forward.h"
#include "weir/http_input.h"

#if __has_include("weir/hash.h")
#define RESUMABLE_JSON 1
#endif

#define KEYS 40000
#define REPEATS 100
#define FWD_JSON_SIZE (16u * 1024 * 1024)
#define FWD_JSON_READ 4096
#define SMALL_EVENTS 100000
#define DEEP_SIZE (32u * 1024 * 1024)

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double decode_body(const char *ct, const char *body, size_t len, uint32_t *records)
{
    weir_http_body_opts_t o = {
        .time_key = "time", .max_depth = WEIR_HTTP_MAX_DEPTH, .max_records = WEIR_HTTP_MAX_RECORDS};
    weir_http_body_in_t in = {.content_type = ct, .body = body, .body_len = len};
    weir_batch_t b;
    weir_batch_init(&b, "t", 1);
    weir_err_t err;
    double t0 = cpu_s();
    if (weir_http_body_decode(&o, &in, &b, &err) != 0) fprintf(stderr, "decode: %s\n", err.msg);
    double t = cpu_s() - t0;
    *records = b.count;
    weir_batch_free(&b);
    return t;
}

static void many_keys(void)
{
    weir_buf_t mp, js;
    weir_buf_init(&mp);
    weir_buf_init(&js);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &mp, weir_buf_msgpack_write);
    msgpack_pack_map(&pk, KEYS + REPEATS);
    weir_buf_putc(&js, '{');
    char k[16];
    for (int i = 0; i < KEYS + REPEATS; i++) {
        int n = snprintf(k, sizeof k, "k%d", i % KEYS);
        msgpack_pack_str_with_body(&pk, k, (size_t)n);
        msgpack_pack_int(&pk, i);
        weir_buf_printf(&js, "%s\"%s\":%d", i ? "," : "", k, i);
    }
    weir_buf_putc(&js, '}');
    uint32_t recs;
    double t = decode_body("application/msgpack", mp.data, mp.len, &recs);
    printf("http msgpack body, %d keys + %d repeats (%zu bytes): %.3f s CPU (%u record)\n", KEYS,
           REPEATS, mp.len, t, recs);
    t = decode_body("application/json", js.data, js.len, &recs);
    printf("http JSON body,    %d keys + %d repeats (%zu bytes): %.3f s CPU (%u record)\n", KEYS,
           REPEATS, js.len, t, recs);
    weir_buf_free(&mp);
    weir_buf_free(&js);
}

static void forward_json(void)
{
    weir_buf_t text, frame;
    weir_buf_init(&text);
    weir_buf_init(&frame);
    weir_buf_printf(&text, "[\"t\",1700000000,{\"s\":\"");
    while (text.len < FWD_JSON_SIZE - 3)
        weir_buf_putc(&text, 'x');
    weir_buf_printf(&text, "\"}]");
    weir_err_t err;
    size_t used = 0, n = 0;
    int rc = 0, calls = 0;
#ifdef RESUMABLE_JSON
    fwd_json_scan_t js;
    fwd_json_scan_reset(&js);
#endif
    double t0 = cpu_s();
    while (rc == 0 && n < text.len) {
        n = n + FWD_JSON_READ > text.len ? text.len : n + FWD_JSON_READ;
        calls++;
#ifdef RESUMABLE_JSON
        rc = fwd_json_next(&js, text.data, n, 2 * FWD_JSON_SIZE, &used, &frame, &err);
#else
        rc = fwd_json_next(text.data, n, 2 * FWD_JSON_SIZE, &used, &frame, &err);
#endif
    }
    double t = cpu_s() - t0;
    printf("forward JSON request, %zu bytes in %d reads of %d: %.3f s CPU (rc %d, frame %zu "
           "bytes)\n",
           text.len, calls, FWD_JSON_READ, t, rc, frame.len);
    weir_buf_free(&text);
    weir_buf_free(&frame);
}

static void small_events(void)
{
    const char *ev =
        "{\"event\":\"session.start\",\"uid\":\"5a3c1f0e-4b1c-4d2e-9f3a-000000001f0b\","
        "\"code\":\"T2000I\",\"time\":1715288440,\"user\":"
        "\"alice@example.com\",\"success\":true,\"ei\":0,\"cluster_name\":"
        "\"teleport.example.com\",\"addr.remote\":\"10.1.2.3:40000\",\"login\":"
        "\"root\",\"namespace\":\"default\",\"server_id\":\"abc\"}";
    size_t len = strlen(ev);
    double total = 0;
    uint32_t recs = 0, r;
    for (int i = 0; i < SMALL_EVENTS; i++) {
        total += decode_body("application/json", ev, len, &r);
        recs += r;
    }
    printf("http JSON body, 12-key event x %d: %.3f s CPU, %.0f events/s (%u records)\n",
           SMALL_EVENTS, total, SMALL_EVENTS / total, recs);
}

static void deep_json(void)
{
    for (int depth = 1; depth <= 100; depth += 99) {
        weir_buf_t js;
        weir_buf_init(&js);
        for (int i = 0; i < depth - 1; i++)
            weir_buf_putc(&js, '[');
        weir_buf_putc(&js, '[');
        while (js.len < DEEP_SIZE - 200)
            weir_buf_printf(&js, "\"%046d\",", 0);
        weir_buf_printf(&js, "1]");
        for (int i = 0; i < depth - 1; i++)
            weir_buf_putc(&js, ']');
        weir_buf_t out;
        weir_buf_init(&out);
        weir_err_t err;
        double t0 = cpu_s();
        int rc = weir_http_json_to_msgpack(js.data, js.len, WEIR_HTTP_MAX_DEPTH, &out, &err);
        double t = cpu_s() - t0;
        printf("http JSON body, %zu bytes, %3d levels deep: %.3f s CPU (rc %d)\n", js.len, depth, t,
               rc);
        weir_buf_free(&out);
        weir_buf_free(&js);
    }
}

int main(void)
{
    many_keys();
    forward_json();
    small_events();
    deep_json();
    return 0;
}
