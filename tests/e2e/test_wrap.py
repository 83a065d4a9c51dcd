#!/usr/bin/env python3
"""e2e (issue 19, originator in the KM layer, draft TR.QKDN-nq 7.3; docs/hybrid.md): tokyo-qkd
plus SAE-CAR, an SAE outside every trusted node whose keys KM KOG hands out only wrapped to its
certificate (`--outside-sae SAE-CAR=certs/sae/SAE-CAR.pem`, checked against the CA).

- The plain enc_keys / dec_keys refuse SAE-CAR (400) before any key is taken.
- enc_keys_wrapped at KOG (a relay KOG -> OTE -> HON) answers wrapped keys only (no "key"
  field); qkdn-unwrap with SAE-CAR's private key gives the same bytes SAE-HON gets from
  dec_keys at HON, and so does an independent unwrap written here with Python's `cryptography`
  (ECDH, HKDF-SHA256, RFC 5649).
- The other direction: SAE-HON's enc_keys, SAE-CAR's dec_keys_wrapped at KOG, unwrapped: equal.
- A wrong private key (SAE-HON's) makes qkdn-unwrap fail loudly: exit status 1, the reason on
  stderr, nothing on stdout.
- An SAE without a configured certificate gets 400 from the wrapped resources.
- The agent's delivery records show `wrapped` per delivery at both end KMs."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import Processes, binary, etsi_error, log, start_network, wait_for

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519, x448
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

TIMEOUT = 20
ALG = "ECDH-ES+HKDF-SHA256+A256KWP"


def deliveries(net, km):
    for k in net.admin_state()["kms"]:
        if k["km_id"] == km:
            return k["key_deliveries"]["recent"]
    raise AssertionError(f"KM {km} not in /admin/state")


def record_of(net, km, role, first_key_id):
    recs = [d for d in deliveries(net, km)
            if d["role"] == role and d["first_key_id"] == first_key_id]
    assert len(recs) == 1, (km, role, first_key_id, deliveries(net, km))
    return recs[0]


def independent_unwrap(doc, key_pem):
    """The construction of docs/hybrid.md, written with `cryptography` (not OpenSSL's EVP calls
    of the agent): {key_ID: bytes}."""
    w = doc["wrapping"]
    assert w["alg"] == ALG, w
    priv = serialization.load_pem_private_key(key_pem, password=None)
    epk_der = base64.b64decode(w["epk"], validate=True)
    epk = serialization.load_der_public_key(epk_der)
    if isinstance(priv, ec.EllipticCurvePrivateKey):
        z = priv.exchange(ec.ECDH(), epk)
    else:
        assert isinstance(priv, (x25519.X25519PrivateKey, x448.X448PrivateKey))
        z = priv.exchange(epk)
    own_spki = priv.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    out = {}
    for k in doc["keys"]:
        info = b"\0".join(s.encode() for s in ("qkdn-wrap-v1", ALG, k["key_ID"],
                                               w["master_SAE_ID"], w["slave_SAE_ID"]))
        info += b"\0" + hashlib.sha256(epk_der).digest() + hashlib.sha256(own_spki).digest()
        kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"qkdn-wrap-v1",
                   info=info).derive(z)
        out[k["key_ID"]] = aes_key_unwrap_with_padding(
            kek, base64.b64decode(k["wrapped_key"], validate=True))
    return out


def unwrap(tool, key_file, doc, tmp):
    path = os.path.join(tmp, "wrapped.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return subprocess.run([tool, "--key", key_file, "--in", path], capture_output=True,
                          text=True, timeout=TIMEOUT)


def plain_keys(text):
    return {k["key_ID"]: base64.b64decode(k["key"], validate=True)
            for k in json.loads(text)["keys"]}


def main():
    start = time.monotonic()
    tool = binary("QKDN_UNWRAP", "tools/unwrap/qkdn-unwrap")
    with Processes("wrap") as ps:
        certs = os.path.join(ps.dir, "certs")
        net = start_network(ps, "tokyo-qkd.json", extra_apps=[("SAE-CAR", "KOG")], agent_args=[
            "--outside-sae", f"SAE-CAR={certs}/sae/SAE-CAR.pem",
            "--outside-sae-ca", f"{certs}/ca.pem"])
        base = net.etsi_base + "/api/v1/keys"
        car, hon = net.etsi("SAE-CAR"), net.etsi("SAE-HON")
        car_key = os.path.join(certs, "sae", "SAE-CAR.key")
        with open(car_key, "rb") as f:
            car_pem = f.read()

        # The plain resources refuse the outside SAE, before any key is taken.
        body = etsi_error(car.post(f"{base}/SAE-HON/enc_keys", json={"number": 1},
                                   timeout=TIMEOUT), 400)
        assert body["message"] == "keys of this SAE are delivered only wrapped", body
        assert "enc_keys_wrapped" in json.dumps(body["details"]), body
        body = etsi_error(car.get(f"{base}/SAE-HON/dec_keys", params={"key_ID": "x"},
                                  timeout=TIMEOUT), 400)
        assert "dec_keys_wrapped" in json.dumps(body["details"]), body
        # An SAE without a certificate here cannot ask for wrapped keys.
        body = etsi_error(hon.post(f"{base}/SAE-CAR/enc_keys_wrapped", json={"number": 1},
                                   timeout=TIMEOUT), 400)
        assert body["message"] == "no certificate to wrap keys to", body

        wait_for(lambda: net.api.get("/api/v1/routes", src="KOG", dst="HON")["items"], 30, 0.1,
                 "a route KOG -> HON")

        # SAE-CAR (master) -> SAE-HON, relayed KOG -> OTE -> HON, wrapped at KOG.
        def enc_wrapped():
            r = car.post(f"{base}/SAE-HON/enc_keys_wrapped", json={"number": 2, "size": 256},
                         timeout=TIMEOUT)
            return None if r.status_code == 503 else r
        r = wait_for(enc_wrapped, 30, 0.2, "enc_keys_wrapped SAE-CAR -> SAE-HON")
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.headers.get("Cache-Control") == "no-store", r.headers
        doc = r.json()
        assert all(set(k) == {"key_ID", "wrapped_key"} for k in doc["keys"]), doc
        w = doc["wrapping"]
        assert (w["alg"], w["curve"], w["recipient_SAE_ID"], w["master_SAE_ID"],
                w["slave_SAE_ID"]) == (ALG, "P-256", "SAE-CAR", "SAE-CAR", "SAE-HON"), w
        done = unwrap(tool, car_key, doc, ps.dir)
        assert done.returncode == 0, (done.returncode, done.stderr)
        got = plain_keys(done.stdout)
        assert len(got) == 2 and all(len(v) == 32 for v in got.values()), got.keys()
        assert independent_unwrap(doc, car_pem) == got, "independent unwrap differs"
        back = hon.post(f"{base}/SAE-CAR/dec_keys",
                        json={"key_IDs": [{"key_ID": k} for k in got]}, timeout=TIMEOUT)
        assert back.status_code == 200, (back.status_code, back.text)
        assert plain_keys(back.text) == got, "SAE-HON must get the bytes SAE-CAR unwrapped"
        log("enc_keys_wrapped KOG -> HON: 2 keys unwrapped by qkdn-unwrap equal HON's dec_keys")
        first = next(iter(got))
        assert record_of(net, "KOG", "master", first)["wrapped"] is True
        assert record_of(net, "KOG", "master", first)["path"] == "relay"
        assert record_of(net, "HON", "slave", first)["wrapped"] is False

        # A wrong private key fails loudly: status 1, a reason, no key.
        wrong = unwrap(tool, os.path.join(certs, "sae", "SAE-HON.key"), doc, ps.dir)
        assert wrong.returncode == 1, (wrong.returncode, wrong.stdout, wrong.stderr)
        assert wrong.stdout == "", wrong.stdout
        assert "qkdn-unwrap: private key: the keys were wrapped to the public key" in \
            wrong.stderr, wrong.stderr
        log(f"wrong private key: {wrong.stderr.strip()}")

        # SAE-HON (master) -> SAE-CAR: dec_keys_wrapped at KOG.
        def enc_plain():
            r = hon.post(f"{base}/SAE-CAR/enc_keys", json={"number": 1, "size": 512},
                         timeout=TIMEOUT)
            return None if r.status_code == 503 else r
        r = wait_for(enc_plain, 30, 0.2, "enc_keys SAE-HON -> SAE-CAR")
        assert r.status_code == 200, (r.status_code, r.text)
        hon_keys = plain_keys(r.text)
        r = car.post(f"{base}/SAE-HON/dec_keys_wrapped",
                     json={"key_IDs": [{"key_ID": k} for k in hon_keys]}, timeout=TIMEOUT)
        assert r.status_code == 200, (r.status_code, r.text)
        doc2 = r.json()
        assert (doc2["wrapping"]["master_SAE_ID"], doc2["wrapping"]["slave_SAE_ID"]) == \
            ("SAE-HON", "SAE-CAR"), doc2["wrapping"]
        assert doc2["wrapping"]["epk"] != w["epk"], "a fresh ephemeral key per answer"
        done = unwrap(tool, car_key, doc2, ps.dir)
        assert done.returncode == 0, done.stderr
        assert plain_keys(done.stdout) == hon_keys, "SAE-CAR must unwrap SAE-HON's keys"
        assert independent_unwrap(doc2, car_pem) == hon_keys
        first = next(iter(hon_keys))
        assert record_of(net, "KOG", "slave", first)["wrapped"] is True
        assert record_of(net, "HON", "master", first)["wrapped"] is False
        log("dec_keys_wrapped at KOG: 1 key of 512 bits unwrapped equals HON's enc_keys")
        # Per-KM counters of keys delivered plain or wrapped (both ends count their records).
        counts = {km: next(k for k in net.admin_state()["kms"] if k["km_id"] == km)
                  ["key_deliveries"]["keys_by_delivery"] for km in ("KOG", "HON")}
        assert counts["KOG"] == {"plain": 0, "wrapped": 2 + 1}, counts
        assert counts["HON"] == {"plain": 2 + 1, "wrapped": 0}, counts
        # Each key is handed out once, wrapped or not.
        again = car.post(f"{base}/SAE-HON/dec_keys_wrapped",
                         json={"key_IDs": [{"key_ID": k} for k in hon_keys]}, timeout=TIMEOUT)
        assert again.status_code == 400, (again.status_code, again.text)
        assert net.controller.poll() is None and net.agent.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e wrap: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
