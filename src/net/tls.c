/* TLS for the listeners, with Fluentd's <transport tls> semantics: the options, the server
 * context (certificate chain, encrypted key, client-certificate checks, versions, ciphers,
 * ALPN) and the per-connection session over memory BIOs.
 *
 * Each session runs on the loop thread. Ciphertext read from the socket goes into the read
 * BIO; whatever OpenSSL writes to the write BIO (handshake flights, records, alerts,
 * close_notify) leaves as one uv_write as soon as the call that produced it returns. So a
 * weir_conn_write is one SSL_write and one socket write, and nothing is ever written to the
 * socket that did not come out of OpenSSL.
 *
 * Deliberate difference from Fluentd: client certificates are verified against ca_path only.
 * Fluentd (through Ruby's set_params) also trusts the system CAs, so any publicly issued
 * certificate with clientAuth would pass there; here it does not. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "net_internal.h"

/* Without version, min_version and max_version: TLS 1.2 and 1.3. Fluentd pins 1.2 (its
 * `version` default); weir does not refuse 1.3, and `version TLSv1_2` still pins 1.2. */
#define TLS_DEFAULT_MIN_VERSION "TLSv1_2"
#define TLS_DEFAULT_MAX_VERSION "TLSv1_3"
/* TLS 1.2 suites without `ciphers`: forward secrecy (ECDHE) and AEAD only, so no static-RSA key
 * exchange and no CBC. Fluentd's "ALL:!aNULL:!eNULL:!SSLv2" allows both; an operator who needs
 * them can still write that in `ciphers`. Every TLS 1.3 suite is ECDHE and AEAD. */
#define TLS_DEFAULT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
/* TLS 1.3 suites, set explicitly so that a system openssl.cnf cannot add weaker ones (CCM_8);
 * `ciphers` is the TLS 1.2 list, as in Fluentd. */
#define TLS_13_SUITES "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
#define TLS_SELF_SIGNED_BITS 2048        /* Fluentd's generate_cert_key_length */
#define TLS_SELF_SIGNED_DAYS (10L * 365) /* Fluentd: 10 years */
#define TLS_FAIL_LOG_INTERVAL_MS 100     /* at most 10 handshake warnings a second */
#define TLS_WBIO_KEEP (64 * 1024) /* a write BIO larger than this is replaced after a flush */

/* Decrypted records are at most 16 KiB; SSL_read fills this one record at a time. */
static _Thread_local char g_plain[16 * 1024];
static _Thread_local weir_ratelimit_t g_fail_rl = {.interval_ms = TLS_FAIL_LOG_INTERVAL_MS};

/* ---- versions -------------------------------------------------------------------------- */

static const struct {
    const char *name;
    int version;
} tls_versions[] = {
    {"TLSv1", TLS1_VERSION},     {"TLS1", TLS1_VERSION},      {"TLSv1_1", TLS1_1_VERSION},
    {"TLS1_1", TLS1_1_VERSION},  {"TLSv1_2", TLS1_2_VERSION}, {"TLS1_2", TLS1_2_VERSION},
    {"TLSv1_3", TLS1_3_VERSION}, {"TLS1_3", TLS1_3_VERSION},
};

int weir_tls_version_parse(const char *name)
{
    for (size_t i = 0; i < sizeof tls_versions / sizeof tls_versions[0]; i++)
        if (strcmp(name, tls_versions[i].name) == 0) return tls_versions[i].version;
    return 0;
}

#define TLS_VERSION_CHOICES "TLSv1_1, TLSv1_2 or TLSv1_3 (also TLS1_2 style)"

/* ---- <transport tls> ------------------------------------------------------------------- */

static const struct {
    const char *key;
    size_t off;
} tls_str_params[] = {
    {"cert_path", offsetof(weir_tls_opts_t, cert_path)},
    {"private_key_path", offsetof(weir_tls_opts_t, private_key_path)},
    {"private_key_passphrase", offsetof(weir_tls_opts_t, private_key_passphrase)},
    {"ca_path", offsetof(weir_tls_opts_t, ca_path)},
    {"version", offsetof(weir_tls_opts_t, version)},
    {"min_version", offsetof(weir_tls_opts_t, min_version)},
    {"max_version", offsetof(weir_tls_opts_t, max_version)},
    {"ciphers", offsetof(weir_tls_opts_t, ciphers)},
};

