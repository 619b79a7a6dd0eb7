/* The Fluentd forward protocol without sockets: the frame scanner, the frame decoder, the
 * handshake and the ack. src/input/forward/ glues these to connections (forward.c); this part
 * is pure so that every conformance case of docs/forward-protocol.md section 7 is a unit test.
 *
 * Reference: ../shared/docs/forward-protocol.md (policy R of section 6.2). */
#ifndef WEIR_FORWARD_H
#define WEIR_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "weir/common.h"
#include "weir/config.h"
#include "weir/event.h"
#include "weir/inflate.h"

/* Limits. Each is checked where untrusted bytes enter. */
#define FWD_FRAME_LIMIT_DEFAULT (256u * 1024 * 1024)      /* accepts Fluentd file-buffer chunks */
#define FWD_DECOMPRESS_LIMIT_DEFAULT (256u * 1024 * 1024) /* Fluentd's decompression_size_limit */
#define FWD_MAX_DEPTH 64 /* nesting of containers in one frame, protocol levels included */

/* ---- Frame scanner: finds where one top-level msgpack object ends, resumably. ----
 * Bytes arrive in any split. The scanner remembers how far it got in the current frame, so a
 * frame delivered one byte at a time costs linear time in total. It allocates nothing. */
typedef struct fwd_scanner {
    size_t max_frame;
    int max_depth;
    size_t off; /* bytes of the current frame consumed so far */
    int depth;
    uint64_t left; /* values still to read at the current level */
    uint64_t stack[FWD_MAX_DEPTH + 1];
} fwd_scanner_t;

typedef enum fwd_scan_result {
    FWD_SCAN_NEED_MORE = 0,
    FWD_SCAN_FRAME = 1,  /* *frame_len = length of the complete frame at buf[0] */
    FWD_SCAN_ERROR = -1, /* *why = reason (static string) */
} fwd_scan_result_t;

void fwd_scanner_init(fwd_scanner_t *s, size_t max_frame, int max_depth);
/* `buf` starts at the first byte of the current frame and holds `len` bytes (the same bytes as
 * the previous call plus whatever arrived since). Errors: reserved byte 0xc1, depth over the
 * limit, frame over max_frame (reported as soon as more than max_frame bytes are buffered for
 * the frame or a declared length/count could not fit in it). After FWD_SCAN_FRAME the scanner
 * is ready for the next frame (at buf + frame_len). */
fwd_scan_result_t fwd_scanner_scan(fwd_scanner_t *s, const char *buf, size_t len, size_t *frame_len,
                                   const char **why);
void fwd_scanner_reset(fwd_scanner_t *s);

/* ---- Frame decoder ---- */
typedef struct fwd_decode_opts {
    bool skip_invalid_event; /* default true (Fluentd >= 1.19) */
    size_t max_decompressed; /* FWD_DECOMPRESS_LIMIT_DEFAULT */
    int max_depth;
    weir_time_t now; /* replaces time 0 (Fluentd's receive time) */
    /* Fields set on every record, overwriting existing keys (source_address_key,
     * source_hostname_key). NULL/0 = none. */
    const char *const *extra_keys;
    const char *const *extra_values;
    size_t n_extra;
    /* NULL: a compressed payload is inflated in one call. Else it is inflated in steps of
     * WEIR_INFLATE_STEP_BUDGET into this caller-kept state, and fwd_decode_frame returns
     * FWD_DECODE_AGAIN until the last step: the caller calls it again with the same frame
     * and options (on a later loop turn), then resets the state (weir_inflation_reset). */
    weir_inflation_t *inflation;
} fwd_decode_opts_t;

void fwd_decode_opts_init(fwd_decode_opts_t *o);

typedef enum fwd_mode {
    FWD_MODE_HEARTBEAT, /* top-level nil */
    FWD_MODE_MESSAGE,
    FWD_MODE_FORWARD,
    FWD_MODE_PACKED,
    FWD_MODE_COMPRESSED,
} fwd_mode_t;

typedef struct fwd_frame_info {
    fwd_mode_t mode;
    /* The option's "chunk" value as its raw msgpack bytes (pointing into the frame), for the
     * ack echo: same type, same bytes. NULL when no ack was asked for. */
    const char *chunk;
    size_t chunk_len;
    uint32_t skipped;       /* invalid events dropped (each already logged at warn by the decoder
                               with rate limiting) */
    uint32_t group_markers; /* Fluent Bit group start/end records dropped */
    size_t decompressed_len;
} fwd_frame_info_t;

