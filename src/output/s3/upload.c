/* One chunk to one S3 object.
 *
 *   worker thread: read the chunk, <inject> + <format> every event, compress (store_as, in
 *                  body.c: the same chunk always gives the same bytes), hash
 *                  the body (SHA-256 for the signature, MD5 for Content-MD5; per part for a
 *                  multipart upload) and make sure the credentials are fresh (this may fetch
 *                  them over HTTP, which is why it happens here and not on the loop)
 *   loop thread:   build the key; with check_object, HEAD key_0, key_1, ... until one is free
 *                  (fluent-plugin-s3's index loop); then one PUT, or for a body above
 *                  multipart_threshold: initiate, the parts one after another, complete (abort
 *                  on failure so no incomplete upload is left to bill)
 *   then           weir_chunk_write_done, exactly once.
 *
 * Every request is retried in place on transport errors, 5xx and throttling, after 0.3, 0.6
 * and 1.2 s as the AWS SDK does; what still fails is a RETRY for the buffer's backoff. When S3
 * refuses the credentials (ExpiredToken: they can expire between two parts of an upload), the
 * job fetches new ones on a worker thread, once, and sends the same request again, so an
 * upload under way is neither aborted nor started over.
 *
 * Some failures can never pass, and are UNRECOVERABLE, for the buffer to move the chunk to
 * backup at once: a key that cannot be built or is longer than S3_KEY_MAX (retrying would
 * build it the same way), and S3's answers that say this object can never be stored
 * (unstorable_codes). Answers that an operator can fix (AccessDenied, NoSuchBucket, ...) are
 * retried, with an error in the log that says what to fix. Every failed request is counted
 * by reason in weir_s3_request_errors_total, every request sent again in
 * weir_s3_request_retries_total.
 *
 * A request that may have stored the object (a PUT or a CompleteMultipartUpload that got no
 * answer: a reset, a timeout) leaves its key in the output's memo, by chunk id. An answer, even
 * an error, says the object was not stored (S3 applies a PUT whole or not at all), and leaves
 * nothing. The chunk's next attempt takes the remembered key instead of looking for a free
 * one, so a response that never came does not become a second object with the same events.
 * With check_object (the HEAD loop), it first asks S3 what is there: nothing, and it stores
 * there; an object whose ETag is the one this chunk's body gives, and it is done; another
 * object (another chunk took the free key meanwhile), and it looks for a free key as usual:
 * never an overwrite, at worst a duplicate (for example where SSE-KMS makes ETags other than
 * MD5s). The memo lives in memory and holds at most S3_KEY_MEMO_MAX keys. After a restart the
 * HEAD loop runs again; where the index does not change the key (${chunk_id} keys) an object
 * found there with this chunk's ETag is this chunk's, stored by an attempt that a crash cut
 * off before the chunk was deleted, and the chunk is done (with %{index} the loop moves on to
 * the next index: a second object, which is why weir warns about such keys at start).
 *
 * The parts go one at a time: a chunk is at most a few hundred MiB, and parallel parts would
 * only pay off for bodies far larger than weir's chunks. */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "s3_internal.h"
#include "weir/log.h"
#include "weir/placeholder.h"

#define S3_MAX_PARTS 10000 /* S3's limit on parts per upload */

struct s3_key_memo {
    char id[33]; /* the chunk's id */
    char *key;
    long index;
    struct s3_key_memo *next;
};

typedef enum phase { PH_HEAD, PH_PUT, PH_MP_INIT, PH_MP_PART, PH_MP_COMPLETE, PH_MP_ABORT } phase_t;

static const char *const phase_method[] = {"HEAD", "PUT", "POST", "PUT", "POST", "DELETE"};

typedef struct part {
    size_t off, len;
    char sha[S3_SHA256_HEX_LEN + 1];
    char md5[S3_MD5_B64_LEN + 1];
    char *etag;
} part_t;

typedef struct s3_job {
    uv_work_t work;
    s3_out_t *o;
    weir_chunk_t *chunk;
    /* made on the worker */
    weir_buf_t body;
    char sha[S3_SHA256_HEX_LEN + 1];
    char md5[S3_MD5_B64_LEN + 1];
    part_t *parts;
    size_t nparts;
    /* for the digest (<digest> only): the whole body's SHA-256, the records stored, the
     * oldest and newest event seconds */
    char body_sha[S3_SHA256_HEX_LEN + 1];
    uint64_t records;
    int64_t oldest, newest;
    s3_creds_t creds;
    weir_write_status_t status;
    char msg[WEIR_ERR_MAX];
    bool empty;
    /* the loop's state */
    phase_t phase;
    long index, used_index;
    weir_buf_t key, prev_key;
    char **meta_names, **meta_values;
    size_t nmeta;
    s3_http_req_t req;
    int attempt;
    uv_timer_t *timer;
    char *upload_id;
    size_t part;
    weir_buf_t xml;
    weir_write_status_t abort_status;
    char abort_msg[WEIR_ERR_MAX];
    bool maybe_stored;  /* a PUT or Complete got no answer: the object may exist at j->key */
    bool verify_memo;   /* the HEAD in flight asks whether a remembered key holds our object */
    bool creds_renewed; /* new credentials were fetched once already */
    bool renew_failed;
    char renew_msg[WEIR_ERR_MAX];
} s3_job_t;

