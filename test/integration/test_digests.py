"""Signed digests written by the S3 output (<digest>, docs/integrity.md), end to end: the real
weir binary, a real forward sender with acks, s3rver behind the signature-checking proxy of
test_s3_output.py, keys made with the openssl CLI, and every signature checked with
`openssl pkeyutl -verify -rawin` (not with weir's code).

What a user (or an auditor) would check is what is asserted: the digest objects in the bucket,
their signatures against the public key, the chain (previous digest's SHA-256 and signature,
contiguous periods, sequences), and that every data object in the bucket is listed exactly
once with its size, SHA-256 and record count."""

import base64
import calendar
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from test_s3_output import (BASE_ENV, STATIC, cleanup, fwd_send, match_conf, prometheus_source, records, s3,
                            start_weir, stop_weir, tmpdir)
from weirtest import WEIR_BIN, dry_run, free_port, run_tests, scrape, wait_for

DIGEST_PREFIX = "weir-digests/"
DATA_PREFIX = "logs/"
PERIOD = 2


def make_key(d, name="digest"):
    key, pub = os.path.join(d, name + ".key"), os.path.join(d, name + ".pub")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True,
                   capture_output=True)
    return key, pub


def pub_sha256(pub):
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", pub, "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


def signature_ok(pub, data, sig_b64):
    with tempfile.TemporaryDirectory() as t:
        dp, sp = os.path.join(t, "data"), os.path.join(t, "sig")
        with open(dp, "wb") as f:
            f.write(data)
        with open(sp, "wb") as f:
            f.write(base64.b64decode(sig_b64))
        p = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin",
                            "-in", dp, "-sigfile", sp], capture_output=True)
        return p.returncode == 0


def digest_conf(key, chain="it", period=PERIOD, prefix=DIGEST_PREFIX):
    return ("  <digest>\n    private_key_path %s\n    prefix %s\n    period %ds\n"
            "    chain %s\n  </digest>\n" % (key, prefix, period, chain))


def conf(d, name, bucket, key, chain="it", buffer_type="file", extra="", period=PERIOD):
    c = match_conf(d, name, bucket, STATIC, path=DATA_PREFIX + "%Y/", pattern="dg.**",
                   extra=extra + digest_conf(key, chain, period))
    if buffer_type != "file":
        c = c.replace("    @type file\n    path %s/buf-%s\n" % (d, name), "    @type memory\n")
    return c


class Run:
    """One weir process over a directory that outlives it (the buffer and the digest state)."""

    def __init__(self, bucket, key, chain="it", name="dg", extra="", period=PERIOD):
        self.d = tmpdir("weir-digest-it-")
        self.bucket, self.key, self.chain, self.name = bucket, key, chain, name
        self.extra, self.period = extra, period
        self.w = None

    def start(self):
        prom = free_port()
        self.w = start_weir([prometheus_source(prom),
                             lambda _d: conf(self.d, self.name, self.bucket, self.key,
                                             self.chain, extra=self.extra,
                                             period=self.period)])
        self.w.prom = prom
        return self.w

    def metric(self, name):
        labels = frozenset({"plugin_id": self.name, "type": "s3"}.items())
        return scrape(self.w.prom).get((name, labels))

    @property
    def state_dir(self):
        return os.path.join(self.d, "buf-" + self.name, "digest")


def split(objs):
    data = {k: v for k, v in objs.items() if k.startswith(DATA_PREFIX)}
    digs = {k: v for k, v in objs.items() if k.startswith(DIGEST_PREFIX)}
    return data, digs


def parse_digests(digs):
    """[(key, bytes, signature, document)] in key order (= chain order)."""
    out = []
    for k in sorted(digs):
        data, meta = digs[k]
        sig = meta.get("x-amz-meta-weir-signature")
        out.append((k, data, sig, json.loads(data)))
    return out


def listed(chain):
    return [o for _, _, _, doc in chain for o in doc["objects"]]


