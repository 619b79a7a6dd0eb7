"""The buffer's promise: an event weir has acknowledged survives kill -9, a crash in the
middle of a write, damaged chunk files and a full disk. Real binary, real sender with acks,
real files; the final check reads the local-directory output."""

import glob
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time

from fwdclient import AckSender
from weirtest import (Weir, forward_to_file, free_port, json_field, read_chunk_events, run_tests,
                      wait_port)


def conf(port, d, buf_extra="", buf_path=None):
    return forward_to_file(port, "%s/out/events" % d, buf_path or os.path.join(d, "buf"),
                           buffer_params=["flush_mode interval", "flush_interval 3600",
                                          "flush_at_shutdown true", buf_extra])


def output_seqs(d):
    return json_field(os.path.join(d, "out", "events*.log"))


def flush_and_stop(w):
    rc = w.stop(signal.SIGTERM)
    assert rc == 0, (rc, w.log())


def test_kill9_loses_no_acknowledged_event():
    d = tempfile.mkdtemp(prefix="weir-crash-")
    port = free_port()
    text = conf(port, d)
    rounds = int(os.environ.get("WEIR_CRASH_ROUNDS", "25"))
    sender = AckSender(port)
    rng = random.Random(1234)
    stop = threading.Event()
    procs = []
    seq = 0
    kills = 0

    def start():
        w = Weir(text, workdir=d)
        w.start()
        procs.append(w)
        return w

    w = start()
    wait_port(port)

    def killer():
        nonlocal w, kills
        for _ in range(rounds):
            time.sleep(rng.uniform(0.05, 0.4))
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait()
            kills += 1
            w = start()
        stop.set()

    t = threading.Thread(target=killer)
    t.start()
    while not stop.is_set():
        n = rng.randint(1, 50)
        ok = sender.send(list(range(seq, seq + n)), time.time() + 30)
        assert ok, "no ack within 30 s"
        seq += n
    t.join()
    sender.close()
    # a clean run flushes everything that survived to the output directory
    w.proc.send_signal(signal.SIGKILL)
    w.proc.wait()
    final = Weir(text, workdir=d).start([port])
    flush_and_stop(final)
    got = output_seqs(d)
    counts = {}
    for s in got:
        counts[s] = counts.get(s, 0) + 1
    lost = sorted(s for s in sender.acked if s not in counts)
    assert not lost, "acknowledged events lost: %s" % lost[:20]
    dups = {s: c for s, c in counts.items() if c > 1}
    bad_dups = sorted(s for s in dups if s not in sender.resent)
    assert not bad_dups, "duplicates of events sent only once: %s" % bad_dups[:20]
    unknown = sorted(s for s in counts if s not in sender.sent_once)
    assert not unknown, unknown[:10]
    print("  %d kills, %d events acked, %d stored, %d duplicates (all of resent events), "
          "%d resends" % (kills, len(sender.acked), len(got), sum(c - 1 for c in dups.values()),
                          sender.failures))
    assert kills == rounds


def make_chunks(d, port, batches=5, per=10):
    """Runs weir, sends `batches` acked frames, stops it without flushing (kill -9)."""
    w = Weir(conf(port, d), workdir=d).start([port])
    s = AckSender(port)
    for b in range(batches):
        assert s.send(list(range(b * per, (b + 1) * per)), time.time() + 10)
    s.close()
    w.proc.send_signal(signal.SIGKILL)
    w.proc.wait()
    chunks = glob.glob(os.path.join(d, "buf", "buffer.*.chunk"))
    assert len(chunks) == 1, chunks
    return chunks[0]


def record_offsets(path):
    """Offsets of the records of a chunk file (16-byte headers, length at bytes 4..8)."""
    offs = []
    data = open(path, "rb").read()
    off = 0
    while off + 16 <= len(data):
        offs.append(off)
        off += 16 + int.from_bytes(data[off + 4:off + 8], "big")
    return offs, len(data)


def restart_and_flush(d, port):
    w = Weir(conf(port, d), workdir=d).start([port])
    flush_and_stop(w)
    return w.log()


