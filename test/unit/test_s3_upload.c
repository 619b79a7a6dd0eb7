/* The S3 upload's bookkeeping that integration tests cannot reach at its limits: the memo of
 * keys for chunks whose last attempt may have stored their object (S3_KEY_MEMO_MAX entries, the
 * oldest pushed out beyond), and how a failure message quotes a key (S3_DESCRIBE_KEY_MAX
 * bytes). The uploads themselves, with S3's faults, are in test_s3_output.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/output/s3/s3_internal.h"

static void chunk_id(char id[33], unsigned i)
{
    snprintf(id, 33, "%032x", i);
}

static void remember(s3_out_t *o, unsigned i)
{
    char id[33], key[64];
    chunk_id(id, i);
    snprintf(key, sizeof key, "logs/%u_0.gz", i);
    s3_memo_remember(o, id, key, (long)i);
}

/* Takes chunk i's key and checks it is the one remembered. */
static bool taken(s3_out_t *o, unsigned i)
{
    char id[33], want[64];
    long index = -2;
    chunk_id(id, i);
    snprintf(want, sizeof want, "logs/%u_0.gz", i);
    char *key = s3_memo_take(o, id, &index);
    if (!key) return false;
    assert_string_equal(key, want);
    assert_int_equal(index, (long)i);
    free(key);
    return true;
}

static void test_memo_holds_exactly_its_limit(void **state)
{
    (void)state;
    s3_out_t o = {0};
    for (unsigned i = 0; i < S3_KEY_MEMO_MAX; i++)
        remember(&o, i);
    assert_int_equal(o.nmemo, S3_KEY_MEMO_MAX);
    for (unsigned i = 0; i < S3_KEY_MEMO_MAX; i++)
        assert_true(taken(&o, i));
    assert_int_equal(o.nmemo, 0);
    assert_null(o.memo);
}

static void test_memo_one_past_its_limit_forgets_the_oldest(void **state)
{
    (void)state;
    s3_out_t o = {0};
    for (unsigned i = 0; i <= S3_KEY_MEMO_MAX; i++)
        remember(&o, i);
    assert_int_equal(o.nmemo, S3_KEY_MEMO_MAX);
    assert_false(taken(&o, 0)); /* the oldest: its chunk runs the HEAD loop again */
    for (unsigned i = 1; i <= S3_KEY_MEMO_MAX; i++)
        assert_true(taken(&o, i));
    assert_int_equal(o.nmemo, 0);
}

static void test_memo_same_chunk_twice_keeps_the_last_key(void **state)
{
    (void)state;
    s3_out_t o = {0};
    char id[33];
    chunk_id(id, 7);
    s3_memo_remember(&o, id, "a/first_0.gz", 0);
    s3_memo_remember(&o, id, "a/second_1.gz", 1);
    assert_int_equal(o.nmemo, 1);
    long index = -2;
    char *key = s3_memo_take(&o, id, &index);
    assert_string_equal(key, "a/second_1.gz");
    assert_int_equal(index, 1);
    free(key);
    assert_null(s3_memo_take(&o, id, &index)); /* taken means forgotten */
    remember(&o, 1);
    remember(&o, 2);
    s3_upload_memo_free(&o);
    assert_int_equal(o.nmemo, 0);
    assert_null(o.memo);
}

static void test_describe_quotes_a_key_up_to_its_limit(void **state)
{
    (void)state;
    s3_out_t o = {.bucket = "bkt"};
    char key[S3_DESCRIBE_KEY_MAX + 2], want[200];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    weir_buf_t out;
    weir_buf_init(&out);
    /* exactly at the limit: the whole key */
    key[S3_DESCRIBE_KEY_MAX] = '\0';
    s3_describe_object(&o, key, S3_DESCRIBE_KEY_MAX, &out);
    key[S3_DESCRIBE_KEY_MAX] = 'k';
    weir_buf_putc(&out, '\0');
    snprintf(want, sizeof want, "s3://bkt/%.*s", S3_DESCRIBE_KEY_MAX, key);
    assert_string_equal(out.data, want);
    /* one past: cut, with the key's length */
    out.len = 0;
    s3_describe_object(&o, key, S3_DESCRIBE_KEY_MAX + 1, &out);
    weir_buf_putc(&out, '\0');
    snprintf(want, sizeof want, "s3://bkt/%.*s... (a key of %d bytes)", S3_DESCRIBE_KEY_MAX, key,
             S3_DESCRIBE_KEY_MAX + 1);
    assert_string_equal(out.data, want);
    weir_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memo_holds_exactly_its_limit),
        cmocka_unit_test(test_memo_one_past_its_limit_forgets_the_oldest),
        cmocka_unit_test(test_memo_same_chunk_twice_keeps_the_last_key),
        cmocka_unit_test(test_describe_quotes_a_key_up_to_its_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
