/* <source> @type forward: the forward protocol on a TCP (or TLS) port plus the UDP heartbeat
 * on the same port number.
 *
 * Each connection keeps one linear buffer that always starts at the first byte of the frame
 * being read, so the resumable scanner (scanner.c) never looks at a byte twice and memory per
 * connection is bounded by the frame limit. A complete frame is decoded whole (decode.c) and
 * handed to the router; while the output makes it durable the connection stops reading
 * (backpressure), and the ack is written only when the output reports the batch durable.
 * Invariant: at most one frame per connection is in flight, so acks go out in request order,
 * one write each.
 *
 * Metrics are counted per frame (events and wire bytes per tag once the router took the
 * batch, acks written) and per connection, never per event. Warnings about a sender's bad
 * input share one rate limit, so a flood of bad connections costs a line per interval. */
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "weir/forward.h"
#include "weir/log.h"
#include "weir/net.h"
#include "weir/plugin.h"

#define FWD_COMPACT_MIN (64 * 1024) /* move the unread tail to the front past this offset */

typedef struct fwd_input fwd_input_t;

typedef enum conn_proto { PROTO_UNKNOWN, PROTO_MSGPACK, PROTO_JSON } conn_proto_t;
typedef enum conn_state { ST_WAIT_READY, ST_RESOLVING, ST_PINGPONG, ST_ESTABLISHED } conn_state_t;

typedef struct fwd_conn {
    fwd_input_t *in;
    weir_conn_t *c;
    struct fwd_conn *prev, *next;
    weir_buf_t rbuf; /* rbuf.data[rpos..len) is unread; rpos is the current frame's start */
    size_t rpos;
    fwd_scanner_t sc;
    conn_proto_t proto;
    conn_state_t state;
    uint8_t nonce[FWD_NONCE_LEN];
    uint8_t auth[FWD_NONCE_LEN];
    weir_buf_t jframe;  /* a JSON request converted to msgpack */
    fwd_json_scan_t js; /* where the scan of a JSON request stopped */
    weir_batch_t batch; /* the frame in flight */
    fwd_frame_info_t info;
    size_t frame_len;        /* bytes of rbuf (or jframe consumed) the in-flight frame occupies */
    uint64_t frame_start_ns; /* when the in-flight frame was complete (uv_hrtime) */
    bool in_flight;          /* waiting for the output's durable callback */
    bool waiting_space;      /* the output was full: retry the emit when space frees up */
    bool eof;
    bool closing;
    bool dead;      /* the connection is gone but a callback (emit, getnameinfo) still holds fc */
    char *hostname; /* source_hostname_key value */
    uv_getnameinfo_t gni;
    weir_space_waiter_t waiter;
} fwd_conn_t;

struct fwd_input {
    weir_engine_t *eng;
    char *bind;
    int port;
    int backlog;
    int linger;
    bool keepalive_packet;
    bool deny_keepalive;
    bool skip_invalid_event;
    uint64_t chunk_size_warn_limit;
    uint64_t frame_limit;
    uint64_t decompress_limit;
    char *tag;
    char *tag_prefix;
    char *label;
    char *source_address_key;
    char *source_hostname_key;
    bool resolve_hostname;
    weir_tls_opts_t tls;
    fwd_security_t security;
    weir_listener_t *listener;
    uv_udp_t *udp;
    fwd_conn_t *conns;
    size_t nconns;
    bool stopping;
    void (*stop_done)(void *);
    void *stop_arg;
    weir_ratelimit_t warn_rl;
    weir_plugin_metrics_t *pm;
};

static void conn_process(fwd_conn_t *fc);

/* ---- configuration ------------------------------------------------------------------ */

static int get_owned_str(weir_conf_section_t *s, const char *key, char **out, weir_err_t *err)
{
    const char *v = NULL;
    int r = weir_conf_get_str(s, key, &v, err);
    if (r == 1) {
        if (!*v) {
            weir_conf_errorf(err, weir_conf_find(s, key), "%s must not be empty", key);
            return -1;
        }
        *out = weir_strdup(v);
    }
    return r;
}