def test_torn_tail_is_cut_back():
    d = tempfile.mkdtemp(prefix="weir-torn-")
    port = free_port()
    path = make_chunks(d, port)
    offs, size = record_offsets(path)
    # a crash in the middle of the last write: half of the last record is on disk
    os.truncate(path, offs[-1] + 20)
    log = restart_and_flush(d, port)
    assert "cut write" in log, log
    assert sorted(output_seqs(d)) == list(range(40)), output_seqs(d)


def test_flipped_byte_keeps_good_records_and_backs_up_the_rest():
    d = tempfile.mkdtemp(prefix="weir-flip-")
    port = free_port()
    path = make_chunks(d, port)
    offs, size = record_offsets(path)
    # records: meta, then 5 batches; damage the payload of the third batch
    with open(path, "r+b") as f:
        f.seek(offs[3] + 40)
        b = f.read(1)
        f.seek(offs[3] + 40)
        f.write(bytes([b[0] ^ 0xFF]))
    log = restart_and_flush(d, port)
    assert "checksum mismatch" in log and "kept the first 2 records (20 events)" in log, log
    assert "about 30 events" in log, log
    assert sorted(output_seqs(d)) == list(range(20))
    backups = glob.glob(os.path.join(d, "buf", "backup", "*damaged*"))
    assert len(backups) == 1 and os.path.getsize(backups[0]) == size - offs[3], backups


def test_zero_length_and_garbage_metadata():
    d = tempfile.mkdtemp(prefix="weir-meta-")
    port = free_port()
    path = make_chunks(d, port)
    bufdir = os.path.dirname(path)
    empty = os.path.join(bufdir, "buffer.b" + "0" * 31 + "1.chunk")
    open(empty, "wb").close()
    garbage = os.path.join(bufdir, "buffer.q" + "0" * 31 + "2.chunk")
    with open(garbage, "wb") as f:
        f.write(os.urandom(300))
    log = restart_and_flush(d, port)
    assert "is empty" in log and "no valid metadata" in log, log
    assert not os.path.exists(empty)
    assert os.path.exists(os.path.join(bufdir, "backup", "0" * 31 + "2.no-metadata"))
    assert sorted(output_seqs(d)) == list(range(50))


def test_second_process_on_the_same_buffer_is_refused():
    d = tempfile.mkdtemp(prefix="weir-lock-")
    p1, p2 = free_port(), free_port()
    w1 = Weir(conf(p1, d, buf_path=os.path.join(d, "buf")), workdir=d).start([p1])
    w2 = Weir(conf(p2, d, buf_path=os.path.join(d, "buf")), workdir=tempfile.mkdtemp())
    w2.start()
    rc = w2.proc.wait(10)
    assert rc == 1, rc
    assert "in use by another weir process (pid %d)" % w1.proc.pid in w2.log(), w2.log()
    flush_and_stop(w1)


def test_buffer_files_are_private():
    d = tempfile.mkdtemp(prefix="weir-perm-")
    port = free_port()
    path = make_chunks(d, port)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700


