#!/usr/bin/env python3
"""Kxi-1 key relay through gateway KMs (GWN) between two QKDNs (issue 16, Y.3818 9.1 1,
docs/cxi.md 5.6), with real processes: two controllers (Cxi over mutual TLS), each with its own
agent process hosting its KMs; the gateway KMs GWA1 (QKDN-A) and GWB1 (QKDN-B) share the
emulated inter-QKDN link X1, a KMA link between the two agent processes.

  QKDN-A: KMA1 --LA1-- GWA1 ==X1== GWB1 --LB1-- KMB1 :QKDN-B
          SAE-A1 at KMA1                        SAE-B1, SAE-B2 at KMB1 (B offers A SAE-B1 only)

Checked: SAE-A1 asks its KM (ETSI 014 enc_keys) for keys shared with SAE-B1; SAE-B1 fetches
them with dec_keys from its own KM: identical keys. Each controller reserved on its own KMs only
(the relay records name each side's part; the agents' reservations and allocations drain); the
relay shows in both controllers' API and metrics. SAE-B2, which B's policy does not offer, is
refused with 400 and a message. Controller B killed (SIGKILL) while relays run: SAE-A1 gets 503
with a message for the relays that could not finish; both agents' reserved and allocated keys
drain within a bounded wait; every relay record at A is in exactly one terminal state."""
import base64
import json
import os
import sys
import threading
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
from qkdn_e2e import (Api, Processes, binary, log, make_token, metric_value,  # noqa: E402
                      read_port_file, wait_for, api_text)
from test_interworking_cxi import certs_for, start_controller, peer  # noqa: E402

TIMEOUT = 20

A = {"name": "qkdn-a", "qkdn_id": "QKDN-A",
     "kms": [{"km_id": "KMA1"}, {"km_id": "GWA1", "gateway": True}],
     "links": [{"link_id": "LA1", "a": "KMA1", "b": "GWA1", "key_rate_bps": 200000}],
     "applications": [{"sae_id": "SAE-A1", "km_id": "KMA1"}],
     "inter_qkdn_links": [{"link_id": "X1", "km_id": "GWA1", "peer_qkdn_id": "QKDN-B",
                           "peer_km_id": "GWB1", "key_rate_bps": 200000}],
     "peers": [{"qkdn_id": "QKDN-B", "identity": "ctl-b",
                "policy": {"reachable_saes": ["SAE-A1"], "key_rate_share": 0.5}}]}
B = {"name": "qkdn-b", "qkdn_id": "QKDN-B",
     "kms": [{"km_id": "KMB1"}, {"km_id": "GWB1", "gateway": True}],
     "links": [{"link_id": "LB1", "a": "KMB1", "b": "GWB1", "key_rate_bps": 200000}],
     "applications": [{"sae_id": "SAE-B1", "km_id": "KMB1"}, {"sae_id": "SAE-B2", "km_id": "KMB1"}],
     "inter_qkdn_links": [{"link_id": "X1", "km_id": "GWB1", "peer_qkdn_id": "QKDN-A",
                           "peer_km_id": "GWA1", "key_rate_bps": 200000}],
     "peers": [{"qkdn_id": "QKDN-A", "identity": "ctl-a", "endpoint": "127.0.0.1:PORT",
                "policy": {"reachable_saes": ["SAE-B1"], "key_rate_share": 0.5}}]}