static int conf_check_version(weir_conf_section_t *tr, const char *key, const char *value,
                              weir_err_t *err)
{
    if (!value || weir_tls_version_parse(value)) return 0;
    weir_conf_errorf(err, weir_conf_find(tr, key), "%s: expected %s, got '%s'", key,
                     TLS_VERSION_CHOICES, value);
    return -1;
}

static int conf_read_params(weir_tls_opts_t *o, weir_conf_section_t *tr, weir_err_t *err)
{
    for (size_t i = 0; i < sizeof tls_str_params / sizeof tls_str_params[0]; i++) {
        const char *v = NULL;
        if (weir_conf_get_str(tr, tls_str_params[i].key, &v, err) < 0) return -1;
        /* an empty value (a template's `ca_path ""`) means unset */
        if (v && *v) *(char **)((char *)o + tls_str_params[i].off) = weir_strdup(v);
    }
    if (weir_conf_get_bool(tr, "client_cert_auth", &o->client_cert_auth, err) < 0) return -1;
    if (weir_conf_get_bool(tr, "insecure", &o->insecure, err) < 0) return -1;
    return 0;
}

static int conf_validate(const weir_tls_opts_t *o, weir_conf_section_t *tr, weir_err_t *err)
{
    if (conf_check_version(tr, "version", o->version, err) ||
        conf_check_version(tr, "min_version", o->min_version, err) ||
        conf_check_version(tr, "max_version", o->max_version, err))
        return -1;
    if (!o->min_version != !o->max_version) {
        const char *set = o->min_version ? "min_version" : "max_version";
        weir_conf_errorf(err, weir_conf_find(tr, set),
                         "%s: set min_version and max_version together (or neither, and "
                         "`version` alone decides)",
                         set);
        return -1;
    }
    if (!o->cert_path && !o->insecure) {
        weir_conf_section_errorf(err, tr,
                                 "<transport tls> needs cert_path and private_key_path (or "
                                 "insecure true for a generated self-signed certificate)");
        return -1;
    }
    if (o->cert_path && !o->private_key_path) {
        weir_conf_section_errorf(err, tr, "<transport tls>: cert_path needs private_key_path");
        return -1;
    }
    if (o->client_cert_auth && !o->ca_path) {
        weir_conf_errorf(err, weir_conf_find(tr, "client_cert_auth"),
                         "client_cert_auth needs ca_path: client certificates are verified "
                         "against the CAs in ca_path only");
        return -1;
    }
    return 0;
}

int weir_tls_opts_from_conf(weir_tls_opts_t *opts, weir_conf_section_t *transport, weir_err_t *err)
{
    memset(opts, 0, sizeof *opts);
    if (!transport) return 0;
    weir_conf_section_use(transport);
    const char *proto = transport->arg ? transport->arg : "";
    if (proto[0] == '\0' || strcmp(proto, "tcp") == 0) return 0; /* Fluentd's default */
    if (strcmp(proto, "tls") != 0) {
        weir_conf_section_errorf(err, transport, "<transport %s>: expected tcp or tls", proto);
        return -1;
    }
    opts->enabled = true;
    if (conf_read_params(opts, transport, err) != 0) return -1;
    return conf_validate(opts, transport, err);
}

void weir_tls_opts_free(weir_tls_opts_t *opts)
{
    if (!opts) return;
    if (opts->private_key_passphrase)
        OPENSSL_cleanse(opts->private_key_passphrase, strlen(opts->private_key_passphrase));
    for (size_t i = 0; i < sizeof tls_str_params / sizeof tls_str_params[0]; i++)
        free(*(char **)((char *)opts + tls_str_params[i].off));
    memset(opts, 0, sizeof *opts);
}

/* ---- context --------------------------------------------------------------------------- */

/* OpenSSL's reason for the oldest error on its queue ("bad decrypt"), which is the specific
 * one; the later entries only say which layer gave up. Clears the queue. */
static void tls_err_reason(char *out, size_t n)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        snprintf(out, n, "%s", r);
    else if (e)
        ERR_error_string_n(e, out, n);
    else
        snprintf(out, n, "unknown error");
    ERR_clear_error();
}

static int check_readable(const char *what, const char *path, weir_err_t *err)
{
    FILE *f = fopen(path, "r");
    if (f) {
        fclose(f);
        return 0;
    }
    weir_err_set(err, "cannot read %s %s: %s", what, path, strerror(errno));
    return -1;
}

