/* The buffer as a unit, driven without an engine (a uv loop, no metrics, a space callback, a
 * sink that holds the chunks it is handed): append and rollback, group commit covering exactly
 * the acknowledged batches, enqueue on timekey, the per-chunk retry schedule, the directory
 * fsyncs, and recovery of every torn state a crash can leave. Below those, the chunk file
 * format (src/buffer/chunkfile.c) and CRC-32C: what recovery decides for whole, torn and
 * damaged files, byte by byte. The same life cycle through the real binary and real clients
 * is test/integration/test_buffer_durability.py.
 *
 * fsync and fdatasync are interposed (defined here, so the buffer's calls land here and go on
 * to the kernel by syscall): each call is recorded with the file's size at that moment, which
 * is what a sync makes durable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <uv.h>

#include "../../src/buffer/buffer_internal.h"
#include "../../src/buffer/chunkfile.h"
#include "weir/buffer.h"
#include "weir/config.h"
#include "weir/crc32c.h"
#include "weir/event.h"
#include "weir/log.h"

uint32_t weir_crc32c_sw(uint32_t crc, const void *data, size_t n);

static void test_crc32c_known_vector(void **state)
{
    /* the CRC-32C check value (RFC 3720 / iSCSI) */
    assert_int_equal(weir_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(weir_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    /* 32 bytes of zeros, RFC 3720 B.4 */
    char zeros[32] = {0};
    assert_int_equal(weir_crc32c(0, zeros, 32), 0x8A9136AAu);
}

static void test_crc32c_hw_equals_sw_and_is_incremental(void **state)
{
    unsigned char buf[4099];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    for (size_t n = 0; n < sizeof buf; n += 97) {
        uint32_t a = weir_crc32c(0, buf, n);
        assert_int_equal(a, weir_crc32c_sw(0, buf, n));
        size_t half = n / 3;
        assert_int_equal(a, weir_crc32c(weir_crc32c(0, buf, half), buf + half, n - half));
    }
}

static void test_meta_roundtrip(void **state)
{
    chunk_meta_t m = {0};
    for (int i = 0; i < 16; i++)
        m.id[i] = (uint8_t)i;
    m.has_timekey = true;
    m.timekey = 1704067200;
    m.tag = strdup("app.web");
    m.nvars = 1;
    m.var_keys = calloc(1, sizeof(char *));
    m.var_values = calloc(1, sizeof(char *));
    m.var_keys[0] = strdup("namespace");
    m.var_values[0] = strdup("prod");
    m.created = 1704067201;
    weir_buf_t b;
    weir_buf_init(&b);
    chunk_meta_encode(&m, &b);
    chunk_meta_t d;
    assert_int_equal(chunk_meta_decode(b.data, b.len, &d, NULL), 0);
    assert_memory_equal(d.id, m.id, 16);
    assert_true(d.has_timekey);
    assert_int_equal(d.timekey, 1704067200);
    assert_string_equal(d.tag, "app.web");
    assert_int_equal(d.nvars, 1);
    assert_string_equal(d.var_values[0], "prod");
    assert_int_equal(d.created, 1704067201);
    /* every truncation of the meta is rejected, never read past */
    for (size_t n = 0; n < b.len; n++) {
        chunk_meta_t t;
        assert_int_equal(chunk_meta_decode(b.data, n, &t, NULL), -1);
    }
    chunk_meta_free(&d);
    chunk_meta_free(&m);
    weir_buf_free(&b);
}

/* WEIR_TAG_MAX bounds the tag in the metadata on read as the inputs bound it on the way in:
 * a tag exactly at the limit round-trips, one byte more is refused. */
static void test_meta_tag_at_and_past_the_limit(void **state)
{
    for (size_t n = WEIR_TAG_MAX; n <= WEIR_TAG_MAX + 1; n++) {
        chunk_meta_t m = {0};
        m.tag = malloc(n + 1);
        memset(m.tag, 't', n);
        m.tag[n] = '\0';
        weir_buf_t b;
        weir_buf_init(&b);
        chunk_meta_encode(&m, &b);
        assert_true(b.len <= CHUNK_META_MAX);
        chunk_meta_t d;
        int rc = chunk_meta_decode(b.data, b.len, &d, NULL);
        if (n == WEIR_TAG_MAX) {
            assert_int_equal(rc, 0);
            assert_int_equal(strlen(d.tag), WEIR_TAG_MAX);
            chunk_meta_free(&d);
        } else {
            assert_int_equal(rc, -1);
        }
        chunk_meta_free(&m);
        weir_buf_free(&b);
    }
}

/* Writes a chunk file of a meta record and `n` events records of 3 events each. Returns the
 * file size; offs[] receives each record's offset. */
static off_t write_chunk(const char *path, int n, off_t *offs)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    chunk_meta_t m = {0};
    m.created = 1;
    weir_buf_t meta;
    weir_buf_init(&meta);
    chunk_meta_encode(&m, &meta);
    char hdr[CHUNK_HDR_LEN];
    chunk_record_header(hdr, CHUNK_REC_META, meta.data, meta.len, 0);
    off_t off = 0;
    offs[0] = 0;
    assert_int_equal(write(fd, hdr, sizeof hdr), sizeof hdr);
    assert_int_equal(write(fd, meta.data, meta.len), (ssize_t)meta.len);
    off += CHUNK_HDR_LEN + (off_t)meta.len;
    for (int i = 0; i < n; i++) {
        weir_batch_t b;
        weir_batch_init(&b, "t", 1);
        for (int k = 0; k < 3; k++) {
            weir_time_t t = {1700000000u + (uint32_t)i, (uint32_t)k};
            weir_batch_append(&b, t, "\x81\xa1k\xa1v", 5);
        }
        chunk_record_header(hdr, CHUNK_REC_EVENTS, b.data.data, b.data.len, b.count);
        offs[i + 1] = off;
        assert_int_equal(write(fd, hdr, sizeof hdr), sizeof hdr);
        assert_int_equal(write(fd, b.data.data, b.data.len), (ssize_t)b.data.len);
        off += CHUNK_HDR_LEN + (off_t)b.data.len;
        weir_batch_free(&b);
    }
    close(fd);
    weir_buf_free(&meta);
    return off;
}

static void scan_path(const char *path, chunk_scan_t *s)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(chunk_scan_fd(fd, s, NULL), 0);
    close(fd);
}

static void test_whole_file(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    close(mkstemp(path));
    off_t offs[8];
    off_t size = write_chunk(path, 5, offs);
    chunk_scan_t s;
    scan_path(path, &s);
    assert_true(s.meta_ok);
    assert_false(s.torn_tail);
    assert_false(s.corrupt);
    assert_int_equal(s.events, 15);
    assert_int_equal(s.records, 6);
    assert_int_equal(s.good_end, size);
    chunk_meta_free(&s.meta);
    chunk_reader_t r;
    assert_int_equal(chunk_reader_open(&r, path, 0, NULL), 0);
    uint32_t records = 0;
    chunk_run_t run;
    while (chunk_reader_next(&r, &run, NULL) == 1) {
        assert_int_equal(run.count, 3);
        assert_null(run.tag);
        records++;
    }
    assert_int_equal(records, 5);
    assert_int_equal(r.events, 15);
    chunk_reader_close(&r);
    unlink(path);
}

