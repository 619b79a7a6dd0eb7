/* The S3 output's pure parts, each testable without a network: AWS Signature Version 4, the
 * object key builder of fluent-plugin-s3 (%{path}, %{time_slice}, %{index}, ...), the
 * store_as table, endpoint rules, and the parsers for credentials (shared credentials files,
 * IMDS/ECS JSON, STS XML) and S3 error bodies.
 *
 * The plugin itself (`<match> @type s3`, weir_out_s3_ops) lives in src/output/s3/ and uses these;
 * see docs on s3-output for the behaviour it copies. Nothing here logs a secret: the signer
 * takes the secret key but only ever prints signatures. */
#ifndef WEIR_S3_H
#define WEIR_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "weir/buffer.h"
#include "weir/common.h"
#include "weir/plugin.h"

extern const weir_output_ops_t weir_out_s3_ops;

/* ---- hashing and encoding -------------------------------------------------------------- */

#define S3_SHA256_HEX_LEN 64
#define S3_MD5_B64_LEN 24

void s3_sha256_hex(const void *p, size_t n, char out[S3_SHA256_HEX_LEN + 1]);
void s3_md5_base64(const void *p, size_t n, char out[S3_MD5_B64_LEN + 1]);
/* Percent-encodes everything except A-Z a-z 0-9 - . _ ~ (and '/' when keep_slash), with
 * upper-case hex, as SigV4 and S3 object paths want. */
void s3_uri_encode(const char *s, size_t n, bool keep_slash, weir_buf_t *out);
/* "20130524T000000Z" for t (UTC). */
void s3_amz_date(time_t t, char out[17]);

/* ---- SigV4 ----------------------------------------------------------------------------- */

typedef struct s3_kv {
    const char *name;
    const char *value;
} s3_kv_t;

/* One request to sign. Every header in `headers` is signed (names in any case; host,
 * x-amz-date and x-amz-content-sha256 must be among them, and x-amz-security-token when the
 * credentials have a session token). */
typedef struct s3_sign_req {
    const char *method;
    const char *path;     /* already URI-encoded, e.g. "/test%24file.text"; "/" for the root */
    const s3_kv_t *query; /* raw names and values; encoded and sorted by the signer */
    size_t nquery;
    const s3_kv_t *headers;
    size_t nheaders;
    const char *payload_hash; /* hex SHA-256 of the body (signed payload) */
    const char *amz_date;     /* same value as the x-amz-date header */
    const char *region;
    const char *service; /* "s3", "sts" */
    const char *access_key;
    const char *secret_key;
} s3_sign_req_t;

/* Most headers a request may sign (S3 needs ~16 with SSE-C, grants and metadata). */
#define S3_SIGN_MAX_HEADERS 64

/* The canonical request, the string to sign and the Authorization header value. Each appends
 * to `out`. Return -1 only when there are more than S3_SIGN_MAX_HEADERS headers. */
int s3_sigv4_canonical_request(const s3_sign_req_t *r, weir_buf_t *out);
int s3_sigv4_string_to_sign(const s3_sign_req_t *r, weir_buf_t *out);
int s3_sigv4_authorization(const s3_sign_req_t *r, weir_buf_t *out);
/* The canonical query string alone ("max-keys=2&prefix=J"), also used to build URLs. */
void s3_canonical_query(const s3_kv_t *query, size_t n, weir_buf_t *out);

/* ---- store_as --------------------------------------------------------------------------- */

typedef enum s3_store_as {
    S3_STORE_GZIP,
    S3_STORE_ZSTD,
    S3_STORE_JSON,
    S3_STORE_TEXT,
} s3_store_as_t;

/* gzip, zstd, json, text: 0 and *out set. Fluentd's other compressors (lzo, lzma2,
 * gzip_command, parquet) fail with a message saying they are not supported. Any other name
 * falls back to text with a warning, as Fluentd does: returns 1. */
int s3_store_as_parse(const char *name, s3_store_as_t *out, weir_err_t *err);
const char *s3_store_extension(s3_store_as_t s); /* gz, zst, json, txt */
const char *s3_store_content_type(s3_store_as_t s);

/* ---- endpoints -------------------------------------------------------------------------- */

/* fluent-plugin-s3's rule: an endpoint ending in amazonaws.com is refused (use s3_region)
 * unless it ends in vpce.amazonaws.com or contains fips or gov. */
bool s3_endpoint_rejected(const char *endpoint);
/* A bucket name usable as a host name label (virtual-hosted style). Names with dots are
 * compatible only over plain HTTP, because the TLS certificate would not match. */
bool s3_bucket_dns_compatible(const char *bucket, bool https);

/* ---- object keys (fluent-plugin-s3 s3_object_key_format) -------------------------------- */

#define S3_HEX_RANDOM_MAX 16
#define S3_DEFAULT_KEY_FORMAT "%{path}%{time_slice}_%{index}.%{file_extension}"
#define S3_NOCHECK_KEY_FORMAT "%{path}/%{time_slice}_%{hms_slice}.%{file_extension}"
/* Longest key S3 accepts, in bytes. */
#define S3_KEY_MAX 1024

typedef struct s3_keyfmt_opts {
    const char *format;    /* s3_object_key_format; NULL when the user did not set it */
    const char *path;      /* %{path} */
    const char *extension; /* %{file_extension} */
    const char *hostname;  /* %{hostname} */
    bool check_object;
    const char *index_format;      /* "%d" */
    int64_t hex_random_length;     /* 4 */
    const char *time_slice_format; /* NULL: from the timekey */
    double timekey;                /* the buffer's timekey; 0 when time is not a chunk key */
    bool parallel;                 /* flush_thread_count > 1: warn about keys that collide */
} s3_keyfmt_opts_t;

