#!/usr/bin/env python3
"""e2e (issue 4): a client written to the text of ETSI GS QKD 014 v1.1.1 with Python's requests,
against a real qkdn-agent (mutual TLS, certificates from scripts/dev-ca.sh) and the real
qkdn-controller on tokyo-qkd: Status, Get key (GET and POST), Get key with key IDs (GET and POST),
identical bytes at both SAEs, keys supplied once, a third SAE refused with 401, no client
certificate refused by TLS, every bad input of the issue answered with the spec's Error object,
exhausted pools answered 503. Then the insecure lab mode (X-SAE-ID)."""

import base64
import os
import sys
import time
import uuid

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import Processes, etsi_error, log, start_network, wait_for

TIMEOUT = 20
STATUS_FIELDS = {"source_KME_ID": str, "target_KME_ID": str, "master_SAE_ID": str,
                 "slave_SAE_ID": str, "key_size": int, "stored_key_count": int,
                 "max_key_count": int, "max_key_per_request": int, "max_key_size": int,
                 "min_key_size": int, "max_SAE_ID_count": int}


class Etsi014Client:
    """ETSI GS QKD 014 v1.1.1 clause 5: the three methods, with the specification's names."""

    def __init__(self, base, session):
        self.base = base.rstrip("/") + "/api/v1/keys/"
        self.s = session

    # 5.2 Get status: GET /api/v1/keys/{slave_SAE_ID}/status
    def get_status(self, slave_sae_id):
        return self.s.get(f"{self.base}{slave_sae_id}/status", timeout=TIMEOUT)

    # 5.3 Get key: GET .../enc_keys?number=&size= or POST .../enc_keys with a Key request object
    def get_key(self, slave_sae_id, number=None, size=None, post=False, body=None, params=None):
        url = f"{self.base}{slave_sae_id}/enc_keys"
        if post:
            if body is None:
                body = {k: v for k, v in (("number", number), ("size", size)) if v is not None}
            if isinstance(body, (bytes, str)):
                return self.s.post(url, data=body, timeout=TIMEOUT,
                                   headers={"Content-Type": "application/json"})
            return self.s.post(url, json=body, timeout=TIMEOUT)
        if params is None:
            params = {k: v for k, v in (("number", number), ("size", size)) if v is not None}
        return self.s.get(url, params=params, timeout=TIMEOUT)

    # 5.4 Get key with key IDs: GET .../dec_keys?key_ID= or POST .../dec_keys with Key IDs
    def get_key_with_key_ids(self, master_sae_id, key_ids, post=True, body=None):
        url = f"{self.base}{master_sae_id}/dec_keys"
        if not post:
            return self.s.get(url, params=[("key_ID", k) for k in key_ids], timeout=TIMEOUT)
        if body is None:
            body = {"key_IDs": [{"key_ID": k} for k in key_ids]}
        if isinstance(body, (bytes, str)):
            return self.s.post(url, data=body, timeout=TIMEOUT,
                               headers={"Content-Type": "application/json"})
        return self.s.post(url, json=body, timeout=TIMEOUT)


def keys_of(r, number, size):
    """The Key container of a 200 reply: {key_ID: bytes}, checked against the request."""
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    keys = r.json()["keys"]
    assert len(keys) == number, (len(keys), number)
    out = {}
    for k in keys:
        uuid.UUID(k["key_ID"])  # key_ID is a UUID (clause 6.3)
        raw = base64.b64decode(k["key"], validate=True)
        assert len(raw) * 8 == size, (len(raw), size)
        assert k["key_ID"] not in out
        out[k["key_ID"]] = raw
    return out


def check_status(r, master, slave, master_km, slave_km):
    assert r.status_code == 200, (r.status_code, r.text)
    st = r.json()
    for name, typ in STATUS_FIELDS.items():
        assert isinstance(st.get(name), typ), (name, st)
    assert st["master_SAE_ID"] == master and st["slave_SAE_ID"] == slave, st
    assert st["source_KME_ID"] == master_km and st["target_KME_ID"] == slave_km, st
    assert st["min_key_size"] <= st["key_size"] <= st["max_key_size"], st
    assert st["max_key_per_request"] >= 1 and st["max_SAE_ID_count"] == 0, st
    return st


