#!/usr/bin/env python3
"""e2e (issue 20's last item, docs/ck-extensions.md "Key relay"): SAE-pair route constraints on
every relay an agent asks for, even when several SAE pairs share one KM pair.

S and D are joined by S -> X -> D (X: trust 10, the shortest) and S -> Y -> Z -> D (trust 90, 80).
Three SAEs at S talk to SAE-D at D:
- SAE-S with constraint min_trust_level 50: its keys are relayed around X;
- SAE-S3 without constraints: its keys take the shortest route through X;
- SAE-S2 with min_trust_level 95: no compliant path; ETSI 014 answers 503 with the reason
  (trust_constraints), never a 500 and never a relaxed route.
The requests interleave (S, S3, S, S2, S) so that every SAE pair of the KM pair S -> D has an
active session: the controller must apply the constraints of the pair the agent names in its
0x1403 (application_source_id), not those of whichever session it finds for the KM pair."""

import base64
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import Processes, log, relays_of, start_network, wait_for

TIMEOUT = 20
TOPOLOGY = {
    "name": "trust-pairs-e2e",
    "kms": [
        {"km_id": "S", "trust_level": 90},
        {"km_id": "X", "trust_level": 10},
        {"km_id": "Y", "trust_level": 90},
        {"km_id": "Z", "trust_level": 80},
        {"km_id": "D", "trust_level": 90},
    ],
    "links": [
        {"link_id": "SX", "a": "S", "b": "X", "key_rate_bps": 200000},
        {"link_id": "XD", "a": "X", "b": "D", "key_rate_bps": 200000},
        {"link_id": "SY", "a": "S", "b": "Y", "key_rate_bps": 200000},
        {"link_id": "YZ", "a": "Y", "b": "Z", "key_rate_bps": 200000},
        {"link_id": "ZD", "a": "Z", "b": "D", "key_rate_bps": 200000},
    ],
    "applications": [{"sae_id": "SAE-S", "km_id": "S"}, {"sae_id": "SAE-S2", "km_id": "S"},
                     {"sae_id": "SAE-S3", "km_id": "S"}, {"sae_id": "SAE-D", "km_id": "D"}],
}


def main():
    start = time.monotonic()
    with Processes("trust-pairs") as ps:
        topo_path = os.path.join(ps.dir, "trust-pairs.json")
        with open(topo_path, "w") as f:
            json.dump(TOPOLOGY, f)
        net = start_network(ps, topo_path, token_role="admin")
        for src, body in (("SAE-S", {"min_trust_level": 50}),
                          ("SAE-S2", {"min_trust_level": 95})):
            r = net.api.session.put(f"{net.api.base}/api/v1/constraints/{src}/SAE-D", json=body,
                                    timeout=10)
            assert r.status_code in (200, 201), (r.status_code, r.text)
        wait_for(lambda: net.api.get("/api/v1/routes", src="S", dst="D")["items"], 30, 0.1,
                 "a route S -> D")
        base = net.etsi_base + "/api/v1/keys"
        d = net.etsi("SAE-D")
        seen = set()

        def fetch(sae):
            """enc_keys sae -> SAE-D, dec_keys at D; returns the new relay's route KMs."""
            s = net.etsi(sae)

            def enc():
                r = s.post(f"{base}/SAE-D/enc_keys", json={"number": 2, "size": 256},
                           timeout=TIMEOUT)
                return None if r.status_code == 503 and "insufficient" in r.text else r
            r = wait_for(enc, 30, 0.2, f"enc_keys {sae} -> SAE-D")
            assert r.status_code == 200, (sae, r.status_code, r.text)
            keys = {k["key_ID"]: k["key"] for k in r.json()["keys"]}
            body = {"key_IDs": [{"key_ID": k} for k in keys]}
            back = d.post(f"{base}/{sae}/dec_keys", json=body, timeout=TIMEOUT)
            assert back.status_code == 200, back.text
            assert {k["key_ID"]: k["key"] for k in back.json()["keys"]} == keys
            # The controller marks the relay relayed on the source's 0x1405, which may arrive
            # after enc_keys answered: poll (bounded).
            new = wait_for(lambda: [x for x in relays_of(net.api, "S", "D")
                                    if x["state"] == "relayed" and x["relay_id"] not in seen],
                           10, 0.05, f"the relay of {sae} recorded as relayed")
            assert len(new) == 1, new
            seen.add(new[0]["relay_id"])
            return new[0]["route"]["kms"]

        def refused(sae):
            r = net.etsi(sae).post(f"{base}/SAE-D/enc_keys", json={"number": 2, "size": 256},
                                   timeout=TIMEOUT)
            assert r.status_code == 503, (r.status_code, r.text)
            assert "meets the trust constraints" in r.text and "SAE-S2 -> SAE-D" in r.text, r.text
            return r.json()

        for step, sae in enumerate(["SAE-S", "SAE-S3", "SAE-S", "SAE-S2", "SAE-S3", "SAE-S"]):
            if sae == "SAE-S2":
                body = refused(sae)
                log(f"step {step}: {sae} -> SAE-D refused: {body.get('details')}")
                continue
            kms = fetch(sae)
            log(f"step {step}: {sae} -> SAE-D relayed over {' -> '.join(kms)}")
            if sae == "SAE-S":
                assert "X" not in kms, f"SAE-S's constraint (min trust 50) must avoid X: {kms}"
            else:
                assert kms == ["S", "X", "D"], f"SAE-S3 has no constraint: shortest route {kms}"
        assert net.controller.poll() is None and net.agent.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e trust pairs: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
