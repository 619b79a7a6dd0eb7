#!/usr/bin/env python3
"""Writes seed inputs for weir's libFuzzer targets.

Usage: make_corpus.py [TARGET] DIR

TARGET is the fuzz target's name (fuzz_forward, ...); with only DIR, every known target's
seeds are written. Seeds for fuzz_forward are the frames of docs/forward-protocol.md section 7
(plus the PING of section 2.4 and a few JSON requests); for fuzz_chunkfile, chunk files as
docs/buffer-format.md describes them; for fuzz_fluentd_meta, .meta files as Fluentd's buf_file
writes them; for fuzz_config, every configuration in examples/, test/data/config and the docs.
Plain python3, standard library only. Add a target by adding a function to SEEDS.
"""
import glob
import gzip
import os
import re
import struct
import sys
import zlib

T = "ce 65 53 f1 00"  # 1700000000
R = "81 a1 6b a1 76"  # {"k":"v"}
CHUNK_C1 = "81 a5 63 68 75 6e 6b a2 63 31"  # {"chunk":"c1"}
ENTRY1 = "92 d7 00 65 53 f1 00 00 00 00 01 81 a1 61 01"
ENTRY2 = "92 d7 00 65 53 f1 00 00 00 00 02 81 a1 61 02"
GZIP_OPT = "81 aa 63 6f 6d 70 72 65 73 73 65 64 a4 67 7a 69 70"
ZSTD_OPT = "81 aa 63 6f 6d 70 72 65 73 73 65 64 a4 7a 73 74 64"
# zstd frames of ENTRY1 and ENTRY2 (level 3); the standard library has no zstd
ZSTD1 = "28b52ffd200f79000092d7006553f1000000000181a16101"
ZSTD2 = "28b52ffd200f79000092d7006553f1000000000281a16102"


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


def gz(data, level=6):
    """One gzip member with mtime 0, as Fluentd writes them."""
    return gzip.compress(data, compresslevel=level, mtime=0)


def mp_str(b):
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    if len(b) < 256:
        return b"\xd9" + bytes([len(b)]) + b
    return b"\xdb" + struct.pack(">I", len(b)) + b


def mp_bin(b):
    if len(b) < 256:
        return b"\xc4" + bytes([len(b)]) + b
    return b"\xc6" + struct.pack(">I", len(b)) + b


def packed(tag, payload, option=b"", str32=True):
    head = bytes([0x93 if option else 0x92]) + mp_str(tag.encode())
    body = (b"\xdb" + struct.pack(">I", len(payload)) + payload) if str32 else mp_bin(payload)
    return head + body + option


