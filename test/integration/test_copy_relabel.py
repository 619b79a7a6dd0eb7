"""@type copy and @type relabel, on Fluentd's documented examples, with what a user checks:
the records in the files and on stdout, the HTTP answer or the forward ack, and that no
acknowledged event is missing from any store after kill -9, a full store or a reload."""

import glob
import gzip
import json
import os
import random
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import msgpack

from fwdclient import AckSender, frame
from test_s3_output import WEIRS, cleanup, tmpdir
from weirtest import Weir, dry_run, free_port, json_field, metric, run_tests, scrape, wait_for


def start(conf, d, ports=(), out_path=None):
    """A weir on `conf` in `d` (stdout to `out_path` if given), stopped by cleanup() at the
    end if a failed test left it running."""
    w = Weir(conf, workdir=d)
    if out_path:
        w.out_path = out_path
    WEIRS.append(w)
    return w.start(ports)


def post(port, tag, records):
    """POSTs a JSON array to the http input; returns the HTTP status (and body)."""
    req = urllib.request.Request("http://127.0.0.1:%d/%s" % (port, tag),
                                 data=json.dumps(records).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def http_source(port):
    return "<source>\n  @type http\n  port %d\n  bind 127.0.0.1\n</source>\n" % port


def forward_source(port):
    return "<source>\n  @type forward\n  port %d\n  bind 127.0.0.1\n</source>\n" % port


def file_store(path, buf, extra="", arg=""):
    """A <store> writing JSON lines to `path`* through a file buffer at `buf`, flushed at
    shutdown (so a clean stop shows in the files what the store holds)."""
    return ("  <store%s>\n    @type file\n    path %s\n    <format>\n      @type json\n"
            "    </format>\n    <buffer>\n      @type file\n      path %s\n"
            "      flush_mode interval\n      flush_interval 3600\n      flush_at_shutdown true\n"
            "%s    </buffer>\n  </store>\n" % (" " + arg if arg else "", path, buf, extra))


def lines(pattern):
    """The JSON records of every file matching `pattern`, read as a user would (gunzip .gz);
    out_file's default format is "time<TAB>tag<TAB>json"."""
    out = []
    for f in sorted(glob.glob(pattern)):
        opener = gzip.open if f.endswith(".gz") else open
        with opener(f, "rt") as fh:
            for line in fh:
                out.append(line.rstrip("\n").split("\t"))
    return out


def test_copy_docs_example_to_two_files_and_stdout():
    """The example of Fluentd's out_copy page (its Elasticsearch store replaced by a second
    file, which runs here) with a stdout store as people add while debugging: every record
    lands in both files and on stdout, once. One line differs from the page: `@type file` in
    the first <buffer>, which Fluentd's out_file has by default and weir's does not."""
    d = tmpdir("weir-copy-")
    port = free_port()
    conf = http_source(port) + """
<match myevent.file_and_elasticsearch>
  @type copy
  <store>
    @type file
    path %(d)s/myapp
    compress gzip
    <format>
      localtime false
    </format>
    <buffer time>
      @type file
      timekey_wait 10m
      timekey 86400
      timekey_use_utc true
      path %(d)s/myapp
    </buffer>
    <inject>
      time_format %%Y%%m%%dT%%H%%M%%S%%z
      localtime false
    </inject>
  </store>
  <store>
    @type file
    path %(d)s/second/myapp
    <buffer>
      @type file
      path %(d)s/buf2
    </buffer>
  </store>
  <store>
    @type stdout
  </store>
</match>
""" % {"d": d}
    w = start(conf, d, [port])
    sent = [{"event": "user.login", "user": "alice", "seq": i} for i in range(30)]
    for i in range(0, 30, 10):
        status, body = post(port, "myevent.file_and_elasticsearch", sent[i:i + 10])
        assert status == 200, (status, body)
    w.proc.send_signal(signal.SIGUSR1)  # flush now, timekey_wait or not
    first = os.path.join(d, "myapp.*.gz")
    second = os.path.join(d, "second", "myapp.*.log")
    wait_for(lambda: len(lines(first)) == 30 and len(lines(second)) == 30,
             what="30 lines in each file: %s" % sorted(glob.glob(d + "/**", recursive=True)))
    assert w.stop() == 0, w.log()
    for got in (lines(first), lines(second)):
        assert [json.loads(f[2]) for f in got] == sent, got[:3]
        assert {f[1] for f in got} == {"myevent.file_and_elasticsearch"}
    printed = w.stdout_events()
    assert [e[3] for e in printed] == sent, printed[:3]


def copy_with_failing_stdout(d, port, stdout_arg):
    """Three stores: a file, stdout (weir's stdout is /dev/full, so every write fails and the
    store answers an error), another file."""
    return http_source(port) + "<match app.**>\n  @type copy\n" + \
        file_store(d + "/a/events", d + "/bufa") + \
        "  <store%s>\n    @type stdout\n  </store>\n" % stdout_arg + \
        file_store(d + "/b/events", d + "/bufb") + "</match>\n"


def run_failing_stdout(stdout_arg):
    d = tmpdir("weir-copy-err-")
    port = free_port()
    w = start(copy_with_failing_stdout(d, port, stdout_arg), d, [port], out_path="/dev/full")
    status, body = post(port, "app.audit", [{"seq": 1}, {"seq": 2}])
    assert w.stop() == 0, w.log()
    return status, body, json_field(d + "/a/events*.log"), json_field(d + "/b/events*.log"), w


def test_failing_store_without_ignore_error_fails_the_request():
    """Fluentd: an error in a store fails the event, and the stores after it do not get it.
    The sender sees the failure (HTTP 500) and sends again; the store before has a copy."""
    status, body, a, b, w = run_failing_stdout("")
    assert status == 500, (status, body)
    assert a == [1, 2], a
    assert b == [], b


def test_ignore_error_store_fails_alone():
    """<store ignore_error>: the failing store is logged and the event is acknowledged once the
    other stores have it, as in Fluentd's documented example."""
    status, body, a, b, w = run_failing_stdout(" ignore_error")
    assert status == 200, (status, body)
    assert a == [1, 2] and b == [1, 2], (a, b)
    assert "ignore_error: the other stores go on" in w.log(), w.log()
    assert "stdout: write failed: No space left on device" in w.log(), w.log()


def test_failing_stdout_is_logged_once_per_interval():
    """A stdout that cannot be written (a closed pipe, a full disk) fails every batch; the log
    says so once per 5 s, not once per batch."""
    d = tmpdir("weir-copy-err-")
    port = free_port()
    t0 = time.monotonic()
    w = start(copy_with_failing_stdout(d, port, " ignore_error"), d, [port], out_path="/dev/full")
    for i in range(20):
        assert post(port, "app.audit", [{"seq": i}])[0] == 200
    assert w.stop() == 0, w.log()
    intervals = int((time.monotonic() - t0) / 5) + 1  # a line may open each 5 s interval
    assert json_field(d + "/b/events*.log") == list(range(20))
    n = w.log().count("write failed")
    assert 1 <= n <= intervals and n < 20, (n, intervals, w.log())


def test_ignore_if_prev_success_is_a_fallback():
    """Fluentd's ignore_if_prev_success example: the second store takes the events only when
    the first failed. With a working stdout the file stays empty; with a failing one the file
    has every record."""
    for failing in (False, True):
        d = tmpdir("weir-copy-fallback-")
        port = free_port()
        conf = http_source(port) + "<match app.**>\n  @type copy\n" + \
            "  <store ignore_error>\n    @type stdout\n  </store>\n" + \
            file_store(d + "/fallback/events", d + "/buf", arg="ignore_if_prev_success ignore_error") + \
            "</match>\n"
        w = start(conf, d, [port], out_path="/dev/full" if failing else None)
        status, body = post(port, "app.audit", [{"seq": 1}, {"seq": 2}])
        assert status == 200, (status, body)
        assert w.stop() == 0, w.log()
        fallback = json_field(d + "/fallback/events*.log")
        if failing:
            assert fallback == [1, 2], fallback
        else:
            assert fallback == [], fallback
            assert [e[3]["seq"] for e in w.stdout_events()] == [1, 2]


def recv_ack(sock, chunk, timeout):
    """The forward ack for `chunk`, or None when none came within `timeout` seconds; raises
    ConnectionError when weir closes the connection (its answer to a batch it could not
    store)."""
    sock.settimeout(timeout)
    u = msgpack.Unpacker(raw=False)
    try:
        while True:
            data = sock.recv(256)
            if not data:
                raise ConnectionError("weir closed the connection")
            u.feed(data)
            for got in u:
                assert got == {"ack": chunk}, got
                return got
    except socket.timeout:
        return None


class FullStore:
    """A copy of two file stores, the second of which cannot write (the place of its
    directory is taken by a file) and has a small buffer; frames are sent one at a time with
    acks until one finds store_b full. Then `held` is that frame (seqs, chunk), not yet
    acknowledged, and `acked` every seq acknowledged before it."""

    def __init__(self, prefix):
        self.d = d = tmpdir(prefix)
        self.port = free_port()
        self.blocker = os.path.join(d, "b")
        open(self.blocker, "w").close()  # b/events* cannot be created while b is a file
        small = ("      chunk_limit_size 2k\n      total_limit_size 8k\n      retry_wait 0.2s\n"
                 "      retry_max_interval 1s\n      retry_forever true\n")
        conf = forward_source(self.port) + "<match app.**>\n  @type copy\n" + \
            file_store(d + "/a/events", d + "/bufa") + \
            file_store(d + "/b/events", d + "/bufb", extra=small).replace(
                "    @type file\n    path %s/b" % d,
                "    @id store_b\n    @type file\n    path %s/b" % d) + "</match>\n"
        self.conf = conf.replace(
            "flush_interval 3600\n      flush_at_shutdown true\n      chunk_limit",
            "flush_interval 0.2s\n      flush_at_shutdown true\n      chunk_limit")
        self.w = start(self.conf, d, [self.port])
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.acked, self.seq, self.held = [], 0, None
        deadline = time.time() + 60
        while self.held is None:
            assert time.time() < deadline, "store_b never filled up:\n" + self.w.log()
            seqs = list(range(self.seq, self.seq + 10))
            chunk = "c%d" % self.seq
            self.sock.sendall(frame("app.audit", seqs, chunk))
            self.seq += 10
            while True:
                if recv_ack(self.sock, chunk, 1.0):
                    self.acked += seqs
                    break
                if "buffer store_b is full" in self.w.log():
                    self.held = (seqs, chunk)
                    break

    def send_more(self, frames=3):
        """The pipeline goes on: `frames` more frames, each acknowledged."""
        for _ in range(frames):
            seqs = list(range(self.seq, self.seq + 10))
            self.sock.sendall(frame("app.audit", seqs, "c%d" % self.seq))
            assert recv_ack(self.sock, "c%d" % self.seq, 30.0), self.w.log()
            self.acked += seqs
            self.seq += 10

    def stored(self, store):
        return json_field("%s/%s/events*.log" % (self.d, store))


def test_full_store_holds_the_ack_and_no_store_gets_a_batch_twice():
    """The frame that finds store_b full is not acknowledged while store a already has it;
    once store_b can write again the ack comes, and each store holds every acknowledged event
    exactly once (store a is not given the frame again)."""
    f = FullStore("weir-copy-full-")
    assert recv_ack(f.sock, f.held[1], 2.0) is None, "acked while store_b is full"
    os.remove(f.blocker)
    f.w.proc.send_signal(signal.SIGUSR1)  # retry store_b's chunks now
    assert recv_ack(f.sock, f.held[1], 30.0), "no ack after store_b could write again:\n" + \
        f.w.log()
    f.acked += f.held[0]
    f.send_more()
    f.sock.close()
    assert f.w.stop() == 0, f.w.log()
    for store in ("a", "b"):
        got = f.stored(store)
        assert sorted(got) == sorted(f.acked), (store, len(got), len(f.acked),
                                                sorted(set(f.acked) - set(got))[:10])
        assert len(got) == len(set(got)), "store %s has events twice" % store


def test_reload_while_a_store_is_full_fails_the_held_frame_and_goes_on():
    """SIGHUP while a frame waits for the full store_b: the reload does not wait for space
    that cannot come. The held frame is answered failed (the connection closes without an
    ack, so the sender sends it again), the new configuration runs, and after store_b can
    write every acknowledged event is in both stores; only the resent frame is in store a
    twice."""
    f = FullStore("weir-copy-full-reload-")
    f.w.proc.send_signal(signal.SIGHUP)  # the same file: outputs are rebuilt all the same
    try:
        got = recv_ack(f.sock, f.held[1], 30.0)
    except ConnectionError:
        got = None
    assert got is None, "the held frame was acknowledged while store_b was full"
    wait_for(lambda: "the new configuration is running" in f.w.log(), what="reload:\n" + f.w.log())
    assert "stopping with 1 batches a full store has not taken" in f.w.log(), f.w.log()
    os.remove(f.blocker)
    f.w.proc.send_signal(signal.SIGUSR1)
    f.sock.close()
    f.sock = socket.create_connection(("127.0.0.1", f.port))  # the sender reconnects, resends
    f.sock.sendall(frame("app.audit", f.held[0], f.held[1]))
    assert recv_ack(f.sock, f.held[1], 30.0), "the resent frame was not acknowledged:\n" + \
        f.w.log()
    f.acked += f.held[0]
    f.send_more()
    f.sock.close()
    assert f.w.stop() == 0, f.w.log()
    a, b = f.stored("a"), f.stored("b")
    for store, got in (("a", a), ("b", b)):
        lost = sorted(set(f.acked) - set(got))
        assert not lost, "store %s lost %s" % (store, lost[:10])
    twice = {x for x in a if a.count(x) > 1}
    assert twice <= set(f.held[0]), sorted(twice - set(f.held[0]))[:10]
    assert len(b) == len(set(b)), "store_b has events twice"


def test_kill9_after_acks_both_stores_have_every_acked_event():
    """kill -9 while a sender streams with acks, several times: after a clean restart each
    store holds every acknowledged event (duplicates only of events the sender resent)."""
    d = tmpdir("weir-copy-crash-")
    port = free_port()
    conf = forward_source(port) + "<match **>\n  @type copy\n" + \
        file_store(d + "/a/events", d + "/bufa") + file_store(d + "/b/events", d + "/bufb") + \
        "</match>\n"
    sender = AckSender(port)
    rng = random.Random(99)
    rounds = 6
    w = [start(conf, d, [port])]
    stop = threading.Event()

    def killer():
        for _ in range(rounds):
            time.sleep(rng.uniform(0.1, 0.5))
            w[0].proc.send_signal(signal.SIGKILL)
            w[0].proc.wait()
            w[0] = start(conf, d)
        stop.set()

    t = threading.Thread(target=killer)
    t.start()
    seq = 0
    while not stop.is_set():
        n = rng.randint(1, 30)
        assert sender.send(list(range(seq, seq + n)), time.time() + 30), "no ack in 30 s"
        seq += n
    t.join()
    sender.close()
    w[0].proc.send_signal(signal.SIGKILL)
    w[0].proc.wait()
    final = start(conf, d, [port])
    assert final.stop() == 0, final.log()
    assert sender.acked, "nothing was acknowledged"
    for store in ("a", "b"):
        got = json_field("%s/%s/events*.log" % (d, store))
        lost = sorted(set(sender.acked) - set(got))
        assert not lost, "store %s lost acknowledged events %s" % (store, lost[:20])
        twice = sorted({s for s in got if got.count(s) > 1} - sender.resent)
        assert not twice, "store %s has events sent once twice: %s" % (store, twice[:20])
    print("  %d events acked through %d kills" % (len(sender.acked), rounds))


def test_reload_with_copy_keeps_every_acked_event():
    """SIGHUP under load, from a copy of two stores to a copy of the same two plus stdout:
    the stores' file buffers carry over, and both files hold every acknowledged event."""
    d = tmpdir("weir-copy-reload-")
    port = free_port()
    stores = file_store(d + "/a/events", d + "/bufa") + file_store(d + "/b/events", d + "/bufb")
    conf1 = forward_source(port) + "<match **>\n  @type copy\n" + stores + "</match>\n"
    conf2 = forward_source(port) + "<match **>\n  @type copy\n" + stores + \
        "  <store>\n    @type stdout\n  </store>\n</match>\n"
    w = start(conf1, d, [port])
    sender = AckSender(port)
    stop = threading.Event()

    def send_loop():
        seq = 0
        while not stop.is_set():
            assert sender.send(list(range(seq, seq + 10)), time.time() + 30), "no ack in 30 s"
            seq += 10

    t = threading.Thread(target=send_loop)
    t.start()
    wait_for(lambda: len(sender.acked) >= 50, what="events acked before the reload")
    with open(w.conf, "w") as f:
        f.write(conf2)
    w.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "the new configuration is running" in w.log(), what="reload:\n" + w.log())
    n = len(sender.acked)
    wait_for(lambda: len(sender.acked) >= n + 50, what="events acked after the reload")
    stop.set()
    t.join()
    sender.close()
    assert w.stop() == 0, w.log()
    for store in ("a", "b"):
        got = json_field("%s/%s/events*.log" % (d, store))
        lost = sorted(set(sender.acked) - set(got))
        assert not lost, "store %s lost %s" % (store, lost[:20])
    printed = {e[3]["seq"] for e in w.stdout_events()}
    assert printed and printed <= sender.sent_once, "the new stdout store printed nothing"


