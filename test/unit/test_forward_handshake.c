/* The forward handshake without sockets: HELO bytes, the PING checks in Fluentd's order with its
 * exact failure strings, PONG bytes, user auth, client networks and per-client keys, and the
 * <security> configuration. Vectors are those of docs/forward-protocol.md section 2.4; case
 * numbers refer to section 7 group H. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>

#include <cmocka.h>

#include "../../src/input/forward/forward_internal.h"
#include "weir/config.h"
#include "weir/forward.h"
#include "weir/log.h"

static const uint8_t NONCE[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const uint8_t AUTH[16] = {16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
static const char SALT[] = "0123456789abcdef0123456789abcdef";
static const char PING_DIGEST[] =
    "3a680037d3979b4f789647cd22e7e55f2197791eb498799823c424e2213124ed63938d1c422f50e08ec02957ef44d"
    "f338e46c77e8ea164b0dde6d64e171b30df";
static const char PONG_DIGEST[] =
    "3389a63bef56054281d75fb7b05965b0d1b1ea9eba25b4594ed8e06a02e725af1fbf401cdbe697423c388ac194856"
    "6570a6f592284a536370ca36a5ccf88cbbd";
static const char PASSWORD_DIGEST[] =
    "175443d1726b2836999b8b7b54c1fcf0a2ec1071f20fbec9f6e0a7594cf70f208e7ed315db82d7e4f45981d04990e"
    "9b9b46ea8f69444a5cf5e25601d72aa83e5";

/* ---- helpers ---- */

static void hex_append(weir_buf_t *b, const char *hex)
{
    for (const char *p = hex; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        unsigned v;
        assert_int_equal(sscanf(p, "%2x", &v), 1);
        weir_buf_putc(b, (char)v);
        p += 2;
    }
}

static void expect_bytes(const weir_buf_t *got, const weir_buf_t *want)
{
    assert_int_equal(got->len, want->len);
    assert_memory_equal(got->data, want->data, want->len);
}

/* SHA-512 hex computed here with OpenSSL directly, independent of fwd_sha512_hex4. */
static void sha512_hex(const void *data, size_t len, char out[129])
{
    unsigned char md[64];
    unsigned int n;
    assert_true(EVP_Digest(data, len, md, &n, EVP_sha512(), NULL));
    for (unsigned i = 0; i < 64; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* hex(SHA512(salt || host || nonce || key)) */
static void key_digest(const void *salt, size_t salt_len, const char *host, const char *key,
                       char out[129])
{
    weir_buf_t b;
    weir_buf_init(&b);
    weir_buf_append(&b, salt, salt_len);
    weir_buf_append(&b, host, strlen(host));
    weir_buf_append(&b, NONCE, 16);
    weir_buf_append(&b, key, strlen(key));
    sha512_hex(b.data, b.len, out);
    weir_buf_free(&b);
}

static void user_digest(const char *user, const char *password, char out[129])
{
    weir_buf_t b;
    weir_buf_init(&b);
    weir_buf_append(&b, AUTH, 16);
    weir_buf_append(&b, user, strlen(user));
    weir_buf_append(&b, password, strlen(password));
    sha512_hex(b.data, b.len, out);
    weir_buf_free(&b);
}

typedef struct ping_spec {
    const char *host;
    const void *salt;
    size_t salt_len;
    bool salt_bin;
    const char *digest;
    const char *user;
    const char *password_digest;
} ping_spec_t;

static weir_buf_t ping(const ping_spec_t *p)
{
    weir_buf_t b;
    weir_buf_init(&b);
    fwd_buf_array_hdr(&b, 6);
    fwd_buf_cstr(&b, "PING");
    fwd_buf_cstr(&b, p->host);
    if (p->salt_bin)
        fwd_buf_bin(&b, p->salt, p->salt_len);
    else
        fwd_buf_str(&b, p->salt, p->salt_len);
    fwd_buf_cstr(&b, p->digest);
    fwd_buf_cstr(&b, p->user ? p->user : "");
    fwd_buf_cstr(&b, p->password_digest ? p->password_digest : "");
    return b;
}

static ping_spec_t vector_ping(void)
{
    ping_spec_t p = {"client.example", SALT, 32, false, PING_DIGEST, NULL, NULL};
    return p;
}

static fwd_security_t security(void)
{
    fwd_security_t s;
    memset(&s, 0, sizeof s);
    s.enabled = true;
    s.self_hostname = "server.example";
    s.shared_key = "secret";
    s.allow_anonymous_source = true;
    return s;
}

static struct sockaddr_storage addr_of(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &v6->sin6_addr), 1);
        v6->sin6_family = AF_INET6;
    }
    return ss;
}