def forward_seeds():
    s = {}
    e12 = h(ENTRY1 + ENTRY2)
    # A. basic modes and encodings
    s["a01_message"] = h("93 a1 74" + T + R)
    s["a02_eventtime"] = h("93 a1 74 d7 00 65 53 f1 00 07 5b cd 15" + R)
    s["a03_ext8"] = h("93 a1 74 c7 08 00 65 53 f1 00 07 5b cd 15" + R)
    s["a04_ext16"] = h("93 a1 74 c8 00 08 00 65 53 f1 00 07 5b cd 15" + R)
    s["a04_ext32"] = h("93 a1 74 c9 00 00 00 08 00 65 53 f1 00 07 5b cd 15" + R)
    s["a05_int32"] = h("93 a1 74 d2 65 53 f1 00" + R)
    s["a05_uint64"] = h("93 a1 74 cf 00 00 00 00 65 53 f1 00" + R)
    s["a06_sec_2_31"] = h("93 a1 74 d7 00 80 00 00 00 00 00 00 00" + R)
    s["a07_ack"] = h("94 a1 74" + T + R + CHUNK_C1)
    s["a08_empty_option"] = h("94 a1 74 d2 65 53 f1 00" + R + "80")
    s["a09_nil_option"] = h("94 a1 74" + T + R + "c0")
    fwd10 = "92 92 ce 65 53 f1 00 81 a1 61 01 92 d7 00 65 53 f1 00 00 00 00 05 81 a1 61 02"
    s["a10_forward"] = h("92 a3 61 70 70" + fwd10)
    s["a11_forward_ack"] = h("93 a1 74" + fwd10 + CHUNK_C1)
    s["a12_packed_bin8"] = h(
        "93 a3 61 70 70 c4 14 92 ce 65 53 f1 00 81 a1 61 01 92 ce 65 53 f1 01 81 a1 61 02 "
        "81 a4 73 69 7a 65 02")
    s["a13_fluentd_packed"] = h(
        "93 a3 61 70 70 db 00 00 00 1e" + ENTRY1 + ENTRY2 +
        "83 a4 73 69 7a 65 02 aa 63 6f 6d 70 72 65 73 73 65 64 a4 74 65 78 74 a5 63 68 75 6e 6b "
        "b9 41 41 45 43 41 77 51 46 42 67 63 49 43 51 6f 4c 44 41 30 4f 44 77 3d 3d 0a")
    s["a14_gzip_members"] = packed(
        "app", gz(h(ENTRY1)) + gz(h(ENTRY2)),
        h("82 a4 73 69 7a 65 02 aa 63 6f 6d 70 72 65 73 73 65 64 a4 67 7a 69 70"))
    s["a15_fluentbit_gzip"] = packed(
        "app", gz(e12),
        h("83 a4 73 69 7a 65 02 aa 63 6f 6d 70 72 65 73 73 65 64 a4 67 7a 69 70 "
          "ad 66 6c 75 65 6e 74 5f 73 69 67 6e 61 6c 00"), str32=False)
    s["a16_zstd_frames"] = packed("app", h(ZSTD1 + ZSTD2), h(ZSTD_OPT))
    meta = "92 92 d7 00 65 53 f1 00 00 00 00 00 80 81 a1 61 01"
    s["a17_metadata_forward"] = h(
        "93 a3 61 70 70 91" + meta + "81 ad 66 6c 75 65 6e 74 5f 73 69 67 6e 61 6c 00")
    s["a18_metadata_packed"] = packed("app", h(meta), str32=False)
    s["a19_group_markers"] = h(
        "92 a1 74 93 92 92 d7 00 ff ff ff ff 00 00 00 00 80 81 a8 72 65 73 6f 75 72 63 65 80 "
        "92 92 d7 00 65 53 f1 00 00 00 00 00 80" + R +
        "92 92 d7 00 ff ff ff fe 00 00 00 00 80 80")
    s["a20_empty_forward_ack"] = h("93 a1 74 90" + CHUNK_C1)
    s["a21_empty_packed_ack"] = h("93 a1 74 c4 00" + CHUNK_C1)
    s["a22_bin_tag"] = h("93 c4 01 74" + T + R)
    rich = ("86 a1 62 c4 02 00 ff a1 6e 81 a1 78 92 01 92 02 03 01 a1 69 a1 65 d7 00 65 53 f1 00 "
            "00 00 00 01 a1 66 d4 05 2a a1 67 cb 3f f8 00 00 00 00 00 00")
    s["a23_rich_record"] = h("93 a1 74" + T + rich)
    s["a24_compressed_on_forward"] = h("93 a1 74" + fwd10 + GZIP_OPT)
    s["a25_wrong_size"] = h(
        "93 a3 61 70 70 c4 14 92 ce 65 53 f1 00 81 a1 61 01 92 ce 65 53 f1 01 81 a1 61 02 "
        "81 a4 73 69 7a 65 63")
    s["a26_fifth_element"] = h("95 a1 74" + T + R + "80 01")
    # B. stream handling: several frames in one input
    s["b27_many_frames"] = (h("c0") + h("93 a1 74" + T + R) * 20 +
                            packed("t", gz(e12), h(GZIP_OPT)) + h("c0 c0"))
    s["b30_half_frame"] = h("93 a1 74" + T + R) + h("93 a1 74" + T)
    # C. event-level invalid
    for name, time in [("c36_nil", "c0"), ("c37_float", "cb 41 d9 54 fc 40 20 00 00"),
                       ("c38_negative", "ff"), ("c39_2_32", "cf 00 00 00 01 00 00 00 00"),
                       ("c40_ext0_len4", "d6 00 65 53 f1 00"), ("c41_ext5", "d7 05 65 53 f1 00 00 00 00 00"),
                       ("c41_timestamp32", "d6 ff 65 53 f1 00"),
                       ("c42_nsec_1e9", "d7 00 65 53 f1 00 3b 9a ca 00"), ("c44_zero", "00")]:
        s[name] = h("94 a1 74 " + time + R + CHUNK_C1)
    s["c43_string_time"] = h("93 a1 74 a3 31 32 33" + CHUNK_C1)
    s["c45_record_not_map"] = h("93 a1 74 92 92" + T + "a1 78 92" + T + R + CHUNK_C1)
    s["c46_entry_not_array"] = h("92 a1 74 92 01 92" + T + R)
    s["c46_entry_3_elements"] = h("92 a1 74 91 93" + T + R + "01")
    s["c47_bad_wrapper"] = h("92 a1 74 91 92 91 d7 00 65 53 f1 00 00 00 00 00" + R)
    # D. fatal and adversarial
    s["d48_reserved"] = h("93 a1 74 c1" + R)
    s["d49_int"] = h("01")
    s["d50_one_element"] = h("91 a1 74")
    s["d51_option_int"] = h("93 a1 74 90 01")
    s["d52_tag_int"] = h("93 01" + T + R)
    s["d53_truncated_ext"] = h("93 a1 74 91 92 c7")
    s["d54_huge_array"] = h("92 a1 74 dd 7f ff ff ff") + bytes(10)
    s["d55_huge_map"] = h("93 a1 74" + T + "df ff ff ff ff") + bytes(4)
    s["d56_huge_str"] = h("93 db ff ff ff ff 61")
    s["d57_deep"] = h("92 a1 74 91 92" + T + "81 a1 6b") + b"\x91" * 70 + b"\x01"
    s["d57_many_91"] = b"\x91" * 4096
    member = gz(e12)
    s["d60_random_gzip"] = packed("t", bytes((i * 97 + 13) & 0xFF for i in range(64)), h(GZIP_OPT))
    s["d61_truncated_gzip"] = packed("t", member[:-8], h(GZIP_OPT))
    bad_crc = bytearray(member)
    bad_crc[-8] ^= 1
    s["d62_bad_crc"] = packed("t", bytes(bad_crc), h(GZIP_OPT))
    stored = b"".join(h("92 d7 00 65 53 f1 00 00 00 00 09 81 a1 62 c4 06 1f 8b 08 00 00 00")
                      for _ in range(20))
    s["d63_stored_magic"] = packed("t", gz(stored, level=0), h(GZIP_OPT))
    s["d64_small_bomb"] = packed("t", gz(bytes(4 << 20), level=9), h(GZIP_OPT))
    s["d65_trailing_magic"] = packed("t", member + b"\x1f\x8b", h(GZIP_OPT))
    s["d65_trailing_zeros"] = packed("t", member + b"\x00\x00", h(GZIP_OPT))
    s["d66_gzip_over_plain"] = packed("t", e12, h(GZIP_OPT))
    s["d67_lz4"] = packed("t", e12, h("81 aa 63 6f 6d 70 72 65 73 73 65 64 a3 6c 7a 34"))
    s["d68_sniffed_gzip"] = packed("t", member)
    s["d69_truncated_entry"] = packed("t", gz(h(ENTRY1 + "92 d7 00 65 53 f1")), h(GZIP_OPT))
    s["d70_malformed_entries"] = packed("t", gz(h(ENTRY1 + "92 c1 80")), h(GZIP_OPT))
    s["d71_unknown_ext"] = h("93 a1 74" + T + "82 a1 6b a1 76 a1 78 d4 07 00")
    s["fluent_signal_metrics"] = packed(
        "t", h("01 02 03"),
        h("82 a5 63 68 75 6e 6b a2 63 31 ad 66 6c 75 65 6e 74 5f 73 69 67 6e 61 6c 01"))
    # E. ack echo
    s["e73_bin_chunk"] = h("94 a1 74" + T + R + "81 a5 63 68 75 6e 6b c4 02 63 31")
    s["e74_int_chunk"] = h("94 a1 74" + T + R + "81 a5 63 68 75 6e 6b 07")
    # G. JSON
    s["g81_json"] = b'["t",1700000000,{"a":1}]'
    s["g82_json_ack"] = b'["t",1700000000,{"a":1},{"chunk":"x"}]'
    s["g83_two_json"] = b'["t",1700000000,{"a":1}]\n["t",1700000001,{"a":2.5,"s":"]\\"}"}]\n'
    s["g_json_forward"] = b'["t",[[1700000000,{"a":1}],[0,{"b":[true,null]}]],{"chunk":"y"}]'
    s["g84_leading_space"] = b' ["t",1700000000,{"a":1}]'
    # H. handshake: the PING of section 2.4
    ping = (b"\x96" + mp_str(b"PING") + mp_str(b"client.example") +
            mp_str(b"0123456789abcdef0123456789abcdef") +
            mp_str(b"3a680037d3979b4f789647cd22e7e55f2197791eb498799823c424e2213124ed"
                   b"63938d1c422f50e08ec02957ef44df338e46c77e8ea164b0dde6d64e171b30df") +
            mp_str(b"alice") +
            mp_str(b"175443d1726b2836999b8b7b54c1fcf0a2ec1071f20fbec9f6e0a7594cf70f20"
                   b"8e7ed315db82d7e4f45981d04990e9b9b46ea8f69444a5cf5e25601d72aa83e5"))
    s["h86_ping"] = ping
    s["h91_ping_then_frame"] = ping + h("93 a1 74" + T + R)
    s["h87_ping_bin_salt"] = (b"\x96" + mp_str(b"PING") + mp_str(b"fluent-bit") +
                              mp_bin(bytes(range(16))) + mp_str(b"0" * 128) + mp_str(b"") +
                              mp_str(b""))
    # a zlib-level check that the payloads above are what they claim
    assert zlib.decompress(member, 16 + zlib.MAX_WBITS) == e12
    return s