def test_relabel_docs_example_routes_into_the_label():
    """Fluentd's out_relabel example: events matched at the top level go to <label @foo>'s
    <match>, with their tag; other tags stay at the top level. Also relabel as a copy store,
    the way it is used to send a copy of the events down a second pipeline."""
    d = tmpdir("weir-relabel-")
    port = free_port()
    conf = http_source(port) + """
<match pattern.**>
  @type relabel
  @label @foo
</match>
<match audit.**>
  @type copy
  <store>
    @type file
    path %(d)s/archive/events
    <format>
      @type json
    </format>
    <buffer>
      @type file
      path %(d)s/buf
      flush_at_shutdown true
    </buffer>
  </store>
  <store>
    @type relabel
    @label @foo
  </store>
</match>
<match **>
  @type file
  path %(d)s/rest/events
  <format>
    @type json
  </format>
  <buffer>
    @type file
    path %(d)s/buf_rest
    flush_at_shutdown true
  </buffer>
</match>
<label @foo>
  <match pattern.**>
    @type stdout
  </match>
  <match audit.**>
    @type stdout
  </match>
</label>
""" % {"d": d}
    w = start(conf, d, [port])
    assert post(port, "pattern.web", [{"seq": 1}, {"seq": 2}])[0] == 200
    assert post(port, "audit.login", [{"seq": 3}])[0] == 200
    assert post(port, "other.x", [{"seq": 4}])[0] == 200
    assert w.stop() == 0, w.log()
    printed = [(e[2], e[3]["seq"]) for e in w.stdout_events()]
    assert printed == [("pattern.web", 1), ("pattern.web", 2), ("audit.login", 3)], printed
    assert json_field(d + "/archive/events*.log") == [3]
    assert json_field(d + "/rest/events*.log") == [4]


