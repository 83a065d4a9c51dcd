#!/usr/bin/env python3
"""e2e (issue 20): trust constraints enforced end to end.

A controller and one agent process hosting every KM of a small network with trust levels and
tags. The shortest route S -> D crosses X, a low-trust KM tagged jurisdiction:XX; S -> Y -> Z -> D
goes around it. P and R are joined only through Q (trust 20).

- The route API (and `qkdnctl route show`) shows each route's intermediate KMs with their trust;
  with --min-trust 50 the route goes around X.
- With the network policy avoiding the tag (set with qkdnctl), keys that SAE-S fetches for SAE-D
  over ETSI GS QKD 014 are relayed around X: the relay record shows the intermediates Y, Z and
  their trust, the keys decrypt at SAE-D, the intermediates metric counts 2 per delivered key,
  and accounting per session lists Y and Z.
- An SAE pair with no compliant path (SAE-P -> SAE-R with min trust 50, set with
  `qkdnctl constraint set`) gets a clear refusal: the ETSI 014 error carries the reason, the
  route query says trust_constraints, the refusal counter moves; the reverse pair, without
  constraints, still gets keys (constraints are per pair, never global by accident)."""

import base64
import json
import os
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (Api, Cli, Processes, api_text, binary, log, make_token,  # noqa: E402
                      metric_value, read_port_file, relays_of, wait_for)

POLL = 0.1
HTTP_TIMEOUT = 15

TOPOLOGY = {
    "name": "trust-e2e",
    "kms": [
        {"km_id": "S", "trust_level": 90},
        {"km_id": "X", "trust_level": 10, "tags": ["jurisdiction:XX", "operator:other"]},
        {"km_id": "Y", "trust_level": 90, "tags": ["operator:us"]},
        {"km_id": "Z", "trust_level": 80, "tags": ["operator:us"]},
        {"km_id": "D", "trust_level": 90},
        {"km_id": "P", "trust_level": 90},
        {"km_id": "Q", "trust_level": 20},
        {"km_id": "R"},
    ],
    "links": [
        {"link_id": "SX", "a": "S", "b": "X", "key_rate_bps": 200000},
        {"link_id": "XD", "a": "X", "b": "D", "key_rate_bps": 200000},
        {"link_id": "SY", "a": "S", "b": "Y", "key_rate_bps": 200000},
        {"link_id": "YZ", "a": "Y", "b": "Z", "key_rate_bps": 200000},
        {"link_id": "ZD", "a": "Z", "b": "D", "key_rate_bps": 200000},
        {"link_id": "PQ", "a": "P", "b": "Q", "key_rate_bps": 200000},
        {"link_id": "QR", "a": "Q", "b": "R", "key_rate_bps": 200000},
        {"link_id": "RD", "a": "R", "b": "D", "key_rate_bps": 200000},
    ],
    "applications": [{"sae_id": f"SAE-{k}", "km_id": k} for k in ("S", "D", "P", "R")],
}


def etsi(port, sae):
    s = requests.Session()
    s.trust_env = False
    s.headers["X-SAE-ID"] = sae
    s.base = f"http://127.0.0.1:{port}/api/v1/keys"
    return s


def check(cond, what, detail=""):
    if not cond:
        raise AssertionError(f"{what}: {detail}")
    log(f"ok   {what}")


