/* The ingest-connection layer: everything a network input does with its connections that does
 * not depend on its protocol. An input (forward, http, the monitoring server) supplies only its
 * framing - bytes in, then "a batch", "need more", "handled", or "error" - and its answer to a
 * stored batch (an ack, a 200). The layer owns the rest:
 *
 *  - the listener and the connection list, and each connection's read buffer (it always starts
 *    at the first byte of the unit being read, and is compacted after a unit);
 *  - one emit in flight per connection, reading paused while it waits; WEIR_EMIT_FULL waits for
 *    weir_engine_on_space() and emits again; the answer runs when the output reports the batch
 *    durable;
 *  - the connection's lifetime: the emit request and the name lookup are requests embedded in
 *    the connection, as libuv's uv_write_t is. When the connection closes under them they are
 *    cancelled, the connection's buffers are freed at once, and the struct itself goes when the
 *    last request completes; no input ever sees a closed connection again;
 *  - every limit that does not need the protocol (each a named constant or a parameter, each
 *    tested at and past its edge): connections per input, deadlines (authentication, a unit
 *    that must arrive whole, an idle keep-alive), a budget for the bytes connections hold, a
 *    peer that does not read its answers;
 *  - work cut in steps (WEIR_INGEST_AGAIN): a connection whose unit needs more than a slice of
 *    loop time (a decompression) gets one slice per loop turn, in turn with the others;
 *  - the drain on stop: idle connections close at once, one with a unit in flight (emitted or
 *    in steps) after its answer.
 *
 * A new input is a framing function and a few lines of registration. A line-based one:
 *
 *     static weir_ingest_res_t line_frame(weir_ingest_conn_t *ic, const char *p, size_t n,
 *                                         weir_ingest_frame_t *f)
 *     {
 *         my_conn_t *mc = weir_ingest_conn_data(ic);
 *         const char *nl = memchr(p, '\n', n);
 *         if (!nl) return WEIR_INGEST_MORE;          // the layer keeps the bytes
 *         f->consumed = (size_t)(nl - p) + 1;
 *         weir_batch_reset(&mc->batch);
 *         my_add_record(&mc->batch, p, (size_t)(nl - p));
 *         f->batch = &mc->batch;
 *         return WEIR_INGEST_EMIT;                  // the layer emits, then calls .answer
 *     }
 *     static const weir_ingest_ops_t line_ops = {
 *         .name = "syslog", .conn_size = sizeof(my_conn_t),
 *         .open = my_open, .frame = line_frame, .closed = my_closed,
 *     };
 *     // in start(): weir_ingest_opts_t o; weir_ingest_opts_init(&o); o.port = ...;
 *     //             in->ing = weir_ingest_new(loop, eng, &line_ops, &o, err);
 *     // in stop():  weir_ingest_stop(in->ing, done, arg);  in destroy(): weir_ingest_free()
 *
 * Threads: the loop thread only. */
#ifndef WEIR_INGEST_H
#define WEIR_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "weir/common.h"
#include "weir/config.h"
#include "weir/event.h"
#include "weir/net.h"
#include "weir/plugin.h"

/* ---- limits ---------------------------------------------------------------------------------
 * Each is checked where the bytes enter and has a test exactly on it and one past it. */

/* Sockets of every input together may use at most this share (1/N) of RLIMIT_NOFILE: the rest
 * is kept for what the process itself must open - chunk and .meta files, the listeners, log
 * files, the S3 client's sockets - so that a flood of peers can never make the buffer fail to
 * open a file. The default max_connections of each input is this share. */
#define WEIR_INGEST_NOFILE_SHARE 2
/* ...but never fewer than this many connections per input, so a tiny limit still serves. */
#define WEIR_INGEST_MIN_CONNECTIONS 8
/* Bytes a peer may send before it has authenticated (the forward PING): a few KiB, never a
 * frame of chunk_size_limit. Exactly this many unread bytes are allowed. */
#define WEIR_INGEST_PREAUTH_LIMIT 8192
/* Answer bytes a peer has not read yet (acks, responses, metrics pages): past this the
 * connection stops reading further units until the peer catches up, and is dropped if it
 * never does. Without it a peer that pipelines cheap requests (a GET /metrics, a forward
 * frame with a long `chunk` to echo) and reads nothing grows weir's write queue without end. */
