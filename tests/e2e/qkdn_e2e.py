"""Helpers for end-to-end tests: real controller and agent processes on loopback.

Each test starts its processes with port 0 and reads the bound ports from port files, so tests
never collide. Every wait is a poll of real state with an upper bound; nothing sleeps to
synchronise."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOPOLOGIES = os.path.join(ROOT, "tests", "data", "topologies")


def log(msg):
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns a truthy value; returns it, or raises on timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the server may not be up yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc})" if last_exc else ""))


def read_port_file(path, proc, timeout=20):
    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"process exited early with {proc.returncode}")
        if os.path.exists(path):
            text = open(path).read().strip()
            return int(text) if text else None
        return None
    return wait_for(ready, timeout, what=f"port file {path}")


class Processes:
    """Starts processes with logs in a temp dir; stops all of them on exit."""

    def __init__(self, name):
        self.dir = tempfile.mkdtemp(prefix=f"qkdn-e2e-{name}-")
        self.procs = []

    def start(self, name, argv, env=None):
        out = open(os.path.join(self.dir, f"{name}.log"), "w")
        log(f"start {name}: {' '.join(argv)}")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
        proc.log_path = out.name
        proc.qkdn_name = name
        self.procs.append(proc)
        return proc

    def stop(self, proc, sig=signal.SIGTERM, timeout=10):
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def dump_logs(self, tail=60):
        for p in self.procs:
            try:
                lines = open(p.log_path).read().splitlines()
            except OSError:
                continue
            print(f"----- {p.qkdn_name} (last {tail} lines) -----")
            for line in lines[-tail:]:
                print(line)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.dump_logs()
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except OSError:
                    pass
                self.stop(p)
        if exc_type is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"logs kept in {self.dir}")
        return False


def make_certs(dest, topology):
    subprocess.run([os.path.join(ROOT, "scripts", "dev-ca.sh"), "--topology", topology, dest],
                   check=True, stdout=subprocess.DEVNULL)


def make_token(tokens_file, name, role):
    """Makes a bearer token with scripts/make-token.sh, appends its hash line to tokens_file and
    returns the token."""
    out = subprocess.run([os.path.join(ROOT, "scripts", "make-token.sh"), name, role], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    token = out[0].split(": ", 1)[1].strip()
    with open(tokens_file, "a") as f:
        f.write(out[-1].strip() + "\n")
    return token


class Api:
    """A tiny client of the northbound API."""

    def __init__(self, port, token=None):
        self.base = f"http://127.0.0.1:{port}"
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path, **params):
        r = self.session.get(self.base + path, params=params, timeout=5)
        r.raise_for_status()
        return r.json()

    def items(self, path, **params):
        """All items of a paginated list."""
        out, cursor = [], None
        while True:
            q = dict(params)
            if cursor:
                q["cursor"] = cursor
            page = self.get(path, **q)
            out.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out


def binary(env_name, default_rel):
    path = os.environ.get(env_name) or os.path.join(ROOT, "build", default_rel)
    if not os.path.exists(path):
        sys.exit(f"missing binary {path} (set {env_name})")
    return path


def load_topology(name):
    with open(os.path.join(TOPOLOGIES, name)) as f:
        return json.load(f)


# ---- key supply (issue 4): a controller plus one agent hosting every KM, with ETSI GS QKD 014 ----

class Network:
    """Handles of a running controller + agent network (see start_network)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def etsi(self, sae_id, cert=True):
        """A requests.Session of SAE sae_id against the agent's ETSI 014 listener: the SAE's client
        certificate (mutual TLS), or X-SAE-ID in insecure mode; cert=False sends no certificate."""
        s = requests.Session()
        # REQUESTS_CA_BUNDLE and proxies from the environment would override s.verify.
        s.trust_env = False
        if self.insecure:
            if sae_id:
                s.headers["X-SAE-ID"] = sae_id
        else:
            s.verify = os.path.join(self.certs, "ca.pem")
            if cert and sae_id:
                s.cert = (os.path.join(self.certs, "sae", f"{sae_id}.pem"),
                          os.path.join(self.certs, "sae", f"{sae_id}.key"))
        s.base = self.etsi_base
        return s

    def admin_state(self):
        r = requests.get(f"http://127.0.0.1:{self.admin_port}/admin/state", timeout=10)
        r.raise_for_status()
        return r.json()


