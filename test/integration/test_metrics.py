"""Observability through the real binary: what an operator scrapes from `@type prometheus`
(/metrics, /healthz) and `@type monitor_agent` (/api/plugins.json, /api/plugins) after real
senders sent known events with acks through the forward input into a file output with a file
buffer; /healthz turning 503 while the output fails and 200 again once it recovers; and the JSON
log format. Every number asserted is one the test itself caused."""

import gzip
import json
import os
import re
import signal
import socket
import ssl
import tempfile
import time

from fwdclient import AckSender, frame
from weirtest import (Weir, dry_run, free_port, http_get, make_certs, metric, parse_metrics,
                      parse_response, run_tests, scrape, wait_for)


def main_conf(fwd, prom, agent, d, log_json=True):
    return """
<system>
  %s
</system>
<source>
  @type forward
  @id in_fwd
  bind 127.0.0.1
  port %d
</source>
<source>
  @type prometheus
  bind 127.0.0.1
  port %d
  content_encoding gzip
</source>
<source>
  @type prometheus_output_monitor
  interval 10
</source>
<source>
  @type prometheus_monitor
</source>
<source>
  @type monitor_agent
  @id agent
  bind 127.0.0.1
  port %d
</source>
<match app.**>
  @type file
  @id out_file
  path %s/out/events
  <format>
    @type json
  </format>
  <buffer tag>
    @type file
    path %s/buf
    flush_mode interval
    flush_interval 3600
  </buffer>
</match>
""" % ("<log>\n    format json\n    time_format %Y-%m-%dT%H:%M:%S.%L%z\n  </log>" if log_json else "",
       fwd, prom, agent, d, d)


def out_lines(d):
    n = 0
    for root, _, files in os.walk(os.path.join(d, "out")):
        for f in files:
            with open(os.path.join(root, f)) as fh:
                n += sum(1 for _ in fh)
    return n


