// Flotilla console: plain JavaScript over the REST API (docs/api.md). No framework, no build.
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const TYPES = ["cds", "eds", "lds", "rds", "sds"];
let token = sessionStorage.getItem("flotilla-token") || "";
let selectedProxy = null;
let selectedConfig = null;
let history = [];

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function showError(msg) {
  const e = $("#error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: headers(opts.headers || {}) });
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!r.ok) {
    const why = body && body.message ? body.message : `${r.status} ${r.statusText}`;
    throw new Error(`${opts.method || "GET"} ${path}: ${why}`);
  }
  return body;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function age(since) {
  if (!since) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(since)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

// One type's state, as the brain derives it: synced (last push ACKed), nacked (the last push
// was rejected), stale (a push awaits its ACK).
function typeState(ts) {
  if (!ts) return "none";
  if (ts.ackedVersion && ts.ackedVersion === ts.lastSentVersion) return "synced";
  if (ts.lastNack && ts.lastNack.version === ts.lastSentVersion) return "nacked";
  return "stale";
}

// ---- Fleet ----
async function loadFleet() {
  const proxies = await api("/api/v1/proxies");
  const tbody = $("#fleet-table tbody");
  tbody.replaceChildren();
  let synced = 0;
  for (const p of proxies) {
    if (p.state === "synced") synced++;
    const tr = document.createElement("tr");
    tr.dataset.node = p.nodeId;
    tr.dataset.state = p.state;
    if (p.nodeId === selectedProxy) tr.classList.add("selected");
    cell(tr, p.nodeId);
    cell(tr, p.namespace);
    cell(tr, p.cluster);
    cell(tr, (p.edges || []).join(", "));
    const types = {};
    for (const s of p.streams || []) Object.assign(types, s.types || {});
    for (const t of TYPES) {
      const st = typeState(types[t]);
      cell(tr, st === "none" ? "–" : st, `state-${st} type-${t}`);
    }
    cell(tr, p.state, `state-${p.state} overall`);
    cell(tr, age(p.connectedAt));
    tr.addEventListener("click", () => { selectedProxy = p.nodeId; showProxy(p, types); loadFleet().catch(e => showError(e.message)); });
    tbody.appendChild(tr);
    if (p.nodeId === selectedProxy) showProxy(p, types);
  }
  $("#fleet-summary").textContent = `${proxies.length} connected, ${synced} synced`;
}

function showProxy(p, types) {
  $("#proxy-detail").hidden = false;
  $("#proxy-detail-name").textContent = `${p.nodeId} (${p.namespace}/${p.cluster}) — ${p.state}`;
  const nacks = $("#nack-detail");
  nacks.replaceChildren();
  for (const [t, n] of Object.entries(p.lastNacks || {})) {
    const div = document.createElement("div");
    div.className = "nack";
    const head = document.createElement("strong");
    head.textContent = `${t.toUpperCase()} rejected version ${n.version} at ${n.at}`;
    const res = document.createElement("div");
    res.textContent = `resources: ${(n.resources || []).join(", ")}`;
    const code = document.createElement("code");
    code.className = "nack-error";
    code.textContent = n.error;
    div.append(head, res, code);
    nacks.appendChild(div);
  }
  const tbody = $("#proxy-types tbody");
  tbody.replaceChildren();
  for (const t of TYPES) {
    const ts = types[t];
    if (!ts) continue;
    const tr = document.createElement("tr");
    cell(tr, t);
    const st = typeState(ts);
    cell(tr, st, `state-${st}`);
    cell(tr, ts.lastSentVersion);
    cell(tr, ts.ackedVersion);
    cell(tr, ts.pushes);
    tbody.appendChild(tr);
  }
}

// ---- Configs, history, diff, rollback ----
async function loadConfigs() {
  const configs = await api("/api/v1/configs");
  const tbody = $("#configs-table tbody");
  tbody.replaceChildren();
  for (const c of configs) {
    const tr = document.createElement("tr");
    tr.dataset.id = c.id;
    tr.dataset.name = `${c.namespace}/${c.name}`;
    if (c.id === selectedConfig) tr.classList.add("selected");
    cell(tr, c.namespace);
    cell(tr, c.name);
    cell(tr, c.version, "version");
    cell(tr, c.appliedVersion, "applied");
    cell(tr, c.status);
    tr.addEventListener("click", () => { selectedConfig = c.id; loadConfigs(); loadHistory(c).catch(e => showError(e.message)); });
    tbody.appendChild(tr);
  }
}

async function loadHistory(c) {
  const [revs, detail] = await Promise.all([
    api(`/api/v1/configs/${c.id}/history`),
    api(`/api/v1/configs/${c.id}`),
  ]);
  history = revs;
  $("#config-detail").hidden = false;
  $("#config-detail-name").textContent = `${c.namespace}/${c.name}`;
  const px = detail.proxies;
  $("#config-proxies").textContent = px
    ? `${px.connected} proxies connected, ${px.synced} synced, ${px.nacking.length} rejecting; revision ${detail.appliedVersion ?? "–"} applied`
    : "";
  const ol = $("#history");
  ol.replaceChildren();
  for (const r of revs) {
    const li = document.createElement("li");
    li.dataset.version = r.version;
    li.value = r.version;
    const live = r.version === detail.appliedVersion ? " (live)" : "";
    li.textContent = `${r.action} by ${r.author} at ${r.at}${live}`;
    if (r.version !== detail.appliedVersion) {
      const b = document.createElement("button");
      b.className = "rollback";
      b.dataset.version = r.version;
      b.textContent = `Roll back to ${r.version}`;
      b.addEventListener("click", () => rollback(c, r.version));
      li.appendChild(b);
    }
    ol.appendChild(li);
  }
  for (const sel of [$("#diff-left"), $("#diff-right")]) {
    sel.replaceChildren(...revs.map(r => new Option(`${r.version}`, r.version)));
  }
  $("#diff-right").value = revs.length ? revs[revs.length - 1].version : "";
  $("#diff-left").value = revs.length > 1 ? revs[revs.length - 2].version : $("#diff-right").value;
  renderDiff();
}

async function rollback(c, version) {
  if (!confirm(`Roll ${c.namespace}/${c.name} back to revision ${version}? It is applied to proxies at once.`)) return;
  try {
    await api(`/api/v1/configs/${c.id}/rollback`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ version }),
    });
    showError("");
    await loadConfigs();
    await loadHistory(c);
  } catch (e) {
    showError(e.message);
  }
}

