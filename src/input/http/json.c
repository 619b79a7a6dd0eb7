/* JSON text → msgpack, in one pass and without building a tree: the hot path of the http
 * input (every Teleport event is one JSON object).
 *
 * The result matches what Fluentd stores after Oj (compat mode, bigdecimal_load :float) and
 * a Ruby Hash: keys keep their order, a repeated key keeps its first place and takes its last
 * value, integers that fit 64 bits stay integers and larger ones become floats, other numbers
 * are float64, and \uXXXX escapes become UTF-8 (a lone surrogate becomes U+FFFD).
 *
 * A container's header size depends on its element count, known only at its end. For texts
 * of JSON_PRESIZE_MIN bytes or more, a first, cheap pass over the text (presize) counts the
 * elements of every container with 16 or more (a 1-byte header fits the others), so each container
 * is written behind a placeholder of exactly its final header's size and never moved. Only an
 * object whose repeated keys shrink it into a smaller header class is moved, once, when it closes
 * (the dedupe rewrites it then anyway). Moving every container's bytes once per enclosing level
 * cost O(size x depth): a 32 MiB body 100 levels deep took 0.36 s of loop time against 0.05 s flat.
 *
 * Invariant: on failure `out` is cut back to its length on entry. */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "weir/hash.h"
#include "weir/http_input.h"

#define JSON_DEDUPE_LINEAR 16 /* objects with more keys find repeats with a keyed hash set */
#define JSON_HDR_MAX 5        /* map32/array32 header */
#define JSON_FIX_MAX 16       /* fixarray/fixmap hold fewer elements than this */
/* Texts shorter than this skip presize: moving their containers costs at most this many bytes
 * per level (400 KiB at the depth limit, microseconds), less than the extra pass costs the
 * common one-event request (about 15% of its conversion). */
#define JSON_PRESIZE_MIN 4096
#define JSON_NUM_LOCAL 64 /* numbers longer than this are copied to the heap for strtod */

/* A container that needs more than a 1-byte header: its place in document order (the how
 * manyth '[' or '{') and its element count. */
typedef struct jp_big {
    size_t ordinal;
    uint32_t count;
} jp_big_t;

_Thread_local uint64_t weir_http_json_moved;

typedef struct jp {
    const char *s, *p, *end;
    weir_buf_t *out;
    msgpack_packer pk;
    int depth, max_depth;
    weir_buf_t str; /* an unescaped string */
    size_t *ents;   /* per entry of the open objects: key offset, value offset in out */
    size_t nents, ents_cap;
    weir_hset_t keys; /* repeated keys of large objects (keyed: the keys are the sender's) */
    size_t *first;    /* per entry of the object being closed: the first entry with its key */
    size_t first_cap;
    jp_big_t *bigs; /* from presize, in document order */
    size_t nbigs, next_big;
    size_t ordinal; /* containers opened so far */
    const char *err;
    size_t err_at;
} jp_t;

static int parse_value(jp_t *j);

static int fail(jp_t *j, const char *msg)
{
    if (!j->err) {
        j->err = msg;
        j->err_at = (size_t)(j->p - j->s);
    }
    return -1;
}

