#!/usr/bin/env python3
"""`cmake --install` plus the systemd units start a controller and an agent from the installed
files. systemd itself does not run here, so the test does what the units say:

  1. `cmake --install BUILD --prefix TMP` installs binaries, units, example configuration,
     Prometheus rules, Grafana dashboards and provisioning, and the topology schema;
  2. every installed binary answers --version with the project's version;
  3. both units pass `systemd-analyze verify` (when present) and carry the hardening options;
  4. the example configuration is edited as an operator would (certificates from
     scripts/dev-ca.sh, a token, loopback ports, JSON logs for the controller);
  5. each unit's ExecStart line, with its EnvironmentFile expanded as systemd does, is run as is:
     the agent's KMs register with the controller and every link comes up;
  6. every line the controller logs is a JSON object (time, level, process, component, msg) and
     every line the agent logs is "RFC3339 level component: message"; SIGTERM stops both with 0.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from qkdn_e2e import ROOT, log, make_token, wait_for  # noqa: E402

BUILD = os.environ.get("QKDN_BUILD_DIR") or os.path.join(ROOT, "build")
HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "PrivateDevices=yes", "CapabilityBoundingSet=", "RestrictAddressFamilies=",
             "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes",
             "ProtectKernelTunables=yes", "RestrictNamespaces=yes", "User=qkdn"]
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) +"
                       r"[a-z0-9_-]+: .*$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def project_version():
    text = open(os.path.join(ROOT, "CMakeLists.txt")).read()
    return re.search(r"project\(qkdn-controller VERSION ([0-9.]+)", text).group(1)


def unit_fields(path):
    """KEY -> [values] of a unit file (repeated keys keep every value)."""
    out = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def environment_file(path):
    """KEY=VALUE lines as systemd reads an EnvironmentFile (comments and blanks skipped)."""
    env = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip().strip('"')
    return env


def exec_argv(exec_start, env):
    """ExecStart as systemd runs it: ${VAR} is one word, $VAR splits on whitespace."""
    argv = []
    for word in shlex.split(exec_start):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv.extend(env.get(m.group(1), "").split())
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                               lambda x: env.get(x.group(1), ""), word))
    return argv


def set_conf(path, values):
    """Sets `key = value` lines of the controller's config file (replacing or appending)."""
    lines = open(path).read().splitlines()
    for key, value in values.items():
        new = f"{key} = {value}"
        for i, line in enumerate(lines):
            if re.match(rf"#?\s*{key}\s*=", line):
                lines[i] = new
                break
        else:
            lines.append(new)
    open(path, "w").write("\n".join(lines) + "\n")


def read_port(path, proc, what):
    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited early with {proc.returncode}")
        return os.path.exists(path) and open(path).read().strip()
    return int(wait_for(ready, 30, what=f"{what} port file"))


