"""What ``sluice bench`` writes: ``results.json``, ``plots/*.png``, one ``report.html``, a stdout table.

The HTML is self-contained (figures embedded as base64 PNG, CSS inline). Per (fleet, workload) it
shows the capacity the load levels refer to, one table per load level (policy, goodput, SLO
attainment, TTFT/TPOT/E2E percentiles, shed; means with 95% intervals; ratios against the
reference and the best baseline), the figures, and per-backend tables in collapsed sections.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from loadgen.bench import plots
from loadgen.report import _CSS

RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"
Row = Mapping[str, Any]
HEADER = [
    "policy", "role", "goodput req/s", "SLO ok", "TTFT p50", "TTFT p99", "TPOT p99", "E2E p99", "shed",
    "goodput x ref", "goodput x best", "TTFT p99 x ref",
]  # fmt: skip
BACKEND_HEADER = ["policy", "backend", "share", "completed", "TTFT p99", "TPOT p99", "SLO ok"]


def _mean(stat: Mapping[str, Any] | None) -> float | None:
    return None if not stat else stat.get("mean")


def _fmt(value: float | None, digits: int = 1, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.{digits}f}%" if pct else f"{value:,.{digits}f}"


def _with_ci(stat: Mapping[str, Any] | None, digits: int = 1, pct: bool = False) -> str:
    mean = _mean(stat)
    if mean is None or stat is None:
        return "-"
    ci = stat.get("ci95")
    if not ci:
        return _fmt(mean, digits, pct)
    half = (ci[1] - ci[0]) / 2
    return f"{_fmt(mean, digits, pct)} ±{_fmt(half, digits, pct)}"


def _ratio(row: Row, against: str, metric: str) -> str:
    block = row.get("ratios", {}).get(against)
    if not block:
        return "-"
    value = block[metric]["ratio_of_means"]
    return "-" if value is None else f"{value:.2f}x"


def table_rows(rows: Sequence[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        m = r["metrics"]
        out.append([
            r["policy"], r["role"], _with_ci(m["goodput_rps"], 2),
            _with_ci(m["slo_attainment_frac"], 1, True),
            _fmt(_mean(m["ttft_p50_ms"]), 0), _with_ci(m["ttft_p99_ms"], 0), _with_ci(m["tpot_p99_ms"], 1),
            _fmt(_mean(m["e2e_p99_ms"]), 0), _fmt(_mean(m["shed_frac"]), 1, True),
            _ratio(r, "vs_reference", "goodput_rps"), _ratio(r, "vs_best_baseline", "goodput_rps"),
            _ratio(r, "vs_reference", "ttft_p99_ms"),
        ])  # fmt: skip
    return out


def _backend_rows(rows: Sequence[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        for name, b in r["by_backend"].items():
            out.append([
                r["policy"], name, _fmt(_mean(b["share_frac"]), 1, True), _fmt(_mean(b["completed"]), 0),
                _fmt(_mean(b["ttft_p99_ms"]), 0), _fmt(_mean(b["tpot_p99_ms"]), 1),
                _fmt(_mean(b["slo_attainment_frac"]), 1, True),
            ])  # fmt: skip
    return out


def _sections(doc: Mapping[str, Any]) -> list[tuple[str, str, list[float]]]:
    rows = doc["results"]
    pairs = list(dict.fromkeys((r["fleet"], r["workload"]) for r in rows))
    return [
        (f, w, sorted({r["load_level"] for r in rows if (r["fleet"], r["workload"]) == (f, w)}))
        for f, w in pairs
    ]


def _at(doc: Mapping[str, Any], fleet: str, workload: str, load: float) -> list[Row]:
    return [
        r for r in doc["results"] if (r["fleet"], r["workload"], r["load_level"]) == (fleet, workload, load)
    ]


def _capacity_line(doc: Mapping[str, Any], fleet: str, workload: str) -> str:
    cap = doc.get("capacity", {}).get(fleet, {}).get(workload)
    if not cap:
        return "capacity: -"
    return f"capacity {cap['capacity_rps']:.2f} req/s ({cap['source']})"


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header)] + [fmt.format(*row) for row in rows]


def _title(doc: Mapping[str, Any]) -> str:
    title = f"Sluice bench: {doc['name']}"
    if doc.get("partial"):
        title += f"  [PARTIAL: {doc.get('partial_reason') or 'interrupted'}]"
    return title


def format_summary(doc: Mapping[str, Any]) -> str:
    """The stdout table: one block per fleet, workload and load level."""
    slo = doc["slo"]
    lines = [
        _title(doc),
        f"SLO {slo}; seeds {doc['seeds']}; warm-up {doc['warmup_s']:g} s of {doc['duration_s']:g} s",
    ]
    for fleet, workload, loads in _sections(doc):
        lines += ["", f"== {workload} on {fleet}: {_capacity_line(doc, fleet, workload)}"]
        for load in loads:
            at = _at(doc, fleet, workload, load)
            lines += [f"-- load {load:g}x ({at[0]['target_rps']:.2f} req/s offered)"]
            lines += _text_table(HEADER, table_rows(at))
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(doc: Mapping[str, Any], figures: Mapping[tuple[str, str, str], bytes]) -> str:
    title = html.escape(_title(doc))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"]
    parts.append(f"<style>{_CSS}</style></head><body><h1>{title}</h1>")
    if doc.get("partial"):
        parts.append(f"<p class='partial'>Partial results: {html.escape(str(doc.get('partial_reason')))}</p>")
    parts.append(
        f"<p>SLO {html.escape(str(doc['slo']))}; seeds {doc['seeds']}; warm-up {doc['warmup_s']:g} s of "
        f"{doc['duration_s']:g} s per point. Values are means across seeds ± the 95% interval; ratios are "
        f"policy / reference ({html.escape(str(doc['reference']))}) and policy / best baseline.</p>"
    )
    for fleet, workload, loads in _sections(doc):
        parts.append(f"<h2>{html.escape(workload)} on {html.escape(fleet)}</h2>")
        parts.append(f"<p>{html.escape(_capacity_line(doc, fleet, workload))}</p>")
        for load in loads:
            at = _at(doc, fleet, workload, load)
            parts.append(f"<h3>load {load:g}x ({at[0]['target_rps']:.2f} req/s offered)</h3>")
            parts.append(_html_table(HEADER, table_rows(at)))
        for key, caption, _ in plots.FIGURES:
            png = figures.get((fleet, workload, key))
            if png is not None:
                data = base64.b64encode(png).decode("ascii")
                parts.append(f"<h3>{caption}</h3><img alt='{caption}' src='data:image/png;base64,{data}'>")
        for load in loads:
            rows = _backend_rows(_at(doc, fleet, workload, load))
            parts.append(f"<details><summary>Per backend, load {load:g}x</summary>")
            parts.append(_html_table(BACKEND_HEADER, rows) + "</details>")
    meta = {k: v for k, v in doc.items() if k not in ("results", "capacity")}
    parts.append("<h2>Run</h2><pre>" + html.escape(orjson.dumps(meta, option=orjson.OPT_INDENT_2).decode()))
    parts.append("</pre></body></html>")
    return "".join(parts)


def write_matrix(out_dir: Path, doc: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``results.json``, ``plots/<fleet>__<workload>__<figure>.png`` and ``report.html``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(exist_ok=True)
    figures: dict[tuple[str, str, str], bytes] = {}
    for fleet, workload, _ in _sections(doc):
        for key, _, draw in plots.FIGURES:
            png = draw(doc["results"], fleet, workload)
            if png is not None:
                figures[(fleet, workload, key)] = png
                (out_dir / "plots" / f"{fleet}__{workload}__{key}.png").write_bytes(png)
    results = out_dir / RESULTS_FILE
    results.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    report = out_dir / REPORT_FILE
    report.write_text(render_html(doc, figures), encoding="utf-8")
    return {"results": results, "report": report, "plots": out_dir / "plots"}