static void skip_ws(jp_t *j)
{
    const char *p = j->p;
    while (p < j->end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    j->p = p;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* ---- scalars ------------------------------------------------------------------------------ */

static int hex4(const char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(weir_buf_t *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    weir_buf_append(b, u, n);
}

/* A \u escape at p (p[0] == '\\', p[1] == 'u'): appends the code point, pairing surrogates.
 * Returns the bytes consumed, or 0 for bad hex. */
static size_t unicode_escape(jp_t *j, const char *p)
{
    uint32_t cp, lo;
    if (j->end - p < 6 || hex4(p + 2, &cp) != 0) return 0;
    size_t used = 6;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (j->end - p >= 12 && p[6] == '\\' && p[7] == 'u' && hex4(p + 8, &lo) == 0 &&
            lo >= 0xdc00 && lo <= 0xdfff) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            used = 12;
        } else {
            cp = 0xfffd;
        }
    } else if (cp >= 0xdc00 && cp <= 0xdfff) {
        cp = 0xfffd;
    }
    put_utf8(&j->str, cp);
    return used;
}

static bool plain(char c)
{
    return c != '"' && c != '\\' && (unsigned char)c >= 0x20;
}

static void pack_str(jp_t *j, const char *s, size_t n)
{
    msgpack_pack_str(&j->pk, n);
    msgpack_pack_str_body(&j->pk, s, n);
}

static int parse_string(jp_t *j)
{
    const char *p = j->p + 1, *e = j->end, *start = p;
    while (p < e && plain(*p))
        p++;
    if (p < e && *p == '"') { /* no escapes: the common case */
        pack_str(j, start, (size_t)(p - start));
        j->p = p + 1;
        return 0;
    }
    j->str.len = 0;
    weir_buf_append(&j->str, start, (size_t)(p - start));
    while (p < e) {
        if (*p == '"') {
            pack_str(j, j->str.data, j->str.len);
            j->p = p + 1;
            return 0;
        }
        j->p = p;
        if ((unsigned char)*p < 0x20) return fail(j, "control character in a string");
        if (plain(*p)) {
            const char *q = p;
            while (q < e && plain(*q))
                q++;
            weir_buf_append(&j->str, p, (size_t)(q - p));
            p = q;
            continue;
        }
        if (e - p < 2) break;
        char c = p[1], out;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            out = c;
            break;
        case 'b':
            out = '\b';
            break;
        case 'f':
            out = '\f';
            break;
        case 'n':
            out = '\n';
            break;
        case 'r':
            out = '\r';
            break;
        case 't':
            out = '\t';
            break;
        case 'u': {
            size_t used = unicode_escape(j, p);
            if (!used) return fail(j, "bad \\u escape");
            p += used;
            continue;
        }
        default:
            return fail(j, "bad escape in a string");
        }
        weir_buf_putc(&j->str, out);
        p += 2;
    }
    j->p = e;
    return fail(j, "unterminated string");
}

static const char *digits_end(const char *p, const char *e)
{
    while (p < e && is_digit(*p))
        p++;
    return p;
}

static int parse_number(jp_t *j)
{
    const char *p = j->p, *e = j->end, *start = p;
    bool neg = *p == '-', is_int = true;
    if (neg) p++;
    if (p >= e || !is_digit(*p)) return fail(j, "invalid number");
    const char *int_start = p;
    p = *p == '0' ? p + 1 : digits_end(p, e);
    const char *int_end = p;
    if (p < e && *p == '.') {
        if (++p >= e || !is_digit(*p)) return fail(j, "invalid number");
        p = digits_end(p, e);
        is_int = false;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        if (++p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || !is_digit(*p)) return fail(j, "invalid number");
        p = digits_end(p, e);
        is_int = false;
    }
    j->p = p;
    if (is_int) {
        uint64_t v = 0;
        bool over = false;
        for (const char *q = int_start; q < int_end && !over; q++) {
            uint64_t d = (uint64_t)(*q - '0');
            if (v > (UINT64_MAX - d) / 10)
                over = true;
            else
                v = v * 10 + d;
        }
        if (!over && !neg) return msgpack_pack_uint64(&j->pk, v);
        if (!over && v <= (uint64_t)INT64_MAX) return msgpack_pack_int64(&j->pk, -(int64_t)v);
        if (!over && v == (uint64_t)INT64_MAX + 1) return msgpack_pack_int64(&j->pk, INT64_MIN);
    }
    size_t n = (size_t)(p - start);
    char local[JSON_NUM_LOCAL + 1];
    char *buf = n <= JSON_NUM_LOCAL ? local : weir_malloc(n + 1);
    memcpy(buf, start, n);
    buf[n] = '\0';
    double d = strtod(buf, NULL); /* correctly rounded; overflow gives ±inf, as Ruby does */
    if (buf != local) free(buf);
    return msgpack_pack_double(&j->pk, d);
}