long s3_request_timeout_ms(size_t len)
{
    /* 60 s like the SDK's read timeout, plus 1 s per 512 KiB for the body itself */
    return 60000L + (long)(len / (512 * 1024)) * 1000L;
}

static bool code_is(const s3_http_req_t *r, const char *const *codes)
{
    weir_buf_t code;
    weir_buf_init(&code);
    bool hit = false;
    if (r->resp.len && s3_xml_text(r->resp.data, r->resp.len, "Code", &code) == 1) {
        weir_buf_putc(&code, '\0');
        for (size_t i = 0; codes[i] && !hit; i++)
            hit = strcmp(code.data, codes[i]) == 0;
    }
    weir_buf_free(&code);
    return hit;
}

static const char *const throttling_codes[] = {
    "RequestTimeout",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "PriorRequestNotComplete",
    NULL,
};

/* S3's answers that this object, as weir makes it, can never be stored: the key or the
 * metadata is too long (both come from the chunk: its tag, its time), or the body is larger
 * than S3 takes. Sending it again cannot help. */
static const char *const unstorable_codes[] = {
    "KeyTooLongError",
    "MetadataTooLarge",
    "EntityTooLarge",
    NULL,
};

/* Answers that stay until an operator changes the configuration, the bucket or its policy:
 * the chunk is kept and retried (the fix may come at any moment), and the log says so. */
static const char *const operator_codes[] = {
    "AccessDenied",          "AllAccessDisabled",
    "InvalidBucketName",     "NoSuchBucket",
    "AccountProblem",        "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "InvalidRequest",
    "PermanentRedirect",     NULL,
};

bool s3_response_transient(const s3_http_req_t *r)
{
    if (r->curl_code != CURLE_OK) return true;
    if (r->status >= 500 || r->status == 429) return true;
    return r->status == 400 && code_is(r, throttling_codes);
}

/* Did S3 refuse the credentials themselves? A HEAD answer has no body to say why, so a 400
 * or 403 to a HEAD counts too: for temporary credentials that costs one extra fetch, and
 * without it an expired token would fail every HEAD until the credentials' own expiry. */
static bool credentials_rejected(const s3_http_req_t *r, phase_t phase)
{
    static const char *const codes[] = {"ExpiredToken",          "InvalidToken",
                                        "TokenRefreshRequired",  "InvalidAccessKeyId",
                                        "ExpiredTokenException", NULL};
    if (r->curl_code != CURLE_OK || (r->status != 400 && r->status != 403)) return false;
    return phase == PH_HEAD || code_is(r, codes);
}

static s3_err_reason_t error_reason(const s3_http_req_t *r, phase_t phase)
{
    if (r->curl_code == CURLE_OPERATION_TIMEDOUT) return S3_ERR_TIMEOUT;
    if (r->curl_code != CURLE_OK) return S3_ERR_CONNECTION;
    if (r->status == 429 || r->status == 503 || code_is(r, throttling_codes))
        return S3_ERR_THROTTLED;
    if (r->status >= 500 || r->status < 300) return S3_ERR_SERVER; /* < 300: Complete's <Error> */
    if (credentials_rejected(r, phase)) return S3_ERR_CREDENTIALS;
    if (code_is(r, unstorable_codes)) return S3_ERR_UNSTORABLE;
    return S3_ERR_REFUSED;
}

void s3_count_request_error(s3_out_t *o, const s3_http_req_t *r)
{
    weir_counter_add(o->req_errors[error_reason(r, PH_PUT)], 1);
}

void s3_upload_metrics(s3_out_t *o, weir_plugin_metrics_t *pm)
{
    static const char *const names[S3_ERR_NREASONS] = {
        [S3_ERR_THROTTLED] = "throttled",     [S3_ERR_SERVER] = "server_error",
        [S3_ERR_TIMEOUT] = "timeout",         [S3_ERR_CONNECTION] = "connection",
        [S3_ERR_CREDENTIALS] = "credentials", [S3_ERR_UNSTORABLE] = "unstorable",
        [S3_ERR_REFUSED] = "refused",
    };
    if (!pm) return;
    weir_metrics_t *m = weir_plugin_metrics_registry(pm);
    const char *const *base = weir_plugin_metrics_labels(pm);
    const char *labels[7] = {base[0], base[1], base[2], base[3], "reason", NULL, NULL};
    for (int i = 0; i < S3_ERR_NREASONS; i++) {
        labels[5] = names[i];
        o->req_errors[i] =
            weir_metrics_counter(m, o, "weir_s3_request_errors_total",
                                 "S3 requests that failed (each attempt), by reason.", labels);
    }
    o->req_retries = weir_metrics_counter(
        m, o, "weir_s3_request_retries_total",
        "S3 requests sent again within one upload: after a transient failure (0.3, 0.6, 1.2 s) "
        "or with new credentials.",
        base);
}

/* ---- the worker thread -------------------------------------------------------------------- */

/* The lines of a piece of the object's text, for the digest's `records`: what weir verify
 * counts in the stored object (one per event for the line formats; a single_value with a
 * newline in its message is more lines than events, and the digest says what is stored). */
static void count_lines(s3_job_t *j, const char *p, size_t len)
{
    for (const char *e = p + len; p < e && (p = memchr(p, '\n', (size_t)(e - p))); p++)
        j->records++;
}

