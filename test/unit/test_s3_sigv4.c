/* SigV4 against the AWS documentation's published S3 examples ("Examples of Signature
 * Calculations", access key AKIAIOSFODNN7EXAMPLE, 20130524T000000Z, us-east-1, bucket
 * examplebucket), S3's URI and query encoding, and the requests the output builds: path and
 * virtual-hosted style, the security token, and that what is signed is what is sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "../../src/output/s3/s3_internal.h"
#include "weir/s3.h"

#define AK "AKIAIOSFODNN7EXAMPLE"
#define SK "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define DATE "20130524T000000Z"
#define HOST "examplebucket.s3.amazonaws.com"

static s3_sign_req_t base_req(void)
{
    s3_sign_req_t r = {
        .method = "GET",
        .path = "/",
        .payload_hash = EMPTY_SHA,
        .amz_date = DATE,
        .region = "us-east-1",
        .service = "s3",
        .access_key = AK,
        .secret_key = SK,
    };
    return r;
}

static char *text(int (*fn)(const s3_sign_req_t *, weir_buf_t *), const s3_sign_req_t *r)
{
    static char out[8192];
    weir_buf_t b;
    weir_buf_init(&b);
    assert_int_equal(fn(r, &b), 0);
    snprintf(out, sizeof out, "%.*s", (int)b.len, b.data);
    weir_buf_free(&b);
    return out;
}

static const char *signature_of(const s3_sign_req_t *r)
{
    const char *auth = text(s3_sigv4_authorization, r);
    const char *s = strstr(auth, "Signature=");
    assert_non_null(s);
    return s + 10;
}

static void test_get_object(void **state)
{
    s3_kv_t h[] = {{"Host", HOST},
                   {"Range", "bytes=0-9"},
                   {"x-amz-content-sha256", EMPTY_SHA},
                   {"x-amz-date", DATE}};
    s3_sign_req_t r = base_req();
    r.path = "/test.txt";
    r.headers = h;
    r.nheaders = 4;
    assert_string_equal(text(s3_sigv4_canonical_request, &r),
                        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\n"
                        "range:bytes=0-9\n"
                        "x-amz-content-sha256:" EMPTY_SHA "\n"
                        "x-amz-date:20130524T000000Z\n\n"
                        "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA);
    assert_string_equal(text(s3_sigv4_string_to_sign, &r),
                        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
                        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
    assert_string_equal(
        text(s3_sigv4_authorization, &r),
        "AWS4-HMAC-SHA256 Credential=" AK "/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

static void test_put_object(void **state)
{
    char sha[S3_SHA256_HEX_LEN + 1];
    s3_sha256_hex("Welcome to Amazon S3.", 21, sha);
    assert_string_equal(sha, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    s3_kv_t h[] = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                   {"Host", HOST},
                   {"x-amz-date", DATE},
                   {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
                   {"x-amz-content-sha256", sha}};
    s3_sign_req_t r = base_req();
    r.method = "PUT";
    /* the key "test$file.text", encoded once */
    weir_buf_t path;
    weir_buf_init(&path);
    weir_buf_putc(&path, '/');
    s3_uri_encode("test$file.text", 14, true, &path);
    weir_buf_putc(&path, '\0');
    assert_string_equal(path.data, "/test%24file.text");
    r.path = path.data;
    r.headers = h;
    r.nheaders = 5;
    r.payload_hash = sha;
    assert_string_equal(signature_of(&r),
                        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    weir_buf_free(&path);
}

