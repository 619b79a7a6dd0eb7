"""The socket-level conformance cases of the forward input (../shared/docs/forward-protocol.md
section 7), against the real weir binary with plain sockets: stream splitting and pipelining,
half-closes, heartbeats, sizes that must not cost memory, ack echo, deny_keepalive, the UDP
heartbeat, the handshake split and pipelined, TLS, and backpressure when the buffer is full.
The cases that need no socket are unit tests (test/unit/test_forward_*.c). Each test names its
case numbers; each asserts what a sender (or whoever reads weir's log) would see."""

import glob
import gzip
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import tempfile
import time
import zlib

import msgpack

from weirtest import Weir, free_port, json_field, make_certs, rss_env, run_tests

T = 1700000000
SECURITY = """  <security>
    self_hostname server.example
    shared_key secret
  </security>"""
LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")
LOG_LEVEL = re.compile(r"^\S+ \S+ \S+ \[(trace|debug|info|warn|error|fatal)\]: (.*)$")


def conf(port, source_extra="", match=None):
    return """
<source>
  @type forward
  port %d
  bind 127.0.0.1
%s
</source>
%s
""" % (port, source_extra, match or "<match **>\n  @type stdout\n</match>")


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def eventtime(sec, nsec):
    return msgpack.ExtType(0, struct.pack(">II", sec, nsec))


def message(tag, seq, chunk=None):
    return pack([tag, T, {"seq": seq}] + ([{"chunk": chunk}] if chunk is not None else []))


def ack_bytes(chunk):
    return pack({"ack": chunk})


def entries(seqs, pad=0):
    return b"".join(pack([eventtime(T, s % 1000000000), {"seq": s, "pad": "x" * pad}])
                    for s in seqs)


def packed(tag, payload, option):
    return pack([tag, payload, option])


def packed_of_size(total, tag, first_seq, chunk):
    """A PackedForward frame (bin payload, {"chunk": ...}) of exactly `total` bytes: entries of
    about 256 bytes, the last one padded to fit. Returns (frame, seqs)."""
    opt = {"chunk": chunk}
    parts, seqs, size = [], [], 0
    while size < total - 700:
        parts.append(entries([first_seq + len(seqs)], pad=230))
        seqs.append(first_seq + len(seqs))
        size += len(parts[-1])
    seqs.append(first_seq + len(seqs))
    body = b"".join(parts)
    pad = 600
    for _ in range(5):
        frame = packed(tag, body + entries([seqs[-1]], pad=pad), opt)
        if len(frame) == total:
            return frame, seqs
        pad += total - len(frame)
    raise AssertionError("cannot build a frame of %d bytes" % total)


def status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def log_lines(text, at_least):
    """Log lines at level `at_least` or above, and any line without a level (a sanitizer
    report, say): nothing should print those while a test watches."""
    floor = LEVELS.index(at_least)
    out = []
    for line in text.splitlines():
        m = LOG_LEVEL.match(line)
        if (m and LEVELS.index(m.group(1)) >= floor) or (not m and line.strip()):
            out.append(line)
    return out


class LogWindow:
    """What weir logged from the window's creation until now."""

    def __init__(self, w):
        self.w = w
        self.start = len(w.log())

    def text(self):
        return self.w.log()[self.start:]


def recv_until_close(sock, timeout=5.0):
    """Everything the server sends until it closes. Returns (bytes, 'fin' | 'rst' | 'open')."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            b = sock.recv(65536)
        except socket.timeout:
            return data, "open"
        except ConnectionResetError:
            return data, "rst"
        if not b:
            return data, "fin"
        data += b
    return data, "open"


def recv_objects(sock, n, timeout=5.0, raw=None):
    """Reads until n msgpack objects arrived. With raw (a list), each recv's bytes go there."""
    sock.settimeout(timeout)
    u = msgpack.Unpacker(raw=False)
    objs = []
    deadline = time.time() + timeout
    while len(objs) < n:
        if time.time() > deadline:
            raise AssertionError("got %d of %d responses: %r" % (len(objs), n, objs))
        b = sock.recv(65536)
        if not b:
            raise AssertionError("closed after %d of %d responses: %r" % (len(objs), n, objs))
        if raw is not None:
            raw.append(b)
        u.feed(b)
        objs.extend(u)
    return objs


