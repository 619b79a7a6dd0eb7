/* @type s3: fluent-plugin-s3's out_s3 on weir's buffer. Each ready chunk becomes one object,
 * named by s3_object_key_format (keys.c), formatted with <inject>/<format>, compressed as
 * store_as says, and uploaded by upload.c with SigV4 over libcurl's multi interface.
 *
 * This file reads the configuration (every parameter of s3-output.md 1.1 that weir supports;
 * the others are refused by name rather than ignored), picks the credential source in
 * fluent-plugin-s3's order, and runs the start-up checks (check_apikey_on_start, check_bucket,
 * auto_create_bucket). create() opens nothing and reads no file, so --dry-run validates a
 * configuration without credentials or network. start() may block: nothing is accepted yet,
 * and the checks use short timeouts. */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "s3_internal.h"
#include "weir/log.h"
#include "weir/placeholder.h"

#define S3_MIN_PART_SIZE (5ull << 20) /* S3 refuses smaller parts, except the last */
#define S3_MAX_PART_SIZE (5ull << 30)
#define S3_MAX_PUT_SIZE (5ull << 30) /* largest single PutObject */
#define S3_DEFAULT_MULTIPART_THRESHOLD (64ull << 20)
#define S3_DEFAULT_MULTIPART_CHUNK (16ull << 20)
#define S3_DEFAULT_ZSTD_LEVEL 3 /* fluent-plugin-s3's zstd compressor default */
#define S3_START_TIMEOUT_MS 30000
#define S3_START_CONNECT_MS 10000
#define S3_START_ATTEMPTS 4

static const char *keep(s3_out_t *o, const char *s)
{
    if (!s) return NULL;
    o->strs = weir_realloc(o->strs, (o->nstrs + 1) * sizeof *o->strs);
    char *c = weir_strdup(s);
    o->strs[o->nstrs++] = c;
    return c;
}

static char *dup_or_null(const char *s)
{
    return s ? weir_strdup(s) : NULL;
}

/* ---- configuration ------------------------------------------------------------------------ */

typedef struct s3_params {
    const char *bucket, *region, *endpoint, *path, *key_format, *store_as, *index_format;
    const char *storage_class, *acl, *grant_full_control, *grant_read, *grant_read_acp;
    const char *grant_write_acp, *sse, *ssekms_key_id, *ssec_algorithm, *ssec_key, *ssec_key_md5;
    const char *tagging, *signature_version, *ca_bundle, *ca_dir, *proxy, *time_slice_format;
    const char *aws_key_id, *aws_sec_key, *aws_profile, *credential_process, *checksum_algorithm;
    bool force_path_style, reduced_redundancy, ssl_verify_peer, use_bundled_cert;
    bool accelerate, dual_stack;
    int64_t hex_random_length, iam_retries;
    bool has_iam_retries;
} s3_params_t;

static int read_strings(weir_conf_section_t *s, s3_params_t *p, weir_err_t *err)
{
    struct {
        const char *key;
        const char **dst;
    } strs[] = {
        {"s3_bucket", &p->bucket},
        {"s3_region", &p->region},
        {"s3_endpoint", &p->endpoint},
        {"path", &p->path},
        {"s3_object_key_format", &p->key_format},
        {"store_as", &p->store_as},
        {"index_format", &p->index_format},
        {"storage_class", &p->storage_class},
        {"acl", &p->acl},
        {"grant_full_control", &p->grant_full_control},
        {"grant_read", &p->grant_read},
        {"grant_read_acp", &p->grant_read_acp},
        {"grant_write_acp", &p->grant_write_acp},
        {"use_server_side_encryption", &p->sse},
        {"ssekms_key_id", &p->ssekms_key_id},
        {"sse_customer_algorithm", &p->ssec_algorithm},
        {"sse_customer_key", &p->ssec_key},
        {"sse_customer_key_md5", &p->ssec_key_md5},
        {"tagging", &p->tagging},
        {"signature_version", &p->signature_version},
        {"ssl_ca_bundle", &p->ca_bundle},
        {"ssl_ca_directory", &p->ca_dir},
        {"proxy_uri", &p->proxy},
        {"time_slice_format", &p->time_slice_format},
        {"aws_key_id", &p->aws_key_id},
        {"aws_sec_key", &p->aws_sec_key},
        {"aws_profile", &p->aws_profile},
        {"aws_credential_process", &p->credential_process},
        {"checksum_algorithm", &p->checksum_algorithm},
    };
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
        if (weir_conf_get_str(s, strs[i].key, strs[i].dst, err) < 0) return -1;
    return 0;
}

