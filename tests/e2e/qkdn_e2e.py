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


def make_certs(dest, topology, env=None):
    subprocess.run([os.path.join(ROOT, "scripts", "dev-ca.sh"), "--topology", topology, dest],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})


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

    def admin_link(self, link_id, **fields):
        """POST /admin/links/{link_id} on the agent (key_rate_bps, qber, up, ...)."""
        r = requests.post(f"http://127.0.0.1:{self.admin_port}/admin/links/{link_id}",
                          json=fields, timeout=10)
        assert r.status_code in (200, 204), (r.status_code, r.text)

    def epochs(self):
        """controller_epoch each KM of the agent last accepted, by KM ID."""
        return {k["km_id"]: k["controller_epoch"] for k in self.admin_state()["kms"]}

    def kill_controller(self):
        """kill -9 of the controller; returns once it is gone."""
        self.controller.kill()
        self.controller.wait(10)

    def restart_controller(self, env=None):
        """Starts the controller again on its ports (after kill_controller or a stop); env: extra
        environment (e.g. libfaketime's). Returns once its API answers."""
        self.restarts += 1
        argv = self.controller_argv
        self.controller = self.ps.start(f"controller-{self.restarts}", argv, env=env)
        wait_for(lambda: self.controller.poll() is None and self.api.get("/api/v1/kms"), 20, 0.05,
                 "the restarted controller's API")
        return self.controller

    def restart_agent(self):
        """Starts the agent again on its ports (after a kill -9); returns once its admin HTTP
        answers. Link settings made through the admin HTTP are gone with the old process."""
        self.restarts += 1
        self.agent = self.ps.start(f"agent-{self.restarts}", self.agent_argv)
        wait_for(lambda: self.agent.poll() is None and self.admin_state(), 20, 0.05,
                 "the restarted agent's admin HTTP")
        return self.agent

    def wait_registered(self, timeout=20):
        """Waits until every KM is registered with the running controller."""
        n = len(self.topo["kms"])
        wait_for(lambda: sum(k["connected"] for k in self.api.items("/api/v1/kms")) == n,
                 timeout, 0.05, f"{n} KMs registered")