def assert_no_response(sock, wait=1.0):
    """'no resp': no bytes arrive within 1 s, and the connection is not closed."""
    sock.settimeout(wait)
    try:
        b = sock.recv(100)
    except socket.timeout:
        return
    raise AssertionError("expected no response, got %r" % b)


def seqs_of(events):
    return [e[3]["seq"] for e in events]


def stop_ok(w):
    rc = w.stop()
    assert rc == 0, (rc, w.log()[-3000:])


# ---- B. stream handling and splitting --------------------------------------------------------


def test_27_thousand_messages_and_gzip_acks_in_one_write():
    port = free_port()
    with Weir(conf(port)) as w:
        w.start([port])
        data = b"".join(message("t", i) for i in range(1000))
        chunks = ["gz%d" % j for j in range(10)]
        seq = 1000
        for c in chunks:
            payload = gzip.compress(entries(range(seq, seq + 10)))
            data += packed("t", payload, {"size": 10, "compressed": "gzip", "chunk": c})
            seq += 10
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(data)
        reads = []
        acks = recv_objects(sock, 10, timeout=20, raw=reads)
        # each ack is a whole msgpack map in its own write: no read ends inside one
        for b in reads:
            u = msgpack.Unpacker(raw=False)
            u.feed(b)
            list(u)
            assert u.tell() == len(b), "a read ended inside an ack: %r" % b
        assert acks == [{"ack": c} for c in chunks], acks
        assert_no_response(sock, 0.3)
        sock.close()
        ev = w.wait_events(1100, timeout=20)
        stop_ok(w)
    assert seqs_of(ev) == list(range(1100)), (len(ev), w.log()[-2000:])
    assert all(e[2] == "t" for e in ev)


def test_29_byte_at_a_time_64k_and_1m():
    port = free_port()
    with Weir(conf(port)) as w:
        w.start([port])
        frame, seqs = packed_of_size(64 * 1024, "bytewise", 0, "b64k")
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mv = memoryview(frame)
        for i in range(len(frame)):
            sock.send(mv[i:i + 1])
        assert recv_objects(sock, 1, timeout=20) == [{"ack": "b64k"}]
        ev = w.wait_events(len(seqs), timeout=20)
        assert seqs_of(ev) == seqs, len(ev)
        assert all(e[2] == "bytewise" for e in ev)
        # 1 MiB one byte per write completes (no quadratic reparse) within a generous budget
        big, bseqs = packed_of_size(1024 * 1024, "bytewise", len(seqs), "b1m")
        budget = time.time() + 120
        mv = memoryview(big)
        for i in range(len(big)):
            sock.send(mv[i:i + 1])
            if i & 0xFFFF == 0:
                assert time.time() < budget, "1 MiB in 1-byte writes: only %d bytes in 120 s" % i
        assert recv_objects(sock, 1, timeout=max(1.0, budget - time.time())) == [{"ack": "b1m"}]
        sock.close()
        ev = w.wait_events(len(seqs) + len(bseqs), timeout=30)
        stop_ok(w)
    assert seqs_of(ev) == seqs + bseqs, len(ev)


