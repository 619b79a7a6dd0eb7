/* Private interfaces between the files of the S3 output (the pure parts, sigv4.c, keys.c and
 * creds_parse.c, are public in include/weir/s3.h so unit tests can reach them):
 *   http.c     libcurl: the multi interface driven by the libuv loop, and blocking requests
 *              for start-up checks and credential fetches (never on the loop while running)
 *   creds.c    credential sources and the provider that refreshes them before expiry
 *   request.c  URLs, endpoint styles and signed S3 requests
 *   body.c     an object's bytes: the chunk's text compressed as store_as says, the same
 *              bytes every time
 *   upload.c   one chunk: format + compress on a worker thread, then HEAD loop and PUT or
 *              multipart upload on the loop
 *   digest.c   <digest>: signed digests of the objects stored, per period (docs/integrity.md)
 *   s3.c       configuration, start-up checks, the plugin ops */
#ifndef WEIR_S3_INTERNAL_H
#define WEIR_S3_INTERNAL_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>
#include <zlib.h>
#include <zstd.h>

#include "weir/buffer.h"
#include "weir/format.h"
#include "weir/metrics.h"
#include "weir/s3.h"

/* ---- http.c ------------------------------------------------------------------------------ */

/* TLS and proxy settings shared by every request of one output. */
typedef struct s3_net_opts {
    bool verify_peer;
    char *ca_bundle; /* NULL: libcurl's default (AWS_CA_BUNDLE is applied by s3.c) */
    char *ca_dir;
    char *proxy; /* NULL: libcurl's defaults, i.e. http_proxy/https_proxy/no_proxy */
} s3_net_opts_t;

/* Largest response body kept: S3 and STS answers we read are a few KiB. */
#define S3_HTTP_MAX_RESPONSE (1024 * 1024)
/* Largest value of a captured response header (a base64 Ed25519 signature is 88 bytes). */
#define S3_HTTP_MAX_CAPTURED 256

typedef struct s3_http s3_http_t;
typedef struct s3_http_req s3_http_req_t;

struct s3_http_req {
    /* set by the caller (s3_http_req_init zeroes everything) */
    const char *method;         /* GET, HEAD, PUT, POST, DELETE */
    char *url;                  /* owned */
    struct curl_slist *headers; /* owned */
    const char *body;           /* borrowed; must live until done */
    size_t body_len;
    long connect_timeout_ms;
    long timeout_ms;
    const char *proxy;              /* overrides the output's proxy (sts_http_proxy) */
    bool no_proxy;                  /* link-local credential endpoints are never proxied */
    void (*done)(s3_http_req_t *r); /* s3_http_submit: called on the loop thread */
    void *arg;
    /* Streaming: when set, the body of a 2xx answer goes to sink(piece, arg) as it arrives
     * instead of into resp (which still keeps error bodies); false stops the transfer. */
    bool (*sink)(const char *p, size_t n, void *arg);
    void (*sink_restart)(void *arg); /* s3_request_blocking: before each attempt */
    void *sink_arg;
    const char *capture_header; /* the name of one response header to keep in `captured` */
    char captured[S3_HTTP_MAX_CAPTURED];
    bool captured_too_long; /* the header came but did not fit: `captured` is empty */
    /* results */
    long status;   /* HTTP status; 0 when no response came */
    int curl_code; /* CURLcode */
    char errbuf[CURL_ERROR_SIZE];
    weir_buf_t resp;
    char etag[160];
    /* private */
    CURL *easy;
    size_t body_off;
};

void s3_http_req_init(s3_http_req_t *r);
/* Frees what the request owns and zeroes it again (for the next attempt). */
void s3_http_req_reset(s3_http_req_t *r);
void s3_http_req_header(s3_http_req_t *r, const char *name, const char *value);
/* Blocking. Returns 0 when an HTTP response came (any status), -1 on transport errors. */
int s3_http_perform(s3_http_req_t *r, const s3_net_opts_t *net);
/* "connection refused", "timeout after 15000 ms", ... for logs. */
const char *s3_http_error(const s3_http_req_t *r);

s3_http_t *s3_http_new(uv_loop_t *loop, const s3_net_opts_t *net);
/* Starts the request on the loop; r->done(r) is called once, later, on the loop thread. */
void s3_http_submit(s3_http_t *h, s3_http_req_t *r);
/* Closes the multi handle and its libuv handles (no request may be in flight). */
void s3_http_free(s3_http_t *h);

