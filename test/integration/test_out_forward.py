"""@type forward (out_forward): an edge weir forwards to aggregator weirs with acks.

What a user checks: every event the edge acknowledged (a forward ack, an HTTP 200) arrives at
the aggregator's output, with its content, whatever happens to the aggregator in between
(kill -9 and a restart). Duplicates are allowed (at least once, as Fluentd); losses are not."""

import json
import os
import shutil
import signal
import tempfile
import threading
import time

import msgpack

from fwdclient import AckSender, T0
from weirtest import (SOURCE_DIR, Weir, dry_run, free_port, forward_to_file, http_post,
                      make_certs, metric_at, run_tests, sh, wait_for)

TMP = []


def tmpdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    TMP.append(d)
    return d


def workdir(d, name):
    os.makedirs(os.path.join(d, name), exist_ok=True)
    return os.path.join(d, name)


def edge_conf(d, fwd_port, http_port, servers, out_params=(), buffer_params=()):
    """An edge: forward and http inputs, everything to @type forward through a file buffer.
    `servers` are (port, extra lines) pairs."""
    lines = ["<source>", "  @type forward", "  port %d" % fwd_port, "  bind 127.0.0.1",
             "</source>", "<source>", "  @type http", "  port %d" % http_port,
             "  bind 127.0.0.1", "</source>", "<match **>", "  @type forward",
             "  require_ack_response true", "  ack_response_timeout 5s",
             "  heartbeat_interval 0.5s"]
    lines += ["  " + p for p in out_params]
    for port, extra in servers:
        lines += ["  <server>", "    host 127.0.0.1", "    port %d" % port]
        lines += ["    " + e for e in extra]
        lines += ["  </server>"]
    lines += ["  <buffer tag>", "    @type file", "    path %s" % os.path.join(d, "edge-buf"),
              "    flush_mode interval", "    flush_interval 0.2s", "    retry_wait 0.2s",
              "    retry_max_interval 1s", "    retry_forever true"]
    lines += ["    " + p for p in buffer_params]
    lines += ["  </buffer>", "</match>", ""]
    return "\n".join(lines)


def aggregator(d, name, port, sources="", extra_source=(), file_params=()):
    """An aggregator: a forward input, everything into JSON lines files under d/name-out."""
    out = os.path.join(d, name + "-out", "events")
    conf = forward_to_file(port, out, os.path.join(d, name + "-buf"),
                           buffer_params=("flush_mode interval", "flush_interval 0.2s"),
                           sources=sources, file_params=file_params)
    if extra_source:
        conf = conf.replace("  bind 127.0.0.1\n</source>",
                            "  bind 127.0.0.1\n" + "\n".join(extra_source) + "\n</source>", 1)
    return Weir(conf, workdir=workdir(d, name)), out


def records_in(out_glob):
    """Every JSON record the aggregator's file output holds."""
    import glob
    recs = []
    for f in sorted(glob.glob(out_glob)):
        with open(f) as fh:
            recs += [json.loads(line) for line in fh]
    return recs


class Feeder(threading.Thread):
    """Sends batches of 20 events to the edge's forward port with acks, until stopped; the
    acked sequence numbers are what the edge promised to deliver."""

    def __init__(self, port, start=0):
        super().__init__(daemon=True)
        self.sender = AckSender(port, tag="edge.fwd")
        self.next = start
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            seqs = list(range(self.next, self.next + 20))
            self.next += 20
            self.sender.send(seqs, time.time() + 30)
            time.sleep(0.02)


def rx_queued(port):
    """Bytes waiting unread in the receive queues of the connections accepted on `port`
    (/proc/net/tcp), open or closed by the sender: what it wrote that the receiving process has not read yet."""
    total = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                local, queues = cols[1], cols[4]
                if int(local.split(":")[1], 16) == port and cols[3] != "0A":  # any but LISTEN
                    total += int(queues.split(":")[1], 16)
    return total


