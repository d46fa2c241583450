// The live dashboard: polls /dashboard/data and draws every chart as plain SVG.
// No libraries and no network beyond the gateway itself.

const params = new URLSearchParams(window.location.search);
const POLL_MS = Number(params.get("interval_ms")) || 1000;
const RECENT_S = 10; // the live chart's p50/p95 cover this much of the past
const HISTORY_S = 120; // how far back the live chart reaches
const BAND_COLOURS = {
  instant: "var(--instant)",
  "flow kept": "var(--flow)",
  "attention kept": "var(--attention)",
  lost: "var(--lost)",
};
const LIMITS = [
  { s: 0.1, label: "100 ms" },
  { s: 1, label: "1 s" },
  { s: 10, label: "10 s" },
];
const SVG_NS = "http://www.w3.org/2000/svg";
const history = []; // { t (s), bounds, cumulative }

// --- small helpers -----------------------------------------------------------------------------

function svgEl(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  if (text !== undefined) el.textContent = text;
  return el;
}

function chart(width, height) {
  return svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
}

function seconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${(s / 60).toFixed(1)} min`;
}

function percent(share) {
  if (share === null || share === undefined) return "—";
  const value = share * 100;
  return value > 0 && value < 1 ? `${value.toFixed(1)} %` : `${Math.round(value)} %`;
}

const count = (n) => Math.round(n).toLocaleString("en-US");
const usd = (n) => `$${n < 100 ? n.toFixed(4) : n.toFixed(2)}`;

function bandOf(upper) {
  if (upper === null) return "lost";
  if (upper <= 0.1) return "instant";
  if (upper <= 1) return "flow kept";
  if (upper <= 10) return "attention kept";
  return "lost";
}

// A bucket bound as people write it: 25 ms, 1 s, 30 s.
function bound(s) {
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${Number(s.toFixed(1))} s`;
}

function bucketLabel(le, previous) {
  return le === null ? `> ${bound(previous)}` : `≤ ${bound(le)}`;
}

function setFigure(name, text) {
  document.querySelector(`[data-figure="${name}"]`).textContent = text;
}

function empty(container, text) {
  const p = document.createElement("p");
  p.className = "empty";
  p.textContent = text;
  container.replaceChildren(p);
}

function legend(items) {
  const p = document.createElement("p");
  p.className = "legend";
  for (const [colour, label] of items) {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = colour;
    span.append(swatch, label);
    p.append(span);
  }
  return p;
}

// Prometheus' histogram_quantile: linear within the bucket the rank falls in.
function quantile(bounds, cumulative, share) {
  const total = cumulative[cumulative.length - 1] || 0;
  if (!total) return null;
  const rank = share * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (let i = 0; i < bounds.length; i++) {
    if (cumulative[i] >= rank && cumulative[i] > lowerCount) {
      if (bounds[i] === null) return lowerBound;
      return lowerBound + ((bounds[i] - lowerBound) * (rank - lowerCount)) / (cumulative[i] - lowerCount);
    }
    lowerBound = bounds[i] ?? lowerBound;
    lowerCount = cumulative[i];
  }
  return lowerBound;
}

// --- horizontal bars (cache, savings, workers) -------------------------------------------------

function barRows(rows, { format = count, colour = "var(--accent)" } = {}) {
  const rowHeight = 24;
  // wide enough for the longest label (about 6.5 px a character at 11 px)
  const labelWidth = Math.min(260, Math.max(70, 12 + 6.5 * Math.max(...rows.map((r) => r.label.length))));
  const width = 440; // every bar chart has the same width, so its text keeps one size
  const barWidth = width - labelWidth - 80;
  const svg = chart(width, rows.length * rowHeight + 4);
  const longest = Math.max(1e-12, ...rows.map((r) => r.value));
  rows.forEach((row, i) => {
    const y = i * rowHeight + 2;
    svg.append(svgEl("text", { x: labelWidth - 8, y: y + 15, "text-anchor": "end" }, row.label));
    const length = (barWidth * row.value) / longest;
    svg.append(
      svgEl("rect", {
        x: labelWidth, y: y + 4, width: Math.max(row.value > 0 ? 2 : 0, length), height: rowHeight - 9,
        fill: row.colour || colour, "data-value": row.value,
      }),
    );
    svg.append(svgEl("text", { x: labelWidth + length + 6, y: y + 15 }, format(row.value)));
  });
  return svg;
}

