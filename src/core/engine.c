/* The engine: the configuration tree turned into running inputs, a router and outputs.
 *
 * Routing follows Fluentd: each label (the top level is the label "") holds its <filter> and
 * <match> directives in file order; the first <match> whose pattern matches the tag takes the
 * batch, after every <filter> before it whose pattern matches too, in order. A filter that
 * needs the batch's fate (dedupe) holds it, and the sender's acknowledgement then waits for
 * the output and for every hold (emit_wait_t). Results are cached per tag in a small hash table,
 * because a tag is matched once per batch and senders reuse a handful of tags; the table is simply
 * cleared when it fills up (a bounded cost that an attacker sending random tags cannot turn into
 * unbounded memory). Events that match nothing are counted and dropped with a rate-limited warning,
 * as Fluentd does.
 *
 * The engine owns the metrics registry and one metrics handle per plugin (with its plugin_id,
 * Fluentd's "object:N" when the section has no @id). While a plugin's create() runs, that
 * handle is "current" (weir_engine_plugin_metrics), so the plugin and the buffer it makes can
 * register their series under it without a change to the plugin interface. */
#include "weir/engine.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weir/hash.h"
#include "weir/log.h"
#include "weir/pattern.h"

#ifndef WEIR_VERSION
#define WEIR_VERSION "unknown"
#endif

#define ROUTE_CACHE_SLOTS 1024 /* power of two; cleared when 3/4 full */
#define ROUTE_TAG_MAX 1024     /* longer tags are matched every time instead of cached */
#define LABEL_FILTERS_MAX 64   /* <filter>s per label: a route's filters are a 64-bit mask */

typedef struct output_inst {
    const weir_output_ops_t *ops;
    void *state;
    char *id;
    bool started;
    weir_engine_plugin_t info; /* strings owned */
} output_inst_t;

typedef struct input_inst {
    const weir_input_ops_t *ops;
    void *state;
    bool started;
    weir_engine_plugin_t info;
    char *conf_text; /* the <source> as written back, to recognise it across reloads */
} input_inst_t;

typedef struct filter_inst {
    const weir_filter_ops_t *ops;
    void *state;
    bool started;
    weir_engine_plugin_t info;
} filter_inst_t;

typedef struct match_rule {
    weir_pattern_t *pattern;
    output_inst_t *out;
    size_t pos; /* place among the label's directives */
} match_rule_t;

typedef struct filter_rule {
    weir_pattern_t *pattern;
    filter_inst_t *filter;
    size_t pos;
} filter_rule_t;

typedef struct route {
    int rule;      /* -1 = no match */
    uint64_t mask; /* bit i: the label's filter i applies */
} route_t;

typedef struct route_slot {
    char *tag; /* NULL = empty */
    route_t route;
} route_slot_t;

typedef struct label {
    char *name;
    match_rule_t *rules;
    size_t nrules;
    filter_rule_t *frules;
    size_t nfrules;
    size_t ndirectives;
    route_slot_t cache[ROUTE_CACHE_SLOTS];
    size_t cached;
    char **targets; /* the labels its relabel outputs send into (weir_engine_route_to_label) */
    size_t ntargets;
} label_t;

struct weir_engine {
    uv_loop_t *loop;
    bool dry_run;
    char hostname[256];
    input_inst_t *inputs;
    size_t ninputs;
    output_inst_t *outputs;
    size_t noutputs;
    filter_inst_t *filters;
    size_t nfilters;
    size_t outputs_cap; /* counted from the configuration before any output is made */
    label_t *labels;
    size_t nlabels;
    weir_space_waiter_t *waiters;
    uv_idle_t *space_idle; /* separately allocated: freed by its close callback */
    weir_ratelimit_t unmatched_rl;
    /* metrics */
    weir_metrics_t *metrics;
    weir_plugin_metrics_t *creating; /* the plugin whose create() runs now */
    weir_tag_counter_t *unmatched;
    size_t next_object_id;
    label_t *building; /* the label whose <match>es are being created */
    /* reload: while set, emits answer FULL so inputs wait instead of reaching outputs that are
     * being replaced */
    bool reloading;
    int log_level_override; /* the command line's -v/-q, which outlasts reloads */
    /* orderly stop */
    size_t pending_stops;
    void (*stop_done)(void *);
    void *stop_arg;
};

static void conf_fail(weir_err_t *err, const weir_conf_section_t *s, const char *what)
{
    weir_conf_section_errorf(err, s, "%s", what);
}

/* ---- building ---------------------------------------------------------------------- */

/* <system><log>: Fluentd's own syntax for the daemon's log format. weir logs to stderr only, so
 * the rotation params are refused with the reason rather than ignored. */
static int read_system_log(weir_conf_section_t *sys, weir_err_t *err)
{
    static const char *const formats[] = {"text", "json", NULL};
    static const char *const rotation[] = {"rotate_age", "rotate_size", NULL};
    weir_conf_section_t *lg = weir_conf_child(sys, "log", 0);
    if (!lg) return 0;
    weir_conf_section_use(lg);
    weir_conf_section_t *second = weir_conf_child(sys, "log", 1);
    if (second) {
        conf_fail(err, second, "only one <log> section is allowed in <system>");
        return -1;
    }
    for (size_t i = 0; rotation[i]; i++) {
        weir_conf_param_t *p = weir_conf_find(lg, rotation[i]);
        if (p) {
            weir_conf_errorf(err, p,
                             "%s: weir logs to stderr only; let the container runtime or "
                             "logrotate rotate it",
                             rotation[i]);
            return -1;
        }
    }
    int format = 0;
    const char *tf = NULL;
    if (weir_conf_get_enum(lg, "format", formats, &format, err) < 0 ||
        weir_conf_get_str(lg, "time_format", &tf, err) < 0)
        return -1;
    if (tf && weir_log_set_time_format(tf) != 0) {
        weir_conf_errorf(err, weir_conf_find(lg, "time_format"),
                         "time_format: expected a strftime format of at most %d bytes that "
                         "yields some text",
                         WEIR_LOG_TIME_FORMAT_MAX);
        return -1;
    }
    weir_log_set_format(format == 1 ? WEIR_LOG_FORMAT_JSON : WEIR_LOG_FORMAT_TEXT);
    return 0;
}

