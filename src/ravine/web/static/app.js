/* Ravine playground page.
 *
 * The page computes no trajectory, sweep or curvature of its own: it sends the view's state to the
 * JSON API (/api/...) and draws what comes back. The whole state lives in the URL hash, so a link
 * reproduces the view. Trajectory requests are throttled, not debounced: one is in flight at a time and,
 * when it returns, the latest state is sent, so a dragged slider redraws at the rate the server answers;
 * a response older than the one drawn is dropped (sequence numbers). The contour grid is fetched once per
 * surface and its trace built once; a trajectory response carries runs only. Colours come from
 * GET /api/style (the exported figures use the same), presets from GET /api/presets.
 */
"use strict";

let PALETTE = [];         // the page's colours, from GET /api/style (ravine.plots.playground.PAGE_STYLE)
let STYLE = null;
const BASE_FPS = 30;  // steps per second at 1x
const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

const catalog = { optimizers: {}, optimizerList: [], schedules: {}, surfaces: {}, limits: {}, presets: [] };
let state = defaultState();
let nextId = 1;
let lastResult = null;     // last /api/trajectories response
let lastSweep = null;      // last /api/sweep response
let lastCurv = null;       // last /api/curvature response
let surfaceInfo = null;    // SurfaceOut of the current surface (with grid)
let viewError = null;      // {title, text}: why the contour shows no runs (a refused expression or run)
const EXPRESSION_OPTION = "(expression)";  // the surface dropdown's entry while a typed expression is in use
const inflight = {};       // kind -> AbortController
const timers = {};
const anim = { frame: null, playing: false, raf: null, last: 0, acc: 0 };
// The trajectory requests: one in flight; `again` when the state changed since it was sent.
const runQ = { seq: 0, drawn: 0, busy: false, again: false, epoch: 0, idle: [] };
let contourCache = { src: null, traces: [] };  // the contour's traces, built once per surface grid
// Hooks for tests and the curious: counters of completed renders, requests sent, contour traces built.
window.__ravine = { renders: 0, sweeps: 0, errors: [], state: () => state, result: () => lastResult,
  curvature: () => lastCurv, sweep: () => lastSweep, trajectoryRequests: 0, gridRequests: 0, contourBuilds: 0,
  idle: () => !runQ.busy && !runQ.again && !timers.run };

function defaultState() {
  return {
    surface: { name: "bowl", params: {}, expression: null },
    start: null, steps: 200,
    optimizers: [],
    schedule: { name: "constant", params: {} },
    clip: { kind: "none", max: 1.0 },
    noise: 0, seed: 0, logLoss: true, speed: 1, mode: "start", probe: null, frame: null, preset: null,
    sweep: { opt: 0, x: null, y: null, n: 32, metric: "final_loss" },
  };
}

// ------------------------------------------------------------------------------------------ utilities
const $ = (id) => document.getElementById(id);
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "style") e.setAttribute("style", v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}
function fmt(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (typeof v === "boolean") return v ? "on" : "off";
  if (typeof v !== "number") return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(2);
  return Number(v.toPrecision(digits)).toString();
}
/* Docstring text as a plain tooltip: reStructuredText roles and literals without their markup. */
function plain(text) {
  return String(text || "")
    .replace(/:[a-z]+(?::[a-z]+)?:`~?([^`]+)`/g, "$1")
    .replace(/``([^`]+)``/g, "$1")
    .replace(/`([^`]+)`/g, "$1")
    .replace(/\*\*([^*]+)\*\*/g, "$1");
}
/* A number without binary float noise (0.7000000000000002 -> 0.7): 12 significant digits. */
function clean(v) {
  return Number.isFinite(v) && !Number.isInteger(v) ? Number(v.toPrecision(12)) : v;
}
/* JSON.stringify replacer: every number cleaned (URLs, requests, and so the Python export, carry no noise). */
function cleanNumbers(_key, v) {
  return typeof v === "number" ? clean(v) : v;
}
/* A number field's text: short and whole in a narrow field (1e-5, not 0.00001 cut to 0.0000). */
function numText(v) {
  if (typeof v !== "number" || !Number.isFinite(v) || v === 0) return String(v);
  const a = Math.abs(v);
  const r = Number(v.toPrecision(6));
  if (a < 1e-3 || a >= 1e5) return r.toExponential().replace("e+", "e");
  return String(r);
}
/* Text for a Plotly annotation: markup characters escaped, lines broken at spaces to at most `width` characters
 * (an annotation does not wrap, and a long server message ran past the plot's edge). */
function noteText(text, width = 64) {
  const esc = String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const lines = [];
  let line = "";
  for (const word of esc.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) { lines.push(line); line = word; }
    else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.join("<br>");
}
/* Hide the status message if `source` showed it. */
function clearStatus(source) {
  const s = $("status");
  if (!s.hidden && s.dataset.source === source) { s.hidden = true; clearTimeout(timers.status); }
}
function debounce(key, ms, fn) {
  clearTimeout(timers[key]);
  timers[key] = setTimeout(fn, ms);
}
function showStatus(text, isError = false, ms = 3500, source = null) {
  const s = $("status");
  s.dataset.source = source || "";
  s.textContent = text;
  s.classList.toggle("error", isError);
  s.hidden = false;
  clearTimeout(timers.status);
  timers.status = setTimeout(() => { s.hidden = true; }, ms);
}

/* POST/GET JSON; aborts the previous request of the same kind. Resolves to null when aborted. */
async function api(kind, path, body) {
  if (inflight[kind]) inflight[kind].abort();
  const ctrl = new AbortController();
  inflight[kind] = ctrl;
  try {
    const res = await fetch(path, body === undefined ? { signal: ctrl.signal } : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body, cleanNumbers),
      signal: ctrl.signal,
    });
    const data = await res.json();
    if (!res.ok) {
      const msg = data && (data.message || JSON.stringify(data.detail)) || res.statusText;
      const err = new Error(msg);
      err.status = res.status;
      throw err;
    }
    return data;
  } catch (e) {
    if (e.name === "AbortError") return null;
    throw e;
  } finally {
    if (inflight[kind] === ctrl) delete inflight[kind];
  }
}

// ------------------------------------------------------------------------------------------ URL state
function saveHash() {
  const s = { ...state, optimizers: state.optimizers.map(({ id, ...o }) => o) };
  history.replaceState(null, "", "#" + encodeURIComponent(JSON.stringify(s, cleanNumbers)));
}
function loadHash() {
  if (location.hash.length < 2) return false;
  try {
    const s = JSON.parse(decodeURIComponent(location.hash.slice(1)));
    const d = defaultState();
    state = { ...d, ...s, sweep: { ...d.sweep, ...(s.sweep || {}) }, clip: { ...d.clip, ...(s.clip || {}) },
      surface: { ...d.surface, ...(s.surface || {}) } };
    state.surface.params = state.surface.params || {};  // a hand-written link may leave them out
    state.optimizers = (s.optimizers || []).filter((o) => catalog.optimizers[o.name]).slice(0, 16)
      .map((o, i) => ({ id: nextId++, name: o.name, color: o.color || PALETTE[i % PALETTE.length],
        hyperparams: { ...defaultsOf(o.name), ...(o.hyperparams || {}) } }));
    if (!catalog.schedules[state.schedule.name]) state.schedule = d.schedule;
    if (!state.surface.expression && !catalog.surfaces[state.surface.name]) state.surface = d.surface;
    return true;
  } catch (e) {
    showStatus("Could not read the link's state; starting fresh.", true);
    return false;
  }
}

// ------------------------------------------------------------------------------------------ requests
function exprDomain() {
  const b = Number(state.surface.box || 2);
  return [[-b, b], [-b, b]];
}
function surfaceSpec() {
  const s = state.surface;
  if (s.expression) return s.box && Number(s.box) !== 2 ? { expression: s.expression, domain: exprDomain() } : { expression: s.expression };
  return { name: s.name, params: s.params || {} };
}
function labels() {
  const seen = {};
  return state.optimizers.map((o) => {
    seen[o.name] = (seen[o.name] || 0) + 1;
    return seen[o.name] > 1 ? `${o.name} #${seen[o.name]}` : o.name;
  });
}
/* Parameters that do not change a run (the simulator uses lr * s(t) / peak) are not shown. */
const HIDDEN_SCHEDULE_PARAMS = new Set(["peak", "value"]);
function scheduleSpec() {
  const sc = state.schedule;
  if (!sc || !catalog.schedules[sc.name] || sc.name === "constant") return null;
  const params = {};
  for (const [k, v] of Object.entries(sc.params || {})) if (v !== undefined && v !== null && v !== "") params[k] = v;
  return { name: sc.name, params };  // the server fills required step counts from the run's steps
}
function trajectoryRequest() {
  const names = labels();
  return {
    surface: surfaceSpec(), start: state.start, steps: state.steps,
    optimizers: state.optimizers.map((o, i) => ({ name: o.name, label: names[i], hyperparams: o.hyperparams })),
    schedule: scheduleSpec(),
    clip: state.clip.kind === "none" ? null : { kind: state.clip.kind, max: Number(state.clip.max) },
    noise: Number(state.noise), seed: Number(state.seed),
  };
}

