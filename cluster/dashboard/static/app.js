// The paretune dashboard: polls /api/studies and redraws the selected study when its version
// changes. Plain JavaScript and SVG, nothing fetched from outside the server.
"use strict";

const state = { study: 0, sort: "trial", desc: false, status: "", where: "", offset: 0,
  limit: 50, cost: "", trial: null, version: null, poll: 2 };
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const started = performance.now();

async function api(path, params = {}) {
  const url = new URL("/api/" + path, location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== "" && value !== null && value !== undefined) url.searchParams.set(key, value);
  }
  const reply = await fetch(url, { credentials: "same-origin" });
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || reply.statusText);
  return body;
}

function number(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const size = Math.abs(value);
  return size !== 0 && (size >= 1e5 || size < 1e-3) ? value.toExponential(2) : String(Number(value.toPrecision(4)));
}

function element(tag, attributes = {}, text = "") {
  const node = ["svg", "g", "path", "circle", "line", "text", "rect"].includes(tag)
    ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== "") node.textContent = text;
  return node;
}

function ticks(low, high, count = 5) {
  const step = Math.pow(10, Math.floor(Math.log10((high - low) / count || 1)));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (high - low) / s <= count) || step * 10;
  const out = [];
  for (let t = Math.ceil(low / nice) * nice; t <= high + nice * 1e-9; t += nice) out.push(t);
  return out;
}

// An empty chart in `svg`: axes for `xlim` and `ylim`, returning the scales to draw with.
function axes(svg, xlim, ylim, xlabel, ylabel) {
  svg.replaceChildren();
  const box = { left: 58, right: 470, top: 10, bottom: 262 };
  const span = (lim) => (lim[1] - lim[0]) || 1;
  const x = (v) => box.left + ((v - xlim[0]) / span(xlim)) * (box.right - box.left);
  const y = (v) => box.bottom - ((v - ylim[0]) / span(ylim)) * (box.bottom - box.top);
  const axis = element("g", { class: "axis" });
  axis.append(element("path", { d: `M${box.left},${box.top}V${box.bottom}H${box.right}`, fill: "none" }));
  for (const t of ticks(xlim[0], xlim[1])) {
    axis.append(element("line", { x1: x(t), x2: x(t), y1: box.bottom, y2: box.bottom + 4 }));
    axis.append(element("text", { x: x(t), y: box.bottom + 15, "text-anchor": "middle" }, number(t)));
  }
  for (const t of ticks(ylim[0], ylim[1])) {
    axis.append(element("line", { x1: box.left - 4, x2: box.left, y1: y(t), y2: y(t) }));
    axis.append(element("text", { x: box.left - 6, y: y(t) + 3, "text-anchor": "end" }, number(t)));
  }
  axis.append(element("text", { class: "label", x: (box.left + box.right) / 2, y: 292, "text-anchor": "middle" }, xlabel));
  axis.append(element("text", { class: "label", transform: `translate(12,${(box.top + box.bottom) / 2}) rotate(-90)`, "text-anchor": "middle" }, ylabel));
  svg.append(axis);
  return { x, y, box };
}

const clip = (v, lim) => Math.min(Math.max(v, lim[0]), lim[1]);
const stepPath = (points, s) => points.map(([a, b], i) =>
  (i ? `H${s.x(a)}V${s.y(b)}` : `M${s.x(a)},${s.y(b)}`)).join("");

function limits(values, pad = 0.05) {
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  if (!finite.length) return [0, 1];
  const low = Math.min(...finite), high = Math.max(...finite), room = (high - low || Math.abs(high) || 1) * pad;
  return [low - room, high + room];
}

