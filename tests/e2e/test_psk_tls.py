#!/usr/bin/env python3
"""e2e (issue 19, vertical integration, draft TR.QKDN-nq 7.1 and 8.1.1): two applications talk
over TLS 1.3 keyed by a relayed QKD key, with no certificate on their channel. qkdn-psk-tls client
(SAE-KOG) fetches a key shared with SAE-HON from its KM through ETSI 014 (mutual TLS), offers its
key_ID as the PSK identity; the qkdn-psk-tls server (SAE-HON, whose KM is two hops away on tokyo-qkd: the key is relayed through OTE)
fetches the same key by that ID from its own KM. Checked: the line goes through in both modes
(psk_ke, and psk_dhe_ke with an (EC)DHE group), both ends name the same key_ID, the key is
consumed at the KM (asking for it again is refused), a mode mismatch and a key meant for another
SAE are refused at the handshake, an SAE no KM serves gets no key."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import Processes, binary, log, read_port_file, start_network

TIMEOUT = 60


def sae_flags(net, sae):
    certs = net.certs
    return ["--kme", f"127.0.0.1:{net.etsi_port}", "--kme-ca", f"{certs}/ca.pem",
            "--sae-cert", f"{certs}/sae/{sae}.pem", "--sae-key", f"{certs}/sae/{sae}.key",
            "--sae-id", sae]


def handshake_line(text):
    lines = [l for l in text.splitlines() if l.startswith("handshake: ")]
    assert len(lines) == 1, text
    return dict(kv.split("=", 1) for kv in lines[0][len("handshake: "):].split())


def main():
    tool = binary("QKDN_PSK_TLS", "tools/psk_tls/qkdn-psk-tls")
    with Processes("psk_tls") as ps:
        net = start_network(ps, "tokyo-qkd.json", extra_saes=["SAE-Intruder"])

        def server(kex, count, name):
            port_file = os.path.join(ps.dir, f"{name}.port")
            proc = ps.start(name, [tool, "server", *sae_flags(net, "SAE-HON"),
                                   "--peer-sae", "SAE-KOG", "--kex", kex, "--count", str(count),
                                   "--port-file", port_file])
            return proc, read_port_file(port_file, proc)

        def client(sae, peer, port, kex, message):
            return subprocess.run([tool, "client", *sae_flags(net, sae), "--peer-sae", peer,
                                   "--connect", f"127.0.0.1:{port}", "--kex", kex,
                                   "--message", message],
                                  capture_output=True, text=True, timeout=TIMEOUT)

        def server_output(proc, name):
            proc.wait(TIMEOUT)
            with open(os.path.join(ps.dir, f"{name}.log")) as f:
                return proc.returncode, f.read()

        # 1. psk_ke: QKD key only. Then a psk_dhe_ke client against it, and a key for another SAE.
        srv, port = server("psk_ke", 3, "server-ke")
        c = client("SAE-KOG", "SAE-HON", port, "psk_ke", "hello over a QKD key")
        assert c.returncode == 0, (c.returncode, c.stdout, c.stderr)
        ch = handshake_line(c.stdout)
        assert ch["kex"] == "psk_ke" and "group" not in ch, ch
        assert ch["cipher"] == "TLS_AES_256_GCM_SHA384", ch
        assert "received: echo: hello over a QKD key" in c.stdout, c.stdout
        log(f"psk_ke: key_ID {ch['key_ID']}")

        c = client("SAE-KOG", "SAE-HON", port, "psk_dhe_ke", "mode mismatch")
        assert c.returncode == 1, (c.returncode, c.stdout, c.stderr)
        assert "handshake" in c.stderr, c.stderr

        # SAE-HAK holds a key shared with SAE-OTE, not with SAE-HON: HON's KM refuses its ID.
        c = client("SAE-HAK", "SAE-OTE", port, "psk_ke", "wrong key")
        assert c.returncode == 1, (c.returncode, c.stdout, c.stderr)

        rc, out = server_output(srv, "server-ke")
        assert rc == 1, (rc, out)  # two of three connections refused
        sh = handshake_line(out)
        assert sh["key_ID"] == ch["key_ID"] and sh["kex"] == "psk_ke", (sh, ch)
        assert "received: hello over a QKD key" in out, out
        assert out.count("refused: ") == 2, out
        assert "no key for the client's key_ID" in out, out

        # The server took the key from its KM: it is not supplied a second time.
        hon = net.etsi("SAE-HON")
        r = hon.get(f"{net.etsi_base}/api/v1/keys/SAE-KOG/dec_keys",
                    params={"key_ID": ch["key_ID"]}, timeout=20)
        assert r.status_code in (400, 404), (r.status_code, r.text)

        # 2. psk_dhe_ke: the QKD key mixed with an (EC)DHE share over the strongest groups.
        srv, port = server("psk_dhe_ke", 1, "server-dhe")
        c = client("SAE-KOG", "SAE-HON", port, "psk_dhe_ke", "hybrid")
        assert c.returncode == 0, (c.returncode, c.stdout, c.stderr)
        ch = handshake_line(c.stdout)
        assert ch["kex"] == "psk_dhe_ke" and ch.get("group"), ch
        rc, out = server_output(srv, "server-dhe")
        assert rc == 0, (rc, out)
        sh = handshake_line(out)
        assert sh["key_ID"] == ch["key_ID"] and sh["group"] == ch["group"], (sh, ch)
        log(f"psk_dhe_ke: key_ID {ch['key_ID']} group {ch['group']}")

        # 3. An SAE no KM serves gets no key; bad options are refused with exit code 2.
        c = client("SAE-Intruder", "SAE-HON", port, "psk_ke", "x")
        assert c.returncode == 1 and "ETSI 014" in c.stderr, (c.returncode, c.stderr)
        bad = subprocess.run([tool, "client", "--kme", "127.0.0.1:1", "--sae-id", "A",
                              "--peer-sae", "B/../x", "--connect", "127.0.0.1:1",
                              "--message", "m"], capture_output=True, text=True, timeout=TIMEOUT)
        assert bad.returncode == 2 and "SAE ID" in bad.stderr, (bad.returncode, bad.stderr)
        log("ok")


if __name__ == "__main__":
    main()
