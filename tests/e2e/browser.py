"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for tests.

Only Debian packages: chromium and python3-websocket. Chromium listens on a free loopback port
(--remote-debugging-port=0; the port is read from DevToolsActivePort in its own profile folder),
with the flags that work in this sandbox (no background networking, no sandbox as root)."""

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websocket

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--remote-allow-origins=*", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def chromium_path():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("chromium not found (scripts/install-deps.sh installs Debian's chromium)")


class Browser:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, width=1400, height=900, log_dir=None):
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="qkdn-chromium-")
        log = open(os.path.join(log_dir or self.profile, "chromium.log"), "w")
        self.proc = subprocess.Popen(
            [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=log, stderr=subprocess.STDOUT)
        self.ids = itertools.count(1)
        self.ws = None
        try:
            self._connect()
        except Exception:
            self.close()
            raise

    def _connect(self, timeout=60):
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}")
            if os.path.exists(port_file):
                lines = open(port_file).read().split("\n")
                if len(lines) >= 2 and lines[0].strip():
                    port = int(lines[0])
                    break
            if time.monotonic() > deadline:
                raise AssertionError("chromium did not open its DevTools port")
            time.sleep(0.05)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("chromium shows no page target")
            time.sleep(0.05)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method, **params):
        """Sends one command and returns its result (events in between are dropped)."""
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def navigate(self, url, timeout=30):
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout, what=f"{url} loaded")

    def eval(self, expression):
        """The value of a JavaScript expression (awaited if it is a promise)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"JS error in {expression[:80]}...: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression, timeout, interval=0.1, what=None):
        """Polls a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.eval(expression)
                if last:
                    return last
            except AssertionError as e:  # page still loading
                last = str(e)
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what or expression}"
                             f" (last value: {last!r})")

    def screenshot(self):
        """PNG bytes of the viewport."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return base64.b64decode(data)

    def close(self):
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
