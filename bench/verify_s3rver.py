"""How long `weir verify` takes per thousand objects, and its peak RSS, against s3rver on this
machine. Fills a bucket with N gzip JSON-lines objects (20 events, ~1 KB each) listed by
hourly digests of 1000 objects (test/integration/test_verify.py's writer), then runs
`weir verify` straight at s3rver (not through the tests' Python proxy, which would be the
bottleneck) under /usr/bin/time, for each N given.

    /usr/bin/python3 bench/verify_s3rver.py BUILD_DIR N [N ...]   (needs npm ci for s3rver)

bench/verify.py (the digest writer's) times the same on weir's own digests, through the
tests' proxy; this one isolates verify's own cost (no proxy, digests written directly).
"""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "integration"))
os.environ.setdefault("WEIR_SOURCE_DIR", os.path.join(HERE, ".."))

import test_s3_output as s3t  # noqa: E402
import test_verify as tv  # noqa: E402


def fill(n, d):
    bucket = tv.new_bucket()
    key, pub = tv.new_key(d, bucket)
    c = tv.Chain(bucket, "weir-0", key)
    per = 1000
    end = (int(time.time()) // tv.HOUR + 1) * tv.HOUR - ((n + per - 1) // per - 1) * tv.HOUR
    for p in range(0, n, per):
        pend = end + (p // per) * tv.HOUR
        entries = [tv.data_object(bucket, "%s2026/12/03/p%04d-%04d.gz" % (tv.DATA, p // per, i),
                                  20, pend - 100) for i in range(min(per, n - p))]
        c.digest(pend - tv.HOUR, pend, entries)
    return bucket, pub


def main():
    weir = os.path.join(os.path.abspath(sys.argv[1]), "weir")
    sizes = [int(x) for x in sys.argv[2:]] or [1000]
    d = s3t.tmpdir("weir-verify-bench-")
    try:
        for n in sizes:
            bucket, pub = fill(n, d)
            rss = os.path.join(d, "rss")
            cmd = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", rss, weir, "verify", "--bucket", bucket,
                   "--digest-prefix", tv.PREFIX, "--endpoint",
                   "http://127.0.0.1:%d" % s3t.s3().backend_port, "--force-path-style",
                   "--public-key", pub]
            p = subprocess.run(cmd, capture_output=True, env=tv.ENV)
            with open(rss) as f:
                secs, user, sys_, kib = f.read().split()[-4:]
            print("%d objects: exit %d, %s s (%.2f s per 1000; weir's CPU %.2f s), peak RSS "
                  "%.1f MB; %s" %
                  (n, p.returncode, secs, float(secs) * 1000 / n, float(user) + float(sys_),
                   int(kib) / 1024,
                   p.stdout.decode().strip().splitlines()[-1]), flush=True)
    finally:
        s3t.cleanup()


if __name__ == "__main__":
    main()