/* The oldest and newest event seconds of a run of entries, for the digest. */
static void event_seconds(s3_job_t *j, const char *entries, size_t len)
{
    weir_batch_iter_t it;
    weir_entry_t e;
    weir_batch_iter_init(&it, entries, len);
    while (weir_batch_iter_next(&it, &e) == 1) {
        int64_t t = e.time.sec;
        if (j->oldest < 0 || t < j->oldest) j->oldest = t;
        if (t > j->newest) j->newest = t;
    }
}

/* Formats the chunk one appended batch at a time into the body writer: memory holds one batch
 * and its text, never the chunk (a 1 s bucket at a million events/s is 200 MB). */
static int format_chunk(s3_job_t *j, s3_body_writer_t *bw, weir_err_t *err)
{
    s3_out_t *o = j->o;
    weir_buf_t text, scratch;
    weir_buf_init(&text);
    weir_buf_init(&scratch);
    weir_formatter_t f;
    weir_inject_t inj;
    bool have_f = false, have_inj = false;
    int rc = -1;
    size_t skipped = 0;
    weir_err_t first = {{0}};
    weir_chunk_reader_t *rd = weir_chunk_reader_open(j->chunk, err);
    if (!rd) goto out;
    /* formatter state is per thread: this job builds its own */
    if (weir_formatter_init(&f, &o->fopts, err) != 0) goto out;
    have_f = true;
    if (weir_inject_init(&inj, &o->iopts, err) != 0) goto out;
    have_inj = true;
    weir_batch_t view = {0}; /* each run of the chunk, with its own tag */
    const char *entries;
    size_t len;
    uint32_t count;
    int r;
    if (weir_chunk_is_fluentd(j->chunk)) {
        /* adopted from Fluentd, whose out_s3 formatted the lines already: store them */
        while ((r = weir_chunk_reader_raw(rd, &entries, &len, err)) == 1) {
            if (o->digest) count_lines(j, entries, len);
            if (s3_body_write(bw, entries, len) != 0) {
                weir_err_set(err, "compression failed");
                goto out;
            }
        }
        rc = r < 0 ? -1 : 0;
        goto out;
    }
    while ((r = weir_chunk_reader_next(rd, &entries, &len, &count, err)) == 1) {
        view.data = (weir_buf_t){.data = (char *)entries, .len = len};
        view.count = count;
        view.tag = (char *)weir_chunk_reader_tag(rd);
        view.tag_len = strlen(view.tag);
        size_t bad = 0;
        text.len = 0;
        if (weir_format_batch(&f, &inj, &view, &text, &scratch, &bad, &first) < 0) {
            weir_err_set(err, "chunk %s holds bytes that are not events",
                         weir_chunk_id_hex(j->chunk));
            j->status = WEIR_WRITE_UNRECOVERABLE;
            goto out;
        }
        skipped += bad;
        if (o->digest) {
            count_lines(j, text.data, text.len);
            event_seconds(j, entries, len);
        }
        if (s3_body_write(bw, text.data, text.len) != 0) {
            weir_err_set(err, "compression failed");
            goto out;
        }
    }
    if (r < 0) goto out;
    if (skipped)
        weir_warn("s3 %s: %zu records of chunk %s cannot be formatted: %s", o->id, skipped,
                  weir_chunk_id_hex(j->chunk), first.msg);
    rc = 0;
out:
    weir_chunk_reader_close(rd);
    if (have_f) weir_formatter_free(&f);
    if (have_inj) weir_inject_free(&inj);
    weir_buf_free(&text);
    weir_buf_free(&scratch);
    return rc;
}

static void plan_parts(s3_job_t *j)
{
    s3_out_t *o = j->o;
    size_t len = j->body.len;
    if (len <= o->multipart_threshold) {
        s3_sha256_hex(j->body.data ? j->body.data : "", len, j->sha);
        s3_md5_base64(j->body.data ? j->body.data : "", len, j->md5);
        memcpy(j->body_sha, j->sha, sizeof j->sha); /* the digest's hash is the signature's */
        return;
    }
    if (o->digest) s3_sha256_hex(j->body.data, len, j->body_sha);
    size_t size = o->multipart_chunk_size;
    if ((len + size - 1) / size > S3_MAX_PARTS) size = (len + S3_MAX_PARTS - 1) / S3_MAX_PARTS;
    j->nparts = (len + size - 1) / size;
    j->parts = weir_calloc(j->nparts, sizeof *j->parts);
    for (size_t i = 0; i < j->nparts; i++) {
        part_t *p = &j->parts[i];
        p->off = i * size;
        p->len = len - p->off < size ? len - p->off : size;
        s3_sha256_hex(j->body.data + p->off, p->len, p->sha);
        s3_md5_base64(j->body.data + p->off, p->len, p->md5);
    }
}

static void prep_work(uv_work_t *req)
{
    s3_job_t *j = req->data;
    s3_out_t *o = j->o;
    weir_err_t err = {{0}};
    s3_body_writer_t bw;
    bool have_bw = false;
    j->status = WEIR_WRITE_RETRY;
    if (weir_chunk_events(j->chunk) == 0) {
        j->empty = true;
        j->status = WEIR_WRITE_OK;
        goto out;
    }
    have_bw = true;
    j->oldest = j->newest = -1;
    if (s3_body_init(&bw, o->store_as, o->zstd_level, &j->body) != 0) {
        weir_err_set(&err, "cannot start the compressor");
        goto out;
    }
    if (format_chunk(j, &bw, &err) != 0) goto out;
    if (s3_body_finish(&bw) != 0) {
        weir_err_set(&err, "compression failed");
        goto out;
    }
    plan_parts(j);
    if (s3_provider_get(o->creds, &j->creds, &err) != 0) goto out;
    j->status = WEIR_WRITE_OK;
out:
    if (have_bw) s3_body_free(&bw);
    snprintf(j->msg, sizeof j->msg, "%s", err.msg);
}

