/* Signed digests of what an S3 output stored (docs/integrity.md is the format).
 *
 *   create   <digest>: the Ed25519 key (read now, so --dry-run reports a bad one), the prefix
 *            and chain, and the checks the spec lists
 *   start    (blocking, before anything is accepted) the state under <buffer path>/digest/:
 *            state.json, or when it is missing or unreadable a LIST of the chain's digests to
 *            tell a lost state from a new chain; digests left in pending/ roll the state
 *            forward; open.jsonl is opened for appends; the period timer is armed
 *   loop     s3_digest_record (upload.c, after S3 accepted an object): the object's line goes
 *            to open.jsonl and is fdatasynced before the chunk is released; at each period's
 *            end the digest is built from open.jsonl, signed, written to pending/, then
 *            state.json, then open.jsonl is emptied
 *   uploader the digests in pending/ go to S3 one at a time, in sequence order, with the
 *            output's in-place retries and then a backoff of their own: data uploads never
 *            wait for them
 *
 * Every file step runs on a worker thread, one step at a time (the "runner": a FIFO of
 * appends and closes), so an object accepted before a period's end is always in that period's
 * digest, and the loop thread never waits for an fsync. Consecutive appends share one
 * write and one fdatasync. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "s3_internal.h"
#include "weir/dirsync.h"
#include "weir/log.h"
#include "weir/net.h"

#define DG_CHAIN_MAX 128
#define DG_PREFIX_MAX 512
#define DG_OPEN_MAX (256ull << 20)    /* open.jsonl read back at a period's end */
#define DG_PENDING_MAX (512ull << 20) /* one pending digest file */
#define DG_STATE_MAX (64 * 1024)      /* state.json */
#define DG_BACKOFF_FIRST_MS 5000      /* a digest upload that failed after its retries */
#define DG_BACKOFF_MAX_MS 300000
#define DG_LIST_PAGES_MAX 100000 /* pages of 1000 keys read at start */
#define DG_SIG_LEN 64
#define DG_START_TIMEOUT_MS 30000 /* the LIST and GET of a start without a state */
#define DG_SIG_B64_LEN 88

typedef enum op_kind { OP_APPEND, OP_CLOSE } op_kind_t;

typedef struct dg_op {
    op_kind_t kind;
    char *line;  /* OP_APPEND: one JSON line with its '\n' */
    int64_t end; /* OP_CLOSE: the period's end */
    void (*cb)(void *arg, int rc, const char *msg);
    void *arg;
    struct dg_op *next;
} dg_op_t;

typedef struct dg_pending {
    uint64_t seq;
    char *path;
} dg_pending_t;

/* The chain's state: read and written only by the runner (one step at a time) and start. */
typedef struct dg_chain {
    uint64_t next_seq;
    int64_t period_start;
    char *last_key; /* NULL before the first digest of the chain */
    char last_sha[S3_SHA256_HEX_LEN + 1];
    char last_sig[DG_SIG_B64_LEN + 1];
    json_t *restarted; /* chain_restarted for the next digest, or NULL */
} dg_chain_t;

struct s3_digest {
    s3_out_t *o;
    EVP_PKEY *key;
    char pub_sha[S3_SHA256_HEX_LEN + 1];
    char *prefix, *chain, *data_prefix, *dir, *pending_dir;
    int64_t period;
    int open_fd;
    int lock_fd; /* flock on digest/.lock: one weir per chain state */
    dg_chain_t st;
    /* the loop's side */
    int64_t cur_start, cur_end; /* the period objects go into now */
    _Atomic bool state_dirty;   /* the chain advanced but state.json could not be written */
    uv_timer_t *period_timer;
    dg_op_t *head, *tail;
    bool running;
    uv_work_t run_work;
    dg_op_t *batch; /* the ops the runner works on */
    int run_rc;
    char run_msg[WEIR_ERR_MAX];
    dg_pending_t made; /* a close's new pending digest */
    /* the uploader */
    dg_pending_t *pend;
    size_t npend, cap_pend;
    bool up_busy;
    const char *up_path; /* pend[0]'s file, for the worker (pend may be reallocated) */
    uv_work_t up_work;
    s3_http_req_t up_req;
    s3_creds_t up_creds;
    weir_buf_t up_body;
    char *up_key;
    char up_sig[DG_SIG_B64_LEN + 1];
    char up_msg[WEIR_ERR_MAX];
    int up_rc;
    int up_attempt;
    uv_timer_t *retry_timer;
    uv_timer_t *backoff_timer;
    int64_t backoff_ms;
    /* stop */
    bool started, stopping, gave_up, closed;
    void (*stop_done)(void *arg);
    void *stop_arg;
    /* metrics */
    weir_counter_t *m_written, *m_uploaded, *m_failed;
    weir_gauge_t *m_pending;
};

/* ---- helpers -------------------------------------------------------------------------------- */

static void rfc3339(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void b64(const unsigned char *p, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, p, (int)n);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes `len` bytes to `path` through a temporary file: fsync, rename, fsync of the
 * directory. 0, or -1 with errno. */
static int write_atomic(const char *path, const char *data, size_t len)
{
    weir_buf_t tmp;
    weir_buf_init(&tmp);
    weir_buf_printf(&tmp, "%s.tmp", path);
    int rc = -1, e = 0;
    int fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (write_all(fd, data, len) == 0 && fsync(fd) == 0) rc = 0;
        e = errno;
        close(fd);
        if (rc == 0 && rename(tmp.data, path) != 0) rc = -1, e = errno;
        if (rc == 0 && weir_dir_sync_parent(path) != 0) rc = -1, e = errno;
        if (rc != 0) unlink(tmp.data);
    } else {
        e = errno;
    }
    weir_buf_free(&tmp);
    errno = e;
    return rc;
}

