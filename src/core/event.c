/* Event batches. Invariant: a batch's data is exactly `count` canonical entries
 * [fixext8 EventTime, map], so every later stage can walk it without re-validating. */
#include "weir/event.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "weir/mp.h"

weir_time_t weir_time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    weir_time_t t = {(uint32_t)ts.tv_sec, (uint32_t)ts.tv_nsec};
    return t;
}

static void put32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

void weir_time_encode(weir_time_t t, char out[WEIR_EVENTTIME_LEN])
{
    out[0] = (char)0xd7;
    out[1] = 0;
    put32(out + 2, t.sec);
    put32(out + 6, t.nsec);
}

void weir_batch_init(weir_batch_t *b, const char *tag, size_t tag_len)
{
    b->tag = weir_strndup(tag ? tag : "", tag ? tag_len : 0);
    b->tag_len = tag ? tag_len : 0;
    weir_buf_init(&b->data);
    b->count = 0;
    b->tmin = UINT32_MAX;
    b->tmax = 0;
}

void weir_batch_free(weir_batch_t *b)
{
    free(b->tag);
    b->tag = NULL;
    weir_buf_free(&b->data);
    b->count = 0;
}

void weir_batch_reset(weir_batch_t *b)
{
    b->data.len = 0;
    b->count = 0;
    b->tmin = UINT32_MAX;
    b->tmax = 0;
}

void weir_batch_set_tag(weir_batch_t *b, const char *tag, size_t tag_len)
{
    free(b->tag);
    b->tag = weir_strndup(tag, tag_len);
    b->tag_len = tag_len;
}

void weir_batch_append(weir_batch_t *b, weir_time_t t, const char *record, size_t record_len)
{
    weir_buf_reserve(&b->data, 1 + WEIR_EVENTTIME_LEN + record_len);
    char *p = b->data.data + b->data.len;
    p[0] = (char)0x92;
    weir_time_encode(t, p + 1);
    memcpy(p + 1 + WEIR_EVENTTIME_LEN, record, record_len);
    b->data.len += 1 + WEIR_EVENTTIME_LEN + record_len;
    b->count++;
    if (t.sec < b->tmin) b->tmin = t.sec;
    if (t.sec > b->tmax) b->tmax = t.sec;
}

void weir_batch_append_raw(weir_batch_t *b, const char *entries, size_t len, uint32_t n,
                           uint32_t tmin, uint32_t tmax)
{
    weir_buf_append(&b->data, entries, len);
    b->count += n;
    if (n && tmin < b->tmin) b->tmin = tmin;
    if (n && tmax > b->tmax) b->tmax = tmax;
}

void weir_batch_iter_init(weir_batch_iter_t *it, const char *data, size_t len)
{
    it->p = data;
    it->end = data ? data + len : data; /* NULL + 0 is undefined in C */
}

static uint32_t get32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return ((uint32_t)u[0] << 24) | ((uint32_t)u[1] << 16) | ((uint32_t)u[2] << 8) | u[3];
}

int weir_batch_iter_next(weir_batch_iter_t *it, weir_entry_t *e)
{
    if (it->p >= it->end) return 0;
    size_t avail = (size_t)(it->end - it->p);
    if (avail < 1 + WEIR_EVENTTIME_LEN || (unsigned char)it->p[0] != 0x92 ||
        (unsigned char)it->p[1] != 0xd7 || it->p[2] != 0)
        return -1;
    e->time.sec = get32(it->p + 3);
    e->time.nsec = get32(it->p + 7);
    const char *rec = it->p + 1 + WEIR_EVENTTIME_LEN;
    ssize_t n = weir_mp_skip(rec, (size_t)(it->end - rec), WEIR_MP_MAX_DEPTH);
    if (n <= 0) return -1;
    e->record = rec;
    e->record_len = (size_t)n;
    it->p = rec + n;
    return 1;
}
