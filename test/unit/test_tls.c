/* TLS listeners (src/net/tls.c): certificates made by the real `openssl` tool in a temporary
 * directory, a real uv loop serving 127.0.0.1 in this thread, and clients in a second thread
 * (OpenSSL over a blocking socket) or the real `openssl s_client`.
 *
 * The certificates mirror teleport-event-handler's `configure`: CN=CA, CN=Server (serverAuth,
 * SAN localhost and 127.0.0.1) with its key encrypted under a 64-hex passphrase, CN=Client
 * (clientAuth). The expired client certificate comes from `openssl ca -startdate -enddate`
 * with a minimal CA config, because OpenSSL 3.0's `x509 -req` cannot backdate a certificate
 * and faketime is not installed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "weir/config.h"
#include "weir/log.h"
#include "weir/net.h"

/* ---- certificates ---------------------------------------------------------------------- */

static char g_dir[64];
static char g_pass[65]; /* 64 hex characters, as `configure` makes */

static const char *path(const char *name)
{
    static char ring[32][256];
    static int next;
    char *p = ring[next++ % 32];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

static const char gen_script[] =
    "set -e\n"
    "cat > ca.cnf <<'EOF'\n"
    "[ca]\n"
    "default_ca = testca\n"
    "[testca]\n"
    "database = db/index.txt\n"
    "serial = db/serial\n"
    "new_certs_dir = db\n"
    "default_md = sha256\n"
    "policy = anything\n"
    "unique_subject = no\n"
    "[anything]\n"
    "commonName = supplied\n"
    "[client_ext]\n"
    "keyUsage = critical,digitalSignature\n"
    "extendedKeyUsage = clientAuth\n"
    "EOF\n"
    "mkdir -p db && : > db/index.txt && echo 1000 > db/serial\n"
    "printf 'basicConstraints=CA:false\\nkeyUsage=critical,digitalSignature\\n"
    "extendedKeyUsage=serverAuth\\nsubjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext\n"
    "printf 'basicConstraints=CA:false\\nkeyUsage=critical,digitalSignature\\n"
    "extendedKeyUsage=clientAuth\\nsubjectAltName=DNS:localhost,IP:127.0.0.1\\n' > client.ext\n"
    "CAEXT='-addext basicConstraints=critical,CA:true,pathlen:0 "
    "-addext keyUsage=critical,keyCertSign,cRLSign'\n"
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -subj /CN=CA "
    "-days 3650 $CAEXT\n"
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout other_ca.key -out other_ca.crt "
    "-subj /CN=CA -days 3650 $CAEXT\n"
    "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=Server\n"
    "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 "
    "-sha256 -extfile server.ext -out server.crt\n"
    "cat server.crt ca.crt > server.chain.crt\n"
    "openssl rsa -in server.key -aes256 -traditional -passout env:PASS -out server.legacy.key\n"
    "openssl pkey -in server.key -aes256 -passout env:PASS -out server.p8.key\n"
    "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=Client\n"
    "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 "
    "-sha256 -extfile client.ext -out client.crt\n"
    "openssl x509 -req -in client.csr -CA other_ca.crt -CAkey other_ca.key -CAcreateserial "
    "-days 365 -sha256 -extfile client.ext -out other.crt\n"
    "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 "
    "-sha256 -extfile server.ext -out serveronly.crt\n"
    "openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in client.csr "
    "-out expired.crt -startdate 20200101000000Z -enddate 20200102000000Z "
    "-extensions client_ext -notext\n";

static int group_setup(void **state)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/weir-tls-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1) return -1;
    for (int i = 0; i < 32; i++)
        snprintf(g_pass + 2 * i, 3, "%02x", raw[i]);
    FILE *f = fopen(path("gen.sh"), "w");
    if (!f) return -1;
    fputs(gen_script, f);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cd %s && PASS=%s sh gen.sh > gen.log 2>&1", g_dir, g_pass);
    if (system(cmd) != 0) {
        fprintf(stderr, "certificate generation failed, see %s/gen.log\n", g_dir);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- the test input -------------------------------------------------------------------- */

typedef struct srv {
    uv_loop_t loop;
    uv_timer_t tick;
    weir_listener_t *l;
    int port;

    int accepted, ready, datas, eofs, closes, tls_fails;
    weir_conn_t *conn;
    weir_buf_t got;
    char close_reason[256];
    char fail_peer[64];
    char fail_reason[256];

    bool echo;
    bool pause_in_data;
    const char *accept_greeting; /* written from on_accept, before the handshake */
    const char *reply_to;        /* when `got` ends with this ... */
    const char *reply;           /* ... write this and close */
    size_t close_at;             /* close once this many bytes arrived */
} srv_t;

static srv_t g_srv;

static void pattern(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)((i * 13 + (i >> 12)) & 0xff);
}

static void t_on_data(weir_conn_t *c, const char *data, size_t len)
{
    srv_t *s = weir_conn_get_data(c);
    s->datas++;
    weir_buf_append(&s->got, data, len);
    if (s->echo) weir_conn_write(c, data, len);
    if (s->pause_in_data) weir_conn_pause(c);
    if (s->close_at && s->got.len >= s->close_at) weir_conn_close(c, NULL);
    size_t rn = s->reply_to ? strlen(s->reply_to) : 0;
    if (rn && s->got.len >= rn && memcmp(s->got.data + s->got.len - rn, s->reply_to, rn) == 0) {
        weir_conn_write(c, s->reply, strlen(s->reply));
        weir_conn_close(c, NULL);
    }
}

