/* <source> @type http: Fluentd's in_http over HTTP/1.1, optionally TLS with client
 * certificates, as teleport-event-handler uses it (docs/http-input.md).
 *
 * The connections belong to the ingest layer (src/net/ingest.c). This file is the framing -
 * request.c's reader, stopping after the headers and after every request - the batch (body.c)
 * and the answer. The layer emits one request per connection at a time with reading paused,
 * and calls http_answer when the output reports it durable, so a 200 always means "stored"
 * and pipelined requests are answered in the order they came, one response each. A peer that
 * does not read its responses is not read either (WEIR_INGEST_MAX_UNSENT); an idle keep-alive
 * connection closes after keepalive_timeout. A gzip or deflate body is inflated a step per loop
 * turn (WEIR_INGEST_AGAIN): the request is whole in the reader by then, so the frame called
 * again goes straight back to the request, not to the reader. */
#include <stdlib.h>
#include <string.h>

#include "weir/hash.h"
#include "weir/http_input.h"
#include "weir/inflate.h"
#include "weir/ingest.h"
#include "weir/log.h"
#include "weir/net.h"
#include "weir/plugin.h"

static const char *const RESP_100 = "HTTP/1.1 100 Continue\r\n\r\n";

typedef struct http_input http_input_t;

/* The input's part of a connection (weir_ingest_conn_data); the ingest layer owns the rest. */
typedef struct http_conn {
    http_input_t *in; /* NULL until .open */
    weir_ingest_conn_t *ic;
    weir_http_req_t req;
    weir_batch_t batch; /* the request in flight */
    weir_buf_t scratch; /* responses */
    /* a compressed body being inflated in steps, and the bytes of the connection's buffer
     * its request came from (0: none) */
    weir_inflation_t inflation;
    size_t again_consumed;
} http_conn_t;

struct http_input {
    weir_engine_t *eng;
    weir_plugin_metrics_t *pm;
    char *bind;
    int port;
    int backlog;
    int linger;
    uint64_t body_limit;
    uint64_t decompress_limit;
    double keepalive_timeout;
    bool add_http_headers;
    bool add_remote_addr;
    bool add_query_params;
    bool cors_set;
    char **cors_origins;
    size_t ncors;
    bool cors_credentials;
    bool empty_img;
    bool use_204;
    bool dump_error_log;
    char *tag_prefix;
    char *label;
    weir_tls_opts_t tls;
    /* <parse> */
    weir_http_body_opts_t bopts;
    weir_timeparser_t *tparser;
    char *time_key;
    regex_t null_re;
    bool have_null_re;
    weir_ingest_opts_t limits; /* max_connections, the timeouts, the memory budget */
    /* running */
    weir_ingest_t *ing;
    weir_ratelimit_t warn_rl;
    weir_counter_t *parse_errors; /* weir_input_parse_errors_total */
};

/* ---- configuration ------------------------------------------------------------------------ */

static int get_owned_str(weir_conf_section_t *s, const char *key, char **out, weir_err_t *err)
{
    const char *v = NULL;
    int r = weir_conf_get_str(s, key, &v, err);
    if (r == 1) *out = weir_strdup(v);
    return r;
}

/* A <buffer> inside <source> does nothing in Fluentd either (Teleport's sample config has
 * one); it is accepted with a warning rather than rejected. */
static void ignore_buffer_sections(weir_conf_section_t *sec)
{
    for (size_t i = 0; i < sec->nchildren; i++) {
        weir_conf_section_t *b = sec->children[i];
        if (strcmp(b->name, "buffer") != 0) continue;
        weir_conf_section_use(b);
        for (size_t k = 0; k < b->nparams; k++)
            b->params[k].used = true;
        weir_warn("%s:%d: <buffer> in <source @type http> has no effect (an input has no "
                  "buffer; Fluentd ignores it too)",
                  b->file ? b->file : "(config)", b->line);
    }
}