/* Ask for the runs of the current state: sent now if none is in flight, else when the one in flight returns. */
function requestRun() {
  saveHash();
  runQ.again = true;
  if (!runQ.busy && !timers.run) timers.run = setTimeout(() => { timers.run = null; pumpRuns(); }, 0);
  // each optimizer's lr limit at the probed point depends on its hyperparameters: ask again
  if (state.probe) debounce("probe", 60, () => probe(state.probe));
}
/* Forget the runs asked for so far (a new surface): a response to them is not drawn. */
function cancelRuns() {
  runQ.epoch += 1;
  runQ.again = false;
  clearTimeout(timers.run);
  timers.run = null;
  if (inflight.run) inflight.run.abort();
}
/* Resolves once no request is in flight or waiting. */
function whenIdle() {
  return window.__ravine.idle() ? Promise.resolve() : new Promise((resolve) => runQ.idle.push(resolve));
}
function runTrajectories() {
  requestRun();
  return whenIdle();
}
async function pumpRuns() {
  if (runQ.busy || !runQ.again) return;
  runQ.again = false;
  if (!state.optimizers.length) {
    lastResult = null;
    drawAll();
    settle();
    return;
  }
  runQ.busy = true;
  const seq = ++runQ.seq, epoch = runQ.epoch;
  const busy = setTimeout(() => { $("busy").hidden = false; }, 150);
  try {
    window.__ravine.trajectoryRequests += 1;
    const data = await api("run", "/api/trajectories", trajectoryRequest());
    if (data && epoch === runQ.epoch && seq > runQ.drawn) {
      runQ.drawn = seq;
      lastResult = data;
      viewError = null;
      clearStatus("run");  // the message of a refused run no longer applies
      if (!anim.playing) anim.frame = state.frame = null;
      drawAll();
      window.__ravine.renders += 1;
    }
  } catch (e) {
    if (epoch === runQ.epoch && !runQ.again) {
      showStatus("Trajectories: " + e.message, true, 6000, "run");
      // the runs drawn belong to the previous settings: clear them and say why nothing is drawn
      lastResult = null;
      viewError = { title: null, text: e.message };
      drawAll();
    }
  } finally {
    clearTimeout(busy);
    runQ.busy = false;
    $("busy").hidden = true;
    if (runQ.again) pumpRuns();
    else settle();
  }
}
function settle() {
  if (!window.__ravine.idle()) return;
  const waiting = runQ.idle.splice(0);
  for (const resolve of waiting) resolve();
}

/* Load the contour grid; with adoptLr, every optimizer takes the surface's suggested learning rate. */
async function loadSurface(adoptLr = false) {
  try {
    window.__ravine.gridRequests += 1;
    const data = await api("grid", "/api/surface/grid", { surface: surfaceSpec(), n: 120 });
    if (!data) return;
    surfaceInfo = data;
    if (adoptLr) {
      for (const o of state.optimizers) {
        const lr = suggestedLr(o.name);
        if (lr !== undefined) o.hyperparams.lr = lr;
      }
      renderOptimizers();
      requestRun();
    }
    lastCurv = null;
    drawAll();
  } catch (e) {
    showStatus("Surface: " + e.message, true, 6000);
  }
}

// ------------------------------------------------------------------------------------------ drawing
function runColor(i) { return (state.optimizers[i] && state.optimizers[i].color) || PALETTE[i % PALETTE.length]; }
function lastFinite(arr, upto) {
  for (let k = Math.min(upto, arr.length - 1); k >= 0; k--) if (arr[k] !== null) return k;
  return -1;
}
function currentFrame() {
  if (!lastResult) return 0;
  return anim.frame === null ? lastResult.steps : Math.min(anim.frame, lastResult.steps);
}
function minLoss() {
  if (lastResult && lastResult.global_min !== null) return lastResult.global_min;
  if (surfaceInfo && surfaceInfo.grid && surfaceInfo.grid.zmin !== null) return surfaceInfo.grid.zmin;
  return 0;
}

/* The contour and minima traces of the current surface, built once per grid (the same objects each redraw). */
function contourTraces() {
  if (contourCache.src === surfaceInfo) return contourCache.traces;
  contourCache = { src: surfaceInfo, traces: buildContourTraces() };
  if (surfaceInfo) window.__ravine.contourBuilds += 1;
  return contourCache.traces;
}
function buildContourTraces() {
  const traces = [];
  const g = surfaceInfo && surfaceInfo.grid;
  if (g) {
    // the server's levels (ravine.plots.playground.contour_levels): from the floor quantile up, so no level
    // cuts a sliver thinner than the grid (Rosenbrock's valley floor would draw as a broken line)
    const c = g.contour;
    traces.push({
      type: "contour", x: g.x, y: g.y, z: c.z, autocontour: false,
      contours: { start: c.start, end: c.end, size: c.size, coloring: "fill" },
      showscale: false, hoverinfo: "skip",
      colorscale: STYLE.contour_colorscale,
      line: { width: 0.6, color: STYLE.contour_line },
    });
    const mins = surfaceInfo.minima || [];
    if (mins.length) {
      traces.push({
        type: "scatter", mode: "markers", x: mins.map((m) => m.x), y: mins.map((m) => m.y), name: "minima",
        showlegend: false, hovertemplate: "%{text}<extra></extra>",
        text: mins.map((m) => `${m.kind} minimum f=${fmt(m.value)}`),
        marker: { symbol: mins.map((m) => (m.kind === "global" ? "star" : "star-open")), size: 13,
          color: STYLE.minimum, line: { color: "#6b5200", width: 1 } },
      });
    }
  }
  return traces;
}

function trajectoryTraces(frame) {
  const traces = [];
  if (!lastResult) return traces;
  lastResult.runs.forEach((r, i) => {
    const c = runColor(i);
    const stop = r.diverged ? Math.min(frame, r.diverged_at) : frame;
    const k = lastFinite(r.x, stop);
    const name = r.diverged ? `${r.label} (diverged @ ${r.diverged_at})` : r.label;
    traces.push({
      type: "scatter", mode: "lines+markers", x: r.x.slice(0, k + 1), y: r.y.slice(0, k + 1), name,
      legendgroup: "r" + i, line: { color: c, width: 2 }, marker: { size: 3.5, color: c },
      hovertemplate: `${r.label}<br>step %{pointNumber}<br>(%{x:.4f}, %{y:.4f})<extra></extra>`,
    });
    const head = k >= 0 ? { x: [r.x[k]], y: [r.y[k]] } : { x: [], y: [] };
    const divergedNow = r.diverged && frame >= r.diverged_at;
    traces.push({
      type: "scatter", mode: "markers", ...head, showlegend: false, legendgroup: "r" + i, hoverinfo: "skip",
      marker: divergedNow ? { symbol: "x-thin", size: 16, color: "#c62828", line: { width: 3, color: "#c62828" } }
        : { symbol: "circle", size: 10, color: c, line: { color: "#fff", width: 1.5 } },
    });
    // the positions where the step's gradient was clipped (drawn up to the current frame)
    const clipped = r.clipped_steps.filter((s) => s <= k);
    traces.push({
      type: "scatter", mode: "markers", x: clipped.map((s) => r.x[s]), y: clipped.map((s) => r.y[s]),
      name: `${r.label} clipped`, showlegend: false, legendgroup: "r" + i,
      hovertemplate: `${r.label}: gradient clipped at step %{customdata}<extra></extra>`, customdata: clipped,
      // small and thin: a run clipped at every step still shows its path under the marks
      marker: { symbol: "diamond-open", size: 6, color: c, opacity: 0.75, line: { width: 1, color: c } },
    });
  });
  const s = lastResult.start;
  traces.push({
    type: "scatter", mode: "markers", x: [s[0]], y: [s[1]], name: "start", showlegend: false,
    hovertemplate: "start (%{x:.3f}, %{y:.3f})<extra></extra>",
    marker: { symbol: "circle-open", size: 13, color: "#111", line: { width: 2.5 } },
  });
  return traces;
}

function curvatureAnnotations() {
  if (!lastCurv || !surfaceInfo || lastCurv.eigenvalues[0] === null) return [];
  const [[x0, x1], [y0, y1]] = surfaceInfo.domain;
  const L = 0.12 * Math.min(x1 - x0, y1 - y0);
  const [px, py] = lastCurv.point;
  const out = [];
  lastCurv.eigenvectors.forEach((v, i) => {
    const lam = lastCurv.eigenvalues[i];
    const color = i === 1 ? "#c62828" : "#1b6e3a";
    // Plotly puts an annotation's text at the arrow's tail; the label goes at the head instead.
    out.push({ x: px + L * v[0], y: py + L * v[1], ax: px, ay: py, xref: "x", yref: "y", axref: "x", ayref: "y",
      showarrow: true, arrowhead: 3, arrowsize: 1.2, arrowwidth: 2.2, arrowcolor: color, text: "" });
    out.push({ x: px + 1.25 * L * v[0], y: py + 1.25 * L * v[1], xref: "x", yref: "y", showarrow: false,
      text: `λ${i + 1}=${fmt(lam, 3)}`, font: { size: 11, color }, bgcolor: "rgba(255,255,255,0.85)" });
  });
  return out;
}