static int parse_literal(jp_t *j, const char *word, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return fail(j, "unexpected character");
    j->p += n;
    if (word[0] == 't') return msgpack_pack_true(&j->pk);
    if (word[0] == 'f') return msgpack_pack_false(&j->pk);
    return msgpack_pack_nil(&j->pk);
}

/* ---- containers --------------------------------------------------------------------------- */

/* The size of the header that n elements take. */
static size_t hdr_size(size_t n)
{
    return n < JSON_FIX_MAX ? 1 : n < 65536 ? 3 : JSON_HDR_MAX;
}

/* Writes a placeholder of the size presize predicted; returns its offset (*psize its size). */
static size_t open_container(jp_t *j, size_t *psize)
{
    size_t hdr = j->out->len, ord = j->ordinal++;
    *psize = 1;
    if (j->next_big < j->nbigs && j->bigs[j->next_big].ordinal == ord)
        *psize = hdr_size(j->bigs[j->next_big++].count);
    weir_buf_append(j->out, "\0\0\0\0\0", *psize);
    return hdr;
}

static void close_container(jp_t *j, size_t hdr, size_t psize, size_t n, bool map)
{
    size_t clen = j->out->len - hdr - psize;
    unsigned char h[JSON_HDR_MAX];
    size_t hl = hdr_size(n);
    if (hl == 1) {
        h[0] = (unsigned char)((map ? 0x80 : 0x90) | n);
    } else if (hl == 3) {
        h[0] = map ? 0xde : 0xdc;
        h[1] = (unsigned char)(n >> 8);
        h[2] = (unsigned char)n;
    } else {
        h[0] = map ? 0xdf : 0xdd;
        h[1] = (unsigned char)(n >> 24);
        h[2] = (unsigned char)(n >> 16);
        h[3] = (unsigned char)(n >> 8);
        h[4] = (unsigned char)n;
    }
    if (hl != psize) { /* repeated keys made the object smaller than presize counted */
        if (hl > psize) weir_buf_reserve(j->out, hl - psize);
        char *d = j->out->data;
        memmove(d + hdr + hl, d + hdr + psize, clen);
        weir_http_json_moved += clen;
    }
    memcpy(j->out->data + hdr, h, hl);
    j->out->len = hdr + hl + clen;
}

static void push_ent(jp_t *j, size_t off)
{
    if (j->nents == j->ents_cap) {
        j->ents_cap = j->ents_cap ? j->ents_cap * 2 : 64;
        j->ents = weir_realloc(j->ents, j->ents_cap * sizeof *j->ents);
    }
    j->ents[j->nents++] = off;
}

/* Key i of an object whose entries start at ents[base]: bytes [ents[2i], ents[2i+1]). */
static bool same_key(const jp_t *j, const size_t *e, size_t a, size_t b)
{
    weir_http_key_work++;
    size_t la = e[2 * a + 1] - e[2 * a], lb = e[2 * b + 1] - e[2 * b];
    return la == lb && memcmp(j->out->data + e[2 * a], j->out->data + e[2 * b], la) == 0;
}

/* Fills first[i] with the first entry that has entry i's key. Returns true if any repeats. */
static bool find_repeats(jp_t *j, const size_t *e, size_t n, size_t *first)
{
    bool any = false;
    if (n <= JSON_DEDUPE_LINEAR) {
        for (size_t i = 0; i < n; i++) {
            if (first) first[i] = i;
            for (size_t k = 0; k < i; k++) {
                if (same_key(j, e, k, i)) {
                    any = true;
                    if (first) first[i] = first[k];
                    break;
                }
            }
        }
        return any;
    }
    weir_hset_clear(&j->keys);
    for (size_t i = 0; i < n; i++) {
        size_t k;
        weir_http_key_work++;
        if (first) first[i] = i;
        if (weir_hset_add(&j->keys, j->out->data + e[2 * i], e[2 * i + 1] - e[2 * i], i, &k))
            continue;
        any = true;
        if (first) first[i] = k;
    }
    return any;
}

