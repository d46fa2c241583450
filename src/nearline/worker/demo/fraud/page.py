"""The demo's live page: decisions as they stream in (SSE), rate, latency and accuracy."""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>nearline · live fraud decisions</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d1d1f; background: #fafafa; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .sub { color: #666; margin-bottom: 16px; }
  .cards { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 16px; }
  .card { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: 10px 14px;
          min-width: 120px; }
  .card b { display: block; font-size: 22px; }
  table { border-collapse: collapse; width: 100%; background: #fff; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee;
           font-variant-numeric: tabular-nums; }
  tr.block { background: #fde2e1; } tr.flag { background: #fff4d6; }
  .tag { font-weight: 600; text-transform: uppercase; font-size: 12px; }
</style>
</head>
<body>
<h1>Live fraud decisions</h1>
<div class="sub">Synthetic card transactions → stream → micro-batched worker (streaming
per-card features + gradient-boosted model) → decisions pushed to this page over SSE.</div>
<div class="cards">
  <div class="card">decided/s<b id="rate">&ndash;</b></div>
  <div class="card">latency p50<b id="p50">&ndash;</b></div>
  <div class="card">latency p99<b id="p99">&ndash;</b></div>
  <div class="card">blocked<b id="blocked">0</b></div>
  <div class="card">flagged<b id="flagged">0</b></div>
  <div class="card">precision<b id="precision">&ndash;</b></div>
  <div class="card">recall<b id="recall">&ndash;</b></div>
  <div class="card">decided<b id="decided">0</b></div>
</div>
<table>
  <thead><tr><th>decision</th><th>card</th><th>amount</th><th>merchant</th><th>country</th>
  <th>tx/min</th><th>score</th><th>truth</th><th>latency</th></tr></thead>
  <tbody id="rows"></tbody>
</table>
<script>
const rows = document.getElementById("rows");
const ms = (v) => v === null || v === undefined ? "-" : v.toFixed(0) + " ms";
function show(id, data) {
  const latency = Number(id.split("-")[0]) - Number(data.source_id.split("-")[0]);
  if (data.decision === "allow" && Math.random() > 0.05) return;  // keep the table readable
  const tr = document.createElement("tr");
  tr.className = data.decision;
  const cells = [data.decision, data.key, data.amount.toFixed(2), data.merchant, data.country,
                 data.card_tx_last_minute, data.score.toFixed(3),
                 data.is_fraud ? "fraud" : "legit", latency + " ms"];
  cells.forEach((value, i) => {
    const td = document.createElement("td");
    td.textContent = value;
    if (i === 0) td.className = "tag";
    tr.appendChild(td);
  });
  rows.prepend(tr);
  while (rows.children.length > 40) rows.removeChild(rows.lastChild);
}
const events = new EventSource("STREAM_URL");
events.addEventListener("result", (e) => show(e.lastEventId, JSON.parse(e.data)));
async function refresh() {
  const s = await (await fetch("/demo/stats")).json();
  document.getElementById("rate").textContent = s.per_second;
  document.getElementById("p50").textContent = ms(s.latency_ms.p50);
  document.getElementById("p99").textContent = ms(s.latency_ms.p99);
  document.getElementById("blocked").textContent = s.decisions.block || 0;
  document.getElementById("flagged").textContent = s.decisions.flag || 0;
  document.getElementById("decided").textContent = s.decided;
  document.getElementById("precision").textContent = s.precision ?? "-";
  document.getElementById("recall").textContent = s.recall ?? "-";
}
setInterval(refresh, 1000);
refresh();
</script>
</body>
</html>
"""


def render_page(stream_url: str) -> str:
    return PAGE.replace("STREAM_URL", stream_url)