def kill_in_flight(agg, port):
    """Freezes the aggregator (SIGSTOP), waits until the edge has written a chunk into its
    connection that the aggregator has not read, and then kills it (-9): that chunk was
    written completely but never acknowledged. Without acks the edge would have deleted it."""
    agg.proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: rx_queued(port) > 0, 30, "a chunk written to the frozen aggregator")
    agg.proc.kill()
    agg.proc.wait()
    agg.out.close()
    agg.err.close()


def payload(seq):
    return "x" * 100  # fwdclient's record: {"seq": s, "payload": "x" * 100}


def check_delivered(acked, recs, what):
    """Every acked seq arrived with its content; nothing arrived that was not sent."""
    by_seq = {}
    for r in recs:
        assert r.get("payload") == payload(r["seq"]), "record changed on the way: %r" % r
        by_seq.setdefault(r["seq"], 0)
        by_seq[r["seq"]] += 1
    missing = sorted(set(acked) - set(by_seq))
    assert not missing, "%s: %d acknowledged events lost, first %r" % (what, len(missing),
                                                                      missing[:10])
    return sum(by_seq.values()) - len(by_seq)


def test_ack_through_receiver_restart_nothing_lost():
    d = tmpdir("weir-ofwd-")
    agg_port, fwd_port, http_port = free_port(), free_port(), free_port()
    agg, out = aggregator(d, "agg", agg_port)
    edge = Weir(edge_conf(d, fwd_port, http_port, [(agg_port, [])]),
                workdir=workdir(d, "edge"))
    with agg, edge:
        agg.start(wait_ports=[agg_port])
        edge.start(wait_ports=[fwd_port, http_port])
        feeder = Feeder(fwd_port)
        feeder.start()
        http_acked = []
        # some events reach the aggregator's output first
        wait_for(lambda: len(records_in(out + "*")) >= 200, 30, "events at the aggregator")
        kill_in_flight(agg, agg_port)
        # the edge keeps acknowledging while the aggregator is gone: its buffer holds them
        gone_from = feeder.sender.acked.copy()
        for i in range(5):
            body = json.dumps([{"seq": 1000000 + i * 10 + k, "payload": payload(0)}
                               for k in range(10)]).encode()
            http_post(http_port, "edge.http", body, "application/json")
            http_acked += [1000000 + i * 10 + k for k in range(10)]
        wait_for(lambda: len(feeder.sender.acked) >= len(gone_from) + 200, 30,
                 "the edge acknowledging while the aggregator is down")
        wait_for(lambda: "is down" in edge.log(), 15, "the edge seeing the aggregator down")
        agg.start(wait_ports=[agg_port])
        wait_for(lambda: len(records_in(out + "*")) >= 400, 30, "events after the restart")
        feeder.stop.set()
        feeder.join(60)
        acked = sorted(feeder.sender.acked) + http_acked
        assert len(acked) > 400, len(acked)
        wait_for(lambda: set(acked) <= {r["seq"] for r in records_in(out + "*")}, 60,
                 "every acknowledged event at the aggregator")
        dups = check_delivered(acked, records_in(out + "*"), "kill -9 of the aggregator")
        print("  %d events acknowledged by the edge, all delivered (%d resent twice)"
              % (len(acked), dups))
        assert edge.stop() == 0
        assert agg.stop() == 0


def seqs_at(out):
    return {r["seq"] for r in records_in(out + "*")}


def send_batches(sender, first, n, outs):
    """Sends n batches of 20 events, one at a time, each waited for until it arrived at one
    of the aggregators (so each is one chunk of the edge); returns, per aggregator, how many
    batches it got."""
    got = [0] * len(outs)
    for b in range(n):
        seqs = list(range(first + 20 * b, first + 20 * b + 20))
        assert sender.send(seqs, time.time() + 30), "the edge did not acknowledge %r" % seqs[:1]
        where = wait_for(lambda: [i for i, o in enumerate(outs) if set(seqs) <= seqs_at(o)],
                         30, "batch %d at an aggregator" % b)
        assert len(where) == 1, "batch %d went to %r" % (b, where)
        got[where[0]] += 1
    return got


