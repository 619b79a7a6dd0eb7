/* What an object is called: fluent-plugin-s3's s3_object_key_format, store_as and the
 * endpoint rules, exactly as its configure and write methods apply them.
 *
 * A key is built in three passes, in Fluentd's order (s3-output.md 1.7.2):
 *   1. %{path} and %{file_extension} (here done once, at configure time, after %{hostname});
 *   2. the buffer placeholders: strftime over the chunk's time bucket, ${tag}, ${chunk_id},
 *      record keys (weir_placeholders_expand);
 *   3. %{time_slice}, %{index}, %{hex_random}, %{uuid_flush} (+ %{hms_slice}, %{date_slice}
 *      when check_object is false); any other %{...} becomes the empty string.
 * Pass 1 does not rescan what it inserted. Passes 2 and 3 are one scan (after the strftime
 * over the template) that never rescans what it inserted either: Ruby's gsub would expand a
 * %{...} that arrived inside a tag or record value; weir keeps it as written, so a tag cannot
 * pick parts of the key or remove characters from it. */
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "weir/format.h"
#include "weir/log.h"
#include "weir/placeholder.h"
#include "weir/s3.h"

/* ---- store_as ---------------------------------------------------------------------------- */

int s3_store_as_parse(const char *name, s3_store_as_t *out, weir_err_t *err)
{
    static const struct {
        const char *name;
        s3_store_as_t v;
    } known[] = {
        {"gzip", S3_STORE_GZIP},
        {"zstd", S3_STORE_ZSTD},
        {"json", S3_STORE_JSON},
        {"text", S3_STORE_TEXT},
    };
    static const char *const unsupported[] = {"lzo", "lzma2", "gzip_command", "parquet"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
        if (strcmp(name, known[i].name) == 0) {
            *out = known[i].v;
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++) {
        if (strcmp(name, unsupported[i]) == 0) {
            weir_err_set(err,
                         "store_as %s is not supported by weir (it runs an external command or "
                         "writer); use gzip, zstd, json or text",
                         name);
            return -1;
        }
    }
    /* Fluentd: unknown compressor -> warning and the text compressor */
    *out = S3_STORE_TEXT;
    return 1;
}

const char *s3_store_extension(s3_store_as_t s)
{
    switch (s) {
    case S3_STORE_GZIP:
        return "gz";
    case S3_STORE_ZSTD:
        return "zst";
    case S3_STORE_JSON:
        return "json";
    case S3_STORE_TEXT:
        break;
    }
    return "txt";
}

const char *s3_store_content_type(s3_store_as_t s)
{
    switch (s) {
    case S3_STORE_GZIP:
        return "application/x-gzip";
    case S3_STORE_ZSTD:
        return "application/x-zst";
    case S3_STORE_JSON:
        return "application/json";
    case S3_STORE_TEXT:
        break;
    }
    return "text/plain";
}

/* ---- endpoints --------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

bool s3_endpoint_rejected(const char *endpoint)
{
    if (!ends_with(endpoint, "amazonaws.com")) return false;
    if (ends_with(endpoint, "vpce.amazonaws.com")) return false;
    return !strstr(endpoint, "fips") && !strstr(endpoint, "gov");
}

bool s3_bucket_dns_compatible(const char *bucket, bool https)
{
    size_t n = strlen(bucket);
    if (n < 3 || n > 63) return false;
    bool all_digits_dots = true;
    for (size_t i = 0; i < n; i++) {
        char c = bucket[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '-' && c != '.') return false;
        if ((i == 0 || i == n - 1) && !alnum) return false;
        if (c == '.' && (bucket[i + 1] == '.' || bucket[i + 1] == '-' || bucket[i - 1] == '-'))
            return false;
        if (c != '.' && !(c >= '0' && c <= '9')) all_digits_dots = false;
    }
    if (all_digits_dots) return false; /* looks like an IP address */
    return !(https && strchr(bucket, '.'));
}

/* ---- index, hex_random, time slice ------------------------------------------------------- */

