#!/usr/bin/env python3
"""Runs every benchmark of the project and rewrites docs/PERFORMANCE.md (issue 15).

Usage: bench/run-all.sh [BUILD_DIR]          (default: build; nothing is built here)

Environment:
  QUICK=1          short durations and small sweeps: checks the whole pipeline in a few minutes
  ONLY=name,name   run only these steps;  SKIP=name,name: run every step but these
  RESULTS=DIR      where every raw output goes (default bench-results/<UTC time>)
  DOC=FILE         the generated Markdown (default docs/PERFORMANCE.md for a full run of every
                   step; RESULTS/PERFORMANCE.md for QUICK, ONLY or SKIP runs)
  PLOT=FILE        the relay plot (default docs/images/relay-throughput-latency.png with the
                   default DOC, else RESULTS/relay-throughput-latency.png); needs gnuplot
  GNUPLOT=PATH     the gnuplot program (default gnuplot); without it the run goes on, no plot
Steps: see STEP_NAMES. Standard library only.
"""

import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_NAMES = ["codec", "roundtrip", "routing", "demand", "store", "relay-mem", "relay-pg", "api",
              "agent-scale", "controller-scale"]
PLOT_NAME = "relay-throughput-latency.png"


def log(msg):
    print(msg, flush=True)


def loadavg():
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def fmt_load(la):
    return "%.2f %.2f %.2f" % la


def num(x, digits=None):
    """A figure for a table: thousands separators, sensible precision."""
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if digits is None:
        a = abs(x)
        digits = 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3
    return "{:,.{}f}".format(x, digits)


def wrk_ms(text):
    """wrk latency ("812.00us", "1.59ms", "1.20s") in milliseconds."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text or "")
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def fnum(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def results_lines(text):
    """Every "RESULT key=value ..." line as a dict."""
    out = []
    for line in text.splitlines():
        if line.startswith("RESULT "):
            out.append(dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv))
    return out


class Section:
    """One benchmark's part of the document."""

    def __init__(self, title, goal):
        self.title = title
        self.goal = goal
        self.figures = []  # (label, value, unit, goal text, goal ratio, baseline text, baseline ratio, verdict)
        self.tables = []   # Markdown blocks printed after the figures
        self.notes = []

    def figure(self, label, value, unit="", goal=None, le=False, baseline=None, baseline_label="",
               digits=None):
        """goal: the bound (>= unless le); baseline: the baseline's value in the same run."""
        ratio = value / goal if goal and value is not None else None
        verdict = ""
        if goal is not None and value is not None:
            verdict = "met" if (value <= goal if le else value >= goal) else "**NOT met**"
        goal_text = ("%s %s %s" % ("≤" if le else "≥", num(goal, digits), unit)).strip() if goal is not None else "—"
        b_ratio = value / baseline if baseline and value is not None else None
        b_text = ("%s: %s %s" % (baseline_label, num(baseline, digits), unit)).strip() if baseline is not None else "—"
        self.figures.append((label, ("%s %s" % (num(value, digits), unit)).strip(), goal_text,
                             "%.2f×" % ratio if ratio is not None else "—", b_text,
                             "%.2f×" % b_ratio if b_ratio is not None else "—", verdict or "—"))

    def verdict(self):
        v = [f[6] for f in self.figures]
        if any("NOT" in x for x in v):
            return "**NOT met**"
        if any(x == "met" for x in v):
            return "met"
        return "no numeric goal"


# --- parsers: (stdout text, step) -> Section -------------------------------------------------