/* Cutting the file at any byte leaves the records before the cut and calls the rest torn. */
static void test_every_truncation_is_a_torn_tail(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    close(mkstemp(path));
    off_t offs[8];
    off_t size = write_chunk(path, 3, offs);
    for (off_t cut = 1; cut < size; cut++) {
        write_chunk(path, 3, offs);
        assert_int_equal(truncate(path, cut), 0);
        chunk_scan_t s;
        scan_path(path, &s);
        assert_false(s.corrupt);
        offs[4] = size; /* the end of record r is offs[r + 1] */
        int whole = 0;
        for (int r = 1; r <= 3; r++)
            whole += offs[r + 1] <= cut;
        if (cut < offs[1]) {
            assert_false(s.meta_ok);
            assert_int_equal(s.events, 0);
        } else {
            assert_true(s.meta_ok);
            assert_int_equal(s.events, (uint64_t)whole * 3);
            assert_int_equal(s.good_end, offs[whole + 1]);
        }
        assert_true(s.torn_tail || s.good_end == cut);
        chunk_meta_free(&s.meta);
    }
    unlink(path);
}

/* Flipping any byte of an events record is caught by its checksum; the records before it
 * are kept and the damaged part's claim is reported. */
static void test_every_flipped_byte_is_caught(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    close(mkstemp(path));
    off_t offs[8];
    off_t size = write_chunk(path, 4, offs);
    for (off_t at = offs[1]; at < size; at++) {
        write_chunk(path, 4, offs);
        int fd = open(path, O_RDWR);
        unsigned char ch;
        assert_int_equal(pread(fd, &ch, 1, at), 1);
        ch ^= 0x5a;
        assert_int_equal(pwrite(fd, &ch, 1, at), 1);
        close(fd);
        chunk_scan_t s;
        scan_path(path, &s);
        int rec = 1;
        while (rec < 4 && offs[rec + 1] <= at)
            rec++;
        /* a damaged length may also look like a cut write; either way nothing after it */
        assert_true(s.corrupt || s.torn_tail);
        assert_int_equal(s.events, (uint64_t)(rec - 1) * 3);
        assert_int_equal(s.good_end, offs[rec]);
        chunk_meta_free(&s.meta);
    }
    unlink(path);
}

/* Writes one CHUNK_REC_TAGGED record of 2 events of `tag` (tag_len bytes) at the end of fd. */
static void put_tagged(int fd, const char *tag, size_t tag_len)
{
    weir_batch_t b;
    weir_batch_init(&b, "x", 1);
    for (int k = 0; k < 2; k++)
        weir_batch_append(&b, (weir_time_t){1700000000u, (uint32_t)k}, "\x81\xa1k\xa1v", 5);
    char hdr[CHUNK_HDR_LEN], th[CHUNK_TAG_HDR_MAX];
    struct iovec iov[4] = {{hdr, CHUNK_HDR_LEN},
                           {th, chunk_tag_header(th, tag_len)},
                           {(void *)tag, tag_len},
                           {b.data.data, b.data.len}};
    chunk_record_header_v(hdr, CHUNK_REC_TAGGED, iov + 1, 3, b.count);
    assert_true(lseek(fd, 0, SEEK_END) >= 0);
    assert_true(writev(fd, iov, 4) > 0);
    weir_batch_free(&b);
}

/* A chunk of several tags: each tagged record gives its own tag back with its entries, whatever
 * the tag's msgpack header length (fixstr, str 8, str 16, up to WEIR_TAG_MAX bytes). */
static void test_tagged_records_keep_each_batch_tag(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    close(mkstemp(path));
    off_t offs[8];
    write_chunk(path, 1, offs);
    static char longtag[WEIR_TAG_MAX];
    memset(longtag, 'L', sizeof longtag);
    const size_t lens[] = {5, 31, 32, 255, 256, WEIR_TAG_MAX};
    int fd = open(path, O_WRONLY);
    for (size_t i = 0; i < 6; i++)
        put_tagged(fd, longtag, lens[i]);
    close(fd);
    chunk_scan_t s;
    scan_path(path, &s);
    assert_false(s.corrupt || s.torn_tail);
    assert_int_equal(s.events, 3 + 6 * 2);
    chunk_meta_free(&s.meta);
    chunk_reader_t r;
    assert_int_equal(chunk_reader_open(&r, path, 0, NULL), 0);
    chunk_run_t run;
    assert_int_equal(chunk_reader_next(&r, &run, NULL), 1);
    assert_null(run.tag); /* type 2: the chunk's tag */
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(chunk_reader_next(&r, &run, NULL), 1);
        assert_int_equal(run.tag_len, lens[i]);
        assert_memory_equal(run.tag, longtag, lens[i]);
        assert_int_equal(run.count, 2);
        weir_batch_iter_t it;
        weir_entry_t e;
        weir_batch_iter_init(&it, run.entries, run.len);
        int n = 0;
        while (weir_batch_iter_next(&it, &e) == 1)
            n++;
        assert_int_equal(n, 2);
    }
    assert_int_equal(chunk_reader_next(&r, &run, NULL), 0);
    chunk_reader_close(&r);
    unlink(path);
}

/* A checksummed tagged record whose tag is longer than WEIR_TAG_MAX was not written by weir:
 * recovery treats it as damage, never reads it as events. */
static void test_tagged_record_past_the_tag_limit_is_damage(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    close(mkstemp(path));
    off_t offs[8];
    off_t size = write_chunk(path, 1, offs);
    static char tag[WEIR_TAG_MAX + 1];
    memset(tag, 'T', sizeof tag);
    int fd = open(path, O_WRONLY);
    put_tagged(fd, tag, sizeof tag);
    close(fd);
    chunk_scan_t s;
    scan_path(path, &s);
    assert_true(s.corrupt);
    assert_int_equal(s.events, 3);
    assert_int_equal(s.good_end, size);
    chunk_meta_free(&s.meta);
    unlink(path);
}

static void test_garbage_is_not_metadata(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    int fd = mkstemp(path);
    char junk[300];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 37 + 1);
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    chunk_scan_t s;
    scan_path(path, &s);
    assert_false(s.meta_ok);
    assert_int_equal(s.events, 0);
    assert_int_equal(s.good_end, 0);
    unlink(path);
}

/* ---- the interposed syncs ------------------------------------------------------------ */

typedef struct sync_rec {
    dev_t dev;
    ino_t ino;
    off_t size; /* the file's size when the sync began: what it made durable, at least */
    bool dir;
    bool on_loop; /* called on the loop (test) thread, not by a sync round */
    char path[256];
} sync_rec_t;

#define MAX_SYNCS 8192
static sync_rec_t syncs[MAX_SYNCS];
static size_t nsyncs;
static pthread_mutex_t sync_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
/* hold_armed: the next fdatasync waits (on its worker thread) until hold_released;
 * hold_entered says that one has begun waiting */