function drawContour() {
  const frame = currentFrame();
  const traces = contourTraces().concat(trajectoryTraces(frame));
  if (lastCurv) {
    traces.push({ type: "scatter", mode: "markers", x: [lastCurv.point[0]], y: [lastCurv.point[1]],
      showlegend: false, hoverinfo: "skip", marker: { symbol: "diamond", size: 9, color: "#111" } });
  }
  const dom = surfaceInfo ? surfaceInfo.domain : [[-2, 2], [-2, 2]];
  const title = viewError && viewError.title ? viewError.title
    : surfaceInfo ? (surfaceInfo.expression ? `f(x, y) = ${surfaceInfo.expression}` : surfaceInfo.name) : "";
  const notes = viewError ? [{ text: noteText(viewError.text), xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false,
    font: { color: "#b3261e", size: 13 }, bgcolor: "rgba(255,255,255,0.92)", bordercolor: "#b3261e", borderpad: 6 }] : [];
  if (!viewError && surfaceInfo && !state.optimizers.length) {
    notes.push({ text: "no optimizer: add one with “+ Add” or click one of the chapter's figures (left)", xref: "paper", yref: "paper",
      x: 0.5, y: 0.5, showarrow: false, font: { color: "#4a5263", size: 13 }, bgcolor: "rgba(255,255,255,0.92)",
      borderpad: 6 });
  }
  const layout = {
    margin: { l: 46, r: 12, t: 34, b: 40 }, dragmode: false, hovermode: "closest",
    title: { text: title, font: { size: 14 }, x: 0.02 },
    // 1:1: a unit of y is as long as a unit of x, so steps meet the contours at their true angles
    xaxis: { range: dom[0], title: { text: "x" }, zeroline: false, showgrid: false, constrain: "domain" },
    yaxis: { range: dom[1], title: { text: "y" }, zeroline: false, showgrid: false, scaleanchor: "x", scaleratio: 1,
      constrain: "domain" },
    // the legend in one row above the plot area, never over the trajectories
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1, yanchor: "top", yref: "container",
      bgcolor: "rgba(255,255,255,0)", font: { size: 11 } },
    annotations: curvatureAnnotations().concat(notes),
    paper_bgcolor: "#fff", plot_bgcolor: "#fff",
  };
  return Plotly.react("contour", traces, layout, { ...PLOT_CONFIG, scrollZoom: false });
}

function sideLayout(ytitle, ylog, frame) {
  // one fixed step range on all three panels, so that their x axes line up whatever each one draws
  const n = lastResult ? lastResult.steps : state.steps;
  return {
    margin: { l: 54, r: 10, t: 6, b: 30 }, showlegend: false, hovermode: "x",
    xaxis: { title: { text: "step", standoff: 2 }, zeroline: false, range: [0, n], autorange: false },
    // with no runs drawn the axis has no values to label (Plotly's default range would read as data)
    yaxis: { type: ylog ? "log" : "linear", title: { text: ytitle }, exponentformat: "e", tickformat: "",
      nticks: ylog ? 4 : 5, showticklabels: !!lastResult },
    shapes: [{ type: "line", xref: "x", yref: "paper", x0: frame, x1: frame, y0: 0, y1: 1,
      line: { color: "#888", width: 1, dash: "dot" } }],
  };
}

/* Tick values and labels for a log axis over [lo, hi]: decades (every k-th one over many decades), else
 * 1-2-5 steps (1-5 where those are more than five), each label the whole number ("20", "5e−4"). Plotly's
 * own log ticks label the 2s and 5s inside a decade as bare "2" and "5", which read as values, and crowd
 * 2..9 onto a short span. Returns {} (Plotly's ticks) when fewer than two values fall in the span. */
function logTicks(lo, hi) {
  if (!(lo > 0 && hi > lo && Number.isFinite(hi))) return {};
  const a = Math.log10(lo), b = Math.log10(hi), span = b - a;
  const every = span > 4.5 ? Math.ceil(span / 4) : 1;
  let vals = [];
  for (let e = Math.ceil(a / every) * every; e <= b + 1e-9; e += every) vals.push(Math.pow(10, e));
  const steps = (ms) => {
    const out = [];
    for (let e = Math.floor(a); e <= Math.ceil(b); e++) {
      for (const m of ms) {
        const v = Number((m * Math.pow(10, e)).toPrecision(3));
        if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(v);
      }
    }
    return out;
  };
  if (vals.length < 2) vals = steps([1, 2, 5]);
  if (vals.length > 5) vals = steps([1, 5]);
  if (vals.length < 2) return {};
  const text = (v) => (v >= 1e-3 && v < 1e4 ? String(Number(v.toPrecision(3)))
    : v.toExponential().replace("e+", "e").replace("-", "\u2212"));
  return { tickmode: "array", tickvals: vals, ticktext: vals.map(text) };
}
/* The positive, finite extent of the traces' y values (the clipping rug on its own axis left out). */
function yExtent(traces) {
  let lo = Infinity, hi = -Infinity;
  for (const t of traces) {
    if (t.yaxis) continue;
    for (const v of t.y) if (v !== null && v > 0 && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  return [lo, hi];
}
function withLogTicks(layout, traces) {
  Object.assign(layout.yaxis, logTicks(...yExtent(traces)));
  return layout;
}

/* Whether loss − min can be drawn on a log axis: the surface's minimum is known, or no run went below the
 * grid's lowest value (a typed expression, an unbounded surface such as the monkey saddle): below it the
 * difference is not positive and every such step would fall to the axis floor like a convergence. */
function lossLogOk(m) {
  if (!lastResult || lastResult.global_min !== null) return true;
  return lastResult.runs.every((r) => r.loss.every((v) => v === null || v >= m));
}

function drawSide() {
  const frame = currentFrame();
  const loss = [], grad = [], lr = [];
  const m = minLoss();
  const logOk = lossLogOk(m);
  const log = state.logLoss && logOk;
  $("loss-linear").hidden = !state.logLoss || logOk;
  if (lastResult) {
    lastResult.runs.forEach((r, i) => {
      const c = runColor(i);
      const steps = r.loss.map((_, k) => k);
      const ly = r.loss.map((v) => (v === null ? null : log ? Math.max(v - m, 1e-16) : v));
      loss.push({ type: "scatter", mode: "lines", x: steps, y: ly, name: r.label, line: { color: c, width: 1.6 } });
      if (r.diverged) {
        const k = lastFinite(ly, r.diverged_at);
        if (k >= 0) loss.push({ type: "scatter", mode: "markers", x: [k], y: [ly[k]], name: `${r.label} diverged`,
          marker: { symbol: "x-thin", size: 12, color: "#c62828", line: { width: 2.5, color: "#c62828" } },
          hovertemplate: `${r.label}: diverged at step ${r.diverged_at}<extra></extra>` });
      }
      const gsteps = r.grad_norm.map((_, k) => k);
      const gy = r.grad_norm.map((v) => (v === null || v <= 0 ? null : v));
      grad.push({ type: "scatter", mode: "lines", x: gsteps, y: gy, name: r.label, line: { color: c, width: 1.4 } });
      if (r.clipped_steps.length) {
        // a rug of ticks in the run's own strip along the bottom (second y axis), not markers on the curve
        grad.push({ type: "scatter", mode: "markers", x: r.clipped_steps, y: r.clipped_steps.map(() => 0.03 + 0.05 * i),
          yaxis: "y2", name: `${r.label} clipped`, hovertemplate: `${r.label}: clipped at step %{x}<extra></extra>`,
          marker: { symbol: "line-ns-open", size: 7, color: c, line: { color: c, width: 1.2 } } });
      }
      lr.push({ type: "scatter", mode: "lines", x: gsteps, y: r.lr, name: r.label, line: { color: c, width: 1.6 } });
    });
  }
  const gl = withLogTicks(sideLayout("‖g‖", true, frame), grad);
  gl.yaxis2 = { overlaying: "y", range: [0, 1], visible: false, fixedrange: true };
  if (state.clip.kind === "norm") {
    gl.shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: Number(state.clip.max), y1: Number(state.clip.max),
      line: { color: "#c62828", width: 1, dash: "dash" } });
  }
  const cfg = { ...PLOT_CONFIG, displayModeBar: false };
  return Promise.all([
    Plotly.react("plot-loss", loss, log ? withLogTicks(sideLayout("loss − min", true, frame), loss)
      : sideLayout("loss", false, frame), cfg),
    Plotly.react("plot-grad", grad, gl, cfg),
    Plotly.react("plot-lr", lr, lrLayout(frame), cfg),
  ]);
}

/* The learning-rate panel's axis, from the lrs the server returned: linear from 0 to a little above the
 * highest (a constant lr is a level line in the upper part, a warmup rises from 0), or logarithmic when the
 * runs' peak lrs are a decade or more apart (the smaller would otherwise lie flat on zero). Plotly's own
 * range for a flat line spans value ± 1, negative learning rates included. */
