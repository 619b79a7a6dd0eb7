"""Hostile peers against one weir process, in sequence, under a low descriptor limit: an idle
connection flood, slow senders (slowloris) on both inputs, unauthenticated handshakes that stall
or send a huge PING, many peers holding large partial frames, and more connections than
max_connections. Throughout, a legitimate sender with acks is served (its events reach the
output files), and weir's resident memory stays bounded.

What each limit is: include/weir/ingest.h (the connection layer)."""

import glob
import json
import os
import resource
import socket
import struct
import subprocess
import tempfile
import time

import msgpack

import weirtest
from fwdclient import AckSender
from weirtest import free_port, wait_port

NOFILE = 64  # sockets may take half (32); the rest is the buffer's files and the listeners
PREAUTH_LIMIT = 8192  # WEIR_INGEST_PREAUTH_LIMIT


def low_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


class Hostile:
    """One weir with three sources: plain forward (the legitimate sender's), forward with
    <security>, and http; everything into @type file through a file buffer keyed by tag, so
    every new tag needs new chunk files: descriptors the sockets must not take."""

    def __init__(self, extra_fwd="", extra_http="", extra_sec=""):
        self.dir = tempfile.mkdtemp(prefix="weir-hostile-")
        self.p_fwd, self.p_sec, self.p_http = free_port(), free_port(), free_port()
        self.p_prom = free_port()
        conf = """
<source>
  @type forward
  port %d
  bind 127.0.0.1
%s
</source>
<source>
  @type forward
  port %d
  bind 127.0.0.1
%s
  <security>
    self_hostname weir
    shared_key secret
  </security>
</source>
<source>
  @type http
  port %d
  bind 127.0.0.1
%s
</source>
<source>
  @type prometheus
  port %d
  bind 127.0.0.1
</source>
<match **>
  @type file
  path %s/out/${tag}
  <format>
    @type json
  </format>
  <buffer tag>
    @type file
    path %s/buf
    flush_mode interval
    flush_interval 1s
    flush_at_shutdown true
  </buffer>
</match>
""" % (self.p_fwd, extra_fwd, self.p_sec, extra_sec, self.p_http, extra_http, self.p_prom,
       self.dir, self.dir)
        self.conf = os.path.join(self.dir, "fluent.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.err = open(os.path.join(self.dir, "stderr.log"), "ab")
        self.proc = subprocess.Popen([weirtest.WEIR_BIN, "-c", self.conf], stdout=self.err,
                                     stderr=self.err, cwd=self.dir, preexec_fn=low_nofile,
                                     env=weirtest.rss_env())
        for p in (self.p_fwd, self.p_sec, self.p_http, self.p_prom):
            wait_port(p)
        self.seq = 0
        self.tags = 0

    def log(self):
        with open(os.path.join(self.dir, "stderr.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def metric(self, name, plugin_type):
        return weirtest.metric_at(self.p_prom, name, type=plugin_type)

    def forward_connections(self):
        """Open connections of both forward sources together; None while the scrape's own
        connection is refused (the descriptor share is full)."""
        try:
            m = weirtest.scrape(self.p_prom)
        except OSError:
            return None
        return sum(v for (n, labels), v in m.items()
                   if n == "weir_input_connections" and ("type", "forward") in labels)

    def rss_kib(self):
        return weirtest.rss_kib(self.proc.pid)

    def legit(self, sender, new_tag=True):
        """One frame from the legitimate sender, under a new tag (new chunk files) unless
        told otherwise; it must be acknowledged."""
        if new_tag:
            self.tags += 1
            sender.tag = "legit.t%d" % self.tags
        self.seq += 1
        ok = sender.send([self.seq], time.time() + 20)
        assert ok, "legitimate sender not acked (seq %d):\n%s" % (self.seq, self.log()[-3000:])

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(30)
        self.err.close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output_seqs(self):
        seqs = []
        for f in glob.glob(os.path.join(self.dir, "out", "legit.*")):
            with open(f) as fh:
                seqs += [json.loads(line)["seq"] for line in fh]
        return sorted(seqs)


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def closed_by_peer(s, timeout):
    """True when the peer closes (EOF or reset) within `timeout`; data is read and dropped."""
    s.settimeout(timeout)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if not s.recv(65536):
                return True
    except socket.timeout:
        return False
    except OSError:
        return True
    return False


def partial_frame(total, declared):
    """`total` bytes of a PackedForward frame whose entries claim `declared` bytes."""
    head = b"\x93\xa4test" + b"\xc6" + struct.pack(">I", declared)
    return head + b"x" * (total - len(head))


# ---- the idle flood (the report: 80 idle connections under a low limit stopped acks) ------

def test_idle_flood_under_low_fd_limit():
    """80 connections that send nothing, with RLIMIT_NOFILE 64. The ones past the descriptor
    share are refused at once; the established sender keeps getting acks for events under new
    tags (new chunk files), and once the idle ones are gone a new sender is served too."""
    w = Hostile(extra_fwd="  progress_timeout 3")
    try:
        sender = AckSender(w.p_fwd)
        w.legit(sender)
        idle = []
        for _ in range(80):
            try:
                idle.append(connect(w.p_fwd))
            except OSError:
                pass
        weirtest.wait_for(lambda: "refusing the connection" in w.log(), what="refusals")
        for _ in range(5):
            w.legit(sender)
        # acked at once, not after retries around a buffer that could not open its files
        assert sender.failures == 0, w.log()[-2000:]
        assert "Too many open files" not in w.log()
        assert "refusing the connection" in w.log()
        # the idle ones are closed at progress_timeout; then a new sender gets in
        weirtest.wait_for(lambda: w.forward_connections() == 1, timeout=10,
                          what="the idle connections closed")
        sender2 = AckSender(w.p_fwd)
        w.legit(sender2)
        w.legit(sender)
        assert "sent nothing within progress_timeout" in w.log()
        for s in idle:
            s.close()
        sender.close()
        sender2.close()
        assert w.stop() == 0
        assert w.output_seqs() == list(range(1, w.seq + 1))
    finally:
        w.kill()


# ---- everything against one process, in sequence ------------------------------------------

def test_hostile_sequence():
    w = Hostile(extra_fwd="  progress_timeout 3\n  chunk_size_limit 4m\n  connection_memory_limit 8m",
                extra_sec="  handshake_timeout 2",
                extra_http="  max_connections 4\n  keepalive_timeout 30\n  progress_timeout 3")
    try:
        sender = AckSender(w.p_fwd)
        w.legit(sender)
        time.sleep(0.5)
        rss0 = w.rss_kib()
        peak = rss0

        # 1. slowloris on forward: a frame trickled a byte at a time is closed at the deadline,
        # though every byte came well within it
        s = connect(w.p_fwd)
        frame = partial_frame(400, 1000)
        closed = False
        for i in range(len(frame)):
            try:
                s.sendall(frame[i:i + 1])
            except OSError:
                closed = True
                break
            if closed_by_peer(s, 0.25):
                closed = True
                break
            if i % 4 == 0:
                w.legit(sender, new_tag=False)
            if i > 40:
                break
        assert closed, "a trickled frame was not cut off"
        assert "did not arrive whole within 3 s" in w.log()
        s.close()
        # ...while a frame that arrives whole in time, slowly, is stored and acked
        s = connect(w.p_fwd)
        w.seq += 1
        good = msgpack.packb(["legit.slow", [[1700000000, {"seq": w.seq}]], {"chunk": "slow"}])
        for i in range(0, len(good), 4):
            s.sendall(good[i:i + 4])
            time.sleep(0.05)
        s.settimeout(5)
        assert msgpack.unpackb(s.recv(100), raw=False) == {"ack": "slow"}
        s.close()

        # 2. slowloris on http headers
        s = connect(w.p_http)
        s.sendall(b"POST /legit.http HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for i in range(40):
            try:
                s.sendall(b"X")
            except OSError:
                closed = True
                break
            if closed_by_peer(s, 0.25):
                closed = True
                break
        assert closed, "trickled HTTP headers were not cut off"
        s.close()
        w.legit(sender)
        peak = max(peak, w.rss_kib())

        # 3. handshake: a PING of exactly the pre-auth limit is waited for, one byte more is
        # refused; a peer that never sends its PING is closed at handshake_timeout
        at = connect(w.p_sec)
        past = connect(w.p_sec)
        stall = connect(w.p_sec)
        big = partial_frame(PREAUTH_LIMIT + 1, 1 << 20)
        at.sendall(big[:PREAUTH_LIMIT])
        past.sendall(big)
        assert closed_by_peer(past, 1.5), "a PING past the pre-auth limit was kept"
        assert not closed_by_peer(at, 0.3), "a PING at the pre-auth limit was refused"
        assert "more than %d bytes before authenticating" % PREAUTH_LIMIT in w.log()
        assert closed_by_peer(stall, 4), "a peer that never authenticates was kept"
        assert closed_by_peer(at, 2)
        for s in (at, past, stall):
            s.close()
        w.legit(sender)
        peak = max(peak, w.rss_kib())

        # 4. memory: 20 peers each hold a 2 MiB partial frame (40 MiB; each is within the
        # per-connection cap). connection_memory_limit 8m stops reading them past 8 MiB.
        hogs = []
        blob = partial_frame(2 << 20, 3 << 20)
        for _ in range(20):
            h = connect(w.p_fwd)
            h.setblocking(False)
            hogs.append([h, 0])
        t_end = time.time() + 2
        while time.time() < t_end:
            for hog in hogs:
                try:
                    hog[1] += hog[0].send(blob[hog[1]:hog[1] + 65536])
                except (BlockingIOError, OSError):
                    pass
            w.legit(sender, new_tag=False)
            peak = max(peak, w.rss_kib())
        sent = sum(h[1] for h in hogs)
        assert sent >= 8 << 20, "the hogs could not even send %d bytes" % sent
        grown = peak - rss0
        # the budget (8 MiB) plus one 64 KiB read per connection, with buffer slack: far below
        # what 20 unbounded peers hold (40 MiB of frames, 80 MiB of buffer capacity)
        assert grown < 32 * 1024, "RSS grew by %d KiB with the hogs" % grown
        for hog in hogs:
            hog[0].close()
        w.legit(sender)

        # 5. connections: max_connections 4 on http: the 4th is kept, the 5th refused at once,
        # and the four established ones are served
        conns = [connect(w.p_http) for _ in range(4)]
        fifth = connect(w.p_http)
        assert closed_by_peer(fifth, 2), "a connection past max_connections was kept"
        for c in conns:
            assert not closed_by_peer(c, 0.1)
        w.seq += 1
        body = json.dumps({"seq": w.seq}).encode()
        conns[3].sendall(b"POST /legit.http HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        conns[3].settimeout(5)
        assert conns[3].recv(100).startswith(b"HTTP/1.1 200")
        assert "max_connections 4" in w.log()
        assert w.metric("weir_input_connections_refused_total", "http") == 1
        for c in conns:
            c.close()
        w.legit(sender)
        peak = max(peak, w.rss_kib())
        assert peak - rss0 < 32 * 1024

        sender.close()
        assert w.stop() == 0
        assert w.output_seqs() == list(range(1, w.seq + 1)), w.output_seqs()
    finally:
        w.kill()


def test_limit_parameters_checked():
    """A budget below the largest unit could never read that unit: refused at start, as are
    nonsense values; an explicit budget at the unit limit is fine."""
    d = tempfile.mkdtemp(prefix="weir-hostile-conf-")
    cases = [
        ("@type forward\n  chunk_size_limit 4m\n  connection_memory_limit 4m", None),
        ("@type forward\n  chunk_size_limit 4m\n  connection_memory_limit 3m",
         "connection_memory_limit (3145728) is below chunk_size_limit (4194304)"),
        ("@type http\n  connection_memory_limit 1m", "is below body_size_limit"),
        ("@type forward\n  max_connections 0", "max_connections must be at least 1"),
        ("@type forward\n  handshake_timeout 0", "handshake_timeout must be positive"),
    ]
    for body, want in cases:
        path = os.path.join(d, "c.conf")
        with open(path, "w") as f:
            f.write("<source>\n  %s\n</source>\n<match **>\n  @type null\n</match>\n" % body)
        rc, err = weirtest.dry_run(path)
        if want is None:
            assert rc == 0, err
        else:
            assert rc != 0 and want in err, err


if __name__ == "__main__":
    weirtest.run_tests([test_limit_parameters_checked, test_idle_flood_under_low_fd_limit,
                        test_hostile_sequence])
