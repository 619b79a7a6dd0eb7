/* The metrics registry (see include/weir/metrics.h for the contract).
 *
 * Families and series are linked lists under one registry lock, taken only to register,
 * unregister and render: there are a few dozen families and one series per plugin in each, so
 * a list costs less than a hash table would save. Values are atomics that hot paths update
 * without the lock.
 *
 * A tagged counter is an open-addressing table of tag entries that only ever grows, to at most
 * WEIR_METRICS_MAX_TAGS entries in twice as many slots (so a probe always ends at an empty
 * slot). An entry is fully written before its pointer is published with a release store, so a
 * lookup needs no lock: it reads slot pointers with acquire loads. Inserts take the series'
 * own lock and probe again, so two threads adding the same new tag store it once. Entries are
 * freed only when the series is unregistered.
 *
 * Invariant: a family is in the registry only while it holds at least one series. */
#include "weir/metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weir/hash.h"
#include "weir/log.h"

#define TAG_SLOTS 2048 /* power of two, at least twice WEIR_METRICS_MAX_TAGS */

_Static_assert(TAG_SLOTS >= 2 * WEIR_METRICS_MAX_TAGS, "tag table must stay half empty");
_Static_assert((TAG_SLOTS & (TAG_SLOTS - 1)) == 0, "tag table size must be a power of two");

typedef struct tag_entry {
    _Atomic uint64_t value;
    size_t len;
    char tag[];
} tag_entry_t;

struct weir_tag_counter {
    tag_entry_t *_Atomic slots[TAG_SLOTS];
    tag_entry_t *order[WEIR_METRICS_MAX_TAGS]; /* insertion order, for rendering */
    _Atomic size_t n;
    tag_entry_t *other;
    pthread_mutex_t lock;
};

typedef enum series_kind { SK_COUNTER, SK_GAUGE, SK_FN, SK_TAGGED, SK_HISTOGRAM } series_kind_t;

typedef struct series {
    struct series *next;
    const void *owner;
    char *labels; /* rendered and escaped: a="x",b="y"; "" for none */
    series_kind_t kind;
    weir_counter_t counter;
    weir_gauge_t gauge;
    weir_gauge_fn fn;
    void *fn_arg;
    weir_tag_counter_t *tagged;
    weir_histogram_t hist;
} series_t;

typedef struct family {
    struct family *next;
    char *name;
    char *help;
    weir_metric_type_t type;
    series_t *head;
} family_t;

struct weir_metrics {
    pthread_mutex_t lock;
    family_t *families, *last;
};

/* ---- text: names, escaping, numbers ---------------------------------------------------- */

static bool name_ok(const char *s, bool metric)
{
    if (!s || !*s) return false;
    if (!metric && s[0] == '_' && s[1] == '_') return false; /* reserved for Prometheus */
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        bool digit = c >= '0' && c <= '9';
        if (!(alpha || (p > s && digit) || (metric && c == ':'))) return false;
    }
    return true;
}

/* Label values escape backslash, double quote and newline; HELP text escapes backslash and
 * newline only. Both replace bytes that are not UTF-8 with U+FFFD. */
static void escape(weir_buf_t *out, const char *s, size_t n, bool quote)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned char c = *p;
        if (c == '\\') {
            weir_buf_append(out, "\\\\", 2);
        } else if (c == '\n') {
            weir_buf_append(out, "\\n", 2);
        } else if (c == '"' && quote) {
            weir_buf_append(out, "\\\"", 2);
        } else {
            size_t l = weir_utf8_seq(p, (size_t)(end - p));
            if (l == 0) {
                weir_buf_append(out, "\xef\xbf\xbd", 3);
                p++;
                continue;
            }
            weir_buf_append(out, p, l);
            p += l;
            continue;
        }
        p++;
    }
}

static void put_label(weir_buf_t *out, const char *name, const char *value, size_t len)
{
    weir_buf_append(out, name, strlen(name));
    weir_buf_append(out, "=\"", 2);
    escape(out, value, len, true);
    weir_buf_putc(out, '"');
}

