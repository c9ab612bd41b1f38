"""Rows and the ratio table of ``bench/peers.py``.

A row holds a router's client-side figures (from the ``results.json`` summary: over completed
requests for latencies; goodput = completed requests meeting TTFT and TPOT SLOs per second of the
run) and the backends' own counters. Ratios are ``router / baseline`` for every column, baseline
= the first of ``BASELINES`` present (round robin without any routing intelligence): > 1 is better
for goodput and throughput, < 1 is better for latencies. ``done`` = completed / sent: requests
still running at the drain deadline are cancelled and excluded from latency percentiles, so a
router with a low ``done`` looks better on latency than it is; read both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

BASELINES = ("nginx round_robin", "sluice round_robin")

# (row key, header, higher is better)
COLUMNS = (
    ("goodput_rps", "goodput", True),
    ("throughput_rps", "thru", True),
    ("ttft_p50_ms", "TTFT p50", False),
    ("ttft_p99_ms", "TTFT p99", False),
    ("tpot_p99_ms", "TPOT p99", False),
    ("e2e_p99_ms", "E2E p99", False),
)


def _pick(block: Mapping[str, Any] | None, key: str) -> float | None:
    if not block:
        return None
    value = block.get(key)
    return None if value is None else float(value)


def row_from(
    router: Any, doc: Mapping[str, Any], backends: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    s = doc["summary"]
    finished = sum(b["finished"] for b in backends.values())
    queried = sum(b["cache_queried_tokens"] for b in backends.values())
    summary = {
        "requests": s["requests"],
        "completed": s["completed"],
        "shed": s["shed"],
        "errors": s["errors"] + s["unavailable"],
        "cancelled": s["cancelled"],
        "goodput_rps": s["goodput_rps"],
        "throughput_rps": s["throughput_rps"],
        "output_tokens_per_s": s["output_tokens_per_s"],
        "slo_attainment_frac": s["slo_attainment_frac"],
        "ttft_p50_ms": _pick(s["ttft_ms"], "p50"),
        "ttft_p99_ms": _pick(s["ttft_ms"], "p99"),
        "tpot_p50_ms": _pick(s["tpot_ms"], "p50"),
        "tpot_p99_ms": _pick(s["tpot_ms"], "p99"),
        "e2e_p50_ms": _pick(s["e2e_ms"], "p50"),
        "e2e_p99_ms": _pick(s["e2e_ms"], "p99"),
        "send_lag_p99_ms": _pick(s["send_lag_ms"], "p99"),
    }
    return {
        "router": router.name,
        "family": router.family,
        "policy": router.policy,
        "summary": summary,
        "backend_share": {n: (b["finished"] / finished if finished else None) for n, b in backends.items()},
        "backends": dict(backends),
        "prefix_hit_frac": sum(b["cache_hit_tokens"] for b in backends.values()) / queried
        if queried
        else 0.0,
        "preemptions": sum(b["preemptions"] for b in backends.values()),
    }


def baseline_of(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    by_name = {r["router"]: r for r in rows}
    return next((by_name[name] for name in BASELINES if name in by_name), None)


def ratios(row: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, _, _ in COLUMNS:
        mine, theirs = row["summary"].get(key), base["summary"].get(key)
        out[key] = mine / theirs if mine is not None and theirs else None
    return out


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def ratio_table(rows: Sequence[Mapping[str, Any]], markdown: bool = False) -> str:
    """One line per router: ratios to the baseline, then SLO attainment, done, cache hit, shares."""
    base = baseline_of(rows)
    if base is None:
        return "(no round-robin baseline ran)"
    header = ["router", *(h for _, h, _ in COLUMNS), "SLO ok", "done", "cache hit", "share"]
    lines = []
    for row in rows:
        r = ratios(row, base)
        s = row["summary"]
        share = " ".join(f"{v:.0%}" if v is not None else "-" for v in row["backend_share"].values())
        done = s["completed"] / s["requests"] if s["requests"] else 0.0
        slo = s["slo_attainment_frac"]
        lines.append([
            row["router"], *(_fmt_ratio(r[k]) for k, _, _ in COLUMNS),
            "-" if slo is None else f"{slo:.0%}", f"{done:.0%}", f"{row['prefix_hit_frac']:.0%}", share,
        ])  # fmt: skip
    b = base["summary"]
    absolute = (
        f"baseline {base['router']}: goodput {b['goodput_rps']:.2f} req/s, "
        f"throughput {b['throughput_rps']:.2f} req/s, TTFT p50 {b['ttft_p50_ms']:.0f} ms / "
        f"p99 {b['ttft_p99_ms']:.0f} ms, TPOT p99 {b['tpot_p99_ms']:.1f} ms, "
        f"E2E p99 {b['e2e_p99_ms']:.0f} ms; "
        f"share = finished requests per backend ({', '.join(base['backend_share'])})"
    )
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out) + "\n\n" + absolute
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), *(fmt.format(*line) for line in lines), "", absolute])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def absolute_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: each router's own figures (goodput, TTFT p50/p99, TPOT p99, SLO ok, done, cache hit)."""
    header = [
        "router",
        "goodput req/s",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "TPOT p99 ms",
        "SLO ok",
        "done",
        "cache hit",
    ]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        s = row["summary"]
        done = s["completed"] / s["requests"] if s["requests"] else 0.0
        slo = "-" if s["slo_attainment_frac"] is None else f"{s['slo_attainment_frac']:.0%}"
        tpot = "-" if s["tpot_p99_ms"] is None else f"{s['tpot_p99_ms']:.1f}"
        cells = [
            row["router"], f"{s['goodput_rps'] or 0:.2f}", _ms(s["ttft_p50_ms"]), _ms(s["ttft_p99_ms"]), tpot,
            slo, f"{done:.0%} of {s['requests']}", f"{row['prefix_hit_frac']:.0%}",
        ]  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
