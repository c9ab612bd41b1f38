"""``sluice capacity``: how much of a workload a fleet serves at the SLO under one policy (virtual time).

Searches the goodput capacity (``loadgen.bench.fleet_capacity``): the highest offered rate at which at
least 90% (and 99%, or ``--targets``) of requests meet both the TTFT and the TPOT SLO, replaying the
workload at each searched rate on the simulated fleet with Sluice's own decision code. Prints one
line per target and the evaluated points; ``--out FILE`` writes them as JSON with the command.
Exit status: 0 done, 2 bad input (fleet, workload, trace, flags), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from core.yaml_source import ConfigError
from loadgen.bench.errors import BenchError
from loadgen.bench.fleet_capacity import search_fleet_capacity
from loadgen.results import SLO
from loadgen.sim.fleet_config import load_fleet
from loadgen.workloads import WorkloadError
from policies import registered
from sluice import workload_args

DEFAULT_DURATION_S = 300.0


def _targets(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.9,0.99, got {text!r}") from None
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError("targets are fractions strictly between 0 and 1")
    return values


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "capacity",
        help="goodput capacity of a simulated fleet for a workload and policy",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--fleet", type=Path, required=True, help="fleet file, e.g. configs/fleets/hetero-6.yaml"
    )
    parser.add_argument("--policy", default="sluice_predictive", help="routing policy name")
    parser.add_argument("--targets", type=_targets, default=[0.9, 0.99], help="attainment targets")
    parser.add_argument("--slo-ttft-ms", type=float, default=2000.0)
    parser.add_argument("--slo-tpot-ms", type=float, default=100.0)
    parser.add_argument("--warmup-s", type=float, default=30.0, help="left out of attainment")
    parser.add_argument(
        "--scale-by",
        choices=("rate", "time"),
        default="rate",
        help="reach a rate by more arrivals (rate) or by compressing a fixed trace (time)",
    )
    parser.add_argument(
        "--admission", action="store_true", help="keep admission control on (sheds count as misses)"
    )
    parser.add_argument("--max-runs", type=int, default=30, help="replays at most (each one rate)")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    workload_args.add_workload_arguments(parser)
    parser.set_defaults(func=run)


def _error(message: str, code: int) -> int:
    print(f"sluice capacity: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    if args.policy not in registered():
        return _error(f"unknown policy {args.policy!r}; one of: {', '.join(registered())}", 2)
    duration_s = args.duration_s if args.duration_s is not None else DEFAULT_DURATION_S
    if not 0 <= args.warmup_s < duration_s:
        return _error("--warmup-s must be >= 0 and shorter than --duration-s", 2)
    if args.slo_ttft_ms <= 0 or args.slo_tpot_ms <= 0 or args.max_runs < 2:
        return _error("SLOs must be > 0 and --max-runs >= 2", 2)
    try:
        fleet = load_fleet(args.fleet)
        workload = workload_args.build_from_args(args)
        found = search_fleet_capacity(
            fleet,
            workload,
            args.policy,
            slo=SLO(args.slo_ttft_ms, args.slo_tpot_ms, None),
            targets=args.targets,
            scale_by=args.scale_by,
            seed=args.seed,
            duration_s=duration_s,
            warmup_s=args.warmup_s,
            max_runs=args.max_runs,
            admission=args.admission,
        )
    except (ConfigError, WorkloadError, BenchError, OSError) as exc:
        return _error(str(exc), 2)
    except KeyboardInterrupt:
        return _error("interrupted; nothing written", 130)
    slo_text = f"SLO TTFT <= {args.slo_ttft_ms:g} ms, TPOT <= {args.slo_tpot_ms:g} ms"
    print(f"{args.policy} on {args.fleet} with {args.workload} ({slo_text}; {duration_s:g} s per rate)")
    for target, result in found["capacity"].items():
        rate = result["rate_rps"]
        shown = f"{rate:.2f} req/s" if rate is not None else "below the search floor"
        note = "" if result["converged"] else " (not converged: raise --max-runs)"
        print(f"  {float(target):.0%} of requests meet the SLO up to {shown}{note}")
    print("evaluated rates:")
    for point in found["points"]:
        rate, frac, n = point["rate_rps"], point["attainment_frac"], point["requests"]
        print(f"  {rate:9.2f} req/s  {frac:7.2%}  ({n} requests)")
    if args.out is not None:
        document = {
            "command": sys.argv,
            "config": {**vars(args), "fleet": str(args.fleet), "out": str(args.out)},
            **found,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str))
        print(f"wrote {args.out}")
    return 0