static fwd_client_t client_net(const char *ip, int prefix, char *key)
{
    fwd_client_t c;
    memset(&c, 0, sizeof c);
    c.addr = addr_of(ip);
    c.prefix_len = prefix;
    c.shared_key = key;
    return c;
}

/* Runs the check from `peer_ip`; returns the result and leaves the PONG in *pong. */
static bool check(const fwd_security_t *s, const weir_buf_t *frame, const char *peer_ip,
                  weir_buf_t *pong, const char **reason)
{
    struct sockaddr_storage peer = addr_of(peer_ip);
    weir_buf_init(pong);
    return fwd_ping_check(s, frame->data, frame->len, NONCE, AUTH, (struct sockaddr *)&peer,
                          peer_ip, pong, reason);
}

/* ["PONG", false, reason, "", ""] */
static weir_buf_t failure_pong(const char *reason)
{
    weir_buf_t b;
    weir_buf_init(&b);
    hex_append(&b, "95 a4 50 4f 4e 47 c2");
    fwd_buf_cstr(&b, reason);
    hex_append(&b, "a0 a0");
    return b;
}

static void expect_failure(const fwd_security_t *s, const weir_buf_t *frame, const char *peer,
                           const char *reason)
{
    weir_buf_t pong;
    const char *why = NULL;
    assert_false(check(s, frame, peer, &pong, &why));
    assert_string_equal(why, reason);
    weir_buf_t want = failure_pong(reason);
    expect_bytes(&pong, &want);
    weir_buf_free(&want);
    weir_buf_free(&pong);
}

/* ["PONG", true, "", self_hostname, digest] */
static void expect_success(const fwd_security_t *s, const weir_buf_t *frame, const char *peer,
                           const char *digest)
{
    weir_buf_t pong;
    const char *why = NULL;
    assert_true(check(s, frame, peer, &pong, &why));
    assert_string_equal(why, "");
    weir_buf_t want;
    weir_buf_init(&want);
    hex_append(&want, "95 a4 50 4f 4e 47 c3 a0");
    fwd_buf_cstr(&want, s->self_hostname);
    fwd_buf_cstr(&want, digest);
    expect_bytes(&pong, &want);
    weir_buf_free(&want);
    weir_buf_free(&pong);
}

/* ---- digests and HELO ---- */

static void test_sha512_vectors(void **state)
{
    char out[129];
    fwd_sha512_hex4(SALT, 32, "client.example", 14, NONCE, 16, "secret", 6, out);
    assert_string_equal(out, PING_DIGEST);
    fwd_sha512_hex4(SALT, 32, "server.example", 14, NONCE, 16, "secret", 6, out);
    assert_string_equal(out, PONG_DIGEST);
    fwd_sha512_hex4(AUTH, 16, "alice", 5, "pw", 2, "", 0, out);
    assert_string_equal(out, PASSWORD_DIGEST);
}

static void test_h85_helo_bytes(void **state)
{
    weir_buf_t got, want;
    weir_buf_init(&got);
    weir_buf_init(&want);
    fwd_helo_build(NONCE, AUTH, true, &got);
    hex_append(&want, "92 a4 48 45 4c 4f 83 a5 6e 6f 6e 63 65 c4 10 00 01 02 03 04 05 06 07 08 09 "
                      "0a 0b 0c 0d 0e 0f a4 61 75 74 68 c4 10 10 11 12 13 14 15 16 17 18 19 1a 1b "
                      "1c 1d 1e 1f a9 6b 65 65 70 61 6c 69 76 65 c3");
    expect_bytes(&got, &want);
    /* case 77: deny_keepalive advertises keepalive false */
    got.len = 0;
    fwd_helo_build(NONCE, AUTH, false, &got);
    want.data[want.len - 1] = (char)0xc2;
    expect_bytes(&got, &want);
    weir_buf_free(&got);
    weir_buf_free(&want);
}