static void t_on_eof(weir_conn_t *c)
{
    srv_t *s = weir_conn_get_data(c);
    s->eofs++;
    weir_conn_close(c, NULL);
}

static void t_on_ready(weir_conn_t *c)
{
    srv_t *s = weir_conn_get_data(c);
    s->ready++;
}

static void t_on_close(weir_conn_t *c, const char *reason)
{
    srv_t *s = weir_conn_get_data(c);
    s->closes++;
    snprintf(s->close_reason, sizeof s->close_reason, "%s", reason ? reason : "");
    if (s->conn == c) s->conn = NULL;
}

static const weir_conn_cbs_t t_cbs = {
    .on_data = t_on_data,
    .on_eof = t_on_eof,
    .on_ready = t_on_ready,
    .on_close = t_on_close,
};

static void t_on_accept(weir_listener_t *l, weir_conn_t *c)
{
    srv_t *s = weir_listener_data(l);
    s->accepted++;
    s->conn = c;
    weir_conn_setup(c, &t_cbs, s);
    if (s->accept_greeting) weir_conn_write(c, s->accept_greeting, strlen(s->accept_greeting));
}

static void t_on_tls_fail(weir_listener_t *l, const char *peer, const char *reason)
{
    srv_t *s = weir_listener_data(l);
    s->tls_fails++;
    snprintf(s->fail_peer, sizeof s->fail_peer, "%s", peer);
    snprintf(s->fail_reason, sizeof s->fail_reason, "%s", reason);
}

/* ---- loop helpers ---------------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void tick_cb(uv_timer_t *t) {}

static void run_once(srv_t *s)
{
    uv_timer_start(&s->tick, tick_cb, 2, 0);
    uv_run(&s->loop, UV_RUN_ONCE);
}

#define RUN_UNTIL(s, cond)                                                                         \
    do {                                                                                           \
        uint64_t deadline_ = now_ms() + 30000;                                                     \
        while (!(cond) && now_ms() < deadline_)                                                    \
            run_once(s);                                                                           \
        assert_true(cond);                                                                         \
    } while (0)

#define RUN_FOR(s, ms)                                                                             \
    do {                                                                                           \
        uint64_t deadline_ = now_ms() + (ms);                                                      \
        while (now_ms() < deadline_)                                                               \
            run_once(s);                                                                           \
    } while (0)

/* The server most tests use: Teleport's fluent.conf (mTLS, encrypted key), with the chain. */
static weir_tls_opts_t mtls_opts(void)
{
    weir_tls_opts_t o = {
        .enabled = true,
        .cert_path = (char *)path("server.chain.crt"),
        .private_key_path = (char *)path("server.legacy.key"),
        .private_key_passphrase = g_pass,
        .ca_path = (char *)path("ca.crt"),
        .client_cert_auth = true,
    };
    return o;
}

static void start_server(srv_t *s, const weir_tls_opts_t *tls, double hs_timeout)
{
    weir_listener_opts_t o = {
        .bind = "127.0.0.1",
        .tls = tls,
        .tls_handshake_timeout = hs_timeout,
        .linger_timeout = -1,
        .on_accept = t_on_accept,
        .on_tls_fail = t_on_tls_fail,
        .data = s,
    };
    weir_err_t err = {{0}};
    s->l = weir_listener_new(&s->loop, &o, &err);
    if (!s->l) fail_msg("listener: %s", err.msg);
    s->port = weir_listener_port(s->l);
}

static int setup(void **state)
{
    srv_t *s = &g_srv;
    memset(s, 0, sizeof *s);
    weir_buf_init(&s->got);
    assert_int_equal(uv_loop_init(&s->loop), 0);
    uv_timer_init(&s->loop, &s->tick);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    srv_t *s = *state;
    if (s->conn) weir_conn_abort(s->conn, "teardown");
    if (s->l) weir_listener_close(s->l);
    uv_close((uv_handle_t *)&s->tick, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&s->loop), 0);
    weir_buf_free(&s->got);
    return 0;
}

/* ---- the in-process client ------------------------------------------------------------- */

typedef struct tcli {
    int port;
    const char *cert; /* NULL: no client certificate */
    bool verify_server;
    const char *alpn; /* "h2,http/1.1" */
    int min_version, max_version;
    size_t send_len; /* pattern bytes sent after the handshake */
    int records;     /* or: this many records of record_size, in one TCP write */
    size_t record_size;
    size_t expect_len; /* bytes to read back */
    bool wait_close;   /* then read until the server closes */

    pthread_t th;
    atomic_int done;
    int local_port;
    bool connected; /* SSL_connect succeeded */
    bool failed;    /* the handshake or a later read failed */
    char err[256];
    char alpn_got[32];
    int version;
    weir_buf_t got;
    bool clean_close; /* the server's close_notify arrived */
} tcli_t;

static void cli_err(tcli_t *c, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[200] = "";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    snprintf(c->err, sizeof c->err, "%s: %s", what, buf);
    ERR_clear_error();
    c->failed = true;
}

static int cli_socket(int port, int *local_port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct sockaddr_in l;
    socklen_t len = sizeof l;
    getsockname(fd, (struct sockaddr *)&l, &len);
    if (local_port) *local_port = ntohs(l.sin_port);
    return fd;
}

