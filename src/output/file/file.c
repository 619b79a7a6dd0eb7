/* @type file: Fluentd's out_file, on weir's buffer. weir's embedded default.
 *
 * Each ready chunk becomes one file (or is appended to one, with `append true`), its name
 * from `path` as Fluentd builds it:
 *   path with time directives:   <path>[_<index>]<path_suffix>[.gz]
 *   path without, time key set:  <path>.<time slice>[_<index>]<path_suffix>[.gz]
 *   no time key:                 <path>[_<index>]<path_suffix>[.gz]
 * where the index is the first free one (0, 1, ...) unless `append` is set, and placeholders
 * (strftime of the time bucket, ${tag}, ${chunk_id}, record keys) are expanded per chunk.
 *
 * Formatting, compression and the write happen on a libuv worker thread, one job per chunk.
 * The buffer deletes the chunk as soon as it is reported delivered, so before that the file
 * must survive a power loss, which takes three kinds of fsync:
 *   - fsync(file): its bytes and its inode;
 *   - fsync(the file's directory): the entry that names the file (without it the file can be
 *     gone after a power loss while the chunk is deleted too);
 *   - fsync(the parent of each directory weir creates for the path): the entry naming that
 *     directory, done as each is made (weir_dir_make), under a lock that also makes a second
 *     flush thread finding the directory existing wait until its entry is durable.
 * A name the file system can never hold (too long, refused bytes) is an unrecoverable error:
 * the chunk goes to backup at once instead of being retried. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "weir/buffer.h"
#include "weir/dirsync.h"
#include "weir/format.h"
#include "weir/log.h"
#include "weir/placeholder.h"
#include "weir/plugin.h"

#define FILE_MAX_INDEX 100000 /* files per slice before giving up on finding a free name */

typedef struct out_file {
    weir_engine_t *eng;
    char *id;
    char *tmpl; /* path template, index placeholder "_**" included unless append */
    bool append;
    bool gzip;
    weir_format_opts_t fopts;
    weir_inject_opts_t iopts;
    bool opts_owned; /* fopts/iopts hold their own copies (weir_format_opts_own) */
    weir_buffer_t *buffer;
} out_file_t;

typedef struct file_job {
    uv_work_t req;
    out_file_t *o;
    weir_chunk_t *chunk;
    weir_write_status_t status;
    char msg[WEIR_ERR_MAX];
} file_job_t;

static const char *timekey_format(double timekey)
{
    if (timekey < 60) return "%Y%m%d%H%M%S";
    if (timekey < 3600) return "%Y%m%d%H%M";
    if (timekey < 86400) return "%Y%m%d%H";
    return "%Y%m%d";
}

/* ---- the write, on a worker thread -------------------------------------------------- */

/* Makes every missing directory on the way to the file `path` names, each followed by an fsync
 * of its parent (weir_dir_make; see the top of the file). */
static int mkdir_parents(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return 0;
    char *dir = weir_strndup(path, (size_t)(slash - path));
    int rc = weir_dir_make(dir, 0755);
    int e = errno;
    free(dir);
    errno = e;
    return rc;
}

/* Streams formatted text to the file, through gzip when asked, in pieces of at most
 * FILE_WRITE_PIECE bytes, so memory stays bounded whatever the chunk's size. */
#define FILE_WRITE_PIECE (1024 * 1024)

typedef struct file_sink {
    int fd;
    bool gzip;
    z_stream z;
    weir_buf_t zout;
} file_sink_t;

static int write_all(int fd, const char *p, size_t n);