function drawFront(layout) {
  const svg = $("front");
  if (!layout.cost) { svg.replaceChildren(element("text", { x: 240, y: 150, "text-anchor": "middle" }, "no completed trial yet")); return; }
  const select = $("cost");
  select.replaceChildren(...layout.costs.map((c) => element("option", c === layout.cost ? { selected: "" } : {}, c)));
  const s = axes(svg, layout.xlim, layout.ylim, layout.cost, layout.metric);
  const dot = (cls) => ([a, b]) => element("circle", { class: "pt " + cls, r: 3,
    cx: s.x(clip(a, layout.xlim)), cy: s.y(clip(b, layout.ylim)) });
  svg.append(...layout.uncompressed.map(dot("uncompressed")));
  svg.append(...layout.compressed.map(([a, b]) => element("path", { class: "pt compressed",
    d: `M${s.x(clip(a, layout.xlim))},${s.y(clip(b, layout.ylim)) - 4}l4,7h-8z` })));
  if (layout.bound) {
    const bx = s.x(clip(layout.bound, layout.xlim));
    svg.append(element("line", { class: "bound", x1: bx, x2: bx, y1: s.box.top, y2: s.box.bottom }));
    const right = bx > s.box.right - 80;
    svg.append(element("text", { class: "label", x: right ? bx - 4 : bx + 4, y: s.box.top + 10,
      "text-anchor": right ? "end" : "start" }, "bound " + number(layout.bound)));
  }
  const front = layout.front.map(([a, b]) => [clip(a, layout.xlim), clip(b, layout.ylim)]);
  svg.append(element("path", { class: "front-line", d: stepPath(front, s) }));
  svg.append(...front.map(([a, b]) => element("circle", { class: "front", r: 4, cx: s.x(a), cy: s.y(b) })));
  const drawn = layout.compressed.length + layout.uncompressed.length;
  $("front-note").textContent = `${layout.front.length} on the front of ${layout.trials} completed` +
    (drawn < layout.trials ? `, ${drawn} drawn` : "") +
    (layout.off_axis ? `, ${layout.off_axis} beyond the fence on the edge` : "");
}

function drawBest(best) {
  const svg = $("best");
  if (!best.points.length) { svg.replaceChildren(element("text", { x: 240, y: 150, "text-anchor": "middle" }, "no feasible trial yet")); $("best-note").textContent = ""; return; }
  const minutes = best.points[best.points.length - 1][0] > 180;
  const points = best.points.map(([t, v]) => [minutes ? t / 60 : t, v]);
  const s = axes(svg, limits(points.map((p) => p[0]), 0.02), limits(points.map((p) => p[1])),
    minutes ? "minutes since the first report" : "seconds since the first report", "best feasible " + best.metric);
  svg.append(element("path", { class: "front-line", d: stepPath(points, s) }));
  const last = best.points.filter((p) => p[2] !== null).pop();
  $("best-note").textContent = `${best.finished} feasible trials; best ${number(last[1])} (trial ${last[2]})`;
}

function drawStudies(studies) {
  $("studies").replaceChildren(...studies.map((study, index) => {
    const card = element("button", { type: "button", class: "study" + (index === state.study ? " selected" : "") }, study.name);
    const counts = Object.entries(study.counts).map(([k, v]) => `${v} ${k}`).join(", ");
    const best = study.best ? `best ${study.best.metric} ${number(study.best.value)} (trial ${study.best.trial})` : "no feasible trial yet";
    card.append(element("small", {}, `${study.trials} trials: ${counts || "none yet"}`), element("small", {}, best));
    card.onclick = () => { Object.assign(state, { study: index, offset: 0, trial: null, cost: "", version: null }); poll(false); };
    return card;
  }));
}

async function loadGrid() {
  const page = await api(`study/${state.study}/trials`, { sort: state.sort, desc: state.desc ? 1 : "",
    status: state.status, where: state.where, offset: state.offset, limit: state.limit });
  $("error").textContent = "";
  const head = element("tr");
  page.columns.forEach((column, i) => {
    const cell = element("th", { "data-column": column }, page.names[i]);
    if (column === state.sort) cell.classList.add("sorted", ...(state.desc ? ["desc"] : []));
    cell.onclick = () => { state.desc = state.sort === column ? !state.desc : false; state.sort = column; state.offset = 0; loadGrid().catch(showError); };
    head.append(cell);
  });
  $("grid").tHead.replaceChildren(head);
  $("grid").tBodies[0].replaceChildren(...page.rows.map((row) => {
    const line = element("tr", { "data-trial": row[0] });
    if (row[0] === state.trial) line.classList.add("selected");
    row.forEach((value, i) => {
      const cell = element("td");
      if (page.columns[i] === "status") cell.append(element("span", { class: "badge " + value }, value));
      else cell.textContent = number(value);
      line.append(cell);
    });
    line.onclick = () => { state.trial = row[0]; loadTrial().catch(showError); loadGrid().catch(showError); };
    return line;
  }));
  const last = Math.min(page.offset + state.limit, page.total);
  $("count").textContent = page.total ? `${page.offset + 1}-${last} of ${page.total} trials` : "no trials match";
  $("prev").disabled = page.offset === 0;
  $("next").disabled = last >= page.total;
}