def check_chain(chain, pub, bucket, restarted_at=()):
    """Every signature verifies, every link holds; returns nothing, asserts."""
    want_pub = pub_sha256(pub)
    prev = None
    for i, (k, data, sig, doc) in enumerate(chain):
        assert sig, "digest %s has no x-amz-meta-weir-signature" % k
        assert signature_ok(pub, data, sig), "digest %s: the signature does not verify" % k
        assert doc["version"] == 1 and doc["algorithm"] == "Ed25519", doc
        assert doc["public_key_sha256"] == want_pub, doc["public_key_sha256"]
        assert doc["bucket"] == bucket and doc["data_prefix"] == DATA_PREFIX, doc
        end = doc["period_end"]
        stamp = end.replace("-", "").replace(":", "")
        assert k == "%s%s/%s/%s/%s/%s_%010d.json" % (
            DIGEST_PREFIX, doc["chain"], end[0:4], end[5:7], end[8:10], stamp, doc["sequence"]), k
        assert doc["period_start"] < doc["period_end"], doc
        if i in restarted_at:
            assert doc["sequence"] == 0 and doc["previous"] is None, doc
            assert doc["chain_restarted"] is not None, doc
        elif prev is None:
            assert doc["sequence"] == 0 and doc["previous"] is None, doc
            assert doc["chain_restarted"] is None, doc
        else:
            pk, pdata, psig, pdoc = prev
            assert doc["chain_restarted"] is None, (k, doc["chain_restarted"])
            assert doc["sequence"] == pdoc["sequence"] + 1, (k, doc["sequence"])
            assert doc["previous"] == {"key": pk, "sha256": hashlib.sha256(pdata).hexdigest(),
                                       "signature": psig}, (k, doc["previous"])
            assert doc["period_start"] == pdoc["period_end"], (k, doc["period_start"])
        prev = (k, data, sig, doc)


def check_objects(data, chain):
    """Every data object listed exactly once, with its size, SHA-256 and records."""
    entries = listed(chain)
    keys = [o["key"] for o in entries]
    assert len(keys) == len(set(keys)), "an object is listed twice: %s" % sorted(keys)
    assert set(keys) == set(data), "listed %s, in the bucket %s" % (sorted(keys), sorted(data))
    for o in entries:
        body = data[o["key"]][0]
        assert o["size"] == len(body), o
        assert o["sha256"] == hashlib.sha256(body).hexdigest(), o
        lines = gzip.decompress(body).splitlines()
        assert o["records"] == len(lines), (o, len(lines))
        assert o["oldest"] <= o["newest"], o


def wait_listed(srv, bucket, pred, timeout=40):
    """Waits until pred(data, chain) holds for the bucket's objects; returns them."""
    deadline = time.time() + timeout
    while True:
        data, digs = split(srv.objects(bucket))
        chain = parse_digests(digs)
        if pred(data, chain):
            return data, chain
        if time.time() > deadline:
            raise AssertionError("timed out: %d data objects, digests %s" % (
                len(data), [(k, len(doc["objects"])) for k, _, _, doc in chain]))
        time.sleep(0.2)


def all_listed(n_data):
    def pred(data, chain):
        return len(data) >= n_data and set(o["key"] for o in listed(chain)) >= set(data)
    return pred


def send(w, n, start):
    """n forward messages of 3 records, each with its own event second: n chunks, n objects."""
    for i in range(n):
        assert fwd_send(w.port, "dg.app", records("e", 3, start=3 * (start + i)),
                        t=1700000000 + start + i)


# ---- tests ------------------------------------------------------------------------------------

