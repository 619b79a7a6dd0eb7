/* Accepted connections: reads, writes, backpressure and the close sequence, for plain TCP
 * and (through tls.c) TLS.
 *
 * Invariants:
 * - The struct is freed only in the last uv_close callback, right after on_close. So an input
 *   may call weir_conn_close or weir_conn_abort from inside any callback, and every path that
 *   calls out to the input re-checks `closing` before it touches the connection again.
 * - Once `closing` is set no callback other than the single on_close reaches the input.
 * - A graceful close sends what was written, then close_notify (TLS), then the FIN, then reads
 *   and discards until the peer's FIN, and only then closes the socket: closing with unread
 *   bytes would reset the connection and could destroy the final reply in flight. Both waits
 *   are bounded by timers. */
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include "net_internal.h"

unsigned net_close_timeout_ms = NET_CLOSE_TIMEOUT_MS_DEFAULT;
unsigned net_drain_timeout_ms = NET_DRAIN_TIMEOUT_MS_DEFAULT;

/* Socket reads land here. Delivery is synchronous and the input copies what it keeps, and
 * nothing the input can call from on_data starts another read, so one buffer per loop thread
 * serves every connection; it costs no memory per idle connection. */
static _Thread_local char g_rbuf[NET_READ_BUF_SIZE];

typedef struct net_write {
    uv_write_t req;
    weir_conn_t *c;
    size_t accounted;
    char data[];
} net_write_t;

static void close_handles(weir_conn_t *c);

/* ---- lifecycle ------------------------------------------------------------------------ */

weir_conn_t *net_conn_new(uv_loop_t *loop)
{
    weir_conn_t *c = weir_calloc(1, sizeof *c);
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    uv_idle_init(loop, &c->drain);
    c->tcp.data = c;
    c->timer.data = c;
    c->drain.data = c;
    c->shutdown_req.data = c;
    c->open_handles = 3;
    c->peer_port = -1;
    weir_buf_init(&c->early);
    return c;
}

static void conn_free(weir_conn_t *c)
{
    if (c->ssl) SSL_free(c->ssl); /* frees both BIOs */
    if (c->early.data) OPENSSL_cleanse(c->early.data, c->early.len);
    weir_buf_free(&c->early);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    weir_conn_t *c = h->data;
    if (--c->open_handles > 0) return;
    net_conn_detach(c);
    if (c->owned && c->cbs.on_close) c->cbs.on_close(c, c->has_reason ? c->reason : NULL);
    conn_free(c);
}

/* Pending write and shutdown requests are cancelled (their callbacks run with UV_ECANCELED)
 * before the close callbacks, so the struct is still alive for them. */
static void close_handles(weir_conn_t *c)
{
    if (c->handles_closed) return;
    c->handles_closed = true;
    c->closing = true;
    c->reading = false;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->drain, on_handle_closed);
}

void net_conn_discard(weir_conn_t *c)
{
    c->owned = false;
    c->closing = true;
    close_handles(c);
}

void net_conn_detach(weir_conn_t *c)
{
    weir_listener_t *l = c->listener;
    if (!l) return;
    if (c->lprev)
        c->lprev->lnext = c->lnext;
    else
        l->handshaking = c->lnext;
    if (c->lnext) c->lnext->lprev = c->lprev;
    c->lprev = c->lnext = NULL;
    c->listener = NULL;
}

void net_conn_set_reason(weir_conn_t *c, const char *reason)
{
    if (c->has_reason || !reason) return;
    snprintf(c->reason, sizeof c->reason, "%s", reason);
    c->has_reason = true;
}

/* ---- peer address and socket options --------------------------------------------------- */

/* A v4 client of a "::" listener shows up as ::ffff:a.b.c.d; report it as a.b.c.d, as
 * users of source_address_key expect. */
static void unmap_v4(struct sockaddr_storage *ss)
{
    if (ss->ss_family != AF_INET6) return;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (!IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) return;
    struct sockaddr_in s4;
    memset(&s4, 0, sizeof s4);
    s4.sin_family = AF_INET;
    s4.sin_port = s6->sin6_port;
    memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
    memset(ss, 0, sizeof *ss);
    memcpy(ss, &s4, sizeof s4);
}

static int read_peer(weir_conn_t *c)
{
    int len = sizeof c->peer;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len) != 0) return -1;
    unmap_v4(&c->peer);
    if (c->peer.ss_family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&c->peer;
        uv_ip4_name(s4, c->peer_addr, sizeof c->peer_addr);
        c->peer_port = ntohs(s4->sin_port);
        snprintf(c->peer_text, sizeof c->peer_text, "%s:%d", c->peer_addr, c->peer_port);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&c->peer;
        uv_ip6_name(s6, c->peer_addr, sizeof c->peer_addr);
        c->peer_port = ntohs(s6->sin6_port);
        snprintf(c->peer_text, sizeof c->peer_text, "[%s]:%d", c->peer_addr, c->peer_port);
    }
    return 0;
}

