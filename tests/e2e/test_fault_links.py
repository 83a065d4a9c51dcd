#!/usr/bin/env python3
"""Fault (issue 12): link flaps and QBER storms during traffic, through the agent's admin HTTP.
nobel-eu, one agent hosting every KM, 4 ETSI GS QKD 014 clients over 6 relayed SAE pairs. For
STORM_S seconds, every 0.25 s (random.Random(QKDN_FAULT_SEED), printed), one link on the pairs'
routes goes down for 0.3..1 s, or its QBER jumps to 0.2 (over the threshold) for 0.5..2 s.

Checks: relays keep succeeding during the storm (keys delivered in every third of it) or fail
with a clear reason (503 with a message; nothing else); the controller rerouted
(qkdn_reroutes_total grew); once the links are restored keys flow again within 10 s; no relay is
stuck (each reaches a final state) and no key is held (controller ledger and agents drain); no key
delivered twice, both ends equal, every key enc_keys gave was delivered by dec_keys."""

import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (KeyTraffic, Processes, api_text, ledger_drained, log, metric_value,
                      relayed_pairs, relays_final, start_network)

TOPOLOGY = "nobel-eu.json"
SEED = int(os.environ.get("QKDN_FAULT_SEED", "1212"))
STORM_S = float(os.environ.get("QKDN_FAULT_STORM_SECONDS", "15"))


def main():
    start = time.monotonic()
    rnd = random.Random(SEED)
    log(f"seed {SEED} (QKDN_FAULT_SEED), storm {STORM_S:.0f} s")
    with Processes("fault-links") as ps:
        net = start_network(ps, TOPOLOGY, key_rate_bps=1_000_000)
        pairs = relayed_pairs(net.topo, 6, seed=SEED)
        km_of = {a["sae_id"]: a["km_id"] for a in net.topo["applications"]}
        traffic = KeyTraffic(net, pairs, workers=4).start()
        try:
            traffic.wait_flowing(0, 30, "relayed keys before the storm")
            targets = sorted({l for m, s in pairs for r in net.api.get(
                "/api/v1/routes", src=km_of[m], dst=km_of[s])["items"][:1] for l in r["links"]})
            log(f"storm targets: {len(targets)} links on the standing routes")
            reroutes_before = metric_value(api_text(net.api, "/metrics"), "qkdn_reroutes_total")
            restore = {}  # link -> (monotonic time, fields that undo the fault)
            flaps = storms = 0
            thirds = [traffic.matched()]
            t0 = time.monotonic()
            while time.monotonic() - t0 < STORM_S:
                now = time.monotonic()
                for link, (due, fields) in list(restore.items()):
                    if now >= due:
                        net.admin_link(link, **fields)
                        del restore[link]
                link = rnd.choice(targets)
                if link not in restore:
                    if rnd.random() < 0.5:
                        net.admin_link(link, up=False)
                        restore[link] = (now + rnd.uniform(0.3, 1.0), {"up": True})
                        flaps += 1
                    else:
                        net.admin_link(link, qber=0.2)
                        restore[link] = (now + rnd.uniform(0.5, 2.0), {"qber": 0.02})
                        storms += 1
                if len(thirds) < 3 and now - t0 >= STORM_S * len(thirds) / 3:
                    thirds.append(traffic.matched())
                time.sleep(0.25)
            thirds.append(traffic.matched())
            for link, (_, fields) in restore.items():
                net.admin_link(link, **fields)
            t = time.monotonic()
            took = traffic.probe(t, 10, "keys after the storm")
            log(f"{flaps} flaps and {storms} QBER storms; exchanges matched per third of the "
                f"storm {[b - a for a, b in zip(thirds, thirds[1:])]}; keys after it in "
                f"{took:.2f} s")
        finally:
            traffic.finish()
        log(f"{traffic.matched()} exchanges matched; statuses {dict(traffic.statuses)}; "
            f"failures {traffic.reasons()}")
        per_third = [b - a for a, b in zip(thirds, thirds[1:])]
        assert all(n > 0 for n in per_third), f"no keys during part of the storm: {per_third}"
        unclear = [f for f in traffic.failures if f[2] != 503 or not f[3]]
        assert not unclear, f"failures without a clear reason: {unclear[:5]}"
        reroutes = metric_value(api_text(net.api, "/metrics"), "qkdn_reroutes_total")
        log(f"qkdn_reroutes_total: {reroutes_before:g} -> {reroutes:g}")
        assert reroutes > reroutes_before, "the storm rerouted nothing"
        traffic.check_exactly_once()
        assert not traffic.unmatched, \
            f"keys enc_keys gave but dec_keys did not: {traffic.unmatched[:5]}"
        relays = relays_final(net.api)
        ledger_drained(net)
        log(f"{len(relays)} relays, all final; ledger and agents drained")
        assert net.controller.poll() is None and net.agent.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e fault links: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
