/* Chunk files: encoding and recovery. See chunkfile.h for the layout. Recovery reads records
 * in order and stops at the first that is cut short (a torn tail from a crash mid-write) or
 * that fails its checksum (corruption); everything before it is kept. Lengths read from disk
 * are trusted only up to the file's size, so garbage cannot make recovery allocate more than
 * the file holds. */
#include "chunkfile.h"

#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weir/crc32c.h"
#include "weir/event.h"
#include "weir/mp.h"

static void put16(char *p, uint16_t v)
{
    p[0] = (char)(v >> 8);
    p[1] = (char)v;
}

static void put32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static uint32_t get32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return ((uint32_t)u[0] << 24) | ((uint32_t)u[1] << 16) | ((uint32_t)u[2] << 8) | u[3];
}

static uint32_t record_crc(const char *hdr, const char *payload, size_t len)
{
    return weir_crc32c(weir_crc32c(0, hdr, 12), payload, len);
}

void chunk_record_header(char hdr[CHUNK_HDR_LEN], int type, const char *payload, size_t len,
                         uint32_t count)
{
    struct iovec one = {(void *)payload, len};
    chunk_record_header_v(hdr, type, &one, 1, count);
}

void chunk_record_header_v(char hdr[CHUNK_HDR_LEN], int type, const struct iovec *parts, int n,
                           uint32_t count)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += parts[i].iov_len;
    put16(hdr, CHUNK_MAGIC);
    hdr[2] = (char)type;
    hdr[3] = CHUNK_VERSION;
    put32(hdr + 4, (uint32_t)len);
    put32(hdr + 8, count);
    uint32_t crc = weir_crc32c(0, hdr, 12);
    for (int i = 0; i < n; i++)
        crc = weir_crc32c(crc, parts[i].iov_base, parts[i].iov_len);
    put32(hdr + 12, crc);
}

size_t chunk_tag_header(char out[CHUNK_TAG_HDR_MAX], size_t tag_len)
{
    _Static_assert(WEIR_TAG_MAX <= 0xffff, "a tag header is at most str 16");
    if (tag_len < 32) {
        out[0] = (char)(0xa0 | tag_len);
        return 1;
    }
    if (tag_len < 256) {
        out[0] = (char)0xd9;
        out[1] = (char)tag_len;
        return 2;
    }
    out[0] = (char)0xda;
    put16(out + 1, (uint16_t)tag_len);
    return 3;
}

int chunk_run_parse(int type, const char *payload, size_t len, uint32_t count, chunk_run_t *run)
{
    memset(run, 0, sizeof *run);
    run->count = count;
    run->entries = payload;
    run->len = len;
    if (type == CHUNK_REC_EVENTS) return 0;
    weir_mp_obj_t o;
    ssize_t h = weir_mp_read(payload, len, &o); /* the str's header and bytes */
    if (type != CHUNK_REC_TAGGED || h <= 0 || o.type != WEIR_MP_STR || o.len > WEIR_TAG_MAX)
        return -1;
    run->tag = o.ptr;
    run->tag_len = o.len;
    run->entries = payload + h;
    run->len = len - (size_t)h;
    return 0;
}

void chunk_meta_free(chunk_meta_t *m)
{
    free(m->tag);
    for (size_t i = 0; i < m->nvars; i++) {
        free(m->var_keys[i]);
        free(m->var_values[i]);
    }
    free(m->var_keys);
    free(m->var_values);
    memset(m, 0, sizeof *m);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void chunk_meta_encode(const chunk_meta_t *m, weir_buf_t *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, weir_buf_msgpack_write);
    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "id");
    msgpack_pack_bin(&pk, 16);
    msgpack_pack_bin_body(&pk, m->id, 16);
    pack_str(&pk, "timekey");
    if (m->has_timekey)
        msgpack_pack_int64(&pk, m->timekey);
    else
        msgpack_pack_nil(&pk);
    pack_str(&pk, "tag");
    if (m->tag)
        pack_str(&pk, m->tag);
    else
        msgpack_pack_nil(&pk);
    pack_str(&pk, "vars");
    msgpack_pack_map(&pk, m->nvars);
    for (size_t i = 0; i < m->nvars; i++) {
        pack_str(&pk, m->var_keys[i]);
        pack_str(&pk, m->var_values[i]);
    }
    pack_str(&pk, "created");
    msgpack_pack_int64(&pk, m->created);
}

