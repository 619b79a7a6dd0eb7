/* <security> of in_forward: self_hostname, shared_key, user_auth, allow_anonymous_source, with
 * <user> (username, password) and <client> (host | network, shared_key, users) children,
 * validated as Fluentd validates them and with Fluentd's messages.
 *
 * A <client> host is resolved once, here, at configure time (Fluentd's IPSocket.getaddress):
 * the handshake then only compares address bits, and never waits on DNS on the event loop.
 * A network keeps only its prefix bits, as Ruby's IPAddr masks "10.1.2.3/8" to 10.0.0.0/8. */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "forward_internal.h"

#define FWD_NET_TEXT_MAX 128 /* longest "address/prefix" text accepted */

static int need_str(weir_conf_section_t *sec, const char *key, char **out, weir_err_t *err)
{
    const char *v = NULL;
    int r = weir_conf_get_str(sec, key, &v, err);
    if (r < 0) return -1;
    if (r == 0) {
        weir_conf_section_errorf(err, sec, "'%s' parameter is required, in section %s", key,
                                 sec->name);
        return -1;
    }
    *out = weir_strdup(v);
    return 0;
}

static int opt_str(weir_conf_section_t *sec, const char *key, char **out, weir_err_t *err)
{
    const char *v = NULL;
    int r = weir_conf_get_str(sec, key, &v, err);
    if (r < 0) return -1;
    if (r == 1) *out = weir_strdup(v);
    return 0;
}

static void mask_bits(unsigned char *a, size_t n, int prefix)
{
    for (size_t i = 0; i < n; i++, prefix -= 8) {
        if (prefix >= 8) continue;
        a[i] &= prefix <= 0 ? 0 : (unsigned char)(0xff << (8 - prefix));
    }
}

/* An IPv4 dotted netmask ("255.255.0.0") as a prefix length, or -1 if not contiguous. */
static int netmask_prefix(const char *text)
{
    struct in_addr m;
    if (inet_pton(AF_INET, text, &m) != 1) return -1;
    uint32_t v = ntohl(m.s_addr);
    int bits = 0;
    while (bits < 32 && (v & (0x80000000u >> bits)))
        bits++;
    return (bits == 32 || (v << bits) == 0) ? bits : -1;
}

/* Parses "ADDR", "ADDR/LEN" or "IPv4/NETMASK" into c->addr and c->prefix_len. */
static int parse_network(const char *text, fwd_client_t *c)
{
    char buf[FWD_NET_TEXT_MAX];
    size_t len = strlen(text);
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, text, len + 1);
    char *slash = strchr(buf, '/');
    if (slash) *slash++ = '\0';
    memset(&c->addr, 0, sizeof c->addr);
    unsigned char *a;
    int max;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&c->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&c->addr;
    if (inet_pton(AF_INET, buf, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        a = (unsigned char *)&v4->sin_addr;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        a = (unsigned char *)&v6->sin6_addr;
        max = 128;
    } else {
        return -1;
    }
    int prefix = max;
    if (slash) {
        char *end;
        long p = strtol(slash, &end, 10);
        if (*slash != '\0' && *end == '\0' && slash[0] >= '0' && slash[0] <= '9')
            prefix = p > max ? -1 : (int)p;
        else
            prefix = max == 32 ? netmask_prefix(slash) : -1;
        if (prefix < 0) return -1;
    }
    c->prefix_len = prefix;
    mask_bits(a, (size_t)max / 8, prefix);
    return 0;
}

static int resolve_host(const char *host, fwd_client_t *c)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) return -1;
    memset(&c->addr, 0, sizeof c->addr);
    memcpy(&c->addr, res->ai_addr, res->ai_addrlen);
    c->prefix_len = res->ai_family == AF_INET ? 32 : 128;
    freeaddrinfo(res);
    return 0;
}

static int user_from_conf(weir_conf_section_t *u, fwd_user_t *out, weir_err_t *err)
{
    weir_conf_section_use(u);
    if (need_str(u, "username", &out->username, err) < 0) return -1;
    return need_str(u, "password", &out->password, err);
}

static int client_from_conf(weir_conf_section_t *cs, fwd_client_t *c, weir_err_t *err)
{
    char *host = NULL, *network = NULL;
    int rc = -1;
    weir_conf_section_use(cs);
    if (opt_str(cs, "host", &host, err) < 0 || opt_str(cs, "network", &network, err) < 0 ||
        opt_str(cs, "shared_key", &c->shared_key, err) < 0)
        goto done;
    if (weir_conf_get_array(cs, "users", &c->users, &c->n_users, err) < 0) goto done;
    if (host && network) {
        weir_conf_section_errorf(err, cs, "both of 'host' and 'network' are specified for client");
        goto done;
    }
    if (!host && !network) {
        weir_conf_section_errorf(err, cs,
                                 "Either of 'host' and 'network' must be specified for client");
        goto done;
    }
    if (host && resolve_host(host, c) < 0) {
        weir_conf_section_errorf(err, cs, "host '%s' cannot be resolved", host);
        goto done;
    }
    if (network && parse_network(network, c) < 0) {
        weir_conf_section_errorf(err, cs, "network '%s' address format is invalid", network);
        goto done;
    }
    rc = 0;
done:
    free(host);
    free(network);
    return rc;
}

static size_t count_children(weir_conf_section_t *sec, const char *name)
{
    size_t n = 0;
    while (weir_conf_child(sec, name, n))
        n++;
    return n;
}

int fwd_security_from_conf(fwd_security_t *s, weir_conf_section_t *sec, weir_err_t *err)
{
    memset(s, 0, sizeof *s);
    s->allow_anonymous_source = true;
    if (!sec) return 0;
    s->enabled = true;
    weir_conf_section_use(sec);
    if (need_str(sec, "self_hostname", &s->self_hostname, err) < 0 ||
        need_str(sec, "shared_key", &s->shared_key, err) < 0 ||
        weir_conf_get_bool(sec, "user_auth", &s->user_auth, err) < 0 ||
        weir_conf_get_bool(sec, "allow_anonymous_source", &s->allow_anonymous_source, err) < 0)
        goto err;

    size_t nu = count_children(sec, "user");
    s->users = weir_calloc(nu, sizeof *s->users);
    for (; s->n_users < nu; s->n_users++)
        if (user_from_conf(weir_conf_child(sec, "user", s->n_users), &s->users[s->n_users], err) <
            0) {
            s->n_users++; /* free the half-read one too */
            goto err;
        }

    size_t nc = count_children(sec, "client");
    s->clients = weir_calloc(nc, sizeof *s->clients);
    for (; s->n_clients < nc; s->n_clients++)
        if (client_from_conf(weir_conf_child(sec, "client", s->n_clients),
                             &s->clients[s->n_clients], err) < 0) {
            s->n_clients++;
            goto err;
        }

    if (s->user_auth && s->n_users == 0) {
        weir_conf_section_errorf(err, sec, "<user> sections required if user_auth enabled");
        goto err;
    }
    if (!s->allow_anonymous_source && s->n_clients == 0) {
        weir_conf_section_errorf(err, sec,
                                 "<client> sections required if allow_anonymous_source disabled");
        goto err;
    }
    return 0;
err:
    fwd_security_free(s);
    return -1;
}