/* ---- PING ---- */

static void test_h86_ping_vector_success(void **state)
{
    fwd_security_t s = security();
    ping_spec_t p = vector_ping();
    weir_buf_t frame = ping(&p), pong;
    const char *why;
    assert_true(check(&s, &frame, "127.0.0.1", &pong, &why));
    /* the exact PONG: 153 bytes starting as section 2.4 shows */
    weir_buf_t want;
    weir_buf_init(&want);
    hex_append(&want, "95 a4 50 4f 4e 47 c3 a0 ae 73 65 72 76 65 72 2e 65 78 61 6d 70 6c 65 d9 80");
    weir_buf_append(&want, PONG_DIGEST, 128);
    assert_int_equal(want.len, 153);
    expect_bytes(&pong, &want);
    weir_buf_free(&want);
    weir_buf_free(&pong);
    weir_buf_free(&frame);
}

static void test_h87_raw_salt_str_and_bin(void **state)
{
    fwd_security_t s = security();
    const uint8_t salt[16] = {0x00, 0xff, 0x10, 0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xc1, 0x7f};
    char digest[129], pong_digest[129];
    key_digest(salt, 16, "fluent-bit", "secret", digest);
    key_digest(salt, 16, "server.example", "secret", pong_digest);
    for (int bin = 0; bin <= 1; bin++) {
        ping_spec_t p = {"fluent-bit", salt, 16, bin, digest, NULL, NULL};
        weir_buf_t frame = ping(&p);
        expect_success(&s, &frame, "127.0.0.1", pong_digest);
        weir_buf_free(&frame);
    }
    /* an empty salt and a long one are hashed as they are too */
    const char *salts[] = {"", "a salt of more than thirty-two bytes, sent by some client"};
    for (int i = 0; i < 2; i++) {
        key_digest(salts[i], strlen(salts[i]), "h", "secret", digest);
        key_digest(salts[i], strlen(salts[i]), "server.example", "secret", pong_digest);
        ping_spec_t p = {"h", salts[i], strlen(salts[i]), false, digest, NULL, NULL};
        weir_buf_t frame = ping(&p);
        expect_success(&s, &frame, "127.0.0.1", pong_digest);
        weir_buf_free(&frame);
    }
}

static void test_h88_89_shared_key_mismatch(void **state)
{
    fwd_security_t s = security();
    s.shared_key = "other";
    ping_spec_t p = vector_ping();
    weir_buf_t frame = ping(&p);
    weir_buf_t pong;
    const char *why;
    assert_false(check(&s, &frame, "127.0.0.1", &pong, &why));
    /* exactly the bytes of section 2.4 */
    weir_buf_t want;
    weir_buf_init(&want);
    hex_append(&want, "95 a4 50 4f 4e 47 c2 b3 73 68 61 72 65 64 5f 6b 65 79 20 6d 69 73 6d 61 74 "
                      "63 68 a0 a0");
    expect_bytes(&pong, &want);
    weir_buf_free(&want);
    weir_buf_free(&pong);
    weir_buf_free(&frame);

    /* 89: the right digest in uppercase does not match */
    s.shared_key = "secret";
    char upper[129];
    for (int i = 0; i < 128; i++)
        upper[i] = (char)(PING_DIGEST[i] >= 'a' ? PING_DIGEST[i] - 32 : PING_DIGEST[i]);
    upper[128] = '\0';
    p.digest = upper;
    frame = ping(&p);
    expect_failure(&s, &frame, "127.0.0.1", "shared_key mismatch");
    weir_buf_free(&frame);
    /* a truncated digest, and one with a trailing newline */
    char shortd[128], longd[130];
    memcpy(shortd, PING_DIGEST, 127);
    shortd[127] = '\0';
    snprintf(longd, sizeof longd, "%s\n", PING_DIGEST);
    const char *digests[] = {shortd, longd, ""};
    for (int i = 0; i < 3; i++) {
        p.digest = digests[i];
        frame = ping(&p);
        expect_failure(&s, &frame, "127.0.0.1", "shared_key mismatch");
        weir_buf_free(&frame);
    }
    /* the hostname feeds the digest */
    p = vector_ping();
    p.host = "client.exampl";
    frame = ping(&p);
    expect_failure(&s, &frame, "127.0.0.1", "shared_key mismatch");
    weir_buf_free(&frame);
}

