#!/usr/bin/env python3
"""Interworking between two QKDNs over Cxi (issue 16, docs/cxi.md), with real processes: two
controllers, each with its own agent hosting its KMs (gateway KMs included), certificates from
scripts/dev-ca.sh under one CA. Checks: the peering comes up with each controller's identity
bound to its certificate; each side sees the other's SAEs that its policy allows and the
inter-QKDN link up once both gateway KMs are connected; qkdnctl peer list and /metrics show it;
a controller killed with SIGKILL makes its peer mark it down within the bound, with a
peer_unreachable alarm and the link down; its restart clears the alarm."""
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from qkdn_e2e import (ROOT, Api, Cli, Processes, binary, log, make_token, metric_value,  # noqa
                      read_port_file, wait_for, api_text)

HEARTBEAT_MS = 500

A = {"name": "qkdn-a", "qkdn_id": "QKDN-A",
     "kms": [{"km_id": "KMA1"}, {"km_id": "GWA1", "gateway": True}],
     "links": [{"link_id": "LA1", "a": "KMA1", "b": "GWA1", "key_rate_bps": 20000}],
     "applications": [{"sae_id": "SAE-A1", "km_id": "KMA1"}, {"sae_id": "SAE-A2", "km_id": "KMA1"}],
     "inter_qkdn_links": [{"link_id": "X1", "km_id": "GWA1", "peer_qkdn_id": "QKDN-B",
                           "peer_km_id": "GWB1", "key_rate_bps": 20000}],
     "peers": [{"qkdn_id": "QKDN-B", "identity": "ctl-b",
                "policy": {"reachable_saes": ["SAE-A1"], "key_rate_share": 0.5}}]}
B = {"name": "qkdn-b", "qkdn_id": "QKDN-B",
     "kms": [{"km_id": "KMB1"}, {"km_id": "GWB1", "gateway": True}],
     "links": [{"link_id": "LB1", "a": "KMB1", "b": "GWB1", "key_rate_bps": 20000}],
     "applications": [{"sae_id": "SAE-B1", "km_id": "KMB1"}],
     "inter_qkdn_links": [{"link_id": "X1", "km_id": "GWB1", "peer_qkdn_id": "QKDN-A",
                           "peer_km_id": "GWA1", "key_rate_bps": 20000}],
     "peers": [{"qkdn_id": "QKDN-A", "identity": "ctl-a", "endpoint": "127.0.0.1:PORT",
                "policy": {"reachable_saes": ["SAE-B1"], "key_rate_share": 0.5}}]}


def certs_for(ps, name, topo_path, controller_id, ca_from=None):
    dest = os.path.join(ps.dir, f"certs-{name}")
    os.makedirs(dest, exist_ok=True)
    if ca_from:
        for f in ("ca.pem", "ca.key"):
            shutil.copy(os.path.join(ca_from, f), dest)
    subprocess.run([os.path.join(ROOT, "scripts", "dev-ca.sh"), "--topology", topo_path,
                    "--controller-id", controller_id, dest], check=True, stdout=subprocess.DEVNULL)
    return dest


def start_controller(ps, name, topo_path, certs, controller_id, tokens, cxi_port=0):
    controller = binary("QKDN_CONTROLLER", "controller/qkdn-controller")
    files = {k: os.path.join(ps.dir, f"{name}.{k}.port") for k in ("ck", "api", "cxi")}
    for f in files.values():
        if os.path.exists(f):
            os.remove(f)
    proc = ps.start(f"controller-{name}", [
        controller, "--topology", topo_path, "--controller-id", controller_id,
        "--ck-listen", "127.0.0.1:0", "--port-file", files["ck"],
        "--api-listen", "127.0.0.1:0", "--api-port-file", files["api"], "--api-tokens", tokens,
        "--tls-ca", f"{certs}/ca.pem", "--tls-cert", f"{certs}/controller.pem",
        "--tls-key", f"{certs}/controller.key",
        "--cxi-listen", f"127.0.0.1:{cxi_port}", "--cxi-port-file", files["cxi"],
        "--cxi-heartbeat-ms", str(HEARTBEAT_MS), "--cxi-summary-ms", "1000"])
    ports = {k: read_port_file(f, proc) for k, f in files.items()}
    return proc, ports


def start_agent(ps, name, topo_path, certs, ck_port):
    agent = binary("QKDN_AGENT", "southbound/qkdn-agent")
    admin = os.path.join(ps.dir, f"{name}.admin.port")
    proc = ps.start(f"agent-{name}", [
        agent, "--topology", topo_path, "--all", "--controller", f"127.0.0.1:{ck_port}",
        "--controller-id", f"ctl-{name}",
        "--tls-ca", f"{certs}/ca.pem", "--tls-cert-dir", f"{certs}/km",
        "--admin-listen", "127.0.0.1:0", "--admin-port-file", admin, "--etsi-insecure",
        "--etsi-listen", "127.0.0.1:0"])
    read_port_file(admin, proc)
    return proc


def peer(api, qkdn_id):
    return api.get(f"/api/v1/peers/{qkdn_id}")