static int ctx_set_versions(SSL_CTX *ctx, const weir_tls_opts_t *o, weir_err_t *err)
{
    /* Fluentd: min_version and max_version come together; `version` alone pins both */
    const char *minv = o->min_version ? o->min_version
                       : o->version   ? o->version
                                      : TLS_DEFAULT_MIN_VERSION;
    const char *maxv = o->max_version ? o->max_version
                       : o->version   ? o->version
                                      : TLS_DEFAULT_MAX_VERSION;
    const char *names[] = {minv, maxv};
    for (int i = 0; i < 2; i++) {
        if (weir_tls_version_parse(names[i])) continue;
        weir_err_set(err, "unknown TLS version '%s': expected %s", names[i], TLS_VERSION_CHOICES);
        return -1;
    }
    int lo = weir_tls_version_parse(minv), hi = weir_tls_version_parse(maxv);
    if (lo > hi) {
        weir_err_set(err, "min_version %s is above max_version %s", minv, maxv);
        return -1;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, lo) || !SSL_CTX_set_max_proto_version(ctx, hi)) {
        char why[256];
        tls_err_reason(why, sizeof why);
        weir_err_set(err, "cannot set TLS versions %s..%s: %s", minv, maxv, why);
        return -1;
    }
    return 0;
}

static int ctx_set_ciphers(SSL_CTX *ctx, const weir_tls_opts_t *o, weir_err_t *err)
{
    const char *ciphers = o->ciphers ? o->ciphers : TLS_DEFAULT_CIPHERS;
    if (SSL_CTX_set_cipher_list(ctx, ciphers) == 1 &&
        SSL_CTX_set_ciphersuites(ctx, TLS_13_SUITES) == 1)
        return 0;
    char why[256];
    tls_err_reason(why, sizeof why);
    weir_err_set(err, "ciphers '%s': %s", ciphers, why);
    return -1;
}

typedef struct tls_pass {
    const char *pass;
    bool asked;
} tls_pass_t;

/* Gives OpenSSL the passphrase. Without this callback OpenSSL would prompt on the terminal. */
static int tls_pass_cb(char *buf, int size, int rwflag, void *u)
{
    tls_pass_t *p = u;
    p->asked = true;
    if (!p->pass) return -1;
    size_t n = strlen(p->pass);
    if (size < 0 || n > (size_t)size) return -1;
    memcpy(buf, p->pass, n);
    return (int)n;
}

EVP_PKEY *weir_read_private_key(const char *path, const char *passphrase, weir_err_t *err)
{
    if (check_readable("private key", path, err) != 0) return NULL;
    BIO *bio = BIO_new_file(path, "r");
    tls_pass_t pass = {.pass = passphrase};
    /* PEM_read_bio_PrivateKey reads legacy encrypted PEM (Proc-Type/DEK-Info) and PKCS#8
     * "ENCRYPTED PRIVATE KEY" alike, as Ruby's OpenSSL::PKey.read does for Fluentd */
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, tls_pass_cb, &pass) : NULL;
    BIO_free(bio);
    if (key) return key;
    char why[256];
    tls_err_reason(why, sizeof why);
    const char *hint = "";
    if (pass.asked)
        hint = passphrase ? " (wrong private_key_passphrase?)"
                          : " (the key is encrypted: set private_key_passphrase)";
    weir_err_set(err, "cannot read private key %s: %s%s", path, why, hint);
    return NULL;
}

static int ctx_load_identity(SSL_CTX *ctx, const weir_tls_opts_t *o, weir_err_t *err)
{
    char why[256];
    if (check_readable("certificate", o->cert_path, err) != 0) return -1;
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_path) != 1) {
        tls_err_reason(why, sizeof why);
        weir_err_set(err, "cannot read certificate %s: %s", o->cert_path, why);
        return -1;
    }
    if (!o->private_key_path) {
        weir_err_set(err, "cert_path %s needs private_key_path", o->cert_path);
        return -1;
    }
    EVP_PKEY *key = weir_read_private_key(o->private_key_path, o->private_key_passphrase, err);
    if (!key) return -1;
    int ok = SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(key);
    if (ok) return 0;
    tls_err_reason(why, sizeof why);
    weir_err_set(err, "private key %s does not match certificate %s: %s", o->private_key_path,
                 o->cert_path, why);
    return -1;
}