static int fwd_read_conf(fwd_input_t *in, weir_conf_section_t *sec, weir_err_t *err)
{
    int64_t port = 24224, backlog = 0;
    const char *bind = "0.0.0.0", *label = NULL;
    double linger = -1;
    in->skip_invalid_event = true;
    in->frame_limit = FWD_FRAME_LIMIT_DEFAULT;
    in->decompress_limit = FWD_DECOMPRESS_LIMIT_DEFAULT;
    uint64_t chunk_limit = 0;
    bool have_resolve = false;
    if (weir_conf_get_int(sec, "port", &port, err) < 0 ||
        weir_conf_get_str(sec, "bind", &bind, err) < 0 ||
        weir_conf_get_int(sec, "backlog", &backlog, err) < 0 ||
        weir_conf_get_time(sec, "linger_timeout", &linger, err) < 0 ||
        weir_conf_get_size(sec, "chunk_size_warn_limit", &in->chunk_size_warn_limit, err) < 0 ||
        weir_conf_get_size(sec, "decompression_size_limit", &in->decompress_limit, err) < 0 ||
        weir_conf_get_bool(sec, "skip_invalid_event", &in->skip_invalid_event, err) < 0 ||
        weir_conf_get_bool(sec, "deny_keepalive", &in->deny_keepalive, err) < 0 ||
        weir_conf_get_bool(sec, "send_keepalive_packet", &in->keepalive_packet, err) < 0 ||
        get_owned_str(sec, "tag", &in->tag, err) < 0 ||
        get_owned_str(sec, "add_tag_prefix", &in->tag_prefix, err) < 0 ||
        get_owned_str(sec, "source_address_key", &in->source_address_key, err) < 0 ||
        get_owned_str(sec, "source_hostname_key", &in->source_hostname_key, err) < 0 ||
        weir_conf_get_str(sec, "@label", &label, err) < 0)
        return -1;
    int r = weir_conf_get_size(sec, "chunk_size_limit", &chunk_limit, err);
    if (r < 0) return -1;
    if (r == 1) in->frame_limit = chunk_limit;
    r = weir_conf_get_bool(sec, "resolve_hostname", &in->resolve_hostname, err);
    if (r < 0) return -1;
    have_resolve = r == 1;
    if (port < 0 || port > 65535) {
        weir_conf_errorf(err, weir_conf_find(sec, "port"), "port must be 0..65535");
        return -1;
    }
    if (in->source_hostname_key) {
        if (have_resolve && !in->resolve_hostname) {
            weir_conf_errorf(err, weir_conf_find(sec, "resolve_hostname"),
                             "resolve_hostname false cannot be used with source_hostname_key");
            return -1;
        }
        in->resolve_hostname = true;
    }
    if (in->deny_keepalive && in->keepalive_packet) {
        weir_conf_errorf(err, weir_conf_find(sec, "send_keepalive_packet"),
                         "send_keepalive_packet cannot be used with deny_keepalive");
        return -1;
    }
    if (in->frame_limit < 16) {
        weir_conf_errorf(err, weir_conf_find(sec, "chunk_size_limit"),
                         "chunk_size_limit is too small");
        return -1;
    }
    weir_conf_section_t *tr = weir_conf_child(sec, "transport", 0);
    if (tr) {
        weir_conf_section_use(tr);
        if (weir_tls_opts_from_conf(&in->tls, tr, err) != 0) return -1;
        if (weir_conf_get_time(tr, "linger_timeout", &linger, err) < 0) return -1;
    }
    weir_conf_section_t *secsec = weir_conf_child(sec, "security", 0);
    if (secsec) weir_conf_section_use(secsec);
    if (fwd_security_from_conf(&in->security, secsec, err) != 0) return -1;
    in->port = (int)port;
    in->backlog = (int)backlog;
    in->linger = linger < 0 ? -1 : (int)linger;
    in->bind = weir_strdup(bind);
    in->label = label ? weir_strdup(label) : NULL;
    return 0;
}

