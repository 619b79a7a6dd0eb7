/* The pure parts of <source> @type http (Fluentd's in_http), shared by the plugin
 * (src/input/http/) and its tests: the HTTP/1.x request reader over Debian's http_parser
 * (also the monitoring server's, src/input/monitor/httpd.c), the
 * body decoders that turn a request into an event batch, the event-time rules, the tag and
 * query-string rules, and the response bytes. Nothing here touches a socket or the loop.
 *
 * The reference is docs/http-input.md (section 2 is the server's behaviour). */
#ifndef WEIR_HTTP_INPUT_H
#define WEIR_HTTP_INPUT_H

#include <http_parser.h>
#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/common.h"
#include "weir/event.h"
#include "weir/mp.h"
#include "weir/strptime.h"

/* ---- limits -------------------------------------------------------------------------------
 * Each is checked where untrusted bytes enter and has a test exactly on it and one past it. */

#define WEIR_HTTP_PORT_DEFAULT 9880
/* body_size_limit default: Fluentd's 32 MiB. A body of exactly the limit is accepted. */
#define WEIR_HTTP_BODY_LIMIT_DEFAULT (32u * 1024 * 1024)
/* decompression_size_limit default for Content-Encoding gzip/deflate bodies. */
#define WEIR_HTTP_DECOMPRESS_LIMIT_DEFAULT (256u * 1024 * 1024)
/* keepalive_timeout default, seconds since the last bytes received. */
#define WEIR_HTTP_KEEPALIVE_DEFAULT 10.0
/* The URL of the request line. Teleport's paths are under 100 bytes. */
#define WEIR_HTTP_MAX_URL_LEN 8192
/* The URL plus every header name and value (trailers included), without the CRLFs. Stays
 * below http_parser's own 80 KiB so this limit, with its clear message, is the one that
 * applies. */
#define WEIR_HTTP_MAX_HEADER_BYTES (64 * 1024)
/* Header lines per request (trailers included). */
#define WEIR_HTTP_MAX_HEADERS 100
/* Nesting of arrays and maps in a JSON or msgpack body, the top-level container included. */
#define WEIR_HTTP_MAX_DEPTH 100
/* Records one request may carry (a JSON array, ndjson lines, a msgpack stream). */
#define WEIR_HTTP_MAX_RECORDS 1000000
/* Bytes one request may decode into (its batch). A body is at most body_size_limit, but
 * add_query_params / add_http_headers copy every added key into every record, and one
 * request may carry a million records: without this bound a 32 MiB body with 4,000 query
 * parameters asks for tens of GB (and as many key lookups). A legitimate request stays far
 * below it: a million `{}` lines decode to 13 MB. Past it the request gets 400. */
#define WEIR_HTTP_MAX_BATCH_BYTES (64u * 1024 * 1024)

/* ---- request reader ------------------------------------------------------------------------ */

typedef enum weir_http_ev {
    WEIR_HTTP_EV_NONE,      /* every byte consumed; feed more */
    WEIR_HTTP_EV_HEADERS,   /* the headers are complete: answer Expect / check the length now */
    WEIR_HTTP_EV_REQUEST,   /* a whole request is ready; call weir_http_req_next() after it */
    WEIR_HTTP_EV_TOO_LARGE, /* the body went past body_limit: answer 413 and close */
    WEIR_HTTP_EV_ERROR,     /* malformed, or past a header limit: close without a response */
} weir_http_ev_t;

typedef struct weir_http_header {
    const char *name; /* NUL-terminated, as received */
    size_t name_len;
    const char *value;
    size_t value_len;
} weir_http_header_t;

/* One connection's request reader. The fields below the line are valid from
 * WEIR_HTTP_EV_HEADERS (headers) or WEIR_HTTP_EV_REQUEST (all) until weir_http_req_next(). */
typedef struct weir_http_req {
    http_parser hp;
    uint64_t body_limit;
    weir_buf_t hdata; /* "name\0value\0" per header */
    size_t *hoff;     /* per header: name offset, value offset, into hdata */
    size_t hcap;
    size_t header_bytes;
    size_t headers_cap;
    bool in_value;
    bool started; /* the first byte of a request was read */
    bool paused_for_request;
    size_t max_url;          /* WEIR_HTTP_MAX_URL_LEN; a caller may lower it after init */
    size_t max_header_bytes; /* WEIR_HTTP_MAX_HEADER_BYTES, likewise */
    bool last_cr;            /* the last head byte read was CR (bare-LF check) */
    const char *error;       /* why WEIR_HTTP_EV_ERROR */
    int error_status;        /* the status that error deserves: 400, 414 (URL), 431 (headers) */
    bool rfc9112;            /* the error is one RFC 9112 answers with 400 (whitespace before
                                a header's colon, a bare LF line ending) */
    weir_http_ev_t pending;
    /* ------------------------------------------------------------------------------------ */
    enum http_method method;
    unsigned short major, minor;
    weir_buf_t url; /* NUL-terminated */
    weir_http_header_t *headers;
    size_t nheaders;
    bool headers_done;
    bool keep_alive; /* Fluentd's rule: HTTP/1.1, or Connection: keep-alive; not close */
    bool has_length; /* a Content-Length header (not chunked) */
    uint64_t content_length;
    weir_buf_t body; /* chunked bodies de-chunked */
} weir_http_req_t;

void weir_http_req_init(weir_http_req_t *r, uint64_t body_limit);
void weir_http_req_free(weir_http_req_t *r);
/* Feeds bytes and returns how many were consumed; *ev says why it stopped. After
 * WEIR_HTTP_EV_HEADERS feed the rest; after WEIR_HTTP_EV_REQUEST call weir_http_req_next()
 * first; after TOO_LARGE or ERROR the reader is dead. */
