/* @type relabel: Fluentd's out_relabel. Every batch it takes goes on into the routing of the
 * label named by its @label, unchanged (tag included), and is acknowledged as that label's
 * output acknowledges it: the answer of weir_engine_emit() is this output's answer.
 *
 * The label must exist, and a configuration whose relabels would send events round in a loop
 * (<label @a> relabels to @b, which relabels back to @a) is refused when it is read: the
 * engine keeps the label-to-label edges and names the loop. Without loops the chain of
 * relabels one batch passes through is at most as long as the number of labels, so the
 * nested emits are bounded. `@label @ROOT` (Fluentd's reserved name) sends the events back to
 * the top level's <match>es, unless a <label @ROOT> is defined. */
#include <stdlib.h>

#include "weir/plugin.h"

typedef struct out_relabel {
    weir_engine_t *eng;
    char *label;
} out_relabel_t;

static void relabel_destroy(void *state)
{
    out_relabel_t *o = state;
    if (!o) return;
    free(o->label);
    free(o);
}

static int relabel_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state,
                          weir_err_t *err)
{
    const char *label = NULL;
    if (weir_conf_get_str(sec, "@label", &label, err) < 0) return -1;
    if (!label || !*label) {
        weir_conf_section_errorf(err, sec,
                                 "@type relabel needs '@label @name': the label whose <match>es "
                                 "take the events");
        return -1;
    }
    weir_err_t why = {{0}};
    if (weir_engine_route_to_label(eng, label, &why) != 0) {
        weir_conf_errorf(err, weir_conf_find(sec, "@label"), "@label %s: %s", label, why.msg);
        return -1;
    }
    out_relabel_t *o = weir_calloc(1, sizeof *o);
    o->eng = eng;
    o->label = weir_strdup(label);
    *state = o;
    return 0;
}

static weir_emit_result_t relabel_emit(void *state, const weir_batch_t *b, weir_emit_cb cb,
                                       void *arg)
{
    out_relabel_t *o = state;
    return weir_engine_emit(o->eng, o->label, b, cb, arg);
}

const weir_output_ops_t weir_out_relabel_ops = {
    .type = "relabel",
    .create = relabel_create,
    .emit = relabel_emit,
    .destroy = relabel_destroy,
};
