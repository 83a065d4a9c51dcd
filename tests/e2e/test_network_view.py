#!/usr/bin/env python3
"""e2e (issue 18): the network view (/ui/) in a real browser. germany50 runs with the controller
and one agent hosting all 50 KMs; Debian's headless Chromium loads the page and signs in with a
viewer token through the page's own form. From the DOM and from screenshots it checks that:

  - every KM and every link of the topology is drawn, KMs at their site coordinates ("geo"
    layout) and each at a distinct place, every link green (pool healthy) once the network is up;
  - a QBER fault (the agent's admin API raises one link's QBER to 0.2, above the 0.11 threshold)
    turns exactly that link red within a few refreshes, and its qber_high alarm is listed;
  - a route query (Aachen -> Dresden, 3 alternatives) draws the best route and the alternatives,
    and the best route avoids the red link;
  - without site coordinates the force layout is deterministic and keeps KMs apart.

Pixels are read at points along each drawn link and at each KM's centre, so a colour in the DOM
that never reaches the screen fails the test. QKDN_VIEW_SCREENSHOT=PATH also writes the final
screenshot there (the README's picture is made this way)."""

import io
import json
import math
import os
import shutil
import sys

import requests
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import Browser  # noqa: E402
from qkdn_e2e import Processes, load_topology, log, start_network, wait_for  # noqa: E402

OK = (0x2C, 0xA0, 0x2C)      # --ok in northbound/ui/style.css
QBER = (0xD6, 0x27, 0x28)    # --qber
KM = (0x1F, 0x4E, 0x9C)      # --km
ROUTE = (0x1F, 0x77, 0xFF)   # --route
SRC, DST = "Aachen", "Dresden"

LINK_POINTS_JS = """(() => {
  const out = {};
  for (const g of document.querySelectorAll('#links g[data-link]')) {
    const p = g.querySelector('path.link');
    const len = p.getTotalLength(), m = p.getScreenCTM();
    const pts = [];
    for (let f = 0.15; f < 0.9; f += 0.05) {
      const q = p.getPointAtLength(len * f);
      pts.push([q.x * m.a + q.y * m.c + m.e, q.x * m.b + q.y * m.d + m.f]);
    }
    out[g.dataset.link] = {cls: p.getAttribute('class'), pts};
  }
  return out;
})()"""

KM_CENTRES_JS = """(() => {
  const out = {};
  for (const g of document.querySelectorAll('#kms g[data-km]')) {
    const r = g.querySelector('circle').getBoundingClientRect();
    out[g.dataset.km] = {cls: g.getAttribute('class'), x: r.x + r.width / 2, y: r.y + r.height / 2,
                         w: r.width};
  }
  return out;
})()"""


def close(pixel, colour, tol=40):
    return sum((a - b) ** 2 for a, b in zip(pixel, colour)) <= tol * tol


SHOTS = []


def image(png):
    """The screenshot as an image; also kept (numbered) for the logs folder."""
    SHOTS.append(png)
    return Image.open(io.BytesIO(png)).convert("RGB")


def shows(img, pts, colour):
    """True when a pixel next to (within 1 px of) one of the points has the colour on screen."""
    w, h = img.size
    for x, y in pts:
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                px, py = int(round(x)) + dx, int(round(y)) + dy
                if 0 <= px < w and 0 <= py < h and close(img.getpixel((px, py)), colour):
                    return True
    return False


def main():
    topo = load_topology("germany50.json")
    km_ids = {k["km_id"] for k in topo["kms"]}
    link_ids = {l["link_id"] for l in topo["links"]}
    with Processes("network-view") as ps:
        try:
            run(ps, km_ids, link_ids, topo)
        finally:
            for i, png in enumerate(SHOTS):
                with open(os.path.join(ps.dir, f"screenshot-{i}.png"), "wb") as f:
                    f.write(png)
    print("e2e_network_view: 5 passed, 0 failed")