static int read_flags(s3_out_t *o, weir_conf_section_t *s, s3_params_t *p, weir_err_t *err)
{
    struct {
        const char *key;
        bool *dst;
    } bools[] = {
        {"force_path_style", &p->force_path_style},
        {"check_object", &o->check_object},
        {"check_bucket", &o->check_bucket},
        {"auto_create_bucket", &o->auto_create_bucket},
        {"check_apikey_on_start", &o->check_apikey_on_start},
        {"overwrite", &o->overwrite},
        {"reduced_redundancy", &p->reduced_redundancy},
        {"compute_checksums", &o->compute_checksums},
        {"ssl_verify_peer", &p->ssl_verify_peer},
        {"use_bundled_cert", &p->use_bundled_cert},
        {"enable_transfer_acceleration", &p->accelerate},
        {"enable_dual_stack", &p->dual_stack},
    };
    for (size_t i = 0; i < sizeof bools / sizeof *bools; i++)
        if (weir_conf_get_bool(s, bools[i].key, bools[i].dst, err) < 0) return -1;
    if (weir_conf_get_int(s, "hex_random_length", &p->hex_random_length, err) < 0) return -1;
    int r = weir_conf_get_int(s, "aws_iam_retries", &p->iam_retries, err);
    if (r < 0) return -1;
    p->has_iam_retries = r == 1;
    if (weir_conf_get_time(s, "warn_for_delay", &o->warn_for_delay, err) < 0) return -1;
    if (weir_conf_get_size(s, "multipart_threshold", &o->multipart_threshold, err) < 0 ||
        weir_conf_get_size(s, "multipart_chunk_size", &o->multipart_chunk_size, err) < 0)
        return -1;
    return 0;
}

/* Parameters of fluent-plugin-s3 that weir refuses, each with the reason. */
static int refuse_unsupported(weir_conf_section_t *s, const s3_params_t *p, weir_err_t *err)
{
    if (p->credential_process)
        return weir_conf_errorf(err, weir_conf_find(s, "aws_credential_process"),
                                "aws_credential_process is not supported by weir; use a profile, "
                                "static keys or an instance/container role");
    if (p->checksum_algorithm)
        return weir_conf_errorf(err, weir_conf_find(s, "checksum_algorithm"),
                                "checksum_algorithm is not supported by weir; it sends "
                                "Content-MD5 (compute_checksums) and a signed SHA-256 payload");
    if (p->use_bundled_cert)
        return weir_conf_errorf(err, weir_conf_find(s, "use_bundled_cert"),
                                "use_bundled_cert: weir has no bundled CA file; use "
                                "ssl_ca_bundle or the system store");
    if (p->signature_version && strcmp(p->signature_version, "v4") != 0)
        return weir_conf_errorf(
            err, weir_conf_find(s, "signature_version"),
            "signature_version %s is not supported: weir signs with SigV4 only (v4)%s",
            p->signature_version,
            strcmp(p->signature_version, "s3") == 0 ? "; SigV2 (s3) is deprecated by AWS" : "");
    weir_conf_section_t *lc = weir_conf_child(s, "bucket_lifecycle_rule", 0);
    if (lc)
        return weir_conf_section_errorf(err, lc,
                                        "<bucket_lifecycle_rule> is not supported by weir; "
                                        "manage lifecycle rules outside the log shipper");
    return 0;
}

/* s3_endpoint or the AWS endpoint for the region, and the addressing style. */
static int setup_endpoint(s3_out_t *o, weir_conf_section_t *s, const s3_params_t *p,
                          weir_err_t *err)
{
    if (p->endpoint) {
        if (s3_endpoint_rejected(p->endpoint))
            return weir_conf_errorf(err, weir_conf_find(s, "s3_endpoint"),
                                    "s3_endpoint parameter is not supported for S3, use "
                                    "s3_region instead. This parameter is for S3 compatible "
                                    "services");
        const char *h = strstr(p->endpoint, "://");
        if (h) {
            o->scheme = weir_strndup(p->endpoint, (size_t)(h - p->endpoint));
            h += 3;
        } else {
            o->scheme = weir_strdup("https");
            h = p->endpoint;
        }
        if (strcmp(o->scheme, "http") != 0 && strcmp(o->scheme, "https") != 0)
            return weir_conf_errorf(err, weir_conf_find(s, "s3_endpoint"),
                                    "s3_endpoint must be an http:// or https:// URL");
        size_t hl = strcspn(h, "/?");
        if (hl == 0)
            return weir_conf_errorf(err, weir_conf_find(s, "s3_endpoint"),
                                    "s3_endpoint has no host");
        o->host = weir_strndup(h, hl);
        const char *bp = h + hl;
        size_t bl = strcspn(bp, "?");
        while (bl > 0 && bp[bl - 1] == '/')
            bl--;
        o->base_path = weir_strndup(bp, bl);
    } else {
        o->scheme = weir_strdup("https");
        o->base_path = weir_strdup("");
        const char *suffix =
            strncmp(o->region, "cn-", 3) == 0 ? "amazonaws.com.cn" : "amazonaws.com";
        weir_buf_t h;
        weir_buf_init(&h);
        if (p->accelerate)
            weir_buf_printf(&h, "s3-accelerate%s.%s", p->dual_stack ? ".dualstack" : "", suffix);
        else if (p->dual_stack)
            weir_buf_printf(&h, "s3.dualstack.%s.%s", o->region, suffix);
        else if (strcmp(o->region, "us-east-1") == 0)
            weir_buf_printf(&h, "s3.%s", suffix);
        else
            weir_buf_printf(&h, "s3.%s.%s", o->region, suffix);
        o->host = h.data;
    }
    bool https = strcmp(o->scheme, "https") == 0;
    o->path_style = p->force_path_style || !s3_bucket_dns_compatible(o->bucket, https);
    if (p->accelerate && o->path_style)
        return weir_conf_errorf(err, weir_conf_find(s, "enable_transfer_acceleration"),
                                "transfer acceleration needs a DNS-compatible bucket name and "
                                "no force_path_style");
    return 0;
}

