"""The issue-6 targets read off a ``sluice bench`` results document: one row per workload x load level.

Targets (issue 6, item 6), for the candidate policy (``sluice_predictive``) against, at the same
fleet, workload, load level and seeds (common random numbers, so ratios are paired per seed):

- goodput >= 1.3x the best baseline (the ``baseline``-role policy with the highest mean goodput);
- goodput >= 2x ``round_robin``;
- TTFT p99 at least 2x lower than ``round_robin`` (``rr / candidate`` >= 2, geometric mean over
  seeds);
- goodput within 15% of the oracle (``candidate / oracle`` >= 0.85).

A target is ``met`` when the mean of the per-seed ratios reaches it, and ``met (CI)`` when the lower
end of its 95% Student-t interval does too. ``ceiling`` is ``oracle / best baseline``: how much
better than the best baseline the clairvoyant router itself is, i.e. the most that the 1.3x target
could ask of any router at that point. With fewer than two baselines in the run there is no
"best baseline" and that target is left out. Ratios come from the aggregate (``ratios``) where it has
them; the oracle's are paired here from the per-seed values of each row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadgen.bench.aggregate import aggregate, interval

TARGET_VS_BEST = 1.3
TARGET_VS_RR = 2.0
TARGET_TTFT_LOWER_VS_RR = 2.0
TARGET_VS_ORACLE = 0.85
REFERENCE = "round_robin"  # the targets name it, whatever the matrix's own ``reference`` is


def _per_seed(row: Mapping[str, Any], metric: str) -> dict[int, float]:
    """``seed -> value`` of a row's metric (only when every seed has a value, so pairs stay aligned)."""
    values = row["metrics"][metric]["values"]
    seeds = row["seeds"]
    return dict(zip(seeds, values, strict=True)) if len(values) == len(seeds) else {}


def paired_ratio(mine: Mapping[str, Any], theirs: Mapping[str, Any], metric: str) -> dict[str, Any]:
    """Mean and 95% interval of ``mine / theirs`` over the seeds both rows have."""
    a, b = _per_seed(mine, metric), _per_seed(theirs, metric)
    return interval(a[s] / b[s] for s in sorted(a.keys() & b.keys()) if b[s])


def _inverse(block: Mapping[str, Any]) -> dict[str, Any]:
    """ "x lower than rr" from the per-seed ``candidate / rr`` TTFT p99 ratios: a geometric mean.

    A p99 ratio spans orders of magnitude across seeds (a round-robin p99 at the 120 s timeout
    over a 0.4 s or a 4 s one), so its arithmetic mean and t-interval are dominated by one seed
    and the interval can go negative; the mean and interval are taken on ``log(rr / candidate)``
    and exponentiated.
    """
    logs = interval(-math.log(v) for v in block["values"] if v and v > 0)
    if logs["mean"] is None:
        return logs
    ci = logs["ci95"]
    return {
        "n": logs["n"],
        "mean": math.exp(logs["mean"]),
        "std": None,
        "ci95": [math.exp(ci[0]), math.exp(ci[1])] if ci else None,
        "values": [math.exp(v) for v in logs["values"]],
        "geometric": True,
    }


def verdict(block: Mapping[str, Any], target: float) -> str:
    mean, ci = block.get("mean"), block.get("ci95")
    if mean is None:
        return "n/a"
    if mean < target:
        return "missed"
    return "met (CI)" if ci is not None and ci[0] >= target else "met"


def cell(
    rows: Sequence[Mapping[str, Any]], candidate: str, reference: str, oracle: str
) -> dict[str, Any] | None:
    """The figures of one (fleet, workload, load) group of ``results`` rows; None without the candidate."""
    by_policy = {r["policy"]: r for r in rows}
    mine = by_policy.get(candidate)
    if mine is None:
        return None
    rr, orc = by_policy.get(reference), by_policy.get(oracle)
    best_name = mine["ratios"].get("vs_best_baseline", {}).get("policy")
    baselines = sum(r["role"] == "baseline" for r in rows)
    if baselines < 2:  # "best of one" is no best baseline: that target needs the baselines run
        best_name = None
    best = by_policy.get(best_name) if best_name else None
    out: dict[str, Any] = {
        "fleet": mine["fleet"],
        "workload": mine["workload"],
        "load_level": mine["load_level"],
        "seeds": mine["seeds"],
        "target_rps": mine["target_rps"],
        "offered_rps": _drop_values(mine["metrics"]["offered_rps"]),
        "goodput_rps": _drop_values(mine["metrics"]["goodput_rps"]),
        "slo_attainment_frac": _drop_values(mine["metrics"]["slo_attainment_frac"]),
        "ttft_p99_ms": _drop_values(mine["metrics"]["ttft_p99_ms"]),
        "best_baseline": best_name,
    }
    targets: dict[str, Any] = {}
    if best is not None:
        targets["goodput_vs_best"] = (paired_ratio(mine, best, "goodput_rps"), TARGET_VS_BEST)
    if rr is not None:
        out["rr_ttft_p99_ms"] = _drop_values(rr["metrics"]["ttft_p99_ms"])
        targets["goodput_vs_rr"] = (paired_ratio(mine, rr, "goodput_rps"), TARGET_VS_RR)
        ttft = _inverse(paired_ratio(mine, rr, "ttft_p99_ms"))
        targets["ttft_p99_lower_vs_rr"] = (ttft, TARGET_TTFT_LOWER_VS_RR)
    if orc is not None:
        out["oracle_goodput_rps"] = _drop_values(orc["metrics"]["goodput_rps"])
        targets["goodput_vs_oracle"] = (paired_ratio(mine, orc, "goodput_rps"), TARGET_VS_ORACLE)
        if best is not None:
            out["ceiling_oracle_vs_best"] = _drop_values(paired_ratio(orc, best, "goodput_rps"))
    out["targets"] = {
        name: {**_drop_values(block), "target": target, "verdict": verdict(block, target)}
        for name, (block, target) in targets.items()
    }
    return out


