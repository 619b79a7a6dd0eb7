"""A forward-protocol sender with acks that survives a restarting receiver: it resends a frame
until it is acknowledged, as Fluentd's out_forward with require_ack_response does. It records
which events were acknowledged and which were sent more than once."""

import socket
import time

import msgpack

T0 = 1700000000


def frame(tag, seqs, chunk):
    entries = [[msgpack.ExtType(0, (T0 + s // 1000).to_bytes(4, "big") + (s % 1000).to_bytes(4, "big")),
                {"seq": s, "payload": "x" * 100}] for s in seqs]
    return msgpack.packb([tag, entries, {"chunk": chunk}], use_bin_type=True)


class AckSender:
    def __init__(self, port, tag="crash.test", ack_timeout=3.0):
        self.port = port
        self.tag = tag
        self.ack_timeout = ack_timeout
        self.sock = None
        self.acked = set()
        self.resent = set()
        self.sent_once = set()
        self.failures = 0

    def _connect(self, deadline):
        while time.time() < deadline:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                self.sock.settimeout(self.ack_timeout)
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def send(self, seqs, deadline):
        """Sends the events until acked or the deadline passes. Returns True when acked."""
        chunk = "c%d" % seqs[0]
        data = frame(self.tag, seqs, chunk)
        while time.time() < deadline:
            if self.sock is None and not self._connect(deadline):
                return False
            for s in seqs:
                if s in self.sent_once:
                    self.resent.add(s)
                self.sent_once.add(s)
            try:
                self.sock.sendall(data)
                u = msgpack.Unpacker(raw=False)
                while True:
                    buf = self.sock.recv(256)
                    if not buf:
                        raise ConnectionError("closed")
                    u.feed(buf)
                    got = next(iter(u), None)
                    if got is not None:
                        break
                if got != {"ack": chunk}:
                    raise ConnectionError("bad ack %r" % (got,))
                self.acked.update(seqs)
                return True
            except (OSError, ConnectionError):
                self.failures += 1
                try:
                    self.sock.close()
                except OSError:
                    pass
                self.sock = None
        return False

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None
