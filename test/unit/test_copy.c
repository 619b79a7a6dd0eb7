/* The fan-out of @type copy (src/output/copy/fanout.c) against stores that answer as a test
 * tells them: every store gets each batch at most once, FULL after another store took the
 * batch is retried on space for that store only, the input hears once, and Fluentd's
 * ignore_error / ignore_if_prev_success rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "weir/copy.h"

#define SCRIPT_MAX 8

typedef struct fake_store {
    weir_emit_result_t script[SCRIPT_MAX]; /* answer of the nth call; the last one repeats */
    size_t nscript;
    size_t calls;
    size_t taken;     /* batches answered DONE or PENDING */
    weir_buf_t bytes; /* the entries of every batch it took, as an output keeps them */
    weir_emit_cb cb;  /* of the last PENDING */
    void *cb_arg;
} fake_store_t;

static weir_emit_result_t fake_emit(void *state, const weir_batch_t *b, weir_emit_cb cb, void *arg)
{
    fake_store_t *s = state;
    weir_emit_result_t r = s->script[s->calls < s->nscript ? s->calls : s->nscript - 1];
    s->calls++;
    if (r == WEIR_EMIT_DONE || r == WEIR_EMIT_PENDING) {
        s->taken++;
        weir_buf_append(&s->bytes, b->data.data, b->data.len);
    }
    if (r == WEIR_EMIT_PENDING) {
        s->cb = cb;
        s->cb_arg = arg;
    }
    return r;
}

static const weir_output_ops_t fake_ops = {.type = "fake", .emit = fake_emit};

/* the engine's space waiters, kept in an array the test runs */
static weir_space_waiter_t *waiters[16];
static size_t nwaiters;

static void on_space(void *arg, weir_space_waiter_t *w)
{
    (void)arg;
    assert_true(nwaiters < 16);
    waiters[nwaiters++] = w;
}

static void cancel_space(void *arg, weir_space_waiter_t *w)
{
    (void)arg;
    for (size_t i = 0; i < nwaiters; i++)
        if (waiters[i] == w) {
            waiters[i] = waiters[--nwaiters];
            return;
        }
}

static void space_now(void)
{
    size_t n = nwaiters;
    weir_space_waiter_t *list[16];
    memcpy(list, waiters, n * sizeof *list);
    nwaiters = 0;
    for (size_t i = 0; i < n; i++)
        list[i]->fn(list[i]->arg);
}

/* the input's side */
static int answers, last_status;

static void input_cb(void *arg, int status)
{
    (void)arg;
    answers++;
    last_status = status;
}

static fake_store_t stores[4];
static weir_copy_store_t cs[4];

static weir_copy_t *make(size_t n)
{
    static const weir_copy_env_t env = {.on_space = on_space, .cancel_space = cancel_space};
    for (size_t i = 0; i < n; i++) {
        cs[i].out.ops = &fake_ops;
        cs[i].out.state = &stores[i];
        cs[i].out.plugin_id = "fake";
    }
    return weir_copy_new(&env, cs, n);
}

static int setup(void **state)
{
    (void)state;
    memset(stores, 0, sizeof stores);
    memset(cs, 0, sizeof cs);
    nwaiters = 0;
    answers = 0;
    last_status = 99;
    for (size_t i = 0; i < 4; i++) {
        weir_buf_init(&stores[i].bytes);
        stores[i].script[0] = WEIR_EMIT_DONE;
        stores[i].nscript = 1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < 4; i++)
        weir_buf_free(&stores[i].bytes);
    return 0;
}

static void script(size_t i, size_t n, const weir_emit_result_t *r)
{
    memcpy(stores[i].script, r, n * sizeof *r);
    stores[i].nscript = n;
}

/* A batch of `n` events {"k":"v"}; the caller frees it. */
static void batch(weir_batch_t *b, uint32_t n)
{
    static const char rec[] = "\x81\xa1k\xa1v";
    weir_batch_init(b, "app.log", 7);
    for (uint32_t i = 0; i < n; i++)
        weir_batch_append(b, (weir_time_t){1700000000 + i, 0}, rec, sizeof rec - 1);
}

static void test_all_done_is_done(void **state)
{
    (void)state;
    weir_copy_t *c = make(3);
    weir_batch_t b;
    batch(&b, 2);
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_DONE);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(stores[i].taken, 1);
        assert_int_equal(stores[i].bytes.len, b.data.len);
    }
    assert_int_equal(answers, 0); /* answered by the return value, never the callback */
    assert_int_equal(weir_copy_held(c), 0);
    weir_batch_free(&b);
    weir_copy_free(c);
}