static SSL_CTX *cli_ctx(tcli_t *c)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (c->min_version) SSL_CTX_set_min_proto_version(ctx, c->min_version);
    if (c->max_version) SSL_CTX_set_max_proto_version(ctx, c->max_version);
    if (c->cert) {
        SSL_CTX_use_certificate_file(ctx, c->cert, SSL_FILETYPE_PEM);
        SSL_CTX_use_PrivateKey_file(ctx, path("client.key"), SSL_FILETYPE_PEM);
    }
    if (c->verify_server) {
        SSL_CTX_load_verify_locations(ctx, path("ca.crt"), NULL);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
}

static void cli_set_alpn(SSL *ssl, const char *list)
{
    unsigned char wire[64];
    size_t n = 0;
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        wire[n++] = (unsigned char)len;
        memcpy(wire + n, p, len);
        n += len;
        p += len + (comma ? 1 : 0);
    }
    SSL_set_alpn_protos(ssl, wire, (unsigned)n);
}

/* One TCP write holding every record, so the server decrypts more than it delivers before
 * its input pauses. */
static void cli_send_records(tcli_t *c, SSL *ssl)
{
    BIO *sock = SSL_get_rbio(ssl);
    BIO *buf = BIO_new(BIO_f_buffer());
    BIO_set_write_buffer_size(buf, 256 * 1024);
    BIO_up_ref(sock);
    BIO_push(buf, sock);
    SSL_set0_wbio(ssl, buf);
    size_t total = (size_t)c->records * c->record_size;
    char *p = malloc(total);
    pattern(p, total);
    for (int i = 0; i < c->records; i++) {
        size_t w;
        if (SSL_write_ex(ssl, p + (size_t)i * c->record_size, c->record_size, &w) != 1)
            cli_err(c, "SSL_write");
    }
    BIO_flush(buf);
    free(p);
}

static void cli_read(tcli_t *c, SSL *ssl)
{
    char buf[16384];
    while (c->got.len < c->expect_len || c->wait_close) {
        size_t n = 0;
        if (SSL_read_ex(ssl, buf, sizeof buf, &n) == 1) {
            weir_buf_append(&c->got, buf, n);
            continue;
        }
        if (SSL_get_error(ssl, 0) == SSL_ERROR_ZERO_RETURN)
            c->clean_close = true;
        else if (c->got.len < c->expect_len || !c->wait_close)
            cli_err(c, "SSL_read");
        else
            cli_err(c, "SSL_read after the data");
        break;
    }
}

static void *cli_main(void *arg)
{
    tcli_t *c = arg;
    SSL_CTX *ctx = cli_ctx(c);
    SSL *ssl = SSL_new(ctx);
    int fd = cli_socket(c->port, &c->local_port);
    if (fd < 0) {
        snprintf(c->err, sizeof c->err, "connect: %s", strerror(errno));
        c->failed = true;
        goto out;
    }
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (c->verify_server) SSL_set1_host(ssl, "localhost");
    if (c->alpn) cli_set_alpn(ssl, c->alpn);
    if (SSL_connect(ssl) != 1) {
        cli_err(c, "SSL_connect");
        goto out;
    }
    c->connected = true;
    c->version = SSL_version(ssl);
    const unsigned char *alpn;
    unsigned alpn_len;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    snprintf(c->alpn_got, sizeof c->alpn_got, "%.*s", (int)alpn_len, alpn ? (char *)alpn : "");
    if (c->send_len) {
        char *p = malloc(c->send_len);
        pattern(p, c->send_len);
        size_t w;
        if (SSL_write_ex(ssl, p, c->send_len, &w) != 1) cli_err(c, "SSL_write");
        free(p);
    }
    if (c->records) cli_send_records(c, ssl);
    cli_read(c, ssl);
    if (!c->failed) SSL_shutdown(ssl);
out:
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0) close(fd);
    ERR_clear_error();
    atomic_store(&c->done, 1);
    return NULL;
}

static void cli_start(tcli_t *c, int port)
{
    c->port = port;
    weir_buf_init(&c->got);
    atomic_store(&c->done, 0);
    assert_int_equal(pthread_create(&c->th, NULL, cli_main, c), 0);
}

static void cli_finish(srv_t *s, tcli_t *c)
{
    RUN_UNTIL(s, atomic_load(&c->done));
    pthread_join(c->th, NULL);
}

static void cli_free(tcli_t *c)
{
    weir_buf_free(&c->got);
}

static tcli_t good_client(void)
{
    tcli_t c = {.cert = path("client.crt"), .verify_server = true, .alpn = "h2,http/1.1"};
    return c;
}

/* ---- context errors -------------------------------------------------------------------- */

static void expect_ctx_error(const weir_tls_opts_t *o, const char *want1, const char *want2)
{
    weir_err_t err = {{0}};
    weir_tls_ctx_t *ctx = weir_tls_ctx_new(o, &err);
    if (ctx) weir_tls_ctx_free(ctx);
    assert_null(ctx);
    if (!strstr(err.msg, want1) || (want2 && !strstr(err.msg, want2)))
        fail_msg("error '%s' lacks '%s' / '%s'", err.msg, want1, want2 ? want2 : "");
    /* the passphrase is a secret: never part of a message */
    assert_null(strstr(err.msg, g_pass));
}

static void expect_ctx_ok(const weir_tls_opts_t *o)
{
    weir_err_t err = {{0}};
    weir_tls_ctx_t *ctx = weir_tls_ctx_new(o, &err);
    if (!ctx) fail_msg("unexpected error: %s", err.msg);
    weir_tls_ctx_free(ctx);
}