function lrLayout(frame) {
  const peaks = [];
  let lowest = Infinity;
  for (const r of (lastResult && lastResult.runs) || []) {
    const finite = r.lr.filter((v) => v !== null && Number.isFinite(v));
    if (!finite.length) continue;
    peaks.push(Math.max(...finite));
    for (const v of finite) if (v > 0 && v < lowest) lowest = v;
  }
  const hi = peaks.length ? Math.max(...peaks) : 0;
  const log = hi > 0 && hi / Math.min(...peaks) >= 10;
  const layout = sideLayout("lr", log, frame);
  // Plotly's ticks in this range are short and exact (0.0005, 0.5e−5); the hover shows 4 significant digits
  layout.yaxis = { ...layout.yaxis, hoverformat: ".4~g" };
  if (!(hi > 0)) return layout;
  if (log) {
    // down to the lowest lr, but at most three decades below the smallest peak: a schedule's last values
    // near zero (a cosine's 1e-9) do not squeeze the runs' levels into the top of the panel
    const top = Math.log10(hi), bottom = Math.max(Math.log10(lowest), Math.log10(Math.min(...peaks)) - 3);
    const pad = 0.15 * Math.max(top - bottom, 1);
    layout.yaxis.range = [bottom - pad, top + pad];
    Object.assign(layout.yaxis, logTicks(Math.pow(10, bottom - pad), Math.pow(10, top + pad)));
  } else {
    layout.yaxis.range = [0, 1.2 * hi];
  }
  layout.yaxis.autorange = false;
  return layout;
}

function drawSummary() {
  const t = $("summary");
  t.replaceChildren();
  if (!lastResult) return;
  // with no known minimum (a saddle, a typed expression) the server's tolerance is on the gradient norm
  // (ravine.simulate): a run "converged" there may have stalled at a saddle, so the column says what it means
  const byGrad = lastResult.tol_criterion === "grad_norm";
  const tolHead = byGrad ? el("th", { title: "first step with ‖∇f‖ ≤ tol: a stationary point (no known minimum here)" },
    "stationary") : el("th", { title: "first step with loss − min ≤ tol" }, "converged");
  t.append(el("tr", {}, el("th", {}, "optimizer"), el("th", {}, "final loss"), tolHead, el("th", {}, "status")));
  lastResult.runs.forEach((r, i) => {
    // the end point as the server classified it (Hessian at the last position, once the gradient has died out)
    const end = { minimum: "at a minimum", saddle: "stalled at a saddle", maximum: "stalled at a maximum",
      plateau: "stalled on a plateau", moving: "still moving" }[r.end];
    const clipped = r.clipped_steps.length ? `, clipped ${r.clipped_steps.length}×` : "";
    const status = r.diverged ? el("span", { class: "diverged" }, `diverged at step ${r.diverged_at}`)
      : el("span", { class: `end-${r.end}` }, end + clipped);
    t.append(el("tr", {},
      el("td", {}, el("span", { class: "swatch", style: `background:${runColor(i)}` }), r.label),
      el("td", { class: "num" }, fmt(r.final_loss)),
      el("td", { class: "num" }, r.steps_to_tol === null ? "—" : `step ${r.steps_to_tol}`),
      el("td", {}, status)));
  });
}

function drawTransport() {
  const n = lastResult ? lastResult.steps : state.steps;
  const f = currentFrame();
  const scrub = $("scrub");
  scrub.max = String(n);
  scrub.value = String(f);
  $("frame-label").textContent = `${f} / ${n}`;
  $("btn-play").textContent = anim.playing ? "❙❙" : "▶";
}

/* The preset's two-line caption, and what the runs show (computed by the server from these runs). */
function drawSeeing() {
  const preset = catalog.presets.find((p) => p.id === state.preset);
  $("caption").hidden = !preset;
  $("caption").replaceChildren(...(preset ? [el("b", {}, preset.title + ". "), preset.caption.join(" ")] : []));
  const lines = (lastResult && lastResult.seeing) || [];
  $("seeing").replaceChildren(...lines.map((t) => el("li", {}, t)));
  $("seeing-box").hidden = !lines.length;
  document.querySelectorAll("#presets .preset").forEach((b) => b.classList.toggle("on", b.dataset.preset === state.preset));
}

function drawAll() {
  if (!lastCurv) $("curv-info").textContent = "no point probed yet";  // no readout of another surface or point
  // the PNG and Python exports draw runs: with no optimizer there is nothing to export (the server refuses it)
  for (const id of ["btn-png", "btn-python"]) $(id).disabled = !state.optimizers.length;
  drawSeeing();
  drawContour();
  drawSide();
  drawSummary();
  drawTransport();
  drawStartLabel();
  drawStabilityMarks();
}

/* Cheap per-frame update while animating: only the trajectory traces and the step cursors. */
function drawFrame() {
  if (!lastResult) return;
  const frame = currentFrame();
  const base = contourTraces().length;
  const tr = trajectoryTraces(frame);
  const idx = [], xs = [], ys = [], markers = [];
  tr.forEach((t, j) => { idx.push(base + j); xs.push(t.x); ys.push(t.y); markers.push(t.marker); });
  Plotly.restyle("contour", { x: xs, y: ys, marker: markers }, idx);
  for (const id of ["plot-loss", "plot-grad", "plot-lr"]) {
    Plotly.relayout(id, { "shapes[0].x0": frame, "shapes[0].x1": frame });
  }
  drawTransport();
}

// ------------------------------------------------------------------------------------------ animation
function play() {
  if (!lastResult) return;
  if (currentFrame() >= lastResult.steps) anim.frame = 0;
  anim.playing = true;
  anim.last = performance.now();
  anim.acc = 0;
  cancelAnimationFrame(anim.raf);
  anim.raf = requestAnimationFrame(tick);
  drawTransport();
}
function pause() {
  anim.playing = false;
  if (anim.frame !== null) { state.frame = anim.frame; debounce("hash", 150, saveHash); }
  cancelAnimationFrame(anim.raf);
  drawTransport();
}
function tick(now) {
  if (!anim.playing || !lastResult) return;
  anim.acc += ((now - anim.last) / 1000) * BASE_FPS * state.speed;
  anim.last = now;
  const adv = Math.floor(anim.acc);
  if (adv > 0) {
    anim.acc -= adv;
    anim.frame = Math.min(lastResult.steps, currentFrame() + adv);
    drawFrame();
    if (anim.frame >= lastResult.steps) { pause(); return; }
  }
  anim.raf = requestAnimationFrame(tick);
}
function setFrame(f) {
  if (!lastResult) return;
  anim.frame = Math.max(0, Math.min(lastResult.steps, f));
  state.frame = anim.frame;  // the link keeps the step shown
  drawFrame();
  debounce("hash", 150, saveHash);
}

// ------------------------------------------------------------------------------------------ controls
function defaultsOf(name) {
  const out = {};
  for (const h of catalog.optimizers[name].hyperparams) if (h.default !== null) out[h.name] = h.default;
  return out;
}
function suggestedLr(name) {
  const s = surfaceInfo && surfaceInfo.suggested_lr;
  return s && s[name] !== undefined ? s[name] : undefined;
}
function addOptimizer(name, hyperparams) {
  if (state.optimizers.length >= (catalog.limits.max_optimizers || 16)) {
    showStatus(`At most ${catalog.limits.max_optimizers || 16} optimizers.`, true);
    return;
  }
  const used = new Set(state.optimizers.map((o) => o.color));
  const color = PALETTE.find((c) => !used.has(c)) || PALETTE[state.optimizers.length % PALETTE.length];
  const hp = { ...defaultsOf(name), ...(hyperparams || {}) };
  const lr = suggestedLr(name);
  if (lr !== undefined && !(hyperparams && hyperparams.lr !== undefined)) hp.lr = lr;
  state.optimizers.push({ id: nextId++, name, color, hyperparams: hp });
  renderOptimizers();
  renderSweepControls();
  requestRun();
}

function sliderPos(h, v) {
  return h.log ? Math.log10(Math.max(v, h.min)) : v;
}
function sliderVal(h, pos) {
  const v = h.log ? Math.pow(10, pos) : pos;
  return Number(v.toPrecision(4));
}