/* ---- creds.c ------------------------------------------------------------------------------ */

typedef enum s3_cred_kind {
    S3_CRED_CHAIN,  /* nothing configured: the SDK's default chain */
    S3_CRED_STATIC, /* aws_key_id + aws_sec_key */
    S3_CRED_ENV,
    S3_CRED_SHARED, /* aws_profile or <shared_credentials> */
    S3_CRED_ASSUME_ROLE,
    S3_CRED_WEB_IDENTITY,
    S3_CRED_INSTANCE, /* <instance_profile_credentials>: ECS when its env is set, else IMDS */
    S3_CRED_ECS,
    S3_CRED_IMDS,
} s3_cred_kind_t;

typedef struct s3_cred_conf {
    s3_cred_kind_t kind;
    char *access_key, *secret_key; /* static, and the base of assume role when set */
    char *profile, *shared_path;   /* NULL: from the environment / default */
    char *role_arn, *session_name, *policy, *external_id;
    int64_t duration; /* 0: STS default (3600) */
    char *sts_region, *sts_proxy, *sts_endpoint;
    char *token_file; /* web identity */
    char *ip_address; /* instance profile: NULL = the link-local default */
    int64_t port;     /* 0 = default */
    int64_t retries;
    double open_timeout, read_timeout;
    char *region; /* s3_region: STS's default region */
} s3_cred_conf_t;

void s3_cred_conf_free(s3_cred_conf_t *c);

/* Refresh temporary credentials when they expire within this many seconds. */
#define S3_CREDS_REFRESH_BEFORE 600
/* After a failed refresh, wait this long before asking the source again while the current
 * credentials are still valid. */
#define S3_CREDS_RETRY_AFTER 60

typedef struct s3_provider s3_provider_t;

/* Takes ownership of *conf (zeroed on return). */
s3_provider_t *s3_provider_new(s3_cred_conf_t *conf, const s3_net_opts_t *net);
void s3_provider_free(s3_provider_t *p);
/* Blocking (it may fetch over HTTP): valid credentials into *out, refreshed when they are
 * about to expire. Thread-safe. Never call it on the loop thread while the output runs. */
int s3_provider_get(s3_provider_t *p, s3_creds_t *out, weir_err_t *err);
/* The next get() fetches again (S3 said the token expired). */
void s3_provider_invalidate(s3_provider_t *p);
const char *s3_cred_kind_name(s3_cred_kind_t k);

/* ---- request.c ---------------------------------------------------------------------------- */

typedef struct s3_out s3_out_t;
typedef struct s3_key_memo s3_key_memo_t;
typedef struct s3_digest s3_digest_t;

/* An S3 request before signing. */
typedef struct s3_reqspec {
    const char *method;
    const char *key; /* object key (raw); NULL for bucket requests */
    const s3_kv_t *query;
    size_t nquery;
    const s3_kv_t *headers; /* extra headers to send and sign */
    size_t nheaders;
    const char *body;
    size_t body_len;
    const char *payload_hash; /* NULL: computed here */
} s3_reqspec_t;

/* Fills r->url and r->headers (signed with `cr` at the current time) and the body. */
int s3_request_build(const s3_out_t *o, const s3_creds_t *cr, const s3_reqspec_t *spec,
                     s3_http_req_t *r, weir_err_t *err);
/* Signs an arbitrary request (STS): host, x-amz-date, x-amz-content-sha256, token. */
int s3_sign_into(s3_http_req_t *r, const char *method, const char *host, const char *path,
                 const s3_kv_t *query, size_t nquery, const s3_kv_t *headers, size_t nheaders,
                 const char *body, size_t body_len, const char *payload_hash, const char *region,
                 const char *service, const s3_creds_t *cr, weir_err_t *err);
/* "s3://bucket/key" for logs. */
void s3_object_url(const s3_out_t *o, const char *key, weir_buf_t *out);

/* ---- the output (s3.c) -------------------------------------------------------------------- */

#define S3_MAX_PUT_HEADERS 16

/* Why an S3 request failed, for weir_s3_request_errors_total{reason}: a fixed set, so a
 * server's made-up error codes cannot grow the metrics. */