def test_digests_across_periods_and_a_restart():
    srv = s3()
    kd = tmpdir("weir-digest-key-")
    key, pub = make_key(kd)
    r = Run("digests", key)
    # start in the second half of a 2 s period (an odd second), so that the chain's first
    # period would be 1 s if weir did not stretch it to a whole period
    while int(time.time()) % PERIOD != 1 or time.time() % 1 > 0.3:
        time.sleep(0.02)
    w = r.start()
    send(w, 3, 0)
    wait_listed(srv, "digests", all_listed(3))
    # no upload for more than a whole period: a digest with no objects
    data, chain = wait_listed(srv, "digests", lambda d, c: any(
        not doc["objects"] and doc["sequence"] > 0 for _, _, _, doc in c))
    send(w, 2, 3)
    wait_listed(srv, "digests", all_listed(5))
    log = stop_weir(w)
    assert "digest" in log
    # down for a while; the first digest after the restart covers the downtime
    stopped_at = time.time()
    time.sleep(PERIOD + 1)
    w = r.start()
    send(w, 2, 5)
    data, chain = wait_listed(srv, "digests", all_listed(7))
    # what the metrics say about this run: digests written and stored, none failed
    assert r.metric("weir_s3_digests_uploaded_total") >= 1
    assert r.metric("weir_s3_digests_written_total") >= r.metric("weir_s3_digests_uploaded_total")
    assert r.metric("weir_s3_digest_upload_failures_total") == 0
    stop_weir(w)
    data, digs = split(srv.objects("digests"))
    chain = parse_digests(digs)
    assert len(data) == 7, sorted(data)
    check_chain(chain, pub, "digests")
    check_objects(data, chain)
    assert any(not doc["objects"] for _, _, _, doc in chain), "no empty period's digest"
    # a digest whose period spans the downtime (longer than one period)
    def secs(s):
        return time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))
    # no period shorter than the configured one, the first included (verify's stale-chain
    # check reads a chain's period from its digests)
    assert all(secs(doc["period_end"]) - secs(doc["period_start"]) >= PERIOD
               for _, _, _, doc in chain), [(d["period_start"], d["period_end"])
                                            for _, _, _, d in chain]
    assert any(secs(doc["period_end"]) - secs(doc["period_start"]) > PERIOD and
               secs(doc["period_start"]) <= stopped_at for _, _, _, doc in chain), \
        [(doc["period_start"], doc["period_end"]) for _, _, _, doc in chain]
    # digests live outside the data prefix, and no data object is a digest
    assert all(not k.startswith(DATA_PREFIX) for k in digs)
    assert all(k.endswith(".gz") for k in data)
    # nothing left to upload
    assert os.listdir(os.path.join(r.state_dir, "pending")) == []


def test_kill_9_between_uploads_the_chain_continues():
    srv = s3()
    kd = tmpdir("weir-digest-key-")
    key, pub = make_key(kd)
    r = Run("digests-kill", key)
    w = r.start()
    send(w, 3, 0)
    wait_listed(srv, "digests-kill", all_listed(3))
    send(w, 3, 3)
    # between uploads: every chunk stored and released (none left in the buffer), and objects
    # recorded in the open period that no digest lists yet
    buf = os.path.join(r.d, "buf-" + r.name)
    open_log = os.path.join(r.state_dir, "open.jsonl")
    deadline = time.time() + 30
    while True:
        assert time.time() < deadline, "never between uploads with an open period's objects"
        chunks = [f for f in os.listdir(buf) if f.endswith(".chunk")]
        with open(open_log, "rb") as f:
            lines = f.read().splitlines()
        if len(split(srv.objects("digests-kill"))[0]) == 6 and not chunks and lines:
            break
        time.sleep(0.02)
    w.proc.send_signal(signal.SIGKILL)
    w.proc.wait()
    w = r.start()
    send(w, 2, 6)
    data, chain = wait_listed(srv, "digests-kill", all_listed(8))
    stop_weir(w)
    data, digs = split(srv.objects("digests-kill"))
    chain = parse_digests(digs)
    check_chain(chain, pub, "digests-kill")  # no chain_restarted: the state survived
    check_objects(data, chain)
    assert len(data) == 8, sorted(data)
    # the open period's objects at the kill went into the first digest after the restart
    keys = [json.loads(x)["key"] for x in lines]
    assert set(keys) <= set(o["key"] for o in listed(chain)), keys


