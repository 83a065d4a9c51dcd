"""High availability (issue 17) test support: two qkdn-controller --ha processes sharing a private
PostgreSQL, one agent following the leader, and a TCP proxy that can stall (a controller cut off
from the database but alive)."""

import os
import select
import socket
import threading
import time
from urllib.parse import urlparse

import requests

from qkdn_e2e import Api, log, read_port_file, start_network, wait_for

LEASE_MS = 3000


class StallProxy:
    """TCP proxy 127.0.0.1:<port> -> target. stall(): stops forwarding in both directions (the
    connections stay open: the client's queries hang, as behind a partition). heal(): closes every
    connection it carries and forwards new ones again."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.stalled = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.pairs = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            t = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            t.start()

    def _pump(self, a, b):
        try:
            while not self.stop.is_set():
                if self.stalled.is_set():
                    time.sleep(0.01)
                    continue
                r, _, _ = select.select([a, b], [], [], 0.05)
                for s in r:
                    if self.stalled.is_set():
                        break
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def stall(self):
        self.stalled.set()

    def heal(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.stalled.clear()

    def close(self):
        self.stop.set()
        self.heal()
        self.listener.close()


def _pg_bindir():
    import glob
    import shutil as _sh
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "pg_basebackup")):
            return d
    if _sh.which("pg_basebackup"):
        return os.path.dirname(_sh.which("pg_basebackup"))
    raise AssertionError("pg_basebackup not found (install postgresql-15)")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ReplicatedPostgres:
    """Two private PostgreSQL instances in a temp dir (as the postgres user when run as root): a
    primary and a streaming replica made by pg_basebackup -R, replication synchronous
    (synchronous_commit = on, synchronous_standby_names names the replica), so that a commit is
    acknowledged only once the replica has it. dsn lists both hosts with
    target_session_attrs=read-write: libpq connects to whichever accepts writes.
    stop_primary() (immediate: a crash, no shutdown checkpoint), promote(). fsync is off (a
    process kill, not a machine crash, loses nothing the OS has)."""

    def __init__(self, name):
        import tempfile
        self.bindir = _pg_bindir()
        self.dir = tempfile.mkdtemp(prefix=f"qkdn-pgrep-{name}-")
        self.root = os.geteuid() == 0
        if self.root:
            import shutil as _sh
            _sh.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o700)
        self.ports = {"primary": _free_port(), "replica": _free_port()}
        self.dsn = ("host=127.0.0.1,127.0.0.1 port={primary},{replica} user=postgres "
                    "dbname=postgres target_session_attrs=read-write").format(**self.ports)
        self.running = set()
        self.promoted = False

    def _run(self, argv, timeout=120, check=True):
        import subprocess
        if self.root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{argv}: {r.returncode}: {r.stderr[-2000:]}")
        return r

    def _data(self, which):
        return os.path.join(self.dir, which)

    def _options(self, which):
        o = (f"-c port={self.ports[which]} -c listen_addresses=127.0.0.1 "
             f"-c unix_socket_directories={self.dir} -c max_connections=200 -c fsync=off "
             "-c full_page_writes=off -c synchronous_commit=on -c wal_level=replica "
             "-c max_wal_senders=5 -c hot_standby=on")
        if which == "primary" and not self.promoted:
            # Only the primary waits for the replica: the promoted replica has no standby.
            o += " -c synchronous_standby_names=replica1"
        return o

    def start(self, which):
        self._run([f"{self.bindir}/pg_ctl", "start", "-w", "-t", "60", "-D", self._data(which),
                   "-l", os.path.join(self.dir, f"{which}.log"), "-o", self._options(which)])
        self.running.add(which)

    def stop(self, which, mode="fast"):
        if which in self.running:
            self._run([f"{self.bindir}/pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D",
                       self._data(which)], check=False)
            self.running.discard(which)

    def setup(self):
        self._run([f"{self.bindir}/initdb", "-D", self._data("primary"), "-U", "postgres", "-A",
                   "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        self.start("primary")
        self._run([f"{self.bindir}/pg_basebackup", "-h", "127.0.0.1", "-p",
                   str(self.ports["primary"]), "-U", "postgres", "-D", self._data("replica"),
                   "-R", "-X", "stream", "--no-sync", "-c", "fast"])
        with open(os.path.join(self._data("replica"), "postgresql.auto.conf"), "a") as f:
            f.write(f"primary_conninfo = 'host=127.0.0.1 port={self.ports['primary']} "
                    "user=postgres application_name=replica1'\n")
        self.start("replica")
        wait_for(lambda: self.psql_at("primary", "SELECT sync_state FROM pg_stat_replication "
                                      "WHERE application_name = 'replica1'") == [["sync"]],
                 60, 0.1, "the replica to stream synchronously")
        return self

    def psql_at(self, which, sql):
        import subprocess
        out = subprocess.run(["psql", f"host=127.0.0.1 port={self.ports[which]} user=postgres "
                              "dbname=postgres", "-AtX", "-F", "\t", "-c", sql], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def psql(self, sql):
        """Rows of one query on whichever instance accepts writes."""
        import subprocess
        out = subprocess.run(["psql", self.dsn, "-AtX", "-F", "\t", "-c", sql], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def stop_primary(self):
        """The primary crashes (pg_ctl stop -m immediate)."""
        self.stop("primary", "immediate")

    def promote(self):
        self._run([f"{self.bindir}/pg_ctl", "promote", "-w", "-t", "60", "-D",
                   self._data("replica")])
        self.promoted = True

    def __enter__(self):
        try:
            return self.setup()
        except BaseException:
            self.__exit__(*__import__("sys").exc_info())
            raise

    def __exit__(self, *exc):
        import shutil as _sh
        for which in list(self.running):
            self.stop(which, "immediate")
        if exc[0] is None:
            _sh.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"postgres kept in {self.dir}")
        return False


def dsn_via(dsn, port):
    """The DSN with its port replaced (through a proxy)."""
    u = urlparse(dsn)
    return dsn.replace(f"{u.hostname}:{u.port}", f"{u.hostname}:{port}", 1)


def health(api_port, timeout=2):
    r = requests.get(f"http://127.0.0.1:{api_port}/api/v1/health", timeout=timeout)
    return r.json()


def role(api_port):
    """The controller's role by its health, or None when it does not answer."""
    try:
        return health(api_port)["ha"]["role"]
    except Exception:  # noqa: BLE001  (down, or restarting its listeners)
        return None