def main():
    with Processes("interworking_cxi") as ps:
        tokens = os.path.join(ps.dir, "tokens")
        token = make_token(tokens, "e2e", "viewer")
        admin_token = make_token(tokens, "admin", "admin")
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
        start_agent(ps, "a", a_path, certs_a, ports_a["ck"])
        start_agent(ps, "b", b_path, certs_b, ports_b["ck"])

        # Peering, reachability within policy, the inter-QKDN link up on both sides.
        def both_up():
            pa, pb = peer(api_a, "QKDN-B"), peer(api_b, "QKDN-A")
            return (pa["live"]["state"] == "up" and pb["live"]["state"] == "up"
                    and pa["live"]["inter_qkdn_links"].get("X1") == "up"
                    and pb["live"]["inter_qkdn_links"].get("X1") == "up")
        wait_for(both_up, 30, 0.1, "Cxi up and X1 up on both sides")
        pa, pb = peer(api_a, "QKDN-B"), peer(api_b, "QKDN-A")
        assert pa["identity"] == "ctl-b" and pa["policy"]["key_rate_share"] == 0.5, pa
        # B allows A one SAE (SAE-B1); A allows B one (SAE-A1, not SAE-A2).
        assert pa["live"]["reachable_saes"] == 1, pa
        assert pb["live"]["reachable_saes"] == 1, pb
        links = api_a.items("/api/v1/inter-qkdn-links")
        assert [(l["link_id"], l["km_id"], l["peer_km_id"], l["state"]) for l in links] == \
            [("X1", "GWA1", "GWB1", "up")], links
        listing = api_a.get("/api/v1/peers")
        assert listing["qkdn_id"] == "QKDN-A", listing

        token_file = os.path.join(ps.dir, "token")
        with open(token_file, "w") as f:
            f.write(token + "\n")
        cli = Cli(binary("QKDN_CTL", "northbound/qkdnctl"), api_a.base, token_file)
        code, out, err = cli.run("peer", "list")
        assert code == 0, err
        row = [line.split() for line in out.splitlines() if line.startswith("QKDN-B")]
        assert row and row[0][1] == "ctl-b" and row[0][2] == "up", out
        # Mxi: each side shows the last summary the other sent, with its age; the summary is
        # the peer's view (B's links with A: X1, usable).
        def summary_of(api, qkdn):
            return peer(api, qkdn)["live"]["summary"]
        wait_for(lambda: summary_of(api_a, "QKDN-B") and summary_of(api_a, "QKDN-B")["seq"] >= 2,
                 10, 0.1, "a second Mxi summary from B")
        sa = summary_of(api_a, "QKDN-B")
        assert sa["period_ms"] == 1000 and 0 <= sa["age_ms"] <= 5000, sa
        assert sa["performance"]["links_total"] == 1 and sa["performance"]["links_usable"] == 1, sa
        assert set(sa) == {"seq", "period_ms", "performance", "accounting", "security",
                           "received_ms", "age_ms"}, sa
        wait_for(lambda: summary_of(api_b, "QKDN-A"), 10, 0.1, "a Mxi summary from A")
        code, out, err = cli.run("peer", "show", "QKDN-B")
        assert code == 0 and "summary" in out and "route_requests_answered" in out, (out, err)
        metrics = api_text(api_a, "/metrics")
        assert metric_value(metrics, "qkdn_cxi_events_total", event="summary_received") >= 2
        assert metric_value(metrics, "qkdn_cxi_events_total", event="summary_sent") >= 1
        assert metric_value(metrics, "qkdn_cxi_events_total", event="summary_refused") == 0
        assert metric_value(metrics, "qkdn_cxi_peers_up") == 1, metrics
        assert metric_value(metrics, "qkdn_cxi_events_total", event="session_opened") >= 1

        # A peer added through the API reaches the running Cxi node (live state "down", not
        # "unknown"), and a policy without SAEs makes nothing reachable for it.
        admin_a = Api(ports_a["api"], admin_token)
        r = admin_a.session.post(admin_a.base + "/api/v1/peers", timeout=10, json={
            "qkdn_id": "QKDN-C", "identity": "ctl-c", "endpoint": "127.0.0.1:9"})
        assert r.status_code == 201, r.text
        wait_for(lambda: peer(api_a, "QKDN-C")["live"]["state"] == "down", 10, 0.1,
                 "QKDN-C known to the Cxi node")
        r = admin_a.session.post(admin_a.base + "/api/v1/peers", timeout=10, json={
            "qkdn_id": "QKDN-D", "identity": "ctl-d",
            "policy": {"reachable_saes": ["SAE-NOPE"]}})
        assert r.status_code == 400 and "unknown SAE 'SAE-NOPE'" in r.text, r.text
        assert peer(api_a, "QKDN-B")["live"]["state"] == "up"

        # A controller killed: its peer marks it down within the bound, with an alarm.
        ps.stop(ctl_b, sig=9)
        t0 = time.monotonic()
        wait_for(lambda: peer(api_a, "QKDN-B")["live"]["state"] == "down", 10, 0.02,
                 "QKDN-B down at A")
        took = time.monotonic() - t0
        log(f"peer down after {took * 1000:.0f} ms (heartbeat {HEARTBEAT_MS} ms)")
        # A killed process closes its sockets: A notices at once, at the latest within one
        # heartbeat; the margin covers a loaded CI machine and the API's polling.
        assert took < 3 * HEARTBEAT_MS / 1000 + 1.0, took
        assert peer(api_a, "QKDN-B")["live"]["inter_qkdn_links"]["X1"] == "down"
        alarms = api_a.items("/api/v1/alarms", state="active")
        assert any(a["type"] == "peer_unreachable" and a["resource"] == "qkdn:QKDN-B"
                   for a in alarms), alarms

        # Back: the alarm clears.
        ctl_b, ports_b = start_controller(ps, "b", b_path, certs_b, "ctl-b", tokens)
        wait_for(lambda: peer(api_a, "QKDN-B")["live"]["state"] == "up", 30, 0.1, "QKDN-B back")
        wait_for(lambda: not any(a["type"] == "peer_unreachable"
                                 for a in api_a.items("/api/v1/alarms", state="active")),
                 10, 0.1, "peer_unreachable cleared")
        log("interworking Cxi: ok")


if __name__ == "__main__":
    main()