typedef enum s3_err_reason {
    S3_ERR_THROTTLED,   /* 429, 503, SlowDown and the SDK's throttling codes */
    S3_ERR_SERVER,      /* other 5xx, or a 200 CompleteMultipartUpload carrying an <Error> */
    S3_ERR_TIMEOUT,     /* no whole response within the request timeout */
    S3_ERR_CONNECTION,  /* refused, reset, TLS and other transport failures */
    S3_ERR_CREDENTIALS, /* ExpiredToken and the other answers that call the key invalid */
    S3_ERR_UNSTORABLE,  /* this object can never be stored (KeyTooLongError, ...) */
    S3_ERR_REFUSED,     /* any other 4xx */
    S3_ERR_NREASONS
} s3_err_reason_t;

struct s3_out {
    weir_engine_t *eng;
    char *id;
    weir_buffer_t *buffer;
    weir_format_opts_t fopts;
    weir_inject_opts_t iopts;
    bool opts_owned; /* fopts/iopts hold their own copies (weir_format_opts_own) */
    char **strs;     /* copies of strings that headers point to */
    size_t nstrs;
    /* where */
    char *bucket, *region, *path;
    char *scheme;    /* "https" or "http" */
    char *host;      /* endpoint host[:port], without the bucket */
    char *base_path; /* path part of s3_endpoint, "" usually */
    bool path_style;
    /* what */
    s3_store_as_t store_as;
    int zstd_level;
    s3_keyfmt_t keyfmt;
    bool check_object, check_bucket, auto_create_bucket, check_apikey_on_start, overwrite;
    bool compute_checksums;
    s3_kv_t put_headers[S3_MAX_PUT_HEADERS]; /* storage class, acl, grants, SSE, tagging */
    size_t nput_headers;
    s3_kv_t ssec_headers[3]; /* SSE-C, repeated on every part of a multipart upload */
    size_t nssec_headers;
    char **meta_keys, **meta_values; /* s3_metadata; values are templates */
    size_t nmeta;
    double warn_for_delay; /* 0 = off */
    uint64_t multipart_threshold, multipart_chunk_size;
    /* how */
    s3_net_opts_t net;
    s3_cred_conf_t cred_conf; /* until start() hands it to the provider */
    s3_provider_t *creds;
    s3_http_t *http;
    weir_plugin_metrics_t *pm;                   /* NULL without an engine */
    weir_counter_t *req_errors[S3_ERR_NREASONS]; /* by reason; NULL without an engine */
    weir_counter_t *req_retries;                 /* requests sent again within one upload */
    s3_digest_t *digest;                         /* digest.c; NULL without <digest> */
    s3_key_memo_t *memo; /* upload.c: keys of chunks whose last attempt may have stored them */
    size_t nmemo;
    void (*stop_done)(void *arg);
    void *stop_arg;
};

/* Where the objects of the <match> section `sec` (@type s3) go and the credentials to reach
 * them, read exactly as the output reads them, without an engine (weir verify -c). NULL with
 * err set on a bad configuration. Free with s3_target_free. */
s3_out_t *s3_target_from_conf(weir_conf_section_t *sec, weir_err_t *err);
void s3_target_free(s3_out_t *o);
/* Blocking: builds, signs and performs `spec` into r, again after a pause (up to 4 attempts)
 * while the answer is transient (s3_response_transient). Keeps r's sink and captured header
 * across attempts. 0 when an answer came (any status), -1 otherwise; -1 at once when the sink
 * refused the body (a second attempt would be refused the same way). */
int s3_request_blocking(const s3_out_t *o, const s3_creds_t *cr, const s3_reqspec_t *spec,
                        s3_http_req_t *r, long timeout_ms, weir_err_t *err);
/* What S3 answered, for a message: "HTTP 403 AccessDenied: ..." or the transport's error. A
 * response whose body the sink refused (CURLE_WRITE_ERROR) is still an HTTP answer. */
void s3_answer_text(const s3_http_req_t *r, weir_buf_t *out);

/* ---- body.c ------------------------------------------------------------------------------- */

/* Compresses an object's text into `out` as it comes (body.c's head comment): the same text,
 * in any slices, always gives the same bytes. init, write any number of times, finish once,
 * then free (also after a failure). Each returns 0, or -1 when the compressor fails. */