static bool hold_armed, hold_released, hold_entered;
static pthread_t loop_thread; /* the thread the tests (and so the buffer's loop) run on */

static void sync_record(int fd, const struct stat *st)
{
    pthread_mutex_lock(&sync_mu);
    if (nsyncs < MAX_SYNCS) {
        sync_rec_t *r = &syncs[nsyncs++];
        r->dev = st->st_dev;
        r->ino = st->st_ino;
        r->size = st->st_size;
        r->dir = S_ISDIR(st->st_mode);
        r->on_loop = pthread_equal(pthread_self(), loop_thread);
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, r->path, sizeof r->path - 1);
        r->path[n > 0 ? n : 0] = '\0';
    }
    pthread_mutex_unlock(&sync_mu);
}

int fsync(int fd)
{
    struct stat st;
    int have = fstat(fd, &st) == 0;
    int rc = (int)syscall(SYS_fsync, fd);
    if (rc == 0 && have) sync_record(fd, &st);
    return rc;
}

int fdatasync(int fd)
{
    pthread_mutex_lock(&sync_mu);
    if (hold_armed) {
        hold_armed = false;
        hold_entered = true;
        while (!hold_released)
            pthread_cond_wait(&hold_cv, &sync_mu);
    }
    pthread_mutex_unlock(&sync_mu);
    struct stat st;
    int have = fstat(fd, &st) == 0;
    int rc = (int)syscall(SYS_fdatasync, fd);
    if (rc == 0 && have) sync_record(fd, &st);
    return rc;
}

static size_t fs_syncs_done, fs_syncs_on_loop;

int syncfs(int fd)
{
    int rc = (int)syscall(SYS_syncfs, fd);
    pthread_mutex_lock(&sync_mu);
    if (rc == 0) fs_syncs_done++;
    if (pthread_equal(pthread_self(), loop_thread)) fs_syncs_on_loop++;
    pthread_mutex_unlock(&sync_mu);
    return rc;
}

static size_t fs_syncs(void)
{
    pthread_mutex_lock(&sync_mu);
    size_t n = fs_syncs_done;
    pthread_mutex_unlock(&sync_mu);
    return n;
}

/* Whether a completed sync covers `path` up to `end` bytes. */
static bool synced_to(const struct stat *file, off_t end)
{
    bool ok = false;
    pthread_mutex_lock(&sync_mu);
    for (size_t i = 0; i < nsyncs && !ok; i++)
        ok = !syncs[i].dir && syncs[i].dev == file->st_dev && syncs[i].ino == file->st_ino &&
             syncs[i].size >= end;
    pthread_mutex_unlock(&sync_mu);
    return ok;
}

/* How many completed fsyncs of the directory `path` there were. */
static size_t dir_syncs(const char *path)
{
    size_t n = 0;
    pthread_mutex_lock(&sync_mu);
    for (size_t i = 0; i < nsyncs; i++)
        n += syncs[i].dir && strcmp(syncs[i].path, path) == 0;
    pthread_mutex_unlock(&sync_mu);
    return n;
}

/* How many completed fsyncs of the directory `path` ran on the loop thread. */
static size_t dir_syncs_on_loop(const char *path)
{
    size_t n = 0;
    pthread_mutex_lock(&sync_mu);
    for (size_t i = 0; i < nsyncs; i++)
        n += syncs[i].dir && syncs[i].on_loop && strcmp(syncs[i].path, path) == 0;
    pthread_mutex_unlock(&sync_mu);
    return n;
}

/* How many fdatasyncs of files ran on the loop thread. */
static size_t loop_syncs(void)
{
    size_t n = 0;
    pthread_mutex_lock(&sync_mu);
    for (size_t i = 0; i < nsyncs; i++)
        n += !syncs[i].dir && syncs[i].on_loop;
    pthread_mutex_unlock(&sync_mu);
    return n;
}

/* ---- a buffer without an engine ------------------------------------------------------ */

#define H_MAX_HANDED 64

typedef struct harness {
    uv_loop_t loop;
    weir_conf_section_t *root;
    weir_buffer_t *b;
    char dir[64];
    weir_chunk_t *handed[H_MAX_HANDED]; /* chunks the sink was given and not yet answered */
    size_t nhanded;
    int space_calls;
} harness_t;

static void h_sink_write(void *out, weir_chunk_t *c)
{
    harness_t *h = out;
    assert_true(h->nhanded < H_MAX_HANDED);
    h->handed[h->nhanded++] = c;
}

static void h_space(void *arg)
{
    ((harness_t *)arg)->space_calls++;
}

/* A file buffer in `dir` with chunk keys `keys` and `params` (lines of <buffer>). */
static void h_open(harness_t *h, const char *dir, const char *keys, const char *params)
{
    memset(h, 0, sizeof *h);
    snprintf(h->dir, sizeof h->dir, "%s", dir);
    assert_int_equal(uv_loop_init(&h->loop), 0);
    char text[2048];
    snprintf(text, sizeof text,
             "<buffer %s>\n@type file\npath %s\ntimekey_use_utc true\n%s\n</buffer>\n", keys, dir,
             params);
    weir_err_t err = {{0}};
    h->root = weir_conf_parse_string(text, strlen(text), "unit.conf", &err);
    if (!h->root) fail_msg("%s", err.msg);
    weir_buffer_env_t env = {.loop = &h->loop, .space_available = h_space, .arg = h};
    weir_buffer_defaults_t defs = {.chunk_keys = "time", .timekey = 86400};
    weir_buffer_sink_t sink = {.write = h_sink_write, .out = h};
    h->b = weir_buffer_new_env(&env, weir_conf_child(h->root, "buffer", 0), &defs, "unit", &sink,
                               &err);
    if (!h->b) fail_msg("%s", err.msg);
    if (weir_buffer_start(h->b, &err) != 0) fail_msg("%s", err.msg);
}

static void h_stopped(void *arg)
{
    *(bool *)arg = true;
}

/* Runs the loop until *flag is set (bounded: a broken buffer fails the test, never hangs it). */
static void h_run_until(harness_t *h, const bool *flag)
{
    for (int i = 0; i < 20000 && !*flag; i++)
        uv_run(&h->loop, UV_RUN_ONCE);
    assert_true(*flag);
}

/* Stops (without flushing: what is staged stays on disk, as after a crash that lost nothing)
 * and frees everything. */
static void h_close(harness_t *h)
{
    bool stopped = false;
    weir_buffer_stop(h->b, h_stopped, &stopped);
    h_run_until(h, &stopped);
    weir_buffer_free(h->b);
    uv_run(&h->loop, UV_RUN_DEFAULT); /* the timers' closes */
    assert_int_equal(uv_loop_close(&h->loop), 0);
    weir_conf_free(h->root);
}

