// QKDN network view: a live map of the controller's network, drawn from the northbound REST API
// (the same bearer tokens; a viewer token is enough). Plain JavaScript, no libraries, no build
// step; served by the controller at /ui/. Every value from the API reaches the page as text
// (textContent, SVG attributes), never as HTML.
"use strict";

(function () {
  const POLL_MS = 2000;       // refresh period
  const STALE_MS = 10000;     // older data is marked stale
  const TOKEN_KEY = "qkdn-token";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const W = 1000, H = 700, PAD = 50;  // layout canvas (the SVG viewBox)

  const $ = (id) => document.getElementById(id);
  const state = {
    kms: new Map(), links: new Map(), alarms: [], relays: [], reroutes: {},
    positions: new Map(), layoutKey: "", layoutKind: "", name: "",
    routes: null, selected: [], lastOk: 0, refreshes: 0, error: "",
    view: { x: 0, y: 0, k: 1 },
  };
  // For tests and the curious: the view's own state (read-only use).
  window.qkdnView = {
    get ready() { return state.refreshes > 0; },
    get refreshes() { return state.refreshes; },
    get layoutKind() { return state.layoutKind; },
    get error() { return state.error; },
    layout: (kms, links) => layoutFor(kms, links),
  };

  // ---- API ---------------------------------------------------------------------------------

  class AuthError extends Error {}

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  async function api(path) {
    const headers = { Accept: "application/json, text/plain" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    const r = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    if (r.status === 401) throw new AuthError("token refused or missing");
    if (!r.ok) {
      let detail = r.statusText;
      try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
      const err = new Error(r.status + " " + detail);
      err.status = r.status;
      throw err;
    }
    const type = r.headers.get("Content-Type") || "";
    return type.includes("json") ? r.json() : r.text();
  }

  // Every item of a paginated list.
  async function all(path) {
    const out = [];
    let cursor = null;
    for (let page = 0; page < 1000; page++) {
      const sep = path.includes("?") ? "&" : "?";
      const p = await api(path + sep + "limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
      out.push(...p.items);
      cursor = p.next_cursor;
      if (!cursor) break;
    }
    return out;
  }

  // qkdn_reroutes_total{reason="..."} N lines of the Prometheus text exposition.
  function parseReroutes(text) {
    const out = {};
    for (const line of text.split("\n")) {
      const m = /^qkdn_reroutes_total\{reason="([^"]*)"\}\s+([0-9.eE+-]+)/.exec(line);
      if (m) out[m[1]] = Number(m[2]);
    }
    return out;
  }

  // ---- layout ------------------------------------------------------------------------------

  // Positions in the W x H canvas: from site coordinates when every KM has them, else a
  // deterministic force layout (same input, same picture).
  function layoutFor(kms, links) {
    const geo = kms.length > 0 && kms.every((k) => Number.isFinite(k.lat) && Number.isFinite(k.lon));
    const raw = geo ? geoLayout(kms) : forceLayout(kms, links);
    return { kind: geo ? "geo" : "force", positions: fit(raw) };
  }

  function geoLayout(kms) {
    const lat0 = kms.reduce((s, k) => s + k.lat, 0) / kms.length;
    const c = Math.cos((lat0 * Math.PI) / 180);
    const m = new Map();
    for (const k of kms) m.set(k.km_id, [k.lon * c, -k.lat]);
    return m;
  }

  function hash(s) {  // FNV-1a, for a deterministic nudge per KM
    let h = 2166136261;
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
    return (h >>> 0) / 4294967296;
  }

  function forceLayout(kms, links) {
    const ids = kms.map((k) => k.km_id);
    const n = ids.length;
    const index = new Map(ids.map((id, i) => [id, i]));
    const x = new Float64Array(n), y = new Float64Array(n);
    for (let i = 0; i < n; i++) {  // a circle in document order, nudged by a hash of the ID
      const a = (2 * Math.PI * i) / Math.max(n, 1) + hash(ids[i]) * 0.5;
      x[i] = Math.cos(a) * 300; y[i] = Math.sin(a) * 300;
    }
    const edges = [];
    for (const l of links) {
      const a = index.get(l.a), b = index.get(l.b);
      if (a !== undefined && b !== undefined) edges.push([a, b]);
    }
    const k = Math.sqrt((600 * 600) / Math.max(n, 1));
    const iterations = Math.max(60, Math.min(400, Math.floor(3e7 / Math.max(1, n * n))));
    const dx = new Float64Array(n), dy = new Float64Array(n);
    for (let it = 0; it < iterations; it++) {
      const t = 60 * (1 - it / iterations) + 1;
      dx.fill(0); dy.fill(0);
      for (let i = 0; i < n; i++) {
        for (let j = i + 1; j < n; j++) {
          let ex = x[i] - x[j], ey = y[i] - y[j];
          let d2 = ex * ex + ey * ey;
          if (d2 < 1e-4) { ex = 0.01 * (i - j); ey = 0.01; d2 = ex * ex + ey * ey; }
          const f = (k * k) / d2;
          dx[i] += ex * f; dy[i] += ey * f; dx[j] -= ex * f; dy[j] -= ey * f;
        }
      }
      for (const [a, b] of edges) {
        const ex = x[a] - x[b], ey = y[a] - y[b];
        const d = Math.sqrt(ex * ex + ey * ey) + 1e-9;
        const f = d / k;
        dx[a] -= ex * f; dy[a] -= ey * f; dx[b] += ex * f; dy[b] += ey * f;
      }
      for (let i = 0; i < n; i++) {
        dx[i] -= x[i] * 0.02; dy[i] -= y[i] * 0.02;  // gravity keeps components together
        const d = Math.sqrt(dx[i] * dx[i] + dy[i] * dy[i]) + 1e-9;
        const s = Math.min(d, t) / d;
        x[i] += dx[i] * s; y[i] += dy[i] * s;
      }
    }
    const m = new Map();
    for (let i = 0; i < n; i++) m.set(ids[i], [x[i], y[i]]);
    return m;
  }

  // Scales raw positions into the canvas, keeping the aspect ratio.
  function fit(raw) {
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (const [px, py] of raw.values()) {
      minX = Math.min(minX, px); maxX = Math.max(maxX, px);
      minY = Math.min(minY, py); maxY = Math.max(maxY, py);
    }
    const sw = Math.max(maxX - minX, 1e-9), sh = Math.max(maxY - minY, 1e-9);
    const s = Math.min((W - 2 * PAD) / sw, (H - 2 * PAD) / sh);
    const ox = (W - sw * s) / 2, oy = (H - sh * s) / 2;
    const out = new Map();
    for (const [id, [px, py]] of raw) {
      out.set(id, raw.size === 1 ? [W / 2, H / 2] : [ox + (px - minX) * s, oy + (py - minY) * s]);
    }
    return out;
  }

  // ---- drawing -----------------------------------------------------------------------------

  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  function linkClass(l) {
    if (l.admin_state && l.admin_state !== "enabled") return "down";
    if (l.qber_alarm || l.oper_state === "alarm") return "qber";
    if (l.oper_state !== "up") return "down";
    if (l.pool_low) return "low";
    return "ok";
  }

  function linkWidth(l) {
    const bytes = (l.stored_key_bits || 0) / 8;
    return (1.5 + Math.min(5, Math.log10(1 + bytes) * 0.8)).toFixed(2);
  }

  // Path of each link; parallel links between the same two KMs bend apart.
  function linkPaths() {
    const groups = new Map();
    for (const l of state.links.values()) {
      const key = l.a < l.b ? l.a + "\n" + l.b : l.b + "\n" + l.a;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(l);
    }
    const paths = new Map();
    for (const group of groups.values()) {
      group.sort((p, q) => (p.link_id < q.link_id ? -1 : 1));
      group.forEach((l, i) => {
        const pa = state.positions.get(l.a), pb = state.positions.get(l.b);
        if (!pa || !pb) return;
        const off = (i - (group.length - 1) / 2) * 16;
        if (off === 0) {
          paths.set(l.link_id, `M${pa[0].toFixed(1)},${pa[1].toFixed(1)} L${pb[0].toFixed(1)},${pb[1].toFixed(1)}`);
          return;
        }
        const sgn = l.a < l.b ? 1 : -1;  // the same side whichever end is "a"
        const mx = (pa[0] + pb[0]) / 2, my = (pa[1] + pb[1]) / 2;
        const dx = pb[0] - pa[0], dy = pb[1] - pa[1];
        const len = Math.sqrt(dx * dx + dy * dy) || 1;
        const cx = mx - (dy / len) * off * 2 * sgn, cy = my + (dx / len) * off * 2 * sgn;
        paths.set(l.link_id, `M${pa[0].toFixed(1)},${pa[1].toFixed(1)} Q${cx.toFixed(1)},${cy.toFixed(1)} ${pb[0].toFixed(1)},${pb[1].toFixed(1)}`);
      });
    }
    return paths;
  }

  function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

  function fmtBytes(b) {
    if (b >= 1048576) return (b / 1048576).toFixed(1) + " MiB";
    if (b >= 1024) return (b / 1024).toFixed(1) + " KiB";
    return Math.round(b) + " B";
  }

  function linkText(l) {
    return `link ${l.link_id} (${l.a} – ${l.b}): ${l.oper_state}` +
      (l.admin_state !== "enabled" ? ` (${l.admin_state})` : "") +
      `\npool ${fmtBytes((l.stored_key_bits || 0) / 8)} (floor ${fmtBytes((l.effective_pool_floor_bits || 0) / 8)})` +
      `\nrate ${fmtBytes((l.key_rate_bps || 0) / 8)}/s, used ${fmtBytes((l.consumption_rate_bps || 0) / 8)}/s` +
      `\nQBER ${(100 * (l.qber || 0)).toFixed(2)} % (threshold ${(100 * (l.effective_qber_threshold || 0)).toFixed(1)} %)`;
  }

  // A KM's trust level as the operator declared it (issue 20): "trust 60", or "unrated".
  function trustText(t) { return t === null || t === undefined ? "unrated" : `trust ${t}`; }

  // Intermediate KMs of a route with their trust: "X (trust 60), Y (unrated)", or "none".
  function intermediatesText(route) {
    const list = (route && route.intermediates) || [];
    if (!list.length) return "none (direct)";
    return list.map((m) => `${m.km_id} (${trustText(m.trust_level)}` +
      (m.tags && m.tags.length ? `; ${m.tags.join(", ")}` : "") + ")").join(", ");
  }

  function kmText(k) {
    return `KM ${k.km_id}${k.site ? " (" + k.site + ")" : ""}: ${k.connected ? "connected" : "disconnected"}` +
      `\n${trustText(k.trust_level)}` + (k.tags && k.tags.length ? `, tags ${k.tags.join(", ")}` : "") +
      (k.kma_endpoint ? `\nKMA ${k.kma_endpoint}` : "") +
      (k.last_seen ? `\nlast seen ${k.last_seen}` : "");
  }

  function showDetails(text) { $("details").textContent = text; }

  function drawMap() {
    const svg = $("map");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const linksG = $("links"), kmsG = $("kms");
    const paths = linkPaths();
    // Links: one visible path and one wide transparent path for the pointer, per link.
    const seen = new Set();
    for (const l of state.links.values()) {
      const d = paths.get(l.link_id);
      if (!d) continue;
      seen.add(l.link_id);
      let g = linksG.querySelector(`g[data-link="${CSS.escape(l.link_id)}"]`);
      if (!g) {
        g = el("g", { "data-link": l.link_id }, linksG);
        el("path", { class: "link" }, g);
        const hit = el("path", { class: "link-hit" }, g);
        el("title", {}, hit);
        hit.addEventListener("mouseenter", () => showDetails(linkText(state.links.get(g.dataset.link) || l)));
      }
      const [line, hit] = g.querySelectorAll("path");
      const cls = linkClass(l);
      line.setAttribute("class", "link " + cls);
      line.setAttribute("d", d);
      line.setAttribute("stroke-width", linkWidth(l));
      hit.setAttribute("d", d);
      hit.querySelector("title").textContent = linkText(l);
      g.dataset.state = cls;
    }
    for (const g of [...linksG.children]) if (!seen.has(g.dataset.link)) g.remove();

    const seenKm = new Set();
    for (const k of state.kms.values()) {
      const p = state.positions.get(k.km_id);
      if (!p) continue;
      seenKm.add(k.km_id);
      let g = kmsG.querySelector(`g[data-km="${CSS.escape(k.km_id)}"]`);
      if (!g) {
        g = el("g", { "data-km": k.km_id }, kmsG);
        const c = el("circle", { r: 7 }, g);
        el("title", {}, c);
        el("text", { x: 10, y: 4 }, g).textContent = k.km_id;
        c.addEventListener("mouseenter", () => showDetails(kmText(state.kms.get(g.dataset.km) || k)));
        c.addEventListener("click", () => pickKm(g.dataset.km));
      }
      g.setAttribute("transform", `translate(${p[0].toFixed(1)},${p[1].toFixed(1)})`);
      g.setAttribute("class", "km " + (k.connected ? "connected" : "disconnected") +
        (state.selected.includes(k.km_id) ? " selected" : ""));
      g.querySelector("title").textContent = kmText(k);
      if (k.trust_level === null || k.trust_level === undefined) g.removeAttribute("data-trust");
      else g.setAttribute("data-trust", String(k.trust_level));
    }
    for (const g of [...kmsG.children]) if (!seenKm.has(g.dataset.km)) g.remove();
    drawRoutes(paths);
  }

  function drawRoutes(paths) {
    const g = $("routes");
    while (g.firstChild) g.firstChild.remove();
    if (!state.routes) return;
    const items = state.routes.items || [];
    // Alternatives first, the best route on top.
    for (let i = items.length - 1; i >= 0; i--) {
      for (const id of items[i].links) {
        const d = paths.get(id);
        if (d) el("path", { class: "route " + (i === 0 ? "best" : "alt"), d, "stroke-width": i === 0 ? 9 : 5, "data-route": i, "data-link": id }, g);
      }
    }
  }

  function li(list, text, cls) {
    const e = document.createElement("li");
    e.textContent = text;
    if (cls) e.className = cls;
    list.appendChild(e);
    return e;
  }

  function drawLists() {
    const links = [...state.links.values()];
    const kms = [...state.kms.values()];
    const up = links.filter((l) => l.oper_state === "up").length;
    const connected = kms.filter((k) => k.connected).length;
    const pool = links.reduce((s, l) => s + (l.stored_key_bits || 0) / 8, 0);
    $("summary").textContent = `${connected}/${kms.length} KMs connected · ${up}/${links.length} links up · ${fmtBytes(pool)} of key in pools`;
    $("network-name").textContent = state.name;

    const alarms = $("alarm-list");
    alarms.replaceChildren();
    $("alarm-count").textContent = state.alarms.length ? String(state.alarms.length) : "";
    const sevOrder = { critical: 0, major: 1, minor: 2, warning: 3 };
    const sorted = [...state.alarms].sort((a, b) => (sevOrder[a.severity] - sevOrder[b.severity]) || (b.id - a.id));
    for (const a of sorted.slice(0, 50)) {
      const e = li(alarms, "");
      const sev = document.createElement("span");
      sev.className = "sev-" + a.severity;
      sev.textContent = a.severity + " ";
      e.append(sev, `${a.type} on ${a.resource}` + (a.text ? ` — ${a.text}` : ""));
      e.dataset.alarmType = a.type;
      e.dataset.resource = a.resource;
    }
    if (!state.alarms.length) li(alarms, "none", "muted");

    const relays = $("relay-list");
    relays.replaceChildren();
    const recent = [...state.relays].sort((a, b) => (a.updated_at < b.updated_at ? 1 : -1)).slice(0, 10);
    for (const r of recent) {
      const e = li(relays, "");
      const st = document.createElement("span");
      st.className = "state-" + r.state;
      st.textContent = r.state + " ";
      const hops = r.route && r.route.kms ? r.route.kms.join(" → ") : `${r.src_km} → ${r.dst_km}`;
      e.append(st, `${r.number_of_keys}×${r.key_size_bits} b ${hops}` + (r.attempt > 1 ? ` (attempt ${r.attempt})` : "") +
        (r.reason ? ` — ${r.reason}` : ""));
      if (r.route && r.route.intermediates) {
        const via = document.createElement("div");
        via.className = "intermediates";
        via.textContent = "via " + intermediatesText(r.route);
        e.append(via);
      }
    }
    if (!recent.length) li(relays, "none yet", "muted");

    const reroutes = $("reroute-list");
    reroutes.replaceChildren();
    const reasons = Object.entries(state.reroutes).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
    for (const [reason, n] of reasons) li(reroutes, `${n} × ${reason}`);
    const retried = state.relays.filter((r) => r.previous_relay_id).sort((a, b) => (a.updated_at < b.updated_at ? 1 : -1)).slice(0, 5);
    for (const r of retried) li(reroutes, `relay ${r.src_km} → ${r.dst_km} retried on ${r.route && r.route.kms ? r.route.kms.join(" → ") : "another route"}`);
    if (!reasons.length && !retried.length) li(reroutes, "none", "muted");
  }

  function fillSelects() {
    const ids = [...state.kms.keys()].sort();
    for (const sel of [$("route-src"), $("route-dst")]) {
      const current = sel.value;
      if (sel.options.length === ids.length && [...sel.options].every((o, i) => o.value === ids[i])) continue;
      sel.replaceChildren();
      for (const id of ids) {
        const o = document.createElement("option");
        o.value = id; o.textContent = id;
        sel.appendChild(o);
      }
      if (ids.includes(current)) sel.value = current;
      else if (sel.id === "route-dst" && ids.length > 1) sel.value = ids[ids.length - 1];
    }
  }

  function setStatus(kind, text) {
    const s = $("status");
    s.className = "status " + kind;
    s.textContent = text;
  }

  // ---- route query -------------------------------------------------------------------------

  async function queryRoute(src, dst, k) {
    $("route-message").textContent = "";
    const list = $("route-list");
    list.replaceChildren();
    try {
      const r = await api(`/api/v1/routes?src=${encodeURIComponent(src)}&dst=${encodeURIComponent(dst)}&k=${k}`);
      state.routes = r;
      state.selected = [src, dst];
      (r.items || []).forEach((route, i) => {
        const e = li(list, `${route.kms.join(" → ")} (${route.hops} hops, bottleneck ${fmtBytes(route.bottleneck_bits / 8)})`, i === 0 ? "best" : "alt");
        e.dataset.route = i;
        // Every intermediate KM sees the key in the clear: show them with their trust.
        const via = document.createElement("div");
        via.className = "intermediates";
        via.textContent = "via " + intermediatesText(route);
        e.append(via);
      });
      if (!(r.items || []).length) {
        $("route-message").textContent = `no usable route from ${src} to ${dst}` +
          ((r.excluded || []).length ? ` (${plural(r.excluded.length, "link")} excluded)` : "");
      } else if ((r.excluded || []).length) {
        $("route-message").textContent = `${plural(r.excluded.length, "link")} excluded: ` +
          r.excluded.slice(0, 5).map((x) => `${x.link_id} (${x.reasons.join(", ")})`).join(", ");
      }
    } catch (e) {
      state.routes = null;
      if (e instanceof AuthError) return needLogin();
      $("route-message").textContent = "route query failed: " + e.message;
    }
    drawMap();
  }

  function pickKm(id) {
    if (state.selected.length !== 1) {
      state.selected = [id];
      state.routes = null;
      $("route-src").value = id;
      $("route-list").replaceChildren();
      $("route-message").textContent = `from ${id}: click the destination`;
      drawMap();
    } else if (state.selected[0] !== id) {
      $("route-dst").value = id;
      queryRoute(state.selected[0], id, Number($("route-k").value) || 3);
    }
  }

  // ---- refresh loop ------------------------------------------------------------------------

  async function refresh() {
    const [kms, links, alarms, relays, metrics] = await Promise.all([
      all("/api/v1/kms"), all("/api/v1/links"), all("/api/v1/alarms?state=active"),
      api("/api/v1/relays?limit=1000").then((p) => p.items),
      api("/metrics").catch(() => ""),
    ]);
    state.kms = new Map(kms.map((k) => [k.km_id, k]));
    state.links = new Map(links.map((l) => [l.link_id, l]));
    state.alarms = alarms;
    state.relays = relays;
    state.reroutes = parseReroutes(metrics);
    const key = kms.map((k) => `${k.km_id}@${k.lat},${k.lon}`).join("|") + "#" +
      links.map((l) => `${l.a}-${l.b}`).join("|");
    if (key !== state.layoutKey) {
      const topo = await api("/api/v1/topology").catch(() => null);
      state.name = topo && topo.name ? topo.name : "";
      const lay = layoutFor(kms, links);
      state.positions = lay.positions;
      state.layoutKind = lay.kind;
      state.layoutKey = key;
    }
    fillSelects();
    drawMap();
    drawLists();
  }

  let timer = null;
  async function loop() {
    clearTimeout(timer);
    try {
      await refresh();
      state.lastOk = Date.now();
      state.refreshes++;
      state.error = "";
      setStatus("live", "live · " + new Date(state.lastOk).toLocaleTimeString());
    } catch (e) {
      if (e instanceof AuthError) return needLogin();
      state.error = e.message;
      const stale = state.lastOk && Date.now() - state.lastOk > STALE_MS;
      setStatus(stale || !state.lastOk ? "error" : "stale", "update failed: " + e.message);
    }
    timer = setTimeout(loop, POLL_MS);
  }

  function needLogin() {
    clearTimeout(timer);
    setStatus("error", "sign in needed");
    const d = $("login");
    $("login-error").textContent = token() ? "The controller refused this token." : "";
    if (!d.open) d.showModal();
  }

  // ---- pan and zoom ------------------------------------------------------------------------

  function applyView() {
    const v = state.view;
    $("viewport").setAttribute("transform", `translate(${v.x.toFixed(1)},${v.y.toFixed(1)}) scale(${v.k.toFixed(3)})`);
  }

  function svgPoint(evt) {
    const svg = $("map");
    const p = svg.createSVGPoint();
    p.x = evt.clientX; p.y = evt.clientY;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  }

  function setupPanZoom() {
    const svg = $("map");
    svg.addEventListener("wheel", (evt) => {
      evt.preventDefault();
      const p = svgPoint(evt), v = state.view;
      const k = Math.min(20, Math.max(0.5, v.k * (evt.deltaY < 0 ? 1.2 : 1 / 1.2)));
      v.x = p.x - ((p.x - v.x) * k) / v.k;
      v.y = p.y - ((p.y - v.y) * k) / v.k;
      v.k = k;
      applyView();
    }, { passive: false });
    let drag = null;
    svg.addEventListener("pointerdown", (evt) => {
      if (evt.target.closest(".km")) return;
      drag = { p: svgPoint(evt), x: state.view.x, y: state.view.y };
      svg.classList.add("dragging");
    });
    window.addEventListener("pointermove", (evt) => {
      if (!drag) return;
      const p = svgPoint(evt);
      state.view.x = drag.x + p.x - drag.p.x;
      state.view.y = drag.y + p.y - drag.p.y;
      applyView();
    });
    window.addEventListener("pointerup", () => { drag = null; svg.classList.remove("dragging"); });
    svg.addEventListener("dblclick", () => { state.view = { x: 0, y: 0, k: 1 }; applyView(); });
  }

  // ---- start -------------------------------------------------------------------------------

  function start() {
    setupPanZoom();
    $("route-form").addEventListener("submit", (evt) => {
      evt.preventDefault();
      queryRoute($("route-src").value, $("route-dst").value, Number($("route-k").value) || 3);
    });
    $("show-names").addEventListener("change", (evt) => {
      $("map").classList.toggle("no-names", !evt.target.checked);
    });
    $("route-clear").addEventListener("click", () => {
      state.routes = null; state.selected = [];
      $("route-list").replaceChildren(); $("route-message").textContent = "";
      drawMap();
    });
    $("login-form").addEventListener("submit", () => {
      sessionStorage.setItem(TOKEN_KEY, $("login-token").value.trim());
      $("login-token").value = "";
      $("sign-out").hidden = false;
      loop();
    });
    $("sign-out").hidden = !token();
    $("sign-out").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("sign-out").hidden = true;
      loop();
    });
    loop();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