static int read_system(weir_engine_t *eng, weir_conf_section_t *sys, const weir_engine_opts_t *o,
                       weir_err_t *err)
{
    if (read_system_log(sys, err) != 0) return -1;
    const char *level = NULL;
    if (weir_conf_get_str(sys, "log_level", &level, err) < 0) return -1;
    if (level) {
        int l = weir_log_level_parse(level);
        if (l < 0) {
            weir_conf_errorf(err, weir_conf_find(sys, "log_level"),
                             "log_level: expected trace, debug, info, warn, error or fatal, got "
                             "'%s'",
                             level);
            return -1;
        }
        if (o->log_level_override < 0) weir_log_set_level((weir_log_level_t)l);
    }
    int64_t workers = 1;
    if (weir_conf_get_int(sys, "workers", &workers, err) < 0) return -1;
    if (workers != 1) {
        weir_conf_errorf(err, weir_conf_find(sys, "workers"),
                         "workers %lld: weir runs one process; use 'workers 1' (or leave it out)",
                         (long long)workers);
        return -1;
    }
    const char *s = NULL;
    if (weir_conf_get_str(sys, "root_dir", &s, err) < 0) return -1;
    if (weir_conf_get_str(sys, "process_name", &s, err) < 0) return -1;
    return 0;
}

static const char *section_type(weir_conf_section_t *s, weir_err_t *err)
{
    const char *type = NULL;
    if (weir_conf_get_str(s, "@type", &type, err) < 0) return NULL;
    if (!type || !*type) {
        conf_fail(err, s, "missing '@type'");
        return NULL;
    }
    return type;
}

/* The section's own params as a JSON object, secrets masked, for monitor_agent's "config". */
static char *config_json(const weir_conf_section_t *s)
{
    json_t *obj = json_object();
    for (size_t i = 0; i < s->nparams; i++) {
        const weir_conf_param_t *p = &s->params[i];
        char *shown = weir_conf_value_shown(p);
        json_t *v = json_string(shown);
        free(shown);
        json_object_set_new(obj, p->key, v ? v : json_string("(not UTF-8)"));
    }
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    char *copy = weir_strdup(text ? text : "{}");
    free(text);
    return copy;
}

static const weir_engine_plugin_t *find_plugin_id(const weir_engine_t *eng, const char *id)
{
    for (size_t i = 0; i < weir_engine_plugin_count(eng); i++) {
        const weir_engine_plugin_t *p = weir_engine_plugin_at(eng, i);
        if (p->plugin_id && strcmp(p->plugin_id, id) == 0) return p;
    }
    return NULL;
}

/* Fills `info` and makes the plugin's metrics handle current for its create(). Two plugins
 * with one @id would share metrics series, so that is an error, as in Fluentd. */
static int plugin_begin(weir_engine_t *eng, weir_conf_section_t *s, const char *category,
                        const char *type, weir_engine_plugin_t *info, weir_err_t *err)
{
    const char *id = NULL;
    if (weir_conf_get_str(s, "@id", &id, err) < 0) return -1;
    char gen[32];
    if (!id || !*id) {
        snprintf(gen, sizeof gen, "object:%zx", ++eng->next_object_id);
        id = gen;
    } else if (find_plugin_id(eng, id)) {
        weir_conf_errorf(err, weir_conf_find(s, "@id"),
                         "@id %s is used by another plugin; each @id must be unique", id);
        return -1;
    }
    info->category = category;
    info->plugin_id = weir_strdup(id);
    info->type = weir_strdup(type);
    info->config_json = config_json(s);
    info->metrics = weir_plugin_metrics_new(eng->metrics, category, id, type);
    eng->creating = info->metrics;
    return 0;
}

static void plugin_info_free(weir_engine_plugin_t *info)
{
    weir_plugin_metrics_free(info->metrics);
    free((char *)info->plugin_id);
    free((char *)info->type);
    free((char *)info->config_json);
    memset(info, 0, sizeof *info);
}

static int add_output(weir_engine_t *eng, weir_conf_section_t *m, output_inst_t **out,
                      weir_err_t *err)
{
    const char *type = section_type(m, err);
    if (!type) return -1;
    const weir_output_ops_t *ops = weir_output_find(type);
    if (!ops) { /* check_types() reported it already */
        conf_fail(err, m, "unknown output plugin");
        return -1;
    }
    const char *id = NULL;
    if (weir_conf_get_str(m, "@id", &id, err) < 0) return -1;
    const char *lvl = NULL;
    if (weir_conf_get_str(m, "@log_level", &lvl, err) < 0) return -1;
    if (eng->noutputs >= eng->outputs_cap) { /* count_outputs() missed a section kind */
        conf_fail(err, m, "internal error: more outputs than the configuration was counted for");
        return -1;
    }
    /* The slot is taken before create(), so that the outputs a copy makes come after it, in
     * the order Fluentd's monitor_agent lists them. A failed create leaves it empty (ops NULL)
     * in an engine that is then thrown away. */
    output_inst_t *o = &eng->outputs[eng->noutputs++];
    if (plugin_begin(eng, m, "output", type, &o->info, err) != 0) return -1;
    void *state = NULL;
    int rc = ops->create(eng, m, &state, err);
    eng->creating = NULL;
    if (rc != 0) {
        plugin_info_free(&o->info);
        return -1;
    }
    o->ops = ops;
    o->state = state;
    o->id = weir_strdup(id ? id : type);
    *out = o;
    return 0;
}

static label_t *label_get(weir_engine_t *eng, const char *name)
{
    for (size_t i = 0; i < eng->nlabels; i++)
        if (strcmp(eng->labels[i].name, name) == 0) return &eng->labels[i];
    return NULL;
}

static int add_filter(weir_engine_t *eng, weir_conf_section_t *c, label_t *lab, weir_err_t *err)
{
    if (lab->nfrules >= LABEL_FILTERS_MAX) {
        weir_conf_section_errorf(err, c, "more than %d <filter> sections in one label",
                                 LABEL_FILTERS_MAX);
        return -1;
    }
    const char *type = section_type(c, err);
    if (!type) return -1;
    const weir_filter_ops_t *ops = weir_filter_find(type);
    if (!ops) { /* check_types() reported it already */
        conf_fail(err, c, "unknown filter plugin");
        return -1;
    }
    const char *lvl = NULL;
    if (weir_conf_get_str(c, "@log_level", &lvl, err) < 0) return -1;
    weir_pattern_t *pat = weir_pattern_compile(c->arg[0] ? c->arg : "**", err);
    if (!pat) {
        weir_err_prefix(err, "%s:%d:%d: <filter %s>", c->file, c->line, c->col, c->arg);
        return -1;
    }
    filter_inst_t *f = &eng->filters[eng->nfilters];
    memset(f, 0, sizeof *f);
    if (plugin_begin(eng, c, "filter", type, &f->info, err) != 0) {
        weir_pattern_free(pat);
        return -1;
    }
    int rc = ops->create(eng, c, &f->state, err);
    eng->creating = NULL;
    if (rc != 0) {
        plugin_info_free(&f->info);
        weir_pattern_free(pat);
        return -1;
    }
    f->ops = ops;
    eng->nfilters++;
    lab->frules = weir_realloc(lab->frules, (lab->nfrules + 1) * sizeof *lab->frules);
    lab->frules[lab->nfrules++] = (filter_rule_t){pat, f, lab->ndirectives++};
    return 0;
}

