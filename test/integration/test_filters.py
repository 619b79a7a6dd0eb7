"""<filter> @type grep, record_transformer and stdout end to end, and the routing of filters.

Each plugin runs the configuration from Fluentd's documentation for it; the records of the docs
go in through real clients (curl to the HTTP input, Python's fluent-logger and raw msgpack to
the forward input) and are read back from the files @type file writes, as a user would. The
routing tests follow Fluentd's rules: filters apply in file order, only before the <match> that
takes the tag, inside a <label> for the events routed there, and a filter that drops every
event still lets the sender's acknowledgement through."""

import glob
import json
import os
import re
import socket
import subprocess
import tempfile
import time

import msgpack
from fluent import sender

from fwdclient import AckSender
from weirtest import Weir, dry_run, free_port, run_tests, wait_for

SENTINEL = "end-of-test"


def conf(sources, body, out_dir, match="**"):
    """`sources`, then `body` (filters, labels), then every event left into JSON lines under
    out_dir/<tag>.*.log, written as soon as they arrive."""
    return "\n".join([sources, body,
                      "<match %s>" % match,
                      "  @type file",
                      "  path %s/${tag}" % out_dir,
                      "  <format>", "    @type json", "  </format>",
                      "  <buffer tag>", "    @type memory", "    flush_mode immediate",
                      "  </buffer>",
                      "</match>", ""])


def http_source(port):
    return "<source>\n  @type http\n  port %d\n  bind 127.0.0.1\n</source>" % port


def forward_source(port):
    return "<source>\n  @type forward\n  port %d\n  bind 127.0.0.1\n</source>" % port


def curl_json(port, tag, record):
    """POSTs one JSON record with curl; returns the HTTP status."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                          "-H", "Content-Type: application/json", "-d", json.dumps(record),
                          "http://127.0.0.1:%d/%s" % (port, tag)],
                         capture_output=True, check=True, timeout=30)
    return int(out.stdout)


def records(out_dir, tag):
    """The records in the files of `tag`, in order."""
    recs = []
    name = re.compile(re.escape(tag) + r"(\.\d{8})?_\d+\.log$")
    files = [f for f in glob.glob(os.path.join(out_dir, "*")) if name.match(os.path.basename(f))]
    for f in sorted(files, key=lambda f: int(re.search(r"_(\d+)\.log$", f).group(1))):
        with open(f) as fh:
            recs += [json.loads(line) for line in fh]
    return recs


def until_sentinel(out_dir, tag, key="message"):
    """The records of `tag` once the sentinel (sent last, never filtered) is among them,
    without it."""
    recs = wait_for(lambda: [r for r in records(out_dir, tag) if r.get(key) == SENTINEL]
                    and records(out_dir, tag), what="the sentinel in %s" % tag)
    return [r for r in recs if r.get(key) != SENTINEL]


def fluent_send(port, tag, recs, ts=1700000000):
    """Sends records with Python's fluent-logger (a real forward client), one event each."""
    s = sender.FluentSender(tag.split(".", 1)[0], host="127.0.0.1", port=port)
    try:
        for r in recs:
            label = tag.split(".", 1)[1] if "." in tag else None
            assert s.emit_with_time(label, ts, r), s.last_error
    finally:
        s.close()


GREP_DOC = """<filter foo.bar>
  @type grep

  <regexp>
    key message
    pattern /cool/
  </regexp>

  <regexp>
    key hostname
    pattern /^web\\d+\\.example\\.com$/
  </regexp>

  <exclude>
    key message
    pattern /uncool/
  </exclude>
</filter>"""

GREP_DOC_KEPT = [
    {"message": "It's cool outside today", "hostname": "web001.example.com"},
    {"message": "That's not cool", "hostname": "web1337.example.com"},
]
GREP_DOC_DROPPED = [
    {"message": "I am cool but you are uncool", "hostname": "db001.example.com"},
    {"hostname": "web001.example.com"},
    {"message": "It's cool outside today"},
]


