// The SPP panel page: a live drawing of the topology (SVG sent by spp-ctl), per-port rates, and
// controls that call the REST API. Plain JavaScript, no build step, nothing from elsewhere.
"use strict";

const state = { ws: null, nodes: [], rates: {}, processes: [] };

function human(v) {
  if (v === null || v === undefined) return "-";
  if (v < 0.5) return "0";
  for (const [div, suffix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (v >= div) {
      const x = v / div;
      return (x < 100 ? x.toPrecision(3).replace(/\.?0+$/, "") : x.toFixed(0)) + suffix;
    }
  }
  return v.toFixed(0);
}

function setMessage(text, isError) {
  const el = document.getElementById("message");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (!r.ok) {
    const text = (await r.text()).trim();
    throw new Error(`${method} ${path}: ${r.status} ${text}`);
  }
}

function refresh() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ type: "refresh" }));
  }
}

async function act(label, fn) {
  try {
    await fn();
    setMessage(label + ": done.", false);
  } catch (e) {
    setMessage(label + ": " + e.message, true);
  }
  refresh();
}

function base(p) {
  return p.type === "primary" ? "/v1/primary" : `/v1/nfvs/${p.id}`;
}

function button(text, aria, onclick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", aria);
  b.addEventListener("click", onclick);
  return b;
}

function select(name, options, label) {
  const s = document.createElement("select");
  s.name = name;
  s.setAttribute("aria-label", label);
  for (const o of options) {
    const opt = document.createElement("option");
    opt.value = o;
    opt.textContent = o;
    s.appendChild(opt);
  }
  return s;
}

// What the user had chosen in each card's patch form, and which of its fields had the focus:
// the cards are rebuilt on every topology change (another user's patch, a status change), and
// a half-filled form must survive that.
function formChoices(root) {
  const kept = new Map();
  for (const form of root.querySelectorAll("form[data-process]")) {
    const focused = form.contains(document.activeElement) ? document.activeElement.name : null;
    kept.set(form.dataset.process, { src: form.elements.src.value, dst: form.elements.dst.value, focused });
  }
  return kept;
}

function restoreChoices(form, kept) {
  if (!kept) return;
  for (const name of ["src", "dst"]) {
    const field = form.elements[name];
    if ([...field.options].some((o) => o.value === kept[name])) field.value = kept[name];
  }
  if (kept.focused && form.elements[kept.focused]) form.elements[kept.focused].focus();
}

function renderProcesses(procs) {
  const root = document.getElementById("processes");
  const kept = formChoices(root);
  root.replaceChildren();
  const toRestore = [];
  for (const p of procs) {
    const div = document.createElement("div");
    div.className = "proc";
    div.dataset.process = p.name;
    if (p.color) div.style.borderLeftColor = p.color;
    const h = document.createElement("h3");
    h.textContent = p.name + (p.state ? ` (${p.state})` : "");
    div.appendChild(h);
    if (p.patchable) {
      div.appendChild(button("Forward", `start forwarding on ${p.name}`,
        () => act(`forward ${p.name}`, () => api("PUT", base(p) + "/forward", { action: "start" }))));
      div.appendChild(button("Stop", `stop forwarding on ${p.name}`,
        () => act(`stop ${p.name}`, () => api("PUT", base(p) + "/forward", { action: "stop" }))));
      const ul = document.createElement("ul");
      ul.setAttribute("aria-label", `patches of ${p.name}`);
      for (const patch of p.patches) {
        const li = document.createElement("li");
        li.className = "patch";
        li.textContent = `${patch.src} → ${patch.dst} `;
        li.appendChild(button("Unpatch", `unpatch ${patch.src} to ${patch.dst} on ${p.name}`,
          () => act(`unpatch ${patch.src} → ${patch.dst}`, () => unpatch(p, patch))));
        ul.appendChild(li);
      }
      if (!p.patches.length) {
        const li = document.createElement("li");
        li.textContent = "no patches";
        ul.appendChild(li);
      }
      div.appendChild(ul);
      const form = document.createElement("form");
      form.dataset.process = p.name;
      form.setAttribute("aria-label", `new patch on ${p.name}`);
      const src = select("src", p.ports, `source port on ${p.name}`);
      const dst = select("dst", p.ports, `destination port on ${p.name}`);
      if (p.ports.length > 1) dst.selectedIndex = 1;
      const go = document.createElement("button");
      go.type = "submit";
      go.textContent = "Patch";
      go.setAttribute("aria-label", `patch on ${p.name}`);
      form.append(src, " → ", dst, " ", go);
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        act(`patch ${src.value} → ${dst.value}`,
          () => api("PUT", base(p) + "/patches", { src: src.value, dst: dst.value }));
      });
      div.appendChild(form);
      toRestore.push([form, kept.get(p.name)]);
    } else if (p.ports && p.ports.length) {
      const ports = document.createElement("p");
      ports.textContent = "ports: " + p.ports.join(", ");
      div.appendChild(ports);
    }
    root.appendChild(div);
  }
  // after the cards are in the document: focus() does nothing on a detached element
  for (const [form, choice] of toRestore) restoreChoices(form, choice);
}

