"""examples/teleport end to end, as the README walks a user through it: certificates from
examples/teleport/make-certs.sh, weir running examples/teleport/fluent.conf with the local S3
override examples/teleport/s3-local.conf, a client that behaves as teleport-event-handler
(go/teleportsim: Go's net/http over mutual TLS) posting audit and session events, and the
objects read back from the bucket with `gzip -dc | jq`.

The S3 server is s3rver behind the SigV4-verifying proxy of test_s3_output.py (node and
`npm ci` at the repository root). The configuration file is the example's own text with only
what a test cannot use rewritten: /keys and /fluentd/buffer become temporary directories, the
ports become free ones on 127.0.0.1. Each rewrite is checked, so a change to the example that
this test no longer covers fails here instead of passing unnoticed.

Nothing is skipped: a missing tool (go, node, s3rver, jq) is a failure."""

import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import msgpack

from test_docker_entrypoint import Image, proc_uid
from test_s3_output import BASE_ENV, S3
from weirtest import SOURCE_DIR, WEIR_BIN, free_port, run_tests, wait_port

EXAMPLE = os.path.join(SOURCE_DIR, "examples", "teleport")
BUCKET = "fluentd-snowflake-demo"
ACCESS_KEY = "AKIATELEPORTEXAMPLE1"
SECRET_KEY = "teleport-example-secret-" + os.urandom(8).hex()

SID = "a2836fe1-51b5-4ab6-994e-f2f32eb97dc5"
# docs/http-input.md 6.3: bodies as the real handler sends them (", " separators, sorted keys)
AUDIT = [
    '{"addr.remote":"192.0.2.10:52906", "cluster_name":"teleport.example.com", "code":"T1000I", "ei":0, "event":"user.login", "method":"local", "mfa_device":{"mfa_device_name":"otp-device", "mfa_device_type":"TOTP", "mfa_device_uuid":"d07bf388-af49-4ec2-b8a4-c8a9e785b70b"}, "required_private_key_policy":"none", "success":true, "time":"2024-05-09T21:00:40.632Z", "uid":"c325a91c-62b5-473d-b906-9926d6ce4530", "user":"alice", "user_agent":"Mozilla/5.0 (X11; Linux x86_64)"}',
    '{"addr.remote":"192.0.2.10:52457","cluster_name":"teleport.example.com","code":"T1000W","ei":0,"error":"invalid username, password or second factor","event":"user.login","method":"local","success":false,"time":"2024-05-09T20:58:57.77Z","uid":"8c815e54-c83b-43d7-b578-2bcf5b6775fa","user":"root","user_agent":"curl/8.5.0"}',
    '{"cluster_name":"teleport.example.com", "code":"T2005I", "ei":2147483647, "event":"session.upload", "sid":"a2836fe1-51b5-4ab6-994e-f2f32eb97dc5", "time":"2024-05-09T21:06:21.03Z", "url":"s3://recordings/a2836fe1-51b5-4ab6-994e-f2f32eb97dc5"}',
]
SESSION = [
    '{"addr.local":"172.31.13.98:443", "addr.remote":"192.0.2.10:52963", "cluster_name":"teleport.example.com", "code":"T2000I", "ei":0, "event":"session.start", "initial_command":[""], "login":"ec2-user", "namespace":"default", "private_key_policy":"none", "proto":"ssh", "server_addr":"[::]:3022", "server_hostname":"ip-172-31-13-98", "server_id":"b321c207-fd08-46c8-b248-0c20436feb62", "server_labels":{"hostname":"ip-172-31-13-98"}, "session_recording":"node", "sid":"a2836fe1-51b5-4ab6-994e-f2f32eb97dc5", "size":"80:25", "time":"2024-05-09T21:00:50.249Z", "uid":"3259b2ea-55e2-427f-8e81-80699018e83a", "user":"alice", "user_kind":1}',
    '{"cluster_name":"teleport.example.com", "code":"T2002I", "ei":3, "event":"resize", "login":"ec2-user", "namespace":"default", "server_id":"b321c207-fd08-46c8-b248-0c20436feb62", "sid":"a2836fe1-51b5-4ab6-994e-f2f32eb97dc5", "size":"120:40", "time":"2024-05-09T21:01:02.5Z", "uid":"0f5c0c84-8a57-4c55-9a8b-3d1c1b8f3c10", "user":"alice"}',
    '{"cluster_name":"teleport.example.com", "code":"T2004I", "ei":763, "enhanced_recording":false, "event":"session.end", "interactive":true, "participants":["alice"], "session_start":"2024-05-09T21:00:50.239984794Z", "session_stop":"2024-05-09T21:06:21.024064124Z", "sid":"a2836fe1-51b5-4ab6-994e-f2f32eb97dc5", "time":"2024-05-09T21:06:21.024Z", "uid":"47d16bef-29d1-4b65-a222-4fcfc18e3347", "user":"alice"}',
]
# the same logins as a newer handler template posts them to /events.log: other events, other uids
NEWER = [AUDIT[0].replace('"uid":"c325a91c', '"uid":"d325a91c'),
         AUDIT[1].replace('"uid":"8c815e54', '"uid":"9c815e54')]