static void test_h90_invalid_ping(void **state)
{
    fwd_security_t s = security();
    const char *frames[] = {
        /* 5 elements */
        "95 a4 50 49 4e 47 ae 63 6c 69 65 6e 74 2e 65 78 61 6d 70 6c 65 a0 a0 a0",
        /* first element "PONG" */
        "96 a4 50 4f 4e 47 a1 68 a0 a0 a0 a0",
        /* "ping" in lowercase */
        "96 a4 70 69 6e 67 a1 68 a0 a0 a0 a0",
        /* not arrays: int, nil, str, map */
        "01",
        "c0",
        "a4 50 49 4e 47",
        "81 a4 50 49 4e 47 01",
        /* an event frame in place of a PING (a client that does not speak the handshake) */
        "93 a1 74 ce 65 53 f1 00 81 a1 6b a1 76",
        /* salt not a string */
        "96 a4 50 49 4e 47 a1 68 01 a0 a0 a0",
        /* truncated, reserved byte, trailing bytes */
        "96 a4 50 49 4e 47 a1 68 a0",
        "96 a4 50 49 4e 47 c1 a0 a0 a0 a0",
        "96 a4 50 49 4e 47 a1 68 a0 a0 a0 a0 c0",
        "",
    };
    for (size_t i = 0; i < sizeof frames / sizeof *frames; i++) {
        weir_buf_t frame;
        weir_buf_init(&frame);
        hex_append(&frame, frames[i]);
        expect_failure(&s, &frame, "127.0.0.1", "invalid ping message");
        weir_buf_free(&frame);
    }
    /* the failure PONG's bytes */
    weir_buf_t want;
    weir_buf_init(&want);
    hex_append(&want, "95 a4 50 4f 4e 47 c2 b4 69 6e 76 61 6c 69 64 20 70 69 6e 67 20 6d 65 73 73 "
                      "61 67 65 a0 a0");
    weir_buf_t got = failure_pong("invalid ping message");
    expect_bytes(&got, &want);
    weir_buf_free(&got);
    weir_buf_free(&want);
    /* "PING" as bin is still PING (Fluentd compares strings by bytes) */
    ping_spec_t p = vector_ping();
    weir_buf_t frame = ping(&p);
    weir_buf_t fixed;
    weir_buf_init(&fixed);
    weir_buf_putc(&fixed, (char)0x96);
    hex_append(&fixed, "c4 04");
    weir_buf_append(&fixed, frame.data + 2, frame.len - 2);
    expect_success(&s, &fixed, "127.0.0.1", PONG_DIGEST);
    weir_buf_free(&fixed);
    weir_buf_free(&frame);
}

