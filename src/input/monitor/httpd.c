/* A small HTTP/1.1 server for the monitoring sources: GET and HEAD, keep-alive, pipelining,
 * plain TCP or TLS, on the ingest-connection layer (include/weir/ingest.h) with the same
 * request reader as in_http (weir_http_req_t, src/input/http/request.c).
 *
 * Each request is answered as soon as its last byte is read: the reader stops at the end of
 * every request, the answer is written (one write: status line, headers and body), and
 * reading goes on with the bytes after it, so pipelined requests are answered in order. What
 * a client may send is bounded by the reader (URL, header bytes, body) and the layer
 * (connections, idle time, progress): a scraper on a monitoring port is trusted no more than a
 * sender. This file is the framing and the answers only. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zlib.h>

#include "monitor_internal.h"
#include "weir/http_input.h"
#include "weir/ingest.h"
#include "weir/log.h"

/* The monitoring server's part of a connection (weir_ingest_conn_data). */
typedef struct mon_conn {
    mon_server_t *srv; /* NULL until .open */
    weir_http_req_t req;
} mon_conn_t;

struct mon_server {
    mon_handler_fn handle;
    void *arg;
    weir_ingest_t *ing;
};

/* ---- answering --------------------------------------------------------------------------- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

static int gzip_body(const weir_buf_t *in, weir_buf_t *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong bound = deflateBound(&z, (uLong)in->len);
    weir_buf_reserve(out, bound);
    z.next_in = (Bytef *)in->data;
    z.avail_in = (uInt)in->len;
    z.next_out = (Bytef *)out->data + out->len;
    z.avail_out = (uInt)bound;
    int rc = deflate(&z, Z_FINISH);
    if (rc == Z_STREAM_END) out->len += bound - z.avail_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END ? 0 : -1;
}

/* RFC 9110's Date header ("Thu, 03 Dec 2026 13:05:00 GMT"): the status page reads the server's
 * clock from it, to show ages and the uptime in weir's time rather than the browser's. */
static void put_date(weir_buf_t *out)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    if (!gmtime_r(&now, &tm) || !strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm))
        return;
    weir_buf_printf(out, "Date: %s\r\n", date);
}

/* Writes status line, headers and body as one unit. */
static void send_response(weir_ingest_conn_t *ic, int method, bool gzip_ok, bool keep_alive,
                          mon_response_t *r)
{
    weir_buf_t zbody, out;
    weir_buf_init(&zbody);
    weir_buf_init(&out);
    const weir_buf_t *body = &r->body;
    bool gz = gzip_ok && r->allow_gzip && r->body.len > 0 && gzip_body(&r->body, &zbody) == 0;
    if (gz) body = &zbody;
    weir_buf_printf(&out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n",
                    r->status, reason_phrase(r->status), r->content_type, body->len);
    put_date(&out);
    if (gz) weir_buf_printf(&out, "Content-Encoding: gzip\r\n");
    if (r->extra_headers) weir_buf_printf(&out, "%s", r->extra_headers);
    if (r->status == 405) weir_buf_printf(&out, "Allow: GET, HEAD\r\n");
    if (!keep_alive) weir_buf_printf(&out, "Connection: close\r\n");
    weir_buf_append(&out, "\r\n", 2);
    if (method != HTTP_HEAD && body->len) weir_buf_append(&out, body->data, body->len);
    weir_ingest_conn_write(ic, out.data, out.len);
    weir_buf_free(&out);
    weir_buf_free(&zbody);
}

/* An error answer; the connection ends after it. */
static weir_ingest_res_t answer_error(weir_ingest_conn_t *ic, int status, const char *why)
{
    mon_response_t r = {.status = status, .content_type = "text/plain; charset=utf-8"};
    weir_buf_init(&r.body);
    weir_buf_printf(&r.body, "%s\n", why);
    send_response(ic, HTTP_GET, false, false, &r);
    weir_buf_free(&r.body);
    return WEIR_INGEST_CLOSE;
}

/* Splits the request-target into path and query; an absolute-form target
 * ("http://host:port/metrics") is reduced to its path. */
static void split_target(char *url, const char **path, const char **query)
{
    char *p = url;
    size_t skip = strncasecmp(url, "http://", 7) == 0    ? 7
                  : strncasecmp(url, "https://", 8) == 0 ? 8
                                                         : 0;
    if (skip) {
        p = strchr(url + skip, '/');
        if (!p) p = url + strlen(url); /* no path: "" is answered 400 */
    }
    char *q = strchr(p, '?');
    *query = "";
    if (q) {
        *q = '\0';
        *query = q + 1;
    }
    *path = p;
}

static bool accepts_gzip(const weir_http_req_t *req)
{
    /* "gzip" (or "x-gzip") with any q; "gzip;q=0" is too rare to honour */
    const weir_http_header_t *ae = weir_http_req_header(req, "Accept-Encoding");
    return ae && strcasestr(ae->value, "gzip");
}

