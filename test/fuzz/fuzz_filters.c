/* libFuzzer target for the filters: any record a sender could get past an input (a msgpack
 * map, whole and valid, as the inputs check) goes through grep and record_transformer
 * configurations that read nested fields by record_accessor path, expand placeholders from the
 * record, merge, remove nested fields and array elements, renew the time and renew the record.
 * Promises checked (abort when broken): a filter never rejects a valid batch; what it passes
 * on is never more events than came in, and is whole, valid entries whose records are maps
 * that weir_mp_skip reads to their exact length; the JSON writer takes every such record. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weir/config.h"
#include "weir/format.h"
#include "weir/log.h"
#include "weir/mp.h"
#include "weir/plugin.h"

static const char *const configs[][2] = {
    {"grep", "<regexp>\nkey $.a.b[0]\npattern /x|^$/\n</regexp>\n"
             "<or>\n<exclude>\nkey $['a'][-1]\npattern /^(a+)+$/\n</exclude>\n"
             "<exclude>\nkey message\npattern /\\d{3}/i\n</exclude>\n</or>"},
    {"grep", "<and>\n<regexp>\nkey message\npattern /./m\n</regexp>\n<regexp>\nkey 1\n"
             "pattern /^1/\n</regexp>\n</and>"},
    {"record_transformer",
     "renew_time_key t\nremove_keys $.a.b[0],$.a[1],message,$['a']['c']['d']\n<record>\n"
     "message ${record[\"message\"]} ${tag_parts[-1]} ${time}\nn ${record[\"n\"]}\n"
     "a ${record[\"a\"]}\nt ${record[\"t\"]}\nj {\"${tag}\": [\"${record[\\\"message\\\"]}\", "
     "1]}\n</record>"},
    {"record_transformer",
     "renew_record true\nkeep_keys a,message,,1\nauto_typecast false\n<record>\n"
     "${record[\"message\"]} ${record[\"a\"]}\n</record>"},
};
#define NCONFIGS (sizeof configs / sizeof *configs)

static const weir_filter_ops_t *ops[NCONFIGS];
static void *states[NCONFIGS];
/* kept, and so reachable at exit: LeakSanitizer reports only what nothing points to */
static weir_conf_section_t *roots[NCONFIGS];

static void setup(void)
{
    weir_log_set_level(WEIR_LOG_FATAL);
    for (size_t i = 0; i < NCONFIGS; i++) {
        char text[2048];
        snprintf(text, sizeof text, "<filter **>\n@type %s\n%s\n</filter>\n", configs[i][0],
                 configs[i][1]);
        weir_err_t err;
        weir_conf_section_t *root = roots[i] =
            weir_conf_parse_string(text, strlen(text), "fuzz", &err);
        ops[i] = weir_filter_find(configs[i][0]);
        if (!root || !ops[i] ||
            ops[i]->create(NULL, weir_conf_child(root, "filter", 0), &states[i], &err) != 0) {
            fprintf(stderr, "fuzz_filters: config %zu: %s\n", i, err.msg);
            abort();
        }
    }
}

static void check_out(const weir_batch_t *in, const weir_batch_t *out)
{
    if (out->count > in->count) abort();
    weir_batch_iter_t it;
    weir_entry_t e;
    weir_batch_iter_init(&it, out->data.data, out->data.len);
    uint32_t n = 0;
    int r;
    weir_buf_t json;
    weir_buf_init(&json);
    while ((r = weir_batch_iter_next(&it, &e)) == 1) {
        weir_mp_obj_t o;
        if (weir_mp_read(e.record, e.record_len, &o) <= 0 || o.type != WEIR_MP_MAP) abort();
        if (weir_mp_skip(e.record, e.record_len, WEIR_MP_MAX_DEPTH) != (ssize_t)e.record_len)
            abort();
        json.len = 0;
        if (weir_json_append(&json, e.record, e.record_len) <= 0) abort();
        n++;
    }
    weir_buf_free(&json);
    if (r != 0 || n != out->count) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    const char *p = (const char *)data;
    weir_mp_obj_t o;
    /* what an input lets through: one whole map, nothing after it, nested at most as deep as
     * the JSON writer follows */
    if (weir_mp_read(p, size, &o) <= 0 || o.type != WEIR_MP_MAP) return 0;
    if (weir_mp_skip(p, size, WEIR_JSON_MAX_DEPTH) != (ssize_t)size) return 0;
    weir_batch_t in, out;
    weir_batch_init(&in, "fuzz.tag.x", 10);
    weir_batch_append(&in, (weir_time_t){1700000000, 5}, p, size);
    weir_batch_append(&in, (weir_time_t){1700000001, 0},
                      "\x81\xa7message\xa3"
                      "abc",
                      13);
    for (size_t i = 0; i < NCONFIGS; i++) {
        weir_batch_init(&out, in.tag, in.tag_len);
        void *hold = NULL;
        weir_filter_result_t r = ops[i]->filter(states[i], &in, &out, &hold);
        if (r == WEIR_FILTER_ERROR || hold) abort();
        check_out(&in, r == WEIR_FILTER_SAME ? &in : &out);
        weir_batch_free(&out);
    }
    weir_batch_free(&in);
    return 0;
}