function hyperparamRow(o, h) {
  const v = o.hyperparams[h.name];
  const row = el("div", { class: "hp", title: plain(`${h.help} — allowed: ${h.allowed}`) },
    el("span", { class: "name" }, h.name));
  if (h.kind === "bool") {
    const cb = el("input", { type: "checkbox", "data-hp": h.name });
    cb.checked = !!v;
    cb.addEventListener("change", () => { o.hyperparams[h.name] = cb.checked; requestRun(); });
    row.append(el("span", {}, cb), el("span"));
  } else if (h.kind === "choice") {
    const sel = el("select", { "data-hp": h.name }, ...h.choices.map((c) => el("option", { value: c }, c)));
    sel.value = v;
    sel.addEventListener("change", () => { o.hyperparams[h.name] = sel.value; requestRun(); });
    row.append(sel, el("span"));
  } else {
    const lo = h.log ? Math.log10(h.min) : h.min, hi = h.log ? Math.log10(h.max) : h.max;
    const step = h.log ? 0.01 : (h.step || (hi - lo) / 200);
    const slider = el("input", { type: "range", min: lo, max: hi, step, "data-hp": h.name, "aria-label": h.name });
    slider.value = String(sliderPos(h, v));
    const num = el("input", { type: "number", class: "num", step: "any", "data-hp-num": h.name });
    num.value = numText(Number(v));
    slider.addEventListener("input", () => {
      const val = sliderVal(h, Number(slider.value));
      o.hyperparams[h.name] = val;
      num.value = numText(val);
      requestRun();
    });
    num.addEventListener("change", () => {
      const val = Number(num.value);
      if (!Number.isFinite(val)) { num.value = numText(o.hyperparams[h.name]); return; }
      o.hyperparams[h.name] = clean(val);
      num.value = numText(o.hyperparams[h.name]);
      slider.value = String(sliderPos(h, val));
      requestRun();
    });
    const wrap = el("div", { class: "slider-wrap" }, slider);
    if (h.name === "lr") wrap.append(el("div", { class: "stab-mark", hidden: true, "data-stab": "1" }));
    row.append(wrap, num);
  }
  return row;
}

function renderOptimizers() {
  const box = $("optimizers");
  box.replaceChildren();
  const names = labels();
  state.optimizers.forEach((o, i) => {
    const info = catalog.optimizers[o.name];
    const sel = el("select", { class: "opt-name", "aria-label": "optimizer" },
      ...catalog.optimizerList.map((n) => el("option", { value: n }, n)));
    sel.value = o.name;
    sel.addEventListener("change", () => {
      const lr = o.hyperparams.lr;
      o.name = sel.value;
      o.hyperparams = { ...defaultsOf(o.name) };
      const slr = suggestedLr(o.name);
      if (slr !== undefined) o.hyperparams.lr = slr;
      else if (lr !== undefined) o.hyperparams.lr = lr;
      renderOptimizers();
      renderSweepControls();
      requestRun();
    });
    const color = el("input", { type: "color", value: o.color, title: "colour" });
    color.addEventListener("input", () => { o.color = color.value; card.style.setProperty("--c", o.color); drawAll(); saveHash(); });
    const remove = el("button", { class: "remove", title: `remove ${names[i]}` }, "×");
    remove.addEventListener("click", () => {
      state.optimizers = state.optimizers.filter((q) => q !== o);
      renderOptimizers();
      renderSweepControls();
      requestRun();
    });
    const card = el("div", { class: "opt", "data-index": i, style: `--c:${o.color}` },
      el("div", { class: "opt-head" }, color, sel, remove));
    for (const h of info.hyperparams) card.append(hyperparamRow(o, h));
    box.append(card);
  });
  drawStabilityMarks();
}

function drawStabilityMarks() {
  const lrInfo = (name) => catalog.optimizers[name].hyperparams.find((h) => h.name === "lr");
  document.querySelectorAll("#optimizers .opt").forEach((card, i) => {
    const o = state.optimizers[i];
    const mark = card.querySelector("[data-stab]");
    if (!o || !mark) return;
    const h = lrInfo(o.name);
    // the server's limit for this optimizer (its own rule, from its hyperparameters); none while stale
    const limits = lastCurv && lastCurv.limits;
    const lim = limits && limits.length === state.optimizers.length && limits[i].name === o.name ? limits[i] : null;
    const wrap = mark.parentElement;
    if (lim) wrap.title = lim.lr === null ? lim.rule : `${lim.rule} = ${fmt(lim.lr)}`;
    else wrap.removeAttribute("title");
    const lr = lim && lim.lr;
    if (!h || !lr || lr < h.min || lr > h.max) { mark.hidden = true; return; }
    const f = (Math.log10(lr) - Math.log10(h.min)) / (Math.log10(h.max) - Math.log10(h.min));
    mark.hidden = false;
    // the thumb's centre travels from 8px to width-8px
    mark.style.left = `calc(${(f * 100).toFixed(2)}% + ${(8 - 16 * f).toFixed(1)}px - 1px)`;
    mark.title = `${lim.rule} = ${fmt(lr)}: ${labels()[i]} is unstable above this lr at the probed point`;
  });
}

function drawStartLabel() {
  const s = state.start || (lastResult && lastResult.start);
  $("start-label").textContent = s ? `(${fmt(s[0])}, ${fmt(s[1])})${state.start ? "" : " default"}` : "surface default";
}

function renderSurfaceParams() {
  const box = $("surface-params");
  box.replaceChildren();
  if (state.surface.expression) return;
  const info = catalog.surfaces[state.surface.name];
  for (const [k, dflt] of Object.entries(info.params || {})) {
    const inp = el("input", { type: "number", step: "any", title: k });
    inp.value = String(state.surface.params[k] ?? dflt);
    inp.addEventListener("change", () => {
      const v = Number(inp.value);
      if (!Number.isFinite(v)) return;
      state.surface.params[k] = v;
      saveHash();
      loadSurface();
      requestRun();
    });
    box.append(el("label", { class: "hint" }, k), inp);
  }
}

function renderSchedule() {
  const sel = $("schedule");
  sel.value = state.schedule.name;
  const box = $("schedule-params");
  box.replaceChildren();
  const info = catalog.schedules[state.schedule.name];
  if (!info) return;
  for (const p of info.params) {
    if (HIDDEN_SCHEDULE_PARAMS.has(p.name)) continue;
    const v = state.schedule.params[p.name];
    let inp;
    if (p.choices && p.choices.length) {
      inp = el("select", { "data-sp": p.name }, ...p.choices.map((c) => el("option", { value: c }, c)));
      inp.value = v ?? p.default;
    } else if (p.kind === "bool") {
      inp = el("input", { type: "checkbox", "data-sp": p.name });
      inp.checked = !!(v ?? p.default);
    } else {
      inp = el("input", { type: "number", min: "0", step: p.kind === "int" ? "1" : "any", "data-sp": p.name });
      inp.placeholder = p.auto ? "auto" : (p.default === null ? "none" : String(p.default));
      inp.title = p.auto ? `left empty: ${p.auto}` : `default ${p.default}`;
      if (v !== undefined && v !== null) inp.value = String(v);
    }
    inp.addEventListener("change", () => {
      if (p.kind === "bool") state.schedule.params[p.name] = inp.checked;
      else if (p.choices && p.choices.length) state.schedule.params[p.name] = inp.value;
      else if (inp.value === "") delete state.schedule.params[p.name];
      else state.schedule.params[p.name] = Number(inp.value);
      requestRun();
    });
    box.append(el("div", { class: "row" }, el("label", {}, p.name.replace(/_/g, " ")), inp));
  }
}

// ------------------------------------------------------------------------------------------ sweep
function sweepOptimizer() {
  const i = Math.min(state.sweep.opt, state.optimizers.length - 1);
  return i >= 0 ? state.optimizers[i] : null;
}
function floatParams(o) {
  return o ? catalog.optimizers[o.name].hyperparams.filter((h) => h.kind === "float") : [];
}
/* The optimizer the sweep panel suggests when the chosen one has a single setting: momentum (lr × beta). */
function sweepableName() {
  const two = (n) => floatParams({ name: n }).length >= 2;
  return catalog.optimizers.momentum && two("momentum") ? "momentum" : catalog.optimizerList.find(two);
}
/* Sweep `name`: the first optimizer of that name in the view, added (with the surface's lr) if there is none. */
function sweepInstead(name) {
  let i = state.optimizers.findIndex((o) => o.name === name);
  if (i < 0) {
    const before = state.optimizers.length;
    addOptimizer(name);
    if (state.optimizers.length === before) return;  // at the cap: addOptimizer said so
    i = before;
  }
  state.sweep.opt = i;
  state.sweep.x = state.sweep.y = null;
  renderSweepControls(true);
  saveHash();
}
function axisDefault(h) {
  return { name: h.name, min: h.min > 0 || !h.log ? h.min : 1e-4, max: h.max, log: h.log };
}
/* The sweep panel from state.sweep. An optimizer with a single float setting (gd: lr only) cannot be swept:
 * unless the user has just chosen it (keepChoice), the first optimizer with two is taken instead; when it
 * stays, y shows that there is no second setting and a hint offers one that has two. x and y never name
 * the same setting (the server refuses that). */