static int add_matches(weir_engine_t *eng, weir_conf_section_t *parent, label_t *lab,
                       weir_err_t *err)
{
    eng->building = lab;
    for (size_t i = 0; i < parent->nchildren; i++) {
        weir_conf_section_t *c = parent->children[i];
        if (strcmp(c->name, "filter") == 0) {
            weir_conf_section_use(c);
            if (add_filter(eng, c, lab, err) != 0) return -1;
            continue;
        }
        if (strcmp(c->name, "match") != 0) continue;
        weir_conf_section_use(c);
        weir_pattern_t *pat = weir_pattern_compile(c->arg[0] ? c->arg : "**", err);
        if (!pat) {
            weir_err_prefix(err, "%s:%d:%d: <match %s>", c->file, c->line, c->col, c->arg);
            return -1;
        }
        output_inst_t *o = NULL;
        if (add_output(eng, c, &o, err) != 0) {
            weir_pattern_free(pat);
            return -1;
        }
        lab->rules = weir_realloc(lab->rules, (lab->nrules + 1) * sizeof *lab->rules);
        lab->rules[lab->nrules].pattern = pat;
        lab->rules[lab->nrules].out = o;
        lab->rules[lab->nrules].pos = lab->ndirectives++;
        lab->nrules++;
    }
    return 0;
}

/* ---- outputs that outputs make (copy's <store>s, relabel's label) ---------------------- */

/* Every section that becomes an output: <match>es anywhere and the <store>s inside them. A
 * <store> elsewhere is counted too; that only leaves a slot unused. */
static size_t count_outputs(const weir_conf_section_t *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nchildren; i++) {
        const weir_conf_section_t *c = s->children[i];
        if (strcmp(c->name, "match") == 0 || strcmp(c->name, "store") == 0) n++;
        n += count_outputs(c);
    }
    return n;
}

int weir_engine_output_new(weir_engine_t *eng, weir_conf_section_t *sec, weir_output_ref_t *ref,
                           weir_err_t *err)
{
    weir_conf_section_use(sec);
    weir_plugin_metrics_t *outer = eng->creating; /* the caller's, current again after */
    output_inst_t *o = NULL;
    int rc = add_output(eng, sec, &o, err);
    eng->creating = outer;
    if (rc != 0) return -1;
    ref->ops = o->ops;
    ref->state = o->state;
    ref->metrics = o->info.metrics;
    ref->plugin_id = o->info.plugin_id;
    return 0;
}

/* A relabel's target: a <label>, or the top level for Fluentd's reserved name @ROOT. */
static label_t *label_target(weir_engine_t *eng, const char *name)
{
    label_t *l = label_get(eng, name);
    if (!l && strcmp(name, "@ROOT") == 0) l = &eng->labels[0];
    return l;
}

/* Depth-first from `from` along relabel edges; true when `to` is reached, with the path so far
 * in `path`. Labels are few (one per <label>), and each is visited at most once per search. */
static bool label_reaches(weir_engine_t *eng, label_t *from, const label_t *to, weir_buf_t *path,
                          bool *seen)
{
    weir_buf_printf(path, " -> %s", from->name[0] ? from->name : "@ROOT");
    if (from == to) return true;
    size_t idx = (size_t)(from - eng->labels);
    if (seen[idx]) goto no;
    seen[idx] = true;
    for (size_t i = 0; i < from->ntargets; i++) {
        size_t mark = path->len;
        label_t *next = label_target(eng, from->targets[i]);
        if (next && label_reaches(eng, next, to, path, seen)) return true;
        path->len = mark;
    }
no:
    return false;
}

int weir_engine_route_to_label(weir_engine_t *eng, const char *label, weir_err_t *err)
{
    label_t *target = label && *label ? label_target(eng, label) : NULL;
    if (!target) {
        weir_err_set(err, "no <label %s> is defined", label ? label : "");
        return -1;
    }
    label_t *from = eng->building;
    if (!from) return 0; /* not inside a build: nothing can loop */
    weir_buf_t path;
    weir_buf_init(&path);
    bool *seen = weir_calloc(eng->nlabels, sizeof *seen);
    bool loop = label_reaches(eng, target, from, &path, seen);
    free(seen);
    if (loop) {
        weir_buf_putc(&path, '\0');
        weir_err_set(err, "relabel loop: events would go round %s%s forever",
                     from->name[0] ? from->name : "@ROOT", path.data);
        weir_buf_free(&path);
        return -1;
    }
    weir_buf_free(&path);
    from->targets = weir_realloc(from->targets, (from->ntargets + 1) * sizeof *from->targets);
    from->targets[from->ntargets++] = weir_strdup(label);
    return 0;
}

static size_t count_children(weir_conf_section_t *root, const char *name, bool deep)
{
    size_t n = 0;
    for (size_t i = 0; i < root->nchildren; i++) {
        weir_conf_section_t *c = root->children[i];
        if (strcmp(c->name, name) == 0) n++;
        if (deep && strcmp(c->name, "label") == 0) n += count_children(c, name, false);
    }
    return n;
}

/* Names every @type weir does not have, all at once, so a user migrating a configuration
 * learns the whole list in one run. */
static void note_unknown(weir_buf_t *msg, weir_conf_section_t *s)
{
    weir_conf_param_t *p = weir_conf_find(s, "@type");
    if (p && !(strcmp(s->name, "source") == 0   ? weir_input_find(p->value) != NULL
               : strcmp(s->name, "filter") == 0 ? weir_filter_find(p->value) != NULL
                                                : weir_output_find(p->value) != NULL))
        weir_buf_printf(msg, "%s  %s:%d:%d: @type %s (<%s%s%s>)\n", msg->len ? "" : "\n", p->file,
                        p->line, p->col, p->value, s->name, s->arg[0] ? " " : "", s->arg);
    /* a copy's <store>s are outputs too, at any depth */
    for (size_t i = 0; i < s->nchildren; i++)
        if (strcmp(s->children[i]->name, "store") == 0) note_unknown(msg, s->children[i]);
}

