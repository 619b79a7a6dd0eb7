/* HTTP/1.x requests, read with Debian's http_parser - the one reader for <source> @type http
 * and the monitoring server - plus the small
 * protocol rules of in_http: the tag from the path, WEBrick's query-string parsing, the
 * request-target check of Ruby's URI.parse, and the response bytes.
 *
 * The reader stops (http_parser_pause) after the headers of each request, so the caller can
 * answer Expect: 100-continue or refuse an oversized body before it arrives, and after each
 * whole request, so pipelined requests are handled one at a time and answered in order: the
 * bytes of the next request stay unread until the caller asks for them. Every byte that
 * reaches a buffer here has passed a limit of http_input.h first. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "weir/http_input.h"

/* ---- http_parser callbacks --------------------------------------------------------------- */

static weir_http_req_t *req_of(http_parser *hp)
{
    return hp->data;
}

static int fail(weir_http_req_t *r, int status, const char *why)
{
    r->error = why;
    r->error_status = status;
    return -1;
}

static int on_message_begin(http_parser *hp)
{
    weir_http_req_t *r = req_of(hp);
    r->url.len = 0;
    r->hdata.len = 0;
    r->nheaders = 0;
    r->header_bytes = 0;
    r->in_value = false;
    r->headers_done = false;
    r->body.len = 0;
    r->started = true;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    weir_http_req_t *r = req_of(hp);
    if (r->url.len + len > r->max_url) return fail(r, 414, "request URL over the limit");
    r->header_bytes += len;
    weir_buf_append(&r->url, at, len);
    return 0;
}

static int count_header_bytes(weir_http_req_t *r, size_t len)
{
    r->header_bytes += len;
    if (r->header_bytes > r->max_header_bytes)
        return fail(r, 431, "request headers over the limit");
    return 0;
}

/* A name or value may arrive in several pieces; a name after a value starts a new header. */
static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    weir_http_req_t *r = req_of(hp);
    if (count_header_bytes(r, len) != 0) return -1;
    if (r->headers_done) return 0; /* trailers: counted, not kept */
    /* http_parser built without HTTP_PARSER_STRICT takes "Content-Length : 12" as a header
     * named "Content-Length ": RFC 9112 section 5.1 says 400. */
    if (memchr(at, ' ', len) || memchr(at, '\t', len)) {
        r->rfc9112 = true;
        return fail(r, 400, "whitespace in a header field name (RFC 9112 section 5.1)");
    }
    if (r->in_value || r->nheaders == 0) {
        if (r->nheaders == WEIR_HTTP_MAX_HEADERS) return fail(r, 431, "too many request headers");
        if (r->nheaders == r->hcap) {
            r->hcap = r->hcap ? r->hcap * 2 : 16;
            r->hoff = weir_realloc(r->hoff, r->hcap * 2 * sizeof *r->hoff);
        }
        if (r->nheaders > 0) weir_buf_putc(&r->hdata, '\0');
        r->hoff[2 * r->nheaders] = r->hdata.len;
        r->hoff[2 * r->nheaders + 1] = 0;
        r->nheaders++;
        r->in_value = false;
    }
    weir_buf_append(&r->hdata, at, len);
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    weir_http_req_t *r = req_of(hp);
    if (count_header_bytes(r, len) != 0) return -1;
    if (r->headers_done) return 0;
    if (!r->in_value) {
        weir_buf_putc(&r->hdata, '\0');
        r->hoff[2 * r->nheaders - 1] = r->hdata.len;
        r->in_value = true;
    }
    weir_buf_append(&r->hdata, at, len);
    return 0;
}

static bool contains_ci(const char *s, size_t n, const char *word)
{
    size_t w = strlen(word);
    for (size_t i = 0; i + w <= n; i++)
        if (strncasecmp(s + i, word, w) == 0) return true;
    return false;
}

/* Header pointers are fixed once hdata stops growing. A header line without a value (the
 * parser allows "Name:" with nothing after it) gets "". */
