"""<source> @type http against real clients: curl over mutual TLS, a Go client that behaves as
teleport-event-handler (go/teleportsim), raw sockets for keep-alive, pipelining, Expect,
chunked bodies, limits and malformed requests, and Python's ssl for the TLS handshake rules.
The reference is ../shared/docs/http-input.md (sections 2, 5 and 6); what each test checks
is what a user would look at: status lines, bytes on the wire, and the events weir printed."""

import collections
import datetime
import gzip
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from weirtest import SOURCE_DIR, WEIR_BIN, Weir, free_port, make_certs, run_tests, sh, wait_port

ENV = {"TZ": "UTC"}

# docs/http-input.md 6.3, with ", " separators as the real v17 binary sends them
SID = "a2836fe1-51b5-4ab6-994e-f2f32eb97dc5"
AUDIT = [
    '{"addr.remote":"192.0.2.10:52906", "cluster_name":"teleport.example.com", "code":"T1000I", "ei":0, "event":"user.login", "method":"local", "mfa_device":{"mfa_device_name":"otp-device", "mfa_device_type":"TOTP", "mfa_device_uuid":"d07bf388-af49-4ec2-b8a4-c8a9e785b70b"}, "required_private_key_policy":"none", "success":true, "time":"2024-05-09T21:00:40.632Z", "uid":"c325a91c-62b5-473d-b906-9926d6ce4530", "user":"alice", "user_agent":"Mozilla/5.0 (X11; Linux x86_64)"}',
    '{"addr.remote":"192.0.2.10:52457","cluster_name":"teleport.example.com","code":"T1000W","ei":0,"error":"invalid username, password or second factor","event":"user.login","method":"local","success":false,"time":"2024-05-09T20:58:57.77Z","uid":"8c815e54-c83b-43d7-b578-2bcf5b6775fa","user":"root","user_agent":"curl/8.5.0"}',
    '{"addr.local":"172.31.13.98:443", "addr.remote":"192.0.2.10:52963", "cluster_name":"teleport.example.com", "code":"T2000I", "ei":0, "event":"session.start", "initial_command":[""], "login":"ec2-user", "namespace":"default", "private_key_policy":"none", "proto":"ssh", "server_addr":"[::]:3022", "server_hostname":"ip-172-31-13-98", "server_id":"b321c207-fd08-46c8-b248-0c20436feb62", "server_labels":{"hostname":"ip-172-31-13-98"}, "session_recording":"node", "sid":"a2836fe1-51b5-4ab6-994e-f2f32eb97dc5", "size":"80:25", "time":"2024-05-09T21:00:50.249Z", "uid":"3259b2ea-55e2-427f-8e81-80699018e83a", "user":"alice", "user_kind":1}',
    '{"cluster_name":"teleport.example.com", "code":"T2005I", "ei":2147483647, "event":"session.upload", "sid":"a2836fe1-51b5-4ab6-994e-f2f32eb97dc5", "time":"2024-05-09T21:06:21.03Z", "url":"s3://recordings/a2836fe1-51b5-4ab6-994e-f2f32eb97dc5"}',
]
SESSION = [
    AUDIT[2],
    '{"cluster_name":"teleport.example.com", "code":"T2002I", "ei":3, "event":"resize", "login":"ec2-user", "namespace":"default", "server_id":"b321c207-fd08-46c8-b248-0c20436feb62", "sid":"a2836fe1-51b5-4ab6-994e-f2f32eb97dc5", "size":"120:40", "time":"2024-05-09T21:01:02.5Z", "uid":"0f5c0c84-8a57-4c55-9a8b-3d1c1b8f3c10", "user":"alice"}',
    '{"cluster_name":"teleport.example.com", "code":"T2004I", "ei":763, "enhanced_recording":false, "event":"session.end", "interactive":true, "participants":["alice"], "session_start":"2024-05-09T21:00:50.239984794Z", "session_stop":"2024-05-09T21:06:21.024064124Z", "sid":"a2836fe1-51b5-4ab6-994e-f2f32eb97dc5", "time":"2024-05-09T21:06:21.024Z", "uid":"47d16bef-29d1-4b65-a222-4fcfc18e3347", "user":"alice"}',
]
# the encoding/json era: escaped <, > and &, and \" inside a string
ESCAPES = ('{"cluster_name":"teleport.example.com","code":"T1000I","event":"user.login",'
           '"message":"\\u003cscript\\u003ealert(\\"x\\")\\u003c/script\\u003e \\u0026 done",'
           '"time":"2024-05-09T21:00:40.632Z","user":"alice"}')


def compact(body):
    return json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False)


def spaced(body):
    return json.dumps(json.loads(body), separators=(", ", ":"), ensure_ascii=False)


