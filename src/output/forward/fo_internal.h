/* @type forward (Fluentd's out_forward): the pieces behind src/output/forward/forward.c.
 *
 *   frame.c  pure: the PackedForward frame of a chunk, the ack, HELO and PONG readers, the
 *            PING; every byte the receiver sends back is read here, under the limits below
 *   conn.c   one connection to one server on a sender thread: connect with a timeout, TLS,
 *            the <security> handshake, writes and reads bounded by poll() deadlines
 *   conf.c   the <match> section: servers, timeouts, TLS, security
 *   forward.c the plugin: sender threads, server choice (weight, standby), heartbeats
 *
 * Nothing here is part of a public header: only forward.c's ops are. */
#ifndef WEIR_FO_INTERNAL_H
#define WEIR_FO_INTERNAL_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/common.h"
#include "weir/config.h"
#include "weir/net.h"

/* Limits on what a receiver sends back. Each is checked where the bytes arrive. An ack is
 * {"ack": "<24 base64 chars>"}, about 30 bytes; a HELO about 60, a PONG about 150 (a hostname
 * and a 128-char digest). 1 KiB is room for any of them with a long hostname, and little
 * enough that a hostile receiver cannot make a sender hold more. */
#define FO_REPLY_MAX 1024
#define FO_CHUNK_ID_B64 24 /* base64 of a 16-byte chunk id */
#define FO_SALT_HEX 32     /* the PING's salt: 16 random bytes as lowercase hex, as Fluentd */
#define FO_HOSTNAME_MAX 255
#define FO_MAX_SERVERS 256 /* <server> sections in one output */

typedef struct fo_server {
    char *host;
    int port;
    char *name; /* for logs: name, or host:port */
    int64_t weight;
    bool standby;
    char *shared_key; /* NULL: <security>'s */
    char *username;   /* "" unless set */
    char *password;
    /* shared state, under fo_t.lock */
    bool available;
    double down_until; /* heartbeat none: skipped until then (monotonic seconds) */
    int64_t current;   /* smooth weighted round robin */
} fo_server_t;

typedef struct fo_opts {
    bool require_ack;
    double ack_timeout;
    double send_timeout;
    double connect_timeout;
    bool heartbeat; /* heartbeat_type transport (tcp) */
    double heartbeat_interval;
    double recover_wait;
    bool keepalive;
    double keepalive_timeout; /* 0: no limit */
    bool gzip;
    bool send_keepalive_packet;
    /* <security> */
    bool security;
    char *self_hostname;
    char *shared_key;
    /* transport tls */
    bool tls;
    bool tls_verify_hostname;
    bool tls_allow_self_signed;
    weir_tls_opts_t tls_opts; /* versions, ciphers, the client certificate, insecure */
    char **tls_ca_paths;      /* tls_cert_path: the CAs that sign the receivers' certificates */
    size_t n_tls_ca;
    SSL_CTX *ssl_ctx; /* built at start */
} fo_opts_t;

/* ---- frame.c ---- */
/* base64 (standard alphabet, padded) of a 16-byte id: FO_CHUNK_ID_B64 chars + NUL. */
void fo_chunk_id_b64(const uint8_t id[16], char out[FO_CHUNK_ID_B64 + 1]);
/* A frame written in place, so the entries are copied once: fo_frame_begin appends the array
 * header, the tag and a bin32 header and returns where its length goes; the caller appends
 * the entries; fo_frame_finish patches the length and appends {"size": count, "chunk": id}
 * (id NULL: no "chunk"). */
size_t fo_frame_begin(weir_buf_t *out, const char *tag, size_t tag_len);
int fo_frame_finish(weir_buf_t *out, size_t len_off, uint32_t count, const char *id,
                    weir_err_t *err);
/* Appends [tag, bin(entries), {"size": count, ["compressed": "gzip",] "chunk": id}] to out.
 * With gzip the entries are compressed first (into `scratch`). id NULL: no "chunk" key (no
 * ack asked). 0, or -1 with err set. */