async function loadTrial() {
  if (state.trial === null) return;
  const trial = await api(`study/${state.study}/trial/${encodeURIComponent(state.trial)}`);
  $("trial").hidden = false;
  $("trial-title").textContent = `Trial ${trial.trial}: ${trial.status}` + (trial.error ? ` (${trial.error})` : "");
  const curve = trial.curve;
  $("curves").replaceChildren(...Object.entries(curve.metrics).map(([metric, values]) => {
    const svg = element("svg", { viewBox: "0 0 480 300", class: "curve-chart", "data-metric": metric });
    const points = curve.step.map((step, i) => [step, values[i]]).filter((p) => p[1] !== null);
    const s = axes(svg, limits(points.map((p) => p[0]), 0.02), limits(points.map((p) => p[1])), "step", metric);
    curve.phase.forEach((phase, i) => {
      if (i && phase !== curve.phase[i - 1]) {
        const px = s.x((curve.step[i] + curve.step[i - 1]) / 2);
        svg.append(element("line", { class: "phase", x1: px, x2: px, y1: s.box.top, y2: s.box.bottom }),
          element("text", { class: "label", x: px + 4, y: s.box.top + 10 }, phase));
      }
    });
    svg.append(element("path", { class: "curve", stroke: metric === "train_loss" ? "#d2432f" : "#2f6fdb",
      d: points.map(([a, b], i) => `${i ? "L" : "M"}${s.x(a)},${s.y(b)}`).join("") }));
    return svg;
  }));
  const pairs = (target, object) => $(target).replaceChildren(...Object.entries(object).flatMap(
    ([key, value]) => [element("dt", {}, key), element("dd", {}, number(value))]));
  pairs("trial-metrics", { ...trial.metrics, ...trial.violations });
  pairs("trial-config", trial.config);
  $("trial-records").textContent = trial.records.length ? trial.records.map((r) => JSON.stringify(r)).join("\n\n") : "none: not compressed";
}

async function loadCharts() {
  const [front, best] = await Promise.all([api(`study/${state.study}/front`, { cost: state.cost }),
    api(`study/${state.study}/best`)]);
  drawFront(front);
  drawBest(best);
}

function showError(error) { $("error").textContent = error.message; }

async function poll(again = true) {
  try {
    const { studies, poll_s } = await api("studies");
    state.poll = poll_s;
    drawStudies(studies);
    const version = studies[state.study].version;
    if (version !== state.version) {
      state.version = version;
      await Promise.all([loadGrid().catch(showError), loadCharts(), loadTrial()]);
    }
    if (!document.body.dataset.painted) {
      document.body.dataset.painted = String(Math.round(performance.now() - started));
    }
    $("live").textContent = "live, updated " + new Date().toLocaleTimeString();
    $("live").className = "";
  } catch (error) {
    $("live").textContent = "not updating: " + error.message;
    $("live").className = "down";
  }
  if (again) setTimeout(poll, state.poll * 1000);
}

$("status-filter").onchange = (event) => { state.status = event.target.value; state.offset = 0; loadGrid().catch(showError); };
$("where").onchange = (event) => { state.where = event.target.value.trim(); state.offset = 0; loadGrid().catch(showError); };
$("prev").onclick = () => { state.offset = Math.max(0, state.offset - state.limit); loadGrid().catch(showError); };
$("next").onclick = () => { state.offset += state.limit; loadGrid().catch(showError); };
$("cost").onchange = (event) => { state.cost = event.target.value; loadCharts().catch(showError); };
// A token in the address (`#token=...`) is traded once for an HttpOnly cookie, then dropped
// from the address, so it stays out of the browser's history.
async function start() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) {
    try {
      const reply = await fetch("/api/session", { method: "POST", credentials: "same-origin",
        headers: { Authorization: "Bearer " + token } });
      if (!reply.ok) showError(new Error("the token was refused: " + reply.status));
    } catch (error) {
      showError(error);
    } finally {
      history.replaceState(null, "", location.pathname + location.search);
    }
  }
  poll();
}
start();
