/* The engine: the configuration tree turned into running inputs, a router and outputs.
 *
 * Routing follows Fluentd: each label (the top level is the label "") holds its <match>
 * directives in file order, and the first whose pattern matches the tag takes the batch.
 * Results are cached per tag in a small hash table, because a tag is matched once per batch and
 * senders reuse a handful of tags; the table is simply cleared when it fills up (a bounded
 * cost that an attacker sending random tags cannot turn into unbounded memory). Events that
 * match nothing are counted and dropped with a rate-limited warning, as Fluentd does.
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

#include "weir/log.h"
#include "weir/pattern.h"

#ifndef WEIR_VERSION
#define WEIR_VERSION "unknown"
#endif

#define ROUTE_CACHE_SLOTS 1024 /* power of two; cleared when 3/4 full */
#define ROUTE_TAG_MAX 1024     /* longer tags are matched every time instead of cached */

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
} input_inst_t;

typedef struct match_rule {
    weir_pattern_t *pattern;
    output_inst_t *out;
} match_rule_t;

typedef struct route_slot {
    char *tag; /* NULL = empty */
    int rule;  /* -1 = no match */
} route_slot_t;

typedef struct label {
    char *name;
    match_rule_t *rules;
    size_t nrules;
    route_slot_t cache[ROUTE_CACHE_SLOTS];
    size_t cached;
} label_t;

struct weir_engine {
    uv_loop_t *loop;
    bool dry_run;
    char hostname[256];
    input_inst_t *inputs;
    size_t ninputs;
    output_inst_t *outputs;
    size_t noutputs;
    label_t *labels;
    size_t nlabels;
    weir_space_waiter_t *waiters;
    uv_idle_t *space_idle; /* separately allocated: freed by its close callback */
    weir_engine_stats_t stats;
    weir_ratelimit_t unmatched_rl;
    /* metrics */
    weir_metrics_t *metrics;
    weir_plugin_metrics_t *creating; /* the plugin whose create() runs now */
    weir_tag_counter_t *unmatched;
    size_t next_object_id;
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
        bool secret = p->secret || weir_conf_is_secret_key(p->key);
        json_t *v = json_string(secret ? "xxxxxx" : p->value);
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
    weir_engine_plugin_t info = {0};
    if (plugin_begin(eng, m, "output", type, &info, err) != 0) return -1;
    void *state = NULL;
    int rc = ops->create(eng, m, &state, err);
    eng->creating = NULL;
    if (rc != 0) {
        plugin_info_free(&info);
        return -1;
    }
    output_inst_t *o = &eng->outputs[eng->noutputs++];
    o->ops = ops;
    o->state = state;
    o->id = weir_strdup(id ? id : type);
    o->info = info;
    *out = o;
    return 0;
}

static label_t *label_get(weir_engine_t *eng, const char *name)
{
    for (size_t i = 0; i < eng->nlabels; i++)
        if (strcmp(eng->labels[i].name, name) == 0) return &eng->labels[i];
    return NULL;
}