static int check_types(weir_conf_section_t *root, weir_err_t *err)
{
    weir_buf_t msg;
    weir_buf_init(&msg);
    for (size_t i = 0; i < root->nchildren; i++) {
        weir_conf_section_t *c = root->children[i];
        if (strcmp(c->name, "source") == 0 || strcmp(c->name, "match") == 0 ||
            strcmp(c->name, "filter") == 0)
            note_unknown(&msg, c);
        if (strcmp(c->name, "label") == 0)
            for (size_t j = 0; j < c->nchildren; j++)
                if (strcmp(c->children[j]->name, "match") == 0 ||
                    strcmp(c->children[j]->name, "filter") == 0)
                    note_unknown(&msg, c->children[j]);
    }
    if (!msg.len) return 0;
    weir_buf_t ins, outs, fils;
    weir_buf_init(&ins);
    weir_buf_init(&outs);
    weir_buf_init(&fils);
    weir_plugin_names("input", &ins);
    weir_plugin_names("output", &outs);
    weir_plugin_names("filter", &fils);
    weir_buf_putc(&ins, '\0');
    weir_buf_putc(&outs, '\0');
    weir_buf_putc(&fils, '\0');
    weir_buf_putc(&msg, '\0');
    weir_err_set(err,
                 "weir does not have these plugins:%s  inputs weir has: %s; outputs: %s; "
                 "filters: %s",
                 msg.data, ins.data, outs.data, fils.data);
    weir_buf_free(&msg);
    weir_buf_free(&ins);
    weir_buf_free(&outs);
    weir_buf_free(&fils);
    return -1;
}

/* The section written back as text: equal texts mean an unchanged <source> across a reload. */
static char *section_text(const weir_conf_section_t *s)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return weir_strdup("");
    weir_conf_dump(s, f);
    fclose(f);
    return buf;
}

static void mark_used(weir_conf_section_t *s)
{
    weir_conf_section_use(s);
    for (size_t i = 0; i < s->nparams; i++)
        s->params[i].used = true;
    for (size_t i = 0; i < s->nchildren; i++)
        mark_used(s->children[i]);
}

/* Creates the inputs of root's <source>s into eng->inputs, which has room for them. A source
 * whose text equals one of `keep` (running inputs carried over by a reload) takes that input
 * instead of a new one. */
static int build_inputs(weir_engine_t *eng, weir_conf_section_t *root, input_inst_t *keep,
                        size_t nkeep, weir_err_t *err)
{
    for (size_t i = 0; i < root->nchildren; i++) {
        weir_conf_section_t *c = root->children[i];
        if (strcmp(c->name, "source") != 0) continue;
        weir_conf_section_use(c);
        char *text = section_text(c);
        input_inst_t *kept = NULL;
        for (size_t k = 0; k < nkeep && !kept; k++)
            if (keep[k].ops && strcmp(keep[k].conf_text, text) == 0) kept = &keep[k];
        if (kept) {
            free(text);
            mark_used(c);
            eng->inputs[eng->ninputs++] = *kept;
            memset(kept, 0, sizeof *kept); /* moved */
            continue;
        }
        const char *type = section_type(c, err);
        if (!type) goto err;
        const weir_input_ops_t *ops = weir_input_find(type);
        if (!ops) {
            conf_fail(err, c, "unknown input plugin");
            goto err;
        }
        const char *lab = NULL;
        if (weir_conf_get_str(c, "@label", &lab, err) < 0) goto err;
        if (lab && !label_get(eng, lab)) {
            weir_conf_errorf(err, weir_conf_find(c, "@label"), "no <label %s> is defined", lab);
            goto err;
        }
        const char *lvl = NULL;
        if (weir_conf_get_str(c, "@log_level", &lvl, err) < 0) goto err;
        input_inst_t *in = &eng->inputs[eng->ninputs];
        memset(in, 0, sizeof *in);
        in->ops = ops;
        if (plugin_begin(eng, c, "input", type, &in->info, err) != 0) goto err;
        int rc = ops->create(eng, c, &in->state, err);
        eng->creating = NULL;
        if (rc != 0) {
            plugin_info_free(&in->info);
            goto err;
        }
        in->conf_text = text;
        eng->ninputs++;
        continue;
    err:
        free(text);
        return -1;
    }
    return 0;
}

/* Reads <system> and builds the labels and their outputs (not started) from root into fresh
 * arrays of eng. */
static int build_routes(weir_engine_t *eng, weir_conf_section_t *root, const weir_engine_opts_t *o,
                        weir_err_t *err)
{
    if (check_types(root, err) != 0) return -1;
    eng->outputs_cap = count_outputs(root);
    eng->outputs = weir_calloc(eng->outputs_cap + 1, sizeof *eng->outputs);
    eng->noutputs = 0;
    eng->filters = weir_calloc(count_children(root, "filter", true) + 1, sizeof *eng->filters);
    eng->nfilters = 0;
    eng->labels = weir_calloc(count_children(root, "label", false) + 1, sizeof *eng->labels);
    eng->labels[0].name = weir_strdup("");
    eng->nlabels = 1;

    for (size_t i = 0; i < root->nchildren; i++) {
        weir_conf_section_t *c = root->children[i];
        if (strcmp(c->name, "system") == 0) {
            weir_conf_section_use(c);
            if (read_system(eng, c, o, err) != 0) return -1;
        } else if (strcmp(c->name, "worker") == 0) {
            conf_fail(err, c, "<worker> sections are not supported: weir runs one process");
            return -1;
        } else if (strcmp(c->name, "label") == 0) {
            weir_conf_section_use(c);
            if (!c->arg[0] || c->arg[0] != '@') {
                conf_fail(err, c, "<label> needs a name starting with '@', like <label @audit>");
                return -1;
            }
            if (label_get(eng, c->arg)) {
                conf_fail(err, c, "this label is defined twice");
                return -1;
            }
            eng->labels[eng->nlabels].name = weir_strdup(c->arg);
            eng->nlabels++;
        } else if (strcmp(c->name, "source") != 0 && strcmp(c->name, "match") != 0 &&
                   strcmp(c->name, "filter") != 0) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "unknown directive <%s>; expected <source>, <filter>, <match>, <label> or "
                     "<system>",
                     c->name);
            conf_fail(err, c, msg);
            return -1;
        }
    }
    /* outputs first, so that sources can be checked against the labels that exist */
    if (add_matches(eng, root, &eng->labels[0], err) != 0) return -1;
    for (size_t i = 0; i < root->nchildren; i++) {
        weir_conf_section_t *c = root->children[i];
        if (strcmp(c->name, "label") == 0 && add_matches(eng, c, label_get(eng, c->arg), err) != 0)
            return -1;
    }
    eng->building = NULL;
    return 0;
}

