"""``sluice bench``: the virtual-time benchmark matrix (policies x workloads x fleets x loads x seeds).

Reads a matrix file (``configs/bench/*.yaml``, see docs/benchmarks.md), finds each fleet's
capacity for each workload, runs every point in the virtual-time fleet with Sluice's decision code
in the loop, and writes to ``--out``: ``results.json`` (means and 95% intervals across seeds, ratios
against round_robin and the best baseline, per-backend breakdowns), ``plots/*.png``, ``report.html``
and one results file per point under ``points/``. Prints the summary tables.

Flags narrow or shorten a matrix without editing it (``--policies``, ``--workloads``, ``--fleets``,
``--seeds``, ``--loads``, ``--duration-s``, ``--warmup-s``); ``--capacity-from`` reuses the capacities
of an earlier ``results.json``. Exit status: 0 done, 2 bad input (matrix, fleet, workload, trace),
130 interrupted (partial results written and marked partial).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.yaml_source import ConfigError
from loadgen.bench.errors import BenchError
from loadgen.bench.report import format_summary, write_matrix
from loadgen.bench.runner import MatrixRun, RunOptions
from loadgen.bench.spec import Matrix, Selection, load_matrix
from loadgen.workloads import WorkloadError


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _numbers(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> list[int] | list[float]:
        try:
            return [kind(part) for part in _names(text)]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__}s, got {text!r}"
            ) from None

    return parse


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark matrix in virtual time",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("matrix", type=Path, help="matrix file, e.g. configs/bench/issue6.yaml")
    parser.add_argument("--out", type=Path, help="output directory (required unless --dry-run)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    select = parser.add_argument_group("selection (default: the whole matrix)")
    select.add_argument("--policies", type=_names, help="policy labels, comma-separated")
    select.add_argument("--workloads", type=_names, help="workload names, comma-separated")
    select.add_argument("--fleets", type=_names, help="fleet names, comma-separated")
    select.add_argument("--seeds", type=_numbers(int), help="seeds, comma-separated")
    select.add_argument("--loads", type=_numbers(float), help="load levels, comma-separated")
    select.add_argument("--duration-s", type=float, help="replay seconds per point")
    select.add_argument("--warmup-s", type=float, help="seconds left out of every statistic")
    parser.add_argument("--capacity-from", type=Path, help="reuse the capacities of an earlier results.json")
    parser.add_argument("--keep-records", action="store_true", help="also write every point's requests")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None)
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="default when not a tty"
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and print the matrix, run nothing")
    parser.set_defaults(func=run)


def _error(message: str, code: int = 2) -> int:
    print(f"sluice bench: {message}", file=sys.stderr)
    return code


def _describe(matrix: Matrix) -> str:
    spec = matrix.spec
    points = len(spec.policies) * len(spec.workloads) * len(matrix.fleets) * len(spec.load_levels)
    lines = [f"matrix {spec.name}: {points * len(spec.seeds)} points ({points} x {len(spec.seeds)} seeds)"]
    for name, fleet in matrix.fleets.items():
        lines.append(f"  fleet {name}: {', '.join(f'{b.name} ({b.profile.name})' for b in fleet.backends)}")
    for entry in spec.workloads:
        lines.append(f"  workload {entry.name}: {entry.workload} (scaled by {entry.scale_by})")
    lines.append(f"  policies: {', '.join(f'{p.key} [{p.role}]' for p in spec.policies)}")
    lines.append(
        f"  loads {list(spec.load_levels)} x capacity; seeds {list(spec.seeds)}; SLO {spec.slo.model_dump()}"
    )
    lines.append(f"  {spec.duration_s:g} s per point, warm-up {spec.warmup_s:g} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        return _error("--jobs must be >= 1")
    if args.out is None and not args.dry_run:
        return _error("--out DIR is required (or use --dry-run)")
    selection = Selection(
        policies=args.policies,
        workloads=args.workloads,
        fleets=args.fleets,
        seeds=args.seeds,
        load_levels=args.loads,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
    )
    try:
        matrix = load_matrix(args.matrix, selection)
        if args.dry_run:
            print(_describe(matrix))
            return 0
        options = RunOptions(
            args.out, args.jobs, args.keep_records, args.progress, args.capacity_from, sys.argv
        )
        doc = MatrixRun(matrix, options).run()
    except (ConfigError, WorkloadError, BenchError) as exc:
        return _error(str(exc))
    paths = write_matrix(args.out, doc)
    print(format_summary(doc))
    print(f"\nresults: {paths['results']}\nreport:  {paths['report']}")
    if doc["partial"]:
        return _error(f"stopped early ({doc['partial_reason']}); partial results written", 130)
    return 0
