#!/usr/bin/env python3
"""Fault (issue 12): PostgreSQL stopped and restarted during traffic. nobel-eu with the store on
(a private PostgreSQL), one agent hosting every KM, 4 ETSI GS QKD 014 clients over 6 relayed SAE
pairs. PostgreSQL stops (fast shutdown) for OUTAGE_S seconds, twice.

Checks: while it is down, requests fail with a clear reason (503 with a message) and nothing is
delivered wrong; after it is back keys flow again within RECOVERY_S (the controller probes the
store every second); no key lost (every key enc_keys gave was delivered by dec_keys) or
delivered twice, both ends equal; every relay in exactly one final state (API and database); the
store holds no reserved/allocated key and no lease past its time."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (KeyTraffic, PrivatePostgres, Processes, ledger_drained, log, relayed_pairs,
                      relays_final, start_network, wait_for)

TOPOLOGY = "nobel-eu.json"
OUTAGE_S = 3.0
RECOVERY_S = 5.0


def main():
    start = time.monotonic()
    with PrivatePostgres("outage") as pg, Processes("fault-pg") as ps:
        net = start_network(ps, TOPOLOGY, key_rate_bps=1_000_000,
                            controller_args=["--store-dsn", pg.dsn])
        traffic = KeyTraffic(net, relayed_pairs(net.topo, 6, seed=7), workers=4).start()
        recoveries = []
        try:
            for n in range(2):
                traffic.wait_flowing(time.monotonic(), 30, f"relayed keys before outage {n + 1}")
                pg.stop()
                log(f"outage {n + 1}: PostgreSQL stopped")
                wait_for(lambda: net.api.session.get(net.api.base + "/api/v1/health", timeout=5)
                         .json()["store"]["up"] is False, 10, 0.1,
                         "the controller to see the store down")
                time.sleep(OUTAGE_S)  # the outage lasts; traffic goes on against it
                pg.start()
                t = time.monotonic()
                took = traffic.probe(t, 30, f"keys after outage {n + 1}")
                recoveries.append(took)
                log(f"outage {n + 1}: PostgreSQL back; keys again after {took:.2f} s")
        finally:
            traffic.finish()
        log(f"{traffic.matched()} exchanges matched; statuses {dict(traffic.statuses)}; "
            f"failures {traffic.reasons()}")
        unclear = [f for f in traffic.failures if f[2] != 503 or not f[3]]
        assert not unclear, f"failures without a clear reason: {unclear[:5]}"
        traffic.check_exactly_once()
        assert not traffic.unmatched, f"keys lost (enc_keys gave, dec_keys did not): " \
                                      f"{traffic.unmatched[:5]}"
        relays = relays_final(net.api)
        ledger_drained(net)
        rows = {s: int(c) for s, c in pg.psql("SELECT state, count(*) FROM relays GROUP BY state")}
        log(f"relays: API {len(relays)}, database {rows}")
        assert set(rows) <= {"relayed", "failed", "voided"}, f"open relays in the store: {rows}"
        wait_for(lambda: pg.psql("SELECT count(*) FROM ledger WHERE state IN "
                                 "('reserved', 'allocated')") == [["0"]], 10, 0.2,
                 "the store to hold no reserved or allocated key")
        assert max(recoveries) <= RECOVERY_S, \
            f"keys flowed again only after {max(recoveries):.2f} s"
        assert net.controller.poll() is None and net.agent.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e fault pg: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