def test_multipart_objects_are_listed_with_the_whole_body_hash():
    """Above multipart_threshold the request hashes are per part: the digest's SHA-256 is
    still the whole object's."""
    srv = s3()
    kd = tmpdir("weir-digest-key-")
    key, pub = make_key(kd)
    r = Run("digests-mp", key, extra="  multipart_threshold 64\n")
    w = r.start()
    send(w, 2, 0)
    data, chain = wait_listed(srv, "digests-mp", all_listed(2))
    stop_weir(w)
    assert srv.state.requests("POST", "/digests-mp/logs/"), "no multipart upload was made"
    check_chain(chain, pub, "digests-mp")
    check_objects(data, chain)


def test_reload_continues_the_chain():
    """SIGHUP rebuilds the output: the new one takes the chain's state from disk and goes on
    (no chain_restarted, no second digest with a sequence), every object listed once."""
    srv = s3()
    kd = tmpdir("weir-digest-key-")
    key, pub = make_key(kd)
    r = Run("digests-reload", key)
    w = r.start()
    send(w, 2, 0)
    wait_listed(srv, "digests-reload", all_listed(2))
    w.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while "the new configuration is running" not in w.log():
        assert time.time() < deadline, w.log()
        time.sleep(0.1)
    send(w, 2, 2)
    data, chain = wait_listed(srv, "digests-reload", lambda d, c: all_listed(4)(d, c) and
                              len(c) >= 3)
    log = stop_weir(w)
    assert "state missing" not in log, log
    data, digs = split(srv.objects("digests-reload"))
    chain = parse_digests(digs)
    check_chain(chain, pub, "digests-reload")
    check_objects(data, chain)


def test_state_lost_while_stopped_restarts_the_chain_visibly():
    srv = s3()
    kd = tmpdir("weir-digest-key-")
    key, pub = make_key(kd)
    r = Run("digests-lost", key)
    w = r.start()
    send(w, 2, 0)
    data, chain = wait_listed(srv, "digests-lost", all_listed(2))
    stop_weir(w)
    _, digs = split(srv.objects("digests-lost"))
    before = parse_digests(digs)
    last_key, last_data = before[-1][0], before[-1][1]
    os.unlink(os.path.join(r.state_dir, "state.json"))
    w = r.start()
    send(w, 1, 2)
    data, chain = wait_listed(srv, "digests-lost", all_listed(3))
    log = stop_weir(w)
    assert "state missing" in log, log
    restarted = [i for i, (_, _, _, doc) in enumerate(chain) if doc["chain_restarted"]]
    assert len(restarted) == 1, [doc["chain_restarted"] for _, _, _, doc in chain]
    doc = chain[restarted[0]][3]
    assert doc["chain_restarted"] == {
        "reason": "state missing",
        "last_found": {"key": last_key, "sha256": hashlib.sha256(last_data).hexdigest()}}, doc
    assert doc["sequence"] == 0 and doc["previous"] is None
    # the old chain and the new one, each intact; their keys interleave by period end, so
    # each is checked on its own: before the restart, and from the restart on
    new = [c for c in chain if c[0] not in dict((b[0], 1) for b in before)]
    check_chain(before, pub, "digests-lost")
    check_chain(sorted(new, key=lambda c: c[3]["sequence"]), pub, "digests-lost",
                restarted_at=(0,))
    check_objects(data, chain)


def test_state_lost_keeps_the_objects_recorded_in_the_open_period():
    """Objects recorded in open.jsonl (their chunks released) but not yet in a digest when
    state.json is lost are in the restarted chain's first digest: they were dropped as if their
    period had closed, and weir verify would have called them added."""
    srv = s3()
    kd = tmpdir("weir-digest-key-")
    key, pub = make_key(kd)
    name = "digests-lostopen"
    r = Run(name, key, period=2)
    w = r.start()
    wait_listed(srv, name, lambda d, c: len(c) >= 1)  # digests in the bucket: a chain to lose
    stop_weir(w)
    r.period = 3600  # the next objects stay in the open period
    w = r.start()
    send(w, 2, 0)
    ol = os.path.join(r.state_dir, "open.jsonl")

    def two_lines():
        with open(ol) as f:
            got = [json.loads(x) for x in f.read().splitlines()]
        return got if len(got) >= 2 else None
    lines = wait_for(two_lines, what="both objects recorded in open.jsonl")
    stop_weir(w)
    os.unlink(os.path.join(r.state_dir, "state.json"))
    # the restart comes after the second the objects were recorded in
    wait_for(lambda: time.time() >= max(x["t"] for x in lines) + 1, what="the next second")
    r.period = 2
    w = r.start()
    data, chain = wait_listed(srv, name, all_listed(2))
    log = stop_weir(w)
    assert "state missing" in log, log
    recorded = set(x["key"] for x in lines)
    assert recorded <= set(o["key"] for o in listed(chain)), (recorded, chain)
    check_objects(data, chain)


