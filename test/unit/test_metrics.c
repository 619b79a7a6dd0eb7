/* The metrics registry (src/core/metrics.c): the exposition text a Prometheus server reads,
 * label escaping, the bound on tag values, unregistration by owner, and updates from two
 * threads at once. The HTTP endpoints are tested through the real binary in
 * test/integration/test_metrics.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "weir/metrics.h"

static char *render(weir_metrics_t *m)
{
    weir_buf_t b;
    weir_buf_init(&b);
    weir_metrics_render(m, &b);
    weir_buf_putc(&b, '\0');
    return b.data;
}

static double fixed_value(void *arg)
{
    return *(double *)arg;
}

static void test_render_exposition_format(void **state)
{
    weir_metrics_t *m = weir_metrics_new();
    int owner;
    const char *labels[] = {"plugin_id", "out1", "type", "file", NULL};
    weir_counter_t *c = weir_metrics_counter(m, &owner, "x_total", "Things done.", labels);
    weir_gauge_t *g = weir_metrics_gauge(m, &owner, "x_open", "Open things.", NULL);
    double ratio = 0.25, big = 1e20, whole = 42;
    assert_int_equal(
        weir_metrics_gauge_fn(m, &owner, "x_ratio", "A ratio.", labels, fixed_value, &ratio), 0);
    assert_int_equal(weir_metrics_gauge_fn(m, &owner, "x_big", "Big.", NULL, fixed_value, &big), 0);
    assert_int_equal(
        weir_metrics_gauge_fn(m, &owner, "x_whole", "Whole.", NULL, fixed_value, &whole), 0);
    weir_counter_add(c, 3);
    weir_counter_add(c, 4);
    weir_gauge_add(g, 5);
    weir_gauge_add(g, -7);
    char *text = render(m);
    assert_string_equal(text, "# HELP x_total Things done.\n"
                              "# TYPE x_total counter\n"
                              "x_total{plugin_id=\"out1\",type=\"file\"} 7\n"
                              "# HELP x_open Open things.\n"
                              "# TYPE x_open gauge\n"
                              "x_open -2\n"
                              "# HELP x_ratio A ratio.\n"
                              "# TYPE x_ratio gauge\n"
                              "x_ratio{plugin_id=\"out1\",type=\"file\"} 0.25\n"
                              "# HELP x_big Big.\n"
                              "# TYPE x_big gauge\n"
                              "x_big 1e+20\n"
                              "# HELP x_whole Whole.\n"
                              "# TYPE x_whole gauge\n"
                              "x_whole 42\n");
    free(text);
    weir_metrics_free(m);
}

static void test_histogram_buckets_are_cumulative(void **state)
{
    weir_metrics_t *m = weir_metrics_new();
    int owner;
    const char *labels[] = {"plugin_id", "in1", NULL};
    weir_histogram_t *h = weir_metrics_histogram(m, &owner, "lat_seconds", "Latency.", labels);
    assert_non_null(h);
    weir_histogram_observe_ns(h, 50000);       /* 0.05 ms: first bucket */
    weir_histogram_observe_ns(h, 100000);      /* exactly 0.1 ms: still the first (le) */
    weir_histogram_observe_ns(h, 3000000);     /* 3 ms: le=0.005 */
    weir_histogram_observe_ns(h, 20000000000); /* 20 s: only +Inf */
    char *text = render(m);
    assert_non_null(strstr(text, "# TYPE lat_seconds histogram\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{plugin_id=\"in1\",le=\"0.0001\"} 2\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{plugin_id=\"in1\",le=\"0.0025\"} 2\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{plugin_id=\"in1\",le=\"0.005\"} 3\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{plugin_id=\"in1\",le=\"10\"} 3\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{plugin_id=\"in1\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(text, "lat_seconds_count{plugin_id=\"in1\"} 4\n"));
    assert_non_null(strstr(text, "lat_seconds_sum{plugin_id=\"in1\"} 20.00315\n"));
    /* a histogram name cannot become a counter */
    assert_null(weir_metrics_counter(m, &owner, "lat_seconds", "x", NULL));
    free(text);
    weir_metrics_free(m);
}

