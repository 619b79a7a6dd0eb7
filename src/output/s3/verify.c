/* `weir verify`: checks an S3 output's signed digests (docs/integrity.md) against the bucket.
 *
 * One pass over the digest prefix in key order (the keys of one chain are contiguous and in
 * chain order): each digest is fetched (at most VERIFY_MAX_DIGEST bytes), its Ed25519
 * signature checked over the bytes before they are parsed, its link to the digest before it
 * in its chain checked, and the objects it lists written as lines "key\tsize\tsha256\trecords
 * \tdigest-key" into sorted runs on disk (at most VERIFY_RUN_BYTES in memory; VERIFY_MERGE_FAN
 * runs are merged into one as they pile up). Then one pass over the data prefix, which S3
 * lists in key order, merged with the runs: a key only the runs have is missing, a key only
 * the bucket has is unlisted, a key both have is fetched and streamed through SHA-256 and the
 * line count (gzip and zstd through the bounded inflater, a piece at a time). Memory is
 * bounded by the largest digest, a listing page and the run buffer, never by the number of
 * objects.
 *
 * Everything runs on this thread with blocking requests (s3_request_blocking), signed and
 * sent by the S3 output's own code, with the output's own configuration reading for -c. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "s3_internal.h"
#include "weir/inflate.h"
#include "weir/log.h"

/* An unlisted object stored this close before the end of the last digest (at most one period)
 * is taken as not yet digested: S3's LastModified is the request's start (a multipart
 * upload's initiation) on S3's clock, while weir files an object by the answer on its own
 * clock, so an upload that straddles a period's end is in the next, unwritten digest. */
#define VERIFY_SKEW_MARGIN 300
#define VERIFY_MAX_DIGEST (64u << 20)   /* a digest object */
#define VERIFY_MAX_LISTING (16u << 20)  /* one ListObjectsV2 page */
#define VERIFY_MAX_KEY 1024             /* S3's own limit on a key, in bytes */
#define VERIFY_RUN_BYTES (1u << 20)     /* listed-object lines held before a run is written */
#define VERIFY_MERGE_FAN 32             /* runs merged into one when this many pile up */
#define VERIFY_PROGRESS_EVERY 5         /* seconds between progress lines */
#define VERIFY_INFLATE_LIMIT (1u << 20) /* output held per step; drained after each */

enum {
    F_BAD_SIGNATURE,
    F_CHAIN_BREAK,
    F_CHAIN_RESTARTED,
    F_MALFORMED_DIGEST,
    F_MISSING,
    F_ALTERED,
    F_ADDED,
    F_NOT_YET,
    F_STALE,
    F_N
};
static const char *const finding_names[F_N] = {
    "bad-signature",  "chain-break",     "chain-restarted", "malformed-digest", "missing-object",
    "altered-object", "unlisted-object", "unlisted-object", "stale-chain",
};

typedef struct chain {
    char *name;
    bool any;      /* a digest of this chain was read */
    long long seq; /* the last digest's sequence */
    char *key;     /* the last digest's key, SHA-256 and signature */
    char sha[65];
    char *sig;
    time_t start;      /* the first digest's period_start */
    time_t end;        /* the last digest's period_end */
    time_t min_period; /* the shortest period seen (downtime lengthens a period) */
} chain_t;

typedef struct verify {
    /* options */
    const char *conf_path, *id, *pubkey_path;
    char *digest_prefix, *data_prefix;
    bool json, have_from, have_to;
    time_t from, to;
    int max_keys;
    /* S3 */
    s3_out_t *o;
    s3_provider_t *creds;
    weir_conf_section_t *conf;
    EVP_PKEY *pkey;
    char key_sha[65];
    /* state */
    chain_t *chains;
    size_t nchains;
    char *seen_data_prefix; /* the digests' common data_prefix */
    bool data_prefix_mixed;
    char tmpdir[4096];
    weir_buf_t run; /* lines waiting to become a run */
    char **runs;    /* run files */
    size_t nruns, run_seq;
    size_t counts[F_N];
    size_t ndigests, nobjects_checked, nlisted, nbefore;
    time_t last_progress;
    int fatal; /* exit 2 */
} verify_t;

/* ---- output -------------------------------------------------------------------------------- */

static void json_out(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s) printf("%s\n", s);
    free(s);
    json_decref(j);
}

/* One finding: kind, the object or digest key, a human sentence. */
static void finding(verify_t *v, int kind, const char *key, const char *digest, const char *fmt,
                    ...) __attribute__((format(printf, 5, 6)));
static void finding(verify_t *v, int kind, const char *key, const char *digest, const char *fmt,
                    ...)
{
    v->counts[kind]++;
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (v->json) {
        json_t *j = json_object();
        json_object_set_new(j, "finding", json_string(finding_names[kind]));
        if (kind == F_ADDED) json_object_set_new(j, "kind", json_string("added"));
        if (kind == F_NOT_YET) json_object_set_new(j, "kind", json_string("not-yet-digested"));
        if (key) json_object_set_new(j, "key", json_string(key));
        if (digest) json_object_set_new(j, "digest", json_string(digest));
        json_object_set_new(j, "detail", json_string(detail));
        json_out(j);
    } else {
        printf("%s%s s3://%s/%s: %s\n", finding_names[kind],
               kind == F_ADDED     ? " (added)"
               : kind == F_NOT_YET ? " (not-yet-digested)"
                                   : "",
               v->o->bucket, key ? key : "", detail);
    }
    fflush(stdout);
}

static void progress(verify_t *v, const char *phase)
{
    time_t now = time(NULL);
    if (now - v->last_progress < VERIFY_PROGRESS_EVERY) return;
    v->last_progress = now;
    fprintf(stderr, "weir verify: %s: %zu digests read, %zu objects listed, %zu checked\n", phase,
            v->ndigests, v->nlisted, v->nobjects_checked);
}

/* ---- small parsers -------------------------------------------------------------------------- */

/* "2026-12-03T13:00:00Z" exactly (digests); with `loose`, also fractions and "+00:00" (S3's
 * LastModified "2026-12-03T13:00:00.000Z", --from/--to) and epoch seconds. */
static bool parse_time(const char *s, bool loose, time_t *out)
{
    if (!s) return false;
    if (loose && *s && strspn(s, "0123456789") == strlen(s)) {
        *out = (time_t)strtoll(s, NULL, 10);
        return true;
    }
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p) return false;
    if (loose && *p == '.') {
        p++;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (strcmp(p, "Z") != 0 && !(loose && strcmp(p, "+00:00") == 0)) return false;
    *out = timegm(&tm);
    return true;
}

static void fmt_time(time_t t, char out[21])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static bool is_hex64(const char *s)
{
    if (!s || strlen(s) != 64) return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
    return true;
}

static void hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

/* A key that can go into a run line: no control bytes, at most S3's length. */
static bool key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > VERIFY_MAX_KEY) return false;
    for (const unsigned char *p = (const unsigned char *)k; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return false;
    return true;
}