static int read_time_conf(http_input_t *in, weir_conf_section_t *p, bool json, weir_err_t *err)
{
    static const char *const types[] = {"string", "unixtime", "float", NULL};
    int type = -1;
    weir_timeparser_conf_t tc = {.localtime = true};
    bool localtime = true, utc = false;
    int rl, ru;
    if (weir_conf_get_enum(p, "time_type", types, &type, err) < 0 ||
        weir_conf_get_str(p, "time_format", &tc.format, err) < 0 ||
        weir_conf_get_str(p, "timezone", &tc.timezone, err) < 0 ||
        (rl = weir_conf_get_bool(p, "localtime", &localtime, err)) < 0 ||
        (ru = weir_conf_get_bool(p, "utc", &utc, err)) < 0)
        return -1;
    if (rl == 1 && ru == 1) {
        weir_conf_errorf(err, weir_conf_find(p, "utc"),
                         "both of utc and localtime are specified, use only one of them");
        return -1;
    }
    tc.localtime = ru == 1 ? !utc : localtime;
    tc.utc = false;
    if (type >= 0)
        tc.type = (weir_time_type_t)(type == 0   ? WEIR_TIME_STRING
                                     : type == 1 ? WEIR_TIME_UNIXTIME
                                                 : WEIR_TIME_FLOAT);
    else if (json)
        tc.type = tc.format ? WEIR_TIME_STRING : WEIR_TIME_FLOAT;
    else
        tc.type = WEIR_TIME_STRING; /* in_http's parser has Fluentd's default, string */
    /* <parse @type in_http> uses a time parser only when one of these is set */
    if (!json && type < 0 && !tc.format) return 0;
    in->tparser = weir_timeparser_new(&tc, err);
    if (!in->tparser) {
        weir_err_prefix(err, "%s:%d: <parse>", p->file ? p->file : "(config)", p->line);
        return -1;
    }
    return 0;
}

static int read_null_conf(http_input_t *in, weir_conf_section_t *p, bool json, weir_err_t *err)
{
    const char *pat = NULL;
    if (weir_conf_get_str(p, "null_value_pattern", &pat, err) < 0 ||
        weir_conf_get_bool(p, "null_empty_string", &in->bopts.null_empty_string, err) < 0)
        return -1;
    if (!json) in->bopts.null_empty_string = false; /* in_http's own parsers ignore them */
    if (!pat || !json) return 0;
    /* POSIX extended regular expressions: Ruby's \d and friends are not available */
    int rc = regcomp(&in->null_re, pat, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[128];
        regerror(rc, &in->null_re, msg, sizeof msg);
        weir_conf_errorf(err, weir_conf_find(p, "null_value_pattern"),
                         "null_value_pattern: %s (weir uses POSIX extended regular expressions)",
                         msg);
        return -1;
    }
    in->have_null_re = true;
    in->bopts.null_value = &in->null_re;
    return 0;
}

static int read_parse_conf(http_input_t *in, weir_conf_section_t *sec, weir_err_t *err)
{
    in->bopts.max_depth = WEIR_HTTP_MAX_DEPTH;
    in->bopts.max_records = WEIR_HTTP_MAX_RECORDS;
    weir_conf_section_t *p = weir_conf_child(sec, "parse", 0);
    if (!p) return 0;
    weir_conf_section_use(p);
    const char *type = "in_http", *key = "time";
    bool est = true;
    if (weir_conf_get_str(p, "@type", &type, err) < 0) return -1;
    bool json = strcmp(type, "json") == 0;
    if (!json && strcmp(type, "in_http") != 0) {
        weir_conf_section_errorf(err, p,
                                 "<parse> @type %s is not supported by weir's http input; use "
                                 "json or in_http",
                                 type);
        return -1;
    }
    if (weir_conf_find(p, "types")) {
        weir_conf_errorf(err, weir_conf_find(p, "types"), "types is not supported by weir yet");
        return -1;
    }
    in->bopts.parse_json = json;
    if (weir_conf_get_str(p, "time_key", &key, err) < 0 ||
        weir_conf_get_bool(p, "keep_time_key", &in->bopts.keep_time_key, err) < 0 ||
        weir_conf_get_bool(p, "estimate_current_event", &est, err) < 0)
        return -1;
    in->time_key = weir_strdup(key);
    if (read_time_conf(in, p, json, err) != 0 || read_null_conf(in, p, json, err) != 0) return -1;
    return 0;
}

static int read_cors_conf(http_input_t *in, weir_conf_section_t *sec, weir_err_t *err)
{
    int r = weir_conf_get_array(sec, "cors_allow_origins", &in->cors_origins, &in->ncors, err);
    if (r < 0) return -1;
    in->cors_set = r == 1;
    if (weir_conf_get_bool(sec, "cors_allow_credentials", &in->cors_credentials, err) < 0)
        return -1;
    if (!in->cors_credentials) return 0;
    bool star = false;
    for (size_t i = 0; i < in->ncors; i++)
        star |= strcmp(in->cors_origins[i], "*") == 0;
    if (!in->cors_set || star) {
        weir_conf_errorf(err, weir_conf_find(sec, "cors_allow_credentials"),
                         "Cannot enable cors_allow_credentials without specific origins");
        return -1;
    }
    return 0;
}

