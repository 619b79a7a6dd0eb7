/* <buffer> settings (Fluentd's names and defaults): chunk keys, timekeys, flush modes, limits,
 * retries, overflow. Everything is validated here, at configuration time, so the running
 * buffer never meets a setting it cannot honour; parameters Fluentd users write that change
 * nothing in weir are accepted with a debug line saying why. */
#include "buffer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool valid_record_key(const char *k)
{
    if (!*k) return false;
    for (const char *p = k; *p; p++)
        if (!(((*p | 32) >= 'a' && (*p | 32) <= 'z') || (*p >= '0' && *p <= '9') ||
              strchr("-_.@$", *p)))
            return false;
    return true;
}

static int parse_chunk_keys(weir_buffer_t *b, const char *arg, weir_conf_section_t *sec,
                            weir_err_t *err)
{
    char *copy = weir_strdup(arg);
    int rc = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (!*tok) continue;
        if (strcmp(tok, "time") == 0) {
            b->key_time = true;
        } else if (strcmp(tok, "tag") == 0) {
            b->key_tag = true;
        } else if (tok[0] == '$' || strchr(tok, '[')) {
            weir_conf_section_errorf(err, sec,
                                     "chunk key '%s': nested record keys are not supported yet; "
                                     "use a top-level record key",
                                     tok);
            rc = -1;
            break;
        } else if (!valid_record_key(tok)) {
            weir_conf_section_errorf(err, sec,
                                     "chunk key '%s' has characters outside [-_.@a-zA-Z0-9]", tok);
            rc = -1;
            break;
        } else if (strlen(tok) > WEIR_BUFFER_MAX_KEY_LEN) {
            weir_conf_section_errorf(err, sec, "chunk key '%.32s...' is longer than %d bytes", tok,
                                     WEIR_BUFFER_MAX_KEY_LEN);
            rc = -1;
            break;
        } else if (b->nvar_keys >= WEIR_BUFFER_MAX_KEYS) {
            weir_conf_section_errorf(err, sec, "more than %d record chunk keys",
                                     WEIR_BUFFER_MAX_KEYS);
            rc = -1;
            break;
        } else {
            b->var_keys[b->nvar_keys++] = weir_strdup(tok);
        }
    }
    free(copy);
    return rc;
}

static int get_enum(weir_conf_section_t *s, const char *key, const char *const *names, int *out,
                    weir_err_t *err)
{
    return weir_conf_get_enum(s, key, names, out, err) < 0 ? -1 : 0;
}

/* Params Fluentd users write that change nothing in weir, each with the reason. */
static int accept_inert(weir_conf_section_t *s, weir_err_t *err)
{
    static const char *const inert[] = {
        "flush_thread_interval", /* weir's flush loop is event driven */
        "flush_thread_burst_interval",
        "delayed_commit_timeout",    /* no delayed commits: outputs report when done */
        "retry_secondary_threshold", /* weir has no <secondary> */
        "path_suffix",               /* weir's chunk files have their own names */
        NULL,
    };
    for (size_t i = 0; inert[i]; i++) {
        weir_conf_param_t *p = weir_conf_find(s, inert[i]);
        if (!p) continue;
        p->used = true;
        weir_debug("<buffer>: '%s' has no effect in weir", inert[i]);
    }
    const char *v = NULL;
    if (weir_conf_get_str(s, "file_permission", &v, err) < 0) return -1;
    if (v) weir_warn("<buffer>: file_permission %s ignored: weir keeps buffer files 0600", v);
    v = NULL;
    if (weir_conf_get_str(s, "dir_permission", &v, err) < 0) return -1;
    if (v) weir_warn("<buffer>: dir_permission %s ignored: weir keeps buffer directories 0700", v);
    return 0;
}