static void test_h93_user_auth(void **state)
{
    fwd_security_t s = security();
    fwd_user_t users[] = {{"bob", "bobpw"}, {"alice", "pw"}};
    s.user_auth = true;
    s.users = users;
    s.n_users = 2;
    ping_spec_t p = vector_ping();
    p.user = "alice";
    p.password_digest = PASSWORD_DIGEST;
    weir_buf_t frame = ping(&p);
    expect_success(&s, &frame, "127.0.0.1", PONG_DIGEST);
    weir_buf_free(&frame);

    char wrong[129];
    user_digest("alice", "wrong", wrong);
    p.password_digest = wrong;
    frame = ping(&p);
    expect_failure(&s, &frame, "127.0.0.1", "username/password mismatch");
    weir_buf_free(&frame);

    p.user = "mallory";
    user_digest("mallory", "pw", wrong);
    frame = ping(&p);
    expect_failure(&s, &frame, "127.0.0.1", "username/password mismatch");
    weir_buf_free(&frame);

    /* empty username and digest, as clients without user auth send */
    p.user = NULL;
    p.password_digest = NULL;
    frame = ping(&p);
    expect_failure(&s, &frame, "127.0.0.1", "username/password mismatch");
    weir_buf_free(&frame);

    /* a <client> with users ["bob"]: alice is refused from there, bob accepted */
    char *only_bob[] = {"bob"};
    fwd_client_t c = client_net("127.0.0.0", 8, NULL);
    c.users = only_bob;
    c.n_users = 1;
    s.clients = &c;
    s.n_clients = 1;
    p.user = "alice";
    p.password_digest = PASSWORD_DIGEST;
    frame = ping(&p);
    expect_failure(&s, &frame, "127.0.0.1", "username/password mismatch");
    /* from outside that client's network, alice is fine again */
    expect_success(&s, &frame, "192.0.2.1", PONG_DIGEST);
    weir_buf_free(&frame);
    char bobd[129];
    user_digest("bob", "bobpw", bobd);
    p.user = "bob";
    p.password_digest = bobd;
    frame = ping(&p);
    expect_success(&s, &frame, "127.0.0.1", PONG_DIGEST);
    weir_buf_free(&frame);

    /* the shared key is checked before the user */
    s.shared_key = "other";
    frame = ping(&p);
    expect_failure(&s, &frame, "127.0.0.1", "shared_key mismatch");
    weir_buf_free(&frame);
}

static void test_h94_anonymous_denied(void **state)
{
    fwd_security_t s = security();
    fwd_client_t c = client_net("10.0.0.0", 8, NULL);
    s.clients = &c;
    s.n_clients = 1;
    s.allow_anonymous_source = false;
    ping_spec_t p = vector_ping();
    weir_buf_t frame = ping(&p);
    expect_failure(&s, &frame, "127.0.0.1", "anonymous source host '127.0.0.1' denied");
    expect_success(&s, &frame, "10.200.0.7", PONG_DIGEST);
    /* the address is formatted from the sockaddr when no text is given */
    struct sockaddr_storage peer = addr_of("2001:db8::5");
    weir_buf_t pong;
    weir_buf_init(&pong);
    const char *why;
    assert_false(fwd_ping_check(&s, frame.data, frame.len, NONCE, AUTH, (struct sockaddr *)&peer,
                                NULL, &pong, &why));
    assert_string_equal(why, "anonymous source host '2001:db8::5' denied");
    weir_buf_free(&pong);
    /* shape is checked before the address */
    weir_buf_t junk;
    weir_buf_init(&junk);
    weir_buf_putc(&junk, 0x01);
    expect_failure(&s, &junk, "127.0.0.1", "invalid ping message");
    weir_buf_free(&junk);
    weir_buf_free(&frame);
}

static void test_h95_per_client_key(void **state)
{
    fwd_security_t s = security();
    fwd_client_t c = client_net("127.0.0.0", 8, "k2");
    s.clients = &c;
    s.n_clients = 1;
    char k2_ping[129], k2_pong[129];
    key_digest(SALT, 32, "client.example", "k2", k2_ping);
    key_digest(SALT, 32, "server.example", "k2", k2_pong);
    ping_spec_t p = vector_ping();
    p.digest = k2_ping;
    weir_buf_t frame = ping(&p);
    expect_success(&s, &frame, "127.0.0.1", k2_pong);
    /* k2 is only for that network */
    expect_failure(&s, &frame, "192.0.2.1", "shared_key mismatch");
    weir_buf_free(&frame);
    p = vector_ping(); /* the global key */
    frame = ping(&p);
    expect_failure(&s, &frame, "127.0.0.1", "shared_key mismatch");
    expect_success(&s, &frame, "192.0.2.1", PONG_DIGEST);
    weir_buf_free(&frame);
}

