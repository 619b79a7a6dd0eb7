/* Recovery at start: every chunk file left in the buffer directory is read from the start
 * (chunkfile.c classifies it), torn tails are cut back, damaged parts are copied to backup/
 * first, and what remains is staged again or queued (docs/buffer-format.md, "Recovery at
 * start"). Fluentd's own buffer files found there are adopted as queued chunks whose bytes are
 * already formatted.
 *
 * Invariant: nothing a chunk file holds is deleted unless it holds no event; what cannot be
 * read is moved to backup/, and made durable there before the chunk is cut. */
#include "buffer_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fluentd_meta.h"

/* Copies bytes [from, EOF) of a damaged chunk into the backup directory. */
static int save_damaged_tail(weir_buffer_t *b, int fd, const char *hex, off_t from, off_t size,
                             char **where)
{
    if (weir_dir_make(b->backup_dir, 0700) != 0) return -1;
    weir_buf_t dst;
    weir_buf_init(&dst);
    weir_buf_printf(&dst, "%s/%s.damaged-at-%lld", b->backup_dir, hex, (long long)from);
    int out = open(dst.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = out < 0 ? -1 : 0;
    char buf[65536];
    for (off_t off = from; rc == 0 && off < size;) {
        ssize_t n = pread(fd, buf, sizeof buf, off);
        if (n <= 0 || write(out, buf, (size_t)n) != n) rc = -1;
        off += n > 0 ? n : 0;
    }
    if (out >= 0) {
        if (rc == 0) rc = fsync(out);
        close(out);
    }
    /* the copy's name must be durable before the caller cuts the chunk back */
    if (rc == 0) rc = weir_dir_sync(b->backup_dir);
    *where = dst.data;
    return rc;
}

static void fmt_time(uint32_t sec, char out[32])
{
    time_t t = sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int recover_one(weir_buffer_t *b, const char *name, char state, const char *hex,
                       weir_buf_t *key)
{
    char *path = weir_malloc(strlen(b->path) + strlen(name) + 2);
    sprintf(path, "%s/%s", b->path, name);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        weir_error("buffer %s: cannot open %s: %s; left as it is", b->plugin_id, path,
                   strerror(errno));
        free(path);
        return 0;
    }
    chunk_scan_t s;
    weir_err_t err;
    if (chunk_scan_fd(fd, &s, &err) != 0) {
        weir_error("buffer %s: cannot read %s: %s; left as it is", b->plugin_id, path, err.msg);
        close(fd);
        free(path);
        return 0;
    }
    if (!s.meta_ok) {
        /* nothing can be trusted without the metadata: keep the whole file in backup */
        close(fd);
        weir_dir_make(b->backup_dir, 0700);
        weir_buf_t dst;
        weir_buf_init(&dst);
        weir_buf_printf(&dst, "%s/%s.no-metadata", b->backup_dir, hex);
        if (s.file_size == 0) {
            weir_warn("buffer %s: %s is empty (a crash right after it was created); removed",
                      b->plugin_id, path);
            unlink(path);
        } else if (rename(path, dst.data) == 0 && weir_dir_sync(b->backup_dir) == 0 &&
                   weir_dir_sync(b->path) == 0) { /* the moved file's new name made durable */
            weir_error("buffer %s: %s has no valid metadata (%lld bytes); moved to %s",
                       b->plugin_id, path, (long long)s.file_size, dst.data);
        } else {
            weir_error("buffer %s: %s has no valid metadata and cannot be moved: %s", b->plugin_id,
                       path, strerror(errno));
        }
        weir_buf_free(&dst);
        chunk_meta_free(&s.meta);
        free(path);
        return 0;
    }
    if (s.corrupt) {
        char *where = NULL;
        int rc = save_damaged_tail(b, fd, hex, s.good_end, s.file_size, &where);
        char t0[32] = "?", t1[32] = "?";
        if (s.bad_min_sec) fmt_time(s.bad_min_sec, t0);
        if (s.bad_max_sec) fmt_time(s.bad_max_sec, t1);
        if (rc == 0) {
            weir_error("buffer %s: chunk %s: checksum mismatch at byte %lld; kept the first %u "
                       "records (%" PRIu64 " events), moved the rest (%lld bytes, about %" PRIu64
                       " events from %s to %s) to %s",
                       b->plugin_id, hex, (long long)s.good_end, s.records ? s.records - 1 : 0,
                       s.events, (long long)(s.file_size - s.good_end), s.bad_events, t0, t1,
                       where);
        } else {
            weir_error("buffer %s: chunk %s is damaged at byte %lld and the damaged part cannot "
                       "be saved (%s); the chunk is left untouched for inspection",
                       b->plugin_id, hex, (long long)s.good_end, strerror(errno));
            free(where);
            close(fd);
            chunk_meta_free(&s.meta);
            free(path);
            return 0;
        }
        free(where);
    } else if (s.torn_tail) {
        weir_warn("buffer %s: chunk %s ends in a cut write (%lld bytes after the last whole "
                  "record, never acknowledged); cut back",
                  b->plugin_id, hex, (long long)(s.file_size - s.good_end));
    }
    if ((s.corrupt || s.torn_tail) && ftruncate(fd, s.good_end) != 0)
        weir_error("buffer %s: cannot cut %s: %s", b->plugin_id, path, strerror(errno));
    if (s.events == 0) {
        close(fd);
        unlink(path);
        chunk_meta_free(&s.meta);
        free(path);
        return 0;
    }
    weir_chunk_t *c = weir_calloc(1, sizeof *c);
    c->b = b;
    c->fd = -1;
    c->meta = s.meta;
    memcpy(c->id_hex, hex, 33);
    c->path = path;
    c->bytes = (uint64_t)s.good_end;
    c->events = s.events;
    c->created = buf_mono_now();
    buf_meta_key(b, &c->meta, key);
    c->key = weir_strdup(key->data);
    b->bytes_total += c->bytes;
    if (state == 'b' && !buf_staged_find(b, c->key) && !buf_chunk_is_full(b, c)) {
        if (lseek(fd, 0, SEEK_END) < 0 || fcntl(fd, F_SETFL, O_APPEND) != 0) {
            close(fd);
            fd = -1;
        }
        c->fd = fd;
        c->state = CH_STAGED;
        buf_list_push(&b->staged, c);
        b->stats.staged_chunks++;
        if (c->fd < 0) buf_enqueue(b, c);
    } else {
        close(fd);
        c->state = CH_STAGED; /* so enqueue() accepts it */
        buf_list_push(&b->staged, c);
        b->stats.staged_chunks++;
        if (state == 'q') {
            /* already renamed: just queue it */
            buf_list_remove(&b->staged, c);
            b->stats.staged_chunks--;
            c->state = CH_QUEUED;
            buf_list_push(&b->queue, c);
            b->stats.queued_chunks++;
        } else {
            buf_enqueue(b, c);
        }
    }
    return 1;
}

static int cmp_names(const void *a, const void *b)
{
    /* by the id part, which starts with the creation time */
    return strcmp((*(char *const *)a) + 8, (*(char *const *)b) + 8);
}

/* ---- Fluentd's buffer files ----------------------------------------------------------
 *
 * A buffer directory that Fluentd used holds buffer.b<id>.log / buffer.q<id>.log with a
 * .meta sibling (docs: ../shared/docs/s3-output.md section 3). Their data is what Fluentd's
 * output had already formatted (for out_s3 and out_file: text lines), so weir adopts each
 * as a queued chunk the output stores as it is: swapping the container keeps what Fluentd
 * had not uploaded yet. A file without a readable .meta is left where it is, with a warning. */

/* Adopts one Fluentd chunk as a queued chunk. Returns 1 when adopted. */
static int adopt_fluentd(weir_buffer_t *b, const char *name)
{
    weir_buf_t path, meta;
    weir_buf_init(&path);
    weir_buf_init(&meta);
    weir_buf_printf(&path, "%s/%s", b->path, name);
    weir_buf_printf(&meta, "%s/%s.meta", b->path, name);
    chunk_meta_t m;
    uint64_t records = 0;
    struct stat st;
    if (stat(path.data, &st) != 0 || fluentd_meta_read(meta.data, &m, &records) != 0) {
        weir_warn("buffer %s: %s looks like a Fluentd chunk but its .meta is missing or "
                  "unreadable; left as it is",
                  b->plugin_id, path.data);
        weir_buf_free(&path);
        weir_buf_free(&meta);
        return 0;
    }
    unsigned char magic[2] = {0, 0};
    int fd = open(path.data, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, magic, 2) != 2) magic[0] = 0;
        close(fd);
    }
    if (magic[0] == 0x1f && magic[1] == 0x8b) {
        /* a buffer with compress gzip: the data is gzip members, which no output here stores
         * as they are */
        weir_warn("buffer %s: %s is a Fluentd chunk compressed with gzip (compress gzip); weir "
                  "cannot adopt it; left as it is",
                  b->plugin_id, path.data);
        chunk_meta_free(&m);
        weir_buf_free(&path);
        weir_buf_free(&meta);
        return 0;
    }
    weir_chunk_t *c = weir_calloc(1, sizeof *c);
    c->b = b;
    c->fd = -1;
    c->meta = m;
    buf_hex_id(c->meta.id, c->id_hex);
    c->path = path.data;
    c->fluentd_meta = meta.data;
    c->bytes = (uint64_t)st.st_size;
    c->events = records;
    c->created = buf_mono_now();
    c->key = weir_strdup("");
    c->state = CH_QUEUED;
    b->bytes_total += c->bytes;
    buf_list_push(&b->queue, c);
    b->stats.queued_chunks++;
    return 1;
}

