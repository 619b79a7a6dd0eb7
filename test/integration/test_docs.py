"""What the docs state about behaviour, checked against the real binary and the code, so that a
page cannot drift from the program unseen:

- signals: every row of docs/migration.md's `| signal | what weir does | log line |` table is
  sent to a running weir, which must write the row's log line and do what the row says
  (stop with exit 0, flush a buffered event into its file, reload a changed file and refuse a
  broken one);
- metrics: every name in docs/observability.md's `| Name | Type | What |` table is a family of
  that type in /metrics of a weir that runs every plugin the table covers;
- parameters: every parameter of docs/migration.md's `| parameter | default | what it bounds |`
  table is accepted by `--dry-run` in a forward and an http source, set to its documented
  default where that is a value (that weir's own default is that value is not checked); so is every <buffer> parameter of its `| | what weir reads |`
  table's buffers row (and every `retry_*` it names), in a file buffer; the configuration
  blocks of docs/observability.md pass `--dry-run` as written;
- limits: every `WEIR_*` (`FWD_*`, `S3_*`) name the docs mention exists in the code, and
  every one stated with a value ("1024 bytes (`WEIR_TAG_MAX`)", "`WEIR_X` (1 MiB)", "1000
  distinct tags (`WEIR_X`)") has that value in its #define (#defines of #defines followed);
- files: every source or test file a page names exists.

Each extraction fails when it finds nothing to check, so a renamed header or a reworded page
breaks this test rather than emptying it."""

import glob
import os
import re
import signal
import subprocess

from test_s3_output import cleanup, tmpdir
from weirtest import (SOURCE_DIR, Weir, dry_run, free_port, http_post, run_tests, scrape,
                      wait_for, wait_port)


def doc(name):
    with open(os.path.join(SOURCE_DIR, name)) as f:
        return f.read()


def doc_pages():
    pages = ["README.md"] + sorted(glob.glob(os.path.join(SOURCE_DIR, "docs/*.md"))) + \
        sorted(glob.glob(os.path.join(SOURCE_DIR, "examples/*/README.md")))
    return [os.path.relpath(os.path.join(SOURCE_DIR, p), SOURCE_DIR) for p in pages]


def cells(line):
    # a table row; `\|` inside a cell is a literal bar
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def doc_table(page, header):
    """The rows (lists of cells) of every table in `page` whose header row is `header`."""
    rows = []
    lines = doc(page).splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or cells(line) != header:
            continue
        for row in lines[i + 2:]:
            if not row.startswith("|"):
                break
            rows.append(cells(row))
    assert rows, "%s has no table headed %s: the test has nothing to check" % (page, header)
    return rows


def ticked(cell):
    return re.findall(r"`([^`]+)`", cell)


# ---- signals ----------------------------------------------------------------------------

SIGNAL_CONF = """
<source>
  @type http
  bind 127.0.0.1
  port %(port)d
</source>
%(extra)s
<match **>
  @type file
  path %(dir)s/out/${tag}
  <buffer tag,time>
    @type file
    path %(dir)s/buf
    timekey 3600
    timekey_wait 0
  </buffer>
</match>
"""


def post(port, tag, record):
    http_post(port, tag, ("json=" + record).encode(), "application/x-www-form-urlencoded")


def out_text(d):
    text = ""
    for root, _, files in os.walk(os.path.join(d, "out")):
        for f in files:
            with open(os.path.join(root, f)) as fh:
                text += fh.read()
    return text


def check_stop(w, d, port, sig, line):
    post(port, "doc.stop", '{"n":"stop"}')
    assert w.stop(sig) == 0, w.log()
    assert line in w.log() and "shutdown complete" in w.log(), w.log()


def check_flush(w, d, port, sig, line):
    post(port, "doc.flush", '{"n":"flush"}')
    assert '"flush"' not in out_text(d), "flushed before the signal (timekey 3600)"
    w.proc.send_signal(sig)
    wait_for(lambda: '"flush"' in out_text(d), what="the buffered event in the file")
    assert line in w.log(), w.log()
    assert w.stop() == 0