static int http_read_conf(http_input_t *in, weir_conf_section_t *sec, weir_err_t *err)
{
    int64_t port = WEIR_HTTP_PORT_DEFAULT, backlog = 0;
    const char *bind = "0.0.0.0", *label = NULL;
    double linger = -1;
    in->body_limit = WEIR_HTTP_BODY_LIMIT_DEFAULT;
    in->decompress_limit = WEIR_HTTP_DECOMPRESS_LIMIT_DEFAULT;
    in->keepalive_timeout = WEIR_HTTP_KEEPALIVE_DEFAULT;
    in->dump_error_log = true;
    if (weir_conf_find(sec, "format")) {
        weir_conf_errorf(err, weir_conf_find(sec, "format"),
                         "format is Fluentd v0.12 syntax: use a <parse> section (<parse> @type "
                         "json </parse>)");
        return -1;
    }
    if (weir_conf_get_int(sec, "port", &port, err) < 0 ||
        weir_conf_get_str(sec, "bind", &bind, err) < 0 ||
        weir_conf_get_int(sec, "backlog", &backlog, err) < 0 ||
        weir_conf_get_size(sec, "body_size_limit", &in->body_limit, err) < 0 ||
        weir_conf_get_size(sec, "decompression_size_limit", &in->decompress_limit, err) < 0 ||
        weir_conf_get_time(sec, "keepalive_timeout", &in->keepalive_timeout, err) < 0 ||
        weir_conf_get_bool(sec, "add_http_headers", &in->add_http_headers, err) < 0 ||
        weir_conf_get_bool(sec, "add_remote_addr", &in->add_remote_addr, err) < 0 ||
        weir_conf_get_bool(sec, "add_query_params", &in->add_query_params, err) < 0 ||
        weir_conf_get_bool(sec, "respond_with_empty_img", &in->empty_img, err) < 0 ||
        weir_conf_get_bool(sec, "use_204_response", &in->use_204, err) < 0 ||
        weir_conf_get_bool(sec, "dump_error_log", &in->dump_error_log, err) < 0 ||
        get_owned_str(sec, "add_tag_prefix", &in->tag_prefix, err) < 0 ||
        weir_conf_get_str(sec, "@label", &label, err) < 0 || read_cors_conf(in, sec, err) != 0 ||
        read_parse_conf(in, sec, err) != 0 || weir_ingest_conf_read(&in->limits, sec, err) != 0)
        return -1;
    if (port < 0 || port > 65535) {
        weir_conf_errorf(err, weir_conf_find(sec, "port"), "port must be 0..65535");
        return -1;
    }
    if (in->tag_prefix && !*in->tag_prefix) {
        weir_conf_errorf(err, weir_conf_find(sec, "add_tag_prefix"),
                         "add_tag_prefix must not be empty");
        return -1;
    }
    if (weir_ingest_conf_unit_limit(&in->limits, sec, in->body_limit, "body_size_limit", err) != 0)
        return -1;
    weir_conf_section_t *tr = weir_conf_child(sec, "transport", 0);
    if (tr) {
        weir_conf_section_use(tr);
        if (weir_tls_opts_from_conf(&in->tls, tr, err) != 0) return -1;
        if (weir_conf_get_time(tr, "linger_timeout", &linger, err) < 0) return -1;
    }
    ignore_buffer_sections(sec);
    in->bopts.time_key = in->time_key ? in->time_key : "time";
    in->bopts.time_parser = in->tparser;
    in->port = (int)port;
    in->backlog = (int)backlog;
    in->linger = linger < 0 ? -1 : (int)linger;
    in->bind = weir_strdup(bind);
    in->label = label ? weir_strdup(label) : NULL;
    return 0;
}

/* ---- responses ---------------------------------------------------------------------------- */

static void conn_close(http_conn_t *hc, const char *why)
{
    weir_ingest_conn_close(hc->ic, why);
}

static void conn_drop(http_conn_t *hc, const char *what)
{
    weir_ingest_conn_fail(hc->ic, what);
}

static void write_bytes(http_conn_t *hc, const char *p, size_t n)
{
    weir_ingest_conn_write(hc->ic, p, n);
}

static const char *peer_addr(const http_conn_t *hc)
{
    return weir_ingest_conn_peer(hc->ic);
}

/* in_http's send_response, then a close unless the request keeps the connection. */
static void respond(http_conn_t *hc, const char *status, const weir_http_hdr_t *hdrs, size_t n,
                    const char *body, size_t len, bool close_after)
{
    hc->scratch.len = 0;
    weir_http_response(&hc->scratch, status, hdrs, n, body, len);
    write_bytes(hc, hc->scratch.data, hc->scratch.len);
    if (close_after) conn_close(hc, NULL);
}

/* Origin against cors_allow_origins: exact, or one '*' as prefix + suffix. */
static bool cors_origin_ok(const http_input_t *in, const char *origin)
{
    for (size_t i = 0; i < in->ncors; i++) {
        const char *pat = in->cors_origins[i];
        if (strcmp(pat, origin) == 0) return true;
        const char *star = strchr(pat, '*');
        if (!star) continue;
        size_t pl = (size_t)(star - pat), sl = strlen(star + 1), ol = strlen(origin);
        if (ol >= pl && strncmp(origin, pat, pl) == 0 && ol >= sl &&
            strcmp(origin + ol - sl, star + 1) == 0)
            return true;
    }
    return false;
}

