/* The <match @type forward> section, with Fluentd's out_forward names and defaults, and the
 * parameters weir refuses by name (each with the reason, so a user knows what to change).
 * Validates everything; opens nothing (the TLS context is built at start). */
#include <stdlib.h>
#include <string.h>

#include "fo_internal.h"
#include "weir/log.h"

/* Fluentd's defaults */
#define FO_DEFAULT_PORT 24224
#define FO_DEFAULT_WEIGHT 60
#define FO_DEFAULT_ACK_TIMEOUT 190.0
#define FO_DEFAULT_SEND_TIMEOUT 60.0
#define FO_DEFAULT_HEARTBEAT_INTERVAL 1.0
#define FO_DEFAULT_RECOVER_WAIT 10.0
/* Fluentd leaves connect_timeout to the OS (minutes); weir bounds it so that a dead server is
 * given up in time to fail over */
#define FO_DEFAULT_CONNECT_TIMEOUT 10.0

/* Parameters weir refuses, each with why. */
static const struct {
    const char *key;
    const char *why;
} refused[] = {
    {"tls_cert_thumbprint", "Windows certificate stores do not exist here; use tls_cert_path"},
    {"tls_cert_logical_store_name",
     "Windows certificate stores do not exist here; use tls_cert_path"},
    {"tls_cert_use_enterprise_store",
     "Windows certificate stores do not exist here; use tls_cert_path"},
    {"verify_connection_at_startup",
     "weir does not contact receivers at startup; a server that is down is failed over and "
     "retried, its chunks wait on disk"},
};

static int refuse_params(weir_conf_section_t *sec, weir_err_t *err)
{
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        weir_conf_param_t *p = weir_conf_find(sec, refused[i].key);
        if (!p) continue;
        weir_conf_errorf(err, p, "%s is not supported by weir's forward output: %s", refused[i].key,
                         refused[i].why);
        return -1;
    }
    if (weir_conf_child(sec, "service_discovery", 0)) {
        weir_conf_section_errorf(err, weir_conf_child(sec, "service_discovery", 0),
                                 "<service_discovery> is not supported by weir's forward "
                                 "output: list the receivers in <server> sections");
        return -1;
    }
    return 0;
}

/* Parameters weir takes and that change nothing, with the reason logged at info. */
static int accept_noops(weir_conf_section_t *sec, weir_err_t *err)
{
    static const char *const noops[] = {
        "phi_failure_detector",      "phi_threshold",   "hard_timeout",
        "expire_dns_cache",          "dns_round_robin", "ignore_network_errors_at_startup",
        "ack_response_timeout_reset"};
    for (size_t i = 0; i < sizeof noops / sizeof noops[0]; i++) {
        const char *v;
        if (weir_conf_get_str(sec, noops[i], &v, err) < 0) return -1;
        weir_conf_param_t *p = weir_conf_find(sec, noops[i]);
        if (p)
            weir_info("%s:%d: %s is accepted and changes nothing in weir (see "
                      "docs/forward-output.md)",
                      p->file ? p->file : "", p->line, noops[i]);
    }
    return 0;
}

static int need_str(weir_conf_section_t *s, const char *key, char **out, weir_err_t *err)
{
    const char *v = NULL;
    if (weir_conf_get_str(s, key, &v, err) < 0) return -1;
    if (!v || !*v) {
        weir_conf_section_errorf(err, s, "<%s> needs '%s'", s->name, key);
        return -1;
    }
    *out = weir_strdup(v);
    return 0;
}

static int security_from_conf(fo_opts_t *o, weir_conf_section_t *sec, weir_err_t *err)
{
    weir_conf_section_t *s = weir_conf_child(sec, "security", 0);
    if (!s) return 0;
    weir_conf_section_use(s);
    o->security = true;
    if (need_str(s, "self_hostname", &o->self_hostname, err) < 0 ||
        need_str(s, "shared_key", &o->shared_key, err) < 0)
        return -1;
    if (strlen(o->self_hostname) > FO_HOSTNAME_MAX) {
        weir_conf_errorf(err, weir_conf_find(s, "self_hostname"),
                         "self_hostname is longer than %d bytes", FO_HOSTNAME_MAX);
        return -1;
    }
    return 0;
}

