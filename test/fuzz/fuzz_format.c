/* libFuzzer target for the formatters: any msgpack a sender could get into a chunk goes through
 * the JSON writer, and whatever it writes must load in a strict JSON parser (jansson with
 * repeated keys refused: valid UTF-8, each key once, no NaN), because one line a loader refuses
 * can cost a whole object (docs/formats.md). The same bytes go through ltsv, out_file and
 * <inject> + json for crashes and sanitizer reports; the inject + json line is checked as
 * strictly. Starts from an empty corpus (make_corpus.py has no seeds for it). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "weir/format.h"

static json_t *load(const char *text, size_t len, json_error_t *e)
{
    return json_loadb(
        text, len,
        JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL | JSON_DECODE_ANY, e);
}

static void must_load(const char *text, size_t len)
{
    json_error_t e;
    json_t *v = load(text, len, &e);
    if (!v && strstr(e.text, "NUL byte in object key")) {
        /* valid JSON that jansson cannot hold: check again with each \u0000 read as \ue000,
         * an escape weir never writes (it writes U+E000 as raw UTF-8) */
        char *copy = malloc(len);
        memcpy(copy, text, len);
        for (char *q = copy; (q = memmem(q, len - (size_t)(q - copy), "\\u0000", 6)); q += 6)
            q[2] = 'e';
        v = load(copy, len, &e);
        free(copy);
    }
    if (!v) {
        fprintf(stderr, "not strict JSON (%s): %.*s\n", e.text, (int)(len > 500 ? 500 : len), text);
        abort();
    }
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static weir_formatter_t json, ltsv, out_file;
    static weir_inject_t inj;
    static bool ready;
    if (!ready) {
        weir_format_opts_t o;
        weir_format_opts_init(&o, WEIR_FORMAT_JSON);
        o.add_newline = false;
        weir_formatter_init(&json, &o, NULL);
        weir_format_opts_init(&o, WEIR_FORMAT_LTSV);
        weir_formatter_init(&ltsv, &o, NULL);
        weir_format_opts_init(&o, WEIR_FORMAT_OUT_FILE);
        o.localtime = false;
        weir_formatter_init(&out_file, &o, NULL);
        weir_inject_opts_t io;
        weir_inject_opts_init(&io);
        io.tag_key = "tag";
        io.time_key = "1"; /* collides with the integer key 1 once written */
        io.hostname_key = "";
        io.hostname = "h";
        weir_inject_init(&inj, &io, NULL);
        ready = true;
    }
    const char *p = (const char *)data;
    weir_buf_t out, rec;
    weir_buf_init(&out);
    weir_buf_init(&rec);
    if (weir_json_append(&out, p, size) > 0) must_load(out.data, out.len);
    weir_time_t t = {1700000000, 5};
    out.len = 0;
    weir_formatter_format(&ltsv, "t", 1, t, p, size, &out);
    out.len = 0;
    weir_formatter_format(&out_file, "t", 1, t, p, size, &out);
    if (weir_inject_record(&inj, "t", 1, t, p, size, &rec) == 0) {
        out.len = 0;
        if (weir_formatter_format(&json, "t", 1, t, rec.data, rec.len, &out) == 0)
            must_load(out.data, out.len);
    }
    weir_buf_free(&out);
    weir_buf_free(&rec);
    return 0;
}