def test_relabel_into_a_label_with_a_filter():
    """A relabel hands its batches to the label's <filter>s first, as Fluentd's label router
    does: here the dedupe filter, so an event sent twice is stored once."""
    d = tmpdir("weir-relabel-filter-")
    port = free_port()
    conf = http_source(port) + """
<match audit.**>
  @type relabel
  @label @dedup
</match>
<label @dedup>
  <filter audit.**>
    @type dedupe
    key uid
    path %(d)s/dedupe
  </filter>
  <match audit.**>
    @type file
    path %(d)s/out/events
    <format>
      @type json
    </format>
    <buffer>
      @type file
      path %(d)s/buf
      flush_at_shutdown true
    </buffer>
  </match>
</label>
""" % {"d": d}
    w = start(conf, d, [port])
    assert post(port, "audit.x", [{"uid": "a", "seq": 1}, {"uid": "b", "seq": 2}])[0] == 200
    assert post(port, "audit.x", [{"uid": "b", "seq": 2}, {"uid": "c", "seq": 3}])[0] == 200
    assert w.stop() == 0, w.log()
    assert json_field(d + "/out/events*.log", "uid") == ["a", "b", "c"]


def check_refused(conf, *expect):
    d = tmpdir("weir-relabel-bad-")
    path = os.path.join(d, "fluent.conf")
    with open(path, "w") as f:
        f.write(conf)
    rc, err = dry_run(path)
    assert rc == 1, (rc, err)
    for e in expect:
        assert e in err, (e, err)