static void test_pending_store_acks_after_its_callback(void **state)
{
    (void)state;
    weir_copy_t *c = make(2);
    script(1, 1, (weir_emit_result_t[]){WEIR_EMIT_PENDING});
    weir_batch_t b;
    batch(&b, 1);
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_PENDING);
    weir_batch_free(&b);
    assert_int_equal(answers, 0);
    stores[1].cb(stores[1].cb_arg, 0);
    assert_int_equal(answers, 1);
    assert_int_equal(last_status, 0);
    assert_int_equal(weir_copy_held(c), 0);
    weir_copy_free(c);
}

static void test_full_first_store_is_full_and_nothing_taken(void **state)
{
    (void)state;
    weir_copy_t *c = make(2);
    script(0, 1, (weir_emit_result_t[]){WEIR_EMIT_FULL});
    weir_batch_t b;
    batch(&b, 1);
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_FULL);
    assert_int_equal(stores[1].calls, 0);
    assert_int_equal(nwaiters, 0); /* the input waits, not the copy */
    assert_int_equal(weir_copy_held(c), 0);
    weir_batch_free(&b);
    weir_copy_free(c);
}

/* The case the fan-out exists for: the second store is full after the first took the batch.
 * The input's batch is gone after the emit; the second store gets the same bytes later, the
 * first never gets them twice, and the input hears once, after both have it. */
static void test_full_after_taken_retries_that_store_only(void **state)
{
    (void)state;
    weir_copy_t *c = make(3);
    script(1, 3, (weir_emit_result_t[]){WEIR_EMIT_FULL, WEIR_EMIT_FULL, WEIR_EMIT_PENDING});
    weir_batch_t b;
    batch(&b, 3);
    weir_buf_t expect;
    weir_buf_init(&expect);
    weir_buf_append(&expect, b.data.data, b.data.len);
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_PENDING);
    memset(b.data.data, 0, b.data.len); /* the input reuses its batch */
    weir_batch_free(&b);
    assert_int_equal(stores[0].taken, 1);
    assert_int_equal(stores[2].calls, 0); /* in order: nothing past the full store yet */
    assert_int_equal(weir_copy_held(c), 1);
    space_now(); /* still full: waits again */
    assert_int_equal(stores[1].calls, 2);
    assert_int_equal(nwaiters, 1);
    assert_int_equal(answers, 0);
    space_now(); /* taken (pending), and the third store gets it too */
    assert_int_equal(stores[0].calls, 1);
    assert_int_equal(stores[1].taken, 1);
    assert_int_equal(stores[2].taken, 1);
    for (size_t i = 0; i < 3; i++)
        assert_memory_equal(stores[i].bytes.data, expect.data, expect.len);
    assert_int_equal(answers, 0);
    stores[1].cb(stores[1].cb_arg, 0);
    assert_int_equal(answers, 1);
    assert_int_equal(last_status, 0);
    assert_int_equal(weir_copy_held(c), 0);
    weir_buf_free(&expect);
    weir_copy_free(c);
}

/* Fluentd: an error in a store without ignore_error fails the event, and the stores after it
 * are not tried. */
static void test_error_stops_the_stores_after_it(void **state)
{
    (void)state;
    weir_copy_t *c = make(3);
    script(1, 1, (weir_emit_result_t[]){WEIR_EMIT_ERROR});
    weir_batch_t b;
    batch(&b, 1);
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_ERROR);
    assert_int_equal(stores[0].taken, 1);
    assert_int_equal(stores[2].calls, 0);
    weir_batch_free(&b);
    weir_copy_free(c);
}

static void test_ignore_error_goes_on(void **state)
{
    (void)state;
    weir_copy_t *c = make(3);
    script(1, 1, (weir_emit_result_t[]){WEIR_EMIT_ERROR});
    cs[1].ignore_error = true;
    weir_copy_free(c);
    c = make(3);
    weir_batch_t b;
    batch(&b, 1);
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_DONE);
    assert_int_equal(stores[0].taken, 1);
    assert_int_equal(stores[2].taken, 1);
    weir_batch_free(&b);
    weir_copy_free(c);
}

/* Fluentd's rule exactly: a store with ignore_if_prev_success is skipped when the store just
 * before it succeeded; a skipped store has not succeeded, so the one after it runs. */