static void finish_headers(weir_http_req_t *r)
{
    weir_buf_putc(&r->hdata, '\0');
    if (r->nheaders > r->headers_cap || !r->headers) {
        r->headers_cap = r->hcap ? r->hcap : 1;
        r->headers = weir_realloc(r->headers, r->headers_cap * sizeof *r->headers);
    }
    for (size_t i = 0; i < r->nheaders; i++) {
        weir_http_header_t *h = &r->headers[i];
        size_t no = r->hoff[2 * i], vo = r->hoff[2 * i + 1];
        h->name = r->hdata.data + no;
        h->name_len = strlen(h->name);
        h->value = vo ? r->hdata.data + vo : "";
        h->value_len = vo ? strlen(h->value) : 0;
    }
}

static int on_headers_complete(http_parser *hp)
{
    weir_http_req_t *r = req_of(hp);
    weir_buf_putc(&r->url, '\0');
    r->url.len--;
    finish_headers(r);
    r->headers_done = true;
    r->method = (enum http_method)hp->method;
    r->major = hp->http_major;
    r->minor = hp->http_minor;
    /* Fluentd's rule: HTTP/1.1 keeps the connection, anything else closes it, and a
     * Connection header mentioning "close" or "keep-alive" decides */
    r->keep_alive = hp->http_major == 1 && hp->http_minor == 1;
    const weir_http_header_t *c = weir_http_req_header(r, "Connection");
    if (c && contains_ci(c->value, c->value_len, "close"))
        r->keep_alive = false;
    else if (c && contains_ci(c->value, c->value_len, "keep-alive"))
        r->keep_alive = true;
    r->has_length = !(hp->flags & F_CHUNKED) && hp->content_length != ULLONG_MAX;
    r->content_length = r->has_length ? hp->content_length : 0;
    r->pending = WEIR_HTTP_EV_HEADERS;
    http_parser_pause(hp, 1);
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    weir_http_req_t *r = req_of(hp);
    if (r->body.len + len > r->body_limit) {
        r->pending = WEIR_HTTP_EV_TOO_LARGE;
        return -1;
    }
    weir_buf_append(&r->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    weir_http_req_t *r = req_of(hp);
    r->pending = WEIR_HTTP_EV_REQUEST;
    r->paused_for_request = true;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- the reader ---------------------------------------------------------------------------- */

void weir_http_req_init(weir_http_req_t *r, uint64_t body_limit)
{
    memset(r, 0, sizeof *r);
    http_parser_init(&r->hp, HTTP_REQUEST);
    r->hp.data = r;
    r->body_limit = body_limit;
    r->max_url = WEIR_HTTP_MAX_URL_LEN;
    r->max_header_bytes = WEIR_HTTP_MAX_HEADER_BYTES;
    weir_buf_init(&r->url);
    weir_buf_init(&r->hdata);
    weir_buf_init(&r->body);
}

void weir_http_req_free(weir_http_req_t *r)
{
    weir_buf_free(&r->url);
    weir_buf_free(&r->hdata);
    weir_buf_free(&r->body);
    free(r->hoff);
    free(r->headers);
    r->hoff = NULL;
    r->headers = NULL;
}

/* RFC 9112 section 2.2: a line ends with CRLF; a bare LF (which http_parser takes) gets 400.
 * The reader pauses at the end of the headers, so the bytes of one call are all head bytes
 * (request line, headers) or all body bytes; only head bytes are looked at, once each. */
static bool bare_lf(weir_http_req_t *r, const char *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (data[i] == '\n' && !(i > 0 ? data[i - 1] == '\r' : r->last_cr)) return true;
    }
    if (n > 0) r->last_cr = data[n - 1] == '\r';
    return false;
}

size_t weir_http_req_feed(weir_http_req_t *r, const char *data, size_t len, weir_http_ev_t *ev)
{
    *ev = WEIR_HTTP_EV_NONE;
    if (r->paused_for_request) return 0; /* weir_http_req_next() first */
    if (len == 0) return 0;              /* 0 would tell http_parser the peer closed */
    if (HTTP_PARSER_ERRNO(&r->hp) == HPE_PAUSED) http_parser_pause(&r->hp, 0);
    r->pending = WEIR_HTTP_EV_NONE;
    bool head = !r->headers_done;
    size_t n = http_parser_execute(&r->hp, &settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->hp);
    /* paused at the end of the head, http_parser has not counted the LF of the empty line
     * that ends it (it takes that byte again on the next call): look at it here */
    size_t head_bytes = head && r->headers_done && n < len ? n + 1 : n;
    if (head && (e == HPE_OK || e == HPE_PAUSED) && bare_lf(r, data, head_bytes)) {
        r->rfc9112 = true;
        fail(r, 400, "a line ending in LF without CR (RFC 9112 section 2.2)");
        *ev = WEIR_HTTP_EV_ERROR;
        return n;
    }
    if (e == HPE_OK || e == HPE_PAUSED) {
        *ev = r->pending;
        return n;
    }
    if (r->pending == WEIR_HTTP_EV_TOO_LARGE) {
        *ev = WEIR_HTTP_EV_TOO_LARGE;
        return n;
    }
    if (!r->error) fail(r, 400, http_errno_description(e));
    *ev = WEIR_HTTP_EV_ERROR;
    return n;
}

bool weir_http_req_started(const weir_http_req_t *r)
{
    return r->started;
}

weir_http_ev_t weir_http_req_eof(weir_http_req_t *r)
{
    if (r->paused_for_request) return WEIR_HTTP_EV_NONE;
    if (HTTP_PARSER_ERRNO(&r->hp) == HPE_PAUSED) http_parser_pause(&r->hp, 0);
    http_parser_execute(&r->hp, &settings, NULL, 0);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->hp);
    if (e != HPE_OK && e != HPE_PAUSED) {
        fail(r, 400, "the peer closed the connection in the middle of a request");
        return WEIR_HTTP_EV_ERROR;
    }
    return WEIR_HTTP_EV_NONE;
}