/* ---- the loop: finishing ------------------------------------------------------------------ */

static void free_handle(uv_handle_t *h)
{
    free(h);
}

static void job_free(s3_job_t *j)
{
    if (j->timer) uv_close((uv_handle_t *)j->timer, free_handle);
    s3_http_req_reset(&j->req);
    weir_buf_free(&j->req.resp);
    weir_buf_free(&j->body);
    weir_buf_free(&j->key);
    weir_buf_free(&j->prev_key);
    weir_buf_free(&j->xml);
    for (size_t i = 0; i < j->nparts; i++)
        free(j->parts[i].etag);
    free(j->parts);
    for (size_t i = 0; i < j->nmeta; i++) {
        free(j->meta_names[i]);
        free(j->meta_values[i]);
    }
    free(j->meta_names);
    free(j->meta_values);
    free(j->upload_id);
    s3_creds_free(&j->creds);
    free(j);
}

/* Takes the memo entry of a chunk out of the list; NULL if there is none. */
static s3_key_memo_t *memo_unlink(s3_out_t *o, const char *id)
{
    for (s3_key_memo_t **p = &o->memo; *p; p = &(*p)->next) {
        if (strcmp((*p)->id, id) != 0) continue;
        s3_key_memo_t *m = *p;
        *p = m->next;
        o->nmemo--;
        return m;
    }
    return NULL;
}

char *s3_memo_take(s3_out_t *o, const char *id, long *index)
{
    s3_key_memo_t *m = memo_unlink(o, id);
    if (!m) return NULL;
    char *key = m->key;
    *index = m->index;
    free(m);
    return key;
}

/* New entries go to the front; when the memo is full the oldest goes (its chunk would run
 * the HEAD loop again). */
void s3_memo_remember(s3_out_t *o, const char *id, const char *key, long index)
{
    s3_key_memo_t *m = memo_unlink(o, id);
    if (!m) {
        m = weir_calloc(1, sizeof *m);
        snprintf(m->id, sizeof m->id, "%s", id);
    }
    free(m->key);
    m->key = weir_strdup(key);
    m->index = index;
    m->next = o->memo;
    o->memo = m;
    if (++o->nmemo > S3_KEY_MEMO_MAX) {
        s3_key_memo_t **p = &o->memo;
        while ((*p)->next)
            p = &(*p)->next;
        free((*p)->key);
        free(*p);
        *p = NULL;
        o->nmemo--;
    }
}

void s3_upload_memo_free(s3_out_t *o)
{
    long index;
    while (o->memo)
        free(s3_memo_take(o, o->memo->id, &index));
}

/* After an attempt: delivered or given up, the chunk's key is forgotten; failed after a
 * request that may have stored the object, it is remembered for the next attempt; failed
 * before one, what was remembered stays. */
static void memo_update(s3_job_t *j, weir_write_status_t status)
{
    const char *id = weir_chunk_id_hex(j->chunk);
    long index;
    if (status == WEIR_WRITE_RETRY && j->maybe_stored)
        s3_memo_remember(j->o, id, j->key.data, j->used_index);
    else if (status != WEIR_WRITE_RETRY)
        free(s3_memo_take(j->o, id, &index));
}

static void finish(s3_job_t *j, weir_write_status_t status, const char *msg)
{
    weir_chunk_t *c = j->chunk;
    char m[WEIR_ERR_MAX];
    snprintf(m, sizeof m, "%s", msg ? msg : "");
    memo_update(j, status);
    job_free(j);
    weir_chunk_write_done(c, status, m);
}

static void send_request(s3_job_t *j);

/* A failed step: a started multipart upload is aborted first, then the chunk is reported. */
static void fail(s3_job_t *j, weir_write_status_t status, const char *msg)
{
    if (j->upload_id && j->phase != PH_MP_ABORT) {
        j->abort_status = status;
        snprintf(j->abort_msg, sizeof j->abort_msg, "%s", msg);
        j->phase = PH_MP_ABORT;
        j->attempt = 0;
        send_request(j);
        return;
    }
    finish(j, status, msg);
}

void s3_describe_object(const s3_out_t *o, const char *key, size_t len, weir_buf_t *out)
{
    if (len > S3_DESCRIBE_KEY_MAX)
        weir_buf_printf(out, "s3://%s/%.*s... (a key of %zu bytes)", o->bucket, S3_DESCRIBE_KEY_MAX,
                        key, len);
    else
        s3_object_url(o, key, out);
}

/* "PUT s3://bucket/key: HTTP 403 AccessDenied: Access Denied" */
static void describe(s3_job_t *j, const char *what, weir_buf_t *out)
{
    const s3_http_req_t *r = &j->req;
    weir_buf_printf(out, "%s ", what ? what : phase_method[j->phase]);
    s3_describe_object(j->o, j->key.data, j->key.len, out);
    if (r->curl_code != CURLE_OK) {
        weir_buf_printf(out, ": %s", s3_http_error(r));
    } else {
        weir_buf_printf(out, ": HTTP %ld", r->status);
        weir_buf_t sum;
        weir_buf_init(&sum);
        s3_error_summary(r->resp.data, r->resp.len, &sum);
        if (sum.len) {
            weir_buf_putc(out, ' ');
            weir_buf_append(out, sum.data, sum.len);
        }
        weir_buf_free(&sum);
    }
    if (j->attempt > 0) weir_buf_printf(out, " (after %d attempts)", j->attempt + 1);
    weir_buf_putc(out, '\0');
}