/* Prometheus parses Go float syntax; integers print without an exponent up to 2^53. */
static void put_double(weir_buf_t *out, double v)
{
    if (isnan(v)) {
        weir_buf_append(out, "NaN", 3);
    } else if (isinf(v)) {
        weir_buf_printf(out, "%sInf", v > 0 ? "+" : "-");
    } else if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        weir_buf_printf(out, "%.0f", v);
    } else {
        char tmp[40];
        snprintf(tmp, sizeof tmp, "%.15g", v);
        if (strtod(tmp, NULL) != v) snprintf(tmp, sizeof tmp, "%.17g", v);
        weir_buf_append(out, tmp, strlen(tmp));
    }
}

/* ---- tagged counters ------------------------------------------------------------------ */

static tag_entry_t *entry_new(const char *tag, size_t len)
{
    tag_entry_t *e = weir_malloc(sizeof *e + len + 1);
    atomic_init(&e->value, 0);
    e->len = len;
    memcpy(e->tag, tag, len);
    e->tag[len] = '\0';
    return e;
}

static weir_tag_counter_t *tag_counter_new(void)
{
    weir_tag_counter_t *tc = weir_calloc(1, sizeof *tc);
    for (size_t i = 0; i < TAG_SLOTS; i++)
        atomic_init(&tc->slots[i], NULL);
    atomic_init(&tc->n, 0);
    tc->other = entry_new(WEIR_METRICS_OTHER_TAG, strlen(WEIR_METRICS_OTHER_TAG));
    pthread_mutex_init(&tc->lock, NULL);
    return tc;
}

static void tag_counter_free(weir_tag_counter_t *tc)
{
    if (!tc) return;
    size_t n = atomic_load(&tc->n);
    for (size_t i = 0; i < n; i++)
        free(tc->order[i]);
    free(tc->other);
    pthread_mutex_destroy(&tc->lock);
    free(tc);
}

/* Tags are the senders' choice: keyed, so they cannot all be made to share a probe run. */
static uint32_t hash_tag(const char *s, size_t len)
{
    return (uint32_t)weir_hash(s, len);
}

/* The entry for `tag`, or NULL with *slot at the empty slot where it would go. */
static tag_entry_t *tag_probe(weir_tag_counter_t *tc, const char *tag, size_t len, uint32_t h,
                              size_t *slot)
{
    size_t i = h & (TAG_SLOTS - 1);
    for (;;) {
        tag_entry_t *e = atomic_load_explicit(&tc->slots[i], memory_order_acquire);
        if (!e) break;
        if (e->len == len && memcmp(e->tag, tag, len) == 0) return e;
        i = (i + 1) & (TAG_SLOTS - 1);
    }
    *slot = i;
    return NULL;
}