static void test_encrypted_keys_load(void **state)
{
    weir_tls_opts_t o = mtls_opts();
    expect_ctx_ok(&o); /* legacy PEM, Proc-Type/DEK-Info */
    o.private_key_path = (char *)path("server.p8.key");
    expect_ctx_ok(&o); /* PKCS#8 ENCRYPTED PRIVATE KEY */
    o.private_key_path = (char *)path("server.key");
    expect_ctx_ok(&o); /* not encrypted: the passphrase is not needed */
    o.private_key_passphrase = NULL;
    expect_ctx_ok(&o);
    o.cert_path = (char *)path("server.crt"); /* the leaf alone */
    expect_ctx_ok(&o);
}

static void test_key_errors_name_the_file(void **state)
{
    weir_tls_opts_t o = mtls_opts();
    char wrong[65];
    memcpy(wrong, g_pass, sizeof wrong);
    wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
    o.private_key_passphrase = wrong;
    expect_ctx_error(&o, path("server.legacy.key"), "wrong private_key_passphrase?");
    o.private_key_path = (char *)path("server.p8.key");
    expect_ctx_error(&o, path("server.p8.key"), "wrong private_key_passphrase?");
    o.private_key_passphrase = NULL;
    expect_ctx_error(&o, path("server.p8.key"), "set private_key_passphrase");
    o.private_key_path = (char *)path("server.legacy.key");
    expect_ctx_error(&o, path("server.legacy.key"), "set private_key_passphrase");

    o = mtls_opts();
    o.private_key_path = (char *)path("missing.key");
    expect_ctx_error(&o, path("missing.key"), "No such file");
    o = mtls_opts();
    o.cert_path = (char *)path("missing.crt");
    expect_ctx_error(&o, path("missing.crt"), "No such file");
    o = mtls_opts();
    o.cert_path = (char *)path("server.csr"); /* not a certificate */
    expect_ctx_error(&o, path("server.csr"), "cannot read certificate");
    o = mtls_opts();
    o.private_key_path = (char *)path("other_ca.key");
    o.private_key_passphrase = NULL;
    expect_ctx_error(&o, path("other_ca.key"), "does not match");
    o = mtls_opts();
    o.ca_path = (char *)path("missing-ca.crt");
    expect_ctx_error(&o, path("missing-ca.crt"), "CA file");
}

static void test_option_errors(void **state)
{
    weir_tls_opts_t o = mtls_opts();
    o.version = "TLSv1_9";
    expect_ctx_error(&o, "TLSv1_9", "TLSv1_2");
    o = mtls_opts();
    o.min_version = "TLSv1_3";
    o.max_version = "TLSv1_2";
    expect_ctx_error(&o, "min_version TLSv1_3", "max_version TLSv1_2");
    o = mtls_opts();
    o.ciphers = "NO-SUCH-CIPHER";
    expect_ctx_error(&o, "NO-SUCH-CIPHER", NULL);
    o = mtls_opts();
    o.ca_path = NULL;
    expect_ctx_error(&o, "client_cert_auth needs ca_path", NULL);
    o = mtls_opts();
    o.cert_path = NULL;
    expect_ctx_error(&o, "cert_path", "insecure");
    o = mtls_opts();
    o.min_version = "TLS1_2"; /* Fluentd's other spelling */
    o.max_version = "TLS1_3";
    expect_ctx_ok(&o);
}

/* ---- handshakes ------------------------------------------------------------------------ */

static void test_mtls_roundtrip_1mib(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = mtls_opts();
    start_server(s, &o, 0);
    s->echo = true;
    tcli_t c = good_client();
    c.send_len = 1u << 20;
    c.expect_len = 1u << 20;
    cli_start(&c, s->port);
    cli_finish(s, &c);
    if (c.failed) fail_msg("client: %s", c.err);
    assert_true(c.connected);
    assert_int_equal(c.version, TLS1_3_VERSION); /* weir's default: TLS 1.2 to 1.3 */
    assert_string_equal(c.alpn_got, "http/1.1"); /* offered h2,http/1.1; never h2 */
    assert_int_equal(c.got.len, 1u << 20);
    char *want = malloc(1u << 20);
    pattern(want, 1u << 20);
    assert_memory_equal(c.got.data, want, 1u << 20);
    assert_memory_equal(s->got.data, want, 1u << 20);
    free(want);
    RUN_UNTIL(s, s->closes == 1);
    assert_int_equal(s->ready, 1);
    assert_int_equal(s->eofs, 1); /* the client's close_notify */
    assert_int_equal(s->tls_fails, 0);
    assert_string_equal(s->close_reason, "");
    cli_free(&c);
}

static void test_pkcs8_key_server(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = mtls_opts();
    o.private_key_path = (char *)path("server.p8.key");
    start_server(s, &o, 0);
    s->echo = true;
    tcli_t c = good_client();
    c.send_len = 100;
    c.expect_len = 100;
    cli_start(&c, s->port);
    cli_finish(s, &c);
    if (c.failed) fail_msg("client: %s", c.err);
    assert_int_equal(c.got.len, 100);
    RUN_UNTIL(s, s->closes == 1);
    cli_free(&c);
}

/* The client must learn why from the alert (Go shows "remote error: tls: unknown
 * certificate authority"), and the server reports the peer and OpenSSL's reason. */