static bool cors_star(const http_input_t *in)
{
    for (size_t i = 0; i < in->ncors; i++)
        if (strcmp(in->cors_origins[i], "*") == 0) return true;
    return false;
}

/* The headers every answer to a POST carries after its own: CORS, then Connection. */
static size_t tail_headers(http_conn_t *hc, weir_http_hdr_t *h, size_t n)
{
    http_input_t *in = hc->in;
    if (in->cors_set) {
        const weir_http_header_t *o = weir_http_req_header(&hc->req, "Origin");
        if (cors_star(in)) {
            h[n++] = (weir_http_hdr_t){"Access-Control-Allow-Origin", "*"};
        } else if (o && cors_origin_ok(in, o->value)) {
            h[n++] = (weir_http_hdr_t){"Access-Control-Allow-Origin", o->value};
            if (in->cors_credentials)
                h[n++] = (weir_http_hdr_t){"Access-Control-Allow-Credentials", "true"};
        }
    }
    if (hc->req.keep_alive) h[n++] = (weir_http_hdr_t){"Connection", "Keep-Alive"};
    return n;
}

static void respond_ok(http_conn_t *hc)
{
    weir_http_hdr_t h[4];
    size_t n = 0;
    const char *status = "200 OK";
    const char *body = "";
    size_t len = 0;
    if (hc->in->empty_img) {
        h[n++] = (weir_http_hdr_t){"Content-Type", "image/gif; charset=utf-8"};
        body = weir_http_empty_gif;
        len = WEIR_HTTP_EMPTY_GIF_LEN;
    } else if (hc->in->use_204) {
        status = "204 No Content";
    } else {
        h[n++] = (weir_http_hdr_t){"Content-Type", "text/plain"};
    }
    n = tail_headers(hc, h, n);
    respond(hc, status, h, n, body, len, !hc->req.keep_alive);
}

/* 400 and 500 carry the status text, a newline, the error message and a newline. */
static void respond_error(http_conn_t *hc, const char *status, const char *msg)
{
    weir_http_hdr_t h[4];
    size_t n = 0;
    h[n++] = (weir_http_hdr_t){"Content-Type", "text/plain"};
    n = tail_headers(hc, h, n);
    weir_buf_t body;
    weir_buf_init(&body);
    weir_buf_printf(&body, "%s\n%s\n", status, msg);
    respond(hc, status, h, n, body.data, body.len, !hc->req.keep_alive);
    weir_buf_free(&body);
}

/* RFC 9112's 400 for a request it calls invalid, then the connection ends. */
static void respond_error_close(http_conn_t *hc, const char *msg)
{
    weir_buf_t body;
    weir_buf_init(&body);
    weir_buf_printf(&body, "400 Bad Request\n%s\n", msg);
    weir_http_hdr_t h[1] = {{"Connection", "close"}};
    hc->scratch.len = 0;
    weir_http_response(&hc->scratch, "400 Bad Request", h, 1, body.data, body.len);
    write_bytes(hc, hc->scratch.data, hc->scratch.len);
    weir_buf_free(&body);
}

static void respond_too_large(http_conn_t *hc)
{
    respond(hc, "413 Request Entity Too Large", NULL, 0, "Too large", 9, true);
}

/* ---- the request in flight ---------------------------------------------------------------- */

/* The response went out: get ready for the next request. */
static void request_done(http_conn_t *hc)
{
    weir_http_req_next(&hc->req);
    if (hc->req.body.cap > WEIR_INGEST_KEEP_BUF_MAX) weir_buf_free(&hc->req.body);
    if (hc->batch.data.cap > WEIR_INGEST_KEEP_BUF_MAX) {
        weir_buf_free(&hc->batch.data);
        weir_batch_reset(&hc->batch);
    }
}

/* The request's events are stored (200), or not (500: the sender retries). */
static void http_answer(weir_ingest_conn_t *ic, weir_ingest_status_t st)
{
    http_conn_t *hc = weir_ingest_conn_data(ic);
    if (st == WEIR_INGEST_STORED)
        respond_ok(hc);
    else
        respond_error(hc, "500 Internal Server Error",
                      st == WEIR_INGEST_FAILED ? "the output could not store the events"
                                               : "the output rejected the events");
    request_done(hc);
}

/* ---- building the batch -------------------------------------------------------------------- */

static void upper_key(weir_buf_t *b, const char *prefix, const char *s, size_t n)
{
    weir_buf_append(b, prefix, strlen(prefix));
    for (size_t i = 0; i < n; i++) {
        char c = s[i] == '-' ? '_' : s[i];
        weir_buf_putc(b, c >= 'a' && c <= 'z' ? (char)(c - 32) : c);
    }
}

