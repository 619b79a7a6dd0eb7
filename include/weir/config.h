/* fluent.conf: Fluentd's configuration syntax, parsed into a tree of sections.
 *
 * The root section is named "ROOT"; its children are <system>, <source>, <match>, <filter>,
 * <label> and so on, each with params and nested sections (<buffer tag,time>, <transport tls>,
 * <security>, <client>, <user>, <format>, <inject>, <parse>, ...). Values are stored as text after
 * unquoting, escape processing and "#{ENV['X']}" expansion; typed getters convert them on demand
 * and mark the param as used, so that weir_conf_check_unused() can reject every param nobody
 * read: an unsupported parameter is an error at start-up, never silently ignored.
 *
 * Every error names file:line:column and what was expected. */
#ifndef WEIR_CONFIG_H
#define WEIR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "weir/common.h"

/* Limits on what a configuration may contain (a config is trusted, but a typo must not make
 * the parser recurse or allocate without end). */
#define WEIR_CONF_MAX_DEPTH 32         /* nested sections */
#define WEIR_CONF_MAX_INCLUDE_DEPTH 16 /* @include inside @include */
#define WEIR_CONF_MAX_FILE_SIZE (16u * 1024 * 1024)

typedef struct weir_conf_param {
    char *key;
    char *value;      /* unquoted, escapes and "#{ENV[..]}" applied; "" for a bare key */
    const char *file; /* owned by the tree (shared string); location of the key */
    int line;
    int col;
    bool used;   /* set by the getters */
    bool secret; /* masked by weir_conf_dump */
} weir_conf_param_t;

typedef struct weir_conf_section {
    char *name; /* "ROOT", "source", "match", "buffer", ... */
    char *arg;  /* text after the name inside <...>, trimmed; "" if none */
    const char *file;
    int line;
    int col;
    weir_conf_param_t *params;
    size_t nparams;
    struct weir_conf_section **children;
    size_t nchildren;
    struct weir_conf_section *parent;
    bool used; /* set by weir_conf_section_use(); unused sections are rejected too */
} weir_conf_section_t;

/* Parses a file (and everything it @includes, paths relative to the including file, globs
 * expanded in sorted order). Returns NULL with err set on failure. */
weir_conf_section_t *weir_conf_parse_file(const char *path, weir_err_t *err);
/* Parses text; `name` is used as the file name in messages, and as the base directory for
 * relative @include paths when it contains a '/'. */
weir_conf_section_t *weir_conf_parse_string(const char *text, size_t len, const char *name,
                                            weir_err_t *err);
void weir_conf_free(weir_conf_section_t *root);

/* Lookup. The last occurrence of a key wins, as in Fluentd. */
weir_conf_param_t *weir_conf_find(const weir_conf_section_t *s, const char *key);
/* Children with the given name, in order: iterate with an index. Returns NULL past the end. */
weir_conf_section_t *weir_conf_child(const weir_conf_section_t *s, const char *name, size_t nth);
void weir_conf_section_use(weir_conf_section_t *s);

/* Typed getters. Each returns 1 when the key is present and converted (marking it used), 0 when
 * absent (*out untouched, so callers set the default first), -1 on a bad value with err set to
 * "FILE:LINE:COL: <key>: expected ..., got '...'". */
int weir_conf_get_str(weir_conf_section_t *s, const char *key, const char **out, weir_err_t *err);
int weir_conf_get_int(weir_conf_section_t *s, const char *key, int64_t *out, weir_err_t *err);
/* Sizes: "1024", "256k", "256m", "1g", "1t" (case-insensitive suffixes, powers of 1024). */
int weir_conf_get_size(weir_conf_section_t *s, const char *key, uint64_t *out, weir_err_t *err);
/* Times in seconds: "10", "1.5", "10s", "5m", "1h", "1d". */
int weir_conf_get_time(weir_conf_section_t *s, const char *key, double *out, weir_err_t *err);
/* Booleans: true/yes/false/no; a bare key means true. */
int weir_conf_get_bool(weir_conf_section_t *s, const char *key, bool *out, weir_err_t *err);
int weir_conf_get_float(weir_conf_section_t *s, const char *key, double *out, weir_err_t *err);
/* One of `choices` (NULL-terminated); *out is the index. */
int weir_conf_get_enum(weir_conf_section_t *s, const char *key, const char *const *choices,
                       int *out, weir_err_t *err);
/* Arrays: a JSON array (["a","b"], may span lines) or a comma list (a, b). The caller frees
 * the result with weir_conf_strv_free. */
int weir_conf_get_array(weir_conf_section_t *s, const char *key, char ***out, size_t *n,
                        weir_err_t *err);
/* Hashes: a JSON object ({"k":"v"}) or k1:v1,k2:v2. keys[i] pairs with values[i]. */
int weir_conf_get_hash(weir_conf_section_t *s, const char *key, char ***keys, char ***values,
                       size_t *n, weir_err_t *err);
void weir_conf_strv_free(char **v, size_t n);

/* Reports the first param or child section of `s` (recursively) that nobody used:
 * "FILE:LINE:COL: unknown parameter 'x' in <source> (@type forward)". Params that exist in
 * Fluentd only to tune its Ruby internals (see weir_conf_ignored_params in config.c) are
 * accepted with a debug line instead. Returns 0 when everything was used. */
int weir_conf_check_unused(weir_conf_section_t *s, weir_err_t *err);
/* "FILE:LINE:COL" of a param or section, for messages. */
void weir_conf_where(const char *file, int line, int col, char *out, size_t outlen);
int weir_conf_errorf(weir_err_t *err, const weir_conf_param_t *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int weir_conf_section_errorf(weir_err_t *err, const weir_conf_section_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes the tree back in fluent.conf syntax, every value as weir_conf_value_shown shows it. */
void weir_conf_dump(const weir_conf_section_t *s, FILE *out);
bool weir_conf_is_secret_key(const char *key);
/* A param's value as anything weir prints shows it (the dump, --show-config, error messages,
 * monitor_agent's "config"): xxxxxx for a secret (p->secret, or a key such as aws_sec_key,
 * aws_key_id, shared_key, password, private_key_passphrase, external_id), otherwise the value
 * with the credentials of every URL in it masked (http://user:xxxxxx@proxy, proxy_uri and
 * sts_http_proxy among others). The caller frees the result. */
char *weir_conf_value_shown(const weir_conf_param_t *p);

#endif
