"""Tables of ``bench/issue6_capacity.py``: goodput capacity per policy, ratios and the issue-6 verdicts.

Input: one entry per search (``workload``, ``policy``, ``role``, ``seed`` and ``capacity`` =
``{"0.9": {"rate_rps": ...}, "0.99": {...}}`` as ``search_fleet_capacity`` returns it). Output per
workload x attainment target: every policy's mean and per-seed capacity, the best baseline (highest
mean capacity among ``role == "baseline"``), and the candidate's ratios against the reference
(round robin), the best baseline and the oracle, each as the ratio of means and as per-seed paired
ratios (same seed = same requests at the same times) over the seeds both have.

A capacity of ``None`` (the search floor already failed) is kept out of means and ratios and
shows as "-": it would otherwise read as a capacity of zero, which the search did not measure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import fmean
from typing import Any

TARGET_VS_BEST = 1.3
TARGET_VS_REFERENCE = 2.0


def capacities(
    searches: Sequence[Mapping[str, Any]], workload: str, target: str
) -> dict[str, dict[str, Any]]:
    """``policy -> {"role", "per_seed": {seed: rps}, "mean_rps"}`` for one workload and target."""
    out: dict[str, dict[str, Any]] = {}
    for s in searches:
        if s["workload"] != workload or target not in s["capacity"]:
            continue
        entry = out.setdefault(s["policy"], {"role": s["role"], "per_seed": {}, "mean_rps": None})
        rate = s["capacity"][target]["rate_rps"]
        if rate is not None:
            entry["per_seed"][int(s["seed"])] = float(rate)
    for entry in out.values():
        values = list(entry["per_seed"].values())
        entry["per_seed"] = dict(sorted(entry["per_seed"].items()))
        entry["mean_rps"] = fmean(values) if values else None
    return out


def paired_ratio(mine: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any] | None:
    """``mine / other``: ratio of means and per-seed ratios over the seeds both have (None: no seed)."""
    seeds = sorted(set(mine["per_seed"]) & set(other["per_seed"]))
    seeds = [seed for seed in seeds if other["per_seed"][seed] > 0]
    if not seeds:
        return None
    per_seed = {seed: mine["per_seed"][seed] / other["per_seed"][seed] for seed in seeds}
    return {
        "seeds": seeds,
        "per_seed": per_seed,
        "mean_paired": fmean(per_seed.values()),
        "min_paired": min(per_seed.values()),
        "ratio_of_means": fmean(mine["per_seed"][s] for s in seeds)
        / fmean(other["per_seed"][s] for s in seeds),
    }


def cell(
    searches: Sequence[Mapping[str, Any]],
    workload: str,
    target: str,
    candidate: str,
    reference: str,
    oracle: str,
) -> dict[str, Any]:
    """One workload x target: capacities, the best baseline, the candidate's ratios and verdicts."""
    caps = capacities(searches, workload, target)
    baselines = {p: c for p, c in caps.items() if c["role"] == "baseline" and c["mean_rps"] is not None}
    best = max(baselines, key=lambda p: baselines[p]["mean_rps"]) if baselines else None
    mine = caps.get(candidate)
    ratios: dict[str, Any] = {}
    if mine is not None:
        for label, other in (("vs_reference", reference), ("vs_best_baseline", best), ("vs_oracle", oracle)):
            if other is not None and other in caps:
                ratios[label] = paired_ratio(mine, caps[other])
    if best is not None and oracle in caps:
        ratios["oracle_vs_best_baseline"] = paired_ratio(caps[oracle], caps[best])

    def meets(label: str, threshold: float) -> bool | None:
        found = ratios.get(label)
        return None if found is None else bool(found["ratio_of_means"] >= threshold)

    return {
        "workload": workload,
        "target": target,
        "policies": caps,
        "best_baseline": best,
        "ratios": ratios,
        "verdicts": {
            f"vs_best_baseline >= {TARGET_VS_BEST:g}": meets("vs_best_baseline", TARGET_VS_BEST),
            f"vs_reference >= {TARGET_VS_REFERENCE:g}": meets("vs_reference", TARGET_VS_REFERENCE),
        },
    }


def cells(
    searches: Sequence[Mapping[str, Any]], candidate: str, reference: str, oracle: str
) -> list[dict[str, Any]]:
    """Every workload x target searched, workloads in first-seen order, targets ascending."""
    workloads = list(dict.fromkeys(s["workload"] for s in searches))
    targets = sorted({t for s in searches for t in s["capacity"]}, key=float)
    present = {(s["workload"], t) for s in searches for t in s["capacity"]}
    return [
        cell(searches, w, t, candidate, reference, oracle)
        for w in workloads
        for t in targets
        if (w, t) in present
    ]


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(found: Mapping[str, Any] | None) -> str:
    if found is None:
        return "-"
    seeds = "/".join(f"{found['per_seed'][s]:.2f}" for s in found["seeds"])
    return f"{found['ratio_of_means']:.2f} ({seeds})"


def markdown(rows: Sequence[Mapping[str, Any]], candidate: str, reference: str, oracle: str) -> str:
    """Two tables: the candidate's ratios per workload x target, then every policy's capacities."""
    lines = [
        f"| workload | target | {reference} | best baseline | {candidate} | {oracle} "
        f"| x {reference} (>= {TARGET_VS_REFERENCE:g}) | x best (>= {TARGET_VS_BEST:g}) | x {oracle} "
        f"| {oracle} x best |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        caps, ratios, best = row["policies"], row["ratios"], row["best_baseline"]

        def mean(policy: str | None, caps: Mapping[str, Any] = caps) -> str:
            return _rate(caps[policy]["mean_rps"]) if policy in caps else "-"

        lines.append(
            f"| {row['workload']} | {float(row['target']):.0%} | {mean(reference)} "
            f"| {best or '-'} {mean(best)} | {mean(candidate)} | {mean(oracle)} "
            f"| {_ratio(ratios.get('vs_reference'))} | {_ratio(ratios.get('vs_best_baseline'))} "
            f"| {_ratio(ratios.get('vs_oracle'))} | {_ratio(ratios.get('oracle_vs_best_baseline'))} |"
        )
    columns = [(row["workload"], row["target"]) for row in rows]
    policies = list(dict.fromkeys(p for row in rows for p in row["policies"]))
    lines += [
        "",
        "| policy | " + " | ".join(f"{w} {float(t):.0%}" for w, t in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for policy in policies:
        parts = []
        for row in rows:
            found = row["policies"].get(policy)
            if found is None:
                parts.append("-")
                continue
            seeds = "/".join(f"{v:.1f}" for v in found["per_seed"].values())
            parts.append(f"{_rate(found['mean_rps'])} ({seeds})")
        lines.append(f"| {policy} | " + " | ".join(parts) + " |")
    return "\n".join(lines)
