"""Power loss, simulated (issue 10): at a random moment weir is killed and everything it had
not made durable is dropped, as a power cut could drop it; weir restarts on what is left,
and every event it acknowledged must still be delivered.

kill -9 alone proves nothing here (the page cache outlives the process). weir runs under
libweir_powerloss.so (test/powerloss/), which logs how to undo each change it makes under
the buffer and output directories; after the SIGKILL, test/powerloss/replay.py undoes every
change no fsync made durable: the bytes written since a file's last fsync/fdatasync, and
each create, rename and unlink not followed by an fsync of its directory. The model and its
limits: test/powerloss/README.md.

The same rounds run with `ack_after write` (acks before the fsync) as the control: it must
lose acknowledged events, which shows the harness can see a loss. WEIR_POWERLOSS_ROUNDS sets
the rounds per mode (CI: a few); README.md records a long run."""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

from fwdclient import AckSender
from weirtest import (SOURCE_DIR, Weir, forward_to_file, free_port, known_gap, read_chunk_events,
                      run_tests)

sys.path.insert(0, os.path.join(SOURCE_DIR, "test", "powerloss"))
from replay import replay  # noqa: E402

BUILD_DIR = os.environ.get("WEIR_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
LIB = os.environ.get("WEIR_POWERLOSS_LIB",
                     os.path.join(BUILD_DIR, "test", "powerloss", "libweir_powerloss.so"))
ROUNDS = int(os.environ.get("WEIR_POWERLOSS_ROUNDS", "4"))
FRAME_PAUSE = 0.002  # seconds between a frame's ack and the next frame
SEED = int(os.environ.get("WEIR_POWERLOSS_SEED", str(int(time.time()))))


class PowerLoss:
    """Watched directories under `d`, with the undo log and the stash beside them (the stash
    must be on the same file system: it holds hard links)."""

    def __init__(self, d, watched, crash_at=None):
        self.watched = [os.path.join(d, w) for w in watched]
        self.log = os.path.join(d, "undo.log")
        self.stash = os.path.join(d, "stash")
        os.makedirs(self.stash, exist_ok=True)
        self.crash_at = crash_at

    def env(self):
        e = {"LD_PRELOAD": LIB, "WEIR_POWERLOSS_LOG": self.log,
             "WEIR_POWERLOSS_DIRS": ":".join(self.watched), "WEIR_POWERLOSS_STASH": self.stash}
        if self.crash_at:
            e["WEIR_POWERLOSS_CRASH_AT"] = self.crash_at
        return e

    def cut(self):
        """The power goes: only what was made durable stays. The process must be dead."""
        return replay(self.log, self.stash, self.watched)


# ---- the harness itself ----------------------------------------------------------------------

HARNESS_PROGRAM = r"""
import os, signal, sys
W = sys.argv[1]
def p(n): return os.path.join(W, n)
def put(n, data, flags=os.O_CREAT | os.O_WRONLY, sync=True):
    fd = os.open(p(n), flags, 0o644)
    os.write(fd, data)
    if sync: os.fsync(fd)
    return fd
def dsync(d):
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
a = put("a", b"synced")
put("c", b"c")
dsync(W)                                     # a and c: data and names durable
os.write(a, b"+lost")                        # written after a's fsync: dropped
put("b", b"b")                               # data synced, name never: b disappears
put("old", b"new", os.O_WRONLY | os.O_TRUNC) # O_TRUNC and new data, synced: kept
put("keep", b"x", os.O_WRONLY | os.O_TRUNC, sync=False)  # not synced: "keep" again
os.rename(p("c"), p("c2"))                   # rename, directory not synced: undone
os.unlink(p("d"))                            # unlink, directory not synced: d is back
os.mkdir(p("new"))                           # a new directory, its parent never synced:
put("new/f", b"f")                           # gone with its synced contents
dsync(p("new"))
t = os.open(p("a"), os.O_WRONLY)
os.ftruncate(t, 2)                           # not synced: a is "synced" again
os.rename(p("sub"), p("sub2"))               # a directory renamed, not synced: undone
if len(sys.argv) > 2:
    os.sync()                                # ... unless sync() made it all durable
os.kill(os.getpid(), signal.SIGKILL)
"""


def harness_case(sync_all):
    d = tempfile.mkdtemp(prefix="weir-pl-harness-")
    w = os.path.join(d, "w")
    os.makedirs(os.path.join(w, "sub"))
    for name, data in (("old", b"old"), ("keep", b"keep"), ("d", b"d")):
        with open(os.path.join(w, name), "wb") as f:
            f.write(data)
    pl = PowerLoss(d, ["w"])
    env = dict(os.environ)
    env.update(pl.env())
    args = [sys.executable, "-c", HARNESS_PROGRAM, w] + (["sync"] if sync_all else [])
    rc = subprocess.run(args, env=env).returncode
    assert rc == -signal.SIGKILL, rc
    stats = pl.cut()
    files = {}
    for root, dirs, names in os.walk(w):
        for n in names + dirs:
            path = os.path.join(root, n)
            rel = os.path.relpath(path, w)
            files[rel] = None if os.path.isdir(path) else open(path, "rb").read()
    return files, stats


def test_harness_drops_exactly_what_was_not_durable():
    files, stats = harness_case(sync_all=False)
    assert files == {"a": b"synced", "c": b"c", "old": b"new", "keep": b"keep", "d": b"d",
                     "sub": None}, (files, stats)
    files, stats = harness_case(sync_all=True)
    assert files == {"a": b"sy", "c2": b"c", "old": b"new", "keep": b"x", "b": b"b",
                     "new": None, "new/f": b"f", "sub2": None}, (files, stats)
    assert stats["durable"] == stats["records"], stats


# ---- weir, the buffer and the file output ---------------------------------------------------

def output_seqs(out):
    """seq of every line in the output files; a line that is not JSON would be a torn write
    that survived, counted apart."""
    seqs, torn = [], 0
    for f in sorted(glob.glob(os.path.join(out, "*.log"))):
        with open(f, "rb") as fh:
            for line in fh:
                try:
                    seqs.append(json.loads(line)["seq"])
                except ValueError:
                    torn += 1
    return seqs, torn


def buffered_seqs(buf):
    """The events the buffer holds on disk, as recovery would read them back."""
    seqs = []
    for f in glob.glob(os.path.join(buf, "buffer.*.chunk")):
        seqs += [e["seq"] for e in read_chunk_events(f)]
    return seqs


class Feeder(threading.Thread):
    """Sends numbered events without pause, each frame until acknowledged, through every
    crash and restart, as a forwarder with require_ack_response does."""

    def __init__(self, port, rng):
        super().__init__(daemon=True)
        self.sender = AckSender(port, tag="pl", ack_timeout=5.0)
        self.rng = rng
        self.seq = 0
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                n = self.rng.randint(1, 40)
                if not self.sender.send(list(range(self.seq, self.seq + n)), time.time() + 120):
                    raise RuntimeError("no ack for 120 s at seq %d" % self.seq)
                self.seq += n
                # ack_after write would otherwise take a million events a second; the pause
                # keeps both modes at a few thousand, with the same frames
                time.sleep(FRAME_PAUSE)
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.sender.close()


def power_loss_rounds(ack_after, rounds, rng):
    """Runs weir through `rounds` simulated power losses while events flow, then once more to
    deliver what is left. Returns (acked, per-round lost counts, delivered seqs, stats)."""
    d = tempfile.mkdtemp(prefix="weir-pl-%s-" % ack_after)
    buf, out = os.path.join(d, "buf"), os.path.join(d, "out")
    # the directories exist before weir first runs (an installation makes them), so their
    # own entries are durable; what weir creates inside them is what is tested
    os.makedirs(buf)
    os.makedirs(out)
    port = free_port()
    conf = forward_to_file(port, os.path.join(out, "events"), buf, "time",
                           ["timekey 1", "timekey_wait 0", "flush_at_shutdown true",
                            "retry_wait 0.2", "ack_after %s" % ack_after])
    pl = PowerLoss(d, ["buf", "out"])
    feeder = Feeder(port, rng)
    lost_per_round, lost_before, cut_stats = [], set(), []
    for r in range(rounds):
        w = Weir(conf, env=pl.env(), workdir=d).start()
        if r == 0:
            feeder.start()
        # a random moment from the start, so some land in recovery and most while chunks
        # are appended, enqueued, delivered and deleted
        time.sleep(rng.uniform(0.05, 2.0))
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait()
        assert feeder.error is None, feeder.error
        cut_stats.append(pl.cut())
        # what survived: the output files and the buffer's chunks (recovery reads these)
        acked = set(feeder.sender.acked)
        kept = set(output_seqs(out)[0]) | set(buffered_seqs(buf))
        lost = (acked - kept) - lost_before
        lost_per_round.append(len(lost))
        lost_before |= lost
    # the last start: no power loss; it delivers what survived and stops, flushing
    w = Weir(conf, workdir=d).start([port])
    feeder.stop.set()
    feeder.join(150)
    assert feeder.error is None, feeder.error
    rc = w.stop(signal.SIGTERM, timeout=60)
    assert rc == 0, (rc, w.log())
    seqs, torn = output_seqs(out)
    left = glob.glob(os.path.join(buf, "buffer.*.chunk"))
    assert not left, "chunks left after flush_at_shutdown: %s\n%s" % (left, w.log())
    return feeder.sender, lost_per_round, seqs, torn, cut_stats, w


def summarize(mode, sender, lost_per_round, seqs, torn, cut_stats):
    counts = {}
    for s in seqs:
        counts[s] = counts.get(s, 0) + 1
    lost = sorted(s for s in sender.acked if s not in counts)
    dups = sum(c - 1 for c in counts.values())
    resent_dups = sum(c - 1 for s, c in counts.items() if s in sender.resent)
    dropped = sum(c["writes"] + c["creates"] + c["removes"] + c["renames"] for c in cut_stats)
    print("  %-5s %d rounds: %d events acked, %d lost (per round: %s), %d delivered, "
          "%d duplicates (%d of resent frames, %d redelivered chunks), %d torn lines; "
          "the cuts undid %d changes (%d bytes)"
          % (mode, len(lost_per_round), len(sender.acked), len(lost), lost_per_round,
             len(seqs), dups, resent_dups, dups - resent_dups, torn, dropped,
             sum(c["bytes"] for c in cut_stats)), flush=True)
    unknown = [s for s in counts if s not in sender.sent_once]
    assert not unknown, unknown[:10]
    return lost


RNG = random.Random(SEED)
print("seed %d (WEIR_POWERLOSS_SEED), %d rounds per mode (WEIR_POWERLOSS_ROUNDS)"
      % (SEED, ROUNDS), flush=True)


def test_control_ack_after_write_loses_acknowledged_events():
    """Acks before the fsync must lose events on a power loss, or the harness could not see
    a loss at all."""
    res = power_loss_rounds("write", ROUNDS, RNG)
    lost = summarize("write", *res[:5])
    assert lost and max(res[1]) > 0, "the control lost nothing: the harness sees no loss"


FILE_DIR_GAP = ("issue 10 gap 8: the file output fsyncs a new file but not its directory, and "
                "the buffer deletes the chunk; a later group commit makes the chunk's unlink "
                "durable while the output file's name never is, so the file vanishes")


@known_gap(FILE_DIR_GAP, "acknowledged events lost after a power loss")
def test_acknowledged_events_survive_power_loss():
    res = power_loss_rounds("fsync", ROUNDS, RNG)
    lost = summarize("fsync", *res[:5])
    assert res[4] and sum(c["writes"] + c["creates"] + c["removes"] for c in res[4]), \
        "the cuts undid nothing: the rounds did not test a power loss"
    assert not lost, "acknowledged events lost after a power loss: %d, first %s\n%s" % (
        len(lost), lost[:20], res[5].log()[-3000:])


if __name__ == "__main__":
    run_tests([
        test_harness_drops_exactly_what_was_not_durable,
        test_control_ack_after_write_loses_acknowledged_events,
        test_acknowledged_events_survive_power_loss,
    ])