static tag_entry_t *tag_entry_get(weir_tag_counter_t *tc, const char *tag, size_t len)
{
    uint32_t h = hash_tag(tag, len);
    size_t slot;
    tag_entry_t *e = tag_probe(tc, tag, len, h, &slot);
    if (e) return e;
    if (atomic_load_explicit(&tc->n, memory_order_relaxed) >= WEIR_METRICS_MAX_TAGS)
        return tc->other;
    pthread_mutex_lock(&tc->lock);
    e = tag_probe(tc, tag, len, h, &slot); /* another thread may have added it meanwhile */
    if (!e) {
        size_t n = atomic_load_explicit(&tc->n, memory_order_relaxed);
        if (n >= WEIR_METRICS_MAX_TAGS) {
            e = tc->other;
        } else {
            e = entry_new(tag, len);
            tc->order[n] = e;
            atomic_store_explicit(&tc->slots[slot], e, memory_order_release);
            atomic_store_explicit(&tc->n, n + 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&tc->lock);
    return e;
}

void weir_tag_counter_add(weir_tag_counter_t *tc, const char *tag, uint64_t n)
{
    if (!tc || !tag) return;
    size_t len = strlen(tag);
    tag_entry_t *e = len > WEIR_METRICS_MAX_TAG_LEN ? tc->other : tag_entry_get(tc, tag, len);
    atomic_fetch_add_explicit(&e->value, n, memory_order_relaxed);
}

uint64_t weir_tag_counter_get(const weir_tag_counter_t *tc, const char *tag)
{
    if (!tc || !tag) return 0;
    if (strcmp(tag, WEIR_METRICS_OTHER_TAG) == 0)
        return atomic_load_explicit(&tc->other->value, memory_order_relaxed);
    size_t len = strlen(tag), slot;
    tag_entry_t *e = tag_probe((weir_tag_counter_t *)tc, tag, len, hash_tag(tag, len), &slot);
    return e ? atomic_load_explicit(&e->value, memory_order_relaxed) : 0;
}

uint64_t weir_tag_counter_sum(const weir_tag_counter_t *tc)
{
    if (!tc) return 0;
    size_t n = atomic_load_explicit(&tc->n, memory_order_acquire);
    uint64_t sum = atomic_load_explicit(&tc->other->value, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        sum += atomic_load_explicit(&tc->order[i]->value, memory_order_relaxed);
    return sum;
}

/* ---- registry ------------------------------------------------------------------------- */

weir_metrics_t *weir_metrics_new(void)
{
    weir_metrics_t *m = weir_calloc(1, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

static void series_free(series_t *s)
{
    tag_counter_free(s->tagged);
    free(s->labels);
    free(s);
}

static void family_free(family_t *f)
{
    for (series_t *s = f->head, *next; s; s = next) {
        next = s->next;
        series_free(s);
    }
    free(f->name);
    free(f->help);
    free(f);
}

void weir_metrics_free(weir_metrics_t *m)
{
    if (!m) return;
    for (family_t *f = m->families, *next; f; f = next) {
        next = f->next;
        family_free(f);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Renders the label pairs; returns NULL (logged) when a name is invalid or there are too many. */
static char *labels_render(const char *metric, const char *const *labels)
{
    weir_buf_t b;
    weir_buf_init(&b);
    size_t i = 0;
    for (; labels && labels[i]; i += 2) {
        const char *v = labels[i + 1];
        if (i / 2 >= WEIR_METRICS_MAX_LABELS || !name_ok(labels[i], false) ||
            strcmp(labels[i], "tag") == 0 || !v) {
            weir_error("metrics: %s: label '%s' is invalid, reserved or without a value", metric,
                       labels[i]);
            weir_buf_free(&b);
            return NULL;
        }
        if (i) weir_buf_putc(&b, ',');
        put_label(&b, labels[i], v, strlen(v));
    }
    weir_buf_putc(&b, '\0');
    return b.data;
}

/* Finds or adds the family and appends a new series to it. Called with the lock held. */
static series_t *series_add(weir_metrics_t *m, const void *owner, const char *name,
                            const char *help, weir_metric_type_t type, const char *const *labels,
                            series_kind_t kind)
{
    if (!name_ok(name, true)) {
        weir_error("metrics: '%s' is not a valid metric name", name ? name : "(null)");
        return NULL;
    }
    char *lab = labels_render(name, labels);
    if (!lab) return NULL;
    family_t *f = m->families;
    while (f && strcmp(f->name, name) != 0)
        f = f->next;
    if (f && f->type != type) {
        weir_error("metrics: %s is registered as a %s already", name,
                   f->type == WEIR_METRIC_COUNTER ? "counter"
                   : f->type == WEIR_METRIC_GAUGE ? "gauge"
                                                  : "histogram");
        free(lab);
        return NULL;
    }
    for (series_t *s = f ? f->head : NULL; s; s = s->next) {
        if (strcmp(s->labels, lab) == 0 && (s->kind == SK_TAGGED) == (kind == SK_TAGGED)) {
            weir_error("metrics: %s{%s} is registered twice", name, lab);
            free(lab);
            return NULL;
        }
    }
    if (!f) {
        f = weir_calloc(1, sizeof *f);
        f->name = weir_strdup(name);
        f->help = weir_strdup(help ? help : "");
        f->type = type;
        if (m->last)
            m->last->next = f;
        else
            m->families = f;
        m->last = f;
    }
    series_t *s = weir_calloc(1, sizeof *s);
    s->owner = owner;
    s->labels = lab;
    s->kind = kind;
    atomic_init(&s->counter.value, 0);
    atomic_init(&s->gauge.value, 0);
    series_t **pp = &f->head;
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
    return s;
}

static series_t *register_locked(weir_metrics_t *m, const void *owner, const char *name,
                                 const char *help, weir_metric_type_t type,
                                 const char *const *labels, series_kind_t kind)
{
    if (!m) return NULL;
    pthread_mutex_lock(&m->lock);
    series_t *s = series_add(m, owner, name, help, type, labels, kind);
    if (s && kind == SK_TAGGED) s->tagged = tag_counter_new();
    pthread_mutex_unlock(&m->lock);
    return s;
}

weir_counter_t *weir_metrics_counter(weir_metrics_t *m, const void *owner, const char *name,
                                     const char *help, const char *const *labels)
{
    series_t *s = register_locked(m, owner, name, help, WEIR_METRIC_COUNTER, labels, SK_COUNTER);
    return s ? &s->counter : NULL;
}

weir_gauge_t *weir_metrics_gauge(weir_metrics_t *m, const void *owner, const char *name,
                                 const char *help, const char *const *labels)
{
    series_t *s = register_locked(m, owner, name, help, WEIR_METRIC_GAUGE, labels, SK_GAUGE);
    return s ? &s->gauge : NULL;
}

int weir_metrics_gauge_fn(weir_metrics_t *m, const void *owner, const char *name, const char *help,
                          const char *const *labels, weir_gauge_fn fn, void *arg)
{
    if (!m || !fn) return -1;
    pthread_mutex_lock(&m->lock);
    series_t *s = series_add(m, owner, name, help, WEIR_METRIC_GAUGE, labels, SK_FN);
    if (s) {
        s->fn = fn;
        s->fn_arg = arg;
    }
    pthread_mutex_unlock(&m->lock);
    return s ? 0 : -1;
}

weir_tag_counter_t *weir_metrics_tag_counter(weir_metrics_t *m, const void *owner, const char *name,
                                             const char *help, const char *const *labels)
{
    series_t *s = register_locked(m, owner, name, help, WEIR_METRIC_COUNTER, labels, SK_TAGGED);
    return s ? s->tagged : NULL;
}

const double weir_histogram_bounds[WEIR_HISTOGRAM_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 10,
};

weir_histogram_t *weir_metrics_histogram(weir_metrics_t *m, const void *owner, const char *name,
                                         const char *help, const char *const *labels)
{
    series_t *s =
        register_locked(m, owner, name, help, WEIR_METRIC_HISTOGRAM, labels, SK_HISTOGRAM);
    return s ? &s->hist : NULL;
}

void weir_histogram_observe_ns(weir_histogram_t *h, uint64_t ns)
{
    if (!h) return;
    double sec = (double)ns / 1e9;
    size_t i = 0;
    while (i < WEIR_HISTOGRAM_BUCKETS && sec > weir_histogram_bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

void weir_metrics_unregister(weir_metrics_t *m, const void *owner)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    family_t *prev_f = NULL;
    for (family_t *f = m->families, *next_f; f; f = next_f) {
        next_f = f->next;
        for (series_t **pp = &f->head; *pp;) {
            series_t *s = *pp;
            if (s->owner != owner) {
                pp = &s->next;
                continue;
            }
            *pp = s->next;
            series_free(s);
        }
        if (f->head) {
            prev_f = f;
            continue;
        }
        if (prev_f)
            prev_f->next = next_f;
        else
            m->families = next_f;
        if (m->last == f) m->last = prev_f;
        family_free(f);
    }
    pthread_mutex_unlock(&m->lock);
}

/* ---- rendering ------------------------------------------------------------------------ */

static void sample_start(weir_buf_t *out, const family_t *f, const char *labels)
{
    weir_buf_append(out, f->name, strlen(f->name));
    if (*labels) {
        weir_buf_putc(out, '{');
        weir_buf_append(out, labels, strlen(labels));
        weir_buf_putc(out, '}');
    }
    weir_buf_putc(out, ' ');
}

static void tagged_sample(weir_buf_t *out, const family_t *f, const series_t *s,
                          const tag_entry_t *e)
{
    weir_buf_append(out, f->name, strlen(f->name));
    weir_buf_putc(out, '{');
    if (*s->labels) {
        weir_buf_append(out, s->labels, strlen(s->labels));
        weir_buf_putc(out, ',');
    }
    put_label(out, "tag", e->tag, e->len);
    weir_buf_printf(out, "} %" PRIu64 "\n", atomic_load_explicit(&e->value, memory_order_relaxed));
}

static void render_series(weir_buf_t *out, const family_t *f, const series_t *s)
{
    switch (s->kind) {
    case SK_COUNTER:
        sample_start(out, f, s->labels);
        weir_buf_printf(out, "%" PRIu64 "\n", weir_counter_get(&s->counter));
        break;
    case SK_GAUGE:
        sample_start(out, f, s->labels);
        weir_buf_printf(out, "%" PRId64 "\n", weir_gauge_get(&s->gauge));
        break;
    case SK_FN: {
        double v = s->fn(s->fn_arg);
        if (isnan(v)) break;
        sample_start(out, f, s->labels);
        put_double(out, v);
        weir_buf_putc(out, '\n');
        break;
    }
    case SK_HISTOGRAM: {
        /* Prometheus wants cumulative buckets: le="x" counts every observation <= x */
        uint64_t cum = 0;
        for (size_t i = 0; i <= WEIR_HISTOGRAM_BUCKETS; i++) {
            cum += atomic_load_explicit(&s->hist.buckets[i], memory_order_relaxed);
            weir_buf_printf(out, "%s_bucket{%s%sle=\"", f->name, s->labels, *s->labels ? "," : "");
            if (i < WEIR_HISTOGRAM_BUCKETS)
                put_double(out, weir_histogram_bounds[i]);
            else
                weir_buf_append(out, "+Inf", 4);
            weir_buf_printf(out, "\"} %" PRIu64 "\n", cum);
        }
        weir_buf_printf(out, "%s_sum%s%s%s ", f->name, *s->labels ? "{" : "", s->labels,
                        *s->labels ? "}" : "");
        put_double(out, (double)atomic_load_explicit(&s->hist.sum_ns, memory_order_relaxed) / 1e9);
        weir_buf_printf(out, "\n%s_count%s%s%s %" PRIu64 "\n", f->name, *s->labels ? "{" : "",
                        s->labels, *s->labels ? "}" : "",
                        atomic_load_explicit(&s->hist.count, memory_order_relaxed));
        break;
    }
    case SK_TAGGED: {
        size_t n = atomic_load_explicit(&s->tagged->n, memory_order_acquire);
        for (size_t i = 0; i < n; i++)
            tagged_sample(out, f, s, s->tagged->order[i]);
        if (atomic_load_explicit(&s->tagged->other->value, memory_order_relaxed))
            tagged_sample(out, f, s, s->tagged->other);
        break;
    }
    }
}

void weir_metrics_render(weir_metrics_t *m, weir_buf_t *out)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    for (const family_t *f = m->families; f; f = f->next) {
        size_t start = out->len;
        weir_buf_printf(out, "# HELP %s ", f->name);
        escape(out, f->help, strlen(f->help), false);
        weir_buf_printf(out, "\n# TYPE %s %s\n", f->name,
                        f->type == WEIR_METRIC_COUNTER ? "counter"
                        : f->type == WEIR_METRIC_GAUGE ? "gauge"
                                                       : "histogram");
        size_t header_end = out->len;
        for (const series_t *s = f->head; s; s = s->next)
            render_series(out, f, s);
        if (out->len == header_end) out->len = start; /* no samples: no family */
    }
    pthread_mutex_unlock(&m->lock);
}

/* ---- per-plugin metrics ---------------------------------------------------------------- */

struct weir_plugin_metrics {
    weir_metrics_t *m;
    char *category, *id, *type;
    const char *labels[5];
    /* inputs */
    weir_tag_counter_t *in_records, *in_bytes;
    weir_gauge_t *in_conns;
    weir_counter_t *in_tls_failures, *in_acks;
    weir_histogram_t *in_ack_latency;
    /* outputs */
    weir_counter_t *emit_records, *emit_count, *write_count, *num_errors, *retry_count;
    weir_counter_t *delivered_records, *delivered_chunks, *backup_chunks, *unrecoverable_chunks;
    weir_output_status_fn status_fn;
    void *status_arg;
};

static weir_counter_t *pm_counter(weir_plugin_metrics_t *pm, const char *name, const char *help)
{
    return weir_metrics_counter(pm->m, pm, name, help, pm->labels);
}

static void register_output(weir_plugin_metrics_t *pm)
{
    pm->emit_records = pm_counter(pm, "fluentd_output_status_emit_records",
                                  "Events the router handed to the output.");
    pm->emit_count = pm_counter(pm, "fluentd_output_status_emit_count",
                                "Batches the router handed to the output.");
    pm->write_count = pm_counter(pm, "fluentd_output_status_write_count",
                                 "Chunks handed to the output to store (each try counts).");
    pm->num_errors =
        pm_counter(pm, "fluentd_output_status_num_errors", "Chunk writes that failed.");
    pm->retry_count = pm_counter(pm, "fluentd_output_status_retry_count",
                                 "Chunk writes that failed and were scheduled for a retry.");
    pm->delivered_records = pm_counter(pm, "weir_output_delivered_records_total",
                                       "Events stored by the output (chunks delivered).");
    pm->delivered_chunks = pm_counter(pm, "weir_output_delivered_chunks_total",
                                      "Chunks stored by the output and removed from the buffer.");
    pm->backup_chunks = pm_counter(pm, "weir_output_backup_chunks_total",
                                   "Chunks given up after their retries or at once on an "
                                   "unrecoverable error (moved to the backup directory unless "
                                   "disable_chunk_backup is set).");
    pm->unrecoverable_chunks =
        pm_counter(pm, "weir_output_unrecoverable_chunks_total",
                   "Chunks given up at once because the output reported an error that no retry "
                   "can clear (also counted in weir_output_backup_chunks_total).");
}

weir_plugin_metrics_t *weir_plugin_metrics_new(weir_metrics_t *m, const char *category,
                                               const char *plugin_id, const char *type)
{
    weir_plugin_metrics_t *pm = weir_calloc(1, sizeof *pm);
    pm->m = m;
    pm->category = weir_strdup(category);
    pm->id = weir_strdup(plugin_id);
    pm->type = weir_strdup(type);
    pm->labels[0] = "plugin_id";
    pm->labels[1] = pm->id;
    pm->labels[2] = "type";
    pm->labels[3] = pm->type;
    pm->labels[4] = NULL;
    if (strcmp(category, "input") == 0) {
        pm->in_records =
            weir_metrics_tag_counter(m, pm, "fluentd_input_status_num_records_total",
                                     "Events received by the input, by tag.", pm->labels);
        pm->in_bytes =
            weir_metrics_tag_counter(m, pm, "weir_input_bytes_total",
                                     "Bytes of the events received by the input as they arrived "
                                     "on the wire, by tag.",
                                     pm->labels);
    } else if (strcmp(category, "output") == 0) {
        register_output(pm);
    }
    return pm;
}

void weir_plugin_metrics_free(weir_plugin_metrics_t *pm)
{
    if (!pm) return;
    weir_metrics_unregister(pm->m, pm);
    free(pm->category);
    free(pm->id);
    free(pm->type);
    free(pm);
}

weir_metrics_t *weir_plugin_metrics_registry(const weir_plugin_metrics_t *pm)
{
    return pm ? pm->m : NULL;
}

const char *weir_plugin_metrics_id(const weir_plugin_metrics_t *pm)
{
    return pm ? pm->id : "";
}

const char *weir_plugin_metrics_type(const weir_plugin_metrics_t *pm)
{
    return pm ? pm->type : "";
}

const char *weir_plugin_metrics_category(const weir_plugin_metrics_t *pm)
{
    return pm ? pm->category : "";
}

const char *const *weir_plugin_metrics_labels(const weir_plugin_metrics_t *pm)
{
    return pm ? pm->labels : NULL;
}

void weir_metrics_input_events(weir_plugin_metrics_t *pm, const char *tag, uint64_t events,
                               uint64_t bytes)
{
    if (!pm) return;
    weir_tag_counter_add(pm->in_records, tag, events);
    weir_tag_counter_add(pm->in_bytes, tag, bytes);
}

void weir_metrics_input_network(weir_plugin_metrics_t *pm, bool acks)
{
    if (!pm || pm->in_conns) return;
    pm->in_conns = weir_metrics_gauge(pm->m, pm, "weir_input_connections",
                                      "Connections open on the input now.", pm->labels);
    pm->in_tls_failures = pm_counter(pm, "weir_input_tls_handshake_failures_total",
                                     "TLS handshakes that failed or timed out.");
    if (acks)
        pm->in_acks =
            pm_counter(pm, "weir_input_acks_total",
                       "Acknowledgements sent to senders (each after its events were durable).");
}

void weir_metrics_input_timed(weir_plugin_metrics_t *pm)
{
    if (!pm || pm->in_ack_latency) return;
    pm->in_ack_latency = weir_metrics_histogram(
        pm->m, pm, "weir_input_ack_latency_seconds",
        "From a complete request to its acknowledgement (forward ack, HTTP response), durable "
        "store included.",
        pm->labels);
}

void weir_metrics_input_ack_latency(weir_plugin_metrics_t *pm, uint64_t ns)
{
    if (pm) weir_histogram_observe_ns(pm->in_ack_latency, ns);
}

void weir_metrics_input_connection(weir_plugin_metrics_t *pm, int delta)
{
    if (pm) weir_gauge_add(pm->in_conns, delta);
}

void weir_metrics_input_tls_failure(weir_plugin_metrics_t *pm)
{
    if (pm) weir_counter_add(pm->in_tls_failures, 1);
}

void weir_metrics_input_acks(weir_plugin_metrics_t *pm, uint64_t n)
{
    if (pm) weir_counter_add(pm->in_acks, n);
}

void weir_metrics_input_totals(const weir_plugin_metrics_t *pm, uint64_t *events, uint64_t *bytes)
{
    *events = pm ? weir_tag_counter_sum(pm->in_records) : 0;
    *bytes = pm ? weir_tag_counter_sum(pm->in_bytes) : 0;
}

void weir_metrics_output_emit(weir_plugin_metrics_t *pm, uint64_t records)
{
    if (!pm) return;
    weir_counter_add(pm->emit_count, 1);
    weir_counter_add(pm->emit_records, records);
}

void weir_metrics_output_write(weir_plugin_metrics_t *pm)
{
    if (pm) weir_counter_add(pm->write_count, 1);
}

void weir_metrics_output_written(weir_plugin_metrics_t *pm, uint64_t records)
{
    if (!pm) return;
    weir_counter_add(pm->delivered_chunks, 1);
    weir_counter_add(pm->delivered_records, records);
}

void weir_metrics_output_failed(weir_plugin_metrics_t *pm, bool retry, bool backup)
{
    if (!pm) return;
    weir_counter_add(pm->num_errors, 1);
    if (retry) weir_counter_add(pm->retry_count, 1);
    if (backup) weir_counter_add(pm->backup_chunks, 1);
}

void weir_metrics_output_unrecoverable(weir_plugin_metrics_t *pm)
{
    if (pm) weir_counter_add(pm->unrecoverable_chunks, 1);
}

void weir_plugin_metrics_set_status(weir_plugin_metrics_t *pm, weir_output_status_fn fn, void *arg)
{
    if (!pm) return;
    pm->status_fn = fn;
    pm->status_arg = arg;
}

void weir_plugin_metrics_output_status(const weir_plugin_metrics_t *pm, weir_output_status_t *st)
{
    memset(st, 0, sizeof *st);
    if (!pm) return;
    st->emit_records = weir_counter_get(pm->emit_records);
    st->emit_count = weir_counter_get(pm->emit_count);
    st->write_count = weir_counter_get(pm->write_count);
    st->num_errors = weir_counter_get(pm->num_errors);
    st->retry_count = weir_counter_get(pm->retry_count);
    st->delivered_records = weir_counter_get(pm->delivered_records);
    st->delivered_chunks = weir_counter_get(pm->delivered_chunks);
    st->backup_chunks = weir_counter_get(pm->backup_chunks);
    if (pm->status_fn) pm->status_fn(pm->status_arg, st);
}