function renderSweepControls(keepChoice = false) {
  $("sweep-error").hidden = true;  // a refused sweep's message was about the settings these controls replace
  const optSel = $("sweep-opt");
  const names = labels();
  optSel.replaceChildren(...state.optimizers.map((o, i) => {
    const fps = floatParams(o);
    return el("option", { value: i }, fps.length < 2 ? `${names[i]} (${fps.map((h) => h.name).join(", ")} only)` : names[i]);
  }));
  if (state.sweep.opt >= state.optimizers.length) state.sweep.opt = 0;
  if (!keepChoice && floatParams(state.optimizers[state.sweep.opt]).length < 2) {
    const k = state.optimizers.findIndex((q) => floatParams(q).length >= 2);
    if (k >= 0 && k !== state.sweep.opt) { state.sweep.opt = k; state.sweep.x = state.sweep.y = null; }
  }
  optSel.value = String(state.sweep.opt);
  const o = sweepOptimizer();
  const fps = floatParams(o);
  for (const ax of ["x", "y"]) {
    const sel = $(`sweep-${ax}`);
    let cur = state.sweep[ax];
    const other = ax === "y" && state.sweep.x ? state.sweep.x.name : null;
    if (!cur || !fps.find((h) => h.name === cur.name) || cur.name === other) {
      const pick = ax === "x" ? fps[0] : fps.find((h) => h.name !== other);
      cur = pick ? axisDefault(pick) : null;
      if (cur && cur.name === "lr") { cur.min = 1e-3; cur.max = 1; }
      state.sweep[ax] = cur;
    }
    const inputs = [sel, $(`sweep-${ax}-min`), $(`sweep-${ax}-max`), $(`sweep-${ax}-log`)];
    for (const inp of inputs) inp.disabled = !cur;
    if (cur) {
      sel.replaceChildren(...fps.map((h) => el("option", { value: h.name }, h.name)));
      sel.value = cur.name;
      $(`sweep-${ax}-min`).value = numText(cur.min);
      $(`sweep-${ax}-max`).value = numText(cur.max);
      $(`sweep-${ax}-log`).checked = !!cur.log;
    } else {
      sel.replaceChildren(el("option", { value: "" }, "— none"));
      $(`sweep-${ax}-min`).value = $(`sweep-${ax}-max`).value = "";
      $(`sweep-${ax}-log`).checked = false;
    }
  }
  $("sweep-n").value = String(state.sweep.n);
  $("sweep-metric").value = state.sweep.metric;
  const ready = !!(o && state.sweep.x && state.sweep.y);
  $("btn-sweep").disabled = !ready;
  const hint = $("sweep-hint");
  hint.hidden = ready;
  if (!ready) {
    const alt = sweepableName();
    const why = o ? `${names[state.sweep.opt]} has one setting to sweep (${fps.map((h) => h.name).join(", ")}); a sweep needs two.`
      : "A sweep needs an optimizer with two settings.";
    const altAxes = alt ? floatParams({ name: alt }).slice(0, 2).map((h) => h.name).join(" × ") : "";
    hint.replaceChildren(why, ...(alt ? [" Pick one that has two, such as ",
      el("button", { class: "small", onclick: () => sweepInstead(alt) }, `${alt}: ${altAxes}`)] : []));
  }
}
function readSweepControls() {
  state.sweep.opt = Number($("sweep-opt").value || 0);
  for (const ax of ["x", "y"]) {
    const name = $(`sweep-${ax}`).value;
    const prev = state.sweep[ax];
    if (!name) continue;  // no setting on this axis (an optimizer with one): nothing to read
    if (!prev || prev.name !== name) {
      const otherAx = ax === "x" ? "y" : "x";
      const other = state.sweep[otherAx];
      if (other && other.name === name) {
        // the setting shown on the other axis: the two axes swap (with their ranges), never the same on both
        state.sweep[ax] = other;
        state.sweep[otherAx] = prev;
      } else {
        const h = floatParams(sweepOptimizer()).find((q) => q.name === name);
        state.sweep[ax] = h ? axisDefault(h) : null;
      }
      renderSweepControls(true);
      continue;
    }
    prev.min = Number($(`sweep-${ax}-min`).value);
    prev.max = Number($(`sweep-${ax}-max`).value);
    prev.log = $(`sweep-${ax}-log`).checked;
  }
  state.sweep.n = Number($("sweep-n").value);
  state.sweep.metric = $("sweep-metric").value;
  saveHash();
}
async function runSweep() {
  readSweepControls();
  const o = sweepOptimizer();
  // no request the server would refuse: two different settings, or the hint says what to do
  if (!o || !state.sweep.x || !state.sweep.y || state.sweep.x.name === state.sweep.y.name) return;
  const n = state.sweep.n;
  const cap = catalog.limits.max_sweep_work || 4194304;
  const steps = Math.max(1, Math.min(state.steps, Math.floor(cap / (n * n))));
  const body = {
    surface: surfaceSpec(), start: state.start, steps, noise: Number(state.noise), seed: Number(state.seed),
    optimizer: { name: o.name, hyperparams: o.hyperparams },
    x: { ...state.sweep.x, n }, y: { ...state.sweep.y, n },
    schedule: scheduleSpec(),
    clip: state.clip.kind === "none" ? null : { kind: state.clip.kind, max: Number(state.clip.max) },
  };
  $("sweep-status").textContent = "running…";
  $("sweep-error").hidden = true;
  try {
    const data = await api("sweep", "/api/sweep", body);
    if (!data) return;
    lastSweep = data;
    state.sweep.request = body;  // the link re-runs exactly this sweep on load
    saveHash();
    $("sweep-status").textContent = `${n}×${n} cells × ${steps} steps in ${fmt(data.elapsed_ms, 3)} ms`
      + (steps < state.steps ? ` (steps capped at ${steps})` : "");
    drawSweep();
    window.__ravine.sweeps += 1;
  } catch (e) {
    $("sweep-status").textContent = "";
    $("sweep-error").textContent = e.message;
    $("sweep-error").hidden = false;
  }
}
function drawSweep() {
  if (!lastSweep) return;
  const s = lastSweep;
  const metric = state.sweep.metric;
  const m = s.global_min !== null ? s.global_min : 0;
  let z, title, text;
  if (metric === "final_loss") {
    z = s.final_loss.map((row) => row.map((v) => (v === null ? null : Math.log10(Math.max(v - m, 1e-16)))));
    title = "log10(final loss − min)";
  } else if (metric === "steps_to_tol") {
    z = s.steps_to_tol; title = "steps to converge";
  } else {
    z = s.diverged_at; title = "diverged at step";
  }
  text = s.final_loss.map((row, i) => row.map((v, j) => {
    const d = s.diverged_at[i][j], c = s.steps_to_tol[i][j];
    return d !== null ? `diverged at step ${d}` : `final loss ${fmt(v)}` + (c !== null ? `, converged at ${c}` : ", not converged");
  }));
  const o = sweepOptimizer();
  const traces = [{
    type: "heatmap", x: s.x_values, y: s.y_values, z, text, colorscale: "Viridis", reversescale: metric !== "diverged_at",
    hovertemplate: `${s.x_name}=%{x:.4g}<br>${s.y_name}=%{y:.4g}<br>%{text}<extra></extra>`,
    colorbar: { title: { text: title, side: "right" }, thickness: 12 }, hoverongaps: false,
  }];
  if (o && o.hyperparams[s.x_name] !== undefined && o.hyperparams[s.y_name] !== undefined) {
    traces.push({ type: "scatter", mode: "markers", x: [o.hyperparams[s.x_name]], y: [o.hyperparams[s.y_name]],
      hoverinfo: "skip", showlegend: false,
      marker: { symbol: "circle-open", size: 14, color: "#fff", line: { width: 3, color: "#fff" } } });
  }
  const swept = state.sweep.request || state.sweep;  // the axes as swept, not as the controls read now
  const note = metric === "final_loss" ? "grey: diverged" : metric === "steps_to_tol" ? "grey: never converged (or diverged)" : "grey: did not diverge";
  Plotly.react("plot-sweep", traces, {
    margin: { l: 60, r: 10, t: 30, b: 44 }, plot_bgcolor: "#c9ccd3",
    title: { text: `${s.optimizer}: ${s.y_name} × ${s.x_name}  ·  ${s.steps} steps  ·  ${note}`, font: { size: 12 }, x: 0.01 },
    xaxis: { title: { text: s.x_name }, ...sweepAxis(s.x_values, swept.x) },
    yaxis: { title: { text: s.y_name }, ...sweepAxis(s.y_values, swept.y) },
  }, { ...PLOT_CONFIG, displayModeBar: false });
}
/* A sweep axis: log (with whole-number ticks) when the axis was swept in log steps, else linear. */
function sweepAxis(values, axis) {
  // no zero line: at β = 0 it would draw over the bottom row of cells
  if (!axis || !axis.log) return { type: "linear", zeroline: false };
  return { type: "log", ...logTicks(Math.min(...values), Math.max(...values)) };
}
function onSweepClick(ev) {
  if (!ev || !ev.points || !ev.points.length || !lastSweep) return;
  const p = ev.points.find((q) => q.data.type === "heatmap") || ev.points[0];
  const o = sweepOptimizer();
  if (!o) return;
  o.hyperparams[lastSweep.x_name] = Number(Number(p.x).toPrecision(6));
  o.hyperparams[lastSweep.y_name] = Number(Number(p.y).toPrecision(6));
  renderOptimizers();
  drawSweep();
  showStatus(`Loaded ${lastSweep.x_name}=${fmt(p.x)}, ${lastSweep.y_name}=${fmt(p.y)} into ${labels()[state.sweep.opt]}`);
  requestRun();
}