static void fail_request(s3_job_t *j, const char *what)
{
    weir_buf_t m;
    weir_buf_init(&m);
    describe(j, what, &m);
    weir_write_status_t st = WEIR_WRITE_RETRY;
    if (credentials_rejected(&j->req, j->phase)) s3_provider_invalidate(j->o->creds);
    if (j->req.curl_code == CURLE_OK && code_is(&j->req, unstorable_codes)) {
        m.len--; /* describe() ended it with a '\0' */
        weir_buf_printf(&m, "; S3 can never store this object");
        weir_buf_putc(&m, '\0');
        st = WEIR_WRITE_UNRECOVERABLE;
    } else if (j->req.curl_code == CURLE_OK && code_is(&j->req, operator_codes)) {
        weir_error("s3 %s: %s; this will fail until the configuration, the bucket or its "
                   "policy is fixed; the chunk is kept and retried",
                   j->o->id, m.data);
    }
    fail(j, st, m.data);
    weir_buf_free(&m);
}

/* The object's line in the digest's open.jsonl is durable, or could not be written: then the
 * chunk stays and its key is remembered, so that the next attempt finds the object there by
 * its ETag (check_object) and records it again rather than storing a second copy. */
static void recorded(void *arg, int rc, const char *msg)
{
    s3_job_t *j = arg;
    if (rc == 0) {
        finish(j, WEIR_WRITE_OK, NULL);
        return;
    }
    j->maybe_stored = true;
    finish(j, WEIR_WRITE_RETRY, msg);
}

static void succeeded(s3_job_t *j)
{
    s3_out_t *o = j->o;
    int64_t tk;
    if (o->warn_for_delay > 0 && weir_chunk_timekey(j->chunk, &tk) &&
        (double)tk < (double)time(NULL) - o->warn_for_delay) {
        weir_buf_t u;
        weir_buf_init(&u);
        s3_object_url(o, j->key.data, &u);
        weir_buf_putc(&u, '\0');
        weir_warn("s3 %s: delayed events were put to %s", o->id, u.data);
        weir_buf_free(&u);
    }
    weir_debug("s3 %s: stored s3://%s/%s (%llu events, %zu bytes%s)", o->id, o->bucket, j->key.data,
               (unsigned long long)weir_chunk_events(j->chunk), j->body.len,
               j->nparts ? ", multipart" : "");
    if (!o->digest) {
        finish(j, WEIR_WRITE_OK, NULL);
        return;
    }
    /* the object goes into the open period's digest before its chunk is released */
    int64_t now = (int64_t)time(NULL);
    if (j->oldest < 0) /* no event times (a chunk adopted from Fluentd): its time bucket */
        j->oldest = j->newest = weir_chunk_timekey(j->chunk, &tk) ? tk : now;
    s3_digest_obj_t obj = {.key = j->key.data,
                           .size = j->body.len,
                           .sha256 = j->body_sha,
                           .records = j->records,
                           .oldest = j->oldest,
                           .newest = j->newest,
                           .accepted = now};
    s3_digest_record(o->digest, &obj, recorded, j);
}

/* ---- the loop: requests ------------------------------------------------------------------- */

static size_t object_headers(s3_job_t *j, s3_kv_t *h, bool md5)
{
    s3_out_t *o = j->o;
    size_t n = 0;
    h[n++] = (s3_kv_t){"Content-Type", s3_store_content_type(o->store_as)};
    if (md5 && o->compute_checksums) h[n++] = (s3_kv_t){"Content-MD5", j->md5};
    for (size_t i = 0; i < o->nput_headers; i++)
        h[n++] = o->put_headers[i];
    for (size_t i = 0; i < j->nmeta; i++)
        h[n++] = (s3_kv_t){j->meta_names[i], j->meta_values[i]};
    return n;
}

static void on_done(s3_http_req_t *r);

