#!/usr/bin/env python3
"""The demo's guided tour (called by scripts/demo.sh): waits for the network to come up, shows
live key pools and a route, drives key traffic where the agents offer ETSI GS QKD 014, then raises
the QBER of a link on the route and shows the alarm and the new route."""

import argparse
import json
import re
import sys
import time

import os

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from qkdn_e2e import Api  # noqa: E402  (the one northbound client of the tests)


def say(msg):
    print(f"demo: {msg}", flush=True)


def poll(pred, timeout):
    """pred()'s first true value within timeout seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return None


def wait(pred, timeout, what):
    v = poll(pred, timeout)
    if v is None:
        sys.exit(f"demo: timed out waiting for {what}")
    return v


def agent_ports(path, timeout=30):
    """admin port and ETSI 014 endpoints from the agent's stdout."""
    def ready():
        text = open(path).read()
        return text if "agent ready" in text else None
    text = wait(ready, timeout, "the agent")
    admin = int(re.search(r"admin listening on [\d.]+:(\d+)", text).group(1))
    etsi = dict(re.findall(r"etsi (\S+) listening on (\S+)", text))
    return admin, etsi


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--agent-out", required=True)
    ap.add_argument("--topology", required=True)
    ap.add_argument("--after-failover", type=float, metavar="UNIX_TIME",
                    help="instead of the tour: the leader was killed at UNIX_TIME; show the KMs "
                         "moving to the new leader (--api) and keys flowing again")
    a = ap.parse_args()
    api = Api(int(a.api.rsplit(":", 1)[1]), open(a.token_file).read().strip())
    topo = json.load(open(a.topology))
    n = len(topo["kms"])
    if a.after_failover is not None:
        return after_failover(a, api, topo, a.after_failover)

    wait(lambda: api.get("/api/v1/health"), 20, "the controller API")
    admin, etsi = agent_ports(a.agent_out)
    wait(lambda: sum(k["connected"] for k in api.items("/api/v1/kms")) == n, 30,
         f"{n} KMs to register")
    say(f"all {n} KMs registered over mutual TLS")
    wait(lambda: sum(l["stored_key_bits"] > 0 for l in api.items("/api/v1/links")) > 0, 20,
         "key pools")
    apps = {app["km_id"]: app["sae_id"] for app in topo.get("applications", [])}
    src, dst = topo["kms"][0]["km_id"], topo["kms"][-1]["km_id"]
    if "Aachen" in apps and "Dresden" in apps:
        src, dst = "Aachen", "Dresden"
    # Links come up as the agents' first status reports arrive (one status interval).
    route = poll(lambda: api.get("/api/v1/routes", src=src, dst=dst, k=2)["items"], 30) or []
    links = sorted(api.items("/api/v1/links"), key=lambda l: -l["stored_key_bits"])
    say("fullest key pools:")
    print(f"  {'link':28} {'state':6} {'pool':>10} {'rate':>12} {'qber':>6}")
    for l in links[:8]:
        print(f"  {l['link_id']:28} {l['oper_state']:6} {l['stored_key_bits'] // 8:>8} B "
              f"{l['key_rate_bps']:>9.0f} b/s {l['qber']:>6.3f}")

    if not route:
        say(f"no route {src} -> {dst} after 30 s: no key traffic or fault to show")
        return
    best = route[0]
    say(f"route {src} -> {dst}: {' -> '.join(best['kms'])} (cost {best['cost']:.2f})")

    def traffic(rounds):
        if src not in etsi or dst not in apps or src not in apps:
            return "no ETSI listener for this pair"
        got, refused = 0, {}
        for i in range(rounds):
            if i:
                time.sleep(0.5)  # paced: the slowest germany50 links make ~9 kb/s of key
            r = requests.get(f"http://{etsi[src]}/api/v1/keys/{apps[dst]}/enc_keys",
                             params={"number": 4, "size": 256},
                             headers={"X-SAE-ID": apps[src]}, timeout=10)
            if r.status_code == 200:
                got += len(r.json()["keys"])
            else:
                body = r.json()
                detail = next(iter((body.get("details") or [{}])[0].values()), "")
                why = f"{r.status_code} {body.get('message', '')}: {detail}"[:160]
                refused[why] = refused.get(why, 0) + 1
        text = f"{got} keys delivered"
        for why, n in refused.items():
            text += f"; {n} request(s) refused: {why}"
        return text

    if etsi:
        say(f"key traffic {apps.get(src)} -> {apps.get(dst)} through ETSI GS QKD 014: "
            f"{traffic(10)}")
    else:
        say("the agents offer no ETSI GS QKD 014 listener in this build: no key traffic")

    victim = best["links"][0]
    say(f"fault: raising the QBER of {victim} to 0.2 (threshold 0.11)")
    requests.post(f"http://127.0.0.1:{admin}/admin/links/{victim}", json={"qber": 0.2},
                  timeout=5).raise_for_status()
    alarm = wait(lambda: [x for x in api.items("/api/v1/alarms")
                          if x.get("type") == "qber_high" and x.get("state") == "active"],
                 15, "the qber_high alarm")
    say(f"alarm raised: {alarm[0]['type']} on {alarm[0]['resource']} ({alarm[0]['severity']})")
    new = wait(lambda: [r for r in api.get("/api/v1/routes", src=src, dst=dst)["items"]
                        if victim not in r["links"]], 15, "a route avoiding the link")
    say(f"new route {src} -> {dst}: {' -> '.join(new[0]['kms'])}")
    if etsi:
        say(f"key traffic after the fault: {traffic(5)}")
    metrics = requests.get(a.api + "/metrics", timeout=5).text
    for line in metrics.splitlines():
        if line.startswith("qkdn_reroutes_total") and not line.endswith(" 0"):
            say(f"metric {line}")
    say(f"the fault stays: the network view draws {victim} red and lists its alarm")
    if etsi and src in etsi and dst in apps:
        say("fetch a key yourself (ETSI GS QKD 014, lab mode: the SAE named by X-SAE-ID):")
        print(f"  curl -H 'X-SAE-ID: {apps[src]}' "
              f"'http://{etsi[src]}/api/v1/keys/{apps[dst]}/enc_keys?number=1&size=256'")
        print(f"  curl -H 'X-SAE-ID: {apps[dst]}' "
              f"'http://{etsi[dst]}/api/v1/keys/{apps[src]}/dec_keys?key_ID=<key_ID>'")


