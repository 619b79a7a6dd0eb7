/* libFuzzer target for the socket-free forward protocol: the input is a byte stream as a
 * connection would deliver it. It goes through the frame scanner (whole, and once more split
 * at a point chosen by the input, which must find the same frames), every complete frame is
 * decoded, checked as a PING and, when it asks for one, acked; input starting with '{' or '['
 * also goes through the JSON path. Beyond the sanitizers, it aborts when an invariant breaks:
 * a batch that is not exactly `count` canonical entries, a fatal frame that leaves events or a
 * chunk behind, or a split that changes what the scanner finds.
 *
 * Seeds: test/fuzz/make_corpus.py fuzz_forward DIR. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "../../src/input/forward/forward_internal.h"
#include "weir/event.h"
#include "weir/forward.h"
#include "weir/log.h"

#define FUZZ_MAX_FRAME (1024u * 1024) /* small caps keep each run fast */
#define FUZZ_MAX_DECOMPRESSED (1024u * 1024)
#define FUZZ_MAX_FRAMES 64 /* frame lengths compared between the two scans */

static void check(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz_forward: invariant broken: %s\n", what);
    abort();
}

/* Walks the batch as canonical entries: 92 d7 00 <sec> <nsec> <map>. Measured with the
 * scanner's own walker (fwd_value_len) so the check does not depend on the code under test
 * agreeing with itself through weir_mp_read. */
static void check_batch(const weir_batch_t *b)
{
    size_t off = 0;
    uint32_t n = 0;
    const unsigned char *u = (const unsigned char *)b->data.data;
    while (off < b->data.len) {
        check(b->data.len - off > 11 && u[off] == 0x92 && u[off + 1] == 0xd7 && u[off + 2] == 0,
              "a committed entry does not start with [EventTime");
        uint32_t nsec = (uint32_t)u[off + 7] << 24 | (uint32_t)u[off + 8] << 16 |
                        (uint32_t)u[off + 9] << 8 | u[off + 10];
        check(nsec < 1000000000u, "nanoseconds out of range in a committed event");
        unsigned char c = u[off + 11];
        check((c & 0xf0) == 0x80 || c == 0xde || c == 0xdf, "a committed record is not a map");
        long long len =
            fwd_value_len(b->data.data + off + 11, b->data.len - off - 11, FWD_MAX_DEPTH, NULL);
        check(len > 0, "a committed record is not whole msgpack");
        off += 11 + (size_t)len;
        n++;
    }
    check(n == b->count, "batch count does not match its entries");
}

static void decode_one(const char *f, size_t n, bool extras, bool json)
{
    static const char *const keys[] = {"host", "k"};
    static const char *const values[] = {"192.0.2.1", "peer.example"};
    fwd_decode_opts_t o;
    fwd_decode_opts_init(&o);
    o.max_decompressed = FUZZ_MAX_DECOMPRESSED;
    if (extras) {
        o.extra_keys = keys;
        o.extra_values = values;
        o.n_extra = 2;
    }
    weir_batch_t b;
    weir_batch_init(&b, "", 0);
    fwd_frame_info_t info;
    weir_err_t err;
    int rc = fwd_decode_frame(f, n, &o, &b, &info, &err);
    check(rc == 0 || rc == -1, "decode returned something else than 0 or -1");
    if (rc == 0) {
        check_batch(&b);
        if (info.chunk) {
            weir_buf_t ack;
            weir_buf_init(&ack);
            fwd_ack_build(info.chunk, info.chunk_len, json, &ack);
            weir_buf_free(&ack);
        }
    } else {
        check(b.count == 0 && b.data.len == 0, "a fatal frame left events in the batch");
        check(info.chunk == NULL, "a fatal frame asks for an ack");
        check(err.msg[0] != '\0', "a fatal frame without a message");
    }
    weir_batch_free(&b);
}

static void ping_one(const char *f, size_t n)
{
    static const uint8_t nonce[FWD_NONCE_LEN] = {0, 1, 2,  3,  4,  5,  6,  7,
                                                 8, 9, 10, 11, 12, 13, 14, 15};
    static const uint8_t auth[FWD_NONCE_LEN] = {16, 17, 18, 19, 20, 21, 22, 23,
                                                24, 25, 26, 27, 28, 29, 30, 31};
    static fwd_user_t users[] = {{"alice", "pw"}};
    static char *only_alice[] = {"alice"};
    fwd_client_t client;
    memset(&client, 0, sizeof client);
    struct sockaddr_in *net = (struct sockaddr_in *)&client.addr;
    net->sin_family = AF_INET;
    net->sin_addr.s_addr = htonl(0x7f000000u);
    client.prefix_len = 8;
    client.users = only_alice;
    client.n_users = 1;
    fwd_security_t s = {.enabled = true,
                        .self_hostname = "server.example",
                        .shared_key = "secret",
                        .user_auth = n % 2 == 0,
                        .allow_anonymous_source = true,
                        .users = users,
                        .n_users = 1,
                        .clients = &client,
                        .n_clients = 1};
    struct sockaddr_in peer;
    memset(&peer, 0, sizeof peer);
    peer.sin_family = AF_INET;
    peer.sin_addr.s_addr = htonl(0x7f000001u);
    weir_buf_t pong;
    weir_buf_init(&pong);
    const char *reason = NULL;
    bool ok = fwd_ping_check(&s, f, n, nonce, auth, (struct sockaddr *)&peer, NULL, &pong, &reason);
    check(pong.len > 0 && (unsigned char)pong.data[0] == 0x95, "no PONG written");
    check(reason != NULL && (ok ? reason[0] == '\0' : reason[0] != '\0'), "PONG reason");
    weir_buf_free(&pong);
}