/* ---- connections -------------------------------------------------------------------- */

static void conn_close(fwd_conn_t *fc, const char *why)
{
    if (fc->closing) return;
    fc->closing = true;
    weir_conn_close(fc->c, why);
}

static void conn_fail(fwd_conn_t *fc, const char *what)
{
    unsigned long skipped = 0;
    if (weir_ratelimit_ok(&fc->in->warn_rl, &skipped))
        weir_warn("forward: closing connection from %s:%d: %s (%lu similar warnings suppressed)",
                  weir_conn_peer_addr(fc->c), weir_conn_peer_port(fc->c), what, skipped);
    conn_close(fc, what);
}

static void send_ack(fwd_conn_t *fc)
{
    if (!fc->info.chunk) return;
    weir_buf_t ack;
    weir_buf_init(&ack);
    fwd_ack_build(fc->info.chunk, fc->info.chunk_len, fc->proto == PROTO_JSON, &ack);
    if (weir_conn_write(fc->c, ack.data, ack.len) == 0) weir_metrics_input_acks(fc->in->pm, 1);
    weir_buf_free(&ack);
}

/* The in-flight frame is done (acked or dropped): consume its bytes. */
static void frame_consumed(fwd_conn_t *fc)
{
    if (fc->proto == PROTO_JSON) fc->jframe.len = 0;
    fc->rpos += fc->frame_len;
    fc->frame_len = 0;
    fc->info.chunk = NULL;
    if (fc->rpos == fc->rbuf.len) {
        fc->rpos = fc->rbuf.len = 0;
    } else if (fc->rpos >= FWD_COMPACT_MIN && fc->rpos * 2 >= fc->rbuf.len) {
        memmove(fc->rbuf.data, fc->rbuf.data + fc->rpos, fc->rbuf.len - fc->rpos);
        fc->rbuf.len -= fc->rpos;
        fc->rpos = 0;
    }
}

/* A data frame is finished: with deny_keepalive the connection ends after each one (after its
 * ack, which weir_conn_close still flushes). */
static void data_frame_done(fwd_conn_t *fc)
{
    weir_metrics_input_ack_latency(fc->in->pm, uv_hrtime() - fc->frame_start_ns);
    frame_consumed(fc);
    if (fc->in->deny_keepalive) conn_close(fc, NULL);
}

static void emit_done(void *arg, int status)
{
    fwd_conn_t *fc = arg;
    fc->in_flight = false;
    if (fc->dead) {
        free(fc);
        return;
    }
    if (fc->closing) return;
    if (status != 0) {
        conn_fail(fc, "the output could not store the events; no ack sent");
        return;
    }
    send_ack(fc);
    data_frame_done(fc);
    if (!fc->closing) {
        weir_conn_resume(fc->c);
        conn_process(fc);
    }
}

static void space_ready(void *arg);

/* Hands the decoded batch to the router. Returns true when the connection may go on with the
 * next frame now. */
static bool conn_emit(fwd_conn_t *fc)
{
    if (fc->batch.count == 0) {
        send_ack(fc);
        data_frame_done(fc);
        return !fc->closing;
    }
    weir_emit_result_t r = weir_engine_emit(fc->in->eng, fc->in->label, &fc->batch, emit_done, fc);
    if (r == WEIR_EMIT_DONE || r == WEIR_EMIT_PENDING)
        weir_metrics_input_events(fc->in->pm, fc->batch.tag, fc->batch.count, fc->frame_len);
    switch (r) {
    case WEIR_EMIT_DONE:
        send_ack(fc);
        data_frame_done(fc);
        return !fc->closing;
    case WEIR_EMIT_PENDING:
        fc->in_flight = true;
        weir_conn_pause(fc->c);
        return false;
    case WEIR_EMIT_FULL:
        fc->waiting_space = true;
        weir_conn_pause(fc->c);
        fc->waiter.fn = space_ready;
        fc->waiter.arg = fc;
        weir_engine_on_space(fc->in->eng, &fc->waiter);
        return false;
    case WEIR_EMIT_ERROR:
    default:
        conn_fail(fc, "the output rejected the events; no ack sent");
        return false;
    }
}