KEY_RE = re.compile(r"^logs/(\d{4})/(\d\d)/(\d\d)/(\d{12})_(.+)_([0-9a-f]{32})\.gz$")


def weir_env(**extra):
    """This process's environment (sanitizer options, PATH) without the machine's AWS setup."""
    env = dict(os.environ)
    env.update(BASE_ENV)
    env.update(extra)
    return env


def make_certs(d, umask=0o022):
    """Runs the example's make-certs.sh (2048 bits to keep the test quick) as a user with
    `umask`; returns the passphrase it printed."""
    p = subprocess.run(["sh", os.path.join(EXAMPLE, "make-certs.sh"), "--out", d, "--bits",
                        "2048"], capture_output=True, timeout=120,
                       preexec_fn=lambda: os.umask(umask))
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode().splitlines()
    assert len(out) == 1 and re.fullmatch(r"FLUENTD_KEY_PASSPHRASE=[0-9a-f]{64}", out[0]), out
    for f in ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key",
              "digest.key", "digest.pub"):
        assert os.path.exists(os.path.join(d, f)), f
    with open(os.path.join(d, "server.key")) as f:
        head = f.read(200)
    # legacy encrypted PEM, as `teleport-event-handler configure` writes it
    assert head.startswith("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
                           "DEK-Info: AES-256-CBC,"), head
    return out[0].split("=", 1)[1]


def rewrite(text, old, new, count):
    assert text.count(old) == count, "examples/teleport/fluent.conf no longer has %d x %r" % (
        count, old)
    return text.replace(old, new)


def example_config(etc, keys, buffer_dir, http_port, fwd_port):
    """The example's fluent.conf as etc/fluent.conf, with s3-local.conf as
    etc/s3.d/local.conf."""
    with open(os.path.join(EXAMPLE, "fluent.conf")) as f:
        text = f.read()
    text = rewrite(text, '"/keys/', '"%s/' % keys, 4)
    text = rewrite(text, "path /fluentd/buffer/", "path %s/" % buffer_dir, 3)
    text = rewrite(text, "port 8888", "port %d" % http_port, 1)
    text = rewrite(text, "port 24224", "port %d" % fwd_port, 1)
    text = rewrite(text, "bind 0.0.0.0", "bind 127.0.0.1", 2)
    assert "@include s3.d/*.conf" in text
    os.makedirs(os.path.join(etc, "s3.d"), exist_ok=True)
    with open(os.path.join(etc, "fluent.conf"), "w") as f:
        f.write(text)
    shutil.copy(os.path.join(EXAMPLE, "s3-local.conf"), os.path.join(etc, "s3.d", "local.conf"))
    return os.path.join(etc, "fluent.conf")


def build_teleportsim(d):
    out = os.path.join(d, "teleportsim")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode",
               GOCACHE=os.path.join(tempfile.gettempdir(), "weir-gocache"))
    p = subprocess.run(["go", "build", "-o", out, "."], env=env, capture_output=True,
                       cwd=os.path.join(SOURCE_DIR, "test/integration/go/teleportsim"))
    assert p.returncode == 0, "building teleportsim failed:\n" + p.stderr.decode()
    return out