def main():
    start = time.monotonic()
    controller = binary("QKDN_CONTROLLER", "controller/qkdn-controller")
    agent = binary("QKDN_AGENT", "southbound/qkdn-agent")
    qkdnctl = binary("QKDN_CTL", "northbound/qkdnctl")
    passed = 0
    with Processes("trust") as ps:
        topo = os.path.join(ps.dir, "trust.json")
        with open(topo, "w") as f:
            json.dump(TOPOLOGY, f)
        tokens = os.path.join(ps.dir, "tokens")
        admin_file = os.path.join(ps.dir, "admin.token")
        token = make_token(tokens, "e2e-admin", "admin")
        with open(admin_file, "w") as f:
            f.write(token + "\n")
        ck_port_file = os.path.join(ps.dir, "ck.port")
        api_port_file = os.path.join(ps.dir, "api.port")
        ctl = ps.start("controller", [
            controller, "--topology", topo,
            "--ck-listen", "127.0.0.1:0", "--port-file", ck_port_file, "--insecure-ck",
            "--api-listen", "127.0.0.1:0", "--api-port-file", api_port_file,
            "--api-tokens", tokens, "--status-interval-ms", "200"])
        ck_port = read_port_file(ck_port_file, ctl)
        api_port = read_port_file(api_port_file, ctl)
        api = Api(api_port, token)
        cli = Cli(qkdnctl, f"http://127.0.0.1:{api_port}", admin_file)
        etsi_port_file = os.path.join(ps.dir, "etsi.port")
        ag = ps.start("agent", [
            agent, "--topology", topo, "--all", "--controller", f"127.0.0.1:{ck_port}",
            "--insecure-ck", "--insecure-kma", "--etsi-insecure",
            "--etsi-port-file", etsi_port_file])
        etsi_port = read_port_file(etsi_port_file, ag)
        wait_for(lambda: all(k["connected"] for k in api.items("/api/v1/kms")), 30, POLL,
                 "every KM connected")
        wait_for(lambda: all(lk["oper_state"] == "up" and lk.get("stored_key_bits", 0) > 65536
                             for lk in api.items("/api/v1/links")), 30, POLL,
                 "every link up with key in its pool")

        # Trust is in the model: KMs show it, and the CLI lists it.
        kms = {k["km_id"]: k for k in api.items("/api/v1/kms")}
        check(kms["X"]["trust_level"] == 10 and "jurisdiction:XX" in kms["X"]["tags"]
              and kms["R"]["trust_level"] is None, "KMs carry trust levels and tags", kms["X"])
        code, out, _ = cli.run("km", "list")
        check(code == 0 and "TRUST" in out.splitlines()[0], "qkdnctl km list shows TRUST", out)
        passed += 2

        # Route answers show the intermediates and their trust; --min-trust goes around X.
        plain = cli.json("route", "show", "S", "D")
        best = plain["items"][0]
        check(best["kms"] == ["S", "X", "D"] and best["intermediate_kms"] == 1
              and best["intermediates"][0] == {"km_id": "X", "trust_level": 10,
                                               "tags": ["jurisdiction:XX", "operator:other"]}
              and best["min_trust_level"] == 10, "the shortest route crosses X (trust 10)", best)
        strict = cli.json("route", "show", "S", "D", "--min-trust", "50")
        check([r["kms"] for r in strict["items"]] == [["S", "Y", "Z", "D"]]
              and strict["items"][0]["min_trust_level"] == 80,
              "with --min-trust 50 the only route goes around X", strict["items"])
        code, out, _ = cli.run("route", "show", "S", "D", "--avoid-tag", "jurisdiction:XX")
        check(code == 0 and "Y(90) Z(80)" in out, "qkdnctl prints the intermediates' trust", out)
        passed += 3

        # Policy: avoid jurisdiction:XX. Relays for SAE-S -> SAE-D go around X.
        code, out, err = cli.run("policy", "set", "manual", "--avoid-tags", "jurisdiction:XX")
        check(code == 0, "qkdnctl policy set manual --avoid-tags jurisdiction:XX", err)
        check(api.get("/api/v1/policy")["avoid_tags"] == ["jurisdiction:XX"],
              "the policy shows its avoided tags")
        metrics_before = api_text(api, "/metrics")
        enc = etsi(etsi_port, "SAE-S")
        dec = etsi(etsi_port, "SAE-D")
        r = enc.post(f"{enc.base}/SAE-D/enc_keys", json={"number": 3, "size": 256},
                     timeout=HTTP_TIMEOUT)
        check(r.status_code == 200, "enc_keys SAE-S -> SAE-D", r.text)
        got = {k["key_ID"]: base64.b64decode(k["key"]) for k in r.json()["keys"]}
        d = dec.post(f"{dec.base}/SAE-S/dec_keys",
                     json={"key_IDs": [{"key_ID": k} for k in got]}, timeout=HTTP_TIMEOUT)
        check(d.status_code == 200 and {k["key_ID"]: base64.b64decode(k["key"])
                                        for k in d.json()["keys"]} == got,
              "dec_keys at SAE-D returns the same keys", d.text)
        # The SAE has its keys when the destination KM filed them; the controller records the
        # relay as relayed when the source KM's 0x1405 reaches it, a moment later: poll, bounded.
        wait_for(lambda: any(x["state"] == "relayed" for x in relays_of(api, "S", "D")), 10, POLL,
                 "the relay S -> D recorded as relayed")
        relays = [x for x in relays_of(api, "S", "D") if x["state"] == "relayed"]
        check(relays and all(x["route"]["kms"] == ["S", "Y", "Z", "D"] for x in relays),
              "every relay S -> D went around X", [x["route"]["kms"] for x in relays])
        rec = relays[-1]["route"]
        check(rec["intermediate_kms"] == 2
              and [(i["km_id"], i["trust_level"]) for i in rec["intermediates"]]
              == [("Y", 90), ("Z", 80)] and rec["min_trust_level"] == 80,
              "the relay record shows the intermediates and their trust", rec)
        code, out, _ = cli.run("relay", "list")
        check(code == 0 and "INTERMEDIATES" in out and "Y(90) Z(80)" in out,
              "qkdnctl relay list shows the intermediates", out)
        passed += 7

        # The metric: 2 intermediate KMs per delivered key for these relays.
        keys = sum(x["number_of_keys"] for x in relays)

        def metric_moved():
            text = api_text(api, "/metrics")
            n = (metric_value(text, "qkdn_key_relay_intermediate_kms_count")
                 - metric_value(metrics_before, "qkdn_key_relay_intermediate_kms_count"))
            s = (metric_value(text, "qkdn_key_relay_intermediate_kms_sum")
                 - metric_value(metrics_before, "qkdn_key_relay_intermediate_kms_sum"))
            return (n, s) if n >= keys else None
        n, s = wait_for(metric_moved, 10, POLL, "qkdn_key_relay_intermediate_kms observed")
        check(n == keys and s == 2 * keys,
              "qkdn_key_relay_intermediate_kms: one observation per delivered key, 2 each",
              (n, s, keys))
        passed += 1

        # Accounting per session names the intermediate KMs the session's keys crossed.
        def exposure():
            page = api.get("/api/v1/accounting", group_by="session_id", sae_id="SAE-S")
            rows = [x for x in page["items"] if x.get("intermediates")]
            return rows or None
        rows = wait_for(exposure, 10, POLL, "accounting rows of SAE-S")
        seen = {(i["km_id"], i["trust_level"]) for x in rows for i in x["intermediates"]}
        check(seen == {("Y", 90), ("Z", 80)}, "accounting shows the intermediates and trust", rows)
        passed += 1

        # SAE-P -> SAE-R has no compliant path: a clear refusal, never a relaxed route.
        code, out, err = cli.run("constraint", "set", "SAE-P", "SAE-R", "--min-trust", "50")
        check(code == 0, "qkdnctl constraint set SAE-P SAE-R --min-trust 50", err)
        shown = cli.json("constraint", "list")
        check([(c["src_sae"], c["dst_sae"], c["min_trust_level"]) for c in shown]
              == [("SAE-P", "SAE-R", 50)], "qkdnctl constraint list", shown)
        refused_before = metric_value(api_text(api, "/metrics"), "qkdn_route_trust_refusals_total")
        p = etsi(etsi_port, "SAE-P")
        r = p.post(f"{p.base}/SAE-R/enc_keys", json={"number": 1, "size": 256},
                   timeout=HTTP_TIMEOUT)
        body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else {}
        text = json.dumps(body)
        check(r.status_code == 503 and "trust constraints" in text and "'Q'" in text
              and "trust 20 < 50" in text,
              "enc_keys SAE-P -> SAE-R is refused with the reason", (r.status_code, r.text))
        check(not [x for x in relays_of(api, "P", "R") if x["state"] == "relayed"],
              "no key was relayed P -> R")
        wait_for(lambda: metric_value(api_text(api, "/metrics"),
                                      "qkdn_route_trust_refusals_total") >= refused_before + 1,
                 10, POLL, "qkdn_route_trust_refusals_total counts the refusal")
        code, out, _ = cli.run("route", "show", "P", "R", "--min-trust", "50")
        check(code == 3 and "no route (trust_constraints)" in out and "'Q' (trust 20 < 50)" in out,
              "qkdnctl route show P R --min-trust 50 says why there is none", (code, out))
        # The reverse pair has no constraints: its keys cross Q.
        rr = etsi(etsi_port, "SAE-R")
        r = rr.post(f"{rr.base}/SAE-P/enc_keys", json={"number": 1, "size": 256},
                    timeout=HTTP_TIMEOUT)
        check(r.status_code == 200, "enc_keys SAE-R -> SAE-P (no constraints) succeeds", r.text)
        passed += 5
        assert ctl.poll() is None and ag.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print(f"e2e trust: {passed} passed, 0 failed")


if __name__ == "__main__":
    main()
