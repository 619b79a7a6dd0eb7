"""The status page at / on the prometheus source's port, looked at in a real browser (Debian's
headless Chromium) while real senders load weir: forward with acks and HTTP, into an S3 output
backed by s3rver behind the signature-checking proxy of test_s3_output.py.

The page refreshes itself; the test never reloads it. What it shows is checked against what
the test sent and what arrived in the bucket (events per input, events delivered, chunks ==
objects, an empty buffer afterwards), against what the test made S3 do (a failure shown with its
time and S3's own error text, retries, a chunk given up as a backup), and against /metrics read
at the same moment (one source of truth). A hostile error text from "S3" must appear as text,
never as markup. The HTTP answers for / carry the headers that keep the page self-contained.
A screenshot is kept at $WEIR_BUILD_DIR/artifacts/status-page.png."""

import calendar
import json
import os
import re
import socket
import threading
import time

import test_s3_output as ts3  # its WEIRS list, which cleanup() stops
from browser import Browser, wait_shown
from test_s3_output import (BASE_ENV, STATIC, cleanup, fwd_send, gz_lines, match_conf, records,
                            s3, stop_weir, tmpdir)
from weirtest import Weir, free_port, http_get, http_post, metric, run_tests, scrape

BUCKET = "status"
OUT = "s3_audit"
ARTIFACTS = os.path.join(os.environ.get("WEIR_BUILD_DIR", os.path.join(
    os.path.dirname(__file__), "../../build")), "artifacts")
SHOWN_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC \((.+) ago\)$")


def start(metrics_path="/prom/metrics"):
    d = tmpdir("weir-status-")
    w_ports = {"fwd": free_port(), "http": free_port(), "prom": free_port()}
    conf = """
<source>
  @type forward
  @id in_fwd
  bind 127.0.0.1
  port %(fwd)d
</source>
<source>
  @type http
  @id in_http
  bind 127.0.0.1
  port %(http)d
</source>
<source>
  @type prometheus
  @id prom
  bind 127.0.0.1
  port %(prom)d
  metrics_path %(path)s
</source>
""" % dict(w_ports, path=metrics_path) + match_conf(d, OUT, BUCKET, STATIC)
    env = dict(BASE_ENV)
    env["HOME"] = d
    w = Weir(conf, env=env, workdir=d)
    ts3.WEIRS.append(w)
    w.start(list(w_ports.values()))
    w.ports = w_ports
    return w


def sel(plugin, key):
    return '[data-plugin="%s"] [data-k="%s"]' % (plugin, key)


def shown_epoch(text):
    """The time a "2026-12-03 13:05:00 UTC (4 s ago)" text shows, as Unix seconds."""
    m = SHOWN_TIME.match(text)
    assert m, "not a time with its age: %r" % text
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))


def utc(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def test_page_answers_self_contained():
    """GET and HEAD / answer the page with headers that forbid loading anything from elsewhere
    and caching; its script and style come from weir itself; the configured metrics path is
    what the page reads; other paths are still 404."""
    w = start()
    try:
        port = w.ports["prom"]
        st, h, body, _ = http_get(port, "/")
        assert st == 200 and h["content-type"] == "text/html; charset=utf-8", (st, h)
        csp = h["content-security-policy"]
        for d in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                  "connect-src 'self'", "frame-ancestors 'none'"):
            assert d in csp, csp
        assert h["cache-control"] == "no-store" and h["x-content-type-options"] == "nosniff", h
        assert "date" in h, h
        html = body.decode()
        assert 'data-metrics="/prom/metrics"' in html, html
        # nothing from another origin: every src/href is local (or the empty data: icon)
        refs = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert refs and all(r.startswith("/") or r == "data:," for r in refs), refs
        # HEAD: the same headers, no body
        st, h, rest, after = http_get(port, "/", method="HEAD")
        assert st == 200 and rest == b"" and after == b"", (st, rest, after)
        assert h["content-length"] == str(len(body)), h
        assert h["content-security-policy"].startswith("default-src 'none'"), h
        for path, ctype in (("/status/page.js", "text/javascript; charset=utf-8"),
                            ("/status/page.css", "text/css; charset=utf-8"),
                            ("/status/errors.json", "application/json")):
            st, h, body, _ = http_get(port, path)
            assert st == 200 and h["content-type"] == ctype and body, (path, st, h)
            assert h["content-security-policy"] == csp, h
        st, _, body, _ = http_get(port, "/status/errors.json")
        assert json.loads(body) == {"outputs": {OUT: {"type": "s3", "last_error": None,
                                                      "time": 0}}}, body
        st, _, _, _ = http_get(port, "/status/nothing")
        assert st == 404
        st, _, _, _ = http_get(port, "/metrics")  # moved to /prom/metrics by the config
        assert st == 404
    finally:
        stop_weir(w)


