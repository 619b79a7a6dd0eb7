"""examples/grafana/weir-dashboard.json queries only what weir exposes.

Every PromQL expression in the dashboard (panel targets, and the metric of each
label_values() variable query) is parsed: tokens, balanced brackets, label matchers of the
form name op "value", grouping lists, and function names PromQL knows. The metric names and
label names it uses are then looked up in the /metrics of a running weir with every plugin
the dashboard covers (forward and http inputs, the prometheus source, an S3 output on s3rver)
after one event went through each input and one went unmatched (the S3 families, request
errors included, are registered when the output starts, so none need happen). A
metric renamed in weir (or misspelt in the dashboard) fails this test, and so does an
expression that does not parse; the checker is shown to catch both on altered copies first.

Target labels that Prometheus adds when it scrapes (instance, job) are the only labels allowed
that weir itself does not expose."""

import json
import os
import re

import test_s3_output as ts3  # its WEIRS list, which cleanup() stops
from test_s3_output import (BASE_ENV, STATIC, cleanup, fwd_send, gz_lines, match_conf, records,
                            s3, stop_weir, tmpdir)
from weirtest import SOURCE_DIR, Weir, free_port, http_post, run_tests, scrape, wait_for

DASHBOARD = os.path.join(SOURCE_DIR, "examples", "grafana", "weir-dashboard.json")
TARGET_LABELS = {"instance", "job"}

FUNCTIONS = set("""abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time
ceil changes clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week
day_of_year days_in_month deg delta deriv exp floor histogram_count histogram_fraction
histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta
increase irate label_join label_replace last_over_time ln log10 log2 mad_over_time
max_over_time min_over_time minute month pi predict_linear present_over_time
quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_desc sqrt
stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector year""".split())
AGGREGATIONS = set("sum min max avg group stddev stdvar count count_values bottomk topk "
                   "quantile".split())
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}

TOKEN = re.compile(r"""(?P<space>\s+)
  |(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  |(?P<dur>(?:\d+(?:ms|[smhdwy]))+)
  |(?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  |(?P<id>[a-zA-Z_:][a-zA-Z0-9_:]*)
  |(?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],:@])""", re.X)
GRAFANA_VAR = re.compile(r"\$__\w+|\$\{\w+(?::\w+)?\}|\$\w+")


class PromQLError(ValueError):
    pass


def tokenize(expr):
    toks, i = [], 0
    while i < len(expr):
        m = TOKEN.match(expr, i)
        if not m:
            raise PromQLError("cannot read %r at %d in %s" % (expr[i:i + 10], i, expr))
        if m.lastgroup != "space":
            toks.append((m.lastgroup, m.group()))
        i = m.end()
    return toks


def promql_refs(expr):
    """(metric names, label names) an expression uses; PromQLError when it does not parse.
    Grafana's variables ($__rate_interval, $instance) are replaced by values of their kind:
    a duration in a range, text in a string."""
    expr = GRAFANA_VAR.sub("5m", expr)
    toks = tokenize(expr)
    metrics, labels = set(), set()
    depth, i = 0, 0

    def expect(j, text):
        if j >= len(toks) or toks[j][1] != text:
            raise PromQLError("expected %r at token %d in %s" % (text, j, expr))

    while i < len(toks):
        kind, t = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
            if depth < 0:
                raise PromQLError("unbalanced ')' in " + expr)
        elif t == "{":  # label matchers: name op "value", ...
            i += 1
            while i < len(toks) and toks[i][1] != "}":
                if toks[i][0] != "id" or i + 2 >= len(toks) or \
                        toks[i + 1][1] not in ("=", "!=", "=~", "!~") or toks[i + 2][0] != "str":
                    raise PromQLError("bad label matcher at token %d in %s" % (i, expr))
                labels.add(toks[i][1])
                i += 3
                if i < len(toks) and toks[i][1] == ",":
                    i += 1
            expect(i, "}")
        elif t == "[":  # a range or subquery: durations only
            i += 1
            while i < len(toks) and toks[i][1] != "]":
                if toks[i][0] not in ("dur", "num") and toks[i][1] != ":":
                    raise PromQLError("bad range at token %d in %s" % (i, expr))
                i += 1
            expect(i, "]")
        elif t in ("}", "]"):
            raise PromQLError("unbalanced %r in %s" % (t, expr))
        elif kind == "id" and t in GROUPING:
            if nxt == "(":
                expect(i + 1, "(")
                i += 2
                while i < len(toks) and toks[i][1] != ")":  # name (, name)* [,]
                    if toks[i][0] != "id" or (i + 1 < len(toks) and toks[i + 1][1] not in ",)"):
                        raise PromQLError("bad label list at token %d in %s" % (i, expr))
                    labels.add(toks[i][1])
                    i += 2 if i + 1 < len(toks) and toks[i + 1][1] == "," else 1
                expect(i, ")")
        elif kind == "id" and t in AGGREGATIONS and nxt in GROUPING:
            pass  # "sum by (a) (x)": the grouping comes first
        elif kind == "id" and nxt == "(":
            if t not in FUNCTIONS and t not in AGGREGATIONS:
                raise PromQLError("unknown function %s in %s" % (t, expr))
        elif kind == "id" and t.lower() not in KEYWORDS:
            metrics.add(t)
        i += 1
    if depth != 0:
        raise PromQLError("unbalanced '(' in " + expr)
    return metrics, labels


