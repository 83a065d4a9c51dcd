#!/usr/bin/env python3
"""High availability (issue 17): the leader cut off from PostgreSQL but alive. Controller A reaches
the database through a TCP proxy of this test; B directly. With keys flowing (nobel-eu, 4 ETSI GS
QKD 014 clients over 6 relayed SAE pairs) the proxy stalls: A's queries hang, nothing fails.

Checks:
  - A stands down (its log: "leadership of term N lost") less than one lease after the stall
    began, i.e. before its lease can lapse by the database's clock, and before B leads;
  - B leads in a larger term; every KM registers with B, in B's term; keys flow again;
  - the proxy heals: A comes back as standby and reports B's term; the agents' epochs stay B's
    (an agent refuses any command of a lower epoch once it saw a higher one: ck-protocol.md
    clause 2);
  - no key ID delivered twice, both ends equal, nothing enc_keys gave lost; every relay in
    exactly one final state (B's API and the database); the ledger drains."""

import os
import sys
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ha_support import (LEASE_MS, StallProxy, api_of, dsn_via, log_times,  # noqa: E402
                        start_ha_network, wait_leader)
from qkdn_e2e import (KeyTraffic, PrivatePostgres, Processes, ledger_drained, log,  # noqa: E402
                      relayed_pairs, relays_final, wait_for)

TOPOLOGY = "nobel-eu.json"


def main():
    start = time.monotonic()
    with PrivatePostgres("ha-part") as pg, Processes("ha-partition") as ps:
        u = urlparse(pg.dsn)
        proxy = StallProxy(u.hostname, u.port)
        try:
            net, a, b = start_ha_network(ps, pg, TOPOLOGY, dsn_a=dsn_via(pg.dsn, proxy.port))
            traffic = KeyTraffic(net, relayed_pairs(net.topo, 6, seed=23), workers=4).start()
            try:
                traffic.wait_flowing(0, 30, "relayed keys before the stall")
                term_a = a.health()["ha"]["epoch"]
                stalled_at = time.time()
                t = time.monotonic()
                proxy.stall()
                log(f"proxy stalled: A (term {term_a}) is cut off from PostgreSQL")
                new, took = wait_leader([b], 15, since=t)
                term_b = b.health()["ha"]["epoch"]
                assert term_b > term_a, (term_a, term_b)
                net.api = api_of(net, b)
                again = traffic.probe(t, 30, "keys after the takeover")
                net.wait_registered(20)
                wait_for(lambda: set(net.epochs().values()) == {term_b}, 10, 0.05,
                         f"every KM in term {term_b}")
                down = [x for x in log_times(a.proc.log_path, f"leadership of term {term_a} lost")
                        if x >= stalled_at - 0.01]
                led = [x for x in log_times(b.proc.log_path, f"leader in term {term_b}")]
                assert down, "A never stood down"
                assert led, "B's log does not say it leads"
                log(f"stall +0.00 s; A stood down +{down[0] - stalled_at:.3f} s; B leads "
                    f"+{led[0] - stalled_at:.3f} s (seen {took:.2f} s); keys again {again:.2f} s")
                assert down[0] - stalled_at < LEASE_MS / 1000, \
                    "A stood down only after its lease could have lapsed"
                assert down[0] < led[0], "B led before A stood down"

                proxy.heal()
                log("proxy healed")
                wait_for(lambda: a.role() == "standby" and a.health()["ha"]["epoch"] == term_b,
                         60, 0.1, "A back as standby in B's term")
                traffic.wait_flowing(time.monotonic(), 15, "keys with A back")
                assert set(net.epochs().values()) == {term_b}, net.epochs()
                assert b.role() == "leader"
            finally:
                traffic.finish()
        finally:
            proxy.close()
        log(f"{traffic.matched()} exchanges matched; statuses {dict(traffic.statuses)}; "
            f"failures {traffic.reasons()}")
        traffic.check_exactly_once()
        assert not traffic.unmatched, f"keys delivered by enc_keys but not by dec_keys: " \
                                      f"{traffic.unmatched[:5]}"
        relays = relays_final(net.api)
        rows = {s: int(n) for s, n in pg.psql("SELECT state, count(*) FROM relays GROUP BY state")}
        log(f"relays: API {len(relays)}, database {rows}")
        assert set(rows) <= {"relayed", "failed", "voided"}, f"open relays in the store: {rows}"
        ledger_drained(net, timeout=30)  # held keys go when the KMs register in the new term
        fenced = sum(1 for line in open(a.proc.log_path, errors="replace") if "fenced" in line)
        log(f"A's log lines about fenced writes: {fenced}")
        assert a.proc.poll() is None and b.proc.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e ha partition: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
