#!/usr/bin/env python3
"""e2e (issue 19, key combination; docs/hybrid.md): tokyo-qkd, the controller and one agent with
`--key-combination` rules. The pairs SAE-KOG:SAE-OTE (adjacent KMs, KMA Supply) and
SAE-KOG:SAE-HON (relayed KOG -> OTE -> HON through the controller) are `hybrid`, every other pair
`qkd`. For each pair both SAEs get identical keys over ETSI GS QKD 014 (mutual TLS), in both
directions, and the agent's delivery records and per-mode counters (/admin/state) show the mode
and path of each delivery at both end KMs. The combination itself (HKDF over QKD key || X25519
secret, differing from the QKD key) is checked byte for byte in unit_agent_key_combination."""

import base64
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import Processes, log, start_network, wait_for

TIMEOUT = 20


def keys(r, number):
    assert r.status_code == 200, (r.status_code, r.text)
    out = {k["key_ID"]: base64.b64decode(k["key"], validate=True) for k in r.json()["keys"]}
    assert len(out) == number, r.text[:200]
    return out


def deliveries(net, km):
    for k in net.admin_state()["kms"]:
        if k["km_id"] == km:
            return k["key_deliveries"]
    raise AssertionError(f"KM {km} not in /admin/state")


def exchange(net, master, slave, number=3, size=256):
    """enc_keys at the master's KM (retried while pools fill), dec_keys at the slave's: the
    same bytes. Returns the keys."""
    base = net.etsi_base + "/api/v1/keys"
    m, s = net.etsi(master), net.etsi(slave)

    def enc():
        r = m.post(f"{base}/{slave}/enc_keys", json={"number": number, "size": size},
                   timeout=TIMEOUT)
        return None if r.status_code == 503 else r
    got = keys(wait_for(enc, 30, 0.2, f"enc_keys {master} -> {slave}"), number)
    body = {"key_IDs": [{"key_ID": k} for k in got]}
    back = keys(s.post(f"{base}/{master}/dec_keys", json=body, timeout=TIMEOUT), number)
    assert back == got, f"{slave} must receive the bytes {master} received"
    assert all(len(v) == size // 8 for v in got.values())
    return got


def record_of(net, km, role, first_key_id):
    recs = [d for d in deliveries(net, km)["recent"]
            if d["role"] == role and d["first_key_id"] == first_key_id]
    assert len(recs) == 1, (km, role, first_key_id, deliveries(net, km))
    return recs[0]


def check(net, master_km, slave_km, got, mode, path):
    first = next(iter(got))
    for km, role in ((master_km, "master"), (slave_km, "slave")):
        rec = record_of(net, km, role, first)
        assert rec["mode"] == mode and rec["path"] == path, rec
        assert rec["keys"] == len(got), rec
        if mode == "hybrid":
            assert rec["suite"] in ("x25519", "x25519+mlkem768"), rec
        else:
            assert "suite" not in rec, rec
    log(f"{master_km} -> {slave_km}: {len(got)} identical keys, mode {mode}, path {path}")


def main():
    start = time.monotonic()
    with Processes("hybrid") as ps:
        net = start_network(ps, "tokyo-qkd.json", agent_args=[
            "--key-combination", "SAE-KOG:SAE-OTE=hybrid",
            "--key-combination", "SAE-HON:SAE-KOG=hybrid"])
        # A route KOG -> HON exists once the pools are above the floor.
        wait_for(lambda: net.api.get("/api/v1/routes", src="KOG", dst="HON")["items"], 30, 0.1,
                 "a route KOG -> HON")
        before = {km: deliveries(net, km)["keys_by_mode"] for km in ("KOG", "OTE", "HON", "HAK")}
        assert all(v == {"qkd": 0, "hybrid": 0} for v in before.values()), before

        adjacent = exchange(net, "SAE-KOG", "SAE-OTE")
        check(net, "KOG", "OTE", adjacent, "hybrid", "adjacent")
        relayed = exchange(net, "SAE-KOG", "SAE-HON")
        check(net, "KOG", "HON", relayed, "hybrid", "relay")
        # The pair rule holds in both directions, and for ETSI keys of several units.
        back = exchange(net, "SAE-HON", "SAE-KOG", number=2, size=512)
        check(net, "HON", "KOG", back, "hybrid", "relay")
        plain = exchange(net, "SAE-OTE", "SAE-HAK")
        check(net, "OTE", "HAK", plain, "qkd", "adjacent")
        plain_relay = exchange(net, "SAE-HAK", "SAE-KOG")
        check(net, "HAK", "KOG", plain_relay, "qkd", "relay")
        # No key was handed out twice across the pairs.
        every = [adjacent, relayed, back, plain, plain_relay]
        values = [v for d in every for v in d.values()]
        assert len(set(values)) == len(values), "a key value repeated"

        counts = {km: deliveries(net, km)["keys_by_mode"] for km in ("KOG", "OTE", "HON", "HAK")}
        log(f"keys by mode: {counts}")
        assert counts["KOG"] == {"qkd": 3, "hybrid": 3 + 3 + 2}, counts
        assert counts["OTE"] == {"qkd": 3, "hybrid": 3}, counts
        assert counts["HON"] == {"qkd": 0, "hybrid": 3 + 2}, counts
        assert counts["HAK"] == {"qkd": 3 + 3, "hybrid": 0}, counts
        assert net.controller.poll() is None and net.agent.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e hybrid: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