/* Rewrites the entries so each key appears once, at its first place, with its last value.
 * Returns the number of entries left. */
static size_t dedupe(jp_t *j, size_t base, size_t n)
{
    const size_t *e = j->ents + base;
    if (2 * n > j->first_cap) {
        j->first_cap = 2 * n;
        j->first = weir_realloc(j->first, j->first_cap * sizeof *j->first);
    }
    size_t *first = j->first, *last = first + n;
    if (!find_repeats(j, e, n, first)) return n;
    for (size_t i = 0; i < n; i++)
        last[first[i]] = i;
    size_t content = e[0], end = j->out->len, kept = 0;
    weir_buf_t tmp;
    weir_buf_init(&tmp);
    for (size_t i = 0; i < n; i++) {
        if (first[i] != i) continue;
        size_t l = last[i];
        size_t vend = l + 1 < n ? e[2 * (l + 1)] : end;
        weir_buf_append(&tmp, j->out->data + e[2 * i], e[2 * i + 1] - e[2 * i]);
        weir_buf_append(&tmp, j->out->data + e[2 * l + 1], vend - e[2 * l + 1]);
        kept++;
    }
    memcpy(j->out->data + content, tmp.data, tmp.len);
    j->out->len = content + tmp.len;
    weir_buf_free(&tmp);
    return kept;
}

static int parse_object(jp_t *j)
{
    size_t psize, hdr = open_container(j, &psize), base = j->nents, n = 0;
    j->p++;
    skip_ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        goto done;
    }
    for (;;) {
        skip_ws(j);
        if (j->p >= j->end || *j->p != '"') return fail(j, "expected a string key");
        push_ent(j, j->out->len);
        if (parse_string(j) != 0) return -1;
        skip_ws(j);
        if (j->p >= j->end || *j->p != ':') return fail(j, "expected ':'");
        j->p++;
        push_ent(j, j->out->len);
        if (parse_value(j) != 0) return -1;
        n++;
        skip_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            break;
        }
        return fail(j, "expected ',' or '}'");
    }
done:
    if (n > UINT32_MAX) return fail(j, "too many keys in one object");
    if (n > 1) n = dedupe(j, base, n);
    j->nents = base;
    close_container(j, hdr, psize, n, true);
    return 0;
}

static int parse_array(jp_t *j)
{
    size_t psize, hdr = open_container(j, &psize), n = 0;
    j->p++;
    skip_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        goto done;
    }
    for (;;) {
        if (parse_value(j) != 0) return -1;
        n++;
        skip_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            break;
        }
        return fail(j, "expected ',' or ']'");
    }
done:
    if (n > UINT32_MAX) return fail(j, "too many elements in one array");
    close_container(j, hdr, psize, n, false);
    return 0;
}

/* ---- presize ------------------------------------------------------------------------------ */

static int big_cmp(const void *a, const void *b)
{
    const jp_big_t *x = a, *y = b;
    return x->ordinal < y->ordinal ? -1 : x->ordinal > y->ordinal;
}

/* One pass over the text that counts each container's elements (separators at its level,
 * plus one if it is not empty) and keeps those with JSON_FIX_MAX or more, sorted by ordinal.
 * It trusts the text to be JSON: where it is not, the parser fails anyway; nesting past
 * max_depth stops the count (the parser fails there too). */
/* The closing quote of a string whose content starts at p, or NULL. memchr finds quote
 * candidates; a quote after an odd run of backslashes is escaped. Each byte is looked at a
 * bounded number of times: the backward count stops at the previous candidate. */
static const char *string_end(const char *p, const char *end)
{
    const char *from = p;
    for (;;) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q) return NULL;
        size_t bs = 0;
        while (q - bs > from && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (bs % 2 == 0) return q;
        from = p = q + 1;
    }
}