def test_weight_standby_and_failover():
    """Weights split the chunks 3:1; with a regular server down the standby one takes its
    share (Fluentd promotes it); once the server is back, the standby gets nothing more."""
    d = tmpdir("weir-ofwd-")
    ports = [free_port() for _ in range(3)]
    fwd_port, http_port = free_port(), free_port()
    aggs = [aggregator(d, name, port) for name, port in zip("abc", ports)]
    edge = Weir(edge_conf(d, fwd_port, http_port,
                          [(ports[0], ["name a", "weight 60"]), (ports[1], ["name b", "weight 20"]),
                           (ports[2], ["name c", "weight 60", "standby true"])]),
                workdir=workdir(d, "edge"))
    outs = [out for _, out in aggs]
    for w, _ in aggs:
        w.__enter__()
    try:
        for (w, _), port in zip(aggs, ports):
            w.start(wait_ports=[port])
        edge.start(wait_ports=[fwd_port, http_port])
        sender = AckSender(fwd_port, tag="edge.fwd")
        assert send_batches(sender, 0, 8, outs) == [6, 2, 0]
        a = aggs[0][0]
        assert a.stop() == 0
        wait_for(lambda: "server a is down" in edge.log(), 15, "the heartbeat finding a down")
        got = send_batches(sender, 1000, 8, outs)
        assert got[0] == 0 and got[1] > 0 and got[2] > 0 and sum(got) == 8, got
        a.start(wait_ports=[ports[0]])
        wait_for(lambda: "server a is up again" in edge.log(), 15, "the heartbeat finding a up")
        got = send_batches(sender, 2000, 8, outs)
        assert got[2] == 0 and got[0] > got[1] > 0, got
        sender.close()
        assert edge.stop() == 0
    finally:
        edge.__exit__(None, None, None)
        for w, _ in aggs:
            w.__exit__(None, None, None)


def test_two_tier_to_s3_aggregator_killed_every_acked_event_arrives():
    """The issue's setup: an edge weir (HTTP + forward in) -> out_forward with acks -> two
    aggregator weirs -> S3 (s3rver behind the signature-checking proxy). One aggregator is
    killed (-9, with a chunk written to it and not acknowledged) and restarted mid-run."""
    import test_s3_output as s3t
    srv = s3t.s3()
    fmt = "  <format>\n    @type json\n  </format>\n"
    aggs = [s3t.start_weir([lambda d, n=n: s3t.match_conf(d, n, "twotier", s3t.STATIC,
                                                           path=n + "/", extra=fmt)])
            for n in ("agg1", "agg2")]
    d = tmpdir("weir-ofwd-")
    fwd_port, http_port = free_port(), free_port()
    edge = Weir(edge_conf(d, fwd_port, http_port, [(a.port, ["name agg%d" % (i + 1)])
                                                   for i, a in enumerate(aggs)]),
                workdir=workdir(d, "edge"))

    def stored():
        seqs, where = [], set()
        for key, (data, _) in srv.objects("twotier").items():
            for line in s3t.ungzip(data).decode().splitlines():
                r = json.loads(line)
                assert r.get("payload") == payload(r["seq"]), "record changed: %r" % r
                seqs.append(r["seq"])
                where.add(key.split("/")[0])
        return seqs, where

    with edge:
        edge.start(wait_ports=[fwd_port, http_port])
        feeder = Feeder(fwd_port)
        feeder.start()
        http_acked = []

        def post(i):
            seqs = [2000000 + i * 10 + k for k in range(10)]
            http_post(http_port, "edge.http", json.dumps([{"seq": s, "payload": payload(s)}
                                                          for s in seqs]).encode(),
                      "application/json")
            http_acked.extend(seqs)
        for i in range(5):
            post(i)
        wait_for(lambda: len(stored()[0]) >= 300, 60, "events in S3")
        kill_in_flight(aggs[0], aggs[0].port)
        for i in range(5, 10):
            post(i)
        wait_for(lambda: "server agg1 is down" in edge.log(), 30, "the edge seeing agg1 down")
        n = len(feeder.sender.acked)
        wait_for(lambda: len(feeder.sender.acked) >= n + 200, 30, "acks while agg1 is down")
        aggs[0].start([aggs[0].port])
        wait_for(lambda: "server agg1 is up again" in edge.log(), 30, "agg1 up again")
        for i in range(10, 15):
            post(i)
        feeder.stop.set()
        feeder.join(60)
        acked = sorted(feeder.sender.acked) + http_acked
        wait_for(lambda: set(acked) <= set(stored()[0]), 90, "every acknowledged event in S3")
        seqs, where = stored()
        assert where == {"agg1", "agg2"}, where  # both aggregators took chunks
        check_delivered(acked, [{"seq": x, "payload": payload(x)} for x in seqs], "two tiers")
        print("  %d events acknowledged by the edge (%d over HTTP), all in S3 (%d objects, "
              "%d duplicates)" % (len(acked), len(http_acked), len(srv.objects("twotier")),
                                   len(seqs) - len(set(seqs))))
        assert edge.stop() == 0
        for a in aggs:
            s3t.stop_weir(a)