def gbench_json(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    rows = data.get("benchmarks", [])
    medians = [r for r in rows if r.get("run_type") == "aggregate" and r.get("aggregate_name") == "median"]
    if medians:
        return {r["run_name"]: r for r in medians}
    return {r.get("run_name", r["name"]): r for r in rows if r.get("run_type", "iteration") == "iteration"}


def parse_codec(text, step):
    s = Section("Ck codec (issue 2)", "≥ 100,000 frames/s decoded and validated on one core, every message")
    rows = gbench_json(step["json"])
    for i in range(4):
        enc = rows.get("BM_Encode/%d" % i, {})
        dec = rows.get("BM_Decode/%d" % i, {})
        label = dec.get("label") or enc.get("label") or str(i)
        e = enc.get("items_per_second")
        d = dec.get("items_per_second")
        s.figure("%s: decode + validate" % label, d / 1e3 if d else None, "k frames/s", goal=100,
                 baseline=e / 1e3 if e else None, baseline_label="encode")
    s.notes.append("Medians of the repetitions (Google Benchmark CPU time); the baseline column is "
                   "the same message's encode rate in the same run.")
    return s


def parse_roundtrip(text, step):
    s = Section("Ck round trips through the server (issue 2)", "≥ 20,000 heartbeat round trips/s")
    m = re.search(r"round_trips_per_second=(\d+) p50_us=(\d+) p99_us=(\d+)", text)
    e = re.search(r"round_trips=(\d+) errors=(\d+) failed_connections=(\d+)", text)
    if not m:
        raise ValueError("no round_trips_per_second line")
    s.figure("round trips/s", float(m.group(1)), "/s", goal=20000)
    s.figure("p50", float(m.group(2)) / 1e3, "ms")
    s.figure("p99", float(m.group(3)) / 1e3, "ms")
    if e:
        s.figure("errors", float(e.group(2)), "", goal=0, le=True, digits=0)
    return s


def parse_routing(text, step):
    s = Section("Route computation (issues 3, 15)",
                "key-aware single route p50 ≤ 2× plain Boost.Graph Dijkstra on the same graph; "
                "Yen k=4 on kdl p99 < 2 ms")
    rows = gbench_json(step["json"])
    table = ["| topology | query | p50 µs | p99 µs | p50 / plain Dijkstra |", "|---|---|---|---|---|"]
    for topo in ("germany50", "cogentco", "kdl"):
        base = rows.get("plain_dijkstra/" + topo)
        if not base:
            continue
        for q in ("plain_dijkstra", "key_aware_k1", "key_aware_k4", "hop_count_k1", "widest_shortest_k1"):
            r = rows.get("%s/%s" % (q, topo))
            if r:
                table.append("| %s | %s | %s | %s | %.2f× |" % (topo, q, num(r["p50_us"]), num(r["p99_us"]),
                                                                 r["p50_us"] / base["p50_us"]))
        ka = rows.get("key_aware_k1/" + topo)
        if ka:
            s.figure("%s key-aware k=1 p50 / plain Dijkstra p50" % topo, ka["p50_us"] / base["p50_us"], "×",
                     goal=2, le=True)
            s.figure("%s key-aware k=1 p50" % topo, ka["p50_us"], "µs", baseline=base["p50_us"],
                     baseline_label="plain Dijkstra")
    k4 = rows.get("key_aware_k4/kdl")
    if k4:
        base = rows.get("plain_dijkstra/kdl")
        s.figure("kdl Yen k=4 p99", k4["p99_us"] / 1e3, "ms", goal=2, le=True,
                 baseline=base["p99_us"] / 1e3 if base else None, baseline_label="plain Dijkstra p99")
    s.tables.append("\n".join(table))
    return s


def parse_demand(text, step):
    s = Section("Demand replay (issues 3, 20)",
                "key-aware routing blocks ≥ 25 % fewer requests than plain hop count at the load where "
                "hop count blocks 10 % (issue 3); key-aware no worse than before the headroom gate and "
                "within 5 % of hop count's key per delivered key where neither blocks (issue 20)")
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[1].endswith("x") and cells[0] != "topology":
            rows.append(cells)

    def mean(cell):
        return fnum(cell.split("±")[0].strip()) if cell and cell != "-" else None

    for r in rows:
        if r[1] != "1.0x" or r[2] != "key_aware":
            continue
        base = next((b for b in rows if b[0] == r[0] and b[1] == r[1] and b[2] == "hop_count_plain"), None)
        s.figure("%s key-aware blocking fewer than plain hop count" % r[0], mean(r[4]), "%", goal=25)
        s.figure("%s key-aware blocking" % r[0], mean(r[3]), "%", baseline=mean(base[3]) if base else None,
                 baseline_label="plain hop count", digits=2)
    i20 = re.search(r"issue 20 goal: (met|NOT met)", text)
    if i20:
        ok = i20.group(1) == "met"
        s.figures.append(("issue 20 verdict of the bench (every topology and load)", i20.group(1), "met",
                          "—", "key_aware_ungated, hop_count", "—", "met" if ok else "**NOT met**"))
    if "short run (smoke test)" in text:
        s.notes.append("QUICK run (--quick): one seed, 3,000 requests, the 1.0× load only; the bench "
                       "judges its goals on the full run only.")
    table = [l for l in text.splitlines() if l.startswith("|")]
    if table:
        s.tables.append("Every row of the run (baseline `hop_count_plain`; ± is half the spread over "
                        "the seeds):\n\n" + "\n".join(table))
    return s


def parse_store(text, step):
    s = Section("PostgreSQL store (issue 5)",
                "recovery (`load()`) of 10,000 KMs, 20,000 links, 100,000 ledger rows < 3 s")
    m = re.search(r"load\(\): (\d+) ledger rows \+ topology: median ([0-9.e-]+) s", text)
    fill = re.search(r"fill: (.*)", text)
    if not m:
        raise ValueError("no load() line")
    s.figure("recovery, median of 5 (%s ledger rows)" % num(float(m.group(1)), 0), float(m.group(2)), "s",
             goal=3, le=True)
    single = None
    for b, bps, rps in re.findall(r"apply_ledger batch=(\d+): (\d+) batches/s, (\d+) rows/s", text):
        if b == "1":
            single = float(bps)
            s.figure("apply_ledger, 1 entry per transaction", single, "batches/s")
        else:
            s.figure("apply_ledger, %s entries per batch" % b, float(rps), "rows/s", baseline=single,
                     baseline_label="1 entry per transaction (rows/s)")
    for g, bps, cps in re.findall(r"apply_ledger batch=1, (\d+) per write_batch: (\d+) batches/s \((\d+) commits/s",
                                  text):
        s.figure("apply_ledger, 1 entry per batch, %s per write_batch (%s commits/s)" % (g, cps), float(bps),
                 "batches/s", baseline=single, baseline_label="one per transaction")
    if fill:
        s.notes.append("Data set: " + fill.group(1).strip())
    return s


def clients(c):
    return "1 client" if c == 1 else "%d clients" % c


def parse_relay(text, step):
    store = step["store"]
    if store == "mem":
        s = Section("ETSI 014 key supply through relays, in-memory store (issues 4, 15)",
                    "≥ 20,000 relayed 256-bit keys/s over 3 hops with 32 clients (issue 15; issue 4: ≥ 2,000); "
                    "3-hop p99 with one client < 5 ms (issue 15; issue 4: < 20 ms); controller CPU ≤ 100 µs "
                    "per relay, agents ≤ 200 µs per hop")
    else:
        s = Section("ETSI 014 key supply through relays, PostgreSQL ledger (issue 15)",
                    "≥ 5,000 relayed 256-bit keys/s over 3 hops with 32 clients, durable ledger (fsync on)")
    rows = results_lines(text)
    if not rows:
        raise ValueError("no RESULT lines")
    step["rows"] = rows
    by = {(int(r["hops"]), int(r["connections"])): r for r in rows}
    table = ["| hops | clients | keys/s | × 1 hop (same clients) | p50 ms | p99 ms | controller µs/req | "
             "agents µs per hop | PostgreSQL µs/req | groups/commit | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (h, c), r in sorted(by.items()):
        k = fnum(r["keys_per_s"])
        one = by.get((1, c))
        agt = fnum(r["agt_us"])
        table.append("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            h, c, num(k), "%.2f×" % (k / fnum(one["keys_per_s"])) if one and h != 1 and fnum(one["keys_per_s"]) else "—",
            num(wrk_ms(r["p50"])), num(wrk_ms(r["p99"])), r["ctl_us"], num(agt / h) if agt is not None else "—",
            r["pg_us"], r["groups_per_commit"], r["errors"]))
    s.tables.append("\n".join(table))

    def goal_row(h, c):
        r = by.get((h, c))
        if r is None:
            s.notes.append("%d hops × %d clients not in this run's sweep: its goal is not judged." % (h, c))
        return r

    r = goal_row(3, 32)
    if r:
        one = by.get((1, 32))
        s.figure("3 hops, 32 clients", fnum(r["keys_per_s"]), "keys/s", goal=20000 if store == "mem" else 5000,
                 baseline=fnum(one["keys_per_s"]) if one else None, baseline_label="1 hop")
    if store == "mem":
        r = goal_row(3, 1)
        if r:
            one = by.get((1, 1))
            s.figure("3 hops, 1 client, p99", wrk_ms(r["p99"]), "ms", goal=5, le=True,
                     baseline=wrk_ms(one["p99"]) if one else None, baseline_label="1 hop")
            s.figure("3 hops, 1 client", fnum(r["keys_per_s"]), "keys/s", goal=2000,
                     baseline=fnum(one["keys_per_s"]) if one else None, baseline_label="1 hop")
        for c in (1, 32):
            r = by.get((3, c))
            if r:
                s.figure("3 hops, %s: controller CPU per relay" % clients(c), fnum(r["ctl_us"]), "µs", goal=100,
                         le=True)
                agt = fnum(r["agt_us"])
                s.figure("3 hops, %s: agents' CPU per hop" % clients(c), agt / 3 if agt is not None else None,
                         "µs", goal=200, le=True)
    errors = sum(int(r.get("errors", "0") or 0) for r in rows)
    s.figure("failed requests (non-2xx and socket errors), all rows", float(errors), "", goal=0, le=True, digits=0)
    return s


def parse_api(text, step):
    s = Section("Northbound API (issue 6)", "≥ 20,000 requests/s with p99 < 5 ms on `GET /api/v1/links`")
    rows = results_lines(text)
    if not rows:
        raise ValueError("no RESULT lines")
    for r in rows:
        c = r["connections"]
        s.figure("%s connections: requests/s" % c, fnum(r["requests_per_s"]), "/s", goal=20000)
        s.figure("%s connections: p99" % c, wrk_ms(r["p99"]), "ms", goal=5, le=True)
        s.figure("%s connections: controller CPU per request" % c, fnum(r["cpu_us"]), "µs")
        s.figure("%s connections: errors" % c, fnum(r["errors"]), "", goal=0, le=True, digits=0)
    return s


def parse_agent_scale(text, step):
    s = Section("Agent scale (issue 15)",
                "thousands of emulated links per agent process at metro rates with little CPU, memory O(1) "
                "per link (the issue gives no number; the eager baseline of earlier builds is in "
                "[performance-notes.md](performance-notes.md), \"Agent scale\")")
    r = (results_lines(text) or [None])[-1]
    if r is None:
        raise ValueError("no RESULT line")
    s.figure("links hosted by one agent", fnum(r.get("links")), "", digits=0)
    s.figure("RSS", fnum(r.get("rss_mib")), "MiB")
    s.figure("memory per link (both ends)", fnum(r.get("kib_per_link")), "KiB")
    s.figure("CPU while the pools fill", fnum(r.get("cpu_fill_pct")), "% of a core")
    s.figure("CPU with full pools", fnum(r.get("cpu_full_pct")), "% of a core")
    if "stopped_after_s" in r:
        s.figure("stopped by the RSS guard after", fnum(r["stopped_after_s"]), "s", goal=0, le=True)
    return s


def parse_controller_scale(text, step):
    s = Section("Controller scale (issue 15)",
                "10,000 KMs registered within 30 s; controller RSS < 1 GiB; steady CPU < 25 % of a core with "
                "status every second; `/metrics` < 1 s; route query p99 < 5 ms through the API")
    r = (results_lines(text) or [None])[-1]
    if r is None:
        raise ValueError("no RESULT line")
    kms = fnum(r.get("kms"))
    if kms is not None and kms < 10000:
        s.notes.append("Measured at %s KMs and %s links: the goals are stated for 10,000 KMs." %
                       (num(kms, 0), num(fnum(r.get("links")), 0)))
    s.figure("KMs registered after", fnum(r.get("register_s")), "s", goal=30, le=True)
    s.figure("links up after", fnum(r.get("links_up_s")), "s")
    s.figure("controller RSS", fnum(r.get("rss_mib")), "MiB", goal=1024, le=True)
    s.figure("steady controller CPU", fnum(r.get("steady_cpu_pct")), "% of a core", goal=25, le=True)
    s.figure("/metrics, worst of 5", fnum(r.get("metrics_worst_s")), "s", goal=1, le=True,
             baseline=fnum(r.get("metrics_best_s")), baseline_label="best")
    s.figure("route query p99", fnum(r.get("route_p99_ms")), "ms", goal=5, le=True,
             baseline=fnum(r.get("route_p50_ms")), baseline_label="p50")
    s.figure("controller CPU per route query", fnum(r.get("route_cpu_us")), "µs")
    return s


def parse_ha_failover(text, step):
    s = Section("Controller failover (issue 17)",
                "the standby leads within 5 s of a kill -9 of the leader (lease 3 s), keys flow again, "
                "measured over 20 runs")
    m = re.search(r"failover \(kill -9 to the standby leading\) over (\d+) runs: median ([0-9.]+) s, "
                  r"worst ([0-9.]+) s; keys again: median ([0-9.]+) s, worst ([0-9.]+) s", text)
    if not m:
        raise ValueError("no failover line")
    runs = int(m.group(1))
    if runs < 20:
        s.notes.append("Measured over %d runs: the goal is stated for 20." % runs)
    s.figure("failovers (kill -9)", runs, "runs", digits=0)
    s.figure("standby leads after, worst", float(m.group(3)), "s", goal=5, le=True,
             baseline=float(m.group(2)), baseline_label="median")
    s.figure("keys flow again after, worst", float(m.group(5)), "s",
             baseline=float(m.group(4)), baseline_label="median")
    h = re.search(r"handover \(SIGTERM .*?\) over (\d+) runs: median ([0-9.]+) s, worst ([0-9.]+) s", text)
    if h:
        s.figure("handover (SIGTERM) worst", float(h.group(3)), "s", goal=5, le=True,
                 baseline=float(h.group(2)), baseline_label="median")
    return s


# --- the steps --------------------------------------------------------------------------------


def make_steps(build, quick, res):
    b = os.path.join(build, "bench")
    ctl = [os.path.join(build, "controller", "qkdn-controller"), os.path.join(build, "southbound", "qkdn-agent")]
    q = quick

    def gb(name, binary, extra, parser):
        out = os.path.join(res, name + ".json")
        return {"name": name, "cmd": [os.path.join(b, binary)] + extra +
                ["--benchmark_out=" + out, "--benchmark_out_format=json"], "json": out,
                "bins": [os.path.join(b, binary)], "parse": parser}

    relay_sweep = {"CONNECTIONS": "1 32", "HOPS": "1 3"} if q else {"CONNECTIONS": "1 4 16 32", "HOPS": "1 3 6"}
    steps = [
        gb("codec", "bench_ck_codec",
           ["--benchmark_min_time=0.05"] if q else ["--benchmark_repetitions=3",
                                                     "--benchmark_report_aggregates_only=true"], parse_codec),
        {"name": "roundtrip", "cmd": [os.path.join(b, "bench_ck_roundtrip"), "--connections", "32", "--window", "16",
                                      "--seconds", "1" if q else "5"],
         "bins": [os.path.join(b, "bench_ck_roundtrip")], "parse": parse_roundtrip},
        gb("routing", "bench_routing", ["--benchmark_min_time=%s" % ("0.05" if q else "0.5")], parse_routing),
        {"name": "demand", "cmd": [os.path.join(b, "bench_demand_replay")] + (["--quick"] if q else []),
         "bins": [os.path.join(b, "bench_demand_replay")], "parse": parse_demand},
        {"name": "store", "cmd": [os.path.join(b, "bench_store")] +
         (["--seconds", "1", "--kms", "1000", "--links", "2000", "--ledger", "10000"] if q else ["--seconds", "3"]),
         "bins": [os.path.join(b, "bench_store")], "parse": parse_store},
        {"name": "relay-mem", "cmd": [os.path.join(ROOT, "bench", "relay_wrk.sh"), build],
         "env": dict(relay_sweep, STORE="mem", DURATION="2s" if q else "10s"), "store": "mem",
         "bins": ctl, "parse": parse_relay},
        {"name": "relay-pg", "cmd": [os.path.join(ROOT, "bench", "relay_wrk.sh"), build],
         "env": dict({"CONNECTIONS": "1 32", "HOPS": "3"} if q else relay_sweep, STORE="pg",
                     DURATION="2s" if q else "5s"), "store": "pg", "bins": ctl, "parse": parse_relay},
        {"name": "api", "cmd": [os.path.join(ROOT, "bench", "api_wrk.sh"), build],
         "env": {"CONNECTIONS": "10 50", "DURATION": "2s"} if q else {}, "bins": ctl, "parse": parse_api},
        {"name": "agent-scale", "cmd": [os.path.join(ROOT, "bench", "agent_scale.sh"), build],
         "env": {"KMS": "200", "LINKS": "500", "WINDOW": "3"} if q else {}, "bins": ctl,
         "parse": parse_agent_scale},
        {"name": "controller-scale", "cmd": [os.path.join(ROOT, "bench", "controller_scale.sh"), build],
         "env": {"KMS": "500", "LINKS": "1000", "AGENTS": "2", "WINDOW": "3", "ROUTES": "100"} if q else {},
         "bins": ctl + [os.path.join(ROOT, "bench", "controller_scale.sh")], "parse": parse_controller_scale},
        # The HA failover e2e (two controllers, one private PostgreSQL, agents, ETSI 014 traffic):
        # its log line carries the takeover times (tests/e2e/test_ha_failover.py).
        {"name": "ha-failover", "cmd": ["python3", os.path.join(ROOT, "tests", "e2e", "test_ha_failover.py")],
         "env": dict({"QKDN_CONTROLLER": ctl[0], "QKDN_AGENT": ctl[1], "PYTHONDONTWRITEBYTECODE": "1"},
                     **({"QKDN_HA_FAILOVERS": "4", "QKDN_HA_HANDOVERS": "1"} if q else {})),
         "bins": ctl, "parse": parse_ha_failover, "timeout": 900},
    ]
    return steps


def short(p):
    """p relative to the repository's root when inside it."""
    r = os.path.relpath(p, ROOT)
    return p if r.startswith("..") else r


def shown(step):
    """The command as a reader re-runs it from the repository's root."""
    env = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in sorted(step.get("env", {}).items()))
    args = []
    for a in step["cmd"]:
        if a.startswith("--benchmark_out"):
            continue  # where this run kept its JSON; not part of the figure
        args.append(shlex.quote(short(a)))
    return (env + " " if env else "") + " ".join(args)


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def run_step(step, res, index, total):
    name = step["name"]
    log("[%d/%d] %s: %s" % (index, total, name, shown(step)))
    out_path = os.path.join(res, name + ".out")
    err_path = os.path.join(res, name + ".err")
    env = dict(os.environ)
    env.update(step.get("env", {}))
    la0 = loadavg()
    t0 = time.monotonic()
    with open(out_path, "w", encoding="utf-8") as out, open(err_path, "w", encoding="utf-8") as err:
        # Its own process group: on a timeout or Ctrl-C the whole step (the script, its controller,
        # agents and PostgreSQL) gets SIGTERM, which the scripts trap to clean up.
        proc = subprocess.Popen(step["cmd"], cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            rc = proc.wait(timeout=step.get("timeout", 3600))
        except subprocess.TimeoutExpired:
            stop(proc)
            rc = "timeout"
        except KeyboardInterrupt:
            stop(proc)
            raise
    step["seconds"] = time.monotonic() - t0
    step["load"] = (la0, loadavg())
    step["rc"] = rc
    with open(out_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    try:
        step["section"] = step["parse"](text, step)
        step["error"] = None if rc == 0 else "exit status %s (see %s.err)" % (rc, name)
    except (ValueError, KeyError, OSError, TypeError, ZeroDivisionError) as e:
        step["section"] = None
        step["error"] = "exit status %s; output not understood: %s (see %s.out, %s.err)" % (rc, e, name, name)
    status = "ok" if not step["error"] else "FAILED: " + step["error"]
    log("    %.1f s, load average %s -> %s: %s" % (step["seconds"], fmt_load(la0), fmt_load(step["load"][1]),
                                                   status))


# --- the plot ---------------------------------------------------------------------------------


def plot(steps, res, png):
    series = []
    for step in steps:
        if not step["name"].startswith("relay-") or not step.get("rows"):
            continue
        by_hops = {}
        for r in step["rows"]:
            by_hops.setdefault(int(r["hops"]), []).append(
                (int(r["connections"]), fnum(r["keys_per_s"]), wrk_ms(r["p99"])))
        for h, pts in sorted(by_hops.items()):
            path = os.path.join(res, "plot-%s-%dhop.dat" % (step["store"], h))
            with open(path, "w", encoding="utf-8") as f:
                f.write("# clients keys_per_s p99_ms\n")
                for c, k, p in sorted(pts):
                    f.write("%d %s %s\n" % (c, k if k is not None else "NaN", p if p is not None else "NaN"))
            series.append((path, "%s, %d hop%s" % ("memory" if step["store"] == "mem" else "PostgreSQL", h,
                                                   "" if h == 1 else "s"), step["store"]))
    if not series:
        return None, "no relay run: nothing to plot"
    script = os.path.join(res, "plot.gp")

    def plots(col):
        return ", \\\n  ".join("'%s' using 1:%d with linespoints dt %d lw 2 title '%s'" %
                               (p, col, 1 if st == "mem" else 2, t) for p, t, st in series)

    with open(script, "w", encoding="utf-8") as f:
        f.write("set terminal pngcairo size 1200,480 font ',10' noenhanced\nset output '%s'\n" % png)
        f.write("set multiplot layout 1,2 title 'ETSI 014 key supply through relays (bench/relay_wrk.sh)'\n")
        f.write("set logscale x 2\nset xlabel 'concurrent clients (wrk connections)'\nset grid\n"
                "set key top left\n")
        f.write("set ylabel 'relayed 256-bit keys/s'\nset yrange [0:*]\nplot %s\n" % plots(2))
        f.write("set ylabel 'p99 latency (ms)'\nset logscale y\nset yrange [*:*]\nplot %s\n" % plots(3))
        f.write("unset multiplot\n")
    gnuplot = os.environ.get("GNUPLOT", "gnuplot")
    if shutil.which(gnuplot) is None:
        return None, ("%s is not installed (Debian: apt-get install gnuplot-nox, or scripts/install-deps.sh): "
                      "no plot; its data and script are in the results folder (plot.gp)" % gnuplot)
    os.makedirs(os.path.dirname(png), exist_ok=True)
    p = subprocess.run([gnuplot, script], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return None, "gnuplot failed: " + p.stderr.strip()[:300]
    return png, None


# --- the document -----------------------------------------------------------------------------


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_kib = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        mem_kib = 0
    return "%s, %d cores, %.1f GiB RAM, Linux %s" % (model, os.cpu_count() or 0, mem_kib / 2**20, platform.release())


def git(*args):
    p = subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True, check=False)
    return p.stdout.strip() if p.returncode == 0 else "unknown"


def build_type(build):
    try:
        with open(os.path.join(build, "CMakeCache.txt"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    return line.split("=", 1)[1].strip() or "none"
    except OSError:
        pass
    return "unknown"


def write_doc(doc, steps, info, png, plot_note):
    d = os.path.dirname(os.path.abspath(doc))
    rel = lambda p: os.path.relpath(p, d)  # noqa: E731
    notes_link = rel(os.path.join(ROOT, "docs", "performance-notes.md"))
    L = ["# Performance", "",
         "Generated by `bench/run-all.sh` (`bench/run_all.py`): do not edit by hand, re-run it. Every figure "
         "below was measured in the one run described here; the history of each benchmark (before/after "
         "measurements, profiles, explanations) is in [performance-notes.md](%s)." % notes_link, "",
         "| | |", "|---|---|",
         "| machine | %s |" % info["machine"],
         "| date | %s |" % info["date"],
         "| commit | `%s` (build type %s) |" % (info["commit"], info["build_type"]),
         "| command | `%s` (%s) |" % (info["command"], info["duration"]),
         "| load average before / after | %s / %s (1, 5, 15 min) |" % (fmt_load(info["load"][0]),
                                                                       fmt_load(info["load"][1])),
         ""]
    if info["quick"]:
        L += ["**QUICK run**: short durations and small sweeps to check the pipeline; the figures are not "
              "the benchmarks' own.", ""]
    if info["load"][0][0] > 0.5 * (os.cpu_count() or 1):
        L += ["**The machine was loaded when the run started** (1-minute load average %.1f on %d cores): the "
              "figures are conservative; regenerate on a quiet machine for the record." %
              (info["load"][0][0], os.cpu_count() or 0), ""]
    L += ["Ratios: \"to goal\" is figure ÷ goal (≥ 1 meets a ≥ goal, ≤ 1 meets a ≤ goal); \"to baseline\" is "
          "figure ÷ the baseline measured in the same run.", "", "## Summary", "",
          "| benchmark | step | time | verdict |", "|---|---|---|---|"]
    for st in steps:
        s = st.get("section")
        title = s.title if s else st["name"]
        verdict = "FAILED: " + st["error"] if st.get("error") and not s else s.verdict() if s else "—"
        if s and st.get("error"):
            verdict += " (%s)" % st["error"]
        L.append("| %s | `%s` | %.0f s | %s |" % (title, st["name"], st["seconds"], verdict))
    L.append("")
    for st in steps:
        s = st.get("section")
        L += ["## %s" % (s.title if s else st["name"]), ""]
        if s:
            L += ["Goal: %s." % s.goal, ""]
        L += ["`%s` — %.0f s, load average %s → %s; raw output `%s.out`." % (
            shown(st), st["seconds"], fmt_load(st["load"][0]), fmt_load(st["load"][1]), st["name"]), ""]
        if st.get("error"):
            L += ["**Failed**: %s." % st["error"], ""]
        if not s:
            continue
        L += ["| figure | value | goal | to goal | baseline (same run) | to baseline | verdict |",
              "|---|---|---|---|---|---|---|"]
        L += ["| %s |" % " | ".join(f) for f in s.figures]
        L.append("")
        for t in s.tables:
            L += [t, ""]
        for n in s.notes:
            L += [n, ""]
        if st["name"] == "relay-mem" or (st["name"] == "relay-pg" and not any(x["name"] == "relay-mem" for x in steps)):
            if png:
                L += ["![relayed keys/s and p99 against clients and hops](%s)" % rel(png), ""]
            else:
                L += ["(No plot: %s.)" % plot_note, ""]
    with open(doc, "w", encoding="utf-8") as f:
        f.write("\n".join(L).rstrip() + "\n")


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
    if len(sys.argv) > 2 or (len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help")):
        print(__doc__.strip())
        return 0 if len(sys.argv) == 2 else 2
    quick = os.environ.get("QUICK", "") not in ("", "0")
    only = [x for x in os.environ.get("ONLY", "").split(",") if x]
    skip = [x for x in os.environ.get("SKIP", "").split(",") if x]
    for n in only + skip:
        if n not in STEP_NAMES:
            print("run-all: unknown step '%s' (steps: %s)" % (n, ", ".join(STEP_NAMES)), file=sys.stderr)
            return 2
    stamp = datetime.datetime.now(datetime.timezone.utc)
    res = os.path.abspath(os.environ.get("RESULTS") or
                          os.path.join(ROOT, "bench-results", stamp.strftime("%Y%m%d-%H%M%S")))
    steps = [s for s in make_steps(build, quick, res)
             if (not only or s["name"] in only) and s["name"] not in skip]
    missing = sorted({b for s in steps for b in s["bins"] if not os.access(b, os.X_OK)})
    if missing:
        print("run-all: missing (this script builds nothing):\n  " + "\n  ".join(missing) +
              "\nbuild them, e.g. cmake --build %s --target bench_ck_codec bench_ck_roundtrip bench_routing "
              "bench_demand_replay bench_store qkdn-controller qkdn-agent\n(or leave steps out with SKIP=...)" %
              short(build), file=sys.stderr)
        return 1
    for tool in ("wrk", "curl"):
        if any(s["name"] in ("relay-mem", "relay-pg", "api") for s in steps) and shutil.which(tool) is None:
            print("run-all: %s is not installed (scripts/install-deps.sh)" % tool, file=sys.stderr)
            return 1
    partial = quick or only or skip
    default_doc = not os.environ.get("DOC") and not partial
    doc = os.path.abspath(os.environ.get("DOC") or (os.path.join(ROOT, "docs", "PERFORMANCE.md") if not partial
                                                    else os.path.join(res, "PERFORMANCE.md")))
    png = os.path.abspath(os.environ.get("PLOT") or (os.path.join(ROOT, "docs", "images", PLOT_NAME) if default_doc
                                                     else os.path.join(res, PLOT_NAME)))
    os.makedirs(res, exist_ok=True)
    info = {"machine": machine(), "date": stamp.strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git("describe", "--always", "--dirty", "--tags"), "build_type": build_type(build),
            "quick": quick}
    env_shown = " ".join("%s=%s" % (k, os.environ[k]) for k in ("QUICK", "ONLY", "SKIP") if os.environ.get(k))
    info["command"] = ((env_shown + " ") if env_shown else "") + "bench/run-all.sh " + short(build)
    la0 = loadavg()
    log("run-all: %d steps (%s)%s; results in %s" % (len(steps), ", ".join(s["name"] for s in steps),
                                                     ", QUICK" if quick else "", res))
    log("machine: %s; load average %s" % (info["machine"], fmt_load(la0)))
    if la0[0] > 0.5 * (os.cpu_count() or 1):
        log("run-all: warning: the machine is loaded (load average %.1f on %d cores): figures will be low" %
            (la0[0], os.cpu_count() or 0))
    t0 = time.monotonic()
    try:
        for i, step in enumerate(steps, 1):
            run_step(step, res, i, len(steps))
    except KeyboardInterrupt:
        log("run-all: interrupted; nothing written but the raw outputs in %s" % res)
        return 130
    png_made, plot_note = plot(steps, res, png)
    if plot_note:
        log("run-all: " + plot_note)
    info["load"] = (la0, loadavg())
    took = time.monotonic() - t0
    info["duration"] = "%.0f min" % (took / 60) if took >= 120 else "%.0f s" % took
    write_doc(doc, steps, info, png_made, plot_note)
    failed = [s["name"] for s in steps if s.get("error")]
    log("run-all: wrote %s%s in %s; load average after %s" % (
        short(doc), " and " + short(png_made) if png_made else "", info["duration"],
        fmt_load(info["load"][1])))
    if failed:
        log("run-all: FAILED steps: %s (outputs in %s)" % (", ".join(failed), res))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
