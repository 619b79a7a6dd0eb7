#!/usr/bin/python3
"""`weir verify` per thousand objects, on weir's own digests.

weir (forward input, file buffer, <digest> with period 5s) delivers N objects (N forward
messages of 10 records, each with its own event second: one chunk, one gzip object each) into
s3rver behind the tests' signature-checking proxy (test/integration/test_s3_output.py); once
every object is listed in a digest, weir keeps running and `weir verify -c` is timed (wall
clock and peak RSS, /usr/bin/time).

    /usr/bin/python3 bench/verify.py BUILD_DIR N [N ...]        (needs npm ci for s3rver)
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
BUILD = os.path.abspath(sys.argv[1])
os.environ.setdefault("WEIR_BIN", os.path.join(BUILD, "weir"))
os.environ.setdefault("WEIR_BUILD_DIR", BUILD)
os.environ.setdefault("WEIR_SOURCE_DIR", SRC)
sys.path.insert(0, os.path.join(SRC, "test", "integration"))

import test_digests as tdg  # noqa: E402
from test_s3_output import BASE_ENV, cleanup, fwd_send, records, s3, stop_weir  # noqa: E402
from weirtest import WEIR_BIN  # noqa: E402


def one(n):
    srv = s3()
    kd = tdg.tmpdir("weir-verify-bench-key-")
    key, pub = tdg.make_key(kd)
    bucket = "vbench-%d" % n
    r = tdg.Run(bucket, key, name="vb%d" % n)
    w = r.start()
    t0 = time.time()
    for i in range(n):
        assert fwd_send(w.port, "dg.app", records("v", 10, start=10 * i), t=1700000000 + i)
    tdg.wait_listed(srv, bucket, tdg.all_listed(n), timeout=600)
    deliver = time.time() - t0
    rss = os.path.join(kd, "rss")
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss, WEIR_BIN, "verify", "-c",
                        w.conf, "--public-key", pub], capture_output=True,
                       env=dict(BASE_ENV), timeout=3600)
    took = time.time() - t0
    stop_weir(w)
    with open(rss) as f:
        peak = int(f.read().split()[-1])
    summary = p.stdout.decode().strip().splitlines()[-1]
    print("N=%d delivered and digested in %.1f s; weir verify exit %d in %.2f s "
          "(%.2f s per 1000 objects), peak RSS %.1f MB: %s"
          % (n, deliver, p.returncode, took, took * 1000 / n, peak / 1024, summary), flush=True)


if __name__ == "__main__":
    try:
        for arg in sys.argv[2:]:
            one(int(arg))
    finally:
        cleanup()