// --- the charts --------------------------------------------------------------------------------

function drawHistogram(data) {
  const container = document.getElementById("histogram");
  const buckets = data.first_useful.buckets;
  if (!data.first_useful.count) return empty(container, "No answers yet.");
  const width = 900;
  const height = 230;
  const left = 40;
  const bottom = 40;
  const top = 22;
  const slot = (width - left - 10) / buckets.length;
  const tallest = Math.max(...buckets.map((b) => b.count));
  const svg = chart(width, height);
  const y = (n) => height - bottom - ((height - bottom - top) * n) / tallest;
  for (const value of new Set([Math.round(tallest / 2), tallest])) {
    if (value <= 0) continue;
    const gy = y(value);
    svg.append(svgEl("line", { x1: left, x2: width - 10, y1: gy, y2: gy, class: "grid" }));
    svg.append(svgEl("text", { x: left - 6, y: gy + 4, "text-anchor": "end", class: "muted" }, count(value)));
  }
  buckets.forEach((bucket, i) => {
    const x = left + i * slot;
    const previous = i > 0 ? buckets[i - 1].le : 0;
    const band = bandOf(bucket.le);
    const barTop = y(bucket.count);
    const bar = svgEl("rect", {
      x: x + 3, y: barTop, width: slot - 6, height: height - bottom - barTop,
      fill: BAND_COLOURS[band], "data-le": bucket.le ?? "+Inf", "data-count": bucket.count,
    });
    bar.append(svgEl("title", {}, `${bucketLabel(bucket.le, previous)}: ${count(bucket.count)} (${band})`));
    svg.append(bar);
    if (bucket.count > 0) {
      svg.append(svgEl("text", { x: x + slot / 2, y: barTop - 4, "text-anchor": "middle" }, count(bucket.count)));
    }
    svg.append(
      svgEl("text", { x: x + slot / 2, y: height - bottom + 15, "text-anchor": "middle", class: "muted" },
        bucketLabel(bucket.le, previous)),
    );
  });
  for (const limit of LIMITS) {
    const index = buckets.findIndex((b) => b.le === limit.s);
    if (index < 0) continue;
    const x = left + (index + 1) * slot;
    svg.append(svgEl("line", { x1: x, x2: x, y1: top - 12, y2: height - bottom + 2, class: "limit" }));
    svg.append(svgEl("text", { x: x + 3, y: top - 4 }, limit.label));
  }
  svg.append(
    svgEl("text", { x: left, y: height - 6, class: "muted" },
      `${count(data.first_useful.count)} answers · p50 ${seconds(data.first_useful.p50_s)} · p95 ${seconds(data.first_useful.p95_s)}`),
  );
  container.replaceChildren(svg, legend(Object.entries(BAND_COLOURS).map(([band, colour]) => [colour, band])));
}

function drawBands(data) {
  const container = document.getElementById("bands");
  const total = data.bands.reduce((sum, b) => sum + b.count, 0);
  if (!total) return empty(container, "No answers yet.");
  const width = 440;
  const svg = chart(width, 46);
  let x = 0;
  for (const band of data.bands) {
    const length = (width * band.count) / total;
    const rect = svgEl("rect", {
      x, y: 0, width: length, height: 24, fill: BAND_COLOURS[band.band], "data-band": band.band,
      "data-count": band.count,
    });
    rect.append(svgEl("title", {}, `${band.band}: ${count(band.count)}`));
    svg.append(rect);
    if (length > 34) {
      svg.append(svgEl("text", { x: x + length / 2, y: 16, "text-anchor": "middle" }, percent(band.count / total)));
    }
    x += length;
  }
  svg.append(svgEl("text", { x: 0, y: 40, class: "muted" }, `${count(total)} answers with useful content`));
  const rows = data.bands.map((b) => {
    const limit = b.upper_s === null ? "beyond 10 s" : `≤ ${bound(b.upper_s)}`;
    return [BAND_COLOURS[b.band], `${b.band} (${limit}): ${count(b.count)}`];
  });
  container.replaceChildren(svg, legend(rows));
}