/* Answers the i-th chunk the sink holds. */
static void h_answer(harness_t *h, size_t i, weir_write_status_t st)
{
    weir_chunk_t *c = h->handed[i];
    memmove(h->handed + i, h->handed + i + 1, (h->nhanded - i - 1) * sizeof *h->handed);
    h->nhanded--;
    weir_chunk_write_done(c, st, st == WEIR_WRITE_OK ? NULL : "unit test says no");
}

static char *mkdtemp_dir(void)
{
    char *d = strdup("/tmp/weir-unit-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

/* Removes a buffer directory and what is in it (one level of subdirectories: backup/). */
static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (unlink(p) != 0) rm_tree(p);
    }
    closedir(d);
    rmdir(dir);
}

/* The chunk files (buffer.[bq]*.chunk) in dir: how many, and the name of one of them. */
static int chunk_files(const char *dir, char *one, size_t onelen)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (strncmp(de->d_name, "buffer.", 7) != 0 || l < 6 || strcmp(de->d_name + l - 6, ".chunk"))
            continue;
        if (one) snprintf(one, onelen, "%s/%s", dir, de->d_name);
        n++;
    }
    closedir(d);
    return n;
}

/* A record {"seq": n} (n < 65536). */
static void seq_record(char rec[8], int n)
{
    memcpy(rec, "\x81\xa3seq\xcd", 6);
    rec[6] = (char)(n >> 8);
    rec[7] = (char)n;
}

/* A batch of `n` events seq first.., the i-th at time t0 + i * step. */
static void make_batch(weir_batch_t *b, const char *tag, uint32_t t0, uint32_t step, int first,
                       int n)
{
    weir_batch_init(b, tag, strlen(tag));
    for (int i = 0; i < n; i++) {
        char rec[8];
        seq_record(rec, first + i);
        weir_batch_append(b, (weir_time_t){t0 + (uint32_t)i * step, 0}, rec, sizeof rec);
    }
}

/* Appends the seqs and tags of a chunk's events to seqs[] / tags (one char per event: the
 * tag's first letter). Returns the new count. */
static size_t read_chunk(weir_chunk_t *c, int *seqs, size_t n, char *tags)
{
    weir_err_t err = {{0}};
    weir_chunk_reader_t *r = weir_chunk_reader_open(c, &err);
    assert_non_null(r);
    const char *entries;
    size_t len;
    uint32_t count;
    int rc;
    while ((rc = weir_chunk_reader_next(r, &entries, &len, &count, &err)) == 1) {
        weir_batch_iter_t it;
        weir_entry_t e;
        weir_batch_iter_init(&it, entries, len);
        uint32_t got = 0;
        while (weir_batch_iter_next(&it, &e) == 1) {
            assert_int_equal(e.record_len, 8);
            if (tags) tags[n] = weir_chunk_reader_tag(r)[0];
            seqs[n++] = ((unsigned char)e.record[6] << 8) | (unsigned char)e.record[7];
            got++;
        }
        assert_int_equal(got, count);
    }
    assert_int_equal(rc, 0);
    weir_chunk_reader_close(r);
    return n;
}

typedef struct ack {
    bool check;   /* the batch went to one chunk, whose coverage ack_cb checks */
    bool covered; /* ack_cb found the batch (and the new chunk's name) durable */
    bool done;
    int status;
    struct stat file; /* the chunk the batch went to */
    off_t end;        /* its size right after the append: the batch's last byte */
    const char *dir;
    size_t dir_syncs_before; /* directory fsyncs done before the append */
} ack_t;

/* An acknowledgement must come after a sync that covers the batch: its file's bytes up to the
 * batch's end, and (a new chunk) the directory entry. Noted here, asserted by the test (an
 * assertion inside a loop callback would leave the loop mid-run). */
static void ack_cb(void *arg, int status)
{
    ack_t *a = arg;
    a->done = true;
    a->status = status;
    a->covered = a->check && synced_to(&a->file, a->end) &&
                 (!a->dir || dir_syncs(a->dir) > a->dir_syncs_before);
}

/* Runs the loop until the batch is acknowledged, and checks the acknowledgement. */
static void h_acked(harness_t *h, ack_t *a)
{
    h_run_until(h, &a->done);
    assert_int_equal(a->status, 0);
    if (a->check) assert_true(a->covered);
}

/* Appends `batch` to a buffer whose only chunk file is the one it lands in; fills `a`. */
static weir_emit_result_t append_acked(harness_t *h, const weir_batch_t *batch, ack_t *a,
                                       bool new_chunk)
{
    memset(a, 0, sizeof *a);
    a->dir = new_chunk ? h->dir : NULL;
    a->dir_syncs_before = dir_syncs(h->dir);
    weir_emit_result_t r = weir_buffer_append(h->b, batch, ack_cb, a);
    char path[512];
    assert_int_equal(chunk_files(h->dir, path, sizeof path), 1);
    assert_int_equal(stat(path, &a->file), 0);
    a->end = a->file.st_size;
    a->check = true;
    return r;
}

/* ---- the buffer's invariants ---------------------------------------------------------- */

/* Each acknowledgement follows a sync covering its batch (ack_cb checks it), all events reach
 * the output in order, and a delivered chunk's file is removed. */
static void test_unit_append_ack_deliver(void **state)
{
    char *dir = mkdtemp_dir();
    harness_t h;
    h_open(&h, dir, "time", "timekey 3600\nflush_mode interval\nflush_interval 3600");
    ack_t acks[3];
    for (int i = 0; i < 3; i++) {
        weir_batch_t b;
        make_batch(&b, "app", 1700000000, 1, 10 * i, 10);
        assert_int_equal(append_acked(&h, &b, &acks[i], i == 0), WEIR_EMIT_PENDING);
        weir_batch_free(&b);
    }
    for (int i = 0; i < 3; i++)
        h_acked(&h, &acks[i]);
    weir_buffer_flush_all(h.b);
    assert_int_equal(h.nhanded, 1);
    int seqs[64];
    size_t n = read_chunk(h.handed[0], seqs, 0, NULL);
    assert_int_equal(n, 30);
    for (int i = 0; i < 30; i++)
        assert_int_equal(seqs[i], i);
    h_answer(&h, 0, WEIR_WRITE_OK);
    assert_int_equal(chunk_files(dir, NULL, 0), 0);
    weir_buffer_stats_t st;
    weir_buffer_get_stats(h.b, &st);
    assert_int_equal(st.events_written, 30);
    assert_int_equal(st.bytes, 0);
    h_close(&h);
    rm_tree(dir);
    free(dir);
}

/* Group commit: while the round that syncs a new chunk (and its directory entry) is held in
 * its fdatasync, a second batch to the same chunk gets a round of its own, which may finish
 * first. Its acknowledgement must still come after the directory fsync that makes the chunk's
 * name durable (ack_cb checks it): a round started while another's directory fsync runs
 * fsyncs the directory too. The held batch is acknowledged once its round ends. */