static void test_get_bucket_lifecycle(void **state)
{
    s3_kv_t h[] = {{"Host", HOST}, {"x-amz-content-sha256", EMPTY_SHA}, {"x-amz-date", DATE}};
    s3_kv_t q[] = {{"lifecycle", ""}};
    s3_sign_req_t r = base_req();
    r.query = q;
    r.nquery = 1;
    r.headers = h;
    r.nheaders = 3;
    assert_non_null(strstr(text(s3_sigv4_canonical_request, &r), "GET\n/\nlifecycle=\n"));
    assert_string_equal(signature_of(&r),
                        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

static void test_list_objects(void **state)
{
    s3_kv_t h[] = {{"Host", HOST}, {"x-amz-content-sha256", EMPTY_SHA}, {"x-amz-date", DATE}};
    /* given out of order: the signer sorts */
    s3_kv_t q[] = {{"prefix", "J"}, {"max-keys", "2"}};
    s3_sign_req_t r = base_req();
    r.query = q;
    r.nquery = 2;
    r.headers = h;
    r.nheaders = 3;
    assert_non_null(strstr(text(s3_sigv4_canonical_request, &r), "GET\n/\nmax-keys=2&prefix=J\n"));
    assert_string_equal(signature_of(&r),
                        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

static const char *enc(const char *s, bool keep_slash)
{
    static char out[512];
    weir_buf_t b;
    weir_buf_init(&b);
    s3_uri_encode(s, strlen(s), keep_slash, &b);
    snprintf(out, sizeof out, "%.*s", (int)b.len, b.data);
    weir_buf_free(&b);
    return out;
}

static void test_uri_encoding(void **state)
{
    /* unreserved characters stay, '/' separates segments of a key, everything else is %XX */
    assert_string_equal(enc("AZaz09-._~", true), "AZaz09-._~");
    assert_string_equal(enc("logs/app.web/2024/01/x_0.gz", true), "logs/app.web/2024/01/x_0.gz");
    assert_string_equal(enc("a b+c=d&e", true), "a%20b%2Bc%3Dd%26e");
    assert_string_equal(enc("a/b", false), "a%2Fb");
    assert_string_equal(enc("%{x}*", true), "%25%7Bx%7D%2A");
    assert_string_equal(enc("\xc3\xa9t\xc3\xa9", true), "%C3%A9t%C3%A9"); /* UTF-8 bytes */
    assert_string_equal(enc("//a//", true), "//a//"); /* no normalisation for S3 */
}

static void test_canonical_query(void **state)
{
    s3_kv_t q[] = {
        {"uploadId", "a/b+c="}, {"partNumber", "2"}, {"b", NULL}, {"a", "2"}, {"a", "1"}};
    weir_buf_t b;
    weir_buf_init(&b);
    s3_canonical_query(q, 5, &b);
    weir_buf_putc(&b, '\0');
    assert_string_equal(b.data, "a=1&a=2&b=&partNumber=2&uploadId=a%2Fb%2Bc%3D");
    weir_buf_free(&b);
}

static void test_header_values_trimmed_names_lowered(void **state)
{
    s3_kv_t h[] = {{"X-Amz-Meta-Team", "  a   b  "}, {"HOST", "h"}};
    s3_sign_req_t r = base_req();
    r.headers = h;
    r.nheaders = 2;
    const char *c = text(s3_sigv4_canonical_request, &r);
    assert_non_null(strstr(c, "\nhost:h\nx-amz-meta-team:a b\n\nhost;x-amz-meta-team\n"));
}

static void test_header_limit(void **state)
{
    s3_kv_t h[S3_SIGN_MAX_HEADERS + 1];
    char names[S3_SIGN_MAX_HEADERS + 1][16];
    for (int i = 0; i <= S3_SIGN_MAX_HEADERS; i++) {
        snprintf(names[i], sizeof names[i], "x-h-%03d", i);
        h[i] = (s3_kv_t){names[i], "v"};
    }
    s3_sign_req_t r = base_req();
    r.headers = h;
    r.nheaders = S3_SIGN_MAX_HEADERS; /* at the limit */
    weir_buf_t b;
    weir_buf_init(&b);
    assert_int_equal(s3_sigv4_authorization(&r, &b), 0);
    r.nheaders = S3_SIGN_MAX_HEADERS + 1; /* one past */
    b.len = 0;
    assert_int_equal(s3_sigv4_authorization(&r, &b), -1);
    weir_buf_free(&b);
}

static void test_hashes(void **state)
{
    char sha[S3_SHA256_HEX_LEN + 1], md5[S3_MD5_B64_LEN + 1];
    s3_sha256_hex("", 0, sha);
    assert_string_equal(sha, EMPTY_SHA);
    s3_md5_base64("", 0, md5);
    assert_string_equal(md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
    s3_md5_base64("Welcome to Amazon S3.", 21, md5);
    assert_int_equal(strlen(md5), S3_MD5_B64_LEN);
    char d[17];
    s3_amz_date(1369353600, d);
    assert_string_equal(d, DATE);
}

/* ---- the requests the output sends ---- */

/* The header lines of a built request, joined by '\n'. */
static const char *headers_of(const s3_http_req_t *r)
{
    static char out[8192];
    out[0] = '\0';
    for (struct curl_slist *l = r->headers; l; l = l->next) {
        strncat(out, l->data, sizeof out - strlen(out) - 2);
        strcat(out, "\n");
    }
    return out;
}

static const char *header(const s3_http_req_t *r, const char *name)
{
    static char out[2048];
    size_t n = strlen(name);
    for (struct curl_slist *l = r->headers; l; l = l->next) {
        if (strncasecmp(l->data, name, n) == 0 && l->data[n] == ':') {
            snprintf(out, sizeof out, "%s", l->data + n + 2);
            return out;
        }
    }
    return NULL;
}

/* Copies a header whose value must fill dst exactly (x-amz-date is YYYYMMDDTHHMMSSZ, the
 * payload hash 64 hex digits): a value of another length fails the test, never truncates. */
static void header_copy(const s3_http_req_t *r, const char *name, char *dst, size_t size)
{
    const char *v = header(r, name);
    assert_non_null(v);
    assert_int_equal(strlen(v), size - 1);
    memcpy(dst, v, size);
}

static void test_request_styles(void **state)
{
    s3_out_t o = {0};
    o.bucket = "my-bucket";
    o.region = "eu-west-1";
    o.scheme = "https";
    o.host = "s3.eu-west-1.amazonaws.com";
    o.base_path = "";
    s3_creds_t cr = {.access_key = AK, .secret_key = SK};
    s3_kv_t hd[] = {{"Content-Type", "application/x-gzip"}, {"x-amz-storage-class", "STANDARD"}};
    s3_reqspec_t spec = {.method = "PUT",
                         .key = "logs/a b/x_0.gz",
                         .headers = hd,
                         .nheaders = 2,
                         .body = "hello",
                         .body_len = 5};
    s3_http_req_t r;
    s3_http_req_init(&r);
    weir_err_t err = {{0}};
    /* virtual-hosted style */
    assert_int_equal(s3_request_build(&o, &cr, &spec, &r, &err), 0);
    assert_string_equal(r.url, "https://my-bucket.s3.eu-west-1.amazonaws.com/logs/a%20b/x_0.gz");
    assert_string_equal(header(&r, "host"), "my-bucket.s3.eu-west-1.amazonaws.com");
    char sha[S3_SHA256_HEX_LEN + 1];
    s3_sha256_hex("hello", 5, sha);
    assert_string_equal(header(&r, "x-amz-content-sha256"), sha);
    assert_null(header(&r, "x-amz-security-token"));
    const char *auth = header(&r, "Authorization");
    assert_non_null(strstr(auth, "/eu-west-1/s3/aws4_request"));
    assert_non_null(strstr(auth, "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;"
                                 "x-amz-storage-class,"));
    assert_non_null(strstr(headers_of(&r), "Expect:\n")); /* no 100-continue */
    s3_http_req_reset(&r);

    /* path style on a custom endpoint with a port and a base path, and a session token */
    o.host = "127.0.0.1:9000";
    o.scheme = "http";
    o.base_path = "/minio";
    o.path_style = true;
    cr.token = "SESSIONTOKEN";
    assert_int_equal(s3_request_build(&o, &cr, &spec, &r, &err), 0);
    assert_string_equal(r.url, "http://127.0.0.1:9000/minio/my-bucket/logs/a%20b/x_0.gz");
    assert_string_equal(header(&r, "host"), "127.0.0.1:9000");
    assert_string_equal(header(&r, "x-amz-security-token"), "SESSIONTOKEN");
    assert_non_null(strstr(header(&r, "Authorization"), "x-amz-security-token"));
    s3_http_req_reset(&r);

    /* bucket requests: "/bucket" path style, with a sorted, encoded query */
    s3_kv_t q[] = {{"prefix", "logs/"}, {"max-keys", "1"}};
    s3_reqspec_t list = {.method = "GET", .query = q, .nquery = 2};
    assert_int_equal(s3_request_build(&o, &cr, &list, &r, &err), 0);
    assert_string_equal(r.url, "http://127.0.0.1:9000/minio/my-bucket?max-keys=1&prefix=logs%2F");
    assert_string_equal(header(&r, "x-amz-content-sha256"), EMPTY_SHA);
    s3_http_req_reset(&r);
    o.path_style = false;
    o.base_path = "";
    assert_int_equal(s3_request_build(&o, &cr, &list, &r, &err), 0);
    assert_string_equal(r.url, "http://my-bucket.127.0.0.1:9000/?max-keys=1&prefix=logs%2F");
    s3_http_req_reset(&r);
    weir_buf_free(&r.resp);
}

/* The signature in a built request verifies with an independent recomputation. */
static void test_request_signature_matches_sent_headers(void **state)
{
    s3_out_t o = {0};
    o.bucket = "b-1";
    o.region = "us-east-1";
    o.scheme = "http";
    o.host = "localhost:4569";
    o.base_path = "";
    o.path_style = true;
    s3_creds_t cr = {.access_key = AK, .secret_key = SK};
    s3_kv_t q[] = {{"partNumber", "1"}, {"uploadId", "xyz"}};
    s3_kv_t hd[] = {{"Content-MD5", "XUFAKrxLKna5cZ2REBfFkg=="}};
    s3_reqspec_t spec = {.method = "PUT",
                         .key = "k",
                         .query = q,
                         .nquery = 2,
                         .headers = hd,
                         .nheaders = 1,
                         .body = "hello",
                         .body_len = 5};
    s3_http_req_t r;
    s3_http_req_init(&r);
    weir_err_t err = {{0}};
    assert_int_equal(s3_request_build(&o, &cr, &spec, &r, &err), 0);
    /* rebuild the signing input from what will go on the wire */
    char date[17], sha[S3_SHA256_HEX_LEN + 1];
    header_copy(&r, "x-amz-date", date, sizeof date);
    header_copy(&r, "x-amz-content-sha256", sha, sizeof sha);
    s3_kv_t h[] = {{"host", "localhost:4569"},
                   {"x-amz-date", date},
                   {"x-amz-content-sha256", sha},
                   {"content-md5", "XUFAKrxLKna5cZ2REBfFkg=="}};
    s3_sign_req_t sr = base_req();
    sr.method = "PUT";
    sr.path = "/b-1/k";
    sr.query = q;
    sr.nquery = 2;
    sr.headers = h;
    sr.nheaders = 4;
    sr.payload_hash = sha;
    sr.amz_date = date;
    char want[128];
    snprintf(want, sizeof want, "Signature=%s", signature_of(&sr));
    assert_non_null(strstr(header(&r, "Authorization"), want));
    assert_string_equal(r.url, "http://localhost:4569/b-1/k?partNumber=1&uploadId=xyz");
    s3_http_req_reset(&r);
    weir_buf_free(&r.resp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_object),
        cmocka_unit_test(test_put_object),
        cmocka_unit_test(test_get_bucket_lifecycle),
        cmocka_unit_test(test_list_objects),
        cmocka_unit_test(test_uri_encoding),
        cmocka_unit_test(test_canonical_query),
        cmocka_unit_test(test_header_values_trimmed_names_lowered),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_hashes),
        cmocka_unit_test(test_request_styles),
        cmocka_unit_test(test_request_signature_matches_sent_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
