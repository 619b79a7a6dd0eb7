/* What out_forward puts on the wire and reads back, without sockets: the PackedForward frame of
 * a chunk, and the readers of the receiver's replies (ack, HELO, PONG).
 *
 * Invariant: a reply is trusted for nothing before it is read whole, and no reply is read past
 * FO_REPLY_MAX bytes: a hostile receiver can make a send fail, never make the sender hold more
 * than that or read out of bounds. Values are matched by type and exact bytes. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "../../input/forward/forward_internal.h"
#include "fo_internal.h"
#include "weir/forward.h"
#include "weir/inflate.h"
#include "weir/mp.h"

#define FO_REPLY_DEPTH 4 /* HELO: array > map > values; anything deeper is not a reply */

void fo_chunk_id_b64(const uint8_t id[16], char out[FO_CHUNK_ID_B64 + 1])
{
    EVP_EncodeBlock((unsigned char *)out, id, 16);
    out[FO_CHUNK_ID_B64] = '\0';
}

size_t fo_frame_begin(weir_buf_t *out, const char *tag, size_t tag_len)
{
    fwd_buf_array_hdr(out, 3);
    fwd_buf_str(out, tag, tag_len);
    /* bin32 whatever the length (legal msgpack; Fluentd likewise always writes str32), so the
     * length can be patched in once the entries are appended */
    static const char bin32[5] = {(char)0xc6, 0, 0, 0, 0};
    weir_buf_append(out, bin32, sizeof bin32);
    return out->len - 4;
}

/* The options map, in Fluentd's key order: size, compressed, chunk. */
static void frame_options(weir_buf_t *out, uint32_t count, bool gzip, const char *id)
{
    fwd_buf_map_hdr(out, 1 + (gzip ? 1 : 0) + (id ? 1 : 0));
    fwd_buf_cstr(out, "size");
    fwd_buf_int(out, count);
    if (gzip) {
        fwd_buf_cstr(out, "compressed");
        fwd_buf_cstr(out, "gzip");
    }
    if (id) {
        fwd_buf_cstr(out, "chunk");
        fwd_buf_cstr(out, id);
    }
}

int fo_frame_finish(weir_buf_t *out, size_t len_off, uint32_t count, const char *id,
                    weir_err_t *err)
{
    size_t len = out->len - (len_off + 4);
    if (len > UINT32_MAX) {
        weir_err_set(err, "a frame of %zu bytes is more than msgpack's bin32 holds", len);
        return -1;
    }
    fwd_put_be(out->data + len_off, len, 4);
    frame_options(out, count, false, id);
    return 0;
}

int fo_frame_build(const char *tag, size_t tag_len, const char *entries, size_t len, uint32_t count,
                   bool gzip, const char *id, weir_buf_t *scratch, weir_buf_t *out, weir_err_t *err)
{
    if (!gzip) {
        size_t at = fo_frame_begin(out, tag, tag_len);
        weir_buf_append(out, entries, len);
        return fo_frame_finish(out, at, count, id, err);
    }
    scratch->len = 0;
    if (weir_gzip(entries, len, scratch, err) != 0) return -1;
    if (scratch->len > UINT32_MAX) {
        weir_err_set(err, "a frame of %zu bytes is more than msgpack's bin32 holds", scratch->len);
        return -1;
    }
    fwd_buf_array_hdr(out, 3);
    fwd_buf_str(out, tag, tag_len);
    fwd_buf_bin(out, scratch->data, scratch->len);
    frame_options(out, count, true, id);
    return 0;
}

long fo_reply_len(const char *buf, size_t len, weir_err_t *err)
{
    size_t n = len > FO_REPLY_MAX ? FO_REPLY_MAX : len;
    ssize_t r = weir_mp_skip(buf, n, FO_REPLY_DEPTH);
    if (r > 0) return (long)r;
    if (r == WEIR_MP_INCOMPLETE && n < FO_REPLY_MAX) return 0;
    if (r == WEIR_MP_INCOMPLETE)
        weir_err_set(err, "the receiver's reply is longer than %d bytes", FO_REPLY_MAX);
    else if (r == WEIR_MP_TOO_DEEP)
        weir_err_set(err, "the receiver's reply nests deeper than a reply does");
    else
        weir_err_set(err, "the receiver's reply is not msgpack");
    return -1;
}

/* Reads the value at *off (within len), advancing *off past it; false if there is none. */
static bool next(const char *p, size_t len, size_t *off, weir_mp_obj_t *o)
{
    if (*off >= len) return false;
    ssize_t h = weir_mp_read(p + *off, len - *off, o);
    if (h <= 0) return false;
    *off += (size_t)h;
    return true;
}

/* Skips the whole value at *off (its header not yet read). */
static bool skip(const char *p, size_t len, size_t *off)
{
    ssize_t n = weir_mp_skip(p + *off, len - *off, FO_REPLY_DEPTH);
    if (n <= 0) return false;
    *off += (size_t)n;
    return true;
}

static bool is_text(const weir_mp_obj_t *o)
{
    return o->type == WEIR_MP_STR || o->type == WEIR_MP_BIN;
}

static bool text_eq(const weir_mp_obj_t *o, const char *s)
{
    return is_text(o) && o->len == strlen(s) && memcmp(o->ptr, s, o->len) == 0;
}