// ------------------------------------------------------------------------------------------ curvature
/* Load a chapter preset (GET /api/presets): its request becomes the view's state; its sweep, if any, is run. */
async function applyPreset(p) {
  const r = p.request;
  cancelRuns();
  pause();
  const s = r.surface;
  state.preset = p.id;
  state.start = r.start;
  state.steps = r.steps;
  state.noise = r.noise;
  state.seed = r.seed;
  state.schedule = r.schedule ? { name: r.schedule.name, params: { ...r.schedule.params } } : { name: "constant", params: {} };
  state.clip = r.clip ? { kind: r.clip.kind, max: r.clip.max } : { kind: "none", max: 1.0 };
  state.optimizers = r.optimizers.map((o, i) => ({ id: nextId++, name: o.name, color: PALETTE[i % PALETTE.length],
    hyperparams: { ...defaultsOf(o.name), ...o.hyperparams } }));
  state.probe = null;
  lastCurv = null;
  lastResult = null;
  viewError = null;
  anim.frame = state.frame = null;
  $("curv-info").textContent = "no point probed yet";
  if (p.sweep) {
    state.sweep = { opt: p.sweep.opt, n: p.sweep.n, x: { ...p.sweep.x }, y: { ...p.sweep.y }, metric: "final_loss" };
  }
  if (s.expression) {
    state.surface = { name: state.surface.name, params: {}, expression: s.expression, box: 2 };
    syncControls();
    await checkExpression();  // draws the typed surface; it resets the start, which the preset sets again
    state.start = r.start;
  } else {
    state.surface = { name: s.name, params: { ...(s.params || {}) }, expression: null };
    syncControls();
    $("expression").classList.remove("active", "invalid");
    $("expression-error").hidden = true;
    await loadSurface(false);
  }
  requestRun();
  if (p.sweep) runSweep();
  else clearSweep();
}
/* No sweep shown (the placeholder of an empty sweep plot). */
function clearSweep() {
  lastSweep = null;
  delete state.sweep.request;
  $("sweep-status").textContent = "";
  renderSweepControls();
  return Plotly.react("plot-sweep", [], { margin: { l: 60, r: 10, t: 30, b: 44 },
    annotations: [{ text: "Run a sweep to see the grid", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
      font: { color: "#6b7385" } }], xaxis: { visible: false }, yaxis: { visible: false } },
  { ...PLOT_CONFIG, displayModeBar: false });
}

async function probe(point) {
  state.probe = point;
  saveHash();
  try {
    const names = labels();
    const optimizers = state.optimizers.map((o, i) => ({ name: o.name, label: names[i], hyperparams: o.hyperparams }));
    const data = await api("curv", "/api/curvature", { surface: surfaceSpec(), point, optimizers });
    if (!data) return;
    lastCurv = data;
    const ev = data.eigenvalues;
    const lines = [
      `point        (${fmt(point[0])}, ${fmt(point[1])})`,
      `f            ${fmt(data.value)}`,
      `eigenvalues  λ1 = ${fmt(ev[0])},  λ2 = ${fmt(ev[1])}`,
      `eigenvectors v1 = (${fmt(data.eigenvectors[0][0], 3)}, ${fmt(data.eigenvectors[0][1], 3)})`,
      `             v2 = (${fmt(data.eigenvectors[1][0], 3)}, ${fmt(data.eigenvectors[1][1], 3)})`,
      `condition    κ = ${fmt(data.condition_number)}`,
      `2/λmax       ${data.stability_lr === null ? "— (λmax ≤ 0: no GD limit here)" : fmt(data.stability_lr)}`,
      `kind         ${data.kind}`,
      // the rule on its own line under the number (some are sentences: the readout wraps them)
      ...data.limits.map((l, i) => `lr limit     ${names[i]}: ${l.lr === null ? "none" : fmt(l.lr)}\n  ${l.rule}`),
    ];
    $("curv-info").textContent = lines.join("\n");
    drawContour();
    drawStabilityMarks();
  } catch (e) {
    showStatus("Curvature: " + e.message, true);
  }
}

// ------------------------------------------------------------------------------------------ surface
/* The surface dropdown names the surface in use: a built-in one, or "(expression)" while a typed one is. */
function showSurfaceChoice(typed) {
  const sel = $("surface-select");
  sel.querySelector(`option[value="${EXPRESSION_OPTION}"]`).hidden = !typed;
  sel.value = typed ? EXPRESSION_OPTION : state.surface.name;
}
function selectSurface(name) {
  if (name === EXPRESSION_OPTION) return;
  cancelRuns();
  state.surface = { name, params: {}, expression: null };
  state.preset = null;
  viewError = null;
  showSurfaceChoice(false);
  state.start = null;
  state.probe = null;
  lastCurv = null;
  $("expression").value = "";
  $("expression").classList.remove("active", "invalid");
  $("expression-error").hidden = true;
  renderSurfaceParams();
  saveHash();
  // the user's hyperparameters (learning rates included) are kept: a new surface changes no setting
  loadSurface(false).then(() => requestRun());
}
async function checkExpression() {
  const input = $("expression");
  const text = input.value;
  const errBox = $("expression-error");
  if (!text.trim()) {
    input.classList.remove("active", "invalid");
    errBox.hidden = true;
    if (state.surface.expression || viewError) selectSurface(state.surface.name);
    return;
  }
  try {
    const box = Number($("expr-box").value);
    const body = { expression: text, grid: 120 };
    if (box > 0 && box !== 2) body.domain = [[-box, box], [-box, box]];
    const data = await api("check", "/api/surface/check", body);
    if (!data) return;
    if (!data.ok) {
      input.classList.add("invalid");
      input.classList.remove("active");
      const pos = data.position === null ? null : Math.min(data.position, text.length);
      errBox.textContent = pos === null ? data.error : `${text}\n${" ".repeat(pos)}^ ${data.error}`;
      errBox.hidden = false;
      // the typed expression is what the user asked for: show no stale surface or runs in its place
      showSurfaceChoice(true);
      cancelRuns();
      surfaceInfo = null;
      lastResult = null;
      lastCurv = null;
      viewError = { title: `f(x, y) = ${text}`, text: `not usable: ${data.error}` };
      drawAll();
      return;
    }
    input.classList.remove("invalid");
    input.classList.add("active");
    errBox.hidden = true;
    cancelRuns();
    state.surface = { name: state.surface.name, params: {}, expression: text, box: Number($("expr-box").value) || 2 };
    state.start = null;
    lastCurv = null;
    surfaceInfo = data.surface;
    showSurfaceChoice(true);
    // the previous surface's runs are not drawn over the new contour while this one's are computed
    lastResult = null;
    viewError = null;
    renderSurfaceParams();
    drawAll();
    requestRun();
  } catch (e) {
    errBox.textContent = e.message;
    errBox.hidden = false;
    input.classList.add("invalid");
  }
}

function onContourClick(ev) {
  const gd = $("contour");
  const fl = gd._fullLayout;
  if (!fl || !fl.xaxis || !surfaceInfo) return;
  const box = gd.getBoundingClientRect();
  const px = ev.clientX - box.left - fl.xaxis._offset;
  const py = ev.clientY - box.top - fl.yaxis._offset;
  if (px < 0 || py < 0 || px > fl.xaxis._length || py > fl.yaxis._length) return;
  const x = Number(fl.xaxis.p2c(px).toPrecision(5));
  const y = Number(fl.yaxis.p2c(py).toPrecision(5));
  if (state.mode === "probe") { probe([x, y]); return; }
  state.start = [x, y];
  requestRun();
}

// ------------------------------------------------------------------------------------------ export
function download(name, blob) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) {
    return false;
  }
}
/* The view as the server draws it: a captioned PNG (contour, loss, gradient norm, settings, what you are seeing). */
async function exportPng() {
  try {
    const res = await fetch("/api/export/png", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(exportRequest(), cleanNumbers) });
    if (!res.ok) throw new Error((await res.json()).message || res.statusText);
    download("ravine-playground.png", await res.blob());
  } catch (e) {
    showStatus("PNG: " + e.message, true);
  }
}
function exportRequest() {
  return { request: trajectoryRequest(), colors: state.optimizers.map((o, i) => runColor(i)) };
}
async function showPython() {
  try {
    const data = await api("python", "/api/export/python", exportRequest());
    if (!data) return;
    $("python-code").value = data.code;
    $("python-copied").textContent = (await copyText(data.code)) ? "copied to the clipboard" : "";
    $("python-dialog").showModal();
  } catch (e) {
    showStatus("Python: " + e.message, true);
  }
}