/* Extras are built as "key\0value\0" runs in one buffer, then pointed at. A query string may
 * carry thousands of parameters, so repeats are found with the keyed hash set; it points into
 * `text`, so it is rebuilt whenever `text` moves (amortised linear, as `text` doubles). */
typedef struct extras {
    weir_buf_t text;
    size_t (*spans)[4]; /* key off, key len, value off (SIZE_MAX = nil), value len */
    size_t n, cap;
    weir_hset_t keys;        /* key → index into spans */
    const char *keys_origin; /* text.data when `keys` was built */
} extras_t;

static int extras_find(extras_t *x, const char *k, size_t kn)
{
    if (x->keys_origin != x->text.data) {
        weir_hset_clear(&x->keys);
        for (size_t i = 0; i < x->n; i++)
            weir_hset_add(&x->keys, x->text.data + x->spans[i][0], x->spans[i][1], i, NULL);
        x->keys_origin = x->text.data;
    }
    size_t i;
    return weir_hset_get(&x->keys, k, kn, &i) ? (int)i : -1;
}

/* Adds key = value; a repeated key keeps its first value (WEBrick's first query value) or,
 * for repeated headers, joins them with ", ". */
static void extras_add(extras_t *x, weir_buf_t *key, const char *v, size_t vn, bool join)
{
    int i = extras_find(x, key->data, key->len);
    if (i >= 0 && !join) return;
    if (i >= 0 && x->spans[i][2] != SIZE_MAX) {
        size_t *s = x->spans[i];
        weir_buf_t nv; /* rebuild the joined value at the end of the text */
        weir_buf_init(&nv);
        weir_buf_append(&nv, x->text.data + s[2], s[3]);
        weir_buf_append(&nv, ", ", 2);
        weir_buf_append(&nv, v, vn);
        s[2] = x->text.len;
        s[3] = nv.len;
        weir_buf_append(&x->text, nv.data, nv.len);
        weir_buf_free(&nv);
        return;
    }
    if (x->n == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 16;
        x->spans = weir_realloc(x->spans, x->cap * sizeof *x->spans);
    }
    size_t *s = x->spans[x->n];
    s[0] = x->text.len;
    s[1] = key->len;
    weir_buf_append(&x->text, key->data, key->len);
    s[2] = v ? x->text.len : SIZE_MAX;
    s[3] = vn;
    if (v) weir_buf_append(&x->text, v, vn);
    if (x->keys_origin == x->text.data)
        weir_hset_add(&x->keys, x->text.data + s[0], s[1], x->n, NULL);
    x->n++;
}

typedef struct query_ctx {
    extras_t *x;
    weir_buf_t key;
} query_ctx_t;

static int query_extra_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
    query_ctx_t *q = arg;
    q->key.len = 0;
    upper_key(&q->key, "QUERY_", k, kn);
    extras_add(q->x, &q->key, v, vn, false);
    return 0;
}

/* HTTP_* (headers, in order), QUERY_* (query parameters), REMOTE_ADDR, as in_http adds
 * them. */
static void build_extras(http_conn_t *hc, const char *query, size_t qlen, extras_t *x)
{
    http_input_t *in = hc->in;
    weir_buf_t key;
    weir_buf_init(&key);
    for (size_t i = 0; in->add_http_headers && i < hc->req.nheaders; i++) {
        const weir_http_header_t *h = &hc->req.headers[i];
        key.len = 0;
        upper_key(&key, "HTTP_", h->name, h->name_len);
        extras_add(x, &key, h->value, h->value_len, true);
    }
    if (in->add_query_params && query) {
        query_ctx_t q = {x, {0}};
        weir_http_query_parse(query, qlen, query_extra_cb, &q);
        weir_buf_free(&q.key);
    }
    if (in->add_remote_addr) {
        key.len = 0;
        weir_buf_append(&key, "REMOTE_ADDR", 11);
        const weir_http_header_t *xff = weir_http_req_header(&hc->req, "X-Forwarded-For");
        if (xff) { /* the first entry, untrimmed, as Fluentd's split(",").first */
            const char *comma = memchr(xff->value, ',', xff->value_len);
            size_t n = comma ? (size_t)(comma - xff->value) : xff->value_len;
            extras_add(x, &key, n ? xff->value : NULL, n, false);
        } else {
            const char *a = peer_addr(hc);
            extras_add(x, &key, a, strlen(a), false);
        }
    }
    weir_buf_free(&key);
}

/* Values of an accepted request that did not parse are dropped with 200, as Fluentd does:
 * count them and say so (rate-limited), so that an operator sees events being lost. */
