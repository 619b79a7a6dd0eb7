/* The ingest-connection layer (src/net/ingest.c) with the line input of include/weir/ingest.h's
 * example: one record per "\n"-terminated line, answered "ok\n" once stored in a file buffer.
 * Each limit is tested exactly on its edge and one past it; the cancelled emit is tested by
 * closing a connection while the output holds its batch. The line "big" makes the input inflate
 * BIG_PLAIN bytes in steps (WEIR_INGEST_AGAIN) before its record, as forward and http inflate a
 * compressed unit. Clients are plain blocking sockets; the loop runs in small steps until what
 * a client would see has happened. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "weir/engine.h"
#include "weir/inflate.h"
#include "weir/ingest.h"
#include "weir/log.h"

static uv_loop_t loop;
static weir_engine_t *eng;
static weir_conf_section_t *eng_root;
static char dir[64];

static int answers, closes, frames;
static weir_ingest_conn_t *last_ic;

/* "big": BIG_PLAIN zero bytes, zlib-compressed once in setup, inflated a step per call */
#define BIG_PLAIN (32u * 1024 * 1024)
static unsigned char *big_z;
static uLongf big_zlen;
static weir_ingest_conn_t *big_ic; /* the connection inflating, while it does */
static int big_steps;              /* calls of the framing that inflated a step */
/* the units emitted, in order: 'B' the big one, 's' any other line */
static char order[16];
static size_t norder;

/* ---- the line input of the header's example ------------------------------------------------ */

typedef struct line_conn {
    weir_batch_t batch;
    bool init;
    weir_inflation_t big;
} line_conn_t;

/* One step of the big unit: AGAIN until the last. */
static weir_ingest_res_t big_step(weir_ingest_conn_t *ic, line_conn_t *lc, weir_ingest_frame_t *f)
{
    weir_err_t err;
    int rc = weir_inflation_run(&lc->big, WEIR_INFLATE_ZLIB, (const char *)big_z, big_zlen,
                                BIG_PLAIN, &err);
    big_steps++;
    big_ic = ic;
    if (rc < 0) {
        f->why = "inflate failed";
        return WEIR_INGEST_ERROR;
    }
    if (rc == 0) return WEIR_INGEST_AGAIN;
    assert_int_equal(lc->big.out.len, BIG_PLAIN);
    weir_inflation_reset(&lc->big);
    big_ic = NULL;
    return WEIR_INGEST_EMIT;
}

static weir_ingest_res_t line_frame(weir_ingest_conn_t *ic, const char *p, size_t n,
                                    weir_ingest_frame_t *f)
{
    line_conn_t *lc = weir_ingest_conn_data(ic);
    const char *nl = memchr(p, '\n', n);
    if (!nl) return WEIR_INGEST_MORE;
    bool big = nl - p == 3 && memcmp(p, "big", 3) == 0;
    if (big) {
        weir_ingest_res_t r = big_step(ic, lc, f);
        if (r != WEIR_INGEST_EMIT) return r;
    }
    if (norder < sizeof order - 1) order[norder++] = big ? 'B' : 's';
    frames++;
    last_ic = ic;
    f->consumed = (size_t)(nl - p) + 1;
    if (!lc->init) weir_batch_init(&lc->batch, "line", 4);
    lc->init = true;
    weir_batch_reset(&lc->batch);
    char rec[64];
    /* {"m": "<up to 40 bytes of the line>"} as msgpack */
    size_t len = (size_t)(nl - p) > 40 ? 40 : (size_t)(nl - p);
    rec[0] = (char)0x81;
    rec[1] = (char)0xa1;
    rec[2] = 'm';
    rec[3] = (char)(0xa0 | len);
    memcpy(rec + 4, p, len);
    weir_batch_append(&lc->batch, weir_time_now(), rec, 4 + len);
    f->batch = &lc->batch;
    f->wire_bytes = f->consumed;
    return WEIR_INGEST_EMIT;
}