static void space_ready(void *arg)
{
    fwd_conn_t *fc = arg;
    fc->waiting_space = false;
    if (fc->closing) return;
    if (conn_emit(fc)) {
        weir_conn_resume(fc->c);
        conn_process(fc);
    }
}

static void apply_tag(fwd_conn_t *fc)
{
    fwd_input_t *in = fc->in;
    if (!in->tag && !in->tag_prefix) return;
    const char *base = in->tag ? in->tag : fc->batch.tag;
    if (!in->tag_prefix) {
        weir_batch_set_tag(&fc->batch, base, strlen(base));
        return;
    }
    weir_buf_t t;
    weir_buf_init(&t);
    weir_buf_printf(&t, "%s.%s", in->tag_prefix, base);
    weir_batch_set_tag(&fc->batch, t.data, t.len);
    weir_buf_free(&t);
}

/* Decodes one complete frame and emits it; `consume` is how many bytes of rbuf it came from
 * (for JSON the frame itself is the converted copy in jframe). Returns true to go on with the
 * next frame. */
static bool conn_frame(fwd_conn_t *fc, const char *frame, size_t len, size_t consume)
{
    fwd_input_t *in = fc->in;
    fc->frame_len = consume;
    fc->frame_start_ns = uv_hrtime();
    if (fc->state == ST_PINGPONG) {
        weir_buf_t pong;
        weir_buf_init(&pong);
        const char *reason = NULL;
        bool ok = fwd_ping_check(&in->security, frame, len, fc->nonce, fc->auth,
                                 (const struct sockaddr *)weir_conn_peer_sockaddr(fc->c),
                                 weir_conn_peer_addr(fc->c), &pong, &reason);
        weir_conn_write(fc->c, pong.data, pong.len);
        weir_buf_free(&pong);
        frame_consumed(fc);
        if (!ok) {
            unsigned long skipped = 0;
            if (weir_ratelimit_ok(&in->warn_rl, &skipped))
                weir_warn("forward: handshake with %s failed: %s (%lu similar warnings suppressed)",
                          weir_conn_peer_addr(fc->c), reason ? reason : "invalid ping", skipped);
            conn_close(fc, reason);
            return false;
        }
        fc->state = ST_ESTABLISHED;
        return !fc->closing;
    }
    fwd_decode_opts_t o;
    fwd_decode_opts_init(&o);
    o.skip_invalid_event = in->skip_invalid_event;
    o.max_decompressed = in->decompress_limit;
    o.now = weir_time_now();
    const char *keys[2], *vals[2];
    size_t n = 0;
    if (in->source_address_key) {
        keys[n] = in->source_address_key;
        vals[n++] = weir_conn_peer_addr(fc->c);
    }
    if (in->source_hostname_key) {
        keys[n] = in->source_hostname_key;
        vals[n++] = fc->hostname ? fc->hostname : weir_conn_peer_addr(fc->c);
    }
    o.extra_keys = keys;
    o.extra_values = vals;
    o.n_extra = n;
    weir_err_t err;
    if (fwd_decode_frame(frame, len, &o, &fc->batch, &fc->info, &err) != 0) {
        conn_fail(fc, err.msg);
        return false;
    }
    if (fc->info.mode == FWD_MODE_HEARTBEAT) {
        fc->info.chunk = NULL;
        frame_consumed(fc);
        return !fc->closing;
    }
    unsigned long skipped = 0;
    if (in->chunk_size_warn_limit && len > in->chunk_size_warn_limit &&
        weir_ratelimit_ok(&in->warn_rl, &skipped))
        weir_warn("forward: chunk of %zu bytes from %s is over chunk_size_warn_limit (%llu; %lu "
                  "similar warnings suppressed)",
                  len, weir_conn_peer_addr(fc->c), (unsigned long long)in->chunk_size_warn_limit,
                  skipped);
    apply_tag(fc);
    return conn_emit(fc);
}

