/* libcurl for the S3 output: the multi interface driven by the libuv loop, so that any number
 * of uploads costs no thread and the loop never waits on the network, and a blocking path for
 * the few requests that may block (start-up checks, credential fetches on worker threads).
 *
 * The loop glue follows libcurl's socket API: curl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION -> one uv_poll_t per socket) and when to call it back
 * (CURLMOPT_TIMERFUNCTION -> one uv_timer_t); each readiness or timeout goes back to
 * curl_multi_socket_action, and finished transfers are reported to their owners after that
 * call returns, never from inside a curl callback. Invariant: every uv_poll_t is known to both
 * curl (curl_multi_assign) and our list, so shutdown can close all of them. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "s3_internal.h"
#include "weir/log.h"

typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    s3_http_t *h;
    struct sock_ctx *next, *prev;
} sock_ctx_t;

struct s3_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t *timer;
    const s3_net_opts_t *net;
    sock_ctx_t *socks;
};

/* ---- requests ---------------------------------------------------------------------------- */

void s3_http_req_init(s3_http_req_t *r)
{
    memset(r, 0, sizeof *r);
    weir_buf_init(&r->resp);
}

void s3_http_req_reset(s3_http_req_t *r)
{
    if (r->easy) curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->url);
    weir_buf_free(&r->resp);
    s3_http_req_init(r);
}

void s3_http_req_header(s3_http_req_t *r, const char *name, const char *value)
{
    weir_buf_t h;
    weir_buf_init(&h);
    /* "Name:" alone tells curl to drop a header it would add (Expect, Content-Type) */
    if (value)
        weir_buf_printf(&h, "%s: %s", name, value);
    else
        weir_buf_printf(&h, "%s:", name);
    r->headers = curl_slist_append(r->headers, h.data);
    weir_buf_free(&h);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    s3_http_req_t *r = arg;
    size_t len = size * n;
    if (r->sink) {
        long st = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &st);
        if (st >= 200 && st < 300) return r->sink(p, len, r->sink_arg) ? len : 0;
    }
    size_t room = r->resp.len < S3_HTTP_MAX_RESPONSE ? S3_HTTP_MAX_RESPONSE - r->resp.len : 0;
    weir_buf_append(&r->resp, p, len < room ? len : room);
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    s3_http_req_t *r = arg;
    size_t len = size * n;
    if (len > 5 && strncasecmp(p, "etag:", 5) == 0) {
        const char *v = p + 5, *e = p + len;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
            e--;
        snprintf(r->etag, sizeof r->etag, "%.*s", (int)(e - v), v);
    }
    size_t hl = r->capture_header ? strlen(r->capture_header) : 0;
    if (hl && len > hl && p[hl] == ':' && strncasecmp(p, r->capture_header, hl) == 0) {
        const char *v = p + hl + 1, *e = p + len;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
            e--;
        r->captured_too_long = (size_t)(e - v) >= sizeof r->captured;
        if (r->captured_too_long)
            r->captured[0] = '\0';
        else
            snprintf(r->captured, sizeof r->captured, "%.*s", (int)(e - v), v);
    }
    return len;
}

static size_t on_read(char *p, size_t size, size_t n, void *arg)
{
    s3_http_req_t *r = arg;
    size_t want = size * n, left = r->body_len - r->body_off;
    size_t k = want < left ? want : left;
    memcpy(p, r->body + r->body_off, k);
    r->body_off += k;
    return k;
}

static int on_seek(void *arg, curl_off_t off, int origin)
{
    s3_http_req_t *r = arg;
    if (origin != SEEK_SET || off < 0 || (size_t)off > r->body_len) return CURL_SEEKFUNC_FAIL;
    r->body_off = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

static CURL *easy_new(s3_http_req_t *r, const s3_net_opts_t *net)
{
    CURL *e = curl_easy_init();
    if (!e) return NULL;
    r->errbuf[0] = '\0';
    r->body_off = 0;
    r->status = 0;
    r->etag[0] = '\0';
    r->captured[0] = '\0';
    r->captured_too_long = false;
    r->resp.len = 0;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L); /* a key's "./" and "../" are literal */
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     r->connect_timeout_ms ? r->connect_timeout_ms : 15000L);
    if (r->timeout_ms) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (net) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, net->verify_peer ? 1L : 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, net->verify_peer ? 2L : 0L);
        if (net->ca_bundle) curl_easy_setopt(e, CURLOPT_CAINFO, net->ca_bundle);
        if (net->ca_dir) curl_easy_setopt(e, CURLOPT_CAPATH, net->ca_dir);
    }
    const char *proxy = r->proxy ? r->proxy : net ? net->proxy : NULL;
    if (r->no_proxy)
        curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    else if (proxy)
        curl_easy_setopt(e, CURLOPT_PROXY, proxy);
    const char *m = r->method;
    if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "PUT") == 0) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, r);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, r);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(m, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(m, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    }
    return e;
}