static void set_sockopts(weir_conn_t *c, const weir_listener_t *l)
{
    uv_tcp_nodelay(&c->tcp, 1);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) return;
    if (l->keepalive) {
        /* SO_KEEPALIVE alone keeps the OS's probe timers, as Fluentd's send_keepalive_packet */
        int on = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0)
            weir_debug("net: SO_KEEPALIVE on %s failed", c->peer_text);
    }
    if (l->linger_timeout >= 0) {
        struct linger lg = {.l_onoff = 1, .l_linger = l->linger_timeout};
        if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0)
            weir_debug("net: SO_LINGER on %s failed", c->peer_text);
    }
}

/* ---- reading --------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    buf->base = g_rbuf;
    buf->len = sizeof g_rbuf;
}

static void on_read_error(weir_conn_t *c, ssize_t nread)
{
    if (c->ssl && !c->ready) {
        net_tls_handshake_eof(c, nread == UV_EOF ? NULL : uv_strerror((int)nread));
        return;
    }
    if (nread == UV_EOF) {
        net_conn_peer_eof(c);
        return;
    }
    weir_conn_abort(c, uv_strerror((int)nread));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    weir_conn_t *c = s->data;
    if (c->handles_closed) return;
    if (c->draining) {
        if (nread < 0) close_handles(c); /* the peer's FIN (or an error): done */
        return;
    }
    if (c->closing || nread == 0) return;
    if (nread < 0) {
        on_read_error(c, nread);
        return;
    }
    c->received += (uint64_t)nread;
    if (c->ssl)
        net_tls_input(c, buf->base, (size_t)nread);
    else
        net_conn_deliver(c, buf->base, (size_t)nread);
}

void net_conn_start_reading(weir_conn_t *c)
{
    if (c->reading || c->closing || c->eof || !c->started) return;
    int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r != 0) {
        weir_conn_abort(c, uv_strerror(r));
        return;
    }
    c->reading = true;
}