static void warn_skips(http_conn_t *hc, const weir_http_body_skips_t *sk)
{
    unsigned long suppressed = 0;
    weir_counter_add(hc->in->parse_errors, sk->count);
    if (weir_ratelimit_ok(&hc->in->warn_rl, &suppressed))
        weir_warn("http: dropped %zu value(s) of a request from %s that did not parse, first: "
                  "%s (%lu similar warnings suppressed)",
                  sk->count, peer_addr(hc), sk->first.msg, suppressed);
}

typedef enum http_built {
    HTTP_BUILT,    /* hc->batch is the request's events */
    HTTP_ANSWERED, /* answered (400), or the connection dropped: no batch */
    HTTP_INFLATING /* the body is being inflated: build again on a later loop turn */
} http_built_t;

/* Builds the batch of a POST-like request; answers 400 itself. */
static http_built_t build_batch(http_conn_t *hc)
{
    http_input_t *in = hc->in;
    weir_http_req_t *r = &hc->req;
    const char *path, *query;
    size_t plen, qlen;
    if (weir_http_split_target(r->url.data, r->url.len, &path, &plen, &query, &qlen) != 0) {
        conn_drop(hc, "request URL that is not a valid URI");
        return HTTP_ANSWERED;
    }
    const weir_buf_t *body = &r->body;
    const weir_http_header_t *ce = weir_http_req_header(r, "Content-Encoding");
    bool gz = ce && strcmp(ce->value, "gzip") == 0, df = ce && strcmp(ce->value, "deflate") == 0;
    if (gz || df) {
        weir_err_t zerr;
        int zr = weir_inflation_run(&hc->inflation, gz ? WEIR_INFLATE_GZIP : WEIR_INFLATE_ZLIB,
                                    body->data, body->len, in->decompress_limit, &zerr);
        if (zr == 0) return HTTP_INFLATING;
        if (zr < 0) {
            weir_warn("http: fails to decode payload from %s: %s", peer_addr(hc), zerr.msg);
            respond(hc, "400 Bad Request", NULL, 0, "", 0, true);
            return HTTP_ANSWERED;
        }
        body = &hc->inflation.out;
    }
    extras_t x;
    memset(&x, 0, sizeof x);
    weir_hset_init(&x.keys);
    build_extras(hc, query, qlen, &x);
    weir_http_extra_t *ex = weir_calloc(x.n + 1, sizeof *ex);
    for (size_t i = 0; i < x.n; i++) {
        ex[i].key = x.text.data + x.spans[i][0];
        ex[i].key_len = x.spans[i][1];
        ex[i].value = x.spans[i][2] == SIZE_MAX ? NULL : x.text.data + x.spans[i][2];
        ex[i].value_len = x.spans[i][3];
    }
    const weir_http_header_t *ct = weir_http_req_header(r, "Content-Type");
    weir_http_body_in_t bin = {
        .query = query,
        .query_len = qlen,
        .content_type = ct ? ct->value : "",
        .body = body->data,
        .body_len = body->len,
        .extras = ex,
        .nextras = x.n,
        .now = weir_time_now(),
    };
    weir_buf_t tag;
    weir_buf_init(&tag);
    weir_http_tag_from_path(path, plen, in->tag_prefix, &tag);
    weir_batch_reset(&hc->batch);
    weir_batch_set_tag(&hc->batch, tag.data ? tag.data : "", tag.len);
    weir_err_t err;
    weir_http_body_skips_t skips;
    bin.skips = &skips;
    int rc = -1;
    if (tag.len > WEIR_TAG_MAX)
        weir_err_set(&err, "tag of %zu bytes is longer than %d bytes (WEIR_TAG_MAX)", tag.len,
                     WEIR_TAG_MAX);
    else
        rc = weir_http_body_decode(&in->bopts, &bin, &hc->batch, &err);
    if (rc == 0 && skips.count > 0) warn_skips(hc, &skips);
    weir_buf_free(&tag);
    free(ex);
    free(x.spans);
    weir_buf_free(&x.text);
    weir_hset_free(&x.keys);
    weir_inflation_reset(&hc->inflation);
    if (rc == 0) return HTTP_BUILT;
    if (in->dump_error_log) {
        unsigned long skipped = 0;
        if (weir_ratelimit_ok(&in->warn_rl, &skipped))
            weir_error("http: failed to process request from %s: %s (%lu similar errors "
                       "suppressed)",
                       peer_addr(hc), err.msg, skipped);
    }
    respond_error(hc, "400 Bad Request", err.msg);
    request_done(hc);
    return HTTP_ANSWERED;
}

/* ---- methods ------------------------------------------------------------------------------- */