function drawLive(data) {
  const container = document.getElementById("live");
  const now = Date.now() / 1000;
  const bounds = data.first_useful.buckets.map((b) => b.le);
  history.push({ t: now, bounds, cumulative: data.first_useful.cumulative, requests: data.requests.total });
  while (history.length && history[0].t < now - HISTORY_S - RECENT_S) history.shift();

  // one point per poll: quantiles of the answers that arrived in the RECENT_S before it
  const points = history.map((snapshot) => {
    const base = history.find((h) => h.t >= snapshot.t - RECENT_S) || snapshot;
    const delta = snapshot.cumulative.map((c, i) => c - (base.cumulative[i] || 0));
    return {
      t: snapshot.t,
      p50: quantile(snapshot.bounds, delta, 0.5),
      p95: quantile(snapshot.bounds, delta, 0.95),
      rate: (snapshot.requests - base.requests) / Math.max(1, snapshot.t - base.t),
    };
  });
  const width = 440;
  const height = 190;
  const left = 46;
  const right = 10;
  const top = 8;
  const bottom = 22;
  const minS = 0.01;
  const maxS = 30;
  const x = (t) => left + ((width - left - right) * (t - (now - HISTORY_S))) / HISTORY_S;
  const y = (s) => {
    const clamped = Math.min(maxS, Math.max(minS, s));
    const share = (Math.log10(clamped) - Math.log10(minS)) / (Math.log10(maxS) - Math.log10(minS));
    return height - bottom - (height - bottom - top) * share;
  };
  const svg = chart(width, height);
  for (const limit of LIMITS) {
    svg.append(svgEl("line", { x1: left, x2: width - right, y1: y(limit.s), y2: y(limit.s), class: "limit" }));
    svg.append(svgEl("text", { x: left - 5, y: y(limit.s) + 4, "text-anchor": "end" }, limit.label));
  }
  svg.append(svgEl("text", { x: left, y: height - 6, class: "muted" }, `last ${HISTORY_S / 60} min`));
  svg.append(svgEl("text", { x: width - right, y: height - 6, "text-anchor": "end", class: "muted" }, "now"));
  for (const [key, colour, dash] of [["p95", "var(--lost)", "5 3"], ["p50", "var(--accent)", ""]]) {
    const drawn = points.filter((p) => p[key] !== null && p.t >= now - HISTORY_S);
    if (!drawn.length) continue;
    const path = drawn.map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
    svg.append(svgEl("polyline", { points: path, fill: "none", stroke: colour, "stroke-width": 2, "stroke-dasharray": dash }));
    const last = drawn[drawn.length - 1];
    svg.append(svgEl("circle", { cx: x(last.t), cy: y(last[key]), r: 3, fill: colour }));
  }
  const latest = points[points.length - 1];
  const caption = document.createElement("p");
  caption.className = "legend";
  caption.dataset.figure = "live";
  caption.textContent =
    latest && latest.p50 !== null
      ? `now: p50 ${seconds(latest.p50)} · p95 ${seconds(latest.p95)} · ${latest.rate.toFixed(1)} answers/s`
      : "no answers in the last 10 s";
  container.replaceChildren(svg, legend([["var(--accent)", "p50"], ["var(--lost)", "p95"]]), caption);
}

function drawCache(data) {
  const container = document.getElementById("cache");
  const rows = Object.entries(data.cache.hits).map(([tier, n]) => ({ label: `${tier} hits`, value: n }));
  rows.push({ label: "misses", value: data.cache.misses, colour: "var(--muted)" });
  if (!rows.some((r) => r.value > 0)) return empty(container, "No cache lookups yet.");
  const note = document.createElement("p");
  note.className = "legend";
  note.textContent = `hit share ${percent(data.cache.hit_share)} of lookups`;
  container.replaceChildren(barRows(rows), note);
}