def test_grep_doc_example():
    """Fluentd's grep example through the HTTP input with curl: the two records the docs keep
    arrive, in order, the three it filters out do not, and every POST is answered 200."""
    d = tempfile.mkdtemp(prefix="weir-grep-")
    port = free_port()
    sentinel = {"message": "cool " + SENTINEL, "hostname": "web9.example.com"}
    with Weir(conf(http_source(port), GREP_DOC, d + "/out")) as w:
        w.start(wait_ports=[port])
        for r in GREP_DOC_KEPT[:1] + GREP_DOC_DROPPED + GREP_DOC_KEPT[1:] + [sentinel]:
            assert curl_json(port, "foo.bar", r) == 200
        wait_for(lambda: sentinel in records(d + "/out", "foo.bar"), what="the sentinel")
        assert w.stop() == 0
    got = records(d + "/out", "foo.bar")
    assert got == GREP_DOC_KEPT + [sentinel], got


def test_grep_hostile_backtracking():
    """A pattern that backtracks exponentially on a value a peer chose: the event is handled
    as not matching the <regexp> (dropped), the log says why, and weir goes on answering and
    storing the events after it."""
    d = tempfile.mkdtemp(prefix="weir-grep-bt-")
    port = free_port()
    body = ("<filter t>\n  @type grep\n  <regexp>\n    key m\n    pattern /^(a+)+$/\n"
            "  </regexp>\n</filter>")
    with Weir(conf(http_source(port), body, d + "/out")) as w:
        w.start(wait_ports=[port])
        hostile = {"m": "a" * 5000 + "b"}
        for _ in range(20):
            assert curl_json(port, "t", hostile) == 200
        assert curl_json(port, "t", {"m": "aaaa"}) == 200
        got = wait_for(lambda: records(d + "/out", "t"), what="the matching event")
        assert got == [{"m": "aaaa"}], got
        log = w.log()
        assert "gave up on a value of 5001 bytes (match limit exceeded): counted as not " \
            "matching" in log, log
        assert w.stop() == 0


RT_DOCS = [
    # (configuration, tag, record in, record out) from Fluentd's record_transformer page
    ("""<filter foo.bar>
  @type record_transformer
  <record>
    hostname "#{Socket.gethostname}"
    tag ${tag}
  </record>
</filter>""", "foo.bar", {"message": "hello world!"},
     {"message": "hello world!", "hostname": "HOST", "tag": "foo.bar"}),
    ("""<filter foo.bar>
  @type record_transformer
  <record>
    message yay, ${record["message"]}
  </record>
</filter>""", "foo.bar", {"message": "hello world!"}, {"message": "yay, hello world!"}),
    ("""<filter web.*>
  @type record_transformer
  <record>
    service_name ${tag_parts[1]}
  </record>
</filter>""", "web.auth", {"user_id": 1, "status": "ok"},
     {"user_id": 1, "status": "ok", "service_name": "auth"}),
    ("""<filter foo.bar>
  @type record_transformer
  remove_keys hostname,$.kubernetes.pod_id
</filter>""", "foo.bar",
     {"hostname": "db001.internal.example.com",
      "kubernetes": {"pod_name": "mypod-8f6bb798b-xxddw",
                     "pod_id": "b1187408-729a-11ea-9a13-fa163e3bcef1"}},
     {"kubernetes": {"pod_name": "mypod-8f6bb798b-xxddw"}}),
]


def test_record_transformer_doc_examples():
    """Each record_transformer example of Fluentd's docs, its record sent with fluent-logger to
    the forward input, read back from the file: the docs' output record, field for field and in
    order. "#{Socket.gethostname}" is the configuration's Ruby interpolation, which weir does
    not run; the docs' own first example shows it, so this test writes ${hostname} there."""
    host = socket.gethostname()
    for i, (body, tag, rec_in, rec_out) in enumerate(RT_DOCS):
        d = tempfile.mkdtemp(prefix="weir-rt-")
        port = free_port()
        body = body.replace('"#{Socket.gethostname}"', "${hostname}")
        with Weir(conf(forward_source(port), body, d + "/out")) as w:
            w.start(wait_ports=[port])
            fluent_send(port, tag, [rec_in])
            got = wait_for(lambda: records(d + "/out", tag), what="example %d" % i)
            want = json.loads(json.dumps(rec_out).replace('"HOST"', json.dumps(host)))
            assert list(got[0].items()) == list(want.items()), (i, got, want)
            assert w.stop() == 0