def edge_connections(port):
    """The local ports of the edge's established connections to `port` (/proc/net/tcp)."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if int(cols[2].split(":")[1], 16) == port and cols[3] == "01":
                    found.add(int(cols[1].split(":")[1], 16))
    return found


def test_gzip_shared_key_tls_keepalive():
    """An edge that sends CompressedPackedForward over TLS with a client certificate, after the
    shared-key handshake, on one kept-alive connection, to weir's own forward input with
    <transport tls> (client_cert_auth) and <security>. Certificates are made by the test. A
    wrong shared key and an untrusted server certificate are refused, each with its reason."""
    d = tmpdir("weir-ofwd-")
    certs, other = os.path.join(d, "certs"), os.path.join(d, "other-ca")
    passphrase = make_certs(certs)
    make_certs(other)
    # the client key encrypted, as a careful operator keeps it: its passphrase must not be
    # logged with the configuration
    client_pass = "client-key-pass-7f3a"
    sh("openssl pkcs8 -topk8 -in client.key -v2 aes-256-cbc -passout pass:%s -out client.enc.key"
       % client_pass, cwd=certs)
    agg_port, metrics_port = free_port(), free_port()
    tls_in = ["  <transport tls>", "    cert_path %s/server.crt" % certs,
              "    private_key_path %s/server.key" % certs,
              "    private_key_passphrase %s" % passphrase, "    ca_path %s/ca.crt" % certs,
              "    client_cert_auth true", "  </transport>", "  <security>",
              "    self_hostname aggregator", "    shared_key s3cret", "  </security>"]
    agg, out = aggregator(d, "agg", agg_port, sources=(
        "<source>\n  @type prometheus\n  bind 127.0.0.1\n  port %d\n</source>\n"
        % metrics_port), extra_source=tls_in)

    def edge(name, key="s3cret", ca="%s/ca.crt" % certs):
        fwd, http = free_port(), free_port()
        conf = edge_conf(d, fwd, http, [(agg_port, ["name agg"])], out_params=[
            "compress gzip", "keepalive true", "keepalive_timeout 60s", "heartbeat_type none",
            "transport tls", "tls_cert_path %s" % ca,
            "tls_client_cert_path %s/client.crt" % certs,
            "tls_client_private_key_path %s/client.enc.key" % certs,
            "tls_client_private_key_passphrase %s" % client_pass,
            "<security>", "  self_hostname %s" % name, "  shared_key %s" % key, "</security>"])
        conf = conf.replace(os.path.join(d, "edge-buf"), os.path.join(d, name + "-buf"))
        return Weir(conf, workdir=workdir(d, name)), fwd, http

    good, fwd, http = edge("edge")
    badkey, bk_fwd, _ = edge("badkey", key="wr0ng-key")
    badca, bc_fwd, _ = edge("badca", ca="%s/ca.crt" % other)
    with agg, good, badkey, badca:
        agg.start(wait_ports=[agg_port, metrics_port])
        good.start(wait_ports=[fwd, http])
        sender = AckSender(fwd, tag="edge.fwd")
        conns = set()
        for b in range(5):  # one batch at a time, each its own chunk
            seqs = list(range(20 * b, 20 * b + 20))
            assert sender.send(seqs, time.time() + 30)
            wait_for(lambda: set(seqs) <= {r["seq"] for r in records_in(out + "*")}, 30,
                     "batch %d at the aggregator" % b)
            conns |= edge_connections(agg_port)
        sender.close()
        check_delivered(range(100), records_in(out + "*"), "gzip over TLS")
        # keepalive: every chunk went over the one connection
        assert len(conns) == 1, "the edge used %d connections: %r" % (len(conns), conns)
        # gzip: the aggregator read fewer bytes than the records' JSON alone holds
        wire = metric_at(metrics_port, "weir_input_bytes_total", tag="edge.fwd")
        plain = sum(len(json.dumps(r)) for r in records_in(out + "*"))
        assert wire is not None and wire < plain / 4, (wire, plain)

        for w, port in ((badkey, bk_fwd), (badca, bc_fwd)):
            w.start(wait_ports=[port])
            assert AckSender(port, tag="refused").send([9000], time.time() + 30)
        wait_for(lambda: "shared_key mismatch" in badkey.log(), 30, "the handshake refused")
        wait_for(lambda: "certificate verify failed" in badca.log(), 30, "the certificate refused")
        assert 9000 not in {r["seq"] for r in records_in(out + "*")}
        assert "s3cret" not in good.log() and "wr0ng-key" not in badkey.log()
        assert "tls_client_private_key_passphrase xxxxxx" in good.log()
        assert client_pass not in good.log()
        for w in (good, badkey, badca, agg):
            assert w.stop() == 0


def test_documented_example_runs_and_refusals_name_the_parameter():
    """docs/forward-output.md's example passes --dry-run; each parameter it says weir refuses
    fails --dry-run with file:line:col, the parameter's name and the reason."""
    import re
    d = tmpdir("weir-ofwd-")
    with open(os.path.join(SOURCE_DIR, "docs/forward-output.md")) as f:
        text = f.read()
    example = re.findall(r"```\n(.*?)```", text, re.S)[0]
    path = os.path.join(d, "example.conf")
    with open(path, "w") as f:
        f.write(example)
    rc, log = dry_run(path)
    assert rc == 0, log
    refused = {"heartbeat_type udp": "use transport", "time_as_integer true": "EventTime",
               "verify_connection_at_startup true": "at startup",
               "tls_cert_thumbprint abc": "use tls_cert_path",
               "<service_discovery>\n  </service_discovery>": "<server> sections"}
    for line, why in refused.items():
        with open(path, "w") as f:
            f.write("<match **>\n  @type forward\n  %s\n  <server>\n    host h\n  </server>\n"
                    "</match>\n" % line)
        rc, log = dry_run(path)
        name = line.split()[0]
        assert rc != 0 and "example.conf:3:" in log and name in log and why in log, (line, log)
    with open(path, "w") as f:
        f.write("<match **>\n  @type forward\n</match>\n")
    rc, log = dry_run(path)
    assert rc != 0 and "at least one <server>" in log, log


