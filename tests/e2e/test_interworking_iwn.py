#!/usr/bin/env python3
"""e2e (issue 16, IWN half): key transfer through an interworking node (Y.3818 9.2 1,
Q.QKDNi_KM 7.1/8.1/8.2 and Appendix I: ETSI GS QKD 020 ext_keys over mutual TLS).

Two QKDNs, each with its own PKI (CA), controller and agent process, real processes on loopback:
  QKDN-A: KM-A1 -- KM-A2 -- IWN-A      SAE-A1 at KM-A1, SAE-A2 at KM-A2;
          SAE-B1, SAE-B2, SAE-B3 (of QKDN-B) appear at IWN-A, the IWN KM of QKDN-A;
          controller A's policy lets keys go to SAE-B1 and SAE-B2 only
  QKDN-B: IWN-B -- KM-B2 -- KM-B3      SAE-B1 at IWN-B, SAE-B2 at KM-B2, SAE-B4, SAE-B5 at KM-B3;
          controller B's peer policy lets QKDN-A reach SAE-B1, SAE-B2, SAE-B4 with a key rate
          share of 0.005
IWN-A and IWN-B form the interworking node: no QKD link between them, Kxi' only.

Checked: SAE-A1 (a relay through the controller A to IWN-A) and SAE-A2 (adjacent supply) get
keys for SAE-B1 that SAE-B1 fetches identically from its own KM in QKDN-B with dec_keys; IWN-A
never files them; controller A decided each transfer (0x14F0/0x41F1) and both controllers
recorded the KMs' reports (0x14F2) in their metrics and audit trail; controller A refuses a
transfer to SAE-B3 (not allowed by its policy) and nothing moves; keys for SAE-B2 (one hop
behind IWN-B) and SAE-B4 (two hops) go on by a relay controller B decides and reserves (the last
leg), and those SAEs fetch identical keys from their own KMs; SAE-B5 (not in controller B's peer
policy) is refused by IWN-B and SAE-A1 gets a 400 naming why, nothing delivered; transfers over
QKDN-A's key rate share are refused (503 with the reason, counted); IWN-B's listener
refuses every client but IWN-A's certificate and every malformed transfer with a clear error;
a KM-B' that is down makes the request fail loudly (503) with nothing filed anywhere."""

import base64
import hashlib
import http.client
import json
import os
import ssl
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (Processes, api_text, etsi_error, log, make_certs, metric_value,
                      read_port_file, start_network, wait_for)

TIMEOUT = 20

TOPO_A = {
    "name": "qkdn-a",
    "kms": [{"km_id": "KM-A1"}, {"km_id": "KM-A2"}, {"km_id": "IWN-A"}],
    "links": [{"link_id": "LA12", "a": "KM-A1", "b": "KM-A2", "key_rate_bps": 200000},
              {"link_id": "LA2I", "a": "KM-A2", "b": "IWN-A", "key_rate_bps": 200000}],
    "applications": [{"sae_id": "SAE-A1", "km_id": "KM-A1"}, {"sae_id": "SAE-A2", "km_id": "KM-A2"},
                     {"sae_id": "SAE-B1", "km_id": "IWN-A"}, {"sae_id": "SAE-B2", "km_id": "IWN-A"},
                     {"sae_id": "SAE-B3", "km_id": "IWN-A"}, {"sae_id": "SAE-B4", "km_id": "IWN-A"},
                     {"sae_id": "SAE-B5", "km_id": "IWN-A"}],
}
# QKDN-A's share of QKDN-B's key rate at IWN-B (200,000 bit/s of LBI2): 1,000 bit/s, so a budget
# of 10,000 bits per 10 s window (docs/cxi.md "Key rate share").
SHARE_A = 0.005
TOPO_B = {
    "name": "qkdn-b", "qkdn_id": "QKDN-B",
    "kms": [{"km_id": "IWN-B"}, {"km_id": "KM-B2"}, {"km_id": "KM-B3"}],
    "links": [{"link_id": "LBI2", "a": "IWN-B", "b": "KM-B2", "key_rate_bps": 200000},
              {"link_id": "LB23", "a": "KM-B2", "b": "KM-B3", "key_rate_bps": 200000}],
    "applications": [{"sae_id": "SAE-B1", "km_id": "IWN-B"}, {"sae_id": "SAE-B2", "km_id": "KM-B2"},
                     {"sae_id": "SAE-B4", "km_id": "KM-B3"}, {"sae_id": "SAE-B5", "km_id": "KM-B3"}],
    # Controller B's policy for QKDN-A: which SAEs its keys may reach (not SAE-B5), its share.
    "peers": [{"qkdn_id": "QKDN-A", "endpoint": "", "identity": "ctl-a",
               "policy": {"reachable_saes": ["SAE-B1", "SAE-B2", "SAE-B4"],
                          "key_rate_share": SHARE_A}}],
}