def main():
    version = project_version()
    prefix = tempfile.mkdtemp(prefix="qkdn-install-")
    procs = []
    ok = False
    try:
        subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix], check=True,
                       stdout=subprocess.DEVNULL, timeout=300)
        etc = os.path.join(prefix, "etc", "qkdn")
        units = os.path.join(prefix, "lib", "systemd", "system")
        share = os.path.join(prefix, "share", "qkdn")
        for rel in ["bin/qkdn-controller", "bin/qkdn-agent", "bin/qkdnctl",
                    "lib/systemd/system/qkdn-controller.service",
                    "lib/systemd/system/qkdn-agent.service", "etc/qkdn/controller.conf",
                    "etc/qkdn/agent.env", "etc/qkdn/topology.json",
                    "share/qkdn/prometheus/qkdn.rules.yml", "share/qkdn/prometheus/prometheus.yml",
                    "share/qkdn/grafana/dashboards/qkdn-overview.json",
                    "share/qkdn/grafana/provisioning/dashboards/qkdn.yaml",
                    "share/qkdn/grafana/provisioning/datasources/qkdn.yaml",
                    "share/doc/qkdn-controller/topology.schema.json"]:
            assert os.path.exists(os.path.join(prefix, rel)), f"not installed: {rel}"
        provider = open(os.path.join(share, "grafana/provisioning/dashboards/qkdn.yaml")).read()
        assert f"path: {share}/grafana/dashboards" in provider, provider
        log(f"ok   installed under {prefix}")

        for name in ["qkdn-controller", "qkdn-agent"]:
            out = subprocess.run([os.path.join(prefix, "bin", name), "--version"], check=True,
                                 capture_output=True, text=True, timeout=10).stdout
            assert out.startswith(f"{name} {version} (revision "), out
        out = subprocess.run([os.path.join(prefix, "bin", "qkdnctl"), "--version"], check=True,
                             capture_output=True, text=True, timeout=10).stdout
        assert out.strip() == f"qkdnctl {version}", out
        log(f"ok   --version: {version}")

        ctl_unit = unit_fields(os.path.join(units, "qkdn-controller.service"))
        agent_unit = unit_fields(os.path.join(units, "qkdn-agent.service"))
        for name, unit in [("controller", ctl_unit), ("agent", agent_unit)]:
            flat = [f"{k}={v}" for k, vs in unit.items() for v in vs]
            for h in HARDENING:
                assert any(f.startswith(h) for f in flat), f"{name} unit lacks {h}"
        if shutil.which("systemd-analyze"):
            for unit in ["qkdn-controller.service", "qkdn-agent.service"]:
                p = subprocess.run(["systemd-analyze", "verify", "--man=no",
                                    os.path.join(units, unit)],
                                   capture_output=True, text=True, timeout=60)
                # The unit's own problems name its file ("...qkdn-agent.service:23: Unknown
                # key"); warnings about other units of this sandbox's system do not.
                own = [l for l in (p.stdout + p.stderr).splitlines() if unit in l]
                assert not own, f"systemd-analyze verify {unit}: {own}"
            log("ok   systemd-analyze verify: both units")
        else:
            log("systemd-analyze not installed: unit syntax not verified")

        # Configure as an operator would.
        subprocess.run([os.path.join(ROOT, "scripts", "dev-ca.sh"), "--topology",
                        os.path.join(etc, "topology.json"), os.path.join(etc, "pki")], check=True,
                       stdout=subprocess.DEVNULL)
        token = make_token(os.path.join(etc, "tokens"), "ops", "viewer")
        run = tempfile.mkdtemp(dir=prefix)
        set_conf(os.path.join(etc, "controller.conf"), {
            "ck_listen": "127.0.0.1:0", "port_file": f"{run}/ck.port",
            "api_listen": "127.0.0.1:0", "api_port_file": f"{run}/api.port",
            "log_format": "json"})

        # The controller, exactly as its unit starts it.
        argv = exec_argv(ctl_unit["ExecStart"][0], {})
        assert argv[0] == os.path.join(prefix, "bin", "qkdn-controller"), argv
        ctl_err = open(os.path.join(run, "controller.err"), "w")
        ctl = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=ctl_err)
        procs.append(ctl)
        ck_port = read_port(f"{run}/ck.port", ctl, "controller")
        api = f"http://127.0.0.1:{read_port(f'{run}/api.port', ctl, 'controller')}/api/v1"

        env_path = agent_unit["EnvironmentFile"][0].lstrip("-")
        text = open(env_path).read()
        text = text.replace("--controller 127.0.0.1:4164", f"--controller 127.0.0.1:{ck_port}")
        text = text.replace("--admin-listen 127.0.0.1:9101",
                            f"--admin-listen 127.0.0.1:0 --admin-port-file {run}/admin.port")
        text = text.replace("--etsi-listen 0.0.0.0:8443",
                            f"--etsi-listen 127.0.0.1:0 --etsi-port-file {run}/etsi.port")
        open(env_path, "w").write(text)
        argv = exec_argv(agent_unit["ExecStart"][0], environment_file(env_path))
        assert argv[0] == os.path.join(prefix, "bin", "qkdn-agent"), argv
        agent_err = open(os.path.join(run, "agent.err"), "w")
        agent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=agent_err)
        procs.append(agent)
        read_port(f"{run}/admin.port", agent, "agent")

        topo = json.load(open(os.path.join(etc, "topology.json")))
        headers = {"Authorization": f"Bearer {token}"}
        wait_for(lambda: sum(k["connected"] for k in requests.get(
            api + "/kms", headers=headers, timeout=5).json()["items"]) == len(topo["kms"]),
            60, 0.2, f"{len(topo['kms'])} KMs registered")
        wait_for(lambda: all(l["oper_state"] == "up" for l in requests.get(
            api + "/links", headers=headers, timeout=5).json()["items"]), 60, 0.2,
            "every link up")
        log(f"ok   installed controller and agent: {len(topo['kms'])} KMs registered, links up")

        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(30) == 0, f"{p.args[0]} exited with {p.returncode} on SIGTERM"
        ctl_err.close()
        agent_err.close()
        lines = open(os.path.join(run, "controller.err")).read().splitlines()
        assert len(lines) >= 3, lines
        for line in lines:
            o = json.loads(line)
            assert set(o) == {"time", "level", "process", "component", "msg"}, line
            assert RFC3339.match(o["time"]) and o["process"] == "qkdn-controller", line
        assert any(o["component"] == "ck" and "registered" in o["msg"]
                   for o in map(json.loads, lines)), "no registration logged"
        lines = open(os.path.join(run, "agent.err")).read().splitlines()
        assert lines, "the agent logged nothing"
        bad = [l for l in lines if not TEXT_LINE.match(l)]
        assert not bad, f"agent log lines not in the text format: {bad[:3]}"
        log(f"ok   logs: controller JSON lines, agent text lines; SIGTERM exits 0")
        ok = True
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if ok:
            shutil.rmtree(prefix, ignore_errors=True)
        else:
            print(f"kept {prefix}")
    print("install_units: 6 passed, 0 failed")


if __name__ == "__main__":
    main()
