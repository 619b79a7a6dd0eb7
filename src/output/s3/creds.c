/* Where the S3 output's AWS credentials come from, in fluent-plugin-s3's order (s3-output.md
 * 1.2): assume role, static keys, a profile, web identity, instance profile (ECS or EC2
 * instance metadata), a shared credentials file, and with nothing configured the SDK's default
 * chain: environment, web identity from the environment, shared files, ECS, IMDS.
 *
 * A provider holds the current credentials and refreshes temporary ones when they come within
 * S3_CREDS_REFRESH_BEFORE seconds of expiring. Fetching blocks on HTTP, so it only ever runs
 * at start-up (before anything is accepted) or on worker threads; two locks keep the loop
 * thread from waiting behind a fetch: `fetch_lock` serialises fetches, `data_lock` only guards
 * the copy of the current credentials. Invariant: no secret, token or web identity token is
 * ever written to a log or an error message; messages name the source, never the value. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3_internal.h"
#include "weir/log.h"

#define CREDS_FILE_MAX (1024 * 1024) /* a credentials file or token larger than this is wrong */
#define IMDS_DEFAULT_HOST "169.254.169.254"
#define ECS_DEFAULT_HOST "169.254.170.2"
#define IMDS_TOKEN_TTL "21600" /* seconds, as the SDK asks */
#define STS_TIMEOUT_MS 10000
#define STS_API_VERSION "2011-06-15"

struct s3_provider {
    s3_cred_conf_t conf;
    const s3_net_opts_t *net;
    s3_provider_t *base; /* assume role: where the STS call's own credentials come from */
    uv_mutex_t fetch_lock, data_lock;
    s3_creds_t cur;
    bool have;
    bool stale;              /* invalidated: fetch on the next get */
    s3_cred_kind_t resolved; /* chain: the source that answered first */
    time_t retry_at;         /* after a failed refresh */
};

const char *s3_cred_kind_name(s3_cred_kind_t k)
{
    switch (k) {
    case S3_CRED_CHAIN:
        return "the default credential chain";
    case S3_CRED_STATIC:
        return "aws_key_id/aws_sec_key";
    case S3_CRED_ENV:
        return "the environment (AWS_ACCESS_KEY_ID)";
    case S3_CRED_SHARED:
        return "a shared credentials file";
    case S3_CRED_ASSUME_ROLE:
        return "STS AssumeRole";
    case S3_CRED_WEB_IDENTITY:
        return "STS AssumeRoleWithWebIdentity";
    case S3_CRED_INSTANCE:
        return "the instance profile";
    case S3_CRED_ECS:
        return "ECS container credentials";
    case S3_CRED_IMDS:
        return "EC2 instance metadata (IMDS)";
    }
    return "?";
}