def test_chunk_of_two_tags_goes_as_two_acked_frames():
    """With `tag` not a chunk key (<buffer time>) one chunk holds events of two tags: it goes
    as one frame per tag, each acknowledged, and the aggregator sees each event under its own
    tag."""
    d = tmpdir("weir-ofwd-")
    agg_port, fwd_port, http_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    agg, out = aggregator(d, "agg", agg_port, file_params=("<inject>", "  tag_key tag",
                                                           "</inject>"))
    conf = edge_conf(d, fwd_port, http_port, [(agg_port, [])],
                     buffer_params=["timekey 3600", "flush_interval 2s"])
    conf = conf.replace("<buffer tag>", "<buffer time>").replace("flush_interval 0.2s\n", "")
    conf += ("<source>\n  @type prometheus\n  bind 127.0.0.1\n  port %d\n</source>\n"
             % metrics_port)
    edge = Weir(conf, workdir=workdir(d, "edge"))
    with agg, edge:
        agg.start(wait_ports=[agg_port])
        edge.start(wait_ports=[fwd_port, http_port, metrics_port])
        one, two = AckSender(fwd_port, tag="edge.one"), AckSender(fwd_port, tag="edge.two")
        assert one.send(list(range(0, 20)), time.time() + 10)
        assert two.send(list(range(20, 40)), time.time() + 10)
        recs = wait_for(lambda: len(records_in(out + "*")) >= 40 and records_in(out + "*"), 30,
                        "both tags at the aggregator")
        assert sorted((r["seq"], r["tag"]) for r in recs) == \
            [(i, "edge.one") for i in range(20)] + [(i, "edge.two") for i in range(20, 40)]
        chunks = metric_at(metrics_port, "weir_output_delivered_chunks_total", type="forward")
        assert chunks == 1, "the two tags were sent in %r chunks, not one" % chunks
        one.close()
        two.close()
        assert edge.stop() == 0 and agg.stop() == 0