static void send_request(s3_job_t *j)
{
    s3_out_t *o = j->o;
    s3_kv_t h[S3_SIGN_MAX_HEADERS];
    s3_kv_t q[2];
    char pn[16];
    s3_reqspec_t spec = {.method = phase_method[j->phase], .key = j->key.data, .query = q};
    switch (j->phase) {
    case PH_HEAD:
        break;
    case PH_PUT:
        spec.headers = h;
        spec.nheaders = object_headers(j, h, true);
        spec.body = j->body.data ? j->body.data : "";
        spec.body_len = j->body.len;
        spec.payload_hash = j->sha;
        break;
    case PH_MP_INIT:
        q[0] = (s3_kv_t){"uploads", ""};
        spec.nquery = 1;
        spec.headers = h;
        spec.nheaders = object_headers(j, h, false);
        break;
    case PH_MP_PART: {
        part_t *p = &j->parts[j->part];
        snprintf(pn, sizeof pn, "%zu", j->part + 1);
        q[0] = (s3_kv_t){"partNumber", pn};
        q[1] = (s3_kv_t){"uploadId", j->upload_id};
        spec.nquery = 2;
        size_t n = 0;
        if (o->compute_checksums) h[n++] = (s3_kv_t){"Content-MD5", p->md5};
        for (size_t i = 0; i < o->nssec_headers; i++)
            h[n++] = o->ssec_headers[i];
        spec.headers = h;
        spec.nheaders = n;
        spec.body = j->body.data + p->off;
        spec.body_len = p->len;
        spec.payload_hash = p->sha;
        break;
    }
    case PH_MP_COMPLETE:
        q[0] = (s3_kv_t){"uploadId", j->upload_id};
        spec.nquery = 1;
        h[0] = (s3_kv_t){"Content-Type", "application/xml"};
        spec.headers = h;
        spec.nheaders = 1;
        spec.body = j->xml.data;
        spec.body_len = j->xml.len;
        break;
    case PH_MP_ABORT:
        q[0] = (s3_kv_t){"uploadId", j->upload_id};
        spec.nquery = 1;
        break;
    }
    s3_http_req_reset(&j->req);
    j->req.done = on_done;
    j->req.arg = j;
    j->req.connect_timeout_ms = 15000;
    j->req.timeout_ms = s3_request_timeout_ms(spec.body_len);
    weir_err_t err = {{0}};
    if (s3_request_build(o, &j->creds, &spec, &j->req, &err) != 0) {
        fail(j, WEIR_WRITE_RETRY, err.msg);
        return;
    }
    s3_http_submit(o->http, &j->req);
}

static void on_retry_timer(uv_timer_t *t)
{
    send_request(t->data);
}

/* Builds the key for the current index. */
static int build_key(s3_job_t *j)
{
    weir_err_t err = {{0}};
    s3_key_vars_t v = {.index = j->index, .now = time(NULL)};
    j->key.len = 0;
    if (s3_key_build(&j->o->keyfmt, j->o->buffer, j->chunk, &v, &j->key, &err) != 0) {
        finish(j, WEIR_WRITE_UNRECOVERABLE, err.msg);
        return -1;
    }
    weir_buf_putc(&j->key, '\0');
    j->key.len--;
    return 0;
}

static void start_upload(s3_job_t *j);
static bool etag_is_ours(const s3_job_t *j, const char *etag);

/* fluent-plugin-s3's loop: key_i exists -> try i+1; the same key twice -> error/overwrite. */
static void head_next(s3_job_t *j)
{
    if (build_key(j) != 0) return;
    if (j->index > 0 && j->key.len == j->prev_key.len &&
        memcmp(j->key.data, j->prev_key.data, j->key.len) == 0) {
        /* the key does not change with the index (${chunk_id} keys): the HEAD that found it
         * taken may have found this chunk's own object, stored by an attempt whose end a
         * crash or a restart cut off; its ETag says so, and then the chunk is stored */
        if (etag_is_ours(j, j->req.etag)) {
            weir_info("s3 %s: s3://%s/%s already holds chunk %s (its ETag): an earlier attempt "
                      "stored it",
                      j->o->id, j->o->bucket, j->key.data, weir_chunk_id_hex(j->chunk));
            succeeded(j);
            return;
        }
        if (j->o->overwrite) {
            weir_warn("s3 %s: s3://%s/%s already exists, but will overwrite", j->o->id,
                      j->o->bucket, j->key.data);
            start_upload(j);
            return;
        }
        weir_buf_t m;
        weir_buf_init(&m);
        weir_buf_printf(&m,
                        "duplicated path is generated. use %%{index} in "
                        "s3_object_key_format: path = %s",
                        j->key.data);
        finish(j, WEIR_WRITE_RETRY, m.data);
        weir_buf_free(&m);
        return;
    }
    j->used_index = j->index++;
    j->prev_key.len = 0;
    weir_buf_append(&j->prev_key, j->key.data, j->key.len);
    j->phase = PH_HEAD;
    j->attempt = 0;
    send_request(j);
}

/* s3_metadata: placeholders, then %{index} as the index used (-1 without check_object). */
static int build_metadata(s3_job_t *j)
{
    s3_out_t *o = j->o;
    if (!o->nmeta) return 0;
    weir_buf_t idx;
    weir_buf_init(&idx);
    s3_index_format(&o->keyfmt.index, o->check_object ? j->used_index : -1, &idx);
    weir_buf_putc(&idx, '\0');
    j->meta_names = weir_calloc(o->nmeta, sizeof *j->meta_names);
    j->meta_values = weir_calloc(o->nmeta, sizeof *j->meta_values);
    int rc = 0;
    for (size_t i = 0; i < o->nmeta && rc == 0; i++) {
        weir_buf_t name, val;
        weir_buf_init(&name);
        weir_buf_init(&val);
        weir_err_t err = {{0}};
        weir_buf_printf(&name, "x-amz-meta-%s", o->meta_keys[i]);
        const char *names[] = {"index"}, *values[] = {idx.data};
        if (weir_placeholders_expand_vars(o->meta_values[i], o->buffer, j->chunk,
                                          &(weir_percent_vars_t){names, values, 1}, &val,
                                          &err) != 0) {
            finish(j, WEIR_WRITE_UNRECOVERABLE, err.msg);
            rc = -1;
        } else {
            weir_buf_putc(&val, '\0');
            j->meta_names[i] = name.data;
            j->meta_values[i] = val.data;
            j->nmeta = i + 1;
            weir_buf_init(&name);
            weir_buf_init(&val);
        }
        weir_buf_free(&name);
        weir_buf_free(&val);
    }
    weir_buf_free(&idx);
    return rc;
}

