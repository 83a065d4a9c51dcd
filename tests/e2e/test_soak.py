#!/usr/bin/env python3
"""e2e soak (issue 4, done-when 2): concurrent ETSI GS QKD 014 key requests between random SAE
pairs of germany50 (adjacent and relayed) for QKDN_SOAK_SECONDS (CI: 60), over mutual TLS against
one agent hosting all 50 KMs and the real controller. Then checks:
  - every delivered key ID is unique;
  - both ends always received identical bytes;
  - per link end, generated = available + reserved + allocated + consumed + discarded (agent
    /admin/state);
  - no controller reservation outlived its lease: GET /api/v1/ledger, sampled every 0.2 s during
    the traffic, never shows the earliest live lease overdue by more than LEASE_SLACK_MS (the
    ledger timer's slack); once the traffic stops, every relay reaches a final state and the
    ledger holds no key (per link nothing reserved or allocated; every reserved key was consumed,
    released or expired: qkdn_key_reservations_total);
  - only 200 or 503 (no keys now) answers, and enough keys were delivered to mean something."""

import base64
import os
import random
import re
import sys
import threading
import time
from collections import Counter

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import Processes, log, start_network, wait_for

SECONDS = float(os.environ.get("QKDN_SOAK_SECONDS", "60"))
WORKERS = int(os.environ.get("QKDN_SOAK_WORKERS", "8"))
TOPOLOGY = os.environ.get("QKDN_SOAK_TOPOLOGY", "germany50.json")
RATE_BPS = float(os.environ.get("QKDN_SOAK_RATE_BPS", "1000000"))
POOL_BYTES = 512 * 1024
TIMEOUT = 30
LEASE_SLACK_MS = 1000  # the ledger timer fires at the earliest expiry; allow a loaded machine
ACCOUNTING = ("keys_generated", "keys_available", "keys_reserved", "keys_allocated",
              "keys_consumed", "keys_discarded")


