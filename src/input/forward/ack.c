/* Ack responses: {"ack": <chunk>}. In msgpack the chunk's bytes are echoed verbatim, so the
 * sender sees the same type and bytes it sent (Fluentd compares the str including its trailing
 * newline; Fluent Bit and Go compare strs; anything else is echoed just as faithfully). On a JSON
 * connection the response is JSON text with no trailing newline, as Fluentd writes it.
 *
 * The chunk was validated by the decoder, so rendering it cannot fail; its nesting is bounded
 * by the decoder's depth limit, which bounds the recursion here. */
#include <math.h>
#include <stdio.h>

#include "forward_internal.h"
#include "weir/mp.h"

static const char ack_key[] = {(char)0x81, (char)0xa3, 'a', 'c', 'k'};

static void json_string(weir_buf_t *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    weir_buf_putc(out, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            weir_buf_putc(out, '\\');
            weir_buf_putc(out, (char)c);
        } else if (c == '\n') {
            weir_buf_append(out, "\\n", 2);
        } else if (c == '\r') {
            weir_buf_append(out, "\\r", 2);
        } else if (c == '\t') {
            weir_buf_append(out, "\\t", 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            weir_buf_append(out, e, sizeof e);
        } else {
            weir_buf_putc(out, (char)c);
        }
    }
    weir_buf_putc(out, '"');
}

/* Writes the msgpack value at p as JSON; returns the bytes it occupied (0 if malformed). */
static size_t mp_to_json(const char *p, size_t avail, weir_buf_t *out, int depth)
{
    weir_mp_obj_t o;
    ssize_t h = weir_mp_read(p, avail, &o);
    if (h <= 0 || depth > FWD_MAX_DEPTH) return 0;
    size_t off = (size_t)h;
    switch (o.type) {
    case WEIR_MP_NIL:
        weir_buf_append(out, "null", 4);
        break;
    case WEIR_MP_BOOL:
        weir_buf_printf(out, "%s", o.v.b ? "true" : "false");
        break;
    case WEIR_MP_UINT:
        weir_buf_printf(out, "%llu", (unsigned long long)o.v.u);
        break;
    case WEIR_MP_INT:
        weir_buf_printf(out, "%lld", (long long)o.v.i);
        break;
    case WEIR_MP_FLOAT:
        if (isfinite(o.v.f))
            weir_buf_printf(out, "%.17g", o.v.f);
        else
            weir_buf_append(out, "null", 4);
        break;
    case WEIR_MP_STR:
    case WEIR_MP_BIN:
        json_string(out, o.ptr, o.len);
        break;
    case WEIR_MP_EXT:
        weir_buf_append(out, "null", 4);
        break;
    case WEIR_MP_ARRAY:
    case WEIR_MP_MAP: {
        bool map = o.type == WEIR_MP_MAP;
        weir_buf_putc(out, map ? '{' : '[');
        for (uint32_t i = 0; i < o.v.n; i++) {
            if (i) weir_buf_putc(out, ',');
            size_t n;
            if (map) {
                weir_mp_obj_t k;
                if (weir_mp_read(p + off, avail - off, &k) > 0 &&
                    (k.type == WEIR_MP_STR || k.type == WEIR_MP_BIN)) {
                    n = mp_to_json(p + off, avail - off, out, depth + 1);
                } else { /* JSON keys are strings: quote the key's own JSON text */
                    weir_buf_t tmp;
                    weir_buf_init(&tmp);
                    n = mp_to_json(p + off, avail - off, &tmp, depth + 1);
                    json_string(out, tmp.data ? tmp.data : "", tmp.len);
                    weir_buf_free(&tmp);
                }
                if (n == 0) return 0;
                off += n;
                weir_buf_putc(out, ':');
            }
            n = mp_to_json(p + off, avail - off, out, depth + 1);
            if (n == 0) return 0;
            off += n;
        }
        weir_buf_putc(out, map ? '}' : ']');
        break;
    }
    }
    return off;
}

void fwd_ack_build(const char *chunk, size_t chunk_len, bool json, weir_buf_t *out)
{
    if (!json) {
        weir_buf_reserve(out, sizeof ack_key + chunk_len);
        weir_buf_append(out, ack_key, sizeof ack_key);
        weir_buf_append(out, chunk, chunk_len);
        return;
    }
    weir_buf_append(out, "{\"ack\":", 7);
    size_t mark = out->len;
    if (mp_to_json(chunk, chunk_len, out, 1) == 0) {
        out->len = mark; /* not valid msgpack: answer null rather than half a value */
        weir_buf_append(out, "null", 4);
    }
    weir_buf_putc(out, '}');
}
