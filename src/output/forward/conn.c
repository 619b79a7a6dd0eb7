/* One connection from a sender thread to one receiver: blocking in effect, non-blocking
 * underneath, every wait a poll() with a deadline (connect_timeout, send_timeout,
 * ack_response_timeout), TLS through OpenSSL directly on the socket.
 *
 * Why a thread with poll() rather than libuv on the loop: a sender does one thing at a time
 * (connect, handshake, write a chunk, wait for its ack), which reads top to bottom as plain
 * calls, and a chunk is megabytes, so the cost of a thread per flush thread is nothing next to
 * the bytes. weir's tls.c speaks TLS through memory BIOs for the loop's servers; a client on a
 * socket it owns needs none of that.
 *
 * Invariant: a connection that failed in any way is closed, never reused: the next send opens
 * a new one, so a half-read reply or half-written frame can never be mistaken for the next. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fo_internal.h"

double fo_mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void fo_conn_init(fo_conn_t *c)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

void fo_conn_close(fo_conn_t *c)
{
    if (c->ssl) {
        SSL_shutdown(c->ssl); /* one close_notify, not waiting for the peer's */
        SSL_free(c->ssl);
    }
    if (c->fd >= 0) close(c->fd);
    fo_conn_init(c);
}

/* Waits for `events` on fd until `deadline`; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        double left = deadline - fo_mono_now();
        if (left <= 0) return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int ms = left > 3600 ? 3600 * 1000 : (int)(left * 1000) + 1;
        int r = poll(&p, 1, ms);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return -1;
    }
}

static void ssl_reason(char *out, size_t n)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, out, n);
    else
        snprintf(out, n, "%s", errno ? strerror(errno) : "connection closed");
    ERR_clear_error();
}

static int connect_addr(const struct addrinfo *ai, double deadline, bool keepalive_packet)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (keepalive_packet) setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    if (errno != EINPROGRESS) goto fail;
    int w = wait_fd(fd, POLLOUT, deadline);
    if (w <= 0) {
        if (w == 0) errno = ETIMEDOUT;
        goto fail;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) goto fail;
    if (soerr == 0) return fd;
    errno = soerr;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

/* TCP to the server's first address that answers. Resolved on every connect, so a DNS change
 * (a receiver moved) is seen at the next connection, as Fluentd without a DNS cache. */
static int tcp_connect(const fo_opts_t *o, const fo_server_t *s, weir_err_t *err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC}, *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    int rc = getaddrinfo(s->host, port, &hints, &res);
    if (rc != 0) {
        weir_err_set(err, "%s: cannot resolve %s: %s", s->name, s->host, gai_strerror(rc));
        return -1;
    }
    double deadline = fo_mono_now() + o->connect_timeout;
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
        fd = connect_addr(ai, deadline, o->send_keepalive_packet);
    int e = errno;
    freeaddrinfo(res);
    if (fd < 0)
        weir_err_set(err, "%s: cannot connect: %s", s->name,
                     e == ETIMEDOUT ? "no answer within connect_timeout" : strerror(e));
    return fd;
}