static int sink_put(file_sink_t *s, const char *p, size_t n, bool finish)
{
    if (!s->gzip) return write_all(s->fd, p, n);
    s->z.next_in = (Bytef *)p;
    s->z.avail_in = (uInt)n;
    int flush = finish ? Z_FINISH : Z_NO_FLUSH;
    for (;;) {
        weir_buf_reserve(&s->zout, 64 * 1024);
        s->z.next_out = (Bytef *)s->zout.data;
        s->z.avail_out = (uInt)s->zout.cap;
        int rc = deflate(&s->z, flush);
        if (rc == Z_STREAM_ERROR) return -1;
        size_t have = s->zout.cap - s->z.avail_out;
        if (have && write_all(s->fd, s->zout.data, have) != 0) return -1;
        if (finish ? rc == Z_STREAM_END : s->z.avail_in == 0) return 0;
    }
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* True when a failure to create the file (or one of its directories) comes from the name
 * itself, so every retry of the same chunk would fail the same way: the path or a component
 * is longer than the file system allows, or the file system refuses the name's bytes (an
 * encoding it does not take, characters it forbids). Such a chunk goes to backup at once.
 * Errors from the state of the disk or the tree are retried, because an operator can clear
 * them: ENOSPC, EDQUOT, EROFS (a remount), EACCES and EPERM (permissions), ENOTDIR and EISDIR
 * (a file or directory in the way, which can be moved), ELOOP (a symlink that can be fixed),
 * EIO, EMFILE. */
static bool file_name_error(int e)
{
    return e == ENAMETOOLONG || e == EILSEQ || e == EINVAL;
}

/* The index marker the template ends with (before the suffix), or NULL with append. It is the
 * last "_**": a tag or record value substituted before it may hold "_**" too. */
static const char *index_marker(const out_file_t *o, const char *expanded)
{
    if (o->append) return NULL;
    const char *last = NULL;
    for (const char *p = strstr(expanded, "_**"); p; p = strstr(p + 1, "_**"))
        last = p;
    return last;
}