def test_record_transformer_time_and_renew():
    """renew_record with keep_keys, renew_time_key (the event's time becomes the field's, as
    the <inject> time_key of the output shows) and remove_keys after it, ${time} in the
    process zone, and auto_typecast keeping an integer an integer."""
    d = tempfile.mkdtemp(prefix="weir-rt2-")
    port = free_port()
    body = """<filter app.**>
  @type record_transformer
  renew_record true
  keep_keys user,count
  renew_time_key ts
  remove_keys ts
  <record>
    ts ${record["when"]}
    seen ${time}
    n ${record["count"]}
    where ${tag_suffix[1]}
  </record>
</filter>"""
    text = conf(forward_source(port), body, d + "/out").replace(
        "  <format>", "  <inject>\n    time_key t\n    time_type unixtime\n  </inject>\n"
        "  <format>")
    with Weir(text, env={"TZ": "Asia/Tokyo"}) as w:
        w.start(wait_ports=[port])
        fluent_send(port, "app.x.y", [{"user": "u", "count": 3, "when": 1600000000,
                                       "noise": "gone"}], ts=1700000000)
        got = wait_for(lambda: records(d + "/out", "app.x.y"), what="the event")
        assert got == [{"user": "u", "count": 3, "seen": "2023-11-15 07:13:20 +0900", "n": 3,
                        "where": "x.y", "t": 1600000000}], got
        assert w.stop() == 0


def test_record_transformer_enable_ruby_refused():
    """enable_ruby true is refused by name, at --dry-run, with what to write instead."""
    d = tempfile.mkdtemp(prefix="weir-rt3-")
    path = os.path.join(d, "fluent.conf")
    with open(path, "w") as f:
        f.write(conf(forward_source(free_port()),
                     "<filter **>\n  @type record_transformer\n  enable_ruby true\n  <record>\n"
                     "    avg ${record[\"total\"] / record[\"count\"]}\n  </record>\n</filter>",
                     d + "/out"))
    rc, log = dry_run(path)
    assert rc == 1, (rc, log)
    assert re.search(r"fluent\.conf:8:3: enable_ruby true: weir runs no Ruby", log), log
    assert '${record["key"]}' in log, log


def test_stdout_filter_doc_example():
    """<filter pattern> @type stdout, as in Fluentd's docs: each event printed as
    'time tag: record' on standard output, and the same events passed on to the file."""
    d = tempfile.mkdtemp(prefix="weir-stdout-")
    port = free_port()
    with Weir(conf(forward_source(port), "<filter **>\n  @type stdout\n</filter>",
                   d + "/out"), env={"TZ": "UTC"}) as w:
        w.start(wait_ports=[port])
        recs = [{"field1": "value1", "field2": "value2"}, {"n": 2}]
        fluent_send(port, "tag", recs)
        printed = w.wait_events(2)
        assert [(t, r) for _, _, t, r in printed] == [("tag", recs[0]), ("tag", recs[1])], printed
        assert printed[0][0].startswith("2023-11-14 22:13:20.000000000 "), printed
        assert wait_for(lambda: len(records(d + "/out", "tag")) == 2 and
                        records(d + "/out", "tag")) == recs
        assert w.stop() == 0


