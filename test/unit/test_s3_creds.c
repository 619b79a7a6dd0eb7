/* Credentials: the shared credentials and config files (profiles, comments, spacing), the IMDS
 * and ECS JSON documents, STS's XML answers and errors, dates, and the provider's choice of
 * source for what needs no network (static keys, environment, files, the chain's order). The
 * HTTP sources (IMDS, ECS, STS) are exercised against local servers by
 * test/integration/test_s3_output.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/output/s3/s3_internal.h"
#include "weir/log.h"
#include "weir/s3.h"

static const char ini[] = "# a comment\n"
                          "; another comment\n"
                          "[default]\n"
                          "aws_access_key_id = AKIDDEFAULT\n"
                          "aws_secret_access_key=secretdefault\n"
                          "\n"
                          "  [ prod ]  \n"
                          "\taws_access_key_id\t=\tAKIDPROD  \r\n"
                          "aws_secret_access_key = secret/prod+key==\r\n"
                          "aws_session_token = tokenprod\r\n"
                          "region = eu-west-1\n"
                          "[broken]\n"
                          "aws_access_key_id = AKIDBROKEN\n"
                          "[profile cfg]\n"
                          "aws_access_key_id = AKIDCFG\n"
                          "aws_secret_access_key = secretcfg\n";

static void test_ini_profiles(void **state)
{
    s3_creds_t c = {0};
    weir_err_t err = {{0}};
    assert_int_equal(s3_creds_parse_ini(ini, strlen(ini), "default", false, &c, &err), 1);
    assert_string_equal(c.access_key, "AKIDDEFAULT");
    assert_string_equal(c.secret_key, "secretdefault");
    assert_null(c.token);
    assert_int_equal(c.expiration, 0);
    assert_int_equal(s3_creds_parse_ini(ini, strlen(ini), "prod", false, &c, &err), 1);
    assert_string_equal(c.access_key, "AKIDPROD");
    assert_string_equal(c.secret_key, "secret/prod+key==");
    assert_string_equal(c.token, "tokenprod");
    /* a missing profile is "not here", a profile without its secret is an error that names
     * the key but never a value */
    assert_int_equal(s3_creds_parse_ini(ini, strlen(ini), "staging", false, &c, &err), 0);
    assert_int_equal(s3_creds_parse_ini(ini, strlen(ini), "broken", false, &c, &err), -1);
    assert_non_null(strstr(err.msg, "aws_secret_access_key"));
    assert_null(strstr(err.msg, "AKIDBROKEN"));
    /* the credentials file has no "profile " prefix: [profile cfg] is a different name */
    assert_int_equal(s3_creds_parse_ini(ini, strlen(ini), "cfg", false, &c, &err), 0);
    s3_creds_free(&c);
}

static void test_ini_config_file(void **state)
{
    s3_creds_t c = {0};
    weir_err_t err = {{0}};
    assert_int_equal(s3_creds_parse_ini(ini, strlen(ini), "cfg", true, &c, &err), 1);
    assert_string_equal(c.access_key, "AKIDCFG");
    assert_int_equal(s3_creds_parse_ini(ini, strlen(ini), "default", true, &c, &err), 1);
    assert_string_equal(c.access_key, "AKIDDEFAULT");
    /* in the config file a bare [prod] is not "profile prod" */
    assert_int_equal(s3_creds_parse_ini(ini, strlen(ini), "prod", true, &c, &err), 0);
    assert_int_equal(s3_creds_parse_ini("", 0, "default", false, &c, &err), 0);
    s3_creds_free(&c);
}

static void test_iso8601(void **state)
{
    int64_t t;
    assert_int_equal(s3_parse_iso8601("2024-01-01T13:14:15Z", &t), 0);
    assert_int_equal(t, 1704114855);
    assert_int_equal(s3_parse_iso8601("2011-07-15T23:28:33.359Z", &t), 0);
    assert_int_equal(t, 1310772513);
    assert_int_equal(s3_parse_iso8601("2024-01-01T22:14:15+09:00", &t), 0);
    assert_int_equal(t, 1704114855);
    assert_int_equal(s3_parse_iso8601("2024-01-01T13:14:15", &t), -1);
    assert_int_equal(s3_parse_iso8601("2024-13-01T13:14:15Z", &t), -1);
    assert_int_equal(s3_parse_iso8601("yesterday", &t), -1);
    assert_int_equal(s3_parse_iso8601("2024-01-01T13:14:15Zjunk", &t), -1);
}

