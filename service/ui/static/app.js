// The ecosystem page: niches, lineage, champion history and samples, read from the service's JSON routes.
//
// Plain JavaScript, SVG and canvas, no framework and no CDN: the page is served offline with the service.
// It polls /status (cheap) and fetches the heavier views only when what they show has changed: /niches when
// the evolver has stepped or the archive or the fitness windows moved, /ancestry and /samples when the
// champion changed. So it stays live while the evolver runs without loading the server.
"use strict";

const params = new URLSearchParams(location.search);
const POLL_MS = Number(params.get("poll")) || 2000; // ?poll=500 for a faster page (the tests use it)
const ROW = 14; // heatmap row height, px
const TOKEN_KEY = "m2n2-admin-token";
// Categorical colours for archive slots (the "best member" band and the row labels), cycled past 20.
const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  "#393b79", "#e6550d", "#31a354", "#843c39", "#7b4173", "#637939", "#3182bd", "#de9ed6", "#969696", "#8c6d31",
];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  status: null,
  niches: null,
  nichesKey: null,
  historyKey: null,
  championKey: null,
  ancestry: null,
  selected: null, // model id of the node whose card is shown
  samplesVersion: null,
};

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** An SVG element with attributes. */
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const pct = (x, digits = 1) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(digits)}%`);
const short = (name, n = 24) => (name.length > n ? `${name.slice(0, n - 1)}…` : name);
const colour = (slot) => PALETTE[slot % PALETTE.length];

class AuthNeeded extends Error {}

/** POST a JSON route of the service (relative to the page, so a path prefix in front of the service works). */
async function call(route, body = {}) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(new URL(`..${route}`, location.href), {
    method: "POST",
    headers,
    body: JSON.stringify(body),
  });
  if (response.status === 401 || response.status === 403) throw new AuthNeeded("the token was refused");
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    throw new Error(`${route}: ${answer.error || response.statusText}`);
  }
  return response.json();
}

// ---- polling --------------------------------------------------------------------------------------------

async function start() {
  const config = await (await fetch("config.json")).json();
  if (config.protect_reads && !state.token) return askForToken("");
  $("views").hidden = false;
  poll();
}

function askForToken(message) {
  $("views").hidden = true;
  $("token-form").hidden = false;
  $("token-error").textContent = message;
  $("token").focus();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token-form").hidden = true;
  $("views").hidden = false;
  poll();
});

let timer = null;

async function poll() {
  clearTimeout(timer);
  try {
    await refresh();
    $("error").hidden = true;
    $("live").className = "ok";
    $("live").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (error instanceof AuthNeeded) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      return askForToken("The server refused that token: enter the admin token.");
    }
    $("error").hidden = false;
    $("error").textContent = `Could not refresh: ${error.message}`;
    $("live").className = "stale";
    $("live").textContent = "not updating";
  }
  timer = setTimeout(poll, POLL_MS);
}

async function refresh() {
  const status = await call("/status");
  state.status = status;
  renderSummary(status);
  const historyKey = JSON.stringify(status.history.map((m) => [m.created_at, m.action, m.version]));
  if (historyKey !== state.historyKey) {
    renderHistory(status.history);
    state.historyKey = historyKey;
  }
  const nichesKey = JSON.stringify([
    status.steps,
    status.archive.map((m) => m.model_id),
    status.tasks.map((t) => t.fitness_points),
  ]);
  if (nichesKey !== state.nichesKey) {
    state.niches = await call("/niches");
    renderNiches();
    $("heatmap").dataset.steps = status.steps; // the evolution step the heatmap shows
    state.nichesKey = nichesKey;
  }
  const champion = status.champion;
  const championKey = champion ? `${champion.model_id}:${champion.version}:${$("depth").value}` : null;
  if (championKey !== state.championKey) {
    if (champion) {
      state.ancestry = await call("/ancestry", { depth: Number($("depth").value) });
      state.selected = state.ancestry.nodes[0].model_id;
      renderLineage();
    } else {
      $("lineage-tree").replaceChildren(el("p", { class: "empty" }, "No champion yet."));
    }
    state.championKey = championKey;
  }
  // The samples come from the model this worker serves, which follows the pointer within a poll interval.
  if (champion && state.samplesVersion !== champion.version) {
    const samples = await call("/samples");
    renderSamples(samples);
    if (samples.version === champion.version) state.samplesVersion = samples.version;
  }
}

$("depth").addEventListener("change", () => {
  state.championKey = null;
  poll();
});

// ---- summary --------------------------------------------------------------------------------------------

function renderSummary(status) {
  const items = [
    ["family", status.family],
    ["champion", status.champion ? `${short(status.champion.model, 30)} (v${status.champion.version})` : "none yet"],
    ["steps", status.steps],
    ["archive", `${status.archive.length}/${status.archive_size}`],
    ["coverage", pct(status.coverage.all)],
    ["tasks", status.tasks.map((t) => `${t.name} (${t.fitness_points} fitness / ${t.gate_points} gate)`).join(", ")],
  ];
  $("summary").replaceChildren(...items.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
}

// ---- niches: the heatmap --------------------------------------------------------------------------------

const BANDS = { task: 16, niche: 16, gap: 4 }; // above the matrix
const BELOW = { best: 12, crowding: 26, gap: 4 }; // under it

function renderNiches() {
  const data = state.niches;
  const labels = [
    el("div", { class: "band-label", style: `height:${BANDS.task}px` }, "task"),
    el("div", { class: "band-label", style: `height:${BANDS.niche + BANDS.gap}px` }, "niche"),
  ];
  for (const m of data.members) {
    labels.push(
      el(
        "div",
        { class: `member-row${m.champion ? " champion" : ""}`, "data-slot": m.slot, title: m.model },
        el("span", { class: "slot" }, m.slot),
        el("span", { class: "dot", style: `background:${colour(m.slot)}` }),
        el("span", { class: "name" }, m.model),
        el("span", { class: "gen" }, m.kind === "specialist" ? "spec." : `g${m.generation}`),
      ),
    );
  }
  labels.push(el("div", { class: "band-label", style: `height:${BELOW.gap + BELOW.best}px;padding-top:${BELOW.gap}px` }, "best"));
  labels.push(el("div", { class: "band-label", style: `height:${BELOW.crowding}px;line-height:${BELOW.crowding}px` }, "crowding"));
  $("row-labels").replaceChildren(...labels);
  drawHeatmap();
  renderNicheTable();
}

/** Map display columns to point ranges: a pixel shows the mean of the points it covers. */
function columns(width, n) {
  const out = [];
  for (let x = 0; x < width; x++) {
    const p0 = Math.floor((x * n) / width);
    out.push([p0, Math.max(p0 + 1, Math.floor(((x + 1) * n) / width))]);
  }
  return out;
}

function drawHeatmap() {
  const data = state.niches;
  const canvas = $("heatmap");
  const n = data.point_ids.length;
  const rows = data.members.length;
  const width = Math.max(200, Math.floor(canvas.parentElement.clientWidth - 230));
  const top = BANDS.task + BANDS.niche + BANDS.gap;
  const height = top + rows * ROW + BELOW.gap + BELOW.best + BELOW.crowding;
  canvas.width = width;
  canvas.height = height;
  canvas.style.height = `${height}px`;
  canvas.dataset.rows = rows;
  canvas.dataset.points = n;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  if (!n || !rows) {
    ctx.fillStyle = "#616e7c";
    ctx.font = "13px sans-serif";
    ctx.fillText(rows ? "No fitness points yet: post feedback to a task." : "The archive is empty.", 8, top + 16);
    return;
  }
  const cols = columns(width, n);
  const x = (p) => Math.round((p * width) / n); // the pixel where point p starts

  // The matrix: one pixel per column, the mean score of the points it covers; unscored cells pink.
  const image = ctx.createImageData(width, rows * ROW);
  for (let r = 0; r < rows; r++) {
    const scores = data.scores[r];
    for (let c = 0; c < width; c++) {
      const [p0, p1] = cols[c];
      let sum = 0;
      let known = 0;
      for (let p = p0; p < p1; p++) {
        if (scores[p] !== null) {
          sum += scores[p];
          known++;
        }
      }
      const rgb = known ? scoreColour(sum / known) : [246, 193, 193];
      for (let dy = 0; dy < ROW - 1; dy++) {
        const i = ((r * ROW + dy) * width + c) * 4;
        image.data[i] = rgb[0];
        image.data[i + 1] = rgb[1];
        image.data[i + 2] = rgb[2];
        image.data[i + 3] = 255;
      }
    }
  }
  ctx.putImageData(image, 0, top);

  // Bands: tasks and niches above, each point's best member and each niche's crowding below.
  const tasks = [];
  for (const g of data.niches) {
    const last = tasks[tasks.length - 1];
    if (last && last.task === g.task) last.end = g.start + g.points;
    else tasks.push({ task: g.task, start: g.start, end: g.start + g.points });
  }
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "middle";
  tasks.forEach((t, i) => {
    ctx.fillStyle = i % 2 ? "#bcccdc" : "#d9e2ec";
    ctx.fillRect(x(t.start), 0, x(t.end) - x(t.start), BANDS.task - 2);
    label(ctx, t.task, x(t.start), x(t.end), BANDS.task / 2 - 1, "#102a43");
  });
  const below = top + rows * ROW + BELOW.gap;
  data.niches.forEach((g, i) => {
    const x0 = x(g.start);
    const x1 = x(g.start + g.points);
    ctx.fillStyle = i % 2 ? "#486581" : "#627d98";
    ctx.fillRect(x0, BANDS.task, x1 - x0, BANDS.niche - 2);
    label(ctx, `N${i + 1}`, x0, x1, BANDS.task + BANDS.niche / 2 - 1, "#fff");
    const share = Math.min(1, g.crowding / rows);
    ctx.fillStyle = "#829ab1";
    const h = Math.max(1, share * (BELOW.crowding - 4));
    ctx.fillRect(x0 + 1, below + BELOW.best + BELOW.crowding - h, Math.max(1, x1 - x0 - 2), h);
    ctx.fillStyle = "#fff"; // niche boundaries through the matrix
    if (i) ctx.fillRect(x0, top, 1, rows * ROW);
  });
  // A point one member alone solves best is that member's own niche: its colour. A shared best is grey,
  // darker when fewer members share it; white where nobody scores.
  for (let c = 0; c < width; c++) {
    const p = cols[c][0];
    const shared = data.sharing[p];
    const tone = Math.round(110 + (120 * (shared - 1)) / Math.max(1, rows - 1));
    ctx.fillStyle = shared === 0 ? "#ffffff" : shared === 1 ? colour(data.best[p]) : `rgb(${tone},${tone + 8},${tone + 16})`;
    ctx.fillRect(c, below, 1, BELOW.best - 2);
  }
  canvas.onmousemove = (event) => heatmapTip(event, { width, top, rows, below, n });
  canvas.onmouseleave = () => ($("heatmap-tip").hidden = true);
}

/** Light grey-blue (0) to dark blue (1). */
function scoreColour(s) {
  const lo = [240, 244, 248];
  const hi = [29, 63, 143];
  return lo.map((v, i) => Math.round(v + (hi[i] - v) * s));
}

function label(ctx, text, x0, x1, y, fill) {
  if (ctx.measureText(text).width + 6 > x1 - x0) return;
  ctx.fillStyle = fill;
  ctx.fillText(text, x0 + 4, y);
}

function heatmapTip(event, { width, top, rows, below, n }) {
  const data = state.niches;
  const rect = event.target.getBoundingClientRect();
  const px = ((event.clientX - rect.left) * width) / rect.width;
  const py = event.clientY - rect.top;
  const p = Math.min(n - 1, Math.max(0, Math.floor((px * n) / width)));
  const niche = data.niches.findIndex((g) => p >= g.start && p < g.start + g.points);
  const g = data.niches[niche];
  const bestSlot = data.best[p];
  const best = data.members.find((m) => m.slot === bestSlot);
  const lines = [`point ${data.point_ids[p]} · task ${g.task} · niche N${niche + 1} (${g.points} points)`];
  const r = Math.floor((py - top) / ROW);
  if (py >= top && r < rows) {
    lines.push(`${data.members[r].model} (slot ${data.members[r].slot}): score ${fmt(data.scores[r][p])}`);
  }
  const shared = data.sharing[p];
  lines.push(
    !best ? "nobody scores on this point" : shared === 1 ? `best alone: ${best.model}` : `best score shared by ${shared} members`,
  );
  lines.push(`niche crowding ${fmt(g.crowding, 2)} of ${rows} members`);
  const tip = $("heatmap-tip");
  tip.textContent = lines.join("\n");
  tip.style.left = `${event.clientX + 14}px`;
  tip.style.top = `${event.clientY + 14}px`;
  tip.hidden = false;
}

function renderNicheTable() {
  const data = state.niches;
  const byslot = new Map(data.members.map((m, i) => [m.slot, [m, i]]));
  const head = el("tr", {}, ["niche", "task", "points", "best member", "its mean score", "crowding"].map((h) => el("th", {}, h)));
  const rows = data.niches.map((g, i) => {
    const [best, row] = g.best === null ? [null, null] : byslot.get(g.best);
    return el(
      "tr",
      {},
      el("td", {}, `N${i + 1}`),
      el("td", {}, g.task),
      el("td", { class: "num" }, g.points),
      el("td", {}, best ? [el("span", { class: "swatch", style: `background:${colour(best.slot)};margin-left:0` }), best.model] : "–"),
      el("td", { class: "num" }, best ? fmt(g.profile[row]) : "–"),
      el(
        "td",
        {},
        el("span", { class: "bar", style: `width:${Math.round(80 * Math.min(1, g.crowding / Math.max(1, data.members.length)))}px` }),
        ` ${fmt(g.crowding, 1)}`,
      ),
    );
  });
  const coverage = data.tasks.map((t) => `${t.name}: ${pct(t.coverage)} of ${t.points} points`).join(" · ");
  $("niche-table").replaceChildren(
    el("caption", { style: "text-align:left;padding:4px 0;color:#616e7c" }, `coverage (best member's score, averaged) ${coverage || "–"}`),
    head,
    ...rows,
  );
}