/* Fluentd's `insecure` with no cert_path: a self-signed RSA certificate made at start-up. */
static int ctx_self_signed(SSL_CTX *ctx, weir_err_t *err)
{
    int rc = -1;
    X509 *x = NULL;
    BIGNUM *serial = NULL;
    EVP_PKEY *key = EVP_RSA_gen(TLS_SELF_SIGNED_BITS);
    if (!key) goto err;
    x = X509_new();
    serial = BN_new();
    if (!x || !serial || !BN_rand(serial, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY)) goto err;
    char host[256] = "weir";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "weir");
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_set_version(x, 2) || !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), TLS_SELF_SIGNED_DAYS * 86400) ||
        !X509_set_pubkey(x, key) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (unsigned char *)host, -1, -1, 0) ||
        !X509_set_issuer_name(x, name) || !X509_sign(x, key, EVP_sha256()))
        goto err;
    if (SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1) goto err;
    weir_warn("tls: insecure: no cert_path, using a generated self-signed certificate (CN=%s); "
              "clients cannot verify this server",
              host);
    rc = 0;
err:
    if (rc != 0) {
        char why[256];
        tls_err_reason(why, sizeof why);
        weir_err_set(err, "cannot generate a self-signed certificate: %s", why);
    }
    BN_free(serial);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

static int ctx_set_client_auth(SSL_CTX *ctx, const weir_tls_opts_t *o, weir_err_t *err)
{
    if (o->ca_path) {
        if (check_readable("CA file", o->ca_path, err) != 0) return -1;
        if (SSL_CTX_load_verify_locations(ctx, o->ca_path, NULL) != 1) {
            char why[256];
            tls_err_reason(why, sizeof why);
            weir_err_set(err, "cannot read CA file %s: %s", o->ca_path, why);
            return -1;
        }
    }
    if (!o->client_cert_auth) return 0; /* VERIFY_NONE: no certificate is even requested */
    if (!o->ca_path) {
        weir_err_set(err, "client_cert_auth needs ca_path: client certificates are verified "
                          "against the CAs in ca_path only");
        return -1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    /* a client certificate whose EKU lacks clientAuth is refused */
    if (SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) != 1) {
        char why[256];
        tls_err_reason(why, sizeof why);
        weir_err_set(err, "cannot require the sslclient purpose: %s", why);
        return -1;
    }
    return 0;
}

/* HTTP/1.1 when the client offers it, else no ALPN at all: never h2, which the HTTP input
 * does not speak (Go clients offer "h2,http/1.1" and fall back when the server picks 1.1). */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg)
{
    static const char http11[] = "http/1.1";
    unsigned int i = 0;
    while (i < inlen) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen) break;
        if (n == sizeof http11 - 1 && memcmp(in + i + 1, http11, n) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

weir_tls_ctx_t *weir_tls_ctx_new(const weir_tls_opts_t *opts, weir_err_t *err)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        char why[256];
        tls_err_reason(why, sizeof why);
        weir_err_set(err, "cannot create a TLS context: %s", why);
        return NULL;
    }
    if (ctx_set_versions(ctx, opts, err) != 0 || ctx_set_ciphers(ctx, opts, err) != 0) goto err;
    if (opts->cert_path) {
        if (ctx_load_identity(ctx, opts, err) != 0) goto err;
    } else if (opts->insecure) {
        if (ctx_self_signed(ctx, err) != 0) goto err;
    } else {
        weir_err_set(err, "TLS needs cert_path and private_key_path (or insecure true for a "
                          "generated self-signed certificate)");
        goto err;
    }
    if (ctx_set_client_auth(ctx, opts, err) != 0) goto err;
    /* No session resumption (Fluentd has none either), no renegotiation (a CPU sink). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* idle keepalive connections give their 34 KiB of record buffers back */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
    weir_tls_ctx_t *t = weir_calloc(1, sizeof *t);
    t->ctx = ctx;
    return t;
err:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

/* Accepts a chain of one self-signed certificate (tls_allow_self_signed_cert), nothing
 * else that fails. */
static int tls_self_signed_ok(int ok, X509_STORE_CTX *x)
{
    int e = X509_STORE_CTX_get_error(x);
    return ok || e == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
           e == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN;
}