static void test_client_networks(void **state)
{
    fwd_security_t s = security();
    s.allow_anonymous_source = false;
    fwd_client_t clients[] = {
        client_net("::1", 128, NULL),
        client_net("2001:db8::", 32, NULL),
        client_net("192.168.1.0", 24, NULL),
        client_net("0.0.0.0", 0, "only-for-v4-anywhere"),
    };
    s.clients = clients;
    s.n_clients = 3;
    ping_spec_t p = vector_ping();
    weir_buf_t frame = ping(&p);
    const char *ok[] = {"::1", "2001:db8:ffff::1", "192.168.1.255", "::ffff:192.168.1.9"};
    for (int i = 0; i < 4; i++)
        expect_success(&s, &frame, ok[i], PONG_DIGEST);
    const char *denied[] = {"::2", "2001:db9::1", "192.168.2.1", "10.0.0.1"};
    for (int i = 0; i < 4; i++) {
        char reason[128];
        snprintf(reason, sizeof reason, "anonymous source host '%s' denied", denied[i]);
        expect_failure(&s, &frame, denied[i], reason);
    }
    /* /0 matches every IPv4 peer (and its key is then used) */
    s.n_clients = 4;
    expect_failure(&s, &frame, "10.0.0.1", "shared_key mismatch");
    weir_buf_free(&frame);
}

/* ---- <security> configuration ---- */

static weir_conf_section_t *root;

static int from_conf(const char *text, fwd_security_t *s, weir_err_t *err)
{
    root = weir_conf_parse_string(text, strlen(text), "test.conf", err);
    if (!root) fail_msg("config did not parse: %s", err->msg);
    weir_conf_section_t *sec = weir_conf_child(root, "security", 0);
    assert_non_null(sec);
    return fwd_security_from_conf(s, sec, err);
}

static void test_conf_full(void **state)
{
    fwd_security_t s;
    weir_err_t err;
    int rc = from_conf("<security>\n"
                       "  self_hostname server.example\n"
                       "  shared_key secret\n"
                       "  user_auth true\n"
                       "  allow_anonymous_source false\n"
                       "  <user>\n    username alice\n    password pw\n  </user>\n"
                       "  <user>\n    username bob\n    password bobpw\n  </user>\n"
                       "  <client>\n    network 127.1.2.3/8\n    shared_key k2\n"
                       "    users [\"alice\"]\n  </client>\n"
                       "  <client>\n    host localhost\n  </client>\n"
                       "  <client>\n    network 10.0.0.0/255.255.0.0\n    users bob, alice\n"
                       "  </client>\n"
                       "</security>\n",
                       &s, &err);
    if (rc) fail_msg("%s", err.msg);
    assert_true(s.enabled);
    assert_string_equal(s.self_hostname, "server.example");
    assert_string_equal(s.shared_key, "secret");
    assert_true(s.user_auth);
    assert_false(s.allow_anonymous_source);
    assert_int_equal(s.n_users, 2);
    assert_string_equal(s.users[1].username, "bob");
    assert_string_equal(s.users[1].password, "bobpw");
    assert_int_equal(s.n_clients, 3);
    assert_int_equal(s.clients[0].prefix_len, 8);
    assert_string_equal(s.clients[0].shared_key, "k2");
    assert_int_equal(s.clients[0].n_users, 1);
    assert_string_equal(s.clients[0].users[0], "alice");
    /* the network was masked to 127.0.0.0/8 */
    const struct sockaddr_in *a = (const struct sockaddr_in *)&s.clients[0].addr;
    assert_int_equal(a->sin_family, AF_INET);
    assert_int_equal(ntohl(a->sin_addr.s_addr), 0x7f000000u);
    assert_true(s.clients[1].prefix_len == 32 || s.clients[1].prefix_len == 128);
    assert_null(s.clients[1].shared_key);
    assert_int_equal(s.clients[2].prefix_len, 16);
    assert_int_equal(s.clients[2].n_users, 2);
    /* every param was read */
    assert_int_equal(weir_conf_check_unused(root, &err), 0);
    /* and it works: alice from 127.0.0.1 with key k2 */
    char k2_ping[129], k2_pong[129];
    key_digest(SALT, 32, "client.example", "k2", k2_ping);
    key_digest(SALT, 32, "server.example", "k2", k2_pong);
    ping_spec_t p = {"client.example", SALT, 32, false, k2_ping, "alice", PASSWORD_DIGEST};
    weir_buf_t frame = ping(&p);
    expect_success(&s, &frame, "127.0.0.1", k2_pong);
    weir_buf_free(&frame);
    fwd_security_free(&s);
    weir_conf_free(root);
}