class Controller:
    """One qkdn-controller --ha process with its own ports (port files in its own directory)."""

    def __init__(self, ps, name, argv_base, dsn, ck_port=0, api_port=0, env=None):
        self.ps, self.name, self.dsn = ps, name, dsn
        self.dir = os.path.join(ps.dir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.argv = list(argv_base) + [
            "--ck-listen", f"127.0.0.1:{ck_port}", "--port-file", f"{self.dir}/ck.port",
            "--api-listen", f"127.0.0.1:{api_port}", "--api-port-file", f"{self.dir}/api.port",
            "--store-dsn", dsn, "--ha", "--ha-lease-ms", str(LEASE_MS), "--ha-holder", name]
        self.env = env
        self.starts = 0
        self.proc = None

    def start(self):
        for f in ("ck.port", "api.port"):
            try:
                os.remove(os.path.join(self.dir, f))
            except FileNotFoundError:
                pass
        self.starts += 1
        self.proc = self.ps.start(f"{self.name}-{self.starts}", self.argv, env=self.env)
        self.ck_port = read_port_file(f"{self.dir}/ck.port", self.proc)
        self.api_port = read_port_file(f"{self.dir}/api.port", self.proc)
        # Restarts bind the same ports (agents and clients know them).
        self.argv[self.argv.index("--ck-listen") + 1] = f"127.0.0.1:{self.ck_port}"
        self.argv[self.argv.index("--api-listen") + 1] = f"127.0.0.1:{self.api_port}"
        return self

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def role(self):
        return role(self.api_port)

    def health(self):
        return health(self.api_port)


def start_ha_network(ps, pg, topology, dsn_a=None, key_rate_bps=1_000_000, b_env=None):
    """Controller A (leader, through dsn_a if given) and agent via start_network, then controller
    B (standby) on the same database, and the agent restarted with both addresses. Returns
    (net, a, b) with net.api pointing at A."""
    net = start_network(ps, topology, key_rate_bps=key_rate_bps,
                        controller_args=["--store-dsn", dsn_a or pg.dsn, "--ha",
                                         "--ha-lease-ms", str(LEASE_MS), "--ha-holder", "A"])
    argv = net.controller_argv
    base = argv[:3] + argv[argv.index("--api-tokens"):argv.index("--store-dsn")]
    a = Controller(ps, "A", base, dsn_a or pg.dsn)
    a.proc, a.starts = net.controller, 1
    a.ck_port = int(argv[argv.index("--ck-listen") + 1].rsplit(":", 1)[1])
    a.api_port = int(argv[argv.index("--api-listen") + 1].rsplit(":", 1)[1])
    a.argv[a.argv.index("--ck-listen") + 1] = f"127.0.0.1:{a.ck_port}"
    a.argv[a.argv.index("--api-listen") + 1] = f"127.0.0.1:{a.api_port}"
    wait_for(lambda: a.role() == "leader", 20, 0.05, "A to lead")
    b = Controller(ps, "B", base, pg.dsn, env=b_env).start()
    wait_for(lambda: b.role() == "standby", 20, 0.05, "B to stand by")
    # The agent learns both controllers (a KM goes to whichever leads).
    ps.stop(net.agent)
    argv = net.agent_argv
    argv[argv.index("--controller") + 1] = f"127.0.0.1:{a.ck_port},127.0.0.1:{b.ck_port}"
    # Fresh ports (another process may have taken the old ones meanwhile), read back.
    files = {}
    for flag, pf in (("--admin-listen", "--admin-port-file"),
                     ("--etsi-listen", "--etsi-port-file")):
        argv[argv.index(flag) + 1] = "127.0.0.1:0"
        files[flag] = argv[argv.index(pf) + 1]
        os.remove(files[flag])
    net.agent = ps.start("agent-ha", argv)
    net.admin_port = read_port_file(files["--admin-listen"], net.agent)
    etsi_port = read_port_file(files["--etsi-listen"], net.agent)
    net.etsi_base = net.etsi_base.rsplit(":", 1)[0] + f":{etsi_port}"
    net.etsi_port = etsi_port
    argv[argv.index("--admin-listen") + 1] = f"127.0.0.1:{net.admin_port}"
    argv[argv.index("--etsi-listen") + 1] = f"127.0.0.1:{etsi_port}"
    net.wait_registered(30)
    wait_for(lambda: all(l["oper_state"] == "up" for l in net.api.items("/api/v1/links")), 30,
             0.1, "every link up")
    return net, a, b


def api_of(net, controller):
    """An Api client of `controller` with the network's token."""
    api = Api(controller.api_port)
    api.session.headers.update(net.api.session.headers)
    return api


def wait_leader(controllers, timeout, since=None):
    """Polls until exactly one of `controllers` reports leader; returns (controller, seconds since
    `since`)."""
    def one():
        leaders = [c for c in controllers if c.proc.poll() is None and c.role() == "leader"]
        return leaders[0] if len(leaders) == 1 else None
    c = wait_for(one, timeout, 0.02, "one leader")
    return c, (time.monotonic() - since) if since is not None else None


def log_times(path, needle):
    """Unix times (s) of the log lines of `path` that contain `needle` (RFC 3339 prefix)."""
    from datetime import datetime
    out = []
    for line in open(path, errors="replace"):
        if needle in line:
            stamp = line.split(" ", 1)[0]
            try:
                out.append(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
                           .replace(tzinfo=__import__("datetime").timezone.utc).timestamp())
            except ValueError:
                pass
    return out


__all__ = ["StallProxy", "ReplicatedPostgres", "dsn_via", "health", "role", "Controller", "start_ha_network",
           "api_of", "wait_leader", "log_times", "LEASE_MS", "log"]
