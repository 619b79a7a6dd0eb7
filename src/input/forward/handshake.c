/* The forward handshake (<security>): HELO out, PING in, PONG out, as Fluentd's in_forward does
 * it (docs/forward-protocol.md section 2).
 *
 * Invariants:
 * - Every PING gets a PONG, even one that is not an array (policy R); the failure PONG is
 *   ["PONG", false, reason, "", ""] and never reveals the server's hostname or a digest.
 * - Checks run in Fluentd's order (shape, client address, shared key, user) and the reasons
 *   are Fluentd's exact strings, which its out_forward logs.
 * - Digests are compared in constant time over the 128 lowercase hex bytes; a digest of any
 *   other length (or in uppercase) simply does not match. Secrets never reach a log line.
 * - The salt and hostname are hashed as the bytes that arrived, whatever their length and
 *   whether they came as str or bin (Fluent Bit sends 16 raw bytes, Fluentd 32 hex chars). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#include "forward_internal.h"
#include "weir/mp.h"

#define FWD_DIGEST_HEX 128 /* SHA-512 as lowercase hex */
#define FWD_PING_FIELDS 6  /* PING, hostname, salt, digest, username, password digest */
#define FWD_REASON_MAX 160 /* "anonymous source host '<ipv6 text>' denied" fits */

void fwd_sha512_hex4(const void *a, size_t alen, const void *b, size_t blen, const void *c,
                     size_t clen, const void *d, size_t dlen, char out[129])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) || !EVP_DigestUpdate(ctx, a, alen) ||
        !EVP_DigestUpdate(ctx, b, blen) || !EVP_DigestUpdate(ctx, c, clen) ||
        !EVP_DigestUpdate(ctx, d, dlen) || !EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != 64) {
        /* only out-of-memory gets here; weir treats that as fatal everywhere */
        fprintf(stderr, "weir: SHA-512 failed (out of memory?)\n");
        abort();
    }
    EVP_MD_CTX_free(ctx);
    for (unsigned i = 0; i < 64; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[FWD_DIGEST_HEX] = '\0';
}

void fwd_helo_build(const uint8_t nonce[FWD_NONCE_LEN], const uint8_t auth[FWD_NONCE_LEN],
                    bool keepalive, weir_buf_t *out)
{
    fwd_buf_array_hdr(out, 2);
    fwd_buf_cstr(out, "HELO");
    fwd_buf_map_hdr(out, 3);
    fwd_buf_cstr(out, "nonce");
    fwd_buf_bin(out, nonce, FWD_NONCE_LEN);
    fwd_buf_cstr(out, "auth");
    fwd_buf_bin(out, auth, FWD_NONCE_LEN);
    fwd_buf_cstr(out, "keepalive");
    weir_buf_putc(out, keepalive ? (char)0xc3 : (char)0xc2);
}

static void pong_build(weir_buf_t *out, bool ok, const char *reason, const char *host,
                       const char *digest)
{
    fwd_buf_array_hdr(out, 5);
    fwd_buf_cstr(out, "PONG");
    weir_buf_putc(out, ok ? (char)0xc3 : (char)0xc2);
    fwd_buf_cstr(out, reason);
    fwd_buf_cstr(out, host);
    fwd_buf_cstr(out, digest);
}

typedef struct fwd_field {
    const char *p;
    size_t n;
    bool text; /* str or bin */
} fwd_field_t;

/* Splits a PING into its fields; false unless it is a 6-element array starting with "PING"
 * whose hostname, salt and digest are strings (str or bin). */
static bool ping_parse(const char *frame, size_t len, fwd_field_t f[FWD_PING_FIELDS])
{
    long long total = fwd_value_len(frame, len, FWD_MAX_DEPTH, NULL);
    if (total <= 0 || (size_t)total != len) return false;
    weir_mp_obj_t o;
    size_t off = (size_t)weir_mp_read(frame, len, &o);
    if (o.type != WEIR_MP_ARRAY || o.v.n != FWD_PING_FIELDS) return false;
    for (int i = 0; i < FWD_PING_FIELDS; i++) {
        size_t n = (size_t)fwd_value_len(frame + off, len - off, FWD_MAX_DEPTH, NULL);
        weir_mp_read(frame + off, n, &o);
        f[i].text = o.type == WEIR_MP_STR || o.type == WEIR_MP_BIN;
        f[i].p = f[i].text ? o.ptr : NULL;
        f[i].n = f[i].text ? o.len : 0;
        off += n;
    }
    if (!f[0].text || f[0].n != 4 || memcmp(f[0].p, "PING", 4) != 0) return false;
    return f[1].text && f[2].text && f[3].text;
}

/* The peer's address bytes in the family of `fam` (IPv4-mapped IPv6 addresses match IPv4
 * networks and the other way round); returns the byte count or 0. */
static size_t peer_bytes(const struct sockaddr *peer, int fam, unsigned char out[16])
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!peer) return 0;
    if (peer->sa_family == AF_INET) {
        const unsigned char *a =
            (const unsigned char *)&((const struct sockaddr_in *)peer)->sin_addr;
        if (fam == AF_INET) {
            memcpy(out, a, 4);
            return 4;
        }
        memcpy(out, mapped, 12);
        memcpy(out + 12, a, 4);
        return 16;
    }
    if (peer->sa_family == AF_INET6) {
        const unsigned char *a =
            (const unsigned char *)&((const struct sockaddr_in6 *)peer)->sin6_addr;
        if (fam == AF_INET6) {
            memcpy(out, a, 16);
            return 16;
        }
        if (memcmp(a, mapped, 12) != 0) return 0;
        memcpy(out, a + 12, 4);
        return 4;
    }
    return 0;
}