def http_seeds():
    """Requests as teleport-event-handler, curl and form posts send them (whole bytes on the
    wire; the target feeds them to the request reader in pieces)."""
    body = (b'{"addr.remote":"192.0.2.10:52906", "cluster_name":"teleport.example.com", '
            b'"code":"T1000I", "ei":0, "event":"user.login", "success":true, '
            b'"time":"2024-05-09T21:00:40.632Z", "uid":"c325a91c", "user":"alice"}')

    def post(path, ctype, payload, extra=b""):
        return (b"POST " + path + b" HTTP/1.1\r\nHost: localhost:8888\r\n"
                b"User-Agent: Go-http-client/1.1\r\nContent-Length: " + str(len(payload)).encode()
                + b"\r\nContent-Type: " + ctype + b"\r\n" + extra + b"\r\n" + payload)

    chunked = (b"POST /test.log HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/json\r\n\r\n" + b"%x\r\n" % len(body) + body +
               b"\r\n0\r\n\r\n")
    return {
        "teleport_audit": post(b"/test.log", b"application/json", body),
        "teleport_session": post(b"/session.a2836fe1-51b5-4ab6-994e-f2f32eb97dc5.log",
                                 b"application/json", body),
        "array": post(b"/a/b", b"application/json", b"[" + body + b"," + body + b", 1]"),
        "ndjson": post(b"/nd", b"application/x-ndjson", body + b"\n" + body + b"\n"),
        "msgpack": post(b"/mp", b"application/msgpack", h("81 a1 6b a1 76") + h("92 01 02")),
        "form": post(b"/f?time=1715288440.5", b"application/x-www-form-urlencoded",
                     b"json=%7B%22k%22%3A%22v%22%7D"),
        "pipelined_close": post(b"/p", b"application/json", b"{}") +
        post(b"/p", b"application/json", b"{}", b"Connection: close\r\n"),
        "expect": post(b"/e", b"application/json", body, b"Expect: 100-continue\r\n"),
        "chunked": chunked,
        "get": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "options": b"OPTIONS /x HTTP/1.1\r\nOrigin: http://a\r\n"
                   b"Access-Control-Request-Method: POST\r\n\r\n",
    }


