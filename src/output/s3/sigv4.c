/* AWS Signature Version 4 (the "Authorization header" form with a signed payload), plus the
 * hashing and percent-encoding it needs.
 *
 * The canonical request is: method, canonical URI, canonical query, canonical headers, signed
 * header names, payload hash, each on its own line. S3 differs from other services in one
 * place: the URI is not normalised or encoded a second time, so callers pass the path exactly
 * as it goes on the wire (each key segment encoded once, '/' kept). Invariant: the headers
 * signed are exactly the headers passed, so a caller that sends what it signed can never be
 * refused with SignatureDoesNotMatch for a header mismatch. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "weir/s3.h"

static const char hexdig[] = "0123456789abcdef";

static void to_hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[p[i] >> 4];
        out[2 * i + 1] = hexdig[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void s3_sha256_hex(const void *p, size_t n, char out[S3_SHA256_HEX_LEN + 1])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(p, n, md);
    to_hex(md, sizeof md, out);
}

void s3_md5_base64(const void *p, size_t n, char out[S3_MD5_B64_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(p, n, md, &mdlen, EVP_md5(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
}

void s3_uri_encode(const char *s, size_t n, bool keep_slash, weir_buf_t *out)
{
    static const char up[] = "0123456789ABCDEF";
    weir_buf_reserve(out, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
        if (plain) {
            weir_buf_putc(out, (char)c);
        } else {
            char e[3] = {'%', up[c >> 4], up[c & 15]};
            weir_buf_append(out, e, 3);
        }
    }
}

void s3_amz_date(time_t t, char out[17])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* ---- canonical parts ---------------------------------------------------------------------- */

typedef struct enc_pair {
    char *name;
    char *value;
} enc_pair_t;