static void test_unit_group_commit_covers_exactly_the_acked(void **state)
{
    char *dir = mkdtemp_dir();
    harness_t h;
    h_open(&h, dir, "time", "timekey 3600\nflush_mode interval\nflush_interval 3600");
    pthread_mutex_lock(&sync_mu);
    hold_armed = true;
    hold_released = false;
    hold_entered = false;
    pthread_mutex_unlock(&sync_mu);
    weir_batch_t b1, b2;
    make_batch(&b1, "app", 1700000000, 1, 0, 5);
    make_batch(&b2, "app", 1700000000, 1, 5, 5);
    ack_t a1, a2;
    assert_int_equal(append_acked(&h, &b1, &a1, true), WEIR_EMIT_PENDING);
    /* b1's round is the one held: b2 goes in only once that round's fdatasync waits (else a
     * loaded pool could start b2's round first, hold it, and a2 would never come) */
    for (bool entered = false; !entered;) {
        uv_run(&h.loop, UV_RUN_NOWAIT);
        pthread_mutex_lock(&sync_mu);
        entered = hold_entered;
        pthread_mutex_unlock(&sync_mu);
        if (!entered) usleep(1000);
    }
    assert_int_equal(append_acked(&h, &b2, &a2, false), WEIR_EMIT_PENDING);
    a2.dir = dir; /* the chunk's name must be durable before b2 is acknowledged too */
    a2.dir_syncs_before = a1.dir_syncs_before;
    h_run_until(&h, &a2.done);
    bool a1_early = a1.done; /* its round is still held */
    pthread_mutex_lock(&sync_mu);
    hold_released = true;
    pthread_cond_broadcast(&hold_cv);
    pthread_mutex_unlock(&sync_mu);
    h_acked(&h, &a1);
    assert_false(a1_early);
    assert_true(a2.covered);
    weir_batch_free(&b1);
    weir_batch_free(&b2);
    h_close(&h);
    rm_tree(dir);
    free(dir);
}

/* Rollback: a batch that fails half way (its last entry is not an event) after writing to an
 * existing chunk and creating another is refused, the existing chunk is cut back to its size
 * before, the created chunk is removed (no empty chunk stays), and only the first batch is
 * delivered. */
static void test_unit_rollback_leaves_nothing(void **state)
{
    char *dir = mkdtemp_dir();
    harness_t h;
    h_open(&h, dir, "time", "timekey 60\nflush_mode interval\nflush_interval 3600");
    weir_batch_t b1;
    make_batch(&b1, "app", 1700000000, 1, 0, 3);
    ack_t a1;
    assert_int_equal(append_acked(&h, &b1, &a1, true), WEIR_EMIT_PENDING);
    h_acked(&h, &a1);
    weir_buffer_stats_t before;
    weir_buffer_get_stats(h.b, &before);
    /* two events in the first bucket, two 120 s later (a new chunk), then garbage */
    weir_batch_t b2;
    make_batch(&b2, "app", 1700000000, 60, 100, 4);
    weir_batch_append_raw(&b2, "\xc1", 1, 1, 1700000000, 1700000180);
    assert_int_equal(weir_buffer_append(h.b, &b2, ack_cb, NULL), WEIR_EMIT_ERROR);
    char path[512];
    assert_int_equal(chunk_files(dir, path, sizeof path), 1);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, a1.end);
    weir_buffer_stats_t after;
    weir_buffer_get_stats(h.b, &after);
    assert_int_equal(after.bytes, before.bytes);
    assert_int_equal(after.staged_chunks, 1);
    weir_buffer_flush_all(h.b);
    assert_int_equal(h.nhanded, 1);
    int seqs[16];
    assert_int_equal(read_chunk(h.handed[0], seqs, 0, NULL), 3);
    h_answer(&h, 0, WEIR_WRITE_OK);
    weir_batch_free(&b1);
    weir_batch_free(&b2);
    h_close(&h);
    rm_tree(dir);
    free(dir);
}

/* One batch spanning 200 time buckets (timekey 60) lands whole: 200 chunks, every event once,
 * each chunk's events in its own bucket. */
static void test_unit_batch_over_200_buckets(void **state)
{
    char *dir = mkdtemp_dir();
    harness_t h;
    h_open(&h, dir, "time", "timekey 60\nflush_mode interval\nflush_interval 3600");
    weir_batch_t b;
    make_batch(&b, "app", 1700000040, 30, 0, 400);
    ack_t a = {0};
    assert_int_equal(weir_buffer_append(h.b, &b, ack_cb, &a), WEIR_EMIT_PENDING);
    h_acked(&h, &a);
    assert_int_equal(chunk_files(dir, NULL, 0), 200);
    weir_buffer_flush_all(h.b);
    int seen[400] = {0};
    for (int round = 0; round < 200; round++) {
        assert_int_equal(h.nhanded, 1);
        int64_t tk;
        assert_true(weir_chunk_timekey(h.handed[0], &tk));
        int seqs[8];
        size_t n = read_chunk(h.handed[0], seqs, 0, NULL);
        assert_int_equal(n, 2);
        for (size_t i = 0; i < n; i++) {
            int64_t t = 1700000040 + 30 * seqs[i];
            assert_int_equal(t - t % 60, tk);
            seen[seqs[i]]++;
        }
        h_answer(&h, 0, WEIR_WRITE_OK);
    }
    for (int i = 0; i < 400; i++)
        assert_int_equal(seen[i], 1);
    weir_batch_free(&b);
    h_close(&h);
    rm_tree(dir);
    free(dir);
}

/* BUF_DIRTY_FDS_MAX: a batch spanning exactly that many chunks keeps a duplicate of each for
 * its sync round; with one chunk more, the round syncs the file system (syncfs) instead of
 * holding one more descriptor. Nothing is synced on the loop thread, and both batches are
 * acknowledged whole, after their round. */
static void test_unit_dirty_descriptors_at_and_past_the_limit(void **state)
{
    for (int n = BUF_DIRTY_FDS_MAX; n <= BUF_DIRTY_FDS_MAX + 1; n++) {
        char *dir = mkdtemp_dir();
        harness_t h;
        h_open(&h, dir, "time", "timekey 60\nflush_mode interval\nflush_interval 3600");
        weir_batch_t b;
        make_batch(&b, "app", 1700000000, 60, 0, n);
        size_t before = loop_syncs(), fs_before = fs_syncs();
        ack_t a = {0};
        assert_int_equal(weir_buffer_append(h.b, &b, ack_cb, &a), WEIR_EMIT_PENDING);
        assert_int_equal(loop_syncs() - before, 0);
        h_acked(&h, &a);
        assert_int_equal(fs_syncs() - fs_before, n == BUF_DIRTY_FDS_MAX ? 0 : 1);
        assert_int_equal(fs_syncs_on_loop, 0);
        assert_int_equal(chunk_files(dir, NULL, 0), n);
        weir_batch_free(&b);
        h_close(&h);
        rm_tree(dir);
        free(dir);
    }
}

/* A chunk whose time bucket (plus timekey_wait) has closed is enqueued and handed to the
 * output; the chunk of the current bucket stays staged. */