#define WEIR_INGEST_MAX_UNSENT (1024 * 1024)
/* Default deadline, seconds, for an authentication handshake (forward <security>). */
#define WEIR_INGEST_AUTH_TIMEOUT_DEFAULT 10.0
/* Default deadline, seconds, for a unit (a forward frame, an HTTP request's headers and then
 * its body) to arrive whole once its first byte did, and for a new connection's first byte.
 * Not reset by each byte: a peer trickling a byte a second is closed at the deadline. */
#define WEIR_INGEST_PROGRESS_TIMEOUT_DEFAULT 60.0
/* Default budget, bytes, for what the connections of every input hold together (unread
 * bytes, bodies being read, converted copies): process-wide, so N peers cannot multiply the
 * per-connection caps. Past an input's limit, a connection of that input that holds something
 * stops being read until the total drops; one that holds nothing still reads, so a sender of
 * small units is served while others hold the budget. */
#define WEIR_INGEST_MEMORY_LIMIT_DEFAULT (512ull * 1024 * 1024)
/* A read buffer larger than this is released once it is empty, so one big unit does not pin
 * its size on an idle connection. */
#define WEIR_INGEST_KEEP_BUF_MAX (1024 * 1024)

/* ---- what an input supplies -------------------------------------------------------------- */

typedef struct weir_ingest weir_ingest_t;
typedef struct weir_ingest_conn weir_ingest_conn_t;

typedef enum weir_ingest_res {
    WEIR_INGEST_MORE,  /* no whole unit yet: call again with more bytes (f->consumed may be > 0
                          for a reader that copies what it has read) */
    WEIR_INGEST_EMIT,  /* f->batch is a unit's events: emit, then .answer */
    WEIR_INGEST_NEXT,  /* a unit was handled without events (PING, heartbeat, a 4xx already
                          written, 100-continue): go on with the next bytes */
    WEIR_INGEST_CLOSE, /* handled, and the connection ends (after what was written) */
    WEIR_INGEST_ERROR, /* bad input: f->why is logged (rate-limited) and the connection closed */
    WEIR_INGEST_AGAIN, /* a unit is complete but its work (a decompression) is cut in steps: call
                          .frame again with the same bytes, unmoved, on a later loop turn, after
                          other connections had theirs. f->consumed is ignored; reading pauses
                          meanwhile; the input keeps its progress in its state (freed in
                          .closed, which may come instead of the next call) */
} weir_ingest_res_t;

typedef struct weir_ingest_frame {
    size_t consumed;     /* bytes of the data handed over that the framing used */
    weir_batch_t *batch; /* EMIT: owned by the input, unchanged until .answer */
    size_t wire_bytes;   /* EMIT: bytes on the wire the batch came from (metrics) */
    const char *why;     /* ERROR */
} weir_ingest_frame_t;

typedef enum weir_ingest_status {
    WEIR_INGEST_STORED,   /* durable: acknowledge */
    WEIR_INGEST_FAILED,   /* the output could not store it */
    WEIR_INGEST_REJECTED, /* the router rejected it (WEIR_EMIT_ERROR) */
} weir_ingest_status_t;

typedef struct weir_ingest_ops {
    const char *name; /* log prefix: "forward" */
    size_t conn_size; /* the input's per-connection state, zeroed; weir_ingest_conn_data() */
    /* The connection is ready (TLS done, the peer's name resolved): greet, set up. May close.
     * Optional. */
    void (*open)(weir_ingest_conn_t *ic);
    /* Frames `len` bytes that start at the first unread byte. The bytes of an EMIT unit stay
     * where they are until .answer returns. */
    weir_ingest_res_t (*frame)(weir_ingest_conn_t *ic, const char *data, size_t len,
                               weir_ingest_frame_t *f);
    /* The emitted unit is done: write the answer. May close. Optional for inputs that never
     * emit. The batch may be reused from here on. */
    void (*answer)(weir_ingest_conn_t *ic, weir_ingest_status_t st);
    /* Bytes the input holds for the unit being read, besides the layer's read buffer (a body
     * read so far, a converted copy), for the memory budget. Optional. */
    size_t (*held)(weir_ingest_conn_t *ic);
    /* The connection is gone: free what the input's state holds (not the state itself).
     * Called once for every connection that was accepted. Optional. */
    void (*closed)(weir_ingest_conn_t *ic);
} weir_ingest_ops_t;