static void test_ignore_if_prev_success(void **state)
{
    (void)state;
    cs[0].ignore_error = true;
    cs[1].ignore_if_prev_success = cs[1].ignore_error = true;
    cs[2].ignore_if_prev_success = true;
    weir_copy_t *c = make(3);
    weir_batch_t b;
    batch(&b, 1);
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_DONE);
    assert_int_equal(stores[0].taken, 1);
    assert_int_equal(stores[1].calls, 0);
    assert_int_equal(stores[2].taken, 1);
    /* the primary fails: the fallback takes it, so the last one is skipped */
    script(0, 1, (weir_emit_result_t[]){WEIR_EMIT_ERROR});
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_DONE);
    assert_int_equal(stores[1].taken, 1);
    assert_int_equal(stores[2].calls, 1);
    weir_batch_free(&b);
    weir_copy_free(c);
}

static void test_late_failure_fails_unless_ignored(void **state)
{
    (void)state;
    weir_copy_t *c = make(2);
    script(0, 1, (weir_emit_result_t[]){WEIR_EMIT_PENDING});
    script(1, 1, (weir_emit_result_t[]){WEIR_EMIT_PENDING});
    weir_batch_t b;
    batch(&b, 1);
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_PENDING);
    stores[0].cb(stores[0].cb_arg, -1);
    assert_int_equal(answers, 0); /* the other store has not answered */
    stores[1].cb(stores[1].cb_arg, 0);
    assert_int_equal(answers, 1);
    assert_int_equal(last_status, -1);
    weir_copy_free(c);
    cs[0].ignore_error = true;
    c = make(2);
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_PENDING);
    stores[1].cb(stores[1].cb_arg, 0);
    stores[0].cb(stores[0].cb_arg, -1);
    assert_int_equal(answers, 2);
    assert_int_equal(last_status, 0);
    weir_batch_free(&b);
    weir_copy_free(c);
}

/* An error answered at once while an earlier store's callback is outstanding: the input hears
 * ERROR now, never a callback, and the job lives until the store answers. */
static void test_error_after_pending_answers_now(void **state)
{
    (void)state;
    weir_copy_t *c = make(2);
    script(0, 1, (weir_emit_result_t[]){WEIR_EMIT_PENDING});
    script(1, 1, (weir_emit_result_t[]){WEIR_EMIT_ERROR});
    weir_batch_t b;
    batch(&b, 1);
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_ERROR);
    weir_batch_free(&b);
    assert_int_equal(weir_copy_held(c), 1);
    stores[0].cb(stores[0].cb_arg, 0);
    assert_int_equal(answers, 0);
    assert_int_equal(weir_copy_held(c), 0);
    weir_copy_free(c);
}

static int stopped;
static void stop_done(void *arg)
{
    (void)arg;
    stopped++;
}

/* Stopping fails the batches a full store never took (their senders resend) and is done once
 * the stores that did take one have answered. */
static void test_stop_fails_waiting_batches(void **state)
{
    (void)state;
    stopped = 0;
    weir_copy_t *c = make(2);
    script(0, 1, (weir_emit_result_t[]){WEIR_EMIT_PENDING});
    script(1, 1, (weir_emit_result_t[]){WEIR_EMIT_FULL});
    weir_batch_t b;
    batch(&b, 1);
    assert_int_equal(weir_copy_emit(c, &b, input_cb, NULL), WEIR_EMIT_PENDING);
    weir_batch_free(&b);
    weir_copy_stop(c, stop_done, NULL);
    assert_int_equal(nwaiters, 0);
    assert_int_equal(stopped, 0); /* the first store still holds it */
    assert_int_equal(answers, 0);
    stores[0].cb(stores[0].cb_arg, 0);
    assert_int_equal(answers, 1);
    assert_int_equal(last_status, -1);
    assert_int_equal(stopped, 1);
    weir_copy_free(c);
}

static void test_stop_with_nothing_held_is_done_at_once(void **state)
{
    (void)state;
    stopped = 0;
    weir_copy_t *c = make(1);
    weir_copy_stop(c, stop_done, NULL);
    assert_int_equal(stopped, 1);
    weir_copy_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_all_done_is_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_store_acks_after_its_callback, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_full_first_store_is_full_and_nothing_taken, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_full_after_taken_retries_that_store_only, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_error_stops_the_stores_after_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ignore_error_goes_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ignore_if_prev_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_failure_fails_unless_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_after_pending_answers_now, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_fails_waiting_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_nothing_held_is_done_at_once, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