int fo_probe(const fo_opts_t *o, const fo_server_t *s, weir_err_t *err)
{
    int fd = tcp_connect(o, s, err);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

/* Drives one SSL call that wants to read or write; 1 go on, 0/-1 failed (err set). */
static int ssl_wait(fo_conn_t *c, int r, double deadline, const char *what, weir_err_t *err)
{
    int e = SSL_get_error(c->ssl, r);
    int w;
    if (e == SSL_ERROR_WANT_READ)
        w = wait_fd(c->fd, POLLIN, deadline);
    else if (e == SSL_ERROR_WANT_WRITE)
        w = wait_fd(c->fd, POLLOUT, deadline);
    else {
        char why[256];
        if (e == SSL_ERROR_ZERO_RETURN) {
            snprintf(why, sizeof why, "the receiver closed the connection");
        } else {
            ssl_reason(why, sizeof why);
            long v = SSL_get_verify_result(c->ssl);
            if (v != X509_V_OK)
                snprintf(why, sizeof why, "certificate verify failed: %s",
                         X509_verify_cert_error_string(v));
        }
        weir_err_set(err, "%s: %s", what, why);
        return -1;
    }
    if (w == 1) return 1;
    weir_err_set(err, "%s: timed out", what);
    return -1;
}

static int tls_start(fo_conn_t *c, const fo_opts_t *o, const fo_server_t *s, weir_err_t *err)
{
    c->ssl = SSL_new(o->ssl_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        weir_err_set(err, "%s: cannot set up TLS", s->name);
        return -1;
    }
    struct in6_addr a6;
    struct in_addr a4;
    bool ip = inet_pton(AF_INET, s->host, &a4) == 1 || inet_pton(AF_INET6, s->host, &a6) == 1;
    if (!ip) SSL_set_tlsext_host_name(c->ssl, s->host); /* SNI takes names only */
    /* OpenSSL 3 matches an IP address against the certificate's IP SANs, a name against DNS */
    if (o->tls_verify_hostname && SSL_set1_host(c->ssl, s->host) != 1) {
        weir_err_set(err, "%s: cannot set the host name to verify", s->name);
        return -1;
    }
    double deadline = fo_mono_now() + o->connect_timeout;
    char what[300];
    snprintf(what, sizeof what, "%s: TLS handshake", s->name);
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(c->ssl);
        if (r == 1) return 0;
        if (ssl_wait(c, r, deadline, what, err) != 1) return -1;
    }
}

int fo_conn_write(fo_conn_t *c, const char *p, size_t n, double timeout, weir_err_t *err)
{
    double deadline = fo_mono_now() + timeout;
    while (n > 0) {
        size_t piece = n > (1u << 30) ? (1u << 30) : n;
        ssize_t w;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, p, (int)piece);
            if (r <= 0) {
                bool reset = SSL_get_error(c->ssl, r) == SSL_ERROR_SYSCALL &&
                             (errno == EPIPE || errno == ECONNRESET);
                if (ssl_wait(c, r, deadline, "send", err) != 1)
                    return reset ? FO_READ_CLOSED : FO_READ_FAILED;
                continue;
            }
            w = r;
        } else {
            w = send(c->fd, p, piece, MSG_NOSIGNAL);
            if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                int r = wait_fd(c->fd, POLLOUT, deadline);
                if (r == 1) continue;
                weir_err_set(err, "send: %s",
                             r == 0 ? "the receiver took nothing within send_timeout"
                                    : strerror(errno));
                return -1;
            }
            if (w < 0) {
                int e = errno;
                weir_err_set(err, "send: %s", strerror(e));
                return e == EPIPE || e == ECONNRESET ? FO_READ_CLOSED : FO_READ_FAILED;
            }
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads what is there (up to n bytes), waiting until the deadline: >0 bytes, 0 EOF (or a
 * reset), FO_READ_TIMEOUT or FO_READ_FAILED. */
static ssize_t conn_read(fo_conn_t *c, char *p, size_t n, double deadline, weir_err_t *err)
{
    for (;;) {
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, p, (int)n);
            if (r > 0) return r;
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == ECONNRESET))
                return 0;
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                int w = wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
                if (w == 1) continue;
                weir_err_set(err, "read: %s", w == 0 ? "no reply in time" : strerror(errno));
                return w == 0 ? FO_READ_TIMEOUT : FO_READ_FAILED;
            }
            ssl_wait(c, r, deadline, "read", err); /* sets err from OpenSSL's reason */
            return FO_READ_FAILED;
        }
        ssize_t r = recv(c->fd, p, n, 0);
        if (r >= 0) return r;
        if (errno == ECONNRESET) return 0;
        if (errno != EAGAIN && errno != EINTR) {
            weir_err_set(err, "read: %s", strerror(errno));
            return FO_READ_FAILED;
        }
        int w = wait_fd(c->fd, POLLIN, deadline);
        if (w != 1) {
            weir_err_set(err, "read: %s", w == 0 ? "no reply in time" : strerror(errno));
            return w == 0 ? FO_READ_TIMEOUT : FO_READ_FAILED;
        }
    }
}