static void refused(srv_t *s, const char *cert, const char *reason_part, const char *alert)
{
    int fails = s->tls_fails, closes = s->closes;
    tcli_t c = good_client();
    c.cert = cert;
    c.expect_len = 1;
    cli_start(&c, s->port);
    cli_finish(s, &c);
    assert_true(c.failed);
    if (!strstr(c.err, alert)) fail_msg("client error '%s' lacks '%s'", c.err, alert);
    assert_int_equal(c.got.len, 0);
    RUN_UNTIL(s, s->closes == closes + 1);
    assert_int_equal(s->tls_fails, fails + 1);
    char peer[64];
    snprintf(peer, sizeof peer, "127.0.0.1:%d", c.local_port);
    assert_string_equal(s->fail_peer, peer);
    if (!strstr(s->fail_reason, reason_part))
        fail_msg("reason '%s' lacks '%s'", s->fail_reason, reason_part);
    assert_non_null(strstr(s->close_reason, "TLS handshake failed"));
    assert_int_equal(s->ready, 0);
    assert_int_equal(s->datas, 0);
    cli_free(&c);
}

static void test_bad_client_certs_refused(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = mtls_opts();
    o.version = "TLSv1_2"; /* the alerts as a TLS 1.2 client sees them; 1.3 below */
    start_server(s, &o, 0);
    s->echo = true;
    refused(s, NULL, "did not return a certificate", "alert handshake failure");
    refused(s, path("other.crt"), "unable to get local issuer certificate", "alert unknown ca");
    refused(s, path("expired.crt"), "certificate has expired", "alert certificate expired");
    refused(s, path("serveronly.crt"), "unsuitable certificate purpose",
            "alert unsupported certificate");
    assert_int_equal(s->accepted, 4);
}

/* In TLS 1.3 the client finishes before the server has checked its certificate, so the
 * refusal reaches the client on its first read; on_ready still never fires. */
static void test_bad_client_cert_refused_tls13(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = mtls_opts();
    start_server(s, &o, 0);
    s->echo = true;
    refused(s, path("expired.crt"), "certificate has expired", "alert certificate expired");
}

static void test_alpn(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = mtls_opts();
    start_server(s, &o, 0);
    const char *offers[] = {"h2", NULL, "http/1.1", "h2,http/1.1"};
    const char *want[] = {"", "", "http/1.1", "http/1.1"};
    for (int i = 0; i < 4; i++) {
        tcli_t c = good_client();
        c.alpn = offers[i];
        cli_start(&c, s->port);
        cli_finish(s, &c);
        if (c.failed) fail_msg("client %d: %s", i, c.err);
        assert_true(c.connected);
        assert_string_equal(c.alpn_got, want[i]);
        RUN_UNTIL(s, s->closes == i + 1);
        cli_free(&c);
    }
    assert_int_equal(s->ready, 4);
}

static void test_versions(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = mtls_opts();
    start_server(s, &o, 0);
    /* the default server takes TLS 1.2 and 1.3: a TLS 1.3-only client and a TLS 1.2-only one
     * are both served */
    tcli_t c = good_client();
    c.min_version = TLS1_3_VERSION;
    cli_start(&c, s->port);
    cli_finish(s, &c);
    if (c.failed) fail_msg("client: %s", c.err);
    assert_int_equal(c.version, TLS1_3_VERSION);
    assert_string_equal(c.alpn_got, "http/1.1");
    RUN_UNTIL(s, s->closes == 1);
    cli_free(&c);
    c = good_client();
    c.max_version = TLS1_2_VERSION;
    cli_start(&c, s->port);
    cli_finish(s, &c);
    if (c.failed) fail_msg("client: %s", c.err);
    assert_int_equal(c.version, TLS1_2_VERSION);
    RUN_UNTIL(s, s->closes == 2);
    cli_free(&c);
    weir_listener_close(s->l);

    /* version TLSv1_2 alone means min = max = 1.2 (Fluentd): a TLS 1.3-only client fails */
    o.version = "TLSv1_2";
    start_server(s, &o, 0);
    c = good_client();
    c.min_version = TLS1_3_VERSION;
    cli_start(&c, s->port);
    cli_finish(s, &c);
    assert_false(c.connected);
    RUN_UNTIL(s, s->tls_fails == 1 && s->closes == 3);
    assert_non_null(strstr(s->fail_reason, "unsupported protocol"));
    cli_free(&c);
    weir_listener_close(s->l);

    /* version TLSv1_3 alone means min = max = 1.3: a TLS 1.2-only client fails */
    o.min_version = o.max_version = NULL;
    o.version = "TLSv1_3";
    start_server(s, &o, 0);
    c = good_client();
    c.max_version = TLS1_2_VERSION;
    cli_start(&c, s->port);
    cli_finish(s, &c);
    assert_false(c.connected);
    RUN_UNTIL(s, s->tls_fails == 2 && s->closes == 4);
    cli_free(&c);
}

/* Plaintext written before the handshake (from on_accept) never leaks: a plaintext client
 * gets at most a TLS alert record, and a TLS client gets it encrypted, first. */