static void test_unit_enqueue_on_timekey(void **state)
{
    char *dir = mkdtemp_dir();
    harness_t h;
    h_open(&h, dir, "time", "timekey 60\ntimekey_wait 0");
    weir_batch_t old, now;
    make_batch(&old, "app", 1700000000, 1, 0, 2);
    uint32_t t = weir_time_now().sec;
    make_batch(&now, "app", t, 0, 2, 2);
    ack_t a1 = {0}, a2 = {0};
    assert_int_equal(weir_buffer_append(h.b, &old, ack_cb, &a1), WEIR_EMIT_PENDING);
    assert_int_equal(weir_buffer_append(h.b, &now, ack_cb, &a2), WEIR_EMIT_PENDING);
    h_acked(&h, &a1);
    h_acked(&h, &a2);
    buf_enqueue_ready(h.b);
    buf_dispatch(h.b);
    assert_int_equal(h.nhanded, 1);
    int64_t tk;
    assert_true(weir_chunk_timekey(h.handed[0], &tk));
    assert_int_equal(tk, 1700000000 - 1700000000 % 60);
    weir_buffer_stats_t st;
    weir_buffer_get_stats(h.b, &st);
    assert_int_equal(st.staged_chunks, 1); /* the current bucket's chunk */
    h_answer(&h, 0, WEIR_WRITE_OK);
    weir_batch_free(&old);
    weir_batch_free(&now);
    h_close(&h);
    rm_tree(dir);
    free(dir);
}

/* Answers a chunk with RETRY and checks the wait it was given: retry_wait * base^steps. */
static weir_chunk_t *fail_and_check_wait(harness_t *h, double want)
{
    weir_chunk_t *c = h->handed[0];
    double t0 = buf_mono_now();
    h_answer(h, 0, WEIR_WRITE_RETRY);
    double t1 = buf_mono_now();
    assert_true(c->next_try - t1 <= want + 1e-9 && c->next_try - t0 >= want - 1e-9);
    return c;
}

/* Retries are per chunk: a failing chunk waits 1, 2, 4 s (retry_wait 1, base 2, no jitter)
 * while another chunk is delivered meanwhile; when retry_max_times runs out it moves to
 * backup/ whole, and backup/ is fsynced once it holds it (its only copy), on a worker
 * thread, not the loop's. */
static void test_unit_retry_schedule_per_chunk(void **state)
{
    char *dir = mkdtemp_dir();
    harness_t h;
    h_open(&h, dir, "time",
           "timekey 60\nflush_mode interval\nflush_interval 3600\nretry_wait 1\n"
           "retry_exponential_backoff_base 2\nretry_randomize false\nretry_max_times 3\n"
           "flush_thread_count 2");
    weir_batch_t b;
    make_batch(&b, "app", 1700000000, 120, 0, 2); /* two buckets: two chunks */
    ack_t a = {0};
    assert_int_equal(weir_buffer_append(h.b, &b, ack_cb, &a), WEIR_EMIT_PENDING);
    h_acked(&h, &a);
    weir_buffer_flush_all(h.b);
    assert_int_equal(h.nhanded, 2);
    weir_chunk_t *bad = fail_and_check_wait(&h, 1);
    char id[33];
    snprintf(id, sizeof id, "%s", weir_chunk_id_hex(bad));
    /* the other chunk is not held back by the failing one */
    assert_int_equal(h.nhanded, 1);
    h_answer(&h, 0, WEIR_WRITE_OK);
    assert_int_equal(chunk_files(dir, NULL, 0), 1);
    for (int step = 1; step <= 2; step++) {
        bad->next_try = 0; /* skip the wait */
        buf_dispatch(h.b);
        assert_int_equal(h.nhanded, 1);
        fail_and_check_wait(&h, step == 1 ? 2 : 4);
    }
    bad->next_try = 0;
    buf_dispatch(h.b);
    char backup_dir[128], backup[256];
    snprintf(backup_dir, sizeof backup_dir, "%s/backup", dir);
    snprintf(backup, sizeof backup, "%s/%s.chunk", backup_dir, id);
    size_t before = dir_syncs(backup_dir);
    h_answer(&h, 0, WEIR_WRITE_RETRY); /* retry_max_times reached: backup */
    while (h.b->backing_up)            /* the move runs on a worker thread */
        uv_run(&h.loop, UV_RUN_ONCE);
    assert_int_equal(chunk_files(dir, NULL, 0), 0);
    assert_true(dir_syncs(backup_dir) > before);
    assert_int_equal(dir_syncs_on_loop(backup_dir), 0);
    assert_int_equal(dir_syncs_on_loop(dir), 0);
    int fd = open(backup, O_RDONLY);
    assert_true(fd >= 0);
    chunk_scan_t s;
    assert_int_equal(chunk_scan_fd(fd, &s, NULL), 0);
    close(fd);
    assert_int_equal(s.events, 1);
    chunk_meta_free(&s.meta);
    weir_batch_free(&b);
    h_close(&h);
    rm_tree(dir);
    free(dir);
}

/* A give-up whose move to backup/ fails (here a file stands where backup/ would be) keeps the
 * chunk where it is: never deleted, found again at the next start. */
static void test_unit_backup_that_cannot_move_keeps_the_chunk(void **state)
{
    char *dir = mkdtemp_dir();
    char blocker[256];
    snprintf(blocker, sizeof blocker, "%s/backup", dir);
    FILE *f = fopen(blocker, "w");
    assert_non_null(f);
    fclose(f);
    harness_t h;
    h_open(&h, dir, "time", "timekey 60\nflush_mode interval\nflush_interval 3600");
    weir_batch_t b;
    make_batch(&b, "app", 1700000000, 1, 0, 1);
    ack_t a = {0};
    assert_int_equal(weir_buffer_append(h.b, &b, ack_cb, &a), WEIR_EMIT_PENDING);
    h_acked(&h, &a);
    weir_buffer_flush_all(h.b);
    assert_int_equal(h.nhanded, 1);
    h_answer(&h, 0, WEIR_WRITE_UNRECOVERABLE);
    while (h.b->backing_up)
        uv_run(&h.loop, UV_RUN_ONCE);
    assert_int_equal(chunk_files(dir, NULL, 0), 1); /* still there */
    weir_batch_free(&b);
    h_close(&h);
    unlink(blocker);
    rm_tree(dir);
    free(dir);
}

/* Two tags in one <buffer time> chunk: each event is read back with its own tag. */
static void test_unit_chunk_of_several_tags(void **state)
{
    char *dir = mkdtemp_dir();
    harness_t h;
    h_open(&h, dir, "time", "timekey 3600");
    const char *tags[] = {"alpha", "beta", "alpha"};
    for (int i = 0; i < 3; i++) {
        weir_batch_t b;
        make_batch(&b, tags[i], 1700000000, 1, 10 * i, 2);
        ack_t a = {0};
        assert_int_equal(weir_buffer_append(h.b, &b, ack_cb, &a), WEIR_EMIT_PENDING);
        h_acked(&h, &a);
        weir_batch_free(&b);
    }
    weir_buffer_flush_all(h.b);
    assert_int_equal(h.nhanded, 1);
    int seqs[8];
    char got[8];
    assert_int_equal(read_chunk(h.handed[0], seqs, 0, got), 6);
    assert_memory_equal(got, "aabbaa", 6);
    h_answer(&h, 0, WEIR_WRITE_OK);
    h_close(&h);
    rm_tree(dir);
    free(dir);
}