static int build(weir_engine_t *eng, weir_conf_section_t *root, const weir_engine_opts_t *o,
                 weir_err_t *err)
{
    if (build_routes(eng, root, o, err) != 0) return -1;
    eng->inputs = weir_calloc(count_children(root, "source", false) + 1, sizeof *eng->inputs);
    if (build_inputs(eng, root, NULL, 0, err) != 0) return -1;
    return weir_conf_check_unused(root, err) == 0 ? 0 : -1;
}

weir_engine_t *weir_engine_new(uv_loop_t *loop, weir_conf_section_t *root,
                               const weir_engine_opts_t *opts, weir_err_t *err)
{
    weir_engine_t *eng = weir_calloc(1, sizeof *eng);
    eng->loop = loop;
    eng->dry_run = opts->dry_run;
    eng->log_level_override = opts->log_level_override;
    eng->unmatched_rl.interval_ms = 10000;
    if (gethostname(eng->hostname, sizeof eng->hostname - 1) != 0)
        strcpy(eng->hostname, "localhost");
    eng->metrics = weir_metrics_new();
    const char *version[] = {"version", WEIR_VERSION, NULL};
    weir_gauge_set(weir_metrics_gauge(eng->metrics, eng, "weir_build_info",
                                      "Always 1; the version label says which weir runs.", version),
                   1);
    weir_metrics_process(eng->metrics, eng);
    eng->unmatched =
        weir_metrics_tag_counter(eng->metrics, eng, "weir_unmatched_records_total",
                                 "Events dropped because no <match> took their tag.", NULL);
    if (build(eng, root, opts, err) != 0) {
        weir_engine_free(eng);
        return NULL;
    }
    if (eng->ninputs == 0) weir_warn("no <source> configured: weir will receive nothing");
    return eng;
}

/* ---- running ------------------------------------------------------------------------ */

/* Filters first (the outputs' recovered chunks never pass through them; the inputs do). */
static int start_filters(weir_engine_t *eng, weir_err_t *err)
{
    for (size_t i = 0; i < eng->nfilters; i++) {
        filter_inst_t *f = &eng->filters[i];
        if (f->started) continue;
        if (f->ops->start && f->ops->start(f->state, err) != 0) {
            weir_err_prefix(err, "filter %s", f->info.plugin_id);
            return -1;
        }
        f->started = true;
    }
    return 0;
}

int weir_engine_start(weir_engine_t *eng, weir_err_t *err)
{
    eng->space_idle = weir_calloc(1, sizeof *eng->space_idle);
    uv_idle_init(eng->loop, eng->space_idle);
    eng->space_idle->data = eng;
    if (start_filters(eng, err) != 0) return -1;
    for (size_t i = 0; i < eng->noutputs; i++) {
        output_inst_t *o = &eng->outputs[i];
        if (o->ops->start && o->ops->start(o->state, err) != 0) {
            weir_err_prefix(err, "output %s", o->id);
            return -1;
        }
        o->started = true;
    }
    for (size_t i = 0; i < eng->ninputs; i++) {
        input_inst_t *in = &eng->inputs[i];
        if (in->ops->start && in->ops->start(in->state, err) != 0) return -1;
        in->started = true;
    }
    return 0;
}

/* Tags are the senders' choice: keyed, so they cannot all be made to share a probe run. */
static uint32_t hash_tag(const char *s, size_t *len)
{
    *len = strlen(s);
    return (uint32_t)weir_hash(s, *len);
}

static void cache_clear(label_t *lab)
{
    for (size_t i = 0; i < ROUTE_CACHE_SLOTS; i++) {
        free(lab->cache[i].tag);
        lab->cache[i].tag = NULL;
    }
    lab->cached = 0;
}

static route_t route_uncached(const label_t *lab, const char *tag)
{
    route_t r = {-1, 0};
    size_t until = SIZE_MAX; /* filters after the taking <match> do not apply */
    for (size_t i = 0; i < lab->nrules; i++) {
        if (weir_pattern_match(lab->rules[i].pattern, tag)) {
            r.rule = (int)i;
            until = lab->rules[i].pos;
            break;
        }
    }
    for (size_t i = 0; i < lab->nfrules && lab->frules[i].pos < until; i++)
        if (weir_pattern_match(lab->frules[i].pattern, tag)) r.mask |= (uint64_t)1 << i;
    return r;
}

static route_t route(label_t *lab, const char *tag)
{
    size_t len;
    uint32_t h = hash_tag(tag, &len);
    if (len > ROUTE_TAG_MAX) return route_uncached(lab, tag);
    size_t i = h & (ROUTE_CACHE_SLOTS - 1);
    while (lab->cache[i].tag) {
        if (strcmp(lab->cache[i].tag, tag) == 0) return lab->cache[i].route;
        i = (i + 1) & (ROUTE_CACHE_SLOTS - 1);
    }
    route_t r = route_uncached(lab, tag);
    if (lab->cached >= ROUTE_CACHE_SLOTS * 3 / 4) {
        cache_clear(lab);
        i = h & (ROUTE_CACHE_SLOTS - 1);
    }
    lab->cache[i].tag = weir_strndup(tag, len);
    lab->cache[i].route = r;
    lab->cached++;
    return r;
}

/* ---- emitting through filters ---------------------------------------------------------- */

typedef struct held {
    filter_inst_t *f;
    void *hold;
} held_t;

/* A batch that filters hold: the sender's callback waits for the output's and for each hold's
 * done. `refs` counts what is outstanding, plus one while weir_engine_emit runs, so that holds
 * settled at once end in WEIR_EMIT_DONE without a callback. */
typedef struct emit_wait {
    weir_emit_cb cb;
    void *arg;
    size_t refs;
    int status;
    bool returned; /* weir_engine_emit answered PENDING: the end calls cb */
    size_t nheld;
    held_t held[];
} emit_wait_t;

static void wait_release(emit_wait_t *w, int status)
{
    if (status != 0) w->status = -1;
    if (--w->refs > 0) return;
    if (w->returned) {
        w->cb(w->arg, w->status);
        free(w);
    }
}

static void hold_done(void *arg, int status)
{
    wait_release(arg, status);
}

/* status 0: durable (each hold may finish its own work first); -1 or WEIR_EMIT_FULL: released. */
static void settle_holds(held_t *held, size_t n, emit_wait_t *w, int status)
{
    for (size_t i = 0; i < n; i++) {
        const weir_filter_ops_t *ops = held[i].f->ops;
        if (status == 0) {
            w->refs++;
            ops->settle(held[i].f->state, held[i].hold, 0, hold_done, w);
        } else {
            ops->settle(held[i].f->state, held[i].hold, status, NULL, NULL);
        }
    }
}

