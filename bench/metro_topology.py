#!/usr/bin/env python3
"""A generated metro network for the scale benchmarks (bench/agent_scale.sh,
bench/controller_scale.sh): a ring of KMS KMs plus LINKS - KMS chords between KMs 2 to 12 places
apart on the ring (metro distances), seeded, one SAE per KM (SAE-<km_id>).

    bench/metro_topology.py KMS LINKS RATE_BPS NAME [--agents N --args-dir DIR] > topology.json

With --agents N, DIR/agent<i>.args gets the `--km ID ...` arguments of the i-th contiguous
segment of the ring (most links stay inside one agent process) and DIR/route-pairs 1,000 seeded
source/destination pairs.
"""
import argparse
import json
import random
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kms", type=int)
    p.add_argument("links", type=int)
    p.add_argument("rate", type=float)
    p.add_argument("name")
    p.add_argument("--agents", type=int, default=0)
    p.add_argument("--args-dir")
    a = p.parse_args()
    if a.kms < 3 or a.links < a.kms:
        p.error("KMS must be at least 3 and LINKS at least KMS (a ring plus chords)")
    width = max(4, len(str(a.kms - 1)))
    ids = ["KM%0*d" % (width, i) for i in range(a.kms)]
    rng = random.Random(15)
    pairs = set()
    out = []

    def add(x, y):
        key = (min(x, y), max(x, y))
        if x == y or key in pairs:
            return
        pairs.add(key)
        out.append({"link_id": "L-%s-%s" % (ids[key[0]], ids[key[1]]), "a": ids[key[0]],
                    "b": ids[key[1]], "key_rate_bps": a.rate, "distance_km": 20.0, "qber": 0.02})

    for i in range(a.kms):
        add(i, (i + 1) % a.kms)
    while len(out) < a.links:
        i = rng.randrange(a.kms)
        add(i, (i + rng.randint(2, 12)) % a.kms)
    json.dump({"name": a.name, "kms": [{"km_id": k, "site": k} for k in ids], "links": out,
               "applications": [{"sae_id": "SAE-" + k, "km_id": k} for k in ids]}, sys.stdout)
    if a.agents > 0:
        per = (a.kms + a.agents - 1) // a.agents
        for n in range(a.agents):
            with open("%s/agent%d.args" % (a.args_dir, n), "w") as f:
                f.write(" ".join("--km " + k for k in ids[n * per:(n + 1) * per]))
        pairs_rng = random.Random(42)
        with open(a.args_dir + "/route-pairs", "w") as f:
            for _ in range(1000):
                s, d = pairs_rng.sample(ids, 2)
                f.write("%s %s\n" % (s, d))


if __name__ == "__main__":
    main()