def start_network(ps, topology_name, extra_saes=(), insecure=False, agent_args=(),
                  controller_args=(), token_role="viewer", extra_apps=(), controller_env=None,
                  certs_backdated_s=0, key_rate_bps=None, km_trust=None):
    """Starts the controller and one agent hosting every KM of the topology, with certificates
    from scripts/dev-ca.sh (plus extra_saes: certificates of SAEs the topology does not know) in
    ps.dir, an ETSI 014 listener (mutual TLS unless insecure) and the admin listener; waits until
    every KM is registered and every link is up. extra_apps: (sae_id, km_id) pairs added to the
    topology's applications (a copy in ps.dir). certs_backdated_s: the certificates are valid
    from that many seconds ago (for a controller restarted with its clock behind). key_rate_bps:
    every link's rate in the topology (a copy in ps.dir), so that a restarted agent has it too.
    km_trust: {km_id: (trust_level, [tags])} set in the copy of the topology. The returned
    Network can restart its controller
    and agent on the same ports (restart_controller, restart_agent: fault tests)."""
    controller = binary("QKDN_CONTROLLER", "controller/qkdn-controller")
    agent = binary("QKDN_AGENT", "southbound/qkdn-agent")
    topo_path = os.path.join(TOPOLOGIES, topology_name)
    topo = load_topology(topology_name)
    if extra_apps or key_rate_bps or km_trust:
        topo.setdefault("applications", []).extend(
            {"sae_id": s, "km_id": k} for s, k in extra_apps)
        for link in topo["links"] if key_rate_bps else ():
            link["key_rate_bps"] = key_rate_bps
        for km in topo["kms"] if km_trust else ():
            if km["km_id"] in km_trust:
                km["trust_level"], km["tags"] = km_trust[km["km_id"]]
        topo_path = os.path.join(ps.dir, topology_name)
        with open(topo_path, "w") as f:
            json.dump(topo, f)
    certs = os.path.join(ps.dir, "certs")
    make_certs(certs, topo_path, faketime_env(-certs_backdated_s) if certs_backdated_s else None)
    if extra_saes:
        argv = [os.path.join(ROOT, "scripts", "dev-ca.sh")]
        for s in extra_saes:
            argv += ["--sae", s]
        subprocess.run(argv + [certs], check=True, stdout=subprocess.DEVNULL)
    ck_port_file = os.path.join(ps.dir, "ck.port")
    api_port_file = os.path.join(ps.dir, "api.port")
    tokens = os.path.join(ps.dir, "tokens")
    token = make_token(tokens, "e2e", token_role)
    ctl_argv = [
        controller, "--topology", topo_path,
        "--ck-listen", "127.0.0.1:0", "--port-file", ck_port_file,
        "--api-listen", "127.0.0.1:0", "--api-port-file", api_port_file, "--api-tokens", tokens,
        "--tls-ca", f"{certs}/ca.pem", "--tls-cert", f"{certs}/controller.pem",
        "--tls-key", f"{certs}/controller.key", *controller_args]
    ctl = ps.start("controller", ctl_argv, env=controller_env)
    ck_port = read_port_file(ck_port_file, ctl)
    api_port = read_port_file(api_port_file, ctl)
    api = Api(api_port, token)
    # A restart binds the same ports (the agent knows the Ck address; clients the API's).
    ctl_argv[ctl_argv.index("--ck-listen") + 1] = f"127.0.0.1:{ck_port}"
    ctl_argv[ctl_argv.index("--api-listen") + 1] = f"127.0.0.1:{api_port}"
    admin_port_file = os.path.join(ps.dir, "admin.port")
    etsi_port_file = os.path.join(ps.dir, "etsi.port")
    etsi_flags = ["--etsi-insecure"] if insecure else [
        "--etsi-cert", f"{certs}/etsi.pem", "--etsi-key", f"{certs}/etsi.key"]
    ag_argv = [
        agent, "--topology", topo_path, "--all", "--controller", f"127.0.0.1:{ck_port}",
        "--tls-ca", f"{certs}/ca.pem", "--tls-cert-dir", f"{certs}/km",
        "--admin-listen", "127.0.0.1:0", "--admin-port-file", admin_port_file,
        "--etsi-listen", "127.0.0.1:0", "--etsi-port-file", etsi_port_file, *etsi_flags,
        *agent_args]
    ag = ps.start("agent", ag_argv)
    admin_port = read_port_file(admin_port_file, ag)
    etsi_port = read_port_file(etsi_port_file, ag)
    ag_argv[ag_argv.index("--admin-listen") + 1] = f"127.0.0.1:{admin_port}"
    ag_argv[ag_argv.index("--etsi-listen") + 1] = f"127.0.0.1:{etsi_port}"
    n = len(topo["kms"])
    wait_for(lambda: sum(k["connected"] for k in api.items("/api/v1/kms")) == n, 30, 0.1,
             f"{n} KMs registered")
    wait_for(lambda: all(l["oper_state"] == "up" for l in api.items("/api/v1/links")), 30, 0.1,
             "every link up")
    scheme = "http" if insecure else "https"
    return Network(controller=ctl, agent=ag, api=api, certs=certs, topo=topo, insecure=insecure,
                   admin_port=admin_port, etsi_port=etsi_port,
                   etsi_base=f"{scheme}://127.0.0.1:{etsi_port}", ps=ps,
                   controller_argv=ctl_argv, agent_argv=ag_argv, restarts=0)


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


# ---- fault tests (issue 12): traffic whose every key is checked at both ends ----

def relayed_pairs(topo, count, seed):
    """`count` (master SAE, slave SAE) pairs whose KMs share no link (the keys are relayed through
    the controller), drawn with random.Random(seed)."""
    import random
    adjacent = {(l["a"], l["b"]) for l in topo["links"]} | {(l["b"], l["a"]) for l in topo["links"]}
    apps = sorted((a["sae_id"], a["km_id"]) for a in topo["applications"])
    rnd = random.Random(seed)
    pairs = []
    while len(pairs) < count:
        (s1, k1), (s2, k2) = rnd.sample(apps, 2)
        if k1 != k2 and (k1, k2) not in adjacent and (s1, s2) not in pairs:
            pairs.append((s1, s2))
    return pairs