class Agent:
    def __init__(self, ps, name, topo_path, certs, ck_port, extra=()):
        agent = binary("QKDN_AGENT", "southbound/qkdn-agent")
        admin = os.path.join(ps.dir, f"{name}.admin.port")
        etsi = os.path.join(ps.dir, f"{name}.etsi.port")
        self.proc = ps.start(f"agent-{name}", [
            agent, "--topology", topo_path, "--all", "--controller", f"127.0.0.1:{ck_port}",
            "--controller-id", f"ctl-{name}",
            "--tls-ca", f"{certs}/ca.pem", "--tls-cert-dir", f"{certs}/km",
            "--admin-listen", "127.0.0.1:0", "--admin-port-file", admin, "--etsi-insecure",
            "--etsi-listen", "127.0.0.1:0", "--etsi-port-file", etsi, *extra])
        self.admin = read_port_file(admin, self.proc)
        self.etsi_base = f"http://127.0.0.1:{read_port_file(etsi, self.proc)}"

    def state(self):
        r = requests.get(f"http://127.0.0.1:{self.admin}/admin/state", timeout=10)
        r.raise_for_status()
        return r.json()

    def km(self, km_id):
        return next(k for k in self.state()["kms"] if k["km_id"] == km_id)

    def link(self, km_id, link_id):
        return next(l for l in self.km(km_id)["links"] if l["link_id"] == link_id)

    def held(self):
        """Keys reserved or allocated at any link end of this agent."""
        return sum(l["keys_reserved"] + l["keys_allocated"]
                   for k in self.state()["kms"] for l in k["links"])

    def enc_keys(self, master, slave, number=1, size=256):
        return requests.post(f"{self.etsi_base}/api/v1/keys/{slave}/enc_keys",
                             headers={"X-SAE-ID": master},
                             json={"number": number, "size": size}, timeout=TIMEOUT)

    def dec_keys(self, slave, master, ids):
        return requests.post(f"{self.etsi_base}/api/v1/keys/{master}/dec_keys",
                             headers={"X-SAE-ID": slave},
                             json={"key_IDs": [{"key_ID": k} for k in ids]}, timeout=TIMEOUT)


def keys_of(r):
    assert r.status_code == 200, (r.status_code, r.text)
    return {k["key_ID"]: base64.b64decode(k["key"], validate=True) for k in r.json()["keys"]}


def relays(api, **query):
    return api.items("/api/v1/interworking/relays", **query)