/* Reads a whole file of at most `max` bytes. 0, -1 with errno (EFBIG past max). */
static int read_file(const char *path, size_t max, weir_buf_t *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat sb;
    int rc = -1;
    if (fstat(fd, &sb) == 0) {
        if ((uint64_t)sb.st_size > max) {
            errno = EFBIG;
        } else {
            weir_buf_reserve(out, (size_t)sb.st_size + 1);
            ssize_t n;
            rc = 0;
            while ((n = read(fd, out->data + out->len, out->cap - out->len)) != 0) {
                if (n < 0 && errno == EINTR) continue;
                if (n < 0) {
                    rc = -1;
                    break;
                }
                out->len += (size_t)n;
                if (out->len > max) {
                    errno = EFBIG;
                    rc = -1;
                    break;
                }
                weir_buf_reserve(out, 4096);
            }
        }
    }
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

static int64_t next_boundary(int64_t t, int64_t period)
{
    return (t / period + 1) * period;
}

/* ---- configuration -------------------------------------------------------------------------- */

/* The outputs of one engine that write digests: no two may write the same chain. */
typedef struct dg_reg {
    const void *eng;
    const s3_digest_t *d;
    struct dg_reg *next;
} dg_reg_t;
static dg_reg_t *registry;

static void reg_remove(const s3_digest_t *d)
{
    for (dg_reg_t **p = &registry; *p; p = &(*p)->next) {
        if ((*p)->d != d) continue;
        dg_reg_t *r = *p;
        *p = r->next;
        free(r);
        return;
    }
}

static int load_key(s3_digest_t *d, weir_conf_param_t *p, const char *path, const char *pass,
                    weir_err_t *err)
{
    weir_err_t why = {{0}};
    d->key = weir_read_private_key(path, pass, &why);
    if (!d->key)
        return weir_conf_errorf(err, p,
                                "digest key: %s (make one with: openssl genpkey -algorithm "
                                "ed25519 -out %s)",
                                why.msg, path);
    if (EVP_PKEY_get_base_id(d->key) != EVP_PKEY_ED25519)
        return weir_conf_errorf(err, p, "%s is a %s key; digests are signed with Ed25519", path,
                                OBJ_nid2sn(EVP_PKEY_get_base_id(d->key)));
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(d->key, &der);
    if (n <= 0) return weir_conf_errorf(err, p, "cannot encode the public key of %s", path);
    s3_sha256_hex(der, (size_t)n, d->pub_sha);
    OPENSSL_free(der);
    return 0;
}

static bool chain_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > DG_CHAIN_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", s[i]))
            return false;
    return true;
}

static void digest_metrics(s3_digest_t *d)
{
    weir_plugin_metrics_t *pm = d->o->pm;
    if (!pm) return;
    weir_metrics_t *m = weir_plugin_metrics_registry(pm);
    const char *const *labels = weir_plugin_metrics_labels(pm);
    d->m_written = weir_metrics_counter(m, d->o, "weir_s3_digests_written_total",
                                        "Digests built, signed and written to pending/.", labels);
    d->m_uploaded = weir_metrics_counter(m, d->o, "weir_s3_digests_uploaded_total",
                                         "Digests S3 accepted.", labels);
    d->m_failed = weir_metrics_counter(
        m, d->o, "weir_s3_digest_upload_failures_total",
        "Digest uploads that failed after their in-place retries (tried again later).", labels);
    d->m_pending = weir_metrics_gauge(m, d->o, "weir_s3_digests_pending",
                                      "Digests written but not yet stored in S3.", labels);
}

int s3_digest_create(s3_out_t *o, weir_conf_section_t *sec, weir_err_t *err)
{
    weir_conf_section_t *ds = weir_conf_child(sec, "digest", 0);
    if (!ds) return 0;
    weir_conf_section_use(ds);
    if (weir_conf_child(sec, "digest", 1))
        return weir_conf_section_errorf(err, weir_conf_child(sec, "digest", 1),
                                        "one <digest> section per output");
    s3_digest_t *d = weir_calloc(1, sizeof *d);
    d->o = o;
    d->open_fd = -1;
    d->lock_fd = -1;
    o->digest = d;
    const char *key = NULL, *pass = NULL, *prefix = NULL, *chain = NULL;
    double period = 3600;
    if (weir_conf_get_str(ds, "private_key_path", &key, err) < 0 ||
        weir_conf_get_str(ds, "private_key_passphrase", &pass, err) < 0 ||
        weir_conf_get_str(ds, "prefix", &prefix, err) < 0 ||
        weir_conf_get_str(ds, "chain", &chain, err) < 0 ||
        weir_conf_get_time(ds, "period", &period, err) < 0)
        return -1;
    if (!key || !*key)
        return weir_conf_section_errorf(err, ds,
                                        "<digest> needs 'private_key_path' (an Ed25519 "
                                        "private key, PEM)");
    if (!prefix || !*prefix)
        return weir_conf_section_errorf(err, ds, "<digest> needs 'prefix' (where digests go)");
    if (strlen(prefix) > DG_PREFIX_MAX)
        return weir_conf_errorf(err, weir_conf_find(ds, "prefix"), "prefix is longer than %d bytes",
                                DG_PREFIX_MAX);
    if (period < 1 || period > 366 * 86400.0)
        return weir_conf_errorf(err, weir_conf_find(ds, "period"),
                                "period must be between 1s and 366d");
    d->period = (int64_t)period;
    if (!chain) chain = weir_engine_hostname(o->eng);
    if (!chain || !chain_name_ok(chain))
        return weir_conf_errorf(err, weir_conf_find(ds, "chain"),
                                "chain '%s' must be 1 to %d of [A-Za-z0-9._-] (it is part of "
                                "the digests' keys)",
                                chain ? chain : "", DG_CHAIN_MAX);
    d->prefix = weir_strdup(prefix);
    d->chain = weir_strdup(chain);
    d->data_prefix = s3_static_prefix(o->path);
    size_t a = strlen(d->prefix), b = strlen(d->data_prefix);
    if (strncmp(d->prefix, d->data_prefix, a < b ? a : b) == 0)
        return weir_conf_errorf(err, weir_conf_find(ds, "prefix"),
                                "prefix '%s' overlaps the data path's static part '%s': digests "
                                "would be loaded as data (give them a prefix of their own)",
                                d->prefix, d->data_prefix);
    /* where the keys really go: s3_object_key_format need not start with %{path} */
    char *kp = o->keyfmt.tmpl ? s3_static_prefix(o->keyfmt.tmpl) : weir_strdup("");
    size_t k = strlen(kp);
    bool clash = k && strncmp(d->prefix, kp, a < k ? a : k) == 0;
    if (clash)
        weir_conf_errorf(err, weir_conf_find(ds, "prefix"),
                         "prefix '%s' overlaps the object keys' static part '%s' "
                         "(s3_object_key_format): digests would be loaded as data",
                         d->prefix, kp);
    free(kp);
    if (clash) return -1;
    const char *bpath = weir_buffer_path(o->buffer);
    if (!bpath)
        return weir_conf_section_errorf(err, ds,
                                        "<digest> needs a <buffer> of @type file: its state "
                                        "lives in the buffer's path");
    weir_buf_t p;
    weir_buf_init(&p);
    weir_buf_printf(&p, "%s/digest", bpath);
    d->dir = p.data;
    weir_buf_init(&p);
    weir_buf_printf(&p, "%s/pending", d->dir);
    d->pending_dir = p.data;
    for (dg_reg_t *r = registry; r; r = r->next)
        if (r->eng == o->eng && strcmp(r->d->o->bucket, o->bucket) == 0 &&
            strcmp(r->d->prefix, d->prefix) == 0 && strcmp(r->d->chain, d->chain) == 0)
            return weir_conf_section_errorf(err, ds,
                                            "outputs %s and %s write the same digest chain "
                                            "(bucket %s, prefix %s, chain %s); give one another "
                                            "chain",
                                            r->d->o->id, o->id, o->bucket, d->prefix, d->chain);
    if (load_key(d, weir_conf_find(ds, "private_key_path"), key, pass, err) != 0) return -1;
    dg_reg_t *r = weir_calloc(1, sizeof *r);
    r->eng = o->eng;
    r->d = d;
    r->next = registry;
    registry = r;
    digest_metrics(d);
    return 0;
}