class Load:
    """Senders in threads, forward (acked) and HTTP, until stopped; counts what was accepted."""

    def __init__(self, w):
        self.w = w
        self.sent = {"in_fwd": 0, "in_http": 0}
        self.failed = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.fwd), threading.Thread(target=self.http)]
        for t in self.threads:
            t.start()

    def fwd(self):
        i = 0
        while not self.stop.is_set():
            if fwd_send(self.w.ports["fwd"], "audit.fwd", records("f", 50, i)):
                self.sent["in_fwd"] += 50
            else:
                self.failed.append("forward batch %d not acknowledged" % i)
            i += 50

    def http(self):
        i = 0
        while not self.stop.is_set():
            try:
                http_post(self.w.ports["http"], "audit.http",
                          json.dumps(records("h", 20, i)).encode(), "application/json")
                self.sent["in_http"] += 20
            except Exception as e:  # noqa: BLE001 -- reported by finish()
                self.failed.append("http batch %d: %r" % (i, e))
            i += 20

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not self.failed, self.failed
        return dict(self.sent)


def positive_rate(text):
    try:
        return float(text) > 0
    except ValueError:
        return False


def test_page_shows_what_was_sent_delivered_and_failed():
    srv = s3()
    w = start()
    b = Browser()
    try:
        port = w.ports["prom"]
        b.open("http://127.0.0.1:%d/" % port)
        wait_shown(b, "#state", lambda t: t.startswith("updated "), what="a first refresh")
        assert b.text(sel(OUT, "last_success")) == "never"
        assert b.text(sel(OUT, "last_error_time")) == "never"

        # -- under load: both inputs send while the page refreshes; it shows their rates
        t_load = time.time()
        load = Load(w)
        try:
            wait_shown(b, sel("in_fwd", "rate"), positive_rate, what="a forward rate above 0")
            wait_shown(b, sel("in_http", "rate"), positive_rate, what="an HTTP rate above 0")
        finally:
            sent = load.finish()
        total = sent["in_fwd"] + sent["in_http"]
        assert sent["in_fwd"] > 0 and sent["in_http"] > 0, sent

        # every event counted, per input, as sent
        for inp in ("in_fwd", "in_http"):
            wait_shown(b, sel(inp, "events"), lambda t, n=sent[inp]: t == str(n),
                       what="%d events for %s" % (sent[inp], inp))
        # every event delivered: the bucket has them all, the page says so, the buffer is empty
        objs = srv.wait_objects(BUCKET, lambda o: gz_lines(o) >= total, timeout=60)
        assert gz_lines(objs) == total, (gz_lines(objs), total)
        want = "%d events in %d chunks" % (total, len(objs))
        wait_shown(b, sel(OUT, "delivered"), lambda t: t == want, what=want)
        wait_shown(b, sel(OUT, "queued"), lambda t: t == "0 chunks, 0 B", what="an empty queue")
        wait_shown(b, sel(OUT, "staged"), lambda t: t == "0 chunks, 0 B", what="nothing staged")
        assert b.text(sel(OUT, "emitted")) == str(total)
        assert b.text(sel(OUT, "retries")) == "0" and b.text(sel(OUT, "backups")) == "0"
        assert b.text(sel(OUT, "last_error_time")) == "never"
        # the last upload: after the load began, before now, the time /metrics gives
        m = scrape(port, "/prom/metrics")
        last_ok = metric(m, "weir_output_last_success_timestamp_seconds", plugin_id=OUT,
                         type="s3")
        shown = wait_shown(b, sel(OUT, "last_success"), lambda t: t.startswith(utc(last_ok)),
                           what="the last upload at %s" % utc(last_ok))
        assert int(t_load) <= shown_epoch(shown) <= time.time(), (shown, t_load)

        # -- connections: two forward senders hold their connections open
        conns = [socket.create_connection(("127.0.0.1", w.ports["fwd"])) for _ in range(2)]
        wait_shown(b, sel("in_fwd", "connections"), lambda t: t == "2", what="2 connections")
        for c in conns:
            c.close()
        wait_shown(b, sel("in_fwd", "connections"), lambda t: t == "0", what="0 connections")

        # -- S3 fails (a server error whose text is markup), then recovers: the page shows the
        # error as text with its time, the retries, and the delivery after it
        hostile = "Boom<img src=x onerror=\"document.title='pwned'\">"
        t_fail = time.time()
        srv.state.inject(r"^PUT /%s/logs/" % BUCKET, count=6, kind="error", status=500,
                         code="Boom&lt;img src=x onerror=&quot;document.title='pwned'&quot;&gt;")
        assert fwd_send(w.ports["fwd"], "audit.fwd", records("late", 7))
        err = wait_shown(b, sel(OUT, "last_error"), lambda t: hostile in t,
                         what="the S3 error text")
        objs = srv.wait_objects(BUCKET, lambda o: gz_lines(o) >= total + 7, timeout=60)
        assert gz_lines(objs) == total + 7
        want = "%d events in %d chunks" % (total + 7, len(objs))
        wait_shown(b, sel(OUT, "delivered"), lambda t: t == want, what=want)
        wait_shown(b, sel(OUT, "queued"), lambda t: t == "0 chunks, 0 B", what="an empty queue")
        # now nothing moves: the page, /metrics and errors.json must agree exactly
        m = scrape(port, "/prom/metrics")
        retries = metric(m, "fluentd_output_status_retry_count", plugin_id=OUT, type="s3")
        err_t = metric(m, "weir_output_last_error_timestamp_seconds", plugin_id=OUT, type="s3")
        last_ok = metric(m, "weir_output_last_success_timestamp_seconds", plugin_id=OUT,
                         type="s3")
        assert retries >= 1, retries
        wait_shown(b, sel(OUT, "retries"), lambda t: t == str(int(retries)),
                   what="%d retries" % retries)
        shown = wait_shown(b, sel(OUT, "last_error_time"), lambda t: t.startswith(utc(err_t)),
                           what="the error's time %s" % utc(err_t))
        assert int(t_fail) <= shown_epoch(shown) <= time.time(), (shown, t_fail)
        wait_shown(b, sel(OUT, "last_success"), lambda t: t.startswith(utc(last_ok)),
                   what="the upload after the error")
        assert last_ok >= err_t, (last_ok, err_t)
        _, _, body, _ = http_get(port, "/status/errors.json")
        errors = json.loads(body)["outputs"][OUT]
        assert abs(errors["time"] - err_t) < 0.01, (errors, err_t)
        assert b.text(sel(OUT, "last_error")) == errors["last_error"], (err, errors)
        assert hostile in errors["last_error"] and "500" in errors["last_error"], errors
        # shown as text: no element was made from it, and its handler never ran
        assert b.count("#outputs img") == 0
        assert b.js("return document.title") == "weir status"

        # -- a chunk S3 can never store goes to backup at once; the page counts it
        srv.state.inject(r"^PUT /%s/logs/" % BUCKET, count=1, kind="error", status=400,
                         code="EntityTooLarge")
        assert fwd_send(w.ports["fwd"], "audit.fwd", records("big", 3))
        wait_shown(b, sel(OUT, "backups"), lambda t: t == "1", what="1 backup")
        wait_shown(b, sel(OUT, "last_error"), lambda t: "EntityTooLarge" in t,
                   what="the EntityTooLarge error")
        m = scrape(port, "/prom/metrics")
        assert metric(m, "weir_output_backup_chunks_total", plugin_id=OUT, type="s3") == 1

        # -- the process: uptime and descriptors as /metrics has them
        start_t = m[("process_start_time_seconds", frozenset())]
        up = b.text('[data-k="uptime"]')
        assert re.match(r"^\d+ (s|min \d+ s)$", up), up
        up_s = int(up.split()[0]) * (60 if "min" in up else 1)
        assert up_s <= time.time() - start_t + 1, (up, start_t)
        fds = b.text('[data-k="fds"]')
        assert re.match(r"^\d+ of %d$" % m[("process_max_fds", frozenset())], fds), fds
        assert re.match(r"^\d+(\.\d)? MiB$", b.text('[data-k="rss"]')), b.text('[data-k="rss"]')

        # nothing the page did was refused or failed (CSP violations and script errors land
        # in the console)
        assert b.console_errors() == [], b.console_errors()
        assert b.text("#state").startswith("updated "), b.text("#state")
        b.screenshot(os.path.join(ARTIFACTS, "status-page.png"))
        print("  screenshot: %s" % os.path.join(ARTIFACTS, "status-page.png"))
    finally:
        b.close()
        stop_weir(w)


def main():
    try:
        run_tests([
            test_page_answers_self_contained,
            test_page_shows_what_was_sent_delivered_and_failed,
        ])
    finally:
        cleanup()


if __name__ == "__main__":
    main()