def check_reload(w, d, port, sig, line):
    added = free_port()
    extra = "<source>\n  @type http\n  bind 127.0.0.1\n  port %d\n</source>\n" % added
    with open(w.conf, "w") as f:
        f.write(SIGNAL_CONF % {"port": port, "dir": d, "extra": extra})
    w.proc.send_signal(sig)
    wait_port(added)
    assert line in w.log(), w.log()
    post(added, "doc.added", '{"n":"added"}')
    post(port, "doc.kept", '{"n":"kept"}')
    # a file that does not build is refused, and the running configuration stays
    with open(w.conf, "w") as f:
        f.write("<match **>\n  @type no_such_plugin\n</match>\n")
    w.proc.send_signal(sig)
    wait_for(lambda: "reload refused" in w.log(), what="the refused reload in the log")
    post(added, "doc.after", '{"n":"after"}')
    assert w.proc.poll() is None
    assert w.stop() == 0


EFFECTS = [("exits 0", check_stop), ("flushes", check_flush), ("reloads", check_reload)]


def test_documented_signals():
    rows = doc_table("docs/migration.md", ["signal", "what weir does", "log line"])
    seen = set()
    for names, what, log in rows:
        sigs = ticked(names)
        checks = [fn for word, fn in EFFECTS if word in what]
        assert sigs and len(checks) == 1 and len(ticked(log)) == 1, \
            "row the test cannot check (one effect of %s, one log line): %s" % (
                [w for w, _ in EFFECTS], (names, what, log))
        for name in sigs:
            sig = getattr(signal, name)
            line = ticked(log)[0].replace("<signal>", name)
            port = free_port()
            d = tmpdir("weir-docs-")
            with Weir(SIGNAL_CONF % {"port": port, "dir": d, "extra": ""}, workdir=d) as w:
                w.start([port])
                checks[0](w, d, port, sig, line)
            seen.add(name)
    # every signal main.c watches is documented
    handled = set(re.findall(r"watch_signal\(.*, (SIG[A-Z0-9]+)\);", doc("src/main.c")))
    assert handled and seen == handled, "documented %s, main.c handles %s" % (seen, handled)


# ---- metrics ----------------------------------------------------------------------------

def expand(names):
    """`a_b_c` / `_d_e` names a_b_c's sibling: the tail from the suffix's first word when the
    name has that word, else as many words from the end as the suffix has."""
    first, out = names[0], [names[0]]
    for suffix in names[1:]:
        words = suffix.lstrip("_").split("_")
        parts = first.split("_")
        if words[0] in parts:
            cut = len(parts) - 1 - parts[::-1].index(words[0])
        else:
            cut = len(parts) - len(words)
        out.append("_".join(parts[:cut] + words))
    return out


METRICS_CONF = """
<source>
  @type prometheus
  bind 127.0.0.1
  port %(prom)d
</source>
<source>
  @type http
  bind 127.0.0.1
  port %(http)d
</source>
<source>
  @type forward
  bind 127.0.0.1
  port %(fwd)d
</source>
<match s3.**>
  @type s3
  s3_bucket b
  s3_region us-east-1
  s3_endpoint http://127.0.0.1:9
  force_path_style true
  check_apikey_on_start false
  check_bucket false
  aws_key_id AKIAEXAMPLE
  aws_sec_key awssecretkey
  <buffer>
    @type memory
  </buffer>
</match>
<match digest.**>
  @type s3
  @id digests
  s3_bucket b
  s3_endpoint http://127.0.0.1:9
  force_path_style true
  check_apikey_on_start false
  check_bucket false
  aws_key_id AKIAEXAMPLE
  aws_sec_key awssecretkey
  path logs/
  <buffer>
    @type file
    path %(dir)s/digest-buf
  </buffer>
  <digest>
    private_key_path %(dir)s/digest.key
    prefix weir-digests/
  </digest>
</match>
<match file.**>
  @type file
  path %(dir)s/out/${tag}
  <buffer tag,time>
    @type file
    path %(dir)s/buf
    timekey 3600
  </buffer>
</match>
"""