/* ---- state ---------------------------------------------------------------------------------- */

static int state_write(s3_digest_t *d, weir_err_t *err)
{
    json_t *s = json_object();
    json_object_set_new(s, "chain", json_string(d->chain));
    json_object_set_new(s, "next_sequence", json_integer((json_int_t)d->st.next_seq));
    json_object_set_new(s, "period_start", json_integer(d->st.period_start));
    json_object_set_new(s, "last",
                        d->st.last_key ? json_pack("{s:s,s:s,s:s}", "key", d->st.last_key, "sha256",
                                                   d->st.last_sha, "signature", d->st.last_sig)
                                       : json_null());
    json_object_set_new(s, "chain_restarted",
                        d->st.restarted ? json_incref(d->st.restarted) : json_null());
    char *text = json_dumps(s, JSON_COMPACT);
    json_decref(s);
    weir_buf_t path;
    weir_buf_init(&path);
    weir_buf_printf(&path, "%s/state.json", d->dir);
    int rc = write_atomic(path.data, text, strlen(text));
    if (rc != 0) weir_err_set(err, "cannot write %s: %s", path.data, strerror(errno));
    weir_buf_free(&path);
    free(text);
    return rc;
}

/* 1 read, 0 missing, -1 unreadable (why in `why`). */
static int state_read(s3_digest_t *d, char *why, size_t whysz)
{
    weir_buf_t path, text;
    weir_buf_init(&path);
    weir_buf_init(&text);
    weir_buf_printf(&path, "%s/state.json", d->dir);
    int rc = read_file(path.data, DG_STATE_MAX, &text);
    int ret = -1;
    if (rc != 0 && errno == ENOENT) {
        ret = 0;
        goto out;
    }
    if (rc != 0) {
        snprintf(why, whysz, "%s", strerror(errno));
        goto out;
    }
    json_error_t je;
    json_t *s = json_loadb(text.data ? text.data : "", text.len, 0, &je);
    const char *chain = NULL;
    json_int_t seq = -1, start = -1;
    json_t *last = NULL, *restarted = NULL;
    if (!s ||
        json_unpack_ex(s, &je, 0, "{s:s,s:I,s:I,s:o,s?o}", "chain", &chain, "next_sequence", &seq,
                       "period_start", &start, "last", &last, "chain_restarted", &restarted) != 0) {
        snprintf(why, whysz, "%s", je.text);
        json_decref(s);
        goto out;
    }
    if (strcmp(chain, d->chain) != 0) {
        /* another chain's state (the chain was renamed): this chain has none */
        json_decref(s);
        ret = 0;
        goto out;
    }
    const char *lk = NULL, *ls = NULL, *lg = NULL;
    if (seq < 0 || start < 0 ||
        (json_is_object(last) &&
         (json_unpack(last, "{s:s,s:s,s:s}", "key", &lk, "sha256", &ls, "signature", &lg) != 0 ||
          strlen(ls) != S3_SHA256_HEX_LEN || strlen(lg) != DG_SIG_B64_LEN)) ||
        (!json_is_object(last) && !json_is_null(last)) || (seq > 0) != (lk != NULL)) {
        snprintf(why, whysz, "its members are not a chain's state");
        json_decref(s);
        goto out;
    }
    d->st.next_seq = (uint64_t)seq;
    d->st.period_start = start;
    if (lk) {
        d->st.last_key = weir_strdup(lk);
        snprintf(d->st.last_sha, sizeof d->st.last_sha, "%s", ls);
        snprintf(d->st.last_sig, sizeof d->st.last_sig, "%s", lg);
    }
    if (json_is_object(restarted)) d->st.restarted = json_incref(restarted);
    json_decref(s);
    ret = 1;
out:
    weir_buf_free(&path);
    weir_buf_free(&text);
    return ret;
}

/* ---- building a digest (runner) ------------------------------------------------------------- */

static void digest_key(const s3_digest_t *d, int64_t end, uint64_t seq, weir_buf_t *out)
{
    time_t tt = (time_t)end;
    struct tm tm;
    gmtime_r(&tt, &tm);
    char day[16], stamp[32];
    strftime(day, sizeof day, "%Y/%m/%d", &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    weir_buf_printf(out, "%s%s/%s/%s_%010" PRIu64 ".json", d->prefix, d->chain, day, stamp, seq);
}

static int sign(const s3_digest_t *d, const char *data, size_t len, char out[DG_SIG_B64_LEN + 1])
{
    unsigned char sig[DG_SIG_LEN];
    size_t n = sizeof sig;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, d->key) == 1 &&
             EVP_DigestSign(ctx, sig, &n, (const unsigned char *)data, len) == 1 && n == DG_SIG_LEN;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        ERR_clear_error();
        return -1;
    }
    b64(sig, n, out);
    return 0;
}

/* The objects of open.jsonl accepted at or after `since`; *earliest (if given) gets the
 * first second any line was accepted in (INT64_MAX with none). */
static json_t *read_open(s3_digest_t *d, int64_t since, int64_t *earliest, weir_err_t *err)
{
    if (earliest) *earliest = INT64_MAX;
    weir_buf_t path, text;
    weir_buf_init(&path);
    weir_buf_init(&text);
    weir_buf_printf(&path, "%s/open.jsonl", d->dir);
    json_t *objs = NULL;
    if (read_file(path.data, DG_OPEN_MAX, &text) != 0) {
        weir_err_set(err, "cannot read %s: %s", path.data, strerror(errno));
        goto out;
    }
    objs = json_array();
    size_t off = 0;
    while (off < text.len) {
        char *nl = memchr(text.data + off, '\n', text.len - off);
        if (!nl) break; /* a torn last line: its chunk was not released */
        size_t n = (size_t)(nl - (text.data + off));
        json_t *o = json_loadb(text.data + off, n, 0, NULL);
        off += n + 1;
        json_int_t t = -1;
        if (!o || json_unpack(o, "{s:I}", "t", &t) != 0) {
            weir_warn("s3 %s: %s: a line that is not an object's record is ignored", d->o->id,
                      path.data);
            json_decref(o);
            continue;
        }
        if (earliest && t < *earliest) *earliest = t;
        if (t < since) { /* closed already (a crash before the truncation) */
            json_decref(o);
            continue;
        }
        json_object_del(o, "t");
        json_array_append_new(objs, o);
    }
out:
    weir_buf_free(&path);
    weir_buf_free(&text);
    return objs;
}

