"""A small request must not ask for a huge batch. add_query_params copies every query
parameter into every record, so ~900 parameters in the URL times 10,000 `{}` lines in a
30 KB body would decode to about 120 MB of events (and as many key lookups) on the loop.
weir refuses a request whose events pass WEIR_HTTP_MAX_BATCH_BYTES (64 MiB) with 400 and a
log line, stores nothing of it, and keeps serving: the same parameters on a few records
are stored with every added key."""

import json
import os
import time
import urllib.request
import urllib.error

from weirtest import Weir, free_port, run_tests

PARAMS = 900  # "p123=v&" is 7 bytes: the URL stays under WEIR_HTTP_MAX_URL_LEN (8192)


def post(port, records):
    query = "&".join("p%03d=v" % i for i in range(PARAMS))
    body = b"\n".join(b"{}" for _ in range(records))
    req = urllib.request.Request("http://127.0.0.1:%d/amp.test?%s" % (port, query), data=body,
                                 headers={"Content-Type": "application/x-ndjson"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_added_keys_cannot_multiply_a_request():
    port = free_port()
    with Weir("""
<source>
  @type http
  port %d
  bind 127.0.0.1
  add_query_params true
</source>
<match **>
  @type file
  path out/events
  <format>
    @type json
  </format>
  <buffer>
    flush_mode immediate
  </buffer>
</match>
""" % port).start(wait_ports=(port,)) as w:
        status, _ = post(port, 10000)
        assert status == 400, status
        deadline = time.time() + 10
        while "decodes to more than" not in w.log() and time.time() < deadline:
            time.sleep(0.1)
        assert "decodes to more than" in w.log(), w.log()
        # the same parameters on 3 records: stored, each record with all of them
        status, _ = post(port, 3)
        assert status == 200, status
        w.stop()
        lines = []
        for root, _, files in os.walk(os.path.join(w.dir, "out")):
            for f in files:
                lines += open(os.path.join(root, f)).read().splitlines()
        assert len(lines) == 3, len(lines)
        for line in lines:
            rec = json.loads(line)
            assert len([k for k in rec if k.startswith("QUERY_P")]) == PARAMS, sorted(rec)[:5]


if __name__ == "__main__":
    run_tests([test_added_keys_cannot_multiply_a_request])
