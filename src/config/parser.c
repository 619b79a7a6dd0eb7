/* The fluent.conf parser: sections, parameters and @include, built into a tree.
 *
 *   <match PATTERN>         a section with an argument, closed by </match>
 *     @type s3              a parameter: key, blanks, value (see lexer.c)
 *     @include extra.conf   another file's content, spliced in right here (globs too)
 *   </match>
 *
 * Sections nest to WEIR_CONF_MAX_DEPTH and includes to WEIR_CONF_MAX_INCLUDE_DEPTH, both
 * counted across files, so neither a typo nor a file that includes itself can recurse without
 * end. Invariants: an included file must close every section it opens (as in Fluentd), and the
 * file names every param and section points to live in the root (conf_root_t), freed with it. */
#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conf_internal.h"
#include "weir/log.h"

/* The root as allocated: the public section first, so a weir_conf_section_t * to the root is a
 * pointer to this struct too. */
typedef struct conf_root {
    weir_conf_section_t sec;
    char **files;
    size_t nfiles;
} conf_root_t;

typedef struct conf_parser {
    conf_root_t *root;
    weir_err_t *err;
    int include_depth;
    bool confined; /* @include may name only files beside the including one */
} conf_parser_t;

static int parse_body(conf_parser_t *P, conf_src_t *s, weir_conf_section_t *sec, int depth,
                      bool file_root);

/* Grows an array about to hold its (n+1)th element. The capacity is implicit: the smallest
 * power of two >= n, so the array is reallocated only when n is 0 or a power of two. */
static void *grow(void *arr, size_t n, size_t elem)
{
    if (n != 0 && (n & (n - 1)) != 0) return arr;
    return weir_realloc(arr, (n ? 2 * n : 1) * elem);
}

static const char *intern_file(conf_parser_t *P, const char *name)
{
    conf_root_t *r = P->root;
    r->files = grow(r->files, r->nfiles, sizeof *r->files);
    r->files[r->nfiles] = weir_strdup(name);
    return r->files[r->nfiles++];
}

static weir_conf_section_t *section_new(weir_conf_section_t *parent, char *name, char *arg,
                                        const char *file, conf_pos_t pos)
{
    weir_conf_section_t *c = weir_calloc(1, sizeof *c);
    c->name = name;
    c->arg = arg;
    c->file = file;
    c->line = pos.line;
    c->col = pos.col;
    c->parent = parent;
    parent->children = grow(parent->children, parent->nchildren, sizeof *parent->children);
    parent->children[parent->nchildren++] = c;
    return c;
}

static void param_add(weir_conf_section_t *sec, char *key, char *value, const char *file,
                      conf_pos_t pos)
{
    sec->params = grow(sec->params, sec->nparams, sizeof *sec->params);
    weir_conf_param_t *p = &sec->params[sec->nparams++];
    memset(p, 0, sizeof *p);
    p->key = key;
    p->value = value;
    p->file = file;
    p->line = pos.line;
    p->col = pos.col;
    p->secret = weir_conf_is_secret_key(key);
}

static void section_free(weir_conf_section_t *s)
{
    for (size_t i = 0; i < s->nchildren; i++)
        section_free(s->children[i]);
    for (size_t i = 0; i < s->nparams; i++) {
        free(s->params[i].key);
        free(s->params[i].value);
    }
    free(s->children);
    free(s->params);
    free(s->name);
    free(s->arg);
    if (s->parent) {
        free(s);
        return;
    }
    conf_root_t *r = (conf_root_t *)s;
    for (size_t i = 0; i < r->nfiles; i++)
        free(r->files[i]);
    free(r->files);
    free(r);
}

void weir_conf_free(weir_conf_section_t *root)
{
    if (root) section_free(root);
}

static bool is_name_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static char *scan_name(conf_src_t *s)
{
    const char *start = s->p;
    while (is_name_char(conf_src_peek(s)))
        conf_src_next(s);
    return weir_strndup(start, (size_t)(s->p - start));
}