SSL_CTX *weir_tls_client_ctx_new(const weir_tls_opts_t *opts, char *const *ca_paths, size_t n_ca,
                                 bool allow_self_signed, weir_err_t *err)
{
    ERR_clear_error();
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        tls_err_reason(why, sizeof why);
        weir_err_set(err, "cannot create a TLS context: %s", why);
        return NULL;
    }
    if (ctx_set_versions(ctx, opts, err) != 0 || ctx_set_ciphers(ctx, opts, err) != 0) goto err;
    if (opts->cert_path && ctx_load_identity(ctx, opts, err) != 0) goto err;
    for (size_t i = 0; i < n_ca; i++) {
        if (check_readable("CA certificate", ca_paths[i], err) != 0) goto err;
        if (SSL_CTX_load_verify_locations(ctx, ca_paths[i], NULL) != 1) {
            tls_err_reason(why, sizeof why);
            weir_err_set(err, "cannot read CA certificate %s: %s", ca_paths[i], why);
            goto err;
        }
    }
    if (n_ca == 0) SSL_CTX_set_default_verify_paths(ctx);
    SSL_CTX_set_verify(ctx, opts->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
                       allow_self_signed ? tls_self_signed_ok : NULL);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    return ctx;
err:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

void weir_tls_ctx_free(weir_tls_ctx_t *ctx)
{
    if (!ctx) return;
    SSL_CTX_free(ctx->ctx); /* live sessions hold their own reference */
    free(ctx);
}

/* ---- sessions -------------------------------------------------------------------------- */

int net_tls_session_new(weir_conn_t *c, weir_tls_ctx_t *ctx)
{
    SSL *ssl = SSL_new(ctx->ctx);
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    if (!ssl || !rbio || !wbio) {
        SSL_free(ssl);
        BIO_free(rbio);
        BIO_free(wbio);
        ERR_clear_error();
        return -1;
    }
    /* an empty read BIO means "wait for more", never end of stream */
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_accept_state(ssl);
    c->ssl = ssl;
    c->rbio = rbio;
    c->wbio = wbio;
    return 0;
}

/* Sends everything OpenSSL wrote since the last flush as one write. A memory BIO keeps its
 * largest allocation, so after a big write the connection gets a fresh one rather than
 * holding megabytes while idle. */
static int tls_flush(weir_conn_t *c, size_t accounted)
{
    BUF_MEM *bm = NULL;
    BIO_get_mem_ptr(c->wbio, &bm);
    if (!bm || bm->length == 0) return 0;
    int rc = net_conn_send(c, bm->data, bm->length, accounted);
    if (bm->max > TLS_WBIO_KEEP) {
        BIO *fresh = BIO_new(BIO_s_mem());
        if (fresh) {
            SSL_set0_wbio(c->ssl, fresh); /* frees the old one */
            c->wbio = fresh;
            return rc;
        }
    }
    (void)BIO_reset(c->wbio);
    return rc;
}

/* Why the last SSL call failed, with the certificate check's verdict when that was it. */
static void tls_describe(weir_conn_t *c, int ret, char *out, size_t n)
{
    int e = SSL_get_error(c->ssl, ret);
    if (e == SSL_ERROR_SSL)
        tls_err_reason(out, n);
    else
        snprintf(out, n, "OpenSSL error %d", e);
    ERR_clear_error();
    long v = SSL_get_verify_result(c->ssl);
    if (v != X509_V_OK) {
        size_t len = strlen(out);
        snprintf(out + len, n - len, ": %s", X509_verify_cert_error_string(v));
    }
}

/* The peer gave up on its own handshake (EOF or reset): Go's HTTP client does this whenever
 * an idle connection frees up before a new one finishes, so it is no failure worth a warning
 * or a metric; the close is logged at debug. */
static void tls_abandoned(weir_conn_t *c, const char *why)
{
    if (c->closing) return;
    weir_debug("tls: %s left during the handshake (%s)", c->peer_text, why);
    net_conn_detach(c);
    weir_conn_close(c, "the peer left during the TLS handshake");
}

static void tls_fail(weir_conn_t *c, const char *reason)
{
    if (c->closing) return;
    unsigned long suppressed = 0;
    if (weir_ratelimit_ok(&g_fail_rl, &suppressed)) {
        if (suppressed)
            weir_warn("tls: handshake with %s failed: %s (%lu more failures not logged)",
                      c->peer_text, reason, suppressed);
        else
            weir_warn("tls: handshake with %s failed: %s", c->peer_text, reason);
    }
    weir_listener_t *l = c->listener;
    net_conn_detach(c);
    if (l && l->on_tls_fail && !l->closing) l->on_tls_fail(l, c->peer_text, reason);
    char why[sizeof c->reason];
    snprintf(why, sizeof why, "TLS handshake failed: %s", reason);
    weir_conn_close(c, why);
}

