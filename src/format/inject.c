/* <inject>: writes hostname, worker id, tag and time keys into a copy of the record, as
 * Fluentd's inject_values_to_record does with a Ruby Hash.
 *
 * The copy is made on the msgpack bytes: runs of pairs that are kept are copied with one memcpy,
 * a pair whose key is injected gets the new value in its place, and the map header is rewritten
 * with the final count. Invariant: the output is always one valid msgpack map, or nothing. */
#include "weir/format.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format_internal.h"

enum inject_kind { INJ_HOSTNAME, INJ_WORKER_ID, INJ_TAG, INJ_TIME };

/* Room for the largest map header (map32), written last once the count is known. */
#define MAP_HDR_MAX 5

void weir_inject_opts_init(weir_inject_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->time_type = WEIR_TIME_FLOAT;
    o->localtime = true;
}

static char *dup_opt(const char *s)
{
    return s ? weir_strdup(s) : NULL;
}

/* Fluentd assigns hostname, worker_id, tag, time in that order; when two of them share a key the
 * later value wins at the first one's place, exactly as successive Hash#[]= calls. */
static void inject_keys(weir_inject_t *inj)
{
    const char *keys[4] = {inj->hostname_key, inj->worker_id_key, inj->tag_key, inj->time_key};
    inj->nkeys = 0;
    for (int k = 0; k < 4; k++) {
        if (!keys[k]) continue;
        int j = 0;
        while (j < inj->nkeys && strcmp(inj->keys[j].key, keys[k]) != 0)
            j++;
        if (j == inj->nkeys) {
            inj->keys[j].key = keys[k];
            inj->keys[j].key_len = strlen(keys[k]);
            inj->nkeys++;
        }
        inj->keys[j].kind = k;
    }
}

int weir_inject_init(weir_inject_t *inj, const weir_inject_opts_t *o, weir_err_t *err)
{
    memset(inj, 0, sizeof *inj);
    weir_buf_init(&inj->text);
    inj->hostname_key = dup_opt(o->hostname_key);
    inj->worker_id_key = dup_opt(o->worker_id_key);
    inj->tag_key = dup_opt(o->tag_key);
    inj->time_key = dup_opt(o->time_key);
    inj->worker_id = o->worker_id;
    inj->time_type = o->time_type;
    inject_keys(inj);
    if (inj->hostname_key) {
        if (o->hostname) {
            inj->hostname = weir_strdup(o->hostname);
        } else {
            char host[256] = "";
            if (gethostname(host, sizeof host - 1) != 0) {
                weir_err_set(err, "<inject> hostname_key: cannot read the host name; set hostname");
                goto err;
            }
            inj->hostname = weir_strdup(host);
        }
    }
    if (inj->time_key && inj->time_type == WEIR_TIME_STRING) {
        bool localtime = o->localtime && !o->utc;
        if (weir_timefmt_init(&inj->time, o->time_format, localtime, o->timezone, err) < 0)
            goto err;
        inj->has_timefmt = true;
    }
    return 0;
err:
    weir_inject_free(inj);
    return -1;
}

void weir_inject_free(weir_inject_t *inj)
{
    free(inj->hostname_key);
    free(inj->hostname);
    free(inj->worker_id_key);
    free(inj->tag_key);
    free(inj->time_key);
    inj->hostname_key = inj->hostname = inj->worker_id_key = inj->tag_key = inj->time_key = NULL;
    inj->nkeys = 0;
    if (inj->has_timefmt) weir_timefmt_free(&inj->time);
    inj->has_timefmt = false;
    weir_buf_free(&inj->text);
}

bool weir_inject_enabled(const weir_inject_t *inj)
{
    return inj->nkeys > 0;
}

/* ---- msgpack writing (the smallest encoding, as msgpack-ruby picks) ---- */

static void mp_put_be(weir_buf_t *out, uint64_t v, int bytes)
{
    weir_buf_reserve(out, (size_t)bytes);
    char *w = out->data + out->len;
    for (int i = 0; i < bytes; i++)
        w[i] = (char)(v >> (8 * (bytes - 1 - i)));
    out->len += (size_t)bytes;
}