class KeyTraffic:
    """Worker threads that ask ETSI GS QKD 014 enc_keys of a master SAE and then dec_keys of its
    slave for the same IDs, and record what both ends received. Answers other than 200 are kept
    with their reason (503 = no keys now: expected while a fault lasts). A key is *delivered* when
    its enc_keys answered 200; *matched* when the slave's dec_keys returned the same bytes."""

    TIMEOUT = 15

    def __init__(self, net, pairs, workers=4, number=2, size=256):
        import threading
        from collections import Counter
        self.net, self.pairs, self.number, self.size = net, pairs, number, size
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.enc_ids = Counter()      # key ID -> enc_keys answers that carried it
        self.dec_ids = Counter()      # key ID -> dec_keys answers that carried it
        self.mismatches = []          # (pair, key IDs) whose ends differ
        self.failures = []            # (monotonic time, what, status, message)
        self.unmatched = []           # (enc time, dec time, pair, IDs): enc 200 but dec not 200
        self.ok_times = []            # monotonic times of each matched exchange
        self.statuses = Counter()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(workers)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(self.TIMEOUT * 2 + 5)
        assert not any(t.is_alive() for t in self.threads), "a traffic worker is stuck"

    def matched(self):
        with self.lock:
            return len(self.ok_times)

    def last_ok(self):
        with self.lock:
            return self.ok_times[-1] if self.ok_times else None

    def wait_flowing(self, since, timeout, what="keys flowing"):
        """Waits until an exchange that started after `since` (monotonic) matched at both ends;
        returns the seconds from `since` to it."""
        def ok():
            t = self.last_ok()
            return t is not None and t > since and t
        return wait_for(ok, timeout, 0.02, what) - since

    def probe(self, since, timeout, what="keys flowing", pair=None):
        """Fresh ETSI 014 exchanges (new connections, not the workers', which may still wait on
        a request the fault interrupted) until one delivers equal keys at both ends; returns the
        seconds from `since` (monotonic) to its end. Its keys count like the workers'."""
        import base64
        master, slave = pair or self.pairs[0]
        base = self.net.etsi_base + "/api/v1/keys"
        deadline = since + timeout
        while time.monotonic() < deadline:
            try:
                r = self.net.etsi(master).post(f"{base}/{slave}/enc_keys", timeout=5,
                                               json={"number": 1, "size": self.size})
                if r.status_code == 200:
                    sent = {k["key_ID"]: base64.b64decode(k["key"]) for k in r.json()["keys"]}
                    with self.lock:
                        for k in sent:
                            self.enc_ids[k] += 1
                    r2 = self.net.etsi(slave).post(
                        f"{base}/{master}/dec_keys", timeout=5,
                        json={"key_IDs": [{"key_ID": k} for k in sent]})
                    assert r2.status_code == 200, (r2.status_code, r2.text[:200])
                    got = {k["key_ID"]: base64.b64decode(k["key"]) for k in r2.json()["keys"]}
                    with self.lock:
                        for k in got:
                            self.dec_ids[k] += 1
                    assert got == sent, f"probe: ends differ for {sorted(sent)}"
                    return time.monotonic() - since
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def _note(self, what, status, message):
        with self.lock:
            self.statuses[f"{what} {status}"] += 1
            if status != 200:
                self.failures.append((time.monotonic(), what, status, message))

    def _run(self, index):
        import base64
        sessions = {}
        base = self.net.etsi_base + "/api/v1/keys"

        def session(sae):
            if sae not in sessions:
                sessions[sae] = self.net.etsi(sae)
            return sessions[sae]

        i = index
        while not self.stop.is_set():
            master, slave = self.pairs[i % len(self.pairs)]
            i += 1
            t0 = time.monotonic()
            try:
                r = session(master).post(f"{base}/{slave}/enc_keys", timeout=self.TIMEOUT,
                                         json={"number": self.number, "size": self.size})
            except requests.RequestException as exc:
                self._note("enc", "error", str(exc)[:200])
                time.sleep(0.05)
                continue
            if r.status_code != 200:
                self._note("enc", r.status_code, _message(r))
                time.sleep(0.05)
                continue
            sent = {k["key_ID"]: base64.b64decode(k["key"]) for k in r.json()["keys"]}
            with self.lock:
                for k in sent:
                    self.enc_ids[k] += 1
            self._note("enc", 200, "")
            t1 = time.monotonic()
            body = {"key_IDs": [{"key_ID": k} for k in sent]}
            try:
                r2 = session(slave).post(f"{base}/{master}/dec_keys", timeout=self.TIMEOUT,
                                         json=body)
                status, message = r2.status_code, _message(r2)
            except requests.RequestException as exc:
                r2, status, message = None, "error", str(exc)[:200]
            self._note("dec", status, message)
            if status != 200:
                with self.lock:
                    self.unmatched.append((t1, time.monotonic(), (master, slave), sorted(sent)))
                continue
            got = {k["key_ID"]: base64.b64decode(k["key"]) for k in r2.json()["keys"]}
            with self.lock:
                for k in got:
                    self.dec_ids[k] += 1
                if got != sent or len(sent) != self.number:
                    self.mismatches.append(((master, slave), sorted(sent)))
                else:
                    self.ok_times.append(time.monotonic())

    def check_exactly_once(self):
        """No key ID delivered twice (by enc_keys or by dec_keys); every key both ends got is
        equal at both ends."""
        dup_enc = [k for k, n in self.enc_ids.items() if n > 1]
        dup_dec = [k for k, n in self.dec_ids.items() if n > 1]
        assert not dup_enc, f"key IDs delivered twice by enc_keys: {dup_enc[:10]}"
        assert not dup_dec, f"key IDs delivered twice by dec_keys: {dup_dec[:10]}"
        assert not self.mismatches, f"ends received different keys: {self.mismatches[:5]}"

    def reasons(self, top=6):
        from collections import Counter
        import re
        c = Counter(f"{w} {s}: " + re.sub(r"[0-9a-f-]{36}", "<id>", m)[:90]
                    for _, w, s, m in self.failures)
        return dict(c.most_common(top))