def test_30_frame_plus_half_then_fin():
    port = free_port()
    with Weir(conf(port), args=["-v"]) as w:
        w.start([port])
        time.sleep(0.2)
        win = LogWindow(w)
        first = message("t", 1, chunk="c1")
        second = message("t", 2, chunk="c2")
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(first + second[:len(second) // 2])
        sock.shutdown(socket.SHUT_WR)
        data, how = recv_until_close(sock)
        sock.close()
        assert data == ack_bytes("c1"), data
        assert how == "fin", how  # a clean close, not a reset
        ev = w.wait_events(1)
        time.sleep(0.3)
        ev = w.stdout_events()
        loud = log_lines(win.text(), "info")
        stop_ok(w)
    assert seqs_of(ev) == [1], ev
    assert not loud, "logged above debug about a discarded partial frame: %s" % loud


def test_31_frame_then_shut_wr_without_chunk():
    port = free_port()
    with Weir(conf(port)) as w:
        w.start([port])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(message("t", 31))
        sock.shutdown(socket.SHUT_WR)
        data, how = recv_until_close(sock)
        sock.close()
        ev = w.wait_events(1)
        stop_ok(w)
    assert (data, how) == (b"", "fin"), (data, how)
    assert seqs_of(ev) == [31], ev


def test_32_frame_then_shut_wr_with_chunk():
    port = free_port()
    with Weir(conf(port)) as w:
        w.start([port])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(message("t", 32, chunk="c32"))
        sock.shutdown(socket.SHUT_WR)
        data, how = recv_until_close(sock)
        sock.close()
        ev = w.wait_events(1)
        stop_ok(w)
    assert data == ack_bytes("c32"), data  # written before the close, in full
    assert how == "fin", how
    assert seqs_of(ev) == [32], ev


def test_33_nil_heartbeats_around_a_frame():
    port = free_port()
    with Weir(conf(port)) as w:
        w.start([port])
        sock = socket.create_connection(("127.0.0.1", port))
        for part in (b"\xc0", message("t", 1), b"\xc0\xc0"):
            sock.sendall(part)
            time.sleep(0.05)
        assert_no_response(sock)
        ev = w.wait_events(1)
        assert seqs_of(ev) == [1], ev
        # still open: a follow-up frame is committed
        sock.sendall(message("t", 2, chunk="c2"))
        assert recv_objects(sock, 1) == [{"ack": "c2"}]
        sock.close()
        ev = w.wait_events(2)
        stop_ok(w)
    assert seqs_of(ev) == [1, 2], ev


def test_34_hundred_empty_connections_in_a_second():
    port = free_port()
    with Weir(conf(port)) as w:
        w.start([port])
        time.sleep(0.3)  # the start-up probe connection is gone
        pid = w.proc.pid
        before = fd_count(pid)
        win = LogWindow(w)
        t0 = time.time()
        for i in range(100):
            socket.create_connection(("127.0.0.1", port)).close()
            delay = t0 + (i + 1) * 0.01 - time.time()
            if delay > 0:
                time.sleep(delay)
        deadline = time.time() + 5
        while fd_count(pid) > before and time.time() < deadline:
            time.sleep(0.05)
        after = fd_count(pid)
        time.sleep(0.2)
        loud = log_lines(win.text(), "warn")
        ev = w.stdout_events()
        stop_ok(w)
    assert after <= before, "fds grew from %d to %d" % (before, after)
    assert ev == [], ev
    assert not loud, loud


def test_35_next_frame_after_an_ack_is_processed():
    port = free_port()
    with Weir(conf(port)) as w:
        w.start([port])
        sock = socket.create_connection(("127.0.0.1", port))
        for i in range(5):
            sock.sendall(message("t", i, chunk="k%d" % i))
            assert recv_objects(sock, 1) == [{"ack": "k%d" % i}], i
        sock.close()
        ev = w.wait_events(5)
        stop_ok(w)
    assert seqs_of(ev) == list(range(5)), ev


# ---- D. sizes that must not cost memory -------------------------------------------------------


def test_58_frame_of_chunk_size_limit_plus_one():
    port = free_port()
    with Weir(conf(port, "  chunk_size_limit 1m")) as w:
        w.start([port])
        pid = w.proc.pid
        # exactly at the limit: committed
        at, at_seqs = packed_of_size(1024 * 1024, "cap", 0, "at")
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(at)
        assert recv_objects(sock, 1, timeout=20) == [{"ack": "at"}]
        sock.close()
        ev = w.wait_events(len(at_seqs), timeout=20)
        assert seqs_of(ev) == at_seqs, len(ev)
        # one byte more: closed before the whole frame was sent (its last byte never is)
        over, _ = packed_of_size(1024 * 1024 + 1, "cap", 10 ** 6, "over")
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(10)  # a server that stops reading without closing fails below
        sent = 0
        try:
            while sent < len(over) - 1:
                sent += sock.send(over[sent:min(sent + 65536, len(over) - 1)])
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        data, how = recv_until_close(sock)
        sock.close()
        assert how in ("fin", "rst"), "still open after %d of %d bytes" % (sent, len(over))
        assert data == b"", data
        time.sleep(0.3)
        assert len(w.stdout_events()) == len(at_seqs)
        hwm = status_kb(pid, "VmHWM")
        # the next new connection still works
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(message("next", 1, chunk="n"))
        assert recv_objects(sock, 1) == [{"ack": "n"}]
        sock.close()
        ev = w.wait_events(len(at_seqs) + 1)
        stop_ok(w)
    assert hwm < 64 * 1024, "peak RSS %d kB" % hwm
    assert [e[2] for e in ev[len(at_seqs):]] == ["next"]


def gzip_bomb(total=512 << 20):
    """One gzip member of `total` zero bytes (about 520 KiB), built without deflating it all:
    after a full flush each 1 MiB of zeros compresses to the same bytes."""
    z = bytes(1 << 20)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    seg = co.compress(z) + co.flush(zlib.Z_FULL_FLUSH)
    assert seg == co.compress(z) + co.flush(zlib.Z_FULL_FLUSH)
    tail = co.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(total >> 20):
        crc = zlib.crc32(z, crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + seg * (total >> 20) + tail
            + struct.pack("<II", crc, total & 0xFFFFFFFF))


def test_64_gzip_bomb():
    port = free_port()
    # ASan's quarantine would charge the output buffer's geometric growth to weir several
    # times over; without it a sanitized build's peak is close to a plain build's (about 53 MB
    # vs 26 MB; 18 MB and 9 MB at rest)
    with Weir(conf(port, "  decompression_size_limit 16m"), env=rss_env()) as w:
        w.start([port])
        pid = w.proc.pid
        frame = packed("bomb", gzip_bomb(), {"compressed": "gzip", "chunk": "bomb"})
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(10)
        try:
            sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        data, how = recv_until_close(sock, timeout=20)
        sock.close()
        hwm = status_kb(pid, "VmHWM")
        # the next new connection still works
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(message("next", 1, chunk="n"))
        assert recv_objects(sock, 1) == [{"ack": "n"}]
        sock.close()
        ev = w.wait_events(1)
        stop_ok(w)
    assert how in ("fin", "rst"), how
    assert data == b"", data  # no ack
    assert hwm < 64 * 1024, "peak RSS %d kB with a 16 MiB decompression limit" % hwm
    assert [e[2] for e in ev] == ["next"], ev


# ---- D72. the buffer is full: weir stops reading, then acks once there is room ----------------


def output_seqs(d):
    return json_field(os.path.join(d, "out", "events*.log"))


def test_72_full_buffer_stops_reading_then_acks_after_flush():
    d = tempfile.mkdtemp(prefix="weir-full-")
    port = free_port()
    match = """<match **>
  @type file
  path %s/out/events
  <format>
    @type json
  </format>
  <buffer>
    @type file
    path %s/buf
    flush_mode interval
    flush_interval 3600
    total_limit_size 64k
  </buffer>
</match>""" % (d, d)
    with Weir(conf(port, match=match), workdir=d) as w:
        w.start([port])
        sock = socket.create_connection(("127.0.0.1", port))
        acked = []
        pending = None
        for i in range(40):
            seqs = list(range(i * 8, i * 8 + 8))
            sock.sendall(pack(["full", [[T, {"seq": s, "pad": "x" * 1000}] for s in seqs],
                               {"chunk": "f%d" % i}]))
            sock.settimeout(2.0)
            try:
                b = sock.recv(100)
            except socket.timeout:
                pending = (i, seqs)
                break
            assert b == ack_bytes("f%d" % i), b
            acked.extend(seqs)
        assert pending, "every frame was acked: the 64k buffer never filled"
        assert len(acked) >= 8 * 4, "no ack after only %d events" % len(acked)
        # weir holds the frame without closing: the connection is still open, just not read
        assert_no_response(sock, 1.0)
        assert output_seqs(d) == []
        w.proc.send_signal(signal.SIGUSR1)  # flush: the buffer drains and has room again
        assert recv_objects(sock, 1, timeout=20) == [{"ack": "f%d" % pending[0]}]
        w.proc.send_signal(signal.SIGUSR1)  # and the held frame reaches the output too
        want = acked + pending[1]
        deadline = time.time() + 20
        while output_seqs(d) != want and time.time() < deadline:
            time.sleep(0.1)
        got = output_seqs(d)
        sock.close()
        stop_ok(w)
    assert got == want, (len(got), len(want))


# ---- E. ack echo --------------------------------------------------------------------------------


def test_76_identical_frames_same_chunk_both_acked():
    port = free_port()
    with Weir(conf(port)) as w:
        w.start([port])
        frame = pack(["t", [[T, {"seq": 7}]], {"chunk": "same"}])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(frame + frame)
        assert recv_objects(sock, 2) == [{"ack": "same"}, {"ack": "same"}]
        sock.close()
        ev = w.wait_events(2)
        time.sleep(0.2)
        ev = w.stdout_events()
        stop_ok(w)
    assert seqs_of(ev) == [7, 7], ev


# ---- F. keepalive and heartbeat ---------------------------------------------------------------


def test_77_deny_keepalive():
    port = free_port()
    with Weir(conf(port, "  deny_keepalive true")) as w:
        w.start([port])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(message("t", 1, chunk="dk"))
        data, how = recv_until_close(sock)
        sock.close()
        assert (data, how) == (ack_bytes("dk"), "fin"), (data, how)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(message("t", 2))
        data, how = recv_until_close(sock)
        sock.close()
        assert data == b"" and how in ("fin", "rst"), (data, how)
        ev = w.wait_events(2)
        stop_ok(w)
    assert seqs_of(ev) == [1, 2], ev
    port = free_port()
    with Weir(conf(port, "  deny_keepalive true\n" + SECURITY)) as w:
        w.start([port])
        sock = socket.create_connection(("127.0.0.1", port))
        raw = []
        helo = recv_objects(sock, 1, raw=raw)[0]
        sock.close()
        stop_ok(w)
    assert helo[0] == "HELO" and helo[1]["keepalive"] is False, helo
    assert b"\xa9keepalive\xc2" in b"".join(raw)


def udp_heartbeats(port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(3)
    try:
        for payload in (b"\x00", b"x" * 200, b""):
            u.sendto(payload, ("127.0.0.1", port))
            data, addr = u.recvfrom(1024)
            assert (data, addr) == (b"\x00", ("127.0.0.1", port)), (payload[:4], data, addr)
        u.settimeout(0.3)
        try:
            extra = u.recvfrom(1024)
        except socket.timeout:
            extra = None
        assert extra is None, "an extra reply: %r" % (extra,)
    finally:
        u.close()


def test_79_udp_heartbeat():
    port = free_port()
    with Weir(conf(port)) as w:
        w.start([port])
        udp_heartbeats(port)
        stop_ok(w)


def tls_extra(d):
    return """  <transport tls>
    cert_path %s/server.crt
    private_key_path %s/server.key
    private_key_passphrase "#{ENV['KEY_PASS']}"
  </transport>""" % (d, d)


def test_80_udp_heartbeat_plaintext_while_tcp_is_tls():
    d = os.path.join(tempfile.mkdtemp(prefix="weir-tls-"), "keys")
    pw = make_certs(d)
    port = free_port()
    with Weir(conf(port, tls_extra(d)), env={"KEY_PASS": pw}) as w:
        w.start([port])
        udp_heartbeats(port)
        # and the TCP port really is TLS
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(message("tls", 1, chunk="t"))
                assert recv_objects(s, 1) == [{"ack": "t"}]
        ev = w.wait_events(1)
        stop_ok(w)
    assert seqs_of(ev) == [1], ev


# ---- H. handshake -------------------------------------------------------------------------------

SALT = b"0123456789abcdef0123456789abcdef"


def ping_for(nonce):
    digest = hashlib.sha512(SALT + b"client.example" + nonce + b"secret").hexdigest()
    return pack(["PING", "client.example", SALT.decode(), digest, "", ""])


def pong_for(nonce):
    return ["PONG", True, "", "server.example",
            hashlib.sha512(SALT + b"server.example" + nonce + b"secret").hexdigest()]


def test_91_ping_split_at_every_byte_and_pipelined():
    port = free_port()
    with Weir(conf(port, SECURITY)) as w:
        w.start([port])
        sock = socket.create_connection(("127.0.0.1", port))
        n = len(ping_for(recv_objects(sock, 1)[0][1]["nonce"]))
        sock.close()
        for k in range(1, n):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nonce = recv_objects(sock, 1)[0][1]["nonce"]
            ping = ping_for(nonce)
            sock.sendall(ping[:k])
            time.sleep(0.002)
            sock.sendall(ping[k:])
            assert recv_objects(sock, 1) == [pong_for(nonce)], "split at %d" % k
            sock.close()
        # and one byte per write, 2 ms apart
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nonce = recv_objects(sock, 1)[0][1]["nonce"]
        ping = ping_for(nonce)
        for i in range(len(ping)):
            sock.sendall(ping[i:i + 1])
            time.sleep(0.002)
        assert recv_objects(sock, 1) == [pong_for(nonce)], "one byte per write"
        sock.close()
        # PING and an event frame in one write: PONG, then the frame is committed and acked
        sock = socket.create_connection(("127.0.0.1", port))
        nonce = recv_objects(sock, 1)[0][1]["nonce"]
        sock.sendall(ping_for(nonce) + message("after.ping", 1, chunk="p"))
        assert recv_objects(sock, 2) == [pong_for(nonce), {"ack": "p"}]
        sock.close()
        ev = w.wait_events(1)
        stop_ok(w)
    assert [(e[2], e[3]) for e in ev] == [("after.ping", {"seq": 1})], ev


def test_92_client_closes_before_ping():
    port = free_port()
    with Weir(conf(port, SECURITY)) as w:
        w.start([port])
        time.sleep(0.2)
        win = LogWindow(w)
        # reads the HELO, then leaves: weir closes its side cleanly, sending nothing more
        sock = socket.create_connection(("127.0.0.1", port))
        assert recv_objects(sock, 1)[0][0] == "HELO"
        sock.shutdown(socket.SHUT_WR)
        data, how = recv_until_close(sock)
        sock.close()
        assert (data, how) == (b"", "fin"), (data, how)
        # leaves without reading the HELO
        socket.create_connection(("127.0.0.1", port)).close()
        time.sleep(0.5)
        loud = log_lines(win.text(), "warn")
        stop_ok(w)
    assert not loud, "above info: %s" % loud


def test_97_tls_port_plaintext_client_and_tls_client():
    d = os.path.join(tempfile.mkdtemp(prefix="weir-tls-"), "keys")
    pw = make_certs(d)
    port = free_port()
    with Weir(conf(port, tls_extra(d) + "\n" + SECURITY), env={"KEY_PASS": pw}) as w:
        w.start([port])
        # a plaintext forward client: nothing in cleartext before or after its bytes
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(0.5)
        try:
            early = sock.recv(1000)
        except socket.timeout:
            early = None
        assert early is None, "sent before any TLS handshake: %r" % early
        try:
            sock.sendall(message("plain", 1, chunk="x"))
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, how = recv_until_close(sock)
        sock.close()
        assert b"HELO" not in data, data
        assert how in ("fin", "rst"), how
        # a TLS client gets the HELO after the TLS handshake, and can go on
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                helo = recv_objects(s, 1)[0]
                assert helo[0] == "HELO" and len(helo[1]["nonce"]) == 16, helo
                nonce = helo[1]["nonce"]
                s.sendall(ping_for(nonce))
                assert recv_objects(s, 1) == [pong_for(nonce)]
                s.sendall(message("tls", 1, chunk="t"))
                assert recv_objects(s, 1) == [{"ack": "t"}]
        ev = w.wait_events(1)
        time.sleep(0.2)
        ev = w.stdout_events()
        stop_ok(w)
    assert [e[2] for e in ev] == ["tls"], ev


if __name__ == "__main__":
    run_tests([
        test_27_thousand_messages_and_gzip_acks_in_one_write,
        test_29_byte_at_a_time_64k_and_1m,
        test_30_frame_plus_half_then_fin,
        test_31_frame_then_shut_wr_without_chunk,
        test_32_frame_then_shut_wr_with_chunk,
        test_33_nil_heartbeats_around_a_frame,
        test_34_hundred_empty_connections_in_a_second,
        test_35_next_frame_after_an_ack_is_processed,
        test_58_frame_of_chunk_size_limit_plus_one,
        test_64_gzip_bomb,
        test_72_full_buffer_stops_reading_then_acks_after_flush,
        test_76_identical_frames_same_chunk_both_acked,
        test_77_deny_keepalive,
        test_79_udp_heartbeat,
        test_80_udp_heartbeat_plaintext_while_tcp_is_tls,
        test_91_ping_split_at_every_byte_and_pipelined,
        test_92_client_closes_before_ping,
        test_97_tls_port_plaintext_client_and_tls_client,
    ])