/* Runs every complete frame in the buffer, until one is in flight or the bytes run out. */
static void conn_process(fwd_conn_t *fc)
{
    while (!fc->closing && !fc->in_flight && !fc->waiting_space && fc->state >= ST_PINGPONG) {
        size_t avail = fc->rbuf.len - fc->rpos;
        if (avail == 0) break; /* also keeps NULL + 0 (an empty buffer) out of reach */
        const char *p = fc->rbuf.data + fc->rpos;
        if (fc->proto == PROTO_UNKNOWN) {
            /* Fluentd decides once per connection from the first byte: JSON or msgpack. The
             * handshake is msgpack only. */
            fc->proto = (!fc->in->security.enabled && (p[0] == '{' || p[0] == '[')) ? PROTO_JSON
                                                                                    : PROTO_MSGPACK;
        }
        if (fc->proto == PROTO_JSON) {
            size_t consumed = 0;
            weir_err_t err;
            fc->jframe.len = 0;
            int r =
                fwd_json_next(&fc->js, p, avail, fc->in->frame_limit, &consumed, &fc->jframe, &err);
            if (r < 0) {
                conn_fail(fc, err.msg);
                return;
            }
            if (r == 0) {
                if (avail > fc->in->frame_limit) conn_fail(fc, "JSON request over the frame limit");
                break;
            }
            if (!conn_frame(fc, fc->jframe.data, fc->jframe.len, consumed)) return;
            continue;
        }
        size_t flen = 0;
        const char *why = NULL;
        fwd_scan_result_t r = fwd_scanner_scan(&fc->sc, p, avail, &flen, &why);
        if (r == FWD_SCAN_ERROR) {
            conn_fail(fc, why);
            return;
        }
        if (r == FWD_SCAN_NEED_MORE) break;
        if (!conn_frame(fc, p, flen, flen)) return;
    }
    if (fc->eof && !fc->in_flight && !fc->waiting_space && !fc->closing) {
        if (fc->rbuf.len > fc->rpos)
            weir_debug("forward: %s closed with %zu bytes of an incomplete frame",
                       weir_conn_peer_addr(fc->c), fc->rbuf.len - fc->rpos);
        conn_close(fc, NULL);
    }
    if (fc->in->stopping && !fc->in_flight && !fc->waiting_space) conn_close(fc, NULL);
}

static void on_data(weir_conn_t *c, const char *data, size_t len)
{
    fwd_conn_t *fc = weir_conn_get_data(c);
    if (fc->closing) return;
    weir_buf_append(&fc->rbuf, data, len);
    conn_process(fc);
}

static void on_eof(weir_conn_t *c)
{
    fwd_conn_t *fc = weir_conn_get_data(c);
    fc->eof = true;
    conn_process(fc);
}

static void start_session(fwd_conn_t *fc)
{
    fwd_input_t *in = fc->in;
    if (in->security.enabled) {
        if (RAND_bytes(fc->nonce, sizeof fc->nonce) != 1 ||
            RAND_bytes(fc->auth, sizeof fc->auth) != 1) {
            conn_fail(fc, "no random bytes for the handshake nonce");
            return;
        }
        weir_buf_t helo;
        weir_buf_init(&helo);
        fwd_helo_build(fc->nonce, fc->auth, !in->deny_keepalive, &helo);
        weir_conn_write(fc->c, helo.data, helo.len);
        weir_buf_free(&helo);
        fc->state = ST_PINGPONG;
    } else {
        fc->state = ST_ESTABLISHED;
    }
    conn_process(fc);
}

