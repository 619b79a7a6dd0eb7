"""`weir verify` end to end: the real weir binary against s3rver behind the signature-checking
proxy of test_s3_output.py (class S3), on digests written here by a small Python writer that
follows docs/integrity.md and nothing else (signed with python3-cryptography's Ed25519): it
doubles as proof that the format is specified precisely enough for someone else to write.

Each test builds a fresh bucket with a clean trail (gzip JSON-lines data objects, as the S3
output stores them, and a chain of signed digests listing them), tampers with it the way an
attacker or an accident would, and asserts what an operator reads: the exit status and the
findings `weir verify` prints (human lines, or one JSON object per finding with --json)."""

import base64
import datetime
import gzip
import hashlib
import http.client
import json
import os
import subprocess
import time
import urllib.parse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import test_s3_output as s3t
from weirtest import WEIR_BIN, rss_env, run_tests

HOUR = 3600
PREFIX = "weir-digests/"
DATA = "logs/"


# ---- a minimal S3 client, signed with the proxy's own SigV4 code -----------------------------

def s3_call(method, path, body=b"", headers=None, query=""):
    srv = s3t.s3()
    amz_date = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    sha = hashlib.sha256(body).hexdigest()
    h = {"host": "127.0.0.1:%d" % srv.port, "x-amz-date": amz_date,
         "x-amz-content-sha256": sha}
    h.update({k.lower(): v for k, v in (headers or {}).items()})
    epath = urllib.parse.quote(path, safe="/-_.~")
    signed = sorted(h)
    sig = s3t.sigv4_signature("S3RVER", method, epath, query, h, signed, sha, amz_date,
                              "us-east-1", "s3")
    h["authorization"] = ("AWS4-HMAC-SHA256 Credential=S3RVER/%s/us-east-1/s3/aws4_request, "
                          "SignedHeaders=%s, Signature=%s" % (amz_date[:8], ";".join(signed), sig))
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request(method, epath + ("?" + query if query else ""), body=body or None,
                     headers=h)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    assert resp.status in (200, 204), "%s %s: %d %s" % (method, path, resp.status, data[:300])
    return data


BUCKETS = [0]


def new_bucket():
    BUCKETS[0] += 1
    b = "verify-%d-%d" % (os.getpid(), BUCKETS[0])
    s3_call("PUT", "/" + b)
    return b


def put(bucket, key, data, meta=None):
    hdrs = {"x-amz-meta-" + k: v for k, v in (meta or {}).items()}
    s3_call("PUT", "/%s/%s" % (bucket, key), data, hdrs)


def delete(bucket, key):
    s3_call("DELETE", "/%s/%s" % (bucket, key))


def get(bucket, key):
    return s3_call("GET", "/%s/%s" % (bucket, key))


# ---- the digest writer: docs/integrity.md, "Digest objects" -----------------------------------

def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def epoch(s):
    return int(datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp())


