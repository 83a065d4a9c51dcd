#!/usr/bin/env python3
"""Fault (issue 12): kill -9 of the controller at 20 random points during concurrent relays with
the store on (a private PostgreSQL), then kill -9 of the agent mid-relay. nobel-eu, one agent
hosting every KM, 4 ETSI GS QKD 014 clients over 6 relayed SAE pairs. The kill points are drawn
from random.Random(QKDN_FAULT_SEED) (default 1212; printed) as delays after keys flow again.

Afterwards:
  - no key ID delivered twice (enc_keys or dec_keys), both ends of every delivered key equal;
  - every key enc_keys delivered was also delivered by dec_keys, except keys the killed agent
    held (its key store is memory: they are lost with it, never delivered wrong or twice);
  - every relay in exactly one final state, in the API and in the database;
  - no reservation outlived its lease: the ledger's earliest live lease, sampled every 0.2 s
    while the controller answered, was never overdue by more than LEASE_SLACK_MS; the database
    holds no reserved/allocated key past its lease; the ledger and the agents drain;
  - keys flow again within 5 s of each restart: a fresh ETSI 014 exchange started after the
    restart delivers equal keys at both ends (the workers' requests that the kill interrupted
    may wait for their own timeout)."""

import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (KeyTraffic, LedgerSampler, PrivatePostgres, Processes, ledger_drained, log,
                      relayed_pairs, relays_final, start_network)

TOPOLOGY = "nobel-eu.json"
KILLS = int(os.environ.get("QKDN_FAULT_KILLS", "20"))
SEED = int(os.environ.get("QKDN_FAULT_SEED", "1212"))
RECOVERY_S = 5.0
LEASE_SLACK_MS = 1000


def main():
    start = time.monotonic()
    rnd = random.Random(SEED)
    log(f"seed {SEED} (QKDN_FAULT_SEED), {KILLS} controller kills")
    with PrivatePostgres("kill") as pg, Processes("fault-kill") as ps:
        net = start_network(ps, TOPOLOGY, key_rate_bps=1_000_000,
                            controller_args=["--store-dsn", pg.dsn])
        traffic = KeyTraffic(net, relayed_pairs(net.topo, 6, seed=SEED), workers=4).start()
        sampler = LedgerSampler(net.api).start()
        recoveries = []
        agent_window = None
        try:
            traffic.wait_flowing(0, 30, "relayed keys before the first kill")
            for i in range(KILLS):
                delay = rnd.uniform(0.0, 1.5)
                time.sleep(delay)  # the kill point: a random moment of the traffic
                in_flight = traffic.matched()
                net.kill_controller()
                t = time.monotonic()
                net.restart_controller()
                took = traffic.probe(t, 30, f"keys after restart {i + 1}")
                recoveries.append(took)
                # The next kill must hit concurrent relays: the workers flow again first.
                traffic.wait_flowing(t, 15, f"the workers' keys after restart {i + 1}")
                log(f"kill {i + 1}/{KILLS} at +{delay:.3f} s ({in_flight} exchanges so far): "
                    f"keys again {took:.2f} s after the restart")
            # The agent, mid-relay.
            time.sleep(rnd.uniform(0.2, 1.0))
            t_kill = time.monotonic()
            net.agent.kill()
            net.agent.wait(10)
            t = time.monotonic()
            net.restart_agent()
            took = traffic.probe(t, 30, "keys after the agent restart")
            agent_window = (t_kill, time.monotonic())
            log(f"agent kill -9 and restart: keys again {took:.2f} s after its restart")
            recoveries.append(took)
        finally:
            traffic.finish()
            worst = sampler.finish()
        log(f"{traffic.matched()} exchanges matched; statuses {dict(traffic.statuses)}; "
            f"failures {traffic.reasons()}")

        traffic.check_exactly_once()
        lost = [u for u in traffic.unmatched
                if not (agent_window and u[0] <= agent_window[1] and u[1] >= agent_window[0])]
        assert not lost, f"keys delivered by enc_keys but not by dec_keys: {lost[:5]}"
        log(f"keys lost with the killed agent's memory: "
            f"{sum(len(u[3]) for u in traffic.unmatched)}")

        relays = relays_final(net.api)
        rows = pg.psql("SELECT state, count(*) FROM relays GROUP BY state")
        states = {s: int(n) for s, n in rows}
        log(f"relays: API {len(relays)}, database {states}")
        assert set(states) <= {"relayed", "failed", "voided"}, f"open relays in the store: {states}"
        assert sum(states.values()) >= len(relays)

        log(f"ledger: {len(sampler.samples)} samples, worst overdue lease {worst} ms")
        assert worst <= LEASE_SLACK_MS, f"a reservation outlived its lease by {worst} ms"
        ledger_drained(net)
        overdue = pg.psql("SELECT count(*) FROM ledger WHERE state IN ('reserved', 'allocated')"
                          " AND lease_expires_at < now() - interval '1 second'")
        assert overdue == [["0"]], f"keys past their lease in the store: {overdue}"
        live = pg.psql("SELECT count(*) FROM ledger WHERE state IN ('reserved', 'allocated')")
        assert live == [["0"]], f"reserved/allocated keys left in the store: {live}"

        log(f"recovery after each restart: max {max(recoveries):.2f} s, "
            f"mean {sum(recoveries) / len(recoveries):.2f} s")
        assert max(recoveries) <= RECOVERY_S, \
            f"keys flowed again only after {max(recoveries):.2f} s"
        assert net.controller.poll() is None and net.agent.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e fault kill: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