static void test_plaintext_client_gets_no_plaintext(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = mtls_opts();
    start_server(s, &o, 0);
    s->accept_greeting = "HELO-SECRET-GREETING";
    int lport = 0;
    int fd = cli_socket(s->port, &lport);
    assert_true(fd >= 0);
    const char req[] = "POST /test.log HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof req - 1, MSG_NOSIGNAL), (ssize_t)(sizeof req - 1));
    RUN_UNTIL(s, s->closes == 1);
    char buf[4096];
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    assert_true(got < sizeof buf);
    assert_null(memmem(buf, got, "HELO", 4));
    if (got) assert_int_equal((unsigned char)buf[0], 0x15); /* an alert record, nothing else */
    assert_int_equal(s->tls_fails, 1);
    char peer[64];
    snprintf(peer, sizeof peer, "127.0.0.1:%d", lport);
    assert_string_equal(s->fail_peer, peer);
    assert_int_equal(s->ready, 0);
    assert_int_equal(s->datas, 0);

    tcli_t c = good_client();
    c.expect_len = strlen(s->accept_greeting);
    cli_start(&c, s->port);
    cli_finish(s, &c);
    if (c.failed) fail_msg("client: %s", c.err);
    assert_memory_equal(c.got.data, "HELO-SECRET-GREETING", c.expect_len);
    RUN_UNTIL(s, s->closes == 2);
    cli_free(&c);
}

/* A port probe that connects and leaves is not a failed handshake; a client that starts a
 * handshake and never finishes it is, once the timeout passes. */
static void test_probe_and_handshake_timeout(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = mtls_opts();
    start_server(s, &o, 0.2);
    int fd = cli_socket(s->port, NULL);
    assert_true(fd >= 0);
    close(fd);
    RUN_UNTIL(s, s->closes == 1);
    assert_int_equal(s->tls_fails, 0);

    int lport = 0;
    fd = cli_socket(s->port, &lport);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, "\x16\x03\x01", 3, MSG_NOSIGNAL), 3); /* half a record header */
    RUN_UNTIL(s, s->closes == 2);
    assert_int_equal(s->tls_fails, 1);
    assert_non_null(strstr(s->fail_reason, "no handshake within 0.2 s"));
    char peer[64];
    snprintf(peer, sizeof peer, "127.0.0.1:%d", lport);
    assert_string_equal(s->fail_peer, peer);
    char buf[64];
    assert_true(recv(fd, buf, sizeof buf, 0) <= 0 || buf[0] == 0x15);
    close(fd);
    assert_int_equal(s->ready, 0);
}

static void test_pause_resume_holds_decrypted_data(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = mtls_opts();
    start_server(s, &o, 0);
    s->pause_in_data = true;
    s->close_at = 20 * 1000;
    tcli_t c = good_client();
    c.records = 20;
    c.record_size = 1000;
    c.wait_close = true;
    cli_start(&c, s->port);
    RUN_UNTIL(s, s->datas == 1);
    s->pause_in_data = false;
    RUN_FOR(s, 200);
    assert_int_equal(s->datas, 1);
    assert_int_equal(s->got.len, 1000); /* one record, the rest held back */
    assert_true(weir_conn_paused(s->conn));
    weir_conn_resume(s->conn);
    cli_finish(s, &c);
    if (c.failed) fail_msg("client: %s", c.err);
    assert_true(c.clean_close); /* close_notify from the graceful close */
    assert_int_equal(s->got.len, 20 * 1000);
    char want[20 * 1000];
    pattern(want, sizeof want);
    assert_memory_equal(s->got.data, want, sizeof want);
    RUN_UNTIL(s, s->closes == 1);
    cli_free(&c);
}

static void test_insecure_self_signed(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = {.enabled = true, .insecure = true};
    start_server(s, &o, 0);
    s->echo = true;
    tcli_t c = {.send_len = 5, .expect_len = 5};
    cli_start(&c, s->port);
    cli_finish(s, &c);
    if (c.failed) fail_msg("client: %s", c.err);
    assert_int_equal(c.got.len, 5);
    RUN_UNTIL(s, s->closes == 1);
    cli_free(&c);
}

/* ---- the real openssl s_client --------------------------------------------------------- */

typedef struct sclient {
    char cmd[1024];
    int rc;
    atomic_int done;
} sclient_t;

static void *sclient_main(void *arg)
{
    sclient_t *sc = arg;
    sc->rc = system(sc->cmd);
    atomic_store(&sc->done, 1);
    return NULL;
}

