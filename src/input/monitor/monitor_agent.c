/* <source> @type monitor_agent: Fluentd's plugin status over HTTP.
 *
 *   GET /api/plugins.json   {"plugins":[{"plugin_id", "plugin_category", "type", "config",
 *                           "output_plugin", "buffer_queue_length", "buffer_timekeys",
 *                           "buffer_total_queued_size", "retry_count", "emit_records", ...}]}
 *   GET /api/plugins        the same as LTSV, one plugin per line (objects left out)
 *   GET /healthz            200 "ok" or 503 with the reasons (see health.c)
 *
 * As in Fluentd, inputs come first, then outputs; retry_count is the output's error count;
 * the query parameters with_config=false, with_retry=false, @id=X and @type=X (or type=X)
 * narrow the answer. "config" holds the section's own parameters with every secret masked.
 * Emitting the status as events (`tag`, `emit_interval`) is not supported and is refused. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "monitor_internal.h"
#include "weir/log.h"

typedef struct agent_input {
    weir_engine_t *eng;
    weir_plugin_metrics_t *pm;
    mon_http_conf_t http;
    bool include_config;
    bool include_retry;
    mon_server_t *srv;
} agent_input_t;

/* Ruby's Time#to_s, which is how Fluentd's JSON shows retry times. */
static json_t *ruby_time(double t)
{
    time_t s = (time_t)t;
    struct tm tm;
    localtime_r(&s, &tm);
    char buf[64];
    strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %z", &tm);
    return json_string(buf);
}

static void output_fields(json_t *o, const weir_engine_plugin_t *p, bool with_retry)
{
    weir_output_status_t st;
    weir_plugin_metrics_output_status(p->metrics, &st);
    if (st.has_buffer) {
        json_object_set_new(o, "buffer_queue_length", json_integer((json_int_t)st.queue_length));
        json_t *tk = json_array();
        for (size_t i = 0; i < st.ntimekeys; i++)
            json_array_append_new(tk, json_integer(st.timekeys[i]));
        json_object_set_new(o, "buffer_timekeys", tk);
        json_object_set_new(o, "buffer_total_queued_size",
                            json_integer((json_int_t)st.total_bytes));
    }
    json_object_set_new(o, "retry_count", json_integer((json_int_t)st.num_errors));
    json_object_set_new(o, "emit_records", json_integer((json_int_t)st.emit_records));
    json_object_set_new(o, "emit_count", json_integer((json_int_t)st.emit_count));
    json_object_set_new(o, "write_count", json_integer((json_int_t)st.write_count));
    json_object_set_new(o, "rollback_count", json_integer((json_int_t)st.num_errors));
    json_object_set_new(o, "delivered_records", json_integer((json_int_t)st.delivered_records));
    json_object_set_new(o, "delivered_chunks", json_integer((json_int_t)st.delivered_chunks));
    json_object_set_new(o, "backup_chunks", json_integer((json_int_t)st.backup_chunks));
    if (st.has_buffer) {
        json_object_set_new(o, "buffer_stage_length", json_integer((json_int_t)st.stage_length));
        json_object_set_new(o, "buffer_stage_byte_size", json_integer((json_int_t)st.stage_bytes));
        json_object_set_new(o, "buffer_queue_byte_size", json_integer((json_int_t)st.queue_bytes));
        double free_ratio =
            st.total_bytes >= st.total_limit_size
                ? 0
                : 100.0 * (1.0 - (double)st.total_bytes / (double)st.total_limit_size);
        json_object_set_new(o, "buffer_available_buffer_space_ratios", json_real(free_ratio));
        json_object_set_new(o, "buffer_oldest_chunk_age_seconds", json_real(st.oldest_chunk_age));
    }
    if (!with_retry) return;
    json_t *retry = json_object();
    if (st.retry_steps) {
        json_object_set_new(retry, "start", ruby_time(st.retry_start));
        json_object_set_new(retry, "steps", json_integer(st.retry_steps));
        json_object_set_new(retry, "next_time", ruby_time(st.retry_next));
    }
    json_object_set_new(o, "retry", retry);
}

static json_t *plugin_json(const weir_engine_plugin_t *p, bool with_config, bool with_retry)
{
    json_t *o = json_object();
    json_object_set_new(o, "plugin_id", json_string(p->plugin_id));
    json_object_set_new(o, "plugin_category", json_string(p->category));
    json_object_set_new(o, "type", json_string(p->type));
    if (with_config) {
        json_t *cfg = json_loads(p->config_json, 0, NULL);
        json_object_set_new(o, "config", cfg ? cfg : json_object());
    }
    bool output = strcmp(p->category, "output") == 0;
    json_object_set_new(o, "output_plugin", json_boolean(output));
    if (output) {
        output_fields(o, p, with_retry);
    } else {
        uint64_t events, bytes;
        weir_metrics_input_totals(p->metrics, &events, &bytes);
        json_object_set_new(o, "retry_count", json_null());
        json_object_set_new(o, "emit_records", json_integer((json_int_t)events));
        json_object_set_new(o, "emit_size", json_integer((json_int_t)bytes));
    }
    return o;
}

static bool query_bool(const char *query, const char *key, bool def)
{
    char v[16];
    if (!mon_query_get(query, key, v, sizeof v)) return def;
    return strcmp(v, "false") != 0 && strcmp(v, "0") != 0 && strcmp(v, "no") != 0;
}

