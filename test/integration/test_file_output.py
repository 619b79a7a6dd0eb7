"""@type file end to end: what reaches the files, and what happens when a file cannot be
written. Real binary, real senders (forward with acks, HTTP), and the checks a user would make
on the output: every line loads in a JSON parser as strict as Snowflake's (valid UTF-8, no
repeated key, no NaN), and jq reads every file."""

import glob
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import msgpack

import weirtest
from weirtest import (Weir, forward_raw, forward_to_file, free_port, http_post, metric_at, p,
                      raw_map, run_tests)

T0 = 1700000000


def strict_json(line):
    """The record of one output line, or an AssertionError saying why a strict loader would
    refuse it (and with it, under Snowpipe's default ON_ERROR, the whole file)."""
    text = line.decode("utf-8")  # strict: raises on invalid UTF-8

    def no_repeats(pairs):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), "repeated key in %r" % text
        return dict(pairs)

    def no_constant(name):
        raise AssertionError("%s is not JSON: %r" % (name, text))

    return json.loads(text, object_pairs_hook=no_repeats, parse_constant=no_constant)


def out_lines(pattern):
    lines = []
    for f in sorted(glob.glob(pattern)):
        subprocess.run(["jq", "-e", "-c", ".", f], check=True, stdout=subprocess.DEVNULL)
        with open(f, "rb") as fh:
            lines += fh.read().splitlines()
    return lines


def test_record_chunk_key_takes_the_last_of_a_repeated_key():
    """${user} in the path, `user` a chunk key: a record that names `user` twice goes to the
    file of the last value, as Fluentd's Hash keeps it and as grep and dedupe read it."""
    d = tempfile.mkdtemp(prefix="weir-it-dupkey-")
    port = free_port()
    conf = forward_to_file(port, os.path.join(d, "out", "${user}"), os.path.join(d, "buf"),
                           "user", ["flush_mode immediate"])
    with Weir(conf, workdir=d) as w:
        w.start([port])
        forward_raw(port, "app", [raw_map([(p("user"), p("first")), (p("user"), p("last")),
                                           (p("n"), p(1))])])
        wait_until(lambda: glob.glob(os.path.join(d, "out", "last*")))
        assert w.stop() == 0, w.log()
    assert not glob.glob(os.path.join(d, "out", "first*")), os.listdir(os.path.join(d, "out"))