/* Opens the destination: the expanded path with "_**" replaced by the first free index. */
static int open_dest(out_file_t *o, const char *expanded, weir_buf_t *path)
{
    const char *idx = index_marker(o, expanded);
    if (!idx) {
        path->len = 0;
        weir_buf_printf(path, "%s", expanded);
        if (mkdir_parents(path->data) != 0) return -1;
        return open(path->data, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
    for (int i = 0; i < FILE_MAX_INDEX; i++) {
        path->len = 0;
        weir_buf_printf(path, "%.*s_%d%s", (int)(idx - expanded), expanded, i, idx + 3);
        if (i == 0 && mkdir_parents(path->data) != 0) return -1;
        int fd = open(path->data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    errno = EEXIST;
    return -1;
}

static void file_work(uv_work_t *req)
{
    file_job_t *j = req->data;
    out_file_t *o = j->o;
    weir_err_t err = {{0}};
    weir_buf_t text, path, expanded, scratch;
    weir_buf_init(&text);
    weir_buf_init(&path);
    weir_buf_init(&expanded);
    weir_buf_init(&scratch);
    weir_formatter_t f;
    weir_inject_t inj;
    bool have_f = false, have_inj = false, have_z = false;
    file_sink_t sink = {.fd = -1, .gzip = o->gzip};
    weir_buf_init(&sink.zout);
    weir_chunk_reader_t *rd = NULL;
    off_t start = -1;
    j->status = WEIR_WRITE_RETRY;
    /* formatter state is per thread: build one for this job */
    if (weir_formatter_init(&f, &o->fopts, &err) != 0) goto out;
    have_f = true;
    if (weir_inject_init(&inj, &o->iopts, &err) != 0) goto out;
    have_inj = true;
    if (weir_placeholders_expand(o->tmpl, o->buffer, j->chunk, &expanded, &err) != 0) {
        j->status = WEIR_WRITE_UNRECOVERABLE;
        goto out;
    }
    weir_buf_putc(&expanded, '\0');
    rd = weir_chunk_reader_open(j->chunk, &err);
    if (!rd) goto out;
    sink.fd = open_dest(o, expanded.data, &path);
    if (sink.fd < 0) {
        int e = errno;
        const char *name = path.data ? path.data : expanded.data;
        if (file_name_error(e)) {
            /* the reason first: a name this long would push it past the message's end */
            weir_err_set(&err, "%s, a name that cannot exist, so no retry: cannot open %s",
                         strerror(e), name);
            j->status = WEIR_WRITE_UNRECOVERABLE;
        } else {
            weir_err_set(&err, "cannot open %s: %s", name, strerror(e));
        }
        goto out;
    }
    start = lseek(sink.fd, 0, SEEK_END);
    if (o->gzip) {
        if (deflateInit2(&sink.z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            goto out;
        have_z = true;
    }
    weir_batch_t view = {0}; /* each run of the chunk, with its own tag */
    size_t skipped = 0;
    weir_err_t ferr = {{0}};
    const char *entries;
    size_t len;
    uint32_t count;
    int rc;
    if (weir_chunk_is_fluentd(j->chunk)) {
        /* Fluentd formatted these lines already: store them as they are */
        while ((rc = weir_chunk_reader_raw(rd, &entries, &len, &err)) == 1)
            if (sink_put(&sink, entries, len, false) != 0) goto ioerr;
    } else {
        rc = 0;
    }
    while (!weir_chunk_is_fluentd(j->chunk) &&
           (rc = weir_chunk_reader_next(rd, &entries, &len, &count, &err)) == 1) {
        view.data.data = (char *)entries;
        view.data.len = len;
        view.count = count;
        view.tag = (char *)weir_chunk_reader_tag(rd);
        view.tag_len = strlen(view.tag);
        if (weir_format_batch(&f, &inj, &view, &text, &scratch, &skipped, &ferr) < 0) {
            weir_err_set(&err, "chunk %s holds invalid entries", weir_chunk_id_hex(j->chunk));
            j->status = WEIR_WRITE_UNRECOVERABLE;
            goto fail;
        }
        if (text.len >= FILE_WRITE_PIECE) {
            if (sink_put(&sink, text.data, text.len, false) != 0) goto ioerr;
            text.len = 0;
        }
    }
    if (rc < 0) goto fail;
    if (sink_put(&sink, text.data, text.len, true) != 0) goto ioerr;
    /* the file's bytes, then the entry naming it (appending to an old file needs no entry,
     * but which case this is cannot be told from here at no cost, and one fsync is cheap) */
    if (fsync(sink.fd) != 0 || weir_dir_sync_parent(path.data) != 0) goto ioerr;
    if (skipped)
        weir_warn("file %s: %zu records of chunk %s cannot be formatted: %s", o->id, skipped,
                  weir_chunk_id_hex(j->chunk), ferr.msg);
    j->status = WEIR_WRITE_OK;
    goto out;
ioerr:
    weir_err_set(&err, "cannot write %s: %s", path.data, strerror(errno));
fail:
    /* do not leave half a chunk behind: the retry writes it again whole */
    if (start >= 0 && ftruncate(sink.fd, start) != 0)
        weir_warn("file %s: cannot cut %s back after a failed write", o->id, path.data);
out:
    if (sink.fd >= 0) close(sink.fd);
    if (have_z) deflateEnd(&sink.z);
    weir_chunk_reader_close(rd);
    if (have_f) weir_formatter_free(&f);
    if (have_inj) weir_inject_free(&inj);
    snprintf(j->msg, sizeof j->msg, "%s", err.msg);
    weir_buf_free(&text);
    weir_buf_free(&sink.zout);
    weir_buf_free(&path);
    weir_buf_free(&expanded);
    weir_buf_free(&scratch);
}

static void file_after(uv_work_t *req, int status)
{
    file_job_t *j = req->data;
    weir_chunk_write_done(j->chunk, status == 0 ? j->status : WEIR_WRITE_RETRY, j->msg);
    free(j);
}

static void file_write(void *out, weir_chunk_t *chunk)
{
    out_file_t *o = out;
    file_job_t *j = weir_calloc(1, sizeof *j);
    j->o = o;
    j->chunk = chunk;
    j->req.data = j;
    uv_queue_work(weir_engine_loop(o->eng), &j->req, file_work, file_after);
}

/* ---- plugin ------------------------------------------------------------------------- */

static void file_destroy(void *state)
{
    out_file_t *o = state;
    if (!o) return;
    weir_buffer_free(o->buffer);
    if (o->opts_owned) {
        weir_format_opts_release(&o->fopts);
        weir_inject_opts_release(&o->iopts);
    }
    free(o->tmpl);
    free(o->id);
    free(o);
}

static int file_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    static const char *const compress[] = {"text", "gzip", NULL};
    out_file_t *o = weir_calloc(1, sizeof *o);
    o->eng = eng;
    const char *path = NULL, *id = NULL, *suffix = ".log", *symlink = NULL;
    bool add_suffix = true;
    int comp = 0;
    if (weir_conf_get_str(sec, "path", &path, err) < 0 ||
        weir_conf_get_str(sec, "@id", &id, err) < 0 ||
        weir_conf_get_bool(sec, "append", &o->append, err) < 0 ||
        weir_conf_get_enum(sec, "compress", compress, &comp, err) < 0 ||
        weir_conf_get_bool(sec, "add_path_suffix", &add_suffix, err) < 0 ||
        weir_conf_get_str(sec, "path_suffix", &suffix, err) < 0 ||
        weir_conf_get_str(sec, "symlink_path", &symlink, err) < 0)
        goto err;
    if (!path || !*path) {
        weir_conf_section_errorf(err, sec, "@type file needs 'path'");
        goto err;
    }
    if (symlink) {
        weir_conf_errorf(err, weir_conf_find(sec, "symlink_path"),
                         "symlink_path is not supported by weir");
        goto err;
    }
    o->gzip = comp == 1;
    o->id = weir_strdup(id ? id : "file");
    weir_conf_section_t *fsec = weir_conf_child(sec, "format", 0);
    weir_conf_section_t *isec = weir_conf_child(sec, "inject", 0);
    weir_conf_section_t *bsec = weir_conf_child(sec, "buffer", 0);
    if (fsec) weir_conf_section_use(fsec);
    if (isec) weir_conf_section_use(isec);
    weir_format_opts_init(&o->fopts, WEIR_FORMAT_OUT_FILE);
    weir_inject_opts_init(&o->iopts);
    if (weir_format_opts_from_conf(&o->fopts, fsec, WEIR_FORMAT_OUT_FILE, err) != 0) goto err;
    if (isec && weir_inject_opts_from_conf(&o->iopts, isec, err) != 0) goto err;
    /* worker threads rebuild the formatter from these after the configuration is gone */
    weir_format_opts_own(&o->fopts);
    weir_inject_opts_own(&o->iopts);
    o->opts_owned = true;
    /* check the options build, so a bad format fails at start, not at the first flush */
    weir_formatter_t f;
    if (weir_formatter_init(&f, &o->fopts, err) != 0) goto err;
    weir_formatter_free(&f);
    weir_inject_t inj;
    if (weir_inject_init(&inj, &o->iopts, err) != 0) goto err;
    weir_inject_free(&inj);

    weir_buffer_defaults_t defs = {.chunk_keys = "time", .timekey = 86400};
    weir_buffer_sink_t sink = {.write = file_write, .out = o};
    o->buffer = weir_buffer_new(eng, bsec, &defs, o->id, &sink, err);
    if (!o->buffer) goto err;

    weir_buf_t t;
    weir_buf_init(&t);
    weir_buf_printf(&t, "%s", path);
    double tk = weir_buffer_timekey(o->buffer);
    if (tk > 0 && !strchr(path, '%')) weir_buf_printf(&t, ".%s", timekey_format(tk));
    if (!o->append) weir_buf_printf(&t, "_**");
    if (add_suffix) weir_buf_printf(&t, "%s", suffix);
    if (o->gzip) weir_buf_printf(&t, ".gz");
    o->tmpl = t.data;
    weir_placeholders_check("file path", path, o->buffer);
    *state = o;
    return 0;
err:
    file_destroy(o);
    return -1;
}

static int file_start(void *state, weir_err_t *err)
{
    out_file_t *o = state;
    return weir_buffer_start(o->buffer, err);
}

static weir_emit_result_t file_emit(void *state, const weir_batch_t *b, weir_emit_cb cb, void *arg)
{
    return weir_buffer_append(((out_file_t *)state)->buffer, b, cb, arg);
}

static void file_flush(void *state)
{
    weir_buffer_flush_all(((out_file_t *)state)->buffer);
}

static void file_stop(void *state, void (*done)(void *), void *arg)
{
    weir_buffer_stop(((out_file_t *)state)->buffer, done, arg);
}

const weir_output_ops_t weir_out_file_ops = {
    .type = "file",
    .create = file_create,
    .start = file_start,
    .emit = file_emit,
    .flush = file_flush,
    .stop = file_stop,
    .destroy = file_destroy,
};