/* ack_after write: an append is acknowledged at once (DONE, where fsync mode says PENDING),
 * no chunk file is ever fdatasynced, and over 100 delivered chunks the process keeps no
 * descriptor of a deleted chunk (before, each chunk's duplicate for a sync that never ran
 * was kept: the chunk's disk space and one descriptor per chunk, for ever). */
static void test_unit_ack_after_write_keeps_no_descriptor(void **state)
{
    char *dir = mkdtemp_dir();
    harness_t h;
    h_open(&h, dir, "time",
           "ack_after write\nchunk_limit_records 1\nflush_mode interval\nflush_interval 3600");
    for (int i = 0; i < 100; i++) {
        weir_batch_t b;
        make_batch(&b, "app", 1700000000, 1, i, 1);
        assert_int_equal(weir_buffer_append(h.b, &b, ack_cb, NULL), WEIR_EMIT_DONE);
        weir_batch_free(&b);
        while (h.nhanded)
            h_answer(&h, 0, WEIR_WRITE_OK);
    }
    weir_buffer_stats_t st;
    weir_buffer_get_stats(h.b, &st);
    assert_int_equal(st.events_written, 100);
    assert_int_equal(st.syncs, 0);
    int held = 0, deleted = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    while ((de = readdir(d))) {
        char link[300], target[512];
        snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        if (strncmp(target, dir, strlen(dir)) != 0 || !strstr(target, ".chunk")) continue;
        held++;
        deleted += strstr(target, "(deleted)") != NULL;
    }
    closedir(d);
    assert_int_equal(deleted, 0);
    assert_true(held <= 1); /* at most the staged chunk */
    h_close(&h);
    rm_tree(dir);
    free(dir);
}

/* WEIR_BUFFER_MAX_KEY_LEN: a record chunk key name of exactly that length is accepted, one
 * byte more is refused with the reason (the metadata's size bound depends on it). */
static void test_unit_record_key_name_limit(void **state)
{
    for (int len = WEIR_BUFFER_MAX_KEY_LEN; len <= WEIR_BUFFER_MAX_KEY_LEN + 1; len++) {
        char key[WEIR_BUFFER_MAX_KEY_LEN + 2], text[512];
        memset(key, 'k', (size_t)len);
        key[len] = '\0';
        snprintf(text, sizeof text, "<buffer %s>\n</buffer>\n", key);
        weir_err_t err = {{0}};
        weir_conf_section_t *root = weir_conf_parse_string(text, strlen(text), "unit.conf", &err);
        assert_non_null(root);
        uv_loop_t loop;
        uv_loop_init(&loop);
        weir_buffer_env_t env = {.loop = &loop};
        weir_buffer_defaults_t defs = {.chunk_keys = "time", .timekey = 86400};
        weir_buffer_sink_t sink = {0};
        weir_buffer_t *b = weir_buffer_new_env(&env, weir_conf_child(root, "buffer", 0), &defs,
                                               "unit", &sink, &err);
        if (len == WEIR_BUFFER_MAX_KEY_LEN) {
            assert_non_null(b);
            assert_true(weir_buffer_has_key(b, key));
        } else {
            assert_null(b);
            assert_non_null(strstr(err.msg, "is longer than 128 bytes"));
        }
        weir_buffer_free(b);
        uv_loop_close(&loop);
        weir_conf_free(root);
    }
}

/* ---- recovery of every torn state ----------------------------------------------------- */

#define R_EVENTS 64

/* What a buffer directory delivers: every event's seq, counted. */
static void deliver_all(const char *dir, int counts[R_EVENTS])
{
    harness_t h;
    h_open(&h, dir, "tag", "flush_mode interval\nflush_interval 3600\nflush_thread_count 8");
    weir_buffer_flush_all(h.b);
    while (h.nhanded) {
        int seqs[R_EVENTS];
        size_t n = read_chunk(h.handed[0], seqs, 0, NULL);
        for (size_t i = 0; i < n; i++) {
            assert_true(seqs[i] < R_EVENTS);
            counts[seqs[i]]++;
        }
        h_answer(&h, 0, WEIR_WRITE_OK);
    }
    h_close(&h);
}

static void copy_file(const char *from, const char *to, off_t len)
{
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(in >= 0 && out >= 0);
    char buf[65536];
    ssize_t n = read(in, buf, sizeof buf);
    assert_true(n >= len);
    assert_int_equal(write(out, buf, (size_t)len), len);
    close(in);
    close(out);
}

/* A crash can leave a chunk cut at any byte (a write never acknowledged, or a create with no
 * record yet), a staged chunk already renamed queued, and a chunk with metadata but no
 * events. From a directory of two chunks (tag a: 3 batches of 3 events, staged; tag b: 2
 * batches of 3, renamed .q as enqueue leaves it), each file is cut at every byte in turn, and
 * the restarted buffer must deliver exactly the events of the whole records left, each once,
 * and leave no chunk file behind. */
