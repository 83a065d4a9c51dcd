#!/usr/bin/env python3
"""Checks the Grafana dashboards in dashboards/ against the metrics the controller exports.

For every dashboard JSON file:
  - it parses, has a unique `uid` and a title;
  - every PromQL expression (panel targets, template variable queries) references only metric
    names the controller exports (histograms: also NAME_bucket, NAME_sum, NAME_count), only
    PromQL functions and aggregations that exist, and in label matchers and by/without clauses
    only labels that one of the referenced metrics carries (plus `le` for histograms);
  - every data source reference is the dashboard's `datasource` variable (${datasource}) — a
    variable of type datasource whose query is prometheus — or the uid of a data source declared
    in a provisioning file under dashboards/provisioning/;
  - every range in rate(), irate() and increase() is $__rate_interval (it adapts to the scrape
    interval; a fixed [1m] is empty with Prometheus's default 1 m scrape);
  - every panel has a description, and the dashboard refreshes no faster than every 10 s.
The provisioning files must parse as YAML with `apiVersion: 1`, and a dashboard provider's path
must not be a placeholder.

The exported metrics come from the table of docs/metrics.md (--metrics-doc), or from a live
/metrics exposition (--metrics-url URL or --metrics-file FILE; then names and label names are
those served). The recording rules of dashboards/prometheus/*.rules.yml count as exported.

Exit status: 0 all good, 1 a dashboard is wrong (each problem on one line), 2 usage error.

Examples:
  scripts/check-dashboards.py                      # against docs/metrics.md
  scripts/check-dashboards.py --metrics-url http://127.0.0.1:8080/metrics
  curl -s localhost:8080/metrics > m.txt && scripts/check-dashboards.py --metrics-file m.txt
"""

import argparse
import glob
import json
import os
import re
import sys
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# PromQL functions (called with parentheses) and aggregation operators.
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_sum",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln",
    "log2", "log10", "minute", "month", "predict_linear", "rate", "resets", "round", "scalar",
    "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year", "avg_over_time",
    "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time", "acos",
    "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "sin", "sinh", "tan", "tanh", "deg",
    "rad", "pi",
}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}
# Grafana template functions usable as a variable query.
GRAFANA_QUERY_FUNCS = {"label_values", "label_names", "metrics", "query_result"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
SUMMARY_SUFFIXES = ("_sum", "_count")


class Exported:
    """Metric names with their type and label names."""

    def __init__(self):
        self.types = {}   # name -> gauge | counter | histogram | summary | untyped
        self.labels = {}  # name -> set of label names
        self.unseen = set()  # families declared without any series: their labels are unknown

    def add(self, name, mtype, labels):
        self.types[name] = mtype
        self.labels.setdefault(name, set()).update(labels)

    def resolve(self, series):
        """The family of a series name (a histogram's _bucket → the histogram), or None."""
        if series in self.types:
            return series, ""
        for suffix in HISTOGRAM_SUFFIXES:
            base = series[: -len(suffix)] if series.endswith(suffix) else None
            if base and self.types.get(base) == "histogram":
                return base, suffix
            if base and self.types.get(base) == "summary" and suffix in SUMMARY_SUFFIXES:
                return base, suffix
        return None, None

    def labels_of(self, series):
        """Label names of a series, or None when unknown (a scraped family with no series)."""
        base, suffix = self.resolve(series)
        if base is None:
            return set()
        if base in self.unseen:
            return None
        out = set(self.labels.get(base, set()))
        if suffix == "_bucket":
            out.add("le")
        if self.types.get(base) == "summary" and suffix == "":
            out.add("quantile")
        return out


def from_metrics_doc(path):
    """The metric table of docs/metrics.md: | `name` | type | `l1`, `l2` | what |."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        sys.exit(f"check-dashboards: cannot read {path}: {e}")
    # The first table only: the recording rules' table follows under its own heading.
    m = re.search(r"^\| metric \|.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not m:
        sys.exit(f"check-dashboards: {path}: no metric table")
    out = Exported()
    table_metrics(m.group(1), out)
    if not out.types:
        sys.exit(f"check-dashboards: {path}: no metrics in its table")
    return out


def add_recording_rules(folder, out):
    """Adds the series recorded by the rule files under `folder` (labels: those of the metrics
    their expressions use, minus what an aggregation drops — approximated as the union)."""
    try:
        import yaml
    except ImportError:
        return
    for f in sorted(glob.glob(os.path.join(folder, "*.rules.yml"))):
        doc = yaml.safe_load(open(f, encoding="utf-8")) or {}
        for group in doc.get("groups") or []:
            for rule in group.get("rules") or []:
                if "record" in rule:
                    names = re.findall(r"\b(qkdn_[a-z0-9_]+)", rule["expr"])
                    labels = set()
                    for n in names:
                        labels |= out.labels_of(n) or set()
                    if re.search(r"\b(sum|avg|min|max|count)\s*\(", rule["expr"]) and \
                            not re.search(r"\bby\s*\(", rule["expr"]):
                        labels = set()
                    out.add(rule["record"], "gauge", labels)


def table_metrics(text, out):
    """Adds the rows | `name` | type | `l1`, `l2` | of a Markdown table to `out`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`qkdn_"):
            continue
        name = cells[0].strip("`")
        mtype = cells[1].split()[0]
        labels = set(re.findall(r"`([a-zA-Z_][a-zA-Z0-9_]*)`", cells[2]))
        out.add(name, mtype, labels)


def from_exposition(text):
    """Names, types and label names of a Prometheus text exposition."""
    out = Exported()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                out.add(parts[2], parts[3], set())
                out.unseen.add(parts[2])
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*?)\})?\s", line)
        if not m:
            continue
        series = m.group(1)
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"", m.group(3) or ""))
        base, suffix = out.resolve(series)
        if base is None:
            out.add(series, "untyped", labels)
        else:
            out.labels[base].update(labels - ({"le"} if suffix == "_bucket" else set()))
            out.unseen.discard(base)
    return out


