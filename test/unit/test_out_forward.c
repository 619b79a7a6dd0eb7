/* out_forward's wire pieces (src/output/forward/frame.c): the frames it sends, read back by
 * weir's own forward decoder, and the readers of what a receiver answers, each limit tested on
 * it and one past it. The handshake runs against the forward input's server side. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../src/input/forward/forward_internal.h"
#include "../../src/output/forward/fo_internal.h"
#include "weir/event.h"
#include "weir/forward.h"

static void entries3(weir_batch_t *b)
{
    weir_batch_init(b, "t", 1);
    static const char rec[] = {(char)0x81, (char)0xa1, 'k', (char)0xa1, 'v'}; /* {"k":"v"} */
    for (uint32_t i = 0; i < 3; i++)
        weir_batch_append(b, (weir_time_t){1700000000 + i, 5}, rec, sizeof rec);
}

static void frame_roundtrip(bool gzip)
{
    weir_batch_t in, out;
    entries3(&in);
    weir_batch_init(&out, "", 0);
    weir_buf_t frame, scratch;
    weir_buf_init(&frame);
    weir_buf_init(&scratch);
    uint8_t id[16];
    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)(i * 17);
    char b64[FO_CHUNK_ID_B64 + 1];
    fo_chunk_id_b64(id, b64);
    assert_int_equal(strlen(b64), FO_CHUNK_ID_B64);
    weir_err_t err = {{0}};
    assert_int_equal(fo_frame_build("app.log", 7, in.data.data, in.data.len, in.count, gzip, b64,
                                    &scratch, &frame, &err),
                     0);
    fwd_decode_opts_t o;
    fwd_decode_opts_init(&o);
    fwd_frame_info_t info;
    assert_int_equal(fwd_decode_frame(frame.data, frame.len, &o, &out, &info, &err), 0);
    assert_int_equal(info.mode, gzip ? FWD_MODE_COMPRESSED : FWD_MODE_PACKED);
    assert_string_equal(out.tag, "app.log");
    assert_int_equal(out.count, 3);
    assert_int_equal(out.data.len, in.data.len);
    assert_memory_equal(out.data.data, in.data.data, in.data.len);
    /* the ack the input would send is what the sender accepts */
    weir_buf_t ack;
    weir_buf_init(&ack);
    fwd_ack_build(info.chunk, info.chunk_len, false, &ack);
    assert_int_equal(fo_ack_check(ack.data, ack.len, b64, &err), 0);
    weir_buf_free(&ack);
    weir_buf_free(&frame);
    weir_buf_free(&scratch);
    weir_batch_free(&in);
    weir_batch_free(&out);
}

static void test_frame_packed(void **state)
{
    frame_roundtrip(false);
}

static void test_frame_gzip(void **state)
{
    frame_roundtrip(true);
}

/* A str of `total` bytes in all (header included). */
static void str_of(weir_buf_t *b, size_t total)
{
    size_t hdr = total - 1 <= 31 ? 1 : total - 2 <= 0xff ? 2 : 3;
    char *s = malloc(total);
    memset(s, 'a', total);
    fwd_buf_str(b, s, total - hdr);
    free(s);
    assert_int_equal(b->len, total);
}

static void test_reply_limit(void **state)
{
    weir_err_t err = {{0}};
    weir_buf_t b;
    weir_buf_init(&b);
    str_of(&b, FO_REPLY_MAX); /* exactly the limit: read */
    assert_int_equal(fo_reply_len(b.data, b.len, &err), FO_REPLY_MAX);
    assert_int_equal(fo_reply_len(b.data, b.len - 1, &err), 0); /* not complete yet */
    b.len = 0;
    str_of(&b, FO_REPLY_MAX + 1); /* one past: refused once the limit is buffered */
    assert_int_equal(fo_reply_len(b.data, FO_REPLY_MAX - 1, &err), 0);
    assert_int_equal(fo_reply_len(b.data, b.len, &err), -1);
    assert_non_null(strstr(err.msg, "longer than 1024"));
    /* malformed and too deep */
    assert_int_equal(fo_reply_len("\xc1", 1, &err), -1);
    char deep[8];
    memset(deep, 0x91, sizeof deep);
    assert_int_equal(fo_reply_len(deep, sizeof deep, &err), -1);
    weir_buf_free(&b);
}

static void test_ack_check(void **state)
{
    weir_err_t err = {{0}};
    const char *id = "ABCDEFGHIJKLMNOPQRSTUVWX";
    weir_buf_t b;
    weir_buf_init(&b);
    fwd_buf_map_hdr(&b, 1);
    fwd_buf_cstr(&b, "ack");
    fwd_buf_cstr(&b, id);
    assert_int_equal(fo_ack_check(b.data, b.len, id, &err), 0);
    assert_int_equal(fo_ack_check(b.data, b.len, "ABCDEFGHIJKLMNOPQRSTUVWY", &err), -1);
    assert_non_null(strstr(err.msg, "another chunk"));
    b.len = 0; /* the same bytes as a bin: another type is another value */
    fwd_buf_map_hdr(&b, 1);
    fwd_buf_cstr(&b, "ack");
    fwd_buf_bin(&b, id, strlen(id));
    assert_int_equal(fo_ack_check(b.data, b.len, id, &err), -1);
    b.len = 0;
    fwd_buf_map_hdr(&b, 1);
    fwd_buf_cstr(&b, "nack");
    fwd_buf_cstr(&b, id);
    assert_int_equal(fo_ack_check(b.data, b.len, id, &err), -1);
    assert_non_null(strstr(err.msg, "no \"ack\""));
    assert_int_equal(fo_ack_check("\x90", 1, id, &err), -1);
    weir_buf_free(&b);
}

