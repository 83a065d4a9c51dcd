#!/usr/bin/env python3
"""e2e (issue 6): qkdnctl drives a real controller. The CLI applies germany50, shows live pools
once an agent hosts every KM, computes a route, steers around a disabled link, switches the
rerouting mode, and answers with its documented exit codes (2 usage, 3 not found, 4 auth)."""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (Processes, TOPOLOGIES, binary, log, make_token,  # noqa: E402
                      read_port_file, wait_for)

POLL = 0.2
results = {"passed": 0, "failed": 0}


def check(name, condition, detail=""):
    """Counts one assertion; a failure is reported and stops the test."""
    if condition:
        results["passed"] += 1
        log(f"ok   {name}")
        return
    results["failed"] += 1
    log(f"FAIL {name} {detail}")
    raise AssertionError(f"{name}: {detail}")


class Ctl:
    """Runs qkdnctl against one API with a chosen token file (or none)."""

    def __init__(self, exe, api, token_file=None):
        self.exe, self.api, self.token_file = exe, api, token_file

    def run(self, *args, token_file="default", stdin=None):
        tf = self.token_file if token_file == "default" else token_file
        env = {k: v for k, v in os.environ.items()
               if k not in ("QKDN_TOKEN", "QKDN_TOKEN_FILE", "QKDN_API")}
        if tf:
            env["QKDN_TOKEN_FILE"] = tf
        argv = [self.exe, "--api", self.api, "--timeout", "10", *args]
        p = subprocess.run(argv, capture_output=True, text=True, env=env, input=stdin, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def json(self, *args):
        code, out, err = self.run("--output", "json", *args)
        if code != 0:
            raise AssertionError(f"qkdnctl {' '.join(args)} exited {code}: {err.strip()}")
        return json.loads(out)


def main():
    controller = binary("QKDN_CONTROLLER", "controller/qkdn-controller")
    agent = binary("QKDN_AGENT", "southbound/qkdn-agent")
    qkdnctl = binary("QKDN_CTL", "northbound/qkdnctl")
    germany = os.path.join(TOPOLOGIES, "germany50.json")

    with Processes("cli") as ps:
        # The controller starts empty; the CLI applies the network.
        empty = os.path.join(ps.dir, "empty.json")
        with open(empty, "w") as f:
            json.dump({"name": "empty", "kms": [], "links": [], "applications": []}, f)
        tokens = os.path.join(ps.dir, "tokens")
        admin_file = os.path.join(ps.dir, "admin.token")
        viewer_file = os.path.join(ps.dir, "viewer.token")
        with open(admin_file, "w") as f:
            f.write(make_token(tokens, "e2e-admin", "admin") + "\n")
        with open(viewer_file, "w") as f:
            f.write(make_token(tokens, "e2e-viewer", "viewer") + "\n")
        ck_port_file = os.path.join(ps.dir, "ck.port")
        api_port_file = os.path.join(ps.dir, "api.port")
        ctl_proc = ps.start("controller", [
            controller, "--topology", empty,
            "--ck-listen", "127.0.0.1:0", "--port-file", ck_port_file, "--insecure-ck",
            "--api-listen", "127.0.0.1:0", "--api-port-file", api_port_file,
            "--api-tokens", tokens, "--status-interval-ms", "500"])
        ck_port = read_port_file(ck_port_file, ctl_proc)
        api = f"http://127.0.0.1:{read_port_file(api_port_file, ctl_proc)}"
        admin = Ctl(qkdnctl, api, admin_file)
        viewer = Ctl(qkdnctl, api, viewer_file)

        code, out, _ = admin.run("health")
        check("health answers", code == 0 and "status" in out, out)

        code, out, err = admin.run("topology", "apply", "-f", germany)
        check("topology apply -f germany50", code == 0, err)
        kms = admin.json("km", "list")
        check("km list shows the 50 KMs", len(kms) == 50, f"got {len(kms)}")

        ps.start("agent", [agent, "--topology", germany, "--all",
                           "--controller", f"127.0.0.1:{ck_port}", "--insecure-ck",
                           "--insecure-kma"])

        def live_pools():
            links = admin.json("link", "list")
            return links if sum(1 for l in links if l.get("stored_key_bits", 0) > 0) > 0 else None
        links = wait_for(live_pools, 30, POLL, "links with stored key")
        paged = admin.json("--page-size", "7", "link", "list")
        check("lists follow next_cursor across pages",
              sorted(l["link_id"] for l in paged) == sorted(l["link_id"] for l in links))
        check("--limit stops early", len(admin.json("--page-size", "5", "--limit", "12",
                                                     "link", "list")) == 12)
        code, out, err = admin.run("link", "list")
        lines = out.splitlines()
        check("link list table", code == 0 and lines[0].split()[:3] == ["LINK", "A", "B"]
              and len(lines) == 1 + len(links), out[:400])
        check("link list shows live pools in human units",
              any(u in out for u in ("KiB", "MiB", " B ")), out[:400])

        def route():
            r = admin.json("route", "show", "Aachen", "Dresden")
            return r if r["items"] else None
        answer = wait_for(route, 30, POLL, "a route Aachen-Dresden")
        best = answer["items"][0]
        check("route starts at Aachen, ends at Dresden",
              best["kms"][0] == "Aachen" and best["kms"][-1] == "Dresden", best)
        code, out, _ = admin.run("route", "show", "Aachen", "Dresden", "--k", "2", "--explain")
        check("route show table", code == 0 and "Aachen" in out and "excluded links" in out, out)

        cut = best["links"][0]
        code, _, err = admin.run("link", "set", cut, "--admin-state", "disabled")
        check(f"link set {cut} --admin-state disabled", code == 0, err)
        check("link show reflects the admin state",
              admin.json("link", "show", cut)["admin_state"] == "disabled")
        after = admin.json("route", "show", "Aachen", "Dresden", "--k", "4")
        check("routes avoid the disabled link",
              after["items"] and all(cut not in r["links"] for r in after["items"]), after)
        check("route explain lists the disabled link",
              any(e["link_id"] == cut for e in after.get("excluded", [])))

        code, _, err = admin.run("policy", "set", "traffic_adaptive")
        check("policy set traffic_adaptive", code == 0, err)
        check("policy get shows it", admin.json("policy", "get")["mode"] == "traffic_adaptive")
        code, out, _ = admin.run("policy", "get")
        check("policy get table", code == 0 and "traffic_adaptive" in out, out)

        code, _, err = viewer.run("link", "set", cut, "--admin-state", "enabled")
        check("viewer write -> exit 4", code == 4, f"{code} {err}")
        code, _, _ = viewer.run("link", "list")
        check("viewer read -> exit 0", code == 0)
        code, _, err = admin.run("link", "show", "NO-SUCH-LINK")
        check("unknown link -> exit 3 with one line",
              code == 3 and "error 404" in err and len(err.strip().splitlines()) == 1,
              f"{code} {err}")
        code, _, err = admin.run("link", "set", "NO-SUCH-LINK", "--admin-state", "enabled")
        check("set unknown link -> exit 3", code == 3, f"{code} {err}")
        code, _, _ = admin.run("link", "set", cut, "--admin-state", "sideways")
        check("bad usage -> exit 2", code == 2)
        code, _, _ = admin.run("route", "show", "Aachen")
        check("missing argument -> exit 2", code == 2)
        code, _, _ = admin.run("--token", "abc", "health")
        check("no --token flag -> exit 2", code == 2)
        code, _, err = admin.run("link", "list", token_file=None)
        check("no token -> exit 4", code == 4, f"{code} {err}")
        code, out, _ = admin.run("--help")
        check("--help documents exit codes", code == 0 and "Exit codes" in out)
        code, out, _ = admin.run("link", "--help")
        check("link --help has examples", code == 0 and "Examples" in out)
        code, out, _ = admin.run("metrics")
        check("metrics raw text", code == 0 and "qkdn_link_key_pool_bytes" in out)
        code, _, _ = admin.run("alarm", "list")
        check("alarm list", code == 0)
        code, _, _ = admin.run("audit", "--limit", "5")
        check("audit --limit", code == 0)
        code, _, err = Ctl(qkdnctl, "http://127.0.0.1:1", admin_file).run("health")
        check("connection refused -> exit 6", code == 6, f"{code} {err}")

        code, _, err = admin.run("link", "set", cut, "--admin-state", "enabled")
        check("link re-enabled", code == 0, err)
        check("controller still running", ctl_proc.poll() is None)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as exc:
        print(f"FAILED: {exc}")
        print(f"{results['passed']} passed, {results['failed'] or 1} failed")
        sys.exit(1)
    print(f"{results['passed']} passed, {results['failed']} failed")