def main():
    with Processes("interworking_gwn") as ps:
        tokens = os.path.join(ps.dir, "tokens")
        token = make_token(tokens, "e2e", "viewer")
        a_path = os.path.join(ps.dir, "a.json")
        with open(a_path, "w") as f:
            json.dump(A, f)
        certs_a = certs_for(ps, "a", a_path, "ctl-a")
        ctl_a, ports_a = start_controller(ps, "a", a_path, certs_a, "ctl-a", tokens)
        b_path = os.path.join(ps.dir, "b.json")
        with open(b_path, "w") as f:
            json.dump(json.loads(json.dumps(B).replace("PORT", str(ports_a["cxi"]))), f)
        certs_b = certs_for(ps, "b", b_path, "ctl-b", ca_from=certs_a)
        ctl_b, ports_b = start_controller(ps, "b", b_path, certs_b, "ctl-b", tokens)
        api_a, api_b = Api(ports_a["api"], token), Api(ports_b["api"], token)
        agent_b = Agent(ps, "b", b_path, certs_b, ports_b["ck"])
        gwb1 = agent_b.km("GWB1")["kma_endpoint"]
        # GWB1 registers with controller B: A's agent learns its KMA endpoint from --kma-peer.
        agent_a = Agent(ps, "a", a_path, certs_a, ports_a["ck"], extra=["--kma-peer",
                                                                        f"GWB1={gwb1}"])

        def ready():
            pa, pb = peer(api_a, "QKDN-B"), peer(api_b, "QKDN-A")
            return (pa["live"]["state"] == "up" and pb["live"]["state"] == "up"
                    and pa["live"]["inter_qkdn_links"].get("X1") == "up"
                    and pb["live"]["inter_qkdn_links"].get("X1") == "up"
                    and pa["live"]["reachable_saes"] == 1
                    and agent_a.link("GWA1", "X1")["state"] == "up"
                    and agent_b.link("GWB1", "X1")["state"] == "up"
                    and agent_a.link("KMA1", "LA1")["state"] == "up"
                    and agent_b.link("KMB1", "LB1")["state"] == "up")
        wait_for(ready, 30, 0.1, "Cxi up, X1 up at both gateways")
        # Each controller routes its own side: its links must be up in its view too.
        wait_for(lambda: all(l["oper_state"] == "up" for api in (api_a, api_b)
                             for l in api.items("/api/v1/links")), 30, 0.1, "links up")
        # The emulated X1 is one link shared by the two agent processes.
        wait_for(lambda: agent_a.link("GWA1", "X1")["keys_available"] >= 64
                 and agent_b.link("GWB1", "X1")["keys_available"] >= 64, 30, 0.1, "X1 keys")

        # 1. Identical keys at SAE-A1 (QKDN-A) and SAE-B1 (QKDN-B).
        for number, size in ((2, 256), (3, 512)):
            a_keys = keys_of(agent_a.enc_keys("SAE-A1", "SAE-B1", number, size))
            assert len(a_keys) == number and all(len(v) == size // 8 for v in a_keys.values())
            b_keys = keys_of(agent_b.dec_keys("SAE-B1", "SAE-A1", list(a_keys)))
            assert b_keys == a_keys, "keys differ between the QKDNs"
        log("identical keys at SAE-A1 and SAE-B1 across QKDN-A/QKDN-B")

        # 2. Both controllers show the relays, each with its own part (the SAE may have its keys
        # a moment before the controllers hear the end).
        wait_for(lambda: len(relays(api_a, state="relayed")) == 2
                 and len(relays(api_b, state="relayed")) == 2, 10, 0.1, "relay records")
        ra = relays(api_a)
        assert len(ra) == 2 and all(r["state"] == "relayed" and r["role"] == "source"
                                    and r["peer_qkdn_id"] == "QKDN-B" and r["link_id"] == "X1"
                                    and r["src_km"] == "KMA1" and r["dst_km"] == "KMB1"
                                    for r in ra), ra
        rb = relays(api_b)
        assert {r["relay_id"] for r in rb} == {r["relay_id"] for r in ra}, (ra, rb)
        assert all(r["role"] == "destination" and r["src_km"] == "GWB1" for r in rb), rb
        assert metric_value(api_text(api_a, "/metrics"), "qkdn_interworking_relays_total",
                            role="source", result="relayed") == 2
        assert metric_value(api_text(api_b, "/metrics"), "qkdn_interworking_relays_total",
                            role="destination", result="relayed") == 2
        wait_for(lambda: agent_a.held() == 0 and agent_b.held() == 0, 15, 0.1,
                 "nothing reserved after relays")

        # 3. B's policy does not offer SAE-B2: a clear 400, nothing reserved.
        r = agent_a.enc_keys("SAE-A1", "SAE-B2")
        assert r.status_code == 400 and "SAE-B2" in r.text, (r.status_code, r.text)
        assert agent_a.held() == 0 and agent_b.held() == 0

        # 4. Controller B killed (SIGKILL) while relays run.
        results = []
        stop = threading.Event()

        def client():
            while not stop.is_set():
                try:
                    resp = agent_a.enc_keys("SAE-A1", "SAE-B1", 4)
                    results.append((resp.status_code, resp.text))
                except requests.RequestException as e:
                    results.append((0, str(e)))
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(results) >= 8, 30, 0.02, "relays running")
        ps.stop(ctl_b, sig=9)
        t_kill = time.monotonic()
        wait_for(lambda: peer(api_a, "QKDN-B")["live"]["state"] == "down", 10, 0.02, "B down")
        time.sleep(0.5)  # let the clients meet the dead peer (not an assertion's wait)
        stop.set()
        for t in threads:
            t.join(TIMEOUT + 5)
        codes = {c for c, _ in results}
        assert codes <= {200, 503}, results[-5:]
        failed = [text for c, text in results if c == 503]
        assert failed and all("QKDN-B" in t or "down" in t for t in failed), failed[:3]
        log(f"{len(results)} requests around the kill: {len(results) - len(failed)} ok, "
            f"{len(failed)} 503")
        # Nothing stays reserved on either side (A releases at once; B's KMs release what its
        # dead controller held by their own leases).
        wait_for(lambda: agent_a.held() == 0, 30, 0.1, "QKDN-A's reservations drained")
        wait_for(lambda: agent_b.held() == 0, 120, 0.2, "QKDN-B's reservations drained")
        log(f"both domains drained {time.monotonic() - t_kill:.1f} s after the kill")
        ra = relays(api_a)
        assert all(r["state"] in ("relayed", "failed") for r in ra), \
            [r for r in ra if r["state"] not in ("relayed", "failed")]
        ids = [r["relay_id"] for r in ra]
        assert len(ids) == len(set(ids)), "a relay in two records"
        m = api_text(api_a, "/metrics")
        ok = metric_value(m, "qkdn_interworking_relays_total", role="source", result="relayed")
        bad = metric_value(m, "qkdn_interworking_relays_total", role="source", result="failed")
        assert ok + bad == len(ra), (ok, bad, len(ra))
        # A new request while B is down: 503 naming the reason.
        r = agent_a.enc_keys("SAE-A1", "SAE-B1")
        assert r.status_code == 503 and "down" in r.text, (r.status_code, r.text)
        log("interworking GWN relay: ok")


if __name__ == "__main__":
    main()
