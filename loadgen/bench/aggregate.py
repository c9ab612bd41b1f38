"""Across seeds: each metric's mean with a 95% confidence interval, and ratios against baselines.

For a metric with per-seed values ``x_1..x_n`` (seeds where it is undefined, e.g. a p99 with no
completed request, are left out): ``mean``, ``std`` (sample, n - 1) and the Student-t interval
``mean +/- t(0.975, n - 1) * std / sqrt(n)`` (``ci95``; a single seed has no interval).

Ratios compare a policy with a reference at the same fleet, workload and load level, always as
*policy / reference* (so a TTFT p99 ratio of 0.5 is "2x lower"): ``ratio_of_means``, plus the mean
and interval of the per-seed ratios (``paired``; the same seed means the same requests for every
policy, so pairing removes the workload's own variance). References: the matrix's ``reference``
(round_robin) and the *best baseline*: the ``baseline``-role policy with the highest mean goodput at
that point.

Per backend: each backend's share of requests, completed requests, TTFT/TPOT p99 and SLO
attainment, as means and intervals across seeds. Latency CDFs: the seeds' quantile curves averaged
point by point (Vincentised), for the plots.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

CDF_POINTS = tuple(float(q) for q in range(101))  # percentiles kept per point for the CDF plots

# Student t 0.975 quantiles for 1..30 degrees of freedom; the normal 1.96 beyond.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def _pick(*path: str) -> Callable[[Mapping[str, Any]], float | None]:
    def get(summary: Mapping[str, Any]) -> float | None:
        value: Any = summary
        for part in path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return float(value) if isinstance(value, int | float) else None

    return get


METRICS: dict[str, Callable[[Mapping[str, Any]], float | None]] = {
    "goodput_rps": _pick("window_goodput_rps"),
    "offered_rps": _pick("window_offered_rps"),
    "run_goodput_rps": _pick("goodput_rps"),
    "slo_attainment_frac": _pick("slo_attainment_frac"),
    "admitted_slo_attainment_frac": _pick("admitted_slo_attainment_frac"),
    "throughput_rps": _pick("throughput_rps"),
    "output_tokens_per_s": _pick("output_tokens_per_s"),
    "shed_frac": _pick("shed_frac"),
    "cached_prompt_frac": _pick("cached_prompt_frac"),
    "ttft_p50_ms": _pick("ttft_ms", "p50"),
    "ttft_p99_ms": _pick("ttft_ms", "p99"),
    "tpot_p50_ms": _pick("tpot_ms", "p50"),
    "tpot_p99_ms": _pick("tpot_ms", "p99"),
    "e2e_p50_ms": _pick("e2e_ms", "p50"),
    "e2e_p99_ms": _pick("e2e_ms", "p99"),
}
RATIO_METRICS = (
    "goodput_rps",
    "slo_attainment_frac",
    "throughput_rps",
    "ttft_p99_ms",
    "tpot_p99_ms",
    "e2e_p99_ms",
)
BACKEND_METRICS: dict[str, Callable[[Mapping[str, Any]], float | None]] = {
    "share_frac": _pick("share_frac"),
    "completed": _pick("completed"),
    "ttft_p99_ms": _pick("ttft_ms", "p99"),
    "tpot_p99_ms": _pick("tpot_ms", "p99"),
    "slo_attainment_frac": _pick("slo_attainment_frac"),
}


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def interval(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, sample std and the 95% Student-t interval of the defined values."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None, "values": []}
    mean = sum(xs) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95": None, "values": xs}
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t975(n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half], "values": xs}


def _by_seed(
    points: Sequence[Mapping[str, Any]], get: Callable[[Mapping[str, Any]], float | None]
) -> dict[int, float]:
    out = {}
    for p in points:
        value = get(p["summary"])
        if value is not None:
            out[int(p["point"]["seed"])] = value
    return out


def _ratio(policy: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in RATIO_METRICS:
        mine, theirs = _by_seed(policy, METRICS[name]), _by_seed(reference, METRICS[name])
        mean_mine = interval(mine.values())["mean"]
        mean_theirs = interval(theirs.values())["mean"]
        of_means = mean_mine / mean_theirs if mean_mine is not None and mean_theirs else None
        paired = [mine[s] / theirs[s] for s in sorted(mine.keys() & theirs.keys()) if theirs[s]]
        out[name] = {"ratio_of_means": of_means, "paired": interval(paired)}
    return out


def _backends(points: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    names = sorted({b for p in points for b in p["by_backend"]})
    return {
        name: {
            metric: {
                k: v
                for k, v in interval(get(p["by_backend"].get(name, {})) for p in points).items()
                if k != "values"
            }
            for metric, get in BACKEND_METRICS.items()
        }
        for name in names
    }


def _cdf(points: Sequence[Mapping[str, Any]]) -> dict[str, list[float] | None]:
    out: dict[str, list[float] | None] = {}
    for metric in ("ttft_ms", "tpot_ms"):
        curves = [p["quantiles"][metric] for p in points if p["quantiles"][metric] is not None]
        out[metric] = (
            [sum(c[i] for c in curves) / len(curves) for i in range(len(curves[0]))] if curves else None
        )
    return out


GroupKey = tuple[str, str, float, str]


def aggregate(
    points: Sequence[Mapping[str, Any]], roles: Mapping[str, str], reference: str
) -> list[dict[str, Any]]:
    """One row per (fleet, workload, load level, policy) with metrics, ratios and per-backend stats."""
    groups: dict[GroupKey, list[Mapping[str, Any]]] = defaultdict(list)
    for p in points:
        k = p["point"]
        groups[(k["fleet"], k["workload"], float(k["load_level"]), k["policy"])].append(p)
    rows = []
    for (fleet, workload, load, policy), members in sorted(
        groups.items(), key=lambda kv: _order(kv[0], roles)
    ):
        members = sorted(members, key=lambda p: int(p["point"]["seed"]))
        rows.append(
            {
                "fleet": fleet,
                "workload": workload,
                "load_level": load,
                "policy": policy,
                "role": roles.get(policy, "baseline"),
                "target_rps": members[0]["point"]["scaling"]["target_rps"],
                "scaling": {str(p["point"]["seed"]): p["point"]["scaling"] for p in members},
                "seeds": [int(p["point"]["seed"]) for p in members],
                "metrics": {
                    name: interval(get(p["summary"]) for p in members) for name, get in METRICS.items()
                },
                "by_backend": _backends(members),
                "cdf": _cdf(members),
            }
        )
    _add_ratios(rows, groups, roles, reference)
    return rows


def _order(key: GroupKey, roles: Mapping[str, str]) -> tuple[str, str, float, int, str]:
    rank = {"baseline": 0, "candidate": 1, "oracle": 2}
    return (key[0], key[1], key[2], rank.get(roles.get(key[3], "baseline"), 0), key[3])


def _add_ratios(
    rows: list[dict[str, Any]],
    groups: Mapping[GroupKey, Sequence[Mapping[str, Any]]],
    roles: Mapping[str, str],
    reference: str,
) -> None:
    for row in rows:
        at = (row["fleet"], row["workload"], row["load_level"])
        peers = [r for r in rows if (r["fleet"], r["workload"], r["load_level"]) == at]
        baselines = [
            r for r in peers if r["role"] == "baseline" and r["metrics"]["goodput_rps"]["mean"] is not None
        ]
        best = max(baselines, key=lambda r: (r["metrics"]["goodput_rps"]["mean"], r["policy"]), default=None)
        mine = groups[(*at, row["policy"])]
        ratios: dict[str, Any] = {}
        if (*at, reference) in groups:
            ratios["vs_reference"] = {"policy": reference, **_ratio(mine, groups[(*at, reference)])}
        if best is not None:
            ratios["vs_best_baseline"] = {
                "policy": best["policy"],
                **_ratio(mine, groups[(*at, best["policy"])]),
            }
        row["ratios"] = ratios
