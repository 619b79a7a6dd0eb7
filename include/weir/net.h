/* Network connections for the inputs: TCP listeners and accepted connections, with TLS on the
 * whole port when configured. An input sees only plaintext: weir_conn hides whether OpenSSL
 * (through memory BIOs, on the loop thread) sits between it and the socket.
 *
 * Ownership: the listener owns its accepted connections until it hands them to `on_accept`;
 * from then on the input owns the weir_conn_t and must end it with weir_conn_close(), after
 * which `on_close` fires once and the memory is freed by this module. */
#ifndef WEIR_NET_H
#define WEIR_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "weir/common.h"
#include "weir/config.h"

/* <transport tls> options, as Fluentd's server helper names them. */
typedef struct weir_tls_opts {
    bool enabled;
    char *cert_path; /* leaf first, then chain */
    char *private_key_path;
    char *private_key_passphrase; /* secret; legacy PEM (DEK-Info) and PKCS#8 both work */
    char *ca_path;                /* PEM file of CAs that sign client certs */
    bool client_cert_auth;        /* VERIFY_PEER | FAIL_IF_NO_PEER_CERT, clientAuth purpose */
    char *min_version;            /* "TLSv1_2", "TLSv1_3" (also "TLS1_2"); both or neither */
    char *max_version;
    /* Alone, pins min = max = version (Fluentd). With none of the three: TLS 1.2 to 1.3 (Fluentd
     * pins 1.2). */
    char *version;
    /* The TLS 1.2 suites; default ECDHE with AEAD only (Fluentd: "ALL:!aNULL:!eNULL:!SSLv2").
     * TLS 1.3 suites are always the AEAD ones. */
    char *ciphers;
    bool insecure;
} weir_tls_opts_t;

/* Reads a <transport> section (argument "tls" or "tcp"); leaves opts->enabled false for tcp.
 * Marks the params it reads as used. */
int weir_tls_opts_from_conf(weir_tls_opts_t *opts, weir_conf_section_t *transport, weir_err_t *err);
void weir_tls_opts_free(weir_tls_opts_t *opts);

typedef struct weir_tls_ctx weir_tls_ctx_t;
/* Loads certificates and keys; errors name the file and OpenSSL's reason. */
weir_tls_ctx_t *weir_tls_ctx_new(const weir_tls_opts_t *opts, weir_err_t *err);
/* A PEM private key (legacy encrypted PEM or PKCS#8, encrypted or not) with its passphrase
 * (NULL: none; never a prompt on the terminal); NULL with err set (naming the path, why, and
 * whether the passphrase is missing or wrong). Free with EVP_PKEY_free. */
struct evp_pkey_st *weir_read_private_key(const char *path, const char *passphrase,
                                          weir_err_t *err);
void weir_tls_ctx_free(weir_tls_ctx_t *ctx);

/* The client side, for outputs (out_forward's `transport tls`): versions and ciphers as for a
 * server; cert_path/private_key_path/private_key_passphrase, when set, are the client
 * certificate; the server's certificate is verified against the `n_ca` PEM files `ca_paths`
 * (none: the system's CAs) unless opts->insecure; allow_self_signed accepts a server whose
 * certificate signs itself. NULL with err set (naming the file and OpenSSL's reason). Free
 * with SSL_CTX_free. */
struct ssl_ctx_st *weir_tls_client_ctx_new(const weir_tls_opts_t *opts, char *const *ca_paths,
                                           size_t n_ca, bool allow_self_signed, weir_err_t *err);
/* The OpenSSL constant for a Fluentd TLS version name ("TLSv1_2", "TLS1_3", ...), or 0. */
int weir_tls_version_parse(const char *name);

typedef struct weir_conn weir_conn_t;
typedef struct weir_listener weir_listener_t;

typedef struct weir_conn_cbs {
    /* Plaintext bytes arrived. The buffer is valid only during the call. */
    void (*on_data)(weir_conn_t *c, const char *data, size_t len);
    /* The peer closed its side (EOF) after all data was delivered. */
    void (*on_eof)(weir_conn_t *c);
    /* The TLS handshake finished (called right after accept for plain TCP too), so an input
     * can send its greeting (the forward HELO) only then. */
    void (*on_ready)(weir_conn_t *c);
    /* The connection is gone; the input drops its pointer. `reason` is NULL for a clean close. */
    void (*on_close)(weir_conn_t *c, const char *reason);
} weir_conn_cbs_t;

/* Peer address as text ("127.0.0.1", "::1") and port, for logs and source_address_key. */
const char *weir_conn_peer_addr(const weir_conn_t *c);
int weir_conn_peer_port(const weir_conn_t *c);
const struct sockaddr_storage *weir_conn_peer_sockaddr(const weir_conn_t *c);

void weir_conn_set_data(weir_conn_t *c, void *data);
void *weir_conn_get_data(const weir_conn_t *c);

/* Sends plaintext as one unit (one TLS record sequence / one uv_write), in call order.
 * Copies the bytes. Returns 0, or -1 if the connection is closing. */
int weir_conn_write(weir_conn_t *c, const void *data, size_t len);
/* Stop and resume delivering data (uv_read_stop / uv_read_start): backpressure. */
void weir_conn_pause(weir_conn_t *c);
void weir_conn_resume(weir_conn_t *c);
bool weir_conn_paused(const weir_conn_t *c);
/* Graceful close: pending writes are flushed first (so a final ack or PONG reaches the
 * peer), then TLS close_notify, shutdown and close. `reason` (may be NULL) is passed on to
 * on_close and logged by the caller as it likes. Safe to call more than once. */
void weir_conn_close(weir_conn_t *c, const char *reason);
/* Closes at once, dropping pending writes (a peer that stopped reading). */
void weir_conn_abort(weir_conn_t *c, const char *reason);
/* Bytes accepted by weir_conn_write and not yet written to the socket. */
size_t weir_conn_write_queue_size(const weir_conn_t *c);

typedef struct weir_listener_opts {
    const char *bind;             /* "0.0.0.0", "::", "127.0.0.1" */
    int port;                     /* 0 = any; see weir_listener_port */
    int backlog;                  /* 0 = SOMAXCONN */
    const weir_tls_opts_t *tls;   /* NULL or !enabled = plain TCP */
    double tls_handshake_timeout; /* seconds; 0 = 10 s */
    int linger_timeout; /* <0 = leave the OS default; >=0 sets SO_LINGER on accepted sockets */
    bool keepalive;     /* SO_KEEPALIVE (send_keepalive_packet) */
    /* Called for each accepted connection; the callee sets its callbacks and data with
     * weir_conn_setup. */
    void (*on_accept)(weir_listener_t *l, weir_conn_t *c);
    /* Called when a TLS handshake fails, after it was logged with the peer's address. */
    void (*on_tls_fail)(weir_listener_t *l, const char *peer, const char *reason);
    void *data;
} weir_listener_opts_t;

void weir_conn_setup(weir_conn_t *c, const weir_conn_cbs_t *cbs, void *data);

weir_listener_t *weir_listener_new(uv_loop_t *loop, const weir_listener_opts_t *opts,
                                   weir_err_t *err);
int weir_listener_port(const weir_listener_t *l); /* the bound port */
void *weir_listener_data(const weir_listener_t *l);
/* Stops accepting; existing connections live on until their owners close them. The memory
 * is freed once the listening handle has closed. */
void weir_listener_close(weir_listener_t *l);

/* Parses "host" or "host:port"-less bind addresses into a sockaddr for `port`. */
int weir_net_resolve_bind(const char *bind, int port, struct sockaddr_storage *out,
                          weir_err_t *err);

#endif