static void output_done_held(void *arg, int status)
{
    emit_wait_t *w = arg;
    settle_holds(w->held, w->nheld, w, status == 0 ? 0 : -1);
    wait_release(w, status);
}

static weir_emit_result_t emit_to_output(weir_engine_t *eng, int rule, label_t *lab,
                                         const weir_batch_t *b, weir_emit_cb cb, void *arg)
{
    if (rule < 0) {
        weir_tag_counter_add(eng->unmatched, b->tag, b->count);
        unsigned long skipped = 0;
        if (b->count && weir_ratelimit_ok(&eng->unmatched_rl, &skipped))
            weir_warn("no patterns matched tag=\"%s\" (%lu similar warnings suppressed)", b->tag,
                      skipped);
        return WEIR_EMIT_DONE;
    }
    if (b->count == 0) return WEIR_EMIT_DONE; /* all filtered out */
    output_inst_t *o = lab->rules[rule].out;
    weir_emit_result_t r = o->ops->emit(o->state, b, cb, arg);
    if (r == WEIR_EMIT_DONE || r == WEIR_EMIT_PENDING)
        weir_metrics_output_emit(o->info.metrics, b->count);
    return r;
}

static weir_emit_result_t emit_filtered(weir_engine_t *eng, label_t *lab, route_t rt,
                                        const weir_batch_t *b, weir_emit_cb cb, void *arg)
{
    held_t held[LABEL_FILTERS_MAX];
    size_t nheld = 0;
    weir_batch_t bufs[2];
    bool used[2] = {false, false};
    const weir_batch_t *cur = b;
    weir_emit_result_t r = WEIR_EMIT_DONE;
    for (size_t i = 0; i < lab->nfrules && cur->count; i++) {
        if (!(rt.mask & ((uint64_t)1 << i))) continue;
        filter_inst_t *f = lab->frules[i].filter;
        int k = cur == &bufs[0] ? 1 : 0; /* the buffer cur does not use */
        if (!used[k]) {
            weir_batch_init(&bufs[k], b->tag, b->tag_len);
            used[k] = true;
        } else {
            weir_batch_reset(&bufs[k]);
        }
        void *hold = NULL;
        weir_filter_result_t fr = f->ops->filter(f->state, cur, &bufs[k], &hold);
        if (hold) held[nheld++] = (held_t){f, hold};
        if (fr == WEIR_FILTER_ERROR) {
            r = WEIR_EMIT_ERROR;
            break;
        }
        if (fr == WEIR_FILTER_NEW) cur = &bufs[k];
    }
    if (r == WEIR_EMIT_ERROR) {
        settle_holds(held, nheld, NULL, -1);
    } else if (nheld == 0) {
        r = emit_to_output(eng, rt.rule, lab, cur, cb, arg);
    } else {
        emit_wait_t *w = weir_malloc(sizeof *w + nheld * sizeof *held);
        *w = (emit_wait_t){.cb = cb, .arg = arg, .refs = 2, .nheld = nheld};
        memcpy(w->held, held, nheld * sizeof *held);
        r = emit_to_output(eng, rt.rule, lab, cur, output_done_held, w);
        if (r != WEIR_EMIT_PENDING) w->refs--; /* no output callback will come */
        if (r == WEIR_EMIT_DONE) {
            settle_holds(w->held, w->nheld, w, 0);
        } else if (r != WEIR_EMIT_PENDING) {
            settle_holds(w->held, w->nheld, w, r == WEIR_EMIT_FULL ? WEIR_EMIT_FULL : -1);
            free(w);
            w = NULL;
        }
        if (w) {
            if (--w->refs == 0) {
                r = w->status == 0 ? WEIR_EMIT_DONE : WEIR_EMIT_ERROR;
                free(w);
            } else {
                w->returned = true;
                r = WEIR_EMIT_PENDING;
            }
        }
    }
    for (int k = 0; k < 2; k++)
        if (used[k]) weir_batch_free(&bufs[k]);
    return r;
}

weir_emit_result_t weir_engine_emit(weir_engine_t *eng, const char *label, const weir_batch_t *b,
                                    weir_emit_cb cb, void *arg)
{
    if (eng->reloading) return WEIR_EMIT_FULL; /* the input waits for weir_engine_on_space */
    label_t *lab = &eng->labels[0];
    if (label && *label) {
        label_t *l = label_get(eng, label);
        if (l) lab = l;
    }
    route_t rt = route(lab, b->tag);
    if (rt.mask) return emit_filtered(eng, lab, rt, b, cb, arg);
    return emit_to_output(eng, rt.rule, lab, b, cb, arg);
}

uv_loop_t *weir_engine_loop(weir_engine_t *eng)
{
    return eng->loop;
}

const char *weir_engine_hostname(const weir_engine_t *eng)
{
    return eng->hostname;
}

bool weir_engine_dry_run(const weir_engine_t *eng)
{
    return eng->dry_run;
}

weir_metrics_t *weir_engine_metrics(weir_engine_t *eng)
{
    return eng ? eng->metrics : NULL;
}

weir_plugin_metrics_t *weir_engine_plugin_metrics(weir_engine_t *eng)
{
    return eng ? eng->creating : NULL;
}

size_t weir_engine_plugin_count(const weir_engine_t *eng)
{
    return eng->ninputs + eng->noutputs + eng->nfilters;
}

const weir_engine_plugin_t *weir_engine_plugin_at(const weir_engine_t *eng, size_t i)
{
    if (i < eng->ninputs) return &eng->inputs[i].info;
    i -= eng->ninputs;
    if (i < eng->noutputs) return &eng->outputs[i].info;
    i -= eng->noutputs;
    return i < eng->nfilters ? &eng->filters[i].info : NULL;
}

void weir_engine_on_space(weir_engine_t *eng, weir_space_waiter_t *w)
{
    if (w->queued) return;
    w->queued = true;
    w->next = eng->waiters;
    eng->waiters = w;
}

