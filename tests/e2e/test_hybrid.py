#!/usr/bin/env python3
"""e2e (issue 19, key combination; docs/hybrid.md): tokyo-qkd, the controller and one agent with
`--key-combination` rules. The pairs SAE-KOG:SAE-OTE (adjacent KMs, KMA Supply) and
SAE-KOG:SAE-HON (relayed KOG -> OTE -> HON through the controller) are `hybrid`, every other pair
`qkd`. For each pair both SAEs get identical keys over ETSI GS QKD 014 (mutual TLS), in both
directions, and the agent's delivery records and per-mode counters (/admin/state) show the mode
and path of each delivery at both end KMs, and that the two end KMs checked the keys against
each other (KSA key check) before the master SAE got them. The pair SAE-HAK:SAE-KOG relays with aes-256-gcm
(`--relay-scheme`): one link key per hop instead of one per relayed key, the scheme and its
security level shown in the controller's relay record, its metric and the agent's records. The
combination itself (HKDF over QKD key || X25519
secret, differing from the QKD key) is checked byte for byte in unit_agent_key_combination."""

import base64
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (Processes, api_text, log, metric_value, relays_of, start_network,
                      wait_for)

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


def link_consumed(net):
    """(KM, link) -> keys_consumed at that link end."""
    return {(k["km_id"], l["link_id"]): l["keys_consumed"]
            for k in net.admin_state()["kms"] for l in k["links"]}


def check(net, master_km, slave_km, got, mode, path, scheme="otp"):
    first = next(iter(got))
    for km, role in ((master_km, "master"), (slave_km, "slave")):
        rec = record_of(net, km, role, first)
        assert rec["mode"] == mode and rec["path"] == path, rec
        assert rec["keys"] == len(got), rec
        # KSA key check: the slave's KM sent its value, the master's KM matched it before
        # answering enc_keys.
        assert rec["key_check"] == ("verified" if role == "master" else "sent"), rec
        if mode == "hybrid":
            assert rec["suite"] in ("x25519", "x25519+mlkem768"), rec
        else:
            assert "suite" not in rec, rec
        if path == "relay":
            assert rec["relay_scheme"] == scheme, rec
            assert rec["relay_security"] == ("information_theoretic" if scheme == "otp"
                                             else "computational"), rec
        else:
            assert "relay_scheme" not in rec, rec
    log(f"{master_km} -> {slave_km}: {len(got)} identical keys, mode {mode}, path {path}")


def main():
    start = time.monotonic()
    with Processes("hybrid") as ps:
        net = start_network(ps, "tokyo-qkd.json", agent_args=[
            "--key-combination", "SAE-KOG:SAE-OTE=hybrid",
            "--key-combination", "SAE-HON:SAE-KOG=hybrid",
            "--relay-scheme", "SAE-KOG:SAE-HAK=aes-256-gcm"])
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
        # aes-256-gcm relay HAK -> OTE -> KOG: 4 keys of 512 bits = 8 units, one link key per hop.
        consumed = link_consumed(net)
        plain_relay = exchange(net, "SAE-HAK", "SAE-KOG", number=4, size=512)
        check(net, "HAK", "KOG", plain_relay, "qkd", "relay", scheme="aes-256-gcm")
        used = {k: link_consumed(net)[k] - v for k, v in consumed.items()}
        hop_links = {k: v for k, v in used.items() if v}
        log(f"link keys used by the aes-256-gcm relay of 8 units: {hop_links}")
        assert sorted(hop_links.values()) == [1, 1, 1, 1], hop_links  # 2 hops x 2 ends
        # Marked relayed on the source's 0x1405, which may come after enc_keys answered.
        gcm = wait_for(lambda: [r for r in relays_of(net.api, "HAK", "KOG")
                                if r["state"] == "relayed"], 10, 0.05, "HAK -> KOG relayed")
        assert len(gcm) == 1, gcm
        assert gcm[0]["relay_scheme"] == "aes-256-gcm", gcm[0]
        assert gcm[0]["relay_security"] == "computational", gcm[0]
        assert gcm[0]["number_of_keys"] == 1 and len(gcm[0]["hops"]) == 2, gcm[0]
        otp = [r for r in relays_of(net.api, "KOG", "HON") if r["state"] == "relayed"]
        assert otp and all(r["relay_scheme"] == "otp" and r["number_of_keys"] == 3 and
                           r["relay_security"] == "information_theoretic" for r in otp), otp
        metrics = api_text(net.api, "/metrics")
        assert metric_value(metrics, "qkdn_key_relays_by_scheme_total",
                            scheme="aes-256-gcm") == 1, metrics
        assert metric_value(metrics, "qkdn_key_relays_by_scheme_total", scheme="otp") == 2
        # No key was handed out twice across the pairs.
        every = [adjacent, relayed, back, plain, plain_relay]
        values = [v for d in every for v in d.values()]
        assert len(set(values)) == len(values), "a key value repeated"

        counts = {km: deliveries(net, km)["keys_by_mode"] for km in ("KOG", "OTE", "HON", "HAK")}
        log(f"keys by mode: {counts}")
        assert counts["KOG"] == {"qkd": 4, "hybrid": 3 + 3 + 2}, counts
        assert counts["OTE"] == {"qkd": 3, "hybrid": 3}, counts
        assert counts["HON"] == {"qkd": 0, "hybrid": 3 + 2}, counts
        assert counts["HAK"] == {"qkd": 3 + 4, "hybrid": 0}, counts
        assert net.controller.poll() is None and net.agent.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e hybrid: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
