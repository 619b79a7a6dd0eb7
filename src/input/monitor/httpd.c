/* A small HTTP/1.1 server for the monitoring sources: GET and HEAD, keep-alive, pipelining,
 * plain TCP or TLS through weir_listener / weir_conn, requests parsed by Debian's http_parser.
 *
 * Each request is answered as soon as its last byte is parsed: the parser pauses at the end of
 * every message, the answer is written (one weir_conn_write: status line, headers and body),
 * and parsing resumes with the bytes after it, so pipelined requests are answered in order.
 * Everything a client sends is bounded (URL, header bytes, body, connection count, idle time):
 * a scraper on a monitoring port is trusted no more than a sender. */
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "monitor_internal.h"
#include "weir/log.h"

#define MON_SWEEP_MS 5000 /* how often idle connections are looked for */
#define MON_FIELD_MAX 64  /* longer header names are of no interest here */
#define MON_AE_MAX 256    /* Accept-Encoding value kept for the gzip check */

typedef struct mon_conn {
    mon_server_t *srv; /* NULL once the server is gone */
    weir_conn_t *c;
    struct mon_conn *prev, *next;
    http_parser hp;
    weir_buf_t url;
    weir_buf_t field; /* the header name being read */
    weir_buf_t ae;    /* Accept-Encoding value */
    size_t header_bytes, body_bytes;
    bool in_value;
    bool accept_gzip;
    bool complete; /* a whole request was parsed; the parser is paused */
    bool keep_alive;
    int error_status; /* set by a callback that refused the request */
    bool closing;
    uint64_t last_active;
} mon_conn_t;

struct mon_server {
    uv_loop_t *loop;
    char *name;
    mon_handler_fn handle;
    void *arg;
    weir_plugin_metrics_t *pm;
    weir_listener_t *listener;
    uv_timer_t sweep;
    mon_conn_t *conns;
    size_t nconns;
    bool stopping;
    void (*stop_done)(void *);
    void *stop_arg;
    weir_ratelimit_t warn_rl;
};

/* ---- parsing ----------------------------------------------------------------------------- */

static int refuse(mon_conn_t *mc, int status)
{
    mc->error_status = status;
    return -1;
}

static void finish_header(mon_conn_t *mc)
{
    if (mc->field.len == 15 && strncasecmp(mc->field.data, "accept-encoding", 15) == 0) {
        weir_buf_putc(&mc->ae, '\0');
        /* "gzip" (or "x-gzip") with any q; "gzip;q=0" is too rare to honour */
        if (strcasestr(mc->ae.data, "gzip")) mc->accept_gzip = true;
    }
    mc->field.len = 0;
    mc->ae.len = 0;
    mc->in_value = false;
}

static int on_message_begin(http_parser *hp)
{
    mon_conn_t *mc = hp->data;
    mc->url.len = mc->field.len = mc->ae.len = 0;
    mc->header_bytes = mc->body_bytes = 0;
    mc->in_value = mc->accept_gzip = false;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    mon_conn_t *mc = hp->data;
    if (mc->url.len + len > MON_MAX_URL) return refuse(mc, 414);
    weir_buf_append(&mc->url, at, len);
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    mon_conn_t *mc = hp->data;
    mc->header_bytes += len;
    if (mc->header_bytes > MON_MAX_HEADER_BYTES) return refuse(mc, 431);
    if (mc->in_value) finish_header(mc);
    if (mc->field.len + len <= MON_FIELD_MAX) weir_buf_append(&mc->field, at, len);
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    mon_conn_t *mc = hp->data;
    mc->header_bytes += len;
    if (mc->header_bytes > MON_MAX_HEADER_BYTES) return refuse(mc, 431);
    mc->in_value = true;
    if (mc->ae.len + len <= MON_AE_MAX) weir_buf_append(&mc->ae, at, len);
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    mon_conn_t *mc = hp->data;
    if (mc->in_value) finish_header(mc);
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    mon_conn_t *mc = hp->data;
    mc->body_bytes += len;
    return mc->body_bytes > MON_MAX_BODY ? refuse(mc, 413) : 0;
}