def test_digest_upload_failing_waits_in_pending_and_never_holds_data():
    srv = s3()
    kd = tmpdir("weir-digest-key-")
    key, pub = make_key(kd)
    r = Run("digests-fail", key)
    # every digest PUT fails, the in-place retries included, until the test lets them pass
    srv.state.inject(r"^PUT /digests-fail/weir-digests/", count=1000, status=500,
                     code="InternalError")
    w = r.start()
    send(w, 2, 0)
    pending = os.path.join(r.state_dir, "pending")
    deadline = time.time() + 30
    while len(os.listdir(pending)) < 2 or not r.metric("weir_s3_digest_upload_failures_total"):
        assert time.time() < deadline, os.listdir(pending)
        time.sleep(0.2)
    # data goes on while digests wait
    send(w, 2, 2)
    data, digs = split(srv.wait_objects("digests-fail", lambda o: len(split(o)[0]) >= 4))
    assert len(data) == 4 and not digs, (sorted(data), sorted(digs))
    assert r.metric("weir_s3_digests_pending") >= 2
    assert "digest" in w.log() and "InternalError" in w.log()
    with srv.state.lock:
        for f in srv.state.faults:
            f.count = 0
    # the backoff's next try stores them all, in order
    data, chain = wait_listed(srv, "digests-fail", all_listed(4), timeout=60)
    stop_weir(w)
    check_chain(chain, pub, "digests-fail")
    check_objects(data, chain)
    puts = [q[1] for q in srv.state.requests("PUT", "/digests-fail/weir-digests/")
            if q[5] == 200]
    assert puts == sorted(puts), puts


def test_records_are_the_lines_verify_counts_whatever_the_format():
    """single_value writes a message with a newline in it as two lines: the digest's records
    are the lines stored, so `weir verify` finds the untouched object as listed (with the
    events counted, it was reported altered)."""
    srv = s3()
    kd = tmpdir("weir-digest-key-")
    key, pub = make_key(kd)
    r = Run("digests-lines", key, period=3,
            extra="  <format>\n    @type single_value\n  </format>\n")
    w = r.start()
    assert fwd_send(w.port, "dg.app", [{"message": "first\nsecond"}, {"message": "third"}])
    data, chain = wait_listed(srv, "digests-lines", all_listed(1))
    assert [o["records"] for o in listed(chain)] == [3], listed(chain)
    p = subprocess.run([WEIR_BIN, "verify", "-c", w.conf, "--public-key", pub],
                       capture_output=True, env=dict(BASE_ENV), timeout=120)
    stop_weir(w)
    assert p.returncode == 0, (p.returncode, p.stdout.decode(), p.stderr.decode())


