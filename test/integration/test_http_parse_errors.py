"""Requests whose body does not parse are answered 200, as Fluentd (>= 1.17) answers them, but
weir no longer drops them silently: each dropped value counts in
weir_input_parse_errors_total{plugin_id} and a rate-limited warning names the peer and why.
Driven with curl against the real binary, scraped from @type prometheus."""
import subprocess

from weirtest import Weir, free_port, metric_at, run_tests, wait_for

CONF = """
<source>
  @type http
  @id in_http
  bind 127.0.0.1
  port %d
  <parse>
    @type json
  </parse>
</source>
<source>
  @type http
  @id in_default
  bind 127.0.0.1
  port %d
</source>
<source>
  @type prometheus
  bind 127.0.0.1
  port %d
</source>
<match **>
  @type stdout
</match>
"""


def curl_post(port, path, body, ctype="application/json"):
    if isinstance(body, str):
        body = body.encode()
    p = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Type: " + ctype,
         "--data-binary", "@-", "http://127.0.0.1:%d%s" % (port, path)],
        input=body, capture_output=True, timeout=20)
    return p.stdout.decode()


def metric(prom, plugin_id):
    v = metric_at(prom, "weir_input_parse_errors_total", plugin_id=plugin_id)
    assert v is not None, "no weir_input_parse_errors_total for %s" % plugin_id
    return v


def test_unparsable_bodies_are_counted_and_warned():
    port, port2, prom = free_port(), free_port(), free_port()
    with Weir(CONF % (port, port2, prom)) as w:
        w.start([port, port2, prom])
        assert metric(prom, "in_http") == 0
        assert curl_post(port, "/app", '{"ok":1}') == "200"
        assert curl_post(port, "/app", "this is not json") == "200"
        assert curl_post(port, "/app", '{"a":1') == "200"
        # an array's elements that are not objects are dropped too, the objects kept
        assert curl_post(port, "/app", '[{"ok":2},3,"x"]') == "200"
        assert metric(prom, "in_http") == 4
        # default mode: a json= parameter that does not parse, and a msgpack body cut short
        assert curl_post(port2, "/app", "json=%7Bnope", "application/x-www-form-urlencoded") == "200"
        assert curl_post(port2, "/app", b"\x82\xa1a", "application/msgpack") == "200"
        assert metric(prom, "in_default") == 2
        events = w.wait_events(2)
        wait_for(lambda: w.log().count("did not parse") >= 2, what="the two warnings")
        log = w.log()
        w.stop()
    assert sorted(rec["ok"] for _, _, _, rec in events) == [1, 2]
    # one warning line per input per 5 s at most, naming the peer and the first reason
    warns = [l for l in log.splitlines() if "did not parse" in l]
    assert len(warns) == 2, (warns, log)
    assert all("[warn]" in l and "from 127.0.0.1" in l for l in warns), warns
    assert "invalid JSON at byte 0: unexpected character" in warns[0], warns[0]
    assert "invalid JSON at byte 1: expected a string key" in warns[1], warns[1]


if __name__ == "__main__":
    run_tests([test_unparsable_bodies_are_counted_and_warned])
