/* libFuzzer target for the one bounded inflater (src/core/inflate.c). The first byte picks
 * the format (gzip, zlib, zstd), the output limit (a small one, so the limit is hit often)
 * and a step budget; the rest is the compressed input. Checks that nothing reads out of
 * bounds or leaks, that the output never passes the limit nor its buffer limit + 1 bytes, and
 * that inflating in steps gives exactly what one call gives (same result, same bytes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "weir/inflate.h"

static void check(int ok)
{
    if (!ok) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const weir_inflate_format_t fmts[] = {WEIR_INFLATE_GZIP, WEIR_INFLATE_ZLIB,
                                                 WEIR_INFLATE_ZSTD};
    weir_inflate_format_t fmt = fmts[data[0] % 3];
    size_t limit = (size_t)1 << (8 + (data[0] >> 2) % 12); /* 256 B .. 512 KiB */
    size_t budget = 1 + ((size_t)(data[0] >> 4) << 10);    /* 1 B .. 15 KiB + 1 */
    const char *in = (const char *)data + 1;
    size_t len = size - 1;

    weir_buf_t whole, stepped;
    weir_buf_init(&whole);
    weir_buf_init(&stepped);
    weir_err_t err;
    int rc = weir_inflate(fmt, in, len, limit, &whole, &err);
    check(whole.len <= limit + 1 && whole.cap <= limit + 1);
    if (rc == 0) check(whole.len <= limit);

    weir_inflate_t *z = weir_inflate_new(fmt, in, len, limit, &stepped, &err);
    check(z != NULL);
    int s;
    while ((s = weir_inflate_step(z, budget, &err)) == 0)
        check(stepped.len <= limit);
    weir_inflate_free(z);
    check((s == 1) == (rc == 0));
    if (rc == 0)
        check(stepped.len == whole.len &&
              (whole.len == 0 || memcmp(stepped.data, whole.data, whole.len) == 0));
    weir_buf_free(&whole);
    weir_buf_free(&stepped);
    return 0;
}
