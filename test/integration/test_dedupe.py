"""<filter> @type dedupe: every audit event stored once, across resends, restarts and kill -9.

A Teleport-like sender posts events to in_http, resends requests whose answers it "lost", and
replays its last acknowledged events around every weir restart (SIGTERM and kill -9 in turn);
a forward sender resends acknowledged chunks. What a user would check is asserted: each uid
appears exactly once across the objects in S3 (s3rver behind the signature-checking proxy)
or the lines of the file output, and weir_dedupe_duplicates_total counts exactly the resends
of events weir had stored."""

import glob
import json
import os
import signal
import time
import uuid

from test_s3_output import STATIC, cleanup, fwd_send, gz_lines, match_conf, s3, tmpdir
from weirtest import (Weir, dry_run, forward_raw, free_port, http_post, metric_at, p, raw_map,
                      run_tests, wait_for, wait_port)

ENV = {"TZ": "UTC", "AWS_EC2_METADATA_DISABLED": "true"}


def sources(http_port, fwd_port, prom_port):
    return """
<source>
  @type http
  port %d
  bind 127.0.0.1
  <parse>
    @type json
  </parse>
</source>
<source>
  @type forward
  port %d
  bind 127.0.0.1
</source>
<source>
  @type prometheus
  port %d
  bind 127.0.0.1
</source>
""" % (http_port, fwd_port, prom_port)


def dedupe(d, key="uid", pattern="**", extra=""):
    return """
<filter %s>
  @type dedupe
  @id dd
  key %s
  path %s/dedupe
%s
</filter>
""" % (pattern, key, d, extra)


def file_match(d):
    return """
<match **>
  @type file
  path %s/out/${tag}
  append true
  <format>
    @type json
  </format>
  <buffer tag>
    @type file
    path %s/buf
    flush_mode immediate
  </buffer>
</match>
""" % (d, d)


class Setup:
    """One weir configuration, restarted as often as a test wants, on fixed ports."""

    def __init__(self, body, d=None):
        self.d = d or tmpdir("weir-dedupe-")
        self.http, self.fwd, self.prom = free_port(), free_port(), free_port()
        self.conf = sources(self.http, self.fwd, self.prom) + body(self.d)
        self.w = None
        self.dups = 0  # duplicates counted by the weirs stopped so far

    def start(self):
        self.w = Weir(self.conf, env=ENV, workdir=self.d).start([self.http, self.fwd, self.prom])
        return self.w

    def metric(self, name):
        return metric_at(self.prom, name, plugin_id="dd") or 0

    def stop(self, kill=False):
        self.dups += self.metric("weir_dedupe_duplicates_total")
        if kill:
            self.w.proc.kill()
            self.w.proc.wait()
            self.w.out.close()
            self.w.err.close()
        else:
            rc = self.w.stop()
            assert rc == 0, self.w.log()

    def post(self, tag, events):
        body = json.dumps(events if len(events) > 1 else events[0]).encode()
        http_post(self.http, tag, body, "application/json")


def teleport_event(i):
    return {"uid": str(uuid.uuid4()), "event": "user.login", "code": "T1000I", "ei": 0,
            "user": "user%d" % (i % 7), "success": i % 5 != 0, "cluster_name": "c1",
            "time": "2024-05-09T21:00:%02d.000Z" % (i % 60)}


def s3_uids(bucket):
    objs = s3().objects(bucket)
    uids = []
    for data, _ in objs.values():
        import gzip
        for line in gzip.decompress(data).splitlines():
            uids.append(json.loads(line)["uid"])
    return uids


def file_values(d, field, pattern="*"):
    vals = []
    for f in sorted(glob.glob(os.path.join(d, "out", pattern))):
        with open(f) as fh:
            vals += [json.loads(line)[field] for line in fh]
    return vals


def test_teleport_resends_and_replays_are_stored_once_in_s3():
    bucket = "dedupe-%d" % free_port()
    os.makedirs(os.path.join(s3().dir, bucket), exist_ok=True)

    def body(d):
        return dedupe(d) + match_conf(d, "s3out", bucket, STATIC, pattern="**",
                                      extra="  <format>\n    @type json\n  </format>",
                                      buffer_extra="    flush_at_shutdown true")
    st = Setup(body)
    acked = []      # events weir answered 200 for, in order
    resends = 0     # requests sent again for events weir had stored
    n = 0
    for rnd in range(4):
        st.start()
        # after a restart the handler resends from its cursor: the last 10 acknowledged events
        for ev in acked[-10:]:
            st.post("test.log", [ev])
            resends += 1
        for _ in range(30):
            ev = teleport_event(n)
            n += 1
            st.post("test.log", [ev])
            acked.append(ev)
            if n % 4 == 0:  # the answer "got lost": the handler sends the request again
                st.post("test.log", [ev])
                resends += 1
        # and before the stop, a batch of events with one resent inside it
        batch = [teleport_event(n), teleport_event(n + 1)]
        n += 2
        st.post("test.log", batch + [acked[-1]])
        resends += 1
        acked += batch
        st.stop(kill=rnd % 2 == 1)
    st.start()
    want = sorted(e["uid"] for e in acked)
    wait_for(lambda: len(s3_uids(bucket)) >= len(want), timeout=30, what="every event in S3")
    st.stop()
    got = sorted(s3_uids(bucket))
    assert got == want, "%d stored, %d distinct, %d sent" % (len(got), len(set(got)), len(want))
    assert st.dups == resends, (st.dups, resends)


