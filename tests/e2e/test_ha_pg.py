#!/usr/bin/env python3
"""High availability (issue 17): PostgreSQL itself fails under two qkdn-controller --ha and ETSI
GS QKD 014 traffic (nobel-eu, one agent hosting every KM with both Ck addresses, 4 key clients
over 6 relayed SAE pairs).

  failover  a primary and a synchronous streaming replica (pg_basebackup -R, private instances);
            the controllers' DSN lists both hosts with target_session_attrs=read-write. The
            primary crashes (pg_ctl stop -m immediate) and the replica is promoted
            PROMOTE_AFTER_S (default 4) later, longer than the lease.
  restart   one server, stopped (fast) and started again: at once, then after an outage longer
            than the lease.

Each time, checked:
  - the controllers reconnect and exactly one leads again within LEAD_S of the fault (a leader
    whose lease was renewed on the database as it is after the fault), in a term not below the
    one before; every KM registers with it, in its term; keys flow again within KEYS_S;
  - nothing acknowledged is lost: every relay and ledger row read from the database just before
    the fault is there afterwards, in the same state or a later one (final states unchanged);
Afterwards: no key ID delivered twice, both ends equal, every key enc_keys gave delivered by
dec_keys; every relay in exactly one final state (leader's API and database); the ledger drains
(the agents get the restored releases when their KMs register, so well before their 60 s
allocation lease). Prints the times: docs/PERFORMANCE.md."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ha_support import ReplicatedPostgres, api_of, start_ha_network  # noqa: E402
from qkdn_e2e import (KeyTraffic, PrivatePostgres, Processes, ledger_drained, log,  # noqa: E402
                      relayed_pairs, relays_final, wait_for)

TOPOLOGY = "nobel-eu.json"
LEAD_S = 20.0
KEYS_S = 30.0
PROMOTE_AFTER_S = float(os.environ.get("QKDN_HA_PROMOTE_AFTER_S", "4"))
DRAIN_S = float(os.environ.get("QKDN_HA_DRAIN_S", "30"))

# A state may only move forward (db/migrations/0001_initial.sql transition rules).
LATER = {
    "requested": {"requested", "reserved", "relaying", "relayed", "failed", "voided"},
    "reserved": {"reserved", "relaying", "relayed", "failed", "voided", "allocated", "consumed",
                 "released"},
    "relaying": {"relaying", "relayed", "failed", "voided"},
    "allocated": {"allocated", "consumed", "released"},
}


def snapshot(pg):
    """Relay and ledger rows as committed now: {id: state}."""
    relays = dict(pg.psql("SELECT relay_id, state FROM relays"))
    ledger = dict(pg.psql("SELECT key_id, state FROM ledger"))
    return relays, ledger


def check_kept(before, after, what):
    lost = [k for k in before if k not in after]
    assert not lost, f"{len(lost)} acknowledged {what} rows lost, e.g. {lost[:5]}"
    back = [(k, s, after[k]) for k, s in before.items()
            if after[k] != s and after[k] not in LATER.get(s, {s})]
    assert not back, f"{what} rows whose state went back: {back[:5]}"


def leading_again(controllers, since):
    """The one controller that leads with a lease renewed after `since` (monotonic), or None."""
    leaders = []
    for c in controllers:
        try:
            h = c.health()["ha"]
        except Exception:  # noqa: BLE001  (restarting its listeners)
            continue
        if h["role"] == "leader" and h.get("lease_age_ms") is not None and \
                h["lease_age_ms"] / 1000 < time.monotonic() - since:
            leaders.append((c, h))
    return leaders[0] if len(leaders) == 1 else None


def fault_round(name, net, traffic, pg, controllers, fault, recover_after=None):
    """One database fault: snapshot, fault(), (recover_after()), then the checks. Returns
    (seconds to lead again, seconds to keys again) from the fault."""
    traffic.wait_flowing(time.monotonic(), 30, f"keys before {name}")
    leader = [c for c in controllers if c.role() == "leader"]
    assert len(leader) == 1, f"one leader before {name}"
    term0 = leader[0].health()["ha"]["epoch"]
    before = snapshot(pg)
    t = time.monotonic()
    fault()
    if recover_after:
        recover_after()
    recovered = time.monotonic()
    new, h = wait_for(lambda: leading_again(controllers, recovered), LEAD_S, 0.05,
                      f"one controller leading again after {name}")
    led = time.monotonic() - t
    led_after = time.monotonic() - recovered  # after the promotion / the server's start
    epoch = h["epoch"]
    assert epoch >= term0, f"term {epoch} after term {term0}"
    net.api = api_of(net, new)
    again = traffic.probe(t, KEYS_S, f"keys after {name}")
    net.wait_registered(20)
    wait_for(lambda: set(net.epochs().values()) == {epoch}, 10, 0.05, f"every KM in term {epoch}")
    after = snapshot(pg)
    check_kept(before[0], after[0], "relay")
    check_kept(before[1], after[1], "ledger")
    log(f"{name}: {new.name} leads in term {epoch} (before: term {term0}) {led:.2f} s after the "
        f"fault, {led_after:.2f} s after the database was back; keys again after {again:.2f} s; {len(before[0])} relay and {len(before[1])} "
        f"ledger rows kept")
    return led, again


def run(mode):
    start = time.monotonic()
    db = ReplicatedPostgres("ha-pg") if mode == "failover" else PrivatePostgres("ha-pg")
    times = []
    with db as pg, Processes(f"ha-pg-{mode}") as ps:
        net, a, b = start_ha_network(ps, pg, TOPOLOGY)
        traffic = KeyTraffic(net, relayed_pairs(net.topo, 6, seed=29), workers=4).start()
        try:
            traffic.wait_flowing(0, 30, "relayed keys before the fault")
            if mode == "failover":
                def promote_later():
                    # As a failover manager would: the primary is gone for longer than the
                    # lease, so the leader must stand down and a term start on the new primary.
                    time.sleep(PROMOTE_AFTER_S)
                    pg.promote()
                times.append(fault_round("primary crash and promotion", net, traffic, pg, [a, b],
                                         pg.stop_primary, promote_later))
                assert pg.psql_at("replica", "SELECT pg_is_in_recovery()") == [["f"]]
            else:
                times.append(fault_round("restart", net, traffic, pg, [a, b],
                                         pg.stop, pg.start))

                def outage():
                    time.sleep(5)  # longer than the lease: the leader must stand down
                    pg.start()
                times.append(fault_round("5 s outage", net, traffic, pg, [a, b], pg.stop, outage))
            traffic.wait_flowing(time.monotonic(), 20, "keys at the end")
        finally:
            traffic.finish()
        log(f"{traffic.matched()} exchanges matched; statuses {dict(traffic.statuses)}; "
            f"failures {traffic.reasons()}")
        traffic.check_exactly_once()
        assert not traffic.unmatched, f"keys delivered by enc_keys but not by dec_keys: " \
                                      f"{traffic.unmatched[:5]}"
        relays = relays_final(net.api)
        # The leader's writer may still be committing the last relays' final states.
        rows = {}

        def stored_final():
            rows.clear()
            rows.update({s: int(n) for s, n in
                         pg.psql("SELECT state, count(*) FROM relays GROUP BY state")})
            return set(rows) <= {"relayed", "failed", "voided"}
        try:
            wait_for(stored_final, 10, 0.2, "every stored relay in a final state")
        except AssertionError:
            raise AssertionError(f"open relays in the store: {rows}") from None
        log(f"relays: API {len(relays)}, database {rows}")
        t = time.monotonic()
        ledger_drained(net, timeout=DRAIN_S)
        wait_for(lambda: pg.psql("SELECT count(*) FROM ledger WHERE state IN "
                                 "('reserved', 'allocated')") == [["0"]], 10, 0.2,
                 "the store to hold no reserved or allocated key")
        log(f"ledger drained {time.monotonic() - t:.1f} s after the checks began")
        assert a.proc.poll() is None and b.proc.poll() is None, "a controller exited"
    for (led, again) in times:
        log(f"PG {mode}: lead again {led:.2f} s, keys again {again:.2f} s")
    log(f"done in {time.monotonic() - start:.1f} s")
    print(f"e2e ha pg {mode}: 1 passed, 0 failed")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("failover", "restart"):
        sys.exit("usage: test_ha_pg.py failover|restart")
    run(sys.argv[1])