bool chunk_meta_key_is(const weir_mp_obj_t *k, const char *s)
{
    size_t n = strlen(s);
    return k->type == WEIR_MP_STR && k->len == n && memcmp(k->ptr, s, n) == 0;
}

int chunk_meta_take_tag(chunk_meta_t *m, const weir_mp_obj_t *v)
{
    if (v->type != WEIR_MP_STR || v->len > WEIR_TAG_MAX) return -1; /* as the inputs bound it */
    if (m->tag) return -1; /* a key twice: neither weir nor Fluentd writes that */
    m->tag = weir_strndup(v->ptr, v->len);
    return 0;
}

int chunk_meta_take_vars(chunk_meta_t *m, const char *p, const char *end, uint32_t n,
                         bool any_value)
{
    if (n > WEIR_BUFFER_MAX_KEYS || m->var_keys) return -1;
    m->var_keys = weir_calloc(n, sizeof(char *));
    m->var_values = weir_calloc(n, sizeof(char *));
    for (uint32_t j = 0; j < n; j++) {
        weir_mp_obj_t vk, vv;
        ssize_t a = weir_mp_read(p, (size_t)(end - p), &vk);
        if (a <= 0 || vk.type != WEIR_MP_STR) return -1;
        p += a;
        if (weir_mp_read(p, (size_t)(end - p), &vv) <= 0) return -1;
        if (vv.type != WEIR_MP_STR && !any_value) return -1;
        ssize_t b = weir_mp_skip(p, (size_t)(end - p), 8);
        if (b <= 0) return -1;
        p += b;
        m->var_keys[m->nvars] = weir_strndup(vk.ptr, vk.len);
        m->var_values[m->nvars] =
            vv.type == WEIR_MP_STR ? weir_strndup(vv.ptr, vv.len) : weir_strdup("");
        m->nvars++;
    }
    return 0;
}

int chunk_meta_decode(const char *p, size_t len, chunk_meta_t *m, weir_err_t *err)
{
    memset(m, 0, sizeof *m);
    const char *end = p ? p + len : p; /* NULL + 0 is undefined in C: an empty record */
    weir_mp_obj_t o, k, v;
    ssize_t n = weir_mp_read(p, len, &o);
    bool have_id = false;
    if (n <= 0 || o.type != WEIR_MP_MAP) goto bad;
    p += n;
    for (uint32_t i = 0; i < o.v.n; i++) {
        n = weir_mp_read(p, (size_t)(end - p), &k);
        if (n <= 0) goto bad;
        p += n;
        const char *vstart = p;
        n = weir_mp_read(p, (size_t)(end - p), &v);
        if (n <= 0) goto bad;
        if (chunk_meta_key_is(&k, "id") && v.type == WEIR_MP_BIN && v.len == 16) {
            memcpy(m->id, v.ptr, 16);
            have_id = true;
        } else if (chunk_meta_key_is(&k, "timekey") &&
                   (v.type == WEIR_MP_UINT || v.type == WEIR_MP_INT)) {
            m->has_timekey = true;
            m->timekey = v.type == WEIR_MP_UINT ? (int64_t)v.v.u : v.v.i;
        } else if (chunk_meta_key_is(&k, "tag") && v.type == WEIR_MP_STR) {
            if (chunk_meta_take_tag(m, &v) != 0) goto bad;
        } else if (chunk_meta_key_is(&k, "created") && v.type == WEIR_MP_UINT) {
            m->created = (int64_t)v.v.u;
        } else if (chunk_meta_key_is(&k, "vars") && v.type == WEIR_MP_MAP) {
            if (chunk_meta_take_vars(m, p + n, end, v.v.n, false) != 0) goto bad;
        }
        ssize_t skip = weir_mp_skip(vstart, (size_t)(end - vstart), 8);
        if (skip <= 0) goto bad;
        p = vstart + skip;
    }
    if (!have_id) goto bad;
    return 0;
bad:
    chunk_meta_free(m);
    weir_err_set(err, "metadata record is not valid");
    return -1;
}