def new_key(d, name):
    k = Ed25519PrivateKey.generate()
    pub = os.path.join(d, name + ".pub")
    with open(pub, "wb") as f:
        f.write(k.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    return k, pub


def key_sha(k):
    der = k.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


class Chain:
    def __init__(self, bucket, name, key, prefix=PREFIX, data_prefix=DATA):
        self.bucket, self.name, self.key = bucket, name, key
        self.prefix, self.data_prefix = prefix, data_prefix
        self.seq = 0
        self.prev = None  # {"key", "sha256", "signature"} of the last digest
        self.keys = []

    def digest(self, start, end, objects, restarted=None, signer=None):
        if restarted is not None:
            self.seq, self.prev = 0, None
        doc = {"version": 1, "algorithm": "Ed25519", "public_key_sha256": key_sha(self.key),
               "chain": self.name, "sequence": self.seq, "period_start": rfc3339(start),
               "period_end": rfc3339(end), "bucket": self.bucket,
               "data_prefix": self.data_prefix, "previous": self.prev,
               "chain_restarted": restarted, "objects": objects}
        body = json.dumps(doc, separators=(",", ":")).encode()
        sig = base64.b64encode((signer or self.key).sign(body)).decode()
        e = datetime.datetime.fromtimestamp(end, datetime.timezone.utc)
        k = "%s%s/%s/%s_%010d.json" % (self.prefix, self.name, e.strftime("%Y/%m/%d"),
                                       e.strftime("%Y%m%dT%H%M%SZ"), self.seq)
        put(self.bucket, k, body, {"weir-signature": sig})
        self.prev = {"key": k, "sha256": hashlib.sha256(body).hexdigest(), "signature": sig}
        self.keys.append(k)
        self.seq += 1
        return k


def data_object(bucket, key, n, t):
    """A gzip JSON-lines object of n events at time t, stored; its digest entry."""
    lines = b"".join(json.dumps({"seq": i, "message": "%s-%d" % (key, i), "time": t}).encode() +
                     b"\n" for i in range(n))
    data = gzip.compress(lines)
    put(bucket, key, data)
    return {"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "records": n, "oldest": rfc3339(t), "newest": rfc3339(t)}


def trail(d, periods=3, per_period=3, end=None):
    """A bucket with `periods` hourly digests, the last one ending at `end` (default: half an
    hour from now, so objects stored now fall in a digested period, well before its end),
    each listing `per_period` objects. Returns (bucket, chain, public key path, {object key:
    entry})."""
    bucket = new_bucket()
    key, pub = new_key(d, bucket)
    c = Chain(bucket, "weir-0", key)
    end = end or int(time.time()) + HOUR // 2
    objs = {}
    for p in range(periods):
        pend = end - (periods - 1 - p) * HOUR
        entries = [data_object(bucket, "%s2026/12/03/p%d-%d.gz" % (DATA, p, i), 5 + i,
                               pend - HOUR + 10) for i in range(per_period)]
        objs.update({e["key"]: e for e in entries})
        c.digest(pend - HOUR, pend, entries)
    return bucket, c, pub, objs


# ---- running weir verify -----------------------------------------------------------------------

ERR = [""]  # the last run's standard error, for failure messages
# this process's environment (sanitizer options, PATH) without the machine's AWS setup
ENV = dict(os.environ, **s3t.BASE_ENV)
ENV.update(AWS_ACCESS_KEY_ID="S3RVER", AWS_SECRET_ACCESS_KEY="S3RVER")


def verify(bucket, pub, *args, json_out=True, rss=None, digest_prefix=PREFIX, env=None):
    cmd = [WEIR_BIN, "verify", "--bucket", bucket, "--digest-prefix", digest_prefix,
           "--endpoint", "http://127.0.0.1:%d" % s3t.s3().port, "--force-path-style",
           "--public-key", pub] + list(args) + (["--json"] if json_out else [])
    if rss:
        cmd = ["/usr/bin/time", "-f", "%M", "-o", rss] + cmd
    p = subprocess.run(cmd, capture_output=True, env=env or ENV, timeout=600)
    ERR[0] = p.stderr.decode()
    out = p.stdout.decode()
    if not json_out:
        return p.returncode, out, p.stderr.decode()
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines and lines[-1].get("summary"), "no summary: %r %r" % (out, p.stderr)
    return p.returncode, lines[:-1], lines[-1]


def kinds(findings):
    return sorted((f["finding"], f.get("kind", ""), f.get("key", "")) for f in findings)


def tmp():
    return s3t.tmpdir("weir-verify-it-")


# ---- tests -------------------------------------------------------------------------------------

def test_clean_trail_verifies():
    d = tmp()
    bucket, c, pub, objs = trail(d)
    rc, findings, summary = verify(bucket, pub)
    assert rc == 0 and findings == [], (rc, findings)
    assert summary["ok"] and summary["digests"] == 3 and summary["chains"] == 1
    assert summary["objects_checked"] == len(objs) == 9, summary
    # the human form says so too
    rc, out, err = verify(bucket, pub, json_out=False)
    assert rc == 0 and out.startswith("verified: 3 digests in 1 chains, 9 objects checked"), out


def test_deleted_object_is_missing():
    d = tmp()
    bucket, c, pub, objs = trail(d)
    gone = sorted(objs)[4]
    delete(bucket, gone)
    rc, findings, summary = verify(bucket, pub)
    assert rc == 1, rc
    assert kinds(findings) == [("missing-object", "", gone)], findings
    assert findings[0]["digest"] == c.keys[1], findings
    rc, out, _ = verify(bucket, pub, json_out=False)
    assert rc == 1 and "missing-object s3://%s/%s" % (bucket, gone) in out, out


def test_altered_byte_is_altered():
    d = tmp()
    bucket, c, pub, objs = trail(d)
    k = sorted(objs)[2]
    data = bytearray(get(bucket, k))
    data[len(data) // 2] ^= 0x01
    put(bucket, k, bytes(data))
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1 and kinds(findings) == [("altered-object", "", k)], findings
    # same size, another hash
    assert "%d bytes" % objs[k]["size"] in findings[0]["detail"], findings


def test_lines_removed_and_recompressed_is_altered():
    """An attacker who drops one event and re-gzips: another size, hash and record count."""
    d = tmp()
    bucket, c, pub, objs = trail(d)
    k = sorted(objs)[0]
    lines = gzip.decompress(get(bucket, k)).splitlines(keepends=True)
    put(bucket, k, gzip.compress(b"".join(lines[1:])))
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1 and kinds(findings) == [("altered-object", "", k)], findings
    assert "%d records" % (len(lines) - 1) in findings[0]["detail"], findings


def test_foreign_object_is_added():
    d = tmp()
    bucket, c, pub, objs = trail(d)  # the last period ends after now
    foreign = DATA + "2026/12/03/zz-foreign.gz"
    put(bucket, foreign, gzip.compress(b'{"fake":1}\n'))
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1 and kinds(findings) == [("unlisted-object", "added", foreign)], findings


def test_object_after_last_digest_is_not_yet_digested():
    d = tmp()
    end = int(time.time()) - 2  # the last period ended just now; not stale (1 h periods)
    bucket, c, pub, objs = trail(d, end=end)
    later = DATA + "2026/12/03/zz-later.gz"
    put(bucket, later, gzip.compress(b'{"new":1}\n'))
    rc, findings, summary = verify(bucket, pub)
    assert rc == 0, (rc, findings)
    assert kinds(findings) == [("unlisted-object", "not-yet-digested", later)], findings
    assert summary["findings"]["unlisted-object-not-yet-digested"] == 1, summary


def test_deleted_digest_is_chain_break():
    d = tmp()
    bucket, c, pub, objs = trail(d, periods=4)
    delete(bucket, c.keys[1])
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1, rc
    # its objects are no digest's now: stored in a digested period, so "added"; and the
    # next digest's link names the deleted one
    breaks = [f for f in findings if f["finding"] == "chain-break"]
    assert breaks and all(f["key"] == c.keys[2] for f in breaks), findings
    assert any(c.keys[1] in f["detail"] for f in breaks), breaks
    added = sorted(f["key"] for f in findings if f.get("kind") == "added")
    assert added == sorted(k for k in objs if "/p1-" in k), findings


def test_digest_signed_by_other_key_is_bad_signature():
    d = tmp()
    bucket, c, pub, objs = trail(d, periods=2)
    # the last digest rewritten to drop one object, link and periods kept, signed with a key
    # the verifier does not trust (an attacker without weir's key)
    other, _ = new_key(d, bucket + "-other")
    orig = json.loads(get(bucket, c.keys[1]))
    dropped = orig["objects"][0]["key"]
    forger = Chain(bucket, "weir-0", c.key)
    forger.seq, forger.prev = 1, orig["previous"]
    bad = forger.digest(epoch(orig["period_start"]), epoch(orig["period_end"]),
                        orig["objects"][1:], signer=other)
    assert bad == c.keys[1], (bad, c.keys)
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1, rc
    # nothing a badly signed digest says is trusted: the objects it lists are no digest's, and
    # its period is not digested (the chain's last trusted digest ended before they came)
    assert kinds(findings) == sorted(
        [("bad-signature", "", bad)] +
        [("unlisted-object", "not-yet-digested", o["key"]) for o in orig["objects"]]), findings
    assert dropped in objs


def test_chain_restarted_is_reported():
    d = tmp()
    bucket, c, pub, objs = trail(d, periods=2)
    last = {"key": c.prev["key"], "sha256": c.prev["sha256"]}
    start = int(time.time()) // HOUR * HOUR + HOUR
    # weir lost its state: a new chain under the same name, saying which digest it found last
    k = c.digest(start, start + HOUR, [], restarted={"reason": "state missing",
                                                     "last_found": last})
    rc, findings, summary = verify(bucket, pub)
    assert rc == 1, rc
    assert kinds(findings) == [("chain-restarted", "", k)], findings
    assert "state missing" in findings[0]["detail"], findings
    assert summary["findings"]["chain-restarted"] == 1, summary


def test_restart_hiding_deleted_digests_is_chain_break():
    d = tmp()
    bucket, c, pub, objs = trail(d, periods=3)
    found = {"key": c.keys[2], "sha256": c.prev["sha256"]}
    start = int(time.time()) // HOUR * HOUR + HOUR
    c.digest(start, start + HOUR, [], restarted={"reason": "state missing", "last_found": found})
    delete(bucket, c.keys[2])  # the digest the restart names is gone
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1
    assert [f for f in findings if f["finding"] == "chain-break" and c.keys[2] in f["detail"]], \
        findings


def test_restart_after_every_earlier_digest_deleted_is_chain_break():
    """The restart names its last digest found, and the bucket holds none of the chain before
    it: every digest before the restart was deleted."""
    d = tmp()
    end = int(time.time()) + HOUR // 2
    bucket, c, pub, objs = trail(d, periods=3, end=end)
    found = {"key": c.keys[2], "sha256": c.prev["sha256"]}
    old = list(c.keys)
    k = c.digest(end, end + HOUR, [], restarted={"reason": "state missing", "last_found": found})
    for key in old:
        delete(bucket, key)
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1
    assert [f for f in findings if f["finding"] == "chain-break" and f["key"] == k and
            c.keys[2] in f["detail"]], findings


def test_every_digest_deleted_fails_with_to_as_without():
    d = tmp()
    bucket, c, pub, objs = trail(d, periods=2)
    for key in c.keys:
        delete(bucket, key)
    for args in ((), ("--to", str(int(time.time()) + 10))):
        rc, findings, _ = verify(bucket, pub, *args)
        assert rc == 1 and "stale-chain" in [f["finding"] for f in findings], (args, findings)


def test_object_stored_just_before_a_period_end_waits_for_the_next_digest():
    """S3 dates an object by the request's start, weir files it by the answer: an object
    stored a moment before the last digest's period end may be in the next digest, so it is
    not yet digested rather than added."""
    d = tmp()
    bucket, c, pub, objs = trail(d, end=int(time.time()) + 60)
    late = DATA + "2026/12/03/zz-late.gz"
    put(bucket, late, gzip.compress(b'{"late":1}\n'))
    rc, findings, _ = verify(bucket, pub)
    assert rc == 0 and kinds(findings) == [("unlisted-object", "not-yet-digested", late)], \
        findings


def test_digest_prefix_without_its_slash():
    d = tmp()
    bucket, c, pub, objs = trail(d)
    rc, findings, _ = verify(bucket, pub, digest_prefix=PREFIX.rstrip("/"))
    assert rc == 0 and findings == [], findings


def test_restart_that_could_not_list_is_reported():
    """weir restarted a chain while S3 was unreachable: last_found null, a reason that says
    so. Not a chain break (weir said what it knew), but reported with what the bucket holds."""
    d = tmp()
    bucket, c, pub, objs = trail(d, periods=2)
    start = int(time.time()) // HOUR * HOUR + HOUR
    k = c.digest(start, start + HOUR, [], restarted={
        "reason": "state missing; the bucket could not be listed: connection refused",
        "last_found": None})
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1 and [f["finding"] for f in findings] == ["chain-restarted"] * 2, findings
    assert all(f["key"] == k for f in findings), findings
    assert "could not be listed" in findings[0]["detail"], findings
    assert c.keys[1] in findings[1]["detail"], findings


def test_from_to_restrict_the_check():
    d = tmp()
    bucket, c, pub, objs = trail(d, periods=3)
    first = sorted(k for k in objs if "/p0-" in k)
    delete(bucket, first[0])  # in the first period only
    docs = [json.loads(get(bucket, k)) for k in c.keys]
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1 and kinds(findings) == [("missing-object", "", first[0])], findings
    # from the second period on: the first digest's objects are not checked
    rc, findings, summary = verify(bucket, pub, "--from", docs[1]["period_start"])
    assert rc == 0 and findings == [], findings
    assert summary["objects_checked"] == 6, summary
    # up to the first period's end, as epoch seconds: found again, and only 2 objects read
    t = epoch(docs[0]["period_end"])
    rc, findings, summary = verify(bucket, pub, "--to", str(t - 1))
    assert rc == 1 and kinds(findings) == [("missing-object", "", first[0])], findings
    assert summary["objects_checked"] == 2, summary


def test_large_and_zstd_objects_are_streamed():
    """A gzip object of 200,000 events (several MB, read in many pieces) and zstd objects (as
    store_as zstd writes them, up to its level 22): hashed and their lines counted through decompression. A digest
    that claims one record more than an object holds, with the right size and hash, is caught:
    the count comes from the decompressed lines."""
    d = tmp()
    bucket = new_bucket()
    key, pub = new_key(d, bucket)
    c = Chain(bucket, "weir-0", key)
    end = (int(time.time()) // HOUR + 1) * HOUR
    big = b"".join(json.dumps({"seq": i, "id": hashlib.sha256(b"%d" % i).hexdigest()}).encode() +
                   b"\n" for i in range(200000))
    part = big[:big.index(b"\n", 100000) + 1]  # whole lines
    small = big[:big.index(b"\n", 5000) + 1]
    entries = []
    for k, data, n in (
            (DATA + "big.gz", gzip.compress(big), 200000),
            (DATA + "a.zst", subprocess.run(["zstd", "-q", "-c"], input=part,
                                            capture_output=True, check=True).stdout,
             part.count(b"\n")),
            (DATA + "b.json", small, small.count(b"\n")),
            # zstd's top level from a pipe (no size known): a frame that declares a 128 MiB
            # window, more than the inflater's 1 MiB output limit would allow
            (DATA + "c.zst", subprocess.run(["zstd", "-q", "-c", "--ultra", "-22"], input=small,
                                            capture_output=True, check=True).stdout,
             small.count(b"\n"))):
        put(bucket, k, data)
        entries.append({"key": k, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "records": n, "oldest": rfc3339(end - 50), "newest": rfc3339(end - 50)})
    assert entries[0]["size"] > 4 << 20, entries[0]["size"]
    c.digest(end - 2 * HOUR, end - HOUR, entries)
    rc, findings, summary = verify(bucket, pub)
    assert rc == 0 and findings == [] and summary["objects_checked"] == 4, (rc, findings, ERR)
    # the next digest lists the zstd object again, claiming one record more
    wrong = dict(entries[1], records=entries[1]["records"] + 1)
    c.digest(end - HOUR, end, [wrong])
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1 and kinds(findings) == [("altered-object", "", DATA + "a.zst")], findings
    assert "%d records" % entries[1]["records"] in findings[0]["detail"], findings


def test_compression_is_read_from_the_bytes_and_records_are_newlines():
    """A key format without %{file_extension} stores gzip under a key with no .gz: verify reads
    the bytes, not the suffix. And records are newlines, as the writer counts them: a text
    without a final newline (add_newline false) counts one fewer than its lines."""
    d = tmp()
    bucket = new_bucket()
    key, pub = new_key(d, bucket)
    c = Chain(bucket, "weir-0", key)
    end = int(time.time()) + HOUR // 2
    entries = []
    for k, data, n in ((DATA + "no-suffix-1", gzip.compress(b'{"a":1}\n{"a":2}\n'), 2),
                       (DATA + "no-newline-2", b"one\ntwo", 1)):
        put(bucket, k, data)
        entries.append({"key": k, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "records": n, "oldest": rfc3339(end - 50), "newest": rfc3339(end - 50)})
    c.digest(end - HOUR, end, entries)
    rc, findings, summary = verify(bucket, pub)
    assert rc == 0 and findings == [] and summary["objects_checked"] == 2, (rc, findings, ERR)


def test_many_objects_across_pages():
    d = tmp()
    bucket = new_bucket()
    key, pub = new_key(d, bucket)
    c = Chain(bucket, "weir-0", key)
    end = (int(time.time()) // HOUR + 1) * HOUR
    n = 1100
    entries = [data_object(bucket, "%s2026/12/03/o-%05d.gz" % (DATA, i), 1 + i % 3, end - 100)
               for i in range(n)]
    c.digest(end - HOUR, end, entries)
    rc, findings, summary = verify(bucket, pub)
    assert rc == 0 and findings == [] and summary["objects_checked"] == n, (rc, summary, ERR)
    # smaller pages: the continuation tokens are followed; one deletion in the middle found
    delete(bucket, entries[777]["key"])
    rc, findings, summary = verify(bucket, pub, "--max-keys", "100")
    assert rc == 1 and kinds(findings) == [("missing-object", "", entries[777]["key"])], findings
    assert summary["objects_checked"] == n - 1, summary
    listings = [r for r in s3t.s3().state.requests("GET", "/" + bucket)
                if "list-type=2" in r[2] and "prefix=logs" in r[2] and "max-keys=100&" in r[2]]
    assert len(listings) == 11, [(r[2][-60:], r[5]) for r in listings]  # 1099 keys by 100
    assert sum("continuation-token=" in r[2] for r in listings) == 10, listings


def test_memory_does_not_grow_with_listed_objects():
    """Digests listing 20,000 and then 250,000 objects, none in the bucket: every one is reported
    missing, and the largest resident size stays the same (the entries are in sorted runs on
    disk, 1 MiB at a time, and at 250,000 (about 40 MB of runs) 32 runs are merged into one
    on the way; holding 250,000 keys, hashes and digest names would take tens of MB more)."""
    d = tmp()
    rss = {}
    for n in (20000, 250000):
        bucket = new_bucket()
        key, pub = new_key(d, bucket)
        c = Chain(bucket, "weir-0", key)
        per = 1000
        end = (int(time.time()) // HOUR + 1) * HOUR - (n // per) * HOUR
        for p in range(n // per):
            entries = [{"key": "%s2026/12/03/p%03d-%06d.gz" % (DATA, p, (i * 7919) % per),
                        "size": 100, "sha256": "ab" * 32, "records": 1,
                        "oldest": rfc3339(end), "newest": rfc3339(end)} for i in range(per)]
            c.digest(end + p * HOUR, end + (p + 1) * HOUR, entries)
        f = os.path.join(d, "rss-%d" % n)
        rc, out, err = verify(bucket, pub, json_out=False, rss=f, env=rss_env(ENV))
        assert rc == 1, (rc, err)
        assert out.count("missing-object ") == n, (out.count("missing-object "), err[-500:])
        with open(f) as fh:
            rss[n] = int(fh.read().split()[-1])
    print("  max RSS (KiB) by listed objects: %r" % rss)
    # the 230,000 more entries are some 38 MB as run lines; held in memory they would all
    # show. 4 MB leaves room for a sanitizer build's allocator (1.1 MB more seen there).
    assert rss[250000] - rss[20000] < 4096, rss  # KiB


def test_config_mode():
    """-c with a real fluent.conf: bucket, endpoint and credentials from the S3 output, the
    digest prefix from its <digest> section, --id picking one of two outputs."""
    d = tmp()
    bucket, c, pub, objs = trail(d, periods=2)
    conf = os.path.join(d, "fluent.conf")
    with open(conf, "w") as f:
        f.write("""<source>
  @type forward
  port 24224
</source>
<match other.**>
  @type s3
  @id other
  s3_bucket some-other-bucket
  s3_endpoint http://127.0.0.1:1
  path elsewhere/
</match>
<match audit.**>
  @type s3
  @id audit
  s3_bucket %s
  s3_endpoint http://127.0.0.1:%d
  force_path_style true
  aws_key_id S3RVER
  aws_sec_key S3RVER
  path %s%%Y/%%m/%%d/
  <buffer time>
    @type file
    path %s/buffer
  </buffer>
  <digest>
    private_key_path %s/digest.key
    prefix %s
    period 1h
  </digest>
</match>
""" % (bucket, s3t.s3().port, DATA, d, d, PREFIX))
    env = dict(os.environ, **s3t.BASE_ENV)
    gone = sorted(objs)[0]
    p = subprocess.run([WEIR_BIN, "verify", "-c", conf, "--id", "audit", "--public-key", pub],
                       capture_output=True, env=env, timeout=300)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert b"verified: 2 digests in 1 chains, 6 objects checked" in p.stdout, p.stdout
    delete(bucket, gone)
    p = subprocess.run([WEIR_BIN, "verify", "-c", conf, "--id", "audit", "--public-key", pub],
                       capture_output=True, env=env, timeout=300)
    assert p.returncode == 1 and ("missing-object s3://%s/%s" % (bucket, gone)).encode() in \
        p.stdout, p.stdout
    # two S3 outputs and no --id: refused, exit 2, saying how to choose
    p = subprocess.run([WEIR_BIN, "verify", "-c", conf, "--public-key", pub],
                       capture_output=True, env=env, timeout=60)
    assert p.returncode == 2 and b"--id" in p.stderr, (p.returncode, p.stderr)


def test_cannot_run_exits_2():
    d = tmp()
    bucket, c, pub, objs = trail(d, periods=1)
    # not a public key
    with open(os.path.join(d, "junk.pub"), "w") as f:
        f.write("not a key\n")
    rc, out, err = verify(bucket, os.path.join(d, "junk.pub"), json_out=False)
    assert rc == 2 and "not an Ed25519 public key" in err, (rc, err)
    # an RSA key is refused too
    rsa = os.path.join(d, "rsa.pub")
    subprocess.run("openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:1024 2>/dev/null | "
                   "openssl pkey -pubout -out %s" % rsa, shell=True, check=True)
    rc, out, err = verify(bucket, rsa, json_out=False)
    assert rc == 2 and "not an Ed25519 public key" in err, (rc, err)
    # a bucket that does not exist
    rc, out, err = verify(bucket + "-nope", pub, json_out=False)
    assert rc == 2 and "cannot list" in err and "NoSuchBucket" in err, (rc, err)
    # S3 unreachable
    p = subprocess.run([WEIR_BIN, "verify", "--bucket", bucket, "--digest-prefix", PREFIX,
                        "--endpoint", "http://127.0.0.1:1", "--force-path-style",
                        "--public-key", pub], capture_output=True, env=ENV, timeout=120)
    assert p.returncode == 2 and b"cannot list" in p.stderr, (p.returncode, p.stderr)
    # the commands say what they are
    p = subprocess.run([WEIR_BIN, "--help"], capture_output=True)
    assert p.returncode == 0 and b"weir verify" in p.stdout, p.stdout
    p = subprocess.run([WEIR_BIN, "verify", "--help"], capture_output=True)
    assert p.returncode == 0 and b"--public-key" in p.stdout and b"Exit status" in p.stdout
    # bad arguments
    for args in (["--from", "yesterday"], ["--max-keys", "0"], ["--bogus"]):
        rc, out, err = verify(bucket, pub, *args, json_out=False)
        assert rc == 2, (args, rc, err)


def test_transient_errors_are_retried_and_refusals_stop_it():
    """S3 throttles a listing and fails a GET once, and a connection drops mid-answer: verify
    asks again (as the output's start-up checks do) and verifies. An object S3 refuses to
    hand out (403) is not a finding about the trail: verify could not run, exit 2."""
    d = tmp()
    bucket, c, pub, objs = trail(d, periods=2)
    st = s3t.s3().state
    k = sorted(objs)[1]
    st.inject(r"^GET /%s\?.*list-type=2" % bucket, count=2, status=503, code="SlowDown")
    st.inject(r"^GET /%s/%s\?$" % (bucket, k), count=1, status=500, code="InternalError")
    st.inject(r"^GET /%s/%s\?$" % (bucket, c.keys[0]), count=1, kind="lost")
    before = len(st.injected)
    rc, findings, summary = verify(bucket, pub)
    assert rc == 0 and findings == [] and summary["objects_checked"] == 6, (rc, findings, ERR)
    assert len(st.injected) - before == 4, st.injected[before:]
    # once: a refusal is not asked again (a second attempt would succeed and hide it)
    st.inject(r"^GET /%s/%s\?$" % (bucket, k), count=1, status=403, code="AccessDenied")
    rc, out, err = verify(bucket, pub, json_out=False)
    assert rc == 2 and "cannot read s3://%s/%s" % (bucket, k) in err and "AccessDenied" in err, \
        (rc, err)
    assert out.strip().splitlines()[-1].startswith("could not verify"), out


def test_malformed_digest_signed_with_the_key():
    """Bytes signed with the right key that are not a digest of the format (a writer's bug, or
    the key used for something else): malformed-digest, and nothing in them is used."""
    d = tmp()
    bucket, c, pub, objs = trail(d, periods=1)
    for body in (b"not json", json.dumps({"version": 2}).encode()):
        k = "%sweir-1/2026/12/03/x_0000000000.json" % PREFIX
        put(bucket, k, body, {"weir-signature": base64.b64encode(c.key.sign(body)).decode()})
        rc, findings, _ = verify(bucket, pub)
        assert rc == 1 and kinds(findings) == [("malformed-digest", "", k)], findings
    # a signature header that is not 64 bytes of base64
    put(bucket, k, b"{}", {"weir-signature": "AAAA"})
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1 and kinds(findings) == [("bad-signature", "", k)], findings


def test_two_chains_in_one_prefix():
    """Two pods, two chains under one prefix and one data prefix: both verify; an object
    stored after one chain's last digest but before the other's is not yet digested (the
    other pod may still list it)."""
    d = tmp()
    bucket, a, pub, objs = trail(d, periods=2)  # chain weir-0, ends at the next hour
    b = Chain(bucket, "weir-1", a.key)
    end = int(time.time()) - 2
    entries = [data_object(bucket, "%s2026/12/03/b-%d.gz" % (DATA, i), 3, end - 60)
               for i in range(2)]
    b.digest(end - HOUR, end, entries)
    rc, findings, summary = verify(bucket, pub)
    assert rc == 0 and findings == [] and summary["chains"] == 2, (findings, summary)
    assert summary["objects_checked"] == 8, summary
    late = DATA + "2026/12/03/zz-late.gz"
    put(bucket, late, gzip.compress(b'{"x":1}\n'))
    rc, findings, _ = verify(bucket, pub)
    assert rc == 0 and kinds(findings) == [("unlisted-object", "not-yet-digested", late)], \
        findings


def test_stale_chain():
    d = tmp()
    end = int(time.time()) // HOUR * HOUR - 3 * HOUR  # the last digest ended 3+ periods ago
    bucket, c, pub, objs = trail(d, periods=2, end=end)
    rc, findings, _ = verify(bucket, pub)
    assert rc == 1 and [f["finding"] for f in findings] == ["stale-chain"], findings
    assert findings[0]["key"] == c.keys[-1], findings


def main():
    try:
        run_tests([
            test_clean_trail_verifies,
            test_deleted_object_is_missing,
            test_altered_byte_is_altered,
            test_lines_removed_and_recompressed_is_altered,
            test_foreign_object_is_added,
            test_object_after_last_digest_is_not_yet_digested,
            test_deleted_digest_is_chain_break,
            test_digest_signed_by_other_key_is_bad_signature,
            test_chain_restarted_is_reported,
            test_restart_hiding_deleted_digests_is_chain_break,
            test_restart_that_could_not_list_is_reported,
            test_restart_after_every_earlier_digest_deleted_is_chain_break,
            test_every_digest_deleted_fails_with_to_as_without,
            test_object_stored_just_before_a_period_end_waits_for_the_next_digest,
            test_digest_prefix_without_its_slash,
            test_from_to_restrict_the_check,
            test_stale_chain,
            test_malformed_digest_signed_with_the_key,
            test_two_chains_in_one_prefix,
            test_transient_errors_are_retried_and_refusals_stop_it,
            test_config_mode,
            test_cannot_run_exits_2,
            test_large_and_zstd_objects_are_streamed,
            test_compression_is_read_from_the_bytes_and_records_are_newlines,
            test_many_objects_across_pages,
            test_memory_does_not_grow_with_listed_objects,
        ])
    finally:
        s3t.cleanup()


if __name__ == "__main__":
    main()
