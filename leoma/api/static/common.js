"use strict";
// Helpers shared by the dashboard's pages: no framework, no CDN (a devnet has no internet).
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#58a6ff", "#d2a8ff", "#ffa657", "#7ee787", "#ff7b72", "#79c0ff", "#f2cc60", "#a5d6ff"];
const short = (h) => h ? (h.length > 14 ? h.slice(0, 6) + "…" + h.slice(-6) : h) : "—";
const pct = (x) => x == null ? "—" : (100 * x).toFixed(1) + "%";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c == null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function tip(node, text) {
  node.append(svgEl("title", {}, text));
  return node;
}

async function get(path) {
  const r = await fetch(path, {headers: {"Accept": "application/json"}});
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function minerLink(hotkey, text) {
  return el("a", {href: "/miner/" + encodeURIComponent(hotkey), class: "mono", title: hotkey}, text || short(hotkey));
}

function taskLink(taskId, text) {
  return el("a", {href: "/task/" + taskId}, text || ("task " + taskId));
}

function showError(err) {
  const box = document.getElementById("error");
  if (box) box.textContent = err ? String(err) : "";
}

// Colour per validator, stable across pages (sorted hotkeys).
function validatorColours(hotkeys) {
  const out = {};
  [...hotkeys].sort().forEach((h, i) => { out[h] = PALETTE[i % PALETTE.length]; });
  return out;
}

// Measurements are recorded as integers in small units, named by suffix (`_cdb` hundredths of a
// dB, `_milli` thousandths, `_c` hundredths, `_ms` milliseconds): shown in the plain unit.
const UNITS = [[/_cdb$/, 100, " dB"], [/_milli$/, 1000, ""], [/_c$/, 100, ""], [/_ms$/, 1, " ms"]];
function readable(key, value) {
  if (typeof value === "number") {
    for (const [re, div, unit] of UNITS) {
      if (re.test(key)) return [key.replace(re, ""), (div === 1 ? value : (value / div).toFixed(2)) + unit];
    }
    return [key, String(value)];
  }
  if (Array.isArray(value)) {
    const text = value.join(", ");
    return [key, text.length > 80 ? value.length + " items" : text];
  }
  return [key, (value !== null && typeof value === "object") ? JSON.stringify(value) : String(value)];
}

// A "key = value" table of measured fields (any shape: numbers, text, lists, objects).
function fieldTable(fields, cls) {
  const table = el("table", {class: cls || "fields"});
  for (const [k, v] of Object.entries(fields || {})) {
    const [name, text] = readable(k, v);
    const raw = typeof v === "object" ? JSON.stringify(v) : String(v);
    table.append(el("tr", {"data-field": k}, el("th", {}, name.replace(/[_.]/g, " ")),
                    el("td", {class: "mono", title: k + " = " + raw.slice(0, 2000)}, text)));
  }
  return table;
}