static void mp_put_str(weir_buf_t *out, const char *s, size_t n)
{
    if (n < 32) {
        weir_buf_putc(out, (char)(0xa0 | n));
    } else if (n < 256) {
        weir_buf_putc(out, (char)0xd9);
        mp_put_be(out, n, 1);
    } else if (n < 65536) {
        weir_buf_putc(out, (char)0xda);
        mp_put_be(out, n, 2);
    } else {
        weir_buf_putc(out, (char)0xdb);
        mp_put_be(out, n, 4);
    }
    weir_buf_append(out, s, n);
}

static void mp_put_uint(weir_buf_t *out, uint64_t v)
{
    if (v < 128) {
        weir_buf_putc(out, (char)v);
    } else if (v < 256) {
        weir_buf_putc(out, (char)0xcc);
        mp_put_be(out, v, 1);
    } else if (v < 65536) {
        weir_buf_putc(out, (char)0xcd);
        mp_put_be(out, v, 2);
    } else if (v <= UINT32_MAX) {
        weir_buf_putc(out, (char)0xce);
        mp_put_be(out, v, 4);
    } else {
        weir_buf_putc(out, (char)0xcf);
        mp_put_be(out, v, 8);
    }
}

static void mp_put_int(weir_buf_t *out, int64_t v)
{
    if (v >= 0) {
        mp_put_uint(out, (uint64_t)v);
    } else if (v >= -32) {
        weir_buf_putc(out, (char)(int8_t)v);
    } else if (v >= INT8_MIN) {
        weir_buf_putc(out, (char)0xd0);
        mp_put_be(out, (uint64_t)v, 1);
    } else if (v >= INT16_MIN) {
        weir_buf_putc(out, (char)0xd1);
        mp_put_be(out, (uint64_t)v, 2);
    } else if (v >= INT32_MIN) {
        weir_buf_putc(out, (char)0xd2);
        mp_put_be(out, (uint64_t)v, 4);
    } else {
        weir_buf_putc(out, (char)0xd3);
        mp_put_be(out, (uint64_t)v, 8);
    }
}

static void mp_put_double(weir_buf_t *out, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    weir_buf_putc(out, (char)0xcb);
    mp_put_be(out, bits, 8);
}

/* ---- the rewrite ---- */

static void put_time_value(weir_inject_t *inj, weir_time_t t, weir_buf_t *out)
{
    uint64_t s = t.sec, ns = t.nsec;
    switch (inj->time_type) {
    case WEIR_TIME_FLOAT:
        /* EventTime#to_r.truncate(6).to_f: both operands are exact, and IEEE division rounds
         * correctly, so this is the double nearest to sec.usec, as Rational#to_f gives */
        mp_put_double(out, (double)(s * 1000000 + ns / 1000) / 1e6);
        break;
    case WEIR_TIME_UNIXTIME:
        mp_put_uint(out, s);
        break;
    case WEIR_TIME_UNIXTIME_MILLIS:
        mp_put_uint(out, s * 1000 + ns / 1000000);
        break;
    case WEIR_TIME_UNIXTIME_MICROS:
        mp_put_uint(out, s * 1000000 + ns / 1000);
        break;
    case WEIR_TIME_UNIXTIME_NANOS:
        mp_put_uint(out, s * 1000000000 + ns);
        break;
    case WEIR_TIME_STRING:
        inj->text.len = 0;
        weir_timefmt_append(&inj->time, t, &inj->text);
        mp_put_str(out, inj->text.data, inj->text.len);
        break;
    }
}

static void put_value(weir_inject_t *inj, enum inject_kind kind, const char *tag, size_t tag_len,
                      weir_time_t t, weir_buf_t *out)
{
    switch (kind) {
    case INJ_HOSTNAME:
        mp_put_str(out, inj->hostname, strlen(inj->hostname));
        break;
    case INJ_WORKER_ID:
        mp_put_int(out, inj->worker_id);
        break;
    case INJ_TAG:
        mp_put_str(out, tag, tag_len);
        break;
    case INJ_TIME:
        put_time_value(inj, t, out);
        break;
    }
}

