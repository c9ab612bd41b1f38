"""Issue 6's DistServe/MLPerf-style goodput: each policy's capacity on the issue-6 fleet at 90 % / 99 %.

    nice -n 10 python bench/issue6_capacity.py --seeds 1 --resume --workloads azure_conversation \\
        --duration-s 60 --policies round_robin sluice_predictive oracle
    python bench/issue6_capacity.py --tables-only     # rebuild the tables of --out

The fixed-load matrix (``sluice bench configs/bench/issue6.yaml``, ``bench/issue6_table.py``) counts
good requests/s at 0.7x and 0.9x of the fleet's capacity; below capacity every decent policy serves
most of what is offered, so that definition cannot show much. This one asks how much traffic each
policy can take: per policy, workload and seed, the highest offered rate at which at least 90 % (and
99 %) of requests meet both TTFT and TPOT (``loadgen.bench.fleet_capacity.search_fleet_capacity``:
bracket by doubling, geometric bisection to ``--rel-tol``), on the matrix's own fleet, workloads
(and ``scale_by``), SLO, admission setting and policies (the bench-only oracle included), in virtual
time. The first ``--warmup-frac`` of every replay is left out of the attainment.

Writes ``--out`` (JSON: command, config, git revision, every search with every evaluated point, the
tables) after every search, so ``--resume`` continues an interrupted or extended run (more seeds or
policies) without redoing searches of the same settings. Prints the markdown tables at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._issue6_capacity import cells, markdown  # noqa: E402
from bench._results import RESULTS, git_rev  # noqa: E402
from loadgen.bench.fleet_capacity import search_fleet_capacity  # noqa: E402
from loadgen.bench.spec import Selection, load_matrix  # noqa: E402

DEFAULT_MATRIX = ROOT / "configs" / "bench" / "issue6.yaml"
DEFAULT_START = RESULTS / "issue6_60s_slo.json"


def _durations(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, _, seconds = item.partition("=")
        try:
            out[name] = float(seconds)
        except ValueError:
            raise SystemExit(f"--workload-duration-s: expected NAME=SECONDS, got {item!r}") from None
    return out


def _start_rates(path: Path, fleet: str) -> dict[str, float]:
    """The matrix's fleet capacity per workload (where the search starts), if that result exists."""
    if not path.is_file():
        return {}
    found = json.loads(path.read_text()).get("config", {}).get("capacity_rps", {}).get(fleet, {})
    return {w: float(v) for w, v in found.items() if v}