def test_counts_match_what_was_sent_and_delivered():
    d = tempfile.mkdtemp(prefix="weir-metrics-")
    fwd, prom, agent = free_port(), free_port(), free_port()
    w = Weir(main_conf(fwd, prom, agent, d), workdir=d)
    with w:
        w.start([fwd, prom, agent])
        sent_bytes = {"app.a": 0, "app.b": 0}
        seq = 0
        frames = 0
        # the oldest chunk is made by the first frame: after before_first, before first_acked
        before_first, first_acked = time.time(), None
        for tag, nframes, per in (("app.a", 3, 10), ("app.b", 2, 5)):
            s = AckSender(fwd, tag=tag)
            for _ in range(nframes):
                seqs = list(range(seq, seq + per))
                seq += per
                sent_bytes[tag] += len(frame(tag, seqs, "c%d" % seqs[0]))
                assert s.send(seqs, time.time() + 10), w.log()
                first_acked = first_acked or time.time()
                frames += 1
            s.close()
        # an unmatched tag is counted and dropped
        s = AckSender(fwd, tag="nobody.listens")
        assert s.send([1000, 1001], time.time() + 10)
        s.close()
        frames += 1
        # two idle connections show in the gauge, and leave it when closed
        idle = [socket.create_connection(("127.0.0.1", fwd)) for _ in range(2)]
        time.sleep(1.0)  # so the oldest chunk's age has a lower bound well above 0
        before_scrape = time.time()
        m = wait_for(lambda: (lambda m: m if metric(m, "weir_input_connections", plugin_id="in_fwd",
                                                          type="forward") == 2 else None)(scrape(prom)),
                     what="2 open connections")
        lab = dict(plugin_id="in_fwd", type="forward")
        assert metric(m, "fluentd_input_status_num_records_total", tag="app.a", **lab) == 30
        assert metric(m, "fluentd_input_status_num_records_total", tag="app.b", **lab) == 10
        assert metric(m, "fluentd_input_status_num_records_total", tag="nobody.listens", **lab) == 2
        assert metric(m, "weir_input_bytes_total", tag="app.a", **lab) == sent_bytes["app.a"]
        assert metric(m, "weir_input_bytes_total", tag="app.b", **lab) == sent_bytes["app.b"]
        assert metric(m, "weir_input_acks_total", **lab) == frames
        # every acknowledged frame was timed; le="+Inf" counts them all
        assert metric(m, "weir_input_ack_latency_seconds_count", **lab) == frames
        assert metric(m, "weir_input_ack_latency_seconds_bucket", le="+Inf", **lab) == frames
        assert metric(m, "weir_input_ack_latency_seconds_sum", **lab) > 0
        assert metric(m, "weir_unmatched_records_total", tag="nobody.listens") == 2
        out = dict(plugin_id="out_file", type="file")
        assert metric(m, "fluentd_output_status_emit_records", **out) == 40
        assert metric(m, "fluentd_output_status_emit_count", **out) == 5
        assert metric(m, "fluentd_output_status_buffer_stage_length", **out) == 2  # one per tag
        assert metric(m, "fluentd_output_status_buffer_total_bytes", **out) > 40 * 100
        assert metric(m, "weir_output_delivered_records_total", **out) == 0
        # the age of the chunk the first frame made: at least the time since its ack, at most
        # the time since that frame was sent (the chunk's creation is kept in whole seconds)
        age = metric(m, "weir_output_buffer_oldest_chunk_age_seconds", **out)
        assert before_scrape - first_acked <= age <= time.time() - int(before_first), \
            (age, before_scrape - first_acked)
        assert metric(m, "fluentd_status_buffer_total_bytes", plugin_category="output", **out) == \
            metric(m, "fluentd_output_status_buffer_total_bytes", **out)
        for c in idle:
            c.close()
        wait_for(lambda: metric(scrape(prom), "weir_input_connections", **lab) == 0,
                 what="connections closed")

        # SIGUSR1 flushes: everything delivered, the buffer empty again
        w.proc.send_signal(signal.SIGUSR1)
        m = wait_for(lambda: (lambda m: m if metric(m, "weir_output_delivered_records_total", **out) == 40
                              else None)(scrape(prom)), what="delivery")
        assert metric(m, "weir_output_delivered_chunks_total", **out) == 2
        assert metric(m, "fluentd_output_status_write_count", **out) == 2
        assert metric(m, "fluentd_output_status_num_errors", **out) == 0
        assert metric(m, "fluentd_output_status_retry_count", **out) == 0
        assert metric(m, "fluentd_output_status_buffer_total_bytes", **out) == 0
        assert metric(m, "fluentd_output_status_buffer_queue_length", **out) == 0
        assert metric(m, "fluentd_output_status_buffer_stage_length", **out) == 0
        assert metric(m, "fluentd_output_status_buffer_available_space_ratio", **out) == 100
        assert metric(m, "weir_output_buffer_oldest_chunk_age_seconds", **out) == 0
        assert metric(m, "weir_output_failing_seconds", **out) == 0
        assert out_lines(d) == 40

        # monitor_agent: Fluentd's shape, the same numbers
        status, hdrs, body, _ = http_get(agent, "/api/plugins.json")
        assert status == 200 and hdrs["content-type"] == "application/json", (status, hdrs)
        plugins = json.loads(body)["plugins"]
        by_id = {p["plugin_id"]: p for p in plugins}
        assert [p["plugin_category"] for p in plugins] == ["input"] * 5 + ["output"], plugins
        fo = by_id["out_file"]
        assert fo["type"] == "file" and fo["output_plugin"] is True
        assert fo["config"]["@type"] == "file" and fo["config"]["path"] == d + "/out/events", fo
        assert fo["emit_records"] == 40 and fo["emit_count"] == 5 and fo["write_count"] == 2
        assert fo["buffer_queue_length"] == 0 and fo["buffer_total_queued_size"] == 0, fo
        assert fo["retry_count"] == 0 and fo["retry"] == {}, fo
        assert fo["buffer_timekeys"] == [], fo
        fi = by_id["in_fwd"]
        assert fi["output_plugin"] is False and fi["retry_count"] is None, fi
        assert fi["emit_records"] == 42, fi
        assert fi["emit_size"] == sum(sent_bytes.values()) + len(frame("nobody.listens", [1000, 1001], "c1000"))
        assert by_id["agent"]["config"] == {"@type": "monitor_agent", "@id": "agent",
                                            "bind": "127.0.0.1", "port": str(agent)}
        assert "object:1" in by_id, "Fluentd-style ids for plugins without @id: %r" % list(by_id)
        # query narrowing
        _, _, body, _ = http_get(agent, "/api/plugins.json?%40id=out_file&with_config=false")
        only = json.loads(body)["plugins"]
        assert [p["plugin_id"] for p in only] == ["out_file"] and "config" not in only[0], only
        _, _, body, _ = http_get(agent, "/api/plugins.json?type=forward&with_retry=false")
        assert [p["plugin_id"] for p in json.loads(body)["plugins"]] == ["in_fwd"]
        # LTSV: one line per plugin, nested objects left out
        status, _, body, _ = http_get(agent, "/api/plugins")
        lines = body.decode().strip().split("\n")
        assert status == 200 and len(lines) == 6, body
        row = dict(f.split(":", 1) for f in lines[-1].split("\t"))
        assert row["plugin_id"] == "out_file" and row["emit_records"] == "40", row
        assert "config" not in row and "retry" not in row, row

        status, _, body, _ = http_get(agent, "/healthz")
        assert (status, body) == (200, b"ok\n"), (status, body)
        w.stop()
    # every log line is one JSON object with Fluentd's three keys
    lines = [l for l in w.log().splitlines() if l.strip()]
    assert len(lines) > 5, w.log()
    for l in lines:
        obj = json.loads(l)
        assert set(obj) == {"time", "level", "message"}, l
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}$", obj["time"]), l
    assert any("flushing buffers" in json.loads(l)["message"] for l in lines)


