"""The command line and the router, through the real binary: --version, --help, --dry-run on
good and bad files (the pipeline's own fluent.conf included), FLUENTD_CONF, signals, secrets
masked in the printed configuration, and Fluentd's <match> semantics (first match wins,
several patterns, labels, unmatched events dropped with a warning)."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import msgpack

from weirtest import SOURCE_DIR, WEIR_BIN, Weir, dry_run, forward_to_file, free_port, run_tests

SHARED_CONF = os.path.join(SOURCE_DIR, "test/data/config/teleport.conf")


def run(args, env=None, **kw):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([WEIR_BIN] + args, capture_output=True, env=e, timeout=30, **kw)


def write(text):
    fd, path = tempfile.mkstemp(suffix=".conf")
    os.write(fd, text.encode())
    os.close(fd)
    return path


def test_version_and_help():
    p = run(["--version"])
    assert p.returncode == 0 and p.stdout.decode().startswith("weir "), p
    p = run(["--help"])
    assert p.returncode == 0 and b"--dry-run" in p.stdout and b"USR1" in p.stdout
    p = run(["--no-such-flag"])
    assert p.returncode == 2


def test_dry_run_good_and_bad():
    good = write("<source>\n  @type forward\n  port 0\n</source>\n<match **>\n  @type null\n</match>\n")
    rc, log = dry_run(good)
    assert rc == 0 and "configuration is valid" in log, log
    bad = write("<source>\n  @type forward\n  prot 24224\n</source>\n")
    rc, log = dry_run(bad)
    assert rc == 1, log
    assert "%s:3:3: unknown parameter 'prot'" % bad in log, log
    unterminated = write("<match **>\n  @type null\n")
    rc, log = dry_run(unterminated)
    assert rc == 1 and "%s:1:1" % unterminated in log, log


def plugin_exists(kind, name):
    text = ("<source>\n @type %s\n</source>\n" if kind == "source" else
            "<match **>\n @type %s\n</match>\n") % name
    p = run(["--dry-run", "-c", write(text)])
    return "does not have these plugins" not in p.stderr.decode()


def test_dry_run_of_the_pipeline_configuration():
    """The real Teleport -> S3 configuration parses; until a plugin exists, --dry-run names
    exactly the @types that are missing (and nothing else); once all exist it passes."""
    env = {"FLUENTD_KEY_PASSPHRASE": "x" * 64, "AWS_ACCESS_KEY_ID": "AKIA",
           "AWS_SECRET_ACCESS_KEY": "s"}
    rc, log = dry_run(SHARED_CONF, env=env)
    expected = []
    if not plugin_exists("source", "http"):
        expected.append("@type http (<source>)")
    if not plugin_exists("match", "s3"):
        expected.append("@type s3 (<match test.log session.*.log>)")
    if not expected:
        assert rc == 0, log
        return
    assert rc == 1, log
    named = [line.split(": ", 1)[1] for line in log.splitlines() if ".conf:" in line and "@type" in line]
    assert named == expected, (named, log)


def test_show_config_masks_secrets():
    p = run(["--show-config", "-c", SHARED_CONF],
            env={"FLUENTD_KEY_PASSPHRASE": "topsecretpassphrase", "AWS_SECRET_ACCESS_KEY": "awssecret"})
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    assert "topsecretpassphrase" not in out and "awssecret" not in out
    assert "private_key_passphrase xxxxxx" in out and "aws_sec_key xxxxxx" in out, out
    # credentials inside URLs, and external_id
    conf = write("<match **>\n @type s3\n proxy_uri http://pu:proxypass1@proxy:3128\n"
                 " <assume_role_credentials>\n  role_arn r\n  role_session_name s\n"
                 "  external_id extid-2718\n  sts_http_proxy https://su:stspass2@sts-proxy\n"
                 " </assume_role_credentials>\n</match>\n")
    p = run(["--show-config", "-c", conf])
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    assert "proxypass1" not in out and "stspass2" not in out and "extid-2718" not in out, out
    assert " proxy_uri http://pu:xxxxxx@proxy:3128\n" in out, out
    assert "  sts_http_proxy https://su:xxxxxx@sts-proxy\n" in out, out
    assert "  external_id xxxxxx\n" in out, out


def test_fluentd_conf_env_selects_the_file():
    path = write("<source>\n  @type forward\n  port 0\n</source>\n<match **>\n  @type null\n</match>\n")
    p = run(["--dry-run"], env={"FLUENTD_CONF": path})
    assert p.returncode == 0, p.stderr
    assert path.encode() in p.stderr


def test_signals_term_usr1_hup():
    port = free_port()
    with Weir("<source>\n @type forward\n port %d\n bind 127.0.0.1\n</source>\n"
              "<match **>\n @type null\n</match>\n" % port) as w:
        w.start([port])
        w.proc.send_signal(signal.SIGHUP)
        w.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        assert w.proc.poll() is None
        assert w.stop(signal.SIGTERM) == 0
    log = w.log()
    assert "SIGHUP" in log and "flushing buffers" in log and "shutdown complete" in log, log


def send(port, tag, record):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(msgpack.packb([tag, 1700000000, record, {"chunk": "k"}]))
    s.settimeout(5)
    assert msgpack.unpackb(s.recv(100)) == {"ack": "k"}
    s.close()


ROUTES = """
<source>
  @type forward
  port %d
  bind 127.0.0.1