int s3_index_format_parse(const char *fmt, s3_index_fmt_t *out)
{
    /* ^%(0\d*)?[dxX]$ */
    const char *p = fmt;
    if (*p++ != '%') return -1;
    int width = 0;
    if (*p == '0') {
        p++;
        while (*p >= '0' && *p <= '9') {
            width = width * 10 + (*p - '0');
            if (width > 64) return -1; /* a width nobody means; keeps keys bounded */
            p++;
        }
    }
    if (*p != 'd' && *p != 'x' && *p != 'X') return -1;
    if (p[1]) return -1;
    out->conv = *p;
    out->width = width;
    return 0;
}

void s3_index_format(const s3_index_fmt_t *f, long i, weir_buf_t *out)
{
    switch (f->conv) {
    case 'x':
        weir_buf_printf(out, "%0*lx", f->width, (unsigned long)i);
        break;
    case 'X':
        weir_buf_printf(out, "%0*lX", f->width, (unsigned long)i);
        break;
    default:
        weir_buf_printf(out, "%0*ld", f->width, i);
        break;
    }
}

void s3_hex_random(const char *id_hex, int64_t len, weir_buf_t *out)
{
    int64_t n = (int64_t)strlen(id_hex);
    int64_t take = len >= 0 ? (len < n ? len : n) : (n + len > 0 ? n + len : 0);
    for (int64_t i = 0; i < take; i++)
        weir_buf_putc(out, id_hex[n - 1 - i]);
}

const char *s3_timekey_format(double timekey)
{
    if (timekey < 60) return "%Y%m%d%H%M%S";
    if (timekey < 3600) return "%Y%m%d%H%M";
    if (timekey < 86400) return "%Y%m%d%H";
    return "%Y%m%d";
}

static void uuid_v4(char out[37])
{
    unsigned char r[16];
    if (RAND_bytes(r, sizeof r) != 1) abort(); /* no randomness: nothing safe to do */
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    static const char hx[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = hx[r[i] >> 4];
        *o++ = hx[r[i] & 15];
    }
    *o = '\0';
}

/* ---- the template ------------------------------------------------------------------------ */

static bool has(const char *s, const char *what)
{
    return strstr(s, what) != NULL;
}

static void warn_collisions(const char *fmt, const s3_keyfmt_opts_t *o)
{
    bool unique = has(fmt, "${chunk_id}") || has(fmt, "%{uuid_flush}") || has(fmt, "%{hex_random}");
    if (o->parallel && !unique)
        weir_warn("s3: flush_thread_count > 1 and s3_object_key_format '%s' has none of "
                  "${chunk_id}, %%{uuid_flush}, %%{hex_random}: two flushes can pick the same "
                  "key and one object overwrites the other",
                  fmt);
    if (o->check_object && !unique && !has(fmt, "%{index}"))
        weir_warn("s3: s3_object_key_format '%s' has none of %%{index}, %%{uuid_flush}, "
                  "${chunk_id}, %%{hex_random}: a second chunk for the same key fails with "
                  "\"duplicated path is generated\" (or overwrites with overwrite true)",
                  fmt);
}

/* Placeholders whose value can differ between two attempts at the same chunk. A chunk is
 * uploaded again when weir stops or crashes after S3 stored its object but before the chunk was
 * deleted; under another key that is a second object with the same events, which Snowpipe
 * loads as a new file. Stable: ${chunk_id} and %{hex_random} (the chunk's id, kept on disk with
 * it), %{time_slice}, %{date_slice} and strftime (the chunk's time bucket), ${tag} and record
 * keys (the chunk's own), %{path}, %{file_extension}, %{hostname} (fixed at start). */