/* CORS preflight, answered and closed as in_http does. */
static void handle_options(http_conn_t *hc)
{
    http_input_t *in = hc->in;
    const weir_http_header_t *m = weir_http_req_header(&hc->req, "Access-Control-Request-Method");
    const weir_http_header_t *rh = weir_http_req_header(&hc->req, "Access-Control-Request-Headers");
    const weir_http_header_t *o = weir_http_req_header(&hc->req, "Origin");
    if (!in->cors_set || !m || strcmp(m->value, "POST") != 0) {
        respond(hc, "403 Forbidden", NULL, 0, "", 0, true);
        return;
    }
    weir_http_hdr_t h[4] = {{"Access-Control-Allow-Methods", "POST"},
                            {"Access-Control-Allow-Headers", rh ? rh->value : ""}};
    size_t n = 2;
    if (cors_star(in)) {
        h[n++] = (weir_http_hdr_t){"Access-Control-Allow-Origin", "*"};
    } else if (o && cors_origin_ok(in, o->value)) {
        h[n++] = (weir_http_hdr_t){"Access-Control-Allow-Origin", o->value};
        if (in->cors_credentials)
            h[n++] = (weir_http_hdr_t){"Access-Control-Allow-Credentials", "true"};
    } else {
        respond(hc, "403 Forbidden", NULL, 0, "", 0, true);
        return;
    }
    respond(hc, "200 OK", h, n, "", 0, true);
}

/* A whole request arrived: its batch to emit, or answered here already. */
static weir_ingest_res_t handle_request(http_conn_t *hc, weir_ingest_frame_t *f)
{
    http_input_t *in = hc->in;
    weir_http_req_t *r = &hc->req;
    if (r->method == HTTP_GET) { /* health checks (Azure): 200 and close */
        respond(hc, "200 OK", NULL, 0, "", 0, true);
        return WEIR_INGEST_CLOSE;
    }
    if (r->method == HTTP_OPTIONS) {
        handle_options(hc);
        return WEIR_INGEST_CLOSE;
    }
    /* every other method is handled as POST */
    if (in->cors_set && !cors_star(in)) {
        const weir_http_header_t *o = weir_http_req_header(r, "Origin");
        if (o && !cors_origin_ok(in, o->value)) {
            weir_http_hdr_t h[1] = {{"Connection", "close"}};
            respond(hc, "403 Forbidden", h, 1, "", 0, true);
            return WEIR_INGEST_CLOSE;
        }
    }
    http_built_t b = build_batch(hc);
    if (b == HTTP_INFLATING) return WEIR_INGEST_AGAIN;
    if (b == HTTP_ANSWERED) return WEIR_INGEST_NEXT; /* answered (400), or closed */
    f->batch = &hc->batch;
    f->wire_bytes = r->body.len;
    return WEIR_INGEST_EMIT;
}

/* Headers are in: answer Expect, refuse a body that cannot fit before it arrives. */
static void handle_headers(http_conn_t *hc)
{
    weir_http_req_t *r = &hc->req;
    const weir_http_header_t *ex = weir_http_req_header(r, "Expect");
    if (ex) {
        if (strcmp(ex->value, "100-continue") != 0) {
            respond(hc, "417 Expectation Failed", NULL, 0, "", 0, true);
            return;
        }
        /* Fluentd's check is off by one here: a length equal to the limit gets 413 */
        if (r->has_length && r->content_length >= hc->in->body_limit) {
            respond_too_large(hc);
            return;
        }
        write_bytes(hc, RESP_100, strlen(RESP_100));
        return;
    }
    if (r->has_length && r->content_length > hc->in->body_limit) respond_too_large(hc);
}

/* ---- framing (the connection itself is the ingest layer's) ------------------------------- */

/* The reader stops after the headers (a unit of their own: 100-continue, 413 before the
 * body) and after each whole request. */
static weir_ingest_res_t http_frame(weir_ingest_conn_t *ic, const char *p, size_t avail,
                                    weir_ingest_frame_t *f)
{
    http_conn_t *hc = weir_ingest_conn_data(ic);
    weir_http_ev_t ev;
    if (hc->again_consumed) { /* the request whose body is being inflated */
        f->consumed = hc->again_consumed;
        ev = WEIR_HTTP_EV_REQUEST;
    } else {
        f->consumed = weir_http_req_feed(&hc->req, p, avail, &ev);
    }
    hc->again_consumed = 0;
    switch (ev) {
    case WEIR_HTTP_EV_HEADERS:
        handle_headers(hc);
        return WEIR_INGEST_NEXT;
    case WEIR_HTTP_EV_REQUEST: {
        weir_ingest_res_t r = handle_request(hc, f);
        if (r == WEIR_INGEST_AGAIN) hc->again_consumed = f->consumed;
        return r;
    }
    case WEIR_HTTP_EV_TOO_LARGE:
        respond_too_large(hc);
        return WEIR_INGEST_CLOSE;
    case WEIR_HTTP_EV_ERROR:
        f->why = hc->req.error ? hc->req.error : "malformed HTTP request";
        if (!hc->req.rfc9112) return WEIR_INGEST_ERROR; /* in_http closes without an answer */
        respond_error_close(hc, f->why);
        weir_ingest_conn_fail(ic, f->why); /* logged; closes after the 400 went out */
        return WEIR_INGEST_CLOSE;
    case WEIR_HTTP_EV_NONE:
    default:
        if (f->consumed == 0) { /* never loop forever */
            f->why = "the HTTP reader made no progress";
            return WEIR_INGEST_ERROR;
        }
        return WEIR_INGEST_MORE;
    }
}