static int tls_from_conf(fo_opts_t *o, weir_conf_section_t *sec, weir_err_t *err)
{
    static const char *const transports[] = {"tcp", "tls", NULL};
    int t = 0;
    if (weir_conf_get_enum(sec, "transport", transports, &t, err) < 0) return -1;
    o->tls = t == 1;
    weir_tls_opts_t *to = &o->tls_opts;
    static const struct {
        const char *key;
        size_t off;
    } strs[] = {
        {"tls_version", offsetof(weir_tls_opts_t, version)},
        {"tls_min_version", offsetof(weir_tls_opts_t, min_version)},
        {"tls_max_version", offsetof(weir_tls_opts_t, max_version)},
        {"tls_ciphers", offsetof(weir_tls_opts_t, ciphers)},
        {"tls_client_cert_path", offsetof(weir_tls_opts_t, cert_path)},
        {"tls_client_private_key_path", offsetof(weir_tls_opts_t, private_key_path)},
        {"tls_client_private_key_passphrase", offsetof(weir_tls_opts_t, private_key_passphrase)},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        const char *v = NULL;
        if (weir_conf_get_str(sec, strs[i].key, &v, err) < 0) return -1;
        if (v) *(char **)((char *)to + strs[i].off) = weir_strdup(v);
    }
    o->tls_verify_hostname = true;
    if (weir_conf_get_bool(sec, "tls_insecure_mode", &to->insecure, err) < 0 ||
        weir_conf_get_bool(sec, "tls_allow_self_signed_cert", &o->tls_allow_self_signed, err) < 0 ||
        weir_conf_get_bool(sec, "tls_verify_hostname", &o->tls_verify_hostname, err) < 0 ||
        weir_conf_get_array(sec, "tls_cert_path", &o->tls_ca_paths, &o->n_tls_ca, err) < 0)
        return -1;
    if (to->cert_path && !to->private_key_path) {
        weir_conf_errorf(err, weir_conf_find(sec, "tls_client_cert_path"),
                         "tls_client_cert_path needs tls_client_private_key_path");
        return -1;
    }
    const char *vs[] = {to->version, to->min_version, to->max_version};
    for (int i = 0; i < 3; i++) {
        if (!vs[i] || weir_tls_version_parse(vs[i])) continue;
        weir_conf_section_errorf(err, sec, "unknown TLS version '%s': expected TLSv1_2 or TLSv1_3",
                                 vs[i]);
        return -1;
    }
    return 0;
}

int fo_opts_from_conf(fo_opts_t *o, weir_conf_section_t *sec, weir_err_t *err)
{
    static const char *const heartbeats[] = {"transport", "tcp", "none", "udp", NULL};
    static const char *const compress[] = {"text", "gzip", NULL};
    memset(o, 0, sizeof *o);
    o->ack_timeout = FO_DEFAULT_ACK_TIMEOUT;
    o->send_timeout = FO_DEFAULT_SEND_TIMEOUT;
    o->connect_timeout = FO_DEFAULT_CONNECT_TIMEOUT;
    o->heartbeat_interval = FO_DEFAULT_HEARTBEAT_INTERVAL;
    o->recover_wait = FO_DEFAULT_RECOVER_WAIT;
    int hb = 0, comp = 0;
    bool time_as_integer = false;
    if (refuse_params(sec, err) < 0 || accept_noops(sec, err) < 0) return -1;
    if (weir_conf_get_bool(sec, "require_ack_response", &o->require_ack, err) < 0 ||
        weir_conf_get_time(sec, "ack_response_timeout", &o->ack_timeout, err) < 0 ||
        weir_conf_get_time(sec, "send_timeout", &o->send_timeout, err) < 0 ||
        weir_conf_get_time(sec, "connect_timeout", &o->connect_timeout, err) < 0 ||
        weir_conf_get_enum(sec, "heartbeat_type", heartbeats, &hb, err) < 0 ||
        weir_conf_get_time(sec, "heartbeat_interval", &o->heartbeat_interval, err) < 0 ||
        weir_conf_get_time(sec, "recover_wait", &o->recover_wait, err) < 0 ||
        weir_conf_get_bool(sec, "keepalive", &o->keepalive, err) < 0 ||
        weir_conf_get_time(sec, "keepalive_timeout", &o->keepalive_timeout, err) < 0 ||
        weir_conf_get_enum(sec, "compress", compress, &comp, err) < 0 ||
        weir_conf_get_bool(sec, "send_keepalive_packet", &o->send_keepalive_packet, err) < 0 ||
        weir_conf_get_bool(sec, "time_as_integer", &time_as_integer, err) < 0)
        return -1;
    if (hb == 3) {
        weir_conf_errorf(err, weir_conf_find(sec, "heartbeat_type"),
                         "heartbeat_type udp is not supported by weir's forward output: use "
                         "transport (a TCP connect, Fluentd's default) or none");
        return -1;
    }
    if (time_as_integer) {
        weir_conf_errorf(err, weir_conf_find(sec, "time_as_integer"),
                         "time_as_integer true is not supported by weir's forward output: weir "
                         "sends Fluentd's EventTime (nanoseconds), which every Fluentd since "
                         "0.14 and Fluent Bit read");
        return -1;
    }
    o->heartbeat = hb <= 1;
    o->gzip = comp == 1;
    const struct {
        const char *key;
        double v, min;
    } positive[] = {
        {"ack_response_timeout", o->ack_timeout, 0.001},
        {"send_timeout", o->send_timeout, 0.001},
        {"connect_timeout", o->connect_timeout, 0.001},
        {"heartbeat_interval", o->heartbeat_interval, 0.001},
        {"recover_wait", o->recover_wait, 0},
        {"keepalive_timeout", o->keepalive_timeout, 0},
    };
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++) {
        if (positive[i].v >= positive[i].min) continue;
        weir_conf_errorf(err, weir_conf_find(sec, positive[i].key), "%s must be positive",
                         positive[i].key);
        return -1;
    }
    if (security_from_conf(o, sec, err) < 0 || tls_from_conf(o, sec, err) < 0) return -1;
    return 0;
}