static void finish_easy(s3_http_req_t *r, CURLcode code)
{
    r->curl_code = code;
    long st = 0;
    if (code == CURLE_OK) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &st);
    r->status = st;
    if (code != CURLE_OK && !r->errbuf[0])
        snprintf(r->errbuf, sizeof r->errbuf, "%s", curl_easy_strerror(code));
}

int s3_http_perform(s3_http_req_t *r, const s3_net_opts_t *net)
{
    if (r->easy) curl_easy_cleanup(r->easy);
    r->easy = easy_new(r, net);
    if (!r->easy) {
        snprintf(r->errbuf, sizeof r->errbuf, "cannot create a curl handle");
        r->curl_code = CURLE_FAILED_INIT;
        return -1;
    }
    finish_easy(r, curl_easy_perform(r->easy));
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    return r->curl_code == CURLE_OK ? 0 : -1;
}

const char *s3_http_error(const s3_http_req_t *r)
{
    return r->errbuf[0] ? r->errbuf : curl_easy_strerror((CURLcode)r->curl_code);
}

/* ---- the multi interface on the loop ------------------------------------------------------ */

static void check_done(s3_http_t *h)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURL *e = m->easy_handle;
        CURLcode code = m->data.result;
        s3_http_req_t *r = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
        finish_easy(r, code);
        curl_multi_remove_handle(h->multi, e);
        curl_easy_cleanup(e);
        r->easy = NULL;
        r->done(r);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_ctx_t *c = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else
        flags = (events & UV_READABLE ? CURL_CSELECT_IN : 0) |
                (events & UV_WRITABLE ? CURL_CSELECT_OUT : 0);
    s3_http_t *h = c->h;
    int running;
    curl_multi_socket_action(h->multi, c->fd, flags, &running);
    check_done(h);
}

static void on_timer(uv_timer_t *t)
{
    s3_http_t *h = t->data;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static void free_handle(uv_handle_t *hd)
{
    free(hd); /* every handle here is the first member of its own allocation */
}

static void close_sock(s3_http_t *h, sock_ctx_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        h->socks = c->next;
    if (c->next) c->next->prev = c->prev;
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, free_handle); /* poll is the first member of c */
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *arg, void *sockp)
{
    s3_http_t *h = arg;
    sock_ctx_t *c = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (c) {
            close_sock(h, c);
            curl_multi_assign(h->multi, s, NULL);
        }
        return 0;
    }
    if (!c) {
        c = weir_calloc(1, sizeof *c);
        c->fd = s;
        c->h = h;
        if (uv_poll_init_socket(h->loop, &c->poll, s) != 0) {
            free(c);
            return -1;
        }
        c->poll.data = c;
        c->next = h->socks;
        if (h->socks) h->socks->prev = c;
        h->socks = c;
        curl_multi_assign(h->multi, s, c);
    }
    int ev = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&c->poll, ev, on_poll);
    return 0;
}

static int on_timeout(CURLM *m, long ms, void *arg)
{
    s3_http_t *h = arg;
    if (ms < 0)
        uv_timer_stop(h->timer);
    else
        uv_timer_start(h->timer, on_timer, (uint64_t)ms, 0);
    return 0;
}

s3_http_t *s3_http_new(uv_loop_t *loop, const s3_net_opts_t *net)
{
    s3_http_t *h = weir_calloc(1, sizeof *h);
    h->loop = loop;
    h->net = net;
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h);
        return NULL;
    }
    h->timer = weir_calloc(1, sizeof *h->timer);
    uv_timer_init(loop, h->timer);
    h->timer->data = h;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timeout);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}

static void fail_now(uv_timer_t *t)
{
    s3_http_req_t *r = t->data;
    uv_close((uv_handle_t *)t, free_handle);
    r->done(r);
}

void s3_http_submit(s3_http_t *h, s3_http_req_t *r)
{
    if (r->easy) curl_easy_cleanup(r->easy);
    r->easy = easy_new(r, h->net);
    CURLMcode mc = r->easy ? curl_multi_add_handle(h->multi, r->easy) : CURLM_OUT_OF_MEMORY;
    if (mc == CURLM_OK) return;
    /* report the failure from the loop, as a finished request, never re-entrantly */
    if (r->easy) curl_easy_cleanup(r->easy);
    r->easy = NULL;
    r->curl_code = CURLE_FAILED_INIT;
    snprintf(r->errbuf, sizeof r->errbuf, "curl: %s", curl_multi_strerror(mc));
    uv_timer_t *t = weir_calloc(1, sizeof *t);
    uv_timer_init(h->loop, t);
    t->data = r;
    uv_timer_start(t, fail_now, 0, 0);
}

void s3_http_free(s3_http_t *h)
{
    if (!h) return;
    /* cleanup closes cached connections: the sockets are closed below, by our list */
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, NULL);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, NULL);
    curl_multi_cleanup(h->multi);
    while (h->socks)
        close_sock(h, h->socks);
    uv_timer_stop(h->timer);
    uv_close((uv_handle_t *)h->timer, free_handle);
    free(h);
}
