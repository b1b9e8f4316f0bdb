"use strict";
const D = JSON.parse(document.getElementById("explorer-data").textContent);
// Unpack: fractions come in units of 1/scale; blocks as [first, last] of the degenerate ones (every other resolved
// direction is a block of its own, the ones below the numerical rank share the last).
for (const h of D.heads) {
  for (const key of ["s", "sh", "nsh"]) h[key] = h[key].map((v) => v / D.scale);
  h.b = [];
  for (let k = 0, id = -1; k < h.s.length; k++) {
    const continues = k > 0 && (k >= h.nr ? k - 1 >= h.nr : h.blocks.some(([first, last]) => k > first && k <= last));
    if (!continues) id++;
    h.b.push(id);
  }
}
const pairsOf = (flat, size) => Array.from({ length: flat.length / size }, (_, i) => flat.slice(i * size, i * size + size));
const HEADS = new Map(D.heads.map((h) => [h.l + "." + h.h, h]));
const W = D.options.context_tokens;
function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined)
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return node;
}
function svg(tag, attrs, ...kids) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const kid of kids) node.append(kid);
  return node;
}
const fmt = (v) => v === null || v === undefined || Number.isNaN(v) ? "–"
  : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(2);
const METRICS = {
  S: ["median S", (h) => h.S], ratio: ["median S ÷ null median S", (h) => h.S === null || !h.nS ? null : h.S / h.nS],
  N: ["median N_recon", (h) => h.N],
};
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function colour(t) {
  if (t === null || Number.isNaN(t)) return "#eee";
  const x = Math.min(Math.max(t, 0), 1) * (STOPS.length - 1), i = Math.min(Math.floor(x), STOPS.length - 2);
  const c = STOPS[i].map((a, n) => Math.round(a + (STOPS[i + 1][n] - a) * (x - i)));
  return `rgb(${c.join(",")})`;
}
function block(h, k) {
  let first = k, last = k;
  while (first > 0 && h.b[first - 1] === h.b[k]) first--;
  while (last + 1 < h.b.length && h.b[last + 1] === h.b[k]) last++;
  return { first, last, size: last - first + 1, resolved: k < h.nr };
}
const range = (b) => b.first === b.last ? `k = ${b.first}` : `k = ${b.first}–${b.last}`;
// BPE/SentencePiece tokens carry their leading space; WordPiece (BERT) tokens do not, and mark subwords with "##".
const WORDPIECE = !D.prompts.some(([, , toks]) => toks.some((t) => /^\s/.test(t)));
function shown(token, first) {
  if (!WORDPIECE) return token;
  if (token.startsWith("##")) return token.slice(2);
  return first ? token : " " + token;
}
// Tokens of prompt `index` (into D.prompts) around the marked positions (position -> class), `width` either side.
function tokens(index, marks, width) {
  const [set, prompt, toks] = D.prompts[index], marked = [...marks.keys()].sort((a, b) => a - b);
  const span = el("span", { class: "ctx", title: `${D.sets[set]} prompt ${prompt}, position ${marked.join(" and ")}` });
  let shownTo = 0, fresh = true;  // fresh: the next token starts the span or follows a "…"
  for (const p of marked) {
    const lo = Math.max(0, p - width, shownTo), hi = Math.min(toks.length, p + width + 1);
    if (lo > shownTo || (shownTo === 0 && lo > 0)) { span.append("…"); fresh = true; }
    for (let i = lo; i < hi; i++, fresh = false) {
      span.append(el("span", { class: "tok " + (marks.get(i) || ""), text: shown(toks[i], fresh) }));
    }
    shownTo = Math.max(shownTo, hi);
  }
  if (shownTo < toks.length) span.append("…");
  return span;
}
const at = (pos, cls = "focus") => new Map([[pos, cls]]);
const pair = (t, j) => t === j ? at(t, "focus key") : new Map([[t, "focus"], [j, "key"]]);