typedef struct s3_index_fmt {
    char conv; /* 'd', 'x' or 'X' */
    int width; /* zero-padded to this many digits */
} s3_index_fmt_t;

typedef struct s3_keyfmt {
    char *tmpl; /* the format with %{hostname}, %{path} and %{file_extension} replaced */
    char *time_slice_format; /* NULL when time is not a chunk key (then %{time_slice} is "") */
    bool check_object;
    bool uuid_flush; /* the format names %{uuid_flush} */
    s3_index_fmt_t index;
    int64_t hex_random_length;
} s3_keyfmt_t;

/* Validates and prepares the key format as fluent-plugin-s3's configure does: removed
 * %{uuid...} placeholders, index_format against ^%(0\d*)?[dxX]$ and hex_random_length above
 * S3_HEX_RANDOM_MAX are errors; %{hostname} is replaced now, with a deprecation warning; with
 * check_object false and no format set, the format becomes S3_NOCHECK_KEY_FORMAT; warnings for
 * formats that produce the same key twice, and for each placeholder whose value a retry of the
 * same chunk cannot keep (%{uuid_flush}; %{index} with check_object; %{hms_slice} without),
 * since a chunk uploaded again after a crash would then become a second object. */
int s3_keyfmt_init(s3_keyfmt_t *k, const s3_keyfmt_opts_t *o, weir_err_t *err);
void s3_keyfmt_free(s3_keyfmt_t *k);
/* The static part of an output's `path`: up to its first placeholder (`%...`, `${...}`,
 * `#{...}`), the prefix every data key begins with (a digest's data_prefix, what weir verify
 * lists). Caller frees. */
char *s3_static_prefix(const char *path);

int s3_index_format_parse(const char *fmt, s3_index_fmt_t *out);
/* sprintf(index_format, i) */
void s3_index_format(const s3_index_fmt_t *f, long i, weir_buf_t *out);
/* The chunk id reversed, first `len` characters (Ruby's hex.reverse[0...len], so a negative
 * length drops that many characters from the end). */
void s3_hex_random(const char *id_hex, int64_t len, weir_buf_t *out);
/* Format used for %{time_slice} when time_slice_format is not set. */
const char *s3_timekey_format(double timekey);

typedef struct s3_key_vars {
    long index; /* check_object: the HEAD loop's attempt, from 0 */
    time_t now; /* for %{hms_slice} (UTC) */
} s3_key_vars_t;

/* Builds the key of chunk `c` of buffer `b` (fluent-plugin-s3 write, section 1.7.2): strftime
 * over the chunk's time bucket and ${tag}/${chunk_id}/${key} through weir_placeholders_expand,
 * then %{time_slice}, %{index}, %{hex_random}, %{uuid_flush} (a fresh v4 UUID on every call)
 * and, with check_object false, %{hms_slice} and %{date_slice}; any other %{...} becomes "".
 * Values from events (tag, record keys) are inserted once and never read as placeholders.
 * Fails on a malformed template or a key longer than S3_KEY_MAX. Loop thread only (the
 * buffer's zone cache is not shared across threads). */
int s3_key_build(const s3_keyfmt_t *k, const weir_buffer_t *b, const weir_chunk_t *c,
                 const s3_key_vars_t *v, weir_buf_t *out, weir_err_t *err);

/* ---- credentials ------------------------------------------------------------------------ */

typedef struct s3_creds {
    char *access_key;
    char *secret_key;
    char *token;        /* NULL for long-term keys */
    int64_t expiration; /* epoch seconds; 0 = does not expire */
} s3_creds_t;

void s3_creds_free(s3_creds_t *c);
void s3_creds_copy(s3_creds_t *dst, const s3_creds_t *src);
void s3_creds_set(s3_creds_t *c, const char *key, const char *secret, const char *token,
                  int64_t expiration);

/* A shared credentials file (~/.aws/credentials: [name] sections) or, with config_file, the
 * config file ([profile name] and [default]). Lines starting with # or ; are comments. Returns
 * 1 and fills `out` when the profile has aws_access_key_id and aws_secret_access_key
 * (aws_session_token optional), 0 when the profile is missing, -1 when it exists but lacks a
 * key (err says which). */
int s3_creds_parse_ini(const char *text, size_t len, const char *profile, bool config_file,
                       s3_creds_t *out, weir_err_t *err);
/* IMDS and ECS credential documents: {"AccessKeyId", "SecretAccessKey", "Token",
 * "Expiration"} (and "Code" other than "Success" is an error). */
int s3_creds_parse_json(const char *text, size_t len, s3_creds_t *out, weir_err_t *err);
/* STS AssumeRole / AssumeRoleWithWebIdentity responses (<Credentials> element); an STS
 * <Error> body becomes err "Code: Message". */
int s3_creds_parse_sts(const char *xml, size_t len, s3_creds_t *out, weir_err_t *err);

/* ISO-8601 "2011-07-15T23:28:33.359Z" / "+00:00" forms to epoch seconds; -1 if malformed. */
int s3_parse_iso8601(const char *s, int64_t *out);
/* The text of the first <tag>...</tag> element, entities decoded. Returns 1 when found. */
int s3_xml_text(const char *xml, size_t len, const char *tag, weir_buf_t *out);
/* "Code: Message" from an S3 error body, or "" when there is none. */
void s3_error_summary(const char *xml, size_t len, weir_buf_t *out);

/* `weir verify` (src/output/s3/verify.c): argv[0] is "verify". Returns the exit status: 0
 * verified, 1 findings, 2 could not run. */
int weir_verify_main(int argc, char **argv);

#endif