int fo_frame_build(const char *tag, size_t tag_len, const char *entries, size_t len, uint32_t count,
                   bool gzip, const char *id, weir_buf_t *scratch, weir_buf_t *out,
                   weir_err_t *err);
/* Length of the one complete msgpack value at the start of buf: >0, 0 when more bytes are
 * needed (and len < FO_REPLY_MAX), -1 when it is malformed or cannot end within FO_REPLY_MAX
 * bytes (err set). */
long fo_reply_len(const char *buf, size_t len, weir_err_t *err);
/* Checks a complete ack against the id sent: 0, or -1 with err saying what came instead. */
int fo_ack_check(const char *reply, size_t len, const char *id, weir_err_t *err);
/* Reads a HELO: nonce and auth (str or bin; auth may be absent or empty) and keepalive (true
 * when absent). 0, or -1 with err set. */
typedef struct fo_helo {
    uint8_t nonce[16];
    size_t nonce_len;
    uint8_t auth[16];
    size_t auth_len;
    bool keepalive;
} fo_helo_t;
int fo_helo_parse(const char *reply, size_t len, fo_helo_t *h, weir_err_t *err);
/* The PING for a HELO; `salt` is FO_SALT_HEX chars. */
void fo_ping_build(const fo_helo_t *h, const char *self_hostname, const char *shared_key,
                   const char *salt, const char *username, const char *password, weir_buf_t *out);
/* Checks a PONG: auth true, the server's hostname differs from ours, its digest proves the
 * shared key. 0, or -1 with err set (the receiver's reason when it refused us). */
int fo_pong_check(const char *reply, size_t len, const fo_helo_t *h, const char *self_hostname,
                  const char *shared_key, const char *salt, weir_err_t *err);

/* ---- conn.c ---- */
/* Failures of fo_conn_write and fo_conn_read_reply (err set with each). */
#define FO_READ_FAILED (-1)  /* a bad reply, or an I/O error */
#define FO_READ_TIMEOUT (-2) /* nothing complete within the timeout */
#define FO_READ_CLOSED (-3)  /* the receiver closed or reset the connection */

typedef struct fo_conn {
    int fd; /* -1: not connected */
    SSL *ssl;
    bool reusable;     /* keepalive on both sides */
    double idle_since; /* monotonic seconds of the last completed use */
} fo_conn_t;

double fo_mono_now(void);
void fo_conn_init(fo_conn_t *c);
void fo_conn_close(fo_conn_t *c);
/* True when an idle kept-alive connection is still usable (the peer has not closed it and it
 * has not been idle past keepalive_timeout). */
bool fo_conn_alive(fo_conn_t *c, const fo_opts_t *o);
/* Connects (TCP, then TLS when configured, then the handshake with <security>). 0, or -1
 * with err set (naming the server). */
int fo_conn_open(fo_conn_t *c, const fo_opts_t *o, const fo_server_t *s, weir_err_t *err);
/* A TCP connect and nothing else: the transport heartbeat. */
int fo_probe(const fo_opts_t *o, const fo_server_t *s, weir_err_t *err);
/* Writes all n bytes: 0, FO_READ_CLOSED when the receiver had closed or reset the connection,
 * else FO_READ_FAILED (err set either way). */
int fo_conn_write(fo_conn_t *c, const char *p, size_t n, double timeout, weir_err_t *err);
/* Reads one complete reply (at most FO_REPLY_MAX bytes) into out: 0, or FO_READ_* with err
 * set. */
int fo_conn_read_reply(fo_conn_t *c, weir_buf_t *out, double timeout, weir_err_t *err);

/* ---- conf.c ---- */
int fo_opts_from_conf(fo_opts_t *o, weir_conf_section_t *sec, weir_err_t *err);
int fo_servers_from_conf(weir_conf_section_t *sec, fo_server_t **out, size_t *n, weir_err_t *err);
void fo_opts_free(fo_opts_t *o);
void fo_servers_free(fo_server_t *s, size_t n);

#endif
