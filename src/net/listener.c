/* TCP listeners: bind, listen, accept, and hand each accepted connection to the input.
 *
 * A listener may close while connections it accepted live on: those belong to their inputs.
 * The only link back is the list of TLS connections still in their handshake (for
 * on_tls_fail), which the listener empties when it closes, so no connection ever reaches a
 * freed listener. */
#include <stdlib.h>
#include <string.h>

#include "net_internal.h"

int weir_net_resolve_bind(const char *bind, int port, struct sockaddr_storage *out, weir_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!bind || !*bind) bind = "0.0.0.0";
    if (port < 0 || port > 65535) {
        weir_err_set(err, "port %d: expected 0..65535", port);
        return -1;
    }
    char host[INET6_ADDRSTRLEN + 16];
    size_t n = strlen(bind);
    if (n >= 2 && bind[0] == '[' && bind[n - 1] == ']') { /* "[::1]" */
        bind++;
        n -= 2;
    }
    if (n >= sizeof host) goto bad;
    memcpy(host, bind, n);
    host[n] = '\0';
    if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0) return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0) return 0;
bad:
    memset(out, 0, sizeof *out);
    weir_err_set(err,
                 "bind '%s': expected an IPv4 or IPv6 address such as 0.0.0.0, :: or "
                 "127.0.0.1 (host names are not resolved)",
                 bind);
    return -1;
}

static void on_connection(uv_stream_t *server, int status)
{
    weir_listener_t *l = server->data;
    if (l->closing) return;
    if (status < 0) {
        unsigned long suppressed = 0;
        if (!weir_ratelimit_ok(&l->accept_rl, &suppressed)) return;
        if (suppressed)
            weir_warn("net: accepting on port %d failed: %s (%lu more failures not logged)",
                      l->port, uv_strerror(status), suppressed);
        else
            weir_warn("net: accepting on port %d failed: %s", l->port, uv_strerror(status));
        return;
    }
    weir_conn_t *c = net_conn_new(l->loop);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        net_conn_discard(c);
        return;
    }
    net_conn_start(c, l);
}

static void on_listener_closed(uv_handle_t *h)
{
    weir_listener_t *l = h->data;
    weir_tls_ctx_free(l->tls);
    free(l);
}

static int listener_bind(weir_listener_t *l, const weir_listener_opts_t *opts, weir_err_t *err)
{
    struct sockaddr_storage addr;
    if (weir_net_resolve_bind(opts->bind, opts->port, &addr, err) != 0) return -1;
    const char *bind = opts->bind && *opts->bind ? opts->bind : "0.0.0.0";
    /* libuv sets SO_REUSEADDR; a bind error shows up at uv_listen */
    int r = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&l->tcp, opts->backlog > 0 ? opts->backlog : SOMAXCONN,
                      on_connection);
    if (r != 0) {
        weir_err_set(err, "cannot listen on %s port %d: %s", bind, opts->port, uv_strerror(r));
        return -1;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    r = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &len);
    if (r != 0) {
        weir_err_set(err, "cannot read the port bound on %s: %s", bind, uv_strerror(r));
        return -1;
    }
    l->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                               : ((struct sockaddr_in6 *)&bound)->sin6_port);
    return 0;
}

weir_listener_t *weir_listener_new(uv_loop_t *loop, const weir_listener_opts_t *opts,
                                   weir_err_t *err)
{
    if (!opts->on_accept) {
        weir_err_set(err, "listener without on_accept");
        return NULL;
    }
    weir_listener_t *l = weir_calloc(1, sizeof *l);
    l->loop = loop;
    l->linger_timeout = opts->linger_timeout;
    l->keepalive = opts->keepalive;
    l->on_accept = opts->on_accept;
    l->on_tls_fail = opts->on_tls_fail;
    l->data = opts->data;
    l->accept_rl.interval_ms = WEIR_WARN_INTERVAL_MS; /* e.g. EMFILE under a connection flood */
    double hs = opts->tls_handshake_timeout > 0 ? opts->tls_handshake_timeout
                                                : NET_TLS_HANDSHAKE_TIMEOUT_DEFAULT;
    l->hs_timeout_ms = (uint64_t)(hs * 1000.0 + 0.5);
    if (opts->tls && opts->tls->enabled) {
        l->tls = weir_tls_ctx_new(opts->tls, err);
        if (!l->tls) {
            free(l);
            return NULL;
        }
    }
    uv_tcp_init(loop, &l->tcp);
    l->tcp.data = l;
    if (listener_bind(l, opts, err) != 0) {
        /* the handle is registered with the loop: it is freed once the loop runs its close */
        l->closing = true;
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
        return NULL;
    }
    return l;
}

int weir_listener_port(const weir_listener_t *l)
{
    return l->port;
}

void *weir_listener_data(const weir_listener_t *l)
{
    return l->data;
}

void weir_listener_close(weir_listener_t *l)
{
    if (!l || l->closing) return;
    l->closing = true;
    while (l->handshaking)
        net_conn_detach(l->handshaking);
    uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
}