def test_keepalive_connection_closed_by_the_receiver_is_replaced():
    """A kept-alive connection the receiver closed while it was idle (here: the aggregator
    restarted) is replaced by a new one for the next chunk; the server is not called down and
    the chunk is not failed."""
    d = tmpdir("weir-ofwd-")
    agg_port, fwd_port, http_port = free_port(), free_port(), free_port()
    agg, out = aggregator(d, "agg", agg_port)
    edge = Weir(edge_conf(d, fwd_port, http_port, [(agg_port, ["name agg"])],
                          out_params=["keepalive true", "heartbeat_type none"]),
                workdir=workdir(d, "edge"))
    with agg, edge:
        agg.start(wait_ports=[agg_port])
        edge.start(wait_ports=[fwd_port, http_port])
        sender = AckSender(fwd_port, tag="edge.fwd")
        for first in (0, 20):
            assert sender.send(list(range(first, first + 20)), time.time() + 10)
            wait_for(lambda: set(range(first, first + 20)) <= seqs_at(out), 30, "a batch")
            if first == 0:
                assert len(edge_connections(agg_port)) == 1
                assert agg.stop() == 0  # closes the idle kept-alive connection
                agg.start(wait_ports=[agg_port])
        log = edge.log()
        assert "failed to flush" not in log and "is down" not in log, log[-2000:]
        sender.close()
        assert edge.stop() == 0 and agg.stop() == 0


def test_reload_keeps_delivering():
    """SIGHUP replaces the output (threads, connections) without losing a chunk."""
    d = tmpdir("weir-ofwd-")
    agg_port, fwd_port, http_port = free_port(), free_port(), free_port()
    agg, out = aggregator(d, "agg", agg_port)
    edge = Weir(edge_conf(d, fwd_port, http_port, [(agg_port, [])],
                          out_params=["keepalive true"]), workdir=workdir(d, "edge"))
    with agg, edge:
        agg.start(wait_ports=[agg_port])
        edge.start(wait_ports=[fwd_port, http_port])
        sender = AckSender(fwd_port, tag="edge.fwd")
        for first in (0, 20, 40):
            assert sender.send(list(range(first, first + 20)), time.time() + 10)
            if first < 40:
                edge.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: set(range(60)) <= seqs_at(out), 30, "every batch across two reloads")
        wait_for(lambda: edge.log().count("the new configuration is running") == 2, 15, "two reloads logged")
        sender.close()
        assert edge.stop() == 0 and agg.stop() == 0