static void put_header(s3_out_t *o, const char *name, const char *value)
{
    if (!value) return;
    o->put_headers[o->nput_headers++] = (s3_kv_t){name, keep(o, value)};
}

/* The SDK sends the SSE-C key base64-encoded and adds its MD5 when not given. */
static int setup_ssec(s3_out_t *o, weir_conf_section_t *s, const s3_params_t *p, weir_err_t *err)
{
    if (!p->ssec_key && !p->ssec_algorithm) return 0;
    if (!p->ssec_key || !p->ssec_algorithm)
        return weir_conf_errorf(
            err, weir_conf_find(s, p->ssec_key ? "sse_customer_key" : "sse_customer_algorithm"),
            "sse_customer_algorithm and sse_customer_key go together");
    if (strcmp(o->scheme, "https") != 0)
        return weir_conf_errorf(err, weir_conf_find(s, "sse_customer_key"),
                                "SSE-C keys are only sent over https (s3_endpoint is http)");
    size_t n = strlen(p->ssec_key);
    char *b64 = weir_malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)p->ssec_key, (int)n);
    char md5[S3_MD5_B64_LEN + 1];
    s3_md5_base64(p->ssec_key, n, md5);
    const char *alg = keep(o, p->ssec_algorithm), *key = keep(o, b64);
    const char *kmd5 = keep(o, p->ssec_key_md5 ? p->ssec_key_md5 : md5);
    memset(b64, 0, strlen(b64));
    free(b64);
    s3_kv_t h[] = {{"x-amz-server-side-encryption-customer-algorithm", alg},
                   {"x-amz-server-side-encryption-customer-key", key},
                   {"x-amz-server-side-encryption-customer-key-MD5", kmd5}};
    for (size_t i = 0; i < 3; i++) {
        o->put_headers[o->nput_headers++] = h[i];
        o->ssec_headers[o->nssec_headers++] = h[i];
    }
    return 0;
}

static int setup_headers(s3_out_t *o, weir_conf_section_t *s, const s3_params_t *p, weir_err_t *err)
{
    const char *sc = p->storage_class ? p->storage_class : "STANDARD";
    if (p->reduced_redundancy) {
        weir_warn("s3: reduced_redundancy is deprecated; use storage_class REDUCED_REDUNDANCY");
        sc = "REDUCED_REDUNDANCY";
    }
    put_header(o, "x-amz-storage-class", sc);
    put_header(o, "x-amz-acl", p->acl);
    put_header(o, "x-amz-grant-full-control", p->grant_full_control);
    put_header(o, "x-amz-grant-read", p->grant_read);
    put_header(o, "x-amz-grant-read-acp", p->grant_read_acp);
    put_header(o, "x-amz-grant-write-acp", p->grant_write_acp);
    put_header(o, "x-amz-server-side-encryption", p->sse);
    put_header(o, "x-amz-server-side-encryption-aws-kms-key-id", p->ssekms_key_id);
    put_header(o, "x-amz-tagging", p->tagging);
    if (setup_ssec(o, s, p, err) != 0) return -1;
    int r = weir_conf_get_hash(s, "s3_metadata", &o->meta_keys, &o->meta_values, &o->nmeta, err);
    if (r < 0) return -1;
    for (size_t i = 0; i < o->nmeta; i++) {
        for (const char *c = o->meta_keys[i]; *c; c++) {
            if (*c <= ' ' || *c == ':' || *c == 0x7f)
                return weir_conf_errorf(err, weir_conf_find(s, "s3_metadata"),
                                        "s3_metadata key '%s' cannot be an HTTP header name",
                                        o->meta_keys[i]);
        }
        weir_placeholders_check("s3_metadata", o->meta_values[i], o->buffer);
    }
    if (o->nput_headers + o->nmeta + 8 > S3_SIGN_MAX_HEADERS)
        return weir_conf_errorf(err, weir_conf_find(s, "s3_metadata"),
                                "s3_metadata has too many keys (at most %d headers in all)",
                                S3_SIGN_MAX_HEADERS - 8);
    return 0;
}

static int get_section_str(weir_conf_section_t *c, const char *key, char **out, bool required,
                           weir_err_t *err)
{
    const char *v = NULL;
    if (weir_conf_get_str(c, key, &v, err) < 0) return -1;
    if (!v && required) return weir_conf_section_errorf(err, c, "<%s> needs '%s'", c->name, key);
    free(*out);
    *out = dup_or_null(v);
    return 0;
}