static void on_resolved(uv_getnameinfo_t *req, int status, const char *host, const char *service)
{
    fwd_conn_t *fc = req->data;
    if (fc->dead) {
        free(fc);
        return;
    }
    fc->hostname = weir_strdup(status == 0 && host ? host : "name resolution failed");
    if (fc->closing) return;
    start_session(fc);
}

static void on_ready(weir_conn_t *c)
{
    fwd_conn_t *fc = weir_conn_get_data(c);
    if (fc->in->resolve_hostname) {
        fc->state = ST_RESOLVING;
        fc->gni.data = fc;
        if (uv_getnameinfo(weir_engine_loop(fc->in->eng), &fc->gni, on_resolved,
                           (const struct sockaddr *)weir_conn_peer_sockaddr(c), 0) == 0)
            return;
        fc->hostname = weir_strdup("name resolution failed");
    }
    start_session(fc);
}

static void stop_check(fwd_input_t *in);

static void on_close(weir_conn_t *c, const char *reason)
{
    fwd_conn_t *fc = weir_conn_get_data(c);
    fwd_input_t *in = fc->in;
    if (fc->waiting_space) weir_engine_cancel_space(in->eng, &fc->waiter);
    if (fc->prev)
        fc->prev->next = fc->next;
    else
        in->conns = fc->next;
    if (fc->next) fc->next->prev = fc->prev;
    in->nconns--;
    weir_metrics_input_connection(in->pm, -1);
    weir_buf_free(&fc->rbuf);
    weir_buf_free(&fc->jframe);
    weir_batch_free(&fc->batch);
    free(fc->hostname);
    fc->hostname = NULL;
    fc->closing = true;
    if (fc->state == ST_RESOLVING || fc->in_flight) {
        /* a getnameinfo request or the output still holds fc: its callback frees it */
        fc->dead = true;
    } else {
        free(fc);
    }
    stop_check(in);
}

static const weir_conn_cbs_t conn_cbs = {
    .on_data = on_data,
    .on_eof = on_eof,
    .on_ready = on_ready,
    .on_close = on_close,
};

static void on_accept(weir_listener_t *l, weir_conn_t *c)
{
    fwd_input_t *in = weir_listener_data(l);
    fwd_conn_t *fc = weir_calloc(1, sizeof *fc);
    fc->in = in;
    fc->c = c;
    fwd_scanner_init(&fc->sc, in->frame_limit, FWD_MAX_DEPTH);
    weir_batch_init(&fc->batch, "", 0);
    fc->next = in->conns;
    if (in->conns) in->conns->prev = fc;
    in->conns = fc;
    in->nconns++;
    weir_metrics_input_connection(in->pm, 1);
    weir_conn_setup(c, &conn_cbs, fc);
}

static void on_tls_fail(weir_listener_t *l, const char *peer, const char *reason)
{
    fwd_input_t *in = weir_listener_data(l);
    weir_metrics_input_tls_failure(in->pm);
}

/* ---- UDP heartbeat -------------------------------------------------------------------- */

static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[128]; /* Fluentd reads at most 128 bytes; the content is ignored */
    buf->base = scratch;
    buf->len = sizeof scratch;
}

static void udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                     unsigned flags)
{
    if (nread < 0 || !addr) return;
    /* Answer every datagram, even an empty one, with one zero byte from the bound socket: the
     * reply is never larger than the request, so it cannot amplify. */
    uv_buf_t reply = uv_buf_init("\0", 1);
    uv_udp_try_send(h, &reply, 1, addr);
}

/* ---- plugin ----------------------------------------------------------------------------- */