class Soak:
    def __init__(self, net, saes):
        self.net = net
        self.saes = saes
        self.lock = threading.Lock()
        self.ids = Counter()  # key ID -> times delivered by enc_keys
        self.statuses = Counter()
        self.unavailable = Counter()  # 503 messages
        self.mismatches = []
        self.unexpected = []
        self.latencies = []
        self.keys = 0
        self.stop = threading.Event()

    def worker(self, seed):
        rnd = random.Random(seed)
        sessions = {}
        base = self.net.etsi_base + "/api/v1/keys"

        def session(sae):
            if sae not in sessions:
                sessions[sae] = self.net.etsi(sae)
            return sessions[sae]

        while not self.stop.is_set():
            master, slave = rnd.sample(self.saes, 2)
            number = rnd.randint(1, 4)
            size = rnd.choice([256, 256, 512])
            get = rnd.random() < 0.3
            t = time.monotonic()
            try:
                if get:
                    r = session(master).get(f"{base}/{slave}/enc_keys", timeout=TIMEOUT,
                                            params={"number": number, "size": size})
                else:
                    r = session(master).post(f"{base}/{slave}/enc_keys", timeout=TIMEOUT,
                                             json={"number": number, "size": size})
            except requests.RequestException as exc:
                with self.lock:
                    self.unexpected.append(f"enc_keys {master}->{slave}: {exc}")
                continue
            with self.lock:
                self.statuses[f"enc {r.status_code}"] += 1
            if r.status_code == 503:
                message = r.json()["message"]
                assert message
                with self.lock:
                    self.unavailable[message] += 1
                continue
            if r.status_code != 200:
                with self.lock:
                    self.unexpected.append(f"enc_keys {master}->{slave}: {r.status_code} "
                                           f"{r.text[:200]}")
                continue
            sent = {k["key_ID"]: base64.b64decode(k["key"]) for k in r.json()["keys"]}
            ok_shape = len(sent) == number and all(len(v) * 8 == size for v in sent.values())
            try:
                if get:
                    r2 = session(slave).get(f"{base}/{master}/dec_keys", timeout=TIMEOUT,
                                            params=[("key_ID", k) for k in sent])
                else:
                    r2 = session(slave).post(f"{base}/{master}/dec_keys", timeout=TIMEOUT,
                                             json={"key_IDs": [{"key_ID": k} for k in sent]})
            except requests.RequestException as exc:
                with self.lock:
                    self.unexpected.append(f"dec_keys {master}->{slave}: {exc}")
                continue
            latency = time.monotonic() - t
            with self.lock:
                self.statuses[f"dec {r2.status_code}"] += 1
                for k in sent:
                    self.ids[k] += 1
                if r2.status_code != 200:
                    self.unexpected.append(f"dec_keys {master}->{slave}: {r2.status_code} "
                                           f"{r2.text[:200]}")
                    continue
                got = {k["key_ID"]: base64.b64decode(k["key"]) for k in r2.json()["keys"]}
                if got != sent or not ok_shape:
                    self.mismatches.append(f"{master}->{slave}: {sorted(sent)}")
                self.keys += len(sent)
                self.latencies.append(latency)


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^(\w+)(\{[^}]*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def check_link_accounting(net):
    bad, ends = [], 0
    for km in net.admin_state()["kms"]:
        for l in km["links"]:
            missing = [f for f in ACCOUNTING if f not in l]
            if missing:
                raise AssertionError(f"/admin/state lacks {missing} (link {l['link_id']})")
            ends += 1
            held = (l["keys_available"] + l["keys_reserved"] + l["keys_allocated"] +
                    l["keys_consumed"] + l["keys_discarded"])
            if l["keys_generated"] != held:
                bad.append(f"{km['km_id']}/{l['link_id']}: generated {l['keys_generated']} != "
                           f"available {l['keys_available']} + reserved {l['keys_reserved']} + "
                           f"allocated {l['keys_allocated']} + consumed {l['keys_consumed']} + "
                           f"discarded {l['keys_discarded']}")
    assert not bad, "\n".join(bad[:20])
    return ends


def main():
    start = time.monotonic()
    with Processes("soak") as ps:
        net = start_network(ps, TOPOLOGY, agent_args=["--threads", "2", "--pool-capacity-bytes",
                                                      str(POOL_BYTES)])
        saes = [a["sae_id"] for a in net.topo["applications"]]
        # Fast links and pools that fill first: the soak measures correctness, not scarcity.
        for link in net.topo["links"]:
            requests.post(f"http://127.0.0.1:{net.admin_port}/admin/links/{link['link_id']}",
                          json={"key_rate_bps": RATE_BPS}, timeout=5).raise_for_status()
        wait_for(lambda: all(l["stored_key_bits"] >= POOL_BYTES * 8 // 2
                             for l in net.api.items("/api/v1/links")),
                 60, 0.5, "link pools half full")
        soak = Soak(net, saes)
        overdue = []  # (overdue_ms, live_keys) per ledger sample

        def sample_ledger():
            while not soak.stop.is_set():
                try:
                    led = net.api.get("/api/v1/ledger")
                    overdue.append((led["overdue_ms"], led["live_keys"]))
                except Exception as exc:  # noqa: BLE001  (counted: a sample must not be lost)
                    overdue.append((None, str(exc)))
                time.sleep(0.2)
        sampler = threading.Thread(target=sample_ledger, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=soak.worker, args=(1000 + i,), daemon=True)
                   for i in range(WORKERS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        # Mid-soak: the accounting identity holds under load too.
        time.sleep(SECONDS / 2)
        ends = check_link_accounting(net)
        time.sleep(max(0.0, SECONDS - (time.monotonic() - t0)))
        soak.stop.set()
        for t in threads:
            t.join(TIMEOUT + 5)
        elapsed = time.monotonic() - t0
        lat = sorted(soak.latencies) or [0.0]
        log(f"soak {elapsed:.1f} s, {WORKERS} workers: {soak.keys} keys in "
            f"{len(soak.latencies)} exchanges ({soak.keys / elapsed:.1f} keys/s); "
            f"enc+dec p50 {lat[len(lat) // 2] * 1000:.1f} ms, "
            f"p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms; answers {dict(soak.statuses)}; "
            f"503 reasons {dict(soak.unavailable.most_common(5))}")

        # Identity and uniqueness.
        dup = [k for k, n in soak.ids.items() if n > 1]
        assert not dup, f"key IDs delivered twice: {dup[:10]}"
        assert not soak.mismatches, f"ends received different bytes: {soak.mismatches[:5]}"
        assert not soak.unexpected, "unexpected answers:\n" + "\n".join(soak.unexpected[:20])
        assert soak.keys >= 50, f"only {soak.keys} keys delivered: the soak measured nothing"

        # Leases, while the traffic ran: the earliest live lease was never overdue beyond the slack.
        sampler.join(5)
        failed_samples = [x for x in overdue if x[0] is None]
        assert not failed_samples, f"ledger samples failed: {failed_samples[:3]}"
        worst = max(overdue, default=(0, 0))
        log(f"ledger: {len(overdue)} samples, live keys up to {max(x[1] for x in overdue)}, "
            f"worst overdue lease {worst[0]} ms")
        assert len(overdue) >= SECONDS, f"only {len(overdue)} ledger samples"
        assert worst[0] <= LEASE_SLACK_MS, f"a lease was overdue by {worst[0]} ms"

        # Leases: once traffic stops, every relay ends and the ledger holds nothing.
        final = {"relayed", "failed", "voided"}
        wait_for(lambda: all(r["state"] in final for r in net.api.items("/api/v1/relays")),
                 40, 0.5, "every relay in a final state")
        relays = net.api.items("/api/v1/relays")
        metrics_url = net.api.base + "/metrics"

        def ledger_empty():
            text = requests.get(metrics_url, timeout=5).text
            reserved = metric_sum(text, "qkdn_key_reservations_total", result="reserved")
            ended = sum(metric_sum(text, "qkdn_key_reservations_total", result=r)
                        for r in ("consumed", "released", "expired"))
            return (reserved == ended, reserved, ended)
        ok = wait_for(lambda: ledger_empty()[0] and ledger_empty(), 40, 0.5,
                      "ledger to hold no reserved or allocated key")
        led = wait_for(lambda: (lambda x: x if x["live_keys"] == 0 else None)(
            net.api.get("/api/v1/ledger")), 40, 0.5, "GET /api/v1/ledger: no live key")
        held = [x for x in led["links"] if x["reserved"] or x["allocated"]]
        assert not held, f"links still holding keys: {held[:5]}"
        assert sum(x["consumed"] for x in led["links"]) > 0, "the ledger consumed nothing"
        reasons = Counter(re.sub(r"[0-9a-f-]{36}", "<id>", r["reason"])[:100]
                          for r in relays if r["state"] != "relayed")
        log(f"relays not relayed, by reason: {dict(reasons.most_common(4))}")
        log(f"relays: {len(relays)} ({dict(Counter(r['state'] for r in relays))}); ledger "
            f"reserved {ok[1]:.0f} = consumed + released + expired {ok[2]:.0f}")

        # Per link end accounting, after the traffic.
        ends = check_link_accounting(net)
        log(f"accounting identity holds on {ends} link ends")
        assert net.controller.poll() is None and net.agent.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e soak: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