static void test_two_series_share_one_family(void **state)
{
    weir_metrics_t *m = weir_metrics_new();
    int a, b;
    const char *la[] = {"plugin_id", "a", NULL};
    const char *lb[] = {"plugin_id", "b", NULL};
    weir_counter_add(weir_metrics_counter(m, &a, "y_total", "Y.", la), 1);
    weir_counter_add(weir_metrics_counter(m, &b, "y_total", "ignored", lb), 2);
    char *text = render(m);
    assert_string_equal(text, "# HELP y_total Y.\n"
                              "# TYPE y_total counter\n"
                              "y_total{plugin_id=\"a\"} 1\n"
                              "y_total{plugin_id=\"b\"} 2\n");
    free(text);
    weir_metrics_free(m);
}

static void test_label_values_and_help_are_escaped(void **state)
{
    weir_metrics_t *m = weir_metrics_new();
    int owner;
    const char *labels[] = {"path", "C:\\dir \"q\"\nnext \xff end \xc3\xa9", NULL};
    weir_counter_t *c =
        weir_metrics_counter(m, &owner, "z_total", "Help with \\ and\nnewline.", labels);
    weir_tag_counter_t *t = weir_metrics_tag_counter(m, &owner, "t_total", "T.", NULL);
    weir_counter_add(c, 1);
    weir_tag_counter_add(t, "a\"b\\c\nd", 2);
    char *text = render(m);
    assert_string_equal(text,
                        "# HELP z_total Help with \\\\ and\\nnewline.\n"
                        "# TYPE z_total counter\n"
                        "z_total{path=\"C:\\\\dir \\\"q\\\"\\nnext \xef\xbf\xbd end \xc3\xa9\"} 1\n"
                        "# HELP t_total T.\n"
                        "# TYPE t_total counter\n"
                        "t_total{tag=\"a\\\"b\\\\c\\nd\"} 2\n");
    free(text);
    weir_metrics_free(m);
}

static void test_invalid_registrations_return_null(void **state)
{
    weir_metrics_t *m = weir_metrics_new();
    int owner;
    const char *bad_label[] = {"bad-name", "x", NULL};
    const char *reserved[] = {"__name", "x", NULL};
    const char *tag_label[] = {"tag", "x", NULL};
    const char *no_value[] = {"a", NULL};
    assert_null(weir_metrics_counter(m, &owner, "1abc", "", NULL));
    assert_null(weir_metrics_counter(m, &owner, "a-b", "", NULL));
    assert_null(weir_metrics_counter(m, &owner, "ok_total", "", bad_label));
    assert_null(weir_metrics_counter(m, &owner, "ok_total", "", reserved));
    assert_null(weir_metrics_counter(m, &owner, "ok_total", "", tag_label));
    assert_null(weir_metrics_counter(m, &owner, "ok_total", "", no_value));
    assert_non_null(weir_metrics_counter(m, &owner, "ns:ok_total", "", NULL));
    /* a type clash and a duplicate series */
    assert_non_null(weir_metrics_counter(m, &owner, "clash", "", NULL));
    assert_null(weir_metrics_gauge(m, &owner, "clash", "", NULL));
    assert_null(weir_metrics_counter(m, &owner, "clash", "", NULL));
    /* WEIR_METRICS_MAX_LABELS pairs are fine, one more is not */
    const char *many[2 * (WEIR_METRICS_MAX_LABELS + 1) + 1];
    char names[WEIR_METRICS_MAX_LABELS + 1][8];
    for (int i = 0; i <= WEIR_METRICS_MAX_LABELS; i++) {
        snprintf(names[i], sizeof names[i], "l%d", i);
        many[2 * i] = names[i];
        many[2 * i + 1] = "v";
    }
    many[2 * WEIR_METRICS_MAX_LABELS] = NULL;
    assert_non_null(weir_metrics_counter(m, &owner, "max_labels", "", many));
    many[2 * WEIR_METRICS_MAX_LABELS] = names[WEIR_METRICS_MAX_LABELS];
    many[2 * WEIR_METRICS_MAX_LABELS + 2] = NULL;
    assert_null(weir_metrics_counter(m, &owner, "too_many_labels", "", many));
    /* NULL handles are no-ops */
    weir_counter_add(NULL, 1);
    weir_gauge_set(NULL, 1);
    weir_tag_counter_add(NULL, "x", 1);
    assert_null(weir_metrics_counter(NULL, &owner, "x", "", NULL));
    weir_metrics_free(m);
}