function drawGrid() {
  const [label, get] = METRICS[document.getElementById("metric").value];
  const values = D.heads.map(get).filter((v) => v !== null && !Number.isNaN(v));
  const lo = Math.min(...values), hi = Math.max(...values), scale = (v) => v === null ? null : (v - lo) / (hi - lo || 1);
  const table = el("table", { id: "grid" }, el("tr", {}, el("th", { text: "L \\ H" }),
    [...Array(D.nH).keys()].map((h) => el("th", { text: h }))));
  for (let l = 0; l < D.nL; l++) {
    const row = el("tr", {}, el("th", { text: l }));
    for (let hh = 0; hh < D.nH; hh++) {
      const h = HEADS.get(l + "." + hh), v = h ? get(h) : null;
      const deg = h && h.fd >= 0 && h.fd < D.meta.top_directions;
      row.append(el("td", { class: "cell" + (deg ? " deg" : ""), "data-layer": l, "data-head": hh,
        style: `background-color:${colour(scale(v))}`, onclick: () => select(l, hh),
        title: `L${l}H${hh}: ${label} ${fmt(v)}` + (deg ? `; degenerate block from k = ${h.fd}` : "") }));
    }
    table.append(row);
  }
  document.getElementById("grid").replaceWith(table);
  document.getElementById("legend").replaceChildren(`${label}: ${fmt(lo)}`,
    el("span", { class: "legend", style: `background:linear-gradient(90deg,${STOPS.map((c) => `rgb(${c})`).join(",")})` }),
    `${fmt(hi)}; ◥ = a degenerate block among the top ${D.meta.top_directions} directions (δ = 0)`);
  const current = document.body.dataset.head;
  if (current) mark(...current.split(".").map(Number));
}
function mark(l, hh) {
  for (const td of document.querySelectorAll("#grid td.sel")) td.classList.remove("sel");
  const td = document.querySelector(`#grid td[data-layer="${l}"][data-head="${hh}"]`);
  if (td) td.classList.add("sel");
}

function spectrum(h) {
  const r = h.s.length, bw = Math.max(4, Math.min(18, Math.floor(640 / r))), width = bw * r + 50, top = 110;
  const chart = svg("svg", { width, height: top + 90, role: "img" });
  const maxShare = Math.max(...h.sh.map((v) => v ?? 0), ...h.nsh.map((v) => v ?? 0), 1e-9);
  chart.append(svg("text", { x: 0, y: 10, "font-size": 10 }, "σ_k/σ_1"), svg("text", { x: 0, y: top + 30, "font-size": 10 }, "SAD share"));
  h.s.forEach((s, k) => {
    const b = block(h, k), x = 45 + k * bw, y = 12 + (1 - (s ?? 0)) * (top - 20);
    const fill = !b.resolved ? "#bbb" : b.size > 1 ? (h.b[k] % 2 ? "#e67e22" : "#c0392b") : "#3b6ea5";
    chart.append(svg("rect", { class: "bar", x, y, width: bw - 1, height: top - 8 - y, fill },
      svg("title", {}, `k = ${k}: σ/σ1 = ${fmt(s)}; block ${range(b)}${b.resolved ? "" : " (below numerical rank)"}; ` +
        `SAD share ${fmt(h.sh[k])} (null ${fmt(h.nsh[k])})`)));
    if (b.size > 1 && b.first === k && b.resolved)
      chart.append(svg("line", { x1: x, x2: x + b.size * bw - 1, y1: top - 3, y2: top - 3, stroke: "#e67e22", "stroke-width": 3 }));
    const sy = (v) => top + 85 - ((v ?? 0) / maxShare) * 50;
    chart.append(svg("rect", { class: "share", x, y: sy(h.sh[k]), width: bw - 1, height: top + 85 - sy(h.sh[k]), fill: "#7f8c8d" }));
    chart.append(svg("rect", { x, y: sy(h.nsh[k]) - 1, width: bw - 1, height: 2, fill: "#d62728" }));
  });
  return chart;
}
function blockNotes(h) {
  const notes = [];
  for (let k = 0; k < h.s.length; k++) {
    const b = block(h, k);
    if (k !== b.first || (b.size < 2 && b.resolved)) continue;
    const share = h.sh.slice(b.first, b.last + 1).reduce((a, v) => a + (v ?? 0), 0);
    const nullShare = h.nsh.slice(b.first, b.last + 1).reduce((a, v) => a + (v ?? 0), 0);
    notes.push(el("li", {}, b.resolved
      ? `${range(b)} (σ/σ1 ${fmt(h.s[b.first])}…${fmt(h.s[b.last])}): one degenerate block; only its span is defined. ` +
        `SAD share of the block ${fmt(share)} (null ${fmt(nullShare)}).`
      : `${range(b)}: below the numerical rank (σ/σ1 ≤ ${D.meta.rank_rtol}), not resolved.`));
  }
  return notes;
}