def inflate_seeds():
    """Compressed inputs for the inflater: the first byte picks the format (value % 3: gzip,
    zlib, zstd), the limit and the step budget, as fuzz_inflate.c reads it."""
    text = b'{"event":"user.login","user":"alice"}' * 20
    zlib_stream = zlib.compress(text)
    return {
        "gzip_one": bytes([0x20]) + gz(text),
        "gzip_members": bytes([0x20]) + gz(text[:100]) + gz(b"") + gz(text[100:]),
        "gzip_stored": bytes([0x23]) + gz(text, level=0),
        "gzip_over_limit": bytes([0x00]) + gz(b"\0" * 4096),
        "zlib": bytes([0x21]) + zlib_stream,
        "zlib_trailing": bytes([0x21]) + zlib_stream + b"x",
        "zstd_frames": bytes([0x22]) + h(ZSTD1) + h(ZSTD2),
    }


# ---- chunk files (docs/buffer-format.md) ----------------------------------------------------

def mp_map(pairs):
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
    return head + b"".join(k + v for k, v in pairs)


def mp_int(v):
    if 0 <= v < 128:
        return bytes([v])
    if v >= 0:
        return b"\xcf" + struct.pack(">Q", v)
    return b"\xd3" + struct.pack(">q", v)


def mp_s(text):
    return mp_str(text.encode())


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli), reflected, as weir_crc32c: 0 to start."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def chunk_record(rtype, payload, count):
    hdr = struct.pack(">HBBII", 0x5752, rtype, 1, len(payload), count)
    return hdr + struct.pack(">I", crc32c(hdr + payload))