static void test_imds_json(void **state)
{
    const char doc[] =
        "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2024-01-01T12:00:00Z\",\n"
        "  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"ASIAIMDS\",\n"
        "  \"SecretAccessKey\" : \"imds/secret\",\n  \"Token\" : \"imds-token==\",\n"
        "  \"Expiration\" : \"2024-01-01T18:00:00Z\"\n}";
    s3_creds_t c = {0};
    weir_err_t err = {{0}};
    assert_int_equal(s3_creds_parse_json(doc, strlen(doc), &c, &err), 0);
    assert_string_equal(c.access_key, "ASIAIMDS");
    assert_string_equal(c.secret_key, "imds/secret");
    assert_string_equal(c.token, "imds-token==");
    assert_int_equal(c.expiration, 1704132000);
    /* ECS: no Code */
    const char ecs[] = "{\"AccessKeyId\":\"ASIAECS\",\"SecretAccessKey\":\"s\",\"Token\":\"t\","
                       "\"Expiration\":\"2024-01-01T18:00:00Z\",\"RoleArn\":\"arn\"}";
    assert_int_equal(s3_creds_parse_json(ecs, strlen(ecs), &c, &err), 0);
    assert_string_equal(c.access_key, "ASIAECS");
    const char failed[] = "{\"Code\":\"AssumeRoleUnauthorizedAccess\",\"Message\":\"no\"}";
    assert_int_equal(s3_creds_parse_json(failed, strlen(failed), &c, &err), -1);
    assert_non_null(strstr(err.msg, "AssumeRoleUnauthorizedAccess"));
    const char nosecret[] = "{\"AccessKeyId\":\"A\",\"Token\":\"SECRET-TOKEN\"}";
    assert_int_equal(s3_creds_parse_json(nosecret, strlen(nosecret), &c, &err), -1);
    assert_non_null(strstr(err.msg, "SecretAccessKey"));
    assert_null(strstr(err.msg, "SECRET-TOKEN"));
    assert_int_equal(s3_creds_parse_json("[1]", 3, &c, &err), -1);
    assert_int_equal(s3_creds_parse_json("{", 1, &c, &err), -1);
    const char badexp[] =
        "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"s\",\"Expiration\":\"soon\"}";
    assert_int_equal(s3_creds_parse_json(badexp, strlen(badexp), &c, &err), -1);
    s3_creds_free(&c);
}

static void test_sts_xml(void **state)
{
    const char ok[] = "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
                      "  <AssumeRoleResult>\n"
                      "    <AssumedRoleUser><Arn>arn:aws:sts::123:assumed-role/r/s</Arn>"
                      "<AssumedRoleId>ARO:s</AssumedRoleId></AssumedRoleUser>\n"
                      "    <Credentials>\n"
                      "      <AccessKeyId>ASIASTS</AccessKeyId>\n"
                      "      <SecretAccessKey>sts/secret&amp;x</SecretAccessKey>\n"
                      "      <SessionToken>FwoGZXIvYXdz&lt;tok&gt;</SessionToken>\n"
                      "      <Expiration>2019-11-09T13:34:41Z</Expiration>\n"
                      "    </Credentials>\n"
                      "  </AssumeRoleResult>\n"
                      "  <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>\n"
                      "</AssumeRoleResponse>\n";
    s3_creds_t c = {0};
    weir_err_t err = {{0}};
    assert_int_equal(s3_creds_parse_sts(ok, strlen(ok), &c, &err), 0);
    assert_string_equal(c.access_key, "ASIASTS");
    assert_string_equal(c.secret_key, "sts/secret&x");
    assert_string_equal(c.token, "FwoGZXIvYXdz<tok>");
    assert_int_equal(c.expiration, 1573306481);
    const char web[] = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>"
                       "<Credentials><SessionToken>t</SessionToken><SecretAccessKey>s"
                       "</SecretAccessKey><Expiration>2024-01-01T18:00:00.000Z</Expiration>"
                       "<AccessKeyId>ASIAWEB</AccessKeyId></Credentials>"
                       "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
    assert_int_equal(s3_creds_parse_sts(web, strlen(web), &c, &err), 0);
    assert_string_equal(c.access_key, "ASIAWEB");
    assert_int_equal(c.expiration, 1704132000);
    const char denied[] = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                          "<Message>User is not authorized to perform sts:AssumeRole</Message>"
                          "</Error></ErrorResponse>";
    assert_int_equal(s3_creds_parse_sts(denied, strlen(denied), &c, &err), -1);
    assert_non_null(strstr(err.msg, "AccessDenied: User is not authorized"));
    const char partial[] = "<Credentials><AccessKeyId>A</AccessKeyId></Credentials>";
    assert_int_equal(s3_creds_parse_sts(partial, strlen(partial), &c, &err), -1);
    s3_creds_free(&c);
}