/* Decodes one complete frame into `out` (whose tag is replaced and entries reset). Returns 0
 * on success (the batch may hold 0 events, and an ack is still due if info->chunk is set), or
 * -1 for a fatal frame (err says why; the connection must be closed without an ack, nothing
 * of the frame is committed). Validates and decompresses the whole frame before returning;
 * with opts->inflation it may return FWD_DECODE_AGAIN (the batch empty) while it inflates. */
#define FWD_DECODE_AGAIN 1
int fwd_decode_frame(const char *frame, size_t len, const fwd_decode_opts_t *opts,
                     weir_batch_t *out, fwd_frame_info_t *info, weir_err_t *err);

/* {"ack": <chunk>} in msgpack (chunk bytes echoed verbatim), or as JSON text when `json` (the
 * chunk then must be a str, written as a JSON string). */
void fwd_ack_build(const char *chunk, size_t chunk_len, bool json, weir_buf_t *out);

/* ---- JSON on the forward port (first byte '{' or '['): one JSON value per request. ----
 * The scan state of one connection: where the scan of the value at the start of the caller's
 * buffer stopped, so that the next call with more bytes resumes there. */
typedef struct fwd_json_scan {
    size_t off;   /* bytes of the buffer already scanned */
    size_t start; /* where the value starts, after leading whitespace (once started) */
    int depth;
    bool started, in_str, esc;
} fwd_json_scan_t;

/* Forgets a scan (fwd_json_next does it itself after a value or an error). */
void fwd_json_scan_reset(fwd_json_scan_t *js);

/* Returns 1 with *consumed set and the request converted to a msgpack frame appended to
 * `frame`, 0 if the value is incomplete, -1 on a syntax error (err set). Leading whitespace
 * between values is skipped. `buf` must start where it started on the previous call that
 * returned 0 (the same bytes, possibly more of them); js may be NULL for a one-off call, which
 * then scans from the start. */
int fwd_json_next(fwd_json_scan_t *js, const char *buf, size_t len, size_t max_frame,
                  size_t *consumed, weir_buf_t *frame, weir_err_t *err);

/* ---- Handshake (<security>) ---- */
typedef struct fwd_user {
    char *username;
    char *password; /* secret */
} fwd_user_t;

typedef struct fwd_client {
    struct sockaddr_storage addr; /* network address (host resolved once at configure time) */
    int prefix_len;               /* CIDR prefix; 32/128 for a host */
    char *shared_key;             /* NULL = the global key */
    char **users;                 /* usernames allowed; n_users == 0 = all */
    size_t n_users;
} fwd_client_t;

typedef struct fwd_security {
    bool enabled; /* a <security> section exists */
    char *self_hostname;
    char *shared_key;
    bool user_auth;
    bool allow_anonymous_source;
    fwd_user_t *users;
    size_t n_users;
    fwd_client_t *clients;
    size_t n_clients;
} fwd_security_t;

/* Reads <security> (with <user> and <client> children); s->enabled stays false when `sec`
 * is NULL. Validates as Fluentd does (self_hostname and shared_key required, user_auth needs a
 * user, allow_anonymous_source false needs a client, client has exactly one of host/network). */
int fwd_security_from_conf(fwd_security_t *s, weir_conf_section_t *sec, weir_err_t *err);
void fwd_security_free(fwd_security_t *s);

#define FWD_NONCE_LEN 16

/* ["HELO", {"nonce": bin16, "auth": bin16, "keepalive": bool}] (auth always sent, as Fluentd). */
void fwd_helo_build(const uint8_t nonce[FWD_NONCE_LEN], const uint8_t auth[FWD_NONCE_LEN],
                    bool keepalive, weir_buf_t *out);

/* Checks one complete PING frame from `peer` against the HELO's nonce and auth, writes the
 * PONG to `pong` (always, even for a malformed PING, as policy R says) and returns true when
 * the peer is authenticated. *reason is the failure text sent in the PONG. */
bool fwd_ping_check(const fwd_security_t *s, const char *frame, size_t len,
                    const uint8_t nonce[FWD_NONCE_LEN], const uint8_t auth[FWD_NONCE_LEN],
                    const struct sockaddr *peer, const char *peer_text, weir_buf_t *pong,
                    const char **reason);

/* hex(SHA512(a || b || c || d)) in lowercase, 128 chars + NUL. */
void fwd_sha512_hex4(const void *a, size_t alen, const void *b, size_t blen, const void *c,
                     size_t clen, const void *d, size_t dlen, char out[129]);

#endif