def strip_strings(expr):
    return re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)


def check_expr(expr, exported, where, problems):
    """Checks one PromQL expression; returns the metric names it references."""
    # Grafana's label_values(SELECTOR, LABEL): the selector is PromQL, LABEL one of its labels.
    lv = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", expr, re.S)
    if lv:
        used = check_expr(lv.group(1), exported, where, problems)
        sets = [exported.labels_of(n) for n in used]
        labels = set().union(*(x for x in sets if x is not None))
        if None not in sets and lv.group(2) not in labels:
            problems.append(f"{where}: label '{lv.group(2)}' is not a label of {lv.group(1)}")
        return used
    # Grafana variables: $var, ${var}, ${var:fmt}, [[var]], $__interval → neutral tokens.
    e = re.sub(r"\$\{[^}]*\}|\[\[[^\]]*\]\]|\$[A-Za-z_][A-Za-z0-9_]*", "1m", expr)
    e = strip_strings(e)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range and subquery selectors
    used = []
    # Selector label matchers: metric{a="x", b=~"y"} or {__name__="..."}.
    matchers = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}", e):
        names = re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2))
        matchers.append((m.group(1), names))
    e_nolabels = re.sub(r"\{[^}]*\}", "", e)
    # Grouping clauses: by (...), without (...), on (...), ignoring (...), group_left (...).
    groupings = []
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)",
                         e_nolabels):
        groupings.extend(n.strip() for n in m.group(2).split(",") if n.strip())
    e_plain = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ",
                     e_nolabels)
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e_plain):
        ident, call = m.group(1), m.group(2)
        if call:
            if ident not in FUNCTIONS and ident not in AGGREGATIONS \
                    and ident not in GRAFANA_QUERY_FUNCS:
                problems.append(f"{where}: unknown function '{ident}' in: {expr}")
            continue
        if ident.lower() in KEYWORDS or re.fullmatch(r"\d+[smhdwy]", ident):
            continue
        if exported.resolve(ident)[0] is None:
            problems.append(f"{where}: metric '{ident}' is not exported by the controller"
                            f" in: {expr}")
        used.append(ident)
    known_labels, unknown = set(), False
    for name in used:
        labels = exported.labels_of(name)
        if labels is None:
            unknown = True
        else:
            known_labels |= labels
    for metric, names in matchers:
        allowed = exported.labels_of(metric) if metric else (None if unknown else known_labels)
        if allowed is None:
            continue
        for n in names:
            if n != "__name__" and n not in allowed:
                problems.append(f"{where}: label '{n}' is not a label of"
                                f" {metric or 'the metrics used'} in: {expr}")
    for n in groupings:
        if not unknown and n not in known_labels:
            problems.append(f"{where}: grouping label '{n}' is not a label of the metrics used"
                            f" in: {expr}")
    if not used and "label_names" not in expr and "query_result" not in expr:
        problems.append(f"{where}: expression references no metric: {expr}")
    return used