def test_documented_metrics():
    rows = doc_table("docs/observability.md", ["Name", "Type", "What"])
    documented = {}
    for name_cell, typ, _ in rows:
        names = [re.sub(r"\{.*\}$", "", n) for n in ticked(name_cell)]
        assert names and typ in ("counter", "gauge", "histogram"), (name_cell, typ)
        for n in expand(names):
            documented[n] = typ
    d = tmpdir("weir-docs-")
    ports = {"prom": free_port(), "http": free_port(), "fwd": free_port(), "dir": d}
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out",
                    os.path.join(d, "digest.key")], check=True, capture_output=True)
    with Weir(METRICS_CONF % ports, workdir=d) as w:
        w.start([ports["prom"], ports["http"]])
        post(ports["http"], "file.a", '{"n":1}')  # a tag, a staged chunk with its timekey
        post(ports["http"], "nowhere", '{"n":2}')  # unmatched

        def families():  # the format checked on the way
            types = {}
            scrape(ports["prom"], types=types)
            return types

        try:
            wait_for(lambda: all(n in families() for n in documented),
                     what="every documented metric family")
        except AssertionError:
            raise AssertionError("documented, not in /metrics: %s" % sorted(
                set(documented) - set(families())))
        finally:
            found = families()
            w.stop()
    for n, typ in sorted(documented.items()):
        assert found[n] == typ, "%s is a %s, docs say %s" % (n, found[n], typ)
    assert len(documented) >= 25, sorted(documented)


# ---- parameters -------------------------------------------------------------------------

VALUE = re.compile(r"^\d+(\.\d+)?[smhdkg]?$")


def test_documented_ingest_parameters():
    rows = doc_table("docs/migration.md", ["parameter", "default", "what it bounds"])
    for name_cell, default, _ in rows:
        (name,) = ticked(name_cell)
        first = default.split(" ")[0].rstrip(",")
        value = first if VALUE.match(first) else "100"
        for source in ("forward", "http"):
            path = os.path.join(tmpdir("weir-docs-"), "fluent.conf")
            with open(path, "w") as f:
                f.write("<source>\n  @type %s\n  port %d\n  %s %s\n</source>\n"
                        "<match **>\n  @type null\n</match>\n"
                        % (source, free_port(), name, value))
            rc, err = dry_run(path)
            assert rc == 0, "%s %s in a %s source: %s" % (name, value, source, err)


# A valid value for each <buffer> parameter migration.md says weir reads; a documented one
# missing here fails the test, so a new row cannot go unchecked.
BUFFER_VALUES = {
    "timekey": "60", "timekey_wait": "10", "timekey_zone": "+0900", "timekey_use_utc": "true",
    "chunk_limit_size": "8m", "chunk_limit_records": "1000", "total_limit_size": "1g",
    "queue_limit_length": "64", "flush_mode": "interval", "flush_interval": "30s",
    "flush_thread_count": "2", "flush_at_shutdown": "true", "overflow_action": "block",
    "disable_chunk_backup": "false", "retry_wait": "2s", "retry_exponential_backoff_base": "3",
    "retry_max_interval": "60s", "retry_timeout": "1h", "retry_max_times": "5",
    "retry_forever": "false", "retry_randomize": "false",
    "retry_secondary_threshold": "0.8",
}
# the row's words that are values, not parameters: `@type file` or `memory`, chunk keys
BUFFER_ROW_VALUES = {"file", "memory", "tag", "time"}


def test_documented_buffer_parameters():
    rows = [r for r in doc_table("docs/migration.md", ["", "what weir reads"])
            if r[0] == "buffers"]
    assert len(rows) == 1, rows
    names = [t for t in ticked(rows[0][1])
             if re.fullmatch(r"[a-z][a-z_]*", t) and t not in BUFFER_ROW_VALUES]
    # "every `retry_*` parameter": the ones the retries paragraph names
    names += re.findall(r"`(retry_[a-z_]+)`", doc("docs/migration.md"))
    assert len(names) >= 15, names
    for name in sorted(set(names)):
        assert name in BUFFER_VALUES, "no test value for the documented <buffer> %s" % name
        d = tmpdir("weir-docs-")
        path = os.path.join(d, "fluent.conf")
        with open(path, "w") as f:
            f.write("<match **>\n  @type file\n  path %s/out/x\n  <buffer tag,time>\n"
                    "    @type file\n    path %s/buf\n    timekey 60\n    %s %s\n"
                    "  </buffer>\n</match>\n" % (d, d, name, BUFFER_VALUES[name]))
        rc, err = dry_run(path)
        assert rc == 0, "<buffer> %s %s: %s" % (name, BUFFER_VALUES[name], err)


def test_observability_config_blocks_pass_dry_run():
    blocks = re.findall(r"```\n(.*?)```", doc("docs/observability.md"), re.S)
    conf = "".join(b for b in blocks if re.match(r"\s*<(source|system)>", b))
    assert conf.count("@type prometheus") and conf.count("<system>"), blocks
    path = os.path.join(tmpdir("weir-docs-"), "fluent.conf")
    with open(path, "w") as f:
        f.write(conf + "<match **>\n  @type null\n</match>\n")
    rc, err = dry_run(path)
    assert rc == 0, err


