"""A peer that asks and never reads the answers cannot grow weir's write queue: past
WEIR_INGEST_MAX_UNSENT (1 MiB) of unread answers weir stops reading that connection, on every
input. Two cheap ways to ask for a lot: pipelined GET /metrics on the monitoring port (each
answer is the whole metrics page), and forward frames with no events and a long `chunk`
option, each acknowledged at once by echoing the chunk. Each sends ~20 MB of answers' worth
of requests; weir must say it stopped reading and stay small."""

import msgpack
import socket
import time

from weirtest import Weir, free_port, http_get, rss_env, rss_kib, run_tests, wait_for

GROWTH_MAX_KB = 16 * 1024  # 1 MiB queued per connection, plus the pages being built


def push(port, payload, count):
    """Sends `payload` `count` times on one connection without reading; returns the socket
    (open) and how many were sent before the kernel's buffers filled."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    sent = 0
    data = payload * count
    deadline = time.time() + 20
    while sent < len(data) and time.time() < deadline:
        try:
            sent += s.send(data[sent:sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
    return s


def test_unread_answers_are_bounded_on_every_input():
    fwd, prom = free_port(), free_port()
    conf = """
<system>
  log_level debug
</system>
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
<match **>
  @type null
</match>
""" % (fwd, prom)
    with Weir(conf, env=rss_env()).start(wait_ports=(fwd, prom)) as w:
        base = rss_kib(w.proc.pid)
        get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        page = len(http_get(prom, "/metrics")[2])
        assert page > 1000, page
        a = push(prom, get, 20 * 1024 * 1024 // page)
        wait_for(lambda: "monitor: 127.0.0.1 is not reading its responses" in w.log(),
                 timeout=20, what="the monitor to stop reading")
        frame = msgpack.packb(["t", [], {"chunk": "c" * 100000}], use_bin_type=True)
        b = push(fwd, frame, 200)
        wait_for(lambda: "forward: 127.0.0.1 is not reading its responses" in w.log(),
                 timeout=20, what="forward to stop reading")
        grown = rss_kib(w.proc.pid) - base
        assert grown < GROWTH_MAX_KB, (grown, w.log()[-2000:])
        a.close()
        b.close()
        assert w.stop() == 0


if __name__ == "__main__":
    run_tests([test_unread_answers_are_bounded_on_every_input])