typedef struct s3_body_writer {
    s3_store_as_t kind;
    weir_buf_t *out; /* borrowed: the caller's buffer, appended to */
    z_stream z;
    gz_header gz_header; /* zlib reads it when it writes the header: must not move */
    bool z_open;
    ZSTD_CCtx *zc;
} s3_body_writer_t;

int s3_body_init(s3_body_writer_t *w, s3_store_as_t kind, int zstd_level, weir_buf_t *out);
int s3_body_write(s3_body_writer_t *w, const char *p, size_t n);
int s3_body_finish(s3_body_writer_t *w);
void s3_body_free(s3_body_writer_t *w);

/* ---- upload.c ----------------------------------------------------------------------------- */

/* The buffer's sink: stores one chunk and reports with weir_chunk_write_done. */
void s3_upload_chunk(void *out, weir_chunk_t *chunk);
/* Whole-request timeout for a body of `len` bytes: 60 s plus time at a slow link's pace. */
long s3_request_timeout_ms(size_t len);
/* Should this response be retried right away (5xx, 429, throttling, transport errors)? */
bool s3_response_transient(const s3_http_req_t *r);
/* Keys remembered by chunk id for a chunk whose last attempt may have stored its object, so
 * that the next attempt writes the same key (upload.c's head comment). At most
 * S3_KEY_MEMO_MAX; a new one beyond pushes out the oldest. Loop thread. */
#define S3_KEY_MEMO_MAX 4096
void s3_memo_remember(s3_out_t *o, const char *id, const char *key, long index);
/* The key remembered for `id` (the caller frees it) and its index, forgotten now; or NULL. */
char *s3_memo_take(s3_out_t *o, const char *id, long *index);
/* Frees every key remembered (destroy: no upload runs any more). */
void s3_upload_memo_free(s3_out_t *o);
/* "s3://bucket/key" for failure messages (key: NUL-terminated, len bytes), cut at
 * S3_DESCRIBE_KEY_MAX bytes (with its length) so that S3's answer after it fits in the
 * buffer's message (WEIR_ERR_MAX). */
#define S3_DESCRIBE_KEY_MAX 80
void s3_describe_object(const s3_out_t *o, const char *key, size_t len, weir_buf_t *out);
/* Registers weir_s3_request_errors_total and weir_s3_request_retries_total (s3.c calls it
 * from create, when the engine's plugin metrics handle is there). */
void s3_upload_metrics(s3_out_t *o, weir_plugin_metrics_t *pm);

/* Counts a failed request in weir_s3_request_errors_total by its reason. */
void s3_count_request_error(s3_out_t *o, const s3_http_req_t *r);
#define S3_INNER_RETRIES 3          /* the SDK's legacy retry_limit */
#define S3_INNER_FIRST_DELAY_MS 300 /* then doubled: 0.3, 0.6, 1.2 s */

/* ---- digest.c ----------------------------------------------------------------------------- */

/* One object S3 accepted, for the open period's digest. */
typedef struct s3_digest_obj {
    const char *key;
    uint64_t size;      /* bytes as stored */
    const char *sha256; /* hex, of the bytes as stored */
    uint64_t records;
    int64_t oldest, newest; /* event seconds */
    int64_t accepted;       /* when S3 answered the upload's last request */
} s3_digest_obj_t;

/* Reads <digest> (none: o->digest stays NULL), loads the key. After the buffer is made. */
int s3_digest_create(s3_out_t *o, weir_conf_section_t *sec, weir_err_t *err);
/* Blocking: the chain's state (a LIST when it is lost), pending digests, the period timer.
 * `cr` are valid credentials when have_creds. Before the buffer starts. */
int s3_digest_start(s3_digest_t *d, const s3_creds_t *cr, bool have_creds, weir_err_t *err);
/* Records an object in the open period; cb(arg, 0 or -1, why) once its line is durable.
 * Loop thread. */
void s3_digest_record(s3_digest_t *d, const s3_digest_obj_t *obj,
                      void (*cb)(void *arg, int rc, const char *msg), void *arg);
/* After the buffer stopped: finishes the steps under way, stores the pending digests if S3
 * takes them (once each), leaves the open period open; then done(arg). */
void s3_digest_stop(s3_digest_t *d, void (*done)(void *arg), void *arg);
void s3_digest_free(s3_digest_t *d);

#endif