static void start_upload(s3_job_t *j)
{
    if (build_metadata(j) != 0) return;
    j->attempt = 0;
    j->phase = j->nparts ? PH_MP_INIT : PH_PUT;
    send_request(j);
}

static void complete_xml(s3_job_t *j)
{
    weir_buf_printf(&j->xml, "<CompleteMultipartUpload "
                             "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (size_t i = 0; i < j->nparts; i++)
        weir_buf_printf(&j->xml, "<Part><PartNumber>%zu</PartNumber><ETag>%s</ETag></Part>", i + 1,
                        j->parts[i].etag);
    weir_buf_printf(&j->xml, "</CompleteMultipartUpload>");
}

static void on_mp_init(s3_job_t *j)
{
    weir_buf_t id;
    weir_buf_init(&id);
    if (s3_xml_text(j->req.resp.data, j->req.resp.len, "UploadId", &id) != 1 || !id.len) {
        weir_buf_free(&id);
        fail(j, WEIR_WRITE_RETRY, "multipart upload: S3 returned no UploadId");
        return;
    }
    weir_buf_putc(&id, '\0');
    j->upload_id = id.data;
    j->part = 0;
    j->attempt = 0;
    j->phase = PH_MP_PART;
    send_request(j);
}

static void on_mp_part(s3_job_t *j)
{
    if (!j->req.etag[0]) {
        fail(j, WEIR_WRITE_RETRY, "multipart upload: a part was stored without an ETag");
        return;
    }
    j->parts[j->part].etag = weir_strdup(j->req.etag);
    j->attempt = 0;
    if (++j->part < j->nparts) {
        send_request(j);
        return;
    }
    complete_xml(j);
    j->phase = PH_MP_COMPLETE;
    send_request(j);
}

/* New credentials, on a worker: the provider may fetch them over HTTP. */
static void renew_work(uv_work_t *req)
{
    s3_job_t *j = req->data;
    s3_creds_t fresh = {0};
    weir_err_t err = {{0}};
    j->renew_failed = s3_provider_get(j->o->creds, &fresh, &err) != 0;
    if (j->renew_failed) {
        snprintf(j->renew_msg, sizeof j->renew_msg, "%s", err.msg);
        return;
    }
    /* no request of this job is in flight: the loop does not read j->creds now */
    s3_creds_free(&j->creds);
    j->creds = fresh;
}

static void renew_after(uv_work_t *req, int status)
{
    s3_job_t *j = req->data;
    if (status != 0 || j->renew_failed) {
        fail(j, WEIR_WRITE_RETRY, status != 0 ? "the upload job was cancelled" : j->renew_msg);
        return;
    }
    weir_counter_add(j->o->req_retries, 1);
    send_request(j); /* the same step, same part, same upload */
}

/* S3 refused the credentials of this job (they expired since the job fetched them): fetch new
 * ones and send the same request again, once per job. */
static bool renew_credentials(s3_job_t *j)
{
    if (j->creds_renewed || !credentials_rejected(&j->req, j->phase)) return false;
    j->creds_renewed = true;
    weir_info("s3 %s: S3 refused the credentials (HTTP %ld); fetching new ones", j->o->id,
              j->req.status);
    s3_provider_invalidate(j->o->creds);
    uv_queue_work(weir_engine_loop(j->o->eng), &j->work, renew_work, renew_after);
    return true;
}

/* The ETag S3 gives the object this job stores, unquoted, lowercase: the MD5 of the body in
 * hex, or for a multipart upload the MD5 of the parts' MD5s with "-<parts>" (without SSE-KMS;
 * with it no ETag matches and a remembered key is never reused, only written again elsewhere). */
static void expected_etag(const s3_job_t *j, char *out, size_t size)
{
    unsigned char raw[3 * (S3_MD5_B64_LEN / 4)], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (j->nparts == 0) {
        EVP_DecodeBlock(raw, (const unsigned char *)j->md5, S3_MD5_B64_LEN);
        memcpy(md, raw, 16);
        mdlen = 16;
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
        for (size_t i = 0; i < j->nparts; i++) {
            EVP_DecodeBlock(raw, (const unsigned char *)j->parts[i].md5, S3_MD5_B64_LEN);
            EVP_DigestUpdate(ctx, raw, 16);
        }
        EVP_DigestFinal_ex(ctx, md, &mdlen);
        EVP_MD_CTX_free(ctx);
    }
    size_t w = 0;
    for (unsigned i = 0; i < mdlen && w + 3 <= size; i++)
        w += (size_t)snprintf(out + w, size - w, "%02x", md[i]);
    if (j->nparts) snprintf(out + w, size - w, "-%zu", j->nparts);
}

static bool etag_is_ours(const s3_job_t *j, const char *etag)
{
    char want[64];
    expected_etag(j, want, sizeof want);
    size_t n = strlen(etag);
    if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"') {
        etag++;
        n -= 2;
    }
    return n == strlen(want) && strncasecmp(etag, want, n) == 0;
}

