"""Helpers for integration tests: run the real weir binary on a configuration, wait until it
listens, stop it, and read what its outputs produced.

Tests run under /usr/bin/python3 (Debian's msgpack and fluent-logger live there). Each test
file is a plain script that exits non-zero on failure and prints 'N passed, N failed'."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

WEIR_BIN = os.environ.get("WEIR_BIN", os.path.join(os.path.dirname(__file__), "../../build/weir"))
SOURCE_DIR = os.environ.get("WEIR_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))


GIVEN_PORTS = set()


def free_port():
    """A TCP port that is free on 127.0.0.1 now (and whose UDP twin is free too), never one
    this process was given before: the kernel can hand the same free port out twice in a row,
    and a test that asks for three ports before starting weir would then get two alike."""
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port in GIVEN_PORTS:
            continue
        GIVEN_PORTS.add(port)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
    raise RuntimeError("no free port")


def wait_port(port, timeout=10.0, host="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d did not open" % port)


STDOUT_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.(\d{9}) [+-]\d{4}) (.*?): (\{.*\})$")


def rss_env(env=None):
    """The environment for a weir whose resident memory a test measures. Under
    AddressSanitizer freed memory waits in a quarantine (256 MiB by default) before it is
    reused, so RSS would count what weir has long freed: no quarantine for these runs."""
    e = dict(os.environ if env is None else env)
    e["ASAN_OPTIONS"] = ":".join(filter(None, [e.get("ASAN_OPTIONS", ""), "quarantine_size_mb=0"]))
    return e


class Weir:
    """A weir process. Use as a context manager; the process is stopped with SIGTERM."""

    def __init__(self, config, env=None, workdir=None, args=()):
        self.dir = workdir or tempfile.mkdtemp(prefix="weir-it-")
        self.conf = os.path.join(self.dir, "fluent.conf")
        with open(self.conf, "w") as f:
            f.write(config)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.args = list(args)
        self.proc = None
        self.out_path = os.path.join(self.dir, "stdout.log")
        self.err_path = os.path.join(self.dir, "stderr.log")

    def start(self, wait_ports=()):
        self.out = open(self.out_path, "ab")
        self.err = open(self.err_path, "ab")
        self.proc = subprocess.Popen([WEIR_BIN, "-c", self.conf] + self.args, stdout=self.out,
                                     stderr=self.err, env=self.env, cwd=self.dir)
        for p in wait_ports:
            try:
                wait_port(p)
            except RuntimeError:
                raise RuntimeError("weir did not listen on %d:\n%s" % (p, self.log()))
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.out.close()
        self.err.close()
        return rc

    def log(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stdout_events(self):
        """Events printed by `@type stdout`: (time text, nanoseconds, tag, record)."""
        events = []
        with open(self.out_path, "rb") as f:
            for line in f.read().decode("utf-8").splitlines():
                m = STDOUT_LINE.match(line)
                if m:
                    events.append((m.group(1), int(m.group(2)), m.group(3), json.loads(m.group(4))))
        return events

    def wait_events(self, n, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            ev = self.stdout_events()
            if len(ev) >= n:
                return ev
            time.sleep(0.05)
        return self.stdout_events()


def dry_run(config_path, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([WEIR_BIN, "--dry-run", "-c", config_path], capture_output=True, env=e)
    return p.returncode, p.stderr.decode("utf-8", "replace")


def run_tests(tests):
    """Runs test functions; prints a closing line CTest's log readers understand."""
    passed = failed = 0
    only = sys.argv[1:] if len(sys.argv) > 1 else None
    for t in tests:
        if only and t.__name__ not in only:
            continue
        t0 = time.time()
        try:
            t()
            passed += 1
            print("[ OK ] %s (%.1fs)" % (t.__name__, time.time() - t0), flush=True)
        except Exception:
            failed += 1
            print("[FAIL] %s" % t.__name__, flush=True)
            traceback.print_exc()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


