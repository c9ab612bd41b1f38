"""Human-readable output of a run: the stdout summary table and one self-contained HTML report.

The HTML embeds every plot as a base64 PNG and inlines its CSS, so the single
file can be attached to a ticket or opened from a CI artifact. ``write_run``
writes the standard output directory of ``sluice replay`` (and later
``sluice bench``): ``results.json``, ``requests.jsonl.gz``, ``report.html``.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from loadgen import plots
from loadgen.records import BackendSample, RequestRecord, write_records

RESULTS_FILE = "results.json"
RECORDS_FILE = "requests.jsonl.gz"
REPORT_FILE = "report.html"
METRICS = (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"), ("ITL", "itl_ms"), ("E2E", "e2e_ms"))


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _headline(s: Mapping[str, Any]) -> list[str]:
    return [
        f"requests {_num(s['requests'])}  completed {_num(s['completed'])}  shed {_num(s['shed'])} "
        f"({_pct(s['shed_frac'])})  unavailable {_num(s['unavailable'])}  errors {_num(s['errors'])}"
        f"  cancelled {_num(s['cancelled'])}  duration {_num(s['duration_s'])} s",
        f"throughput {_num(s['throughput_rps'], 2)} req/s  output {_num(s['output_tokens_per_s'])} tok/s  "
        f"goodput {_num(s['goodput_rps'], 2)} req/s  SLO attainment {_pct(s['slo_attainment_frac'])} "
        f"(admitted {_pct(s['admitted_slo_attainment_frac'])})",
    ]


def _latency_rows(s: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for label, key in (*METRICS, ("send lag", "send_lag_ms")):
        block = s.get(key)
        rows.append(
            [f"{label} ms"] + [_num(block[k]) if block else "-" for k in ("mean", "p50", "p90", "p99")]
        )
    return rows


def _group_rows(groups: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for name, g in groups.items():
        ttft, tpot = g.get("ttft_ms") or {}, g.get("tpot_ms") or {}
        rows.append([
            name, _pct(g.get("share_frac")), _num(g["requests"]), _num(g["completed"]), _num(g["shed"]),
            _num(ttft.get("p50")), _num(ttft.get("p99")), _num(tpot.get("p50")), _num(tpot.get("p99")),
            _pct(g.get("slo_attainment_frac")),
        ])  # fmt: skip
    return rows


GROUP_HEADER = [
    "",
    "share",
    "requests",
    "done",
    "shed",
    "TTFT p50",
    "TTFT p99",
    "TPOT p50",
    "TPOT p99",
    "SLO ok",
]
LATENCY_HEADER = ["", "mean", "p50", "p90", "p99"]


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header)] + [fmt.format(*row) for row in rows]


def _title(doc: Mapping[str, Any]) -> str:
    workload = doc.get("workload", {}).get("name", "?")
    target = doc.get("target", {}).get("url", "")
    title = f"Sluice {doc.get('kind', 'run')}: {workload}" + (f" -> {target}" if target else "")
    if doc.get("partial"):
        title += f"  [PARTIAL: {doc.get('partial_reason') or 'interrupted'}]"
    return title


def format_summary(doc: Mapping[str, Any], max_groups: int = 12) -> str:
    """The readable table ``sluice replay`` prints."""
    s = doc["summary"]
    lines = [_title(doc), *_headline(s), "", *_text_table(LATENCY_HEADER, _latency_rows(s))]
    for label, key in (("backend", "by_backend"), ("class", "by_priority"), ("tenant", "by_tenant")):
        groups = doc.get(key) or {}
        if len(groups) > 1 or (key == "by_backend" and groups):
            shown = dict(list(groups.items())[:max_groups])
            lines += [
                "",
                f"per {label}"
                + (f" (first {max_groups} of {len(groups)})" if len(groups) > max_groups else ""),
            ]
            lines += _text_table([label, *GROUP_HEADER[1:]], _group_rows(shown))
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.partial{background:#fff3cd;padding:.6em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}pre{background:#f7f7f7;padding:.8em;overflow-x:auto}"""


def render_html(
    doc: Mapping[str, Any], records: Sequence[RequestRecord], samples: Sequence[BackendSample] = ()
) -> str:
    s = doc["summary"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(_title(doc))}</title>"]
    parts.append(f"<style>{_CSS}</style></head><body><h1>{html.escape(_title(doc))}</h1>")
    if doc.get("partial"):
        parts.append(f"<p class='partial'>Partial results: {html.escape(str(doc.get('partial_reason')))}</p>")
    parts += [f"<p>{html.escape(line)}</p>" for line in _headline(s)]
    parts.append(_html_table(LATENCY_HEADER, _latency_rows(s)))
    for label, key in (("backend", "by_backend"), ("class", "by_priority"), ("tenant", "by_tenant")):
        if doc.get(key):
            parts.append(
                f"<h2>Per {label}</h2>" + _html_table([label, *GROUP_HEADER[1:]], _group_rows(doc[key]))
            )
    figures: list[tuple[str, Callable[[], bytes | None]]] = [
        ("Latency CDFs", lambda: plots.latency_cdfs(records)),
        ("TTFT over time", lambda: plots.ttft_over_time(records)),
        ("Throughput over time", lambda: plots.throughput_over_time(records)),
        ("Shed and errors over time", lambda: plots.shed_over_time(records)),
        ("Per-backend load", lambda: plots.backend_load(records)),
        ("KV cache use", lambda: plots.kv_usage(records, samples)),
    ]
    for title, make in figures:
        png = make()
        if png is not None:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{data}'>")
    meta = {k: v for k, v in doc.items() if k not in ("summary", "by_backend", "by_priority", "by_tenant")}
    parts.append("<h2>Run</h2><pre>" + html.escape(orjson.dumps(meta, option=orjson.OPT_INDENT_2).decode()))
    parts.append("</pre></body></html>")
    return "".join(parts)


def write_run(
    out_dir: Path,
    doc: Mapping[str, Any],
    records: Sequence[RequestRecord],
    samples: Sequence[BackendSample] = (),
) -> dict[str, Path]:
    """Write ``results.json``, ``requests.jsonl.gz`` and ``report.html`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "results": out_dir / RESULTS_FILE,
        "requests": out_dir / RECORDS_FILE,
        "report": out_dir / REPORT_FILE,
    }
    write_records(paths["requests"], records)
    full = dict(doc)
    full["files"] = {k: p.name for k, p in paths.items()}
    paths["results"].write_bytes(orjson.dumps(full, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    paths["report"].write_text(render_html(full, records, samples), encoding="utf-8")
    return paths
