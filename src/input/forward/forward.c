/* <source> @type forward: the forward protocol on a TCP (or TLS) port plus the UDP heartbeat
 * on the same port number.
 *
 * The connections belong to the ingest layer (src/net/ingest.c): it keeps each one's buffer
 * starting at the first byte of the frame being read, so the resumable scanner (scanner.c)
 * never looks at a byte twice; it emits one frame per connection at a time with reading
 * paused, and calls fwd_answer when the output reports the batch durable, so acks go out in
 * request order, one write each. This file is the framing (scanner, JSON, the <security>
 * PING) and the answer (the ack). A compressed payload is inflated a step per loop turn
 * (WEIR_INGEST_AGAIN): the frame is called again with the same bytes, and goes straight back
 * to the decoder with the length it had, without scanning again.
 *
 * Metrics are counted per frame (acks written here; events, bytes and latency by the layer)
 * and per connection, never per event. Warnings about a sender's bad input share one rate
 * limit, so a flood of bad connections costs a line per interval. */
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "weir/forward.h"
#include "weir/ingest.h"
#include "weir/log.h"
#include "weir/net.h"
#include "weir/plugin.h"

typedef struct fwd_input fwd_input_t;

typedef enum conn_proto { PROTO_UNKNOWN, PROTO_MSGPACK, PROTO_JSON } conn_proto_t;

/* The input's part of a connection (weir_ingest_conn_data); the ingest layer owns the rest. */
typedef struct fwd_conn {
    fwd_input_t *in; /* NULL until .open */
    fwd_scanner_t sc;
    conn_proto_t proto;
    bool pingpong; /* <security>: the HELO went out, the PING has not come */
    uint8_t nonce[FWD_NONCE_LEN];
    uint8_t auth[FWD_NONCE_LEN];
    weir_buf_t jframe;  /* a JSON request converted to msgpack */
    fwd_json_scan_t js; /* where the scan of a JSON request stopped */
    weir_batch_t batch; /* the frame in flight */
    fwd_frame_info_t info;
    /* a CompressedPackedForward frame being inflated in steps (WEIR_INGEST_AGAIN): its
     * length, and the bytes of the connection's buffer it came from (0: none) */
    weir_inflation_t inflation;
    size_t again_len, again_consume;
    char why[WEIR_ERR_MAX]; /* the last decode error, for the log line */
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
    weir_ingest_opts_t limits; /* max_connections, the timeouts, the memory budget */
    weir_ingest_t *ing;
    uv_udp_t *udp;
    weir_ratelimit_t warn_rl;
    weir_plugin_metrics_t *pm;
};

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
    if (weir_ingest_conf_read(&in->limits, sec, err) != 0) return -1;
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
    if (weir_ingest_conf_unit_limit(&in->limits, sec, in->frame_limit, "chunk_size_limit", err) !=
        0)
        return -1;
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

/* ---- framing and answers (the connection itself is the ingest layer's) ------------------- */

/* Copies a decoder's message where the layer can still read it after the call. */
static weir_ingest_res_t frame_error(fwd_conn_t *fc, weir_ingest_frame_t *f, const char *why)
{
    snprintf(fc->why, sizeof fc->why, "%s", why);
    f->why = fc->why;
    return WEIR_INGEST_ERROR;
}

