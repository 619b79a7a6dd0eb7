/* fluent-plugin-prometheus's sources, on weir's metrics registry.
 *
 *   <source> @type prometheus            serves the registry at metrics_path (and, since weir
 *                                        runs one process, the same at aggregated_metrics_path)
 *                                        plus GET /healthz and the status page at / (see
 *                                        status_page.c), over HTTP or <transport tls>.
 *   <source> @type prometheus_output_monitor
 *                                        accepted for compatibility: every fluentd_output_status_*
 *                                        family it turns on in Fluentd is always exported by weir.
 *   <source> @type prometheus_monitor    adds fluentd_status_buffer_queue_length,
 *                                        _buffer_total_bytes, _retry_count (and the timekeys)
 *                                        with plugin_category, computed at scrape time.
 *
 * Fluentd's monitors poll every `interval`; weir's values are read when scraped, so `interval`
 * is accepted and has no effect. `<labels>` (extra labels on every series) is not supported
 * and is refused with that reason. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "monitor_internal.h"
#include "weir/log.h"

/* ---- @type prometheus ---------------------------------------------------------------------- */

typedef struct prom_input {
    weir_engine_t *eng;
    weir_plugin_metrics_t *pm;
    mon_http_conf_t http;
    char *metrics_path;
    char *aggregated_path;
    bool gzip;
    mon_server_t *srv;
} prom_input_t;

static void prom_handle(void *arg, const mon_request_t *req, mon_response_t *resp)
{
    prom_input_t *in = arg;
    if (strcmp(req->path, in->metrics_path) == 0 || strcmp(req->path, in->aggregated_path) == 0) {
        resp->content_type = WEIR_METRICS_CONTENT_TYPE;
        resp->allow_gzip = in->gzip;
        weir_metrics_render(weir_engine_metrics(in->eng), &resp->body);
    } else if (strcmp(req->path, "/healthz") == 0) {
        mon_health_respond(in->eng, in->http.health_failing, resp);
    } else if (mon_status_respond(in->eng, in->metrics_path, req, resp)) {
        return;
    } else {
        resp->status = 404;
        weir_buf_printf(&resp->body, "not found; metrics are at %s\n", in->metrics_path);
    }
}

static int get_path(weir_conf_section_t *sec, const char *key, const char *def, char **out,
                    weir_err_t *err)
{
    const char *v = def;
    if (weir_conf_get_str(sec, key, &v, err) < 0) return -1;
    if (v[0] != '/') {
        weir_conf_errorf(err, weir_conf_find(sec, key), "%s must start with '/'", key);
        return -1;
    }
    /* weir's own paths on this port: the status page with its assets, and the health check */
    if (strcmp(v, "/") == 0 || strcmp(v, "/healthz") == 0 || strncmp(v, "/status/", 8) == 0) {
        weir_conf_errorf(err, weir_conf_find(sec, key),
                         "%s %s is taken by weir (the status page is at / and /status/, the "
                         "health check at /healthz); choose another path",
                         key, v);
        return -1;
    }
    *out = weir_strdup(v);
    return 0;
}

static void prom_destroy(void *state)
{
    prom_input_t *in = state;
    if (!in) return;
    mon_server_free(in->srv);
    mon_http_conf_free(&in->http);
    free(in->metrics_path);
    free(in->aggregated_path);
    free(in);
}

static int prom_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    static const char *const encodings[] = {"identity", "gzip", NULL};
    prom_input_t *in = weir_calloc(1, sizeof *in);
    in->eng = eng;
    in->pm = weir_engine_plugin_metrics(eng);
    int enc = 0;
    if (mon_http_conf_read(&in->http, sec, 24231, err) != 0 ||
        get_path(sec, "metrics_path", "/metrics", &in->metrics_path, err) != 0 ||
        get_path(sec, "aggregated_metrics_path", "/aggregated_metrics", &in->aggregated_path,
                 err) != 0 ||
        weir_conf_get_enum(sec, "content_encoding", encodings, &enc, err) < 0) {
        weir_err_prefix(err, "<source @type prometheus>");
        prom_destroy(in);
        return -1;
    }
    in->gzip = enc == 1;
    weir_metrics_input_network(in->pm, false);
    *state = in;
    return 0;
}

static int prom_start(void *state, weir_err_t *err)
{
    prom_input_t *in = state;
    mon_server_opts_t o = {
        .name = "prometheus",
        .bind = in->http.bind,
        .port = in->http.port,
        .tls = &in->http.tls,
        .handle = prom_handle,
        .arg = in,
        .pm = in->pm,
    };
    in->srv = mon_server_new(weir_engine_loop(in->eng), &o, err);
    if (!in->srv) return -1;
    weir_info("listening on %s:%d (prometheus metrics at %s%s, health at /healthz)", in->http.bind,
              mon_server_port(in->srv), in->metrics_path, in->http.tls.enabled ? " over TLS" : "");
    return 0;
}

static void prom_stop(void *state, void (*done)(void *), void *arg)
{
    prom_input_t *in = state;
    if (!in->srv) {
        done(arg);
        return;
    }
    mon_server_stop(in->srv, done, arg);
}

const weir_input_ops_t weir_in_prometheus_ops = {
    .type = "prometheus",
    .create = prom_create,
    .start = prom_start,
    .stop = prom_stop,
    .destroy = prom_destroy,
};

