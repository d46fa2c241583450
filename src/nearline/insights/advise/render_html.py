"""The advice as one self-contained HTML page (``--format html``), drawn from the JSON
document (``render_json.to_json``) so both always say the same."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "th{background:#f3f3f3}.warn{color:#a40}.num{text-align:right}"
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)


def _ci(interval: dict[str, Any] | None, scale: float = 1.0, unit: str = "") -> str:
    if interval is None:
        return "-"
    v, lo, hi = (interval[k] * scale for k in ("value", "ci_low", "ci_high"))
    return f"{v:,.3g}{unit} [{lo:,.3g}-{hi:,.3g}{unit}, n={interval['sample_size']}]"


def render_html(doc: dict[str, Any]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>nearline advise: {escape(doc['profile'])}</title><style>{STYLE}</style>",
        f"</head><body><h1>nearline advise: {escape(doc['profile'])}</h1>",
        f"<p>{escape(doc['currency'])} per {escape(doc['period'])}</p>",
    ]
    parts += [f"<p class='warn'>! {escape(w)}</p>" for w in doc["warnings"]]
    parts.append("<h2>Per path</h2>")
    parts.append(
        _table(
            ["path", "recommendation", "band (p95)", "n", "reliability", "delay cost /s", "from"],
            [
                [
                    p["path"],
                    p["recommendation"],
                    p["band"],
                    p["sample_size"],
                    _ci(p["reliability"], 100, " %")
                    if p["reliability"]["sample_size"] is not None
                    else f"{p['reliability']['value']:.2%}",
                    p["delay_cost"]["per_second_usd"],
                    p["delay_cost"]["note"],
                ]
                for p in doc["paths"]
            ],
        )
    )
    for path in doc["paths"]:
        parts.append(f"<h2>{escape(path['path'])}</h2>")
        parts.append(
            _table(
                ["option", "infra", "delay", "total", "typical s", "p95 s", "band", "ruled out"],
                [
                    [
                        f"{o['mode']} {o['wait_s']:g} s" if o["wait_s"] else o["mode"],
                        o["infrastructure_usd"],
                        o["delay_usd"],
                        o["total_usd"],
                        o["typical_delay_s"],
                        o["p95_s"],
                        o["band"],
                        o["ruled_out"]
                        or ("misses the deadline" if not o["meets_deadline"] else ""),
                    ]
                    for o in path["options"]
                ],
            )
        )
        if path["actions"]:
            parts.append("<h3>What-if (best first)</h3>")
            parts.append(
                _table(
                    ["#", "action", "affected", "p95 ms", "band", "cost/month", "saves/month"],
                    [
                        [
                            a["rank"],
                            a["action"],
                            _ci(a["affected"], 100, " %"),
                            _ci(a["time_to_first_useful"]["p95_ms"]),
                            a["time_to_first_useful"]["band"],
                            a["cost_usd_per_month"],
                            a["value_usd_per_month"],
                        ]
                        for a in path["actions"]
                    ],
                )
            )
    pre = doc.get("precompute")
    if pre is not None:
        parts.append("<h2>What can be precomputed</h2>")
        parts.append(
            f"<p>asked more than once: {escape(_ci(pre['share_ci'], 100, ' %'))} of requests with "
            f"a question; {pre['cost_share']:.1%} of their spend. Warm file: "
            f"{escape(str(pre['warm_file'] or '-'))}</p>"
        )
        parts.append(
            _table(
                ["requests", "question", "wordings", "route"],
                [[c["requests"], c["question"], c["wordings"], c["route"]] for c in pre["top"]],
            )
        )
    parts.append("<h2>Assumptions</h2><ul>")
    parts += [f"<li>{escape(line)}</li>" for line in doc["assumptions"]]
    parts.append("</ul></body></html>\n")
    return "\n".join(parts)