def pair_key_id(master, slave):
    """An ETSI key_ID naming the SAE pair (southbound/agent/sae_key_id.hpp)."""
    p = bytearray(os.urandom(8))
    p[6] = (p[6] & 0x0F) | 0x40
    m = bytearray(hashlib.sha256(b"qkdn-etsi-master" + bytes(p) + master.encode()).digest()[:4])
    m[0] = (m[0] & 0x3F) | 0x80
    s = hashlib.sha256(b"qkdn-etsi-slave" + bytes(p) + slave.encode()).digest()[:4]
    return str(uuid.UUID(bytes=bytes(p) + bytes(m) + s))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def enc_keys(net, master, slave, number, size):
    s = net.etsi(master)
    return s.post(f"{s.base}/api/v1/keys/{slave}/enc_keys", json={"number": number, "size": size},
                  timeout=TIMEOUT)


def dec_keys(net, slave, master, ids):
    s = net.etsi(slave)
    return s.post(f"{s.base}/api/v1/keys/{master}/dec_keys",
                  json={"key_IDs": [{"key_ID": k} for k in ids]}, timeout=TIMEOUT)


def keys_of(r):
    assert r.status_code == 200, (r.status_code, r.text)
    return {k["key_ID"]: base64.b64decode(k["key"], validate=True) for k in r.json()["keys"]}


def km_state(net, km_id):
    return next(k for k in net.admin_state()["kms"] if k["km_id"] == km_id)