static int read_sts_params(weir_conf_section_t *c, s3_cred_conf_t *cc, weir_err_t *err)
{
    if (get_section_str(c, "role_arn", &cc->role_arn, true, err) < 0 ||
        get_section_str(c, "role_session_name", &cc->session_name, true, err) < 0 ||
        get_section_str(c, "policy", &cc->policy, false, err) < 0 ||
        get_section_str(c, "sts_region", &cc->sts_region, false, err) < 0 ||
        get_section_str(c, "sts_http_proxy", &cc->sts_proxy, false, err) < 0 ||
        get_section_str(c, "sts_endpoint_url", &cc->sts_endpoint, false, err) < 0 ||
        weir_conf_get_int(c, "duration_seconds", &cc->duration, err) < 0)
        return -1;
    if (cc->duration && (cc->duration < 900 || cc->duration > 43200))
        return weir_conf_errorf(err, weir_conf_find(c, "duration_seconds"),
                                "duration_seconds must be between 900 and 43200 (STS limits)");
    return 0;
}

/* Reads every credentials section (so each is validated) and picks the source in
 * fluent-plugin-s3's order. */
static int setup_credentials(s3_out_t *o, weir_conf_section_t *s, const s3_params_t *p,
                             weir_err_t *err)
{
    s3_cred_conf_t *cc = &o->cred_conf;
    cc->region = weir_strdup(o->region);
    weir_conf_section_t *ar = weir_conf_child(s, "assume_role_credentials", 0);
    weir_conf_section_t *wi = weir_conf_child(s, "web_identity_credentials", 0);
    weir_conf_section_t *ip = weir_conf_child(s, "instance_profile_credentials", 0);
    weir_conf_section_t *sh = weir_conf_child(s, "shared_credentials", 0);
    weir_conf_section_t *all[] = {ar, wi, ip, sh};
    for (size_t i = 0; i < 4; i++)
        if (all[i]) weir_conf_section_use(all[i]);
    /* sections are read in reverse precedence so the winner's values stay */
    if (sh && (get_section_str(sh, "path", &cc->shared_path, false, err) < 0 ||
               get_section_str(sh, "profile_name", &cc->profile, false, err) < 0))
        return -1;
    if (ip) {
        if (get_section_str(ip, "ip_address", &cc->ip_address, false, err) < 0 ||
            weir_conf_get_int(ip, "port", &cc->port, err) < 0 ||
            weir_conf_get_int(ip, "retries", &cc->retries, err) < 0 ||
            weir_conf_get_time(ip, "http_open_timeout", &cc->open_timeout, err) < 0 ||
            weir_conf_get_time(ip, "http_read_timeout", &cc->read_timeout, err) < 0)
            return -1;
    }
    if (wi && (read_sts_params(wi, cc, err) < 0 ||
               get_section_str(wi, "web_identity_token_file", &cc->token_file, true, err) < 0))
        return -1;
    if (ar && (read_sts_params(ar, cc, err) < 0 ||
               get_section_str(ar, "external_id", &cc->external_id, false, err) < 0))
        return -1;
    bool keys = p->aws_key_id && p->aws_sec_key;
    if (keys) {
        cc->access_key = weir_strdup(p->aws_key_id);
        cc->secret_key = weir_strdup(p->aws_sec_key);
    } else if (p->aws_key_id || p->aws_sec_key) {
        return weir_conf_errorf(err,
                                weir_conf_find(s, p->aws_key_id ? "aws_key_id" : "aws_sec_key"),
                                "aws_key_id and aws_sec_key go together");
    }
    if (ar) {
        cc->kind = S3_CRED_ASSUME_ROLE;
    } else if (keys) {
        cc->kind = S3_CRED_STATIC;
    } else if (p->aws_profile) {
        cc->kind = S3_CRED_SHARED;
        free(cc->profile);
        cc->profile = weir_strdup(p->aws_profile);
        free(cc->shared_path);
        cc->shared_path = NULL;
    } else if (wi) {
        cc->kind = S3_CRED_WEB_IDENTITY;
    } else if (ip) {
        cc->kind = S3_CRED_INSTANCE;
    } else if (sh) {
        cc->kind = S3_CRED_SHARED;
    } else if (p->has_iam_retries) {
        weir_warn("s3: aws_iam_retries is deprecated; use <instance_profile_credentials> "
                  "retries");
        cc->kind = S3_CRED_INSTANCE;
        cc->retries = p->iam_retries;
    } else {
        cc->kind = S3_CRED_CHAIN;
    }
    return 0;
}

/* Fluentd's compat rule: without a <buffer> section, time_slice_format sets the timekey
 * from its finest unit. */
static int compat_timekey(weir_conf_section_t *s, const char *fmt, int64_t *timekey,
                          weir_err_t *err)
{
    if (strstr(fmt, "%S") || strstr(fmt, "%s") || strstr(fmt, "%T"))
        *timekey = 1;
    else if (strstr(fmt, "%M") || strstr(fmt, "%R"))
        *timekey = 60;
    else if (strstr(fmt, "%H") || strstr(fmt, "%k") || strstr(fmt, "%I"))
        *timekey = 3600;
    else if (strstr(fmt, "%d") || strstr(fmt, "%e") || strstr(fmt, "%j") || strstr(fmt, "%F"))
        *timekey = 86400;
    else
        return weir_conf_errorf(err, weir_conf_find(s, "time_slice_format"),
                                "time_slice_format '%s' has no day, hour, minute or second: "
                                "it cannot set a timekey",
                                fmt);
    return 0;
}