function readoutCell(d, cell_) {
  const cell = el("td"), side = { c: pairsOf(d.c[cell_], 3), e: pairsOf(d.e[cell_], 2) };
  const list = el("ol", {}, side.c.map(([index, pos, v]) => el("li", {}, tokens(index, at(pos), W), " ", el("span", { class: "val", text: fmt(v) }))));
  cell.append(list, el("div", { class: "emb" }, "embedding: ", side.e.map(([t, v]) => `${D.vocab[t].trim() || JSON.stringify(D.vocab[t])} (${fmt(v)})`).join(", ")));
  return cell;
}
function readouts(h) {
  if (!h.ro.length) return [el("p", { class: "note", text: "No read-outs for this head." })];
  return h.ro.map((d) => {
    const b = block(h, d.k), degenerate = b.size > 1 || !b.resolved;
    const box = el("div", { class: "readout" + (degenerate ? " degenerate" : "") },
      el("h3", { text: `direction k = ${d.k}: σ/σ1 = ${fmt(h.s[d.k])}, SAD share ${fmt(h.sh[d.k])} (null ${fmt(h.nsh[d.k])})` }));
    if (degenerate) box.append(el("div", { class: "warn", text: b.resolved
      ? `Inside the degenerate block ${range(b)}: this u_k, v_k is one arbitrary basis of the block's span, so read the block's directions together; no claim is made about this direction alone.`
      : "Below the numerical rank: this direction is not resolved." }));
    box.append(el("table", { class: "data" },
      el("tr", {}, el("th", { text: "" }), el("th", { text: "highest projections" }), el("th", { text: "lowest projections" })),
      el("tr", {}, el("th", { text: "query side x̃_t · u_k" }), readoutCell(d, 0), readoutCell(d, 1)),
      el("tr", {}, el("th", { text: "key side v_k · x̃_j" }), readoutCell(d, 2), readoutCell(d, 3))));
    if (d.sae) box.append(el("div", { class: "emb sae" }, "SAE latents: ",
      d.sae.map(([side, latent, cos, label]) => `${side} #${latent} ${label} (|cos| ${fmt(cos)})`).join(", ") || "none matched"));
    return box;
  });
}
function examples(h) {
  if (!h.ex.length) return [el("p", { class: "note", text: "This head has no firing pair in the explorer's prompts." })];
  const head = el("tr", {}, ["query t", "key j (blue) with query t (yellow)", "A", "ℓ̃", "N_recon (haar null)", "S (haar / subspace / covariance null)", "dominant terms: Σ c over each block (share)"].map((t) => el("th", { text: t })));
  const rows = h.ex.map(([index, t, j, a, lt, nr, nnr, S, nullS, top, off, terms]) => el("tr", { class: "example" },
    el("td", {}, tokens(index, at(t), 2)), el("td", {}, tokens(index, pair(t, j), 2)),
    el("td", { text: fmt(a) }), el("td", { text: fmt(lt) }),
    el("td", { text: `${nr < 0 ? "ℓ̃ ≤ 0" : nr} (${fmt(nnr)})` }), el("td", { text: `${fmt(S)} (${nullS.map(fmt).join(" / ")})` }),
    el("td", { title: `largest |c_k| at σ rank ${top}; SVD offset δ = ${off}` }, terms.map(([f, last, v, share]) =>
      el("div", { class: last > f ? "warn" : "" }, `${f === last ? `k = ${f}` : `block k = ${f}–${last}`}: ${fmt(v)} (${fmt(share)})`)))));
  return [el("table", { class: "data" }, head, ...rows)];
}

function select(l, hh) {
  const h = HEADS.get(l + "." + hh);
  if (!h) return false;
  document.getElementById("title").textContent = `Layer ${l}, head ${hh}`;
  const verdicts = ["haar", "subspace", "covariance"].map((name, i) =>
    `${name} ${[fmt(h.nS), fmt(h.sS), fmt(h.cS)][i]}${h.sig[i] > 0 ? " (significantly sparser)" : h.sig[i] < 0 ? " (significantly denser)" : ""}`);
  document.getElementById("stats").textContent = `median S ${fmt(h.S)} (nulls: ${verdicts.join(", ")}); median N_recon ${fmt(h.N)} ` +
    `(null ${fmt(h.nN)}); ${h.pairs} firing pairs (${D.meta.summary_prompt_set} prompts); σ_1 = ${fmt(h.s1)}; numerical rank ${h.nr} of ${h.s.length}` +
    (h.cap ? `; soft-cap: ℓ̃ of the capped logit differs from the decomposed one by up to ${fmt(h.cap * 100)} % of the head's largest ℓ̃` : "") +
    (D.offsets > 1 ? `; offsets δ with a degenerate block among the top ${D.meta.top_directions}: ${h.deg} of ${D.offsets} (spectrum at δ = 0)` : "");
  document.getElementById("spectrum").replaceChildren(spectrum(h), el("ul", {}, blockNotes(h)));
  document.getElementById("readouts").replaceChildren(...readouts(h));
  document.getElementById("examples").replaceChildren(...examples(h));
  document.body.dataset.head = `${l}.${hh}`;
  mark(l, hh);
  try { history.replaceState(null, "", `#L${l}H${hh}`); } catch (err) { /* data: URLs in the report's iframe */ }
  return true;
}
function start() {
  document.getElementById("metric").addEventListener("change", drawGrid);
  drawGrid();
  const match = /^#L(\d+)H(\d+)$/.exec(location.hash);
  const best = D.heads.reduce((a, h) => (METRICS.ratio[1](h) ?? 9) < (METRICS.ratio[1](a) ?? 9) ? h : a, D.heads[0]);
  if (!(match && select(+match[1], +match[2]))) select(best.l, best.h);
  window.explorer = { select, heads: D.heads.length, ready: true };
}
start();