def test_routing_order_match_and_label():
    """Fluentd's routing: (1) filters apply in file order: a record_transformer that adds a
    field before a grep on it keeps the event, the same pair the other way round drops it;
    (2) a <filter> after the <match> that takes the tag does not apply; (3) a <filter> inside a
    <label> applies to the events a source routes there, and the top level's do not."""
    d = tempfile.mkdtemp(prefix="weir-route-")
    port, lport = free_port(), free_port()
    add = ("<filter %s>\n  @type record_transformer\n  <record>\n    mark %s\n  </record>\n"
           "</filter>")
    need = ("<filter %s>\n  @type grep\n  <regexp>\n    key mark\n    pattern /^x$/\n"
            "  </regexp>\n</filter>")
    out = d + "/out"
    body = "\n".join([
        add % ("ordered.**", "x"), need % "ordered.**",          # add, then grep: kept
        need % "reversed.**", add % ("reversed.**", "x"),        # grep, then add: dropped
        "<match late.**>\n  @type file\n  path %s/${tag}\n  <format>\n    @type json\n"
        "  </format>\n  <buffer tag>\n    @type memory\n    flush_mode immediate\n  </buffer>\n"
        "</match>" % out,
        add % ("late.**", "late"),                              # after its <match>: unused
        ("<filter labelled.**>\n  @type record_transformer\n  <record>\n    top yes\n"
         "  </record>\n</filter>"),                            # top level: not for @L
        "<label @L>",
        add % ("**", "in-label"),
        "  <match **>\n    @type file\n    path %s/${tag}\n    <format>\n      @type json\n"
        "    </format>\n    <buffer tag>\n      @type memory\n      flush_mode immediate\n"
        "    </buffer>\n  </match>" % out,
        "</label>",
    ])
    sources = forward_source(port) + "\n" + (
        "<source>\n  @type forward\n  port %d\n  bind 127.0.0.1\n  @label @L\n</source>" % lport)
    with Weir(conf(sources, body, out)) as w:
        w.start(wait_ports=[port, lport])
        for tag in ("ordered.a", "reversed.a", "late.a", "ordered.last"):
            fluent_send(port, tag, [{"message": tag}])
        fluent_send(lport, "labelled.a", [{"message": "labelled"}])
        wait_for(lambda: records(out, "ordered.last") and records(out, "labelled.a"),
                 what="the last events")
        assert w.stop() == 0  # finishes what is in flight: the files are final
    assert records(out, "ordered.a") == [{"message": "ordered.a", "mark": "x"}]
    assert records(out, "reversed.a") == []
    assert records(out, "late.a") == [{"message": "late.a"}]
    assert records(out, "labelled.a") == [{"message": "labelled", "mark": "in-label"}]


def test_filter_dropping_everything_still_acks():
    """A grep that drops every event: the forward sender's chunk is acknowledged (nothing is
    left to store, so nothing can be lost), HTTP answers 200, and no file is written."""
    d = tempfile.mkdtemp(prefix="weir-dropall-")
    port, hport = free_port(), free_port()
    body = ("<filter **>\n  @type grep\n  <exclude>\n    key payload\n    pattern /./\n"
            "  </exclude>\n</filter>")
    with Weir(conf(forward_source(port) + "\n" + http_source(hport), body, d + "/out")) as w:
        w.start(wait_ports=[port, hport])
        s = AckSender(port, tag="drop.all")
        assert s.send(list(range(100)), time.time() + 15), "no ack for a fully filtered chunk"
        assert s.acked == set(range(100))
        s.close()
        assert curl_json(hport, "drop.http", {"payload": "x"}) == 200
        assert w.stop() == 0
    assert glob.glob(d + "/out/*") == [], glob.glob(d + "/out/*")


def test_filter_errors_name_the_line():
    """Configuration errors of the filters come with file:line:col and Fluentd's wording."""
    d = tempfile.mkdtemp(prefix="weir-ferr-")
    cases = [
        ("<filter **>\n  @type grep\n  <and>\n    <regexp>\n      key a\n      pattern /x/\n"
         "    </regexp>\n    <exclude>\n      key b\n      pattern /y/\n    </exclude>\n"
         "  </and>\n</filter>", "Do not specify both <regexp> and <exclude> in <and>"),
        ("<filter **>\n  @type grep\n  <regexp>\n    key a\n    pattern /(/\n  </regexp>\n"
         "</filter>", "invalid regexp /(/: missing closing parenthesis"),
        ("<filter **>\n  @type record_transformer\n  keep_keys a\n</filter>",
         "`renew_record` must be true to use `keep_keys`"),
    ]
    for text, want in cases:
        path = os.path.join(d, "fluent.conf")
        with open(path, "w") as f:
            f.write(conf(forward_source(free_port()), text, d + "/out"))
        rc, log = dry_run(path)
        assert rc == 1 and want in log and "fluent.conf:" in log, (rc, log)


if __name__ == "__main__":
    run_tests([
        test_grep_doc_example,
        test_grep_hostile_backtracking,
        test_record_transformer_doc_examples,
        test_record_transformer_time_and_renew,
        test_record_transformer_enable_ruby_refused,
        test_stdout_filter_doc_example,
        test_routing_order_match_and_label,
        test_filter_dropping_everything_still_acks,
        test_filter_errors_name_the_line,
    ])