int buf_read_conf(weir_buffer_t *b, weir_conf_section_t *s, const weir_buffer_defaults_t *d,
                  weir_err_t *err)
{
    static const char *const types[] = {"memory", "file", NULL};
    static const char *const modes[] = {"default", "lazy", "interval", "immediate", NULL};
    static const char *const overflow[] = {"throw_exception", "block", "drop_oldest_chunk", NULL};
    static const char *const retry_types[] = {"exponential_backoff", "periodic", NULL};
    static const char *const acks[] = {"fsync", "write", NULL};
    static const char *const compress[] = {"text", NULL};
    int type = 0, mode = 0, ovf = 0, rt = 0, ack = 0, comp = 0;
    const char *path = NULL, *zone = NULL;
    bool have_flush_interval = false, fas_set = false;
    int64_t queue_len = 0;

    if (parse_chunk_keys(b, s && s->arg[0] ? s->arg : d->chunk_keys, s, err) != 0) return -1;
    b->timekey = (double)d->timekey;
    b->timekey_wait = 600;
    b->flush_interval = 60;
    b->flush_thread_count = 1;
    b->chunk_full_threshold = 0.95;
    b->retry_wait = 1;
    b->retry_base = 2;
    b->retry_timeout = 72 * 3600;
    b->retry_randomize = true;
    if (!s) {
        b->type = BUF_MEMORY;
    } else {
        weir_conf_section_use(s);
        int r;
        if (get_enum(s, "@type", types, &type, err) ||
            get_enum(s, "flush_mode", modes, &mode, err) ||
            get_enum(s, "overflow_action", overflow, &ovf, err) ||
            get_enum(s, "retry_type", retry_types, &rt, err) ||
            get_enum(s, "ack_after", acks, &ack, err) ||
            get_enum(s, "compress", compress, &comp, err))
            return -1;
        if (weir_conf_get_str(s, "path", &path, err) < 0 ||
            weir_conf_get_time(s, "timekey", &b->timekey, err) < 0 ||
            weir_conf_get_time(s, "timekey_wait", &b->timekey_wait, err) < 0 ||
            weir_conf_get_bool(s, "timekey_use_utc", &b->timekey_use_utc, err) < 0 ||
            weir_conf_get_str(s, "timekey_zone", &zone, err) < 0 ||
            weir_conf_get_int(s, "flush_thread_count", &b->flush_thread_count, err) < 0 ||
            weir_conf_get_int(s, "chunk_limit_records", &b->chunk_limit_records, err) < 0 ||
            weir_conf_get_float(s, "chunk_full_threshold", &b->chunk_full_threshold, err) < 0 ||
            weir_conf_get_int(s, "queue_limit_length", &queue_len, err) < 0 ||
            weir_conf_get_int(s, "queued_chunks_limit_size", &b->queued_chunks_limit_size, err) <
                0 ||
            weir_conf_get_int(s, "staged_chunks_limit", &b->staged_chunks_limit, err) < 0 ||
            weir_conf_get_time(s, "retry_wait", &b->retry_wait, err) < 0 ||
            weir_conf_get_time(s, "retry_max_interval", &b->retry_max_interval, err) < 0 ||
            weir_conf_get_float(s, "retry_exponential_backoff_base", &b->retry_base, err) < 0 ||
            weir_conf_get_time(s, "retry_timeout", &b->retry_timeout, err) < 0 ||
            weir_conf_get_int(s, "retry_max_times", &b->retry_max_times, err) < 0 ||
            weir_conf_get_bool(s, "retry_forever", &b->retry_forever, err) < 0 ||
            weir_conf_get_bool(s, "retry_randomize", &b->retry_randomize, err) < 0 ||
            weir_conf_get_bool(s, "disable_chunk_backup", &b->disable_chunk_backup, err) < 0 ||
            accept_inert(s, err) < 0)
            return -1;
        if ((r = weir_conf_get_time(s, "flush_interval", &b->flush_interval, err)) < 0) return -1;
        have_flush_interval = r == 1;
        if ((r = weir_conf_get_bool(s, "flush_at_shutdown", &b->flush_at_shutdown, err)) < 0)
            return -1;
        fas_set = r == 1;
        if (weir_conf_get_size(s, "chunk_limit_size", &b->chunk_limit_size, err) < 0 ||
            weir_conf_get_size(s, "total_limit_size", &b->total_limit_size, err) < 0)
            return -1;
    }
    b->type = (buf_type_t)type;
    b->overflow = (overflow_action_t)ovf;
    b->retry_periodic = rt == 1;
    b->ack_after_write = ack == 1;
    if (!fas_set) b->flush_at_shutdown = b->type == BUF_MEMORY;
    if (!b->chunk_limit_size) b->chunk_limit_size = b->type == BUF_FILE ? 256ull << 20 : 8ull << 20;
    if (queue_len > 0 && !b->total_limit_size)
        b->total_limit_size = b->chunk_limit_size * (uint64_t)queue_len;
    if (!b->total_limit_size)
        b->total_limit_size = b->type == BUF_FILE ? 64ull << 30 : 512ull << 20;
    if (!b->queued_chunks_limit_size) b->queued_chunks_limit_size = b->flush_thread_count;
    if (!b->staged_chunks_limit) b->staged_chunks_limit = BUF_STAGED_LIMIT_DEFAULT;
    if (b->staged_chunks_limit < 1) {
        weir_conf_errorf(err, weir_conf_find(s, "staged_chunks_limit"),
                         "staged_chunks_limit must be at least 1");
        return -1;
    }
    b->staged_rl.interval_ms = BUF_STAGED_WARN_MS;

    if (b->type == BUF_FILE) {
        if (!path) {
            weir_conf_section_errorf(err, s, "<buffer> @type file needs 'path' (a directory)");
            return -1;
        }
        if (strchr(path, '*')) {
            weir_conf_errorf(err, weir_conf_find(s, "path"),
                             "path: weir's buffer path is a directory; drop the '*' pattern");
            return -1;
        }
        b->path = weir_strdup(path);
    } else if (path) {
        weir_conf_errorf(err, weir_conf_find(s, "path"), "path is only for <buffer> @type file");
        return -1;
    }
    if (b->key_time && b->timekey <= 0) {
        weir_conf_section_errorf(err, s, "timekey must be greater than 0");
        return -1;
    }
    if (b->flush_thread_count < 1 || b->flush_thread_count > 64) {
        weir_conf_errorf(err, weir_conf_find(s, "flush_thread_count"),
                         "flush_thread_count must be 1..64");
        return -1;
    }
    if (b->chunk_full_threshold <= 0 || b->chunk_full_threshold > 1) {
        weir_conf_errorf(err, weir_conf_find(s, "chunk_full_threshold"),
                         "chunk_full_threshold must be in (0, 1]");
        return -1;
    }
    if (b->chunk_limit_size < 1024 || b->chunk_limit_size > (4ull << 30)) {
        weir_conf_errorf(err, weir_conf_find(s, "chunk_limit_size"),
                         "chunk_limit_size must be between 1k and 4g");
        return -1;
    }
    if (b->retry_base <= 1 && !b->retry_periodic) {
        weir_conf_errorf(err, weir_conf_find(s, "retry_exponential_backoff_base"),
                         "retry_exponential_backoff_base must be greater than 1");
        return -1;
    }
    /* Fluentd: flush_mode default is lazy with a time key, else interval */
    if (mode == 0)
        b->flush_mode = b->key_time ? FLUSH_LAZY : FLUSH_INTERVAL;
    else
        b->flush_mode = mode == 1 ? FLUSH_LAZY : mode == 2 ? FLUSH_INTERVAL : FLUSH_IMMEDIATE;
    if (have_flush_interval && b->key_time && mode == 0) {
        weir_warn("<buffer>: flush_interval is ignored with a time chunk key unless flush_mode "
                  "interval is set (as in Fluentd)");
    } else if (have_flush_interval && b->flush_mode != FLUSH_INTERVAL) {
        weir_conf_errorf(err, weir_conf_find(s, "flush_interval"),
                         "flush_interval needs flush_mode interval");
        return -1;
    }
    if (b->timekey_use_utc) zone = NULL;
    if (weir_tz_init(&b->zone, zone, !b->timekey_use_utc, err) != 0) {
        weir_err_prefix(err, "timekey_zone");
        return -1;
    }
    return 0;
}

bool weir_buffer_has_key(const weir_buffer_t *b, const char *key)
{
    if (strcmp(key, "time") == 0) return b->key_time;
    if (strcmp(key, "tag") == 0) return b->key_tag;
    for (size_t i = 0; i < b->nvar_keys; i++)
        if (strcmp(b->var_keys[i], key) == 0) return true;
    return false;
}

const char *weir_buffer_path(const weir_buffer_t *b)
{
    return b->type == BUF_FILE ? b->path : NULL;
}

double weir_buffer_timekey(const weir_buffer_t *b)
{
    return b->key_time ? b->timekey : 0;
}

int weir_buffer_flush_threads(const weir_buffer_t *b)
{
    return (int)b->flush_thread_count;
}

bool weir_buffer_timekey_utc(const weir_buffer_t *b)
{
    return b->timekey_use_utc;
}

int weir_buffer_timekey_offset(const weir_buffer_t *b, int64_t t)
{
    return b->timekey_use_utc ? 0 : weir_tz_offset((weir_tz_t *)&b->zone, t, NULL);
}