static int setup_format(s3_out_t *o, weir_conf_section_t *s, weir_err_t *err)
{
    weir_conf_section_t *fsec = weir_conf_child(s, "format", 0);
    weir_conf_section_t *isec = weir_conf_child(s, "inject", 0);
    if (fsec) weir_conf_section_use(fsec);
    if (isec) weir_conf_section_use(isec);
    weir_format_opts_init(&o->fopts, WEIR_FORMAT_OUT_FILE);
    weir_inject_opts_init(&o->iopts);
    if (weir_format_opts_from_conf(&o->fopts, fsec, WEIR_FORMAT_OUT_FILE, err) != 0) return -1;
    if (isec && weir_inject_opts_from_conf(&o->iopts, isec, err) != 0) return -1;
    /* the option structs borrow from the tree: copy, so worker threads can build from them */
    weir_format_opts_own(&o->fopts);
    weir_inject_opts_own(&o->iopts);
    o->opts_owned = true;
    /* build once now, so a bad option fails at start-up and not at the first flush */
    weir_formatter_t f;
    if (weir_formatter_init(&f, &o->fopts, err) != 0) return -1;
    weir_formatter_free(&f);
    weir_inject_t inj;
    if (weir_inject_init(&inj, &o->iopts, err) != 0) return -1;
    weir_inject_free(&inj);
    return 0;
}

static int setup_compress(s3_out_t *o, weir_conf_section_t *s, weir_err_t *err)
{
    o->zstd_level = S3_DEFAULT_ZSTD_LEVEL;
    weir_conf_section_t *c = weir_conf_child(s, "compress", 0);
    if (!c) return 0;
    weir_conf_section_use(c);
    if (o->store_as != S3_STORE_ZSTD)
        return weir_conf_section_errorf(err, c, "<compress> is only for store_as zstd (level)");
    int64_t level = S3_DEFAULT_ZSTD_LEVEL;
    if (weir_conf_get_int(c, "level", &level, err) < 0) return -1;
    if (level < 1 || level > ZSTD_maxCLevel())
        return weir_conf_errorf(err, weir_conf_find(c, "level"), "zstd level must be 1..%d",
                                ZSTD_maxCLevel());
    o->zstd_level = (int)level;
    return 0;
}

static int setup_multipart(s3_out_t *o, weir_conf_section_t *s, weir_err_t *err)
{
    if (o->multipart_chunk_size < S3_MIN_PART_SIZE || o->multipart_chunk_size > S3_MAX_PART_SIZE)
        return weir_conf_errorf(err, weir_conf_find(s, "multipart_chunk_size"),
                                "multipart_chunk_size must be between 5m and 5g (S3's part "
                                "limits)");
    if (o->multipart_threshold > S3_MAX_PUT_SIZE)
        return weir_conf_errorf(err, weir_conf_find(s, "multipart_threshold"),
                                "multipart_threshold must be at most 5g (S3's PutObject limit)");
    return 0;
}

static void s3_destroy(void *state);

static int setup_keys(s3_out_t *o, weir_conf_section_t *s, weir_conf_section_t *bsec,
                      const s3_params_t *p, weir_err_t *err)
{
    int64_t threads = 1;
    weir_conf_param_t *ft = bsec ? weir_conf_find(bsec, "flush_thread_count") : NULL;
    if (ft) threads = strtoll(ft->value, NULL, 10);
    s3_keyfmt_opts_t ko = {
        .format = p->key_format,
        .path = p->path ? p->path : "",
        .extension = s3_store_extension(o->store_as),
        .hostname = weir_engine_hostname(o->eng),
        .check_object = o->check_object,
        .index_format = p->index_format,
        .hex_random_length = p->hex_random_length,
        .time_slice_format = p->time_slice_format,
        .timekey = weir_buffer_timekey(o->buffer),
        .parallel = threads > 1,
    };
    weir_err_t why = {{0}};
    if (s3_keyfmt_init(&o->keyfmt, &ko, &why) != 0) {
        const char *k = strstr(why.msg, "index_format")        ? "index_format"
                        : strstr(why.msg, "hex_random_length") ? "hex_random_length"
                                                               : "s3_object_key_format";
        weir_conf_param_t *pp = weir_conf_find(s, k);
        if (pp) return weir_conf_errorf(err, pp, "%s", why.msg);
        return weir_conf_section_errorf(err, s, "%s", why.msg);
    }
    weir_placeholders_check("s3_object_key_format", o->keyfmt.tmpl, o->buffer);
    return 0;
}

/* Where the objects go and how to reach them: the bucket, region, endpoint, path, store_as
 * and TLS/proxy settings. The output and `weir verify -c` (s3_target_from_conf) read them
 * here, so both reach the same bucket the same way. */
