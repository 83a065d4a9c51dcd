#!/usr/bin/env python3
"""e2e (issue 3, done-when 2): germany50, the controller (status interval 1 s) and one agent
hosting all 50 KMs. SAE-Aachen keeps asking for keys toward SAE-Dresden (not adjacent: every
request is a relay over the controller's standing route) and SAE-Dresden fetches them, checking
identical bytes. The QBER of one link on the current route is raised to 0.2 (above the agents'
0.11 threshold) through the agent's admin API. Then, within one status interval plus TOLERANCE_S:
new Aachen -> Dresden relays avoid the link; qkdn_reroutes_total{reason="qber"} grew; the
qber_high alarm of the link is active; and key supply keeps working over the new route.

TOLERANCE_S covers what lies outside the controller between the QBER change and a relay on the
new route: the agent's 100 ms tick before it sends the qber_high alarm, one enc_keys round trip
that was already under way on the old route, millisecond rounding of created_at, and scheduling
on a loaded 2-core machine. The measured latency (QBER change -> first relay avoiding the link)
is logged; on an idle machine it is ~0.1-0.3 s."""

import base64
import os
import sys
import threading
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (Processes, api_text, log, metric_value, parse_rfc3339,  # noqa: E402
                      relays_of, start_network, wait_for)

STATUS_INTERVAL_S = 1.0
TOLERANCE_S = 0.5
SRC, DST = "Aachen", "Dresden"
SRC_SAE, DST_SAE = "SAE-Aachen", "SAE-Dresden"
HTTP_TIMEOUT = 15
# One 256-bit key per round, a round every PERIOD_S: ~2.6 kb/s, below what the slowest link of
# the key-aware route supplies (~9 kb/s, half of it in each direction). A loop without a pause
# drains that link and most relays then fail for want of keys, whatever the route.
KEYS_PER_ROUND = 1
PERIOD_S = 0.1


class Supplier(threading.Thread):
    """Keeps SRC_SAE -> DST_SAE busy: enc_keys at the source, dec_keys at the destination, and
    checks that both got the same bytes. Records the end time of every verified round."""

    def __init__(self, net):
        super().__init__(daemon=True)
        self.net = net
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = []          # wall-clock end time of every verified enc+dec round
        self.refused = 0      # enc_keys answered 503 (no keys now)
        self.errors = []      # anything else: wrong bytes, unexpected status, exceptions

    def snapshot(self):
        with self.lock:
            return list(self.ok), self.refused, list(self.errors)

    def run(self):
        base = self.net.etsi_base + "/api/v1/keys"
        enc_s, dec_s = self.net.etsi(SRC_SAE), self.net.etsi(DST_SAE)
        next_round = time.monotonic()
        while not self.stop_flag.wait(max(0.0, next_round - time.monotonic())):
            next_round = max(next_round + PERIOD_S, time.monotonic())
            try:
                r = enc_s.post(f"{base}/{DST_SAE}/enc_keys",
                               json={"number": KEYS_PER_ROUND, "size": 256},
                               timeout=HTTP_TIMEOUT)
                if r.status_code == 503:
                    with self.lock:
                        self.refused += 1
                    continue
                if r.status_code != 200:
                    raise AssertionError(f"enc_keys {r.status_code}: {r.text[:200]}")
                got = {k["key_ID"]: base64.b64decode(k["key"]) for k in r.json()["keys"]}
                body = {"key_IDs": [{"key_ID": k} for k in got]}
                d = dec_s.post(f"{base}/{SRC_SAE}/dec_keys", json=body, timeout=HTTP_TIMEOUT)
                if d.status_code != 200:
                    raise AssertionError(f"dec_keys {d.status_code}: {d.text[:200]}")
                back = {k["key_ID"]: base64.b64decode(k["key"]) for k in d.json()["keys"]}
                if back != got or len(got) != KEYS_PER_ROUND:
                    raise AssertionError("dec_keys returned other bytes than enc_keys")
                with self.lock:
                    self.ok.append(time.time())
            except (AssertionError, requests.RequestException, ValueError, KeyError) as exc:
                with self.lock:
                    self.errors.append(f"{time.time():.3f} {exc}")


def first_attempt(relay):
    """A relay's first attempt runs over the pair's standing route; later attempts (after a
    failed reservation) over alternatives."""
    return relay.get("attempt", 1) == 1 and not relay.get("previous_relay_id")


def route_of(relay):
    route = relay.get("route") or {}
    return route.get("kms") or [], route.get("links") or []