def test_forward_chunk_resends_are_acked_and_dropped():
    st = Setup(lambda d: dedupe(d, key="seq") + file_match(d))
    st.start()
    for k in range(20):
        recs = [{"seq": k * 10 + i, "message": "m"} for i in range(10)]
        assert fwd_send(st.fwd, "fwd.log", recs)
        if k % 2 == 0:  # the ack was lost: the same chunk again, acknowledged again
            assert fwd_send(st.fwd, "fwd.log", recs)
    wait_for(lambda: len(file_values(st.d, "seq")) >= 200, what="200 lines")
    st.stop(kill=True)
    st.start()
    for k in range(0, 20, 5):  # replayed after a crash
        assert fwd_send(st.fwd, "fwd.log", [{"seq": k * 10 + i, "message": "m"} for i in range(10)])
    assert fwd_send(st.fwd, "fwd.log", [{"seq": 1000, "message": "new"}])
    wait_for(lambda: 1000 in file_values(st.d, "seq"), what="the new event")
    st.stop()
    got = file_values(st.d, "seq")
    assert sorted(got) == list(range(200)) + [1000], len(got)
    assert st.dups == 10 * 10 + 4 * 10, st.dups


def test_composite_key_and_keyless_events():
    st = Setup(lambda d: dedupe(d, key="sid,ei", pattern="session.**") + file_match(d))
    st.start()
    evs = [{"sid": "s1", "ei": i, "event": "print"} for i in range(5)]
    st.post("session.log", evs)
    st.post("session.log", evs[2:4] + [{"sid": "s2", "ei": 2, "event": "print"}])
    st.post("session.log", [{"event": "no sid"}, {"event": "no sid"}])  # keyless: both kept
    st.post("other.log", [{"sid": "s1", "ei": 0}])  # not under the filter's pattern
    wait_for(lambda: len(file_values(st.d, "event", "session*")) >= 8, what="8 session lines")
    assert st.metric("weir_dedupe_keyless_total") == 2
    st.stop()
    got = [(r.get("sid"), r.get("ei")) for r in
           (json.loads(line) for f in sorted(glob.glob(st.d + "/out/session*"))
            for line in open(f))]
    assert sorted(got, key=str) == sorted([("s1", i) for i in range(5)] + [("s2", 2)] +
                                          [(None, None)] * 2, key=str), got
    assert st.dups == 2
    assert len(file_values(st.d, "sid", "other*")) == 1


def test_nested_key_and_the_last_of_a_repeated_key():
    st = Setup(lambda d: dedupe(d, key="$.meta.id") + file_match(d))
    st.start()
    st.post("a.log", [{"meta": {"id": "m1"}, "n": 1}, {"meta": {"id": "m1"}, "n": 2},
                      {"meta": {"id": "m2"}, "n": 3}, {"meta": "not a map", "n": 4}])
    # {"meta": {"id": "m2"}, "meta": {"id": "m3"}}: the last "meta" counts, as in grep and
    # record_transformer (and Ruby's Hash): m3, not yet seen, so it is stored
    twice = raw_map([(p("meta"), p({"id": "m2"})), (p("meta"), p({"id": "m3"}))])
    forward_raw(st.fwd, "a.log", [twice])
    wait_for(lambda: len(file_values(st.d, "meta")) >= 4, what="4 lines")
    assert st.metric("weir_dedupe_duplicates_total") == 1
    assert st.metric("weir_dedupe_keyless_total") == 1
    st.stop()


def test_window_expires_keys_on_time():
    st = Setup(lambda d: dedupe(d, extra="  window 2s") + file_match(d))
    st.start()
    st.post("a.log", [{"uid": "u1"}])
    st.post("a.log", [{"uid": "u1"}])
    assert st.metric("weir_dedupe_duplicates_total") == 1
    time.sleep(3.2)  # longer than the window (kept to the whole second): u1 is forgotten
    st.post("a.log", [{"uid": "u1"}])
    wait_for(lambda: len(file_values(st.d, "uid")) >= 2, what="u1 twice")
    assert st.metric("weir_dedupe_duplicates_total") == 1
    st.stop()
    assert file_values(st.d, "uid") == ["u1", "u1"]