def chunk_meta(cid, timekey=1700000000, tag="app.web", variables=(), created=1700000042):
    return mp_map([
        (mp_s("id"), mp_bin(cid)),
        (mp_s("timekey"), b"\xc0" if timekey is None else mp_int(timekey)),
        (mp_s("tag"), b"\xc0" if tag is None else mp_s(tag)),
        (mp_s("vars"), mp_map([(mp_s(k), mp_s(v)) for k, v in variables])),
        (mp_s("created"), mp_int(created)),
    ])


def chunk_entry(sec, nsec, record):
    """[EventTime, record], the time as ext 0 of 8 bytes."""
    return (b"\x92\xd7\x00" + struct.pack(">II", sec, nsec) +
            mp_map([(mp_s(k), mp_s(v) if isinstance(v, str) else mp_int(v))
                    for k, v in record.items()]))


def chunk_file(meta, batches):
    out = chunk_record(1, meta, 0) + meta
    for entries in batches:
        payload = b"".join(entries)
        out += chunk_record(2, payload, len(entries)) + payload
    return out


def chunkfile_seeds():
    """Each file twice: as it is (first byte 0) and with checksums recomputed by the target
    (first byte 1), so mutations of the payloads are not all stopped by the CRC."""
    cid = bytes.fromhex("5f32232e76a4d1bdfdbeed36c384b03b")
    batch = [[chunk_entry(1700000000 + b, i, {"seq": b * 3 + i, "msg": "event %d" % i})
              for i in range(3)] for b in range(5)]
    files = {
        "basic": chunk_file(chunk_meta(cid), batch),
        "meta_only": chunk_file(chunk_meta(cid), []),
        "no_timekey_no_tag": chunk_file(chunk_meta(cid, timekey=None, tag=None), batch[:1]),
        "vars": chunk_file(chunk_meta(cid, variables=[("namespace", "prod"), ("app", "web")]),
                           batch[:2]),
        "negative_timekey": chunk_file(chunk_meta(cid, timekey=-3600), batch[:1]),
        "empty_batch": chunk_file(chunk_meta(cid), [[]]),
        "empty": b"",
    }
    # events records with their tag (type 3): a msgpack str, then the entries
    tagged = chunk_record(1, chunk_meta(cid, tag=None), 0) + chunk_meta(cid, tag=None)
    for tag, entries in (("app.web", batch[0]), ("app.db", batch[1]), ("x" * 40, batch[2])):
        payload = mp_s(tag) + b"".join(entries)
        tagged += chunk_record(3, payload, len(entries)) + payload
    files["tagged"] = tagged
    good = files["basic"]
    offs, off = [], 0
    while off + 16 <= len(good):
        offs.append(off)
        off += 16 + struct.unpack(">I", good[off + 4:off + 8])[0]
    files["torn_tail"] = good[:offs[-1] + 20]
    files["torn_header"] = good[:offs[-1] + 7]
    flipped = bytearray(good)
    flipped[offs[3] + 40] ^= 0xFF
    files["flipped_byte"] = bytes(flipped)
    files["garbage_meta"] = chunk_record(1, b"\x01\x02", 0) + b"\x01\x02" + good[offs[1]:]
    files["events_first"] = good[offs[1]:]
    files["huge_length"] = good[:offs[2]] + struct.pack(">HBBII", 0x5752, 2, 1, 0xFFFFFFF0, 9)
    # regressions: what the fuzzer found (see test/fuzz/README.md)
    files["empty_meta_record"] = chunk_record(1, b"", 0)
    twice = mp_map([(mp_s("id"), mp_bin(cid)), (mp_s("tag"), mp_s("a")), (mp_s("tag"), mp_s("b")),
                    (mp_s("vars"), mp_map([(mp_s("k"), mp_s("v"))])),
                    (mp_s("vars"), mp_map([(mp_s("k"), mp_s("v")), (mp_s("l"), mp_s("w"))]))])
    files["meta_keys_twice"] = chunk_file(twice, batch[:1])
    s = {}
    for name, data in files.items():
        s["chunk_" + name] = b"\x00" + data
        s["chunk_" + name + "_repair"] = b"\x01" + data
    return s