def test_http_details():
    d = tempfile.mkdtemp(prefix="weir-metrics-http-")
    fwd, prom, agent = free_port(), free_port(), free_port()
    with Weir(main_conf(fwd, prom, agent, d, log_json=False), workdir=d) as w:
        w.start([fwd, prom, agent])
        s = AckSender(fwd, tag="app.gz")
        assert s.send([1], time.time() + 10)
        s.close()
        # gzip when the scraper accepts it (Prometheus always does), as content_encoding says
        status, hdrs, body, _ = http_get(prom, "/metrics", {"Accept-Encoding": "gzip"})
        assert status == 200 and hdrs.get("content-encoding") == "gzip", hdrs
        text = gzip.decompress(body).decode()
        assert 'tag="app.gz"} 1\n' in text, text
        # the aggregated path serves the same registry (weir runs one process)
        status, _, body, _ = http_get(prom, "/aggregated_metrics")
        assert status == 200 and b"fluentd_input_status_num_records_total" in body
        assert http_get(prom, "/nope")[0] == 404
        # keep-alive and pipelining: three requests in one write, answered in order
        c = socket.create_connection(("127.0.0.1", prom), timeout=5)
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        data = b""
        while data.count(b"HTTP/1.1 ") < 3 or not data.endswith(b"\n"):
            b = c.recv(65536)
            assert b, data
            data += b
        st1, _, body1, rest = parse_response(data)
        st2, h2, body2, rest = parse_response(rest, head_request=True)
        st3, h3, _, _ = parse_response(rest)
        assert (st1, body1) == (200, b"ok\n"), data
        assert st2 == 200 and body2 == b"" and int(h2["content-length"]) > 100, data
        assert st3 == 405 and h3["allow"] == "GET, HEAD", data
        c.close()
        # limits: a URL past MON_MAX_URL (4096) is refused, one at it is fine
        at_limit = "/" + "a" * 4095
        assert http_get(prom, at_limit)[0] == 404
        assert http_get(prom, at_limit + "a")[0] == 414
        assert http_get(prom, "/metrics", {"X-Big": "b" * 17000})[0] == 431
        # garbage gets a 400 and a closed connection; the server goes on
        c = socket.create_connection(("127.0.0.1", prom), timeout=5)
        c.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 400 "), "expected 400"
        c.close()
        assert http_get(prom, "/healthz")[0] == 200
        w.stop()