/* Which injected key the key at `rec` is, or -1. */
static int match_key(const weir_inject_t *inj, const char *rec, size_t avail)
{
    weir_mp_obj_t k;
    if (weir_mp_read_fast(rec, avail, &k) <= 0) return -1;
    if (k.type != WEIR_MP_STR && k.type != WEIR_MP_BIN) return -1;
    for (int i = 0; i < inj->nkeys; i++)
        if (k.len == inj->keys[i].key_len && memcmp(k.ptr, inj->keys[i].key, k.len) == 0) return i;
    return -1;
}

static void put_map_header(char *w, uint32_t n, size_t *hlen)
{
    if (n < 16) {
        w[0] = (char)(0x80 | n);
        *hlen = 1;
    } else if (n < 65536) {
        w[0] = (char)0xde;
        w[1] = (char)(n >> 8);
        w[2] = (char)n;
        *hlen = 3;
    } else {
        w[0] = (char)0xdf;
        for (int i = 0; i < 4; i++)
            w[1 + i] = (char)(n >> (24 - 8 * i));
        *hlen = 5;
    }
}

ssize_t weir_inject_walk(weir_inject_t *inj, const char *tag, size_t tag_len, weir_time_t t,
                         const char *record, size_t avail, weir_buf_t *out)
{
    size_t start = out->len;
    weir_mp_obj_t hdr;
    ssize_t h = weir_mp_read(record, avail, &hdr);
    if (h <= 0 || hdr.type != WEIR_MP_MAP) return -1;
    bool done[4] = {false, false, false, false};
    weir_buf_reserve(out, MAP_HDR_MAX);
    out->len += MAP_HDR_MAX;
    uint64_t count = 0;
    size_t off = (size_t)h, run = off; /* run: first byte of pairs not yet copied */
    for (uint32_t i = 0; i < hdr.v.n; i++) {
        size_t pair = off;
        ssize_t kl = weir_mp_value_len(record + off, avail - off, WEIR_JSON_MAX_DEPTH);
        if (kl <= 0) goto bad;
        ssize_t vl = weir_mp_value_len(record + off + kl, avail - off - kl, WEIR_JSON_MAX_DEPTH);
        if (vl <= 0) goto bad;
        int m = match_key(inj, record + off, (size_t)kl);
        off += (size_t)(kl + vl);
        if (m < 0) {
            count++;
            continue;
        }
        weir_buf_append(out, record + run, pair - run);
        run = off;
        if (done[m]) continue; /* a later duplicate of an injected key */
        done[m] = true;
        weir_buf_append(out, record + pair, (size_t)kl);
        put_value(inj, (enum inject_kind)inj->keys[m].kind, tag, tag_len, t, out);
        count++;
    }
    weir_buf_append(out, record + run, off - run);
    for (int i = 0; i < inj->nkeys; i++) {
        if (done[i]) continue;
        mp_put_str(out, inj->keys[i].key, inj->keys[i].key_len);
        put_value(inj, (enum inject_kind)inj->keys[i].kind, tag, tag_len, t, out);
        count++;
    }
    if (count > UINT32_MAX) goto bad;
    char mh[MAP_HDR_MAX];
    size_t mhl;
    put_map_header(mh, (uint32_t)count, &mhl);
    char *base = out->data + start;
    memmove(base + mhl, base + MAP_HDR_MAX, out->len - start - MAP_HDR_MAX);
    memcpy(base, mh, mhl);
    out->len -= MAP_HDR_MAX - mhl;
    return (ssize_t)off;
bad:
    out->len = start;
    return -1;
}

int weir_inject_record(weir_inject_t *inj, const char *tag, size_t tag_len, weir_time_t t,
                       const char *record, size_t record_len, weir_buf_t *out)
{
    size_t start = out->len;
    ssize_t n = weir_inject_walk(inj, tag, tag_len, t, record, record_len, out);
    if (n == (ssize_t)record_len) return 0;
    out->len = start; /* failed, or bytes after the map */
    return -1;
}