def test_odd_records_load_strictly():
    """Records a sender may legally send, through forward and HTTP (JSON and msgpack bodies),
    each stored as a line a strict JSON loader accepts, with its value under the rule
    docs/formats.md gives, so no record can make the file around it fail to load."""
    d = tempfile.mkdtemp(prefix="weir-odd-")
    port, hport = free_port(), free_port()
    http = "<source>\n  @type http\n  port %d\n  bind 127.0.0.1\n</source>" % hport
    text = forward_to_file(port, "%s/out/events" % d, "%s/buf" % d,
                           buffer_params=["flush_at_shutdown true"], sources=http)
    nan = b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00"
    inf = b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00"
    records = [
        raw_map([(p("n"), p(0)), (p("a"), p(1)), (p("a"), p(2))]),
        raw_map([(p("n"), p(1)), (p(1), p("int")), (p("1"), p("str"))]),
        raw_map([(p("n"), p(2)), (b"\xc0", p("nil")), (p(""), p("empty"))]),
        raw_map([(p("n"), p(3)), (b"\xa1\xff", p("x")), (b"\xa1\xfe", p("y")),
                 (p("v"), b"\xa3a\xc3z")]),
        raw_map([(p("n"), p(4)), (p("nan"), nan), (p("inf"), inf), (nan, p(1))]),
        raw_map([(p("n"), p(5)), (p("bin"), p(b"\x00\xff")), (p("ext"), b"\xd4\x07\x01"),
                 (p("big"), b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff")]),
        raw_map([(p("n"), p(6)), (p([1, "q"]), p("array key")), (p({"k": 1}), p("map key"))]),
        raw_map([(p("n"), p(7)), (p("ctl"), p("\x00\x1f\n\t\"\\")),
                 (p("m"), raw_map([(p("k"), p(1)), (p("k"), p(2))]))]),
    ]
    with Weir(text, workdir=d) as w:
        w.start([port, hport])
        forward_raw(port, "odd.forward", records)
        http_post(hport, "odd.json", b'{"n":8,"a":1,"b":{"c":1,"c":2},"a":3}',
                  "application/json")
        http_post(hport, "odd.msgpack",
                  raw_map([(p("n"), p(9)), (p("a"), p(1)), (p("a"), p(2))]),
                  "application/msgpack")
        assert w.stop() == 0, w.log()
    got = {}
    for line in out_lines(os.path.join(d, "out", "events*.log")):
        rec = strict_json(line)
        got[rec.pop("n")] = rec
    fffd = "\ufffd"
    want = {
        0: {"a": 2},
        1: {"1": "str"},
        2: {"": "empty"},
        3: {fffd: "y", "v": "a" + fffd + "z"},
        4: {"nan": None, "inf": None, "NaN": 1},
        5: {"bin": "\x00" + fffd, "ext": "AQ==", "big": 18446744073709551615},
        6: {'[1,"q"]': "array key", '{"k":1}': "map key"},
        7: {"ctl": "\x00\x1f\n\t\"\\", "m": {"k": 2}},
        8: {"a": 3, "b": {"c": 2}},
        9: {"a": 2},
    }
    assert got == want, got


def wait_until(fn, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return fn()


def test_name_too_long_goes_to_backup_at_once():
    """A chunk whose file name the file system cannot hold (a 300-byte tag as a path
    component: ENAMETOOLONG) can never be written: it goes to backup/ at the first failure,
    not after the retries (an hour of them here), with the reason in the log and in
    weir_output_unrecoverable_chunks_total. The other tag's chunk is written as usual."""
    d = tempfile.mkdtemp(prefix="weir-long-")
    port, prom = free_port(), free_port()
    metrics = "<source>\n  @type prometheus\n  bind 127.0.0.1\n  port %d\n</source>" % prom
    text = forward_to_file(port, "%s/out/${tag}/events" % d, "%s/buf" % d,
                           buffer_params=["flush_mode interval", "flush_interval 0.2",
                                          "retry_wait 3600", "retry_timeout 72h"],
                           file_params=["@id long"], sources=metrics)
    long_tag = "t" * 300
    backups = lambda: glob.glob(os.path.join(d, "buf", "backup", "*.chunk"))
    with Weir(text, workdir=d) as w:
        w.start([port, prom])
        forward_raw(port, long_tag, [raw_map([(p("n"), p(1))])], chunk="c1")
        forward_raw(port, "short", [raw_map([(p("n"), p(2))])], chunk="c2")
        assert wait_until(lambda: len(backups()) == 1), w.log()
        assert wait_until(lambda: glob.glob(os.path.join(d, "out", "short", "events*.log")))
        log = w.log()
        assert "File name too long" in log and "given up" in log, log
        assert metric_at(prom, "weir_output_unrecoverable_chunks_total", plugin_id="long") == 1
        assert metric_at(prom, "weir_output_backup_chunks_total", plugin_id="long") == 1
        assert metric_at(prom, "fluentd_output_status_retry_count", plugin_id="long") == 0
        assert w.stop() == 0, w.log()
    assert [strict_json(l) for l in out_lines(os.path.join(d, "out", "short", "*"))] == [{"n": 2}]
    assert not os.path.exists(os.path.join(d, "out", long_tag))


def trace_order(trace):
    """From `strace -f -y -o` text: [(index, pid, call, paths, result)] in the order the calls
    completed (an interrupted call counts where it resumed), with the paths strace -y shows for
    fds and the string arguments."""
    pending, calls = {}, []
    for line in trace.splitlines():
        m = re.match(r"(\d+) +(.*)$", line)
        if not m:
            continue
        pid, rest = m.group(1), m.group(2)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest
            continue
        r = re.match(r"<\.\.\. (\w+) resumed>(.*)$", rest)
        if r:
            rest = pending.pop(pid, "") + r.group(2)
        c = re.match(r"(\w+)\((.*)\) += (-?\d+)", rest.replace(" <unfinished ...>", ""))
        if c:
            paths = re.findall(r'<([^<>]*)>|"([^"]*)"', c.group(2))
            calls.append((len(calls), pid, c.group(1), [a or b for a, b in paths],
                          int(c.group(3))))
    return calls


def test_file_and_its_directories_are_durable_before_the_chunk_is_deleted():
    """Under strace: before the buffer unlinks a delivered chunk, the output file has been
    fsynced, then the directory that names it, and the parent of every directory weir made
    for it (out/, out/a/, out/a/b/), so a power loss cannot take the file while the chunk is
    already gone. The power-loss harness tests the same end to end; this checks the order."""
    d = tempfile.mkdtemp(prefix="weir-fsync-")
    port = free_port()
    text = forward_to_file(port, "%s/out/a/b/events" % d, "%s/buf" % d,
                           buffer_params=["flush_mode interval", "flush_interval 0.2"])
    trace = os.path.join(d, "trace.txt")
    w = Weir(text, workdir=d)
    strace = ["strace", "-f", "-y", "-o", trace, "-e",
              "trace=fsync,fdatasync,openat,mkdir,mkdirat,rename,renameat,unlink,unlinkat",
              weirtest.WEIR_BIN]
    w.out = open(w.out_path, "ab")
    w.err = open(w.err_path, "ab")
    # LeakSanitizer cannot run under ptrace: a sanitizer build must not look for leaks here
    w.env["ASAN_OPTIONS"] = ":".join(filter(None, [w.env.get("ASAN_OPTIONS"), "detect_leaks=0"]))
    w.proc = subprocess.Popen(strace + ["-c", w.conf], stdout=w.out, stderr=w.err, cwd=d,
                              env=w.env)
    weir_pid = None
    try:
        weirtest.wait_port(port, timeout=30)
        # signals go to weir itself: strace would only detach, and ends when weir does
        with open("/proc/%d/task/%d/children" % (w.proc.pid, w.proc.pid)) as fh:
            (weir_pid,) = [int(x) for x in fh.read().split()]
        forward_raw(port, "t", [raw_map([(p("n"), p(1))])])
        out = os.path.join(d, "out", "a", "b")
        assert wait_until(lambda: glob.glob(os.path.join(out, "events*.log")), timeout=30), \
            w.log()
        files = glob.glob(os.path.join(out, "events*.log"))
        chunks = lambda: glob.glob(os.path.join(d, "buf", "*.chunk"))
        assert wait_until(lambda: not chunks(), timeout=30)
        os.kill(weir_pid, signal.SIGTERM)
        assert w.proc.wait(30) == 0, w.log()
    finally:
        if w.proc.poll() is None:
            if weir_pid:
                os.kill(weir_pid, signal.SIGKILL)
            w.proc.kill()
            w.proc.wait()
    calls = trace_order(open(trace).read())
    (f,) = files

    def first(call, path):
        hits = [c[0] for c in calls if c[2] == call and path in c[3] and c[4] == 0]
        assert hits, "no %s of %s in the trace" % (call, path)
        return hits[0]

    deleted = [c[0] for c in calls if c[2] in ("unlink", "unlinkat") and c[4] == 0 and
               any(a.startswith(os.path.join(d, "buf")) or a.endswith(".chunk") for a in c[3])]
    assert deleted, "the chunk's deletion is not in the trace"
    def fsync_after(path, start):
        hits = [c[0] for c in calls
                if c[2] == "fsync" and path in c[3] and c[4] == 0 and c[0] > start]
        assert hits, "no fsync of %s after call %d in the trace" % (path, start)
        return hits[0]

    file_synced = first("fsync", f)
    assert file_synced < fsync_after(out, file_synced) < deleted[0]
    # each directory weir made: its parent fsynced after the mkdir (an fsync before it, such
    # as the buffer's own of `d` at start, would not make the new entry durable)
    for made in (out, os.path.join(d, "out", "a"), os.path.join(d, "out")):
        mkdirs = [c[0] for c in calls
                  if c[2] in ("mkdir", "mkdirat") and made in c[3] and c[4] == 0]
        assert mkdirs, "no mkdir of %s in the trace" % made
        synced = fsync_after(os.path.dirname(made), mkdirs[0])
        assert synced < deleted[0], "%s's parent synced after the chunk was deleted" % made


if __name__ == "__main__":
    run_tests([test_record_chunk_key_takes_the_last_of_a_repeated_key,
               test_odd_records_load_strictly, test_name_too_long_goes_to_backup_at_once,
               test_file_and_its_directories_are_durable_before_the_chunk_is_deleted])
