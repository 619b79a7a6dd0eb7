/* The chunk file format (docs/buffer-format.md): a run of records, each a 16-byte header and a
 * payload, the first record the chunk's metadata, every later one a batch of events (type 2: of the
 * chunk's tag; type 3: of the tag that opens its payload, for chunks that hold several tags).
 *
 *   0  u16 magic 0x5752 ("WR")   2  u8 type (1 meta, 2, 3 events)   3  u8 version (1)
 *   4  u32 payload length        8  u32 event count              12 u32 CRC-32C of bytes 0..11
 *                                                                      and the payload
 * All integers big-endian. Invariant: a chunk file is always a run of whole, checksummed
 * records followed by at most one torn tail, which recovery cuts off. */
#ifndef WEIR_CHUNKFILE_H
#define WEIR_CHUNKFILE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "weir/buffer.h"
#include "weir/common.h"
#include "weir/event.h"
#include "weir/mp.h"

#define CHUNK_MAGIC 0x5752
#define CHUNK_VERSION 1
#define CHUNK_HDR_LEN 16
#define CHUNK_REC_META 1
#define CHUNK_REC_EVENTS 2  /* payload: the entries; their tag is the chunk's (meta) */
#define CHUNK_REC_TAGGED 3  /* payload: msgpack str (the tag, <= WEIR_TAG_MAX), then the entries */
#define CHUNK_TAG_HDR_MAX 3 /* msgpack str header of a tag of at most WEIR_TAG_MAX bytes */
/* A meta record larger than this is garbage. It is also checked on write: the largest meta
 * the limits allow (a WEIR_TAG_MAX tag, WEIR_BUFFER_MAX_KEYS record keys of at most
 * WEIR_BUFFER_MAX_KEY_LEN bytes with values of WEIR_BUFFER_MAX_VAR_LEN) fits well within it,
 * so what was acknowledged is never refused at recovery. */
#define CHUNK_META_MAX (64 * 1024)
_Static_assert(WEIR_TAG_MAX +
                       WEIR_BUFFER_MAX_KEYS *
                           (WEIR_BUFFER_MAX_KEY_LEN + WEIR_BUFFER_MAX_VAR_LEN + 10) +
                       256 <=
                   CHUNK_META_MAX,
               "the largest metadata the limits allow must fit CHUNK_META_MAX");

typedef struct chunk_meta {
    uint8_t id[16];
    bool has_timekey;
    int64_t timekey;
    char *tag; /* NULL when tag is not a chunk key */
    size_t nvars;
    char **var_keys;
    char **var_values;
    int64_t created; /* epoch seconds */
} chunk_meta_t;

void chunk_meta_free(chunk_meta_t *m);
/* Encodes the meta record payload (msgpack) into out. */
void chunk_meta_encode(const chunk_meta_t *m, weir_buf_t *out);
int chunk_meta_decode(const char *p, size_t len, chunk_meta_t *m, weir_err_t *err);

/* The pieces of a metadata map that weir's own meta record and Fluentd's .meta share, so that
 * both readers hold them to one set of bounds. A string key equal to s: */
bool chunk_meta_key_is(const weir_mp_obj_t *k, const char *s);
/* A tag value: a string of at most WEIR_TAG_MAX bytes, once. 0, or -1 when refused. */
int chunk_meta_take_tag(chunk_meta_t *m, const weir_mp_obj_t *v);
/* The `n` pairs of a variables map that open at p: string keys, at most WEIR_BUFFER_MAX_KEYS
 * (as <buffer> allows), once; string values, or with `any_value` any value (read as ""). 0, or
 * -1 when refused (what was taken stays in m for chunk_meta_free). */
int chunk_meta_take_vars(chunk_meta_t *m, const char *p, const char *end, uint32_t n,
                         bool any_value);

/* Writes a record header for `payload` into hdr. */
void chunk_record_header(char hdr[CHUNK_HDR_LEN], int type, const char *payload, size_t len,
                         uint32_t count);
/* The same for a payload in `n` pieces (written with one writev after the header). */
void chunk_record_header_v(char hdr[CHUNK_HDR_LEN], int type, const struct iovec *parts, int n,
                           uint32_t count);
/* The msgpack str header that opens a CHUNK_REC_TAGGED payload; returns its length. */
size_t chunk_tag_header(char out[CHUNK_TAG_HDR_MAX], size_t tag_len);

/* One events record, as read back. */
typedef struct chunk_run {
    const char *entries;
    size_t len;
    uint32_t count;
    const char *tag; /* CHUNK_REC_TAGGED: the tag (not NUL-terminated); else NULL */
    size_t tag_len;
} chunk_run_t;

/* Splits the payload of an events record of `type` into its tag and entries. Returns 0, or
 * -1 when a tagged payload does not open with a tag of at most WEIR_TAG_MAX bytes. */
int chunk_run_parse(int type, const char *payload, size_t len, uint32_t count, chunk_run_t *run);

/* What recovery found in a chunk file. */
typedef struct chunk_scan {
    bool meta_ok; /* the first record is a valid meta record */
    chunk_meta_t meta;
    off_t good_end;  /* end of the last whole, valid record */
    uint64_t events; /* events in the valid records */
    uint32_t records;
    off_t file_size;
    bool torn_tail;      /* bytes after good_end that end before a whole record (a cut write) */
    bool corrupt;        /* a whole record after good_end fails its checksum */
    uint64_t bad_events; /* events the bad part claims to hold (best effort) */
    uint32_t bad_min_sec, bad_max_sec; /* time range of events readable in the bad part */
} chunk_scan_t;

/* Reads the file at fd from the start and classifies it. Returns 0, or -1 on an I/O error. */
int chunk_scan_fd(int fd, chunk_scan_t *s, weir_err_t *err);

/* Sequential reading of the events records of a chunk file, or of records held in memory (a
 * memory chunk keeps the same records, without the metadata). */
typedef struct chunk_reader {
    int fd;          /* -1 when reading memory */
    const char *mem; /* records in memory */
    off_t off, end;
    char *path;
    weir_buf_t payload;
    uint64_t events;
} chunk_reader_t;

int chunk_reader_open(chunk_reader_t *r, const char *path, off_t end, weir_err_t *err);
void chunk_reader_open_mem(chunk_reader_t *r, const char *records, size_t len);
/* 1 = a run of entries (valid until the next call), 0 = end, -1 = error. */
int chunk_reader_next(chunk_reader_t *r, chunk_run_t *run, weir_err_t *err);
void chunk_reader_close(chunk_reader_t *r);

#endif
