/* Interfaces shared by the files of src/config/ only (lexer, JSON scanner, parser, getters,
 * checks), and the config fuzz target. The public surface is weir/config.h. */
#ifndef WEIR_CONF_INTERNAL_H
#define WEIR_CONF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "weir/common.h"
#include "weir/config.h"

/* Nesting of brackets inside one JSON array or hash value. Real configs nest two or three
 * levels; the bound keeps the recursive scanner's stack small whatever the text says. */
#define CONF_JSON_MAX_DEPTH 64

/* A cursor over one file's text. `line` and `bol` (beginning of line) always describe `p`,
 * because the lexer moves only through conf_src_next(), so every error can name its column. */
typedef struct conf_src {
    const char *file; /* shared name owned by the tree */
    const char *p;
    const char *end;
    const char *bol;
    int line;
} conf_src_t;

typedef struct conf_pos {
    int line;
    int col; /* 1-based, counted in bytes */
} conf_pos_t;

void conf_src_init(conf_src_t *s, const char *file, const char *text, size_t len);

static inline int conf_src_peek(const conf_src_t *s)
{
    return s->p < s->end ? (unsigned char)*s->p : -1;
}

static inline int conf_src_peek2(const conf_src_t *s)
{
    return s->p + 1 < s->end ? (unsigned char)s->p[1] : -1;
}

static inline conf_pos_t conf_src_pos(const conf_src_t *s)
{
    conf_pos_t pos = {s->line, (int)(s->p - s->bol) + 1};
    return pos;
}

static inline void conf_src_next(conf_src_t *s)
{
    if (s->p >= s->end) return;
    if (*s->p == '\n') {
        s->line++;
        s->bol = s->p + 1;
    }
    s->p++;
}

/* Skips blanks, newlines and whole comment lines: what may sit between two statements. */
void conf_skip_blank(conf_src_t *s);
/* Skips spaces and tabs only. */
void conf_skip_inline_space(conf_src_t *s);
/* Consumes optional spaces, an optional comment and the newline; an error names `after`. */
int conf_expect_line_end(conf_src_t *s, const char *after, weir_err_t *err);
/* Reads a parameter value starting at the cursor (which sits on its first character) through
 * the end of its line: bare text, 'single', "double" or a JSON array/hash spanning lines.
 * *out is a new string. */
int conf_scan_value(conf_src_t *s, char **out, weir_err_t *err);
/* Same, for places where JSON is not a value kind (the path of @include). */
int conf_scan_string(conf_src_t *s, char **out, weir_err_t *err);

/* weir_conf_parse_string for the fuzz target (test/fuzz/fuzz_config.c): an @include may name
 * only a file or glob in the directory of `name`, never a path with a '/', so arbitrary text
 * cannot make the parser read devices or walk the file system. */
weir_conf_section_t *conf_parse_string_confined(const char *text, size_t len, const char *name,
                                                weir_err_t *err);

/* Sets err to "FILE:LINE:COL: message" and returns -1. */
int conf_errorf_at(weir_err_t *err, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
int conf_src_errorf(const conf_src_t *s, conf_pos_t pos, weir_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "<match test.log>" or "<source>", for messages. */
void conf_section_label(const weir_conf_section_t *s, char *out, size_t outlen);

/* JSON scanning, shared by the lexer (which checks array/hash values as it reads them, '#'
 * comments allowed between tokens) and the getters (which split them into elements). */
typedef struct conf_json {
    const char *p;
    const char *end;
    bool comments;       /* '#' outside a string runs to the end of the line */
    const char *err_at;  /* on failure: where; == end when the text stopped too early */
    const char *err_msg; /* on failure: what was expected */
} conf_json_t;

void conf_json_ws(conf_json_t *j);
/* Checks one JSON value at j->p and moves past it. */
bool conf_json_value(conf_json_t *j, int depth);
/* Decodes the validated JSON string at p (on its opening quote) into out, NUL-terminated.
 * Returns false if it holds a \u0000, which a C string cannot carry. */
bool conf_json_decode_string(const char *p, const char *end, weir_buf_t *out);

#endif