class HostileReceiver(threading.Thread):
    """A receiver that answers each frame wrongly, one way per connection: a reply longer than
    any reply, an ack for another chunk, a byte that is not msgpack, then silence. Connections
    that send nothing (heartbeats) are not counted."""

    ANSWERS = [msgpack.packb({"ack": "x" * 2000}), msgpack.packb({"ack": "not-the-chunk"}),
               b"\xc1", None]

    def __init__(self, port):
        super().__init__(daemon=True)
        import socket
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.served = 0
        self.held = []

    def run(self):
        while self.served < len(self.ANSWERS):
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.settimeout(5)
            try:
                if not c.recv(65536):
                    c.close()
                    continue
            except OSError:
                c.close()
                continue
            answer = self.ANSWERS[self.served]
            self.served += 1
            if answer is None:
                self.held.append(c)  # never answers
                continue
            c.sendall(answer)
            self.held.append(c)

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def test_hostile_receiver_cannot_lose_or_crash():
    """Every wrong answer fails the send with its reason and keeps the chunk; once a real
    receiver takes the port, every acknowledged event arrives."""
    d = tmpdir("weir-ofwd-")
    port, fwd_port, http_port = free_port(), free_port(), free_port()
    hostile = HostileReceiver(port)
    hostile.start()
    edge = Weir(edge_conf(d, fwd_port, http_port, [(port, ["name hostile"])],
                          out_params=["ack_response_timeout 1s"]).replace(
        "  ack_response_timeout 5s\n", ""), workdir=workdir(d, "edge"))
    agg, out = aggregator(d, "agg", port)
    with edge, agg:
        edge.start(wait_ports=[fwd_port, http_port])
        sender = AckSender(fwd_port, tag="edge.fwd")
        assert sender.send(list(range(20)), time.time() + 10)
        wait_for(lambda: hostile.served == len(hostile.ANSWERS) and
                 "no ack within ack_response_timeout" in edge.log(), 60,
                 "every hostile answer tried")
        hostile.close()
        hostile.join(10)
        log = edge.log()
        for reason in ("longer than 1024 bytes", "names another chunk", "not msgpack",
                       "no ack within ack_response_timeout"):
            assert reason in log, "%r not in the edge's log:\n%s" % (reason, log[-3000:])
        assert edge.proc.poll() is None, "the edge died"
        agg.start(wait_ports=[port])
        wait_for(lambda: set(range(20)) <= {r["seq"] for r in records_in(out + "*")}, 60,
                 "the chunk delivered once a real receiver is there")
        sender.close()
        assert edge.stop() == 0 and agg.stop() == 0


def cleanup():
    if os.environ.get("KEEP"):
        return
    import test_s3_output as s3t
    s3t.cleanup()
    for d in TMP:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    try:
        run_tests([test_ack_through_receiver_restart_nothing_lost,
                   test_weight_standby_and_failover,
                   test_two_tier_to_s3_aggregator_killed_every_acked_event_arrives,
                   test_gzip_shared_key_tls_keepalive,
                   test_documented_example_runs_and_refusals_name_the_parameter,
                   test_chunk_of_two_tags_goes_as_two_acked_frames,
                   test_hostile_receiver_cannot_lose_or_crash,
                   test_keepalive_connection_closed_by_the_receiver_is_replaced,
                   test_reload_keeps_delivering])
    finally:
        cleanup()