typedef struct weir_ingest_opts {
    const char *bind;
    int port;
    int backlog;
    const weir_tls_opts_t *tls;
    int linger_timeout;
    bool keepalive;            /* SO_KEEPALIVE */
    const char *label;         /* @label for emits */
    weir_plugin_metrics_t *pm; /* connections, refusals, TLS failures, events, acks */
    size_t max_connections;    /* 0 = weir_ingest_default_max_connections() */
    double progress_timeout;   /* seconds; 0 = off */
    double idle_timeout;       /* seconds without a unit in progress; 0 = never */
    bool require_auth;         /* units are only read after weir_ingest_conn_authenticated */
    double auth_timeout;       /* seconds */
    size_t preauth_limit;      /* unread bytes before authentication */
    uint64_t memory_limit;     /* bytes all inputs' connections may hold together */
    bool memory_limit_set;     /* given in the configuration */
    size_t max_unsent;         /* answer bytes a peer has not read before it is not read
                                  either (WEIR_INGEST_MAX_UNSENT) */
    bool resolve_hostname;     /* reverse lookup before .open */
    void *data;                /* weir_ingest_data() */
} weir_ingest_opts_t;

/* Reads the layer's parameters of a <source> into `o` (after weir_ingest_opts_init):
 * max_connections, progress_timeout, handshake_timeout, connection_memory_limit. Marks them
 * used; errors name the parameter and its line. */
int weir_ingest_conf_read(weir_ingest_opts_t *o, weir_conf_section_t *sec, weir_err_t *err);
/* A unit (frame, body) of `unit_limit` bytes must fit in the budget: without an explicit
 * connection_memory_limit the budget becomes at least twice the unit limit; an explicit one
 * below it is an error naming `param` ("chunk_size_limit"). */
int weir_ingest_conf_unit_limit(weir_ingest_opts_t *o, weir_conf_section_t *sec,
                                uint64_t unit_limit, const char *param, weir_err_t *err);
/* Defaults: the constants above, port 0, bind 0.0.0.0, linger -1, no auth. */
void weir_ingest_opts_init(weir_ingest_opts_t *o);
/* RLIMIT_NOFILE / WEIR_INGEST_NOFILE_SHARE, at least WEIR_INGEST_MIN_CONNECTIONS. */
size_t weir_ingest_default_max_connections(void);

/* Listens. `eng` may be NULL for an input that never emits (the monitoring server). */
weir_ingest_t *weir_ingest_new(uv_loop_t *loop, weir_engine_t *eng, const weir_ingest_ops_t *ops,
                               const weir_ingest_opts_t *o, weir_err_t *err);
int weir_ingest_port(const weir_ingest_t *ing);
void *weir_ingest_data(const weir_ingest_t *ing);
size_t weir_ingest_connections(const weir_ingest_t *ing);
/* Bytes this input's connections hold now (its share of the process-wide count). */
uint64_t weir_ingest_held(const weir_ingest_t *ing);
/* Stops accepting; idle connections close now, one with a unit in flight after its answer;
 * then done(arg), once. */
void weir_ingest_stop(weir_ingest_t *ing, void (*done)(void *), void *arg);
/* Frees the input's side; connections still open are cut. Memory goes once the loop has run
 * the close callbacks. */
void weir_ingest_free(weir_ingest_t *ing);

/* ---- what an input may do with a connection ---------------------------------------------- */

void *weir_ingest_conn_data(weir_ingest_conn_t *ic);
weir_ingest_t *weir_ingest_conn_ingest(const weir_ingest_conn_t *ic);
weir_conn_t *weir_ingest_conn_net(const weir_ingest_conn_t *ic);
const char *weir_ingest_conn_peer(const weir_ingest_conn_t *ic); /* "1.2.3.4" */
/* The resolved name with resolve_hostname, else NULL. */
const char *weir_ingest_conn_hostname(const weir_ingest_conn_t *ic);
/* Writes an answer (copied). Past max_unsent, reading stops until the peer catches up. */
void weir_ingest_conn_write(weir_ingest_conn_t *ic, const void *data, size_t len);
/* Graceful close after what was written. Safe from any callback, more than once. */
void weir_ingest_conn_close(weir_ingest_conn_t *ic, const char *why);
/* Logs why (rate-limited, with the peer's address) and closes. */
void weir_ingest_conn_fail(weir_ingest_conn_t *ic, const char *why);
/* The peer passed the input's handshake: the auth deadline and pre-auth limit stop. */
void weir_ingest_conn_authenticated(weir_ingest_conn_t *ic);
bool weir_ingest_conn_closing(const weir_ingest_conn_t *ic);

#endif
