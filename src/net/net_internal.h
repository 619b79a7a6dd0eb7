/* What listener.c, conn.c and tls.c share: the connection and listener structs and the few
 * functions one file calls in another. Nothing here is for inputs; they use weir/net.h. */
#ifndef WEIR_NET_INTERNAL_H
#define WEIR_NET_INTERNAL_H

#include <netinet/in.h>
#include <openssl/ssl.h>

#include "weir/log.h"
#include "weir/net.h"

/* One socket read: at most this many bytes reach on_data in one call. Plaintext from TLS
 * arrives in records of at most 16 KiB, so this only bounds plain TCP reads. */
#define NET_READ_BUF_SIZE (64 * 1024)

/* Default TLS handshake timeout when the listener's option is 0 (Fluent Bit's
 * net.accept_timeout). */
#define NET_TLS_HANDSHAKE_TIMEOUT_DEFAULT 10.0

/* A graceful close gives up and closes at once when pending writes, close_notify and the FIN
 * have not gone out within this time (a peer that stopped reading). */
#define NET_CLOSE_TIMEOUT_MS_DEFAULT 10000u
/* After our FIN, the connection waits this long for the peer's FIN, discarding what it still
 * sends, so that closing never resets a connection whose last bytes the peer has not read. */
#define NET_DRAIN_TIMEOUT_MS_DEFAULT 2000u

/* The two close timeouts in use. Only tests change them, to exercise them quickly. */
extern unsigned net_close_timeout_ms;
extern unsigned net_drain_timeout_ms;

struct weir_tls_ctx {
    SSL_CTX *ctx;
};

struct weir_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* TLS handshake timeout, then the close timeouts */
    uv_idle_t drain;  /* delivers TLS plaintext held back by a pause, after a resume */
    uv_shutdown_t shutdown_req;
    int open_handles; /* the three handles above; the struct is freed when it reaches 0 */

    weir_listener_t *listener; /* set while a TLS handshake runs, for on_tls_fail */
    weir_conn_t *lprev, *lnext;
    weir_conn_cbs_t cbs;
    void *data;

    struct sockaddr_storage peer;
    char peer_addr[INET6_ADDRSTRLEN];
    int peer_port;
    char peer_text[INET6_ADDRSTRLEN + 8]; /* "1.2.3.4:5678" or "[::1]:5678", for logs */

    SSL *ssl; /* NULL for plain TCP */
    BIO *rbio, *wbio;
    uint64_t hs_timeout_ms;
    weir_buf_t early; /* plaintext written before the handshake finished */

    size_t wq_size;
    uint64_t received; /* bytes read from the socket */

    bool owned;          /* on_accept ran, so the input gets on_close */
    bool started;        /* accepted and set up; reading may start */
    bool ready;          /* on_ready ran (plain: after accept; TLS: after the handshake) */
    bool paused;         /* the input asked for no more data */
    bool reading;        /* uv_read_start is in effect */
    bool eof;            /* the peer's FIN (or close_notify) was seen */
    bool closing;        /* weir_conn_close or weir_conn_abort ran */
    bool shut;           /* uv_shutdown issued: nothing more may be written */
    bool draining;       /* after our FIN: reading and discarding until the peer's FIN */
    bool handles_closed; /* uv_close issued */
    bool tls_failed;     /* OpenSSL reported a fatal error: no SSL_shutdown, no SSL_write */
    bool has_reason;
    char reason[256];
};

struct weir_listener {
    uv_tcp_t tcp;
    uv_loop_t *loop;
    weir_tls_ctx_t *tls;
    uint64_t hs_timeout_ms;
    int linger_timeout;
    bool keepalive;
    bool closing;
    int port;
    void (*on_accept)(weir_listener_t *l, weir_conn_t *c);
    void (*on_tls_fail)(weir_listener_t *l, const char *peer, const char *reason);
    void *data;
    weir_conn_t *handshaking; /* TLS connections still in their handshake */
    weir_ratelimit_t accept_rl;
};

/* conn.c */
weir_conn_t *net_conn_new(uv_loop_t *loop);
/* Sets up an accepted connection and hands it to the listener's on_accept. */
void net_conn_start(weir_conn_t *c, weir_listener_t *l);
/* Closes a connection the input never saw: no callbacks. */
void net_conn_discard(weir_conn_t *c);
/* Unlinks from the listener's handshake list. */
void net_conn_detach(weir_conn_t *c);
/* Queues `len` bytes as one uv_write; `accounted` is the plaintext it stands for in the write
 * queue size. Returns -1 when the connection is closing or the write failed (then aborted). */
int net_conn_send(weir_conn_t *c, const char *data, size_t len, size_t accounted);
/* Marks the connection ready and runs on_ready; returns false if it closed meanwhile. */
bool net_conn_ready(weir_conn_t *c);
/* Hands plaintext to on_data unless the connection is closing. */
void net_conn_deliver(weir_conn_t *c, const char *data, size_t len);
/* The peer is done sending: on_eof, or a close when the input has none. */
void net_conn_peer_eof(weir_conn_t *c);
void net_conn_set_reason(weir_conn_t *c, const char *reason);
void net_conn_stop_reading(weir_conn_t *c);
void net_conn_start_reading(weir_conn_t *c);

/* tls.c */
/* A server-side session with memory BIOs, in accept state. */
int net_tls_session_new(weir_conn_t *c, weir_tls_ctx_t *ctx);
/* Feeds ciphertext read from the socket: drives the handshake, then delivers plaintext. */
void net_tls_input(weir_conn_t *c, const char *data, size_t len);
/* Delivers plaintext already received but held back by a pause. */
void net_tls_pump(weir_conn_t *c);
bool net_tls_has_pending(const weir_conn_t *c);
/* Encrypts plaintext and sends the records as one write. */
int net_tls_write(weir_conn_t *c, const char *data, size_t len);
/* Queues close_notify. */
void net_tls_shutdown(weir_conn_t *c);
/* The handshake did not finish in time. */
void net_tls_handshake_timeout(weir_conn_t *c);
/* The peer closed or reset the TCP connection before the handshake finished. */
void net_tls_handshake_eof(weir_conn_t *c, const char *why);

#endif
