/* Fluentd's buffer file names and .meta files, for adoption (buffer.c's adopt_fluentd). A
 * .meta comes from a volume another program wrote, so it is parsed as untrusted bytes: every
 * msgpack read is bounded by the buffer, and the parser is a pure function of those bytes
 * (fluentd_meta_parse) so the fuzz target can drive it without files. */
#include "fluentd_meta.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weir/buffer.h"
#include "weir/mp.h"

bool buffer_file_name_parse(const char *name, const char *suffix, char *state, char hex[33])
{
    /* buffer.<b|q><32 hex><suffix> */
    if (strncmp(name, "buffer.", 7) != 0 || strlen(name) != 7 + 1 + 32 + strlen(suffix))
        return false;
    if ((name[7] != 'b' && name[7] != 'q') || strcmp(name + 40, suffix) != 0) return false;
    for (int i = 0; i < 32; i++) {
        char ch = name[8 + i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
        hex[i] = ch;
    }
    hex[32] = '\0';
    if (state) *state = name[7];
    return true;
}

bool fluentd_name_parse(const char *name, char hex[33])
{
    return buffer_file_name_parse(name, ".log", NULL, hex);
}

int fluentd_meta_parse(const char *data, size_t len, chunk_meta_t *m, uint64_t *records)
{
    memset(m, 0, sizeof *m);
    const char *p = data, *end = data + len;
    if (len >= 6 && (unsigned char)data[0] == 0xc1 && data[1] == 0) {
        uint32_t mlen = ((uint32_t)(unsigned char)data[2] << 24) |
                        ((uint32_t)(unsigned char)data[3] << 16) |
                        ((uint32_t)(unsigned char)data[4] << 8) | (unsigned char)data[5];
        if (mlen > len - 6) goto bad;
        p = data + 6;
        end = p + mlen;
    }
    weir_mp_obj_t o, k, v;
    ssize_t h = weir_mp_read(p, (size_t)(end - p), &o);
    if (h <= 0 || o.type != WEIR_MP_MAP) goto bad;
    p += h;
    bool have_id = false;
    for (uint32_t i = 0; i < o.v.n; i++) {
        ssize_t kn = weir_mp_read(p, (size_t)(end - p), &k);
        if (kn <= 0) goto bad;
        p += kn;
        const char *vstart = p;
        ssize_t vn = weir_mp_read(p, (size_t)(end - p), &v);
        if (vn <= 0) goto bad;
        if (chunk_meta_key_is(&k, "id") && v.type == WEIR_MP_BIN && v.len == 16) {
            memcpy(m->id, v.ptr, 16);
            have_id = true;
        } else if (chunk_meta_key_is(&k, "timekey") &&
                   (v.type == WEIR_MP_UINT || v.type == WEIR_MP_INT)) {
            m->has_timekey = true;
            m->timekey = v.type == WEIR_MP_UINT ? (int64_t)v.v.u : v.v.i;
        } else if (chunk_meta_key_is(&k, "tag") && v.type == WEIR_MP_STR) {
            if (chunk_meta_take_tag(m, &v) != 0) goto bad;
        } else if (chunk_meta_key_is(&k, "s") && v.type == WEIR_MP_UINT) {
            *records = v.v.u;
        } else if (chunk_meta_key_is(&k, "variables") && v.type == WEIR_MP_MAP &&
                   v.v.n <= WEIR_BUFFER_MAX_KEYS) {
            /* more variables than <buffer> allows: ignored, the chunk adopted under none */
            if (chunk_meta_take_vars(m, p + vn, end, v.v.n, true) != 0) goto bad;
        }
        ssize_t skip = weir_mp_skip(vstart, (size_t)(end - vstart), 8);
        if (skip <= 0) goto bad;
        p = vstart + skip;
    }
    if (!have_id) goto bad;
    return 0;
bad:
    chunk_meta_free(m);
    return -1;
}

int fluentd_meta_read(const char *path, chunk_meta_t *m, uint64_t *records)
{
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char *buf = weir_malloc(FLUENTD_META_MAX);
    ssize_t n = read(fd, buf, FLUENTD_META_MAX);
    close(fd);
    int rc = fluentd_meta_parse(buf, n > 0 ? (size_t)n : 0, m, records);
    free(buf);
    return rc;
}
