// The atlas page: draws the Model Graph from /api/graph (layered per tree), zoom and pan, colour by tree
// or relation, name search, model details with the lineage path, and text search. No libraries.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const RELATION_COLOURS = {
  finetune: "#1f77b4", adapter: "#9467bd", quantized: "#2ca02c", merge: "#d62728",
  pruned: "#8c564b", duplicate: "#7f7f7f", unknown: "#bcbd22", root: "#444444",
};
const DX = 70, DY = 90, TREE_GAP = 60, MIN_ROW_WIDTH = 2400;
// a layer of more than WIDE_LAYER models (a base with thousands of fine-tunes) is wrapped into sub-rows
// SUB_DY apart, so a huge fan is drawn as a block, not as a line a few pixels high when the page fits it
const WIDE_LAYER = 30, SUB_DY = 45;

const state = { graph: null, pos: new Map(), nodes: new Map(), edges: [], incoming: new Map(), view: { x: 0, y: 0, k: 1 },
                colour: "tree", source: "recovered", selected: null, path: [], matches: new Set() };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function html(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else if (k === "onclick") node.onclick = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  return body;
}

function treeColour(tree) {
  if (tree === null || tree === undefined) return "#999";
  const hue = (tree * 137.508) % 360; // golden angle: neighbouring tree ids get distant hues
  return `hsl(${hue.toFixed(0)}, 62%, 48%)`;
}

// ---- layout: trees side by side (wrapping into rows), each drawn in layers by depth from its roots ----
// Rows are as wide as makes the whole picture about the shape of the page (`aspect`: width / height), so
// that an atlas of thousands of trees fits the screen as a block rather than a column.
function layout(graph, aspect = viewAspect()) {
  const parents = new Map(), children = new Map();
  for (const m of graph.models) { parents.set(m.id, []); children.set(m.id, []); }
  for (const e of graph.edges) {
    if (!parents.has(e.child) || !parents.has(e.parent)) continue;
    parents.get(e.child).push(e.parent); children.get(e.parent).push(e.child);
  }
  const boxes = [], singles = [];
  for (const group of components(graph, parents, children)) {
    if (group.length === 1) singles.push(group[0]);
    else boxes.push(treeBox(group, parents, children));
  }
  const area = boxes.reduce((s, b) => s + (b.width + TREE_GAP) * (b.height + TREE_GAP), 0) + singles.length * DX * DY;
  const rowWidth = Math.max(MIN_ROW_WIDTH, Math.sqrt(area * aspect));
  const pos = new Map();
  let x0 = 0, y0 = 0, rowHeight = 0;
  for (const box of boxes) {
    if (x0 > 0 && x0 + box.width > rowWidth) { x0 = 0; y0 += rowHeight + TREE_GAP; rowHeight = 0; }
    for (const [id, fx, y] of box.nodes) pos.set(id, { x: x0 + fx * box.width, y: y0 + y });
    x0 += box.width + TREE_GAP; rowHeight = Math.max(rowHeight, box.height);
  }
  if (singles.length) {
    y0 += rowHeight + TREE_GAP; x0 = 0;
    const perRow = Math.max(1, Math.floor(rowWidth / DX));
    singles.sort().forEach((id, i) => pos.set(id, { x: x0 + (i % perRow + 0.5) * DX, y: y0 + Math.floor(i / perRow) * DY }));
  }
  return pos;
}

function viewAspect() {
  const svg = $("graph");
  return svg && svg.clientWidth && svg.clientHeight ? svg.clientWidth / svg.clientHeight : 16 / 9;
}

// components of the drawn edges (so "declared" edges lay out too), largest first
function components(graph, parents, children) {
  const comp = new Map(), groups = [];
  for (const m of graph.models) {
    if (comp.has(m.id)) continue;
    const group = [m.id], stack = [m.id]; comp.set(m.id, groups.length);
    while (stack.length) {
      const v = stack.pop();
      for (const w of [...parents.get(v), ...children.get(v)]) if (!comp.has(w)) { comp.set(w, groups.length); group.push(w); stack.push(w); }
    }
    groups.push(group);
  }
  // members in the page's model order, as they were before
  const order = new Map(graph.models.map((m, i) => [m.id, i]));
  for (const g of groups) g.sort((a, b) => order.get(a) - order.get(b));
  return groups.sort((a, b) => b.length - a.length || (a[0] < b[0] ? -1 : 1));
}