def test_disk_full_backpressure_and_recovery():
    if os.geteuid() != 0:
        raise RuntimeError("this test mounts a small tmpfs and must run as root (CI does)")
    d = tempfile.mkdtemp(prefix="weir-full-")
    mnt = os.path.join(d, "small")
    os.makedirs(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", mnt], check=True)
    try:
        port = free_port()
        w = Weir(conf(port, d, buf_path=os.path.join(mnt, "buf")), workdir=d).start([port])
        s = AckSender(port, ack_timeout=2.0)
        seq = 0
        # fill the disk: at some point an ack does not come (weir stops reading); a slow ack
        # on a loaded machine is not that, so only an ack missing after the log says the
        # disk is full ends the loop
        while True:
            ok = s.send(list(range(seq, seq + 20)), time.time() + 3)
            if not ok and "No space left on device; inputs stop reading" in w.log():
                break
            if ok:
                seq += 20
            assert seq < 100000, "the disk never filled"
        assert "No space left on device; inputs stop reading" in w.log(), w.log()
        pending = list(range(seq, seq + 20))
        # free the disk by flushing the buffer to the output directory (another filesystem)
        w.proc.send_signal(signal.SIGUSR1)
        assert s.send(pending, time.time() + 30), "not accepted after space returned"
        seq += 20
        for _ in range(5):
            assert s.send(list(range(seq, seq + 20)), time.time() + 30)
            seq += 20
        s.close()
        flush_and_stop(w)
        got = output_seqs(d)
        lost = sorted(x for x in s.acked if x not in set(got))
        assert not lost, lost[:20]
        assert "accepting events again" in w.log(), w.log()
    finally:
        subprocess.run(["umount", mnt])


def test_one_batch_across_time_buckets_lands_in_each_bucket():
    """A frame whose events span several buckets is split per event into one chunk per
    bucket, and each chunk becomes its own file named by its bucket."""
    d = tempfile.mkdtemp(prefix="weir-buckets-")
    port = free_port()
    text = forward_to_file(port, "%s/out/${tag}/%%Y%%m%%d-%%H%%M%%S" % d, "%s/buf" % d,
                           "tag,time", ["timekey 1", "timekey_wait 0", "timekey_use_utc true",
                                        "flush_at_shutdown true"])
    w = Weir(text, workdir=d).start([port])
    s = AckSender(port, tag="multi")
    # seq s has time T0 + s // 1000: 3000 events over 3 seconds, interleaved in two frames
    assert s.send(list(range(0, 3000, 2)), time.time() + 10)
    assert s.send(list(range(1, 3000, 2)), time.time() + 10)
    s.close()
    flush_and_stop(w)
    files = sorted(glob.glob(os.path.join(d, "out", "multi", "*.log")))
    names = [os.path.basename(f) for f in files]
    by_bucket = {}
    for f in files:
        stamp = os.path.basename(f).split("_")[0]
        with open(f) as fh:
            for line in fh:
                by_bucket.setdefault(stamp, []).append(json.loads(line)["seq"])
    assert sorted(by_bucket) == ["20231114-221320", "20231114-221321", "20231114-221322"], names
    for i, stamp in enumerate(sorted(by_bucket)):
        assert sorted(by_bucket[stamp]) == list(range(i * 1000, (i + 1) * 1000)), stamp


def test_failing_chunk_goes_to_backup_and_does_not_stall_others():
    """One tag's chunk cannot be written (its directory is a file); the other tag's chunks
    are delivered meanwhile; when retry_max_times runs out the failing chunk moves to
    backup/ whole, with a log line naming it; put back as docs/buffer-format.md says, it is
    delivered on the next start."""
    d = tempfile.mkdtemp(prefix="weir-backup-")
    os.makedirs(os.path.join(d, "out"))
    with open(os.path.join(d, "out", "bad"), "w") as f:
        f.write("a file where the output wants a directory\n")
    port = free_port()
    text = forward_to_file(port, "%s/out/${tag}/events" % d, "%s/buf" % d,
                           buffer_params=["flush_mode interval", "flush_interval 0.5",
                                          "retry_wait 0.2", "retry_max_times 2",
                                          "retry_randomize false"])
    w = Weir(text, workdir=d).start([port])
    bad, good = AckSender(port, tag="bad"), AckSender(port, tag="good")
    assert bad.send(list(range(0, 10)), time.time() + 10)
    for i in range(5):
        assert good.send(list(range(100 + 10 * i, 110 + 10 * i)), time.time() + 10)
        time.sleep(0.3)
    bad.close()
    good.close()
    deadline = time.time() + 20
    backup = []
    while time.time() < deadline and not backup:
        backup = glob.glob(os.path.join(d, "buf", "backup", "*.chunk"))
        time.sleep(0.1)
    assert len(backup) == 1, w.log()
    log = w.log()
    assert "moved to %s" % backup[0] in log, log
    assert "retry 2 in" in log, log

    def good_seqs():
        return sorted(json.loads(line)["seq"]
                      for f in glob.glob(os.path.join(d, "out", "good", "events*.log"))
                      for line in open(f))

    # while the bad chunk was retrying, good chunks were delivered (no shared retry state)
    assert good_seqs(), "the good tag waited for the bad one"
    deadline = time.time() + 10
    while time.time() < deadline and len(good_seqs()) < 50:
        time.sleep(0.1)
    assert good_seqs() == list(range(100, 150)), good_seqs()
    assert sorted(e["seq"] for e in read_chunk_events(backup[0])) == list(range(10))
    assert w.stop() == 0
    # put it back: fix the cause, move the chunk into the buffer as a queued chunk, start
    os.unlink(os.path.join(d, "out", "bad"))
    cid = os.path.basename(backup[0])[:-len(".chunk")]
    os.rename(backup[0], os.path.join(d, "buf", "buffer.q%s.chunk" % cid))
    w2 = Weir(text, workdir=d).start([port])
    deadline = time.time() + 10
    got = []
    while time.time() < deadline and len(got) < 10:
        got = [json.loads(line)["seq"] for f in glob.glob(os.path.join(d, "out", "bad", "*.log"))
               for line in open(f)]
        time.sleep(0.1)
    assert w2.stop() == 0
    assert sorted(got) == list(range(10)), w2.log()


def test_record_chunk_keys_split_chunks_and_name_files():
    """<buffer tag,namespace>: events go to one chunk per value of the record's namespace
    key, and ${namespace} in the path names the file; a missing key is the empty value,
    which a path cannot hold, so it becomes "_"; a value with '/' or '..' stays in its
    directory."""
    import msgpack
    d = tempfile.mkdtemp(prefix="weir-vars-")
    port = free_port()
    text = forward_to_file(port, "%s/out/${namespace}/events" % d, "%s/buf" % d,
                           "tag,namespace", ["flush_at_shutdown true"])
    w = Weir(text, workdir=d).start([port])
    sock = __import__("socket").create_connection(("127.0.0.1", port))
    records = [{"namespace": "prod", "i": 0}, {"namespace": "dev", "i": 1},
               {"namespace": "prod", "i": 2}, {"i": 3}, {"namespace": "../../etc", "i": 4}]
    entries = [[1700000000, r] for r in records]
    sock.sendall(msgpack.packb(["k8s", entries, {"chunk": "v1"}]))
    sock.settimeout(10)
    assert msgpack.unpackb(sock.recv(100)) == {"ack": "v1"}
    sock.close()
    assert w.stop() == 0, w.log()
    got = {}
    for f in glob.glob(os.path.join(d, "out", "*", "events*.log")):
        ns = os.path.basename(os.path.dirname(f))
        got[ns] = sorted(json.loads(line)["i"] for line in open(f))
    assert got == {"prod": [0, 2], "dev": [1], "_": [3], "______etc": [4]}, got
    # nothing escaped the output directory
    assert not os.path.exists(os.path.join(d, "etc"))


def fluentd_chunk(bufdir, state, cid, tag, timekey, lines):
    """Writes a chunk as Fluentd's buf_file leaves it (../shared/docs/s3-output.md 3.2-3.4):
    buffer.<state><id>.log with the formatted lines, and .meta = C1 00, u32 length, msgpack."""
    import msgpack
    name = os.path.join(bufdir, "buffer.%s%s.log" % (state, cid))
    with open(name, "wb") as f:
        f.write(b"".join(lines))
    body = msgpack.packb({"timekey": timekey, "tag": tag, "variables": None, "seq": 0,
                          "id": bytes.fromhex(cid), "s": len(lines), "c": timekey + 5,
                          "m": timekey + 9}, use_bin_type=True)
    with open(name + ".meta", "wb") as f:
        f.write(b"\xc1\x00" + len(body).to_bytes(4, "big") + body)
    return name


def test_fluentd_buffer_files_are_adopted():
    """Swapping the Fluentd container for weir on the same buffer volume keeps what Fluentd
    had not delivered: its staged and queued chunks are stored as Fluentd formatted them,
    under the keys their metadata names, and removed once delivered."""
    d = tempfile.mkdtemp(prefix="weir-adopt-")
    buf = os.path.join(d, "buf")
    os.makedirs(buf)
    tk = 1704110400  # 2024-01-01 12:00:00 UTC
    lines_q = [b'{"n":%d,"from":"fluentd"}\n' % i for i in range(3)]
    lines_b = [b'{"n":%d,"from":"fluentd-staged"}\n' % i for i in range(2)]
    q = fluentd_chunk(buf, "q", "5f32232e76a4d1bdfdbeed36c384b03b", "app.web", tk, lines_q)
    b = fluentd_chunk(buf, "b", "5f32232e76a4d1bdfdbeed36c384b03c", "app.db", tk + 3600, lines_b)
    lonely = os.path.join(buf, "buffer.q" + "a" * 32 + ".log")
    with open(lonely, "wb") as f:
        f.write(b"no meta\n")
    import gzip as gz
    zipped = fluentd_chunk(buf, "q", "b" * 32, "app.web", tk, [gz.compress(b'{"z":1}\n')])
    port = free_port()
    text = forward_to_file(port, "%s/out/${tag}/%%Y%%m%%d%%H" % d, buf, "tag,time",
                           ["timekey 3600", "timekey_use_utc true", "flush_at_shutdown true"],
                           file_params=["append true"])
    w = Weir(text, workdir=d).start([port])
    deadline = time.time() + 10
    want = {os.path.join(d, "out", "app.web", "2024010112.log"): b"".join(lines_q),
            os.path.join(d, "out", "app.db", "2024010113.log"): b"".join(lines_b)}
    while time.time() < deadline and not all(os.path.exists(p) for p in want):
        time.sleep(0.1)
    assert w.stop() == 0, w.log()
    for path, data in want.items():
        assert open(path, "rb").read() == data, path
    for f in (q, q + ".meta", b, b + ".meta"):
        assert not os.path.exists(f), f
    assert os.path.exists(lonely), "a Fluentd file without .meta must be left alone"
    assert os.path.exists(zipped) and os.path.exists(zipped + ".meta")
    log = w.log()
    assert "adopted 2 chunks that Fluentd left" in log, log
    assert "its .meta is missing or unreadable; left as it is" in log, log
    assert "compressed with gzip (compress gzip); weir cannot adopt it" in log, log


def test_memory_buffer_flushes_at_shutdown():
    """@type memory acknowledges at once and, as in Fluentd (flush_at_shutdown defaults to
    true for memory), delivers everything when weir stops."""
    d = tempfile.mkdtemp(prefix="weir-mem-")
    port = free_port()
    w = Weir(forward_to_file(port, "%s/out/events" % d, None,
                             buffer_params=["flush_mode interval", "flush_interval 3600"]),
             workdir=d).start([port])
    s = AckSender(port)
    for b in range(4):
        assert s.send(list(range(b * 5, b * 5 + 5)), time.time() + 10)
    s.close()
    assert not output_seqs(d), "flushed before the interval or the stop"
    flush_and_stop(w)
    assert output_seqs(d) == list(range(20))


def test_chunk_limit_records_cuts_chunks():
    """chunk_limit_records 10: a chunk is enqueued as soon as it holds 10 events and
    delivered at once, long before flush_interval; no file holds more than 10."""
    d = tempfile.mkdtemp(prefix="weir-records-")
    port = free_port()
    w = Weir(forward_to_file(port, "%s/out/events" % d, "%s/buf" % d,
                             buffer_params=["flush_mode interval", "flush_interval 3600",
                                            "flush_at_shutdown true", "chunk_limit_records 10"]),
             workdir=d).start([port])
    s = AckSender(port)
    for b in range(7):
        assert s.send(list(range(b * 5, b * 5 + 5)), time.time() + 10)
    s.close()
    deadline = time.time() + 10
    while time.time() < deadline and len(output_seqs(d)) < 30:
        time.sleep(0.1)
    assert sorted(output_seqs(d)) == list(range(30)), output_seqs(d)
    flush_and_stop(w)
    files = sorted(glob.glob(os.path.join(d, "out", "events*.log")))
    sizes = [len(open(f).readlines()) for f in files]
    assert sizes == [10, 10, 10, 5], sizes
    assert sorted(output_seqs(d)) == list(range(35))


def test_overflow_drop_oldest_chunk_keeps_accepting():
    """overflow_action drop_oldest_chunk: with the output failing and the buffer at
    total_limit_size, weir drops the oldest queued chunk (a warning names it and its event
    count) and keeps acknowledging, instead of stopping the senders."""
    d = tempfile.mkdtemp(prefix="weir-drop-")
    with open(os.path.join(d, "out"), "w") as f:
        f.write("a file where the output wants a directory\n")
    port = free_port()
    w = Weir(forward_to_file(port, "%s/out/events" % d, "%s/buf" % d,
                             buffer_params=["chunk_limit_records 5", "total_limit_size 2k",
                                            "overflow_action drop_oldest_chunk",
                                            "retry_wait 30s", "flush_mode interval",
                                            "flush_interval 3600"]),
             workdir=d).start([port])
    s = AckSender(port, ack_timeout=5)
    for b in range(12):
        assert s.send(list(range(b * 5, b * 5 + 5)), time.time() + 10), "blocked at batch %d" % b
    s.close()
    log = w.log()
    assert "overflow_action drop_oldest_chunk: dropping chunk" in log, log
    assert "with 5 events" in log, log
    w.proc.kill()
    w.proc.wait()


def test_staged_chunks_are_bounded_whatever_tags_senders_choose():
    """Every tag opens a staged chunk (a file held open) under <buffer tag>; a sender choosing
    tags cannot make weir hold more than staged_chunks_limit open: past it the oldest staged
    chunk is enqueued (and here delivered) early, with a warning."""
    d = tempfile.mkdtemp(prefix="weir-staged-")
    port = free_port()
    w = Weir(forward_to_file(port, "%s/out/${tag}/events" % d, "%s/buf" % d,
                             buffer_params=["flush_mode interval", "flush_interval 3600",
                                            "flush_at_shutdown true", "staged_chunks_limit 3"]),
             workdir=d).start([port])
    for i in range(8):
        s = AckSender(port, tag="t%d" % i)
        assert s.send([i], time.time() + 10)
        s.close()
    deadline = time.time() + 10
    early = []
    while time.time() < deadline and len(early) < 5:
        early = sorted(os.path.basename(os.path.dirname(f))
                       for f in glob.glob(os.path.join(d, "out", "*", "events*.log")))
        time.sleep(0.1)
    assert early == ["t0", "t1", "t2", "t3", "t4"], early
    open_chunks = [os.readlink(os.path.join("/proc/%d/fd" % w.proc.pid, f))
                   for f in os.listdir("/proc/%d/fd" % w.proc.pid)]
    assert len([f for f in open_chunks if f.endswith(".chunk")]) <= 3, open_chunks
    assert "chunks staged at once (staged_chunks_limit)" in w.log(), w.log()
    flush_and_stop(w)
    assert sorted(json_field(os.path.join(d, "out", "*", "events*.log"))) == list(range(8))


def packed_forward(tag, entries, chunk):
    """A PackedForward frame (entries as one msgpack bin) asking for an ack."""
    import msgpack
    blob = b"".join(msgpack.packb([t, r], use_bin_type=True) for t, r in entries)
    return msgpack.packb([tag, blob, {"chunk": chunk}], use_bin_type=True)


def send_and_ack(port, data, chunk, timeout=20):
    """Sends one frame; returns True when its ack arrives, False when the connection closes
    or stays silent for `timeout` seconds."""
    import msgpack
    import socket
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(timeout)
    try:
        sock.sendall(data)
        u = msgpack.Unpacker(raw=False)
        while True:
            buf = sock.recv(256)
            if not buf:
                return False
            u.feed(buf)
            for got in u:
                return got == {"ack": chunk}
    except OSError:
        return False
    finally:
        sock.close()


def test_frame_spanning_200_time_buckets_is_stored_and_acked():
    """A forwarder replaying an outage backlog: one PackedForward frame whose events span 200
    minutes, into <buffer time> with timekey 60 (one chunk per minute, 200 chunks touched by
    one append). It is acknowledged, and every event reaches the output; nothing is left in
    the buffer afterwards."""
    import msgpack
    d = tempfile.mkdtemp(prefix="weir-span-")
    port = free_port()
    w = Weir(forward_to_file(port, "%s/out/events" % d, "%s/buf" % d, "time",
                             ["timekey 60", "timekey_wait 0", "timekey_use_utc true",
                              "flush_at_shutdown true"]),
             workdir=d).start([port])
    t0 = 1700000000
    entries = [[msgpack.ExtType(0, (t0 + 30 * i).to_bytes(4, "big") + bytes(4)),
                {"seq": i}] for i in range(400)]  # 400 events, 30 s apart: 200 minutes
    assert send_and_ack(port, packed_forward("backlog", entries, "span1"), "span1"), w.log()
    flush_and_stop(w)
    assert sorted(output_seqs(d)) == list(range(400)), w.log()
    assert not glob.glob(os.path.join(d, "buf", "buffer.*.chunk"))


def test_event_larger_than_chunk_limit_size_is_stored_in_its_own_chunk():
    """chunk_limit_size 1k and one event of 4 KiB between small ones: the frame is
    acknowledged, the big event is stored in a chunk of its own (with a warning) and
    delivered with the others: never acknowledged and dropped."""
    import msgpack
    d = tempfile.mkdtemp(prefix="weir-big-")
    port = free_port()
    w = Weir(forward_to_file(port, "%s/out/events" % d, "%s/buf" % d,
                             buffer_params=["chunk_limit_size 1k", "flush_at_shutdown true"]),
             workdir=d).start([port])
    t = msgpack.ExtType(0, (1700000000).to_bytes(4, "big") + bytes(4))
    # the big event opens the frame: it starts a run of its own
    entries = [[t, {"seq": 1, "big": "x" * 4096}], [t, {"seq": 0}], [t, {"seq": 2}]]
    assert send_and_ack(port, packed_forward("big", entries, "big1"), "big1"), w.log()
    flush_and_stop(w)
    assert sorted(output_seqs(d)) == [0, 1, 2], w.log()
    assert "larger than chunk_limit_size" in w.log() and "a chunk of its own" in w.log(), w.log()


def chunk_fds(pid):
    """What the process holds open under a buffer: the targets of its fds that are chunk
    files (a deleted one reads "... (deleted)")."""
    out = []
    for f in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, f))
        except OSError:
            continue
        if ".chunk" in target:
            out.append(target)
    return out