int fo_conn_read_reply(fo_conn_t *c, weir_buf_t *out, double timeout, weir_err_t *err)
{
    double deadline = fo_mono_now() + timeout;
    char buf[FO_REPLY_MAX];
    size_t have = 0;
    out->len = 0;
    for (;;) {
        /* one byte at a time past what is needed would be slow; a reply is alone on the
         * connection (the sender waits for it before sending more), so read what comes */
        ssize_t r = conn_read(c, buf + have, sizeof buf - have, deadline, err);
        if (r < 0) return (int)r;
        if (r == 0) {
            weir_err_set(err, "the receiver closed the connection before its reply");
            return FO_READ_CLOSED;
        }
        have += (size_t)r;
        long n = fo_reply_len(buf, have, err);
        if (n < 0) return FO_READ_FAILED;
        if (n == 0) continue;
        if ((size_t)n != have) {
            weir_err_set(err, "the receiver sent more than one reply");
            return FO_READ_FAILED;
        }
        weir_buf_append(out, buf, have);
        return 0;
    }
}

bool fo_conn_alive(fo_conn_t *c, const fo_opts_t *o)
{
    if (c->fd < 0 || !c->reusable) return false;
    if (o->keepalive_timeout > 0 && fo_mono_now() - c->idle_since > o->keepalive_timeout)
        return false;
    /* an idle connection has nothing to say: readable means closed (EOF, close_notify) or
     * broken */
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return poll(&p, 1, 0) == 0;
}

static int handshake(fo_conn_t *c, const fo_opts_t *o, const fo_server_t *s, weir_err_t *err)
{
    weir_buf_t reply, ping;
    weir_buf_init(&reply);
    weir_buf_init(&ping);
    fo_helo_t helo;
    int rc = -1;
    if (fo_conn_read_reply(c, &reply, o->connect_timeout, err) != 0 ||
        fo_helo_parse(reply.data, reply.len, &helo, err) != 0)
        goto out;
    uint8_t raw[FO_SALT_HEX / 2];
    char salt[FO_SALT_HEX + 1];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        weir_err_set(err, "no random bytes for the handshake's salt");
        goto out;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(salt + 2 * i, 3, "%02x", raw[i]);
    const char *key = s->shared_key ? s->shared_key : o->shared_key;
    fo_ping_build(&helo, o->self_hostname, key, salt, s->username, s->password, &ping);
    if (fo_conn_write(c, ping.data, ping.len, o->send_timeout, err) != 0 ||
        fo_conn_read_reply(c, &reply, o->connect_timeout, err) != 0 ||
        fo_pong_check(reply.data, reply.len, &helo, o->self_hostname, key, salt, err) != 0)
        goto out;
    if (!helo.keepalive) c->reusable = false;
    rc = 0;
out:
    weir_buf_free(&reply);
    weir_buf_free(&ping);
    return rc;
}

int fo_conn_open(fo_conn_t *c, const fo_opts_t *o, const fo_server_t *s, weir_err_t *err)
{
    fo_conn_close(c);
    c->fd = tcp_connect(o, s, err);
    if (c->fd < 0) return -1;
    c->reusable = o->keepalive;
    if (o->tls && tls_start(c, o, s, err) != 0) goto fail;
    if (o->security && handshake(c, o, s, err) != 0) {
        weir_err_prefix(err, "%s: handshake", s->name);
        goto fail;
    }
    return 0;
fail:
    fo_conn_close(c);
    return -1;
}
