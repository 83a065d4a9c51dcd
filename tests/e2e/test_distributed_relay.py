#!/usr/bin/env python3
"""e2e (issue 19, "Distributed relay (Q.4164 7.1)"; docs/key-supply.md "Distributed relay"):
the controller's relay routing policy is distributed (--relay-routing distributed, sent to every
KM in its register response). A source KM asks 0x1401 for its next hop, takes its own hop keys
and sends the Relay; every transit KM asks 0x1401 for its own next hop and does the same.

Random topology (fixed seed, QKDN_DISTREL_SEED): 16 KMs, a random spanning tree plus extra links,
one SAE per KM. Two agents: one hosts every KM but the victim V, the other hosts V alone.

Phase 1: many enc_keys between random non-adjacent SAE pairs (none at V): every one succeeds,
dec_keys at the slave gives identical keys, the destination's delivery record says
relay_routing "distributed" with a route of >= 3 KMs (so transit KMs chose hops), the
controller started no centralized relay (its relay table is empty) and counted 0x1401 queries,
every ETSI key ID and key is unique, and every link end consumed exactly the hop keys the
routes need (each hop's keys taken once at each end: never a key used twice, none lost).

Phase 2: a relay whose route passes V (preferably as its second hop, so that a transit KM sees
the loss); V's agent is frozen (SIGSTOP) so the Relay frame waits at V, then killed (SIGKILL)
mid-relay: the SAE's enc_keys fails loudly (503 naming the lost KMA link into V), and no link
end of the surviving agent holds a reserved or allocated key."""

import base64
import collections
import json
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkdn_e2e import (Api, Processes, api_text, binary, log, make_certs, make_token,
                      read_port_file, wait_for)

import requests

SEED = int(os.environ.get("QKDN_DISTREL_SEED", "1907"))
N_KMS = 16
EXTRA_LINKS = 6
RELAYS = 40
TIMEOUT = 20


def make_topology(rng):
    kms = [f"K{i:02d}" for i in range(N_KMS)]
    edges = set()
    order = kms[:]
    rng.shuffle(order)
    for i in range(1, len(order)):  # a random spanning tree: connected
        a, b = order[i], order[rng.randrange(i)]
        edges.add(tuple(sorted((a, b))))
    while len(edges) < N_KMS - 1 + EXTRA_LINKS:
        a, b = rng.sample(kms, 2)
        edges.add(tuple(sorted((a, b))))
    links = [{"link_id": f"{a}-{b}", "a": a, "b": b, "key_rate_bps": 400000}
             for a, b in sorted(edges)]
    return {"name": f"distrel-{SEED}", "kms": [{"km_id": k} for k in kms], "links": links,
            "applications": [{"sae_id": f"SAE-{k}", "km_id": k} for k in kms]}


def shortest(adj, src, dst, avoid=()):
    prev = {src: None}
    queue = collections.deque([src])
    while queue:
        x = queue.popleft()
        for y in sorted(adj[x]):
            if y not in prev and y not in avoid:
                prev[y] = x
                queue.append(y)
    if dst not in prev:
        return None
    path = [dst]
    while path[-1] != src:
        path.append(prev[path[-1]])
    return path[::-1]


def admin_state(port):
    r = requests.get(f"http://127.0.0.1:{port}/admin/state", timeout=10)
    r.raise_for_status()
    return r.json()