def test_healthz_follows_a_failing_output():
    d = tempfile.mkdtemp(prefix="weir-health-")
    fwd, prom = free_port(), free_port()
    # mkdir of <d>/blocker/... fails while blocker is a regular file (root ignores
    # permissions, not ENOTDIR)
    blocker = os.path.join(d, "blocker")
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    conf = """
<source>
  @type forward
  bind 127.0.0.1
  port %d
</source>
<source>
  @type prometheus
  bind 127.0.0.1
  port %d
  health_failing_threshold 2s
</source>
<match **>
  @type file
  @id broken
  path %s/sub/events
  <buffer>
    @type file
    path %s/buf
    flush_mode immediate
    retry_wait 0.3
    retry_max_interval 0.5
    retry_forever true
    chunk_limit_size 2k
    total_limit_size 6k
  </buffer>
</match>
""" % (fwd, prom, blocker, d)
    with Weir(conf, workdir=d) as w:
        w.start([fwd, prom])
        s = AckSender(fwd, tag="h.t")
        t_sent = time.time()
        assert s.send([1, 2], time.time() + 10), w.log()  # acked: durable in the buffer
        lab = dict(plugin_id="broken", type="file")
        m = wait_for(lambda: (lambda m: m if metric(m, "fluentd_output_status_retry_count", **lab) >= 2
                              else None)(scrape(prom)), what="retries")
        assert metric(m, "fluentd_output_status_num_errors", **lab) >= 2
        assert metric(m, "weir_output_failing_seconds", **lab) > 0
        # the last failure is one of those just seen; nothing was delivered yet
        assert t_sent <= metric(m, "weir_output_last_error_timestamp_seconds", **lab) <= time.time()
        assert metric(m, "weir_output_last_success_timestamp_seconds", **lab) == 0
        st, _, body, _ = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(http_get(prom, "/healthz")),
                                  what="503")
        text = body.decode()
        assert text.startswith("unhealthy\n"), text
        assert "output broken: every delivery has failed for" in text, text
        assert "cannot open" in text, text  # the output's own last error
        assert "buffer is full" not in text, text
        # fill the buffer past total_limit_size: a second reason, and backpressure
        raw = socket.create_connection(("127.0.0.1", fwd))
        for i in range(8):
            raw.sendall(frame("h.t", list(range(100 + 10 * i, 110 + 10 * i)), "f%d" % i))
        st, _, body, _ = wait_for(lambda: (lambda r: r if b"buffer is full" in r[2] else None)(
            http_get(prom, "/healthz")), what="buffer full")
        assert st == 503
        assert metric(scrape(prom), "weir_output_buffer_full", **lab) == 1
        # the output recovers: everything is delivered and /healthz says ok again
        os.unlink(blocker)
        t_fixed = time.time()
        wait_for(lambda: http_get(prom, "/healthz")[0] == 200, timeout=30, what="200 again")
        m = wait_for(lambda: (lambda m: m if metric(m, "fluentd_output_status_buffer_total_bytes", **lab) == 0
                              else None)(scrape(prom)), timeout=30, what="empty buffer")
        assert metric(m, "weir_output_failing_seconds", **lab) == 0
        assert metric(m, "weir_output_buffer_full", **lab) == 0
        assert metric(m, "weir_output_delivered_records_total", **lab) == 82
        # delivered after the fix, and after the last failure, which stays for the operator
        last_ok = metric(m, "weir_output_last_success_timestamp_seconds", **lab)
        last_err = metric(m, "weir_output_last_error_timestamp_seconds", **lab)
        assert t_fixed <= last_ok <= time.time() and t_sent <= last_err <= last_ok, (last_ok,
                                                                                      last_err)
        raw.close()
        s.close()
        assert w.stop() == 0
    lines = 0
    for root, _, files in os.walk(os.path.join(blocker, "sub")):
        for f in files:
            with open(os.path.join(root, f)) as fh:
                lines += sum(1 for _ in fh)
    assert lines == 82, lines
    # one warning per failed try, not per event
    assert w.log().count("failed to flush") < 100, w.log()


def test_tls_scrape_and_handshake_failures_counted():
    d = tempfile.mkdtemp(prefix="weir-metrics-tls-")
    keys = os.path.join(d, "keys")
    pw = make_certs(keys)
    fwd, prom = free_port(), free_port()
    tls = """  <transport tls>
    cert_path %s/server.crt
    private_key_path %s/server.key
    private_key_passphrase "#{ENV['KEY_PASS']}"
  </transport>""" % (keys, keys)
    conf = """
<source>
  @type forward
  @id tls_in
  bind 127.0.0.1
  port %d
%s
</source>
<source>
  @type prometheus
  bind 127.0.0.1
  port %d
%s
</source>
<match **>
  @type null
</match>
""" % (fwd, tls, prom, tls)
    with Weir(conf, workdir=d, env={"KEY_PASS": pw}) as w:
        w.start([fwd, prom])
        for _ in range(2):  # plain bytes on a TLS port: a failed handshake each
            c = socket.create_connection(("127.0.0.1", fwd), timeout=5)
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                while c.recv(100):
                    pass
            except OSError:
                pass
            c.close()
        ctx = ssl.create_default_context(cafile=os.path.join(keys, "ca.crt"))
        m = wait_for(lambda: (lambda r: parse_metrics(r[2].decode()) if r[0] == 200 else None)(
            http_get(prom, "/metrics", tls_ctx=ctx)), what="TLS scrape")
        assert metric(m, "weir_input_tls_handshake_failures_total", plugin_id="tls_in",
                      type="forward") == 2, m
        w.stop()
    assert pw not in w.log()


def write_conf(text):
    d = tempfile.mkdtemp(prefix="weir-metrics-conf-")
    p = os.path.join(d, "fluent.conf")
    with open(p, "w") as f:
        f.write(text)
    return p