// One tree: `nodes` as [id, x as a share of the box's width, y], and the box's size. A layer is ordered by the
// mean position of its parents, so lines cross less; a wide one is wrapped into sub-rows.
function treeBox(group, parents, children) {
  const depth = depths(group, parents, children);
  const layers = [];
  for (const id of group) (layers[depth.get(id)] ||= []).push(id);
  const share = new Map(), rows = [];
  for (const layer of layers) {
    if (!layer) continue;
    const key = (id) => { const ps = parents.get(id).filter((p) => share.has(p)); return ps.length ? ps.reduce((s, p) => s + share.get(p), 0) / ps.length : -1; };
    const keys = new Map(layer.map((id) => [id, key(id)]));
    layer.sort((a, b) => keys.get(a) - keys.get(b) || (a < b ? -1 : 1));
    const wrap = layer.length > WIDE_LAYER ? Math.max(WIDE_LAYER, Math.ceil(Math.sqrt(layer.length * SUB_DY / DX))) : layer.length;
    const layerRows = [];
    for (let i = 0; i < layer.length; i += wrap) layerRows.push(layer.slice(i, i + wrap));
    layerRows.forEach((row) => row.forEach((id, i) => share.set(id, (i + 0.5) / row.length)));
    rows.push(layerRows);
  }
  const width = Math.max(...rows.flat().map((r) => r.length)) * DX;
  const nodes = [];
  let y = 0;
  for (const layerRows of rows) {
    layerRows.forEach((row, k) => row.forEach((id) => nodes.push([id, share.get(id), y + k * SUB_DY])));
    y += DY + (layerRows.length - 1) * SUB_DY;
  }
  return { nodes, width, height: y };
}

function depths(group, parents, children) {
  // longest path from a root (Kahn's order); members of a cycle, if any, stay at depth 0
  const indeg = new Map(group.map((id) => [id, parents.get(id).length]));
  const depth = new Map(group.map((id) => [id, 0]));
  const queue = group.filter((id) => indeg.get(id) === 0);
  for (let head = 0; head < queue.length; head++) {
    const v = queue[head];
    for (const w of children.get(v)) {
      depth.set(w, Math.max(depth.get(w), depth.get(v) + 1));
      indeg.set(w, indeg.get(w) - 1);
      if (indeg.get(w) === 0) queue.push(w);
    }
  }
  return depth;
}

// ---- drawing ----
function incomingRelation(id) {
  return state.incoming.get(id) || "root";
}

function nodeColour(m) {
  return state.colour === "tree" ? treeColour(m.tree) : RELATION_COLOURS[incomingRelation(m.id)] || "#999";
}

function draw() {
  const graph = state.graph, edgeLayer = $("edge-layer"), nodeLayer = $("node-layer");
  edgeLayer.replaceChildren(); nodeLayer.replaceChildren(); state.nodes.clear(); state.edges = [];
  state.pos = layout(graph);
  state.incoming = new Map();  // the relation of each model's first incoming edge, for colouring by relation
  for (const e of graph.edges) if (!state.incoming.has(e.child)) state.incoming.set(e.child, e.relation);
  for (const e of graph.edges) {
    const a = state.pos.get(e.parent), b = state.pos.get(e.child);
    if (!a || !b) continue;
    const shorten = 9 / Math.max(1, Math.hypot(b.x - a.x, b.y - a.y));
    const line = el("line", { x1: a.x, y1: a.y, x2: b.x - (b.x - a.x) * shorten, y2: b.y - (b.y - a.y) * shorten,
      class: `edge ${e.source}`, stroke: RELATION_COLOURS[e.relation] || "#999", "marker-end": "url(#arrow)" });
    line.append(el("title", {}, `${e.parent} → ${e.child}: ${e.relation} (${e.source}, confidence ${e.confidence})`));
    line.dataset.parent = e.parent; line.dataset.child = e.child;
    edgeLayer.append(line); state.edges.push(line);
  }
  const labels = graph.models.length <= 400;
  for (const m of graph.models) {
    const p = state.pos.get(m.id);
    const circle = el("circle", { cx: p.x, cy: p.y, r: 8, class: "node", fill: nodeColour(m), "data-id": m.id });
    circle.append(el("title", {}, `${m.id} (tree ${m.tree ?? "-"}, ${m.format})`));
    circle.addEventListener("click", (ev) => { ev.stopPropagation(); select(m.id); });
    nodeLayer.append(circle); state.nodes.set(m.id, circle);
    if (labels) nodeLayer.append(el("text", { x: p.x, y: p.y + 20, class: "label", "text-anchor": "middle" }, m.label || shortName(m.id)));
  }
  legend(); highlight();
}