# ---- Fluentd's .meta (buf_file: C1 00, u32 length, msgpack map) -----------------------------

def fluentd_meta(body, header=True):
    return (b"\xc1\x00" + struct.pack(">I", len(body)) + body) if header else body


def fluentd_meta_seeds():
    cid = bytes.fromhex("5f32232e76a4d1bdfdbeed36c384b03b")
    tk = 1704110400

    def body(variables=b"\xc0", tag="app.web", extra=()):
        return mp_map([(mp_s("timekey"), mp_int(tk)), (mp_s("tag"), mp_s(tag)),
                       (mp_s("variables"), variables), (mp_s("seq"), mp_int(0)),
                       (mp_s("id"), mp_bin(cid)), (mp_s("s"), mp_int(3)),
                       (mp_s("c"), mp_int(tk + 5)), (mp_s("m"), mp_int(tk + 9))] + list(extra))

    variables = mp_map([(mp_s("namespace"), mp_s("prod")), (mp_s("pod"), mp_s("web-0"))])
    return {
        "meta_fluentd": fluentd_meta(body()),
        "meta_legacy_no_header": fluentd_meta(body(), header=False),
        "meta_variables": fluentd_meta(body(variables)),
        "meta_variable_not_str": fluentd_meta(body(mp_map([(mp_s("n"), mp_int(7))]))),
        "meta_no_id": fluentd_meta(mp_map([(mp_s("tag"), mp_s("t")), (mp_s("s"), mp_int(1))])),
        "meta_short_length": b"\xc1\x00\x00\x00\x01\x00" + body(),
        "meta_truncated": fluentd_meta(body())[:40],
        "meta_nil_tag_timekey": fluentd_meta(mp_map([
            (mp_s("timekey"), b"\xc0"), (mp_s("tag"), b"\xc0"), (mp_s("variables"), b"\xc0"),
            (mp_s("seq"), mp_int(0)), (mp_s("id"), mp_bin(cid)), (mp_s("s"), mp_int(0))])),
        "name_q": b"buffer.q5f32232e76a4d1bdfdbeed36c384b03b.log",
        "name_b": b"buffer.b5f32232e76a4d1bdfdbeed36c384b03c.log",
    }


# ---- fluent.conf ------------------------------------------------------------------------------

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def config_seeds():
    s = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "**", "*.conf"), recursive=True) +
                       glob.glob(os.path.join(ROOT, "test", "data", "config", "*.conf"))):
        rel = os.path.relpath(path, ROOT).replace(os.sep, "_")
        with open(path, "rb") as f:
            s["file_" + rel] = f.read()
    # the fluent.conf blocks of the docs and the examples' READMEs
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")) +
                       glob.glob(os.path.join(ROOT, "examples", "*", "README.md"))):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
        n = 0
        for block in blocks:
            if re.search(r"^\s*<(source|match|filter|label|system)\b", block, re.M):
                rel = os.path.relpath(path, ROOT).replace(os.sep, "_")
                s["doc_%s_%d" % (rel, n)] = block.encode()
                n += 1
    # what the lexer and parser know, a few lines each (the fixtures are in fuzz_config.c)
    s["syntax_values"] = (
        b"bare text here   # comment\nsingle 'it\\'s'\ndouble \"tab\\t nl\\n \\#{x} \\\"\"\n"
        b"env \"#{ENV['WEIR_FUZZ']}\"\nenv2 \"#{ENV[\"NOPE\"]}\"\nhash {\"a\": 1, # c\n \"b\": [1, {}]}\n"
        b"arr [\"x\", \"y\"]\nflag\nsharp #x\njoined \"a\\\nb\"\nsizes 10k\ntime 1.5h\nlist a, b ,c\n"
        b"kv a:1,b:2\n")
    s["syntax_sections"] = (
        b"<system>\n  log_level debug\n</system>\n<source>\n  @type forward\n  <security>\n"
        b"    shared_key secret\n    <user>\n      password pw\n    </user>\n  </security>\n"
        b"</source>\n<label @X>\n  <match a.** b.{c,d}>\n    @type file\n  </match>\n</label>\n")
    s["syntax_include"] = (
        b"@include params.conf\n<source>\n  @include section.conf\n</source>\n"
        b"include *.conf\n@include \"open.conf\"\n@include nope.conf\n")
    s["syntax_include_close"] = b"<source>\n  @include close.conf\n</source>\n"
    s["syntax_include_bad"] = b"@include bad.conf\n"
    s["syntax_crlf"] = b"<match **>\r\n  @type stdout\r\n</match>\r\n"
    s["syntax_deep"] = b"<a>\n" * 33 + b"</a>\n" * 33
    s["syntax_json_deep"] = b"k " + b"[" * 70 + b"]" * 70 + b"\n"
    # regressions: what the fuzzer found (see test/fuzz/README.md)
    s["found_json_then_blank"] = b'd "[] "\n'
    return s