static int read_full(int fd, void *buf, size_t len, off_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r == 0 ? 0 : -1;
        p += r;
        off += r;
        len -= (size_t)r;
    }
    return 1;
}

/* Best effort: the time range of whatever entries in a payload parse. */
static void note_times(const char *p, size_t len, chunk_scan_t *s)
{
    weir_batch_iter_t it;
    weir_entry_t e;
    weir_batch_iter_init(&it, p, len);
    while (weir_batch_iter_next(&it, &e) == 1) {
        if (!s->bad_min_sec || e.time.sec < s->bad_min_sec) s->bad_min_sec = e.time.sec;
        if (e.time.sec > s->bad_max_sec) s->bad_max_sec = e.time.sec;
    }
}

/* After the first bad record: walk on by the headers' lengths while they fit, to say how many
 * events the damaged part claimed and which time range it covered. */
static void survey_bad_part(int fd, off_t off, chunk_scan_t *s, weir_buf_t *payload)
{
    char hdr[CHUNK_HDR_LEN];
    while (off + CHUNK_HDR_LEN <= s->file_size) {
        if (read_full(fd, hdr, CHUNK_HDR_LEN, off) != 1) return;
        uint32_t len = get32(hdr + 4);
        if ((uint8_t)hdr[0] != (CHUNK_MAGIC >> 8) || (uint8_t)hdr[1] != (CHUNK_MAGIC & 0xff) ||
            (hdr[2] != CHUNK_REC_EVENTS && hdr[2] != CHUNK_REC_TAGGED) ||
            off + CHUNK_HDR_LEN + (off_t)len > s->file_size)
            return;
        s->bad_events += get32(hdr + 8);
        payload->len = 0;
        weir_buf_reserve(payload, len);
        if (read_full(fd, payload->data, len, off + CHUNK_HDR_LEN) != 1) return;
        chunk_run_t run;
        if (chunk_run_parse(hdr[2], payload->data, len, 0, &run) == 0)
            note_times(run.entries, run.len, s);
        off += CHUNK_HDR_LEN + (off_t)len;
    }
}

int chunk_scan_fd(int fd, chunk_scan_t *s, weir_err_t *err)
{
    memset(s, 0, sizeof *s);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        weir_err_set(err, "stat: %s", strerror(errno));
        return -1;
    }
    s->file_size = st.st_size;
    weir_buf_t payload;
    weir_buf_init(&payload);
    off_t off = 0;
    char hdr[CHUNK_HDR_LEN];
    while (off < s->file_size) {
        if (off + CHUNK_HDR_LEN > s->file_size) {
            s->torn_tail = true;
            break;
        }
        if (read_full(fd, hdr, CHUNK_HDR_LEN, off) != 1) goto ioerr;
        uint32_t len = get32(hdr + 4);
        bool magic_ok = (uint8_t)hdr[0] == (CHUNK_MAGIC >> 8) &&
                        (uint8_t)hdr[1] == (CHUNK_MAGIC & 0xff) && hdr[3] == CHUNK_VERSION;
        int want = off == 0 ? CHUNK_REC_META : CHUNK_REC_EVENTS;
        if (want == CHUNK_REC_EVENTS && hdr[2] == CHUNK_REC_TAGGED) want = CHUNK_REC_TAGGED;
        if (!magic_ok || hdr[2] != want || (want == CHUNK_REC_META && len > CHUNK_META_MAX)) {
            s->corrupt = true;
            break;
        }
        if (off + CHUNK_HDR_LEN + (off_t)len > s->file_size) {
            s->torn_tail = true;
            break;
        }
        payload.len = 0;
        weir_buf_reserve(&payload, len);
        if (len && read_full(fd, payload.data, len, off + CHUNK_HDR_LEN) != 1) goto ioerr;
        if (record_crc(hdr, payload.data, len) != get32(hdr + 12)) {
            s->corrupt = true;
            break;
        }
        if (want == CHUNK_REC_META) {
            if (chunk_meta_decode(payload.data, len, &s->meta, NULL) != 0) {
                s->corrupt = true;
                break;
            }
            s->meta_ok = true;
        } else {
            chunk_run_t run;
            if (chunk_run_parse(want, payload.data, len, 0, &run) != 0) {
                s->corrupt = true; /* checksummed, yet no valid tag: written by something else */
                break;
            }
            s->events += get32(hdr + 8);
        }
        s->records++;
        off += CHUNK_HDR_LEN + (off_t)len;
        s->good_end = off;
    }
    if (s->corrupt) survey_bad_part(fd, s->good_end ? s->good_end : 0, s, &payload);
    weir_buf_free(&payload);
    return 0;
