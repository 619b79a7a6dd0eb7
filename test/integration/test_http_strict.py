"""RFC 9112 strictness of weir's one HTTP/1.1 request reader, on both servers that use it (the
http input and the monitoring server): whitespace between a header name and its colon
(section 5.1) and a line ending in a bare LF (section 2.2) are answered 400 and the connection
closed; the same request written correctly is served."""

import socket
import time

import weirtest
from weirtest import Weir, free_port


def exchange(port, data, timeout=5):
    """Sends `data`, returns everything the server wrote until it closed (or the timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    got = b""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except socket.timeout:
        pass
    except ConnectionResetError:
        pass
    s.close()
    return got


BODY = b'{"seq": 1}'


def post(cl_line=b"Content-Length: %d" % len(BODY), eol=b"\r\n"):
    return (b"POST /strict.test HTTP/1.1" + eol + b"Host: x" + eol +
            b"Content-Type: application/json" + eol + b"Connection: close" + eol + cl_line + eol +
            eol + BODY)


def get(name_sep=b":", eol=b"\r\n"):
    return (b"GET /metrics HTTP/1.1" + eol + b"Host" + name_sep + b" x" + eol +
            b"Connection: close" + eol + eol)


def test_strict_requests():
    http, prom = free_port(), free_port()
    conf = """
<source>
  @type http
  port %d
  bind 127.0.0.1
</source>
<source>
  @type prometheus
  port %d
  bind 127.0.0.1
</source>
<match **>
  @type stdout
</match>
""" % (http, prom)
    with Weir(conf).start(wait_ports=(http, prom)) as w:
        # in_http: the correct request is stored, the two invalid ones get 400 and no event
        assert exchange(http, post()).startswith(b"HTTP/1.1 200 ")
        r = exchange(http, post(cl_line=b"Content-Length : %d" % len(BODY)))
        assert r.startswith(b"HTTP/1.1 400 "), r
        assert b"RFC 9112" in r
        r = exchange(http, post(eol=b"\n"))
        assert r.startswith(b"HTTP/1.1 400 "), r
        # one LF without CR among CRLFs is enough, the empty line that ends the head included
        r = exchange(http, post().replace(b"Host: x\r\n", b"Host: x\n"))
        assert r.startswith(b"HTTP/1.1 400 "), r
        r = exchange(http, post().replace(b"\r\n\r\n", b"\r\n\n"))
        assert r.startswith(b"HTTP/1.1 400 "), r
        # the monitoring server: the same reader
        assert exchange(prom, get()).startswith(b"HTTP/1.1 200 ")
        r = exchange(prom, get(name_sep=b" :"))
        assert r.startswith(b"HTTP/1.1 400 "), r
        r = exchange(prom, get(eol=b"\n"))
        assert r.startswith(b"HTTP/1.1 400 "), r
        # a last correct request: each one before it was answered before it was sent, so an
        # event of theirs would be out before this one's
        assert exchange(http, post().replace(BODY, b'{"seq": 2}').replace(
            b"Content-Length: %d" % len(BODY), b"Content-Length: 10")).startswith(b"HTTP/1.1 200 ")
        events = w.wait_events(2)
        assert [e[3] for e in events] == [{"seq": 1}, {"seq": 2}], events
        w.stop()


if __name__ == "__main__":
    weirtest.run_tests([test_strict_requests])
