/* libFuzzer target for <source> @type http: arbitrary bytes through the HTTP request reader
 * (delivered in pieces whose sizes the input chooses), and every request it yields through
 * the target check, the tag, and the body decoders in both modes; the same bytes also go
 * straight to the JSON converter, the msgpack decoder and the time formats. Checks that
 * nothing reads out of bounds, leaks, or loops, and that every batch built is canonical. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "weir/http_input.h"

static weir_timeparser_t *tp_teleport, *tp_zone, *tp_iso, *tp_float;

static weir_timeparser_t *make(weir_time_type_t type, const char *fmt, const char *tz, bool utc)
{
    weir_timeparser_conf_t c = {type, fmt, tz, true, utc};
    weir_err_t err;
    weir_timeparser_t *tp = weir_timeparser_new(&c, &err);
    if (!tp) abort();
    return tp;
}

static void init(void)
{
    if (tp_teleport) return;
    tp_teleport = make(WEIR_TIME_STRING, "%Y-%m-%dT%H:%M:%S", NULL, true);
    tp_zone = make(WEIR_TIME_STRING, "%d/%b/%Y:%H:%M:%S.%N %z %a %j %e %y %s %Z", "+09:00", false);
    tp_iso = make(WEIR_TIME_STRING, NULL, NULL, false);
    tp_float = make(WEIR_TIME_FLOAT, NULL, NULL, false);
}

/* Every entry of a batch must walk cleanly: the invariant later stages rely on. */
static void check_batch(const weir_batch_t *b)
{
    weir_batch_iter_t it;
    weir_entry_t e;
    uint32_t n = 0;
    int rc;
    weir_batch_iter_init(&it, b->data.data, b->data.len);
    while ((rc = weir_batch_iter_next(&it, &e)) == 1)
        n++;
    if (rc != 0 || n != b->count) abort();
}

static void decode_body(const char *ct, const char *query, size_t qlen, const char *body,
                        size_t blen, bool parse_json)
{
    weir_http_extra_t ex[2] = {{"HTTP_X", 6, "v", 1}, {"REMOTE_ADDR", 11, NULL, 0}};
    weir_http_body_opts_t o = {
        .parse_json = parse_json,
        .time_key = "time",
        .time_parser = parse_json ? tp_teleport : NULL,
        .null_empty_string = parse_json,
        .max_depth = WEIR_HTTP_MAX_DEPTH,
        .max_records = 1000,
    };
    weir_http_body_skips_t skips;
    weir_http_body_in_t in = {query, qlen, ct, body, blen, ex, 2, {1700000000u, 0}, &skips};
    weir_batch_t b;
    weir_batch_init(&b, "fuzz", 4);
    weir_err_t err;
    if (weir_http_body_decode(&o, &in, &b, &err) == 0 && skips.count > 0 && !skips.first.msg[0])
        abort(); /* a dropped value always says why */
    check_batch(&b);
    weir_batch_free(&b);
}

static void handle_request(const weir_http_req_t *r)
{
    const char *path, *query;
    size_t plen, qlen;
    if (weir_http_split_target(r->url.data, r->url.len, &path, &plen, &query, &qlen) != 0) return;
    weir_buf_t tag;
    weir_buf_init(&tag);
    weir_http_tag_from_path(path, plen, "p", &tag);
    weir_buf_free(&tag);
    const weir_http_header_t *ct = weir_http_req_header(r, "Content-Type");
    decode_body(ct ? ct->value : "", query, qlen, r->body.data, r->body.len, false);
    decode_body("", query, qlen, r->body.data, r->body.len, true);
}

static void run_reader(const uint8_t *data, size_t size)
{
    if (size < 1) return;
    size_t step = (size_t)data[0] % 64 + 1; /* how the bytes arrive */
    data++;
    size--;
    weir_http_req_t r;
    weir_http_req_init(&r, 4096);
    size_t off = 0, requests = 0;
    while (off < size && requests < 64) {
        size_t avail = size - off < step ? size - off : step;
        weir_http_ev_t ev;
        size_t n = weir_http_req_feed(&r, (const char *)data + off, avail, &ev);
        off += n;
        if (ev == WEIR_HTTP_EV_REQUEST) {
            handle_request(&r);
            weir_http_req_next(&r);
            requests++;
        } else if (ev == WEIR_HTTP_EV_ERROR || ev == WEIR_HTTP_EV_TOO_LARGE) {
            break;
        } else if (ev == WEIR_HTTP_EV_NONE && n < avail) {
            abort(); /* the reader must take every byte it is offered when nothing stops it */
        }
    }
    weir_http_req_free(&r);
}

static void run_direct(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    weir_buf_t mp;
    weir_buf_init(&mp);
    weir_err_t err;
    if (weir_http_json_to_msgpack(s, size, 20, &mp, &err) == 0 &&
        weir_mp_skip(mp.data, mp.len, 32) != (ssize_t)mp.len)
        abort(); /* the converter must produce exactly one valid value */
    weir_buf_free(&mp);
    decode_body("application/msgpack", NULL, 0, s, size, false);
    decode_body("application/x-ndjson", NULL, 0, s, size, false);
    decode_body("application/x-www-form-urlencoded", s, size, s, size, false);
    weir_time_t t, now = {1700000000u, 0};
    weir_timeparser_parse_str(tp_teleport, s, size, now, &t);
    weir_timeparser_parse_str(tp_zone, s, size, now, &t);
    weir_timeparser_parse_str(tp_iso, s, size, now, &t);
    weir_mp_obj_t v = {.type = WEIR_MP_STR, .ptr = s, .len = (uint32_t)size};
    weir_timeparser_parse(tp_float, &v, now, &t, &err);
    weir_ruby_to_f(s, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    run_reader(data, size);
    run_direct(data, size);
    return 0;
}