size_t weir_http_req_feed(weir_http_req_t *r, const char *data, size_t len, weir_http_ev_t *ev);
/* Forgets the finished request and gets ready for the next one. */
void weir_http_req_next(weir_http_req_t *r);
/* True while part of a request has been read. */
bool weir_http_req_started(const weir_http_req_t *r);
/* The first header with this name (case-insensitive), or NULL. */
const weir_http_header_t *weir_http_req_header(const weir_http_req_t *r, const char *name);

/* Splits the request target into path and query as Ruby's URI.parse would accept it. Returns
 * -1 for a target it would reject (the request then gets no response). *query is NULL when
 * there is no '?'. */
int weir_http_split_target(const char *url, size_t len, const char **path, size_t *path_len,
                           const char **query, size_t *query_len);

/* ---- tag, query string, responses ----------------------------------------------------------- */

/* in_http's tag: the path without its first character, '/' → '.', trailing empty parts
 * dropped, no percent-decoding; `prefix` (may be NULL) gives "prefix.tag". */
void weir_http_tag_from_path(const char *path, size_t len, const char *prefix, weir_buf_t *out);

/* WEBrick's parse_query: pairs split on '&' and ';', key and value split on the first '=',
 * '+' is a space, %XX is decoded (a malformed % stays as it is), empty pairs skipped. cb
 * returns non-zero to stop. */
typedef int (*weir_http_param_cb)(void *arg, const char *key, size_t klen, const char *val,
                                  size_t vlen);
void weir_http_query_parse(const char *s, size_t len, weir_http_param_cb cb, void *arg);

typedef struct weir_http_hdr {
    const char *name;
    const char *value;
} weir_http_hdr_t;

/* "HTTP/1.1 <status>\r\n", the headers in order, then Content-Length and
 * Content-Type: text/plain unless given, a blank line and the body: in_http's send_response. */
void weir_http_response(weir_buf_t *out, const char *status, const weir_http_hdr_t *hdrs, size_t n,
                        const char *body, size_t body_len);

/* The 1x1 GIF of respond_with_empty_img. */
extern const char weir_http_empty_gif[];
#define WEIR_HTTP_EMPTY_GIF_LEN 35

/* ---- JSON → msgpack ------------------------------------------------------------------------- */

/* Converts one JSON text (surrounding whitespace allowed) into one msgpack value appended to
 * `out`: objects keep key order, a repeated key keeps its first place and its last value,
 * integers stay integers (beyond 64 bits they become floats), \uXXXX escapes become UTF-8.
 * Returns -1 with `out` restored and a message naming the byte offset for invalid JSON or
 * nesting deeper than max_depth. */
int weir_http_json_to_msgpack(const char *s, size_t len, int max_depth, weir_buf_t *out,
                              weir_err_t *err);

/* ---- body → events -------------------------------------------------------------------------- */

/* A key added to every record: HTTP_*, QUERY_*, REMOTE_ADDR. value NULL = nil. */
typedef struct weir_http_extra {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} weir_http_extra_t;

typedef struct weir_http_body_opts {
    bool parse_json;      /* <parse> @type json: the raw body goes to the JSON parser */
    const char *time_key; /* "time" */
    bool keep_time_key;
    /* <parse> @type json: always set. Default mode: set only when <parse> @type in_http has
     * time_type or time_format; NULL = the numeric Time.at rule. */
    const weir_timeparser_t *time_parser;
    bool null_empty_string;    /* <parse> @type json only */
    const regex_t *null_value; /* <parse> @type json only; NULL = off */
    int max_depth;             /* WEIR_HTTP_MAX_DEPTH */
    size_t max_records;        /* WEIR_HTTP_MAX_RECORDS */
    size_t max_batch_bytes;    /* 0 = WEIR_HTTP_MAX_BATCH_BYTES */
} weir_http_body_opts_t;

/* Values of a request that were dropped without failing it, as Fluentd >= 1.17 drops them:
 * JSON that does not parse, an incomplete msgpack value at the end of the body, and values
 * that are not maps (top level, or elements of a top-level array). The caller counts them in
 * weir_input_parse_errors_total and warns, so an operator sees events being lost. */
typedef struct weir_http_body_skips {
    size_t count;
    weir_err_t first; /* why the first one was dropped */
} weir_http_body_skips_t;

typedef struct weir_http_body_in {
    const char *query; /* raw query string, NULL = none */
    size_t query_len;
    const char *content_type; /* "" when absent */
    const char *body;
    size_t body_len;
    const weir_http_extra_t *extras;
    size_t nextras;
    weir_time_t now;
    /* NULL, or where to count dropped values: zeroed by the call, meaningful when it returns 0 */
    weir_http_body_skips_t *skips;
} weir_http_body_in_t;

/* Decodes one request into records appended to `out` (whose tag the caller sets). Returns 0
 * (zero records is a success: invalid JSON is skipped as Fluentd >= 1.17 does, and counted in
 * in->skips), or -1 when the
 * request gets 400, with the message in err and `out` as it was on entry: a request is
 * all-or-nothing. */
int weir_http_body_decode(const weir_http_body_opts_t *o, const weir_http_body_in_t *in,
                          weir_batch_t *out, weir_err_t *err);

/* Key comparisons and hash-set steps spent finding repeated keys and looking keys up, summed
 * over every call on this thread (JSON conversion and body decoding). Tests use it to show a
 * record's keys cost linear work; nothing else reads it. */
extern _Thread_local uint64_t weir_http_key_work;
/* Bytes the JSON converter moved to fit a container's header, likewise for tests. */
extern _Thread_local uint64_t weir_http_json_moved;

#endif