static void test_tag_values_are_bounded(void **state)
{
    weir_metrics_t *m = weir_metrics_new();
    int owner;
    weir_tag_counter_t *t = weir_metrics_tag_counter(m, &owner, "ev_total", "Events.", NULL);
    char tag[32];
    for (int i = 0; i < WEIR_METRICS_MAX_TAGS; i++) {
        snprintf(tag, sizeof tag, "session.%d", i);
        weir_tag_counter_add(t, tag, 1);
    }
    /* exactly at the bound: every tag has its own series, nothing under _other_ */
    assert_int_equal(weir_tag_counter_get(t, "session.0"), 1);
    assert_int_equal(weir_tag_counter_get(t, "session.999"), 1);
    assert_int_equal(weir_tag_counter_get(t, WEIR_METRICS_OTHER_TAG), 0);
    char *text = render(m);
    assert_null(strstr(text, "_other_"));
    free(text);
    /* one past it: counted under _other_; known tags still count on their own */
    weir_tag_counter_add(t, "session.1000", 5);
    weir_tag_counter_add(t, "session.1001", 2);
    weir_tag_counter_add(t, "session.7", 1);
    assert_int_equal(weir_tag_counter_get(t, "session.1000"), 0);
    assert_int_equal(weir_tag_counter_get(t, WEIR_METRICS_OTHER_TAG), 7);
    assert_int_equal(weir_tag_counter_get(t, "session.7"), 2);
    assert_int_equal(weir_tag_counter_sum(t), WEIR_METRICS_MAX_TAGS + 8);
    text = render(m);
    assert_non_null(strstr(text, "ev_total{tag=\"_other_\"} 7\n"));
    assert_non_null(strstr(text, "ev_total{tag=\"session.7\"} 2\n"));
    assert_null(strstr(text, "session.1000"));
    size_t lines = 0;
    for (char *p = text; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 2 + WEIR_METRICS_MAX_TAGS + 1);
    free(text);
    weir_metrics_free(m);
}

static void test_tag_length_is_bounded(void **state)
{
    weir_metrics_t *m = weir_metrics_new();
    int owner;
    weir_tag_counter_t *t = weir_metrics_tag_counter(m, &owner, "ev_total", "Events.", NULL);
    char tag[WEIR_METRICS_MAX_TAG_LEN + 2];
    memset(tag, 'a', sizeof tag);
    tag[WEIR_METRICS_MAX_TAG_LEN] = '\0'; /* exactly at the limit */
    weir_tag_counter_add(t, tag, 1);
    assert_int_equal(weir_tag_counter_get(t, tag), 1);
    tag[WEIR_METRICS_MAX_TAG_LEN] = 'a';
    tag[WEIR_METRICS_MAX_TAG_LEN + 1] = '\0'; /* one past it */
    weir_tag_counter_add(t, tag, 1);
    assert_int_equal(weir_tag_counter_get(t, tag), 0);
    assert_int_equal(weir_tag_counter_get(t, WEIR_METRICS_OTHER_TAG), 1);
    weir_metrics_free(m);
}

static void test_unregister_by_owner(void **state)
{
    weir_metrics_t *m = weir_metrics_new();
    int a, b;
    const char *la[] = {"plugin_id", "a", NULL};
    const char *lb[] = {"plugin_id", "b", NULL};
    weir_counter_add(weir_metrics_counter(m, &a, "shared_total", "S.", la), 1);
    weir_counter_add(weir_metrics_counter(m, &b, "shared_total", "S.", lb), 2);
    weir_counter_add(weir_metrics_counter(m, &a, "only_a_total", "A.", la), 3);
    weir_tag_counter_add(weir_metrics_tag_counter(m, &a, "tags_total", "T.", la), "x", 4);
    weir_metrics_unregister(m, &a);
    char *text = render(m);
    assert_string_equal(text, "# HELP shared_total S.\n"
                              "# TYPE shared_total counter\n"
                              "shared_total{plugin_id=\"b\"} 2\n");
    free(text);
    /* the name is free again, even with another type */
    assert_non_null(weir_metrics_gauge(m, &a, "only_a_total", "now a gauge", NULL));
    weir_metrics_unregister(m, &b);
    weir_metrics_unregister(m, &a);
    text = render(m);
    assert_string_equal(text, "");
    free(text);
    weir_metrics_free(m);
}

