/* The dedupe filter's holds, driven as the router drives them: two batches carrying one key
 * while the first is still in flight. The second is acknowledged only after the first's fate
 * is known, and never when the first was not stored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "weir/config.h"
#include "weir/engine.h"
#include "weir/plugin.h"

typedef struct fixture {
    uv_loop_t loop;
    weir_conf_section_t *root, *fsec;
    weir_engine_t *eng;
    const weir_filter_ops_t *ops;
    void *state;
    char dir[64];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    strcpy(f->dir, "/tmp/weir-dedupe-unit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char text[512];
    snprintf(text, sizeof text,
             "<match **>\n  @type null\n</match>\n"
             "<filter **>\n  @type dedupe\n  key uid\n  path %s/dd\n</filter>\n",
             f->dir);
    weir_err_t err = {{0}};
    f->root = weir_conf_parse_string(text, strlen(text), "unit.conf", &err);
    assert_non_null(f->root);
    weir_engine_opts_t o = {.dry_run = true, .log_level_override = -1};
    f->eng = weir_engine_new(&f->loop, f->root, &o, &err);
    assert_non_null(f->eng);
    f->fsec = f->root->children[1];
    f->ops = weir_filter_find("dedupe");
    assert_non_null(f->ops);
    assert_int_equal(f->ops->create(f->eng, f->fsec, &f->state, &err), 0);
    assert_int_equal(f->ops->start(f->state, &err), 0);
    *state = f;
    return 0;
}

static void stopped(void *arg)
{
    *(int *)arg = 1;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    int done = 0;
    f->ops->stop(f->state, stopped, &done);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(done, 1);
    f->ops->destroy(f->state);
    weir_engine_free(f->eng);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->loop);
    weir_conf_free(f->root);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* A batch of events {"uid": uids[i]}. */
static void batch_of(weir_batch_t *b, const char *const *uids, size_t n)
{
    weir_batch_init(b, "t", 1);
    for (size_t i = 0; i < n; i++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        msgpack_pack_str_with_body(&pk, "uid", 3);
        msgpack_pack_str_with_body(&pk, uids[i], strlen(uids[i]));
        weir_batch_append(b, (weir_time_t){1700000000, 0}, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
}

typedef struct acked {
    int calls;
    int status;
} acked_t;

static void on_done(void *arg, int status)
{
    acked_t *a = arg;
    a->calls++;
    a->status = status;
}

/* Runs the filter on uids; returns the hold and the number of events passed on. */
static void *run(fixture_t *f, const char *const *uids, size_t n, uint32_t *passed)
{
    weir_batch_t in, out;
    batch_of(&in, uids, n);
    weir_batch_init(&out, "t", 1);
    void *hold = NULL;
    weir_filter_result_t r = f->ops->filter(f->state, &in, &out, &hold);
    assert_int_not_equal(r, WEIR_FILTER_ERROR);
    *passed = r == WEIR_FILTER_SAME ? in.count : out.count;
    weir_batch_free(&in);
    weir_batch_free(&out);
    return hold;
}

static void test_second_copy_waits_for_the_first_and_follows_its_success(void **state)
{
    fixture_t *f = *state;
    const char *a[] = {"u1", "u2"}, *b[] = {"u2", "u3", "u3"};
    uint32_t n1, n2;
    void *h1 = run(f, a, 2, &n1);
    void *h2 = run(f, b, 3, &n2);
    assert_int_equal(n1, 2);
    assert_int_equal(n2, 1); /* u2 is in flight in the first batch, u3 twice in this one */
    assert_non_null(h1);
    assert_non_null(h2);
    acked_t a1 = {0}, a2 = {0};
    f->ops->settle(f->state, h2, 0, on_done, &a2); /* the second's output was quicker */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a2.calls, 0); /* it waits for the first batch */
    f->ops->settle(f->state, h1, 0, on_done, &a1);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a1.calls, 1);
    assert_int_equal(a1.status, 0);
    assert_int_equal(a2.calls, 1);
    assert_int_equal(a2.status, 0);
    /* all three are stored now: another copy is dropped and needs no hold */
    const char *c[] = {"u1", "u2", "u3"};
    uint32_t n3;
    assert_null(run(f, c, 3, &n3));
    assert_int_equal(n3, 0);
}

static void test_second_copy_is_not_acked_when_the_first_is_not_stored(void **state)
{
    fixture_t *f = *state;
    const char *a[] = {"k1"}, *b[] = {"k1", "k2"};
    uint32_t n1, n2;
    void *h1 = run(f, a, 1, &n1);
    void *h2 = run(f, b, 2, &n2);
    assert_int_equal(n2, 1);
    acked_t a2 = {0};
    f->ops->settle(f->state, h2, 0, on_done, &a2);
    f->ops->settle(f->state, h1, WEIR_EMIT_FULL, NULL, NULL); /* the first was not taken */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a2.calls, 1);
    assert_int_equal(a2.status, -1); /* no ack: the sender resends */
    /* k1 was never stored: the resend passes; k2 was stored with the second batch */
    uint32_t n3;
    void *h3 = run(f, b, 2, &n3);
    assert_int_equal(n3, 1);
    acked_t a3 = {0};
    f->ops->settle(f->state, h3, 0, on_done, &a3);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a3.status, 0);
}

static void test_released_hold_waiting_for_another_is_freed_once(void **state)
{
    fixture_t *f = *state;
    const char *a[] = {"r1"}, *b[] = {"r1", "r2"};
    uint32_t n;
    void *h1 = run(f, a, 1, &n);
    void *h2 = run(f, b, 2, &n);
    f->ops->settle(f->state, h2, -1, NULL, NULL); /* fails while it waits for h1 */
    acked_t a1 = {0};
    f->ops->settle(f->state, h1, 0, on_done, &a1);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a1.status, 0);
    const char *c[] = {"r2"};
    void *h3 = run(f, c, 1, &n);
    assert_int_equal(n, 1); /* r2 went with the failed batch: not remembered */
    f->ops->settle(f->state, h3, -1, NULL, NULL);
}

/* A million distinct keys across the ring's and index's growth: none is taken for a
 * duplicate, and each sent again is one. */
static void test_a_million_keys_through_growth(void **state)
{
    fixture_t *f = *state;
    enum { N = 1000000, PER = 5000 };
    char names[PER][16];
    const char *uids[PER];
    for (int round = 0; round < 2; round++) {
        for (int b = 0; b < N / PER; b++) {
            for (int i = 0; i < PER; i++) {
                snprintf(names[i], sizeof names[i], "k%d", b * PER + i);
                uids[i] = names[i];
            }
            uint32_t n;
            void *h = run(f, uids, PER, &n);
            assert_int_equal(n, round == 0 ? PER : 0);
            if (h) {
                acked_t a = {0};
                f->ops->settle(f->state, h, 0, on_done, &a);
                uv_run(&f->loop, UV_RUN_DEFAULT);
                assert_int_equal(a.status, 0);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_second_copy_waits_for_the_first_and_follows_its_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_copy_is_not_acked_when_the_first_is_not_stored,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_released_hold_waiting_for_another_is_freed_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_million_keys_through_growth, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