static void test_conf_defaults_and_absent(void **state)
{
    fwd_security_t s;
    weir_err_t err;
    assert_int_equal(fwd_security_from_conf(&s, NULL, &err), 0);
    assert_false(s.enabled);
    fwd_security_free(&s);
    assert_int_equal(
        from_conf("<security>\n self_hostname h\n shared_key k\n</security>\n", &s, &err), 0);
    assert_true(s.enabled);
    assert_false(s.user_auth);
    assert_true(s.allow_anonymous_source);
    assert_int_equal(s.n_users + s.n_clients, 0);
    fwd_security_free(&s);
    weir_conf_free(root);
}

static void expect_conf_error(const char *body, const char *message)
{
    char text[1024];
    snprintf(text, sizeof text, "<security>\n%s</security>\n", body);
    fwd_security_t s;
    weir_err_t err;
    memset(&err, 0, sizeof err);
    assert_int_equal(from_conf(text, &s, &err), -1);
    if (!strstr(err.msg, message)) fail_msg("error \"%s\" lacks \"%s\"", err.msg, message);
    assert_non_null(strstr(err.msg, "test.conf:"));
    assert_null(s.users);
    assert_null(s.shared_key);
    weir_conf_free(root);
}

static void test_conf_errors(void **state)
{
    expect_conf_error(" shared_key k\n", "'self_hostname' parameter is required");
    expect_conf_error(" self_hostname h\n", "'shared_key' parameter is required");
    expect_conf_error(" self_hostname h\n shared_key k\n user_auth true\n",
                      "<user> sections required if user_auth enabled");
    expect_conf_error(" self_hostname h\n shared_key k\n allow_anonymous_source false\n",
                      "<client> sections required if allow_anonymous_source disabled");
    expect_conf_error(" self_hostname h\n shared_key k\n <user>\n  username a\n </user>\n",
                      "'password' parameter is required");
    expect_conf_error(" self_hostname h\n shared_key k\n <client>\n  host localhost\n"
                      "  network 10.0.0.0/8\n </client>\n",
                      "both of 'host' and 'network' are specified for client");
    expect_conf_error(" self_hostname h\n shared_key k\n <client>\n  shared_key x\n </client>\n",
                      "Either of 'host' and 'network' must be specified for client");
    const char *bad_networks[] = {"10.0.0.0/33",          "10.0.0/8",  "::1/129",
                                  "10.0.0.0/255.0.255.0", "10.0.0.0/", "x"};
    for (size_t i = 0; i < sizeof bad_networks / sizeof *bad_networks; i++) {
        char body[256], msg[128];
        snprintf(body, sizeof body,
                 " self_hostname h\n shared_key k\n <client>\n  network %s\n </client>\n",
                 bad_networks[i]);
        snprintf(msg, sizeof msg, "network '%s' address format is invalid", bad_networks[i]);
        expect_conf_error(body, msg);
    }
    expect_conf_error(" self_hostname h\n shared_key k\n user_auth maybe\n", "user_auth");
    expect_conf_error(" self_hostname h\n shared_key k\n <client>\n  host host.invalid\n"
                      " </client>\n",
                      "host 'host.invalid' cannot be resolved");
}

int main(void)
{
    weir_log_set_level(WEIR_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha512_vectors),
        cmocka_unit_test(test_h85_helo_bytes),
        cmocka_unit_test(test_h86_ping_vector_success),
        cmocka_unit_test(test_h87_raw_salt_str_and_bin),
        cmocka_unit_test(test_h88_89_shared_key_mismatch),
        cmocka_unit_test(test_h90_invalid_ping),
        cmocka_unit_test(test_h93_user_auth),
        cmocka_unit_test(test_h94_anonymous_denied),
        cmocka_unit_test(test_h95_per_client_key),
        cmocka_unit_test(test_client_networks),
        cmocka_unit_test(test_conf_full),
        cmocka_unit_test(test_conf_defaults_and_absent),
        cmocka_unit_test(test_conf_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