def start_network(ps, topology_name, extra_saes=(), insecure=False, agent_args=(),
                  controller_args=(), token_role="viewer", extra_apps=()):
    """Starts the controller and one agent hosting every KM of the topology, with certificates
    from scripts/dev-ca.sh (plus extra_saes: certificates of SAEs the topology does not know) in
    ps.dir, an ETSI 014 listener (mutual TLS unless insecure) and the admin listener; waits until
    every KM is registered and every link is up. extra_apps: (sae_id, km_id) pairs added to the
    topology's applications (a copy in ps.dir)."""
    controller = binary("QKDN_CONTROLLER", "controller/qkdn-controller")
    agent = binary("QKDN_AGENT", "southbound/qkdn-agent")
    topo_path = os.path.join(TOPOLOGIES, topology_name)
    topo = load_topology(topology_name)
    if extra_apps:
        topo.setdefault("applications", []).extend(
            {"sae_id": s, "km_id": k} for s, k in extra_apps)
        topo_path = os.path.join(ps.dir, topology_name)
        with open(topo_path, "w") as f:
            json.dump(topo, f)
    certs = os.path.join(ps.dir, "certs")
    make_certs(certs, topo_path)
    if extra_saes:
        argv = [os.path.join(ROOT, "scripts", "dev-ca.sh")]
        for s in extra_saes:
            argv += ["--sae", s]
        subprocess.run(argv + [certs], check=True, stdout=subprocess.DEVNULL)
    ck_port_file = os.path.join(ps.dir, "ck.port")
    api_port_file = os.path.join(ps.dir, "api.port")
    tokens = os.path.join(ps.dir, "tokens")
    token = make_token(tokens, "e2e", token_role)
    ctl = ps.start("controller", [
        controller, "--topology", topo_path,
        "--ck-listen", "127.0.0.1:0", "--port-file", ck_port_file,
        "--api-listen", "127.0.0.1:0", "--api-port-file", api_port_file, "--api-tokens", tokens,
        "--tls-ca", f"{certs}/ca.pem", "--tls-cert", f"{certs}/controller.pem",
        "--tls-key", f"{certs}/controller.key", *controller_args])
    ck_port = read_port_file(ck_port_file, ctl)
    api = Api(read_port_file(api_port_file, ctl), token)
    admin_port_file = os.path.join(ps.dir, "admin.port")
    etsi_port_file = os.path.join(ps.dir, "etsi.port")
    etsi_flags = ["--etsi-insecure"] if insecure else [
        "--etsi-cert", f"{certs}/etsi.pem", "--etsi-key", f"{certs}/etsi.key"]
    ag = ps.start("agent", [
        agent, "--topology", topo_path, "--all", "--controller", f"127.0.0.1:{ck_port}",
        "--tls-ca", f"{certs}/ca.pem", "--tls-cert-dir", f"{certs}/km",
        "--admin-listen", "127.0.0.1:0", "--admin-port-file", admin_port_file,
        "--etsi-listen", "127.0.0.1:0", "--etsi-port-file", etsi_port_file, *etsi_flags,
        *agent_args])
    admin_port = read_port_file(admin_port_file, ag)
    etsi_port = read_port_file(etsi_port_file, ag)
    n = len(topo["kms"])
    wait_for(lambda: sum(k["connected"] for k in api.items("/api/v1/kms")) == n, 30, 0.1,
             f"{n} KMs registered")
    wait_for(lambda: all(l["oper_state"] == "up" for l in api.items("/api/v1/links")), 30, 0.1,
             "every link up")
    scheme = "http" if insecure else "https"
    return Network(controller=ctl, agent=ag, api=api, certs=certs, topo=topo, insecure=insecure,
                   admin_port=admin_port, etsi_port=etsi_port,
                   etsi_base=f"{scheme}://127.0.0.1:{etsi_port}")


def etsi_error(r, status):
    """Asserts an ETSI 014 error reply: the status and an Error object with a message."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    if "details" in body:
        assert isinstance(body["details"], list), body
    return body


# ---- rerouting and CLI relay tests (issues 3 and 6) ----

def parse_rfc3339(text):
    """Seconds since the epoch of an RFC 3339 timestamp such as 2024-05-01T12:00:00.123Z."""
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def api_text(api, path):
    """The body of GET path as text (e.g. /metrics)."""
    r = api.session.get(api.base + path, timeout=5)
    r.raise_for_status()
    return r.text


def metric_value(text, name, **labels):
    """The value of one sample of a Prometheus text exposition (0 when absent). The labels
    given must all match; other labels of the sample are ignored."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = None
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name or not all(w in rest for w in want):
            continue
        total = (total or 0.0) + float(value)
    return total or 0.0


def relays_of(api, src_km, dst_km):
    """Every relay the controller keeps for src_km -> dst_km, oldest first (by created_at)."""
    items = [r for r in api.items("/api/v1/relays", limit=1000)
             if r.get("src_km") == src_km and r.get("dst_km") == dst_km and r.get("created_at")]
    return sorted(items, key=lambda r: r["created_at"])


class Cli:
    """Runs qkdnctl against one API with a token file (QKDN_TOKEN_FILE; never a flag)."""

    def __init__(self, exe, api, token_file=None):
        self.exe, self.api, self.token_file = exe, api, token_file

    def run(self, *args):
        env = {k: v for k, v in os.environ.items()
               if k not in ("QKDN_TOKEN", "QKDN_TOKEN_FILE", "QKDN_API")}
        if self.token_file:
            env["QKDN_TOKEN_FILE"] = self.token_file
        argv = [self.exe, "--api", self.api, "--timeout", "10", *args]
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def json(self, *args):
        code, out, err = self.run("--output", "json", *args)
        if code != 0:
            raise AssertionError(f"qkdnctl {' '.join(args)} exited {code}: {err.strip()}")
        return json.loads(out)