void weir_engine_cancel_space(weir_engine_t *eng, weir_space_waiter_t *w)
{
    if (!w->queued) return;
    for (weir_space_waiter_t **pp = &eng->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    w->queued = false;
    w->next = NULL;
}

/* Waiters run from an idle callback, never from inside the output's call, so an input that
 * emits again from its waiter cannot re-enter the output. */
static void space_idle_cb(uv_idle_t *h)
{
    weir_engine_t *eng = h->data;
    uv_idle_stop(h);
    weir_space_waiter_t *list = eng->waiters;
    eng->waiters = NULL;
    while (list) {
        weir_space_waiter_t *w = list;
        list = w->next;
        w->queued = false;
        w->next = NULL;
        w->fn(w->arg);
    }
}

void weir_engine_space_available(weir_engine_t *eng)
{
    if (eng->waiters && eng->space_idle) uv_idle_start(eng->space_idle, space_idle_cb);
}

void weir_engine_flush(weir_engine_t *eng)
{
    for (size_t i = 0; i < eng->noutputs; i++)
        if (eng->outputs[i].ops->flush) eng->outputs[i].ops->flush(eng->outputs[i].state);
}

/* ---- stopping ----------------------------------------------------------------------- */

static void filters_stopped(void *arg)
{
    weir_engine_t *eng = arg;
    if (--eng->pending_stops > 0) return;
    if (eng->space_idle) uv_idle_stop(eng->space_idle);
    if (eng->stop_done) eng->stop_done(eng->stop_arg);
}

/* Filters stop after the outputs, which have called back every batch they held by then, so
 * every hold is settled. */
static void stop_filters(filter_inst_t *filters, size_t n, size_t *pending, void (*done)(void *),
                         void *arg)
{
    for (size_t i = 0; i < n; i++) {
        filter_inst_t *f = &filters[i];
        if (!f->started || !f->ops->stop) continue;
        (*pending)++;
        f->ops->stop(f->state, done, arg);
    }
}

static void outputs_stopped(void *arg)
{
    weir_engine_t *eng = arg;
    if (--eng->pending_stops > 0) return;
    eng->pending_stops = 1;
    stop_filters(eng->filters, eng->nfilters, &eng->pending_stops, filters_stopped, eng);
    filters_stopped(eng);
}

static void stop_outputs(weir_engine_t *eng)
{
    eng->pending_stops = 1;
    for (size_t i = 0; i < eng->noutputs; i++) {
        output_inst_t *o = &eng->outputs[i];
        if (!o->started || !o->ops->stop) continue;
        eng->pending_stops++;
        o->ops->stop(o->state, outputs_stopped, eng);
    }
    outputs_stopped(eng);
}

static void inputs_stopped(void *arg)
{
    weir_engine_t *eng = arg;
    if (--eng->pending_stops > 0) return;
    stop_outputs(eng);
}

void weir_engine_stop(weir_engine_t *eng, void (*done)(void *arg), void *arg)
{
    eng->stop_done = done;
    eng->stop_arg = arg;
    eng->pending_stops = 1;
    for (size_t i = 0; i < eng->ninputs; i++) {
        input_inst_t *in = &eng->inputs[i];
        if (!in->started || !in->ops->stop) continue;
        eng->pending_stops++;
        in->ops->stop(in->state, inputs_stopped, eng);
    }
    inputs_stopped(eng);
}

static void free_inputs(input_inst_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!in[i].ops) continue; /* moved away by a reload */
        if (in[i].ops->destroy) in[i].ops->destroy(in[i].state);
        plugin_info_free(&in[i].info);
        free(in[i].conf_text);
    }
    free(in);
}

static void free_routes(output_inst_t *out, size_t nout, filter_inst_t *filters, size_t nfilters,
                        label_t *labels, size_t nlabels)
{
    for (size_t i = 0; i < nfilters; i++) {
        if (filters[i].ops && filters[i].ops->destroy) filters[i].ops->destroy(filters[i].state);
        plugin_info_free(&filters[i].info);
    }
    free(filters);
    /* a plugin's series go after the plugin, whose threads may still update them until then */
    for (size_t i = 0; i < nout; i++) {
        if (out[i].ops && out[i].ops->destroy) out[i].ops->destroy(out[i].state);
        free(out[i].id);
        plugin_info_free(&out[i].info);
    }
    free(out);
    for (size_t i = 0; i < nlabels; i++) {
        label_t *lab = &labels[i];
        for (size_t j = 0; j < lab->nrules; j++)
            weir_pattern_free(lab->rules[j].pattern);
        free(lab->rules);
        for (size_t j = 0; j < lab->nfrules; j++)
            weir_pattern_free(lab->frules[j].pattern);
        free(lab->frules);
        weir_conf_strv_free(lab->targets, lab->ntargets);
        cache_clear(lab);
        free(lab->name);
    }
    free(labels);
}

void weir_engine_free(weir_engine_t *eng)
{
    if (!eng) return;
    free_inputs(eng->inputs, eng->ninputs);
    free_routes(eng->outputs, eng->noutputs, eng->filters, eng->nfilters, eng->labels,
                eng->nlabels);
    weir_metrics_unregister(eng->metrics, eng);
    weir_metrics_free(eng->metrics);
    if (eng->space_idle) uv_close((uv_handle_t *)eng->space_idle, (uv_close_cb)free);
    free(eng);
}

/* ---- reload ------------------------------------------------------------------------- *
 *
 * SIGHUP: the new configuration is first built as a dry run, so a bad file is refused with
 * nothing touched. Then emits answer FULL (inputs stop reading and wait, as for a full
 * buffer), the inputs whose <source> changed or went away stop, every output stops without
 * flushing its file buffer (its chunks stay on disk for the new output, which recovers them),
 * the new outputs and the new or changed inputs are built and started, and the waiting inputs
 * go on into the new outputs. Unchanged sources keep their listeners and connections. If the
 * new pieces cannot start (a port in use, say), they are stopped again and the old
 * configuration is installed the same way. */

typedef struct reload {
    weir_engine_t *eng;
    weir_conf_section_t *target; /* the configuration being installed */
    weir_conf_section_t *old_root;
    bool rolling_back;
    weir_err_t err;
    size_t pending;
    void (*next)(struct reload *r);
    void (*done)(void *arg, bool installed, const char *why);
    void *arg;
    /* pieces being stopped, destroyed once all have stopped */
    input_inst_t *gone_inputs;
    size_t ngone;
    output_inst_t *old_outputs;
    size_t nold_outputs;
    filter_inst_t *old_filters;
    size_t nold_filters;
    bool filters_stopping;
    label_t *old_labels;
    size_t nold_labels;
} reload_t;

bool weir_engine_reloading(const weir_engine_t *eng)
{
    return eng->reloading;
}

static void reload_piece_stopped(void *arg)
{
    reload_t *r = arg;
    if (--r->pending > 0) return;
    if (!r->filters_stopping) { /* inputs and outputs have stopped: now the filters */
        r->filters_stopping = true;
        r->pending = 1;
        stop_filters(r->old_filters, r->nold_filters, &r->pending, reload_piece_stopped, r);
        reload_piece_stopped(r);
        return;
    }
    r->filters_stopping = false;
    free_inputs(r->gone_inputs, r->ngone);
    free_routes(r->old_outputs, r->nold_outputs, r->old_filters, r->nold_filters, r->old_labels,
                r->nold_labels);
    r->gone_inputs = NULL;
    r->old_outputs = NULL;
    r->old_filters = NULL;
    r->old_labels = NULL;
    r->ngone = r->nold_outputs = r->nold_filters = r->nold_labels = 0;
    r->next(r);
}