function shortName(id) { return id.length > 18 ? "…" + id.slice(-17) : id; }

function legend() {
  const box = $("legend");
  box.replaceChildren(html("h3", { text: state.colour === "tree" ? "edges by relation · nodes by tree" : "edges and nodes by relation" }));
  for (const [rel, colour] of Object.entries(RELATION_COLOURS)) {
    const sw = html("span", { class: "swatch" }); sw.style.background = colour;
    box.append(html("div", {}, [sw, rel === "root" ? "root (no parent)" : rel]));
  }
  box.append(html("div", { class: "note", text: "dashed: declared in a model card; solid: recovered from weights" }));
}

function highlight(path = state.path) {
  state.path = path;
  const onPath = new Set(path);
  for (const [id, node] of state.nodes) {
    node.classList.toggle("selected", id === state.selected);
    node.classList.toggle("onpath", onPath.has(id) && id !== state.selected);
    node.classList.toggle("match", state.matches.has(id));
  }
  const pairs = new Set(path.slice(1).map((p, i) => `${p}\u0000${path[i]}`));
  for (const line of state.edges) line.classList.toggle("onpath", pairs.has(`${line.dataset.parent}\u0000${line.dataset.child}`));
}

// ---- zoom and pan ----
function applyView() {
  const { x, y, k } = state.view;
  $("viewport").setAttribute("transform", `translate(${x},${y}) scale(${k})`);
}

function fit() {
  const svg = $("graph"), box = $("viewport").getBBox(), w = svg.clientWidth, h = svg.clientHeight;
  if (!box.width && !box.height) return;
  const k = Math.min(2, 0.92 * Math.min(w / Math.max(box.width, 1), h / Math.max(box.height, 1)));
  state.view = { k, x: w / 2 - k * (box.x + box.width / 2), y: h / 2 - k * (box.y + box.height / 2) };
  applyView();
}

function centreOn(id) {
  const p = state.pos.get(id), svg = $("graph");
  if (!p) return;
  const k = Math.max(state.view.k, 0.8);
  state.view = { k, x: svg.clientWidth / 2 - k * p.x, y: svg.clientHeight / 2 - k * p.y };
  applyView();
}

function setupZoomPan() {
  const svg = $("graph");
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
    const factor = Math.exp(-ev.deltaY * 0.0015), k = Math.min(8, Math.max(0.05, state.view.k * factor));
    const f = k / state.view.k;
    state.view = { k, x: mx - f * (mx - state.view.x), y: my - f * (my - state.view.y) };
    applyView();
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => {
    if (ev.target.classList.contains("node")) return;
    drag = { x: ev.clientX, y: ev.clientY, vx: state.view.x, vy: state.view.y };
    svg.classList.add("panning"); svg.setPointerCapture(ev.pointerId);
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    state.view.x = drag.vx + ev.clientX - drag.x; state.view.y = drag.vy + ev.clientY - drag.y; applyView();
  });
  const end = () => { drag = null; svg.classList.remove("panning"); };
  svg.addEventListener("pointerup", end); svg.addEventListener("pointercancel", end);
}

// ---- details ----
function modelLink(id) {
  return html("a", { class: "model", text: id, onclick: () => { select(id); centreOn(id); } });
}

function edgeTable(edges, other) {
  if (!edges.length) return html("p", { class: "note", text: "none" });
  const rows = edges.map((e) => html("tr", {}, [html("td", {}, [modelLink(e[other])]), html("td", { text: e.relation }),
    html("td", { text: Number(e.confidence).toFixed(2) }), html("td", { text: e.source })]));
  return html("table", {}, [html("tr", {}, ["model", "relation", "conf.", "source"].map((t) => html("th", { text: t }))), ...rows]);
}