def test_relabel_loop_and_unknown_label_are_refused():
    loop = """
<match **>
  @type relabel
  @label @A
</match>
<label @A>
  <match **>
    @type relabel
    @label @B
  </match>
</label>
<label @B>
  <match **>
    @type copy
    <store>
      @type stdout
    </store>
    <store>
      @type relabel
      @label @A
    </store>
  </match>
</label>
"""
    check_refused(loop, "fluent.conf:20:", "@label @A: relabel loop", "@B -> @A -> @B")
    check_refused("<match **>\n  @type relabel\n  @label @ROOT\n</match>\n", "@ROOT -> @ROOT")
    check_refused("<match **>\n  @type relabel\n  @label @nope\n</match>\n",
                  "fluent.conf:3:", "no <label @nope> is defined")
    check_refused("<match **>\n  @type relabel\n</match>\n", "needs '@label @name'")


def test_limits_on_stores_and_filters_at_and_past_the_edge():
    """A copy takes 64 <store>s and a label 64 <filter>s (a route's filters are a 64-bit
    mask); one more of either is refused by --dry-run with the reason."""
    d = tmpdir("weir-limits-")
    path = os.path.join(d, "fluent.conf")
    store = "  <store>\n    @type null\n  </store>\n"
    filt = "<filter **>\n  @type grep\n</filter>\n"
    for n in (64, 65):
        for body, refusal in (("<match **>\n  @type copy\n" + store * n + "</match>\n",
                               "@type copy takes at most 64 <store> sections"),
                              (filt * n + "<match **>\n  @type null\n</match>\n",
                               "more than 64 <filter> sections in one label")):
            with open(path, "w") as f:
                f.write(body)
            rc, err = dry_run(path)
            if n == 64:
                assert rc == 0, err
            else:
                assert rc != 0 and refusal in err, err