LABEL_VALUES = re.compile(r"^label_values\(\s*(?:(.+?)\s*,\s*)?([a-zA-Z_]\w*)\s*\)$")


def dashboard_queries(dash):
    """[(where, expr)] of every query: panel targets (rows' panels too) and variables."""
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                out.append(("panel %r %s" % (p.get("title"), t.get("refId")), t["expr"]))
    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = LABEL_VALUES.match(q.strip())
        if m:  # Grafana's label_values(metric, label): the metric is PromQL, the label a name
            out.append(("variable %s" % v["name"], "%s{%s=~\".*\"}" % (m.group(1), m.group(2))))
        else:
            out.append(("variable %s" % v["name"], q))
    return out


def exposed(metrics):
    """(sample names, label names) of parsed /metrics series (weirtest.scrape)."""
    return ({n for n, _ in metrics}, {k for _, ls in metrics for k, _ in ls})


def check(dash, names, labels):
    """Problems, one line each: queries that do not parse, names weir does not expose."""
    problems, used = [], 0
    for where, expr in dashboard_queries(dash):
        try:
            ms, ls = promql_refs(expr)
        except PromQLError as e:
            problems.append("%s: does not parse: %s" % (where, e))
            continue
        if not ms:
            problems.append("%s: queries no metric: %s" % (where, expr))
        used += len(ms)
        for n in sorted(ms - names):
            problems.append("%s: metric %s is not exposed by weir" % (where, n))
        for n in sorted(ls - labels - TARGET_LABELS):
            problems.append("%s: label %s is not exposed by weir" % (where, n))
    if not used:
        problems.append("the dashboard queries nothing")
    return problems


def start():
    d = tmpdir("weir-grafana-")
    ports = {"fwd": free_port(), "http": free_port(), "prom": free_port()}
    conf = """
<source>
  @type forward
  @id in_fwd
  bind 127.0.0.1
  port %(fwd)d
</source>
<source>
  @type http
  @id in_http
  bind 127.0.0.1
  port %(http)d
</source>
<source>
  @type prometheus
  bind 127.0.0.1
  port %(prom)d
</source>
""" % ports + match_conf(d, "s3_audit", "grafana", STATIC, pattern="audit.**")
    env = dict(BASE_ENV)
    env["HOME"] = d
    w = Weir(conf, env=env, workdir=d)
    ts3.WEIRS.append(w)
    w.start(list(ports.values()))
    w.ports = ports
    return w


def test_checker_catches_a_renamed_metric_and_bad_syntax():
    """The check itself can fail: on copies of the dashboard with one metric renamed, one
    expression cut short and one unknown function, it names each problem."""
    with open(DASHBOARD) as f:
        text = f.read()
    dash = json.loads(text)
    names = set()
    labels = set()
    for _, expr in dashboard_queries(dash):
        ms, ls = promql_refs(expr)
        names |= ms
        labels |= ls
    assert "weir_output_failing_seconds" in names, sorted(names)
    assert not names & (FUNCTIONS | AGGREGATIONS | GROUPING | KEYWORDS), sorted(names)
    assert {"plugin_id", "le", "instance"} <= labels, sorted(labels)
    assert check(dash, names, labels) == []
    renamed = json.loads(text.replace("weir_output_failing_seconds", "weir_output_failing_secs"))
    got = check(renamed, names, labels)
    assert got and all("weir_output_failing_secs is not exposed" in p for p in got), got
    cut = json.loads(text.replace("[$__rate_interval]))", "[$__rate_interval])", 1))
    got = check(cut, names, labels)
    assert len(got) == 1 and "unbalanced '('" in got[0], got
    unknown = json.loads(text.replace("histogram_quantile(", "histogram_quantil(", 1))
    got = check(unknown, names, labels)
    assert len(got) == 1 and "unknown function histogram_quantil" in got[0], got
    for bad in ('x{a="1"', 'x{a~"1"}', "rate(x[5q])", "sum by (a b) (x"):
        try:
            promql_refs(bad)
        except PromQLError:
            continue
        raise AssertionError("parsed: " + bad)


def test_every_queried_metric_is_exposed():
    srv = s3()
    w = start()
    try:
        with open(DASHBOARD) as f:
            dash = json.load(f)
        # each family with a tag or a histogram has samples only once something happened
        assert fwd_send(w.ports["fwd"], "audit.fwd", records("g", 3))
        http_post(w.ports["http"], "audit.http", json.dumps(records("h", 2)).encode(),
                  "application/json")
        assert fwd_send(w.ports["fwd"], "stray", records("u", 1))  # matches nothing
        objs = srv.wait_objects("grafana", lambda o: gz_lines(o) >= 5, timeout=60)
        assert gz_lines(objs) == 5

        def delivered():
            m = scrape(w.ports["prom"])
            return m if any(n == "weir_output_last_success_timestamp_seconds" for n, _ in m) and \
                any(n == "weir_output_delivered_records_total" and v == 5
                    for (n, _), v in m.items()) else None
        names, labels = exposed(wait_for(delivered, what="5 events delivered in /metrics"))
        problems = check(dash, names, labels)
        assert problems == [], "\n".join(problems)
    finally:
        stop_weir(w)


def main():
    try:
        run_tests([
            test_checker_catches_a_renamed_metric_and_bad_syntax,
            test_every_queried_metric_is_exposed,
        ])
    finally:
        cleanup()


if __name__ == "__main__":
    main()