static void warn_unstable(const char *fmt, bool check_object)
{
    /* when the placeholder is expanded: always, with check_object, without it */
    enum { ANY, CHECK, NOCHECK };
    static const struct {
        const char *name;
        int when;
        const char *why;
    } unstable[] = {
        {"%{uuid_flush}", ANY, "is drawn anew at every attempt"},
        {"%{index}", CHECK,
         "is the first index that check_object's HEAD requests find free, so the retry finds "
         "its own object at _N and writes the next"},
        {"%{hms_slice}", NOCHECK, "is the time of the upload, not of the events"},
    };
    for (size_t i = 0; i < sizeof unstable / sizeof *unstable; i++) {
        int when = unstable[i].when;
        if ((when == CHECK && !check_object) || (when == NOCHECK && check_object) ||
            !has(fmt, unstable[i].name))
            continue;
        weir_warn("s3: s3_object_key_format '%s': %s cannot be stable across a retry: it %s. "
                  "A chunk uploaded again after a crash or a restart (S3 had stored it, weir had "
                  "not yet deleted the chunk) becomes a second object with the same events, and "
                  "Snowpipe loads them twice. Use ${chunk_id} instead (the chunk's own id, kept "
                  "with it on disk): its retry writes the same key with the same bytes",
                  fmt, unstable[i].name, unstable[i].why);
    }
}

int s3_keyfmt_init(s3_keyfmt_t *k, const s3_keyfmt_opts_t *o, weir_err_t *err)
{
    static const char *const removed[] = {"%{uuid}", "%{uuid:random}", "%{uuid:hostname}",
                                          "%{uuid:timestamp}"};
    memset(k, 0, sizeof *k);
    const char *fmt = o->format ? o->format : S3_DEFAULT_KEY_FORMAT;
    if (!o->check_object) {
        if (o->format)
            weir_warn("s3: check_object is false and s3_object_key_format is set: make sure the "
                      "format is unique for every write, or an existing object is overwritten");
        else
            fmt = S3_NOCHECK_KEY_FORMAT;
    }
    if (!o->format)
        weir_warn("s3: s3_object_key_format is not set: using '%s'. Fluentd's v2 will default to "
                  "${chunk_id} instead of %%{index} to avoid object conflicts",
                  fmt);
    for (size_t i = 0; i < sizeof removed / sizeof *removed; i++) {
        if (has(fmt, removed[i])) {
            weir_err_set(err,
                         "s3_object_key_format: the %s placeholder was removed; use "
                         "%%{uuid_flush}, %%{hex_random} or ${chunk_id}",
                         removed[i]);
            return -1;
        }
    }
    if (s3_index_format_parse(o->index_format ? o->index_format : "%d", &k->index) != 0) {
        weir_err_set(err,
                     "index_format '%s' is invalid: it must match ^%%(0\\d*)?[dxX]$ "
                     "(for example %%d, %%04d, %%x)",
                     o->index_format);
        return -1;
    }
    if (o->hex_random_length > S3_HEX_RANDOM_MAX) {
        weir_err_set(err, "hex_random_length %lld is too long: at most %d",
                     (long long)o->hex_random_length, S3_HEX_RANDOM_MAX);
        return -1;
    }
    k->hex_random_length = o->hex_random_length;
    k->check_object = o->check_object;
    k->uuid_flush = has(fmt, "%{uuid_flush}");
    warn_collisions(fmt, o);
    warn_unstable(fmt, o->check_object);

    weir_buf_t a, b;
    weir_buf_init(&a);
    weir_buf_init(&b);
    if (has(fmt, "%{hostname}"))
        weir_warn("s3: %%{hostname} will be removed in the future; use \"#{Socket.gethostname}\" "
                  "or the host name itself");
    const char *hn[] = {"hostname"}, *hv[] = {o->hostname ? o->hostname : ""};
    weir_placeholders_percent(fmt, &(weir_percent_vars_t){hn, hv, 1}, true, &a);
    weir_buf_putc(&a, '\0');
    const char *pn[] = {"path", "file_extension"};
    const char *pv[] = {o->path ? o->path : "", o->extension ? o->extension : ""};
    weir_placeholders_percent(a.data, &(weir_percent_vars_t){pn, pv, 2}, true, &b);
    weir_buf_putc(&b, '\0');
    weir_buf_free(&a);
    k->tmpl = b.data;
    if (o->timekey > 0)
        k->time_slice_format = weir_strdup(o->time_slice_format ? o->time_slice_format
                                                                : s3_timekey_format(o->timekey));
    return 0;
}