/* ---- the monitors -------------------------------------------------------------------------- */

typedef struct prom_monitor {
    weir_engine_t *eng;
    bool plugin_category; /* prometheus_monitor: its own families, with plugin_category */
} prom_monitor_t;

static int monitor_conf(weir_conf_section_t *sec, const char *type, bool *gauge_all_set,
                        weir_err_t *err)
{
    double interval = 5;
    if (weir_conf_get_time(sec, "interval", &interval, err) < 0) return -1;
    weir_conf_section_t *labels = weir_conf_child(sec, "labels", 0);
    if (labels) {
        weir_conf_section_errorf(err, labels,
                                 "<labels> in @type %s is not supported by weir; add the labels "
                                 "with Prometheus relabelling instead",
                                 type);
        return -1;
    }
    if (!gauge_all_set) return 0;
    bool gauge_all = true;
    int r = weir_conf_get_bool(sec, "gauge_all", &gauge_all, err);
    if (r < 0) return -1;
    *gauge_all_set = r == 1 && gauge_all;
    return 0;
}

static double status_value(void *arg, int which)
{
    weir_output_status_t st;
    weir_plugin_metrics_output_status(arg, &st);
    switch (which) {
    case 0:
        return st.has_buffer ? (double)st.queue_length : NAN;
    case 1:
        return st.has_buffer ? (double)st.total_bytes : NAN;
    case 2:
        return (double)st.num_errors; /* Fluentd's retry_count is its num_errors */
    case 3:
        return st.ntimekeys ? (double)st.timekeys[0] : NAN;
    default:
        return st.ntimekeys ? (double)st.timekeys[st.ntimekeys - 1] : NAN;
    }
}

static double s_queue_length(void *arg)
{
    return status_value(arg, 0);
}

static double s_total_bytes(void *arg)
{
    return status_value(arg, 1);
}

static double s_retry_count(void *arg)
{
    return status_value(arg, 2);
}

static double s_oldest_timekey(void *arg)
{
    return status_value(arg, 3);
}

static double s_newest_timekey(void *arg)
{
    return status_value(arg, 4);
}

/* prometheus_monitor's families, one series per output, read from the output's status. */
static void register_status_families(prom_monitor_t *m)
{
    static const struct {
        const char *name, *help;
        weir_gauge_fn fn;
    } fams[] = {
        {"fluentd_status_buffer_queue_length", "Current buffer queue length.", s_queue_length},
        {"fluentd_status_buffer_total_bytes", "Current total size of queued buffers.",
         s_total_bytes},
        {"fluentd_status_retry_count", "Current retry counts.", s_retry_count},
        {"fluentd_status_buffer_oldest_timekey", "Oldest timekey in buffer.", s_oldest_timekey},
        {"fluentd_status_buffer_newest_timekey", "Newest timekey in buffer.", s_newest_timekey},
    };
    weir_metrics_t *reg = weir_engine_metrics(m->eng);
    for (size_t i = 0; i < weir_engine_plugin_count(m->eng); i++) {
        const weir_engine_plugin_t *p = weir_engine_plugin_at(m->eng, i);
        if (strcmp(p->category, "output") != 0) continue;
        const char *labels[] = {"plugin_id", p->plugin_id, "plugin_category", p->category, "type",
                                p->type,     NULL};
        for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++)
            weir_metrics_gauge_fn(reg, m, fams[f].name, fams[f].help, labels, fams[f].fn,
                                  p->metrics);
    }
}

static int monitor_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state,
                          weir_err_t *err, bool with_status)
{
    const char *type = with_status ? "prometheus_monitor" : "prometheus_output_monitor";
    bool gauge_all = false;
    if (monitor_conf(sec, type, with_status ? NULL : &gauge_all, err) != 0) {
        weir_err_prefix(err, "<source @type %s>", type);
        return -1;
    }
    if (gauge_all)
        weir_info("prometheus_output_monitor: gauge_all true has no effect; weir exports the "
                  "fluentd_output_status_* counts as counters");
    prom_monitor_t *m = weir_calloc(1, sizeof *m);
    m->eng = eng;
    m->plugin_category = with_status;
    *state = m;
    return 0;
}

static int pm_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    return monitor_create(eng, sec, state, err, true);
}

static int pom_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    return monitor_create(eng, sec, state, err, false);
}

/* Outputs all exist when inputs start, so the series can be registered now. */
static int monitor_start(void *state, weir_err_t *err)
{
    prom_monitor_t *m = state;
    if (m->plugin_category) register_status_families(m);
    return 0;
}

static void monitor_stop(void *state, void (*done)(void *), void *arg)
{
    done(arg);
}

static void monitor_destroy(void *state)
{
    prom_monitor_t *m = state;
    if (!m) return;
    weir_metrics_unregister(weir_engine_metrics(m->eng), m);
    free(m);
}

const weir_input_ops_t weir_in_prometheus_monitor_ops = {
    .type = "prometheus_monitor",
    .create = pm_create,
    .start = monitor_start,
    .stop = monitor_stop,
    .destroy = monitor_destroy,
};

const weir_input_ops_t weir_in_prometheus_output_monitor_ops = {
    .type = "prometheus_output_monitor",
    .create = pom_create,
    .start = monitor_start,
    .stop = monitor_stop,
    .destroy = monitor_destroy,
};