// A line diff (longest common subsequence), shown side by side.
function lineDiff(a, b) {
  const n = a.length, m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const rows = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { rows.push([a[i], "", b[j], ""]); i++; j++; }
    else if (j < m && (i >= n || lcs[i][j + 1] >= lcs[i + 1][j])) { rows.push(["", "", b[j], "add"]); j++; }
    else { rows.push([a[i], "del", "", ""]); i++; }
  }
  // Pair a run of removed lines with the run of added lines after it, so a changed line sits
  // beside its new version.
  const paired = [];
  for (let k = 0; k < rows.length;) {
    let d = k;
    while (d < rows.length && rows[d][1] === "del") d++;
    let e = d;
    while (e < rows.length && rows[e][3] === "add") e++;
    const dels = rows.slice(k, d), adds = rows.slice(d, e);
    if (dels.length && adds.length) {
      for (let x = 0; x < Math.max(dels.length, adds.length); x++) {
        const l = dels[x] || ["", "", "", ""], r = adds[x] || ["", "", "", ""];
        paired.push([l[0], l[1], r[2], r[3]]);
      }
      k = e;
    } else {
      paired.push(rows[k]);
      k++;
    }
  }
  return paired;
}

function renderDiff() {
  const lv = Number($("#diff-left").value), rv = Number($("#diff-right").value);
  const left = history.find(r => r.version === lv), right = history.find(r => r.version === rv);
  const out = $("#diff");
  out.replaceChildren();
  if (!left || !right) return;
  const text = r => JSON.stringify(r.config, null, 2).split("\n");
  const rows = lineDiff(text(left), text(right));
  const add = (t, cls) => { const d = document.createElement("div"); d.textContent = t; if (cls) d.className = cls; out.appendChild(d); };
  add(`revision ${lv}`, "head");
  add(`revision ${rv}`, "head");
  let changed = 0;
  for (const [l, lc, r, rc] of rows) {
    if (lc || rc) changed++;
    add(l, lc);
    add(r, rc);
  }
  $("#diff-summary").textContent = changed ? `${changed} changed lines` : "identical";
}

// ---- Live events (SSE over fetch, so the token header works) ----
let eventsAbort = null;
async function startEvents() {
  if (eventsAbort) eventsAbort.abort();
  eventsAbort = new AbortController();
  const q = new URLSearchParams();
  if ($("#events-namespace").value) q.set("namespace", $("#events-namespace").value);
  if ($("#events-proxy").value) q.set("proxy", $("#events-proxy").value);
  const status = $("#events-status");
  try {
    const r = await fetch(`/api/v1/events?${q}`, { headers: headers(), signal: eventsAbort.signal });
    if (!r.ok) throw new Error(`GET /api/v1/events: ${r.status}`);
    status.textContent = "connected";
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trimStart();
        }
        if (data) addEvent(name, data);
      }
    }
    status.textContent = "disconnected";
  } catch (e) {
    if (e.name !== "AbortError") status.textContent = `error: ${e.message}`;
  }
}

function addEvent(name, data) {
  const tbody = $("#events-table tbody");
  const tr = document.createElement("tr");
  tr.className = `ev-${name}`;
  tr.dataset.event = name;
  if (name === "dropped") {
    cell(tr, new Date().toISOString());
    cell(tr, "dropped");
    cell(tr, `${data} events lost (the page fell behind)`);
  } else {
    const e = JSON.parse(data);
    tr.dataset.node = e.nodeId || "";
    cell(tr, e.at);
    cell(tr, e.event);
    cell(tr, e.nodeId);
    cell(tr, e.namespace);
    cell(tr, e.config);
    cell(tr, e.type);
    cell(tr, e.version);
    cell(tr, e.changeId);
    cell(tr, e.error || (e.propagationMs != null ? `${e.propagationMs} ms after the change` : ""), "detail");
  }
  tbody.prepend(tr);
  while (tbody.rows.length > 300) tbody.deleteRow(-1);
}

// ---- Tabs and refresh ----
function show(tab) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== tab;
  location.hash = tab;
  refresh();
}

function current() {
  return (location.hash || "#fleet").slice(1);
}

async function refresh() {
  try {
    if (current() === "fleet") await loadFleet();
    if (current() === "configs") await loadConfigs();
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.tab));
$("#diff-left").addEventListener("change", renderDiff);
$("#diff-right").addEventListener("change", renderDiff);
$("#events-apply").addEventListener("click", startEvents);
$("#auth").addEventListener("submit", ev => {
  ev.preventDefault();
  token = $("#token").value;
  sessionStorage.setItem("flotilla-token", token);
  refresh();
  startEvents();
});
show(["fleet", "configs", "events"].includes(current()) ? current() : "fleet");
startEvents();
setInterval(() => { if (current() === "fleet") refresh(); }, 2000);