def run(ps, km_ids, link_ids, topo):
    # Trust levels on every other KM (issue 20), the rest unrated: the view shows both.
    trust = {k: ((i * 7) % 101, [f"operator:op{i % 3}"]) for i, k in enumerate(sorted(km_ids))
             if i % 2 == 0}
    net = start_network(ps, "germany50.json", token_role="viewer", km_trust=trust)
    base = net.api.base
    with Browser(log_dir=ps.dir) as b:
        # The page itself needs no token; the data does: the page asks for one.
        b.navigate(base + "/ui/")
        b.wait_for("document.getElementById('login').open", 30, what="the sign-in dialog")
        token = net.api.session.headers["Authorization"].split(" ", 1)[1]
        b.eval(f"document.getElementById('login-token').value = {json.dumps(token)};"
               "document.getElementById('login-form').requestSubmit(); true")
        b.wait_for("window.qkdnView.ready", 60, what="the first refresh")
        assert b.eval("sessionStorage.getItem('qkdn-token')") == token
        assert token not in b.eval("location.href"), "the token must never be in the URL"

        # Every KM and link drawn, at their site coordinates.
        kms = b.eval(KM_CENTRES_JS)
        assert set(kms) == km_ids, f"KMs drawn {len(kms)}, missing {km_ids - set(kms)}"
        assert b.eval("window.qkdnView.layoutKind") == "geo"
        spots = {(round(v["x"]), round(v["y"])) for v in kms.values()}
        assert len(spots) == len(kms), "two KMs drawn at the same place"
        # Geo layout: Flensburg (north) above Konstanz (south), Aachen (west) left of Berlin.
        assert kms["Flensburg"]["y"] < kms["Konstanz"]["y"]
        assert kms["Aachen"]["x"] < kms["Berlin"]["x"]
        b.wait_for("[...document.querySelectorAll('#links path.link')].length === "
                   f"{len(link_ids)} && [...document.querySelectorAll('#links path.link')]"
                   ".every(p => p.classList.contains('ok'))", 60,
                   what="every link drawn green (pools filled, links up)")
        links = b.eval(LINK_POINTS_JS)
        assert set(links) == link_ids, f"links drawn: missing {link_ids - set(links)}"
        # KM names sit over short links: the pixel checks look with names off (the page's own
        # switch), the README's picture is taken with them on.
        b.eval("document.getElementById('show-names').click(); true")
        assert b.eval("document.getElementById('map').classList.contains('no-names')")
        img = image(b.screenshot())
        not_green = [l for l, v in links.items() if not shows(img, v["pts"], OK)]
        assert not not_green, f"links not green on screen: {not_green}"
        not_blue = [k for k, v in kms.items()
                    if not close(img.getpixel((int(v["x"]), int(v["y"]))), KM)]
        assert not not_blue, f"KMs not drawn as connected on screen: {not_blue}"
        log(f"ok   {len(kms)} KMs and {len(links)} links drawn (DOM and screenshot)")

        # A QBER fault on a link of the current Aachen -> Dresden route turns it red.
        routes = net.api.get("/api/v1/routes", src=SRC, dst=DST, k=1)["items"]
        victim = routes[0]["links"][len(routes[0]["links"]) // 2]
        r = requests.post(f"http://127.0.0.1:{net.admin_port}/admin/links/{victim}",
                          json={"qber": 0.2}, timeout=10)
        r.raise_for_status()
        log(f"qber of {victim} set to 0.2")
        b.wait_for("document.querySelector('#links g[data-link=\"" + victim + "\"] path.link')"
                   ".classList.contains('qber')", 30, what=f"{victim} drawn red")
        b.wait_for("[...document.querySelectorAll('#alarm-list li')].some(e => "
                   f"e.dataset.alarmType === 'qber_high' && e.dataset.resource === '{victim}')",
                   30, what="the qber_high alarm listed")
        links = b.eval(LINK_POINTS_JS)
        red = sorted(l for l, v in links.items() if "qber" in v["cls"])
        assert red == [victim], f"red links in the DOM: {red}"
        img = image(b.screenshot())
        assert shows(img, links[victim]["pts"], QBER), f"{victim} not red on screen"
        others = [l for l, v in links.items() if l != victim and not shows(img, v["pts"], OK)]
        assert not others, f"links that lost their green: {others}"
        log(f"ok   QBER fault on {victim}: red in the DOM and on screen, alarm listed")

        b.eval("document.getElementById('show-names').click(); true")
        # Route query through the form: best route and alternatives drawn, avoiding the fault.
        b.eval(f"document.getElementById('route-src').value = '{SRC}';"
               f"document.getElementById('route-dst').value = '{DST}';"
               "document.getElementById('route-k').value = '3';"
               "document.getElementById('route-form').requestSubmit(); true")
        n = b.wait_for("document.querySelectorAll('#route-list li').length", 30,
                       what="the route list")
        answer = net.api.get("/api/v1/routes", src=SRC, dst=DST, k=3)
        assert n == len(answer["items"]) and n >= 2, (n, len(answer["items"]))
        best = answer["items"][0]
        assert victim not in best["links"], "the best route uses the red link"
        drawn_best = b.eval("[...document.querySelectorAll('#routes path.best')]"
                            ".map(p => p.dataset.link)")
        assert sorted(drawn_best) == sorted(best["links"]), (drawn_best, best["links"])
        alt_links = sum(len(r["links"]) for r in answer["items"][1:])
        assert b.eval("document.querySelectorAll('#routes path.alt').length") == alt_links
        png = b.screenshot()
        img = image(png)
        assert any(shows(img, links[l]["pts"], ROUTE) for l in best["links"]), \
            "the best route is not on screen"
        log(f"ok   route {' -> '.join(best['kms'])} and {n - 1} alternatives drawn")

        # Trust (issue 20): every listed route names its intermediate KMs with their trust, as
        # the API answers them; every KM's details give its trust level and tags.
        vias = b.eval("[...document.querySelectorAll('#route-list li')]"
                      ".map(e => (e.querySelector('.intermediates') || {}).textContent || '')")
        for via, route in zip(vias, answer["items"]):
            assert via.startswith("via "), vias
            for m in route["intermediates"]:
                want = (f"{m['km_id']} (unrated" if m.get("trust_level") is None
                        else f"{m['km_id']} (trust {m['trust_level']}")
                assert want in via, (want, via)
        titles = b.eval("Object.fromEntries([...document.querySelectorAll('#kms g[data-km]')]"
                        ".map(g => [g.dataset.km, [g.querySelector('title').textContent,"
                        " g.dataset.trust || null]]))")
        for km in km_ids:
            text, attr = titles[km]
            if km in trust:
                assert f"trust {trust[km][0]}" in text and trust[km][1][0] in text, (km, text)
                assert attr == str(trust[km][0]), (km, attr)
            else:
                assert "unrated" in text and attr is None, (km, text, attr)
        log("ok   intermediate KMs of every route and every KM's trust shown")

        # Without coordinates: a deterministic force layout, KMs kept apart.
        layout_js = ("(() => { const kms = %s, links = %s;"
                     " const a = window.qkdnView.layout(kms, links),"
                     " b = window.qkdnView.layout(kms, links);"
                     " return {kind: a.kind, a: [...a.positions], b: [...b.positions]}; })()")
        plain = [{"km_id": k["km_id"]} for k in topo["kms"]]
        lay = b.eval(layout_js % (json.dumps(plain), json.dumps(topo["links"])))
        assert lay["kind"] == "force"
        assert lay["a"] == lay["b"], "the force layout is not deterministic"
        pts = [p for _, p in lay["a"]]
        assert all(math.isfinite(c) and 0 <= c <= 1000 for p in pts for c in p)
        closest = min(math.dist(p, q) for i, p in enumerate(pts) for q in pts[i + 1:])
        assert closest > 5, f"force layout puts two KMs {closest:.1f} units apart"
        log(f"ok   force layout deterministic, closest KMs {closest:.1f} units apart")

        with open(os.path.join(ps.dir, "network-view.png"), "wb") as f:
            f.write(png)
        out = os.environ.get("QKDN_VIEW_SCREENSHOT")
        if out:
            shutil.copyfile(os.path.join(ps.dir, "network-view.png"), out)
            log(f"screenshot written to {out}")


if __name__ == "__main__":
    main()