def known_gap(reason, failure):
    """Marks a test that fails today because of a gap named in `reason`: the test passes when
    it fails with an AssertionError whose text contains `failure` (printing the reason), and
    fails once it passes, so the mark is removed with the fix. Any other failure fails."""
    def wrap(t):
        def run():
            try:
                t()
            except AssertionError as e:
                if failure not in str(e):
                    raise
                print("  known gap, failing as expected: %s\n  (%s)" % (reason, str(e)[:300]))
                return
            raise AssertionError("%s passes: the gap is closed, remove its known_gap mark (%s)"
                                 % (t.__name__, reason))
        run.__name__ = t.__name__
        return run
    return wrap


def http_post(port, tag, body, ctype):
    """POSTs `body` to the http input on `port` under `tag`; asserts the answer is 200."""
    req = urllib.request.Request("http://127.0.0.1:%d/%s" % (port, tag), data=body,
                                 headers={"Content-Type": ctype}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200, r.status


def sh(cmd, cwd=None):
    subprocess.run(cmd, shell=True, check=True, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def make_certs(d, passphrase="0123456789abcdef" * 4):
    """Certificates as `teleport-event-handler configure` makes them (docs/http-input.md 6.1),
    with RSA 2048 to keep tests quick: ca.crt, server.crt + server.key (encrypted, legacy PEM)
    and server.pkcs8.key (encrypted PKCS#8), client.crt + client.key. Returns the passphrase."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 "
       "-subj /CN=CA -addext basicConstraints=critical,CA:TRUE,pathlen:0 "
       "-addext keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name in ("server", "client"):
        sh("openssl req -newkey rsa:2048 -nodes -keyout %s.plain.key -out %s.csr -subj /CN=%s"
           % (name, name, name.capitalize()), cwd=d)
        sh("openssl x509 -req -in %s.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 "
           "-extfile %s.ext -out %s.crt" % (name, name, name), cwd=d)
    sh("openssl rsa -in server.plain.key -aes256 -traditional -passout pass:%s -out server.key"
       % passphrase, cwd=d)
    sh("openssl pkcs8 -topk8 -in server.plain.key -v2 aes-256-cbc -passout pass:%s "
       "-out server.pkcs8.key" % passphrase, cwd=d)
    os.rename(os.path.join(d, "client.plain.key"), os.path.join(d, "client.key"))
    return passphrase


def forward_to_file(port, path, buffer_path, buffer_keys="tag", buffer_params=(),
                    file_params=(), sources=""):
    """A configuration most buffer tests share: a forward source on 127.0.0.1:port (plus
    `sources`), and everything into @type file at `path` as JSON lines through a file buffer
    with `buffer_keys` and `buffer_params` (one "key value" string each); buffer_path None
    means a memory buffer. Paths go in as they are: strftime directives need no escaping."""
    lines = ["<source>", "  @type forward", "  port %d" % port, "  bind 127.0.0.1", "</source>",
             sources, "<match **>", "  @type file", "  path %s" % path]
    lines += ["  " + p for p in file_params]
    lines += ["  <format>", "    @type json", "  </format>", "  <buffer %s>" % buffer_keys]
    lines += ["    @type memory"] if buffer_path is None else ["    @type file",
                                                            "    path %s" % buffer_path]
    lines += ["    " + p for p in buffer_params]
    lines += ["  </buffer>", "</match>", ""]
    return "\n".join(lines)


def json_field(pattern, field="seq"):
    """`field` of every JSON line in the files matching the glob `pattern`, files in name
    order: what a user reads back from @type file output."""
    import glob
    values = []
    for f in sorted(glob.glob(pattern)):
        with open(f) as fh:
            values += [json.loads(line)[field] for line in fh]
    return values


def read_chunk_events(path):
    """The records of the events in a chunk file, read as docs/buffer-format.md describes it;
    a torn last record (a crash in the middle of a write, cut at recovery) is left out."""
    import msgpack
    data = open(path, "rb").read()
    off, events = 0, []
    while off + 16 <= len(data):
        assert data[off:off + 2] == b"WR", data[off:off + 2]
        typ, n = data[off + 2], int.from_bytes(data[off + 4:off + 8], "big")
        if off + 16 + n > len(data):
            break
        payload = data[off + 16:off + 16 + n]
        if typ in (2, 3):
            u = msgpack.Unpacker(raw=False, ext_hook=lambda code, b: b)
            u.feed(payload)
            if typ == 3:
                next(u)  # the tag of the batch (a chunk of several tags)
            events += [rec for _, rec in u]
        off += 16 + n
    return events


# ---- the metrics endpoint (Prometheus text) and conditions ----

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def unescape(v):
    return v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def parse_metrics(text, types=None):
    """{(name, frozenset(labels)): value}, checking the exposition format on the way; `types`
    (a dict, if given) receives each family's TYPE."""
    out = {}
    types = {} if types is None else types
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "histogram"), line
            assert name not in types, "family twice: " + name
            types[name] = typ
            continue
        if line.startswith("# HELP "):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
                family = name[:-len(suffix)]
        assert family in types, "sample before its TYPE: " + line
        pairs = LABEL.findall(labels)
        assert "".join('%s="%s",' % p for p in pairs).rstrip(",") == labels, line
        key = (name, frozenset((k, unescape(v)) for k, v in pairs))
        assert key not in out, "duplicate series: " + line
        out[key] = float(value)
    return out


def metric(metrics, name, **labels):
    return metrics.get((name, frozenset(labels.items())))


def http_get(port, path, headers=None, tls_ctx=None, method="GET"):
    """(status, headers dict with lower-case names, body bytes, bytes after the response) over
    a fresh connection; with method="HEAD" the body is what came after the head (b"")."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if tls_ctx:
        s = tls_ctx.wrap_socket(s, server_hostname="localhost")
    req = "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" % (method, path)
    for k, v in (headers or {}).items():
        req += "%s: %s\r\n" % (k, v)
    s.sendall((req + "\r\n").encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    if not data:  # accepted, then closed (a refused connection): no answer to parse
        raise ConnectionError("127.0.0.1:%d closed the connection without an answer" % port)
    return parse_response(data, head_request=method == "HEAD")


def parse_response(data, head_request=False):
    """(status, headers, body, bytes after this response)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = 0 if head_request else int(hdrs.get("content-length", len(rest)))
    return status, hdrs, rest[:n], rest[n:]


def scrape(port, path="/metrics", types=None):
    """The series of a weir's metrics endpoint, checked for the exposition format."""
    status, hdrs, body, _ = http_get(port, path)
    assert status == 200, (status, body)
    assert hdrs["content-type"] == "text/plain; version=0.0.4; charset=utf-8", hdrs
    return parse_metrics(body.decode(), types)


def wait_for(fn, timeout=15.0, what="condition"):
    """fn()'s first true value within `timeout` s; else fails with the last value."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def rss_kib(pid):
    """The resident memory of process `pid`, KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def metric_at(port, name, **labels):
    """The value of the one series of `name` at port's /metrics whose labels include
    `labels`, or None when there is none."""
    found = [v for (n, ls), v in scrape(port).items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, "%d series of %s match %r" % (len(found), name, labels)
    return found[0] if found else None


def raw_map(pairs):
    """A msgpack map from (key bytes, value bytes) pairs, each already msgpack: Python dicts
    cannot hold repeated keys."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def p(v):
    import msgpack
    return msgpack.packb(v, use_bin_type=True)


def forward_raw(port, tag, records, chunk="c1"):
    import msgpack
    """Sends raw msgpack records in one forward frame (times 1700000000 + i) and waits for
    its ack."""
    entries = b"".join(b"\x92" + p(msgpack.ExtType(0, (1700000000 + i).to_bytes(4, "big") + bytes(4))) + r
                       for i, r in enumerate(records))
    frame = (b"\x93" + p(tag) + b"\xdc" + len(records).to_bytes(2, "big") + entries +
             p({"chunk": chunk}))
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    s.sendall(frame)
    assert msgpack.unpackb(s.recv(100)) == {"ack": chunk}
    s.close()