static int read_target(s3_out_t *o, weir_conf_section_t *sec, s3_params_t *p, weir_err_t *err)
{
    o->check_object = o->check_bucket = o->auto_create_bucket = true;
    o->check_apikey_on_start = o->compute_checksums = true;
    o->multipart_threshold = S3_DEFAULT_MULTIPART_THRESHOLD;
    o->multipart_chunk_size = S3_DEFAULT_MULTIPART_CHUNK;
    *p = (s3_params_t){.ssl_verify_peer = true, .hex_random_length = 4};
    const char *id = NULL;
    if (weir_conf_get_str(sec, "@id", &id, err) < 0 || read_strings(sec, p, err) < 0 ||
        read_flags(o, sec, p, err) < 0 || refuse_unsupported(sec, p, err) < 0)
        return -1;
    o->id = weir_strdup(id ? id : "s3");
    if (!p->bucket || !*p->bucket)
        return weir_conf_section_errorf(err, sec, "@type s3 needs 's3_bucket'");
    o->bucket = weir_strdup(p->bucket);
    const char *env_region = getenv("AWS_REGION");
    o->region = weir_strdup(p->region                   ? p->region
                            : env_region && *env_region ? env_region
                                                        : "us-east-1");
    o->path = weir_strdup(p->path ? p->path : "");
    weir_err_t why = {{0}};
    int sa = s3_store_as_parse(p->store_as ? p->store_as : "gzip", &o->store_as, &why);
    if (sa < 0) return weir_conf_errorf(err, weir_conf_find(sec, "store_as"), "%s", why.msg);
    if (sa == 1)
        weir_warn("s3: store_as '%s' is unknown; using text (as Fluentd does)", p->store_as);
    if (setup_endpoint(o, sec, p, err) != 0) return -1;
    o->net.verify_peer = p->ssl_verify_peer;
    const char *env_ca = getenv("AWS_CA_BUNDLE");
    o->net.ca_bundle = dup_or_null(p->ca_bundle ? p->ca_bundle : env_ca && *env_ca ? env_ca : NULL);
    o->net.ca_dir = dup_or_null(p->ca_dir);
    o->net.proxy = dup_or_null(p->proxy);
    if (!p->ssl_verify_peer) weir_warn("s3: ssl_verify_peer is false: TLS peers are not checked");
    return 0;
}

s3_out_t *s3_target_from_conf(weir_conf_section_t *sec, weir_err_t *err)
{
    s3_out_t *o = weir_calloc(1, sizeof *o);
    s3_params_t p;
    if (read_target(o, sec, &p, err) != 0 || setup_credentials(o, sec, &p, err) != 0) {
        s3_destroy(o);
        return NULL;
    }
    return o;
}

void s3_target_free(s3_out_t *o)
{
    s3_destroy(o);
}

static int s3_create(weir_engine_t *eng, weir_conf_section_t *sec, void **state, weir_err_t *err)
{
    s3_out_t *o = weir_calloc(1, sizeof *o);
    o->eng = eng;
    s3_params_t p;
    if (read_target(o, sec, &p, err) != 0) goto err;
    if (setup_format(o, sec, err) != 0 || setup_compress(o, sec, err) != 0 ||
        setup_multipart(o, sec, err) != 0)
        goto err;

    weir_conf_section_t *bsec = weir_conf_child(sec, "buffer", 0);
    weir_buffer_defaults_t defs = {.chunk_keys = "time", .timekey = 86400};
    if (!bsec && p.time_slice_format &&
        compat_timekey(sec, p.time_slice_format, &defs.timekey, err) != 0)
        goto err;
    weir_buffer_sink_t sink = {.write = s3_upload_chunk, .out = o};
    o->buffer = weir_buffer_new(eng, bsec, &defs, o->id, &sink, err);
    if (!o->buffer) goto err;
    if (setup_keys(o, sec, bsec, &p, err) != 0 || setup_headers(o, sec, &p, err) != 0 ||
        setup_credentials(o, sec, &p, err) != 0)
        goto err;
    o->pm = weir_engine_plugin_metrics(eng);
    s3_upload_metrics(o, o->pm);
    if (s3_digest_create(o, sec, err) != 0) goto err;
    *state = o;
    return 0;
err:
    s3_destroy(o);
    return -1;
}

/* ---- start-up checks ---------------------------------------------------------------------- */

int s3_request_blocking(const s3_out_t *o, const s3_creds_t *cr, const s3_reqspec_t *spec,
                        s3_http_req_t *r, long timeout_ms, weir_err_t *err)
{
    bool (*sink)(const char *, size_t, void *) = r->sink;
    void (*sink_restart)(void *) = r->sink_restart;
    void *sink_arg = r->sink_arg;
    const char *capture = r->capture_header;
    for (int i = 0; i < S3_START_ATTEMPTS; i++) {
        if (i) usleep((useconds_t)(300000u << (i - 1)));
        s3_http_req_reset(r);
        r->sink = sink;
        r->sink_restart = sink_restart;
        r->sink_arg = sink_arg;
        r->capture_header = capture;
        if (sink_restart) sink_restart(sink_arg);
        r->connect_timeout_ms = S3_START_CONNECT_MS;
        r->timeout_ms = timeout_ms;
        if (s3_request_build(o, cr, spec, r, err) != 0) return -1;
        s3_http_perform(r, &o->net);
        if (sink && r->curl_code == CURLE_WRITE_ERROR) return -1; /* refused: the same again */
        if (!s3_response_transient(r)) return 0;
    }
    return r->curl_code == CURLE_OK ? 0 : -1;
}