static bool client_matches(const fwd_client_t *c, const struct sockaddr *peer)
{
    unsigned char net[16], ip[16];
    int fam = c->addr.ss_family;
    size_t n;
    if (fam == AF_INET) {
        memcpy(net, &((const struct sockaddr_in *)&c->addr)->sin_addr, 4);
        n = 4;
    } else if (fam == AF_INET6) {
        memcpy(net, &((const struct sockaddr_in6 *)&c->addr)->sin6_addr, 16);
        n = 16;
    } else {
        return false;
    }
    if (peer_bytes(peer, fam, ip) != n) return false;
    int bits = c->prefix_len;
    for (size_t i = 0; i < n && bits > 0; i++, bits -= 8) {
        unsigned char mask = bits >= 8 ? 0xff : (unsigned char)(0xff << (8 - bits));
        if ((ip[i] & mask) != (net[i] & mask)) return false;
    }
    return true;
}

static const fwd_client_t *client_find(const fwd_security_t *s, const struct sockaddr *peer)
{
    for (size_t i = 0; i < s->n_clients; i++)
        if (client_matches(&s->clients[i], peer)) return &s->clients[i];
    return NULL;
}

static bool digest_equal(const char expected[FWD_DIGEST_HEX], const fwd_field_t *got)
{
    return got->text && got->n == FWD_DIGEST_HEX &&
           CRYPTO_memcmp(expected, got->p, FWD_DIGEST_HEX) == 0;
}

static bool user_allowed(const fwd_client_t *node, const char *name)
{
    if (!node || node->n_users == 0) return true;
    for (size_t i = 0; i < node->n_users; i++)
        if (strcmp(node->users[i], name) == 0) return true;
    return false;
}

static bool user_check(const fwd_security_t *s, const fwd_client_t *node,
                       const fwd_field_t f[FWD_PING_FIELDS], const uint8_t auth[FWD_NONCE_LEN])
{
    const fwd_field_t *name = &f[4], *digest = &f[5];
    if (!name->text || !digest->text) return false;
    bool ok = false;
    for (size_t i = 0; i < s->n_users; i++) {
        const fwd_user_t *u = &s->users[i];
        if (strlen(u->username) != name->n || memcmp(u->username, name->p, name->n) != 0) continue;
        if (!user_allowed(node, u->username)) continue;
        char want[FWD_DIGEST_HEX + 1];
        fwd_sha512_hex4(auth, FWD_NONCE_LEN, u->username, name->n, u->password, strlen(u->password),
                        "", 0, want);
        ok |= digest_equal(want, digest);
    }
    return ok;
}

static const char *peer_string(const struct sockaddr *peer, const char *peer_text, char *buf,
                               size_t len)
{
    if (peer_text) return peer_text;
    const void *a = NULL;
    if (peer && peer->sa_family == AF_INET) a = &((const struct sockaddr_in *)peer)->sin_addr;
    if (peer && peer->sa_family == AF_INET6) a = &((const struct sockaddr_in6 *)peer)->sin6_addr;
    if (a && inet_ntop(peer->sa_family, a, buf, (socklen_t)len)) return buf;
    return "unknown";
}

bool fwd_ping_check(const fwd_security_t *s, const char *frame, size_t len,
                    const uint8_t nonce[FWD_NONCE_LEN], const uint8_t auth[FWD_NONCE_LEN],
                    const struct sockaddr *peer, const char *peer_text, weir_buf_t *pong,
                    const char **reason)
{
    /* valid until the next call on this thread, like a strerror() buffer */
    static _Thread_local char why[FWD_REASON_MAX];
    fwd_field_t f[FWD_PING_FIELDS];
    const fwd_client_t *node = NULL;
    const char *key;
    char digest[FWD_DIGEST_HEX + 1];

    if (!ping_parse(frame, len, f)) {
        snprintf(why, sizeof why, "invalid ping message");
        goto fail;
    }
    node = client_find(s, peer);
    if (!node && !s->allow_anonymous_source) {
        char ip[INET6_ADDRSTRLEN];
        snprintf(why, sizeof why, "anonymous source host '%s' denied",
                 peer_string(peer, peer_text, ip, sizeof ip));
        goto fail;
    }
    key = node && node->shared_key ? node->shared_key : s->shared_key ? s->shared_key : "";
    fwd_sha512_hex4(f[2].p, f[2].n, f[1].p, f[1].n, nonce, FWD_NONCE_LEN, key, strlen(key), digest);
    if (!digest_equal(digest, &f[3])) {
        snprintf(why, sizeof why, "shared_key mismatch");
        goto fail;
    }
    if (s->user_auth && !user_check(s, node, f, auth)) {
        snprintf(why, sizeof why, "username/password mismatch");
        goto fail;
    }
    const char *self = s->self_hostname ? s->self_hostname : "";
    fwd_sha512_hex4(f[2].p, f[2].n, self, strlen(self), nonce, FWD_NONCE_LEN, key, strlen(key),
                    digest);
    pong_build(pong, true, "", self, digest);
    if (reason) *reason = "";
    return true;

fail:
    pong_build(pong, false, why, "", "");
    if (reason) *reason = why;
    return false;
}

void fwd_security_free(fwd_security_t *s)
{
    free(s->self_hostname);
    free(s->shared_key);
    for (size_t i = 0; i < s->n_users; i++) {
        free(s->users[i].username);
        free(s->users[i].password);
    }
    free(s->users);
    for (size_t i = 0; i < s->n_clients; i++) {
        free(s->clients[i].shared_key);
        for (size_t j = 0; j < s->clients[i].n_users; j++)
            free(s->clients[i].users[j]);
        free(s->clients[i].users);
    }
    free(s->clients);
    memset(s, 0, sizeof *s);
}