/* The answer to the HEAD of a remembered key (see the top of the file). */
static void memo_checked(s3_job_t *j, const s3_http_req_t *r)
{
    j->verify_memo = false;
    if (r->status == 404) {
        start_upload(j);
    } else if (r->status == 200 && etag_is_ours(j, r->etag)) {
        weir_debug("s3 %s: s3://%s/%s already holds chunk %s (its ETag): the last attempt "
                   "stored it",
                   j->o->id, j->o->bucket, j->key.data, weir_chunk_id_hex(j->chunk));
        succeeded(j);
    } else if (r->status == 200) {
        weir_info("s3 %s: s3://%s/%s, where chunk %s may have been stored, holds another "
                  "object: looking for a free key",
                  j->o->id, j->o->bucket, j->key.data, weir_chunk_id_hex(j->chunk));
        j->maybe_stored = false;
        j->index = 0;
        j->prev_key.len = 0;
        head_next(j);
    } else {
        fail_request(j, NULL);
    }
}

static void on_done(s3_http_req_t *r)
{
    s3_job_t *j = r->arg;
    /* no answer: the request may have been applied; any answer says whether it was */
    if ((j->phase == PH_PUT || j->phase == PH_MP_COMPLETE) && r->curl_code != CURLE_OK)
        j->maybe_stored = true;
    bool ok2xx = r->curl_code == CURLE_OK && r->status >= 200 && r->status < 300;
    /* CompleteMultipartUpload can answer 200 with an <Error> body */
    bool complete_error = j->phase == PH_MP_COMPLETE && ok2xx && r->resp.len &&
                          memmem(r->resp.data, r->resp.len, "<Error>", 7) != NULL;
    bool head_answer = j->phase == PH_HEAD && (r->status == 200 || r->status == 404);
    if (!head_answer && (!ok2xx || complete_error)) {
        weir_counter_add(j->o->req_errors[error_reason(r, j->phase)], 1);
        if (renew_credentials(j)) return;
    }
    if (!head_answer && (!ok2xx || complete_error) && j->phase != PH_MP_ABORT &&
        (s3_response_transient(r) || complete_error) && j->attempt < S3_INNER_RETRIES) {
        weir_counter_add(j->o->req_retries, 1);
        if (!j->timer) {
            j->timer = weir_calloc(1, sizeof *j->timer);
            uv_timer_init(weir_engine_loop(j->o->eng), j->timer);
            j->timer->data = j;
        }
        uv_timer_start(j->timer, on_retry_timer, (uint64_t)S3_INNER_FIRST_DELAY_MS << j->attempt,
                       0);
        j->attempt++;
        return;
    }
    switch (j->phase) {
    case PH_HEAD:
        if (j->verify_memo)
            memo_checked(j, r);
        else if (r->status == 200)
            head_next(j);
        else if (r->status == 404)
            start_upload(j);
        else
            fail_request(j, NULL);
        return;
    case PH_PUT:
        if (ok2xx)
            succeeded(j);
        else
            fail_request(j, NULL);
        return;
    case PH_MP_INIT:
        if (ok2xx)
            on_mp_init(j);
        else
            fail_request(j, "CreateMultipartUpload");
        return;
    case PH_MP_PART:
        if (ok2xx)
            on_mp_part(j);
        else
            fail_request(j, "UploadPart");
        return;
    case PH_MP_COMPLETE:
        if (ok2xx && !complete_error)
            succeeded(j);
        else
            fail_request(j, "CompleteMultipartUpload");
        return;
    case PH_MP_ABORT:
        if (!ok2xx) {
            weir_buf_t m;
            weir_buf_init(&m);
            describe(j, "AbortMultipartUpload", &m);
            weir_warn("s3 %s: %s; the incomplete upload stays until a lifecycle rule removes it",
                      j->o->id, m.data);
            weir_buf_free(&m);
        }
        finish(j, j->abort_status, j->abort_msg);
        return;
    }
}

static void prep_after(uv_work_t *req, int status)
{
    s3_job_t *j = req->data;
    if (status != 0) {
        finish(j, WEIR_WRITE_RETRY, "the upload job was cancelled");
        return;
    }
    if (j->status != WEIR_WRITE_OK) {
        finish(j, j->status, j->msg);
        return;
    }
    if (j->empty) {
        finish(j, WEIR_WRITE_OK, NULL);
        return;
    }
    j->index = 0;
    long index;
    char *key = s3_memo_take(j->o, weir_chunk_id_hex(j->chunk), &index);
    if (key) {
        /* the last attempt may have stored the object: the same key again, no HEAD loop */
        weir_buf_append(&j->key, key, strlen(key));
        weir_buf_putc(&j->key, '\0');
        j->key.len--;
        j->used_index = index;
        j->maybe_stored = true; /* still, until this attempt says otherwise */
        free(key);
        weir_debug("s3 %s: chunk %s goes to s3://%s/%s again: its last attempt may have "
                   "stored it",
                   j->o->id, weir_chunk_id_hex(j->chunk), j->o->bucket, j->key.data);
        if (!j->o->check_object) {
            start_upload(j);
            return;
        }
        j->verify_memo = true;
        j->phase = PH_HEAD;
        j->attempt = 0;
        send_request(j);
        return;
    }
    if (j->o->check_object) {
        head_next(j);
        return;
    }
    if (build_key(j) != 0) return;
    j->used_index = -1;
    start_upload(j);
}

void s3_upload_chunk(void *out, weir_chunk_t *chunk)
{
    s3_out_t *o = out;
    s3_job_t *j = weir_calloc(1, sizeof *j);
    j->o = o;
    j->chunk = chunk;
    j->work.data = j;
    s3_http_req_init(&j->req);
    uv_queue_work(weir_engine_loop(o->eng), &j->work, prep_work, prep_after);
}
