"""SIGHUP reloads the configuration under load: a source whose <source> did not change keeps
its connections (the sender never reconnects), no acknowledged event is lost, buffered
chunks carry over to the new output, a bad file is refused with the old configuration still
running, and a configuration that cannot start (a port in use) is rolled back."""

import glob
import json
import os
import signal
import socket
import tempfile
import threading
import time

from fwdclient import AckSender
from weirtest import Weir, forward_to_file, free_port, json_field, run_tests, wait_port


def conf(port, d, out, extra_source=""):
    return forward_to_file(port, "%s/%s/events" % (d, out), "%s/buf" % d,
                           buffer_params=["flush_mode interval", "flush_interval 3600",
                                          "flush_at_shutdown true"],
                           sources=extra_source)


def seqs_in(d):
    return json_field(os.path.join(d, "*", "events*.log"))


def wait_log(w, text, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in w.log():
            return
        time.sleep(0.05)
    raise AssertionError("%r not in the log:\n%s" % (text, w.log()))


def test_reload_under_load_keeps_connections_and_events():
    d = tempfile.mkdtemp(prefix="weir-reload-")
    port, port2 = free_port(), free_port()
    w = Weir(conf(port, d, "out1"), workdir=d).start([port])
    sender = AckSender(port)
    stop = threading.Event()
    sent = [0]

    def send_loop():
        seq = 0
        while not stop.is_set():
            assert sender.send(list(range(seq, seq + 10)), time.time() + 30), "no ack in 30 s"
            seq += 10
            sent[0] = seq

    t = threading.Thread(target=send_loop)
    t.start()
    time.sleep(0.5)
    # 1: a new output directory and a second source; the first source is unchanged
    with open(w.conf, "w") as f:
        f.write(conf(port, d, "out2", "<source>\n  @type forward\n  port %d\n  bind 127.0.0.1\n"
                     "</source>" % port2))
    w.proc.send_signal(signal.SIGHUP)
    wait_log(w, "the new configuration is running")
    wait_port(port2)
    time.sleep(0.5)
    # 2: a file that does not parse is refused; weir keeps running the last good one
    # (SIGUSR2 is Fluentd's graceful reload signal and does the same as SIGHUP)
    with open(w.conf, "w") as f:
        f.write("<source>\n  @type forward\n  port %d\n" % port)
    w.proc.send_signal(signal.SIGUSR2)
    wait_log(w, "reload refused, the running configuration stays")
    time.sleep(0.5)
    stop.set()
    t.join()
    sender.close()
    assert w.stop() == 0, w.log()
    assert sender.failures == 0, "the sender had to reconnect %d times" % sender.failures
    got = seqs_in(d)
    lost = sorted(set(sender.acked) - set(got))
    assert not lost, lost[:20]
    assert len(got) == len(set(got)), "duplicates without any resend"
    assert sent[0] > 100, sent
    # events from before the reload were in the buffer and carried over: all land in out2
    assert not glob.glob(os.path.join(d, "out1", "*")), "the old output flushed on reload"


def test_reload_that_cannot_start_rolls_back():
    d = tempfile.mkdtemp(prefix="weir-rollback-")
    port = free_port()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    busy_port = busy.getsockname()[1]
    w = Weir(conf(port, d, "out"), workdir=d).start([port])
    s = AckSender(port)
    assert s.send(list(range(0, 10)), time.time() + 10)
    with open(w.conf, "w") as f:
        f.write(conf(port, d, "out", "<source>\n  @type forward\n  port %d\n  bind 127.0.0.1\n"
                     "</source>" % busy_port))
    w.proc.send_signal(signal.SIGHUP)
    wait_log(w, "the previous configuration runs again")
    assert "cannot start" in w.log()
    assert s.send(list(range(10, 20)), time.time() + 10), "old configuration not serving"
    s.close()
    assert w.stop() == 0
    busy.close()
    assert sorted(seqs_in(d)) == list(range(20))
    assert s.failures == 0


if __name__ == "__main__":
    run_tests([
        test_reload_under_load_keeps_connections_and_events,
        test_reload_that_cannot_start_rolls_back,
    ])