/* A blocking request at start, with the SDK's in-place retries for transient failures. */
static int start_request(s3_out_t *o, const s3_creds_t *cr, const s3_reqspec_t *spec,
                         s3_http_req_t *r, weir_err_t *err)
{
    return s3_request_blocking(o, cr, spec, r, S3_START_TIMEOUT_MS, err);
}

void s3_answer_text(const s3_http_req_t *r, weir_buf_t *out)
{
    if (r->curl_code != CURLE_OK && r->curl_code != CURLE_WRITE_ERROR) {
        weir_buf_printf(out, "%s", s3_http_error(r));
    } else {
        weir_buf_printf(out, "HTTP %ld", r->status);
        weir_buf_t sum;
        weir_buf_init(&sum);
        s3_error_summary(r->resp.data, r->resp.len, &sum);
        if (sum.len) {
            weir_buf_putc(out, ' ');
            weir_buf_append(out, sum.data, sum.len);
        }
        weir_buf_free(&sum);
    }
    weir_buf_putc(out, '\0');
}

static bool is_code(const s3_http_req_t *r, const char *code)
{
    weir_buf_t c;
    weir_buf_init(&c);
    bool hit = s3_xml_text(r->resp.data, r->resp.len, "Code", &c) == 1 && c.len == strlen(code) &&
               memcmp(c.data, code, c.len) == 0;
    weir_buf_free(&c);
    return hit;
}

static int check_apikey(s3_out_t *o, const s3_creds_t *cr, weir_err_t *err)
{
    s3_kv_t q[] = {{"max-keys", "1"}, {"prefix", o->path}};
    s3_reqspec_t spec = {.method = "GET", .query = q, .nquery = 2};
    s3_http_req_t r;
    s3_http_req_init(&r);
    int rc = start_request(o, cr, &spec, &r, err);
    if (rc == 0 && r.status != 200 && !(r.status == 404 && is_code(&r, "NoSuchBucket"))) rc = -1;
    if (rc != 0) {
        weir_buf_t a;
        weir_buf_init(&a);
        s3_answer_text(&r, &a);
        weir_err_set(err,
                     "can't call S3 API (ListObjects on bucket %s). Please check your "
                     "credentials or s3_region configuration. error = %s",
                     o->bucket, a.data);
        weir_buf_free(&a);
    }
    s3_http_req_reset(&r);
    weir_buf_free(&r.resp);
    return rc;
}

static int create_bucket(s3_out_t *o, const s3_creds_t *cr, weir_err_t *err)
{
    weir_buf_t body;
    weir_buf_init(&body);
    if (strcmp(o->region, "us-east-1") != 0)
        weir_buf_printf(&body,
                        "<CreateBucketConfiguration "
                        "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>%s"
                        "</LocationConstraint></CreateBucketConfiguration>",
                        o->region);
    s3_reqspec_t spec = {.method = "PUT", .body = body.data ? body.data : "", .body_len = body.len};
    s3_http_req_t r;
    s3_http_req_init(&r);
    int rc = start_request(o, cr, &spec, &r, err);
    if (rc == 0 && r.status != 200) rc = -1;
    if (rc != 0) {
        weir_buf_t a;
        weir_buf_init(&a);
        s3_answer_text(&r, &a);
        weir_err_set(err, "cannot create bucket %s: %s", o->bucket, a.data);
        weir_buf_free(&a);
    } else {
        weir_info("s3 %s: created bucket %s in %s", o->id, o->bucket, o->region);
    }
    s3_http_req_reset(&r);
    weir_buf_free(&r.resp);
    weir_buf_free(&body);
    return rc;
}

static int check_bucket(s3_out_t *o, const s3_creds_t *cr, weir_err_t *err)
{
    s3_reqspec_t spec = {.method = "HEAD"};
    s3_http_req_t r;
    s3_http_req_init(&r);
    int rc = start_request(o, cr, &spec, &r, err);
    /* the SDK's bucket_exists waiter: 200, 301 and 403 all mean the bucket is there */
    bool exists = rc == 0 && (r.status == 200 || r.status == 301 || r.status == 403);
    bool missing = rc == 0 && r.status == 404;
    if (exists) {
        rc = 0;
    } else if (missing && o->auto_create_bucket) {
        weir_info("s3 %s: creating bucket %s", o->id, o->bucket);
        rc = create_bucket(o, cr, err);
    } else if (missing) {
        weir_err_set(err, "The specified bucket does not exist: bucket = %s", o->bucket);
        rc = -1;
    } else {
        weir_buf_t a;
        weir_buf_init(&a);
        s3_answer_text(&r, &a);
        weir_err_set(err, "cannot check bucket %s: %s", o->bucket, a.data);
        weir_buf_free(&a);
        rc = -1;
    }
    s3_http_req_reset(&r);
    weir_buf_free(&r.resp);
    return rc;
}

/* ---- plugin ops ----------------------------------------------------------------------------- */

