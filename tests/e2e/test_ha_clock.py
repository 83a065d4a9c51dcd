#!/usr/bin/env python3
"""High availability (issue 17): a standby whose wall clock is 10 minutes ahead (libfaketime). The
lease is measured by the database's clock, so the skew neither lets the standby take a live lease
nor delays its takeover.

Checks: while the leader A lives, B (clock +600 s) stays standby for 3 leases (by a controller's
own clock A's lease would look 10 minutes expired); after kill -9 of A, B leads within 5 s; its
health shows a lease read recently (lease_age_ms) and every KM registers with it in its term."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ha_support import LEASE_MS, api_of, start_ha_network, wait_leader  # noqa: E402
from qkdn_e2e import (PrivatePostgres, Processes, faketime_env, log,  # noqa: E402
                      wait_for)

TOPOLOGY = "nobel-eu.json"
SKEW_S = 600


def main():
    start = time.monotonic()
    with PrivatePostgres("ha-clock") as pg, Processes("ha-clock") as ps:
        net, a, b = start_ha_network(ps, pg, TOPOLOGY, b_env=faketime_env(SKEW_S))
        term_a = a.health()["ha"]["epoch"]
        # B's wall clock: its log lines are stamped 10 minutes ahead.
        skewed = open(b.proc.log_path, errors="replace").readline()
        log(f"B's first log line (clock +{SKEW_S} s): {skewed.strip()[:80]}")
        roles = []
        deadline = time.monotonic() + 3 * LEASE_MS / 1000
        while time.monotonic() < deadline:  # a bounded watch: B must not lead while A lives
            roles.append((b.role(), a.role()))
            time.sleep(0.1)
        assert all(r[0] in ("standby", None) for r in roles), f"B led while A lived: {roles}"
        assert a.role() == "leader"
        h = b.health()["ha"]
        assert h["leader"]["holder"] == "A" and 0 <= h["lease_age_ms"] < LEASE_MS, h
        a.kill()
        t = time.monotonic()
        _, took = wait_leader([b], 10, since=t)
        term_b = b.health()["ha"]["epoch"]
        assert term_b > term_a, (term_a, term_b)
        net.api = api_of(net, b)
        net.wait_registered(20)
        wait_for(lambda: set(net.epochs().values()) == {term_b}, 10, 0.05,
                 f"every KM in term {term_b}")
        log(f"B (clock +{SKEW_S} s) stayed standby for {len(roles)} looks over 3 leases while A "
            f"lived; led {took:.2f} s after A's kill -9, term {term_b}")
        assert took <= 5.0, f"takeover took {took:.2f} s"
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e ha clock: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