/* Scans the stream in one piece; records each frame length and how the scan ended (at the
 * end of the bytes: NEED_MORE). Returns the frame count. */
static size_t scan_stream(const char *buf, size_t len, size_t *lens, fwd_scan_result_t *end,
                          bool json)
{
    fwd_scanner_t s;
    fwd_scanner_init(&s, FUZZ_MAX_FRAME, FWD_MAX_DEPTH);
    size_t off = 0, count = 0, n;
    *end = FWD_SCAN_NEED_MORE;
    while (off < len) {
        fwd_scan_result_t r = fwd_scanner_scan(&s, buf + off, len - off, &n, NULL);
        if (r != FWD_SCAN_FRAME) {
            *end = r;
            break;
        }
        check(n > 0 && n <= len - off && n <= FUZZ_MAX_FRAME, "frame length out of range");
        if (count < FUZZ_MAX_FRAMES) lens[count] = n;
        decode_one(buf + off, n, (buf[off] & 1) != 0, json);
        ping_one(buf + off, n);
        count++;
        off += n;
    }
    return count;
}

/* The same stream delivered in two pieces, cut at `cut`: the frames, and how the scan ends,
 * must not change. */
static void scan_split(const char *buf, size_t len, size_t cut, const size_t *lens, size_t count,
                       fwd_scan_result_t end)
{
    fwd_scanner_t s;
    fwd_scanner_init(&s, FUZZ_MAX_FRAME, FWD_MAX_DEPTH);
    size_t off = 0, found = 0, n, avail = cut;
    fwd_scan_result_t r = FWD_SCAN_NEED_MORE;
    while (off < len) {
        if (avail < off) avail = off;
        r = fwd_scanner_scan(&s, buf + off, avail - off, &n, NULL);
        if (r == FWD_SCAN_NEED_MORE && avail < len) {
            avail = len; /* the rest arrives: the scanner resumes where it stopped */
            continue;
        }
        if (r != FWD_SCAN_FRAME) break;
        if (found < FUZZ_MAX_FRAMES) check(n == lens[found], "a split changed a frame's length");
        found++;
        off += n;
        r = FWD_SCAN_NEED_MORE;
    }
    check(found == count, "a split changed the number of frames");
    check(r == end, "a split changed how the scan ends");
}

/* Runs the JSON stream through fwd_json_next, offering `step` more bytes per call (0: all at
 * once); returns how the stream ended and fills `frames`. */
static int json_feed(const char *buf, size_t len, size_t step, weir_buf_t *frames)
{
    weir_err_t err;
    fwd_json_scan_t js;
    fwd_json_scan_reset(&js);
    size_t off = 0, seen = step ? 0 : len, used;
    int r = 0;
    while (off < len) {
        if (step) seen = seen + step > len ? len : seen + step;
        r = fwd_json_next(&js, buf + off, seen - off, FUZZ_MAX_FRAME, &used, frames, &err);
        if (r < 0) break;
        if (r == 0) {
            if (seen == len) break;
            continue;
        }
        check(used > 0 && used <= seen - off, "JSON consumed out of range");
        off += used;
    }
    return r;
}

static void json_stream(const char *buf, size_t len)
{
    weir_buf_t frames, split;
    weir_buf_init(&frames);
    weir_buf_init(&split);
    int r = json_feed(buf, len, 0, &frames);
    /* the same bytes in pieces (the resumed scan) give the same frames and the same end */
    size_t step = 1 + (unsigned char)buf[len - 1] % 7;
    check(json_feed(buf, len, step, &split) == r, "a split changed how the JSON stream ends");
    check(split.len == frames.len &&
              (frames.len == 0 || memcmp(split.data, frames.data, frames.len) == 0),
          "a split changed the JSON frames");
    size_t lens[FUZZ_MAX_FRAMES];
    fwd_scan_result_t end;
    scan_stream(frames.data, frames.len, lens, &end, true);
    weir_buf_free(&frames);
    weir_buf_free(&split);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        weir_log_set_level(WEIR_LOG_FATAL);
        quiet = true;
    }
    const char *buf = (const char *)data;
    if (size > 0 && (buf[0] == '{' || buf[0] == '[')) {
        json_stream(buf, size);
        return 0;
    }
    size_t lens[FUZZ_MAX_FRAMES];
    fwd_scan_result_t end;
    size_t count = scan_stream(buf, size, lens, &end, false);
    if (size > 1)
        scan_split(buf, size, 1 + (size_t)data[size - 1] * 7919 % (size - 1), lens, count, end);
    return 0;
}