def walk_panels(panels):
    for p in panels or []:
        yield p
        yield from walk_panels(p.get("panels"))


def check_datasource(ds, variables, provisioned, where, problems):
    if ds is None:
        return
    if isinstance(ds, str):
        uid, dtype = ds, None
    elif isinstance(ds, dict):
        uid, dtype = ds.get("uid"), ds.get("type")
    else:
        problems.append(f"{where}: datasource must be an object, got {ds!r}")
        return
    if dtype is not None and dtype != "prometheus":
        problems.append(f"{where}: datasource type '{dtype}' (expected prometheus)")
    if not uid:
        problems.append(f"{where}: datasource without uid")
        return
    m = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", uid)
    if m:
        if m.group(1) not in variables:
            problems.append(f"{where}: datasource uses ${m.group(1)}, which is not a datasource "
                            f"variable of this dashboard")
    elif uid not in provisioned:
        problems.append(f"{where}: datasource uid '{uid}' is neither a variable nor a data source "
                        f"provisioned under dashboards/provisioning/")


def load_provisioning(folder, problems):
    """uids of provisioned data sources; checks that every provisioning file parses."""
    uids = set()
    files = sorted(glob.glob(os.path.join(folder, "**", "*.yaml"), recursive=True) +
                   glob.glob(os.path.join(folder, "**", "*.yml"), recursive=True))
    if not files:
        problems.append(f"{folder}: no provisioning files")
    try:
        import yaml
    except ImportError:
        yaml = None
        print("check-dashboards: python3-yaml not installed: provisioning files not parsed",
              file=sys.stderr)
    for f in files:
        if yaml is None:
            continue
        try:
            doc = yaml.safe_load(open(f, encoding="utf-8"))
        except Exception as e:  # noqa: BLE001 - report any parse error
            problems.append(f"{f}: not valid YAML: {e}")
            continue
        if not isinstance(doc, dict) or doc.get("apiVersion") != 1:
            problems.append(f"{f}: expected a mapping with apiVersion: 1")
            continue
        for ds in doc.get("datasources") or []:
            if ds.get("type") == "prometheus" and \
                    not (ds.get("jsonData") or {}).get("timeInterval"):
                problems.append(f"{f}: data source '{ds.get('name')}' needs jsonData.timeInterval "
                                f"(the scrape interval, which $__rate_interval builds on)")
            if ds.get("uid"):
                uids.add(ds["uid"])
            if ds.get("type") not in (None, "prometheus"):
                problems.append(f"{f}: data source '{ds.get('name')}' is not prometheus")
        for prov in doc.get("providers") or []:
            path = (prov.get("options") or {}).get("path")
            if prov.get("type") != "file" or not path:
                problems.append(f"{f}: provider '{prov.get('name')}' needs type file and a path")
            elif "/path/to" in path:
                problems.append(f"{f}: provider '{prov.get('name')}' path {path} is a placeholder")
    return uids