/* ---- requests -------------------------------------------------------------------------------- */

typedef struct sinkbuf {
    weir_buf_t buf;
    size_t limit;
    bool over;
} sinkbuf_t;

static bool sinkbuf_put(const char *p, size_t n, void *arg)
{
    sinkbuf_t *s = arg;
    if (s->buf.len + n > s->limit) {
        s->over = true;
        return false;
    }
    weir_buf_append(&s->buf, p, n);
    return true;
}

static void sinkbuf_restart(void *arg)
{
    sinkbuf_t *s = arg;
    s->buf.len = 0;
    s->over = false;
}

/* One blocking request with fresh credentials. -1 (fatal set) when it could not be sent. */
static int request(verify_t *v, const s3_reqspec_t *spec, s3_http_req_t *r, long timeout_ms)
{
    s3_creds_t cr = {0};
    weir_err_t err = {{0}};
    if (s3_provider_get(v->creds, &cr, &err) != 0) {
        fprintf(stderr, "weir verify: credentials: %s\n", err.msg);
        v->fatal = 1;
        return -1;
    }
    int rc = s3_request_blocking(v->o, &cr, spec, r, timeout_ms, &err);
    s3_creds_free(&cr);
    if (rc != 0 && err.msg[0]) fprintf(stderr, "weir verify: %s\n", err.msg);
    if (rc != 0) v->fatal = 1;
    return rc;
}

/* ---- listing ----------------------------------------------------------------------------- */

typedef struct listed {
    char *key;
    uint64_t size;
    time_t mtime;
} listed_t;

typedef int (*listed_cb)(verify_t *v, const listed_t *obj, void *arg);

static int xml_child(const char *xml, size_t len, const char *tag, weir_buf_t *out)
{
    out->len = 0;
    if (s3_xml_text(xml, len, tag, out) != 1) return -1;
    weir_buf_putc(out, '\0');
    out->len--;
    return 0;
}

/* Lists every key under `prefix` in S3's key order, page by page, calling cb for each. */
static int list_all(verify_t *v, const char *prefix, listed_cb cb, void *arg)
{
    char *token = NULL;
    char maxk[16];
    snprintf(maxk, sizeof maxk, "%d", v->max_keys);
    sinkbuf_t sb = {.limit = VERIFY_MAX_LISTING};
    weir_buf_init(&sb.buf);
    weir_buf_t t;
    weir_buf_init(&t);
    int rc = 0;
    char last_key[VERIFY_MAX_KEY + 1] = "";
    for (;;) {
        s3_kv_t q[4] = {{"list-type", "2"}, {"max-keys", maxk}, {"prefix", prefix}};
        size_t nq = 3;
        if (token) q[nq++] = (s3_kv_t){"continuation-token", token};
        s3_reqspec_t spec = {.method = "GET", .query = q, .nquery = nq};
        s3_http_req_t r;
        s3_http_req_init(&r);
        r.sink = sinkbuf_put;
        r.sink_restart = sinkbuf_restart;
        r.sink_arg = &sb;
        if (request(v, &spec, &r, 120000) != 0 || r.status != 200 || sb.over) {
            weir_buf_t a;
            weir_buf_init(&a);
            s3_answer_text(&r, &a);
            fprintf(stderr, "weir verify: cannot list s3://%s/%s: %s\n", v->o->bucket, prefix,
                    sb.over ? "a listing page is larger than 16 MiB" : a.data);
            weir_buf_free(&a);
            s3_http_req_reset(&r);
            weir_buf_free(&r.resp);
            v->fatal = 1;
            rc = -1;
            break;
        }
        s3_http_req_reset(&r);
        weir_buf_free(&r.resp);
        const char *x = sb.buf.data ? sb.buf.data : "";
        const char *end = x + sb.buf.len;
        if (!memmem(x, sb.buf.len, "<ListBucketResult", 17)) {
            fprintf(stderr, "weir verify: the listing of s3://%s is not a ListBucketResult\n",
                    v->o->bucket);
            v->fatal = 1;
            rc = -1;
            break;
        }
        const char *p = x;
        while (rc == 0) {
            const char *c = memmem(p, (size_t)(end - p), "<Contents>", 10);
            if (!c) break;
            const char *ce = memmem(c, (size_t)(end - c), "</Contents>", 11);
            if (!ce) {
                rc = -1;
                break;
            }
            size_t clen = (size_t)(ce - c);
            listed_t obj = {0};
            weir_buf_t k;
            weir_buf_init(&k);
            bool ok = xml_child(c, clen, "Key", &k) == 0 && k.len <= VERIFY_MAX_KEY &&
                      k.len == strlen(k.data);
            if (ok) obj.key = k.data;
            ok = ok && xml_child(c, clen, "Size", &t) == 0 && t.len &&
                 strspn(t.data, "0123456789") == t.len;
            if (ok) obj.size = strtoull(t.data, NULL, 10);
            ok = ok && xml_child(c, clen, "LastModified", &t) == 0 &&
                 parse_time(t.data, true, &obj.mtime);
            /* S3 lists in key order; anything else breaks the merge, so it is refused */
            if (ok && last_key[0] && strcmp(obj.key, last_key) <= 0) {
                fprintf(stderr, "weir verify: the listing is not in key order at %s\n", obj.key);
                ok = false;
            }
            if (!ok) {
                fprintf(stderr, "weir verify: cannot read an entry of the listing of s3://%s/%s\n",
                        v->o->bucket, prefix);
                weir_buf_free(&k);
                rc = -1;
                break;
            }
            snprintf(last_key, sizeof last_key, "%s", obj.key);
            v->nlisted++;
            rc = cb(v, &obj, arg);
            weir_buf_free(&k);
            p = ce + 11;
        }
        if (rc != 0) {
            v->fatal = v->fatal || rc < 0;
            break;
        }
        bool truncated =
            xml_child(x, sb.buf.len, "IsTruncated", &t) == 0 && strcmp(t.data, "true") == 0;
        free(token);
        token = NULL;
        if (!truncated) break;
        if (xml_child(x, sb.buf.len, "NextContinuationToken", &t) != 0 || !t.len || t.len > 4096) {
            fprintf(stderr, "weir verify: a truncated listing without a continuation token\n");
            v->fatal = 1;
            rc = -1;
            break;
        }
        token = weir_strdup(t.data);
    }
    free(token);
    weir_buf_free(&t);
    weir_buf_free(&sb.buf);
    return rc;
}

/* ---- runs of listed objects on disk ------------------------------------------------------ */

static int cmp_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *new_run_path(verify_t *v)
{
    weir_buf_t p;
    weir_buf_init(&p);
    weir_buf_printf(&p, "%s/run-%06zu", v->tmpdir, v->run_seq++);
    return p.data;
}