static int server_from_conf(weir_conf_section_t *s, fo_server_t *srv, weir_err_t *err)
{
    weir_conf_section_use(s);
    const char *host = NULL, *name = NULL, *key = NULL, *user = "", *pass = "";
    int64_t port = FO_DEFAULT_PORT;
    srv->weight = FO_DEFAULT_WEIGHT;
    if (weir_conf_get_str(s, "host", &host, err) < 0 ||
        weir_conf_get_int(s, "port", &port, err) < 0 ||
        weir_conf_get_str(s, "name", &name, err) < 0 ||
        weir_conf_get_int(s, "weight", &srv->weight, err) < 0 ||
        weir_conf_get_bool(s, "standby", &srv->standby, err) < 0 ||
        weir_conf_get_str(s, "shared_key", &key, err) < 0 ||
        weir_conf_get_str(s, "username", &user, err) < 0 ||
        weir_conf_get_str(s, "password", &pass, err) < 0)
        return -1;
    if (!host || !*host) {
        weir_conf_section_errorf(err, s, "<server> needs 'host'");
        return -1;
    }
    if (port < 1 || port > 65535) {
        weir_conf_errorf(err, weir_conf_find(s, "port"), "port must be 1..65535");
        return -1;
    }
    /* weights sum in an int64 for the round robin: bound them well inside it */
    if (srv->weight < 0 || srv->weight > 1000000) {
        weir_conf_errorf(err, weir_conf_find(s, "weight"), "weight must be 0..1000000");
        return -1;
    }
    srv->host = weir_strdup(host);
    srv->port = (int)port;
    if (name) {
        srv->name = weir_strdup(name);
    } else {
        weir_buf_t b;
        weir_buf_init(&b);
        weir_buf_printf(&b, "%s:%d", host, (int)port);
        srv->name = b.data;
    }
    srv->shared_key = key ? weir_strdup(key) : NULL;
    srv->username = weir_strdup(user);
    srv->password = weir_strdup(pass);
    srv->available = true;
    return 0;
}

int fo_servers_from_conf(weir_conf_section_t *sec, fo_server_t **out, size_t *n, weir_err_t *err)
{
    size_t count = 0;
    while (weir_conf_child(sec, "server", count))
        count++;
    if (count == 0) {
        weir_conf_section_errorf(err, sec, "@type forward needs at least one <server>");
        return -1;
    }
    if (count > FO_MAX_SERVERS) {
        weir_conf_section_errorf(err, sec, "@type forward takes at most %d <server> sections",
                                 FO_MAX_SERVERS);
        return -1;
    }
    fo_server_t *s = weir_calloc(count, sizeof *s);
    for (size_t i = 0; i < count; i++) {
        if (server_from_conf(weir_conf_child(sec, "server", i), &s[i], err) == 0) continue;
        fo_servers_free(s, count);
        return -1;
    }
    *out = s;
    *n = count;
    return 0;
}

void fo_servers_free(fo_server_t *s, size_t n)
{
    if (!s) return;
    for (size_t i = 0; i < n; i++) {
        free(s[i].host);
        free(s[i].name);
        free(s[i].shared_key);
        free(s[i].username);
        free(s[i].password);
    }
    free(s);
}

void fo_opts_free(fo_opts_t *o)
{
    free(o->self_hostname);
    free(o->shared_key);
    weir_tls_opts_free(&o->tls_opts);
    weir_conf_strv_free(o->tls_ca_paths, o->n_tls_ca);
    if (o->ssl_ctx) SSL_CTX_free(o->ssl_ctx);
    memset(o, 0, sizeof *o);
}