def _drop_values(block: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "values"}


def cells(
    doc: Mapping[str, Any], candidate: str = "sluice_predictive", oracle: str = "oracle"
) -> list[dict[str, Any]]:
    """Every (fleet, workload, load level) of ``doc`` that has the candidate, in the document's order."""
    groups: dict[tuple[str, str, float], list[Mapping[str, Any]]] = {}
    for row in doc["results"]:
        groups.setdefault((row["fleet"], row["workload"], row["load_level"]), []).append(row)
    found = (cell(rows, candidate, REFERENCE, oracle) for rows in groups.values())
    return [c for c in found if c is not None]


def _fmt_ratio(block: Mapping[str, Any] | None) -> str:
    if not block or block.get("mean") is None:
        return "–"
    ci = block.get("ci95")
    text = f"{block['mean']:.2f}x"
    return text + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _fmt_ms(block: Mapping[str, Any] | None) -> str:
    if not block or block.get("mean") is None or not math.isfinite(block["mean"]):
        return "–"
    return f"{block['mean'] / 1000.0:.2f} s" if block["mean"] >= 1000 else f"{block['mean']:.0f} ms"


COLUMNS = (
    "workload",
    "load",
    "offered req/s (target)",
    "goodput req/s",
    "SLO ok",
    "x round_robin (>= 2)",
    "x best baseline (>= 1.3)",
    "TTFT p99 (rr)",
    "TTFT p99 x lower (>= 2)",
    "x oracle (>= 0.85)",
    "oracle / best",
)


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The docs table: paired ratio means with their 95% intervals, one line per workload x load."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for c in rows:
        t = c["targets"]
        g = c["goodput_rps"]
        ok = c["slo_attainment_frac"]["mean"]
        best = c.get("best_baseline") or "–"
        fields = (
            c["workload"],
            f"{c['load_level']:g}x",
            f"{c['offered_rps']['mean']:.1f} ({c['target_rps']:.1f})",
            f"{g['mean']:.1f}" + (f" ± {(g['ci95'][1] - g['ci95'][0]) / 2:.1f}" if g.get("ci95") else ""),
            f"{ok:.1%}" if ok is not None else "–",
            _fmt_ratio(t.get("goodput_vs_rr")),
            f"{_fmt_ratio(t.get('goodput_vs_best'))} ({best})",
            f"{_fmt_ms(c['ttft_p99_ms'])} ({_fmt_ms(c.get('rr_ttft_p99_ms'))})",
            _fmt_ratio(t.get("ttft_p99_lower_vs_rr")),
            _fmt_ratio(t.get("goodput_vs_oracle")),
            _fmt_ratio(c.get("ceiling_oracle_vs_best")),
        )
        lines.append("| " + " | ".join(fields) + " |")
    return "\n".join(lines)


def verdicts(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per target: how many cells met it (mean), met it with the interval, or missed it."""
    out: dict[str, dict[str, int]] = {}
    for c in rows:
        for name, block in c["targets"].items():
            tally = out.setdefault(name, {"met (CI)": 0, "met": 0, "missed": 0, "n/a": 0})
            tally[block["verdict"]] += 1
    return out


def points_from_files(dirs: Sequence[Path], duration_s: float, warmup_s: float) -> list[dict[str, Any]]:
    """Per-point summaries rebuilt from ``points/**/seed-*.json`` files, as ``run_point`` returns them.

    Lets runs of the same matrix split by seed (e.g. two processes) be aggregated as one. The
    window figures are ``loadgen.bench.point``'s (``good`` and ``requests`` over the measured
    window); per-point quantile curves are not in the files, so merged rows have no CDFs. A point
    found in several directories is taken once (points are deterministic for their seed).
    """
    window_s = duration_s - warmup_s
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for root in dirs:
        for path in sorted(root.glob("**/seed-*.json")):
            if path.name.endswith(".samples.json"):
                continue
            doc = json.loads(path.read_text())
            p = doc["point"]
            summary = dict(doc["summary"])
            summary["window_s"] = window_s
            summary["window_goodput_rps"] = summary["good"] / window_s
            summary["window_offered_rps"] = summary["requests"] / window_s
            key = (p["fleet"], p["workload"], float(p["load_level"]), p["policy"], int(p["seed"]))
            found.setdefault(
                key,
                {
                    "point": p,
                    "summary": summary,
                    "by_backend": doc["by_backend"],
                    "quantiles": {"ttft_ms": None, "tpot_ms": None},
                },
            )
    return list(found.values())


def merged(doc: Mapping[str, Any], dirs: Sequence[Path]) -> dict[str, Any]:
    """``doc`` with its ``results`` re-aggregated over the point files of ``dirs`` (roles kept)."""
    roles = {r["policy"]: r["role"] for r in doc["results"]}
    points = points_from_files(dirs, float(doc["duration_s"]), float(doc["warmup_s"]))
    seeds = sorted({int(p["point"]["seed"]) for p in points})
    return {
        **doc,
        "results": aggregate(points, roles, doc.get("reference", REFERENCE)),
        "seeds": seeds,
        "merged_from": [str(d) for d in dirs],
    }