typedef struct reader {
    FILE *f;
    char *line;
    size_t cap;
    bool eof;
} reader_t;

static void reader_next(reader_t *r)
{
    ssize_t n = getline(&r->line, &r->cap, r->f);
    if (n <= 0) {
        r->eof = true;
        return;
    }
    if (r->line[n - 1] == '\n') r->line[n - 1] = '\0';
}

/* The k-way merge of `paths`: each line, smallest first, to emit (or to `out` when set). */
typedef struct merger {
    reader_t *rd;
    size_t n;
} merger_t;

static int merger_open(merger_t *m, char **paths, size_t n)
{
    m->rd = weir_calloc(n ? n : 1, sizeof *m->rd);
    m->n = n;
    for (size_t i = 0; i < n; i++) {
        m->rd[i].f = fopen(paths[i], "r");
        if (!m->rd[i].f) return -1;
        reader_next(&m->rd[i]);
    }
    return 0;
}

/* The smallest line of all readers (not consumed), or NULL at the end. */
static reader_t *merger_peek(merger_t *m)
{
    reader_t *best = NULL;
    for (size_t i = 0; i < m->n; i++)
        if (!m->rd[i].eof && (!best || strcmp(m->rd[i].line, best->line) < 0)) best = &m->rd[i];
    return best;
}

static void merger_close(merger_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->rd[i].f) fclose(m->rd[i].f);
        free(m->rd[i].line);
    }
    free(m->rd);
    m->rd = NULL;
    m->n = 0;
}

/* Merges every run into one when VERIFY_MERGE_FAN of them piled up (or `force`). */
static int compact_runs(verify_t *v, bool force)
{
    if (v->nruns < 2 || (!force && v->nruns < VERIFY_MERGE_FAN)) return 0;
    merger_t m;
    char *path = new_run_path(v);
    FILE *out = fopen(path, "w");
    if (!out || merger_open(&m, v->runs, v->nruns) != 0) {
        fprintf(stderr, "weir verify: %s: %s\n", path, strerror(errno));
        if (out) fclose(out);
        free(path);
        return -1;
    }
    reader_t *r;
    while ((r = merger_peek(&m))) {
        fprintf(out, "%s\n", r->line);
        reader_next(r);
    }
    merger_close(&m);
    int rc = fclose(out) == 0 ? 0 : -1;
    for (size_t i = 0; i < v->nruns; i++) {
        unlink(v->runs[i]);
        free(v->runs[i]);
    }
    v->runs[0] = path;
    v->nruns = 1;
    return rc;
}

/* Sorts the lines held in memory into a new run file. */
static int flush_run(verify_t *v)
{
    if (!v->run.len) return 0;
    size_t n = 0;
    for (size_t i = 0; i < v->run.len; i++)
        if (v->run.data[i] == '\n') n++;
    char **lines = weir_calloc(n, sizeof *lines);
    size_t k = 0;
    char *p = v->run.data;
    for (size_t i = 0; i < v->run.len; i++)
        if (v->run.data[i] == '\n') {
            v->run.data[i] = '\0';
            lines[k++] = p;
            p = v->run.data + i + 1;
        }
    qsort(lines, n, sizeof *lines, cmp_lines);
    char *path = new_run_path(v);
    FILE *f = fopen(path, "w");
    int rc = f ? 0 : -1;
    for (size_t i = 0; f && i < n; i++)
        fprintf(f, "%s\n", lines[i]);
    if (f && fclose(f) != 0) rc = -1;
    free(lines);
    v->run.len = 0;
    if (rc != 0) {
        fprintf(stderr, "weir verify: cannot write %s: %s\n", path, strerror(errno));
        free(path);
        return -1;
    }
    v->runs = weir_realloc(v->runs, (v->nruns + 1) * sizeof *v->runs);
    v->runs[v->nruns++] = path;
    return compact_runs(v, false);
}

static int add_listed(verify_t *v, const char *key, uint64_t size, const char *sha,
                      long long records, bool in_range, const char *digest)
{
    weir_buf_printf(&v->run, "%s\t%llu\t%s\t%lld\t%d\t%s\n", key, (unsigned long long)size, sha,
                    records, in_range, digest);
    if (v->run.len >= VERIFY_RUN_BYTES) return flush_run(v);
    return 0;
}

/* ---- digests --------------------------------------------------------------------------- */