/* Builds, signs and writes the digest of [period_start, end) to pending/, then the state,
 * then empties open.jsonl. On the runner's worker. */
static int close_period(s3_digest_t *d, int64_t end, weir_err_t *err)
{
    json_t *objs = read_open(d, d->st.period_start, NULL, err);
    if (!objs) return -1;
    char ps[32], pe[32];
    rfc3339(d->st.period_start, ps);
    rfc3339(end, pe);
    weir_buf_t key;
    weir_buf_init(&key);
    digest_key(d, end, d->st.next_seq, &key);
    json_t *doc = json_object();
    json_object_set_new(doc, "version", json_integer(1));
    json_object_set_new(doc, "algorithm", json_string("Ed25519"));
    json_object_set_new(doc, "public_key_sha256", json_string(d->pub_sha));
    json_object_set_new(doc, "chain", json_string(d->chain));
    json_object_set_new(doc, "sequence", json_integer((json_int_t)d->st.next_seq));
    json_object_set_new(doc, "period_start", json_string(ps));
    json_object_set_new(doc, "period_end", json_string(pe));
    json_object_set_new(doc, "bucket", json_string(d->o->bucket));
    json_object_set_new(doc, "data_prefix", json_string(d->data_prefix));
    json_object_set_new(doc, "previous",
                        d->st.last_key ? json_pack("{s:s,s:s,s:s}", "key", d->st.last_key, "sha256",
                                                   d->st.last_sha, "signature", d->st.last_sig)
                                       : json_null());
    json_object_set_new(doc, "chain_restarted",
                        d->st.restarted ? json_incref(d->st.restarted) : json_null());
    json_object_set_new(doc, "objects", objs);
    char *bytes = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    int rc = -1;
    char sig[DG_SIG_B64_LEN + 1], sha[S3_SHA256_HEX_LEN + 1];
    weir_buf_t file, path;
    weir_buf_init(&file);
    weir_buf_init(&path);
    if (!bytes) {
        weir_err_set(err, "cannot encode the digest");
        goto out;
    }
    size_t len = strlen(bytes);
    if (sign(d, bytes, len, sig) != 0) {
        weir_err_set(err, "cannot sign the digest (OpenSSL)");
        goto out;
    }
    s3_sha256_hex(bytes, len, sha);
    weir_buf_printf(&file, "%s\n%s\n", key.data, sig);
    weir_buf_append(&file, bytes, len);
    weir_buf_printf(&path, "%s/%010" PRIu64 ".pend", d->pending_dir, d->st.next_seq);
    if (write_atomic(path.data, file.data, file.len) != 0) {
        weir_err_set(err, "cannot write %s: %s", path.data, strerror(errno));
        goto out;
    }
    /* the digest is made: the chain advances */
    d->made.seq = d->st.next_seq;
    d->made.path = weir_strdup(path.data);
    d->st.next_seq++;
    d->st.period_start = end;
    free(d->st.last_key);
    d->st.last_key = weir_strdup(key.data);
    memcpy(d->st.last_sha, sha, sizeof sha);
    memcpy(d->st.last_sig, sig, sizeof sig);
    json_decref(d->st.restarted);
    d->st.restarted = NULL;
    if (state_write(d, err) != 0) {
        /* the digest is made and pending: written again before the next step, and pending
         * digests are not removed until it is (they are how a start rolls the state forward) */
        d->state_dirty = true;
        goto out;
    }
    if (ftruncate(d->open_fd, 0) != 0 || fdatasync(d->open_fd) != 0) {
        /* harmless for the chain: the lines are older than the state's period start */
        weir_warn("s3 %s: cannot empty %s/open.jsonl: %s", d->o->id, d->dir, strerror(errno));
    }
    rc = 0;
out:
    free(bytes);
    weir_buf_free(&key);
    weir_buf_free(&file);
    weir_buf_free(&path);
    return rc;
}

/* ---- the runner ----------------------------------------------------------------------------- */

static void run_next(s3_digest_t *d);
static void up_kick(s3_digest_t *d);
static void stop_check(s3_digest_t *d);

static void run_work(uv_work_t *req)
{
    s3_digest_t *d = req->data;
    weir_err_t err = {{0}};
    d->run_rc = 0;
    if (d->state_dirty) {
        if (state_write(d, &err) == 0) {
            d->state_dirty = false;
        } else if (d->batch->kind == OP_CLOSE) {
            d->run_rc = -1;
            snprintf(d->run_msg, sizeof d->run_msg, "%s", err.msg);
            return;
        }
        err.msg[0] = '\0';
    }
    if (d->batch->kind == OP_CLOSE) {
        d->run_rc = close_period(d, d->batch->end, &err);
    } else {
        weir_buf_t all;
        weir_buf_init(&all);
        for (dg_op_t *op = d->batch; op; op = op->next)
            weir_buf_append(&all, op->line, strlen(op->line));
        if (write_all(d->open_fd, all.data, all.len) != 0 || fdatasync(d->open_fd) != 0) {
            weir_err_set(&err, "cannot record the object in %s/open.jsonl: %s", d->dir,
                         strerror(errno));
            d->run_rc = -1;
        }
        weir_buf_free(&all);
    }
    snprintf(d->run_msg, sizeof d->run_msg, "%s", err.msg);
}

static void pend_add(s3_digest_t *d, uint64_t seq, char *path)
{
    if (d->npend == d->cap_pend) {
        d->cap_pend = d->cap_pend ? d->cap_pend * 2 : 8;
        d->pend = weir_realloc(d->pend, d->cap_pend * sizeof *d->pend);
    }
    size_t i = d->npend;
    while (i > 0 && d->pend[i - 1].seq > seq) {
        d->pend[i] = d->pend[i - 1];
        i--;
    }
    d->pend[i] = (dg_pending_t){seq, path};
    d->npend++;
    weir_gauge_set(d->m_pending, (int64_t)d->npend);
}