def main():
    start = time.monotonic()
    rng = random.Random(SEED)
    topo = make_topology(rng)
    adj = collections.defaultdict(set)
    for l in topo["links"]:
        adj[l["a"]].add(l["b"])
        adj[l["b"]].add(l["a"])
    # The victim: a KM of degree >= 2 that is a transit of some shortest path.
    victim = max((k["km_id"] for k in topo["kms"]), key=lambda k: (len(adj[k]), k))
    log(f"seed {SEED}: {N_KMS} KMs, {len(topo['links'])} links, victim {victim}")
    controller = binary("QKDN_CONTROLLER", "controller/qkdn-controller")
    agent = binary("QKDN_AGENT", "southbound/qkdn-agent")
    with Processes("distrel") as ps:
        topo_path = os.path.join(ps.dir, "distrel.json")
        with open(topo_path, "w") as f:
            json.dump(topo, f)
        certs = os.path.join(ps.dir, "certs")
        make_certs(certs, topo_path)
        tokens = os.path.join(ps.dir, "tokens")
        token = make_token(tokens, "e2e", "viewer")
        ck_port_file = os.path.join(ps.dir, "ck.port")
        api_port_file = os.path.join(ps.dir, "api.port")
        ctl = ps.start("controller", [
            controller, "--topology", topo_path, "--relay-routing", "distributed",
            "--ck-listen", "127.0.0.1:0", "--port-file", ck_port_file,
            "--api-listen", "127.0.0.1:0", "--api-port-file", api_port_file,
            "--api-tokens", tokens, "--tls-ca", f"{certs}/ca.pem",
            "--tls-cert", f"{certs}/controller.pem", "--tls-key", f"{certs}/controller.key"])
        ck_port = read_port_file(ck_port_file, ctl)
        api = Api(read_port_file(api_port_file, ctl), token)
        common = ["--topology", topo_path, "--controller", f"127.0.0.1:{ck_port}",
                  "--tls-ca", f"{certs}/ca.pem", "--tls-cert-dir", f"{certs}/km",
                  "--admin-listen", "127.0.0.1:0"]
        main_kms = [k["km_id"] for k in topo["kms"] if k["km_id"] != victim]
        ag = ps.start("agent", [agent, *common, *[a for k in main_kms for a in ("--km", k)],
                                "--admin-port-file", os.path.join(ps.dir, "admin.port"),
                                "--etsi-listen", "127.0.0.1:0",
                                "--etsi-port-file", os.path.join(ps.dir, "etsi.port"),
                                "--etsi-cert", f"{certs}/etsi.pem",
                                "--etsi-key", f"{certs}/etsi.key"])
        vic = ps.start("agent-victim", [agent, *common, "--km", victim, "--admin-port-file",
                                        os.path.join(ps.dir, "admin-victim.port")])
        admin_port = read_port_file(os.path.join(ps.dir, "admin.port"), ag)
        etsi_port = read_port_file(os.path.join(ps.dir, "etsi.port"), ag)
        read_port_file(os.path.join(ps.dir, "admin-victim.port"), vic)
        wait_for(lambda: sum(k["connected"] for k in api.items("/api/v1/kms")) == N_KMS, 30, 0.1,
                 f"{N_KMS} KMs registered")
        wait_for(lambda: all(l["oper_state"] == "up" for l in api.items("/api/v1/links")), 30,
                 0.1, "every link up")
        state = admin_state(admin_port)
        assert all(k["relay_routing"] == "distributed" for k in state["kms"]), \
            [(k["km_id"], k["relay_routing"]) for k in state["kms"]]

        base = f"https://127.0.0.1:{etsi_port}/api/v1/keys"

        def etsi(sae):
            s = requests.Session()
            s.trust_env = False
            s.verify = os.path.join(certs, "ca.pem")
            s.cert = (os.path.join(certs, "sae", f"{sae}.pem"),
                      os.path.join(certs, "sae", f"{sae}.key"))
            return s

        # ---- phase 1: many relays between random SAE pairs, hop by hop -----------------------
        pairs = []
        while len(pairs) < RELAYS:
            a, b = rng.sample(main_kms, 2)
            if b not in adj[a]:
                pairs.append((a, b))
        seen_ids = set()
        seen_keys = set()
        expected = collections.Counter()  # (km, link) -> hop keys its end must have consumed
        for i, (a, b) in enumerate(pairs):
            number = rng.choice([1, 2, 3])
            size = rng.choice([256, 512])
            r = etsi(f"SAE-{a}").post(f"{base}/SAE-{b}/enc_keys",
                                      json={"number": number, "size": size}, timeout=TIMEOUT)
            assert r.status_code == 200, (i, a, b, r.status_code, r.text)
            keys = {k["key_ID"]: k["key"] for k in r.json()["keys"]}
            assert len(keys) == number, r.text
            for kid, key in keys.items():
                assert kid not in seen_ids and key not in seen_keys, f"key {kid} handed out twice"
                assert len(base64.b64decode(key)) == size // 8
                seen_ids.add(kid)
                seen_keys.add(key)
            back = etsi(f"SAE-{b}").post(f"{base}/SAE-{a}/dec_keys",
                                         json={"key_IDs": [{"key_ID": k} for k in keys]},
                                         timeout=TIMEOUT)
            assert back.status_code == 200, (back.status_code, back.text)
            assert {k["key_ID"]: k["key"] for k in back.json()["keys"]} == keys, "keys differ"
            # The destination's record of this delivery: distributed, its route hop by hop.
            first = sorted(keys)[0]
            recs = [d for k in admin_state(admin_port)["kms"] if k["km_id"] == b
                    for d in k["key_deliveries"]["recent"]
                    if d["role"] == "slave" and d["first_key_id"] in keys]
            assert len(recs) == 1, (first, recs)
            rec = recs[0]
            assert rec["path"] == "relay" and rec["relay_routing"] == "distributed", rec
            route = rec["route"]
            assert route[0] == a and route[-1] == b and len(route) >= 3, route
            assert len(set(route)) == len(route), f"route repeats a KM: {route}"
            for x, y in zip(route, route[1:]):
                assert y in adj[x], f"no link {x}-{y} in {route}"
                link = f"{min(x, y)}-{max(x, y)}"
                units = number * (size // 256)
                expected[(x, link)] += units
                expected[(y, link)] += units
            log(f"relay {i + 1}/{RELAYS}: SAE-{a} -> SAE-{b} {number}x{size} over "
                f"{' -> '.join(route)}")
        # The controller routed (0x1401) and reserved nothing: no centralized relay at all.
        assert api.items("/api/v1/relays") == [], "a relay went through 0x1403"
        metrics = api_text(api, "/metrics")
        asked = sum(float(line.rpartition(" ")[2]) for line in metrics.splitlines()
                    if line.startswith("qkdn_ck_messages_total{") and 'direction="in"' in line
                    and "next_hop" in line.lower())
        hops = len(expected)
        assert asked >= RELAYS, f"0x1401 asked {asked} times for {RELAYS} relays: {metrics}"
        # Every link end consumed exactly the hop keys of the routes (no adjacent supply ran):
        # each hop key was taken once at each end, none twice, none lost.
        state = admin_state(admin_port)
        got = {(k["km_id"], l["link_id"]): l["keys_consumed"] for k in state["kms"]
               for l in k["links"]}
        for key, value in got.items():
            assert value == expected.get(key, 0), (key, value, expected.get(key, 0))
        for k in state["kms"]:
            for l in k["links"]:
                total = (l["keys_available"] + l["keys_reserved"] + l["keys_allocated"] +
                         l["keys_consumed"] + l["keys_discarded"])
                assert l["keys_generated"] == total, (k["km_id"], l)
                assert l["keys_reserved"] == 0 and l["keys_allocated"] == 0, (k["km_id"], l)
        log(f"phase 1: {RELAYS} distributed relays, {len(seen_ids)} keys, {int(asked)} next-hop "
            f"queries, {hops} link ends used; all keys identical and unique")

        # ---- phase 2: the victim KM dies while a relay waits at it -----------------------------
        # Preferably a relay whose second hop is the victim (a transit KM then sees the loss
        # and answers NG back toward the source): the source's standing route runs
        # src -> X -> victim and X's own route to dst starts with the victim. Otherwise a source
        # next to the victim whose standing route starts with it. The source asks 0x1401 and
        # gets the standing route's next hop first.
        src = dst = upstream = first_hop = None
        for a in main_kms:
            for b in main_kms:
                if b == a or b in adj[a]:
                    continue
                items = api.get("/api/v1/routes", src=a, dst=b)["items"]
                kms = items[0]["kms"] if items else []
                if len(kms) > 3 and kms[2] == victim:
                    onward = api.get("/api/v1/routes", src=kms[1], dst=b)["items"]
                    if onward and onward[0]["kms"][1] == victim and a not in onward[0]["kms"]:
                        src, dst, upstream = a, b, kms[1]
                        break
                if upstream is None and kms[1:2] == [victim] and src is None:
                    first_hop = (a, b)
            if upstream:
                break
        if upstream is None:
            assert first_hop, f"no standing route through {victim}"
            src, dst = first_hop
            upstream = src
        log(f"phase 2: SAE-{src} -> SAE-{dst}, {upstream} sends the relay to {victim}")
        up_link = f"{min(upstream, victim)}-{max(upstream, victim)}"

        def consumed_up():
            for k in admin_state(admin_port)["kms"]:
                if k["km_id"] == upstream:
                    return next(l["keys_consumed"] for l in k["links"]
                                if l["link_id"] == up_link)
            raise AssertionError(upstream)
        before = consumed_up()
        result = {}
        os.kill(vic.pid, signal.SIGSTOP)

        def request():
            result["r"] = etsi(f"SAE-{src}").post(f"{base}/SAE-{dst}/enc_keys",
                                                  json={"number": 1, "size": 256},
                                                  timeout=TIMEOUT)
        t = threading.Thread(target=request)
        t.start()
        wait_for(lambda: consumed_up() > before, 5, 0.02,
                 f"{upstream} to send the relay to the frozen {victim}")
        vic.kill()  # SIGKILL: the frozen KM dies with the relay in its socket
        vic.wait(10)
        t.join(TIMEOUT + 5)
        r = result["r"]
        assert r.status_code == 503, (r.status_code, r.text)
        text = r.text
        assert "relay failed" in text and "peer_unreachable" in text and victim in text, text
        assert f"KMA link {up_link} " in text, f"the loss of {up_link} must be named: {text}"
        log(f"phase 2: enc_keys answered 503: {r.json()}")
        held = []

        def clear():
            held[:] = [(k["km_id"], l["link_id"], l["keys_reserved"], l["keys_allocated"])
                       for k in admin_state(admin_port)["kms"] for l in k["links"]
                       if l["keys_reserved"] or l["keys_allocated"]]
            return not held
        wait_for(clear, 15, 0.1, "no reserved or allocated key left")
        assert not held, held
        assert api.items("/api/v1/relays") == [], "a relay went through 0x1403"
        assert ctl.poll() is None and ag.poll() is None
    log(f"done in {time.monotonic() - start:.1f} s")
    print("e2e distributed relay: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
