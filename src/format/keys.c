/* Each key of a map written once: the pass that makes a formatted record a valid JSON object
 * (and an LTSV line with distinct labels) whatever keys its msgpack map held.
 *
 * msgpack allows a map to repeat a key, and keys that differ in msgpack can print the same:
 * 1 and "1", nil and "", two invalid UTF-8 strings that both become U+FFFD. A JSON object with a
 * repeated key is rejected by strict loaders (Snowflake's among them), and a loader that skips a
 * whole file on an error would lose every other event in it. So keys are compared as written,
 * after every conversion, and the map is rewritten when two match: each key keeps the place of
 * its first occurrence and takes the value of its last, as Ruby's Hash#[]= builds the Hash
 * Fluentd would print.
 *
 * The writers record where each pair lies in the output as they write it (weir_fmt_keys_push),
 * so a map without repeats, the usual case, costs one small record per pair and a check: no
 * second pass over the msgpack, no copy. The check is a scan for maps up to
 * WEIR_FMT_KEYS_SCAN_MAX pairs (behind a 64-bit filter, so distinct keys are rarely compared)
 * and the keyed set of weir/hash.h (SipHash under the process's random key) above that, so a record
 * with tens of thousands of keys costs linear time however its sender chose them.
 *
 * Invariant: the pairs of every open map lie on one stack, innermost last; closing a map pops
 * exactly its own pairs and only rewrites output bytes at or after its first pair. */
#include <stdlib.h>
#include <string.h>

#include "format_internal.h"
#include "weir/hash.h"

void weir_fmt_keys_init(weir_fmt_keys_t *k)
{
    memset(k, 0, sizeof *k);
    weir_hset_init(&k->seen);
}

void weir_fmt_keys_free(weir_fmt_keys_t *k)
{
    free(k->pairs);
    weir_hset_free(&k->seen);
    memset(k, 0, sizeof *k);
}

weir_fmt_pair_t *weir_fmt_keys_grow(weir_fmt_keys_t *k)
{
    size_t cap = k->cap ? k->cap * 2 : 64;
    k->pairs = weir_realloc(k->pairs, cap * sizeof *k->pairs);
    k->cap = cap;
    return &k->pairs[k->n++];
}

static bool same_key(const char *text, const weir_fmt_pair_t *a, const weir_fmt_pair_t *b)
{
    size_t n = a->val - a->key;
    return n == b->val - b->key && memcmp(text + a->key, text + b->key, n) == 0;
}

/* A cheap 6-bit fingerprint of a key's text for the small-map filter: length and three bytes.
 * A sender can make keys collide here, which costs at most WEIR_FMT_KEYS_SCAN_MAX squared
 * comparisons per map. */
static unsigned fingerprint(const char *text, const weir_fmt_pair_t *p)
{
    size_t n = p->val - p->key;
    if (n == 0) return 0;
    const unsigned char *s = (const unsigned char *)text + p->key;
    return (unsigned)(n * 7 + s[n / 2] * 31 + s[n - 1] * 131 + s[n > 2 ? n - 2 : 0]) & 63;
}

/* True when a key of a small map repeats. The usual answer is no, found with one filter test
 * per key and no writes; a key whose fingerprint was seen is compared with those before it. */
static bool any_repeat_small(const char *text, const weir_fmt_pair_t *p, uint32_t n)
{
    uint64_t seen = 0; /* one bit per fingerprint: kept in a register */
    for (uint32_t i = 0; i < n; i++) {
        uint64_t bit = 1ull << fingerprint(text, &p[i]);
        if (seen & bit) {
            for (uint32_t j = 0; j < i; j++)
                if (same_key(text, &p[j], &p[i])) return true;
        }
        seen |= bit;
    }
    return false;
}

/* Sets p[i].first to the index of the first pair whose key matches p[i]'s, for a small map
 * known to repeat a key. The first match in index order is always a first occurrence. */
static void find_repeats_scan(const char *text, weir_fmt_pair_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        p[i].first = i;
        for (uint32_t j = 0; j < i; j++) {
            if (same_key(text, &p[j], &p[i])) {
                p[i].first = j;
                break;
            }
        }
    }
}

/* As find_repeats_scan, through the keyed set (weir_hset: SipHash under the process key).
 * The set points into `text`, which does not move while it is used. */
static bool find_repeats_hashed(weir_fmt_keys_t *k, const char *text, weir_fmt_pair_t *p,
                                uint32_t n)
{
    weir_hset_clear(&k->seen);
    bool any = false;
    for (uint32_t i = 0; i < n; i++) {
        size_t first;
        p[i].first = i;
        if (!weir_hset_add(&k->seen, text + p[i].key, p[i].val - p[i].key, i, &first)) {
            p[i].first = (uint32_t)first;
            any = true;
        }
    }
    return any;
}

/* Rewrites the map's pairs (which end at out->len) keeping each key once at its first place
 * with its last value, `sep` between pairs. */
static void rewrite(weir_buf_t *out, weir_fmt_pair_t *p, uint32_t n, const char *sep,
                    size_t sep_len)
{
    for (uint32_t i = 0; i < n; i++)
        p[i].last = i;
    for (uint32_t i = 0; i < n; i++)
        p[p[i].first].last = i;
    size_t start = p[0].key, region = out->len - start;
    /* the result is never longer than the region it replaces: reserve once, so the copies below
     * read from a buffer that does not move */
    weir_buf_reserve(out, region);
    char *d = out->data;
    size_t w = out->len;
    for (uint32_t i = 0; i < n; i++) {
        if (p[i].first != i) continue;
        if (w > out->len) {
            memcpy(d + w, sep, sep_len);
            w += sep_len;
        }
        const weir_fmt_pair_t *v = &p[p[i].last];
        memcpy(d + w, d + p[i].key, p[i].val - p[i].key);
        w += p[i].val - p[i].key;
        memcpy(d + w, d + v->val, v->end - v->val);
        w += v->end - v->val;
    }
    memmove(d + start, d + out->len, w - out->len);
    out->len = start + (w - out->len);
}

void weir_fmt_keys_close(weir_fmt_keys_t *k, size_t base, weir_buf_t *out, const char *sep,
                         size_t sep_len)
{
    uint32_t n = (uint32_t)(k->n - base);
    k->n = base;
    if (n < 2) return;
    weir_fmt_pair_t *p = k->pairs + base;
    if (n <= WEIR_FMT_KEYS_SCAN_MAX) {
        if (!any_repeat_small(out->data, p, n)) return;
        find_repeats_scan(out->data, p, n);
    } else if (!find_repeats_hashed(k, out->data, p, n)) {
        return;
    }
    rewrite(out, p, n, sep, sep_len);
}