void net_conn_stop_reading(weir_conn_t *c)
{
    if (!c->reading) return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

void net_conn_deliver(weir_conn_t *c, const char *data, size_t len)
{
    if (c->closing || len == 0) return;
    if (c->cbs.on_data) c->cbs.on_data(c, data, len);
}

void net_conn_peer_eof(weir_conn_t *c)
{
    if (c->eof || c->closing) return;
    c->eof = true;
    net_conn_stop_reading(c);
    if (c->cbs.on_eof)
        c->cbs.on_eof(c);
    else
        weir_conn_close(c, NULL);
}

/* Runs one loop iteration after weir_conn_resume, so that held-back TLS plaintext reaches the
 * input outside of whatever call resumed it. */
static void on_drain(uv_idle_t *h)
{
    weir_conn_t *c = h->data;
    uv_idle_stop(h);
    if (c->closing || c->paused) return;
    net_tls_pump(c);
    if (!c->closing && !c->paused) net_conn_start_reading(c);
}

/* ---- writing --------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    net_write_t *w = req->data;
    weir_conn_t *c = w->c;
    c->wq_size -= w->accounted;
    free(w);
    if (status < 0 && status != UV_ECANCELED) weir_conn_abort(c, uv_strerror(status));
}

int net_conn_send(weir_conn_t *c, const char *data, size_t len, size_t accounted)
{
    if (c->shut || c->handles_closed) return -1;
    if (len == 0) return 0;
    net_write_t *w = weir_malloc(sizeof *w + len);
    w->c = c;
    w->accounted = accounted;
    w->req.data = w;
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (r != 0) {
        free(w);
        weir_conn_abort(c, uv_strerror(r));
        return -1;
    }
    c->wq_size += accounted;
    return 0;
}

int weir_conn_write(weir_conn_t *c, const void *data, size_t len)
{
    if (!c || c->closing) return -1;
    if (len == 0) return 0;
    if (c->ssl) return net_tls_write(c, data, len);
    return net_conn_send(c, data, len, len);
}

size_t weir_conn_write_queue_size(const weir_conn_t *c)
{
    return c->wq_size;
}

/* ---- start ----------------------------------------------------------------------------- */

static void on_handshake_timeout(uv_timer_t *t)
{
    net_tls_handshake_timeout(t->data);
}

bool net_conn_ready(weir_conn_t *c)
{
    c->ready = true;
    uv_timer_stop(&c->timer);
    net_conn_detach(c);
    if (c->early.len > 0) {
        weir_buf_t early = c->early;
        weir_buf_init(&c->early);
        c->wq_size -= early.len;
        net_tls_write(c, early.data, early.len);
        OPENSSL_cleanse(early.data, early.len);
        weir_buf_free(&early);
    }
    if (c->closing) return false;
    if (c->cbs.on_ready) c->cbs.on_ready(c);
    return !c->closing;
}

void net_conn_start(weir_conn_t *c, weir_listener_t *l)
{
    if (read_peer(c) != 0) {
        /* reset before we looked: the input never hears of it */
        net_conn_discard(c);
        return;
    }
    set_sockopts(c, l);
    if (l->tls) {
        if (net_tls_session_new(c, l->tls) != 0) {
            weir_warn("tls: no TLS session for %s: out of memory", c->peer_text);
            net_conn_discard(c);
            return;
        }
        c->hs_timeout_ms = l->hs_timeout_ms;
        c->listener = l;
        c->lnext = l->handshaking;
        if (l->handshaking) l->handshaking->lprev = c;
        l->handshaking = c;
    }
    c->owned = true;
    c->started = true;
    l->on_accept(l, c);
    if (c->closing) return;
    if (c->ssl) {
        uv_timer_start(&c->timer, on_handshake_timeout, c->hs_timeout_ms, 0);
        /* the handshake needs reads even if the input already paused */
        int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (r != 0)
            weir_conn_abort(c, uv_strerror(r));
        else
            c->reading = true;
        return;
    }
    if (!net_conn_ready(c)) return;
    if (!c->paused) net_conn_start_reading(c);
}

/* ---- public accessors ------------------------------------------------------------------ */

const char *weir_conn_peer_addr(const weir_conn_t *c)
{
    return c->peer_addr;
}

int weir_conn_peer_port(const weir_conn_t *c)
{
    return c->peer_port;
}

const struct sockaddr_storage *weir_conn_peer_sockaddr(const weir_conn_t *c)
{
    return &c->peer;
}

void weir_conn_set_data(weir_conn_t *c, void *data)
{
    c->data = data;
}

void *weir_conn_get_data(const weir_conn_t *c)
{
    return c->data;
}

void weir_conn_setup(weir_conn_t *c, const weir_conn_cbs_t *cbs, void *data)
{
    if (cbs) c->cbs = *cbs;
    c->data = data;
}

/* ---- backpressure ---------------------------------------------------------------------- */

void weir_conn_pause(weir_conn_t *c)
{
    if (!c || c->closing || c->paused) return;
    c->paused = true;
    uv_idle_stop(&c->drain);
    /* a TLS handshake still needs its reads; tls.c stops reading once it is done */
    if (!c->ssl || c->ready) net_conn_stop_reading(c);
}

void weir_conn_resume(weir_conn_t *c)
{
    if (!c || c->closing || !c->paused) return;
    c->paused = false;
    if (!c->started || (c->ssl && !c->ready)) return;
    if (c->ssl && net_tls_has_pending(c)) {
        uv_idle_start(&c->drain, on_drain);
        return;
    }
    net_conn_start_reading(c);
}

bool weir_conn_paused(const weir_conn_t *c)
{
    return c->paused;
}

/* ---- close ----------------------------------------------------------------------------- */

static void on_close_timeout(uv_timer_t *t)
{
    weir_conn_t *c = t->data;
    if (c->draining) {
        close_handles(c); /* the peer never sent its FIN; our data is out, nothing is lost */
        return;
    }
    weir_debug("net: closing %s: pending writes not flushed within %u ms", c->peer_text,
               net_close_timeout_ms);
    net_conn_set_reason(c, "timed out flushing writes while closing (peer not reading)");
    close_handles(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    weir_conn_t *c = req->data;
    if (c->handles_closed) return;
    if (status < 0 || c->eof) {
        close_handles(c);
        return;
    }
    c->draining = true;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        close_handles(c);
        return;
    }
    c->reading = true;
    uv_timer_start(&c->timer, on_close_timeout, net_drain_timeout_ms, 0);
}

void weir_conn_close(weir_conn_t *c, const char *reason)
{
    if (!c || c->closing) return;
    c->closing = true;
    net_conn_set_reason(c, reason);
    net_conn_stop_reading(c);
    uv_idle_stop(&c->drain);
    uv_timer_stop(&c->timer);
    if (!c->started) {
        close_handles(c);
        return;
    }
    /* No close_notify before the handshake finished: a failed one already queued its alert. */
    if (c->ssl && c->ready) net_tls_shutdown(c);
    uv_timer_start(&c->timer, on_close_timeout, net_close_timeout_ms, 0);
    /* libuv runs the shutdown after every write queued so far */
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        close_handles(c);
        return;
    }
    c->shut = true;
}

void weir_conn_abort(weir_conn_t *c, const char *reason)
{
    if (!c || c->handles_closed) return;
    net_conn_set_reason(c, reason);
    close_handles(c);
}
