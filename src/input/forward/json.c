/* JSON requests on the forward port (Fluentd's in_forward accepts a connection whose first
 * byte is '{' or '[' as a stream of JSON values). Each value is converted to the msgpack frame
 * it stands for and then decoded like any other frame: integers stay integers (so a JSON time
 * is an integer time), reals become float64, strings str, and duplicate keys keep the last
 * value, as Fluentd does.
 *
 * Finding where a value ends is a plain bracket/string scan, so jansson only ever parses a
 * complete value. The scan keeps its state (offset, depth, inside a string, after a backslash)
 * in the caller's fwd_json_scan_t and resumes where it stopped, so a value delivered in any
 * number of pieces is scanned once in total: linear in its size. Nesting is capped at
 * FWD_MAX_DEPTH during that scan, which also bounds the recursion of the conversion. jansson
 * hashes object keys with a seed it draws from the system's random source, so a sender cannot
 * flood its tables either. */
#include <jansson.h>
#include <stdbool.h>

#include "forward_internal.h"

static bool json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

_Thread_local uint64_t fwd_json_scan_work;

void fwd_json_scan_reset(fwd_json_scan_t *js)
{
    memset(js, 0, sizeof *js);
}

/* Advances the scan over buf[js->off, len). Returns the end offset (one past the closing
 * bracket) of the value, 0 if it is not complete yet, or -1 when it nests too deeply. */
static long long value_end(fwd_json_scan_t *js, const char *buf, size_t len)
{
    size_t i = js->off;
    fwd_json_scan_work += len - i;
    for (; i < len; i++) {
        char c = buf[i];
        if (js->in_str) {
            if (js->esc)
                js->esc = false;
            else if (c == '\\')
                js->esc = true;
            else if (c == '"')
                js->in_str = false;
            continue;
        }
        if (c == '"') {
            js->in_str = true;
        } else if (c == '[' || c == '{') {
            if (++js->depth > FWD_MAX_DEPTH) return -1;
        } else if (c == ']' || c == '}') {
            if (--js->depth == 0) {
                fwd_json_scan_work -= len - i - 1; /* bytes after the value were not looked at */
                return (long long)(i + 1);
            }
        }
    }
    js->off = len;
    return 0;
}

static void json_to_mp(const json_t *v, weir_buf_t *out)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *val;
        fwd_buf_map_hdr(out, (uint32_t)json_object_size(v));
        json_object_foreach((json_t *)v, key, val)
        {
            fwd_buf_cstr(out, key);
            json_to_mp(val, out);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *val;
        fwd_buf_array_hdr(out, (uint32_t)json_array_size(v));
        json_array_foreach(v, i, val) json_to_mp(val, out);
        break;
    }
    case JSON_STRING:
        fwd_buf_str(out, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        fwd_buf_int(out, (int64_t)json_integer_value(v));
        break;
    case JSON_REAL:
        fwd_buf_double(out, json_real_value(v));
        break;
    case JSON_TRUE:
        weir_buf_putc(out, (char)0xc3);
        break;
    case JSON_FALSE:
        weir_buf_putc(out, (char)0xc2);
        break;
    case JSON_NULL:
        weir_buf_putc(out, (char)0xc0);
        break;
    }
}

int fwd_json_next(fwd_json_scan_t *js, const char *buf, size_t len, size_t max_frame,
                  size_t *consumed, weir_buf_t *frame, weir_err_t *err)
{
    fwd_json_scan_t local;
    if (!js) {
        fwd_json_scan_reset(&local);
        js = &local;
    }
    if (len < js->off) fwd_json_scan_reset(js); /* the caller lost bytes: start over */
    if (!js->started) {
        size_t start = js->off;
        while (start < len && json_ws(buf[start]))
            start++;
        fwd_json_scan_work += start - js->off;
        js->off = js->start = start;
        if (start < len) {
            if (buf[start] != '[' && buf[start] != '{') {
                weir_err_set(err,
                             "forward: JSON request does not start with '[' or '{' (byte 0x%02x)",
                             (unsigned char)buf[start]);
                fwd_json_scan_reset(js);
                return -1;
            }
            js->started = true;
        }
    }
    size_t start = js->start;
    long long end = 0;
    if (js->started) {
        end = value_end(js, buf, len);
        if (end < 0) {
            weir_err_set(err, "forward: JSON request nests deeper than %d levels", FWD_MAX_DEPTH);
            fwd_json_scan_reset(js);
            return -1;
        }
    }
    if (end == 0 ? len > max_frame : (size_t)end - start > max_frame) {
        weir_err_set(err, "forward: JSON request is larger than %zu bytes", max_frame);
        fwd_json_scan_reset(js);
        return -1;
    }
    if (end == 0) return 0;
    fwd_json_scan_reset(js); /* the next value starts after this one, at the caller's new 0 */

    json_error_t je;
    json_t *v = json_loadb(buf + start, (size_t)end - start, JSON_ALLOW_NUL, &je);
    if (!v) {
        weir_err_set(err, "forward: invalid JSON request: %s (at byte %zu)", je.text,
                     start + (size_t)(je.position > 0 ? je.position : 0));
        return -1;
    }
    json_to_mp(v, frame);
    json_decref(v);
    *consumed = (size_t)end;
    return 1;
}