def check_dashboard(path, exported, provisioned, uids, problems):
    name = os.path.relpath(path, ROOT)
    try:
        d = json.load(open(path, encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"{name}: not valid JSON: {e}")
        return 0
    if not d.get("uid") or not d.get("title"):
        problems.append(f"{name}: needs a uid and a title")
    elif d["uid"] in uids:
        problems.append(f"{name}: uid '{d['uid']}' also used by {uids[d['uid']]}")
    else:
        uids[d["uid"]] = name
    refresh = d.get("refresh")
    if isinstance(refresh, str) and re.fullmatch(r"\d+s", refresh) and int(refresh[:-1]) < 10:
        problems.append(f"{name}: refresh {refresh} is faster than any sensible scrape interval")
    variables = set()
    templating = (d.get("templating") or {}).get("list") or []
    for v in templating:
        if v.get("type") == "datasource":
            if v.get("query") != "prometheus":
                problems.append(f"{name}: variable {v.get('name')}: datasource query must be "
                                f"prometheus")
            variables.add(v.get("name"))
    exprs = 0
    for v in templating:
        where = f"{name}: variable {v.get('name')}"
        if v.get("type") != "query":
            continue
        check_datasource(v.get("datasource"), variables, provisioned, where, problems)
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if q:
            check_expr(q, exported, where, problems)
            exprs += 1
    for p in walk_panels(d.get("panels")):
        where = f"{name}: panel '{p.get('title', p.get('id'))}'"
        if p.get("type") in ("row", "text"):
            continue
        check_datasource(p.get("datasource"), variables, provisioned, where, problems)
        if not (p.get("description") or "").strip():
            problems.append(f"{where}: no description (say what the panel shows and in which unit)")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        for t in targets:
            check_datasource(t.get("datasource"), variables, provisioned, where, problems)
            if not t.get("expr"):
                problems.append(f"{where}: target {t.get('refId')} without expr")
                continue
            check_expr(t["expr"], exported, where, problems)
            for rng in re.findall(r"\[([^\]]*)\]", t["expr"]):
                if rng != "$__rate_interval":
                    problems.append(f"{where}: range [{rng}] (use [$__rate_interval]) in: "
                                    f"{t['expr']}")
            exprs += 1
    return exprs


def main():
    ap = argparse.ArgumentParser(
        description="Validate the Grafana dashboards against the controller's metrics.",
        epilog=__doc__.split("Examples:")[1] and "Examples:" + __doc__.split("Examples:")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dashboards", default=os.path.join(ROOT, "dashboards"),
                    help="folder of dashboard JSON files (default: dashboards/)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--metrics-doc", default=os.path.join(ROOT, "docs", "metrics.md"),
                     help="the document whose table lists the metrics (default: docs/metrics.md)")
    ap.add_argument("--rules", default=os.path.join(ROOT, "dashboards", "prometheus"),
                    help="folder of *.rules.yml whose recording rules count as exported "
                         "(default: dashboards/prometheus)")
    src.add_argument("--metrics-url", help="scrape this /metrics URL for the exported names")
    src.add_argument("--metrics-file", help="a saved /metrics exposition")
    args = ap.parse_args()

    if args.metrics_url:
        try:
            with urllib.request.urlopen(args.metrics_url, timeout=10) as r:
                exported = from_exposition(r.read().decode("utf-8"))
        except OSError as e:
            sys.exit(f"check-dashboards: cannot scrape {args.metrics_url}: {e}")
        source = args.metrics_url
    elif args.metrics_file:
        try:
            exported = from_exposition(open(args.metrics_file, encoding="utf-8").read())
        except OSError as e:
            sys.exit(f"check-dashboards: cannot read {args.metrics_file}: {e}")
        source = args.metrics_file
    else:
        exported = from_metrics_doc(args.metrics_doc)
        source = os.path.relpath(args.metrics_doc, ROOT)
    add_recording_rules(args.rules, exported)

    problems = []
    provisioned = load_provisioning(os.path.join(args.dashboards, "provisioning"), problems)
    files = sorted(glob.glob(os.path.join(args.dashboards, "*.json")))
    if not files:
        problems.append(f"{args.dashboards}: no dashboard JSON files")
    uids = {}
    exprs = sum(check_dashboard(f, exported, provisioned, uids, problems) for f in files)
    for p in problems:
        print(p)
    if problems:
        print(f"check-dashboards: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"check-dashboards: {len(files)} dashboards, {exprs} expressions, all against "
          f"{len(exported.types)} metrics of {source}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