def mutual_tls(ps):
    # Small pools (32 Ki bits per link end) so that exhausting them is quick; the test's own
    # requests need far fewer.
    # SAE-OTE2 shares KM OTE with SAE-OTE: the third SAE that sees the keys' KM but is not their
    # slave. SAE-Intruder has a valid certificate but no KM serves it.
    net = start_network(ps, "tokyo-qkd.json", extra_saes=["SAE-Intruder"],
                        extra_apps=[("SAE-OTE2", "OTE")],
                        agent_args=["--pool-capacity-bytes", "4096"])
    kog = Etsi014Client(net.etsi_base, net.etsi("SAE-KOG"))
    ote = Etsi014Client(net.etsi_base, net.etsi("SAE-OTE"))
    hak = Etsi014Client(net.etsi_base, net.etsi("SAE-HAK"))
    hon = Etsi014Client(net.etsi_base, net.etsi("SAE-HON"))
    ote2 = Etsi014Client(net.etsi_base, net.etsi("SAE-OTE2"))
    intruder = Etsi014Client(net.etsi_base, net.etsi("SAE-Intruder"))
    wait_for(lambda: net.admin_state()["kms"] and all(
        l["stored_keys"] > 0 for km in net.admin_state()["kms"] for l in km["links"]),
        20, 0.1, "keys in every link pool")

    # Status (5.2), adjacent and relayed pairs.
    st = check_status(kog.get_status("SAE-OTE"), "SAE-KOG", "SAE-OTE", "KOG", "OTE")
    check_status(kog.get_status("SAE-HAK"), "SAE-KOG", "SAE-HAK", "KOG", "HAK")
    log(f"status: {st}")
    size = st["key_size"]

    # Get key (GET) and Get key with key IDs (GET): identical bytes.
    t = time.monotonic()
    got = keys_of(kog.get_key("SAE-OTE", number=2, size=256), 2, 256)
    back = keys_of(ote.get_key_with_key_ids("SAE-KOG", list(got)[:1], post=False), 1, 256)
    back.update(keys_of(ote.get_key_with_key_ids("SAE-KOG", list(got)[1:], post=False), 1, 256))
    assert back == got
    log(f"enc_keys GET + dec_keys GET, adjacent: {time.monotonic() - t:.3f} s")

    # Get key (POST) toward a non-adjacent SAE (relay KOG -> OTE -> HAK), dec_keys POST.
    t = time.monotonic()
    got = keys_of(kog.get_key("SAE-HAK", number=3, size=512, post=True), 3, 512)
    back = keys_of(hak.get_key_with_key_ids("SAE-KOG", list(got)), 3, 512)
    assert back == got
    log(f"enc_keys POST + dec_keys POST, relayed: {time.monotonic() - t:.3f} s")
    # Defaults: no number, no size -> one key of key_size.
    keys_of(kog.get_key("SAE-OTE", post=True, body={}), 1, size)
    keys_of(kog.get_key("SAE-OTE"), 1, size)

    # Keys are supplied once: the second dec_keys for the same IDs fails ("not found"); asked
    # by another SAE (OTE) they are another pair's keys: 401.
    again = ote.get_key_with_key_ids("SAE-KOG", list(back)[:1])
    etsi_error(again, 401)
    body = etsi_error(hak.get_key_with_key_ids("SAE-KOG", list(back)), 400)
    assert body["message"] == "one or more keys specified are not found on KME", body

    # A third SAE at the slave's KM is refused with 401, and so is one at another KM (which
    # never held the keys: the key_ID names its pair), GET and POST alike; a 401 lists no key
    # ID; the rightful slave still gets them afterwards.
    fresh = keys_of(kog.get_key("SAE-OTE", number=2), 2, size)
    body = etsi_error(ote2.get_key_with_key_ids("SAE-KOG", list(fresh)), 401)
    assert not any(k in str(body) for k in fresh), body
    etsi_error(ote2.get_key_with_key_ids("SAE-KOG", list(fresh), post=False), 401)
    etsi_error(hak.get_key_with_key_ids("SAE-KOG", list(fresh)), 401)
    etsi_error(hak.get_key_with_key_ids("SAE-KOG", list(fresh), post=False), 401)
    assert keys_of(ote.get_key_with_key_ids("SAE-KOG", list(fresh)), 2, size) == fresh
    # An SAE with a valid certificate that no KM here serves: 401 everywhere, with a JSON body.
    etsi_error(intruder.get_status("SAE-OTE"), 401)
    etsi_error(intruder.get_key("SAE-OTE", number=1), 401)
    etsi_error(intruder.get_key("SAE-OTE", number=1, post=True), 401)
    etsi_error(intruder.get_key_with_key_ids("SAE-KOG", [str(uuid.uuid4())]), 401)
    log("keys supplied once; third SAE and unknown SAE refused with 401")

    # No client certificate: the TLS handshake (or the first read after it) fails.
    nocert = Etsi014Client(net.etsi_base, net.etsi("SAE-KOG", cert=False))
    try:
        r = nocert.get_status("SAE-OTE")
        raise AssertionError(f"a client without a certificate got HTTP {r.status_code}")
    except (requests.exceptions.SSLError, requests.exceptions.ConnectionError) as exc:
        log(f"no client certificate: refused ({type(exc).__name__})")
    # A server that is not the one the CA vouches for is refused by the client too (sanity of
    # the client setup): plain HTTP to the TLS port fails.
    try:
        requests.get(f"http://127.0.0.1:{net.etsi_port}/api/v1/keys/SAE-OTE/status",
                     timeout=5)
    except requests.exceptions.RequestException:
        pass

    bad_inputs(net, kog, ote, hon, size)
    exhaust(net, hak, hon)