static void fwd_destroy(void *state);

static int fwd_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    fwd_input_t *in = weir_calloc(1, sizeof *in);
    in->eng = eng;
    in->warn_rl.interval_ms = 5000;
    in->pm = weir_engine_plugin_metrics(eng);
    weir_metrics_input_network(in->pm, true);
    weir_metrics_input_timed(in->pm);
    if (fwd_read_conf(in, sec, err) != 0) {
        weir_err_prefix(err, "<source @type forward>");
        fwd_destroy(in);
        return -1;
    }
    *state = in;
    return 0;
}

static int fwd_start(void *state, weir_err_t *err)
{
    fwd_input_t *in = state;
    weir_listener_opts_t lo = {
        .bind = in->bind,
        .port = in->port,
        .backlog = in->backlog,
        .tls = &in->tls,
        .linger_timeout = in->linger,
        .keepalive = in->keepalive_packet,
        .on_accept = on_accept,
        .on_tls_fail = on_tls_fail,
        .data = in,
    };
    uv_loop_t *loop = weir_engine_loop(in->eng);
    in->listener = weir_listener_new(loop, &lo, err);
    if (!in->listener) {
        weir_err_prefix(err, "forward input on %s:%d", in->bind, in->port);
        return -1;
    }
    int port = weir_listener_port(in->listener);
    struct sockaddr_storage ss;
    if (weir_net_resolve_bind(in->bind, port, &ss, err) != 0) return -1;
    in->udp = weir_calloc(1, sizeof *in->udp);
    uv_udp_init(loop, in->udp);
    in->udp->data = in;
    int rc = uv_udp_bind(in->udp, (const struct sockaddr *)&ss, UV_UDP_REUSEADDR);
    if (rc == 0) rc = uv_udp_recv_start(in->udp, udp_alloc, udp_recv);
    if (rc != 0) {
        weir_err_set(err, "forward input: cannot bind UDP heartbeat on %s:%d: %s", in->bind, port,
                     uv_strerror(rc));
        return -1;
    }
    weir_info("listening on %s:%d (forward%s, UDP heartbeat on the same port)", in->bind, port,
              in->tls.enabled ? " over TLS" : "");
    return 0;
}

static void stop_check(fwd_input_t *in)
{
    if (!in->stopping || in->nconns > 0 || !in->stop_done) return;
    void (*done)(void *) = in->stop_done;
    in->stop_done = NULL;
    done(in->stop_arg);
}

static void fwd_stop(void *state, void (*done)(void *), void *arg)
{
    fwd_input_t *in = state;
    in->stopping = true;
    in->stop_done = done;
    in->stop_arg = arg;
    if (in->listener) weir_listener_close(in->listener);
    in->listener = NULL;
    if (in->udp) uv_close((uv_handle_t *)in->udp, (uv_close_cb)free);
    in->udp = NULL;
    /* idle connections close now; one with a frame in flight closes after its ack */
    for (fwd_conn_t *fc = in->conns, *next; fc; fc = next) {
        next = fc->next;
        if (!fc->in_flight && !fc->waiting_space) conn_close(fc, NULL);
    }
    stop_check(in);
}

static void fwd_destroy(void *state)
{
    fwd_input_t *in = state;
    if (!in) return;
    if (in->listener) weir_listener_close(in->listener);
    if (in->udp) uv_close((uv_handle_t *)in->udp, (uv_close_cb)free);
    free(in->bind);
    free(in->tag);
    free(in->tag_prefix);
    free(in->label);
    free(in->source_address_key);
    free(in->source_hostname_key);
    weir_tls_opts_free(&in->tls);
    fwd_security_free(&in->security);
    free(in);
}

const weir_input_ops_t weir_in_forward_ops = {
    .type = "forward",
    .create = fwd_create,
    .start = fwd_start,
    .stop = fwd_stop,
    .destroy = fwd_destroy,
};
