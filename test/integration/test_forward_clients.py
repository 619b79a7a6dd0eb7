"""Real forward-protocol senders against the real weir binary, verified event by event at the
output: Python fluent-logger, Go fluent-logger-golang (Docker's library), hand-built
PackedForward / CompressedPackedForward frames with acks, the shared-key handshake, TLS and the
UDP heartbeat. The reference is ../shared/docs/forward-protocol.md."""

import gzip
import hashlib
import os
import socket
import ssl
import subprocess
import time

import msgpack
from fluent import sender

from weirtest import SOURCE_DIR, Weir, free_port, make_certs, run_tests

T = 1700000000


def stdout_conf(port, source_extra=""):
    return """
<source>
  @type forward
  port %d
  bind 127.0.0.1
%s
</source>
<match **>
  @type stdout
</match>
""" % (port, source_extra)


def eventtime(sec, nsec):
    return msgpack.ExtType(0, sec.to_bytes(4, "big") + nsec.to_bytes(4, "big"))


def recv_msgpack(sock, timeout=5.0):
    sock.settimeout(timeout)
    u = msgpack.Unpacker(raw=False)
    while True:
        data = sock.recv(4096)
        if not data:
            raise EOFError("connection closed")
        u.feed(data)
        for obj in u:
            return obj


def test_python_fluent_logger_message_mode():
    port = free_port()
    with Weir(stdout_conf(port)) as w:
        w.start([port])
        s = sender.FluentSender("app", host="127.0.0.1", port=port)
        for i in range(100):
            assert s.emit_with_time("web", T + i, {"seq": i, "msg": "hello %d" % i}), s.last_error
        s.close()
        ev = w.wait_events(100)
        assert w.stop() == 0
    assert len(ev) == 100, (len(ev), w.log())
    for i, (_, nsec, tag, rec) in enumerate(ev):
        assert tag == "app.web"
        assert rec == {"seq": i, "msg": "hello %d" % i}
        assert nsec == 0


def test_python_fluent_logger_nanosecond_precision():
    port = free_port()
    with Weir(stdout_conf(port)) as w:
        w.start([port])
        s = sender.FluentSender("ns", host="127.0.0.1", port=port, nanosecond_precision=True)
        s.emit_with_time("t", sender.EventTime(T + 0.123456789), {"k": "v"})
        s.close()
        ev = w.wait_events(1)
        w.stop()
    assert len(ev) == 1, w.log()
    # EventTime from a float is only microsecond-exact; the nanoseconds weir stores are the sender's
    assert abs(ev[0][1] - 123456789) < 1000, ev
    assert ev[0][2] == "ns.t"


def go_sender():
    out = "/tmp/weir-fluentsend"
    src = os.path.join(SOURCE_DIR, "test/integration/go/fluentsend")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode",
               GOCACHE=os.path.join("/tmp", "weir-gocache"))
    subprocess.run(["go", "build", "-o", out, "."], cwd=src, env=env, check=True)
    return out