static void line_answer(weir_ingest_conn_t *ic, weir_ingest_status_t st)
{
    answers++;
    weir_ingest_conn_write(ic, st == WEIR_INGEST_STORED ? "ok\n" : "no\n", 3);
}

static void line_closed(weir_ingest_conn_t *ic)
{
    line_conn_t *lc = weir_ingest_conn_data(ic);
    closes++;
    if (lc->init) weir_batch_free(&lc->batch);
    weir_inflation_reset(&lc->big);
    if (big_ic == ic) big_ic = NULL;
}

static const weir_ingest_ops_t line_ops = {
    .name = "line",
    .conn_size = sizeof(line_conn_t),
    .frame = line_frame,
    .answer = line_answer,
    .closed = line_closed,
};

/* ---- harness ----------------------------------------------------------------------------------
 */

#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        for (int _i = 0; !(cond); _i++) {                                                          \
            if (_i > 20000) fail_msg("timed out waiting for: %s", #cond);                          \
            uv_run(&loop, UV_RUN_NOWAIT);                                                          \
            usleep(500);                                                                           \
        }                                                                                          \
    } while (0)

static void run_for(int ms)
{
    for (int i = 0; i < ms * 2; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(500);
    }
}

static weir_ingest_t *start(weir_ingest_opts_t *o)
{
    weir_err_t err = {{0}};
    o->bind = "127.0.0.1";
    weir_ingest_t *ing = weir_ingest_new(&loop, eng, &line_ops, o, &err);
    if (!ing) fail_msg("ingest: %s", err.msg);
    answers = closes = frames = big_steps = 0;
    norder = 0;
    memset(order, 0, sizeof order);
    weir_inflate_step_max = 0;
    return ing;
}

static bool g_stopped;

static void stopped(void *arg)
{
    g_stopped = true;
}

static void finish(weir_ingest_t *ing)
{
    g_stopped = false;
    weir_ingest_stop(ing, stopped, NULL);
    RUN_UNTIL(g_stopped);
    weir_ingest_free(ing);
    run_for(5);
}

static int cli(weir_ingest_t *ing)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(weir_ingest_port(ing))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static void cli_send(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            uv_run(&loop, UV_RUN_NOWAIT);
            continue;
        }
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

static void cli_fill(int fd, size_t n)
{
    char *b = malloc(n);
    memset(b, 'x', n);
    cli_send(fd, b, n);
    free(b);
}

/* 1: bytes arrived (copied to got), 0: nothing yet, -1: the peer closed or reset. */
static int cli_poll(int fd, char *got, size_t cap)
{
    ssize_t r = recv(fd, got, cap, 0);
    if (r > 0) return 1;
    if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return -1;
    return 0;
}

static void expect_answer(int fd)
{
    char got[8] = {0};
    int r;
    RUN_UNTIL((r = cli_poll(fd, got, 3)) != 0);
    assert_int_equal(r, 1);
    assert_memory_equal(got, "ok\n", 3);
}