static void send_ack(weir_ingest_conn_t *ic, fwd_conn_t *fc)
{
    if (!fc->info.chunk) return;
    weir_buf_t ack;
    weir_buf_init(&ack);
    fwd_ack_build(fc->info.chunk, fc->info.chunk_len, fc->proto == PROTO_JSON, &ack);
    weir_ingest_conn_write(ic, ack.data, ack.len);
    if (!weir_ingest_conn_closing(ic)) weir_metrics_input_acks(fc->in->pm, 1);
    weir_buf_free(&ack);
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

/* The PING of a <security> handshake: the PONG goes out either way, then the connection is
 * authenticated or closed. */
static weir_ingest_res_t ping_frame(weir_ingest_conn_t *ic, fwd_conn_t *fc, const char *frame,
                                    size_t len)
{
    fwd_input_t *in = fc->in;
    weir_conn_t *c = weir_ingest_conn_net(ic);
    weir_buf_t pong;
    weir_buf_init(&pong);
    const char *reason = NULL;
    bool ok = fwd_ping_check(&in->security, frame, len, fc->nonce, fc->auth,
                             (const struct sockaddr *)weir_conn_peer_sockaddr(c),
                             weir_conn_peer_addr(c), &pong, &reason);
    weir_ingest_conn_write(ic, pong.data, pong.len);
    weir_buf_free(&pong);
    if (!ok) {
        unsigned long skipped = 0;
        if (weir_ratelimit_ok(&in->warn_rl, &skipped))
            weir_warn("forward: handshake with %s failed: %s (%lu similar warnings suppressed)",
                      weir_conn_peer_addr(c), reason ? reason : "invalid ping", skipped);
        return WEIR_INGEST_CLOSE;
    }
    fc->pingpong = false;
    weir_ingest_conn_authenticated(ic);
    return WEIR_INGEST_NEXT;
}

/* One complete frame (for JSON the converted copy in jframe); `consume` is how many bytes of
 * the connection's buffer it came from. */
static weir_ingest_res_t data_frame(weir_ingest_conn_t *ic, fwd_conn_t *fc, const char *frame,
                                    size_t len, size_t consume, weir_ingest_frame_t *f)
{
    fwd_input_t *in = fc->in;
    f->consumed = consume;
    if (fc->pingpong) return ping_frame(ic, fc, frame, len);
    fwd_decode_opts_t o;
    fwd_decode_opts_init(&o);
    o.skip_invalid_event = in->skip_invalid_event;
    o.max_decompressed = in->decompress_limit;
    o.now = weir_time_now();
    const char *keys[2], *vals[2];
    size_t n = 0;
    const char *addr = weir_ingest_conn_peer(ic);
    if (in->source_address_key) {
        keys[n] = in->source_address_key;
        vals[n++] = addr;
    }
    if (in->source_hostname_key) {
        const char *host = weir_ingest_conn_hostname(ic);
        keys[n] = in->source_hostname_key;
        vals[n++] = host ? host : addr;
    }
    o.extra_keys = keys;
    o.extra_values = vals;
    o.n_extra = n;
    o.inflation = &fc->inflation;
    weir_err_t err;
    int rc = fwd_decode_frame(frame, len, &o, &fc->batch, &fc->info, &err);
    if (rc == FWD_DECODE_AGAIN) {
        fc->again_len = len;
        fc->again_consume = consume;
        f->consumed = 0;
        return WEIR_INGEST_AGAIN;
    }
    fc->again_consume = 0;
    weir_inflation_reset(&fc->inflation);
    if (rc != 0) return frame_error(fc, f, err.msg);
    if (fc->info.mode == FWD_MODE_HEARTBEAT) {
        fc->info.chunk = NULL;
        return WEIR_INGEST_NEXT;
    }
    unsigned long skipped = 0;
    if (in->chunk_size_warn_limit && len > in->chunk_size_warn_limit &&
        weir_ratelimit_ok(&in->warn_rl, &skipped))
        weir_warn("forward: chunk of %zu bytes from %s is over chunk_size_warn_limit (%llu; %lu "
                  "similar warnings suppressed)",
                  len, addr, (unsigned long long)in->chunk_size_warn_limit, skipped);
    apply_tag(fc);
    f->batch = &fc->batch;
    f->wire_bytes = consume;
    return WEIR_INGEST_EMIT;
}

/* The framing: Fluentd decides once per connection from the first byte whether it speaks
 * JSON or msgpack (the handshake is msgpack only). The JSON path converts the request into
 * msgpack in jframe (json.c: the parsers' seam). */
static weir_ingest_res_t fwd_frame(weir_ingest_conn_t *ic, const char *p, size_t avail,
                                   weir_ingest_frame_t *f)
{
    fwd_conn_t *fc = weir_ingest_conn_data(ic);
    fwd_input_t *in = fc->in;
    if (fc->again_consume) /* the frame being inflated: its bytes are where they were */
        return data_frame(ic, fc, fc->proto == PROTO_JSON ? fc->jframe.data : p, fc->again_len,
                          fc->again_consume, f);
    if (fc->proto == PROTO_UNKNOWN)
        fc->proto =
            (!in->security.enabled && (p[0] == '{' || p[0] == '[')) ? PROTO_JSON : PROTO_MSGPACK;
    if (fc->proto == PROTO_JSON) {
        size_t consumed = 0;
        weir_err_t err;
        fc->jframe.len = 0;
        int r = fwd_json_next(&fc->js, p, avail, in->frame_limit, &consumed, &fc->jframe, &err);
        if (r < 0) return frame_error(fc, f, err.msg);
        if (r == 0) {
            if (avail > in->frame_limit)
                return frame_error(fc, f, "JSON request over the frame limit");
            return WEIR_INGEST_MORE;
        }
        return data_frame(ic, fc, fc->jframe.data, fc->jframe.len, consumed, f);
    }
    size_t flen = 0;
    const char *why = NULL;
    fwd_scan_result_t r = fwd_scanner_scan(&fc->sc, p, avail, &flen, &why);
    if (r == FWD_SCAN_ERROR) return frame_error(fc, f, why);
    if (r == FWD_SCAN_NEED_MORE) return WEIR_INGEST_MORE;
    return data_frame(ic, fc, p, flen, flen, f);
}

/* The frame is stored (ack it), or not (close without an ack: the sender resends). With
 * deny_keepalive the connection ends after each frame, after its ack. */
static void fwd_answer(weir_ingest_conn_t *ic, weir_ingest_status_t st)
{
    fwd_conn_t *fc = weir_ingest_conn_data(ic);
    if (fc->proto == PROTO_JSON) fc->jframe.len = 0;
    if (st == WEIR_INGEST_STORED) {
        send_ack(ic, fc);
        fc->info.chunk = NULL;
        if (fc->in->deny_keepalive) weir_ingest_conn_close(ic, NULL);
        return;
    }
    fc->info.chunk = NULL;
    weir_ingest_conn_fail(ic, st == WEIR_INGEST_FAILED
                                  ? "the output could not store the events; no ack sent"
                                  : "the output rejected the events; no ack sent");
}

static size_t fwd_held(weir_ingest_conn_t *ic)
{
    fwd_conn_t *fc = weir_ingest_conn_data(ic);
    return fc->jframe.len + fc->inflation.out.len;
}

/* Ready (TLS done, name resolved): with <security> the HELO goes first. */
static void fwd_open(weir_ingest_conn_t *ic)
{
    fwd_conn_t *fc = weir_ingest_conn_data(ic);
    fwd_input_t *in = weir_ingest_data(weir_ingest_conn_ingest(ic));
    fc->in = in;
    fwd_scanner_init(&fc->sc, in->frame_limit, FWD_MAX_DEPTH);
    weir_batch_init(&fc->batch, "", 0);
    weir_buf_init(&fc->jframe);
    if (!in->security.enabled) return;
    if (RAND_bytes(fc->nonce, sizeof fc->nonce) != 1 ||
        RAND_bytes(fc->auth, sizeof fc->auth) != 1) {
        weir_ingest_conn_fail(ic, "no random bytes for the handshake nonce");
        return;
    }
    weir_buf_t helo;
    weir_buf_init(&helo);
    fwd_helo_build(fc->nonce, fc->auth, !in->deny_keepalive, &helo);
    weir_ingest_conn_write(ic, helo.data, helo.len);
    weir_buf_free(&helo);
    fc->pingpong = true;
}

static void fwd_closed(weir_ingest_conn_t *ic)
{
    fwd_conn_t *fc = weir_ingest_conn_data(ic);
    if (!fc->in) return; /* closed before it was ready */
    weir_buf_free(&fc->jframe);
    weir_inflation_reset(&fc->inflation);
    weir_batch_free(&fc->batch);
}

static const weir_ingest_ops_t fwd_ingest_ops = {
    .name = "forward",
    .conn_size = sizeof(fwd_conn_t),
    .open = fwd_open,
    .frame = fwd_frame,
    .answer = fwd_answer,
    .held = fwd_held,
    .closed = fwd_closed,
};

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
    in->warn_rl.interval_ms = WEIR_WARN_INTERVAL_MS;
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
    weir_ingest_opts_t o = in->limits;
    o.bind = in->bind;
    o.port = in->port;
    o.backlog = in->backlog;
    o.tls = &in->tls;
    o.linger_timeout = in->linger;
    o.keepalive = in->keepalive_packet;
    o.label = in->label;
    o.pm = in->pm;
    o.require_auth = in->security.enabled;
    o.resolve_hostname = in->resolve_hostname;
    o.data = in;
    uv_loop_t *loop = weir_engine_loop(in->eng);
    in->ing = weir_ingest_new(loop, in->eng, &fwd_ingest_ops, &o, err);
    if (!in->ing) {
        weir_err_prefix(err, "forward input on %s:%d", in->bind, in->port);
        return -1;
    }
    int port = weir_ingest_port(in->ing);
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

static void fwd_stop(void *state, void (*done)(void *), void *arg)
{
    fwd_input_t *in = state;
    if (in->udp) uv_close((uv_handle_t *)in->udp, (uv_close_cb)free);
    in->udp = NULL;
    if (!in->ing) {
        done(arg);
        return;
    }
    weir_ingest_stop(in->ing, done, arg);
}

static void fwd_destroy(void *state)
{
    fwd_input_t *in = state;
    if (!in) return;
    weir_ingest_free(in->ing);
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
