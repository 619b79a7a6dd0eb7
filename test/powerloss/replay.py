"""Power loss after the fact: undo, newest first, every change in the undo log of
libweir_powerloss.so that was not made durable, then empty the log and the stash.

Run it only when the traced process is dead (after its SIGKILL). As a module:
    stats = replay(log_path, stash_dir, watched_dirs)
or from the shell:
    python3 replay.py LOG STASH DIR [DIR...]

The record format and the durability model are in powerloss.c's opening comment and in
README.md. What this file adds: how each record is undone.
  D  the inode (through its stash link) gets its old bytes back at `off`, then its old size;
  A  the name is removed if it still names the inode the record says (ino 0: whatever is
     there); a directory goes with everything under it (its contents were reachable only
     through the name being dropped);
  R  the name comes back: a hard link to the stash link, or an empty directory for a
     removed directory (whose later records then act on the new one);
  M  the directory is renamed back.
Directories are found by inode, by walking the watched directories, so a record naming a
directory by (dev, ino) finds it wherever it is now; the path in A and R records is the
fallback for a directory outside the watched trees (the parent of a watched root)."""

import os
import shutil
import sys


class Record:
    __slots__ = ("type", "pos", "a", "b", "c", "d", "p1", "p2")

    def __init__(self, fields, p1, p2):
        self.type = fields[0]
        self.pos, self.a, self.b, self.c, self.d = (int(x) for x in fields[1:6])
        self.p1, self.p2 = p1, p2


def read_log(path):
    """The log's records in order. A torn last record (the process died while writing it)
    describes a change that had not started: it is left out."""
    with open(path, "rb") as f:
        data = f.read()
    out, off = [], 0
    while off < len(data):
        nl = data.find(b"\n", off)
        if nl < 0:
            break
        fields = data[off:nl].decode().split(" ")
        if len(fields) != 9:
            raise ValueError("undo log %s: bad record at %d: %r" % (path, off, data[off:nl]))
        n1, n2 = int(fields[7]), int(fields[8])
        end = nl + 1 + n1 + n2
        if end > len(data):
            break
        out.append(Record(fields, data[nl + 1:nl + 1 + n1], data[nl + 1 + n1:end]))
        off = end
    return out


def durable_marks(records):
    """For each inode (dev, ino): the highest log position an fsync of it covers; and the
    highest a sync() covers."""
    marks, everything = {}, -1
    for r in records:
        if r.type == "F":
            key = (r.a, r.b)
            marks[key] = max(marks.get(key, -1), r.c)
        elif r.type == "S":
            everything = max(everything, r.c)
    return marks, everything


def is_durable(r, marks, everything):
    if r.pos < everything:
        return True
    if r.type == "D":
        return r.pos < marks.get((r.a, r.b), -1)
    if r.type in ("A", "R"):
        return r.pos < marks.get((r.a, r.b), -1)
    if r.type == "M":  # both directories must have been synced
        return r.pos < marks.get((r.a, r.b), -1) and r.pos < marks.get((r.a, r.c), -1)
    return True  # F, S: nothing to undo


class Dirs:
    """(dev, ino) -> path of the directories under the watched roots, kept current as the
    replay removes, recreates and renames them."""

    def __init__(self, roots):
        self.roots = roots
        self.rescan()

    def rescan(self):
        self.map = {}
        for root in self.roots:
            if not os.path.isdir(root):
                continue
            for d, _, _ in os.walk(root):
                st = os.lstat(d)
                self.map[(st.st_dev, st.st_ino)] = d

    def find(self, dev, ino, fallback):
        d = self.map.get((dev, ino))
        if d and os.path.isdir(d):
            return d
        if fallback:
            try:
                st = os.lstat(fallback)
                if (st.st_dev, st.st_ino) == (dev, ino):
                    return fallback
            except OSError:
                pass
        return None


def stash_path(stash, dev, ino):
    return os.path.join(stash, "%d-%d" % (dev, ino))


def undo(r, stash, dirs, stats):
    if r.type == "D":
        p = stash_path(stash, r.a, r.b)
        with open(p, "r+b") as f:
            if r.p1:
                f.seek(r.c)
                f.write(r.p1)
            f.truncate(r.d)
        stats["writes"] += 1
        return
    if r.type == "M":
        old_dir, new_dir = dirs.find(r.a, r.b, None), dirs.find(r.a, r.c, None)
        if old_dir and new_dir:
            src = os.path.join(new_dir, r.p2.decode("utf-8", "surrogateescape"))
            try:
                if os.lstat(src).st_ino == r.d:
                    os.rename(src, os.path.join(old_dir, r.p1.decode("utf-8", "surrogateescape")))
                    dirs.rescan()
            except FileNotFoundError:
                pass
        stats["renames"] += 1
        return
    d = dirs.find(r.a, r.b, r.p2.decode("utf-8", "surrogateescape"))
    if d is None:
        return  # the directory itself is gone (its creation was undone): so is this name
    path = os.path.join(d, r.p1.decode("utf-8", "surrogateescape"))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if r.type == "A":
        if st is None:
            return  # the create never happened (the process died first) or failed
        if r.c and st.st_ino != r.c:
            raise RuntimeError("undo log: %s is inode %d, the record says %d"
                               % (path, st.st_ino, r.c))
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
            dirs.rescan()
        else:
            os.unlink(path)
        stats["creates"] += 1
    elif r.type == "R":
        if st is not None:
            if st.st_ino == r.c:
                return  # the removal never happened
            raise RuntimeError("undo log: %s is inode %d, the removed one was %d"
                               % (path, st.st_ino, r.c))
        if r.d:  # a directory: a new, empty one stands for it
            os.mkdir(path, 0o755)
            dirs.map[(r.a, r.c)] = path
        else:
            os.link(stash_path(stash, r.a, r.c), path)
        stats["removes"] += 1


def replay(log_path, stash, roots):
    """Undoes what a power loss would have lost. Returns counts of what it undid and kept."""
    stats = {"records": 0, "durable": 0, "writes": 0, "bytes": 0, "creates": 0, "removes": 0,
             "renames": 0}
    records = read_log(log_path) if os.path.exists(log_path) else []
    marks, everything = durable_marks(records)
    dirs = Dirs([os.path.realpath(r) for r in roots])
    for r in reversed(records):
        if r.type in ("F", "S"):
            continue
        stats["records"] += 1
        if is_durable(r, marks, everything):
            stats["durable"] += 1
            continue
        if r.type == "D":
            try:
                stats["bytes"] += max(0, os.path.getsize(stash_path(stash, r.a, r.b)) - r.d)
            except OSError:
                pass
        undo(r, stash, dirs, stats)
    if os.path.exists(log_path):
        os.unlink(log_path)
    shutil.rmtree(stash, ignore_errors=True)
    os.makedirs(stash)
    return stats


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: replay.py LOG STASH DIR [DIR...]")
    print(replay(sys.argv[1], sys.argv[2], sys.argv[3:]))