def test_copy_configuration_errors():
    check_refused("<match **>\n  @type copy\n</match>\n", "at least one <store>")
    check_refused("<match **>\n  @type copy\n  <store ignore_if_prev_success>\n"
                  "    @type stdout\n  </store>\n</match>\n", "second or a later <store>")
    check_refused("<match **>\n  @type copy\n  <store ignore_eror>\n    @type stdout\n"
                  "  </store>\n</match>\n", "'ignore_eror' is not a store argument")
    # an unknown store type is named with the others, as a <match>'s would be
    check_refused("<match **>\n  @type copy\n  <store>\n    @type elasticsearch\n"
                  "  </store>\n  <store>\n    @type kafka2\n  </store>\n</match>\n",
                  "weir does not have these plugins:", "fluent.conf:4:5: @type elasticsearch (<store>)",
                  "fluent.conf:7:5: @type kafka2 (<store>)")
    check_refused("<match **>\n  @type copy\n  copy_mode deeper\n  <store>\n    @type stdout\n"
                  "  </store>\n</match>\n", "copy_mode")
    # the four copy modes are accepted (weir's batches are immutable bytes: all behave alike)
    for mode in ("no_copy", "shallow", "deep", "marshal"):
        d = tmpdir("weir-copy-mode-")
        path = os.path.join(d, "fluent.conf")
        with open(path, "w") as f:
            f.write("<match **>\n  @type copy\n  copy_mode %s\n  <store>\n    @type stdout\n"
                    "  </store>\n</match>\n" % mode)
        rc, err = dry_run(path)
        assert rc == 0, (mode, err)