def test_a_second_weir_on_the_same_state_touches_nothing():
    """A second weir started on the same buffer path stops at the digest state's lock, before
    it reads the state or uploads a pending digest, and the first goes on."""
    srv = s3()
    kd = tmpdir("weir-digest-key-")
    key, pub = make_key(kd)
    r = Run("digests-twice", key, period=3600)
    w = r.start()
    send(w, 1, 0)
    wait_for(lambda: os.path.getsize(os.path.join(r.state_dir, "open.jsonl")) > 0,
             what="the object recorded")
    before = {f: open(os.path.join(r.state_dir, f), "rb").read()
              for f in ("state.json", "open.jsonl")}
    second = w.conf.replace(".conf", "-second.conf")
    with open(w.conf) as f:  # the same outputs, no source (its ports are the first's)
        text = f.read()
    with open(second, "w") as f:
        f.write(text[text.index("<match"):])
    p = subprocess.run([WEIR_BIN, "-c", second], capture_output=True, env=dict(BASE_ENV),
                       timeout=60)
    err = p.stderr.decode()
    assert p.returncode != 0 and "the digest state" in err and "in use by another weir" in err, \
        (p.returncode, err)
    assert {f: open(os.path.join(r.state_dir, f), "rb").read() for f in before} == before
    send(w, 1, 1)
    wait_listed(srv, "digests-twice", lambda d, c: len(d) >= 2)
    stop_weir(w)


def test_weir_verify_on_real_digests_passes_then_reports_each_tampering():
    """weir's own digests, across periods and a restart, checked by `weir verify -c` with the
    same configuration: exit 0; then one object deleted from the bucket: exit 1, missing-object
    naming it; then the issue's other tamperings on top (a byte altered, a foreign object added
    in a digested period, a digest deleted, a digest re-signed with another key), each reported
    as what it is. verify runs while weir still writes digests (a stopped weir's chain goes stale
    after two periods, which verify rightly reports)."""
    from test_verify import delete, put
    srv = s3()
    kd = tmpdir("weir-digest-key-")
    key, pub = make_key(kd)
    # 3 s periods: verify calls a chain stale two periods after its last digest, and it runs
    # while weir writes more, so 6 s of slack on a loaded machine
    r = Run("digests-verify", key, period=3)
    w = r.start()
    send(w, 3, 0)
    wait_listed(srv, "digests-verify", all_listed(3))
    stop_weir(w)
    w = r.start()
    send(w, 2, 3)
    data, chain = wait_listed(srv, "digests-verify", all_listed(5))
    assert len(chain) >= 2

    def verify():
        p = subprocess.run([WEIR_BIN, "verify", "-c", w.conf, "--public-key", pub],
                           capture_output=True, env=dict(BASE_ENV), timeout=120)
        return p.returncode, p.stdout.decode(), p.stderr.decode()
    rc, out, err = verify()
    assert rc == 0, (rc, out, err)
    assert "verified:" in out and "5 objects checked" in out, out
    gone = sorted(data)[1]
    delete("digests-verify", gone)
    rc, out, err = verify()
    assert rc == 1, (rc, out, err)
    assert "missing-object s3://digests-verify/%s" % gone in out, out
    # the other tamperings, on the real trail, each reported as what it is
    b = "digests-verify"
    altered = sorted(data)[2]
    body = bytearray(data[altered][0])
    body[len(body) // 2] ^= 1
    put(b, altered, bytes(body))
    foreign = DATA_PREFIX + "2023/foreign.gz"
    put(b, foreign, gzip.compress(b'{"forged":true}\n'))
    put_at = time.time()

    def secs(t):
        return calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ"))
    # a digest that ends after the foreign object appeared: it is then in a digested period
    _, chain = wait_listed(srv, b, lambda d, c: len(c) >= 5 and
                           secs(c[-1][3]["period_end"]) > put_at + 1)
    dropped, resigned = chain[1][0], chain[3][0]
    delete(b, dropped)
    other, _ = make_key(kd, "other")
    with tempfile.TemporaryDirectory() as t:
        with open(os.path.join(t, "d"), "wb") as f:
            f.write(chain[3][1])
        sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", other, "-rawin", "-in",
                              os.path.join(t, "d")], check=True, capture_output=True).stdout
    put(b, resigned, chain[3][1], {"weir-signature": base64.b64encode(sig).decode()})
    p = subprocess.run([WEIR_BIN, "verify", "-c", w.conf, "--public-key", pub, "--json"],
                       capture_output=True, env=dict(BASE_ENV), timeout=120)
    lines = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert p.returncode == 1 and lines[-1].get("summary"), (p.returncode, p.stdout, p.stderr)
    found = {(f["finding"], f.get("kind", ""), f.get("key", "")) for f in lines[:-1]}
    assert ("missing-object", "", gone) in found, found
    assert ("altered-object", "", altered) in found, found
    assert ("unlisted-object", "added", foreign) in found, found
    assert any(f[0] == "chain-break" for f in found), found
    assert any(f[0] == "bad-signature" and resigned in (f[2], "") for f in found), found
    stop_weir(w)


