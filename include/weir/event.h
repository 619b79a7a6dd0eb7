/* Events and batches: the unit every stage passes on.
 *
 * A batch is one tag plus a run of entries, each entry the msgpack encoding of
 * [EventTime, record] with the time as ext type 0 (fixext8: seconds, nanoseconds, both
 * big-endian uint32) and the record a map. That is Fluentd's own on-the-wire entry, so a
 * PackedForward payload that is already canonical is appended as it is, and a chunk file stores
 * the same bytes. Invariant: `data` always holds exactly `count` whole, valid entries. */
#ifndef WEIR_EVENT_H
#define WEIR_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "weir/common.h"

typedef struct weir_time {
    uint32_t sec;
    uint32_t nsec;
} weir_time_t;

/* The wall clock as an EventTime. */
weir_time_t weir_time_now(void);

/* Size of one encoded EventTime: d7 00 + 8 bytes. */
#define WEIR_EVENTTIME_LEN 10
void weir_time_encode(weir_time_t t, char out[WEIR_EVENTTIME_LEN]);

/* The longest tag weir accepts, in bytes. Checked where tags enter (forward: the connection
 * is closed without an ack; HTTP: 400) and again by the buffer, which writes the tag into
 * chunk files and refuses at recovery what is longer: one bound on write and read, so an
 * acknowledged tag is never refused after a restart. 1024 because an S3 object key, where
 * ${tag} often goes, holds at most 1024 bytes, and the longest tags seen in practice
 * (Kubernetes container log paths) stay under 512. */
#define WEIR_TAG_MAX 1024

typedef struct weir_batch {
    char *tag; /* NUL-terminated, owned */
    size_t tag_len;
    weir_buf_t data; /* concatenated entries */
    uint32_t count;
    /* Smallest and largest event seconds (tmin > tmax while empty): lets the buffer see that a
     * whole batch falls into one time bucket without walking its entries. */
    uint32_t tmin, tmax;
} weir_batch_t;

void weir_batch_init(weir_batch_t *b, const char *tag, size_t tag_len);
void weir_batch_free(weir_batch_t *b);
/* Empties the entries, keeps the tag and the memory. */
void weir_batch_reset(weir_batch_t *b);
void weir_batch_set_tag(weir_batch_t *b, const char *tag, size_t tag_len);

/* Appends [time, record]; `record` must be the bytes of one valid msgpack map. */
void weir_batch_append(weir_batch_t *b, weir_time_t t, const char *record, size_t record_len);
/* Appends bytes that already are `n` canonical entries (validated by the caller) whose
 * seconds lie in [tmin, tmax]. */
void weir_batch_append_raw(weir_batch_t *b, const char *entries, size_t len, uint32_t n,
                           uint32_t tmin, uint32_t tmax);

/* Walks the entries of a batch. The record pointer points into the batch. */
typedef struct weir_entry {
    weir_time_t time;
    const char *record; /* msgpack map */
    size_t record_len;
} weir_entry_t;

typedef struct weir_batch_iter {
    const char *p;
    const char *end;
} weir_batch_iter_t;

void weir_batch_iter_init(weir_batch_iter_t *it, const char *data, size_t len);
/* Returns 1 and fills *e, 0 at the end, -1 if the bytes are not canonical entries. */
int weir_batch_iter_next(weir_batch_iter_t *it, weir_entry_t *e);

#endif