static void test_helo(void **state)
{
    weir_err_t err = {{0}};
    uint8_t nonce[16], auth[16];
    for (int i = 0; i < 16; i++) {
        nonce[i] = (uint8_t)i;
        auth[i] = (uint8_t)(0x10 + i);
    }
    weir_buf_t b;
    weir_buf_init(&b);
    fwd_helo_build(nonce, auth, false, &b);
    fo_helo_t h;
    assert_int_equal(fo_helo_parse(b.data, b.len, &h, &err), 0);
    assert_int_equal(h.nonce_len, 16);
    assert_memory_equal(h.nonce, nonce, 16);
    assert_int_equal(h.auth_len, 16);
    assert_false(h.keepalive);
    /* a nonce of 17 bytes does not fit: refused, not copied */
    b.len = 0;
    fwd_buf_array_hdr(&b, 2);
    fwd_buf_cstr(&b, "HELO");
    fwd_buf_map_hdr(&b, 1);
    fwd_buf_cstr(&b, "nonce");
    fwd_buf_bin(&b, "0123456789abcdefg", 17);
    assert_int_equal(fo_helo_parse(b.data, b.len, &h, &err), -1);
    /* no nonce */
    b.len = 0;
    fwd_buf_array_hdr(&b, 2);
    fwd_buf_cstr(&b, "HELO");
    fwd_buf_map_hdr(&b, 0);
    assert_int_equal(fo_helo_parse(b.data, b.len, &h, &err), -1);
    /* not a HELO at all (an ack, say) */
    assert_int_equal(fo_helo_parse("\x80", 1, &h, &err), -1);
    weir_buf_free(&b);
}

/* PING from the sender, PONG from weir's forward input, checked by the sender. */
static int handshake(const char *client_key, const char *server_host, weir_err_t *err)
{
    fwd_security_t sec = {.enabled = true, .allow_anonymous_source = true};
    sec.self_hostname = strdup(server_host);
    sec.shared_key = strdup("s3cret");
    uint8_t nonce[16] = {1, 2, 3}, auth[16] = {4, 5, 6};
    weir_buf_t helo, ping, pong;
    weir_buf_init(&helo);
    weir_buf_init(&ping);
    weir_buf_init(&pong);
    fwd_helo_build(nonce, auth, true, &helo);
    fo_helo_t h;
    assert_int_equal(fo_helo_parse(helo.data, helo.len, &h, err), 0);
    const char *salt = "0123456789abcdef0123456789abcdef";
    fo_ping_build(&h, "edge", client_key, salt, "", "", &ping);
    fwd_ping_check(&sec, ping.data, ping.len, nonce, auth, NULL, "127.0.0.1", &pong, NULL);
    int rc = fo_pong_check(pong.data, pong.len, &h, "edge", client_key, salt, err);
    weir_buf_free(&helo);
    weir_buf_free(&ping);
    weir_buf_free(&pong);
    fwd_security_free(&sec);
    return rc;
}

static void test_handshake_with_the_input(void **state)
{
    weir_err_t err = {{0}};
    assert_int_equal(handshake("s3cret", "aggregator", &err), 0);
    assert_int_equal(handshake("wrong", "aggregator", &err), -1);
    assert_non_null(strstr(err.msg, "shared_key mismatch"));
    /* Fluentd's rule: a receiver with our own self_hostname is refused */
    assert_int_equal(handshake("s3cret", "edge", &err), -1);
    assert_non_null(strstr(err.msg, "same hostname"));
}

static void test_pong_forged(void **state)
{
    weir_err_t err = {{0}};
    fo_helo_t h = {.nonce = {1}, .nonce_len = 16, .keepalive = true};
    weir_buf_t b;
    weir_buf_init(&b);
    char digest[129];
    memset(digest, 'a', 128);
    digest[128] = '\0';
    fwd_buf_array_hdr(&b, 5);
    fwd_buf_cstr(&b, "PONG");
    weir_buf_putc(&b, (char)0xc3);
    fwd_buf_cstr(&b, "");
    fwd_buf_cstr(&b, "aggregator");
    fwd_buf_cstr(&b, digest); /* a receiver that does not know the key */
    assert_int_equal(fo_pong_check(b.data, b.len, &h, "edge", "k", "salt", &err), -1);
    assert_non_null(strstr(err.msg, "does not prove"));
    b.len = 0; /* a hostname longer than a hostname can be */
    char host[FO_HOSTNAME_MAX + 2];
    memset(host, 'h', sizeof host - 1);
    host[sizeof host - 1] = '\0';
    fwd_buf_array_hdr(&b, 5);
    fwd_buf_cstr(&b, "PONG");
    weir_buf_putc(&b, (char)0xc3);
    fwd_buf_cstr(&b, "");
    fwd_buf_cstr(&b, host);
    fwd_buf_cstr(&b, digest);
    assert_int_equal(fo_pong_check(b.data, b.len, &h, "edge", "k", "salt", &err), -1);
    assert_non_null(strstr(err.msg, "malformed"));
    weir_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_packed), cmocka_unit_test(test_frame_gzip),
        cmocka_unit_test(test_reply_limit),  cmocka_unit_test(test_ack_check),
        cmocka_unit_test(test_helo),         cmocka_unit_test(test_handshake_with_the_input),
        cmocka_unit_test(test_pong_forged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
