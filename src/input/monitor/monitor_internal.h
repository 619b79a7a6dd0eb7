/* What the monitoring sources share: a small HTTP/1.1 server for GET requests on weir's
 * ingest-connection layer with in_http's request reader (httpd.c), the settings every HTTP
 * monitoring source reads, the health check (health.c) and the status page (status_page.c). The
 * sources themselves are prometheus.c
 * (`prometheus`, `prometheus_monitor`, `prometheus_output_monitor`) and monitor_agent.c
 * (`monitor_agent`). */
#ifndef WEIR_MONITOR_INTERNAL_H
#define WEIR_MONITOR_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "weir/common.h"
#include "weir/engine.h"
#include "weir/net.h"

/* Limits on what a client may send; a monitoring request is a GET with a short URL. */
#define MON_MAX_URL 4096                 /* 414 past it */
#define MON_MAX_HEADER_BYTES (16 * 1024) /* 431 past it */
#define MON_MAX_BODY (64 * 1024)         /* 413 past it (a body is read and ignored) */
#define MON_MAX_CONNS 64          /* more are refused at once (the layer's max_connections) */
#define MON_IDLE_TIMEOUT_MS 30000 /* a keep-alive connection idle this long is closed */
#define MON_HEALTH_FAILING_DEFAULT 300.0 /* seconds: health_failing_threshold */

typedef struct mon_request {
    int method;        /* enum http_method */
    const char *path;  /* without the query; NUL-terminated */
    const char *query; /* after '?', "" if none */
    bool accept_gzip;
} mon_request_t;

typedef struct mon_response {
    int status;
    const char *content_type;
    weir_buf_t body;
    bool allow_gzip;           /* compress when the client accepts gzip */
    const char *extra_headers; /* NULL or static header lines, each ending in "\r\n" */
} mon_response_t;

/* Fills `resp` (status 200, text/plain and an empty body on entry). Loop thread. */
typedef void (*mon_handler_fn)(void *arg, const mon_request_t *req, mon_response_t *resp);

typedef struct mon_server mon_server_t;

typedef struct mon_server_opts {
    const char *name; /* for logs: "prometheus" */
    const char *bind;
    int port;
    const weir_tls_opts_t *tls; /* NULL or !enabled: plain TCP */
    mon_handler_fn handle;
    void *arg;
    weir_plugin_metrics_t *pm; /* connections and TLS failures are counted here */
} mon_server_opts_t;

mon_server_t *mon_server_new(uv_loop_t *loop, const mon_server_opts_t *o, weir_err_t *err);
int mon_server_port(const mon_server_t *s);
/* Stops accepting, closes every connection (a response being written is flushed first), then
 * calls done(arg) once. */
void mon_server_stop(mon_server_t *s, void (*done)(void *), void *arg);
/* Frees the server; connections still open are cut. The memory goes once the loop has run
 * the close callbacks. */
void mon_server_free(mon_server_t *s);

/* The settings of an HTTP monitoring source: bind, port, <transport tls> and
 * health_failing_threshold. */
typedef struct mon_http_conf {
    char *bind;
    int port;
    weir_tls_opts_t tls;
    double health_failing;
} mon_http_conf_t;
int mon_http_conf_read(mon_http_conf_t *c, weir_conf_section_t *sec, int default_port,
                       weir_err_t *err);
void mon_http_conf_free(mon_http_conf_t *c);

/* True when weir can do its job: no output's buffer refuses events (total_limit_size reached
 * or disk full) and no output's deliveries have failed continuously for longer than
 * `failing_threshold` seconds. Otherwise false, with one line per reason appended to `why`. */
bool mon_health(weir_engine_t *eng, double failing_threshold, weir_buf_t *why);
/* GET /healthz: 200 "ok" or 503 with the reasons. */
void mon_health_respond(weir_engine_t *eng, double failing_threshold, mon_response_t *resp);

/* The status page (status_page.c): GET /, its script and style, and /status/errors.json, the
 * outputs' last error texts. `metrics_path` is where the page's script reads the metrics.
 * Returns false, leaving `resp` alone, for any other path. */
bool mon_status_respond(weir_engine_t *eng, const char *metrics_path, const mon_request_t *req,
                        mon_response_t *resp);

/* The value of `key` in a query string ("a=1&b=x%20y"), percent-decoded into `out`. Returns
 * false when the key is absent or the value does not fit. */
bool mon_query_get(const char *query, const char *key, char *out, size_t outlen);

#endif