static int add_matches(weir_engine_t *eng, weir_conf_section_t *parent, label_t *lab,
                       weir_err_t *err)
{
    for (size_t i = 0; i < parent->nchildren; i++) {
        weir_conf_section_t *c = parent->children[i];
        if (strcmp(c->name, "filter") == 0) {
            conf_fail(err, c,
                      "<filter> is not supported by weir yet; remove it or transform records in "
                      "the sender");
            return -1;
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
        lab->nrules++;
    }
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
static void note_unknown(weir_buf_t *msg, weir_conf_section_t *s, bool input)
{
    weir_conf_param_t *p = weir_conf_find(s, "@type");
    if (!p || (input ? weir_input_find(p->value) != NULL : weir_output_find(p->value) != NULL))
        return;
    weir_buf_printf(msg, "%s  %s:%d:%d: @type %s (<%s%s%s>)\n", msg->len ? "" : "\n", p->file,
                    p->line, p->col, p->value, s->name, s->arg[0] ? " " : "", s->arg);
}

static int check_types(weir_conf_section_t *root, weir_err_t *err)
{
    weir_buf_t msg;
    weir_buf_init(&msg);
    for (size_t i = 0; i < root->nchildren; i++) {
        weir_conf_section_t *c = root->children[i];
        if (strcmp(c->name, "source") == 0) note_unknown(&msg, c, true);
        if (strcmp(c->name, "match") == 0) note_unknown(&msg, c, false);
        if (strcmp(c->name, "label") == 0)
            for (size_t j = 0; j < c->nchildren; j++)
                if (strcmp(c->children[j]->name, "match") == 0)
                    note_unknown(&msg, c->children[j], false);
    }
    if (!msg.len) return 0;
    weir_buf_t ins, outs;
    weir_buf_init(&ins);
    weir_buf_init(&outs);
    weir_plugin_names(true, &ins);
    weir_plugin_names(false, &outs);
    weir_buf_putc(&ins, '\0');
    weir_buf_putc(&outs, '\0');
    weir_buf_putc(&msg, '\0');
    weir_err_set(err, "weir does not have these plugins:%s  inputs weir has: %s; outputs: %s",
                 msg.data, ins.data, outs.data);
    weir_buf_free(&msg);
    weir_buf_free(&ins);
    weir_buf_free(&outs);
    return -1;
}

static int build(weir_engine_t *eng, weir_conf_section_t *root, const weir_engine_opts_t *o,
                 weir_err_t *err)
{
    if (check_types(root, err) != 0) return -1;
    eng->outputs = weir_calloc(count_children(root, "match", true) + 1, sizeof *eng->outputs);
    eng->inputs = weir_calloc(count_children(root, "source", false) + 1, sizeof *eng->inputs);
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
                     "unknown directive <%s>; expected <source>, <match>, <label> or <system>",
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
    for (size_t i = 0; i < root->nchildren; i++) {
        weir_conf_section_t *c = root->children[i];
        if (strcmp(c->name, "source") != 0) continue;
        weir_conf_section_use(c);
        const char *type = section_type(c, err);
        if (!type) return -1;
        const weir_input_ops_t *ops = weir_input_find(type);
        if (!ops) {
            conf_fail(err, c, "unknown input plugin");
            return -1;
        }
        const char *lab = NULL;
        if (weir_conf_get_str(c, "@label", &lab, err) < 0) return -1;
        if (lab && !label_get(eng, lab)) {
            weir_conf_errorf(err, weir_conf_find(c, "@label"), "no <label %s> is defined", lab);
            return -1;
        }
        const char *s = NULL;
        if (weir_conf_get_str(c, "@log_level", &s, err) < 0) return -1;
        input_inst_t *in = &eng->inputs[eng->ninputs];
        in->ops = ops;
        if (plugin_begin(eng, c, "input", type, &in->info, err) != 0) return -1;
        int rc = ops->create(eng, c, &in->state, err);
        eng->creating = NULL;
        if (rc != 0) {
            plugin_info_free(&in->info);
            return -1;
        }
        eng->ninputs++;
    }
    return weir_conf_check_unused(root, err) == 0 ? 0 : -1;
}

weir_engine_t *weir_engine_new(uv_loop_t *loop, weir_conf_section_t *root,
                               const weir_engine_opts_t *opts, weir_err_t *err)
{
    weir_engine_t *eng = weir_calloc(1, sizeof *eng);
    eng->loop = loop;
    eng->dry_run = opts->dry_run;
    eng->unmatched_rl.interval_ms = 10000;
    if (gethostname(eng->hostname, sizeof eng->hostname - 1) != 0)
        strcpy(eng->hostname, "localhost");
    eng->metrics = weir_metrics_new();
    const char *version[] = {"version", WEIR_VERSION, NULL};
    weir_gauge_set(weir_metrics_gauge(eng->metrics, eng, "weir_build_info",
                                      "Always 1; the version label says which weir runs.", version),
                   1);
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

int weir_engine_start(weir_engine_t *eng, weir_err_t *err)
{
    eng->space_idle = weir_calloc(1, sizeof *eng->space_idle);
    uv_idle_init(eng->loop, eng->space_idle);
    eng->space_idle->data = eng;
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

static uint32_t hash_tag(const char *s, size_t *len)
{
    uint32_t h = 2166136261u;
    const char *p = s;
    for (; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    *len = (size_t)(p - s);
    return h;
}

static void cache_clear(label_t *lab)
{
    for (size_t i = 0; i < ROUTE_CACHE_SLOTS; i++) {
        free(lab->cache[i].tag);
        lab->cache[i].tag = NULL;
    }
    lab->cached = 0;
}

static int route_uncached(const label_t *lab, const char *tag)
{
    for (size_t i = 0; i < lab->nrules; i++)
        if (weir_pattern_match(lab->rules[i].pattern, tag)) return (int)i;
    return -1;
}

static int route(label_t *lab, const char *tag)
{
    size_t len;
    uint32_t h = hash_tag(tag, &len);
    if (len > ROUTE_TAG_MAX) return route_uncached(lab, tag);
    size_t i = h & (ROUTE_CACHE_SLOTS - 1);
    while (lab->cache[i].tag) {
        if (strcmp(lab->cache[i].tag, tag) == 0) return lab->cache[i].rule;
        i = (i + 1) & (ROUTE_CACHE_SLOTS - 1);
    }
    int rule = route_uncached(lab, tag);
    if (lab->cached >= ROUTE_CACHE_SLOTS * 3 / 4) {
        cache_clear(lab);
        i = h & (ROUTE_CACHE_SLOTS - 1);
    }
    lab->cache[i].tag = weir_strndup(tag, len);
    lab->cache[i].rule = rule;
    lab->cached++;
    return rule;
}

weir_emit_result_t weir_engine_emit(weir_engine_t *eng, const char *label, const weir_batch_t *b,
                                    weir_emit_cb cb, void *arg)
{
    label_t *lab = &eng->labels[0];
    if (label && *label) {
        label_t *l = label_get(eng, label);
        if (l) lab = l;
    }
    int rule = route(lab, b->tag);
    if (rule < 0) {
        eng->stats.events_unmatched += b->count;
        weir_tag_counter_add(eng->unmatched, b->tag, b->count);
        unsigned long skipped = 0;
        if (b->count && weir_ratelimit_ok(&eng->unmatched_rl, &skipped))
            weir_warn("no patterns matched tag=\"%s\" (%lu similar warnings suppressed)", b->tag,
                      skipped);
        return WEIR_EMIT_DONE;
    }
    output_inst_t *o = lab->rules[rule].out;
    weir_emit_result_t r = o->ops->emit(o->state, b, cb, arg);
    if (r == WEIR_EMIT_DONE || r == WEIR_EMIT_PENDING) {
        eng->stats.events_in += b->count;
        weir_metrics_output_emit(o->info.metrics, b->count);
    }
    return r;
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
    return eng->ninputs + eng->noutputs;
}

const weir_engine_plugin_t *weir_engine_plugin_at(const weir_engine_t *eng, size_t i)
{
    if (i < eng->ninputs) return &eng->inputs[i].info;
    i -= eng->ninputs;
    return i < eng->noutputs ? &eng->outputs[i].info : NULL;
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

static void outputs_stopped(void *arg)
{
    weir_engine_t *eng = arg;
    if (--eng->pending_stops > 0) return;
    if (eng->space_idle) uv_idle_stop(eng->space_idle);
    if (eng->stop_done) eng->stop_done(eng->stop_arg);
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

void weir_engine_free(weir_engine_t *eng)
{
    if (!eng) return;
    /* a plugin's series go after the plugin, whose threads may still update them until then */
    for (size_t i = 0; i < eng->ninputs; i++) {
        if (eng->inputs[i].ops->destroy) eng->inputs[i].ops->destroy(eng->inputs[i].state);
        plugin_info_free(&eng->inputs[i].info);
    }
    for (size_t i = 0; i < eng->noutputs; i++) {
        if (eng->outputs[i].ops && eng->outputs[i].ops->destroy)
            eng->outputs[i].ops->destroy(eng->outputs[i].state);
        free(eng->outputs[i].id);
        plugin_info_free(&eng->outputs[i].info);
    }
    weir_metrics_unregister(eng->metrics, eng);
    weir_metrics_free(eng->metrics);
    for (size_t i = 0; i < eng->nlabels; i++) {
        label_t *lab = &eng->labels[i];
        for (size_t j = 0; j < lab->nrules; j++)
            weir_pattern_free(lab->rules[j].pattern);
        free(lab->rules);
        cache_clear(lab);
        free(lab->name);
    }
    if (eng->space_idle) uv_close((uv_handle_t *)eng->space_idle, (uv_close_cb)free);
    free(eng->labels);
    free(eng->inputs);
    free(eng->outputs);
    free(eng);
}

void weir_engine_get_stats(const weir_engine_t *eng, weir_engine_stats_t *out)
{
    *out = eng->stats;
}
