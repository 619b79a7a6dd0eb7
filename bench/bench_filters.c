/* What the filters cost per event, alone: the audit batch of bench_format (1,000 records of
 * about 200 bytes) through grep and record_transformer configurations as a router calls them,
 * N times, timed by the thread's CPU clock. The end-to-end cost (forward input → file, with
 * and without each filter) is bench/filters.sh. No assertions: the numbers go to
 * bench/RESULTS.md by hand.
 *
 *   bench_filters [iterations]   (default 2000, i.e. 2 million events per configuration) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_records.h"
#include "weir/config.h"
#include "weir/log.h"
#include "weir/plugin.h"

#define NRECORDS 1000

static const struct {
    const char *name, *type, *body;
} configs[] = {
    {"grep, 1 regexp (kept)", "grep",
     "<regexp>\nkey event\npattern /^(session|user)\\./\n</regexp>"},
    {"grep, regexp+exclude+nested", "grep",
     "<regexp>\nkey event\npattern /^(session|user)\\./\n</regexp>\n"
     "<exclude>\nkey user\npattern /^admin@/\n</exclude>\n"
     "<exclude>\nkey $.meta.kind\npattern /^(?:db|app)$/\n</exclude>"},
    {"grep, half dropped", "grep", "<exclude>\nkey ei\npattern /[13579]$/\n</exclude>"},
    {"record_transformer, 4 fields", "record_transformer",
     "<record>\nhostname ${hostname}\nservice ${tag_parts[0]}\ntag ${tag}\n"
     "user_copy ${record[\"user\"]}\n</record>"},
    {"record_transformer, string + remove", "record_transformer",
     "remove_keys $.meta.kind,attempt\n<record>\nsummary ${record[\"event\"]} by "
     "${record[\"user\"]} at ${time}\n</record>"},
};

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int iterations = argc > 1 ? atoi(argv[1]) : 2000;
    if (iterations <= 0) iterations = 2000;
    weir_log_set_level(WEIR_LOG_ERROR);
    weir_batch_t b;
    bench_audit_batch(&b, NRECORDS);
    printf("%d records, %zu bytes of msgpack per record on average, %d iterations\n", NRECORDS,
           b.data.len / NRECORDS - 1 - WEIR_EVENTTIME_LEN, iterations);
    { /* the floor: walking the batch's entries, which every filter does */
        uint64_t seen = 0;
        double c0 = cpu_s();
        for (int it = 0; it < iterations; it++) {
            weir_batch_iter_t bi;
            weir_entry_t e;
            weir_batch_iter_init(&bi, b.data.data, b.data.len);
            while (weir_batch_iter_next(&bi, &e) == 1)
                seen += e.record_len > 0;
        }
        double dc = cpu_s() - c0;
        printf("%-36s %6.0f ns/event  (%llu events)\n", "walking the entries only",
               dc * 1e9 / ((double)NRECORDS * iterations), (unsigned long long)seen);
    }
    for (size_t c = 0; c < sizeof configs / sizeof *configs; c++) {
        char text[2048];
        snprintf(text, sizeof text, "<filter **>\n@type %s\n%s\n</filter>\n", configs[c].type,
                 configs[c].body);
        weir_err_t err;
        weir_conf_section_t *root = weir_conf_parse_string(text, strlen(text), "bench", &err);
        const weir_filter_ops_t *ops = weir_filter_find(configs[c].type);
        void *state = NULL;
        if (!root || !ops ||
            ops->create(NULL, weir_conf_child(root, "filter", 0), &state, &err) != 0) {
            fprintf(stderr, "%s: %s\n", configs[c].name, err.msg);
            return 1;
        }
        weir_batch_t out;
        weir_batch_init(&out, b.tag, b.tag_len);
        uint64_t passed = 0;
        double c0 = cpu_s();
        for (int it = 0; it < iterations; it++) {
            weir_batch_reset(&out);
            void *hold = NULL;
            weir_filter_result_t r = ops->filter(state, &b, &out, &hold);
            passed += r == WEIR_FILTER_SAME ? b.count : out.count;
        }
        double dc = cpu_s() - c0;
        double n = (double)NRECORDS * iterations;
        printf("%-36s %6.0f ns/event  %9.0f events/cpu-s  %5.1f%% passed on\n", configs[c].name,
               dc * 1e9 / n, n / dc, 100.0 * (double)passed / n);
        weir_batch_free(&out);
        ops->destroy(state);
        weir_conf_free(root);
    }
    weir_batch_free(&b);
    return 0;
}
