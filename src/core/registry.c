/* The built-in plugins, by the @type names Fluentd users write. Adding a plugin means adding
 * its ops here; nothing is loaded at run time. */
#include <string.h>

#include "weir/plugin.h"

extern const weir_input_ops_t weir_in_forward_ops;
extern const weir_input_ops_t weir_in_http_ops;
extern const weir_input_ops_t weir_in_prometheus_ops;
extern const weir_input_ops_t weir_in_prometheus_monitor_ops;
extern const weir_input_ops_t weir_in_prometheus_output_monitor_ops;
extern const weir_input_ops_t weir_in_monitor_agent_ops;
extern const weir_output_ops_t weir_out_null_ops;
extern const weir_output_ops_t weir_out_stdout_ops;
extern const weir_output_ops_t weir_out_file_ops;
extern const weir_output_ops_t weir_out_s3_ops;
extern const weir_filter_ops_t weir_filter_dedupe_ops;
extern const weir_output_ops_t weir_out_copy_ops;
extern const weir_output_ops_t weir_out_relabel_ops;
extern const weir_output_ops_t weir_out_forward_ops;
extern const weir_filter_ops_t weir_filter_grep_ops;
extern const weir_filter_ops_t weir_filter_record_transformer_ops;
extern const weir_filter_ops_t weir_filter_stdout_ops;

static const weir_input_ops_t *const inputs[] = {
    &weir_in_forward_ops,
    &weir_in_http_ops,
    &weir_in_prometheus_ops,
    &weir_in_prometheus_monitor_ops,
    &weir_in_prometheus_output_monitor_ops,
    &weir_in_monitor_agent_ops,
    NULL,
};

static const weir_output_ops_t *const outputs[] = {
    &weir_out_null_ops, &weir_out_stdout_ops,  &weir_out_file_ops,    &weir_out_s3_ops,
    &weir_out_copy_ops, &weir_out_relabel_ops, &weir_out_forward_ops, NULL,
};

static const weir_filter_ops_t *const filters[] = {
    &weir_filter_dedupe_ops,
    &weir_filter_grep_ops,
    &weir_filter_record_transformer_ops,
    &weir_filter_stdout_ops,
    NULL,
};

const weir_input_ops_t *weir_input_find(const char *type)
{
    for (size_t i = 0; inputs[i]; i++)
        if (strcmp(inputs[i]->type, type) == 0) return inputs[i];
    return NULL;
}

const weir_output_ops_t *weir_output_find(const char *type)
{
    for (size_t i = 0; outputs[i]; i++)
        if (strcmp(outputs[i]->type, type) == 0) return outputs[i];
    return NULL;
}

const weir_filter_ops_t *weir_filter_find(const char *type)
{
    for (size_t i = 0; filters[i]; i++)
        if (strcmp(filters[i]->type, type) == 0) return filters[i];
    return NULL;
}

static const char *type_at(const char *category, size_t i)
{
    if (strcmp(category, "input") == 0) return inputs[i] ? inputs[i]->type : NULL;
    if (strcmp(category, "filter") == 0) return filters[i] ? filters[i]->type : NULL;
    return outputs[i] ? outputs[i]->type : NULL;
}

void weir_plugin_names(const char *category, weir_buf_t *out)
{
    for (size_t i = 0;; i++) {
        const char *name = type_at(category, i);
        if (!name) break;
        if (i) weir_buf_append(out, ", ", 2);
        weir_buf_append(out, name, strlen(name));
    }
}