def main():
    start = time.monotonic()
    with Processes("reroute-qber") as ps:
        net = start_network(ps, "germany50.json", controller_args=[
            "--status-interval-ms", str(int(STATUS_INTERVAL_S * 1000))])
        api = net.api
        adjacent = {frozenset((lk["a"], lk["b"])) for lk in net.topo["links"]}
        assert frozenset((SRC, DST)) not in adjacent, "the test needs a relayed pair"
        log(f"network up in {time.monotonic() - start:.1f} s")

        supplier = Supplier(net)
        supplier.start()
        try:
            # The current route: the latest first-attempt relay the agents performed.
            def relayed():
                done = [r for r in relays_of(api, SRC, DST)
                        if r["state"] == "relayed" and first_attempt(r)]
                return done if len(done) >= 3 else None
            before = wait_for(relayed, 20, 0.1, f"relays {SRC} -> {DST}")
            kms, links = route_of(before[-1])
            log(f"current route: {' -> '.join(kms)} ({len(links)} hops) via {links}")
            assert len(links) >= 3, f"the test needs a route of at least 3 hops: {kms}"
            victim = links[len(links) // 2]
            qber_before = metric_value(api_text(api, "/metrics"), "qkdn_reroutes_total",
                                       reason="qber")
            ok_before, _, errors_before = supplier.snapshot()
            assert ok_before and not errors_before, errors_before

            # Raise the QBER of one link on the route.
            t0 = time.time()
            r = requests.post(f"http://127.0.0.1:{net.admin_port}/admin/links/{victim}",
                              json={"qber": 0.2}, timeout=10)
            assert r.status_code in (200, 204), (r.status_code, r.text)
            log(f"qber of {victim} set to 0.2 (admin call took {time.time() - t0:.3f} s)")

            # The first relay on the standing route created after the change that avoids the
            # link.
            def first_avoiding():
                after = [x for x in relays_of(api, SRC, DST)
                         if parse_rfc3339(x["created_at"]) >= t0 and first_attempt(x)
                         and route_of(x)[1]]
                for x in after:
                    if victim not in route_of(x)[1]:
                        return x
                return None
            first = wait_for(first_avoiding, 10 * STATUS_INTERVAL_S, 0.05,
                             f"a {SRC} -> {DST} relay avoiding {victim}")
            latency = parse_rfc3339(first["created_at"]) - t0
            new_kms, new_links = route_of(first)
            log(f"QBER change -> first relay avoiding {victim}: {latency * 1000:.0f} ms "
                f"(bound {(STATUS_INTERVAL_S + TOLERANCE_S) * 1000:.0f} ms); new route "
                f"{' -> '.join(new_kms)} ({len(new_links)} hops)")
            assert latency <= STATUS_INTERVAL_S + TOLERANCE_S, \
                f"first relay avoiding {victim} came {latency:.3f} s after the QBER change"

            # The reroute is counted with its reason, and the alarm is active.
            def qber_reroutes_grew():
                v = metric_value(api_text(api, "/metrics"), "qkdn_reroutes_total", reason="qber")
                return v if v > qber_before else None
            qber_after = wait_for(qber_reroutes_grew, 5, 0.1,
                                  'qkdn_reroutes_total{reason="qber"} to grow')
            log(f'qkdn_reroutes_total{{reason="qber"}}: {qber_before:g} -> {qber_after:g}')
            alarms = api.items("/api/v1/alarms", state="active", link_id=victim)
            qber_alarms = [a for a in alarms if a["type"] == "qber_high"]
            assert qber_alarms, f"no active qber_high alarm for {victim}: {alarms}"
            log(f"active alarm {qber_alarms[0]['id']} {qber_alarms[0]['type']} "
                f"{qber_alarms[0]['severity']} on {victim}")

            # Key supply keeps working over the new route: more verified rounds after the
            # reroute, and every relay created after the bound avoids the link.
            bound = t0 + STATUS_INTERVAL_S + TOLERANCE_S
            reroute_at = parse_rfc3339(first["created_at"])
            since = max(bound, reroute_at)
            wait_for(lambda: len([t for t in supplier.snapshot()[0] if t > since]) >= 5,
                     15, 0.1, "5 verified enc_keys/dec_keys rounds after the bound")
            late = [x for x in relays_of(api, SRC, DST) if parse_rfc3339(x["created_at"]) > bound]
            assert late, "no relays after the bound"
            crossing = [x["relay_id"] for x in late if victim in route_of(x)[1]]
            assert not crossing, f"relays after the bound still cross {victim}: {crossing}"
            relayed_late = [x for x in late if x["state"] == "relayed"]
            assert relayed_late, [x["state"] for x in late]
            log(f"{len(late)} relays after the bound ({len(relayed_late)} relayed), "
                f"none over {victim}")
        finally:
            supplier.stop_flag.set()
            supplier.join(HTTP_TIMEOUT + 5)
        ok, refused, errors = supplier.snapshot()
        log(f"supplier: {len(ok)} verified rounds, {refused} answered 503, {len(errors)} errors")
        assert not errors, errors[:5]
        assert net.controller.poll() is None and net.agent.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e reroute on qber: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
