/* The engine: builds inputs, router and outputs from a configuration tree, runs them on one
 * libuv loop, and stops them in order (inputs first, so nothing new arrives; then outputs,
 * which flush what they hold where configured). */
#ifndef WEIR_ENGINE_H
#define WEIR_ENGINE_H

#include <stdint.h>

#include "weir/common.h"
#include "weir/config.h"
#include "weir/plugin.h"

typedef struct weir_engine_opts {
    bool dry_run;           /* build and validate only; open nothing */
    int log_level_override; /* -1 = use <system> log_level */
} weir_engine_opts_t;

/* Builds everything the configuration names. On error, `err` names the file, line and what is
 * wrong (an unknown @type names the type and the plugins weir has). */
weir_engine_t *weir_engine_new(uv_loop_t *loop, weir_conf_section_t *root,
                               const weir_engine_opts_t *opts, weir_err_t *err);
int weir_engine_start(weir_engine_t *eng, weir_err_t *err);
/* SIGUSR1 */
void weir_engine_flush(weir_engine_t *eng);
/* SIGHUP: installs new_root in place of old_root (the configuration the engine runs now). A
 * configuration that does not build is refused at once (-1, err says why, nothing changed).
 * Otherwise returns 0 and later calls done(arg, installed, why) on the loop thread: installed
 * is false when the new configuration could not start and the old one was put back (`why`).
 * Unchanged <source>s keep their listeners and connections; outputs are rebuilt, file buffers
 * carried over on disk; events arriving meanwhile wait (backpressure), none is dropped.
 * The caller keeps both trees alive until done runs, then frees the one not running. */
int weir_engine_reload(weir_engine_t *eng, weir_conf_section_t *old_root,
                       weir_conf_section_t *new_root,
                       void (*done)(void *arg, bool installed, const char *why), void *arg,
                       weir_err_t *err);
/* Orderly stop; done(arg) runs when every input and output has finished. */
void weir_engine_stop(weir_engine_t *eng, void (*done)(void *arg), void *arg);
void weir_engine_free(weir_engine_t *eng);

/* The plugins, for monitor_agent and the health check: inputs, then outputs, each in
 * configuration order (Fluentd's order). Valid until weir_engine_free. */
typedef struct weir_engine_plugin {
    const char *category;    /* "input" or "output" (Fluentd's plugin_category) */
    const char *plugin_id;   /* @id, or "object:N" as Fluentd names a plugin without one */
    const char *type;        /* @type */
    const char *config_json; /* the section's params as a JSON object, secrets masked */
    weir_plugin_metrics_t *metrics;
} weir_engine_plugin_t;
size_t weir_engine_plugin_count(const weir_engine_t *eng);
/* NULL past the end. */
const weir_engine_plugin_t *weir_engine_plugin_at(const weir_engine_t *eng, size_t i);

#endif