static void test_s3_error_body(void **state)
{
    const char body[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
                        "SignatureDoesNotMatch</Code><Message>The request signature we "
                        "calculated does not match &quot;x&quot;</Message>"
                        "<RequestId>1</RequestId></Error>";
    weir_buf_t b;
    weir_buf_init(&b);
    s3_error_summary(body, strlen(body), &b);
    weir_buf_putc(&b, '\0');
    assert_string_equal(b.data, "SignatureDoesNotMatch: The request signature we calculated "
                                "does not match \"x\"");
    b.len = 0;
    s3_error_summary("", 0, &b);
    s3_error_summary(NULL, 0, &b);
    assert_int_equal(b.len, 0);
    assert_int_equal(s3_xml_text("<a>1</a>", 8, "b", &b), 0);
    assert_int_equal(s3_xml_text("<a>1", 4, "a", &b), 0);
    assert_int_equal(s3_xml_text("<UploadId>abc&apos;</UploadId>", 30, "UploadId", &b), 1);
    weir_buf_putc(&b, '\0');
    assert_string_equal(b.data, "abc'");
    weir_buf_free(&b);
}

/* ---- the provider, for sources that need no network ---- */

static char tmpdir[] = "/tmp/weir-s3-creds-XXXXXX";

static void write_file(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void clear_env(void)
{
    const char *vars[] = {"AWS_ACCESS_KEY_ID",
                          "AWS_SECRET_ACCESS_KEY",
                          "AWS_SESSION_TOKEN",
                          "AMAZON_ACCESS_KEY_ID",
                          "AMAZON_SECRET_ACCESS_KEY",
                          "AWS_ACCESS_KEY",
                          "AWS_SECRET_KEY",
                          "AWS_ROLE_ARN",
                          "AWS_WEB_IDENTITY_TOKEN_FILE",
                          "AWS_PROFILE",
                          "AWS_DEFAULT_PROFILE",
                          "AWS_SHARED_CREDENTIALS_FILE",
                          "AWS_CONFIG_FILE",
                          "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                          "AWS_CONTAINER_CREDENTIALS_FULL_URI"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    setenv("HOME", tmpdir, 1);
    /* never let a unit test reach for 169.254.169.254 */
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
}

static int provider_get(s3_cred_conf_t *conf, s3_creds_t *c, weir_err_t *err)
{
    s3_provider_t *p = s3_provider_new(conf, NULL);
    int rc = s3_provider_get(p, c, err);
    s3_provider_free(p);
    return rc;
}

static void test_provider_static_and_env(void **state)
{
    clear_env();
    s3_creds_t c = {0};
    weir_err_t err = {{0}};
    s3_cred_conf_t conf = {.kind = S3_CRED_STATIC};
    conf.access_key = weir_strdup("AKIDSTATIC");
    conf.secret_key = weir_strdup("static-secret");
    assert_int_equal(provider_get(&conf, &c, &err), 0);
    assert_string_equal(c.access_key, "AKIDSTATIC");
    assert_null(c.token);

    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
    setenv("AWS_SESSION_TOKEN", "env-token", 1);
    s3_cred_conf_t chain = {.kind = S3_CRED_CHAIN};
    assert_int_equal(provider_get(&chain, &c, &err), 0);
    assert_string_equal(c.access_key, "AKIDENV");
    assert_string_equal(c.token, "env-token");
    /* the SDK's aliases */
    clear_env();
    setenv("AMAZON_ACCESS_KEY_ID", "AKIDAMAZON", 1);
    setenv("AWS_SECRET_KEY", "alias-secret", 1);
    s3_cred_conf_t chain2 = {.kind = S3_CRED_CHAIN};
    assert_int_equal(provider_get(&chain2, &c, &err), 0);
    assert_string_equal(c.access_key, "AKIDAMAZON");
    s3_creds_free(&c);
}

static void test_provider_shared_files(void **state)
{
    clear_env();
    s3_creds_t c = {0};
    weir_err_t err = {{0}};
    char awsdir[256];
    snprintf(awsdir, sizeof awsdir, "%s/.aws", tmpdir);
    assert_int_equal(mkdir(awsdir, 0700), 0);
    write_file(".aws/credentials", ini);
    write_file(".aws/config", "[profile onlycfg]\naws_access_key_id = AKIDONLYCFG\n"
                              "aws_secret_access_key = c\n");
    /* the chain: no environment keys -> ~/.aws/credentials [default] */
    s3_cred_conf_t chain = {.kind = S3_CRED_CHAIN};
    assert_int_equal(provider_get(&chain, &c, &err), 0);
    assert_string_equal(c.access_key, "AKIDDEFAULT");
    /* AWS_PROFILE picks the profile */
    setenv("AWS_PROFILE", "prod", 1);
    s3_cred_conf_t chain2 = {.kind = S3_CRED_CHAIN};
    assert_int_equal(provider_get(&chain2, &c, &err), 0);
    assert_string_equal(c.access_key, "AKIDPROD");
    unsetenv("AWS_PROFILE");
    /* aws_profile: a profile only the config file has */
    s3_cred_conf_t prof = {.kind = S3_CRED_SHARED};
    prof.profile = weir_strdup("onlycfg");
    assert_int_equal(provider_get(&prof, &c, &err), 0);
    assert_string_equal(c.access_key, "AKIDONLYCFG");
    /* <shared_credentials> path + profile_name */
    char path[256];
    snprintf(path, sizeof path, "%s/other", tmpdir);
    write_file("other", "[svc]\naws_access_key_id=AKIDSVC\naws_secret_access_key=x\n");
    s3_cred_conf_t sh = {.kind = S3_CRED_SHARED};
    sh.shared_path = weir_strdup(path);
    sh.profile = weir_strdup("svc");
    assert_int_equal(provider_get(&sh, &c, &err), 0);
    assert_string_equal(c.access_key, "AKIDSVC");
    /* AWS_SHARED_CREDENTIALS_FILE */
    setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
    setenv("AWS_PROFILE", "svc", 1);
    s3_cred_conf_t chain3 = {.kind = S3_CRED_CHAIN};
    assert_int_equal(provider_get(&chain3, &c, &err), 0);
    assert_string_equal(c.access_key, "AKIDSVC");
    clear_env();
    /* a named profile that does not exist: an error naming the profile and the files */
    s3_cred_conf_t missing = {.kind = S3_CRED_SHARED};
    missing.profile = weir_strdup("nobody");
    assert_int_equal(provider_get(&missing, &c, &err), -1);
    assert_non_null(strstr(err.msg, "profile 'nobody' not found"));
    /* a profile without a secret: the error names the key, not the values */
    s3_cred_conf_t broken = {.kind = S3_CRED_SHARED};
    broken.profile = weir_strdup("broken");
    assert_int_equal(provider_get(&broken, &c, &err), -1);
    assert_non_null(strstr(err.msg, "aws_secret_access_key"));
    assert_null(strstr(err.msg, "AKIDBROKEN"));
    s3_creds_free(&c);
}

static void test_provider_chain_nothing(void **state)
{
    clear_env();
    char empty[256];
    snprintf(empty, sizeof empty, "%s/empty-home", tmpdir);
    mkdir(empty, 0700);
    setenv("HOME", empty, 1);
    s3_creds_t c = {0};
    weir_err_t err = {{0}};
    s3_cred_conf_t chain = {.kind = S3_CRED_CHAIN};
    assert_int_equal(provider_get(&chain, &c, &err), -1);
    assert_non_null(strstr(err.msg, "no AWS credentials found"));
    /* web identity from the environment whose token file is missing: an error, not a skip */
    setenv("AWS_ROLE_ARN", "arn:aws:iam::1:role/r", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token", 1);
    s3_cred_conf_t chain2 = {.kind = S3_CRED_CHAIN};
    assert_int_equal(provider_get(&chain2, &c, &err), -1);
    assert_non_null(strstr(err.msg, "web identity token file"));
    clear_env();
}

static int setup(void **state)
{
    weir_log_set_level(WEIR_LOG_ERROR);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ini_profiles),
        cmocka_unit_test(test_ini_config_file),
        cmocka_unit_test(test_iso8601),
        cmocka_unit_test(test_imds_json),
        cmocka_unit_test(test_sts_xml),
        cmocka_unit_test(test_s3_error_body),
        cmocka_unit_test(test_provider_static_and_env),
        cmocka_unit_test(test_provider_shared_files),
        cmocka_unit_test(test_provider_chain_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