/* What the request being read holds (its URL, headers and body so far). */
static size_t http_held(weir_ingest_conn_t *ic)
{
    http_conn_t *hc = weir_ingest_conn_data(ic);
    if (!hc->in) return 0;
    size_t n = hc->inflation.out.len;
    if (!weir_http_req_started(&hc->req)) return n;
    return n + hc->req.url.len + hc->req.hdata.len + hc->req.body.len;
}

static void http_open(weir_ingest_conn_t *ic)
{
    http_conn_t *hc = weir_ingest_conn_data(ic);
    hc->in = weir_ingest_data(weir_ingest_conn_ingest(ic));
    hc->ic = ic;
    weir_http_req_init(&hc->req, hc->in->body_limit);
    weir_batch_init(&hc->batch, "", 0);
    weir_buf_init(&hc->scratch);
}

static void http_closed(weir_ingest_conn_t *ic)
{
    http_conn_t *hc = weir_ingest_conn_data(ic);
    if (!hc->in) return; /* closed before it was ready */
    weir_buf_free(&hc->scratch);
    weir_inflation_reset(&hc->inflation);
    weir_http_req_free(&hc->req);
    weir_batch_free(&hc->batch);
}

static const weir_ingest_ops_t http_ingest_ops = {
    .name = "http",
    .conn_size = sizeof(http_conn_t),
    .open = http_open,
    .frame = http_frame,
    .answer = http_answer,
    .held = http_held,
    .closed = http_closed,
};

/* ---- plugin -------------------------------------------------------------------------------- */

static void http_destroy(void *state);

static int http_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    http_input_t *in = weir_calloc(1, sizeof *in);
    in->eng = eng;
    in->pm = weir_engine_plugin_metrics(eng);
    weir_metrics_input_network(in->pm, false);
    weir_metrics_input_timed(in->pm);
    in->parse_errors = weir_metrics_counter(
        weir_plugin_metrics_registry(in->pm), in->pm, "weir_input_parse_errors_total",
        "Values of accepted requests dropped because they did not parse (answered 200, as "
        "Fluentd does).",
        weir_plugin_metrics_labels(in->pm));
    in->warn_rl.interval_ms = WEIR_WARN_INTERVAL_MS;
    if (http_read_conf(in, sec, err) != 0) {
        weir_err_prefix(err, "<source @type http>");
        http_destroy(in);
        return -1;
    }
    *state = in;
    return 0;
}

static int http_start(void *state, weir_err_t *err)
{
    http_input_t *in = state;
    weir_ingest_opts_t o = in->limits;
    o.bind = in->bind;
    o.port = in->port;
    o.backlog = in->backlog;
    o.tls = &in->tls;
    o.linger_timeout = in->linger;
    o.label = in->label;
    o.pm = in->pm;
    o.idle_timeout = in->keepalive_timeout;
    o.data = in;
    in->ing = weir_ingest_new(weir_engine_loop(in->eng), in->eng, &http_ingest_ops, &o, err);
    if (!in->ing) {
        weir_err_prefix(err, "http input on %s:%d", in->bind, in->port);
        return -1;
    }
    weir_info("listening on %s:%d (http%s)", in->bind, weir_ingest_port(in->ing),
              in->tls.enabled ? " over TLS" : "");
    return 0;
}

static void http_stop(void *state, void (*done)(void *), void *arg)
{
    http_input_t *in = state;
    if (!in->ing) {
        done(arg);
        return;
    }
    weir_ingest_stop(in->ing, done, arg);
}

static void http_destroy(void *state)
{
    http_input_t *in = state;
    if (!in) return;
    weir_ingest_free(in->ing);
    free(in->bind);
    free(in->tag_prefix);
    free(in->label);
    free(in->time_key);
    weir_conf_strv_free(in->cors_origins, in->ncors);
    weir_timeparser_free(in->tparser);
    if (in->have_null_re) regfree(&in->null_re);
    weir_tls_opts_free(&in->tls);
    free(in);
}

const weir_input_ops_t weir_in_http_ops = {
    .type = "http",
    .create = http_create,
    .start = http_start,
    .stop = http_stop,
    .destroy = http_destroy,
};