def test_memory_limit_shortens_the_window_with_a_warning():
    # 24 bytes a key plus a 64-slot index of 8 bytes: 1280 bytes hold 32 keys
    st = Setup(lambda d: dedupe(d, extra="  memory_limit 1280") + file_match(d))
    w = st.start()
    for i in range(40):
        st.post("a.log", [{"uid": "k%d" % i}])
    assert st.metric("weir_dedupe_keys") == 32
    assert st.metric("weir_dedupe_evicted_early_total") == 8
    st.post("a.log", [{"uid": "k39"}])  # remembered
    st.post("a.log", [{"uid": "k0"}])   # forgotten early: stored again
    wait_for(lambda: len(file_values(st.d, "uid")) >= 41, what="41 lines")
    assert st.metric("weir_dedupe_duplicates_total") == 1
    st.stop()
    assert "memory_limit holds 32 keys" in w.log(), w.log()
    assert sorted(file_values(st.d, "uid")).count("k0") == 2


def test_a_corrupt_journal_record_forgets_that_key_only():
    st = Setup(lambda d: dedupe(d) + file_match(d))
    st.start()
    for i in range(5):
        st.post("a.log", [{"uid": "j%d" % i}])
    st.stop()
    segs = [f for f in sorted(glob.glob(st.d + "/dedupe/journal-*")) if os.path.getsize(f)]
    assert len(segs) == 1 and os.path.getsize(segs[0]) == 5 * 24, segs
    with open(segs[0], "r+b") as f:  # a hole where record 2 was (a write never synced)
        f.seek(2 * 24)
        f.write(b"\0" * 24)
    w = st.start()
    for i in range(5):
        st.post("a.log", [{"uid": "j%d" % i}])
    wait_for(lambda: len(file_values(st.d, "uid")) >= 6, what="6 lines")
    assert st.metric("weir_dedupe_duplicates_total") == 4
    st.stop()
    assert sorted(file_values(st.d, "uid")) == ["j0", "j1", "j2", "j2", "j3", "j4"]
    assert "1 records torn or corrupt" in w.log(), w.log()


def test_configuration_errors_are_clear():
    d = tmpdir("weir-dedupe-conf-")
    cases = [
        ("<filter **>\n  @type dedupe\n  path %s/x\n</filter>\n" % d, "dedupe needs 'key'"),
        ("<filter **>\n  @type dedupe\n  key uid\n</filter>\n" % (), "dedupe needs 'path'"),
        ("<filter **>\n  @type dedupe\n  key uid\n  path %s/x\n  memory_limit 10\n</filter>\n" % d,
         "memory_limit: at least"),
        ("<filter **>\n  @type dedupe\n  key uid\n  path %s/x\n  window 0\n</filter>\n" % d,
         "window: expected"),
        ("<filter **>\n  @type dedupe\n  key uid\n  path /%s\n</filter>\n" % ("d" * 512),
         "path: at most 512 bytes"),
        ("<filter **>\n  @type nosuch\n</filter>\n", "@type nosuch (<filter **>)"),
    ]
    for body, want in cases:
        p = os.path.join(d, "fluent.conf")
        with open(p, "w") as f:
            f.write(body + "<match **>\n  @type null\n</match>\n")
        rc, err = dry_run(p)
        assert rc != 0 and want in err, (want, err)


def test_second_weir_on_the_same_index_is_refused():
    st = Setup(lambda d: dedupe(d) + file_match(d))
    st.start()
    other = Weir(sources(free_port(), free_port(), free_port()) + dedupe(st.d) +
                 "<match **>\n  @type null\n</match>\n", env=ENV).start()
    assert other.proc.wait(10) != 0
    assert "is in use by another weir process (pid %d)" % st.w.proc.pid in other.log(), \
        other.log()
    st.stop()


def main():
    try:
        run_tests([
            test_forward_chunk_resends_are_acked_and_dropped,
            test_composite_key_and_keyless_events,
            test_nested_key_and_the_last_of_a_repeated_key,
            test_window_expires_keys_on_time,
            test_memory_limit_shortens_the_window_with_a_warning,
            test_a_corrupt_journal_record_forgets_that_key_only,
            test_configuration_errors_are_clear,
            test_second_weir_on_the_same_index_is_refused,
            test_teleport_resends_and_replays_are_stored_once_in_s3,
        ])
    finally:
        cleanup()


if __name__ == "__main__":
    main()