/* At "</": closes `sec`, which must have been opened in this same file. */
static int parse_close(conf_parser_t *P, conf_src_t *s, weir_conf_section_t *sec, bool file_root)
{
    conf_pos_t at = conf_src_pos(s);
    conf_src_next(s);
    conf_src_next(s);
    char *name = scan_name(s);
    int rc = -1;
    conf_skip_inline_space(s);
    if (conf_src_peek(s) != '>') {
        conf_src_errorf(s, conf_src_pos(s), P->err, "expected '>' to end the tag </%s", name);
        goto out;
    }
    conf_src_next(s);
    char what[300];
    snprintf(what, sizeof what, "</%s>", name);
    if (conf_expect_line_end(s, what, P->err) < 0) goto out;
    if (file_root) {
        conf_src_errorf(s, at, P->err, "unexpected </%s>: no section is open here%s", name,
                        P->include_depth > 0 ? " (an included file must close the sections "
                                               "it opens, and only those)"
                                             : "");
        goto out;
    }
    if (strcmp(name, sec->name) != 0) {
        char label[300], where[300];
        conf_section_label(sec, label, sizeof label);
        weir_conf_where(sec->file, sec->line, sec->col, where, sizeof where);
        conf_src_errorf(s, at, P->err, "expected </%s> to close %s opened at %s, got </%s>",
                        sec->name, label, where, name);
        goto out;
    }
    rc = 0;
out:
    free(name);
    return rc;
}

/* At "<name arg>": opens a child section and parses its body through the matching close. */
static int parse_open(conf_parser_t *P, conf_src_t *s, weir_conf_section_t *sec, int depth)
{
    conf_pos_t at = conf_src_pos(s);
    char got[8];
    conf_src_next(s);
    char *name = scan_name(s);
    char *arg = NULL;
    int c = conf_src_peek(s);
    if (!*name) {
        if (c == -1 || c == '\n' || c == '\r')
            snprintf(got, sizeof got, "nothing");
        else
            snprintf(got, sizeof got, "'%c'", c);
        conf_src_errorf(s, at, P->err, "expected a section name after '<', got %s", got);
        goto err;
    }
    if (c != ' ' && c != '\t' && c != '>') {
        if (c == -1 || c == '\n' || c == '\r')
            conf_src_errorf(s, conf_src_pos(s), P->err, "expected '>' to end the tag <%s", name);
        else
            conf_src_errorf(s, conf_src_pos(s), P->err,
                            "unexpected '%c' in the section name <%s%c...>: names are letters, "
                            "digits and '_'",
                            c, name, c);
        goto err;
    }
    conf_skip_inline_space(s);
    const char *astart = s->p;
    while (s->p < s->end && *s->p != '>' && *s->p != '\n')
        conf_src_next(s);
    if (conf_src_peek(s) != '>') {
        conf_src_errorf(s, conf_src_pos(s), P->err, "expected '>' to end the tag <%s", name);
        goto err;
    }
    const char *aend = s->p;
    while (aend > astart && (aend[-1] == ' ' || aend[-1] == '\t'))
        aend--;
    arg = weir_strndup(astart, (size_t)(aend - astart));
    conf_src_next(s);
    char what[300];
    snprintf(what, sizeof what, "<%s%s%s>", name, *arg ? " " : "", arg);
    if (conf_expect_line_end(s, what, P->err) < 0) goto err;
    if (depth + 1 > WEIR_CONF_MAX_DEPTH) {
        conf_src_errorf(s, at, P->err, "%s is nested %d sections deep; the limit is %d", what,
                        depth + 1, WEIR_CONF_MAX_DEPTH);
        goto err;
    }
    weir_conf_section_t *child = section_new(sec, name, arg, s->file, at);
    return parse_body(P, s, child, depth + 1, false);
err:
    free(name);
    free(arg);
    return -1;
}

/* Reads a whole file, refusing one over WEIR_CONF_MAX_FILE_SIZE. *text is NUL-terminated. */
static int read_file(const char *path, char **text, size_t *len, weir_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        weir_err_set(err, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        weir_err_set(err, "cannot read '%s': it is a directory", path);
        fclose(f);
        return -1;
    }
    weir_buf_t b;
    weir_buf_init(&b);
    for (;;) {
        weir_buf_reserve(&b, 65536);
        size_t n = fread(b.data + b.len, 1, b.cap - b.len, f);
        b.len += n;
        if (b.len > WEIR_CONF_MAX_FILE_SIZE) {
            weir_err_set(err, "'%s' is larger than %u bytes, the limit for a configuration file",
                         path, WEIR_CONF_MAX_FILE_SIZE);
            goto err;
        }
        if (n == 0) break;
    }
    if (ferror(f)) {
        weir_err_set(err, "cannot read '%s': %s", path, strerror(errno));
        goto err;
    }
    fclose(f);
    weir_buf_putc(&b, '\0');
    *text = b.data;
    *len = b.len - 1;
    return 0;
err:
    fclose(f);
    weir_buf_free(&b);
    return -1;
}