def bad_inputs(net, kog, ote, hon, size):
    mx = check_status(kog.get_status("SAE-OTE"), "SAE-KOG", "SAE-OTE", "KOG", "OTE")
    # number: zero, negative, huge, not an integer (GET and POST).
    for n in ["0", "-1", "-9223372036854775808", str(mx["max_key_per_request"] + 1),
              "99999999999999999999999", "1.5", "abc", "", "0x10"]:
        etsi_error(kog.get_key("SAE-OTE", params={"number": n, "size": 256}), 400)
    for n in [0, -3, mx["max_key_per_request"] + 1, 10**30, 2.5, 2.0, "2", None, True, [1], {}]:
        etsi_error(kog.get_key("SAE-OTE", post=True, body={"number": n, "size": 256}), 400)
    # size: not a multiple of 8, zero, negative, below min, above max, not an integer.
    for sz in [255, 0, -256, mx["min_key_size"] - 8, mx["max_key_size"] + 8,
               mx["max_key_size"] * 1024, 1 << 62]:
        etsi_error(kog.get_key("SAE-OTE", number=1, size=sz), 400)
        etsi_error(kog.get_key("SAE-OTE", post=True, body={"number": 1, "size": sz}), 400)
    etsi_error(kog.get_key("SAE-OTE", params={"number": 1, "size": "2x"}), 400)
    etsi_error(kog.get_key("SAE-OTE", post=True, body={"size": "256"}), 400)
    # Repeated and unknown query parameters.
    etsi_error(kog.get_key("SAE-OTE", params=[("number", 1), ("number", 2)]), 400)
    etsi_error(kog.get_key("SAE-OTE", params={"count": 1}), 400)
    # Key multicast is not offered (max_SAE_ID_count 0), mandatory extensions are not supported,
    # optional ones are ignored.
    etsi_error(kog.get_key("SAE-OTE", post=True,
                           body={"number": 1, "additional_slave_SAE_IDs": ["SAE-HON"]}), 400)
    etsi_error(kog.get_key("SAE-OTE", post=True,
                           body={"number": 1, "additional_slave_SAE_IDs": "SAE-HON"}), 400)
    err = etsi_error(kog.get_key("SAE-OTE", post=True,
                                 body={"number": 1, "extension_mandatory": [{"abc_route": 1}]}),
                     400)
    assert "extension" in err["message"], err
    etsi_error(kog.get_key("SAE-OTE", post=True, body={"extension_mandatory": "x"}), 400)
    ok = kog.get_key("SAE-OTE", post=True,
                     body={"number": 1, "size": 256, "extension_optional": [{"abc_x": 1}],
                           "additional_slave_SAE_IDs": [], "extension_mandatory": []})
    keys_of(ok, 1, 256)
    # Malformed JSON and wrong shapes.
    for body in ["{", "[1,2]", "\"x\"", "null", "{\"number\": 1,}", "\x00\x01"]:
        etsi_error(kog.get_key("SAE-OTE", post=True, body=body), 400)
    for body in ["{", "{}", "[]", "{\"key_IDs\": \"x\"}", "{\"key_IDs\": []}",
                 "{\"key_IDs\": [\"id\"]}", "{\"key_IDs\": [{\"id\": \"x\"}]}",
                 "{\"key_IDs\": [{\"key_ID\": 5}]}"]:
        etsi_error(ote.get_key_with_key_ids("SAE-KOG", [], body=body), 400)
    etsi_error(ote.get_key_with_key_ids("SAE-KOG", [], post=False), 400)
    # Unknown, duplicate and foreign key IDs; all or nothing.
    body = etsi_error(ote.get_key_with_key_ids("SAE-KOG", [str(uuid.uuid4())]), 400)
    assert body["message"] == "one or more keys specified are not found on KME", body
    etsi_error(ote.get_key_with_key_ids("SAE-KOG", [str(uuid.uuid4())], post=False), 400)
    keys = keys_of(kog.get_key("SAE-OTE", number=2), 2, size)
    ids = list(keys)
    etsi_error(ote.get_key_with_key_ids("SAE-KOG", [ids[0], ids[0]]), 400)
    etsi_error(ote.get_key_with_key_ids("SAE-KOG", [ids[0], str(uuid.uuid4())]), 400)
    # Foreign: the IDs were issued by SAE-KOG, not SAE-HON: 401 (the caller is not the SAE these
    # keys were issued to by that master).
    etsi_error(ote.get_key_with_key_ids("SAE-HON", ids), 401)
    etsi_error(ote.get_key_with_key_ids("SAE-HON", ids, post=False), 401)
    assert keys_of(ote.get_key_with_key_ids("SAE-KOG", ids), 2, size) == keys
    # Unknown slave SAE, and an SAE asking for keys with itself.
    etsi_error(kog.get_key("SAE-Nowhere", number=1), 400)
    etsi_error(kog.get_status("SAE-Nowhere"), 400)
    etsi_error(kog.get_key("SAE-KOG", number=1), 400)
    # Unknown resources and methods: 404 and 405, still with the Error object.
    etsi_error(kog.s.get(net.etsi_base + "/api/v1/keys/SAE-OTE/other", timeout=TIMEOUT), 404)
    etsi_error(kog.s.get(net.etsi_base + "/api/v2/status", timeout=TIMEOUT), 404)
    etsi_error(kog.s.get(net.etsi_base + "/", timeout=TIMEOUT), 404)
    r = kog.s.delete(net.etsi_base + "/api/v1/keys/SAE-OTE/enc_keys", timeout=TIMEOUT)
    etsi_error(r, 405)
    assert "POST" in r.headers.get("Allow", ""), r.headers
    etsi_error(kog.s.post(net.etsi_base + "/api/v1/keys/SAE-OTE/status", timeout=TIMEOUT), 405)
    # A body over the limit.
    try:
        big = kog.get_key("SAE-OTE", post=True, body="{\"x\":\"" + "a" * 70000 + "\"}")
        assert big.status_code in (400, 413), big.status_code
    except requests.exceptions.ConnectionError:
        pass  # the server may close before the client has sent the whole body
    log("bad input: every case answered 400/404/405 with the Error object")


