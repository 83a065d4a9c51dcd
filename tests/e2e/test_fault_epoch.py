#!/usr/bin/env python3
"""Fault (issue 12, finding 3): a controller restarted with its wall clock an hour behind is not
fenced by its own agents. The agents refuse a controller_epoch lower than the highest they saw
(ck-protocol.md clause 2), so the epoch must grow across restarts whatever the wall clock says:
from the store's sequence (migration 0005) with a store, from --epoch-file without one.

For each of the two, on nobel-eu with one agent hosting every KM: keys flow between relayed SAE
pairs; kill -9 of the controller; a restart under libfaketime with the wall clock 3600 s behind
(the monotonic clock stays real); then every KM accepted a larger epoch than before and relayed
keys flow again within 10 s, each delivered once and equal at both ends."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (KeyTraffic, PrivatePostgres, Processes, faketime_env, log, relayed_pairs,
                      start_network, wait_for)

TOPOLOGY = "nobel-eu.json"
BEHIND_S = 3600


def run(mode, controller_args):
    with Processes(f"fault-epoch-{mode}") as ps:
        args = [a.replace("{dir}", ps.dir) for a in controller_args]
        net = start_network(ps, TOPOLOGY, key_rate_bps=1_000_000, controller_args=args,
                            certs_backdated_s=2 * BEHIND_S)
        traffic = KeyTraffic(net, relayed_pairs(net.topo, 2, seed=12), workers=1).start()
        try:
            traffic.wait_flowing(0, 30, "relayed keys before the restart")
            before = net.epochs()
            e1 = max(before.values())
            log(f"{mode}: epoch {e1} on {len(before)} KMs; kill -9 of the controller")
            net.kill_controller()
            t = time.monotonic()
            net.restart_controller(env=faketime_env(-BEHIND_S))
            net.wait_registered()

            def grown():
                now = net.epochs()
                return all(e > e1 for e in now.values()) and now
            after = wait_for(grown, 10, 0.05,
                             f"every KM to accept an epoch above {e1} from the restarted "
                             "controller whose clock is behind")
            log(f"{mode}: epochs after the restart {sorted(set(after.values()))}")
            took = traffic.probe(time.monotonic(), 10, "relayed keys after the restart")
            log(f"{mode}: keys flow again {time.monotonic() - t:.2f} s after the restart "
                f"(first exchange {took:.2f} s after registration)")
        finally:
            traffic.finish()
        traffic.check_exactly_once()
        log(f"{mode}: {traffic.matched()} exchanges matched; failures {traffic.reasons()}")
        assert net.controller.poll() is None and net.agent.poll() is None


def main():
    start = time.monotonic()
    run("epoch-file", ["--epoch-file", "{dir}/controller.epoch"])
    with PrivatePostgres("epoch") as pg:
        run("store", ["--store-dsn", pg.dsn])
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e fault epoch: 2 passed, 0 failed")


if __name__ == "__main__":
    main()