def kxi_call(port, ca, cert, key, path, body, method="POST"):
    """One HTTPS call to a Kxi' listener with a client certificate (None: no certificate).
    Returns (status, message_data) or raises ssl.SSLError when the handshake is refused. The
    KM certificates name no host: the chain is verified, the host name is not."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=TIMEOUT)
    try:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def main():
    with Processes("iwn-b") as ps_b, Processes("iwn-a") as ps_a:
        topo_a = write_json(os.path.join(ps_a.dir, "qkdn-a.json"), TOPO_A)
        topo_b = write_json(os.path.join(ps_b.dir, "qkdn-b.json"), TOPO_B)
        certs_a = os.path.join(ps_a.dir, "certs")
        certs_b = os.path.join(ps_b.dir, "certs")
        make_certs(certs_a, topo_a)  # two providers, two CAs
        make_certs(certs_b, topo_b)

        kxi_port_file = os.path.join(ps_b.dir, "kxi.port")
        cfg_b = write_json(os.path.join(ps_b.dir, "iwn.json"), {"pairs": [{
            "km_id": "IWN-B", "partner_km_id": "IWN-A", "partner_qkdn_id": "QKDN-A",
            "partner_ca": f"{certs_a}/ca.pem", "listen": "127.0.0.1:0"}]})
        net_b = start_network(ps_b, topo_b, agent_args=[
            "--iwn-config", cfg_b, "--kxi-port-file", kxi_port_file])
        kxi_port = read_port_file(kxi_port_file, net_b.agent)
        cfg_a = write_json(os.path.join(ps_a.dir, "iwn.json"), {"pairs": [{
            "km_id": "IWN-A", "partner_km_id": "IWN-B", "partner_qkdn_id": "QKDN-B",
            "partner_ca": f"{certs_b}/ca.pem", "partner_endpoint": f"127.0.0.1:{kxi_port}",
            "remote_saes": ["SAE-B1", "SAE-B2", "SAE-B3", "SAE-B4", "SAE-B5"]}]})
        policy_a = write_json(os.path.join(ps_a.dir, "iwn-policy.json"), {"pairs": [{
            "km_id": "IWN-A", "partner_km_id": "IWN-B", "partner_qkdn_id": "QKDN-B",
            "allowed_saes": ["SAE-B1", "SAE-B2", "SAE-B4", "SAE-B5"],
            "max_keys_per_transfer": 64}]})
        net_a = start_network(ps_a, topo_a, agent_args=["--iwn-config", cfg_a],
                              controller_args=["--iwn-policy", policy_a])
        log(f"QKDN-A and QKDN-B up, IWN-B's Kxi' listener on {kxi_port}")

        # SAE-B1 is not served by QKDN-A's agent (it only appears at IWN-A for routing).
        etsi_error(net_a.etsi("SAE-B1").get(
            f"{net_a.etsi_base}/api/v1/keys/SAE-A1/status", timeout=TIMEOUT), 401)

        # Links are up before their first status report fills the pools; until then no route.
        wait_for(lambda: net_a.api.get("/api/v1/routes", src="KM-A1", dst="IWN-A")["items"],
                 30, 0.1, "a route KM-A1 -> IWN-A")

        # 1. A relay through controller A to IWN-A, transferred to IWN-B: identical keys.
        r = enc_keys(net_a, "SAE-A1", "SAE-B1", 3, 256)
        a_keys = keys_of(r)
        assert len(a_keys) == 3
        b_keys = keys_of(dec_keys(net_b, "SAE-B1", "SAE-A1", list(a_keys)))
        assert b_keys == a_keys, "SAE-B1 got other keys than SAE-A1"
        # Handed out once at QKDN-B as for any ETSI key.
        etsi_error(dec_keys(net_b, "SAE-B1", "SAE-A1", list(a_keys)), 400)
        log("relay + Kxi' transfer: SAE-A1 and SAE-B1 hold the same 3 keys")

        # 2. The adjacent supply path (KM-A2 -- IWN-A), 512-bit keys: identical too.
        a2 = keys_of(enc_keys(net_a, "SAE-A2", "SAE-B1", 2, 512))
        assert all(len(v) == 64 for v in a2.values())
        assert keys_of(dec_keys(net_b, "SAE-B1", "SAE-A2", list(a2))) == a2
        log("supply + Kxi' transfer: SAE-A2 and SAE-B1 hold the same 2 keys")

        iwn_a = km_state(net_a, "IWN-A")
        assert iwn_a["iwn"]["sent_ok"] == 2 and iwn_a["iwn"]["keys_sent"] == 5, iwn_a["iwn"]
        assert iwn_a["supplied_keys"] == 0, "IWN-A filed keys it transferred"
        iwn_b = km_state(net_b, "IWN-B")
        assert iwn_b["iwn"]["received_ok"] == 2 and iwn_b["iwn"]["keys_received"] == 5, iwn_b

        # Both controllers recorded the transfers (metadata only), controller A decided them. The
        # reports travel on the IWN KMs' own Ck connections: polled with a bound.
        def recorded():
            m_a, m_b = api_text(net_a.api, "/metrics"), api_text(net_b.api, "/metrics")
            return (metric_value(m_a, "qkdn_interworking_transfer_decisions_total",
                                 decision="accepted") == 2
                    and metric_value(m_a, "qkdn_interworking_transfers_total", role="sender",
                                     result="ok") == 2
                    and metric_value(m_a, "qkdn_interworking_transfer_keys_total",
                                     role="sender") == 5
                    and metric_value(m_b, "qkdn_interworking_transfers_total", role="receiver",
                                     result="ok") == 2
                    and metric_value(m_b, "qkdn_interworking_transfer_keys_total",
                                     role="receiver") == 5)
        wait_for(recorded, 10, 0.05, "both controllers' transfer records")
        audit = [a for a in net_a.api.get("/api/v1/audit")["items"]
                 if a["action"] == "iwn_transfer"]
        assert len(audit) == 2 and all(a["outcome"] == "OK" for a in audit), audit
        assert all("decided" in a["detail"] for a in audit), audit
        assert not any(k in json.dumps(audit) for k in map(str, a_keys)), "key ID in audit?"

        # 3a. SAE-B3 is not allowed by controller A's policy: refused before anything moves.
        # unknown_application maps to ETSI 400 at the source KM, as for any unreachable SAE.
        r = enc_keys(net_a, "SAE-A1", "SAE-B3", 1, 256)
        etsi_error(r, 400)
        assert "may not be reached" in r.text, r.text
        m_a = api_text(net_a.api, "/metrics")
        assert metric_value(m_a, "qkdn_interworking_transfer_decisions_total",
                            decision="refused") == 1
        assert km_state(net_b, "IWN-B")["iwn"]["received_ok"] == 2  # nothing reached IWN-B
        assert km_state(net_a, "IWN-A")["supplied_keys"] == 0
        log("transfer to SAE-B3 refused by controller A's policy")

        # 3. The last leg inside QKDN-B: SAE-B2 is one hop behind IWN-B, SAE-B4 two (KM-B3).
        # Controller B decides (peer policy, key rate share) and relays the keys received with
        # its ordinary reservations; each SAE fetches identical keys from its own KM.
        wait_for(lambda: net_b.api.get("/api/v1/routes", src="IWN-B", dst="KM-B3")["items"],
                 30, 0.1, "a route IWN-B -> KM-B3")
        b2 = keys_of(enc_keys(net_a, "SAE-A1", "SAE-B2", 1, 256))
        assert keys_of(dec_keys(net_b, "SAE-B2", "SAE-A1", list(b2))) == b2
        b4 = keys_of(enc_keys(net_a, "SAE-A1", "SAE-B4", 3, 256))
        assert len(b4) == 3
        assert keys_of(dec_keys(net_b, "SAE-B4", "SAE-A1", list(b4))) == b4
        b4s = keys_of(enc_keys(net_a, "SAE-A2", "SAE-B4", 2, 512))  # adjacent supply in A
        assert all(len(v) == 64 for v in b4s.values())
        assert keys_of(dec_keys(net_b, "SAE-B4", "SAE-A2", list(b4s))) == b4s
        for km in ("IWN-B", "KM-B2", "KM-B3"):  # nothing left over anywhere in QKDN-B
            assert km_state(net_b, km)["supplied_keys"] == 0, km
        log("last leg: SAE-B2 (1 hop) and SAE-B4 (2 hops) hold the keys of SAE-A1 / SAE-A2")

        # 3b. SAE-B5 is declared in QKDN-B but not reachable from QKDN-A by controller B's peer
        # policy: IWN-B refuses, SAE-A1 gets a loud error naming why (400 "unknown SAE", as for
        # any SAE its KM cannot reach), nothing delivered.
        r = enc_keys(net_a, "SAE-A1", "SAE-B5", 1, 256)
        etsi_error(r, 400)
        assert "unknown target SAE" in r.text and "may not be reached from QKDN-A" in r.text, r.text
        assert km_state(net_b, "KM-B3")["supplied_keys"] == 0
        log("last leg to SAE-B5 refused by controller B's peer policy")

        # 3c. Key rate share: more than QKDN-A's budget in one transfer is refused outright; two
        # transfers of 30 keys in a row exceed it (the second is refused until it refills).
        r = enc_keys(net_a, "SAE-A1", "SAE-B4", 40, 256)  # 10,240 bits > 10,000
        etsi_error(r, 503)
        assert "key rate share of QKDN-A exceeded" in r.text, r.text
        keys_of(enc_keys(net_a, "SAE-A1", "SAE-B4", 30, 256))
        r = enc_keys(net_a, "SAE-A1", "SAE-B4", 30, 256)
        etsi_error(r, 503)
        assert "key rate share of QKDN-A used up" in r.text, r.text
        m_b = api_text(net_b.api, "/metrics")
        assert metric_value(m_b, "qkdn_interworking_key_share_refusals_total", peer="QKDN-A") == 2
        assert metric_value(m_b, "qkdn_interworking_last_legs_total", decision="accepted") == 4
        assert metric_value(m_b, "qkdn_interworking_last_legs_total", decision="refused") == 3
        log("key rate share of QKDN-A enforced by controller B")

        assert km_state(net_b, "IWN-B")["iwn"]["received_refused"] == 3
        assert km_state(net_b, "IWN-B")["supplied_keys"] == 0
        assert km_state(net_a, "IWN-A")["iwn"]["sent_failed"] == 4  # SAE-B3, SAE-B5, share x2
        assert km_state(net_a, "IWN-A")["iwn"]["sent_ok"] == 6
        assert km_state(net_a, "IWN-A")["supplied_keys"] == 0
        wait_for(lambda: metric_value(api_text(net_a.api, "/metrics"),
                                      "qkdn_interworking_transfers_total", role="sender",
                                      result="failed") == 3, 10, 0.05, "controller A's record")
        wait_for(lambda: metric_value(api_text(net_b.api, "/metrics"),
                                      "qkdn_interworking_transfers_total", role="receiver",
                                      result="failed") == 3, 10, 0.05, "controller B's record")

        # 4. IWN-B's listener itself: only IWN-A's certificate, only well-formed transfers.
        ca_b = f"{certs_b}/ca.pem"
        iwn_a_cert = (f"{certs_a}/km/IWN-A.pem", f"{certs_a}/km/IWN-A.key")
        path = "/api/v1/keys/SAE-A9/SAE-B1/ext_keys"
        kid = str(uuid.uuid4())
        good = {"keys": [{"key_id": kid, "value": base64.b64encode(bytes(range(32))).decode()}],
                "extension_optional": [{"transfer_id": str(uuid.uuid4())}]}
        for cert, who in ((f"{certs_a}/km/KM-A1", "another KM of QKDN-A"),
                          (f"{certs_a}/sae/SAE-A1", "an SAE of QKDN-A")):
            status, body = kxi_call(kxi_port, ca_b, cert + ".pem", cert + ".key", path, good)
            assert status == 401, (who, status, body)
            assert "message" in body, body
        try:
            kxi_call(kxi_port, ca_b, f"{certs_b}/km/KM-B2.pem", f"{certs_b}/km/KM-B2.key", path,
                     good)
            raise AssertionError("a certificate of the wrong CA passed the handshake")
        except (ssl.SSLError, ConnectionError, http.client.HTTPException):
            pass
        bad = [
            ({"keys": [{"key_id": kid, "value": "not base64!"}]}, 400, "keys[0].value"),
            ({"keys": [good["keys"][0], good["keys"][0]]}, 400, "keys[1].key_id"),
            ({"keys": []}, 400, "keys"),
            ("{", 400, "body"),
        ]
        for body, status, field in bad:
            got, answer = kxi_call(kxi_port, ca_b, *iwn_a_cert, path, body)
            assert got == status, (body, got, answer)
            assert any(field in d for d in answer.get("details", [])), (body, answer)
        # A target behind another KM: key_IDs must name the SAE pair; a target the peer policy
        # does not allow is refused by controller B.
        got, answer = kxi_call(kxi_port, ca_b, *iwn_a_cert, "/api/v1/keys/SAE-A9/SAE-B2/ext_keys",
                               good)
        assert got == 400 and answer["message"] == "key_id not relayable", (got, answer)
        named = {"keys": [{"key_id": pair_key_id("SAE-A9", "SAE-B5"),
                           "value": base64.b64encode(bytes(32)).decode()}]}
        got, answer = kxi_call(kxi_port, ca_b, *iwn_a_cert, "/api/v1/keys/SAE-A9/SAE-B5/ext_keys",
                               named)
        assert got == 400 and answer["message"] == "unknown target SAE", (got, answer)
        assert "peer policy" in json.dumps(answer), answer
        got, answer = kxi_call(kxi_port, ca_b, *iwn_a_cert, path, good, method="GET")
        assert got == 405, (got, answer)
        got, answer = kxi_call(kxi_port, ca_b, *iwn_a_cert, path, good)
        assert got == 200 and answer["message"] == "OK", (got, answer)
        got, answer = kxi_call(kxi_port, ca_b, *iwn_a_cert, path, good)
        assert got == 409, (got, answer)  # the same key twice
        fetched = keys_of(dec_keys(net_b, "SAE-B1", "SAE-A9", [kid]))
        assert fetched == {kid: bytes(range(32))}
        log("IWN-B's Kxi' listener: wrong certificates and bad transfers refused")

        # 5. KM-B' down: the transfer fails loudly, SAE-A1 gets nothing, IWN-A holds nothing.
        ps_b.stop(net_b.agent)
        r = enc_keys(net_a, "SAE-A1", "SAE-B1", 2, 256)
        etsi_error(r, 503)
        assert "kxi transfer to IWN-B" in r.text, r.text
        state = km_state(net_a, "IWN-A")
        assert state["iwn"]["sent_failed"] == 5, state["iwn"]
        assert state["supplied_keys"] == 0
        assert all(k["supplied_keys"] == 0 for k in net_a.admin_state()["kms"])
        wait_for(lambda: metric_value(api_text(net_a.api, "/metrics"),
                                      "qkdn_interworking_transfers_total", role="sender",
                                      result="failed") == 4, 10, 0.05, "controller A's record")
        log("IWN-B down: SAE-A1 answered 503, nothing filed in QKDN-A")
    print("PASS")


if __name__ == "__main__":
    main()
