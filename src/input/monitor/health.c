/* The health check behind GET /healthz, and the settings every HTTP monitoring source shares.
 *
 * weir is healthy when it can keep its promise: every output's buffer accepts events (it is not
 * at total_limit_size and its disk is not full, which would make inputs stop reading) and no
 * output has failed every delivery for longer than health_failing_threshold. The buffer keeps
 * the time of the first failed write with no success since; a single bad chunk that other
 * chunks overtake does not count, because their success resets it. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "monitor_internal.h"
#include "weir/log.h"

int mon_http_conf_read(mon_http_conf_t *c, weir_conf_section_t *sec, int default_port,
                       weir_err_t *err)
{
    const char *bind = "0.0.0.0";
    int64_t port = default_port;
    c->health_failing = MON_HEALTH_FAILING_DEFAULT;
    if (weir_conf_get_str(sec, "bind", &bind, err) < 0 ||
        weir_conf_get_int(sec, "port", &port, err) < 0 ||
        weir_conf_get_time(sec, "health_failing_threshold", &c->health_failing, err) < 0)
        return -1;
    if (port < 0 || port > 65535) {
        weir_conf_errorf(err, weir_conf_find(sec, "port"), "port must be 0..65535");
        return -1;
    }
    if (c->health_failing <= 0) {
        weir_conf_errorf(err, weir_conf_find(sec, "health_failing_threshold"),
                         "health_failing_threshold must be greater than 0");
        return -1;
    }
    weir_conf_section_t *ssl = weir_conf_child(sec, "ssl", 0);
    if (ssl) {
        weir_conf_section_errorf(err, ssl,
                                 "<ssl> is not supported by weir; use <transport tls> with "
                                 "cert_path and private_key_path");
        return -1;
    }
    weir_conf_section_t *tr = weir_conf_child(sec, "transport", 0);
    if (tr) {
        weir_conf_section_use(tr);
        if (weir_tls_opts_from_conf(&c->tls, tr, err) != 0) return -1;
    }
    c->bind = weir_strdup(bind);
    c->port = (int)port;
    return 0;
}

void mon_http_conf_free(mon_http_conf_t *c)
{
    free(c->bind);
    c->bind = NULL;
    weir_tls_opts_free(&c->tls);
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool mon_health(weir_engine_t *eng, double failing_threshold, weir_buf_t *why)
{
    bool ok = true;
    double now = wall_now();
    for (size_t i = 0; i < weir_engine_plugin_count(eng); i++) {
        const weir_engine_plugin_t *p = weir_engine_plugin_at(eng, i);
        if (strcmp(p->category, "output") != 0) continue;
        weir_output_status_t st;
        weir_plugin_metrics_output_status(p->metrics, &st);
        if (!st.has_buffer) continue;
        if (st.disk_full) {
            weir_buf_printf(why, "output %s: the buffer's disk is full; inputs stopped reading\n",
                            p->plugin_id);
            ok = false;
        } else if (st.total_bytes >= st.total_limit_size) {
            weir_buf_printf(why,
                            "output %s: the buffer is full (%llu bytes, total_limit_size %llu); "
                            "inputs stopped reading\n",
                            p->plugin_id, (unsigned long long)st.total_bytes,
                            (unsigned long long)st.total_limit_size);
            ok = false;
        }
        if (st.failing_since && now - st.failing_since > failing_threshold) {
            weir_buf_printf(why,
                            "output %s: every delivery has failed for %.0f s (threshold %.0f s); "
                            "last error: %s\n",
                            p->plugin_id, now - st.failing_since, failing_threshold,
                            st.last_error[0] ? st.last_error : "unknown");
            ok = false;
        }
    }
    return ok;
}

void mon_health_respond(weir_engine_t *eng, double failing_threshold, mon_response_t *resp)
{
    weir_buf_t why;
    weir_buf_init(&why);
    if (mon_health(eng, failing_threshold, &why)) {
        weir_buf_printf(&resp->body, "ok\n");
    } else {
        resp->status = 503;
        weir_buf_printf(&resp->body, "unhealthy\n");
        weir_buf_append(&resp->body, why.data, why.len);
    }
    weir_buf_free(&why);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if ((c | 32) >= 'a' && (c | 32) <= 'f') return (c | 32) - 'a' + 10;
    return -1;
}

/* Percent-decodes [s, s+n) into out ('+' is a space, as in HTML forms); false if it does not
 * fit. */
static bool url_decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o + 1 >= outlen) return false;
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

bool mon_query_get(const char *query, const char *key, char *out, size_t outlen)
{
    char name[64];
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        if (url_decode(p, klen, name, sizeof name) && strcmp(name, key) == 0) {
            const char *v = eq ? eq + 1 : p + len;
            return url_decode(v, (size_t)(p + len - v), out, outlen);
        }
        p = amp ? amp + 1 : NULL;
    }
    return false;
}
