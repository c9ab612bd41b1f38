"""Issue 6 near saturation: one virtual-time replay at a fixed rate, broken down by backend and cause.

    nice -n 10 python bench/issue6_saturation.py --rates 190 220 --seeds 1 \\
        --policies sluice_predictive least_outstanding oracle

The capacity search (``bench/issue6_capacity.py``) says only *whether* 90 % of requests met the SLO
at a rate. This replays one rate exactly as the search does (``loadgen.bench.fleet_capacity``: the
issue-6 matrix's fleet, workload scaling, SLO on the route, admission off, the first
``--warmup-frac`` left out) and says *where* the misses are: per GPU class the share of requests,
the share meeting the SLO, the TTFT and TPOT misses, TTFT quantiles, and for policies that predict
a TTFT (``sluice_predictive``) how the prediction at dispatch compares with what happened (median
actual/predicted, requests predicted within the TTFT bound that missed it). Writes ``--out`` (JSON,
with the command and git revision) and prints one table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._results import RESULTS, git_rev  # noqa: E402
from loadgen.bench.fleet_capacity import fleet_config  # noqa: E402
from loadgen.bench.policies import decider_factory  # noqa: E402
from loadgen.bench.scaling import native_shape, scaled, scaling_for  # noqa: E402
from loadgen.bench.spec import Selection, load_matrix  # noqa: E402
from loadgen.results import SLO  # noqa: E402
from loadgen.sim.records import RequestRecord  # noqa: E402
from loadgen.sim.virtual import VirtualFleet, VirtualOptions  # noqa: E402

DEFAULT_MATRIX = ROOT / "configs" / "bench" / "issue6.yaml"


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def gpu_class(backend_id: str | None) -> str:
    """``h100-0`` -> ``h100`` (the fleet names its backends ``<group>-<i>``)."""
    return "none" if backend_id is None else backend_id.rsplit("-", 1)[0]


def breakdown(records: Sequence[RequestRecord], slo: SLO, warmup_s: float) -> dict[str, Any]:
    """Per GPU class (and ``all``): share, SLO attainment, TTFT/TPOT misses, TTFT quantiles, TTFT̂ bias."""
    measured = [r for r in records if r.sent_s >= warmup_s]
    groups: dict[str, list[RequestRecord]] = {"all": measured}
    for r in measured:
        groups.setdefault(gpu_class(r.backend_id), []).append(r)
    ttft_bound = slo.ttft_ms if slo.ttft_ms is not None else math.inf
    tpot_bound = slo.tpot_ms if slo.tpot_ms is not None else math.inf
    out: dict[str, Any] = {}
    for name, rows in sorted(groups.items()):
        ttfts = [r.ttft_s * 1000.0 for r in rows if r.ttft_s is not None]
        tpots = [t * 1000.0 for r in rows if (t := r.tpot_s()) is not None]
        ttft_miss = sum(1 for r in rows if r.ttft_s is None or r.ttft_s * 1000.0 > ttft_bound)
        tpot_miss = sum(1 for r in rows if (t := r.tpot_s()) is not None and t * 1000.0 > tpot_bound)
        good = sum(
            1
            for r in rows
            if r.status == 200
            and r.ttft_s is not None
            and r.ttft_s * 1000.0 <= ttft_bound
            and ((t := r.tpot_s()) is None or t * 1000.0 <= tpot_bound)
        )
        predicted = [
            (r.predicted_ttft_ms, r.ttft_s * 1000.0) for r in rows if r.predicted_ttft_ms and r.ttft_s
        ]
        ratios = [actual / max(pred, 1e-3) for pred, actual in predicted]
        feasible = [(p, a) for p, a in predicted if p <= ttft_bound]
        out[name] = {
            "requests": len(rows),
            "share": len(rows) / len(measured) if measured else 0.0,
            "slo_ok": good / len(rows) if rows else None,
            "ttft_miss": ttft_miss,
            "tpot_miss": tpot_miss,
            "ttft_p50_ms": _quantile(ttfts, 0.5),
            "ttft_p90_ms": _quantile(ttfts, 0.9),
            "ttft_p99_ms": _quantile(ttfts, 0.99),
            "tpot_p90_ms": _quantile(tpots, 0.9),
            "prompt_mean_tokens": statistics.fmean(r.prompt_tokens for r in rows) if rows else None,
            "actual_over_predicted_ttft_p50": _quantile(ratios, 0.5),
            "actual_over_predicted_ttft_p90": _quantile(ratios, 0.9),
            "predicted_ok_missed": sum(1 for p, a in feasible if a > ttft_bound),
            "predicted_over_bound": len(predicted) - len(feasible),
        }
    return out


def run_point(
    matrix_path: Path,
    workload_name: str,
    policy_key: str,
    rate_rps: float,
    seed: int,
    duration_s: float,
    warmup_frac: float,
    params: dict[str, Any],
) -> tuple[list[RequestRecord], dict[str, Any], float]:
    """One replay as ``search_fleet_capacity`` evaluates a rate; ``(sim records, breakdown, warmup_s)``."""
    matrix = load_matrix(matrix_path, Selection(policies=[policy_key], workloads=[workload_name]))
    spec = matrix.spec
    fleet = next(iter(matrix.fleets.values()))
    policy = spec.policies[0]
    workload_entry = spec.workloads[0]
    workload = matrix.workloads[workload_name]
    slo = spec.slo.to_slo()
    warmup_s = duration_s * warmup_frac
    merged = {**policy.params, **params}
    admission = bool(spec.sluice.get("admission", {}).get("enabled", False))
    loaded = fleet_config(fleet, policy.name, admission, slo, merged)
    decider = decider_factory(policy.name, merged, loaded, seed, slo)
    scale_by = workload_entry.scale_by
    shape = native_shape(workload, seed, duration_s if scale_by == "rate" else None)
    scaling = scaling_for(workload, shape, scale_by, rate_rps, duration_s, seed, warmup_s)
    vf = VirtualFleet(fleet, loaded, decider_factory=decider, options=VirtualOptions(seed=seed))
    records = vf.run(scaled(workload, seed, scaling, duration_s).requests())
    return records, breakdown(records, slo, warmup_s), warmup_s


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--matrix", type=Path, default=DEFAULT_MATRIX)
    parser.add_argument("--workload", default="sharegpt_multiturn")
    parser.add_argument("--policies", nargs="+", default=["sluice_predictive", "least_outstanding", "oracle"])
    parser.add_argument("--rates", type=float, nargs="+", default=[190.0, 220.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--warmup-frac", type=float, default=0.1)
    parser.add_argument(
        "--params", default="{}", help="JSON policy parameters added to every policy's (e.g. a variant)"
    )
    parser.add_argument("--label", default="", help="names this variant in the output")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"JSON (default: print only; e.g. {RESULTS}/...)"
    )
    args = parser.parse_args(argv)
    params = json.loads(args.params)
    points: list[dict[str, Any]] = []
    for rate in args.rates:
        for seed in args.seeds:
            for policy in args.policies:
                started = time.process_time()
                _, found, _ = run_point(
                    args.matrix,
                    args.workload,
                    policy,
                    rate,
                    seed,
                    args.duration_s,
                    args.warmup_frac,
                    params if policy != "oracle" else {},
                )
                cpu_s = time.process_time() - started
                points.append(
                    {"policy": policy, "rate_rps": rate, "seed": seed, "cpu_s": cpu_s, "classes": found}
                )
                total = found["all"]
                print(
                    f"\n{args.workload} {rate:g} req/s seed {seed} {policy} {args.label}: "
                    f"SLO ok {total['slo_ok']:.4f} ({total['requests']} measured, {cpu_s:.0f} s cpu)",
                    flush=True,
                )
                print(
                    "  class  share  slo_ok  ttft_miss tpot_miss  ttft p50/p90/p99 ms   tpot p90  "
                    "act/pred p50/p90  pred_ok_missed pred_over"
                )
                for name, row in found.items():
                    print(
                        f"  {name:5s} {row['share']:6.3f} {_fmt(row['slo_ok'], 4):>7s} {row['ttft_miss']:9d} "
                        f"{row['tpot_miss']:9d}  {_fmt(row['ttft_p50_ms'])}/{_fmt(row['ttft_p90_ms'])}/"
                        f"{_fmt(row['ttft_p99_ms'])}  {_fmt(row['tpot_p90_ms'], 1):>8s}  "
                        f"{_fmt(row['actual_over_predicted_ttft_p50'], 2)}/"
                        f"{_fmt(row['actual_over_predicted_ttft_p90'], 2)}  "
                        f"{row['predicted_ok_missed']:14d} {row['predicted_over_bound']:9d}"
                    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "command": " ".join(["python", *sys.argv]),
                    "git_rev": git_rev(),
                    "config": {
                        "matrix": str(args.matrix),
                        "workload": args.workload,
                        "duration_s": args.duration_s,
                        "warmup_frac": args.warmup_frac,
                        "params": params,
                        "label": args.label,
                    },
                    "points": points,
                },
                indent=1,
            )
            + "\n"
        )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
