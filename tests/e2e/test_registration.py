#!/usr/bin/env python3
"""e2e (issue 2): one agent hosting all 50 KMs of germany50 registers with the controller over
mutual TLS within 10 s; status reports update the controller's link state; a silent (stopped)
agent is marked disconnected within three heartbeat intervals, and a killed one at once."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (Api, Processes, TOPOLOGIES, binary, load_topology, log, make_certs,
                      make_token, read_port_file, wait_for)

HEARTBEAT_MS = 1000
POLL = 0.05
# Measurement tolerance on top of three intervals: the poll period, the API's list cache (25 ms)
# and one HTTP round trip on a loaded 2-core CI machine.
TOLERANCE = 0.3


def main():
    controller = binary("QKDN_CONTROLLER", "controller/qkdn-controller")
    agent = binary("QKDN_AGENT", "southbound/qkdn-agent")
    topo_path = os.path.join(TOPOLOGIES, "germany50.json")
    topo = load_topology("germany50.json")
    km_ids = {k["km_id"] for k in topo["kms"]}

    with Processes("registration") as ps:
        certs = os.path.join(ps.dir, "certs")
        make_certs(certs, topo_path)
        ck_port_file = os.path.join(ps.dir, "ck.port")
        api_port_file = os.path.join(ps.dir, "api.port")
        tokens = os.path.join(ps.dir, "tokens")
        viewer = make_token(tokens, "e2e-viewer", "viewer")
        ctl = ps.start("controller", [
            controller, "--topology", topo_path,
            "--ck-listen", "127.0.0.1:0", "--port-file", ck_port_file,
            "--api-listen", "127.0.0.1:0", "--api-port-file", api_port_file,
            "--api-tokens", tokens,
            "--tls-ca", f"{certs}/ca.pem", "--tls-cert", f"{certs}/controller.pem",
            "--tls-key", f"{certs}/controller.key",
            "--heartbeat-interval-ms", str(HEARTBEAT_MS), "--status-interval-ms", "500"])
        ck_port = read_port_file(ck_port_file, ctl)
        api = Api(read_port_file(api_port_file, ctl), viewer)
        assert all(not k["connected"] for k in api.items("/api/v1/kms"))

        start = time.monotonic()
        ag = ps.start("agent", [
            agent, "--topology", topo_path, "--all",
            "--controller", f"127.0.0.1:{ck_port}",
            "--tls-ca", f"{certs}/ca.pem", "--tls-cert-dir", f"{certs}/km"])

        def all_connected():
            kms = api.items("/api/v1/kms")
            return len(kms) == 50 and all(k["connected"] for k in kms)
        wait_for(all_connected, 10, POLL, "all 50 KMs connected")
        took = time.monotonic() - start
        log(f"all 50 KMs registered in {took:.2f} s")
        assert {k["km_id"] for k in api.items("/api/v1/kms")} == km_ids

        # Status reports: every link is up and its pool grows as the agents report it.
        def pools_reported():
            links = api.items("/api/v1/links")
            up = [l for l in links if l["oper_state"] == "up"]
            with_keys = [l for l in links if l["stored_key_bits"] > 0]
            return len(up) == len(topo["links"]) and len(with_keys) >= len(topo["links"]) // 2
        wait_for(pools_reported, 10, POLL, "status reports with link pools")
        first = {l["link_id"]: l["stored_key_bits"] for l in api.items("/api/v1/links")}
        def pools_grew():
            now = {l["link_id"]: l["stored_key_bits"] for l in api.items("/api/v1/links")}
            return sum(1 for k, v in now.items() if v > first[k]) >= len(first) // 2
        wait_for(pools_grew, 5, POLL, "pools to grow between reports")
        log("status reports update link pools")

        # A silent agent (SIGSTOP: sockets stay open, nothing is sent) is detected by missed
        # heartbeats: within three intervals, plus one poll period of measurement slack.
        os.kill(ag.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        wait_for(lambda: all(not k["connected"] for k in api.items("/api/v1/kms")),
                 10, POLL, "all KMs disconnected after SIGSTOP")
        elapsed = time.monotonic() - stopped
        log(f"silent agent: all KMs disconnected after {elapsed:.2f} s "
            f"(three intervals: {3 * HEARTBEAT_MS / 1000:.2f} s, measurement tolerance {TOLERANCE} s)")
        assert elapsed <= 3 * HEARTBEAT_MS / 1000 + TOLERANCE, elapsed
        links = api.items("/api/v1/links")
        assert all(l["oper_state"] == "down" for l in links)

        # The agent resumes and re-registers; then a hard kill is noticed at once (EOF).
        os.kill(ag.pid, signal.SIGCONT)
        wait_for(all_connected, 15, POLL, "all KMs reconnected after SIGCONT")
        ps.stop(ag, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: all(not k["connected"] for k in api.items("/api/v1/kms")),
                 10, POLL, "all KMs disconnected after SIGKILL")
        log(f"killed agent: all KMs disconnected after {time.monotonic() - killed:.2f} s")
        assert ctl.poll() is None, "controller must survive"
    print("e2e registration: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