static void presize_scan(jp_t *j)
{
    struct level {
        size_t ordinal;
        uint32_t seps;
        bool seen;
    } stack[WEIR_HTTP_MAX_DEPTH + 1];
    int depth = 0, max = j->max_depth < WEIR_HTTP_MAX_DEPTH ? j->max_depth : WEIR_HTTP_MAX_DEPTH;
    size_t ordinal = 0, cap = 0;
    for (const char *p = j->s; p < j->end; p++) {
        char c = *p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
        if (c == ']' || c == '}') {
            if (depth == 0) return;
            struct level *l = &stack[--depth];
            size_t n = l->seen ? (size_t)l->seps + 1 : 0;
            if (n < JSON_FIX_MAX) continue;
            if (j->nbigs == cap) {
                cap = cap ? cap * 2 : 64;
                j->bigs = weir_realloc(j->bigs, cap * sizeof *j->bigs);
            }
            j->bigs[j->nbigs++] = (jp_big_t){l->ordinal, n > UINT32_MAX ? UINT32_MAX : (uint32_t)n};
            continue;
        }
        if (depth > 0) {
            if (c == ',') {
                if (stack[depth - 1].seps < UINT32_MAX) stack[depth - 1].seps++;
                continue;
            }
            stack[depth - 1].seen = true;
        }
        if (c == '"') {
            p = string_end(p + 1, j->end);
            if (!p) return;
        } else if (c == '[' || c == '{') {
            if (depth == max) return;
            stack[depth++] = (struct level){ordinal++, 0, false};
        }
    }
}

static void presize(jp_t *j)
{
    if ((size_t)(j->end - j->s) < JSON_PRESIZE_MIN) return;
    presize_scan(j);
    /* containers close innermost first: put them back in document order */
    if (j->nbigs > 1) qsort(j->bigs, j->nbigs, sizeof *j->bigs, big_cmp);
}

static int parse_value(jp_t *j)
{
    skip_ws(j);
    if (j->p >= j->end) return fail(j, "unexpected end of input");
    int rc;
    switch (*j->p) {
    case '{':
    case '[':
        if (++j->depth > j->max_depth) return fail(j, "nested deeper than the limit");
        rc = *j->p == '{' ? parse_object(j) : parse_array(j);
        j->depth--;
        return rc;
    case '"':
        return parse_string(j);
    case 't':
        return parse_literal(j, "true", 4);
    case 'f':
        return parse_literal(j, "false", 5);
    case 'n':
        return parse_literal(j, "null", 4);
    default:
        if (*j->p == '-' || is_digit(*j->p)) return parse_number(j);
        return fail(j, "unexpected character");
    }
}

int weir_http_json_to_msgpack(const char *s, size_t len, int max_depth, weir_buf_t *out,
                              weir_err_t *err)
{
    jp_t j;
    memset(&j, 0, sizeof j);
    j.s = j.p = s;
    j.end = s + len;
    j.out = out;
    j.max_depth = max_depth;
    weir_buf_init(&j.str);
    weir_hset_init(&j.keys);
    msgpack_packer_init(&j.pk, out, weir_buf_msgpack_write);
    size_t start = out->len;
    presize(&j);
    int rc = parse_value(&j);
    if (rc == 0) {
        skip_ws(&j);
        if (j.p != j.end) rc = fail(&j, "unexpected data after the JSON value");
    }
    if (rc != 0) {
        out->len = start;
        if (j.err && strcmp(j.err, "nested deeper than the limit") == 0)
            weir_err_set(err, "invalid JSON at byte %zu: nested deeper than %d levels", j.err_at,
                         max_depth);
        else
            weir_err_set(err, "invalid JSON at byte %zu: %s", j.err_at, j.err ? j.err : "?");
    }
    weir_buf_free(&j.str);
    free(j.ents);
    weir_hset_free(&j.keys);
    free(j.first);
    free(j.bigs);
    return rc;
}