def format_seeds():
    """Records (msgpack maps) for the formatters: every type, nesting, keys that collide as
    written, invalid UTF-8, the time key's name, and what the fuzzer found."""
    s = {}
    s["plain"] = mp_map([(mp_s("message"), mp_s("hello")), (mp_s("n"), mp_int(42))])
    s["types"] = mp_map([(mp_s("t"), b"\xc3"), (mp_s("f"), b"\xc2"), (mp_s("nil"), b"\xc0"),
                         (mp_s("d"), b"\xcb" + struct.pack(">d", 2.5)),
                         (mp_s("neg"), b"\xd0\x80"), (mp_s("bin"), b"\xc4\x02ab"),
                         (mp_s("arr"), b"\x92\x01\xa1x")])
    s["nested"] = mp_map([(mp_s("a"), mp_map([(mp_s("b"), mp_map([(mp_s("c"), b"\x90")]))]))])
    s["collide"] = mp_map([(mp_int(1), mp_s("int")), (mp_s("1"), mp_s("str")),
                           (b"\xc0", mp_s("nil")), (mp_s(""), mp_s("empty"))])
    s["utf8"] = mp_map([(mp_s("bad"), b"\xa3\xff\xfe\x80"), (mp_s("tab"), mp_s("a\tb\nc"))])
    s["time_key"] = mp_map([(mp_s("tag"), mp_s("x")), (mp_s("1"), mp_int(7))])
    # regressions: what the fuzzer found (see test/fuzz/README.md)
    s["found_ltsv_empty_first_value"] = b"\x89\xa0\xa0"
    return s


def filter_seeds():
    """Records for the filters: the formatters' seeds, plus the fields the fuzz configurations
    read and remove (nested maps and arrays, a time field, a key that is an integer)."""
    s = format_seeds()
    s["fields"] = mp_map([(mp_s("message"), mp_s("cool 123")), (mp_s("n"), mp_int(5)),
                          (mp_s("t"), mp_s("1600000000.5")),
                          (mp_s("a"), mp_map([(mp_s("b"), b"\x92\xa1x\x01"),
                                              (mp_s("c"), mp_map([(mp_s("d"), b"\xc3")]))]))])
    s["array_a"] = mp_map([(mp_s("a"), b"\x93\xa3aaa\xa1b\x90"), (mp_int(1), mp_s("1x"))])
    s["repeated"] = mp_map([(mp_s("message"), mp_s("a")), (mp_s("message"), mp_s("b")),
                            (mp_s("t"), b"\xc3")])
    return s


SEEDS = {
    "fuzz_filters": filter_seeds,
    "fuzz_forward": forward_seeds,
    "fuzz_format": format_seeds,
    "fuzz_http": http_seeds,
    "fuzz_inflate": inflate_seeds,
    "fuzz_chunkfile": chunkfile_seeds,
    "fuzz_fluentd_meta": fluentd_meta_seeds,
    "fuzz_config": config_seeds,
}


def main(argv):
    if len(argv) == 2:
        targets, out = list(SEEDS), argv[1]
    elif len(argv) == 3:
        targets, out = [argv[1]], argv[2]
    else:
        sys.stderr.write(__doc__)
        return 2
    os.makedirs(out, exist_ok=True)
    written = 0
    for target in targets:
        make = SEEDS.get(target)
        if make is None:
            print("make_corpus.py: no seeds for %s (starting from an empty corpus)" % target)
            continue
        for name, data in sorted(make().items()):
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
            written += 1
    print("make_corpus.py: wrote %d seeds to %s" % (written, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