def exhaust(net, hak, hon):
    # Stop key generation on every link, then drain what HAK can reach toward HON: the agent
    # answers 503 with an Error object once nothing is left (directly or by relay).
    for link in net.topo["links"]:
        requests.post(f"http://127.0.0.1:{net.admin_port}/admin/links/{link['link_id']}",
                      json={"key_rate_bps": 0}, timeout=5).raise_for_status()
    t = time.monotonic()
    delivered = 0
    for number in (16, 1):  # big bites first, then the crumbs
        for _ in range(2000):
            r = hak.get_key("SAE-HON", number=number, size=256)
            if r.status_code == 503:
                body = etsi_error(r, 503)
                break
            delivered += len(keys_of(r, number, 256))
        else:
            raise AssertionError("pools never ran dry")
    log(f"exhausted after {delivered} keys in {time.monotonic() - t:.2f} s: {body}")
    etsi_error(hak.get_key("SAE-HON", number=1, size=256, post=True), 503)


def insecure(ps):
    net = start_network(ps, "tokyo-qkd.json", insecure=True)
    anon = Etsi014Client(net.etsi_base, net.etsi(None))
    body = etsi_error(anon.get_status("SAE-OTE"), 401)
    log(f"insecure mode without X-SAE-ID: 401 {body}")
    etsi_error(Etsi014Client(net.etsi_base, net.etsi("SAE-Nowhere")).get_status("SAE-OTE"), 401)
    kog = Etsi014Client(net.etsi_base, net.etsi("SAE-KOG"))
    ote = Etsi014Client(net.etsi_base, net.etsi("SAE-OTE"))
    check_status(kog.get_status("SAE-OTE"), "SAE-KOG", "SAE-OTE", "KOG", "OTE")
    wait_for(lambda: kog.get_key("SAE-OTE", number=1).status_code != 503 or None, 20, 0.2,
             "keys in insecure mode")
    got = keys_of(kog.get_key("SAE-OTE", number=4, size=256, post=True), 4, 256)
    assert keys_of(ote.get_key_with_key_ids("SAE-KOG", list(got)), 4, 256) == got
    log("insecure mode: X-SAE-ID names the SAE")


def main():
    start = time.monotonic()
    with Processes("etsi-client") as ps:
        mutual_tls(ps)
    with Processes("etsi-insecure") as ps:
        insecure(ps)
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e etsi client: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