// Answers can arrive out of order on a slow server: each request carries a number, and only the answer
// to the latest request of its kind is shown (a late search must not undo a later click).
const latest = { select: 0, search: 0 };

async function select(id) {
  const ticket = ++latest.select;
  state.selected = id;
  const box = $("details");
  let m;
  try { m = await api(`/api/model?id=${encodeURIComponent(id)}`); }
  catch (err) { if (ticket === latest.select) box.replaceChildren(html("p", { class: "note", text: err.message })); return; }
  if (ticket !== latest.select) return;
  const lineage = html("div", { class: "lineage", id: "lineage" });
  m.lineage.forEach((name, i) => { if (i) lineage.append(" ← "); lineage.append(modelLink(name)); });
  const parents = edgeTable(m.parents, "parent"); parents.id = "parents";
  const children = edgeTable(m.children, "child"); children.id = "children";
  box.replaceChildren(
    html("h2", { id: "model-name", text: m.id }),
    html("table", {}, [["format", m.format], ["parameters", Number(m.parameters).toLocaleString()], ["tree", m.tree ?? "-"],
      ["declared base", m.declared_base_model ?? "-"], ["path", m.path]].map(([k, v]) => html("tr", {}, [html("th", { text: k }), html("td", { text: String(v) })]))),
    html("h3", { text: "parents" }), parents, html("h3", { text: "children" }), children,
    html("h3", { text: "lineage path to the root" }), lineage);
  highlight(m.lineage);
}

// ---- searches ----
function showResults(title, items, note) {
  $("results").hidden = false; $("results-title").textContent = title;
  $("result-list").replaceChildren(...items); $("results-note").textContent = note || "";
}

async function nameSearch(q) {
  const ticket = ++latest.search, selectedBefore = latest.select;
  state.matches = new Set();
  if (!q) { $("results").hidden = true; highlight(); return; }
  let body;
  try { body = await api(`/api/search?q=${encodeURIComponent(q)}&limit=50`); }
  catch (err) { if (ticket === latest.search) showResults("name search", [], err.message); return; }
  if (ticket !== latest.search) return;
  state.matches = new Set(body.results.map((r) => r.id));
  showResults(`models named like “${q}”`, body.results.map((r) => html("li", {}, [modelLink(r.id)])), body.results.length ? "" : "no model matches");
  highlight();
  // a single match is opened, unless the user picked a model while the search was on its way
  if (body.results.length === 1 && latest.select === selectedBefore) { select(body.results[0].id); centreOn(body.results[0].id); }
}

async function textSearch(q) {
  if (!q) return;
  try {
    const body = await api(`/api/text-search?q=${encodeURIComponent(q)}&limit=20`);
    state.matches = new Set(body.results.map((r) => r.model));
    showResults(`weights matching “${q}”`, body.results.map((r) => html("li", {}, [modelLink(r.model), ` ${r.score.toFixed(3)}`])),
      body.results.length ? (body.note || "") : "no model has an expert that fits");
  } catch (err) { showResults("text search", [], err.message); }
  highlight();
}

async function load() {
  const [status, graph] = await Promise.all([api("/api/status"), api(`/api/graph?edges=${state.source}`)]);
  state.graph = graph;
  $("stats").textContent = `${status.models} models · ${status.trees} trees · ${graph.edges.length} ${state.source} edges`;
  // the text search box exists only when the server has ProbeX experts to answer it
  $("text-form").hidden = !status.experts;
  draw(); fit();
  document.body.dataset.ready = "1";
}

function main() {
  setupZoomPan();
  $("fit").onclick = fit;
  $("colour").onchange = (ev) => { state.colour = ev.target.value; draw(); };
  $("edges").onchange = (ev) => { state.source = ev.target.value; load(); };
  let timer = null;
  $("name-form").onsubmit = (ev) => { ev.preventDefault(); clearTimeout(timer); nameSearch($("search").value.trim()); };
  $("search").oninput = () => { clearTimeout(timer); timer = setTimeout(() => nameSearch($("search").value.trim()), 250); };
  $("text-form").onsubmit = (ev) => { ev.preventDefault(); textSearch($("text").value.trim()); };
  load().catch((err) => { $("stats").textContent = `cannot load the graph: ${err.message}`; });
}

main();