def write_conf(d, text):
    p = os.path.join(d, "fluent.conf")
    with open(p, "w") as f:
        f.write(text)
    return p


def test_configuration_errors_at_dry_run():
    s3()
    d = tmpdir("weir-digest-conf-")
    key, _ = make_key(d)
    rsa = os.path.join(d, "rsa.key")
    subprocess.run(["openssl", "genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", rsa], check=True, capture_output=True)
    enc = os.path.join(d, "enc.key")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-aes-256-cbc", "-pass",
                    "pass:sesame", "-out", enc], check=True, capture_output=True)
    src = "<source>\n  @type forward\n  port 1\n</source>\n"

    def with_pass(k, pw):
        return digest_conf(k).replace("  </digest>", "    private_key_passphrase %s\n  </digest>" % pw)

    def one(path=DATA_PREFIX + "%Y/", digest=None, buffer_type="file", name="a", chain="c"):
        c = match_conf(d, name, "conf", STATIC, path=path, pattern="dg.%s" % name,
                       extra=digest if digest is not None else digest_conf(key, chain))
        if buffer_type != "file":
            c = c.replace("    @type file\n    path %s/buf-%s\n" % (d, name), "    @type memory\n")
        return c

    ok = write_conf(d, src + one())
    rc, err = dry_run(ok)
    assert rc == 0, err
    cases = [
        (one(path="weir-digests/x/"), "overlaps"),
        (one(path="weir-%Y/"), "overlaps"),
        (one(digest=digest_conf(key) + "  s3_object_key_format weir-digests/%{time_slice}_"
                                       "%{index}.%{file_extension}\n"), "object keys"),
        (one(buffer_type="memory"), "@type file"),
        (one(digest=digest_conf(rsa)), "Ed25519"),
        (one(digest=digest_conf(os.path.join(d, "missing.key"))), "missing.key"),
        (one(digest=digest_conf(ok)), "digest key: cannot read private key"),
        # an encrypted key: never a prompt on the terminal, a clear error instead
        (one(digest=digest_conf(enc)), "set private_key_passphrase"),
        (one(digest=with_pass(enc, "wrong")), "wrong private_key_passphrase"),
        (one(digest="  <digest>\n    prefix weir-digests/\n  </digest>\n"), "private_key_path"),
        (one(digest=digest_conf(key, chain="a/b")), "chain"),
        (one(name="a") + one(name="b"), "same digest chain"),
    ]
    for text, want in cases:
        rc, err = dry_run(write_conf(d, src + text))
        assert rc != 0 and want in err, (want, rc, err)
    rc, err = dry_run(write_conf(d, src + one(digest=with_pass(enc, "sesame"))))
    assert rc == 0, err
    # two outputs, two chains: fine
    rc, err = dry_run(write_conf(d, src + one(name="a", chain="c1") + one(name="b", chain="c2")))
    assert rc == 0, err


if __name__ == "__main__":
    try:
        run_tests([test_configuration_errors_at_dry_run,
                   test_digests_across_periods_and_a_restart,
                   test_kill_9_between_uploads_the_chain_continues,
                   test_state_lost_while_stopped_restarts_the_chain_visibly,
                   test_state_lost_keeps_the_objects_recorded_in_the_open_period,
                   test_records_are_the_lines_verify_counts_whatever_the_format,
                   test_a_second_weir_on_the_same_state_touches_nothing,
                   test_reload_continues_the_chain,
                   test_multipart_objects_are_listed_with_the_whole_body_hash,
                   test_digest_upload_failing_waits_in_pending_and_never_holds_data,
                   test_weir_verify_on_real_digests_passes_then_reports_each_tampering])
    finally:
        cleanup()