def big_event(size):
    """A print-like session event of about `size` bytes (base64-ish data)."""
    head = '{"bytes":%d,"cluster_name":"teleport.example.com","code":"T2005I","data":"' % size
    tail = '","ei":9,"event":"print","sid":"%s","time":"2024-05-09T21:02:03.5Z"}' % SID
    return head + ("QUJD" * ((size - len(head) - len(tail)) // 4 + 1)) + tail


TELEPORT_PARSE = """
  <parse>
    @type json
    json_parser oj
    time_type string
    time_format %Y-%m-%dT%H:%M:%S
  </parse>"""


def tls_section(d, key="server.key", passphrase="0123456789abcdef" * 4):
    return """
  <transport tls>
    client_cert_auth true
    ca_path %s/ca.crt
    cert_path %s/server.crt
    private_key_path %s/%s
    private_key_passphrase %s
  </transport>""" % (d, d, d, key, passphrase)


def conf(port, extra="", parse=TELEPORT_PARSE, match="<match **>\n  @type stdout\n</match>"):
    return """
<source>
  @type http
  port %d
  bind 127.0.0.1
%s
%s
</source>
%s
""" % (port, extra, parse, match)


def expected(tag, body):
    """What Fluentd stores for a Teleport event: the tag, the `time` field cut to whole seconds
    read as UTC, and the body without `time`."""
    rec = json.loads(body)
    t = rec.pop("time")
    when = datetime.datetime.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")
    return (when.strftime("%Y-%m-%d %H:%M:%S") + ".000000000 +0000", tag, rec)


def stored(w):
    return [(t, tag, rec) for t, _, tag, rec in w.stdout_events()]


def canon(ev):
    return json.dumps(ev, sort_keys=True)


def assert_same_events(got, want):
    g = collections.Counter(canon(e) for e in got)
    x = collections.Counter(canon(e) for e in want)
    assert g == x, "missing %s\nunexpected %s" % (list((x - g).elements())[:3],
                                                  list((g - x).elements())[:3])


def key_order_preserved(got_rec, body):
    want = [k for k in json.loads(body) if k != "time"]
    return list(got_rec.keys()) == want


def assert_key_order(got, bodies):
    """Each stored record has its body's key order (types are checked by assert_same_events:
    json.dumps tells 0 from 0.0 and true from 1)."""
    by_content = {canon(expected("", b)[2]): b for b in bodies}
    for _, _, rec in got:
        body = by_content[canon(rec)]
        assert key_order_preserved(rec, body), (list(rec), body[:120])


# ---- raw HTTP over a socket ------------------------------------------------------------------


class Raw:
    def __init__(self, port, ctx=None, timeout=5.0, rcvbuf=None):
        s = socket.socket()
        s.settimeout(timeout)
        if rcvbuf:  # a fixed small window: the kernel cannot soak up what weir answers
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.connect(("127.0.0.1", port))
        self.sock = ctx.wrap_socket(s, server_hostname="localhost") if ctx else s
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def response(self):
        """(status line, [(name, value)], body); the body by Content-Length."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = [tuple(l.split(": ", 1)) for l in lines[1:]]
        n = int(dict(headers).get("Content-Length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return lines[0], headers, body

    def raw_response_bytes(self, n_expected):
        while len(self.buf) < n_expected:
            self._fill()
        out, self.buf = self.buf[:n_expected], self.buf[n_expected:]
        return out

    def closed(self, timeout=5.0):
        """True when the server closes with nothing more to read."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return self.buf == b""
                self.buf += chunk
        except (ConnectionResetError, ssl.SSLError):
            return self.buf == b""
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def post(path, body, ctype="application/json", version="1.1", extra=""):
    body = body.encode() if isinstance(body, str) else body
    return ("POST %s HTTP/%s\r\nHost: localhost\r\nContent-Length: %d\r\nContent-Type: %s\r\n%s"
            "\r\n" % (path, version, len(body), ctype, extra)).encode() + body


OK_KEEP = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"


def start(config, port, env=ENV):
    w = Weir(config, env=env)
    w.start([port])
    return w


# ---- TLS material ------------------------------------------------------------------------------


_CERTS = None


def certs():
    """The configure-style certificates plus the bad client certificates of 6.1."""
    global _CERTS
    if _CERTS:
        return _CERTS
    d = tempfile.mkdtemp(prefix="weir-http-certs-")
    make_certs(d)
    with open(os.path.join(d, "client_only.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
    with open(os.path.join(d, "server_only.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout other_ca.key -out other_ca.crt -days 30 "
       "-subj /CN=CA -addext basicConstraints=critical,CA:TRUE,pathlen:0 "
       "-addext keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, ca, ext, days in (("otherca", "other_ca", "client_only", "30"),
                                ("expired", "ca", "client_only", "-1"),  # notAfter < now
                                ("serveronly", "ca", "server_only", "30")):
        sh("openssl req -newkey rsa:2048 -nodes -keyout %s.key -out %s.csr -subj /CN=Client"
           % (name, name), cwd=d)
        sh("openssl x509 -req -in %s.csr -CA %s.crt -CAkey %s.key -CAcreateserial -days %s "
           "-extfile %s.ext -out %s.crt" % (name, ca, ca, days, ext, name), cwd=d)
    _CERTS = d
    return d


def client_ctx(d, cert="client", alpn=None):
    ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
    if cert:
        ctx.load_cert_chain(os.path.join(d, cert + ".crt"), os.path.join(d, cert + ".key"))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def curl(port, d, body, path="/test.log", cert="client", extra=()):
    """Posts with curl over mTLS; returns (exit code, HTTP status or 0)."""
    with tempfile.NamedTemporaryFile("wb", delete=False) as f:
        f.write(body.encode() if isinstance(body, str) else body)
        name = f.name
    cmd = ["curl", "-sS", "--max-time", "30", "--cacert", os.path.join(d, "ca.crt"),
           "-H", "Content-Type: application/json", "--data-binary", "@" + name,
           "-o", "/dev/null", "-w", "%{http_code}"] + list(extra)
    if cert:
        cmd += ["--cert", os.path.join(d, cert + ".crt"), "--key", os.path.join(d, cert + ".key")]
    cmd.append("https://localhost:%d%s" % (port, path))
    p = subprocess.run(cmd, capture_output=True, timeout=60)
    os.unlink(name)
    code = p.stdout.decode().strip()
    return p.returncode, int(code) if code.isdigit() else 0


# ---- tests: Teleport's traffic -----------------------------------------------------------------


def test_curl_mtls_teleport_events():
    d = certs()
    port = free_port()
    bodies = AUDIT + [compact(b) for b in AUDIT] + [ESCAPES, big_event(1024 * 1024)]
    with start(conf(port, tls_section(d)), port) as w:
        for b in bodies:
            rc, status = curl(port, d, b)  # the 1 MiB body also goes through Expect: 100-continue
            assert (rc, status) == (0, 200), (rc, status, w.log())
        w.wait_events(len(bodies))
        got = stored(w)
        assert w.stop() == 0
    assert_same_events(got, [expected("test.log", b) for b in bodies])
    assert_key_order(got, bodies)
    esc = [rec for _, _, rec in got if rec.get("message", "").startswith("<script>")]
    assert esc and esc[0]["message"] == '<script>alert("x")</script> & done', esc


def test_curl_mtls_pkcs8_key():
    d = certs()
    port = free_port()
    with start(conf(port, tls_section(d, key="server.pkcs8.key")), port) as w:
        assert curl(port, d, AUDIT[1]) == (0, 200), w.log()
        got = w.wait_events(1)
        w.stop()
    assert [(t, tag, r) for t, _, tag, r in got] == [expected("test.log", AUDIT[1])]


def build_teleportsim():
    out = os.path.join(tempfile.mkdtemp(prefix="weir-go-"), "teleportsim")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode",
               GOCACHE=os.path.join("/tmp", "weir-gocache"))
    subprocess.run(["go", "build", "-o", out, "."], env=env, check=True,
                   cwd=os.path.join(SOURCE_DIR, "test/integration/go/teleportsim"))
    return out


def run_sim(binary, port, d, audit, session, gaps=""):
    tmp = tempfile.mkdtemp(prefix="weir-sim-")
    files = []
    for name, lines in (("audit", audit), ("session", session)):
        path = os.path.join(tmp, name + ".jsonl")
        with open(path, "w") as f:
            f.write("".join(l + "\n" for l in lines))
        files.append(path)
    cmd = [binary, "-url", "https://localhost:%d/test.log" % port,
           "-session-url", "https://localhost:%d/session" % port,
           "-audit", files[0], "-session", files[1], "-ca", os.path.join(d, "ca.crt"),
           "-cert", os.path.join(d, "client.crt"), "-key", os.path.join(d, "client.key")]
    if gaps:
        cmd += ["-gaps", gaps]
    p = subprocess.run(cmd, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def test_go_client_like_teleport_event_handler():
    """6.2-6.5: both separator styles, audit and session paths, a duplicate stored twice, at
    most 10 connections, HTTP/1.1 although the client offers h2."""
    d = certs()
    binary = build_teleportsim()
    audit = []
    for i in range(6):  # enough that all 10 goroutines work at once
        audit += [spaced(b) if i % 2 == 0 else compact(b) for b in AUDIT]
    audit += [AUDIT[0], ESCAPES]  # AUDIT[0] is now there 4 times: no dedupe
    session = SESSION + [compact(b) for b in SESSION]
    port = free_port()
    with start(conf(port, tls_section(d)), port) as w:
        rep = run_sim(binary, port, d, audit, session)
        n = len(audit) + len(session)
        got = w.wait_events(n)
        assert w.stop() == 0
    assert rep["successes"] == n and rep["failures"] == 0, rep
    assert rep["protos"] == {"HTTP/1.1": n}, rep
    assert set(rep["alpn"]) <= {"(none)", "http/1.1"}, rep
    assert rep["tls_versions"] == {"TLS1.3": n}, rep  # weir: TLS 1.2-1.3 (Fluentd: 1.2 only)
    assert 1 <= rep["connections"] <= 10, rep
    got = [(t, tag, r) for t, _, tag, r in got]
    want = [expected("test.log", b) for b in audit]
    want += [expected("session.%s.log" % SID, b) for b in session]
    assert_same_events(got, want)
    assert_key_order(got, audit + session)
    # one session's events are stored in the order they were posted
    sess = [r["ei"] for _, tag, r in got if tag == "session.%s.log" % SID]
    assert sess == [0, 3, 763, 0, 3, 763], sess


def test_go_client_reconnects_after_idle_close():
    """6.4: connections reused after a short idle gap, and re-dialled transparently after the
    server closed them at keepalive_timeout."""
    d = certs()
    binary = build_teleportsim()
    audit = [compact(AUDIT[i % 4]) for i in range(60)]
    port = free_port()
    with start(conf(port, tls_section(d) + "\n  keepalive_timeout 2"), port) as w:
        rep = run_sim(binary, port, d, audit, [], gaps="1s,3500ms")
        got = w.wait_events(len(audit))
        w.stop()
    assert rep["successes"] == 60 and rep["failures"] == 0, rep
    assert rep["reused"] > 0, rep
    assert rep["connections"] > 10, rep  # the third round had to dial again
    assert len(got) == 60


# ---- tests: TLS --------------------------------------------------------------------------------


def test_tls_refuses_bad_client_certificates():
    d = certs()
    port = free_port()
    with start(conf(port, tls_section(d)), port) as w:
        assert curl(port, d, AUDIT[1]) == (0, 200), w.log()
        for cert in (None, "otherca", "expired", "serveronly"):
            rc, status = curl(port, d, AUDIT[1], cert=cert)
            assert rc != 0 and status == 0, (cert, rc, status)
            # and with Python's ssl: the handshake (or the first read) fails, no HTTP at all
            ctx = client_ctx(d, cert=cert)
            try:
                r = Raw(port, ctx)
                r.send(post("/test.log", AUDIT[1]))
                r.response()
                raise AssertionError("%s: got an HTTP response" % cert)
            except (ssl.SSLError, ConnectionResetError, EOFError, BrokenPipeError):
                pass
        time.sleep(0.3)
        got = w.stdout_events()
        log = w.log()
        w.stop()
    assert len(got) == 1, got
    assert "127.0.0.1" in log, log


def test_tls_never_negotiates_h2():
    d = certs()
    port = free_port()
    with start(conf(port, tls_section(d)), port) as w:
        r = Raw(port, client_ctx(d, alpn=["h2", "http/1.1"]))
        assert r.sock.selected_alpn_protocol() in (None, "http/1.1")
        assert r.sock.version() == "TLSv1.3"
        r.send(post("/test.log", AUDIT[3]))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.close()
        w.stop()


# ---- tests: HTTP/1.1 over plain TCP --------------------------------------------------------------


def test_keep_alive_and_connection_close():
    port = free_port()
    with start(conf(port), port) as w:
        r = Raw(port)
        for i in range(3):  # sequential requests on one connection
            r.send(post("/test.log", AUDIT[i]))
            assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.send(post("/test.log", AUDIT[3], extra="Connection: close\r\n"))
        assert r.raw_response_bytes(len(OK_CLOSE)) == OK_CLOSE
        assert r.closed()
        # HTTP/1.0 closes unless it asks for keep-alive
        r = Raw(port)
        r.send(post("/test.log", AUDIT[0], version="1.0"))
        assert r.raw_response_bytes(len(OK_CLOSE)) == OK_CLOSE
        assert r.closed()
        r = Raw(port)
        r.send(post("/test.log", AUDIT[0], version="1.0", extra="Connection: keep-alive\r\n"))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.send(post("/test.log", AUDIT[1], version="1.0", extra="Connection: keep-alive\r\n"))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.close()
        assert len(w.wait_events(7)) == 7
        w.stop()


def test_pipelined_requests_answered_in_order():
    port = free_port()
    bad = '{"time":12345}'
    with start(conf(port), port) as w:
        r = Raw(port)
        reqs = b"".join(post("/p", '{"seq":%d,"time":"2024-05-09T21:00:40Z"}' % i if i % 2 == 0
                             else bad) for i in range(100))
        r.send(reqs)
        for i in range(100):
            status, _, body = r.response()
            if i % 2 == 0:
                assert status == "HTTP/1.1 200 OK", (i, status)
            else:
                assert status == "HTTP/1.1 400 Bad Request", (i, status)
                assert body == b"400 Bad Request\nvalue must be string: 12345\n", body
        got = w.wait_events(50)
        w.stop()
    assert [rec["seq"] for _, _, _, rec in got] == list(range(0, 100, 2))


def test_pipelining_peer_that_reads_late():
    """A client that sends many requests before reading any answer: weir stops reading it once
    WEIR_INGEST_MAX_UNSENT bytes of answers wait, and every answer still arrives, in order."""
    port = free_port()
    n = 80000  # ~9 MB of answers: past the limit plus the server's 4 MB socket buffer
    with start("<system>\n  log_level debug\n</system>\n" + conf(port), port) as w:
        r = Raw(port, timeout=60, rcvbuf=16384)
        # even: not JSON, so 200 with nothing stored; odd: a number time, so 400
        reqs = b"".join(post("/p", '{"time":1}' if i % 2 else "x") for i in range(n))
        sender = threading.Thread(target=r.send, args=(reqs,))
        sender.start()
        time.sleep(2)  # read nothing meanwhile
        statuses = [r.response()[0] for _ in range(n)]
        sender.join()
        w.stop()
        log = w.log()
    assert "is not reading its responses" in log and "reads its responses again" in log
    assert len(statuses) == n
    bad = [i for i, s in enumerate(statuses)
           if s != ("HTTP/1.1 400 Bad Request" if i % 2 else "HTTP/1.1 200 OK")]
    assert not bad, bad[:5]


def test_body_size_limit():
    port = free_port()
    limit = 1024
    head = '{"time":"2024-05-09T21:00:40Z","pad":"'

    def body(n):
        return head + "x" * (n - len(head) - 2) + '"}'

    with start(conf(port, "  body_size_limit 1k"), port) as w:
        r = Raw(port)
        r.send(post("/limit", body(limit)))  # exactly at the limit: accepted
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.send(post("/limit", body(limit + 1)))
        too_large = (b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 9\r\n"
                     b"Content-Type: text/plain\r\n\r\nToo large")
        assert r.raw_response_bytes(len(too_large)) == too_large
        assert r.closed()
        # chunked: the de-chunked size counts
        for size, ok in ((limit, True), (limit + 1, False)):
            b = body(size).encode()
            r = Raw(port)
            r.send(b"POST /chunked HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   b"%x\r\n%s\r\n" % (600, b[:600]) + b"%x\r\n%s\r\n" % (len(b) - 600, b[600:]) +
                   b"0\r\n\r\n")
            if ok:
                assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
                r.close()
            else:
                assert r.raw_response_bytes(len(too_large)) == too_large
                assert r.closed()
        got = w.wait_events(2)
        w.stop()
    assert [tag for _, _, tag, _ in got] == ["limit", "chunked"]
    assert len(got[0][3]["pad"]) == limit - len(head) - 2


def test_expect_100_continue():
    port = free_port()
    with start(conf(port, "  body_size_limit 1k"), port) as w:
        b = AUDIT[1].encode()
        r = Raw(port)
        r.send(b"POST /e HTTP/1.1\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(b))
        assert r.raw_response_bytes(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        r.send(b)
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.close()
        # Fluentd's off-by-one: Expect with a length equal to the limit gets 413
        r = Raw(port)
        r.send(b"POST /e HTTP/1.1\r\nContent-Length: 1024\r\nExpect: 100-continue\r\n\r\n")
        assert r.response()[0] == "HTTP/1.1 413 Request Entity Too Large"
        assert r.closed()
        r = Raw(port)
        r.send(b"POST /e HTTP/1.1\r\nContent-Length: 1023\r\nExpect: 100-continue\r\n\r\n")
        assert r.raw_response_bytes(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        r.close()
        r = Raw(port)
        r.send(b"POST /e HTTP/1.1\r\nContent-Length: 2\r\nExpect: something-else\r\n\r\n{}")
        want = (b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n"
                b"Content-Type: text/plain\r\n\r\n")
        assert r.raw_response_bytes(len(want)) == want
        assert r.closed()
        got = w.wait_events(1)
        w.stop()
    assert len(got) == 1


def test_keepalive_timeout_closes_idle_connections():
    port = free_port()
    with start(conf(port, "  keepalive_timeout 1"), port) as w:
        idle = Raw(port)
        idle_sent = time.time()  # the server's idle timer starts after this
        idle.send(post("/k", AUDIT[1]))
        assert idle.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        busy = Raw(port)
        busy.send(post("/k", AUDIT[1]))
        assert busy.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        busy_open = time.time()  # the server accepted busy before this
        # a request every 0.5 s (half the timeout) until the idle one is closed, and for more
        # than the timeout in all: every one of them must be answered
        idle_closed = None
        while idle_closed is None or time.time() - busy_open < 1.5:
            if idle_closed is None and idle.closed(timeout=0.5):
                idle_closed = time.time()
            elif idle_closed is not None:
                time.sleep(0.5)
            assert time.time() - idle_sent < 10, "the idle connection was never closed"
            busy.send(post("/k", AUDIT[1]))
            assert busy.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        # closed by the timeout, not before it
        assert idle_closed - idle_sent >= 1.0, idle_closed - idle_sent
        busy.send(post("/k", AUDIT[1]))
        assert busy.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        silent = Raw(port)  # connected, never sends anything
        assert silent.closed(timeout=4)
        busy.close()
        w.stop()


def test_stop_with_open_connections():
    port = free_port()
    # idle connections would close on their own only after an hour: stop must close them
    with start(conf(port, "  keepalive_timeout 3600"), port) as w:
        idle = Raw(port)
        idle.send(post("/s", AUDIT[1]))
        assert idle.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        half = Raw(port)
        half.send(b"POST /s HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.2)
        assert w.stop(timeout=20) == 0
        assert idle.closed() and half.closed()


def test_malformed_requests_get_no_response():
    port = free_port()
    with start(conf(port), port) as w:
        for junk in (b"GARBAGE\r\n\r\n", b"POST /a|b HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                     b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
                     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                     b"POST / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n"):
            r = Raw(port)
            try:
                r.send(junk)
            except (ConnectionResetError, BrokenPipeError):
                pass
            assert r.closed(), junk[:40]
        # the port still serves others
        r = Raw(port)
        r.send(post("/ok", AUDIT[1]))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        log = w.log()
        w.stop()
    assert "closing connection from 127.0.0.1" in log, log


def test_get_options_and_cors():
    port = free_port()
    extra = ('  cors_allow_origins ["https://ok.example", "https://*.example.org"]\n'
             "  cors_allow_credentials true")
    with start(conf(port, extra), port) as w:
        r = Raw(port)
        r.send(b"GET /health HTTP/1.1\r\n\r\n")
        want = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"
        assert r.raw_response_bytes(len(want)) == want and r.closed()
        r = Raw(port)
        r.send(b"OPTIONS /t HTTP/1.1\r\nOrigin: https://ok.example\r\n"
               b"Access-Control-Request-Method: POST\r\n"
               b"Access-Control-Request-Headers: Content-Type\r\n\r\n")
        want = (b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Methods: POST\r\n"
                b"Access-Control-Allow-Headers: Content-Type\r\n"
                b"Access-Control-Allow-Origin: https://ok.example\r\n"
                b"Access-Control-Allow-Credentials: true\r\nContent-Length: 0\r\n"
                b"Content-Type: text/plain\r\n\r\n")
        assert r.raw_response_bytes(len(want)) == want and r.closed()
        r = Raw(port)
        r.send(b"OPTIONS /t HTTP/1.1\r\nOrigin: https://ok.example\r\n"
               b"Access-Control-Request-Method: GET\r\n\r\n")
        want = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"
        assert r.raw_response_bytes(len(want)) == want and r.closed()
        r = Raw(port)
        r.send(post("/c", AUDIT[1], extra="Origin: https://a.example.org\r\n"))
        want = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Access-Control-Allow-Origin: https://a.example.org\r\n"
                b"Access-Control-Allow-Credentials: true\r\nConnection: Keep-Alive\r\n"
                b"Content-Length: 0\r\n\r\n")
        assert r.raw_response_bytes(len(want)) == want
        r.send(post("/c", AUDIT[1]))  # no Origin: passes
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.send(post("/c", AUDIT[1], extra="Origin: https://evil.example\r\n"))
        want = (b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n"
                b"Content-Type: text/plain\r\n\r\n")
        assert r.raw_response_bytes(len(want)) == want and r.closed()
        got = w.wait_events(2)
        w.stop()
    assert len(got) == 2


def test_204_and_empty_gif():
    for extra, want in (
            ("  use_204_response true",
             b"HTTP/1.1 204 No Content\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n"
             b"Content-Type: text/plain\r\n\r\n"),
            ("  respond_with_empty_img true",
             b"HTTP/1.1 200 OK\r\nContent-Type: image/gif; charset=utf-8\r\n"
             b"Connection: Keep-Alive\r\nContent-Length: 35\r\n\r\nGIF89a\x01\x00\x01\x00\x80"
             b"\xff\x00\xff\xff\xff\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02"
             b"D\x01\x00;")):
        port = free_port()
        with start(conf(port, extra), port) as w:
            r = Raw(port)
            r.send(post("/x", AUDIT[1]))
            assert r.raw_response_bytes(len(want)) == want
            r.close()
            w.stop()


DEFAULT_PARSE = ""  # no <parse>: in_http's default mode


def test_default_mode_params_and_added_keys():
    port = free_port()
    extra = "  add_http_headers true\n  add_remote_addr true\n  add_query_params true"
    with start(conf(port, extra, parse=DEFAULT_PARSE), port) as w:
        r = Raw(port)
        r.send(post("/q?a-b=1&c=2&c=3", '{"k":1}', extra="X-Forwarded-For: 10.1.2.3, 10.0.0.1\r\n"))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.send(post("/q", '{"k":2,"time":1715288440.5}'))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.send(post("/q", '{"time":"2024-05-09T21:00:40Z"}'))  # a string time without <parse>
        status, _, body = r.response()
        assert status == "HTTP/1.1 400 Bad Request", status
        r.send(post("/q", '{"k":1}', ctype="text/plain"))
        status, _, body = r.response()
        assert status == "HTTP/1.1 400 Bad Request"
        assert body == b"400 Bad Request\n'json', 'ndjson' or 'msgpack' parameter is required\n"
        r.send(post("/form", "json=%7B%22f%22%3A1%7D&time=1715288440",
                    ctype="application/x-www-form-urlencoded"))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.send(post("/nd", '{"n":1}\n{"n":2}\r\n{"n":3}', ctype="application/x-ndjson"))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        gz = gzip.compress(b'[{"z":1},{"z":2}]')
        r.send(post("/gz", gz, extra="Content-Encoding: gzip\r\n"))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        # two gzip members are one body (weir used to stop after the first)
        gz = gzip.compress(b'[{"z":3},') + gzip.compress(b'{"z":4}]')
        r.send(post("/gz", gz, extra="Content-Encoding: gzip\r\n"))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.send(post("/gz", b"not gzip", extra="Content-Encoding: gzip\r\n"))
        want = (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                b"Content-Type: text/plain\r\n\r\n")
        assert r.raw_response_bytes(len(want)) == want and r.closed()
        got = w.wait_events(10)
        w.stop()
    recs = [(tag, rec) for _, _, tag, rec in got]
    first = recs[0][1]
    assert list(first)[0] == "k" and list(first)[-1] == "REMOTE_ADDR", list(first)
    assert first["REMOTE_ADDR"] == "10.1.2.3"
    assert first["QUERY_A_B"] == "1" and first["QUERY_C"] == "2"
    assert first["HTTP_X_FORWARDED_FOR"] == "10.1.2.3, 10.0.0.1"
    assert first["HTTP_CONTENT_TYPE"] == "application/json"
    assert recs[1][1]["REMOTE_ADDR"] == "127.0.0.1"
    assert got[1][0] == "2024-05-09 21:00:40.500000000 +0000" and "time" not in recs[1][1]
    assert recs[2][1]["f"] == 1 and got[2][0].startswith("2024-05-09 21:00:40")
    assert [rec["n"] for tag, rec in recs if tag == "nd"] == [1, 2, 3]
    assert [rec["z"] for tag, rec in recs if tag == "gz"] == [1, 2, 3, 4]


def test_fluentd_parity_negatives():
    """6.5's conformance list for the Teleport <parse> config."""
    port = free_port()
    with start(conf(port), port) as w:
        r = Raw(port)
        r.send(post("/n", "this is not json"))  # 200, nothing stored (>= 1.17)
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.send(post("/n", '{"time":12345}'))
        assert r.response()[0] == "HTTP/1.1 400 Bad Request"
        r.send(post("/n?time=1715288440.5", '{"time":"2020-01-01T00:00:00Z","a":1}'))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        arr = "[%s]" % ",".join(compact(b) for b in AUDIT[:3])
        r.send(post("/arr", arr))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        bad = "[%s,%s]" % (compact(AUDIT[0]), '{"time":"garbage"}')
        r.send(post("/bad", bad))
        assert r.response()[0] == "HTTP/1.1 400 Bad Request"
        r.send(post("/teleport/audit", AUDIT[1]))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.send(post("/session.log.%s.log" % SID, SESSION[1]))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        got = w.wait_events(6)
        time.sleep(0.3)
        got = w.stdout_events()
        w.stop()
    tags = [tag for _, _, tag, _ in got]
    assert tags == ["n", "arr", "arr", "arr", "teleport.audit", "session.log.%s.log" % SID], tags
    assert got[0][0] == "2024-05-09 21:00:40.500000000 +0000" and got[0][3] == {"a": 1}


def test_unmatched_tag_is_accepted():
    port = free_port()
    match = "<match test.log>\n  @type stdout\n</match>"
    with start(conf(port, match=match), port) as w:
        r = Raw(port)
        r.send(post("/events.log", AUDIT[1]))  # the newest template's path: 200, dropped
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        r.send(post("/test.log", AUDIT[1]))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        got = w.wait_events(1)
        time.sleep(0.3)
        log = w.log()
        w.stop()
    assert [tag for _, _, tag, _ in got] == ["test.log"]
    assert "no patterns matched" in log


def test_add_tag_prefix():
    port = free_port()
    with start(conf(port, "  add_tag_prefix teleport"), port) as w:
        r = Raw(port)
        r.send(post("/test.log", AUDIT[1]))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        got = w.wait_events(1)
        w.stop()
    assert [tag for _, _, tag, _ in got] == ["teleport.test.log"]


def test_output_failure_gives_500():
    """The stdout output fails when its stdout is /dev/full: the sender gets 500 with the
    reason, and the connection stays usable."""
    port = free_port()
    d = tempfile.mkdtemp(prefix="weir-http-500-")
    path = os.path.join(d, "fluent.conf")
    with open(path, "w") as f:
        f.write(conf(port))
    with open("/dev/full", "wb") as full, open(os.path.join(d, "stderr.log"), "wb") as err:
        p = subprocess.Popen([WEIR_BIN, "-c", path], stdout=full, stderr=err,
                             env=dict(os.environ, **ENV), cwd=d)
        try:
            wait_port(port)
            r = Raw(port)
            r.send(post("/x", AUDIT[1]))
            status, headers, body = r.response()
            assert status == "HTTP/1.1 500 Internal Server Error", status
            assert headers == [("Content-Type", "text/plain"), ("Connection", "Keep-Alive"),
                               ("Content-Length", str(len(body)))], headers
            assert body == b"500 Internal Server Error\nthe output rejected the events\n", body
            r.send(post("/x", "not json"))  # nothing to store: 200 on the same connection
            assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(30)


FILE_OUT = """
<match **>
  @type file
  path %s/out/events
  <format>
    @type json
  </format>
  <buffer tag>
    @type file
    path %s/buf
    flush_mode interval
    flush_interval 3600
    flush_at_shutdown true
  </buffer>
</match>"""


def test_200_only_after_durable_survives_kill9():
    """With a file buffer the output answers later (PENDING); every 200 weir sent must mean
    the event is on disk: after kill -9 and a restart, all acknowledged events come out."""
    port = free_port()
    d = tempfile.mkdtemp(prefix="weir-http-durable-")
    text = conf(port, match=FILE_OUT % (d, d))
    w = Weir(text, env=ENV, workdir=d)
    w.start([port])
    r = Raw(port)
    acked = 0
    for i in range(50):
        r.send(post("/durable", '{"seq":%d,"time":"2024-05-09T21:00:40Z"}' % i))
        assert r.raw_response_bytes(len(OK_KEEP)) == OK_KEEP, i
        acked += 1
    w.proc.kill()
    w.proc.wait()
    w.out.close()
    w.err.close()
    w2 = Weir(text, env=ENV, workdir=d)
    w2.start([port])
    assert w2.stop() == 0, w2.log()
    seqs = []
    for name in sorted(os.listdir(os.path.join(d, "out"))):
        with open(os.path.join(d, "out", name)) as f:
            seqs += [json.loads(line)["seq"] for line in f if line.strip()]
    assert sorted(seqs) == list(range(acked)), seqs


def test_config_errors():
    for extra, parse, msg in (
            ("  format json", "", "use a <parse> section"),
            ("", "<parse>\n @type regexp\n</parse>", "not supported"),
            ("", "<parse>\n @type json\n types a:integer\n</parse>", "types is not supported"),
            ("", "<parse>\n @type json\n time_type string\n timezone +09:00\n</parse>",
             "specifying timezone requires time format"),
            ("", "<parse>\n @type json\n time_format %Y %Q\n</parse>", "%Q is not supported"),
            ("  cors_allow_origins [\"*\"]\n  cors_allow_credentials true", "",
             "Cannot enable cors_allow_credentials without specific origins"),
            ("  no_such_param 1", "", "no_such_param")):
        port = free_port()
        w = Weir(conf(port, extra, parse=parse), env=ENV)
        w.start()
        rc = w.proc.wait(20)
        w.out.close()
        w.err.close()
        assert rc != 0, (extra, parse)
        assert msg in w.log(), (msg, w.log())


def test_large_gzip_body_inflated_in_turns():
    """A gzip body that inflates to 32 MiB is inflated a slice per loop turn: a request sent on
    another connection right after it is stored and answered before it, and the big body's
    events are all stored, whole."""
    port = free_port()
    n, pad = 256, "x" * (128 * 1024)
    body = ("[" + ",".join('{"seq":%d,"pad":"%s"}' % (i, pad) for i in range(n)) + "]").encode()
    w = start(conf(port, parse=""), port)
    with w:
        a, b = Raw(port, timeout=30), Raw(port)
        a.send(post("/big", gzip.compress(body, 9), extra="Content-Encoding: gzip\r\n"))
        b.send(post("/small", '{"seq":-1}'))
        assert b.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        assert a.raw_response_bytes(len(OK_KEEP)) == OK_KEEP
        got = w.wait_events(n + 1, timeout=30)
        w.stop()
    assert [tag for _, _, tag, _ in got[:2]] == ["small", "big"], w.log()
    assert [rec["seq"] for _, _, _, rec in got[1:]] == list(range(n))
    assert all(rec["pad"] == pad for _, _, _, rec in got[1:])


if __name__ == "__main__":
    run_tests([
        test_large_gzip_body_inflated_in_turns,
        test_curl_mtls_teleport_events,
        test_curl_mtls_pkcs8_key,
        test_go_client_like_teleport_event_handler,
        test_go_client_reconnects_after_idle_close,
        test_tls_refuses_bad_client_certificates,
        test_tls_never_negotiates_h2,
        test_keep_alive_and_connection_close,
        test_pipelined_requests_answered_in_order,
        test_pipelining_peer_that_reads_late,
        test_body_size_limit,
        test_expect_100_continue,
        test_keepalive_timeout_closes_idle_connections,
        test_stop_with_open_connections,
        test_malformed_requests_get_no_response,
        test_get_options_and_cors,
        test_204_and_empty_gif,
        test_default_mode_params_and_added_keys,
        test_fluentd_parity_negatives,
        test_unmatched_tag_is_accepted,
        test_add_tag_prefix,
        test_output_failure_gives_500,
        test_200_only_after_durable_survives_kill9,
        test_config_errors,
    ])
