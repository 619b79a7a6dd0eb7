/* The engine's side of @type relabel and @type copy: labels reached through relabels (loops
 * refused with the loop named, a diamond accepted, unknown labels refused), and batches that
 * a relabel and a copy's stores carry, counted on each plugin as monitor_agent shows them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "weir/engine.h"
#include "weir/log.h"

static uv_loop_t loop;

/* Builds `conf` (dry run); returns the engine or NULL with err filled. */
static weir_engine_t *build(const char *conf, weir_conf_section_t **root, bool dry, weir_err_t *err)
{
    *root = weir_conf_parse_string(conf, strlen(conf), "t.conf", err);
    assert_non_null(*root);
    weir_engine_opts_t o = {.dry_run = dry, .log_level_override = -1};
    return weir_engine_new(&loop, *root, &o, err);
}

static void expect_refused(const char *conf, const char *msg)
{
    weir_conf_section_t *root;
    weir_err_t err = {{0}};
    weir_engine_t *eng = build(conf, &root, true, &err);
    if (eng || !strstr(err.msg, msg)) fprintf(stderr, "got: %s\n", eng ? "(built)" : err.msg);
    assert_null(eng);
    assert_non_null(strstr(err.msg, msg));
    weir_conf_free(root);
}

static void expect_built(const char *conf)
{
    weir_conf_section_t *root;
    weir_err_t err = {{0}};
    weir_engine_t *eng = build(conf, &root, true, &err);
    if (!eng) fprintf(stderr, "refused: %s\n", err.msg);
    assert_non_null(eng);
    weir_engine_free(eng);
    weir_conf_free(root);
}

#define RELABEL(pat, to) "<match " pat ">\n @type relabel\n @label " to "\n</match>\n"
#define SINK "<match **>\n @type null\n</match>\n"

static void test_loops_are_refused_and_named(void **state)
{
    (void)state;
    expect_refused("<label @A>\n" RELABEL("**", "@A") "</label>\n", "@A -> @A");
    expect_refused(RELABEL("**", "@ROOT"), "@ROOT -> @ROOT");
    expect_refused(RELABEL("**", "@A") "<label @A>\n" RELABEL(
                       "**", "@B") "</label>\n"
                                   "<label @B>\n" RELABEL("**", "@ROOT") "</label>\n",
                   "relabel loop: events would go round @B -> @ROOT -> @A -> @B forever");
    /* a relabel inside a copy's store is an edge of its label too */
    expect_refused("<label @A>\n<match **>\n @type copy\n <store>\n  @type relabel\n"
                   "  @label @A\n </store>\n</match>\n</label>\n",
                   "t.conf:6:3: @label @A: relabel loop");
}

/* Two paths to one label are no loop: the search must not take a label seen twice for one. */
static void test_diamond_is_accepted_and_closing_it_is_not(void **state)
{
    (void)state;
    const char *diamond = RELABEL("**", "@A") "<label @A>\n" RELABEL("b.**", "@B")
        RELABEL("c.**", "@C") "</label>\n<label @B>\n" RELABEL(
            "**", "@D") "</label>\n"
                        "<label @C>\n" RELABEL("**", "@D") "</label>\n<label @D>\n" SINK
                                                           "</label>\n";
    expect_built(diamond);
    expect_refused(
        RELABEL("**", "@A") "<label @A>\n" RELABEL("b.**", "@B")
            RELABEL("c.**", "@C") "</label>\n<label @B>\n" RELABEL(
                "**", "@D") "</label>\n<label @C>\n" RELABEL("**", "@D") "</label>\n<label "
                                                                         "@D>\n" RELABEL("**",
                                                                                         "@C") "</"
                                                                                               "lab"
                                                                                               "el>"
                                                                                               "\n",
        "@D -> @C -> @D");
}

static void test_unknown_or_missing_label_is_refused(void **state)
{
    (void)state;
    expect_refused(RELABEL("**", "@nope"), "t.conf:3:2: @label @nope: no <label @nope> is defined");
    expect_refused("<match **>\n @type relabel\n</match>\n", "needs '@label @name'");
}

static uint64_t emitted(weir_engine_t *eng, const char *id)
{
    for (size_t i = 0; i < weir_engine_plugin_count(eng); i++) {
        const weir_engine_plugin_t *p = weir_engine_plugin_at(eng, i);
        if (strcmp(p->plugin_id, id) != 0) continue;
        weir_output_status_t st;
        weir_plugin_metrics_output_status(p->metrics, &st);
        return st.emit_records;
    }
    fail_msg("no plugin %s", id);
    return 0;
}

/* A batch at the top level goes through a relabel into @audit, whose copy hands it to both
 * stores; each plugin counts it, and the stores are listed after their copy. */
static void test_batch_travels_relabel_and_copy(void **state)
{
    (void)state;
    const char *conf = "<match app.**>\n @type relabel\n @id rl\n @label @audit\n</match>\n"
                       "<label @audit>\n<match **>\n @type copy\n @id cp\n"
                       " <store>\n  @type null\n  @id s1\n </store>\n"
                       " <store ignore_error>\n  @type null\n  @id s2\n </store>\n"
                       "</match>\n</label>\n";
    weir_conf_section_t *root;
    weir_err_t err = {{0}};
    weir_engine_t *eng = build(conf, &root, false, &err);
    assert_non_null(eng);
    assert_int_equal(weir_engine_start(eng, &err), 0);
    const char *order[] = {"rl", "cp", "s1", "s2"};
    assert_int_equal(weir_engine_plugin_count(eng), 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(weir_engine_plugin_at(eng, i)->plugin_id, order[i]);
    weir_batch_t b;
    weir_batch_init(&b, "app.login", 9);
    static const char rec[] = "\x81\xa1k\xa1v";
    weir_batch_append(&b, (weir_time_t){1700000000, 0}, rec, sizeof rec - 1);
    weir_batch_append(&b, (weir_time_t){1700000001, 0}, rec, sizeof rec - 1);
    assert_int_equal(weir_engine_emit(eng, NULL, &b, NULL, NULL), WEIR_EMIT_DONE);
    weir_batch_set_tag(&b, "other", 5); /* matches nothing at the top level */
    assert_int_equal(weir_engine_emit(eng, NULL, &b, NULL, NULL), WEIR_EMIT_DONE);
    assert_int_equal(emitted(eng, "rl"), 2);
    assert_int_equal(emitted(eng, "cp"), 2);
    assert_int_equal(emitted(eng, "s1"), 2);
    assert_int_equal(emitted(eng, "s2"), 2);
    weir_batch_free(&b);
    weir_engine_free(eng);
    uv_run(&loop, UV_RUN_NOWAIT);
    weir_conf_free(root);
}

static int setup(void **state)
{
    (void)state;
    uv_loop_init(&loop);
    weir_log_set_level(WEIR_LOG_ERROR);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loops_are_refused_and_named),
        cmocka_unit_test(test_diamond_is_accepted_and_closing_it_is_not),
        cmocka_unit_test(test_unknown_or_missing_label_is_refused),
        cmocka_unit_test(test_batch_travels_relabel_and_copy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