static void run_after(uv_work_t *req, int status)
{
    s3_digest_t *d = req->data;
    d->running = false;
    dg_op_t *ops = d->batch;
    d->batch = NULL;
    int rc = status != 0 ? -1 : d->run_rc;
    if (status != 0) snprintf(d->run_msg, sizeof d->run_msg, "the digest step was cancelled");
    if (ops->kind == OP_CLOSE) {
        if (d->made.path) {
            weir_counter_add(d->m_written, 1);
            weir_info("s3 %s: digest %010" PRIu64 " of chain %s written", d->o->id, d->made.seq,
                      d->chain);
            pend_add(d, d->made.seq, d->made.path);
            d->made.path = NULL;
        }
        if (rc != 0) {
            /* the period stays open: its objects go into the next digest, which covers it */
            weir_error("s3 %s: cannot close the digest period: %s; its objects go into the "
                       "next digest",
                       d->o->id, d->run_msg);
        }
    } else if (rc != 0) {
        weir_error("s3 %s: %s; the chunks are kept and their objects recorded again", d->o->id,
                   d->run_msg);
    }
    while (ops) {
        dg_op_t *n = ops->next;
        if (ops->cb) ops->cb(ops->arg, rc, d->run_msg);
        free(ops->line);
        free(ops);
        ops = n;
    }
    run_next(d);
    up_kick(d);
    stop_check(d);
}

static void run_next(s3_digest_t *d)
{
    if (d->running || !d->head) return;
    /* a close alone; or every append up to the next close, in one write and one fdatasync */
    dg_op_t *first = d->head, *last = first;
    if (first->kind == OP_APPEND)
        while (last->next && last->next->kind == OP_APPEND)
            last = last->next;
    d->head = last->next;
    if (!d->head) d->tail = NULL;
    last->next = NULL;
    d->batch = first;
    d->running = true;
    d->run_work.data = d;
    uv_queue_work(weir_engine_loop(d->o->eng), &d->run_work, run_work, run_after);
}

static void push(s3_digest_t *d, dg_op_t *op)
{
    if (d->tail)
        d->tail->next = op;
    else
        d->head = op;
    d->tail = op;
    run_next(d);
}

/* Queues the close of the period that has ended by `now`: one close at the last boundary
 * at or before `now`, however many periods passed (a wall clock stepped forward a day is
 * one long period, as a downtime is, not a close per period). */
static void close_due(s3_digest_t *d, int64_t now)
{
    if (now < d->cur_end) return;
    int64_t end = d->cur_end + (now - d->cur_end) / d->period * d->period;
    dg_op_t *op = weir_calloc(1, sizeof *op);
    op->kind = OP_CLOSE;
    op->end = end;
    push(d, op);
    d->cur_start = end;
    d->cur_end = end + d->period;
}

static void on_period(uv_timer_t *t)
{
    s3_digest_t *d = t->data;
    int64_t now = (int64_t)time(NULL);
    close_due(d, now);
    int64_t left = d->cur_end - (int64_t)time(NULL);
    /* a wall-clock second boundary: wake at it, or a little after */
    uv_timer_start(t, on_period, left > 0 ? (uint64_t)left * 1000 : 100, 0);
}

void s3_digest_record(s3_digest_t *d, const s3_digest_obj_t *obj,
                      void (*cb)(void *arg, int rc, const char *msg), void *arg)
{
    close_due(d, obj->accepted);
    /* never before the open period's start (a wall clock stepped back): a line older than the
     * state's period start would be taken for one already digested */
    int64_t t = obj->accepted > d->cur_start ? obj->accepted : d->cur_start;
    char oldest[32], newest[32];
    rfc3339(obj->oldest, oldest);
    rfc3339(obj->newest, newest);
    json_t *line = json_pack("{s:I,s:s,s:I,s:s,s:I,s:s,s:s}", "t", (json_int_t)t, "key", obj->key,
                             "size", (json_int_t)obj->size, "sha256", obj->sha256, "records",
                             (json_int_t)obj->records, "oldest", oldest, "newest", newest);
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    if (!text) {
        cb(arg, -1, "cannot encode the object's digest record (a key that is not UTF-8?)");
        return;
    }
    size_t n = strlen(text);
    char *l = weir_malloc(n + 2);
    memcpy(l, text, n);
    l[n] = '\n';
    l[n + 1] = '\0';
    free(text);
    dg_op_t *op = weir_calloc(1, sizeof *op);
    op->kind = OP_APPEND;
    op->line = l;
    op->cb = cb;
    op->arg = arg;
    push(d, op);
}

/* ---- the uploader --------------------------------------------------------------------------- */

static void up_send(s3_digest_t *d);