int buf_recover(weir_buffer_t *b, weir_err_t *err)
{
    DIR *d = opendir(b->path);
    if (!d) {
        weir_err_set(err, "cannot read buffer directory %s: %s", b->path, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0, foreign = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char state, hex[33];
        if (!buffer_file_name_parse(de->d_name, ".chunk", &state, hex)) {
            if (fluentd_name_parse(de->d_name, hex))
                foreign += (size_t)adopt_fluentd(b, de->d_name);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = weir_realloc(names, cap * sizeof *names);
        }
        names[n++] = weir_strdup(de->d_name);
    }
    closedir(d);
    if (foreign)
        weir_warn("buffer %s: adopted %zu chunks that Fluentd left in %s; they are delivered as "
                  "Fluentd formatted them",
                  b->plugin_id, foreign, b->path);
    if (n > 1) qsort(names, n, sizeof *names, cmp_names); /* qsort(NULL, 0) is undefined */
    weir_buf_t key;
    weir_buf_init(&key);
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        char state, hex[33];
        buffer_file_name_parse(names[i], ".chunk", &state, hex);
        found += (size_t)recover_one(b, names[i], state, hex, &key);
        free(names[i]);
    }
    free(names);
    weir_buf_free(&key);
    if (found)
        weir_info("buffer %s: resumed %zu chunks from %s (%zu staged, %zu queued, %" PRIu64
                  " bytes)",
                  b->plugin_id, found, b->path, b->staged.n, b->queue.n, b->bytes_total);
    return 0;
}