def test_stores_are_listed_by_monitor_agent_and_metrics():
    """Each store is a plugin of its own in /api/plugins.json (after its copy, as Fluentd lists
    them) and in /metrics, with the records it took."""
    d = tmpdir("weir-copy-mon-")
    port, mon, prom = free_port(), free_port(), free_port()
    conf = http_source(port) + """
<source>
  @type monitor_agent
  bind 127.0.0.1
  port %d
</source>
<source>
  @type prometheus
  bind 127.0.0.1
  port %d
</source>
<match app.**>
  @type copy
  @id fanout
  <store>
    @type null
    @id first
  </store>
  <store>
    @type stdout
    @id second
  </store>
</match>
""" % (mon, prom)
    w = start(conf, d, [port, mon, prom])
    assert post(port, "app.x", [{"seq": 1}, {"seq": 2}, {"seq": 3}])[0] == 200
    with urllib.request.urlopen("http://127.0.0.1:%d/api/plugins.json" % mon, timeout=10) as r:
        plugins = json.load(r)["plugins"]
    outs = [(p["plugin_id"], p["type"], p.get("emit_records")) for p in plugins
            if p["plugin_category"] == "output"]
    assert outs == [("fanout", "copy", 3), ("first", "null", 3), ("second", "stdout", 3)], outs
    series = scrape(prom)
    got = {k: v for k, v in series.items() if k[0] == "fluentd_output_status_emit_records"}
    for pid, typ in (("fanout", "copy"), ("first", "null"), ("second", "stdout")):
        assert metric(series, "fluentd_output_status_emit_records", plugin_id=pid,
                      type=typ) == 3, got
    assert w.stop() == 0, w.log()


if __name__ == "__main__":
    try:
        run_tests([
            test_copy_docs_example_to_two_files_and_stdout,
            test_failing_store_without_ignore_error_fails_the_request,
            test_ignore_error_store_fails_alone,
            test_failing_stdout_is_logged_once_per_interval,
            test_ignore_if_prev_success_is_a_fallback,
            test_full_store_holds_the_ack_and_no_store_gets_a_batch_twice,
            test_reload_while_a_store_is_full_fails_the_held_frame_and_goes_on,
            test_kill9_after_acks_both_stores_have_every_acked_event,
            test_reload_with_copy_keeps_every_acked_event,
            test_relabel_docs_example_routes_into_the_label,
            test_relabel_into_a_label_with_a_filter,
            test_relabel_loop_and_unknown_label_are_refused,
            test_copy_configuration_errors,
            test_limits_on_stores_and_filters_at_and_past_the_edge,
            test_stores_are_listed_by_monitor_agent_and_metrics,
        ])
    finally:
        cleanup()
