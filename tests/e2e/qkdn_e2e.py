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