function drawSavings(data) {
  const container = document.getElementById("savings");
  const tiers = Object.keys(data.saved.tokens_by_tier);
  if (!tiers.length) return empty(container, "Nothing saved yet: no cache hits.");
  const tokens = barRows(tiers.map((t) => ({ label: `${t} · tokens`, value: data.saved.tokens_by_tier[t] })));
  const money = barRows(
    tiers.map((t) => ({ label: `${t} · USD`, value: data.saved.usd_by_tier[t] || 0 })),
    { format: usd, colour: "var(--instant)" },
  );
  container.replaceChildren(tokens, money);
}

function drawEndings(data) {
  const container = document.getElementById("endings");
  const rows = [
    { label: "completed", value: data.requests.ok, colour: "var(--instant)" },
    { label: "abandoned", value: data.abandoned.count, colour: "var(--attention)" },
    { label: "errors", value: data.errors.answers, colour: "var(--lost)" },
  ];
  if (!data.requests.total) return empty(container, "No answers yet.");
  const parts = [barRows(rows)];
  const codes = Object.entries(data.errors.by_code);
  if (codes.length) {
    const list = document.createElement("ul");
    list.className = "codes";
    for (const [code, n] of codes) {
      const item = document.createElement("li");
      item.textContent = `${code || "unknown"}: ${count(n)}`;
      list.append(item);
    }
    parts.push(list);
  }
  container.replaceChildren(...parts);
}

function drawWorkers(data) {
  const container = document.getElementById("workers");
  if (!data.workers.length) {
    return empty(container, "No worker configured (dashboard.worker_metrics_urls).");
  }
  const parts = [];
  for (const worker of data.workers) {
    const title = document.createElement("p");
    title.className = "legend";
    title.textContent = worker.error ? `${worker.url}: unreachable (${worker.error})` : worker.url;
    parts.push(title);
    if (worker.groups.length) {
      const rows = worker.groups.flatMap((g) => [
        { label: `${g.stream} · ${g.group}`, value: g.lag },
        { label: "pending", value: g.pending, colour: "var(--attention)" },
      ]);
      parts.push(barRows(rows));
    }
  }
  container.replaceChildren(...parts);
}

function drawTiles(data) {
  const total = data.bands.reduce((sum, b) => sum + b.count, 0);
  const fast = data.bands.filter((b) => b.upper_s !== null && b.upper_s <= 1).reduce((s, b) => s + b.count, 0);
  setFigure("requests", count(data.requests.total));
  setFigure("fast-share", total ? percent(fast / total) : "—");
  setFigure("first-useful-p50", seconds(data.first_useful.p50_s));
  setFigure("first-useful-p95", seconds(data.first_useful.p95_s));
  setFigure("cache-hit-share", percent(data.cache.hit_share));
  setFigure("tokens-saved", count(data.saved.tokens));
  setFigure("usd-saved", usd(data.saved.usd));
  setFigure("abandoned", `${count(data.abandoned.count)} (${percent(data.abandoned.share)})`);
  setFigure("errors", `${count(data.errors.answers)} (${percent(data.errors.share)})`);
}

// --- polling -----------------------------------------------------------------------------------

const status = document.getElementById("status");

// With auth on, the figures need a metrics or admin key: open /dashboard#key=sk-… (the
// fragment never leaves the browser).
const dashboardKey = new URLSearchParams(window.location.hash.slice(1)).get("key");
const dataHeaders = dashboardKey ? { Authorization: `Bearer ${dashboardKey}` } : {};

async function refresh() {
  try {
    const response = await fetch("dashboard/data", { cache: "no-store", headers: dataHeaders });
    if (response.status === 401) throw new Error("needs a metrics key: open /dashboard#key=…");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    for (const draw of [drawTiles, drawHistogram, drawBands, drawLive, drawCache, drawSavings, drawEndings, drawWorkers]) {
      draw(data);
    }
    status.className = "status live";
    const restored = data.restored && data.restored.answers
      ? ` · includes ${data.restored.answers} answers from the request log since ${new Date(data.restored.since_ts * 1000).toLocaleString()}`
      : "";
    status.textContent = `live · updated ${new Date().toLocaleTimeString()}${restored}`;
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
  } catch (error) {
    status.className = "status stale";
    status.textContent = `not updating: ${error.message}`;
  } finally {
    setTimeout(refresh, POLL_MS);
  }
}

refresh();