void weir_http_req_next(weir_http_req_t *r)
{
    r->paused_for_request = false;
    r->started = false;
    r->headers_done = false;
    r->url.len = 0;
    r->nheaders = 0;
    r->hdata.len = 0;
    r->body.len = 0;
    r->header_bytes = 0;
    r->in_value = false;
    r->last_cr = false;
    if (HTTP_PARSER_ERRNO(&r->hp) == HPE_PAUSED) http_parser_pause(&r->hp, 0);
}

const weir_http_header_t *weir_http_req_header(const weir_http_req_t *r, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < r->nheaders; i++)
        if (r->headers[i].name_len == n && strcasecmp(r->headers[i].name, name) == 0)
            return &r->headers[i];
    return NULL;
}

/* ---- request target ------------------------------------------------------------------------ */

static bool hexdig(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 3986 pchar (plus '/' and, in the query, '?'), with %XX well formed: what Ruby's
 * URI::RFC3986_Parser accepts. */
static bool rfc3986_ok(const char *s, size_t n, bool query)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) continue;
        if (strchr("-._~!$&'()*+,;=:@/", c) && c) continue;
        if (query && c == '?') continue;
        if (c == '%' && i + 2 < n && hexdig(s[i + 1]) && hexdig(s[i + 2])) {
            i += 2;
            continue;
        }
        return false;
    }
    return true;
}