static chain_t *chain_get(verify_t *v, const char *name, size_t n)
{
    /* keys of one chain are contiguous: the chain read last is the one to continue */
    if (v->nchains) {
        chain_t *c = &v->chains[v->nchains - 1];
        if (strlen(c->name) == n && memcmp(c->name, name, n) == 0) return c;
    }
    v->chains = weir_realloc(v->chains, (v->nchains + 1) * sizeof *v->chains);
    chain_t *c = &v->chains[v->nchains++];
    memset(c, 0, sizeof *c);
    c->name = weir_strndup(name, n);
    return c;
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static bool sig_decode(const char *b64, unsigned char sig[64])
{
    size_t n = b64 ? strlen(b64) : 0;
    if (n != 88 || b64[86] != '=' || b64[87] != '=') return false;
    unsigned char out[67];
    return EVP_DecodeBlock(out, (const unsigned char *)b64, 88) == 66 &&
           (memcpy(sig, out, 64), true);
}

static bool sig_ok(verify_t *v, const char *b64, const char *data, size_t len)
{
    unsigned char sig[64];
    if (!sig_decode(b64, sig)) return false;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, v->pkey) == 1 &&
              EVP_DigestVerify(ctx, sig, 64, (const unsigned char *)data, len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* The members every digest has; a message naming the first one that is wrong, or NULL. */
static const char *digest_shape(json_t *d)
{
    if (!json_is_object(d)) return "not a JSON object";
    if (json_integer_value(json_object_get(d, "version")) != 1 ||
        !json_is_integer(json_object_get(d, "version")))
        return "version is not 1";
    if (!jstr(d, "algorithm") || strcmp(jstr(d, "algorithm"), "Ed25519") != 0)
        return "algorithm is not \"Ed25519\"";
    if (!is_hex64(jstr(d, "public_key_sha256"))) return "public_key_sha256 is not hex SHA-256";
    if (!jstr(d, "chain") || !json_is_integer(json_object_get(d, "sequence")) ||
        json_integer_value(json_object_get(d, "sequence")) < 0)
        return "chain or sequence is missing";
    time_t t0, t1;
    if (!parse_time(jstr(d, "period_start"), false, &t0) ||
        !parse_time(jstr(d, "period_end"), false, &t1))
        return "period_start or period_end is not RFC 3339 UTC";
    if (t1 <= t0) return "period_end is not after period_start";
    if (!jstr(d, "bucket") || !jstr(d, "data_prefix")) return "bucket or data_prefix is missing";
    json_t *prev = json_object_get(d, "previous");
    if (!prev || (!json_is_null(prev) && (!jstr(prev, "key") || !is_hex64(jstr(prev, "sha256")) ||
                                          !jstr(prev, "signature"))))
        return "previous is neither null nor {key, sha256, signature}";
    json_t *cr = json_object_get(d, "chain_restarted");
    if (!cr || (!json_is_null(cr) && !json_is_object(cr))) return "chain_restarted is malformed";
    if (!json_is_array(json_object_get(d, "objects"))) return "objects is not an array";
    return NULL;
}

/* Checks the link of digest `d` (key `key`, bytes hashed to `sha`, signature `sig`) to the
 * digest read before it in its chain, then makes it the chain's last. */
static void check_link(verify_t *v, chain_t *c, json_t *d, const char *key, const char *sha,
                       const char *sig)
{
    long long seq = json_integer_value(json_object_get(d, "sequence"));
    time_t start = 0, end = 0;
    parse_time(jstr(d, "period_start"), false, &start);
    parse_time(jstr(d, "period_end"), false, &end);
    json_t *prev = json_object_get(d, "previous");
    json_t *cr = json_object_get(d, "chain_restarted");
    if (json_is_object(cr)) {
        json_t *lf = json_object_get(cr, "last_found");
        const char *reason = jstr(cr, "reason");
        finding(v, F_CHAIN_RESTARTED, key, key, "chain %s started again at sequence %lld: %s",
                c->name, seq, reason ? reason : "(no reason given)");
        if (seq != 0 || !json_is_null(prev))
            finding(v, F_CHAIN_BREAK, key, key,
                    "a restarted chain must begin at sequence 0 with previous null");
        /* last_found null: weir could not list the bucket when it restarted, and says so */
        if (!c->any && json_is_object(lf))
            finding(v, F_CHAIN_BREAK, key, key,
                    "the restart names %s as the last digest found, but the bucket holds no "
                    "earlier digest of chain %s (deleted)",
                    jstr(lf, "key") ? jstr(lf, "key") : "(no key)", c->name);
        else if (c->any && json_is_null(lf))
            finding(v, F_CHAIN_RESTARTED, key, key,
                    "the restart found no earlier digest, but the bucket holds chain %s up to %s "
                    "(sequence %lld)",
                    c->name, c->key, c->seq);
        else if (c->any &&
                 (!json_is_object(lf) || !jstr(lf, "key") || strcmp(jstr(lf, "key"), c->key) != 0 ||
                  !jstr(lf, "sha256") || strcmp(jstr(lf, "sha256"), c->sha) != 0))
            finding(v, F_CHAIN_BREAK, key, key,
                    "the restart names as the last digest found %s, but the last digest of the "
                    "chain in the bucket is %s (sha256 %s)",
                    json_is_object(lf) && jstr(lf, "key") ? jstr(lf, "key") : "none", c->key,
                    c->sha);
    } else if (!c->any) {
        if (seq != 0)
            finding(v, F_CHAIN_BREAK, key, key,
                    "the first digest of chain %s in the bucket is sequence %lld: digests 0 to "
                    "%lld are missing",
                    c->name, seq, seq - 1);
        else if (!json_is_null(prev))
            finding(v, F_CHAIN_BREAK, key, key, "sequence 0 must have previous null");
    } else {
        char want[21], got[21];
        if (seq != c->seq + 1)
            finding(v, F_CHAIN_BREAK, key, key,
                    "sequence %lld follows sequence %lld (%s): a digest is missing or inserted",
                    seq, c->seq, c->key);
        if (json_is_null(prev))
            finding(v, F_CHAIN_BREAK, key, key, "previous is null, but %s comes before it", c->key);
        else if (strcmp(jstr(prev, "key"), c->key) != 0 ||
                 strcmp(jstr(prev, "sha256"), c->sha) != 0 ||
                 strcmp(jstr(prev, "signature"), c->sig) != 0)
            finding(v, F_CHAIN_BREAK, key, key,
                    "previous names %s (sha256 %s), but the digest before it in the bucket is "
                    "%s (sha256 %s)",
                    jstr(prev, "key"), jstr(prev, "sha256"), c->key, c->sha);
        if (start != c->end) {
            fmt_time(c->end, want);
            fmt_time(start, got);
            finding(v, F_CHAIN_BREAK, key, key,
                    "period_start %s is not the previous digest's period_end %s", got, want);
        }
    }
    if (!c->any) c->start = start;
    if (!c->any || end - start < c->min_period) c->min_period = end - start;
    c->any = true;
    c->seq = seq;
    free(c->key);
    c->key = weir_strdup(key);
    snprintf(c->sha, sizeof c->sha, "%s", sha);
    free(c->sig);
    c->sig = weir_strdup(sig);
    c->end = end;
}

/* The listed objects of a digest into the runs, marked to be checked when the digest's
 * period [start, end) overlaps --from/--to (the others are known, so not unlisted, but not
 * read). */
static int take_objects(verify_t *v, json_t *d, const char *key)
{
    time_t start = 0, end = 0;
    parse_time(jstr(d, "period_start"), false, &start);
    parse_time(jstr(d, "period_end"), false, &end);
    bool in_range = !(v->have_from && end <= v->from) && !(v->have_to && start > v->to);
    const char *dp = jstr(d, "data_prefix");
    if (!v->seen_data_prefix) {
        v->seen_data_prefix = weir_strdup(dp);
    } else if (strcmp(v->seen_data_prefix, dp) != 0) {
        size_t i = 0;
        while (v->seen_data_prefix[i] && v->seen_data_prefix[i] == dp[i])
            i++;
        v->seen_data_prefix[i] = '\0';
        v->data_prefix_mixed = true;
    }
    json_t *objs = json_object_get(d, "objects"), *ob;
    size_t i;
    json_array_foreach(objs, i, ob)
    {
        const char *k = jstr(ob, "key"), *sha = jstr(ob, "sha256");
        json_t *size = json_object_get(ob, "size"), *rec = json_object_get(ob, "records");
        time_t t;
        if (!k || !key_ok(k) || !is_hex64(sha) || !json_is_integer(size) ||
            json_integer_value(size) < 0 || !json_is_integer(rec) || json_integer_value(rec) < 0 ||
            !parse_time(jstr(ob, "oldest"), false, &t) ||
            !parse_time(jstr(ob, "newest"), false, &t)) {
            finding(v, F_MALFORMED_DIGEST, key, key, "objects[%zu] is malformed", i);
            continue;
        }
        if (add_listed(v, k, (uint64_t)json_integer_value(size), sha, json_integer_value(rec),
                       in_range, key) != 0)
            return -1;
    }
    return 0;
}

static int on_digest(verify_t *v, const listed_t *obj, void *arg)
{
    const char *key = obj->key;
    size_t pl = strlen(v->digest_prefix);
    const char *rest = key + pl;
    if (*rest == '/') rest++; /* --digest-prefix given without its trailing slash */
    const char *slash = strchr(rest, '/');
    chain_t *c = chain_get(v, rest, slash ? (size_t)(slash - rest) : strlen(rest));
    v->ndigests++;
    progress(v, "digests");
    if (obj->size > VERIFY_MAX_DIGEST) {
        finding(v, F_MALFORMED_DIGEST, key, key, "%llu bytes, more than a digest may be (64 MiB)",
                (unsigned long long)obj->size);
        return 0;
    }
    sinkbuf_t sb = {.limit = VERIFY_MAX_DIGEST};
    weir_buf_init(&sb.buf);
    s3_reqspec_t spec = {.method = "GET", .key = key};
    s3_http_req_t r;
    s3_http_req_init(&r);
    r.sink = sinkbuf_put;
    r.sink_restart = sinkbuf_restart;
    r.sink_arg = &sb;
    r.capture_header = "x-amz-meta-weir-signature";
    int rc = 0;
    if (request(v, &spec, &r, s3_request_timeout_ms(obj->size)) != 0 || r.status != 200) {
        weir_buf_t a;
        weir_buf_init(&a);
        s3_answer_text(&r, &a);
        fprintf(stderr, "weir verify: cannot read digest s3://%s/%s: %s\n", v->o->bucket, key,
                sb.over ? "larger than 64 MiB" : a.data);
        weir_buf_free(&a);
        v->fatal = 1;
        rc = -1;
        goto out;
    }
    const char *data = sb.buf.data ? sb.buf.data : "";
    char sha[65];
    s3_sha256_hex(data, sb.buf.len, sha);
    char *sig = weir_strdup(r.captured);
    if (!r.captured[0]) {
        finding(v, F_BAD_SIGNATURE, key, key, "no x-amz-meta-weir-signature");
    } else if (!sig_ok(v, sig, data, sb.buf.len)) {
        finding(v, F_BAD_SIGNATURE, key, key,
                "the signature does not verify with the public key %s", v->pubkey_path);
    } else {
        json_error_t je;
        json_t *d = json_loadb(data, sb.buf.len, JSON_REJECT_DUPLICATES, &je);
        const char *bad = d ? digest_shape(d) : je.text;
        if (!bad && strcmp(jstr(d, "public_key_sha256"), v->key_sha) != 0)
            bad = "public_key_sha256 names another key";
        if (!bad &&
            (strlen(jstr(d, "chain")) != strlen(c->name) || strcmp(jstr(d, "chain"), c->name) != 0))
            bad = "its chain is not the chain its key names";
        if (!bad && strcmp(jstr(d, "bucket"), v->o->bucket) != 0)
            bad = "its bucket is another bucket";
        if (!bad) {
            /* "<end>_<sequence>.json": the key names the sequence too */
            const char *us = strrchr(key, '_');
            char want[32];
            snprintf(want, sizeof want, "_%010lld.json",
                     json_integer_value(json_object_get(d, "sequence")));
            if (!us || strcmp(us, want) != 0) bad = "its key does not end with its sequence";
        }
        if (bad) {
            finding(v, F_MALFORMED_DIGEST, key, key, "%s", bad);
        } else {
            check_link(v, c, d, key, sha, sig);
            if (take_objects(v, d, key) != 0) rc = -1;
        }
        json_decref(d);
    }
    free(sig);
out:
    s3_http_req_reset(&r);
    weir_buf_free(&r.resp);
    weir_buf_free(&sb.buf);
    return rc;
}

/* ---- data objects ----------------------------------------------------------------------- */

typedef struct hasher {
    EVP_MD_CTX *md;
    uint64_t size, lines;
    bool sniffed;      /* the first bytes said how the object is stored */
    weir_inflate_t *z; /* NULL for an uncompressed object */
    weir_buf_t out;
    weir_err_t zerr;
    bool zfailed;
} hasher_t;

/* The newlines, as the writer counts a digest's `records`. */
static void count_lines(hasher_t *h, const char *p, size_t n)
{
    for (const char *e = p + n; p < e && (p = memchr(p, '\n', (size_t)(e - p))); p++)
        h->lines++;
}

/* Runs the inflater over the piece fed until it wants the next (or the end, with last). */
static void inflate_drain(hasher_t *h)
{
    for (;;) {
        int rc = weir_inflate_step(h->z, WEIR_INFLATE_CHUNK, &h->zerr);
        count_lines(h, h->out.data, h->out.len);
        h->out.len = 0;
        if (rc == 0) continue;
        if (rc < 0) h->zfailed = true;
        return;
    }
}

static bool hasher_put(const char *p, size_t n, void *arg)
{
    hasher_t *h = arg;
    EVP_DigestUpdate(h->md, p, n);
    h->size += n;
    if (!h->sniffed && n > 0) {
        /* by the magic bytes, not the key's suffix (s3_object_key_format may have none) */
        const unsigned char *u = (const unsigned char *)p;
        int fmt = n >= 2 && u[0] == 0x1f && u[1] == 0x8b                                   ? 1
                  : n >= 4 && u[0] == 0x28 && u[1] == 0xb5 && u[2] == 0x2f && u[3] == 0xfd ? 2
                                                                                           : 0;
        if (fmt)
            h->z = weir_inflate_new(fmt == 1 ? WEIR_INFLATE_GZIP : WEIR_INFLATE_ZSTD, NULL, 0,
                                    VERIFY_INFLATE_LIMIT, &h->out, &h->zerr);
        h->sniffed = true;
    }
    if (!h->z) {
        count_lines(h, p, n);
    } else if (!h->zfailed) {
        weir_inflate_feed(h->z, p, n, false);
        inflate_drain(h);
    }
    return true;
}

static void hasher_restart(void *arg)
{
    hasher_t *h = arg;
    EVP_DigestInit_ex(h->md, EVP_sha256(), NULL);
    h->size = h->lines = 0;
    h->sniffed = h->zfailed = false;
    h->zerr.msg[0] = '\0';
    if (h->z) weir_inflate_free(h->z);
    h->z = NULL;
    h->out.len = 0;
}

typedef struct entry {
    char *line; /* owned; fields split in place */
    const char *key, *sha, *digest;
    uint64_t size;
    long long records;
    bool in_range; /* its digest's period overlaps --from/--to */
} entry_t;

static bool entry_parse(char *line, entry_t *e)
{
    e->line = line;
    char *f[6];
    char *p = line;
    for (int i = 0; i < 6; i++) {
        f[i] = p;
        p = i < 5 ? strchr(p, '\t') : NULL;
        if (i < 5 && !p) return false;
        if (p) *p++ = '\0';
    }
    e->key = f[0];
    e->size = strtoull(f[1], NULL, 10);
    e->sha = f[2];
    e->records = strtoll(f[3], NULL, 10);
    e->in_range = f[4][0] == '1';
    e->digest = f[5];
    return true;
}

typedef struct dataset {
    merger_t m;
    time_t digested_until; /* unlisted objects from here on are not yet digested */
    time_t margin;         /* ...and from this long before it (VERIFY_SKEW_MARGIN) */
    time_t first_start;    /* before this no digest exists */
    bool any_chain;
} dataset_t;

static void report_missing(verify_t *v, const entry_t *e)
{
    const char *dp = v->data_prefix;
    bool outside = strncmp(e->key, dp, strlen(dp)) != 0;
    finding(v, F_MISSING, e->key, e->digest, "listed in %s (%llu bytes)%s%s%s", e->digest,
            (unsigned long long)e->size, outside ? ", but outside the data prefix '" : "",
            outside ? dp : "", outside ? "' that was listed" : "");
}

/* Every run entry before `key` (NULL: all of them) is missing from the bucket. */
static void drain_missing(verify_t *v, dataset_t *ds, const char *key)
{
    reader_t *r;
    while ((r = merger_peek(&ds->m))) {
        entry_t e;
        char *line = weir_strdup(r->line);
        bool ok = entry_parse(line, &e);
        if (ok && key && strcmp(e.key, key) >= 0) {
            free(line);
            return;
        }
        if (ok && e.in_range) report_missing(v, &e);
        free(line);
        reader_next(r);
    }
}

static int check_object(verify_t *v, const listed_t *obj, entry_t *es, size_t n)
{
    hasher_t h = {.md = EVP_MD_CTX_new()};
    weir_buf_init(&h.out);
    s3_reqspec_t spec = {.method = "GET", .key = obj->key};
    s3_http_req_t r;
    s3_http_req_init(&r);
    r.sink = hasher_put;
    r.sink_restart = hasher_restart;
    r.sink_arg = &h;
    int rc = 0;
    if (request(v, &spec, &r, s3_request_timeout_ms(obj->size)) != 0) {
        rc = -1;
    } else if (r.status == 404) {
        for (size_t i = 0; i < n; i++)
            if (es[i].in_range) report_missing(v, &es[i]); /* deleted since it was listed */
    } else if (r.status != 200) {
        weir_buf_t a;
        weir_buf_init(&a);
        s3_answer_text(&r, &a);
        fprintf(stderr, "weir verify: cannot read s3://%s/%s: %s\n", v->o->bucket, obj->key,
                a.data);
        weir_buf_free(&a);
        v->fatal = 1;
        rc = -1;
    } else {
        if (h.z && !h.zfailed) {
            weir_inflate_feed(h.z, NULL, 0, true);
            inflate_drain(&h);
        }
        unsigned char md[32];
        unsigned int mdlen = 0;
        EVP_DigestFinal_ex(h.md, md, &mdlen);
        char sha[65];
        hex(md, 32, sha);
        long long records = (long long)h.lines;
        v->nobjects_checked++;
        for (size_t i = 0; i < n; i++) {
            entry_t *e = &es[i];
            if (!e->in_range) continue;
            if (h.size != e->size || strcmp(sha, e->sha) != 0 || h.zfailed || records != e->records)
                finding(v, F_ALTERED, obj->key, e->digest,
                        "listed in %s with %llu bytes, sha256 %s, %lld records; the bucket "
                        "holds %llu bytes, sha256 %s, %s%s%lld records",
                        e->digest, (unsigned long long)e->size, e->sha, e->records,
                        (unsigned long long)h.size, sha, h.zfailed ? h.zerr.msg : "",
                        h.zfailed ? ": " : "", h.zfailed ? 0LL : records);
        }
    }
    s3_http_req_reset(&r);
    weir_buf_free(&r.resp);
    weir_inflate_free(h.z);
    weir_buf_free(&h.out);
    EVP_MD_CTX_free(h.md);
    return rc;
}

static int on_data(verify_t *v, const listed_t *obj, void *arg)
{
    dataset_t *ds = arg;
    progress(v, "objects");
    size_t dpl = strlen(v->digest_prefix);
    if (strncmp(obj->key, v->digest_prefix, dpl) == 0) return 0; /* a digest, not data */
    drain_missing(v, ds, obj->key);
    entry_t *es = NULL;
    size_t n = 0;
    reader_t *r;
    while ((r = merger_peek(&ds->m))) {
        entry_t e;
        char *line = weir_strdup(r->line);
        if (!entry_parse(line, &e) || strcmp(e.key, obj->key) != 0) {
            free(line);
            break;
        }
        es = weir_realloc(es, (n + 1) * sizeof *es);
        es[n++] = e;
        reader_next(r);
    }
    int rc = 0;
    bool any_in_range = false;
    for (size_t i = 0; i < n; i++)
        any_in_range = any_in_range || es[i].in_range;
    if (any_in_range) {
        rc = check_object(v, obj, es, n);
    } else if (n) {
        /* listed by digests outside --from/--to only: known, not read */
    } else if ((v->have_from && obj->mtime < v->from) || (v->have_to && obj->mtime > v->to)) {
        /* outside the range asked for */
    } else {
        char t[21];
        fmt_time(obj->mtime, t);
        if (!ds->any_chain || obj->mtime >= ds->digested_until - ds->margin)
            finding(v, F_NOT_YET, obj->key, NULL, "stored %s, after the last digest's period", t);
        else if (obj->mtime < ds->first_start)
            v->nbefore++; /* before any digest: from before digests were written */
        else
            finding(v, F_ADDED, obj->key, NULL,
                    "stored %s, in a period already digested, but no digest lists it", t);
    }
    for (size_t i = 0; i < n; i++)
        free(es[i].line);
    free(es);
    return rc;
}

/* ---- set-up ----------------------------------------------------------------------------- */

static int load_pubkey(verify_t *v)
{
    FILE *f = fopen(v->pubkey_path, "r");
    if (!f) {
        fprintf(stderr, "weir verify: %s: %s\n", v->pubkey_path, strerror(errno));
        return -1;
    }
    v->pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    if (!v->pkey || EVP_PKEY_id(v->pkey) != EVP_PKEY_ED25519) {
        fprintf(stderr, "weir verify: %s is not an Ed25519 public key (PEM)\n", v->pubkey_path);
        return -1;
    }
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(v->pkey, &der);
    if (n <= 0) return -1;
    char h[65];
    s3_sha256_hex(der, (size_t)n, h);
    snprintf(v->key_sha, sizeof v->key_sha, "%s", h);
    OPENSSL_free(der);
    return 0;
}

/* The s3 sections of a configuration (<match> or <store> with @type s3), depth first. */
static void find_s3(weir_conf_section_t *s, weir_conf_section_t ***out, size_t *n)
{
    weir_conf_param_t *t = weir_conf_find(s, "@type");
    if (t && strcmp(t->value, "s3") == 0 &&
        (strcmp(s->name, "match") == 0 || strcmp(s->name, "store") == 0)) {
        *out = weir_realloc(*out, (*n + 1) * sizeof **out);
        (*out)[(*n)++] = s;
    }
    for (size_t i = 0; i < s->nchildren; i++)
        find_s3(s->children[i], out, n);
}

static const char *section_id(weir_conf_section_t *s)
{
    weir_conf_param_t *p = weir_conf_find(s, "@id");
    return p ? p->value : NULL;
}

static int target_from_conf(verify_t *v)
{
    weir_err_t err = {{0}};
    v->conf = weir_conf_parse_file(v->conf_path, &err);
    if (!v->conf) {
        fprintf(stderr, "weir verify: %s\n", err.msg);
        return -1;
    }
    weir_conf_section_t **all = NULL;
    size_t n = 0;
    find_s3(v->conf, &all, &n);
    weir_conf_section_t *sec = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *id = section_id(all[i]);
        if (v->id ? id && strcmp(id, v->id) == 0 : true) {
            if (sec && !v->id) {
                fprintf(stderr, "weir verify: %s has several S3 outputs: pick one with --id\n",
                        v->conf_path);
                free(all);
                return -1;
            }
            sec = all[i];
        }
    }
    free(all);
    if (!sec) {
        fprintf(stderr, "weir verify: %s has no S3 output%s%s\n", v->conf_path,
                v->id ? " with @id " : "", v->id ? v->id : "");
        return -1;
    }
    v->o = s3_target_from_conf(sec, &err);
    if (!v->o) {
        fprintf(stderr, "weir verify: %s\n", err.msg);
        return -1;
    }
    weir_conf_section_t *dsec = weir_conf_child(sec, "digest", 0);
    /* only the prefix: the section's private key is not needed (nor wanted) to verify */
    const char *prefix = NULL;
    if (dsec && weir_conf_get_str(dsec, "prefix", &prefix, &err) < 0) {
        fprintf(stderr, "weir verify: %s\n", err.msg);
        return -1;
    }
    if (!v->digest_prefix) {
        if (!prefix || !*prefix) {
            fprintf(stderr, "weir verify: the S3 output has no <digest> prefix\n");
            return -1;
        }
        v->digest_prefix = weir_strdup(prefix);
    }
    if (!v->data_prefix) v->data_prefix = s3_static_prefix(v->o->path);
    return 0;
}

/* Without -c: an S3 output section made of the options, read by the same code as -c. */
static int target_from_options(verify_t *v, const char *bucket, const char *endpoint,
                               const char *region, bool path_style)
{
    const char *vals[] = {bucket, endpoint, region};
    for (size_t i = 0; i < 3; i++)
        for (const char *p = vals[i]; p && *p; p++)
            if ((unsigned char)*p <= ' ' || strchr("\"'#<>\\", *p)) {
                fprintf(stderr, "weir verify: '%s' is not a bucket, endpoint or region\n", vals[i]);
                return -1;
            }
    weir_buf_t c;
    weir_buf_init(&c);
    weir_buf_printf(&c, "<match verify>\n  @type s3\n  s3_bucket %s\n", bucket);
    if (endpoint) weir_buf_printf(&c, "  s3_endpoint %s\n", endpoint);
    if (region) weir_buf_printf(&c, "  s3_region %s\n", region);
    if (path_style) weir_buf_printf(&c, "  force_path_style true\n");
    weir_buf_printf(&c, "</match>\n");
    weir_err_t err = {{0}};
    v->conf = weir_conf_parse_string(c.data, c.len, "<weir verify options>", &err);
    weir_buf_free(&c);
    if (v->conf) v->o = s3_target_from_conf(weir_conf_child(v->conf, "match", 0), &err);
    if (!v->o) {
        fprintf(stderr, "weir verify: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: weir verify -c fluent.conf [--id OUTPUT_ID] --public-key digest.pub\n"
            "                   [--from TIME] [--to TIME] [--json]\n"
            "       weir verify --bucket B --digest-prefix P [--data-prefix D] [--endpoint URL]\n"
            "                   [--region R] [--force-path-style] --public-key digest.pub\n"
            "                   [--from TIME] [--to TIME] [--json]\n"
            "Checks an S3 output's signed digests against the bucket (docs/integrity.md).\n"
            "TIME: RFC 3339 (2026-12-03T13:00:00Z) or epoch seconds. --max-keys N (1-1000)\n"
            "sets the listing page size. Without -c, credentials come from AWS_ACCESS_KEY_ID,\n"
            "AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (else the usual AWS chain).\n"
            "Exit status: 0 verified, 1 findings, 2 could not run.\n");
}

static void summary(verify_t *v, int rc)
{
    size_t errors = 0;
    for (int k = 0; k < F_N; k++)
        if (k != F_NOT_YET) errors += v->counts[k];
    if (v->json) {
        json_t *j = json_object(), *c = json_object();
        json_object_set_new(j, "summary", json_true());
        json_object_set_new(j, "ok", json_boolean(rc == 0));
        json_object_set_new(j, "exit", json_integer(rc));
        json_object_set_new(j, "bucket", json_string(v->o ? v->o->bucket : ""));
        json_object_set_new(j, "chains", json_integer((json_int_t)v->nchains));
        json_object_set_new(j, "digests", json_integer((json_int_t)v->ndigests));
        json_object_set_new(j, "objects_checked", json_integer((json_int_t)v->nobjects_checked));
        json_object_set_new(j, "before_first_digest", json_integer((json_int_t)v->nbefore));
        for (int k = 0; k < F_N; k++) {
            const char *name = k == F_ADDED     ? "unlisted-object-added"
                               : k == F_NOT_YET ? "unlisted-object-not-yet-digested"
                                                : finding_names[k];
            json_object_set_new(c, name, json_integer((json_int_t)v->counts[k]));
        }
        json_object_set_new(j, "findings", c);
        json_out(j);
        return;
    }
    printf("%s: %zu digests in %zu chains, %zu objects checked, %zu findings%s",
           rc == 0   ? "verified"
           : rc == 1 ? "NOT verified"
                     : "could not verify",
           v->ndigests, v->nchains, v->nobjects_checked, errors, v->counts[F_NOT_YET] ? " (" : "");
    if (v->counts[F_NOT_YET]) printf("%zu objects not yet digested)", v->counts[F_NOT_YET]);
    if (v->nbefore) printf(", %zu objects from before the first digest", v->nbefore);
    printf("\n");
}

static int run(verify_t *v)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    v->creds = s3_provider_new(&v->o->cred_conf, &v->o->net);
    snprintf(v->tmpdir, sizeof v->tmpdir, "%s/weir-verify-XXXXXX",
             getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(v->tmpdir)) {
        fprintf(stderr, "weir verify: cannot create %s: %s\n", v->tmpdir, strerror(errno));
        v->tmpdir[0] = '\0';
        return 2;
    }
    weir_buf_init(&v->run);
    v->last_progress = time(NULL);
    if (list_all(v, v->digest_prefix, on_digest, NULL) != 0 || v->fatal) return 2;
    if (flush_run(v) != 0 || compact_runs(v, true) != 0) return 2;

    dataset_t ds = {0};
    time_t now = time(NULL);
    bool any_fresh = false;
    time_t fresh_min = 0, all_max = 0;
    for (size_t i = 0; i < v->nchains; i++) {
        chain_t *c = &v->chains[i];
        if (!c->any) continue;
        if (!ds.any_chain || c->start < ds.first_start) ds.first_start = c->start;
        if (!ds.any_chain || c->end > all_max) all_max = c->end;
        ds.any_chain = true;
        time_t period = c->min_period > 0 ? c->min_period : 1;
        time_t margin = period < VERIFY_SKEW_MARGIN ? period : VERIFY_SKEW_MARGIN;
        if (margin > ds.margin) ds.margin = margin;
        /* with --to, a chain must reach that far (a digest deleted at the end is as missing
         * when the range is given as when it is not) */
        time_t until = v->have_to && v->to < now ? v->to : now;
        bool stale = until - c->end > 2 * period;
        if (stale) {
            char t[21];
            fmt_time(c->end, t);
            finding(v, F_STALE, c->key, c->key,
                    "chain %s's last digest ends %s, more than two periods (%llds) ago", c->name, t,
                    (long long)period);
        }
        if (!stale && (!any_fresh || c->end < fresh_min)) fresh_min = c->end;
        any_fresh = any_fresh || !stale;
    }
    /* with several chains (pods), an object is digested once every live chain passed it */
    ds.digested_until = any_fresh ? fresh_min : all_max;
    if (!v->ndigests)
        finding(v, F_STALE, v->digest_prefix, NULL, "no digest under s3://%s/%s", v->o->bucket,
                v->digest_prefix);
    if (!v->data_prefix)
        v->data_prefix = weir_strdup(v->seen_data_prefix ? v->seen_data_prefix : "");
    if (v->data_prefix_mixed)
        fprintf(stderr, "weir verify: the digests name several data prefixes; listing '%s'\n",
                v->data_prefix);
    if (merger_open(&ds.m, v->runs, v->nruns) != 0) {
        fprintf(stderr, "weir verify: cannot read the runs in %s\n", v->tmpdir);
        merger_close(&ds.m);
        return 2;
    }
    int rc = list_all(v, v->data_prefix, on_data, &ds);
    if (rc == 0) drain_missing(v, &ds, NULL);
    merger_close(&ds.m);
    if (rc != 0 || v->fatal) return 2;
    for (int k = 0; k < F_N; k++)
        if (k != F_NOT_YET && v->counts[k]) return 1;
    return 0;
}

static void cleanup(verify_t *v)
{
    for (size_t i = 0; i < v->nruns; i++) {
        unlink(v->runs[i]);
        free(v->runs[i]);
    }
    free(v->runs);
    if (v->tmpdir[0]) rmdir(v->tmpdir);
    weir_buf_free(&v->run);
    for (size_t i = 0; i < v->nchains; i++) {
        free(v->chains[i].name);
        free(v->chains[i].key);
        free(v->chains[i].sig);
    }
    free(v->chains);
    if (v->creds) {
        s3_provider_free(v->creds);
        curl_global_cleanup();
    }
    if (v->o) s3_target_free(v->o);
    if (v->conf) weir_conf_free(v->conf);
    EVP_PKEY_free(v->pkey);
    free(v->digest_prefix);
    free(v->data_prefix);
    free(v->seen_data_prefix);
}

int weir_verify_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"id", required_argument, NULL, 'i'},
        {"public-key", required_argument, NULL, 'k'},
        {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"bucket", required_argument, NULL, 'b'},
        {"digest-prefix", required_argument, NULL, 'd'},
        {"data-prefix", required_argument, NULL, 'D'},
        {"endpoint", required_argument, NULL, 'e'},
        {"region", required_argument, NULL, 'r'},
        {"force-path-style", no_argument, NULL, 'p'},
        {"max-keys", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    verify_t v = {.max_keys = 1000};
    const char *bucket = NULL, *endpoint = NULL, *region = NULL;
    bool path_style = false;
    int c, rc = 2;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            v.conf_path = optarg;
            break;
        case 'i':
            v.id = optarg;
            break;
        case 'k':
            v.pubkey_path = optarg;
            break;
        case 'f':
        case 't':
            if (!parse_time(optarg, true, c == 'f' ? &v.from : &v.to)) {
                fprintf(stderr, "weir verify: --%s %s: not RFC 3339 UTC nor epoch seconds\n",
                        c == 'f' ? "from" : "to", optarg);
                goto out;
            }
            *(c == 'f' ? &v.have_from : &v.have_to) = true;
            break;
        case 'j':
            v.json = true;
            break;
        case 'b':
            bucket = optarg;
            break;
        case 'd':
            free(v.digest_prefix);
            v.digest_prefix = weir_strdup(optarg);
            break;
        case 'D':
            free(v.data_prefix);
            v.data_prefix = weir_strdup(optarg);
            break;
        case 'e':
            endpoint = optarg;
            break;
        case 'r':
            region = optarg;
            break;
        case 'p':
            path_style = true;
            break;
        case 'm':
            v.max_keys = atoi(optarg);
            if (v.max_keys < 1 || v.max_keys > 1000) {
                fprintf(stderr, "weir verify: --max-keys must be 1 to 1000\n");
                goto out;
            }
            break;
        case 'h':
            usage(stdout);
            rc = 0;
            goto out;
        default:
            usage(stderr);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "weir verify: unexpected argument '%s'\n", argv[optind]);
        goto out;
    }
    if (!v.pubkey_path) {
        fprintf(stderr, "weir verify: --public-key is required\n");
        goto out;
    }
    if (v.conf_path && (bucket || endpoint || region || path_style)) {
        fprintf(stderr, "weir verify: -c takes the bucket and endpoint from the configuration; "
                        "--bucket, --endpoint, --region and --force-path-style go without it\n");
        goto out;
    }
    if (!v.conf_path && (!bucket || !v.digest_prefix)) {
        fprintf(stderr, "weir verify: give -c fluent.conf, or --bucket and --digest-prefix\n");
        usage(stderr);
        goto out;
    }
    if (v.have_from && v.have_to && v.from > v.to) {
        fprintf(stderr, "weir verify: --from is after --to\n");
        goto out;
    }
    weir_log_set_level(WEIR_LOG_WARN);
    if (load_pubkey(&v) != 0) goto out;
    if (v.conf_path ? target_from_conf(&v) != 0
                    : target_from_options(&v, bucket, endpoint, region, path_style) != 0)
        goto out;
    if (!*v.digest_prefix) {
        fprintf(stderr, "weir verify: the digest prefix is empty\n");
        goto out;
    }
    rc = run(&v);
    summary(&v, rc);
out:
    cleanup(&v);
    return rc;
}