static double nan_value(void *arg)
{
    return NAN;
}

static void test_gauge_fn_without_value_is_left_out(void **state)
{
    weir_metrics_t *m = weir_metrics_new();
    int owner;
    assert_int_equal(weir_metrics_gauge_fn(m, &owner, "none", "No value.", NULL, nan_value, NULL),
                     0);
    char *text = render(m);
    assert_string_equal(text, "");
    free(text);
    weir_metrics_free(m);
}

typedef struct worker_arg {
    weir_counter_t *c;
    weir_tag_counter_t *t;
    int id;
} worker_arg_t;

#define ROUNDS 100000

static void *worker(void *p)
{
    worker_arg_t *w = p;
    char tag[32];
    for (int i = 0; i < ROUNDS; i++) {
        weir_counter_add(w->c, 1);
        /* both threads add the same new tags at the same time, and some of their own */
        snprintf(tag, sizeof tag, (i & 1) ? "shared.%d" : "own%d.%d", (i / 2) % 700, w->id);
        weir_tag_counter_add(w->t, tag, 1);
    }
    return NULL;
}

static void test_two_threads_count_exactly(void **state)
{
    weir_metrics_t *m = weir_metrics_new();
    int owner;
    worker_arg_t w[2];
    pthread_t th[2];
    weir_counter_t *c = weir_metrics_counter(m, &owner, "c_total", "C.", NULL);
    weir_tag_counter_t *t = weir_metrics_tag_counter(m, &owner, "t_total", "T.", NULL);
    for (int i = 0; i < 2; i++) {
        w[i] = (worker_arg_t){.c = c, .t = t, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
    }
    /* render while they run: must not crash or tear */
    for (int i = 0; i < 20; i++)
        free(render(m));
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(weir_counter_get(c), 2 * ROUNDS);
    assert_int_equal(weir_tag_counter_sum(t), 2 * ROUNDS);
    /* every shared tag is stored once, counted by both threads */
    assert_int_equal(weir_tag_counter_get(t, "shared.0"), 2 * (ROUNDS / 2 / 700 + 1));
    weir_metrics_free(m);
}

static void status_fn(void *arg, weir_output_status_t *st)
{
    st->has_buffer = true;
    st->total_bytes = *(uint64_t *)arg;
}

static void test_plugin_metrics(void **state)
{
    weir_metrics_t *m = weir_metrics_new();
    weir_plugin_metrics_t *in = weir_plugin_metrics_new(m, "input", "in1", "forward");
    weir_plugin_metrics_t *out = weir_plugin_metrics_new(m, "output", "out1", "file");
    weir_metrics_input_network(in, true);
    weir_metrics_input_events(in, "app.a", 3, 300);
    weir_metrics_input_events(in, "app.b", 2, 50);
    weir_metrics_input_connection(in, 1);
    weir_metrics_input_acks(in, 2);
    weir_metrics_input_tls_failure(in);
    weir_metrics_output_emit(out, 5);
    weir_metrics_output_write(out);
    weir_metrics_output_failed(out, true, false);
    weir_metrics_output_write(out);
    weir_metrics_output_written(out, 5);
    uint64_t ev, by;
    weir_metrics_input_totals(in, &ev, &by);
    assert_int_equal(ev, 5);
    assert_int_equal(by, 350);
    uint64_t bytes = 1234;
    weir_plugin_metrics_set_status(out, status_fn, &bytes);
    weir_output_status_t st;
    weir_plugin_metrics_output_status(out, &st);
    assert_true(st.has_buffer);
    assert_int_equal(st.total_bytes, 1234);
    assert_int_equal(st.emit_records, 5);
    assert_int_equal(st.emit_count, 1);
    assert_int_equal(st.write_count, 2);
    assert_int_equal(st.num_errors, 1);
    assert_int_equal(st.retry_count, 1);
    assert_int_equal(st.delivered_records, 5);
    assert_int_equal(st.delivered_chunks, 1);
    char *text = render(m);
    const char *expect[] = {
        "fluentd_input_status_num_records_total{plugin_id=\"in1\",type=\"forward\",tag=\"app.a\"} "
        "3\n",
        "weir_input_bytes_total{plugin_id=\"in1\",type=\"forward\",tag=\"app.b\"} 50\n",
        "weir_input_connections{plugin_id=\"in1\",type=\"forward\"} 1\n",
        "weir_input_acks_total{plugin_id=\"in1\",type=\"forward\"} 2\n",
        "weir_input_tls_handshake_failures_total{plugin_id=\"in1\",type=\"forward\"} 1\n",
        "fluentd_output_status_emit_records{plugin_id=\"out1\",type=\"file\"} 5\n",
        "fluentd_output_status_retry_count{plugin_id=\"out1\",type=\"file\"} 1\n",
        "weir_output_delivered_chunks_total{plugin_id=\"out1\",type=\"file\"} 1\n",
        "# TYPE fluentd_output_status_num_errors counter\n",
        NULL,
    };
    for (size_t i = 0; expect[i]; i++)
        if (!strstr(text, expect[i])) fail_msg("missing: %s\nin:\n%s", expect[i], text);
    free(text);
    weir_plugin_metrics_free(in);
    weir_plugin_metrics_free(out);
    text = render(m);
    assert_string_equal(text, "");
    free(text);
    weir_metrics_free(m);
}

/* The value of the unlabelled sample `name` in a rendered registry; NAN when it is absent. */
static double sample(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NAN;
}

/* Open descriptors counted another way than /proc/self/fd: each number that fcntl accepts. */
static double count_fds(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    int max = rl.rlim_cur < 65536 ? (int)rl.rlim_cur : 65536;
    double n = 0;
    for (int fd = 0; fd < max; fd++)
        if (fcntl(fd, F_GETFD) != -1) n++;
    return n;
}

/* The process gauges read this process: as many descriptors as fcntl finds, three more descriptors
 * are three more, 64 MiB touched is at least 63 MiB more resident, the limit is RLIMIT_NOFILE, the
 * start time stays put. */
static void test_process_gauges_follow_the_process(void **state)
{
    (void)state;
    weir_metrics_process(NULL, NULL); /* no registry: nothing, no crash */
    weir_metrics_t *m = weir_metrics_new();
    int owner;
    weir_metrics_process(m, &owner);
    char *t1 = render(m);
    double fds = sample(t1, "process_open_fds"), rss = sample(t1, "process_resident_memory_bytes");
    double start = sample(t1, "process_start_time_seconds");
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_true(sample(t1, "process_max_fds") == (double)rl.rlim_cur);
    assert_true(fds == count_fds());
    assert_true(rss > 0);
    /* /proc's boot time is whole seconds: the start may read up to one second late */
    assert_true(start > 0 && start <= (double)time(NULL) + 1);
    free(t1);

    int p[2];
    assert_int_equal(pipe(p), 0);
    int d = dup(p[0]);
    assert_true(d >= 0);
    char *t2 = render(m);
    assert_true(sample(t2, "process_open_fds") == fds + 3);
    free(t2);
    close(p[0]);
    close(p[1]);
    close(d);

    size_t big = (size_t)64 << 20;
    char *mem = malloc(big);
    assert_non_null(mem);
    memset(mem, 1, big);
    char *t3 = render(m);
    assert_true(sample(t3, "process_resident_memory_bytes") >= rss + (double)(big - (1 << 20)));
    assert_true(sample(t3, "process_start_time_seconds") == start);
    assert_true(sample(t3, "process_open_fds") == fds);
    free(t3);
    free(mem);
    weir_metrics_unregister(m, &owner);
    char *t4 = render(m);
    assert_null(strstr(t4, "process_"));
    free(t4);
    weir_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exposition_format),
        cmocka_unit_test(test_histogram_buckets_are_cumulative),
        cmocka_unit_test(test_two_series_share_one_family),
        cmocka_unit_test(test_label_values_and_help_are_escaped),
        cmocka_unit_test(test_invalid_registrations_return_null),
        cmocka_unit_test(test_tag_values_are_bounded),
        cmocka_unit_test(test_tag_length_is_bounded),
        cmocka_unit_test(test_unregister_by_owner),
        cmocka_unit_test(test_gauge_fn_without_value_is_left_out),
        cmocka_unit_test(test_two_threads_count_exactly),
        cmocka_unit_test(test_plugin_metrics),
        cmocka_unit_test(test_process_gauges_follow_the_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