def test_ack_after_write_holds_no_descriptor_of_delivered_chunks():
    """ack_after write over 150 chunks (chunk_limit_records 2, each delivered at once): every
    event arrives, and weir holds no descriptor of a chunk it deleted (which would keep its
    disk space and, after hours, run out of descriptors): at most the one staged chunk."""
    d = tempfile.mkdtemp(prefix="weir-ackwrite-")
    port = free_port()
    w = Weir(forward_to_file(port, "%s/out/events" % d, "%s/buf" % d,
                             buffer_params=["ack_after write", "chunk_limit_records 2",
                                            "flush_mode interval", "flush_interval 3600",
                                            "flush_at_shutdown true"]),
             workdir=d).start([port])
    s = AckSender(port)
    for b in range(150):
        assert s.send([2 * b, 2 * b + 1], time.time() + 10)
    s.close()
    deadline = time.time() + 20
    while time.time() < deadline and len(output_seqs(d)) < 300:
        time.sleep(0.1)
    assert sorted(output_seqs(d)) == list(range(300)), w.log()
    held = chunk_fds(w.proc.pid)
    deleted = [f for f in held if f.endswith("(deleted)")]
    assert not deleted, "%d descriptors of deleted chunks, e.g. %s" % (len(deleted), deleted[0])
    assert len(held) <= 1, held
    flush_and_stop(w)