static int on_message_complete(http_parser *hp)
{
    mon_conn_t *mc = hp->data;
    mc->complete = true;
    mc->keep_alive = http_should_keep_alive(hp) != 0;
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

/* Writes status line, headers and body as one unit; closes after it unless kept alive. */
static void send_response(mon_conn_t *mc, int method, bool gzip_ok, mon_response_t *r)
{
    weir_buf_t zbody, out;
    weir_buf_init(&zbody);
    weir_buf_init(&out);
    const weir_buf_t *body = &r->body;
    bool gz = gzip_ok && r->allow_gzip && r->body.len > 0 && gzip_body(&r->body, &zbody) == 0;
    if (gz) body = &zbody;
    weir_buf_printf(&out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n",
                    r->status, reason_phrase(r->status), r->content_type, body->len);
    if (gz) weir_buf_printf(&out, "Content-Encoding: gzip\r\n");
    if (r->status == 405) weir_buf_printf(&out, "Allow: GET, HEAD\r\n");
    if (!mc->keep_alive) weir_buf_printf(&out, "Connection: close\r\n");
    weir_buf_append(&out, "\r\n", 2);
    if (method != HTTP_HEAD && body->len) weir_buf_append(&out, body->data, body->len);
    weir_conn_write(mc->c, out.data, out.len);
    weir_buf_free(&out);
    weir_buf_free(&zbody);
    if (!mc->keep_alive) {
        mc->closing = true;
        weir_conn_close(mc->c, NULL);
    }
}

static void answer_error(mon_conn_t *mc, int status, const char *why)
{
    mon_response_t r = {.status = status, .content_type = "text/plain; charset=utf-8"};
    weir_buf_init(&r.body);
    weir_buf_printf(&r.body, "%s\n", why);
    mc->keep_alive = false;
    send_response(mc, HTTP_GET, false, &r);
    weir_buf_free(&r.body);
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

static void answer(mon_conn_t *mc)
{
    weir_buf_putc(&mc->url, '\0');
    mon_request_t req = {.method = (int)mc->hp.method, .accept_gzip = mc->accept_gzip};
    split_target(mc->url.data, &req.path, &req.query);
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
    send_response(mc, req.method, req.accept_gzip, &r);
    weir_buf_free(&r.body);
}

/* ---- connections ------------------------------------------------------------------------- */

static void conn_process(mon_conn_t *mc, const char *data, size_t len)
{
    while (len > 0 && !mc->closing && mc->srv) {
        size_t n = http_parser_execute(&mc->hp, &settings, data, len);
        if (mc->complete) {
            mc->complete = false;
            http_parser_pause(&mc->hp, 0);
            answer(mc);
            data += n;
            len -= n;
            continue;
        }
        enum http_errno e = HTTP_PARSER_ERRNO(&mc->hp);
        if (e != HPE_OK || n != len) {
            int status = mc->error_status ? mc->error_status : 400;
            answer_error(mc, status,
                         mc->error_status ? reason_phrase(status) : http_errno_description(e));
            return;
        }
        break;
    }
    if (mc->srv && mc->srv->stopping && !mc->closing) {
        mc->closing = true;
        weir_conn_close(mc->c, NULL);
    }
}

static void on_data(weir_conn_t *c, const char *data, size_t len)
{
    mon_conn_t *mc = weir_conn_get_data(c);
    if (mc->closing || !mc->srv) return;
    mc->last_active = uv_now(mc->srv->loop);
    conn_process(mc, data, len);
}

static void on_eof(weir_conn_t *c)
{
    mon_conn_t *mc = weir_conn_get_data(c);
    if (mc->closing) return;
    mc->closing = true;
    weir_conn_close(c, NULL);
}

static void stop_check(mon_server_t *s)
{
    if (!s->stopping || s->nconns > 0 || !s->stop_done) return;
    void (*done)(void *) = s->stop_done;
    s->stop_done = NULL;
    done(s->stop_arg);
}

static void on_close(weir_conn_t *c, const char *reason)
{
    mon_conn_t *mc = weir_conn_get_data(c);
    mon_server_t *s = mc->srv;
    if (s) {
        if (mc->prev)
            mc->prev->next = mc->next;
        else
            s->conns = mc->next;
        if (mc->next) mc->next->prev = mc->prev;
        s->nconns--;
        weir_metrics_input_connection(s->pm, -1);
    }
    weir_buf_free(&mc->url);
    weir_buf_free(&mc->field);
    weir_buf_free(&mc->ae);
    free(mc);
    if (s) stop_check(s);
}

static const weir_conn_cbs_t conn_cbs = {
    .on_data = on_data,
    .on_eof = on_eof,
    .on_close = on_close,
};

static void on_accept(weir_listener_t *l, weir_conn_t *c)
{
    mon_server_t *s = weir_listener_data(l);
    mon_conn_t *mc = weir_calloc(1, sizeof *mc);
    mc->srv = s;
    mc->c = c;
    mc->last_active = uv_now(s->loop);
    http_parser_init(&mc->hp, HTTP_REQUEST);
    mc->hp.data = mc;
    weir_buf_init(&mc->url);
    weir_buf_init(&mc->field);
    weir_buf_init(&mc->ae);
    mc->next = s->conns;
    if (s->conns) s->conns->prev = mc;
    s->conns = mc;
    s->nconns++;
    weir_metrics_input_connection(s->pm, 1);
    weir_conn_setup(c, &conn_cbs, mc);
    if (s->nconns > MON_MAX_CONNS) {
        unsigned long skipped = 0;
        if (weir_ratelimit_ok(&s->warn_rl, &skipped))
            weir_warn("%s: more than %d connections; closing the one from %s (%lu more not "
                      "logged)",
                      s->name, MON_MAX_CONNS, weir_conn_peer_addr(c), skipped);
        mc->closing = true;
        weir_conn_close(c, "too many connections");
    }
}

static void on_tls_fail(weir_listener_t *l, const char *peer, const char *reason)
{
    mon_server_t *s = weir_listener_data(l);
    weir_metrics_input_tls_failure(s->pm);
}

static void sweep_cb(uv_timer_t *t)
{
    mon_server_t *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (mon_conn_t *mc = s->conns; mc; mc = mc->next) {
        if (mc->closing || now - mc->last_active < MON_IDLE_TIMEOUT_MS) continue;
        mc->closing = true;
        weir_conn_close(mc->c, "idle");
    }
}

/* ---- server ------------------------------------------------------------------------------ */

mon_server_t *mon_server_new(uv_loop_t *loop, const mon_server_opts_t *o, weir_err_t *err)
{
    mon_server_t *s = weir_calloc(1, sizeof *s);
    s->loop = loop;
    s->name = weir_strdup(o->name);
    s->handle = o->handle;
    s->arg = o->arg;
    s->pm = o->pm;
    s->warn_rl.interval_ms = 5000;
    weir_listener_opts_t lo = {
        .bind = o->bind,
        .port = o->port,
        .tls = o->tls,
        .linger_timeout = -1,
        .on_accept = on_accept,
        .on_tls_fail = on_tls_fail,
        .data = s,
    };
    s->listener = weir_listener_new(loop, &lo, err);
    if (!s->listener) {
        weir_err_prefix(err, "%s on %s:%d", o->name, o->bind, o->port);
        free(s->name);
        free(s);
        return NULL;
    }
    uv_timer_init(loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_start(&s->sweep, sweep_cb, MON_SWEEP_MS, MON_SWEEP_MS);
    uv_unref((uv_handle_t *)&s->sweep); /* never keeps the loop alive on its own */
    return s;
}

int mon_server_port(const mon_server_t *s)
{
    return weir_listener_port(s->listener);
}

void mon_server_stop(mon_server_t *s, void (*done)(void *), void *arg)
{
    s->stopping = true;
    s->stop_done = done;
    s->stop_arg = arg;
    if (s->listener) weir_listener_close(s->listener);
    s->listener = NULL;
    uv_timer_stop(&s->sweep);
    for (mon_conn_t *mc = s->conns; mc; mc = mc->next) {
        if (mc->closing) continue;
        mc->closing = true;
        weir_conn_close(mc->c, NULL);
    }
    stop_check(s);
}

static void on_sweep_closed(uv_handle_t *h)
{
    mon_server_t *s = h->data;
    free(s->name);
    free(s);
}

void mon_server_free(mon_server_t *s)
{
    if (!s) return;
    if (s->listener) weir_listener_close(s->listener);
    for (mon_conn_t *mc = s->conns, *next; mc; mc = next) {
        next = mc->next;
        mc->srv = NULL; /* its on_close frees it alone */
        weir_conn_abort(mc->c, "shutting down");
    }
    s->conns = NULL;
    uv_close((uv_handle_t *)&s->sweep, on_sweep_closed);
}