static void up_prep_work(uv_work_t *req)
{
    s3_digest_t *d = req->data;
    weir_err_t err = {{0}};
    d->up_rc = -1;
    d->up_body.len = 0;
    const char *path = d->up_path;
    if (read_file(path, DG_PENDING_MAX, &d->up_body) != 0) {
        weir_err_set(&err, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    char *a = d->up_body.len ? memchr(d->up_body.data, '\n', d->up_body.len) : NULL;
    char *b = a ? memchr(a + 1, '\n', d->up_body.len - (size_t)(a + 1 - d->up_body.data)) : NULL;
    if (!a || !b || b - a - 1 != DG_SIG_B64_LEN) {
        weir_err_set(&err, "%s is not a pending digest", path);
        goto out;
    }
    free(d->up_key);
    d->up_key = weir_strndup(d->up_body.data, (size_t)(a - d->up_body.data));
    memcpy(d->up_sig, a + 1, DG_SIG_B64_LEN);
    d->up_sig[DG_SIG_B64_LEN] = '\0';
    size_t skip = (size_t)(b + 1 - d->up_body.data);
    memmove(d->up_body.data, b + 1, d->up_body.len - skip);
    d->up_body.len -= skip;
    s3_creds_free(&d->up_creds);
    if (s3_provider_get(d->o->creds, &d->up_creds, &err) != 0) goto out;
    d->up_rc = 0;
out:
    snprintf(d->up_msg, sizeof d->up_msg, "%s", err.msg);
}

static void on_backoff(uv_timer_t *t)
{
    up_kick(t->data);
}

static void up_failed(s3_digest_t *d, const char *msg)
{
    d->up_busy = false;
    weir_counter_add(d->m_failed, 1);
    if (d->stopping) {
        weir_error("s3 %s: digest %s not stored: %s; it stays in %s for the next start", d->o->id,
                   d->up_key ? d->up_key : d->pend[0].path, msg, d->pending_dir);
        d->gave_up = true;
        stop_check(d);
        return;
    }
    d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : DG_BACKOFF_FIRST_MS;
    if (d->backoff_ms > DG_BACKOFF_MAX_MS) d->backoff_ms = DG_BACKOFF_MAX_MS;
    weir_error("s3 %s: digest %s not stored: %s; trying again in %" PRId64 " s", d->o->id,
               d->up_key ? d->up_key : d->pend[0].path, msg, d->backoff_ms / 1000);
    uv_timer_start(d->backoff_timer, on_backoff, (uint64_t)d->backoff_ms, 0);
}

static void on_up_retry(uv_timer_t *t)
{
    up_send(t->data);
}

static void up_done(s3_http_req_t *r)
{
    s3_digest_t *d = r->arg;
    bool ok = r->curl_code == CURLE_OK && r->status >= 200 && r->status < 300;
    if (ok) {
        d->up_busy = false;
        d->backoff_ms = 0;
        weir_counter_add(d->m_uploaded, 1);
        weir_info("s3 %s: stored digest s3://%s/%s", d->o->id, d->o->bucket, d->up_key);
        if (d->state_dirty)
            weir_warn("s3 %s: %s stays until state.json can be written", d->o->id, d->pend[0].path);
        else if (unlink(d->pend[0].path) != 0)
            weir_warn("s3 %s: cannot remove %s: %s (it would be stored again, the same bytes)",
                      d->o->id, d->pend[0].path, strerror(errno));
        free(d->pend[0].path);
        memmove(d->pend, d->pend + 1, (d->npend - 1) * sizeof *d->pend);
        d->npend--;
        weir_gauge_set(d->m_pending, (int64_t)d->npend);
        up_kick(d);
        stop_check(d);
        return;
    }
    s3_count_request_error(d->o, r);
    if (s3_response_transient(r) && d->up_attempt < S3_INNER_RETRIES) {
        weir_counter_add(d->o->req_retries, 1);
        uv_timer_start(d->retry_timer, on_up_retry,
                       (uint64_t)S3_INNER_FIRST_DELAY_MS << d->up_attempt, 0);
        d->up_attempt++;
        return;
    }
    if (r->curl_code == CURLE_OK && (r->status == 400 || r->status == 403))
        s3_provider_invalidate(d->o->creds);
    weir_buf_t m;
    weir_buf_init(&m);
    weir_buf_printf(&m, "PUT s3://%s/%s: ", d->o->bucket, d->up_key);
    if (r->curl_code != CURLE_OK) {
        weir_buf_printf(&m, "%s", s3_http_error(r));
    } else {
        weir_buf_printf(&m, "HTTP %ld", r->status);
        weir_buf_t sum;
        weir_buf_init(&sum);
        s3_error_summary(r->resp.data, r->resp.len, &sum);
        if (sum.len) weir_buf_printf(&m, " %.*s", (int)sum.len, sum.data);
        weir_buf_free(&sum);
    }
    weir_buf_putc(&m, '\0');
    up_failed(d, m.data);
    weir_buf_free(&m);
}

static void up_send(s3_digest_t *d)
{
    s3_kv_t h[] = {{"Content-Type", "application/json"}, {"x-amz-meta-weir-signature", d->up_sig}};
    s3_reqspec_t spec = {.method = "PUT",
                         .key = d->up_key,
                         .headers = h,
                         .nheaders = 2,
                         .body = d->up_body.data ? d->up_body.data : "",
                         .body_len = d->up_body.len};
    s3_http_req_reset(&d->up_req);
    d->up_req.done = up_done;
    d->up_req.arg = d;
    d->up_req.connect_timeout_ms = 15000;
    d->up_req.timeout_ms = s3_request_timeout_ms(d->up_body.len);
    weir_err_t err = {{0}};
    if (s3_request_build(d->o, &d->up_creds, &spec, &d->up_req, &err) != 0) {
        up_failed(d, err.msg);
        return;
    }
    s3_http_submit(d->o->http, &d->up_req);
}

static void up_prep_after(uv_work_t *req, int status)
{
    s3_digest_t *d = req->data;
    if (status != 0 || d->up_rc != 0) {
        up_failed(d, status != 0 ? "cancelled" : d->up_msg);
        return;
    }
    d->up_attempt = 0;
    up_send(d);
}

static void up_kick(s3_digest_t *d)
{
    if (d->up_busy || !d->npend || d->closed || d->gave_up || !d->o->http) return;
    if (!d->stopping && uv_is_active((uv_handle_t *)d->backoff_timer)) return;
    d->up_busy = true;
    d->up_path = d->pend[0].path;
    d->up_work.data = d;
    uv_queue_work(weir_engine_loop(d->o->eng), &d->up_work, up_prep_work, up_prep_after);
}

/* ---- start ---------------------------------------------------------------------------------- */

static bool sha_piece(const char *p, size_t n, void *arg)
{
    return EVP_DigestUpdate(arg, p, n) == 1;
}

static void sha_restart(void *arg)
{
    EVP_DigestInit_ex(arg, EVP_sha256(), NULL);
}

/* The SHA-256 of the object `key`, its body streamed through the hash (a digest may be larger
 * than the HTTP client keeps in memory). */
static int object_sha(s3_digest_t *d, const s3_creds_t *cr, const char *key,
                      char out[S3_SHA256_HEX_LEN + 1], weir_err_t *err)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    s3_reqspec_t spec = {.method = "GET", .key = key};
    s3_http_req_t r;
    s3_http_req_init(&r);
    r.sink = sha_piece;
    r.sink_restart = sha_restart;
    r.sink_arg = ctx;
    int rc =
        s3_request_blocking(d->o, cr, &spec, &r, DG_START_TIMEOUT_MS, err) == 0 && r.status == 200
            ? 0
            : -1;
    if (rc == 0) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        EVP_DigestFinal_ex(ctx, md, &n);
        for (unsigned i = 0; i < n; i++)
            snprintf(out + 2 * i, 3, "%02x", md[i]);
    } else if (!err->msg[0]) {
        weir_err_set(err, "GET %s: HTTP %ld %s", key, r.status, s3_http_error(&r));
    }
    s3_http_req_reset(&r);
    weir_buf_free(&r.resp);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* The last key under `<prefix><chain>/` and its SHA-256, or NULL (none); -1 when the listing
 * or the read failed. */
static int list_last(s3_digest_t *d, const s3_creds_t *cr, char **last,
                     char sha[S3_SHA256_HEX_LEN + 1], weir_err_t *err)
{
    weir_buf_t pfx, token, lastk;
    weir_buf_init(&pfx);
    weir_buf_init(&token);
    weir_buf_init(&lastk);
    weir_buf_printf(&pfx, "%s%s/", d->prefix, d->chain);
    int rc = -1;
    *last = NULL;
    for (int page = 0; page < DG_LIST_PAGES_MAX; page++) {
        s3_kv_t q[4] = {{"list-type", "2"}, {"prefix", pfx.data}};
        size_t nq = 2;
        if (token.len) q[nq++] = (s3_kv_t){"continuation-token", token.data};
        s3_reqspec_t spec = {.method = "GET", .query = q, .nquery = nq};
        s3_http_req_t r;
        s3_http_req_init(&r);
        int ok = s3_request_blocking(d->o, cr, &spec, &r, DG_START_TIMEOUT_MS, err) == 0 &&
                 r.status == 200;
        if (!ok) {
            if (!err->msg[0])
                weir_err_set(err, "ListObjectsV2 %s: HTTP %ld %s", pfx.data, r.status,
                             s3_http_error(&r));
            s3_http_req_reset(&r);
            weir_buf_free(&r.resp);
            goto out;
        }
        /* the last <Key> of the page: keys come in order */
        const char *p = r.resp.data, *end = r.resp.data + r.resp.len, *k, *lastp = NULL;
        while (p < end && (k = memmem(p, (size_t)(end - p), "<Key>", 5))) {
            lastp = k;
            p = k + 5;
        }
        if (lastp) {
            lastk.len = 0;
            s3_xml_text(lastp, (size_t)(end - lastp), "Key", &lastk);
        }
        weir_buf_t trunc;
        weir_buf_init(&trunc);
        bool more = s3_xml_text(r.resp.data, r.resp.len, "IsTruncated", &trunc) == 1 &&
                    trunc.len == 4 && memcmp(trunc.data, "true", 4) == 0;
        weir_buf_free(&trunc);
        token.len = 0;
        if (more) s3_xml_text(r.resp.data, r.resp.len, "NextContinuationToken", &token);
        weir_buf_putc(&token, '\0');
        token.len--;
        s3_http_req_reset(&r);
        weir_buf_free(&r.resp);
        if (!more || !token.len) break;
    }
    if (lastk.len) {
        weir_buf_putc(&lastk, '\0');
        if (object_sha(d, cr, lastk.data, sha, err) != 0) goto out;
        *last = weir_strdup(lastk.data);
    }
    rc = 0;
out:
    weir_buf_free(&pfx);
    weir_buf_free(&token);
    weir_buf_free(&lastk);
    return rc;
}

/* No usable state.json: a new chain, or a lost state (digests in the bucket). */
/* Where a chain that lost its state starts: now, or earlier if open.jsonl records objects
 * from before (their chunks are released: they must be in the new chain's first digest). */
static int64_t restart_period_start(s3_digest_t *d)
{
    int64_t now = (int64_t)time(NULL), earliest;
    weir_err_t ignored = {{0}};
    json_decref(read_open(d, INT64_MAX, &earliest, &ignored));
    return earliest < now ? earliest : now;
}

static int chain_from_bucket(s3_digest_t *d, const s3_creds_t *cr, bool have_creds,
                             const char *reason, weir_err_t *err)
{
    char *last = NULL, last_sha[S3_SHA256_HEX_LEN + 1] = "";
    weir_err_t why = {{0}};
    if (!have_creds) weir_err_set(&why, "no credentials");
    if (!have_creds || list_last(d, cr, &last, last_sha, &why) != 0) {
        if (d->o->check_bucket || d->o->check_apikey_on_start) {
            weir_err_set(err, "digest chain %s: cannot tell a new chain from a lost state: %s",
                         d->chain, why.msg);
            return -1;
        }
        /* told to start without S3 (check_bucket and check_apikey_on_start false): the next
         * digest says that weir could not look, rather than passing for a new chain */
        d->st.next_seq = 0;
        d->st.period_start = restart_period_start(d);
        weir_buf_t r;
        weir_buf_init(&r);
        weir_buf_printf(&r, "%s; the bucket could not be listed: %s", reason, why.msg);
        d->st.restarted = json_pack("{s:s,s:n}", "reason", r.data, "last_found");
        weir_error("s3 %s: digest chain %s: %s; the next digest is marked chain_restarted",
                   d->o->id, d->chain, r.data);
        weir_buf_free(&r);
        return state_write(d, err);
    }
    d->st.next_seq = 0;
    d->st.period_start = restart_period_start(d);
    if (last) {
        json_t *found = json_pack("{s:s,s:s}", "key", last, "sha256", last_sha);
        d->st.restarted = json_pack("{s:s,s:o}", "reason", reason, "last_found", found);
        weir_error("s3 %s: digest chain %s: %s, and digests are in the bucket (the last: %s); "
                   "the chain starts again at sequence 0, marked chain_restarted",
                   d->o->id, d->chain, reason, last);
        free(last);
    } else {
        weir_info("s3 %s: digest chain %s starts", d->o->id, d->chain);
    }
    return state_write(d, err);
}

/* Digests in pending/ the state does not count yet (a crash between the two writes) roll
 * it forward; the others are queued for upload. */
static int load_pending(s3_digest_t *d, weir_err_t *err)
{
    DIR *dir = opendir(d->pending_dir);
    if (!dir) {
        weir_err_set(err, "cannot open %s: %s", d->pending_dir, strerror(errno));
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(dir))) {
        char *end = NULL;
        unsigned long long seq = strtoull(de->d_name, &end, 10);
        if (!end || end - de->d_name != 10 || strcmp(end, ".pend") != 0) continue;
        weir_buf_t p;
        weir_buf_init(&p);
        weir_buf_printf(&p, "%s/%s", d->pending_dir, de->d_name);
        pend_add(d, seq, p.data);
    }
    closedir(dir);
    bool rolled = false;
    for (size_t i = 0; i < d->npend; i++) {
        if (d->pend[i].seq < d->st.next_seq) continue;
        weir_buf_t text;
        weir_buf_init(&text);
        json_t *doc = NULL;
        const char *pe = NULL;
        char *a = NULL, *b = NULL;
        if (read_file(d->pend[i].path, DG_PENDING_MAX, &text) == 0 && text.len &&
            (a = memchr(text.data, '\n', text.len)) &&
            (b = memchr(a + 1, '\n', text.len - (size_t)(a + 1 - text.data))) &&
            b - a - 1 == DG_SIG_B64_LEN &&
            (doc = json_loadb(b + 1, text.len - (size_t)(b + 1 - text.data), 0, NULL)) &&
            json_unpack(doc, "{s:s}", "period_end", &pe) == 0) {
            struct tm tm = {0};
            strptime(pe, "%Y-%m-%dT%H:%M:%SZ", &tm);
            d->st.next_seq = d->pend[i].seq + 1;
            d->st.period_start = (int64_t)timegm(&tm);
            free(d->st.last_key);
            d->st.last_key = weir_strndup(text.data, (size_t)(a - text.data));
            memcpy(d->st.last_sig, a + 1, DG_SIG_B64_LEN);
            d->st.last_sig[DG_SIG_B64_LEN] = '\0';
            s3_sha256_hex(b + 1, text.len - (size_t)(b + 1 - text.data), d->st.last_sha);
            json_decref(d->st.restarted);
            d->st.restarted = NULL;
            rolled = true;
        } else {
            weir_warn("s3 %s: %s is not a whole pending digest; left alone", d->o->id,
                      d->pend[i].path);
        }
        json_decref(doc);
        weir_buf_free(&text);
    }
    if (rolled) {
        weir_info("s3 %s: digest chain %s: state rolled forward to sequence %" PRIu64
                  " from pending/",
                  d->o->id, d->chain, d->st.next_seq);
        return state_write(d, err);
    }
    return 0;
}