</source>
<source>
  @type forward
  port %d
  bind 127.0.0.1
  @label @AUDIT
</source>
<match test.log session.*.log>
  @type stdout
  <inject>
    hostname_key route
    hostname A
  </inject>
</match>
<match app.**>
  @type stdout
  <inject>
    hostname_key route
    hostname B
  </inject>
</match>
<match {x,y}.z>
  @type stdout
  <inject>
    hostname_key route
    hostname C
  </inject>
</match>
<label @AUDIT>
  <match **>
    @type stdout
    <inject>
      hostname_key route
      hostname L
    </inject>
  </match>
</label>
"""


def test_routing_first_match_and_labels():
    p1, p2 = free_port(), free_port()
    with Weir(ROUTES % (p1, p2)) as w:
        w.start([p1, p2])
        cases = [("test.log", "A"), ("session.abc-123.log", "A"), ("app", "B"), ("app.web.x", "B"),
                 ("x.z", "C"), ("y.z", "C")]
        for tag, _ in cases:
            send(p1, tag, {"t": tag})
        send(p1, "session.log.abc.log", {"t": "nomatch"})
        send(p2, "test.log", {"t": "label"})
        ev = w.wait_events(len(cases) + 1)
        w.stop()
    got = [(e[2], e[3]["route"]) for e in ev]
    assert got == cases + [("test.log", "L")], got
    assert 'no patterns matched tag="session.log.abc.log"' in w.log()


# A newline and a fake log line, a carriage return, terminal escape sequences (CSI, OSC with
# BEL), a C1 control (U+009B, CSI), a tab, and one byte that is not UTF-8.
FORGED = ("x\n2026-01-01 00:00:00 +0000 [error]: forged\r\x1b[2J\x1b]0;t\x07\u009b\t".encode()
          + b"\xff")


def test_log_keeps_a_hostile_tag_on_one_line():
    """A tag quoted in a warning cannot forge a log line or reach the terminal as an escape
    sequence: text mode escapes control bytes (and bytes that are not UTF-8), JSON mode keeps
    one object per line."""
    port = free_port()
    conf = "<source>\n @type forward\n port %d\n bind 127.0.0.1\n</source>\n%s" \
           "<match nothing>\n @type null\n</match>\n"
    for system in ("", "<system>\n <log>\n  format json\n </log>\n</system>\n"):
        with Weir(conf % (port, system)) as w:
            w.start([port])
            s = socket.create_connection(("127.0.0.1", port))
            # use_bin_type=False: the tag goes out as a msgpack str, as a sender would write it
            s.sendall(msgpack.packb([FORGED, 1700000000, {"t": 1}, {"chunk": "k"}],
                                    use_bin_type=False))
            s.settimeout(5)
            assert msgpack.unpackb(s.recv(100)) == {"ack": "k"}
            s.close()
            w.stop()
        with open(w.err_path, "rb") as f:
            raw = f.read()
        assert b"\x1b" not in raw and b"\r" not in raw and b"\xc2\x9b" not in raw, raw
        lines = [line for line in raw.split(b"\n") if b"no patterns matched" in line]
        assert len(lines) == 1, raw
        assert not any(line.startswith(b"2026-01-01") for line in raw.split(b"\n")), raw
        if system:
            msg = json.loads(lines[0])["message"]
            assert msg.startswith('no patterns matched tag="x\n2026-01-01'), msg
            assert "\x1b[2J" in msg and "\ufffd" in msg, msg
        else:
            want = (b'no patterns matched tag="x\\n2026-01-01 00:00:00 +0000 [error]: forged'
                    b'\\r\\x1b[2J\\x1b]0;t\\x07\\u009b\t\\xff"')
            assert want in lines[0], lines[0]


def test_file_path_index_marker_in_a_tag():
    """A tag holding "_**" (the file output's index marker) or "%{...}" is part of the file
    name as written: the index goes where the template puts it, nothing expands again."""
    d = tempfile.mkdtemp(prefix="weir-marker-")
    port = free_port()
    conf = forward_to_file(port, d + "/out/${tag}", None, buffer_keys="tag",
                           buffer_params=["flush_mode immediate"])
    with Weir(conf, workdir=d) as w:
        w.start([port])
        send(port, "x_**y", {"seq": 1})
        send(port, "p.%{index}.q", {"seq": 2})
        deadline = time.time() + 10
        out = lambda: os.listdir(d + "/out") if os.path.isdir(d + "/out") else []
        while time.time() < deadline and len(out()) < 2:
            time.sleep(0.05)
        w.stop()
    assert sorted(os.listdir(d + "/out")) == ["p.%{index}.q_0.log", "x_**y_0.log"], \
        os.listdir(d + "/out")
    with open(d + "/out/x_**y_0.log") as f:
        assert [json.loads(line)["seq"] for line in f] == [1]


if __name__ == "__main__":
    run_tests([
        test_version_and_help,
        test_dry_run_good_and_bad,
        test_dry_run_of_the_pipeline_configuration,
        test_show_config_masks_secrets,
        test_fluentd_conf_env_selects_the_file,
        test_signals_term_usr1_hup,
        test_routing_first_match_and_labels,
        test_log_keeps_a_hostile_tag_on_one_line,
        test_file_path_index_marker_in_a_tag,
    ])