int weir_http_split_target(const char *url, size_t len, const char **path, size_t *path_len,
                           const char **query, size_t *query_len)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (len == 0 || http_parser_parse_url(url, len, 0, &u) != 0) return -1;
    *path = "";
    *path_len = 0;
    *query = NULL;
    *query_len = 0;
    if (u.field_set & (1 << UF_PATH)) {
        *path = url + u.field_data[UF_PATH].off;
        *path_len = u.field_data[UF_PATH].len;
    }
    if (u.field_set & (1 << UF_QUERY)) {
        *query = url + u.field_data[UF_QUERY].off;
        *query_len = u.field_data[UF_QUERY].len;
    } else {
        const char *q = memchr(url, '?', len); /* "?" with nothing after it */
        if (q) *query = q + 1;
    }
    if (!rfc3986_ok(*path, *path_len, false)) return -1;
    if (*query && !rfc3986_ok(*query, *query_len, true)) return -1;
    return 0;
}

/* ---- tag ----------------------------------------------------------------------------------- */

void weir_http_tag_from_path(const char *path, size_t len, const char *prefix, weir_buf_t *out)
{
    out->len = 0;
    if (prefix) {
        weir_buf_append(out, prefix, strlen(prefix));
        weir_buf_putc(out, '.');
    }
    /* path[1..-1].split('/').join('.'): Ruby's split drops trailing empty fields */
    size_t end = len;
    while (end > 1 && path[end - 1] == '/')
        end--;
    for (size_t i = 1; i < end; i++)
        weir_buf_putc(out, path[i] == '/' ? '.' : path[i]);
    weir_buf_putc(out, '\0');
    out->len--;
}

/* ---- query strings ------------------------------------------------------------------------- */

static int unhex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return c - 'A' + 10;
}

static void unescape_form(const char *s, size_t n, weir_buf_t *out)
{
    out->len = 0;
    weir_buf_reserve(out, n + 1);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < n && hexdig(s[i + 1]) && hexdig(s[i + 2])) {
            c = (char)(unhex(s[i + 1]) * 16 + unhex(s[i + 2]));
            i += 2;
        }
        out->data[out->len++] = c;
    }
    out->data[out->len] = '\0';
}

void weir_http_query_parse(const char *s, size_t len, weir_http_param_cb cb, void *arg)
{
    weir_buf_t k, v;
    weir_buf_init(&k);
    weir_buf_init(&v);
    size_t i = 0;
    while (i <= len && len > 0) {
        size_t j = i;
        while (j < len && s[j] != '&' && s[j] != ';')
            j++;
        if (j > i) {
            const char *eq = memchr(s + i, '=', j - i);
            size_t klen = eq ? (size_t)(eq - (s + i)) : j - i;
            unescape_form(s + i, klen, &k);
            if (eq)
                unescape_form(eq + 1, (size_t)(s + j - eq - 1), &v);
            else
                unescape_form("", 0, &v);
            if (cb(arg, k.data, k.len, v.data, v.len) != 0) break;
        }
        i = j + 1;
    }
    weir_buf_free(&k);
    weir_buf_free(&v);
}

/* ---- responses ----------------------------------------------------------------------------- */

const char weir_http_empty_gif[] = "GIF89a\x01\x00\x01\x00\x80\xff\x00\xff\xff\xff\x00\x00\x00"
                                   ",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02"
                                   "D\x01\x00;";

void weir_http_response(weir_buf_t *out, const char *status, const weir_http_hdr_t *hdrs, size_t n,
                        const char *body, size_t body_len)
{
    bool have_len = false, have_type = false;
    weir_buf_printf(out, "HTTP/1.1 %s\r\n", status);
    for (size_t i = 0; i < n; i++) {
        weir_buf_printf(out, "%s: %s\r\n", hdrs[i].name, hdrs[i].value);
        have_len |= strcmp(hdrs[i].name, "Content-Length") == 0;
        have_type |= strcmp(hdrs[i].name, "Content-Type") == 0;
    }
    if (!have_len) weir_buf_printf(out, "Content-Length: %zu\r\n", body_len);
    if (!have_type) weir_buf_printf(out, "Content-Type: text/plain\r\n");
    weir_buf_append(out, "\r\n", 2);
    weir_buf_append(out, body, body_len);
}