/* A whole request: the handler's answer. */
static weir_ingest_res_t answer(weir_ingest_conn_t *ic, mon_conn_t *mc)
{
    weir_http_req_t *hr = &mc->req;
    mon_request_t req = {.method = (int)hr->method, .accept_gzip = accepts_gzip(hr)};
    split_target(hr->url.data, &req.path, &req.query);
    mon_response_t r = {.status = 200, .content_type = "text/plain; charset=utf-8"};
    weir_buf_init(&r.body);
    if (req.method != HTTP_GET && req.method != HTTP_HEAD) {
        r.status = 405;
        weir_buf_printf(&r.body, "only GET and HEAD\n");
    } else if (req.path[0] != '/') {
        r.status = 400;
        weir_buf_printf(&r.body, "bad request target\n");
    } else {
        mc->srv->handle(mc->srv->arg, &req, &r);
    }
    bool keep = hr->keep_alive;
    send_response(ic, req.method, req.accept_gzip, keep, &r);
    weir_buf_free(&r.body);
    if (!keep) return WEIR_INGEST_CLOSE;
    weir_http_req_next(hr);
    return WEIR_INGEST_NEXT;
}

/* ---- framing ------------------------------------------------------------------------------ */

static weir_ingest_res_t mon_frame(weir_ingest_conn_t *ic, const char *p, size_t len,
                                   weir_ingest_frame_t *f)
{
    mon_conn_t *mc = weir_ingest_conn_data(ic);
    weir_http_ev_t ev;
    f->consumed = weir_http_req_feed(&mc->req, p, len, &ev);
    switch (ev) {
    case WEIR_HTTP_EV_HEADERS:
        return WEIR_INGEST_NEXT;
    case WEIR_HTTP_EV_REQUEST:
        return answer(ic, mc);
    case WEIR_HTTP_EV_TOO_LARGE:
        return answer_error(ic, 413, reason_phrase(413));
    case WEIR_HTTP_EV_ERROR: {
        int st = mc->req.error_status ? mc->req.error_status : 400;
        return answer_error(ic, st, st == 400 && mc->req.error ? mc->req.error : reason_phrase(st));
    }
    case WEIR_HTTP_EV_NONE:
    default:
        if (f->consumed == 0) return answer_error(ic, 400, "the request reader made no progress");
        return WEIR_INGEST_MORE;
    }
}

static size_t mon_held(weir_ingest_conn_t *ic)
{
    mon_conn_t *mc = weir_ingest_conn_data(ic);
    if (!mc->srv || !weir_http_req_started(&mc->req)) return 0;
    return mc->req.url.len + mc->req.hdata.len + mc->req.body.len;
}

static void mon_open(weir_ingest_conn_t *ic)
{
    mon_conn_t *mc = weir_ingest_conn_data(ic);
    mc->srv = weir_ingest_data(weir_ingest_conn_ingest(ic));
    weir_http_req_init(&mc->req, MON_MAX_BODY);
    mc->req.max_url = MON_MAX_URL;
    mc->req.max_header_bytes = MON_MAX_HEADER_BYTES;
}

static void mon_closed(weir_ingest_conn_t *ic)
{
    mon_conn_t *mc = weir_ingest_conn_data(ic);
    if (mc->srv) weir_http_req_free(&mc->req);
}

static const weir_ingest_ops_t mon_ingest_ops = {
    .name = "monitor",
    .conn_size = sizeof(mon_conn_t),
    .open = mon_open,
    .frame = mon_frame,
    .held = mon_held,
    .closed = mon_closed,
};

/* ---- server ------------------------------------------------------------------------------ */

mon_server_t *mon_server_new(uv_loop_t *loop, const mon_server_opts_t *o, weir_err_t *err)
{
    mon_server_t *s = weir_calloc(1, sizeof *s);
    s->handle = o->handle;
    s->arg = o->arg;
    weir_ingest_opts_t io;
    weir_ingest_opts_init(&io);
    io.bind = o->bind;
    io.port = o->port;
    io.tls = o->tls;
    io.pm = o->pm;
    io.max_connections = MON_MAX_CONNS;
    io.idle_timeout = MON_IDLE_TIMEOUT_MS / 1000.0;
    io.data = s;
    s->ing = weir_ingest_new(loop, NULL, &mon_ingest_ops, &io, err);
    if (!s->ing) {
        weir_err_prefix(err, "%s on %s:%d", o->name, o->bind, o->port);
        free(s);
        return NULL;
    }
    return s;
}

int mon_server_port(const mon_server_t *s)
{
    return weir_ingest_port(s->ing);
}

void mon_server_stop(mon_server_t *s, void (*done)(void *), void *arg)
{
    weir_ingest_stop(s->ing, done, arg);
}

/* The connections' state points at `s` only through .open's copy, which .closed no longer
 * reads, so `s` may go before the layer's last close callback. */
void mon_server_free(mon_server_t *s)
{
    if (!s) return;
    weir_ingest_free(s->ing);
    free(s);
}
