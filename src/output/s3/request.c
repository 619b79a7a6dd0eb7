/* Signed S3 requests: the URL (virtual-hosted or path style, AWS or a custom endpoint), the
 * headers, and the SigV4 Authorization over exactly the headers that are sent.
 *
 * Invariant: the Host header is set by us, not by curl, so the host that is signed is the host
 * that is sent, port included when the endpoint names one. */
#include <stdlib.h>
#include <string.h>

#include "s3_internal.h"

static void add_kv(s3_kv_t *h, size_t *n, const char *name, const char *value)
{
    h[*n].name = name;
    h[*n].value = value;
    (*n)++;
}

int s3_sign_into(s3_http_req_t *r, const char *method, const char *host, const char *path,
                 const s3_kv_t *query, size_t nquery, const s3_kv_t *headers, size_t nheaders,
                 const char *body, size_t body_len, const char *payload_hash, const char *region,
                 const char *service, const s3_creds_t *cr, weir_err_t *err)
{
    if (nheaders + 4 > S3_SIGN_MAX_HEADERS) {
        weir_err_set(err, "too many headers to sign (%zu)", nheaders);
        return -1;
    }
    char hash[S3_SHA256_HEX_LEN + 1], date[17];
    if (!payload_hash) {
        s3_sha256_hex(body ? body : "", body_len, hash);
        payload_hash = hash;
    }
    s3_amz_date(time(NULL), date);
    s3_kv_t h[S3_SIGN_MAX_HEADERS];
    size_t n = 0;
    add_kv(h, &n, "host", host);
    add_kv(h, &n, "x-amz-date", date);
    add_kv(h, &n, "x-amz-content-sha256", payload_hash);
    if (cr->token) add_kv(h, &n, "x-amz-security-token", cr->token);
    for (size_t i = 0; i < nheaders; i++)
        add_kv(h, &n, headers[i].name, headers[i].value);
    s3_sign_req_t sr = {
        .method = method,
        .path = path,
        .query = query,
        .nquery = nquery,
        .headers = h,
        .nheaders = n,
        .payload_hash = payload_hash,
        .amz_date = date,
        .region = region,
        .service = service,
        .access_key = cr->access_key,
        .secret_key = cr->secret_key,
    };
    weir_buf_t auth;
    weir_buf_init(&auth);
    if (s3_sigv4_authorization(&sr, &auth) != 0) {
        weir_buf_free(&auth);
        weir_err_set(err, "cannot sign the request");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        s3_http_req_header(r, h[i].name, h[i].value);
    s3_http_req_header(r, "Authorization", auth.data);
    /* no 100-continue round trip: S3 answers errors after the body just as well */
    s3_http_req_header(r, "Expect", NULL);
    weir_buf_free(&auth);
    r->method = method;
    r->body = body;
    r->body_len = body_len;
    return 0;
}

void s3_object_url(const s3_out_t *o, const char *key, weir_buf_t *out)
{
    weir_buf_printf(out, "s3://%s/%s", o->bucket, key ? key : "");
}

int s3_request_build(const s3_out_t *o, const s3_creds_t *cr, const s3_reqspec_t *spec,
                     s3_http_req_t *r, weir_err_t *err)
{
    weir_buf_t host, path, url;
    weir_buf_init(&host);
    weir_buf_init(&path);
    weir_buf_init(&url);
    if (o->path_style)
        weir_buf_printf(&host, "%s", o->host);
    else
        weir_buf_printf(&host, "%s.%s", o->bucket, o->host);
    weir_buf_printf(&path, "%s", o->base_path);
    if (o->path_style) {
        weir_buf_putc(&path, '/');
        s3_uri_encode(o->bucket, strlen(o->bucket), false, &path);
    }
    /* path style: "/bucket" for bucket requests, "/bucket/key" for objects */
    if (spec->key || !o->path_style) weir_buf_putc(&path, '/');
    if (spec->key) s3_uri_encode(spec->key, strlen(spec->key), true, &path);
    weir_buf_putc(&path, '\0');
    weir_buf_printf(&url, "%s://%s%s", o->scheme, host.data, path.data);
    if (spec->nquery) {
        weir_buf_putc(&url, '?');
        s3_canonical_query(spec->query, spec->nquery, &url);
    }
    weir_buf_putc(&url, '\0');
    free(r->url);
    r->url = url.data;
    int rc = s3_sign_into(r, spec->method, host.data, path.data, spec->query, spec->nquery,
                          spec->headers, spec->nheaders, spec->body, spec->body_len,
                          spec->payload_hash, o->region, "s3", cr, err);
    weir_buf_free(&host);
    weir_buf_free(&path);
    return rc;
}
