/* @type copy: Fluentd's out_copy. Each <store> is a whole output (its own @type, @id,
 * <buffer>), made through the engine so that monitor_agent and /metrics list it as Fluentd
 * lists a copy's stores, and started, flushed, stopped and destroyed by the engine with the
 * other outputs. This file reads the configuration; the fan-out and its acknowledgement rules
 * are in fanout.c (include/weir/copy.h).
 *
 * copy_mode (no_copy, shallow, deep, marshal) and the deprecated deep_copy decide in Fluentd
 * whether stores share Ruby objects that one of them might modify. weir's batches are
 * immutable bytes that every store copies what it keeps of, so all four behave the same: they
 * are accepted and checked, and change nothing. */
#include <stdlib.h>
#include <string.h>

#include "weir/copy.h"
#include "weir/log.h"

/* Store sections per copy: a bound on what one <match> can fan out to (Fluentd has none; 64
 * is far past any configuration seen, and each store is a whole output with its own buffer). */
#define COPY_MAX_STORES 64

static void engine_on_space(void *eng, weir_space_waiter_t *w)
{
    weir_engine_on_space(eng, w);
}

static void engine_cancel_space(void *eng, weir_space_waiter_t *w)
{
    weir_engine_cancel_space(eng, w);
}

/* <store ignore_error ignore_if_prev_success>: the words after "store", in any order. */
static int read_store_arg(weir_conf_section_t *st, size_t idx, weir_copy_store_t *out,
                          weir_err_t *err)
{
    char *words = weir_strdup(st->arg);
    int rc = 0;
    for (char *save = NULL, *w = strtok_r(words, " \t", &save); w && rc == 0;
         w = strtok_r(NULL, " \t", &save)) {
        if (strcmp(w, "ignore_error") == 0) {
            out->ignore_error = true;
        } else if (strcmp(w, "ignore_if_prev_success") == 0) {
            out->ignore_if_prev_success = true;
        } else {
            weir_conf_section_errorf(err, st,
                                     "<store %s>: '%s' is not a store argument; expected "
                                     "ignore_error and/or ignore_if_prev_success",
                                     st->arg, w);
            rc = -1;
        }
    }
    free(words);
    if (rc == 0 && idx == 0 && out->ignore_if_prev_success) {
        weir_conf_section_errorf(err, st,
                                 "ignore_if_prev_success needs a store before it: put it on the "
                                 "second or a later <store>");
        rc = -1;
    }
    return rc;
}

static int copy_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    static const char *const modes[] = {"no_copy", "shallow", "deep", "marshal", NULL};
    int mode = 0;
    bool deep = false;
    if (weir_conf_get_enum(sec, "copy_mode", modes, &mode, err) < 0 ||
        weir_conf_get_bool(sec, "deep_copy", &deep, err) < 0)
        return -1;
    weir_copy_store_t stores[COPY_MAX_STORES];
    size_t n = 0;
    bool all_ignore = true, any_prev = false;
    for (size_t i = 0; i < sec->nchildren; i++) {
        weir_conf_section_t *st = sec->children[i];
        if (strcmp(st->name, "store") != 0) continue;
        if (n == COPY_MAX_STORES) {
            weir_conf_section_errorf(err, st, "@type copy takes at most %d <store> sections",
                                     COPY_MAX_STORES);
            return -1;
        }
        weir_copy_store_t *s = &stores[n];
        memset(s, 0, sizeof *s);
        if (read_store_arg(st, n, s, err) != 0) return -1;
        if (weir_engine_output_new(eng, st, &s->out, err) != 0) return -1;
        all_ignore = all_ignore && s->ignore_error;
        any_prev = any_prev || s->ignore_if_prev_success;
        n++;
    }
    if (n == 0) {
        weir_conf_section_errorf(err, sec,
                                 "@type copy needs at least one <store> section (each one an "
                                 "output, written like a <match>'s contents)");
        return -1;
    }
    if (all_ignore && !any_prev && !weir_engine_dry_run(eng))
        weir_warn("copy: every <store> has ignore_error and none ignore_if_prev_success, so an "
                  "event no store keeps is still acknowledged; is that intended?");
    weir_copy_env_t env = {
        .on_space = engine_on_space, .cancel_space = engine_cancel_space, .arg = eng};
    *state = weir_copy_new(&env, stores, n);
    return 0;
}

static weir_emit_result_t copy_emit(void *state, const weir_batch_t *b, weir_emit_cb cb, void *arg)
{
    return weir_copy_emit(state, b, cb, arg);
}

static void copy_stop(void *state, void (*done)(void *), void *arg)
{
    weir_copy_stop(state, done, arg);
}

static void copy_destroy(void *state)
{
    weir_copy_free(state);
}

const weir_output_ops_t weir_out_copy_ops = {
    .type = "copy",
    .create = copy_create,
    .emit = copy_emit,
    .stop = copy_stop,
    .destroy = copy_destroy,
};
