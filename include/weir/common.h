/* Small things every module uses: the error carrier, a growable byte buffer, checked
 * allocation. Errors travel as return codes plus a message a user can act on. */
#ifndef WEIR_COMMON_H
#define WEIR_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WEIR_ERR_MAX 512

/* An error message filled by the function that failed. Callers may pass NULL. */
typedef struct weir_err {
    char msg[WEIR_ERR_MAX];
} weir_err_t;

void weir_err_set(weir_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current message with "PREFIX: ". */
void weir_err_prefix(weir_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation that aborts on out-of-memory: weir cannot do anything useful without memory and
 * every size passed here is already bounded by a limit checked at the input. */
void *weir_malloc(size_t n);
void *weir_calloc(size_t n, size_t size);
void *weir_realloc(void *p, size_t n);
char *weir_strdup(const char *s);
char *weir_strndup(const char *s, size_t n);

/* A growable byte buffer. `data` is owned; `len` bytes are valid. */
typedef struct weir_buf {
    char *data;
    size_t len;
    size_t cap;
} weir_buf_t;

void weir_buf_init(weir_buf_t *b);
void weir_buf_free(weir_buf_t *b);
void weir_buf_reserve(weir_buf_t *b, size_t extra);
void weir_buf_append(weir_buf_t *b, const void *p, size_t n);
void weir_buf_putc(weir_buf_t *b, char c);
void weir_buf_printf(weir_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* msgpack-c write callback over a weir_buf_t (pass the buffer as `data`). */
int weir_buf_msgpack_write(void *data, const char *buf, size_t len);

/* Length of the well-formed UTF-8 sequence at s (1 for ASCII, 2-4 otherwise), or 0 when the
 * n bytes at s do not begin one (Unicode table 3-7: no overlong forms, no surrogates, nothing
 * above U+10FFFF). n must be at least 1. */
size_t weir_utf8_seq(const unsigned char *s, size_t n);

#endif