def run_sim(binary, d, keys, port, path, audit, session):
    files = []
    for name, lines in (("audit", audit), ("session", session)):
        fn = os.path.join(d, "%s-%s.jsonl" % (path, name))
        with open(fn, "w") as f:
            f.write("".join(l + "\n" for l in lines))
        files.append(fn)
    cmd = [binary, "-url", "https://localhost:%d/%s" % (port, path),
           "-session-url", "https://localhost:%d/session" % port,
           "-audit", files[0], "-session", files[1],
           "-ca", os.path.join(keys, "ca.crt"), "-cert", os.path.join(keys, "client.crt"),
           "-key", os.path.join(keys, "client.key")]
    p = subprocess.run(cmd, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def jq_lines(data, program="."):
    """What a user runs on an object: gzip -dc | jq -c PROGRAM."""
    p = subprocess.run("gzip -dc | jq -c '%s'" % program, shell=True, input=data,
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    return [json.loads(l) for l in p.stdout.decode().splitlines()]


def count_lines(objs):
    """Events in the bucket so far (an object still being written counts as none)."""
    n = 0
    for data, _ in objs.values():
        try:
            n += len(gzip.decompress(data).splitlines())
        except (OSError, EOFError):
            pass
    return n


def expected(tag, body):
    r = json.loads(body)
    r["tag"] = tag
    return r


# What a peer on the forward port could try: a Teleport-shaped audit event in a closed time
# bucket (uploaded at once, were it routed to S3).
FORGED = {"code": "T1000I", "event": "user.login", "success": True, "user": "forged",
          "time": "2024-05-09T21:00:41.000Z", "cluster_name": "teleport.example.com"}
FORGED_TIME = 1715288441  # 2024-05-09T21:00:41Z


def forward_send(port, tag, record):
    """One forward message with an ack request, as any Fluentd-protocol client sends it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(msgpack.packb([tag, FORGED_TIME, record, {"chunk": "forged"}]))
    assert msgpack.unpackb(s.recv(100)) == {"ack": "forged"}
    s.close()


def canon(records):
    return sorted(json.dumps(r, sort_keys=True) for r in records)


def test_teleport_example_end_to_end():
    """Through the image's entry point, as the Dockerfile runs it: /bin/entrypoint.sh with CMD
    weir, the configuration at /fluentd/etc/fluent.conf, the keys at /keys, the buffer under
    /fluentd/buffer, as the image's non-root user."""
    d = tempfile.mkdtemp(prefix="weir-teleport-")
    os.chmod(d, 0o755)
    img = Image()
    keys = img.path("keys")  # the -v ./keys:/keys mount: owned by whoever ran make-certs.sh
    # a user whose umask is 077: the image's user must still read the keys weir needs
    passphrase = make_certs(keys, umask=0o077)
    sim = build_teleportsim(d)
    s3 = S3()
    c = None
    try:
        s3.state.add_key(ACCESS_KEY, SECRET_KEY)
        http_port, fwd_port = free_port(), free_port()
        conf = example_config(img.path("fluentd/etc"), keys, img.path("fluentd/buffer"),
                              http_port, fwd_port)
        for root, dirs, files in os.walk(img.path("fluentd/etc")):
            for n in dirs + files:
                os.chown(os.path.join(root, n), img.uid, img.gid)
        env = dict(BASE_ENV)
        env.update(FLUENTD_KEY_PASSPHRASE=passphrase, S3_ENDPOINT="http://127.0.0.1:%d" % s3.port,
                   AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        assert conf == img.path("fluentd/etc/fluent.conf")
        c = img.start(env=env)
        c.wait_listening([http_port, fwd_port])
        # the entry point exec'd weir, which runs as the image's user
        assert os.readlink("/proc/%d/exe" % c.proc.pid) == img.path("usr/local/bin/weir")
        assert proc_uid(c.proc.pid) == [img.uid] * 4, proc_uid(c.proc.pid)
        assert img.uid != 0 or os.geteuid() != 0
        assert 'path="%s"' % conf in c.log(), c.log()

        # older handler templates post audit events to /test.log, newer ones to /events.log
        rep1 = run_sim(sim, d, keys, http_port, "test.log", AUDIT, SESSION)
        rep2 = run_sim(sim, d, keys, http_port, "events.log", NEWER, [])
        n1, n2 = len(AUDIT) + len(SESSION), 2
        assert rep1["successes"] == n1 and rep1["failures"] == 0, rep1
        assert rep2["successes"] == n2 and rep2["failures"] == 0, rep2
        # the handler restarts and resends from its cursor: acknowledged, not stored again
        # (the example's dedupe filters: uid for audit events, sid + ei for session events)
        rep3 = run_sim(sim, d, keys, http_port, "test.log", AUDIT[:2], SESSION)
        assert rep3["successes"] == 2 + len(SESSION) and rep3["failures"] == 0, rep3
        assert set(rep1["protos"]) == {"HTTP/1.1"}, rep1

        # anyone who reaches the unauthenticated forward port, with the audit trail's own tags
        # and times: acknowledged, then never uploaded (checked with the objects below)
        forged_tags = ["test.log", "events.log", "session.%s.log" % SID]
        for tag in forged_tags:
            forward_send(fwd_port, tag, FORGED)

        # event times are from 2024: every time bucket is closed, so chunks go out at once
        stag = "session.%s.log" % SID
        want_tags = {"test.log", "events.log", stag}
        s3.wait_objects(BUCKET, lambda o: count_lines(o) >= n1 + n2, timeout=60)

        rc = c.stop(60)
        log = c.log()
        assert rc == 0, "weir exited %d:\n%s" % (rc, log)
        for secret in (SECRET_KEY, passphrase):
            assert secret not in log, "a secret reached weir's log"
        # after the stop: nothing more, nothing twice (the data; the hour's digest is not due)
        objs = {k: v for k, v in s3.objects(BUCKET).items() if k.startswith("logs/")}
        # the digest state lives with the buffer, its open period on disk for the next start
        assert os.path.exists(img.path("fluentd/buffer/s3/digest/state.json"))

        got, tags = [], set()
        for key, (data, meta) in sorted(objs.items()):
            m = KEY_RE.match(key)
            assert m, "object key %r does not follow the example's layout" % key
            year, month, day, slice_, tag, _ = m.groups()
            assert slice_.startswith(year + month + day), key
            tags.add(tag)
            lines = jq_lines(data)
            assert lines, key
            for r in lines:
                assert r["tag"] == tag, (key, r)
                # the minute in the key is the minute of the event's own time
                t = r["time"]
                assert slice_ == t[0:4] + t[5:7] + t[8:10] + t[11:13] + t[14:16], (key, t)
            got += lines
        assert tags == want_tags, tags
        want = [expected("test.log", b) for b in AUDIT] + \
               [expected(stag, b) for b in SESSION] + \
               [expected("events.log", b) for b in NEWER]
        assert not [r for r in got if r.get("user") == "forged"], "a forward event reached S3"
        assert canon(got) == canon(want), (canon(got), canon(want))
        # ...they went to the container log instead (<label @FORWARD>)
        forged = [(t, r["user"]) for t, r in c.events()]
        assert forged == [(t, "forged") for t in forged_tags], forged

        # the README's Snowflake query, asked of the bucket: failed logins
        failed = []
        for data, _ in objs.values():
            failed += jq_lines(data, "select(.success == false) | .user")
        assert sorted(failed) == ["root", "root"], failed

        # one PUT per object, no HEAD probing (check_object false), all signed with the
        # example's credentials
        puts = [r for r in s3.state.requests("PUT") if r[1].count("/") > 1]
        assert len(puts) == len(objs), (len(puts), len(objs))
        assert not [r for r in s3.state.requests("HEAD") if r[1].count("/") > 1]
        # start-up: the bucket is missing (404 to ListObjects and HeadBucket), so weir creates
        # it (auto_create_bucket, on by default as in fluent-plugin-s3); then only PUTs
        for r in s3.state.requests():
            assert ACCESS_KEY in r[3].get("authorization", ""), r[:2]
            bucket_probe = r[0] in ("GET", "HEAD") and r[1] == "/" + BUCKET and r[5] == 404
            assert r[5] < 300 or bucket_probe, r[:2] + (r[5],)
        assert s3.state.requests("PUT", "/" + BUCKET)[0][1] == "/" + BUCKET
    finally:
        if c:
            c.kill()
        img.cleanup()
        s3.proc.terminate()
        s3.proc.wait(10)
        shutil.rmtree(s3.dir, ignore_errors=True)
    shutil.rmtree(d, ignore_errors=True)


def with_digest_key(text, d):
    """The examples' digest key paths (a mounted secret in production) pointed at a key made
    here: --dry-run reads the key, as the start does."""
    key = os.path.join(d, "digest.key")
    if not os.path.exists(key):
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True,
                       capture_output=True)
    for path in ('"/keys/digest.key"', '"/digest-key/digest.key"'):
        text = text.replace(path, '"%s"' % key)
    assert '"%s"' % key in text, "no <digest> key in the example"
    return text


def test_example_dry_run_without_local_override():
    """Without s3.d/ the example is the production configuration: valid, talking to AWS."""
    d = tempfile.mkdtemp(prefix="weir-teleport-")
    try:
        with open(os.path.join(EXAMPLE, "fluent.conf")) as f:
            text = with_digest_key(f.read(), d)
        conf = os.path.join(d, "fluent.conf")
        with open(conf, "w") as f:
            f.write(text)
        env = weir_env(FLUENTD_KEY_PASSPHRASE="0" * 64)
        p = subprocess.run([WEIR_BIN, "--dry-run", "-c", conf], capture_output=True, env=env,
                           timeout=60)
        assert p.returncode == 0, p.stderr.decode()
        p = subprocess.run([WEIR_BIN, "--show-config", "-c", conf], capture_output=True,
                           env=env, timeout=60)
        assert p.returncode == 0, p.stderr.decode()
        shown = p.stdout.decode()
        assert "s3_endpoint" not in shown and "s3_region us-west-1" in shown, shown
        assert "0" * 64 not in shown, "the key passphrase was not masked"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_every_example_config_is_valid_and_keeps_forward_off_the_audit_route():
    """`weir --dry-run` passes on every example configuration, and none of them sends what
    arrives on a forward port through the top-level <match>es (the audit route): each forward
    source has its own @label, or there is none (examples/kubernetes)."""
    import glob
    confs = sorted(glob.glob(os.path.join(SOURCE_DIR, "examples", "*", "fluent.conf")))
    assert len(confs) >= 2, confs
    env = weir_env(FLUENTD_KEY_PASSPHRASE="0" * 64)
    d = tempfile.mkdtemp(prefix="weir-examples-")
    for orig in confs:
        with open(orig) as f:
            text = with_digest_key(f.read(), d)
        conf = os.path.join(d, "fluent.conf")
        with open(conf, "w") as f:
            f.write(text)
        p = subprocess.run([WEIR_BIN, "--dry-run", "-c", conf], capture_output=True, env=env,
                           timeout=60)
        assert p.returncode == 0, (orig, p.stderr.decode())
        p = subprocess.run([WEIR_BIN, "--show-config", "-c", conf], capture_output=True,
                           env=env, timeout=60)
        assert p.returncode == 0, (orig, p.stderr.decode())
        sources = re.findall(r"^<source>\n(.*?)^</source>", p.stdout.decode(), re.M | re.S)
        assert sources, conf
        for src in sources:
            if re.search(r"^  @type forward$", src, re.M):
                assert re.search(r"^  @label @\w+$", src, re.M), (orig, src)
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run_tests([
        test_example_dry_run_without_local_override,
        test_every_example_config_is_valid_and_keeps_forward_off_the_audit_route,
        test_teleport_example_end_to_end,
    ])