def test_configuration_errors_are_clear():
    cases = [
        ("<source>\n @type prometheus\n content_encoding deflate\n</source>", "content_encoding"),
        ("<source>\n @type prometheus\n <ssl>\n enable true\n </ssl>\n</source>", "<transport tls>"),
        ("<source>\n @type prometheus\n metrics_path metrics\n</source>", "must start with '/'"),
        ("<source>\n @type prometheus\n metrics_path /\n</source>", "is taken by weir"),
        ("<source>\n @type prometheus\n aggregated_metrics_path /status/x\n</source>",
         "is taken by weir"),
        ("<source>\n @type prometheus\n health_failing_threshold 0\n</source>", "greater than 0"),
        ("<source>\n @type prometheus_monitor\n <labels>\n host x\n </labels>\n</source>",
         "<labels>"),
        ("<source>\n @type monitor_agent\n tag monitor.metrics\n</source>", "does not emit"),
        ("<source>\n @type monitor_agent\n bogus 1\n</source>", "bogus"),
        ("<system>\n <log>\n format yaml\n </log>\n</system>", "format"),
        ("<system>\n <log>\n rotate_age 5\n </log>\n</system>", "stderr only"),
        ("<system>\n <log>\n format json\n colour true\n </log>\n</system>", "colour"),
        ("<source>\n @type forward\n @id same\n</source>\n<match **>\n @type null\n @id same\n"
         "</match>", "@id same is used by another plugin"),
    ]
    for text, expect in cases:
        rc, err = dry_run(write_conf(text + "\n<match **>\n @type null\n</match>\n"
                                     if "<match" not in text else text))
        assert rc == 1 and expect in err, (text, rc, err)
    ok = """<system>\n <log>\n format json\n time_format %H:%M:%S\n </log>\n</system>
<source>\n @type prometheus_output_monitor\n interval 5\n gauge_all false\n</source>
<source>\n @type monitor_agent\n include_config false\n include_retry false\n</source>
<match **>\n @type null\n</match>\n"""
    rc, err = dry_run(write_conf(ok))
    assert rc == 0, err


def test_secrets_masked_in_monitor_agent_and_start_log():
    """Credentials in URLs (proxy_uri, sts_http_proxy) and external_id never appear in clear:
    not in monitor_agent's "config", not in the configuration logged at start."""
    agent = free_port()
    conf = """
<source>
  @type monitor_agent
  bind 127.0.0.1
  port %d
</source>
<match **>
  @type s3
  @id out_s3
  s3_bucket b
  s3_region us-east-1
  s3_endpoint http://127.0.0.1:9
  force_path_style true
  check_apikey_on_start false
  check_bucket false
  aws_key_id AKIAEXAMPLE
  aws_sec_key awssecretkey
  proxy_uri http://proxyuser:proxypass1@127.0.0.1:9
  <assume_role_credentials>
    role_arn arn:aws:iam::123456789012:role/r
    role_session_name s
    external_id extid-2718
    sts_http_proxy http://stsuser:stspass2@127.0.0.1:9
  </assume_role_credentials>
  <buffer>
    @type memory
  </buffer>
</match>
""" % agent
    with Weir(conf) as w:
        w.start([agent])
        _, _, body, _ = http_get(agent, "/api/plugins.json")
        w.stop()
    plugins = {p["plugin_id"]: p for p in json.loads(body)["plugins"]}
    cfg = plugins["out_s3"]["config"]
    assert cfg["proxy_uri"] == "http://proxyuser:xxxxxx@127.0.0.1:9", cfg
    assert cfg["aws_sec_key"] == "xxxxxx", cfg
    log = w.log()
    for leak in ("proxypass1", "stspass2", "extid-2718", "awssecretkey", "AKIAEXAMPLE"):
        assert leak not in body.decode() and leak not in log, (leak, body, log)
    assert "proxy_uri http://proxyuser:xxxxxx@127.0.0.1:9" in log, log
    assert "sts_http_proxy http://stsuser:xxxxxx@127.0.0.1:9" in log, log
    assert "external_id xxxxxx" in log, log


if __name__ == "__main__":
    run_tests([
        test_counts_match_what_was_sent_and_delivered,
        test_http_details,
        test_healthz_follows_a_failing_output,
        test_tls_scrape_and_handshake_failures_counted,
        test_configuration_errors_are_clear,
        test_secrets_masked_in_monitor_agent_and_start_log,
    ])