static void test_unit_recovery_of_every_torn_state(void **state)
{
    char *pristine = mkdtemp_dir();
    harness_t h;
    h_open(&h, pristine, "tag", "flush_mode interval\nflush_interval 3600");
    int seq = 0;
    for (int i = 0; i < 5; i++) {
        weir_batch_t b;
        make_batch(&b, i < 3 ? "a" : "b", 1700000000, 1, seq, 3);
        seq += 3;
        ack_t a = {0};
        assert_int_equal(weir_buffer_append(h.b, &b, ack_cb, &a), WEIR_EMIT_PENDING);
        h_acked(&h, &a);
        weir_batch_free(&b);
    }
    h_close(&h);
    /* the two chunk files, in id (creation) order: a's, then b's */
    char names[2][300];
    int nfiles = 0;
    DIR *d = opendir(pristine);
    struct dirent *de;
    while ((de = readdir(d)))
        if (strncmp(de->d_name, "buffer.b", 8) == 0)
            snprintf(names[nfiles++], 300, "%s", de->d_name);
    closedir(d);
    assert_int_equal(nfiles, 2);
    if (strcmp(names[0] + 8, names[1] + 8) > 0) {
        char t[300];
        memcpy(t, names[0], 300);
        memcpy(names[0], names[1], 300);
        memcpy(names[1], t, 300);
    }
    char src[2][1024];
    off_t size[2], offs[2][8];
    int nrec[2];
    for (int f = 0; f < 2; f++) {
        snprintf(src[f], sizeof src[f], "%s/%s", pristine, names[f]);
        int fd = open(src[f], O_RDONLY);
        chunk_scan_t s;
        assert_int_equal(chunk_scan_fd(fd, &s, NULL), 0);
        close(fd);
        assert_int_equal(s.events, f == 0 ? 9 : 6);
        size[f] = s.file_size;
        chunk_meta_free(&s.meta);
        /* record offsets: meta, then one record per batch */
        char buf[4096];
        fd = open(src[f], O_RDONLY);
        assert_int_equal(read(fd, buf, sizeof buf), size[f]);
        close(fd);
        nrec[f] = 0;
        for (off_t off = 0; off < size[f];) {
            offs[f][nrec[f]++] = off;
            off +=
                CHUNK_HDR_LEN +
                (off_t)(((unsigned char)buf[off + 4] << 24) | ((unsigned char)buf[off + 5] << 16) |
                        ((unsigned char)buf[off + 6] << 8) | (unsigned char)buf[off + 7]);
        }
        assert_int_equal(nrec[f], f == 0 ? 4 : 3);
    }
    weir_log_level_t level = weir_log_get_level();
    weir_log_set_level(WEIR_LOG_FATAL); /* hundreds of restarts, each saying what it cut */
    for (int f = 0; f < 2; f++) {
        for (off_t cut = 0; cut <= size[f]; cut++) {
            char *work = mkdtemp_dir();
            char dst[1024];
            for (int g = 0; g < 2; g++) {
                /* b's chunk was enqueued: renamed .q */
                snprintf(dst, sizeof dst, "%s/buffer.%c%s", work, g == 0 ? 'b' : 'q', names[g] + 8);
                copy_file(src[g], dst, g == f ? cut : size[g]);
            }
            int counts[R_EVENTS] = {0};
            deliver_all(work, counts);
            /* the whole events records before the cut */
            int whole = 0;
            for (int r = 1; r < nrec[f]; r++)
                whole += (r + 1 < nrec[f] ? offs[f][r + 1] : size[f]) <= cut;
            for (int s = 0; s < 15; s++) {
                int file = s < 9 ? 0 : 1, rec = (s < 9 ? s : s - 9) / 3;
                int want = file != f || rec < whole ? 1 : 0;
                if (counts[s] != want)
                    fail_msg("file %d cut at %lld: seq %d delivered %d times, expected %d", f,
                             (long long)cut, s, counts[s], want);
            }
            assert_int_equal(chunk_files(work, NULL, 0), 0);
            rm_tree(work);
            free(work);
        }
    }
    weir_log_set_level(level);
    rm_tree(pristine);
    free(pristine);
}

/* A checksummed metadata record with no payload (found by fuzz_chunkfile): not metadata, and
 * no pointer arithmetic on the empty buffer's NULL (UBSan stopped the scan). */
static void test_empty_meta_record_is_not_metadata(void **state)
{
    char path[] = "/tmp/weir-chunk-XXXXXX";
    int fd = mkstemp(path);
    char hdr[CHUNK_HDR_LEN];
    chunk_record_header(hdr, CHUNK_REC_META, "", 0, 0);
    assert_int_equal(write(fd, hdr, sizeof hdr), sizeof hdr);
    close(fd);
    chunk_scan_t s;
    scan_path(path, &s);
    assert_false(s.meta_ok);
    assert_true(s.corrupt);
    assert_int_equal(s.good_end, 0);
    chunk_meta_t m;
    assert_int_equal(chunk_meta_decode(NULL, 0, &m, NULL), -1);
    unlink(path);
}

/* A metadata map: the id, then "tag" `tags` times and "vars" `vars` times (the i-th with i+1
 * variables). */
static void meta_with(weir_buf_t *out, uint32_t tags, uint32_t vars)
{
    static const uint8_t id[16] = {1, 2, 3};
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, weir_buf_msgpack_write);
    msgpack_pack_map(&pk, 1 + tags + vars);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_bin_with_body(&pk, id, 16);
    for (uint32_t i = 0; i < tags; i++) {
        msgpack_pack_str_with_body(&pk, "tag", 3);
        msgpack_pack_str_with_body(&pk, "app", 3);
    }
    for (uint32_t i = 0; i < vars; i++) {
        msgpack_pack_str_with_body(&pk, "vars", 4);
        msgpack_pack_map(&pk, i + 1);
        for (uint32_t j = 0; j <= i; j++) {
            msgpack_pack_str_with_body(&pk, "k", 1);
            msgpack_pack_str_with_body(&pk, "v", 1);
        }
    }
}

/* A metadata map that names a key twice (found by fuzz_chunkfile): weir never writes one, so
 * it is not metadata. Before, a second "vars" wrote past the first one's arrays and a second
 * "tag" leaked the first. */
static void test_meta_with_a_key_twice_is_rejected(void **state)
{
    static const uint32_t cases[][3] = {/* tags, vars, decodes */
                                        {1, 1, 1},
                                        {2, 0, 0},
                                        {0, 2, 0},
                                        {2, 2, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        weir_buf_t b;
        weir_buf_init(&b);
        meta_with(&b, cases[i][0], cases[i][1]);
        chunk_meta_t m;
        int rc = chunk_meta_decode(b.data, b.len, &m, NULL);
        if (cases[i][2]) {
            assert_int_equal(rc, 0);
            assert_string_equal(m.tag, "app");
            assert_int_equal(m.nvars, 1);
        } else {
            assert_int_equal(rc, -1);
            assert_null(m.tag);
            assert_int_equal(m.nvars, 0);
        }
        chunk_meta_free(&m);
        weir_buf_free(&b);
    }
}

int main(void)
{
    loop_thread = pthread_self();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_known_vector),
        cmocka_unit_test(test_crc32c_hw_equals_sw_and_is_incremental),
        cmocka_unit_test(test_meta_roundtrip),
        cmocka_unit_test(test_meta_tag_at_and_past_the_limit),
        cmocka_unit_test(test_whole_file),
        cmocka_unit_test(test_every_truncation_is_a_torn_tail),
        cmocka_unit_test(test_every_flipped_byte_is_caught),
        cmocka_unit_test(test_tagged_records_keep_each_batch_tag),
        cmocka_unit_test(test_tagged_record_past_the_tag_limit_is_damage),
        cmocka_unit_test(test_garbage_is_not_metadata),
        cmocka_unit_test(test_empty_meta_record_is_not_metadata),
        cmocka_unit_test(test_meta_with_a_key_twice_is_rejected),
        cmocka_unit_test(test_unit_append_ack_deliver),
        cmocka_unit_test(test_unit_group_commit_covers_exactly_the_acked),
        cmocka_unit_test(test_unit_rollback_leaves_nothing),
        cmocka_unit_test(test_unit_batch_over_200_buckets),
        cmocka_unit_test(test_unit_dirty_descriptors_at_and_past_the_limit),
        cmocka_unit_test(test_unit_enqueue_on_timekey),
        cmocka_unit_test(test_unit_retry_schedule_per_chunk),
        cmocka_unit_test(test_unit_backup_that_cannot_move_keeps_the_chunk),
        cmocka_unit_test(test_unit_chunk_of_several_tags),
        cmocka_unit_test(test_unit_ack_after_write_keeps_no_descriptor),
        cmocka_unit_test(test_unit_record_key_name_limit),
        cmocka_unit_test(test_unit_recovery_of_every_torn_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