# ---- limits -----------------------------------------------------------------------------

UNITS = {"": 1, "bytes": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}
CONST = r"`((?:WEIR|FWD|S3)_[A-Z0-9_]+)`"
SIZE = r"\b(\d[\d,]*) ?(bytes|KiB|MiB|GiB|)"
# "1024 bytes (`WEIR_TAG_MAX`)", "64 MiB of events** (`WEIR_X`)", "1000 distinct tags
# (`WEIR_X`)", "`WEIR_X` (1 MiB)": a number, its unit if any, a few words, the constant
BEFORE = re.compile(SIZE + r"\b[^()`.;:\d]{0,24}\s\(" + CONST + r"\)")
AFTER = re.compile(CONST + r"\s\(" + SIZE + r"\)")


def code_text():
    text = ""
    # the code, and the shipped configurations whose environment variables the docs name
    # (`S3_ENDPOINT` of examples/teleport)
    for pattern in ("include/weir/*.h", "src/**/*.[ch]", "docker/*", "examples/**/*.conf",
                    "examples/**/*.yml"):
        for p in glob.glob(os.path.join(SOURCE_DIR, pattern), recursive=True):
            with open(p, errors="replace") as f:
                text += f.read()
    return text


def define_value(code, name):
    m = re.search(r"^#define %s (.+)$" % name, code, re.M)
    assert m, "docs state a value for %s, which is not a #define" % name
    expr = re.sub(r"(?<=\d)[uUlL]+\b", "", m.group(1).split("/*")[0]).strip()
    expr = re.sub(r"[A-Z][A-Z0-9_]+", lambda c: str(define_value(code, c.group(0))), expr)
    assert re.fullmatch(r"[\d\s()*+<-]+", expr), "cannot evaluate %s = %s" % (name, expr)
    return eval(expr)


def test_documented_limits_match_the_code():
    code = code_text()
    stated = []
    for page in doc_pages():
        text = doc(page)
        for name in sorted(set(re.findall(CONST, text))):
            assert re.search(r"\b%s\b" % name, code), "%s names %s, which the code lacks" % (
                page, name)
        for n, unit, name in BEFORE.findall(text):
            stated.append((page, name, int(n.replace(",", "")) * UNITS[unit]))
        for name, n, unit in AFTER.findall(text):
            stated.append((page, name, int(n.replace(",", "")) * UNITS[unit]))
    assert len(stated) >= 3, "no limits stated with a value in the docs: %s" % stated
    for page, name, value in stated:
        assert define_value(code, name) == value, "%s: %s is %d, the code says %d" % (
            page, name, value, define_value(code, name))


# ---- files -------------------------------------------------------------------------------

def test_documented_files_exist():
    tree = set()
    for root, dirs, files in os.walk(SOURCE_DIR):
        dirs[:] = [x for x in dirs if not x.startswith((".", "build", "node_modules"))]
        rel = os.path.relpath(root, SOURCE_DIR)
        tree.update(os.path.normpath(os.path.join(rel, f)) for f in files)
    names = {os.path.basename(t) for t in tree}
    checked = 0
    for page in doc_pages():
        for tok in set(re.findall(r"`([\w./-]+\.(?:c|h|py|sh|md|conf|yml|toml))`", doc(page))):
            checked += 1
            if "/" not in tok:
                assert tok in names, "%s names %s: no such file" % (page, tok)
                continue
            if tok.startswith(("/", "../shared/")):
                continue  # a path in the image, the shared docs: outside this tree
            here = os.path.normpath(os.path.join(os.path.dirname(page), tok))
            # a path from the root, from the page, or the tail of one (`format/keys.c`)
            assert here in tree or any(t == tok or t.endswith("/" + tok) for t in tree), \
                "%s names %s: no such file" % (page, tok)
    assert checked >= 20, checked


if __name__ == "__main__":
    try:
        run_tests([
            test_documented_signals,
            test_documented_metrics,
            test_documented_ingest_parameters,
            test_documented_buffer_parameters,
            test_observability_config_blocks_pass_dry_run,
            test_documented_limits_match_the_code,
            test_documented_files_exist,
        ])
    finally:
        cleanup()