int s3_digest_start(s3_digest_t *d, const s3_creds_t *cr, bool have_creds, weir_err_t *err)
{
    if (weir_dir_make(d->pending_dir, 0700) != 0) {
        weir_err_set(err, "cannot create %s: %s", d->pending_dir, strerror(errno));
        return -1;
    }
    /* the state is this process's alone before it is read (the buffer's own lock is taken
     * later, when the buffer starts: another weir on this path would otherwise roll the
     * state forward and upload pending digests before failing there) */
    d->lock_fd = weir_dir_lock(d->dir, ".lock", "the digest state", err);
    if (d->lock_fd < 0) return -1;
    char why[256] = "";
    int sr = state_read(d, why, sizeof why);
    if (sr <= 0) {
        char reason[300];
        snprintf(reason, sizeof reason, sr == 0 ? "state missing" : "state unreadable: %s", why);
        if (sr < 0) weir_error("s3 %s: %s/state.json is unreadable: %s", d->o->id, d->dir, why);
        if (chain_from_bucket(d, cr, have_creds, reason, err) != 0) return -1;
    }
    if (load_pending(d, err) != 0) return -1;
    weir_buf_t p;
    weir_buf_init(&p);
    weir_buf_printf(&p, "%s/open.jsonl", d->dir);
    d->open_fd = open(p.data, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    int rc = d->open_fd >= 0 && weir_dir_sync(d->dir) == 0 ? 0 : -1;
    if (rc != 0) weir_err_set(err, "cannot open %s: %s", p.data, strerror(errno));
    weir_buf_free(&p);
    if (rc != 0) return -1;
    int64_t now = (int64_t)time(NULL);
    d->cur_start = d->st.period_start;
    d->cur_end = next_boundary(now > d->st.period_start ? now : d->st.period_start, d->period);
    /* never a period shorter than `period` (a new chain starts between two boundaries): a
     * verifier judges a chain stale by its periods */
    if (d->cur_end - d->st.period_start < d->period) d->cur_end += d->period;
    uv_loop_t *loop = weir_engine_loop(d->o->eng);
    d->period_timer = weir_calloc(1, sizeof *d->period_timer);
    d->retry_timer = weir_calloc(1, sizeof *d->retry_timer);
    d->backoff_timer = weir_calloc(1, sizeof *d->backoff_timer);
    uv_timer_t *ts[] = {d->period_timer, d->retry_timer, d->backoff_timer};
    for (int i = 0; i < 3; i++) {
        uv_timer_init(loop, ts[i]);
        ts[i]->data = d;
    }
    s3_http_req_init(&d->up_req);
    d->started = true;
    on_period(d->period_timer);
    /* pending digests go up from the next turn: a start that fails after this one (the
     * buffer's) frees the digest at once, which a queued work request would outlive, while
     * close_handles stops this timer */
    uv_timer_start(d->backoff_timer, on_backoff, 0, 0);
    return 0;
}

/* ---- stop ----------------------------------------------------------------------------------- */

static void free_handle(uv_handle_t *h)
{
    free(h);
}

static void close_handles(s3_digest_t *d)
{
    if (d->closed) return;
    d->closed = true;
    uv_timer_t *ts[] = {d->period_timer, d->retry_timer, d->backoff_timer};
    for (int i = 0; i < 3; i++)
        if (ts[i]) uv_close((uv_handle_t *)ts[i], free_handle);
    d->period_timer = d->retry_timer = d->backoff_timer = NULL;
}

static void stop_check(s3_digest_t *d)
{
    if (!d->stopping || !d->stop_done || d->running || d->head || d->up_busy) return;
    if (d->npend && !d->gave_up && d->o->http) {
        up_kick(d);
        if (d->up_busy) return;
    }
    if (d->npend)
        weir_warn("s3 %s: %zu digests stay in %s, to be stored at the next start", d->o->id,
                  d->npend, d->pending_dir);
    close_handles(d);
    void (*done)(void *) = d->stop_done;
    d->stop_done = NULL;
    done(d->stop_arg);
}

void s3_digest_stop(s3_digest_t *d, void (*done)(void *arg), void *arg)
{
    d->stopping = true;
    d->stop_done = done;
    d->stop_arg = arg;
    if (!d->started) {
        d->stop_done = NULL;
        done(arg);
        return;
    }
    /* the open period stays open (its state is on disk); what is pending goes now if it can */
    uv_timer_stop(d->period_timer);
    uv_timer_stop(d->backoff_timer);
    stop_check(d);
}

void s3_digest_free(s3_digest_t *d)
{
    if (!d) return;
    reg_remove(d);
    if (!d->closed && d->started) close_handles(d); /* start failed later: the loop frees them */
    EVP_PKEY_free(d->key);
    if (d->open_fd >= 0) close(d->open_fd);
    if (d->lock_fd >= 0) close(d->lock_fd);
    for (size_t i = 0; i < d->npend; i++)
        free(d->pend[i].path);
    free(d->pend);
    free(d->made.path);
    s3_http_req_reset(&d->up_req);
    weir_buf_free(&d->up_req.resp);
    weir_buf_free(&d->up_body);
    s3_creds_free(&d->up_creds);
    free(d->up_key);
    free(d->st.last_key);
    json_decref(d->st.restarted);
    free(d->prefix);
    free(d->chain);
    free(d->data_prefix);
    free(d->dir);
    free(d->pending_dir);
    free(d);
}