def _message(r):
    try:
        return str(r.json().get("message", ""))[:200]
    except ValueError:
        return r.text[:200]


def relays_final(api, timeout=40):
    """Waits until every relay the controller keeps is in a final state; returns them. Asserts
    each relay ID appears once."""
    final = {"relayed", "failed", "voided"}
    relays = wait_for(lambda: (lambda rs: rs if all(r["state"] in final for r in rs) else None)(
        api.items("/api/v1/relays", limit=1000)), timeout, 0.2, "every relay in a final state")
    ids = [r["relay_id"] for r in relays]
    assert len(ids) == len(set(ids)), "a relay listed twice"
    return relays


class PrivatePostgres:
    """A private PostgreSQL (scripts/pg-private.sh) in a temp dir: start(), stop(), psql(sql).
    Stopped and removed on exit."""

    def __init__(self, name):
        self.dir = tempfile.mkdtemp(prefix=f"qkdn-pg-{name}-")
        self.script = os.path.join(ROOT, "scripts", "pg-private.sh")
        self.dsn = None

    def start(self):
        out = subprocess.run([self.script, "start", self.dir, "--fast"], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()
        self.dsn = out[-1]
        return self.dsn

    def stop(self):
        subprocess.run([self.script, "stop", self.dir], check=True, capture_output=True)

    def psql(self, sql):
        """Rows of one query, as lists of strings."""
        out = subprocess.run(["psql", self.dsn, "-AtX", "-F", "\t", "-c", sql], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            if exc[0] is None:
                shutil.rmtree(self.dir, ignore_errors=True)
            else:
                print(f"postgres kept in {self.dir}")
        return False


def faketime_env(offset_seconds):
    """Environment that shifts a process's wall clock by offset_seconds with Debian's libfaketime
    (package faketime); its monotonic clock stays real."""
    lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
    if not os.path.exists(lib):
        import glob
        found = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
        if not found:
            raise AssertionError("libfaketime missing: run scripts/install-deps.sh")
        lib = found[0]
    return {"LD_PRELOAD": lib, "FAKETIME": f"{offset_seconds:+d}",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_NO_CACHE": "1"}


class LedgerSampler:
    """Samples GET /api/v1/ledger every `interval` s in a thread: the worst overdue_ms (how long
    the earliest live lease had lapsed) seen while the controller answered."""

    def __init__(self, api, interval=0.2):
        import threading
        self.api, self.interval = api, interval
        self.samples = []  # (overdue_ms, live_keys)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.is_set():
            try:
                led = self.api.get("/api/v1/ledger")
                self.samples.append((led["overdue_ms"], led["live_keys"]))
            except Exception:  # noqa: BLE001  (the controller is down during a fault)
                pass
            time.sleep(self.interval)

    def finish(self):
        self.stop.set()
        self.thread.join(10)
        return max((s[0] for s in self.samples), default=0)


def ledger_drained(net, timeout=40):
    """Waits until the controller's ledger holds no live key and no agent link end holds a
    reserved or allocated key; returns the ledger."""
    led = wait_for(lambda: (lambda x: x if x["live_keys"] == 0 else None)(
        net.api.get("/api/v1/ledger")), timeout, 0.2, "the controller ledger to hold no live key")

    held = []

    def agent_clear():
        held[:] = [f"{km['km_id']}/{l['link_id']}: reserved {l['keys_reserved']} allocated "
                   f"{l['keys_allocated']}" for km in net.admin_state()["kms"]
                   for l in km["links"] if l["keys_reserved"] or l["keys_allocated"]]
        return not held
    try:
        wait_for(agent_clear, timeout, 0.2, "agents to hold no reserved or allocated key")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {held[:10]}") from None
    return led