static int s3_start(void *state, weir_err_t *err)
{
    s3_out_t *o = state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    o->http = s3_http_new(weir_engine_loop(o->eng), &o->net);
    if (!o->http) {
        weir_err_set(err, "cannot create the HTTP client");
        return -1;
    }
    o->creds = s3_provider_new(&o->cred_conf, &o->net);
    s3_creds_t cr = {0};
    weir_err_t why = {{0}};
    int rc = 0;
    bool need = o->check_apikey_on_start || o->check_bucket;
    if (s3_provider_get(o->creds, &cr, &why) != 0) {
        if (need) {
            weir_err_set(err, "%s", why.msg);
            return -1;
        }
        weir_warn("s3 %s: %s; trying again at the first upload", o->id, why.msg);
    }
    bool have_creds = cr.access_key != NULL;
    if (o->check_apikey_on_start && check_apikey(o, &cr, &why) != 0) rc = -1;
    if (rc == 0 && o->check_bucket && check_bucket(o, &cr, &why) != 0) rc = -1;
    if (rc == 0 && o->digest && s3_digest_start(o->digest, &cr, have_creds, &why) != 0) rc = -1;
    s3_creds_free(&cr);
    if (rc != 0) {
        weir_err_set(err, "%s", why.msg);
        return -1;
    }
    return weir_buffer_start(o->buffer, err);
}

static weir_emit_result_t s3_emit(void *state, const weir_batch_t *b, weir_emit_cb cb, void *arg)
{
    return weir_buffer_append(((s3_out_t *)state)->buffer, b, cb, arg);
}

static void s3_flush(void *state)
{
    weir_buffer_flush_all(((s3_out_t *)state)->buffer);
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

static void s3_close_http(uv_timer_t *t)
{
    s3_out_t *o = t->data;
    uv_close((uv_handle_t *)t, free_handle);
    s3_http_free(o->http);
    o->http = NULL;
    if (o->stop_done) o->stop_done(o->stop_arg);
}

/* On the next loop turn: the caller may be inside the HTTP client's own callback. */
static void s3_close_http_later(void *arg)
{
    s3_out_t *o = arg;
    uv_timer_t *t = weir_calloc(1, sizeof *t);
    uv_timer_init(weir_engine_loop(o->eng), t);
    t->data = o;
    uv_timer_start(t, s3_close_http, 0, 0);
}

static void s3_stopped_later(uv_timer_t *t)
{
    s3_out_t *o = t->data;
    if (o->digest) {
        /* pending digests go now if S3 takes them, before the HTTP client closes */
        uv_close((uv_handle_t *)t, free_handle);
        s3_digest_stop(o->digest, s3_close_http_later, o);
        return;
    }
    s3_close_http(t);
}

/* The buffer has no write in flight any more: close the HTTP client so the loop can end.
 * This runs inside the last upload's completion, which runs inside the HTTP client's own
 * callback, so the client is closed on the next loop turn, not here. */
static void s3_stopped(void *arg)
{
    s3_out_t *o = arg;
    uv_timer_t *t = weir_calloc(1, sizeof *t);
    uv_timer_init(weir_engine_loop(o->eng), t);
    t->data = o;
    uv_timer_start(t, s3_stopped_later, 0, 0);
}

static void s3_stop(void *state, void (*done)(void *), void *arg)
{
    s3_out_t *o = state;
    o->stop_done = done;
    o->stop_arg = arg;
    weir_buffer_stop(o->buffer, s3_stopped, o);
}

static void s3_destroy(void *state)
{
    s3_out_t *o = state;
    if (!o) return;
    if (o->pm) weir_metrics_unregister(weir_plugin_metrics_registry(o->pm), o);
    s3_upload_memo_free(o);
    s3_digest_free(o->digest);
    weir_buffer_free(o->buffer);
    if (o->opts_owned) {
        weir_format_opts_release(&o->fopts);
        weir_inject_opts_release(&o->iopts);
    }
    if (o->http) s3_http_free(o->http);
    if (o->creds) {
        s3_provider_free(o->creds);
        curl_global_cleanup();
    }
    s3_cred_conf_free(&o->cred_conf);
    s3_keyfmt_free(&o->keyfmt);
    for (size_t i = 0; i < o->nstrs; i++) {
        memset(o->strs[i], 0, strlen(o->strs[i])); /* some are secrets (SSE-C key) */
        free(o->strs[i]);
    }
    free(o->strs);
    weir_conf_strv_free(o->meta_keys, o->nmeta);
    weir_conf_strv_free(o->meta_values, o->nmeta);
    free(o->net.ca_bundle);
    free(o->net.ca_dir);
    free(o->net.proxy);
    free(o->bucket);
    free(o->region);
    free(o->path);
    free(o->scheme);
    free(o->host);
    free(o->base_path);
    free(o->id);
    free(o);
}

const weir_output_ops_t weir_out_s3_ops = {
    .type = "s3",
    .create = s3_create,
    .start = s3_start,
    .emit = s3_emit,
    .flush = s3_flush,
    .stop = s3_stop,
    .destroy = s3_destroy,
};