/* Parses one file's text into `sec` (the root, or the section holding an @include). */
static int parse_text(conf_parser_t *P, weir_conf_section_t *sec, int depth, const char *file,
                      const char *text, size_t len)
{
    if (len > WEIR_CONF_MAX_FILE_SIZE) {
        weir_err_set(P->err,
                     "%s: %zu bytes is larger than %u bytes, the limit for a "
                     "configuration file",
                     file, len, WEIR_CONF_MAX_FILE_SIZE);
        return -1;
    }
    conf_src_t s;
    conf_src_init(&s, file, text, len);
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        while (s.p < nul)
            conf_src_next(&s);
        return conf_src_errorf(&s, conf_src_pos(&s), P->err,
                               "NUL byte in the configuration (is this a text file?)");
    }
    return parse_body(P, &s, sec, depth, true);
}

static int include_file(conf_parser_t *P, weir_conf_section_t *sec, int depth, const char *path,
                        const conf_src_t *s, conf_pos_t at)
{
    char *text = NULL;
    size_t len = 0;
    weir_err_t why = {{0}};
    if (read_file(path, &text, &len, &why) < 0)
        return conf_src_errorf(s, at, P->err, "@include: %s", why.msg);
    weir_debug("config: including %s", path);
    const char *file = intern_file(P, path);
    P->include_depth++;
    int rc = parse_text(P, sec, depth, file, text, len);
    P->include_depth--;
    free(text);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A glob includes its matches in sorted order; one that matches nothing includes nothing,
 * which is what Fluentd does (a conf.d/ directory may well be empty). */
static int include_glob(conf_parser_t *P, weir_conf_section_t *sec, int depth, const char *pattern,
                        const conf_src_t *s, conf_pos_t at)
{
    glob_t g;
    int grc = glob(pattern, GLOB_BRACE, NULL, &g);
    if (grc == GLOB_NOMATCH) {
        weir_debug("config: @include %s matches no file", pattern);
        return 0;
    }
    if (grc != 0) {
        globfree(&g);
        return conf_src_errorf(s, at, P->err, "@include %s: cannot expand the pattern (%s)",
                               pattern,
                               grc == GLOB_ABORTED ? "a directory cannot be read" : "error");
    }
    qsort(g.gl_pathv, g.gl_pathc, sizeof *g.gl_pathv, cmp_str);
    int rc = 0;
    for (size_t i = 0; i < g.gl_pathc && rc == 0; i++)
        rc = include_file(P, sec, depth, g.gl_pathv[i], s, at);
    globfree(&g);
    return rc;
}

/* Resolves `path` against the directory of the including file and includes it. */
static int include_path(conf_parser_t *P, weir_conf_section_t *sec, int depth, const char *path,
                        const conf_src_t *s, conf_pos_t at)
{
    if (strncmp(path, "file://", 7) == 0) path += 7;
    if (strstr(path, "://"))
        return conf_src_errorf(s, at, P->err,
                               "@include %s: remote includes are not supported; download the "
                               "file and include it by path",
                               path);
    if (!*path) return conf_src_errorf(s, at, P->err, "@include needs a file path or pattern");
    if (P->confined && strchr(path, '/'))
        return conf_src_errorf(
            s, at, P->err, "@include %s: only a file name beside this file is allowed here", path);
    if (P->include_depth + 1 > WEIR_CONF_MAX_INCLUDE_DEPTH)
        return conf_src_errorf(s, at, P->err,
                               "@include %s: includes nested more than %d deep (does a file "
                               "include itself?)",
                               path, WEIR_CONF_MAX_INCLUDE_DEPTH);
    const char *slash = strrchr(s->file, '/');
    char *full;
    if (path[0] == '/' || !slash) {
        full = weir_strdup(path);
    } else {
        size_t dlen = (size_t)(slash - s->file) + 1;
        full = weir_malloc(dlen + strlen(path) + 1);
        memcpy(full, s->file, dlen);
        strcpy(full + dlen, path);
    }
    int rc = strpbrk(full, "*?[{") ? include_glob(P, sec, depth, full, s, at)
                                   : include_file(P, sec, depth, full, s, at);
    free(full);
    return rc;
}

/* A line that is not a tag: "key value", "key" alone, or "@include path". */
static int parse_param(conf_parser_t *P, conf_src_t *s, weir_conf_section_t *sec, int depth,
                       bool file_root)
{
    conf_pos_t at = conf_src_pos(s);
    const char *kstart = s->p;
    while (s->p < s->end && !strchr(" \t\r\n", *s->p))
        conf_src_next(s);
    char *key = weir_strndup(kstart, (size_t)(s->p - kstart));
    char *value = NULL;
    conf_skip_inline_space(s);
    bool include = strcmp(key, "@include") == 0 || (file_root && strcmp(key, "include") == 0);
    /* Only the end of the line makes a bare key: "key   # text" has the value "# text", since
     * Fluentd reads a '#' that starts a value as text (see lexer.c). */
    int c = conf_src_peek(s);
    if (c == -1 || c == '\n' || (c == '\r' && conf_src_peek2(s) == '\n')) {
        if (include) {
            conf_src_errorf(s, at, P->err, "%s needs a file path or pattern", key);
            goto err;
        }
        /* "key" alone, as Fluentd's tag_mapped: the value is "" (a bool reads it as true). */
        if (conf_expect_line_end(s, key, P->err) < 0) goto err;
        param_add(sec, key, weir_strdup(""), s->file, at);
        return 0;
    }
    if (include) {
        if (key[0] != '@')
            weir_warn("%s:%d: 'include' is deprecated; use '@include'", s->file, at.line);
        if (conf_scan_string(s, &value, P->err) < 0) goto err;
        int rc = include_path(P, sec, depth, value, s, at);
        free(key);
        free(value);
        return rc;
    }
    if (conf_scan_value(s, &value, P->err) < 0) goto err;
    param_add(sec, key, value, s->file, at);
    return 0;
err:
    free(key);
    return -1;
}

/* Parses statements into `sec` until its close tag, or the end of the file when `file_root`
 * (the top of a file, where `sec` may be the root or the section that holds an @include). */
static int parse_body(conf_parser_t *P, conf_src_t *s, weir_conf_section_t *sec, int depth,
                      bool file_root)
{
    for (;;) {
        conf_skip_blank(s);
        int c = conf_src_peek(s);
        int rc;
        if (c == -1) {
            if (file_root) return 0;
            char label[300];
            conf_section_label(sec, label, sizeof label);
            return conf_errorf_at(P->err, sec->file, sec->line, sec->col,
                                  "%s is never closed: expected </%s> before the end of the "
                                  "file",
                                  label, sec->name);
        }
        if (c == '<' && conf_src_peek2(s) == '/') return parse_close(P, s, sec, file_root);
        if (c == '<')
            rc = parse_open(P, s, sec, depth);
        else
            rc = parse_param(P, s, sec, depth, file_root);
        if (rc < 0) return -1;
    }
}

static conf_root_t *root_new(void)
{
    conf_root_t *r = weir_calloc(1, sizeof *r);
    r->sec.name = weir_strdup("ROOT");
    r->sec.arg = weir_strdup("");
    r->sec.line = 1;
    r->sec.col = 1;
    r->sec.used = true;
    return r;
}

static weir_conf_section_t *parse_string(const char *text, size_t len, const char *name,
                                         bool confined, weir_err_t *err)
{
    conf_root_t *r = root_new();
    conf_parser_t P = {.root = r, .err = err, .confined = confined};
    r->sec.file = intern_file(&P, name ? name : "(string)");
    if (parse_text(&P, &r->sec, 0, r->sec.file, text, len) < 0) {
        weir_conf_free(&r->sec);
        return NULL;
    }
    return &r->sec;
}

weir_conf_section_t *weir_conf_parse_string(const char *text, size_t len, const char *name,
                                            weir_err_t *err)
{
    return parse_string(text, len, name, false, err);
}

weir_conf_section_t *conf_parse_string_confined(const char *text, size_t len, const char *name,
                                                weir_err_t *err)
{
    return parse_string(text, len, name, true, err);
}

weir_conf_section_t *weir_conf_parse_file(const char *path, weir_err_t *err)
{
    char *text;
    size_t len;
    if (read_file(path, &text, &len, err) < 0) return NULL;
    weir_conf_section_t *root = weir_conf_parse_string(text, len, path, err);
    free(text);
    return root;
}

weir_conf_param_t *weir_conf_find(const weir_conf_section_t *s, const char *key)
{
    for (size_t i = s->nparams; i > 0; i--)
        if (strcmp(s->params[i - 1].key, key) == 0) return &s->params[i - 1];
    return NULL;
}

weir_conf_section_t *weir_conf_child(const weir_conf_section_t *s, const char *name, size_t nth)
{
    for (size_t i = 0; i < s->nchildren; i++) {
        if (name && strcmp(s->children[i]->name, name) != 0) continue;
        if (nth-- == 0) return s->children[i];
    }
    return NULL;
}

void weir_conf_section_use(weir_conf_section_t *s)
{
    s->used = true;
}