def after_failover(a, api, topo, killed_at):
    """The KMs follow the new leader; keys flow again (times from the kill)."""
    n = len(topo["kms"])
    wait(lambda: sum(k["connected"] for k in api.items("/api/v1/kms")) == n, 60,
         f"{n} KMs to register with the new leader")
    say(f"all {n} KMs registered with the new leader {time.time() - killed_at:.2f} s after the "
        "kill")
    _, etsi = agent_ports(a.agent_out)
    apps = {app["km_id"]: app["sae_id"] for app in topo.get("applications", [])}
    src, dst = ("Aachen", "Dresden") if "Aachen" in apps and "Dresden" in apps else \
        (topo["kms"][0]["km_id"], topo["kms"][-1]["km_id"])
    if src not in etsi or src not in apps or dst not in apps:
        return
    ok = poll(lambda: requests.get(f"http://{etsi[src]}/api/v1/keys/{apps[dst]}/enc_keys",
                                   params={"number": 1, "size": 256},
                                   headers={"X-SAE-ID": apps[src]}, timeout=10).status_code == 200,
              60)
    if ok:
        say(f"keys flow again ({apps[src]} -> {apps[dst]}, ETSI GS QKD 014) "
            f"{time.time() - killed_at:.2f} s after the kill")
    else:
        say("no key delivered within 60 s of the takeover")


if __name__ == "__main__":
    main()