def _settings(args: argparse.Namespace, duration_s: float) -> dict[str, Any]:
    """What makes two searches of the same policy/workload/seed the same (for ``--resume``)."""
    return {
        "duration_s": duration_s,
        "warmup_s": duration_s * args.warmup_frac,
        "rel_tol": args.rel_tol,
        "targets": args.targets,
        "max_runs": args.max_runs,
        "min_measured": args.min_measured,
        "max_duration_s": duration_s * args.max_duration_factor,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--matrix", type=Path, default=DEFAULT_MATRIX)
    parser.add_argument("--fleet", default="hetero-6")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--policies", nargs="+", default=None, help="default: all of the matrix")
    parser.add_argument("--workloads", nargs="+", default=None, help="default: all of the matrix")
    parser.add_argument("--duration-s", type=float, default=60.0, help="replay seconds per rate")
    parser.add_argument(
        "--workload-duration-s", nargs="*", default=[], help="per-workload NAME=SECONDS overrides"
    )
    parser.add_argument("--warmup-frac", type=float, default=0.1, help="left out of attainment")
    parser.add_argument(
        "--min-measured",
        type=int,
        default=0,
        help="replay low rates longer, for about this many requests after the warm-up (off: every"
        " point of a workload gets the same window; longer windows are stricter, so this favours"
        " policies whose capacity is high)",
    )
    parser.add_argument(
        "--max-duration-factor", type=float, default=4.0, help="... up to this many times the duration"
    )
    parser.add_argument("--targets", type=float, nargs="+", default=[0.9, 0.99])
    parser.add_argument("--rel-tol", type=float, default=0.05, help="stop when failing/passing <= 1+tol")
    parser.add_argument("--max-runs", type=int, default=30)
    parser.add_argument(
        "--start-from", type=Path, default=DEFAULT_START, help="results JSON with config.capacity_rps"
    )
    parser.add_argument("--candidate", default="sluice_predictive")
    parser.add_argument("--reference", default="round_robin", help="the 2x target's baseline")
    parser.add_argument("--oracle", default="oracle")
    parser.add_argument("--out", type=Path, default=RESULTS / "issue6_capacity.json")
    parser.add_argument("--resume", action="store_true", help="keep searches of --out with the same settings")
    parser.add_argument(
        "--tables-only", action="store_true", help="rewrite --out's tables from its searches; run nothing"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.warmup_frac < 1 or not 0 < args.rel_tol < 1:
        parser.error("--warmup-frac must be in [0, 1) and --rel-tol in (0, 1)")

    matrix = load_matrix(
        args.matrix, Selection(policies=args.policies, workloads=args.workloads, fleets=[args.fleet])
    )
    spec = matrix.spec
    fleet = matrix.fleets[args.fleet]
    slo = spec.slo.to_slo()
    durations = _durations(args.workload_duration_s)
    starts = _start_rates(args.start_from, args.fleet)
    reference = args.reference

    searches: list[dict[str, Any]] = []
    if (args.resume or args.tables_only) and args.out.is_file():
        searches = json.loads(args.out.read_text()).get("searches", [])

    def document() -> dict[str, Any]:
        rows = cells(searches, args.candidate, reference, args.oracle)
        return {
            "command": " ".join(["python", *sys.argv]),
            "git_rev": git_rev(),
            "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "config": {
                "matrix": str(args.matrix),
                "fleet": args.fleet,
                "slo": slo.to_json(),
                "admission": spec.sluice.get("admission", {}),
                "warmup_frac": args.warmup_frac,
                "min_measured": args.min_measured,
                "max_duration_factor": args.max_duration_factor,
                "targets": args.targets,
                "rel_tol": args.rel_tol,
                "durations_s": {w.name: durations.get(w.name, args.duration_s) for w in spec.workloads},
                "start_rps": starts,
                "reference": reference,
                "candidate": args.candidate,
                "oracle": args.oracle,
            },
            "searches": searches,
            "figures": {"cells": rows, "markdown": markdown(rows, args.candidate, reference, args.oracle)},
        }

    for workload in [] if args.tables_only else spec.workloads:
        duration_s = durations.get(workload.name, args.duration_s)
        settings = _settings(args, duration_s)
        for seed in args.seeds:
            for policy in spec.policies:
                key = (workload.name, policy.key, seed)
                if any(
                    (s["workload"], s["policy"], s["seed"]) == key and s["settings"] == settings
                    for s in searches
                ):
                    continue
                searches[:] = [s for s in searches if (s["workload"], s["policy"], s["seed"]) != key]
                started = time.process_time()
                found = search_fleet_capacity(
                    fleet,
                    matrix.workloads[workload.name],
                    policy.name,
                    slo=slo,
                    targets=args.targets,
                    scale_by=workload.scale_by,
                    seed=seed,
                    duration_s=duration_s,
                    warmup_s=settings["warmup_s"],
                    rel_tol=args.rel_tol,
                    max_runs=args.max_runs,
                    admission=bool(spec.sluice.get("admission", {}).get("enabled", False)),
                    policy_params=policy.params,
                    start_rps=starts.get(workload.name),
                    min_measured=args.min_measured,
                    max_duration_s=settings["max_duration_s"],
                )
                cpu_s = time.process_time() - started
                searches.append(
                    {
                        "workload": workload.name,
                        "policy": policy.key,
                        "role": policy.role,
                        "seed": seed,
                        "settings": settings,
                        "scale_by": workload.scale_by,
                        "cpu_s": cpu_s,
                        **found,
                    }
                )
                shown = ", ".join(
                    f"{float(t):.0%}: {c['rate_rps'] if c['rate_rps'] is None else round(c['rate_rps'], 2)}"
                    for t, c in found["capacity"].items()
                )
                print(f"{workload.name} seed {seed} {policy.key}: {shown} ({cpu_s:.0f} s cpu)", flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(document(), indent=1) + "\n")
    doc = document()
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(doc["figures"]["markdown"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