ioerr:
    weir_buf_free(&payload);
    weir_err_set(err, "read: %s", strerror(errno));
    return -1;
}

int chunk_reader_open(chunk_reader_t *r, const char *path, off_t end, weir_err_t *err)
{
    memset(r, 0, sizeof *r);
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        weir_err_set(err, "open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(r->fd, &st) != 0) {
        weir_err_set(err, "stat %s: %s", path, strerror(errno));
        close(r->fd);
        r->fd = -1;
        return -1;
    }
    r->end = (end == 0 || end > st.st_size) ? st.st_size : end;
    r->path = weir_strdup(path);
    return 0;
}

void chunk_reader_open_mem(chunk_reader_t *r, const char *records, size_t len)
{
    memset(r, 0, sizeof *r);
    r->fd = -1;
    r->mem = records;
    r->end = (off_t)len;
    r->path = weir_strdup("(memory chunk)");
}

/* The header and payload of the record at r->off; a file's payload is read into r->payload,
 * memory's is pointed at. 1, or 0 when no whole record is left, or -1 on a read error. */
static int reader_record(chunk_reader_t *r, char hdr[CHUNK_HDR_LEN], const char **payload)
{
    if (r->off + CHUNK_HDR_LEN > r->end) return 0;
    if (r->mem)
        memcpy(hdr, r->mem + r->off, CHUNK_HDR_LEN);
    else if (read_full(r->fd, hdr, CHUNK_HDR_LEN, r->off) != 1)
        return -1;
    uint32_t len = get32(hdr + 4);
    if (r->off + CHUNK_HDR_LEN + (off_t)len > r->end) return 0;
    if (r->mem) {
        *payload = r->mem + r->off + CHUNK_HDR_LEN;
        return 1;
    }
    r->payload.len = 0;
    weir_buf_reserve(&r->payload, len);
    if (len && read_full(r->fd, r->payload.data, len, r->off + CHUNK_HDR_LEN) != 1) return -1;
    r->payload.len = len;
    *payload = r->payload.data;
    return 1;
}

int chunk_reader_next(chunk_reader_t *r, chunk_run_t *run, weir_err_t *err)
{
    char hdr[CHUNK_HDR_LEN];
    const char *payload = NULL;
    int rc;
    while ((rc = reader_record(r, hdr, &payload)) == 1) {
        uint32_t len = get32(hdr + 4);
        off_t at = r->off;
        r->off += CHUNK_HDR_LEN + (off_t)len;
        if (hdr[2] != CHUNK_REC_EVENTS && hdr[2] != CHUNK_REC_TAGGED) continue;
        if (record_crc(hdr, payload, len) != get32(hdr + 12)) {
            weir_err_set(err, "%s: checksum mismatch at byte %lld", r->path, (long long)at);
            return -1;
        }
        if (chunk_run_parse(hdr[2], payload, len, get32(hdr + 8), run) != 0) {
            weir_err_set(err, "%s: record at byte %lld has no valid tag", r->path, (long long)at);
            return -1;
        }
        r->events += run->count;
        return 1;
    }
    if (rc < 0) weir_err_set(err, "read %s: %s", r->path, strerror(errno));
    return rc;
}

void chunk_reader_close(chunk_reader_t *r)
{
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
    free(r->path);
    r->path = NULL;
    weir_buf_free(&r->payload);
}
