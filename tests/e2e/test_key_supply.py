#!/usr/bin/env python3
"""e2e (issue 4, done-when 1): germany50, the controller and one agent hosting all 50 KMs. The SAE
at Aachen gets keys from enc_keys toward the SAE at Dresden (no direct link: the agent drives a
session and a hop-by-hop relay through the controller); the SAE at Dresden gets identical bytes
from dec_keys; a second dec_keys for the same IDs fails; a third SAE is refused with 401. All over
ETSI GS QKD 014 with mutual TLS."""

import base64
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import Processes, etsi_error, log, start_network, wait_for

TIMEOUT = 20


def keys(r, number):
    assert r.status_code == 200, (r.status_code, r.text)
    out = {k["key_ID"]: base64.b64decode(k["key"], validate=True) for k in r.json()["keys"]}
    assert len(out) == number, r.text[:200]
    return out


def main():
    start = time.monotonic()
    with Processes("key-supply") as ps:
        # SAE-Dresden-2 is a third SAE at Dresden's KM (the KM that holds the keys).
        net = start_network(ps, "germany50.json", extra_apps=[("SAE-Dresden-2", "Dresden")])
        topo = net.topo
        adjacent = {(l["a"], l["b"]) for l in topo["links"]} | {(l["b"], l["a"])
                                                               for l in topo["links"]}
        assert ("Aachen", "Dresden") not in adjacent, "the test needs a relayed pair"
        base = net.etsi_base + "/api/v1/keys"
        aachen, dresden, third, berlin = (net.etsi("SAE-Aachen"), net.etsi("SAE-Dresden"),
                                          net.etsi("SAE-Dresden-2"), net.etsi("SAE-Berlin"))
        # Links are up before their first status report fills the pools above the floor; until
        # then no route exists.
        route = wait_for(lambda: net.api.get("/api/v1/routes", src="Aachen", dst="Dresden")["items"],
                         30, 0.1, "a route Aachen -> Dresden")[0]
        log(f"route Aachen -> Dresden: {' -> '.join(route['kms'])} ({len(route['links'])} hops)")

        st = aachen.get(f"{base}/SAE-Dresden/status", timeout=TIMEOUT)
        assert st.status_code == 200, st.text
        st = st.json()
        assert (st["source_KME_ID"], st["target_KME_ID"]) == ("Aachen", "Dresden"), st

        # enc_keys at Aachen (POST), retried while the pools along the route fill up.
        def enc():
            r = aachen.post(f"{base}/SAE-Dresden/enc_keys", json={"number": 4, "size": 256},
                            timeout=TIMEOUT)
            if r.status_code == 503:
                return None
            return r
        t = time.monotonic()
        r = wait_for(enc, 30, 0.2, "enc_keys Aachen -> Dresden")
        got = keys(r, 4)
        log(f"enc_keys: {len(got)} keys of 256 bits in {time.monotonic() - t:.3f} s")
        assert all(len(v) == 32 for v in got.values())

        # A third SAE may not fetch Dresden's keys: 401 at Dresden's KM; an SAE at another KM
        # (Berlin, which never held them) is refused too.
        ids = list(got)
        body = {"key_IDs": [{"key_ID": k} for k in ids]}
        etsi_error(third.post(f"{base}/SAE-Aachen/dec_keys", json=body, timeout=TIMEOUT), 401)
        r = berlin.post(f"{base}/SAE-Aachen/dec_keys", json=body, timeout=TIMEOUT)
        assert r.status_code in (400, 401), r.status_code
        log("third SAE refused with 401")

        # dec_keys at Dresden: identical bytes.
        t = time.monotonic()
        r = dresden.post(f"{base}/SAE-Aachen/dec_keys", json=body, timeout=TIMEOUT)
        assert keys(r, 4) == got, "Dresden must receive the bytes Aachen received"
        log(f"dec_keys: identical bytes in {time.monotonic() - t:.3f} s")

        # Supplied once.
        etsi_error(dresden.post(f"{base}/SAE-Aachen/dec_keys", json=body, timeout=TIMEOUT), 400)
        etsi_error(dresden.get(f"{base}/SAE-Aachen/dec_keys", params={"key_ID": ids[0]},
                               timeout=TIMEOUT), 400)
        log("second dec_keys refused")

        # The GET forms, the other way round (Dresden is master now).
        r = dresden.get(f"{base}/SAE-Aachen/enc_keys", params={"number": 2, "size": 512},
                        timeout=TIMEOUT)
        back = keys(r, 2)
        for k, v in back.items():
            r = aachen.get(f"{base}/SAE-Dresden/dec_keys", params={"key_ID": k}, timeout=TIMEOUT)
            assert keys(r, 1) == {k: v}
        relays = net.api.items("/api/v1/relays")
        log(f"controller relays: {len(relays)}, states "
            f"{sorted({r['state'] for r in relays})}")
        assert any(r["state"] == "relayed" for r in relays), relays[:3]
        assert net.controller.poll() is None and net.agent.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e key supply: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