static char *run_s_client(srv_t *s, const char *extra, const char *out)
{
    sclient_t sc = {.rc = -1};
    snprintf(sc.cmd, sizeof sc.cmd,
             "printf 'ping\\n' | timeout 20 openssl s_client -connect 127.0.0.1:%d "
             "-servername localhost -CAfile %s -verify_return_error -alpn h2,http/1.1 "
             "-ign_eof %s > %s 2>&1",
             s->port, path("ca.crt"), extra, out);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sclient_main, &sc), 0);
    RUN_UNTIL(s, atomic_load(&sc.done));
    pthread_join(th, NULL);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    char *text = calloc(1, 65536);
    size_t n = fread(text, 1, 65535, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

static void test_openssl_s_client(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = mtls_opts();
    start_server(s, &o, 0);
    s->reply_to = "ping\n";
    s->reply = "pong\n";
    char extra[600];
    snprintf(extra, sizeof extra, "-cert %s -key %s", path("client.crt"), path("client.key"));
    char *text = run_s_client(s, extra, path("s_client.out"));
    if (!strstr(text, "ALPN protocol: http/1.1") || !strstr(text, "New, TLSv1.3, Cipher is ") ||
        !strstr(text, "Verify return code: 0 (ok)") || !strstr(text, "pong"))
        fail_msg("unexpected s_client output:\n%s", text);
    free(text);
    RUN_UNTIL(s, s->closes == 1);
    assert_int_equal(s->got.len, 5);
    assert_memory_equal(s->got.data, "ping\n", 5);
    assert_int_equal(s->tls_fails, 0);

    /* without a client certificate: refused in the handshake, nothing echoed */
    weir_buf_free(&s->got);
    text = run_s_client(s, "", path("s_client_nocert.out"));
    assert_null(strstr(text, "pong"));
    free(text);
    RUN_UNTIL(s, s->closes == 2);
    assert_int_equal(s->tls_fails, 1);
    assert_int_equal(s->got.len, 0);
}

/* One s_client run with the client certificate and `args`; true when it was served (the
 * reply came back), with the protocol and cipher it reports checked when given. */
static bool s_client_served(srv_t *s, const char *args, const char *protocol, const char *cipher)
{
    char extra[800];
    snprintf(extra, sizeof extra, "-brief -cert %s -key %s %s", path("client.crt"),
             path("client.key"), args);
    int closes = s->closes;
    char *text = run_s_client(s, extra, path("s_client_v.out"));
    RUN_UNTIL(s, s->closes == closes + 1);
    bool served = strstr(text, "pong") != NULL;
    char want[128];
    if (served && protocol) {
        snprintf(want, sizeof want, "Protocol version: %s\n", protocol);
        if (!strstr(text, want)) fail_msg("s_client %s: no '%s' in:\n%s", args, want, text);
    }
    if (served && cipher) {
        snprintf(want, sizeof want, "Ciphersuite: %s\n", cipher);
        if (!strstr(text, want)) fail_msg("s_client %s: no '%s' in:\n%s", args, want, text);
    }
    free(text);
    return served;
}

/* The defaults: TLS 1.2 and 1.3, and in 1.2 only ECDHE key exchange with AEAD suites (no
 * static RSA, no CBC). Then Fluentd's min_version, max_version and ciphers, honoured. */
static void test_s_client_versions_and_suites(void **state)
{
    srv_t *s = *state;
    weir_tls_opts_t o = mtls_opts();
    start_server(s, &o, 0);
    s->reply_to = "ping\n";
    s->reply = "pong\n";
    assert_true(s_client_served(s, "-tls1_3", "TLSv1.3", NULL));
    assert_true(s_client_served(s, "", "TLSv1.3", NULL));
    assert_true(s_client_served(s, "-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256", "TLSv1.2",
                                "ECDHE-RSA-AES128-GCM-SHA256"));
    assert_true(s_client_served(s, "-tls1_2 -cipher ECDHE-RSA-CHACHA20-POLY1305", "TLSv1.2",
                                "ECDHE-RSA-CHACHA20-POLY1305"));
    assert_true(s_client_served(s, "-tls1_2", "TLSv1.2", NULL));
    assert_false(s_client_served(s, "-tls1_2 -cipher AES128-SHA", NULL, NULL)); /* RSA, CBC */
    assert_false(s_client_served(s, "-tls1_2 -cipher AES256-GCM-SHA384", NULL, NULL));    /* RSA */
    assert_false(s_client_served(s, "-tls1_2 -cipher ECDHE-RSA-AES128-SHA", NULL, NULL)); /* CBC */
    assert_false(s_client_served(s, "-tls1_2 -cipher DHE-RSA-AES128-GCM-SHA256", NULL, NULL));
    assert_int_equal(s->tls_fails, 4);
    weir_listener_close(s->l);

    /* min_version = max_version = TLSv1_3: TLS 1.2 is refused (a fresh mtls_opts each time:
     * path() reuses its buffers) */
    o = mtls_opts();
    o.min_version = o.max_version = "TLSv1_3";
    start_server(s, &o, 0);
    assert_true(s_client_served(s, "", "TLSv1.3", NULL));
    assert_false(s_client_served(s, "-tls1_2", NULL, NULL));
    weir_listener_close(s->l);

    /* max_version TLSv1_2: a TLS 1.3-only client is refused; `ciphers` is the 1.2 list */
    o = mtls_opts();
    o.min_version = "TLSv1_2";
    o.max_version = "TLSv1_2";
    o.ciphers = "ECDHE-RSA-AES256-GCM-SHA384";
    start_server(s, &o, 0);
    assert_false(s_client_served(s, "-tls1_3", NULL, NULL));
    assert_true(s_client_served(s, "", "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384"));
    assert_false(s_client_served(s, "-cipher ECDHE-RSA-AES128-GCM-SHA256", NULL, NULL));
    weir_listener_close(s->l);

    /* an operator who asks for a static-RSA CBC suite gets it (Fluentd's ciphers, honoured) */
    o = mtls_opts();
    o.version = "TLSv1_2";
    o.ciphers = "AES128-SHA";
    start_server(s, &o, 0);
    assert_true(s_client_served(s, "-cipher AES128-SHA", "TLSv1.2", "AES128-SHA"));
}

/* ---- <transport tls> in fluent.conf ---------------------------------------------------- */

static weir_conf_section_t *parse(const char *text)
{
    weir_err_t err = {{0}};
    weir_conf_section_t *root = weir_conf_parse_string(text, strlen(text), "test.conf", &err);
    if (!root) fail_msg("parse: %s", err.msg);
    return root;
}

static int from_conf(const char *text, weir_tls_opts_t *o, weir_err_t *err,
                     weir_conf_section_t **root)
{
    *root = parse(text);
    return weir_tls_opts_from_conf(o, weir_conf_child(*root, "transport", 0), err);
}

static void test_opts_from_conf(void **state)
{
    weir_tls_opts_t o;
    weir_err_t err = {{0}};
    weir_conf_section_t *root;
    assert_int_equal(from_conf("<transport tls>\n"
                               "  cert_path /keys/server.crt\n"
                               "  private_key_path /keys/server.key\n"
                               "  private_key_passphrase \"0123abcd\"\n"
                               "  ca_path /keys/ca.crt\n"
                               "  client_cert_auth true\n"
                               "</transport>\n",
                               &o, &err, &root),
                     0);
    assert_true(o.enabled);
    assert_string_equal(o.cert_path, "/keys/server.crt");
    assert_string_equal(o.private_key_path, "/keys/server.key");
    assert_string_equal(o.private_key_passphrase, "0123abcd");
    assert_string_equal(o.ca_path, "/keys/ca.crt");
    assert_true(o.client_cert_auth);
    assert_false(o.insecure);
    assert_null(o.version); /* TLSv1_2 applies in weir_tls_ctx_new */
    assert_null(o.min_version);
    assert_null(o.max_version);
    assert_null(o.ciphers);
    assert_int_equal(weir_conf_check_unused(weir_conf_child(root, "transport", 0), &err), 0);
    weir_tls_opts_free(&o);
    assert_null(o.cert_path);
    weir_conf_free(root);

    /* tcp (or no argument) is plain TCP; linger_timeout stays for the caller to read */
    assert_int_equal(
        from_conf("<transport tcp>\n  linger_timeout 1\n</transport>\n", &o, &err, &root), 0);
    assert_false(o.enabled);
    assert_int_equal(weir_conf_check_unused(weir_conf_child(root, "transport", 0), &err), -1);
    assert_non_null(strstr(err.msg, "linger_timeout"));
    weir_tls_opts_free(&o);
    weir_conf_free(root);
    assert_int_equal(from_conf("<transport>\n</transport>\n", &o, &err, &root), 0);
    assert_false(o.enabled);
    weir_conf_free(root);
    assert_int_equal(from_conf("<transport udp>\n</transport>\n", &o, &err, &root), -1);
    assert_non_null(strstr(err.msg, "expected tcp or tls"));
    weir_tls_opts_free(&o);
    weir_conf_free(root);

    /* versions, Fluentd's rules */
    assert_int_equal(from_conf("<transport tls>\n  insecure true\n  min_version TLSv1_2\n"
                               "  max_version TLSv1_3\n  ciphers HIGH\n</transport>\n",
                               &o, &err, &root),
                     0);
    assert_string_equal(o.min_version, "TLSv1_2");
    assert_string_equal(o.max_version, "TLSv1_3");
    assert_string_equal(o.ciphers, "HIGH");
    weir_tls_opts_free(&o);
    weir_conf_free(root);
    assert_int_equal(from_conf("<transport tls>\n  insecure true\n  min_version TLSv1_2\n"
                               "</transport>\n",
                               &o, &err, &root),
                     -1);
    assert_non_null(strstr(err.msg, "test.conf:3"));
    assert_non_null(strstr(err.msg, "together"));
    weir_tls_opts_free(&o);
    weir_conf_free(root);
    assert_int_equal(from_conf("<transport tls>\n  insecure true\n  max_version TLS1_3\n"
                               "</transport>\n",
                               &o, &err, &root),
                     -1);
    weir_tls_opts_free(&o);
    weir_conf_free(root);
    assert_int_equal(from_conf("<transport tls>\n  insecure true\n  version TLSv1.2\n"
                               "</transport>\n",
                               &o, &err, &root),
                     -1);
    assert_non_null(strstr(err.msg, "test.conf:3"));
    assert_non_null(strstr(err.msg, "TLSv1.2"));
    weir_tls_opts_free(&o);
    weir_conf_free(root);

    /* what a usable TLS section needs */
    assert_int_equal(from_conf("<transport tls>\n</transport>\n", &o, &err, &root), -1);
    assert_non_null(strstr(err.msg, "cert_path"));
    weir_tls_opts_free(&o);
    weir_conf_free(root);
    assert_int_equal(from_conf("<transport tls>\n  cert_path /a.crt\n  private_key_path /a.key\n"
                               "  client_cert_auth\n</transport>\n",
                               &o, &err, &root),
                     -1);
    assert_non_null(strstr(err.msg, "ca_path"));
    weir_tls_opts_free(&o);
    weir_conf_free(root);

    /* Fluentd's certificate generation options are not supported: reported as unknown */
    assert_int_equal(from_conf("<transport tls>\n  insecure true\n"
                               "  generate_cert_country JP\n</transport>\n",
                               &o, &err, &root),
                     0);
    assert_int_equal(weir_conf_check_unused(weir_conf_child(root, "transport", 0), &err), -1);
    assert_non_null(strstr(err.msg, "generate_cert_country"));
    weir_tls_opts_free(&o);
    weir_conf_free(root);
}

int main(void)
{
    weir_log_set_level(getenv("WEIR_TEST_LOG")
                           ? WEIR_LOG_DEBUG
                           : WEIR_LOG_ERROR); /* the refused handshakes warn by design */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encrypted_keys_load),
        cmocka_unit_test(test_key_errors_name_the_file),
        cmocka_unit_test(test_option_errors),
        cmocka_unit_test(test_opts_from_conf),
        cmocka_unit_test_setup_teardown(test_mtls_roundtrip_1mib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pkcs8_key_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_client_certs_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_client_cert_refused_tls13, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alpn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plaintext_client_gets_no_plaintext, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_and_handshake_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume_holds_decrypted_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_insecure_self_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_openssl_s_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_s_client_versions_and_suites, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
