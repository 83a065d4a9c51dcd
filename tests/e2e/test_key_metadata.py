#!/usr/bin/env python3
"""e2e (issue 19, Y.3803 Table 1 item (1), QKD-key metadata; docs/hybrid.md "Y.3803 Table 1 key
metadata"): tokyo-qkd, SAE-KOG -> SAE-OTE over the adjacent link KOG-OTE (the delivered keys
are that link's QKD keys). The delivery records of both end KMs in /admin/state carry
`qkd_keys`: the link, this end's and the peer end's emulated QKD module IDs (swapped between the
two ends, and the same as the link's in `links`), the count and length of the QKD keys, the first
QKD-key ID (the same at both ends), the generation interval (after, at] inside the run and
before the delivery, and the hash SHA-256("qkdn-qkd-key-hash-v1" || keys), equal at both ends
and to the hash of the bytes both SAEs got. A relayed delivery (SAE-KOG -> SAE-HON) has none:
its keys are not QKD keys."""

import base64
import datetime
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import Processes, log, start_network, wait_for

TIMEOUT = 20


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def km_state(net, km):
    for k in net.admin_state()["kms"]:
        if k["km_id"] == km:
            return k
    raise AssertionError(f"KM {km} not in /admin/state")


def record_of(net, km, role, first_key_id):
    recs = [d for d in km_state(net, km)["key_deliveries"]["recent"]
            if d["role"] == role and d["first_key_id"] == first_key_id]
    assert len(recs) == 1, (km, role, first_key_id)
    return recs[0]


def exchange(net, master, slave, number):
    base = net.etsi_base + "/api/v1/keys"

    def enc():
        r = net.etsi(master).post(f"{base}/{slave}/enc_keys", json={"number": number,
                                                                     "size": 256},
                                  timeout=TIMEOUT)
        return None if r.status_code == 503 else r
    r = wait_for(enc, 30, 0.2, f"enc_keys {master} -> {slave}")
    assert r.status_code == 200, (r.status_code, r.text)
    got = [(k["key_ID"], base64.b64decode(k["key"], validate=True)) for k in r.json()["keys"]]
    back = net.etsi(slave).post(f"{base}/{master}/dec_keys",
                                json={"key_IDs": [{"key_ID": k} for k, _ in got]},
                                timeout=TIMEOUT)
    assert back.status_code == 200, back.text
    assert [(k["key_ID"], base64.b64decode(k["key"])) for k in back.json()["keys"]] == got
    return got


def main():
    start = time.monotonic()
    with Processes("key_metadata") as ps:
        started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
        net = start_network(ps, "tokyo-qkd.json")
        # KOG and OTE share two links (KOG-OTE-nec, KOG-OTE-ntt-dps): the KMs' link lists.
        links = {km: {l["link_id"]: l for l in km_state(net, km)["links"]
                      if l["peer_km_id"] == peer}
                 for km, peer in (("KOG", "OTE"), ("OTE", "KOG"))}
        assert links["KOG"] and links["KOG"].keys() == links["OTE"].keys(), links
        for lid, l in links["KOG"].items():
            assert l["qkd_module_id"] == f"qkdm:{lid}:KOG", l
            assert l["matching_qkd_module_id"] == f"qkdm:{lid}:OTE", l
            assert links["OTE"][lid]["qkd_module_id"] == l["matching_qkd_module_id"]
            assert links["OTE"][lid]["matching_qkd_module_id"] == l["qkd_module_id"]

        got = exchange(net, "SAE-KOG", "SAE-OTE", 3)
        done = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
        first = got[0][0]
        digest = hashlib.sha256(b"qkdn-qkd-key-hash-v1" + b"".join(v for _, v in got))
        recs = {km: record_of(net, km, role, first)
                for km, role in (("KOG", "master"), ("OTE", "slave"))}
        lid = recs["KOG"]["qkd_keys"]["link_id"]
        assert lid in links["KOG"], (lid, links["KOG"].keys())
        for km, peer in (("KOG", "OTE"), ("OTE", "KOG")):
            q = recs[km]["qkd_keys"]
            log(f"{km}: qkd_keys {q}")
            assert q["link_id"] == lid, q
            assert q["qkd_module_id"] == f"qkdm:{lid}:{km}", q
            assert q["matching_qkd_module_id"] == f"qkdm:{lid}:{peer}", q
            assert q["keys"] == 3 and q["key_bits"] == 256, q
            after, at = parse_time(q["generated_after"]), parse_time(q["generated_at"])
            assert started <= after < at <= done, (started, q, done)
            assert at <= parse_time(recs[km]["time"]) + datetime.timedelta(seconds=1), q
            assert q["hash"] == digest.hexdigest(), (q["hash"], digest.hexdigest())
        assert recs["KOG"]["qkd_keys"]["first_key_id"] == recs["OTE"]["qkd_keys"]["first_key_id"]
        # The QKD-key ID is the link key's, not the ETSI key_ID made from it.
        assert recs["KOG"]["qkd_keys"]["first_key_id"] != first

        wait_for(lambda: net.api.get("/api/v1/routes", src="KOG", dst="HON")["items"], 30, 0.1,
                 "a route KOG -> HON")
        relayed = exchange(net, "SAE-KOG", "SAE-HON", 1)
        rec = record_of(net, "KOG", "master", relayed[0][0])
        assert rec["path"] == "relay" and "qkd_keys" not in rec, rec
        assert net.controller.poll() is None and net.agent.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e key_metadata: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