static void tls_log_established(weir_conn_t *c)
{
    if (!weir_log_enabled(WEIR_LOG_DEBUG)) return;
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
    weir_debug("tls: %s: %s %s, ALPN %.*s", c->peer_text, SSL_get_version(c->ssl),
               SSL_get_cipher_name(c->ssl), alpn_len ? (int)alpn_len : 4,
               alpn_len ? (const char *)alpn : "none");
}

/* Returns true once the handshake is done and the connection still open. */
static bool tls_handshake(weir_conn_t *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        tls_flush(c, 0);
        if (c->closing) return false;
        tls_log_established(c);
        return net_conn_ready(c);
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        tls_flush(c, 0);
        return false;
    }
    char reason[200];
    tls_describe(c, r, reason, sizeof reason);
    c->tls_failed = true;
    tls_flush(c, 0); /* the alert, so the client learns why */
    tls_fail(c, reason);
    return false;
}

void net_tls_pump(weir_conn_t *c)
{
    while (!c->closing && !c->paused) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, g_plain, sizeof g_plain);
        if (n > 0) {
            net_conn_deliver(c, g_plain, (size_t)n);
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ) break;
        tls_flush(c, 0);
        if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: the peer sends nothing more */
            net_conn_peer_eof(c);
            return;
        }
        char reason[200];
        tls_describe(c, n, reason, sizeof reason);
        c->tls_failed = true;
        char why[sizeof c->reason];
        snprintf(why, sizeof why, "TLS error: %s", reason);
        weir_conn_close(c, why);
        return;
    }
    /* key updates and the like */
    if (!c->closing) tls_flush(c, 0);
}

void net_tls_input(weir_conn_t *c, const char *data, size_t len)
{
    if (BIO_write(c->rbio, data, (int)len) != (int)len) {
        ERR_clear_error();
        weir_conn_abort(c, "TLS: out of memory");
        return;
    }
    if (!c->ready && !tls_handshake(c)) return;
    if (c->paused) {
        /* what is left stays in the read BIO until weir_conn_resume */
        net_conn_stop_reading(c);
        return;
    }
    net_tls_pump(c);
}

bool net_tls_has_pending(const weir_conn_t *c)
{
    return SSL_has_pending(c->ssl) || BIO_ctrl_pending(c->rbio) > 0;
}

int net_tls_write(weir_conn_t *c, const char *data, size_t len)
{
    if (!c->ready) {
        /* the handshake is still running: the plaintext waits, and never goes out in clear */
        weir_buf_append(&c->early, data, len);
        c->wq_size += len;
        return 0;
    }
    if (c->tls_failed) return -1;
    ERR_clear_error();
    size_t off = 0;
    while (off < len) {
        size_t done = 0;
        int r = SSL_write_ex(c->ssl, data + off, len - off, &done);
        if (r != 1) {
            char reason[200], why[sizeof c->reason];
            tls_describe(c, r, reason, sizeof reason);
            c->tls_failed = true;
            snprintf(why, sizeof why, "TLS write failed: %s", reason);
            weir_conn_abort(c, why);
            return -1;
        }
        off += done;
    }
    return tls_flush(c, len);
}

void net_tls_shutdown(weir_conn_t *c)
{
    if (c->tls_failed) return;
    ERR_clear_error();
    SSL_shutdown(c->ssl); /* 0: close_notify queued, the peer's not read, as intended */
    ERR_clear_error();
    tls_flush(c, 0);
}

void net_tls_handshake_timeout(weir_conn_t *c)
{
    char reason[96];
    snprintf(reason, sizeof reason, "no handshake within %.3g s",
             (double)c->hs_timeout_ms / 1000.0);
    tls_fail(c, reason);
}

void net_tls_handshake_eof(weir_conn_t *c, const char *why)
{
    if (why == NULL) c->eof = true;
    if (c->received == 0) {
        /* a port probe or a load balancer's health check: not worth a warning */
        weir_debug("tls: %s closed the connection before any handshake", c->peer_text);
        net_conn_detach(c);
        if (why)
            weir_conn_abort(c, why);
        else
            weir_conn_close(c, "connection closed before the TLS handshake");
        return;
    }
    c->tls_failed = true;
    tls_abandoned(c, why ? why : "EOF");
}
