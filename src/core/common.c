/* Error messages, checked allocation, the growable byte buffer and the UTF-8 check that every
 * escaper of untrusted text (log lines, metrics labels) shares. */
#include "weir/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void weir_err_set(weir_err_t *err, const char *fmt, ...)
{
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

void weir_err_prefix(weir_err_t *err, const char *fmt, ...)
{
    if (!err) return;
    char prefix[WEIR_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[WEIR_ERR_MAX];
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof err->msg - n - 3;
    size_t olen = strnlen(old, room);
    memcpy(err->msg + n + 2, old, olen);
    err->msg[n + 2 + olen] = '\0';
}

static void oom(size_t n)
{
    fprintf(stderr, "weir: out of memory allocating %zu bytes\n", n);
    abort();
}

void *weir_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *weir_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

void *weir_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *weir_strdup(const char *s)
{
    return weir_strndup(s, strlen(s));
}

char *weir_strndup(const char *s, size_t n)
{
    char *d = weir_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void weir_buf_init(weir_buf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void weir_buf_free(weir_buf_t *b)
{
    free(b->data);
    weir_buf_init(b);
}

void weir_buf_reserve(weir_buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra) return;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    b->data = weir_realloc(b->data, cap);
    b->cap = cap;
}

void weir_buf_append(weir_buf_t *b, const void *p, size_t n)
{
    if (n == 0) return;
    weir_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void weir_buf_putc(weir_buf_t *b, char c)
{
    weir_buf_reserve(b, 1);
    b->data[b->len++] = c;
}

void weir_buf_printf(weir_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    weir_buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

int weir_buf_msgpack_write(void *data, const char *buf, size_t len)
{
    weir_buf_append((weir_buf_t *)data, buf, len);
    return 0;
}

size_t weir_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range, narrower for some leads */
    size_t len;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0; /* overlong */
        if (c == 0xed) hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90; /* overlong */
        if (c == 0xf4) hi = 0x8f; /* past U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}