static void expect_closed(int fd)
{
    char got[64];
    int r;
    RUN_UNTIL((r = cli_poll(fd, got, sizeof got)) == -1);
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_line_input_stores_and_answers(void **state)
{
    weir_ingest_opts_t o;
    weir_ingest_opts_init(&o);
    weir_ingest_t *ing = start(&o);
    int fd = cli(ing);
    cli_send(fd, "hello\nworld\n", 12);
    expect_answer(fd);
    expect_answer(fd);
    assert_int_equal(answers, 2);
    close(fd);
    RUN_UNTIL(closes == 1);
    assert_int_equal(weir_ingest_held(ing), 0);
    finish(ing);
}

/* The output holds the batch when the connection closes: the answer never runs, the input's
 * state is freed once, and the request's completion releases the rest (ASan checks it). */
static void test_close_while_output_holds_the_batch(void **state)
{
    weir_ingest_opts_t o;
    weir_ingest_opts_init(&o);
    weir_ingest_t *ing = start(&o);
    int fd = cli(ing);
    cli_send(fd, "held\n", 5);
    RUN_UNTIL(frames == 1);
    if (answers == 0) { /* the fsync round is still out: close under it */
        weir_ingest_conn_close(last_ic, "test");
        RUN_UNTIL(closes == 1);
        run_for(50); /* the emit completes into a cancelled request */
        assert_int_equal(answers, 0);
    } else {
        print_message("the fsync finished first: the close under an emit was not exercised\n");
    }
    close(fd);
    RUN_UNTIL(closes == 1 && weir_ingest_connections(ing) == 0);
    finish(ing);
}

/* Exactly WEIR_INGEST_PREAUTH_LIMIT unread bytes are kept waiting; one more closes. */
static void test_preauth_limit(void **state)
{
    weir_ingest_opts_t o;
    weir_ingest_opts_init(&o);
    o.require_auth = true;
    weir_ingest_t *ing = start(&o);
    int at = cli(ing), past = cli(ing);
    cli_fill(at, WEIR_INGEST_PREAUTH_LIMIT);
    cli_fill(past, WEIR_INGEST_PREAUTH_LIMIT + 1);
    expect_closed(past);
    RUN_UNTIL(weir_ingest_held(ing) == WEIR_INGEST_PREAUTH_LIMIT);
    run_for(20);
    char got[8];
    assert_int_equal(cli_poll(at, got, sizeof got), 0); /* still open, nothing answered */
    close(at);
    close(past);
    finish(ing);
}

/* max_connections 3: the third is served, the fourth is reset at once, the three go on. */
static void test_max_connections(void **state)
{
    weir_ingest_opts_t o;
    weir_ingest_opts_init(&o);
    o.max_connections = 3;
    weir_ingest_t *ing = start(&o);
    int fd[4];
    for (int i = 0; i < 3; i++)
        fd[i] = cli(ing);
    RUN_UNTIL(weir_ingest_connections(ing) == 3);
    fd[3] = cli(ing);
    expect_closed(fd[3]);
    for (int i = 0; i < 3; i++) {
        cli_send(fd[i], "x\n", 2);
        expect_answer(fd[i]);
    }
    for (int i = 0; i < 4; i++)
        close(fd[i]);
    finish(ing);
}

/* memory_limit L: connections holding exactly L together still read; past L one that holds
 * bytes stops being read until the total drops, but for one (the first past it), which reads
 * on so that its unit can end; one that holds nothing is served. */
static void test_memory_budget(void **state)
{
    weir_ingest_opts_t o;
    weir_ingest_opts_init(&o);
    o.memory_limit = 160000;
    weir_ingest_t *ing = start(&o);
    int c1 = cli(ing), c2 = cli(ing), c3 = cli(ing);
    cli_fill(c1, 80000);
    RUN_UNTIL(weir_ingest_held(ing) == 80000);
    cli_fill(c2, 80000);
    RUN_UNTIL(weir_ingest_held(ing) == 160000); /* at the limit */
    cli_fill(c2, 1);
    RUN_UNTIL(weir_ingest_held(ing) == 160001); /* read at the limit; now past it */
    cli_fill(c1, 1000);
    RUN_UNTIL(weir_ingest_held(ing) == 161001); /* c1 reads once past it, and stops */
    cli_fill(c1, 1000);
    run_for(100);
    assert_int_equal(weir_ingest_held(ing), 161001); /* past the limit: c1 is not read */
    cli_fill(c2, 1000);
    RUN_UNTIL(weir_ingest_held(ing) == 162001); /* c2, the exempt one, is */
    cli_send(c3, "small\n", 6);
    expect_answer(c3);
    close(c2);
    RUN_UNTIL(weir_ingest_held(ing) == 82000); /* c1 reads again */
    close(c1);
    close(c3);
    RUN_UNTIL(weir_ingest_held(ing) == 0);
    finish(ing);
}

/* Partial units that together pass the budget never all wait: the exempt connection finishes
 * its unit, which frees its bytes, and then the blocked one reads and finishes its own (with
 * every partial unit blocked, both would wait until progress_timeout cut them off). */
static void test_memory_budget_never_blocks_every_unit(void **state)
{
    weir_ingest_opts_t o;
    weir_ingest_opts_init(&o);
    o.memory_limit = 100000;
    weir_ingest_t *ing = start(&o);
    int c1 = cli(ing), c2 = cli(ing);
    cli_fill(c1, 60000);
    RUN_UNTIL(weir_ingest_held(ing) == 60000);
    cli_fill(c2, 60000);
    RUN_UNTIL(weir_ingest_held(ing) == 120000); /* past the budget */
    cli_send(c1, "x\n", 2);
    cli_send(c2, "x\n", 2);
    expect_answer(c2);
    expect_answer(c1);
    RUN_UNTIL(weir_ingest_held(ing) == 0);
    close(c1);
    close(c2);
    finish(ing);
}

/* The budget is process-wide: what one input's connections hold stops another input's
 * connection that holds bytes, and releasing it lets that one read again. */
static void test_memory_budget_spans_inputs(void **state)
{
    weir_ingest_opts_t o;
    weir_ingest_opts_init(&o);
    o.memory_limit = 100000;
    weir_ingest_t *a = start(&o), *b = start(&o);
    int c1 = cli(a), c2 = cli(b);
    cli_fill(c1, 80000);
    RUN_UNTIL(weir_ingest_held(a) == 80000);
    cli_fill(c2, 30000);
    RUN_UNTIL(weir_ingest_held(b) == 30000); /* 110000 together: past the budget */
    cli_fill(c1, 1000);
    RUN_UNTIL(weir_ingest_held(a) == 81000); /* c2 (input b) went past first: c1 reads once */
    cli_fill(c1, 1000);
    run_for(100);
    assert_int_equal(weir_ingest_held(a), 81000); /* ...and then waits */
    close(c2);
    RUN_UNTIL(weir_ingest_held(a) == 82000);
    close(c1);
    RUN_UNTIL(weir_ingest_held(a) == 0);
    finish(a);
    finish(b);
}

/* A unit that does not arrive whole within progress_timeout is cut off, and so is a
 * connection that sends nothing; one that completes its unit in time is answered. */
static void test_progress_timeout(void **state)
{
    weir_ingest_opts_t o;
    weir_ingest_opts_init(&o);
    o.progress_timeout = 0.3;
    weir_ingest_t *ing = start(&o);
    int slow = cli(ing), silent = cli(ing), ok = cli(ing);
    cli_send(slow, "abc", 3);
    cli_send(ok, "abc\n", 4);
    expect_answer(ok);
    expect_closed(slow);
    expect_closed(silent);
    close(slow);
    close(silent);
    close(ok);
    finish(ing);
}

/* A unit whose work is cut in steps gets one step per loop turn, in turn with the others: a
 * small unit sent on another connection once the big one has begun is emitted and answered
 * before the big one is done, and no call inflated more than a step. */
static void test_again_steps_interleave(void **state)
{
    weir_ingest_opts_t o;
    weir_ingest_opts_init(&o);
    weir_ingest_t *ing = start(&o);
    int a = cli(ing), b = cli(ing);
    cli_send(a, "big\n", 4);
    RUN_UNTIL(big_steps >= 1);
    cli_send(b, "small\n", 6);
    expect_answer(b);
    assert_string_equal(order, "s"); /* the big one is still inflating */
    expect_answer(a);
    assert_string_equal(order, "sB");
    assert_int_equal(answers, 2);
    /* every call produced about a step: the whole took many calls, each within the budget */
    assert_true(big_steps >= (int)(BIG_PLAIN / (WEIR_INFLATE_STEP_BUDGET + WEIR_INFLATE_CHUNK)));
    assert_true(weir_inflate_step_max <= WEIR_INFLATE_STEP_BUDGET + WEIR_INFLATE_CHUNK);
    close(a);
    close(b);
    finish(ing);
}

/* A connection closed between two steps is never called again, and what its input kept for
 * the steps is freed in .closed (the ASan build checks for leaks and use after free). */
static void test_again_close_midway(void **state)
{
    weir_ingest_opts_t o;
    weir_ingest_opts_init(&o);
    weir_ingest_t *ing = start(&o);
    int a = cli(ing);
    cli_send(a, "big\n", 4);
    RUN_UNTIL(big_steps >= 2);
    assert_non_null(big_ic);
    weir_ingest_conn_close(big_ic, "test");
    RUN_UNTIL(closes == 1);
    int steps = big_steps;
    run_for(20);
    assert_int_equal(big_steps, steps); /* no step after the close */
    assert_int_equal(frames, 0);
    assert_int_equal(answers, 0);
    assert_int_equal(weir_ingest_held(ing), 0);
    close(a);
    finish(ing);
}

/* Stop waits for a unit in steps as for an emitted one: it is finished and answered, then the
 * connection closes and the stop completes. */
static void test_again_stop_waits(void **state)
{
    weir_ingest_opts_t o;
    weir_ingest_opts_init(&o);
    weir_ingest_t *ing = start(&o);
    int a = cli(ing);
    /* a second unit waits behind the first: the stop answers the first and closes, without
     * reading the second (a sender streaming units would otherwise hold the stop for ever) */
    cli_send(a, "big\nsmall\n", 10);
    RUN_UNTIL(big_steps >= 1);
    g_stopped = false;
    weir_ingest_stop(ing, stopped, NULL);
    assert_false(g_stopped);
    expect_answer(a);
    RUN_UNTIL(g_stopped);
    assert_string_equal(order, "B");
    expect_closed(a);
    close(a);
    weir_ingest_free(ing);
    run_for(5);
}

/* ---- fixture ------------------------------------------------------------------------------------
 */

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/weir-ingest-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    uv_loop_init(&loop);
    char conf[512];
    snprintf(conf, sizeof conf,
             "<match **>\n  @type file\n  path %s/out\n  <buffer>\n    @type file\n    path "
             "%s/buf\n    flush_mode interval\n    flush_interval 3600\n  </buffer>\n</match>\n",
             dir, dir);
    weir_err_t err = {{0}};
    eng_root = weir_conf_parse_string(conf, strlen(conf), "ingest.conf", &err);
    weir_engine_opts_t eo = {.dry_run = false, .log_level_override = -1};
    eng = eng_root ? weir_engine_new(&loop, eng_root, &eo, &err) : NULL;
    if (!eng || weir_engine_start(eng, &err) != 0) {
        fprintf(stderr, "engine: %s\n", err.msg);
        return -1;
    }
    weir_log_set_level(WEIR_LOG_ERROR);
    unsigned char *zeros = calloc(1, BIG_PLAIN);
    big_zlen = compressBound(BIG_PLAIN);
    big_z = malloc(big_zlen);
    int zrc = compress(big_z, &big_zlen, zeros, BIG_PLAIN);
    free(zeros);
    return zrc == Z_OK ? 0 : -1;
}

static void engine_stopped(void *arg)
{
    *(bool *)arg = true;
}

static int teardown(void **state)
{
    bool done = false;
    weir_engine_stop(eng, engine_stopped, &done);
    for (int i = 0; i < 20000 && !done; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(500);
    }
    weir_engine_free(eng);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    weir_conf_free(eng_root);
    char cmd[128];
    free(big_z);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_input_stores_and_answers),
        cmocka_unit_test(test_close_while_output_holds_the_batch),
        cmocka_unit_test(test_preauth_limit),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_memory_budget),
        cmocka_unit_test(test_memory_budget_never_blocks_every_unit),
        cmocka_unit_test(test_memory_budget_spans_inputs),
        cmocka_unit_test(test_progress_timeout),
        cmocka_unit_test(test_again_steps_interleave),
        cmocka_unit_test(test_again_close_midway),
        cmocka_unit_test(test_again_stop_waits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