int fo_ack_check(const char *reply, size_t len, const char *id, weir_err_t *err)
{
    size_t off = 0;
    weir_mp_obj_t o, k, v;
    if (!next(reply, len, &off, &o) || o.type != WEIR_MP_MAP) {
        weir_err_set(err, "the receiver answered something other than an ack map");
        return -1;
    }
    for (uint32_t i = 0; i < o.v.n; i++) {
        if (!next(reply, len, &off, &k)) break;
        if (!text_eq(&k, "ack")) {
            if (!skip(reply, len, &off)) break;
            continue;
        }
        if (!next(reply, len, &off, &v)) break;
        /* a receiver echoes the id byte for byte and as the same type (a str) */
        if (v.type == WEIR_MP_STR && v.len == strlen(id) && memcmp(v.ptr, id, v.len) == 0) return 0;
        weir_err_set(err, "the ack names another chunk than the one sent (%s)", id);
        return -1;
    }
    weir_err_set(err, "the receiver's reply has no \"ack\"");
    return -1;
}

int fo_helo_parse(const char *reply, size_t len, fo_helo_t *h, weir_err_t *err)
{
    size_t off = 0;
    weir_mp_obj_t o, k, v;
    memset(h, 0, sizeof *h);
    h->keepalive = true; /* a missing key means true (SPEC-v1) */
    if (!next(reply, len, &off, &o) || o.type != WEIR_MP_ARRAY || o.v.n != 2 ||
        !next(reply, len, &off, &k) || !text_eq(&k, "HELO") || !next(reply, len, &off, &o) ||
        o.type != WEIR_MP_MAP) {
        weir_err_set(err, "the receiver did not greet with a HELO (is <security> set on it?)");
        return -1;
    }
    bool have_nonce = false;
    for (uint32_t i = 0; i < o.v.n; i++) {
        if (!next(reply, len, &off, &k)) goto bad;
        if (text_eq(&k, "nonce") || text_eq(&k, "auth")) {
            bool nonce = k.len == 5;
            if (!next(reply, len, &off, &v) || !is_text(&v) || v.len > 16) goto bad;
            memcpy(nonce ? h->nonce : h->auth, v.ptr, v.len);
            *(nonce ? &h->nonce_len : &h->auth_len) = v.len;
            have_nonce |= nonce;
        } else if (text_eq(&k, "keepalive")) {
            if (!next(reply, len, &off, &v) || v.type != WEIR_MP_BOOL) goto bad;
            h->keepalive = v.v.b;
        } else if (!skip(reply, len, &off)) {
            goto bad;
        }
    }
    if (have_nonce && h->nonce_len > 0) return 0;
bad:
    weir_err_set(err, "the receiver's HELO is malformed (a nonce of 1 to 16 bytes is needed)");
    return -1;
}

static void digest(const char *salt, const char *host, const fo_helo_t *h, const char *key,
                   char out[129])
{
    fwd_sha512_hex4(salt, strlen(salt), host, strlen(host), h->nonce, h->nonce_len, key,
                    strlen(key), out);
}

void fo_ping_build(const fo_helo_t *h, const char *self_hostname, const char *shared_key,
                   const char *salt, const char *username, const char *password, weir_buf_t *out)
{
    char d[129];
    digest(salt, self_hostname, h, shared_key, d);
    fwd_buf_array_hdr(out, 6);
    fwd_buf_cstr(out, "PING");
    fwd_buf_cstr(out, self_hostname);
    fwd_buf_cstr(out, salt);
    fwd_buf_cstr(out, d);
    if (h->auth_len == 0) { /* Fluentd: username and digest only when the HELO asks */
        fwd_buf_cstr(out, "");
        fwd_buf_cstr(out, "");
        return;
    }
    char pd[129];
    fwd_sha512_hex4(h->auth, h->auth_len, username, strlen(username), password, strlen(password),
                    "", 0, pd);
    fwd_buf_cstr(out, username);
    fwd_buf_cstr(out, pd);
}

int fo_pong_check(const char *reply, size_t len, const fo_helo_t *h, const char *self_hostname,
                  const char *shared_key, const char *salt, weir_err_t *err)
{
    size_t off = 0;
    weir_mp_obj_t o, f[4];
    if (!next(reply, len, &off, &o) || o.type != WEIR_MP_ARRAY || o.v.n != 5 ||
        !next(reply, len, &off, &o) || !text_eq(&o, "PONG"))
        goto bad;
    for (int i = 0; i < 4; i++)
        if (!next(reply, len, &off, &f[i])) goto bad;
    if (f[0].type != WEIR_MP_BOOL || !is_text(&f[1]) || !is_text(&f[2]) || !is_text(&f[3]))
        goto bad;
    if (!f[0].v.b) {
        weir_err_set(err, "the receiver refused the handshake: %.*s",
                     (int)(f[1].len > 200 ? 200 : f[1].len), f[1].ptr);
        return -1;
    }
    if (f[2].len > FO_HOSTNAME_MAX) goto bad;
    char host[FO_HOSTNAME_MAX + 1];
    memcpy(host, f[2].ptr, f[2].len);
    host[f[2].len] = '\0';
    if (strlen(host) != f[2].len) goto bad;
    if (strcmp(host, self_hostname) == 0) {
        /* Fluentd's check: a sender talking to itself, or two ends with one self_hostname */
        weir_err_set(err,
                     "the receiver's self_hostname is ours (%s): same hostname between "
                     "input and output is invalid",
                     host);
        return -1;
    }
    char want[129];
    digest(salt, host, h, shared_key, want);
    if (f[3].len != 128 || CRYPTO_memcmp(want, f[3].ptr, 128) != 0) {
        weir_err_set(err, "the receiver's PONG does not prove the shared key (shared_key "
                          "mismatch)");
        return -1;
    }
    return 0;
bad:
    weir_err_set(err, "the receiver's PONG is malformed");
    return -1;
}
