#!/usr/bin/env python3
"""e2e (issue 19, "the four rerouting modes end to end", Y.3803 8.2.5): the real controller and
one agent hosting tokyo-qkd (KOG =3= OTE, OTE - HAK, OTE - HON, HAK - HON), each mode set for one
KM pair through the API and checked against the keys the KMs actually relayed or pre-positioned
(ETSI 014 Status `stored_key_count` counts the pair's pre-positioned keys at the source KM):

- manual: a pinned route KOG-OTE-HAK-HON carries the pair's relays; with HAK-HON down the pin is
  broken (alarm pinned_route_broken) and relays fall back to a computed route.
- fixed_rate: KOG->HAK wants 16 keys every 1 s: pre-positioned keys appear without any SAE
  request and keep arriving round after round; an SAE request is then served from them (no new
  relay at the controller) with identical keys at HAK.
- traffic_adaptive: SAE traffic KOG->HON for a few intervals makes the engine pre-position keys
  for the pair (none before the traffic).
- scheduled: a window HAK->KOG of 24 keys opening 3 s ahead: nothing before it opens, exactly 24
  keys once it is open, and no more afterwards (a one-shot)."""

import base64
import datetime
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import Processes, log, relays_of, start_network, wait_for  # noqa: E402

TIMEOUT = 20


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def main():
    with Processes("rerouting_modes") as ps:
        net = start_network(ps, "tokyo-qkd.json", token_role="admin")
        api = net.api
        sess = {s: net.etsi(f"SAE-{s}") for s in ("KOG", "OTE", "HAK", "HON")}

        def put(path, body):
            r = api.session.put(api.base + path, json=body, timeout=TIMEOUT)
            assert r.status_code in (200, 201, 204), (path, r.status_code, r.text)
            return r

        def stored(src, dst):
            r = sess[src].get(f"{net.etsi_base}/api/v1/keys/SAE-{dst}/status", timeout=TIMEOUT)
            assert r.status_code == 200, r.text
            return r.json()["stored_key_count"]

        def enc(src, dst, number):
            r = sess[src].get(f"{net.etsi_base}/api/v1/keys/SAE-{dst}/enc_keys",
                              params={"number": number, "size": 256}, timeout=TIMEOUT)
            assert r.status_code == 200, (r.status_code, r.text)
            return {k["key_ID"]: k["key"] for k in r.json()["keys"]}

        def dec(dst, src, ids):
            r = sess[dst].post(f"{net.etsi_base}/api/v1/keys/SAE-{src}/dec_keys",
                               json={"key_IDs": [{"key_ID": i} for i in ids]}, timeout=TIMEOUT)
            assert r.status_code == 200, (r.status_code, r.text)
            return {k["key_ID"]: k["key"] for k in r.json()["keys"]}

        # --- manual: a pinned route, and the fallback when it breaks --------------------------
        pin = ["KOG", "OTE", "HAK", "HON"]
        put("/api/v1/policy/pairs/KOG/HON", {"mode": "manual"})
        put("/api/v1/routes/pinned/KOG/HON", {"kms": pin})
        keys = enc("KOG", "HON", 2)
        assert dec("HON", "KOG", list(keys)) == keys
        last = relays_of(api, "KOG", "HON")[-1]
        assert last["route"]["kms"] == pin, last
        hak_hon = next(l["link_id"] for l in net.topo["links"]
                       if {l["a"], l["b"]} == {"HAK", "HON"})
        net.admin_link(hak_hon, up=False)
        wait_for(lambda: any(a["type"] == "pinned_route_broken"
                             for a in api.items("/api/v1/alarms", state="active")), TIMEOUT, 0.1,
                 "alarm pinned_route_broken")
        keys = enc("KOG", "HON", 2)
        assert dec("HON", "KOG", list(keys)) == keys
        last = relays_of(api, "KOG", "HON")[-1]
        assert last["route"]["kms"] != pin and hak_hon not in last["route"]["links"], last
        net.admin_link(hak_hon, up=True)
        log("manual: pinned route used, fallback on its failure")

        # --- fixed_rate: 16 keys per second KOG -> HAK, pre-positioned -------------------------
        assert stored("KOG", "HAK") == 0
        put("/api/v1/policy/pairs/KOG/HAK",
            {"mode": "fixed_rate", "params": {"interval_s": 1, "demand_keys": 16}})
        wait_for(lambda: stored("KOG", "HAK") >= 16, TIMEOUT, 0.1, "16 pre-positioned keys")
        first = stored("KOG", "HAK")
        wait_for(lambda: stored("KOG", "HAK") >= first + 32, TIMEOUT, 0.1,
                 "two more rounds of 16 keys")
        relays = len(relays_of(api, "KOG", "HAK"))
        keys = enc("KOG", "HAK", 4)
        assert len(relays_of(api, "KOG", "HAK")) == relays, "served from the pool, no relay"
        assert dec("HAK", "KOG", list(keys)) == keys
        put("/api/v1/policy/pairs/KOG/HAK", {"mode": "manual"})  # stop: instructions withdrawn
        log(f"fixed_rate: {first} then {stored('KOG', 'HAK')} keys pre-positioned")

        # --- traffic_adaptive: demand KOG -> HON makes keys pre-positioned --------------------
        put("/api/v1/routes/pinned/KOG/HON", {"kms": ["KOG", "OTE", "HON"]})
        put("/api/v1/policy/pairs/KOG/HON",
            {"mode": "traffic_adaptive",
             "params": {"interval_s": 1, "alpha": 1, "demand_floor": 1, "headroom": 2}})
        assert stored("KOG", "HON") == 0
        stop = time.monotonic() + 4
        while time.monotonic() < stop:
            keys = enc("KOG", "HON", 4)
            assert dec("HON", "KOG", list(keys)) == keys
            time.sleep(0.1)
        wait_for(lambda: stored("KOG", "HON") > 0, TIMEOUT, 0.1,
                 "keys pre-positioned from the traffic")
        log(f"traffic_adaptive: {stored('KOG', 'HON')} keys pre-positioned after the traffic")
        put("/api/v1/policy/pairs/KOG/HON", {"mode": "manual"})

        # --- scheduled: a window of 24 keys HAK -> KOG -------------------------------------------
        put("/api/v1/policy/pairs/HAK/KOG", {"mode": "scheduled"})
        opens = time.time() + 3
        r = api.session.post(api.base + "/api/v1/schedules", timeout=TIMEOUT, json={
            "src_km": "HAK", "dst_km": "KOG", "number_of_keys": 24,
            "not_before": rfc3339(opens), "not_after": rfc3339(opens + 60)})
        assert r.status_code in (200, 201), (r.status_code, r.text)
        while time.time() < opens - 0.5:
            assert stored("HAK", "KOG") == 0, "keys before the window opened"
            time.sleep(0.1)
        wait_for(lambda: stored("HAK", "KOG") == 24, TIMEOUT, 0.1, "24 scheduled keys")
        # A one-shot: nothing more arrives (watched for 2.5 s, more than two 1 s retry periods).
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            assert stored("HAK", "KOG") == 24, stored("HAK", "KOG")
            time.sleep(0.1)
        keys = enc("HAK", "KOG", 24)
        assert dec("KOG", "HAK", list(keys)) == keys
        assert stored("HAK", "KOG") == 0
        log("scheduled: exactly 24 keys inside the window")
        log("ok")


if __name__ == "__main__":
    main()
