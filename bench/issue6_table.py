"""Issue 6's routing targets from a ``sluice bench`` run: the docs table and ``bench/results/issue6.json``.

    nice -n 10 python -m sluice bench configs/bench/issue6.yaml --out runs/issue6 --jobs 2
    python bench/issue6_table.py runs/issue6/results.json

Reads the matrix's ``results.json`` (means and paired ratios across seeds, see
``loadgen.bench.aggregate``), prints one markdown row per workload x load level with the candidate's
goodput, its paired ratios against round robin, the best baseline and the oracle (95% Student-t
intervals), TTFT p99 against round robin and the oracle's own margin over the best baseline, then a
verdict per target (``bench/_issue6_table.py`` defines them). Writes the figures, the run's command,
git revision and matrix settings to ``bench/results/issue6.json``. It computes nothing the matrix
did not measure: the run itself is ``sluice bench``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._issue6_table import cells, markdown, merged, verdicts  # noqa: E402
from bench._results import write_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.json written by sluice bench")
    parser.add_argument("--candidate", default="sluice_predictive")
    parser.add_argument("--oracle", default="oracle")
    parser.add_argument("--name", default="issue6", help="bench/results/<name>.json")
    parser.add_argument(
        "--merge-points",
        type=Path,
        nargs="*",
        default=None,
        help="re-aggregate from these points/ directories (runs of the same matrix split by seed)",
    )
    parser.add_argument("--merged-out", type=Path, help="write the merged results document here")
    args = parser.parse_args(argv)
    doc = json.loads(args.results.read_text())
    if args.merge_points:
        doc = merged(doc, args.merge_points)
        if args.merged_out is not None:
            args.merged_out.write_text(json.dumps(doc) + "\n")
    rows = cells(doc, args.candidate, args.oracle)
    if not rows:
        print(f"{args.results}: no rows for {args.candidate!r}", file=sys.stderr)
        return 2
    table = markdown(rows)
    tally = verdicts(rows)
    print(table)
    print()
    for name, counts in tally.items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    config = {
        "matrix": doc.get("name"),
        "matrix_command": doc.get("command"),
        "matrix_git_rev": doc.get("git_rev"),
        "partial": doc.get("partial"),
        "seeds": doc.get("seeds"),
        "merged_from": doc.get("merged_from"),
        "duration_s": doc.get("duration_s"),
        "warmup_s": doc.get("warmup_s"),
        "load_levels": doc.get("load_levels"),
        "slo": doc.get("slo"),
        "capacity_rps": {
            fleet: {w: c.get("capacity_rps") for w, c in by_workload.items()}
            for fleet, by_workload in (doc.get("capacity") or {}).items()
        },
        "candidate": args.candidate,
        "timing": doc.get("timing"),
    }
    path = write_result(args.name, config, {"cells": rows, "verdicts": tally, "markdown": table})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
