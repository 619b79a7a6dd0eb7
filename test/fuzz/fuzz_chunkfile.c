/* libFuzzer target for chunk file recovery (src/buffer/chunkfile.h): the input is a chunk file
 * as a foreign volume might hold it. Its first byte chooses how the rest is used: with bit 0
 * set, the checksum of every record whose header and payload fit is recomputed first (walking
 * the headers' lengths), so mutations reach the metadata decoder and the events payloads
 * instead of stopping at the CRC; otherwise the bytes are the file as they are. The file lives
 * in a memfd; recovery scans it (chunk_scan_fd), then the reader reads the good part and the
 * whole file (chunk_reader_*) and every payload is walked as entries, as delivery would.
 *
 * Beyond the sanitizers, it aborts when recovery's promises break: good_end within the file
 * and at a record boundary, at most one of torn tail / corruption, the whole file good when
 * neither, metadata decoded exactly when a record was kept, and the reader finding in the good
 * part exactly the records and events the scan counted, with no checksum error.
 *
 * Seeds: test/fuzz/make_corpus.py fuzz_chunkfile DIR. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../src/buffer/chunkfile.h"
#include "weir/crc32c.h"
#include "weir/event.h"
#include "weir/log.h"

#define FUZZ_REPAIR_CRC 0x01 /* first byte: recompute the records' checksums */

static int memfd = -1;
static char memfd_path[64];

static void check(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz_chunkfile: invariant broken: %s\n", what);
    abort();
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Writes the CRC-32C each record header would need, for every record that fits. */
static void repair_crcs(unsigned char *f, size_t len)
{
    size_t off = 0;
    while (len - off >= CHUNK_HDR_LEN) {
        uint32_t plen = get32(f + off + 4);
        if (plen > len - off - CHUNK_HDR_LEN) return;
        uint32_t crc = weir_crc32c(weir_crc32c(0, f + off, 12), f + off + CHUNK_HDR_LEN, plen);
        f[off + 12] = (unsigned char)(crc >> 24);
        f[off + 13] = (unsigned char)(crc >> 16);
        f[off + 14] = (unsigned char)(crc >> 8);
        f[off + 15] = (unsigned char)crc;
        off += CHUNK_HDR_LEN + plen;
    }
}

/* Walks a run's entries as delivery does; the count in the header is not checked against
 * them (a foreign file may lie, with a valid checksum), only that walking stays in bounds. */
static void walk_entries(const chunk_run_t *run)
{
    weir_batch_iter_t it;
    weir_entry_t e;
    weir_batch_iter_init(&it, run->entries, run->len);
    while (weir_batch_iter_next(&it, &e) == 1)
        ;
}

/* The decoded metadata must survive encode + decode unchanged (what weir writes when it
 * rewrites a recovered chunk's metadata). */
static void check_meta_roundtrip(const chunk_meta_t *m)
{
    weir_buf_t b;
    weir_buf_init(&b);
    chunk_meta_encode(m, &b);
    chunk_meta_t d;
    check(chunk_meta_decode(b.data, b.len, &d, NULL) == 0, "re-encoded metadata does not decode");
    check(memcmp(d.id, m->id, 16) == 0, "metadata id changed in a round trip");
    check(d.has_timekey == m->has_timekey && d.timekey == m->timekey,
          "metadata timekey changed in a round trip");
    check((d.tag == NULL) == (m->tag == NULL) && (!d.tag || strcmp(d.tag, m->tag) == 0),
          "metadata tag changed in a round trip");
    check(d.nvars == m->nvars, "metadata vars changed in a round trip");
    for (size_t i = 0; i < d.nvars; i++)
        check(strcmp(d.var_keys[i], m->var_keys[i]) == 0 &&
                  strcmp(d.var_values[i], m->var_values[i]) == 0,
              "a metadata var changed in a round trip");
    chunk_meta_free(&d);
    weir_buf_free(&b);
}

/* Reads the records up to `end` (0: the whole file). Returns the events records read; sets
 * *events to their counts' sum and *failed when the reader reported an error. */
static uint32_t read_records(off_t end, uint64_t *events, bool *failed)
{
    chunk_reader_t r;
    weir_err_t err;
    *events = 0;
    *failed = false;
    check(chunk_reader_open(&r, memfd_path, end, &err) == 0, "the reader cannot open the memfd");
    uint32_t n = 0;
    chunk_run_t run;
    int rc;
    while ((rc = chunk_reader_next(&r, &run, &err)) == 1) {
        walk_entries(&run);
        *events += run.count;
        n++;
    }
    check(rc == 0 || rc == -1, "the reader returned something else than 1, 0 or -1");
    *failed = rc == -1;
    check(r.events == *events, "the reader's event total differs from its records' counts");
    chunk_reader_close(&r);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memfd < 0) {
        weir_log_set_level(WEIR_LOG_FATAL);
        memfd = memfd_create("fuzz_chunkfile", MFD_CLOEXEC);
        check(memfd >= 0, "memfd_create failed");
        snprintf(memfd_path, sizeof memfd_path, "/proc/self/fd/%d", memfd);
    }
    if (size == 0) return 0;
    size_t len = size - 1;
    unsigned char *file = malloc(len ? len : 1);
    memcpy(file, data + 1, len);
    if (data[0] & FUZZ_REPAIR_CRC) repair_crcs(file, len);
    check(ftruncate(memfd, 0) == 0, "ftruncate failed");
    check(len == 0 || pwrite(memfd, file, len, 0) == (ssize_t)len, "pwrite failed");
    free(file);

    chunk_scan_t s;
    weir_err_t err;
    check(chunk_scan_fd(memfd, &s, &err) == 0, "recovery failed on a readable file");
    check(s.file_size == (off_t)len, "recovery saw another file size");
    check(s.good_end >= 0 && s.good_end <= s.file_size, "good_end outside the file");
    check(!(s.torn_tail && s.corrupt), "both a torn tail and corruption");
    check(s.torn_tail || s.corrupt || s.good_end == s.file_size,
          "neither torn nor corrupt, yet not all of the file is good");
    check(s.meta_ok == (s.records > 0), "records kept without metadata, or metadata not counted");
    check(s.corrupt || (s.bad_events == 0 && s.bad_min_sec == 0 && s.bad_max_sec == 0),
          "a survey of a bad part that is not there");
    if (s.meta_ok) check_meta_roundtrip(&s.meta);

    uint64_t events;
    bool failed;
    if (s.good_end > 0) {
        uint32_t n = read_records(s.good_end, &events, &failed);
        check(!failed, "the reader found a bad record in the part recovery kept");
        check(n == s.records - 1, "the reader found another number of records than recovery");
        check(events == s.events, "the reader found another number of events than recovery");
    }
    read_records(0, &events, &failed); /* the uncut file: may fail, must not crash */
    chunk_meta_free(&s.meta);
    return 0;
}