def test_go_fluent_logger_ack_and_subsecond():
    binary = go_sender()
    port = free_port()
    with Weir(stdout_conf(port)) as w:
        w.start([port])
        p = subprocess.run([binary, "-port", str(port), "-n", "50", "-tag", "docker.abc", "-ack",
                            "-subsecond"], capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert b"doesn't match" not in p.stderr, p.stderr
        ev = w.wait_events(50)
        w.stop()
    assert len(ev) == 50, w.log()
    for i, (_, nsec, tag, rec) in enumerate(ev):
        assert tag == "docker.abc"
        assert rec["seq"] == i and rec["msg"] == "event %d" % i
        assert nsec == (123456789 + i * 1000000) % 1000000000


def test_go_fluent_logger_integer_time():
    binary = go_sender()
    port = free_port()
    with Weir(stdout_conf(port)) as w:
        w.start([port])
        p = subprocess.run([binary, "-port", str(port), "-n", "5"], capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        ev = w.wait_events(5)
        w.stop()
    assert [e[3]["seq"] for e in ev] == list(range(5)), w.log()
    assert all(e[1] == 0 for e in ev)


def packed_entries(n, start=0):
    return b"".join(msgpack.packb([eventtime(T, i), {"seq": i, "pad": "x" * 50}], use_bin_type=True)
                    for i in range(start, start + n))


def test_packed_forward_with_ack_str32_like_fluentd():
    port = free_port()
    with Weir(stdout_conf(port)) as w:
        w.start([port])
        sock = socket.create_connection(("127.0.0.1", port))
        payload = packed_entries(10)
        chunk = "AAECAwQFBgcICQoLDA0ODw==\n"
        # Fluentd's out_forward: 0x93, tag, str32 + payload, {size, compressed: text, chunk}
        frame = (b"\x93" + msgpack.packb("fluentd.test") + b"\xdb" + len(payload).to_bytes(4, "big")
                 + payload + msgpack.packb({"size": 10, "compressed": "text", "chunk": chunk}))
        sock.sendall(frame)
        ack = recv_msgpack(sock)
        assert ack == {"ack": chunk}, ack
        sock.close()
        ev = w.wait_events(10)
        w.stop()
    assert [e[3]["seq"] for e in ev] == list(range(10))
    assert [e[1] for e in ev] == list(range(10))  # nanoseconds kept


def test_compressed_packed_forward_multi_member_gzip():
    port = free_port()
    with Weir(stdout_conf(port)) as w:
        w.start([port])
        sock = socket.create_connection(("127.0.0.1", port))
        # one gzip member per entry, as Fluentd's buffer compresses each append
        payload = b"".join(gzip.compress(packed_entries(1, i)) for i in range(20))
        frame = msgpack.packb(["gz", payload, {"size": 20, "compressed": "gzip", "chunk": "c1"}],
                              use_bin_type=True)
        sock.sendall(frame)
        assert recv_msgpack(sock) == {"ack": "c1"}
        sock.close()
        ev = w.wait_events(20)
        w.stop()
    assert [e[3]["seq"] for e in ev] == list(range(20)), w.log()


def test_large_compressed_frame_inflated_in_turns():
    """A CompressedPackedForward frame that inflates to 32 MiB is inflated a slice per loop turn:
    a message sent on another connection right after it is stored (and acked) before it, and
    the big frame's events are all stored, whole, then acked."""
    port = free_port()
    n, pad = 256, "x" * (128 * 1024)
    entries = b"".join(msgpack.packb([eventtime(T, i), {"seq": i, "pad": pad}], use_bin_type=True)
                       for i in range(n))
    frame = msgpack.packb(["big", gzip.compress(entries, 9),
                           {"size": n, "compressed": "gzip", "chunk": "big"}], use_bin_type=True)
    with Weir(stdout_conf(port)) as w:
        w.start([port])
        a = socket.create_connection(("127.0.0.1", port))
        b = socket.create_connection(("127.0.0.1", port))
        a.sendall(frame)
        b.sendall(msgpack.packb(["small", T, {"seq": -1}, {"chunk": "small"}]))
        assert recv_msgpack(b) == {"ack": "small"}
        assert recv_msgpack(a, timeout=30) == {"ack": "big"}
        ev = w.wait_events(n + 1, timeout=30)
        a.close()
        b.close()
        w.stop()
    assert [e[2] for e in ev[:2]] == ["small", "big"], w.log()  # stored in that order
    assert [e[3]["seq"] for e in ev[1:]] == list(range(n))
    assert all(e[3]["pad"] == pad for e in ev[1:])


def test_broken_frame_closes_only_that_connection():
    port = free_port()
    with Weir(stdout_conf(port)) as w:
        w.start([port])
        good = socket.create_connection(("127.0.0.1", port))
        bad = socket.create_connection(("127.0.0.1", port))
        bad.sendall(b"\x93\xa1t\xc1")  # reserved byte 0xc1
        bad.settimeout(5)
        assert bad.recv(100) == b""  # closed, no ack
        good.sendall(msgpack.packb(["t", T, {"k": "v"}, {"chunk": "x"}]))
        assert recv_msgpack(good) == {"ack": "x"}
        good.close()
        ev = w.wait_events(1)
        w.stop()
    assert len(ev) == 1
    assert "closing connection from 127.0.0.1" in w.log()


def test_handshake_shared_key():
    port = free_port()
    extra = """  <security>
    self_hostname server.example
    shared_key secret
  </security>"""
    with Weir(stdout_conf(port, extra)) as w:
        w.start([port])
        sock = socket.create_connection(("127.0.0.1", port))
        helo = recv_msgpack(sock)
        assert helo[0] == "HELO"
        nonce = helo[1]["nonce"]
        salt = b"0123456789abcdef0123456789abcdef"
        digest = hashlib.sha512(salt + b"client.example" + nonce + b"secret").hexdigest()
        sock.sendall(msgpack.packb(["PING", "client.example", salt, digest, "", ""]))
        pong = recv_msgpack(sock)
        assert pong[0] == "PONG" and pong[1] is True, pong
        assert pong[3] == "server.example"
        assert pong[4] == hashlib.sha512(salt + b"server.example" + nonce + b"secret").hexdigest()
        sock.sendall(msgpack.packb(["secure", T, {"k": "v"}, {"chunk": "s1"}]))
        assert recv_msgpack(sock) == {"ack": "s1"}
        sock.close()
        # the wrong key gets a PONG false and a closed connection
        sock = socket.create_connection(("127.0.0.1", port))
        nonce = recv_msgpack(sock)[1]["nonce"]
        digest = hashlib.sha512(salt + b"client.example" + nonce + b"wrong").hexdigest()
        sock.sendall(msgpack.packb(["PING", "client.example", salt, digest, "", ""]))
        assert recv_msgpack(sock) == ["PONG", False, "shared_key mismatch", "", ""]
        sock.sendall(msgpack.packb(["sneaky", T, {"k": "v"}]))
        sock.settimeout(5)
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
        ev = w.wait_events(1)
        time.sleep(0.3)
        ev = w.stdout_events()
        w.stop()
    assert [e[2] for e in ev] == ["secure"], ev


def test_tls_with_python_ssl():
    port = free_port()
    d = os.path.join(Weir("").dir, "keys")
    pw = make_certs(d)
    extra = """  <transport tls>
    cert_path %s/server.crt
    private_key_path %s/server.key
    private_key_passphrase "#{ENV['KEY_PASS']}"
  </transport>""" % (d, d)
    with Weir(stdout_conf(port, extra), env={"KEY_PASS": pw}) as w:
        w.start([port])
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(msgpack.packb(["tls.t", T, {"secret": "over tls"}, {"chunk": "t1"}]))
                assert recv_msgpack(s) == {"ack": "t1"}
        ev = w.wait_events(1)
        w.stop()
    assert [(e[2], e[3]) for e in ev] == [("tls.t", {"secret": "over tls"})], w.log()
    assert pw not in w.log()


def test_udp_heartbeat():
    port = free_port()
    with Weir(stdout_conf(port)) as w:
        w.start([port])
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        for payload in (b"\x00", b"x" * 200, b""):
            u.sendto(payload, ("127.0.0.1", port))
            data, addr = u.recvfrom(16)
            assert data == b"\x00" and addr == ("127.0.0.1", port), (data, addr)
        w.stop()


if __name__ == "__main__":
    run_tests([
        test_python_fluent_logger_message_mode,
        test_python_fluent_logger_nanosecond_precision,
        test_go_fluent_logger_ack_and_subsecond,
        test_go_fluent_logger_integer_time,
        test_packed_forward_with_ack_str32_like_fluentd,
        test_compressed_packed_forward_multi_member_gzip,
        test_large_compressed_frame_inflated_in_turns,
        test_broken_frame_closes_only_that_connection,
        test_handshake_shared_key,
        test_tls_with_python_ssl,
        test_udp_heartbeat,
    ])