/* Stops every output and every input that `target` does not name with the same text, then
 * runs r->next. */
static void reload_teardown(reload_t *r, weir_conf_section_t *target, void (*next)(reload_t *))
{
    weir_engine_t *eng = r->eng;
    r->next = next;
    r->pending = 1;
    /* inputs: keep the ones whose text is in target */
    input_inst_t *kept = weir_calloc(eng->ninputs + 1, sizeof *kept);
    input_inst_t *gone = weir_calloc(eng->ninputs + 1, sizeof *gone);
    size_t nk = 0, ng = 0;
    for (size_t i = 0; i < eng->ninputs; i++) {
        bool keep = false;
        for (size_t j = 0; j < target->nchildren && !keep; j++) {
            weir_conf_section_t *c = target->children[j];
            if (strcmp(c->name, "source") != 0) continue;
            char *text = section_text(c);
            keep = strcmp(text, eng->inputs[i].conf_text) == 0;
            free(text);
        }
        if (keep)
            kept[nk++] = eng->inputs[i];
        else
            gone[ng++] = eng->inputs[i];
    }
    free(eng->inputs);
    eng->inputs = kept;
    eng->ninputs = nk;
    r->gone_inputs = gone;
    r->ngone = ng;
    r->old_outputs = eng->outputs;
    r->nold_outputs = eng->noutputs;
    r->old_labels = eng->labels;
    r->nold_labels = eng->nlabels;
    r->old_filters = eng->filters;
    r->nold_filters = eng->nfilters;
    eng->filters = NULL;
    eng->nfilters = 0;
    eng->outputs = NULL;
    eng->noutputs = 0;
    eng->labels = NULL;
    eng->nlabels = 0;
    for (size_t i = 0; i < ng; i++) {
        if (!gone[i].started || !gone[i].ops->stop) continue;
        r->pending++;
        gone[i].ops->stop(gone[i].state, reload_piece_stopped, r);
    }
    for (size_t i = 0; i < r->nold_outputs; i++) {
        output_inst_t *o = &r->old_outputs[i];
        if (!o->started || !o->ops->stop) continue;
        r->pending++;
        o->ops->stop(o->state, reload_piece_stopped, r);
    }
    reload_piece_stopped(r);
}

static void reload_finish(reload_t *r, bool installed, const char *why)
{
    weir_engine_t *eng = r->eng;
    eng->reloading = false;
    weir_engine_space_available(eng);
    r->done(r->arg, installed, why);
    free(r);
}

static void reload_install(reload_t *r);

static void reload_rollback(reload_t *r)
{
    weir_error("reload: the new configuration cannot start (%s); going back to the running one",
               r->err.msg);
    r->rolling_back = true;
    r->target = r->old_root;
    reload_teardown(r, r->old_root, reload_install);
}

/* Builds and starts what `target` names, keeping the inputs already running with the same text. */
static void reload_install(reload_t *r)
{
    weir_engine_t *eng = r->eng;
    weir_err_t err = {{0}};
    weir_engine_opts_t o = {.dry_run = false, .log_level_override = eng->log_level_override};
    input_inst_t *kept = eng->inputs;
    size_t nkept = eng->ninputs;
    eng->inputs = weir_calloc(count_children(r->target, "source", false) + 1, sizeof *eng->inputs);
    eng->ninputs = 0;
    int rc = build_routes(eng, r->target, &o, &err);
    if (rc == 0) rc = build_inputs(eng, r->target, kept, nkept, &err);
    /* Every kept input matched a source of target (teardown stopped the others), unless the
     * build failed half way: then the running ones not yet moved join eng->inputs, so that
     * the rollback's teardown stops them properly instead of destroying them while they run. */
    for (size_t i = 0; i < nkept; i++) {
        if (!kept[i].ops) continue;
        eng->inputs = weir_realloc(eng->inputs, (eng->ninputs + 1) * sizeof *eng->inputs);
        eng->inputs[eng->ninputs++] = kept[i];
        kept[i].ops = NULL;
    }
    free(kept);
    if (rc == 0) rc = weir_conf_check_unused(r->target, &err) == 0 ? 0 : -1;
    if (rc == 0) rc = start_filters(eng, &err);
    for (size_t i = 0; rc == 0 && i < eng->noutputs; i++) {
        output_inst_t *out = &eng->outputs[i];
        if (out->ops->start && out->ops->start(out->state, &err) != 0) {
            weir_err_prefix(&err, "output %s", out->id);
            rc = -1;
        } else {
            out->started = true;
        }
    }
    for (size_t i = 0; rc == 0 && i < eng->ninputs; i++) {
        input_inst_t *in = &eng->inputs[i];
        if (in->started) continue;
        if (in->ops->start && in->ops->start(in->state, &err) != 0)
            rc = -1;
        else
            in->started = true;
    }
    if (rc == 0) {
        if (r->rolling_back) {
            reload_finish(r, false, r->err.msg);
        } else {
            weir_info("reload: the new configuration is running (%zu inputs, %zu outputs)",
                      eng->ninputs, eng->noutputs);
            reload_finish(r, true, NULL);
        }
        return;
    }
    if (r->rolling_back) {
        weir_log(WEIR_LOG_FATAL, "reload: the previous configuration cannot start again either: %s",
                 err.msg);
        reload_finish(r, false, err.msg);
        return;
    }
    r->err = err;
    reload_rollback(r);
}

int weir_engine_reload(weir_engine_t *eng, weir_conf_section_t *old_root,
                       weir_conf_section_t *new_root,
                       void (*done)(void *arg, bool installed, const char *why), void *arg,
                       weir_err_t *err)
{
    if (eng->reloading) {
        weir_err_set(err, "a reload is already running");
        return -1;
    }
    /* validate everything first, opening nothing */
    weir_engine_opts_t dry = {.dry_run = true, .log_level_override = eng->log_level_override};
    weir_engine_t *check = weir_engine_new(eng->loop, new_root, &dry, err);
    if (!check) return -1;
    weir_engine_free(check);
    reload_t *r = weir_calloc(1, sizeof *r);
    r->eng = eng;
    r->target = new_root;
    r->old_root = old_root;
    r->done = done;
    r->arg = arg;
    eng->reloading = true;
    reload_teardown(r, new_root, reload_install);
    return 0;
}