// SPP's API has no single unpatch: reset the process's patches and put the others back.
async function unpatch(p, gone) {
  await api("DELETE", base(p) + "/patches");
  for (const patch of p.patches) {
    if (patch.src !== gone.src || patch.dst !== gone.dst) {
      await api("PUT", base(p) + "/patches", { src: patch.src, dst: patch.dst });
    }
  }
}

function applySearch() {
  const q = document.getElementById("search").value.trim().toLowerCase();
  let first = null;
  for (const g of document.querySelectorAll("#graph .node")) {
    const hit = q !== "" && (g.dataset.name || "").toLowerCase().includes(q);
    g.classList.toggle("match", hit);
    if (hit && !first) first = g;
  }
  if (first && first.scrollIntoView) first.scrollIntoView({ block: "nearest", inline: "nearest" });
}

function showRates() {
  const body = document.querySelector("#rates tbody");
  const rows = [];
  for (const n of state.nodes) {
    const r = state.rates[n.id];
    if (!r) continue;
    const set = (prefix, text) => {
      const el = document.getElementById(prefix + n.id);
      if (el) el.textContent = text;
    };
    set("rate-", `rx ${human(r.rx_pps)} pps · ${human(r.rx_bps)} bit/s`);
    set("ratetx-", `tx ${human(r.tx_pps)} pps · ${human(r.tx_bps)} bit/s`);
    set("drops-", `${human(r.drop_pps)} drops/s`);
    const tr = document.createElement("tr");
    tr.dataset.node = n.id;
    for (const v of [n.label, human(r.rx_pps), human(r.tx_pps), human(r.rx_bps), human(r.tx_bps),
                     human(r.drop_pps), String(r.rx), String(r.tx), String(r.drops)]) {
      const td = document.createElement(v === n.label && !tr.childElementCount ? "th" : "td");
      if (td.tagName === "TH") td.scope = "row";
      td.textContent = v;
      tr.appendChild(td);
    }
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function onMessage(ev) {
  let msg;
  try {
    msg = JSON.parse(ev.data);
  } catch (e) {
    return;
  }
  if (msg.type === "topology") {
    document.getElementById("graph").innerHTML = msg.svg;
    state.nodes = msg.nodes;
    state.processes = msg.processes;
    renderProcesses(msg.processes);
    applySearch();
    showRates();
  } else if (msg.type === "rates") {
    state.rates = msg.nodes;
    showRates();
  }
}

function connect() {
  const conn = document.getElementById("conn");
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/web/ws");
  state.ws = ws;
  ws.addEventListener("open", () => { conn.textContent = "live"; conn.className = ""; });
  ws.addEventListener("message", onMessage);
  ws.addEventListener("close", () => {
    conn.textContent = "disconnected, retrying…";
    conn.className = "down";
    setTimeout(connect, 1000);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("search").addEventListener("input", applySearch);
  connect();
});