char *s3_static_prefix(const char *path)
{
    size_t n = 0;
    while (path[n] && path[n] != '%' && !(path[n] == '$' && path[n + 1] == '{') &&
           !(path[n] == '#' && path[n + 1] == '{'))
        n++;
    return weir_strndup(path, n);
}

void s3_keyfmt_free(s3_keyfmt_t *k)
{
    free(k->tmpl);
    free(k->time_slice_format);
    memset(k, 0, sizeof *k);
}

/* The chunk's time bucket in the buffer's timekey zone, as %{time_slice} shows it. */
static int time_slice(const s3_keyfmt_t *k, const weir_buffer_t *b, const weir_chunk_t *c,
                      weir_buf_t *out, weir_err_t *err)
{
    int64_t tk;
    if (!k->time_slice_format || !weir_chunk_timekey(c, &tk)) return 0;
    int off = weir_buffer_timekey_offset(b, tk);
    char zone[16];
    snprintf(zone, sizeof zone, "%c%02d:%02d", off < 0 ? '-' : '+', abs(off) / 3600,
             abs(off) % 3600 / 60);
    weir_timefmt_t tf;
    if (weir_timefmt_init(&tf, k->time_slice_format, false,
                          weir_buffer_timekey_utc(b) ? NULL : zone, err) != 0)
        return -1;
    weir_time_t t = {(uint32_t)tk, 0};
    weir_timefmt_append(&tf, t, out);
    weir_timefmt_free(&tf);
    return 0;
}

int s3_key_build(const s3_keyfmt_t *k, const weir_buffer_t *b, const weir_chunk_t *c,
                 const s3_key_vars_t *v, weir_buf_t *out, weir_err_t *err)
{
    weir_buf_t ts, idx, hex;
    weir_buf_init(&ts);
    weir_buf_init(&idx);
    weir_buf_init(&hex);
    int rc = -1;
    size_t start = out->len;
    if (time_slice(k, b, c, &ts, err) != 0) goto out;
    weir_buf_putc(&ts, '\0');
    s3_index_format(&k->index, v->index, &idx);
    weir_buf_putc(&idx, '\0');
    s3_hex_random(weir_chunk_id_hex(c), k->hex_random_length, &hex);
    weir_buf_putc(&hex, '\0');
    char uuid[37] = "";
    if (k->uuid_flush) uuid_v4(uuid);
    struct tm tm;
    gmtime_r(&v->now, &tm);
    char hmsbuf[16];
    strftime(hmsbuf, sizeof hmsbuf, "%H%M%S", &tm);

    const char *names[6], *values[6];
    size_t n = 0;
    names[n] = "time_slice", values[n++] = ts.data;
    names[n] = "hex_random", values[n++] = hex.data;
    if (k->uuid_flush) names[n] = "uuid_flush", values[n++] = uuid;
    if (k->check_object) {
        names[n] = "index", values[n++] = idx.data;
    } else {
        names[n] = "hms_slice", values[n++] = hmsbuf;
        names[n] = "date_slice", values[n++] = ts.data;
    }
    if (weir_placeholders_expand_vars(k->tmpl, b, c, &(weir_percent_vars_t){names, values, n}, out,
                                      err) != 0)
        goto out;
    if (out->len - start == 0) {
        weir_err_set(err, "s3_object_key_format '%s' produced an empty key", k->tmpl);
        goto out;
    }
    if (out->len - start > S3_KEY_MAX) {
        weir_err_set(err, "object key of %zu bytes is longer than S3's limit of %d: %.80s...",
                     out->len - start, S3_KEY_MAX, out->data + start);
        goto out;
    }
    rc = 0;
out:
    if (rc != 0) out->len = start;
    weir_buf_free(&ts);
    weir_buf_free(&idx);
    weir_buf_free(&hex);
    return rc;
}