void s3_cred_conf_free(s3_cred_conf_t *c)
{
    if (c->secret_key) memset(c->secret_key, 0, strlen(c->secret_key));
    char **all[] = {&c->access_key, &c->secret_key,   &c->profile,      &c->shared_path,
                    &c->role_arn,   &c->session_name, &c->policy,       &c->external_id,
                    &c->sts_region, &c->sts_proxy,    &c->sts_endpoint, &c->token_file,
                    &c->ip_address, &c->region};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        free(*all[i]);
    memset(c, 0, sizeof *c);
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static const char *env_first(const char *a, const char *b, const char *c)
{
    const char *v = env(a);
    if (!v && b) v = env(b);
    if (!v && c) v = env(c);
    return v;
}

/* Reads a whole small file. 1 = read, 0 = missing, -1 = error (err set). */
static int read_small_file(const char *path, weir_buf_t *out, weir_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return 0;
        weir_err_set(err, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char tmp[4096];
    size_t n;
    int rc = 1;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (out->len + n > CREDS_FILE_MAX) {
            weir_err_set(err, "%s is larger than %d bytes", path, CREDS_FILE_MAX);
            rc = -1;
            break;
        }
        weir_buf_append(out, tmp, n);
    }
    if (rc == 1 && ferror(f)) {
        weir_err_set(err, "cannot read %s: %s", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    return rc;
}

static void home_path(const char *rel, weir_buf_t *out)
{
    const char *home = env("HOME");
    weir_buf_printf(out, "%s/%s", home ? home : "", rel);
}

/* ---- environment and files ---------------------------------------------------------------- */

static int fetch_env(s3_creds_t *out, weir_err_t *err)
{
    const char *key = env_first("AWS_ACCESS_KEY_ID", "AMAZON_ACCESS_KEY_ID", "AWS_ACCESS_KEY");
    const char *sec =
        env_first("AWS_SECRET_ACCESS_KEY", "AMAZON_SECRET_ACCESS_KEY", "AWS_SECRET_KEY");
    if (!key || !sec) return 0;
    s3_creds_set(out, key, sec, env_first("AWS_SESSION_TOKEN", "AMAZON_SESSION_TOKEN", NULL), 0);
    return 1;
}

static int parse_file(const char *path, const char *profile, bool config_file, s3_creds_t *out,
                      weir_err_t *err)
{
    weir_buf_t text;
    weir_buf_init(&text);
    int r = read_small_file(path, &text, err);
    if (r == 1) {
        r = s3_creds_parse_ini(text.data ? text.data : "", text.len, profile, config_file, out,
                               err);
        if (r < 0) weir_err_prefix(err, "%s", path);
    }
    if (text.data) memset(text.data, 0, text.len);
    weir_buf_free(&text);
    return r;
}

/* 1 found, 0 not found (err says where we looked), -1 error. */
static int fetch_shared(const s3_cred_conf_t *c, s3_creds_t *out, weir_err_t *err)
{
    const char *profile =
        c->profile ? c->profile : env_first("AWS_PROFILE", "AWS_DEFAULT_PROFILE", NULL);
    if (!profile) profile = "default";
    weir_buf_t cred, conf;
    weir_buf_init(&cred);
    weir_buf_init(&conf);
    if (c->shared_path)
        weir_buf_printf(&cred, "%s", c->shared_path);
    else if (env("AWS_SHARED_CREDENTIALS_FILE"))
        weir_buf_printf(&cred, "%s", env("AWS_SHARED_CREDENTIALS_FILE"));
    else
        home_path(".aws/credentials", &cred);
    int r = parse_file(cred.data, profile, false, out, err);
    if (r == 0 && !c->shared_path) {
        /* the SDK also takes static keys from the config file's [profile NAME] */
        if (env("AWS_CONFIG_FILE"))
            weir_buf_printf(&conf, "%s", env("AWS_CONFIG_FILE"));
        else
            home_path(".aws/config", &conf);
        r = parse_file(conf.data, profile, true, out, err);
    }
    if (r == 0)
        weir_err_set(err, "profile '%s' not found in %s%s%s", profile, cred.data,
                     conf.data ? " or " : "", conf.data ? conf.data : "");
    weir_buf_free(&cred);
    weir_buf_free(&conf);
    return r;
}

/* ---- STS ---------------------------------------------------------------------------------- */

static void form_add(weir_buf_t *b, const char *k, const char *v)
{
    if (!v) return;
    if (b->len) weir_buf_putc(b, '&');
    s3_uri_encode(k, strlen(k), false, b);
    weir_buf_putc(b, '=');
    s3_uri_encode(v, strlen(v), false, b);
}

/* Splits "http://host:port/path" into the URL to call and the Host header. */
static void sts_target(const s3_cred_conf_t *c, weir_buf_t *url, weir_buf_t *host)
{
    const char *region = c->sts_region ? c->sts_region : c->region;
    if (c->sts_endpoint) {
        weir_buf_printf(url, "%s", c->sts_endpoint);
        const char *h = strstr(c->sts_endpoint, "://");
        h = h ? h + 3 : c->sts_endpoint;
        weir_buf_printf(host, "%.*s", (int)strcspn(h, "/"), h);
        if (!strchr(h, '/')) weir_buf_putc(url, '/');
    } else {
        const char *suffix = strncmp(region, "cn-", 3) == 0 ? "amazonaws.com.cn" : "amazonaws.com";
        weir_buf_printf(host, "sts.%s.%s", region, suffix);
        weir_buf_printf(url, "https://%s/", host->data);
    }
    weir_buf_putc(url, '\0');
    weir_buf_putc(host, '\0');
}

static int sts_call(const s3_cred_conf_t *c, const s3_net_opts_t *net, const char *body,
                    const s3_creds_t *base, s3_creds_t *out, weir_err_t *err)
{
    weir_buf_t url, host;
    weir_buf_init(&url);
    weir_buf_init(&host);
    s3_http_req_t r;
    s3_http_req_init(&r);
    int rc = -1;
    sts_target(c, &url, &host);
    r.url = weir_strdup(url.data);
    r.timeout_ms = STS_TIMEOUT_MS;
    r.connect_timeout_ms = STS_TIMEOUT_MS;
    r.proxy = c->sts_proxy;
    static const char ctype[] = "application/x-www-form-urlencoded; charset=utf-8";
    if (base) {
        s3_kv_t h[] = {{"content-type", ctype}};
        const char *region = c->sts_region ? c->sts_region : c->region;
        if (s3_sign_into(&r, "POST", host.data, "/", NULL, 0, h, 1, body, strlen(body), NULL,
                         region, "sts", base, err) != 0)
            goto out;
    } else {
        /* AssumeRoleWithWebIdentity is not signed: the token is the proof */
        s3_http_req_header(&r, "Content-Type", ctype);
        s3_http_req_header(&r, "Expect", NULL);
        r.method = "POST";
        r.body = body;
        r.body_len = strlen(body);
    }
    if (s3_http_perform(&r, net) != 0) {
        weir_err_set(err, "STS %s: %s", url.data, s3_http_error(&r));
        goto out;
    }
    if (r.status != 200) {
        weir_buf_t sum;
        weir_buf_init(&sum);
        s3_error_summary(r.resp.data, r.resp.len, &sum);
        weir_buf_putc(&sum, '\0');
        weir_err_set(err, "STS %s answered HTTP %ld%s%s", url.data, r.status,
                     sum.len > 1 ? ": " : "", sum.data);
        weir_buf_free(&sum);
        goto out;
    }
    rc = s3_creds_parse_sts(r.resp.data ? r.resp.data : "", r.resp.len, out, err);
out:
    if (r.resp.data) memset(r.resp.data, 0, r.resp.len);
    s3_http_req_reset(&r);
    weir_buf_free(&url);
    weir_buf_free(&host);
    return rc;
}

static const char *session_name(const s3_cred_conf_t *c, char *buf, size_t n)
{
    if (c->session_name) return c->session_name;
    snprintf(buf, n, "weir-%lld", (long long)time(NULL));
    return buf;
}

static void duration_text(const s3_cred_conf_t *c, char *buf, size_t n)
{
    snprintf(buf, n, "%lld", (long long)(c->duration > 0 ? c->duration : 3600));
}

static int fetch_assume_role(s3_provider_t *p, s3_creds_t *out, weir_err_t *err)
{
    s3_creds_t base = {0};
    if (s3_provider_get(p->base, &base, err) != 0) {
        weir_err_prefix(err, "AssumeRole base credentials");
        return -1;
    }
    const s3_cred_conf_t *c = &p->conf;
    char dur[32], sess[64];
    duration_text(c, dur, sizeof dur);
    weir_buf_t body;
    weir_buf_init(&body);
    form_add(&body, "Action", "AssumeRole");
    form_add(&body, "DurationSeconds", dur);
    form_add(&body, "ExternalId", c->external_id);
    form_add(&body, "Policy", c->policy);
    form_add(&body, "RoleArn", c->role_arn);
    form_add(&body, "RoleSessionName", session_name(c, sess, sizeof sess));
    form_add(&body, "Version", STS_API_VERSION);
    weir_buf_putc(&body, '\0');
    int rc = sts_call(c, p->net, body.data, &base, out, err) == 0 ? 1 : -1;
    weir_buf_free(&body);
    s3_creds_free(&base);
    return rc;
}

/* Web identity from the configuration or (chain) from AWS_ROLE_ARN and
 * AWS_WEB_IDENTITY_TOKEN_FILE. 0 when the chain's variables are not set. */
static int fetch_web_identity(const s3_cred_conf_t *conf, const s3_net_opts_t *net, bool from_env,
                              s3_creds_t *out, weir_err_t *err)
{
    s3_cred_conf_t c = *conf;
    if (from_env) {
        c.role_arn = (char *)env("AWS_ROLE_ARN");
        c.token_file = (char *)env("AWS_WEB_IDENTITY_TOKEN_FILE");
        c.session_name = (char *)env("AWS_ROLE_SESSION_NAME");
        c.sts_endpoint = (char *)env_first("AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL", NULL);
        c.policy = NULL;
        c.duration = 0;
        if (!c.role_arn || !c.token_file) return 0;
    }
    weir_buf_t token;
    weir_buf_init(&token);
    int r = read_small_file(c.token_file, &token, err);
    if (r <= 0) {
        if (r == 0) weir_err_set(err, "web identity token file %s does not exist", c.token_file);
        weir_buf_free(&token);
        return -1;
    }
    while (token.len && (token.data[token.len - 1] == '\n' || token.data[token.len - 1] == '\r'))
        token.len--;
    weir_buf_putc(&token, '\0');
    char dur[32], sess[64];
    duration_text(&c, dur, sizeof dur);
    weir_buf_t body;
    weir_buf_init(&body);
    form_add(&body, "Action", "AssumeRoleWithWebIdentity");
    form_add(&body, "DurationSeconds", dur);
    form_add(&body, "Policy", c.policy);
    form_add(&body, "RoleArn", c.role_arn);
    form_add(&body, "RoleSessionName", session_name(&c, sess, sizeof sess));
    form_add(&body, "Version", STS_API_VERSION);
    form_add(&body, "WebIdentityToken", token.data);
    weir_buf_putc(&body, '\0');
    int rc = sts_call(&c, net, body.data, NULL, out, err) == 0 ? 1 : -1;
    memset(token.data, 0, token.len);
    memset(body.data, 0, body.len);
    weir_buf_free(&token);
    weir_buf_free(&body);
    return rc;
}

/* ---- ECS and EC2 instance metadata --------------------------------------------------------- */

static void local_request(s3_http_req_t *r, const s3_cred_conf_t *c, const char *method)
{
    r->method = method;
    r->no_proxy = true;
    r->connect_timeout_ms = (long)((c->open_timeout > 0 ? c->open_timeout : 1) * 1000);
    r->timeout_ms =
        r->connect_timeout_ms + (long)((c->read_timeout > 0 ? c->read_timeout : 1) * 1000);
}

static bool ecs_configured(void)
{
    return env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") ||
           env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
}

static int fetch_ecs(const s3_cred_conf_t *c, s3_creds_t *out, weir_err_t *err)
{
    const char *rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if (!rel && !full) return 0;
    s3_http_req_t r;
    s3_http_req_init(&r);
    weir_buf_t url, tok;
    weir_buf_init(&url);
    weir_buf_init(&tok);
    int rc = -1;
    if (rel) {
        weir_buf_printf(&url, "http://%s", c->ip_address ? c->ip_address : ECS_DEFAULT_HOST);
        if (c->port > 0) weir_buf_printf(&url, ":%lld", (long long)c->port);
        weir_buf_printf(&url, "%s%s", rel[0] == '/' ? "" : "/", rel);
    } else {
        weir_buf_printf(&url, "%s", full);
    }
    r.url = weir_strdup(url.data);
    local_request(&r, c, "GET");
    if (env("AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
        weir_buf_printf(&tok, "%s", env("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
    } else if (env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")) {
        if (read_small_file(env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"), &tok, err) < 0) goto out;
        while (tok.len && (tok.data[tok.len - 1] == '\n' || tok.data[tok.len - 1] == '\r'))
            tok.len--;
    }
    if (tok.len) {
        weir_buf_putc(&tok, '\0');
        s3_http_req_header(&r, "Authorization", tok.data);
    }
    int attempts = c->retries > 0 ? (int)c->retries + 1 : 5;
    for (int i = 0; i < attempts; i++) {
        if (i) usleep((useconds_t)(100000 * i));
        if (s3_http_perform(&r, NULL) == 0 && r.status == 200) break;
    }
    if (r.status != 200) {
        if (r.status)
            weir_err_set(err, "ECS credentials endpoint %s answered HTTP %ld", url.data, r.status);
        else
            weir_err_set(err, "ECS credentials endpoint %s: %s", url.data, s3_http_error(&r));
        goto out;
    }
    rc = s3_creds_parse_json(r.resp.data ? r.resp.data : "", r.resp.len, out, err) == 0 ? 1 : -1;
    if (rc < 0) weir_err_prefix(err, "ECS credentials endpoint %s", url.data);
out:
    if (tok.data) memset(tok.data, 0, tok.len);
    if (r.resp.data) memset(r.resp.data, 0, r.resp.len);
    s3_http_req_reset(&r);
    weir_buf_free(&url);
    weir_buf_free(&tok);
    return rc;
}

static bool env_true(const char *name)
{
    const char *v = env(name);
    return v && strcasecmp(v, "true") == 0;
}

/* One IMDS GET (or the token PUT). Returns the status, 0 on transport errors. */
static long imds_call(const s3_cred_conf_t *c, const char *base, const char *method,
                      const char *path, const char *token, weir_buf_t *resp, weir_err_t *err)
{
    s3_http_req_t r;
    s3_http_req_init(&r);
    weir_buf_t url;
    weir_buf_init(&url);
    weir_buf_printf(&url, "%s%s", base, path);
    r.url = weir_strdup(url.data);
    local_request(&r, c, method);
    if (strcmp(method, "PUT") == 0)
        s3_http_req_header(&r, "x-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL);
    if (token) s3_http_req_header(&r, "x-aws-ec2-metadata-token", token);
    long st = 0;
    int attempts = c->retries > 0 ? (int)c->retries + 1 : 2;
    for (int i = 0; i < attempts; i++) {
        if (i) usleep((useconds_t)(1200000.0 * i / 2)); /* short: the SDK uses 1.2^n s */
        if (s3_http_perform(&r, NULL) == 0 && r.status < 500) break;
    }
    st = r.status;
    if (!st) weir_err_set(err, "instance metadata %s: %s", url.data, s3_http_error(&r));
    resp->len = 0;
    weir_buf_append(resp, r.resp.data ? r.resp.data : "", r.resp.len);
    weir_buf_putc(resp, '\0'); /* kept NUL-terminated for the role name lookup */
    resp->len--;
    if (r.resp.data) memset(r.resp.data, 0, r.resp.len);
    s3_http_req_reset(&r);
    weir_buf_free(&url);
    return st;
}

static int fetch_imds(const s3_cred_conf_t *c, bool chain, s3_creds_t *out, weir_err_t *err)
{
    if (chain && env_true("AWS_EC2_METADATA_DISABLED")) return 0;
    weir_buf_t base, resp, token, path;
    weir_buf_init(&base);
    weir_buf_init(&resp);
    weir_buf_init(&token);
    weir_buf_init(&path);
    int rc = -1;
    if (c->ip_address || c->port > 0)
        weir_buf_printf(&base, "http://%s:%lld", c->ip_address ? c->ip_address : IMDS_DEFAULT_HOST,
                        (long long)(c->port > 0 ? c->port : 80));
    else if (env("AWS_EC2_METADATA_SERVICE_ENDPOINT"))
        weir_buf_printf(&base, "%s", env("AWS_EC2_METADATA_SERVICE_ENDPOINT"));
    else
        weir_buf_printf(&base, "http://%s", IMDS_DEFAULT_HOST);
    while (base.len && base.data[base.len - 1] == '/')
        base.len--;
    weir_buf_putc(&base, '\0');

    /* IMDSv2: a session token first; IMDSv1 (no token) when the endpoint cannot give one */
    long st = imds_call(c, base.data, "PUT", "/latest/api/token", NULL, &token, err);
    if (st == 200) {
        weir_buf_putc(&token, '\0');
    } else if (st == 400) {
        weir_err_set(err, "instance metadata refused a session token (HTTP 400)");
        goto out;
    } else if (env_true("AWS_EC2_METADATA_V1_DISABLED")) {
        if (st) weir_err_set(err, "instance metadata token request answered HTTP %ld", st);
        weir_err_prefix(err, "IMDSv1 fallback disabled by AWS_EC2_METADATA_V1_DISABLED");
        goto out;
    } else {
        weir_debug("s3: IMDSv2 token unavailable (%s), using IMDSv1",
                   st ? "HTTP error" : "no answer");
        weir_buf_free(&token);
    }
    const char *tok = token.data;
    st = imds_call(c, base.data, "GET", "/latest/meta-data/iam/security-credentials/", tok, &resp,
                   err);
    if (st != 200) {
        if (st) weir_err_set(err, "instance metadata role lookup answered HTTP %ld", st);
        goto out;
    }
    size_t rl = strcspn(resp.data, "\r\n");
    if (rl == 0) {
        weir_err_set(err, "instance metadata lists no IAM role (is an instance profile "
                          "attached?)");
        goto out;
    }
    weir_buf_printf(&path, "/latest/meta-data/iam/security-credentials/%.*s", (int)rl, resp.data);
    st = imds_call(c, base.data, "GET", path.data, tok, &resp, err);
    if (st != 200) {
        if (st) weir_err_set(err, "instance metadata credentials answered HTTP %ld", st);
        goto out;
    }
    rc = s3_creds_parse_json(resp.data ? resp.data : "", resp.len, out, err) == 0 ? 1 : -1;
    if (rc < 0) weir_err_prefix(err, "instance metadata");
out:
    if (token.data) memset(token.data, 0, token.len);
    if (resp.data) memset(resp.data, 0, resp.len);
    weir_buf_free(&base);
    weir_buf_free(&resp);
    weir_buf_free(&token);
    weir_buf_free(&path);
    return rc;
}

/* ---- the provider ------------------------------------------------------------------------- */

/* One source. 1 = credentials, 0 = not available here (chain goes on), -1 = error. */
static int fetch_kind(s3_provider_t *p, s3_cred_kind_t k, bool chain, s3_creds_t *out,
                      weir_err_t *err)
{
    const s3_cred_conf_t *c = &p->conf;
    switch (k) {
    case S3_CRED_STATIC:
        s3_creds_set(out, c->access_key, c->secret_key, NULL, 0);
        return 1;
    case S3_CRED_ENV:
        return fetch_env(out, err);
    case S3_CRED_SHARED: {
        int r = fetch_shared(c, out, err);
        return r == 0 && !chain ? -1 : r;
    }
    case S3_CRED_ASSUME_ROLE:
        return fetch_assume_role(p, out, err);
    case S3_CRED_WEB_IDENTITY:
        return fetch_web_identity(c, p->net, chain, out, err);
    case S3_CRED_INSTANCE:
        return ecs_configured() ? fetch_ecs(c, out, err) : fetch_imds(c, false, out, err);
    case S3_CRED_ECS:
        return fetch_ecs(c, out, err);
    case S3_CRED_IMDS:
        return fetch_imds(c, chain, out, err);
    case S3_CRED_CHAIN:
        break;
    }
    return -1;
}

static int fetch_chain(s3_provider_t *p, s3_creds_t *out, weir_err_t *err)
{
    static const s3_cred_kind_t order[] = {S3_CRED_ENV, S3_CRED_WEB_IDENTITY, S3_CRED_SHARED,
                                           S3_CRED_ECS, S3_CRED_IMDS};
    if (p->resolved != S3_CRED_CHAIN) return fetch_kind(p, p->resolved, true, out, err);
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        weir_err_t why = {{0}};
        int r = fetch_kind(p, order[i], true, out, &why);
        if (r == 1) {
            p->resolved = order[i];
            return 1;
        }
        if (r < 0) {
            weir_err_set(err, "%s: %s", s3_cred_kind_name(order[i]), why.msg);
            return -1;
        }
    }
    weir_err_set(err, "no AWS credentials found: set aws_key_id/aws_sec_key, a profile, "
                      "AWS_ACCESS_KEY_ID, or run with an instance or container role");
    return -1;
}

s3_provider_t *s3_provider_new(s3_cred_conf_t *conf, const s3_net_opts_t *net)
{
    s3_provider_t *p = weir_calloc(1, sizeof *p);
    p->conf = *conf;
    memset(conf, 0, sizeof *conf);
    p->net = net;
    p->resolved = S3_CRED_CHAIN;
    uv_mutex_init(&p->fetch_lock);
    uv_mutex_init(&p->data_lock);
    if (p->conf.kind == S3_CRED_ASSUME_ROLE) {
        /* the STS call's own credentials: the static keys when given, else the chain */
        s3_cred_conf_t b = {0};
        b.kind = p->conf.access_key && p->conf.secret_key ? S3_CRED_STATIC : S3_CRED_CHAIN;
        if (b.kind == S3_CRED_STATIC) {
            b.access_key = weir_strdup(p->conf.access_key);
            b.secret_key = weir_strdup(p->conf.secret_key);
        }
        b.region = weir_strdup(p->conf.region);
        p->base = s3_provider_new(&b, net);
    }
    return p;
}

void s3_provider_free(s3_provider_t *p)
{
    if (!p) return;
    s3_provider_free(p->base);
    s3_creds_free(&p->cur);
    s3_cred_conf_free(&p->conf);
    uv_mutex_destroy(&p->fetch_lock);
    uv_mutex_destroy(&p->data_lock);
    free(p);
}

static bool fresh(const s3_provider_t *p, time_t now)
{
    if (!p->have || p->stale) return false;
    return p->cur.expiration == 0 || p->cur.expiration - now > S3_CREDS_REFRESH_BEFORE;
}

static bool usable(const s3_provider_t *p, time_t now)
{
    return p->have && (p->cur.expiration == 0 || p->cur.expiration > now + 5);
}

static void log_fetched(const s3_provider_t *p, const s3_creds_t *c)
{
    s3_cred_kind_t k = p->conf.kind == S3_CRED_CHAIN ? p->resolved : p->conf.kind;
    if (c->expiration) {
        char when[32];
        time_t t = (time_t)c->expiration;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        weir_info("s3: credentials from %s (temporary, expire %s)", s3_cred_kind_name(k), when);
    } else {
        weir_info("s3: credentials from %s", s3_cred_kind_name(k));
    }
}

int s3_provider_get(s3_provider_t *p, s3_creds_t *out, weir_err_t *err)
{
    time_t now = time(NULL);
    uv_mutex_lock(&p->data_lock);
    bool ok = fresh(p, now);
    if (ok) s3_creds_copy(out, &p->cur);
    uv_mutex_unlock(&p->data_lock);
    if (ok) return 0;

    uv_mutex_lock(&p->fetch_lock);
    int rc = 0;
    now = time(NULL);
    /* another thread may have refreshed while this one waited */
    uv_mutex_lock(&p->data_lock);
    ok = fresh(p, now) || (now < p->retry_at && usable(p, now) && !p->stale);
    if (ok) s3_creds_copy(out, &p->cur);
    uv_mutex_unlock(&p->data_lock);
    if (ok) goto done;

    s3_creds_t got = {0};
    weir_err_t why = {{0}};
    int r = p->conf.kind == S3_CRED_CHAIN ? fetch_chain(p, &got, &why)
                                          : fetch_kind(p, p->conf.kind, false, &got, &why);
    uv_mutex_lock(&p->data_lock);
    if (r == 1) {
        s3_creds_free(&p->cur);
        p->cur = got;
        p->have = true;
        p->stale = false;
        p->retry_at = 0;
        s3_creds_copy(out, &p->cur);
        uv_mutex_unlock(&p->data_lock);
        log_fetched(p, out);
        goto done;
    }
    s3_creds_free(&got);
    p->retry_at = now + S3_CREDS_RETRY_AFTER;
    if (usable(p, now) && !p->stale) {
        s3_creds_copy(out, &p->cur);
        uv_mutex_unlock(&p->data_lock);
        weir_warn("s3: refreshing credentials failed (%s); keeping the current ones until they "
                  "expire",
                  why.msg[0] ? why.msg : "no credentials");
        goto done;
    }
    uv_mutex_unlock(&p->data_lock);
    weir_err_set(err, "cannot get AWS credentials: %s",
                 why.msg[0] ? why.msg : "no source answered");
    rc = -1;
done:
    uv_mutex_unlock(&p->fetch_lock);
    return rc;
}

void s3_provider_invalidate(s3_provider_t *p)
{
    uv_mutex_lock(&p->data_lock);
    if (p->cur.expiration || p->conf.kind == S3_CRED_CHAIN) p->stale = true;
    p->retry_at = 0;
    uv_mutex_unlock(&p->data_lock);
    if (p->base) s3_provider_invalidate(p->base);
}
