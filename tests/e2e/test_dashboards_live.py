#!/usr/bin/env python3
"""e2e (issue 18): the Grafana dashboards and the Prometheus rules against real data. germany50
runs with the controller and one agent; Debian's Prometheus scrapes the controller every second
with dashboards/prometheus/qkdn.rules.yml loaded. The test makes the traffic the panels show: key
relays (ETSI 014 between non-adjacent SAEs), route queries, a link drained faster than it fills
(its generation set to 0 through the agent's admin API while its SAEs take keys) and a QBER fault
on another link. Then every panel target and every variable query of every dashboard
(dashboards/*.json) is evaluated through Prometheus's HTTP API, with Grafana's macros substituted
as Grafana would ($__rate_interval = 4 x the scrape interval, $link = its "All" value): each must
parse and return data, as an instant query and as a range query. Finally the alert
QkdnLinkQberHigh must fire for the faulted link, and the drain-forecast recording rule must have
a value for the drained link only."""

import glob
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import ROOT, Processes, log, start_network, wait_for  # noqa: E402

SCRAPE_S = 1
# Grafana: $__rate_interval = max($__interval + scrape interval, 4 x scrape interval); the data
# source's timeInterval is the scrape interval.
MACROS = {"$__rate_interval": f"{4 * SCRAPE_S}s", "${__rate_interval}": f"{4 * SCRAPE_S}s",
          "$__interval": f"{SCRAPE_S}s", "$__range": "60s"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prometheus(ps, api_port):
    """Debian's prometheus on a free loopback port scraping the controller; returns its URL."""
    rules = os.path.join(ROOT, "dashboards", "prometheus", "qkdn.rules.yml")
    config = os.path.join(ps.dir, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"""global:
  scrape_interval: {SCRAPE_S}s
  evaluation_interval: {SCRAPE_S}s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: qkdn-controller
    static_configs:
      - targets: ["127.0.0.1:{api_port}"]
""")
    for attempt in range(5):  # a free port may be taken between probing and binding
        port = free_port()
        proc = ps.start(f"prometheus{attempt}", [
            "prometheus", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tempfile.mkdtemp(dir=ps.dir)}", "--log.level=warn"])
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: proc.poll() is not None or
                     requests.get(url + "/-/ready", timeout=2).status_code == 200, 60,
                     what="prometheus ready")
        except AssertionError:
            ps.stop(proc)
            continue
        if proc.poll() is None:
            return url
    raise AssertionError("prometheus did not start")


def query(prom, expr, at=None):
    r = requests.get(prom + "/api/v1/query", params={"query": expr, **({"time": at} if at else {})},
                     timeout=10)
    body = r.json()
    if body.get("status") != "success":
        raise AssertionError(f"query failed: {expr}: {body.get('error')}")
    return body["data"]["result"]


def query_range(prom, expr, start, end):
    r = requests.get(prom + "/api/v1/query_range",
                     params={"query": expr, "start": start, "end": end, "step": SCRAPE_S},
                     timeout=10)
    body = r.json()
    if body.get("status") != "success":
        raise AssertionError(f"range query failed: {expr}: {body.get('error')}")
    return body["data"]["result"]


def has_data(result):
    """True when a query result holds at least one number (NaN, e.g. a quantile of no
    observations, is no data: Grafana draws nothing)."""
    for series in result:
        values = series.get("values") or [series.get("value")]
        if any(v and v[1] not in ("NaN", "+Inf", "-Inf") for v in values):
            return True
    return False


def substitute(expr, variables):
    for k, v in MACROS.items():
        expr = expr.replace(k, v)
    for name, value in variables.items():
        expr = re.sub(r"\$\{" + name + r"(:[a-z]+)?\}|\$" + name + r"\b", value, expr)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def dashboard_queries():
    """(where, expression, kind) of every panel target and variable query of every dashboard,
    with the variables' "All" values (allValue, else a regex of everything)."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "dashboards", "*.json"))):
        d = json.load(open(path))
        name = os.path.basename(path)
        variables = {}
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") == "query":
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                out.append((f"{name} variable {v['name']}", q, "variable"))
                variables[v["name"]] = v.get("allValue") or ".*"
        stack = list(d.get("panels", []))
        while stack:
            p = stack.pop(0)
            stack.extend(p.get("panels", []))
            for t in p.get("targets", []):
                out.append((f"{name} panel '{p['title']}' {t.get('refId')}",
                            substitute(t["expr"], variables), "panel"))
    return out


def label_values(prom, q):
    m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", q)
    assert m, f"unsupported variable query {q}"
    r = requests.get(prom + f"/api/v1/label/{m.group(2)}/values",
                     params={"match[]": m.group(1)}, timeout=10).json()
    assert r["status"] == "success", r
    return r["data"]


class Traffic(threading.Thread):
    """Keeps ETSI 014 key requests going between pairs of SAEs, and route queries, until
    stopped."""

    def __init__(self, net, pairs, period):
        super().__init__(daemon=True)
        self.net, self.pairs, self.period = net, pairs, period
        self.stop_flag = threading.Event()
        self.ok = 0

    def run(self):
        sessions = {s: self.net.etsi(s) for pair in self.pairs for s in pair}
        while not self.stop_flag.is_set():
            for src, dst in self.pairs:
                try:
                    r = sessions[src].get(f"{self.net.etsi_base}/api/v1/keys/{dst}/enc_keys",
                                          params={"number": 1, "size": 256}, timeout=15)
                    if r.status_code == 200:
                        ids = [k["key_ID"] for k in r.json()["keys"]]
                        sessions[dst].get(f"{self.net.etsi_base}/api/v1/keys/{src}/dec_keys",
                                          params={"key_ID": ids[0]}, timeout=15)
                        self.ok += 1
                except requests.RequestException:
                    pass
            try:
                requests.get(self.net.api.base + "/api/v1/routes",
                             params={"src": "Aachen", "dst": "Berlin", "k": 3},
                             headers=dict(self.net.api.session.headers), timeout=10)
            except requests.RequestException:
                pass
            self.stop_flag.wait(self.period)


def main():
    with Processes("dashboards-live") as ps:
        net = start_network(ps, "germany50.json")
        api_port = int(net.api.base.rsplit(":", 1)[1])
        prom = start_prometheus(ps, api_port)
        log(f"prometheus at {prom}")
        wait_for(lambda: query(prom, 'up{job="qkdn-controller"} == 1'), 60,
                 what="the controller scraped")

        # A link drained faster than it fills: no generation, its two SAEs take keys.
        drained = next(l for l in net.topo["links"] if {l["a"], l["b"]} == {"Hamburg", "Kiel"})
        requests.post(f"http://127.0.0.1:{net.admin_port}/admin/links/{drained['link_id']}",
                      json={"key_rate_bps": 0}, timeout=10).raise_for_status()
        traffic = Traffic(net, [("SAE-Aachen", "SAE-Dresden"), ("SAE-Muenchen", "SAE-Bremen"),
                                ("SAE-Hamburg", "SAE-Kiel")], 0.2)
        traffic.start()
        # A QBER fault on another link (not on Hamburg-Kiel).
        victim = next(l["link_id"] for l in net.topo["links"]
                      if {l["a"], l["b"]} == {"Frankfurt", "Giessen"})
        requests.post(f"http://127.0.0.1:{net.admin_port}/admin/links/{victim}",
                      json={"qber": 0.2}, timeout=10).raise_for_status()
        log(f"traffic running, {drained['link_id']} drained, QBER fault on {victim}")

        wait_for(lambda: query(prom, "sum(rate(qkdn_key_relays_total{result=\"relayed\"}[4s])) > 0"),
                 90, 0.5, "relays in Prometheus")
        wait_for(lambda: query(prom, f'qkdn:link_key_pool_drain_seconds{{link="{drained["link_id"]}"}}'),
                 90, 0.5, "the drain forecast of the drained link")
        wait_for(lambda: query(prom, 'ALERTS{alertname="QkdnLinkQberHigh",alertstate="firing",'
                                     f'link="{victim}"}}'), 90, 0.5, "QkdnLinkQberHigh firing")
        log(f"ok   QkdnLinkQberHigh fires for {victim} ({traffic.ok} key requests served)")
        time.sleep(2 * SCRAPE_S)  # not an assertion's wait: a few more samples for range queries

        # Every panel and variable query parses and returns data.
        end = time.time()
        failures, checked = [], 0
        for where, expr, kind in dashboard_queries():
            checked += 1
            try:
                if kind == "variable":
                    values = label_values(prom, expr)
                    if len(values) != len(net.topo["links"]):
                        failures.append(f"{where}: {len(values)} values for "
                                        f"{len(net.topo['links'])} links")
                    continue
                if not has_data(query(prom, expr, end)):
                    failures.append(f"{where}: no data now: {expr}")
                if not has_data(query_range(prom, expr, end - 30, end)):
                    failures.append(f"{where}: no data over 30 s: {expr}")
            except AssertionError as e:
                failures.append(f"{where}: {e}")
        traffic.stop_flag.set()
        for f in failures:
            log(f"FAIL {f}")
        assert not failures, f"{len(failures)} of {checked} dashboard queries failed"
        log(f"ok   {checked} dashboard queries return data")

        # The forecast has values only for links that drain: not for the ones that keep up.
        forecast = {s["metric"]["link"] for s in query(prom, "qkdn:link_key_pool_drain_seconds")}
        assert drained["link_id"] in forecast
        assert len(forecast) < len(net.topo["links"]) // 4, \
            f"forecast for {len(forecast)} links: it should exist only for draining ones"
        log(f"ok   drain forecast for {sorted(forecast)} only")
    print(f"e2e_dashboards_live: {checked + 2} passed, 0 failed")


if __name__ == "__main__":
    main()