TAG_MAX = 1024  # WEIR_TAG_MAX in include/weir/event.h


def test_tag_limit_forward_and_restart():
    """A tag of exactly WEIR_TAG_MAX bytes is acknowledged, kept in the chunk's metadata and
    delivered after a kill -9 and a restart; one byte more is refused where it enters: the
    connection is closed with no ack and a log line saying why (before, a 70,000-byte tag was
    acknowledged and its chunk refused at recovery as too large: lost)."""
    import msgpack
    d = tempfile.mkdtemp(prefix="weir-tagmax-")
    port = free_port()
    text = conf(port, d)
    w = Weir(text, workdir=d).start([port])
    t = msgpack.ExtType(0, (1700000000).to_bytes(4, "big") + bytes(4))
    at, past = "a" * TAG_MAX, "b" * (TAG_MAX + 1)
    assert send_and_ack(port, packed_forward(at, [[t, {"seq": 1}]], "at"), "at"), w.log()
    assert not send_and_ack(port, packed_forward(past, [[t, {"seq": 2}]], "past"), "past", 5)
    assert not send_and_ack(port, packed_forward("c" * 70000, [[t, {"seq": 3}]], "huge"), "huge",
                            5)
    assert "longer than %d bytes" % TAG_MAX in w.log(), w.log()
    w.proc.send_signal(signal.SIGKILL)
    w.proc.wait()
    log = restart_and_flush(d, port)
    assert output_seqs(d) == [1], log
    assert not glob.glob(os.path.join(d, "buf", "backup", "*")), log