// ------------------------------------------------------------------------------------------ wiring
function wire() {
  $("surface-select").addEventListener("change", (e) => selectSurface(e.target.value));
  $("expression").addEventListener("input", () => debounce("expr", 250, checkExpression));
  $("expr-box").addEventListener("change", () => {
    const b = Number($("expr-box").value);
    if (!(b > 0 && b <= 10000)) { $("expr-box").value = String(state.surface.box || 2); showStatus("Box: 0 < b <= 10000", true); return; }
    if ($("expression").value.trim()) checkExpression();
  });
  $("steps").addEventListener("change", () => {
    const v = Math.round(Number($("steps").value));
    const max = catalog.limits.max_steps || 10000;
    if (!(v >= 1 && v <= max)) { $("steps").value = String(state.steps); showStatus(`Steps: 1..${max}`, true); return; }
    state.steps = v;
    anim.frame = null;
    renderSchedule();
    requestRun();
  });
  $("btn-reset-start").addEventListener("click", () => { state.start = null; requestRun(); });
  document.querySelectorAll("input[name=click-mode]").forEach((r) => r.addEventListener("change", () => {
    state.mode = r.value; saveHash();
  }));
  $("schedule").addEventListener("change", () => {
    state.schedule = { name: $("schedule").value, params: {} };
    renderSchedule();
    requestRun();
  });
  $("clip-kind").addEventListener("change", () => {
    state.clip.kind = $("clip-kind").value;
    $("clip-max").disabled = state.clip.kind === "none";
    requestRun();
  });
  $("clip-max").addEventListener("change", () => {
    const v = Number($("clip-max").value);
    if (!(v > 0)) { $("clip-max").value = String(state.clip.max); showStatus("Clip threshold must be > 0", true); return; }
    state.clip.max = v;
    requestRun();
  });
  $("noise").addEventListener("input", () => {
    state.noise = Number($("noise").value);
    $("noise-val").textContent = fmt(state.noise);
    requestRun();
  });
  $("seed").addEventListener("change", () => {
    state.seed = Math.max(0, Math.round(Number($("seed").value) || 0));
    requestRun();
  });
  $("btn-add").addEventListener("click", () => addOptimizer($("add-name").value));
  $("log-loss").addEventListener("change", () => { state.logLoss = $("log-loss").checked; saveHash(); drawSide(); });
  $("btn-play").addEventListener("click", () => (anim.playing ? pause() : play()));
  $("btn-rewind").addEventListener("click", () => { pause(); setFrame(0); });
  $("btn-step").addEventListener("click", () => { pause(); setFrame(currentFrame() + 1); });
  // read the scrubbed position before pause() redraws the transport with the current frame
  $("scrub").addEventListener("input", () => { const f = Number($("scrub").value); pause(); setFrame(f); });
  $("speed").addEventListener("change", () => { state.speed = Number($("speed").value); saveHash(); });
  $("contour").addEventListener("click", onContourClick);
  $("btn-sweep").addEventListener("click", runSweep);
  for (const id of ["sweep-opt", "sweep-x", "sweep-y", "sweep-x-min", "sweep-x-max", "sweep-x-log", "sweep-y-min",
    "sweep-y-max", "sweep-y-log", "sweep-n", "sweep-metric"]) {
    $(id).addEventListener("change", () => {
      $("sweep-error").hidden = true;
      if (id === "sweep-opt") {
        state.sweep.opt = Number($("sweep-opt").value);
        state.sweep.x = state.sweep.y = null;
        renderSweepControls(true);  // the user's choice stays, even an optimizer with one setting (the hint says why)
      }
      readSweepControls();
      if (id === "sweep-metric") drawSweep();
    });
  }
  $("btn-probe-start").addEventListener("click", () => {
    const s = state.start || (lastResult && lastResult.start) || (surfaceInfo && surfaceInfo.start);
    if (s) probe([s[0], s[1]]);
  });
  $("btn-link").addEventListener("click", async () => {
    saveHash();
    showStatus((await copyText(location.href)) ? "Link copied: it reproduces this view." : "Link is in the address bar.");
  });
  $("btn-png").addEventListener("click", exportPng);
  $("btn-json").addEventListener("click", () => {
    const cleaned = (v) => JSON.parse(JSON.stringify(v, cleanNumbers));  // the settings as sent; results exact
    const payload = { state: cleaned(state), request: cleaned(trajectoryRequest()), response: lastResult, sweep: lastSweep,
      curvature: lastCurv };
    download("ravine-playground.json", new Blob([JSON.stringify(payload, null, 1)], { type: "application/json" }));
  });
  $("btn-python").addEventListener("click", showPython);
  $("btn-python-copy").addEventListener("click", async () => {
    $("python-copied").textContent = (await copyText($("python-code").value)) ? "copied" : "select and copy (Ctrl+C)";
    $("python-code").select();
  });
  $("btn-python-close").addEventListener("click", () => $("python-dialog").close());
  window.addEventListener("keydown", (e) => {
    if (e.target.matches("input, select, textarea")) return;
    if (e.key === " ") { e.preventDefault(); anim.playing ? pause() : play(); }
    if (e.key === "ArrowRight") { pause(); setFrame(currentFrame() + 1); }
    if (e.key === "ArrowLeft") { pause(); setFrame(currentFrame() - 1); }
  });
}

function syncControls() {
  showSurfaceChoice(!!state.surface.expression);
  $("expression").value = state.surface.expression || "";
  $("expr-box").value = String(state.surface.box || 2);
  $("steps").value = String(state.steps);
  $("clip-kind").value = state.clip.kind;
  $("clip-max").value = String(state.clip.max);
  $("clip-max").disabled = state.clip.kind === "none";
  $("noise").value = String(state.noise);
  $("noise-val").textContent = fmt(state.noise);
  $("seed").value = String(state.seed);
  $("log-loss").checked = state.logLoss;
  $("speed").value = String(state.speed);
  document.querySelectorAll("input[name=click-mode]").forEach((r) => { r.checked = r.value === state.mode; });
  renderSurfaceParams();
  renderSchedule();
  renderOptimizers();
  renderSweepControls();
}

async function init() {
  try {
    const [opts, scheds, surfs, limits, style, presets] = await Promise.all([
      api("c1", "/api/optimizers"), api("c2", "/api/schedules"), api("c3", "/api/surfaces"), api("c4", "/api/limits"),
      api("c5", "/api/style"), api("c6", "/api/presets"),
    ]);
    STYLE = style;
    PALETTE = style.palette;
    catalog.presets = presets;
    catalog.optimizerList = opts.map((o) => o.name);
    for (const o of opts) catalog.optimizers[o.name] = o;
    for (const s of scheds) catalog.schedules[s.name] = s;
    for (const s of surfs) catalog.surfaces[s.name] = s;
    catalog.limits = limits;
  } catch (e) {
    showStatus("Could not load the catalogues: " + e.message, true, 60000);
    return;
  }
  $("surface-select").replaceChildren(...Object.values(catalog.surfaces).map((s) =>
    el("option", { value: s.name, title: plain(s.description) }, s.name)),
    el("option", { value: EXPRESSION_OPTION, hidden: true, disabled: true }, "typed expression"));
  $("presets").replaceChildren(...catalog.presets.map((p) => el("button", { class: "preset", "data-preset": p.id,
    title: `${p.section}: ${p.caption.join(" ")}`, onclick: () => applyPreset(p) }, p.title)));
  $("add-name").replaceChildren(...catalog.optimizerList.map((n) => el("option", { value: n }, n)));
  $("add-name").value = catalog.optimizers.adam ? "adam" : catalog.optimizerList[0];
  $("schedule").replaceChildren(...Object.values(catalog.schedules).map((s) =>
    el("option", { value: s.name, title: plain(s.description) }, s.name.replace(/_/g, " "))));
  const fromLink = loadHash();
  if (!fromLink) {
    const first = catalog.optimizers.gd ? "gd" : catalog.optimizerList[0];
    state.optimizers = [{ id: nextId++, name: first, color: PALETTE[0], hyperparams: defaultsOf(first) }];
    if (catalog.optimizers.momentum) {
      state.optimizers.push({ id: nextId++, name: "momentum", color: PALETTE[1], hyperparams: defaultsOf("momentum") });
    }
  }
  wire();
  syncControls();
  if (state.surface.expression) await checkExpression();
  else await loadSurface(false);
  if (!fromLink) {
    for (const o of state.optimizers) { const lr = suggestedLr(o.name); if (lr !== undefined) o.hyperparams.lr = lr; }
    renderOptimizers();
  }
  const frame = state.frame;  // a link's step position, restored once its runs are in
  const sweepRequest = state.sweep.request;
  await runTrajectories();
  if (Number.isInteger(frame)) setFrame(frame);
  saveHash();
  if (state.probe) probe(state.probe);
  // Plotly attaches .on() to the div after the first plot.
  await clearSweep().then((gd) => gd.on("plotly_click", onSweepClick));
  if (sweepRequest) {  // a link's sweep: the same request again (the server computes it deterministically)
    try {
      const data = await api("sweep", "/api/sweep", sweepRequest);
      if (data) {
        lastSweep = data;
        state.sweep.request = sweepRequest;
        drawSweep();
        window.__ravine.sweeps += 1;
      }
    } catch (e) {
      $("sweep-error").textContent = e.message;
      $("sweep-error").hidden = false;
    }
  }
}

window.addEventListener("error", (e) => window.__ravine.errors.push(String(e.message)));
init();