static int cmp_pair(const void *a, const void *b)
{
    const enc_pair_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

void s3_canonical_query(const s3_kv_t *query, size_t n, weir_buf_t *out)
{
    if (n == 0) return;
    enc_pair_t *p = weir_calloc(n, sizeof *p);
    for (size_t i = 0; i < n; i++) {
        weir_buf_t b;
        weir_buf_init(&b);
        s3_uri_encode(query[i].name, strlen(query[i].name), false, &b);
        weir_buf_putc(&b, '\0');
        p[i].name = b.data;
        weir_buf_init(&b);
        const char *v = query[i].value ? query[i].value : "";
        s3_uri_encode(v, strlen(v), false, &b);
        weir_buf_putc(&b, '\0');
        p[i].value = b.data;
    }
    qsort(p, n, sizeof *p, cmp_pair);
    for (size_t i = 0; i < n; i++) {
        if (i) weir_buf_putc(out, '&');
        weir_buf_printf(out, "%s=%s", p[i].name, p[i].value);
        free(p[i].name);
        free(p[i].value);
    }
    free(p);
}

typedef struct canon_header {
    char name[128];
    const char *value;
} canon_header_t;

static int cmp_header(const void *a, const void *b)
{
    return strcmp(((const canon_header_t *)a)->name, ((const canon_header_t *)b)->name);
}

/* Sorted, lower-cased header names. */
static int sorted_headers(const s3_sign_req_t *r, canon_header_t *h)
{
    if (r->nheaders > S3_SIGN_MAX_HEADERS) return -1;
    for (size_t i = 0; i < r->nheaders; i++) {
        size_t j = 0;
        for (; r->headers[i].name[j] && j < sizeof h[i].name - 1; j++) {
            char c = r->headers[i].name[j];
            h[i].name[j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        h[i].name[j] = '\0';
        h[i].value = r->headers[i].value ? r->headers[i].value : "";
    }
    qsort(h, r->nheaders, sizeof *h, cmp_header);
    return 0;
}

/* A header value as SigV4 wants it: outer spaces trimmed, inner runs of spaces made one. */
static void trimmed_value(const char *v, weir_buf_t *out)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    bool space = false;
    for (size_t i = 0; i < n; i++) {
        bool s = v[i] == ' ' || v[i] == '\t';
        if (s && space) continue;
        weir_buf_putc(out, s ? ' ' : v[i]);
        space = s;
    }
}

static void signed_header_names(const canon_header_t *h, size_t n, weir_buf_t *out)
{
    for (size_t i = 0; i < n; i++) {
        if (i) weir_buf_putc(out, ';');
        weir_buf_printf(out, "%s", h[i].name);
    }
}

int s3_sigv4_canonical_request(const s3_sign_req_t *r, weir_buf_t *out)
{
    canon_header_t h[S3_SIGN_MAX_HEADERS];
    if (sorted_headers(r, h) != 0) return -1;
    weir_buf_printf(out, "%s\n%s\n", r->method, r->path && *r->path ? r->path : "/");
    s3_canonical_query(r->query, r->nquery, out);
    weir_buf_putc(out, '\n');
    for (size_t i = 0; i < r->nheaders; i++) {
        weir_buf_printf(out, "%s:", h[i].name);
        trimmed_value(h[i].value, out);
        weir_buf_putc(out, '\n');
    }
    weir_buf_putc(out, '\n');
    signed_header_names(h, r->nheaders, out);
    weir_buf_printf(out, "\n%s", r->payload_hash);
    return 0;
}

static void scope(const s3_sign_req_t *r, weir_buf_t *out)
{
    weir_buf_printf(out, "%.8s/%s/%s/aws4_request", r->amz_date, r->region, r->service);
}

int s3_sigv4_string_to_sign(const s3_sign_req_t *r, weir_buf_t *out)
{
    weir_buf_t canon;
    weir_buf_init(&canon);
    if (s3_sigv4_canonical_request(r, &canon) != 0) {
        weir_buf_free(&canon);
        return -1;
    }
    char hash[S3_SHA256_HEX_LEN + 1];
    s3_sha256_hex(canon.data, canon.len, hash);
    weir_buf_free(&canon);
    weir_buf_printf(out, "AWS4-HMAC-SHA256\n%s\n", r->amz_date);
    scope(r, out);
    weir_buf_printf(out, "\n%s", hash);
    return 0;
}

static void hmac(const void *key, size_t klen, const void *msg, size_t mlen,
                 unsigned char out[SHA256_DIGEST_LENGTH])
{
    unsigned int n = SHA256_DIGEST_LENGTH;
    HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &n);
}

int s3_sigv4_authorization(const s3_sign_req_t *r, weir_buf_t *out)
{
    weir_buf_t sts;
    weir_buf_init(&sts);
    if (s3_sigv4_string_to_sign(r, &sts) != 0) {
        weir_buf_free(&sts);
        return -1;
    }
    /* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request") */
    weir_buf_t k;
    weir_buf_init(&k);
    weir_buf_printf(&k, "AWS4%s", r->secret_key);
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    hmac(k.data, k.len, r->amz_date, 8, a);
    hmac(a, sizeof a, r->region, strlen(r->region), b);
    hmac(b, sizeof b, r->service, strlen(r->service), a);
    hmac(a, sizeof a, "aws4_request", 12, b);
    hmac(b, sizeof b, sts.data, sts.len, a);
    /* the derived key material is as sensitive as the secret: wipe it */
    OPENSSL_cleanse(k.data, k.len);
    OPENSSL_cleanse(b, sizeof b);
    weir_buf_free(&k);
    weir_buf_free(&sts);
    char sig[2 * SHA256_DIGEST_LENGTH + 1];
    to_hex(a, sizeof a, sig);

    canon_header_t h[S3_SIGN_MAX_HEADERS];
    sorted_headers(r, h);
    weir_buf_printf(out, "AWS4-HMAC-SHA256 Credential=%s/", r->access_key);
    scope(r, out);
    weir_buf_printf(out, ", SignedHeaders=");
    signed_header_names(h, r->nheaders, out);
    weir_buf_printf(out, ", Signature=%s", sig);
    return 0;
}
