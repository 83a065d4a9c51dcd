#!/usr/bin/env python3
"""e2e (issue 6): the northbound API over TLS. A controller started with --api-tls-cert and
--api-tls-key (certificates from scripts/dev-ca.sh) answers HTTPS verified against the dev CA,
refuses clients that do not trust that CA, and does not speak plain HTTP on its TLS port; qkdnctl
works against it with --cacert, --ca or $QKDN_CACERT, and fails (exit 1, TLS) without the CA.
Authentication failures over TLS (401, 403) land in the audit trail with who, what and when."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (ROOT, Processes, TOPOLOGIES, binary, log,  # noqa: E402
                      make_certs, make_token, read_port_file)

CHECK_DASHBOARDS = os.path.join(ROOT, "scripts", "check-dashboards.py")
METRICS_DOC = os.path.join(ROOT, "docs", "metrics.md")

results = {"passed": 0}


def check(name, condition, detail=""):
    """One assertion; a failure stops the test."""
    if not condition:
        log(f"FAIL {name} {detail}")
        raise AssertionError(f"{name}: {detail}")
    results["passed"] += 1
    log(f"ok   {name}")


def qkdnctl(exe, api, *args, token_file=None, env_extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("QKDN_TOKEN", "QKDN_TOKEN_FILE", "QKDN_API", "QKDN_CACERT")}
    if token_file:
        env["QKDN_TOKEN_FILE"] = token_file
    env.update(env_extra or {})
    p = subprocess.run([exe, "--api", api, "--timeout", "10", *args], capture_output=True,
                       text=True, env=env, timeout=60)
    return p.returncode, p.stdout, p.stderr


def documented_metrics():
    """The metric names and types of docs/metrics.md (parsed by scripts/check-dashboards.py)."""
    spec = importlib.util.spec_from_file_location("check_dashboards", CHECK_DASHBOARDS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.from_metrics_doc(METRICS_DOC).types


def check_metrics(text, ps, what):
    """docs/metrics.md and /metrics list the same qkdn_ families with the same types, and
    `promtool check metrics` passes."""
    documented = documented_metrics()
    served = dict(re.findall(r"^# TYPE (qkdn_\w+) (\w+)$", text, re.M))
    missing = sorted(n for n in documented if n not in served)
    check(f"{what}: every docs/metrics.md metric on /metrics", not missing, missing)
    undocumented = sorted(n for n in served if n not in documented)
    check(f"{what}: every qkdn_ metric on /metrics is in docs/metrics.md", not undocumented,
          undocumented)
    wrong = sorted(n for n in documented if n in served and served[n] != documented[n])
    check(f"{what}: metric types match docs/metrics.md", not wrong, wrong)
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        check(f"{what}: promtool check metrics", p.returncode == 0, p.stdout + p.stderr)
    else:
        log("skip promtool: not installed")
    path = os.path.join(ps.dir, "metrics.txt")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([sys.executable, CHECK_DASHBOARDS, "--metrics-file", path],
                       capture_output=True, text=True, timeout=30)
    check(f"{what}: dashboards query only served metrics", p.returncode == 0,
          p.stdout + p.stderr)


def main():
    controller = binary("QKDN_CONTROLLER", "controller/qkdn-controller")
    ctl = binary("QKDN_CTL", "northbound/qkdnctl")
    topology = os.path.join(TOPOLOGIES, "germany50.json")

    with Processes("api-tls") as ps:
        pki = os.path.join(ps.dir, "pki")
        make_certs(pki, topology)
        ca = os.path.join(pki, "ca.pem")
        tokens = os.path.join(ps.dir, "tokens")
        admin_file = os.path.join(ps.dir, "admin.token")
        viewer_file = os.path.join(ps.dir, "viewer.token")
        admin = make_token(tokens, "tls-admin", "admin")
        viewer = make_token(tokens, "tls-viewer", "viewer")
        for path, token in ((admin_file, admin), (viewer_file, viewer)):
            with open(path, "w") as f:
                f.write(token + "\n")
        empty = os.path.join(ps.dir, "empty.json")
        with open(empty, "w") as f:
            json.dump({"name": "empty", "kms": [], "links": [], "applications": []}, f)
        port_file = os.path.join(ps.dir, "api.port")
        proc = ps.start("controller", [
            controller, "--topology", empty,
            "--ck-listen", "127.0.0.1:0", "--port-file", os.path.join(ps.dir, "ck.port"),
            "--insecure-ck",
            "--api-listen", "127.0.0.1:0", "--api-port-file", port_file,
            "--api-tokens", tokens,
            "--api-tls-cert", os.path.join(pki, "controller.pem"),
            "--api-tls-key", os.path.join(pki, "controller.key")])
        port = read_port_file(port_file, proc)
        https = f"https://127.0.0.1:{port}"
        https_name = f"https://localhost:{port}"
        auth = {"Authorization": f"Bearer {admin}"}

        # A fresh controller (empty topology, no KM, no request yet) already declares every
        # metric; /metrics is open (no token) and served over TLS like the rest.
        r = requests.get(https + "/metrics", verify=ca, timeout=5)
        check("https /metrics of a fresh controller", r.status_code == 200, r.status_code)
        check_metrics(r.text, ps, "fresh controller")

        # HTTPS verified against the dev CA (by IP and by name: both are in the SAN).
        r = requests.get(https + "/api/v1/health", verify=ca, timeout=5)
        check("https health with the CA", r.status_code == 200, r.text)
        r = requests.get(https_name + "/api/v1/links", headers=auth, verify=ca, timeout=5)
        check("https links by name with the CA", r.status_code == 200 and "items" in r.json(),
              r.text)

        # A client that does not trust the dev CA refuses the server's certificate.
        try:
            requests.get(https + "/api/v1/health", verify=True, timeout=5)
            check("https without the CA is refused", False, "the request succeeded")
        except requests.exceptions.SSLError:
            check("https without the CA is refused", True)

        # Plain HTTP on the TLS port gets no HTTP answer (the handshake fails, the socket closes).
        try:
            r = requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
            check("plain http to the TLS port fails", False, f"answered {r.status_code}")
        except requests.exceptions.ConnectionError:
            check("plain http to the TLS port fails", True)
        check("controller alive after plain http", proc.poll() is None)
        r = requests.get(https + "/api/v1/health", verify=ca, timeout=5)
        check("https still served after plain http", r.status_code == 200)

        # qkdnctl over https: --cacert, --ca, $QKDN_CACERT; a write with the admin token.
        code, out, err = qkdnctl(ctl, https, "--cacert", ca, "topology", "apply", "-f", topology,
                                 token_file=admin_file)
        check("qkdnctl --cacert topology apply", code == 0, f"{code} {err}")
        code, out, err = qkdnctl(ctl, https, "--ca", ca, "--output", "json", "link", "list",
                                 token_file=admin_file)
        check("qkdnctl --ca link list", code == 0 and len(json.loads(out)) > 50, f"{code} {err}")
        r = requests.get(https + "/metrics", verify=ca, timeout=5)
        check_metrics(r.text, ps, "germany50 applied")
        code, out, err = qkdnctl(ctl, https_name, "km", "list", token_file=viewer_file,
                                 env_extra={"QKDN_CACERT": ca})
        check("qkdnctl with QKDN_CACERT (by name)", code == 0 and "Frankfurt" in out,
              f"{code} {err}")
        code, out, err = qkdnctl(ctl, https, "link", "list", token_file=admin_file)
        check("qkdnctl without the CA fails with a TLS error", code == 1 and "TLS" in err,
              f"{code} {err}")
        code, out, err = qkdnctl(ctl, f"http://127.0.0.1:{port}", "link", "list",
                                 token_file=admin_file)
        check("qkdnctl plain http to the TLS port fails", code != 0, f"{code} {out}")

        # Authentication failures over TLS: 401 (bad token), 403 (viewer write), both audited.
        r = requests.get(https + "/api/v1/links", headers={"Authorization": "Bearer nope"},
                         verify=ca, timeout=5)
        check("bad token is 401", r.status_code == 401, r.text)
        code, out, err = qkdnctl(ctl, https, "--cacert", ca, "policy", "set", "traffic_adaptive",
                                 token_file=viewer_file)
        check("viewer write via qkdnctl exits 4", code == 4, f"{code} {err}")
        trail = requests.get(https + "/api/v1/audit", params={"limit": 1000}, headers=auth,
                             verify=ca, timeout=5).json()["items"]
        e401 = [a for a in trail if a["outcome"] == "401"]
        e403 = [a for a in trail if a["outcome"] == "403"]
        check("401 audited", len(e401) == 1 and e401[0]["actor"] == "anonymous"
              and e401[0]["at"] and "GET /api/v1/links" in e401[0]["action"], e401)
        check("403 audited", len(e403) == 1 and e403[0]["actor"] == "tls-viewer"
              and e403[0]["at"] and "/api/v1/policy" in e403[0]["action"], e403)
        check("topology write audited", any(a["actor"] == "tls-admin" and a["outcome"] == "200"
                                            and "/api/v1/topology" in a["action"]
                                            for a in trail), trail[-5:])

    log(f"passed {results['passed']} checks")


if __name__ == "__main__":
    main()