def test_tag_limit_http():
    """The HTTP input takes the tag from the path (with add_tag_prefix): a tag of exactly
    WEIR_TAG_MAX bytes is stored (200), one byte more is answered 400 with the reason, and
    nothing of it is stored."""
    import http.client
    d = tempfile.mkdtemp(prefix="weir-httptag-")
    port, fport = free_port(), free_port()
    text = forward_to_file(fport, "%s/out/events" % d, "%s/buf" % d,
                           buffer_params=["flush_at_shutdown true"],
                           sources="<source>\n  @type http\n  port %d\n  bind 127.0.0.1\n"
                                   "  add_tag_prefix p\n</source>" % port)
    w = Weir(text, workdir=d).start([port, fport])

    def post(tag, seq):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("POST", "/" + tag, body=json.dumps({"seq": seq}),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        return r.status, body

    assert post("a" * (TAG_MAX - 2), 1)[0] == 200  # "p." + 1022 bytes: exactly the limit
    status, body = post("a" * (TAG_MAX - 1), 2)
    assert status == 400 and "longer than %d bytes" % TAG_MAX in body, (status, body)
    flush_and_stop(w)
    assert output_seqs(d) == [1], w.log()


def test_tag_of_each_event_survives_a_chunk_of_several_tags():
    """<buffer time> (the fluent-plugin-s3 documentation's setup): a chunk holds the batches
    of several tags. With <inject> tag_key, every output line carries the tag its own event
    was sent with, for a file buffer (also across a kill -9 and a restart) and for a memory
    buffer."""
    for buf in ("file", "memory"):
        d = tempfile.mkdtemp(prefix="weir-tagkey-")
        port = free_port()
        text = forward_to_file(port, "%s/out/events" % d,
                               "%s/buf" % d if buf == "file" else None, "time",
                               ["timekey 3600", "flush_at_shutdown true"],
                               file_params=["<inject>\n    tag_key tag\n  </inject>"])
        w = Weir(text, workdir=d).start([port])
        a, b = AckSender(port, tag="app.a"), AckSender(port, tag="app.b")
        for i in range(3):
            assert a.send([10 * i, 10 * i + 1], time.time() + 10)
            assert b.send([10 * i + 5], time.time() + 10)
        a.close()
        b.close()
        if buf == "file":
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait()
            w = Weir(text, workdir=d).start([port])
        flush_and_stop(w)
        tags = dict(zip(output_seqs(d), json_field(os.path.join(d, "out", "events*.log"),
                                                   "tag")))
        want = {s: "app.b" if s % 10 == 5 else "app.a" for s in (0, 1, 5, 10, 11, 15, 20, 21, 25)}
        assert tags == want, (buf, tags)


if __name__ == "__main__":
    run_tests([
        test_kill9_loses_no_acknowledged_event,
        test_torn_tail_is_cut_back,
        test_flipped_byte_keeps_good_records_and_backs_up_the_rest,
        test_zero_length_and_garbage_metadata,
        test_second_process_on_the_same_buffer_is_refused,
        test_buffer_files_are_private,
        test_disk_full_backpressure_and_recovery,
        test_one_batch_across_time_buckets_lands_in_each_bucket,
        test_failing_chunk_goes_to_backup_and_does_not_stall_others,
        test_record_chunk_keys_split_chunks_and_name_files,
        test_fluentd_buffer_files_are_adopted,
        test_memory_buffer_flushes_at_shutdown,
        test_chunk_limit_records_cuts_chunks,
        test_overflow_drop_oldest_chunk_keeps_accepting,
        test_staged_chunks_are_bounded_whatever_tags_senders_choose,
        test_frame_spanning_200_time_buckets_is_stored_and_acked,
        test_event_larger_than_chunk_limit_size_is_stored_in_its_own_chunk,
        test_ack_after_write_holds_no_descriptor_of_delivered_chunks,
        test_tag_limit_forward_and_restart,
        test_tag_limit_http,
        test_tag_of_each_event_survives_a_chunk_of_several_tags,
    ])