window.addEventListener("resize", () => state.niches && drawHeatmap());

// ---- lineage: the tree ----------------------------------------------------------------------------------

const NODE = { w: 200, h: 54, dx: 22, dy: 40, pad: 16 };

function renderLineage() {
  const { nodes } = state.ancestry;
  const byId = new Map(nodes.map((n) => [n.model_id, n]));
  // Each model one row below its lowest child (the longest path from the root), so every edge points down,
  // and the registered specialists share the bottom row: the tree reads from the champion back to them.
  const row = new Map(nodes.map((n) => [n.model_id, 0]));
  for (let changed = true; changed; ) {
    changed = false;
    for (const n of nodes) {
      for (const p of n.parents) {
        if (byId.has(p.model_id) && row.get(p.model_id) < row.get(n.model_id) + 1) {
          row.set(p.model_id, row.get(n.model_id) + 1);
          changed = true;
        }
      }
    }
  }
  const bottom = Math.max(...row.values());
  for (const n of nodes) if (!n.parents.length && n.model_id !== nodes[0].model_id) row.set(n.model_id, bottom);
  const sparse = [];
  for (const n of nodes) (sparse[row.get(n.model_id)] ||= []).push(n);
  const layers = sparse.filter(Boolean); // a row left empty by the specialists' move is dropped
  layers.forEach((layer, d) => layer.forEach((n) => row.set(n.model_id, d)));
  const position = new Map([[nodes[0].model_id, 0]]);
  for (let d = 1; d < layers.length; d++) {
    const pull = new Map();
    for (const child of layers.slice(0, d).flat()) {
      child.parents.forEach((p, k) => {
        if (!byId.has(p.model_id) || row.get(p.model_id) !== d) return;
        const list = pull.get(p.model_id) || [];
        list.push(position.get(child.model_id) + k * 0.1);
        pull.set(p.model_id, list);
      });
    }
    const mean = (id) => {
      const list = pull.get(id) || [Infinity];
      return list.reduce((a, b) => a + b, 0) / list.length;
    };
    layers[d].sort((a, b) => mean(a.model_id) - mean(b.model_id) || a.model_id - b.model_id);
    layers[d].forEach((n, i) => position.set(n.model_id, i - (layers[d].length - 1) / 2)); // centred, as drawn
  }
  const widest = Math.max(...layers.map((l) => l.length));
  const width = NODE.pad * 2 + widest * NODE.w + (widest - 1) * NODE.dx;
  const height = NODE.pad * 2 + layers.length * NODE.h + (layers.length - 1) * NODE.dy + 14;
  const xy = new Map();
  layers.forEach((layer, d) => {
    const span = layer.length * NODE.w + (layer.length - 1) * NODE.dx;
    const x0 = (width - span) / 2;
    layer.forEach((n, i) => xy.set(n.model_id, [x0 + i * (NODE.w + NODE.dx), NODE.pad + d * (NODE.h + NODE.dy)]));
  });

  const edges = [];
  for (const n of nodes) {
    const [cx, cy] = xy.get(n.model_id);
    n.parents.forEach((p, k) => {
      if (!xy.has(p.model_id)) return;
      const [px, py] = xy.get(p.model_id);
      const x1 = cx + NODE.w * (n.parents.length > 1 ? (k ? 0.7 : 0.3) : 0.5);
      const y1 = cy + NODE.h;
      const x2 = px + NODE.w / 2;
      const mid = (y1 + py) / 2;
      edges.push(svg("path", { class: "edge", d: `M${x1},${y1} C${x1},${mid} ${x2},${mid} ${x2},${py}` }));
      edges.push(svg("text", { class: "edge-label", x: x1 + 4, y: y1 + 12 }, p.role === "a" ? "A" : "B"));
    });
  }
  const boxes = nodes.map((n) => {
    const [x, y] = xy.get(n.model_id);
    const classes = ["node", n.kind, n.champion ? "champion" : "", n.slot === null ? "gone" : "", n.model_id === state.selected ? "selected" : ""];
    const lines =
      n.split !== null
        ? [
            svg("text", { class: "merge", x: 8, y: 31 }, `split ${pct(n.split.fraction)} · ${short(n.split.tensor, 18)}`),
            svg("text", { class: "meta", x: 8, y: 46 }, `ratio ${fmt(n.mixing_ratio, 2)} · gen ${n.generation} · ${n.operator}`),
          ]
        : [
            svg("text", { class: "meta", x: 8, y: 31 }, n.kind === "specialist" ? "registered specialist" : n.operator),
            svg("text", { class: "meta", x: 8, y: 46 }, short(n.licence ? `licence ${n.licence}` : `gen ${n.generation}`, 30)),
          ];
    const hidden = n.parents.filter((p) => !xy.has(p.model_id)).length;
    const group = svg(
      "g",
      {
        class: classes.filter(Boolean).join(" "),
        transform: `translate(${x},${y})`,
        "data-model": n.model,
        "data-root": n.depth === 0 ? "true" : null,
      },
      svg("title", {}, n.model),
      svg("rect", { width: NODE.w, height: NODE.h, rx: 5 }),
      svg("text", { class: "title", x: 8, y: 16 }, `${n.champion ? "★ " : ""}${short(n.model, 27)}`),
      lines,
      hidden ? svg("text", { class: "more", x: 8, y: NODE.h + 25 }, `${hidden} older ancestor${hidden > 1 ? "s" : ""} not shown`) : null,
    );
    group.addEventListener("click", () => {
      state.selected = n.model_id;
      renderLineage();
    });
    return group;
  });
  const tree = $("lineage-tree");
  const first = !tree.querySelector("svg");
  const [left, top] = [tree.scrollLeft, tree.scrollTop]; // a click redraws the tree where it was
  tree.replaceChildren(svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` }, edges, boxes));
  if (first) tree.scrollLeft = (width - tree.clientWidth) / 2; // the champion sits at the top centre
  else [tree.scrollLeft, tree.scrollTop] = [left, top];
  renderCard(byId.get(state.selected) || nodes[0]);
}

function renderCard(n) {
  const scores = (per) => Object.entries(per).map(([task, v]) => `${task} ${fmt(v)}`).join(", ") || "–";
  const rows = [
    ["kind", n.kind === "specialist" ? "registered specialist" : `${n.kind}, generation ${n.generation}`],
    ["made by", n.operator],
    ["parents", n.parents.map((p) => `${p.role.toUpperCase()}: ${p.model}`).join("\n") || "–"],
    ["split point", n.split ? `${n.split.index} of ${state.ancestry.n_params} (${pct(n.split.fraction, 2)})` : "–"],
    ["in tensor", n.split ? `${n.split.tensor} [${n.split.tensor_index} of ${n.split.tensor_numel}]` : "–"],
    ["mixing ratio", n.mixing_ratio === null ? "–" : fmt(n.mixing_ratio, 4)],
    ["fitness", scores(n.fitness)],
    ["gate", scores(n.gate)],
    ["archive", n.slot === null ? "not a member" : `slot ${n.slot}`],
    ["source", n.source || "–"],
    ["licence", n.licence || "–"],
    ["registered by", n.registered_by || "–"],
    ["created", new Date(n.created_at).toLocaleString()],
    ["sha256", el("code", {}, n.sha256)],
  ];
  $("model-card").replaceChildren(
    el("h3", {}, `${n.champion ? "★ " : ""}${n.model}`),
    el("dl", {}, rows.map(([k, v]) => [el("dt", {}, k), el("dd", { style: "white-space:pre-line" }, v)])),
  );
  $("model-card").dataset.model = n.model;
}

// ---- champion history -----------------------------------------------------------------------------------

function renderHistory(history) {
  if (!history.length) {
    $("timeline").replaceChildren(el("li", { class: "empty" }, "No promotion yet."));
    return;
  }
  $("timeline").replaceChildren(
    ...history.map((m) => {
      const first = m.previous_model === null;
      const what =
        m.action === "rollback"
          ? `rolled back to ${m.model}`
          : `${first ? "first champion" : "promoted"} ${m.model}${first ? "" : ` over ${m.previous_model}`}`;
      // The gate's evidence, as far as the move recorded it (a first champion or a rollback has none).
      const evidence = [];
      if (m.champion_score !== null || m.challenger_score !== null) {
        evidence.push(`gate score: champion ${fmt(m.champion_score)} → challenger ${fmt(m.challenger_score)}`);
      }
      if (m.p_value !== null) evidence.push(`paired test p = ${Number(m.p_value).toPrecision(3)}`);
      if (m.n_points !== null) evidence.push(`${m.n_points} gate points`);
      return el(
        "li",
        { class: `${m.action}${first ? " first" : ""}`, "data-model": m.model, "data-version": m.version },
        el("div", {}, el("span", { class: "what" }, `v${m.version} · ${what}`), " ", el("span", { class: "when" }, new Date(m.created_at).toLocaleString())),
        evidence.length ? el("div", { class: "evidence" }, evidence.join(" · ")) : null,
        el("div", { class: "reason" }, `${m.reason} (${m.actor})`),
      );
    }),
  );
}

// ---- samples --------------------------------------------------------------------------------------------

function renderSamples(samples) {
  const tasks = new Map();
  for (const s of samples.samples) (tasks.get(s.task) || tasks.set(s.task, []).get(s.task)).push(s);
  const header = el("p", { class: "legend" }, `answered by ${samples.model} (version ${samples.version}, ${samples.family})`);
  const groups = [...tasks].map(([task, list]) =>
    el("div", { class: "sample-task" }, el("h3", {}, task), el("div", { class: "sample-grid" }, list.map(renderSample))),
  );
  $("sample-list").replaceChildren(header, ...(groups.length ? groups : [el("p", { class: "empty" }, "No gate points yet.")]));
  $("sample-list").dataset.version = samples.version;
}

function renderSample(s) {
  const a = s.answer;
  // Right or wrong where that is clear: a label against the target, else a binary score (exact match).
  let verdict = "";
  if ("label" in a) verdict = a.label === s.target ? "right" : "wrong";
  else if (s.score === 0 || s.score === 1) verdict = s.score ? "right" : "wrong";
  return el(
    "div",
    { class: `sample ${verdict}`, "data-point": s.point_id },
    el("div", {}, el("span", { class: "label" }, "input"), renderValue(s.inputs)),
    el("div", {}, el("span", { class: "label" }, "target"), renderValue(s.target)),
    el("div", {}, el("span", { class: "label" }, "answer"), renderAnswer(a)),
    el("div", {}, el("span", { class: "label" }, "stored score"), fmt(s.score)),
  );
}

/** The family's answer: a label (classifier), a completion (language models), images (diffusion), else JSON. */
function renderAnswer(a) {
  if ("label" in a) {
    const p = Array.isArray(a.probabilities) ? ` (p ${fmt(a.probabilities[a.label], 2)})` : "";
    return el("span", { class: "answer" }, el("span", { class: "big" }, a.label), p);
  }
  if (typeof a.text === "string") return el("pre", { class: "answer" }, a.text || "(empty completion)");
  const images = Object.values(a).flat().filter((v) => typeof v === "string" && v.startsWith("data:image/"));
  if (images.length) return el("div", { class: "answer" }, images.map((src) => el("img", { src, alt: "generated image" })));
  return el("pre", { class: "answer" }, JSON.stringify(a, null, 1));
}

/** A point's input or target: a square list of numbers is drawn as a grey image (the digits), text as text. */
function renderValue(v) {
  if (Array.isArray(v) && v.length >= 4 && v.every((x) => typeof x === "number")) {
    const side = Math.round(Math.sqrt(v.length));
    if (side * side === v.length) {
      const canvas = el("canvas", { width: side, height: side });
      const ctx = canvas.getContext("2d");
      const image = ctx.createImageData(side, side);
      const max = Math.max(...v, 1e-9);
      v.forEach((x, i) => {
        const g = 255 - Math.round((255 * Math.max(0, x)) / max);
        image.data.set([g, g, g, 255], i * 4);
      });
      ctx.putImageData(image, 0, 0);
      return canvas;
    }
  }
  if (typeof v === "string" && v.startsWith("data:image/")) return el("img", { src: v, alt: "input image" });
  if (typeof v === "string") return el("pre", {}, v);
  return el("span", { class: typeof v === "number" ? "big" : "" }, JSON.stringify(v));
}

start().catch((error) => {
  $("error").hidden = false;
  $("error").textContent = `The page could not start: ${error.message}`;
});