static json_t *plugins_json(agent_input_t *in, const char *query)
{
    bool with_config = query_bool(query, "with_config", in->include_config);
    bool with_retry = query_bool(query, "with_retry", in->include_retry);
    char id[256] = "", type[64] = "";
    bool by_id = mon_query_get(query, "@id", id, sizeof id);
    bool by_type = mon_query_get(query, "@type", type, sizeof type) ||
                   mon_query_get(query, "type", type, sizeof type);
    json_t *list = json_array();
    for (size_t i = 0; i < weir_engine_plugin_count(in->eng); i++) {
        const weir_engine_plugin_t *p = weir_engine_plugin_at(in->eng, i);
        if ((by_id && strcmp(p->plugin_id, id) != 0) || (by_type && strcmp(p->type, type) != 0))
            continue;
        json_array_append_new(list, plugin_json(p, with_config, with_retry));
    }
    json_t *root = json_object();
    json_object_set_new(root, "plugins", list);
    return root;
}

/* LTSV as Fluentd's /api/plugins writes it: arrays joined with ',', objects left out, null
 * empty. Tabs and newlines inside a value would break the format; they become spaces. */
static void ltsv_value(weir_buf_t *out, json_t *v)
{
    if (json_is_string(v)) {
        for (const char *s = json_string_value(v); *s; s++)
            weir_buf_putc(out, (*s == '\t' || *s == '\n' || *s == '\r') ? ' ' : *s);
    } else if (json_is_integer(v)) {
        weir_buf_printf(out, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        weir_buf_printf(out, "%g", json_real_value(v));
    } else if (json_is_boolean(v)) {
        weir_buf_printf(out, "%s", json_is_true(v) ? "true" : "false");
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) weir_buf_putc(out, ',');
            ltsv_value(out, json_array_get(v, i));
        }
    }
}

static void render_ltsv(json_t *root, weir_buf_t *out)
{
    json_t *list = json_object_get(root, "plugins");
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *o = json_array_get(list, i);
        const char *key;
        json_t *v;
        bool first = true;
        json_object_foreach(o, key, v)
        {
            if (json_is_object(v)) continue;
            if (!first) weir_buf_putc(out, '\t');
            first = false;
            weir_buf_printf(out, "%s:", key);
            ltsv_value(out, v);
        }
        weir_buf_putc(out, '\n');
    }
}

static void agent_handle(void *arg, const mon_request_t *req, mon_response_t *resp)
{
    agent_input_t *in = arg;
    bool json = strcmp(req->path, "/api/plugins.json") == 0;
    if (json || strcmp(req->path, "/api/plugins") == 0) {
        json_t *root = plugins_json(in, req->query);
        if (json) {
            char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
            resp->content_type = "application/json";
            weir_buf_printf(&resp->body, "%s\n", text ? text : "{}");
            free(text);
        } else {
            render_ltsv(root, &resp->body);
        }
        json_decref(root);
    } else if (strcmp(req->path, "/healthz") == 0) {
        mon_health_respond(in->eng, in->http.health_failing, resp);
    } else {
        resp->status = 404;
        weir_buf_printf(&resp->body, "not found; try /api/plugins.json\n");
    }
}

static void agent_destroy(void *state)
{
    agent_input_t *in = state;
    if (!in) return;
    mon_server_free(in->srv);
    mon_http_conf_free(&in->http);
    free(in);
}

static int agent_conf(agent_input_t *in, weir_conf_section_t *sec, weir_err_t *err)
{
    static const char *const unsupported[] = {"tag", "emit_interval", NULL};
    for (size_t i = 0; unsupported[i]; i++) {
        weir_conf_param_t *p = weir_conf_find(sec, unsupported[i]);
        if (p) {
            weir_conf_errorf(err, p,
                             "%s: weir's monitor_agent does not emit plugin status as events; "
                             "scrape /api/plugins.json or use @type prometheus",
                             unsupported[i]);
            return -1;
        }
    }
    in->include_config = true;
    in->include_retry = true;
    if (mon_http_conf_read(&in->http, sec, 24220, err) != 0 ||
        weir_conf_get_bool(sec, "include_config", &in->include_config, err) < 0 ||
        weir_conf_get_bool(sec, "include_retry", &in->include_retry, err) < 0)
        return -1;
    return 0;
}

static int agent_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    agent_input_t *in = weir_calloc(1, sizeof *in);
    in->eng = eng;
    in->pm = weir_engine_plugin_metrics(eng);
    if (agent_conf(in, sec, err) != 0) {
        weir_err_prefix(err, "<source @type monitor_agent>");
        agent_destroy(in);
        return -1;
    }
    weir_metrics_input_network(in->pm, false);
    *state = in;
    return 0;
}

static int agent_start(void *state, weir_err_t *err)
{
    agent_input_t *in = state;
    mon_server_opts_t o = {
        .name = "monitor_agent",
        .bind = in->http.bind,
        .port = in->http.port,
        .tls = &in->http.tls,
        .handle = agent_handle,
        .arg = in,
        .pm = in->pm,
    };
    in->srv = mon_server_new(weir_engine_loop(in->eng), &o, err);
    if (!in->srv) return -1;
    weir_info("listening on %s:%d (monitor_agent at /api/plugins.json, health at /healthz)",
              in->http.bind, mon_server_port(in->srv));
    return 0;
}

static void agent_stop(void *state, void (*done)(void *), void *arg)
{
    agent_input_t *in = state;
    if (!in->srv) {
        done(arg);
        return;
    }
    mon_server_stop(in->srv, done, arg);
}

const weir_input_ops_t weir_in_monitor_agent_ops = {
    .type = "monitor_agent",
    .create = agent_create,
    .start = agent_start,
    .stop = agent_stop,
    .destroy = agent_destroy,
};
