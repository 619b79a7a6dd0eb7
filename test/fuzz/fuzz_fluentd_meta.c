/* libFuzzer target for Fluentd buffer adoption (src/buffer/fluentd_meta.h): the input is a
 * .meta file as Fluentd, or anything else, left it on the buffer volume weir starts on. It goes
 * through fluentd_meta_parse (the bytes as they are), and through the file name check as a
 * directory entry's name. Beyond the sanitizers (LeakSanitizer included: a rejected .meta must
 * leave nothing allocated, since adoption does not free what a failed parse returns), it aborts
 * when a parse that fails leaves anything in the metadata, or one that succeeds returns
 * variables that are not strings or more of them than <buffer> allows.
 *
 * Seeds: test/fuzz/make_corpus.py fuzz_fluentd_meta DIR. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/buffer/fluentd_meta.h"
#include "weir/buffer.h"
#include "weir/log.h"

#define FUZZ_NAME_MAX 64 /* longer than any name fluentd_name_parse accepts (44) */

static void check(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz_fluentd_meta: invariant broken: %s\n", what);
    abort();
}

static void name_one(const uint8_t *data, size_t size)
{
    char name[FUZZ_NAME_MAX + 1], hex[33];
    size_t n = size < FUZZ_NAME_MAX ? size : FUZZ_NAME_MAX;
    memcpy(name, data, n);
    name[n] = '\0';
    if (!fluentd_name_parse(name, hex)) return;
    check(strlen(hex) == 32 && memcmp(hex, name + 8, 32) == 0, "the id is not the name's hex");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        weir_log_set_level(WEIR_LOG_FATAL);
        quiet = true;
    }
    if (size > FLUENTD_META_MAX) return 0; /* adoption reads no more than this */
    name_one(data, size);

    /* a copy of exactly `size` bytes, so ASan sees a read one past the end */
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    chunk_meta_t m;
    uint64_t records = 0;
    int rc = fluentd_meta_parse(buf, size, &m, &records);
    check(rc == 0 || rc == -1, "parse returned something else than 0 or -1");
    if (rc == -1) {
        static const chunk_meta_t empty;
        check(memcmp(&m, &empty, sizeof m) == 0, "a rejected .meta left metadata behind");
    } else {
        check(m.nvars <= WEIR_BUFFER_MAX_KEYS, "more variables than <buffer> keys");
        for (size_t i = 0; i < m.nvars; i++)
            check(m.var_keys[i] != NULL && m.var_values[i] != NULL, "a NULL variable");
        chunk_meta_free(&m);
    }
    free(buf);
    return 0;
}
